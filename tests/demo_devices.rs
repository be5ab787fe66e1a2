//! The demo guest driving each virtio device through its own guest-side driver
//! (firmware/guests/virtio.rs), checked from the host side: what reaches stdout through
//! virtio-console, what the disk image holds afterwards, and what a host Unix socket
//! receives over vsock.
//!
//! Needs the `cvmm run` flags `--console`, `--disk PATH[,ro]`, `--rng` and
//! `--vsock cid=N,socket=PATH`.

mod common;

#[path = "../firmware/guests/sha256.rs"]
mod guest_sha256;

use std::io::Read;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use common::{cvmm, temp_file};
use sha2::{Digest, Sha256};

const GREETING: &str = "Hello from the cvmm demo guest: 1 vCPU, 256 MiB of memory";
/// What the demo writes to sector 1 (firmware/guests/demo.rs, SECTOR1_PATTERN), repeated.
const SECTOR1_PATTERN: &[u8; 16] = b"cvmm-demo-guest\n";
const VSOCK_MESSAGE: &[u8] = b"hello from the cvmm demo guest\n";

fn run_demo(args: &[&str]) -> Output {
    cvmm().args(["run", "--timeout", "60"]).args(args).output().expect("run cvmm")
}

/// stdout as lines; panics with stdout and stderr unless cvmm exited with `status`.
fn lines_expecting(out: &Output, status: i32) -> Vec<String> {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(status), "stdout:\n{stdout}\nstderr:\n{}", String::from_utf8_lossy(&out.stderr));
    stdout.lines().map(str::to_owned).collect()
}

/// A disk image whose every byte is known: `sectors` sectors of a counter pattern.
fn disk_image(sectors: usize) -> Vec<u8> {
    (0..sectors * 512).map(|i| (i * 7 + i / 512) as u8).collect()
}

/// A fresh, empty temporary directory.
fn fresh_dir() -> PathBuf {
    temp_file("placeholder", b"").parent().expect("temp_file makes a directory").to_owned()
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("temporary paths are UTF-8")
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[test]
fn guest_sha256_matches_the_sha2_crate() {
    // Every padding case: empty, short, 55/56 (one vs two final blocks), block edges.
    let data: Vec<u8> = (0..1000u32).map(|i| (i * 31 + 7) as u8).collect();
    for len in [0, 1, 3, 55, 56, 57, 63, 64, 65, 119, 120, 128, 512, 1000] {
        let want: [u8; 32] = Sha256::digest(&data[..len]).into();
        assert_eq!(guest_sha256::sha256(&data[..len]), want, "length {len}");
    }
    assert_eq!(
        hex::encode(guest_sha256::sha256(b"abc")),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
}

#[test]
fn demo_greets_through_virtio_console() {
    // With a console device present the demo exits 0 only if the greeting went out
    // through the console's transmit queue (a failed console prints "console: ..." on
    // COM1 and exits 3), so status 0 plus the greeting on stdout is the end-to-end proof.
    let out = run_demo(&["--console"]);
    assert_eq!(lines_expecting(&out, 0), [GREETING]);
}

#[test]
fn demo_prints_32_random_bytes_from_virtio_rng_after_the_greeting() {
    let out = run_demo(&["--rng"]);
    let lines = lines_expecting(&out, 0);
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0], GREETING);
    let hex = lines[1].strip_prefix("rng: ").unwrap_or_else(|| panic!("{lines:?}"));
    assert!(is_hex(hex, 64), "{hex:?}");
    assert_ne!(hex, "0".repeat(64), "32 random bytes are not all zero");
}

#[test]
fn demo_hashes_sector_0_and_writes_the_pattern_to_sector_1() {
    let image = disk_image(64);
    let disk = temp_file("disk.img", &image);
    let out = run_demo(&["--disk", path_str(&disk)]);
    let lines = lines_expecting(&out, 0);
    let digest = hex::encode(Sha256::digest(&image[..512]));
    assert_eq!(
        lines,
        [GREETING.to_string(), format!("disk: sector 0 sha256 {digest}"), "disk: write/read-back ok".into()]
    );
    let after = std::fs::read(&disk).unwrap();
    assert_eq!(after.len(), image.len());
    assert_eq!(after[..512], image[..512], "sector 0 is only read");
    assert_eq!(after[512..1024], SECTOR1_PATTERN.repeat(32)[..], "sector 1 holds the pattern");
    assert_eq!(after[1024..], image[1024..], "nothing else is written");
}

#[test]
fn demo_leaves_a_read_only_disk_unchanged() {
    let image = disk_image(8);
    let disk = temp_file("ro.img", &image);
    let out = run_demo(&["--disk", &format!("{},ro", path_str(&disk))]);
    let lines = lines_expecting(&out, 0);
    let digest = hex::encode(Sha256::digest(&image[..512]));
    assert_eq!(lines, [GREETING.to_string(), format!("disk: sector 0 sha256 {digest}"), "disk: read-only".into()]);
    assert_eq!(std::fs::read(&disk).unwrap(), image);
}

