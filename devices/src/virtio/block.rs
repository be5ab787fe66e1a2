//! virtio-blk: a raw disk image file served to the guest with positioned reads and
//! writes, flush, GET_ID and (where the host file system can punch holes) discard.
//!
//! Hostile input: each request header is fetched once into a host struct before it is
//! checked; sector ranges that overflow or leave the disk, and lengths that are not
//! whole sectors, get VIRTIO_BLK_S_IOERR; unknown request types get
//! VIRTIO_BLK_S_UNSUPP; a chain too short to hold a header, or with no status byte, is
//! completed with used length 0 without touching memory; data in private (or no)
//! memory fails the request. Data moves with one `preadv`/`pwritev` per request between
//! the image and iovecs that point straight into the shared-memory view (never a
//! private page); the VMM allocates only per descriptor, never per byte the guest asks for.

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};
use thiserror::Error;
use virtio_queue::{DescriptorChain, Queue, QueueT};
use vm_memory::volatile_memory::{PtrGuard, PtrGuardMut};
use vm_memory::{
    GuestAddress, GuestAddressSpace, GuestMemoryBackend, GuestMemoryError, GuestRegionCollection, VolatileSlice,
};
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::fallocate::{fallocate, FallocateMode};

use super::shared_memory::SharedRegion;
use super::{device_id, ActivateContext, ActivateError, GuestMem, VirtioDevice, VirtioInterrupt};

/// Queue size.
pub const QUEUE_SIZE: u16 = 256;
/// Bytes per sector (the unit of `capacity` and of request sectors).
pub const SECTOR_SIZE: u64 = 512;
/// Length of the GET_ID answer (the serial number).
pub const ID_BYTES: usize = 20;
/// A large-request size the tests step over. Data no longer moves through a buffer of
/// this size: each request is one `preadv`/`pwritev` straight into guest memory.
pub const CHUNK: usize = 64 << 10;
/// Data segments per request advertised in `seg_max` (the queue minus header and status).
pub const SEG_MAX: u32 = QUEUE_SIZE as u32 - 2;
/// Most sectors one discard segment may cover (`max_discard_sectors`).
pub const MAX_DISCARD_SECTORS: u32 = 1 << 22;
/// Most segments one discard request may carry (`max_discard_seg`).
pub const MAX_DISCARD_SEG: u32 = 16;
/// Discard granularity hint in sectors (`discard_sector_alignment`): 4 KiB.
pub const DISCARD_SECTOR_ALIGNMENT: u32 = 8;
/// Size of `struct virtio_blk_config` up to and including the discard fields.
pub const CONFIG_SIZE: usize = 48;

/// virtio-blk feature bits (virtio 1.2, 5.2.3).
pub mod features {
    /// VIRTIO_BLK_F_SEG_MAX: `seg_max` is valid.
    pub const SEG_MAX: u64 = 1 << 2;
    /// VIRTIO_BLK_F_RO: the device is read-only.
    pub const RO: u64 = 1 << 5;
    /// VIRTIO_BLK_F_BLK_SIZE: `blk_size` is valid.
    pub const BLK_SIZE: u64 = 1 << 6;
    /// VIRTIO_BLK_F_FLUSH: the FLUSH request is supported.
    pub const FLUSH: u64 = 1 << 9;
    /// VIRTIO_BLK_F_DISCARD: the DISCARD request is supported.
    pub const DISCARD: u64 = 1 << 13;
}

/// Request types (virtio 1.2, 5.2.6).
pub mod request_type {
    /// Read.
    pub const IN: u32 = 0;
    /// Write.
    pub const OUT: u32 = 1;
    /// Flush the write cache.
    pub const FLUSH: u32 = 4;
    /// Read the device serial number.
    pub const GET_ID: u32 = 8;
    /// Discard sectors.
    pub const DISCARD: u32 = 11;
}

/// Request status values (the last byte of each request).
pub mod status {
    /// Success.
    pub const OK: u8 = 0;
    /// Device or driver error.
    pub const IOERR: u8 = 1;
    /// Request unsupported.
    pub const UNSUPP: u8 = 2;
}

/// Errors from setting up a block device.
#[derive(Debug, Error)]
pub enum BlockError {
    /// The image file could not be opened.
    #[error("cannot open the disk image {path}: {source}")]
    Open {
        /// The image.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The size of the image could not be read.
    #[error("cannot read the size of the disk image: {0}")]
    Size(#[source] io::Error),
}

/// How the image is presented to the guest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlockOptions {
    /// Refuse writes and discards, and offer VIRTIO_BLK_F_RO.
    pub read_only: bool,
    /// The serial number GET_ID returns (truncated to [`ID_BYTES`], zero-padded).
    pub id: String,
}

/// The request header (`struct virtio_blk_req` prefix), parsed from one 16-byte fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RequestHeader {
    request_type: u32,
    sector: u64,
}

impl RequestHeader {
    fn parse(raw: [u8; 16]) -> Self {
        let mut t = [0u8; 4];
        let mut s = [0u8; 8];
        t.copy_from_slice(&raw[0..4]);
        s.copy_from_slice(&raw[8..16]);
        // raw[4..8] is `reserved` (ioprio in legacy drivers): ignored.
        Self { request_type: u32::from_le_bytes(t), sector: u64::from_le_bytes(s) }
    }
}

/// One discard segment (`struct virtio_blk_discard_write_zeroes`).
#[derive(Debug, Clone, Copy)]
struct DiscardSegment {
    sector: u64,
    num_sectors: u32,
    flags: u32,
}

impl DiscardSegment {
    fn parse(raw: [u8; 16]) -> Self {
        let mut s = [0u8; 8];
        let mut n = [0u8; 4];
        let mut f = [0u8; 4];
        s.copy_from_slice(&raw[0..8]);
        n.copy_from_slice(&raw[8..12]);
        f.copy_from_slice(&raw[12..16]);
        Self { sector: u64::from_le_bytes(s), num_sectors: u32::from_le_bytes(n), flags: u32::from_le_bytes(f) }
    }
}

