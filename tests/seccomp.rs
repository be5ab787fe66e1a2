//! The seccomp filters (`vmm::seccomp`): each thread kind's filter kills the process
//! on a system call outside its allow-list (checked in forked children, one filter
//! each), a VM's threads run confined while the caller's thread does not, and the demo
//! guest drives every device with the filters on (and with `--no-seccomp`).

mod common;

use std::collections::BTreeSet;
use std::io::Read;
use std::os::unix::net::{UnixDatagram, UnixListener};
use std::process::Output;
use std::time::{Duration, Instant};

use common::{cvmm, temp_file, tiny_elf};
use vmm::seccomp::{Filter, ThreadKind};
use vmm::{build_vm, KernelSource, VmConfig, VmExit};

/// How a forked child ended.
#[derive(Debug, PartialEq, Eq)]
enum Ended {
    Exited(i32),
    Killed(i32),
}

/// Forks; the child installs `kind`'s filter (compiled here, before the fork), runs
/// `body` and exits 0 if it survives. Only raw system calls run in the child.
fn in_confined_child(kind: ThreadKind, body: impl FnOnce()) -> Ended {
    let filter = Filter::new(kind).expect("filter compiles");
    // SAFETY: the child only calls async-signal-safe functions (setrlimit, the seccomp
    // installation, which allocates nothing, the system calls `body` makes) and _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        // A killed child must not leave a core file behind.
        let no_core = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: setrlimit reads the struct; _exit never returns.
        unsafe {
            libc::setrlimit(libc::RLIMIT_CORE, &no_core);
            if filter.apply().is_err() {
                libc::_exit(100);
            }
            body();
            libc::_exit(0);
        }
    }
    let mut status = 0;
    // SAFETY: waits for the child just forked; `status` is a valid out pointer.
    let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(rc, pid, "waitpid: {}", std::io::Error::last_os_error());
    if libc::WIFSIGNALED(status) {
        Ended::Killed(libc::WTERMSIG(status))
    } else {
        Ended::Exited(libc::WEXITSTATUS(status))
    }
}

fn inet_socket() {
    // SAFETY: plain system call; the fd (if any) is left to the child's exit.
    unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
}

#[test]
fn a_vcpu_thread_that_opens_a_socket_kills_the_process() {
    assert_eq!(in_confined_child(ThreadKind::Vcpu, inet_socket), Ended::Killed(libc::SIGSYS));
}

#[test]
fn a_vcpu_thread_that_executes_a_program_kills_the_process() {
    let ended = in_confined_child(ThreadKind::Vcpu, || {
        let argv = [c"/bin/true".as_ptr(), std::ptr::null()];
        let envp = [std::ptr::null()];
        // SAFETY: NUL-terminated path and NULL-terminated argv/envp.
        unsafe { libc::execve(c"/bin/true".as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    });
    assert_eq!(ended, Ended::Killed(libc::SIGSYS));
}

#[test]
fn a_vcpu_thread_may_issue_only_its_kvm_ioctls() {
    // KVM_RUN on a bad fd is allowed through the filter (and fails with EBADF) ...
    let ended = in_confined_child(ThreadKind::Vcpu, || {
        // SAFETY: an ioctl on an fd that does not exist touches no memory.
        let rc = unsafe { libc::ioctl(-1, 0xae80, 0) };
        let errno = std::io::Error::last_os_error().raw_os_error();
        if rc != -1 || errno != Some(libc::EBADF) {
            // SAFETY: _exit never returns.
            unsafe { libc::_exit(1) };
        }
    });
    assert_eq!(ended, Ended::Exited(0));
    // ... any other request kills the process.
    let ended = in_confined_child(ThreadKind::Vcpu, || {
        let mut on: libc::c_int = 1;
        // SAFETY: FIONBIO reads one int.
        unsafe { libc::ioctl(0, libc::FIONBIO, &mut on) };
    });
    assert_eq!(ended, Ended::Killed(libc::SIGSYS));
}

#[test]
fn the_device_loop_may_open_unix_stream_sockets_but_no_others() {
    let unix = in_confined_child(ThreadKind::Devices, || {
        // SAFETY: plain system calls on an fd this closure owns.
        unsafe {
            let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
            if fd < 0 {
                libc::_exit(1);
            }
            libc::close(fd);
        }
    });
    assert_eq!(unix, Ended::Exited(0));
    assert_eq!(in_confined_child(ThreadKind::Devices, inet_socket), Ended::Killed(libc::SIGSYS));
    let datagram = in_confined_child(ThreadKind::Devices, || {
        // SAFETY: plain system call.
        unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_DGRAM, 0) };
    });
    assert_eq!(datagram, Ended::Killed(libc::SIGSYS), "the net socket is connected before the run");
}

