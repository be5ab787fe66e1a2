//! Intel DCAP quotes for TDX (version 4 with a TD 1.0 body, version 5 with a TD 1.0 or
//! TD 1.5 body), byte for byte: parsing, verification (the quote's signature, the
//! quoting enclave's report, its binding of the attestation key, the PCK chain), and
//! the emulated quoting enclave that turns a TD report into a quote.
//!
//! Layout (Intel "TDX DCAP Quoting Library API", quote format; integers little-endian):
//!
//! - Header, 48 bytes: version (u16), attestation key type (u16, 2 = ECDSA-256 with
//!   P-256), TEE type (u32, 0x81 = TDX), QE SVN (u16) and PCE SVN (u16) (zero in TDX
//!   quotes, which the specification calls reserved), QE vendor id (16 bytes, Intel's
//!   `939a7233-f79c-4ca9-940a-0db3957f0607`), user data (20 bytes: the QE id, then 4
//!   zero bytes).
//! - Version 5 only: body type (u16: 2 = TD 1.0, 3 = TD 1.5) and body size (u32).
//! - TD quote body, 584 bytes (TD 1.0): TEE_TCB_SVN (16), MRSEAM (48), MRSIGNERSEAM
//!   (48), SEAMATTRIBUTES (8), TDATTRIBUTES (8), XFAM (8), MRTD, MRCONFIGID, MROWNER,
//!   MROWNERCONFIG, RTMR0-3 (48 each), REPORTDATA (64); TD 1.5 adds TEE_TCB_SVN2 (16)
//!   and MRSERVICETD (48): 648 bytes.
//! - Signature data length (u32), then the signature data: the ECDSA signature (64
//!   bytes, r || s big-endian) by the attestation key over everything before the
//!   length field, the attestation public key (64 bytes, x || y), and certification
//!   data: type (u16) 6 = QE report certification data, size (u32), and that data:
//!   the QE report (384-byte SGX REPORTBODY), its signature by the PCK key (64 bytes),
//!   QE authentication data (u16 size, then the data), and nested certification data
//!   type 5 (the PEM PCK certificate chain: PCK, intermediate CA, root).
//!
//! The QE report binds the attestation key: its REPORTDATA is
//! SHA-256(attestation key || QE authentication data) followed by 32 zero bytes.

use p256::ecdsa::signature::{Signer, Verifier};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};
use thiserror::Error;
use x509_cert::Certificate;

use super::certs::{parse_pem_chain, verify_chain, CertError, EmulatedIntelChain};
use super::report::{verify_td_report, ReportError, ReportMacKey, TdReport};
use crate::bytes::{array, le_u16, le_u32, le_u64};
use crate::measure::tdx::DIGEST_SIZE;

/// Quote version 4.
pub const QUOTE_VERSION_4: u16 = 4;
/// Quote version 5.
pub const QUOTE_VERSION_5: u16 = 5;
/// Attestation key type: ECDSA-256 with the P-256 curve.
pub const ATT_KEY_TYPE_ECDSA_P256: u16 = 2;
/// TEE type of a TDX quote.
pub const TEE_TYPE_TDX: u32 = 0x81;
/// Intel's quoting enclave vendor id, `939a7233-f79c-4ca9-940a-0db3957f0607`.
pub const INTEL_QE_VENDOR_ID: [u8; 16] =
    [0x93, 0x9a, 0x72, 0x33, 0xf7, 0x9c, 0x4c, 0xa9, 0x94, 0x0a, 0x0d, 0xb3, 0x95, 0x7f, 0x06, 0x07];
/// Size of the quote header.
pub const HEADER_SIZE: usize = 48;
/// Size of a TD 1.0 quote body.
pub const TD10_BODY_SIZE: usize = 584;
/// Size of a TD 1.5 quote body.
pub const TD15_BODY_SIZE: usize = 648;
/// Version 5 body type of a TD 1.0 body.
pub const BODY_TYPE_TD10: u16 = 2;
/// Version 5 body type of a TD 1.5 body.
pub const BODY_TYPE_TD15: u16 = 3;
/// Size of the QE report (SGX REPORTBODY).
pub const QE_REPORT_SIZE: usize = 384;
/// Size of an ECDSA P-256 signature or public key in a quote.
pub const ECDSA_SIZE: usize = 64;
/// Certification data type: PEM PCK certificate chain.
pub const CERT_TYPE_PCK_CHAIN: u16 = 5;
/// Certification data type: QE report certification data.
pub const CERT_TYPE_QE_REPORT: u16 = 6;
/// The emulated quoting enclave's ISVPRODID (Intel's TDX QE has 2).
pub const EMULATED_QE_PROD_ID: u16 = 2;
/// The emulated quoting enclave's ISVSVN.
pub const EMULATED_QE_SVN: u16 = 4;
/// The emulated quoting enclave's ATTRIBUTES (those of Intel's TDX QE: INIT,
/// MODE64BIT, PROVISIONKEY; XFRM 0xe7).
pub const EMULATED_QE_ATTRIBUTES: [u8; 16] = [0x15, 0, 0, 0, 0, 0, 0, 0, 0xe7, 0, 0, 0, 0, 0, 0, 0];
/// What the emulated quoting enclave's MRENCLAVE is the SHA-256 of.
pub const EMULATED_QE_MRENCLAVE_LABEL: &[u8] = b"cvmm emulated TDX quoting enclave";
/// What the emulated quoting enclave's MRSIGNER is the SHA-256 of.
pub const EMULATED_QE_MRSIGNER_LABEL: &[u8] = b"cvmm emulated TDX quoting enclave signer";
/// The QE authentication data Intel's quoting enclave puts in its quotes (bytes 0-31).
pub const QE_AUTH_DATA: [u8; 32] = [
    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30,
    31,
];

/// Errors from parsing, building or verifying a quote.
#[derive(Debug, Error)]
pub enum QuoteError {
    /// The quote ends inside a field.
    #[error("truncated quote: {what} at offset {offset} needs {need} bytes, only {have} left")]
    Truncated {
        /// The field.
        what: &'static str,
        /// Where it starts.
        offset: usize,
        /// Its size.
        need: usize,
        /// Bytes left.
        have: usize,
    },
    /// A quote version this parser does not read.
    #[error("quote version {0} is not supported (4 or 5)")]
    Version(u16),
    /// An attestation key type other than ECDSA P-256.
    #[error("attestation key type {0} is not supported (2 = ECDSA-256 with P-256)")]
    AttestationKeyType(u16),
    /// Not a TDX quote.
    #[error("TEE type {0:#x} is not TDX (0x81)")]
    TeeType(u32),
    /// A version 5 body type or size this parser does not read.
    #[error(
        "quote body type {body_type} of {size} bytes is not a TD 1.0 (2, 584 bytes) or TD 1.5 (3, 648 bytes) body"
    )]
    BodyType {
        /// The body type.
        body_type: u16,
        /// Its declared size.
        size: u32,
    },
    /// A TD 1.5 body in a version 4 quote.
    #[error("a version 4 quote has a TD 1.0 body: a TD 1.5 body needs version 5")]
    Td15InVersion4,
    /// Unexpected certification data type.
    #[error("{level} certification data type {found} (expected {expected})")]
    CertDataType {
        /// Outer (6) or inner (5).
        level: &'static str,
        /// The type found.
        found: u16,
        /// The type expected.
        expected: u16,
    },
    /// A length field disagrees with what it contains.
    #[error("{what} declares {declared} bytes but its contents take {used}")]
    Length {
        /// Which length.
        what: &'static str,
        /// The declared length.
        declared: usize,
        /// The bytes its contents take.
        used: usize,
    },
    /// Bytes after the end of the quote (use [`Quote::parse_prefix`] to allow them).
    #[error("{extra} bytes after the end of the {quote_len}-byte quote")]
    TrailingBytes {
        /// The quote's length.
        quote_len: usize,
        /// Bytes after it.
        extra: usize,
    },
    /// A malformed ECDSA signature or public key.
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// Which one.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// The attestation key's signature over the header and body does not verify.
    #[error("the quote signature does not verify with the attestation key")]
    QuoteSignature,
    /// The PCK's signature over the QE report does not verify.
    #[error("the QE report signature does not verify with the PCK key")]
    QeReportSignature,
    /// The QE report does not bind the attestation key and QE authentication data.
    #[error("the QE report data is not SHA-256(attestation key || QE authentication data) || zeros")]
    QeReportData,
    /// The PCK certificate chain does not parse or verify.
    #[error("PCK chain: {0}")]
    Chain(#[source] CertError),
    /// The quoting enclave refused the TD report.
    #[error("the quoting enclave refused the TD report: {0}")]
    TdReport(#[source] ReportError),
    /// The QE authentication data does not fit its 16-bit size field.
    #[error("QE authentication data of {0} bytes is too long")]
    AuthDataTooLong(usize),
}

/// The quote header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct QuoteHeader {
    /// Version: 4 or 5.
    pub version: u16,
    /// Attestation key type: 2.
    pub att_key_type: u16,
    /// TEE type: 0x81.
    pub tee_type: u32,
    /// QE SVN (zero in TDX quotes).
    pub qe_svn: u16,
    /// PCE SVN (zero in TDX quotes).
    pub pce_svn: u16,
    /// QE vendor id.
    pub qe_vendor_id: [u8; 16],
    /// User data: the QE id (16 bytes), then zeros.
    pub user_data: [u8; 20],
}

