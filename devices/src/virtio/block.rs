//! virtio-blk: a raw disk image file served to the guest with positioned reads and
//! writes, flush, GET_ID and (where the host file system can punch holes) discard.
//!
//! Hostile input: each request header is fetched once into a host struct before it is
//! checked; sector ranges that overflow or leave the disk, and lengths that are not
//! whole sectors, get VIRTIO_BLK_S_IOERR; unknown request types get
//! VIRTIO_BLK_S_UNSUPP; a chain too short to hold a header, or with no status byte, is
//! completed with used length 0 without touching memory; data in private (or no)
//! memory fails the request.
//!
//! Data path: sector data moves straight between the image and slices of the
//! shared-memory view (never a private page), with nothing allocated per request.
//! Consecutive reads (or writes) of contiguous sectors in one queue batch form a run
//! that moves at once: by memcpy through a shared mapping of the image
//! ([`super::mapped_image`], where I/O errors arrive as SIGBUS and become
//! VIRTIO_BLK_S_IOERR) or, if the image cannot be mapped, by one `preadv`/`pwritev`.
//! A run that fails is retried request by request, so only the failing ones fail.

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};
use thiserror::Error;
use virtio_queue::{DescriptorChain, Queue, QueueT};
use vm_memory::volatile_memory::{PtrGuard, PtrGuardMut};
use vm_memory::{GuestAddressSpace, GuestMemoryBackend, GuestMemoryError, GuestRegionCollection, VolatileSlice};
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::fallocate::{fallocate, FallocateMode};

use super::mapped_image::MappedImage;
use super::shared_memory::SharedRegion;
use super::{device_id, ActivateContext, ActivateError, GuestMem, VirtioDevice, VirtioInterrupt};

