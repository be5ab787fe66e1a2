//! Fuzzes virtio-net transmit and receive handling over hostile guest memory.
#![no_main]

use devices::virtio::net::{Net, UnixDatagramBackend};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (_mem, shared) = cvmm_fuzz::memory(data);
    let Ok((ours, peer)) = std::os::unix::net::UnixDatagram::pair() else { return };
    let Ok(backend) = UnixDatagramBackend::new(ours) else { return };
    let mut net = Net::new([2, 0, 0, 0, 0, 1], Box::new(backend), [cvmm_fuzz::evt(), cvmm_fuzz::evt()]);
    cvmm_fuzz::activate(&mut net, &shared, cvmm_fuzz::queues(data, 2));
    net.process_tx();
    let _ = peer.send(&data[..data.len().min(1500)]);
    net.process_rx();
});