/// The fields a TD 1.5 body adds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Td15Fields {
    /// TEE_TCB_SVN2.
    pub tee_tcb_svn2: [u8; 16],
    /// MRSERVICETD (the TD report's SERVTD_HASH).
    pub mr_service_td: [u8; DIGEST_SIZE],
}

/// The TD quote body: the TD report's fields the quote signs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TdQuoteBody {
    /// TEE_TCB_SVN of the TDX module.
    pub tee_tcb_svn: [u8; 16],
    /// MRSEAM.
    pub mr_seam: [u8; DIGEST_SIZE],
    /// MRSIGNERSEAM.
    pub mr_signer_seam: [u8; DIGEST_SIZE],
    /// SEAMATTRIBUTES (the module's ATTRIBUTES).
    pub seam_attributes: u64,
    /// TDATTRIBUTES.
    pub td_attributes: u64,
    /// XFAM.
    pub xfam: u64,
    /// MRTD.
    pub mr_td: [u8; DIGEST_SIZE],
    /// MRCONFIGID.
    pub mr_config_id: [u8; DIGEST_SIZE],
    /// MROWNER.
    pub mr_owner: [u8; DIGEST_SIZE],
    /// MROWNERCONFIG.
    pub mr_owner_config: [u8; DIGEST_SIZE],
    /// RTMR0-3.
    pub rtmr: [[u8; DIGEST_SIZE]; 4],
    /// REPORTDATA.
    pub report_data: [u8; 64],
    /// TD 1.5 fields (version 5 body type 3 only).
    pub td15: Option<Td15Fields>,
}

impl TdQuoteBody {
    /// The body of a quote of `report`: a TD 1.5 body (with TEE_TCB_SVN2 and
    /// MRSERVICETD) if `td15`, else a TD 1.0 body.
    pub fn from_td_report(report: &TdReport, td15: bool) -> Self {
        let (tcb, td) = (&report.tee_tcb_info, &report.td_info);
        Self {
            tee_tcb_svn: tcb.tee_tcb_svn,
            mr_seam: tcb.mr_seam,
            mr_signer_seam: tcb.mr_signer_seam,
            seam_attributes: tcb.attributes,
            td_attributes: td.attributes,
            xfam: td.xfam,
            mr_td: td.mr_td,
            mr_config_id: td.mr_config_id,
            mr_owner: td.mr_owner,
            mr_owner_config: td.mr_owner_config,
            rtmr: td.rtmr,
            report_data: report.mac_struct.report_data,
            td15: td15.then_some(Td15Fields { tee_tcb_svn2: tcb.tee_tcb_svn2, mr_service_td: td.servtd_hash }),
        }
    }

    /// The body's size: [`TD10_BODY_SIZE`] or [`TD15_BODY_SIZE`].
    pub fn size(&self) -> usize {
        if self.td15.is_some() {
            TD15_BODY_SIZE
        } else {
            TD10_BODY_SIZE
        }
    }

    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.tee_tcb_svn);
        out.extend_from_slice(&self.mr_seam);
        out.extend_from_slice(&self.mr_signer_seam);
        for v in [self.seam_attributes, self.td_attributes, self.xfam] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        for mr in [&self.mr_td, &self.mr_config_id, &self.mr_owner, &self.mr_owner_config] {
            out.extend_from_slice(mr);
        }
        self.rtmr.iter().for_each(|r| out.extend_from_slice(r));
        out.extend_from_slice(&self.report_data);
        if let Some(t) = &self.td15 {
            out.extend_from_slice(&t.tee_tcb_svn2);
            out.extend_from_slice(&t.mr_service_td);
        }
    }

    /// Reads a body of [`TD10_BODY_SIZE`] or [`TD15_BODY_SIZE`] bytes.
    fn read(b: &[u8]) -> Self {
        let mr = |i: usize| array::<DIGEST_SIZE>(b, 136 + i * DIGEST_SIZE);
        Self {
            tee_tcb_svn: array(b, 0),
            mr_seam: array(b, 16),
            mr_signer_seam: array(b, 64),
            seam_attributes: le_u64(b, 112),
            td_attributes: le_u64(b, 120),
            xfam: le_u64(b, 128),
            mr_td: mr(0),
            mr_config_id: mr(1),
            mr_owner: mr(2),
            mr_owner_config: mr(3),
            rtmr: [mr(4), mr(5), mr(6), mr(7)],
            report_data: array(b, 520),
            td15: (b.len() == TD15_BODY_SIZE)
                .then(|| Td15Fields { tee_tcb_svn2: array(b, 584), mr_service_td: array(b, 600) }),
        }
    }
}

/// An SGX REPORTBODY (the quoting enclave's report), 384 bytes; reserved bytes zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SgxReportBody {
    /// CPUSVN (offset 0).
    pub cpu_svn: [u8; 16],
    /// MISCSELECT (16).
    pub misc_select: u32,
    /// ISVEXTPRODID (32).
    pub isv_ext_prod_id: [u8; 16],
    /// ATTRIBUTES (48).
    pub attributes: [u8; 16],
    /// MRENCLAVE (64).
    pub mr_enclave: [u8; 32],
    /// MRSIGNER (128).
    pub mr_signer: [u8; 32],
    /// CONFIGID (192).
    pub config_id: [u8; 64],
    /// ISVPRODID (256).
    pub isv_prod_id: u16,
    /// ISVSVN (258).
    pub isv_svn: u16,
    /// CONFIGSVN (260).
    pub config_svn: u16,
    /// ISVFAMILYID (304).
    pub isv_family_id: [u8; 16],
    /// REPORTDATA (320).
    pub report_data: [u8; 64],
}

impl SgxReportBody {
    /// The 384 bytes.
    pub fn to_bytes(&self) -> [u8; QE_REPORT_SIZE] {
        let mut b = [0u8; QE_REPORT_SIZE];
        b[0..16].copy_from_slice(&self.cpu_svn);
        b[16..20].copy_from_slice(&self.misc_select.to_le_bytes());
        b[32..48].copy_from_slice(&self.isv_ext_prod_id);
        b[48..64].copy_from_slice(&self.attributes);
        b[64..96].copy_from_slice(&self.mr_enclave);
        b[128..160].copy_from_slice(&self.mr_signer);
        b[192..256].copy_from_slice(&self.config_id);
        b[256..258].copy_from_slice(&self.isv_prod_id.to_le_bytes());
        b[258..260].copy_from_slice(&self.isv_svn.to_le_bytes());
        b[260..262].copy_from_slice(&self.config_svn.to_le_bytes());
        b[304..320].copy_from_slice(&self.isv_family_id);
        b[320..384].copy_from_slice(&self.report_data);
        b
    }

    /// Reads the 384 bytes (reserved bytes are ignored).
    pub fn from_bytes(b: &[u8; QE_REPORT_SIZE]) -> Self {
        Self {
            cpu_svn: array(b, 0),
            misc_select: le_u32(b, 16),
            isv_ext_prod_id: array(b, 32),
            attributes: array(b, 48),
            mr_enclave: array(b, 64),
            mr_signer: array(b, 128),
            config_id: array(b, 192),
            isv_prod_id: le_u16(b, 256),
            isv_svn: le_u16(b, 258),
            config_svn: le_u16(b, 260),
            isv_family_id: array(b, 304),
            report_data: array(b, 320),
        }
    }
}

/// A TDX quote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quote {
    /// The header.
    pub header: QuoteHeader,
    /// The TD quote body.
    pub body: TdQuoteBody,
    /// ECDSA signature (r || s) by the attestation key over header and body.
    pub signature: [u8; ECDSA_SIZE],
    /// The attestation public key (x || y).
    pub attestation_key: [u8; ECDSA_SIZE],
    /// The QE report (SGX REPORTBODY), as signed.
    pub qe_report: [u8; QE_REPORT_SIZE],
    /// ECDSA signature (r || s) by the PCK key over the QE report.
    pub qe_report_signature: [u8; ECDSA_SIZE],
    /// QE authentication data.
    pub qe_auth_data: Vec<u8>,
    /// Certification data type 5: the PEM PCK certificate chain, as carried.
    pub pck_chain: Vec<u8>,
}

