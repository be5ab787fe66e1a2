//! Fuzzes virtio-vsock packet handling (headers read once, validated, RST on anything
//! invalid) over hostile guest memory. The device is made once per thread and reset
//! (closing every connection) before every run.
#![no_main]

use std::cell::RefCell;

use devices::virtio::vsock::Vsock;
use devices::virtio::VirtioDevice;
use libfuzzer_sys::fuzz_target;

thread_local! {
    static VSOCK: RefCell<Vsock> = {
        let uds = std::env::temp_dir().join("cvmm-fuzz-vsock-nonexistent/v");
        RefCell::new(Vsock::new(3, uds, [cvmm_fuzz::evt(), cvmm_fuzz::evt(), cvmm_fuzz::evt()]).expect("vsock"))
    };
}

fuzz_target!(|data: &[u8]| {
    let (_mem, shared) = cvmm_fuzz::memory(data);
    VSOCK.with(|v| {
        let mut vsock = v.borrow_mut();
        vsock.reset();
        cvmm_fuzz::activate(&mut *vsock, &shared, cvmm_fuzz::queues(data, 3));
        vsock.process_tx();
        vsock.process_rx();
    });
});
