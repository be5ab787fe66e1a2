//! SNP guest messages, the PSP's side: the encrypted channel between a guest and the
//! PSP (SNP firmware ABI, "Guest Messages"; Linux's `struct snp_guest_msg_hdr`), the
//! MSG_REPORT_REQ / MSG_REPORT_RSP payloads, and the certificate table of the extended
//! guest request (GHCB specification, "SNP Extended Guest Request").
//!
//! A message is one 4 KiB page: a 0x60-byte header, then up to 4000 bytes of payload
//! encrypted with AES-256-GCM under the VMPCK the header names:
//!
//! | offset | field |
//! |---|---|
//! | 0x00 | AUTHTAG\[32\] (the 16-byte GCM tag, zero padded) |
//! | 0x20 | MSG_SEQNO (u64), reserved\[8\] |
//! | 0x30 | ALGO (u8, 1 = AES-256-GCM), HDR_VERSION (u8, 1), HDR_SZ (u16, 0x60) |
//! | 0x34 | MSG_TYPE (u8), MSG_VERSION (u8), MSG_SZ (u16) |
//! | 0x38 | reserved (u32), MSG_VMPCK (u8), reserved\[35\] |
//!
//! The GCM IV is the sequence number (8 bytes little endian, then 4 zero bytes); the
//! additional authenticated data is the header from ALGO (0x30) to its end. Each VMPCK
//! has its own sequence: a request must carry the number after the last one used with
//! that key, the response carries the request's plus one ([`PspMsgChannel`]).

use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Aes256Gcm, KeyInit, Nonce, Tag};
use thiserror::Error;

use super::report::REPORT_SIZE;

/// Size of a message page.
pub const MSG_PAGE_SIZE: usize = 4096;
/// Size of the message header.
pub const MSG_HDR_SIZE: usize = 0x60;
/// Largest payload.
pub const MSG_PAYLOAD_MAX: usize = MSG_PAGE_SIZE - MSG_HDR_SIZE;
/// ALGO: AES-256-GCM.
pub const AEAD_AES_256_GCM: u8 = 1;
/// HDR_VERSION of this header layout.
pub const MSG_HDR_VERSION: u8 = 1;
/// Length of the AES-GCM tag in AUTHTAG.
pub const AUTHTAG_LEN: usize = 16;
/// The additional authenticated data starts here (ALGO).
pub const AAD_OFFSET: usize = 0x30;
/// Length of a VMPCK.
pub const VMPCK_LEN: usize = 32;
/// Number of VMPCKs (one per VMPL).
pub const VMPCK_COUNT: usize = 4;

/// Message types (SNP firmware ABI, "Message Type Encodings"); each response is its
/// request plus one.
pub mod msg_type {
    /// CPUID request.
    pub const CPUID_REQ: u8 = 1;
    /// CPUID response.
    pub const CPUID_RSP: u8 = 2;
    /// Derived key request.
    pub const KEY_REQ: u8 = 3;
    /// Derived key response.
    pub const KEY_RSP: u8 = 4;
    /// Attestation report request.
    pub const REPORT_REQ: u8 = 5;
    /// Attestation report response.
    pub const REPORT_RSP: u8 = 6;
    /// VM export request (migration agent).
    pub const EXPORT_REQ: u8 = 7;
    /// VM import request (migration agent).
    pub const IMPORT_REQ: u8 = 9;
    /// VM absorb request (migration agent).
    pub const ABSORB_REQ: u8 = 11;
    /// VMRK request (migration agent).
    pub const VMRK_REQ: u8 = 13;
    /// Absorb without migration agent request.
    pub const ABSORB_NOMA_REQ: u8 = 15;
    /// TSC information request.
    pub const TSC_INFO_REQ: u8 = 17;
    /// The last request type this module knows.
    pub const LAST_REQ: u8 = TSC_INFO_REQ;
}

/// STATUS values of MSG_REPORT_RSP (SNP firmware ABI).
pub mod report_status {
    /// The report follows.
    pub const SUCCESS: u32 = 0;
    /// A request field is invalid (VMPL below the caller's or above 3, reserved bits).
    pub const INVALID_PARAMS: u32 = 0x16;
    /// KEY_SEL asks for a key the platform does not have (no VLEK is installed).
    pub const INVALID_KEY_SEL: u32 = 0x27;
}