/// A reader over a quote that names the field it is reading in its errors.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, what: &'static str, need: usize) -> Result<&'a [u8], QuoteError> {
        let have = self.bytes.len() - self.at;
        if need > have {
            return Err(QuoteError::Truncated { what, offset: self.at, need, have });
        }
        let out = &self.bytes[self.at..self.at + need];
        self.at += need;
        Ok(out)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], QuoteError> {
        self.take(what, N).map(|b| array(b, 0))
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, QuoteError> {
        self.array(what).map(u16::from_le_bytes)
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, QuoteError> {
        self.array(what).map(u32::from_le_bytes)
    }

    /// A u32 length, then that many bytes.
    fn sized(&mut self, len_what: &'static str, what: &'static str) -> Result<&'a [u8], QuoteError> {
        let len = self.u32(len_what)? as usize;
        self.take(what, len)
    }
}

impl Quote {
    /// Parses a quote that fills `bytes` exactly; bytes after the quote are an error
    /// ([`QuoteError::TrailingBytes`]).
    pub fn parse(bytes: &[u8]) -> Result<Self, QuoteError> {
        let (quote, len) = Self::parse_prefix(bytes)?;
        if len != bytes.len() {
            return Err(QuoteError::TrailingBytes { quote_len: len, extra: bytes.len() - len });
        }
        Ok(quote)
    }

    /// Parses the quote at the start of `bytes` and returns it with its length (the
    /// length its signature data length field implies); what follows is left alone.
    pub fn parse_prefix(bytes: &[u8]) -> Result<(Self, usize), QuoteError> {
        let mut c = Cursor { bytes, at: 0 };
        let h = c.take("header", HEADER_SIZE)?;
        let header = QuoteHeader {
            version: u16::from_le_bytes(array(h, 0)),
            att_key_type: u16::from_le_bytes(array(h, 2)),
            tee_type: u32::from_le_bytes(array(h, 4)),
            qe_svn: u16::from_le_bytes(array(h, 8)),
            pce_svn: u16::from_le_bytes(array(h, 10)),
            qe_vendor_id: array(h, 12),
            user_data: array(h, 28),
        };
        if header.version != QUOTE_VERSION_4 && header.version != QUOTE_VERSION_5 {
            return Err(QuoteError::Version(header.version));
        }
        if header.att_key_type != ATT_KEY_TYPE_ECDSA_P256 {
            return Err(QuoteError::AttestationKeyType(header.att_key_type));
        }
        if header.tee_type != TEE_TYPE_TDX {
            return Err(QuoteError::TeeType(header.tee_type));
        }
        let body_size = if header.version == QUOTE_VERSION_5 {
            let body_type = c.u16("body type")?;
            let size = c.u32("body size")?;
            match (body_type, size as usize) {
                (BODY_TYPE_TD10, TD10_BODY_SIZE) => TD10_BODY_SIZE,
                (BODY_TYPE_TD15, TD15_BODY_SIZE) => TD15_BODY_SIZE,
                _ => return Err(QuoteError::BodyType { body_type, size }),
            }
        } else {
            TD10_BODY_SIZE
        };
        let body = TdQuoteBody::read(c.take("TD quote body", body_size)?);

        let sig_data = c.sized("signature data length", "signature data")?;
        let quote_len = c.at;
        let mut s = Cursor { bytes: sig_data, at: 0 };
        let signature = s.array("quote signature")?;
        let attestation_key = s.array("attestation key")?;
        let cert_type = s.u16("certification data type")?;
        if cert_type != CERT_TYPE_QE_REPORT {
            return Err(QuoteError::CertDataType { level: "outer", found: cert_type, expected: CERT_TYPE_QE_REPORT });
        }
        let qe_data = s.sized("certification data size", "QE report certification data")?;
        expect_consumed("signature data length", &s)?;
        let mut q = Cursor { bytes: qe_data, at: 0 };
        let qe_report = q.array("QE report")?;
        let qe_report_signature = q.array("QE report signature")?;
        let auth_len = q.u16("QE authentication data size")? as usize;
        let qe_auth_data = q.take("QE authentication data", auth_len)?.to_vec();
        let inner_type = q.u16("PCK certification data type")?;
        if inner_type != CERT_TYPE_PCK_CHAIN {
            return Err(QuoteError::CertDataType { level: "inner", found: inner_type, expected: CERT_TYPE_PCK_CHAIN });
        }
        let pck_chain = q.sized("PCK certification data size", "PCK certificate chain")?.to_vec();
        expect_consumed("certification data size", &q)?;
        let quote =
            Self { header, body, signature, attestation_key, qe_report, qe_report_signature, qe_auth_data, pck_chain };
        Ok((quote, quote_len))
    }

    /// The signed part: header, (version 5) body type and size, body.
    pub fn signed_bytes(&self) -> Result<Vec<u8>, QuoteError> {
        let h = &self.header;
        let mut out = Vec::with_capacity(HEADER_SIZE + 6 + TD15_BODY_SIZE);
        out.extend_from_slice(&h.version.to_le_bytes());
        out.extend_from_slice(&h.att_key_type.to_le_bytes());
        out.extend_from_slice(&h.tee_type.to_le_bytes());
        out.extend_from_slice(&h.qe_svn.to_le_bytes());
        out.extend_from_slice(&h.pce_svn.to_le_bytes());
        out.extend_from_slice(&h.qe_vendor_id);
        out.extend_from_slice(&h.user_data);
        match h.version {
            QUOTE_VERSION_5 => {
                let body_type = if self.body.td15.is_some() { BODY_TYPE_TD15 } else { BODY_TYPE_TD10 };
                out.extend_from_slice(&body_type.to_le_bytes());
                out.extend_from_slice(&(self.body.size() as u32).to_le_bytes());
            }
            QUOTE_VERSION_4 if self.body.td15.is_some() => return Err(QuoteError::Td15InVersion4),
            QUOTE_VERSION_4 => {}
            v => return Err(QuoteError::Version(v)),
        }
        self.body.write(&mut out);
        Ok(out)
    }

    /// The quote's bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>, QuoteError> {
        let auth_len =
            u16::try_from(self.qe_auth_data.len()).map_err(|_| QuoteError::AuthDataTooLong(self.qe_auth_data.len()))?;
        let mut qe_data = Vec::new();
        qe_data.extend_from_slice(&self.qe_report);
        qe_data.extend_from_slice(&self.qe_report_signature);
        qe_data.extend_from_slice(&auth_len.to_le_bytes());
        qe_data.extend_from_slice(&self.qe_auth_data);
        qe_data.extend_from_slice(&CERT_TYPE_PCK_CHAIN.to_le_bytes());
        qe_data.extend_from_slice(&(self.pck_chain.len() as u32).to_le_bytes());
        qe_data.extend_from_slice(&self.pck_chain);
        let mut sig_data = Vec::new();
        sig_data.extend_from_slice(&self.signature);
        sig_data.extend_from_slice(&self.attestation_key);
        sig_data.extend_from_slice(&CERT_TYPE_QE_REPORT.to_le_bytes());
        sig_data.extend_from_slice(&(qe_data.len() as u32).to_le_bytes());
        sig_data.extend_from_slice(&qe_data);
        let mut out = self.signed_bytes()?;
        out.extend_from_slice(&(sig_data.len() as u32).to_le_bytes());
        out.extend_from_slice(&sig_data);
        Ok(out)
    }

    /// The QE report's fields.
    pub fn qe_report_body(&self) -> SgxReportBody {
        SgxReportBody::from_bytes(&self.qe_report)
    }

    /// The QE id (the header's first 16 user-data bytes).
    pub fn qe_id(&self) -> [u8; 16] {
        array(&self.header.user_data, 0)
    }

    /// Checks the attestation key's signature over the header and body.
    pub fn verify_signature(&self) -> Result<(), QuoteError> {
        let key = attestation_key(&self.attestation_key)?;
        let sig = signature(&self.signature, "quote signature")?;
        key.verify(&self.signed_bytes()?, &sig).map_err(|_| QuoteError::QuoteSignature)
    }

    /// Checks that the QE report binds the attestation key: its REPORTDATA is
    /// SHA-256(attestation key || QE authentication data) then 32 zero bytes.
    pub fn verify_qe_report_data(&self) -> Result<(), QuoteError> {
        if self.qe_report_body().report_data != qe_report_data(&self.attestation_key, &self.qe_auth_data) {
            return Err(QuoteError::QeReportData);
        }
        Ok(())
    }

    /// Checks the PCK key's signature over the QE report.
    pub fn verify_qe_report_signature(&self, pck: &VerifyingKey) -> Result<(), QuoteError> {
        let sig = signature(&self.qe_report_signature, "QE report signature")?;
        pck.verify(&self.qe_report, &sig).map_err(|_| QuoteError::QeReportSignature)
    }

    /// The certificates of the PCK chain (PCK first).
    pub fn pck_chain_certs(&self) -> Result<Vec<Certificate>, QuoteError> {
        parse_pem_chain(&self.pck_chain).map_err(QuoteError::Chain)
    }

    /// Verifies the quote's cryptography end to end: the PCK chain up to
    /// `trusted_root` (DER), the PCK's signature over the QE report, the QE report's
    /// binding of the attestation key, and the attestation key's signature over the
    /// header and body. Returns the PCK certificate.
    ///
    /// This is not a full DCAP appraisal: it checks no validity period, revocation
    /// list, TCB level or QE identity (dcap-qvl or Intel's QVL do that with collateral).
    pub fn verify(&self, trusted_root: &[u8]) -> Result<Certificate, QuoteError> {
        // The cheap checks first: a hash, then one signature, then the chain's three.
        self.verify_qe_report_data()?;
        self.verify_signature()?;
        let certs = self.pck_chain_certs()?;
        let pck = verify_chain(&certs, trusted_root).map_err(QuoteError::Chain)?;
        self.verify_qe_report_signature(&pck)?;
        certs.into_iter().next().ok_or(QuoteError::Chain(CertError::Chain("empty".into())))
    }
}

