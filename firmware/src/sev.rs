//! SEV data in OVMF-style firmware images, found through the footer GUID table
//! ([`crate::ovmf`]): the SEV metadata (the sections the VMM must pre-validate for an
//! SEV-SNP guest), the SEV-ES reset block (where application processors start), the
//! SEV hashes table area, and the kernel-hashes page QEMU builds for measured direct
//! boot (`-kernel`/`-initrd`/`-append` with `kernel-hashes=on`).
//!
//! Metadata layout (edk2 `OvmfPkg/ResetVector/X64/OvmfSevMetadata.asm`): the footer
//! entry [`SEV_METADATA_GUID`] holds a `u32` offset of the header from the end of the
//! image; the header is `"ASEV"`, `u32` length (header + descriptors), `u32` version
//! (1) and `u32` section count, followed by that many 12-byte descriptors
//! (`u32` base GPA, `u32` size, `u32` type).

use thiserror::Error;

use crate::ovmf::{FooterTable, Guid, OvmfError, SEV_ES_RESET_BLOCK_GUID, SEV_HASH_TABLE_GUID, SEV_METADATA_GUID};

/// Size of a guest page.
pub const PAGE_SIZE: u32 = 0x1000;

/// The SEV metadata header signature.
pub const SEV_METADATA_SIGNATURE: [u8; 4] = *b"ASEV";
/// The only SEV metadata version defined.
pub const SEV_METADATA_VERSION: u32 = 1;
/// Size of the SEV metadata header.
const HEADER_LEN: usize = 16;
/// Size of one section descriptor.
const SECTION_LEN: usize = 12;

/// GUID that opens the SEV hashes table (QEMU `sev_hash_table_header_guid`).
pub const SEV_HASH_TABLE_HEADER_GUID: Guid = Guid::from_str("9438d606-4f22-4cc9-b479-a793d411fd21");
/// GUID of the kernel entry of the SEV hashes table.
pub const SEV_KERNEL_ENTRY_GUID: Guid = Guid::from_str("4de79437-abd2-427f-b835-d5b172d2045b");
/// GUID of the initrd entry of the SEV hashes table.
pub const SEV_INITRD_ENTRY_GUID: Guid = Guid::from_str("44baf731-3a2f-4bd7-9af1-41e29169781d");
/// GUID of the command-line entry of the SEV hashes table.
pub const SEV_CMDLINE_ENTRY_GUID: Guid = Guid::from_str("97d02dd8-bd20-4c94-aa78-e7714d36ab2a");

/// One hashes-table entry: GUID, `u16` length, SHA-256.
const HASH_ENTRY_LEN: usize = 16 + 2 + 32;
/// The hashes table: GUID, `u16` length, then the cmdline, initrd and kernel entries.
pub const SEV_HASH_TABLE_LEN: usize = 16 + 2 + 3 * HASH_ENTRY_LEN;
/// The hashes table as QEMU writes it: padded with zeros to a multiple of 16 bytes.
pub const SEV_HASH_TABLE_PADDED_LEN: usize = (SEV_HASH_TABLE_LEN + 15) & !15;

/// Types of SEV metadata sections, with their values in the descriptors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum SevSectionType {
    /// Memory the firmware uses before it can validate pages itself (SEC); the VMM
    /// pre-validates it as zero pages.
    SnpSecMem = 1,
    /// The SNP secrets page.
    SnpSecrets = 2,
    /// The SNP CPUID page.
    Cpuid = 3,
    /// The SVSM calling area page.
    SvsmCaa = 4,
    /// The page holding the SEV hashes table (measured direct boot).
    SnpKernelHashes = 0x10,
}

impl SevSectionType {
    /// The type for a descriptor value, if defined.
    pub fn from_u32(value: u32) -> Option<Self> {
        match value {
            1 => Some(Self::SnpSecMem),
            2 => Some(Self::SnpSecrets),
            3 => Some(Self::Cpuid),
            4 => Some(Self::SvsmCaa),
            0x10 => Some(Self::SnpKernelHashes),
            _ => None,
        }
    }