/// Queue size.
pub const QUEUE_SIZE: u16 = 256;
/// Bytes per sector (the unit of `capacity` and of request sectors).
pub const SECTOR_SIZE: u64 = 512;
/// Length of the GET_ID answer (the serial number).
pub const ID_BYTES: usize = 20;
/// A large-request size the tests step over. Data never moves through a buffer of this
/// size: it goes straight between the image and guest memory.
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
    /// The image mapped into the VMM, when it could be: sector data then moves by memcpy
    /// rather than `preadv`/`pwritev`.
    map: Option<MappedImage>,
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

    /// The byte offset of a read (`write == false`) or write of `len` bytes at `sector`,
    /// or the status refusing it: empty, not whole sectors, off the disk, or a write to a
    /// read-only disk.
    fn check_io(&self, write: bool, sector: u64, len: usize) -> Result<u64, u8> {
        if write && self.read_only {
            return Err(status::IOERR);
        }
        match self.range(sector, len).filter(|_| len > 0) {
            Some(offset) => Ok(offset),
            None => {
                log::debug!(
                    "virtio-blk: {} of {len} bytes at sector {sector} refused",
                    if write { "write" } else { "read" }
                );
                Err(status::IOERR)
            }
        }
    }

    /// Moves the bytes of `slices` (guest memory, in order) between the image from byte
    /// `offset` and guest memory: into the image when `write`, else out of it. With the
    /// image mapped that is one memcpy per slice; otherwise one `preadv`/`pwritev` for
    /// the whole list (built in `iov`) in any ordinary case.
    ///
    /// The caller guarantees that the range is on the disk and that every slice is a
    /// slice of the shared-memory view (only shared guest pages) whose mapping the caller
    /// keeps alive for the call.
    fn transfer(&self, write: bool, offset: u64, slices: &[VolatileSlice<'_>], iov: &mut IoVecs) -> io::Result<()> {
        if let Some(map) = self.map.as_ref().filter(|m| m.usable()) {
            return map.copy(write, offset, slices);
        }
        let fd = self.file.as_raw_fd();
        transfer_all(iov.fill(slices, write), offset, |iov, at| {
            let count = iov.len() as libc::c_int;
            #[allow(unsafe_code)]
            // SAFETY: by this function's contract every iovec points into live, shared
            // guest memory and its length is within its slice; `iov` is at most IOV_MAX
            // entries. preadv writes at most those bytes, pwritev only reads them; no
            // Rust reference to them exists, so the guest changing them concurrently is
            // harmless for raw byte I/O (it only changes what lands on the disk or in
            // its own buffers, which the guest controls anyway).
            let n = unsafe {
                if write {
                    libc::pwritev(fd, iov.as_ptr(), count, at)
                } else {
                    libc::preadv(fd, iov.as_ptr(), count, at)
                }
            };
            usize::try_from(n).map_err(|_| io::Error::last_os_error())
        })
    }

    /// Carries out a request that moves no sector data (flush, GET_ID, discard, unknown
    /// types) whose header was already fetched: `body` is what the driver wrote after the
    /// header, `data` the writable buffers before the status byte. Returns the status and
    /// how many bytes of `data` were written.
    fn execute_other(
        &self,
        header: RequestHeader,
        discard: bool,
        body: &GuestBufs<'_>,
        data: &GuestBufs<'_>,
    ) -> (u8, usize) {
        match header.request_type {
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
            disk: Disk {
                map: MappedImage::new(&file, size, !options.read_only),
                file,
                read_only: options.read_only,
                size,
                id,
                can_discard,
            },
            features,
            config,
            queue_event,
            active: None,
            completed: 0,
            failed: 0,
        })
    }

    /// Whether sector data moves through a mapping of the image (else `preadv`/`pwritev`).
    pub fn is_mapped(&self) -> bool {
        self.disk.map.as_ref().is_some_and(MappedImage::usable)
    }

    /// The same device moving sector data with `preadv`/`pwritev` only.
    #[cfg(test)]
    fn unmapped(mut self) -> Self {
        self.disk.map = None;
        self
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
    ///
    /// Reads and writes are not carried out one by one: consecutive requests of one
    /// direction over contiguous sectors form a run ([`IoRun`]) that moves with one
    /// `preadv` or `pwritev`, and the run's requests are completed together when it ends.
    /// Any other request ends the run before it is carried out, and requests complete in
    /// queue order, so the guest sees the effects it would see one request at a time.
    /// Nothing is allocated per request: the buffers below live for one call.
    pub fn process_queue(&mut self) -> usize {
        let Self { disk, active, completed, failed, .. } = self;
        let Some(active) = active.as_mut() else { return 0 };
        let discard = disk.can_discard && active.acked_features & features::DISCARD != 0;
        let mem = active.mem.memory();
        let mut done = Completer { queue: &mut active.queue, mem: &mem, count: 0, completed, failed, broken: false };
        let mut bufs = ChainBufs::default();
        let mut run = IoRun::default();
        let mut iov = IoVecs::default();
        while !done.broken {
            let Some(chain) = done.queue.pop_descriptor_chain(&*mem) else { break };
            let head = chain.head_index();
            match classify(disk, &mem, chain, &mut bufs) {
                Request::Io { write, offset, len, status } => {
                    if !run.accepts(write, offset, bufs.data.len()) {
                        run.finish(disk, &mut iov, &mut done);
                    }
                    run.push(PendingIo { head, offset, len, slices: 0..0, status }, write, &bufs.data);
                }
                Request::Other { header, data_len, body_len, status } => {
                    run.finish(disk, &mut iov, &mut done);
                    let body = GuestBufs::of(&bufs.readable, 16, body_len);
                    let data = GuestBufs::of(&bufs.writable, 0, data_len);
                    let (st, written) = match (body, data) {
                        (Some(body), Some(data)) => disk.execute_other(header, discard, &body, &data),
                        _ => (status::IOERR, 0), // cannot happen: the lengths were measured on them
                    };
                    done.complete(head, answer(&status, st, written));
                }
                Request::Done(outcome) => {
                    run.finish(disk, &mut iov, &mut done);
                    done.complete(head, outcome);
                }
            }
        }
        run.finish(disk, &mut iov, &mut done);
        let count = done.count;
        if count > 0 && active.queue.needs_notification(&*mem).unwrap_or(true) {
            active.interrupt.signal_used_queue();
        }
        count
    }
}

