//! `cvmm host-check`: whether this host can launch SEV-SNP or TDX guests, or only
//! cvmm's emulated platforms, with the evidence for each requirement.
//!
//! Two halves, so the judging can be read and tested apart from the host it runs on:
//! [`HostFacts::read`] gathers what the host says (CPUID, MSRs, sysfs, /dev/sev,
//! KVM_CHECK_EXTENSION, `launch::snp::kvm::probe::probe_host`); [`HostReport::evaluate`]
//! turns facts into one [`Check`] per requirement (PASS, WARN or FAIL with its evidence)
//! and one [`Verdict`] per platform. A verdict is "ready" exactly when none of the rows it
//! depends on failed ([`Verdict`] names the first that did); a WARN never decides.
//!
//! - [`host`]: readers for CPUID, /proc/cpuinfo, MSRs, module parameters, the kernel log.
//! - [`kvm`]: the KVM capability rows (`kvm.*`).
//! - [`snp`]: the SEV-SNP rows (`snp.*`).
//! - [`tdx`]: the TDX rows (`tdx.*`), read directly from the host until cvmm has a TDX
//!   host probe of its own.
#![forbid(unsafe_code)]

pub mod host;
pub mod kvm;
pub mod snp;
pub mod tdx;

use std::collections::BTreeSet;
use std::fmt;
use std::path::PathBuf;

use kvm_ioctls::Kvm;

use crate::measure::Tee;
use host::{kernel_release, kernel_version, CpuInfo};
use kvm::KvmCaps;
use snp::SnpFacts;
use tdx::TdxFacts;

/// Whether a requirement is met.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Met.
    Pass,
    /// Could not be checked, or is worth knowing; never decides a verdict.
    Warn,
    /// Not met.
    Fail,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Self::Pass => "PASS",
            Self::Warn => "WARN",
            Self::Fail => "FAIL",
        })
    }
}

/// One requirement, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// The outcome.
    pub status: Status,
    /// The requirement's name, `area.item` ("snp.firmware", "kvm.guest-memfd").
    pub name: &'static str,
    /// What was read, and what to do about a failure.
    pub evidence: String,
}

impl Check {
    /// A row.
    pub fn new(status: Status, name: &'static str, evidence: String) -> Self {
        Self { status, name, evidence }
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:<4}  {:<30} {}", self.status, self.name, self.evidence)
    }
}

/// Which devices host-check looks at.
#[derive(Debug, Clone)]
pub struct HostCheckOptions {
    /// The KVM device (`/dev/kvm`).
    pub kvm_device: PathBuf,
    /// The SEV firmware device (`/dev/sev`).
    pub sev_device: PathBuf,
}

impl Default for HostCheckOptions {
    fn default() -> Self {
        Self {
            kvm_device: PathBuf::from("/dev/kvm"),
            sev_device: PathBuf::from(launch::snp::kvm::probe::DEFAULT_SEV_DEVICE),
        }
    }
}

/// Everything host-check read from the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFacts {
    /// The kernel release.
    pub kernel: String,
    /// The processor.
    pub cpu: CpuInfo,
    /// /proc/cpuinfo's flags.
    pub flags: Result<BTreeSet<String>, String>,
    /// What KVM offers, or why /dev/kvm could not be opened.
    pub kvm: Result<KvmCaps, String>,
    /// The SEV-SNP facts.
    pub snp: SnpFacts,
    /// The TDX facts.
    pub tdx: TdxFacts,
}

impl HostFacts {
    /// Reads this host. Nothing is changed on it: devices are opened, read and closed.
    pub fn read(opts: &HostCheckOptions) -> Self {
        let cpu = CpuInfo::read();
        let kvm = open_kvm(&opts.kvm_device);
        Self {
            kernel: kernel_release(),
            flags: host::read_cpuinfo_flags(),
            kvm: kvm.as_ref().map(KvmCaps::read).map_err(Clone::clone),
            snp: SnpFacts::read(&cpu, kvm.as_ref().ok(), &opts.sev_device),
            tdx: TdxFacts::read(&cpu),
            cpu,
        }
    }
}

fn open_kvm(path: &std::path::Path) -> Result<Kvm, String> {
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| format!("{} contains a NUL byte", path.display()))?;
    Kvm::new_with_path(&c_path)
        .map_err(|e| format!("cannot open {}: {}", path.display(), std::io::Error::from_raw_os_error(e.errno())))
}