    /// The name edk2 and sev-snp-measure use.
    pub fn name(self) -> &'static str {
        match self {
            Self::SnpSecMem => "SNP_SEC_MEM",
            Self::SnpSecrets => "SNP_SECRETS",
            Self::Cpuid => "CPUID",
            Self::SvsmCaa => "SVSM_CAA",
            Self::SnpKernelHashes => "SNP_KERNEL_HASHES",
        }
    }
}

impl std::fmt::Display for SevSectionType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One SEV metadata section: a guest-physical range the VMM must pre-validate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SevSection {
    /// Guest-physical base, page-aligned.
    pub gpa: u32,
    /// Size in bytes, a non-zero whole number of pages.
    pub size: u32,
    /// What the section is.
    pub section_type: SevSectionType,
}

impl SevSection {
    /// One past the last byte (computed in 64 bits: a section may end at 4 GiB).
    pub fn end(&self) -> u64 {
        u64::from(self.gpa) + u64::from(self.size)
    }
}

/// The SEV metadata header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SevMetadataHeader {
    /// Offset of the header from the end of the image (the footer entry's value).
    pub offset_from_end: u32,
    /// Length of the header and the descriptors.
    pub length: u32,
    /// Version ([`SEV_METADATA_VERSION`]).
    pub version: u32,
    /// Number of section descriptors.
    pub section_count: u32,
}

/// The SEV metadata: its header and sections, in descriptor order (the order a launch
/// issues them, which is measured).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SevMetadata {
    /// The header.
    pub header: SevMetadataHeader,
    /// The sections, in descriptor order.
    pub sections: Vec<SevSection>,
}

/// The SEV hashes table area named by the footer entry [`SEV_HASH_TABLE_GUID`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SevHashTableArea {
    /// Guest-physical address where QEMU writes the table.
    pub gpa: u32,
    /// Size of the area reserved for it.
    pub size: u32,
}

/// Everything SEV in a firmware image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SevFirmware {
    /// The SEV metadata, if the image has any.
    pub metadata: Option<SevMetadata>,
    /// The SEV-ES reset block: the address (CS base + IP) where application
    /// processors start, if the image has one.
    pub ap_reset_eip: Option<u32>,
    /// The SEV hashes table area, if the image has one with a non-zero address
    /// (Debian's OVMF.fd has the entry with base and size 0: not supported).
    pub hash_table: Option<SevHashTableArea>,
}

/// SHA-256 digests of what QEMU measures for a direct boot with kernel hashes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelHashes {
    /// SHA-256 of the command line including its terminating NUL (`"\0"` when there is
    /// none).
    pub cmdline: [u8; 32],
    /// SHA-256 of the initrd (of no bytes when there is none).
    pub initrd: [u8; 32],
    /// SHA-256 of the whole kernel file (the bzImage as given, not what is loaded).
    pub kernel: [u8; 32],
}

/// The measured page holding the SEV hashes table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelHashesPage {
    /// Guest-physical address of the page (the SNP_KERNEL_HASHES section).
    pub gpa: u32,
    /// The page: zeros, with the padded table at the hashes table area's offset.
    pub bytes: Box<[u8; PAGE_SIZE as usize]>,
}

