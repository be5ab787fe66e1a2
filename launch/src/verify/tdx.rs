//! Verifying a TDX DCAP quote as a relying party: quotes of version 4 (TD 1.0 body)
//! and 5 (TD 1.0, TD 1.5 and TD 1.5ex bodies) parsed into typed structures, and
//! verified offline by the `dcap-qvl` crate (the quote's signature by the attestation
//! key, the QE report and its signature by the PCK, the QE report's binding of the
//! attestation key, the PCK chain up to Intel's SGX root CA or a given root, and the
//! collateral: TCB info, QE identity and CRLs, each signed and within its dates).
//!
//! | offset | field |
//! |---|---|
//! | 0 | header (48 bytes): version u16, attestation key type u16, TEE type u32, QE SVN u16, PCE SVN u16, QE vendor id\[16\], user data\[20\] |
//! | 48 | v4: TD report (584 bytes); v5: body type u16, body size u32, TD report (584, 648 or 885 bytes) |
//! | signed end | signature data length u32, then the signature data (ECDSA signature, attestation key, certification data) |
//!
//! A quote ends where its signature data ends: bytes after that (buffers padded by
//! the quote generator, test files with junk appended) are not part of the quote,
//! are not signed, and are ignored; [`TdxQuote::trailing`] says how many there were.

use dcap_qvl::quote::{AuthData, Quote, Report};
use thiserror::Error;
use x509_cert::der::{Decode, Encode};

use super::{expect_eq, Check, Expectations, Verdict};
use crate::bytes::{le_u16, le_u32};

/// Size of the quote header.
pub const HEADER_LEN: usize = 48;
/// TEE type of a TDX quote.
pub const TEE_TYPE_TDX: u32 = 0x81;
/// Attestation key type ECDSA-256 with P-256, the only one DCAP uses.
pub const ATT_KEY_ECDSA_P256: u16 = 2;
/// TD attributes bit 0: DEBUG (the TD's state is visible to the host).
const TD_ATTR_DEBUG: u8 = 1;

/// Errors from parsing a quote, its collateral or a root certificate.
#[derive(Debug, Error)]
pub enum TdxError {
    /// The quote is shorter than its header or than its own lengths say.
    #[error("the TDX quote is {len} bytes, shorter than the {need} its {what} needs")]
    Truncated {
        /// Length given.
        len: usize,
        /// Length needed.
        need: usize,
        /// What needs it.
        what: &'static str,
    },
    /// A quote version other than 4 and 5.
    #[error("TDX quote version {0} is not supported (4 and 5 are)")]
    UnsupportedVersion(u16),
    /// A quote of another TEE (SGX).
    #[error("the quote's TEE type is {0:#x}, not TDX (0x81)")]
    NotTdx(u32),
    /// An attestation key type other than ECDSA P-256.
    #[error("attestation key type {0} is not supported (2: ECDSA P-256 is)")]
    UnsupportedKeyType(u16),
    /// A v5 body type that is not a TD report.
    #[error("TDX quote v5 body type {0} is not a TD report (2, 3 or 4)")]
    UnsupportedBodyType(u16),
    /// dcap-qvl could not parse the quote.
    #[error("malformed TDX quote: {0}")]
    Parse(String),
    /// The collateral JSON could not be read.
    #[error("malformed TDX collateral JSON: {0}")]
    Collateral(String),
    /// The root certificate could not be read.
    #[error("invalid root certificate: {0}")]
    Root(String),
}

/// The quote header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuoteHeader {
    /// 4 or 5.
    pub version: u16,
    /// [`ATT_KEY_ECDSA_P256`].
    pub attestation_key_type: u16,
    /// [`TEE_TYPE_TDX`].
    pub tee_type: u32,
    /// The quoting enclave's SVN.
    pub qe_svn: u16,
    /// The provisioning certification enclave's SVN.
    pub pce_svn: u16,
    /// The QE vendor (Intel's: 939a7233f79c4ca9940a0db3957f0607).
    pub qe_vendor_id: [u8; 16],
    /// QE-defined data (its first 16 bytes: the QE id).
    pub user_data: [u8; 20],
}

