//! The shared-memory view: the only guest memory device models may touch.
//!
//! A confidential guest's memory is private unless the guest converts pages to shared
//! (SNP page-state changes, TDX MapGPA). [`SharedMemory`] tracks that state per 4 KiB
//! page and publishes a [`GuestMem`]: a guest-memory object whose regions are exactly
//! the shared ranges, swapped atomically when the state changes. Devices and
//! virtio-queue read descriptors, rings and buffers through it, so an address in a
//! private page simply does not exist for them: the access fails, the request fails,
//! and [`SharedMemory::note_refused`] counts it. Nothing here can reach a private page.
//!
//! The launch backend owns the page states: plain KVM shares everything
//! ([`SharedMemory::all_shared`]); the SNP and TDX backends start from
//! [`SharedMemory::all_private`] and feed conversions into
//! [`SharedMemory::set_shared`].

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use thiserror::Error;
use vm_memory::bitmap::BS;
use vm_memory::guest_memory::Result as GmResult;
use vm_memory::{
    GuestAddress, GuestMemoryAtomic, GuestMemoryBackend, GuestMemoryError, GuestMemoryMmap, GuestMemoryRegion,
    GuestMemoryRegionBytes, GuestRegionCollection, GuestUsize, MemoryRegionAddress, MmapRegion, VolatileMemory,
    VolatileSlice,
};

/// Page granularity of the private/shared state.
pub const PAGE_SIZE: u64 = 0x1000;

/// The view devices get: guest memory made of the shared ranges only.
pub type GuestMem = GuestMemoryAtomic<GuestRegionCollection<SharedRegion>>;

/// One shared range of guest memory, a window into a region's host mapping.
#[derive(Debug)]
pub struct SharedRegion {
    mapping: Arc<MmapRegion<()>>,
    /// Offset of the window in the mapping.
    offset: usize,
    len: usize,
    start: GuestAddress,
}

impl GuestMemoryRegion for SharedRegion {
    type B = ();

    fn len(&self) -> GuestUsize {
        self.len as GuestUsize
    }

    fn start_addr(&self) -> GuestAddress {
        self.start
    }

    fn bitmap(&self) -> BS<'_, ()> {}

    fn get_slice(&self, offset: MemoryRegionAddress, count: usize) -> GmResult<VolatileSlice<'_, BS<'_, ()>>> {
        let end = (offset.0 as usize).checked_add(count).ok_or(GuestMemoryError::InvalidBackendAddress)?;
        if offset.0 > self.len as u64 || end > self.len {
            return Err(GuestMemoryError::InvalidBackendAddress);
        }
        Ok(self.mapping.get_slice(self.offset + offset.0 as usize, count)?)
    }
}

impl GuestMemoryRegionBytes for SharedRegion {}

/// Errors from changing page states.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SharedMemoryError {
    /// The range is not page-aligned, is empty, or wraps.
    #[error("page-state change {gpa:#x}+{len:#x} is not a page-aligned, non-empty range")]
    Unaligned {
        /// Start.
        gpa: u64,
        /// Length.
        len: u64,
    },
    /// The range is not entirely guest RAM.
    #[error("page-state change {gpa:#x}+{len:#x} is outside guest memory")]
    OutsideMemory {
        /// Start.
        gpa: u64,
        /// Length.
        len: u64,
    },
}

/// Per-page private/shared state of guest RAM and the view it implies.
#[derive(Debug)]
pub struct SharedMemory {
    /// Every RAM region: (guest start, length, host mapping).
    regions: Vec<(u64, u64, Arc<MmapRegion<()>>)>,
    /// Shared ranges, start -> end (exclusive), merged and page-aligned.
    shared: Mutex<BTreeMap<u64, u64>>,
    view: GuestMem,
    refused: AtomicU64,
}

