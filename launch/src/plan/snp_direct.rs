//! SEV-SNP launch plans for a direct boot with cvmm's own guest firmware (no OVMF):
//! the guest program's image and its boot information as NORMAL pages, the page-table
//! area as ZERO pages, the secrets and CPUID pages, and every vCPU starting at the
//! program's 32-bit entry (`arch::abi::ENTRY32_OFFSET`) with `ESI` = boot information.
//!
//! The plan is what `cvmm run --tee snp` launches and what `cvmm measure --tee snp`
//! with the same arguments measures: the CPUID page's contents (host-dependent) are
//! not part of the launch digest, so the calculator may leave them out.

use std::sync::Arc;

use super::snp::{SnpPlanError, SnpSegment, SnpVcpu, MAX_SNP_VCPUS, RESET_PAT};
use super::{Contents, LaunchPlan, PageType, PlanRange, SnpPageType, VcpuState};

/// A measured image: bytes at a GPA.
#[derive(Debug, Clone)]
pub struct PlanImage {
    /// Guest-physical address, page-aligned.
    pub gpa: u64,
    /// Contents, a whole number of pages.
    pub bytes: Arc<[u8]>,
    /// What it is, for logs.
    pub what: String,
}

/// Everything a direct-boot SNP plan depends on.
#[derive(Debug, Clone)]
pub struct SnpDirectOptions {
    /// The measured images (guest program, boot information, ...), in launch order.
    pub images: Vec<PlanImage>,
    /// Zero-filled, measured ranges (GPA, length, what): the firmware's page tables.
    pub zero: Vec<(u64, u64, String)>,
    /// GPA of the secrets page.
    pub secrets_gpa: u64,
    /// GPA of the CPUID page.
    pub cpuid_gpa: u64,
    /// The CPUID page's contents for a launch; `None` for the measurement calculator
    /// (the CPUID page's contents are not measured).
    pub cpuid_page: Option<Arc<[u8]>>,
    /// The 32-bit entry point.
    pub entry: u32,
    /// `ESI` at entry: the boot information's GPA.
    pub boot_info: u32,
    /// Number of vCPUs.
    pub vcpus: u32,
    /// The VMSA's SEV_FEATURES (bit 0 SNPActive).
    pub sev_features: u64,
}

impl SnpVcpu {
    /// A vCPU entering cvmm's guest firmware: 32-bit protected mode with flat 4 GiB
    /// segments (CS 0x08, data 0x10), paging off, `RIP` = `entry`, `RSI` = `rsi`.
    pub fn at_entry32(entry: u32, rsi: u32, sev_features: u64) -> Self {
        let data = SnpSegment { selector: 0x10, attrib: 0xc93, limit: 0xffff_ffff, base: 0 };
        Self {
            es: data,
            cs: SnpSegment { selector: 0x08, attrib: 0xc9b, limit: 0xffff_ffff, base: 0 },
            ss: data,
            ds: data,
            fs: data,
            gs: data,
            gdtr: SnpSegment { selector: 0, attrib: 0, limit: 0xffff, base: 0 },
            ldtr: SnpSegment { selector: 0, attrib: 0x82, limit: 0xffff, base: 0 },
            idtr: SnpSegment { selector: 0, attrib: 0, limit: 0xffff, base: 0 },
            tr: SnpSegment { selector: 0, attrib: 0x8b, limit: 0xffff, base: 0 },
            efer: 0x1000, // EFER.SVME, as KVM sets it for SEV-ES guests
            cr0: 0x11,    // PE | ET
            cr4: 0x40,    // MCE, as KVM sets it
            dr6: 0xffff_0ff0,
            dr7: 0x400,
            rflags: 0x2,
            rip: u64::from(entry),
            rsi: u64::from(rsi),
            g_pat: RESET_PAT,
            xcr0: 0x1,
            x87_fcw: 0x37f,
            mxcsr: 0x1f80,
            sev_features,
            ..Self::default()
        }
    }
}

