//! virtio-net's shared-memory ring backend ([`RingBackend`], `--net ring=PATH[,size=N]`)
//! and its other end ([`RingPeer`]): frames move through two single-producer,
//! single-consumer byte rings in a file both sides map, with no system call per frame.
//!
//! # The file
//!
//! cvmm creates PATH (replacing what was there), sizes it to `2 * (4096 + N)` bytes,
//! allocates its blocks (so a full tmpfs fails at start, not in the middle of a copy)
//! and maps it `MAP_SHARED`. It holds two rings, the **tx ring** (device -> peer) at
//! offset 0 and the **rx ring** (peer -> device) at offset `4096 + N`. Each ring is a
//! 4096-byte header followed by `N` bytes of data; `N` (`size=`, default
//! [`DEFAULT_RING_SIZE`]) is a multiple of 4096 from [`MIN_RING_SIZE`] to [`MAX_RING_SIZE`].
//! Every integer is little-endian (x86_64's order; cvmm runs nowhere else).
//!
//! | header offset | size | field | written by |
//! |---|---|---|---|
//! | 0 | 8 | magic [`RING_MAGIC`] (`b"CVMMRING"`) | cvmm, at creation, last |
//! | 8 | 4 | version [`RING_VERSION`] (1) | cvmm, at creation |
//! | 16 | 8 | data size `N` | cvmm, at creation |
//! | 64 | 8 | producer counter: bytes ever published | the producer |
//! | 72 | 4 | producer waiting (1: blocked on a full ring) | the producer |
//! | 128 | 8 | consumer counter: bytes ever consumed | the consumer |
//! | 136 | 4 | consumer waiting (1: blocked on an empty ring) | the consumer |
//!
//! The counters start at 0 and only grow; the producer's and the consumer's sit on
//! their own 64-byte cache lines. A counter `c` is at data offset `c % N`, the ring
//! holds `producer - consumer` bytes (never more than `N`).
//!
//! # Records
//!
//! Data are records. A record starts at a multiple of [`RECORD_ALIGN`] (64) bytes with a
//! 64-byte header ([`RECORD_HEADER_LEN`]) whose first 4 bytes are the frame's length `L`
//! (little-endian; the other 60 are reserved: not written by cvmm, ignored by readers),
//! followed by `L` bytes of Ethernet frame (no virtio header), `1 <= L <=`
//! [`MAX_FRAME_LEN`]; the record is padded to a multiple of 64, so it occupies
//! `64 + L` rounded up to 64 bytes. (The file backend's record is the same length
//! and frame without the padding. The frame starts on a cache line because glibc's
//! memcpy into a destination 4 or 8 bytes past a 32-byte boundary ran 22-30% slower
//! on the benchmark's host.) A record never wraps around the end of the data area:
//! when the next record does not fit before the end, the producer writes the **wrap
//! marker** [`WRAP_MARKER`] (`0xffff_ffff`) as the length at the current offset, which
//! means "the rest of the data area is padding", counts those bytes as published, and
//! writes the record at data offset 0. (Records are 64-aligned, so at least 64 bytes
//! are left whenever any are.)
//!
//! Producing: wait until `N - (producer - consumer)` covers the record (and the padding
//! before it, if it wraps), write the record's bytes, then publish with a release store
//! of the producer counter (one per burst is enough). Consuming: an acquire load of the
//! producer counter, read whole records up to it, then a release store of the consumer
//! counter.
//!
//! # Wake-ups
//!
//! The device is woken through a FIFO, the **doorbell**, at `PATH.kick` (cvmm creates
//! it with mode 0600 if missing and keeps it open for reading and writing, so a peer
//! can open it write-only at any time). It has no queue of its own to wake the peer:
//! the peer polls (or sleeps between looks).
//!
//! - **tx backpressure**: when the tx ring has no room for a frame, the device sets
//!   the tx ring's *producer waiting* word to 1, looks at the consumer counter once
//!   more, and if there is still no room leaves that frame and the ones after it in
//!   the guest's queue (nothing is dropped) until the doorbell rings.
//! - **rx**: frames wait in the rx ring until the guest has posted rx buffers; when
//!   the guest has a buffer and the ring is empty, the device sets the rx ring's
//!   *consumer waiting* word to 1 (and looks again) before it sleeps.
//! - **the peer**, after it consumes from the tx ring or publishes to the rx ring,
//!   issues a full fence and reads the other side's waiting word; if it is 1, the
//!   peer writes one byte to the doorbell (non-blocking; a full pipe already means a
//!   pending wake-up). The device clears its waiting word when it gets going again.
//!
//! The store-fence-load on both sides means one of them sees the other's write: a
//! waiting device is always woken.
//!
//! # Trust
//!
//! Another process can write anything into the file at any time, or shrink it.
//! Each side keeps its own counters privately and only publishes them; every word read
//! from the other side is read once and checked: a consumer counter must lie between
//! its last value and the producer's counter, a producer counter between its last value
//! and `consumer + N`, a record length must be 1 to [`MAX_FRAME_LEN`] or the wrap
//! marker, and the record must lie within the published bytes and before the end of
//! the data area. Anything else breaks that ring for good (the device counts it:
//! a broken tx ring drops and counts every later frame; a broken rx ring is counted
//! once and receives nothing more). A shrunk file turns the accesses that fault into
//! errors (`super::mapped_image`'s SIGBUS handler), which break the ring the same way.
//! The header fields written at creation are never read back by cvmm.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{fence, Ordering};

