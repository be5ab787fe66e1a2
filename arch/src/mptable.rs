//! The Intel MultiProcessor Specification 1.4 tables: how a guest without ACPI learns
//! its processors, its IOAPIC and how each IOAPIC pin is wired.
//!
//! The tables sit in the reserved EBDA range: the MP floating pointer structure at
//! [`MPTABLE_START`] (the first byte of the last KiB below 640 KiB, one of the places
//! Linux scans for `"_MP_"`), the MP configuration table right after it. With few
//! vCPUs everything fits in the EBDA's 1 KiB; with more (20 bytes per processor) the
//! configuration table runs on into the legacy VGA/ROM range, which e820 reserves up
//! to 1 MiB as well, so the whole table always stays out of the guest's usable RAM.
//!
//! ```text
//! 0x9fc00  floating pointer "_MP_" (16 bytes) -> 0x9fc10
//! 0x9fc10  configuration table "PCMP": header (44 bytes), then
//!          one processor entry per vCPU (20 bytes each; APIC ID = vCPU index),
//!          bus 0 "ISA", the IOAPIC (ID = vCPU count, 0xfec00000),
//!          24 I/O interrupt entries (ISA IRQ n -> IOAPIC pin n),
//!          ExtINT -> LINT0 and NMI -> LINT1 of every local APIC (8 bytes each)
//! ```

use thiserror::Error;

use crate::layout::{EBDA_START, HIGH_MEMORY_START, IOAPIC_START, LAPIC_START};

/// Guest address of the MP floating pointer structure.
pub const MPTABLE_START: u64 = EBDA_START;
/// End (exclusive) of the range the tables may occupy: the e820-reserved range
/// [`EBDA_START`]..1 MiB.
pub const MPTABLE_LIMIT: u64 = HIGH_MEMORY_START;
/// Most vCPUs the table describes: APIC IDs 0 to 253, the IOAPIC takes 254, and 255 is
/// the broadcast ID.
pub const MAX_VCPUS: u32 = 254;
/// Number of IOAPIC pins (the user-space IOAPIC's redirection entries).
pub const IOAPIC_PINS: u8 = 24;

/// Size of the MP floating pointer structure.
const FLOATING_POINTER_SIZE: usize = 16;
/// Size of the configuration table header.
const HEADER_SIZE: usize = 44;
/// Size of a processor entry.
const PROCESSOR_ENTRY_SIZE: usize = 20;
/// Size of every other base-table entry (bus, IOAPIC, I/O and local interrupt).
const SHORT_ENTRY_SIZE: usize = 8;
/// Local interrupt entries: ExtINT on LINT0, NMI on LINT1.
const LOCAL_INTERRUPTS: usize = 2;

/// MP specification revision 1.4.
const SPEC_REV: u8 = 4;
/// OEM ID, space-padded.
const OEM_ID: &[u8; 8] = b"CVMM    ";
/// Product ID, space-padded.
const PRODUCT_ID: &[u8; 12] = b"CVMM-VM     ";

// Entry types.
const ENTRY_PROCESSOR: u8 = 0;
const ENTRY_BUS: u8 = 1;
const ENTRY_IOAPIC: u8 = 2;
const ENTRY_IO_INTERRUPT: u8 = 3;
const ENTRY_LOCAL_INTERRUPT: u8 = 4;

// Interrupt types of I/O and local interrupt entries.
const INT_TYPE_INT: u8 = 0;
const INT_TYPE_NMI: u8 = 1;
const INT_TYPE_EXTINT: u8 = 3;
/// Interrupt flags: polarity and trigger mode conform to the bus (ISA: active high,
/// edge-triggered), which matches the edge-triggered MSIs cvmm routes.
const INT_FLAGS_CONFORMING: u16 = 0;

/// Local APIC version of an integrated (non-82489DX) APIC, as KVM's LAPIC reports it.
const LAPIC_VERSION: u8 = 0x14;
// Processor entry flags.
const CPU_ENABLED: u8 = 1 << 0;
const CPU_BOOTSTRAP: u8 = 1 << 1;
/// CPU signature (CPUID leaf 1 EAX layout): family 6, model 0, stepping 0. Linux reads
/// the real CPUID; the table's value is informational.
const CPU_SIGNATURE: u32 = 6 << 8;
/// CPU feature flags (CPUID leaf 1 EDX layout): FPU (bit 0) and on-chip APIC (bit 9).
const CPU_FEATURES: u32 = (1 << 0) | (1 << 9);

