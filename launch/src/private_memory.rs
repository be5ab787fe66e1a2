//! Private guest memory on KVM, for every TEE whose private pages live in a guest_memfd
//! (SEV-SNP, TDX): one guest_memfd per RAM region as the private side, the ordinary
//! mapping as the shared side, the memory attributes that say which side a page uses,
//! and the conversions between them that the guest asks for at run time
//! (`KVM_HC_MAP_GPA_RANGE` hypercall exits, which is how KVM forwards an SNP guest's
//! Page State Change requests and a TD's `TDG.VP.VMCALL<MapGPA>`, and
//! `KVM_EXIT_MEMORY_FAULT`).
//!
//! A conversion sets the range's KVM memory attribute first, then discards the backing
//! the guest no longer uses: the guest_memfd pages when going shared
//! (`fallocate(PUNCH_HOLE | KEEP_SIZE)`), the shared mapping's pages when going private
//! (`madvise(MADV_DONTNEED)`, or `MADV_REMOVE` for a shared file mapping), as QEMU's
//! `kvm_convert_memory` does. KVM has no ioctl that reads the attributes back, so
//! [`PrivateMemory`] also records which pages are shared ([`PrivateMemory::is_shared`]),
//! for requests that must only touch shared memory (a TD's GetQuote buffer).
//!
//! The ioctls are issued by one function each ([`create_guest_memfd`],
//! [`set_user_memory_region2`], [`set_memory_attributes`], [`enable_exit_hypercall`]).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Mutex;

use kvm_bindings::{
    kvm_create_guest_memfd, kvm_enable_cap, kvm_memory_attributes, kvm_userspace_memory_region2,
    KVM_CAP_EXIT_HYPERCALL, KVM_MEMORY_ATTRIBUTE_PRIVATE, KVM_MEMORY_EXIT_FLAG_PRIVATE, KVM_MEM_GUEST_MEMFD,
};
use kvm_ioctls::VmFd;
use thiserror::Error;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

/// `#define KVM_HC_MAP_GPA_RANGE 12` (include/uapi/linux/kvm_para.h): the hypercall
/// KVM forwards to user space as `KVM_EXIT_HYPERCALL` for page-state changes (an SNP
/// guest's Page State Change requests and a TD's `TDG.VP.VMCALL<MapGPA>` arrive as this
/// hypercall, once [`enable_exit_hypercall`] has asked for it).
pub const KVM_HC_MAP_GPA_RANGE: u64 = 12;

/// `#define KVM_MAP_GPA_RANGE_PAGE_SZ_4K 0` (arch/x86/include/uapi/asm/kvm_para.h).
pub const KVM_MAP_GPA_RANGE_PAGE_SZ_4K: u64 = 0;
/// `#define KVM_MAP_GPA_RANGE_PAGE_SZ_2M (1 << 0)`.
pub const KVM_MAP_GPA_RANGE_PAGE_SZ_2M: u64 = 1 << 0;
/// `#define KVM_MAP_GPA_RANGE_PAGE_SZ_1G (1 << 1)`.
pub const KVM_MAP_GPA_RANGE_PAGE_SZ_1G: u64 = 1 << 1;
/// `#define KVM_MAP_GPA_RANGE_ENCRYPTED KVM_MAP_GPA_RANGE_ENC_STAT(1)`, where
/// `#define KVM_MAP_GPA_RANGE_ENC_STAT(n) (n << 4)`.
pub const KVM_MAP_GPA_RANGE_ENCRYPTED: u64 = 1 << 4;
/// `#define KVM_MAP_GPA_RANGE_DECRYPTED KVM_MAP_GPA_RANGE_ENC_STAT(0)`.
pub const KVM_MAP_GPA_RANGE_DECRYPTED: u64 = 0;

