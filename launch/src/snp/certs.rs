//! The emulated SNP platform's AMD-style key chain: an ARK (RSA-4096, self-signed), an
//! ASK (RSA-4096, signed by the ARK) and a VCEK (ECDSA P-384, signed by the ASK), each
//! signature RSASSA-PSS with SHA-384, MGF1-SHA-384 and a 48-byte salt, as AMD's own
//! certificates are; generated once per installation and cached.
//!
//! The certificates copy the structure of AMD's Milan chain (the same subject names,
//! serial numbers and extensions; no CRL distribution point, since no AMD server knows
//! these keys): a verifier that pins AMD's ARK rejects this chain, one told to trust
//! this ARK accepts reports from the emulated platform. The VCEK carries AMD's
//! extensions (VCEK certificate and KDS interface specification, AMD 57230):
//! `1.3.6.1.4.1.3704.1.1` structVersion, `.1.2` productName "Milan-B0", `.1.3.1`
//! boot loader SPL, `.1.3.2` TEE SPL, `.1.3.3` SNP SPL, `.1.3.4`-`.1.3.7` reserved SPLs,
//! `.1.3.8` microcode SPL and `.1.4` hwID (the 64-byte chip id), so the TCB and chip id
//! the platform writes into reports come from the certificate ([`EmulatedAmdChain::tcb`],
//! [`EmulatedAmdChain::chip_id`]).
//!
//! The cache is one PEM file, [`BUNDLE_FILE`], in the directory [`default_cache_dir`]
//! names: the three PKCS#8 private keys (ARK, ASK, VCEK) then the three certificates,
//! kept as [`crate::cert_cache`] keeps every chain (private, published without
//! replacing a valid bundle another process published first, which is adopted
//! instead), and regenerated when it does not load or its signatures or keys do not
//! match.

use std::path::{Path, PathBuf};
use std::time::Duration;

use p384::ecdsa::{SigningKey as EcSigningKey, VerifyingKey as EcVerifyingKey};
use rand_core::{OsRng, RngCore};
use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use rsa::signature::Verifier;
use rsa::traits::PublicKeyParts;
use rsa::{RsaPrivateKey, RsaPublicKey};
use sha2::Sha384;
use thiserror::Error;
use x509_cert::builder::Builder;
use x509_cert::der::asn1::{Ia5String, OctetString};
use x509_cert::der::referenced::OwnedToRef;
use x509_cert::der::{Decode, Encode};
use x509_cert::ext::pkix::{AuthorityKeyIdentifier, BasicConstraints, KeyUsage, KeyUsages, SubjectKeyIdentifier};
use x509_cert::ext::Extension;
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::ObjectIdentifier;
use x509_cert::Certificate;

use super::guest_msg::{build_cert_table, cert_guid, CertTableEntry, GuestMsgError};
use super::report::Tcb;
use crate::cert_cache::{self, CacheError, CachedChain};
use crate::x509::{self, attr, build_err, encode_err, ext, pem, pem_blocks, CertSpec, X509Error};

/// The cache file in the chain directory.
pub const BUNDLE_FILE: &str = "chain-v1.pem";
/// The chain directory's name under the cvmm cache directory.
pub const CHAIN_DIR: &str = "snp-chain";
/// The TCB the emulated platform's VCEK is made for (a Milan TCB of firmware 1.55).
pub const EMULATED_TCB: Tcb = Tcb { bootloader: 4, tee: 0, snp: 22, microcode: 213 };
/// The product name in the VCEK (AMD's for EPYC Milan, stepping B0).
pub const PRODUCT_NAME: &str = "Milan-B0";
/// RSA key size of the ARK and ASK.
pub const RSA_BITS: usize = 4096;

/// Length of the PSS salt (the SHA-384 output length, as in AMD's certificates).
const PSS_SALT_LEN: usize = 48;
const CA_LIFETIME: Duration = Duration::from_secs(25 * 365 * 86_400);
const VCEK_LIFETIME: Duration = Duration::from_secs(7 * 365 * 86_400);

/// AMD's private arc for the VCEK and VLEK extensions (AMD 57230, "VCEK Certificate
/// Extensions"): 1.3.6.1.4.1.3704.1; also what the relying party
/// ([`crate::verify::snp`]) reads.
pub(crate) mod oid {
    use x509_cert::spki::ObjectIdentifier as Oid;
    pub const STRUCT_VERSION: Oid = Oid::new_unwrap("1.3.6.1.4.1.3704.1.1");
    pub const PRODUCT_NAME: Oid = Oid::new_unwrap("1.3.6.1.4.1.3704.1.2");
    pub const BL_SPL: Oid = Oid::new_unwrap("1.3.6.1.4.1.3704.1.3.1");
    pub const TEE_SPL: Oid = Oid::new_unwrap("1.3.6.1.4.1.3704.1.3.2");
    pub const SNP_SPL: Oid = Oid::new_unwrap("1.3.6.1.4.1.3704.1.3.3");
    pub const SPL_4: Oid = Oid::new_unwrap("1.3.6.1.4.1.3704.1.3.4");
    pub const SPL_5: Oid = Oid::new_unwrap("1.3.6.1.4.1.3704.1.3.5");
    pub const SPL_6: Oid = Oid::new_unwrap("1.3.6.1.4.1.3704.1.3.6");
    pub const SPL_7: Oid = Oid::new_unwrap("1.3.6.1.4.1.3704.1.3.7");
    pub const UCODE_SPL: Oid = Oid::new_unwrap("1.3.6.1.4.1.3704.1.3.8");
    /// The FMC SPL (Turin and later).
    pub const FMC_SPL: Oid = Oid::new_unwrap("1.3.6.1.4.1.3704.1.3.9");
    pub const HW_ID: Oid = Oid::new_unwrap("1.3.6.1.4.1.3704.1.4");
    /// RSASSA-PSS.
    pub const RSASSA_PSS: Oid = Oid::new_unwrap("1.2.840.113549.1.1.10");
}

