//! SEV-SNP launch plans from an OVMF-style firmware image: the firmware, the SEV
//! metadata sections and every vCPU's initial register state, in the order (and with
//! the page types) a launch issues them, which is the order they are measured.
//!
//! [`plan_snp`] follows sev-snp-measure 0.0.13 (`guest.py`, `snp_calc_launch_digest`),
//! the reference calculator guest owners use to predict QEMU's launch digest:
//!
//! 1. the firmware as NORMAL pages, ending at 4 GiB;
//! 2. the SEV metadata sections in descriptor order: SNP_SEC_MEM as ZERO pages
//!    (UNMEASURED under [`VmmType::Gce`]), SNP_SECRETS as the SECRETS page, CPUID as
//!    the CPUID page (moved after all other sections under [`VmmType::Ec2`]), SVSM_CAA
//!    as ZERO pages, SNP_KERNEL_HASHES as the NORMAL hashes page when kernel hashes
//!    are given and as ZERO pages otherwise;
//! 3. one VMSA per vCPU, in vCPU order: the BSP at the reset vector (CS base
//!    0xffff0000, RIP 0xfff0), the APs at the SEV-ES reset block's address.
//!
//! # Which VMSA behaviour is modelled
//!
//! On KVM, `SNP_LAUNCH_UPDATE` never takes VMSA pages: KVM builds each vCPU's VMSA at
//! `SNP_LAUNCH_FINISH` from the vCPU's registers (as set with `KVM_SET_REGS`/`SREGS`
//! and the reset state) and the VMSA features given to `KVM_SEV_INIT2`, and the
//! firmware measures them in vCPU order at GPA 0xFFFFFFFFF000. A VM created with
//! `KVM_SEV_INIT2` also gets its x87/SSE state synced into the VMSA: FCW 0x37f and
//! MXCSR 0x1f80 from the reset FPU state. [`SnpVcpu`] is that register state;
//! [`SnpVcpu::at_reset`] gives the state of a QEMU-launched guest (EFER.SVME, CR4.MCE,
//! RDX = the vCPU's CPUID signature as QEMU sets it, FCW/MXCSR as above), and the EC2
//! and GCE variants as sev-snp-measure defines them (their hypervisors are not KVM:
//! RDX 0x600, no x87/SSE state, different segment attributes or PAT).

use std::str::FromStr;
use std::sync::Arc;

use firmware::sev::{KernelHashes, SevError, SevFirmware, SevSectionType};
use sha2::{Digest, Sha256};
use thiserror::Error;

use super::{Contents, LaunchPlan, PageType, PlanError, PlanRange, SnpPageType, VcpuState, PAGE_SIZE};

/// The most vCPUs an SNP plan may have (KVM's limit is higher, but a larger count is a
/// configuration error, not a guest).
pub const MAX_SNP_VCPUS: u32 = 512;

/// Where the BSP starts: CS base 0xffff0000, IP 0xfff0.
pub const BSP_RESET_EIP: u32 = 0xffff_fff0;

/// PAT MSR at reset (AMD APM vol. 2, A.3).
pub const RESET_PAT: u64 = 0x0007_0406_0007_0406;

/// One segment register as the VMSA stores it (the VMCB segment format: attributes
/// in the 12-bit compressed form).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SnpSegment {
    /// Selector.
    pub selector: u16,
    /// Attributes (type, S, DPL, P, AVL, L, D/B, G, compressed to 12 bits).
    pub attrib: u16,
    /// Limit.
    pub limit: u32,
    /// Base.
    pub base: u64,
}

impl SnpSegment {
    const fn new(selector: u16, attrib: u16, limit: u32, base: u64) -> Self {
        Self { selector, attrib, limit, base }
    }
}

