//! The OVMF footer GUID table: the table of (GUID, data) entries that OVMF-style
//! firmware images keep just before their last 32 bytes, through which the SEV-ES
//! reset block, the SEV metadata, the SEV hashes table and the TDX (TDVF) metadata
//! are found.
//!
//! Layout (read backwards from `len - 32`): the table's own footer is a GUID
//! ([`FOOTER_GUID`]) preceded by a `u16` total table length (footer included); each
//! entry likewise ends with its GUID, preceded by its `u16` length (data + 18), with
//! the entry's data before that.

use thiserror::Error;

/// A GUID in the EFI byte order (first three fields little-endian).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    /// Parses the canonical text form `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` at compile time.
    pub const fn from_str(s: &str) -> Guid {
        let b = s.as_bytes();
        assert!(b.len() == 36, "GUID text must be 36 characters");
        // Byte positions of the 16 hex pairs in the text, in textual order.
        const POS: [usize; 16] = [0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34];
        let mut text = [0u8; 16];
        let mut i = 0;
        while i < 16 {
            text[i] = (hex(b[POS[i]]) << 4) | hex(b[POS[i] + 1]);
            i += 1;
        }
        // EFI order: the u32, u16, u16 fields are stored little-endian.
        Guid([
            text[3], text[2], text[1], text[0], text[5], text[4], text[7], text[6], text[8], text[9], text[10],
            text[11], text[12], text[13], text[14], text[15],
        ])
    }
}

const fn hex(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        b'A'..=b'F' => c - b'A' + 10,
        _ => panic!("not a hex digit"),
    }
}

impl std::fmt::Debug for Guid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl std::fmt::Display for Guid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let b = &self.0;
        write!(
            f,
            "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-",
            b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9]
        )?;
        b[10..].iter().try_for_each(|x| write!(f, "{x:02x}"))
    }
}

/// The GUID that ends the footer table.
pub const FOOTER_GUID: Guid = Guid::from_str("96b582de-1fb2-45f7-baea-a366c55a082d");
/// SEV-ES reset block: `u32` AP reset vector address (CS:IP for the APs).
pub const SEV_ES_RESET_BLOCK_GUID: Guid = Guid::from_str("00f771de-1a7e-4fcb-890e-68c77e2fb44e");
/// SEV metadata: `u32` offset of the metadata header from the end of the image.
pub const SEV_METADATA_GUID: Guid = Guid::from_str("dc886566-984a-4798-a75e-5585a7bf67cc");
/// SEV hashes table: `u32` base GPA and `u32` size of the kernel-hashes area.
pub const SEV_HASH_TABLE_GUID: Guid = Guid::from_str("7255371f-3a3b-4b04-927b-1da6efa8d454");
/// TDX metadata (TDVF): `u32` offset of the TDVF descriptor from the end of the image.
pub const TDX_METADATA_GUID: Guid = Guid::from_str("e47a6535-984a-4798-865e-4685a7bf8ec2");

/// Bytes after the end of the table: the reset vector and padding.
const TABLE_END_FROM_IMAGE_END: usize = 32;
/// GUID + u16 length that close every entry (and the table).
const ENTRY_TRAILER: usize = 16 + 2;

/// Errors from parsing the footer table.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum OvmfError {
    /// The image is too small to hold a footer table.
    #[error("firmware image of {0} bytes is too small to hold a footer GUID table")]
    TooSmall(usize),
    /// No footer GUID where the table must end.
    #[error("firmware image has no OVMF footer GUID table (no {FOOTER_GUID} at {0:#x})")]
    NoFooter(usize),
    /// The table length is impossible.
    #[error("footer GUID table length {len} is invalid (image {image} bytes)")]
    BadTableLength {
        /// The length field.
        len: usize,
        /// The image size.
        image: usize,
    },
    /// An entry's length runs outside the table.
    #[error("footer GUID table entry {guid} has length {len}, outside the table")]
    BadEntryLength {
        /// The entry's GUID.
        guid: Guid,
        /// Its length field.
        len: usize,
    },
    /// An entry is not the size its GUID requires.
    #[error("footer GUID table entry {guid} has {len} data bytes, expected {expected}")]
    EntrySize {
        /// The entry.
        guid: Guid,
        /// Its data length.
        len: usize,
        /// What it must be.
        expected: usize,
    },
}

