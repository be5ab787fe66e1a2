//! Test guest for the emulated TDX platform's asynchronous GetQuote: registers a
//! notification vector (SetupEventNotifyInterrupt), asks for a quote, asks again while
//! the first may still be in flight, and counts the notification interrupts.
//!
//! Run with `--tee tdx --emulated`. The interrupt arrives at the x2APIC (enabled here;
//! a real TD's is already) and its handler counts it. The second GetQuote must be
//! answered RETRY if the first is still in flight when it returns (the guest checks
//! this by reading the first buffer's status afterwards). Then one more request,
//! waited for with interrupts let in, must raise exactly one more notification. Exits
//! with status 0 (the second request was retried) or 0x51 (the first had completed
//! before the second was made; also correct); a failed check ends the VM through the
//! debug-exit port with its number. (A TD has no serial port: nothing is printed.)
#![no_std]
#![no_main]

#[path = "../../arch/src/abi.rs"]
#[allow(dead_code)]
mod abi;
#[path = "rt.rs"]
mod rt;

use core::arch::{asm, global_asm};
use core::sync::atomic::{AtomicU64, Ordering};

use abi::BootInfo;
use rt::tdx::tdcall::*;
use rt::tdx::{get_quote, rdtsc, shared_area, tdvmcall, wait_quote, QUOTE_WAIT_TICKS};
use rt::check;

const VECTOR: usize = 0x41;
const IA32_APIC_BASE: u32 = 0x1b;
const X2APIC_EOI: u32 = 0x80b;
const X2APIC_SVR: u32 = 0x80f;
const QUOTE_BUF_LEN: u64 = 0x8000;

/// Notification interrupts seen.
static NOTIFIED: AtomicU64 = AtomicU64::new(0);

#[repr(C, align(16))]
struct Idt([u64; 2 * (VECTOR + 1)]);

static mut IDT: Idt = Idt([0; 2 * (VECTOR + 1)]);

#[repr(C, align(1024))]
struct TdBuffers {
    report: [u8; 1024],
    report_data: [u8; 64],
}

static mut TD_BUFFERS: TdBuffers = TdBuffers { report: [0; 1024], report_data: [0x5c; 64] };

// The interrupt arrives with RSP 16-byte aligned and 40 bytes pushed: saving the nine
// caller-saved registers keeps the call aligned.
global_asm!(
    ".global quote_irq_entry",
    "quote_irq_entry:",
    "    push rax", "    push rcx", "    push rdx", "    push rsi", "    push rdi",
    "    push r8", "    push r9", "    push r10", "    push r11",
    "    call quote_irq",
    "    pop r11", "    pop r10", "    pop r9", "    pop r8",
    "    pop rdi", "    pop rsi", "    pop rdx", "    pop rcx", "    pop rax",
    "    iretq",
);

extern "C" {
    fn quote_irq_entry();
}

fn rdmsr(index: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: reads an architectural MSR this guest may read.
    unsafe { asm!("rdmsr", in("ecx") index, out("eax") lo, out("edx") hi, options(nomem, nostack)) };
    (u64::from(hi) << 32) | u64::from(lo)
}

fn wrmsr(index: u32, value: u64) {
    // SAFETY: writes the APIC MSRs this guest owns.
    unsafe { asm!("wrmsr", in("ecx") index, in("eax") value as u32, in("edx") (value >> 32) as u32, options(nostack)) };
}

#[no_mangle]
extern "C" fn quote_irq() {
    NOTIFIED.fetch_add(1, Ordering::SeqCst);
    wrmsr(X2APIC_EOI, 0);
}

/// Lets interrupts in for a moment; the asm may use the stack, so nothing of the
/// caller lives in the red zone an interrupt frame would overwrite.
fn interrupt_window() {
    // SAFETY: the IDT has a gate for the only vector that can arrive; interrupts are
    // off again when this returns.
    unsafe { asm!("sti", "pause", "pause", "cli") };
}

/// Waits (interrupts on, briefly) until at least `n` notifications have arrived, or
/// about 30 s; returns the count.
fn wait_notified(n: u64) -> u64 {
    let start = rdtsc();
    while NOTIFIED.load(Ordering::SeqCst) < n && rdtsc().wrapping_sub(start) < QUOTE_WAIT_TICKS {
        interrupt_window();
    }
    NOTIFIED.load(Ordering::SeqCst)
}

fn status(buf: u64) -> u64 {
    // SAFETY: `buf` is a shared GetQuote buffer of this guest, 8-byte aligned.
    unsafe { core::ptr::read_volatile((buf + 8) as *const u64) }
}

/// Writes a GetQuote request (version 1, status 0, the TD report) at `buf`.
fn request(buf: u64, report: &[u8; 1024]) {
    let mut header = [0u8; 24];
    header[0..8].copy_from_slice(&1u64.to_le_bytes());
    header[16..20].copy_from_slice(&1024u32.to_le_bytes());
    // SAFETY: `buf` is a shared buffer of QUOTE_BUF_LEN bytes this guest owns.
    unsafe {
        core::ptr::copy_nonoverlapping(header.as_ptr(), buf as *mut u8, 24);
        core::ptr::copy_nonoverlapping(report.as_ptr(), (buf + 24) as *mut u8, 1024);
    }
}

