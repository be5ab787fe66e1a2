//! Fuzzes virtio-blk request handling: hostile descriptor tables, rings, request
//! headers and buffers in guest memory. The device is made once per thread and reset
//! before every run (opening the image per run would dominate the fuzzer's time).
#![no_main]

use std::cell::RefCell;

use devices::virtio::block::{Block, BlockOptions};
use devices::virtio::VirtioDevice;
use libfuzzer_sys::fuzz_target;

thread_local! {
    static DEVICES: [RefCell<Block>; 2] = [false, true].map(|read_only| {
        let opts = BlockOptions { read_only, id: "fuzz".into() };
        RefCell::new(Block::new(cvmm_fuzz::disk(), opts, cvmm_fuzz::evt()).expect("disk device"))
    });
}

fuzz_target!(|data: &[u8]| {
    let (_mem, shared) = cvmm_fuzz::memory(data);
    let ro = usize::from(data.get(2).is_some_and(|b| b & 1 == 1));
    DEVICES.with(|d| {
        let mut blk = d[ro].borrow_mut();
        blk.reset();
        cvmm_fuzz::activate(&mut *blk, &shared, cvmm_fuzz::queues(data, 1));
        blk.process_queue();
    });
});
