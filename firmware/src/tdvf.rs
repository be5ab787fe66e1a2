//! The TDVF metadata: the descriptor ("TDVF", length, version, section count) and
//! its sections, which tell the VMM which parts of a TDX firmware image go where in a
//! TD's memory, which are measured into MRTD and which the guest accepts itself.
//!
//! The descriptor is found through the OVMF footer GUID table ([`crate::ovmf`]): the
//! [`TDX_METADATA_GUID`] entry holds its offset from the end of the image. Layout
//! (all little-endian): a 16-byte descriptor (`Signature`, `Length`, `Version`,
//! `NumberOfSectionEntries`, each `u32`) followed by `NumberOfSectionEntries` 32-byte
//! sections (`DataOffset: u32`, `RawDataSize: u32`, `MemoryAddress: u64`,
//! `MemoryDataSize: u64`, `Type: u32`, `Attributes: u32`); `Length` covers both.
//!
//! Every field comes from a host-side file and is untrusted: [`TdvfMetadata::parse`]
//! checks every rule a launch relies on and names the section that breaks one.

use std::fmt;

use thiserror::Error;

use crate::ovmf::{FooterTable, OvmfError, TDX_METADATA_GUID};

/// The descriptor's signature.
pub const TDVF_SIGNATURE: [u8; 4] = *b"TDVF";
/// The only descriptor version defined.
pub const TDVF_VERSION: u32 = 1;
/// Size of the descriptor header.
pub const DESCRIPTOR_SIZE: usize = 16;
/// Size of one section entry.
pub const SECTION_SIZE: usize = 32;
/// Sections' memory ranges are whole pages of this size.
pub const TDVF_PAGE_SIZE: u64 = 0x1000;

/// A section's `Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum SectionType {
    /// Boot firmware volume: code, copied from the image (normally measured).
    Bfv = 0,
    /// Configuration firmware volume (UEFI variables), copied from the image.
    Cfv = 1,
    /// The TD HOB, written by the VMM; its address is RCX at the reset vector.
    TdHob = 2,
    /// Temporary memory (stacks, heap, mailbox) the firmware needs before it accepts
    /// memory itself.
    TempMem = 3,
    /// Permanent memory the firmware owns.
    PermMem = 4,
    /// A payload (kernel image), in the image or loaded by the VMM.
    Payload = 5,
    /// The payload's parameters (command line).
    PayloadParam = 6,
}

impl SectionType {
    /// The type for a raw `Type` value, if defined.
    pub fn from_raw(raw: u32) -> Option<Self> {
        Some(match raw {
            0 => Self::Bfv,
            1 => Self::Cfv,
            2 => Self::TdHob,
            3 => Self::TempMem,
            4 => Self::PermMem,
            5 => Self::Payload,
            6 => Self::PayloadParam,
            _ => return None,
        })
    }

    /// The name the TDVF design guide uses.
    pub fn name(self) -> &'static str {
        match self {
            Self::Bfv => "BFV",
            Self::Cfv => "CFV",
            Self::TdHob => "TD_HOB",
            Self::TempMem => "TempMem",
            Self::PermMem => "PermMem",
            Self::Payload => "Payload",
            Self::PayloadParam => "PayloadParam",
        }
    }
}

impl fmt::Display for SectionType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A section's `Attributes` bits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct SectionAttributes(pub u32);

impl SectionAttributes {
    /// MR.EXTEND: the VMM measures the section's pages into MRTD (TDH.MR.EXTEND).
    pub const MR_EXTEND: u32 = 1 << 0;
    /// PAGE.AUG: the VMM does not add the pages at launch; the guest accepts them.
    pub const PAGE_AUG: u32 = 1 << 1;
    /// Every defined bit.
    pub const KNOWN: u32 = Self::MR_EXTEND | Self::PAGE_AUG;

    /// Whether MR.EXTEND is set.
    pub fn mr_extend(self) -> bool {
        self.0 & Self::MR_EXTEND != 0
    }

    /// Whether PAGE.AUG is set.
    pub fn page_aug(self) -> bool {
        self.0 & Self::PAGE_AUG != 0
    }
}

