//! The SEV-SNP ATTESTATION_REPORT (SNP firmware ABI, AMD 56860, "ATTESTATION_REPORT
//! Structure"): its 0x4A0-byte layout, a strict parser, and the VCEK's ECDSA P-384 /
//! SHA-384 signature over its first 0x2A0 bytes.
//!
//! The emulated platform writes version 3 reports (the version Milan firmware 1.55 and
//! later writes, with the CPUID family/model/stepping of the chip): the `sev` crate
//! parses and verifies both that and the older version 2 that this parser also reads.
//! TCB values use the Milan/Genoa layout ([`Tcb`]). Reserved bytes must be zero, so a
//! parsed report re-encodes to exactly the bytes it came from.
//!
//! | offset | field |
//! |---|---|
//! | 0x000 | version (u32), guest_svn (u32), policy (u64) |
//! | 0x010 | family_id\[16\], image_id\[16\] |
//! | 0x030 | vmpl (u32), signature_algo (u32), current_tcb (u64), platform_info (u64) |
//! | 0x048 | author_key_en (bit 0), mask_chip_key (bit 1), signing_key (bits 4:2); reserved to 0x50 |
//! | 0x050 | report_data\[64\], measurement\[48\], host_data\[32\] |
//! | 0x0E0 | id_key_digest\[48\], author_key_digest\[48\], report_id\[32\], report_id_ma\[32\] |
//! | 0x180 | reported_tcb (u64); v3: cpuid family, model, stepping (u8 each); reserved to 0x1A0 |
//! | 0x1A0 | chip_id\[64\] |
//! | 0x1E0 | committed_tcb (u64), current build/minor/major, rsvd, committed build/minor/major, rsvd |
//! | 0x1F0 | launch_tcb (u64); reserved to 0x2A0 |
//! | 0x2A0 | signature: R\[72\], S\[72\] (little endian, zero padded), reserved to 0x4A0 |

use p384::ecdsa::signature::{DigestSigner, DigestVerifier};
use p384::ecdsa::{Signature, SigningKey, VerifyingKey};
use sha2::{Digest, Sha384};
use thiserror::Error;

use crate::bytes::{array, le_u32, le_u64};

/// Size of an ATTESTATION_REPORT.
pub const REPORT_SIZE: usize = 0x4A0;
/// The signature covers bytes `0..SIGNED_LEN`.
pub const SIGNED_LEN: usize = 0x2A0;
/// The report version the emulated platform writes.
pub const REPORT_VERSION: u32 = 3;
/// SIGNATURE_ALGO: ECDSA P-384 with SHA-384.
pub const SIG_ALGO_ECDSA_P384_SHA384: u32 = 1;
/// Length of each signature component (R, S) in the report: 72 bytes, little endian.
pub const SIG_COMPONENT_LEN: usize = 72;
/// Length of a P-384 scalar.
const SCALAR_LEN: usize = 48;

/// SIGNING_KEY values of the key information field.
pub mod signing_key {
    /// The report is signed by the VCEK.
    pub const VCEK: u8 = 0;
    /// The report is signed by the VLEK.
    pub const VLEK: u8 = 1;
    /// The report is not signed.
    pub const NONE: u8 = 7;
}

const OFF_TCB_CURRENT: usize = 0x38;
const OFF_KEY_INFO: usize = 0x48;
const OFF_REPORTED_TCB: usize = 0x180;
const OFF_CPUID: usize = 0x188;
const OFF_CHIP_ID: usize = 0x1A0;
const OFF_COMMITTED_TCB: usize = 0x1E0;
const OFF_LAUNCH_TCB: usize = 0x1F0;
const OFF_SIG_R: usize = 0x2A0;
const OFF_SIG_S: usize = OFF_SIG_R + SIG_COMPONENT_LEN;
/// Bits of the key information word that are defined.
const KEY_INFO_DEFINED: u32 = 0x1F;

