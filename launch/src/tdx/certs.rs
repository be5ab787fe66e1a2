//! The emulated TDX platform's Intel-style key chain: a root CA, a "PCK Platform CA",
//! a PCK (Provisioning Certification Key) leaf certificate carrying Intel's SGX
//! extensions, a "TCB Signing" certificate for collateral, and the quoting enclave's
//! attestation key; all ECDSA P-256 with SHA-256 like Intel's, generated once per
//! installation and cached. Also the X.509 checks a quote verifier needs (a PEM chain
//! from a quote, verified up to a trusted root), which work on Intel's real chains too.
//!
//! The certificates copy the structure of Intel's (subject name layout, key usages,
//! basic constraints, key identifiers; no CRL distribution points, since no Intel
//! server knows these keys) but are marked as emulated in every subject:
//! `CN=cvmm emulated SGX Root CA, O=cvmm emulated, L=Santa Clara, ST=CA, C=US`, so a
//! verifier that pins Intel's root rejects them and one told to trust this root
//! accepts quotes from the emulated platform.
//!
//! The PCK certificate's extension `1.2.840.113741.1.13.1` ([`SgxExtensions`], Intel's
//! "PCK Certificate and CRL Profile Specification") carries the PPID (`.1`), the TCB
//! (`.2`: sixteen SGX TCB component SVNs `.2.1`-`.2.16`, PCESVN `.2.17`, CPUSVN
//! `.2.18`), the PCE-ID (`.3`), the FMSPC (`.4`), the SGX type (`.5`), and for a
//! Platform CA's certificate the platform instance id (`.6`) and configuration (`.7`:
//! dynamic platform, cached keys, SMT enabled).
//!
//! The cache is one PEM file, [`BUNDLE_FILE`], in the directory [`default_cache_dir`]
//! names: five PKCS#8 private keys (root, PCK Platform CA, PCK, TCB signing,
//! attestation key) then four certificates (root, PCK Platform CA, PCK, TCB signing),
//! kept as [`crate::cert_cache`] keeps every chain (private, published without
//! replacing a valid bundle another process published first, which is adopted
//! instead).
//! The report MAC key the emulated TDX module and quoting enclave share
//! ([`EmulatedIntelChain::report_mac_key`]) and the QE id are derived from the PCK
//! key, so they need no file of their own.

use std::path::{Path, PathBuf};
use std::time::Duration;

use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{DerSignature, Signature, SigningKey, VerifyingKey};
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use rand_core::{OsRng, RngCore};
use thiserror::Error;
use x509_cert::builder::Builder;
use x509_cert::der::asn1::{Any, OctetString};
use x509_cert::der::referenced::OwnedToRef;
use x509_cert::der::{Decode, Encode, Reader, SliceReader, Tag, Tagged};
use x509_cert::ext::pkix::{AuthorityKeyIdentifier, BasicConstraints, KeyUsage, KeyUsages, SubjectKeyIdentifier};
use x509_cert::ext::Extension;
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::ObjectIdentifier;
use x509_cert::Certificate;

use super::report::{hmac_sha256, ReportMacKey};
use crate::cert_cache::{self, CacheError, CachedChain};
use crate::x509::{self, attr, build_err, encode_err, ext, pem, pem_blocks, CertSpec, X509Error};

/// The cache file in the chain directory.
pub const BUNDLE_FILE: &str = "chain-v1.pem";
/// The chain directory's name under the cvmm cache directory.
pub const CHAIN_DIR: &str = "tdx-chain";
/// The TCB the emulated platform's PCK certificate is made for: the SGX TCB components,
/// PCESVN and CPUSVN of the dcap-qvl sample quote's (real) PCK certificate.
pub const EMULATED_TCB: PckTcb = PckTcb {
    sgx_tcb_comp_svn: [3, 3, 2, 2, 4, 1, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0],
    pce_svn: 11,
    cpu_svn: [3, 3, 2, 2, 4, 1, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0],
};
/// The emulated platform's FMSPC (family/model/stepping and platform type, in Intel's
/// format: a Sapphire Rapids-like `00806F050000`).
pub const EMULATED_FMSPC: [u8; 6] = [0x00, 0x80, 0x6f, 0x05, 0x00, 0x00];
/// The emulated platform's PCE-ID.
pub const EMULATED_PCE_ID: [u8; 2] = [0, 0];
/// SGX type "Scalable", as multi-socket TDX platforms have.
pub const SGX_TYPE_SCALABLE: u8 = 1;

const CA_LIFETIME: Duration = Duration::from_secs(25 * 365 * 86_400);
const LEAF_LIFETIME: Duration = Duration::from_secs(7 * 365 * 86_400);
/// Labels of the values derived from the PCK key.
const REPORT_KEY_LABEL: &[u8] = b"cvmm emulated TDX REPORT_KEY2";
const QE_ID_LABEL: &[u8] = b"cvmm emulated TDX QE ID";

/// Object identifiers.
mod oid {
    use x509_cert::spki::ObjectIdentifier as Oid;
    /// Intel's SGX extensions: 1.2.840.113741.1.13.1 and its arcs.
    pub const SGX_EXTENSIONS: Oid = Oid::new_unwrap("1.2.840.113741.1.13.1");
    pub const PPID: Oid = Oid::new_unwrap("1.2.840.113741.1.13.1.1");
    pub const TCB: Oid = Oid::new_unwrap("1.2.840.113741.1.13.1.2");
    pub const PCESVN: Oid = Oid::new_unwrap("1.2.840.113741.1.13.1.2.17");
    pub const CPUSVN: Oid = Oid::new_unwrap("1.2.840.113741.1.13.1.2.18");
    pub const PCE_ID: Oid = Oid::new_unwrap("1.2.840.113741.1.13.1.3");
    pub const FMSPC: Oid = Oid::new_unwrap("1.2.840.113741.1.13.1.4");
    pub const SGX_TYPE: Oid = Oid::new_unwrap("1.2.840.113741.1.13.1.5");
    pub const PLATFORM_INSTANCE_ID: Oid = Oid::new_unwrap("1.2.840.113741.1.13.1.6");
    pub const CONFIGURATION: Oid = Oid::new_unwrap("1.2.840.113741.1.13.1.7");
    pub const DYNAMIC_PLATFORM: Oid = Oid::new_unwrap("1.2.840.113741.1.13.1.7.1");
    pub const CACHED_KEYS: Oid = Oid::new_unwrap("1.2.840.113741.1.13.1.7.2");
    pub const SMT_ENABLED: Oid = Oid::new_unwrap("1.2.840.113741.1.13.1.7.3");
    /// ecdsa-with-SHA256.
    pub const ECDSA_WITH_SHA256: Oid = Oid::new_unwrap("1.2.840.10045.4.3.2");
    pub const BASIC_CONSTRAINTS: Oid = Oid::new_unwrap("2.5.29.19");
}