/// A platform's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The TEE.
    pub tee: Tee,
    /// Whether this is cvmm's emulated platform for it rather than the hardware.
    pub emulated: bool,
    /// Ready (with what it offers), or not (with the first reason).
    pub outcome: Result<String, String>,
}

impl Verdict {
    /// Whether the platform can launch guests.
    pub fn ready(&self) -> bool {
        self.outcome.is_ok()
    }

    /// "SNP", "TDX (emulated)".
    pub fn platform(&self) -> String {
        let tee = tee_name(self.tee);
        if self.emulated {
            format!("{tee} (emulated)")
        } else {
            tee.to_owned()
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (yes, no) = if self.emulated { ("available", "not available") } else { ("ready", "not ready") };
        match &self.outcome {
            Ok(detail) => write!(f, "verdict {}: {yes}: {detail}", self.platform()),
            Err(reason) => write!(f, "verdict {}: {no}: {reason}", self.platform()),
        }
    }
}

/// "SNP" or "TDX".
pub fn tee_name(tee: Tee) -> &'static str {
    match tee {
        Tee::Snp => "SNP",
        Tee::Tdx => "TDX",
    }
}

/// The rows and verdicts of one host.
#[derive(Debug, Clone)]
pub struct HostReport {
    /// What the host is: kernel and processor.
    pub header: String,
    /// One row per requirement.
    pub checks: Vec<Check>,
    /// SNP, TDX, emulated SNP, emulated TDX.
    pub verdicts: Vec<Verdict>,
}

impl HostReport {
    /// Judges `facts`.
    pub fn evaluate(facts: &HostFacts) -> Self {
        let mut checks = vec![kernel_row(facts)];
        checks.extend(kvm::checks(&facts.kvm));
        checks.extend(snp::checks(facts));
        checks.extend(tdx::checks(facts));

        // The TEE's own rows come first: a processor without the TEE is a better reason
        // than a KVM capability that would also be needed.
        let real = |tee: Tee, prefix: &str, ready: &str| {
            let own = first_failure(&checks, |name| name.starts_with(prefix));
            let kvm_needed =
                |name: &str| name == "kvm.device" || name == "kvm.base" || kvm::CONFIDENTIAL_ROWS.contains(&name);
            let outcome = own.or_else(|| first_failure(&checks, kvm_needed)).map_or(Ok(ready.to_owned()), Err);
            Verdict { tee, emulated: false, outcome }
        };
        let mut verdicts = vec![
            real(Tee::Snp, "snp.", "KVM offers SEV-SNP VMs (cvmm run --tee snp)"),
            real(Tee::Tdx, "tdx.", "KVM offers TDX VMs"),
        ];
        for (tee, rows, flag) in
            [(Tee::Snp, &kvm::EMULATED_SNP_ROWS[..], "snp"), (Tee::Tdx, &kvm::EMULATED_TDX_ROWS[..], "tdx")]
        {
            let outcome = first_failure(&checks, |name| rows.contains(&name))
                .map_or(Ok(format!("cvmm run --tee {flag} --emulated")), Err);
            verdicts.push(Verdict { tee, emulated: true, outcome });
        }
        let vm = if facts.cpu.hypervisor { ", a virtual machine" } else { "" };
        let header = format!("cvmm host-check: Linux {}, {}{vm}", facts.kernel, facts.cpu.describe());
        Self { header, checks, verdicts }
    }

    /// The verdict for a TEE, on hardware or emulated.
    pub fn verdict(&self, tee: Tee, emulated: bool) -> Option<&Verdict> {
        self.verdicts.iter().find(|v| v.tee == tee && v.emulated == emulated)
    }

    /// One line: which platforms are ready ("SNP ready", "emulation only (SNP)").
    pub fn summary(&self) -> String {
        let names = |emulated: bool| -> Vec<&'static str> {
            self.verdicts.iter().filter(|v| v.emulated == emulated && v.ready()).map(|v| tee_name(v.tee)).collect()
        };
        let (hardware, emulation) = (names(false), names(true));
        match (hardware.is_empty(), emulation.is_empty()) {
            (false, _) => {
                let ready: Vec<String> = hardware.iter().map(|t| format!("{t} ready")).collect();
                format!("host: {}", ready.join(", "))
            }
            (true, false) => format!("host: emulation only ({})", emulation.join(", ")),
            (true, true) => "host: no confidential guests (no SNP, no TDX, no emulation)".to_owned(),
        }
    }
}

impl fmt::Display for HostReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.header)?;
        for check in &self.checks {
            writeln!(f, "{check}")?;
        }
        for verdict in &self.verdicts {
            writeln!(f, "{verdict}")?;
        }
        writeln!(f, "{}", self.summary())
    }
}