use vm_memory::VolatileSlice;

use super::mapped_image::MappedImage;
use super::net::{send_bytes_as_batch, send_slices_as_batch, NetBackend, NetError, MAX_FRAME_LEN};

/// `b"CVMMRING"` read as a little-endian 64-bit word.
pub const RING_MAGIC: u64 = u64::from_le_bytes(*b"CVMMRING");
/// The layout's version.
pub const RING_VERSION: u32 = 1;
/// Bytes of each ring's header (the data area starts page-aligned after it).
pub const RING_HEADER_LEN: usize = 4096;
/// Data bytes per ring when `size=` is not given.
pub const DEFAULT_RING_SIZE: usize = 4 << 20;
/// Smallest data area: room for the largest record with some to spare.
pub const MIN_RING_SIZE: usize = 128 << 10;
/// Largest data area.
pub const MAX_RING_SIZE: usize = 1 << 30;
/// The length that marks the rest of the data area as padding.
pub const WRAP_MARKER: u32 = u32::MAX;
/// Records start at multiples of this.
pub const RECORD_ALIGN: usize = 64;
/// Size of a record's header (the 4-byte length, then reserved bytes); the frame
/// follows it.
pub const RECORD_HEADER_LEN: usize = 64;

const OFF_MAGIC: usize = 0;
const OFF_VERSION: usize = 8;
const OFF_DATA_SIZE: usize = 16;
const OFF_PRODUCER: usize = 64;
const OFF_PRODUCER_WAITING: usize = 72;
const OFF_CONSUMER: usize = 128;
const OFF_CONSUMER_WAITING: usize = 136;

/// Errors of the ring file and of the data read from it.
#[derive(Debug, thiserror::Error)]
pub enum RingError {
    /// The data size is not a multiple of 4096 within the limits.
    #[error("ring size {0} is not a multiple of 4096 from {MIN_RING_SIZE} to {MAX_RING_SIZE}")]
    Size(u64),
    /// The ring file or its doorbell could not be created, opened or sized.
    #[error("ring file {path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// OS error.
        #[source]
        source: io::Error,
    },
    /// The ring file could not be mapped.
    #[error("ring file {0}: cannot be mapped")]
    Map(PathBuf),
    /// The file does not hold a ring of this layout.
    #[error("ring file {path}: {what}")]
    Layout {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// The other side published a counter that cannot be.
    #[error("{ring} ring: the {which} counter went to {value}, outside {low}..={high}")]
    Counter {
        /// "tx" or "rx".
        ring: &'static str,
        /// "producer" or "consumer".
        which: &'static str,
        /// What was read.
        value: u64,
        /// The lowest value it could have.
        low: u64,
        /// The highest value it could have.
        high: u64,
    },
    /// A record the other side published is malformed.
    #[error("{ring} ring: record at counter {at} has length {len:#x} ({why})")]
    Record {
        /// "tx" or "rx".
        ring: &'static str,
        /// The consumer counter where it starts.
        at: u64,
        /// Its length field.
        len: u32,
        /// What is wrong with it.
        why: &'static str,
    },
    /// Accessing the mapping failed (the file was shrunk under it).
    #[error("{ring} ring: the mapping faulted: {source}")]
    Fault {
        /// "tx" or "rx".
        ring: &'static str,
        /// The error the access gave.
        #[source]
        source: io::Error,
    },
    /// The ring was broken earlier (by one of the errors above) and is not used again.
    #[error("{0} ring: broken earlier")]
    Broken(&'static str),
}

impl From<RingError> for io::Error {
    fn from(e: RingError) -> Self {
        io::Error::new(io::ErrorKind::InvalidData, e)
    }
}

/// Checks a data size given as `size=N`.
pub fn check_ring_size(size: u64) -> Result<usize, RingError> {
    usize::try_from(size)
        .ok()
        .filter(|s| s % 4096 == 0 && (MIN_RING_SIZE..=MAX_RING_SIZE).contains(s))
        .ok_or(RingError::Size(size))
}

/// Bytes a record of a `len`-byte frame occupies.
pub fn record_len(len: usize) -> usize {
    (RECORD_HEADER_LEN + len).next_multiple_of(RECORD_ALIGN)
}

/// The doorbell FIFO of the ring file at `path`: `PATH.kick`.
pub fn doorbell_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".kick");
    PathBuf::from(p)
}

