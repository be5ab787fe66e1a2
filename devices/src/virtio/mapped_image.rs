//! A disk image mapped into the VMM (`MAP_SHARED`), so virtio-blk moves sector data with
//! one memcpy between guest memory and the page cache instead of going through
//! `preadv`/`pwritev`, whose per-page work on Linux costs about two memcpys of the same
//! bytes (docs/devices.md, "Performance").
//!
//! A mapped file reports I/O errors as SIGBUS instead of an error code: a page the disk
//! cannot read, a write into a hole of a sparse image on a full file system, an image
//! shrunk by another process. A process-wide SIGBUS handler turns those into errors: when
//! the faulting address is inside a registered mapping, it maps an anonymous page over
//! the faulting page (the interrupted copy then completes into or from that page, to no
//! effect on the image) and counts the fault. [`MappedImage::copy`] sees the count, maps
//! the file back over what it touched, and fails, so the request gets
//! VIRTIO_BLK_S_IOERR as it would from `pwritev`. A fault anywhere else goes to the
//! disposition that was there before (Rust's stack-overflow handler, or the default
//! action), exactly as if this handler did not exist.
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{compiler_fence, AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;

use vm_memory::VolatileSlice;

/// Most images mapped at once; more are served with `preadv`/`pwritev`.
const SLOTS: usize = 64;

/// A registered mapping, as the signal handler reads it (only atomics: the handler may
/// run at any point of the owning thread).
struct Slot {
    claimed: AtomicBool,
    /// Start address; 0 while the slot is free.
    start: AtomicUsize,
    len: AtomicUsize,
    /// SIGBUS faults the handler absorbed in this mapping.
    faults: AtomicUsize,
}

impl Slot {
    const fn new() -> Self {
        Self {
            claimed: AtomicBool::new(false),
            start: AtomicUsize::new(0),
            len: AtomicUsize::new(0),
            faults: AtomicUsize::new(0),
        }
    }
}

static REGISTRY: [Slot; SLOTS] = [const { Slot::new() }; SLOTS];

/// What the handler forwards foreign faults to, recorded once when it is installed; `None`
/// if it could not be installed (then nothing is mapped).
static PREVIOUS: OnceLock<Option<Previous>> = OnceLock::new();

/// The SIGBUS disposition found before ours.
struct Previous {
    action: libc::sigaction,
}

// SAFETY: a `sigaction` is plain data (a function address, flags and a signal mask); it
// is written once before the handler is installed and only read afterwards.
unsafe impl Sync for Previous {}
// SAFETY: as above; nothing in it is tied to a thread.
unsafe impl Send for Previous {}

fn page_size() -> usize {
    static PAGE: OnceLock<usize> = OnceLock::new();
    // SAFETY: sysconf has no memory-safety preconditions.
    *PAGE.get_or_init(|| usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096))
}

/// Installs the SIGBUS handler (once per process); false if it could not be.
fn install_handler() -> bool {
    let previous = PREVIOUS.get_or_init(|| {
        page_size(); // computed here, never in the handler
                     // SAFETY: `old` and `new` are valid sigaction structs that outlive the calls; the
                     // handler installed is `on_sigbus`, an `extern "C"` function with the SA_SIGINFO
                     // signature that touches only atomics, the previous disposition (initialized
                     // before the handler can run, since `old` is read first) and async-signal-safe
                     // system calls.
        unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(libc::SIGBUS, std::ptr::null(), &mut old) != 0 {
                return None;
            }
            let mut new: libc::sigaction = std::mem::zeroed();
            new.sa_sigaction = on_sigbus as *const () as libc::sighandler_t;
            new.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            libc::sigemptyset(&mut new.sa_mask);
            if libc::sigaction(libc::SIGBUS, &new, std::ptr::null_mut()) != 0 {
                return None;
            }
            Some(Previous { action: old })
        }
    });
    previous.is_some()
}

