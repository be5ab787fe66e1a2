//! The TD report (TDREPORT_STRUCT, 1024 bytes) exactly as the TDX module ABI lays it
//! out, what TDG.MR.REPORT builds (hashes and MAC), and the check the quoting enclave
//! makes before it quotes a report (ENCLU[EVERIFYREPORT2] and the two hashes).
//!
//! Layout (Intel TDX module ABI specification, "TDREPORT_STRUCT"; all integers
//! little-endian):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 256 | REPORTMACSTRUCT: REPORTTYPE (TYPE 0x81, SUBTYPE, VERSION, reserved) at 0, reserved[12] at 4, CPUSVN[16] at 16, TEE_TCB_INFO_HASH[48] at 32, TEE_INFO_HASH[48] at 80, REPORTDATA[64] at 128, reserved[32] at 192, MAC[32] at 224 |
//! | 256 | 239 | TEE_TCB_INFO: VALID (u64) at 0, TEE_TCB_SVN[16] at 8, MRSEAM[48] at 24, MRSIGNERSEAM[48] at 72, ATTRIBUTES (u64) at 120, TEE_TCB_SVN2[16] at 128 (TDX 1.5), reserved[95] at 144 |
//! | 495 | 17 | reserved |
//! | 512 | 512 | TDINFO: ATTRIBUTES (u64) at 0, XFAM (u64) at 8, MRTD at 16, MRCONFIGID at 64, MROWNER at 112, MROWNERCONFIG at 160, RTMR[4] at 208, SERVTD_HASH at 400 (TDX 1.5), reserved[64] at 448 (each MR 48 bytes) |
//!
//! TEE_TCB_INFO_HASH is SHA-384 of the 239 TEE_TCB_INFO bytes, TEE_INFO_HASH SHA-384
//! of the 512 TDINFO bytes, and the MAC is HMAC-SHA-256 over the first 224 bytes of
//! REPORTMACSTRUCT (SEAMOPS[SEAMREPORT] and EVERIFYREPORT2 in the CPU architectural
//! extensions for TDX). On hardware the HMAC key is the CPU's REPORT_KEY2, which never
//! leaves the processor; the emulated platform uses a per-platform [`ReportMacKey`]
//! instead (see [`super::certs`]), so the emulated quoting enclave can tell a report
//! made on "its" platform from any other, with the same algorithm the hardware uses.

use std::fmt;

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256, Sha384};
use thiserror::Error;

use crate::bytes::{array, le_u64};
use crate::measure::tdx::{Rtmr, DIGEST_SIZE};

/// Size of TDREPORT_STRUCT.
pub const TDREPORT_SIZE: usize = 1024;
/// Size of REPORTMACSTRUCT.
pub const REPORT_MAC_STRUCT_SIZE: usize = 256;
/// Size of TEE_TCB_INFO (without the 17 reserved bytes that follow it).
pub const TEE_TCB_INFO_SIZE: usize = 239;
/// Size of TDINFO.
pub const TDINFO_SIZE: usize = 512;
/// Size of REPORTDATA.
pub const REPORT_DATA_SIZE: usize = 64;
/// Size of the MAC.
pub const MAC_SIZE: usize = 32;
/// How many leading bytes of REPORTMACSTRUCT the MAC covers.
pub const MAC_COVERED_SIZE: usize = 224;
/// REPORTTYPE.TYPE of a TD report (a TEE implemented by the Intel TDX module).
pub const TDX_REPORT_TYPE: u8 = 0x81;
/// REPORTTYPE.VERSION of a TD without service TDs (TDX 1.0 and 1.5).
pub const REPORT_VERSION_NO_SERVTDS: u8 = 0;
/// REPORTTYPE.VERSION of a TD with bound service TDs (TDX 1.5): SERVTD_HASH is set.
pub const REPORT_VERSION_WITH_SERVTDS: u8 = 1;
/// TEE_TCB_INFO.VALID of a TDX 1.0 module (Intel's own, which leaves MRSIGNERSEAM and
/// ATTRIBUTES zero): `ff 01 00 00 00 00 00 00` as TDX 1.0 hardware reports it.
pub const TEE_TCB_INFO_VALID_TDX10: u64 = 0x1ff;
/// TEE_TCB_INFO.VALID of a TDX 1.5 module, which adds TEE_TCB_SVN2:
/// `ff 01 03 00 00 00 00 00` as TDX 1.5 hardware reports it.
pub const TEE_TCB_INFO_VALID_TDX15: u64 = 0x301ff;