/// Where one ring sits in the mapping.
#[derive(Debug, Clone, Copy)]
struct RingAt {
    name: &'static str,
    /// Offset of its header.
    header: usize,
    /// Its data size (a multiple of 4096).
    size: u64,
}

impl RingAt {
    fn data(&self, counter: u64) -> usize {
        self.header + RING_HEADER_LEN + (counter % self.size) as usize
    }

    fn fault(&self) -> impl FnOnce(io::Error) -> RingError {
        let ring = self.name;
        move |source| RingError::Fault { ring, source }
    }
}

/// The producing side of one ring: its own counter, what it last saw of the consumer's.
#[derive(Debug)]
struct Producer {
    at: RingAt,
    head: u64,
    published: u64,
    tail: u64,
    waiting: bool,
    broken: bool,
}

impl Producer {
    fn new(at: RingAt, head: u64, tail: u64) -> Self {
        Self { at, head, published: head, tail, waiting: false, broken: false }
    }

    /// Reads the consumer counter once and checks it.
    fn refresh(&mut self, map: &MappedImage) -> Result<(), RingError> {
        let value = map.load_u64(self.at.header + OFF_CONSUMER, Ordering::Acquire).map_err(self.at.fault())?;
        if value < self.tail || value > self.head {
            return Err(RingError::Counter {
                ring: self.at.name,
                which: "consumer",
                value,
                low: self.tail,
                high: self.head,
            });
        }
        self.tail = value;
        Ok(())
    }

    /// Makes room for a record of `rec` bytes (writing a wrap marker if it would
    /// cross the end): the data offset to write it at, `None` when the ring is full
    /// (after the waiting word is set, if `wait`).
    fn reserve(&mut self, map: &MappedImage, rec: u64, wait: bool) -> Result<Option<usize>, RingError> {
        let result = self.try_reserve(map, rec, wait);
        if result.is_err() {
            self.broken = true;
        }
        result
    }

    fn try_reserve(&mut self, map: &MappedImage, rec: u64, wait: bool) -> Result<Option<usize>, RingError> {
        if self.broken {
            return Err(RingError::Broken(self.at.name));
        }
        let pos = self.head % self.at.size;
        let to_end = self.at.size - pos;
        let need = if rec <= to_end { rec } else { to_end + rec };
        if self.at.size - (self.head - self.tail) < need {
            self.refresh(map)?;
        }
        if self.at.size - (self.head - self.tail) < need {
            if !wait {
                return Ok(None);
            }
            // Publish what is there, say so, and look once more (the consumer looks at
            // the word after it consumes).
            self.publish(map)?;
            let word = self.at.header + OFF_PRODUCER_WAITING;
            map.store_u32(word, 1, Ordering::SeqCst).map_err(self.at.fault())?;
            self.waiting = true;
            fence(Ordering::SeqCst);
            self.refresh(map)?;
            if self.at.size - (self.head - self.tail) < need {
                return Ok(None);
            }
        }
        if self.waiting {
            map.store_u32(self.at.header + OFF_PRODUCER_WAITING, 0, Ordering::Relaxed).map_err(self.at.fault())?;
            self.waiting = false;
        }
        if rec > to_end {
            map.store_u32(self.at.data(self.head), WRAP_MARKER, Ordering::Relaxed).map_err(self.at.fault())?;
            self.head += to_end;
        }
        Ok(Some(self.at.data(self.head)))
    }

    /// Publishes the records written so far (release store of the counter).
    fn publish(&mut self, map: &MappedImage) -> Result<(), RingError> {
        if self.published != self.head {
            map.store_u64(self.at.header + OFF_PRODUCER, self.head, Ordering::Release).map_err(self.at.fault())?;
            self.published = self.head;
        }
        Ok(())
    }
}

/// A record found by [`Consumer::next`].
#[derive(Debug, Clone, Copy)]
struct Record {
    /// Offset of the frame in the mapping.
    frame: usize,
    len: usize,
    /// Bytes it occupies.
    rec: u64,
}

/// The consuming side of one ring: its own counter, what it last saw of the producer's.
#[derive(Debug)]
struct Consumer {
    at: RingAt,
    tail: u64,
    head: u64,
    waiting: bool,
    broken: bool,
}

impl Consumer {
    fn new(at: RingAt, tail: u64, head: u64) -> Self {
        Self { at, tail, head, waiting: false, broken: false }
    }

    /// Reads the producer counter once and checks it.
    fn refresh(&mut self, map: &MappedImage) -> Result<(), RingError> {
        let value = map.load_u64(self.at.header + OFF_PRODUCER, Ordering::Acquire).map_err(self.at.fault())?;
        let high = self.tail + self.at.size;
        if value < self.head || value > high {
            return Err(RingError::Counter { ring: self.at.name, which: "producer", value, low: self.head, high });
        }
        self.head = value;
        Ok(())
    }

    /// The next whole record, `None` when the ring is empty (after the waiting word is
    /// set, if `wait`). Wrap markers are skipped.
    fn next(&mut self, map: &MappedImage, wait: bool) -> Result<Option<Record>, RingError> {
        if self.broken {
            return Err(RingError::Broken(self.at.name));
        }
        let result = self.try_next(map, wait);
        if result.is_err() {
            self.broken = true;
        }
        result
    }

