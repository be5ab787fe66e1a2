//! Launch plans from IGVM files (the `igvm` crate parses; this module turns the
//! directives for one platform, SEV-SNP or TDX, into plan ranges).
//!
//! Mapping, per page directive whose compatibility mask matches the platform:
//!
//! | IGVM | SEV-SNP | TDX |
//! |---|---|---|
//! | PageData NORMAL with data | NORMAL (UNMEASURED if flagged) | PAGE.ADD + MR.EXTEND (PAGE.ADD only if unmeasured) |
//! | PageData NORMAL, empty data | ZERO (UNMEASURED if flagged) | PAGE.ADD + MR.EXTEND of a zero page (or PAGE.ADD only) |
//! | PageData SECRETS | SECRETS | rejected |
//! | PageData CPUID_DATA / CPUID_XF | CPUID | rejected |
//! | ParameterInsert | UNMEASURED (the host fills the area) | PAGE.ADD only |
//! | RequiredMemory | not part of the launch | PAGE.AUG |
//!
//! Shared pages (`shared` flag) are host-visible and not part of the launch; they are
//! left out. SNP VP contexts (VMSAs) are returned as raw pages in
//! [`IgvmPlan::snp_vmsas`]: on real KVM they must become register state (KVM builds
//! every VMSA itself), which the SNP backend does.

use std::collections::BTreeMap;
use std::sync::Arc;

use igvm::{IgvmDirectiveHeader, IgvmFile, IgvmPlatformHeader, IsolationType};
use igvm_defs::{IgvmPageDataType, IgvmPlatformType, PAGE_SIZE_4K};
use thiserror::Error;

use super::{Contents, LaunchPlan, PageType, PlanError, PlanRange, SnpPageType, TdxPageType, PAGE_SIZE};

/// The platform an IGVM file is loaded for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IgvmTarget {
    /// AMD SEV-SNP.
    Snp,
    /// Intel TDX.
    Tdx,
}

