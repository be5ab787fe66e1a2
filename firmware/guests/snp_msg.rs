//! SNP guest messages, the guest's side: builds an encrypted MSG_REPORT_REQ for the PSP
//! and opens the MSG_REPORT_RSP it answers with (SNP firmware ABI, "Guest Messages";
//! the PSP's side is `launch::snp::guest_msg`).
//!
//! A message page is a 0x60-byte header then the payload, AES-256-GCM encrypted under
//! a VMPCK from the secrets page: IV = the sequence number (8 bytes little endian, 4
//! zero bytes), additional data = header bytes 0x30..0x60, tag in header bytes 0..16.
//! Requests carry the sequence number after the last one used with the key, the
//! response the request's plus one; [`GuestChannel`] keeps that count.
//!
//! Message pages are shared with the host: the request is built in private memory and
//! copied out whole; the response page is read once, into private memory, before
//! anything in it is checked or decrypted.
//!
//! Included with `#[path = "snp_msg.rs"] mod snp_msg;` beside `#[path = "aes_gcm.rs"]
//! mod aes_gcm;` (it uses `super::aes_gcm`), by guest programs and by
//! `launch/tests/guest_crypto.rs`, which checks it against the PSP's side on the host.
#![allow(dead_code)]

use super::aes_gcm::{Gcm, IV_LEN, KEY_LEN, TAG_LEN};

/// Size of a message page.
pub const PAGE_SIZE: usize = 4096;
/// Size of the message header.
pub const HDR_SIZE: usize = 0x60;
/// Largest payload.
pub const PAYLOAD_MAX: usize = PAGE_SIZE - HDR_SIZE;
/// MSG_TYPE of an attestation report request.
pub const MSG_REPORT_REQ: u8 = 5;
/// MSG_TYPE of its response.
pub const MSG_REPORT_RSP: u8 = 6;
/// Size of the MSG_REPORT_REQ payload.
pub const REPORT_REQ_SIZE: usize = 0x60;
/// Size of an attestation report.
pub const REPORT_SIZE: usize = 0x4A0;
/// Offset of the report in MSG_REPORT_RSP.
const REPORT_OFFSET: usize = 0x20;
/// Size of a successful MSG_REPORT_RSP payload.
pub const REPORT_RSP_SIZE: usize = REPORT_OFFSET + REPORT_SIZE;
/// The header's additional authenticated data starts here (ALGO).
const AAD_OFFSET: usize = 0x30;

/// Why a response was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MsgError {
    /// ALGO, HDR_VERSION, HDR_SZ, MSG_VERSION, MSG_VMPCK or a reserved byte is wrong.
    BadHeader,
    /// MSG_TYPE is not MSG_REPORT_RSP.
    BadType,
    /// MSG_SEQNO is not the request's plus one (or no request is outstanding).
    BadSeqno,
    /// MSG_SZ or REPORT_SIZE does not fit a report response.
    BadSize,
    /// The tag does not authenticate the response under the VMPCK.
    AuthFailed,
    /// The PSP refused the request with this STATUS (0x16 invalid parameters, 0x27
    /// invalid key selection).
    Status(u32),
    /// The key's sequence numbers are used up.
    SeqnoExhausted,
}

/// The guest's end of the channel under one VMPCK.
pub struct GuestChannel {
    gcm: Gcm,
    vmpck: u8,
    /// The last sequence number used (by a request or a response).
    last_seqno: u64,
    /// The sequence number of the request awaiting its response.
    pending: Option<u64>,
}

/// The IV for a sequence number.
fn iv(seqno: u64) -> [u8; IV_LEN] {
    let mut iv = [0u8; IV_LEN];
    iv[..8].copy_from_slice(&seqno.to_le_bytes());
    iv
}

impl GuestChannel {
    /// A channel under VMPCK number `vmpck` (0 to 3) with key `key`, whose last used
    /// sequence number is `last_seqno` (0 for a fresh guest).
    pub fn new(key: &[u8; KEY_LEN], vmpck: u8, last_seqno: u64) -> Self {
        Self { gcm: Gcm::new(key), vmpck, last_seqno, pending: None }
    }

    /// The last sequence number used (to store in the secrets page's OS area).
    pub fn last_seqno(&self) -> u64 {
        self.last_seqno
    }