/// The backing image and what the device may do with it.
struct Disk {
    file: File,
    read_only: bool,
    /// Size in bytes: a whole number of sectors.
    size: u64,
    id: [u8; ID_BYTES],
    can_discard: bool,
}

type Mem = GuestRegionCollection<SharedRegion>;

impl Disk {
    /// The byte offset of `len` bytes at `sector`, if that range is whole sectors on the disk.
    fn range(&self, sector: u64, len: usize) -> Option<u64> {
        let len = u64::try_from(len).ok()?;
        if len % SECTOR_SIZE != 0 {
            return None;
        }
        let offset = sector.checked_mul(SECTOR_SIZE)?;
        let end = offset.checked_add(len)?;
        (end <= self.size).then_some(offset)
    }

    /// Carries out one request whose header was already fetched: `body` is what the
    /// driver wrote after the header, `data` the writable buffers before the status
    /// byte. Returns the status and how many bytes of `data` were written.
    fn execute(&self, header: RequestHeader, discard: bool, body: &GuestBufs<'_>, data: &GuestBufs<'_>) -> (u8, usize) {
        match header.request_type {
            request_type::IN => match self.read(header.sector, data) {
                status::OK => (status::OK, data.len()),
                st => (st, 0),
            },
            request_type::OUT => (self.write(header.sector, body), 0),
            request_type::FLUSH => (self.flush(), 0),
            request_type::GET_ID => {
                let n = data.len().min(ID_BYTES);
                if data.copy_from(&self.id[..n]) {
                    (status::OK, n)
                } else {
                    (status::IOERR, 0)
                }
            }
            request_type::DISCARD if discard => (self.discard(body), 0),
            _ => (status::UNSUPP, 0),
        }
    }

    /// Reads the sectors at `sector` straight into `data` (one `preadv`).
    fn read(&self, sector: u64, data: &GuestBufs<'_>) -> u8 {
        let len = data.len();
        let Some(offset) = self.range(sector, len).filter(|_| len > 0) else {
            log::debug!("virtio-blk: read of {len} bytes at sector {sector} refused");
            return status::IOERR;
        };
        let guards: Vec<PtrGuardMut> = data.slices.iter().map(VolatileSlice::ptr_guard_mut).collect();
        let iov: Vec<libc::iovec> =
            guards.iter().map(|g| libc::iovec { iov_base: g.as_ptr().cast(), iov_len: g.len() }).collect();
        let fd = self.file.as_raw_fd();
        let step = transfer_all(iov, offset, |iov, at| {
            #[allow(unsafe_code)]
            // SAFETY: every iovec points into a VolatileSlice of the shared-memory view
            // (only shared guest pages) whose mapping is kept alive by the view snapshot
            // the caller holds and by `guards`, both outliving this call, and each
            // iovec's length is within its slice. The kernel writes at most those
            // bytes; no Rust reference to them exists, so the guest changing them
            // concurrently is harmless for raw byte I/O.
            let n = unsafe { libc::preadv(fd, iov.as_ptr(), iov.len() as libc::c_int, at) };
            usize::try_from(n).map_err(|_| io::Error::last_os_error())
        });
        if let Err(e) = step {
            log::warn!("virtio-blk: read of {len} bytes at byte {offset}: {e}");
            return status::IOERR;
        }
        status::OK
    }

    /// Writes `data` (what follows the header) to the sectors at `sector` (one `pwritev`).
    fn write(&self, sector: u64, data: &GuestBufs<'_>) -> u8 {
        let len = data.len();
        if self.read_only {
            return status::IOERR;
        }
        let Some(offset) = self.range(sector, len).filter(|_| len > 0) else {
            log::debug!("virtio-blk: write of {len} bytes at sector {sector} refused");
            return status::IOERR;
        };
        let guards: Vec<PtrGuard> = data.slices.iter().map(VolatileSlice::ptr_guard).collect();
        let iov: Vec<libc::iovec> =
            guards.iter().map(|g| libc::iovec { iov_base: g.as_ptr().cast_mut().cast(), iov_len: g.len() }).collect();
        let fd = self.file.as_raw_fd();
        let step = transfer_all(iov, offset, |iov, at| {
            #[allow(unsafe_code)]
            // SAFETY: every iovec points into a VolatileSlice of the shared-memory view
            // (only shared guest pages) whose mapping is kept alive by the view snapshot
            // the caller holds and by `guards`, both outliving this call, and each
            // iovec's length is within its slice. pwritev only reads those bytes; the
            // guest changing them concurrently only changes what lands on the disk,
            // which the guest controls anyway.
            let n = unsafe { libc::pwritev(fd, iov.as_ptr(), iov.len() as libc::c_int, at) };
            usize::try_from(n).map_err(|_| io::Error::last_os_error())
        });
        if let Err(e) = step {
            log::warn!("virtio-blk: write of {len} bytes at byte {offset}: {e}");
            return status::IOERR;
        }
        status::OK
    }

    fn flush(&self) -> u8 {
        if self.read_only {
            return status::OK; // nothing was written through this device
        }
        match self.file.sync_data() {
            Ok(()) => status::OK,
            Err(e) => {
                log::warn!("virtio-blk: flush: {e}");
                status::IOERR
            }
        }
    }

