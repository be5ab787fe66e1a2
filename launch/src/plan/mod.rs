//! The launch plan: the ordered list of what a launch puts into guest memory before
//! the guest runs, each range with its page type, plus every vCPU's initial state.
//!
//! One plan drives the real KVM launch, the emulated platforms and the measurement
//! calculators (`crate::measure`), so the three cannot drift apart. Builders:
//! [`snp::plan_snp`] and [`tdx::plan_tdx`] (firmware images), and the IGVM import.

pub mod igvm;
pub mod snp;
pub mod snp_direct;
pub mod tdx;
pub mod tdx_direct;

use std::sync::Arc;

/// Size of a page in the plan: every range is page-aligned and a whole number of pages.
pub const PAGE_SIZE: u64 = 0x1000;

/// SEV-SNP page types, with the values the SNP firmware ABI (PAGE_INFO.PAGE_TYPE) and
/// `SNP_LAUNCH_UPDATE` use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum SnpPageType {
    /// Measured, encrypted contents.
    Normal = 0x1,
    /// A VMSA (KVM builds these itself at SNP_LAUNCH_FINISH; see [`VcpuState`]).
    Vmsa = 0x2,
    /// Zero-filled, measured as zero.
    Zero = 0x3,
    /// Encrypted but not measured.
    Unmeasured = 0x4,
    /// The secrets page, filled by the PSP.
    Secrets = 0x5,
    /// The CPUID page, validated by the PSP.
    Cpuid = 0x6,
}

/// How a range enters a TD.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TdxPageType {
    /// TDH.MEM.PAGE.ADD, then TDH.MR.EXTEND over each 256-byte chunk (MR.EXTEND).
    AddMeasured,
    /// TDH.MEM.PAGE.ADD only: the contents are in the TD but not in MRTD.
    AddUnmeasured,
    /// Not added at launch; the guest accepts it later (TDH.MEM.PAGE.AUG).
    Aug,
}

/// A range's type, per TEE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PageType {
    /// An SEV-SNP page type.
    Snp(SnpPageType),
    /// A TDX page type.
    Tdx(TdxPageType),
}

/// What a range holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Contents {
    /// Exactly `len` bytes.
    Bytes(Arc<[u8]>),
    /// All zero.
    Zero,
}

/// One range of the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanRange {
    /// Guest-physical address, page-aligned.
    pub gpa: u64,
    /// Length, a whole number of pages.
    pub len: u64,
    /// The range's type.
    pub page_type: PageType,
    /// Its contents.
    pub contents: Contents,
    /// What the range is, for logs and the launch log ("firmware", "SNP_SECRETS", ...).
    pub what: String,
}

impl PlanRange {
    /// The `i`-th page's bytes (zeros for [`Contents::Zero`]).
    pub fn page(&self, i: u64) -> &[u8] {
        static ZERO: [u8; PAGE_SIZE as usize] = [0; PAGE_SIZE as usize];
        match &self.contents {
            Contents::Zero => &ZERO,
            Contents::Bytes(b) => {
                let start = (i * PAGE_SIZE) as usize;
                &b[start..start + PAGE_SIZE as usize]
            }
        }
    }

    /// Number of pages.
    pub fn pages(&self) -> u64 {
        self.len / PAGE_SIZE
    }

    /// Checks that the range is page-aligned, a whole non-zero number of pages, does
    /// not wrap, and that byte contents are exactly `len` long.
    pub fn check(&self) -> Result<(), PlanError> {
        if self.gpa & (PAGE_SIZE - 1) != 0 || self.len & (PAGE_SIZE - 1) != 0 || self.len == 0 {
            return Err(PlanError::Unaligned { what: self.what.clone(), gpa: self.gpa, len: self.len });
        }
        if self.gpa.checked_add(self.len).is_none() {
            return Err(PlanError::Wraps { what: self.what.clone(), gpa: self.gpa });
        }
        if let Contents::Bytes(b) = &self.contents {
            if b.len() as u64 != self.len {
                return Err(PlanError::ContentsLength { what: self.what.clone(), bytes: b.len(), len: self.len });
            }
        }
        Ok(())
    }
}

