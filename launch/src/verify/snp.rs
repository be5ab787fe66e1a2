//! Verifying an SEV-SNP attestation report as a relying party: the report (versions 2
//! to 5, parsed by the `sev` crate), its signature by the VCEK or VLEK, the chain
//! VCEK → ASK → ARK (or VLEK → ASVK → ARK) up to AMD's root for the product (Milan,
//! Genoa, Turin: the ARKs built into the `sev` crate) or a root given by the caller,
//! and the TCB and chip id in the report versus the certificate's (AMD 57230, "VCEK
//! Certificate and KDS Interface Specification").
//!
//! The signature is checked over the report's own first 0x2A0 bytes (not over a
//! re-encoding), so every signed byte counts, reserved ones included.

use std::path::{Path, PathBuf};

use p384::ecdsa::signature::DigestVerifier;
use p384::ecdsa::{Signature, VerifyingKey};
use sev::certs::snp::Verifiable;
use sev::firmware::guest::AttestationReport;
use sev::firmware::host::TcbVersion;
use sev::parser::ByteParser;
use sha2::{Digest, Sha384};
use thiserror::Error;
use x509_cert::der::{Decode, DecodePem};
use x509_cert::spki::ObjectIdentifier;
use x509_cert::Certificate;

use super::{expect_eq, Check, Expectations, Verdict};
use crate::bytes::le_u64;
use crate::snp::certs::oid;
use crate::snp::guest_msg::{cert_guid, parse_cert_table};
use crate::x509::attr;

/// Size of an ATTESTATION_REPORT.
pub const REPORT_SIZE: usize = 0x4A0;
/// The signature covers bytes `0..SIGNED_LEN`.
pub const SIGNED_LEN: usize = 0x2A0;
/// The report versions this verifier reads.
pub const VERSIONS: std::ops::RangeInclusive<u32> = 2..=5;
/// GUID of a VLEK in the extended request's certificate table:
/// a8074bc2-a25a-483e-aae6-39c045a0b8a1 (GHCB specification, "SNP Extended Guest Request").
pub const VLEK_GUID: [u8; 16] =
    [0xa8, 0x07, 0x4b, 0xc2, 0xa2, 0x5a, 0x48, 0x3e, 0xaa, 0xe6, 0x39, 0xc0, 0x45, 0xa0, 0xb8, 0xa1];

/// Guest policy bit 19: DEBUG.
const POLICY_DEBUG: u64 = 1 << 19;
/// Offsets of the four TCB fields (current, reported, committed, launch).
const OFF_CURRENT_TCB: usize = 0x38;
const OFF_REPORTED_TCB: usize = 0x180;
const OFF_COMMITTED_TCB: usize = 0x1E0;
const OFF_LAUNCH_TCB: usize = 0x1F0;
const OFF_CHIP_ID: usize = 0x1A0;
const OFF_SIG_R: usize = SIGNED_LEN;
const SIG_COMPONENT_LEN: usize = 72;
const SCALAR_LEN: usize = 48;

/// Errors from parsing a report or reading certificates.
#[derive(Debug, Error)]
pub enum SnpError {
    /// The report is not [`REPORT_SIZE`] bytes.
    #[error("an SEV-SNP attestation report is {REPORT_SIZE} bytes, not {len}")]
    WrongSize {
        /// Length given.
        len: usize,
    },
    /// A version outside [`VERSIONS`].
    #[error("SEV-SNP attestation report version {0} is not supported (2 to 5 are)")]
    UnsupportedVersion(u32),
    /// The `sev` crate could not parse the report.
    #[error("malformed SEV-SNP attestation report: {0}")]
    Parse(String),
    /// A certificate file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A certificate (or file of them) that is not a certificate AMD's chain has.
    #[error("invalid certificate {what}: {reason}")]
    Certificate {
        /// Where it came from.
        what: String,
        /// What is wrong.
        reason: String,
    },
    /// A malformed certificate table.
    #[error("malformed certificate table: {0}")]
    CertTable(String),
    /// An unknown product name.
    #[error("unknown AMD product '{0}' (milan, genoa or turin)")]
    UnknownProduct(String),
    /// A malformed minimum TCB.
    #[error("invalid minimum TCB '{value}': {reason}")]
    MinTcb {
        /// The value given.
        value: String,
        /// What is wrong.
        reason: String,
    },
}

/// An AMD EPYC generation whose ARK the `sev` crate carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Product {
    /// 3rd generation (Milan).
    Milan,
    /// 4th generation (Genoa).
    Genoa,
    /// 5th generation (Turin).
    Turin,
}

impl Product {
    /// The name AMD's key server and certificates use.
    pub fn name(self) -> &'static str {
        match self {
            Self::Milan => "Milan",
            Self::Genoa => "Genoa",
            Self::Turin => "Turin",
        }
    }

    /// Parses a product name, case-insensitively; a stepping suffix ("Milan-B0", the
    /// VCEK's productName) is ignored.
    pub fn parse(s: &str) -> Result<Self, SnpError> {
        let base = s.split('-').next().unwrap_or_default();
        match base.to_ascii_lowercase().as_str() {
            "milan" => Ok(Self::Milan),
            "genoa" => Ok(Self::Genoa),
            "turin" => Ok(Self::Turin),
            _ => Err(SnpError::UnknownProduct(s.to_string())),
        }
    }

    /// AMD's ARK and ASK for this product, as the `sev` crate carries them (PEM).
    fn builtin_pems(self) -> (&'static [u8], &'static [u8]) {
        use sev::certs::snp::builtin::{genoa, milan, turin};
        match self {
            Self::Milan => (milan::ARK, milan::ASK),
            Self::Genoa => (genoa::ARK, genoa::ASK),
            Self::Turin => (turin::ARK, turin::ASK),
        }
    }

    /// AMD's ARK for this product.
    pub fn ark(self) -> Result<Certificate, SnpError> {
        pem_cert(self.builtin_pems().0, &format!("built-in {} ARK", self.name()))
    }

    /// AMD's ASK for this product.
    pub fn ask(self) -> Result<Certificate, SnpError> {
        pem_cert(self.builtin_pems().1, &format!("built-in {} ASK", self.name()))
    }

    /// The product of a report of version 3 or later, from its CPUID family and model.
    fn of_cpuid(family: u8, model: u8) -> Option<Self> {
        match sev::Generation::identify_cpu(family, model).ok()? {
            sev::Generation::Milan => Some(Self::Milan),
            sev::Generation::Genoa => Some(Self::Genoa),
            sev::Generation::Turin => Some(Self::Turin),
            _ => None,
        }
    }
}

fn pem_cert(pem: &[u8], what: &str) -> Result<Certificate, SnpError> {
    Certificate::from_pem(pem).map_err(|e| SnpError::Certificate { what: what.into(), reason: e.to_string() })
}

/// A parsed SNP attestation report with its bytes.
#[derive(Debug, Clone)]
pub struct SnpReport {
    raw: Vec<u8>,
    /// The report, field by field (the `sev` crate's structure).
    pub report: AttestationReport,
}