/// Builds the direct-boot SNP plan: the images, the zero ranges, the secrets page, the
/// CPUID page, then one VMSA per vCPU.
pub fn plan_snp_direct(opts: &SnpDirectOptions) -> Result<LaunchPlan, SnpPlanError> {
    if opts.vcpus == 0 || opts.vcpus > MAX_SNP_VCPUS {
        return Err(SnpPlanError::VcpuCount(opts.vcpus));
    }
    let mut plan = LaunchPlan::default();
    for image in &opts.images {
        plan.push(PlanRange {
            gpa: image.gpa,
            len: image.bytes.len() as u64,
            page_type: PageType::Snp(SnpPageType::Normal),
            contents: Contents::Bytes(image.bytes.clone()),
            what: image.what.clone(),
        })?;
    }
    for (gpa, len, what) in &opts.zero {
        plan.push(PlanRange {
            gpa: *gpa,
            len: *len,
            page_type: PageType::Snp(SnpPageType::Zero),
            contents: Contents::Zero,
            what: what.clone(),
        })?;
    }
    plan.push(PlanRange {
        gpa: opts.secrets_gpa,
        len: super::PAGE_SIZE,
        page_type: PageType::Snp(SnpPageType::Secrets),
        contents: Contents::Zero,
        what: "SNP_SECRETS".into(),
    })?;
    plan.push(PlanRange {
        gpa: opts.cpuid_gpa,
        len: super::PAGE_SIZE,
        page_type: PageType::Snp(SnpPageType::Cpuid),
        contents: opts.cpuid_page.clone().map_or(Contents::Zero, Contents::Bytes),
        what: "CPUID".into(),
    })?;
    plan.check_overlaps()?;
    let vcpu = SnpVcpu::at_entry32(opts.entry, opts.boot_info, opts.sev_features);
    plan.vcpus.extend((0..opts.vcpus).map(|_| VcpuState::Snp(vcpu.clone())));
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measure::snp::launch_digest;

    fn options() -> SnpDirectOptions {
        SnpDirectOptions {
            images: vec![PlanImage { gpa: 0x20_0000, bytes: vec![0x90u8; 0x2000].into(), what: "program".into() }],
            zero: vec![(0x9000, 0x6000, "page tables".into())],
            secrets_gpa: 0x3000,
            cpuid_gpa: 0x4000,
            cpuid_page: None,
            entry: 0x20_0040,
            boot_info: 0x5000,
            vcpus: 2,
            sev_features: 1,
        }
    }

    #[test]
    fn plan_orders_images_zero_secrets_cpuid_then_vcpus() {
        let plan = plan_snp_direct(&options()).unwrap();
        let whats: Vec<&str> = plan.ranges.iter().map(|r| r.what.as_str()).collect();
        assert_eq!(whats, ["program", "page tables", "SNP_SECRETS", "CPUID"]);
        assert_eq!(plan.vcpus.len(), 2);
        let VcpuState::Snp(v) = &plan.vcpus[0] else { panic!("not SNP") };
        assert_eq!((v.rip, v.rsi, v.cr0 & 1), (0x20_0040, 0x5000, 1));
    }

    #[test]
    fn cpuid_page_contents_do_not_change_the_digest_but_images_do() {
        let base = launch_digest(&plan_snp_direct(&options()).unwrap()).unwrap();
        let with_cpuid = SnpDirectOptions { cpuid_page: Some(vec![7u8; 0x1000].into()), ..options() };
        assert_eq!(launch_digest(&plan_snp_direct(&with_cpuid).unwrap()).unwrap(), base);
        let mut other = options();
        other.images[0].bytes = vec![0x91u8; 0x2000].into();
        assert_ne!(launch_digest(&plan_snp_direct(&other).unwrap()).unwrap(), base);
    }

    #[test]
    fn overlapping_ranges_and_bad_vcpu_counts_are_rejected() {
        let mut o = options();
        o.zero.push((0x20_1000, 0x1000, "overlap".into()));
        assert!(matches!(plan_snp_direct(&o), Err(SnpPlanError::Plan(_))));
        assert!(matches!(
            plan_snp_direct(&SnpDirectOptions { vcpus: 0, ..options() }),
            Err(SnpPlanError::VcpuCount(0))
        ));
    }
}
