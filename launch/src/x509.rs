//! The X.509 building blocks the emulated platforms' key chains share (the SEV-SNP
//! platform's AMD-style chain, [`crate::snp::certs`], and the TDX platform's
//! Intel-style chain, [`crate::tdx::certs`]): PEM text and its blocks, subject names,
//! public key infos, extensions given as-is, validity periods and certificate builders.
//! What differs between the two chains (algorithms, serial numbers, name layouts,
//! vendor extensions) stays in their modules.

use std::time::{Duration, SystemTime};

use rsa::signature::Keypair;
use thiserror::Error;
use x509_cert::builder::{CertificateBuilder, Profile};
use x509_cert::der::asn1::{Any, SetOfVec};
use x509_cert::der::oid::AssociatedOid;
use x509_cert::der::pem::LineEnding;
use x509_cert::der::{Decode, Encode, Tag};
use x509_cert::ext::pkix::BasicConstraints;
use x509_cert::ext::{AsExtension, Extension};
use x509_cert::name::{Name, RdnSequence, RelativeDistinguishedName};
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::{DynSignatureAlgorithmIdentifier, EncodePublicKey, ObjectIdentifier, SubjectPublicKeyInfoOwned};
use x509_cert::time::{Time, Validity};

/// Certificates start one day in the past so clocks slightly behind accept them.
const BACKDATE: Duration = Duration::from_secs(86_400);

/// X.520 attribute types of subject names.
pub(crate) mod attr {
    use x509_cert::spki::ObjectIdentifier as Oid;
    /// commonName.
    pub const CN: Oid = Oid::new_unwrap("2.5.4.3");
    /// countryName (a PrintableString).
    pub const C: Oid = Oid::new_unwrap("2.5.4.6");
    /// localityName.
    pub const L: Oid = Oid::new_unwrap("2.5.4.7");
    /// stateOrProvinceName.
    pub const ST: Oid = Oid::new_unwrap("2.5.4.8");
    /// organizationName.
    pub const O: Oid = Oid::new_unwrap("2.5.4.10");
    /// organizationalUnitName.
    pub const OU: Oid = Oid::new_unwrap("2.5.4.11");
}

/// Errors from encoding or building certificates, keys and names.
#[derive(Debug, Error)]
pub enum X509Error {
    /// Encoding a certificate, key, name, extension or PEM block failed.
    #[error("cannot encode the {which}: {reason}")]
    Encode {
        /// What was being encoded.
        which: &'static str,
        /// Why it failed.
        reason: String,
    },
    /// Building or signing a certificate failed.
    #[error("cannot build the {which} certificate: {source}")]
    Build {
        /// Which certificate.
        which: &'static str,
        /// The builder's error.
        #[source]
        source: x509_cert::builder::Error,
    },
}

/// An encoding error of `which`.
pub(crate) fn encode_err(which: &'static str, e: impl std::fmt::Display) -> X509Error {
    X509Error::Encode { which, reason: e.to_string() }
}

/// A builder error of certificate `which`.
pub(crate) fn build_err(which: &'static str) -> impl Fn(x509_cert::builder::Error) -> X509Error {
    move |source| X509Error::Build { which, source }
}

/// PEM text of one DER block.
pub(crate) fn pem(label: &'static str, der: &[u8]) -> Result<String, X509Error> {
    x509_cert::der::pem::encode_string(label, LineEnding::LF, der).map_err(|e| encode_err(label, e))
}

/// Splits PEM text into (label, DER) blocks; text outside the blocks is ignored.
pub(crate) fn pem_blocks(text: &[u8]) -> Result<Vec<(String, Vec<u8>)>, String> {
    const BEGIN: &[u8] = b"-----BEGIN ";
    const END: &[u8] = b"-----END ";
    let find = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).position(|w| w == needle);
    let mut blocks = Vec::new();
    let mut rest = text;
    while let Some(start) = find(rest, BEGIN) {
        let after = &rest[start..];
        let end = find(after, END).ok_or("a PEM block has no END line")?;
        let close = find(&after[end + END.len()..], b"-----").ok_or("a PEM END line is not closed")?;
        let len = end + END.len() + close + 5;
        let (label, der) = x509_cert::der::pem::decode_vec(&after[..len]).map_err(|e| format!("PEM block: {e}"))?;
        blocks.push((label.to_string(), der));
        rest = &after[len..];
    }
    Ok(blocks)
}

/// A subject name of one attribute per RDN, in the order given: the country
/// ([`attr::C`]) a PrintableString, the rest UTF8Strings, as AMD's and Intel's
/// certificates have them.
pub(crate) fn name(attrs: &[(ObjectIdentifier, &str)]) -> Result<Name, X509Error> {
    let mut rdns = Vec::new();
    for &(id, value) in attrs {
        let tag = if id == attr::C { Tag::PrintableString } else { Tag::Utf8String };
        let value = Any::new(tag, value.as_bytes()).map_err(|e| encode_err("subject name", e))?;
        let atv = x509_cert::attr::AttributeTypeAndValue { oid: id, value };
        let set = SetOfVec::try_from(vec![atv]).map_err(|e| encode_err("subject name", e))?;
        rdns.push(RelativeDistinguishedName(set));
    }
    Ok(RdnSequence(rdns))
}

/// The subject public key info of `key`.
pub(crate) fn spki(key: &impl EncodePublicKey, which: &'static str) -> Result<SubjectPublicKeyInfoOwned, X509Error> {
    let der = key.to_public_key_der().map_err(|e| encode_err(which, e))?;
    SubjectPublicKeyInfoOwned::from_der(der.as_bytes()).map_err(|e| encode_err(which, e))
}