impl SnpReport {
    /// Parses a report of version 2 to 5. A version 2 report with a masked chip id
    /// (all zero) is read with the Milan/Genoa TCB layout (the `sev` crate refuses to
    /// guess the layout from such a chip id; Turin firmware writes version 3 or later).
    pub fn parse(bytes: &[u8]) -> Result<Self, SnpError> {
        if bytes.len() != REPORT_SIZE {
            return Err(SnpError::WrongSize { len: bytes.len() });
        }
        let version = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        if !VERSIONS.contains(&version) {
            return Err(SnpError::UnsupportedVersion(version));
        }
        let masked_v2 = version == 2 && bytes[OFF_CHIP_ID..OFF_CHIP_ID + 64] == [0; 64];
        let mut parse_bytes = bytes.to_vec();
        if masked_v2 {
            // Any chip id whose last 56 bytes are not all zero selects the Milan/Genoa layout.
            parse_bytes[OFF_CHIP_ID..OFF_CHIP_ID + 64].fill(0xFF);
        }
        let mut report = AttestationReport::from_bytes(&parse_bytes).map_err(|e| SnpError::Parse(e.to_string()))?;
        if masked_v2 {
            report.chip_id = [0; 64];
        }
        Ok(Self { raw: bytes.to_vec(), report })
    }

    /// The report's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.raw
    }

    /// The guest policy.
    pub fn policy(&self) -> u64 {
        le_u64(&self.raw, 0x08)
    }

    /// The product the report's CPUID fields name (versions 3 and later).
    pub fn product(&self) -> Option<Product> {
        let r = &self.report;
        Product::of_cpuid(r.cpuid_fam_id?, r.cpuid_mod_id?)
    }

    /// Whether the TCB fields are in Turin's layout (with an FMC SPL).
    fn turin_layout(&self) -> bool {
        self.report.reported_tcb.fmc.is_some()
    }

    /// Checks the report's signature with `key` over its first [`SIGNED_LEN`] bytes:
    /// R and S are little endian in 72-byte fields whose top 24 bytes must be zero.
    pub fn verify_signature(&self, key: &VerifyingKey) -> Result<(), String> {
        let algo = self.report.sig_algo;
        if algo != 1 {
            return Err(format!("signature algorithm {algo} is not ECDSA P-384 with SHA-384 (1)"));
        }
        let scalar = |off: usize| -> Result<[u8; SCALAR_LEN], String> {
            let field = &self.raw[off..off + SIG_COMPONENT_LEN];
            if field[SCALAR_LEN..].iter().any(|&b| b != 0) {
                return Err("a signature component is wider than 48 bytes".into());
            }
            let mut be = [0u8; SCALAR_LEN];
            for (i, b) in field[..SCALAR_LEN].iter().rev().enumerate() {
                be[i] = *b;
            }
            Ok(be)
        };
        let (r, s) = (scalar(OFF_SIG_R)?, scalar(OFF_SIG_R + SIG_COMPONENT_LEN)?);
        let sig = Signature::from_scalars(r, s).map_err(|e| format!("malformed signature: {e}"))?;
        key.verify_digest(Sha384::new_with_prefix(&self.raw[..SIGNED_LEN]), &sig)
            .map_err(|_| "the signature does not verify".to_string())
    }

    /// Every field as JSON: byte strings as lowercase hex, TCBs as their components
    /// and the raw 64-bit value, the signature's R and S as big-endian hex.
    pub fn to_json(&self) -> serde_json::Value {
        let r = &self.report;
        let policy = self.policy();
        let tcb = |t: &TcbVersion, off: usize| {
            let mut v = serde_json::json!({
                "raw": format!("{:#018x}", le_u64(&self.raw, off)),
                "bootloader": t.bootloader,
                "tee": t.tee,
                "snp": t.snp,
                "microcode": t.microcode,
            });
            if let Some(fmc) = t.fmc {
                v["fmc"] = fmc.into();
            }
            v
        };
        let version = |v: &sev::firmware::guest::Version| format!("{}.{}.{}", v.major, v.minor, v.build);
        let bit = |v: u64, n: u32| v >> n & 1 == 1;
        let plat = le_u64(&self.raw, 0x40);
        let key_info = u32::from(r.key_info);
        let signing_key = match (key_info >> 2) & 7 {
            0 => "vcek",
            1 => "vlek",
            7 => "none",
            _ => "reserved",
        };
        let sig_be = |off: usize| {
            let field = &self.raw[off..off + SIG_COMPONENT_LEN];
            hex::encode(field.iter().rev().copied().collect::<Vec<u8>>())
        };
        let cpuid = match (r.cpuid_fam_id, r.cpuid_mod_id, r.cpuid_step) {
            (Some(f), Some(m), Some(s)) => serde_json::json!({ "family": f, "model": m, "stepping": s }),
            _ => serde_json::Value::Null,
        };
        let mut v = serde_json::json!({
            "tee": "snp",
            "version": r.version,
            "guest_svn": r.guest_svn,
            "policy": {
                "raw": format!("{policy:#018x}"),
                "abi_major": (policy >> 8) & 0xFF,
                "abi_minor": policy & 0xFF,
                "smt": bit(policy, 16),
                "migrate_ma": bit(policy, 18),
                "debug": bit(policy, 19),
                "single_socket": bit(policy, 20),
                "cxl_allow": bit(policy, 21),
                "mem_aes_256_xts": bit(policy, 22),
                "rapl_dis": bit(policy, 23),
                "ciphertext_hiding": bit(policy, 24),
                "page_swap_disable": bit(policy, 25),
            },
            "family_id": hex::encode(r.family_id),
            "image_id": hex::encode(r.image_id),
            "vmpl": r.vmpl,
            "signature_algo": r.sig_algo,
            "current_tcb": tcb(&r.current_tcb, OFF_CURRENT_TCB),
            "platform_info": {
                "raw": format!("{plat:#018x}"),
                "smt_enabled": bit(plat, 0),
                "tsme_enabled": bit(plat, 1),
                "ecc_enabled": bit(plat, 2),
                "rapl_disabled": bit(plat, 3),
                "ciphertext_hiding_enabled": bit(plat, 4),
                "alias_check_complete": bit(plat, 5),
                "tio_enabled": bit(plat, 7),
            },
            "key_info": {
                "raw": format!("{key_info:#010x}"),
                "author_key_en": key_info & 1 == 1,
                "mask_chip_key": key_info >> 1 & 1 == 1,
                "signing_key": signing_key,
            },
            "report_data": hex::encode(r.report_data),
            "measurement": hex::encode(r.measurement),
            "host_data": hex::encode(r.host_data),
            "id_key_digest": hex::encode(r.id_key_digest),
            "author_key_digest": hex::encode(r.author_key_digest),
            "report_id": hex::encode(r.report_id),
            "report_id_ma": hex::encode(r.report_id_ma),
            "reported_tcb": tcb(&r.reported_tcb, OFF_REPORTED_TCB),
            "cpuid": cpuid,
            "chip_id": hex::encode(r.chip_id),
            "committed_tcb": tcb(&r.committed_tcb, OFF_COMMITTED_TCB),
            "current_version": version(&r.current),
            "committed_version": version(&r.committed),
            "launch_tcb": tcb(&r.launch_tcb, OFF_LAUNCH_TCB),
            "signature": { "r": sig_be(OFF_SIG_R), "s": sig_be(OFF_SIG_R + SIG_COMPONENT_LEN) },
        });
        if let Some(p) = self.product() {
            v["product"] = p.name().into();
        }
        if let (Some(l), Some(c)) = (r.launch_mit_vector, r.current_mit_vector) {
            v["launch_mit_vector"] = format!("{l:#018x}").into();
            v["current_mit_vector"] = format!("{c:#018x}").into();
        }
        v
    }
}

