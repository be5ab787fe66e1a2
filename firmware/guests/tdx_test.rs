//! Test guest for the emulated TDX platform: sends malformed TDCALLs and TDVMCALLs and
//! checks that each gets the GHCI's (or the TDX module's) status, without the VM ending.
//!
//! Run with `--tee tdx --emulated`. A check that fails ends the VM through the
//! debug-exit port with its number; when all pass, the guest reports a fatal error with
//! code 0x42 (TDVMCALL ReportFatalError), which the test expects as the VM's end.
#![no_std]
#![no_main]

#[path = "../../arch/src/abi.rs"]
#[allow(dead_code)]
mod abi;
#[path = "rt.rs"]
mod rt;

use abi::BootInfo;
use rt::check;
use rt::tdx::tdcall::*;
use rt::tdx::{shared_area, tdcall, tdvmcall};

#[no_mangle]
extern "C" fn guest_main(info: *const BootInfo, _zero_page: *const u8) -> ! {
    // SAFETY: tdx_start passes its own copy of the boot info.
    let info = unsafe { core::ptr::read_volatile(info) };
    check(1, rt::tdx::is_tdx() && shared_area() != 0);
    let outside = info.mem_size + 0x20_0000;

    // MapGPA: outside guest memory, misaligned, empty.
    check(2, tdvmcall(TDVMCALL_MAP_GPA, outside | SHARED_BIT_GPAW48, 0x1000, 0, 0)[0] == TDVMCALL_INVALID_OPERAND);
    check(3, tdvmcall(TDVMCALL_MAP_GPA, 0x60_0800 | SHARED_BIT_GPAW48, 0x1000, 0, 0)[0] == TDVMCALL_ALIGN_ERROR);
    check(4, tdvmcall(TDVMCALL_MAP_GPA, 0x60_0000, 0, 0, 0)[0] == TDVMCALL_INVALID_OPERAND);
    // A long range: RETRY with where to resume (then done, as the firmware's loop does).
    let r = tdvmcall(TDVMCALL_MAP_GPA, 0x100_0000 | SHARED_BIT_GPAW48, 0x40_0000, 0, 0);
    check(5, r[0] == TDVMCALL_RETRY && r[1] == (0x120_0000 | SHARED_BIT_GPAW48));
    check(5, rt::tdx::map_gpa(0x100_0000, 0x40_0000, false));

    // GetQuote: a private buffer (no shared bit), one too small, one out of range.
    let buf = shared_area() + 0x8000;
    check(6, tdvmcall(TDVMCALL_GET_QUOTE, buf, 0x2000, 0, 0)[0] == TDVMCALL_INVALID_OPERAND);
    check(7, tdvmcall(TDVMCALL_GET_QUOTE, buf | SHARED_BIT_GPAW48, 0, 0, 0)[0] == TDVMCALL_INVALID_OPERAND);
    check(8, tdvmcall(TDVMCALL_GET_QUOTE, outside | SHARED_BIT_GPAW48, 0x2000, 0, 0)[0] == TDVMCALL_INVALID_OPERAND);
    // A shared GPA whose page is private memory (the guest program).
    check(9, tdvmcall(TDVMCALL_GET_QUOTE, 0x20_0000 | SHARED_BIT_GPAW48, 0x2000, 0, 0)[0] == TDVMCALL_INVALID_OPERAND);

    // Unknown TDVMCALL sub-function and TDCALL leaf; a bad event-notify vector.
    check(10, tdvmcall(0x1_ffff, 0, 0, 0, 0)[0] == TDVMCALL_INVALID_OPERAND);
    check(11, tdcall(99, 0, 0, 0)[0] == TDX_OPERAND_INVALID);
    check(12, tdvmcall(TDVMCALL_SETUP_EVENT_NOTIFY, 5, 0, 0, 0)[0] == TDVMCALL_INVALID_OPERAND);
    check(12, tdvmcall(TDVMCALL_SETUP_EVENT_NOTIFY, 0xf0, 0, 0, 0)[0] == TDVMCALL_SUCCESS);

    // ACCEPT: 2 MiB answers SIZE_MISMATCH (4 KiB mappings), an accepted page ALREADY.
    check(13, tdcall(TDG_MEM_PAGE_ACCEPT, 0x80_0000 | ACCEPT_2M, 0, 0)[0] == TDX_PAGE_SIZE_MISMATCH);
    check(13, tdcall(TDG_MEM_PAGE_ACCEPT, 0x20_0000 | ACCEPT_4K, 0, 0)[0] == TDX_PAGE_ALREADY_ACCEPTED);
    // RTMR.EXTEND from shared memory or of RTMR 4: refused.
    check(14, tdcall(TDG_MR_RTMR_EXTEND, buf, 3, 0)[0] == TDX_OPERAND_INVALID);
    check(14, tdcall(TDG_MR_RTMR_EXTEND, 0x20_0000, 4, 0)[0] == TDX_OPERAND_INVALID);

    // All answered: report a fatal error the test recognizes.
    tdvmcall(TDVMCALL_REPORT_FATAL_ERROR, 0x42, 0, 0, 0);
    rt::exit(15);
}
