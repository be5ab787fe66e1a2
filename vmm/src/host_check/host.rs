//! What `cvmm host-check` reads from the host itself, outside KVM: CPUID, /proc/cpuinfo
//! flags, MSRs through /dev/cpu/0/msr, kernel module parameters, the kernel release and
//! the kernel log. Each reader returns what it found or why it found nothing; judging
//! the values is the business of the per-TEE modules.
#![forbid(unsafe_code)]

use std::collections::BTreeSet;
use std::io::Read;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

/// The four registers of one CPUID leaf.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuidRegs {
    /// EAX.
    pub eax: u32,
    /// EBX.
    pub ebx: u32,
    /// ECX.
    pub ecx: u32,
    /// EDX.
    pub edx: u32,
}

/// CPUID leaf 0x8000_001F: AMD's memory encryption features.
pub const CPUID_AMD_MEM_ENCRYPT: u32 = 0x8000_001f;

/// What CPUID says about the processor cvmm runs on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CpuInfo {
    /// The vendor string of leaf 0 ("AuthenticAMD", "GenuineIntel", ...).
    pub vendor: String,
    /// The brand string of leaves 0x8000_0002..4, trimmed; empty when absent.
    pub brand: String,
    /// Display family (base + extended).
    pub family: u32,
    /// Display model (with the extended model).
    pub model: u32,
    /// Stepping.
    pub stepping: u32,
    /// CPUID.1:ECX[31]: this is a virtual machine, and CPUID is its hypervisor's.
    pub hypervisor: bool,
    /// CPUID.1:ECX[5]: VMX (Intel VT-x).
    pub vmx: bool,
    /// CPUID.8000_0001:ECX[2]: SVM (AMD-V).
    pub svm: bool,
    /// Leaf 0x8000_001F when the processor has it.
    pub mem_encrypt: Option<CpuidRegs>,
}

impl CpuInfo {
    /// Whether the vendor is AMD.
    pub fn is_amd(&self) -> bool {
        self.vendor == "AuthenticAMD"
    }

    /// Whether the vendor is Intel.
    pub fn is_intel(&self) -> bool {
        self.vendor == "GenuineIntel"
    }

    /// "AuthenticAMD family 0x19 model 0x11 stepping 1 (AMD EPYC ...)".
    pub fn describe(&self) -> String {
        let mut s =
            format!("{} family {:#x} model {:#x} stepping {}", self.vendor, self.family, self.model, self.stepping);
        if !self.brand.is_empty() {
            s.push_str(&format!(" ({})", self.brand));
        }
        s
    }

    /// Reads the processor's CPUID.
    pub fn read() -> Self {
        let leaf0 = cpuid(0);
        let mut vendor = Vec::with_capacity(12);
        for reg in [leaf0.ebx, leaf0.edx, leaf0.ecx] {
            vendor.extend_from_slice(&reg.to_le_bytes());
        }
        let leaf1 = if leaf0.eax >= 1 { cpuid(1) } else { CpuidRegs::default() };
        let max_ext = cpuid(0x8000_0000).eax;
        let mut brand = Vec::with_capacity(48);
        if max_ext >= 0x8000_0004 {
            for leaf in 0x8000_0002..=0x8000_0004 {
                let r = cpuid(leaf);
                for reg in [r.eax, r.ebx, r.ecx, r.edx] {
                    brand.extend_from_slice(&reg.to_le_bytes());
                }
            }
        }
        let ext1 = if max_ext >= 0x8000_0001 { cpuid(0x8000_0001) } else { CpuidRegs::default() };
        let (family, model, stepping) = display_family_model(leaf1.eax);
        Self {
            vendor: String::from_utf8_lossy(&vendor).into_owned(),
            brand: String::from_utf8_lossy(&brand).trim_matches(|c: char| c == '\0' || c.is_whitespace()).to_owned(),
            family,
            model,
            stepping,
            hypervisor: leaf1.ecx & (1 << 31) != 0,
            vmx: leaf1.ecx & (1 << 5) != 0,
            svm: ext1.ecx & (1 << 2) != 0,
            mem_encrypt: (max_ext >= CPUID_AMD_MEM_ENCRYPT).then(|| cpuid(CPUID_AMD_MEM_ENCRYPT)),
        }
    }
}