/// A quote generation service on a Unix socket: answers one GET_QUOTE_REQ with a
/// GET_QUOTE_RESP carrying `quote` (the QGS message format written out by hand:
/// 4-byte big-endian length; version 1.1, type 1, size, error 0; no selected ID).
fn fake_qgs(name: &str, quote: &'static [u8]) -> (std::path::PathBuf, std::thread::JoinHandle<Vec<u8>>) {
    use std::io::Write;
    let path = std::env::temp_dir().join(format!("cvmm-seccomp-qgs-{}-{name}.socket", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).unwrap();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut prefix = [0u8; 4];
        s.read_exact(&mut prefix).unwrap();
        let mut request = vec![0u8; u32::from_be_bytes(prefix) as usize];
        s.read_exact(&mut request).unwrap();
        let size = 24 + quote.len() as u32;
        let mut reply = size.to_be_bytes().to_vec();
        for word in [0x0001_0001u32, 1, size, 0, 0, quote.len() as u32] {
            reply.extend_from_slice(&word.to_le_bytes());
        }
        reply.extend_from_slice(quote);
        s.write_all(&reply).unwrap();
        request
    });
    (path, server)
}

/// What the GetQuote thread does with a request: launch's QGS client, as its jobs call
/// it; exits 0 if the quote came back, 1 if not.
fn forward_to(path: &std::path::Path) -> impl FnOnce() + '_ {
    move || {
        let addr = launch::tdx::kvm::options::QgsAddress::Unix(path.to_path_buf());
        let got = launch::tdx::kvm::quote::get_quote(&addr, &[0x42; 1024], 0x2000, Duration::from_secs(5));
        if !got.is_ok_and(|q| q == b"the quote") {
            // SAFETY: ends the child.
            unsafe { libc::_exit(1) };
        }
    }
}

#[test]
fn the_quote_thread_may_forward_a_td_report_to_the_quote_service() {
    let (path, server) = fake_qgs("quote", b"the quote");

    let ended = in_confined_child(ThreadKind::Quote, forward_to(&path));

    assert_eq!(ended, Ended::Exited(0));
    let request = server.join().unwrap();
    assert_eq!(&request[24..], &[0x42; 1024], "the report reached the service");
    let _ = std::fs::remove_file(&path);
}

#[test]
fn a_vcpu_thread_that_forwards_a_td_report_kills_the_process() {
    let (path, _server) = fake_qgs("vcpu", b"the quote");

    let ended = in_confined_child(ThreadKind::Vcpu, forward_to(&path));

    assert_eq!(ended, Ended::Killed(libc::SIGSYS));
    // Wake the server's accept (the child never connected) so that its thread ends.
    let _ = std::os::unix::net::UnixStream::connect(&path);
    let _ = std::fs::remove_file(&path);
}