/// Errors from opening or sealing a message, or parsing its payloads.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum GuestMsgError {
    /// The buffer is too small for the message (or not a page, where one is needed).
    #[error("guest message buffer is {len} bytes, {need} needed")]
    BufferTooSmall {
        /// Length given.
        len: usize,
        /// Length needed.
        need: usize,
    },
    /// ALGO is not AES-256-GCM.
    #[error("guest message ALGO {0} is not AES-256-GCM (1)")]
    BadAlgo(u8),
    /// HDR_VERSION is not 1.
    #[error("guest message HDR_VERSION {0} is not 1")]
    BadHeaderVersion(u8),
    /// HDR_SZ is not 0x60.
    #[error("guest message HDR_SZ {0:#x} is not 0x60")]
    BadHeaderSize(u16),
    /// MSG_TYPE is not a request type (or not the type expected).
    #[error("guest message MSG_TYPE {0} is not a request this PSP knows")]
    BadMsgType(u8),
    /// MSG_VERSION is not 1.
    #[error("guest message MSG_VERSION {version} is not supported for MSG_TYPE {msg_type}")]
    BadMsgVersion {
        /// Message type.
        msg_type: u8,
        /// Version given.
        version: u8,
    },
    /// MSG_SZ is larger than the payload area.
    #[error("guest message MSG_SZ {0} exceeds the {MSG_PAYLOAD_MAX}-byte payload area")]
    MsgTooLarge(usize),
    /// MSG_VMPCK names no VMPCK (0 to 3), or a disabled one.
    #[error("guest message MSG_VMPCK {0} is not a usable VMPCK")]
    BadVmpck(u8),
    /// A reserved header byte is not zero.
    #[error("guest message header byte {offset:#x} is reserved but not zero")]
    ReservedNotZero {
        /// Offset of the byte.
        offset: usize,
    },
    /// MSG_SEQNO is not the next one for this VMPCK (a replay, or out of order).
    #[error("guest message sequence number {got} on VMPCK {vmpck} is not the expected {expected}")]
    BadSeqno {
        /// The VMPCK.
        vmpck: u8,
        /// The number expected.
        expected: u64,
        /// The number given.
        got: u64,
    },
    /// The sequence numbers of a VMPCK are used up.
    #[error("guest message sequence numbers of VMPCK {0} are exhausted")]
    SeqnoExhausted(u8),
    /// The tag does not authenticate the message under the VMPCK (wrong key, or a
    /// modified header, payload or tag).
    #[error("guest message does not authenticate under VMPCK {0}")]
    AuthFailed(u8),
    /// A payload is not the size its type has.
    #[error("{what} payload is {len} bytes, not {need}")]
    BadPayloadSize {
        /// The payload type.
        what: &'static str,
        /// Length given.
        len: usize,
        /// Length expected.
        need: usize,
    },
    /// A reserved payload field is not zero.
    #[error("{what} payload byte {offset:#x} is reserved but not zero")]
    PayloadReservedNotZero {
        /// The payload type.
        what: &'static str,
        /// Offset in the payload.
        offset: usize,
    },
    /// A certificate table is malformed.
    #[error("malformed certificate table: {0}")]
    BadCertTable(String),
}

/// A message header's fields (AUTHTAG aside).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsgHeader {
    /// MSG_SEQNO.
    pub seqno: u64,
    /// MSG_TYPE.
    pub msg_type: u8,
    /// MSG_VERSION.
    pub msg_version: u8,
    /// MSG_SZ: payload length.
    pub msg_sz: u16,
    /// MSG_VMPCK: the key index.
    pub vmpck: u8,
}

impl MsgHeader {
    /// The header bytes with AUTHTAG zero, ALGO, HDR_VERSION and HDR_SZ filled in.
    fn to_bytes(self) -> [u8; MSG_HDR_SIZE] {
        let mut h = [0u8; MSG_HDR_SIZE];
        h[0x20..0x28].copy_from_slice(&self.seqno.to_le_bytes());
        h[0x30] = AEAD_AES_256_GCM;
        h[0x31] = MSG_HDR_VERSION;
        h[0x32..0x34].copy_from_slice(&(MSG_HDR_SIZE as u16).to_le_bytes());
        h[0x34] = self.msg_type;
        h[0x35] = self.msg_version;
        h[0x36..0x38].copy_from_slice(&self.msg_sz.to_le_bytes());
        h[0x3C] = self.vmpck;
        h
    }

    /// Parses and checks a header: ALGO, HDR_VERSION, HDR_SZ, MSG_SZ, MSG_VMPCK range,
    /// the reserved bytes and the unused half of AUTHTAG.
    fn parse(h: &[u8; MSG_HDR_SIZE]) -> Result<Self, GuestMsgError> {
        if h[0x30] != AEAD_AES_256_GCM {
            return Err(GuestMsgError::BadAlgo(h[0x30]));
        }
        if h[0x31] != MSG_HDR_VERSION {
            return Err(GuestMsgError::BadHeaderVersion(h[0x31]));
        }
        let hdr_sz = u16::from_le_bytes([h[0x32], h[0x33]]);
        if usize::from(hdr_sz) != MSG_HDR_SIZE {
            return Err(GuestMsgError::BadHeaderSize(hdr_sz));
        }
        let msg_sz = u16::from_le_bytes([h[0x36], h[0x37]]);
        if usize::from(msg_sz) > MSG_PAYLOAD_MAX {
            return Err(GuestMsgError::MsgTooLarge(msg_sz.into()));
        }
        if usize::from(h[0x3C]) >= VMPCK_COUNT {
            return Err(GuestMsgError::BadVmpck(h[0x3C]));
        }
        for range in [AUTHTAG_LEN..0x20, 0x28..0x30, 0x38..0x3C, 0x3D..MSG_HDR_SIZE] {
            if let Some(i) = h[range.clone()].iter().position(|&b| b != 0) {
                return Err(GuestMsgError::ReservedNotZero { offset: range.start + i });
            }
        }
        let mut seqno = [0u8; 8];
        seqno.copy_from_slice(&h[0x20..0x28]);
        Ok(Self { seqno: u64::from_le_bytes(seqno), msg_type: h[0x34], msg_version: h[0x35], msg_sz, vmpck: h[0x3C] })
    }
}

