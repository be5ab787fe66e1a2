//! virtio-net: moves Ethernet frames between the guest's rx/tx queues and a host
//! backend ([`NetBackend`]: a tap device, a Unix datagram socket, files of
//! length-prefixed records (`super::net_file`), or shared-memory rings of such records
//! (`super::net_ring`)).
//!
//! Only VIRTIO_NET_F_MAC is offered: no offloads, no mergeable buffers. Every rx buffer
//! gets the 12-byte `virtio_net_hdr_v1` (all zero but `num_buffers = 1`) followed by one
//! whole frame; every tx chain is a header (ignored, so never read: nothing was
//! negotiated that could give it meaning) followed by one frame of at most
//! [`MAX_FRAME_LEN`] bytes. Tx frames go to the backend as slices of the shared-memory
//! view, in bursts of up to [`TX_BURST`] chains ([`NetBackend::send_frames`]), and a
//! burst's chains complete together, with at most one interrupt per call. On a Unix
//! socket, frames up to [`DIRECT_MAX`] bytes leave straight from guest memory, a burst
//! per `sendmmsg`; larger ones are copied once into a host buffer first (see
//! [`UnixDatagramBackend`]'s `send_frames` for why). On a tap, one `writev` per frame.
//! On a ring (`super::net_ring`), one memcpy per part into shared memory; a backend
//! with a doorbell ([`NetBackend::doorbell`], the ring) applies backpressure: chains it
//! has no room for stay in the guest's queue until the doorbell rings.
//!
//! Hostile input: a tx chain that is too short, too long, points outside shared memory,
//! or is write-only is completed with nothing sent and counted; an rx frame that finds
//! no buffer, or a buffer that is too small or unusable, is dropped and counted.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};
use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueT};
use vm_memory::volatile_memory::PtrGuard;
use vm_memory::{GuestAddressSpace, GuestMemoryBackend, GuestMemoryError, GuestRegionCollection, VolatileSlice};
use vmm_sys_util::eventfd::EventFd;

use super::shared_memory::SharedRegion;
use super::{device_id, read_config_bytes, ActivateContext, ActivateError, GuestMem, VirtioDevice, VirtioInterrupt};

/// Size of each queue.
pub const QUEUE_SIZE: u16 = 256;
/// Index of the receive queue.
pub const RX_QUEUE: usize = 0;
/// Index of the transmit queue.
pub const TX_QUEUE: usize = 1;
/// VIRTIO_NET_F_MAC: the device has a MAC address in its configuration.
pub const VIRTIO_NET_F_MAC: u64 = 1 << 5;
/// Size of `virtio_net_hdr_v1` (VERSION_1 always uses the 12-byte header).
pub const NET_HDR_LEN: usize = 12;
/// Largest frame (without the virtio header) cvmm moves in either direction.
pub const MAX_FRAME_LEN: usize = 65_550;
/// VIRTIO_NET_S_LINK_UP.
const LINK_UP: u16 = 1;
/// Most frames taken from the backend per wake-up, so tx is not starved.
const RX_BURST: usize = 64;
/// Most tx chains sent and completed together.
pub const TX_BURST: usize = 64;
/// Linux's limit on messages per `sendmmsg` (UIO_MAXIOV).
const UIO_MAXIOV: usize = 1024;
/// Largest frame the Unix datagram backend sends straight from guest memory; larger
/// ones (which the kernel copies into page fragments) go through its bounce buffer.
pub const DIRECT_MAX: usize = 16 << 10;
/// Page offset of a frame in the bounce buffer.
const BOUNCE_OFFSET: usize = 64;
const BOUNCE_PAGE: usize = 4096;

