//! The library's VM handle (`vmm::VmHandle`): start, pause, resume, shut down and wait
//! for the demo guest (in its `wait` mode, where it halts until Ctrl-Alt-Del), a
//! forced shutdown of a guest that ignores the request, the transitions a state does
//! not allow, two VMs at once in this process, and the library example.

mod common;

#[path = "../vmm/examples/lifecycle.rs"]
#[allow(dead_code)]
mod lifecycle_example;
#[path = "../vmm/examples/snp_emulated.rs"]
#[allow(dead_code)]
mod snp_example;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{temp_file, tiny_elf, SharedBuf};
use vmm::{ControlError, KernelSource, VmConfig, VmExit, VmHandle, VmState};

const WAITING: &str = "demo: waiting for Ctrl-Alt-Del";
const GOODBYE: &str = "demo: Ctrl-Alt-Del, shutting down";

/// The demo guest in `wait` mode, with a 60 s watchdog so a broken test cannot hang.
fn waiting_demo(memory: u64) -> VmConfig {
    VmConfig { cmdline: Some("wait".into()), memory, timeout: Some(Duration::from_secs(60)), ..Default::default() }
}

/// Polls `console` until it holds `text` (fails the test after 30 s).
fn wait_for_output(console: &SharedBuf, text: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !console.text().contains(text) {
        assert!(Instant::now() < deadline, "the guest never printed {text:?}; console:\n{}", console.text());
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn is_wrong_state(r: Result<(), ControlError>, want: VmState) -> bool {
    matches!(r, Err(ControlError::WrongState { state, .. }) if state == want)
}

#[test]
fn demo_vm_is_started_paused_resumed_and_shut_down_gracefully() {
    let console = SharedBuf::default();
    let vm = VmHandle::create(&waiting_demo(256 << 20), Box::new(console.clone())).unwrap();
    assert_eq!(vm.state(), VmState::Created);
    assert_eq!(vm.tee(), "plain");
    assert_eq!(vm.expected_measurement(), None);
    assert!(vm.launch_log().is_empty());
    assert_eq!(vm.launch_steps().len(), 5);

    vm.start().unwrap();
    assert_eq!(vm.state(), VmState::Running);
    wait_for_output(&console, WAITING);
    vm.pause().unwrap();
    assert_eq!(vm.state(), VmState::Paused);
    vm.resume().unwrap();
    assert_eq!(vm.state(), VmState::Running);
    let asked = Instant::now();
    vm.shutdown(Duration::from_secs(30)).unwrap();
    assert_eq!(vm.wait().unwrap(), VmExit::GuestExit(0), "console:\n{}", console.text());
    assert!(asked.elapsed() < Duration::from_secs(20), "the guest honoured the request; no forced end");
    assert_eq!(vm.state(), VmState::Exited);
    assert!(console.text().ends_with(&format!("{WAITING}\n{GOODBYE}\n")), "{}", console.text());
    let info = vm.info();
    let exit = info.exit.unwrap();
    assert_eq!((exit.reason, exit.exit_status), ("guest_exit", 0));
}

#[test]
fn a_paused_guest_does_not_run_until_resumed() {
    let console = SharedBuf::default();
    let vm = VmHandle::create(&waiting_demo(256 << 20), Box::new(console.clone())).unwrap();
    vm.start().unwrap();
    wait_for_output(&console, WAITING);
    vm.pause().unwrap();
    // The key presses and their interrupt are pending, but no vCPU runs to take them.
    vm.send_ctrl_alt_del().unwrap();
    assert!(vm.wait_timeout(Duration::from_millis(500)).is_none(), "console:\n{}", console.text());
    assert_eq!(vm.state(), VmState::Paused);
    assert!(!console.text().contains(GOODBYE));
    vm.resume().unwrap();
    assert_eq!(vm.wait().unwrap(), VmExit::GuestExit(0));
    assert!(console.text().contains(GOODBYE));
}

#[test]
fn every_vcpu_of_a_multi_vcpu_vm_parks_and_runs_again() {
    // vCPU 0 runs the demo; the others wait for INIT/SIPI inside KVM_RUN and must be
    // kicked out of it all the same.
    let console = SharedBuf::default();
    let config = VmConfig { vcpus: 4, ..waiting_demo(256 << 20) };
    let vm = VmHandle::create(&config, Box::new(console.clone())).unwrap();
    vm.start().unwrap();
    wait_for_output(&console, WAITING);
    for _ in 0..3 {
        vm.pause().unwrap();
        assert_eq!(vm.state(), VmState::Paused);
        vm.resume().unwrap();
    }
    vm.shutdown(Duration::from_secs(30)).unwrap();
    assert_eq!(vm.wait().unwrap(), VmExit::GuestExit(0));
    assert!(console.text().starts_with("Hello from the cvmm demo guest: 4 vCPUs"), "{}", console.text());
}

#[test]
fn shutting_down_a_paused_guest_resumes_it_so_it_can_comply() {
    let console = SharedBuf::default();
    let vm = VmHandle::create(&waiting_demo(256 << 20), Box::new(console.clone())).unwrap();
    vm.start().unwrap();
    wait_for_output(&console, WAITING);
    vm.pause().unwrap();
    vm.shutdown(Duration::from_secs(30)).unwrap();
    assert_eq!(vm.wait().unwrap(), VmExit::GuestExit(0));
    assert!(console.text().contains(GOODBYE));
}

#[test]
fn a_guest_that_ignores_the_request_is_ended_after_the_grace_period() {
    // cli; hlt; jmp back: the keyboard interrupt never gets in.
    let kernel = temp_file("deaf.elf", &tiny_elf(&[0xfa, 0xf4, 0xeb, 0xfc]));
    let config =
        VmConfig { kernel: KernelSource::File(kernel), timeout: Some(Duration::from_secs(60)), ..Default::default() };
    let vm = VmHandle::create(&config, Box::new(std::io::sink())).unwrap();
    vm.start().unwrap();
    let grace = Duration::from_millis(300);
    let asked = Instant::now();
    vm.shutdown(grace).unwrap();
    assert_eq!(vm.state(), VmState::ShuttingDown);
    assert_eq!(vm.wait().unwrap(), VmExit::ShutdownForced { grace });
    assert!(asked.elapsed() >= grace);
    assert_eq!(vm.info().exit.unwrap().reason, "shutdown_forced");
}

#[test]
fn a_repeated_shutdown_with_no_grace_ends_the_vm_at_once() {
    let kernel = temp_file("deaf.elf", &tiny_elf(&[0xfa, 0xf4, 0xeb, 0xfc]));
    let config = VmConfig { kernel: KernelSource::File(kernel), ..Default::default() };
    let vm = VmHandle::create(&config, Box::new(std::io::sink())).unwrap();
    vm.start().unwrap();
    vm.shutdown(Duration::from_secs(600)).unwrap();
    let asked = Instant::now();
    vm.shutdown(Duration::ZERO).unwrap();
    assert_eq!(vm.wait().unwrap(), VmExit::ShutdownForced { grace: Duration::ZERO });
    assert!(asked.elapsed() < Duration::from_secs(30));
}

#[test]
fn a_grace_period_or_watchdog_beyond_any_clock_means_never() {
    let config = VmConfig { timeout: Some(Duration::MAX), ..waiting_demo(256 << 20) };
    let console = SharedBuf::default();
    let vm = VmHandle::create(&config, Box::new(console.clone())).unwrap();
    vm.start().unwrap();
    wait_for_output(&console, WAITING);
    vm.send_ctrl_alt_del().unwrap();
    assert_eq!(vm.wait().unwrap(), VmExit::GuestExit(0));

    let kernel = temp_file("deaf.elf", &tiny_elf(&[0xfa, 0xf4, 0xeb, 0xfc]));
    let config = VmConfig { kernel: KernelSource::File(kernel), ..Default::default() };
    let vm = VmHandle::create(&config, Box::new(std::io::sink())).unwrap();
    vm.start().unwrap();
    vm.shutdown(Duration::MAX).unwrap();
    assert!(vm.wait_timeout(Duration::from_millis(200)).is_none());
    assert_eq!(vm.state(), VmState::ShuttingDown);
    vm.shutdown(Duration::ZERO).unwrap();
    assert_eq!(vm.wait().unwrap(), VmExit::ShutdownForced { grace: Duration::ZERO });
}

#[test]
fn transitions_a_state_does_not_allow_are_refused() {
    let console = SharedBuf::default();
    let vm = VmHandle::create(&waiting_demo(256 << 20), Box::new(console.clone())).unwrap();
    assert!(is_wrong_state(vm.pause(), VmState::Created));
    assert!(is_wrong_state(vm.resume(), VmState::Created));
    assert!(is_wrong_state(vm.shutdown(Duration::ZERO), VmState::Created));
    assert!(matches!(vm.wait(), Err(ControlError::WrongState { state: VmState::Created, .. })));

    vm.start().unwrap();
    assert!(is_wrong_state(vm.start(), VmState::Running));
    assert!(is_wrong_state(vm.resume(), VmState::Running));
    vm.pause().unwrap();
    assert!(is_wrong_state(vm.pause(), VmState::Paused));
    vm.shutdown(Duration::from_secs(30)).unwrap();
    assert_eq!(vm.wait().unwrap(), VmExit::GuestExit(0));
    for r in [vm.start(), vm.pause(), vm.resume(), vm.shutdown(Duration::ZERO)] {
        assert!(is_wrong_state(r, VmState::Exited));
    }
    // Waiting again returns the same end.
    assert_eq!(vm.wait().unwrap(), VmExit::GuestExit(0));
}

#[test]
fn a_vm_shutting_down_can_be_neither_paused_nor_resumed() {
    let kernel = temp_file("deaf.elf", &tiny_elf(&[0xfa, 0xf4, 0xeb, 0xfc]));
    let config = VmConfig { kernel: KernelSource::File(kernel), ..Default::default() };
    let vm = VmHandle::create(&config, Box::new(std::io::sink())).unwrap();
    vm.start().unwrap();
    vm.shutdown(Duration::from_secs(600)).unwrap();
    assert!(is_wrong_state(vm.pause(), VmState::ShuttingDown));
    assert!(is_wrong_state(vm.resume(), VmState::ShuttingDown));
    assert!(is_wrong_state(vm.start(), VmState::ShuttingDown));
    vm.shutdown(Duration::ZERO).unwrap();
    assert!(matches!(vm.wait().unwrap(), VmExit::ShutdownForced { .. }));
}

#[test]
fn two_vms_run_at_once_in_one_process_each_under_its_own_handle() {
    let consoles = [SharedBuf::default(), SharedBuf::default()];
    let vms: Vec<Arc<VmHandle>> = [128u64 << 20, 192 << 20]
        .iter()
        .zip(&consoles)
        .map(|(mem, c)| Arc::new(VmHandle::create(&waiting_demo(*mem), Box::new(c.clone())).unwrap()))
        .collect();
    for vm in &vms {
        vm.start().unwrap();
    }
    for c in &consoles {
        wait_for_output(c, WAITING);
    }
    // Pausing one leaves the other running.
    vms[0].pause().unwrap();
    assert_eq!((vms[0].state(), vms[1].state()), (VmState::Paused, VmState::Running));
    // Shut the running one down from another thread while the first stays paused.
    let second = vms[1].clone();
    let ended = std::thread::spawn(move || {
        second.shutdown(Duration::from_secs(30)).unwrap();
        second.wait()
    })
    .join()
    .unwrap();
    assert_eq!(ended.unwrap(), VmExit::GuestExit(0));
    assert_eq!(vms[0].state(), VmState::Paused);
    vms[0].resume().unwrap();
    vms[0].shutdown(Duration::from_secs(30)).unwrap();
    assert_eq!(vms[0].wait().unwrap(), VmExit::GuestExit(0));
    // Each console got its own guest's output, and only that.
    for (c, mib) in consoles.iter().zip([128, 192]) {
        let text = c.text();
        assert!(text.starts_with(&format!("Hello from the cvmm demo guest: 1 vCPU, {mib} MiB of memory\n")), "{text}");
        assert_eq!(text.matches(GOODBYE).count(), 1, "{text}");
    }
}

#[test]
fn a_vm_that_already_ran_cannot_be_started_again() {
    let mut vm = vmm::build_vm(&VmConfig::default(), Box::new(std::io::sink())).unwrap();
    assert_eq!(vm.run().unwrap(), VmExit::GuestExit(0));
    let handle = vm.into_handle();
    let err = handle.start().unwrap_err();
    assert!(matches!(&err, ControlError::Run(e) if matches!(**e, vmm::RunError::AlreadyRan)), "{err}");
    assert_eq!(handle.state(), VmState::Exited);
    assert!(handle.info().error.unwrap().contains("already run"));
}

#[test]
fn the_emulated_snp_example_runs_and_its_report_carries_the_predicted_measurement() {
    let (exit, reported) = snp_example::snp_emulated(Box::new(std::io::sink())).unwrap();
    assert_eq!(exit, VmExit::GuestExit(0));
    let config = VmConfig {
        tee: vmm::Tee::Snp(vmm::SnpConfig { emulated: true, ..Default::default() }),
        rng: true,
        timeout: Some(Duration::from_secs(60)),
        ..Default::default()
    };
    let (_, digest) = vmm::snp_measurement(&config).unwrap();
    assert_eq!(reported, digest.iter().map(|b| format!("{b:02x}")).collect::<String>());
}

#[test]
fn the_lifecycle_example_runs() {
    let console = SharedBuf::default();
    let exit = lifecycle_example::lifecycle(Box::new(console.clone())).unwrap();
    assert_eq!(exit, VmExit::GuestExit(0));
    assert!(console.text().contains(GOODBYE), "{}", console.text());
}

#[test]
fn the_i8042_sends_the_sequence_the_guest_abi_names() {
    assert_eq!(devices::legacy::CTRL_ALT_DEL, arch::abi::CTRL_ALT_DEL_SCANCODES);
}

#[test]
fn an_emulated_snp_vm_reports_its_tee_expected_measurement_and_launch_log() {
    let config = VmConfig {
        tee: vmm::Tee::Snp(vmm::SnpConfig { emulated: true, ..Default::default() }),
        timeout: Some(Duration::from_secs(60)),
        ..Default::default()
    };
    let (plan, digest) = vmm::snp_measurement(&config).unwrap();
    let console = SharedBuf::default();
    let vm = vmm::build_vm(&config, Box::new(console.clone())).unwrap();
    let platform_measurement = vm.launch_measurement().expect("the emulated PSP measured the launch");
    let vm = vm.into_handle();
    assert_eq!(vm.tee(), "snp-emulated");
    assert_eq!(vm.expected_measurement(), Some(hex::encode(digest).as_str()));
    assert_eq!(vm.expected_measurement(), Some(hex::encode(platform_measurement).as_str()));
    // One entry per range of the plan, then one per vCPU's VMSA.
    assert_eq!(vm.launch_log().len(), plan.ranges.len() + 1);
    assert_eq!(vm.launch_log().last().unwrap().kind, "snp:vmsa");
    // A confidential launch gives the demo guest no command line (so no `wait`): it
    // greets and exits.
    vm.start().unwrap();
    assert_eq!(vm.wait().unwrap(), VmExit::GuestExit(0), "console:\n{}", console.text());
    assert_eq!(vm.info().tee, "snp-emulated");
}