/// Which TD report the quote carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyType {
    /// TDX 1.0 (quote v4, or v5 body type 2).
    Td10,
    /// TDX 1.5 (v5 body type 3): adds TEE_TCB_SVN2 and MRSERVICETD.
    Td15,
    /// TDX 1.5 with the extended fields (v5 body type 4).
    Td15Ex,
}

impl BodyType {
    /// "TD10", "TD15" or "TD15Ex".
    pub fn name(self) -> &'static str {
        match self {
            Self::Td10 => "TD10",
            Self::Td15 => "TD15",
            Self::Td15Ex => "TD15Ex",
        }
    }
}

/// The TD report in a quote (the fields every body type has, and TD 1.5's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TdReport {
    /// TEE_TCB_SVN: the TDX module's and its loader's SVNs.
    pub tee_tcb_svn: [u8; 16],
    /// MRSEAM: the TDX module's measurement.
    pub mr_seam: [u8; 48],
    /// MRSIGNERSEAM (zero for Intel's module).
    pub mr_signer_seam: [u8; 48],
    /// SEAMATTRIBUTES.
    pub seam_attributes: [u8; 8],
    /// TDATTRIBUTES (bit 0: DEBUG).
    pub td_attributes: [u8; 8],
    /// XFAM.
    pub xfam: [u8; 8],
    /// MRTD: the TD's build-time measurement.
    pub mr_td: [u8; 48],
    /// MRCONFIGID.
    pub mr_config_id: [u8; 48],
    /// MROWNER.
    pub mr_owner: [u8; 48],
    /// MROWNERCONFIG.
    pub mr_owner_config: [u8; 48],
    /// RTMR0..RTMR3.
    pub rtmr: [[u8; 48]; 4],
    /// REPORTDATA.
    pub report_data: [u8; 64],
    /// TD 1.5: TEE_TCB_SVN2 (the current module's).
    pub tee_tcb_svn2: Option<[u8; 16]>,
    /// TD 1.5: MRSERVICETD.
    pub mr_service_td: Option<[u8; 48]>,
}

/// A parsed TDX quote.
#[derive(Debug, Clone)]
pub struct TdxQuote {
    raw: Vec<u8>,
    quote: Quote,
    /// The header.
    pub header: QuoteHeader,
    /// The TD report's type.
    pub body_type: BodyType,
    /// The TD report.
    pub td: TdReport,
    /// How many bytes followed the quote in the input (ignored).
    pub trailing: usize,
}

/// Whether `bytes` start like a DCAP quote (version 4 or 5, an ECDSA key type, TEE
/// type TDX or SGX). An SNP report starts with a 32-bit version, so its bytes 2..4 are
/// zero where a quote has its key type.
pub fn looks_like_quote(bytes: &[u8]) -> bool {
    let Some(h) = bytes.get(..8) else { return false };
    let (version, key, tee) = (le_u16(h, 0), le_u16(h, 2), le_u32(h, 4));
    matches!(version, 4 | 5) && matches!(key, 2 | 3) && matches!(tee, TEE_TYPE_TDX | 0)
}

