//! cvmm's Intel TDX guest firmware and platform layer, shared by every cvmm guest
//! program (included by `rt.rs`; the 32-bit entry stub is in `snp.rs`).
//!
//! # Boot
//! Every vCPU starts at the reset vector at once (a jump to the program's 32-bit entry),
//! in 32-bit protected mode with `ESI` = its index and `RCX` = the TD HOB. The BSP builds
//! the page tables (private GPAs as they are, shared ones with bit 47) and releases the
//! application processors, which enter long mode on them and wait. [`tdx_start`] then
//! accepts all the memory it hands over (TDG.MEM.PAGE.ACCEPT, 2 MiB with a 4 KiB
//! fallback: upstream KVM maps TD private memory with 4 KiB pages), spread over every
//! vCPU; converts the bounce region to shared (MapGPA); and runs the guest program.
//! The APs, once their share is accepted, park in the ACPI wakeup-mailbox loop
//! (`acpi.rs`); RTMR extends made through [`rtmr_extend_logged`] are recorded in the CC
//! event log (`ccel.rs`).
//!
//! # Platform interface
//! TDCALL is the real instruction everywhere: on this project's hosts it ends in an
//! emulation-failure exit that carries its bytes, which is how cvmm's emulated TDX
//! platform sees it. Port and MMIO accesses go through TDVMCALL (the instruction exits
//! of the GHCI), as a TD's #VE handler would send them.
#![allow(dead_code)]

use core::arch::asm;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};

#[path = "../../arch/src/tdcall.rs"]
pub mod tdcall;

use crate::abi::BootInfo;
use tdcall::*;

const TWO_MIB: u64 = 0x20_0000;
const FOUR_KIB: u64 = 0x1000;
const MMIO_HOLE_START: u64 = 0xc000_0000;

static TDX: AtomicBool = AtomicBool::new(false);
/// Released by the BSP when the share plan is set: the APs accept their part.
static ACCEPT_GO: AtomicU8 = AtomicU8::new(0);
/// Start of the firmware's shared area (GetQuote buffer), the bounce region's start.
static SHARED_AREA: AtomicU64 = AtomicU64::new(0);

/// Whether this guest is a TD (set by the BSP in [`tdx_start`] before anything uses it).
pub fn is_tdx() -> bool {
    TDX.load(Ordering::Relaxed)
}

/// The firmware's shared area (its first 64 KiB of the bounce region), or 0.
pub fn shared_area() -> u64 {
    SHARED_AREA.load(Ordering::Relaxed)
}

/// TDCALL with leaf `rax` and inputs RCX, RDX, R8: returns RAX (status), RCX, RDX,
/// R8, R9.
pub fn tdcall(rax: u64, rcx: u64, rdx: u64, r8: u64) -> [u64; 5] {
    let (a, c, d, r8o, r9o): (u64, u64, u64, u64, u64);
    // SAFETY: TDCALL hands control to the TDX module (emulated or real) and returns; it
    // writes only the registers named here and the memory the leaf's operands name.
    unsafe {
        asm!(".byte 0x66, 0x0f, 0x01, 0xcc",
             inout("rax") rax => a, inout("rcx") rcx => c, inout("rdx") rdx => d,
             inout("r8") r8 => r8o, out("r9") r9o, options(nostack));
    }
    [a, c, d, r8o, r9o]
}

/// A standard TDVMCALL: sub-function `r11` with R12-R15; returns R10 (status), R11,
/// R12, R13, R14, R15.
pub fn tdvmcall(r11: u64, r12: u64, r13: u64, r14: u64, r15: u64) -> [u64; 6] {
    let (r10o, r11o, r12o, r13o, r14o, r15o): (u64, u64, u64, u64, u64, u64);
    // SAFETY: TDG.VP.VMCALL exposes R10-R15 (RCX bitmap 0xfc00) to the host and returns
    // its answers in them.
    unsafe {
        asm!(".byte 0x66, 0x0f, 0x01, 0xcc",
             inout("rax") TDG_VP_VMCALL => _, inout("rcx") 0xfc00u64 => _,
             inout("r10") TDVMCALL_STANDARD => r10o, inout("r11") r11 => r11o,
             inout("r12") r12 => r12o, inout("r13") r13 => r13o,
             inout("r14") r14 => r14o, inout("r15") r15 => r15o, options(nostack));
    }
    [r10o, r11o, r12o, r13o, r14o, r15o]
}