#[test]
fn the_quote_thread_may_open_unix_and_vsock_streams_only_and_signal_an_msi_only() {
    let streams = in_confined_child(ThreadKind::Quote, || {
        for family in [libc::AF_UNIX, libc::AF_VSOCK] {
            // SAFETY: plain system calls on an fd this closure owns.
            unsafe {
                let fd = libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
                // A host without vsock says EAFNOSUPPORT: the filter let it through.
                if fd >= 0 {
                    libc::close(fd);
                }
            }
        }
        // KVM_SIGNAL_MSI on a bad fd: allowed through, fails with EBADF.
        // SAFETY: an ioctl on an fd that does not exist touches no memory.
        unsafe { libc::ioctl(-1, 0x4020_aea5, 0) };
    });
    assert_eq!(streams, Ended::Exited(0));
    assert_eq!(in_confined_child(ThreadKind::Quote, inet_socket), Ended::Killed(libc::SIGSYS));
    let listen = in_confined_child(ThreadKind::Quote, || {
        // SAFETY: plain system call on a bad fd.
        unsafe { libc::listen(-1, 1) };
    });
    assert_eq!(listen, Ended::Killed(libc::SIGSYS));
    let kvm_run = in_confined_child(ThreadKind::Quote, || {
        // SAFETY: KVM_RUN on an fd that does not exist touches no memory.
        unsafe { libc::ioctl(-1, 0xae80, 0) };
    });
    assert_eq!(kvm_run, Ended::Killed(libc::SIGSYS));
}

#[test]
fn the_device_loop_may_move_net_frames_over_files_and_datagram_sockets() {
    use devices::virtio::net::{NetBackend, UnixDatagramBackend};
    use devices::virtio::net_file::FileBackend;
    use vm_memory::VolatileSlice;
    let dir = std::env::temp_dir().join(format!("cvmm-seccomp-net-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (tx, rx) = (dir.join("tx"), dir.join("rx"));
    let _ = std::fs::remove_file(&tx);
    std::fs::write(&rx, [&5u32.to_le_bytes()[..], b"hello"].concat()).unwrap();
    // Opened before the filter, as the builder does.
    let mut file = FileBackend::open(&tx, Some(&rx)).unwrap();
    let (ours, peer) = UnixDatagram::pair().unwrap();
    let mut sock = UnixDatagramBackend::new(ours).unwrap();

    let ended = in_confined_child(ThreadKind::Devices, move || {
        let mut frame = *b"a frame";
        let parts = [VolatileSlice::from(&mut frame[..])];
        let mut buf = [0u8; 64];
        let ok = file.send_frames(&[&parts]).1.is_none()
            && file.recv(&mut buf).ok() == Some(Some(5))
            && sock.send_frames(&[&parts, &parts]).1.is_none();
        if !ok {
            // SAFETY: ends the child.
            unsafe { libc::_exit(1) };
        }
    });

    assert_eq!(ended, Ended::Exited(0));
    assert_eq!(std::fs::read(&tx).unwrap(), [&7u32.to_le_bytes()[..], b"a frame"].concat());
    let mut got = [0u8; 16];
    assert_eq!(peer.recv(&mut got).unwrap(), 7, "the burst's frames reached the peer");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_device_loop_may_move_net_frames_over_a_ring_and_survive_a_shrunk_ring_file() {
    use devices::virtio::net::NetBackend;
    use devices::virtio::net_ring::{RingBackend, RingPeer, MIN_RING_SIZE};
    use std::os::fd::AsRawFd;
    use vm_memory::VolatileSlice;
    let dir = std::env::temp_dir().join(format!("cvmm-seccomp-ring-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("ring");
    // Created before the filter, as the builder does; the peer publishes one rx frame.
    let mut ring = RingBackend::create(&path, MIN_RING_SIZE).unwrap();
    let mut peer = RingPeer::open(&path).unwrap();
    assert!(peer.send_frame(b"hello").unwrap());
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();

    let ended = in_confined_child(ThreadKind::Devices, move || {
        let mut frame = *b"a frame";
        let parts = [VolatileSlice::from(&mut frame[..])];
        let mut buf = [0u8; 64];
        let ok = ring.send_frames(&[&parts]).1.is_none() && ring.recv(&mut buf).ok() == Some(Some(5));
        ring.ack_doorbell();
        // A hostile peer shrinks the file: the next copy faults, the SIGBUS handler
        // maps a page over it (mmap, under the filter) and the send fails.
        // SAFETY: plain system call on an open descriptor.
        unsafe { libc::ftruncate(file.as_raw_fd(), 0) };
        let refused = ring.send_frames(&[&parts]).1.is_some();
        if !(ok && refused) {
            // SAFETY: ends the child.
            unsafe { libc::_exit(1) };
        }
    });

    assert_eq!(ended, Ended::Exited(0));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_device_loop_may_not_issue_kvm_ioctls() {
    let ended = in_confined_child(ThreadKind::Devices, || {
        // SAFETY: an ioctl on an fd that does not exist touches no memory.
        unsafe { libc::ioctl(-1, 0xae80, 0) };
    });
    assert_eq!(ended, Ended::Killed(libc::SIGSYS));
}

#[test]
fn no_thread_may_open_files() {
    for kind in ThreadKind::ALL {
        let ended = in_confined_child(kind, || {
            // SAFETY: NUL-terminated path.
            unsafe { libc::openat(libc::AT_FDCWD, c"/etc/passwd".as_ptr(), libc::O_RDONLY) };
        });
        assert_eq!(ended, Ended::Killed(libc::SIGSYS), "{kind}");
    }
}

#[test]
fn no_thread_may_map_executable_memory_but_every_thread_may_allocate() {
    for kind in ThreadKind::ALL {
        let exec = in_confined_child(kind, || {
            // SAFETY: an anonymous mapping the child never uses.
            unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    4096,
                    libc::PROT_READ | libc::PROT_EXEC,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
        });
        assert_eq!(exec, Ended::Killed(libc::SIGSYS), "{kind}");
        let data = in_confined_child(kind, || {
            // SAFETY: an anonymous mapping, written and unmapped here.
            unsafe {
                let p = libc::mmap(
                    std::ptr::null_mut(),
                    1 << 20,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                );
                if p == libc::MAP_FAILED {
                    libc::_exit(1);
                }
                p.cast::<u8>().write(1);
                libc::munmap(p, 1 << 20);
            }
        });
        assert_eq!(data, Ended::Exited(0), "{kind}");
    }
}

#[test]
fn only_the_main_thread_may_kick_a_thread_with_the_kick_signal() {
    let kick = || {
        // SAFETY: the signal goes to this (only) thread, whose handler for SIGRTMIN is
        // the default, but the filter is checked first.
        unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), libc::gettid(), libc::SIGRTMIN() + 5) };
    };
    // Not the kick signal: no thread may send it.
    assert_eq!(in_confined_child(ThreadKind::Main, kick), Ended::Killed(libc::SIGSYS));
    let vcpu_kick = in_confined_child(ThreadKind::Vcpu, || {
        // SAFETY: as above, with the kick signal itself.
        unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), libc::gettid(), vmm::vcpu::kick_signal()) };
    });
    assert_eq!(vcpu_kick, Ended::Killed(libc::SIGSYS));
}

