//! Tests for the vsock device, driven through mock queues and real Unix sockets.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::Ordering;

use virtio_queue::desc::{split::Descriptor, RawDescriptor};
use virtio_queue::mock::MockSplitQueue;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EFD_NONBLOCK;
use vmm_sys_util::tempdir::TempDir;

use super::*;
use crate::virtio::SharedMemory;

const F_NEXT: u16 = 1;
const F_WRITE: u16 = 2;
const GUEST_CID: u64 = 3;
const PORT: u32 = 1234;
const GUEST_PORT: u32 = 50_000;
const TX_BUF: u64 = 0x10_0000;
const RX_BUF: u64 = 0x20_0000;
const RX_BUF_LEN: u32 = 0x1000;

fn desc(addr: u64, len: u32, flags: u16, next: u16) -> RawDescriptor {
    RawDescriptor::from(Descriptor::new(addr, len, flags, next))
}

fn guest_header(op: u16, len: u32) -> Header {
    Header {
        src_cid: GUEST_CID,
        dst_cid: HOST_CID,
        src_port: GUEST_PORT,
        dst_port: PORT,
        len,
        kind: TYPE_STREAM,
        op,
        buf_alloc: 64 << 10,
        ..Default::default()
    }
}

struct Rig<'a> {
    m: &'a GuestMemoryMmap,
    dev: Vsock,
    rx: MockSplitQueue<'a, GuestMemoryMmap>,
    tx: MockSplitQueue<'a, GuestMemoryMmap>,
    dir: TempDir,
    tx_next: u16,
    tx_addr: u64,
    rx_next: u16,
    rx_seen: u16,
}

impl<'a> Rig<'a> {
    fn new(m: &'a GuestMemoryMmap, s: &SharedMemory) -> Self {
        let dir = TempDir::new_with_prefix("/tmp/cvmm-vsock-").unwrap();
        let events = [(); 3].map(|()| EventFd::new(EFD_NONBLOCK).unwrap());
        let mut dev = Vsock::new(GUEST_CID, dir.as_path().join("v.sock"), events).unwrap();
        let rx = MockSplitQueue::create(m, GuestAddress(0), 16);
        let tx = MockSplitQueue::create(m, GuestAddress(0x1_0000), 16);
        let ev = MockSplitQueue::create(m, GuestAddress(0x2_0000), 16);
        let ctx = ActivateContext {
            mem: s.view(),
            queues: vec![rx.create_queue().unwrap(), tx.create_queue().unwrap(), ev.create_queue().unwrap()],
            interrupt: VirtioInterrupt::new(EventFd::new(EFD_NONBLOCK).unwrap()),
            acked_features: 0,
        };
        dev.activate(ctx).unwrap();
        Rig { m, dev, rx, tx, dir, tx_next: 0, tx_addr: TX_BUF, rx_next: 0, rx_seen: 0 }
    }

    fn listen(&self, port: u32) -> UnixListener {
        UnixListener::bind(self.dir.as_path().join(format!("v.sock_{port}"))).unwrap()
    }

    /// Queues a guest packet: the header in one descriptor, the payload in another.
    fn send(&mut self, h: Header, payload: &[u8]) {
        let hdr_addr = self.tx_addr;
        let data_addr = hdr_addr + 0x1000;
        self.tx_addr += 0x1_0000 + ((payload.len() as u64 + 0xfff) & !0xfff);
        self.m.write_slice(&h.to_bytes(), GuestAddress(hdr_addr)).unwrap();
        self.m.write_slice(payload, GuestAddress(data_addr)).unwrap();
        let i = self.tx_next;
        let descs = if payload.is_empty() {
            vec![desc(hdr_addr, HDR_LEN as u32, 0, 0)]
        } else {
            vec![desc(hdr_addr, HDR_LEN as u32, F_NEXT, i + 1), desc(data_addr, payload.len() as u32, 0, 0)]
        };
        self.tx_next += descs.len() as u16;
        self.tx.add_desc_chains(&descs, i).unwrap();
        self.dev.process_tx();
    }