/// TEE_TCB_SVN of the emulated TDX module: minor SVN 3, major version 1 (a TDX 1.x
/// module), SEAM loader patch SVN 2.
pub const EMULATED_TEE_TCB_SVN: [u8; 16] = [3, 1, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
/// What the emulated TDX module's MRSEAM is the SHA-384 of.
pub const EMULATED_MRSEAM_LABEL: &[u8] = b"cvmm emulated TDX module";

/// Offsets inside TDREPORT_STRUCT.
mod off {
    pub const REPORT_TYPE: usize = 0;
    pub const MAC_RESERVED1: usize = 4;
    pub const CPU_SVN: usize = 16;
    pub const TEE_TCB_INFO_HASH: usize = 32;
    pub const TEE_INFO_HASH: usize = 80;
    pub const REPORT_DATA: usize = 128;
    pub const MAC: usize = 224;
    pub const TEE_TCB_INFO: usize = 256;
    pub const TD_INFO: usize = 512;
    // Inside TEE_TCB_INFO.
    pub const VALID: usize = 0;
    pub const TEE_TCB_SVN: usize = 8;
    pub const MR_SEAM: usize = 24;
    pub const MR_SIGNER_SEAM: usize = 72;
    pub const SEAM_ATTRIBUTES: usize = 120;
    pub const TEE_TCB_SVN2: usize = 128;
    // Inside TDINFO.
    pub const TD_ATTRIBUTES: usize = 0;
    pub const XFAM: usize = 8;
    pub const MR_TD: usize = 16;
    pub const MR_CONFIG_ID: usize = 64;
    pub const MR_OWNER: usize = 112;
    pub const MR_OWNER_CONFIG: usize = 160;
    pub const RTMR: usize = 208;
    pub const SERVTD_HASH: usize = 400;
}

/// Errors from parsing or checking a TD report.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ReportError {
    /// The buffer is not TDREPORT_STRUCT-sized.
    #[error("a TD report is {TDREPORT_SIZE} bytes, not {0}")]
    Length(usize),
    /// REPORTTYPE is not a TDX report the quoting enclave accepts.
    #[error("TD report type {tee_type:#04x} subtype {subtype} version {version} is not a TDX report (type 0x81, subtype 0, version 0 or 1)")]
    ReportType {
        /// REPORTTYPE.TYPE.
        tee_type: u8,
        /// REPORTTYPE.SUBTYPE.
        subtype: u8,
        /// REPORTTYPE.VERSION.
        version: u8,
    },
    /// Reserved bytes of REPORTMACSTRUCT that must be zero are not.
    #[error("TD report: reserved bytes of REPORTMACSTRUCT are not zero")]
    Reserved,
    /// The MAC does not match: the report was made on another platform or altered.
    #[error("TD report MAC mismatch: not made by this platform, or altered")]
    Mac,
    /// TEE_TCB_INFO_HASH is not the SHA-384 of TEE_TCB_INFO.
    #[error("TD report: TEE_TCB_INFO_HASH does not match TEE_TCB_INFO")]
    TeeTcbInfoHash,
    /// TEE_INFO_HASH is not the SHA-384 of TDINFO.
    #[error("TD report: TEE_INFO_HASH does not match TDINFO")]
    TeeInfoHash,
    /// The OS random number generator failed.
    #[error("cannot get random bytes for a report MAC key: {0}")]
    Rng(String),
}

/// REPORTTYPE: what kind of report this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReportType {
    /// TYPE: 0x81 for TDX.
    pub tee_type: u8,
    /// SUBTYPE: 0.
    pub subtype: u8,
    /// VERSION: [`REPORT_VERSION_NO_SERVTDS`] or [`REPORT_VERSION_WITH_SERVTDS`].
    pub version: u8,
}

