//! The SEV-SNP ID block and ID authentication information structure that
//! SNP_LAUNCH_FINISH takes, QEMU's option formats for them, a signer for tests and
//! tooling, and the check the PSP makes of them ([`verify_id_block`]).
//!
//! Layouts (SEV-SNP firmware ABI, AMD 56860, "ID Block" and "ID Authentication
//! Information Structure"; the same offsets as AMD's SEV firmware source
//! `snp_mcmd_launch_finish_id_block_t` / `..._id_auth_page_t` in AMD-ASPFW `sev_mcmd.h`,
//! and the virtee `sev` crate's `measurement::idblock_types`):
//!
//! ID block, 0x60 bytes: LD (0x00, 48), FAMILY_ID (0x30, 16), IMAGE_ID (0x40, 16),
//! VERSION (0x50, u32, 1), GUEST_SVN (0x54, u32), POLICY (0x58, u64).
//!
//! ID auth, 0x1000 bytes: ID_KEY_ALGO (0x00, u32), AUTH_KEY_ALGO (0x04, u32),
//! ID_BLOCK_SIG (0x40, 0x200), ID_KEY (0x240, 0x404), ID_KEY_SIG (0x680, 0x200),
//! AUTHOR_KEY (0x880, 0x404); the rest reserved. Algorithm 1 is ECDSA P-384 with SHA-384.
//!
//! A signature is R (0x00) and S (0x48), each a 72-byte little-endian integer, then
//! reserved bytes to 0x200. A public key is CURVE (0x00, u32, 2 for P-384), QX (0x04)
//! and QY (0x4C), each 72 bytes little-endian, then reserved bytes to 0x404. The ID key
//! signs the 0x60 bytes of the ID block; the author key signs the 0x404 bytes of the ID
//! key; ID_KEY_DIGEST and AUTHOR_KEY_DIGEST (in the attestation report) are SHA-384 of
//! the 0x404-byte key structures.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use p384::ecdsa::signature::{Signer as _, Verifier as _};
use p384::ecdsa::{Signature, SigningKey, VerifyingKey};
use p384::{EncodedPoint, FieldBytes};
use sha2::{Digest, Sha384};
use thiserror::Error;

use crate::bytes::{array, le_u32, le_u64};
use crate::measure::snp::{LaunchDigest, LD_SIZE};

/// Size of the ID block.
pub const ID_BLOCK_SIZE: usize = 0x60;
/// Size of the ID authentication information structure.
pub const ID_AUTH_SIZE: usize = 0x1000;
/// Size of an SNP ECDSA signature structure.
pub const SIGNATURE_SIZE: usize = 0x200;
/// Size of an SNP ECDSA public key structure.
pub const PUBLIC_KEY_SIZE: usize = 0x404;
/// Size of the HOST_DATA SNP_LAUNCH_FINISH binds to the guest.
pub const HOST_DATA_SIZE: usize = 32;
/// ID_KEY_ALGO / AUTH_KEY_ALGO: ECDSA P-384 with SHA-384, the only algorithm defined.
pub const ALGO_ECDSA_P384_SHA384: u32 = 1;
/// CURVE of a public key: P-384.
pub const CURVE_P384: u32 = 2;

/// Bytes of an ECDSA integer in the SNP structures (576 bits, little-endian).
const SCALAR_SIZE: usize = 72;
/// Bytes of a P-384 integer.
const P384_SIZE: usize = 48;

/// ID block field offsets.
const IDB_FAMILY_ID: usize = 0x30;
const IDB_IMAGE_ID: usize = 0x40;
const IDB_VERSION: usize = 0x50;
const IDB_GUEST_SVN: usize = 0x54;
const IDB_POLICY: usize = 0x58;

/// ID auth field offsets.
const AUTH_ID_KEY_ALGO: usize = 0x00;
const AUTH_AUTHOR_KEY_ALGO: usize = 0x04;
const AUTH_ID_BLOCK_SIG: usize = 0x40;
const AUTH_ID_KEY: usize = 0x240;
const AUTH_ID_KEY_SIG: usize = 0x680;
const AUTH_AUTHOR_KEY: usize = 0x880;

/// Signature and key field offsets.
const SIG_R: usize = 0x00;
const SIG_S: usize = 0x48;
const KEY_CURVE: usize = 0x00;
const KEY_QX: usize = 0x04;
const KEY_QY: usize = 0x4c;

/// Firmware status codes (SEV firmware ABI).
const STATUS_POLICY_FAILURE: u32 = 0x07;
const STATUS_BAD_SIGNATURE: u32 = 0x0a;
const STATUS_BAD_MEASUREMENT: u32 = 0x0b;
const STATUS_INVALID_PARAM: u32 = 0x16;