/// Whether `file` supports FALLOC_FL_PUNCH_HOLE: punches a page past its end, which
/// (with KEEP_SIZE) changes nothing.
fn punch_hole_supported(file: &File, len: u64) -> bool {
    let past_end = len.div_ceil(4096).saturating_add(1).saturating_mul(4096);
    fallocate(file, FallocateMode::PunchHole, true, past_end, 4096).is_ok()
}

/// Completes requests in queue order: adds each used entry and counts the outcome.
struct Completer<'q, 'm> {
    queue: &'q mut Queue,
    mem: &'m Mem,
    /// Requests completed in this call.
    count: usize,
    completed: &'q mut u64,
    failed: &'q mut u64,
    /// The used ring could not be written: stop serving.
    broken: bool,
}

impl Completer<'_, '_> {
    fn complete(&mut self, head: u16, outcome: Outcome) {
        if self.broken {
            // An earlier used entry could not be written; nothing after it is completed.
            *self.failed += 1;
            return;
        }
        let used = match outcome {
            Outcome::Done { status: status::OK, used } => {
                *self.completed += 1;
                used
            }
            Outcome::Done { used, .. } => {
                *self.failed += 1;
                used
            }
            Outcome::Dropped => {
                *self.failed += 1;
                0
            }
        };
        if let Err(e) = self.queue.add_used(self.mem, head, used) {
            log::warn!("virtio-blk: cannot complete request {head}: {e:?}");
            *self.failed += 1;
            self.broken = true;
            return;
        }
        self.count += 1;
    }
}

/// Writes `st` into the status byte and says how the request ended: `written` data
/// bytes plus the status byte were used.
fn answer(status_byte: &VolatileSlice<'_>, st: u8, written: usize) -> Outcome {
    status_byte.copy_from(&[st]);
    Outcome::Done { status: st, used: u32::try_from(written + 1).unwrap_or(u32::MAX) }
}

/// What a descriptor chain asks for, after its header was fetched (once) and checked.
enum Request<'a> {
    /// A read (`write == false`) or write of `len` bytes at byte `offset` of the image,
    /// within the disk; its data buffers are [`ChainBufs::data`].
    Io { write: bool, offset: u64, len: usize, status: VolatileSlice<'a> },
    /// Any other request type: `body_len` bytes follow the header in the readable
    /// buffers, `data_len` writable bytes precede the status byte.
    Other { header: RequestHeader, data_len: usize, body_len: usize, status: VolatileSlice<'a> },
    /// Already answered (refused).
    Done(Outcome),
}

/// The buffers of the chain being looked at, as slices of the view (reused from chain
/// to chain, so nothing is allocated per request).
#[derive(Default)]
struct ChainBufs<'a> {
    readable: Vec<VolatileSlice<'a>>,
    writable: Vec<VolatileSlice<'a>>,
    /// The data of a read or write (a part of `readable` or `writable`).
    data: Vec<VolatileSlice<'a>>,
}

/// Maps one descriptor chain, fetches and checks its header: carries out nothing.
fn classify<'a>(disk: &Disk, mem: &'a Mem, chain: DescriptorChain<&'a Mem>, bufs: &mut ChainBufs<'a>) -> Request<'a> {
    let head = chain.head_index();
    let (readable, writable) = map_chain(mem, chain, bufs);
    let writable_len = match writable {
        Ok(n) => n,
        Err(e) => {
            log::warn!("virtio-blk: request {head}: writable buffers refused: {e:?}");
            return Request::Done(Outcome::Dropped);
        }
    };
    let (Some(data_len), Some(status)) = (writable_len.checked_sub(1), last_byte(&bufs.writable)) else {
        log::warn!("virtio-blk: request {head} has no status byte");
        return Request::Done(Outcome::Dropped);
    };
    let readable_len = match readable {
        Ok(n) => n,
        Err(e) => {
            log::warn!("virtio-blk: request {head}: readable buffers refused: {e:?}");
            return Request::Done(answer(&status, status::IOERR, 0));
        }
    };
    // The header is fetched once; everything after works on this copy.
    let mut raw = [0u8; 16];
    if !copy_prefix(&bufs.readable, &mut raw) {
        log::warn!("virtio-blk: request {head} has a short header");
        return Request::Done(Outcome::Dropped);
    }
    let header = RequestHeader::parse(raw);
    let body_len = readable_len.saturating_sub(raw.len());
    let (write, len, side, start) = match header.request_type {
        request_type::IN => (false, data_len, &bufs.writable, 0),
        request_type::OUT => (true, body_len, &bufs.readable, raw.len()),
        _ => return Request::Other { header, data_len, body_len, status },
    };
    match disk.check_io(write, header.sector, len) {
        Ok(offset) if sub_slices(side, start, len, &mut bufs.data) => Request::Io { write, offset, len, status },
        Ok(_) => Request::Done(Outcome::Dropped), // cannot happen: `len` was measured on `side`
        Err(st) => Request::Done(answer(&status, st, 0)),
    }
}

