//! Shared harness for the guest-facing fuzz targets: a small guest memory filled with
//! the fuzzer's bytes (descriptor tables, rings, headers and buffers are all hostile),
//! queues at fixed addresses inside it, and a device activated on them. The
//! confidential-guest exit targets' harness is [`cvm`].

pub mod cvm;

use std::sync::{Arc, OnceLock};

use devices::virtio::{ActivateContext, SharedMemory, VirtioDevice, VirtioInterrupt};
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// Guest memory size: queues and buffers live here; anything beyond is outside memory.
pub const MEM_SIZE: usize = 0x1_0000;
/// Queue size used by the harness.
pub const QUEUE_SIZE: u16 = 16;

/// A fresh eventfd.
pub fn evt() -> EventFd {
    EventFd::new(EFD_NONBLOCK).expect("eventfd")
}

/// Guest memory holding `data` from address 0 (the rest zero), and its shared view.
/// The second half of memory is private when `data`'s first byte is odd, so devices
/// also meet private pages. The mapping is made once per thread and refilled on every
/// run (mapping 64 KiB per run would dominate the fuzzer's time), straight from `data`
/// and a static zero block (no per-run buffer).
pub fn memory(data: &[u8]) -> (GuestMemoryMmap, Arc<SharedMemory>) {
    static ZEROS: [u8; MEM_SIZE] = [0; MEM_SIZE];
    thread_local! {
        static MEM: (GuestMemoryMmap, Arc<SharedMemory>) = {
            let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).expect("guest memory");
            let shared = Arc::new(SharedMemory::all_shared(&mem));
            (mem, shared)
        };
        static PRIVATE_HALF: std::cell::Cell<Option<bool>> = const { std::cell::Cell::new(None) };
    }
    MEM.with(|(mem, shared)| {
        let n = data.len().min(MEM_SIZE);
        mem.write_slice(&data[..n], GuestAddress(0)).expect("fill");
        mem.write_slice(&ZEROS[n..], GuestAddress(n as u64)).expect("clear");
        // Only the harness changes page states: republish the view only when the half's
        // state changes (the view is rebuilt on every change).
        let private_half = data.first().is_some_and(|b| b & 1 == 1);
        if PRIVATE_HALF.replace(Some(private_half)) != Some(private_half) {
            shared.set_shared(MEM_SIZE as u64 / 2, MEM_SIZE as u64 / 2, !private_half).expect("second half");
        }
        (mem.clone(), shared.clone())
    })
}

/// `count` queues; queue i has its descriptor table, available and used rings at
/// addresses taken from the fuzzer's bytes (so they may be anything).
pub fn queues(data: &[u8], count: usize) -> Vec<Queue> {
    (0..count)
        .map(|i| {
            let word = |k: usize| {
                let o = 8 + 12 * i + 4 * k;
                data.get(o..o + 4)
                    .map_or(0x1000 * (k as u32 + 1), |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) % MEM_SIZE as u32)
            };
            let mut q = Queue::new(QUEUE_SIZE).expect("queue");
            q.set_size(QUEUE_SIZE);
            q.set_desc_table_address(Some(word(0) & !0xf), Some(0));
            q.set_avail_ring_address(Some(word(1) & !0x1), Some(0));
            q.set_used_ring_address(Some(word(2) & !0x3), Some(0));
            q.set_event_idx(data.get(1).is_some_and(|b| b & 1 == 1));
            q.set_ready(true);
            q
        })
        .collect()
}

/// Activates `dev` with `queues` over `shared` (one interrupt eventfd per thread).
pub fn activate(dev: &mut dyn VirtioDevice, shared: &SharedMemory, queues: Vec<Queue>) {
    thread_local! {
        static IRQ: VirtioInterrupt = VirtioInterrupt::new(evt());
    }
    let interrupt = IRQ.with(|i| i.clone());
    interrupt.ack(u32::MAX);
    let ctx = ActivateContext { mem: shared.view(), queues, interrupt, acked_features: (1 << 32) | (1 << 33) };
    let _ = dev.activate(ctx);
}

/// A 1 MiB disk image in /dev/shm (or the temp dir), shared by all runs.
pub fn disk() -> std::fs::File {
    static PATH: OnceLock<std::path::PathBuf> = OnceLock::new();
    let path = PATH.get_or_init(|| {
        let dir = if std::path::Path::new("/dev/shm").is_dir() { "/dev/shm".into() } else { std::env::temp_dir() };
        let p = dir.join(format!("cvmm-fuzz-{}.img", std::process::id()));
        let f = std::fs::File::create(&p).expect("disk image");
        f.set_len(1 << 20).expect("disk size");
        p
    });
    std::fs::OpenOptions::new().read(true).write(true).open(path).expect("open disk image")
}