/// Errors from turning an IGVM file into a plan.
#[derive(Debug, Error)]
pub enum IgvmError {
    /// The igvm crate rejected the file.
    #[error("invalid IGVM file: {0}")]
    Parse(#[source] igvm::Error),
    /// The fixed header's bounds are impossible.
    #[error("invalid IGVM file: {0}")]
    Header(String),
    /// The file has no platform header for the target.
    #[error("the IGVM file supports no {0:?} platform")]
    NoPlatform(IgvmTarget),
    /// A page type the target cannot take.
    #[error("IGVM page at {gpa:#x} has type {kind}, which {target:?} does not support")]
    UnsupportedPageType {
        /// The page.
        gpa: u64,
        /// Its IGVM data type.
        kind: &'static str,
        /// The platform.
        target: IgvmTarget,
    },
    /// A page directive with more data than its page size.
    #[error("IGVM page at {gpa:#x} carries {len} bytes, more than its page")]
    OversizedData {
        /// The page.
        gpa: u64,
        /// Data length.
        len: usize,
    },
    /// A parameter insert naming an area that was never declared.
    #[error("IGVM parameter insert at {gpa:#x} names undeclared parameter area {index}")]
    UnknownParameterArea {
        /// Where it is inserted.
        gpa: u64,
        /// The area index.
        index: u32,
    },
    /// The resulting plan is inconsistent (unaligned or overlapping ranges).
    #[error(transparent)]
    Plan(#[from] PlanError),
}

/// A plan from an IGVM file.
#[derive(Debug, Clone, Default)]
pub struct IgvmPlan {
    /// The ranges (vCPU states are filled by the TEE backend).
    pub plan: LaunchPlan,
    /// SEV-SNP VMSAs by VP index, as the file gives them (4 KiB each).
    pub snp_vmsas: Vec<(u16, Vec<u8>)>,
}

/// Parses `file` and builds the plan of its directives for `target`.
pub fn plan_igvm(file: &[u8], target: IgvmTarget) -> Result<IgvmPlan, IgvmError> {
    let isolation = match target {
        IgvmTarget::Snp => IsolationType::Snp,
        IgvmTarget::Tdx => IsolationType::Tdx,
    };
    check_fixed_header(file)?;
    let igvm = IgvmFile::new_from_binary(file, Some(isolation)).map_err(IgvmError::Parse)?;
    let wanted = match target {
        IgvmTarget::Snp => IgvmPlatformType::SEV_SNP,
        IgvmTarget::Tdx => IgvmPlatformType::TDX,
    };
    let mask = igvm
        .platforms()
        .iter()
        .find_map(|p| match p {
            IgvmPlatformHeader::SupportedPlatform(sp) if sp.platform_type == wanted => Some(sp.compatibility_mask),
            _ => None,
        })
        .ok_or(IgvmError::NoPlatform(target))?;

    let mut out = IgvmPlan::default();
    let mut areas: BTreeMap<u32, u64> = BTreeMap::new();
    let mut pages = PageRuns::default();
    for d in igvm.directives() {
        match d {
            IgvmDirectiveHeader::PageData { gpa, compatibility_mask, flags, data_type, data } => {
                if compatibility_mask & mask == 0 || flags.shared() {
                    continue;
                }
                let size = if flags.is_2mb_page() { 2 << 20 } else { PAGE_SIZE_4K };
                if data.len() as u64 > size {
                    return Err(IgvmError::OversizedData { gpa: *gpa, len: data.len() });
                }
                let page_type = page_type(*gpa, target, *data_type, flags.unmeasured(), data.is_empty())?;
                let mut bytes = vec![0u8; size as usize];
                bytes[..data.len()].copy_from_slice(data);
                let contents = if data.is_empty() { None } else { Some(bytes) };
                pages.add(*gpa, size, page_type, contents);
            }
            IgvmDirectiveHeader::ParameterArea { number_of_bytes, parameter_area_index, .. } => {
                areas.insert(*parameter_area_index, *number_of_bytes);
            }
            IgvmDirectiveHeader::ParameterInsert(p) => {
                if p.compatibility_mask & mask == 0 {
                    continue;
                }
                let len = *areas
                    .get(&p.parameter_area_index)
                    .ok_or(IgvmError::UnknownParameterArea { gpa: p.gpa, index: p.parameter_area_index })?;
                let page_type = match target {
                    IgvmTarget::Snp => PageType::Snp(SnpPageType::Unmeasured),
                    IgvmTarget::Tdx => PageType::Tdx(TdxPageType::AddUnmeasured),
                };
                pages.add(p.gpa, len.div_ceil(PAGE_SIZE) * PAGE_SIZE, page_type, None);
            }
            IgvmDirectiveHeader::RequiredMemory { gpa, compatibility_mask, number_of_bytes, .. }
                if compatibility_mask & mask != 0 && target == IgvmTarget::Tdx =>
            {
                let len = u64::from(*number_of_bytes).div_ceil(PAGE_SIZE) * PAGE_SIZE;
                pages.add(*gpa, len, PageType::Tdx(TdxPageType::Aug), None);
            }
            IgvmDirectiveHeader::SnpVpContext { compatibility_mask, vp_index, vmsa, .. }
                if compatibility_mask & mask != 0 =>
            {
                out.snp_vmsas.push((*vp_index, zerocopy_bytes(vmsa.as_ref())));
            }
            _ => {}
        }
    }
    for range in pages.finish() {
        out.plan.push(range)?;
    }
    out.plan.check_overlaps()?;
    Ok(out)
}

/// Checks the fixed header's section bounds before the igvm crate sees the file:
/// igvm 0.5 adds `variable_header_offset + variable_header_size` in 32 bits and
/// panics (`split_at`) when that wraps (found by the `igvm_plan` fuzz target).
fn check_fixed_header(file: &[u8]) -> Result<(), IgvmError> {
    let word = |o: usize| file.get(o..o + 4).map(|b| u64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]])));
    let (Some(offset), Some(size)) = (word(8), word(12)) else {
        return Err(IgvmError::Header("shorter than the fixed header".into()));
    };
    if offset + size > file.len() as u64 {
        return Err(IgvmError::Header(format!(
            "variable headers at {offset:#x} (+{size:#x}) run past the end of the {}-byte file",
            file.len()
        )));
    }
    Ok(())
}

fn zerocopy_bytes<T: zerocopy::IntoBytes + zerocopy::Immutable + ?Sized>(v: &T) -> Vec<u8> {
    v.as_bytes().to_vec()
}

