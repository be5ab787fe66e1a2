//! The TDX MRTD (the TD's build-time measurement) computed from a launch plan, the
//! step-by-step MRTD accumulator the emulated TDX module shares, and RTMR extension.
//!
//! MRTD is SHA-384 over a stream of 128-byte buffers the TDX module appends as the
//! VMM builds the TD (Intel TDX module base architecture specification, "Measurement
//! of TD build", and the ABI reference for TDH.MEM.PAGE.ADD / TDH.MR.EXTEND):
//!
//! - TDH.MEM.PAGE.ADD: `"MEM.PAGE.ADD"` at bytes 0..12, the page's GPA (u64 LE) at
//!   16..24, zeros to 128.
//! - TDH.MR.EXTEND: `"MR.EXTEND"` at bytes 0..9, the 256-byte chunk's GPA (u64 LE) at
//!   16..24, zeros to 128; then the chunk's 256 bytes (two more 128-byte blocks).
//!
//! KVM's KVM_TDX_INIT_MEM_REGION issues, for each page in turn, its TDH.MEM.PAGE.ADD
//! and then, with KVM_TDX_MEASURE_MEMORY_REGION, the page's 16 TDH.MR.EXTENDs
//! (`tdx_gmem_post_populate`); [`mrtd`] replays exactly that over the plan's ranges in
//! plan order. TDH.VP.INIT (KVM_TDX_INIT_VCPU) does not touch MRTD, so the vCPUs of the
//! plan do not enter it.
//!
//! RTMRs are extended by the guest at run time (TDG.MR.RTMR.EXTEND):
//! `RTMR = SHA-384(RTMR || digest)`, starting from 48 zero bytes; [`Rtmr`] computes the
//! value a list of event-log digests produces.

use std::fmt;

use sha2::{Digest, Sha384};
use thiserror::Error;

use crate::plan::{LaunchPlan, PageType, PlanError, PlanRange, TdxPageType, PAGE_SIZE};

/// Size of an MRTD or RTMR value (SHA-384).
pub const DIGEST_SIZE: usize = 48;
/// Bytes measured by one TDH.MR.EXTEND.
pub const MR_EXTEND_CHUNK: usize = 256;
/// Size of the buffers TDH.MEM.PAGE.ADD and TDH.MR.EXTEND hash.
const BUFFER_SIZE: usize = 128;
/// Where the GPA sits in those buffers.
const GPA_OFFSET: usize = 16;
const PAGE_ADD_TAG: &[u8] = b"MEM.PAGE.ADD";
const MR_EXTEND_TAG: &[u8] = b"MR.EXTEND";

/// Errors from measuring a plan.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum TdxMeasureError {
    /// A range of another TEE's page type.
    #[error("plan range '{what}' at {gpa:#x} is not a TDX range ({page_type:?})")]
    NotTdx {
        /// The range.
        what: String,
        /// Its address.
        gpa: u64,
        /// Its page type.
        page_type: PageType,
    },
    /// A malformed range (the plan's fields are public, so a plan may not have gone
    /// through [`LaunchPlan::push`]).
    #[error("cannot measure the TDX plan: {0}")]
    Range(#[source] PlanError),
}

/// The MRTD accumulator: the TDX module's side of TDH.MEM.PAGE.ADD and TDH.MR.EXTEND.
///
/// The calculator ([`mrtd`]) and the emulated TDX module drive the same steps, so they
/// cannot disagree on the buffer layouts. It does not check addresses: the TDX module
/// rejects a GPA that is not page-aligned (PAGE.ADD) or 256-byte aligned (MR.EXTEND)
/// before it measures anything, and so must its callers.
#[derive(Clone)]
pub struct Mrtd {
    hasher: Sha384,
    page_adds: u64,
    mr_extends: u64,
}

impl Default for Mrtd {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Mrtd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mrtd").field("page_adds", &self.page_adds).field("mr_extends", &self.mr_extends).finish()
    }
}

/// A 128-byte buffer: `tag`, zeros, `gpa` at [`GPA_OFFSET`], zeros.
fn op_buffer(tag: &[u8], gpa: u64) -> [u8; BUFFER_SIZE] {
    let mut buf = [0u8; BUFFER_SIZE];
    buf[..tag.len()].copy_from_slice(tag);
    buf[GPA_OFFSET..GPA_OFFSET + 8].copy_from_slice(&gpa.to_le_bytes());
    buf
}

impl Mrtd {
    /// The state after TDH.MNG.INIT: nothing measured yet.
    pub fn new() -> Self {
        Self { hasher: Sha384::new(), page_adds: 0, mr_extends: 0 }
    }