    /// Offers one rx buffer and returns the packet the device put there, if any.
    fn receive(&mut self) -> Option<(Header, Vec<u8>)> {
        let i = self.rx_next;
        let addr = RX_BUF + u64::from(i) * u64::from(RX_BUF_LEN);
        self.rx.add_desc_chains(&[desc(addr, RX_BUF_LEN, F_WRITE, 0)], i).unwrap();
        self.rx_next += 1;
        self.dev.process_rx();
        if self.rx.used().idx().load() == self.rx_seen {
            return None; // nothing to deliver: the buffer stays with the device
        }
        let used = self.rx.used().ring().ref_at(usize::from(self.rx_seen)).unwrap().load();
        self.rx_seen += 1;
        let addr = RX_BUF + u64::from(used.id()) * u64::from(RX_BUF_LEN);
        if used.len() == 0 {
            return None; // refused (e.g. private memory)
        }
        let mut raw = [0u8; HDR_LEN];
        self.m.read_slice(&mut raw, GuestAddress(addr)).unwrap();
        let h = Header::from_bytes(&raw);
        assert_eq!(used.len(), HDR_LEN as u32 + h.len, "used length covers header and payload");
        let mut payload = vec![0u8; h.len as usize];
        self.m.read_slice(&mut payload, GuestAddress(addr + HDR_LEN as u64)).unwrap();
        Some((h, payload))
    }

    fn connect(&mut self) -> UnixStream {
        let listener = self.listen(PORT);
        self.send(guest_header(op::REQUEST, 0), &[]);
        let (stream, _) = listener.accept().unwrap();
        let (h, _) = self.receive().unwrap();
        assert_eq!(h.op, op::RESPONSE);
        stream
    }
}

fn memory(shared: bool) -> (GuestMemoryMmap, SharedMemory) {
    let m = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x40_0000)]).unwrap();
    let s = if shared { SharedMemory::all_shared(&m) } else { SharedMemory::all_private(&m) };
    (m, s)
}

fn assert_rst(r: &mut Rig<'_>, src_port: u32, dst_port: u32) {
    let (h, _) = r.receive().expect("a reply");
    assert_eq!(h.op, op::RST);
    assert_eq!((h.src_cid, h.dst_cid), (HOST_CID, GUEST_CID));
    assert_eq!((h.src_port, h.dst_port), (src_port, dst_port));
}

#[test]
fn a_request_to_a_listening_port_is_answered_and_guest_data_reaches_the_listener() {
    let (m, s) = memory(true);
    let mut r = Rig::new(&m, &s);
    let listener = r.listen(PORT);

    r.send(guest_header(op::REQUEST, 0), &[]);
    let (mut host, _) = listener.accept().unwrap();
    let (resp, _) = r.receive().unwrap();
    r.send(guest_header(op::RW, 4), b"ping");

    assert_eq!(resp.op, op::RESPONSE);
    assert_eq!((resp.src_cid, resp.dst_cid, resp.src_port, resp.dst_port), (HOST_CID, GUEST_CID, PORT, GUEST_PORT));
    assert_eq!((resp.kind, resp.buf_alloc), (TYPE_STREAM, BUF_ALLOC));
    let mut got = [0u8; 4];
    host.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"ping");
    assert_eq!(r.dev.connections(), 1);
}

#[test]
fn data_from_the_listener_reaches_the_guest_within_its_credit() {
    let (m, s) = memory(true);
    let mut r = Rig::new(&m, &s);
    let listener = r.listen(PORT);
    r.send(Header { buf_alloc: 3, ..guest_header(op::REQUEST, 0) }, &[]);
    let (mut host, _) = listener.accept().unwrap();
    assert_eq!(r.receive().unwrap().0.op, op::RESPONSE);

    host.write_all(b"pong!").unwrap();
    let (first, data1) = r.receive().unwrap();
    assert!(r.receive().is_none(), "no credit left");
    r.send(Header { buf_alloc: 3, fwd_cnt: 3, ..guest_header(op::CREDIT_UPDATE, 0) }, &[]);
    let (second, data2) = r.receive().unwrap();

    assert_eq!((first.op, data1.as_slice()), (op::RW, &b"pon"[..]));
    assert_eq!((second.op, data2.as_slice()), (op::RW, &b"g!"[..]));
    assert_eq!((second.src_port, second.dst_port), (PORT, GUEST_PORT));
}

