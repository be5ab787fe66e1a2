//! The options of a real TDX launch, with the names, value formats and defaults of
//! QEMU's `tdx-guest` object (qapi/qom.json `TdxGuestProperties`; target/i386/kvm/tdx.c),
//! so that a QEMU command line's `-object tdx-guest,...` (or its JSON form
//! `-object '{"qom-type":"tdx-guest",...}'`) can be given to cvmm as it is.
//!
//! | option | value | default |
//! |---|---|---|
//! | `attributes` | number (decimal, `0x` hex or `0` octal, as QEMU's `uint64`; a JSON number) | 0x10000000 (SEPT_VE_DISABLE) |
//! | `sept-ve-disable` | `on`/`off` (also `yes`/`no`, `true`/`false`, `y`/`n`; a JSON boolean): sets or clears bit 28 of the attributes | on |
//! | `mrconfigid` | base64 of exactly 48 bytes (a SHA-384 digest) | all zero |
//! | `mrowner` | base64 of exactly 48 bytes | all zero |
//! | `mrownerconfig` | base64 of exactly 48 bytes | all zero |
//! | `quote-generation-socket` | a QAPI `SocketAddress`: `quote-generation-socket.type=unix,quote-generation-socket.path=PATH` (also `.abstract=on`, `.tight=off`) or `quote-generation-socket.type=vsock,quote-generation-socket.cid=CID,quote-generation-socket.port=PORT` (decimal strings); in JSON an object with those members, all strings but `abstract` and `tight` | none: GetQuote answers "QGS unavailable" |
//! | `id`, `qom-type` | ignored (QEMU's object id and type) | — |
//!
//! SEPT_VE_DISABLE is on by default because a Linux TD without DEBUG panics at boot
//! without it. When both `attributes` and `sept-ve-disable` are given, `attributes` is
//! applied first and `sept-ve-disable` then sets or clears bit 28 (QEMU applies object
//! properties in the order of its option dictionary, which is not the command line's).
//! Beyond QEMU, cvmm refuses an option given twice and the `inet` and `fd` socket types
//! (the quote generation service is reached over a Unix socket or vsock). The attributes
//! are kept as a raw number here and checked against the host by
//! `super::probe::TdxHost::check_attributes`.

use std::path::PathBuf;

use serde_json::{Map, Value};
use thiserror::Error;

use super::uapi::attributes::SEPT_VE_DISABLE;
use crate::snp::kvm::options::{decode_exact, parse_bool, parse_number, OptionsError};

/// QEMU's default TD attributes: SEPT_VE_DISABLE.
pub const DEFAULT_ATTRIBUTES: u64 = SEPT_VE_DISABLE;

/// Size of MRCONFIGID, MROWNER and MROWNERCONFIG (SHA-384).
pub const DIGEST_SIZE: usize = 48;

/// The longest Unix socket path (`sun_path` holds 108 bytes with the terminating NUL).
pub const UNIX_PATH_MAX: usize = 107;

/// The options QEMU's `tdx-guest` has and cvmm knows.
const KNOWN: &str = "attributes, sept-ve-disable, mrconfigid, mrowner, mrownerconfig, quote-generation-socket, id, \
                     qom-type";

/// The prefix of the socket address's members in the key=value form.
const QGS: &str = "quote-generation-socket";

/// Errors in TDX options, each naming the option.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum TdxOptionsError {
    /// An option cvmm does not know.
    #[error("unknown tdx-guest option '{0}' (known: {KNOWN})")]
    Unknown(String),
    /// `name` without `=value`.
    #[error("tdx-guest option '{0}' has no value (write {0}=...)")]
    MissingValue(String),
    /// An option given twice.
    #[error("tdx-guest option '{0}' is given twice")]
    Duplicate(String),
    /// A value that is not a number, boolean or base64, or not of the right length
    /// (the message names the option).
    #[error("{0}")]
    Value(String),
    /// A JSON value of the wrong type.
    #[error("{option}: expected a JSON {expected}, got {got}")]
    JsonType {
        /// The option.
        option: String,
        /// What QEMU takes there.
        expected: &'static str,
        /// What was given.
        got: String,
    },
    /// Text starting with `{` that is not a JSON object.
    #[error("the tdx-guest options are not valid JSON: {0}")]
    Json(String),
    /// A `qom-type` other than tdx-guest.
    #[error("qom-type is '{0}', not tdx-guest")]
    QomType(String),
    /// A socket address cvmm cannot use, or an incomplete one.
    #[error("quote-generation-socket: {0}")]
    Socket(String),
}