impl TdxQuote {
    /// Parses a quote; bytes after its end are counted in [`Self::trailing`].
    pub fn parse(bytes: &[u8]) -> Result<Self, TdxError> {
        let len = bytes.len();
        let need = |need: usize, what| if len < need { Err(TdxError::Truncated { len, need, what }) } else { Ok(()) };
        need(HEADER_LEN, "header")?;
        let version = le_u16(bytes, 0);
        if !matches!(version, 4 | 5) {
            return Err(TdxError::UnsupportedVersion(version));
        }
        let key_type = le_u16(bytes, 2);
        let tee_type = le_u32(bytes, 4);
        if tee_type != TEE_TYPE_TDX {
            return Err(TdxError::NotTdx(tee_type));
        }
        if key_type != ATT_KEY_ECDSA_P256 {
            return Err(TdxError::UnsupportedKeyType(key_type));
        }
        let signed_len = if version == 4 {
            HEADER_LEN + 584
        } else {
            need(HEADER_LEN + 6, "v5 body header")?;
            let body_type = le_u16(bytes, HEADER_LEN);
            if !matches!(body_type, 2..=4) {
                return Err(TdxError::UnsupportedBodyType(body_type));
            }
            HEADER_LEN + 6 + le_u32(bytes, HEADER_LEN + 2) as usize
        };
        need(signed_len.saturating_add(4), "TD report")?;
        let quote_len = signed_len.saturating_add(4).saturating_add(le_u32(bytes, signed_len) as usize);
        need(quote_len, "signature data length")?;
        let raw = &bytes[..quote_len];
        let quote = Quote::parse(raw).map_err(|e| TdxError::Parse(format!("{e:#}")))?;
        if quote.signed_length() != signed_len {
            return Err(TdxError::Parse(format!(
                "the body ends at {} but its size field says {signed_len}",
                quote.signed_length()
            )));
        }
        let h = &quote.header;
        let header = QuoteHeader {
            version: h.version,
            attestation_key_type: h.attestation_key_type,
            tee_type: h.tee_type,
            qe_svn: h.qe_svn,
            pce_svn: h.pce_svn,
            qe_vendor_id: h.qe_vendor_id,
            user_data: h.user_data,
        };
        let (body_type, base, td15) = match &quote.report {
            Report::TD10(r) => (BodyType::Td10, r, None),
            Report::TD15(r) => (BodyType::Td15, &r.base, Some(r)),
            Report::TD15Ex(r) => (BodyType::Td15Ex, &r.base.base, Some(&r.base)),
            Report::SgxEnclave(_) => return Err(TdxError::NotTdx(0)),
        };
        let td = TdReport {
            tee_tcb_svn: base.tee_tcb_svn,
            mr_seam: base.mr_seam,
            mr_signer_seam: base.mr_signer_seam,
            seam_attributes: base.seam_attributes,
            td_attributes: base.td_attributes,
            xfam: base.xfam,
            mr_td: base.mr_td,
            mr_config_id: base.mr_config_id,
            mr_owner: base.mr_owner,
            mr_owner_config: base.mr_owner_config,
            rtmr: [base.rt_mr0, base.rt_mr1, base.rt_mr2, base.rt_mr3],
            report_data: base.report_data,
            tee_tcb_svn2: td15.map(|r| r.tee_tcb_svn2),
            mr_service_td: td15.map(|r| r.mr_service_td),
        };
        Ok(Self { raw: raw.to_vec(), quote, header, body_type, td, trailing: len - quote_len })
    }

    /// The quote's bytes (without trailing bytes).
    pub fn bytes(&self) -> &[u8] {
        &self.raw
    }

    /// Whether TD attribute DEBUG is set.
    pub fn debug(&self) -> bool {
        self.td.td_attributes[0] & TD_ATTR_DEBUG != 0
    }