/// A completed buffer holds a version-4 TDX quote (TEE type 0x81) of a sane length.
fn quote_ok(buf: u64) -> bool {
    // SAFETY: as for `status`; the host wrote the quote before the status.
    let (len, version, tee) = unsafe {
        (
            core::ptr::read_volatile((buf + 20) as *const u32) as u64,
            core::ptr::read_volatile((buf + 24) as *const u16),
            core::ptr::read_volatile((buf + 28) as *const u32),
        )
    };
    status(buf) == GET_QUOTE_SUCCESS && len > 632 && len <= QUOTE_BUF_LEN - 24 && version == 4 && tee == 0x81
}

#[no_mangle]
extern "C" fn guest_main(_info: *const BootInfo, _zero_page: *const u8) -> ! {
    check(1, rt::tdx::is_tdx() && shared_area() != 0);

    // The gate, then the x2APIC: enabled (if the platform has not) and software-enabled.
    let handler = quote_irq_entry as usize as u64;
    let low = (handler & 0xffff) | (0x08 << 16) | (0x8e00u64 << 32) | ((handler & 0xffff_0000) << 32);
    // SAFETY: single-threaded guest code; the IDT is only read by the CPU.
    let idt_base = unsafe {
        let idt = &raw mut IDT;
        core::ptr::write_volatile(&raw mut (*idt).0[2 * VECTOR], low);
        core::ptr::write_volatile(&raw mut (*idt).0[2 * VECTOR + 1], handler >> 32);
        idt as u64
    };
    let mut idtr = [0u8; 10];
    idtr[..2].copy_from_slice(&((16 * (VECTOR + 1) - 1) as u16).to_le_bytes());
    idtr[2..].copy_from_slice(&idt_base.to_le_bytes());
    // SAFETY: the descriptor points at a valid IDT that lives for the whole program.
    unsafe { asm!("lidt [{}]", in(reg) idtr.as_ptr(), options(nostack)) };
    let base = rdmsr(IA32_APIC_BASE);
    if base & (1 << 10) == 0 {
        wrmsr(IA32_APIC_BASE, base | (1 << 11) | (1 << 10));
    }
    wrmsr(X2APIC_SVR, 0x1ff);
    check(2, tdvmcall(TDVMCALL_SETUP_EVENT_NOTIFY, VECTOR as u64, 0, 0, 0)[0] == TDVMCALL_SUCCESS);

    // A TD report, in both buffers' requests.
    let buffers = &raw mut TD_BUFFERS;
    // SAFETY: private statics, identity-mapped, aligned as TDG.MR.REPORT requires.
    let (report, data) = unsafe { ((*buffers).report.as_mut_ptr(), (*buffers).report_data.as_mut_ptr()) };
    check(3, rt::tdx::report(report as u64, data as u64) == TDX_SUCCESS);
    // SAFETY: the module wrote the 1024 bytes.
    let report = unsafe { &*(report as *const [u8; 1024]) };
    let (a, b) = (shared_area(), shared_area() + QUOTE_BUF_LEN);
    request(a, report);
    request(b, report);

    // Round 1: a second request while the first may be in flight.
    check(4, get_quote(a, QUOTE_BUF_LEN) == TDVMCALL_SUCCESS);
    let second = get_quote(b, QUOTE_BUF_LEN);
    let first_after = status(a);
    let retried = second == TDVMCALL_RETRY;
    if retried {
        // Retried: its buffer is untouched.
        check(5, status(b) == 0);
    } else {
        // Accepted: only allowed if the first had completed by then.
        check(6, second == TDVMCALL_SUCCESS && first_after != GET_QUOTE_IN_FLIGHT);
        check(7, wait_quote(b) == GET_QUOTE_SUCCESS && quote_ok(b));
    }
    check(8, wait_quote(a) == GET_QUOTE_SUCCESS && quote_ok(a));
    // At least one notification; two completions while interrupts were off may be one
    // (the APIC merges a vector already pending).
    check(9, wait_notified(1) >= 1);
    settle();
    let seen = NOTIFIED.load(Ordering::SeqCst);
    check(10, seen == 1 || (!retried && seen == 2));

    // Round 2: one request, waited for with interrupts let in: exactly one more.
    request(b, report);
    check(11, get_quote(b, QUOTE_BUF_LEN) == TDVMCALL_SUCCESS);
    check(12, wait_notified(seen + 1) == seen + 1);
    check(13, wait_quote(b) == GET_QUOTE_SUCCESS && quote_ok(b));
    settle();
    check(14, NOTIFIED.load(Ordering::SeqCst) == seen + 1);
    // Status 0: the second request of round 1 was retried; 0x51: it came too late.
    rt::exit(if retried { 0 } else { 0x51 });
}

/// Lets in any interrupt still on its way.
fn settle() {
    for _ in 0..1000 {
        interrupt_window();
    }
}
