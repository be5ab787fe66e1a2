//! Linux's own virtio drivers, clients no one here wrote, against cvmm's devices: one
//! boot of the test kernel with virtio-console, virtio-blk (a disk with a partition
//! table made here) and virtio-rng on its command line.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

const CMDLINE: &str = "console=ttyS0 console=hvc0 earlyprintk=serial noxsave nofsgsbase clearcpuid=308,151,59,534,298";
const DISK_BYTES: usize = 8 << 20;

/// An 8 MiB disk whose MBR has one Linux partition from sector 2048 to the end.
fn disk_with_partition_table() -> std::path::PathBuf {
    let mut img = vec![0u8; DISK_BYTES];
    let (start, sectors) = (2048u32, (DISK_BYTES / 512) as u32 - 2048);
    let entry = &mut img[446..462];
    entry[4] = 0x83; // Linux
    entry[8..12].copy_from_slice(&start.to_le_bytes());
    entry[12..16].copy_from_slice(&sectors.to_le_bytes());
    img[510] = 0x55;
    img[511] = 0xaa;
    common::temp_file("mbr.img", &img)
}

#[test]
fn linux_drivers_probe_cvmms_virtio_console_blk_and_rng() {
    let disk = disk_with_partition_table();
    let mut child = common::cvmm()
        .args(["--log-level", "debug", "run", "--timeout", "300", "--memory", "256M", "--console", "--rng"])
        .arg("--disk")
        .arg(&disk)
        .args(["--cmdline", CMDLINE, "--kernel"])
        .arg(common::test_kernel())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let wanted = [
        "printk: console [hvc0] enabled",
        "virtio_blk virtio1: [vda] 16384 512-byte logical blocks (8.39 MB/8.00 MiB)",
        " vda: vda1",
    ];
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut lines = Vec::new();
    while !wanted.iter().all(|w| lines.iter().any(|l: &String| l == w)) {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => lines.push(line),
            Err(_) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let err = err_reader.join().unwrap();
    for w in wanted {
        assert!(lines.iter().any(|l| l == w), "Linux never printed {w:?}; console:\n{}", lines.join("\n"));
    }
    // hw_random reads from a device as soon as it registers (add_early_randomness).
    assert!(err.contains("virtio-rng: request"), "virtio-rng never served the guest; stderr:\n{err}");
}