/// The GCM nonce for a sequence number.
fn nonce(seqno: u64) -> [u8; 12] {
    let mut iv = [0u8; 12];
    iv[..8].copy_from_slice(&seqno.to_le_bytes());
    iv
}

/// Encrypts `payload` under `key` into a message page (`header.msg_sz` is set from the
/// payload's length).
pub fn seal(key: &[u8; VMPCK_LEN], mut header: MsgHeader, payload: &[u8]) -> Result<Vec<u8>, GuestMsgError> {
    if payload.len() > MSG_PAYLOAD_MAX {
        return Err(GuestMsgError::MsgTooLarge(payload.len()));
    }
    header.msg_sz = payload.len() as u16;
    let mut page = vec![0u8; MSG_PAGE_SIZE];
    page[..MSG_HDR_SIZE].copy_from_slice(&header.to_bytes());
    let (hdr, body) = page.split_at_mut(MSG_HDR_SIZE);
    let body = &mut body[..payload.len()];
    body.copy_from_slice(payload);
    let tag = Aes256Gcm::new(key.into())
        .encrypt_in_place_detached(&Nonce::from(nonce(header.seqno)), &hdr[AAD_OFFSET..], body)
        .map_err(|_| GuestMsgError::MsgTooLarge(payload.len()))?;
    hdr[..AUTHTAG_LEN].copy_from_slice(&tag);
    Ok(page)
}

/// Checks a message page's header, then authenticates and decrypts its payload under
/// `key` (whatever its MSG_VMPCK says; [`PspMsgChannel`] picks the key from it).
pub fn open(key: &[u8; VMPCK_LEN], page: &[u8]) -> Result<(MsgHeader, Vec<u8>), GuestMsgError> {
    let hdr: &[u8; MSG_HDR_SIZE] = page
        .get(..MSG_HDR_SIZE)
        .and_then(|h| h.try_into().ok())
        .ok_or(GuestMsgError::BufferTooSmall { len: page.len(), need: MSG_HDR_SIZE })?;
    let header = MsgHeader::parse(hdr)?;
    let len = usize::from(header.msg_sz);
    let ciphertext = page
        .get(MSG_HDR_SIZE..MSG_HDR_SIZE + len)
        .ok_or(GuestMsgError::BufferTooSmall { len: page.len(), need: MSG_HDR_SIZE + len })?;
    let mut payload = ciphertext.to_vec();
    let mut tag = [0u8; AUTHTAG_LEN];
    tag.copy_from_slice(&hdr[..AUTHTAG_LEN]);
    Aes256Gcm::new(key.into())
        .decrypt_in_place_detached(&Nonce::from(nonce(header.seqno)), &hdr[AAD_OFFSET..], &mut payload, &Tag::from(tag))
        .map_err(|_| GuestMsgError::AuthFailed(header.vmpck))?;
    Ok((header, payload))
}

/// A request the PSP accepted: authenticated, in sequence, decrypted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// The request's header.
    pub header: MsgHeader,
    /// The decrypted payload.
    pub payload: Vec<u8>,
}

/// The PSP's guest-message state for one guest: the four VMPCKs (from the secrets page
/// it made at launch) and, per key, the last sequence number used.
#[derive(Clone)]
pub struct PspMsgChannel {
    vmpcks: [[u8; VMPCK_LEN]; VMPCK_COUNT],
    last_seqno: [u64; VMPCK_COUNT],
}

impl std::fmt::Debug for PspMsgChannel {
    /// Shows the sequence numbers, never the keys.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PspMsgChannel").field("last_seqno", &self.last_seqno).finish_non_exhaustive()
    }
}

impl PspMsgChannel {
    /// A channel whose sequences all start at 0 (the first request carries 1).
    pub fn new(vmpcks: [[u8; VMPCK_LEN]; VMPCK_COUNT]) -> Self {
        Self { vmpcks, last_seqno: [0; VMPCK_COUNT] }
    }

    /// The last sequence number used with a VMPCK (a request's response counts as used
    /// once the request is accepted).
    pub fn last_seqno(&self, vmpck: u8) -> Option<u64> {
        self.last_seqno.get(usize::from(vmpck)).copied()
    }