/// A read or write that passed its checks, waiting in an [`IoRun`].
struct PendingIo<'a> {
    head: u16,
    /// Byte offset in the image.
    offset: u64,
    len: usize,
    /// Its data: `IoRun::slices[slices]`.
    slices: std::ops::Range<usize>,
    status: VolatileSlice<'a>,
}

/// Consecutive reads (or writes) whose sectors follow each other: carried out with one
/// `preadv`/`pwritev` over all their buffers, then completed in order.
#[derive(Default)]
struct IoRun<'a> {
    write: bool,
    /// Byte offset in the image past the last request.
    end: u64,
    slices: Vec<VolatileSlice<'a>>,
    reqs: Vec<PendingIo<'a>>,
}

impl<'a> IoRun<'a> {
    /// Whether a request (its direction, offset and number of slices) continues the run:
    /// same direction, the next sectors, and the whole run still one system call.
    fn accepts(&self, write: bool, offset: u64, slices: usize) -> bool {
        self.reqs.is_empty() || (self.write == write && self.end == offset && self.slices.len() + slices <= IOV_MAX)
    }

    fn push(&mut self, mut req: PendingIo<'a>, write: bool, data: &[VolatileSlice<'a>]) {
        if self.reqs.is_empty() {
            self.write = write;
        }
        // `len` is at most a queue of u32 lengths: this cannot overflow on 64-bit hosts.
        self.end = req.offset + req.len as u64;
        req.slices = self.slices.len()..self.slices.len() + data.len();
        self.slices.extend_from_slice(data);
        self.reqs.push(req);
    }

    /// Carries out the run and completes its requests, leaving it empty. If the one
    /// system call fails, each request is retried on its own, so that only the requests
    /// that fail by themselves get VIRTIO_BLK_S_IOERR.
    fn finish(&mut self, disk: &Disk, iov: &mut IoVecs, done: &mut Completer<'_, '_>) {
        let Some(first) = self.reqs.first() else { return };
        let (write, start) = (self.write, first.offset);
        let whole = disk.transfer(write, start, &self.slices, iov);
        if let Err(e) = &whole {
            let what = if write { "write" } else { "read" };
            log::warn!("virtio-blk: {what} of {} bytes at byte {start}: {e}", self.end - start);
        }
        let alone = self.reqs.len() == 1;
        for req in self.reqs.drain(..) {
            let result = match &whole {
                Ok(()) => Ok(()),
                Err(_) if alone => Err(()),
                Err(_) => {
                    let one = disk.transfer(write, req.offset, &self.slices[req.slices.clone()], iov);
                    one.map_err(|e| log::warn!("virtio-blk: request {} at byte {}: {e}", req.head, req.offset))
                }
            };
            let outcome = match result {
                Ok(()) => answer(&req.status, status::OK, if write { 0 } else { req.len }),
                Err(()) => answer(&req.status, status::IOERR, 0),
            };
            done.complete(req.head, outcome);
        }
        self.slices.clear();
    }
}

/// iovecs for one system call, rebuilt from slices of the view for each call (the
/// vectors are reused, so nothing is allocated per request).
#[derive(Default)]
struct IoVecs {
    iov: Vec<libc::iovec>,
    /// One guard per slice, alive while the iovecs are used.
    guards: Vec<PtrGuard>,
    guards_mut: Vec<PtrGuardMut>,
}