/// REPORTMACSTRUCT: the MAC-protected part, binding TEE_TCB_INFO and TDINFO by hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReportMacStruct {
    /// REPORTTYPE.
    pub report_type: ReportType,
    /// CPUSVN of the platform.
    pub cpu_svn: [u8; 16],
    /// SHA-384 of TEE_TCB_INFO.
    pub tee_tcb_info_hash: [u8; DIGEST_SIZE],
    /// SHA-384 of TDINFO.
    pub tee_info_hash: [u8; DIGEST_SIZE],
    /// REPORTDATA the TD passed to TDG.MR.REPORT.
    pub report_data: [u8; REPORT_DATA_SIZE],
    /// HMAC-SHA-256 over the first [`MAC_COVERED_SIZE`] bytes.
    pub mac: [u8; MAC_SIZE],
}

/// TEE_TCB_INFO: the TDX module's identity and security version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TeeTcbInfo {
    /// VALID: which 8-byte groups of the structure are populated.
    pub valid: u64,
    /// TEE_TCB_SVN: byte 0 the module's minor SVN, byte 1 its major version, byte 2
    /// the SEAM loader's last patch SVN.
    pub tee_tcb_svn: [u8; 16],
    /// MRSEAM: measurement of the TDX module.
    pub mr_seam: [u8; DIGEST_SIZE],
    /// MRSIGNERSEAM: measurement of the module's signer (zero for Intel's module).
    pub mr_signer_seam: [u8; DIGEST_SIZE],
    /// ATTRIBUTES of the module (zero for Intel's module).
    pub attributes: u64,
    /// TEE_TCB_SVN2 (TDX 1.5; zero on TDX 1.0).
    pub tee_tcb_svn2: [u8; 16],
}

/// TDINFO: the TD's attestable properties.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TdInfo {
    /// The TD's ATTRIBUTES (bit 0 DEBUG, bit 28 SEPT_VE_DISABLE, ...).
    pub attributes: u64,
    /// XFAM: the extended features the TD may use.
    pub xfam: u64,
    /// MRTD: the build-time measurement.
    pub mr_td: [u8; DIGEST_SIZE],
    /// MRCONFIGID: software-defined configuration id, set at TD creation.
    pub mr_config_id: [u8; DIGEST_SIZE],
    /// MROWNER: the TD owner's id, set at TD creation.
    pub mr_owner: [u8; DIGEST_SIZE],
    /// MROWNERCONFIG: owner-defined configuration, set at TD creation.
    pub mr_owner_config: [u8; DIGEST_SIZE],
    /// RTMR0-3: the runtime measurement registers.
    pub rtmr: [[u8; DIGEST_SIZE]; 4],
    /// SERVTD_HASH: hash of the bound service TDs (TDX 1.5; zero without any).
    pub servtd_hash: [u8; DIGEST_SIZE],
}

impl Default for TdInfo {
    fn default() -> Self {
        Self {
            attributes: 0,
            xfam: 0,
            mr_td: [0; DIGEST_SIZE],
            mr_config_id: [0; DIGEST_SIZE],
            mr_owner: [0; DIGEST_SIZE],
            mr_owner_config: [0; DIGEST_SIZE],
            rtmr: [[0; DIGEST_SIZE]; 4],
            servtd_hash: [0; DIGEST_SIZE],
        }
    }
}

impl Default for TeeTcbInfo {
    fn default() -> Self {
        Self {
            valid: 0,
            tee_tcb_svn: [0; 16],
            mr_seam: [0; DIGEST_SIZE],
            mr_signer_seam: [0; DIGEST_SIZE],
            attributes: 0,
            tee_tcb_svn2: [0; 16],
        }
    }
}

