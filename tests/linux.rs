//! A real Linux kernel, a client no one here wrote, checks cvmm's boot protocol.
//!
//! - The tiny test kernel (scripts/build-test-kernel.sh) boots through its PVH entry;
//!   its console output must show its version, exactly the command line cvmm passed,
//!   and exactly the e820 map cvmm built for --memory.
//! - Debian's stock bzImage (scripts/fetch-debian-kernel.sh) is parsed and placed by
//!   the loader (it is too slow to boot on a host that emulates CPL0 code).
//!
//! Both images are prepared by scripts/test.sh; a missing image fails these tests
//! with the command that makes it (they are never skipped).

mod common;

use std::io::Cursor;

use arch::layout::{MemoryLayout, E820_RAM};
use firmware::kernel::{load_kernel, KernelKind};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

const CMDLINE: &str =
    "console=ttyS0 earlyprintk=serial noxsave nofsgsbase clearcpuid=308,151,59,534,298 cvmm.test=e820-check";

/// Boots the test kernel and returns its console lines up to the end of the e820 map
/// (the first line after the "BIOS-e820" block), then stops the VM.
fn boot_linux_until_e820_printed(memory: &str) -> Vec<String> {
    let after_map = |lines: &[String]| {
        let n = lines.len();
        n >= 2 && !lines[n - 1].starts_with("BIOS-e820") && lines[n - 2].starts_with("BIOS-e820")
    };
    common::boot_linux_until(&["--memory", memory, "--cmdline", CMDLINE], after_map).lines
}

/// Parses "BIOS-e820: [mem 0x...-0x...] usable" lines into (start, end inclusive, type).
fn printed_e820(lines: &[String]) -> Vec<(u64, u64, String)> {
    lines
        .iter()
        .filter_map(|l| l.strip_prefix("BIOS-e820: [mem "))
        .map(|rest| {
            let (range, kind) = rest.split_once("] ").unwrap();
            let (a, b) = range.split_once('-').unwrap();
            let hex = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).unwrap();
            (hex(a), hex(b), kind.trim().to_string())
        })
        .collect()
}

fn check_boot(memory: &str, mem_bytes: u64) {
    let lines = boot_linux_until_e820_printed(memory);
    assert!(lines.iter().any(|l| l.starts_with("Linux version 6.")), "no version line:\n{}", lines.join("\n"));
    assert!(
        lines.iter().any(|l| l == &format!("Command line: {CMDLINE}")),
        "command line not echoed exactly:\n{}",
        lines.join("\n")
    );
    let expected: Vec<(u64, u64, String)> = MemoryLayout::new(mem_bytes)
        .unwrap()
        .e820()
        .iter()
        .map(|e| (e.addr, e.addr + e.size - 1, if e.kind == E820_RAM { "usable" } else { "reserved" }.to_string()))
        .collect();
    assert_eq!(printed_e820(&lines), expected, "Linux's view of the e820 map differs from cvmm's");
    let usable: u64 = expected.iter().filter(|e| e.2 == "usable").map(|e| e.1 - e.0 + 1).sum();
    assert_eq!(usable, mem_bytes - 0x60400, "usable RAM is --memory minus the EBDA/legacy hole");
}

#[test]
fn linux_boots_via_pvh_with_cvmms_cmdline_and_e820_map() {
    check_boot("256M", 256 << 20);
    // Above 3 GiB the map splits around the MMIO hole.
    check_boot("4G", 4 << 30);
}

#[test]
fn debian_bzimage_is_parsed_and_placed() {
    let path = common::debian_bzimage();
    let image = std::fs::read(&path).unwrap();
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 512 << 20)]).unwrap();
    let k = load_kernel(&mem, &mut Cursor::new(&image)).unwrap();
    let hdr = k.setup_header.expect("a bzImage has a setup header");
    assert_eq!(k.kind, KernelKind::BzImage { entry: 0x10_0200 }, "64-bit entry at code32_start + 0x200");
    assert!(hdr.version >= 0x020c, "boot protocol {:#x}", { hdr.version });
    assert_ne!(hdr.xloadflags & 1, 0, "XLF_KERNEL_64");
    // The protected-mode payload sits at 1 MiB, byte for byte.
    let setup = (usize::from(hdr.setup_sects) + 1) * 512;
    let mut placed = vec![0u8; image.len() - setup];
    mem.read_slice(&mut placed, GuestAddress(0x10_0000)).unwrap();
    assert!(placed == image[setup..], "payload at 1 MiB differs from the file");
    // The kernel's working area (pref_address + init_size) is reserved from the initrd.
    assert!(k.end >= hdr.pref_address + u64::from(hdr.init_size));
    let layout = MemoryLayout::new(512 << 20).unwrap();
    let initrd = firmware::kernel::place_initrd(&layout, &k, 8 << 20).unwrap();
    assert!(initrd >= k.end && initrd + (8 << 20) <= 512 << 20);
    // The zero page carries the kernel's own header with the loader fields filled.
    let blobs = arch::boot::BootBlobs { cmdline_addr: 0x20000, cmdline_len: 13, initrd: Some((initrd, 8 << 20)) };
    let (_, zp) = arch::boot::zero_page(Some(hdr), &blobs, &layout.e820());
    assert_eq!(&zp[0x202..0x206], b"HdrS");
    assert_eq!(u16::from_le_bytes([zp[0x206], zp[0x207]]), { hdr.version });
    assert_eq!(u32::from_le_bytes(zp[0x218..0x21c].try_into().unwrap()) as u64, initrd);
}

#[test]
fn debian_bzimage_builds_into_a_runnable_vm() {
    let config = vmm::VmConfig {
        kernel: vmm::KernelSource::File(common::debian_bzimage()),
        memory: 512 << 20,
        cmdline: Some("console=ttyS0".into()),
        ..Default::default()
    };
    let vm = vmm::build_vm(&config, Box::new(std::io::sink())).unwrap();
    assert_eq!(vm.backend_name(), "plain KVM");
}
