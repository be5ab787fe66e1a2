//! The cvmm demo guest: a tiny no_std program `cvmm run` boots when no kernel is given.
//!
//! Entered in 64-bit mode with `RDI` = cvmm boot info and `RSI` = Linux zero page
//! (arch::regs::BootEntry::Long64). It prints a greeting with the vCPU count and memory
//! size from the boot information, then ends the VM through the debug-exit port with
//! status 0 (or 1 when the boot information is missing or malformed).
//!
//! Constraints: this host emulates CPL0 code at ~2 M instructions/s, so the whole boot
//! path is a few thousand instructions; no core::fmt, no SSE, no interrupts.
#![no_std]
#![no_main]

#[path = "../../arch/src/abi.rs"]
#[allow(dead_code)]
mod abi;
#[path = "rt.rs"]
mod rt;

use abi::BootInfo;
use rt::{exit, put_u64, puts};

#[no_mangle]
extern "C" fn guest_main(boot_info: *const BootInfo, _zero_page: *const u8) -> ! {
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