// Bus ID and type string of the one bus.
const ISA_BUS_ID: u8 = 0;
const ISA_BUS_TYPE: &[u8; 6] = b"ISA   ";
/// IOAPIC version (what cvmm's user-space IOAPIC and KVM's in-kernel one report).
const IOAPIC_VERSION: u8 = 0x11;
const IOAPIC_ENABLED: u8 = 1;
/// Destination "every local APIC" of a local interrupt entry.
const ALL_LAPICS: u8 = 0xff;

/// Errors from building the MP table.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum MptableError {
    /// The vCPU count is 0 or more than the table can describe.
    #[error("an MP table cannot describe {vcpus} vCPUs (1 to {MAX_VCPUS})")]
    VcpuCount {
        /// The requested count.
        vcpus: u32,
    },
}

/// Total size in bytes of the floating pointer and configuration table for `vcpus`.
pub const fn mptable_size(vcpus: u32) -> usize {
    FLOATING_POINTER_SIZE + config_table_size(vcpus)
}

/// Size of the configuration table (header and base entries) for `vcpus`.
const fn config_table_size(vcpus: u32) -> usize {
    HEADER_SIZE
        + vcpus as usize * PROCESSOR_ENTRY_SIZE
        + SHORT_ENTRY_SIZE * (2 + IOAPIC_PINS as usize + LOCAL_INTERRUPTS)
}

// The largest table stays inside the reserved range.
const _: () = assert!(MPTABLE_START + mptable_size(MAX_VCPUS) as u64 <= MPTABLE_LIMIT);

/// The MP floating pointer structure and configuration table for `vcpus` vCPUs, as
/// bytes to place at the returned guest address ([`MPTABLE_START`]).
///
/// ```
/// let (addr, bytes) = arch::mptable::mptable(2).unwrap();
/// assert_eq!(addr, 0x9fc00);
/// assert_eq!(&bytes[0..4], b"_MP_");
/// assert_eq!(&bytes[16..20], b"PCMP");
/// assert!(arch::mptable::mptable(0).is_err());
/// ```
pub fn mptable(vcpus: u32) -> Result<(u64, Vec<u8>), MptableError> {
    if vcpus == 0 || vcpus > MAX_VCPUS {
        return Err(MptableError::VcpuCount { vcpus });
    }
    // APIC IDs 0..vcpus are the processors'; the next one is free.
    let ioapic_id = vcpus as u8;
    let config_addr = MPTABLE_START + FLOATING_POINTER_SIZE as u64;

    let mut b = Vec::with_capacity(mptable_size(vcpus));
    // MP floating pointer structure.
    b.extend_from_slice(b"_MP_");
    b.extend_from_slice(&(config_addr as u32).to_le_bytes());
    b.push((FLOATING_POINTER_SIZE / 16) as u8); // length in 16-byte units
    b.push(SPEC_REV);
    b.push(0); // checksum, set below
    b.extend_from_slice(&[0; 5]); // feature bytes: 0 = a configuration table exists, virtual wire mode
    b[10] = checksum(&b[..FLOATING_POINTER_SIZE]);

    // Configuration table header.
    let table_len = config_table_size(vcpus);
    let entries = vcpus as usize + 2 + usize::from(IOAPIC_PINS) + LOCAL_INTERRUPTS;
    let t = b.len();
    b.extend_from_slice(b"PCMP");
    b.extend_from_slice(&(table_len as u16).to_le_bytes());
    b.push(SPEC_REV);
    b.push(0); // checksum, set below
    b.extend_from_slice(OEM_ID);
    b.extend_from_slice(PRODUCT_ID);
    b.extend_from_slice(&0u32.to_le_bytes()); // no OEM table
    b.extend_from_slice(&0u16.to_le_bytes()); // OEM table size
    b.extend_from_slice(&(entries as u16).to_le_bytes());
    b.extend_from_slice(&(LAPIC_START as u32).to_le_bytes());
    b.extend_from_slice(&0u16.to_le_bytes()); // no extended table
    b.push(0); // extended table checksum
    b.push(0); // reserved

    for id in 0..vcpus {
        let flags = if id == 0 { CPU_ENABLED | CPU_BOOTSTRAP } else { CPU_ENABLED };
        b.extend_from_slice(&[ENTRY_PROCESSOR, id as u8, LAPIC_VERSION, flags]);
        b.extend_from_slice(&CPU_SIGNATURE.to_le_bytes());
        b.extend_from_slice(&CPU_FEATURES.to_le_bytes());
        b.extend_from_slice(&[0; 8]);
    }
    b.extend_from_slice(&[ENTRY_BUS, ISA_BUS_ID]);
    b.extend_from_slice(ISA_BUS_TYPE);
    b.extend_from_slice(&[ENTRY_IOAPIC, ioapic_id, IOAPIC_VERSION, IOAPIC_ENABLED]);
    b.extend_from_slice(&(IOAPIC_START as u32).to_le_bytes());
    for pin in 0..IOAPIC_PINS {
        b.extend_from_slice(&[ENTRY_IO_INTERRUPT, INT_TYPE_INT]);
        b.extend_from_slice(&INT_FLAGS_CONFORMING.to_le_bytes());
        b.extend_from_slice(&[ISA_BUS_ID, pin, ioapic_id, pin]);
    }
    for (kind, lint) in [(INT_TYPE_EXTINT, 0), (INT_TYPE_NMI, 1)] {
        b.extend_from_slice(&[ENTRY_LOCAL_INTERRUPT, kind]);
        b.extend_from_slice(&INT_FLAGS_CONFORMING.to_le_bytes());
        b.extend_from_slice(&[ISA_BUS_ID, 0, ALL_LAPICS, lint]);
    }
    debug_assert_eq!(b.len() - t, table_len);
    b[t + 7] = checksum(&b[t..]);
    Ok((MPTABLE_START, b))
}