/// The TCB component `i` (1-16) of the TCB sequence.
fn tcb_comp_oid(i: usize) -> Result<ObjectIdentifier, String> {
    ObjectIdentifier::new(&format!("{}.{i}", oid::TCB)).map_err(|e| e.to_string())
}

/// Errors from creating, loading, exporting or verifying a chain.
#[derive(Debug, Error)]
pub enum CertError {
    /// The cache directory or one of its files.
    #[error(transparent)]
    Cache(#[from] CacheError),
    /// Encoding or building a certificate, key, name or extension.
    #[error(transparent)]
    X509(#[from] X509Error),
    /// The OS random number generator failed.
    #[error("cannot get random bytes: {0}")]
    Rng(#[source] rand_core::Error),
    /// A cached bundle is not what this module writes.
    #[error("invalid emulated Intel chain {path}: {reason}")]
    Invalid {
        /// The bundle file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A certificate chain does not verify.
    #[error("certificate chain: {0}")]
    Chain(String),
}

/// The TCB a PCK certificate is issued for (extension `.2`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PckTcb {
    /// SGX TCB component SVNs 1-16 (`.2.1`-`.2.16`).
    pub sgx_tcb_comp_svn: [u8; 16],
    /// PCESVN (`.2.17`).
    pub pce_svn: u16,
    /// CPUSVN (`.2.18`).
    pub cpu_svn: [u8; 16],
}

/// The platform configuration of a Platform CA's PCK certificate (extension `.7`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PlatformConfiguration {
    /// dynamicPlatform (`.7.1`).
    pub dynamic_platform: bool,
    /// cachedKeys (`.7.2`).
    pub cached_keys: bool,
    /// SMTEnabled (`.7.3`).
    pub smt_enabled: bool,
}

/// Intel's SGX extensions of a PCK certificate (OID 1.2.840.113741.1.13.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SgxExtensions {
    /// PPID: the platform provisioning id.
    pub ppid: [u8; 16],
    /// The TCB.
    pub tcb: PckTcb,
    /// PCE-ID.
    pub pce_id: [u8; 2],
    /// FMSPC.
    pub fmspc: [u8; 6],
    /// SGX type: 0 standard, 1 scalable, 2 scalable with integrity.
    pub sgx_type: u8,
    /// Platform instance id (Platform CA certificates only).
    pub platform_instance_id: Option<[u8; 16]>,
    /// Platform configuration (Platform CA certificates only).
    pub configuration: Option<PlatformConfiguration>,
}

/// DER of a SEQUENCE with the given (already encoded) elements.
fn der_seq(parts: &[&[u8]]) -> Result<Vec<u8>, String> {
    Any::new(Tag::Sequence, parts.concat()).and_then(|a| a.to_der()).map_err(|e| e.to_string())
}

/// DER of `SEQUENCE { oid, value }`, `value` already encoded.
fn der_pair(id: ObjectIdentifier, value: &[u8]) -> Result<Vec<u8>, String> {
    der_seq(&[&id.to_der().map_err(|e| e.to_string())?, value])
}

fn der<T: Encode>(value: &T) -> Result<Vec<u8>, String> {
    value.to_der().map_err(|e| e.to_string())
}

fn der_octets(bytes: &[u8]) -> Result<Vec<u8>, String> {
    der(&OctetString::new(bytes).map_err(|e| e.to_string())?)
}

/// The elements of a DER SEQUENCE.
fn seq_items(any: &Any) -> Result<Vec<Any>, String> {
    if any.tag() != Tag::Sequence {
        return Err(format!("expected a SEQUENCE, found {}", any.tag()));
    }
    let mut reader = SliceReader::new(any.value()).map_err(|e| e.to_string())?;
    let mut items = Vec::new();
    while !reader.is_finished() {
        items.push(Any::decode(&mut reader).map_err(|e| e.to_string())?);
    }
    Ok(items)
}

/// The (OID, value) elements of a SEQUENCE OF `SEQUENCE { oid, value }`.
fn oid_pairs(any: &Any) -> Result<Vec<(ObjectIdentifier, Any)>, String> {
    seq_items(any)?
        .iter()
        .map(|item| {
            let mut parts = seq_items(item)?.into_iter();
            let (Some(id), Some(value), None) = (parts.next(), parts.next(), parts.next()) else {
                return Err("an SGX extension entry is not an (OID, value) pair".into());
            };
            let id: ObjectIdentifier = decode_any(&id, "OID")?;
            Ok((id, value))
        })
        .collect()
}

/// Decodes a value given as [`Any`] as `T`.
fn decode_any<T: for<'a> Decode<'a>>(any: &Any, what: &str) -> Result<T, String> {
    T::from_der(&der(any)?).map_err(|e| format!("{what}: {e}"))
}

fn octets<const N: usize>(any: &Any, what: &str) -> Result<[u8; N], String> {
    let o: OctetString = decode_any(any, what)?;
    o.as_bytes().try_into().map_err(|_| format!("{what} is {} bytes, not {N}", o.as_bytes().len()))
}

impl SgxExtensions {
    /// The DER of the extension's value, in the order Intel's certificates list it.
    pub fn to_der(&self) -> Result<Vec<u8>, CertError> {
        Ok(self.encode().map_err(|reason| X509Error::Encode { which: "SGX extensions", reason })?)
    }