    /// Every field as JSON (byte strings as lowercase hex).
    pub fn to_json(&self) -> serde_json::Value {
        let h = &self.header;
        let td = &self.td;
        let mut body = serde_json::json!({
            "tee_tcb_svn": hex::encode(td.tee_tcb_svn),
            "mr_seam": hex::encode(td.mr_seam),
            "mr_signer_seam": hex::encode(td.mr_signer_seam),
            "seam_attributes": hex::encode(td.seam_attributes),
            "td_attributes": hex::encode(td.td_attributes),
            "debug": self.debug(),
            "xfam": hex::encode(td.xfam),
            "mr_td": hex::encode(td.mr_td),
            "mr_config_id": hex::encode(td.mr_config_id),
            "mr_owner": hex::encode(td.mr_owner),
            "mr_owner_config": hex::encode(td.mr_owner_config),
            "rtmr0": hex::encode(td.rtmr[0]),
            "rtmr1": hex::encode(td.rtmr[1]),
            "rtmr2": hex::encode(td.rtmr[2]),
            "rtmr3": hex::encode(td.rtmr[3]),
            "report_data": hex::encode(td.report_data),
        });
        if let (Some(svn2), Some(st)) = (td.tee_tcb_svn2, td.mr_service_td) {
            body["tee_tcb_svn2"] = hex::encode(svn2).into();
            body["mr_service_td"] = hex::encode(st).into();
        }
        let auth = match &self.quote.auth_data {
            AuthData::V3(a) => serde_json::json!({
                "ecdsa_signature": hex::encode(a.ecdsa_signature),
                "attestation_key": hex::encode(a.ecdsa_attestation_key),
            }),
            AuthData::V4(a) => serde_json::json!({
                "ecdsa_signature": hex::encode(a.ecdsa_signature),
                "attestation_key": hex::encode(a.ecdsa_attestation_key),
                "certification_data_type": a.certification_data.cert_type,
            }),
        };
        let v3 = self.quote.auth_data.clone().into_v3();
        let mut qe = serde_json::json!({
            "qe_report": hex::encode(v3.qe_report),
            "qe_report_signature": hex::encode(v3.qe_report_signature),
            "qe_auth_data": hex::encode(&v3.qe_auth_data.data),
            "certification_data_type": v3.certification_data.cert_type,
        });
        // The QE report is an SGX REPORT body: MRENCLAVE at 64, MRSIGNER at 128,
        // ISVPRODID at 256, ISVSVN at 258, REPORTDATA at 320.
        let qr = &v3.qe_report;
        qe["mr_enclave"] = hex::encode(&qr[64..96]).into();
        qe["mr_signer"] = hex::encode(&qr[128..160]).into();
        qe["isv_prod_id"] = le_u16(qr, 256).into();
        qe["isv_svn"] = le_u16(qr, 258).into();
        qe["report_data"] = hex::encode(&qr[320..384]).into();
        if v3.certification_data.cert_type == 5 {
            let pem = String::from_utf8_lossy(&v3.certification_data.body.data);
            qe["pck_chain_certificates"] = pem.matches("-----BEGIN CERTIFICATE-----").count().into();
        }
        let mut auth = auth;
        auth["qe"] = qe;
        serde_json::json!({
            "tee": "tdx",
            "header": {
                "version": h.version,
                "attestation_key_type": h.attestation_key_type,
                "tee_type": format!("{:#x}", h.tee_type),
                "qe_svn": h.qe_svn,
                "pce_svn": h.pce_svn,
                "qe_vendor_id": hex::encode(h.qe_vendor_id),
                "user_data": hex::encode(h.user_data),
            },
            "body_type": self.body_type.name(),
            "td_report": body,
            "signature_data": auth,
            "quote_len": self.raw.len(),
            "trailing_bytes": self.trailing,
        })
    }
}

/// Collateral for a quote: Intel's TCB info, QE identity, CRLs and their issuer
/// chains (the `QuoteCollateralV3` JSON dcap-qvl and Phala's PCCS client write).
#[derive(Debug, Clone)]
pub struct Collateral(dcap_qvl::QuoteCollateralV3);

impl Collateral {
    /// Parses the collateral JSON.
    pub fn from_json(bytes: &[u8]) -> Result<Self, TdxError> {
        serde_json::from_slice(bytes).map(Self).map_err(|e| TdxError::Collateral(e.to_string()))
    }
}

/// A root certificate (PEM or DER) as DER, checked to parse as X.509.
pub fn root_from_bytes(bytes: &[u8]) -> Result<Vec<u8>, TdxError> {
    let cert = super::snp::certs_from_bytes(bytes, "root")
        .map_err(|e| TdxError::Root(e.to_string()))?
        .into_iter()
        .next()
        .ok_or_else(|| TdxError::Root("no certificate".into()))?;
    let der = cert.to_der().map_err(|e| TdxError::Root(e.to_string()))?;
    // Round trip: the DER is what was given (for DER input) or its decoding.
    x509_cert::Certificate::from_der(&der).map_err(|e| TdxError::Root(e.to_string()))?;
    Ok(der)
}

/// How to verify a TDX quote.
#[derive(Debug, Clone, Default)]
pub struct TdxVerifyOptions {
    /// The collateral; without it the quote cannot be verified.
    pub collateral: Option<Collateral>,
    /// The root CA (DER); `None` trusts Intel's SGX root CA (built into dcap-qvl).
    pub root: Option<Vec<u8>>,
    /// The time collateral and certificates must be valid at (seconds since 1970).
    pub now: u64,
}

