//! The SNP secrets page as the PSP fills it when the host launches a page of type
//! SECRETS (SNP firmware ABI, "Secrets Page Format"; Linux's `struct snp_secrets_page`):
//! four fresh VMPCKs per launch and the platform's identification.
//!
//! | offset | field |
//! |---|---|
//! | 0x000 | VERSION (u32), IMIEN (bit 0 of u32), FMS (u32), reserved (u32) |
//! | 0x010 | GOSVW\[16\]: guest OS security version words |
//! | 0x020 | VMPCK0, 0x040 VMPCK1, 0x060 VMPCK2, 0x080 VMPCK3 (32 bytes each) |
//! | 0x0A0 | OS area\[96\]: the guest's own (message sequence numbers, ...), zero at launch |
//! | 0x100 | VMSA_TWEAK_BITMAP\[64\] |
//! | 0x140 | SVSM area\[32\]: base, size, calling area, max version, guest VMPL (filled by an SVSM, not the PSP) |
//! | 0x160 | TSC_FACTOR (u32); reserved to the end of the page |
//!
//! The version written is [`SECRETS_VERSION`]: the ABI revision that added the VMSA
//! tweak bitmap and TSC factor numbers it 3 as far as we know (no public header states
//! it; guests, Linux included, do not check it).

use rand_core::{OsRng, RngCore};
use thiserror::Error;

use super::guest_msg::{PspMsgChannel, VMPCK_COUNT, VMPCK_LEN};
use crate::bytes::le_u32;

/// Size of the secrets page.
pub const SECRETS_PAGE_SIZE: usize = 4096;
/// The VERSION the emulated PSP writes.
pub const SECRETS_VERSION: u32 = 3;

const OFF_VMPCK: usize = 0x20;
const OFF_OS_AREA: usize = 0xA0;
const OS_AREA_LEN: usize = 96;
const OFF_TWEAK: usize = 0x100;
const TWEAK_LEN: usize = 64;
const OFF_SVSM: usize = 0x140;
const SVSM_LEN: usize = 32;
const OFF_TSC_FACTOR: usize = 0x160;

/// Errors from making or parsing a secrets page.
#[derive(Debug, Error)]
pub enum SecretsError {
    /// The OS random number generator failed.
    #[error("cannot get random bytes for the VMPCKs: {0}")]
    Rng(#[source] rand_core::Error),
    /// The buffer is not a page.
    #[error("a secrets page is {SECRETS_PAGE_SIZE} bytes, not {0}")]
    WrongSize(usize),
    /// A reserved byte is not zero.
    #[error("secrets page byte {offset:#x} is reserved but not zero")]
    ReservedNotZero {
        /// Offset of the byte.
        offset: usize,
    },
}

/// The secrets page, field by field.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretsPage {
    /// VERSION.
    pub version: u32,
    /// IMIEN: the guest was launched through an incoming migration image.
    pub imi_en: bool,
    /// FMS: the chip's family/model/stepping, as CPUID Fn0000_0001_EAX.
    pub fms: u32,
    /// GOSVW: guest OS security version words.
    pub gosvw: [u8; 16],
    /// VMPCK0 to VMPCK3: the keys of the guest-message channel, one per VMPL.
    pub vmpcks: [[u8; VMPCK_LEN]; VMPCK_COUNT],
    /// The OS area (guest-defined; zero at launch).
    pub os_area: [u8; OS_AREA_LEN],
    /// VMSA_TWEAK_BITMAP.
    pub vmsa_tweak_bitmap: [u8; TWEAK_LEN],
    /// The SVSM area, kept as bytes.
    pub svsm_area: [u8; SVSM_LEN],
    /// TSC_FACTOR.
    pub tsc_factor: u32,
}

impl std::fmt::Debug for SecretsPage {
    /// Everything but the VMPCKs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretsPage")
            .field("version", &self.version)
            .field("imi_en", &self.imi_en)
            .field("fms", &format_args!("{:#x}", self.fms))
            .field("tsc_factor", &self.tsc_factor)
            .finish_non_exhaustive()
    }
}