/// The parsed footer table: its entries in table order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FooterTable {
    entries: Vec<(Guid, Vec<u8>)>,
    /// Offset of the table's first byte in the image.
    pub table_start: usize,
}

impl FooterTable {
    /// Finds and parses the table in `image`.
    pub fn parse(image: &[u8]) -> Result<Self, OvmfError> {
        let len = image.len();
        let footer_end = len.checked_sub(TABLE_END_FROM_IMAGE_END).ok_or(OvmfError::TooSmall(len))?;
        let guid_at = footer_end.checked_sub(16).ok_or(OvmfError::TooSmall(len))?;
        let len_at = guid_at.checked_sub(2).ok_or(OvmfError::TooSmall(len))?;
        if image[guid_at..footer_end] != FOOTER_GUID.0 {
            return Err(OvmfError::NoFooter(guid_at));
        }
        let total = usize::from(u16::from_le_bytes([image[len_at], image[len_at + 1]]));
        if total < ENTRY_TRAILER || total > footer_end {
            return Err(OvmfError::BadTableLength { len: total, image: len });
        }
        let table_start = footer_end - total;
        // Walk the entries backwards from the footer's own length field.
        let mut entries = Vec::new();
        let mut end = len_at;
        while end > table_start {
            if end - table_start < ENTRY_TRAILER {
                return Err(OvmfError::BadTableLength { len: total, image: len });
            }
            let mut guid = [0u8; 16];
            guid.copy_from_slice(&image[end - 16..end]);
            let guid = Guid(guid);
            let entry_len = usize::from(u16::from_le_bytes([image[end - 18], image[end - 17]]));
            if entry_len < ENTRY_TRAILER || entry_len > end - table_start {
                return Err(OvmfError::BadEntryLength { guid, len: entry_len });
            }
            entries.push((guid, image[end - entry_len..end - ENTRY_TRAILER].to_vec()));
            end -= entry_len;
        }
        entries.reverse();
        Ok(Self { entries, table_start })
    }

    /// The data of the entry with `guid`, if present.
    pub fn entry(&self, guid: &Guid) -> Option<&[u8]> {
        self.entries.iter().find(|(g, _)| g == guid).map(|(_, d)| d.as_slice())
    }

    /// All entries, in table order.
    pub fn entries(&self) -> impl Iterator<Item = (&Guid, &[u8])> {
        self.entries.iter().map(|(g, d)| (g, d.as_slice()))
    }

