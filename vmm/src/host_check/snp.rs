//! The SEV-SNP rows of `cvmm host-check`: the CPU's and BIOS's support (CPUID
//! 0x8000_001F, the SYSCFG MSR, the kernel's `sev_snp` flag), kvm_amd's `sev_snp`
//! parameter, /dev/sev and the SNP firmware's status and version, KVM's SNP VM type, and
//! the answer of `launch::snp::kvm::probe::probe_host` (the check a real SNP launch
//! makes first), which decides the SNP verdict together with the KVM capability rows.
#![forbid(unsafe_code)]

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};

use kvm_bindings::KVM_X86_SNP_VM;
use kvm_ioctls::Kvm;
use launch::snp::kvm::ioctl::snp_platform_status;
use launch::snp::kvm::probe::{probe_host_with, SnpFirmwareStatus};

use super::host::{read_msr, CpuInfo, CpuidRegs, ModuleParam};
use super::{Check, HostFacts, Status};
use crate::error_chain;

/// The SYSCFG MSR (AMD APM vol. 2, "System Configuration Register").
pub const MSR_SYSCFG: u32 = 0xc001_0010;
/// SYSCFG[23] MemEncryptionModEn: the BIOS enabled SME/SEV memory encryption.
pub const SYSCFG_MEM_ENCRYPT: u64 = 1 << 23;
/// SYSCFG[24] SNPEn: the BIOS enabled SEV-SNP (and set up the RMP).
pub const SYSCFG_SNP_EN: u64 = 1 << 24;

/// The oldest SNP firmware API Linux's ccp driver accepts (SNP_MIN_API_MAJOR/MINOR in
/// drivers/crypto/ccp/sev-dev.c).
pub const MIN_FIRMWARE_API: (u8, u8) = (1, 51);

/// The SEV firmware device as host-check found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SevDevice {
    /// The path does not exist.
    Missing(PathBuf),
    /// It exists but cannot be opened read/write.
    Unopenable {
        /// The device path.
        path: PathBuf,
        /// Why.
        error: String,
    },
    /// It opened; SNP_PLATFORM_STATUS answered this.
    Open {
        /// The device path.
        path: PathBuf,
        /// The firmware's status, or why SNP_PLATFORM_STATUS failed.
        status: Result<SnpFirmwareStatus, String>,
    },
}

/// What `probe_host` found on an SNP-capable host (everything but the open device).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnpProbe {
    /// KVM_X86_SEV_VMSA_FEATURES.
    pub vmsa_features: u64,
    /// KVM_X86_SNP_POLICY_BITS (Linux 6.19), when the kernel has it.
    pub policy_bits: Option<u64>,
    /// KVM_X86_SEV_SNP_REQ_CERTS (Linux 7.0).
    pub req_certs: bool,
}

/// Everything the SNP rows are made from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnpFacts {
    /// SYSCFG, read only on AMD processors (`None` elsewhere).
    pub syscfg: Option<Result<u64, String>>,
    /// kvm_amd's `sev_snp` parameter.
    pub kvm_amd_snp: ModuleParam,
    /// /dev/sev.
    pub sev_device: SevDevice,
    /// `probe_host`'s answer, or its error with its causes.
    pub probe: Result<SnpProbe, String>,
    /// Whether the platform has SMT enabled as the SNP firmware sees it
    /// (`launch::snp::policy::host_smt_enabled`).
    pub smt: Result<bool, String>,
}

impl SnpFacts {
    /// Reads them from this host; `kvm` is `None` when /dev/kvm could not be opened.
    pub fn read(cpu: &CpuInfo, kvm: Option<&Kvm>, sev_path: &Path) -> Self {
        Self {
            syscfg: cpu.is_amd().then(|| read_msr(MSR_SYSCFG)),
            kvm_amd_snp: ModuleParam::read("kvm_amd", "sev_snp"),
            sev_device: read_sev_device(sev_path),
            probe: match kvm {
                Some(kvm) => probe_host_with(kvm, sev_path)
                    .map(|h| SnpProbe {
                        vmsa_features: h.vmsa_features,
                        policy_bits: h.policy_bits,
                        req_certs: h.req_certs,
                    })
                    .map_err(|e| error_chain(&e)),
                None => Err("not probed: /dev/kvm cannot be opened".to_owned()),
            },
            smt: launch::snp::policy::host_smt_enabled().map_err(|e| error_chain(&e)),
        }
    }
}