impl SecretsPage {
    /// The page the PSP makes at launch: version [`SECRETS_VERSION`], the chip's
    /// `fms`, four VMPCKs fresh from the OS random number generator, the rest zero.
    pub fn new_random(fms: u32) -> Result<Self, SecretsError> {
        let mut vmpcks = [[0u8; VMPCK_LEN]; VMPCK_COUNT];
        for key in &mut vmpcks {
            OsRng.try_fill_bytes(key).map_err(SecretsError::Rng)?;
        }
        Ok(Self {
            version: SECRETS_VERSION,
            imi_en: false,
            fms,
            gosvw: [0; 16],
            vmpcks,
            os_area: [0; OS_AREA_LEN],
            vmsa_tweak_bitmap: [0; TWEAK_LEN],
            svsm_area: [0; SVSM_LEN],
            tsc_factor: 0,
        })
    }

    /// VMPCK `index` (0 to 3).
    pub fn vmpck(&self, index: u8) -> Option<&[u8; VMPCK_LEN]> {
        self.vmpcks.get(usize::from(index))
    }

    /// The PSP's guest-message state for a guest launched with this page.
    pub fn msg_channel(&self) -> PspMsgChannel {
        PspMsgChannel::new(self.vmpcks)
    }

    /// The page's bytes.
    pub fn to_bytes(&self) -> Box<[u8; SECRETS_PAGE_SIZE]> {
        let mut b = Box::new([0u8; SECRETS_PAGE_SIZE]);
        b[0..4].copy_from_slice(&self.version.to_le_bytes());
        b[4..8].copy_from_slice(&u32::from(self.imi_en).to_le_bytes());
        b[8..12].copy_from_slice(&self.fms.to_le_bytes());
        b[0x10..0x20].copy_from_slice(&self.gosvw);
        for (i, key) in self.vmpcks.iter().enumerate() {
            b[OFF_VMPCK + i * VMPCK_LEN..][..VMPCK_LEN].copy_from_slice(key);
        }
        b[OFF_OS_AREA..][..OS_AREA_LEN].copy_from_slice(&self.os_area);
        b[OFF_TWEAK..][..TWEAK_LEN].copy_from_slice(&self.vmsa_tweak_bitmap);
        b[OFF_SVSM..][..SVSM_LEN].copy_from_slice(&self.svsm_area);
        b[OFF_TSC_FACTOR..][..4].copy_from_slice(&self.tsc_factor.to_le_bytes());
        b
    }

