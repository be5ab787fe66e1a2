//! Host-side device benchmark: drives virtio-blk (over a memory-backed file in
//! /dev/shm) and virtio-net (tx over a Unix datagram pair) queues directly with a mock
//! driver, for 4 KiB and 64 KiB requests, and prints MB/s next to a plain memcpy of the
//! same bytes measured in the same run. Used by scripts/bench-devices.sh.
//!
//! The memcpy baseline moves the same bytes over the same working set as one device
//! batch (a source and a destination buffer of `BATCH * request` bytes each), request
//! by request. Every figure is the best of [`RUNS`] runs, to keep noise out of ratios.
//!
//! usage: cargo run --release -p devices --example virtio_bench [case filter]
//! (with a filter, only cases whose name contains it run, e.g. "blk read  64").

use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::time::Instant;

use devices::virtio::block::{Block, BlockOptions};
use devices::virtio::net::{Net, UnixDatagramBackend};
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
/// Runs per case; the best one is reported.
const RUNS: usize = 3;

/// The best (highest) MB/s of [`RUNS`] runs of `case`.
fn best_of(mut case: impl FnMut() -> f64) -> f64 {
    (0..RUNS).map(|_| case()).fold(0.0, f64::max)
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

/// MB/s of virtio-blk reads (`write == false`) or writes of `req` bytes.
fn bench_blk(mem: &GuestMemoryMmap, shared: &SharedMemory, req: usize, write: bool) -> f64 {
    let path = format!("/dev/shm/cvmm-bench-{}.img", std::process::id());
    let file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&path).unwrap();
    file.set_len((BATCH * req) as u64).unwrap();
    let mut blk = Block::new(file, BlockOptions { read_only: false, id: "bench".into() }, evt()).unwrap();
    std::fs::remove_file(&path).ok();
    let batches = TOTAL / (BATCH * req);
    let mut secs = 0.0;
    for _ in 0..batches {
        let mock = MockSplitQueue::new(mem, QUEUE);
        let mut descs = Vec::new();
        for i in 0..BATCH {
            let hdr = DATA + (i as u64) * 0x1000;
            // The request header: type (0 = IN, 1 = OUT), reserved, sector.
            mem.write_obj(u32::from(write), GuestAddress(hdr)).unwrap();
            mem.write_obj((i * req / 512) as u64, GuestAddress(hdr + 8)).unwrap();
            let data = DATA + 0x100_0000 + (i * req) as u64;
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
        let t = Instant::now();
        let done = blk.process_queue();
        secs += t.elapsed().as_secs_f64();
        assert_eq!(done, BATCH);
        assert_eq!(blk.completed() - completed, BATCH as u64, "every request must succeed");
    }
    (batches * BATCH * req) as f64 / secs / 1e6
}

/// MB/s of virtio-net transmits of `req`-byte frames to a Unix datagram peer.
fn bench_net_tx(mem: &GuestMemoryMmap, shared: &SharedMemory, req: usize) -> f64 {
    let (ours, peer) = std::os::unix::net::UnixDatagram::pair().unwrap();
    let drain = std::thread::spawn(move || {
        let mut buf = vec![0u8; 70_000];
        let mut total = 0usize;
        while let Ok(n) = peer.recv(&mut buf) {
            if n == 1 {
                break;
            }
            total += n;
        }
        total
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
    let mut secs = 0.0;
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
        let t = Instant::now();
        let done = net.process_tx();
        secs += t.elapsed().as_secs_f64();
        assert_eq!(done, BATCH);
    }
    ours.send(&[0]).unwrap();
    let received = drain.join().unwrap();
    assert_eq!(net.counters().tx_dropped.load(Ordering::Relaxed), 0, "no frame may be dropped");
    assert_eq!(received, batches * BATCH * frame, "every frame must arrive whole");
    (batches * BATCH * req) as f64 / secs / 1e6
}

fn bench_memcpy(req: usize) -> f64 {
    let src = vec![0x5au8; BATCH * req];
    let mut dst = vec![0u8; BATCH * req];
    let batches = TOTAL / (BATCH * req);
    let t = Instant::now();
    for _ in 0..batches {
        for (d, s) in dst.chunks_mut(req).zip(src.chunks(req)) {
            d.copy_from_slice(s);
        }
        std::hint::black_box(&mut dst);
    }
    (batches * BATCH * req) as f64 / t.elapsed().as_secs_f64() / 1e6
}

fn main() {
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x800_0000)]).unwrap();
    let shared = SharedMemory::all_shared(&mem);
    println!(
        "virtio device throughput, {} MiB per case, {BATCH} requests per queue batch, best of {RUNS} runs",
        TOTAL >> 20
    );
    println!("{:<36}{:>12}{:>12}{:>10}{:>14}", "case", "MB/s", "memcpy", "ratio", "working set");
    let filter = std::env::args().nth(1).unwrap_or_default();
    for req in [4096usize, 65536] {
        let copy = best_of(|| bench_memcpy(req));
        let set = format!("2 x {} KiB", (BATCH * req) >> 10);
        let cases: [(&str, &dyn Fn() -> f64); 3] = [
            ("virtio-blk read ", &|| bench_blk(&mem, &shared, req, false)),
            ("virtio-blk write", &|| bench_blk(&mem, &shared, req, true)),
            ("virtio-net tx   ", &|| bench_net_tx(&mem, &shared, req)),
        ];
        for (kind, case) in cases {
            let name = format!("{kind} {} KiB", req >> 10);
            if !name.contains(filter.as_str()) {
                continue;
            }
            let mbps = best_of(case);
            println!("{name:<36}{mbps:>12.0}{copy:>12.0}{:>9.0}%{set:>14}", 100.0 * mbps / copy);
        }
    }
}