/// Errors from parsing, signing or checking an ID block and its ID auth structure.
#[derive(Debug, Error)]
pub enum IdBlockError {
    /// An option is not valid base64.
    #[error("sev-snp-guest option {option}: not valid base64: {source}")]
    Base64 {
        /// The QEMU option name.
        option: &'static str,
        /// The decoder's error.
        #[source]
        source: base64::DecodeError,
    },
    /// A structure has the wrong length.
    #[error("{what} is {len} bytes, expected {expected}")]
    Length {
        /// What was parsed.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The length it must have.
        expected: usize,
    },
    /// The ID auth structure is longer than a page.
    #[error("sev-snp-guest option id-auth: {len} bytes, at most {ID_AUTH_SIZE}")]
    IdAuthTooLong {
        /// Its length.
        len: usize,
    },
    /// A boolean option is not one QEMU would take.
    #[error("sev-snp-guest option {option}: '{value}' is not on/off (or yes/no, true/false, y/n)")]
    Bool {
        /// The QEMU option name.
        option: &'static str,
        /// What was given.
        value: String,
    },
    /// id-block and id-auth must be given together.
    #[error("sev-snp-guest options id-block and id-auth must be given together (got only {given})")]
    Unpaired {
        /// The one given.
        given: &'static str,
    },
    /// author-key-enabled without an ID block has nothing to check.
    #[error("sev-snp-guest option author-key-enabled needs id-block and id-auth")]
    AuthorKeyWithoutIdBlock,
    /// The ID block's LD is not this launch's digest (BAD_MEASUREMENT).
    #[error(
        "ID block launch digest {id_block} differs from this launch's digest {launch} (BAD_MEASUREMENT): the ID \
         block was signed for another firmware, kernel, initrd, command line or vCPU setup; sign one for this \
         launch digest"
    )]
    LaunchDigestMismatch {
        /// The ID block's LD, hex.
        id_block: String,
        /// The launch digest, hex.
        launch: String,
    },
    /// The ID block's POLICY is not the launch's policy (POLICY_FAILURE).
    #[error(
        "ID block policy {id_block:#x} differs from the launch policy {launch:#x} (POLICY_FAILURE): launch with \
         policy {id_block:#x} or sign an ID block with policy {launch:#x}"
    )]
    PolicyMismatch {
        /// The ID block's POLICY.
        id_block: u64,
        /// The launch policy.
        launch: u64,
    },
    /// ID_KEY_ALGO is not ECDSA P-384 with SHA-384 (INVALID_PARAM).
    #[error("ID auth ID_KEY_ALGO is {algo}, only 1 (ECDSA P-384 with SHA-384) is defined (INVALID_PARAM)")]
    IdKeyAlgo {
        /// The algorithm given.
        algo: u32,
    },
    /// AUTH_KEY_ALGO is not ECDSA P-384 with SHA-384 (INVALID_PARAM).
    #[error("ID auth AUTH_KEY_ALGO is {algo}, only 1 (ECDSA P-384 with SHA-384) is defined (INVALID_PARAM)")]
    AuthorKeyAlgo {
        /// The algorithm given.
        algo: u32,
    },
    /// The ID key is not a P-384 public key (BAD_SIGNATURE).
    #[error("ID auth ID_KEY is not a valid P-384 public key: {0} (BAD_SIGNATURE)")]
    BadIdKey(#[source] KeyError),
    /// The ID block's signature does not verify with the ID key (BAD_SIGNATURE).
    #[error(
        "ID auth ID_BLOCK_SIG is not the ID key's signature of this ID block (BAD_SIGNATURE): the ID block or its \
         signature was changed, or they do not belong together"
    )]
    IdBlockSignature,
    /// The author key is not a P-384 public key (BAD_SIGNATURE).
    #[error("ID auth AUTHOR_KEY is not a valid P-384 public key: {0} (BAD_SIGNATURE)")]
    BadAuthorKey(#[source] KeyError),
    /// The ID key's signature does not verify with the author key (BAD_SIGNATURE).
    #[error(
        "ID auth ID_KEY_SIG is not the author key's signature of the ID key (BAD_SIGNATURE): sign the ID key with \
         the author key, or launch without author-key-enabled"
    )]
    AuthorKeySignature,
    /// Signing failed.
    #[error("cannot sign with ECDSA P-384: {0}")]
    Sign(#[source] p384::ecdsa::Error),
}

impl IdBlockError {
    /// The status SNP_LAUNCH_FINISH returns for this failure, for the checks the
    /// firmware makes; `None` for option parsing and signing errors.
    pub fn fw_status(&self) -> Option<u32> {
        match self {
            Self::LaunchDigestMismatch { .. } => Some(STATUS_BAD_MEASUREMENT),
            Self::PolicyMismatch { .. } => Some(STATUS_POLICY_FAILURE),
            Self::IdKeyAlgo { .. } | Self::AuthorKeyAlgo { .. } => Some(STATUS_INVALID_PARAM),
            Self::BadIdKey(_) | Self::IdBlockSignature | Self::BadAuthorKey(_) | Self::AuthorKeySignature => {
                Some(STATUS_BAD_SIGNATURE)
            }
            Self::Base64 { .. }
            | Self::Length { .. }
            | Self::IdAuthTooLong { .. }
            | Self::Bool { .. }
            | Self::Unpaired { .. }
            | Self::AuthorKeyWithoutIdBlock
            | Self::Sign(_) => None,
        }
    }
}

/// Why a public key structure is not a usable P-384 key.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum KeyError {
    /// CURVE is not P-384.
    #[error("CURVE is {0}, expected 2 (P-384)")]
    Curve(u32),
    /// QX or QY does not fit in 384 bits.
    #[error("a coordinate does not fit in 384 bits")]
    CoordinateTooLarge,
    /// (QX, QY) is not a point of P-384.
    #[error("(QX, QY) is not a point of the P-384 curve")]
    NotOnCurve,
}

/// An SEV-SNP ID block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdBlock {
    /// The launch digest the guest must have.
    pub ld: LaunchDigest,
    /// Family ID, chosen by the guest owner (uninterpreted by the firmware).
    pub family_id: [u8; 16],
    /// Image ID, chosen by the guest owner (uninterpreted by the firmware).
    pub image_id: [u8; 16],
    /// Version of the ID block format (1).
    pub version: u32,
    /// The guest's security version number.
    pub guest_svn: u32,
    /// The policy the guest must be launched with.
    pub policy: u64,
}

impl IdBlock {
    /// The ID block format version this ABI defines.
    pub const VERSION: u32 = 1;

    /// An ID block for this launch digest and policy, with zero family and image IDs
    /// and SVN.
    pub fn new(ld: LaunchDigest, policy: u64) -> Self {
        Self { ld, family_id: [0; 16], image_id: [0; 16], version: Self::VERSION, guest_svn: 0, policy }
    }

    /// The 0x60 bytes SNP_LAUNCH_FINISH takes (and the ID key signs).
    pub fn to_bytes(&self) -> [u8; ID_BLOCK_SIZE] {
        let mut b = [0u8; ID_BLOCK_SIZE];
        b[..LD_SIZE].copy_from_slice(&self.ld);
        b[IDB_FAMILY_ID..IDB_FAMILY_ID + 16].copy_from_slice(&self.family_id);
        b[IDB_IMAGE_ID..IDB_IMAGE_ID + 16].copy_from_slice(&self.image_id);
        b[IDB_VERSION..IDB_VERSION + 4].copy_from_slice(&self.version.to_le_bytes());
        b[IDB_GUEST_SVN..IDB_GUEST_SVN + 4].copy_from_slice(&self.guest_svn.to_le_bytes());
        b[IDB_POLICY..IDB_POLICY + 8].copy_from_slice(&self.policy.to_le_bytes());
        b
    }

