//! The runtime every cvmm guest program shares: entry, port I/O, console output,
//! exit, panic handler, and the memory functions the compiler may call.
//!
//! Included with `#[path]` by each guest program, which defines
//! `#[no_mangle] extern "C" fn guest_main(boot_info: *const BootInfo, zero_page: *const u8) -> !`.
//! Guests run at CPL0 on hosts that emulate CPL0 code slowly and cannot emulate SSE,
//! so this code is built without SSE and kept to a few instructions per operation.
#![allow(dead_code)]

use core::arch::{asm, global_asm};

use crate::abi::{DEBUG_EXIT_PORT, SERIAL_PORT};

/// The SEV-SNP firmware and platform layer (the 32-bit entry of confidential launches).
#[path = "snp.rs"]
pub mod snp;
/// The TDX firmware and platform layer.
#[path = "tdx.rs"]
pub mod tdx;
/// ACPI tables: finding them, the MADT's wakeup mailbox, parking TDX APs.
#[path = "acpi.rs"]
pub mod acpi;
/// The TDX firmware's CC event log (the ACPI CCEL table's area).
#[path = "ccel.rs"]
pub mod ccel;

global_asm!(
    ".section .text.start, \"ax\"",
    ".global _start",
    "_start:",
    "    lea rsp, [rip + __stack_top]",
    "    xor ebp, ebp",
    "    call guest_main",
    "2:  hlt",
    "    jmp 2b",
);

/// Writes one byte to an I/O port (through the GHCB in an SNP guest).
pub fn outb(port: u16, value: u8) {
    if snp::active() {
        return snp::outb(port, value);
    }
    if tdx::is_tdx() {
        return tdx::outb(port, value);
    }
    // SAFETY: port I/O has no memory effects in this guest; cvmm handles the exit.
    unsafe { asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack, preserves_flags)) };
}

/// Reads one byte from an I/O port (through the GHCB in an SNP guest).
pub fn inb(port: u16) -> u8 {
    if snp::active() {
        return snp::inb(port);
    }
    let value: u8;
    // SAFETY: port I/O has no memory effects in this guest; cvmm handles the exit.
    unsafe { asm!("in al, dx", in("dx") port, out("al") value, options(nomem, nostack, preserves_flags)) };
    value
}

/// Reads a 32-bit device register (through the GHCB in an SNP guest).
pub fn mmio_read32(addr: u64) -> u32 {
    if snp::active() {
        return snp::mmio_read32(addr);
    }
    if tdx::is_tdx() {
        return tdx::mmio_read32(addr);
    }
    // SAFETY: `addr` is a device register in the identity-mapped MMIO hole.
    unsafe { core::ptr::read_volatile(addr as *const u32) }
}

/// Writes a 32-bit device register (through the GHCB in an SNP guest).
pub fn mmio_write32(addr: u64, v: u32) {
    if snp::active() {
        return snp::mmio_write32(addr, v);
    }
    if tdx::is_tdx() {
        return tdx::mmio_write32(addr, v);
    }
    // SAFETY: as for `mmio_read32`.
    unsafe { core::ptr::write_volatile(addr as *mut u32, v) }
}

/// Writes bytes to the serial console.
pub fn puts(s: &[u8]) {
    for &b in s {
        outb(SERIAL_PORT, b);
    }
}

/// Formats `v` in decimal into `buf`, returning the digits.
pub fn format_u64(mut v: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    &buf[i..]
}

/// Writes a number in decimal to the serial console.
pub fn put_u64(v: u64) {
    puts(format_u64(v, &mut [0u8; 20]));
}

/// A test guest's check: ends the VM with status `n` (the check's number) unless `ok`.
pub fn check(n: u8, ok: bool) {
    if !ok {
        exit(n);
    }
}

/// Ends the VM with `status` through the debug-exit port.
pub fn exit(status: u8) -> ! {
    outb(DEBUG_EXIT_PORT, status);
    loop {
        // SAFETY: halting with interrupts off parks the vCPU; cvmm has already ended the VM.
        unsafe { asm!("cli; hlt", options(nomem, nostack)) };
    }
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    puts(b"cvmm guest: panic\n");
    exit(2);
}

// The compiler may emit calls to these; there is no libc in the guest.
#[no_mangle]
unsafe extern "C" fn memcpy(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: the caller guarantees both ranges are valid and disjoint.
    unsafe { asm!("rep movsb", inout("rcx") n => _, inout("rdi") dst => _, inout("rsi") src => _, options(nostack)) };
    dst
}

#[no_mangle]
unsafe extern "C" fn memmove(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if (dst as usize) <= (src as usize) || (dst as usize) >= (src as usize) + n {
        // SAFETY: forward copy is correct when dst does not start inside src.
        return unsafe { memcpy(dst, src, n) };
    }
    let mut i = n;
    while i > 0 {
        i -= 1;
        // SAFETY: i < n; both ranges are valid per the caller.
        unsafe { core::ptr::write_volatile(dst.add(i), core::ptr::read_volatile(src.add(i))) };
    }
    dst
}

#[no_mangle]
unsafe extern "C" fn memset(dst: *mut u8, c: i32, n: usize) -> *mut u8 {
    // SAFETY: the caller guarantees the range is valid.
    unsafe { asm!("rep stosb", inout("rcx") n => _, inout("rdi") dst => _, in("al") c as u8, options(nostack)) };
    dst
}

#[no_mangle]
unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    for i in 0..n {
        // SAFETY: i < n; both ranges are valid per the caller.
        let (x, y) = unsafe { (core::ptr::read_volatile(a.add(i)), core::ptr::read_volatile(b.add(i))) };
        if x != y {
            return i32::from(x) - i32::from(y);
        }
    }
    0
}

#[no_mangle]
unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: forwarded unchanged.
    unsafe { memcmp(a, b, n) }
}

/// The prebuilt `core` for this target was compiled with unwinding and references the
/// personality routine; with `panic=abort` it is never called.
#[no_mangle]
extern "C" fn rust_eh_personality() {}