impl From<OptionsError> for TdxOptionsError {
    fn from(e: OptionsError) -> Self {
        Self::Value(e.to_string())
    }
}

/// Where the quote generation service (Intel's QGS) listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QgsAddress {
    /// A Unix stream socket at a path.
    Unix(PathBuf),
    /// A Unix stream socket in the abstract namespace: the name's bytes (with `tight=off`,
    /// zero-padded to the whole of `sun_path`).
    UnixAbstract(Vec<u8>),
    /// A vsock stream socket.
    Vsock {
        /// Context ID (2: the host).
        cid: u32,
        /// Port (the QGS's default is 4050).
        port: u32,
    },
}

impl std::fmt::Display for QgsAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unix(path) => write!(f, "unix:{}", path.display()),
            Self::UnixAbstract(name) => write!(f, "unix:@{}", String::from_utf8_lossy(name).trim_end_matches('\0')),
            Self::Vsock { cid, port } => write!(f, "vsock:{cid}:{port}"),
        }
    }
}

/// The options of a real TDX launch (see the module documentation for their formats).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TdxKvmOptions {
    /// TD attributes for `KVM_TDX_INIT_VM`.
    pub attributes: u64,
    /// MRCONFIGID.
    pub mrconfigid: [u8; DIGEST_SIZE],
    /// MROWNER.
    pub mrowner: [u8; DIGEST_SIZE],
    /// MROWNERCONFIG.
    pub mrownerconfig: [u8; DIGEST_SIZE],
    /// The quote generation service GetQuote requests are forwarded to.
    pub quote_generation_socket: Option<QgsAddress>,
}

impl Default for TdxKvmOptions {
    fn default() -> Self {
        Self {
            attributes: DEFAULT_ATTRIBUTES,
            mrconfigid: [0; DIGEST_SIZE],
            mrowner: [0; DIGEST_SIZE],
            mrownerconfig: [0; DIGEST_SIZE],
            quote_generation_socket: None,
        }
    }
}

/// The members of a `SocketAddress`, as given.
#[derive(Debug, Default)]
struct SocketSpec {
    given: bool,
    kind: Option<String>,
    path: Option<String>,
    abstract_: Option<bool>,
    tight: Option<bool>,
    cid: Option<String>,
    port: Option<String>,
}

impl SocketSpec {
    fn set(&mut self, member: &str, value: &str) -> Result<(), TdxOptionsError> {
        self.given = true;
        match member {
            "type" => self.kind = Some(value.to_owned()),
            "path" => self.path = Some(value.to_owned()),
            "abstract" => self.abstract_ = Some(parse_bool("quote-generation-socket.abstract", value)?),
            "tight" => self.tight = Some(parse_bool("quote-generation-socket.tight", value)?),
            "cid" => self.cid = Some(value.to_owned()),
            "port" => self.port = Some(value.to_owned()),
            "host" | "str" | "numeric" | "to" | "ipv4" | "ipv6" | "keep-alive" | "mptcp" => {}
            _ => return Err(TdxOptionsError::Unknown(format!("{QGS}.{member}"))),
        }
        Ok(())
    }