/// The register state an SNP vCPU's VMSA is built from: every VMSA field cvmm sets.
/// Fields not listed here are zero in the VMSA (see `crate::measure::snp::vmsa_page`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SnpVcpu {
    /// ES.
    pub es: SnpSegment,
    /// CS.
    pub cs: SnpSegment,
    /// SS.
    pub ss: SnpSegment,
    /// DS.
    pub ds: SnpSegment,
    /// FS.
    pub fs: SnpSegment,
    /// GS.
    pub gs: SnpSegment,
    /// GDTR (base and limit only).
    pub gdtr: SnpSegment,
    /// LDTR.
    pub ldtr: SnpSegment,
    /// IDTR (base and limit only).
    pub idtr: SnpSegment,
    /// TR.
    pub tr: SnpSegment,
    /// EFER.
    pub efer: u64,
    /// CR0.
    pub cr0: u64,
    /// CR2.
    pub cr2: u64,
    /// CR3.
    pub cr3: u64,
    /// CR4.
    pub cr4: u64,
    /// DR6.
    pub dr6: u64,
    /// DR7.
    pub dr7: u64,
    /// RFLAGS.
    pub rflags: u64,
    /// RIP.
    pub rip: u64,
    /// RSP.
    pub rsp: u64,
    /// RAX.
    pub rax: u64,
    /// RBX.
    pub rbx: u64,
    /// RCX.
    pub rcx: u64,
    /// RDX (at reset: the processor signature, CPUID Fn0000_0001_EAX).
    pub rdx: u64,
    /// RSI.
    pub rsi: u64,
    /// RDI.
    pub rdi: u64,
    /// RBP.
    pub rbp: u64,
    /// R8 to R15.
    pub r8_to_r15: [u64; 8],
    /// The guest PAT MSR.
    pub g_pat: u64,
    /// XCR0.
    pub xcr0: u64,
    /// IA32_XSS.
    pub xss: u64,
    /// x87 control word.
    pub x87_fcw: u16,
    /// MXCSR.
    pub mxcsr: u32,
    /// SEV_FEATURES (the VMSA features given to KVM_SEV_INIT2; bit 0 SNPActive).
    pub sev_features: u64,
}

impl SnpVcpu {
    /// The state of a vCPU at reset starting at `eip` (CS base `eip & 0xffff0000`,
    /// RIP `eip & 0xffff`), as `vmm` launches it and sev-snp-measure models it.
    pub fn at_reset(eip: u32, signature: u32, sev_features: u64, vmm: VmmType) -> Self {
        // CS, SS and TR attributes, RDX, PAT, MXCSR, FCW.
        let (cs_attrib, ss_attrib, tr_attrib, rdx, g_pat, mxcsr, fcw) = match vmm {
            VmmType::Qemu => (0x9b, 0x93, 0x8b, u64::from(signature), RESET_PAT, 0x1f80, 0x37f),
            VmmType::Ec2 => {
                let cs = if eip == BSP_RESET_EIP { 0x9a } else { 0x9b };
                (cs, 0x92, 0x83, 0x600, RESET_PAT, 0, 0)
            }
            VmmType::Gce => (0x9b, 0x93, 0x8b, 0x600, 0x0007_0106, 0, 0),
        };
        let data = SnpSegment::new(0, 0x93, 0xffff, 0);
        Self {
            es: data,
            cs: SnpSegment::new(0xf000, cs_attrib, 0xffff, u64::from(eip & 0xffff_0000)),
            ss: SnpSegment::new(0, ss_attrib, 0xffff, 0),
            ds: data,
            fs: data,
            gs: data,
            gdtr: SnpSegment::new(0, 0, 0xffff, 0),
            ldtr: SnpSegment::new(0, 0x82, 0xffff, 0),
            idtr: SnpSegment::new(0, 0, 0xffff, 0),
            tr: SnpSegment::new(0, tr_attrib, 0xffff, 0),
            efer: 0x1000, // EFER.SVME: KVM sets it for SEV-ES guests
            cr0: 0x10,    // CR0.ET
            cr4: 0x40,    // CR4.MCE: KVM sets it
            dr6: 0xffff_0ff0,
            dr7: 0x400,
            rflags: 0x2,
            rip: u64::from(eip & 0xffff),
            rdx,
            g_pat,
            xcr0: 0x1,
            x87_fcw: fcw,
            mxcsr,
            sev_features,
            ..Self::default()
        }
    }
}

/// The CPUID Fn0000_0001_EAX processor signature for a family, model and stepping
/// (AMD CPUID specification #25481).
pub const fn cpu_signature(family: u32, model: u32, stepping: u32) -> u32 {
    let (family_low, family_high) = if family > 0xf { (0xf, (family - 0xf) & 0xff) } else { (family, 0) };
    (family_high << 20) | (((model >> 4) & 0xf) << 16) | (family_low << 8) | ((model & 0xf) << 4) | (stepping & 0xf)
}