    /// Opens a request page: checks every header field, the request type and version,
    /// that MSG_SEQNO is the next one of its VMPCK, and the tag. A request that fails
    /// any check changes nothing; an accepted one uses up its sequence number and the
    /// one its response carries.
    pub fn open_request(&mut self, page: &[u8]) -> Result<Request, GuestMsgError> {
        let hdr: &[u8; MSG_HDR_SIZE] = page
            .get(..MSG_HDR_SIZE)
            .and_then(|h| h.try_into().ok())
            .ok_or(GuestMsgError::BufferTooSmall { len: page.len(), need: MSG_HDR_SIZE })?;
        let header = MsgHeader::parse(hdr)?;
        if header.msg_type == 0 || header.msg_type > msg_type::LAST_REQ || header.msg_type % 2 == 0 {
            return Err(GuestMsgError::BadMsgType(header.msg_type));
        }
        if header.msg_version != 1 {
            return Err(GuestMsgError::BadMsgVersion { msg_type: header.msg_type, version: header.msg_version });
        }
        let k = usize::from(header.vmpck);
        let last = self.last_seqno[k];
        // The response needs the number after the request's.
        let expected = last.checked_add(1).filter(|n| n.checked_add(1).is_some());
        let expected = expected.ok_or(GuestMsgError::SeqnoExhausted(header.vmpck))?;
        if header.seqno != expected {
            return Err(GuestMsgError::BadSeqno { vmpck: header.vmpck, expected, got: header.seqno });
        }
        let (header, payload) = open(&self.vmpcks[k], page)?;
        // The response's number is taken now, whether or not a response is sealed.
        self.last_seqno[k] = expected + 1;
        Ok(Request { header, payload })
    }

    /// Seals the response to `req`: type and sequence number one above the request's,
    /// same version and VMPCK.
    pub fn seal_response(&mut self, req: &Request, payload: &[u8]) -> Result<Vec<u8>, GuestMsgError> {
        let k = usize::from(req.header.vmpck);
        let key = self.vmpcks.get(k).ok_or(GuestMsgError::BadVmpck(req.header.vmpck))?;
        let seqno = req.header.seqno.checked_add(1).ok_or(GuestMsgError::SeqnoExhausted(req.header.vmpck))?;
        let header = MsgHeader {
            seqno,
            msg_type: req.header.msg_type + 1,
            msg_version: req.header.msg_version,
            msg_sz: 0,
            vmpck: req.header.vmpck,
        };
        let page = seal(key, header, payload)?;
        self.last_seqno[k] = self.last_seqno[k].max(seqno);
        Ok(page)
    }
}

/// MSG_REPORT_REQ: what the guest wants in its attestation report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReportRequest {
    /// REPORT_DATA: copied into the report.
    pub report_data: [u8; 64],
    /// VMPL: the VMPL to put in the report.
    pub vmpl: u32,
    /// KEY_SEL (bits 1:0): 0 VLEK if installed else VCEK, 1 VCEK, 2 VLEK, 3 reserved.
    pub key_sel: u8,
}

impl ReportRequest {
    /// Size of the payload.
    pub const SIZE: usize = 0x60;

    /// The payload bytes.
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        let mut b = [0u8; Self::SIZE];
        b[..64].copy_from_slice(&self.report_data);
        b[0x40..0x44].copy_from_slice(&self.vmpl.to_le_bytes());
        b[0x44] = self.key_sel & 3;
        b
    }

    /// Parses the payload; reserved bits and bytes must be zero.
    pub fn from_bytes(b: &[u8]) -> Result<Self, GuestMsgError> {
        if b.len() != Self::SIZE {
            return Err(GuestMsgError::BadPayloadSize { what: "MSG_REPORT_REQ", len: b.len(), need: Self::SIZE });
        }
        let reserved = |offset| GuestMsgError::PayloadReservedNotZero { what: "MSG_REPORT_REQ", offset };
        if b[0x44] & !3 != 0 {
            return Err(reserved(0x44));
        }
        if let Some(i) = b[0x45..].iter().position(|&x| x != 0) {
            return Err(reserved(0x45 + i));
        }
        let mut report_data = [0u8; 64];
        report_data.copy_from_slice(&b[..64]);
        Ok(Self { report_data, vmpl: u32::from_le_bytes([b[0x40], b[0x41], b[0x42], b[0x43]]), key_sel: b[0x44] })
    }

    /// The status the PSP answers this request with when the caller runs at
    /// `caller_vmpl` (the VMPCK index) on a platform without a VLEK:
    /// [`report_status::SUCCESS`] if a report may be made.
    pub fn status(&self, caller_vmpl: u8) -> u32 {
        if self.vmpl < u32::from(caller_vmpl) || self.vmpl > 3 {
            return report_status::INVALID_PARAMS;
        }
        match self.key_sel {
            0 | 1 => report_status::SUCCESS,
            2 => report_status::INVALID_KEY_SEL,
            _ => report_status::INVALID_PARAMS,
        }
    }
}

/// MSG_REPORT_RSP: STATUS (u32), REPORT_SIZE (u32), 24 reserved bytes, then the report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReportResponse {
    /// STATUS ([`report_status`]).
    pub status: u32,
    /// The signed report when STATUS is success.
    pub report: Option<[u8; REPORT_SIZE]>,
}

impl ReportResponse {
    /// Offset of the report in the payload.
    pub const REPORT_OFFSET: usize = 0x20;
    /// Size of a successful response's payload.
    pub const SIZE: usize = Self::REPORT_OFFSET + REPORT_SIZE;

