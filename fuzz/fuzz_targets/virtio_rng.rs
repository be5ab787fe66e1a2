//! Fuzzes virtio-rng request handling over hostile guest memory.
#![no_main]

use devices::virtio::rng::Rng;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (_mem, shared) = cvmm_fuzz::memory(data);
    let mut rng = Rng::new(cvmm_fuzz::evt());
    cvmm_fuzz::activate(&mut rng, &shared, cvmm_fuzz::queues(data, 1));
    rng.process_queue();
});