/// Errors from reading SEV data in a firmware image.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SevError {
    /// No footer table, or a malformed one (truncated, bad lengths, bad entry sizes).
    #[error("firmware footer GUID table: {0}")]
    Footer(#[source] OvmfError),
    /// The SEV hashes table entry is not 8 bytes (`u32` base, `u32` size).
    #[error("SEV hashes table entry has {len} data bytes, expected 8")]
    HashTableEntrySize {
        /// Its data length.
        len: usize,
    },
    /// The metadata offset points outside the image, or the header does not fit.
    #[error("SEV metadata offset {offset:#x} from the end is outside the {image}-byte image")]
    MetadataOutside {
        /// The offset from the end of the image.
        offset: u32,
        /// The image size.
        image: usize,
    },
    /// The metadata header does not start with "ASEV".
    #[error("SEV metadata at offset {offset:#x} from the end has signature {found:02x?}, expected \"ASEV\"")]
    BadSignature {
        /// The offset from the end of the image.
        offset: u32,
        /// What is there.
        found: [u8; 4],
    },
    /// The metadata version is not 1.
    #[error("SEV metadata version {0} is not supported (expected 1)")]
    BadVersion(u32),
    /// The section descriptors run past the header's length or the image.
    #[error(
        "SEV metadata declares {count} sections in {length} bytes at offset {offset:#x} from the end: \
         the descriptors run outside the metadata or the image"
    )]
    SectionsOutside {
        /// The section count.
        count: u32,
        /// The header's length field.
        length: u32,
        /// The offset from the end of the image.
        offset: u32,
    },
    /// A descriptor has a type this parser does not know.
    #[error("SEV metadata section {index} has unknown type {value:#x}")]
    UnknownSectionType {
        /// Descriptor index.
        index: usize,
        /// Its type field.
        value: u32,
    },
    /// A section is empty, not page-aligned, or runs past 4 GiB.
    #[error(
        "SEV metadata section {index} ({section_type}) at {gpa:#x} (+{size:#x}) is empty, unaligned or past 4 GiB"
    )]
    BadSection {
        /// Descriptor index.
        index: usize,
        /// Its type.
        section_type: SevSectionType,
        /// Its base.
        gpa: u32,
        /// Its size.
        size: u32,
    },
    /// A secrets or CPUID section is not exactly one page.
    #[error("SEV metadata section {index} ({section_type}) has size {size:#x}; it must be one page")]
    NotOnePage {
        /// Descriptor index.
        index: usize,
        /// Its type.
        section_type: SevSectionType,
        /// Its size.
        size: u32,
    },
    /// Two sections overlap.
    #[error("SEV metadata sections {a} ({a_type} at {a_gpa:#x}) and {b} ({b_type} at {b_gpa:#x}) overlap")]
    SectionsOverlap {
        /// First section's index.
        a: usize,
        /// Its type.
        a_type: SevSectionType,
        /// Its base.
        a_gpa: u32,
        /// Second section's index.
        b: usize,
        /// Its type.
        b_type: SevSectionType,
        /// Its base.
        b_gpa: u32,
    },
    /// Kernel hashes were requested but the firmware has no SNP_KERNEL_HASHES section.
    #[error("kernel hashes requested, but the firmware's SEV metadata has no SNP_KERNEL_HASHES section")]
    NoKernelHashesSection,
    /// Kernel hashes were requested but the firmware has no (non-zero) hashes table area.
    #[error("kernel hashes requested, but the firmware has no SEV hashes table area ({SEV_HASH_TABLE_GUID})")]
    NoHashTable,
    /// The SNP_KERNEL_HASHES section is not one page.
    #[error("the SNP_KERNEL_HASHES section has size {0:#x}; it must be one page")]
    KernelHashesSectionSize(u32),
    /// The hashes table area does not hold the table inside the SNP_KERNEL_HASHES page.
    #[error(
        "SEV hashes table area {gpa:#x} (+{size:#x}) cannot hold the {SEV_HASH_TABLE_PADDED_LEN}-byte table \
         inside the SNP_KERNEL_HASHES page at {page:#x}"
    )]
    HashTableOutsidePage {
        /// The area's address.
        gpa: u32,
        /// The area's size.
        size: u32,
        /// The SNP_KERNEL_HASHES page.
        page: u32,
    },
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

impl SevFirmware {
    /// Parses the SEV data of `image` (an OVMF-style firmware image, loaded so that it
    /// ends at 4 GiB).
    pub fn parse(image: &[u8]) -> Result<Self, SevError> {
        let table = FooterTable::parse(image).map_err(SevError::Footer)?;
        Self::from_table(image, &table)
    }

    /// Reads the SEV data from an already parsed footer table of `image`.
    pub fn from_table(image: &[u8], table: &FooterTable) -> Result<Self, SevError> {
        let metadata = match table.entry_u32(&SEV_METADATA_GUID).map_err(SevError::Footer)? {
            Some(offset) => Some(SevMetadata::parse(image, offset)?),
            None => None,
        };
        let ap_reset_eip = table.entry_u32(&SEV_ES_RESET_BLOCK_GUID).map_err(SevError::Footer)?;
        let hash_table = match table.entry(&SEV_HASH_TABLE_GUID) {
            None => None,
            Some(d) if d.len() == 8 => {
                let area = SevHashTableArea { gpa: le_u32(d, 0), size: le_u32(d, 4) };
                (area.gpa != 0).then_some(area)
            }
            Some(d) => return Err(SevError::HashTableEntrySize { len: d.len() }),
        };
        Ok(Self { metadata, ap_reset_eip, hash_table })
    }