/// Errors from creating, loading or exporting the chain.
#[derive(Debug, Error)]
pub enum CertError {
    /// The cache directory or one of its files.
    #[error(transparent)]
    Cache(#[from] CacheError),
    /// Encoding or building a certificate, key or name.
    #[error(transparent)]
    X509(#[from] X509Error),
    /// The OS random number generator failed.
    #[error("cannot get random bytes: {0}")]
    Rng(#[source] rand_core::Error),
    /// RSA key generation failed.
    #[error("cannot generate the {which} RSA key: {source}")]
    RsaKeyGen {
        /// ARK or ASK.
        which: &'static str,
        /// The rsa crate's error.
        #[source]
        source: rsa::Error,
    },
    /// A cached bundle (or a certificate given to [`vcek_tcb_and_chip_id`]) is not
    /// what this module writes.
    #[error("invalid emulated AMD chain {path}: {reason}")]
    Invalid {
        /// The bundle file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

/// The emulated AMD key chain: keys and certificates.
#[derive(Clone)]
pub struct EmulatedAmdChain {
    ark_key: RsaPrivateKey,
    ask_key: RsaPrivateKey,
    vcek_key: EcSigningKey,
    ark_der: Vec<u8>,
    ask_der: Vec<u8>,
    vcek_der: Vec<u8>,
    chip_id: [u8; 64],
    tcb: Tcb,
}

impl std::fmt::Debug for EmulatedAmdChain {
    /// Names the chip and TCB, never the keys.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmulatedAmdChain")
            .field("chip_id", &hex::encode(&self.chip_id[..8]))
            .field("tcb", &format_args!("{:#018x}", self.tcb.to_u64()))
            .finish_non_exhaustive()
    }
}

/// The directory the chain is cached in: [`CHAIN_DIR`] in the cvmm cache directory
/// (`$CVMM_CACHE_DIR/snp-chain`, else `$XDG_CACHE_HOME/cvmm/snp-chain`, else
/// `$HOME/.cache/cvmm/snp-chain`; empty and relative values are ignored, as the XDG
/// specification asks).
pub fn default_cache_dir() -> Result<PathBuf, CertError> {
    Ok(cert_cache::cache_dir(CHAIN_DIR)?)
}

impl EmulatedAmdChain {
    /// Loads the chain cached in `dir`, or generates one (two RSA-4096 keys: seconds)
    /// with a random chip id and [`EMULATED_TCB`] and caches it there. A bundle that
    /// does not load is regenerated and replaced.
    pub fn load_or_create(dir: &Path) -> Result<Self, CertError> {
        Self::load_or_create_sized(dir, RSA_BITS)
    }

    /// [`Self::load_or_create`] with RSA keys of `rsa_bits` (tests use small ones).
    fn load_or_create_sized(dir: &Path, rsa_bits: usize) -> Result<Self, CertError> {
        cert_cache::load_or_create(dir, rsa_bits)
    }

    /// [`Self::load_or_create`] in [`default_cache_dir`].
    pub fn load_or_create_default() -> Result<Self, CertError> {
        Self::load_or_create(&default_cache_dir()?)
    }

    /// Loads and checks a bundle: every key parses and matches its certificate, the
    /// ARK signs itself and the ASK, the ASK signs the VCEK.
    pub fn load(path: &Path) -> Result<Self, CertError> {
        Self::load_sized(path, RSA_BITS)
    }

    /// [`Self::load`], the ARK and ASK keys of `rsa_bits`.
    fn load_sized(path: &Path, rsa_bits: usize) -> Result<Self, CertError> {
        cert_cache::load(path, rsa_bits)
    }

    /// Assembles and checks a chain from its keys and DER certificates.
    fn from_parts(
        ark_key: RsaPrivateKey,
        ask_key: RsaPrivateKey,
        vcek_key: EcSigningKey,
        [ark_der, ask_der, vcek_der]: [&[u8]; 3],
        rsa_bits: usize,
    ) -> Result<Self, String> {
        let parse =
            |der: &[u8], which: &str| Certificate::from_der(der).map_err(|e| format!("{which} certificate: {e}"));
        let (ark, ask, vcek) = (parse(ark_der, "ARK")?, parse(ask_der, "ASK")?, parse(vcek_der, "VCEK")?);
        for (key, cert, which) in [(&ark_key, &ark, "ARK"), (&ask_key, &ask, "ASK")] {
            let public = rsa_public_key(cert).map_err(|e| format!("{which} certificate: {e}"))?;
            if public != RsaPublicKey::from(key) {
                return Err(format!("the {which} key is not the one its certificate names"));
            }
            if key.size() * 8 != rsa_bits {
                return Err(format!("the {which} key has {} bits, not {rsa_bits}", key.size() * 8));
            }
        }
        let vcek_public = vcek.tbs_certificate.subject_public_key_info.subject_public_key.raw_bytes();
        if vcek_public != vcek_key.verifying_key().to_encoded_point(false).as_bytes() {
            return Err("the VCEK key is not the one its certificate names".into());
        }
        let ark_public = RsaPublicKey::from(&ark_key);
        check_signed_by(&ark, &ark_public).map_err(|e| format!("ARK self-signature: {e}"))?;
        check_signed_by(&ask, &ark_public).map_err(|e| format!("ASK signature by the ARK: {e}"))?;
        check_signed_by(&vcek, &RsaPublicKey::from(&ask_key)).map_err(|e| format!("VCEK signature by the ASK: {e}"))?;
        let (tcb, chip_id) = vcek_tcb_and_chip_id(&vcek).map_err(|e| format!("VCEK extensions: {e}"))?;
        Ok(Self {
            ark_key,
            ask_key,
            vcek_key,
            ark_der: ark_der.to_vec(),
            ask_der: ask_der.to_vec(),
            vcek_der: vcek_der.to_vec(),
            chip_id,
            tcb,
        })
    }

    /// Generates a new chain with a random chip id, its VCEK made for `tcb`.
    pub fn generate(tcb: Tcb) -> Result<Self, CertError> {
        Self::generate_sized(tcb, RSA_BITS)
    }

    /// [`Self::generate`] with RSA keys of `rsa_bits`.
    fn generate_sized(tcb: Tcb, rsa_bits: usize) -> Result<Self, CertError> {
        let mut chip_id = [0u8; 64];
        OsRng.try_fill_bytes(&mut chip_id).map_err(CertError::Rng)?;
        // Some verifiers (snpguest) tell a DER-wrapped hwID from a raw one by its first
        // byte: keep it off the INTEGER and OCTET STRING tags.
        if chip_id[0] == 0x02 || chip_id[0] == 0x04 {
            chip_id[0] ^= 0x80;
        }
        let rsa_key =
            |which| RsaPrivateKey::new(&mut OsRng, rsa_bits).map_err(|source| CertError::RsaKeyGen { which, source });
        let ark_key = rsa_key("ARK")?;
        let ask_key = rsa_key("ASK")?;
        let vcek_key = EcSigningKey::random(&mut OsRng);

        let ark_name = amd_name("ARK-Milan")?;
        let ask_name = amd_name("SEV-Milan")?;
        let ark_spki = x509::spki(&RsaPublicKey::from(&ark_key), "ARK")?;
        let ask_spki = x509::spki(&RsaPublicKey::from(&ask_key), "ASK")?;
        let vcek_spki = x509::spki(vcek_key.verifying_key(), "VCEK")?;
        let ark_signer = rsa::pss::BlindedSigningKey::<Sha384>::new_with_salt_len(ark_key.clone(), PSS_SALT_LEN);
        let ask_signer = rsa::pss::BlindedSigningKey::<Sha384>::new_with_salt_len(ask_key.clone(), PSS_SALT_LEN);

        let ark_ski = SubjectKeyIdentifier::try_from(ark_spki.owned_to_ref()).map_err(|e| encode_err("ARK SKI", e))?;
        let ark = build_cert(
            "ARK",
            CertSpec {
                issuer: None,
                serial: SerialNumber::from(0x10000u32),
                lifetime: CA_LIFETIME,
                subject: ark_name.clone(),
                spki: ark_spki,
                extensions: vec![
                    ext(&KeyUsage(KeyUsages::KeyCertSign | KeyUsages::CRLSign), "ARK")?,
                    ext(&ark_ski, "ARK")?,
                    ext(&BasicConstraints { ca: true, path_len_constraint: None }, "ARK")?,
                ],
            },
            &ark_signer,
        )?;
        let ask_ski = SubjectKeyIdentifier::try_from(ask_spki.owned_to_ref()).map_err(|e| encode_err("ASK SKI", e))?;
        let ask = build_cert(
            "ASK",
            CertSpec {
                issuer: Some(ark_name),
                serial: SerialNumber::from(0x10001u32),
                lifetime: CA_LIFETIME,
                subject: ask_name.clone(),
                spki: ask_spki,
                extensions: vec![
                    ext(&ask_ski, "ASK")?,
                    ext(
                        &AuthorityKeyIdentifier {
                            key_identifier: Some(ark_ski.0.clone()),
                            authority_cert_issuer: None,
                            authority_cert_serial_number: None,
                        },
                        "ASK",
                    )?,
                    ext(&BasicConstraints { ca: true, path_len_constraint: Some(0) }, "ASK")?,
                    ext(&KeyUsage(KeyUsages::KeyCertSign.into()), "ASK")?,
                ],
            },
            &ark_signer,
        )?;
        let vcek = build_cert(
            "VCEK",
            CertSpec {
                issuer: Some(ask_name),
                serial: SerialNumber::from(0u32),
                lifetime: VCEK_LIFETIME,
                subject: amd_name("SEV-VCEK")?,
                spki: vcek_spki,
                extensions: vcek_extensions(tcb, &chip_id)?,
            },
            &ask_signer,
        )?;
        let der = |c: &Certificate, which| c.to_der().map_err(|e| encode_err(which, e));
        let (ark_der, ask_der, vcek_der) = (der(&ark, "ARK")?, der(&ask, "ASK")?, der(&vcek, "VCEK")?);
        Ok(Self { ark_key, ask_key, vcek_key, ark_der, ask_der, vcek_der, chip_id, tcb })
    }

    /// Writes `ark.pem`, `ask.pem`, `vcek.pem` and `cert_chain.pem` (the ASK then the
    /// ARK, as AMD's key distribution server serves them) into `dir`.
    pub fn export(&self, dir: &Path) -> Result<(), CertError> {
        let ark = pem("CERTIFICATE", &self.ark_der)?;
        let ask = pem("CERTIFICATE", &self.ask_der)?;
        let vcek = pem("CERTIFICATE", &self.vcek_der)?;
        let chain = format!("{ask}{ark}");
        let files = [("ark.pem", ark.as_str()), ("ask.pem", &ask), ("vcek.pem", &vcek), ("cert_chain.pem", &chain)];
        Ok(cert_cache::export(dir, &files)?)
    }

    /// The certificate table of the extended guest request: ARK, ASK and VCEK, DER.
    pub fn cert_table(&self) -> Result<Vec<u8>, GuestMsgError> {
        build_cert_table(&[
            CertTableEntry { guid: cert_guid::ARK, data: self.ark_der.clone() },
            CertTableEntry { guid: cert_guid::ASK, data: self.ask_der.clone() },
            CertTableEntry { guid: cert_guid::VCEK, data: self.vcek_der.clone() },
        ])
    }

    /// The ARK certificate (DER).
    pub fn ark_der(&self) -> &[u8] {
        &self.ark_der
    }

    /// The ASK certificate (DER).
    pub fn ask_der(&self) -> &[u8] {
        &self.ask_der
    }

    /// The VCEK certificate (DER).
    pub fn vcek_der(&self) -> &[u8] {
        &self.vcek_der
    }

    /// The VCEK's private key, which signs attestation reports.
    pub fn vcek_signing_key(&self) -> &EcSigningKey {
        &self.vcek_key
    }

    /// The VCEK's public key.
    pub fn vcek_verifying_key(&self) -> &EcVerifyingKey {
        self.vcek_key.verifying_key()
    }

    /// The chip id the VCEK names (its hwID extension): the platform's CHIP_ID.
    pub fn chip_id(&self) -> &[u8; 64] {
        &self.chip_id
    }

    /// The TCB the VCEK was made for: the platform's REPORTED_TCB.
    pub fn tcb(&self) -> Tcb {
        self.tcb
    }
}

impl CachedChain for EmulatedAmdChain {
    type Error = CertError;
    /// The ARK's and ASK's RSA key size.
    type Params = usize;
    const BUNDLE_FILE: &'static str = BUNDLE_FILE;
    const NAME: &'static str = "the emulated AMD key chain";

    fn from_bundle(path: &Path, text: &[u8], rsa_bits: usize) -> Result<Self, CertError> {
        let invalid = |reason: String| CertError::Invalid { path: path.into(), reason };
        let blocks = pem_blocks(text).map_err(invalid)?;
        let labels: Vec<&str> = blocks.iter().map(|(l, _)| l.as_str()).collect();
        if labels != ["PRIVATE KEY", "PRIVATE KEY", "PRIVATE KEY", "CERTIFICATE", "CERTIFICATE", "CERTIFICATE"] {
            return Err(invalid(format!("expected 3 private keys then 3 certificates, found {labels:?}")));
        }
        let rsa_key = |der: &[u8], which: &str| {
            RsaPrivateKey::from_pkcs8_der(der).map_err(|e| invalid(format!("{which} key: {e}")))
        };
        let ark_key = rsa_key(&blocks[0].1, "ARK")?;
        let ask_key = rsa_key(&blocks[1].1, "ASK")?;
        let vcek_key = EcSigningKey::from_pkcs8_der(&blocks[2].1).map_err(|e| invalid(format!("VCEK key: {e}")))?;
        let certs = [blocks[3].1.as_slice(), &blocks[4].1, &blocks[5].1];
        let chain = Self::from_parts(ark_key, ask_key, vcek_key, certs, rsa_bits).map_err(invalid)?;
        Ok(chain)
    }

    fn generate_with(rsa_bits: usize) -> Result<Self, CertError> {
        Self::generate_sized(EMULATED_TCB, rsa_bits)
    }

    fn bundle(&self) -> Result<String, CertError> {
        let mut out = String::new();
        let keys = [
            self.ark_key.to_pkcs8_der().map_err(|e| encode_err("ARK key", e))?,
            self.ask_key.to_pkcs8_der().map_err(|e| encode_err("ASK key", e))?,
            self.vcek_key.to_pkcs8_der().map_err(|e| encode_err("VCEK key", e))?,
        ];
        for key in &keys {
            out.push_str(&pem("PRIVATE KEY", key.as_bytes())?);
        }
        for der in [&self.ark_der, &self.ask_der, &self.vcek_der] {
            out.push_str(&pem("CERTIFICATE", der)?);
        }
        Ok(out)
    }
}

/// Reads the TCB (boot loader, TEE, SNP and microcode SPL extensions) and the chip id
/// (hwID extension) from an AMD VCEK certificate, real or emulated.
pub fn vcek_tcb_and_chip_id(vcek: &Certificate) -> Result<(Tcb, [u8; 64]), String> {
    let exts = vcek.tbs_certificate.extensions.as_deref().unwrap_or_default();
    let find = |id: ObjectIdentifier| {
        exts.iter().find(|e| e.extn_id == id).map(|e| e.extn_value.as_bytes()).ok_or(format!("no extension {id}"))
    };
    let spl = |id| -> Result<u8, String> { u8::from_der(find(id)?).map_err(|e| format!("extension {id}: {e}")) };
    let tcb = Tcb {
        bootloader: spl(oid::BL_SPL)?,
        tee: spl(oid::TEE_SPL)?,
        snp: spl(oid::SNP_SPL)?,
        microcode: spl(oid::UCODE_SPL)?,
    };
    let hw_id = find(oid::HW_ID)?;
    let chip_id = hw_id.try_into().map_err(|_| format!("hwID is {} bytes, not 64", hw_id.len()))?;
    Ok((tcb, chip_id))
}

/// The RSA public key a certificate names.
fn rsa_public_key(cert: &Certificate) -> Result<RsaPublicKey, String> {
    RsaPublicKey::try_from(cert.tbs_certificate.subject_public_key_info.owned_to_ref()).map_err(|e| e.to_string())
}

/// Checks that `cert` carries an RSASSA-PSS/SHA-384 signature by `issuer`.
fn check_signed_by(cert: &Certificate, issuer: &RsaPublicKey) -> Result<(), String> {
    if cert.signature_algorithm.oid != oid::RSASSA_PSS {
        return Err(format!("signature algorithm {} is not RSASSA-PSS", cert.signature_algorithm.oid));
    }
    let tbs = cert.tbs_certificate.to_der().map_err(|e| e.to_string())?;
    let sig = rsa::pss::Signature::try_from(cert.signature.raw_bytes()).map_err(|e| e.to_string())?;
    rsa::pss::VerifyingKey::<Sha384>::new(issuer.clone()).verify(&tbs, &sig).map_err(|e| e.to_string())
}

/// AMD's subject name layout: OU=Engineering, C=US, L=Santa Clara, ST=CA,
/// O=Advanced Micro Devices, CN=`cn` (C a PrintableString, the rest UTF8Strings).
fn amd_name(cn: &str) -> Result<Name, X509Error> {
    x509::name(&[
        (attr::OU, "Engineering"),
        (attr::C, "US"),
        (attr::L, "Santa Clara"),
        (attr::ST, "CA"),
        (attr::O, "Advanced Micro Devices"),
        (attr::CN, cn),
    ])
}

/// Builds certificate `which` signed with RSASSA-PSS (SHA-384, a 48-byte salt).
fn build_cert(
    which: &'static str,
    spec: CertSpec,
    signer: &rsa::pss::BlindedSigningKey<Sha384>,
) -> Result<Certificate, X509Error> {
    x509::builder(which, spec, signer)?.build_with_rng::<rsa::pss::Signature>(&mut OsRng).map_err(build_err(which))
}

/// A non-critical extension whose value is the DER of `value`.
fn amd_ext(id: ObjectIdentifier, value: &impl Encode) -> Result<Extension, X509Error> {
    let der = value.to_der().map_err(|e| encode_err("VCEK extension", e))?;
    raw_ext(id, der)
}

fn raw_ext(id: ObjectIdentifier, bytes: Vec<u8>) -> Result<Extension, X509Error> {
    let extn_value = OctetString::new(bytes).map_err(|e| encode_err("VCEK extension", e))?;
    Ok(Extension { extn_id: id, critical: false, extn_value })
}

/// AMD's VCEK extensions, in the order AMD's certificates list them.
fn vcek_extensions(tcb: Tcb, chip_id: &[u8; 64]) -> Result<Vec<Extension>, X509Error> {
    let product = Ia5String::new(PRODUCT_NAME).map_err(|e| encode_err("VCEK product name", e))?;
    Ok(vec![
        amd_ext(oid::STRUCT_VERSION, &0u8)?,
        amd_ext(oid::PRODUCT_NAME, &product)?,
        amd_ext(oid::BL_SPL, &tcb.bootloader)?,
        amd_ext(oid::TEE_SPL, &tcb.tee)?,
        amd_ext(oid::SPL_4, &0u8)?,
        amd_ext(oid::SPL_5, &0u8)?,
        amd_ext(oid::SPL_6, &0u8)?,
        amd_ext(oid::SPL_7, &0u8)?,
        amd_ext(oid::SNP_SPL, &tcb.snp)?,
        amd_ext(oid::UCODE_SPL, &tcb.microcode)?,
        // hwID is the raw chip id, not wrapped in a DER type.
        raw_ext(oid::HW_ID, chip_id.to_vec())?,
    ])
}

/// The chain the crate's unit tests share, cached under target/<profile>/ so its RSA
/// keys are generated once per checkout.
#[cfg(test)]
pub(crate) fn tests_chain() -> EmulatedAmdChain {
    let exe = std::env::current_exe().expect("the test binary's path");
    let dir = exe.parent().and_then(Path::parent).expect("target/<profile>").join("cvmm-test-cache").join(CHAIN_DIR);
    EmulatedAmdChain::load_or_create(&dir).expect("the test chain")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snp::report::{AttestationReport, CpuidFms};
    use std::fs;
    use std::os::unix::fs::PermissionsExt;
    use std::sync::OnceLock;

    /// The directory of this test binary's chain: under target/<profile>/ (the binary
    /// is target/<profile>/deps/launch-*), so it survives between runs and the RSA keys
    /// are generated once per checkout.
    fn test_cache_dir() -> PathBuf {
        let exe = std::env::current_exe().unwrap();
        exe.parent().and_then(Path::parent).unwrap().join("cvmm-test-cache").join(CHAIN_DIR)
    }

    /// RSA key size of the chains tests generate anew each run (RSA-4096 generation
    /// takes seconds; the shared chain's is done once per checkout).
    const SMALL_RSA_BITS: usize = 1024;

    /// The chain shared by this binary's tests.
    fn shared_chain() -> &'static EmulatedAmdChain {
        static CHAIN: OnceLock<EmulatedAmdChain> = OnceLock::new();
        CHAIN.get_or_init(|| EmulatedAmdChain::load_or_create(&test_cache_dir()).unwrap())
    }

    /// A second, different chain: the one generated when a corrupted bundle is found
    /// (with small RSA keys).
    fn regenerated_chain() -> &'static (PathBuf, EmulatedAmdChain) {
        static CHAIN: OnceLock<(PathBuf, EmulatedAmdChain)> = OnceLock::new();
        CHAIN.get_or_init(|| {
            let dir = scratch_dir("corrupt");
            fs::create_dir_all(&dir).unwrap();
            let good = shared_chain().bundle().unwrap();
            // Truncate the bundle in the middle of the second certificate.
            fs::write(dir.join(BUNDLE_FILE), &good.as_bytes()[..good.len() * 2 / 3]).unwrap();
            let chain = EmulatedAmdChain::load_or_create_sized(&dir, SMALL_RSA_BITS).unwrap();
            (dir, chain)
        })
    }

    /// A fresh, empty directory for one test.
    fn scratch_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("cvmm-certs-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn signed_emulated_report(chain: &EmulatedAmdChain) -> [u8; 0x4A0] {
        let tcb = chain.tcb();
        let report = AttestationReport {
            policy: 0x30000,
            current_tcb: tcb,
            reported_tcb: tcb,
            committed_tcb: tcb,
            launch_tcb: tcb,
            cpuid: Some(CpuidFms::MILAN_B0),
            chip_id: *chain.chip_id(),
            report_data: [0x5A; 64],
            measurement: [0x11; 48],
            ..Default::default()
        };
        report.sign(chain.vcek_signing_key()).unwrap()
    }

    fn sev_chain(chain: &EmulatedAmdChain) -> sev::certs::snp::Chain {
        sev::certs::snp::Chain::from_der(chain.ark_der(), chain.ask_der(), chain.vcek_der()).unwrap()
    }

    #[test]
    fn emulated_report_is_verified_by_the_sev_crate_against_the_emulated_chain() {
        use sev::certs::snp::Verifiable;
        use sev::parser::ByteParser;
        let chain = shared_chain();
        let sev_chain = sev_chain(chain);
        sev_chain.verify().unwrap();
        let bytes = signed_emulated_report(chain);
        let report = sev::firmware::guest::AttestationReport::from_bytes(&bytes).unwrap();
        assert_eq!(report.chip_id, *chain.chip_id());
        assert_eq!(report.reported_tcb.snp, chain.tcb().snp);
        (&sev_chain, &report).verify().unwrap();
    }

    #[test]
    fn emulated_report_with_a_flipped_byte_fails_sev_crate_verification() {
        use sev::certs::snp::Verifiable;
        use sev::parser::ByteParser;
        let chain = shared_chain();
        let sev_chain = sev_chain(chain);
        for off in [0x50, 0x90, 0x1A0, 0x2A0] {
            let mut bytes = signed_emulated_report(chain);
            bytes[off] ^= 0x01;
            let report = sev::firmware::guest::AttestationReport::from_bytes(&bytes).unwrap();
            assert!((&sev_chain, &report).verify().is_err(), "flipped byte {off:#x} still verifies");
        }
    }

    #[test]
    fn report_signed_by_another_vcek_fails_sev_crate_verification() {
        use sev::certs::snp::Verifiable;
        use sev::parser::ByteParser;
        let chain = shared_chain();
        let mut other = chain.clone();
        other.vcek_key = EcSigningKey::random(&mut OsRng);
        let report = sev::firmware::guest::AttestationReport::from_bytes(&signed_emulated_report(&other)).unwrap();
        assert!((&sev_chain(chain), &report).verify().is_err());
    }

    #[test]
    fn sev_crate_rejects_the_emulated_vcek_under_amds_real_ask() {
        use sev::certs::snp::{builtin::milan, ca, Certificate as SevCert, Chain, Verifiable};
        let chain = shared_chain();
        let mixed = Chain {
            ca: ca::Chain { ark: milan::ark().unwrap(), ask: milan::ask().unwrap() },
            vek: SevCert::from_der(chain.vcek_der()).unwrap(),
        };
        assert!(mixed.verify().is_err());
    }

    #[test]
    fn cert_table_is_read_by_the_sev_crate_as_a_verifiable_chain() {
        use sev::certs::snp::{Chain, Verifiable};
        use sev::firmware::host::CertTableEntry as SevEntry;
        let chain = shared_chain();
        let mut table = chain.cert_table().unwrap();
        let entries = SevEntry::vec_bytes_to_cert_table(&mut table).unwrap();
        let sev_chain = Chain::from_cert_table_der(entries).unwrap();
        assert_eq!(sev_chain.verify().unwrap().to_der().unwrap(), chain.vcek_der());
    }

    #[test]
    fn second_load_reuses_the_cached_chain() {
        let first = shared_chain();
        let again = EmulatedAmdChain::load_or_create(&test_cache_dir()).unwrap();
        assert_eq!(again.ark_der(), first.ark_der());
        assert_eq!(again.ask_der(), first.ask_der());
        assert_eq!(again.vcek_der(), first.vcek_der());
        assert_eq!(again.chip_id(), first.chip_id());
        assert_eq!(again.vcek_signing_key(), first.vcek_signing_key());
    }

    #[test]
    fn cache_file_is_private() {
        shared_chain();
        let dir = test_cache_dir();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.join(BUNDLE_FILE)), 0o600);
        assert_eq!(mode(&dir), 0o700);
        // No temporary files are left behind.
        let names: Vec<_> = fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, [BUNDLE_FILE]);
    }

    #[test]
    fn corrupted_cache_is_regenerated() {
        let (dir, regenerated) = regenerated_chain();
        assert_ne!(regenerated.ark_der(), shared_chain().ark_der());
        assert_ne!(regenerated.chip_id(), shared_chain().chip_id());
        let reloaded = EmulatedAmdChain::load_sized(&dir.join(BUNDLE_FILE), SMALL_RSA_BITS).unwrap();
        assert_eq!(reloaded.vcek_der(), regenerated.vcek_der());
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn bundle_with_keys_of_another_size_is_invalid() {
        let small = &regenerated_chain().1;
        let scratch = scratch_dir("small");
        fs::create_dir_all(&scratch).unwrap();
        let path = scratch.join(BUNDLE_FILE);
        fs::write(&path, small.bundle().unwrap()).unwrap();
        let err = EmulatedAmdChain::load(&path).unwrap_err();
        assert!(err.to_string().contains("1024 bits, not 4096"), "{err}");
        fs::remove_dir_all(&scratch).unwrap();
    }

    #[test]
    fn bundle_with_mismatched_key_is_invalid() {
        let chain = shared_chain();
        let mut wrong = chain.clone();
        wrong.vcek_key = EcSigningKey::random(&mut OsRng);
        let dir = scratch_dir("mismatch");
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join(BUNDLE_FILE);
        fs::write(&path, wrong.bundle().unwrap()).unwrap();
        let err = EmulatedAmdChain::load(&path).unwrap_err();
        assert!(err.to_string().contains("VCEK key is not the one"), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bundle_with_swapped_certificates_is_invalid() {
        let chain = shared_chain();
        let mut wrong = chain.clone();
        std::mem::swap(&mut wrong.ark_der, &mut wrong.ask_der);
        std::mem::swap(&mut wrong.ark_key, &mut wrong.ask_key);
        let dir = scratch_dir("swapped");
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join(BUNDLE_FILE);
        fs::write(&path, wrong.bundle().unwrap()).unwrap();
        let err = EmulatedAmdChain::load(&path).unwrap_err();
        assert!(err.to_string().contains("signature"), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn publishing_after_another_process_adopts_its_chain() {
        let ours = shared_chain().clone();
        let theirs = regenerated_chain().1.clone();
        let dir = scratch_dir("race");
        let first = cert_cache::publish(theirs.clone(), &dir, false, SMALL_RSA_BITS).unwrap();
        assert_eq!(first.ark_der(), theirs.ark_der());
        let second = cert_cache::publish(ours, &dir, false, SMALL_RSA_BITS).unwrap();
        assert_eq!(second.ark_der(), theirs.ark_der(), "the loser must adopt the published chain");
        let on_disk = EmulatedAmdChain::load_sized(&dir.join(BUNDLE_FILE), SMALL_RSA_BITS).unwrap();
        assert_eq!(on_disk.vcek_der(), theirs.vcek_der());
        let names: Vec<_> = fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, [BUNDLE_FILE]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn exported_pems_parse_and_match_the_chain() {
        use x509_cert::der::DecodePem;
        let chain = shared_chain();
        let dir = scratch_dir("export");
        chain.export(&dir).unwrap();
        let read = |name: &str| fs::read(dir.join(name)).unwrap();
        for (name, der) in [("ark.pem", chain.ark_der()), ("ask.pem", chain.ask_der()), ("vcek.pem", chain.vcek_der())]
        {
            let cert = Certificate::from_pem(read(name)).unwrap();
            assert_eq!(cert.to_der().unwrap(), der, "{name}");
        }
        let blocks = pem_blocks(&read("cert_chain.pem")).unwrap();
        assert_eq!(blocks.len(), 2);
        assert_eq!(blocks[0].1, chain.ask_der(), "ASK first");
        assert_eq!(blocks[1].1, chain.ark_der(), "ARK second");
        // The sev crate reads the exported chain as AMD's own.
        sev::certs::snp::ca::Chain::from_pem(&read("ark.pem"), &read("ask.pem")).unwrap();

        // openssl, where installed, agrees on the algorithms and the AMD extensions.
        if let Ok(out) = std::process::Command::new("openssl")
            .args(["x509", "-noout", "-text", "-in"])
            .arg(dir.join("vcek.pem"))
            .output()
        {
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "openssl: {}", String::from_utf8_lossy(&out.stderr));
            assert!(text.contains("rsassaPss") && text.contains("Salt Length: 0x30"), "{text}");
            assert!(text.contains("Issuer: OU = Engineering, C = US, L = Santa Clara, ST = CA, O = Advanced Micro Devices, CN = SEV-Milan"), "{text}");
            assert!(text.contains("CN = SEV-VCEK") && text.contains("secp384r1"), "{text}");
            assert!(text.contains("1.3.6.1.4.1.3704.1.4") && text.contains("Milan-B0"), "{text}");
            let out = std::process::Command::new("openssl")
                .args(["verify", "-CAfile"])
                .arg(dir.join("ark.pem"))
                .arg("-untrusted")
                .arg(dir.join("ask.pem"))
                .arg(dir.join("vcek.pem"))
                .output()
                .unwrap();
            assert!(out.status.success(), "openssl verify: {}", String::from_utf8_lossy(&out.stderr));
        }
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn vcek_extensions_read_from_amds_real_vcek_match_its_report() {
        // The real Milan VCEK and the report it signed (see shared/refs/attestation).
        let refs = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/refs/attestation/");
        let vcek = fs::read(format!("{refs}virtee-sev__tests_certs_data_vcek_milan.der")).unwrap();
        let report = fs::read(format!("{refs}virtee-sev__tests_certs_data_report_milan.bin.derived")).unwrap();
        let report = AttestationReport::from_bytes(&report).unwrap();
        let (tcb, chip_id) = vcek_tcb_and_chip_id(&Certificate::from_der(&vcek).unwrap()).unwrap();
        assert_eq!(tcb, report.reported_tcb);
        assert_eq!(chip_id, report.chip_id);
    }

    #[test]
    fn emulated_vcek_names_the_chain_tcb_and_chip_id() {
        let chain = shared_chain();
        let cert = Certificate::from_der(chain.vcek_der()).unwrap();
        assert_eq!(vcek_tcb_and_chip_id(&cert).unwrap(), (EMULATED_TCB, *chain.chip_id()));
        assert_eq!(chain.tcb(), EMULATED_TCB);
        // The microcode SPL (213) needs a leading zero byte in DER.
        let ucode = cert.tbs_certificate.extensions.as_ref().unwrap().iter().find(|e| e.extn_id == oid::UCODE_SPL);
        assert_eq!(ucode.unwrap().extn_value.as_bytes(), [0x02, 0x02, 0x00, 213]);
    }

    #[test]
    fn emulated_certificates_mirror_amds_structure() {
        use sev::certs::snp::builtin::milan;
        let chain = shared_chain();
        let ours = Certificate::from_der(chain.ark_der()).unwrap();
        let amd: x509_cert::Certificate = milan::ark().unwrap().into();
        assert_eq!(ours.tbs_certificate.subject, amd.tbs_certificate.subject);
        assert_eq!(ours.tbs_certificate.serial_number, amd.tbs_certificate.serial_number);
        assert_eq!(ours.signature_algorithm.oid, amd.signature_algorithm.oid);
        let ask = Certificate::from_der(chain.ask_der()).unwrap();
        let amd_ask: x509_cert::Certificate = milan::ask().unwrap().into();
        assert_eq!(ask.tbs_certificate.subject, amd_ask.tbs_certificate.subject);
        assert_eq!(ask.tbs_certificate.issuer, amd_ask.tbs_certificate.issuer);
        assert_eq!(ask.tbs_certificate.serial_number, amd_ask.tbs_certificate.serial_number);
    }
}