/// The SIGBUS handler: absorbs faults inside registered mappings, forwards the rest.
extern "C" fn on_sigbus(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: errno is thread-local; saving and restoring it keeps the interrupted code's
    // value intact across the system calls below.
    let errno = unsafe { *libc::__errno_location() };
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler; for SIGBUS
    // si_addr is the faulting address.
    let addr = unsafe { (*info).si_addr() } as usize;
    let page = page_size();
    for slot in &REGISTRY {
        let start = slot.start.load(Ordering::Acquire);
        if start == 0 || addr < start || addr - start >= slot.len.load(Ordering::Acquire) {
            continue;
        }
        // SAFETY: the page lies inside a mapping this module created and still owns (the
        // slot is cleared before the mapping is unmapped); replacing it with an anonymous
        // page changes no memory Rust code holds references to (the image is only ever
        // accessed through raw copies). mmap is a plain system call, safe in a handler.
        let patched = unsafe {
            libc::mmap(
                (addr & !(page - 1)) as *mut libc::c_void,
                page,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        if patched != libc::MAP_FAILED {
            slot.faults.fetch_add(1, Ordering::AcqRel);
            // SAFETY: see above.
            unsafe { *libc::__errno_location() = errno };
            return;
        }
        break;
    }
    // SAFETY: see above.
    unsafe { *libc::__errno_location() = errno };
    forward(sig, info, ctx);
}

/// Hands a fault that is not ours to the previous disposition: calls its handler, or
/// restores the default action and returns, so that the faulting access repeats and
/// ends the process as it would have without this module.
fn forward(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    let previous = PREVIOUS.get().and_then(Option::as_ref);
    let handler = previous.map_or(libc::SIG_DFL, |p| p.action.sa_sigaction);
    if handler != libc::SIG_DFL && handler != libc::SIG_IGN {
        let flags = previous.map_or(0, |p| p.action.sa_flags);
        if flags & libc::SA_SIGINFO != 0 {
            // SAFETY: the previous disposition was installed with SA_SIGINFO, so its
            // handler has this signature; it gets the arguments the kernel gave us.
            let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                unsafe { std::mem::transmute(handler) };
            f(sig, info, ctx);
        } else {
            // SAFETY: without SA_SIGINFO a handler takes the signal number only.
            let f: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(handler) };
            f(sig);
        }
        return;
    }
    // SAFETY: restoring SIG_DFL with a zeroed, valid sigaction; sigaction is
    // async-signal-safe.
    unsafe {
        let mut dfl: libc::sigaction = std::mem::zeroed();
        dfl.sa_sigaction = libc::SIG_DFL;
        libc::sigaction(libc::SIGBUS, &dfl, std::ptr::null_mut());
    }
}

/// An image file mapped shared, read-only or read-write.
pub(crate) struct MappedImage {
    base: *mut u8,
    /// Bytes that may be accessed (the disk's size).
    len: usize,
    /// Bytes mapped (`len` rounded up to whole pages).
    mapped: usize,
    writable: bool,
    /// The image (a duplicate descriptor), to map back after a fault.
    file: File,
    slot: usize,
    /// A fault's anonymous page could not be replaced by the file again: the mapping no
    /// longer shows the image and must not be used.
    broken: AtomicBool,
}

// SAFETY: the mapping belongs to this value alone and lives until it is dropped; it is
// plain memory any thread may access, and the registry slot is process-wide.
unsafe impl Send for MappedImage {}

impl std::fmt::Debug for MappedImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MappedImage").field("len", &self.len).field("writable", &self.writable).finish()
    }
}