fn expect_consumed(what: &'static str, c: &Cursor<'_>) -> Result<(), QuoteError> {
    if c.at != c.bytes.len() {
        return Err(QuoteError::Length { what, declared: c.bytes.len(), used: c.at });
    }
    Ok(())
}

/// The QE report data that binds `attestation_key` and `auth_data`.
pub fn qe_report_data(attestation_key: &[u8; ECDSA_SIZE], auth_data: &[u8]) -> [u8; 64] {
    let mut h = Sha256::new();
    h.update(attestation_key);
    h.update(auth_data);
    let mut out = [0u8; 64];
    out[..32].copy_from_slice(&h.finalize());
    out
}

/// A raw (x || y) P-256 public key.
fn attestation_key(raw: &[u8; ECDSA_SIZE]) -> Result<VerifyingKey, QuoteError> {
    let mut sec1 = [0u8; 1 + ECDSA_SIZE];
    sec1[0] = 0x04;
    sec1[1..].copy_from_slice(raw);
    VerifyingKey::from_sec1_bytes(&sec1)
        .map_err(|e| QuoteError::Malformed { what: "attestation key", reason: e.to_string() })
}

/// A raw (r || s) signature.
fn signature(raw: &[u8; ECDSA_SIZE], what: &'static str) -> Result<Signature, QuoteError> {
    Signature::from_slice(raw).map_err(|e| QuoteError::Malformed { what, reason: e.to_string() })
}

/// The raw (x || y) form of a public key.
fn raw_public_key(key: &VerifyingKey) -> [u8; ECDSA_SIZE] {
    array(&key.to_encoded_point(false).as_bytes()[1..], 0)
}

/// Which quote the quoting enclave produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuoteFormat {
    /// Version 4, TD 1.0 body (what TDX 1.0 and most TDX 1.5 platforms produce).
    V4,
    /// Version 5, TD 1.5 body (type 3).
    V5Td15,
}

/// The emulated TDX quoting enclave: checks a TD report's MAC with the platform's
/// report key and signs a quote of it with the attestation key, the PCK having
/// certified that key through the QE report.
pub struct QuotingEnclave {
    attestation_key: SigningKey,
    report_key: ReportMacKey,
    qe_id: [u8; 16],
    qe_report: [u8; QE_REPORT_SIZE],
    qe_report_signature: [u8; ECDSA_SIZE],
    pck_chain: Vec<u8>,
}

impl std::fmt::Debug for QuotingEnclave {
    /// Names the QE, never the keys.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuotingEnclave").field("qe_id", &hex::encode(self.qe_id)).finish_non_exhaustive()
    }
}

impl QuotingEnclave {
    /// The quoting enclave of the platform `chain` describes: its QE report (the
    /// emulated QE's identity, the platform's CPUSVN, REPORTDATA binding the
    /// attestation key) is signed by the PCK key once, here, as the provisioning
    /// certification enclave does when it certifies an attestation key.
    pub fn new(chain: &EmulatedIntelChain) -> Result<Self, QuoteError> {
        let attestation_key = chain.attestation_key().clone();
        let raw_key = raw_public_key(attestation_key.verifying_key());
        let body = SgxReportBody {
            cpu_svn: chain.sgx_extensions().tcb.cpu_svn,
            misc_select: 0,
            isv_ext_prod_id: [0; 16],
            attributes: EMULATED_QE_ATTRIBUTES,
            mr_enclave: Sha256::digest(EMULATED_QE_MRENCLAVE_LABEL).into(),
            mr_signer: Sha256::digest(EMULATED_QE_MRSIGNER_LABEL).into(),
            config_id: [0; 64],
            isv_prod_id: EMULATED_QE_PROD_ID,
            isv_svn: EMULATED_QE_SVN,
            config_svn: 0,
            isv_family_id: [0; 16],
            report_data: qe_report_data(&raw_key, &QE_AUTH_DATA),
        };
        let qe_report = body.to_bytes();
        let sig: Signature = chain.pck_signing_key().sign(&qe_report);
        let pck_chain = chain.pck_chain_pem().map_err(QuoteError::Chain)?.into_bytes();
        Ok(Self {
            attestation_key,
            report_key: chain.report_mac_key(),
            qe_id: chain.qe_id(),
            qe_report,
            qe_report_signature: array(&sig.to_bytes(), 0),
            pck_chain,
        })
    }

    /// The QE report this enclave's quotes carry.
    pub fn qe_report(&self) -> SgxReportBody {
        SgxReportBody::from_bytes(&self.qe_report)
    }

    /// Quotes a TD report (TDREPORT_STRUCT bytes): refuses a report whose MAC is not
    /// this platform's or whose hashes do not match ([`verify_td_report`]), then
    /// returns the signed quote's bytes.
    pub fn quote(&self, td_report: &[u8], format: QuoteFormat) -> Result<Vec<u8>, QuoteError> {
        let report = verify_td_report(td_report, &self.report_key).map_err(QuoteError::TdReport)?;
        let mut user_data = [0u8; 20];
        user_data[..16].copy_from_slice(&self.qe_id);
        let header = QuoteHeader {
            version: match format {
                QuoteFormat::V4 => QUOTE_VERSION_4,
                QuoteFormat::V5Td15 => QUOTE_VERSION_5,
            },
            att_key_type: ATT_KEY_TYPE_ECDSA_P256,
            tee_type: TEE_TYPE_TDX,
            qe_svn: 0,
            pce_svn: 0,
            qe_vendor_id: INTEL_QE_VENDOR_ID,
            user_data,
        };
        let mut quote = Quote {
            header,
            body: TdQuoteBody::from_td_report(&report, format == QuoteFormat::V5Td15),
            signature: [0; ECDSA_SIZE],
            attestation_key: raw_public_key(self.attestation_key.verifying_key()),
            qe_report: self.qe_report,
            qe_report_signature: self.qe_report_signature,
            qe_auth_data: QE_AUTH_DATA.to_vec(),
            pck_chain: self.pck_chain.clone(),
        };
        let sig: Signature = self.attestation_key.sign(&quote.signed_bytes()?);
        quote.signature = array(&sig.to_bytes(), 0);
        quote.to_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measure::tdx::Rtmr;
    use crate::tdx::certs::refs::{self, DCAP_QVL_QUOTE, SPR_E4_QUOTE, V5_QUOTE};
    use crate::tdx::certs::tests_chain;
    use crate::tdx::report::{TdInfo, TeeTcbInfo, TEE_TCB_INFO_VALID_TDX10, TEE_TCB_INFO_VALID_TDX15};

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }

    /// The RTMRs of the emulated TD: RTMR0 and RTMR1 extended with event digests.
    fn rtmrs() -> [Rtmr; 4] {
        let mut r = [Rtmr::new(); 4];
        r[0].extend(&[0x01; 48]);
        r[0].extend(&[0x02; 48]);
        r[1].extend(&[0x03; 48]);
        r
    }