impl IoVecs {
    /// The iovecs of `slices` (guest buffers the system call reads when `write`, else
    /// writes), with neighbours that touch in host memory merged into one.
    fn fill(&mut self, slices: &[VolatileSlice<'_>], write: bool) -> &mut [libc::iovec] {
        self.iov.clear();
        self.guards.clear();
        self.guards_mut.clear();
        for s in slices {
            let (base, len) = if write {
                let g = s.ptr_guard();
                let at = (g.as_ptr().cast_mut(), g.len());
                self.guards.push(g);
                at
            } else {
                let g = s.ptr_guard_mut();
                let at = (g.as_ptr(), g.len());
                self.guards_mut.push(g);
                at
            };
            match self.iov.last_mut() {
                Some(prev) if prev.iov_base.cast::<u8>().wrapping_add(prev.iov_len) == base => prev.iov_len += len,
                _ => self.iov.push(libc::iovec { iov_base: base.cast(), iov_len: len }),
            }
        }
        &mut self.iov
    }
}

/// The last byte of `slices` (the status byte of a request).
fn last_byte<'a>(slices: &[VolatileSlice<'a>]) -> Option<VolatileSlice<'a>> {
    let last = slices.iter().rev().find(|s| !s.is_empty())?;
    last.subslice(last.len() - 1, 1).ok()
}

/// Fills `buf` from the start of `slices`; false (`buf` partly filled) if too short.
fn copy_prefix(slices: &[VolatileSlice<'_>], buf: &mut [u8]) -> bool {
    let mut done = 0;
    for s in slices {
        if done == buf.len() {
            break;
        }
        done += s.copy_to(&mut buf[done..]);
    }
    done == buf.len()
}

/// Appends to `out` (cleared first) the `len` bytes of `slices` from byte `start`;
/// false if they are not all there.
fn sub_slices<'a>(slices: &[VolatileSlice<'a>], start: usize, len: usize, out: &mut Vec<VolatileSlice<'a>>) -> bool {
    out.clear();
    let (mut skip, mut want) = (start, len);
    for s in slices {
        if want == 0 {
            break;
        }
        if skip >= s.len() {
            skip -= s.len();
            continue;
        }
        let n = (s.len() - skip).min(want);
        match s.subslice(skip, n) {
            Ok(part) => out.push(part),
            Err(_) => return false,
        }
        want -= n;
        skip = 0;
    }
    want == 0
}

/// Guest buffers as host slices into the shared-memory view (so only shared pages),
/// for the requests that move no sector data.
struct GuestBufs<'a> {
    slices: Vec<VolatileSlice<'a>>,
    len: usize,
}