/// A standard extension as an [`Extension`], basic constraints marked critical (as
/// both vendors' certificates have them).
pub(crate) fn ext<E: AsExtension>(e: &E, which: &'static str) -> Result<Extension, X509Error> {
    let mut ext = e.to_extension(&Name::default(), &[]).map_err(|err| encode_err(which, err))?;
    if ext.extn_id == BasicConstraints::OID {
        ext.critical = true;
    }
    Ok(ext)
}

/// An extension given as-is, for the builder's `add_extension` (the vendors'
/// extensions have no type of their own in x509-cert).
pub(crate) struct RawExtension(pub(crate) Extension);

impl AssociatedOid for RawExtension {
    /// Unused: [`AsExtension::to_extension`] returns the extension's own OID.
    const OID: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29");
}

impl Encode for RawExtension {
    fn encoded_len(&self) -> x509_cert::der::Result<x509_cert::der::Length> {
        self.0.encoded_len()
    }

    fn encode(&self, writer: &mut impl x509_cert::der::Writer) -> x509_cert::der::Result<()> {
        self.0.encode(writer)
    }
}

impl AsExtension for RawExtension {
    fn critical(&self, _: &Name, _: &[Extension]) -> bool {
        self.0.critical
    }

    fn to_extension(&self, _: &Name, _: &[Extension]) -> x509_cert::der::Result<Extension> {
        Ok(self.0.clone())
    }
}

/// What differs between the certificates of a chain.
pub(crate) struct CertSpec {
    /// The issuer's name; `None` for a self-signed certificate (the subject's).
    pub issuer: Option<Name>,
    /// The serial number.
    pub serial: SerialNumber,
    /// How long the certificate is valid from now (it starts a day in the past).
    pub lifetime: Duration,
    /// The subject's name.
    pub subject: Name,
    /// The subject's public key.
    pub spki: SubjectPublicKeyInfoOwned,
    /// The extensions, in order.
    pub extensions: Vec<Extension>,
}

/// A builder of certificate `which` as `spec` describes it, signed by `signer`
/// once the caller builds it (with the signature type of its algorithm).
pub(crate) fn builder<'s, S>(
    which: &'static str,
    spec: CertSpec,
    signer: &'s S,
) -> Result<CertificateBuilder<'s, S>, X509Error>
where
    S: Keypair + DynSignatureAlgorithmIdentifier,
    S::VerifyingKey: EncodePublicKey,
{
    let now = SystemTime::now();
    let time = |t: SystemTime| Time::try_from(t).map_err(|e| encode_err(which, e));
    let validity = Validity { not_before: time(now - BACKDATE)?, not_after: time(now + spec.lifetime)? };
    let mut builder = CertificateBuilder::new(
        Profile::Manual { issuer: spec.issuer },
        spec.serial,
        validity,
        spec.subject,
        spec.spki,
        signer,
    )
    .map_err(build_err(which))?;
    for e in spec.extensions {
        builder.add_extension(&RawExtension(e)).map_err(build_err(which))?;
    }
    Ok(builder)
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_cert::der::Tagged;

    #[test]
    fn pem_blocks_round_trip_and_skip_text_between_blocks() {
        let text = format!("junk\n{}between\n{}\0\0", pem("CERTIFICATE", b"one").unwrap(), pem("KEY", b"two").unwrap());

        let blocks = pem_blocks(text.as_bytes()).unwrap();

        assert_eq!(blocks, [("CERTIFICATE".to_owned(), b"one".to_vec()), ("KEY".to_owned(), b"two".to_vec())]);
    }

    #[test]
    fn unterminated_pem_block_is_an_error() {
        let text = pem("CERTIFICATE", b"one").unwrap();
        let cut = text.rfind("-----END").unwrap();

        assert_eq!(pem_blocks(&text.as_bytes()[..cut]).unwrap_err(), "a PEM block has no END line");
        assert_eq!(pem_blocks(&text.as_bytes()[..cut + 12]).unwrap_err(), "a PEM END line is not closed");
        assert!(pem_blocks(b"no pem here").unwrap().is_empty());
    }

    #[test]
    fn names_encode_the_country_as_printable_and_the_rest_as_utf8() {
        let n = name(&[(attr::CN, "x"), (attr::C, "US")]).unwrap();

        let atvs: Vec<_> = n.0.iter().map(|rdn| rdn.0.get(0).unwrap()).collect();
        assert_eq!(atvs.iter().map(|a| a.oid).collect::<Vec<_>>(), [attr::CN, attr::C]);
        assert_eq!(atvs.iter().map(|a| a.value.tag()).collect::<Vec<_>>(), [Tag::Utf8String, Tag::PrintableString]);
        assert_eq!(atvs.iter().map(|a| a.value.value()).collect::<Vec<_>>(), [b"x".as_slice(), b"US"]);
    }

    #[test]
    fn basic_constraints_are_critical_and_raw_extensions_keep_theirs() {
        let bc = ext(&BasicConstraints { ca: false, path_len_constraint: None }, "test").unwrap();
        assert!(bc.critical);
        let raw = Extension {
            extn_id: ObjectIdentifier::new_unwrap("1.2.3.4"),
            critical: false,
            extn_value: x509_cert::der::asn1::OctetString::new(vec![5]).unwrap(),
        };
        assert_eq!(RawExtension(raw.clone()).to_extension(&Name::default(), &[]).unwrap(), raw);
    }
}