    fn discard(&self, body: &GuestBufs<'_>) -> u8 {
        if self.read_only {
            return status::IOERR;
        }
        let len = body.len();
        let count = len / 16;
        if count == 0 || count * 16 != len || count > MAX_DISCARD_SEG as usize {
            return status::IOERR;
        }
        // Fetch every segment once, check them all, then act.
        let mut raw = [0u8; 16 * MAX_DISCARD_SEG as usize];
        if !body.copy_to(&mut raw[..len]) {
            return status::IOERR;
        }
        let segments: Vec<DiscardSegment> = raw[..len]
            .chunks_exact(16)
            .map(|c| {
                let mut seg = [0u8; 16];
                seg.copy_from_slice(c);
                DiscardSegment::parse(seg)
            })
            .collect();
        let mut ranges = Vec::with_capacity(count);
        for seg in &segments {
            if seg.flags != 0 {
                return status::UNSUPP; // the unmap flag and unknown flags (5.2.6.2)
            }
            let bytes = usize::try_from(u64::from(seg.num_sectors) * SECTOR_SIZE).ok();
            let offset = bytes
                .filter(|_| seg.num_sectors <= MAX_DISCARD_SECTORS)
                .and_then(|b| self.range(seg.sector, b).map(|o| (o, b as u64)));
            match offset {
                Some(r) => ranges.push(r),
                None => return status::IOERR,
            }
        }
        for (offset, len) in ranges {
            if len == 0 {
                continue;
            }
            if let Err(e) = fallocate(&self.file, FallocateMode::PunchHole, true, offset, len) {
                log::warn!("virtio-blk: discard {offset:#x}+{len:#x}: {e}");
                return if e.errno() == EOPNOTSUPP { status::UNSUPP } else { status::IOERR };
            }
        }
        status::OK
    }
}

/// EOPNOTSUPP on Linux, named here rather than adding a libc dependency for one constant.
const EOPNOTSUPP: i32 = 95;

struct Active {
    mem: GuestMem,
    queue: Queue,
    interrupt: VirtioInterrupt,
    acked_features: u64,
}

/// The virtio-blk device.
pub struct Block {
    disk: Disk,
    features: u64,
    config: [u8; CONFIG_SIZE],
    queue_event: EventFd,
    active: Option<Active>,
    completed: u64,
    failed: u64,
}

impl std::fmt::Debug for Block {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Block")
            .field("size", &self.disk.size)
            .field("read_only", &self.disk.read_only)
            .field("active", &self.active.is_some())
            .finish()
    }
}

/// How one request ended.
enum Outcome {
    /// A status byte was written; `used` bytes in all (data written plus the status).
    Done { status: u8, used: u32 },
    /// Nothing could be answered (no status byte, short header, unreachable memory).
    Dropped,
}

impl Block {
    /// Opens `path` (read-only when `options.read_only`) and serves it, woken by
    /// `queue_event`.
    pub fn open(path: &Path, options: BlockOptions, queue_event: EventFd) -> Result<Self, BlockError> {
        let file = OpenOptions::new()
            .read(true)
            .write(!options.read_only)
            .open(path)
            .map_err(|source| BlockError::Open { path: path.to_owned(), source })?;
        Self::new(file, options, queue_event)
    }

    /// Serves the already opened image `file`, woken by `queue_event`. The capacity is
    /// the file's size in whole sectors (a partial last sector is not visible). Discard
    /// is offered only for a writable image on a file system that punches holes.
    pub fn new(file: File, options: BlockOptions, queue_event: EventFd) -> Result<Self, BlockError> {
        // Seeking finds the size of block devices too (their metadata length is 0).
        let len = (&file).seek(SeekFrom::End(0)).map_err(BlockError::Size)?;
        if len % SECTOR_SIZE != 0 {
            log::warn!("virtio-blk: image is {len} bytes; the last partial sector is not visible");
        }
        let size = len - len % SECTOR_SIZE;
        let can_discard = !options.read_only && punch_hole_supported(&file, len);
        let mut id = [0u8; ID_BYTES];
        let n = options.id.len().min(ID_BYTES);
        id[..n].copy_from_slice(&options.id.as_bytes()[..n]);

        let mut features = features::SEG_MAX | features::BLK_SIZE | features::FLUSH;
        if options.read_only {
            features |= features::RO;
        }
        if can_discard {
            features |= features::DISCARD;
        }
        let mut config = [0u8; CONFIG_SIZE];
        config[0..8].copy_from_slice(&(size / SECTOR_SIZE).to_le_bytes());
        config[12..16].copy_from_slice(&SEG_MAX.to_le_bytes());
        config[20..24].copy_from_slice(&(SECTOR_SIZE as u32).to_le_bytes());
        config[36..40].copy_from_slice(&MAX_DISCARD_SECTORS.to_le_bytes());
        config[40..44].copy_from_slice(&MAX_DISCARD_SEG.to_le_bytes());
        config[44..48].copy_from_slice(&DISCARD_SECTOR_ALIGNMENT.to_le_bytes());

        Ok(Self {
            disk: Disk { file, read_only: options.read_only, size, id, can_discard },
            features,
            config,
            queue_event,
            active: None,
            completed: 0,
            failed: 0,
        })
    }

    /// The capacity in 512-byte sectors.
    pub fn capacity(&self) -> u64 {
        self.disk.size / SECTOR_SIZE
    }

    /// Requests completed with VIRTIO_BLK_S_OK.
    pub fn completed(&self) -> u64 {
        self.completed
    }

    /// Requests that failed: any status but OK, or no answer at all.
    pub fn failed(&self) -> u64 {
        self.failed
    }

    /// Serves every available request; returns how many were completed.
    pub fn process_queue(&mut self) -> usize {
        let Some(active) = self.active.as_mut() else { return 0 };
        let discard = self.disk.can_discard && active.acked_features & features::DISCARD != 0;
        let mem = active.mem.memory();
        let mut done = 0;
        while let Some(chain) = active.queue.pop_descriptor_chain(&*mem) {
            let head = chain.head_index();
            let used = match serve(&self.disk, discard, &mem, chain) {
                Outcome::Done { status: status::OK, used } => {
                    self.completed += 1;
                    used
                }
                Outcome::Done { used, .. } => {
                    self.failed += 1;
                    used
                }
                Outcome::Dropped => {
                    self.failed += 1;
                    0
                }
            };
            if let Err(e) = active.queue.add_used(&*mem, head, used) {
                log::warn!("virtio-blk: cannot complete request {head}: {e:?}");
                self.failed += 1;
                break;
            }
            done += 1;
        }
        if done > 0 && active.queue.needs_notification(&*mem).unwrap_or(true) {
            active.interrupt.signal_used_queue();
        }
        done
    }
}