#[test]
fn demo_reports_a_failed_disk_read_with_status_4() {
    // An empty image has no sector 0: the device answers the read with IOERR.
    let disk = temp_file("empty.img", &[]);
    let out = run_demo(&["--disk", path_str(&disk)]);
    let lines = lines_expecting(&out, 4);
    assert_eq!(lines[0], GREETING);
    assert!(lines[1].starts_with("disk: read of sector 0 failed"), "{lines:?}");
}

#[test]
fn demo_sends_its_message_to_the_host_over_vsock() {
    let socket = fresh_dir().join("vsock");
    let listener = UnixListener::bind(format!("{}_1234", socket.display())).unwrap();
    let server = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut got = Vec::new();
        // The guest shuts the connection down after its message: read to end of file.
        stream.read_to_end(&mut got).unwrap();
        got
    });
    let out = run_demo(&["--vsock", &format!("cid=3,socket={}", socket.display())]);
    assert_eq!(lines_expecting(&out, 0), [GREETING, "vsock: sent"]);
    assert_eq!(server.join().unwrap(), VSOCK_MESSAGE);
}

#[test]
fn demo_reports_a_vsock_port_nobody_listens_on_with_status_7() {
    let socket = fresh_dir().join("nobody");
    let out = run_demo(&["--vsock", &format!("cid=3,socket={}", socket.display())]);
    let lines = lines_expecting(&out, 7);
    assert_eq!(lines[0], GREETING);
    assert!(lines[1] == "vsock: connection refused" || lines[1] == "vsock: no response", "{lines:?}");
}

#[test]
fn demo_drives_every_device_in_order() {
    let image = disk_image(4);
    let disk = temp_file("all.img", &image);
    let socket = disk.with_file_name("vsock");
    let listener = UnixListener::bind(format!("{}_1234", socket.display())).unwrap();
    let server = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut got = Vec::new();
        stream.read_to_end(&mut got).unwrap();
        got
    });
    let out = run_demo(&[
        "--console",
        "--rng",
        "--disk",
        path_str(&disk),
        "--vsock",
        &format!("cid=7,socket={}", socket.display()),
    ]);
    let lines = lines_expecting(&out, 0);
    let digest = hex::encode(Sha256::digest(&image[..512]));
    assert_eq!(lines.len(), 5, "{lines:?}");
    assert_eq!(lines[0], GREETING);
    assert_eq!(lines[1], format!("disk: sector 0 sha256 {digest}"));
    assert_eq!(lines[2], "disk: write/read-back ok");
    assert!(lines[3].strip_prefix("rng: ").is_some_and(|h| is_hex(h, 64)), "{lines:?}");
    assert_eq!(lines[4], "vsock: sent");
    assert_eq!(server.join().unwrap(), VSOCK_MESSAGE);
}

#[test]
fn a_file_net_backend_is_opened_created_and_a_missing_rx_file_is_named() {
    let dir = fresh_dir();
    let tx = dir.join("frames");
    let _ = std::fs::remove_file(&tx);
    // The demo does not use the network: the device is created, its file opened.
    let out = run_demo(&["--console", "--net", &format!("file={}", path_str(&tx))]);
    assert_eq!(lines_expecting(&out, 0)[0], GREETING);
    assert_eq!(std::fs::metadata(&tx).expect("the tx file is created").len(), 0);

    let missing = dir.join("no-such-rx");
    let out = run_demo(&["--net", &format!("file={},rx={}", path_str(&tx), path_str(&missing))]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no-such-rx"), "{stderr}");
}

#[test]
fn a_ring_net_backend_creates_its_file_and_doorbell_and_a_bad_size_is_refused() {
    use std::os::unix::fs::FileTypeExt;
    let dir = fresh_dir();
    let ring = dir.join("ring");
    // The demo does not use the network: the device is created, its ring file made.
    let out = run_demo(&["--console", "--net", &format!("ring={},size=128K", path_str(&ring))]);
    assert_eq!(lines_expecting(&out, 0)[0], GREETING);
    let bytes = std::fs::read(&ring).expect("the ring file is created");
    assert_eq!(bytes.len(), 2 * (4096 + (128 << 10)));
    assert_eq!(&bytes[..8], b"CVMMRING");
    let kick = dir.join("ring.kick");
    assert!(std::fs::symlink_metadata(&kick).expect("the doorbell").file_type().is_fifo());

    let out = run_demo(&["--net", &format!("ring={},size=100000", path_str(&ring))]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("multiple of 4096"), "{stderr}");
}