    fn td_report(key: &ReportMacKey, td15: bool) -> [u8; 1024] {
        let mut td = TdInfo {
            attributes: 0x1000_0000,
            xfam: 0x0006_02e7,
            mr_td: [0x4d; 48],
            mr_config_id: [0xc0; 48],
            mr_owner: [0x0e; 48],
            ..Default::default()
        };
        td.set_rtmrs(&rtmrs());
        let mut tcb = TeeTcbInfo {
            valid: TEE_TCB_INFO_VALID_TDX10,
            tee_tcb_svn: [3, 1, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            mr_seam: [0x5e; 48],
            ..Default::default()
        };
        if td15 {
            tcb.valid = TEE_TCB_INFO_VALID_TDX15;
            tcb.tee_tcb_svn2 = [4, 1, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
            td.servtd_hash = [0x5d; 48];
        }
        let cpu_svn = tests_chain().sgx_extensions().tcb.cpu_svn;
        TdReport::create(key, cpu_svn, tcb, td, [0xda; 64]).to_bytes()
    }

    fn qe() -> QuotingEnclave {
        QuotingEnclave::new(tests_chain()).unwrap()
    }

    fn emulated_quote(format: QuoteFormat) -> Vec<u8> {
        qe().quote(&td_report(&tests_chain().report_mac_key(), format == QuoteFormat::V5Td15), format).unwrap()
    }

    #[test]
    fn emulated_quote_is_read_by_dcap_qvl_with_the_td_fields() {
        // Arrange
        let bytes = emulated_quote(QuoteFormat::V4);
        // Act
        let theirs = dcap_qvl::quote::Quote::parse(&bytes).unwrap();
        // Assert
        assert_eq!(theirs.header.version, 4);
        assert_eq!(theirs.header.attestation_key_type, 2);
        assert_eq!(theirs.header.tee_type, 0x81);
        assert_eq!(theirs.header.qe_vendor_id, dcap_qvl::INTEL_QE_VENDOR_ID);
        assert_eq!(theirs.qeid(), tests_chain().qe_id());
        let td = theirs.report.as_td10().unwrap();
        assert_eq!(td.mr_td, [0x4d; 48]);
        assert_eq!(td.mr_config_id, [0xc0; 48]);
        assert_eq!(td.mr_owner, [0x0e; 48]);
        assert_eq!(td.mr_seam, [0x5e; 48]);
        assert_eq!(td.tee_tcb_svn[..3], [3, 1, 2]);
        assert_eq!(td.td_attributes, [0, 0, 0, 0x10, 0, 0, 0, 0]);
        assert_eq!(td.xfam, [0xe7, 0x02, 0x06, 0, 0, 0, 0, 0]);
        let r = rtmrs();
        assert_eq!([td.rt_mr0, td.rt_mr1, td.rt_mr2, td.rt_mr3], r.map(|r| *r.value()));
        assert_eq!(td.report_data, [0xda; 64]);
        assert!(theirs.report.as_td15().is_none());
        assert_eq!(theirs.inner_cert_type(), 5);
        assert_eq!(theirs.raw_cert_chain().unwrap(), tests_chain().pck_chain_pem().unwrap().as_bytes());
        assert_eq!(theirs.signed_length(), HEADER_SIZE + TD10_BODY_SIZE);
        let dcap_qvl::quote::AuthData::V4(auth) = &theirs.auth_data else { panic!("auth data v3") };
        assert_eq!(auth.certification_data.cert_type, 6);
        assert_eq!(auth.qe_report_data.qe_auth_data.data, QE_AUTH_DATA);
    }

    #[test]
    fn emulated_td15_quote_is_read_by_dcap_qvl_as_a_td15_body() {
        let bytes = emulated_quote(QuoteFormat::V5Td15);
        let theirs = dcap_qvl::quote::Quote::parse(&bytes).unwrap();
        assert_eq!(theirs.header.version, 5);
        let td15 = theirs.report.as_td15().unwrap();
        assert_eq!(td15.tee_tcb_svn2[..3], [4, 1, 2]);
        assert_eq!(td15.mr_service_td, [0x5d; 48]);
        assert_eq!(td15.base.mr_td, [0x4d; 48]);
        assert_eq!(theirs.signed_length(), HEADER_SIZE + 6 + TD15_BODY_SIZE);
        let ours = Quote::parse(&bytes).unwrap();
        ours.verify(tests_chain().root_der()).unwrap();
        assert_eq!(ours.body.td15.unwrap().mr_service_td, [0x5d; 48]);
    }

    #[test]
    fn emulated_quote_verifies_against_the_emulated_root() {
        let bytes = emulated_quote(QuoteFormat::V4);
        let quote = Quote::parse(&bytes).unwrap();
        let pck = quote.verify(tests_chain().root_der()).unwrap();
        assert_eq!(x509_cert::der::Encode::to_der(&pck).unwrap(), tests_chain().pck_der());
        assert_eq!(quote.to_bytes().unwrap(), bytes);
        let qe = quote.qe_report_body();
        assert_eq!(qe.mr_enclave, <[u8; 32]>::from(Sha256::digest(EMULATED_QE_MRENCLAVE_LABEL)));
        assert_eq!((qe.isv_prod_id, qe.isv_svn), (EMULATED_QE_PROD_ID, EMULATED_QE_SVN));
        assert_eq!(qe.cpu_svn, tests_chain().sgx_extensions().tcb.cpu_svn);
    }

    /// An ECDSA P-256/SHA-256 check by ring (BoringSSL's ECDSA, independent of the p256 crate).
    fn ring_verifies(public_sec1: &[u8], msg: &[u8], raw_sig: &[u8; 64]) -> bool {
        use ring::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_FIXED};
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, public_sec1).verify(msg, raw_sig).is_ok()
    }

    #[test]
    fn emulated_quote_signatures_verify_with_ring_and_the_exported_chain() {
        // Arrange: the bytes as dcap-qvl splits them, the PCK key from the exported
        // chain's PEM (x509-cert only parses; ring checks the signatures).
        let bytes = emulated_quote(QuoteFormat::V4);
        let theirs = dcap_qvl::quote::Quote::parse(&bytes).unwrap();
        let dcap_qvl::quote::AuthData::V4(auth) = &theirs.auth_data else { panic!("auth data v3") };
        let pem = tests_chain().pck_chain_pem().unwrap();
        let pck = x509_cert::Certificate::load_pem_chain(pem.as_bytes()).unwrap().remove(0);
        let pck_sec1 = pck.tbs_certificate.subject_public_key_info.subject_public_key.raw_bytes().to_vec();
        let att_sec1 = [&[0x04u8][..], &auth.ecdsa_attestation_key].concat();
        let qe = &auth.qe_report_data;
        // Act / Assert: the attestation key signs header + body.
        assert!(ring_verifies(&att_sec1, &bytes[..theirs.signed_length()], &auth.ecdsa_signature));
        // The PCK signs the QE report.
        assert!(ring_verifies(&pck_sec1, &qe.qe_report, &qe.qe_report_signature));
        // The QE report binds the attestation key and the QE authentication data.
        let binding = ring::digest::digest(
            &ring::digest::SHA256,
            &[&auth.ecdsa_attestation_key[..], &qe.qe_auth_data.data].concat(),
        );
        assert_eq!(qe.qe_report[320..352], *binding.as_ref());
        assert_eq!(qe.qe_report[352..384], [0; 32]);
        // And a flipped byte of the body fails ring's check too.
        let mut flipped = bytes[..theirs.signed_length()].to_vec();
        flipped[200] ^= 1;
        assert!(!ring_verifies(&att_sec1, &flipped, &auth.ecdsa_signature));
    }

    #[test]
    fn quote_of_a_report_with_a_bad_mac_is_refused() {
        let other_platform = ReportMacKey::new([0x42; 32]);
        let err = qe().quote(&td_report(&other_platform, false), QuoteFormat::V4).unwrap_err();
        assert!(matches!(err, QuoteError::TdReport(ReportError::Mac)), "{err}");
        let mut altered = td_report(&tests_chain().report_mac_key(), false);
        altered[600] ^= 1; // MRTD
        let err = qe().quote(&altered, QuoteFormat::V4).unwrap_err();
        assert!(matches!(err, QuoteError::TdReport(ReportError::TeeInfoHash)), "{err}");
    }