    fn encode(&self) -> Result<Vec<u8>, String> {
        let mut tcb = Vec::new();
        for (i, svn) in self.tcb.sgx_tcb_comp_svn.iter().enumerate() {
            tcb.push(der_pair(tcb_comp_oid(i + 1)?, &der(svn)?)?);
        }
        tcb.push(der_pair(oid::PCESVN, &der(&self.tcb.pce_svn)?)?);
        tcb.push(der_pair(oid::CPUSVN, &der_octets(&self.tcb.cpu_svn)?)?);
        let tcb = der_seq(&tcb.iter().map(Vec::as_slice).collect::<Vec<_>>())?;
        let sgx_type = der(&Any::new(Tag::Enumerated, [self.sgx_type]).map_err(|e| e.to_string())?)?;
        let mut items = vec![
            der_pair(oid::PPID, &der_octets(&self.ppid)?)?,
            der_pair(oid::TCB, &tcb)?,
            der_pair(oid::PCE_ID, &der_octets(&self.pce_id)?)?,
            der_pair(oid::FMSPC, &der_octets(&self.fmspc)?)?,
            der_pair(oid::SGX_TYPE, &sgx_type)?,
        ];
        if let Some(id) = &self.platform_instance_id {
            items.push(der_pair(oid::PLATFORM_INSTANCE_ID, &der_octets(id)?)?);
        }
        if let Some(c) = &self.configuration {
            let flags = [
                der_pair(oid::DYNAMIC_PLATFORM, &der(&c.dynamic_platform)?)?,
                der_pair(oid::CACHED_KEYS, &der(&c.cached_keys)?)?,
                der_pair(oid::SMT_ENABLED, &der(&c.smt_enabled)?)?,
            ];
            let flags = der_seq(&flags.iter().map(Vec::as_slice).collect::<Vec<_>>())?;
            items.push(der_pair(oid::CONFIGURATION, &flags)?);
        }
        der_seq(&items.iter().map(Vec::as_slice).collect::<Vec<_>>())
    }

    /// Reads the extension's value (DER).
    pub fn from_der(bytes: &[u8]) -> Result<Self, String> {
        let top = Any::from_der(bytes).map_err(|e| format!("SGX extensions: {e}"))?;
        let items = oid_pairs(&top)?;
        let find = |id: ObjectIdentifier| items.iter().find(|(i, _)| *i == id).map(|(_, v)| v);
        let need = |id: ObjectIdentifier, what: &str| find(id).ok_or(format!("no {what} ({id})"));
        let tcb_items = oid_pairs(need(oid::TCB, "TCB")?)?;
        let tcb_find = |id: ObjectIdentifier| tcb_items.iter().find(|(i, _)| *i == id).map(|(_, v)| v);
        let mut sgx_tcb_comp_svn = [0u8; 16];
        for (i, svn) in sgx_tcb_comp_svn.iter_mut().enumerate() {
            let id = tcb_comp_oid(i + 1)?;
            *svn = decode_any(tcb_find(id).ok_or(format!("no TCB component {id}"))?, "TCB component")?;
        }
        let tcb = PckTcb {
            sgx_tcb_comp_svn,
            pce_svn: decode_any(tcb_find(oid::PCESVN).ok_or("no PCESVN")?, "PCESVN")?,
            cpu_svn: octets(tcb_find(oid::CPUSVN).ok_or("no CPUSVN")?, "CPUSVN")?,
        };
        let sgx_type = need(oid::SGX_TYPE, "SGX type")?;
        if sgx_type.tag() != Tag::Enumerated || sgx_type.value().len() != 1 {
            return Err("the SGX type is not a one-byte ENUMERATED".into());
        }
        let configuration = match find(oid::CONFIGURATION) {
            None => None,
            Some(c) => {
                let flags = oid_pairs(c)?;
                let flag = |id: ObjectIdentifier| -> Result<bool, String> {
                    let v = flags.iter().find(|(i, _)| *i == id).map(|(_, v)| v).ok_or(format!("no flag {id}"))?;
                    decode_any(v, "configuration flag")
                };
                Some(PlatformConfiguration {
                    dynamic_platform: flag(oid::DYNAMIC_PLATFORM)?,
                    cached_keys: flag(oid::CACHED_KEYS)?,
                    smt_enabled: flag(oid::SMT_ENABLED)?,
                })
            }
        };
        Ok(Self {
            ppid: octets(need(oid::PPID, "PPID")?, "PPID")?,
            tcb,
            pce_id: octets(need(oid::PCE_ID, "PCE-ID")?, "PCE-ID")?,
            fmspc: octets(need(oid::FMSPC, "FMSPC")?, "FMSPC")?,
            sgx_type: sgx_type.value()[0],
            platform_instance_id: find(oid::PLATFORM_INSTANCE_ID)
                .map(|v| octets(v, "platform instance id"))
                .transpose()?,
            configuration,
        })
    }

    /// Reads the extensions of a PCK certificate, real or emulated.
    pub fn from_certificate(cert: &Certificate) -> Result<Self, String> {
        let exts = cert.tbs_certificate.extensions.as_deref().unwrap_or_default();
        let ext = exts
            .iter()
            .find(|e| e.extn_id == oid::SGX_EXTENSIONS)
            .ok_or(format!("no SGX extensions ({})", oid::SGX_EXTENSIONS))?;
        Self::from_der(ext.extn_value.as_bytes())
    }
}

/// The emulated Intel key chain: keys and certificates.
#[derive(Clone)]
pub struct EmulatedIntelChain {
    root_key: SigningKey,
    pck_ca_key: SigningKey,
    pck_key: SigningKey,
    tcb_signing_key: SigningKey,
    attestation_key: SigningKey,
    root_der: Vec<u8>,
    pck_ca_der: Vec<u8>,
    pck_der: Vec<u8>,
    tcb_signing_der: Vec<u8>,
    sgx: SgxExtensions,
}

impl std::fmt::Debug for EmulatedIntelChain {
    /// Names the platform, never the keys.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmulatedIntelChain")
            .field("fmspc", &hex::encode(self.sgx.fmspc))
            .field("ppid", &hex::encode(&self.sgx.ppid[..4]))
            .finish_non_exhaustive()
    }
}

/// The directory the chain is cached in: [`CHAIN_DIR`] in the cvmm cache directory
/// (`$CVMM_CACHE_DIR/tdx-chain`, else `$XDG_CACHE_HOME/cvmm/tdx-chain`, else
/// `$HOME/.cache/cvmm/tdx-chain`; empty and relative values are ignored, as the XDG
/// specification asks).
pub fn default_cache_dir() -> Result<PathBuf, CertError> {
    Ok(cert_cache::cache_dir(CHAIN_DIR)?)
}

impl EmulatedIntelChain {
    /// Loads the chain cached in `dir`, or generates one ([`Self::generate`]) and
    /// caches it there. A bundle that does not load is regenerated and replaced.
    pub fn load_or_create(dir: &Path) -> Result<Self, CertError> {
        cert_cache::load_or_create(dir, ())
    }

    /// [`Self::load_or_create`] in [`default_cache_dir`].
    pub fn load_or_create_default() -> Result<Self, CertError> {
        Self::load_or_create(&default_cache_dir()?)
    }