    /// Parses the 0x60 bytes of an ID block. VERSION is not checked, as the firmware
    /// does not check it.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, IdBlockError> {
        let b: &[u8; ID_BLOCK_SIZE] = bytes.try_into().map_err(|_| IdBlockError::Length {
            what: "ID block",
            len: bytes.len(),
            expected: ID_BLOCK_SIZE,
        })?;
        Ok(Self {
            ld: array(b, 0),
            family_id: array(b, IDB_FAMILY_ID),
            image_id: array(b, IDB_IMAGE_ID),
            version: le_u32(b, IDB_VERSION),
            guest_svn: le_u32(b, IDB_GUEST_SVN),
            policy: le_u64(b, IDB_POLICY),
        })
    }

    /// Parses QEMU's `id-block=` value: the base64 of exactly 0x60 bytes.
    pub fn from_base64(s: &str) -> Result<Self, IdBlockError> {
        let bytes = BASE64.decode(s.trim()).map_err(|source| IdBlockError::Base64 { option: "id-block", source })?;
        Self::from_bytes(&bytes)
    }

    /// The base64 form QEMU's `id-block=` takes.
    pub fn to_base64(&self) -> String {
        BASE64.encode(self.to_bytes())
    }

    /// Signs the ID block with `id_key` and, if given, the ID key with `author_key`,
    /// producing the ID auth structure SNP_LAUNCH_FINISH takes (launch with
    /// author-key-enabled exactly when `author_key` is given). Signatures are
    /// deterministic (RFC 6979).
    pub fn sign(&self, id_key: &SigningKey, author_key: Option<&SigningKey>) -> Result<IdAuth, IdBlockError> {
        let id_pub = PublicKey::from_verifying_key(id_key.verifying_key());
        let sig: Signature = id_key.try_sign(&self.to_bytes()).map_err(IdBlockError::Sign)?;
        let mut auth = IdAuth {
            id_key_algo: ALGO_ECDSA_P384_SHA384,
            author_key_algo: 0,
            id_block_sig: EcdsaSignature::from_signature(&sig),
            id_key: id_pub,
            id_key_sig: EcdsaSignature::zeroed(),
            author_key: PublicKey::zeroed(),
        };
        if let Some(author) = author_key {
            let sig: Signature = author.try_sign(auth.id_key.as_bytes()).map_err(IdBlockError::Sign)?;
            auth.author_key_algo = ALGO_ECDSA_P384_SHA384;
            auth.id_key_sig = EcdsaSignature::from_signature(&sig);
            auth.author_key = PublicKey::from_verifying_key(author.verifying_key());
        }
        Ok(auth)
    }
}

/// An ECDSA signature as the SNP firmware lays it out (0x200 bytes).
#[derive(Clone, PartialEq, Eq)]
pub struct EcdsaSignature([u8; SIGNATURE_SIZE]);

impl EcdsaSignature {
    /// All zero (no signature).
    pub fn zeroed() -> Self {
        Self([0; SIGNATURE_SIZE])
    }

    /// The structure of a P-384 signature.
    pub fn from_signature(sig: &Signature) -> Self {
        let (r, s) = sig.split_bytes();
        let mut b = [0u8; SIGNATURE_SIZE];
        b[SIG_R..SIG_R + SCALAR_SIZE].copy_from_slice(&le_scalar(&r));
        b[SIG_S..SIG_S + SCALAR_SIZE].copy_from_slice(&le_scalar(&s));
        Self(b)
    }

    /// The structure from its bytes.
    pub fn from_bytes(bytes: [u8; SIGNATURE_SIZE]) -> Self {
        Self(bytes)
    }

    /// Its bytes.
    pub fn as_bytes(&self) -> &[u8; SIGNATURE_SIZE] {
        &self.0
    }

    /// R, 72 bytes little-endian.
    pub fn r(&self) -> &[u8; SCALAR_SIZE] {
        array_ref(&self.0, SIG_R)
    }

    /// S, 72 bytes little-endian.
    pub fn s(&self) -> &[u8; SCALAR_SIZE] {
        array_ref(&self.0, SIG_S)
    }

    /// The P-384 signature, if R and S are in range (1 ..= n-1).
    pub fn to_signature(&self) -> Option<Signature> {
        let r = be_field(self.r())?;
        let s = be_field(self.s())?;
        Signature::from_scalars(r, s).ok()
    }
}

impl std::fmt::Debug for EcdsaSignature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EcdsaSignature")
            .field("r", &hex::encode(&self.r()[..P384_SIZE]))
            .field("s", &hex::encode(&self.s()[..P384_SIZE]))
            .finish()
    }
}

/// An ECDSA public key as the SNP firmware lays it out (0x404 bytes).
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey([u8; PUBLIC_KEY_SIZE]);

impl PublicKey {
    /// All zero (no key).
    pub fn zeroed() -> Self {
        Self([0; PUBLIC_KEY_SIZE])
    }

    /// The structure of a P-384 public key.
    pub fn from_verifying_key(key: &VerifyingKey) -> Self {
        let point = key.to_encoded_point(false);
        let mut b = [0u8; PUBLIC_KEY_SIZE];
        b[KEY_CURVE..KEY_CURVE + 4].copy_from_slice(&CURVE_P384.to_le_bytes());
        // An uncompressed point (not the identity) has both coordinates.
        if let (Some(x), Some(y)) = (point.x(), point.y()) {
            b[KEY_QX..KEY_QX + SCALAR_SIZE].copy_from_slice(&le_scalar(x));
            b[KEY_QY..KEY_QY + SCALAR_SIZE].copy_from_slice(&le_scalar(y));
        }
        Self(b)
    }

    /// The structure from its bytes.
    pub fn from_bytes(bytes: [u8; PUBLIC_KEY_SIZE]) -> Self {
        Self(bytes)
    }

    /// Its bytes (what the author key signs and the key digest hashes).
    pub fn as_bytes(&self) -> &[u8; PUBLIC_KEY_SIZE] {
        &self.0
    }

    /// CURVE.
    pub fn curve(&self) -> u32 {
        le_u32(&self.0, KEY_CURVE)
    }

    /// QX, 72 bytes little-endian.
    pub fn qx(&self) -> &[u8; SCALAR_SIZE] {
        array_ref(&self.0, KEY_QX)
    }

    /// QY, 72 bytes little-endian.
    pub fn qy(&self) -> &[u8; SCALAR_SIZE] {
        array_ref(&self.0, KEY_QY)
    }

