//! Fuzzes virtio-vsock packet handling (headers read once, validated, RST on anything
//! invalid) over hostile guest memory.
#![no_main]

use devices::virtio::vsock::Vsock;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (_mem, shared) = cvmm_fuzz::memory(data);
    let uds = std::env::temp_dir().join("cvmm-fuzz-vsock-nonexistent/v");
    let Ok(mut vsock) = Vsock::new(3, uds, [cvmm_fuzz::evt(), cvmm_fuzz::evt(), cvmm_fuzz::evt()]) else { return };
    cvmm_fuzz::activate(&mut vsock, &shared, cvmm_fuzz::queues(data, 3));
    vsock.process_tx();
    vsock.process_rx();
});