    /// Loads and checks a bundle: every key parses and matches its certificate, the
    /// root signs itself, the PCK Platform CA and the TCB signing certificate, the
    /// Platform CA signs the PCK certificate, and the SGX extensions parse.
    pub fn load(path: &Path) -> Result<Self, CertError> {
        cert_cache::load(path, ())
    }

    /// Assembles and checks a chain from its keys (root, PCK Platform CA, PCK, TCB
    /// signing, attestation) and DER certificates (root, PCK Platform CA, PCK, TCB
    /// signing).
    fn from_parts(keys: [SigningKey; 5], ders: [Vec<u8>; 4]) -> Result<Self, String> {
        let [root_key, pck_ca_key, pck_key, tcb_signing_key, attestation_key] = keys;
        let [root_der, pck_ca_der, pck_der, tcb_signing_der] = ders;
        let parse = |der: &[u8], which: &str| Certificate::from_der(der).map_err(|e| format!("{which}: {e}"));
        let root = parse(&root_der, "root certificate")?;
        let pck_ca = parse(&pck_ca_der, "PCK Platform CA certificate")?;
        let pck = parse(&pck_der, "PCK certificate")?;
        let tcb_signing = parse(&tcb_signing_der, "TCB signing certificate")?;
        for (key, cert, which) in [
            (&root_key, &root, "root"),
            (&pck_ca_key, &pck_ca, "PCK Platform CA"),
            (&pck_key, &pck, "PCK"),
            (&tcb_signing_key, &tcb_signing, "TCB signing"),
        ] {
            if ec_public_key(cert)? != *key.verifying_key() {
                return Err(format!("the {which} key is not the one its certificate names"));
            }
        }
        let root_public = root_key.verifying_key();
        check_signed_by(&root, root_public).map_err(|e| format!("root self-signature: {e}"))?;
        check_signed_by(&pck_ca, root_public).map_err(|e| format!("PCK Platform CA signature by the root: {e}"))?;
        check_signed_by(&tcb_signing, root_public).map_err(|e| format!("TCB signing signature by the root: {e}"))?;
        check_signed_by(&pck, pck_ca_key.verifying_key()).map_err(|e| format!("PCK signature by its CA: {e}"))?;
        let sgx = SgxExtensions::from_certificate(&pck)?;
        Ok(Self {
            root_key,
            pck_ca_key,
            pck_key,
            tcb_signing_key,
            attestation_key,
            root_der,
            pck_ca_der,
            pck_der,
            tcb_signing_der,
            sgx,
        })
    }

    /// Generates a new chain: fresh keys, a random PPID and platform instance id, and
    /// a PCK certificate for [`EMULATED_TCB`], [`EMULATED_FMSPC`] and
    /// [`EMULATED_PCE_ID`].
    pub fn generate() -> Result<Self, CertError> {
        let mut random = [0u8; 32];
        OsRng.try_fill_bytes(&mut random).map_err(CertError::Rng)?;
        let sgx = SgxExtensions {
            ppid: array16(&random[..16]),
            tcb: EMULATED_TCB,
            pce_id: EMULATED_PCE_ID,
            fmspc: EMULATED_FMSPC,
            sgx_type: SGX_TYPE_SCALABLE,
            platform_instance_id: Some(array16(&random[16..])),
            configuration: Some(PlatformConfiguration { dynamic_platform: true, cached_keys: true, smt_enabled: true }),
        };
        let root_key = SigningKey::random(&mut OsRng);
        let pck_ca_key = SigningKey::random(&mut OsRng);
        let pck_key = SigningKey::random(&mut OsRng);
        let tcb_signing_key = SigningKey::random(&mut OsRng);
        let attestation_key = SigningKey::random(&mut OsRng);

        let root_name = emulated_name("cvmm emulated SGX Root CA")?;
        let pck_ca_name = emulated_name("cvmm emulated SGX PCK Platform CA")?;
        let root_spki = x509::spki(root_key.verifying_key(), "root")?;
        let root_ski =
            SubjectKeyIdentifier::try_from(root_spki.owned_to_ref()).map_err(|e| encode_err("root SKI", e))?;
        let root_aki = AuthorityKeyIdentifier {
            key_identifier: Some(root_ski.0.clone()),
            authority_cert_issuer: None,
            authority_cert_serial_number: None,
        };
        let ca_usage = KeyUsage(KeyUsages::KeyCertSign | KeyUsages::CRLSign);
        let leaf_usage = KeyUsage(KeyUsages::DigitalSignature | KeyUsages::NonRepudiation);
        let root = build_cert(
            "root",
            CertSpec {
                issuer: Some(root_name.clone()),
                serial: random_serial("root")?,
                lifetime: CA_LIFETIME,
                subject: root_name.clone(),
                spki: root_spki,
                extensions: vec![
                    ext(&root_aki, "root")?,
                    ext(&root_ski, "root")?,
                    ext(&ca_usage, "root")?,
                    ext(&BasicConstraints { ca: true, path_len_constraint: Some(1) }, "root")?,
                ],
            },
            &root_key,
        )?;
        let pck_ca_spki = x509::spki(pck_ca_key.verifying_key(), "PCK Platform CA")?;
        let pck_ca_ski = SubjectKeyIdentifier::try_from(pck_ca_spki.owned_to_ref())
            .map_err(|e| encode_err("PCK Platform CA SKI", e))?;
        let pck_ca = build_cert(
            "PCK Platform CA",
            CertSpec {
                issuer: Some(root_name.clone()),
                serial: random_serial("PCK Platform CA")?,
                lifetime: CA_LIFETIME,
                subject: pck_ca_name.clone(),
                spki: pck_ca_spki,
                extensions: vec![
                    ext(&root_aki, "PCK Platform CA")?,
                    ext(&pck_ca_ski, "PCK Platform CA")?,
                    ext(&ca_usage, "PCK Platform CA")?,
                    ext(&BasicConstraints { ca: true, path_len_constraint: Some(0) }, "PCK Platform CA")?,
                ],
            },
            &root_key,
        )?;
        let leaf = |which: &'static str, cn: &str, key: &SigningKey, issuer: &Name, aki: &SubjectKeyIdentifier| {
            let leaf_spki = x509::spki(key.verifying_key(), which)?;
            let ski = SubjectKeyIdentifier::try_from(leaf_spki.owned_to_ref()).map_err(|e| encode_err(which, e))?;
            let aki = AuthorityKeyIdentifier {
                key_identifier: Some(aki.0.clone()),
                authority_cert_issuer: None,
                authority_cert_serial_number: None,
            };
            Ok::<_, CertError>(CertSpec {
                issuer: Some(issuer.clone()),
                serial: random_serial(which)?,
                lifetime: LEAF_LIFETIME,
                subject: emulated_name(cn)?,
                spki: leaf_spki,
                extensions: vec![
                    ext(&aki, which)?,
                    ext(&ski, which)?,
                    ext(&leaf_usage, which)?,
                    ext(&BasicConstraints { ca: false, path_len_constraint: None }, which)?,
                ],
            })
        };
        let mut pck_spec = leaf("PCK", "cvmm emulated SGX PCK Certificate", &pck_key, &pck_ca_name, &pck_ca_ski)?;
        let sgx_value = OctetString::new(sgx.to_der()?).map_err(|e| encode_err("SGX extensions", e))?;
        pck_spec.extensions.push(Extension { extn_id: oid::SGX_EXTENSIONS, critical: false, extn_value: sgx_value });
        let pck = build_cert("PCK", pck_spec, &pck_ca_key)?;
        let tcb_spec = leaf("TCB signing", "cvmm emulated SGX TCB Signing", &tcb_signing_key, &root_name, &root_ski)?;
        let tcb_signing = build_cert("TCB signing", tcb_spec, &root_key)?;

