//! The Intel TDX rows of `cvmm host-check`, read directly from the host: the processor
//! (CPUID), the TDX KeyIDs the BIOS partitioned (IA32_MKTME_KEYID_PARTITIONING), the
//! kernel's `tdx_host_platform` flag, kvm_intel's `tdx` parameter, the TDX module as
//! the kernel reports it (sysfs where the kernel has it, else the kernel log), and KVM's
//! TDX VM type.
//!
//! Kept apart on purpose: when cvmm has its own TDX host probe (in
//! `launch::tdx::kvm`, the counterpart of `launch::snp::kvm::probe::probe_host`),
//! [`TdxFacts::read`] should call it and add a `tdx.kvm-probe` row from its answer, as
//! the SNP rows do; the verdict then follows from the rows unchanged.
#![forbid(unsafe_code)]

use std::path::Path;

use kvm_bindings::KVM_X86_TDX_VM;

use super::host::{kernel_log_lines, read_msr, CpuInfo, ModuleParam};
use super::{Check, HostFacts, Status};

/// IA32_MTRRCAP: bit 15 is SEAMRR (the SEAM range register exists).
pub const MSR_IA32_MTRRCAP: u32 = 0xfe;
/// IA32_MKTME_KEYID_PARTITIONING: bits 31:0 the MKTME KeyIDs, bits 63:32 the TDX
/// private KeyIDs the BIOS set aside.
pub const MSR_IA32_MKTME_KEYID_PARTITIONING: u32 = 0x87;

/// Where kernels report the TDX module's version: the tdx_host faux device (upstream,
/// Linux 7.2) and Intel's TDX kernels (/sys/firmware/tdx/tdx_module).
pub const TDX_MODULE_VERSION_FILES: [&str; 2] =
    ["/sys/devices/faux/tdx_host/version", "/sys/firmware/tdx/tdx_module/version"];

/// What the kernel log says about TDX: the lines of arch/x86/virt/vmx/tdx/tdx.c
/// ("virt/tdx: ...") and KVM's ("kvm_intel: tdx: ..." when it turns TDX off).
pub const KERNEL_LOG_NEEDLES: [&str; 3] = ["virt/tdx:", "kvm_intel: tdx", "kvm_intel: TDX"];

/// Kernel log lines that say the TDX module or KVM's TDX support did not come up.
const KERNEL_LOG_FAILURES: [&str; 5] =
    ["module not loaded", "initialization failed", "Failed to initialize", "kvm_intel: tdx: ", "TDX not supported"];

/// Everything the TDX rows are made from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TdxFacts {
    /// IA32_MTRRCAP and IA32_MKTME_KEYID_PARTITIONING, read only on Intel processors.
    pub msrs: Option<Result<(u64, u64), String>>,
    /// kvm_intel's `tdx` parameter.
    pub kvm_intel_tdx: ModuleParam,
    /// kvm's `enable_virt_at_load` parameter (TDX needs it on).
    pub virt_at_load: ModuleParam,
    /// The TDX module's version from sysfs: (file, contents).
    pub module_version: Option<(String, String)>,
    /// The kernel log's TDX lines, or why they could not be read.
    pub kernel_log: Result<Vec<String>, String>,
}

impl TdxFacts {
    /// Reads them from this host.
    pub fn read(cpu: &CpuInfo) -> Self {
        let intel = cpu.is_intel();
        Self {
            msrs: intel.then(|| Ok((read_msr(MSR_IA32_MTRRCAP)?, read_msr(MSR_IA32_MKTME_KEYID_PARTITIONING)?))),
            kvm_intel_tdx: ModuleParam::read("kvm_intel", "tdx"),
            virt_at_load: ModuleParam::read("kvm", "enable_virt_at_load"),
            module_version: TDX_MODULE_VERSION_FILES.iter().find_map(|f| {
                let v = std::fs::read_to_string(Path::new(f)).ok()?;
                Some(((*f).to_owned(), v.trim().to_owned()))
            }),
            // The log is only worth reading (and only has TDX lines) on Intel hosts.
            kernel_log: if intel { kernel_log_lines(&KERNEL_LOG_NEEDLES) } else { Ok(Vec::new()) },
        }
    }
}