/// Errors from parsing, signing or checking a report.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ReportError {
    /// The buffer is not [`REPORT_SIZE`] bytes.
    #[error("an attestation report is {REPORT_SIZE:#x} bytes, not {len:#x}")]
    WrongSize {
        /// Length given.
        len: usize,
    },
    /// A report version this parser does not know (it reads 2 and 3).
    #[error("attestation report version {0} is not supported (2 and 3 are)")]
    UnsupportedVersion(u32),
    /// A reserved byte (or reserved bits of a TCB or key information field) is not zero.
    #[error("attestation report byte {offset:#x} is reserved but not zero")]
    ReservedNotZero {
        /// Offset of the first non-zero reserved byte.
        offset: usize,
    },
    /// The report's signature algorithm is not ECDSA P-384 with SHA-384.
    #[error("attestation report signature algorithm {0} is not ECDSA P-384/SHA-384 (1)")]
    UnsupportedSignatureAlgo(u32),
    /// R or S is not a valid P-384 scalar (zero, too large, or wider than 48 bytes).
    #[error("attestation report signature is malformed: {0}")]
    MalformedSignature(String),
    /// The signature does not verify with the given key.
    #[error("attestation report signature does not verify with the given VCEK")]
    BadSignature,
    /// Signing failed.
    #[error("cannot sign the attestation report: {0}")]
    Sign(String),
}

/// A TCB version in the Milan/Genoa layout: the security patch levels (SPL) of the
/// firmware components, bytes `[bootloader, tee, 0, 0, 0, 0, snp, microcode]`, read
/// as a little-endian u64 (so the microcode SPL is the top byte).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Tcb {
    /// Boot loader SPL.
    pub bootloader: u8,
    /// PSP OS (TEE) SPL.
    pub tee: u8,
    /// SNP firmware SPL.
    pub snp: u8,
    /// Microcode SPL.
    pub microcode: u8,
}

impl Tcb {
    /// The 8 bytes of this TCB as a report stores them.
    pub const fn to_bytes(self) -> [u8; 8] {
        [self.bootloader, self.tee, 0, 0, 0, 0, self.snp, self.microcode]
    }

    /// Parses 8 report bytes; the reserved bytes 2..6 must be zero.
    pub fn from_bytes(b: [u8; 8]) -> Result<Self, ReportError> {
        if let Some(i) = b[2..6].iter().position(|&x| x != 0) {
            return Err(ReportError::ReservedNotZero { offset: 2 + i });
        }
        Ok(Self { bootloader: b[0], tee: b[1], snp: b[6], microcode: b[7] })
    }

    /// The TCB as the u64 the ABI and AMD's tools print (little endian of the bytes).
    pub const fn to_u64(self) -> u64 {
        u64::from_le_bytes(self.to_bytes())
    }

    /// Parses the u64 form; the reserved bytes must be zero.
    pub fn from_u64(v: u64) -> Result<Self, ReportError> {
        Self::from_bytes(v.to_le_bytes())
    }
}

/// A firmware version (major.minor, build).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FirmwareVersion {
    /// Major version.
    pub major: u8,
    /// Minor version.
    pub minor: u8,
    /// Build number.
    pub build: u8,
}

/// The CPUID family, model and stepping a version 3 report carries (family and model
/// are the combined base + extended values of CPUID Fn0000_0001_EAX).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CpuidFms {
    /// Family (0x19 for Milan and Genoa).
    pub family: u8,
    /// Model (0x01 for Milan).
    pub model: u8,
    /// Stepping.
    pub stepping: u8,
}

impl CpuidFms {
    /// AMD EPYC Milan, stepping B0 (family 19h, model 01h, stepping 0): the chip the
    /// emulated platform reports, matching its VCEK's product name "Milan-B0".
    pub const MILAN_B0: Self = Self { family: 0x19, model: 0x01, stepping: 0 };

    /// The value of CPUID Fn0000_0001_EAX for this family/model/stepping (the FMS
    /// the secrets page carries).
    pub const fn cpuid_eax(self) -> u32 {
        let (base_family, ext_family) =
            if self.family >= 0xF { (0xF, (self.family - 0xF) as u32) } else { (self.family as u32, 0) };
        (ext_family << 20)
            | (((self.model >> 4) as u32) << 16)
            | (base_family << 8)
            | (((self.model & 0xF) as u32) << 4)
            | (self.stepping & 0xF) as u32
    }
}