    fn try_next(&mut self, map: &MappedImage, wait: bool) -> Result<Option<Record>, RingError> {
        loop {
            if self.tail == self.head {
                self.refresh(map)?;
            }
            if self.tail == self.head {
                if !wait {
                    return Ok(None);
                }
                let word = self.at.header + OFF_CONSUMER_WAITING;
                map.store_u32(word, 1, Ordering::SeqCst).map_err(self.at.fault())?;
                self.waiting = true;
                fence(Ordering::SeqCst);
                self.refresh(map)?;
                if self.tail == self.head {
                    return Ok(None);
                }
            }
            if self.waiting {
                map.store_u32(self.at.header + OFF_CONSUMER_WAITING, 0, Ordering::Relaxed).map_err(self.at.fault())?;
                self.waiting = false;
            }
            let avail = self.head - self.tail;
            let to_end = self.at.size - self.tail % self.at.size;
            let bad = |len, why| RingError::Record { ring: self.at.name, at: self.tail, len, why };
            if avail < RECORD_ALIGN as u64 {
                return Err(bad(0, "less than a record published"));
            }
            // Read once: the length is copied out of the mapping and only the copy is used.
            let len = map.load_u32(self.at.data(self.tail), Ordering::Relaxed).map_err(self.at.fault())?;
            if len == WRAP_MARKER {
                if to_end == self.at.size || to_end > avail {
                    return Err(bad(len, "a wrap marker at the start or beyond the published bytes"));
                }
                self.tail += to_end;
                continue;
            }
            if len == 0 || len as usize > MAX_FRAME_LEN {
                return Err(bad(len, "not 1 to 65550"));
            }
            let rec = record_len(len as usize) as u64;
            if rec > to_end || rec > avail {
                return Err(bad(len, "past the end of the data area or of the published bytes"));
            }
            return Ok(Some(Record { frame: self.at.data(self.tail) + RECORD_HEADER_LEN, len: len as usize, rec }));
        }
    }

    /// Consumes `record` (release store of the counter).
    fn release(&mut self, map: &MappedImage, record: Record) -> Result<(), RingError> {
        self.tail += record.rec;
        map.store_u64(self.at.header + OFF_CONSUMER, self.tail, Ordering::Release).map_err(|e| {
            self.broken = true;
            self.at.fault()(e)
        })
    }
}

/// The two rings of a file whose data areas are `size` bytes.
fn rings(size: usize) -> (RingAt, RingAt) {
    let size64 = size as u64;
    (
        RingAt { name: "tx", header: 0, size: size64 },
        RingAt { name: "rx", header: RING_HEADER_LEN + size, size: size64 },
    )
}

/// Maps `file` (its first `len` bytes) read-write.
fn map(file: &File, len: usize, path: &Path) -> Result<MappedImage, RingError> {
    MappedImage::new(file, len as u64, true).ok_or_else(|| RingError::Map(path.to_path_buf()))
}

/// The device's side of a ring file (see the module documentation).
#[derive(Debug)]
pub struct RingBackend {
    map: MappedImage,
    tx: Producer,
    rx: Consumer,
    doorbell: File,
    path: PathBuf,
}

impl RingBackend {
    /// Creates (or replaces) the ring file at `path` with data areas of `size` bytes,
    /// and its doorbell FIFO `PATH.kick` if missing.
    pub fn create(path: &Path, size: usize) -> Result<Self, NetError> {
        Self::create_ring(path, size).map_err(NetError::Ring)
    }

    fn create_ring(path: &Path, size: usize) -> Result<Self, RingError> {
        let size = check_ring_size(size as u64)?;
        let file_err = |p: &Path| {
            let path = p.to_path_buf();
            move |source| RingError::File { path, source }
        };
        let len = 2 * (RING_HEADER_LEN + size);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)
            .map_err(file_err(path))?;
        allocate(&file, len).map_err(file_err(path))?;
        let map = map(&file, len, path)?;
        let doorbell = open_doorbell(&doorbell_path(path)).map_err(file_err(&doorbell_path(path)))?;
        let (tx, rx) = rings(size);
        for ring in [tx, rx] {
            let init = |off, v: u64| map.store_u64(ring.header + off, v, Ordering::Relaxed);
            let written = init(OFF_DATA_SIZE, size as u64)
                .and_then(|()| map.store_u32(ring.header + OFF_VERSION, RING_VERSION, Ordering::Relaxed))
                .and_then(|()| init(OFF_MAGIC, RING_MAGIC));
            written.map_err(ring.fault())?;
        }
        fence(Ordering::Release);
        Ok(Self { map, tx: Producer::new(tx, 0, 0), rx: Consumer::new(rx, 0, 0), doorbell, path: path.to_path_buf() })
    }

    /// The ring file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Gives `file` `len` bytes, all allocated.