/// Errors of the ioctls this module issues, each naming the ioctl and its arguments.
#[derive(Debug, Error)]
pub enum GmemIoctlError {
    /// `KVM_CREATE_GUEST_MEMFD` failed.
    #[error("KVM_CREATE_GUEST_MEMFD ({size:#x} bytes) failed: {source}")]
    CreateGuestMemfd {
        /// Size asked for.
        size: u64,
        /// KVM's error.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// `KVM_SET_USER_MEMORY_REGION2` failed.
    #[error("KVM_SET_USER_MEMORY_REGION2 (slot {slot}, {gpa:#x}+{len:#x}, guest_memfd) failed: {source}")]
    SetUserMemoryRegion2 {
        /// Memory slot.
        slot: u32,
        /// Guest-physical start.
        gpa: u64,
        /// Length.
        len: u64,
        /// KVM's error.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// `KVM_SET_MEMORY_ATTRIBUTES` failed.
    #[error("KVM_SET_MEMORY_ATTRIBUTES ({gpa:#x}+{len:#x} to {}) failed: {source}", if *private { "private" } else { "shared" })]
    SetMemoryAttributes {
        /// Guest-physical start.
        gpa: u64,
        /// Length.
        len: u64,
        /// Whether the range was being made private.
        private: bool,
        /// KVM's error.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// `KVM_ENABLE_CAP(KVM_CAP_EXIT_HYPERCALL)` failed.
    #[error("KVM_ENABLE_CAP(KVM_CAP_EXIT_HYPERCALL, {mask:#x}) failed: {source}")]
    EnableExitHypercall {
        /// The hypercall mask.
        mask: u64,
        /// KVM's error.
        #[source]
        source: kvm_ioctls::Error,
    },
}

impl GmemIoctlError {
    /// The errno of the failed ioctl.
    pub fn errno(&self) -> i32 {
        match self {
            Self::CreateGuestMemfd { source, .. }
            | Self::SetUserMemoryRegion2 { source, .. }
            | Self::SetMemoryAttributes { source, .. }
            | Self::EnableExitHypercall { source, .. } => source.errno(),
        }
    }
}

/// `KVM_CREATE_GUEST_MEMFD`: a guest_memfd of `size` bytes with `flags`.
pub fn create_guest_memfd(vm: &VmFd, size: u64, flags: u64) -> Result<OwnedFd, GmemIoctlError> {
    let fd = vm
        .create_guest_memfd(kvm_create_guest_memfd { size, flags, reserved: [0; 6] })
        .map_err(|source| GmemIoctlError::CreateGuestMemfd { size, source })?;
    // SAFETY: KVM returned a new fd, which nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `KVM_SET_USER_MEMORY_REGION2` with `KVM_MEM_GUEST_MEMFD`: `region` as given.
///
/// # Safety
///
/// `region.userspace_addr` must be a mapping of `region.memory_size` bytes that outlives
/// the VM's use of the slot (it is the shared side of the slot).
pub unsafe fn set_user_memory_region2(vm: &VmFd, region: kvm_userspace_memory_region2) -> Result<(), GmemIoctlError> {
    // SAFETY: the mapping is the caller's contract.
    unsafe { vm.set_user_memory_region2(region) }.map_err(|source| GmemIoctlError::SetUserMemoryRegion2 {
        slot: region.slot,
        gpa: region.guest_phys_addr,
        len: region.memory_size,
        source,
    })
}

/// `KVM_SET_MEMORY_ATTRIBUTES`: makes `[gpa, gpa + len)` private (`KVM_MEMORY_ATTRIBUTE_PRIVATE`)
/// or shared (no attribute).
pub fn set_memory_attributes(vm: &VmFd, gpa: u64, len: u64, private: bool) -> Result<(), GmemIoctlError> {
    let attributes = if private { KVM_MEMORY_ATTRIBUTE_PRIVATE as u64 } else { 0 };
    vm.set_memory_attributes(kvm_memory_attributes { address: gpa, size: len, attributes, flags: 0 })
        .map_err(|source| GmemIoctlError::SetMemoryAttributes { gpa, len, private, source })
}

/// `KVM_ENABLE_CAP(KVM_CAP_EXIT_HYPERCALL)`: the hypercalls whose bit is set in `mask`
/// exit to user space as `KVM_EXIT_HYPERCALL`.
pub fn enable_exit_hypercall(vm: &VmFd, mask: u64) -> Result<(), GmemIoctlError> {
    let mut cap = kvm_enable_cap { cap: KVM_CAP_EXIT_HYPERCALL, ..Default::default() };
    cap.args[0] = mask;
    vm.enable_cap(&cap).map_err(|source| GmemIoctlError::EnableExitHypercall { mask, source })
}

/// Page size of conversions (KVM_HC_MAP_GPA_RANGE counts 4 KiB pages whatever its
/// page-size hint).
pub const PAGE_SIZE: u64 = 0x1000;

/// The value for `kvm_run.hypercall.ret` when a conversion failed: `-KVM_EINVAL`
/// (include/uapi/linux/kvm_para.h: `#define KVM_EINVAL EINVAL`), what KVM itself returns
/// for a malformed KVM_HC_MAP_GPA_RANGE. An SNP guest sees any non-zero value as a
/// failed Page State Change; for a TD, KVM turns it into TDG.VP.VMCALL_INVALID_OPERAND.
pub const HYPERCALL_RET_EINVAL: u64 = (-(libc::EINVAL as i64)) as u64;

/// A guest-physical range of RAM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestRange {
    /// Start.
    pub gpa: u64,
    /// Length in bytes.
    pub len: u64,
}

/// A request to make a range private or shared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conversion {
    /// Start, 4 KiB aligned.
    pub gpa: u64,
    /// Length, a non-zero multiple of 4 KiB.
    pub len: u64,
    /// Private (encrypted, guest_memfd) or shared (the ordinary mapping).
    pub to_private: bool,
}

/// Why an exit does not describe a conversion cvmm will make. Every one of these comes
/// from the guest (through KVM): the guest gets an error, the VMM keeps running.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConversionError {
    /// A hypercall other than KVM_HC_MAP_GPA_RANGE.
    #[error("hypercall {nr} is not KVM_HC_MAP_GPA_RANGE ({KVM_HC_MAP_GPA_RANGE})")]
    NotMapGpaRange {
        /// The hypercall number.
        nr: u64,
    },
    /// KVM_HC_MAP_GPA_RANGE attributes with unknown bits.
    #[error("KVM_HC_MAP_GPA_RANGE attributes {attributes:#x} have unknown bits (known: page size 0-1, encrypted 4)")]
    UnknownAttributes {
        /// The attributes.
        attributes: u64,
    },
    /// An empty range.
    #[error("conversion of an empty range at {gpa:#x}")]
    Empty {
        /// Start.
        gpa: u64,
    },
    /// A start or length that is not 4 KiB aligned.
    #[error("conversion of {gpa:#x}+{len:#x} is not 4 KiB aligned")]
    Unaligned {
        /// Start.
        gpa: u64,
        /// Length.
        len: u64,
    },
    /// A range that wraps around the address space.
    #[error("conversion of {pages:#x} pages at {gpa:#x} wraps around the address space")]
    Overflow {
        /// Start.
        gpa: u64,
        /// 4 KiB pages.
        pages: u64,
    },
    /// A range not wholly inside guest RAM.
    #[error("conversion of {gpa:#x}+{len:#x} is not inside guest RAM")]
    OutsideRam {
        /// Start.
        gpa: u64,
        /// Length.
        len: u64,
    },
}

impl Conversion {
    /// The conversion a `KVM_EXIT_HYPERCALL` asks for: `nr` must be KVM_HC_MAP_GPA_RANGE,
    /// `args[0]` the start, `args[1]` the number of 4 KiB pages, `args[2]` the
    /// attributes (`KVM_MAP_GPA_RANGE_ENCRYPTED` for private, a page-size hint in bits
    /// 1:0); the range must be aligned, non-empty, not wrap and lie inside `ram`.
    pub fn from_hypercall(nr: u64, args: &[u64; 6], ram: &[GuestRange]) -> Result<Self, ConversionError> {
        if nr != KVM_HC_MAP_GPA_RANGE {
            return Err(ConversionError::NotMapGpaRange { nr });
        }
        let (gpa, pages, attributes) = (args[0], args[1], args[2]);
        let known = KVM_MAP_GPA_RANGE_ENCRYPTED | KVM_MAP_GPA_RANGE_PAGE_SZ_2M | KVM_MAP_GPA_RANGE_PAGE_SZ_1G;
        if attributes & !known != 0 || attributes & 3 == 3 {
            return Err(ConversionError::UnknownAttributes { attributes });
        }
        if pages == 0 {
            return Err(ConversionError::Empty { gpa });
        }
        let len = pages.checked_mul(PAGE_SIZE).ok_or(ConversionError::Overflow { gpa, pages })?;
        let c = Self { gpa, len, to_private: attributes & KVM_MAP_GPA_RANGE_ENCRYPTED != 0 };
        c.check(ram)?;
        Ok(c)
    }