#[test]
fn a_credit_request_is_answered_with_the_bytes_forwarded() {
    let (m, s) = memory(true);
    let mut r = Rig::new(&m, &s);
    let mut host = r.connect();
    r.send(guest_header(op::RW, 5), b"hello");
    let mut got = [0u8; 5];
    host.read_exact(&mut got).unwrap();

    r.send(guest_header(op::CREDIT_REQUEST, 0), &[]);

    let (h, _) = r.receive().unwrap();
    assert_eq!((h.op, h.fwd_cnt, h.buf_alloc), (op::CREDIT_UPDATE, 5, BUF_ALLOC));
}

#[test]
fn a_request_to_a_port_without_a_listener_is_reset() {
    let (m, s) = memory(true);
    let mut r = Rig::new(&m, &s);

    r.send(guest_header(op::REQUEST, 0), &[]);

    assert_rst(&mut r, PORT, GUEST_PORT);
    assert_eq!(r.dev.connections(), 0);
}

#[test]
fn malformed_headers_are_reset_without_connecting() {
    let (m, s) = memory(true);
    let mut r = Rig::new(&m, &s);
    let listener = r.listen(PORT);
    listener.set_nonblocking(true).unwrap();
    let bad = [
        Header { kind: 2, ..guest_header(op::REQUEST, 0) },
        Header { src_cid: 4, ..guest_header(op::REQUEST, 0) },
        Header { dst_cid: 7, ..guest_header(op::REQUEST, 0) },
        guest_header(op::REQUEST, 100), // no payload in the chain
        Header { op: 99, ..guest_header(op::REQUEST, 0) },
    ];

    for h in bad {
        r.send(h, &[]);
        assert_rst(&mut r, PORT, GUEST_PORT);
    }

    assert!(listener.accept().is_err(), "nothing connected");
    assert_eq!(r.dev.counters().invalid_packets.load(Ordering::Relaxed), 5);
}

#[test]
fn a_payload_beyond_64_kib_is_reset_even_when_the_chain_holds_it() {
    let (m, s) = memory(true);
    let mut r = Rig::new(&m, &s);
    let mut host = r.connect();
    let big = vec![1u8; MAX_PAYLOAD as usize + 1];

    r.send(guest_header(op::RW, big.len() as u32), &big);

    assert_rst(&mut r, PORT, GUEST_PORT);
    assert_eq!(r.dev.connections(), 0);
    let mut buf = [0u8; 8];
    assert_eq!(host.read(&mut buf).unwrap(), 0, "the host side sees the connection closed, no data");
}

#[test]
fn data_for_an_unknown_connection_is_reset() {
    let (m, s) = memory(true);
    let mut r = Rig::new(&m, &s);
    r.send(guest_header(op::RW, 3), b"abc");
    assert_rst(&mut r, PORT, GUEST_PORT);
}

#[test]
fn a_guest_rst_is_never_answered() {
    let (m, s) = memory(true);
    let mut r = Rig::new(&m, &s);
    r.send(Header { kind: 9, ..guest_header(op::RST, 0) }, &[]);
    r.send(guest_header(op::RST, 0), &[]);
    assert!(r.receive().is_none());
}

#[test]
fn a_full_guest_shutdown_closes_the_host_socket_and_resets() {
    let (m, s) = memory(true);
    let mut r = Rig::new(&m, &s);
    let mut host = r.connect();
    r.send(guest_header(op::RW, 3), b"bye");

    r.send(Header { flags: SHUTDOWN_RCV | SHUTDOWN_SEND, ..guest_header(op::SHUTDOWN, 0) }, &[]);

    assert_rst(&mut r, PORT, GUEST_PORT);
    let mut got = Vec::new();
    host.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"bye", "data is flushed before the close");
    assert_eq!(r.dev.connections(), 0);
}

#[test]
fn the_host_closing_its_socket_sends_shutdown() {
    let (m, s) = memory(true);
    let mut r = Rig::new(&m, &s);
    let host = r.connect();

    drop(host);

    let (h, _) = r.receive().unwrap();
    assert_eq!((h.op, h.flags), (op::SHUTDOWN, SHUTDOWN_RCV | SHUTDOWN_SEND));
}

#[test]
fn guest_data_beyond_the_advertised_credit_is_reset() {
    let (m, s) = memory(true);
    let mut r = Rig::new(&m, &s);
    let _host = r.connect(); // never reads: the socket buffer fills, then our buffer
    let chunk = vec![0u8; MAX_PAYLOAD as usize];
    let mut reset = false;
    for _ in 0..64 {
        r.send(guest_header(op::RW, chunk.len() as u32), &chunk);
        if r.dev.connections() == 0 {
            reset = true;
            break;
        }
        if r.tx_next > 12 {
            // Recycle the mock ring: the device has completed everything queued so far.
            r.tx_next = 0;
            r.tx_addr = TX_BUF;
        }
    }
    assert!(reset, "a guest ignoring credit is cut off");
}