impl MappedImage {
    /// Maps the first `len` bytes of `file`. `None` when it cannot be mapped (an
    /// empty image, a file that has no mmap, no address space, no free slot, no SIGBUS
    /// handler) or should not be (a sparse file on tmpfs: reading a hole through a
    /// mapping allocates a page of tmpfs memory, where `preadv` reads zeros for free):
    /// the caller then uses `preadv`/`pwritev`.
    pub(crate) fn new(file: &File, len: u64, writable: bool) -> Option<Self> {
        if sparse_on_tmpfs(file) {
            log::debug!("virtio-blk: the image is a sparse file on tmpfs; using preadv/pwritev");
            return None;
        }
        let len = usize::try_from(len).ok().filter(|&l| l > 0)?;
        let mapped = len.checked_next_multiple_of(page_size())?;
        if !install_handler() {
            return None;
        }
        let slot = REGISTRY
            .iter()
            .position(|s| s.claimed.compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire).is_ok())?;
        let Ok(file) = file.try_clone() else {
            REGISTRY[slot].claimed.store(false, Ordering::Release);
            return None;
        };
        let fd = file.as_raw_fd();
        let prot = libc::PROT_READ | if writable { libc::PROT_WRITE } else { 0 };
        // SAFETY: a fresh shared mapping of an open file chosen by the kernel; it overlaps
        // nothing that exists.
        let base = unsafe { libc::mmap(std::ptr::null_mut(), mapped, prot, libc::MAP_SHARED, fd, 0) };
        if base == libc::MAP_FAILED {
            log::debug!(
                "virtio-blk: the image cannot be mapped ({}); using preadv/pwritev",
                io::Error::last_os_error()
            );
            REGISTRY[slot].claimed.store(false, Ordering::Release);
            return None;
        }
        let r = &REGISTRY[slot];
        r.faults.store(0, Ordering::Release);
        r.len.store(len, Ordering::Release);
        r.start.store(base as usize, Ordering::Release);
        Some(Self { base: base.cast(), len, mapped, writable, file, slot, broken: AtomicBool::new(false) })
    }

    /// Whether the mapping still shows the image.
    pub(crate) fn usable(&self) -> bool {
        !self.broken.load(Ordering::Relaxed)
    }

    /// Copies between the image from byte `offset` and `slices` (guest memory, in
    /// order): into the image when `write`, else out of it. Fails with EIO when any page
    /// of the image faulted (its bytes did not move); a write must only be asked of a
    /// writable mapping.
    pub(crate) fn copy(&self, write: bool, offset: u64, slices: &[VolatileSlice<'_>]) -> io::Result<()> {
        let total: usize = slices.iter().map(VolatileSlice::len).sum();
        let start = usize::try_from(offset).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        self.copy_iter(write, start, total, slices.iter().copied())
    }

    /// [`MappedImage::copy`] of `slices`, which together hold `total` bytes, from or
    /// to byte `start`; a slice that would go past `start + total` fails the copy
    /// there with InvalidInput (the slices before it were copied).
    pub(crate) fn copy_iter<'s>(
        &self,
        write: bool,
        start: usize,
        total: usize,
        slices: impl Iterator<Item = VolatileSlice<'s>>,
    ) -> io::Result<()> {
        let end = start.checked_add(total).filter(|&end| end <= self.len);
        let Some(end) = end.filter(|_| (!write || self.writable) && self.usable()) else {
            return Err(io::ErrorKind::InvalidInput.into());
        };
        let faults = &REGISTRY[self.slot].faults;
        let before = faults.load(Ordering::Acquire);
        let mut at = start;
        let mut result = Ok(());
        for s in slices {
            if s.len() > end - at {
                result = Err(io::ErrorKind::InvalidInput.into());
                break;
            }
            // SAFETY: `at..at + s.len()` lies within the first `len` bytes of the
            // mapping (`at + s.len() <= end <= len`, checked above), which stays mapped
            // while `self` lives; the image is shared with other processes and the
            // guest, so it is only accessed through volatile-slice copies, never
            // through references.
            let image = unsafe { VolatileSlice::new(self.base.add(at), s.len()) };
            if write {
                s.copy_to_volatile_slice(image);
            } else {
                image.copy_to_volatile_slice(s);
            }
            at += s.len();
        }
        // The handler runs on this thread, inside the copies: keep the compiler from
        // moving the copies past the check.
        compiler_fence(Ordering::SeqCst);
        if faults.load(Ordering::Acquire) == before {
            return result;
        }
        self.restore(start, total);
        Err(io::Error::from_raw_os_error(libc::EIO))
    }

    /// Runs `access` on the address of the `size`-byte, `size`-aligned word at byte
    /// `offset` of the mapping; fails with InvalidInput when the word is not within the
    /// accessible bytes or not aligned (or a store is asked of a read-only mapping), and
    /// with EIO when the access faulted (then its result is discarded).
    fn word<T>(&self, offset: usize, size: usize, store: bool, access: impl FnOnce(*mut u8) -> T) -> io::Result<T> {
        if !offset.is_multiple_of(size)
            || offset.checked_add(size).is_none_or(|end| end > self.len)
            || (store && !self.writable)
            || !self.usable()
        {
            return Err(io::ErrorKind::InvalidInput.into());
        }
        let faults = &REGISTRY[self.slot].faults;
        let before = faults.load(Ordering::Acquire);
        // SAFETY: `offset + size <= len`: the address is inside the mapping.
        let value = access(unsafe { self.base.add(offset) });
        compiler_fence(Ordering::SeqCst);
        if faults.load(Ordering::Acquire) == before {
            return Ok(value);
        }
        self.restore(offset, size);
        Err(io::Error::from_raw_os_error(libc::EIO))
    }

    /// Loads the 8-byte-aligned 64-bit word at byte `offset` atomically (the mapping's
    /// memory order is the CPU's, little-endian on x86_64).
    pub(crate) fn load_u64(&self, offset: usize, order: Ordering) -> io::Result<u64> {
        // SAFETY: `word` passes an 8-aligned address inside the mapping, which lives as
        // long as `self`; other processes may write it at any time, so it is only
        // accessed atomically here (never through a plain reference).
        self.word(offset, 8, false, |p| unsafe { AtomicU64::from_ptr(p.cast()) }.load(order))
    }

    /// Stores `value` atomically into the 8-byte-aligned 64-bit word at byte `offset`.
    pub(crate) fn store_u64(&self, offset: usize, value: u64, order: Ordering) -> io::Result<()> {
        // SAFETY: as in `load_u64`; the mapping is writable (checked by `word`).
        self.word(offset, 8, true, |p| unsafe { AtomicU64::from_ptr(p.cast()) }.store(value, order))
    }

    /// Loads the 4-byte-aligned 32-bit word at byte `offset` atomically.
    pub(crate) fn load_u32(&self, offset: usize, order: Ordering) -> io::Result<u32> {
        // SAFETY: as in `load_u64`, for a 4-aligned address.
        self.word(offset, 4, false, |p| unsafe { AtomicU32::from_ptr(p.cast()) }.load(order))
    }

    /// Stores `value` atomically into the 4-byte-aligned 32-bit word at byte `offset`.
    pub(crate) fn store_u32(&self, offset: usize, value: u32, order: Ordering) -> io::Result<()> {
        // SAFETY: as in `store_u64`, for a 4-aligned address.
        self.word(offset, 4, true, |p| unsafe { AtomicU32::from_ptr(p.cast()) }.store(value, order))
    }

    /// Maps the file back over `start..start + len` (whole pages), replacing the
    /// anonymous pages faults left there; if that fails, the mapping is not used again.
    fn restore(&self, start: usize, len: usize) {
        let page = page_size();
        let first = start & !(page - 1);
        let end = (start + len).next_multiple_of(page).min(self.mapped);
        let prot = libc::PROT_READ | if self.writable { libc::PROT_WRITE } else { 0 };
        // SAFETY: `first..end` lies inside this value's own mapping; the new mapping of
        // the same file at the same offsets replaces exactly those pages.
        let remapped = unsafe {
            libc::mmap(
                self.base.add(first).cast(),
                end - first,
                prot,
                libc::MAP_SHARED | libc::MAP_FIXED,
                self.file.as_raw_fd(),
                first as libc::off_t,
            )
        };
        if remapped == libc::MAP_FAILED {
            log::error!("virtio-blk: cannot map the image back after a fault: {}", io::Error::last_os_error());
            self.broken.store(true, Ordering::Relaxed);
        }
    }
}

/// Whether `file` is on tmpfs and has fewer blocks than its size needs.
fn sparse_on_tmpfs(file: &File) -> bool {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: an all-zero statfs is a valid buffer for fstatfs to fill.
    let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `file` is open and `fs` is a valid, exclusively borrowed statfs.
    if unsafe { libc::fstatfs(file.as_raw_fd(), &mut fs) } != 0 || fs.f_type as i64 != TMPFS_MAGIC {
        return false;
    }
    file.metadata().is_ok_and(|m| m.blocks().saturating_mul(512) < m.size())
}

/// `f_type` of tmpfs (linux/magic.h).
const TMPFS_MAGIC: i64 = 0x0102_1994;

impl Drop for MappedImage {
    fn drop(&mut self) {
        let r = &REGISTRY[self.slot];
        r.start.store(0, Ordering::Release);
        r.len.store(0, Ordering::Release);
        // SAFETY: the mapping was created by `new` with this address and length and is
        // no longer reachable: the slot is cleared and `self` is going away.
        unsafe { libc::munmap(self.base.cast(), self.mapped) };
        r.claimed.store(false, Ordering::Release);
    }
}