/// What a certificate is in AMD's chain, told by its subject's common name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertRole {
    /// AMD Root Key ("ARK-Milan", ...).
    Ark,
    /// AMD SEV Signing Key ("SEV-Milan", ...): signs VCEKs.
    Ask,
    /// AMD SEV VLEK Signing Key ("SEV-VLEK-Milan", ...): signs VLEKs.
    Asvk,
    /// Versioned Chip Endorsement Key ("SEV-VCEK").
    Vcek,
    /// Versioned Loaded Endorsement Key ("SEV-VLEK").
    Vlek,
}

impl CertRole {
    /// Tells the role from the subject's common name.
    pub fn of(cert: &Certificate) -> Option<Self> {
        let cn = common_name(cert)?;
        Some(match cn.as_str() {
            "SEV-VCEK" => Self::Vcek,
            "SEV-VLEK" => Self::Vlek,
            c if c.starts_with("ARK-") => Self::Ark,
            c if c.starts_with("SEV-VLEK-") => Self::Asvk,
            c if c.starts_with("SEV-") => Self::Ask,
            _ => return None,
        })
    }
}

/// The subject's common name, if it has one.
pub fn common_name(cert: &Certificate) -> Option<String> {
    cert.tbs_certificate
        .subject
        .0
        .iter()
        .flat_map(|rdn| rdn.0.iter())
        .find(|atv| atv.oid == attr::CN)
        .and_then(|atv| std::str::from_utf8(atv.value.value()).ok().map(str::to_string))
}

/// The certificates that came with the evidence (any of them may be missing).
#[derive(Debug, Clone, Default)]
pub struct SnpCerts {
    /// The ARK (only compared with the trusted root: it is never trusted itself).
    pub ark: Option<Certificate>,
    /// The ASK or ASVK.
    pub ask: Option<Certificate>,
    /// The VCEK or VLEK.
    pub vek: Option<Certificate>,
}

impl SnpCerts {
    /// Adds a certificate in the place its common name gives it; a second certificate
    /// for the same place is an error.
    pub fn add(&mut self, cert: Certificate, what: &str) -> Result<(), SnpError> {
        let bad = |reason: String| SnpError::Certificate { what: what.to_string(), reason };
        let role = CertRole::of(&cert).ok_or_else(|| {
            bad(format!(
                "subject CN {:?} is none of AMD's (ARK-*, SEV-*, SEV-VLEK-*, SEV-VCEK, SEV-VLEK)",
                common_name(&cert).unwrap_or_default()
            ))
        })?;
        let slot = match role {
            CertRole::Ark => &mut self.ark,
            CertRole::Ask | CertRole::Asvk => &mut self.ask,
            CertRole::Vcek | CertRole::Vlek => &mut self.vek,
        };
        match slot {
            Some(old) if *old != cert => Err(bad(format!("a second, different {role:?} certificate"))),
            _ => {
                *slot = Some(cert);
                Ok(())
            }
        }
    }

    /// Adds every certificate in `bytes` (DER, or PEM with one or more certificates).
    pub fn add_bytes(&mut self, bytes: &[u8], what: &str) -> Result<(), SnpError> {
        for cert in certs_from_bytes(bytes, what)? {
            self.add(cert, what)?;
        }
        Ok(())
    }

    /// Adds every certificate of a file (DER or PEM).
    pub fn add_file(&mut self, path: &Path) -> Result<(), SnpError> {
        let bytes = std::fs::read(path).map_err(|source| SnpError::Io { path: path.into(), source })?;
        self.add_bytes(&bytes, &path.display().to_string())
    }

    /// Reads a directory as `cvmm snp-certs --export`, snpguest and AMD's key server
    /// name the files: `ark`, `ask`, `asvk`, `vcek`, `vlek` (`.pem`, `.der`, `.crt`
    /// or `.cer`) and `cert_chain.pem` (the ASK, then the ARK). At least one must exist.
    pub fn from_dir(dir: &Path) -> Result<Self, SnpError> {
        let mut certs = Self::default();
        let mut found = false;
        for stem in ["ark", "ask", "asvk", "vcek", "vlek", "cert_chain"] {
            for ext in ["pem", "der", "crt", "cer"] {
                let path = dir.join(format!("{stem}.{ext}"));
                if path.is_file() {
                    certs.add_file(&path)?;
                    found = true;
                }
            }
        }
        if !found {
            return Err(SnpError::Io {
                path: dir.into(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no ark, ask, asvk, vcek, vlek or cert_chain certificate in it",
                ),
            });
        }
        Ok(certs)
    }

    /// Reads the certificate table of an extended guest request (GUID, offset,
    /// length entries, an all-zero entry, then DER certificates). Entries of other
    /// GUIDs are ignored.
    pub fn from_cert_table(table: &[u8]) -> Result<Self, SnpError> {
        let entries = parse_cert_table(table).map_err(|e| SnpError::CertTable(e.to_string()))?;
        let mut certs = Self::default();
        for e in entries {
            let what = match e.guid {
                g if g == cert_guid::ARK => "the table's ARK",
                g if g == cert_guid::ASK => "the table's ASK",
                g if g == cert_guid::VCEK => "the table's VCEK",
                VLEK_GUID => "the table's VLEK",
                _ => continue,
            };
            let cert = Certificate::from_der(&e.data)
                .map_err(|err| SnpError::Certificate { what: what.into(), reason: err.to_string() })?;
            certs.add(cert, what)?;
        }
        Ok(certs)
    }
}

/// The certificates in `bytes`: PEM (one or more) if it looks like PEM, else one DER.
pub fn certs_from_bytes(bytes: &[u8], what: &str) -> Result<Vec<Certificate>, SnpError> {
    let bad = |reason: String| SnpError::Certificate { what: what.to_string(), reason };
    if bytes.windows(11).any(|w| w == b"-----BEGIN ") {
        let certs = Certificate::load_pem_chain(bytes).map_err(|e| bad(e.to_string()))?;
        if certs.is_empty() {
            return Err(bad("no certificate in the PEM text".into()));
        }
        Ok(certs)
    } else {
        Ok(vec![Certificate::from_der(bytes).map_err(|e| bad(e.to_string()))?])
    }
}

/// Which ARK to trust.
#[derive(Debug, Clone, Default)]
pub enum TrustedRoot {
    /// AMD's ARK for the product the report (v3 and later) or the VCEK names.
    #[default]
    Auto,
    /// AMD's ARK for this product.
    Product(Product),
    /// This certificate (e.g. the emulated platform's ARK from `cvmm snp-certs --export`).
    Given(Box<Certificate>),
}

/// How to verify an SNP report.
#[derive(Debug, Clone, Default)]
pub struct SnpVerifyOptions {
    /// The certificates that came with the evidence.
    pub certs: SnpCerts,
    /// The root to trust.
    pub root: TrustedRoot,
    /// The time certificates must be valid at (seconds since 1970).
    pub now: u64,
}

/// A minimum TCB: each component of the report's REPORTED_TCB must be at least this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MinTcb {
    /// Components by name.
    Parts {
        /// Turin's FMC SPL (ignored for earlier products).
        fmc: Option<u8>,
        /// Boot loader SPL.
        bootloader: u8,
        /// PSP OS (TEE) SPL.
        tee: u8,
        /// SNP firmware SPL.
        snp: u8,
        /// Microcode SPL.
        microcode: u8,
    },
    /// The 64-bit TCB_VERSION as AMD's tools print it, read with the report's layout.
    Raw(u64),
}

