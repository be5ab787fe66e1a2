//! Fuzzes virtio-rng request handling over hostile guest memory. The device is made
//! once per thread and reset before every run.
#![no_main]

use std::cell::RefCell;

use devices::virtio::rng::Rng;
use devices::virtio::VirtioDevice;
use libfuzzer_sys::fuzz_target;

thread_local! {
    static RNG: RefCell<Rng> = RefCell::new(Rng::new(cvmm_fuzz::evt()));
}

fuzz_target!(|data: &[u8]| {
    let (_mem, shared) = cvmm_fuzz::memory(data);
    RNG.with(|r| {
        let mut rng = r.borrow_mut();
        rng.reset();
        cvmm_fuzz::activate(&mut *rng, &shared, cvmm_fuzz::queues(data, 1));
        rng.process_queue();
    });
});