/// QEMU's EPYC vCPU models, with the names and signatures sev-snp-measure 0.0.13 uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VcpuType {
    /// EPYC (family 23, model 1, stepping 2).
    Epyc,
    /// EPYC-v1.
    EpycV1,
    /// EPYC-v2.
    EpycV2,
    /// EPYC-IBPB.
    EpycIbpb,
    /// EPYC-v3.
    EpycV3,
    /// EPYC-v4.
    EpycV4,
    /// EPYC-Rome (family 23, model 49, stepping 0).
    EpycRome,
    /// EPYC-Rome-v1.
    EpycRomeV1,
    /// EPYC-Rome-v2.
    EpycRomeV2,
    /// EPYC-Rome-v3.
    EpycRomeV3,
    /// EPYC-Milan (family 25, model 1, stepping 1).
    EpycMilan,
    /// EPYC-Milan-v1.
    EpycMilanV1,
    /// EPYC-Milan-v2.
    EpycMilanV2,
    /// EPYC-Genoa (family 25, model 17, stepping 0).
    EpycGenoa,
    /// EPYC-Genoa-v1.
    EpycGenoaV1,
    /// EPYC-Turin (family 26, model 0, stepping 0).
    EpycTurin,
}

impl VcpuType {
    /// Every type, in sev-snp-measure's order.
    pub const ALL: [VcpuType; 16] = [
        Self::Epyc,
        Self::EpycV1,
        Self::EpycV2,
        Self::EpycIbpb,
        Self::EpycV3,
        Self::EpycV4,
        Self::EpycRome,
        Self::EpycRomeV1,
        Self::EpycRomeV2,
        Self::EpycRomeV3,
        Self::EpycMilan,
        Self::EpycMilanV1,
        Self::EpycMilanV2,
        Self::EpycGenoa,
        Self::EpycGenoaV1,
        Self::EpycTurin,
    ];

    /// The QEMU model name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Epyc => "EPYC",
            Self::EpycV1 => "EPYC-v1",
            Self::EpycV2 => "EPYC-v2",
            Self::EpycIbpb => "EPYC-IBPB",
            Self::EpycV3 => "EPYC-v3",
            Self::EpycV4 => "EPYC-v4",
            Self::EpycRome => "EPYC-Rome",
            Self::EpycRomeV1 => "EPYC-Rome-v1",
            Self::EpycRomeV2 => "EPYC-Rome-v2",
            Self::EpycRomeV3 => "EPYC-Rome-v3",
            Self::EpycMilan => "EPYC-Milan",
            Self::EpycMilanV1 => "EPYC-Milan-v1",
            Self::EpycMilanV2 => "EPYC-Milan-v2",
            Self::EpycGenoa => "EPYC-Genoa",
            Self::EpycGenoaV1 => "EPYC-Genoa-v1",
            Self::EpycTurin => "EPYC-Turin",
        }
    }

    /// The processor signature (CPUID Fn0000_0001_EAX), which QEMU puts in RDX at reset.
    pub fn signature(self) -> u32 {
        match self {
            Self::Epyc | Self::EpycV1 | Self::EpycV2 | Self::EpycIbpb | Self::EpycV3 | Self::EpycV4 => {
                cpu_signature(23, 1, 2)
            }
            Self::EpycRome | Self::EpycRomeV1 | Self::EpycRomeV2 | Self::EpycRomeV3 => cpu_signature(23, 49, 0),
            Self::EpycMilan | Self::EpycMilanV1 | Self::EpycMilanV2 => cpu_signature(25, 1, 1),
            Self::EpycGenoa | Self::EpycGenoaV1 => cpu_signature(25, 17, 0),
            Self::EpycTurin => cpu_signature(26, 0, 0),
        }
    }
}

impl FromStr for VcpuType {
    type Err = SnpPlanError;

    /// Looks a type up by name, ignoring case ("epyc-milan" is EPYC-Milan).
    fn from_str(s: &str) -> Result<Self, SnpPlanError> {
        Self::ALL
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| SnpPlanError::UnknownVcpuType(s.to_owned()))
    }
}