/// An SNP ATTESTATION_REPORT, field by field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttestationReport {
    /// Report version: 2, or 3 (with [`Self::cpuid`]).
    pub version: u32,
    /// Guest SVN from the ID block.
    pub guest_svn: u32,
    /// Guest policy.
    pub policy: u64,
    /// Family ID from the ID block.
    pub family_id: [u8; 16],
    /// Image ID from the ID block.
    pub image_id: [u8; 16],
    /// The VMPL the guest asked the report for.
    pub vmpl: u32,
    /// Signature algorithm ([`SIG_ALGO_ECDSA_P384_SHA384`]).
    pub signature_algo: u32,
    /// The platform's current TCB.
    pub current_tcb: Tcb,
    /// Platform information bits (SMT enabled, TSME enabled, ...).
    pub platform_info: u64,
    /// AUTHOR_KEY_EN: the ID block was certified by an author key.
    pub author_key_en: bool,
    /// MASK_CHIP_KEY: the chip key is masked (report unsigned).
    pub mask_chip_key: bool,
    /// SIGNING_KEY: which key signed the report ([`signing_key`]); 3 bits.
    pub signing_key: u8,
    /// Data the guest supplied.
    pub report_data: [u8; 64],
    /// The launch measurement.
    pub measurement: [u8; 48],
    /// Data the host supplied at launch.
    pub host_data: [u8; 32],
    /// SHA-384 of the ID key (zero without an ID block).
    pub id_key_digest: [u8; 48],
    /// SHA-384 of the author key (zero without one).
    pub author_key_digest: [u8; 48],
    /// The guest's report ID.
    pub report_id: [u8; 32],
    /// The report ID of the guest's migration agent (all 0xFF without one).
    pub report_id_ma: [u8; 32],
    /// The TCB the signing VCEK was derived for.
    pub reported_tcb: Tcb,
    /// Version 3: the chip's CPUID family/model/stepping; `None` in version 2.
    pub cpuid: Option<CpuidFms>,
    /// The chip identifier (zero if MASK_CHIP_ID is set).
    pub chip_id: [u8; 64],
    /// The committed TCB.
    pub committed_tcb: Tcb,
    /// The current firmware version.
    pub current_version: FirmwareVersion,
    /// The committed firmware version.
    pub committed_version: FirmwareVersion,
    /// The current TCB when the guest was launched.
    pub launch_tcb: Tcb,
    /// Signature R, little endian, zero padded to 72 bytes.
    pub signature_r: [u8; SIG_COMPONENT_LEN],
    /// Signature S, little endian, zero padded to 72 bytes.
    pub signature_s: [u8; SIG_COMPONENT_LEN],
}

impl Default for AttestationReport {
    /// An unsigned version 3 report with every field zero except the version,
    /// the signature algorithm and REPORT_ID_MA (all 0xFF: no migration agent).
    fn default() -> Self {
        Self {
            version: REPORT_VERSION,
            guest_svn: 0,
            policy: 0,
            family_id: [0; 16],
            image_id: [0; 16],
            vmpl: 0,
            signature_algo: SIG_ALGO_ECDSA_P384_SHA384,
            current_tcb: Tcb::default(),
            platform_info: 0,
            author_key_en: false,
            mask_chip_key: false,
            signing_key: signing_key::VCEK,
            report_data: [0; 64],
            measurement: [0; 48],
            host_data: [0; 32],
            id_key_digest: [0; 48],
            author_key_digest: [0; 48],
            report_id: [0; 32],
            report_id_ma: [0xFF; 32],
            reported_tcb: Tcb::default(),
            cpuid: Some(CpuidFms::default()),
            chip_id: [0; 64],
            committed_tcb: Tcb::default(),
            current_version: FirmwareVersion::default(),
            committed_version: FirmwareVersion::default(),
            launch_tcb: Tcb::default(),
            signature_r: [0; SIG_COMPONENT_LEN],
            signature_s: [0; SIG_COMPONENT_LEN],
        }
    }
}

