//! Resource hygiene: failed and completed launches leave no fds or threads behind.
//!
//! One #[test] runs every check in sequence: fd and thread counts are per process,
//! so nothing else may run beside them.

mod common;

use common::{temp_file, tiny_elf};
use vmm::{build_vm, BuildError, KernelSource, VmConfig};

#[test]
fn launches_leave_no_fds_or_threads_behind() {
    failed_builds_leave_no_fds_or_threads_behind();
    a_completed_run_leaves_no_fds_behind();
    a_watchdog_ended_run_joins_every_vcpu_thread();
}

fn failed_builds_leave_no_fds_or_threads_behind() {
    let not_kernel = temp_file("nk", b"garbage");
    let fits_not = temp_file("k.elf", &tiny_elf(&common::exit_with(0)));
    let big_initrd = temp_file("big", &vec![0u8; 17 << 20]);
    let configs = [
        VmConfig { vcpus: 0, ..Default::default() },
        VmConfig { kernel: KernelSource::File(not_kernel), ..Default::default() },
        VmConfig { kvm_device: "/dev/null".into(), ..Default::default() },
        // Fails after the VM, its memory and irqchip exist: the late-failure path.
        VmConfig {
            kernel: KernelSource::File(fits_not),
            initrd: Some(big_initrd),
            memory: 16 << 20,
            ..Default::default()
        },
    ];
    // Warm up once so lazily opened process-wide fds don't count.
    let _ = build_vm(&configs[3], Box::new(std::io::sink()));
    let (fds, threads) = (common::open_fds(), common::thread_count());
    for config in &configs {
        for _ in 0..3 {
            let err = build_vm(config, Box::new(std::io::sink())).unwrap_err();
            assert!(!matches!(err, BuildError::CreateVcpu { .. }), "{err}");
        }
    }
    assert_eq!(common::open_fds(), fds, "fds leaked by failed builds");
    assert_eq!(common::settled_thread_count(threads), threads, "threads leaked by failed builds");
}

fn a_completed_run_leaves_no_fds_behind() {
    let _ = build_vm(&VmConfig::default(), Box::new(std::io::sink())).unwrap().run();
    let fds = common::open_fds();
    for _ in 0..3 {
        let mut vm = build_vm(&VmConfig { vcpus: 2, ..Default::default() }, Box::new(std::io::sink())).unwrap();
        assert_eq!(vm.run().unwrap(), vmm::VmExit::GuestExit(0));
        drop(vm);
    }
    assert_eq!(common::open_fds(), fds);
}

fn a_watchdog_ended_run_joins_every_vcpu_thread() {
    let kernel = temp_file("spin.elf", &tiny_elf(&[0xeb, 0xfe]));
    let config = VmConfig {
        kernel: KernelSource::File(kernel),
        vcpus: 4,
        timeout: Some(std::time::Duration::from_millis(300)),
        ..Default::default()
    };
    let (fds, threads) = (common::open_fds(), common::thread_count());
    let mut vm = build_vm(&config, Box::new(std::io::sink())).unwrap();
    assert!(matches!(vm.run().unwrap(), vmm::VmExit::Timeout(_)));
    let vcpu_threads = std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.unwrap().path().join("comm")).ok())
        .filter(|comm| comm.starts_with("vcpu"))
        .count();
    assert_eq!(vcpu_threads, 0, "run() returns only after joining every vCPU thread");
    // KVM attaches its own per-VM kernel thread (kvm-nx-lpage-recovery) to the
    // process until the VM fd closes, so count after the VM is dropped.
    drop(vm);
    assert_eq!(common::settled_thread_count(threads), threads, "every vCPU thread was joined");
    assert_eq!(common::open_fds(), fds);
}
