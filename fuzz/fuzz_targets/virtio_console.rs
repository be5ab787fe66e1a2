//! Fuzzes virtio-console transmit and receive handling over hostile guest memory. The
//! device is made once per thread and reset before every run.
#![no_main]

use std::cell::RefCell;

use devices::virtio::console::Console;
use devices::virtio::VirtioDevice;
use libfuzzer_sys::fuzz_target;

thread_local! {
    static CONSOLE: RefCell<Console> =
        RefCell::new(Console::new([cvmm_fuzz::evt(), cvmm_fuzz::evt()], Box::new(std::io::sink())));
}

fuzz_target!(|data: &[u8]| {
    let (_mem, shared) = cvmm_fuzz::memory(data);
    CONSOLE.with(|c| {
        let mut console = c.borrow_mut();
        console.reset();
        cvmm_fuzz::activate(&mut *console, &shared, cvmm_fuzz::queues(data, 2));
        console.process_tx();
        console.queue_input(&data[..data.len().min(256)]);
        console.process_rx();
    });
});