    /// TDH.MEM.PAGE.ADD of the page at `gpa` (page-aligned).
    pub fn page_add(&mut self, gpa: u64) {
        self.hasher.update(op_buffer(PAGE_ADD_TAG, gpa));
        self.page_adds += 1;
    }

    /// TDH.MR.EXTEND of the 256 bytes `chunk` at `gpa` (256-byte aligned).
    pub fn mr_extend(&mut self, gpa: u64, chunk: &[u8; MR_EXTEND_CHUNK]) {
        self.extend_chunk(gpa, chunk);
    }

    /// Callers pass exactly [`MR_EXTEND_CHUNK`] bytes.
    fn extend_chunk(&mut self, gpa: u64, chunk: &[u8]) {
        debug_assert_eq!(chunk.len(), MR_EXTEND_CHUNK);
        self.hasher.update(op_buffer(MR_EXTEND_TAG, gpa));
        self.hasher.update(chunk);
        self.mr_extends += 1;
    }

    /// What KVM_TDX_INIT_MEM_REGION does for one page: TDH.MEM.PAGE.ADD, then, if
    /// `measure`, one TDH.MR.EXTEND per 256-byte chunk of `page`, in address order.
    pub fn init_mem_page(&mut self, gpa: u64, page: &[u8; PAGE_SIZE as usize], measure: bool) {
        self.add_page(gpa, page, measure);
    }

    /// [`Self::init_mem_page`] for a slice callers guarantee is one page long.
    fn add_page(&mut self, gpa: u64, page: &[u8], measure: bool) {
        debug_assert_eq!(page.len(), PAGE_SIZE as usize);
        self.page_add(gpa);
        if measure {
            for (offset, chunk) in (0u64..).step_by(MR_EXTEND_CHUNK).zip(page.chunks_exact(MR_EXTEND_CHUNK)) {
                self.extend_chunk(gpa + offset, chunk);
            }
        }
    }

    /// Number of TDH.MEM.PAGE.ADDs so far.
    pub fn page_adds(&self) -> u64 {
        self.page_adds
    }

    /// Number of TDH.MR.EXTENDs so far.
    pub fn mr_extends(&self) -> u64 {
        self.mr_extends
    }

    /// TDH.MR.FINALIZE: the MRTD value.
    pub fn finish(self) -> [u8; DIGEST_SIZE] {
        self.hasher.finalize().into()
    }
}

/// Checks what [`PlanRange::page`] relies on (alignment, no wrap, contents length),
/// since a plan's fields are public.
fn check_range(range: &PlanRange) -> Result<(), TdxMeasureError> {
    range.check().map_err(TdxMeasureError::Range)
}

/// Replays the plan's ranges, in order, as KVM_TDX_INIT_MEM_REGION issues them, and
/// returns the accumulator before TDH.MR.FINALIZE (its counters say how many
/// PAGE.ADDs and MR.EXTENDs the launch performs).
///
/// [`TdxPageType::Aug`] ranges are skipped: the guest accepts those pages later and
/// they never enter MRTD.
pub fn replay(plan: &LaunchPlan) -> Result<Mrtd, TdxMeasureError> {
    let mut mrtd = Mrtd::new();
    for range in &plan.ranges {
        let measure = match range.page_type {
            PageType::Tdx(TdxPageType::AddMeasured) => true,
            PageType::Tdx(TdxPageType::AddUnmeasured) => false,
            PageType::Tdx(TdxPageType::Aug) => continue,
            page_type => {
                return Err(TdxMeasureError::NotTdx { what: range.what.clone(), gpa: range.gpa, page_type });
            }
        };
        check_range(range)?;
        for i in 0..range.pages() {
            mrtd.add_page(range.gpa + i * PAGE_SIZE, range.page(i), measure);
        }
    }
    Ok(mrtd)
}

/// The MRTD a TD built from `plan` reports.
pub fn mrtd(plan: &LaunchPlan) -> Result<[u8; DIGEST_SIZE], TdxMeasureError> {
    replay(plan).map(Mrtd::finish)
}

/// A runtime measurement register.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rtmr([u8; DIGEST_SIZE]);

impl Default for Rtmr {
    fn default() -> Self {
        Self::new()
    }
}

impl Rtmr {
    /// An RTMR at TD start: all zero.
    pub const fn new() -> Self {
        Self([0; DIGEST_SIZE])
    }

    /// An RTMR holding `value`.
    pub const fn from_value(value: [u8; DIGEST_SIZE]) -> Self {
        Self(value)
    }

