//! Boot information for Linux: the zero page (64-bit boot protocol) and the PVH start
//! info, each returned as bytes at a guest address for the caller to place.

use linux_loader::loader::bootparam::{boot_e820_entry, boot_params, setup_header};
use linux_loader::loader::elf::start_info::{hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info};
use vm_memory::ByteValued;

use crate::layout::{E820Entry, PVH_INFO_START, ZERO_PAGE_START};

/// `"HdrS"`: the setup header's magic.
const HDRS_MAGIC: u32 = 0x5372_6448;
/// The boot sector signature the setup header carries.
const BOOT_FLAG: u16 = 0xaa55;
/// `type_of_loader` for a boot loader with no assigned ID.
const LOADER_UNDEFINED: u8 = 0xff;
/// `loadflags` bit: the kernel was loaded high (at 1 MiB or above).
const LOADED_HIGH: u8 = 0x01;
/// PVH start info magic (`XEN_HVM_START_MAGIC_VALUE`).
const PVH_MAGIC: u32 = 0x336e_c578;

/// Where the command line and initrd were placed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BootBlobs {
    /// Guest address of the NUL-terminated command line.
    pub cmdline_addr: u64,
    /// Length of the command line, without its NUL.
    pub cmdline_len: u32,
    /// Guest address and size of the initrd, if any.
    pub initrd: Option<(u64, u64)>,
}

/// The Linux zero page: `header` (from a bzImage, or a synthesized one for ELF
/// kernels) with the loader fields filled, and the e820 map.
pub fn zero_page(header: Option<setup_header>, blobs: &BootBlobs, e820: &[E820Entry]) -> (u64, Vec<u8>) {
    let hdr = header.unwrap_or_else(|| setup_header {
        header: HDRS_MAGIC,
        boot_flag: BOOT_FLAG,
        kernel_alignment: 0x0100_0000,
        ..Default::default()
    });
    let mut params = boot_params { hdr, ..Default::default() };
    params.hdr.type_of_loader = LOADER_UNDEFINED;
    params.hdr.loadflags |= LOADED_HIGH;
    params.hdr.cmd_line_ptr = blobs.cmdline_addr as u32;
    params.hdr.cmdline_size = blobs.cmdline_len;
    if let Some((addr, size)) = blobs.initrd {
        params.hdr.ramdisk_image = addr as u32;
        params.hdr.ramdisk_size = size as u32;
    }
    let n = e820.len().min(params.e820_table.len());
    for (slot, e) in params.e820_table.iter_mut().zip(&e820[..n]) {
        *slot = boot_e820_entry { addr: e.addr, size: e.size, r#type: e.kind };
    }
    params.e820_entries = n as u8;
    (ZERO_PAGE_START, params.as_slice().to_vec())
}

/// The PVH `hvm_start_info` (version 1) followed by its memory map and, with an
/// initrd, one module entry; all at [`PVH_INFO_START`].
pub fn pvh_start_info(blobs: &BootBlobs, e820: &[E820Entry]) -> (u64, Vec<u8>) {
    let info_size = std::mem::size_of::<hvm_start_info>() as u64;
    let memmap_addr = PVH_INFO_START + info_size;
    let memmap_size = (e820.len() * std::mem::size_of::<hvm_memmap_table_entry>()) as u64;
    let modlist_addr = memmap_addr + memmap_size;
    let info = hvm_start_info {
        magic: PVH_MAGIC,
        version: 1,
        cmdline_paddr: blobs.cmdline_addr,
        memmap_paddr: memmap_addr,
        memmap_entries: e820.len() as u32,
        nr_modules: u32::from(blobs.initrd.is_some()),
        modlist_paddr: if blobs.initrd.is_some() { modlist_addr } else { 0 },
        ..Default::default()
    };
    let mut bytes = info.as_slice().to_vec();
    for e in e820 {
        let entry = hvm_memmap_table_entry { addr: e.addr, size: e.size, type_: e.kind, reserved: 0 };
        bytes.extend_from_slice(entry.as_slice());
    }
    if let Some((paddr, size)) = blobs.initrd {
        let module = hvm_modlist_entry { paddr, size, ..Default::default() };
        bytes.extend_from_slice(module.as_slice());
    }
    (PVH_INFO_START, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::MemoryLayout;

    fn read_u32(b: &[u8], off: usize) -> u32 {
        u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
    }

    #[test]
    fn zero_page_carries_cmdline_initrd_and_e820() {
        let e820 = MemoryLayout::new(64 << 20).unwrap().e820();
        let blobs = BootBlobs { cmdline_addr: 0x20000, cmdline_len: 12, initrd: Some((0x300_0000, 4096)) };
        let (addr, b) = zero_page(None, &blobs, &e820);
        assert_eq!(addr, ZERO_PAGE_START);
        assert_eq!(b.len(), 4096);
        assert_eq!(read_u32(&b, 0x202), HDRS_MAGIC);
        assert_eq!(read_u32(&b, 0x228), 0x20000); // cmd_line_ptr
        assert_eq!(read_u32(&b, 0x218), 0x300_0000); // ramdisk_image
        assert_eq!(read_u32(&b, 0x21c), 4096); // ramdisk_size
        assert_eq!(b[0x1e8] as usize, e820.len());
        assert_eq!(b[0x210], LOADER_UNDEFINED);
    }

    #[test]
    fn pvh_start_info_points_at_its_own_memmap_and_module() {
        let e820 = MemoryLayout::new(64 << 20).unwrap().e820();
        let blobs = BootBlobs { cmdline_addr: 0x20000, cmdline_len: 3, initrd: Some((0x100_0000, 10)) };
        let (addr, b) = pvh_start_info(&blobs, &e820);
        assert_eq!(read_u32(&b, 0), PVH_MAGIC);
        let memmap = u64::from_le_bytes(b[40..48].try_into().unwrap());
        assert_eq!(memmap, addr + 56);
        assert_eq!(read_u32(&b, 48) as usize, e820.len());
        assert_eq!(read_u32(&b, 12), 1); // nr_modules
        let modlist = u64::from_le_bytes(b[16..24].try_into().unwrap());
        assert_eq!(modlist, memmap + 24 * e820.len() as u64);
        assert_eq!(b.len() as u64, modlist - addr + 32);
    }
}