/// Ends the TD with `code` (TDVMCALL ReportFatalError); never returns.
pub fn fatal(code: u64) -> ! {
    loop {
        tdvmcall(TDVMCALL_REPORT_FATAL_ERROR, code, 0, 0, 0);
        core::hint::spin_loop();
    }
}

/// Port output through TDVMCALL<IO>.
pub fn outb(port: u16, value: u8) {
    tdvmcall(EXIT_REASON_IO, 1, 1, u64::from(port), u64::from(value));
}

/// A 32-bit MMIO read through TDVMCALL<EPT violation>.
pub fn mmio_read32(gpa: u64) -> u32 {
    let r = tdvmcall(EXIT_REASON_EPT_VIOLATION, 4, 0, gpa, 0);
    if r[0] != TDVMCALL_SUCCESS {
        fatal(0x20);
    }
    r[1] as u32
}

/// A 32-bit MMIO write through TDVMCALL<EPT violation>.
pub fn mmio_write32(gpa: u64, v: u32) {
    if tdvmcall(EXIT_REASON_EPT_VIOLATION, 4, 1, gpa, u64::from(v))[0] != TDVMCALL_SUCCESS {
        fatal(0x21);
    }
}

/// Accepts the 2 MiB pages `n` of `[start, end)` with `n % stride == which`, each 2 MiB
/// at once or, where the host maps 4 KiB pages, page by page.
pub fn accept_strided(start: u64, end: u64, which: u64, stride: u64) -> bool {
    let mut at = start;
    while at < end {
        if (at / TWO_MIB) % stride == which {
            match tdcall(TDG_MEM_PAGE_ACCEPT, at | ACCEPT_2M, 0, 0)[0] {
                TDX_SUCCESS | TDX_PAGE_ALREADY_ACCEPTED => {}
                TDX_PAGE_SIZE_MISMATCH => {
                    let mut page = at;
                    while page < at + TWO_MIB {
                        match tdcall(TDG_MEM_PAGE_ACCEPT, page | ACCEPT_4K, 0, 0)[0] {
                            TDX_SUCCESS | TDX_PAGE_ALREADY_ACCEPTED => {}
                            _ => return false,
                        }
                        page += FOUR_KIB;
                    }
                }
                _ => return false,
            }
        }
        at += TWO_MIB;
    }
    true
}

/// MapGPA `[gpa, gpa + len)` to shared (`shared`) or private, following RETRY answers.
pub fn map_gpa(gpa: u64, len: u64, shared: bool) -> bool {
    let bit = if shared { SHARED_BIT_GPAW48 } else { 0 };
    let (mut at, end) = (gpa, gpa + len);
    while at < end {
        let r = tdvmcall(TDVMCALL_MAP_GPA, at | bit, end - at, 0, 0);
        match r[0] {
            TDVMCALL_SUCCESS => return true,
            TDVMCALL_RETRY => {
                let next = r[1] & !SHARED_BIT_GPAW48;
                if next <= at || next > end {
                    return false;
                }
                at = next;
            }
            _ => return false,
        }
    }
    true
}

/// The BSP's TD preparation, then the guest program. Fatal error codes: 0x30 accept,
/// 0x31 MapGPA, 0x32 TD info.
pub fn tdx_start(mut info: BootInfo) -> ! {
    TDX.store(true, Ordering::Relaxed);
    let vp = tdcall(TDG_VP_INFO, 0, 0, 0);
    // RCX[5:0] = GPAW; R8[31:0] = number of vCPUs.
    if vp[0] != TDX_SUCCESS || vp[1] & 0x3f != 48 {
        fatal(0x32);
    }
    let vcpus = (vp[3] & 0xffff_ffff).clamp(1, super::snp::MAX_VCPUS);
    let bounce = (info.bounce_base, info.bounce_base + info.bounce_size);
    let top = info.mem_size.min(MMIO_HOLE_START) & !(TWO_MIB - 1);
    super::snp::set_share_plan(top, bounce, vcpus);
    acpi_setup(&info);
    if !super::snp::validate_first(TWO_MIB) {
        fatal(0x30);
    }
    ACCEPT_GO.store(1, Ordering::Release);
    if !super::snp::validate_share(0, vcpus) {
        fatal(0x30);
    }
    for i in 1..vcpus as usize {
        loop {
            match super::snp::AP_DONE[i].load(Ordering::Acquire) {
                0 => core::hint::spin_loop(),
                1 => break,
                _ => fatal(0x30),
            }
        }
    }
    if !map_gpa(bounce.0, bounce.1 - bounce.0, true) {
        fatal(0x31);
    }
    SHARED_AREA.store(bounce.0, Ordering::Relaxed);
    info.bounce_base += super::snp::FIRMWARE_SHARED;
    info.bounce_size -= super::snp::FIRMWARE_SHARED;
    crate::guest_main(&info, core::ptr::null())
}