    fn address(self) -> Result<Option<QgsAddress>, TdxOptionsError> {
        if !self.given {
            return Ok(None);
        }
        let err = |m: String| Err(TdxOptionsError::Socket(m));
        let decimal = |member: &str, value: Option<String>| -> Result<u32, TdxOptionsError> {
            let value = value.ok_or_else(|| TdxOptionsError::Socket(format!("a vsock address needs '{member}'")))?;
            if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
                return Err(TdxOptionsError::Socket(format!("{member} '{value}' is not a decimal number")));
            }
            value.parse().map_err(|_| TdxOptionsError::Socket(format!("{member} '{value}' does not fit 32 bits")))
        };
        match self.kind.as_deref() {
            None => err("the socket address has no 'type' (unix or vsock)".into()),
            Some("unix") => {
                let Some(path) = self.path else { return err("a unix address needs 'path'".into()) };
                if path.is_empty() {
                    return err("the unix socket path is empty".into());
                }
                if path.len() > UNIX_PATH_MAX {
                    return err(format!(
                        "the unix socket path is {} bytes, longer than the {UNIX_PATH_MAX} a socket address holds",
                        path.len()
                    ));
                }
                if self.abstract_.unwrap_or(false) {
                    let mut name = path.into_bytes();
                    if !self.tight.unwrap_or(true) {
                        name.resize(UNIX_PATH_MAX, 0);
                    }
                    Ok(Some(QgsAddress::UnixAbstract(name)))
                } else if self.tight.is_some() {
                    err("'tight' applies only to abstract unix sockets".into())
                } else {
                    Ok(Some(QgsAddress::Unix(PathBuf::from(path))))
                }
            }
            Some("vsock") => {
                Ok(Some(QgsAddress::Vsock { cid: decimal("cid", self.cid)?, port: decimal("port", self.port)? }))
            }
            Some(t @ ("inet" | "fd")) => err(format!(
                "type '{t}' is not supported: cvmm reaches the quote generation service over unix or vsock"
            )),
            Some(t) => err(format!("unknown socket type '{t}' (unix or vsock)")),
        }
    }
}

/// The options as parsed, before the combination rules are applied.
#[derive(Debug, Default)]
struct Given {
    attributes: Option<u64>,
    sept_ve_disable: Option<bool>,
    mrconfigid: Option<[u8; DIGEST_SIZE]>,
    mrowner: Option<[u8; DIGEST_SIZE]>,
    mrownerconfig: Option<[u8; DIGEST_SIZE]>,
    socket: SocketSpec,
}

impl Given {
    fn set(&mut self, key: &str, value: &str) -> Result<(), TdxOptionsError> {
        match key {
            "attributes" => self.attributes = Some(parse_number("attributes", value)?),
            "sept-ve-disable" => self.sept_ve_disable = Some(parse_bool("sept-ve-disable", value)?),
            "mrconfigid" => self.mrconfigid = Some(decode_exact("mrconfigid", value, "48 (a SHA-384 digest)")?),
            "mrowner" => self.mrowner = Some(decode_exact("mrowner", value, "48 (a SHA-384 digest)")?),
            "mrownerconfig" => {
                self.mrownerconfig = Some(decode_exact("mrownerconfig", value, "48 (a SHA-384 digest)")?)
            }
            "quote-generation-socket" => {
                return Err(TdxOptionsError::Socket(
                    "a socket address has members: give quote-generation-socket.type=unix,\
                     quote-generation-socket.path=PATH or quote-generation-socket.type=vsock,\
                     quote-generation-socket.cid=CID,quote-generation-socket.port=PORT"
                        .into(),
                ))
            }
            "id" => {}
            "qom-type" if value == "tdx-guest" => {}
            "qom-type" => return Err(TdxOptionsError::QomType(value.to_owned())),
            _ => match key.strip_prefix("quote-generation-socket.") {
                Some(member) => self.socket.set(member, value)?,
                None => return Err(TdxOptionsError::Unknown(key.to_owned())),
            },
        }
        Ok(())
    }

    fn finish(self) -> Result<TdxKvmOptions, TdxOptionsError> {
        let mut o = TdxKvmOptions::default();
        if let Some(a) = self.attributes {
            o.attributes = a;
        }
        match self.sept_ve_disable {
            Some(true) => o.attributes |= SEPT_VE_DISABLE,
            Some(false) => o.attributes &= !SEPT_VE_DISABLE,
            None => {}
        }
        o.mrconfigid = self.mrconfigid.unwrap_or(o.mrconfigid);
        o.mrowner = self.mrowner.unwrap_or(o.mrowner);
        o.mrownerconfig = self.mrownerconfig.unwrap_or(o.mrownerconfig);
        o.quote_generation_socket = self.socket.address()?;
        Ok(o)
    }
}

