//! The ACPI tables of a confidential guest's launch plan: which tables each platform
//! gets (built by `arch::acpi`) and the measured ranges they and their companions (the
//! TDX wakeup mailbox and event log area) occupy.
//!
//! | GPA | what | SNP page type | TDX |
//! |---|---|---|---|
//! | 0xE_0000 | RSDP, XSDT, MADT (+ CCEL for TDX), one page | NORMAL | added and measured |
//! | 0xE_1000 | multiprocessor wakeup mailbox (TDX only) | - | added and measured (zero) |
//! | 0xE_2000 | CC event log area, 64 KiB (TDX only) | - | added and measured (zero) |
//!
//! All of it lies in the e820 reserved range below 1 MiB, so a guest OS never takes it
//! for RAM; the RSDP's address is in the boot information (`BootInfo::acpi_rsdp`).

use arch::acpi::{build, AcpiError, AcpiTables, TdxAcpi};
use arch::layout::{CC_EVENT_LOG_SIZE, CC_EVENT_LOG_START, MP_WAKEUP_MAILBOX, PAGE_SIZE};

/// The plan's name of the ACPI tables range.
pub const ACPI_TABLES_WHAT: &str = "ACPI tables";

/// The tables of an SEV-SNP guest with `vcpus` vCPUs: a MADT (local APICs, I/O APIC).
pub fn snp_tables(vcpus: u32) -> Result<AcpiTables, AcpiError> {
    build(vcpus, None)
}

/// What a TD's tables point at: the mailbox and the event log area.
pub fn tdx_targets() -> TdxAcpi {
    TdxAcpi { mailbox: MP_WAKEUP_MAILBOX, log_area: CC_EVENT_LOG_START, log_len: CC_EVENT_LOG_SIZE }
}

/// The tables of a TD with `vcpus` vCPUs: a MADT with the multiprocessor wakeup
/// structure, and a CCEL table.
pub fn tdx_tables(vcpus: u32) -> Result<AcpiTables, AcpiError> {
    build(vcpus, Some(tdx_targets()))
}

/// The zero-filled, measured ranges a TD's tables point at: (GPA, length, what).
pub fn tdx_zero_ranges() -> Vec<(u64, u64, String)> {
    let t = tdx_targets();
    vec![(t.mailbox, PAGE_SIZE, "MP wakeup mailbox".into()), (t.log_area, t.log_len, "CC event log area".into())]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn td_ranges_are_page_aligned_and_clear_of_the_tables() {
        let tables = tdx_tables(2).unwrap();
        let end = tables.rsdp + tables.bytes.len() as u64;
        for (gpa, len, what) in tdx_zero_ranges() {
            assert!(gpa % PAGE_SIZE == 0 && len % PAGE_SIZE == 0, "{what}");
            assert!(gpa >= end, "{what} after the tables");
        }
        assert!(snp_tables(0).is_err());
    }
}
