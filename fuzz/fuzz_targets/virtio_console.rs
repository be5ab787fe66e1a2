//! Fuzzes virtio-console transmit and receive handling over hostile guest memory.
#![no_main]

use devices::virtio::console::Console;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (_mem, shared) = cvmm_fuzz::memory(data);
    let mut console = Console::new([cvmm_fuzz::evt(), cvmm_fuzz::evt()], Box::new(std::io::sink()));
    cvmm_fuzz::activate(&mut console, &shared, cvmm_fuzz::queues(data, 2));
    console.process_tx();
    console.queue_input(&data[..data.len().min(256)]);
    console.process_rx();
});