/// The byte that makes `bytes` (which holds 0 in its checksum field) sum to 0.
fn checksum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |sum, &x| sum.wrapping_add(x)).wrapping_neg()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u16_at(b: &[u8], at: usize) -> u16 {
        u16::from_le_bytes([b[at], b[at + 1]])
    }

    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
    }

    fn sum(bytes: &[u8]) -> u8 {
        bytes.iter().fold(0u8, |s, &x| s.wrapping_add(x))
    }

    /// The configuration table's base entries, split by their type's length.
    fn entries(b: &[u8]) -> Vec<&[u8]> {
        let table = &b[FLOATING_POINTER_SIZE..];
        let mut at = HEADER_SIZE;
        let mut out = Vec::new();
        while at < table.len() {
            let len = if table[at] == ENTRY_PROCESSOR { PROCESSOR_ENTRY_SIZE } else { SHORT_ENTRY_SIZE };
            out.push(&table[at..at + len]);
            at += len;
        }
        assert_eq!(at, table.len(), "entries end exactly at the table's end");
        out
    }

    #[test]
    fn both_structures_checksum_to_zero() {
        for vcpus in [1, 2, 37, MAX_VCPUS] {
            let (_, b) = mptable(vcpus).unwrap();
            assert_eq!(sum(&b[..FLOATING_POINTER_SIZE]), 0, "floating pointer, {vcpus} vCPUs");
            assert_eq!(sum(&b[FLOATING_POINTER_SIZE..]), 0, "configuration table, {vcpus} vCPUs");
        }
    }

    #[test]
    fn floating_pointer_points_at_the_configuration_table() {
        let (addr, b) = mptable(2).unwrap();
        assert_eq!(addr, 0x9fc00);
        assert_eq!(&b[0..4], b"_MP_");
        assert_eq!(b[8], 1, "one 16-byte paragraph");
        assert_eq!(b[9], 4, "spec revision 1.4");
        assert_eq!(&b[11..16], &[0; 5], "feature byte 1 = 0: a configuration table, no default config");
        let table = u32_at(&b, 4) as u64;
        assert_eq!(table, addr + 16);
        assert_eq!(&b[(table - addr) as usize..][..4], b"PCMP");
    }

    #[test]
    fn header_lengths_and_entry_count_match_the_entries() {
        let (_, b) = mptable(3).unwrap();
        let t = &b[FLOATING_POINTER_SIZE..];
        assert_eq!(u16_at(t, 4) as usize, t.len(), "base table length");
        assert_eq!(t[6], 4);
        assert_eq!(&t[8..16], b"CVMM    ");
        assert_eq!(&t[16..28], b"CVMM-VM     ");
        assert_eq!(u32_at(t, 36), 0xfee0_0000);
        assert_eq!(u16_at(t, 40), 0, "no extended table");
        assert_eq!(u16_at(t, 34) as usize, entries(&b).len());
        assert_eq!(entries(&b).len(), 3 + 1 + 1 + 24 + 2);
    }

    #[test]
    fn processors_have_apic_ids_in_order_and_only_vcpu_0_boots() {
        let (_, b) = mptable(4).unwrap();
        let cpus: Vec<_> = entries(&b).into_iter().filter(|e| e[0] == ENTRY_PROCESSOR).collect();
        assert_eq!(cpus.len(), 4);
        for (i, e) in cpus.iter().enumerate() {
            assert_eq!(e[1] as usize, i, "APIC ID");
            assert_eq!(e[3] & CPU_ENABLED, CPU_ENABLED, "vCPU {i} enabled");
            assert_eq!(e[3] & CPU_BOOTSTRAP != 0, i == 0, "BSP flag on vCPU {i}");
            assert!(e[2] >= 0x10, "integrated local APIC");
        }
    }

    #[test]
    fn one_isa_bus_and_one_ioapic_above_the_cpu_apic_ids() {
        let (_, b) = mptable(2).unwrap();
        let e = entries(&b);
        let buses: Vec<_> = e.iter().filter(|e| e[0] == ENTRY_BUS).collect();
        assert_eq!(buses.len(), 1);
        assert_eq!(&buses[0][1..8], b"\0ISA   ");
        let ioapics: Vec<_> = e.iter().filter(|e| e[0] == ENTRY_IOAPIC).collect();
        assert_eq!(ioapics.len(), 1);
        assert_eq!(&ioapics[0][1..4], &[2, 0x11, 1], "ID 2, version 0x11, enabled");
        assert_eq!(u32_at(ioapics[0], 4), 0xfec0_0000);
    }

    #[test]
    fn every_ioapic_pin_has_an_isa_irq_of_the_same_number() {
        let (_, b) = mptable(2).unwrap();
        let ints: Vec<_> = entries(&b).into_iter().filter(|e| e[0] == ENTRY_IO_INTERRUPT).collect();
        assert_eq!(ints.len(), 24);
        for (pin, e) in ints.iter().enumerate() {
            assert_eq!(e[1], INT_TYPE_INT);
            assert_eq!(u16_at(e, 2), 0, "conforming polarity and trigger");
            assert_eq!(&e[4..8], &[0, pin as u8, 2, pin as u8], "bus 0 IRQ n -> IOAPIC 2 pin n");
        }
    }

    #[test]
    fn extint_and_nmi_go_to_lint0_and_lint1_of_every_apic() {
        let (_, b) = mptable(1).unwrap();
        let lints: Vec<_> = entries(&b).into_iter().filter(|e| e[0] == ENTRY_LOCAL_INTERRUPT).collect();
        assert_eq!(lints.len(), 2);
        assert_eq!((lints[0][1], lints[0][6], lints[0][7]), (INT_TYPE_EXTINT, 0xff, 0));
        assert_eq!((lints[1][1], lints[1][6], lints[1][7]), (INT_TYPE_NMI, 0xff, 1));
    }

    #[test]
    fn size_grows_by_20_bytes_per_vcpu_and_the_largest_stays_reserved() {
        assert_eq!(mptable(1).unwrap().1.len(), 304);
        assert_eq!(mptable(2).unwrap().1.len(), mptable(1).unwrap().1.len() + 20);
        // Up to 37 vCPUs the whole table fits in the EBDA's 1 KiB.
        assert!(MPTABLE_START + mptable(37).unwrap().1.len() as u64 <= 0xa0000);
        let (addr, largest) = mptable(MAX_VCPUS).unwrap();
        assert_eq!(largest.len(), mptable_size(254));
        assert!(addr + largest.len() as u64 <= HIGH_MEMORY_START, "inside the e820-reserved range");
    }

    #[test]
    fn zero_and_too_many_vcpus_are_rejected() {
        assert_eq!(mptable(0), Err(MptableError::VcpuCount { vcpus: 0 }));
        assert_eq!(mptable(MAX_VCPUS + 1), Err(MptableError::VcpuCount { vcpus: MAX_VCPUS + 1 }));
        assert_eq!(mptable(u32::MAX), Err(MptableError::VcpuCount { vcpus: u32::MAX }));
    }
}