    /// TDG.MR.RTMR.EXTEND: `RTMR = SHA-384(RTMR || digest)`.
    pub fn extend(&mut self, digest: &[u8; DIGEST_SIZE]) {
        let mut h = Sha384::new();
        h.update(self.0);
        h.update(digest);
        self.0 = h.finalize().into();
    }

    /// The RTMR that extending a zero RTMR with `digests`, in order, produces (the
    /// value an event log's digests for this register must reproduce).
    pub fn replay<'a>(digests: impl IntoIterator<Item = &'a [u8; DIGEST_SIZE]>) -> Self {
        let mut rtmr = Self::new();
        digests.into_iter().for_each(|d| rtmr.extend(d));
        rtmr
    }

    /// The register's value.
    pub fn value(&self) -> &[u8; DIGEST_SIZE] {
        &self.0
    }
}

impl fmt::Display for Rtmr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Rtmr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Rtmr({self})")
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::plan::{Contents, SnpPageType};

    fn sha384(data: &[u8]) -> [u8; 48] {
        Sha384::digest(data).into()
    }

    fn tdx_range(gpa: u64, pages: u64, t: TdxPageType, contents: Contents) -> PlanRange {
        PlanRange { gpa, len: pages * PAGE_SIZE, page_type: PageType::Tdx(t), contents, what: "test".into() }
    }

    fn plan(ranges: Vec<PlanRange>) -> LaunchPlan {
        LaunchPlan { ranges, vcpus: vec![] }
    }

    /// The buffers of the TDX module spec, built byte by byte the obvious way.
    fn reference_stream(gpa: u64, page: &[u8], measure: bool) -> Vec<u8> {
        let mut s = vec![0u8; 128];
        s[..12].copy_from_slice(b"MEM.PAGE.ADD");
        s[16..24].copy_from_slice(&gpa.to_le_bytes());
        if measure {
            for c in 0..16u64 {
                let mut b = vec![0u8; 128];
                b[..9].copy_from_slice(b"MR.EXTEND");
                b[16..24].copy_from_slice(&(gpa + c * 256).to_le_bytes());
                s.extend_from_slice(&b);
                s.extend_from_slice(&page[c as usize * 256..(c as usize + 1) * 256]);
            }
        }
        s
    }

    #[test]
    fn empty_plan_has_the_hash_of_nothing() {
        assert_eq!(mrtd(&LaunchPlan::default()), Ok(sha384(b"")));
    }

    #[test]
    fn page_add_hashes_one_128_byte_buffer() {
        // Arrange
        let mut m = Mrtd::new();
        // Act
        m.page_add(0xffe2_0000);
        // Assert
        assert_eq!((m.page_adds(), m.mr_extends()), (1, 0));
        assert_eq!(m.finish(), sha384(&reference_stream(0xffe2_0000, &[], false)));
    }

    #[test]
    fn measured_page_is_its_add_then_sixteen_extends() {
        // Arrange
        let page: Vec<u8> = (0..4096u32).map(|i| (i * 7 + 3) as u8).collect();
        let p = plan(vec![tdx_range(0x1000, 1, TdxPageType::AddMeasured, Contents::Bytes(page.clone().into()))]);
        // Act
        let m = replay(&p).unwrap();
        // Assert
        assert_eq!((m.page_adds(), m.mr_extends()), (1, 16));
        assert_eq!(m.finish(), sha384(&reference_stream(0x1000, &page, true)));
    }

    #[test]
    fn pages_are_measured_one_after_the_other_not_in_two_passes() {
        // Arrange: two measured pages
        let bytes: Vec<u8> = (0..8192u32).map(|i| (i % 251) as u8).collect();
        let p = plan(vec![tdx_range(0x4000, 2, TdxPageType::AddMeasured, Contents::Bytes(bytes.clone().into()))]);
        let mut single_pass = reference_stream(0x4000, &bytes[..4096], true);
        single_pass.extend(reference_stream(0x5000, &bytes[4096..], true));
        // Act
        let got = mrtd(&p).unwrap();
        // Assert
        assert_eq!(got, sha384(&single_pass));
    }

    #[test]
    fn step_api_matches_the_plan_replay() {
        let page = [0x5au8; 4096];
        let mut steps = Mrtd::new();
        steps.init_mem_page(0x2000, &page, true);
        steps.init_mem_page(0x3000, &[0; 4096], false);
        let p = plan(vec![
            tdx_range(0x2000, 1, TdxPageType::AddMeasured, Contents::Bytes(Arc::from(&page[..]))),
            tdx_range(0x3000, 1, TdxPageType::AddUnmeasured, Contents::Zero),
        ]);
        assert_eq!(mrtd(&p).unwrap(), steps.finish());
    }

    #[test]
    fn unmeasured_contents_do_not_change_mrtd_but_addresses_do() {
        let at = |gpa, byte| {
            mrtd(&plan(vec![tdx_range(gpa, 1, TdxPageType::AddUnmeasured, Contents::Bytes(vec![byte; 4096].into()))]))
                .unwrap()
        };
        assert_eq!(at(0x1000, 0), at(0x1000, 0xff));
        assert_ne!(at(0x1000, 0), at(0x2000, 0));
    }

    #[test]
    fn aug_ranges_are_not_measured() {
        let base = plan(vec![tdx_range(0x1000, 1, TdxPageType::AddUnmeasured, Contents::Zero)]);
        let mut with_aug = base.clone();
        with_aug.ranges.push(tdx_range(0x10_0000, 512, TdxPageType::Aug, Contents::Zero));
        let m = replay(&with_aug).unwrap();
        assert_eq!(m.page_adds(), 1);
        assert_eq!(m.finish(), mrtd(&base).unwrap());
    }

    #[test]
    fn snp_range_is_rejected() {
        let mut p = plan(vec![tdx_range(0x1000, 1, TdxPageType::AddUnmeasured, Contents::Zero)]);
        p.ranges[0].page_type = PageType::Snp(SnpPageType::Normal);
        assert!(matches!(mrtd(&p), Err(TdxMeasureError::NotTdx { gpa: 0x1000, .. })));
    }

    #[test]
    fn malformed_ranges_are_rejected_not_panicked_on() {
        let mut short = tdx_range(0x1000, 2, TdxPageType::AddMeasured, Contents::Bytes(vec![0; 4096].into()));
        assert!(matches!(
            mrtd(&plan(vec![short.clone()])),
            Err(TdxMeasureError::Range(PlanError::ContentsLength { .. }))
        ));
        short.gpa = 0x1800;
        assert!(matches!(mrtd(&plan(vec![short])), Err(TdxMeasureError::Range(PlanError::Unaligned { .. }))));
        let wraps = tdx_range(u64::MAX - 0xfff, 2, TdxPageType::AddUnmeasured, Contents::Zero);
        assert!(matches!(mrtd(&plan(vec![wraps])), Err(TdxMeasureError::Range(PlanError::Wraps { .. }))));
    }

    // Reference values computed independently with Python's hashlib:
    //   python3 -c "import hashlib; h=lambda b: hashlib.sha384(b).digest(); \
    //     r1=h(bytes(48)+h(b'abc')); print(r1.hex()); print(h(r1+h(b'')).hex())"
    const RTMR_AFTER_ABC: &str =
        "93732e3733514a841c982cfa75ea76ab55fe011acb9cd980ef4523913c65be1b0998e04d77f8c174f81a82151619ca40";
    const RTMR_AFTER_ABC_EMPTY: &str =
        "a4d392030aec0188324dac645cac0391f996c9a913563092cd9d7c55c3d86c0f109053c37d2974da85660814bf359bed";

    #[test]
    fn rtmr_starts_at_zero() {
        assert_eq!(Rtmr::new().value(), &[0u8; 48]);
        assert_eq!(Rtmr::replay([]), Rtmr::default());
    }

    #[test]
    fn rtmr_extend_matches_an_independent_computation() {
        // Arrange
        let mut r = Rtmr::new();
        // Act
        r.extend(&sha384(b"abc"));
        // Assert
        assert_eq!(r.to_string(), RTMR_AFTER_ABC);
        r.extend(&sha384(b""));
        assert_eq!(r.to_string(), RTMR_AFTER_ABC_EMPTY);
    }

    #[test]
    fn rtmr_replay_of_an_event_log_matches_extending_in_order() {
        let digests = [sha384(b"abc"), sha384(b"")];
        assert_eq!(Rtmr::replay(&digests).to_string(), RTMR_AFTER_ABC_EMPTY);
        let reversed = [digests[1], digests[0]];
        assert_ne!(Rtmr::replay(&reversed), Rtmr::replay(&digests));
    }

    #[test]
    fn rtmr_extends_from_a_given_value() {
        let mut after_abc = [0u8; 48];
        hex::decode_to_slice(RTMR_AFTER_ABC, &mut after_abc).unwrap();
        let mut r = Rtmr::from_value(after_abc);
        r.extend(&sha384(b""));
        assert_eq!(r.to_string(), RTMR_AFTER_ABC_EMPTY);
    }
}