impl TeeTcbInfo {
    /// The 239 bytes of the structure.
    pub fn to_bytes(&self) -> [u8; TEE_TCB_INFO_SIZE] {
        let mut b = [0u8; TEE_TCB_INFO_SIZE];
        b[off::VALID..off::VALID + 8].copy_from_slice(&self.valid.to_le_bytes());
        b[off::TEE_TCB_SVN..off::TEE_TCB_SVN + 16].copy_from_slice(&self.tee_tcb_svn);
        b[off::MR_SEAM..off::MR_SEAM + DIGEST_SIZE].copy_from_slice(&self.mr_seam);
        b[off::MR_SIGNER_SEAM..off::MR_SIGNER_SEAM + DIGEST_SIZE].copy_from_slice(&self.mr_signer_seam);
        b[off::SEAM_ATTRIBUTES..off::SEAM_ATTRIBUTES + 8].copy_from_slice(&self.attributes.to_le_bytes());
        b[off::TEE_TCB_SVN2..off::TEE_TCB_SVN2 + 16].copy_from_slice(&self.tee_tcb_svn2);
        b
    }

    /// Reads the structure (its reserved bytes are ignored).
    pub fn from_bytes(b: &[u8; TEE_TCB_INFO_SIZE]) -> Self {
        Self {
            valid: le_u64(b, off::VALID),
            tee_tcb_svn: array(b, off::TEE_TCB_SVN),
            mr_seam: array(b, off::MR_SEAM),
            mr_signer_seam: array(b, off::MR_SIGNER_SEAM),
            attributes: le_u64(b, off::SEAM_ATTRIBUTES),
            tee_tcb_svn2: array(b, off::TEE_TCB_SVN2),
        }
    }

    /// TEE_TCB_INFO_HASH: SHA-384 of the structure's bytes.
    pub fn hash(&self) -> [u8; DIGEST_SIZE] {
        Sha384::digest(self.to_bytes()).into()
    }
}

impl TeeTcbInfo {
    /// The emulated TDX 1.0 module's TEE_TCB_INFO: [`EMULATED_TEE_TCB_SVN`], MRSEAM
    /// the SHA-384 of [`EMULATED_MRSEAM_LABEL`], MRSIGNERSEAM and ATTRIBUTES zero
    /// (as Intel's own module has them), VALID [`TEE_TCB_INFO_VALID_TDX10`].
    pub fn emulated() -> Self {
        Self {
            valid: TEE_TCB_INFO_VALID_TDX10,
            tee_tcb_svn: EMULATED_TEE_TCB_SVN,
            mr_seam: Sha384::digest(EMULATED_MRSEAM_LABEL).into(),
            ..Default::default()
        }
    }
}

impl TdInfo {
    /// The 512 bytes of the structure.
    pub fn to_bytes(&self) -> [u8; TDINFO_SIZE] {
        let mut b = [0u8; TDINFO_SIZE];
        b[off::TD_ATTRIBUTES..off::TD_ATTRIBUTES + 8].copy_from_slice(&self.attributes.to_le_bytes());
        b[off::XFAM..off::XFAM + 8].copy_from_slice(&self.xfam.to_le_bytes());
        for (at, mr) in [
            (off::MR_TD, &self.mr_td),
            (off::MR_CONFIG_ID, &self.mr_config_id),
            (off::MR_OWNER, &self.mr_owner),
            (off::MR_OWNER_CONFIG, &self.mr_owner_config),
            (off::SERVTD_HASH, &self.servtd_hash),
        ] {
            b[at..at + DIGEST_SIZE].copy_from_slice(mr);
        }
        for (i, rtmr) in self.rtmr.iter().enumerate() {
            let at = off::RTMR + i * DIGEST_SIZE;
            b[at..at + DIGEST_SIZE].copy_from_slice(rtmr);
        }
        b
    }

    /// Reads the structure (its reserved bytes are ignored).
    pub fn from_bytes(b: &[u8; TDINFO_SIZE]) -> Self {
        Self {
            attributes: le_u64(b, off::TD_ATTRIBUTES),
            xfam: le_u64(b, off::XFAM),
            mr_td: array(b, off::MR_TD),
            mr_config_id: array(b, off::MR_CONFIG_ID),
            mr_owner: array(b, off::MR_OWNER),
            mr_owner_config: array(b, off::MR_OWNER_CONFIG),
            rtmr: std::array::from_fn(|i| array(b, off::RTMR + i * DIGEST_SIZE)),
            servtd_hash: array(b, off::SERVTD_HASH),
        }
    }