/// Executes CPUID for `leaf`, subleaf 0.
fn cpuid(leaf: u32) -> CpuidRegs {
    let r = std::arch::x86_64::__cpuid_count(leaf, 0);
    CpuidRegs { eax: r.eax, ebx: r.ebx, ecx: r.ecx, edx: r.edx }
}

/// Family, model and stepping as the SDM and APM define the displayed values from
/// CPUID.1:EAX: the extended family is added when the base family is 0xf; the extended
/// model is prepended when the base family is 0x6 or 0xf.
pub fn display_family_model(eax: u32) -> (u32, u32, u32) {
    let stepping = eax & 0xf;
    let base_model = (eax >> 4) & 0xf;
    let base_family = (eax >> 8) & 0xf;
    let ext_model = (eax >> 16) & 0xf;
    let ext_family = (eax >> 20) & 0xff;
    let family = if base_family == 0xf { base_family + ext_family } else { base_family };
    let model = if base_family == 0x6 || base_family == 0xf { (ext_model << 4) | base_model } else { base_model };
    (family, model, stepping)
}

/// The feature flags the kernel shows in the first `flags` line of /proc/cpuinfo.
pub fn cpuinfo_flags(cpuinfo: &str) -> BTreeSet<String> {
    cpuinfo
        .lines()
        .find_map(|l| {
            let (key, value) = l.split_once(':')?;
            (key.trim() == "flags").then(|| value.split_whitespace().map(str::to_owned).collect())
        })
        .unwrap_or_default()
}

/// Reads /proc/cpuinfo's flags.
pub fn read_cpuinfo_flags() -> Result<BTreeSet<String>, String> {
    std::fs::read_to_string("/proc/cpuinfo")
        .map(|text| cpuinfo_flags(&text))
        .map_err(|e| format!("cannot read /proc/cpuinfo: {e}"))
}

/// Reads MSR `index` of CPU 0 through the msr driver (/dev/cpu/0/msr, root only).
pub fn read_msr(index: u32) -> Result<u64, String> {
    let path = Path::new("/dev/cpu/0/msr");
    if !path.exists() {
        return Err(format!("{} does not exist (modprobe msr)", path.display()));
    }
    let file = std::fs::File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let mut value = [0u8; 8];
    file.read_exact_at(&mut value, u64::from(index))
        .map_err(|e| format!("cannot read MSR {index:#x} from {}: {e}", path.display()))?;
    Ok(u64::from_le_bytes(value))
}

/// A kernel module's parameter, as /sys/module/<module>/parameters/<name> shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModuleParam {
    /// /sys/module/<module> does not exist: the module is not loaded (or not built).
    NotLoaded,
    /// The module is loaded but has no such parameter (an older kernel, or a build
    /// without the feature).
    Missing,
    /// The parameter's value, trimmed ("Y", "N", "1", ...).
    Value(String),
}

impl ModuleParam {
    /// Reads /sys/module/`module`/parameters/`name`.
    pub fn read(module: &str, name: &str) -> Self {
        Self::read_in(Path::new("/sys/module"), module, name)
    }

    /// Reads `<root>/<module>/parameters/<name>`.
    pub fn read_in(root: &Path, module: &str, name: &str) -> Self {
        let dir = root.join(module);
        if !dir.exists() {
            return Self::NotLoaded;
        }
        match std::fs::read_to_string(dir.join("parameters").join(name)) {
            Ok(v) => Self::Value(v.trim().to_owned()),
            Err(_) => Self::Missing,
        }
    }

    /// Whether the value is a kernel boolean "true" (Y, y or 1).
    pub fn is_enabled(&self) -> bool {
        matches!(self, Self::Value(v) if matches!(v.as_str(), "Y" | "y" | "1"))
    }
}

/// The running kernel's release (/proc/sys/kernel/osrelease), e.g. "6.18.2-1-amd64".
pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease").map(|s| s.trim().to_owned()).unwrap_or_default()
}

