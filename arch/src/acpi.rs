//! The ACPI tables cvmm gives a confidential guest: RSDP (revision 2) -> XSDT -> MADT
//! (and, for TDX, CCEL), laid out in one block at [`ACPI_START`].
//!
//! Headers, lengths and checksums come from the rust-vmm `acpi_tables` crate (its
//! `Rsdp`, `XSDT` and generic `Sdt`; the MADT's local APIC and I/O APIC structures are
//! its `ProcessorLocalApic` and `IoApic`). What the crate does not know is written here
//! from the specification:
//! - the MADT Multiprocessor Wakeup structure (ACPI 6.4 5.2.12.19, type 0x10, 16 bytes:
//!   type, length, mailbox version u16 (0), reserved u32, mailbox address u64), which
//!   tells a TDX guest OS where the firmware parks the application processors;
//! - the CC Event Log table (ACPI 6.5 5.2.34, signature "CCEL", 56 bytes: header, CC
//!   type u8 (2 = Intel TDX), CC subtype u8 (0), reserved u16, LAML u64 (the log area's
//!   length), LASA u64 (its address)).
//!
//! Block layout (offsets from [`ACPI_START`]):
//!
//! | offset | table |
//! |---|---|
//! | 0x000 | RSDP (36 bytes) |
//! | 0x040 | XSDT (one entry per table below) |
//! | 0x100 | MADT: revision 5, local APIC address 0xFEE0_0000, flags 0 (no 8259 PICs); one Processor Local APIC per vCPU (UID = APIC ID = vCPU index), one I/O APIC (ID = vCPU count, as in the MP table, GSI base 0), for TDX the wakeup structure |
//! | after the MADT, 16-byte aligned | CCEL (TDX only) |

use acpi_tables::madt::{EnabledStatus, IoApic, ProcessorLocalApic};
use acpi_tables::rsdp::Rsdp;
use acpi_tables::sdt::Sdt;
use acpi_tables::xsdt::XSDT;
use acpi_tables::Aml;
use thiserror::Error;

use crate::layout::{ACPI_SIZE, ACPI_START, IOAPIC_START, LAPIC_START};

/// The OEM ID every table carries.
pub const OEM_ID: [u8; 6] = *b"CVMM  ";
/// The OEM table ID every table carries.
pub const OEM_TABLE_ID: [u8; 8] = *b"CVMMACPI";
/// The OEM revision every table carries.
pub const OEM_REVISION: u32 = 1;
/// Offset of the XSDT in the block.
pub const XSDT_OFFSET: u64 = 0x40;
/// Offset of the MADT in the block.
pub const MADT_OFFSET: u64 = 0x100;
/// MADT revision (ACPI 6.4, the first with the multiprocessor wakeup structure).
pub const MADT_REVISION: u8 = 5;
/// MADT structure type of the Multiprocessor Wakeup structure.
pub const MADT_MP_WAKEUP: u8 = 0x10;
/// Mailbox `Command` value that wakes an application processor.
pub const MP_WAKEUP_COMMAND_WAKEUP: u16 = 1;
/// CCEL CC type of Intel TDX.
pub const CC_TYPE_TDX: u8 = 2;
/// The most vCPUs the MADT describes (xAPIC IDs are one byte, and 255 is the broadcast).
pub const MAX_ACPI_VCPUS: u32 = 254;

// The ACPI area, the mailbox and the log area lie in the e820 reserved range below
// 1 MiB, in this order, clear of the largest MP table.
const _: () = {
    use crate::layout::{CC_EVENT_LOG_SIZE, CC_EVENT_LOG_START, HIGH_MEMORY_START, MP_WAKEUP_MAILBOX};
    use crate::mptable::{mptable_size, MAX_VCPUS, MPTABLE_START};
    assert!(MPTABLE_START + mptable_size(MAX_VCPUS) as u64 <= ACPI_START);
    assert!(ACPI_START + ACPI_SIZE <= MP_WAKEUP_MAILBOX);
    assert!(MP_WAKEUP_MAILBOX + 0x1000 <= CC_EVENT_LOG_START);
    assert!(CC_EVENT_LOG_START + CC_EVENT_LOG_SIZE <= HIGH_MEMORY_START);
};

/// Errors from building the tables.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum AcpiError {
    /// No vCPUs, or more than xAPIC IDs can name.
    #[error("cannot describe {vcpus} vCPUs in the MADT: between 1 and {MAX_ACPI_VCPUS} are supported")]
    VcpuCount {
        /// The requested count.
        vcpus: u32,
    },
    /// The tables do not fit the block.
    #[error("the ACPI tables need {len} bytes, more than the {ACPI_SIZE} reserved for them")]
    TooLarge {
        /// Their size.
        len: u64,
    },
}

/// What the TDX-only parts of the tables point at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TdxAcpi {
    /// GPA of the multiprocessor wakeup mailbox (4 KiB aligned, one page).
    pub mailbox: u64,
    /// GPA of the CC event log area (LASA).
    pub log_area: u64,
    /// Its length in bytes (LAML).
    pub log_len: u64,
}