    /// The entry with `guid` read as one little-endian `u32`, checking its size.
    pub fn entry_u32(&self, guid: &Guid) -> Result<Option<u32>, OvmfError> {
        match self.entry(guid) {
            None => Ok(None),
            Some(d) if d.len() == 4 => Ok(Some(u32::from_le_bytes([d[0], d[1], d[2], d[3]]))),
            Some(d) => Err(OvmfError::EntrySize { guid: *guid, len: d.len(), expected: 4 }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds an image whose footer table holds `entries`.
    pub(crate) fn image_with_table(size: usize, entries: &[(Guid, Vec<u8>)]) -> Vec<u8> {
        let mut table = Vec::new();
        for (g, d) in entries {
            table.extend_from_slice(d);
            table.extend_from_slice(&((d.len() + ENTRY_TRAILER) as u16).to_le_bytes());
            table.extend_from_slice(&g.0);
        }
        let total = table.len() + ENTRY_TRAILER;
        table.extend_from_slice(&(total as u16).to_le_bytes());
        table.extend_from_slice(&FOOTER_GUID.0);
        let mut image = vec![0u8; size];
        let end = size - TABLE_END_FROM_IMAGE_END;
        image[end - table.len()..end].copy_from_slice(&table);
        image
    }

    #[test]
    fn guid_text_round_trips_in_efi_byte_order() {
        assert_eq!(FOOTER_GUID.0[..4], [0xde, 0x82, 0xb5, 0x96]);
        assert_eq!(FOOTER_GUID.to_string(), "96b582de-1fb2-45f7-baea-a366c55a082d");
    }

    #[test]
    fn entries_are_found_in_order() {
        let img = image_with_table(
            4096,
            &[(SEV_ES_RESET_BLOCK_GUID, 0xffff_f000u32.to_le_bytes().to_vec()), (SEV_METADATA_GUID, vec![1, 2, 3, 4])],
        );
        let t = FooterTable::parse(&img).unwrap();
        assert_eq!(t.entry_u32(&SEV_ES_RESET_BLOCK_GUID), Ok(Some(0xffff_f000)));
        assert_eq!(t.entry(&SEV_METADATA_GUID), Some(&[1u8, 2, 3, 4][..]));
        assert_eq!(t.entry(&TDX_METADATA_GUID), None);
        assert_eq!(t.entries().count(), 2);
    }

    #[test]
    fn image_without_footer_is_rejected() {
        assert_eq!(FooterTable::parse(&[0u8; 4096]), Err(OvmfError::NoFooter(4096 - 48)));
        assert_eq!(FooterTable::parse(&[0u8; 20]), Err(OvmfError::TooSmall(20)));
    }

    #[test]
    fn truncated_or_oversized_lengths_are_rejected() {
        let mut img = image_with_table(4096, &[(SEV_METADATA_GUID, vec![0; 4])]);
        let len_at = 4096 - 32 - 16 - 2;
        img[len_at..len_at + 2].copy_from_slice(&5000u16.to_le_bytes());
        assert!(matches!(FooterTable::parse(&img), Err(OvmfError::BadTableLength { .. })));
        img[len_at..len_at + 2].copy_from_slice(&30u16.to_le_bytes()); // cuts an entry in half
        assert!(FooterTable::parse(&img).is_err());
        let mut img = image_with_table(4096, &[(SEV_METADATA_GUID, vec![0; 4])]);
        let entry_len_at = len_at - 16 - 2;
        img[entry_len_at..entry_len_at + 2].copy_from_slice(&0xffffu16.to_le_bytes());
        assert!(matches!(FooterTable::parse(&img), Err(OvmfError::BadEntryLength { .. })));
    }

    #[test]
    fn wrong_size_u32_entry_is_rejected() {
        let img = image_with_table(4096, &[(SEV_ES_RESET_BLOCK_GUID, vec![0; 3])]);
        let t = FooterTable::parse(&img).unwrap();
        assert!(matches!(t.entry_u32(&SEV_ES_RESET_BLOCK_GUID), Err(OvmfError::EntrySize { .. })));
    }
}

#[cfg(test)]
mod debian_ovmf {
    use super::*;

    /// Debian 12's OVMF.fd (package ovmf), when installed.
    fn debian_ovmf() -> Option<Vec<u8>> {
        std::fs::read("/usr/share/ovmf/OVMF.fd").ok()
    }

    #[test]
    fn debian_ovmf_has_the_sev_and_tdx_entries() {
        let Some(img) = debian_ovmf() else {
            panic!("/usr/share/ovmf/OVMF.fd is missing: apt-get install ovmf (scripts/test.sh does)");
        };
        let t = FooterTable::parse(&img).unwrap();
        // The SEV metadata sits 0x52c bytes from the end of this build (a third-party parse).
        assert_eq!(t.entry_u32(&SEV_METADATA_GUID), Ok(Some(0x52c)));
        assert!(t.entry_u32(&SEV_ES_RESET_BLOCK_GUID).unwrap().is_some());
        assert!(t.entry_u32(&TDX_METADATA_GUID).unwrap().is_some());
    }
}