        let der = |c: &Certificate, which| c.to_der().map_err(|e| encode_err(which, e));
        Ok(Self {
            root_der: der(&root, "root")?,
            pck_ca_der: der(&pck_ca, "PCK Platform CA")?,
            pck_der: der(&pck, "PCK")?,
            tcb_signing_der: der(&tcb_signing, "TCB signing")?,
            root_key,
            pck_ca_key,
            pck_key,
            tcb_signing_key,
            attestation_key,
            sgx,
        })
    }

    /// Writes `root.pem` (the root to trust), `pck_chain.pem` (PCK, PCK Platform CA,
    /// root: the chain a quote carries), `pck.pem` and `tcb_signing_chain.pem` (TCB
    /// signing then root, as Intel's TCB-Info-Issuer-Chain) into `dir`.
    pub fn export(&self, dir: &Path) -> Result<(), CertError> {
        let root = pem("CERTIFICATE", &self.root_der)?;
        let pck = pem("CERTIFICATE", &self.pck_der)?;
        let tcb = format!("{}{root}", pem("CERTIFICATE", &self.tcb_signing_der)?);
        let chain = self.pck_chain_pem()?;
        let files = [
            ("root.pem", root.as_str()),
            ("pck_chain.pem", &chain),
            ("pck.pem", &pck),
            ("tcb_signing_chain.pem", &tcb),
        ];
        Ok(cert_cache::export(dir, &files)?)
    }

    /// The PEM chain a quote carries (certification data type 5): the PCK
    /// certificate, the PCK Platform CA, the root.
    pub fn pck_chain_pem(&self) -> Result<String, CertError> {
        Ok(format!(
            "{}{}{}",
            pem("CERTIFICATE", &self.pck_der)?,
            pem("CERTIFICATE", &self.pck_ca_der)?,
            pem("CERTIFICATE", &self.root_der)?
        ))
    }

    /// The root certificate (DER): what a verifier of emulated quotes trusts.
    pub fn root_der(&self) -> &[u8] {
        &self.root_der
    }

    /// The PCK Platform CA certificate (DER).
    pub fn pck_ca_der(&self) -> &[u8] {
        &self.pck_ca_der
    }

    /// The PCK certificate (DER).
    pub fn pck_der(&self) -> &[u8] {
        &self.pck_der
    }

    /// The TCB signing certificate (DER), issued by the root, for signing collateral
    /// (TCB info, QE identity).
    pub fn tcb_signing_der(&self) -> &[u8] {
        &self.tcb_signing_der
    }

    /// The PCK's private key, which signs the quoting enclave's report.
    pub fn pck_signing_key(&self) -> &SigningKey {
        &self.pck_key
    }

    /// The root's private key (it signs CRLs).
    pub fn root_signing_key(&self) -> &SigningKey {
        &self.root_key
    }

    /// The PCK Platform CA's private key (it signs the PCK CRL).
    pub fn pck_ca_signing_key(&self) -> &SigningKey {
        &self.pck_ca_key
    }

    /// The TCB signing key (it signs TCB info and QE identity collateral).
    pub fn tcb_signing_key(&self) -> &SigningKey {
        &self.tcb_signing_key
    }

    /// The quoting enclave's attestation key, which signs quotes.
    pub fn attestation_key(&self) -> &SigningKey {
        &self.attestation_key
    }

    /// The SGX extensions of the PCK certificate: the platform's PPID, TCB, FMSPC.
    pub fn sgx_extensions(&self) -> &SgxExtensions {
        &self.sgx
    }

    /// The key the emulated TDX module MACs TD reports with and the emulated quoting
    /// enclave checks them with (in place of the CPU's REPORT_KEY2): HMAC-SHA-256 keyed
    /// with the PCK private key over a fixed label.
    pub fn report_mac_key(&self) -> ReportMacKey {
        ReportMacKey::derive(&self.pck_key.to_bytes(), REPORT_KEY_LABEL)
    }

    /// The quoting enclave's id (a quote header's first 16 user-data bytes): the
    /// first 16 bytes of HMAC-SHA-256 keyed with the PCK private key over a fixed
    /// label, so it is stable per platform.
    pub fn qe_id(&self) -> [u8; 16] {
        let mac = hmac_sha256(&self.pck_key.to_bytes(), QE_ID_LABEL);
        let mut id = [0u8; 16];
        id.copy_from_slice(&mac[..16]);
        id
    }
}

impl CachedChain for EmulatedIntelChain {
    type Error = CertError;
    type Params = ();
    const BUNDLE_FILE: &'static str = BUNDLE_FILE;
    const NAME: &'static str = "the emulated Intel key chain";

    fn from_bundle(path: &Path, text: &[u8], (): ()) -> Result<Self, CertError> {
        let invalid = |reason: String| CertError::Invalid { path: path.into(), reason };
        let blocks = pem_blocks(text).map_err(invalid)?;
        let labels: Vec<&str> = blocks.iter().map(|(l, _)| l.as_str()).collect();
        let expected = [["PRIVATE KEY"; 5].as_slice(), &["CERTIFICATE"; 4]].concat();
        if labels != expected {
            return Err(invalid(format!("expected 5 private keys then 4 certificates, found {labels:?}")));
        }
        let key = |i: usize| SigningKey::from_pkcs8_der(&blocks[i].1).map_err(|e| invalid(format!("key {i}: {e}")));
        let keys = [key(0)?, key(1)?, key(2)?, key(3)?, key(4)?];
        let certs = [blocks[5].1.clone(), blocks[6].1.clone(), blocks[7].1.clone(), blocks[8].1.clone()];
        Self::from_parts(keys, certs).map_err(invalid)
    }