impl std::fmt::Display for VcpuType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Whose launch conventions the plan follows (sev-snp-measure's `--vmm-type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum VmmType {
    /// QEMU on KVM (and cvmm on KVM): the reset state KVM and QEMU give a vCPU.
    #[default]
    Qemu,
    /// AWS EC2: RDX 0x600, no x87/SSE state, CS attributes 0x9a on the BSP, SS 0x92,
    /// TR 0x83, and the CPUID page measured after all other metadata sections.
    /// sev-snp-measure's RDX 0x600 is followed (checked by its author on a live EC2
    /// instance); the `sev` crate 8.0 uses 0 instead.
    Ec2,
    /// Google Compute Engine: RDX 0x600, no x87/SSE state, PAT 0x70106, and the
    /// SNP_SEC_MEM sections UNMEASURED instead of ZERO.
    Gce,
}

impl VmmType {
    /// The name sev-snp-measure uses ("QEMU", "ec2", "gce").
    pub fn name(self) -> &'static str {
        match self {
            Self::Qemu => "QEMU",
            Self::Ec2 => "ec2",
            Self::Gce => "gce",
        }
    }
}

impl FromStr for VmmType {
    type Err = SnpPlanError;

    /// Looks a VMM type up by name, ignoring case.
    fn from_str(s: &str) -> Result<Self, SnpPlanError> {
        [Self::Qemu, Self::Ec2, Self::Gce]
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| SnpPlanError::UnknownVmmType(s.to_owned()))
    }
}

/// What QEMU hashes into the SNP_KERNEL_HASHES page for a measured direct boot.
#[derive(Debug, Clone, Copy)]
pub struct KernelHashesInput<'a> {
    /// The kernel file as given (e.g. a bzImage), hashed whole.
    pub kernel: &'a [u8],
    /// The initrd, if any (none hashes as no bytes).
    pub initrd: Option<&'a [u8]>,
    /// The command line, without a terminating NUL (one is added, as QEMU does; an
    /// empty command line hashes as `"\0"`).
    pub cmdline: &'a str,
}

impl KernelHashesInput<'_> {
    /// The SHA-256 digests of the kernel, initrd and NUL-terminated command line.
    pub fn hashes(&self) -> Result<KernelHashes, SnpPlanError> {
        if self.cmdline.contains('\0') {
            return Err(SnpPlanError::CmdlineNul);
        }
        let mut cmdline = Sha256::new();
        cmdline.update(self.cmdline.as_bytes());
        cmdline.update([0u8]);
        Ok(KernelHashes {
            cmdline: cmdline.finalize().into(),
            initrd: Sha256::digest(self.initrd.unwrap_or_default()).into(),
            kernel: Sha256::digest(self.kernel).into(),
        })
    }
}

/// Everything an SNP launch plan depends on.
#[derive(Debug, Clone)]
pub struct SnpPlanOptions {
    /// The firmware image (OVMF-style, with the SEV footer entries), loaded to end at 4 GiB.
    pub firmware: Arc<[u8]>,
    /// Number of vCPUs, 1 to [`MAX_SNP_VCPUS`].
    pub vcpus: u32,
    /// The vCPU model (its signature goes into RDX under [`VmmType::Qemu`]).
    pub vcpu_type: VcpuType,
    /// Whose launch conventions to follow.
    pub vmm_type: VmmType,
    /// The VMSA's SEV_FEATURES (sev-snp-measure's `--guest-features`, default 0x1).
    pub guest_features: u64,
    /// Kernel, initrd and command line for a measured direct boot, if any.
    /// SHA-256 digests of the kernel, initrd and command line for a measured direct
    /// boot, if any (from [`KernelHashesInput::hashes`], or computed while streaming
    /// the files): the plan depends only on the digests.
    pub kernel_hashes: Option<KernelHashes>,
}