    /// The P-384 key: CURVE must be 2 and (QX, QY) a point of the curve.
    pub fn to_verifying_key(&self) -> Result<VerifyingKey, KeyError> {
        if self.curve() != CURVE_P384 {
            return Err(KeyError::Curve(self.curve()));
        }
        let x = be_field(self.qx()).ok_or(KeyError::CoordinateTooLarge)?;
        let y = be_field(self.qy()).ok_or(KeyError::CoordinateTooLarge)?;
        let point = EncodedPoint::from_affine_coordinates(&x, &y, false);
        VerifyingKey::from_encoded_point(&point).map_err(|_| KeyError::NotOnCurve)
    }

    /// SHA-384 of the 0x404-byte structure: the ID_KEY_DIGEST or AUTHOR_KEY_DIGEST the
    /// attestation report carries.
    pub fn digest(&self) -> [u8; LD_SIZE] {
        Sha384::digest(self.0).into()
    }
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublicKey")
            .field("curve", &self.curve())
            .field("qx", &hex::encode(&self.qx()[..P384_SIZE]))
            .field("qy", &hex::encode(&self.qy()[..P384_SIZE]))
            .finish()
    }
}

/// The ID authentication information structure. Its reserved areas (0x08..0x40,
/// 0x644..0x680, 0xC84..0x1000) are not kept: the firmware ignores them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdAuth {
    /// ID_KEY_ALGO.
    pub id_key_algo: u32,
    /// AUTH_KEY_ALGO.
    pub author_key_algo: u32,
    /// ID_BLOCK_SIG: the ID key's signature of the ID block.
    pub id_block_sig: EcdsaSignature,
    /// ID_KEY: the ID public key.
    pub id_key: PublicKey,
    /// ID_KEY_SIG: the author key's signature of ID_KEY.
    pub id_key_sig: EcdsaSignature,
    /// AUTHOR_KEY: the author public key.
    pub author_key: PublicKey,
}

impl IdAuth {
    /// The 0x1000 bytes SNP_LAUNCH_FINISH takes.
    pub fn to_bytes(&self) -> Box<[u8; ID_AUTH_SIZE]> {
        let mut b = Box::new([0u8; ID_AUTH_SIZE]);
        b[AUTH_ID_KEY_ALGO..AUTH_ID_KEY_ALGO + 4].copy_from_slice(&self.id_key_algo.to_le_bytes());
        b[AUTH_AUTHOR_KEY_ALGO..AUTH_AUTHOR_KEY_ALGO + 4].copy_from_slice(&self.author_key_algo.to_le_bytes());
        b[AUTH_ID_BLOCK_SIG..AUTH_ID_BLOCK_SIG + SIGNATURE_SIZE].copy_from_slice(self.id_block_sig.as_bytes());
        b[AUTH_ID_KEY..AUTH_ID_KEY + PUBLIC_KEY_SIZE].copy_from_slice(self.id_key.as_bytes());
        b[AUTH_ID_KEY_SIG..AUTH_ID_KEY_SIG + SIGNATURE_SIZE].copy_from_slice(self.id_key_sig.as_bytes());
        b[AUTH_AUTHOR_KEY..AUTH_AUTHOR_KEY + PUBLIC_KEY_SIZE].copy_from_slice(self.author_key.as_bytes());
        b
    }

    /// Parses the structure from exactly 0x1000 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, IdBlockError> {
        let b: &[u8; ID_AUTH_SIZE] = bytes.try_into().map_err(|_| IdBlockError::Length {
            what: "ID auth structure",
            len: bytes.len(),
            expected: ID_AUTH_SIZE,
        })?;
        Ok(Self {
            id_key_algo: le_u32(b, AUTH_ID_KEY_ALGO),
            author_key_algo: le_u32(b, AUTH_AUTHOR_KEY_ALGO),
            id_block_sig: EcdsaSignature(array(b, AUTH_ID_BLOCK_SIG)),
            id_key: PublicKey(array(b, AUTH_ID_KEY)),
            id_key_sig: EcdsaSignature(array(b, AUTH_ID_KEY_SIG)),
            author_key: PublicKey(array(b, AUTH_AUTHOR_KEY)),
        })
    }

    /// Parses QEMU's `id-auth=` value: the base64 of at most 0x1000 bytes (QEMU takes
    /// shorter values; the bytes past the end are zero here).
    pub fn from_base64(s: &str) -> Result<Self, IdBlockError> {
        let mut bytes = BASE64.decode(s.trim()).map_err(|source| IdBlockError::Base64 { option: "id-auth", source })?;
        if bytes.len() > ID_AUTH_SIZE {
            return Err(IdBlockError::IdAuthTooLong { len: bytes.len() });
        }
        bytes.resize(ID_AUTH_SIZE, 0);
        Self::from_bytes(&bytes)
    }

    /// The base64 form QEMU's `id-auth=` takes.
    pub fn to_base64(&self) -> String {
        BASE64.encode(self.to_bytes().as_slice())
    }
}

/// The key digests an accepted ID block puts in the attestation report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdDigests {
    /// ID_KEY_DIGEST: SHA-384 of the ID key structure.
    pub id_key_digest: [u8; LD_SIZE],
    /// AUTHOR_KEY_DIGEST: SHA-384 of the author key structure; zero without
    /// author-key-enabled.
    pub author_key_digest: [u8; LD_SIZE],
}