    fn generate_with((): ()) -> Result<Self, CertError> {
        Self::generate()
    }

    fn bundle(&self) -> Result<String, CertError> {
        let mut out = String::new();
        for key in [&self.root_key, &self.pck_ca_key, &self.pck_key, &self.tcb_signing_key, &self.attestation_key] {
            let der = key.to_pkcs8_der().map_err(|e| encode_err("private key", e))?;
            out.push_str(&pem("PRIVATE KEY", der.as_bytes())?);
        }
        for der in [&self.root_der, &self.pck_ca_der, &self.pck_der, &self.tcb_signing_der] {
            out.push_str(&pem("CERTIFICATE", der)?);
        }
        Ok(out)
    }
}

fn array16(b: &[u8]) -> [u8; 16] {
    let mut out = [0u8; 16];
    out.copy_from_slice(b);
    out
}

/// The P-256 public key a certificate names.
pub fn ec_public_key(cert: &Certificate) -> Result<VerifyingKey, String> {
    let spki = &cert.tbs_certificate.subject_public_key_info;
    VerifyingKey::from_sec1_bytes(spki.subject_public_key.raw_bytes()).map_err(|e| format!("not a P-256 key: {e}"))
}

/// Checks that `cert` carries an ECDSA-with-SHA-256 signature by `issuer`, over the
/// certificate's own TBS bytes.
pub fn check_signed_by(cert: &Certificate, issuer: &VerifyingKey) -> Result<(), String> {
    if cert.signature_algorithm.oid != oid::ECDSA_WITH_SHA256 {
        return Err(format!("signature algorithm {} is not ecdsa-with-SHA256", cert.signature_algorithm.oid));
    }
    let tbs = cert.tbs_certificate.to_der().map_err(|e| e.to_string())?;
    let sig = Signature::from_der(cert.signature.raw_bytes()).map_err(|e| e.to_string())?;
    issuer.verify(&tbs, &sig).map_err(|_| "the signature does not verify".to_string())
}

/// Whether a certificate's basic constraints make it a CA.
fn is_ca(cert: &Certificate) -> bool {
    let exts = cert.tbs_certificate.extensions.as_deref().unwrap_or_default();
    exts.iter()
        .find(|e| e.extn_id == oid::BASIC_CONSTRAINTS)
        .and_then(|e| BasicConstraints::from_der(e.extn_value.as_bytes()).ok())
        .is_some_and(|bc| bc.ca)
}

/// The certificates of a PEM chain (trailing NUL bytes, as some quotes carry, and
/// text outside the blocks are ignored).
pub fn parse_pem_chain(text: &[u8]) -> Result<Vec<Certificate>, CertError> {
    let blocks = pem_blocks(text).map_err(CertError::Chain)?;
    if blocks.is_empty() {
        return Err(CertError::Chain("no PEM certificate".into()));
    }
    blocks
        .iter()
        .map(|(label, der)| {
            if label != "CERTIFICATE" {
                return Err(CertError::Chain(format!("a PEM block is a {label}, not a CERTIFICATE")));
            }
            Certificate::from_der(der).map_err(|e| CertError::Chain(format!("certificate: {e}")))
        })
        .collect()
}

/// Verifies a chain, leaf first: each certificate is signed (ECDSA P-256, SHA-256) by
/// the next, every certificate after the leaf is a CA, and the last is `trusted_root`
/// (DER, byte for byte) and signs itself. Returns the leaf's public key (for a PCK
/// chain, the key that must have signed the quoting enclave's report).
///
/// Validity periods and revocation are not checked: that is the verifier's policy
/// (dcap-qvl and Intel's QVL check them against collateral).
pub fn verify_chain(chain: &[Certificate], trusted_root: &[u8]) -> Result<VerifyingKey, CertError> {
    let err = CertError::Chain;
    let (Some(leaf), Some(root)) = (chain.first(), chain.last()) else {
        return Err(err("empty".into()));
    };
    if chain.len() < 2 {
        return Err(err("a single certificate, no issuer".into()));
    }
    if root.to_der().map_err(|e| err(e.to_string()))? != trusted_root {
        return Err(err("the chain does not end in the trusted root".into()));
    }
    let root_key = ec_public_key(root).map_err(err)?;
    check_signed_by(root, &root_key).map_err(|e| err(format!("root self-signature: {e}")))?;
    for (i, pair) in chain.windows(2).enumerate() {
        let issuer_key = ec_public_key(&pair[1]).map_err(|e| err(format!("certificate {}: {e}", i + 1)))?;
        if !is_ca(&pair[1]) {
            return Err(err(format!("certificate {} issues certificate {i} but is not a CA", i + 1)));
        }
        if pair[0].tbs_certificate.issuer != pair[1].tbs_certificate.subject {
            return Err(err(format!("certificate {i}'s issuer is not certificate {}'s subject", i + 1)));
        }
        check_signed_by(&pair[0], &issuer_key).map_err(|e| err(format!("certificate {i}: {e}")))?;
    }
    ec_public_key(leaf).map_err(err)
}

/// Intel's subject name layout (CN, O, L, ST, C; C a PrintableString, the rest
/// UTF8Strings) with O = "cvmm emulated".
fn emulated_name(cn: &str) -> Result<Name, X509Error> {
    x509::name(&[
        (attr::CN, cn),
        (attr::O, "cvmm emulated"),
        (attr::L, "Santa Clara"),
        (attr::ST, "CA"),
        (attr::C, "US"),
    ])
}

/// A random 20-byte positive serial number, as Intel's certificates have.
fn random_serial(which: &'static str) -> Result<SerialNumber, CertError> {
    let mut serial = [0u8; 20];
    OsRng.try_fill_bytes(&mut serial).map_err(CertError::Rng)?;
    serial[0] = (serial[0] & 0x7f) | 0x10;
    Ok(SerialNumber::new(&serial).map_err(|e| encode_err(which, e))?)
}

/// Builds certificate `which` signed with ECDSA P-256 and SHA-256.
fn build_cert(which: &'static str, spec: CertSpec, signer: &SigningKey) -> Result<Certificate, X509Error> {
    x509::builder(which, spec, signer)?.build::<DerSignature>().map_err(build_err(which))
}