/// Errors from building an SNP plan.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SnpPlanError {
    /// The firmware's SEV data is unusable.
    #[error("SNP firmware image: {0}")]
    Firmware(#[from] SevError),
    /// The firmware image is empty, not a whole number of pages, or larger than 4 GiB.
    #[error("SNP firmware image of {0} bytes is not a non-empty whole number of 4 KiB pages below 4 GiB")]
    FirmwareSize(usize),
    /// The firmware has no SEV-ES reset block, so the APs have nowhere to start.
    #[error("SNP firmware image has no SEV-ES reset block (AP reset vector), or it is zero")]
    NoApResetVector,
    /// The vCPU count is 0 or more than [`MAX_SNP_VCPUS`].
    #[error("invalid vcpu count {0}: an SNP guest has 1 to {MAX_SNP_VCPUS} vCPUs")]
    VcpuCount(u32),
    /// A vCPU type name that is not one of [`VcpuType::ALL`].
    #[error("unknown vCPU type '{0}' (known: EPYC, EPYC-v1..v4, EPYC-IBPB, EPYC-Rome(-v1..v3), EPYC-Milan(-v1, -v2), EPYC-Genoa(-v1), EPYC-Turin)")]
    UnknownVcpuType(String),
    /// A VMM type name other than QEMU, ec2 or gce.
    #[error("unknown VMM type '{0}' (known: QEMU, ec2, gce)")]
    UnknownVmmType(String),
    /// The command line holds a NUL byte, which would end it early in the guest.
    #[error("the kernel command line contains a NUL byte")]
    CmdlineNul,
    /// The plan's ranges are inconsistent (e.g. a metadata section overlaps the firmware).
    #[error("SNP launch plan: {0}")]
    Plan(#[from] PlanError),
}

/// Builds the SNP launch plan for `opts`: the firmware, the metadata sections and the
/// vCPUs, in the order the launch issues (and the firmware measures) them.
pub fn plan_snp(opts: &SnpPlanOptions) -> Result<LaunchPlan, SnpPlanError> {
    if opts.vcpus == 0 || opts.vcpus > MAX_SNP_VCPUS {
        return Err(SnpPlanError::VcpuCount(opts.vcpus));
    }
    let size = opts.firmware.len();
    if size == 0 || size as u64 & (PAGE_SIZE - 1) != 0 || size as u64 > 1 << 32 {
        return Err(SnpPlanError::FirmwareSize(size));
    }
    let fw = SevFirmware::parse(&opts.firmware)?;
    let ap_eip = match fw.ap_reset_eip {
        Some(eip) if eip != 0 || opts.vcpus == 1 => eip,
        _ => return Err(SnpPlanError::NoApResetVector),
    };
    let hashes_page = match &opts.kernel_hashes {
        Some(hashes) => Some(fw.kernel_hashes_page(hashes)?),
        None => None,
    };

    let mut plan = LaunchPlan::default();
    plan.push(PlanRange {
        gpa: (1u64 << 32) - size as u64,
        len: size as u64,
        page_type: PageType::Snp(SnpPageType::Normal),
        // Shared, not copied: the firmware range is the whole image.
        contents: Contents::Bytes(opts.firmware.clone()),
        what: "firmware".into(),
    })?;
    let mut deferred_cpuid = Vec::new();
    for s in fw.sections() {
        let (page_type, contents) = match s.section_type {
            SevSectionType::SnpSecMem if opts.vmm_type == VmmType::Gce => (SnpPageType::Unmeasured, Contents::Zero),
            SevSectionType::SnpSecMem | SevSectionType::SvsmCaa => (SnpPageType::Zero, Contents::Zero),
            SevSectionType::SnpSecrets => (SnpPageType::Secrets, Contents::Zero),
            SevSectionType::Cpuid => (SnpPageType::Cpuid, Contents::Zero),
            SevSectionType::SnpKernelHashes => match &hashes_page {
                Some(p) => (SnpPageType::Normal, Contents::Bytes(Arc::from(&p.bytes[..]))),
                None => (SnpPageType::Zero, Contents::Zero),
            },
        };
        let range = PlanRange {
            gpa: u64::from(s.gpa),
            len: u64::from(s.size),
            page_type: PageType::Snp(page_type),
            contents,
            what: s.section_type.name().into(),
        };
        if s.section_type == SevSectionType::Cpuid && opts.vmm_type == VmmType::Ec2 {
            deferred_cpuid.push(range);
        } else {
            plan.push(range)?;
        }
    }
    for range in deferred_cpuid {
        plan.push(range)?;
    }
    plan.check_overlaps()?;

    let signature = opts.vcpu_type.signature();
    let bsp = SnpVcpu::at_reset(BSP_RESET_EIP, signature, opts.guest_features, opts.vmm_type);
    let ap = SnpVcpu::at_reset(ap_eip, signature, opts.guest_features, opts.vmm_type);
    plan.vcpus.push(VcpuState::Snp(bsp));
    plan.vcpus.extend((1..opts.vcpus).map(|_| VcpuState::Snp(ap.clone())));
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn debian_ovmf() -> Vec<u8> {
        std::fs::read("/usr/share/ovmf/OVMF.fd")
            .unwrap_or_else(|e| panic!("/usr/share/ovmf/OVMF.fd: {e}: apt-get install ovmf (scripts/setup.sh does)"))
    }

    fn options(firmware: &[u8]) -> SnpPlanOptions {
        SnpPlanOptions {
            firmware: firmware.into(),
            vcpus: 2,
            vcpu_type: VcpuType::EpycV4,
            vmm_type: VmmType::Qemu,
            guest_features: 0x1,
            kernel_hashes: None,
        }
    }

    fn snp(v: &VcpuState) -> &SnpVcpu {
        match v {
            VcpuState::Snp(s) => s,
            VcpuState::Tdx { .. } => panic!("not an SNP vCPU"),
        }
    }

    #[test]
    fn cpu_signatures_match_sev_snp_measure() {
        assert_eq!(VcpuType::EpycV4.signature(), 0x800f12);
        assert_eq!(VcpuType::EpycRome.signature(), 0x830f10);
        assert_eq!(VcpuType::EpycMilan.signature(), 0xa00f11);
        assert_eq!(VcpuType::EpycGenoa.signature(), 0xa10f10);
        assert_eq!(VcpuType::EpycTurin.signature(), 0xb00f00);
    }

    #[test]
    fn vcpu_types_are_found_by_name_ignoring_case() {
        assert_eq!("epyc-milan".parse::<VcpuType>(), Ok(VcpuType::EpycMilan));
        assert_eq!("EPYC-Genoa-v1".parse::<VcpuType>(), Ok(VcpuType::EpycGenoaV1));
        for t in VcpuType::ALL {
            assert_eq!(t.name().parse::<VcpuType>(), Ok(t));
        }
    }

    #[test]
    fn unknown_vcpu_type_is_rejected_with_its_name() {
        let err = "Pentium-II".parse::<VcpuType>().unwrap_err();

        assert_eq!(err, SnpPlanError::UnknownVcpuType("Pentium-II".into()));
        assert!(err.to_string().contains("Pentium-II"));
        assert!("EPYC-v5".parse::<VcpuType>().is_err());
    }

    #[test]
    fn vmm_types_are_found_by_name_ignoring_case() {
        assert_eq!("qemu".parse::<VmmType>(), Ok(VmmType::Qemu));
        assert_eq!("EC2".parse::<VmmType>(), Ok(VmmType::Ec2));
        assert_eq!("gce".parse::<VmmType>(), Ok(VmmType::Gce));
        assert_eq!("krun".parse::<VmmType>(), Err(SnpPlanError::UnknownVmmType("krun".into())));
    }

    #[test]
    fn debian_ovmf_plan_is_firmware_then_sections_then_vcpus() {
        let fw = debian_ovmf();

        let plan = plan_snp(&options(&fw)).unwrap();

        let got: Vec<_> = plan.ranges.iter().map(|r| (r.gpa, r.len, r.page_type, r.what.as_str())).collect();
        use SnpPageType::*;
        let snp = PageType::Snp;
        assert_eq!(
            got,
            [
                (0xffe0_0000, 0x20_0000, snp(Normal), "firmware"),
                (0x80_0000, 0x9000, snp(Zero), "SNP_SEC_MEM"),
                (0x80_a000, 0x3000, snp(Zero), "SNP_SEC_MEM"),
                (0x80_d000, 0x1000, snp(Secrets), "SNP_SECRETS"),
                (0x80_e000, 0x1000, snp(Cpuid), "CPUID"),
                (0x80_f000, 0x11000, snp(Zero), "SNP_SEC_MEM"),
            ]
        );
        assert_eq!(plan.vcpus.len(), 2);
        let (bsp, ap) = (snp_vcpu(&plan, 0), snp_vcpu(&plan, 1));
        assert_eq!((bsp.cs.base, bsp.rip), (0xffff_0000, 0xfff0));
        assert_eq!((ap.cs.base, ap.rip), (0x80_0000, 0xb004));
        assert_eq!((bsp.rdx, bsp.sev_features, bsp.x87_fcw, bsp.mxcsr), (0x800f12, 1, 0x37f, 0x1f80));
    }

    fn snp_vcpu(plan: &LaunchPlan, i: usize) -> &SnpVcpu {
        snp(&plan.vcpus[i])
    }

    #[test]
    fn ec2_measures_the_cpuid_page_last_and_gce_leaves_sec_mem_unmeasured() {
        let fw = debian_ovmf();

        let ec2 = plan_snp(&SnpPlanOptions { vmm_type: VmmType::Ec2, ..options(&fw) }).unwrap();
        let gce = plan_snp(&SnpPlanOptions { vmm_type: VmmType::Gce, ..options(&fw) }).unwrap();

        let whats: Vec<_> = ec2.ranges.iter().map(|r| r.what.as_str()).collect();
        assert_eq!(whats, ["firmware", "SNP_SEC_MEM", "SNP_SEC_MEM", "SNP_SECRETS", "SNP_SEC_MEM", "CPUID"]);
        assert_eq!((snp_vcpu(&ec2, 0).cs.attrib, snp_vcpu(&ec2, 1).cs.attrib), (0x9a, 0x9b));
        assert_eq!(snp_vcpu(&ec2, 0).rdx, 0x600);
        let sec_mem: Vec<_> = gce.ranges.iter().filter(|r| r.what == "SNP_SEC_MEM").map(|r| r.page_type).collect();
        assert_eq!(sec_mem, [PageType::Snp(SnpPageType::Unmeasured); 3]);
        assert_eq!((snp_vcpu(&gce, 0).g_pat, snp_vcpu(&gce, 0).x87_fcw), (0x70106, 0));
    }

    #[test]
    fn zero_or_absurd_vcpu_counts_are_rejected() {
        let fw = debian_ovmf();
        for vcpus in [0, MAX_SNP_VCPUS + 1, u32::MAX] {
            let err = plan_snp(&SnpPlanOptions { vcpus, ..options(&fw) }).unwrap_err();

            assert_eq!(err, SnpPlanError::VcpuCount(vcpus));
            assert!(err.to_string().contains("vcpu"));
        }
        assert_eq!(plan_snp(&SnpPlanOptions { vcpus: MAX_SNP_VCPUS, ..options(&fw) }).unwrap().vcpus.len(), 512);
    }

    #[test]
    fn firmware_of_odd_size_is_rejected() {
        let mut fw = debian_ovmf();
        fw.pop();

        assert_eq!(plan_snp(&options(&fw)), Err(SnpPlanError::FirmwareSize(0x1f_ffff)));
        assert_eq!(plan_snp(&options(&[])), Err(SnpPlanError::FirmwareSize(0)));
    }

    #[test]
    fn firmware_without_footer_table_is_rejected() {
        let fw = vec![0u8; 0x10000];

        let err = plan_snp(&options(&fw)).unwrap_err();

        assert!(matches!(err, SnpPlanError::Firmware(SevError::Footer(_))), "{err}");
        assert!(err.to_string().contains("footer"));
    }

    #[test]
    fn kernel_hashes_on_firmware_without_the_section_are_rejected() {
        let fw = debian_ovmf();
        let input = KernelHashesInput { kernel: b"kernel", initrd: None, cmdline: "" };

        let err =
            plan_snp(&SnpPlanOptions { kernel_hashes: Some(input.hashes().unwrap()), ..options(&fw) }).unwrap_err();

        assert_eq!(err, SnpPlanError::Firmware(SevError::NoKernelHashesSection));
    }

    #[test]
    fn cmdline_with_nul_is_rejected() {
        let input = KernelHashesInput { kernel: b"k", initrd: None, cmdline: "a\0b" };

        assert_eq!(input.hashes(), Err(SnpPlanError::CmdlineNul));
    }

    #[test]
    fn kernel_hashes_hash_the_cmdline_with_its_nul_and_a_missing_initrd_as_empty() {
        let input = KernelHashesInput { kernel: b"", initrd: None, cmdline: "" };

        let h = input.hashes().unwrap();

        // SHA-256("\0") and SHA-256("").
        assert_eq!(hex::encode(h.cmdline), "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d");
        assert_eq!(hex::encode(h.initrd), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        assert_eq!(h.kernel, h.initrd);
    }
}