/// What the PSP checks at SNP_LAUNCH_FINISH when an ID block is given, in the
/// firmware's order (AMD's SEV firmware source, `snp_mcmd_launch_finish`): the ID
/// block's LD is `launch_digest` (else BAD_MEASUREMENT), its POLICY is `policy` (else
/// POLICY_FAILURE), ID_KEY_ALGO (and with `author_key_en` AUTH_KEY_ALGO) is ECDSA P-384
/// SHA-384 (else INVALID_PARAM), ID_KEY is a P-384 point and ID_BLOCK_SIG its signature
/// of the ID block (else BAD_SIGNATURE), and with `author_key_en`, AUTHOR_KEY is a
/// P-384 point and ID_KEY_SIG its signature of ID_KEY (else BAD_SIGNATURE). Returns the
/// key digests for the attestation report. The firmware does not check VERSION.
pub fn verify_id_block(
    id_block: &IdBlock,
    id_auth: &IdAuth,
    author_key_en: bool,
    launch_digest: &LaunchDigest,
    policy: u64,
) -> Result<IdDigests, IdBlockError> {
    if id_block.ld != *launch_digest {
        return Err(IdBlockError::LaunchDigestMismatch {
            id_block: hex::encode(id_block.ld),
            launch: hex::encode(launch_digest),
        });
    }
    if id_block.policy != policy {
        return Err(IdBlockError::PolicyMismatch { id_block: id_block.policy, launch: policy });
    }
    if id_auth.id_key_algo != ALGO_ECDSA_P384_SHA384 {
        return Err(IdBlockError::IdKeyAlgo { algo: id_auth.id_key_algo });
    }
    if author_key_en && id_auth.author_key_algo != ALGO_ECDSA_P384_SHA384 {
        return Err(IdBlockError::AuthorKeyAlgo { algo: id_auth.author_key_algo });
    }
    let id_key = id_auth.id_key.to_verifying_key().map_err(IdBlockError::BadIdKey)?;
    verify(&id_key, &id_block.to_bytes(), &id_auth.id_block_sig).ok_or(IdBlockError::IdBlockSignature)?;
    let mut digests = IdDigests { id_key_digest: id_auth.id_key.digest(), author_key_digest: [0; LD_SIZE] };
    if author_key_en {
        let author_key = id_auth.author_key.to_verifying_key().map_err(IdBlockError::BadAuthorKey)?;
        verify(&author_key, id_auth.id_key.as_bytes(), &id_auth.id_key_sig).ok_or(IdBlockError::AuthorKeySignature)?;
        digests.author_key_digest = id_auth.author_key.digest();
    }
    Ok(digests)
}

/// Verifies `sig` over SHA-384 of `msg`; `None` if R or S is out of range or the
/// signature does not verify.
fn verify(key: &VerifyingKey, msg: &[u8], sig: &EcdsaSignature) -> Option<()> {
    key.verify(msg, &sig.to_signature()?).ok()
}

/// The SNP_LAUNCH_FINISH inputs QEMU's `sev-snp-guest` takes as options.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FinishOptions {
    /// `id-block`, with `id-auth`: the ID block and its authentication structure.
    pub id: Option<(IdBlock, IdAuth)>,
    /// `author-key-enabled`: whether ID_KEY_SIG and AUTHOR_KEY are checked.
    pub author_key_enabled: bool,
    /// `host-data`: 32 bytes the report carries as HOST_DATA (zero if not given).
    pub host_data: [u8; HOST_DATA_SIZE],
}

impl FinishOptions {
    /// Parses the options as QEMU's `sev-snp-guest` takes them: `id-block` and
    /// `id-auth` base64 (given together), `author-key-enabled` on/off (only with an ID
    /// block), `host-data` the base64 of 32 bytes.
    pub fn from_qemu(
        id_block: Option<&str>,
        id_auth: Option<&str>,
        author_key_enabled: Option<&str>,
        host_data: Option<&str>,
    ) -> Result<Self, IdBlockError> {
        let id = match (id_block, id_auth) {
            (Some(block), Some(auth)) => Some((IdBlock::from_base64(block)?, IdAuth::from_base64(auth)?)),
            (Some(_), None) => return Err(IdBlockError::Unpaired { given: "id-block" }),
            (None, Some(_)) => return Err(IdBlockError::Unpaired { given: "id-auth" }),
            (None, None) => None,
        };
        let author_key_enabled = author_key_enabled.map(|v| parse_qemu_bool("author-key-enabled", v)).transpose()?;
        if author_key_enabled == Some(true) && id.is_none() {
            return Err(IdBlockError::AuthorKeyWithoutIdBlock);
        }
        let host_data = host_data.map(parse_host_data).transpose()?.unwrap_or([0; HOST_DATA_SIZE]);
        Ok(Self { id, author_key_enabled: author_key_enabled.unwrap_or(false), host_data })
    }
}

/// Parses QEMU's `host-data=`: the base64 of exactly 32 bytes.
pub fn parse_host_data(s: &str) -> Result<[u8; HOST_DATA_SIZE], IdBlockError> {
    let bytes = BASE64.decode(s.trim()).map_err(|source| IdBlockError::Base64 { option: "host-data", source })?;
    bytes.as_slice().try_into().map_err(|_| IdBlockError::Length {
        what: "sev-snp-guest option host-data",
        len: bytes.len(),
        expected: HOST_DATA_SIZE,
    })
}

/// Parses a QEMU boolean option value: on/yes/true/y or off/no/false/n (QEMU's
/// `qapi_bool_parse`).
pub fn parse_qemu_bool(option: &'static str, value: &str) -> Result<bool, IdBlockError> {
    match value {
        "on" | "yes" | "true" | "y" => Ok(true),
        "off" | "no" | "false" | "n" => Ok(false),
        _ => Err(IdBlockError::Bool { option, value: value.to_string() }),
    }
}

/// A big-endian 48-byte P-384 integer as the firmware's 72-byte little-endian one.
fn le_scalar(be: &FieldBytes) -> [u8; SCALAR_SIZE] {
    let mut le = [0u8; SCALAR_SIZE];
    for (dst, src) in le.iter_mut().zip(be.iter().rev()) {
        *dst = *src;
    }
    le
}

/// A 72-byte little-endian integer as a big-endian 48-byte one; `None` if it does not
/// fit in 384 bits.
fn be_field(le: &[u8; SCALAR_SIZE]) -> Option<FieldBytes> {
    if le[P384_SIZE..].iter().any(|&b| b != 0) {
        return None;
    }
    let mut be = FieldBytes::default();
    for (dst, src) in be.iter_mut().zip(le[..P384_SIZE].iter().rev()) {
        *dst = *src;
    }
    Some(be)
}

/// `N` bytes of `b` at `off`. Callers pass constant offsets inside fixed-size arrays.
fn array_ref<const N: usize>(b: &[u8], off: usize) -> &[u8; N] {
    b[off..off + N].try_into().expect("constant offset inside a fixed-size structure")
}

#[cfg(test)]
mod tests {
    use super::*;

    const LD: LaunchDigest = [0x5a; LD_SIZE];
    const POLICY: u64 = 0x30000;

    fn key(seed: u8) -> SigningKey {
        let mut bytes = [seed; 48];
        bytes[0] = 0x01; // below the group order
        SigningKey::from_slice(&bytes).unwrap()
    }

    fn signed(author: bool) -> (IdBlock, IdAuth) {
        let block = IdBlock { family_id: [1; 16], image_id: [2; 16], guest_svn: 7, ..IdBlock::new(LD, POLICY) };
        let author_key = key(0xa0);
        let auth = block.sign(&key(0x11), author.then_some(&author_key)).unwrap();
        (block, auth)
    }