/// Reads this host and judges it.
pub fn check_host(opts: &HostCheckOptions) -> HostReport {
    HostReport::evaluate(&HostFacts::read(opts))
}

/// The first failed row `needed` selects, as "name: evidence".
fn first_failure(checks: &[Check], needed: impl Fn(&str) -> bool) -> Option<String> {
    checks.iter().find(|c| c.status == Status::Fail && needed(c.name)).map(|c| format!("{}: {}", c.name, c.evidence))
}

/// The kernel's version against what each TEE's upstream KVM support needs: SNP
/// arrived in 6.11, TDX in 6.16. Distribution kernels backport, so an old version only
/// warns; the capability rows decide.
fn kernel_row(facts: &HostFacts) -> Check {
    let version = kernel_version(&facts.kernel);
    let needed = if facts.cpu.is_amd() {
        Some(("SEV-SNP", (6, 11)))
    } else if facts.cpu.is_intel() {
        Some(("TDX", (6, 16)))
    } else {
        None
    };
    match (version, needed) {
        (None, _) => {
            Check::new(Status::Warn, "host.kernel", format!("cannot read the kernel version ({:?})", facts.kernel))
        }
        (Some(_), None) => Check::new(Status::Pass, "host.kernel", format!("Linux {}", facts.kernel)),
        (Some(v), Some((tee, min))) if v >= min => Check::new(
            Status::Pass,
            "host.kernel",
            format!("Linux {}: >= {}.{}, where upstream KVM gained {tee}", facts.kernel, min.0, min.1),
        ),
        (Some(_), Some((tee, min))) => Check::new(
            Status::Warn,
            "host.kernel",
            format!(
                "Linux {}: older than {}.{}, where upstream KVM gained {tee} (fine if the distribution backported it)",
                facts.kernel, min.0, min.1
            ),
        ),
    }
}