    /// The conversion a `KVM_EXIT_MEMORY_FAULT` asks for: the guest accessed
    /// `[gpa, gpa + size)` as private (`KVM_MEMORY_EXIT_FLAG_PRIVATE` in `flags`) or as
    /// shared while it had the other attribute.
    pub fn from_memory_fault(flags: u64, gpa: u64, size: u64, ram: &[GuestRange]) -> Result<Self, ConversionError> {
        let c = Self { gpa, len: size, to_private: flags & u64::from(KVM_MEMORY_EXIT_FLAG_PRIVATE) != 0 };
        c.check(ram)?;
        Ok(c)
    }

    /// Checks that the range is non-empty, aligned, does not wrap and lies inside `ram`
    /// (which may be several adjacent ranges).
    pub fn check(&self, ram: &[GuestRange]) -> Result<(), ConversionError> {
        let Self { gpa, len, .. } = *self;
        if len == 0 {
            return Err(ConversionError::Empty { gpa });
        }
        if !gpa.is_multiple_of(PAGE_SIZE) || !len.is_multiple_of(PAGE_SIZE) {
            return Err(ConversionError::Unaligned { gpa, len });
        }
        let end = gpa.checked_add(len).ok_or(ConversionError::Overflow { gpa, pages: len / PAGE_SIZE })?;
        // Walk the RAM ranges covering [gpa, end) in address order.
        let mut sorted: Vec<GuestRange> = ram.to_vec();
        sorted.sort_by_key(|r| r.gpa);
        let mut at = gpa;
        for r in sorted {
            let r_end = r.gpa.saturating_add(r.len);
            if r.gpa <= at && at < r_end {
                at = r_end;
                if at >= end {
                    return Ok(());
                }
            }
        }
        Err(ConversionError::OutsideRam { gpa, len })
    }
}

/// The `kvm_run.hypercall.ret` value for a KVM_HC_MAP_GPA_RANGE whose conversion gave
/// `result`: 0 on success, [`HYPERCALL_RET_EINVAL`] on any failure.
pub fn hypercall_ret<T, E>(result: &Result<T, E>) -> u64 {
    match result {
        Ok(_) => 0,
        Err(_) => HYPERCALL_RET_EINVAL,
    }
}

/// Errors from setting up private memory or converting it.
#[derive(Debug, Error)]
pub enum PrivateMemoryError {
    /// An ioctl failed.
    #[error(transparent)]
    Ioctl(#[from] GmemIoctlError),
    /// The exit did not describe a valid conversion.
    #[error("invalid conversion request from the guest: {0}")]
    Conversion(#[from] ConversionError),
    /// Discarding the no-longer-used backing of a converted range failed.
    #[error("cannot discard the {side} backing of {gpa:#x}+{len:#x} ({call}): {source}")]
    Discard {
        /// "shared" or "private".
        side: &'static str,
        /// The system call.
        call: &'static str,
        /// Start.
        gpa: u64,
        /// Length.
        len: u64,
        /// The system call's error.
        #[source]
        source: std::io::Error,
    },
    /// A range that is not inside a single RAM region.
    #[error("{gpa:#x}+{len:#x} is not inside one guest RAM region")]
    NotInOneRegion {
        /// Start.
        gpa: u64,
        /// Length.
        len: u64,
    },
    /// Writing into the shared mapping failed.
    #[error("cannot write {len:#x} bytes at {gpa:#x} into guest memory: {source}")]
    Write {
        /// Start.
        gpa: u64,
        /// Length.
        len: usize,
        /// vm-memory's error.
        #[source]
        source: vm_memory::GuestMemoryError,
    },
}

/// One RAM region: its memory slot and guest_memfd.
#[derive(Debug)]
struct MemRegion {
    slot: u32,
    gpa: u64,
    len: u64,
    gmem: OwnedFd,
}

/// Guest memory of a VM with private memory: the shared mappings (a clone of the
/// builder's `GuestMemoryMmap`, which keeps them mapped), a guest_memfd per region, and
/// which pages are shared now.
///
/// Conversions may come from several vCPU threads: [`convert`](Self::convert) holds a
/// lock from the attribute change to the end of the discard (and the update of the
/// shared-page record), so that two conversions of the same pages cannot interleave (a
/// discard of the side the other one just chose).
#[derive(Debug)]
pub struct PrivateMemory {
    mem: GuestMemoryMmap,
    regions: Vec<MemRegion>,
    /// The shared ranges, sorted, disjoint and not adjacent; the lock also serializes
    /// conversions.
    shared: Mutex<Vec<GuestRange>>,
}

impl PrivateMemory {
    /// Registers every region of `mem` with `vm` from memory slot `first_slot` on: a
    /// guest_memfd of the region's size (`KVM_CREATE_GUEST_MEMFD`), then
    /// `KVM_SET_USER_MEMORY_REGION2` with `KVM_MEM_GUEST_MEMFD`, the region's mapping as
    /// `userspace_addr` and the guest_memfd at offset 0. The attributes stay as KVM
    /// creates them (shared); [`make_all_private`](Self::make_all_private) follows.
    pub fn register(vm: &VmFd, mem: &GuestMemoryMmap, first_slot: u32) -> Result<Self, PrivateMemoryError> {
        let mut regions = Vec::new();
        for (i, region) in mem.iter().enumerate() {
            let (gpa, len) = (region.start_addr().0, region.len());
            let gmem = create_guest_memfd(vm, len, 0)?;
            let slot = first_slot + i as u32;
            let desc = kvm_userspace_memory_region2 {
                slot,
                flags: KVM_MEM_GUEST_MEMFD,
                guest_phys_addr: gpa,
                memory_size: len,
                userspace_addr: region.as_ptr() as u64,
                guest_memfd_offset: 0,
                guest_memfd: gmem.as_raw_fd() as u32,
                ..Default::default()
            };
            // SAFETY: the mapping covers `len` bytes and stays mapped while `self.mem`
            // (a clone holding the same Arc'd regions) lives, which is as long as the slot
            // is used through this object; the VM must not outlive the mapping either,
            // which the builder guarantees as for the plain launch.
            unsafe { set_user_memory_region2(vm, desc) }?;
            regions.push(MemRegion { slot, gpa, len, gmem });
        }
        let shared =
            regions.iter().fold(Vec::new(), |set, r| set_shared(set, GuestRange { gpa: r.gpa, len: r.len }, true));
        Ok(Self { mem: mem.clone(), regions, shared: Mutex::new(shared) })
    }

    /// Makes all of RAM private (`KVM_SET_MEMORY_ATTRIBUTES`), as QEMU does when it
    /// registers a guest_memfd slot: the guest starts with private memory, and asks for
    /// the pages it shares.
    pub fn make_all_private(&self, vm: &VmFd) -> Result<(), PrivateMemoryError> {
        let mut shared = self.lock_shared();
        for r in &self.regions {
            set_memory_attributes(vm, r.gpa, r.len, true)?;
            *shared = set_shared(std::mem::take(&mut *shared), GuestRange { gpa: r.gpa, len: r.len }, false);
        }
        Ok(())
    }

    /// Whether all of `[gpa, gpa + len)` is RAM whose pages are shared now (as far as the
    /// conversions made through this object and [`make_all_private`](Self::make_all_private)
    /// tell: attribute changes made with [`set_memory_attributes`] directly are not seen).
    /// An empty or wrapping range is not.
    pub fn is_shared(&self, gpa: u64, len: u64) -> bool {
        let Some(end) = gpa.checked_add(len) else { return false };
        len != 0 && self.lock_shared().iter().any(|r| r.gpa <= gpa && end <= r.gpa + r.len)
    }

    fn lock_shared(&self) -> std::sync::MutexGuard<'_, Vec<GuestRange>> {
        // A poisoned lock only means another conversion panicked; the attributes are
        // KVM's, and the record is updated only after KVM took a change, so carry on.
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The RAM ranges (one per region).
    pub fn ranges(&self) -> Vec<GuestRange> {
        self.regions.iter().map(|r| GuestRange { gpa: r.gpa, len: r.len }).collect()
    }

    /// The memory slots used (one per region), in region order.
    pub fn slots(&self) -> Vec<u32> {
        self.regions.iter().map(|r| r.slot).collect()
    }

    /// The conversion a KVM_EXIT_HYPERCALL asks for ([`Conversion::from_hypercall`]).
    pub fn conversion_from_hypercall(&self, nr: u64, args: &[u64; 6]) -> Result<Conversion, ConversionError> {
        Conversion::from_hypercall(nr, args, &self.ranges())
    }

    /// The conversion a KVM_EXIT_MEMORY_FAULT asks for ([`Conversion::from_memory_fault`]).
    pub fn conversion_from_memory_fault(&self, flags: u64, gpa: u64, size: u64) -> Result<Conversion, ConversionError> {
        Conversion::from_memory_fault(flags, gpa, size, &self.ranges())
    }

    /// Converts `c` (checked again against RAM): `KVM_SET_MEMORY_ATTRIBUTES` for the
    /// whole range first, then the discard of the backing no longer used, region by
    /// region. Nothing is discarded when KVM refuses the attribute change.
    ///
    /// After it succeeds, the caller updates whatever else tracks shared pages (the
    /// devices' view of guest memory).
    pub fn convert(&self, vm: &VmFd, c: &Conversion) -> Result<(), PrivateMemoryError> {
        c.check(&self.ranges())?;
        let mut shared = self.lock_shared();
        set_memory_attributes(vm, c.gpa, c.len, c.to_private)?;
        *shared = set_shared(std::mem::take(&mut *shared), GuestRange { gpa: c.gpa, len: c.len }, !c.to_private);
        self.discard(c)
    }

    /// A `KVM_EXIT_HYPERCALL` from the vCPU loop: parses it
    /// ([`conversion_from_hypercall`](Self::conversion_from_hypercall)) and converts. Put
    /// [`hypercall_ret`] of the result in `kvm_run.hypercall.ret`.
    pub fn handle_map_gpa_range(&self, vm: &VmFd, nr: u64, args: &[u64; 6]) -> Result<Conversion, PrivateMemoryError> {
        let c = self.conversion_from_hypercall(nr, args)?;
        self.convert(vm, &c)?;
        Ok(c)
    }

    /// A `KVM_EXIT_MEMORY_FAULT` from the vCPU loop: parses it
    /// ([`conversion_from_memory_fault`](Self::conversion_from_memory_fault)) and converts;
    /// then run the vCPU again (on failure, the fault repeats: stop the VM).
    pub fn handle_memory_fault(
        &self,
        vm: &VmFd,
        flags: u64,
        gpa: u64,
        size: u64,
    ) -> Result<Conversion, PrivateMemoryError> {
        let c = self.conversion_from_memory_fault(flags, gpa, size)?;
        self.convert(vm, &c)?;
        Ok(c)
    }

    /// Discards the backing a converted range no longer uses: the shared mapping's pages
    /// when it went private, the guest_memfd's when it went shared.
    pub fn discard(&self, c: &Conversion) -> Result<(), PrivateMemoryError> {
        c.check(&self.ranges())?;
        let end = c.gpa + c.len;
        for r in &self.regions {
            let (start, stop) = (c.gpa.max(r.gpa), end.min(r.gpa + r.len));
            if start >= stop {
                continue;
            }
            if c.to_private {
                self.discard_shared(start, stop - start)?;
            } else {
                discard_private(r, start, stop - start)?;
            }
        }
        Ok(())
    }

    /// `madvise` on the shared mapping of `[gpa, gpa + len)` (inside one region).
    fn discard_shared(&self, gpa: u64, len: u64) -> Result<(), PrivateMemoryError> {
        let region = self.mem.find_region(GuestAddress(gpa)).ok_or(PrivateMemoryError::NotInOneRegion { gpa, len })?;
        let offset = gpa - region.start_addr().0;
        // A shared (file or shmem) mapping keeps its pages in the file: MADV_REMOVE frees
        // them; an anonymous private mapping drops them with MADV_DONTNEED.
        let (advice, call) = if region.flags() & libc::MAP_SHARED != 0 {
            (libc::MADV_REMOVE, "madvise(MADV_REMOVE)")
        } else {
            (libc::MADV_DONTNEED, "madvise(MADV_DONTNEED)")
        };
        // SAFETY: [offset, offset + len) is inside the region's mapping (the caller
        // clipped it to the region), which `self.mem` keeps mapped; dropping its pages
        // only changes their contents (to zeros, or the file's), which is what converting
        // to private means for the shared side.
        let ret = unsafe { libc::madvise(region.as_ptr().add(offset as usize).cast(), len as usize, advice) };
        if ret != 0 {
            return Err(PrivateMemoryError::Discard {
                side: "shared",
                call,
                gpa,
                len,
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(())
    }

    /// The host address of `[gpa, gpa + len)`, which must lie inside one region.
    pub fn host_address(&self, gpa: u64, len: u64) -> Result<*mut u8, PrivateMemoryError> {
        let region = self.mem.find_region(GuestAddress(gpa)).ok_or(PrivateMemoryError::NotInOneRegion { gpa, len })?;
        let offset = gpa - region.start_addr().0;
        if offset.checked_add(len).is_none_or(|e| e > region.len()) {
            return Err(PrivateMemoryError::NotInOneRegion { gpa, len });
        }
        // SAFETY: `offset` is inside the region's mapping (checked above).
        Ok(unsafe { region.as_ptr().add(offset as usize) })
    }

    /// Writes `bytes` at `gpa` through the shared mapping.
    pub fn write(&self, gpa: u64, bytes: &[u8]) -> Result<(), PrivateMemoryError> {
        self.mem.write_slice(bytes, GuestAddress(gpa)).map_err(|source| PrivateMemoryError::Write {
            gpa,
            len: bytes.len(),
            source,
        })
    }

    /// Reads `buf.len()` bytes at `gpa` through the shared mapping.
    pub fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), PrivateMemoryError> {
        self.mem.read_slice(buf, GuestAddress(gpa)).map_err(|source| PrivateMemoryError::Write {
            gpa,
            len: buf.len(),
            source,
        })
    }
}

/// `set` (sorted, disjoint, not adjacent) with `range` added (`shared`) or removed.
fn set_shared(set: Vec<GuestRange>, range: GuestRange, shared: bool) -> Vec<GuestRange> {
    let end = range.gpa.saturating_add(range.len);
    let mut out: Vec<GuestRange> = Vec::with_capacity(set.len() + 2);
    let push = |out: &mut Vec<GuestRange>, gpa: u64, end: u64| {
        if gpa >= end {
            return;
        }
        match out.last_mut() {
            Some(last) if last.gpa + last.len >= gpa => last.len = last.len.max(end - last.gpa),
            _ => out.push(GuestRange { gpa, len: end - gpa }),
        }
    };
    let mut pieces: Vec<(u64, u64)> = Vec::with_capacity(set.len() + 1);
    for r in &set {
        let r_end = r.gpa + r.len;
        // The parts of `r` outside `range`.
        pieces.push((r.gpa, r_end.min(range.gpa)));
        pieces.push((r.gpa.max(end), r_end));
    }
    if shared {
        pieces.push((range.gpa, end));
    }
    pieces.retain(|(a, b)| a < b);
    pieces.sort_unstable();
    for (a, b) in pieces {
        push(&mut out, a, b);
    }
    out
}

/// `fallocate(PUNCH_HOLE | KEEP_SIZE)` on the region's guest_memfd for `[gpa, gpa + len)`.
fn discard_private(r: &MemRegion, gpa: u64, len: u64) -> Result<(), PrivateMemoryError> {
    let offset = gpa - r.gpa;
    // SAFETY: fallocate on an fd this object owns; it reads no memory of ours.
    let ret = unsafe {
        libc::fallocate(
            r.gmem.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            offset as libc::off_t,
            len as libc::off_t,
        )
    };
    if ret != 0 {
        return Err(PrivateMemoryError::Discard {
            side: "private",
            call: "fallocate(PUNCH_HOLE) on the guest_memfd",
            gpa,
            len,
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvm_ioctls::Kvm;

    const RAM: [GuestRange; 2] =
        [GuestRange { gpa: 0, len: 0x8000_0000 }, GuestRange { gpa: 0x1_0000_0000, len: 0x4000_0000 }];

    fn args(gpa: u64, pages: u64, attributes: u64) -> [u64; 6] {
        [gpa, pages, attributes, 0, 0, 0]
    }

    #[test]
    fn map_gpa_range_to_private_and_to_shared() {
        let c = Conversion::from_hypercall(12, &args(0x10_0000, 2, KVM_MAP_GPA_RANGE_ENCRYPTED), &RAM).unwrap();
        assert_eq!(c, Conversion { gpa: 0x10_0000, len: 0x2000, to_private: true });

        let c = Conversion::from_hypercall(12, &args(0x20_0000, 512, KVM_MAP_GPA_RANGE_PAGE_SZ_2M), &RAM).unwrap();
        assert_eq!(c, Conversion { gpa: 0x20_0000, len: 0x20_0000, to_private: false });
    }

    #[test]
    fn other_hypercalls_are_not_conversions() {
        assert_eq!(Conversion::from_hypercall(5, &args(0, 1, 0), &RAM), Err(ConversionError::NotMapGpaRange { nr: 5 }));
    }

    #[test]
    fn empty_unaligned_wrapping_and_unknown_attribute_requests_are_rejected() {
        assert_eq!(
            Conversion::from_hypercall(12, &args(0x1000, 0, 0), &RAM),
            Err(ConversionError::Empty { gpa: 0x1000 })
        );
        assert_eq!(
            Conversion::from_hypercall(12, &args(0x1800, 1, 0), &RAM),
            Err(ConversionError::Unaligned { gpa: 0x1800, len: 0x1000 })
        );
        assert!(matches!(
            Conversion::from_hypercall(12, &args(0x1000, u64::MAX / 0x1000 + 1, 0), &RAM),
            Err(ConversionError::Overflow { .. })
        ));
        assert!(matches!(
            Conversion::from_hypercall(12, &args(0xffff_ffff_ffff_f000, 2, 0), &RAM),
            Err(ConversionError::Overflow { .. })
        ));
        assert_eq!(
            Conversion::from_hypercall(12, &args(0x1000, 1, 1 << 8), &RAM),
            Err(ConversionError::UnknownAttributes { attributes: 0x100 })
        );
        assert_eq!(
            Conversion::from_hypercall(12, &args(0x1000, 1, 3), &RAM),
            Err(ConversionError::UnknownAttributes { attributes: 3 })
        );
    }

    #[test]
    fn ranges_outside_or_straddling_the_end_of_ram_are_rejected() {
        // In the hole between the two ranges.
        assert_eq!(
            Conversion::from_hypercall(12, &args(0x9000_0000, 1, 0), &RAM),
            Err(ConversionError::OutsideRam { gpa: 0x9000_0000, len: 0x1000 })
        );
        // Last page of the first range plus one page of the hole.
        assert!(matches!(
            Conversion::from_hypercall(12, &args(0x7fff_f000, 2, 0), &RAM),
            Err(ConversionError::OutsideRam { .. })
        ));
        // The last page of RAM is fine, one more is not.
        assert!(Conversion::from_hypercall(12, &args(0x1_3fff_f000, 1, 0), &RAM).is_ok());
        assert!(Conversion::from_hypercall(12, &args(0x1_3fff_f000, 2, 0), &RAM).is_err());
    }

    #[test]
    fn ranges_over_adjacent_regions_are_inside_ram() {
        let ram = [GuestRange { gpa: 0x10_0000, len: 0x1000 }, GuestRange { gpa: 0, len: 0x10_0000 }];

        assert!(Conversion::from_hypercall(12, &args(0xf_f000, 2, 0), &ram).is_ok());
    }

    #[test]
    fn memory_faults_convert_to_the_accessed_kind() {
        let private = Conversion::from_memory_fault(u64::from(KVM_MEMORY_EXIT_FLAG_PRIVATE), 0x5000, 0x1000, &RAM);
        let shared = Conversion::from_memory_fault(0, 0x5000, 0x1000, &RAM);

        assert_eq!(private, Ok(Conversion { gpa: 0x5000, len: 0x1000, to_private: true }));
        assert_eq!(shared, Ok(Conversion { gpa: 0x5000, len: 0x1000, to_private: false }));
        assert_eq!(Conversion::from_memory_fault(0, 0x5000, 0, &RAM), Err(ConversionError::Empty { gpa: 0x5000 }));
        assert!(Conversion::from_memory_fault(0, 0x9000_0000, 0x1000, &RAM).is_err());
    }

    #[test]
    fn hypercall_ret_is_zero_or_minus_einval() {
        assert_eq!(hypercall_ret::<(), ()>(&Ok(())), 0);
        assert_eq!(hypercall_ret::<(), ()>(&Err(())), (-22i64) as u64);
    }

    /// A default VM (this host has no SNP VM type) with 2 MiB of RAM at 1 MiB,
    /// registered with guest_memfd slots.
    fn vm_with_memory() -> (VmFd, PrivateMemory) {
        let kvm = Kvm::new().unwrap();
        let vm = kvm.create_vm().unwrap();
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0x10_0000), 0x20_0000)]).unwrap();
        let snp = PrivateMemory::register(&vm, &mem, 0).unwrap();
        (vm, snp)
    }

    #[test]
    fn regions_get_one_guest_memfd_slot_each() {
        let (_vm, mem) = vm_with_memory();

        assert_eq!(mem.ranges(), [GuestRange { gpa: 0x10_0000, len: 0x20_0000 }]);
        assert_eq!(mem.slots(), [0]);
    }

    #[test]
    fn going_private_drops_the_shared_pages() {
        let (_vm, mem) = vm_with_memory();
        mem.write(0x10_1000, &[0xaa; 0x2000]).unwrap();

        mem.discard(&Conversion { gpa: 0x10_2000, len: 0x1000, to_private: true }).unwrap();

        let mut page = [0u8; 0x1000];
        mem.read(0x10_1000, &mut page).unwrap();
        assert_eq!(page, [0xaa; 0x1000], "the page before the range is kept");
        mem.read(0x10_2000, &mut page).unwrap();
        assert_eq!(page, [0; 0x1000], "the converted page's shared copy is gone");
    }

    #[test]
    fn going_shared_punches_the_guest_memfd() {
        let (_vm, mem) = vm_with_memory();

        let result = mem.discard(&Conversion { gpa: 0x20_0000, len: 0x10_0000, to_private: false });

        assert!(result.is_ok(), "{result:?}");
    }

    #[test]
    fn a_refused_attribute_change_discards_nothing() {
        // This host's KVM has no memory attributes (ENOTTY): the conversion must fail at
        // KVM_SET_MEMORY_ATTRIBUTES and leave the shared copy alone.
        let (vm, mem) = vm_with_memory();
        mem.write(0x10_0000, &[0x55; 0x1000]).unwrap();
        let c = Conversion { gpa: 0x10_0000, len: 0x1000, to_private: true };

        let result = mem.convert(&vm, &c);

        if let Err(err) = result {
            assert!(err.to_string().contains("KVM_SET_MEMORY_ATTRIBUTES (0x100000+0x1000 to private)"), "{err}");
            let mut page = [0u8; 0x1000];
            mem.read(0x10_0000, &mut page).unwrap();
            assert_eq!(page, [0x55; 0x1000]);
        }
    }

    #[test]
    fn a_map_gpa_range_exit_is_parsed_then_converted() {
        let (vm, mem) = vm_with_memory();

        let bad = mem.handle_map_gpa_range(&vm, 12, &[0x10_0800, 1, 0, 0, 0, 0]);
        let good = mem.handle_map_gpa_range(&vm, 12, &[0x10_0000, 1, KVM_MAP_GPA_RANGE_ENCRYPTED, 0, 0, 0]);

        assert!(matches!(bad, Err(PrivateMemoryError::Conversion(ConversionError::Unaligned { .. }))), "{bad:?}");
        assert_eq!(hypercall_ret(&bad), HYPERCALL_RET_EINVAL);
        // This host's KVM has no memory attributes: the valid request reaches
        // KVM_SET_MEMORY_ATTRIBUTES and fails there; on an SNP host it succeeds.
        match good {
            Ok(c) => assert_eq!(c, Conversion { gpa: 0x10_0000, len: 0x1000, to_private: true }),
            Err(e) => {
                assert!(matches!(e, PrivateMemoryError::Ioctl(GmemIoctlError::SetMemoryAttributes { .. })), "{e}")
            }
        }
    }

    #[test]
    fn conversions_outside_ram_are_refused_before_any_ioctl() {
        let (vm, mem) = vm_with_memory();

        let err = mem.convert(&vm, &Conversion { gpa: 0, len: 0x1000, to_private: true }).unwrap_err();

        assert!(matches!(err, PrivateMemoryError::Conversion(ConversionError::OutsideRam { .. })), "{err}");
    }

    #[test]
    fn host_address_is_refused_across_a_region_end() {
        let (_vm, mem) = vm_with_memory();

        assert!(mem.host_address(0x10_0000, 0x20_0000).is_ok());
        assert!(matches!(mem.host_address(0x2f_f000, 0x2000), Err(PrivateMemoryError::NotInOneRegion { .. })));
        assert!(matches!(mem.host_address(0x1000, 0x1000), Err(PrivateMemoryError::NotInOneRegion { .. })));
    }

    #[test]
    fn guest_memfd_and_a_guest_memfd_slot_work_on_a_default_vm() {
        // The host's KVM accepts both for the default VM type (HOST-KVM.md), so the
        // request numbers and argument structures are the kernel's.
        let kvm = Kvm::new().unwrap();
        let vm = kvm.create_vm().unwrap();
        let gmem = create_guest_memfd(&vm, 0x10000, 0).unwrap();
        // SAFETY: an anonymous mapping of 64 KiB, unmapped after the VM is dropped below.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                0x10000,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(addr, libc::MAP_FAILED);
        let region = kvm_userspace_memory_region2 {
            slot: 0,
            flags: KVM_MEM_GUEST_MEMFD,
            guest_phys_addr: 0x10_0000,
            memory_size: 0x10000,
            userspace_addr: addr as u64,
            guest_memfd_offset: 0,
            guest_memfd: gmem.as_raw_fd() as u32,
            ..Default::default()
        };

        // SAFETY: the mapping covers the slot and outlives the VM (unmapped below).
        unsafe { set_user_memory_region2(&vm, region) }.unwrap();

        let err = create_guest_memfd(&vm, 0x1001, 0).unwrap_err();
        assert_eq!(err.errno(), libc::EINVAL, "an unaligned size is refused: {err}");
        assert!(err.to_string().starts_with("KVM_CREATE_GUEST_MEMFD (0x1001 bytes) failed"), "{err}");
        drop(vm);
        // SAFETY: the mapping made above, no longer used by any VM.
        assert_eq!(unsafe { libc::munmap(addr, 0x10000) }, 0);
    }

    fn r(gpa: u64, len: u64) -> GuestRange {
        GuestRange { gpa, len }
    }

    #[test]
    fn shared_ranges_are_added_merged_and_removed() {
        let set = set_shared(vec![], r(0x1000, 0x1000), true);
        let set = set_shared(set, r(0x3000, 0x1000), true);
        assert_eq!(set, [r(0x1000, 0x1000), r(0x3000, 0x1000)]);

        let merged = set_shared(set.clone(), r(0x2000, 0x1000), true);
        assert_eq!(merged, [r(0x1000, 0x3000)], "adjacent ranges become one");

        let holed = set_shared(merged, r(0x2000, 0x1000), false);
        assert_eq!(holed, [r(0x1000, 0x1000), r(0x3000, 0x1000)]);
        let trimmed = set_shared(holed, r(0x0, 0x1800), false);
        assert_eq!(trimmed, [r(0x1800, 0x800), r(0x3000, 0x1000)]);
        assert_eq!(set_shared(trimmed, r(0, 0x10_0000), false), []);
        assert_eq!(set_shared(set, r(0x5000, 0x1000), false), [r(0x1000, 0x1000), r(0x3000, 0x1000)]);
    }

    #[test]
    fn memory_starts_shared_and_conversions_are_recorded() {
        let (vm, mem) = vm_with_memory();

        assert!(mem.is_shared(0x10_0000, 0x20_0000), "KVM creates slots with no attribute: shared");
        assert!(!mem.is_shared(0x0, 0x1000), "not RAM");
        assert!(!mem.is_shared(0x2f_f000, 0x2000), "runs past the end of RAM");
        assert!(!mem.is_shared(0x10_0000, 0), "empty");
        assert!(!mem.is_shared(u64::MAX - 0xfff, 0x2000), "wraps");
        // This host's KVM has no memory attributes: the conversion fails at
        // KVM_SET_MEMORY_ATTRIBUTES and the record must not change; where KVM takes it,
        // the page is private afterwards.
        let result = mem.convert(&vm, &Conversion { gpa: 0x10_1000, len: 0x1000, to_private: true });
        match result {
            Ok(()) => {
                assert!(!mem.is_shared(0x10_1000, 0x1000));
                assert!(mem.is_shared(0x10_0000, 0x1000) && mem.is_shared(0x10_2000, 0x1000));
            }
            Err(_) => assert!(mem.is_shared(0x10_0000, 0x20_0000)),
        }
    }
}