    /// TEE_INFO_HASH: SHA-384 of the structure's bytes.
    pub fn hash(&self) -> [u8; DIGEST_SIZE] {
        Sha384::digest(self.to_bytes()).into()
    }

    /// Sets the four RTMRs from the registers' values.
    pub fn set_rtmrs(&mut self, rtmrs: &[Rtmr; 4]) {
        for (slot, rtmr) in self.rtmr.iter_mut().zip(rtmrs) {
            *slot = *rtmr.value();
        }
    }

    /// The four RTMRs as registers.
    pub fn rtmrs(&self) -> [Rtmr; 4] {
        self.rtmr.map(Rtmr::from_value)
    }
}

/// The per-platform key the emulated TDX module MACs TD reports with, in place of the
/// CPU's REPORT_KEY2.
#[derive(Clone, PartialEq, Eq)]
pub struct ReportMacKey([u8; 32]);

impl fmt::Debug for ReportMacKey {
    /// Never prints the key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ReportMacKey(..)")
    }
}

impl ReportMacKey {
    /// A key with the given bytes.
    pub const fn new(key: [u8; 32]) -> Self {
        Self(key)
    }

    /// A fresh random key.
    pub fn random() -> Result<Self, ReportError> {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).map_err(|e| ReportError::Rng(e.to_string()))?;
        Ok(Self(key))
    }

    /// A key derived from a platform secret: HMAC-SHA-256(`secret`, `label`).
    pub fn derive(secret: &[u8], label: &[u8]) -> Self {
        Self(hmac_sha256(secret, label))
    }

    /// The MAC of REPORTMACSTRUCT's first [`MAC_COVERED_SIZE`] bytes.
    pub fn mac(&self, covered: &[u8; MAC_COVERED_SIZE]) -> [u8; MAC_SIZE] {
        hmac_sha256(&self.0, covered)
    }

    /// Checks `mac` against `covered` in constant time.
    fn verify(&self, covered: &[u8], mac: &[u8]) -> Result<(), ReportError> {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&self.0).map_err(|_| ReportError::Mac)?;
        m.update(covered);
        m.verify_slice(mac).map_err(|_| ReportError::Mac)
    }
}

/// HMAC-SHA-256(`key`, `data`).
pub(crate) fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut m = match <Hmac<Sha256> as Mac>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    };
    m.update(data);
    m.finalize().into_bytes().into()
}

/// TDREPORT_STRUCT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TdReport {
    /// REPORTMACSTRUCT.
    pub mac_struct: ReportMacStruct,
    /// TEE_TCB_INFO.
    pub tee_tcb_info: TeeTcbInfo,
    /// TDINFO.
    pub td_info: TdInfo,
}

impl TdReport {
    /// What TDG.MR.REPORT returns: the report of a TD with `td_info` on a platform
    /// with `cpu_svn` and module `tee_tcb_info`, carrying `report_data`, its hashes
    /// computed and MACed with the platform's `key`. REPORTTYPE.VERSION is 1 when the
    /// TD has service TDs (a non-zero SERVTD_HASH), else 0, as the TDX module sets it.
    pub fn create(
        key: &ReportMacKey,
        cpu_svn: [u8; 16],
        tee_tcb_info: TeeTcbInfo,
        td_info: TdInfo,
        report_data: [u8; REPORT_DATA_SIZE],
    ) -> Self {
        let version = if td_info.servtd_hash == [0; DIGEST_SIZE] {
            REPORT_VERSION_NO_SERVTDS
        } else {
            REPORT_VERSION_WITH_SERVTDS
        };
        let mut report = Self {
            mac_struct: ReportMacStruct {
                report_type: ReportType { tee_type: TDX_REPORT_TYPE, subtype: 0, version },
                cpu_svn,
                tee_tcb_info_hash: tee_tcb_info.hash(),
                tee_info_hash: td_info.hash(),
                report_data,
                mac: [0; MAC_SIZE],
            },
            tee_tcb_info,
            td_info,
        };
        let bytes = report.to_bytes();
        report.mac_struct.mac = key.mac(&array(&bytes, 0));
        report
    }