/// A vCPU's initial state, per TEE.
// The SNP variant is large (a full register set), but a plan holds at most a few
// hundred vCPUs and they are built once per launch: no point in boxing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VcpuState {
    /// SEV-SNP: the register state the vCPU's VMSA is built from (by KVM at
    /// SNP_LAUNCH_FINISH on the real path; by the calculator and the emulated PSP
    /// otherwise).
    Snp(snp::SnpVcpu),
    /// TDX: KVM cannot set a TD's registers; the only per-vCPU input is the RCX value
    /// given to KVM_TDX_INIT_VCPU.
    Tdx {
        /// RCX at the reset vector.
        rcx: u64,
    },
}

/// Errors from building or checking a plan.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    /// A range is not page-aligned or not a whole number of pages.
    #[error("plan range '{what}' at {gpa:#x} (+{len:#x}) is not page-aligned")]
    Unaligned {
        /// The range.
        what: String,
        /// Its address.
        gpa: u64,
        /// Its length.
        len: u64,
    },
    /// Byte contents whose length is not the range's.
    #[error("plan range '{what}' has {bytes} bytes of contents for {len} bytes")]
    ContentsLength {
        /// The range.
        what: String,
        /// Contents length.
        bytes: usize,
        /// Range length.
        len: u64,
    },
    /// Two ranges overlap.
    #[error("plan ranges '{a}' and '{b}' overlap at {gpa:#x}")]
    Overlap {
        /// First range.
        a: String,
        /// Second range.
        b: String,
        /// Where.
        gpa: u64,
    },
    /// A range wraps around the address space.
    #[error("plan range '{what}' at {gpa:#x} wraps around the address space")]
    Wraps {
        /// The range.
        what: String,
        /// Its address.
        gpa: u64,
    },
}

/// The launch plan.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LaunchPlan {
    /// The ranges, in the order the launch issues them (this order is measured).
    pub ranges: Vec<PlanRange>,
    /// Every vCPU's initial state, in vCPU order.
    pub vcpus: Vec<VcpuState>,
}

impl LaunchPlan {
    /// Appends a range after [`PlanRange::check`].
    pub fn push(&mut self, range: PlanRange) -> Result<(), PlanError> {
        range.check()?;
        self.ranges.push(range);
        Ok(())
    }

    /// Checks that no two ranges overlap.
    pub fn check_overlaps(&self) -> Result<(), PlanError> {
        let mut sorted: Vec<&PlanRange> = self.ranges.iter().collect();
        sorted.sort_by_key(|r| r.gpa);
        for w in sorted.windows(2) {
            if w[0].gpa + w[0].len > w[1].gpa {
                return Err(PlanError::Overlap { a: w[0].what.clone(), b: w[1].what.clone(), gpa: w[1].gpa });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(gpa: u64, len: u64, what: &str) -> PlanRange {
        PlanRange { gpa, len, page_type: PageType::Snp(SnpPageType::Zero), contents: Contents::Zero, what: what.into() }
    }

    #[test]
    fn unaligned_and_mis_sized_ranges_are_rejected() {
        let mut p = LaunchPlan::default();
        assert!(matches!(p.push(range(0x800, 0x1000, "a")), Err(PlanError::Unaligned { .. })));
        assert!(matches!(p.push(range(0x1000, 0x800, "a")), Err(PlanError::Unaligned { .. })));
        assert!(matches!(p.push(range(0x1000, 0, "a")), Err(PlanError::Unaligned { .. })));
        assert!(matches!(p.push(range(u64::MAX - 0xfff, 0x2000, "a")), Err(PlanError::Wraps { .. })));
        let mut r = range(0x1000, 0x2000, "b");
        r.contents = Contents::Bytes(vec![1u8; 0x1000].into());
        assert!(matches!(p.push(r), Err(PlanError::ContentsLength { .. })));
        assert!(p.ranges.is_empty());
    }

    #[test]
    fn overlaps_are_found_whatever_the_order() {
        let mut p = LaunchPlan::default();
        p.push(range(0x3000, 0x1000, "late")).unwrap();
        p.push(range(0x1000, 0x1000, "early")).unwrap();
        p.check_overlaps().unwrap();
        p.push(range(0x1000, 0x3000, "big")).unwrap();
        assert!(matches!(p.check_overlaps(), Err(PlanError::Overlap { .. })));
    }

    #[test]
    fn pages_of_zero_and_byte_ranges() {
        let mut r = range(0, 0x2000, "x");
        assert_eq!(r.page(1), &[0u8; 4096][..]);
        let mut bytes = vec![0u8; 0x2000];
        bytes[0x1000] = 7;
        r.contents = Contents::Bytes(bytes.into());
        assert_eq!(r.page(1)[0], 7);
        assert_eq!(r.pages(), 2);
    }
}
