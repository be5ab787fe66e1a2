//! Fuzzes virtio-blk request handling: hostile descriptor tables, rings, request
//! headers and buffers in guest memory.
#![no_main]

use devices::virtio::block::{Block, BlockOptions};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (_mem, shared) = cvmm_fuzz::memory(data);
    let ro = data.get(2).is_some_and(|b| b & 1 == 1);
    let Ok(mut blk) = Block::new(cvmm_fuzz::disk(), BlockOptions { read_only: ro, id: "fuzz".into() }, cvmm_fuzz::evt())
    else {
        return;
    };
    cvmm_fuzz::activate(&mut blk, &shared, cvmm_fuzz::queues(data, 1));
    blk.process_queue();
});