/// Whether `file` supports FALLOC_FL_PUNCH_HOLE: punches a page past its end, which
/// (with KEEP_SIZE) changes nothing.
fn punch_hole_supported(file: &File, len: u64) -> bool {
    let past_end = len.div_ceil(4096).saturating_add(1).saturating_mul(4096);
    fallocate(file, FallocateMode::PunchHole, true, past_end, 4096).is_ok()
}

/// Answers one descriptor chain.
fn serve<'a>(disk: &Disk, discard: bool, mem: &'a Mem, chain: DescriptorChain<&'a Mem>) -> Outcome {
    let head = chain.head_index();
    let (readable, writable) = map_chain(mem, chain);
    let writable = match writable {
        Ok(w) => w,
        Err(e) => {
            log::warn!("virtio-blk: request {head}: writable buffers refused: {e:?}");
            return Outcome::Dropped;
        }
    };
    let Some(data_len) = writable.len().checked_sub(1) else {
        log::warn!("virtio-blk: request {head} has no status byte");
        return Outcome::Dropped;
    };
    let (Some(data), Some(status_buf)) = (writable.range(0, data_len), writable.range(data_len, 1)) else {
        return Outcome::Dropped;
    };
    let (status, data_written) = match readable {
        Ok(readable) => {
            // The header is fetched once; everything after works on this copy.
            let mut raw = [0u8; 16];
            let body = readable.range(16, readable.len().saturating_sub(16));
            let (true, Some(body)) = (readable.copy_to(&mut raw), body) else {
                log::warn!("virtio-blk: request {head} has a short header");
                return Outcome::Dropped;
            };
            disk.execute(RequestHeader::parse(raw), discard, &body, &data)
        }
        Err(e) => {
            log::warn!("virtio-blk: request {head}: readable buffers refused: {e:?}");
            (status::IOERR, 0)
        }
    };
    if !status_buf.copy_from(&[status]) {
        return Outcome::Dropped;
    }
    let used = u32::try_from(data_written + 1).unwrap_or(u32::MAX);
    Outcome::Done { status, used }
}

/// Guest buffers as host slices into the shared-memory view (so only shared pages).
#[derive(Default)]
struct GuestBufs<'a> {
    slices: Vec<VolatileSlice<'a>>,
    len: usize,
}

impl<'a> GuestBufs<'a> {
    /// Appends the `len` bytes at `addr`; fails when any of them is outside the view.
    fn push(&mut self, mem: &'a Mem, addr: GuestAddress, len: u32) -> Result<(), GuestMemoryError> {
        // Chains are at most a queue of u32 lengths: this cannot overflow on 64-bit hosts.
        self.len = self.len.checked_add(len as usize).ok_or(GuestMemoryError::InvalidGuestAddress(addr))?;
        for slice in GuestMemoryBackend::get_slices(mem, addr, len as usize) {
            self.slices.push(slice?);
        }
        Ok(())
    }

    fn len(&self) -> usize {
        self.len
    }

    /// The `len` bytes from `start`, or `None` if they are not all here.
    fn range(&self, start: usize, len: usize) -> Option<Self> {
        let (mut skip, mut want) = (start, len);
        let mut out = Self { slices: Vec::new(), len };
        for s in &self.slices {
            if want == 0 {
                break;
            }
            if skip >= s.len() {
                skip -= s.len();
                continue;
            }
            let n = (s.len() - skip).min(want);
            out.slices.push(s.subslice(skip, n).ok()?);
            want -= n;
            skip = 0;
        }
        (want == 0).then_some(out)
    }

    /// Fills `buf` from the start of the buffers; false (`buf` partly filled) if too short.
    fn copy_to(&self, buf: &mut [u8]) -> bool {
        let mut done = 0;
        for s in &self.slices {
            if done == buf.len() {
                break;
            }
            done += s.copy_to(&mut buf[done..]);
        }
        done == buf.len()
    }

    /// Writes `buf` at the start of the buffers; false (nothing written) if too short.
    fn copy_from(&self, buf: &[u8]) -> bool {
        if buf.len() > self.len {
            return false;
        }
        let mut done = 0;
        for s in &self.slices {
            if done == buf.len() {
                break;
            }
            let n = s.len().min(buf.len() - done);
            s.copy_from(&buf[done..done + n]);
            done += n;
        }
        true
    }
}

/// A chain's device-readable and device-writable buffers, each or its refusal.
type MappedChain<'a> = (Result<GuestBufs<'a>, GuestMemoryError>, Result<GuestBufs<'a>, GuestMemoryError>);

/// Walks `chain` once and maps its device-readable and device-writable buffers; each
/// side fails (as virtio-queue's `Reader`/`Writer` do) when one of its descriptors is
/// not entirely in the view. One walk, so the lengths checked are the lengths used.
fn map_chain<'a>(mem: &'a Mem, chain: DescriptorChain<&'a Mem>) -> MappedChain<'a> {
    let (mut readable, mut writable) = (Ok(GuestBufs::default()), Ok(GuestBufs::default()));
    for desc in chain {
        let side = if desc.is_write_only() { &mut writable } else { &mut readable };
        if let Ok(bufs) = side {
            if let Err(e) = bufs.push(mem, desc.addr(), desc.len()) {
                *side = Err(e);
            }
        }
    }
    (readable, writable)
}

/// Linux's limit on iovecs per call (UIO_MAXIOV).
const IOV_MAX: usize = 1024;

