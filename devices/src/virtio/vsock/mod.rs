//! virtio-vsock, host side over Unix sockets (like Firecracker's hybrid vsock): a
//! guest connection to host port P becomes a Unix stream connection to `<uds_path>_P`.
//!
//! Queues: rx 0 (host to guest), tx 1 (guest to host), event 2 (unused: no transport
//! events are ever sent). Configuration: the guest CID (u64).
//!
//! Supported: guest-initiated stream connections (REQUEST/RESPONSE), data both ways
//! (RW) within the credit each side advertises (buf_alloc/fwd_cnt, CREDIT_UPDATE and
//! CREDIT_REQUEST), SHUTDOWN and RST. Host-initiated connections are not supported.
//!
//! Hostile input: every guest header is read once and validated (stream type, source
//! CID = the guest, destination CID = the host, payload length within the chain and
//! [`packet::MAX_PAYLOAD`]); anything invalid, unknown, or out of state is answered
//! with RST. A guest that sends beyond its credit is reset. Chains outside shared
//! memory are completed with nothing done and counted. Queued replies are bounded.

mod connection;
pub mod packet;

use std::collections::{BTreeMap, VecDeque};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};
use virtio_queue::{Queue, QueueT, Reader, Writer};
use vm_memory::GuestAddressSpace;
use vmm_sys_util::eventfd::EventFd;

use super::{device_id, read_config_bytes, ActivateContext, ActivateError, GuestMem, VirtioDevice, VirtioInterrupt};
use connection::Connection;
pub use connection::BUF_ALLOC;
use packet::{op, Header, HDR_LEN, HOST_CID, MAX_PAYLOAD, SHUTDOWN_RCV, SHUTDOWN_SEND, TYPE_STREAM};

/// Size of each queue.
pub const QUEUE_SIZE: u16 = 256;
/// Index of the receive (host to guest) queue.
pub const RX_QUEUE: usize = 0;
/// Index of the transmit (guest to host) queue.
pub const TX_QUEUE: usize = 1;
/// Index of the event queue.
pub const EVENT_QUEUE: usize = 2;
/// Most open connections per device.
pub const MAX_CONNECTIONS: usize = 1024;
/// Most control packets (RESPONSE, RST, ...) waiting for rx buffers; more are dropped.
pub const MAX_QUEUED_REPLIES: usize = 1024;

/// Errors from creating the device.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VsockError {
    /// CIDs 0-2 and `u32::MAX` (VMADDR_CID_ANY) are reserved; CIDs are 32-bit in Linux.
    #[error("guest CID {0} is reserved or out of range (3..u32::MAX)")]
    GuestCid(u64),
}

/// Counters (shared, cheap to read from another thread).
#[derive(Debug, Default)]
pub struct VsockCounters {
    /// Guest packets refused: bad header, unknown operation, or out of state.
    pub invalid_packets: AtomicU64,
    /// RST packets sent to the guest.
    pub rst_sent: AtomicU64,
    /// Chains refused because they point outside shared memory (or are malformed).
    pub refused_chains: AtomicU64,
    /// Replies dropped because too many were waiting for rx buffers.
    pub replies_dropped: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

struct Active {
    mem: GuestMem,
    rx: Queue,
    tx: Queue,
    // Kept for the driver's sake; cvmm never posts transport events.
    _event: Queue,
    interrupt: VirtioInterrupt,
}

/// Connections keyed by (host port, guest port).
type Key = (u32, u32);

/// Everything on the host side of the device: connections and queued replies.
struct Host {
    guest_cid: u64,
    uds_path: PathBuf,
    conns: BTreeMap<Key, Connection>,
    replies: VecDeque<Header>,
    /// Closed sockets still to be removed from the event loop.
    closing: Vec<Connection>,
    counters: Arc<VsockCounters>,
    /// Where the last data packet came from, for round-robin delivery.
    last_sent: Option<Key>,
}

impl Host {
    fn header(&self, key: Key, op: u16) -> Header {
        Header {
            src_cid: HOST_CID,
            dst_cid: self.guest_cid,
            src_port: key.0,
            dst_port: key.1,
            kind: TYPE_STREAM,
            op,
            buf_alloc: BUF_ALLOC,
            ..Default::default()
        }
    }

    /// Queues a reply on connection `key` (carrying its credit if it exists).
    fn reply(&mut self, key: Key, op: u16, flags: u32) {
        if self.replies.len() >= MAX_QUEUED_REPLIES {
            bump(&self.counters.replies_dropped);
            return;
        }
        let mut h = self.header(key, op);
        h.flags = flags;
        if let Some(c) = self.conns.get_mut(&key) {
            h.fwd_cnt = c.take_fwd_cnt();
        }
        if op == op::RST {
            bump(&self.counters.rst_sent);
        }
        self.replies.push_back(h);
    }