impl MinTcb {
    /// Parses `0x4405000000000002` (a TCB_VERSION) or `bl=2,tee=0,snp=5,ucode=68`
    /// (names `bl`/`bootloader`, `tee`, `snp`, `ucode`/`microcode`, `fmc`; missing ones
    /// are 0).
    pub fn parse(s: &str) -> Result<Self, SnpError> {
        let bad = |reason: &str| SnpError::MinTcb { value: s.to_string(), reason: reason.to_string() };
        let t = s.trim();
        if !t.contains('=') {
            let v = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
                Some(h) => u64::from_str_radix(h, 16),
                None => t.parse(),
            };
            return v.map(Self::Raw).map_err(|_| bad("neither a number nor NAME=VALUE pairs"));
        }
        let (mut fmc, mut bl, mut tee, mut snp, mut uc) = (None, 0, 0, 0, 0);
        for part in t.split(',') {
            let (k, v) = part.split_once('=').ok_or_else(|| bad("a component without '='"))?;
            let v: u8 = v.trim().parse().map_err(|_| bad("a component value is not 0-255"))?;
            match k.trim().to_ascii_lowercase().as_str() {
                "fmc" => fmc = Some(v),
                "bl" | "bootloader" => bl = v,
                "tee" => tee = v,
                "snp" => snp = v,
                "ucode" | "microcode" => uc = v,
                _ => return Err(bad("components are fmc, bl, tee, snp and ucode")),
            }
        }
        Ok(Self::Parts { fmc, bootloader: bl, tee, snp, microcode: uc })
    }

    /// The components, reading [`Self::Raw`] in Turin's layout or Milan/Genoa's.
    fn parts(self, turin: bool) -> TcbVersion {
        match self {
            Self::Parts { fmc, bootloader, tee, snp, microcode } => {
                TcbVersion { fmc: fmc.filter(|_| turin), bootloader, tee, snp, microcode }
            }
            Self::Raw(v) => {
                let b = v.to_le_bytes();
                if turin {
                    TcbVersion { fmc: Some(b[0]), bootloader: b[1], tee: b[2], snp: b[3], microcode: b[7] }
                } else {
                    TcbVersion { fmc: None, bootloader: b[0], tee: b[1], snp: b[6], microcode: b[7] }
                }
            }
        }
    }
}

fn tcb_text(t: &TcbVersion) -> String {
    let fmc = t.fmc.map(|f| format!("fmc={f},")).unwrap_or_default();
    format!("{fmc}bl={},tee={},snp={},ucode={}", t.bootloader, t.tee, t.snp, t.microcode)
}

/// The TCB, product name and hardware id a VCEK or VLEK certificate carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VekInfo {
    /// The TCB the key was derived for.
    pub tcb: TcbVersion,
    /// productName ("Milan-B0", "Genoa", "Turin"), if present.
    pub product_name: Option<String>,
    /// hwID: the chip id (64 bytes before Turin, 8 from Turin on); VLEKs have none.
    pub hw_id: Option<Vec<u8>>,
}

/// Reads AMD's extensions of a VCEK or VLEK.
pub fn vek_info(cert: &Certificate) -> Result<VekInfo, String> {
    let exts = cert.tbs_certificate.extensions.as_deref().unwrap_or_default();
    let find = |id: ObjectIdentifier| exts.iter().find(|e| e.extn_id == id).map(|e| e.extn_value.as_bytes());
    let spl = |id: ObjectIdentifier| -> Result<Option<u8>, String> {
        find(id).map(|b| u8::from_der(b).map_err(|e| format!("extension {id}: {e}"))).transpose()
    };
    let need = |id: ObjectIdentifier| spl(id)?.ok_or(format!("no extension {id}"));
    let product_name = find(oid::PRODUCT_NAME)
        .map(|b| {
            x509_cert::der::asn1::Ia5StringRef::from_der(b)
                .map(|s| s.as_str().to_string())
                .map_err(|e| format!("productName: {e}"))
        })
        .transpose()?;
    Ok(VekInfo {
        tcb: TcbVersion {
            fmc: spl(oid::FMC_SPL)?,
            bootloader: need(oid::BL_SPL)?,
            tee: need(oid::TEE_SPL)?,
            snp: need(oid::SNP_SPL)?,
            microcode: need(oid::UCODE_SPL)?,
        },
        product_name,
        hw_id: find(oid::HW_ID).map(<[u8]>::to_vec),
    })
}

/// Checks that `cert` is valid at `now`.
fn valid_at(cert: &Certificate, now: u64) -> Result<(), String> {
    let v = &cert.tbs_certificate.validity;
    let (from, to) = (v.not_before.to_unix_duration().as_secs(), v.not_after.to_unix_duration().as_secs());
    if now < from {
        return Err(format!("not valid before {}", v.not_before));
    }
    if now > to {
        return Err(format!("expired on {}", v.not_after));
    }
    Ok(())
}

/// Checks that `issuer` signed `cert` (RSASSA-PSS with SHA-384, as all AMD CA
/// signatures are) and names it as issuer, and that `cert` is valid at `now`.
fn signed_by(cert: &Certificate, issuer: &Certificate, now: u64) -> Result<(), String> {
    if cert.tbs_certificate.issuer != issuer.tbs_certificate.subject {
        return Err(format!("its issuer {} is not {}", cert.tbs_certificate.issuer, issuer.tbs_certificate.subject));
    }
    let (c, i) = (sev::certs::snp::Certificate::from(cert.clone()), sev::certs::snp::Certificate::from(issuer.clone()));
    (&i, &c).verify().map_err(|e| e.to_string())?;
    valid_at(cert, now)
}

fn cn(cert: &Certificate) -> String {
    common_name(cert).unwrap_or_else(|| "no CN".into())
}