/// Runs `op` (a positioned vectored read or write) until every byte of `iov` has
/// moved: once for any ordinary request, again only after a short transfer. `op` gets
/// the iovecs still to do (at most [`IOV_MAX`]) and the file offset to do them at.
fn transfer_all(
    mut iov: Vec<libc::iovec>,
    offset: u64,
    mut op: impl FnMut(&[libc::iovec], libc::off_t) -> io::Result<usize>,
) -> io::Result<()> {
    let mut first = 0;
    let mut at = offset;
    while first < iov.len() {
        if iov[first].iov_len == 0 {
            first += 1;
            continue;
        }
        let pos = libc::off_t::try_from(at).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let mut n = match op(&iov[first..iov.len().min(first + IOV_MAX)], pos) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        at += n as u64;
        while n > 0 && first < iov.len() {
            let v = &mut iov[first];
            if n >= v.iov_len {
                n -= v.iov_len;
                first += 1;
            } else {
                v.iov_base = v.iov_base.cast::<u8>().wrapping_add(n).cast();
                v.iov_len -= n;
                n = 0;
            }
        }
    }
    Ok(())
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        device_id::BLOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        self.features
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        super::read_config_bytes(&self.config, offset, data);
    }

    fn activate(&mut self, ctx: ActivateContext) -> Result<(), ActivateError> {
        let got = ctx.queues.len();
        let queue = ctx.queues.into_iter().next().filter(|_| got == 1);
        let queue = queue.ok_or(ActivateError::QueueCount { got, want: 1 })?;
        self.active =
            Some(Active { mem: ctx.mem, queue, interrupt: ctx.interrupt, acked_features: ctx.acked_features });
        // Requests queued before activation are served at once.
        let _ = self.queue_event.write(1);
        Ok(())
    }

    fn reset(&mut self) {
        self.active = None;
    }
}

impl MutEventSubscriber for Block {
    fn process(&mut self, events: Events, _ops: &mut EventOps<'_>) {
        if events.event_set().contains(EventSet::IN) {
            let _ = self.queue_event.read();
            self.process_queue();
        }
    }

    fn init(&mut self, ops: &mut EventOps<'_>) {
        if let Err(e) = ops.add(Events::new(&self.queue_event, EventSet::IN)) {
            log::error!("virtio-blk: cannot watch the queue event: {e:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::{SharedMemory, INT_USED_RING};
    use std::os::unix::fs::FileExt;
    use virtio_queue::desc::{split::Descriptor, RawDescriptor};
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
    use vmm_sys_util::eventfd::EFD_NONBLOCK;
    use vmm_sys_util::tempfile::TempFile;

    const NEXT: u16 = 1;
    const WRITE: u16 = 2;
    const HDR: u64 = 0x10_0000;
    const DATA: u64 = 0x20_0000;
    const STATUS: u64 = 0x30_0000;
    const PRIVATE: u64 = 0x38_0000;
    const SECTORS: u64 = 512;

    struct Rig {
        m: GuestMemoryMmap,
        s: SharedMemory,
        image: TempFile,
    }

    fn rig(shared: bool) -> Rig {
        let m = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x40_0000)]).unwrap();
        let s = if shared { SharedMemory::all_shared(&m) } else { SharedMemory::all_private(&m) };
        let image = TempFile::new().unwrap();
        let pattern: Vec<u8> = (0..SECTORS * SECTOR_SIZE).map(|i| (i / SECTOR_SIZE) as u8 ^ (i as u8)).collect();
        image.as_file().write_all_at(&pattern, 0).unwrap();
        Rig { m, s, image }
    }

    fn sector_pattern(sector: u64) -> Vec<u8> {
        (sector * SECTOR_SIZE..(sector + 1) * SECTOR_SIZE).map(|i| (i / SECTOR_SIZE) as u8 ^ (i as u8)).collect()
    }

    fn device(r: &Rig, options: BlockOptions) -> Block {
        let file = OpenOptions::new().read(true).write(true).open(r.image.as_path()).unwrap();
        Block::new(file, options, EventFd::new(EFD_NONBLOCK).unwrap()).unwrap()
    }

    /// Writes `chains` (each a list of (addr, len, flags)) into the descriptor table.
    fn add_chains(mock: &MockSplitQueue<'_, GuestMemoryMmap>, chains: &[&[(u64, u32, u16)]]) {
        let mut index = 0u16;
        for chain in chains {
            let descs: Vec<RawDescriptor> = chain
                .iter()
                .enumerate()
                .map(|(i, &(addr, len, flags))| {
                    let last = i + 1 == chain.len();
                    let flags = if last { flags } else { flags | NEXT };
                    RawDescriptor::from(Descriptor::new(addr, len, flags, index + i as u16 + 1))
                })
                .collect();
            mock.add_desc_chains(&descs, index).unwrap();
            index += chain.len() as u16;
        }
    }

    fn header(m: &GuestMemoryMmap, request_type: u32, sector: u64) {
        m.write_obj(request_type, GuestAddress(HDR)).unwrap();
        m.write_obj(0u32, GuestAddress(HDR + 4)).unwrap();
        m.write_obj(sector, GuestAddress(HDR + 8)).unwrap();
        m.write_obj(0xffu8, GuestAddress(STATUS)).unwrap();
    }

    /// Activates `blk`; the driver accepts the offered features within `acked`.
    fn activate(blk: &mut Block, r: &Rig, mock: &MockSplitQueue<'_, GuestMemoryMmap>, acked: u64) -> VirtioInterrupt {
        let interrupt = VirtioInterrupt::new(EventFd::new(EFD_NONBLOCK).unwrap());
        let ctx = ActivateContext {
            mem: r.s.view(),
            queues: vec![mock.create_queue().unwrap()],
            interrupt: interrupt.clone(),
            acked_features: blk.features() & acked,
        };
        blk.activate(ctx).unwrap();
        interrupt
    }

    fn status_byte(m: &GuestMemoryMmap) -> u8 {
        m.read_obj(GuestAddress(STATUS)).unwrap()
    }

    fn used_len(mock: &MockSplitQueue<'_, GuestMemoryMmap>, i: u16) -> u32 {
        mock.used().ring().ref_at(i as usize).unwrap().load().len()
    }