/// One section, as checked by [`TdvfMetadata::parse`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TdvfSection {
    /// Offset of the section's raw data in the image.
    pub data_offset: u32,
    /// Size of the raw data in the image (0: nothing to copy).
    pub raw_data_size: u32,
    /// Guest-physical address of the section, page-aligned.
    pub memory_address: u64,
    /// Size of the section in guest memory, a non-zero whole number of pages, at least
    /// `raw_data_size`.
    pub memory_data_size: u64,
    /// The section's type.
    pub section_type: SectionType,
    /// The section's attributes (only defined bits are set).
    pub attributes: SectionAttributes,
}

impl TdvfSection {
    /// The section's raw data in `image`: empty when it has none, `None` if `image`
    /// is not the image the section was parsed from and is too short.
    pub fn raw_data<'a>(&self, image: &'a [u8]) -> Option<&'a [u8]> {
        let start = usize::try_from(self.data_offset).ok()?;
        let end = start.checked_add(usize::try_from(self.raw_data_size).ok()?)?;
        image.get(start..end)
    }

    /// The first address past the section's memory range.
    pub fn memory_end(&self) -> u64 {
        // Cannot overflow: parse() rejects sections that wrap.
        self.memory_address.saturating_add(self.memory_data_size)
    }
}

/// The parsed metadata: the sections in descriptor order (the order a launch adds
/// them, which MRTD depends on).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TdvfMetadata {
    /// Offset of the descriptor in the image.
    pub offset: usize,
    /// The sections, in descriptor order.
    pub sections: Vec<TdvfSection>,
}

/// Errors from finding or checking the TDVF metadata. `index` is a section's position
/// in the descriptor.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum TdvfError {
    /// No usable footer GUID table.
    #[error("TDVF metadata: {0}")]
    Footer(#[from] OvmfError),
    /// The footer table has no TDX metadata entry: not a TDX firmware image.
    #[error("firmware image has no TDX metadata entry ({TDX_METADATA_GUID}) in its footer table: not a TDVF image")]
    NoTdxEntry,
    /// The descriptor or its sections run outside the image.
    #[error("TDVF metadata descriptor at {offset:#x} needs {needed} bytes, which runs outside the {image}-byte image")]
    Truncated {
        /// Where the descriptor starts (from the image's end: the entry's value, when
        /// that is past the start of the image).
        offset: u64,
        /// Bytes the descriptor claims.
        needed: u64,
        /// Image size.
        image: usize,
    },
    /// The descriptor does not start with "TDVF".
    #[error("TDVF descriptor at {offset:#x} has signature {found:02x?}, expected \"TDVF\"")]
    BadSignature {
        /// Where the descriptor starts.
        offset: usize,
        /// The four bytes found.
        found: [u8; 4],
    },
    /// A descriptor version other than 1.
    #[error("TDVF descriptor version {0} is not supported (only {TDVF_VERSION})")]
    BadVersion(u32),
    /// `Length` does not match the number of sections.
    #[error("TDVF descriptor length {length} does not match its {sections} sections (expected {expected})")]
    BadLength {
        /// The `Length` field.
        length: u32,
        /// The `NumberOfSectionEntries` field.
        sections: u32,
        /// `16 + 32 * sections`.
        expected: u64,
    },
    /// A descriptor without sections.
    #[error("TDVF descriptor has no sections")]
    NoSections,
    /// An undefined `Type`.
    #[error("TDVF section {index} has unknown type {raw}")]
    UnknownSectionType {
        /// The section.
        index: usize,
        /// Its `Type`.
        raw: u32,
    },
    /// Undefined attribute bits.
    #[error("TDVF section {index} ({section_type}) has unknown attribute bits {attributes:#x}")]
    UnknownAttributes {
        /// The section.
        index: usize,
        /// Its type.
        section_type: SectionType,
        /// Its `Attributes`.
        attributes: u32,
    },
    /// The memory range is not page-aligned or is empty.
    #[error(
        "TDVF section {index} ({section_type}) at {address:#x} (+{size:#x}) is not a non-empty page-aligned range"
    )]
    Unaligned {
        /// The section.
        index: usize,
        /// Its type.
        section_type: SectionType,
        /// `MemoryAddress`.
        address: u64,
        /// `MemoryDataSize`.
        size: u64,
    },
    /// The memory range wraps around the address space.
    #[error("TDVF section {index} ({section_type}) at {address:#x} (+{size:#x}) wraps around the address space")]
    MemoryWraps {
        /// The section.
        index: usize,
        /// Its type.
        section_type: SectionType,
        /// `MemoryAddress`.
        address: u64,
        /// `MemoryDataSize`.
        size: u64,
    },
    /// More raw data than memory to hold it.
    #[error("TDVF section {index} ({section_type}) has {raw:#x} bytes of raw data for {memory:#x} bytes of memory")]
    RawLargerThanMemory {
        /// The section.
        index: usize,
        /// Its type.
        section_type: SectionType,
        /// `RawDataSize`.
        raw: u32,
        /// `MemoryDataSize`.
        memory: u64,
    },
    /// The raw data runs outside the image.
    #[error(
        "TDVF section {index} ({section_type}) raw data at {offset:#x} (+{size:#x}) is outside the {image}-byte image"
    )]
    RawDataOutsideImage {
        /// The section.
        index: usize,
        /// Its type.
        section_type: SectionType,
        /// `DataOffset`.
        offset: u32,
        /// `RawDataSize`.
        size: u32,
        /// Image size.
        image: usize,
    },
    /// A BFV or CFV without raw data.
    #[error("TDVF section {index} ({section_type}) has no raw data")]
    MissingRawData {
        /// The section.
        index: usize,
        /// Its type.
        section_type: SectionType,
    },
    /// A TD_HOB, TempMem or PermMem section with raw data.
    #[error("TDVF section {index} ({section_type}) must not have raw data but has {size:#x} bytes")]
    UnexpectedRawData {
        /// The section.
        index: usize,
        /// Its type.
        section_type: SectionType,
        /// `RawDataSize`.
        size: u32,
    },
    /// PAGE.AUG with MR.EXTEND or with raw data: pages the guest accepts start out
    /// zero and cannot be measured by the VMM.
    #[error("TDVF section {index} ({section_type}) has PAGE.AUG together with MR.EXTEND or raw data")]
    AugConflict {
        /// The section.
        index: usize,
        /// Its type.
        section_type: SectionType,
    },
    /// Two sections' memory ranges overlap.
    #[error("TDVF sections {a} and {b} overlap at {gpa:#x}")]
    Overlap {
        /// One section.
        a: usize,
        /// The other.
        b: usize,
        /// Where the later-starting one begins.
        gpa: u64,
    },
    /// More than one TD_HOB section.
    #[error("TDVF sections {first} and {second} are both TD_HOB sections")]
    DuplicateTdHob {
        /// The first.
        first: usize,
        /// The second.
        second: usize,
    },
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from(u32_at(b, at)) | (u64::from(u32_at(b, at + 4)) << 32)
}