/// A TDX application processor, in long mode on the BSP's page tables: accepts its
/// share once the BSP has set it, reports, and halts for good.
#[no_mangle]
extern "C" fn tdx_ap_main(index: u64) {
    TDX.store(true, Ordering::Relaxed);
    while ACCEPT_GO.load(Ordering::Acquire) == 0 {
        core::hint::spin_loop();
    }
    let ok = super::snp::validate_share(index, super::snp::share_stride());
    super::snp::AP_DONE[index as usize % super::snp::MAX_VCPUS as usize].store(if ok { 1 } else { 2 }, Ordering::Release);
    // Wait in the ACPI wakeup-mailbox loop (or halt for good without a mailbox).
    super::acpi::park_ap(index as u32)
}

/// BSP, before the APs are released: where they park (the MADT's wakeup mailbox) and
/// the start of the CC event log (the CCEL table's area).
fn acpi_setup(info: &BootInfo) {
    let emulated = info.flags & crate::abi::FLAG_EMULATED_PLATFORM != 0;
    super::acpi::set_parking(super::acpi::mp_wakeup_mailbox(info.acpi_rsdp), emulated);
    super::ccel::init(info.acpi_rsdp);
}

/// [`rtmr_extend`], then, when it succeeded, an entry in the CC event log (MR index
/// `index` + 1, `event_type`, the 48 bytes at `data`, `event` as the event data).
pub fn rtmr_extend_logged(index: u64, data: u64, event_type: u32, event: &[u8]) -> u64 {
    let rc = rtmr_extend(index, data);
    if rc == TDX_SUCCESS {
        // SAFETY: `data` is the 48-byte private buffer the TDX module just read.
        let digest = unsafe { core::ptr::read_volatile(data as *const [u8; 48]) };
        super::ccel::record(index as u32 + 1, event_type, &digest, event);
    }
    rc
}

/// TDG.MR.RTMR.EXTEND of RTMR `index` with the 48 bytes at `data` (64-byte aligned,
/// private). Private: every extend goes through [`rtmr_extend_logged`], so the CC event
/// log records it.
fn rtmr_extend(index: u64, data: u64) -> u64 {
    tdcall(TDG_MR_RTMR_EXTEND, data, index, 0)[0]
}

/// TDG.MR.REPORT: the TDREPORT_STRUCT for `report_data` (64-byte aligned) written at
/// `report` (1024-byte aligned), both private.
pub fn report(report: u64, report_data: u64) -> u64 {
    tdcall(TDG_MR_REPORT, report, report_data, 0)[0]
}

/// TDVMCALL<GetQuote> with the shared buffer at `buf` (`len` bytes); returns R10.
pub fn get_quote(buf: u64, len: u64) -> u64 {
    tdvmcall(TDVMCALL_GET_QUOTE, buf | SHARED_BIT_GPAW48, len, 0, 0)[0]
}

/// The time-stamp counter (TDX virtualizes RDTSC; no exit).
pub fn rdtsc() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: RDTSC only reads the counter into EDX:EAX.
    unsafe { asm!("rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags)) };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// About 30 s of TSC ticks at 1 GHz or more: how long a GetQuote may stay in flight.
pub const QUOTE_WAIT_TICKS: u64 = 1 << 35;

/// Waits until the GetQuote buffer at `buf` (its header's status, a u64 at offset 8)
/// is no longer IN_FLIGHT, polling the shared page; returns the status (still
/// IN_FLIGHT after [`QUOTE_WAIT_TICKS`]). The quote the host wrote before the status
/// may be read once this returns something else.
pub fn wait_quote(buf: u64) -> u64 {
    let start = rdtsc();
    loop {
        // SAFETY: `buf` is the caller's shared GetQuote buffer, 8-byte aligned.
        let status = unsafe { core::ptr::read_volatile((buf + 8) as *const u64) };
        if status != GET_QUOTE_IN_FLIGHT || rdtsc().wrapping_sub(start) > QUOTE_WAIT_TICKS {
            core::sync::atomic::fence(Ordering::Acquire);
            return status;
        }
        core::hint::spin_loop();
    }
}