impl<'a> GuestBufs<'a> {
    /// The `len` bytes of `slices` from byte `start`, or `None` if they are not all there.
    fn of(slices: &[VolatileSlice<'a>], start: usize, len: usize) -> Option<Self> {
        let mut out = Vec::new();
        sub_slices(slices, start, len, &mut out).then_some(Self { slices: out, len })
    }

    fn len(&self) -> usize {
        self.len
    }

    /// Fills `buf` from the start of the buffers; false (`buf` partly filled) if too short.
    fn copy_to(&self, buf: &mut [u8]) -> bool {
        copy_prefix(&self.slices, buf)
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

/// Walks `chain` once and maps its device-readable and device-writable buffers into
/// `bufs` (cleared first); each side's total length, or its refusal: a side fails (as
/// virtio-queue's `Reader`/`Writer` do) when one of its descriptors is not entirely in
/// the view. One walk, so the lengths checked are the lengths used.
fn map_chain<'a>(
    mem: &'a Mem,
    chain: DescriptorChain<&'a Mem>,
    bufs: &mut ChainBufs<'a>,
) -> (Result<usize, GuestMemoryError>, Result<usize, GuestMemoryError>) {
    bufs.readable.clear();
    bufs.writable.clear();
    let (mut readable, mut writable) = (Ok(0usize), Ok(0usize));
    for desc in chain {
        let (side, slices) = if desc.is_write_only() {
            (&mut writable, &mut bufs.writable)
        } else {
            (&mut readable, &mut bufs.readable)
        };
        let Ok(total) = side else { continue };
        // A chain is at most a queue of u32 lengths: this cannot overflow on 64-bit hosts.
        let len = desc.len() as usize;
        let pushed =
            total.checked_add(len).ok_or(GuestMemoryError::InvalidGuestAddress(desc.addr())).and_then(|total| {
                for slice in GuestMemoryBackend::get_slices(mem, desc.addr(), len) {
                    slices.push(slice?);
                }
                Ok(total)
            });
        *side = pushed;
    }
    (readable, writable)
}

/// Linux's limit on iovecs per call (UIO_MAXIOV).
const IOV_MAX: usize = 1024;

/// Runs `op` (a positioned vectored read or write) until every byte of `iov` has
/// moved: once for any ordinary run, again only after a short transfer. `op` gets the
/// iovecs still to do (at most [`IOV_MAX`]) and the file offset to do them at.
fn transfer_all(
    iov: &mut [libc::iovec],
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

    /// A batch of requests, request `i` with its header at `HDR + 32 i`, its status byte
    /// at `STATUS + i` (set to 0xff) and `len` data bytes at `DATA + at`.
    fn batch(r: &Rig, mock: &MockSplitQueue<'_, GuestMemoryMmap>, reqs: &[(u32, u64, u64, u32)]) {
        let mut chains: Vec<Vec<(u64, u32, u16)>> = Vec::new();
        for (i, &(request_type, sector, at, len)) in reqs.iter().enumerate() {
            let hdr = HDR + 32 * i as u64;
            r.m.write_obj(request_type, GuestAddress(hdr)).unwrap();
            r.m.write_obj(0u32, GuestAddress(hdr + 4)).unwrap();
            r.m.write_obj(sector, GuestAddress(hdr + 8)).unwrap();
            r.m.write_obj(0xffu8, GuestAddress(STATUS + i as u64)).unwrap();
            let dir = if request_type == request_type::IN { WRITE } else { 0 };
            chains.push(vec![(hdr, 16, 0), (DATA + at, len, dir), (STATUS + i as u64, 1, WRITE)]);
        }
        let chains: Vec<&[(u64, u32, u16)]> = chains.iter().map(Vec::as_slice).collect();
        add_chains(mock, &chains);
    }

    fn statuses(r: &Rig, n: usize) -> Vec<u8> {
        let mut st = vec![0u8; n];
        r.m.read_slice(&mut st, GuestAddress(STATUS)).unwrap();
        st
    }

    fn both_paths(r: &Rig) -> [Block; 2] {
        let mapped = device(r, BlockOptions::default());
        assert!(mapped.is_mapped(), "a writable image in a temp file can be mapped");
        let plain = device(r, BlockOptions::default()).unmapped();
        assert!(!plain.is_mapped());
        [mapped, plain]
    }

    #[test]
    fn contiguous_reads_in_one_batch_each_get_their_sectors() {
        let r = rig(true);
        for mut blk in both_paths(&r) {
            r.m.write_slice(&[0u8; 8 * 512], GuestAddress(DATA)).unwrap();
            let mock = MockSplitQueue::new(&r.m, 16);
            // Sectors 4..8 then 8..10 (one run, buffers not in order), then 0..2 (a new run).
            let reqs = [
                (request_type::IN, 4, 0x1000, 2048),
                (request_type::IN, 8, 0, 1024),
                (request_type::IN, 0, 0x2000, 1024),
            ];
            batch(&r, &mock, &reqs);
            activate(&mut blk, &r, &mock, u64::MAX);
            assert_eq!(blk.process_queue(), 3);
            assert_eq!(statuses(&r, 3), vec![status::OK; 3]);
            assert_eq!((used_len(&mock, 0), used_len(&mock, 1), used_len(&mock, 2)), (2049, 1025, 1025));
            for (sector, at) in [(4u64, 0x1000u64), (7, 0x1000 + 3 * 512), (8, 0), (9, 512), (0, 0x2000), (1, 0x2200)] {
                let mut got = vec![0u8; 512];
                r.m.read_slice(&mut got, GuestAddress(DATA + at)).unwrap();
                assert_eq!(got, sector_pattern(sector), "sector {sector}");
            }
            assert_eq!(blk.completed(), 3);
        }
    }

    #[test]
    fn a_write_then_a_read_of_the_same_sectors_in_one_batch_reads_the_new_data() {
        let r = rig(true);
        for mut blk in both_paths(&r) {
            let mock = MockSplitQueue::new(&r.m, 16);
            r.m.write_slice(&[0x77; 1024], GuestAddress(DATA)).unwrap();
            r.m.write_slice(&[0u8; 1024], GuestAddress(DATA + 0x1000)).unwrap();
            batch(&r, &mock, &[(request_type::OUT, 20, 0, 1024), (request_type::IN, 20, 0x1000, 1024)]);
            activate(&mut blk, &r, &mock, u64::MAX);
            assert_eq!(blk.process_queue(), 2);
            assert_eq!(statuses(&r, 2), vec![status::OK; 2]);
            let mut got = vec![0u8; 1024];
            r.m.read_slice(&mut got, GuestAddress(DATA + 0x1000)).unwrap();
            assert_eq!(got, vec![0x77; 1024]);
            let mut on_disk = vec![0u8; 1024];
            r.image.as_file().read_exact_at(&mut on_disk, 20 * 512).unwrap();
            assert_eq!(on_disk, vec![0x77; 1024]);
        }
    }

    #[test]
    fn a_bad_request_inside_a_run_fails_alone() {
        let r = rig(true);
        for mut blk in both_paths(&r) {
            let mock = MockSplitQueue::new(&r.m, 16);
            r.m.write_slice(&[0x11; 3 * 512], GuestAddress(DATA)).unwrap();
            batch(
                &r,
                &mock,
                &[
                    (request_type::OUT, 30, 0, 512),
                    (request_type::OUT, 31, 512, 100), // not whole sectors
                    (request_type::OUT, 31, 1024, 512),
                    (request_type::OUT, SECTORS, 1024, 512), // past the end
                ],
            );
            activate(&mut blk, &r, &mock, u64::MAX);
            assert_eq!(blk.process_queue(), 4);
            assert_eq!(statuses(&r, 4), vec![status::OK, status::IOERR, status::OK, status::IOERR]);
            let mut on_disk = vec![0u8; 3 * 512];
            r.image.as_file().read_exact_at(&mut on_disk, 30 * 512).unwrap();
            assert_eq!(&on_disk[..1024], &[0x11; 1024][..]);
            assert_eq!(&on_disk[1024..], &sector_pattern(32)[..], "sector 32 untouched");
            assert_eq!((blk.completed(), blk.failed()), (2, 2));
        }
    }

    #[test]
    fn an_image_shrunk_under_the_device_fails_only_the_requests_past_its_end() {
        let r = rig(true);
        for mut blk in both_paths(&r) {
            r.image.as_file().set_len(SECTORS * SECTOR_SIZE / 2).unwrap(); // 256 sectors remain
            let mock = MockSplitQueue::new(&r.m, 16);
            let reqs: Vec<(u32, u64, u64, u32)> =
                (0..4).map(|i| (request_type::IN, 192 + 32 * i, 0x4000 * i, 0x4000)).collect();
            batch(&r, &mock, &reqs); // sectors 192..320 in one run: half of it is gone
            activate(&mut blk, &r, &mock, u64::MAX);

            assert_eq!(blk.process_queue(), 4);

            assert_eq!(statuses(&r, 4), vec![status::OK, status::OK, status::IOERR, status::IOERR]);
            let mut got = vec![0u8; 512];
            r.m.read_slice(&mut got, GuestAddress(DATA + 0x8000 - 512)).unwrap();
            assert_eq!(got, sector_pattern(255));
            // The device still serves what is left, and still refuses what is gone.
            let (st, _) = one_request(&r, &mut blk, request_type::IN, 10, (512, WRITE));
            assert_eq!(st, status::OK);
            let mut got = vec![0u8; 512];
            r.m.read_slice(&mut got, GuestAddress(DATA)).unwrap();
            assert_eq!(got, sector_pattern(10));
            let (st, _) = one_request(&r, &mut blk, request_type::IN, 300, (512, WRITE));
            assert_eq!(st, status::IOERR);
            r.image
                .as_file()
                .write_all_at(&(256..SECTORS).flat_map(sector_pattern).collect::<Vec<u8>>(), 256 * 512)
                .unwrap();
        }
    }

    #[test]
    fn a_mapped_write_past_a_shrunk_image_is_an_io_error_and_does_not_grow_it() {
        let r = rig(true);
        let mut blk = device(&r, BlockOptions::default());
        assert!(blk.is_mapped());
        r.image.as_file().set_len(64 * 512).unwrap();
        r.m.write_slice(&[0x42; 4096], GuestAddress(DATA)).unwrap();
        let (st, used) = one_request(&r, &mut blk, request_type::OUT, 100, (4096, 0));
        assert_eq!((st, used), (status::IOERR, 1));
        assert_eq!(r.image.as_file().metadata().unwrap().len(), 64 * 512);
        let (st, _) = one_request(&r, &mut blk, request_type::OUT, 8, (4096, 0));
        assert_eq!(st, status::OK, "pages before the end are still the image");
        let mut on_disk = vec![0u8; 4096];
        r.image.as_file().read_exact_at(&mut on_disk, 8 * 512).unwrap();
        assert_eq!(on_disk, vec![0x42; 4096]);
    }

    #[test]
    fn a_read_only_image_is_mapped_read_only_and_still_refuses_writes() {
        let r = rig(true);
        let opts = BlockOptions { read_only: true, id: String::new() };
        let mut blk = Block::open(r.image.as_path(), opts, EventFd::new(EFD_NONBLOCK).unwrap()).unwrap();
        assert!(blk.is_mapped());
        let (st, _) = one_request(&r, &mut blk, request_type::IN, 2, (1024, WRITE));
        assert_eq!(st, status::OK);
        let (st, _) = one_request(&r, &mut blk, request_type::OUT, 2, (1024, 0));
        assert_eq!(st, status::IOERR);
        let mut on_disk = vec![0u8; 512];
        r.image.as_file().read_exact_at(&mut on_disk, 2 * 512).unwrap();
        assert_eq!(on_disk, sector_pattern(2));
    }

    #[test]
    fn a_sigbus_outside_any_image_still_ends_the_process() {
        // The handler is installed by mapping an image; then a child process faults on a
        // mapping of its own that no device registered.
        let r = rig(true);
        let blk = device(&r, BlockOptions::default());
        assert!(blk.is_mapped());
        let other = TempFile::new().unwrap();
        other.as_file().set_len(4096).unwrap();
        #[allow(unsafe_code)]
        // SAFETY: a fresh private read-only mapping of a 4 KiB file; the file is then
        // emptied, so touching the page raises SIGBUS. The child only reads that byte and
        // exits (async-signal-safe operations only, as required after fork in a
        // multi-threaded process); the parent only waits for it.
        let (pid, status) = unsafe {
            let p = libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ,
                libc::MAP_SHARED,
                other.as_file().as_raw_fd(),
                0,
            );
            assert_ne!(p, libc::MAP_FAILED);
            other.as_file().set_len(0).unwrap();
            let pid = libc::fork();
            if pid == 0 {
                std::ptr::read_volatile(p.cast::<u8>());
                libc::_exit(0);
            }
            let mut status = 0;
            libc::waitpid(pid, &mut status, 0);
            libc::munmap(p, 4096);
            (pid, status)
        };
        assert!(pid > 0);
        assert!(libc::WIFSIGNALED(status), "the child survived a fault no device owns: {status:#x}");
        assert_eq!(libc::WTERMSIG(status), libc::SIGBUS);
    }

    #[test]
    fn a_sparse_image_on_tmpfs_is_not_mapped_and_a_filled_one_is() {
        let shm = Path::new("/dev/shm");
        if !shm.is_dir() {
            return; // no tmpfs to try
        }
        let image = TempFile::new_in(shm).unwrap();
        image.as_file().set_len(64 * 512).unwrap();
        let sparse = Block::open(image.as_path(), BlockOptions::default(), EventFd::new(0).unwrap()).unwrap();
        image.as_file().write_all_at(&[1u8; 64 * 512], 0).unwrap();
        let filled = Block::open(image.as_path(), BlockOptions::default(), EventFd::new(0).unwrap()).unwrap();
        assert!(!sparse.is_mapped(), "reading its holes through a mapping would allocate tmpfs pages");
        assert!(filled.is_mapped());
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