/// The built tables: one block of bytes for [`ACPI_START`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcpiTables {
    /// The block, [`ACPI_SIZE`] bytes (zero after the last table).
    pub bytes: Vec<u8>,
    /// GPA of the RSDP (the block's start).
    pub rsdp: u64,
    /// GPA of the MADT.
    pub madt: u64,
    /// GPA of the CCEL table, if any.
    pub ccel: Option<u64>,
}

fn bytes_of(aml: &dyn Aml) -> Vec<u8> {
    let mut v = Vec::new();
    aml.to_aml_bytes(&mut v);
    v
}

/// The MADT for `vcpus` vCPUs, with the wakeup structure for `mailbox` if given.
pub fn madt(vcpus: u32, mailbox: Option<u64>) -> Result<Vec<u8>, AcpiError> {
    let ids = u8::try_from(vcpus).ok().filter(|n| (1..=MAX_ACPI_VCPUS).contains(&u32::from(*n)));
    let Some(n) = ids else { return Err(AcpiError::VcpuCount { vcpus }) };
    let mut t = Sdt::new(*b"APIC", 44, MADT_REVISION, OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    t.write_u32(36, LAPIC_START as u32);
    t.write_u32(40, 0);
    for id in 0..n {
        t.append_slice(&bytes_of(&ProcessorLocalApic::new(id, id, EnabledStatus::Enabled)));
    }
    t.append_slice(&bytes_of(&IoApic::new(n, IOAPIC_START as u32, 0)));
    if let Some(mailbox) = mailbox {
        let mut s = [0u8; 16];
        s[0] = MADT_MP_WAKEUP;
        s[1] = 16;
        // Mailbox version 0 (bytes 2-3), reserved (4-7).
        s[8..16].copy_from_slice(&mailbox.to_le_bytes());
        t.append_slice(&s);
    }
    Ok(t.as_slice().to_vec())
}

/// The CCEL table for a TDX event log at `log_area`, `log_len` bytes long.
pub fn ccel(log_area: u64, log_len: u64) -> Vec<u8> {
    let mut t = Sdt::new(*b"CCEL", 56, 1, OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    t.write_u8(36, CC_TYPE_TDX);
    t.write_u8(37, 0);
    t.write_u16(38, 0);
    t.write_u64(40, log_len);
    t.write_u64(48, log_area);
    t.as_slice().to_vec()
}

/// Builds the block for `vcpus` vCPUs: MADT only for SEV-SNP (`tdx` = `None`); MADT
/// with the wakeup structure and a CCEL table for TDX.
///
/// ```
/// let t = arch::acpi::build(2, None).unwrap();
/// assert_eq!(&t.bytes[..8], b"RSD PTR ");
/// assert_eq!(t.rsdp, arch::layout::ACPI_START);
/// ```
pub fn build(vcpus: u32, tdx: Option<TdxAcpi>) -> Result<AcpiTables, AcpiError> {
    let madt_bytes = madt(vcpus, tdx.map(|t| t.mailbox))?;
    let madt_gpa = ACPI_START + MADT_OFFSET;
    let ccel_gpa = (madt_gpa + madt_bytes.len() as u64).next_multiple_of(16);
    let ccel_bytes = tdx.map(|t| ccel(t.log_area, t.log_len));
    let end = ccel_gpa + ccel_bytes.as_ref().map_or(0, |c| c.len() as u64);
    if end - ACPI_START > ACPI_SIZE {
        return Err(AcpiError::TooLarge { len: end - ACPI_START });
    }
    let mut xsdt = XSDT::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    xsdt.add_entry(madt_gpa);
    if ccel_bytes.is_some() {
        xsdt.add_entry(ccel_gpa);
    }
    let xsdt_gpa = ACPI_START + XSDT_OFFSET;
    let mut bytes = vec![0u8; ACPI_SIZE as usize];
    let mut put = |gpa: u64, data: &[u8]| {
        let at = (gpa - ACPI_START) as usize;
        bytes[at..at + data.len()].copy_from_slice(data);
    };
    put(ACPI_START, &bytes_of(&Rsdp::new(OEM_ID, xsdt_gpa)));
    put(xsdt_gpa, &bytes_of(&xsdt));
    put(madt_gpa, &madt_bytes);
    if let Some(c) = &ccel_bytes {
        put(ccel_gpa, c);
    }
    Ok(AcpiTables { bytes, rsdp: ACPI_START, madt: madt_gpa, ccel: ccel_bytes.map(|_| ccel_gpa) })
}

#[cfg(test)]
mod tests {
    //! The tables are read back here with a small reader written from the ACPI
    //! specification (offsets, checksums), not with the crate that wrote them.
    use super::*;
    use crate::layout::{CC_EVENT_LOG_SIZE, CC_EVENT_LOG_START, MP_WAKEUP_MAILBOX};

    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
    }
    fn u64_at(b: &[u8], at: usize) -> u64 {
        u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
    }
    fn sums_to_zero(b: &[u8]) -> bool {
        b.iter().fold(0u8, |a, x| a.wrapping_add(*x)) == 0
    }

    /// The table at `gpa` in the block: its bytes, after checking its checksum.
    fn table(t: &AcpiTables, gpa: u64) -> &[u8] {
        let at = (gpa - ACPI_START) as usize;
        let len = u32_at(&t.bytes, at + 4) as usize;
        let b = &t.bytes[at..at + len];
        assert!(sums_to_zero(b), "checksum of {:?}", std::str::from_utf8(&b[..4]));
        b
    }

    /// The XSDT's tables by signature, from the RSDP.
    fn tables(t: &AcpiTables) -> Vec<(String, u64)> {
        let rsdp = &t.bytes[..36];
        assert_eq!(&rsdp[..8], b"RSD PTR ");
        assert!(sums_to_zero(&rsdp[..20]) && sums_to_zero(rsdp), "RSDP checksums");
        assert_eq!((rsdp[15], u32_at(rsdp, 20)), (2, 36), "revision 2, length 36");
        let xsdt = table(t, u64_at(rsdp, 24));
        assert_eq!(&xsdt[..4], b"XSDT");
        (36..xsdt.len())
            .step_by(8)
            .map(|o| {
                let gpa = u64_at(xsdt, o);
                (String::from_utf8(table(t, gpa)[..4].to_vec()).unwrap(), gpa)
            })
            .collect()
    }

    /// The MADT's structures as (type, bytes).
    fn structures(madt: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut out = Vec::new();
        let mut at = 44;
        while at < madt.len() {
            let len = madt[at + 1] as usize;
            out.push((madt[at], madt[at..at + len].to_vec()));
            at += len;
        }
        assert_eq!(at, madt.len(), "structures end with the table");
        out
    }

    #[test]
    fn snp_tables_have_a_madt_with_one_local_apic_per_vcpu_and_no_ccel() {
        let t = build(3, None).unwrap();
        assert_eq!(tables(&t), [("APIC".to_string(), t.madt)]);
        let madt = table(&t, t.madt);
        assert_eq!((madt[8], u32_at(madt, 36), u32_at(madt, 40)), (5, 0xfee0_0000, 0));
        let s = structures(madt);
        let lapics: Vec<_> = s.iter().filter(|(ty, _)| *ty == 0).map(|(_, b)| (b[2], b[3], u32_at(b, 4))).collect();
        assert_eq!(lapics, [(0, 0, 1), (1, 1, 1), (2, 2, 1)]);
        let ioapic: Vec<_> =
            s.iter().filter(|(ty, _)| *ty == 1).map(|(_, b)| (b[2], u32_at(b, 4), u32_at(b, 8))).collect();
        assert_eq!(ioapic, [(3, 0xfec0_0000, 0)]);
        assert!(s.iter().all(|(ty, _)| *ty != MADT_MP_WAKEUP));
        assert_eq!(t.ccel, None);
    }

    #[test]
    fn tdx_tables_add_the_wakeup_structure_and_a_ccel_table() {
        let tdx = TdxAcpi { mailbox: MP_WAKEUP_MAILBOX, log_area: CC_EVENT_LOG_START, log_len: CC_EVENT_LOG_SIZE };
        let t = build(2, Some(tdx)).unwrap();
        let ccel_gpa = t.ccel.unwrap();
        assert_eq!(tables(&t), [("APIC".to_string(), t.madt), ("CCEL".to_string(), ccel_gpa)]);
        let wakeup: Vec<_> = structures(table(&t, t.madt)).into_iter().filter(|(ty, _)| *ty == 0x10).collect();
        assert_eq!(wakeup.len(), 1);
        let w = &wakeup[0].1;
        assert_eq!((w.len(), u16::from_le_bytes([w[2], w[3]]), u64_at(w, 8)), (16, 0, 0xe_1000));
        let c = table(&t, ccel_gpa);
        assert_eq!((c.len(), c[8], c[36], c[37]), (56, 1, 2, 0));
        assert_eq!((u64_at(c, 40), u64_at(c, 48)), (0x1_0000, 0xe_2000));
    }

    #[test]
    fn vcpu_counts_outside_the_xapic_range_are_rejected() {
        assert_eq!(build(0, None), Err(AcpiError::VcpuCount { vcpus: 0 }));
        assert_eq!(build(255, None), Err(AcpiError::VcpuCount { vcpus: 255 }));
        assert_eq!(build(1 << 16, None), Err(AcpiError::VcpuCount { vcpus: 1 << 16 }));
        let most = build(MAX_ACPI_VCPUS, None).unwrap();
        let lapics = structures(table(&most, most.madt)).iter().filter(|(ty, _)| *ty == 0).count();
        assert_eq!(lapics, MAX_ACPI_VCPUS as usize);
    }
}