    #[test]
    fn id_block_layout_offsets() {
        let block = IdBlock {
            ld: [0xaa; LD_SIZE],
            family_id: [0xbb; 16],
            image_id: [0xcc; 16],
            version: 0x1122_3344,
            guest_svn: 0x5566_7788,
            policy: 0x0102_0304_0506_0708,
        };
        let b = block.to_bytes();
        assert_eq!(b.len(), 96);
        assert_eq!(&b[0x00..0x30], &[0xaa; 48]);
        assert_eq!(&b[0x30..0x40], &[0xbb; 16]);
        assert_eq!(&b[0x40..0x50], &[0xcc; 16]);
        assert_eq!(&b[0x50..0x54], &[0x44, 0x33, 0x22, 0x11]);
        assert_eq!(&b[0x54..0x58], &[0x88, 0x77, 0x66, 0x55]);
        assert_eq!(&b[0x58..0x60], &[8, 7, 6, 5, 4, 3, 2, 1]);
        assert_eq!(IdBlock::from_bytes(&b).unwrap(), block);
    }

    #[test]
    fn id_auth_layout_offsets() {
        let (_, auth) = signed(true);
        let b = auth.to_bytes();
        assert_eq!(b.len(), 0x1000);
        assert_eq!(&b[0x00..0x04], &1u32.to_le_bytes(), "ID_KEY_ALGO");
        assert_eq!(&b[0x04..0x08], &1u32.to_le_bytes(), "AUTH_KEY_ALGO");
        assert!(b[0x08..0x40].iter().all(|&x| x == 0), "reserved");
        assert_eq!(&b[0x40..0x240], auth.id_block_sig.as_bytes());
        assert_eq!(&b[0x240..0x644], auth.id_key.as_bytes());
        assert!(b[0x644..0x680].iter().all(|&x| x == 0), "reserved");
        assert_eq!(&b[0x680..0x880], auth.id_key_sig.as_bytes());
        assert_eq!(&b[0x880..0xc84], auth.author_key.as_bytes());
        assert!(b[0xc84..].iter().all(|&x| x == 0), "reserved");
        // Inside the key: curve 2 at 0, QX at 4, QY at 0x4c, both 72 bytes with the top
        // 24 zero; reserved from 0x94.
        let k = auth.id_key.as_bytes();
        assert_eq!(&k[0..4], &2u32.to_le_bytes());
        assert!(k[0x04 + 48..0x04 + 72].iter().all(|&x| x == 0));
        assert!(k[0x4c + 48..0x4c + 72].iter().all(|&x| x == 0));
        assert!(k[0x94..].iter().all(|&x| x == 0));
        assert!(k[0x04..0x04 + 48].iter().any(|&x| x != 0));
        // Inside the signature: R at 0, S at 0x48, reserved from 0x90.
        let s = auth.id_block_sig.as_bytes();
        assert!(s[48..72].iter().all(|&x| x == 0) && s[0x48 + 48..0x90].iter().all(|&x| x == 0));
        assert!(s[0x90..].iter().all(|&x| x == 0));
        assert_eq!(IdAuth::from_bytes(b.as_slice()).unwrap(), auth);
    }

    #[test]
    fn public_key_is_little_endian_affine_coordinates() {
        let sk = key(0x33);
        let point = sk.verifying_key().to_encoded_point(false);
        let pk = PublicKey::from_verifying_key(sk.verifying_key());
        let mut x = point.x().unwrap().to_vec();
        x.reverse();
        assert_eq!(&pk.qx()[..48], x.as_slice());
        assert_eq!(pk.to_verifying_key().unwrap(), *sk.verifying_key());
    }

    #[test]
    fn base64_round_trips_and_takes_short_id_auth() {
        let (block, auth) = signed(true);
        assert_eq!(IdBlock::from_base64(&block.to_base64()).unwrap(), block);
        assert_eq!(IdAuth::from_base64(&auth.to_base64()).unwrap(), auth);
        // QEMU takes an id-auth shorter than a page: the rest is zero.
        let (_, no_author) = signed(false);
        let full = no_author.to_bytes();
        let short = BASE64.encode(&full[..0x644]);
        assert_eq!(IdAuth::from_base64(&short).unwrap(), no_author);
    }

    #[test]
    fn base64_lengths_and_garbage_are_rejected() {
        let e = IdBlock::from_base64(&BASE64.encode([0u8; 95])).unwrap_err();
        assert!(matches!(e, IdBlockError::Length { len: 95, expected: 96, .. }), "{e}");
        let e = IdBlock::from_base64("not base64!").unwrap_err();
        assert!(matches!(e, IdBlockError::Base64 { option: "id-block", .. }), "{e}");
        let e = IdAuth::from_base64(&BASE64.encode(vec![0u8; 4097])).unwrap_err();
        assert!(matches!(e, IdBlockError::IdAuthTooLong { len: 4097 }), "{e}");
        assert!(matches!(IdAuth::from_bytes(&[0u8; 4095]), Err(IdBlockError::Length { .. })));
        let e = parse_host_data(&BASE64.encode([0u8; 31])).unwrap_err();
        assert!(matches!(e, IdBlockError::Length { len: 31, expected: 32, .. }), "{e}");
        assert_eq!(parse_host_data(&BASE64.encode([7u8; 32])).unwrap(), [7u8; 32]);
    }