    /// A successful response carrying a signed report.
    pub fn success(report: [u8; REPORT_SIZE]) -> Self {
        Self { status: report_status::SUCCESS, report: Some(report) }
    }

    /// A failed response (no report).
    pub fn error(status: u32) -> Self {
        Self { status, report: None }
    }

    /// The payload: 0x20 bytes, plus the report when there is one.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = vec![0u8; Self::REPORT_OFFSET];
        b[..4].copy_from_slice(&self.status.to_le_bytes());
        if let Some(report) = &self.report {
            b[4..8].copy_from_slice(&(REPORT_SIZE as u32).to_le_bytes());
            b.extend_from_slice(report);
        }
        b
    }

    /// Parses a payload: a report of REPORT_SIZE bytes must follow a successful status.
    pub fn from_bytes(b: &[u8]) -> Result<Self, GuestMsgError> {
        let what = "MSG_REPORT_RSP";
        let head = b.get(..Self::REPORT_OFFSET).ok_or(GuestMsgError::BadPayloadSize {
            what,
            len: b.len(),
            need: Self::REPORT_OFFSET,
        })?;
        if let Some(i) = head[8..].iter().position(|&x| x != 0) {
            return Err(GuestMsgError::PayloadReservedNotZero { what, offset: 8 + i });
        }
        let status = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        let size = u32::from_le_bytes([head[4], head[5], head[6], head[7]]) as usize;
        if status != report_status::SUCCESS {
            return Ok(Self::error(status));
        }
        let report = b
            .get(Self::REPORT_OFFSET..)
            .filter(|r| size == REPORT_SIZE && r.len() == REPORT_SIZE)
            .and_then(|r| r.try_into().ok())
            .ok_or(GuestMsgError::BadPayloadSize { what, len: b.len(), need: Self::SIZE })?;
        Ok(Self::success(report))
    }
}

/// Certificate GUIDs of the extended guest request's table, in the byte order of their
/// text form (as Linux, the sev crate and AMD's tools store them).
pub mod cert_guid {
    /// The ARK: c0b406a4-a803-4952-9743-3fb6014cd0ae.
    pub const ARK: [u8; 16] = guid(0xc0b406a4, 0xa803, 0x4952, 0x97433fb6014cd0ae);
    /// The ASK: 4ab7b379-bbac-4fe4-a02f-05aef327c782.
    pub const ASK: [u8; 16] = guid(0x4ab7b379, 0xbbac, 0x4fe4, 0xa02f05aef327c782);
    /// The VCEK: 63da758d-e664-4564-adc5-f4b93be8accd.
    pub const VCEK: [u8; 16] = guid(0x63da758d, 0xe664, 0x4564, 0xadc5f4b93be8accd);

    /// The bytes of GUID `a-b-c-d` (d the last two groups), most significant first.
    const fn guid(a: u32, b: u16, c: u16, d: u64) -> [u8; 16] {
        let (a, b, c, d) = (a.to_be_bytes(), b.to_be_bytes(), c.to_be_bytes(), d.to_be_bytes());
        [a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]]
    }
}

/// One certificate of the table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertTableEntry {
    /// Its GUID ([`cert_guid`]).
    pub guid: [u8; 16],
    /// The certificate (DER for AMD's).
    pub data: Vec<u8>,
}

/// Size of one table entry: GUID, offset (u32), length (u32).
const CERT_ENTRY_SIZE: usize = 24;

/// Builds a certificate table: the entries (GUID, offset from the table's start,
/// length), an all-zero terminator entry, then the certificates in entry order.
pub fn build_cert_table(entries: &[CertTableEntry]) -> Result<Vec<u8>, GuestMsgError> {
    let mut table = Vec::new();
    let mut offset = (entries.len() + 1) * CERT_ENTRY_SIZE;
    for e in entries {
        if e.guid == [0; 16] {
            return Err(GuestMsgError::BadCertTable("an entry has the all-zero GUID".into()));
        }
        let too_big = || GuestMsgError::BadCertTable("the table exceeds 4 GiB".into());
        table.extend_from_slice(&e.guid);
        table.extend_from_slice(&u32::try_from(offset).map_err(|_| too_big())?.to_le_bytes());
        table.extend_from_slice(&u32::try_from(e.data.len()).map_err(|_| too_big())?.to_le_bytes());
        offset += e.data.len();
    }
    table.extend_from_slice(&[0; CERT_ENTRY_SIZE]);
    for e in entries {
        table.extend_from_slice(&e.data);
    }
    Ok(table)
}

