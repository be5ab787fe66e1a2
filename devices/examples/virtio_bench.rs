//! Host-side device benchmark: drives virtio-blk (over a memory-backed file in
//! /dev/shm) and virtio-net (tx over a Unix datagram pair, over the file backend to a
//! memory-backed file in /dev/shm, and over the ring backend in /dev/shm) queues directly with a mock driver, for 4 KiB and
//! 64 KiB requests, and prints MB/s next to a plain memcpy of the same bytes measured in
//! the same run. Used by scripts/bench-devices.sh.
//!
//! The goal (issue 4, docs/devices.md "Performance"): 64 KiB virtio-blk reads, writes
//! and virtio-net transmits at >= 70% of the memcpy figure.
//!
//! The memcpy baseline moves the same bytes once, request by request, between two
//! buffers of `BATCH * request` bytes: the working set of one device batch (the guest's
//! data buffers and the image, or the socket's buffers). The image is filled before it
//! is read, so reads move real page-cache bytes (a hole would read the shared zero page).
//!
//! The machine is shared, so the baseline is not measured apart from the device: each
//! run of a case is a pair, a memcpy run of the case's bytes right before the device run,
//! and the pair's ratio is device MB/s over memcpy MB/s. (Timing them batch by batch
//! instead would let each evict the other's working set between batches, which costs
//! the faster memcpy proportionally more and flatters the device.) Each case runs
//! [`RUNS`] pairs; the pair with the median ratio is printed (device MB/s, memcpy MB/s,
//! ratio), with the lowest and highest ratio, and the median ratio of CPU time (the
//! thread's own, so preemption by other work on the machine drops out; for net it
//! leaves out waiting for the peer). Net frames are all received before the next pair
//! starts, so the peer never competes with a timed memcpy.
//!
//! "(socket alone)" is not a device: the same frames sent with one `send` each from a
//! host buffer, to the same peer, paired with memcpy the same way. It is the most the
//! Unix datagram backend can carry on this host, whatever the device does.
//!
//! "virtio-net tx file" appends each frame as a record (`devices::virtio::net_file`)
//! to a file in /dev/shm, a burst per `writev` straight from guest memory; the file is
//! replaced every [`FILE_CHUNK`] bytes (untimed, after its every byte is checked) so
//! the run does not hold 512 MiB of tmpfs. "(file alone)" writes the same records with
//! one `writev` of header and frame each from a host buffer: the most such a file
//! takes on this host.
//!
//! "virtio-net tx ring" copies each frame as a record into the tx ring of a ring file
//! in /dev/shm (`devices::virtio::net_ring`; the data area holds one batch, so each
//! batch lands on the same bytes: the baseline's working set), one memcpy per descriptor part and one release store per burst; a `RingPeer`
//! drains and checks the batch between batches (untimed, through one reused buffer).
//! "(ring peer rx)" times that peer instead: copying a batch's frames out of the ring
//! into a host buffer each.
//!
//! usage: cargo run --release -p devices --example virtio_bench [case filter] [runs]
//! (with a filter, only cases whose name contains it run, e.g. "blk read  64").

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use devices::virtio::block::{Block, BlockOptions};
use devices::virtio::net::{Net, UnixDatagramBackend};
use devices::virtio::net_file::FileBackend;
use devices::virtio::net_ring::{record_len, RingBackend, RingPeer, MIN_RING_SIZE};
use devices::virtio::{ActivateContext, SharedMemory, VirtioDevice, VirtioInterrupt};
use virtio_queue::desc::{split::Descriptor, RawDescriptor};
use virtio_queue::mock::MockSplitQueue;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

const F_NEXT: u16 = 1;
const F_WRITE: u16 = 2;
const QUEUE: u16 = 256;
/// Requests per batch (each request is one chain of up to 3 descriptors).
const BATCH: usize = 64;
const DATA: u64 = 0x100_0000;
const TOTAL: usize = 512 << 20;
/// Pairs (memcpy run, device run) per case; the median ratio is reported.
const RUNS: usize = 5;
/// Bytes of frames per net file before it is checked and replaced.
const FILE_CHUNK: usize = 64 << 20;

/// One pair: seconds the memcpy run and the device run took to move `bytes` each, by
/// the wall clock and in CPU time of the thread that ran them.
#[derive(Default, Clone, Copy)]
struct Run {
    device: f64,
    copy: f64,
    device_cpu: f64,
    copy_cpu: f64,
    bytes: usize,
}