    /// The 1024 bytes of TDREPORT_STRUCT (reserved bytes zero).
    pub fn to_bytes(&self) -> [u8; TDREPORT_SIZE] {
        let mut b = [0u8; TDREPORT_SIZE];
        let m = &self.mac_struct;
        b[off::REPORT_TYPE..off::REPORT_TYPE + 3].copy_from_slice(&[
            m.report_type.tee_type,
            m.report_type.subtype,
            m.report_type.version,
        ]);
        b[off::CPU_SVN..off::CPU_SVN + 16].copy_from_slice(&m.cpu_svn);
        b[off::TEE_TCB_INFO_HASH..off::TEE_TCB_INFO_HASH + DIGEST_SIZE].copy_from_slice(&m.tee_tcb_info_hash);
        b[off::TEE_INFO_HASH..off::TEE_INFO_HASH + DIGEST_SIZE].copy_from_slice(&m.tee_info_hash);
        b[off::REPORT_DATA..off::REPORT_DATA + REPORT_DATA_SIZE].copy_from_slice(&m.report_data);
        b[off::MAC..off::MAC + MAC_SIZE].copy_from_slice(&m.mac);
        b[off::TEE_TCB_INFO..off::TEE_TCB_INFO + TEE_TCB_INFO_SIZE].copy_from_slice(&self.tee_tcb_info.to_bytes());
        b[off::TD_INFO..].copy_from_slice(&self.td_info.to_bytes());
        b
    }

    /// Reads a TD report. Only the length is checked: [`verify_td_report`] checks
    /// what the quoting enclave checks.
    pub fn from_bytes(b: &[u8]) -> Result<Self, ReportError> {
        let b: &[u8; TDREPORT_SIZE] = b.try_into().map_err(|_| ReportError::Length(b.len()))?;
        Ok(Self {
            mac_struct: ReportMacStruct {
                report_type: ReportType { tee_type: b[0], subtype: b[1], version: b[2] },
                cpu_svn: array(b, off::CPU_SVN),
                tee_tcb_info_hash: array(b, off::TEE_TCB_INFO_HASH),
                tee_info_hash: array(b, off::TEE_INFO_HASH),
                report_data: array(b, off::REPORT_DATA),
                mac: array(b, off::MAC),
            },
            tee_tcb_info: TeeTcbInfo::from_bytes(&array(b, off::TEE_TCB_INFO)),
            td_info: TdInfo::from_bytes(&array(b, off::TD_INFO)),
        })
    }
}

