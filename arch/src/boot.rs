//! Boot information for Linux: the zero page (64-bit boot protocol), the PVH start
//! info, and the `setup_data` list of an SEV-SNP guest (the CC blob), each returned as
//! bytes at a guest address for the caller to place.

use linux_loader::loader::bootparam::{boot_e820_entry, boot_params, setup_header};
use linux_loader::loader::elf::start_info::{hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info};
use vm_memory::ByteValued;

use crate::layout::{E820Entry, PAGE_SIZE, PVH_INFO_START, ZERO_PAGE_START};

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

/// `setup_data` type of the confidential-computing blob pointer (`SETUP_CC_BLOB`).
pub const SETUP_CC_BLOB: u32 = 7;
/// `cc_blob_sev_info.magic`: `"AMDE"` (`CC_BLOB_SEV_HDR_MAGIC`).
pub const CC_BLOB_SEV_HDR_MAGIC: u32 = 0x4544_4d41;
/// `cc_blob_sev_info.version`, as OVMF writes it.
pub const CC_BLOB_SEV_VERSION: u16 = 1;
/// Size of `struct cc_blob_sev_info` (packed).
pub const CC_BLOB_SEV_INFO_SIZE: usize = 40;
/// Size of `struct setup_data`'s header (next, type, len).
pub const SETUP_DATA_HEADER_SIZE: usize = 16;
/// Offset of the CC blob from the start of [`snp_cc_blob_setup_data`]'s bytes: after
/// the `setup_data` header and its 4-byte payload, 8-byte aligned.
pub const CC_BLOB_OFFSET: u64 = 24;

/// What a confidential Linux boot's loader (cvmm's firmware, planned on the host)
/// adds to the zero page.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ZeroPageExtras {
    /// `hdr.code32_start`: where the protected-mode kernel was loaded (0: keep the
    /// image's value).
    pub code32_start: u32,
    /// `hdr.setup_data`: GPA of the first `setup_data` entry (0: none).
    pub setup_data: u64,
    /// `cc_blob_address`: GPA of the SEV-SNP `cc_blob_sev_info` (0: none).
    pub cc_blob_address: u32,
    /// `acpi_rsdp_addr`: GPA of the ACPI RSDP (0: Linux searches for it).
    pub acpi_rsdp_addr: u64,
}

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
    zero_page_with(header, blobs, e820, &ZeroPageExtras::default())
}

/// [`zero_page`] with the fields of a confidential boot set from `extras`.
pub fn zero_page_with(
    header: Option<setup_header>,
    blobs: &BootBlobs,
    e820: &[E820Entry],
    extras: &ZeroPageExtras,
) -> (u64, Vec<u8>) {
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
    if extras.code32_start != 0 {
        params.hdr.code32_start = extras.code32_start;
    }
    params.hdr.setup_data = extras.setup_data;
    params.cc_blob_address = extras.cc_blob_address;
    params.acpi_rsdp_addr = extras.acpi_rsdp_addr;
    (ZERO_PAGE_START, params.as_slice().to_vec())
}

/// The `setup_data` list of an SEV-SNP Linux guest, to be placed at `gpa`: one
/// `SETUP_CC_BLOB` entry (no successor) whose payload is the 32-bit address of the
/// `cc_blob_sev_info` that follows it at `gpa +` [`CC_BLOB_OFFSET`], which names the
/// secrets and CPUID pages (one page each). Returns the bytes and the blob's GPA (for
/// `boot_params.cc_blob_address`).
pub fn snp_cc_blob_setup_data(gpa: u64, secrets_gpa: u64, cpuid_gpa: u64) -> (Vec<u8>, u64) {
    let blob = gpa + CC_BLOB_OFFSET;
    let mut b = vec![0u8; CC_BLOB_OFFSET as usize + CC_BLOB_SEV_INFO_SIZE];
    // struct setup_data { u64 next; u32 type; u32 len; } + struct cc_setup_data's u32.
    b[8..12].copy_from_slice(&SETUP_CC_BLOB.to_le_bytes());
    b[12..16].copy_from_slice(&4u32.to_le_bytes());
    b[16..20].copy_from_slice(&(blob as u32).to_le_bytes());
    // struct cc_blob_sev_info { u32 magic; u16 version; u16 reserved; u64 secrets_phys;
    // u32 secrets_len; u32 rsvd1; u64 cpuid_phys; u32 cpuid_len; u32 rsvd2; }
    let i = &mut b[CC_BLOB_OFFSET as usize..];
    i[0..4].copy_from_slice(&CC_BLOB_SEV_HDR_MAGIC.to_le_bytes());
    i[4..6].copy_from_slice(&CC_BLOB_SEV_VERSION.to_le_bytes());
    i[8..16].copy_from_slice(&secrets_gpa.to_le_bytes());
    i[16..20].copy_from_slice(&(PAGE_SIZE as u32).to_le_bytes());
    i[24..32].copy_from_slice(&cpuid_gpa.to_le_bytes());
    i[32..36].copy_from_slice(&(PAGE_SIZE as u32).to_le_bytes());
    (b, blob)
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
    fn confidential_extras_land_in_the_zero_page_fields() {
        let e820 = MemoryLayout::new(64 << 20).unwrap().e820();
        let extras = ZeroPageExtras {
            code32_start: 0x100_0000,
            setup_data: 0xf000,
            cc_blob_address: 0xf018,
            acpi_rsdp_addr: 0xe_0000,
        };
        let (_, b) = zero_page_with(None, &BootBlobs::default(), &e820, &extras);
        assert_eq!(read_u32(&b, 0x214), 0x100_0000); // hdr.code32_start
        assert_eq!(u64::from_le_bytes(b[0x250..0x258].try_into().unwrap()), 0xf000); // hdr.setup_data
        assert_eq!(read_u32(&b, 0x13c), 0xf018); // cc_blob_address
        assert_eq!(u64::from_le_bytes(b[0x70..0x78].try_into().unwrap()), 0xe_0000); // acpi_rsdp_addr
                                                                                     // Without extras the fields stay zero.
        let (_, plain) = zero_page(None, &BootBlobs::default(), &e820);
        assert_eq!((read_u32(&plain, 0x13c), read_u32(&plain, 0x250), read_u32(&plain, 0x70)), (0, 0, 0));
    }

    #[test]
    fn cc_blob_setup_data_points_at_a_blob_naming_the_secrets_and_cpuid_pages() {
        let (b, blob) = snp_cc_blob_setup_data(0xf000, 0x3000, 0x4000);
        assert_eq!(blob, 0xf018);
        assert_eq!(u64::from_le_bytes(b[0..8].try_into().unwrap()), 0, "the last entry");
        assert_eq!(read_u32(&b, 8), 7);
        assert_eq!(read_u32(&b, 12), 4);
        assert_eq!(u64::from(read_u32(&b, 16)), blob);
        let i = &b[(blob - 0xf000) as usize..];
        assert_eq!(&i[0..4], b"AMDE");
        assert_eq!(u16::from_le_bytes([i[4], i[5]]), 1);
        assert_eq!(u64::from_le_bytes(i[8..16].try_into().unwrap()), 0x3000);
        assert_eq!(read_u32(i, 16), 4096);
        assert_eq!(u64::from_le_bytes(i[24..32].try_into().unwrap()), 0x4000);
        assert_eq!(read_u32(i, 32), 4096);
        assert_eq!(i.len(), 40);
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