/// The TDX rows.
pub fn checks(host: &HostFacts) -> Vec<Check> {
    let (cpu, flags, kvm, facts) = (&host.cpu, &host.flags, &host.kvm, &host.tdx);
    let not_intel = || format!("not an Intel processor ({})", cpu.vendor);
    let mut rows = Vec::new();

    rows.push(if !cpu.is_intel() {
        Check::new(Status::Fail, "tdx.cpu", not_intel())
    } else if !cpu.vmx {
        let vm = if cpu.hypervisor { "; this is a virtual machine" } else { "" };
        Check::new(Status::Fail, "tdx.cpu", format!("{}: no VMX (CPUID.1:ECX[5]){vm}", cpu.describe()))
    } else {
        Check::new(Status::Pass, "tdx.cpu", format!("{}: VMX", cpu.describe()))
    });

    rows.push(match &facts.msrs {
        None => Check::new(Status::Fail, "tdx.keyids", format!("not read: {}", not_intel())),
        Some(Err(why)) => Check::new(Status::Warn, "tdx.keyids", format!("cannot tell what the BIOS enabled: {why}")),
        Some(Ok((mtrrcap, partitioning))) => {
            let seamrr = mtrrcap & (1 << 15) != 0;
            let (mktme, tdx) = (partitioning & 0xffff_ffff, partitioning >> 32);
            let evidence = format!(
                "IA32_MTRRCAP = {mtrrcap:#x} (SEAMRR {}), IA32_MKTME_KEYID_PARTITIONING = {partitioning:#x}: {mktme} \
                 MKTME KeyIDs, {tdx} TDX KeyIDs",
                if seamrr { "yes" } else { "no" }
            );
            if tdx >= 2 {
                Check::new(Status::Pass, "tdx.keyids", evidence)
            } else {
                // One KeyID is the TDX module's own; guests need at least one more.
                Check::new(
                    Status::Fail,
                    "tdx.keyids",
                    format!(
                        "{evidence}: the BIOS gives TDX too few KeyIDs (enable TME, TME-MT, TDX and the SEAM loader, \
                         and set aside TDX KeyIDs)"
                    ),
                )
            }
        }
    });

    rows.push(match flags {
        Err(why) => Check::new(Status::Warn, "tdx.kernel", why.clone()),
        Ok(flags) if flags.contains("tdx_host_platform") => Check::new(
            Status::Pass,
            "tdx.kernel",
            "/proc/cpuinfo has tdx_host_platform: the kernel found the BIOS's TDX KeyIDs".into(),
        ),
        Ok(_) => Check::new(
            Status::Fail,
            "tdx.kernel",
            "/proc/cpuinfo lacks tdx_host_platform: the kernel does not host TDX (no TDX KeyIDs from the BIOS, no \
             CONFIG_INTEL_TDX_HOST, or hibernation enabled: dmesg | grep virt/tdx)"
                .into(),
        ),
    });

    rows.push(match &facts.kvm_intel_tdx {
        ModuleParam::NotLoaded => Check::new(Status::Fail, "tdx.kvm_intel", "the kvm_intel module is not loaded".into()),
        ModuleParam::Missing => Check::new(
            Status::Fail,
            "tdx.kvm_intel",
            "kvm_intel has no tdx parameter: the kernel predates TDX in KVM (Linux < 6.16) or lacks CONFIG_KVM_INTEL_TDX"
                .into(),
        ),
        p @ ModuleParam::Value(v) if p.is_enabled() => match &facts.virt_at_load {
            ModuleParam::Value(at_load) if !facts.virt_at_load.is_enabled() => Check::new(
                Status::Fail,
                "tdx.kvm_intel",
                format!("kvm_intel.tdx = {v}, but kvm.enable_virt_at_load = {at_load}: TDX needs it on"),
            ),
            _ => Check::new(Status::Pass, "tdx.kvm_intel", format!("kvm_intel.tdx = {v}")),
        },
        ModuleParam::Value(v) => Check::new(
            Status::Fail,
            "tdx.kvm_intel",
            format!("kvm_intel.tdx = {v}: load kvm_intel with tdx=1 (it turns itself off when the TDX module fails)"),
        ),
    });

    rows.push(module_row(cpu, facts));

    rows.push(match kvm {
        Err(_) => Check::new(Status::Fail, "tdx.vm-type", "not checked: no KVM".into()),
        Ok(caps) if caps.has_vm_type(KVM_X86_TDX_VM) => Check::new(
            Status::Pass,
            "tdx.vm-type",
            format!("KVM_CAP_VM_TYPES = {:#x} has KVM_X86_TDX_VM ({KVM_X86_TDX_VM})", caps.vm_types),
        ),
        Ok(caps) => Check::new(
            Status::Fail,
            "tdx.vm-type",
            format!(
                "KVM_CAP_VM_TYPES = {:#x} lacks KVM_X86_TDX_VM ({KVM_X86_TDX_VM}): needs Linux >= 6.16 with \
                 kvm_intel.tdx=1 and an initialized TDX module",
                caps.vm_types
            ),
        ),
    });
    rows
}