impl TdxKvmOptions {
    /// Parses QEMU's `-object` argument for a `tdx-guest`: either `key=value` pairs
    /// separated by commas (`tdx-guest,id=tdx0,sept-ve-disable=on,...`; a leading
    /// `tdx-guest` is accepted) or, when the text starts with `{`, its JSON form.
    pub fn parse(s: &str) -> Result<Self, TdxOptionsError> {
        if s.trim_start().starts_with('{') {
            return Self::parse_json(s);
        }
        let mut given = Given::default();
        let mut seen: Vec<&str> = Vec::new();
        for (i, item) in s.split(',').enumerate() {
            if item.is_empty() || (i == 0 && item == "tdx-guest") {
                continue;
            }
            let Some((key, value)) = item.split_once('=') else {
                return Err(TdxOptionsError::MissingValue(item.to_owned()));
            };
            if seen.contains(&key) {
                return Err(TdxOptionsError::Duplicate(key.to_owned()));
            }
            seen.push(key);
            given.set(key, value)?;
        }
        given.finish()
    }

    /// Parses the JSON form: `{"qom-type": "tdx-guest", "id": ..., "attributes": 268435456,
    /// "sept-ve-disable": true, "mrconfigid": "...", "quote-generation-socket": {"type":
    /// "vsock", "cid": "2", "port": "4050"}}`, with QEMU's JSON types.
    pub fn parse_json(s: &str) -> Result<Self, TdxOptionsError> {
        let value: Value = serde_json::from_str(s).map_err(|e| TdxOptionsError::Json(e.to_string()))?;
        let Value::Object(map) = value else {
            return Err(TdxOptionsError::Json("not a JSON object".into()));
        };
        let mut given = Given::default();
        for (key, value) in &map {
            match key.as_str() {
                "attributes" => {
                    let n = value.as_u64().ok_or_else(|| json_type(key, "unsigned integer", value))?;
                    given.set(key, &n.to_string())?;
                }
                "sept-ve-disable" => {
                    let b = value.as_bool().ok_or_else(|| json_type(key, "boolean", value))?;
                    given.set(key, if b { "on" } else { "off" })?;
                }
                "quote-generation-socket" => {
                    let Value::Object(members) = value else { return Err(json_type(key, "object", value)) };
                    json_socket(&mut given.socket, members)?;
                }
                _ => {
                    let text = value.as_str().ok_or_else(|| json_type(key, "string", value))?;
                    given.set(key, text)?;
                }
            }
        }
        given.finish()
    }

    /// Whether SEPT_VE_DISABLE (bit 28) is set.
    pub fn sept_ve_disable(&self) -> bool {
        self.attributes & SEPT_VE_DISABLE != 0
    }
}

fn json_type(option: &str, expected: &'static str, got: &Value) -> TdxOptionsError {
    TdxOptionsError::JsonType { option: option.to_owned(), expected, got: got.to_string() }
}