fn read_sev_device(path: &Path) -> SevDevice {
    if !path.exists() {
        return SevDevice::Missing(path.to_owned());
    }
    match OpenOptions::new().read(true).write(true).open(path) {
        Err(e) => SevDevice::Unopenable { path: path.to_owned(), error: e.to_string() },
        Ok(file) => SevDevice::Open {
            path: path.to_owned(),
            status: snp_platform_status(&file).map(SnpFirmwareStatus::from).map_err(|e| error_chain(&e)),
        },
    }
}

/// The SNP rows, in the order a host is set up (CPU, BIOS, kernel, module, device,
/// firmware, KVM).
pub fn checks(host: &HostFacts) -> Vec<Check> {
    let (cpu, flags, kvm, facts) = (&host.cpu, &host.flags, &host.kvm, &host.snp);
    let not_amd = || format!("not an AMD processor ({})", cpu.vendor);
    let mut rows = Vec::new();

    rows.push(match (cpu.is_amd(), cpu.mem_encrypt) {
        (false, _) => Check::new(Status::Fail, "snp.cpu", not_amd()),
        (true, None) => Check::new(
            Status::Fail,
            "snp.cpu",
            format!("CPUID has no leaf 0x8000001f (no memory encryption){}", in_vm(cpu)),
        ),
        (true, Some(regs)) => cpuid_row(regs, cpu),
    });

    rows.push(match &facts.syscfg {
        None => Check::new(Status::Fail, "snp.syscfg", format!("not read: {}", not_amd())),
        Some(Err(why)) => Check::new(Status::Warn, "snp.syscfg", format!("cannot tell what the BIOS enabled: {why}")),
        Some(Ok(v)) => {
            let evidence = format!(
                "SYSCFG (MSR 0xc0010010) = {v:#x}: MemEncryptionModEn {}, SNPEn {}",
                on(v & SYSCFG_MEM_ENCRYPT != 0),
                on(v & SYSCFG_SNP_EN != 0)
            );
            if v & SYSCFG_MEM_ENCRYPT != 0 && v & SYSCFG_SNP_EN != 0 {
                Check::new(Status::Pass, "snp.syscfg", evidence)
            } else {
                Check::new(
                    Status::Fail,
                    "snp.syscfg",
                    format!("{evidence}: enable SMEE, SEV-SNP and SNP memory coverage in the BIOS"),
                )
            }
        }
    });

    rows.push(match flags {
        Err(why) => Check::new(Status::Warn, "snp.kernel", why.clone()),
        Ok(flags) => {
            let shown: Vec<&str> =
                ["sme", "sev", "sev_es", "sev_snp"].into_iter().filter(|f| flags.contains(*f)).collect();
            let list = if shown.is_empty() { "none".to_owned() } else { shown.join(" ") };
            if flags.contains("sev_snp") {
                Check::new(Status::Pass, "snp.kernel", format!("/proc/cpuinfo flags: {list}"))
            } else {
                Check::new(
                    Status::Fail,
                    "snp.kernel",
                    format!(
                        "/proc/cpuinfo flags: {list}: the kernel does not see SEV-SNP (no CPU support, disabled in \
                         the BIOS, or the kernel turned it off: dmesg | grep -i sev)"
                    ),
                )
            }
        }
    });

    rows.push(match &facts.kvm_amd_snp {
        ModuleParam::NotLoaded => Check::new(Status::Fail, "snp.kvm_amd", "the kvm_amd module is not loaded".into()),
        ModuleParam::Missing => Check::new(
            Status::Fail,
            "snp.kvm_amd",
            "kvm_amd has no sev_snp parameter: the kernel predates SNP in KVM (Linux < 6.11)".into(),
        ),
        p @ ModuleParam::Value(v) if p.is_enabled() => {
            Check::new(Status::Pass, "snp.kvm_amd", format!("kvm_amd.sev_snp = {v}"))
        }
        ModuleParam::Value(v) => Check::new(
            Status::Fail,
            "snp.kvm_amd",
            format!("kvm_amd.sev_snp = {v}: load kvm_amd with sev_snp=1 (it turns itself off when SNP is not usable)"),
        ),
    });

    rows.push(match &facts.sev_device {
        SevDevice::Missing(path) => Check::new(
            Status::Fail,
            "snp.sev-device",
            format!("{} does not exist: no SEV firmware interface (ccp module, BIOS settings)", path.display()),
        ),
        SevDevice::Unopenable { path, error } => {
            Check::new(Status::Fail, "snp.sev-device", format!("cannot open {} read/write: {error}", path.display()))
        }
        SevDevice::Open { path, .. } => {
            Check::new(Status::Pass, "snp.sev-device", format!("{} opens read/write", path.display()))
        }
    });

    rows.push(match &facts.sev_device {
        SevDevice::Open { status: Ok(fw), .. } => firmware_row(fw),
        SevDevice::Open { status: Err(why), .. } => {
            Check::new(Status::Fail, "snp.firmware", format!("SNP_PLATFORM_STATUS failed: {why}"))
        }
        _ => Check::new(Status::Fail, "snp.firmware", "not read: no SEV device".into()),
    });

    rows.push(match kvm {
        Err(_) => Check::new(Status::Fail, "snp.vm-type", "not checked: no KVM".into()),
        Ok(caps) if caps.has_vm_type(KVM_X86_SNP_VM) => Check::new(
            Status::Pass,
            "snp.vm-type",
            format!("KVM_CAP_VM_TYPES = {:#x} has KVM_X86_SNP_VM ({KVM_X86_SNP_VM})", caps.vm_types),
        ),
        Ok(caps) => Check::new(
            Status::Fail,
            "snp.vm-type",
            format!(
                "KVM_CAP_VM_TYPES = {:#x} lacks KVM_X86_SNP_VM ({KVM_X86_SNP_VM}): needs Linux >= 6.11 with \
                 kvm_amd.sev_snp=1",
                caps.vm_types
            ),
        ),
    });

    rows.push(match &facts.probe {
        Ok(p) => Check::new(
            Status::Pass,
            "snp.kvm-probe",
            format!(
                "probe_host: VMSA features {:#x}, policy bits {}, certificate requests to user space {}",
                p.vmsa_features,
                p.policy_bits.map_or_else(|| "not reported (Linux < 6.19)".to_owned(), |b| format!("{b:#x}")),
                if p.req_certs { "yes" } else { "no (Linux < 7.0)" }
            ),
        ),
        Err(why) => Check::new(Status::Fail, "snp.kvm-probe", format!("probe_host: {why}")),
    });

    rows.push(match &facts.smt {
        Ok(true) => Check::new(
            Status::Pass,
            "snp.smt",
            "SMT enabled: guest policies must allow SMT (bit 16; cvmm's default 0x30000 does)".into(),
        ),
        Ok(false) => Check::new(Status::Pass, "snp.smt", "SMT disabled: any guest policy's SMT bit works".into()),
        Err(why) => Check::new(Status::Warn, "snp.smt", format!("cannot read the SMT state: {why}")),
    });
    rows
}

