//! Identity-mapped boot page tables: the first 4 GiB with 2 MiB pages.
//!
//! Layout from [`crate::layout::PAGE_TABLES_START`]: one PML4, one PDPT, then four
//! page directories, six pages in all.

use crate::layout::{PAGE_SIZE, PAGE_TABLES_START};

/// Number of page-table pages [`identity_map_4g`] produces.
pub const PAGE_TABLE_PAGES: u64 = 6;
/// Present | writable.
const PRESENT_RW: u64 = 0x3;
/// Present | writable | page size (2 MiB leaf).
const PRESENT_RW_PS: u64 = 0x83;

/// The boot page tables as `(guest address, page contents)`, identity-mapping
/// 0..4 GiB. CR3 is [`PAGE_TABLES_START`].
pub fn identity_map_4g() -> Vec<(u64, Vec<u8>)> {
    let pml4 = PAGE_TABLES_START;
    let pdpt = pml4 + PAGE_SIZE;
    let pd0 = pdpt + PAGE_SIZE;
    let mut pages = Vec::with_capacity(PAGE_TABLE_PAGES as usize);
    pages.push((pml4, page_of(&[pdpt | PRESENT_RW])));
    let pdpt_entries: Vec<u64> = (0..4).map(|i| (pd0 + i * PAGE_SIZE) | PRESENT_RW).collect();
    pages.push((pdpt, page_of(&pdpt_entries)));
    for i in 0..4u64 {
        let entries: Vec<u64> = (0..512u64).map(|j| ((i * 512 + j) << 21) | PRESENT_RW_PS).collect();
        pages.push((pd0 + i * PAGE_SIZE, page_of(&entries)));
    }
    pages
}

fn page_of(entries: &[u64]) -> Vec<u8> {
    let mut page = vec![0u8; PAGE_SIZE as usize];
    for (slot, e) in page.chunks_exact_mut(8).zip(entries) {
        slot.copy_from_slice(&e.to_le_bytes());
    }
    page
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(page: &[u8], i: usize) -> u64 {
        u64::from_le_bytes(page[i * 8..i * 8 + 8].try_into().unwrap())
    }

    #[test]
    fn walk_of_an_address_near_4g_finds_itself() {
        let pages = identity_map_4g();
        assert_eq!(pages.len() as u64, PAGE_TABLE_PAGES);
        let addr: u64 = 0xfee0_0123;
        let find = |gpa: u64| &pages.iter().find(|(a, _)| *a == gpa).unwrap().1;
        let pdpte = entry(find(entry(&pages[0].1, 0) & !0xfff), ((addr >> 30) & 511) as usize);
        let pde = entry(find(pdpte & !0xfff), ((addr >> 21) & 511) as usize);
        assert_eq!(pde & 0x83, 0x83);
        assert_eq!((pde & !0x1f_ffff & !0xfff_u64) | (addr & 0x1f_ffff), addr);
    }
}
