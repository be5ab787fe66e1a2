//! Fuzzes the virtio-mmio transport with arbitrary register access sequences (any
//! offset, any width, reads and writes), then lets the device process whatever queues
//! the sequence configured.
#![no_main]

use std::sync::{Arc, Mutex};

use devices::bus::BusDevice;
use devices::virtio::mmio::MmioTransport;
use devices::virtio::rng::Rng;
use devices::virtio::VirtioInterrupt;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (_mem, shared) = cvmm_fuzz::memory(data);
    let ev = cvmm_fuzz::evt();
    let Ok(clone) = ev.try_clone() else { return };
    let rng = Arc::new(Mutex::new(Rng::new(clone)));
    let irq = VirtioInterrupt::new(cvmm_fuzz::evt());
    let Ok(mut t) = MmioTransport::new(rng.clone(), shared.view(), irq, vec![ev], data.first() == Some(&0xcc)) else {
        return;
    };
    // Each access: [kind, offset lo, offset hi, width, value (4 bytes)].
    for op in data.chunks_exact(8) {
        let offset = u64::from(u16::from_le_bytes([op[1], op[2]]) % 0x200);
        let width = [1usize, 2, 4, 8][usize::from(op[3] & 3)];
        if op[0] & 1 == 0 {
            let mut buf = [0u8; 8];
            t.read(offset, &mut buf[..width]);
        } else {
            let mut buf = [0u8; 8];
            buf[..4].copy_from_slice(&op[4..8]);
            t.write(offset, &buf[..width]);
        }
    }
    drop(t);
    let mut r = rng.lock().unwrap_or_else(|e| e.into_inner());
    r.process_queue();
});