    #[test]
    fn finish_options_parse_like_qemu() {
        let (block, auth) = signed(true);
        let o = FinishOptions::from_qemu(
            Some(&block.to_base64()),
            Some(&auth.to_base64()),
            Some("on"),
            Some(&BASE64.encode([9u8; 32])),
        )
        .unwrap();
        assert_eq!(o.id, Some((block, auth.clone())));
        assert!(o.author_key_enabled);
        assert_eq!(o.host_data, [9u8; 32]);
        let none = FinishOptions::from_qemu(None, None, None, None).unwrap();
        assert_eq!(none, FinishOptions { id: None, author_key_enabled: false, host_data: [0; 32] });
        let e = FinishOptions::from_qemu(Some(&block.to_base64()), None, None, None).unwrap_err();
        assert!(matches!(e, IdBlockError::Unpaired { given: "id-block" }), "{e}");
        let e = FinishOptions::from_qemu(None, Some(&auth.to_base64()), None, None).unwrap_err();
        assert!(matches!(e, IdBlockError::Unpaired { given: "id-auth" }), "{e}");
        let e = FinishOptions::from_qemu(None, None, Some("yes"), None).unwrap_err();
        assert!(matches!(e, IdBlockError::AuthorKeyWithoutIdBlock), "{e}");
        FinishOptions::from_qemu(None, None, Some("off"), None).unwrap();
        for (v, b) in [("on", true), ("yes", true), ("true", true), ("y", true), ("off", false), ("n", false)] {
            assert_eq!(parse_qemu_bool("x", v).unwrap(), b);
        }
        assert!(matches!(parse_qemu_bool("x", "ON"), Err(IdBlockError::Bool { .. })));
        assert!(matches!(parse_qemu_bool("x", "1"), Err(IdBlockError::Bool { .. })));
    }

    #[test]
    fn signed_id_block_verifies_and_yields_key_digests() {
        let (block, auth) = signed(true);
        let d = verify_id_block(&block, &auth, true, &LD, POLICY).unwrap();
        assert_eq!(d.id_key_digest, <[u8; 48]>::from(Sha384::digest(&auth.to_bytes()[0x240..0x644])));
        assert_eq!(d.author_key_digest, <[u8; 48]>::from(Sha384::digest(&auth.to_bytes()[0x880..0xc84])));
        assert_ne!(d.id_key_digest, d.author_key_digest);
        // Without author-key-enabled the author fields are not looked at.
        let d = verify_id_block(&block, &auth, false, &LD, POLICY).unwrap();
        assert_eq!(d.author_key_digest, [0; 48]);
        let (block, auth) = signed(false);
        verify_id_block(&block, &auth, false, &LD, POLICY).unwrap();
    }

    #[test]
    fn wrong_launch_digest_is_bad_measurement() {
        let (block, auth) = signed(true);
        let mut other = LD;
        other[47] ^= 1;
        let e = verify_id_block(&block, &auth, true, &other, POLICY).unwrap_err();
        assert!(matches!(e, IdBlockError::LaunchDigestMismatch { .. }), "{e}");
        assert_eq!(e.fw_status(), Some(0x0b));
    }

    #[test]
    fn wrong_policy_is_policy_failure() {
        let (block, auth) = signed(true);
        let e = verify_id_block(&block, &auth, true, &LD, POLICY | (1 << 19)).unwrap_err();
        assert!(matches!(e, IdBlockError::PolicyMismatch { id_block: 0x30000, launch: 0xb0000 }), "{e}");
        assert_eq!(e.fw_status(), Some(0x07));
    }

    #[test]
    fn tampered_id_block_or_flipped_signature_is_bad_signature() {
        let (block, auth) = signed(true);
        let mut flipped = auth.clone();
        let mut sig = *flipped.id_block_sig.as_bytes();
        sig[SIG_S] ^= 1;
        flipped.id_block_sig = EcdsaSignature::from_bytes(sig);
        let e = verify_id_block(&block, &flipped, true, &LD, POLICY).unwrap_err();
        assert!(matches!(e, IdBlockError::IdBlockSignature), "{e}");
        assert_eq!(e.fw_status(), Some(0x0a));
        // A field the launch does not pin (the SVN) changed after signing.
        let bumped = IdBlock { guest_svn: 8, ..block };
        assert!(matches!(verify_id_block(&bumped, &auth, true, &LD, POLICY), Err(IdBlockError::IdBlockSignature)));
        // R beyond 384 bits.
        let mut wide = auth.clone();
        let mut sig = *wide.id_block_sig.as_bytes();
        sig[SIG_R + 60] = 1;
        wide.id_block_sig = EcdsaSignature::from_bytes(sig);
        assert!(matches!(verify_id_block(&block, &wide, true, &LD, POLICY), Err(IdBlockError::IdBlockSignature)));
    }

    #[test]
    fn wrong_author_key_is_author_key_signature_failure() {
        let (block, auth) = signed(true);
        let mut swapped = auth.clone();
        swapped.author_key = PublicKey::from_verifying_key(key(0x77).verifying_key());
        let e = verify_id_block(&block, &swapped, true, &LD, POLICY).unwrap_err();
        assert!(matches!(e, IdBlockError::AuthorKeySignature), "{e}");
        assert_eq!(e.fw_status(), Some(0x0a));
        // The same ID auth passes when the author key is not enabled.
        verify_id_block(&block, &swapped, false, &LD, POLICY).unwrap();
        // An ID auth without an author signature fails when it is enabled.
        let (block, no_author) = signed(false);
        let e = verify_id_block(&block, &no_author, true, &LD, POLICY).unwrap_err();
        assert!(matches!(e, IdBlockError::AuthorKeyAlgo { algo: 0 }), "{e}");
        assert_eq!(e.fw_status(), Some(0x16));
    }

    #[test]
    fn bad_keys_and_algorithms_are_rejected() {
        let (block, auth) = signed(true);
        let mut a = auth.clone();
        a.id_key_algo = 2;
        assert!(matches!(verify_id_block(&block, &a, true, &LD, POLICY), Err(IdBlockError::IdKeyAlgo { algo: 2 })));
        let mut a = auth.clone();
        let mut k = *a.id_key.as_bytes();
        k[0] = 1; // curve 1 (secp256k1 in the firmware's numbering)
        a.id_key = PublicKey::from_bytes(k);
        let e = verify_id_block(&block, &a, true, &LD, POLICY).unwrap_err();
        assert!(matches!(e, IdBlockError::BadIdKey(KeyError::Curve(1))), "{e}");
        let mut a = auth.clone();
        let mut k = *a.id_key.as_bytes();
        k[KEY_QY] ^= 1;
        a.id_key = PublicKey::from_bytes(k);
        let e = verify_id_block(&block, &a, true, &LD, POLICY).unwrap_err();
        assert!(matches!(e, IdBlockError::BadIdKey(KeyError::NotOnCurve)), "{e}");
        let mut a = auth;
        let mut k = *a.author_key.as_bytes();
        k[KEY_QX + 50] = 1;
        a.author_key = PublicKey::from_bytes(k);
        let e = verify_id_block(&block, &a, true, &LD, POLICY).unwrap_err();
        assert!(matches!(e, IdBlockError::BadAuthorKey(KeyError::CoordinateTooLarge)), "{e}");
    }