/// Verifies `report` as [`SnpVerifyOptions`] say and checks `exp`: one [`Check`] per
/// step (root, ARK, ASK/ASVK, VCEK/VLEK, report signature, TCB, chip id), then one per
/// expectation (debug always).
pub fn verify(report: &SnpReport, opts: &SnpVerifyOptions, exp: &Expectations) -> Verdict {
    let mut v = Verdict::default();
    let r = &report.report;
    let now = opts.now;
    let vek = opts.certs.vek.as_ref();
    let vek_role = vek.and_then(CertRole::of);
    let vek_info = vek.map(vek_info);

    // The root: given, or AMD's for the product.
    let product = match &opts.root {
        TrustedRoot::Product(p) => Some(*p),
        _ => report.product().or_else(|| {
            vek_info
                .as_ref()
                .and_then(|i| i.as_ref().ok()?.product_name.as_deref().and_then(|n| Product::parse(n).ok()))
        }),
    };
    let root: Result<(Certificate, String), String> = match &opts.root {
        TrustedRoot::Given(c) => Ok(((**c).clone(), format!("the given root ({})", cn(c)))),
        _ => match product {
            Some(p) => p.ark().map(|c| (c, format!("AMD's {} ARK (built in)", p.name()))).map_err(|e| e.to_string()),
            None => {
                Err("the report (version 2) and the VCEK do not name the product: give the product or a root"
                    .to_string())
            }
        },
    };
    let root = match root {
        Ok((cert, what)) => match signed_by(&cert, &cert, now) {
            Ok(()) => {
                v.push(Check::pass("snp.root", format!("{what}: self-signed and valid")));
                Some(cert)
            }
            Err(e) => {
                v.push(Check::fail("snp.root", format!("{what}: {e}")));
                None
            }
        },
        Err(e) => {
            v.push(Check::fail("snp.root", e));
            None
        }
    };

    // An ARK that came with the evidence must be the trusted root.
    if let (Some(ark), Some(root)) = (&opts.certs.ark, &root) {
        v.push(Check::new(
            "snp.ark",
            ark == root,
            if ark == root {
                "the ARK given with the evidence is the trusted root".to_string()
            } else {
                format!("the ARK given with the evidence ({}) is not the trusted root", cn(ark))
            },
        ));
    }

    // The ASK (or ASVK): given, or AMD's for the product when the root is AMD's.
    let vlek = vek_role == Some(CertRole::Vlek);
    let ask_name = if vlek { "ASVK" } else { "ASK" };
    let ask = match (&opts.certs.ask, product, &opts.root) {
        (Some(a), _, _) => Some((a.clone(), "given")),
        (None, Some(p), TrustedRoot::Auto | TrustedRoot::Product(_)) if !vlek => p.ask().ok().map(|a| (a, "built in")),
        _ => None,
    };
    let ask = match (ask, &root) {
        (Some((ask, whence)), Some(root)) => {
            let res = signed_by(&ask, root, now);
            v.push(Check::new(
                "snp.ask",
                res.is_ok(),
                match &res {
                    Ok(()) => format!("{ask_name} ({}, {whence}) is signed by the root and valid", cn(&ask)),
                    Err(e) => format!("{ask_name} ({}, {whence}) is not signed by the root: {e}", cn(&ask)),
                },
            ));
            Some(ask)
        }
        (Some((ask, _)), None) => {
            v.push(Check::fail("snp.ask", format!("{ask_name} ({}) has no trusted root to chain to", cn(&ask))));
            Some(ask)
        }
        (None, _) => {
            v.push(Check::fail("snp.ask", format!("no {ask_name} certificate given")));
            None
        }
    };

    // The VCEK (or VLEK), signed by the ASK.
    let key = match vek {
        None => {
            v.push(Check::fail("snp.vek", "no VCEK or VLEK certificate given"));
            None
        }
        Some(vek) => {
            let kind = if vlek { "VLEK" } else { "VCEK" };
            match &ask {
                Some(ask) => {
                    let res = signed_by(vek, ask, now);
                    v.push(Check::new(
                        "snp.vek",
                        res.is_ok(),
                        match &res {
                            Ok(()) => format!("{kind} is signed by the {ask_name} and valid"),
                            Err(e) => format!("{kind} is not signed by the {ask_name}: {e}"),
                        },
                    ));
                }
                None => v.push(Check::fail("snp.vek", format!("{kind}: no {ask_name} to check it with"))),
            }
            let spki = &vek.tbs_certificate.subject_public_key_info.subject_public_key;
            VerifyingKey::from_sec1_bytes(spki.raw_bytes()).ok().map(|k| (k, kind))
        }
    };

    // The report's signature.
    let signing_key = (u32::from(r.key_info) >> 2) & 7;
    let sig = match (&key, signing_key) {
        (_, 7) => Err("the report is not signed (SIGNING_KEY = none)".to_string()),
        (None, _) if vek.is_some() => Err("the VCEK/VLEK certificate has no ECDSA P-384 key".to_string()),
        (None, _) => Err("no VCEK or VLEK to check it with".to_string()),
        (Some((_, kind)), k) if (k == 1) != (*kind == "VLEK") || k > 1 => {
            Err(format!("the report says it is signed by key {k} (0 VCEK, 1 VLEK), the certificate is a {kind}"))
        }
        (Some((key, kind)), _) => report.verify_signature(key).map(|()| format!("signed by the {kind}")),
    };
    v.push(match sig {
        Ok(d) => Check::pass("snp.signature", format!("{d} (ECDSA P-384 with SHA-384 over bytes 0..0x2a0)")),
        Err(e) => Check::fail("snp.signature", e),
    });

    // TCB and chip id versus the certificate.
    match &vek_info {
        Some(Ok(info)) => {
            let ok = info.tcb == r.reported_tcb;
            v.push(Check::new(
                "snp.tcb",
                ok,
                if ok {
                    format!("REPORTED_TCB {} is the certificate's", tcb_text(&r.reported_tcb))
                } else {
                    format!(
                        "REPORTED_TCB {} is not the certificate's {}",
                        tcb_text(&r.reported_tcb),
                        tcb_text(&info.tcb)
                    )
                },
            ));
            match (&info.hw_id, vlek) {
                (_, true) => {}
                (None, false) => v.push(Check::fail("snp.chip_id", "the VCEK has no hwID extension")),
                (Some(_), false) if r.chip_id == [0; 64] => v.push(Check::pass(
                    "snp.chip_id",
                    "masked in the report (MASK_CHIP_ID); the VCEK's signature binds the chip",
                )),
                (Some(hw), false) => {
                    // Turin's hwID is 8 bytes: the chip id's first 8, the rest zero.
                    let n = hw.len().min(64);
                    let ok = hw.len() <= 64 && r.chip_id[..n] == hw[..] && r.chip_id[n..].iter().all(|&b| b == 0);
                    v.push(Check::new(
                        "snp.chip_id",
                        ok,
                        if ok {
                            "CHIP_ID is the VCEK's hwID".to_string()
                        } else {
                            format!("CHIP_ID {} is not the VCEK's hwID {}", hex::encode(r.chip_id), hex::encode(hw))
                        },
                    ));
                }
            }
        }
        Some(Err(e)) => v.push(Check::fail("snp.tcb", format!("the certificate's TCB extensions: {e}"))),
        None => v.push(Check::fail("snp.tcb", "no VCEK or VLEK to compare REPORTED_TCB with")),
    }

    expectations(report, exp, &mut v);
    v
}

