//! The guest side of cvmm's ACPI tables (included by `rt.rs`): finding a table from
//! the RSDP the boot information names, the MADT's CPUs and its multiprocessor wakeup
//! mailbox, and the TDX firmware's parking loop for application processors.
//!
//! # The wakeup mailbox (ACPI 6.4 5.2.12.19)
//! One 4 KiB page: `Command` u16 at 0 (0 noop, 1 wakeup), reserved u16, `ApicId` u32 at
//! 4, `WakeupVector` u64 at 8, then the OS's area (16..0x800) and the firmware's
//! (0x800..0x1000). A parked application processor polls it; when `Command` is 1 and
//! `ApicId` is its own, it reads `WakeupVector`, clears `Command` (the acknowledgement
//! the OS waits for) and jumps to the vector in long mode, interrupts disabled, on the
//! firmware's identity-mapped page tables, with flat selectors. Nothing wakes it
//! otherwise: it never returns to the firmware.
//!
//! A TD's APIC ID is its vCPU index (KVM's numbering, and what the MADT lists).
//!
//! # Polling gently
//! On cvmm's emulated TDX platform (boot info flag `FLAG_EMULATED_PLATFORM`) each poll
//! is followed by TDVMCALL<HLT> with interrupts enabled, which the host answers after
//! about a millisecond: a parked vCPU costs the host a few exits per millisecond
//! instead of a CPL0 spin (CPL0 code is emulated there). On TDX hardware nothing would
//! wake such a halt (no interrupt is armed and Linux's wakeup sends none), so there the
//! loop spins with `pause`.
//!
//! The tables are measured (MRTD), so the firmware reads them without a second copy;
//! every walk is still bounded (lengths clamped to the 4 KiB table area).
#![allow(dead_code)]

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Mailbox `Command`: wake the processor named by `ApicId`.
pub const MP_WAKEUP_COMMAND_WAKEUP: u16 = 1;
/// MADT structure types.
const MADT_LOCAL_APIC: u8 = 0;
const MADT_MP_WAKEUP: u8 = 0x10;
/// The most bytes a table walk looks at (the whole table area is one page).
const MAX_TABLE_LEN: u64 = 0x1000;

/// The mailbox parked APs poll (0: none, they halt for good).
static MAILBOX: AtomicU64 = AtomicU64::new(0);
/// Whether the platform is cvmm's emulation (idle through TDVMCALL<HLT>).
static EMULATED_IDLE: AtomicBool = AtomicBool::new(false);

fn rd<T: Copy>(addr: u64) -> T {
    // SAFETY: the tables and the mailbox are private, identity-mapped guest memory the
    // launch measured (or zeroed); reads have no side effects.
    unsafe { core::ptr::read_volatile(addr as *const T) }
}

fn sig(s: &[u8; 4]) -> u32 {
    u32::from_le_bytes(*s)
}

/// The GPA of the table with signature `signature`, found through the RSDP at `rsdp`
/// (revision 2) and its XSDT.
pub fn find_table(rsdp: u64, signature: &[u8; 4]) -> Option<u64> {
    if rsdp == 0 || rd::<u64>(rsdp) != u64::from_le_bytes(*b"RSD PTR ") || rd::<u8>(rsdp + 15) < 2 {
        return None;
    }
    let xsdt: u64 = rd(rsdp + 24);
    if xsdt == 0 || rd::<u32>(xsdt) != sig(b"XSDT") {
        return None;
    }
    let len = u64::from(rd::<u32>(xsdt + 4)).min(MAX_TABLE_LEN);
    let mut at = 36;
    while at + 8 <= len {
        let table: u64 = rd(xsdt + at);
        if table != 0 && rd::<u32>(table) == sig(signature) {
            return Some(table);
        }
        at += 8;
    }
    None
}

/// Calls `f(type, address)` for each structure of the MADT at `madt`.
fn madt_structures(madt: u64, mut f: impl FnMut(u8, u64)) {
    let len = u64::from(rd::<u32>(madt + 4)).min(MAX_TABLE_LEN);
    let mut at = 44;
    while at + 2 <= len {
        let n = u64::from(rd::<u8>(madt + at + 1));
        if n < 2 || at + n > len {
            return;
        }
        f(rd(madt + at), madt + at);
        at += n;
    }
}

/// The number of enabled local APICs the MADT lists (0 without a MADT).
pub fn madt_cpus(rsdp: u64) -> u32 {
    let Some(madt) = find_table(rsdp, b"APIC") else { return 0 };
    let mut n = 0;
    madt_structures(madt, |ty, at| {
        if ty == MADT_LOCAL_APIC && rd::<u32>(at + 4) & 1 != 0 {
            n += 1;
        }
    });
    n
}

/// The GPA of the MADT's multiprocessor wakeup mailbox, if it has one.
pub fn mp_wakeup_mailbox(rsdp: u64) -> Option<u64> {
    let madt = find_table(rsdp, b"APIC")?;
    let mut mailbox = None;
    madt_structures(madt, |ty, at| {
        if ty == MADT_MP_WAKEUP && rd::<u8>(at + 1) >= 16 {
            mailbox = Some(rd::<u64>(at + 8));
        }
    });
    mailbox.filter(|m| *m != 0 && m % 0x1000 == 0)
}

/// BSP: where the APs will wait, and how they idle. Called before they are released.
pub fn set_parking(mailbox: Option<u64>, emulated: bool) {
    EMULATED_IDLE.store(emulated, Ordering::Relaxed);
    MAILBOX.store(mailbox.unwrap_or(0), Ordering::Release);
}

/// Waits a little: TDVMCALL<HLT> with interrupts enabled on the emulated platform,
/// a few `pause`s on hardware.
pub fn idle() {
    if EMULATED_IDLE.load(Ordering::Relaxed) {
        super::tdx::tdvmcall(super::tdx::tdcall::EXIT_REASON_HLT, 0, 0, 0, 0);
    } else {
        for _ in 0..64 {
            core::hint::spin_loop();
        }
    }
}

/// A TDX application processor with APIC ID `apic_id`, done with the firmware's work:
/// waits in the mailbox loop for its wakeup and jumps to the vector. Without a mailbox
/// it halts for good (interrupts blocked: the host parks it).
pub fn park_ap(apic_id: u32) -> ! {
    let mailbox = MAILBOX.load(Ordering::Acquire);
    if mailbox == 0 {
        loop {
            super::tdx::tdvmcall(super::tdx::tdcall::EXIT_REASON_HLT, 1, 0, 0, 0);
        }
    }
    loop {
        if rd::<u16>(mailbox) == MP_WAKEUP_COMMAND_WAKEUP && rd::<u32>(mailbox + 4) == apic_id {
            let vector: u64 = rd(mailbox + 8);
            // SAFETY: the mailbox page is the firmware's (the MADT names it); clearing
            // Command is the acknowledgement the OS waits for.
            unsafe { core::ptr::write_volatile(mailbox as *mut u16, 0) };
            // SAFETY: the OS asked for this processor to run `vector`, in long mode with
            // interrupts disabled on identity-mapped page tables (the firmware's); the
            // firmware never runs on this processor again.
            unsafe { core::arch::asm!("cli", "jmp {v}", v = in(reg) vector, options(noreturn)) }
        }
        idle();
    }
}