    /// One request: header, one data descriptor, status.
    fn one_request(r: &Rig, blk: &mut Block, request_type: u32, sector: u64, data: (u32, u16)) -> (u8, u32) {
        let mock = MockSplitQueue::new(&r.m, 16);
        header(&r.m, request_type, sector);
        let chain: &[(u64, u32, u16)] = &[(HDR, 16, 0), (DATA, data.0, data.1), (STATUS, 1, WRITE)];
        add_chains(&mock, &[chain]);
        let interrupt = activate(blk, r, &mock, u64::MAX);
        assert_eq!(blk.process_queue(), 1);
        assert_eq!(interrupt.status() & INT_USED_RING, INT_USED_RING);
        (status_byte(&r.m), used_len(&mock, 0))
    }

    #[test]
    fn config_space_reports_capacity_and_discard_limits() {
        let r = rig(true);
        let blk = device(&r, BlockOptions::default());
        let mut cap = [0u8; 8];
        blk.read_config(0, &mut cap);
        assert_eq!(u64::from_le_bytes(cap), SECTORS);
        assert_eq!(blk.capacity(), SECTORS);
        let mut word = [0u8; 4];
        blk.read_config(36, &mut word);
        assert_eq!(u32::from_le_bytes(word), MAX_DISCARD_SECTORS);
        blk.read_config(40, &mut word);
        assert_eq!(u32::from_le_bytes(word), MAX_DISCARD_SEG);
        blk.read_config(44, &mut word);
        assert_eq!(u32::from_le_bytes(word), DISCARD_SECTOR_ALIGNMENT);
        assert_eq!(blk.device_type(), device_id::BLOCK);
        assert_ne!(blk.features() & features::FLUSH, 0);
        assert_eq!(blk.features() & features::RO, 0);
    }

    #[test]
    fn reading_a_sector_returns_the_image_contents() {
        let r = rig(true);
        let mut blk = device(&r, BlockOptions::default());
        let (st, used) = one_request(&r, &mut blk, request_type::IN, 3, (512, WRITE));
        assert_eq!(st, status::OK);
        assert_eq!(used, 513);
        let mut got = vec![0u8; 512];
        r.m.read_slice(&mut got, GuestAddress(DATA)).unwrap();
        assert_eq!(got, sector_pattern(3));
        assert_eq!(blk.completed(), 1);
        assert_eq!(blk.failed(), 0);
    }

    #[test]
    fn a_large_read_spanning_chunks_is_served_in_full() {
        let r = rig(true);
        let mut blk = device(&r, BlockOptions::default());
        let len = (SECTORS * SECTOR_SIZE) as u32; // 256 KiB: four CHUNKs
        let (st, used) = one_request(&r, &mut blk, request_type::IN, 0, (len, WRITE));
        assert_eq!((st, used), (status::OK, len + 1));
        for sector in [0, 127, 128, SECTORS - 1] {
            let mut got = vec![0u8; 512];
            r.m.read_slice(&mut got, GuestAddress(DATA + sector * 512)).unwrap();
            assert_eq!(got, sector_pattern(sector), "sector {sector}");
        }
    }

    #[test]
    fn a_large_write_spanning_chunks_reaches_the_image() {
        let r = rig(true);
        let mut blk = device(&r, BlockOptions::default());
        let len = 3 * CHUNK + 512;
        r.m.write_slice(&vec![0x3c; len], GuestAddress(DATA)).unwrap();
        let (st, used) = one_request(&r, &mut blk, request_type::OUT, 1, (len as u32, 0));
        assert_eq!((st, used), (status::OK, 1));
        let mut on_disk = vec![0u8; len];
        r.image.as_file().read_exact_at(&mut on_disk, 512).unwrap();
        assert!(on_disk.iter().all(|&b| b == 0x3c));
    }

    #[test]
    fn a_write_reads_back() {
        let r = rig(true);
        let mut blk = device(&r, BlockOptions::default());
        r.m.write_slice(&[0xa5; 1024], GuestAddress(DATA)).unwrap();
        let (st, used) = one_request(&r, &mut blk, request_type::OUT, 10, (1024, 0));
        assert_eq!((st, used), (status::OK, 1));

        r.m.write_slice(&[0; 1024], GuestAddress(DATA)).unwrap();
        let (st, _) = one_request(&r, &mut blk, request_type::IN, 10, (1024, WRITE));
        assert_eq!(st, status::OK);
        let mut got = vec![0u8; 1024];
        r.m.read_slice(&mut got, GuestAddress(DATA)).unwrap();
        assert_eq!(got, vec![0xa5; 1024]);
        let mut on_disk = vec![0u8; 1024];
        r.image.as_file().read_exact_at(&mut on_disk, 10 * 512).unwrap();
        assert_eq!(on_disk, vec![0xa5; 1024]);
    }

    #[test]
    fn a_read_only_device_rejects_writes_and_offers_ro() {
        let r = rig(true);
        let mut blk = device(&r, BlockOptions { read_only: true, id: String::new() });
        assert_ne!(blk.features() & features::RO, 0);
        assert_eq!(blk.features() & features::DISCARD, 0);
        r.m.write_slice(&[0xa5; 512], GuestAddress(DATA)).unwrap();
        let (st, used) = one_request(&r, &mut blk, request_type::OUT, 0, (512, 0));
        assert_eq!((st, used), (status::IOERR, 1));
        let mut on_disk = vec![0u8; 512];
        r.image.as_file().read_exact_at(&mut on_disk, 0).unwrap();
        assert_eq!(on_disk, sector_pattern(0), "image unchanged");
        assert_eq!(blk.failed(), 1);
    }