/// Errors from opening a backend.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The tap interface name is empty, too long, or contains a NUL.
    #[error("invalid tap interface name {0:?} (1 to 15 bytes, no NUL)")]
    TapName(String),
    /// /dev/net/tun could not be opened.
    #[error("cannot open /dev/net/tun: {0}")]
    OpenTun(#[source] io::Error),
    /// TUNSETIFF failed (usually: no CAP_NET_ADMIN, or the name is in use).
    #[error("TUNSETIFF {name}: {source}")]
    TunSetIff {
        /// Interface name.
        name: String,
        /// OS error.
        #[source]
        source: io::Error,
    },
    /// The Unix datagram socket could not be set up.
    #[error("unix datagram backend: {0}")]
    Socket(#[source] io::Error),
    /// The ring file of the ring backend could not be set up.
    #[error(transparent)]
    Ring(#[from] super::net_ring::RingError),
    /// A file of the file backend could not be opened.
    #[error("net file {path}: {source}")]
    File {
        /// The file.
        path: std::path::PathBuf,
        /// OS error.
        #[source]
        source: io::Error,
    },
}

/// Where frames go to and come from on the host. Frames are whole Ethernet frames with
/// no virtio header.
pub trait NetBackend: Send {
    /// Sends one frame.
    fn send(&mut self, frame: &[u8]) -> io::Result<()>;

    /// Sends one frame made of `parts` (guest memory, in order). The default gathers
    /// them into one buffer for [`NetBackend::send`]; backends that can send straight
    /// from the slices override it.
    fn send_slices(&mut self, parts: &[VolatileSlice<'_>]) -> io::Result<()> {
        self.send(&gather(parts))
    }

    /// Sends `frames` in order, each made of parts of guest memory, until one fails:
    /// returns how many were sent and, when not all were, why the next one was not (the
    /// caller counts that one dropped and carries on after it). The default sends them
    /// one by one with [`NetBackend::send_slices`].
    fn send_frames(&mut self, frames: &[&[VolatileSlice<'_>]]) -> (usize, Option<io::Error>) {
        for (i, parts) in frames.iter().enumerate() {
            if let Err(e) = self.send_slices(parts) {
                return (i, Some(e));
            }
        }
        (frames.len(), None)
    }

    /// Receives one frame into `buf`: `Ok(None)` when none is pending. A frame longer
    /// than `buf` may be truncated; the returned length is then `buf.len()`.
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>>;

    /// The descriptor that becomes readable when a frame is pending (for the event loop;
    /// not watched for a [`NetBackend::pulled`] backend).
    fn raw_fd(&self) -> RawFd;

    /// Whether received frames wait in the backend until the guest has an rx buffer for
    /// them (a file, read on demand: the device reads it when it starts and whenever the
    /// guest posts rx buffers), rather than arriving on their own (a tap, a socket: a
    /// frame that finds no buffer is dropped).
    fn pulled(&self) -> bool {
        false
    }

    /// For a [`NetBackend::pulled`] backend: a descriptor that becomes readable when the
    /// device should look again (frames arrived, or room came after a refused send).
    /// The device watches it and calls [`NetBackend::ack_doorbell`], then retries tx
    /// and rx. A backend with a doorbell applies backpressure: when `send_frames` fails
    /// with `WouldBlock`, the frame it names and those after it stay in the guest's
    /// queue until the doorbell rings (instead of being dropped).
    fn doorbell(&self) -> Option<RawFd> {
        None
    }

    /// Drains the doorbell (see [`NetBackend::doorbell`]).
    fn ack_doorbell(&mut self) {}
}

/// [`NetBackend::send_slices`] for a backend whose batch path
/// ([`NetBackend::send_frames`]) is its only way out: a batch of one.
pub(crate) fn send_slices_as_batch<B: NetBackend + ?Sized>(
    backend: &mut B,
    parts: &[VolatileSlice<'_>],
) -> io::Result<()> {
    match backend.send_frames(&[parts]) {
        (_, Some(e)) => Err(e),
        (_, None) => Ok(()),
    }
}

/// [`NetBackend::send`] for such a backend: the frame as one host slice.
pub(crate) fn send_bytes_as_batch<B: NetBackend + ?Sized>(backend: &mut B, frame: &[u8]) -> io::Result<()> {
    let mut copy = frame.to_vec();
    send_slices_as_batch(backend, &[VolatileSlice::from(&mut copy[..])])
}

/// The length of a frame made of `parts`.
fn frame_len(parts: &[VolatileSlice<'_>]) -> usize {
    parts.iter().map(VolatileSlice::len).sum()
}

/// Copies `parts` into one host buffer.
fn gather(parts: &[VolatileSlice<'_>]) -> Vec<u8> {
    let mut frame = vec![0u8; parts.iter().map(VolatileSlice::len).sum()];
    let mut done = 0;
    for p in parts {
        done += p.copy_to(&mut frame[done..]);
    }
    frame
}

fn would_block(r: io::Result<usize>) -> io::Result<Option<usize>> {
    match r {
        Ok(n) => Ok(Some(n)),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
        Err(e) => Err(e),
    }
}

/// One frame per datagram over a Unix datagram socket (needs no privileges).
#[derive(Debug)]
pub struct UnixDatagramBackend {
    sock: UnixDatagram,
    /// Where frames larger than [`DIRECT_MAX`] are copied before they are sent
    /// (allocated on first use).
    bounce: Vec<u8>,
}

impl UnixDatagramBackend {
    /// Uses a connected socket (e.g. one end of `UnixDatagram::pair()`), made non-blocking.
    pub fn new(sock: UnixDatagram) -> Result<Self, NetError> {
        sock.set_nonblocking(true).map_err(NetError::Socket)?;
        Ok(Self { sock, bounce: Vec::new() })
    }

    /// Sends `frames` (at least one) with one `sendmmsg`, straight from guest memory:
    /// how many were sent (at least one), or why the first was not.
    fn send_direct(&mut self, frames: &[&[VolatileSlice<'_>]]) -> io::Result<usize> {
        let guards: Vec<PtrGuard> =
            frames.iter().flat_map(|parts| parts.iter().map(VolatileSlice::ptr_guard)).collect();
        let mut iov: Vec<libc::iovec> =
            guards.iter().map(|g| libc::iovec { iov_base: g.as_ptr().cast_mut().cast(), iov_len: g.len() }).collect();
        let mut msgs = Vec::with_capacity(frames.len());
        let mut first = 0;
        for parts in frames {
            #[allow(unsafe_code)]
            // SAFETY: an all-zero msghdr is a valid one (no name, no iovecs, no control
            // data); the fields that matter are set below.
            let mut msg: libc::mmsghdr = unsafe { std::mem::zeroed() };
            msg.msg_hdr.msg_iov = iov[first..].as_mut_ptr();
            msg.msg_hdr.msg_iovlen = parts.len() as _;
            msgs.push(msg);
            first += parts.len();
        }
        loop {
            #[allow(unsafe_code)]
            // SAFETY: every mmsghdr points at its frame's iovecs inside `iov`, which is
            // neither moved nor resized while `msgs` is used; each iovec points into a
            // slice of the shared-memory view, kept mapped by the caller's view snapshot
            // and `guards`, and sendmmsg only reads those bytes. The count is `msgs.len()`.
            let n = unsafe { libc::sendmmsg(self.sock.as_raw_fd(), msgs.as_mut_ptr(), msgs.len() as _, 0) };
            match usize::try_from(n) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => return Ok(n),
                Err(_) => {
                    let e = io::Error::last_os_error();
                    if e.kind() != io::ErrorKind::Interrupted {
                        return Err(e);
                    }
                }
            }
        }
    }

    /// Copies one frame into the bounce buffer (at page offset [`BOUNCE_OFFSET`]) and
    /// sends it from there.
    fn send_bounced(&mut self, parts: &[VolatileSlice<'_>]) -> io::Result<()> {
        let len = frame_len(parts);
        if self.bounce.len() < len + BOUNCE_PAGE + BOUNCE_OFFSET {
            self.bounce = vec![0; len.max(MAX_FRAME_LEN) + BOUNCE_PAGE + BOUNCE_OFFSET];
        }
        let base = self.bounce.as_ptr() as usize % BOUNCE_PAGE;
        let start = (BOUNCE_OFFSET + BOUNCE_PAGE - base) % BOUNCE_PAGE;
        let mut at = start;
        for p in parts {
            at += p.copy_to(&mut self.bounce[at..at + p.len()]);
        }
        self.sock.send(&self.bounce[start..start + len]).map(|_| ())
    }

    /// Binds an unnamed socket and connects it to the datagram socket at `peer`.
    pub fn connect(peer: &Path) -> Result<Self, NetError> {
        let sock = UnixDatagram::unbound().map_err(NetError::Socket)?;
        sock.connect(peer).map_err(NetError::Socket)?;
        Self::new(sock)
    }
}

impl NetBackend for UnixDatagramBackend {
    fn send(&mut self, frame: &[u8]) -> io::Result<()> {
        self.sock.send(frame).map(|_| ())
    }

    fn send_slices(&mut self, parts: &[VolatileSlice<'_>]) -> io::Result<()> {
        send_slices_as_batch(self, parts)
    }

    /// Frames up to [`DIRECT_MAX`] bytes go out straight from guest memory, as many as
    /// follow each other in one `sendmmsg` (a datagram per frame, gathered by the
    /// kernel). A larger frame is first copied into a host buffer, at page offset
    /// [`BOUNCE_OFFSET`], and sent from there: the kernel copies such a frame into page
    /// fragments, and its copy is up to 3x slower when the source sits a few bytes before
    /// a fragment's page offset (4 KiB aliasing, measured on AMD EPYC; page-aligned guest
    /// frames hit it), while a user-space memcpy into the buffer does not care.
    fn send_frames(&mut self, frames: &[&[VolatileSlice<'_>]]) -> (usize, Option<io::Error>) {
        let mut sent = 0;
        while sent < frames.len() {
            let step = if frame_len(frames[sent]) > DIRECT_MAX {
                self.send_bounced(frames[sent]).map(|()| 1)
            } else {
                let run = frames[sent..].iter().take_while(|f| frame_len(f) <= DIRECT_MAX).count();
                self.send_direct(&frames[sent..sent + run.min(UIO_MAXIOV)])
            };
            match step {
                Ok(n) => sent += n,
                Err(e) => return (sent, Some(e)),
            }
        }
        (sent, None)
    }

    fn recv(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        would_block(self.sock.recv(buf))
    }

    fn raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }
}

/// The TUN/TAP ioctl numbers (the macro declares `pub fn`s; they stay private here).
mod tun_ioctls {
    #![allow(missing_docs)]
    use vmm_sys_util::ioctl_iow_nr;

    const TUNTAP: u32 = b'T' as u32;
    ioctl_iow_nr!(TUNSETIFF, TUNTAP, 202, std::os::raw::c_int);
}
use tun_ioctls::TUNSETIFF;
const IFF_TAP: i16 = 0x0002;
const IFF_NO_PI: i16 = 0x1000;
const IFNAMSIZ: usize = 16;

/// `struct ifreq` as TUNSETIFF reads it: the name and the flags member of the union.
#[repr(C)]
struct IfReqFlags {
    name: [u8; IFNAMSIZ],
    flags: i16,
    _pad: [u8; 22],
}

/// A tap interface (IFF_TAP | IFF_NO_PI, no vnet header): one frame per read/write.
#[derive(Debug)]
pub struct TapBackend {
    file: File,
    name: String,
}

impl TapBackend {
    /// Opens (or creates) the tap interface `name`; needs CAP_NET_ADMIN unless the
    /// interface already exists and belongs to this user.
    pub fn open(name: &str) -> Result<Self, NetError> {
        let mut req = IfReqFlags { name: [0; IFNAMSIZ], flags: IFF_TAP | IFF_NO_PI, _pad: [0; 22] };
        if name.is_empty() || name.len() >= IFNAMSIZ || name.contains('\0') {
            return Err(NetError::TapName(name.to_owned()));
        }
        req.name[..name.len()].copy_from_slice(name.as_bytes());
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open("/dev/net/tun")
            .map_err(NetError::OpenTun)?;
        tunsetiff(&file, &mut req).map_err(|source| NetError::TunSetIff { name: name.to_owned(), source })?;
        Ok(Self { file, name: name.to_owned() })
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// TUNSETIFF: attaches `tun` to the interface named in `req`.
fn tunsetiff(tun: &File, req: &mut IfReqFlags) -> io::Result<()> {
    #[allow(unsafe_code)]
    // SAFETY: `tun` is an open /dev/net/tun descriptor and `req` is a valid, exclusively
    // borrowed ifreq-sized (40-byte) struct that outlives the call; TUNSETIFF reads it and
    // writes back at most the interface name within it.
    let ret = unsafe { vmm_sys_util::ioctl::ioctl_with_mut_ref(tun, TUNSETIFF(), req) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl NetBackend for TapBackend {
    fn send(&mut self, frame: &[u8]) -> io::Result<()> {
        self.file.write(frame).map(|_| ())
    }

    /// One `writev` per frame, gathered by the kernel straight from guest memory.
    fn send_slices(&mut self, parts: &[VolatileSlice<'_>]) -> io::Result<()> {
        let guards: Vec<PtrGuard> = parts.iter().map(VolatileSlice::ptr_guard).collect();
        let iov: Vec<libc::iovec> =
            guards.iter().map(|g| libc::iovec { iov_base: g.as_ptr().cast_mut().cast(), iov_len: g.len() }).collect();
        let count = libc::c_int::try_from(iov.len()).map_err(|_| io::Error::from_raw_os_error(libc::EMSGSIZE))?;
        #[allow(unsafe_code)]
        // SAFETY: each iovec points into a slice of the shared-memory view, kept mapped by
        // the caller's view snapshot and `guards`; writev only reads those bytes.
        let n = unsafe { libc::writev(self.file.as_raw_fd(), iov.as_ptr(), count) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn recv(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        would_block(self.file.read(buf))
    }

    fn raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

/// Frame and drop counters (shared, cheap to read from another thread).
#[derive(Debug, Default)]
pub struct NetCounters {
    /// Frames the guest sent that reached the backend.
    pub tx_frames: AtomicU64,
    /// Tx chains dropped: too short, too long, unreadable, or the backend failed.
    pub tx_dropped: AtomicU64,
    /// Frames delivered into rx buffers.
    pub rx_frames: AtomicU64,
    /// Frames dropped: no rx buffer, buffer too small or unusable, or the backend
    /// failed to receive one (an I/O error, a malformed record).
    pub rx_dropped: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

struct Active {
    mem: GuestMem,
    rx: Queue,
    tx: Queue,
    interrupt: VirtioInterrupt,
}

type Mem = GuestRegionCollection<SharedRegion>;

const TOKEN_RX: u32 = 0;
const TOKEN_TX: u32 = 1;
const TOKEN_BACKEND: u32 = 2;

/// The virtio-net device.
pub struct Net {
    mac: [u8; 6],
    backend: Box<dyn NetBackend>,
    queue_events: [EventFd; 2],
    active: Option<Active>,
    counters: Arc<NetCounters>,
    frame: Vec<u8>,
}

impl std::fmt::Debug for Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Net").field("mac", &self.mac).field("active", &self.active.is_some()).finish()
    }
}

impl Net {
    /// A virtio-net device with address `mac`, moving frames to and from `backend`,
    /// woken by `queue_events` (rx, tx).
    pub fn new(mac: [u8; 6], backend: Box<dyn NetBackend>, queue_events: [EventFd; 2]) -> Self {
        Self {
            mac,
            backend,
            queue_events,
            active: None,
            counters: Arc::new(NetCounters::default()),
            frame: vec![0; MAX_FRAME_LEN],
        }
    }

    /// The device's counters.
    pub fn counters(&self) -> Arc<NetCounters> {
        self.counters.clone()
    }

    /// Sends every frame the guest queued; returns how many chains were completed.
    ///
    /// Chains are taken in bursts of up to [`TX_BURST`]: every chain of a burst is checked
    /// and mapped first, the good frames go to the backend together (in order), then the
    /// whole burst completes in order. Nothing is allocated per frame. A backend with a
    /// doorbell that refuses a frame with `WouldBlock` ends the call: the chains before
    /// it complete, it and the rest are given back to the queue.
    pub fn process_tx(&mut self) -> usize {
        let Some(active) = self.active.as_mut() else { return 0 };
        let mem = active.mem.memory();
        let mut done = 0;
        let mut parts = Vec::new();
        // Each chain of the burst: its head and, if it is to be sent, its parts.
        let mut burst: Vec<(u16, Option<std::ops::Range<usize>>)> = Vec::with_capacity(TX_BURST);
        let mut broken = false;
        let holds = self.backend.doorbell().is_some();
        while !broken {
            parts.clear();
            burst.clear();
            while burst.len() < TX_BURST {
                let Some(chain) = active.tx.pop_descriptor_chain(&*mem) else { break };
                let head = chain.head_index();
                let first = parts.len();
                let frame = match readable_after(&mem, chain, NET_HDR_LEN, &mut parts) {
                    Ok(total) if total >= NET_HDR_LEN && total - NET_HDR_LEN <= MAX_FRAME_LEN => {
                        Some(first..parts.len())
                    }
                    Ok(total) => {
                        log::debug!("virtio-net: tx chain {head} of {total} bytes dropped");
                        None
                    }
                    Err(e) => {
                        log::warn!("virtio-net: tx chain {head} refused: {e:?}");
                        None
                    }
                };
                if frame.is_none() {
                    parts.truncate(first);
                }
                burst.push((head, frame));
            }
            if burst.is_empty() {
                break;
            }
            let frames: Vec<&[VolatileSlice<'_>]> =
                burst.iter().filter_map(|(_, f)| f.clone()).map(|f| &parts[f]).collect();
            let mut next = 0;
            // The first frame the backend holds back (backpressure): it and the chains
            // after it stay in the queue.
            let mut held = None;
            while next < frames.len() {
                let (sent, err) = self.backend.send_frames(&frames[next..]);
                self.counters.tx_frames.fetch_add(sent as u64, Ordering::Relaxed);
                next += sent;
                match err {
                    Some(e) if holds && e.kind() == io::ErrorKind::WouldBlock => {
                        held = Some(next);
                        break;
                    }
                    Some(e) => log::debug!("virtio-net: backend send: {e}"),
                    None if next < frames.len() => log::debug!("virtio-net: backend sent nothing"),
                    None => break,
                }
                // The frame at `next` was not sent: dropped; the rest are tried again.
                bump(&self.counters.tx_dropped);
                next += 1;
            }
            // The burst's chains up to the held frame's complete.
            let complete = match held {
                None => burst.len(),
                Some(k) => {
                    burst.iter().enumerate().filter(|(_, (_, f))| f.is_some()).nth(k).map_or(burst.len(), |(i, _)| i)
                }
            };
            for &(head, ref frame) in &burst[..complete] {
                if frame.is_none() {
                    bump(&self.counters.tx_dropped);
                }
                if let Err(e) = active.tx.add_used(&*mem, head, 0) {
                    log::warn!("virtio-net: cannot complete tx chain {head}: {e:?}");
                    broken = true;
                    break;
                }
                done += 1;
            }
            if complete < burst.len() {
                // Give the rest back: popped in order, so they are the last ones popped.
                let back = (burst.len() - complete) as u16;
                active.tx.set_next_avail(active.tx.next_avail().wrapping_sub(back));
                break;
            }
        }
        if done > 0 && active.tx.needs_notification(&*mem).unwrap_or(true) {
            active.interrupt.signal_used_queue();
        }
        done
    }

    /// Moves pending backend frames into rx buffers (at most a burst per call); returns
    /// how many frames were taken from the backend.
    pub fn process_rx(&mut self) -> usize {
        let Some(active) = self.active.as_mut() else { return 0 };
        let mem = active.mem.memory();
        let mut taken = 0;
        let mut used = false;
        let pulled = self.backend.pulled();
        while taken < RX_BURST {
            // A pulled backend keeps its frames until there is a buffer: take one first
            // (and give it back if no frame comes).
            let early = if pulled {
                match active.rx.pop_descriptor_chain(&*mem) {
                    Some(chain) => Some(chain),
                    None => break,
                }
            } else {
                None
            };
            let len = match self.backend.recv(&mut self.frame) {
                Ok(Some(n)) => n,
                other => {
                    if early.is_some() {
                        active.rx.go_to_previous_position();
                    }
                    if let Err(e) = other {
                        log::warn!("virtio-net: backend receive: {e}");
                        bump(&self.counters.rx_dropped);
                    }
                    break;
                }
            };
            taken += 1;
            let Some(chain) = early.or_else(|| active.rx.pop_descriptor_chain(&*mem)) else {
                bump(&self.counters.rx_dropped);
                continue;
            };
            let head = chain.head_index();
            let written = match chain.writer(&*mem) {
                Ok(mut w) if w.available_bytes() >= NET_HDR_LEN + len => {
                    let mut hdr = [0u8; NET_HDR_LEN];
                    hdr[10..].copy_from_slice(&1u16.to_le_bytes()); // num_buffers
                    match w.write_all(&hdr).and_then(|()| w.write_all(&self.frame[..len])) {
                        Ok(()) => {
                            bump(&self.counters.rx_frames);
                            NET_HDR_LEN + len
                        }
                        Err(e) => {
                            log::debug!("virtio-net: rx chain {head}: {e}");
                            bump(&self.counters.rx_dropped);
                            0
                        }
                    }
                }
                Ok(_) => {
                    log::debug!("virtio-net: rx chain {head} too small for a {len}-byte frame");
                    bump(&self.counters.rx_dropped);
                    0
                }
                Err(e) => {
                    log::warn!("virtio-net: rx chain {head} refused: {e:?}");
                    bump(&self.counters.rx_dropped);
                    0
                }
            };
            if let Err(e) = active.rx.add_used(&*mem, head, written as u32) {
                log::warn!("virtio-net: cannot complete rx chain {head}: {e:?}");
                break;
            }
            used = true;
        }
        if used && active.rx.needs_notification(&*mem).unwrap_or(true) {
            active.interrupt.signal_used_queue();
        }
        if pulled && taken == RX_BURST {
            // More may wait, and nothing else wakes the device for them: come back
            // after the other events.
            let _ = self.queue_events[RX_QUEUE].write(1);
        }
        taken
    }

    fn config(&self) -> [u8; 8] {
        let mut c = [0u8; 8];
        c[..6].copy_from_slice(&self.mac);
        c[6..].copy_from_slice(&LINK_UP.to_le_bytes());
        c
    }
}

/// Walks `chain` once: returns the total length of its device-readable buffers and
/// appends to `parts`, as slices of the view, those buffers from byte `skip` on. Fails
/// when any readable descriptor is not entirely in the view (as virtio-queue's `Reader`
/// does); `parts` may then hold some of the chain's slices.
fn readable_after<'a>(
    mem: &'a Mem,
    chain: DescriptorChain<&'a Mem>,
    mut skip: usize,
    parts: &mut Vec<VolatileSlice<'a>>,
) -> Result<usize, GuestMemoryError> {
    let mut total = 0usize;
    for desc in chain.filter(|d| !d.is_write_only()) {
        let len = desc.len() as usize;
        // A chain is at most a queue of u32 lengths: this cannot overflow on 64-bit hosts.
        total = total.checked_add(len).ok_or(GuestMemoryError::InvalidGuestAddress(desc.addr()))?;
        for slice in GuestMemoryBackend::get_slices(mem, desc.addr(), len) {
            let slice = slice?;
            if skip >= slice.len() {
                skip -= slice.len();
            } else {
                parts.push(slice.offset(skip)?);
                skip = 0;
            }
        }
    }
    Ok(total)
}

impl VirtioDevice for Net {
    fn device_type(&self) -> u32 {
        device_id::NET
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE, QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        VIRTIO_NET_F_MAC
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config(), offset, data);
    }

    fn activate(&mut self, ctx: ActivateContext) -> Result<(), ActivateError> {
        let got = ctx.queues.len();
        if got != 2 {
            return Err(ActivateError::QueueCount { got, want: 2 });
        }
        let mut queues = ctx.queues.into_iter();
        let (Some(rx), Some(tx)) = (queues.next(), queues.next()) else {
            return Err(ActivateError::QueueCount { got, want: 2 });
        };
        self.active = Some(Active { mem: ctx.mem, rx, tx, interrupt: ctx.interrupt });
        // Frames queued before activation are sent at once; a pulled backend's frames
        // go into the rx buffers already posted.
        let _ = self.queue_events[TX_QUEUE].write(1);
        if self.backend.pulled() {
            let _ = self.queue_events[RX_QUEUE].write(1);
        }
        Ok(())
    }

    fn reset(&mut self) {
        self.active = None;
    }
}

impl MutEventSubscriber for Net {
    fn process(&mut self, events: Events, _ops: &mut EventOps<'_>) {
        if !events.event_set().contains(EventSet::IN) {
            return;
        }
        match events.data() {
            TOKEN_RX => {
                // New rx buffers: only a pulled backend's frames wait for them (others'
                // frames without one are dropped).
                let _ = self.queue_events[RX_QUEUE].read();
                if self.backend.pulled() {
                    self.process_rx();
                }
            }
            TOKEN_TX => {
                let _ = self.queue_events[TX_QUEUE].read();
                self.process_tx();
            }
            TOKEN_BACKEND if self.backend.pulled() => {
                // The doorbell: frames or room in the backend.
                self.backend.ack_doorbell();
                if self.active.is_some() {
                    self.process_tx();
                    self.process_rx();
                }
            }
            TOKEN_BACKEND => {
                if self.active.is_some() {
                    self.process_rx();
                } else {
                    // Not running: drain the backend so the level-triggered event stops.
                    while let Ok(Some(_)) = self.backend.recv(&mut self.frame) {}
                }
            }
            _ => {}
        }
    }

    fn init(&mut self, ops: &mut EventOps<'_>) {
        let mut watches = vec![
            Events::with_data(&self.queue_events[RX_QUEUE], TOKEN_RX, EventSet::IN),
            Events::with_data(&self.queue_events[TX_QUEUE], TOKEN_TX, EventSet::IN),
        ];
        // A pulled backend (a file, a ring) is read when rx buffers come, and when its
        // doorbell rings if it has one; the others' descriptor is watched for frames.
        if !self.backend.pulled() {
            watches.push(Events::with_data_raw(self.backend.raw_fd(), TOKEN_BACKEND, EventSet::IN));
        } else if let Some(fd) = self.backend.doorbell() {
            watches.push(Events::with_data_raw(fd, TOKEN_BACKEND, EventSet::IN));
        }
        for w in watches {
            if let Err(e) = ops.add(w) {
                log::error!("virtio-net: cannot watch an event: {e:?}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::SharedMemory;
    use virtio_queue::desc::{split::Descriptor, RawDescriptor};
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
    use vmm_sys_util::eventfd::EFD_NONBLOCK;

    const F_NEXT: u16 = 1;
    const F_WRITE: u16 = 2;
    const RX_RING: u64 = 0;
    const TX_RING: u64 = 0x1_0000;

    fn setup(shared: bool) -> (GuestMemoryMmap, SharedMemory) {
        let m = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x40_0000)]).unwrap();
        let s = if shared { SharedMemory::all_shared(&m) } else { SharedMemory::all_private(&m) };
        (m, s)
    }

    fn desc(addr: u64, len: u32, flags: u16, next: u16) -> RawDescriptor {
        RawDescriptor::from(Descriptor::new(addr, len, flags, next))
    }

    fn events() -> [EventFd; 2] {
        [EventFd::new(EFD_NONBLOCK).unwrap(), EventFd::new(EFD_NONBLOCK).unwrap()]
    }

    struct Rig<'a> {
        net: Net,
        rx: MockSplitQueue<'a, GuestMemoryMmap>,
        tx: MockSplitQueue<'a, GuestMemoryMmap>,
        peer: UnixDatagram,
    }

    fn rig<'a>(m: &'a GuestMemoryMmap, s: &SharedMemory) -> Rig<'a> {
        let (mine, peer) = UnixDatagram::pair().unwrap();
        peer.set_nonblocking(true).unwrap();
        let backend = Box::new(UnixDatagramBackend::new(mine).unwrap());
        let mut net = Net::new([2, 0, 0, 0, 0, 1], backend, events());
        let rx = MockSplitQueue::create(m, GuestAddress(RX_RING), 16);
        let tx = MockSplitQueue::create(m, GuestAddress(TX_RING), 16);
        let ctx = ActivateContext {
            mem: s.view(),
            queues: vec![rx.create_queue().unwrap(), tx.create_queue().unwrap()],
            interrupt: VirtioInterrupt::new(EventFd::new(EFD_NONBLOCK).unwrap()),
            acked_features: VIRTIO_NET_F_MAC,
        };
        net.activate(ctx).unwrap();
        Rig { net, rx, tx, peer }
    }

    fn used_len(q: &MockSplitQueue<'_, GuestMemoryMmap>, i: usize) -> u32 {
        q.used().ring().ref_at(i).unwrap().load().len()
    }

    /// Queues tx chains, each a header descriptor then one frame descriptor of
    /// `lens[i]` bytes filled with `i`, at 0x10_0000 + i * 0x1_0000; frame `bad` (if
    /// any) points outside guest memory instead.
    fn queue_frames(m: &GuestMemoryMmap, tx: &MockSplitQueue<'_, GuestMemoryMmap>, lens: &[u32], bad: usize) {
        for (i, &len) in lens.iter().enumerate() {
            let at = 0x10_0000 + i as u64 * 0x1_0000;
            m.write_slice(&vec![i as u8; len as usize], GuestAddress(at + 0x1000)).unwrap();
            let first = (2 * i) as u16;
            let frame_at = if i == bad { 0x4000_0000 } else { at + 0x1000 };
            let chain = [desc(at, NET_HDR_LEN as u32, F_NEXT, first + 1), desc(frame_at, len, 0, 0)];
            tx.add_desc_chains(&chain, first).unwrap();
        }
    }

    #[test]
    fn a_burst_sends_the_good_frames_in_order_and_completes_every_chain() {
        let (m, s) = setup(true);
        let mut r = rig(&m, &s);
        // Chain 1's frame is outside memory: it is dropped, the others still go, in order.
        queue_frames(&m, &r.tx, &[100, 200, 300, 400], 1);

        assert_eq!(r.net.process_tx(), 4);

        let mut got = vec![0u8; 1024];
        for (i, len) in [(0u8, 100), (2, 300), (3, 400)] {
            assert_eq!(r.peer.recv(&mut got).unwrap(), len, "frame {i}");
            assert!(got[..len].iter().all(|&b| b == i), "frame {i}");
        }
        assert!(r.peer.recv(&mut got).is_err(), "nothing more");
        assert_eq!(r.tx.used().idx().load(), 4);
        let c = r.net.counters();
        assert_eq!((c.tx_frames.load(Ordering::Relaxed), c.tx_dropped.load(Ordering::Relaxed)), (3, 1));
    }

    #[test]
    fn frames_the_socket_has_no_room_for_are_dropped_and_counted_and_the_rest_arrive_whole() {
        let (m, s) = setup(true);
        let mut r = rig(&m, &s);
        // The smallest send buffer: a few of these frames fit, the rest find it full.
        let fd = r.net.backend.raw_fd();
        let one: libc::c_int = 1;
        #[allow(unsafe_code)]
        // SAFETY: `fd` is the backend's open socket; `one` outlives the call.
        let ret =
            unsafe { libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_SNDBUF, (&one as *const libc::c_int).cast(), 4) };
        assert_eq!(ret, 0);
        queue_frames(&m, &r.tx, &[3000; 8], usize::MAX);

        assert_eq!(r.net.process_tx(), 8);

        let c = r.net.counters();
        let (sent, dropped) = (c.tx_frames.load(Ordering::Relaxed), c.tx_dropped.load(Ordering::Relaxed));
        assert_eq!(sent + dropped, 8);
        assert!((1..8).contains(&sent), "{sent} frames sent");
        let mut got = vec![0u8; 4096];
        for i in 0..sent {
            assert_eq!(r.peer.recv(&mut got).unwrap(), 3000);
            assert!(got[..3000].iter().all(|&b| b == i as u8), "the first frames, whole and in order");
        }
        assert!(r.peer.recv(&mut got).is_err());
        assert_eq!(r.tx.used().idx().load(), 8);
    }

    #[test]
    fn small_and_large_frames_in_one_burst_arrive_whole_and_in_order() {
        let (m, s) = setup(true);
        let mut r = rig(&m, &s);
        r.peer.set_nonblocking(false).unwrap();
        // Frame 1 is larger than DIRECT_MAX (copied before it is sent) and split over two
        // descriptors; frames 0 and 2 leave straight from guest memory.
        let big = DIRECT_MAX + 5000;
        m.write_slice(&[0xa0; 100], GuestAddress(0x10_1000)).unwrap();
        m.write_slice(&vec![0xa1; 7000], GuestAddress(0x20_0000)).unwrap();
        m.write_slice(&vec![0xa2; big - 7000], GuestAddress(0x28_0000)).unwrap();
        m.write_slice(&[0xa3; 300], GuestAddress(0x30_1000)).unwrap();
        let hdr = NET_HDR_LEN as u32;
        let chains = [
            desc(0x10_0000, hdr, F_NEXT, 1),
            desc(0x10_1000, 100, 0, 0),
            desc(0x1f_0000, hdr, F_NEXT, 3),
            desc(0x20_0000, 7000, F_NEXT, 4),
            desc(0x28_0000, (big - 7000) as u32, 0, 0),
            desc(0x30_0000, hdr, F_NEXT, 6),
            desc(0x30_1000, 300, 0, 0),
        ];
        r.tx.add_desc_chains(&chains, 0).unwrap();

        assert_eq!(r.net.process_tx(), 3);

        let mut got = vec![0u8; MAX_FRAME_LEN];
        assert_eq!(r.peer.recv(&mut got).unwrap(), 100);
        assert!(got[..100].iter().all(|&b| b == 0xa0));
        assert_eq!(r.peer.recv(&mut got).unwrap(), big);
        assert!(got[..7000].iter().all(|&b| b == 0xa1) && got[7000..big].iter().all(|&b| b == 0xa2));
        assert_eq!(r.peer.recv(&mut got).unwrap(), 300);
        assert!(got[..300].iter().all(|&b| b == 0xa3));
        assert_eq!(r.net.counters().tx_frames.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn a_tap_frame_is_written_whole_with_one_write() {
        // A datagram socket stands in for the tap descriptor: one write is one datagram.
        let (m, s) = setup(true);
        let (mine, peer) = UnixDatagram::pair().unwrap();
        let mut tap = TapBackend { file: File::from(std::os::fd::OwnedFd::from(mine)), name: "test".into() };
        m.write_slice(b"split ", GuestAddress(0x10_0000)).unwrap();
        m.write_slice(b"frame", GuestAddress(0x20_0000)).unwrap();
        let view = s.view();
        let mem = view.memory();
        let parts =
            [mem.get_slice(GuestAddress(0x10_0000), 6).unwrap(), mem.get_slice(GuestAddress(0x20_0000), 5).unwrap()];

        tap.send_slices(&parts).unwrap();

        let mut got = [0u8; 64];
        let n = peer.recv(&mut got).unwrap();
        assert_eq!(&got[..n], b"split frame");
    }

    #[test]
    fn config_space_holds_the_mac_and_link_up() {
        let (a, _b) = UnixDatagram::pair().unwrap();
        let net = Net::new([2, 1, 2, 3, 4, 5], Box::new(UnixDatagramBackend::new(a).unwrap()), events());
        let mut c = [0xffu8; 10];
        net.read_config(0, &mut c);
        assert_eq!(c, [2, 1, 2, 3, 4, 5, 1, 0, 0, 0]);
        assert_eq!(net.features(), VIRTIO_NET_F_MAC);
        assert_eq!(net.device_type(), device_id::NET);
    }

    #[test]
    fn a_frame_sent_by_the_guest_arrives_at_the_peer() {
        let (m, s) = setup(true);
        let mut r = rig(&m, &s);
        m.write_slice(&[0u8; NET_HDR_LEN], GuestAddress(0x10_0000)).unwrap();
        m.write_slice(b"hello, ", GuestAddress(0x11_0000)).unwrap();
        m.write_slice(b"frame", GuestAddress(0x12_0000)).unwrap();
        // Header and frame split over three descriptors.
        let chain =
            [desc(0x10_0000, NET_HDR_LEN as u32, F_NEXT, 1), desc(0x11_0000, 7, F_NEXT, 2), desc(0x12_0000, 5, 0, 0)];
        r.tx.add_desc_chains(&chain, 0).unwrap();

        assert_eq!(r.net.process_tx(), 1);

        let mut got = [0u8; 64];
        let n = r.peer.recv(&mut got).unwrap();
        assert_eq!(&got[..n], b"hello, frame");
        assert_eq!(r.tx.used().idx().load(), 1);
        assert_eq!(r.net.counters().tx_frames.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_frame_from_the_peer_lands_in_an_rx_buffer_after_the_header() {
        let (m, s) = setup(true);
        let mut r = rig(&m, &s);
        r.rx.add_desc_chains(&[desc(0x20_0000, 2048, F_WRITE, 0)], 0).unwrap();
        m.write_slice(&[0xaa; 64], GuestAddress(0x20_0000)).unwrap();
        r.peer.send(b"incoming frame").unwrap();

        assert_eq!(r.net.process_rx(), 1);

        let mut got = [0u8; NET_HDR_LEN + 14];
        m.read_slice(&mut got, GuestAddress(0x20_0000)).unwrap();
        assert_eq!(&got[..NET_HDR_LEN], &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0], "num_buffers = 1");
        assert_eq!(&got[NET_HDR_LEN..], b"incoming frame");
        assert_eq!(used_len(&r.rx, 0), (NET_HDR_LEN + 14) as u32);
        assert_eq!(r.net.counters().rx_frames.load(Ordering::Relaxed), 1);
    }

    /// A device on a file backend (tx to `tx`, rx from `rx`), activated on fresh queues.
    fn file_rig<'a>(
        m: &'a GuestMemoryMmap,
        s: &SharedMemory,
        tx: &Path,
        rx: Option<&Path>,
    ) -> (Net, MockSplitQueue<'a, GuestMemoryMmap>, MockSplitQueue<'a, GuestMemoryMmap>) {
        let backend = Box::new(crate::virtio::net_file::FileBackend::open(tx, rx).unwrap());
        let mut net = Net::new([2, 0, 0, 0, 0, 1], backend, events());
        let rxq = MockSplitQueue::create(m, GuestAddress(RX_RING), 16);
        let txq = MockSplitQueue::create(m, GuestAddress(TX_RING), 16);
        let ctx = ActivateContext {
            mem: s.view(),
            queues: vec![rxq.create_queue().unwrap(), txq.create_queue().unwrap()],
            interrupt: VirtioInterrupt::new(EventFd::new(EFD_NONBLOCK).unwrap()),
            acked_features: VIRTIO_NET_F_MAC,
        };
        net.activate(ctx).unwrap();
        (net, rxq, txq)
    }

    fn file_dir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("cvmm-net-{}-{:?}", std::process::id(), std::thread::current().id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn frames_round_trip_through_a_file_from_one_guests_tx_to_anothers_rx() {
        let (m, s) = setup(true);
        let d = file_dir();
        let wire = d.join("wire");
        let _ = std::fs::remove_file(&wire);
        let (mut sender, _, tx) = file_rig(&m, &s, &wire, None);
        queue_frames(&m, &tx, &[60, 1514, 9000], usize::MAX);

        assert_eq!(sender.process_tx(), 3);

        // The file, read independently: three records of the frames' bytes.
        let bytes = std::fs::read(&wire).unwrap();
        let mut at = 0;
        for (i, len) in [(0u8, 60usize), (1, 1514), (2, 9000)] {
            assert_eq!(u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize, len);
            assert!(bytes[at + 4..at + 4 + len].iter().all(|&b| b == i), "frame {i}");
            at += 4 + len;
        }
        assert_eq!(at, bytes.len());

        // The same file as the rx file of a second device: each frame in a buffer.
        let (m2, s2) = setup(true);
        let (mut receiver, rx, _) = file_rig(&m2, &s2, &d.join("unused-tx"), Some(&wire));
        for i in 0..3u16 {
            rx.add_desc_chains(&[desc(0x20_0000 + u64::from(i) * 0x4000, 0x4000, F_WRITE, 0)], i).unwrap();
        }
        assert_eq!(receiver.process_rx(), 3);
        for (i, len) in [(0u8, 60usize), (1, 1514), (2, 9000)] {
            assert_eq!(used_len(&rx, i as usize), (NET_HDR_LEN + len) as u32);
            let mut got = vec![0u8; len];
            m2.read_slice(&mut got, GuestAddress(0x20_0000 + u64::from(i) * 0x4000 + NET_HDR_LEN as u64)).unwrap();
            assert!(got.iter().all(|&b| b == i), "frame {i}");
        }
        assert_eq!(receiver.counters().rx_frames.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn file_rx_records_wait_for_buffers_instead_of_being_dropped() {
        let (m, s) = setup(true);
        let d = file_dir();
        let rx_path = d.join("wait.rx");
        std::fs::write(&rx_path, [&3u32.to_le_bytes()[..], b"one", &3u32.to_le_bytes(), b"two"].concat()).unwrap();
        let (mut net, rx, _) = file_rig(&m, &s, &d.join("wait.tx"), Some(&rx_path));

        assert_eq!(net.process_rx(), 0, "no buffer: nothing taken");
        rx.add_desc_chains(&[desc(0x20_0000, 2048, F_WRITE, 0)], 0).unwrap();
        assert_eq!(net.process_rx(), 1, "one buffer: one frame");
        rx.add_desc_chains(&[desc(0x30_0000, 2048, F_WRITE, 0)], 1).unwrap();
        assert_eq!(net.process_rx(), 1);

        let mut got = [0u8; 3];
        m.read_slice(&mut got, GuestAddress(0x30_0000 + NET_HDR_LEN as u64)).unwrap();
        assert_eq!(&got, b"two");
        assert_eq!(net.counters().rx_dropped.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_malformed_file_rx_record_is_counted_and_its_buffer_kept() {
        let (m, s) = setup(true);
        let d = file_dir();
        let rx_path = d.join("bad.rx");
        let bad_len = (MAX_FRAME_LEN as u32 + 1).to_le_bytes();
        std::fs::write(&rx_path, [&2u32.to_le_bytes()[..], b"ok", &bad_len, b"junk"].concat()).unwrap();
        let (mut net, rx, _) = file_rig(&m, &s, &d.join("bad.tx"), Some(&rx_path));
        // Two one-descriptor chains (no NEXT flag: each ends a chain).
        rx.add_desc_chains(&[desc(0x20_0000, 2048, F_WRITE, 0), desc(0x30_0000, 2048, F_WRITE, 0)], 0).unwrap();

        assert_eq!(net.process_rx(), 1);

        assert_eq!(net.counters().rx_frames.load(Ordering::Relaxed), 1);
        assert_eq!(net.counters().rx_dropped.load(Ordering::Relaxed), 1, "the malformed record");
        assert_eq!(rx.used().idx().load(), 1, "the second buffer is still the guest's");
        assert_eq!(net.process_rx(), 0, "nothing after it");
    }

    /// A device on a ring backend over a fresh ring file (data areas of `size` bytes),
    /// activated on fresh queues.
    fn ring_rig<'a>(
        m: &'a GuestMemoryMmap,
        s: &SharedMemory,
        name: &str,
        size: usize,
    ) -> (Net, MockSplitQueue<'a, GuestMemoryMmap>, MockSplitQueue<'a, GuestMemoryMmap>, std::path::PathBuf) {
        let path = file_dir().join(name);
        let backend = Box::new(crate::virtio::net_ring::RingBackend::create(&path, size).unwrap());
        let mut net = Net::new([2, 0, 0, 0, 0, 1], backend, events());
        let rxq = MockSplitQueue::create(m, GuestAddress(RX_RING), 16);
        let txq = MockSplitQueue::create(m, GuestAddress(TX_RING), 16);
        let ctx = ActivateContext {
            mem: s.view(),
            queues: vec![rxq.create_queue().unwrap(), txq.create_queue().unwrap()],
            interrupt: VirtioInterrupt::new(EventFd::new(EFD_NONBLOCK).unwrap()),
            acked_features: VIRTIO_NET_F_MAC,
        };
        net.activate(ctx).unwrap();
        (net, rxq, txq, path)
    }

    /// What the event loop does for a pulled backend: waits (up to 5 s) for the
    /// doorbell, then drains it and runs tx and rx. False if it never rang.
    fn wait_for_doorbell(net: &mut Net) -> bool {
        let fd = net.backend.doorbell().expect("a doorbell");
        let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
        #[allow(unsafe_code)]
        // SAFETY: one valid pollfd that outlives the call.
        let n = unsafe { libc::poll(&mut pfd, 1, 5000) };
        if n != 1 {
            return false;
        }
        net.backend.ack_doorbell();
        net.process_tx();
        net.process_rx();
        true
    }

    #[test]
    fn frames_round_trip_both_ways_through_a_ring_with_a_peer_thread() {
        let (m, s) = setup(true);
        let (mut net, rx, tx, path) = ring_rig(&m, &s, "ring-both", 1 << 20);
        let peer_path = path.clone();
        // The peer echoes every frame back with its bytes inverted.
        let peer = std::thread::spawn(move || {
            let mut peer = crate::virtio::net_ring::RingPeer::open(&peer_path).unwrap();
            let mut buf = vec![0u8; MAX_FRAME_LEN];
            let mut got = Vec::new();
            while got.len() < 3 {
                match peer.recv_frame(&mut buf).unwrap() {
                    Some(n) => {
                        got.push(buf[..n].to_vec());
                        let echo: Vec<u8> = buf[..n].iter().map(|b| !b).collect();
                        assert!(peer.send_frame(&echo).unwrap());
                    }
                    None => std::thread::sleep(std::time::Duration::from_millis(1)),
                }
            }
            got
        });
        for i in 0..3u16 {
            rx.add_desc_chains(&[desc(0x30_0000 + u64::from(i) * 0x4000, 0x4000, F_WRITE, 0)], i).unwrap();
        }
        queue_frames(&m, &tx, &[60, 1514, 9000], usize::MAX);

        assert_eq!(net.process_tx(), 3);
        let mut delivered = net.process_rx();
        while delivered < 3 {
            assert!(wait_for_doorbell(&mut net), "the peer rings when the device waits for frames");
            delivered = net.counters().rx_frames.load(Ordering::Relaxed) as usize;
        }

        let sent = peer.join().unwrap();
        for (i, len) in [(0u8, 60usize), (1, 1514), (2, 9000)] {
            assert_eq!(sent[i as usize], vec![i; len], "tx frame {i}");
            assert_eq!(used_len(&rx, i as usize), (NET_HDR_LEN + len) as u32);
            let mut got = vec![0u8; len];
            m.read_slice(&mut got, GuestAddress(0x30_0000 + u64::from(i) * 0x4000 + NET_HDR_LEN as u64)).unwrap();
            assert!(got.iter().all(|&b| b == !i), "rx frame {i}");
        }
        let c = net.counters();
        assert_eq!((c.tx_dropped.load(Ordering::Relaxed), c.rx_dropped.load(Ordering::Relaxed)), (0, 0));
    }

    #[test]
    fn a_full_ring_holds_tx_chains_in_the_queue_and_resumes_when_the_peer_consumes() {
        let (m, s) = setup(true);
        let (mut net, _rx, tx, path) = ring_rig(&m, &s, "ring-full", 128 << 10);
        // 30,000-byte frames: 30,080-byte records, 4 fit in 128 KiB.
        queue_frames(&m, &tx, &[30_000; 8], usize::MAX);

        assert_eq!(net.process_tx(), 4, "as many as fit");
        assert_eq!(tx.used().idx().load(), 4);
        assert_eq!(net.process_tx(), 0, "still full: nothing taken, nothing dropped");

        let peer = std::thread::spawn(move || {
            let mut peer = crate::virtio::net_ring::RingPeer::open(&path).unwrap();
            let mut buf = vec![0u8; MAX_FRAME_LEN];
            let mut got = Vec::new();
            while got.len() < 8 {
                match peer.recv_frame(&mut buf).unwrap() {
                    Some(n) => got.push(buf[..n].to_vec()),
                    None => std::thread::sleep(std::time::Duration::from_millis(1)),
                }
            }
            (got, peer.kicks())
        });
        while tx.used().idx().load() < 8 {
            assert!(wait_for_doorbell(&mut net), "the peer rings when the device waits for room");
        }

        let (got, kicks) = peer.join().unwrap();
        assert!(kicks >= 1);
        for (i, frame) in got.iter().enumerate() {
            assert_eq!(frame, &vec![i as u8; 30_000], "frame {i}, whole and in order");
        }
        let c = net.counters();
        assert_eq!((c.tx_frames.load(Ordering::Relaxed), c.tx_dropped.load(Ordering::Relaxed)), (8, 0));
    }

    #[test]
    fn a_broken_ring_drops_and_counts_tx_frames_and_bad_chains_are_counted_once() {
        let (m, s) = setup(true);
        let (mut net, _rx, tx, path) = ring_rig(&m, &s, "ring-broken", 128 << 10);
        // Chain 1 is bad; the ring fills after chain 4 and chain 5+ stay queued.
        queue_frames(&m, &tx, &[30_000, 100, 30_000, 30_000, 30_000, 30_000], 1);
        assert_eq!(net.process_tx(), 5);
        assert_eq!(net.counters().tx_dropped.load(Ordering::Relaxed), 1);
        // A hostile consumer counter (beyond the producer's).
        use std::os::unix::fs::FileExt;
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .write_all_at(&u64::MAX.to_le_bytes(), 128)
            .unwrap();

        assert_eq!(net.process_tx(), 1, "completed, not held");

        let c = net.counters();
        assert_eq!((c.tx_frames.load(Ordering::Relaxed), c.tx_dropped.load(Ordering::Relaxed)), (4, 2));
    }

    #[test]
    fn rx_frames_without_a_big_enough_buffer_are_dropped_and_counted() {
        let (m, s) = setup(true);
        let mut r = rig(&m, &s);
        r.rx.add_desc_chains(&[desc(0x20_0000, 16, F_WRITE, 0)], 0).unwrap();
        r.peer.send(&[7u8; 100]).unwrap(); // too big for 16 bytes
        r.peer.send(&[8u8; 10]).unwrap(); // no buffer left

        assert_eq!(r.net.process_rx(), 2);

        assert_eq!(r.net.counters().rx_dropped.load(Ordering::Relaxed), 2);
        assert_eq!(used_len(&r.rx, 0), 0);
        assert_eq!(m.read_obj::<u64>(GuestAddress(0x20_0000)).unwrap(), 0, "nothing written");
    }

    #[test]
    fn read_only_rx_buffers_get_nothing() {
        let (m, s) = setup(true);
        let mut r = rig(&m, &s);
        r.rx.add_desc_chains(&[desc(0x20_0000, 2048, 0, 0)], 0).unwrap();
        r.peer.send(b"frame").unwrap();
        r.net.process_rx();
        assert_eq!(r.net.counters().rx_dropped.load(Ordering::Relaxed), 1);
        assert_eq!(m.read_obj::<u64>(GuestAddress(0x20_0000)).unwrap(), 0);
    }

    #[test]
    fn oversize_tx_chains_are_dropped_and_counted() {
        let (m, s) = setup(true);
        let mut r = rig(&m, &s);
        let len = (NET_HDR_LEN + MAX_FRAME_LEN + 1) as u32;
        r.tx.add_desc_chains(&[desc(0x10_0000, len, 0, 0)], 0).unwrap();

        assert_eq!(r.net.process_tx(), 1);

        assert_eq!(r.net.counters().tx_dropped.load(Ordering::Relaxed), 1);
        assert!(r.peer.recv(&mut [0u8; 16]).is_err(), "nothing sent");
    }

    #[test]
    fn the_largest_tx_frame_is_sent_whole() {
        let (m, s) = setup(true);
        let mut r = rig(&m, &s);
        let len = (NET_HDR_LEN + MAX_FRAME_LEN) as u32;
        r.tx.add_desc_chains(&[desc(0x10_0000, len, 0, 0)], 0).unwrap();
        r.peer.set_nonblocking(false).unwrap();

        r.net.process_tx();

        let mut got = vec![0u8; MAX_FRAME_LEN + 1];
        assert_eq!(r.peer.recv(&mut got).unwrap(), MAX_FRAME_LEN);
    }

    #[test]
    fn tx_chains_shorter_than_the_header_or_write_only_are_dropped() {
        let (m, s) = setup(true);
        let mut r = rig(&m, &s);
        r.tx.add_desc_chains(&[desc(0x10_0000, 4, 0, 0)], 0).unwrap();
        r.tx.add_desc_chains(&[desc(0x11_0000, 64, F_WRITE, 0)], 1).unwrap();

        assert_eq!(r.net.process_tx(), 2);

        assert_eq!(r.net.counters().tx_dropped.load(Ordering::Relaxed), 2);
        assert!(r.peer.recv(&mut [0u8; 16]).is_err());
    }

    #[test]
    fn buffers_in_private_memory_are_refused_and_untouched() {
        let (m, s) = setup(false);
        s.set_shared(0, 0x2_0000, true).unwrap(); // the rings only
        let mut r = rig(&m, &s);
        m.write_slice(b"private secret data", GuestAddress(0x10_0000)).unwrap();
        r.tx.add_desc_chains(&[desc(0x10_0000, 40, 0, 0)], 0).unwrap();
        r.rx.add_desc_chains(&[desc(0x20_0000, 2048, F_WRITE, 0)], 0).unwrap();
        r.peer.send(b"frame").unwrap();

        assert_eq!(r.net.process_tx(), 1);
        assert_eq!(r.net.process_rx(), 1);

        let c = r.net.counters();
        assert_eq!(c.tx_dropped.load(Ordering::Relaxed), 1);
        assert_eq!(c.rx_dropped.load(Ordering::Relaxed), 1);
        assert!(r.peer.recv(&mut [0u8; 64]).is_err(), "private data never leaves");
        assert_eq!(m.read_obj::<u64>(GuestAddress(0x20_0000)).unwrap(), 0, "private memory untouched");
    }

    #[test]
    fn activation_needs_two_queues() {
        let (m, s) = setup(true);
        let (a, _b) = UnixDatagram::pair().unwrap();
        let mut net = Net::new([2, 0, 0, 0, 0, 1], Box::new(UnixDatagramBackend::new(a).unwrap()), events());
        let q = MockSplitQueue::new(&m, 16);
        let ctx = ActivateContext {
            mem: s.view(),
            queues: vec![q.create_queue().unwrap()],
            interrupt: VirtioInterrupt::new(EventFd::new(EFD_NONBLOCK).unwrap()),
            acked_features: 0,
        };
        assert!(matches!(net.activate(ctx), Err(ActivateError::QueueCount { got: 1, want: 2 })));
        assert_eq!(net.process_tx() + net.process_rx(), 0);
    }

    #[test]
    fn bad_tap_names_are_rejected_before_any_syscall() {
        assert!(matches!(TapBackend::open(""), Err(NetError::TapName(_))));
        assert!(matches!(TapBackend::open("a-name-far-too-long"), Err(NetError::TapName(_))));
        assert!(matches!(TapBackend::open("tap\0x"), Err(NetError::TapName(_))));
    }

    #[test]
    fn ifreq_matches_the_kernel_layout() {
        assert_eq!(std::mem::size_of::<IfReqFlags>(), 40);
        assert_eq!(std::mem::offset_of!(IfReqFlags, flags), 16);
        assert_eq!(TUNSETIFF(), 0x4004_54ca);
    }
}
