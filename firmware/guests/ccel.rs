//! The TDX firmware's confidential-computing event log (included by `rt.rs`): a TCG
//! crypto-agile log (TCG PC Client Platform Firmware Profile, 10.2) in the area the
//! ACPI CCEL table names (LASA, LAML), one entry for every RTMR extend made through
//! [`super::tdx::rtmr_extend_logged`].
//!
//! Layout from LASA:
//! - the Spec ID event, in the SHA-1 `TCG_PCClientPCREvent` format: PCR index 0, type
//!   EV_NO_ACTION (3), 20 zero bytes, event size 33, then `TCG_EfiSpecIDEvent`:
//!   "Spec ID Event03\0", platform class 0, spec version 2.0 errata 0, uintn size 2
//!   (64-bit), one algorithm: SHA-384 (0x000C), 48 bytes; no vendor info;
//! - then one `TCG_PCR_EVENT2` per extend: MR index u32 (the CC convention: RTMR n is
//!   MR index n + 1, 0 is MRTD), event type u32, digest count u32 (1), algorithm u16
//!   (0x000C), the 48 bytes extended, event size u32, event data;
//! - then zeros: the log ends where an entry would start with MR index 0 and type 0.
//!
//! The log lives in private memory, so only the TD (and whoever it hands the log to)
//! sees it; its integrity comes from replaying it into the RTMRs a quote reports.
#![allow(dead_code)]

use core::sync::atomic::{AtomicU64, Ordering};

/// EV_NO_ACTION.
pub const EV_NO_ACTION: u32 = 3;
/// EV_COMPACT_HASH: what the demo logs its RTMR3 event as (the data is a description of
/// what was measured; the digest is the value extended).
pub const EV_COMPACT_HASH: u32 = 0xc;
/// TPM_ALG_SHA384.
pub const TPM_ALG_SHA384: u16 = 0xc;

static BASE: AtomicU64 = AtomicU64::new(0);
static END: AtomicU64 = AtomicU64::new(0);
static LIMIT: AtomicU64 = AtomicU64::new(0);

fn put(at: &mut u64, bytes: &[u8]) {
    for b in bytes {
        // SAFETY: `at` stays within [BASE, LIMIT) (checked by the callers), private
        // identity-mapped memory the CCEL table reserves for the log.
        unsafe { core::ptr::write_volatile(*at as *mut u8, *b) };
        *at += 1;
    }
}

/// Starts the log in the area the CCEL table (found from `rsdp`) names. Returns false,
/// and logs nothing later, without a CCEL table.
pub fn init(rsdp: u64) -> bool {
    let Some(ccel) = super::acpi::find_table(rsdp, b"CCEL") else { return false };
    // SAFETY: the CCEL table is measured memory; fields at their ACPI 6.5 offsets.
    let (laml, lasa) = unsafe {
        (core::ptr::read_volatile((ccel + 40) as *const u64), core::ptr::read_volatile((ccel + 48) as *const u64))
    };
    if lasa == 0 || laml < 0x100 {
        return false;
    }
    let mut at = lasa;
    put(&mut at, &0u32.to_le_bytes());
    put(&mut at, &EV_NO_ACTION.to_le_bytes());
    put(&mut at, &[0; 20]);
    put(&mut at, &33u32.to_le_bytes());
    put(&mut at, b"Spec ID Event03\0");
    put(&mut at, &0u32.to_le_bytes()); // platform class
    put(&mut at, &[0, 2, 0, 2]); // version 2.0, errata 0, uintn size 2
    put(&mut at, &1u32.to_le_bytes());
    put(&mut at, &TPM_ALG_SHA384.to_le_bytes());
    put(&mut at, &48u16.to_le_bytes());
    put(&mut at, &[0]); // vendor info size
    BASE.store(lasa, Ordering::Relaxed);
    LIMIT.store(lasa + laml, Ordering::Relaxed);
    END.store(at, Ordering::Relaxed);
    true
}

/// Appends one event: MR index `mr`, `event_type`, the 48-byte `digest` extended, and
/// `data`. Returns false when there is no log or it is full.
pub fn record(mr: u32, event_type: u32, digest: &[u8; 48], data: &[u8]) -> bool {
    let mut at = END.load(Ordering::Relaxed);
    if at == 0 || at + 66 + data.len() as u64 > LIMIT.load(Ordering::Relaxed) {
        return false;
    }
    put(&mut at, &mr.to_le_bytes());
    put(&mut at, &event_type.to_le_bytes());
    put(&mut at, &1u32.to_le_bytes());
    put(&mut at, &TPM_ALG_SHA384.to_le_bytes());
    put(&mut at, digest);
    put(&mut at, &(data.len() as u32).to_le_bytes());
    put(&mut at, data);
    END.store(at, Ordering::Relaxed);
    true
}

/// The log so far: (GPA, bytes used); (0, 0) without a log.
pub fn log() -> (u64, u64) {
    let base = BASE.load(Ordering::Relaxed);
    (base, END.load(Ordering::Relaxed) - base)
}