fn allocate(file: &File, len: usize) -> io::Result<()> {
    #[allow(unsafe_code)]
    // SAFETY: plain system call on an open descriptor; no memory is passed.
    let ret = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len as libc::off_t) };
    if ret != 0 {
        return Err(io::Error::from_raw_os_error(ret));
    }
    Ok(())
}

/// Creates the FIFO at `path` if missing (refusing anything else there) and opens it
/// for reading and writing, non-blocking (Linux: never blocks, never reads EOF).
fn open_doorbell(path: &Path) -> io::Result<File> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_fifo() => {}
        Ok(_) => return Err(io::Error::new(io::ErrorKind::AlreadyExists, "exists and is not a FIFO")),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let c = std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str()))
                .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
            #[allow(unsafe_code)]
            // SAFETY: `c` is a NUL-terminated path that outlives the call.
            if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Err(e) => return Err(e),
    }
    OpenOptions::new().read(true).write(true).custom_flags(libc::O_NONBLOCK).open(path)
}

impl NetBackend for RingBackend {
    fn send(&mut self, frame: &[u8]) -> io::Result<()> {
        send_bytes_as_batch(self, frame)
    }

    fn send_slices(&mut self, parts: &[VolatileSlice<'_>]) -> io::Result<()> {
        send_slices_as_batch(self, parts)
    }

    /// Each frame is copied into the tx ring as a record, one memcpy per part straight
    /// from guest memory; the burst is published with one store. A full ring answers
    /// `WouldBlock` (the device keeps the rest queued until the doorbell rings).
    fn send_frames(&mut self, frames: &[&[VolatileSlice<'_>]]) -> (usize, Option<io::Error>) {
        let mut sent = 0;
        let mut error = None;
        for parts in frames {
            let len: usize = parts.iter().map(VolatileSlice::len).sum();
            if len == 0 || len > MAX_FRAME_LEN {
                error = Some(io::Error::from_raw_os_error(libc::EMSGSIZE));
                break;
            }
            let rec = record_len(len);
            let at = match self.tx.reserve(&self.map, rec as u64, true) {
                Ok(Some(at)) => at,
                Ok(None) => {
                    error = Some(io::ErrorKind::WouldBlock.into());
                    break;
                }
                Err(e) => {
                    error = Some(e.into());
                    break;
                }
            };
            let copied = self
                .map
                .store_u32(at, len as u32, Ordering::Relaxed)
                .and_then(|()| self.map.copy_iter(true, at + RECORD_HEADER_LEN, len, parts.iter().copied()));
            if let Err(e) = copied {
                self.tx.broken = true;
                error = Some(RingError::Fault { ring: "tx", source: e }.into());
                break;
            }
            self.tx.head += rec as u64;
            sent += 1;
        }
        if let Err(e) = self.tx.publish(&self.map) {
            self.tx.broken = true;
            error.get_or_insert(e.into());
        }
        (sent, error)
    }

    /// The next record of the rx ring, if one is published (a frame longer than `buf`
    /// is truncated). A malformed ring fails once with `InvalidData`, then is empty.
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        if self.rx.broken {
            return Ok(None);
        }
        let Some(record) = self.rx.next(&self.map, true)? else { return Ok(None) };
        let take = record.len.min(buf.len());
        let dst = VolatileSlice::from(&mut buf[..take]);
        if let Err(e) = self.map.copy_iter(false, record.frame, take, std::iter::once(dst)) {
            self.rx.broken = true;
            return Err(RingError::Fault { ring: "rx", source: e }.into());
        }
        self.rx.release(&self.map, record)?;
        Ok(Some(take))
    }

    /// The doorbell's descriptor (watched, as [`NetBackend::doorbell`]).
    fn raw_fd(&self) -> RawFd {
        self.doorbell.as_raw_fd()
    }

    fn pulled(&self) -> bool {
        true
    }

    fn doorbell(&self) -> Option<RawFd> {
        Some(self.doorbell.as_raw_fd())
    }

    fn ack_doorbell(&mut self) {
        let mut buf = [0u8; 64];
        while matches!(self.doorbell.read(&mut buf), Ok(n) if n > 0) {}
    }
}

/// The other end of a ring file, for programs that exchange frames with a VM (tests
/// and the benchmark use it; the module documentation is the whole protocol, for
/// programs in other languages). Frames it receives are the ones the guest sent.
/// Open it after cvmm has created the file (cvmm replaces the file when it starts).
#[derive(Debug)]
pub struct RingPeer {
    map: MappedImage,
    /// The device's tx ring, consumed here.
    tx: Consumer,
    /// The device's rx ring, produced here.
    rx: Producer,
    doorbell: Option<File>,
    kicks: u64,
}

impl RingPeer {
    /// Opens the ring file at `path` and checks both headers; opens the doorbell too
    /// when `PATH.kick` can be opened for writing (no wake-ups are sent otherwise).
    pub fn open(path: &Path) -> Result<Self, RingError> {
        let file_err = |source| RingError::File { path: path.to_path_buf(), source };
        let file = OpenOptions::new().read(true).write(true).open(path).map_err(file_err)?;
        let len = file.metadata().map_err(file_err)?.len();
        let layout = |what: String| RingError::Layout { path: path.to_path_buf(), what };
        let short = || layout(format!("{len} bytes is too short"));
        let head_len = usize::try_from(len).map_err(|_| short())?;
        if head_len < RING_HEADER_LEN {
            return Err(short());
        }
        let map = map(&file, head_len, path)?;
        let fault = |source| RingError::Fault { ring: "tx", source };
        let size = map.load_u64(OFF_DATA_SIZE, Ordering::Relaxed).map_err(fault)?;
        let size = check_ring_size(size)?;
        if head_len != 2 * (RING_HEADER_LEN + size) {
            return Err(layout(format!("{len} bytes do not hold two rings of {size} bytes")));
        }
        let (tx, rx) = rings(size);
        for ring in [tx, rx] {
            let magic = map.load_u64(ring.header + OFF_MAGIC, Ordering::Acquire).map_err(ring.fault())?;
            let version = map.load_u32(ring.header + OFF_VERSION, Ordering::Relaxed).map_err(ring.fault())?;
            let data_size = map.load_u64(ring.header + OFF_DATA_SIZE, Ordering::Relaxed).map_err(ring.fault())?;
            if magic != RING_MAGIC || version != RING_VERSION || data_size != size as u64 {
                return Err(layout(format!(
                    "{} ring: magic {magic:#x}, version {version}, size {data_size}: not a version-{RING_VERSION} ring",
                    ring.name
                )));
            }
        }
        // Where the two sides stand now: the peer resumes at the consumer counter of tx
        // and the producer counter of rx (checked like anything else it reads).
        let load = |ring: RingAt, off| map.load_u64(ring.header + off, Ordering::Acquire).map_err(ring.fault());
        let (tx_tail, rx_head) = (load(tx, OFF_CONSUMER)?, load(rx, OFF_PRODUCER)?);
        let mut consumer = Consumer::new(tx, tx_tail, tx_tail);
        consumer.refresh(&map)?;
        let mut producer = Producer::new(rx, rx_head, rx_head.saturating_sub(size as u64));
        producer.refresh(&map)?;
        let doorbell = OpenOptions::new().write(true).custom_flags(libc::O_NONBLOCK).open(doorbell_path(path)).ok();
        Ok(Self { map, tx: consumer, rx: producer, doorbell, kicks: 0 })
    }

    /// Takes the next frame the guest sent into `buf`: its length (only the first
    /// `buf.len()` bytes are copied if it is longer), `None` when none is waiting.
    /// Rings the doorbell if the device waits for room.
    pub fn recv_frame(&mut self, buf: &mut [u8]) -> Result<Option<usize>, RingError> {
        let Some(record) = self.tx.next(&self.map, false)? else { return Ok(None) };
        let take = record.len.min(buf.len());
        let dst = VolatileSlice::from(&mut buf[..take]);
        self.map
            .copy_iter(false, record.frame, take, std::iter::once(dst))
            .map_err(|source| RingError::Fault { ring: "tx", source })?;
        self.tx.release(&self.map, record)?;
        self.kick_if(self.tx.at, OFF_PRODUCER_WAITING);
        Ok(Some(record.len))
    }

    /// Publishes `frame` (1 to [`MAX_FRAME_LEN`] bytes) to the guest: false when the
    /// rx ring has no room for it now. Rings the doorbell if the device waits for
    /// frames.
    pub fn send_frame(&mut self, frame: &[u8]) -> Result<bool, RingError> {
        if frame.is_empty() || frame.len() > MAX_FRAME_LEN {
            return Err(RingError::Record { ring: "rx", at: self.rx.head, len: frame.len() as u32, why: "not sent" });
        }
        let rec = record_len(frame.len());
        let Some(at) = self.rx.reserve(&self.map, rec as u64, false)? else { return Ok(false) };
        let mut body = frame.to_vec();
        let parts = [VolatileSlice::from(&mut body[..])];
        self.map
            .store_u32(at, frame.len() as u32, Ordering::Relaxed)
            .and_then(|()| self.map.copy_iter(true, at + RECORD_HEADER_LEN, frame.len(), parts.into_iter()))
            .map_err(|source| RingError::Fault { ring: "rx", source })?;
        self.rx.head += rec as u64;
        self.rx.publish(&self.map)?;
        self.kick_if(self.rx.at, OFF_CONSUMER_WAITING);
        Ok(true)
    }

    /// How many times this peer rang the doorbell.
    pub fn kicks(&self) -> u64 {
        self.kicks
    }

    /// After a store of a counter: a full fence, then the other side's waiting word;
    /// one byte to the doorbell if it is set.
    fn kick_if(&mut self, ring: RingAt, word: usize) {
        fence(Ordering::SeqCst);
        if self.map.load_u32(ring.header + word, Ordering::Relaxed).is_ok_and(|w| w != 0) {
            if let Some(d) = &mut self.doorbell {
                let _ = d.write(&[1]);
                self.kicks += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "cvmm-net-ring-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn send(b: &mut RingBackend, frame: &[u8]) -> (usize, Option<io::Error>) {
        let mut copy = frame.to_vec();
        let parts = [VolatileSlice::from(&mut copy[..])];
        b.send_frames(&[&parts])
    }

    /// Writes a little-endian u64/u32 at `off` of the file, as a hostile peer would.
    fn poke(path: &Path, off: u64, bytes: &[u8]) {
        use std::os::unix::fs::FileExt;
        OpenOptions::new().write(true).open(path).unwrap().write_all_at(bytes, off).unwrap();
    }

    #[test]
    fn the_file_layout_is_as_documented() {
        let d = dir();
        let path = d.join("layout");
        let mut b = RingBackend::create(&path, MIN_RING_SIZE).unwrap();
        assert_eq!(send(&mut b, b"abc").0, 1);

        // Read independently of the code under test.
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len(), 2 * (4096 + MIN_RING_SIZE));
        for h in [0, 4096 + MIN_RING_SIZE] {
            assert_eq!(&bytes[h..h + 8], b"CVMMRING");
            assert_eq!(&bytes[h + 8..h + 12], &1u32.to_le_bytes());
            assert_eq!(&bytes[h + 16..h + 24], &(MIN_RING_SIZE as u64).to_le_bytes());
        }
        assert_eq!(&bytes[64..72], &128u64.to_le_bytes(), "tx producer: one 128-byte record");
        assert_eq!(&bytes[4096..4100], &3u32.to_le_bytes());
        assert_eq!(&bytes[4096 + 64..4096 + 68], b"abc\0");
        assert!(std::fs::symlink_metadata(doorbell_path(&path)).unwrap().file_type().is_fifo());
    }

    #[test]
    fn frames_round_trip_both_ways_and_wrap_around_the_end() {
        let d = dir();
        let path = d.join("both");
        let mut b = RingBackend::create(&path, MIN_RING_SIZE).unwrap();
        let mut peer = RingPeer::open(&path).unwrap();
        let mut buf = vec![0u8; MAX_FRAME_LEN];
        // 5000-byte frames: 5008-byte records; 80 of them go round the 128 KiB ring 3 times.
        for i in 0..80u32 {
            let frame = vec![i as u8; 5000 + i as usize];
            assert!(send(&mut b, &frame).1.is_none(), "frame {i}");
            assert_eq!(peer.recv_frame(&mut buf).unwrap(), Some(frame.len()));
            assert_eq!(&buf[..frame.len()], &frame[..], "tx frame {i}");
            assert!(peer.send_frame(&frame).unwrap());
            assert_eq!(b.recv(&mut buf).unwrap(), Some(frame.len()));
            assert_eq!(&buf[..frame.len()], &frame[..], "rx frame {i}");
        }
        assert_eq!(peer.recv_frame(&mut buf).unwrap(), None);
        assert_eq!(b.recv(&mut buf).unwrap(), None);
    }

    #[test]
    fn a_full_tx_ring_refuses_with_would_block_and_sets_the_waiting_word() {
        let d = dir();
        let path = d.join("full");
        let mut b = RingBackend::create(&path, MIN_RING_SIZE).unwrap();
        let frame = vec![9u8; 60_000];
        assert!(send(&mut b, &frame).1.is_none());
        assert!(send(&mut b, &frame).1.is_none());

        let (sent, err) = send(&mut b, &frame);

        assert_eq!((sent, err.map(|e| e.kind())), (0, Some(io::ErrorKind::WouldBlock)));
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[72..76], &1u32.to_le_bytes(), "producer waiting");
        // The peer consumes one: it kicks, and there is room again.
        let mut peer = RingPeer::open(&path).unwrap();
        let mut buf = vec![0u8; MAX_FRAME_LEN];
        assert_eq!(peer.recv_frame(&mut buf).unwrap(), Some(60_000));
        assert_eq!(peer.kicks(), 1);
        let mut ring = [0u8; 8];
        assert!(b.doorbell.read(&mut ring).is_ok_and(|n| n == 1), "the doorbell rang");
        assert!(send(&mut b, &frame).1.is_none());
        assert_eq!(&std::fs::read(&path).unwrap()[72..76], &0u32.to_le_bytes(), "no longer waiting");
    }

    #[test]
    fn a_consumer_counter_out_of_range_breaks_tx_for_good() {
        let d = dir();
        for (name, value) in [("ahead of the producer", 200_000u64), ("huge", u64::MAX)] {
            let path = d.join(format!("txbad-{name}"));
            let mut b = RingBackend::create(&path, MIN_RING_SIZE).unwrap();
            let big = vec![1u8; 60_000];
            assert!(send(&mut b, &big).1.is_none());
            assert!(send(&mut b, &big).1.is_none());
            poke(&path, 128, &value.to_le_bytes());

            let (sent, err) = send(&mut b, &big);

            let err = err.expect("refused");
            assert_eq!((sent, err.kind()), (0, io::ErrorKind::InvalidData), "{name}");
            assert!(err.to_string().contains("consumer counter"), "{name}: {err}");
            // Even a consumer counter put right does not revive it.
            poke(&path, 128, &0u64.to_le_bytes());
            assert_eq!(send(&mut b, b"x").1.map(|e| e.kind()), Some(io::ErrorKind::InvalidData), "{name}");
        }
    }

    #[test]
    fn hostile_rx_counters_and_lengths_are_refused_once_then_nothing_is_received() {
        let d = dir();
        let rx = (4096 + MIN_RING_SIZE) as u64;
        let data = rx + 4096;
        type Pokes = Vec<(u64, Vec<u8>)>;
        let cases: [(&str, Pokes); 7] = [
            ("producer beyond the ring", vec![(rx + 64, (MIN_RING_SIZE as u64 + 8).to_le_bytes().to_vec())]),
            ("producer at u64::MAX", vec![(rx + 64, u64::MAX.to_le_bytes().to_vec())]),
            ("zero length", vec![(data, 0u32.to_le_bytes().to_vec()), (rx + 64, 128u64.to_le_bytes().to_vec())]),
            (
                "length above the maximum",
                vec![(data, 65_551u32.to_le_bytes().to_vec()), (rx + 64, 128u64.to_le_bytes().to_vec())],
            ),
            (
                "record beyond the published bytes",
                vec![(data, 100u32.to_le_bytes().to_vec()), (rx + 64, 128u64.to_le_bytes().to_vec())],
            ),
            (
                "wrap marker at the start",
                vec![(data, u32::MAX.to_le_bytes().to_vec()), (rx + 64, 128u64.to_le_bytes().to_vec())],
            ),
            ("less than a record", vec![(data, 1u32.to_le_bytes().to_vec()), (rx + 64, 32u64.to_le_bytes().to_vec())]),
        ];
        for (name, pokes) in cases {
            let path = d.join("rxbad");
            let mut b = RingBackend::create(&path, MIN_RING_SIZE).unwrap();
            for (off, bytes) in &pokes {
                poke(&path, *off, bytes);
            }
            let mut buf = vec![0u8; MAX_FRAME_LEN];

            let err = b.recv(&mut buf).unwrap_err();

            assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{name}");
            assert_eq!(b.recv(&mut buf).unwrap(), None, "{name}: nothing after that");
        }
    }

    #[test]
    fn a_ring_file_shrunk_under_the_mapping_breaks_the_ring_without_a_crash() {
        let d = dir();
        let path = d.join("shrunk");
        let mut b = RingBackend::create(&path, MIN_RING_SIZE).unwrap();
        OpenOptions::new().write(true).open(&path).unwrap().set_len(100).unwrap();

        let (sent, err) = send(&mut b, &[5u8; 3000]);

        assert_eq!(sent, 0);
        assert!(err.is_some());
        assert_eq!(b.recv(&mut [0u8; 64]).unwrap_err().kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn the_peer_refuses_files_that_are_not_rings() {
        let d = dir();
        let path = d.join("notring");
        std::fs::write(&path, vec![0u8; 2 * (4096 + MIN_RING_SIZE)]).unwrap();
        assert!(matches!(RingPeer::open(&path), Err(RingError::Size(0))));
        std::fs::write(&path, b"short").unwrap();
        assert!(matches!(RingPeer::open(&path), Err(RingError::Layout { .. })));
        let _b = RingBackend::create(&path, MIN_RING_SIZE).unwrap();
        poke(&path, 8, &2u32.to_le_bytes());
        let err = RingPeer::open(&path).unwrap_err();
        assert!(err.to_string().contains("version 2"), "{err}");
    }

    #[test]
    fn ring_sizes_must_be_whole_pages_within_limits() {
        assert_eq!(check_ring_size(1 << 20).unwrap(), 1 << 20);
        assert_eq!(check_ring_size(3 << 20).unwrap(), 3 << 20);
        for bad in [0, 4096, 124 << 10, (1 << 20) + 8, (1 << 30) + 4096, 1 << 31, u64::MAX] {
            assert!(matches!(check_ring_size(bad), Err(RingError::Size(v)) if v == bad), "{bad}");
        }
        let d = dir();
        assert!(matches!(RingBackend::create(&d.join("sz"), (3 << 20) + 64), Err(NetError::Ring(RingError::Size(_)))));
    }

    #[test]
    fn a_doorbell_path_that_is_not_a_fifo_is_refused() {
        let d = dir();
        let path = d.join("nofifo");
        std::fs::write(doorbell_path(&path), b"").unwrap();
        let err = RingBackend::create(&path, MIN_RING_SIZE).unwrap_err().to_string();
        assert!(err.contains("not a FIFO"), "{err}");
    }
}