/// Hosts as the unit tests see them: an SNP host, a TDX host, and a host with neither.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::host::{CpuidRegs, ModuleParam};
    use super::snp::{SevDevice, SnpProbe};
    use super::*;
    use launch::snp::kvm::probe::SnpFirmwareStatus;

    fn flags(list: &[&str]) -> Result<BTreeSet<String>, String> {
        Ok(list.iter().map(|s| (*s).to_owned()).collect())
    }

    /// What a Linux 6.18 KVM answers, with VM types `vm_types`.
    pub fn caps(vm_types: u32) -> KvmCaps {
        KvmCaps {
            api_version: 12,
            base_missing: vec![],
            vm_types,
            guest_memfd: 1,
            memory_attributes: 8,
            user_memory2: 1,
            exit_hypercall: 1 << 12,
            split_irqchip: 1,
            user_space_msr: 7,
            msr_filter: 1,
            exit_on_emulation_failure: 1,
        }
    }

    fn no_tdx() -> TdxFacts {
        TdxFacts {
            msrs: None,
            kvm_intel_tdx: ModuleParam::NotLoaded,
            virt_at_load: ModuleParam::Value("Y".into()),
            module_version: None,
            kernel_log: Ok(vec![]),
        }
    }

    /// A Milan host with SNP set up: BIOS, firmware 1.55, kvm_amd.sev_snp=Y, Linux 6.18.
    pub fn snp_host() -> HostFacts {
        HostFacts {
            kernel: "6.18.2-amd64".into(),
            cpu: CpuInfo {
                vendor: "AuthenticAMD".into(),
                brand: "AMD EPYC 7763 64-Core Processor".into(),
                family: 0x19,
                model: 0x01,
                stepping: 1,
                hypervisor: false,
                vmx: false,
                svm: true,
                mem_encrypt: Some(CpuidRegs { eax: 0x0001_781b, ebx: 0x0000_0173, ecx: 509, edx: 1 }),
            },
            flags: flags(&["fpu", "svm", "sme", "sev", "sev_es", "sev_snp"]),
            kvm: Ok(caps(0x1d)),
            snp: SnpFacts {
                syscfg: Some(Ok(0x0000_0000_0184_0000)),
                kvm_amd_snp: ModuleParam::Value("Y".into()),
                sev_device: SevDevice::Open {
                    path: "/dev/sev".into(),
                    status: Ok(SnpFirmwareStatus {
                        api_major: 1,
                        api_minor: 55,
                        build_id: 21,
                        state: 1,
                        rmp_initialized: true,
                        guest_count: 0,
                        current_tcb: 0xdb18_0000_0000_0304,
                        reported_tcb: 0xdb18_0000_0000_0304,
                        mask_chip_id: false,
                        mask_chip_key: false,
                        vlek_loaded: false,
                    }),
                },
                probe: Ok(SnpProbe { vmsa_features: 0x3ff, policy_bits: None, req_certs: false }),
                smt: Ok(true),
            },
            tdx: no_tdx(),
        }
    }

    /// A Sapphire Rapids host with TDX set up: 63 TDX KeyIDs, module 1.5.06, Linux 6.18.
    pub fn tdx_host() -> HostFacts {
        HostFacts {
            kernel: "6.18.2-amd64".into(),
            cpu: CpuInfo {
                vendor: "GenuineIntel".into(),
                brand: "Intel(R) Xeon(R) Platinum 8480+".into(),
                family: 6,
                model: 0x8f,
                stepping: 8,
                hypervisor: false,
                vmx: true,
                svm: false,
                mem_encrypt: None,
            },
            flags: flags(&["fpu", "vmx", "tdx_host_platform"]),
            kvm: Ok(caps(0x21)),
            snp: SnpFacts {
                syscfg: None,
                kvm_amd_snp: ModuleParam::NotLoaded,
                sev_device: SevDevice::Missing("/dev/sev".into()),
                probe: Err("/dev/sev does not exist: the host has no SEV firmware interface".into()),
                smt: Ok(true),
            },
            tdx: TdxFacts {
                msrs: Some(Ok((1 << 15 | 0x1d0a, 0x0000_003f_0000_0000))),
                kvm_intel_tdx: ModuleParam::Value("Y".into()),
                virt_at_load: ModuleParam::Value("Y".into()),
                module_version: Some(("/sys/devices/faux/tdx_host/version".into(), "1.5.06".into())),
                kernel_log: Ok(vec![
                    "virt/tdx: BIOS enabled: private KeyID range [64, 127)".into(),
                    "virt/tdx: module initialized".into(),
                ]),
            },
        }
    }

    /// A virtual machine on an AMD host, with KVM (nested or paravirtualized) but no
    /// SEV: like the machine cvmm is developed on.
    pub fn plain_vm() -> HostFacts {
        let mut host = snp_host();
        host.cpu.hypervisor = true;
        host.cpu.mem_encrypt = Some(CpuidRegs::default());
        host.flags = flags(&["fpu", "hypervisor"]);
        host.kvm = Ok(caps(0x1));
        host.snp = SnpFacts {
            syscfg: Some(Err("cannot read MSR 0xc0010010 from /dev/cpu/0/msr: Input/output error".into())),
            kvm_amd_snp: ModuleParam::NotLoaded,
            sev_device: SevDevice::Missing("/dev/sev".into()),
            probe: Err("/dev/sev does not exist: the host has no SEV firmware interface".into()),
            smt: Ok(false),
        };
        host
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use super::*;

    #[test]
    fn an_snp_host_is_snp_ready_and_not_tdx_ready() {
        let report = HostReport::evaluate(&snp_host());

        assert!(report.verdict(Tee::Snp, false).unwrap().ready(), "{report}");
        let tdx = report.verdict(Tee::Tdx, false).unwrap();
        assert_eq!(tdx.outcome, Err("tdx.cpu: not an Intel processor (AuthenticAMD)".into()));
        assert_eq!(report.summary(), "host: SNP ready");
    }

    #[test]
    fn a_tdx_host_is_tdx_ready_and_not_snp_ready() {
        let report = HostReport::evaluate(&tdx_host());

        assert!(report.verdict(Tee::Tdx, false).unwrap().ready(), "{report}");
        let snp = report.verdict(Tee::Snp, false).unwrap();
        assert_eq!(snp.outcome, Err("snp.cpu: not an AMD processor (GenuineIntel)".into()));
        assert_eq!(report.summary(), "host: TDX ready");
    }

    #[test]
    fn a_plain_vm_offers_emulation_only_and_names_the_first_snp_failure() {
        let report = HostReport::evaluate(&plain_vm());

        let snp = report.verdict(Tee::Snp, false).unwrap();
        let reason = snp.outcome.clone().unwrap_err();
        assert!(reason.starts_with("snp.cpu: CPUID 0x8000001f: EAX = 0x00000000 (no memory encryption)"), "{reason}");
        assert!(reason.ends_with("this is a virtual machine and CPUID is its hypervisor's"), "{reason}");
        assert!(report.verdict(Tee::Snp, true).unwrap().ready());
        assert!(report.verdict(Tee::Tdx, true).unwrap().ready());
        assert_eq!(report.summary(), "host: emulation only (SNP, TDX)");
    }

    #[test]
    fn a_missing_kvm_capability_makes_a_ready_host_not_ready() {
        let mut host = snp_host();
        host.kvm = Ok(KvmCaps { exit_hypercall: 0, ..caps(0x1d) });

        let report = HostReport::evaluate(&host);

        let reason = report.verdict(Tee::Snp, false).unwrap().outcome.clone().unwrap_err();
        assert!(reason.starts_with("kvm.exit-hypercall: KVM_CAP_EXIT_HYPERCALL = 0x0"), "{reason}");
        // The emulated platform does not need it.
        assert!(report.verdict(Tee::Snp, true).unwrap().ready());
    }

    #[test]
    fn warnings_never_decide_a_verdict() {
        let mut host = snp_host();
        host.snp.syscfg = Some(Err("/dev/cpu/0/msr does not exist (modprobe msr)".into()));
        host.kernel = "6.1.0-amd64".into();

        let report = HostReport::evaluate(&host);

        assert!(report.checks.iter().filter(|c| c.status == Status::Warn).count() >= 2, "{report}");
        assert!(report.verdict(Tee::Snp, false).unwrap().ready());
    }

    #[test]
    fn each_emulated_platform_needs_its_own_capabilities() {
        let mut host = plain_vm();
        host.kvm = Ok(KvmCaps { msr_filter: 0, ..caps(0x1) });

        let report = HostReport::evaluate(&host);

        // The emulated SNP platform filters the GHCB MSR; the emulated TDX one does not.
        let snp = report.verdict(Tee::Snp, true).unwrap();
        assert_eq!(snp.outcome, Err("kvm.msr-filter: KVM_CAP_X86_MSR_FILTER is missing".into()));
        assert!(report.verdict(Tee::Tdx, true).unwrap().ready());
        assert_eq!(report.summary(), "host: emulation only (TDX)");
    }

    #[test]
    fn without_kvm_nothing_is_ready() {
        let mut host = plain_vm();
        host.kvm = Err("cannot open /dev/kvm: No such file or directory (os error 2)".into());

        let report = HostReport::evaluate(&host);

        let emulated = report.verdict(Tee::Snp, true).unwrap();
        assert_eq!(
            emulated.outcome,
            Err("kvm.device: cannot open /dev/kvm: No such file or directory (os error 2)".into())
        );
        assert_eq!(report.summary(), "host: no confidential guests (no SNP, no TDX, no emulation)");
    }

    #[test]
    fn the_report_prints_rows_then_verdicts_then_the_summary() {
        let text = HostReport::evaluate(&plain_vm()).to_string();
        let lines: Vec<&str> = text.lines().collect();

        assert!(lines[0].starts_with("cvmm host-check: Linux 6.18.2-amd64, AuthenticAMD family 0x19"), "{text}");
        assert!(lines[0].ends_with(", a virtual machine"), "{text}");
        assert!(
            lines.iter().any(|l| l.starts_with("FAIL  snp.sev-device                 /dev/sev does not exist")),
            "{text}"
        );
        assert!(lines.contains(&"verdict SNP (emulated): available: cvmm run --tee snp --emulated"), "{text}");
        assert!(
            lines.iter().any(|l| l.starts_with("verdict TDX: not ready: tdx.cpu: not an Intel processor")),
            "{text}"
        );
        assert!(lines.contains(&"verdict TDX (emulated): available: cvmm run --tee tdx --emulated"), "{text}");
        assert_eq!(*lines.last().unwrap(), "host: emulation only (SNP, TDX)");
        let first_verdict = lines.iter().position(|l| l.starts_with("verdict ")).unwrap();
        assert!(lines[1..first_verdict]
            .iter()
            .all(|l| ["PASS  ", "WARN  ", "FAIL  "].iter().any(|s| l.starts_with(s))));
    }

    #[test]
    fn kernel_versions_below_the_tees_needs_warn_per_vendor() {
        let mut amd = snp_host();
        amd.kernel = "6.10.0".into();
        let mut intel = tdx_host();
        intel.kernel = "6.12.0".into();

        assert_eq!(kernel_row(&amd).status, Status::Warn);
        assert_eq!(kernel_row(&intel).status, Status::Warn);
        intel.kernel = "6.16.1".into();
        assert_eq!(kernel_row(&intel).status, Status::Pass);
        assert!(kernel_row(&amd).evidence.contains("6.11"));
    }
}