/// Fails on the first non-zero byte of `b[range]`.
fn reserved(b: &[u8], range: core::ops::Range<usize>) -> Result<(), ReportError> {
    match b[range.clone()].iter().position(|&x| x != 0) {
        Some(i) => Err(ReportError::ReservedNotZero { offset: range.start + i }),
        None => Ok(()),
    }
}

/// Parses the TCB at `off`, naming the report offset of a bad reserved byte.
fn tcb_at(b: &[u8], off: usize) -> Result<Tcb, ReportError> {
    Tcb::from_bytes(array(b, off)).map_err(|e| match e {
        ReportError::ReservedNotZero { offset } => ReportError::ReservedNotZero { offset: off + offset },
        e => e,
    })
}

fn version_at(b: &[u8], off: usize) -> FirmwareVersion {
    FirmwareVersion { build: b[off], minor: b[off + 1], major: b[off + 2] }
}

impl AttestationReport {
    /// Parses a report of version 2 or 3; every reserved byte must be zero.
    pub fn from_bytes(b: &[u8]) -> Result<Self, ReportError> {
        if b.len() != REPORT_SIZE {
            return Err(ReportError::WrongSize { len: b.len() });
        }
        let version = le_u32(b, 0);
        let cpuid = match version {
            2 => {
                reserved(b, OFF_CPUID..OFF_CHIP_ID)?;
                None
            }
            3 => {
                reserved(b, OFF_CPUID + 3..OFF_CHIP_ID)?;
                Some(CpuidFms { family: b[OFF_CPUID], model: b[OFF_CPUID + 1], stepping: b[OFF_CPUID + 2] })
            }
            v => return Err(ReportError::UnsupportedVersion(v)),
        };
        let key_info = le_u32(b, OFF_KEY_INFO);
        if key_info & !KEY_INFO_DEFINED != 0 {
            return Err(ReportError::ReservedNotZero { offset: OFF_KEY_INFO });
        }
        reserved(b, 0x4C..0x50)?;
        reserved(b, 0x1EB..0x1EC)?;
        reserved(b, 0x1EF..0x1F0)?;
        reserved(b, OFF_LAUNCH_TCB + 8..SIGNED_LEN)?;
        reserved(b, OFF_SIG_S + SIG_COMPONENT_LEN..REPORT_SIZE)?;
        Ok(Self {
            version,
            guest_svn: le_u32(b, 0x04),
            policy: le_u64(b, 0x08),
            family_id: array(b, 0x10),
            image_id: array(b, 0x20),
            vmpl: le_u32(b, 0x30),
            signature_algo: le_u32(b, 0x34),
            current_tcb: tcb_at(b, OFF_TCB_CURRENT)?,
            platform_info: le_u64(b, 0x40),
            author_key_en: key_info & 1 != 0,
            mask_chip_key: key_info & 2 != 0,
            signing_key: ((key_info >> 2) & 7) as u8,
            report_data: array(b, 0x50),
            measurement: array(b, 0x90),
            host_data: array(b, 0xC0),
            id_key_digest: array(b, 0xE0),
            author_key_digest: array(b, 0x110),
            report_id: array(b, 0x140),
            report_id_ma: array(b, 0x160),
            reported_tcb: tcb_at(b, OFF_REPORTED_TCB)?,
            cpuid,
            chip_id: array(b, OFF_CHIP_ID),
            committed_tcb: tcb_at(b, OFF_COMMITTED_TCB)?,
            current_version: version_at(b, 0x1E8),
            committed_version: version_at(b, 0x1EC),
            launch_tcb: tcb_at(b, OFF_LAUNCH_TCB)?,
            signature_r: array(b, OFF_SIG_R),
            signature_s: array(b, OFF_SIG_S),
        })
    }

