//! Fuzzes virtio-net transmit and receive handling over hostile guest memory. The
//! device and its socket pair are made once per thread; the device is reset and the
//! peer drained before every run.
#![no_main]

use std::cell::RefCell;
use std::os::unix::net::UnixDatagram;

use devices::virtio::net::{Net, UnixDatagramBackend};
use devices::virtio::VirtioDevice;
use libfuzzer_sys::fuzz_target;

thread_local! {
    static NET: (RefCell<Net>, UnixDatagram) = {
        let (ours, peer) = UnixDatagram::pair().expect("socket pair");
        peer.set_nonblocking(true).expect("non-blocking peer");
        let backend = UnixDatagramBackend::new(ours).expect("backend");
        (RefCell::new(Net::new([2, 0, 0, 0, 0, 1], Box::new(backend), [cvmm_fuzz::evt(), cvmm_fuzz::evt()])), peer)
    };
}

fuzz_target!(|data: &[u8]| {
    let (_mem, shared) = cvmm_fuzz::memory(data);
    NET.with(|(net, peer)| {
        let mut buf = [0u8; 2048];
        while peer.recv(&mut buf).is_ok() {}
        let mut net = net.borrow_mut();
        net.reset();
        cvmm_fuzz::activate(&mut *net, &shared, cvmm_fuzz::queues(data, 2));
        net.process_tx();
        let _ = peer.send(&data[..data.len().min(1500)]);
        net.process_rx();
    });
});