    /// Writes an encrypted MSG_REPORT_REQ for `report_data` at `vmpl` (KEY_SEL 0: the
    /// platform's default key) into `page`, and returns its sequence number. Building
    /// again before a response arrives rebuilds with the same number.
    pub fn build_report_request(
        &mut self,
        report_data: &[u8; 64],
        vmpl: u32,
        page: &mut [u8; PAGE_SIZE],
    ) -> Result<u64, MsgError> {
        let seqno = self.last_seqno.checked_add(1).ok_or(MsgError::SeqnoExhausted)?;
        // The response needs the number after it.
        seqno.checked_add(1).ok_or(MsgError::SeqnoExhausted)?;
        let mut msg = [0u8; HDR_SIZE + REPORT_REQ_SIZE];
        msg[0x20..0x28].copy_from_slice(&seqno.to_le_bytes());
        msg[0x30] = 1; // ALGO: AES-256-GCM
        msg[0x31] = 1; // HDR_VERSION
        msg[0x32..0x34].copy_from_slice(&(HDR_SIZE as u16).to_le_bytes());
        msg[0x34] = MSG_REPORT_REQ;
        msg[0x35] = 1; // MSG_VERSION
        msg[0x36..0x38].copy_from_slice(&(REPORT_REQ_SIZE as u16).to_le_bytes());
        msg[0x3C] = self.vmpck;
        let (hdr, payload) = msg.split_at_mut(HDR_SIZE);
        payload[..64].copy_from_slice(report_data);
        payload[0x40..0x44].copy_from_slice(&vmpl.to_le_bytes());
        let tag = self.gcm.encrypt(&iv(seqno), &hdr[AAD_OFFSET..], payload);
        hdr[..TAG_LEN].copy_from_slice(&tag);
        // Bytes past MSG_SZ are not part of the message: left as they are.
        page[..msg.len()].copy_from_slice(&msg);
        self.pending = Some(seqno);
        Ok(seqno)
    }

    /// Opens the PSP's MSG_REPORT_RSP to the pending request and copies the signed
    /// report into `report`. The sequence moves on when the response authenticates,
    /// whatever its STATUS.
    pub fn open_report_response(&mut self, page: &[u8], report: &mut [u8; REPORT_SIZE]) -> Result<(), MsgError> {
        let mut hdr = [0u8; HDR_SIZE];
        hdr.copy_from_slice(page.get(..HDR_SIZE).ok_or(MsgError::BadSize)?);
        let req = self.pending.ok_or(MsgError::BadSeqno)?;
        let u16_at = |o: usize| u16::from_le_bytes([hdr[o], hdr[o + 1]]);
        let reserved = hdr[TAG_LEN..0x20].iter().chain(&hdr[0x28..0x30]).chain(&hdr[0x38..0x3C]).chain(&hdr[0x3D..]);
        if hdr[0x30] != 1
            || hdr[0x31] != 1
            || usize::from(u16_at(0x32)) != HDR_SIZE
            || hdr[0x35] != 1
            || hdr[0x3C] != self.vmpck
            || reserved.fold(0, |acc, &b| acc | b) != 0
        {
            return Err(MsgError::BadHeader);
        }
        if hdr[0x34] != MSG_REPORT_RSP {
            return Err(MsgError::BadType);
        }
        let mut seqno = [0u8; 8];
        seqno.copy_from_slice(&hdr[0x20..0x28]);
        let seqno = u64::from_le_bytes(seqno);
        if Some(seqno) != req.checked_add(1) {
            return Err(MsgError::BadSeqno);
        }
        let len = usize::from(u16_at(0x36));
        if !(REPORT_OFFSET..=REPORT_RSP_SIZE).contains(&len) {
            return Err(MsgError::BadSize);
        }
        let mut payload = [0u8; REPORT_RSP_SIZE];
        let payload = &mut payload[..len];
        payload.copy_from_slice(page.get(HDR_SIZE..HDR_SIZE + len).ok_or(MsgError::BadSize)?);
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(&hdr[..TAG_LEN]);
        if !self.gcm.decrypt(&iv(seqno), &hdr[AAD_OFFSET..], payload, &tag) {
            return Err(MsgError::AuthFailed);
        }
        self.last_seqno = seqno;
        self.pending = None;
        let status = u32::from_le_bytes([payload[0], payload[1], payload[2], payload[3]]);
        if status != 0 {
            return Err(MsgError::Status(status));
        }
        let size = u32::from_le_bytes([payload[4], payload[5], payload[6], payload[7]]) as usize;
        if size != REPORT_SIZE || len != REPORT_RSP_SIZE {
            return Err(MsgError::BadSize);
        }
        report.copy_from_slice(&payload[REPORT_OFFSET..]);
        Ok(())
    }
}