    #[test]
    fn open_read_only_serves_reads() {
        let r = rig(true);
        let opts = BlockOptions { read_only: true, id: String::new() };
        let mut blk = Block::open(r.image.as_path(), opts, EventFd::new(EFD_NONBLOCK).unwrap()).unwrap();
        let (st, _) = one_request(&r, &mut blk, request_type::IN, 1, (512, WRITE));
        assert_eq!(st, status::OK);
    }

    #[test]
    fn opening_a_missing_image_fails() {
        let err = Block::open(Path::new("/nonexistent/cvmm.img"), BlockOptions::default(), EventFd::new(0).unwrap());
        assert!(matches!(err, Err(BlockError::Open { .. })));
    }

    #[test]
    fn flush_succeeds() {
        let r = rig(true);
        let mut blk = device(&r, BlockOptions::default());
        let mock = MockSplitQueue::new(&r.m, 16);
        header(&r.m, request_type::FLUSH, 0);
        add_chains(&mock, &[&[(HDR, 16, 0), (STATUS, 1, WRITE)]]);
        activate(&mut blk, &r, &mock, u64::MAX);
        assert_eq!(blk.process_queue(), 1);
        assert_eq!(status_byte(&r.m), status::OK);
        assert_eq!(used_len(&mock, 0), 1);
    }

    #[test]
    fn get_id_returns_the_serial_zero_padded() {
        let r = rig(true);
        let mut blk = device(&r, BlockOptions { read_only: false, id: "cvmm-disk-0".into() });
        r.m.write_slice(&[0xff; 20], GuestAddress(DATA)).unwrap();
        let (st, used) = one_request(&r, &mut blk, request_type::GET_ID, 0, (20, WRITE));
        assert_eq!((st, used), (status::OK, 21));
        let mut got = [0u8; 20];
        r.m.read_slice(&mut got, GuestAddress(DATA)).unwrap();
        assert_eq!(&got[..11], b"cvmm-disk-0");
        assert_eq!(got[11..], [0u8; 9]);
    }

    #[test]
    fn a_read_beyond_capacity_is_an_io_error() {
        let r = rig(true);
        let mut blk = device(&r, BlockOptions::default());
        let (st, used) = one_request(&r, &mut blk, request_type::IN, SECTORS - 1, (1024, WRITE));
        assert_eq!((st, used), (status::IOERR, 1));
        assert_eq!(r.m.read_obj::<u64>(GuestAddress(DATA)).unwrap(), 0, "nothing read");
    }

    #[test]
    fn a_sector_that_overflows_is_an_io_error() {
        let r = rig(true);
        let mut blk = device(&r, BlockOptions::default());
        let (st, _) = one_request(&r, &mut blk, request_type::IN, u64::MAX / 256, (512, WRITE));
        assert_eq!(st, status::IOERR);
        let (st, _) = one_request(&r, &mut blk, request_type::OUT, u64::MAX, (512, 0));
        assert_eq!(st, status::IOERR);
    }

    #[test]
    fn a_length_that_is_not_whole_sectors_is_an_io_error() {
        let r = rig(true);
        let mut blk = device(&r, BlockOptions::default());
        let (st, _) = one_request(&r, &mut blk, request_type::IN, 0, (100, WRITE));
        assert_eq!(st, status::IOERR);
        let (st, _) = one_request(&r, &mut blk, request_type::OUT, 0, (700, 0));
        assert_eq!(st, status::IOERR);
    }

    #[test]
    fn read_data_in_a_read_only_descriptor_is_an_io_error() {
        let r = rig(true);
        let mut blk = device(&r, BlockOptions::default());
        let (st, used) = one_request(&r, &mut blk, request_type::IN, 0, (512, 0));
        assert_eq!((st, used), (status::IOERR, 1));
        assert_eq!(r.m.read_obj::<u64>(GuestAddress(DATA)).unwrap(), 0, "nothing written");
    }

    #[test]
    fn an_unknown_request_type_is_unsupported() {
        let r = rig(true);
        let mut blk = device(&r, BlockOptions::default());
        let (st, used) = one_request(&r, &mut blk, 0x7777, 0, (512, WRITE));
        assert_eq!((st, used), (status::UNSUPP, 1));
    }

    #[test]
    fn a_short_header_fails_without_touching_memory() {
        let r = rig(true);
        let mut blk = device(&r, BlockOptions::default());
        let mock = MockSplitQueue::new(&r.m, 16);
        header(&r.m, request_type::IN, 0);
        add_chains(&mock, &[&[(HDR, 8, 0), (DATA, 512, WRITE), (STATUS, 1, WRITE)]]);
        activate(&mut blk, &r, &mock, u64::MAX);
        assert_eq!(blk.process_queue(), 1);
        assert_eq!(used_len(&mock, 0), 0);
        assert_eq!(status_byte(&r.m), 0xff, "status untouched");
        assert_eq!(r.m.read_obj::<u64>(GuestAddress(DATA)).unwrap(), 0, "data untouched");
        assert_eq!(blk.failed(), 1);
    }

    #[test]
    fn a_chain_without_a_status_byte_is_dropped() {
        let r = rig(true);
        let mut blk = device(&r, BlockOptions::default());
        let mock = MockSplitQueue::new(&r.m, 16);
        header(&r.m, request_type::OUT, 0);
        add_chains(&mock, &[&[(HDR, 16, 0), (DATA, 512, 0)]]);
        activate(&mut blk, &r, &mock, u64::MAX);
        assert_eq!(blk.process_queue(), 1);
        assert_eq!(used_len(&mock, 0), 0);
        let mut on_disk = vec![0u8; 512];
        r.image.as_file().read_exact_at(&mut on_disk, 0).unwrap();
        assert_eq!(on_disk, sector_pattern(0), "nothing written without a status byte");
    }