/// The TDX module row: its version from sysfs if the kernel reports one there, and
/// what the kernel log says about its initialization.
fn module_row(cpu: &CpuInfo, facts: &TdxFacts) -> Check {
    if !cpu.is_intel() {
        return Check::new(
            Status::Fail,
            "tdx.module",
            format!("no TDX module: not an Intel processor ({})", cpu.vendor),
        );
    }
    let version = facts.module_version.as_ref().map(|(file, v)| format!("version {v} ({file})"));
    let log = match &facts.kernel_log {
        Ok(lines) => lines.clone(),
        Err(why) => {
            let evidence = version.unwrap_or_else(|| format!("cannot read the kernel log: {why}"));
            return Check::new(
                if facts.module_version.is_some() { Status::Pass } else { Status::Warn },
                "tdx.module",
                evidence,
            );
        }
    };
    let failed = log.iter().find(|l| KERNEL_LOG_FAILURES.iter().any(|f| l.contains(f)));
    let initialized = log.iter().rev().find(|l| l.contains("module initialized"));
    let mut evidence: Vec<String> = version.into_iter().collect();
    match (failed, initialized) {
        (_, Some(line)) => {
            evidence.push(format!("kernel log: \"{line}\""));
            Check::new(Status::Pass, "tdx.module", evidence.join("; "))
        }
        (Some(line), None) => {
            evidence.push(format!("kernel log: \"{line}\""));
            Check::new(Status::Fail, "tdx.module", evidence.join("; "))
        }
        (None, None) if !evidence.is_empty() => Check::new(Status::Pass, "tdx.module", evidence.join("; ")),
        (None, None) => Check::new(
            Status::Warn,
            "tdx.module",
            "the kernel log has no \"virt/tdx: module initialized\" line (not initialized yet, or rotated out of \
             the log)"
                .into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host_check::fixtures;

    fn row(rows: &[Check], name: &str) -> (Status, String) {
        let r = rows.iter().find(|r| r.name == name).unwrap_or_else(|| panic!("no row {name}"));
        (r.status, r.evidence.clone())
    }

    #[test]
    fn a_tdx_host_passes_every_tdx_row() {
        let rows = checks(&fixtures::tdx_host());

        assert_eq!(rows.len(), 6);
        assert!(rows.iter().all(|r| r.status == Status::Pass), "{rows:#?}");
        let (_, keyids) = row(&rows, "tdx.keyids");
        assert!(
            keyids
                .ends_with("SEAMRR yes), IA32_MKTME_KEYID_PARTITIONING = 0x3f00000000: 0 MKTME KeyIDs, 63 TDX KeyIDs"),
            "{keyids}"
        );
        assert_eq!(
            row(&rows, "tdx.module").1,
            "version 1.5.06 (/sys/devices/faux/tdx_host/version); kernel log: \"virt/tdx: module initialized\""
        );
    }

    #[test]
    fn an_amd_host_fails_the_tdx_rows_naming_the_vendor() {
        let mut host = fixtures::snp_host();
        host.tdx = TdxFacts {
            msrs: None,
            kvm_intel_tdx: ModuleParam::NotLoaded,
            virt_at_load: ModuleParam::Value("Y".into()),
            module_version: None,
            kernel_log: Ok(vec![]),
        };

        let rows = checks(&host);

        assert!(rows.iter().all(|r| r.status == Status::Fail), "{rows:#?}");
        assert_eq!(row(&rows, "tdx.cpu").1, "not an Intel processor (AuthenticAMD)");
    }

    #[test]
    fn a_bios_without_tdx_keyids_fails() {
        let mut host = fixtures::tdx_host();
        host.tdx.msrs = Some(Ok((1 << 15, 0x0000_0000_0000_003f)));

        let (status, evidence) = row(&checks(&host), "tdx.keyids");

        assert_eq!(status, Status::Fail);
        assert!(evidence.contains("63 MKTME KeyIDs, 0 TDX KeyIDs") && evidence.contains("BIOS"), "{evidence}");
    }

    #[test]
    fn the_module_row_reads_failures_and_silence_from_the_kernel_log() {
        let mut host = fixtures::tdx_host();
        host.tdx.module_version = None;
        host.tdx.kernel_log = Ok(vec![
            "virt/tdx: BIOS enabled: private KeyID range [16, 64)".into(),
            "virt/tdx: module not loaded".into(),
        ]);

        let (status, evidence) = row(&checks(&host), "tdx.module");
        assert_eq!((status, evidence.as_str()), (Status::Fail, "kernel log: \"virt/tdx: module not loaded\""));

        host.tdx.kernel_log = Ok(vec!["kvm_intel: tdx: tdx requires kvm.enable_virt_at_load=1".into()]);
        assert_eq!(row(&checks(&host), "tdx.module").0, Status::Fail);

        host.tdx.kernel_log = Ok(vec![]);
        assert_eq!(row(&checks(&host), "tdx.module").0, Status::Warn);

        host.tdx.kernel_log = Err("cannot open /dev/kmsg: Permission denied".into());
        let (status, evidence) = row(&checks(&host), "tdx.module");
        assert_eq!(status, Status::Warn);
        assert!(evidence.contains("Permission denied"), "{evidence}");
    }

    #[test]
    fn kvm_intel_without_tdx_fails_and_says_how_to_load_it() {
        let mut host = fixtures::tdx_host();
        host.tdx.kvm_intel_tdx = ModuleParam::Value("N".into());

        let (status, evidence) = row(&checks(&host), "tdx.kvm_intel");

        assert_eq!(status, Status::Fail);
        assert!(evidence.contains("tdx=1"), "{evidence}");
        host.tdx.kvm_intel_tdx = ModuleParam::Missing;
        assert!(row(&checks(&host), "tdx.kvm_intel").1.contains("Linux < 6.16"));
        host.tdx.kvm_intel_tdx = ModuleParam::Value("Y".into());
        host.tdx.virt_at_load = ModuleParam::Value("N".into());
        let (status, evidence) = row(&checks(&host), "tdx.kvm_intel");
        assert_eq!(status, Status::Fail);
        assert!(evidence.contains("kvm.enable_virt_at_load = N"), "{evidence}");
    }
}