/// The major and minor version at the start of a kernel release string.
pub fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// The messages of the kernel log (/dev/kmsg, records still in the ring buffer) that
/// contain one of `needles`, oldest first. Reading /dev/kmsg needs root (or
/// kernel.dmesg_restrict=0).
pub fn kernel_log_lines(needles: &[&str]) -> Result<Vec<String>, String> {
    let mut kmsg = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("/dev/kmsg")
        .map_err(|e| format!("cannot open /dev/kmsg: {e}"))?;
    let mut lines = Vec::new();
    let mut record = vec![0u8; 8192];
    loop {
        // Each read returns one record: "prio,seq,usec,flags;message\n" plus
        // continuation lines; EAGAIN after the newest one.
        match kmsg.read(&mut record) {
            Ok(0) => break,
            Ok(n) => {
                if let Some(message) = kmsg_message(&record[..n]) {
                    if needles.iter().any(|n| message.contains(n)) {
                        lines.push(message);
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            // EPIPE: the record was overwritten while we read; go on with the next.
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("cannot read /dev/kmsg: {e}")),
        }
    }
    Ok(lines)
}

/// The message text of one /dev/kmsg record.
pub fn kmsg_message(record: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(record).ok()?;
    let (_, rest) = text.split_once(';')?;
    Some(rest.lines().next().unwrap_or_default().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_family_and_model_add_the_extended_fields() {
        // AMD Milan: family 0x19 (0xf + 0xa), model 0x01.
        assert_eq!(display_family_model(0x00a0_0f11), (0x19, 0x01, 1));
        // Intel Sapphire Rapids: family 6, model 0x8f.
        assert_eq!(display_family_model(0x0008_06f8), (6, 0x8f, 8));
        // A family-5 part ignores the extended fields.
        assert_eq!(display_family_model(0x00f0_0543), (5, 4, 3));
    }

    #[test]
    fn cpuinfo_flags_come_from_the_first_flags_line_only() {
        let text = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sev sev_es sev_snp\n\
                    bugs\t\t: sysret_ss_attrs\nflags\t\t: other\n";

        let flags = cpuinfo_flags(text);

        assert!(flags.contains("sev_snp") && flags.contains("fpu"));
        assert!(!flags.contains("other"));
        assert!(cpuinfo_flags("processor : 0\n").is_empty());
    }

    #[test]
    fn module_parameters_distinguish_unloaded_missing_and_values() {
        let root = std::env::temp_dir().join(format!("cvmm-modparam-{}", std::process::id()));
        std::fs::create_dir_all(root.join("kvm_amd/parameters")).unwrap();
        std::fs::write(root.join("kvm_amd/parameters/sev_snp"), "Y\n").unwrap();
        std::fs::write(root.join("kvm_amd/parameters/sev"), "N\n").unwrap();

        let snp = ModuleParam::read_in(&root, "kvm_amd", "sev_snp");
        let sev = ModuleParam::read_in(&root, "kvm_amd", "sev");

        assert_eq!(snp, ModuleParam::Value("Y".into()));
        assert!(snp.is_enabled());
        assert!(!sev.is_enabled());
        assert_eq!(ModuleParam::read_in(&root, "kvm_amd", "sev_es"), ModuleParam::Missing);
        assert_eq!(ModuleParam::read_in(&root, "kvm_intel", "tdx"), ModuleParam::NotLoaded);
        assert!(!ModuleParam::NotLoaded.is_enabled());
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn kernel_versions_are_read_from_release_strings() {
        assert_eq!(kernel_version("6.18.44-fc-v669"), Some((6, 18)));
        assert_eq!(kernel_version("6.11.0-rc1"), Some((6, 11)));
        assert_eq!(kernel_version("7.0"), Some((7, 0)));
        assert_eq!(kernel_version("garbage"), None);
        assert_eq!(kernel_version(""), None);
    }

    #[test]
    fn kmsg_records_give_their_message() {
        let record = b"6,1234,5678901,-;virt/tdx: module initialized\n SUBSYSTEM=cpu\n";

        assert_eq!(kmsg_message(record).as_deref(), Some("virt/tdx: module initialized"));
        assert_eq!(kmsg_message(b"no separator"), None);
    }

    #[test]
    fn this_hosts_cpuid_names_a_vendor_and_family() {
        let cpu = CpuInfo::read();

        assert_eq!(cpu.vendor.len(), 12, "{cpu:?}");
        assert!(cpu.family > 0, "{cpu:?}");
        // /proc/cpuinfo's flags agree with CPUID on the hypervisor bit.
        let flags = read_cpuinfo_flags().unwrap();
        assert_eq!(cpu.hypervisor, flags.contains("hypervisor"));
    }
}
