//! The emulated TDX platform end to end: `cvmm run --tee tdx --emulated` boots guests
//! through cvmm's own firmware (all vCPUs at the reset vector, memory accepted page by
//! page), and MRTD from the launch, the library and `cvmm measure` agree.

mod common;

use std::time::Duration;

use common::{cvmm, temp_file, SharedBuf};
use vmm::{build_vm, TdxConfig, Tee, VmConfig, VmExit};

fn tdx_config() -> VmConfig {
    VmConfig {
        tee: Tee::Tdx(TdxConfig { emulated: true }),
        memory: 64 << 20,
        timeout: Some(Duration::from_secs(60)),
        ..Default::default()
    }
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn demo_guest_boots_as_a_td_with_every_vcpu_accepting_memory() {
    let console = SharedBuf::default();
    let config = VmConfig { vcpus: 3, ..tdx_config() };
    let mut vm = build_vm(&config, Box::new(console.clone())).expect("build");
    assert_eq!(vm.backend_name(), "TDX (emulated)");
    assert_eq!(vm.run().expect("run"), VmExit::GuestExit(0), "console: {}", console.text());
    assert!(console.text().starts_with("Hello from the cvmm demo guest: 3 vCPUs, 64 MiB of memory\n"));
    let platform = vm.tdx_platform().expect("emulated TDX");
    let pages = platform.pages();
    // 64 MiB and the reset page; all accepted but the 4 MiB bounce region, now shared.
    assert_eq!(pages.pages(), 16384 + 1);
    assert_eq!(pages.validated_pages(), 16384 + 1 - 1024);
    drop(pages);
    assert!(vm.shared_memory().is_shared(0x40_0000, 0x40_0000));
    assert!(!vm.shared_memory().is_shared(0x20_0000, 0x1000));
}

#[test]
fn mrtd_equals_cvmm_measure_for_the_same_arguments() {
    let config = VmConfig { rng: true, ..tdx_config() };
    let mut vm = build_vm(&config, Box::new(SharedBuf::default())).expect("build");
    let launched = vm.launch_measurement().expect("a TD has an MRTD");
    assert_eq!(vm.run().expect("run"), VmExit::GuestExit(0));
    assert_eq!(vmm::tdx_measurement(&config).unwrap().1, launched);
    let out = cvmm().args(["measure", "--tee", "tdx", "--emulated", "--rng", "--memory", "64M"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), hex_of(&launched));
    let out = cvmm().args(["measure", "--tee", "tdx", "--emulated", "--memory", "64M"]).output().unwrap();
    assert_ne!(String::from_utf8_lossy(&out.stdout).trim(), hex_of(&launched), "the boot info is measured");
}

#[test]
fn malformed_tdcalls_get_the_ghci_status_and_a_fatal_error_report_ends_the_vm() {
    let guest = temp_file("tdx_test.elf", firmware::test_guests::tdx());
    let out = cvmm()
        .args(["run", "--tee", "tdx", "--emulated", "--memory", "64M", "--timeout", "60", "--kernel"])
        .arg(&guest)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // A debug exit with a check number means that check failed.
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(stderr.contains("the TD reported a fatal error on vCPU 0: code 0x42"), "stderr: {stderr}");
}

#[test]
fn a_real_tdx_launch_on_a_host_without_tdx_says_what_is_missing() {
    let out = cvmm().args(["run", "--tee", "tdx"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("--tee tdx:") && stderr.contains("--emulated"), "{stderr}");
}