    #[test]
    fn flipped_bytes_fail_the_check_that_covers_them() {
        let bytes = emulated_quote(QuoteFormat::V4);
        let root = tests_chain().root_der();
        let sig_data = HEADER_SIZE + TD10_BODY_SIZE + 4;
        let qe_report = sig_data + 128 + 6;
        let auth = qe_report + QE_REPORT_SIZE + 64 + 2;
        let chain = auth + 32 + 6;
        for (at, what) in [
            (1, "header"),
            (30, "user data"),
            (48 + 200, "body MRTD"),
            (48 + 530, "body report data"),
            (sig_data + 10, "quote signature"),
            (qe_report + 70, "QE report MRENCLAVE"),
            (qe_report + QE_REPORT_SIZE + 3, "QE report signature"),
            (auth + 5, "QE authentication data"),
            (chain + 300, "PCK certificate"),
        ] {
            let mut b = bytes.clone();
            b[at] ^= 1;
            let result = Quote::parse(&b).and_then(|q| q.verify(root));
            assert!(result.is_err(), "flipped {what} byte {at} still verifies");
        }
        // Each check names what failed.
        let flip = |at: usize| {
            let mut b = bytes.clone();
            b[at] ^= 1;
            Quote::parse(&b).unwrap().verify(root).unwrap_err()
        };
        assert!(matches!(flip(48 + 200), QuoteError::QuoteSignature));
        assert!(matches!(flip(qe_report + 70), QuoteError::QeReportSignature));
        assert!(matches!(flip(auth + 5), QuoteError::QeReportData));
        assert!(matches!(flip(chain + 300), QuoteError::Chain(_)));
    }

    #[test]
    fn emulated_quote_does_not_verify_against_intels_root_or_another_platform() {
        let bytes = emulated_quote(QuoteFormat::V4);
        let quote = Quote::parse(&bytes).unwrap();
        assert!(matches!(quote.verify(&refs::intel_root_der()), Err(QuoteError::Chain(_))));
        let other = crate::tdx::certs::EmulatedIntelChain::generate().unwrap();
        assert!(matches!(quote.verify(other.root_der()), Err(QuoteError::Chain(_))));
        // A quote signed by another platform's attestation key under our chain.
        let other_qe = QuotingEnclave::new(&other).unwrap();
        let mut forged =
            Quote::parse(&other_qe.quote(&td_report(&other.report_mac_key(), false), QuoteFormat::V4).unwrap())
                .unwrap();
        forged.pck_chain = quote.pck_chain.clone();
        assert!(matches!(forged.verify(tests_chain().root_der()), Err(QuoteError::QeReportSignature)));
    }

    #[test]
    fn truncated_quotes_fail_with_the_field_they_end_in() {
        let bytes = emulated_quote(QuoteFormat::V4);
        let field = |len: usize| match Quote::parse(&bytes[..len]) {
            Err(QuoteError::Truncated { what, .. }) => what,
            other => panic!("{len} bytes: {other:?}"),
        };
        assert_eq!(field(0), "header");
        assert_eq!(field(47), "header");
        assert_eq!(field(100), "TD quote body");
        assert_eq!(field(48 + 584 + 2), "signature data length");
        assert_eq!(field(48 + 584 + 4 + 100), "signature data");
        assert_eq!(field(bytes.len() - 1), "signature data");
        // No length panics, none parses.
        for len in 0..bytes.len() {
            assert!(Quote::parse(&bytes[..len]).is_err(), "{len}");
        }
        let err = Quote::parse(&bytes[..100]).unwrap_err().to_string();
        assert!(err.contains("truncated quote: TD quote body at offset 48 needs 584 bytes, only 52 left"), "{err}");
    }

    #[test]
    fn inconsistent_lengths_and_types_are_rejected() {
        let bytes = emulated_quote(QuoteFormat::V4);
        let sig_len_at = HEADER_SIZE + TD10_BODY_SIZE;
        let set_u32 = |b: &mut Vec<u8>, at: usize, v: u32| b[at..at + 4].copy_from_slice(&v.to_le_bytes());
        // The signature data length one short: the certification data overruns it.
        let mut b = bytes.clone();
        let sig_len = u32::from_le_bytes(array(&b, sig_len_at));
        set_u32(&mut b, sig_len_at, sig_len - 1);
        assert!(matches!(
            Quote::parse_prefix(&b),
            Err(QuoteError::Truncated { what: "QE report certification data", .. })
        ));
        // One too many: a byte of signature data left over.
        let mut b = bytes.clone();
        b.push(0);
        set_u32(&mut b, sig_len_at, sig_len + 1);
        assert!(matches!(Quote::parse(&b), Err(QuoteError::Length { what: "signature data length", .. })));
        // Outer certification data type 5 instead of 6.
        let mut b = bytes.clone();
        b[sig_len_at + 4 + 128] = 5;
        assert!(matches!(Quote::parse(&b), Err(QuoteError::CertDataType { level: "outer", found: 5, .. })));
        // Header fields.
        let mut b = bytes.clone();
        b[0] = 3;
        assert!(matches!(Quote::parse(&b), Err(QuoteError::Version(3))));
        let mut b = bytes.clone();
        b[2] = 3;
        assert!(matches!(Quote::parse(&b), Err(QuoteError::AttestationKeyType(3))));
        let mut b = bytes.clone();
        b[4] = 0;
        assert!(matches!(Quote::parse(&b), Err(QuoteError::TeeType(0))));
        // Trailing bytes are refused by parse and returned by parse_prefix.
        let mut b = bytes.clone();
        b.extend_from_slice(b"junk");
        assert!(matches!(Quote::parse(&b), Err(QuoteError::TrailingBytes { extra: 4, .. })));
        assert_eq!(Quote::parse_prefix(&b).unwrap().1, bytes.len());
    }

    #[test]
    fn v5_body_type_and_size_are_checked() {
        let bytes = emulated_quote(QuoteFormat::V5Td15);
        let mut b = bytes.clone();
        b[48] = 4; // TD 1.5ex, not read here
        assert!(matches!(Quote::parse(&b), Err(QuoteError::BodyType { body_type: 4, size: 648 })));
        let mut b = bytes.clone();
        b[50] = 0x48; // size 584 with type 3
        assert!(matches!(Quote::parse(&b), Err(QuoteError::BodyType { body_type: 3, size: 584 })));
        let mut q = Quote::parse(&bytes).unwrap();
        q.header.version = 4;
        assert!(matches!(q.to_bytes(), Err(QuoteError::Td15InVersion4)));
    }

    // Real quotes: the values the README of shared/refs/attestation states (the
    // repositories' own tests), and their signatures under Intel's root.

    #[test]
    fn dcap_qvl_sample_quote_parses_with_its_stated_fields_and_verifies_under_intels_root() {
        let bytes = refs::read(DCAP_QVL_QUOTE);
        // The file is the 4936-byte quote then 70 zero bytes of padding.
        let err = Quote::parse(&bytes).unwrap_err();
        assert!(matches!(err, QuoteError::TrailingBytes { quote_len: 4936, extra: 70 }), "{err}");
        let (q, len) = Quote::parse_prefix(&bytes).unwrap();
        assert!(bytes[len..].iter().all(|&b| b == 0));
        assert_eq!(q.header.version, 4);
        assert_eq!(q.header.qe_vendor_id, INTEL_QE_VENDOR_ID);
        assert_eq!(q.header.user_data.to_vec(), h("889b7d6ff9df2405b240a830e73faf3d00000000"));
        assert_eq!(q.body.tee_tcb_svn.to_vec(), h("06010300000000000000000000000000"));
        assert_eq!(
            q.body.mr_seam.to_vec(),
            h("5b38e33a6487958b72c3c12a938eaa5e3fd4510c51aeeab58c7d5ecee41d7c436489d6c8e4f92f160b7cad34207b00c1")
        );
        assert_eq!(q.body.td_attributes.to_le_bytes().to_vec(), h("0000001000000000"));
        assert_eq!(q.body.xfam.to_le_bytes().to_vec(), h("e702060000000000"));
        assert_eq!(
            q.body.mr_td.to_vec(),
            h("91eb2b44d141d4ece09f0c75c2c53d247a3c68edd7fafe8a3520c942a604a407de03ae6dc5f87f27428b2538873118b7")
        );
        assert_eq!(q.body.mr_config_id, [0; 48]);
        assert_eq!(
            q.body.rtmr[0].to_vec(),
            h("44c0197b39157fdd7a4dcc44767f9d6b0bb3977c7a8e347b8492f827fe9d9e5c48aca29b220b80b6a540cf994b9bc9c0")
        );
        assert_eq!(
            q.body.rtmr[1].to_vec(),
            h("0084452c01668329d4bc06acdf58a7205c26743304509973949e5619bf81a6a7aea8c323c173019b3093d54e579e9378")
        );
        assert_eq!(
            q.body.rtmr[2].to_vec(),
            h("d833feef2cd945148aa38ead2c53e9b7f138190aaaebfc551dccd829fc207aa3ba80b70870d7330733642e01d48c3132")
        );
        assert_eq!(q.body.rtmr[3], [0; 48]);
        assert_eq!(q.body.report_data.to_vec(), h("9a9d48e7f6799642d3d1b34e1e5e1742d4bb02dd6ddd551862c1211d35c304f9eca3efdbb481601c163cf52493d6e44aed55d51ec39b7e518fadb92c2b523f20"));
        assert_eq!(q.pck_chain_certs().unwrap().len(), 3);
        assert_eq!(q.to_bytes().unwrap(), bytes[..len]);
        q.verify(&refs::intel_root_der()).unwrap();
        assert!(matches!(q.verify(tests_chain().root_der()), Err(QuoteError::Chain(_))));
    }