impl TdvfMetadata {
    /// Finds the descriptor through the footer table of `image` and checks it and
    /// every section.
    pub fn parse(image: &[u8]) -> Result<Self, TdvfError> {
        let table = FooterTable::parse(image)?;
        let from_end = table.entry_u32(&TDX_METADATA_GUID)?.ok_or(TdvfError::NoTdxEntry)?;
        let from_end = u64::from(from_end);
        let image_len = image.len() as u64;
        let truncated = |offset: u64, needed: u64| TdvfError::Truncated { offset, needed, image: image.len() };
        let offset = image_len.checked_sub(from_end).ok_or_else(|| truncated(from_end, DESCRIPTOR_SIZE as u64))?;
        if from_end < DESCRIPTOR_SIZE as u64 {
            return Err(truncated(offset, DESCRIPTOR_SIZE as u64));
        }
        // offset < image.len(), so it fits in usize.
        let offset = offset as usize;
        let descriptor = &image[offset..];
        let mut found = [0u8; 4];
        found.copy_from_slice(&descriptor[..4]);
        if found != TDVF_SIGNATURE {
            return Err(TdvfError::BadSignature { offset, found });
        }
        let length = u32_at(descriptor, 4);
        let version = u32_at(descriptor, 8);
        let count = u32_at(descriptor, 12);
        if version != TDVF_VERSION {
            return Err(TdvfError::BadVersion(version));
        }
        let expected = DESCRIPTOR_SIZE as u64 + SECTION_SIZE as u64 * u64::from(count);
        if u64::from(length) != expected {
            return Err(TdvfError::BadLength { length, sections: count, expected });
        }
        if count == 0 {
            return Err(TdvfError::NoSections);
        }
        if expected > from_end {
            return Err(truncated(offset as u64, expected));
        }
        let sections = descriptor[DESCRIPTOR_SIZE..expected as usize]
            .chunks_exact(SECTION_SIZE)
            .enumerate()
            .map(|(index, raw)| parse_section(index, raw, image.len()))
            .collect::<Result<Vec<_>, _>>()?;
        check_layout(&sections)?;
        Ok(Self { offset, sections })
    }