/// Verifies `quote` as [`TdxVerifyOptions`] say and checks `exp`: the quote with its
/// collateral (one check), its TCB status, debug, then one check per expectation.
pub fn verify(quote: &TdxQuote, opts: &TdxVerifyOptions, exp: &Expectations) -> Verdict {
    let mut v = Verdict::default();
    let root_name = if opts.root.is_some() { "the given root" } else { "Intel's SGX root CA (built in)" };
    if quote.trailing > 0 {
        v.push(Check::pass(
            "tdx.length",
            format!(
                "the quote is {} bytes; the {} bytes after it are not signed and were ignored",
                quote.raw.len(),
                quote.trailing
            ),
        ));
    }
    let verified = match &opts.collateral {
        None => Err("no collateral (TCB info, QE identity, CRLs) to verify the quote with".to_string()),
        Some(Collateral(c)) => {
            let verifier = match &opts.root {
                Some(der) => dcap_qvl::verify::QuoteVerifier::new(der.clone()),
                None => dcap_qvl::verify::QuoteVerifier::new_prod(),
            };
            // Debug TDs are judged below, as an expectation of their own.
            verifier.allow_debug(true).verify(&quote.raw, c, opts.now).map_err(|e| format!("{e:#}"))
        }
    };
    match &verified {
        Ok(_) => v.push(Check::pass(
            "tdx.quote",
            format!(
                "quote signature, QE report and its signature, PCK chain to {root_name}, TCB info, QE identity and CRLs verify"
            ),
        )),
        Err(e) => v.push(Check::fail("tdx.quote", format!("{e} (root: {root_name})"))),
    }
    let accepted = |s: &str| s == "UpToDate" || exp.tdx_accepted_tcb_status.iter().any(|a| a == s);
    v.push(match &verified {
        Ok(r) => {
            let adv = if r.advisory_ids.is_empty() {
                String::new()
            } else {
                format!(", advisories {}", r.advisory_ids.join(" "))
            };
            let ok = accepted(&r.status);
            Check::new(
                "tdx.tcb_status",
                ok,
                format!("TCB status {}{adv}{}", r.status, if ok { "" } else { ", not accepted" }),
            )
        }
        Err(_) => Check::fail("tdx.tcb_status", "not evaluated: the quote did not verify"),
    });
    expectations(quote, exp, &mut v);
    v
}

