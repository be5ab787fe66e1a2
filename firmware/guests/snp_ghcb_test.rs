//! Test guest for the emulated SEV-SNP platform: sends malformed GHCB requests and
//! checks that each gets the GHCB specification's error, without the VM ending.
//!
//! Run with `--tee snp --emulated`. Each check that fails ends the VM through the
//! debug-exit port with its number (1-13). When all pass, the guest asks to be
//! terminated with reason set 1, code 0x42 (GHCB page protocol), which the test
//! expects to see as the VM's end.
#![no_std]
#![no_main]

#[path = "../../arch/src/abi.rs"]
#[allow(dead_code)]
mod abi;
#[path = "rt.rs"]
mod rt;
#[path = "aes_gcm.rs"]
mod aes_gcm;
#[path = "snp_msg.rs"]
mod snp_msg;

use abi::BootInfo;
use rt::check;
use rt::snp::ghcb::*;
use rt::snp::{ghcb_begin, ghcb_call, ghcb_call_prepared, ghcb_read, ghcb_set, ghcb_write, msr_call, pvalidate, shared_area};

#[no_mangle]
extern "C" fn guest_main(info: *const BootInfo, _zero_page: *const u8) -> ! {
    // SAFETY: snp_start passes its own copy of the boot info.
    let info = unsafe { core::ptr::read_volatile(info) };
    let ghcb = shared_area();
    check(1, ghcb != 0);

    // 1. A GHCB usage other than 0.
    ghcb_begin(EXIT_HV_FEATURES, 0, 0);
    ghcb_write::<u16>(OFF_PROTOCOL_VERSION, GHCB_PROTOCOL_VERSION);
    ghcb_write::<u32>(OFF_GHCB_USAGE, 1);
    rt::snp::vmgexit();
    check(2, ghcb_read::<u64>(OFF_SW_EXIT_INFO_1) == EXITINFO1_ERROR);
    check(2, ghcb_read::<u64>(OFF_SW_EXIT_INFO_2) == ERR_INVALID_USAGE);

    // 2. Required fields not marked valid (IOIO OUT without RAX).
    ghcb_begin(EXIT_IOIO, (0x80 << IOIO_PORT_SHIFT) | IOIO_SZ8, 0);
    check(3, ghcb_call_prepared() == Err(ERR_MISSING_INPUT));

    // 3. An MMIO read whose scratch area is private memory (the guest program).
    ghcb_begin(EXIT_MMIO_READ, 0xd000_0000, 4);
    ghcb_set(OFF_SW_SCRATCH, 0x20_0000);
    check(4, ghcb_call_prepared() == Err(ERR_INVALID_SCRATCH_AREA));

    // 4. A GHCB page-state change for memory outside the guest.
    let outside = info.mem_size + 0x20_0000;
    ghcb_write::<u16>(OFF_SHARED_BUFFER, 0);
    ghcb_write::<u16>(OFF_SHARED_BUFFER + 2, 0);
    ghcb_write::<u64>(OFF_SHARED_BUFFER + PSC_HEADER_SIZE, psc_entry(outside >> 12, PSC_OP_SHARED, false));
    ghcb_begin(EXIT_PSC, 0, 0);
    ghcb_set(OFF_SW_SCRATCH, ghcb + OFF_SHARED_BUFFER as u64);
    check(5, ghcb_call_prepared() == Ok(PSC_ERR_INVALID_ENTRY));
    check(5, ghcb_read::<u16>(OFF_SHARED_BUFFER) == 0);

    // 5. The same through the MSR protocol.
    let resp = msr_call(MSR_PSC_REQ | ((outside >> 12) << 12) | (PSC_OP_SHARED << 52));
    check(6, resp & MSR_INFO_MASK == MSR_PSC_RESP && resp >> 32 != 0);

    // 6. An exit code the platform does not know.
    check(7, ghcb_call(0x8000_1234, 0, 0) == Err(ERR_INVALID_EVENT));

    // 7. A protocol version other than 2.
    ghcb_begin(EXIT_HV_FEATURES, 0, 0);
    ghcb_write::<u16>(OFF_PROTOCOL_VERSION, 1);
    ghcb_write::<u32>(OFF_GHCB_USAGE, 0);
    rt::snp::vmgexit();
    check(8, ghcb_read::<u64>(OFF_SW_EXIT_INFO_2) == ERR_INVALID_INPUT);

    // 8. A PSC header whose end index is beyond the structure.
    ghcb_write::<u16>(OFF_SHARED_BUFFER, 0);
    ghcb_write::<u16>(OFF_SHARED_BUFFER + 2, 300);
    ghcb_begin(EXIT_PSC, 0, 0);
    ghcb_set(OFF_SW_SCRATCH, ghcb + OFF_SHARED_BUFFER as u64);
    check(9, ghcb_call_prepared() == Ok(PSC_ERR_INVALID_HDR));

    // 9. An MMIO request aimed at guest RAM.
    ghcb_begin(EXIT_MMIO_READ, 0x20_0000, 4);
    ghcb_set(OFF_SW_SCRATCH, ghcb + OFF_SHARED_BUFFER as u64);
    check(10, ghcb_call_prepared() == Err(ERR_INVALID_INPUT));

    // 10. PVALIDATE with a page size that does not exist.
    let rc: u64;
    // SAFETY: PVALIDATE with RCX = 2 changes nothing; it fails with FAIL_INPUT.
    unsafe {
        core::arch::asm!(".byte 0xf2, 0x0f, 0x01, 0xff", inout("rax") 0x20_0000u64 => rc, in("rcx") 2u64, in("rdx") 1u64, options(nostack));
    }
    check(11, rc == PVALIDATE_FAIL_INPUT);
    // And a real one still works: an already validated page is "unchanged".
    check(11, pvalidate(0x20_0000, false, true) == (PVALIDATE_SUCCESS, true));

    // 11. An extended guest request whose certificate buffer is too small: INVALID_LEN,
    // and RBX says how many pages it needs (nothing is sent to the PSP).
    let (req, _resp, _certs) = rt::snp::request_pages();
    ghcb_begin(EXIT_EXT_GUEST_REQUEST, req, req + 0x1000);
    ghcb_set(OFF_RAX, ghcb + 0x4000);
    ghcb_set(OFF_RBX, 0);
    check(12, ghcb_call_prepared() == Ok(GUEST_REQ_ERR_INVALID_LEN));
    check(12, ghcb_read::<u64>(OFF_RBX) > 0);

    // 12. A guest message sent twice: the PSP answers the first and refuses the replay
    // (INVALID_PARAM) without answering it.
    let mut key = [0u8; 32];
    // SAFETY: the secrets page is the launch's private page; VMPCK0 is at 0x20.
    unsafe { core::ptr::copy_nonoverlapping((info.snp_secrets + 0x20) as *const u8, key.as_mut_ptr(), 32) };
    let mut channel = snp_msg::GuestChannel::new(&key, 0, 0);
    let mut page = [0u8; snp_msg::PAGE_SIZE];
    check(13, channel.build_report_request(&[7u8; 64], 0, &mut page).is_ok());
    // SAFETY: the request page is the firmware's shared page.
    unsafe { core::ptr::copy_nonoverlapping(page.as_ptr(), req as *mut u8, page.len()) };
    check(13, rt::snp::guest_request(false) == Ok(0));
    check(13, rt::snp::guest_request(false) == Ok(0x16));

    // All answered: ask for termination with a reason the test recognizes.
    let _ = ghcb_call(EXIT_TERM_REQUEST, (1 << 12) | (0x42 << 16), 0);
    rt::exit(12);
}
