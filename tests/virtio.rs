//! Virtio devices driven by a guest through the real KVM path: MMIO exits for the
//! registers, KVM's ioeventfd for QueueNotify, the device event loop, and the used ring.

mod common;

use std::time::Duration;

use common::{temp_file, SharedBuf};
use vmm::{build_vm, KernelSource, VmConfig, VmExit};

fn run_rng_guest(rng: bool) -> (VmExit, String) {
    let kernel = temp_file("virtio-rng.elf", firmware::test_guests::virtio_rng());
    let console = SharedBuf::default();
    let config = VmConfig {
        kernel: KernelSource::File(kernel),
        rng,
        timeout: Some(Duration::from_secs(60)),
        ..Default::default()
    };
    let mut vm = build_vm(&config, Box::new(console.clone())).unwrap();
    (vm.run().unwrap(), console.text())
}

#[test]
fn guest_reads_entropy_from_virtio_rng() {
    let (exit, out) = run_rng_guest(true);
    assert_eq!(exit, VmExit::GuestExit(0), "console: {out}");
    let hex = out.trim_end().strip_prefix("virtio-rng: 32 bytes ").unwrap_or_else(|| panic!("{out:?}"));
    assert_eq!(hex.len(), 64);
    assert!(hex.chars().all(|c| c.is_ascii_hexdigit()));
    assert_ne!(hex, "0".repeat(64), "32 random bytes are not all zero");
}

#[test]
fn without_the_device_the_guest_finds_nothing_there() {
    let (exit, out) = run_rng_guest(false);
    assert_eq!(exit, VmExit::GuestExit(10), "console: {out}");
}