    /// The TD_HOB section, if there is one (there is at most one).
    pub fn td_hob(&self) -> Option<&TdvfSection> {
        self.sections.iter().find(|s| s.section_type == SectionType::TdHob)
    }
}

/// Decodes and checks one 32-byte section entry on its own.
fn parse_section(index: usize, raw: &[u8], image: usize) -> Result<TdvfSection, TdvfError> {
    let data_offset = u32_at(raw, 0);
    let raw_data_size = u32_at(raw, 4);
    let memory_address = u64_at(raw, 8);
    let memory_data_size = u64_at(raw, 16);
    let type_raw = u32_at(raw, 24);
    let attributes = u32_at(raw, 28);
    let section_type = SectionType::from_raw(type_raw).ok_or(TdvfError::UnknownSectionType { index, raw: type_raw })?;
    if attributes & !SectionAttributes::KNOWN != 0 {
        return Err(TdvfError::UnknownAttributes { index, section_type, attributes });
    }
    let attributes = SectionAttributes(attributes);
    let (address, size) = (memory_address, memory_data_size);
    if address % TDVF_PAGE_SIZE != 0 || size % TDVF_PAGE_SIZE != 0 || size == 0 {
        return Err(TdvfError::Unaligned { index, section_type, address, size });
    }
    if address.checked_add(size).is_none() {
        return Err(TdvfError::MemoryWraps { index, section_type, address, size });
    }
    if u64::from(raw_data_size) > size {
        return Err(TdvfError::RawLargerThanMemory { index, section_type, raw: raw_data_size, memory: size });
    }
    if u64::from(data_offset) + u64::from(raw_data_size) > image as u64 {
        return Err(TdvfError::RawDataOutsideImage {
            index,
            section_type,
            offset: data_offset,
            size: raw_data_size,
            image,
        });
    }
    match section_type {
        SectionType::Bfv | SectionType::Cfv if raw_data_size == 0 => {
            return Err(TdvfError::MissingRawData { index, section_type });
        }
        SectionType::TdHob | SectionType::TempMem | SectionType::PermMem if raw_data_size != 0 => {
            return Err(TdvfError::UnexpectedRawData { index, section_type, size: raw_data_size });
        }
        _ => {}
    }
    if attributes.page_aug() && (attributes.mr_extend() || raw_data_size != 0) {
        return Err(TdvfError::AugConflict { index, section_type });
    }
    Ok(TdvfSection { data_offset, raw_data_size, memory_address, memory_data_size, section_type, attributes })
}