    /// Closes connection `key` (if open) and answers RST.
    fn reset(&mut self, key: Key) {
        self.close(key);
        self.reply(key, op::RST, 0);
    }

    /// Closes connection `key`: the host peer sees end of file at once; a socket the
    /// event loop watches is kept until the watch is removed.
    fn close(&mut self, key: Key) {
        if let Some(c) = self.conns.remove(&key) {
            let _ = c.stream.shutdown(std::net::Shutdown::Both);
            if c.registered.is_some() {
                self.closing.push(c);
            }
        }
    }

    /// Handles one guest packet whose chain `r` reads.
    fn handle_tx(&mut self, r: &mut Reader<'_>) {
        let mut raw = [0u8; HDR_LEN];
        if r.read_exact(&mut raw).is_err() {
            // Too short to hold a header: nothing to answer.
            bump(&self.counters.invalid_packets);
            return;
        }
        let h = Header::from_bytes(&raw);
        let key = (h.dst_port, h.src_port);
        if let Err(e) = h.validate(self.guest_cid, r.available_bytes()) {
            log::debug!("virtio-vsock: refused packet {key:?}: {e}");
            bump(&self.counters.invalid_packets);
            if h.op != op::RST {
                self.reset(key);
            }
            return;
        }
        if let Some(c) = self.conns.get_mut(&key) {
            c.update_peer_credit(&h);
        }
        match h.op {
            op::REQUEST => self.connect(key, &h),
            op::RW => self.forward(key, h.len as usize, r),
            op::CREDIT_UPDATE if self.conns.contains_key(&key) => {}
            op::CREDIT_REQUEST if self.conns.contains_key(&key) => self.reply(key, op::CREDIT_UPDATE, 0),
            op::SHUTDOWN if self.conns.contains_key(&key) => self.shutdown(key, h.flags),
            op::RST => self.close(key),
            _ => {
                log::debug!("virtio-vsock: unexpected op {} on {key:?}", h.op);
                bump(&self.counters.invalid_packets);
                self.reset(key);
            }
        }
    }

    fn connect(&mut self, key: Key, h: &Header) {
        if self.conns.contains_key(&key) || self.conns.len() >= MAX_CONNECTIONS {
            bump(&self.counters.invalid_packets);
            return self.reset(key);
        }
        let mut path = self.uds_path.clone().into_os_string();
        path.push(format!("_{}", key.0));
        match UnixStream::connect(&path).and_then(|s| Connection::new(s, h)) {
            Ok(c) => {
                self.conns.insert(key, c);
                self.reply(key, op::RESPONSE, 0);
            }
            Err(e) => {
                log::debug!("virtio-vsock: connecting to {path:?}: {e}");
                self.reply(key, op::RST, 0);
            }
        }
    }

    fn forward(&mut self, key: Key, len: usize, r: &mut Reader<'_>) {
        let Some(c) = self.conns.get_mut(&key) else {
            bump(&self.counters.invalid_packets);
            return self.reset(key);
        };
        let mut data = vec![0u8; len];
        let result = if c.guest_done_sending {
            Err("data after SHUTDOWN(SEND)".to_string())
        } else {
            r.read_exact(&mut data)
                .map_err(|e| e.to_string())
                .and_then(|()| c.push_from_guest(&data).map_err(|e| e.to_string()))
        };
        match result {
            Ok(()) if c.wants_credit_update() => self.reply(key, op::CREDIT_UPDATE, 0),
            Ok(()) => {}
            Err(e) => {
                log::debug!("virtio-vsock: {key:?}: {e}");
                self.reset(key);
            }
        }
    }

    fn shutdown(&mut self, key: Key, flags: u32) {
        let Some(c) = self.conns.get_mut(&key) else { return };
        if flags & (SHUTDOWN_RCV | SHUTDOWN_SEND) == SHUTDOWN_RCV | SHUTDOWN_SEND {
            // Both ways closed: flush what we can, then the host ends it with RST.
            let _ = c.flush();
            return self.reset(key);
        }
        if flags & SHUTDOWN_SEND != 0 {
            c.guest_done_sending = true;
        }
        if flags & SHUTDOWN_RCV != 0 {
            c.guest_done_receiving = true;
        }
        if let Err(e) = c.flush() {
            log::debug!("virtio-vsock: {key:?}: {e}");
            self.reset(key);
        }
    }