    #[test]
    fn checks_run_in_the_firmware_order() {
        // Wrong LD and wrong policy and a bad signature: the LD is reported.
        let (block, mut auth) = signed(true);
        auth.id_block_sig = EcdsaSignature::zeroed();
        let e = verify_id_block(&block, &auth, true, &[0; 48], 0).unwrap_err();
        assert!(matches!(e, IdBlockError::LaunchDigestMismatch { .. }), "{e}");
        let e = verify_id_block(&block, &auth, true, &LD, 0).unwrap_err();
        assert!(matches!(e, IdBlockError::PolicyMismatch { .. }), "{e}");
    }

    /// The firmware status numbers agree with the sev crate's `SevError` codes.
    #[test]
    fn status_codes_match_the_sev_crate() {
        use sev::error::SevError;
        assert!(matches!(SevError::from(STATUS_BAD_MEASUREMENT), SevError::BadMeasurement));
        assert!(matches!(SevError::from(STATUS_POLICY_FAILURE), SevError::PolicyFailure));
        assert!(matches!(SevError::from(STATUS_BAD_SIGNATURE), SevError::BadSignature));
        assert!(matches!(SevError::from(STATUS_INVALID_PARAM), SevError::InvalidParam));
    }

    mod ring_cross_check {
        //! ring (BoringSSL's ECDSA, not RustCrypto's) is an independent implementation.
        //! AMD's layout stores R, S, QX and QY as 72-byte little-endian fields; ring
        //! wants 48-byte big-endian values (fixed-width signatures, SEC1 points).
        use super::*;
        use ring::rand::SystemRandom;
        use ring::signature::{
            EcdsaKeyPair, KeyPair, UnparsedPublicKey, ECDSA_P384_SHA384_FIXED, ECDSA_P384_SHA384_FIXED_SIGNING,
        };

        fn be(le: &[u8; 72]) -> Vec<u8> {
            let mut v = le[..48].to_vec();
            v.reverse();
            v
        }

        fn le72(be48: &[u8]) -> [u8; 72] {
            let mut v = [0u8; 72];
            v[..48].copy_from_slice(be48);
            v[..48].reverse();
            v
        }

        fn sha384(data: &[u8]) -> [u8; 48] {
            ring::digest::digest(&ring::digest::SHA384, data).as_ref().try_into().unwrap()
        }

        fn ring_key() -> EcdsaKeyPair {
            let rng = SystemRandom::new();
            let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &rng).unwrap();
            EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap()
        }

        fn ring_pub(k: &EcdsaKeyPair) -> PublicKey {
            let point = k.public_key().as_ref(); // 0x04 || X || Y
            assert_eq!(point.len(), 97);
            let mut b = [0u8; PUBLIC_KEY_SIZE];
            b[0..4].copy_from_slice(&2u32.to_le_bytes());
            b[4..76].copy_from_slice(&le72(&point[1..49]));
            b[76..148].copy_from_slice(&le72(&point[49..97]));
            PublicKey::from_bytes(b)
        }

        fn ring_sign(k: &EcdsaKeyPair, msg: &[u8]) -> EcdsaSignature {
            let sig = k.sign(&SystemRandom::new(), msg).unwrap(); // r || s, big-endian
            let mut b = [0u8; SIGNATURE_SIZE];
            b[0..72].copy_from_slice(&le72(&sig.as_ref()[..48]));
            b[72..144].copy_from_slice(&le72(&sig.as_ref()[48..]));
            EcdsaSignature::from_bytes(b)
        }

        fn ring_point(key: &PublicKey) -> Vec<u8> {
            [&[4u8][..], &be(key.qx()), &be(key.qy())].concat()
        }

        fn ring_verify(key: &PublicKey, msg: &[u8], sig: &EcdsaSignature) -> bool {
            let fixed = [be(sig.r()), be(sig.s())].concat();
            UnparsedPublicKey::new(&ECDSA_P384_SHA384_FIXED, ring_point(key)).verify(msg, &fixed).is_ok()
        }

        #[test]
        fn id_auth_made_with_ring_verifies() {
            let (id, author) = (ring_key(), ring_key());
            let block = IdBlock::new(LD, POLICY);
            let id_key = ring_pub(&id);
            let auth = IdAuth {
                id_key_algo: 1,
                author_key_algo: 1,
                id_block_sig: ring_sign(&id, &block.to_bytes()),
                id_key_sig: ring_sign(&author, id_key.as_bytes()),
                author_key: ring_pub(&author),
                id_key,
            };
            let d = verify_id_block(&block, &auth, true, &LD, POLICY).unwrap();
            assert_eq!(d.id_key_digest, sha384(auth.id_key.as_bytes()));
            assert_eq!(d.author_key_digest, sha384(auth.author_key.as_bytes()));
            // And a block signed by another ring key does not.
            let mut forged = auth.clone();
            forged.id_block_sig = ring_sign(&ring_key(), &block.to_bytes());
            assert!(matches!(verify_id_block(&block, &forged, true, &LD, POLICY), Err(IdBlockError::IdBlockSignature)));
        }

        #[test]
        fn our_signatures_verify_with_ring() {
            let (block, auth) = signed(true);
            assert!(ring_verify(&auth.id_key, &block.to_bytes(), &auth.id_block_sig));
            assert!(ring_verify(&auth.author_key, auth.id_key.as_bytes(), &auth.id_key_sig));
            let other = IdBlock { guest_svn: 1, ..block };
            assert!(!ring_verify(&auth.id_key, &other.to_bytes(), &auth.id_block_sig));
            // Our public key is the one ring derives from the same private scalar: ring
            // refuses a key pair whose public half does not match the private one.
            let sk = key(0x11);
            let consistent = EcdsaKeyPair::from_private_key_and_public_key(
                &ECDSA_P384_SHA384_FIXED_SIGNING,
                &sk.to_bytes(),
                &ring_point(&auth.id_key),
                &SystemRandom::new(),
            );
            assert!(consistent.is_ok(), "ring rejects our public key for the private key: {consistent:?}");
            let wrong = EcdsaKeyPair::from_private_key_and_public_key(
                &ECDSA_P384_SHA384_FIXED_SIGNING,
                &sk.to_bytes(),
                &ring_point(&auth.author_key),
                &SystemRandom::new(),
            );
            assert!(wrong.is_err());
        }
    }
}