/// Checks the rules that involve several sections: no overlaps, one TD_HOB at most.
fn check_layout(sections: &[TdvfSection]) -> Result<(), TdvfError> {
    let mut hobs = sections.iter().enumerate().filter(|(_, s)| s.section_type == SectionType::TdHob).map(|(i, _)| i);
    if let (Some(first), Some(second)) = (hobs.next(), hobs.next()) {
        return Err(TdvfError::DuplicateTdHob { first, second });
    }
    let mut order: Vec<usize> = (0..sections.len()).collect();
    order.sort_by_key(|&i| sections[i].memory_address);
    for w in order.windows(2) {
        let (a, b) = (&sections[w[0]], &sections[w[1]]);
        if a.memory_end() > b.memory_address {
            return Err(TdvfError::Overlap { a: w[0], b: w[1], gpa: b.memory_address });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ovmf::{Guid, FOOTER_GUID};

    /// A section entry for the crafted images: (offset, raw, address, size, type, attributes).
    type Raw = (u32, u32, u64, u64, u32, u32);

    const IMAGE_SIZE: usize = 0x4000;
    /// Where the crafted descriptor goes.
    const DESC_AT: usize = 0x3000;

    fn entry_bytes(r: &Raw) -> Vec<u8> {
        let mut b = Vec::with_capacity(SECTION_SIZE);
        b.extend_from_slice(&r.0.to_le_bytes());
        b.extend_from_slice(&r.1.to_le_bytes());
        b.extend_from_slice(&r.2.to_le_bytes());
        b.extend_from_slice(&r.3.to_le_bytes());
        b.extend_from_slice(&r.4.to_le_bytes());
        b.extend_from_slice(&r.5.to_le_bytes());
        b
    }

    /// Appends a footer table holding `entries` to the last bytes of `image`.
    fn put_footer(image: &mut [u8], entries: &[(Guid, Vec<u8>)]) {
        let mut table = Vec::new();
        for (g, d) in entries {
            table.extend_from_slice(d);
            table.extend_from_slice(&((d.len() + 18) as u16).to_le_bytes());
            table.extend_from_slice(&g.0);
        }
        table.extend_from_slice(&((table.len() + 18) as u16).to_le_bytes());
        table.extend_from_slice(&FOOTER_GUID.0);
        let end = image.len() - 32;
        image[end - table.len()..end].copy_from_slice(&table);
    }

    /// An image with a descriptor at [`DESC_AT`] holding `sections` and the given
    /// header fields.
    fn image_with(sig: &[u8; 4], version: u32, length: Option<u32>, sections: &[Raw]) -> Vec<u8> {
        let mut image = vec![0u8; IMAGE_SIZE];
        let length = length.unwrap_or((DESCRIPTOR_SIZE + SECTION_SIZE * sections.len()) as u32);
        let mut d = Vec::new();
        d.extend_from_slice(sig);
        d.extend_from_slice(&length.to_le_bytes());
        d.extend_from_slice(&version.to_le_bytes());
        d.extend_from_slice(&(sections.len() as u32).to_le_bytes());
        sections.iter().for_each(|s| d.extend_from_slice(&entry_bytes(s)));
        image[DESC_AT..DESC_AT + d.len()].copy_from_slice(&d);
        put_footer(&mut image, &[(TDX_METADATA_GUID, ((IMAGE_SIZE - DESC_AT) as u32).to_le_bytes().to_vec())]);
        image
    }

    fn image(sections: &[Raw]) -> Vec<u8> {
        image_with(b"TDVF", 1, None, sections)
    }

    /// A plausible layout: BFV (measured) from the image, a TD HOB, TempMem and an AUG PermMem.
    fn good_sections() -> Vec<Raw> {
        vec![
            (0x1000, 0x2000, 0xffff_e000, 0x2000, 0, 1),
            (0, 0, 0x80_9000, 0x1000, 2, 0),
            (0, 0, 0x80_0000, 0x6000, 3, 0),
            (0, 0, 0x100_0000, 0x10_0000, 4, 2),
        ]
    }

    #[test]
    fn crafted_image_sections_are_parsed_in_descriptor_order() {
        // Arrange
        let img = image(&good_sections());
        // Act
        let m = TdvfMetadata::parse(&img).unwrap();
        // Assert
        assert_eq!(m.offset, DESC_AT);
        let types: Vec<_> = m.sections.iter().map(|s| s.section_type).collect();
        assert_eq!(types, [SectionType::Bfv, SectionType::TdHob, SectionType::TempMem, SectionType::PermMem]);
        assert!(m.sections[0].attributes.mr_extend() && !m.sections[0].attributes.page_aug());
        assert!(m.sections[3].attributes.page_aug());
        assert_eq!(m.sections[0].raw_data(&img).map(<[u8]>::len), Some(0x2000));
        assert_eq!(m.td_hob().map(|s| s.memory_address), Some(0x80_9000));
    }

    #[test]
    fn raw_data_of_a_shorter_image_is_none() {
        let img = image(&good_sections());
        let m = TdvfMetadata::parse(&img).unwrap();
        assert_eq!(m.sections[0].raw_data(&img[..0x1800]), None);
        assert_eq!(m.sections[1].raw_data(&img), Some(&[][..]));
    }

    #[test]
    fn image_without_footer_table_is_rejected() {
        assert_eq!(TdvfMetadata::parse(&[0u8; 0x1000]), Err(TdvfError::Footer(OvmfError::NoFooter(0x1000 - 48))));
    }

    #[test]
    fn image_without_tdx_entry_is_rejected() {
        let mut img = vec![0u8; IMAGE_SIZE];
        put_footer(&mut img, &[(crate::ovmf::SEV_METADATA_GUID, vec![0; 4])]);
        assert_eq!(TdvfMetadata::parse(&img), Err(TdvfError::NoTdxEntry));
    }

    #[test]
    fn tdx_entry_of_the_wrong_size_is_rejected() {
        let mut img = vec![0u8; IMAGE_SIZE];
        put_footer(&mut img, &[(TDX_METADATA_GUID, vec![0; 3])]);
        assert!(matches!(TdvfMetadata::parse(&img), Err(TdvfError::Footer(OvmfError::EntrySize { .. }))));
    }

    #[test]
    fn descriptor_offset_beyond_the_image_is_rejected() {
        let mut img = image(&good_sections());
        put_footer(&mut img, &[(TDX_METADATA_GUID, 0x10_0000u32.to_le_bytes().to_vec())]);
        assert!(matches!(TdvfMetadata::parse(&img), Err(TdvfError::Truncated { offset: 0x10_0000, .. })));
    }

    #[test]
    fn descriptor_cut_by_the_image_end_is_rejected() {
        // 8 bytes from the end: not even the header fits.
        let mut img = image(&good_sections());
        put_footer(&mut img, &[(TDX_METADATA_GUID, 8u32.to_le_bytes().to_vec())]);
        assert!(matches!(TdvfMetadata::parse(&img), Err(TdvfError::Truncated { needed: 16, .. })));
    }

    #[test]
    fn sections_running_past_the_image_end_are_rejected() {
        // Header 0x80 bytes from the end (clear of the footer table), four sections
        // (0x90 bytes with the header) claimed.
        let mut img = image(&good_sections());
        let d: Vec<u8> = img[DESC_AT..DESC_AT + 16].to_vec();
        img[IMAGE_SIZE - 0x80..IMAGE_SIZE - 0x70].copy_from_slice(&d);
        put_footer(&mut img, &[(TDX_METADATA_GUID, 0x80u32.to_le_bytes().to_vec())]);
        assert!(matches!(TdvfMetadata::parse(&img), Err(TdvfError::Truncated { needed: 0x90, .. })));
    }

    #[test]
    fn bad_signature_is_rejected() {
        let img = image_with(b"TDVG", 1, None, &good_sections());
        assert_eq!(TdvfMetadata::parse(&img), Err(TdvfError::BadSignature { offset: DESC_AT, found: *b"TDVG" }));
    }

    #[test]
    fn bad_version_is_rejected() {
        let img = image_with(b"TDVF", 2, None, &good_sections());
        assert_eq!(TdvfMetadata::parse(&img), Err(TdvfError::BadVersion(2)));
    }

    #[test]
    fn length_not_matching_the_section_count_is_rejected() {
        let img = image_with(b"TDVF", 1, Some(16 + 32 * 3), &good_sections());
        assert!(matches!(TdvfMetadata::parse(&img), Err(TdvfError::BadLength { length: 112, sections: 4, .. })));
    }

    #[test]
    fn descriptor_without_sections_is_rejected() {
        assert_eq!(TdvfMetadata::parse(&image(&[])), Err(TdvfError::NoSections));
    }

    #[test]
    fn unknown_section_type_is_rejected() {
        let mut s = good_sections();
        s[2].4 = 7;
        assert_eq!(TdvfMetadata::parse(&image(&s)), Err(TdvfError::UnknownSectionType { index: 2, raw: 7 }));
    }

    #[test]
    fn unknown_attribute_bits_are_rejected() {
        let mut s = good_sections();
        s[0].5 = 1 | 4;
        assert!(matches!(TdvfMetadata::parse(&image(&s)), Err(TdvfError::UnknownAttributes { index: 0, .. })));
    }

    #[test]
    fn unaligned_or_empty_memory_ranges_are_rejected() {
        for (address, size) in [(0x80_0800, 0x6000), (0x80_0000, 0x5800), (0x80_0000, 0)] {
            let mut s = good_sections();
            (s[2].2, s[2].3) = (address, size);
            assert_eq!(
                TdvfMetadata::parse(&image(&s)),
                Err(TdvfError::Unaligned { index: 2, section_type: SectionType::TempMem, address, size }),
                "{address:#x} +{size:#x}"
            );
        }
    }

    #[test]
    fn memory_range_wrapping_the_address_space_is_rejected() {
        let mut s = good_sections();
        (s[2].2, s[2].3) = (0xffff_ffff_ffff_f000, 0x2000);
        assert!(matches!(TdvfMetadata::parse(&image(&s)), Err(TdvfError::MemoryWraps { index: 2, .. })));
    }

    #[test]
    fn raw_data_larger_than_memory_is_rejected() {
        let mut s = good_sections();
        s[0].3 = 0x1000;
        assert!(matches!(
            TdvfMetadata::parse(&image(&s)),
            Err(TdvfError::RawLargerThanMemory { index: 0, raw: 0x2000, memory: 0x1000, .. })
        ));
    }

    #[test]
    fn raw_data_outside_the_image_is_rejected() {
        let mut s = good_sections();
        s[0].0 = 0x3000; // 0x3000 + 0x2000 > 0x4000
        assert!(matches!(TdvfMetadata::parse(&image(&s)), Err(TdvfError::RawDataOutsideImage { index: 0, .. })));
        s[0].0 = u32::MAX; // must not overflow
        assert!(matches!(TdvfMetadata::parse(&image(&s)), Err(TdvfError::RawDataOutsideImage { index: 0, .. })));
    }

    #[test]
    fn firmware_volume_without_raw_data_is_rejected() {
        let mut s = good_sections();
        (s[0].0, s[0].1) = (0, 0);
        assert_eq!(
            TdvfMetadata::parse(&image(&s)),
            Err(TdvfError::MissingRawData { index: 0, section_type: SectionType::Bfv })
        );
    }

    #[test]
    fn memory_only_sections_with_raw_data_are_rejected() {
        for index in [1, 2] {
            let mut s = good_sections();
            (s[index].0, s[index].1) = (0x1000, 0x1000);
            assert!(
                matches!(TdvfMetadata::parse(&image(&s)), Err(TdvfError::UnexpectedRawData { index: i, size: 0x1000, .. }) if i == index)
            );
        }
    }

    #[test]
    fn page_aug_with_mr_extend_or_raw_data_is_rejected() {
        let mut s = good_sections();
        s[3].5 = 3;
        assert!(matches!(TdvfMetadata::parse(&image(&s)), Err(TdvfError::AugConflict { index: 3, .. })));
        let mut s = good_sections();
        s[0].5 = 2;
        assert!(matches!(TdvfMetadata::parse(&image(&s)), Err(TdvfError::AugConflict { index: 0, .. })));
    }

    #[test]
    fn overlapping_sections_are_rejected() {
        let mut s = good_sections();
        s[1].2 = 0x80_5000; // TD_HOB inside TempMem (0x800000..0x806000)
        assert_eq!(TdvfMetadata::parse(&image(&s)), Err(TdvfError::Overlap { a: 2, b: 1, gpa: 0x80_5000 }));
    }

    #[test]
    fn adjacent_sections_do_not_overlap() {
        let mut s = good_sections();
        s[1].2 = 0x80_6000;
        assert!(TdvfMetadata::parse(&image(&s)).is_ok());
    }

    #[test]
    fn second_td_hob_is_rejected() {
        let mut s = good_sections();
        s.push((0, 0, 0x90_0000, 0x1000, 2, 0));
        assert_eq!(TdvfMetadata::parse(&image(&s)), Err(TdvfError::DuplicateTdHob { first: 1, second: 4 }));
    }
}

#[cfg(test)]
mod debian_ovmf {
    use super::*;

    fn debian_ovmf() -> Vec<u8> {
        std::fs::read("/usr/share/ovmf/OVMF.fd")
            .expect("/usr/share/ovmf/OVMF.fd is missing: apt-get install ovmf (scripts/test.sh does)")
    }

    #[test]
    fn debian_ovmf_has_six_sections_and_only_the_bfv_is_measured() {
        // Arrange
        let img = debian_ovmf();
        // Act
        let m = TdvfMetadata::parse(&img).unwrap();
        // Assert
        assert_eq!(m.sections.len(), 6);
        let measured: Vec<_> = m.sections.iter().filter(|s| s.attributes.mr_extend()).collect();
        assert_eq!(measured.len(), 1);
        assert_eq!(measured[0].section_type, SectionType::Bfv);
        assert_eq!((measured[0].memory_address, measured[0].memory_data_size), (0xffe2_0000, 0x1e_0000));
        assert!(m.sections.iter().all(|s| !s.attributes.page_aug()));
        assert_eq!(m.td_hob().map(|s| (s.memory_address, s.memory_data_size)), Some((0x80_9000, 0x2000)));
        let pages: u64 = m.sections.iter().map(|s| s.memory_data_size / TDVF_PAGE_SIZE).sum();
        assert_eq!(pages, 538);
    }
}
