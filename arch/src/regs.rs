//! Initial vCPU register state for each entry protocol cvmm supports.

use kvm_bindings::{kvm_fpu, kvm_regs, kvm_sregs};

use crate::gdt::{
    gdt_table_register, kvm_segment_from_gdt, BOOT_GDT, CODE32_SELECTOR, CODE64_SELECTOR, DATA_SELECTOR, TSS_SELECTOR,
};
use crate::layout::{GDT_START, PAGE_TABLES_START};

const CR0_PE: u64 = 1 << 0;
const CR0_MP: u64 = 1 << 1;
const CR0_ET: u64 = 1 << 4;
const CR0_NE: u64 = 1 << 5;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const CR4_OSFXSR: u64 = 1 << 9;
const CR4_OSXMMEXCPT: u64 = 1 << 10;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;

/// How the boot vCPU enters the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootEntry {
    /// 64-bit long mode with identity paging (Linux 64-bit boot protocol, and cvmm's
    /// own guests): `RSI` = zero page, `RDI` = cvmm boot info.
    Long64 {
        /// Entry point.
        rip: u64,
        /// Linux `boot_params` address.
        zero_page: u64,
        /// cvmm [`crate::abi::BootInfo`] address.
        boot_info: u64,
    },
    /// 32-bit protected mode, paging off (PVH boot protocol): `EBX` = start info.
    Pvh32 {
        /// Entry point from the `XEN_ELFNOTE_PHYS32_ENTRY` note.
        rip: u64,
        /// `hvm_start_info` address.
        start_info: u64,
    },
}

/// General-purpose registers for `entry`.
pub fn boot_regs(entry: &BootEntry) -> kvm_regs {
    let mut regs = kvm_regs { rflags: 0x2, ..Default::default() };
    match *entry {
        BootEntry::Long64 { rip, zero_page, boot_info } => {
            regs.rip = rip;
            regs.rsi = zero_page;
            regs.rdi = boot_info;
        }
        BootEntry::Pvh32 { rip, start_info } => {
            regs.rip = rip;
            regs.rbx = start_info;
        }
    }
    regs
}

/// Special registers for `entry`, starting from the vCPU's current `sregs` (which
/// carry KVM's APIC base and other state this function leaves alone).
pub fn boot_sregs(entry: &BootEntry, mut sregs: kvm_sregs) -> kvm_sregs {
    let data = kvm_segment_from_gdt(BOOT_GDT[2], DATA_SELECTOR);
    sregs.gdt = gdt_table_register(GDT_START);
    sregs.idt = kvm_bindings::kvm_dtable::default();
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = kvm_segment_from_gdt(BOOT_GDT[4], TSS_SELECTOR);
    match entry {
        BootEntry::Long64 { .. } => {
            sregs.cs = kvm_segment_from_gdt(BOOT_GDT[1], CODE64_SELECTOR);
            sregs.cr3 = PAGE_TABLES_START;
            sregs.cr4 = CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT;
            sregs.cr0 = CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_PG;
            sregs.efer = EFER_LME | EFER_LMA;
        }
        BootEntry::Pvh32 { .. } => {
            sregs.cs = kvm_segment_from_gdt(BOOT_GDT[3], CODE32_SELECTOR);
            sregs.cr3 = 0;
            sregs.cr4 = 0;
            sregs.cr0 = CR0_PE | CR0_ET;
            sregs.efer = 0;
        }
    }
    sregs
}

/// FPU state after reset as Linux and firmware expect it (FCW 0x37f, MXCSR 0x1f80).
pub fn boot_fpu() -> kvm_fpu {
    kvm_fpu { fcw: 0x37f, mxcsr: 0x1f80, ..Default::default() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_mode_entry_enables_paging_and_passes_pointers() {
        let e = BootEntry::Long64 { rip: 0x20_0000, zero_page: 0x7000, boot_info: 0x5000 };
        let r = boot_regs(&e);
        assert_eq!((r.rip, r.rsi, r.rdi, r.rflags), (0x20_0000, 0x7000, 0x5000, 2));
        let s = boot_sregs(&e, kvm_sregs::default());
        assert_eq!(s.cr0 & (CR0_PG | CR0_PE), CR0_PG | CR0_PE);
        assert_eq!(s.efer & (EFER_LMA | EFER_LME), EFER_LMA | EFER_LME);
        assert_eq!(s.cs.l, 1);
        assert_eq!(s.cr3, PAGE_TABLES_START);
    }

    #[test]
    fn pvh_entry_is_32_bit_without_paging() {
        let e = BootEntry::Pvh32 { rip: 0x100_0000, start_info: 0x6000 };
        assert_eq!(boot_regs(&e).rbx, 0x6000);
        let s = boot_sregs(&e, kvm_sregs::default());
        assert_eq!(s.cr0 & CR0_PG, 0);
        assert_eq!(s.efer, 0);
        assert_eq!((s.cs.l, s.cs.db), (0, 1));
    }
}