/// Names of this process's threads whose seccomp mode is 2 (filter).
fn confined_threads() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return names };
    for task in tasks.flatten() {
        let (Ok(comm), Ok(status)) =
            (std::fs::read_to_string(task.path().join("comm")), std::fs::read_to_string(task.path().join("status")))
        else {
            continue;
        };
        if status.lines().any(|l| l.split_whitespace().eq(["Seccomp:", "2"])) {
            names.insert(comm.trim().to_owned());
        }
    }
    names
}

#[test]
fn a_vms_threads_run_confined_and_the_callers_thread_does_not() {
    // A guest that spins until the watchdog ends it, with a device so the loop runs.
    let kernel = temp_file("spin.elf", &tiny_elf(&[0xeb, 0xfe]));
    let config = VmConfig {
        kernel: KernelSource::File(kernel),
        rng: true,
        timeout: Some(Duration::from_secs(2)),
        ..Default::default()
    };
    let mut vm = build_vm(&config, Box::new(std::io::sink())).unwrap();
    let watcher = std::thread::spawn(|| {
        let deadline = Instant::now() + Duration::from_secs(10);
        let want: BTreeSet<String> = ["devices", "vcpu0", "vmm"].map(String::from).into();
        loop {
            let seen = confined_threads();
            if want.is_subset(&seen) || Instant::now() > deadline {
                return seen;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    assert!(matches!(vm.run().unwrap(), VmExit::Timeout(_)));
    let seen = watcher.join().unwrap();
    for name in ["devices", "vcpu0", "vmm"] {
        assert!(seen.contains(name), "thread {name} was not confined; confined: {seen:?}");
    }
    drop(vm);
    // The caller may go on with anything, e.g. open files and run another VM.
    let status = std::fs::read_to_string("/proc/thread-self/status").unwrap();
    assert!(status.lines().any(|l| l.split_whitespace().eq(["Seccomp:", "0"])), "{status}");
    let mut again = build_vm(&VmConfig::default(), Box::new(std::io::sink())).unwrap();
    assert_eq!(again.run().unwrap(), VmExit::GuestExit(0));
}

const GREETING: &str = "Hello from the cvmm demo guest: 1 vCPU, 256 MiB of memory";

/// The demo guest with every device: console, disk, rng, vsock (a listener on port
/// 1234) and net (a datagram socket the test binds). Returns cvmm's output and what
/// the vsock listener received.
fn demo_with_every_device(extra: &[&str]) -> (Output, Vec<u8>) {
    let disk = temp_file("disk.img", &vec![0x5a; 64 * 512]);
    let dir = disk.parent().unwrap().to_owned();
    let net = dir.join("net");
    let _peer = UnixDatagram::bind(&net).unwrap();
    let vsock = dir.join("vsock");
    let listener = UnixListener::bind(format!("{}_1234", vsock.display())).unwrap();
    let server = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut got = Vec::new();
        stream.read_to_end(&mut got).unwrap();
        got
    });
    let out = cvmm()
        .args(["--log-level", "debug", "run", "--timeout", "60", "--console", "--rng", "--disk"])
        .arg(&disk)
        .arg("--vsock")
        .arg(format!("cid=3,socket={}", vsock.display()))
        .arg("--net")
        .arg(format!("socket={}", net.display()))
        .args(extra)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "stdout:\n{stdout}\nstderr:\n{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 5, "{lines:?}");
    assert_eq!(lines[0], GREETING);
    assert!(lines[1].starts_with("disk: sector 0 sha256 "), "{lines:?}");
    assert_eq!(lines[2], "disk: write/read-back ok");
    assert!(lines[3].starts_with("rng: "), "{lines:?}");
    assert_eq!(lines[4], "vsock: sent");
    (out, server.join().unwrap())
}

#[test]
fn the_demo_drives_every_device_with_the_filters_on() {
    let (out, vsock) = demo_with_every_device(&[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("seccomp filters installed: 1 vCPU thread(s), device loop, main"), "{stderr}");
    assert_eq!(vsock, b"hello from the cvmm demo guest\n");
}

#[test]
fn no_seccomp_runs_the_same_demo_without_filters() {
    let (out, vsock) = demo_with_every_device(&["--no-seccomp"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("seccomp filters are off"), "{stderr}");
    assert!(!stderr.contains("seccomp filters installed"), "{stderr}");
    assert_eq!(vsock, b"hello from the cvmm demo guest\n");
}

#[test]
fn a_vm_under_a_handle_is_paused_resumed_and_shut_down_from_its_confined_threads() {
    // The demo guest in `wait` mode halts until it is asked to shut down.
    let config =
        VmConfig { cmdline: Some("wait".into()), timeout: Some(Duration::from_secs(60)), ..Default::default() };
    let vm = vmm::VmHandle::create(&config, Box::new(std::io::sink())).unwrap();
    vm.start().unwrap();
    // Every control request is carried out on the VM's confined threads: a system call
    // outside their allow-lists would kill this process.
    vm.pause().unwrap();
    let seen = confined_threads();
    for name in ["vmm", "vcpu0"] {
        assert!(seen.contains(name), "thread {name} was not confined; confined: {seen:?}");
    }
    // The supervisor that releases the VM's resources after the run must not be.
    assert!(!seen.contains("vm-supervisor"), "{seen:?}");
    vm.resume().unwrap();
    vm.shutdown(Duration::from_secs(30)).unwrap();
    assert_eq!(vm.wait().unwrap(), VmExit::GuestExit(0));
}