    /// Parses a page; reserved bytes (and bits 31:1 of the IMIEN word) must be zero.
    pub fn from_bytes(b: &[u8]) -> Result<Self, SecretsError> {
        if b.len() != SECRETS_PAGE_SIZE {
            return Err(SecretsError::WrongSize(b.len()));
        }
        for range in [5..8, 0x0C..0x10, OFF_TSC_FACTOR + 4..SECRETS_PAGE_SIZE] {
            if let Some(i) = b[range.clone()].iter().position(|&x| x != 0) {
                return Err(SecretsError::ReservedNotZero { offset: range.start + i });
            }
        }
        if b[4] & !1 != 0 {
            return Err(SecretsError::ReservedNotZero { offset: 4 });
        }
        let mut page = Self {
            version: le_u32(b, 0),
            imi_en: b[4] & 1 != 0,
            fms: le_u32(b, 8),
            gosvw: [0; 16],
            vmpcks: [[0; VMPCK_LEN]; VMPCK_COUNT],
            os_area: [0; OS_AREA_LEN],
            vmsa_tweak_bitmap: [0; TWEAK_LEN],
            svsm_area: [0; SVSM_LEN],
            tsc_factor: le_u32(b, OFF_TSC_FACTOR),
        };
        page.gosvw.copy_from_slice(&b[0x10..0x20]);
        for (i, key) in page.vmpcks.iter_mut().enumerate() {
            key.copy_from_slice(&b[OFF_VMPCK + i * VMPCK_LEN..][..VMPCK_LEN]);
        }
        page.os_area.copy_from_slice(&b[OFF_OS_AREA..][..OS_AREA_LEN]);
        page.vmsa_tweak_bitmap.copy_from_slice(&b[OFF_TWEAK..][..TWEAK_LEN]);
        page.svsm_area.copy_from_slice(&b[OFF_SVSM..][..SVSM_LEN]);
        Ok(page)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snp::guest_msg::{msg_type, seal, MsgHeader};
    use crate::snp::report::CpuidFms;

    #[test]
    fn page_layout_puts_each_field_at_its_abi_offset() {
        let mut p = SecretsPage::new_random(0x00A0_0F10).unwrap();
        p.vmpcks = [[0x10; 32], [0x11; 32], [0x12; 32], [0x13; 32]];
        p.gosvw = [0x20; 16];
        p.imi_en = true;
        p.tsc_factor = 0x0102_0304;
        p.vmsa_tweak_bitmap[0] = 0x30;
        let b = p.to_bytes();
        assert_eq!(b[0..12], [3, 0, 0, 0, 1, 0, 0, 0, 0x10, 0x0F, 0xA0, 0]);
        assert_eq!(b[0x10..0x20], [0x20; 16]);
        for (i, off) in [0x20, 0x40, 0x60, 0x80].into_iter().enumerate() {
            assert_eq!(b[off..off + 32], [0x10 + i as u8; 32], "VMPCK{i}");
        }
        assert_eq!(b[0xA0..0x100], [0; 96], "the OS area is the guest's, zero at launch");
        assert_eq!(b[0x100], 0x30);
        assert_eq!(b[0x160..0x164], [4, 3, 2, 1]);
        assert!(b[0x164..].iter().all(|&x| x == 0));
        assert_eq!(SecretsPage::from_bytes(&*b).unwrap(), p);
    }

    #[test]
    fn each_launch_gets_fresh_distinct_vmpcks() {
        let fms = CpuidFms::MILAN_B0.cpuid_eax();
        let a = SecretsPage::new_random(fms).unwrap();
        let b = SecretsPage::new_random(fms).unwrap();
        assert_ne!(a.vmpcks, b.vmpcks);
        for page in [&a, &b] {
            for i in 0..4 {
                for j in 0..i {
                    assert_ne!(page.vmpcks[i], page.vmpcks[j]);
                }
                assert_ne!(page.vmpck(i as u8).unwrap(), &[0; 32]);
            }
            assert_eq!((page.version, page.fms), (SECRETS_VERSION, 0x00A0_0F10));
        }
        assert_eq!(a.vmpck(4), None);
    }

    #[test]
    fn debug_output_hides_the_vmpcks() {
        let mut p = SecretsPage::new_random(0).unwrap();
        p.vmpcks = [[0xAB; 32]; 4];
        let text = format!("{p:?}");
        assert!(!text.contains("171") && !text.to_lowercase().contains("ab, "), "{text}");
    }

    #[test]
    fn page_with_reserved_bytes_set_is_rejected() {
        let p = SecretsPage::new_random(0).unwrap();
        for off in [5, 0x0C, 0x164, 0xFFF] {
            let mut b = p.to_bytes();
            b[off] = 1;
            assert!(
                matches!(SecretsPage::from_bytes(&*b), Err(SecretsError::ReservedNotZero { offset }) if offset == off),
                "offset {off:#x}"
            );
        }
        let mut b = p.to_bytes();
        b[4] = 2;
        assert!(matches!(SecretsPage::from_bytes(&*b), Err(SecretsError::ReservedNotZero { offset: 4 })));
        assert!(matches!(SecretsPage::from_bytes(&b[..4095]), Err(SecretsError::WrongSize(4095))));
    }

    #[test]
    fn channel_from_the_page_opens_requests_under_its_vmpcks() {
        let p = SecretsPage::new_random(0).unwrap();
        let mut psp = p.msg_channel();
        let header = MsgHeader { seqno: 1, msg_type: msg_type::REPORT_REQ, msg_version: 1, msg_sz: 0, vmpck: 2 };
        let page = seal(&p.vmpcks[2], header, &[0; 0x60]).unwrap();
        assert_eq!(psp.open_request(&page).unwrap().header.vmpck, 2);
    }
}