fn page_type(
    gpa: u64,
    target: IgvmTarget,
    kind: IgvmPageDataType,
    unmeasured: bool,
    empty: bool,
) -> Result<PageType, IgvmError> {
    let unsupported = |kind| IgvmError::UnsupportedPageType { gpa, kind, target };
    Ok(match (target, kind) {
        (IgvmTarget::Snp, IgvmPageDataType::NORMAL) if unmeasured => PageType::Snp(SnpPageType::Unmeasured),
        (IgvmTarget::Snp, IgvmPageDataType::NORMAL) if empty => PageType::Snp(SnpPageType::Zero),
        (IgvmTarget::Snp, IgvmPageDataType::NORMAL) => PageType::Snp(SnpPageType::Normal),
        (IgvmTarget::Snp, IgvmPageDataType::SECRETS) => PageType::Snp(SnpPageType::Secrets),
        (IgvmTarget::Snp, IgvmPageDataType::CPUID_DATA | IgvmPageDataType::CPUID_XF) => {
            PageType::Snp(SnpPageType::Cpuid)
        }
        (IgvmTarget::Tdx, IgvmPageDataType::NORMAL) if unmeasured => PageType::Tdx(TdxPageType::AddUnmeasured),
        (IgvmTarget::Tdx, IgvmPageDataType::NORMAL) => PageType::Tdx(TdxPageType::AddMeasured),
        (IgvmTarget::Tdx, IgvmPageDataType::SECRETS) => return Err(unsupported("SECRETS")),
        (IgvmTarget::Tdx, IgvmPageDataType::CPUID_DATA | IgvmPageDataType::CPUID_XF) => {
            return Err(unsupported("CPUID"))
        }
        (_, _) => return Err(unsupported("unknown")),
    })
}

/// Collects pages in directive order and merges adjacent ones of the same type (and
/// the same zero/byte kind) into one range; the order of ranges is the order the
/// directives gave (it is measured).
#[derive(Default)]
struct PageRuns {
    ranges: Vec<(u64, u64, PageType, Option<Vec<u8>>)>,
}

impl PageRuns {
    fn add(&mut self, gpa: u64, len: u64, page_type: PageType, bytes: Option<Vec<u8>>) {
        if let Some(last) = self.ranges.last_mut() {
            let contiguous = last.0.checked_add(last.1) == Some(gpa);
            if contiguous && last.2 == page_type && last.3.is_some() == bytes.is_some() {
                last.1 += len;
                if let (Some(acc), Some(b)) = (last.3.as_mut(), bytes) {
                    acc.extend_from_slice(&b);
                }
                return;
            }
        }
        self.ranges.push((gpa, len, page_type, bytes));
    }