    /// The metadata sections in descriptor order (none without metadata).
    pub fn sections(&self) -> &[SevSection] {
        self.metadata.as_ref().map_or(&[], |m| m.sections.as_slice())
    }

    /// The first section of type `t`, if any.
    pub fn section(&self, t: SevSectionType) -> Option<&SevSection> {
        self.sections().iter().find(|s| s.section_type == t)
    }

    /// Builds the SNP_KERNEL_HASHES page for `hashes` as QEMU does: a zero page with
    /// the padded hashes table at the offset of the hashes table area within the page.
    pub fn kernel_hashes_page(&self, hashes: &KernelHashes) -> Result<KernelHashesPage, SevError> {
        let section = self.section(SevSectionType::SnpKernelHashes).ok_or(SevError::NoKernelHashesSection)?;
        if section.size != PAGE_SIZE {
            return Err(SevError::KernelHashesSectionSize(section.size));
        }
        let area = self.hash_table.ok_or(SevError::NoHashTable)?;
        let outside = || SevError::HashTableOutsidePage { gpa: area.gpa, size: area.size, page: section.gpa };
        let offset = area.gpa.checked_sub(section.gpa).ok_or_else(outside)? as usize;
        if (area.size as usize) < SEV_HASH_TABLE_PADDED_LEN || offset + SEV_HASH_TABLE_PADDED_LEN > PAGE_SIZE as usize {
            return Err(outside());
        }
        let mut bytes = Box::new([0u8; PAGE_SIZE as usize]);
        bytes[offset..offset + SEV_HASH_TABLE_PADDED_LEN].copy_from_slice(&hashes.table());
        Ok(KernelHashesPage { gpa: section.gpa, bytes })
    }
}

impl SevMetadata {
    /// Parses the metadata whose header is `offset_from_end` bytes before the end of
    /// `image`, checking the sections (known types, page-aligned, below 4 GiB,
    /// secrets and CPUID one page each, no two overlapping).
    pub fn parse(image: &[u8], offset_from_end: u32) -> Result<Self, SevError> {
        let outside = || SevError::MetadataOutside { offset: offset_from_end, image: image.len() };
        let start = image.len().checked_sub(offset_from_end as usize).ok_or_else(outside)?;
        let head = image.get(start..start + HEADER_LEN).ok_or_else(outside)?;
        let signature = [head[0], head[1], head[2], head[3]];
        if signature != SEV_METADATA_SIGNATURE {
            return Err(SevError::BadSignature { offset: offset_from_end, found: signature });
        }
        let header = SevMetadataHeader {
            offset_from_end,
            length: le_u32(head, 4),
            version: le_u32(head, 8),
            section_count: le_u32(head, 12),
        };
        if header.version != SEV_METADATA_VERSION {
            return Err(SevError::BadVersion(header.version));
        }
        let sections_outside = || SevError::SectionsOutside {
            count: header.section_count,
            length: header.length,
            offset: offset_from_end,
        };
        let needed = (header.section_count as usize)
            .checked_mul(SECTION_LEN)
            .and_then(|n| n.checked_add(HEADER_LEN))
            .filter(|&n| n <= header.length as usize)
            .ok_or_else(sections_outside)?;
        let descriptors = image.get(start + HEADER_LEN..start + needed).ok_or_else(sections_outside)?;
        let mut sections = Vec::with_capacity(header.section_count as usize);
        for (index, d) in descriptors.chunks_exact(SECTION_LEN).enumerate() {
            let (gpa, size, value) = (le_u32(d, 0), le_u32(d, 4), le_u32(d, 8));
            let section_type = SevSectionType::from_u32(value).ok_or(SevError::UnknownSectionType { index, value })?;
            let section = SevSection { gpa, size, section_type };
            if size == 0 || gpa % PAGE_SIZE != 0 || size % PAGE_SIZE != 0 || section.end() > 1 << 32 {
                return Err(SevError::BadSection { index, section_type, gpa, size });
            }
            if matches!(section_type, SevSectionType::SnpSecrets | SevSectionType::Cpuid) && size != PAGE_SIZE {
                return Err(SevError::NotOnePage { index, section_type, size });
            }
            sections.push(section);
        }
        check_overlaps(&sections)?;
        Ok(Self { header, sections })
    }
}

