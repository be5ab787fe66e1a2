//! The boot GDT and its segments, in the form KVM's `kvm_segment` wants.

use kvm_bindings::{kvm_dtable, kvm_segment};

/// Selector of the 64-bit code segment.
pub const CODE64_SELECTOR: u16 = 0x08;
/// Selector of the flat data segment.
pub const DATA_SELECTOR: u16 = 0x10;
/// Selector of the 32-bit code segment (PVH entry).
pub const CODE32_SELECTOR: u16 = 0x18;
/// Selector of the TSS (required by VMX/SVM to be valid).
pub const TSS_SELECTOR: u16 = 0x20;

/// Builds a GDT descriptor from flags, base and limit (the Intel SDM's layout).
pub const fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    ((base as u64 & 0xff00_0000) << (56 - 24))
        | ((flags as u64 & 0x0000_f0ff) << 40)
        | ((limit as u64 & 0x000f_0000) << (48 - 16))
        | ((base as u64 & 0x00ff_ffff) << 16)
        | (limit as u64 & 0x0000_ffff)
}

/// The boot GDT: null, 64-bit code, data, 32-bit code, TSS.
pub const BOOT_GDT: [u64; 5] = [
    0,
    gdt_entry(0xa09b, 0, 0xfffff), // 64-bit code: L, P, DPL0, execute/read, accessed
    gdt_entry(0xc093, 0, 0xfffff), // data: D/B, G, P, read/write, accessed
    gdt_entry(0xc09b, 0, 0xfffff), // 32-bit code: D, G, P, execute/read, accessed
    gdt_entry(0x008b, 0, 0xfffff), // TSS: busy 32-bit TSS, present
];

/// Decodes a GDT entry into the `kvm_segment` KVM loads for `selector`.
pub fn kvm_segment_from_gdt(entry: u64, selector: u16) -> kvm_segment {
    let base = ((entry >> 16) & 0xff_ffff) | ((entry >> 32) & 0xff00_0000);
    let raw_limit = ((entry & 0xffff) | ((entry >> 32) & 0xf_0000)) as u32;
    let g = ((entry >> 55) & 1) as u8;
    let limit = if g == 1 { (raw_limit << 12) | 0xfff } else { raw_limit };
    kvm_segment {
        base,
        limit,
        selector,
        type_: ((entry >> 40) & 0xf) as u8,
        present: ((entry >> 47) & 1) as u8,
        dpl: ((entry >> 45) & 3) as u8,
        db: ((entry >> 54) & 1) as u8,
        s: ((entry >> 44) & 1) as u8,
        l: ((entry >> 53) & 1) as u8,
        g,
        avl: ((entry >> 52) & 1) as u8,
        unusable: if (entry >> 47) & 1 == 0 { 1 } else { 0 },
        padding: 0,
    }
}

/// The GDT register value for [`BOOT_GDT`] at `base`.
pub fn gdt_table_register(base: u64) -> kvm_dtable {
    kvm_dtable { base, limit: (BOOT_GDT.len() * 8 - 1) as u16, padding: [0; 3] }
}

/// The GDT's bytes, as written to guest memory.
pub fn gdt_bytes() -> Vec<u8> {
    BOOT_GDT.iter().flat_map(|e| e.to_le_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code64_segment_decodes_as_long_mode_ring0() {
        let s = kvm_segment_from_gdt(BOOT_GDT[1], CODE64_SELECTOR);
        assert_eq!((s.l, s.db, s.dpl, s.present, s.s, s.type_), (1, 0, 0, 1, 1, 0xb));
        assert_eq!(s.limit, 0xffff_ffff);
        assert_eq!(s.base, 0);
    }

    #[test]
    fn data_and_code32_segments_are_flat_32_bit() {
        let d = kvm_segment_from_gdt(BOOT_GDT[2], DATA_SELECTOR);
        assert_eq!((d.db, d.l, d.type_, d.limit), (1, 0, 0x3, 0xffff_ffff));
        let c = kvm_segment_from_gdt(BOOT_GDT[3], CODE32_SELECTOR);
        assert_eq!((c.db, c.l, c.type_), (1, 0, 0xb));
    }

    #[test]
    fn gdt_register_covers_every_entry() {
        assert_eq!(gdt_table_register(0x500).limit as usize + 1, gdt_bytes().len());
    }
}