fn cpuid_row(r: CpuidRegs, cpu: &CpuInfo) -> Check {
    let bit = |n: u32| r.eax & (1 << n) != 0;
    let names: Vec<&str> = [(0, "SME"), (1, "SEV"), (3, "SEV-ES"), (4, "SEV-SNP")]
        .into_iter()
        .filter(|(b, _)| bit(*b))
        .map(|(_, n)| n)
        .collect();
    let evidence = format!(
        "CPUID 0x8000001f: EAX = {:#010x} ({}), C-bit {}, {} encrypted guests",
        r.eax,
        if names.is_empty() { "no memory encryption".to_owned() } else { names.join(", ") },
        r.ebx & 0x3f,
        r.ecx
    );
    if bit(4) {
        Check::new(Status::Pass, "snp.cpu", evidence)
    } else {
        Check::new(Status::Fail, "snp.cpu", format!("{evidence}: no SEV-SNP (EAX bit 4){}", in_vm(cpu)))
    }
}

fn firmware_row(fw: &SnpFirmwareStatus) -> Check {
    let evidence = format!(
        "SNP firmware API {}.{} build {}, state {}, RMP {}, {} guests, TCB current {:#018x} reported {:#018x}",
        fw.api_major,
        fw.api_minor,
        fw.build_id,
        if fw.state == 1 { "INIT" } else { "UNINIT" },
        if fw.rmp_initialized { "initialized" } else { "not initialized" },
        fw.guest_count,
        fw.current_tcb,
        fw.reported_tcb
    );
    if (fw.api_major, fw.api_minor) < MIN_FIRMWARE_API {
        Check::new(
            Status::Fail,
            "snp.firmware",
            format!(
                "{evidence}: Linux needs SNP firmware API >= {}.{} (update the BIOS or load a newer amd/amd_sev_*.sbin)",
                MIN_FIRMWARE_API.0, MIN_FIRMWARE_API.1
            ),
        )
    } else if !fw.rmp_initialized {
        Check::new(
            Status::Fail,
            "snp.firmware",
            format!("{evidence}: SNP_INIT has not run (kvm_amd runs it when loaded with sev_snp=1)"),
        )
    } else {
        Check::new(Status::Pass, "snp.firmware", evidence)
    }
}