    /// Moves data between the host sockets and the connection buffers.
    fn poll_sockets(&mut self) {
        let mut failed = Vec::new();
        let mut eof = Vec::new();
        let mut credit = Vec::new();
        for (key, c) in self.conns.iter_mut() {
            match c.flush().map_err(|e| e.to_string()).and_then(|()| c.fill().map_err(|e| e.to_string())) {
                Ok(true) => eof.push(*key),
                Ok(false) if c.wants_credit_update() => credit.push(*key),
                Ok(false) => {}
                Err(e) => {
                    log::debug!("virtio-vsock: {key:?}: {e}");
                    failed.push(*key);
                }
            }
        }
        for key in failed {
            self.reset(key);
        }
        for key in eof {
            self.reply(key, op::SHUTDOWN, SHUTDOWN_RCV | SHUTDOWN_SEND);
        }
        for key in credit {
            self.reply(key, op::CREDIT_UPDATE, 0);
        }
    }

    /// The next connection with data the guest can take, round-robin.
    fn next_sender(&self) -> Option<Key> {
        let after = self.last_sent.map(|k| (std::ops::Bound::Excluded(k), std::ops::Bound::Unbounded));
        let later = after.into_iter().flat_map(|r| self.conns.range(r));
        later.chain(self.conns.iter()).find(|(_, c)| c.sendable() > 0).map(|(k, _)| *k)
    }

    fn has_work(&self) -> bool {
        !self.replies.is_empty() || self.next_sender().is_some()
    }

    /// Writes the next packet into `w`; returns the bytes written (0: nothing fit).
    fn write_rx(&mut self, w: &mut Writer<'_>) -> usize {
        if let Some(h) = self.replies.front() {
            if w.write_all(&h.to_bytes()).is_err() {
                return 0;
            }
            self.replies.pop_front();
            return HDR_LEN;
        }
        let Some(key) = self.next_sender() else { return 0 };
        let room = w.available_bytes().saturating_sub(HDR_LEN).min(MAX_PAYLOAD as usize);
        let mut h = self.header(key, op::RW);
        let Some(c) = self.conns.get_mut(&key) else { return 0 };
        let n = c.sendable().min(room);
        if n == 0 {
            return 0;
        }
        h.len = n as u32;
        h.fwd_cnt = c.take_fwd_cnt();
        if w.write_all(&h.to_bytes()).and_then(|()| w.write_all(c.to_guest(n))).is_err() {
            return 0;
        }
        c.delivered(n);
        self.last_sent = Some(key);
        HDR_LEN + n
    }
}

const TOKEN_RX: u32 = 0;
const TOKEN_TX: u32 = 1;
const TOKEN_EVENT: u32 = 2;
const TOKEN_SOCKET: u32 = 3;

/// The virtio-vsock device.
pub struct Vsock {
    queue_events: [EventFd; 3],
    active: Option<Active>,
    host: Host,
}

impl std::fmt::Debug for Vsock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vsock")
            .field("guest_cid", &self.host.guest_cid)
            .field("uds_path", &self.host.uds_path)
            .field("active", &self.active.is_some())
            .field("connections", &self.host.conns.len())
            .finish()
    }
}

impl Vsock {
    /// A vsock device for the guest `guest_cid`; a guest connection to port P goes to
    /// the Unix socket `<uds_path>_P`. Woken by `queue_events` (rx, tx, event).
    pub fn new(guest_cid: u64, uds_path: PathBuf, queue_events: [EventFd; 3]) -> Result<Self, VsockError> {
        if guest_cid <= HOST_CID || guest_cid >= u64::from(u32::MAX) {
            return Err(VsockError::GuestCid(guest_cid));
        }
        let host = Host {
            guest_cid,
            uds_path,
            conns: BTreeMap::new(),
            replies: VecDeque::new(),
            closing: Vec::new(),
            counters: Arc::new(VsockCounters::default()),
            last_sent: None,
        };
        Ok(Self { queue_events, active: None, host })
    }

    /// The device's counters.
    pub fn counters(&self) -> Arc<VsockCounters> {
        self.host.counters.clone()
    }

    /// Open connections.
    pub fn connections(&self) -> usize {
        self.host.conns.len()
    }

    /// Handles every packet the guest queued; returns how many chains were completed.
    pub fn process_tx(&mut self) -> usize {
        let Some(active) = self.active.as_mut() else { return 0 };
        let mem = active.mem.memory();
        let mut done = 0;
        while let Some(chain) = active.tx.pop_descriptor_chain(&*mem) {
            let head = chain.head_index();
            match chain.reader(&*mem) {
                Ok(mut r) => self.host.handle_tx(&mut r),
                Err(e) => {
                    log::warn!("virtio-vsock: tx chain {head} refused: {e:?}");
                    bump(&self.host.counters.refused_chains);
                }
            }
            if let Err(e) = active.tx.add_used(&*mem, head, 0) {
                log::warn!("virtio-vsock: cannot complete tx chain {head}: {e:?}");
                break;
            }
            done += 1;
        }
        if done > 0 && active.tx.needs_notification(&*mem).unwrap_or(true) {
            active.interrupt.signal_used_queue();
        }
        done
    }