impl SharedMemory {
    fn new(mem: &GuestMemoryMmap, all_shared: bool) -> Self {
        let regions: Vec<_> = mem.iter().map(|r| (r.start_addr().0, r.len(), r.get_mmap())).collect();
        let shared: BTreeMap<u64, u64> =
            if all_shared { regions.iter().map(|(s, l, _)| (*s, s + l)).collect() } else { BTreeMap::new() };
        let view = GuestMemoryAtomic::new(build_view(&regions, &shared));
        Self { regions, shared: Mutex::new(shared), view, refused: AtomicU64::new(0) }
    }

    /// Every page shared: a plain (non-confidential) VM.
    pub fn all_shared(mem: &GuestMemoryMmap) -> Self {
        Self::new(mem, true)
    }

    /// Every page private: a confidential VM at launch.
    pub fn all_private(mem: &GuestMemoryMmap) -> Self {
        Self::new(mem, false)
    }

    /// The view devices use (cheap to clone; follows later page-state changes).
    pub fn view(&self) -> GuestMem {
        self.view.clone()
    }

    /// Converts `gpa..gpa+len` to shared (`true`) or private (`false`) and publishes
    /// the new view.
    pub fn set_shared(&self, gpa: u64, len: u64, shared: bool) -> Result<(), SharedMemoryError> {
        let end = gpa.checked_add(len).filter(|_| len > 0 && (gpa | len) & (PAGE_SIZE - 1) == 0);
        let end = end.ok_or(SharedMemoryError::Unaligned { gpa, len })?;
        if !self.is_ram(gpa, end) {
            return Err(SharedMemoryError::OutsideMemory { gpa, len });
        }
        let mut map = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        remove_range(&mut map, gpa, end);
        if shared {
            insert_range(&mut map, gpa, end);
        }
        // Publish while holding the lock so views are swapped in state order.
        let guard = self.view.lock().unwrap_or_else(|e| e.into_inner());
        guard.replace(build_view(&self.regions, &map));
        Ok(())
    }

    /// Whether every page of `gpa..gpa+len` is shared.
    pub fn is_shared(&self, gpa: u64, len: u64) -> bool {
        let Some(end) = gpa.checked_add(len) else { return false };
        let map = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        map.range(..=gpa).next_back().is_some_and(|(_, &e)| e >= end)
    }

    /// Records a device access refused because it touched private (or no) memory.
    pub fn note_refused(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    /// How many device accesses were refused.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    fn is_ram(&self, start: u64, end: u64) -> bool {
        // RAM regions do not touch each other's ends in cvmm's layouts, so a range is RAM
        // when one region contains it.
        self.regions.iter().any(|(s, l, _)| start >= *s && end <= s + l)
    }
}

fn remove_range(map: &mut BTreeMap<u64, u64>, start: u64, end: u64) {
    let overlapping: Vec<(u64, u64)> = map.range(..end).filter(|(_, &e)| e > start).map(|(&s, &e)| (s, e)).collect();
    for (s, e) in overlapping {
        map.remove(&s);
        if s < start {
            map.insert(s, start);
        }
        if e > end {
            map.insert(end, e);
        }
    }
}

fn insert_range(map: &mut BTreeMap<u64, u64>, mut start: u64, mut end: u64) {
    // Merge with neighbours that touch the new range (the range itself is free).
    if let Some((&s, &e)) = map.range(..start).next_back() {
        if e == start {
            map.remove(&s);
            start = s;
        }
    }
    if let Some(e) = map.remove(&end) {
        end = e;
    }
    map.insert(start, end);
}

