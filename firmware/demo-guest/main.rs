//! The cvmm demo guest: a tiny no_std program `cvmm run` boots when no kernel is given.
//!
//! Entered in 64-bit mode with `RDI` = cvmm boot info and `RSI` = Linux zero page
//! (arch::regs::BootEntry::Long64). It prints a greeting with the vCPU count and memory
//! size from the boot information, then ends the VM through the debug-exit port with
//! status 0 (or 1 when the boot information is missing or malformed).
//!
//! Constraints: this host emulates CPL0 code at ~2 M instructions/s, so the whole boot
//! path is a few thousand instructions; no core::fmt, no SSE-heavy code, no interrupts.
#![no_std]
#![no_main]

#[path = "../../arch/src/abi.rs"]
#[allow(dead_code)]
mod abi;

use core::arch::{asm, global_asm};

use abi::{BootInfo, DEBUG_EXIT_PORT, SERIAL_PORT};

global_asm!(
    ".section .text.start, \"ax\"",
    ".global _start",
    "_start:",
    "    lea rsp, [rip + __stack_top]",
    "    xor ebp, ebp",
    "    call {main}",
    "2:  hlt",
    "    jmp 2b",
    main = sym demo_main,
);

fn outb(port: u16, value: u8) {
    // SAFETY: port I/O has no memory effects in this guest; cvmm handles the exit.
    unsafe { asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack, preserves_flags)) };
}

fn puts(s: &[u8]) {
    for &b in s {
        outb(SERIAL_PORT, b);
    }
}

fn put_u64(mut v: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    puts(&buf[i..]);
}

fn exit(status: u8) -> ! {
    outb(DEBUG_EXIT_PORT, status);
    loop {
        // SAFETY: halting with interrupts off parks the vCPU; cvmm has already ended the VM.
        unsafe { asm!("cli; hlt", options(nomem, nostack)) };
    }
}

extern "C" fn demo_main(boot_info: *const BootInfo, _zero_page: *const u8) -> ! {
    // Read the block once, by value (no double fetch of host-provided data).
    // SAFETY: cvmm maps the boot-info page; a bad pointer faults and cvmm reports it.
    let info = unsafe { core::ptr::read_volatile(boot_info) };
    if !info.is_valid() {
        puts(b"cvmm demo guest: no valid boot information\n");
        exit(1);
    }
    puts(b"Hello from the cvmm demo guest: ");
    put_u64(u64::from(info.vcpus));
    puts(if info.vcpus == 1 { b" vCPU, " } else { b" vCPUs, " });
    if info.mem_size % (1 << 20) == 0 {
        put_u64(info.mem_size >> 20);
        puts(b" MiB of memory\n");
    } else {
        put_u64(info.mem_size);
        puts(b" bytes of memory\n");
    }
    exit(0);
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    puts(b"cvmm demo guest: panic\n");
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