    #[test]
    fn go_tdx_guest_spr_quote_with_trailing_junk_parses_with_its_stated_fields() {
        let bytes = refs::read(SPR_E4_QUOTE);
        // 4935 bytes of quote, then 39 bytes of deliberate junk.
        let err = Quote::parse(&bytes).unwrap_err();
        assert!(matches!(err, QuoteError::TrailingBytes { quote_len: 4935, extra: 39 }), "{err}");
        let (q, len) = Quote::parse_prefix(&bytes).unwrap();
        assert_eq!(&bytes[len..], b"\nextra bytes(only for testing purpose)\n");
        assert_eq!((q.header.version, q.header.qe_svn, q.header.pce_svn), (4, 0, 0));
        assert_eq!(q.header.qe_vendor_id.to_vec(), h("939a7233f79c4ca9940a0db3957f0607"));
        assert_eq!(q.body.tee_tcb_svn.to_vec(), h("03000400000000000000000000000000"));
        assert_eq!(
            q.body.mr_seam.to_vec(),
            h("2fd279c16164a93dd5bf373d834328d46008c2b693af9ebb865b08b2ced320c9a89b4869a9fab60fbe9d0c5a5363c656")
        );
        assert_eq!(q.body.td_attributes.to_le_bytes().to_vec(), h("0000004000000000"));
        assert_eq!(q.body.xfam.to_le_bytes().to_vec(), h("e71a060000000000"));
        assert_eq!(
            q.body.mr_td.to_vec(),
            h("6363b8043668a3ad953278e10389574d326c6749fb78aa810ecd9336923db86f22fc00b8dcd404bc10d5e119d7215cbb")
        );
        assert_eq!([q.body.mr_config_id, q.body.mr_owner, q.body.mr_owner_config], [[0; 48]; 3]);
        assert_eq!(
            q.body.rtmr[0].to_vec(),
            h("2927da70461cd63266f43230cc1849c03ef25ebe490062a801d8fcc80af42976823adf08f833c1e50b51779c6593f32a")
        );
        assert_eq!(
            q.body.rtmr[1].to_vec(),
            h("2c700b8ba9b85783f8be9fb9443647bdc0bb3c50747f06297cc6538c25a5f589c4b56d035c59107c6bc5800db2cacb61")
        );
        assert_eq!(
            q.body.rtmr[2].to_vec(),
            h("8652f0caaba7e215ea442dc36a4499d8fec3362f3a0b2ca151cbe4b3e6466fe59c7368b3c2287fc7c3bf5c924eb4424e")
        );
        assert_eq!(q.body.rtmr[3], [0; 48]);
        assert_eq!(q.body.report_data.to_vec(), h("6c62dec1b8191749a31dab490be532a35944dea47caef1f980863993d9899545eb7406a38d1eed313b987a467dacead6f0c87a6d766c66f6f29f8acb281f1113"));
        assert_eq!(q.to_bytes().unwrap(), bytes[..len]);
        q.verify(&refs::intel_root_der()).unwrap();
    }

    #[test]
    fn go_tdx_guest_v5_quote_parses_as_td15_and_verifies_under_intels_root() {
        let bytes = refs::read(V5_QUOTE);
        let q = Quote::parse(&bytes).unwrap();
        assert_eq!(q.header.version, 5);
        assert!(q.body.td15.is_some());
        assert_eq!(
            q.body.mr_td.to_vec(),
            h("7348651a34b2d2d3462822e3a750ec6110125f36757c78480bbfc69cc0d21fb001a1ced3ee19747dda8f750c3bc8f876")
        );
        assert_eq!(q.body.tee_tcb_svn.to_vec(), h("0b010400000000000000000000000000"));
        assert_eq!(q.to_bytes().unwrap(), bytes);
        q.verify(&refs::intel_root_der()).unwrap();
        // dcap-qvl agrees on the TD 1.5 fields.
        let theirs = dcap_qvl::quote::Quote::parse(&bytes).unwrap();
        let td15 = theirs.report.as_td15().unwrap();
        let ours = q.body.td15.unwrap();
        assert_eq!((td15.tee_tcb_svn2, td15.mr_service_td), (ours.tee_tcb_svn2, ours.mr_service_td));
    }

    #[test]
    fn real_quote_with_a_flipped_body_byte_fails_verification() {
        let bytes = refs::read(DCAP_QVL_QUOTE);
        let mut b = bytes[..4936].to_vec();
        b[48 + 136] ^= 1; // MRTD
        let q = Quote::parse(&b).unwrap();
        assert!(matches!(q.verify(&refs::intel_root_der()), Err(QuoteError::QuoteSignature)));
    }
}

/// Emulated collateral (TCB info, QE identity, CRLs, all signed by the emulated
/// chain), so that a complete DCAP verification (dcap-qvl's, `cvmm verify`'s) can run
/// on emulated quotes. Valid from a day before it is made for 30 days.
pub mod collateral {
    use std::time::{Duration, SystemTime};

    use p256::ecdsa::DerSignature;
    use x509_cert::crl::{CertificateList, TbsCertList};
    use x509_cert::der::asn1::{BitString, OctetString, Uint};
    use x509_cert::der::{DateTime, Decode, Encode};
    use x509_cert::ext::Extension;
    use x509_cert::spki::{AlgorithmIdentifierOwned, ObjectIdentifier};
    use x509_cert::time::Time;

    use super::*;
    use crate::tdx::report::EMULATED_TEE_TCB_SVN;

    /// Why collateral could not be made.
    #[derive(Debug, thiserror::Error)]
    #[error("cannot make the emulated TDX collateral: {0}")]
    pub struct CollateralError(String);

    fn err(e: impl std::fmt::Display) -> CollateralError {
        CollateralError(e.to_string())
    }

    const DAY: u64 = 86_400;