/// Parses a certificate table up to its all-zero-GUID terminator; every certificate
/// must lie inside `buf`, after the entries.
pub fn parse_cert_table(buf: &[u8]) -> Result<Vec<CertTableEntry>, GuestMsgError> {
    let bad = |s: String| GuestMsgError::BadCertTable(s);
    let mut entries = Vec::new();
    for (i, chunk) in buf.chunks(CERT_ENTRY_SIZE).enumerate() {
        let raw: &[u8; CERT_ENTRY_SIZE] = chunk.try_into().map_err(|_| bad("no terminator entry".into()))?;
        let mut guid = [0u8; 16];
        guid.copy_from_slice(&raw[..16]);
        if guid == [0; 16] {
            let table_end = (i + 1) * CERT_ENTRY_SIZE;
            return entries
                .into_iter()
                .map(|(guid, offset, len): ([u8; 16], usize, usize)| {
                    let end = offset.checked_add(len).filter(|&end| offset >= table_end && end <= buf.len());
                    let end = end.ok_or_else(|| {
                        bad(format!(
                            "certificate at {offset:#x}+{len:#x} lies outside {table_end:#x}..{:#x}",
                            buf.len()
                        ))
                    })?;
                    Ok(CertTableEntry { guid, data: buf[offset..end].to_vec() })
                })
                .collect();
        }
        let offset = u32::from_le_bytes([raw[16], raw[17], raw[18], raw[19]]) as usize;
        let len = u32::from_le_bytes([raw[20], raw[21], raw[22], raw[23]]) as usize;
        entries.push((guid, offset, len));
    }
    Err(bad("no terminator entry".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEYS: [[u8; 32]; 4] = [[1; 32], [2; 32], [3; 32], [4; 32]];

    fn req_header(seqno: u64, vmpck: u8) -> MsgHeader {
        MsgHeader { seqno, msg_type: msg_type::REPORT_REQ, msg_version: 1, msg_sz: 0, vmpck }
    }

    fn report_req_page(seqno: u64, vmpck: u8) -> Vec<u8> {
        let req = ReportRequest { report_data: [0xAA; 64], vmpl: u32::from(vmpck), key_sel: 0 };
        seal(&KEYS[usize::from(vmpck)], req_header(seqno, vmpck), &req.to_bytes()).unwrap()
    }

    #[test]
    fn report_request_round_trips_through_the_channel() {
        let mut psp = PspMsgChannel::new(KEYS);
        let req = psp.open_request(&report_req_page(1, 0)).unwrap();
        assert_eq!(req.header.seqno, 1);
        let rr = ReportRequest::from_bytes(&req.payload).unwrap();
        assert_eq!(rr.report_data, [0xAA; 64]);
        assert_eq!(rr.status(0), report_status::SUCCESS);
        let rsp = psp.seal_response(&req, &ReportResponse::success([7; REPORT_SIZE]).to_bytes()).unwrap();
        let (h, payload) = open(&KEYS[0], &rsp).unwrap();
        assert_eq!((h.seqno, h.msg_type, h.msg_version, h.vmpck), (2, msg_type::REPORT_RSP, 1, 0));
        assert_eq!(usize::from(h.msg_sz), ReportResponse::SIZE);
        assert_eq!(ReportResponse::from_bytes(&payload).unwrap().report, Some([7; REPORT_SIZE]));
        // The next request must carry 3.
        psp.open_request(&report_req_page(3, 0)).unwrap();
        assert_eq!(psp.last_seqno(0), Some(4));
    }

    #[test]
    fn sealed_message_matches_an_independent_aes_gcm_computation() {
        // Header and payload laid out by hand, encrypted with the aes-gcm crate's
        // combined API (ciphertext || tag), compared with seal().
        let payload = [0x55u8; 0x60];
        let page = seal(&KEYS[1], req_header(0x0102030405060708, 1), &payload).unwrap();
        let mut hdr = [0u8; 0x60];
        hdr[0x20..0x28].copy_from_slice(&[8, 7, 6, 5, 4, 3, 2, 1]);
        hdr[0x30..0x38].copy_from_slice(&[1, 1, 0x60, 0, 5, 1, 0x60, 0]);
        hdr[0x3C] = 1;
        assert_eq!(page[AUTHTAG_LEN..0x60], hdr[AUTHTAG_LEN..]);
        let iv = [8, 7, 6, 5, 4, 3, 2, 1, 0, 0, 0, 0];
        let mut ct = payload;
        let tag = Aes256Gcm::new((&KEYS[1]).into())
            .encrypt_in_place_detached(&Nonce::from(iv), &hdr[0x30..], &mut ct)
            .unwrap();
        assert_eq!(page[0x60..0xC0], ct);
        assert_eq!(page[..16], tag[..]);
        assert!(page[0xC0..].iter().all(|&b| b == 0));
    }

    #[test]
    fn request_under_the_wrong_key_fails_authentication() {
        let mut psp = PspMsgChannel::new(KEYS);
        let page = seal(&[9; 32], req_header(1, 0), &[0; 0x60]).unwrap();
        assert_eq!(psp.open_request(&page), Err(GuestMsgError::AuthFailed(0)));
        assert_eq!(psp.last_seqno(0), Some(0), "a rejected request uses no sequence number");
    }

    #[test]
    fn request_with_a_flipped_tag_fails_authentication() {
        let mut psp = PspMsgChannel::new(KEYS);
        let mut page = report_req_page(1, 0);
        page[3] ^= 0x10;
        assert_eq!(psp.open_request(&page), Err(GuestMsgError::AuthFailed(0)));
    }

    #[test]
    fn request_with_a_flipped_payload_or_aad_byte_fails_authentication() {
        for off in [0x60, 0x60 + 0x5F, 0x3C] {
            let mut psp = PspMsgChannel::new(KEYS);
            let mut page = report_req_page(1, 0);
            if off == 0x3C {
                // Moving the message to VMPCK 1 changes the AAD (and the key).
                page[off] = 1;
                assert!(matches!(psp.open_request(&page), Err(GuestMsgError::AuthFailed(1))));
                continue;
            }
            page[off] ^= 1;
            assert_eq!(psp.open_request(&page), Err(GuestMsgError::AuthFailed(0)), "offset {off:#x}");
        }
    }

    #[test]
    fn replayed_request_is_rejected() {
        let mut psp = PspMsgChannel::new(KEYS);
        let page = report_req_page(1, 0);
        psp.open_request(&page).unwrap();
        assert_eq!(psp.open_request(&page), Err(GuestMsgError::BadSeqno { vmpck: 0, expected: 3, got: 1 }));
    }

    #[test]
    fn out_of_order_request_is_rejected() {
        let mut psp = PspMsgChannel::new(KEYS);
        let req = psp.open_request(&report_req_page(1, 0)).unwrap();
        psp.seal_response(&req, &[]).unwrap();
        // 2 was the response's number; 5 skips ahead.
        for seqno in [2, 5] {
            assert_eq!(
                psp.open_request(&report_req_page(seqno, 0)),
                Err(GuestMsgError::BadSeqno { vmpck: 0, expected: 3, got: seqno })
            );
        }
    }

    #[test]
    fn each_vmpck_has_its_own_sequence() {
        let mut psp = PspMsgChannel::new(KEYS);
        psp.open_request(&report_req_page(1, 0)).unwrap();
        psp.open_request(&report_req_page(1, 2)).unwrap();
        assert_eq!((psp.last_seqno(0), psp.last_seqno(1), psp.last_seqno(2)), (Some(2), Some(0), Some(2)));
    }

    #[test]
    fn exhausted_sequence_is_rejected() {
        let mut psp = PspMsgChannel::new(KEYS);
        psp.last_seqno[0] = u64::MAX - 1;
        assert_eq!(psp.open_request(&report_req_page(u64::MAX, 0)), Err(GuestMsgError::SeqnoExhausted(0)));
    }

    #[test]
    fn wrong_header_fields_are_rejected_with_distinct_errors() {
        let cases: [(usize, u8, GuestMsgError); 9] = [
            (0x30, 2, GuestMsgError::BadAlgo(2)),
            (0x31, 2, GuestMsgError::BadHeaderVersion(2)),
            (0x32, 0x50, GuestMsgError::BadHeaderSize(0x50)),
            (0x34, msg_type::REPORT_RSP, GuestMsgError::BadMsgType(msg_type::REPORT_RSP)),
            (0x34, 0, GuestMsgError::BadMsgType(0)),
            (0x35, 2, GuestMsgError::BadMsgVersion { msg_type: msg_type::REPORT_REQ, version: 2 }),
            (0x3C, 4, GuestMsgError::BadVmpck(4)),
            (0x28, 1, GuestMsgError::ReservedNotZero { offset: 0x28 }),
            (0x10, 1, GuestMsgError::ReservedNotZero { offset: 0x10 }),
        ];
        for (off, value, err) in cases {
            let mut psp = PspMsgChannel::new(KEYS);
            let mut page = report_req_page(1, 0);
            page[off] = value;
            assert_eq!(psp.open_request(&page), Err(err), "byte {off:#x} = {value}");
        }
    }

    #[test]
    fn oversize_msg_sz_is_rejected() {
        let mut psp = PspMsgChannel::new(KEYS);
        let mut page = report_req_page(1, 0);
        page[0x36..0x38].copy_from_slice(&4001u16.to_le_bytes());
        assert_eq!(psp.open_request(&page), Err(GuestMsgError::MsgTooLarge(4001)));
        assert_eq!(seal(&KEYS[0], req_header(1, 0), &[0; 4001]), Err(GuestMsgError::MsgTooLarge(4001)));
        // The largest payload fits exactly.
        let page = seal(&KEYS[0], req_header(1, 0), &[0; MSG_PAYLOAD_MAX]).unwrap();
        assert_eq!(psp.open_request(&page).unwrap().payload.len(), MSG_PAYLOAD_MAX);
    }

    #[test]
    fn short_buffer_is_rejected() {
        let mut psp = PspMsgChannel::new(KEYS);
        let page = report_req_page(1, 0);
        assert_eq!(psp.open_request(&page[..0x80]), Err(GuestMsgError::BufferTooSmall { len: 0x80, need: 0xC0 }));
        assert_eq!(psp.open_request(&page[..0x20]), Err(GuestMsgError::BufferTooSmall { len: 0x20, need: 0x60 }));
    }

    #[test]
    fn report_request_status_follows_the_abi() {
        let req = |vmpl, key_sel| ReportRequest { report_data: [0; 64], vmpl, key_sel };
        assert_eq!(req(0, 0).status(0), report_status::SUCCESS);
        assert_eq!(req(3, 1).status(2), report_status::SUCCESS);
        assert_eq!(req(1, 0).status(2), report_status::INVALID_PARAMS, "below the caller's VMPL");
        assert_eq!(req(4, 0).status(0), report_status::INVALID_PARAMS, "above 3");
        assert_eq!(req(0, 2).status(0), report_status::INVALID_KEY_SEL, "no VLEK");
        assert_eq!(req(0, 3).status(0), report_status::INVALID_PARAMS, "reserved KEY_SEL");
    }

    #[test]
    fn report_request_payload_round_trips_and_rejects_reserved_bits() {
        let r = ReportRequest { report_data: [3; 64], vmpl: 2, key_sel: 1 };
        let b = r.to_bytes();
        assert_eq!(b[0x40..0x45], [2, 0, 0, 0, 1]);
        assert_eq!(ReportRequest::from_bytes(&b), Ok(r));
        let mut bad = b;
        bad[0x44] = 4;
        assert_eq!(
            ReportRequest::from_bytes(&bad),
            Err(GuestMsgError::PayloadReservedNotZero { what: "MSG_REPORT_REQ", offset: 0x44 })
        );
        bad = b;
        bad[0x5F] = 1;
        assert_eq!(
            ReportRequest::from_bytes(&bad),
            Err(GuestMsgError::PayloadReservedNotZero { what: "MSG_REPORT_REQ", offset: 0x5F })
        );
        assert!(matches!(ReportRequest::from_bytes(&b[..0x40]), Err(GuestMsgError::BadPayloadSize { .. })));
    }

    #[test]
    fn report_response_payload_layout() {
        let ok = ReportResponse::success([9; REPORT_SIZE]).to_bytes();
        assert_eq!(ok.len(), 0x4C0);
        assert_eq!(ok[..8], [0, 0, 0, 0, 0xA0, 0x04, 0, 0]);
        assert_eq!(ok[0x20..], [9; REPORT_SIZE]);
        let err = ReportResponse::error(report_status::INVALID_PARAMS).to_bytes();
        assert_eq!(err, [&[0x16u8, 0, 0, 0][..], &[0; 28]].concat());
        assert_eq!(ReportResponse::from_bytes(&err), Ok(ReportResponse::error(0x16)));
        assert!(matches!(ReportResponse::from_bytes(&ok[..0x100]), Err(GuestMsgError::BadPayloadSize { .. })));
    }

    #[test]
    fn cert_guids_match_the_text_form() {
        assert_eq!(hex::encode(cert_guid::ARK), "c0b406a4a803495297433fb6014cd0ae");
        assert_eq!(hex::encode(cert_guid::ASK), "4ab7b379bbac4fe4a02f05aef327c782");
        assert_eq!(hex::encode(cert_guid::VCEK), "63da758de6644564adc5f4b93be8accd");
    }

    #[test]
    fn cert_table_round_trips_and_matches_the_sev_crate() {
        let entries = vec![
            CertTableEntry { guid: cert_guid::ARK, data: vec![1; 10] },
            CertTableEntry { guid: cert_guid::ASK, data: vec![2; 20] },
            CertTableEntry { guid: cert_guid::VCEK, data: vec![3; 5] },
        ];
        let table = build_cert_table(&entries).unwrap();
        assert_eq!(table.len(), 4 * 24 + 35);
        assert_eq!(parse_cert_table(&table).unwrap(), entries);
        // The sev crate's own builder lays out the same bytes, and its parser reads ours.
        use sev::firmware::host::{CertTableEntry as SevEntry, CertType};
        let sev_entries = vec![
            SevEntry::new(CertType::ARK, vec![1; 10]),
            SevEntry::new(CertType::ASK, vec![2; 20]),
            SevEntry::new(CertType::VCEK, vec![3; 5]),
        ];
        assert_eq!(SevEntry::cert_table_to_vec_bytes(&sev_entries).unwrap(), table);
        let parsed = SevEntry::vec_bytes_to_cert_table(&mut table.clone()).unwrap();
        assert_eq!(parsed, sev_entries);
    }

    #[test]
    fn malformed_cert_tables_are_rejected() {
        let table = build_cert_table(&[CertTableEntry { guid: cert_guid::VCEK, data: vec![3; 8] }]).unwrap();
        // Certificate cut short.
        assert!(matches!(parse_cert_table(&table[..table.len() - 1]), Err(GuestMsgError::BadCertTable(_))));
        // No terminator.
        assert!(matches!(parse_cert_table(&table[..24]), Err(GuestMsgError::BadCertTable(_))));
        // Offset pointing into the entries.
        let mut bad = table.clone();
        bad[16..20].copy_from_slice(&8u32.to_le_bytes());
        assert!(matches!(parse_cert_table(&bad), Err(GuestMsgError::BadCertTable(_))));
        // Huge length that would overflow.
        let mut bad = table;
        bad[20..24].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(parse_cert_table(&bad), Err(GuestMsgError::BadCertTable(_))));
        assert!(matches!(
            build_cert_table(&[CertTableEntry { guid: [0; 16], data: vec![] }]),
            Err(GuestMsgError::BadCertTable(_))
        ));
    }
}