    /// The report's bytes (the CPUID bytes are written whenever [`Self::cpuid`] is set;
    /// [`Self::signing_key`] is cut to its 3 bits).
    pub fn to_bytes(&self) -> [u8; REPORT_SIZE] {
        let mut b = [0u8; REPORT_SIZE];
        let mut put = |off: usize, v: &[u8]| b[off..off + v.len()].copy_from_slice(v);
        put(0x00, &self.version.to_le_bytes());
        put(0x04, &self.guest_svn.to_le_bytes());
        put(0x08, &self.policy.to_le_bytes());
        put(0x10, &self.family_id);
        put(0x20, &self.image_id);
        put(0x30, &self.vmpl.to_le_bytes());
        put(0x34, &self.signature_algo.to_le_bytes());
        put(OFF_TCB_CURRENT, &self.current_tcb.to_bytes());
        put(0x40, &self.platform_info.to_le_bytes());
        let key_info = u32::from(self.author_key_en)
            | (u32::from(self.mask_chip_key) << 1)
            | ((u32::from(self.signing_key) & 7) << 2);
        put(OFF_KEY_INFO, &key_info.to_le_bytes());
        put(0x50, &self.report_data);
        put(0x90, &self.measurement);
        put(0xC0, &self.host_data);
        put(0xE0, &self.id_key_digest);
        put(0x110, &self.author_key_digest);
        put(0x140, &self.report_id);
        put(0x160, &self.report_id_ma);
        put(OFF_REPORTED_TCB, &self.reported_tcb.to_bytes());
        if let Some(c) = self.cpuid {
            put(OFF_CPUID, &[c.family, c.model, c.stepping]);
        }
        put(OFF_CHIP_ID, &self.chip_id);
        put(OFF_COMMITTED_TCB, &self.committed_tcb.to_bytes());
        let v = self.current_version;
        put(0x1E8, &[v.build, v.minor, v.major]);
        let v = self.committed_version;
        put(0x1EC, &[v.build, v.minor, v.major]);
        put(OFF_LAUNCH_TCB, &self.launch_tcb.to_bytes());
        put(OFF_SIG_R, &self.signature_r);
        put(OFF_SIG_S, &self.signature_s);
        b
    }

    /// Signs bytes `0..0x2A0` of this report with the VCEK (ECDSA P-384, SHA-384,
    /// deterministic nonces per RFC 6979) and returns the whole signed report.
    pub fn sign(&self, vcek: &SigningKey) -> Result<[u8; REPORT_SIZE], ReportError> {
        let mut b = self.to_bytes();
        let sig: Signature = vcek
            .try_sign_digest(Sha384::new_with_prefix(&b[..SIGNED_LEN]))
            .map_err(|e| ReportError::Sign(e.to_string()))?;
        let (r, s) = sig.split_bytes();
        let mut r_le = [0u8; SIG_COMPONENT_LEN];
        let mut s_le = [0u8; SIG_COMPONENT_LEN];
        for i in 0..SCALAR_LEN {
            r_le[i] = r[SCALAR_LEN - 1 - i];
            s_le[i] = s[SCALAR_LEN - 1 - i];
        }
        b[OFF_SIG_R..OFF_SIG_S].copy_from_slice(&r_le);
        b[OFF_SIG_S..OFF_SIG_S + SIG_COMPONENT_LEN].copy_from_slice(&s_le);
        Ok(b)
    }

    /// Checks this report's signature with a VCEK's public key.
    pub fn verify(&self, vcek: &VerifyingKey) -> Result<(), ReportError> {
        if self.signature_algo != SIG_ALGO_ECDSA_P384_SHA384 {
            return Err(ReportError::UnsupportedSignatureAlgo(self.signature_algo));
        }
        let sig = self.signature()?;
        let b = self.to_bytes();
        vcek.verify_digest(Sha384::new_with_prefix(&b[..SIGNED_LEN]), &sig).map_err(|_| ReportError::BadSignature)
    }