/// The members of a JSON `SocketAddress`: `abstract` and `tight` are booleans, the rest
/// strings.
fn json_socket(spec: &mut SocketSpec, members: &Map<String, Value>) -> Result<(), TdxOptionsError> {
    spec.given = true;
    for (member, value) in members {
        let option = format!("{QGS}.{member}");
        let text = match member.as_str() {
            "abstract" | "tight" | "numeric" | "ipv4" | "ipv6" | "keep-alive" | "mptcp" => {
                let b = value.as_bool().ok_or_else(|| json_type(&option, "boolean", value))?;
                (if b { "on" } else { "off" }).to_owned()
            }
            _ => value.as_str().ok_or_else(|| json_type(&option, "string", value))?.to_owned(),
        };
        spec.set(member, &text)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 48 bytes 0x01..=0x30, and their base64 written out by hand.
    const DIGEST_B64: &str = "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyAhIiMkJSYnKCkqKywtLi8w";

    fn digest() -> [u8; 48] {
        std::array::from_fn(|i| i as u8 + 1)
    }

    #[test]
    fn defaults_are_qemus() {
        let o = TdxKvmOptions::parse("").unwrap();

        assert_eq!(o.attributes, 0x1000_0000);
        assert!(o.sept_ve_disable());
        assert_eq!((o.mrconfigid, o.mrowner, o.mrownerconfig), ([0; 48], [0; 48], [0; 48]));
        assert_eq!(o.quote_generation_socket, None);
    }

    #[test]
    fn a_qemu_object_line_parses() {
        let line = format!(
            "tdx-guest,id=tdx0,mrconfigid={DIGEST_B64},mrowner={DIGEST_B64},mrownerconfig={DIGEST_B64},\
             quote-generation-socket.type=vsock,quote-generation-socket.cid=2,quote-generation-socket.port=4050"
        );

        let o = TdxKvmOptions::parse(&line).unwrap();

        assert_eq!((o.mrconfigid, o.mrowner, o.mrownerconfig), (digest(), digest(), digest()));
        assert_eq!(o.quote_generation_socket, Some(QgsAddress::Vsock { cid: 2, port: 4050 }));
        assert_eq!(o.quote_generation_socket.unwrap().to_string(), "vsock:2:4050");
    }

    #[test]
    fn the_json_form_parses_with_qemus_types() {
        let json = format!(
            r#"{{"qom-type":"tdx-guest","id":"tdx0","attributes":1,"sept-ve-disable":true,"mrowner":"{DIGEST_B64}",
               "quote-generation-socket":{{"type":"unix","path":"/var/run/tdx-qgs/qgs.socket"}}}}"#
        );

        let o = TdxKvmOptions::parse(&json).unwrap();

        assert_eq!(o.attributes, 0x1000_0001);
        assert_eq!(o.mrowner, digest());
        assert_eq!(o.quote_generation_socket, Some(QgsAddress::Unix("/var/run/tdx-qgs/qgs.socket".into())));
        let err =
            TdxKvmOptions::parse(r#"{"quote-generation-socket":{"type":"vsock","cid":2,"port":"4050"}}"#).unwrap_err();
        assert_eq!(err.to_string(), "quote-generation-socket.cid: expected a JSON string, got 2");
        let err = TdxKvmOptions::parse(r#"{"attributes":"0x1"}"#).unwrap_err();
        assert_eq!(err.to_string(), "attributes: expected a JSON unsigned integer, got \"0x1\"");
        assert!(matches!(TdxKvmOptions::parse("{nope"), Err(TdxOptionsError::Json(_))));
        assert!(matches!(
            TdxKvmOptions::parse(r#"{"qom-type":"sev-snp-guest"}"#),
            Err(TdxOptionsError::QomType(t)) if t == "sev-snp-guest"
        ));
    }

    #[test]
    fn sept_ve_disable_sets_or_clears_bit_28_after_attributes() {
        let off = TdxKvmOptions::parse("sept-ve-disable=off").unwrap();
        let debug = TdxKvmOptions::parse("attributes=0x1").unwrap();
        let both = TdxKvmOptions::parse("sept-ve-disable=on,attributes=0x40000001").unwrap();

        assert_eq!(off.attributes, 0);
        assert_eq!(debug.attributes, 0x1, "attributes replaces the default");
        assert_eq!(both.attributes, 0x5000_0001, "sept-ve-disable applies after attributes");
        assert!(!off.sept_ve_disable() && both.sept_ve_disable());
    }

    #[test]
    fn attributes_are_decimal_hex_or_octal_numbers() {
        for (text, value) in [("268435456", 0x1000_0000), ("0x8000000010000000", 0x8000_0000_1000_0000), ("01", 1)] {
            assert_eq!(TdxKvmOptions::parse(&format!("attributes={text}")).unwrap().attributes, value, "{text}");
        }
        let err = TdxKvmOptions::parse("attributes=0xfoo").unwrap_err();
        assert!(err.to_string().starts_with("attributes: '0xfoo' is not a number"), "{err}");
        let err = TdxKvmOptions::parse("sept-ve-disable=1").unwrap_err();
        assert_eq!(err.to_string(), "sept-ve-disable: '1' is not 'on' or 'off'");
    }

    #[test]
    fn digests_of_the_wrong_length_or_not_base64_are_refused_with_the_option_name() {
        // 32 bytes (a SHA-256 digest) instead of 48.
        let err = TdxKvmOptions::parse("mrowner=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=").unwrap_err();
        assert_eq!(err.to_string(), "mrowner: decodes to 32 bytes, must be 48 (a SHA-384 digest)");
        let err = TdxKvmOptions::parse("mrconfigid=not*base64").unwrap_err();
        assert!(err.to_string().starts_with("mrconfigid: not valid base64"), "{err}");
    }

    #[test]
    fn unix_sockets_plain_and_abstract() {
        let abs = TdxKvmOptions::parse(
            "quote-generation-socket.type=unix,quote-generation-socket.path=qgs,quote-generation-socket.abstract=on",
        )
        .unwrap();
        let loose = TdxKvmOptions::parse(
            "quote-generation-socket.type=unix,quote-generation-socket.path=qgs,quote-generation-socket.abstract=on,\
             quote-generation-socket.tight=off",
        )
        .unwrap();

        assert_eq!(abs.quote_generation_socket, Some(QgsAddress::UnixAbstract(b"qgs".to_vec())));
        let Some(QgsAddress::UnixAbstract(name)) = loose.quote_generation_socket else { panic!("abstract") };
        assert_eq!((name.len(), &name[..4]), (107, &b"qgs\0"[..]));
        let long = format!("quote-generation-socket.type=unix,quote-generation-socket.path={}", "x".repeat(108));
        assert!(TdxKvmOptions::parse(&long).unwrap_err().to_string().contains("108 bytes, longer than the 107"));
    }

    #[test]
    fn socket_addresses_cvmm_cannot_use_are_refused() {
        let cases = [
            ("quote-generation-socket.type=inet,quote-generation-socket.host=localhost", "type 'inet' is not supported"),
            ("quote-generation-socket.type=vsock,quote-generation-socket.cid=2", "a vsock address needs 'port'"),
            ("quote-generation-socket.type=vsock,quote-generation-socket.cid=0x2,quote-generation-socket.port=1", "cid '0x2' is not a decimal number"),
            ("quote-generation-socket.type=vsock,quote-generation-socket.cid=2,quote-generation-socket.port=4294967296", "port '4294967296' does not fit 32 bits"),
            ("quote-generation-socket.path=/run/qgs", "has no 'type'"),
            ("quote-generation-socket.type=unix", "a unix address needs 'path'"),
            ("quote-generation-socket.type=unix,quote-generation-socket.path=/x,quote-generation-socket.tight=on", "'tight' applies only to abstract"),
            ("quote-generation-socket=/run/qgs", "a socket address has members"),
        ];
        for (line, expected) in cases {
            let err = TdxKvmOptions::parse(line).unwrap_err();
            assert!(matches!(err, TdxOptionsError::Socket(_)), "{line}: {err:?}");
            let msg = err.to_string();
            assert!(msg.starts_with("quote-generation-socket: ") && msg.contains(expected), "{line}: {msg}");
        }
        let err = TdxKvmOptions::parse("quote-generation-socket.cidd=2").unwrap_err();
        assert_eq!(err, TdxOptionsError::Unknown("quote-generation-socket.cidd".into()));
    }

    #[test]
    fn unknown_missing_and_repeated_options_are_named() {
        let err = TdxKvmOptions::parse("sept-ve-disable=on,debug=on").unwrap_err();
        assert_eq!(err, TdxOptionsError::Unknown("debug".into()));
        assert!(err.to_string().contains("known: attributes, sept-ve-disable, mrconfigid"));
        assert_eq!(TdxKvmOptions::parse("mrowner").unwrap_err(), TdxOptionsError::MissingValue("mrowner".into()));
        assert_eq!(
            TdxKvmOptions::parse("attributes=1,attributes=2").unwrap_err(),
            TdxOptionsError::Duplicate("attributes".into())
        );
    }
}