fn expectations(quote: &TdxQuote, exp: &Expectations, v: &mut Verdict) {
    let td = &quote.td;
    v.push(match (quote.debug(), exp.allow_debug) {
        (false, _) => Check::pass("debug", "TD attribute DEBUG is clear"),
        (true, true) => Check::pass("debug", "TD attribute DEBUG is set (allowed)"),
        (true, false) => Check::fail("debug", "TD attribute DEBUG is set: the host can read the TD; not allowed"),
    });
    if let Some(m) = &exp.measurement {
        v.push(expect_eq("measurement", m, &td.mr_td));
    }
    if let Some(d) = &exp.report_data {
        v.push(expect_eq("report_data", d, &td.report_data));
    }
    for (i, want) in exp.rtmrs.iter().enumerate() {
        if let Some(want) = want {
            v.push(expect_eq(&format!("rtmr{i}"), want, &td.rtmr[i]));
        }
    }
    for (name, want, found) in [
        ("mr_config_id", &exp.mr_config_id, &td.mr_config_id),
        ("mr_owner", &exp.mr_owner, &td.mr_owner),
        ("mr_owner_config", &exp.mr_owner_config, &td.mr_owner_config),
    ] {
        if let Some(want) = want {
            v.push(expect_eq(name, want, found));
        }
    }
    if let Some(min) = &exp.tdx_min_tee_tcb_svn {
        let ok = td.tee_tcb_svn.iter().zip(min).all(|(have, need)| have >= need);
        v.push(Check::new(
            "min_tee_tcb_svn",
            ok,
            format!(
                "TEE_TCB_SVN {} {} the minimum {}",
                hex::encode(td.tee_tcb_svn),
                if ok { "meets" } else { "is below" },
                hex::encode(min)
            ),
        ));
    }
    for name in exp.snp_only() {
        v.push(Check::fail(name, "an SEV-SNP expectation; the evidence is a TDX quote"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REFS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/refs/attestation/");
    /// 2025-06-20T00:00:00Z: inside the dcap-qvl sample collateral's validity
    /// (issued 2025-06-19, next update 2025-07-19).
    const NOW: u64 = 1_750_377_600;

    fn read(name: &str) -> Vec<u8> {
        std::fs::read(format!("{REFS}{name}")).unwrap()
    }

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }

    fn sample() -> (TdxQuote, TdxVerifyOptions) {
        let q = TdxQuote::parse(&read("dcap-qvl__sample_tdx_quote")).unwrap();
        let c = Collateral::from_json(&read("dcap-qvl__sample_tdx_quote_collateral.json")).unwrap();
        (q, TdxVerifyOptions { collateral: Some(c), root: None, now: NOW })
    }

    #[test]
    fn go_tdx_guest_spr_quote_fields_equal_the_values_its_tests_state() {
        let q = TdxQuote::parse(&read("go-tdx-guest__testing_testdata_tdx_prod_quote_SPR_E4.dat")).unwrap();
        assert_eq!(q.trailing, 39, "the file's junk tail");
        assert_eq!(q.bytes().len(), 4935);
        assert_eq!((q.header.version, q.header.attestation_key_type, q.header.tee_type), (4, 2, 0x81));
        assert_eq!((q.header.qe_svn, q.header.pce_svn), (0, 0));
        assert_eq!(q.header.qe_vendor_id.to_vec(), h("939a7233f79c4ca9940a0db3957f0607"));
        assert_eq!(q.body_type, BodyType::Td10);
        let td = &q.td;
        assert_eq!(td.tee_tcb_svn.to_vec(), h("03000400000000000000000000000000"));
        assert_eq!(
            td.mr_seam.to_vec(),
            h("2fd279c16164a93dd5bf373d834328d46008c2b693af9ebb865b08b2ced320c9a89b4869a9fab60fbe9d0c5a5363c656")
        );
        assert_eq!(td.td_attributes.to_vec(), h("0000004000000000"));
        assert_eq!(td.xfam.to_vec(), h("e71a060000000000"));
        assert_eq!(
            td.mr_td.to_vec(),
            h("6363b8043668a3ad953278e10389574d326c6749fb78aa810ecd9336923db86f22fc00b8dcd404bc10d5e119d7215cbb")
        );
        assert_eq!((td.mr_config_id, td.mr_owner, td.mr_owner_config), ([0; 48], [0; 48], [0; 48]));
        assert_eq!(
            td.rtmr[0].to_vec(),
            h("2927da70461cd63266f43230cc1849c03ef25ebe490062a801d8fcc80af42976823adf08f833c1e50b51779c6593f32a")
        );
        assert_eq!(
            td.rtmr[1].to_vec(),
            h("2c700b8ba9b85783f8be9fb9443647bdc0bb3c50747f06297cc6538c25a5f589c4b56d035c59107c6bc5800db2cacb61")
        );
        assert_eq!(
            td.rtmr[2].to_vec(),
            h("8652f0caaba7e215ea442dc36a4499d8fec3362f3a0b2ca151cbe4b3e6466fe59c7368b3c2287fc7c3bf5c924eb4424e")
        );
        assert_eq!(td.rtmr[3], [0; 48]);
        assert_eq!(
            td.report_data.to_vec(),
            h("6c62dec1b8191749a31dab490be532a35944dea47caef1f980863993d9899545eb7406a38d1eed313b987a467dacead6f0c87a6d766c66f6f29f8acb281f1113")
        );
        assert!(!q.debug());
        let j = q.to_json();
        assert_eq!(j["trailing_bytes"], 39);
        assert_eq!(j["signature_data"]["qe"]["pck_chain_certificates"], 3);
    }

    #[test]
    fn go_tdx_guest_v5_quote_has_a_td15_body() {
        let q = TdxQuote::parse(&read("go-tdx-guest__testing_testdata_quote_v5_sample.dat")).unwrap();
        assert_eq!((q.header.version, q.body_type), (5, BodyType::Td15));
        assert_eq!(
            q.td.mr_td.to_vec(),
            h("7348651a34b2d2d3462822e3a750ec6110125f36757c78480bbfc69cc0d21fb001a1ced3ee19747dda8f750c3bc8f876")
        );
        assert!(q.td.tee_tcb_svn2.is_some() && q.td.mr_service_td.is_some());
        // README: signature data 4300 bytes after the 54 + 648 signed ones.
        assert_eq!(q.bytes().len(), 54 + 648 + 4 + 4300);
        assert_eq!(q.trailing, 5006 - q.bytes().len());
    }

    #[test]
    fn dcap_qvl_sample_quote_verifies_with_its_collateral() {
        let (q, opts) = sample();
        assert_eq!(q.trailing, 70);
        assert_eq!(
            q.td.mr_td.to_vec(),
            h("91eb2b44d141d4ece09f0c75c2c53d247a3c68edd7fafe8a3520c942a604a407de03ae6dc5f87f27428b2538873118b7")
        );
        let exp = Expectations { measurement: Some(q.td.mr_td), ..Default::default() };
        let v = verify(&q, &opts, &exp);
        assert!(v.passed(), "{:#?}", v.checks);
        assert_eq!(v.get("tdx.tcb_status").unwrap().detail, "TCB status UpToDate");
    }

    #[test]
    fn dcap_qvl_sample_quote_verifies_with_intels_root_given() {
        let (q, mut opts) = sample();
        opts.root = Some(root_from_bytes(&read("go-tdx-guest__verify_trusted_root.pem")).unwrap());
        let v = verify(&q, &opts, &Expectations::default());
        assert!(v.passed(), "{:#?}", v.checks);
    }

    #[test]
    fn dcap_qvl_sample_quote_fails_with_another_root() {
        let (q, mut opts) = sample();
        opts.root = Some(root_from_bytes(&read("virtee-sev__src_certs_snp_builtin_milan_ark.pem")).unwrap());
        let v = verify(&q, &opts, &Expectations::default());
        assert_eq!(v.failed(), ["tdx.quote", "tdx.tcb_status"]);
    }

    #[test]
    fn dcap_qvl_sample_quote_fails_outside_the_collaterals_validity() {
        let (q, mut opts) = sample();
        opts.now = 1_800_000_000; // 2027
        let v = verify(&q, &opts, &Expectations::default());
        assert_eq!(v.failed(), ["tdx.quote", "tdx.tcb_status"]);
    }

    #[test]
    fn a_flipped_byte_in_the_signed_quote_fails() {
        let (q, opts) = sample();
        for off in [0x30 + 136, 0x30 + 520, 10] {
            let mut b = q.bytes().to_vec();
            b[off] ^= 1;
            let forged = TdxQuote::parse(&b).unwrap();
            let v = verify(&forged, &opts, &Expectations::default());
            assert!(v.failed().contains(&"tdx.quote"), "offset {off}: {:#?}", v.checks);
        }
    }

    #[test]
    fn a_quote_without_collateral_fails() {
        let (q, _) = sample();
        let v = verify(&q, &TdxVerifyOptions { now: NOW, ..Default::default() }, &Expectations::default());
        assert_eq!(v.failed(), ["tdx.quote", "tdx.tcb_status"]);
    }

    #[test]
    fn another_platforms_collateral_fails() {
        let q = TdxQuote::parse(&read("go-tdx-guest__testing_testdata_tdx_prod_quote_SPR_E4.dat")).unwrap();
        let (_, opts) = sample();
        let v = verify(&q, &opts, &Expectations::default());
        assert!(v.failed().contains(&"tdx.quote"), "{:#?}", v.checks);
    }

    #[test]
    fn expectations_pass_when_met_and_fail_when_not() {
        let q = TdxQuote::parse(&read("go-tdx-guest__testing_testdata_tdx_prod_quote_SPR_E4.dat")).unwrap();
        let mut exp = Expectations {
            measurement: Some(q.td.mr_td),
            report_data: Some(q.td.report_data),
            rtmrs: [Some(q.td.rtmr[0]), Some(q.td.rtmr[1]), Some(q.td.rtmr[2]), Some([0; 48])],
            mr_config_id: Some([0; 48]),
            mr_owner: Some([0; 48]),
            mr_owner_config: Some([0; 48]),
            tdx_min_tee_tcb_svn: Some([3, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            ..Default::default()
        };
        let mut v = Verdict::default();
        expectations(&q, &exp, &mut v);
        assert!(v.passed(), "{:#?}", v.checks);
        exp.measurement.as_mut().unwrap()[47] ^= 1;
        exp.rtmrs[3] = Some([1; 48]);
        exp.mr_owner = Some([2; 48]);
        exp.tdx_min_tee_tcb_svn = Some([3, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        exp.host_data = Some([0; 32]);
        let mut v = Verdict::default();
        expectations(&q, &exp, &mut v);
        assert_eq!(v.failed(), ["measurement", "rtmr3", "mr_owner", "min_tee_tcb_svn", "host_data"]);
    }

    #[test]
    fn a_debug_td_fails_unless_allowed() {
        let mut b = read("go-tdx-guest__testing_testdata_tdx_prod_quote_SPR_E4.dat");
        b[HEADER_LEN + 16 + 48 + 48 + 8] |= 1; // td_attributes byte 0
        let q = TdxQuote::parse(&b).unwrap();
        assert!(q.debug());
        let mut v = Verdict::default();
        expectations(&q, &Expectations::default(), &mut v);
        assert_eq!(v.failed(), ["debug"]);
        let mut v = Verdict::default();
        expectations(&q, &Expectations { allow_debug: true, ..Default::default() }, &mut v);
        assert!(v.passed());
    }

    #[test]
    fn malformed_quotes_are_rejected_with_the_reason() {
        let good = read("go-tdx-guest__testing_testdata_tdx_prod_quote_SPR_E4.dat");
        assert!(matches!(TdxQuote::parse(&good[..40]), Err(TdxError::Truncated { what: "header", .. })));
        assert!(matches!(TdxQuote::parse(&good[..600]), Err(TdxError::Truncated { what: "TD report", .. })));
        assert!(matches!(
            TdxQuote::parse(&good[..4000]),
            Err(TdxError::Truncated { what: "signature data length", .. })
        ));
        let mut b = good.clone();
        b[0] = 3;
        assert!(matches!(TdxQuote::parse(&b), Err(TdxError::UnsupportedVersion(3))));
        let mut b = good.clone();
        b[4] = 0;
        assert!(matches!(TdxQuote::parse(&b), Err(TdxError::NotTdx(0))));
        let mut b = good.clone();
        b[2] = 3;
        assert!(matches!(TdxQuote::parse(&b), Err(TdxError::UnsupportedKeyType(3))));
        // A signature data length past the end.
        let mut b = good.clone();
        b[632..636].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(TdxQuote::parse(&b), Err(TdxError::Truncated { .. })));
        // A signature data length that cuts the certification data short.
        let mut b = good.clone();
        b[632..636].copy_from_slice(&1000u32.to_le_bytes());
        assert!(matches!(TdxQuote::parse(&b), Err(TdxError::Parse(_))));
        // A v5 body of an unknown type and one whose size disagrees with its type.
        let v5 = read("go-tdx-guest__testing_testdata_quote_v5_sample.dat");
        let mut b = v5.clone();
        b[48] = 9;
        assert!(matches!(TdxQuote::parse(&b), Err(TdxError::UnsupportedBodyType(9))));
        let mut b = v5.clone();
        b[50] = b[50].wrapping_sub(8);
        assert!(TdxQuote::parse(&b).is_err());
    }

    #[test]
    fn garbage_collateral_and_roots_are_rejected() {
        assert!(matches!(Collateral::from_json(b"{}"), Err(TdxError::Collateral(_))));
        assert!(matches!(Collateral::from_json(b"not json"), Err(TdxError::Collateral(_))));
        assert!(matches!(root_from_bytes(b"garbage"), Err(TdxError::Root(_))));
    }

    #[test]
    fn the_emulated_platforms_quote_verifies_with_its_root_and_fails_with_intels() {
        // Arrange: a quote from the emulated quoting enclave and collateral signed by
        // the emulated chain (launch::tdx::quote's test helpers).
        use crate::tdx::quote::collateral_tests::{collateral, fmspc, quote_bytes};
        let chain = crate::tdx::certs::tests_chain();
        let quote = TdxQuote::parse(&quote_bytes(chain)).unwrap();
        let emulated = TdxVerifyOptions {
            collateral: Some(Collateral(collateral(chain, &fmspc(chain)))),
            root: Some(chain.root_der().to_vec()),
            now: super::super::now_secs(),
        };
        let exp = Expectations { measurement: Some([0x4d; 48]), report_data: Some([0xda; 64]), ..Default::default() };
        // Act + assert: the emulated root verifies it, Intel's (the default) does not.
        let v = verify(&quote, &emulated, &exp);
        assert!(v.passed(), "{:#?}", v.checks);
        let intel = TdxVerifyOptions { root: None, ..emulated };
        assert_eq!(verify(&quote, &intel, &exp).failed(), ["tdx.quote", "tdx.tcb_status"]);
    }
}