    /// The signature as a P-384 ECDSA signature.
    pub fn signature(&self) -> Result<Signature, ReportError> {
        if self.signature_r[SCALAR_LEN..].iter().chain(&self.signature_s[SCALAR_LEN..]).any(|&x| x != 0) {
            return Err(ReportError::MalformedSignature("R or S is wider than 48 bytes".into()));
        }
        let mut r = [0u8; SCALAR_LEN];
        let mut s = [0u8; SCALAR_LEN];
        for i in 0..SCALAR_LEN {
            r[i] = self.signature_r[SCALAR_LEN - 1 - i];
            s[i] = self.signature_s[SCALAR_LEN - 1 - i];
        }
        Signature::from_scalars(r, s).map_err(|e| ReportError::MalformedSignature(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sev::parser::ByteParser;

    /// Real AMD samples: the project's shared/ directory sits beside the repository.
    const REFS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/refs/attestation/");
    const GO_SEV_GUEST_REPORT: &str = "go-sev-guest__verify_testdata_attestation.bin";
    const GO_SEV_GUEST_VCEK: &str = "go-sev-guest__verify_testdata_vcek.testcer";
    const VIRTEE_REPORT: &str = "virtee-sev__tests_certs_data_report_milan.bin.derived";
    const VIRTEE_VCEK: &str = "virtee-sev__tests_certs_data_vcek_milan.der";

    fn read(name: &str) -> Vec<u8> {
        let path = format!("{REFS}{name}");
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// The public key of a DER VCEK certificate.
    fn vcek_key(der: &[u8]) -> VerifyingKey {
        use x509_cert::der::Decode;
        let cert = x509_cert::Certificate::from_der(der).unwrap();
        let spki = cert.tbs_certificate.subject_public_key_info.subject_public_key;
        VerifyingKey::from_sec1_bytes(spki.raw_bytes()).unwrap()
    }

    #[test]
    fn real_milan_report_fields_match_go_sev_guest_expectations() {
        let bytes = read(GO_SEV_GUEST_REPORT);
        let r = AttestationReport::from_bytes(&bytes).unwrap();
        // Values stated by go-sev-guest's check_test.go (see the refs README).
        assert_eq!(r.version, 2);
        assert_eq!(r.cpuid, None);
        assert_eq!(r.signature_algo, SIG_ALGO_ECDSA_P384_SHA384);
        let mut rd = [0u8; 64];
        rd[..5].copy_from_slice(&[1, 2, 3, 4, 5]);
        assert_eq!(r.report_data, rd);
        assert_eq!(r.host_data, [0; 32]);
        assert_eq!(r.family_id, [0; 16]);
        assert_eq!(r.image_id, [0; 16]);
        assert_eq!(hex::encode(r.report_id), "8edc638e1857c555d21f6b11bda3c8b1b5a09dba4852b4c8ee7aa2f16f22cc0a");
        assert_eq!(r.report_id_ma, [0xFF; 32]);
        assert_eq!(
            hex::encode(r.measurement),
            "b07af9620f3b839b47996422ddec6058338951d984e312115131ea82705eaf5b6bdf8a9ece31a5a608eb0cf2e4872b01"
        );
        assert_eq!(
            hex::encode(r.chip_id),
            "3ac3fe21e13fb0990eb28a802e3fb6a29483a6b0753590c951bdd3b8e53786184ca39e359669a2b76a1936776b564ea4\
             64cdce40c05f63c9b610c5068b006b5d"
        );
        for tcb in [r.current_tcb, r.reported_tcb, r.committed_tcb, r.launch_tcb] {
            assert_eq!(tcb.to_u64(), 4901323769462652930);
            assert_eq!(tcb, Tcb { bootloader: 2, tee: 0, snp: 5, microcode: 0x44 });
        }
        assert_eq!(r.policy, 0xb0000, "Debug + SMT (+ reserved bit 17)");
        assert_eq!(r.vmpl, 0);
        assert_eq!(r.platform_info, 1);
        assert!(!r.author_key_en);
        assert_eq!(r.id_key_digest, [0; 48]);
        assert_eq!(r.current_version, FirmwareVersion { major: 1, minor: 49, build: 3 });
    }

    #[test]
    fn real_milan_reports_round_trip_byte_for_byte() {
        for path in [GO_SEV_GUEST_REPORT, VIRTEE_REPORT] {
            let bytes = read(path);
            let r = AttestationReport::from_bytes(&bytes).unwrap();
            assert_eq!(r.to_bytes().as_slice(), bytes.as_slice(), "{path}");
        }
    }

    #[test]
    fn real_milan_reports_verify_with_their_vceks() {
        for (report, vcek) in [(GO_SEV_GUEST_REPORT, GO_SEV_GUEST_VCEK), (VIRTEE_REPORT, VIRTEE_VCEK)] {
            let r = AttestationReport::from_bytes(&read(report)).unwrap();
            r.verify(&vcek_key(&read(vcek))).unwrap();
        }
    }

    #[test]
    fn real_report_with_flipped_byte_fails_verification() {
        let mut bytes = read(VIRTEE_REPORT);
        bytes[21] ^= 0x80;
        let r = AttestationReport::from_bytes(&bytes).unwrap();
        assert_eq!(r.verify(&vcek_key(&read(VIRTEE_VCEK))), Err(ReportError::BadSignature));
    }

    #[test]
    fn virtee_report_fields_match_sev_crate_decoding() {
        let bytes = read(VIRTEE_REPORT);
        let ours = AttestationReport::from_bytes(&bytes).unwrap();
        let theirs = sev::firmware::guest::AttestationReport::from_bytes(&bytes).unwrap();
        assert_eq!(ours.version, theirs.version);
        assert_eq!(ours.policy, theirs.policy.0);
        assert_eq!(ours.measurement, theirs.measurement);
        assert_eq!(ours.chip_id, theirs.chip_id);
        assert_eq!(ours.reported_tcb.snp, theirs.reported_tcb.snp);
        assert_eq!(ours.reported_tcb.microcode, theirs.reported_tcb.microcode);
        assert_eq!(ours.reported_tcb.bootloader, theirs.reported_tcb.bootloader);
        assert_eq!(ours.current_version.minor, theirs.current.minor);
        assert_eq!(ours.current_version.build, theirs.current.build);
        // README: TCB 0x7308000000000003, firmware 1.52 build 4.
        assert_eq!(ours.reported_tcb.to_u64(), 0x7308000000000003);
        assert_eq!(ours.current_version, FirmwareVersion { major: 1, minor: 52, build: 4 });
    }

    #[test]
    fn report_of_wrong_size_is_rejected() {
        assert_eq!(AttestationReport::from_bytes(&[0u8; 0x4A1]), Err(ReportError::WrongSize { len: 0x4A1 }));
    }

    #[test]
    fn report_of_unknown_version_is_rejected() {
        let mut b = AttestationReport::default().to_bytes();
        b[0] = 5;
        assert_eq!(AttestationReport::from_bytes(&b), Err(ReportError::UnsupportedVersion(5)));
    }

    #[test]
    fn report_with_reserved_bytes_set_is_rejected() {
        for off in [0x4C, 0x18B, 0x1EB, 0x1F8, 0x29F, 0x2A0 + 144, 0x49F, OFF_TCB_CURRENT + 3, OFF_LAUNCH_TCB + 2] {
            let mut b = AttestationReport::default().to_bytes();
            b[off] = 1;
            assert_eq!(
                AttestationReport::from_bytes(&b),
                Err(ReportError::ReservedNotZero { offset: off }),
                "offset {off:#x}"
            );
        }
    }

    #[test]
    fn version_2_report_with_cpuid_bytes_is_rejected() {
        let mut r = AttestationReport { version: 2, ..Default::default() };
        r.cpuid = Some(CpuidFms::MILAN_B0);
        assert_eq!(
            AttestationReport::from_bytes(&r.to_bytes()),
            Err(ReportError::ReservedNotZero { offset: OFF_CPUID })
        );
    }

    #[test]
    fn report_layout_matches_sev_crate_field_by_field() {
        let r = AttestationReport {
            guest_svn: 7,
            policy: 0x30000,
            family_id: [1; 16],
            image_id: [2; 16],
            vmpl: 1,
            current_tcb: Tcb { bootloader: 4, tee: 0, snp: 22, microcode: 213 },
            platform_info: 3,
            report_data: [3; 64],
            measurement: [4; 48],
            host_data: [5; 32],
            id_key_digest: [6; 48],
            author_key_digest: [7; 48],
            report_id: [8; 32],
            reported_tcb: Tcb { bootloader: 3, tee: 1, snp: 20, microcode: 200 },
            cpuid: Some(CpuidFms::MILAN_B0),
            chip_id: [9; 64],
            committed_tcb: Tcb { bootloader: 2, tee: 0, snp: 19, microcode: 199 },
            current_version: FirmwareVersion { major: 1, minor: 55, build: 21 },
            committed_version: FirmwareVersion { major: 1, minor: 54, build: 20 },
            launch_tcb: Tcb { bootloader: 1, tee: 0, snp: 18, microcode: 198 },
            ..Default::default()
        };
        let b = r.to_bytes();
        let s = sev::firmware::guest::AttestationReport::from_bytes(&b).unwrap();
        assert_eq!((s.version, s.guest_svn, s.policy.0, s.vmpl, s.sig_algo), (3, 7, 0x30000, 1, 1));
        assert_eq!((s.family_id, s.image_id), ([1; 16], [2; 16]));
        assert_eq!((s.current_tcb.bootloader, s.current_tcb.snp, s.current_tcb.microcode), (4, 22, 213));
        assert_eq!(s.plat_info.0, 3);
        assert_eq!((s.report_data, s.measurement, s.host_data), ([3; 64], [4; 48], [5; 32]));
        assert_eq!((s.id_key_digest, s.author_key_digest, s.report_id), ([6; 48], [7; 48], [8; 32]));
        assert_eq!(s.report_id_ma, [0xFF; 32]);
        assert_eq!((s.reported_tcb.tee, s.reported_tcb.snp), (1, 20));
        assert_eq!((s.cpuid_fam_id, s.cpuid_mod_id, s.cpuid_step), (Some(0x19), Some(1), Some(0)));
        assert_eq!(s.chip_id, [9; 64]);
        assert_eq!((s.committed_tcb.snp, s.launch_tcb.snp), (19, 18));
        assert_eq!((s.current.major, s.current.minor, s.current.build), (1, 55, 21));
        assert_eq!((s.committed.major, s.committed.minor, s.committed.build), (1, 54, 20));
        // And the sev crate re-encodes it to the same bytes (what its verifier signs).
        assert_eq!(s.to_bytes().unwrap().as_slice(), b.as_slice());
        assert_eq!(AttestationReport::from_bytes(&b).unwrap(), r);
    }

    #[test]
    fn signed_report_verifies_and_tampered_one_does_not() {
        let key = SigningKey::from_slice(&[0x42; 48]).unwrap();
        let r = AttestationReport { report_data: [0xAB; 64], chip_id: [1; 64], ..Default::default() };
        let signed = AttestationReport::from_bytes(&r.sign(&key).unwrap()).unwrap();
        assert_eq!(signed.signature_r[48..], [0; 24]);
        signed.verify(key.verifying_key()).unwrap();
        let mut tampered = signed.clone();
        tampered.report_data[0] ^= 1;
        assert_eq!(tampered.verify(key.verifying_key()), Err(ReportError::BadSignature));
        let other = SigningKey::from_slice(&[0x43; 48]).unwrap();
        assert_eq!(signed.verify(other.verifying_key()), Err(ReportError::BadSignature));
    }

    #[test]
    fn unsigned_report_signature_is_malformed() {
        let r = AttestationReport::default();
        assert!(matches!(r.signature(), Err(ReportError::MalformedSignature(_))));
    }

    #[test]
    fn tcb_u64_puts_microcode_in_the_top_byte() {
        let t = Tcb { bootloader: 3, tee: 0, snp: 8, microcode: 0x73 };
        assert_eq!(t.to_u64(), 0x7308000000000003);
        assert_eq!(Tcb::from_u64(0x7308000000000003), Ok(t));
        assert_eq!(Tcb::from_u64(0x0000_0100_0000_0000), Err(ReportError::ReservedNotZero { offset: 5 }));
    }

    #[test]
    fn milan_b0_cpuid_eax_is_family_19h_model_1() {
        // Family 19h = base 0xF + extended 0xA; model 01h; stepping 0.
        assert_eq!(CpuidFms::MILAN_B0.cpuid_eax(), 0x00A0_0F10);
        assert_eq!(CpuidFms { family: 0x19, model: 0x11, stepping: 1 }.cpuid_eax(), 0x00A1_0F11);
    }
}
