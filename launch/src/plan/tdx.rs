//! TDX launch plans: the TDVF metadata of a firmware image turned into the ordered
//! ranges KVM_TDX_INIT_MEM_REGION adds, plus each vCPU's KVM_TDX_INIT_VCPU input.
//!
//! What QEMU (`hw/i386/tdvf.c`, `target/i386/kvm/tdx.c`) and KVM do, and what cvmm
//! does the same way:
//!
//! - Every section is added, in metadata order, with one KVM_TDX_INIT_MEM_REGION of
//!   `MemoryDataSize / 4096` pages, with KVM_TDX_MEASURE_MEMORY_REGION exactly when the
//!   section has MR.EXTEND. KVM then issues, page by page, TDH.MEM.PAGE.ADD and (when
//!   measured) the page's 16 TDH.MR.EXTENDs.
//! - BFV and CFV are copied from the image at `DataOffset`. cvmm pads raw data shorter
//!   than `MemoryDataSize` with zeros (QEMU would copy whatever follows in the image;
//!   OVMF's volumes have no padding, so the two agree on real images).
//! - TD_HOB and TempMem are added as ordinary (unmeasured, in OVMF) pages from zeroed
//!   memory; QEMU writes the TD HOB into its page first and marks both ranges as
//!   accepted RAM in the HOB; the rest of RAM stays unaccepted for the guest to accept.
//! - KVM_TDX_INIT_VCPU gets the TD_HOB address for every vCPU (RCX at the reset
//!   vector); TDH.VP.INIT does not enter MRTD.
//! - PAGE.AUG: upstream QEMU defines the bit but never honours it, and rejects PermMem,
//!   Payload and PayloadParam sections. cvmm follows the TDVF specification and the
//!   third-party MRTD calculators instead: a PAGE.AUG section is not added at launch
//!   ([`TdxPageType::Aug`]; the guest accepts it), and PermMem, Payload and
//!   PayloadParam are planned like the others as their attributes say.

use std::sync::Arc;

use firmware::tdvf::{SectionType, TdvfError, TdvfMetadata, TdvfSection};
use thiserror::Error;

use super::{Contents, LaunchPlan, PageType, PlanError, PlanRange, TdxPageType, VcpuState, PAGE_SIZE};

/// The most vCPUs a TDX plan accepts (the VMM's own vCPU limit).
pub const MAX_VCPUS: u32 = 254;

/// What a TDX plan is built from.
#[derive(Debug, Clone, Copy)]
pub struct TdxPlanOptions<'a> {
    /// The TDVF firmware image (e.g. an OVMF.fd with TDX support).
    pub firmware: &'a [u8],
    /// Number of vCPUs, 1 to [`MAX_VCPUS`].
    pub vcpus: u32,
}