/// Wall-clock and thread CPU stopwatch.
struct Clock {
    wall: Instant,
    cpu: f64,
}

impl Clock {
    fn start() -> Self {
        Self { cpu: thread_cpu(), wall: Instant::now() }
    }

    /// (wall, CPU) seconds since `start`.
    fn stop(&self) -> (f64, f64) {
        (self.wall.elapsed().as_secs_f64(), thread_cpu() - self.cpu)
    }
}

/// CPU seconds the calling thread has used.
fn thread_cpu() -> f64 {
    let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `t` is a valid timespec the call writes.
    let ret = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    assert_eq!(ret, 0, "clock_gettime");
    t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9
}

impl Run {
    fn device_mbps(&self) -> f64 {
        self.bytes as f64 / self.device / 1e6
    }
    fn copy_mbps(&self) -> f64 {
        self.bytes as f64 / self.copy / 1e6
    }
    fn ratio(&self) -> f64 {
        self.copy / self.device
    }
    fn cpu_ratio(&self) -> f64 {
        self.copy_cpu / self.device_cpu
    }
}

/// The memcpy baseline: (wall, CPU) seconds to move `total` bytes once, request by
/// request, between two buffers of `BATCH * req` bytes (allocated and faulted in before
/// the clock starts).
fn memcpy_run(req: usize, total: usize) -> (f64, f64) {
    let src = vec![0x5au8; BATCH * req];
    let mut dst = vec![0u8; BATCH * req];
    dst.copy_from_slice(&src);
    let t = Clock::start();
    for _ in 0..total / (BATCH * req) {
        for (d, s) in dst.chunks_mut(req).zip(src.chunks(req)) {
            d.copy_from_slice(s);
        }
        std::hint::black_box(&mut dst);
    }
    t.stop()
}

fn evt() -> EventFd {
    EventFd::new(EFD_NONBLOCK).expect("eventfd")
}

fn activate(dev: &mut dyn VirtioDevice, shared: &SharedMemory, queues: Vec<virtio_queue::Queue>) {
    let ctx = ActivateContext {
        mem: shared.view(),
        queues,
        interrupt: VirtioInterrupt::new(evt()),
        acked_features: (1 << 32) | (1 << 33),
    };
    dev.activate(ctx).expect("activate");
}

/// One run of virtio-blk reads (`write == false`) or writes of `req` bytes.
fn bench_blk(mem: &GuestMemoryMmap, shared: &SharedMemory, req: usize, write: bool) -> Run {
    let path = format!("/dev/shm/cvmm-bench-{}.img", std::process::id());
    let file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&path).unwrap();
    // Real bytes in the page cache, not holes: reads then copy them, writes overwrite them.
    let pattern: Vec<u8> = (0..BATCH * req).map(|i| (i / 4096) as u8 ^ i as u8).collect();
    std::os::unix::fs::FileExt::write_all_at(&file, &pattern, 0).unwrap();
    let blk_file = file.try_clone().unwrap();
    let mut blk = Block::new(file, BlockOptions { read_only: false, id: "bench".into() }, evt()).unwrap();
    std::fs::remove_file(&path).ok();
    let batches = TOTAL / (BATCH * req);
    let mut run = Run { bytes: batches * BATCH * req, ..Run::default() };
    let data_at = DATA + 0x100_0000;
    // What the guest writes (0xa5) differs from the image's pattern; reads start from zeros.
    mem.write_slice(&vec![if write { 0xa5 } else { 0 }; BATCH * req], GuestAddress(data_at)).unwrap();
    (run.copy, run.copy_cpu) = memcpy_run(req, run.bytes);
    for _ in 0..batches {
        let mock = MockSplitQueue::new(mem, QUEUE);
        let mut descs = Vec::new();
        for i in 0..BATCH {
            let hdr = DATA + (i as u64) * 0x1000;
            // The request header: type (0 = IN, 1 = OUT), reserved, sector.
            mem.write_obj(u32::from(write), GuestAddress(hdr)).unwrap();
            mem.write_obj((i * req / 512) as u64, GuestAddress(hdr + 8)).unwrap();
            let data = data_at + (i * req) as u64;
            // The mock stores `next` as given: each link must name the following entry.
            let first = (i * 3) as u16;
            descs.push(RawDescriptor::from(Descriptor::new(hdr, 16, F_NEXT, first + 1)));
            descs.push(RawDescriptor::from(Descriptor::new(
                data,
                req as u32,
                F_NEXT | if write { 0 } else { F_WRITE },
                first + 2,
            )));
            descs.push(RawDescriptor::from(Descriptor::new(hdr + 16, 1, F_WRITE, 0)));
        }
        for (i, chain) in descs.chunks(3).enumerate() {
            mock.add_desc_chains(chain, (i * 3) as u16).unwrap();
        }
        activate(&mut blk, shared, vec![mock.create_queue().unwrap()]);
        let completed = blk.completed();
        let t = Clock::start();
        let done = blk.process_queue();
        let (wall, cpu) = t.stop();
        (run.device, run.device_cpu) = (run.device + wall, run.device_cpu + cpu);
        assert_eq!(done, BATCH);
        assert_eq!(blk.completed() - completed, BATCH as u64, "every request must succeed");
    }
    let mut got = vec![0u8; BATCH * req];
    if write {
        std::os::unix::fs::FileExt::read_exact_at(&blk_file, &mut got, 0).unwrap();
        assert!(got.iter().all(|&b| b == 0xa5), "the image must hold what the guest wrote");
    } else {
        mem.read_slice(&mut got, GuestAddress(data_at)).unwrap();
        assert!(got == pattern, "the guest must hold what the image holds");
    }
    run
}

