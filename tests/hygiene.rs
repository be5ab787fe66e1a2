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
    a_guest_that_dies_leaves_nothing_behind();
    a_run_with_every_device_leaves_no_fds_sockets_or_files_behind();
    guest_memory_policy_is_applied_to_the_mapping();
    a_dropped_handle_ends_its_vm_and_leaves_nothing_behind();
}

fn a_dropped_handle_ends_its_vm_and_leaves_nothing_behind() {
    let (fds, threads) = (common::open_fds(), common::thread_count());
    // The demo guest in `wait` mode halts until it is asked to shut down.
    let config = VmConfig { cmdline: Some("wait".into()), ..Default::default() };
    let vm = vmm::VmHandle::create(&config, Box::new(std::io::sink())).unwrap();
    vm.start().unwrap();
    vm.pause().unwrap();
    assert!(common::thread_count() > threads);
    drop(vm);
    assert_eq!(common::open_fds(), fds, "fds leaked by a dropped handle");
    assert_eq!(common::settled_thread_count(threads), threads, "threads leaked by a dropped handle");
}

/// The VmFlags of the mapping that contains `addr`, from /proc/self/smaps.
fn vm_flags(addr: usize) -> String {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let mut inside = false;
    for line in smaps.lines() {
        if let Some((range, _)) = line.split_once(' ') {
            if let Some((a, b)) = range.split_once('-') {
                if let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16)) {
                    inside = (a..b).contains(&addr);
                    continue;
                }
            }
        }
        if inside {
            if let Some(flags) = line.strip_prefix("VmFlags:") {
                return flags.trim().to_string();
            }
        }
    }
    panic!("no mapping contains {addr:#x}");
}

fn a_guest_that_dies_leaves_nothing_behind() {
    // ud2 with no IDT: the guest triple-faults at its first instruction.
    let kernel = temp_file("die.elf", &tiny_elf(&[0x0f, 0x0b]));
    let config = VmConfig { kernel: KernelSource::File(kernel), vcpus: 2, rng: true, ..Default::default() };
    let (fds, threads) = (common::open_fds(), common::thread_count());
    for _ in 0..3 {
        let mut vm = build_vm(&config, Box::new(std::io::sink())).unwrap();
        assert!(matches!(vm.run().unwrap(), vmm::VmExit::TripleFault { .. }));
    }
    assert_eq!(common::open_fds(), fds, "fds leaked by guests that died");
    assert_eq!(common::settled_thread_count(threads), threads, "threads leaked by guests that died");
}

fn guest_memory_policy_is_applied_to_the_mapping() {
    use vm_memory::GuestMemoryBackend;
    for (policy, dd, lo) in [
        (vmm::config::GuestMemoryPolicy::Dump, false, false),
        (vmm::config::GuestMemoryPolicy::DontDump, true, false),
        (vmm::config::GuestMemoryPolicy::Lock, true, true),
    ] {
        let config = VmConfig { memory: 32 << 20, guest_memory: policy, ..Default::default() };
        let vm = build_vm(&config, Box::new(std::io::sink())).unwrap();
        let addr = vm.guest_memory().iter().next().unwrap().as_ptr() as usize;
        let flags = vm_flags(addr);
        assert_eq!(flags.split(' ').any(|f| f == "dd"), dd, "{policy:?}: {flags}");
        assert_eq!(flags.split(' ').any(|f| f == "lo"), lo, "{policy:?}: {flags}");
    }
}

fn a_run_with_every_device_leaves_no_fds_sockets_or_files_behind() {
    let dir = std::env::temp_dir().join(format!("cvmm-hygiene-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let disk = dir.join("disk.img");
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    let net_peer = std::os::unix::net::UnixDatagram::bind(dir.join("net.sock")).unwrap();
    let listener = std::os::unix::net::UnixListener::bind(dir.join("vsock.sock_1234")).unwrap();
    let config = VmConfig {
        console: true,
        rng: true,
        disks: vec![disk.to_str().unwrap().parse().unwrap()],
        net: Some(format!("socket={}", dir.join("net.sock").display()).parse().unwrap()),
        vsock: Some(format!("cid=3,socket={}", dir.join("vsock.sock").display()).parse().unwrap()),
        timeout: Some(std::time::Duration::from_secs(60)),
        ..Default::default()
    };
    let before_files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    let (fds, threads) = (common::open_fds(), common::thread_count());
    let mut vm = build_vm(&config, Box::new(std::io::sink())).unwrap();
    assert_eq!(vm.run().unwrap(), vmm::VmExit::GuestExit(0));
    drop(vm);
    assert_eq!(common::open_fds(), fds, "fds (files, sockets, eventfds) leaked by a full run");
    assert_eq!(common::settled_thread_count(threads), threads, "threads leaked by a full run");
    let after_files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(before_files, after_files, "files created next to the device sockets");
    // A device that cannot be set up fails the build and leaves nothing either.
    let bad = VmConfig { disks: vec!["/nonexistent/disk.img".parse().unwrap()], rng: true, ..config.clone() };
    assert!(matches!(build_vm(&bad, Box::new(std::io::sink())), Err(BuildError::Disk { .. })));
    let bad_net = VmConfig { net: Some("socket=/nonexistent/net.sock".parse().unwrap()), ..config };
    assert!(build_vm(&bad_net, Box::new(std::io::sink())).is_err());
    assert_eq!(common::open_fds(), fds, "fds leaked by failed device setup");
    drop((net_peer, listener));
    std::fs::remove_dir_all(&dir).unwrap();
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