/// Errors from building a TDX plan.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum TdxPlanError {
    /// The vCPU count is 0 or above [`MAX_VCPUS`].
    #[error("TDX plan: {0} is not a valid vCPU count (1 to {MAX_VCPUS})")]
    Vcpus(u32),
    /// The firmware's TDVF metadata is missing or malformed.
    #[error("TDX plan: {0}")]
    Metadata(#[from] TdvfError),
    /// No TD_HOB section: nothing to give the vCPUs in RCX.
    #[error("TDX plan: the TDVF metadata has no TD_HOB section")]
    NoTdHob,
    /// A TD_HOB section with MR.EXTEND: its contents (written by the VMM) would enter
    /// MRTD, and cvmm does not build the TD HOB yet.
    #[error("TDX plan: TDVF section {index} (TD_HOB at {gpa:#x}) asks for MR.EXTEND, which needs the TD HOB contents")]
    MeasuredTdHob {
        /// The section.
        index: usize,
        /// Its address.
        gpa: u64,
    },
    /// A Payload or PayloadParam section without raw data and without PAGE.AUG: the VMM
    /// must load a kernel or its parameters there, which cvmm does not do yet.
    #[error("TDX plan: TDVF section {index} ({section_type}) at {gpa:#x} must be filled by the VMM, which cvmm does not support")]
    VmmSuppliedSection {
        /// The section.
        index: usize,
        /// Its type.
        section_type: SectionType,
        /// Its address.
        gpa: u64,
    },
    /// A range the plan refuses.
    #[error("TDX plan: {0}")]
    Plan(#[from] PlanError),
}

/// Builds the TDX launch plan for a TDVF image: one range per section in metadata
/// order (two when a section's raw data is shorter than its memory: the data, then a
/// zero tail of the same type, which KVM and MRTD treat exactly like one range), and
/// one [`VcpuState::Tdx`] per vCPU with RCX = the TD_HOB address.
///
/// The TD_HOB range is planned as zero pages: the TD HOB itself is written into guest
/// memory by the launch (a later issue). It is added without MR.EXTEND, so its contents
/// do not enter MRTD and the plan measures the same as the launch.
pub fn plan_tdx(opts: &TdxPlanOptions<'_>) -> Result<LaunchPlan, TdxPlanError> {
    if opts.vcpus == 0 || opts.vcpus > MAX_VCPUS {
        return Err(TdxPlanError::Vcpus(opts.vcpus));
    }
    let metadata = TdvfMetadata::parse(opts.firmware)?;
    let hob = metadata.td_hob().ok_or(TdxPlanError::NoTdHob)?;
    let mut plan = LaunchPlan::default();
    for (index, section) in metadata.sections.iter().enumerate() {
        push_section(&mut plan, index, section, opts.firmware)?;
    }
    plan.check_overlaps()?;
    plan.vcpus = vec![VcpuState::Tdx { rcx: hob.memory_address }; opts.vcpus as usize];
    Ok(plan)
}

/// The page type the section's attributes ask for.
fn page_type(section: &TdvfSection) -> TdxPageType {
    if section.attributes.page_aug() {
        TdxPageType::Aug
    } else if section.attributes.mr_extend() {
        TdxPageType::AddMeasured
    } else {
        TdxPageType::AddUnmeasured
    }
}

/// Appends the range(s) of one section.
fn push_section(plan: &mut LaunchPlan, index: usize, s: &TdvfSection, image: &[u8]) -> Result<(), TdxPlanError> {
    let (gpa, len) = (s.memory_address, s.memory_data_size);
    let t = page_type(s);
    let what = format!("TDVF {} #{index}", s.section_type);
    if s.section_type == SectionType::TdHob && t == TdxPageType::AddMeasured {
        return Err(TdxPlanError::MeasuredTdHob { index, gpa });
    }
    // parse() checked the raw data against this very image.
    let raw = s.raw_data(image).ok_or(TdvfError::RawDataOutsideImage {
        index,
        section_type: s.section_type,
        offset: s.data_offset,
        size: s.raw_data_size,
        image: image.len(),
    })?;
    let range = |gpa, len, contents, what| PlanRange { gpa, len, page_type: PageType::Tdx(t), contents, what };
    if raw.is_empty() {
        if matches!(s.section_type, SectionType::Payload | SectionType::PayloadParam) && t != TdxPageType::Aug {
            return Err(TdxPlanError::VmmSuppliedSection { index, section_type: s.section_type, gpa });
        }
        plan.push(range(gpa, len, Contents::Zero, what))?;
        return Ok(());
    }
    // Raw data rounded up to whole pages; parse() guarantees it fits in `len`.
    let head = (raw.len() as u64).div_ceil(PAGE_SIZE) * PAGE_SIZE;
    let mut bytes = Vec::with_capacity(head as usize);
    bytes.extend_from_slice(raw);
    bytes.resize(head as usize, 0);
    plan.push(range(gpa, head, Contents::Bytes(Arc::from(bytes)), what.clone()))?;
    if len > head {
        plan.push(range(gpa + head, len - head, Contents::Zero, format!("{what} (zero tail)")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use firmware::ovmf::{FOOTER_GUID, TDX_METADATA_GUID};

    use super::*;
    use crate::measure::tdx::{mrtd, replay};

    /// (DataOffset, RawDataSize, MemoryAddress, MemoryDataSize, Type, Attributes).
    type Raw = (u32, u32, u64, u64, u32, u32);

    const IMAGE_SIZE: usize = 0x8000;
    const DESC_AT: usize = 0x7000;

    /// A firmware image whose footer table points at a TDVF descriptor with `sections`;
    /// the bytes at 0x1000..0x7000 are a recognisable pattern.
    fn firmware(sections: &[Raw]) -> Vec<u8> {
        let mut img: Vec<u8> = (0..IMAGE_SIZE).map(|i| (i / 16) as u8 ^ 0xa5).collect();
        let mut d = b"TDVF".to_vec();
        for v in [16 + 32 * sections.len() as u32, 1, sections.len() as u32] {
            d.extend_from_slice(&v.to_le_bytes());
        }
        for s in sections {
            d.extend_from_slice(&s.0.to_le_bytes());
            d.extend_from_slice(&s.1.to_le_bytes());
            d.extend_from_slice(&s.2.to_le_bytes());
            d.extend_from_slice(&s.3.to_le_bytes());
            d.extend_from_slice(&s.4.to_le_bytes());
            d.extend_from_slice(&s.5.to_le_bytes());
        }
        img[DESC_AT..DESC_AT + d.len()].copy_from_slice(&d);
        let mut table = ((IMAGE_SIZE - DESC_AT) as u32).to_le_bytes().to_vec();
        table.extend_from_slice(&(4u16 + 18).to_le_bytes());
        table.extend_from_slice(&TDX_METADATA_GUID.0);
        table.extend_from_slice(&(table.len() as u16 + 18).to_le_bytes());
        table.extend_from_slice(&FOOTER_GUID.0);
        let end = IMAGE_SIZE - 32;
        img[end - table.len()..end].copy_from_slice(&table);
        img
    }

    const BFV: Raw = (0x1000, 0x2000, 0xffff_e000, 0x2000, 0, 1);
    const HOB: Raw = (0, 0, 0x80_9000, 0x2000, 2, 0);
    const TEMP: Raw = (0, 0, 0x80_0000, 0x6000, 3, 0);

    fn plan_of(sections: &[Raw], vcpus: u32) -> Result<LaunchPlan, TdxPlanError> {
        plan_tdx(&TdxPlanOptions { firmware: &firmware(sections), vcpus })
    }

    #[test]
    fn sections_become_ranges_in_metadata_order() {
        // Arrange
        let img = firmware(&[BFV, HOB, TEMP]);
        // Act
        let p = plan_tdx(&TdxPlanOptions { firmware: &img, vcpus: 2 }).unwrap();
        // Assert
        let got: Vec<_> = p.ranges.iter().map(|r| (r.gpa, r.len, r.page_type)).collect();
        assert_eq!(
            got,
            [
                (0xffff_e000, 0x2000, PageType::Tdx(TdxPageType::AddMeasured)),
                (0x80_9000, 0x2000, PageType::Tdx(TdxPageType::AddUnmeasured)),
                (0x80_0000, 0x6000, PageType::Tdx(TdxPageType::AddUnmeasured)),
            ]
        );
        assert_eq!(p.ranges[0].contents, Contents::Bytes(Arc::from(&img[0x1000..0x3000])));
        assert_eq!((p.ranges[1].contents.clone(), p.ranges[1].what.as_str()), (Contents::Zero, "TDVF TD_HOB #1"));
        assert_eq!(p.vcpus, vec![VcpuState::Tdx { rcx: 0x80_9000 }; 2]);
    }

    #[test]
    fn raw_data_shorter_than_memory_gets_a_zero_tail_that_measures_like_padding() {
        // Arrange: 0x1800 bytes of raw data for 0x4000 bytes of memory
        let bfv = (0x1000, 0x1800, 0xffff_c000, 0x4000, 0, 1);
        let img = firmware(&[bfv, HOB]);
        let mut padded = img[0x1000..0x2800].to_vec();
        padded.resize(0x4000, 0);
        let one_range = LaunchPlan {
            ranges: vec![PlanRange {
                gpa: 0xffff_c000,
                len: 0x4000,
                page_type: PageType::Tdx(TdxPageType::AddMeasured),
                contents: Contents::Bytes(padded.into()),
                what: "padded".into(),
            }],
            vcpus: vec![],
        };
        // Act
        let p = plan_tdx(&TdxPlanOptions { firmware: &img, vcpus: 1 }).unwrap();
        // Assert
        let got: Vec<_> = p.ranges.iter().map(|r| (r.gpa, r.len, r.contents == Contents::Zero)).collect();
        assert_eq!(got, [(0xffff_c000, 0x2000, false), (0xffff_e000, 0x2000, true), (0x80_9000, 0x2000, true)]);
        let Contents::Bytes(head) = &p.ranges[0].contents else { panic!("BFV head has bytes") };
        assert_eq!(&head[..0x1800], &img[0x1000..0x2800]);
        assert!(head[0x1800..].iter().all(|&b| b == 0));
        let bfv_only = LaunchPlan { ranges: p.ranges[..2].to_vec(), vcpus: vec![] };
        assert_eq!(mrtd(&bfv_only), mrtd(&one_range));
    }

    #[test]
    fn page_aug_sections_are_planned_as_aug_and_not_measured() {
        let perm = (0, 0, 0x100_0000, 0x10_0000, 4, 2);
        let p = plan_of(&[BFV, HOB, perm], 1).unwrap();
        assert_eq!(p.ranges[2].page_type, PageType::Tdx(TdxPageType::Aug));
        assert_eq!(replay(&p).unwrap().page_adds(), 2 + 2);
    }

    #[test]
    fn payload_with_raw_data_is_copied_from_the_image() {
        let payload = (0x3000, 0x1000, 0x20_0000, 0x1000, 5, 1);
        let img = firmware(&[BFV, HOB, payload]);
        let p = plan_tdx(&TdxPlanOptions { firmware: &img, vcpus: 1 }).unwrap();
        assert_eq!(p.ranges[2].contents, Contents::Bytes(Arc::from(&img[0x3000..0x4000])));
        assert_eq!(p.ranges[2].page_type, PageType::Tdx(TdxPageType::AddMeasured));
    }

    #[test]
    fn payload_the_vmm_would_have_to_load_is_rejected() {
        for t in [5, 6] {
            let section = (0, 0, 0x20_0000, 0x1000, t, 0);
            assert!(matches!(plan_of(&[BFV, HOB, section], 1), Err(TdxPlanError::VmmSuppliedSection { index: 2, .. })));
        }
        let aug_param = (0, 0, 0x20_0000, 0x1000, 6, 2);
        assert!(plan_of(&[BFV, HOB, aug_param], 1).is_ok());
    }

    #[test]
    fn missing_td_hob_is_rejected() {
        assert_eq!(plan_of(&[BFV, TEMP], 1), Err(TdxPlanError::NoTdHob));
    }

    #[test]
    fn measured_td_hob_is_rejected() {
        let hob = (0, 0, 0x80_9000, 0x2000, 2, 1);
        assert_eq!(plan_of(&[BFV, hob], 1), Err(TdxPlanError::MeasuredTdHob { index: 1, gpa: 0x80_9000 }));
    }

    #[test]
    fn zero_or_absurd_vcpu_counts_are_rejected() {
        assert_eq!(plan_of(&[BFV, HOB], 0), Err(TdxPlanError::Vcpus(0)));
        assert_eq!(plan_of(&[BFV, HOB], MAX_VCPUS + 1), Err(TdxPlanError::Vcpus(MAX_VCPUS + 1)));
        assert_eq!(plan_of(&[BFV, HOB], u32::MAX), Err(TdxPlanError::Vcpus(u32::MAX)));
        assert_eq!(plan_of(&[BFV, HOB], MAX_VCPUS).unwrap().vcpus.len(), MAX_VCPUS as usize);
    }

    #[test]
    fn firmware_without_tdvf_metadata_is_rejected() {
        let err = plan_tdx(&TdxPlanOptions { firmware: &[0u8; 0x1000], vcpus: 1 }).unwrap_err();
        assert!(matches!(err, TdxPlanError::Metadata(TdvfError::Footer(_))), "{err}");
    }

    #[test]
    fn debian_ovmf_plans_six_ranges_and_the_td_hob_in_rcx() {
        // Arrange
        let img = std::fs::read("/usr/share/ovmf/OVMF.fd")
            .expect("/usr/share/ovmf/OVMF.fd is missing: apt-get install ovmf (scripts/test.sh does)");
        // Act
        let p = plan_tdx(&TdxPlanOptions { firmware: &img, vcpus: 4 }).unwrap();
        // Assert
        let got: Vec<_> = p.ranges.iter().map(|r| (r.gpa, r.len, r.page_type, r.what.as_str())).collect();
        let add = PageType::Tdx(TdxPageType::AddUnmeasured);
        assert_eq!(
            got,
            [
                (0xffe2_0000, 0x1e_0000, PageType::Tdx(TdxPageType::AddMeasured), "TDVF BFV #0"),
                (0xffe0_0000, 0x2_0000, add, "TDVF CFV #1"),
                (0x81_0000, 0x1_0000, add, "TDVF TempMem #2"),
                (0x80_b000, 0x2000, add, "TDVF TempMem #3"),
                (0x80_9000, 0x2000, add, "TDVF TD_HOB #4"),
                (0x80_0000, 0x6000, add, "TDVF TempMem #5"),
            ]
        );
        // The BFV is the rest of the image from its DataOffset (0x20000).
        assert_eq!(p.ranges[0].contents, Contents::Bytes(Arc::from(&img[0x2_0000..])));
        assert_eq!(p.vcpus, vec![VcpuState::Tdx { rcx: 0x80_9000 }; 4]);
    }
}