    /// Seconds since the epoch.
    pub fn now() -> u64 {
        SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs())
    }

    fn rfc3339(secs: u64) -> String {
        let Ok(t) = DateTime::from_unix_duration(Duration::from_secs(secs)) else { return String::new() };
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            t.year(),
            t.month(),
            t.day(),
            t.hour(),
            t.minutes(),
            t.seconds()
        )
    }

    fn raw_sig(key: &SigningKey, msg: &[u8]) -> Vec<u8> {
        let sig: Signature = key.sign(msg);
        sig.to_bytes().to_vec()
    }

    /// A version 2 CRL with no revoked certificate, a CRL number and an authority
    /// key identifier, issued by `issuer_der`'s subject with `key`.
    fn crl(issuer_der: &[u8], key: &SigningKey) -> Result<Vec<u8>, CollateralError> {
        let issuer = Certificate::from_der(issuer_der).map_err(err)?;
        let alg =
            AlgorithmIdentifierOwned { oid: ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2"), parameters: None };
        let time = |secs: u64| Time::try_from(SystemTime::UNIX_EPOCH + Duration::from_secs(secs)).map_err(err);
        let ski = issuer
            .tbs_certificate
            .extensions
            .as_ref()
            .and_then(|exts| exts.iter().find(|e| e.extn_id == ObjectIdentifier::new_unwrap("2.5.29.14")))
            .ok_or_else(|| err("the issuer has no subject key identifier"))?
            .extn_value
            .clone();
        let key_id = OctetString::from_der(ski.as_bytes()).map_err(err)?;
        let aki = x509_cert::ext::pkix::AuthorityKeyIdentifier {
            key_identifier: Some(key_id),
            authority_cert_issuer: None,
            authority_cert_serial_number: None,
        };
        let number = Uint::new(&[1]).map_err(err)?;
        let ext = |oid: &str, der: Vec<u8>| -> Result<Extension, CollateralError> {
            Ok(Extension {
                extn_id: ObjectIdentifier::new_unwrap(oid),
                critical: false,
                extn_value: OctetString::new(der).map_err(err)?,
            })
        };
        let tbs = TbsCertList {
            version: x509_cert::Version::V2,
            signature: alg.clone(),
            issuer: issuer.tbs_certificate.subject.clone(),
            this_update: time(now() - DAY)?,
            next_update: Some(time(now() + 30 * DAY)?),
            revoked_certificates: None,
            crl_extensions: Some(vec![
                ext("2.5.29.20", number.to_der().map_err(err)?)?,
                ext("2.5.29.35", aki.to_der().map_err(err)?)?,
            ]),
        };
        let sig: DerSignature = key.sign(&tbs.to_der().map_err(err)?);
        let list = CertificateList {
            tbs_cert_list: tbs,
            signature_algorithm: alg,
            signature: BitString::from_bytes(sig.as_bytes()).map_err(err)?,
        };
        list.to_der().map_err(err)
    }

    fn pem_of(ders: &[&[u8]]) -> Result<String, CollateralError> {
        ders.iter()
            .map(|d| {
                x509_cert::der::pem::encode_string("CERTIFICATE", x509_cert::der::pem::LineEnding::LF, d).map_err(err)
            })
            .collect()
    }

    /// TCB info (TDX, version 3) for the emulated platform: one UpToDate level at
    /// exactly its TCB, and the TDX module identity TDX_01 (Intel's module: zero
    /// MRSIGNERSEAM and attributes).
    fn tcb_info_json(chain: &EmulatedIntelChain, fmspc: &str) -> String {
        let sgx = chain.sgx_extensions();
        let comps = |svns: &[u8]| svns.iter().map(|s| format!("{{\"svn\":{s}}}")).collect::<Vec<_>>().join(",");
        let zeros48 = "0".repeat(96);
        let (issue, next, date) = (rfc3339(now() - DAY), rfc3339(now() + 30 * DAY), rfc3339(now() - 30 * DAY));
        format!(
            concat!(
                r#"{{"id":"TDX","version":3,"issueDate":"{issue}","nextUpdate":"{next}","fmspc":"{fmspc}","pceId":"{pce}","#,
                r#""tcbType":0,"tcbEvaluationDataNumber":17,"#,
                r#""tdxModule":{{"mrsigner":"{z}","attributes":"0000000000000000","attributesMask":"FFFFFFFFFFFFFFFF"}},"#,
                r#""tdxModuleIdentities":[{{"id":"TDX_01","mrsigner":"{z}","attributes":"0000000000000000","#,
                r#""attributesMask":"FFFFFFFFFFFFFFFF","tcbLevels":[{{"tcb":{{"isvsvn":3}},"tcbDate":"{date}","tcbStatus":"UpToDate"}}]}}],"#,
                r#""tcbLevels":[{{"tcb":{{"sgxtcbcomponents":[{sgx}],"pcesvn":{pcesvn},"tdxtcbcomponents":[{tdx}]}},"#,
                r#""tcbDate":"{date}","tcbStatus":"UpToDate"}}]}}"#
            ),
            issue = issue,
            next = next,
            fmspc = fmspc,
            pce = hex::encode_upper(sgx.pce_id),
            z = zeros48,
            date = date,
            sgx = comps(&sgx.tcb.cpu_svn),
            pcesvn = sgx.tcb.pce_svn,
            tdx = comps(&EMULATED_TEE_TCB_SVN),
        )
    }

    /// QE identity (TD_QE, version 2) of the emulated quoting enclave.
    fn qe_identity_json() -> String {
        let mrsigner = hex::encode_upper(Sha256::digest(EMULATED_QE_MRSIGNER_LABEL));
        format!(
            concat!(
                r#"{{"id":"TD_QE","version":2,"issueDate":"{}","nextUpdate":"{}","tcbEvaluationDataNumber":17,"#,
                r#""miscselect":"00000000","miscselectMask":"FFFFFFFF","attributes":"11000000000000000000000000000000","#,
                r#""attributesMask":"FBFFFFFFFFFFFFFF0000000000000000","mrsigner":"{}","isvprodid":{},"#,
                r#""tcbLevels":[{{"tcb":{{"isvsvn":{}}},"tcbDate":"{}","tcbStatus":"UpToDate"}}]}}"#
            ),
            rfc3339(now() - DAY),
            rfc3339(now() + 30 * DAY),
            mrsigner,
            EMULATED_QE_PROD_ID,
            EMULATED_QE_SVN,
            rfc3339(now() - 30 * DAY),
        )
    }

    /// The collateral of the emulated platform whose PCK carries `fmspc` (upper-case hex).
    pub fn collateral(chain: &EmulatedIntelChain, fmspc: &str) -> Result<dcap_qvl::QuoteCollateralV3, CollateralError> {
        let tcb_chain = pem_of(&[chain.tcb_signing_der(), chain.root_der()])?;
        let tcb_info = tcb_info_json(chain, fmspc);
        let qe_identity = qe_identity_json();
        Ok(dcap_qvl::QuoteCollateralV3 {
            pck_crl_issuer_chain: pem_of(&[chain.pck_ca_der(), chain.root_der()])?,
            root_ca_crl: crl(chain.root_der(), chain.root_signing_key())?,
            pck_crl: crl(chain.pck_ca_der(), chain.pck_ca_signing_key())?,
            tcb_info_issuer_chain: tcb_chain.clone(),
            tcb_info_signature: raw_sig(chain.tcb_signing_key(), tcb_info.as_bytes()),
            tcb_info,
            qe_identity_issuer_chain: tcb_chain,
            qe_identity_signature: raw_sig(chain.tcb_signing_key(), qe_identity.as_bytes()),
            qe_identity,
            pck_certificate_chain: None,
        })
    }

    /// The FMSPC of the emulated platform's PCK (upper-case hex).
    pub fn fmspc(chain: &EmulatedIntelChain) -> String {
        hex::encode_upper(chain.sgx_extensions().fmspc)
    }
}

/// Tests of the emulated collateral with dcap-qvl's full verification.
#[cfg(test)]
pub(crate) mod collateral_tests {
    use super::collateral::now;
    pub(crate) use super::collateral::{collateral as collateral_of, fmspc};
    use super::*;
    use crate::tdx::certs::tests_chain;
    use crate::tdx::report::{TdInfo, TeeTcbInfo};

    pub(crate) fn collateral(chain: &EmulatedIntelChain, fmspc: &str) -> dcap_qvl::QuoteCollateralV3 {
        collateral_of(chain, fmspc).unwrap()
    }

    pub(crate) fn quote_bytes(chain: &EmulatedIntelChain) -> Vec<u8> {
        let td = TdInfo { attributes: 0x1000_0000, xfam: 0x0006_02e7, mr_td: [0x4d; 48], ..Default::default() };
        let tcb = TeeTcbInfo::emulated();
        let cpu_svn = chain.sgx_extensions().tcb.cpu_svn;
        let report = TdReport::create(&chain.report_mac_key(), cpu_svn, tcb, td, [0xda; 64]).to_bytes();
        QuotingEnclave::new(chain).unwrap().quote(&report, QuoteFormat::V4).unwrap()
    }

    fn verifier(chain: &EmulatedIntelChain) -> dcap_qvl::verify::QuoteVerifier<dcap_qvl::configs::RustCryptoConfig> {
        dcap_qvl::verify::QuoteVerifier::new_with_config(chain.root_der().to_vec())
    }

    #[test]
    fn dcap_qvl_fully_verifies_an_emulated_quote_with_emulated_collateral() {
        // Arrange
        let chain = tests_chain();
        let quote = quote_bytes(chain);
        // Act
        let report = verifier(chain).verify(&quote, &collateral(chain, &fmspc(chain)), now()).unwrap();
        // Assert
        assert_eq!(report.status, "UpToDate");
        assert_eq!(report.ppid, chain.sgx_extensions().ppid);
        let td = report.report.as_td10().unwrap();
        assert_eq!((td.mr_td, td.report_data), ([0x4d; 48], [0xda; 64]));
    }

    #[test]
    fn dcap_qvl_rejects_an_emulated_quote_under_another_root_or_with_a_flipped_byte() {
        let chain = tests_chain();
        let quote = quote_bytes(chain);
        let collateral = collateral(chain, &fmspc(chain));
        // Intel's real root.
        let intel = dcap_qvl::verify::QuoteVerifier::<dcap_qvl::configs::RustCryptoConfig>::new_with_config(
            crate::tdx::certs::refs::intel_root_der(),
        );
        assert!(intel.verify(&quote, &collateral, now()).is_err());
        // A flipped MRTD byte.
        let mut flipped = quote.clone();
        flipped[48 + 140] ^= 1;
        let err = verifier(chain).verify(&flipped, &collateral, now()).unwrap_err();
        assert!(format!("{err:#}").contains("signature is invalid"), "{err:#}");
        // Collateral for another FMSPC.
        let other = self::collateral(chain, "00906ED50000");
        let err = verifier(chain).verify(&quote, &other, now()).unwrap_err();
        assert!(format!("{err:#}").contains("Fmspc mismatch"), "{err:#}");
    }
}