/// The chain the crate's unit tests share, cached under target/<profile>/.
#[cfg(test)]
pub(crate) fn tests_chain() -> &'static EmulatedIntelChain {
    static CHAIN: std::sync::OnceLock<EmulatedIntelChain> = std::sync::OnceLock::new();
    CHAIN.get_or_init(|| EmulatedIntelChain::load_or_create(&tests::test_cache_dir()).expect("the test chain"))
}

/// Reference files: real Intel quotes and roots (see shared/refs/attestation/README.md).
#[cfg(test)]
pub(crate) mod refs {
    /// The file's bytes.
    pub fn read(name: &str) -> Vec<u8> {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/refs/attestation/");
        std::fs::read(format!("{dir}{name}")).unwrap()
    }

    /// Intel's SGX root CA (DER).
    pub fn intel_root_der() -> Vec<u8> {
        x509_cert::der::pem::decode_vec(&read("go-tdx-guest__verify_trusted_root.pem")).unwrap().1
    }

    /// The PEM text between the first BEGIN and the last END of a quote file.
    pub fn pem_chain_of(name: &str) -> Vec<u8> {
        let d = read(name);
        let start = d.windows(11).position(|w| w == b"-----BEGIN ").unwrap();
        let end_tag = b"-----END CERTIFICATE-----";
        let end = d.windows(end_tag.len()).rposition(|w| w == end_tag).unwrap() + end_tag.len();
        d[start..end].to_vec()
    }

    pub const DCAP_QVL_QUOTE: &str = "dcap-qvl__sample_tdx_quote";
    pub const SPR_E4_QUOTE: &str = "go-tdx-guest__testing_testdata_tdx_prod_quote_SPR_E4.dat";
    pub const V5_QUOTE: &str = "go-tdx-guest__testing_testdata_quote_v5_sample.dat";
}

#[cfg(test)]
mod tests {
    use super::refs::*;
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    /// Under target/<profile>/ (the test binary is target/<profile>/deps/launch-*).
    pub(super) fn test_cache_dir() -> PathBuf {
        let exe = std::env::current_exe().unwrap();
        exe.parent().and_then(Path::parent).unwrap().join("cvmm-test-cache").join(CHAIN_DIR)
    }

    fn scratch_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("cvmm-tdx-certs-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn hex16(s: &str) -> [u8; 16] {
        hex::decode(s).unwrap().try_into().unwrap()
    }

    #[test]
    fn sgx_extensions_of_intels_real_pck_certificate_parse() {
        // Arrange: the PCK certificate of dcap-qvl's sample quote; values read with
        // `openssl asn1parse` (independent DER decoder).
        let chain = parse_pem_chain(&pem_chain_of(DCAP_QVL_QUOTE)).unwrap();
        // Act
        let sgx = SgxExtensions::from_certificate(&chain[0]).unwrap();
        // Assert
        assert_eq!(sgx.ppid, hex16("811DCA2A26B952E85BB6448B097BA4FD"));
        assert_eq!(sgx.tcb.sgx_tcb_comp_svn, [3, 3, 2, 2, 4, 1, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(sgx.tcb.pce_svn, 11);
        assert_eq!(sgx.tcb.cpu_svn, hex16("03030202040100050000000000000000"));
        assert_eq!(sgx.pce_id, [0, 0]);
        assert_eq!(hex::encode_upper(sgx.fmspc), "B0C06F000000");
        assert_eq!(sgx.sgx_type, 1);
        assert_eq!(sgx.platform_instance_id, Some(hex16("07828474603E7019DC930775FFE8CDD2")));
        let all = PlatformConfiguration { dynamic_platform: true, cached_keys: true, smt_enabled: true };
        assert_eq!(sgx.configuration, Some(all));
    }

    #[test]
    fn sgx_extensions_encode_exactly_as_intels() {
        // Re-encoding the real certificate's values gives its bytes back.
        let chain = parse_pem_chain(&pem_chain_of(DCAP_QVL_QUOTE)).unwrap();
        let exts = chain[0].tbs_certificate.extensions.as_ref().unwrap();
        let real = exts.iter().find(|e| e.extn_id == oid::SGX_EXTENSIONS).unwrap().extn_value.as_bytes();
        let ours = SgxExtensions::from_der(real).unwrap().to_der().unwrap();
        assert_eq!(hex::encode(ours), hex::encode(real));
    }

    #[test]
    fn intels_real_pck_chains_verify_to_intels_root() {
        let root = intel_root_der();
        for name in [DCAP_QVL_QUOTE, SPR_E4_QUOTE, V5_QUOTE] {
            let chain = parse_pem_chain(&pem_chain_of(name)).unwrap();
            assert_eq!(chain.len(), 3, "{name}");
            let pck = verify_chain(&chain, &root).unwrap();
            assert_eq!(pck, ec_public_key(&chain[0]).unwrap());
        }
    }

    #[test]
    fn real_chain_with_a_flipped_signature_byte_fails() {
        let root = intel_root_der();
        let mut chain = parse_pem_chain(&pem_chain_of(SPR_E4_QUOTE)).unwrap();
        let mut der = chain[0].to_der().unwrap();
        let len = der.len();
        der[len - 5] ^= 1;
        chain[0] = Certificate::from_der(&der).unwrap();
        assert!(verify_chain(&chain, &root).is_err());
        // Out of order.
        let mut chain = parse_pem_chain(&pem_chain_of(SPR_E4_QUOTE)).unwrap();
        chain.swap(0, 1);
        assert!(verify_chain(&chain, &root).is_err());
    }

    #[test]
    fn emulated_chain_does_not_verify_to_intels_root_nor_intels_to_ours() {
        let ours = parse_pem_chain(tests_chain().pck_chain_pem().unwrap().as_bytes()).unwrap();
        let err = verify_chain(&ours, &intel_root_der()).unwrap_err();
        assert!(err.to_string().contains("trusted root"), "{err}");
        let intel = parse_pem_chain(&pem_chain_of(DCAP_QVL_QUOTE)).unwrap();
        assert!(verify_chain(&intel, tests_chain().root_der()).is_err());
        // Intel's leaf and intermediate under our root: the root's signature fails.
        let mixed = [intel[0].clone(), intel[1].clone(), ours[2].clone()];
        assert!(verify_chain(&mixed, tests_chain().root_der()).is_err());
    }

    #[test]
    fn emulated_pck_chain_verifies_and_names_the_pck_key() {
        let chain = tests_chain();
        let certs = parse_pem_chain(chain.pck_chain_pem().unwrap().as_bytes()).unwrap();
        let pck = verify_chain(&certs, chain.root_der()).unwrap();
        assert_eq!(&pck, chain.pck_signing_key().verifying_key());
        assert_eq!(SgxExtensions::from_certificate(&certs[0]).unwrap(), *chain.sgx_extensions());
        assert_eq!(chain.sgx_extensions().tcb, EMULATED_TCB);
        assert_eq!(chain.sgx_extensions().fmspc, EMULATED_FMSPC);
    }

    #[test]
    fn second_load_reuses_the_cached_chain_and_its_derived_values() {
        let first = tests_chain();
        let again = EmulatedIntelChain::load_or_create(&test_cache_dir()).unwrap();
        assert_eq!(again.root_der(), first.root_der());
        assert_eq!(again.pck_der(), first.pck_der());
        assert_eq!(again.attestation_key(), first.attestation_key());
        assert_eq!(again.report_mac_key(), first.report_mac_key());
        assert_eq!(again.qe_id(), first.qe_id());
        let other = EmulatedIntelChain::generate().unwrap();
        assert_ne!(other.report_mac_key(), first.report_mac_key());
        assert_ne!(other.qe_id(), first.qe_id());
        assert_ne!(other.sgx_extensions().ppid, first.sgx_extensions().ppid);
    }

    #[test]
    fn cache_file_is_private() {
        tests_chain();
        let dir = test_cache_dir();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.join(BUNDLE_FILE)), 0o600);
        assert_eq!(mode(&dir), 0o700);
    }