/// One run of virtio-net transmits of `req`-byte frames to a Unix datagram peer; or, with
/// `alone`, of the same frames sent by plain `send` calls from one host buffer (no
/// device, no guest memory): the most this backend can carry, for comparison.
fn bench_net_tx(mem: &GuestMemoryMmap, shared: &SharedMemory, req: usize, alone: bool) -> Run {
    let (ours, peer) = std::os::unix::net::UnixDatagram::pair().unwrap();
    let received = Arc::new(AtomicUsize::new(0));
    let counted = received.clone();
    let drain = std::thread::spawn(move || {
        let mut buf = vec![0u8; 70_000];
        while let Ok(n) = peer.recv(&mut buf) {
            if n == 1 {
                break;
            }
            counted.fetch_add(n, Ordering::Release);
        }
    });
    let mut net = Net::new(
        [2, 0, 0, 0, 0, 1],
        Box::new(UnixDatagramBackend::new(ours.try_clone().unwrap()).unwrap()),
        [evt(), evt()],
    );
    // The backend made the shared socket non-blocking; a full peer queue would then drop
    // frames (cheaply). Block instead, so only delivered frames count.
    ours.set_nonblocking(false).unwrap();
    // Room for a whole batch in flight (the kernel caps this at net.core.wmem_max), so
    // the sender is not woken per frame by the drain thread.
    let sndbuf: libc::c_int = (BATCH * (req + 4096)) as libc::c_int;
    // SAFETY: `ours` is an open socket and `sndbuf` a c_int that outlives the call, whose
    // size is passed; SO_SNDBUF only reads it.
    let ret = unsafe {
        libc::setsockopt(
            ours.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            (&sndbuf as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(ret, 0, "SO_SNDBUF");
    let frame = req - 12;
    let batches = TOTAL / (BATCH * req);
    let mut run = Run { bytes: batches * BATCH * req, ..Run::default() };
    (run.copy, run.copy_cpu) = memcpy_run(req, run.bytes);
    // The host buffer `alone` sends from, the frame at a cache line past a page start.
    let host = vec![0x3cu8; req + 8192];
    let at = 64 + (4096 - host.as_ptr() as usize % 4096) % 4096;
    for _ in 0..batches {
        if alone {
            let t = Clock::start();
            for _ in 0..BATCH {
                assert_eq!(ours.send(&host[at..at + frame]).unwrap(), frame);
            }
            let (wall, cpu) = t.stop();
            (run.device, run.device_cpu) = (run.device + wall, run.device_cpu + cpu);
            continue;
        }
        let rx = MockSplitQueue::create(mem, GuestAddress(0), QUEUE);
        let tx = MockSplitQueue::create(mem, GuestAddress(0x8_0000), QUEUE);
        let mut descs = Vec::new();
        for i in 0..BATCH {
            let buf = DATA + (i * 0x1_1000) as u64;
            descs.push(RawDescriptor::from(Descriptor::new(buf, 12, F_NEXT, (i * 2 + 1) as u16)));
            descs.push(RawDescriptor::from(Descriptor::new(buf + 0x1000, frame as u32, 0, 0)));
        }
        for (i, chain) in descs.chunks(2).enumerate() {
            tx.add_desc_chains(chain, (i * 2) as u16).unwrap();
        }
        activate(&mut net, shared, vec![rx.create_queue().unwrap(), tx.create_queue().unwrap()]);
        let t = Clock::start();
        let done = net.process_tx();
        let (wall, cpu) = t.stop();
        (run.device, run.device_cpu) = (run.device + wall, run.device_cpu + cpu);
        assert_eq!(done, BATCH);
    }
    // Everything is received before the next pair's memcpy run starts.
    while received.load(Ordering::Acquire) < batches * BATCH * frame {
        std::thread::yield_now();
    }
    ours.send(&[0]).unwrap();
    drain.join().unwrap();
    assert_eq!(net.counters().tx_dropped.load(Ordering::Relaxed), 0, "no frame may be dropped");
    assert_eq!(received.load(Ordering::Acquire), batches * BATCH * frame, "every frame must arrive whole");
    run
}

/// The byte frame `i` of a batch is filled with (its tx buffers and its records).
fn frame_byte(i: usize) -> u8 {
    (i as u8) ^ 0x5a
}

/// Checks a net file: `frames` records of `len` bytes, record i of a batch filled with
/// `frame_byte(i)`; then deletes it.
fn check_net_file(path: &std::path::Path, frames: usize, len: usize) {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(bytes.len(), frames * (4 + len), "every frame must be a whole record");
    for (n, record) in bytes.chunks(4 + len).enumerate() {
        assert_eq!(u32::from_le_bytes(record[..4].try_into().unwrap()) as usize, len, "record {n}");
        let want = frame_byte(n % BATCH);
        assert!(record[4..].iter().all(|&b| b == want), "record {n} must hold its frame");
    }
    std::fs::remove_file(path).unwrap();
}

/// One run of virtio-net transmits of `req`-byte chains (a 12-byte header and the
/// frame) to the file backend over a file in /dev/shm; or, with `alone`, the same
/// records written with one `writev` each from a host buffer (no device).
fn bench_net_file(mem: &GuestMemoryMmap, shared: &SharedMemory, req: usize, alone: bool) -> Run {
    let path = std::path::PathBuf::from(format!("/dev/shm/cvmm-bench-{}.frames", std::process::id()));
    let frame = req - 12;
    let batches = TOTAL / (BATCH * req);
    let per_file = (FILE_CHUNK / (BATCH * req)).max(1);
    let mut run = Run { bytes: batches * BATCH * req, ..Run::default() };
    for i in 0..BATCH {
        let buf = DATA + (i * 0x1_1000) as u64;
        mem.write_slice(&vec![frame_byte(i); frame], GuestAddress(buf + 0x1000)).unwrap();
    }
    (run.copy, run.copy_cpu) = memcpy_run(req, run.bytes);
    let host: Vec<Vec<u8>> = (0..BATCH).map(|i| vec![frame_byte(i); frame]).collect();
    let header = (frame as u32).to_le_bytes();
    let mut net = None;
    let mut appender = None;
    for b in 0..batches {
        if b % per_file == 0 {
            if b > 0 {
                (net, appender) = (None, None);
                check_net_file(&path, per_file * BATCH, frame);
            }
            let _ = std::fs::remove_file(&path);
            if alone {
                appender = Some(std::fs::OpenOptions::new().append(true).create(true).open(&path).unwrap());
            } else {
                let backend = Box::new(FileBackend::open(&path, None).unwrap());
                net = Some(Net::new([2, 0, 0, 0, 0, 1], backend, [evt(), evt()]));
            }
        }
        if let Some(file) = &appender {
            let t = Clock::start();
            for data in &host {
                let iov = [
                    libc::iovec { iov_base: header.as_ptr().cast_mut().cast(), iov_len: 4 },
                    libc::iovec { iov_base: data.as_ptr().cast_mut().cast(), iov_len: frame },
                ];
                // SAFETY: both iovecs point at live host buffers of the given lengths;
                // writev only reads them.
                let n = unsafe { libc::writev(file.as_raw_fd(), iov.as_ptr(), 2) };
                assert_eq!(n as usize, 4 + frame);
            }
            let (wall, cpu) = t.stop();
            (run.device, run.device_cpu) = (run.device + wall, run.device_cpu + cpu);
            continue;
        }
        let net = net.as_mut().unwrap();
        let rx = MockSplitQueue::create(mem, GuestAddress(0), QUEUE);
        let tx = MockSplitQueue::create(mem, GuestAddress(0x8_0000), QUEUE);
        let mut descs = Vec::new();
        for i in 0..BATCH {
            let buf = DATA + (i * 0x1_1000) as u64;
            descs.push(RawDescriptor::from(Descriptor::new(buf, 12, F_NEXT, (i * 2 + 1) as u16)));
            descs.push(RawDescriptor::from(Descriptor::new(buf + 0x1000, frame as u32, 0, 0)));
        }
        for (i, chain) in descs.chunks(2).enumerate() {
            tx.add_desc_chains(chain, (i * 2) as u16).unwrap();
        }
        activate(net, shared, vec![rx.create_queue().unwrap(), tx.create_queue().unwrap()]);
        let t = Clock::start();
        let done = net.process_tx();
        let (wall, cpu) = t.stop();
        (run.device, run.device_cpu) = (run.device + wall, run.device_cpu + cpu);
        assert_eq!(done, BATCH);
        assert_eq!(net.counters().tx_dropped.load(Ordering::Relaxed), 0, "no frame may be dropped");
    }
    drop((net, appender));
    let left = batches - (batches - 1) / per_file * per_file;
    check_net_file(&path, left * BATCH, frame);
    run
}

/// Whether every byte of `buf` is `want`. Not short-circuiting, so it vectorizes: the
/// check between two timed batches is quick, and the other jobs on the machine get
/// less time to evict the device's working set from the shared cache meanwhile.
fn holds_only(buf: &[u8], want: u8) -> bool {
    buf.iter().fold(0u8, |acc, &b| acc | (b ^ want)) == 0
}

/// One run of virtio-net transmits of `req`-byte chains to the ring backend over a ring
/// file in /dev/shm, a peer draining the ring (and checking every frame) between
/// batches; the device's `process_tx` is timed. With `alone`, the peer's side is timed
/// instead: copying each batch's frames out of the ring into host buffers.
fn bench_net_ring(mem: &GuestMemoryMmap, shared: &SharedMemory, req: usize, alone: bool) -> Run {
    let path = std::path::PathBuf::from(format!("/dev/shm/cvmm-bench-{}.ring", std::process::id()));
    let frame = req - 12;
    let batches = TOTAL / (BATCH * req);
    let mut run = Run { bytes: batches * BATCH * req, ..Run::default() };
    for i in 0..BATCH {
        let buf = DATA + (i * 0x1_1000) as u64;
        mem.write_slice(&vec![frame_byte(i); frame], GuestAddress(buf + 0x1000)).unwrap();
    }
    (run.copy, run.copy_cpu) = memcpy_run(req, run.bytes);
    // A ring of exactly one batch: every batch lands on the same bytes, the working set
    // of the memcpy baseline.
    let size = (BATCH * record_len(frame)).next_multiple_of(4096).max(MIN_RING_SIZE);
    let backend = Box::new(RingBackend::create(&path, size).unwrap());
    let mut net = Net::new([2, 0, 0, 0, 0, 1], backend, [evt(), evt()]);
    let mut peer = RingPeer::open(&path).unwrap();
    // The peer copies each frame into a buffer of its own when timed (the baseline's
    // working set), else into one reused buffer (evicting less of the device's).
    let mut got: Vec<Vec<u8>> = (0..if alone { BATCH } else { 1 }).map(|_| vec![0u8; frame]).collect();
    for _ in 0..batches {
        let rx = MockSplitQueue::create(mem, GuestAddress(0), QUEUE);
        let tx = MockSplitQueue::create(mem, GuestAddress(0x8_0000), QUEUE);
        let mut descs = Vec::new();
        for i in 0..BATCH {
            let buf = DATA + (i * 0x1_1000) as u64;
            descs.push(RawDescriptor::from(Descriptor::new(buf, 12, F_NEXT, (i * 2 + 1) as u16)));
            descs.push(RawDescriptor::from(Descriptor::new(buf + 0x1000, frame as u32, 0, 0)));
        }
        for (i, chain) in descs.chunks(2).enumerate() {
            tx.add_desc_chains(chain, (i * 2) as u16).unwrap();
        }
        activate(&mut net, shared, vec![rx.create_queue().unwrap(), tx.create_queue().unwrap()]);
        let t = Clock::start();
        let done = net.process_tx();
        let (wall, cpu) = t.stop();
        assert_eq!(done, BATCH);
        if !alone {
            (run.device, run.device_cpu) = (run.device + wall, run.device_cpu + cpu);
        }
        if alone {
            let t = Clock::start();
            for buf in got.iter_mut() {
                assert_eq!(peer.recv_frame(buf).unwrap(), Some(frame), "every frame must arrive whole");
            }
            let (wall, cpu) = t.stop();
            (run.device, run.device_cpu) = (run.device + wall, run.device_cpu + cpu);
            for (i, buf) in got.iter().enumerate() {
                assert!(holds_only(buf, frame_byte(i)), "frame {i} must hold its bytes");
            }
        } else {
            for i in 0..BATCH {
                assert_eq!(peer.recv_frame(&mut got[0]).unwrap(), Some(frame), "every frame must arrive whole");
                assert!(holds_only(&got[0], frame_byte(i)), "frame {i} must hold its bytes");
            }
        }
        assert_eq!(peer.recv_frame(&mut got[0]).unwrap(), None, "nothing more");
    }
    assert_eq!(net.counters().tx_dropped.load(Ordering::Relaxed), 0, "no frame may be dropped");
    drop((net, peer));
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_file(devices::virtio::net_ring::doorbell_path(&path));
    run
}

fn main() {
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x800_0000)]).unwrap();
    let shared = SharedMemory::all_shared(&mem);
    let filter = std::env::args().nth(1).unwrap_or_default();
    let runs = std::env::args().nth(2).and_then(|r| r.parse().ok()).unwrap_or(RUNS).max(1);
    println!(
        "virtio device throughput, {} MiB per case, {BATCH} requests per queue batch, \
         each after a memcpy of the same bytes; median of {runs} pairs",
        TOTAL >> 20
    );
    println!(
        "{:<26}{:>10}{:>10}{:>8}{:>16}{:>11}{:>14}",
        "case", "MB/s", "memcpy", "ratio", "ratio min-max", "cpu ratio", "working set"
    );
    for req in [4096usize, 65536] {
        let set = format!("2 x {} KiB", (BATCH * req) >> 10);
        let cases: [(&str, &dyn Fn() -> Run); 8] = [
            ("virtio-blk read ", &|| bench_blk(&mem, &shared, req, false)),
            ("virtio-blk write", &|| bench_blk(&mem, &shared, req, true)),
            ("virtio-net tx   ", &|| bench_net_tx(&mem, &shared, req, false)),
            ("(socket alone)  ", &|| bench_net_tx(&mem, &shared, req, true)),
            ("virtio-net tx file", &|| bench_net_file(&mem, &shared, req, false)),
            ("(file alone)    ", &|| bench_net_file(&mem, &shared, req, true)),
            ("virtio-net tx ring", &|| bench_net_ring(&mem, &shared, req, false)),
            ("(ring peer rx)  ", &|| bench_net_ring(&mem, &shared, req, true)),
        ];
        for (kind, case) in cases {
            let name = format!("{kind} {} KiB", req >> 10);
            if !name.contains(filter.as_str()) {
                continue;
            }
            let mut all: Vec<Run> = (0..runs).map(|_| case()).collect();
            all.sort_by(|a, b| a.ratio().total_cmp(&b.ratio()));
            let (lo, mid, hi) = (all[0], all[runs / 2], all[runs - 1]);
            let spread = format!("{:.0}-{:.0}%", 100.0 * lo.ratio(), 100.0 * hi.ratio());
            let mut cpu: Vec<f64> = all.iter().map(Run::cpu_ratio).collect();
            cpu.sort_by(f64::total_cmp);
            println!(
                "{name:<26}{:>10.0}{:>10.0}{:>7.0}%{spread:>16}{:>10.0}%{set:>14}",
                mid.device_mbps(),
                mid.copy_mbps(),
                100.0 * mid.ratio(),
                100.0 * cpu[runs / 2],
            );
        }
    }
}