/// What the quoting enclave checks before it quotes `report` (raw TDREPORT_STRUCT
/// bytes): REPORTTYPE is TDX (type 0x81, subtype 0, version 0 or 1) with zero reserved
/// bytes, the MAC over the first 224 bytes is the platform's (`key`), and the two
/// hashes match the TEE_TCB_INFO and TDINFO bytes that follow. Returns the parsed
/// report.
pub fn verify_td_report(report: &[u8], key: &ReportMacKey) -> Result<TdReport, ReportError> {
    let parsed = TdReport::from_bytes(report)?;
    let t = parsed.mac_struct.report_type;
    if t.tee_type != TDX_REPORT_TYPE || t.subtype != 0 || t.version > REPORT_VERSION_WITH_SERVTDS {
        return Err(ReportError::ReportType { tee_type: t.tee_type, subtype: t.subtype, version: t.version });
    }
    if report[3] != 0 || report[off::MAC_RESERVED1..off::CPU_SVN].iter().any(|&b| b != 0) {
        return Err(ReportError::Reserved);
    }
    key.verify(&report[..MAC_COVERED_SIZE], &report[off::MAC..off::MAC + MAC_SIZE])?;
    let tcb_info = &report[off::TEE_TCB_INFO..off::TEE_TCB_INFO + TEE_TCB_INFO_SIZE];
    if Sha384::digest(tcb_info)[..] != parsed.mac_struct.tee_tcb_info_hash {
        return Err(ReportError::TeeTcbInfoHash);
    }
    if Sha384::digest(&report[off::TD_INFO..])[..] != parsed.mac_struct.tee_info_hash {
        return Err(ReportError::TeeInfoHash);
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_td_info() -> TdInfo {
        let mut rtmrs = [Rtmr::new(); 4];
        rtmrs[0].extend(&[0x11; 48]);
        rtmrs[2].extend(&[0x22; 48]);
        let mut info = TdInfo {
            attributes: 0x1000_0000,
            xfam: 0x0006_02e7,
            mr_td: [0xa1; 48],
            mr_config_id: [0xa2; 48],
            mr_owner: [0xa3; 48],
            mr_owner_config: [0xa4; 48],
            ..Default::default()
        };
        info.set_rtmrs(&rtmrs);
        info
    }

    fn sample_tcb_info() -> TeeTcbInfo {
        TeeTcbInfo {
            valid: TEE_TCB_INFO_VALID_TDX10,
            tee_tcb_svn: [6, 1, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            mr_seam: [0x5b; 48],
            ..Default::default()
        }
    }

    fn key() -> ReportMacKey {
        ReportMacKey::new([7; 32])
    }

    fn sample_report() -> [u8; TDREPORT_SIZE] {
        TdReport::create(&key(), [3; 16], sample_tcb_info(), sample_td_info(), [0x5a; 64]).to_bytes()
    }

    fn sha384(b: &[u8]) -> [u8; 48] {
        Sha384::digest(b).into()
    }

    #[test]
    fn report_fields_sit_at_the_abi_offsets() {
        // Arrange / Act
        let b = sample_report();
        // Assert: offsets written out independently of the module's constants.
        assert_eq!(&b[0..4], &[0x81, 0, 0, 0]);
        assert_eq!(&b[16..32], &[3; 16]);
        assert_eq!(&b[128..192], &[0x5a; 64]);
        assert_eq!(&b[256..264], &[0xff, 0x01, 0, 0, 0, 0, 0, 0], "VALID");
        assert_eq!(&b[264..267], &[6, 1, 3], "TEE_TCB_SVN");
        assert_eq!(&b[280..328], &[0x5b; 48], "MRSEAM");
        assert_eq!(&b[512..520], &[0, 0, 0, 0x10, 0, 0, 0, 0], "ATTRIBUTES");
        assert_eq!(&b[520..528], &[0xe7, 0x02, 0x06, 0, 0, 0, 0, 0], "XFAM");
        assert_eq!(&b[528..576], &[0xa1; 48], "MRTD");
        assert_eq!(&b[576..624], &[0xa2; 48], "MRCONFIGID");
        assert_eq!(&b[624..672], &[0xa3; 48], "MROWNER");
        assert_eq!(&b[672..720], &[0xa4; 48], "MROWNERCONFIG");
        assert_eq!(&b[720..768], &sha384(&[[0u8; 48], [0x11; 48]].concat()), "RTMR0");
        assert_eq!(&b[768..816], &[0; 48], "RTMR1");
        assert_eq!(&b[816..864], &sha384(&[[0u8; 48], [0x22; 48]].concat()), "RTMR2");
        assert!(b[912..].iter().all(|&x| x == 0), "SERVTD_HASH and reserved");
    }

    #[test]
    fn hashes_cover_the_tcb_info_and_td_info_bytes() {
        let b = sample_report();
        assert_eq!(&b[32..80], &sha384(&b[256..495]), "TEE_TCB_INFO_HASH");
        assert_eq!(&b[80..128], &sha384(&b[512..1024]), "TEE_INFO_HASH");
    }

    #[test]
    fn mac_is_hmac_sha256_over_the_first_224_bytes() {
        // Checked with ring's HMAC (BoringSSL's, independent of the hmac crate).
        let b = sample_report();
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &[7u8; 32]);
        assert_eq!(ring::hmac::sign(&key, &b[..224]).as_ref(), &b[224..256]);
        assert!(ring::hmac::verify(&key, &b[..225], &b[224..256]).is_err(), "the MAC covers exactly 224 bytes");
    }

    #[test]
    fn report_round_trips_through_bytes() {
        let b = sample_report();
        let parsed = TdReport::from_bytes(&b).unwrap();
        assert_eq!(parsed.to_bytes(), b);
        assert_eq!(parsed.td_info, sample_td_info());
        assert_eq!(parsed.tee_tcb_info, sample_tcb_info());
        assert_eq!(parsed.td_info.rtmrs()[2], Rtmr::replay([&[0x22; 48]]));
    }

    #[test]
    fn report_of_the_platform_verifies() {
        let parsed = verify_td_report(&sample_report(), &key()).unwrap();
        assert_eq!(parsed.mac_struct.report_data, [0x5a; 64]);
    }

    #[test]
    fn report_with_a_flipped_byte_is_refused() {
        for at in [0, 3, 8, 20, 40, 100, 150, 200, 230, 300, 494, 600, 1000] {
            let mut b = sample_report();
            b[at] ^= 1;
            assert!(verify_td_report(&b, &key()).is_err(), "flipped byte {at} still verifies");
        }
    }

    #[test]
    fn reserved_bytes_after_tcb_info_are_not_covered() {
        // Bytes 495..512 are outside both hashes and the MAC, as in the ABI.
        let mut b = sample_report();
        b[500] = 1;
        assert!(verify_td_report(&b, &key()).is_ok());
    }

    #[test]
    fn report_of_another_platform_is_refused() {
        let err = verify_td_report(&sample_report(), &ReportMacKey::new([8; 32])).unwrap_err();
        assert_eq!(err, ReportError::Mac);
    }

    #[test]
    fn altered_td_info_with_a_recomputed_hash_fails_the_mac() {
        let mut r = TdReport::from_bytes(&sample_report()).unwrap();
        r.td_info.mr_td = [0; 48];
        r.mac_struct.tee_info_hash = r.td_info.hash();
        assert_eq!(verify_td_report(&r.to_bytes(), &key()), Err(ReportError::Mac));
    }

    #[test]
    fn altered_td_info_alone_fails_its_hash() {
        let mut b = sample_report();
        b[528] ^= 0x80;
        assert_eq!(verify_td_report(&b, &key()), Err(ReportError::TeeInfoHash));
        let mut b = sample_report();
        b[300] ^= 0x80;
        assert_eq!(verify_td_report(&b, &key()), Err(ReportError::TeeTcbInfoHash));
    }

    #[test]
    fn wrong_type_and_length_are_refused() {
        assert_eq!(verify_td_report(&[0; 1023], &key()), Err(ReportError::Length(1023)));
        let mut sgx = sample_report();
        sgx[0] = 0;
        assert!(matches!(verify_td_report(&sgx, &key()), Err(ReportError::ReportType { tee_type: 0, .. })));
        let mut subtype = sample_report();
        subtype[1] = 1;
        assert!(matches!(verify_td_report(&subtype, &key()), Err(ReportError::ReportType { subtype: 1, .. })));
        let mut reserved = sample_report();
        reserved[10] = 1;
        assert_eq!(verify_td_report(&reserved, &key()), Err(ReportError::Reserved));
    }

    #[test]
    fn service_tds_set_report_version_one() {
        let mut info = sample_td_info();
        info.servtd_hash = [9; 48];
        let r = TdReport::create(&key(), [0; 16], sample_tcb_info(), info, [0; 64]);
        assert_eq!(r.mac_struct.report_type.version, REPORT_VERSION_WITH_SERVTDS);
        assert_eq!(&r.to_bytes()[912..960], &[9; 48]);
        assert!(verify_td_report(&r.to_bytes(), &key()).is_ok());
    }

    #[test]
    fn derived_keys_differ_by_label_and_secret() {
        let a = ReportMacKey::derive(b"secret", b"one");
        assert_ne!(a, ReportMacKey::derive(b"secret", b"two"));
        assert_ne!(a, ReportMacKey::derive(b"other", b"one"));
        assert_eq!(format!("{a:?}"), "ReportMacKey(..)");
    }
}