    #[test]
    fn read_data_in_private_memory_is_refused_and_untouched() {
        let r = rig(false);
        r.s.set_shared(0, 0x1_0000, true).unwrap(); // the queue
        r.s.set_shared(HDR, 0x1000, true).unwrap();
        r.s.set_shared(STATUS, 0x1000, true).unwrap();
        let mut blk = device(&r, BlockOptions::default());
        let mock = MockSplitQueue::new(&r.m, 16);
        header(&r.m, request_type::IN, 0);
        add_chains(&mock, &[&[(HDR, 16, 0), (PRIVATE, 512, WRITE), (STATUS, 1, WRITE)]]);
        activate(&mut blk, &r, &mock, u64::MAX);
        assert_eq!(blk.process_queue(), 1);
        assert_eq!(used_len(&mock, 0), 0);
        assert_eq!(r.m.read_obj::<u64>(GuestAddress(PRIVATE)).unwrap(), 0, "private memory untouched");
        assert_eq!(blk.failed(), 1);
    }

    #[test]
    fn write_data_in_private_memory_is_an_io_error_and_the_image_is_unchanged() {
        let r = rig(false);
        r.s.set_shared(0, 0x1_0000, true).unwrap();
        r.s.set_shared(HDR, 0x1000, true).unwrap();
        r.s.set_shared(STATUS, 0x1000, true).unwrap();
        r.m.write_slice(&[0x5a; 512], GuestAddress(PRIVATE)).unwrap();
        let mut blk = device(&r, BlockOptions::default());
        let mock = MockSplitQueue::new(&r.m, 16);
        header(&r.m, request_type::OUT, 0);
        add_chains(&mock, &[&[(HDR, 16, 0), (PRIVATE, 512, 0), (STATUS, 1, WRITE)]]);
        activate(&mut blk, &r, &mock, u64::MAX);
        assert_eq!(blk.process_queue(), 1);
        assert_eq!(status_byte(&r.m), status::IOERR);
        assert_eq!(used_len(&mock, 0), 1);
        let mut on_disk = vec![0u8; 512];
        r.image.as_file().read_exact_at(&mut on_disk, 0).unwrap();
        assert_eq!(on_disk, sector_pattern(0));
    }

    fn discard_request(r: &Rig, blk: &mut Block, acked: u64, sector: u64, num: u32, flags: u32) -> u8 {
        let mock = MockSplitQueue::new(&r.m, 16);
        header(&r.m, request_type::DISCARD, 0);
        r.m.write_obj(sector, GuestAddress(DATA)).unwrap();
        r.m.write_obj(num, GuestAddress(DATA + 8)).unwrap();
        r.m.write_obj(flags, GuestAddress(DATA + 12)).unwrap();
        add_chains(&mock, &[&[(HDR, 16, 0), (DATA, 16, 0), (STATUS, 1, WRITE)]]);
        activate(blk, r, &mock, acked);
        assert_eq!(blk.process_queue(), 1);
        status_byte(&r.m)
    }

    #[test]
    fn discard_punches_a_hole_or_is_consistently_unsupported() {
        let r = rig(true);
        let mut blk = device(&r, BlockOptions::default());
        let acked = blk.features();
        let st = discard_request(&r, &mut blk, acked, 8, 8, 0);
        let mut on_disk = vec![0xffu8; 4096];
        r.image.as_file().read_exact_at(&mut on_disk, 8 * 512).unwrap();
        if blk.features() & features::DISCARD != 0 {
            assert_eq!(st, status::OK);
            assert_eq!(on_disk, vec![0u8; 4096], "the punched range reads as zeroes");
            assert_eq!(r.image.as_file().metadata().unwrap().len(), SECTORS * SECTOR_SIZE, "size kept");
        } else {
            assert_eq!(st, status::UNSUPP);
            assert_eq!(&on_disk[..512], &sector_pattern(8)[..]);
        }
    }

    #[test]
    fn discard_not_negotiated_is_unsupported() {
        let r = rig(true);
        let mut blk = device(&r, BlockOptions::default());
        let acked = blk.features() & !features::DISCARD;
        assert_eq!(discard_request(&r, &mut blk, acked, 0, 1, 0), status::UNSUPP);
    }

    #[test]
    fn discard_beyond_capacity_or_with_flags_is_refused() {
        let r = rig(true);
        let mut blk = device(&r, BlockOptions::default());
        if blk.features() & features::DISCARD == 0 {
            return; // the temp directory's file system cannot punch holes
        }
        let acked = blk.features();
        assert_eq!(discard_request(&r, &mut blk, acked, SECTORS - 1, 2, 0), status::IOERR);
        assert_eq!(discard_request(&r, &mut blk, acked, u64::MAX, 1, 0), status::IOERR);
        assert_eq!(discard_request(&r, &mut blk, acked, 0, 1, 1), status::UNSUPP, "unmap flag");
    }

    #[test]
    fn several_requests_complete_in_order() {
        let r = rig(true);
        let mut blk = device(&r, BlockOptions::default());
        let mock = MockSplitQueue::new(&r.m, 16);
        header(&r.m, request_type::FLUSH, 0);
        let flush: &[(u64, u32, u16)] = &[(HDR, 16, 0), (STATUS, 1, WRITE)];
        add_chains(&mock, &[flush, flush, flush]);
        activate(&mut blk, &r, &mock, u64::MAX);
        assert_eq!(blk.process_queue(), 3);
        assert_eq!(mock.used().idx().load(), 3);
        assert_eq!(blk.completed(), 3);
    }

    #[test]
    fn an_inactive_device_does_nothing() {
        let r = rig(true);
        let mut blk = device(&r, BlockOptions::default());
        assert_eq!(blk.process_queue(), 0);
    }

    #[test]
    fn activation_needs_exactly_one_queue() {
        let r = rig(true);
        let mut blk = device(&r, BlockOptions::default());
        let ctx = ActivateContext {
            mem: r.s.view(),
            queues: vec![],
            interrupt: VirtioInterrupt::new(EventFd::new(EFD_NONBLOCK).unwrap()),
            acked_features: 0,
        };
        assert!(matches!(blk.activate(ctx), Err(ActivateError::QueueCount { got: 0, want: 1 })));
    }
}