#[test]
fn chains_in_private_memory_are_refused_and_nothing_connects() {
    let (m, s) = memory(false);
    s.set_shared(0, 0x3_0000, true).unwrap(); // the rings only
    let mut r = Rig::new(&m, &s);
    let listener = r.listen(PORT);
    listener.set_nonblocking(true).unwrap();

    r.send(guest_header(op::REQUEST, 0), &[]);

    assert!(listener.accept().is_err(), "nothing connected");
    assert_eq!(r.dev.counters().refused_chains.load(Ordering::Relaxed), 1);
    assert_eq!(r.dev.connections(), 0);
}

#[test]
fn replies_wait_for_an_rx_buffer_in_shared_memory() {
    let (m, s) = memory(false);
    s.set_shared(0, 0x3_0000, true).unwrap();
    s.set_shared(0x10_0000, 0x10_0000, true).unwrap(); // tx buffers, not rx
    let mut r = Rig::new(&m, &s);
    r.send(guest_header(op::REQUEST, 0), &[]); // no listener: RST queued

    assert!(r.receive().is_none());

    assert_eq!(m.read_obj::<u64>(GuestAddress(RX_BUF)).unwrap(), 0, "private memory untouched");
    assert_eq!(r.dev.counters().refused_chains.load(Ordering::Relaxed), 1);
    s.set_shared(RX_BUF, 0x10_0000, true).unwrap();
    assert_rst(&mut r, PORT, GUEST_PORT);
}

#[test]
fn reserved_guest_cids_are_rejected() {
    for cid in [0, 1, 2, u64::from(u32::MAX), 1 << 40] {
        let events = [(); 3].map(|()| EventFd::new(EFD_NONBLOCK).unwrap());
        assert_eq!(Vsock::new(cid, "/tmp/x".into(), events).err(), Some(VsockError::GuestCid(cid)));
    }
}

#[test]
fn config_space_holds_the_guest_cid() {
    let events = [(); 3].map(|()| EventFd::new(EFD_NONBLOCK).unwrap());
    let dev = Vsock::new(0x1234_5678, "/tmp/x".into(), events).unwrap();
    let mut c = [0xffu8; 12];
    dev.read_config(0, &mut c);
    assert_eq!(c, [0x78, 0x56, 0x34, 0x12, 0, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(dev.device_type(), device_id::VSOCK);
}

#[test]
fn the_event_loop_watches_connected_sockets() {
    use event_manager::{EventManager, SubscriberOps};

    let (m, s) = memory(true);
    let mut r = Rig::new(&m, &s);
    let mut host = r.connect();
    let events = [(); 3].map(|()| EventFd::new(EFD_NONBLOCK).unwrap());
    let dev = std::mem::replace(&mut r.dev, Vsock::new(GUEST_CID, "/tmp/x".into(), events).unwrap());
    let mut em = EventManager::<Vsock>::new().unwrap();
    let id = em.add_subscriber(dev);
    for i in 1..3u16 {
        let addr = RX_BUF + u64::from(i) * u64::from(RX_BUF_LEN);
        r.rx.add_desc_chains(&[desc(addr, RX_BUF_LEN, F_WRITE, 0)], i).unwrap();
    }

    // A queue notification makes the device register the socket.
    em.subscriber_mut(id).unwrap().queue_events[RX_QUEUE].write(1).unwrap();
    em.run_with_timeout(100).unwrap();
    // From now on the socket itself wakes the device.
    host.write_all(b"woken by the socket").unwrap();
    em.run_with_timeout(1000).unwrap();

    assert_eq!(r.rx.used().idx().load(), 2, "RESPONSE, then the data");
    let used = r.rx.used().ring().ref_at(1).unwrap().load();
    assert_eq!(used.len(), HDR_LEN as u32 + 19);
    let mut got = [0u8; 19];
    m.read_slice(&mut got, GuestAddress(RX_BUF + u64::from(used.id()) * u64::from(RX_BUF_LEN) + HDR_LEN as u64))
        .unwrap();
    assert_eq!(&got, b"woken by the socket");
}
