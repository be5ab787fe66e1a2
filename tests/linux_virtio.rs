//! Linux's own virtio drivers, clients no one here wrote, against cvmm's devices: one
//! boot of the test kernel with virtio-console, virtio-blk (a disk with a partition
//! table made here) and virtio-rng on its command line.

mod common;

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
    let wanted = [
        "printk: console [hvc0] enabled",
        "virtio_blk virtio1: [vda] 16384 512-byte logical blocks (8.39 MB/8.00 MiB)",
        " vda: vda1",
    ];
    let args = ["--log-level", "debug", "--memory", "256M", "--console", "--rng", "--cmdline", CMDLINE, "--disk"];
    let mut args: Vec<&str> = args.to_vec();
    args.push(disk.to_str().unwrap());
    let boot = common::boot_linux_until(&args, |lines| wanted.iter().all(|w| lines.iter().any(|l| l == w)));
    let (lines, err) = (boot.lines, boot.stderr);
    for w in wanted {
        assert!(lines.iter().any(|l| l == w), "Linux never printed {w:?}; console:\n{}", lines.join("\n"));
    }
    // hw_random reads from a device as soon as it registers (add_early_randomness).
    assert!(err.contains("virtio-rng: request"), "virtio-rng never served the guest; stderr:\n{err}");
}