fn check_overlaps(sections: &[SevSection]) -> Result<(), SevError> {
    let mut order: Vec<usize> = (0..sections.len()).collect();
    order.sort_by_key(|&i| sections[i].gpa);
    for w in order.windows(2) {
        let (a, b) = (sections[w[0]], sections[w[1]]);
        if a.end() > u64::from(b.gpa) {
            let (i, j) = (w[0].min(w[1]), w[0].max(w[1]));
            let (a, b) = (sections[i], sections[j]);
            return Err(SevError::SectionsOverlap {
                a: i,
                a_type: a.section_type,
                a_gpa: a.gpa,
                b: j,
                b_type: b.section_type,
                b_gpa: b.gpa,
            });
        }
    }
    Ok(())
}

impl KernelHashes {
    /// The hashes table as QEMU lays it out, padded with zeros to 16 bytes: the header
    /// GUID and the table's unpadded length, then the cmdline, initrd and kernel
    /// entries (each GUID, `u16` entry length, SHA-256).
    pub fn table(&self) -> [u8; SEV_HASH_TABLE_PADDED_LEN] {
        let mut t = [0u8; SEV_HASH_TABLE_PADDED_LEN];
        t[..16].copy_from_slice(&SEV_HASH_TABLE_HEADER_GUID.0);
        t[16..18].copy_from_slice(&(SEV_HASH_TABLE_LEN as u16).to_le_bytes());
        let entries = [
            (SEV_CMDLINE_ENTRY_GUID, &self.cmdline),
            (SEV_INITRD_ENTRY_GUID, &self.initrd),
            (SEV_KERNEL_ENTRY_GUID, &self.kernel),
        ];
        for (i, (guid, hash)) in entries.into_iter().enumerate() {
            let e = &mut t[18 + i * HASH_ENTRY_LEN..18 + (i + 1) * HASH_ENTRY_LEN];
            e[..16].copy_from_slice(&guid.0);
            e[16..18].copy_from_slice(&(HASH_ENTRY_LEN as u16).to_le_bytes());
            e[18..].copy_from_slice(hash);
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ovmf::FOOTER_GUID;

    const IMAGE: usize = 0x2000;
    /// Where the crafted images put the metadata header, from the end.
    const META_OFFSET: u32 = 0x800;

    /// An image with a footer table (`entries`) and, when `sections` is given, an
    /// "ASEV" header at [`META_OFFSET`] from the end describing them.
    fn image(entries: &[(Guid, Vec<u8>)], sections: Option<&[(u32, u32, u32)]>) -> Vec<u8> {
        let mut table = Vec::new();
        for (g, d) in entries {
            table.extend_from_slice(d);
            table.extend_from_slice(&((d.len() + 18) as u16).to_le_bytes());
            table.extend_from_slice(&g.0);
        }
        table.extend_from_slice(&((table.len() + 18) as u16).to_le_bytes());
        table.extend_from_slice(&FOOTER_GUID.0);
        let mut img = vec![0u8; IMAGE];
        let end = IMAGE - 32;
        img[end - table.len()..end].copy_from_slice(&table);
        if let Some(sections) = sections {
            let start = IMAGE - META_OFFSET as usize;
            let mut meta = Vec::new();
            meta.extend_from_slice(b"ASEV");
            meta.extend_from_slice(&((16 + 12 * sections.len()) as u32).to_le_bytes());
            meta.extend_from_slice(&1u32.to_le_bytes());
            meta.extend_from_slice(&(sections.len() as u32).to_le_bytes());
            for (gpa, size, t) in sections {
                for v in [gpa, size, t] {
                    meta.extend_from_slice(&v.to_le_bytes());
                }
            }
            img[start..start + meta.len()].copy_from_slice(&meta);
        }
        img
    }

    fn meta_entry() -> (Guid, Vec<u8>) {
        (SEV_METADATA_GUID, META_OFFSET.to_le_bytes().to_vec())
    }

    fn hash_entry(gpa: u32, size: u32) -> (Guid, Vec<u8>) {
        let mut d = gpa.to_le_bytes().to_vec();
        d.extend_from_slice(&size.to_le_bytes());
        (SEV_HASH_TABLE_GUID, d)
    }

    const SAMPLE: [(u32, u32, u32); 4] =
        [(0x80_0000, 0x9000, 1), (0x80d000, 0x1000, 2), (0x80e000, 0x1000, 3), (0x80f000, 0x1000, 0x10)];

    fn hashes() -> KernelHashes {
        KernelHashes { cmdline: [1; 32], initrd: [2; 32], kernel: [3; 32] }
    }

    #[test]
    fn crafted_metadata_sections_are_read_in_descriptor_order() {
        let img = image(
            &[meta_entry(), (SEV_ES_RESET_BLOCK_GUID, 0x80b004u32.to_le_bytes().to_vec()), hash_entry(0x80fc00, 0x400)],
            Some(&SAMPLE),
        );

        let fw = SevFirmware::parse(&img).unwrap();

        let m = fw.metadata.as_ref().unwrap();
        assert_eq!(
            m.header,
            SevMetadataHeader { offset_from_end: META_OFFSET, length: 64, version: 1, section_count: 4 }
        );
        let types: Vec<_> = fw.sections().iter().map(|s| s.section_type).collect();
        assert_eq!(
            types,
            [
                SevSectionType::SnpSecMem,
                SevSectionType::SnpSecrets,
                SevSectionType::Cpuid,
                SevSectionType::SnpKernelHashes
            ]
        );
        assert_eq!(fw.ap_reset_eip, Some(0x80b004));
        assert_eq!(fw.hash_table, Some(SevHashTableArea { gpa: 0x80fc00, size: 0x400 }));
    }

    #[test]
    fn image_without_sev_entries_has_no_sev_data() {
        let img = image(&[], None);

        let fw = SevFirmware::parse(&img).unwrap();

        assert_eq!(fw, SevFirmware { metadata: None, ap_reset_eip: None, hash_table: None });
        assert!(fw.sections().is_empty());
    }

    #[test]
    fn image_without_footer_table_is_rejected() {
        let img = vec![0u8; IMAGE];

        let err = SevFirmware::parse(&img).unwrap_err();

        assert!(matches!(err, SevError::Footer(OvmfError::NoFooter(_))), "{err}");
    }

    #[test]
    fn truncated_footer_table_is_rejected() {
        let mut img = image(&[meta_entry()], Some(&SAMPLE));
        let len_at = IMAGE - 32 - 18;
        img[len_at..len_at + 2].copy_from_slice(&30u16.to_le_bytes()); // cuts the entry in half

        let err = SevFirmware::parse(&img).unwrap_err();

        assert!(matches!(err, SevError::Footer(_)), "{err}");
    }

    #[test]
    fn metadata_offset_outside_the_image_is_rejected() {
        for offset in [IMAGE as u32 + 1, 8, 0] {
            let img = image(&[(SEV_METADATA_GUID, offset.to_le_bytes().to_vec())], None);

            let err = SevFirmware::parse(&img).unwrap_err();

            assert_eq!(err, SevError::MetadataOutside { offset, image: IMAGE }, "offset {offset:#x}");
        }
    }

    #[test]
    fn metadata_with_bad_signature_or_version_is_rejected() {
        let mut img = image(&[meta_entry()], Some(&SAMPLE));
        let start = IMAGE - META_OFFSET as usize;
        img[start + 8] = 2;
        assert_eq!(SevFirmware::parse(&img), Err(SevError::BadVersion(2)));
        img[start] = b'X';
        assert!(matches!(SevFirmware::parse(&img), Err(SevError::BadSignature { .. })));
    }

    #[test]
    fn sections_beyond_the_metadata_length_or_the_image_are_rejected() {
        let mut img = image(&[meta_entry()], Some(&SAMPLE));
        let start = IMAGE - META_OFFSET as usize;
        img[start + 12..start + 16].copy_from_slice(&5u32.to_le_bytes()); // 5 sections in a 4-section header

        assert!(matches!(SevFirmware::parse(&img), Err(SevError::SectionsOutside { count: 5, .. })));

        img[start + 4..start + 8].copy_from_slice(&u32::MAX.to_le_bytes());
        img[start + 12..start + 16].copy_from_slice(&0x1000_0000u32.to_le_bytes()); // past the image
        assert!(matches!(SevFirmware::parse(&img), Err(SevError::SectionsOutside { .. })));
    }

    #[test]
    fn unknown_section_type_is_rejected() {
        let img = image(&[meta_entry()], Some(&[(0x80_0000, 0x1000, 1), (0x80_1000, 0x1000, 7)]));

        assert_eq!(SevFirmware::parse(&img), Err(SevError::UnknownSectionType { index: 1, value: 7 }));
    }

    #[test]
    fn overlapping_sections_are_rejected_whatever_the_order() {
        let img = image(&[meta_entry()], Some(&[(0x80_2000, 0x1000, 2), (0x80_0000, 0x3000, 1)]));

        let err = SevFirmware::parse(&img).unwrap_err();

        assert_eq!(
            err,
            SevError::SectionsOverlap {
                a: 0,
                a_type: SevSectionType::SnpSecrets,
                a_gpa: 0x80_2000,
                b: 1,
                b_type: SevSectionType::SnpSecMem,
                b_gpa: 0x80_0000
            }
        );
    }

    #[test]
    fn empty_unaligned_or_wrapping_sections_are_rejected() {
        for bad in [(0x80_0000, 0, 1), (0x80_0800, 0x1000, 1), (0x80_0000, 0x800, 1), (0xffff_f000, 0x2000, 1)] {
            let img = image(&[meta_entry()], Some(&[bad]));

            assert!(matches!(SevFirmware::parse(&img), Err(SevError::BadSection { index: 0, .. })), "{bad:x?}");
        }
        let img = image(&[meta_entry()], Some(&[(0x80_0000, 0x2000, 3)]));
        assert!(matches!(
            SevFirmware::parse(&img),
            Err(SevError::NotOnePage { section_type: SevSectionType::Cpuid, .. })
        ));
    }

    #[test]
    fn hashes_table_entry_of_wrong_size_is_rejected() {
        let img = image(&[(SEV_HASH_TABLE_GUID, vec![0; 4])], None);

        assert_eq!(SevFirmware::parse(&img), Err(SevError::HashTableEntrySize { len: 4 }));
    }

    #[test]
    fn hashes_table_entry_with_zero_base_means_unsupported() {
        let img = image(&[hash_entry(0, 0)], None);

        assert_eq!(SevFirmware::parse(&img).unwrap().hash_table, None);
    }

    #[test]
    fn hashes_table_layout_matches_qemu() {
        let t = hashes().table();

        assert_eq!(SEV_HASH_TABLE_LEN, 168);
        assert_eq!(t.len(), 176);
        assert_eq!(t[..16], SEV_HASH_TABLE_HEADER_GUID.0);
        assert_eq!(t[..4], [0x06, 0xd6, 0x38, 0x94]);
        assert_eq!(t[16..18], 168u16.to_le_bytes());
        assert_eq!(t[18..34], SEV_CMDLINE_ENTRY_GUID.0);
        assert_eq!(t[34..36], 50u16.to_le_bytes());
        assert_eq!(t[36..68], [1; 32]);
        assert_eq!(t[68..84], SEV_INITRD_ENTRY_GUID.0);
        assert_eq!(t[86..118], [2; 32]);
        assert_eq!(t[118..134], SEV_KERNEL_ENTRY_GUID.0);
        assert_eq!(t[136..168], [3; 32]);
        assert_eq!(t[168..], [0; 8]);
    }

    #[test]
    fn kernel_hashes_page_puts_the_table_at_the_area_offset() {
        let img = image(&[meta_entry(), hash_entry(0x80fc00, 0x400)], Some(&SAMPLE));
        let fw = SevFirmware::parse(&img).unwrap();

        let page = fw.kernel_hashes_page(&hashes()).unwrap();

        assert_eq!(page.gpa, 0x80f000);
        assert!(page.bytes[..0xc00].iter().all(|&b| b == 0));
        assert_eq!(page.bytes[0xc00..0xc00 + SEV_HASH_TABLE_PADDED_LEN], hashes().table());
        assert!(page.bytes[0xc00 + SEV_HASH_TABLE_PADDED_LEN..].iter().all(|&b| b == 0));
    }

    #[test]
    fn kernel_hashes_without_the_section_are_rejected() {
        let img = image(&[meta_entry(), hash_entry(0x80fc00, 0x400)], Some(&SAMPLE[..3]));
        let fw = SevFirmware::parse(&img).unwrap();

        assert_eq!(fw.kernel_hashes_page(&hashes()), Err(SevError::NoKernelHashesSection));
    }

    #[test]
    fn kernel_hashes_without_a_table_area_are_rejected() {
        let img = image(&[meta_entry(), hash_entry(0, 0)], Some(&SAMPLE));
        let fw = SevFirmware::parse(&img).unwrap();

        assert_eq!(fw.kernel_hashes_page(&hashes()), Err(SevError::NoHashTable));
    }

    #[test]
    fn kernel_hashes_table_area_outside_the_page_or_too_small_is_rejected() {
        for (gpa, size) in [(0x80e000, 0x400), (0x80ffc0, 0x400), (0x80fc00, 0x80)] {
            let img = image(&[meta_entry(), hash_entry(gpa, size)], Some(&SAMPLE));
            let fw = SevFirmware::parse(&img).unwrap();

            let err = fw.kernel_hashes_page(&hashes()).unwrap_err();

            assert!(matches!(err, SevError::HashTableOutsidePage { .. }), "{gpa:#x}+{size:#x}: {err}");
        }
    }

    #[test]
    fn kernel_hashes_section_larger_than_a_page_is_rejected() {
        let mut sections = SAMPLE;
        sections[3].1 = 0x2000;
        let img = image(&[meta_entry(), hash_entry(0x80fc00, 0x400)], Some(&sections));
        let fw = SevFirmware::parse(&img).unwrap();

        assert_eq!(fw.kernel_hashes_page(&hashes()), Err(SevError::KernelHashesSectionSize(0x2000)));
    }
}

#[cfg(test)]
mod debian_ovmf {
    use super::*;

    fn debian_ovmf() -> Vec<u8> {
        std::fs::read("/usr/share/ovmf/OVMF.fd")
            .unwrap_or_else(|e| panic!("/usr/share/ovmf/OVMF.fd: {e}: apt-get install ovmf (scripts/setup.sh does)"))
    }

    #[test]
    fn debian_ovmf_sev_metadata_has_the_five_known_sections() {
        let img = debian_ovmf();

        let fw = SevFirmware::parse(&img).unwrap();

        let m = fw.metadata.as_ref().unwrap();
        assert_eq!(m.header.offset_from_end, 0x52c);
        assert_eq!(m.header.section_count, 5);
        use SevSectionType::*;
        let expected = [
            (0x80_0000, 0x9000, SnpSecMem),
            (0x80_a000, 0x3000, SnpSecMem),
            (0x80_d000, 0x1000, SnpSecrets),
            (0x80_e000, 0x1000, Cpuid),
            (0x80_f000, 0x11000, SnpSecMem),
        ];
        let got: Vec<_> = m.sections.iter().map(|s| (s.gpa, s.size, s.section_type)).collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn debian_ovmf_has_an_ap_reset_block_and_no_hashes_table() {
        let img = debian_ovmf();

        let fw = SevFirmware::parse(&img).unwrap();

        assert_eq!(fw.ap_reset_eip, Some(0x80b004));
        assert_eq!(fw.hash_table, None);
        assert_eq!(
            fw.kernel_hashes_page(&KernelHashes { cmdline: [0; 32], initrd: [0; 32], kernel: [0; 32] }),
            Err(SevError::NoKernelHashesSection)
        );
    }
}