    /// Moves host socket data and queued replies into the guest's rx buffers; returns
    /// how many chains were used.
    pub fn process_rx(&mut self) -> usize {
        let Some(active) = self.active.as_mut() else { return 0 };
        let mem = active.mem.memory();
        self.host.poll_sockets();
        let mut done = 0;
        loop {
            if !self.host.has_work() {
                self.host.poll_sockets();
                if !self.host.has_work() {
                    break;
                }
            }
            let Some(chain) = active.rx.pop_descriptor_chain(&*mem) else { break };
            let head = chain.head_index();
            let written = match chain.writer(&*mem) {
                Ok(mut w) if w.available_bytes() >= HDR_LEN => self.host.write_rx(&mut w),
                Ok(_) => {
                    log::debug!("virtio-vsock: rx chain {head} cannot hold a header");
                    bump(&self.host.counters.refused_chains);
                    0
                }
                Err(e) => {
                    log::warn!("virtio-vsock: rx chain {head} refused: {e:?}");
                    bump(&self.host.counters.refused_chains);
                    0
                }
            };
            if let Err(e) = active.rx.add_used(&*mem, head, written as u32) {
                log::warn!("virtio-vsock: cannot complete rx chain {head}: {e:?}");
                break;
            }
            done += 1;
        }
        if done > 0 && active.rx.needs_notification(&*mem).unwrap_or(true) {
            active.interrupt.signal_used_queue();
        }
        done
    }

    /// Brings the event loop's watches in line with the connections.
    fn sync_watches(&mut self, ops: &mut EventOps<'_>) {
        for c in self.host.closing.drain(..) {
            if c.registered.is_some() {
                if let Err(e) = ops.remove(Events::empty(&c.stream)) {
                    log::warn!("virtio-vsock: cannot unwatch a socket: {e:?}");
                }
            }
        }
        for c in self.host.conns.values_mut() {
            let want = c.interest();
            if want == c.registered {
                continue;
            }
            let result = match (c.registered, want) {
                (None, Some(set)) => ops.add(Events::with_data(&c.stream, TOKEN_SOCKET, set)),
                (Some(_), Some(set)) => ops.modify(Events::with_data(&c.stream, TOKEN_SOCKET, set)),
                (Some(_), None) => ops.remove(Events::empty(&c.stream)),
                (None, None) => Ok(()),
            };
            match result {
                Ok(()) => c.registered = want,
                Err(e) => log::warn!("virtio-vsock: cannot update a socket watch: {e:?}"),
            }
        }
    }

    fn config(&self) -> [u8; 8] {
        self.host.guest_cid.to_le_bytes()
    }
}

impl VirtioDevice for Vsock {
    fn device_type(&self) -> u32 {
        device_id::VSOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE, QUEUE_SIZE, QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        0 // VIRTIO_VSOCK_F_STREAM is implied when no other socket type is offered
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config(), offset, data);
    }

    fn activate(&mut self, ctx: ActivateContext) -> Result<(), ActivateError> {
        let got = ctx.queues.len();
        let mut queues = ctx.queues.into_iter();
        let (Some(rx), Some(tx), Some(event), None) = (queues.next(), queues.next(), queues.next(), queues.next())
        else {
            return Err(ActivateError::QueueCount { got, want: 3 });
        };
        self.active = Some(Active { mem: ctx.mem, rx, tx, _event: event, interrupt: ctx.interrupt });
        // Packets queued before activation are handled at once.
        let _ = self.queue_events[TX_QUEUE].write(1);
        Ok(())
    }

    fn reset(&mut self) {
        self.active = None;
        self.host.replies.clear();
        self.host.last_sent = None;
        let keys: Vec<Key> = self.host.conns.keys().copied().collect();
        for key in keys {
            self.host.close(key);
        }
    }
}

impl MutEventSubscriber for Vsock {
    fn process(&mut self, events: Events, ops: &mut EventOps<'_>) {
        match events.data() {
            TOKEN_RX | TOKEN_TX | TOKEN_EVENT => {
                if let Some(e) = self.queue_events.get(events.data() as usize) {
                    let _ = e.read();
                }
            }
            _ => {}
        }
        if self.active.is_some() {
            self.process_tx();
            self.process_rx();
        }
        self.sync_watches(ops);
    }

    fn init(&mut self, ops: &mut EventOps<'_>) {
        for (i, e) in self.queue_events.iter().enumerate() {
            if let Err(err) = ops.add(Events::with_data(e, i as u32, EventSet::IN)) {
                log::error!("virtio-vsock: cannot watch queue event {i}: {err:?}");
            }
        }
    }
}

#[cfg(test)]
mod tests;