fn on(b: bool) -> &'static str {
    if b {
        "on"
    } else {
        "off"
    }
}

/// A note for evidence read inside a virtual machine.
fn in_vm(cpu: &CpuInfo) -> &'static str {
    if cpu.hypervisor {
        "; this is a virtual machine and CPUID is its hypervisor's"
    } else {
        ""
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host_check::fixtures;

    fn status_of(rows: &[Check], name: &str) -> (Status, String) {
        let r = rows.iter().find(|r| r.name == name).unwrap_or_else(|| panic!("no row {name}"));
        (r.status, r.evidence.clone())
    }

    #[test]
    fn an_snp_host_passes_every_snp_row() {
        let rows = checks(&fixtures::snp_host());

        assert_eq!(rows.len(), 9);
        assert!(rows.iter().all(|r| r.status == Status::Pass), "{rows:#?}");
        let (_, fw) = status_of(&rows, "snp.firmware");
        assert!(fw.starts_with("SNP firmware API 1.55 build 21, state INIT, RMP initialized"), "{fw}");
        let (_, cpuid) = status_of(&rows, "snp.cpu");
        assert_eq!(
            cpuid,
            "CPUID 0x8000001f: EAX = 0x0001781b (SME, SEV, SEV-ES, SEV-SNP), C-bit 51, 509 encrypted guests"
        );
    }

    #[test]
    fn an_intel_host_fails_the_snp_rows_naming_the_vendor() {
        let rows = checks(&fixtures::tdx_host());

        assert_eq!(status_of(&rows, "snp.cpu"), (Status::Fail, "not an AMD processor (GenuineIntel)".into()));
        assert_eq!(status_of(&rows, "snp.syscfg").0, Status::Fail);
        assert_eq!(status_of(&rows, "snp.kvm_amd").0, Status::Fail);
        assert_eq!(status_of(&rows, "snp.vm-type").0, Status::Fail);
    }

    #[test]
    fn a_bios_without_snp_enabled_fails_syscfg_and_an_unreadable_msr_only_warns() {
        let mut host = fixtures::snp_host();
        host.snp.syscfg = Some(Ok(SYSCFG_MEM_ENCRYPT));

        let rows = checks(&host);
        let (status, evidence) = status_of(&rows, "snp.syscfg");

        assert_eq!(status, Status::Fail);
        assert!(evidence.contains("SNPEn off") && evidence.contains("BIOS"), "{evidence}");
        host.snp.syscfg = Some(Err("/dev/cpu/0/msr does not exist (modprobe msr)".into()));
        assert_eq!(status_of(&checks(&host), "snp.syscfg").0, Status::Warn);
    }

    #[test]
    fn old_or_uninitialized_firmware_fails() {
        let mut host = fixtures::snp_host();
        let SevDevice::Open { status: Ok(fw), .. } = &mut host.snp.sev_device else { unreachable!() };
        fw.api_minor = 49;

        let (status, evidence) = status_of(&checks(&host), "snp.firmware");

        assert_eq!(status, Status::Fail);
        assert!(evidence.contains("API 1.49") && evidence.contains(">= 1.51"), "{evidence}");
        let SevDevice::Open { status: Ok(fw), .. } = &mut host.snp.sev_device else { unreachable!() };
        fw.api_minor = 55;
        fw.rmp_initialized = false;
        let (status, evidence) = status_of(&checks(&host), "snp.firmware");
        assert_eq!(status, Status::Fail);
        assert!(evidence.contains("SNP_INIT has not run"), "{evidence}");
    }

    #[test]
    fn kvm_amd_without_sev_snp_says_how_to_load_it() {
        let mut host = fixtures::snp_host();
        host.snp.kvm_amd_snp = ModuleParam::Value("N".into());

        let (status, evidence) = status_of(&checks(&host), "snp.kvm_amd");

        assert_eq!(status, Status::Fail);
        assert!(evidence.contains("sev_snp=1"), "{evidence}");
    }
}