/// The expectation checks.
fn expectations(report: &SnpReport, exp: &Expectations, v: &mut Verdict) {
    let r = &report.report;
    let policy = report.policy();
    let debug = policy & POLICY_DEBUG != 0;
    v.push(match (debug, exp.allow_debug) {
        (false, _) => Check::pass("debug", "the guest policy forbids debugging"),
        (true, true) => Check::pass("debug", "the guest policy allows debugging (allowed)"),
        (true, false) => {
            Check::fail("debug", "the guest policy allows debugging (DEBUG, bit 19), which is not allowed")
        }
    });
    if let Some(m) = &exp.measurement {
        v.push(expect_eq("measurement", m, &r.measurement));
    }
    if let Some(h) = &exp.host_data {
        v.push(expect_eq("host_data", h, &r.host_data));
    }
    if let Some(d) = &exp.report_data {
        v.push(expect_eq("report_data", d, &r.report_data));
    }
    if let Some(p) = exp.snp_policy {
        v.push(Check::new(
            "policy",
            p == policy,
            if p == policy {
                format!("{policy:#x} as expected")
            } else {
                format!("expected {p:#x}, found {policy:#x}")
            },
        ));
    }
    if let Some(vmpl) = exp.snp_vmpl {
        v.push(Check::new("vmpl", vmpl == r.vmpl, format!("expected VMPL {vmpl}, the report is for VMPL {}", r.vmpl)));
    }
    if let Some(min) = exp.snp_min_tcb {
        let min = min.parts(report.turin_layout());
        let t = &r.reported_tcb;
        let ok = t.bootloader >= min.bootloader
            && t.tee >= min.tee
            && t.snp >= min.snp
            && t.microcode >= min.microcode
            && t.fmc.unwrap_or(0) >= min.fmc.unwrap_or(0);
        v.push(Check::new(
            "min_tcb",
            ok,
            format!(
                "REPORTED_TCB {} {} the minimum {}",
                tcb_text(t),
                if ok { "meets" } else { "is below" },
                tcb_text(&min)
            ),
        ));
    }
    for name in exp.tdx_only() {
        v.push(Check::fail(name, "a TDX expectation; the evidence is an SEV-SNP report"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REFS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/refs/attestation/");
    /// 2025-06-20T00:00:00Z: inside every sample certificate's validity.
    const NOW: u64 = 1_750_377_600;

    fn read(name: &str) -> Vec<u8> {
        std::fs::read(format!("{REFS}{name}")).unwrap()
    }

    fn go_report() -> SnpReport {
        SnpReport::parse(&read("go-sev-guest__verify_testdata_attestation.bin")).unwrap()
    }

    fn go_certs() -> SnpCerts {
        let mut c = SnpCerts::default();
        c.add_bytes(&read("go-sev-guest__verify_testdata_vcek.testcer"), "vcek").unwrap();
        c.add_bytes(&read("go-sev-guest__verify_testdata_milan.testcer"), "milan").unwrap();
        c
    }

    fn go_options() -> SnpVerifyOptions {
        SnpVerifyOptions { certs: go_certs(), root: TrustedRoot::Auto, now: NOW }
    }

    fn allow_debug() -> Expectations {
        Expectations { allow_debug: true, ..Default::default() }
    }

    #[test]
    fn go_sev_guest_report_fields_equal_the_values_its_tests_state() {
        let r = go_report().report;
        assert_eq!(r.version, 2);
        assert_eq!(
            hex::encode(r.measurement),
            "b07af9620f3b839b47996422ddec6058338951d984e312115131ea82705eaf5b6bdf8a9ece31a5a608eb0cf2e4872b01"
        );
        assert_eq!(
            hex::encode(r.chip_id),
            "3ac3fe21e13fb0990eb28a802e3fb6a29483a6b0753590c951bdd3b8e53786184ca39e359669a2b76a1936776b564ea4\
             64cdce40c05f63c9b610c5068b006b5d"
        );
        let mut rd = [0u8; 64];
        rd[..5].copy_from_slice(&[1, 2, 3, 4, 5]);
        assert_eq!(r.report_data, rd);
        assert_eq!(hex::encode(r.report_id), "8edc638e1857c555d21f6b11bda3c8b1b5a09dba4852b4c8ee7aa2f16f22cc0a");
        assert_eq!(r.report_id_ma, [0xFF; 32]);
        assert_eq!((r.vmpl, u64::from(r.plat_info)), (0, 1));
        let j = go_report().to_json();
        for field in ["current_tcb", "reported_tcb", "committed_tcb", "launch_tcb"] {
            assert_eq!(j[field]["raw"], "0x4405000000000002", "{field}");
            assert_eq!(u64::from_str_radix(&j[field]["raw"].as_str().unwrap()[2..], 16).unwrap(), 4901323769462652930);
        }
        assert_eq!(j["policy"]["debug"], true);
        assert_eq!(j["policy"]["smt"], true);
        assert_eq!(j["current_version"], "1.49.3");
        assert_eq!(j["key_info"]["signing_key"], "vcek");
    }

    #[test]
    fn go_sev_guest_report_verifies_against_amds_milan_root() {
        let v = verify(&go_report(), &go_options(), &allow_debug());
        assert!(v.passed(), "{:#?}", v.checks);
        assert!(v.get("snp.root").unwrap().detail.contains("Milan ARK (built in)"));
        for name in ["snp.ark", "snp.ask", "snp.vek", "snp.signature", "snp.tcb", "snp.chip_id", "debug"] {
            assert!(v.get(name).is_some(), "{name}");
        }
    }

    #[test]
    fn go_sev_guest_report_allows_debugging_which_fails_unless_allowed() {
        let v = verify(&go_report(), &go_options(), &Expectations::default());
        assert_eq!(v.failed(), ["debug"]);
    }

    #[test]
    fn flipping_any_signed_byte_of_the_go_sev_guest_report_fails() {
        let bytes = read("go-sev-guest__verify_testdata_attestation.bin");
        let key = {
            let vcek = go_certs().vek.unwrap();
            VerifyingKey::from_sec1_bytes(vcek.tbs_certificate.subject_public_key_info.subject_public_key.raw_bytes())
                .unwrap()
        };
        go_report().verify_signature(&key).unwrap();
        for i in 0..SIGNED_LEN {
            let mut b = bytes.clone();
            b[i] ^= 0x01;
            // Either the report no longer parses (version, CPUID) or its signature fails.
            if let Ok(r) = SnpReport::parse(&b) {
                assert!(r.verify_signature(&key).is_err(), "byte {i:#x}");
            }
        }
    }

    #[test]
    fn virtee_milan_report_verifies_with_its_vcek_and_chain() {
        let report = SnpReport::parse(&read("virtee-sev__tests_certs_data_report_milan.bin.derived")).unwrap();
        let mut certs = SnpCerts::default();
        certs.add_file(Path::new(&format!("{REFS}virtee-sev__tests_certs_data_vcek_milan.der"))).unwrap();
        certs.add_file(Path::new(&format!("{REFS}virtee-sev__tests_certs_data_cert_chain_milan"))).unwrap();
        let opts = SnpVerifyOptions { certs, root: TrustedRoot::Product(Product::Milan), now: NOW };
        let v = verify(&report, &opts, &Expectations::default());
        assert!(v.passed(), "{:#?}", v.checks);
    }

    #[test]
    fn a_report_checked_against_another_products_root_fails_the_chain() {
        let opts = SnpVerifyOptions { root: TrustedRoot::Product(Product::Genoa), ..go_options() };
        let v = verify(&go_report(), &opts, &allow_debug());
        assert!(v.failed().contains(&"snp.ark"), "{:#?}", v.checks);
        assert!(v.failed().contains(&"snp.ask"), "{:#?}", v.checks);
    }

    #[test]
    fn a_vcek_for_another_chip_fails_signature_tcb_and_chip_id() {
        let mut opts = go_options();
        opts.certs.vek = None;
        opts.certs.add_bytes(&read("virtee-sev__tests_certs_data_vcek_milan.der"), "other vcek").unwrap();
        let v = verify(&go_report(), &opts, &allow_debug());
        assert_eq!(v.failed(), ["snp.signature", "snp.tcb", "snp.chip_id"], "{:#?}", v.checks);
    }

    #[test]
    fn missing_certificates_fail_the_checks_that_need_them() {
        let opts = SnpVerifyOptions { certs: SnpCerts::default(), root: TrustedRoot::Auto, now: NOW };
        let v = verify(&go_report(), &opts, &allow_debug());
        // Without a VCEK the v2 report does not name its product, so there is no root.
        assert_eq!(v.failed(), ["snp.root", "snp.ask", "snp.vek", "snp.signature", "snp.tcb"]);
    }

    #[test]
    fn expired_certificates_fail() {
        // 2031: after the VCEK's 7 years.
        let opts = SnpVerifyOptions { now: 1_950_000_000, ..go_options() };
        let v = verify(&go_report(), &opts, &allow_debug());
        assert_eq!(v.failed(), ["snp.vek"]);
        assert!(v.get("snp.vek").unwrap().detail.contains("expired"));
    }

    #[test]
    fn expectations_pass_when_met_and_fail_when_not() {
        let r = go_report();
        let mut exp = allow_debug();
        exp.measurement = Some(r.report.measurement);
        exp.host_data = Some([0; 32]);
        exp.report_data = Some(super::super::parse_hex_padded("rd", "0102030405").unwrap());
        exp.snp_policy = Some(0xb0000);
        exp.snp_vmpl = Some(0);
        exp.snp_min_tcb = Some(MinTcb::parse("0x4405000000000002").unwrap());
        let v = verify(&r, &go_options(), &exp);
        assert!(v.passed(), "{:#?}", v.checks);

        let mut wrong = exp.clone();
        wrong.measurement.as_mut().unwrap()[0] ^= 1;
        wrong.host_data = Some([1; 32]);
        wrong.report_data = Some([0; 64]);
        wrong.snp_policy = Some(0x30000);
        wrong.snp_vmpl = Some(1);
        wrong.snp_min_tcb = Some(MinTcb::parse("bl=2,tee=0,snp=6,ucode=68").unwrap());
        wrong.rtmrs[2] = Some([0; 48]);
        let v = verify(&r, &go_options(), &wrong);
        assert_eq!(v.failed(), ["measurement", "host_data", "report_data", "policy", "vmpl", "min_tcb", "rtmr2"]);
    }

    #[test]
    fn min_tcb_forms_parse_and_compare_component_by_component() {
        let legacy = MinTcb::parse("0x4405000000000002").unwrap().parts(false);
        assert_eq!((legacy.bootloader, legacy.tee, legacy.snp, legacy.microcode), (2, 0, 5, 0x44));
        let turin = MinTcb::Raw(0x0900_0000_0300_0201).parts(true);
        assert_eq!((turin.fmc, turin.bootloader, turin.tee, turin.snp, turin.microcode), (Some(1), 2, 0, 3, 9));
        assert_eq!(
            MinTcb::parse("bl=3, snp=8, ucode=115").unwrap(),
            MinTcb::Parts { fmc: None, bootloader: 3, tee: 0, snp: 8, microcode: 115 }
        );
        for bad in ["bl=300", "foo=1", "bl", "0xzz", ""] {
            assert!(MinTcb::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn reports_of_wrong_size_or_version_are_rejected() {
        assert!(matches!(SnpReport::parse(&[0; 100]), Err(SnpError::WrongSize { len: 100 })));
        let mut b = read("go-sev-guest__verify_testdata_attestation.bin");
        for version in [0u32, 1, 6, 0xFFFF_FFFF] {
            b[..4].copy_from_slice(&version.to_le_bytes());
            assert!(matches!(SnpReport::parse(&b), Err(SnpError::UnsupportedVersion(v)) if v == version));
        }
    }

    #[test]
    fn version_3_report_of_an_unknown_cpu_is_rejected() {
        let mut b = read("go-sev-guest__verify_testdata_attestation.bin");
        b[0] = 3;
        b[0x188] = 0x17; // family 17h (Rome): no SNP.
        assert!(matches!(SnpReport::parse(&b), Err(SnpError::Parse(_))));
    }

    #[test]
    fn version_2_report_with_a_masked_chip_id_parses() {
        let mut b = read("go-sev-guest__verify_testdata_attestation.bin");
        b[OFF_CHIP_ID..OFF_CHIP_ID + 64].fill(0);
        let r = SnpReport::parse(&b).unwrap();
        assert_eq!(r.report.chip_id, [0; 64]);
        assert_eq!(r.report.reported_tcb.snp, 5);
    }

    #[test]
    fn garbage_certificates_are_rejected_with_the_reason() {
        let mut c = SnpCerts::default();
        assert!(matches!(c.add_bytes(b"not a certificate", "x"), Err(SnpError::Certificate { .. })));
        assert!(matches!(
            c.add_bytes(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "x"),
            Err(SnpError::Certificate { .. })
        ));
        let mut der = read("go-sev-guest__verify_testdata_vcek.testcer");
        der.truncate(500);
        assert!(matches!(c.add_bytes(&der, "x"), Err(SnpError::Certificate { .. })));
        // A second, different VCEK.
        c.add_bytes(&read("go-sev-guest__verify_testdata_vcek.testcer"), "a").unwrap();
        assert!(c.add_bytes(&read("virtee-sev__tests_certs_data_vcek_milan.der"), "b").is_err());
        assert!(matches!(SnpCerts::from_cert_table(&[1; 30]), Err(SnpError::CertTable(_))));
    }

    #[test]
    fn certificates_are_placed_by_their_common_name() {
        let c = go_certs();
        assert_eq!(common_name(c.ark.as_ref().unwrap()).unwrap(), "ARK-Milan");
        assert_eq!(common_name(c.ask.as_ref().unwrap()).unwrap(), "SEV-Milan");
        assert_eq!(common_name(c.vek.as_ref().unwrap()).unwrap(), "SEV-VCEK");
        let info = vek_info(c.vek.as_ref().unwrap()).unwrap();
        assert_eq!(info.product_name.as_deref(), Some("Milan-B0"));
        assert_eq!(info.hw_id.as_deref(), Some(&go_report().report.chip_id[..]));
    }

    #[test]
    fn turin_vcek_carries_an_fmc_spl_and_an_8_byte_hw_id() {
        let mut c = SnpCerts::default();
        c.add_bytes(&read("virtee-sev__tests_certs_data_vcek_turin.der"), "turin").unwrap();
        c.add_bytes(&read("virtee-sev__tests_certs_data_cert_chain_turin"), "turin chain").unwrap();
        let info = vek_info(c.vek.as_ref().unwrap()).unwrap();
        assert_eq!(info.tcb.fmc, Some(0));
        assert_eq!(info.tcb.microcode, 9);
        assert_eq!(info.hw_id.as_ref().map(Vec::len), Some(8));
        assert_eq!(Product::parse(info.product_name.as_deref().unwrap()).unwrap(), Product::Turin);
        // The Turin chain verifies to AMD's built-in Turin root.
        let root = Product::Turin.ark().unwrap();
        signed_by(c.ask.as_ref().unwrap(), &root, NOW).unwrap();
        signed_by(c.vek.as_ref().unwrap(), c.ask.as_ref().unwrap(), NOW).unwrap();
    }

    #[test]
    fn the_emulated_platforms_report_verifies_with_its_root_and_fails_with_amds() {
        let chain = crate::snp::certs::tests_chain();
        let body = crate::snp::report::AttestationReport {
            cpuid: Some(crate::snp::report::CpuidFms::MILAN_B0),
            chip_id: *chain.chip_id(),
            current_tcb: chain.tcb(),
            reported_tcb: chain.tcb(),
            committed_tcb: chain.tcb(),
            launch_tcb: chain.tcb(),
            measurement: [7; 48],
            policy: 0x30000,
            ..Default::default()
        };
        let bytes = body.sign(chain.vcek_signing_key()).unwrap();
        let report = SnpReport::parse(&bytes).unwrap();
        assert_eq!(report.product(), Some(Product::Milan));
        let certs = SnpCerts::from_cert_table(&chain.cert_table().unwrap()).unwrap();
        let root = Certificate::from_der(chain.ark_der()).unwrap();
        let exp = Expectations { measurement: Some([7; 48]), ..Default::default() };
        let trusted = SnpVerifyOptions { certs: certs.clone(), root: TrustedRoot::Given(Box::new(root)), now: now() };
        let v = verify(&report, &trusted, &exp);
        assert!(v.passed(), "{:#?}", v.checks);
        let amd = SnpVerifyOptions { certs, root: TrustedRoot::Auto, now: now() };
        let v = verify(&report, &amd, &exp);
        assert_eq!(v.failed(), ["snp.ark", "snp.ask"], "{:#?}", v.checks);
    }

    fn now() -> u64 {
        super::super::now_secs()
    }

    /// A VLEK chain made here (AMD publishes no VLEK sample): an ARK and an ASVK
    /// (RSA-1024, RSASSA-PSS/SHA-384 as AMD signs) and a VLEK (P-384) with AMD's TCB
    /// extensions and no hwID.
    mod vlek_chain {
        use std::str::FromStr;

        use p384::ecdsa::SigningKey as EcKey;
        use rand_core::OsRng;
        use rsa::pkcs8::EncodePublicKey;
        use rsa::{RsaPrivateKey, RsaPublicKey};
        use sha2::Sha384;
        use x509_cert::builder::{Builder, CertificateBuilder, Profile};
        use x509_cert::der::asn1::OctetString;
        use x509_cert::der::{Decode, Encode};
        use x509_cert::ext::{AsExtension, Extension};
        use x509_cert::name::Name;
        use x509_cert::serial_number::SerialNumber;
        use x509_cert::spki::{ObjectIdentifier, SubjectPublicKeyInfoOwned};
        use x509_cert::time::Validity;
        use x509_cert::Certificate;

        /// An extension given as-is to the builder.
        struct Raw(Extension);
        impl x509_cert::der::oid::AssociatedOid for Raw {
            const OID: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.3704.1");
        }
        impl Encode for Raw {
            fn encoded_len(&self) -> x509_cert::der::Result<x509_cert::der::Length> {
                self.0.encoded_len()
            }
            fn encode(&self, w: &mut impl x509_cert::der::Writer) -> x509_cert::der::Result<()> {
                self.0.encode(w)
            }
        }
        impl AsExtension for Raw {
            fn critical(&self, _: &Name, _: &[Extension]) -> bool {
                false
            }
            fn to_extension(&self, _: &Name, _: &[Extension]) -> x509_cert::der::Result<Extension> {
                Ok(self.0.clone())
            }
        }

        fn spl(arc: &str, v: u8) -> Raw {
            let extn_id = ObjectIdentifier::new_unwrap(arc);
            Raw(Extension { extn_id, critical: false, extn_value: OctetString::new(v.to_der().unwrap()).unwrap() })
        }

        fn spki(der: &[u8]) -> SubjectPublicKeyInfoOwned {
            SubjectPublicKeyInfoOwned::from_der(der).unwrap()
        }

        fn cert(
            issuer: &str,
            subject: &str,
            key: SubjectPublicKeyInfoOwned,
            signer: &RsaPrivateKey,
            exts: Vec<Raw>,
        ) -> Certificate {
            let signer = rsa::pss::BlindedSigningKey::<Sha384>::new_with_salt_len(signer.clone(), 48);
            let validity = Validity::from_now(std::time::Duration::from_secs(86_400)).unwrap();
            let mut b = CertificateBuilder::new(
                Profile::Manual { issuer: Some(Name::from_str(issuer).unwrap()) },
                SerialNumber::from(1u32),
                validity,
                Name::from_str(subject).unwrap(),
                key,
                &signer,
            )
            .unwrap();
            for e in exts {
                b.add_extension(&e).unwrap();
            }
            b.build_with_rng::<rsa::pss::Signature>(&mut OsRng).unwrap()
        }

        /// (ARK, ASVK, VLEK certificates, VLEK key) for TCB bl=3,tee=0,snp=8,ucode=115.
        pub fn make() -> (Certificate, Certificate, Certificate, EcKey) {
            let ark_key = RsaPrivateKey::new(&mut OsRng, 1024).unwrap();
            let asvk_key = RsaPrivateKey::new(&mut OsRng, 1024).unwrap();
            let vlek_key = EcKey::random(&mut OsRng);
            let rsa_spki = |k: &RsaPrivateKey| spki(RsaPublicKey::from(k).to_public_key_der().unwrap().as_bytes());
            let ark = cert("CN=ARK-Milan", "CN=ARK-Milan", rsa_spki(&ark_key), &ark_key, vec![]);
            let asvk = cert("CN=ARK-Milan", "CN=SEV-VLEK-Milan", rsa_spki(&asvk_key), &ark_key, vec![]);
            let vlek_spki = spki(vlek_key.verifying_key().to_public_key_der().unwrap().as_bytes());
            let exts = vec![
                spl("1.3.6.1.4.1.3704.1.3.1", 3),
                spl("1.3.6.1.4.1.3704.1.3.2", 0),
                spl("1.3.6.1.4.1.3704.1.3.3", 8),
                spl("1.3.6.1.4.1.3704.1.3.8", 115),
            ];
            let vlek = cert("CN=SEV-VLEK-Milan", "CN=SEV-VLEK", vlek_spki, &asvk_key, exts);
            (ark, asvk, vlek, vlek_key)
        }
    }

    #[test]
    fn a_vlek_signed_report_verifies_through_the_asvk_and_a_vcek_claim_does_not() {
        let (ark, asvk, vlek, key) = vlek_chain::make();
        let tcb = crate::snp::report::Tcb { bootloader: 3, tee: 0, snp: 8, microcode: 115 };
        let body = crate::snp::report::AttestationReport {
            cpuid: Some(crate::snp::report::CpuidFms::MILAN_B0),
            chip_id: [0; 64], // VLEK reports need not carry a chip id
            mask_chip_key: false,
            signing_key: crate::snp::report::signing_key::VLEK,
            reported_tcb: tcb,
            ..Default::default()
        };
        let report = SnpReport::parse(&body.sign(&key).unwrap()).unwrap();
        let mut certs = SnpCerts::default();
        for c in [&ark, &asvk, &vlek] {
            certs.add(c.clone(), "test").unwrap();
        }
        assert_eq!(CertRole::of(&asvk), Some(CertRole::Asvk));
        let opts = SnpVerifyOptions { certs, root: TrustedRoot::Given(Box::new(ark)), now: now() };
        let v = verify(&report, &opts, &Expectations::default());
        assert!(v.passed(), "{:#?}", v.checks);
        assert!(v.get("snp.ask").unwrap().detail.starts_with("ASVK"), "{:#?}", v.checks);
        assert!(v.get("snp.chip_id").is_none(), "a VLEK has no hwID to compare");

        // The same key claimed as a VCEK (SIGNING_KEY 0) is refused.
        let as_vcek =
            crate::snp::report::AttestationReport { signing_key: crate::snp::report::signing_key::VCEK, ..body };
        let report = SnpReport::parse(&as_vcek.sign(&key).unwrap()).unwrap();
        let v = verify(&report, &opts, &Expectations::default());
        assert_eq!(v.failed(), ["snp.signature"]);
    }
}