fn build_view(
    regions: &[(u64, u64, Arc<MmapRegion<()>>)],
    shared: &BTreeMap<u64, u64>,
) -> GuestRegionCollection<SharedRegion> {
    let mut out = Vec::new();
    for (&s, &e) in shared {
        for (rs, rl, mapping) in regions {
            let (lo, hi) = (s.max(*rs), e.min(rs + rl));
            if lo < hi {
                out.push(Arc::new(SharedRegion {
                    mapping: mapping.clone(),
                    offset: (lo - rs) as usize,
                    len: (hi - lo) as usize,
                    start: GuestAddress(lo),
                }));
            }
        }
    }
    // Sorted and disjoint by construction; an empty view is a valid "nothing shared".
    GuestRegionCollection::from_arc_regions(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{Bytes, GuestAddressSpace};

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000), (GuestAddress(0x100_0000), 0x10_0000)]).unwrap()
    }

    #[test]
    fn plain_vms_see_all_memory() {
        let m = mem();
        let s = SharedMemory::all_shared(&m);
        let view = s.view();
        view.memory().write_obj(0x1234_5678u32, GuestAddress(0x10_0000 - 4)).unwrap();
        assert_eq!(m.read_obj::<u32>(GuestAddress(0x10_0000 - 4)).unwrap(), 0x1234_5678);
        assert!(view.memory().read_obj::<u32>(GuestAddress(0x100_0000)).is_ok());
        assert!(s.is_shared(0, 0x10_0000));
    }

    #[test]
    fn private_pages_are_unreachable_through_the_view() {
        let m = mem();
        m.write_obj(0xdead_beefu32, GuestAddress(0x2000)).unwrap();
        let s = SharedMemory::all_private(&m);
        let view = s.view();
        assert!(view.memory().read_obj::<u32>(GuestAddress(0x2000)).is_err());
        assert!(view.memory().write_obj(1u32, GuestAddress(0x2000)).is_err());
        assert_eq!(m.read_obj::<u32>(GuestAddress(0x2000)).unwrap(), 0xdead_beef, "nothing written");
    }

    #[test]
    fn sharing_a_page_exposes_exactly_that_page() {
        let m = mem();
        let s = SharedMemory::all_private(&m);
        s.set_shared(0x3000, 0x1000, true).unwrap();
        let view = s.view(); // an older clone follows the change too
        let mem_now = view.memory();
        assert!(mem_now.write_obj(7u64, GuestAddress(0x3ff8)).is_ok());
        assert!(mem_now.read_obj::<u64>(GuestAddress(0x3ffc)).is_err(), "crosses into a private page");
        assert!(mem_now.read_obj::<u8>(GuestAddress(0x2fff)).is_err());
        assert!(s.is_shared(0x3000, 0x1000));
        assert!(!s.is_shared(0x3000, 0x1001));
        assert_eq!(m.read_obj::<u64>(GuestAddress(0x3ff8)).unwrap(), 7);
    }

    #[test]
    fn conversions_merge_split_and_revert() {
        let m = mem();
        let s = SharedMemory::all_private(&m);
        s.set_shared(0x1000, 0x1000, true).unwrap();
        s.set_shared(0x2000, 0x2000, true).unwrap();
        assert!(s.is_shared(0x1000, 0x3000), "adjacent ranges merge");
        s.set_shared(0x2000, 0x1000, false).unwrap();
        assert!(s.is_shared(0x1000, 0x1000) && s.is_shared(0x3000, 0x1000));
        assert!(!s.is_shared(0x2000, 0x1000));
        assert!(s.view().memory().read_obj::<u8>(GuestAddress(0x2800)).is_err());
        s.set_shared(0x0, 0x10_0000, false).unwrap();
        assert!(s.view().memory().read_obj::<u8>(GuestAddress(0x1000)).is_err());
    }

    #[test]
    fn bad_conversions_are_rejected() {
        let s = SharedMemory::all_private(&mem());
        assert!(matches!(s.set_shared(0x1001, 0x1000, true), Err(SharedMemoryError::Unaligned { .. })));
        assert!(matches!(s.set_shared(0x1000, 0, true), Err(SharedMemoryError::Unaligned { .. })));
        assert!(matches!(s.set_shared(0xffff_ffff_ffff_f000, 0x2000, true), Err(SharedMemoryError::Unaligned { .. })));
        assert!(matches!(s.set_shared(0x20_0000, 0x1000, true), Err(SharedMemoryError::OutsideMemory { .. })));
        assert!(matches!(s.set_shared(0xf_f000, 0x2000, true), Err(SharedMemoryError::OutsideMemory { .. })));
    }
}
