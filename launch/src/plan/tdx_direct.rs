//! TDX launch plans for a direct boot with cvmm's own guest firmware (no TDVF): the
//! guest program, its boot information, a TD HOB, the page-table area and a reset-vector
//! page at the top of 4 GiB (a jump to the program's 32-bit entry), all added and
//! measured into MRTD (TDH.MEM.PAGE.ADD + TDH.MR.EXTEND), and every vCPU with the TD
//! HOB's address in RCX (the only per-vCPU input KVM_TDX_INIT_VCPU takes).

use std::sync::Arc;

use super::{Contents, LaunchPlan, PageType, PlanError, PlanRange, TdxPageType, VcpuState, PAGE_SIZE};

/// Where a TD starts: the reset vector, 16 bytes below 4 GiB.
pub const RESET_VECTOR: u64 = 0xffff_fff0;
/// The page holding it.
pub const RESET_PAGE: u64 = 0xffff_f000;

/// Everything a direct-boot TDX plan depends on.
#[derive(Debug, Clone)]
pub struct TdxDirectOptions {
    /// The measured images (guest program, boot information, TD HOB ...) in launch
    /// order: (GPA, bytes, what).
    pub images: Vec<(u64, Arc<[u8]>, String)>,
    /// Zero-filled, measured ranges: (GPA, length, what).
    pub zero: Vec<(u64, u64, String)>,
    /// The program's 32-bit entry, which the reset vector jumps to.
    pub entry32: u32,
    /// The TD HOB's GPA (RCX of every vCPU).
    pub hob: u64,
    /// Number of vCPUs.
    pub vcpus: u32,
}

/// The reset-vector page: `jmp rel32` at 0xFF0 to `entry32` (a TD starts in 32-bit
/// protected mode, flat, at 0xFFFFFFF0), the rest zero.
pub fn reset_page(entry32: u32) -> Arc<[u8]> {
    let mut page = vec![0u8; PAGE_SIZE as usize];
    let at = (RESET_VECTOR - RESET_PAGE) as usize;
    let next = (RESET_VECTOR + 5) as u32;
    page[at] = 0xe9;
    page[at + 1..at + 5].copy_from_slice(&entry32.wrapping_sub(next).to_le_bytes());
    page.into()
}

/// Builds the plan: the images, the zero ranges, the reset-vector page, then the vCPUs.
pub fn plan_tdx_direct(opts: &TdxDirectOptions) -> Result<LaunchPlan, PlanError> {
    let mut plan = LaunchPlan::default();
    for (gpa, bytes, what) in &opts.images {
        plan.push(PlanRange {
            gpa: *gpa,
            len: bytes.len() as u64,
            page_type: PageType::Tdx(TdxPageType::AddMeasured),
            contents: Contents::Bytes(bytes.clone()),
            what: what.clone(),
        })?;
    }
    for (gpa, len, what) in &opts.zero {
        plan.push(PlanRange {
            gpa: *gpa,
            len: *len,
            page_type: PageType::Tdx(TdxPageType::AddMeasured),
            contents: Contents::Zero,
            what: what.clone(),
        })?;
    }
    plan.push(PlanRange {
        gpa: RESET_PAGE,
        len: PAGE_SIZE,
        page_type: PageType::Tdx(TdxPageType::AddMeasured),
        contents: Contents::Bytes(reset_page(opts.entry32)),
        what: "reset vector".into(),
    })?;
    plan.check_overlaps()?;
    plan.vcpus.extend((0..opts.vcpus).map(|_| VcpuState::Tdx { rcx: opts.hob }));
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measure::tdx::mrtd;

    #[test]
    fn the_reset_vector_jumps_to_the_entry_and_everything_is_measured() {
        let page = reset_page(0x20_0040);
        assert_eq!(page[0xff0], 0xe9);
        let rel = u32::from_le_bytes(page[0xff1..0xff5].try_into().unwrap());
        assert_eq!(0xffff_fff5u32.wrapping_add(rel), 0x20_0040);
        let opts = TdxDirectOptions {
            images: vec![(0x20_0000, vec![1u8; 0x2000].into(), "program".into())],
            zero: vec![(0x9000, 0x6000, "page tables".into())],
            entry32: 0x20_0040,
            hob: 0x8000,
            vcpus: 3,
        };
        let plan = plan_tdx_direct(&opts).unwrap();
        assert_eq!(plan.vcpus, vec![VcpuState::Tdx { rcx: 0x8000 }; 3]);
        let a = mrtd(&plan).unwrap();
        let mut other = opts.clone();
        other.entry32 = 0x20_0080;
        assert_ne!(mrtd(&plan_tdx_direct(&other).unwrap()).unwrap(), a);
    }
}
