//! Boots guests through the real KVM API and checks what they print and how they end.

mod common;

use std::time::Duration;

use common::{cvmm, exit_with, temp_file, tiny_elf, SharedBuf};
use vmm::{build_vm, KernelSource, VmConfig, VmExit};

fn run_demo(vcpus: u32, memory: u64) -> (VmExit, String) {
    let console = SharedBuf::default();
    let config = VmConfig { vcpus, memory, timeout: Some(Duration::from_secs(30)), ..Default::default() };
    let mut vm = build_vm(&config, Box::new(console.clone())).expect("build");
    let exit = vm.run().expect("run");
    (exit, console.text())
}

#[test]
fn demo_guest_greets_with_its_vcpu_count_and_memory_size() {
    let (exit, out) = run_demo(1, 256 << 20);
    assert_eq!(exit, VmExit::GuestExit(0));
    assert_eq!(out, "Hello from the cvmm demo guest: 1 vCPU, 256 MiB of memory\n");
}

#[test]
fn demo_guest_reads_values_from_boot_info_not_constants() {
    for (vcpus, memory, text) in [
        (2, 64u64 << 20, "2 vCPUs, 64 MiB"),
        (4, 3 << 30, "4 vCPUs, 3072 MiB"),
        (8, 5 << 30, "8 vCPUs, 5120 MiB"),
        (3, (100 << 20) + 4096, "3 vCPUs, 104861696 bytes"),
    ] {
        let (exit, out) = run_demo(vcpus, memory);
        assert_eq!(exit, VmExit::GuestExit(0), "{vcpus} vCPUs / {memory}");
        assert!(out.contains(text), "expected {text:?} in {out:?}");
    }
}

#[test]
fn cvmm_run_prints_the_greeting_and_exits_zero() {
    let out = cvmm().args(["run", "--vcpus", "2", "--memory", "512M"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "Hello from the cvmm demo guest: 2 vCPUs, 512 MiB of memory\n");
}

#[test]
fn guest_exit_status_becomes_cvmm_exit_status() {
    let kernel = temp_file("exit42.elf", &tiny_elf(&exit_with(42)));
    let out = cvmm().args(["run", "--kernel"]).arg(&kernel).output().unwrap();
    assert_eq!(out.status.code(), Some(42));
}

#[test]
fn reset_request_ends_the_vm_with_status_zero() {
    // mov al, 0xfe; out 0x64, al; hlt
    let kernel = temp_file("reset.elf", &tiny_elf(&[0xb0, 0xfe, 0xe6, 0x64, 0xf4]));
    let config =
        VmConfig { kernel: KernelSource::File(kernel), timeout: Some(Duration::from_secs(30)), ..Default::default() };
    let mut vm = build_vm(&config, Box::new(SharedBuf::default())).unwrap();
    assert_eq!(vm.run().unwrap(), VmExit::Reset);
}

#[test]
fn triple_fault_ends_the_vm_and_is_reported() {
    // ud2 with no IDT: #UD -> #DF -> triple fault -> KVM_EXIT_SHUTDOWN.
    let kernel = temp_file("ud2.elf", &tiny_elf(&[0x0f, 0x0b]));
    let out = cvmm().args(["run", "--timeout", "30", "--kernel"]).arg(&kernel).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("triple-faulted"), "{err}");
}

#[test]
fn watchdog_ends_a_guest_that_never_stops_on_every_vcpu() {
    // jmp $ on the boot vCPU; the application processors wait for SIPI inside KVM_RUN.
    let kernel = temp_file("spin.elf", &tiny_elf(&[0xeb, 0xfe]));
    let config = VmConfig {
        kernel: KernelSource::File(kernel),
        vcpus: 3,
        timeout: Some(Duration::from_millis(500)),
        ..Default::default()
    };
    let mut vm = build_vm(&config, Box::new(SharedBuf::default())).unwrap();
    assert_eq!(vm.run().unwrap(), VmExit::Timeout(Duration::from_millis(500)));
    assert!(matches!(vm.run(), Err(vmm::RunError::AlreadyRan)));
}

#[test]
fn serial_output_of_a_hand_made_guest_reaches_stdout() {
    // mov dx, 0x3f8; mov al, 'K'; out dx, al; mov al, '\n'; out dx, al; then exit 7
    let mut code = vec![0x66, 0xba, 0xf8, 0x03, 0xb0, b'K', 0xee, 0xb0, b'\n', 0xee];
    code.extend(exit_with(7));
    let kernel = temp_file("serial.elf", &tiny_elf(&code));
    let out = cvmm().args(["run", "--kernel"]).arg(&kernel).output().unwrap();
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(out.stdout, b"K\n");
}

#[test]
fn serial_interrupt_reaches_the_guest_through_ioapic_msi_route_and_irqfd() {
    // The guest programs IOAPIC pin 4 to vector 0x30 and enables the UART's THRE
    // interrupt; only a delivered interrupt ends the VM with status 0x30.
    let kernel = temp_file("irq.elf", firmware::test_guests::irq());
    let console = SharedBuf::default();
    let config =
        VmConfig { kernel: KernelSource::File(kernel), timeout: Some(Duration::from_secs(20)), ..Default::default() };
    let mut vm = build_vm(&config, Box::new(console.clone())).unwrap();
    assert_eq!(vm.run().unwrap(), VmExit::GuestExit(0x30), "console: {:?}", console.text());
    assert_eq!(console.text(), "irq\n");
}