    fn finish(self) -> impl Iterator<Item = PlanRange> {
        self.ranges.into_iter().map(|(gpa, len, page_type, bytes)| PlanRange {
            gpa,
            len,
            page_type,
            contents: bytes.map_or(Contents::Zero, |b| Contents::Bytes(Arc::from(b))),
            what: "IGVM".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use igvm::IgvmRevision;
    use igvm_defs::{IgvmPageDataFlags, IGVM_VHS_PARAMETER_INSERT, IGVM_VHS_SUPPORTED_PLATFORM};

    const SNP_MASK: u32 = 0x1;
    const TDX_MASK: u32 = 0x2;

    fn platform(mask: u32, kind: IgvmPlatformType) -> IgvmPlatformHeader {
        IgvmPlatformHeader::SupportedPlatform(IGVM_VHS_SUPPORTED_PLATFORM {
            compatibility_mask: mask,
            highest_vtl: 0,
            platform_type: kind,
            platform_version: 1,
            shared_gpa_boundary: 0,
        })
    }

    fn page(gpa: u64, mask: u32, data_type: IgvmPageDataType, data: Vec<u8>, unmeasured: bool) -> IgvmDirectiveHeader {
        IgvmDirectiveHeader::PageData {
            gpa,
            compatibility_mask: mask,
            flags: IgvmPageDataFlags::new().with_unmeasured(unmeasured),
            data_type,
            data,
        }
    }

    /// A two-platform file: code pages, a zero page, secrets and CPUID for SNP, an
    /// unmeasured page, a parameter area, required memory.
    fn sample_file() -> Vec<u8> {
        let both = SNP_MASK | TDX_MASK;
        let directives = vec![
            page(0x10_0000, both, IgvmPageDataType::NORMAL, vec![0xaa; 4096], false),
            page(0x10_1000, both, IgvmPageDataType::NORMAL, vec![0xbb; 100], false),
            page(0x10_2000, both, IgvmPageDataType::NORMAL, vec![], false),
            page(0x20_0000, SNP_MASK, IgvmPageDataType::SECRETS, vec![], false),
            page(0x20_1000, SNP_MASK, IgvmPageDataType::CPUID_DATA, vec![1; 16], false),
            page(0x30_0000, both, IgvmPageDataType::NORMAL, vec![7; 8], true),
            IgvmDirectiveHeader::ParameterArea {
                number_of_bytes: 0x2000,
                parameter_area_index: 0,
                initial_data: vec![],
            },
            IgvmDirectiveHeader::ParameterInsert(IGVM_VHS_PARAMETER_INSERT {
                gpa: 0x40_0000,
                compatibility_mask: both,
                parameter_area_index: 0,
            }),
            IgvmDirectiveHeader::RequiredMemory {
                gpa: 0x100_0000,
                compatibility_mask: TDX_MASK,
                number_of_bytes: 0x10_0000,
                vtl2_protectable: false,
            },
        ];
        let file = IgvmFile::new(
            IgvmRevision::V1,
            vec![platform(SNP_MASK, IgvmPlatformType::SEV_SNP), platform(TDX_MASK, IgvmPlatformType::TDX)],
            vec![],
            directives,
        )
        .unwrap();
        let mut out = Vec::new();
        file.serialize(&mut out).unwrap();
        out
    }

    fn kinds(p: &LaunchPlan) -> Vec<(u64, u64, PageType)> {
        p.ranges.iter().map(|r| (r.gpa, r.len, r.page_type)).collect()
    }

    #[test]
    fn snp_directives_become_snp_page_types_in_order() {
        let out = plan_igvm(&sample_file(), IgvmTarget::Snp).unwrap();
        use SnpPageType::*;
        assert_eq!(
            kinds(&out.plan),
            vec![
                (0x10_0000, 0x2000, PageType::Snp(Normal)),
                (0x10_2000, 0x1000, PageType::Snp(Zero)),
                (0x20_0000, 0x1000, PageType::Snp(Secrets)),
                (0x20_1000, 0x1000, PageType::Snp(Cpuid)),
                (0x30_0000, 0x1000, PageType::Snp(Unmeasured)),
                (0x40_0000, 0x2000, PageType::Snp(Unmeasured)),
            ]
        );
        // Short data is padded with zeros to the page.
        let normal = &out.plan.ranges[0];
        assert_eq!(normal.page(1)[..100], [0xbb; 100]);
        assert_eq!(normal.page(1)[100..], [0u8; 3996]);
    }

    #[test]
    fn tdx_directives_skip_snp_only_pages_and_aug_required_memory() {
        let out = plan_igvm(&sample_file(), IgvmTarget::Tdx).unwrap();
        use TdxPageType::*;
        assert_eq!(
            kinds(&out.plan),
            vec![
                (0x10_0000, 0x2000, PageType::Tdx(AddMeasured)),
                (0x10_2000, 0x1000, PageType::Tdx(AddMeasured)),
                (0x30_0000, 0x1000, PageType::Tdx(AddUnmeasured)),
                (0x40_0000, 0x2000, PageType::Tdx(AddUnmeasured)),
                (0x100_0000, 0x10_0000, PageType::Tdx(Aug)),
            ]
        );
    }

    #[test]
    fn file_without_the_platform_is_rejected() {
        let file = IgvmFile::new(
            IgvmRevision::V1,
            vec![platform(SNP_MASK, IgvmPlatformType::SEV_SNP)],
            vec![],
            vec![page(0x1000, SNP_MASK, IgvmPageDataType::NORMAL, vec![1], false)],
        )
        .unwrap();
        let mut bytes = Vec::new();
        file.serialize(&mut bytes).unwrap();
        assert!(matches!(
            plan_igvm(&bytes, IgvmTarget::Tdx),
            Err(IgvmError::NoPlatform(IgvmTarget::Tdx) | IgvmError::Parse(_))
        ));
    }

    #[test]
    fn wrapping_variable_header_bounds_are_rejected_not_panicked_on() {
        // Found by fuzz/igvm_plan: igvm 0.5 panics on this 24-byte file.
        let crash = b"IGVM\x01\x00\x00\x00\x03\x00\x00\x00\xff\xff\xff\xff\x18\x00\x00\x00\x00\x00\x00\x00";
        assert!(matches!(plan_igvm(crash, IgvmTarget::Snp), Err(IgvmError::Header(_))));
    }

    #[test]
    fn garbage_and_truncated_files_are_rejected() {
        assert!(matches!(
            plan_igvm(b"not an igvm file", IgvmTarget::Snp),
            Err(IgvmError::Parse(_) | IgvmError::Header(_))
        ));
        let good = sample_file();
        for cut in [0, 16, good.len() / 2, good.len() - 1] {
            assert!(plan_igvm(&good[..cut], IgvmTarget::Snp).is_err(), "cut at {cut}");
        }
    }
}
