//! Test guest: a minimal virtio-mmio driver for the virtio-rng device at the first
//! virtio slot (0xd0000000). It negotiates VERSION_1 + ACCESS_PLATFORM, sets up one
//! 16-entry queue in memory at 3 MiB, posts a 32-byte writable buffer, notifies the
//! device (KVM's ioeventfd wakes cvmm's device loop), polls the used ring, and prints
//! the bytes it got as hex. Exit status: 0 on success, 10 no device, 11 features
//! refused, 12 no answer, 13 bad used length, 14 no interrupt status.
#![no_std]
#![no_main]

#[path = "../../arch/src/abi.rs"]
#[allow(dead_code)]
mod abi;
#[path = "rt.rs"]
mod rt;

use abi::BootInfo;
use rt::{exit, put_u64, puts};

const BASE: usize = 0xd000_0000;
const DESC: usize = 0x30_0000;
const AVAIL: usize = 0x30_1000;
const USED: usize = 0x30_2000;
const BUF: usize = 0x30_3000;
const LEN: usize = 32;

fn rd(off: usize) -> u32 {
    // SAFETY: the virtio-mmio window is identity-mapped device memory.
    unsafe { core::ptr::read_volatile((BASE + off) as *const u32) }
}

fn wr(off: usize, v: u32) {
    // SAFETY: as above.
    unsafe { core::ptr::write_volatile((BASE + off) as *mut u32, v) }
}

fn poke<T>(addr: usize, v: T) {
    // SAFETY: identity-mapped guest RAM at 3 MiB that nothing else uses.
    unsafe { core::ptr::write_volatile(addr as *mut T, v) }
}

fn peek<T: Copy>(addr: usize) -> T {
    // SAFETY: as above.
    unsafe { core::ptr::read_volatile(addr as *const T) }
}

fn hex(b: u8) {
    const D: &[u8; 16] = b"0123456789abcdef";
    puts(&[D[(b >> 4) as usize], D[(b & 15) as usize]]);
}

#[no_mangle]
extern "C" fn guest_main(_boot_info: *const BootInfo, _zero_page: *const u8) -> ! {
    if rd(0x000) != 0x7472_6976 || rd(0x008) != 4 {
        puts(b"virtio-rng: no device\n");
        exit(10);
    }
    wr(0x070, 0); // reset
    wr(0x070, 1); // ACKNOWLEDGE
    wr(0x070, 3); // DRIVER
    wr(0x024, 0);
    wr(0x020, 0);
    wr(0x024, 1);
    wr(0x020, 0x3); // VERSION_1 | ACCESS_PLATFORM (bits 32, 33)
    wr(0x070, 3 | 8);
    if rd(0x070) & 8 == 0 {
        puts(b"virtio-rng: features refused\n");
        exit(11);
    }
    wr(0x030, 0);
    wr(0x038, 16);
    for (off, addr) in [(0x080, DESC), (0x090, AVAIL), (0x0a0, USED)] {
        wr(off, addr as u32);
        wr(off + 4, 0);
    }
    wr(0x044, 1);
    wr(0x070, 3 | 8 | 4); // DRIVER_OK

    // One writable descriptor, then publish it in the available ring.
    poke::<u64>(DESC, BUF as u64);
    poke::<u32>(DESC + 8, LEN as u32);
    poke::<u16>(DESC + 12, 2); // VRING_DESC_F_WRITE
    poke::<u16>(DESC + 14, 0);
    poke::<u16>(AVAIL + 4, 0); // ring[0] = descriptor 0
    poke::<u16>(AVAIL + 2, 1); // idx
    wr(0x050, 0); // QueueNotify(0)

    let mut spins: u32 = 0;
    while peek::<u16>(USED + 2) != 1 {
        spins += 1;
        if spins > 2_000_000 {
            puts(b"virtio-rng: no answer\n");
            exit(12);
        }
    }
    let used_len: u32 = peek(USED + 8);
    if used_len as usize != LEN {
        puts(b"virtio-rng: bad used length ");
        put_u64(u64::from(used_len));
        puts(b"\n");
        exit(13);
    }
    if rd(0x060) & 1 == 0 {
        puts(b"virtio-rng: no interrupt status\n");
        exit(14);
    }
    wr(0x064, 1);
    puts(b"virtio-rng: ");
    put_u64(LEN as u64);
    puts(b" bytes ");
    for i in 0..LEN {
        hex(peek::<u8>(BUF + i));
    }
    puts(b"\n");
    exit(0);
}
