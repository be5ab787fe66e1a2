//! Bad input: each gets a message naming the problem, a non-zero exit, and leaves
//! nothing behind.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::{cvmm, temp_file, tiny_elf};

/// Runs `cvmm run ARGS` and returns (exit code, stderr).
fn run_err(args: &[&str]) -> (i32, String) {
    let out = cvmm().arg("run").args(args).output().unwrap();
    assert!(out.stdout.is_empty(), "no guest output expected: {:?}", String::from_utf8_lossy(&out.stdout));
    (out.status.code().unwrap(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn assert_fails_with(args: &[&str], needle: &str) {
    let (code, err) = run_err(args);
    assert_ne!(code, 0, "{args:?} must fail");
    assert!(err.contains(needle), "{args:?}: expected {needle:?} in stderr {err:?}");
}

#[test]
fn missing_kernel_is_named() {
    assert_fails_with(&["--kernel", "/nonexistent/vmlinux"], "cannot read kernel /nonexistent/vmlinux: No such file");
}

#[test]
fn kernel_that_is_a_directory_is_named() {
    let dir = std::env::temp_dir();
    assert_fails_with(&["--kernel", dir.to_str().unwrap()], "not a regular file");
}

#[test]
fn unreadable_kernel_is_named() {
    let path = temp_file("secret-vmlinux", &tiny_elf(&common::exit_with(0)));
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o000)).unwrap();
    // SAFETY: geteuid has no side effects.
    let out = if unsafe { libc_geteuid() } == 0 {
        // Root reads any file: run as 'nobody', for whom mode 000 means no access.
        let dir = path.parent().unwrap();
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(env!("CARGO_BIN_EXE_cvmm"))
            .args(["run", "--kernel"])
            .arg(&path)
            .output()
            .unwrap()
    } else {
        cvmm().args(["run", "--kernel"]).arg(&path).output().unwrap()
    };
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot read kernel") && err.contains("Permission denied"), "{err}");
}

#[test]
fn file_that_is_not_a_kernel_is_rejected() {
    let path = temp_file("notes.txt", b"this is not a kernel\n");
    assert_fails_with(&["--kernel", path.to_str().unwrap()], "not a kernel");
    let empty = temp_file("empty", b"");
    assert_fails_with(&["--kernel", empty.to_str().unwrap()], "not a kernel");
}

#[test]
fn kernel_that_does_not_fit_in_memory_is_rejected() {
    // A segment at 2 MiB with 15 MiB of file data does not fit in 16 MiB of RAM.
    let path = temp_file("huge.elf", &tiny_elf(&vec![0x90; 15 << 20]));
    assert_fails_with(&["--kernel", path.to_str().unwrap(), "--memory", "16M"], "cannot load kernel");
}

#[test]
fn initrd_that_does_not_fit_is_rejected() {
    let kernel = temp_file("k.elf", &tiny_elf(&common::exit_with(0)));
    let initrd = temp_file("initrd.img", &vec![0u8; 17 << 20]);
    assert_fails_with(
        &["--kernel", kernel.to_str().unwrap(), "--initrd", initrd.to_str().unwrap(), "--memory", "16M"],
        "initrd of 17825792 bytes does not fit in guest memory",
    );
}

#[test]
fn missing_initrd_is_named() {
    let kernel = temp_file("k.elf", &tiny_elf(&common::exit_with(0)));
    assert_fails_with(
        &["--kernel", kernel.to_str().unwrap(), "--initrd", "/nonexistent/initrd"],
        "cannot read initrd /nonexistent/initrd",
    );
}

#[test]
fn memory_too_small_or_not_a_size_is_rejected() {
    assert_fails_with(&["--memory", "1M"], "memory: guest memory of 1048576 bytes is too small");
    assert_fails_with(&["--memory", "lots"], "'lots' is not a size");
    assert_fails_with(&["--memory", "100000T"], "too large");
    assert_fails_with(&["--memory", "16385K"], "not a multiple of 4 KiB");
}

#[test]
fn zero_or_too_many_vcpus_are_rejected() {
    assert_fails_with(&["--vcpus", "0"], "vcpus: 0 is not a valid vCPU count");
    assert_fails_with(&["--vcpus", "300"], "vcpus: 300 is not a valid vCPU count");
    assert_fails_with(&["--vcpus", "two"], "invalid value 'two'");
}

#[test]
fn overlong_command_line_is_rejected() {
    let kernel = temp_file("k.elf", &tiny_elf(&common::exit_with(0)));
    let long = "x".repeat(5000);
    assert_fails_with(&["--kernel", kernel.to_str().unwrap(), "--cmdline", &long], "kernel command line is invalid");
}

#[test]
fn missing_kvm_device_is_named() {
    assert_fails_with(
        &["--kvm-device", "/nonexistent/kvm"],
        "cannot open the KVM device /nonexistent/kvm: No such file or directory",
    );
}

#[test]
fn device_that_is_not_kvm_is_named() {
    assert_fails_with(&["--kvm-device", "/dev/null"], "/dev/null is not a KVM device");
}

#[test]
fn inaccessible_kvm_device_says_permission_denied() {
    // SAFETY: geteuid has no side effects.
    let root = unsafe { libc_geteuid() } == 0;
    let out = if root {
        // Root ignores file modes: run as 'nobody' against the real /dev/kvm (mode 0600).
        let mode = std::fs::metadata("/dev/kvm").unwrap().permissions().mode();
        assert_eq!(mode & 0o006, 0, "this test needs a /dev/kvm that others cannot open");
        std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(env!("CARGO_BIN_EXE_cvmm"))
            .args(["run", "--kvm-device", "/dev/kvm"])
            .output()
            .unwrap()
    } else {
        let path = temp_file("kvm", b"");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o000)).unwrap();
        cvmm().args(["run", "--kvm-device"]).arg(&path).output().unwrap()
    };
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0));
    assert!(err.contains("cannot open the KVM device") && err.contains("Permission denied"), "{err}");
}

extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}