    #[test]
    fn corrupted_cache_is_regenerated() {
        let dir = scratch_dir("corrupt");
        fs::create_dir_all(&dir).unwrap();
        let good = tests_chain().bundle().unwrap();
        fs::write(dir.join(BUNDLE_FILE), &good.as_bytes()[..good.len() * 2 / 3]).unwrap();
        let regenerated = EmulatedIntelChain::load_or_create(&dir).unwrap();
        assert_ne!(regenerated.root_der(), tests_chain().root_der());
        let reloaded = EmulatedIntelChain::load(&dir.join(BUNDLE_FILE)).unwrap();
        assert_eq!(reloaded.pck_der(), regenerated.pck_der());
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn bundle_with_mismatched_key_is_invalid() {
        let mut wrong = tests_chain().clone();
        wrong.pck_key = SigningKey::random(&mut OsRng);
        let dir = scratch_dir("mismatch");
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join(BUNDLE_FILE);
        fs::write(&path, wrong.bundle().unwrap()).unwrap();
        let err = EmulatedIntelChain::load(&path).unwrap_err();
        assert!(err.to_string().contains("PCK key is not the one"), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn publishing_after_another_process_adopts_its_chain() {
        let dir = scratch_dir("race");
        let theirs = EmulatedIntelChain::generate().unwrap();
        let first = cert_cache::publish(theirs.clone(), &dir, false, ()).unwrap();
        assert_eq!(first.root_der(), theirs.root_der());
        let second = cert_cache::publish(tests_chain().clone(), &dir, false, ()).unwrap();
        assert_eq!(second.root_der(), theirs.root_der(), "the loser must adopt the published chain");
        let names: Vec<_> = fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, [BUNDLE_FILE]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn exported_chain_verifies_with_openssl_and_mirrors_intels_structure() {
        let chain = tests_chain();
        let dir = scratch_dir("export");
        chain.export(&dir).unwrap();
        let blocks = pem_blocks(&fs::read(dir.join("pck_chain.pem")).unwrap()).unwrap();
        let ders: Vec<&[u8]> = blocks.iter().map(|(_, d)| d.as_slice()).collect();
        assert_eq!(ders, [chain.pck_der(), chain.pck_ca_der(), chain.root_der()]);
        let root = pem_blocks(&fs::read(dir.join("root.pem")).unwrap()).unwrap();
        assert_eq!(root[0].1, chain.root_der());

        // openssl, where installed, verifies the chain and reads the extensions.
        let pck_ca = dir.join("pck_ca.pem");
        fs::write(&pck_ca, pem("CERTIFICATE", chain.pck_ca_der()).unwrap()).unwrap();
        let openssl =
            |args: &[&str], files: &[&Path]| std::process::Command::new("openssl").args(args).args(files).output().ok();
        let Some(out) = openssl(
            &["verify", "-CAfile"],
            &[&dir.join("root.pem"), Path::new("-untrusted"), &pck_ca, &dir.join("pck.pem")],
        ) else {
            return;
        };
        assert!(out.status.success(), "openssl verify: {}", String::from_utf8_lossy(&out.stderr));
        let tcb_leaf = dir.join("tcb_leaf.pem");
        fs::write(&tcb_leaf, pem("CERTIFICATE", chain.tcb_signing_der()).unwrap()).unwrap();
        let out = openssl(&["verify", "-CAfile"], &[&dir.join("root.pem"), &tcb_leaf]).unwrap();
        assert!(out.status.success(), "openssl verify: {}", String::from_utf8_lossy(&out.stderr));
        let out = openssl(&["x509", "-noout", "-text", "-in"], &[&dir.join("pck.pem")]).unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("ecdsa-with-SHA256") && text.contains("prime256v1"), "{text}");
        assert!(
            text.contains(
                "Issuer: CN = cvmm emulated SGX PCK Platform CA, O = cvmm emulated, L = Santa Clara, ST = CA, C = US"
            ),
            "{text}"
        );
        assert!(text.contains("1.2.840.113741.1.13.1:"), "{text}");
        assert!(text.contains("Digital Signature, Non Repudiation") && text.contains("CA:FALSE"), "{text}");
        let out = openssl(&["x509", "-noout", "-text", "-in"], &[&dir.join("root.pem")]).unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("CA:TRUE, pathlen:1") && text.contains("Certificate Sign, CRL Sign"), "{text}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn pem_chain_parsing_ignores_trailing_nuls_and_rejects_other_blocks() {
        let mut text = tests_chain().pck_chain_pem().unwrap().into_bytes();
        text.extend_from_slice(&[0, 0, 0]);
        assert_eq!(parse_pem_chain(&text).unwrap().len(), 3);
        assert!(matches!(parse_pem_chain(b"\0\0"), Err(CertError::Chain(_))));
        let key = tests_chain().bundle().unwrap();
        let err = parse_pem_chain(key.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("PRIVATE KEY"), "{err}");
    }
}
