//! The options of a real SNP launch, with the names, value formats and defaults of
//! QEMU's `sev-snp-guest` object (qapi/qom.json `SevSnpGuestProperties` and
//! `SevCommonProperties`; target/i386/sev.c), so that a QEMU command line's
//! `-object sev-snp-guest,...` can be given to cvmm as it is.
//!
//! | option | value | default |
//! |---|---|---|
//! | `policy` | number (decimal, `0x` hex or `0` octal, as QEMU's `uint64`) | 0x30000 |
//! | `guest-visible-workarounds` | base64 of exactly 16 bytes | all zero |
//! | `id-block` | base64 of exactly 96 bytes | none |
//! | `id-auth` | base64 of at most 4096 bytes (zero-padded to 4096) | none |
//! | `author-key-enabled` | `on`/`off` (also `yes`/`no`, `true`/`false`, `y`/`n`) | off |
//! | `host-data` | base64 of exactly 32 bytes | all zero |
//! | `vcek-disabled` | boolean | off |
//! | `kernel-hashes` | boolean | off |
//! | `sev-device` | path | /dev/sev |
//! | `cbitpos`, `reduced-phys-bits` | number, recorded only (KVM's SNP launch takes neither) | none |
//! | `id` | ignored (QEMU's object id) | — |
//!
//! Beyond QEMU, cvmm refuses an `id-block` without `id-auth` (the kernel would read the
//! missing structure from address 0), an `id-auth` without `id-block` (the firmware
//! would ignore it), `author-key-enabled` without `id-auth`, an empty `id-auth`, and an
//! option given twice. The policy is kept as a raw number here; its bits are checked by
//! `crate::snp::policy` and against the host by `super::probe::SnpHost::check_policy`.

use std::path::PathBuf;

use base64::alphabet::STANDARD;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;
use thiserror::Error;

use super::probe::DEFAULT_SEV_DEVICE;

/// QEMU's `DEFAULT_SEV_SNP_POLICY`: SMT allowed (bit 16) and the reserved bit 17, which
/// must be 1.
pub const DEFAULT_POLICY: u64 = 0x30000;

/// Size of the ID block (`KVM_SEV_SNP_ID_BLOCK_SIZE`).
pub const ID_BLOCK_SIZE: usize = 96;
/// Size of the ID authentication information structure (`KVM_SEV_SNP_ID_AUTH_SIZE`).
pub const ID_AUTH_SIZE: usize = 4096;

/// The options QEMU's `sev-snp-guest` has and cvmm knows.
const KNOWN: &str = "policy, guest-visible-workarounds, id-block, id-auth, author-key-enabled, host-data, \
                     vcek-disabled, kernel-hashes, sev-device, cbitpos, reduced-phys-bits, id";

/// Errors in SNP options, each naming the option.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum OptionsError {
    /// An option cvmm does not know.
    #[error("unknown sev-snp-guest option '{0}' (known: {KNOWN})")]
    Unknown(String),
    /// `name` without `=value`.
    #[error("sev-snp-guest option '{0}' has no value (write {0}=...)")]
    MissingValue(String),
    /// An option given twice.
    #[error("sev-snp-guest option '{0}' is given twice")]
    Duplicate(String),
    /// A value that is not a number.
    #[error("{option}: '{value}' is not a number (decimal, 0x hex or 0 octal)")]
    Number {
        /// The option.
        option: &'static str,
        /// The value.
        value: String,
    },
    /// A value that is not a boolean.
    #[error("{option}: '{value}' is not 'on' or 'off'")]
    Bool {
        /// The option.
        option: &'static str,
        /// The value.
        value: String,
    },
    /// A value that is not base64.
    #[error("{option}: not valid base64: {message}")]
    Base64 {
        /// The option.
        option: &'static str,
        /// The decoder's message.
        message: String,
    },
    /// Decoded bytes of the wrong length.
    #[error("{option}: decodes to {got} bytes, must be {expected}")]
    Length {
        /// The option.
        option: &'static str,
        /// What is expected ("16", "at most 4096", ...).
        expected: &'static str,
        /// What was given.
        got: usize,
    },
    /// Options that only make sense together.
    #[error("{0}")]
    Combination(&'static str),
}

/// The options of a real SNP launch (see the module documentation for their formats).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnpKvmOptions {
    /// The guest policy for SNP_LAUNCH_START, raw.
    pub policy: u64,
    /// The guest OS-visible workarounds for SNP_LAUNCH_START (`gosvw`).
    pub guest_visible_workarounds: [u8; 16],
    /// The ID block for SNP_LAUNCH_FINISH.
    pub id_block: Option<Box<[u8; ID_BLOCK_SIZE]>>,
    /// The ID authentication information structure, zero-padded to 4096 bytes.
    pub id_auth: Option<Box<[u8; ID_AUTH_SIZE]>>,
    /// Whether `id_auth` holds an author key (`auth_key_en`).
    pub author_key_enabled: bool,
    /// The host data put in attestation reports.
    pub host_data: [u8; 32],
    /// Whether the guest may not use the VCEK (only a VLEK).
    pub vcek_disabled: bool,
    /// Whether the firmware's SNP_KERNEL_HASHES page gets the kernel, initrd and command
    /// line hashes (a measured direct boot).
    pub kernel_hashes: bool,
    /// The SEV firmware device.
    pub sev_device: PathBuf,
    /// QEMU's `cbitpos`, if given (recorded, not used).
    pub cbitpos: Option<u32>,
    /// QEMU's `reduced-phys-bits`, if given (recorded, not used).
    pub reduced_phys_bits: Option<u32>,
}

impl Default for SnpKvmOptions {
    fn default() -> Self {
        Self {
            policy: DEFAULT_POLICY,
            guest_visible_workarounds: [0; 16],
            id_block: None,
            id_auth: None,
            author_key_enabled: false,
            host_data: [0; 32],
            vcek_disabled: false,
            kernel_hashes: false,
            sev_device: PathBuf::from(DEFAULT_SEV_DEVICE),
            cbitpos: None,
            reduced_phys_bits: None,
        }
    }
}

/// QEMU's `uint64` parsing (`qemu_strtou64` with base 0): `0x`/`0X` hex, a leading `0`
/// octal, decimal otherwise.
pub(crate) fn parse_number(option: &'static str, value: &str) -> Result<u64, OptionsError> {
    let err = || OptionsError::Number { option, value: value.to_owned() };
    let (digits, radix) = if let Some(hex) = value.strip_prefix("0x").or_else(|| value.strip_prefix("0X")) {
        (hex, 16)
    } else if value.len() > 1 && value.starts_with('0') {
        (&value[1..], 8)
    } else {
        (value, 10)
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return Err(err());
    }
    u64::from_str_radix(digits, radix).map_err(|_| err())
}

/// QEMU's boolean parsing (`qapi_bool_parse`).
pub(crate) fn parse_bool(option: &'static str, value: &str) -> Result<bool, OptionsError> {
    match value {
        "on" | "yes" | "true" | "y" => Ok(true),
        "off" | "no" | "false" | "n" => Ok(false),
        _ => Err(OptionsError::Bool { option, value: value.to_owned() }),
    }
}

/// Standard base64 with padding, as QEMU's `qbase64_decode` (glib) takes it: unused
/// trailing bits are allowed.
pub(crate) fn decode_base64(option: &'static str, value: &str) -> Result<Vec<u8>, OptionsError> {
    const ENGINE: GeneralPurpose =
        GeneralPurpose::new(&STANDARD, GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true));
    ENGINE.decode(value).map_err(|e| OptionsError::Base64 { option, message: e.to_string() })
}

pub(crate) fn decode_exact<const N: usize>(
    option: &'static str,
    value: &str,
    expected: &'static str,
) -> Result<[u8; N], OptionsError> {
    let bytes = decode_base64(option, value)?;
    <[u8; N]>::try_from(bytes.as_slice()).map_err(|_| OptionsError::Length { option, expected, got: bytes.len() })
}

impl SnpKvmOptions {
    /// Parses `key=value` pairs separated by commas, as in QEMU's
    /// `-object sev-snp-guest,id=sev0,policy=0x30000,...`; a leading `sev-snp-guest` (or
    /// `qom-type=sev-snp-guest`) is accepted. Unset options keep their defaults, and the
    /// combination rules are checked at the end.
    pub fn parse(s: &str) -> Result<Self, OptionsError> {
        let mut opts = Self::default();
        let mut seen: Vec<String> = Vec::new();
        for (i, item) in s.split(',').enumerate() {
            if item.is_empty() || (i == 0 && item == "sev-snp-guest") {
                continue;
            }
            let Some((key, value)) = item.split_once('=') else {
                return Err(OptionsError::MissingValue(item.to_owned()));
            };
            if seen.iter().any(|k| k == key) {
                return Err(OptionsError::Duplicate(key.to_owned()));
            }
            seen.push(key.to_owned());
            opts.set(key, value)?;
        }
        opts.check()?;
        Ok(opts)
    }

    /// Sets one option from its QEMU name and value text.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), OptionsError> {
        match key {
            "policy" => self.policy = parse_number("policy", value)?,
            "guest-visible-workarounds" => {
                self.guest_visible_workarounds = decode_exact("guest-visible-workarounds", value, "16")?;
            }
            "id-block" => self.id_block = Some(Box::new(decode_exact("id-block", value, "96")?)),
            "id-auth" => {
                let bytes = decode_base64("id-auth", value)?;
                if bytes.is_empty() || bytes.len() > ID_AUTH_SIZE {
                    return Err(OptionsError::Length { option: "id-auth", expected: "1 to 4096", got: bytes.len() });
                }
                let mut auth = Box::new([0u8; ID_AUTH_SIZE]);
                auth[..bytes.len()].copy_from_slice(&bytes);
                self.id_auth = Some(auth);
            }
            "author-key-enabled" => self.author_key_enabled = parse_bool("author-key-enabled", value)?,
            "host-data" => self.host_data = decode_exact("host-data", value, "32")?,
            "vcek-disabled" => self.vcek_disabled = parse_bool("vcek-disabled", value)?,
            "kernel-hashes" => self.kernel_hashes = parse_bool("kernel-hashes", value)?,
            "sev-device" => self.sev_device = PathBuf::from(value),
            "cbitpos" => self.cbitpos = Some(small_number("cbitpos", value)?),
            "reduced-phys-bits" => self.reduced_phys_bits = Some(small_number("reduced-phys-bits", value)?),
            "id" | "qom-type" => {}
            _ => return Err(OptionsError::Unknown(key.to_owned())),
        }
        Ok(())
    }

    /// Checks the options that only make sense together.
    pub fn check(&self) -> Result<(), OptionsError> {
        match (&self.id_block, &self.id_auth) {
            (Some(_), None) => {
                return Err(OptionsError::Combination(
                    "id-block needs id-auth: SNP_LAUNCH_FINISH reads both when an ID block is given",
                ))
            }
            (None, Some(_)) => {
                return Err(OptionsError::Combination(
                    "id-auth needs id-block: without an ID block the firmware ignores it",
                ))
            }
            _ => {}
        }
        if self.author_key_enabled && self.id_auth.is_none() {
            return Err(OptionsError::Combination("author-key-enabled needs id-auth (which holds the author key)"));
        }
        Ok(())
    }
}

fn small_number(option: &'static str, value: &str) -> Result<u32, OptionsError> {
    u32::try_from(parse_number(option, value)?).map_err(|_| OptionsError::Number { option, value: value.to_owned() })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Base64 written out by hand for the test vectors (RFC 4648 alphabet).
    const SIXTEEN_ONES: &str = "AQEBAQEBAQEBAQEBAQEBAQ=="; // 16 x 0x01
    const FIFTEEN_ZEROS: &str = "AAAAAAAAAAAAAAAAAAAA"; // 15 x 0x00

    fn b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    #[test]
    fn defaults_are_qemus() {
        let o = SnpKvmOptions::parse("").unwrap();

        assert_eq!(o.policy, 0x30000);
        assert_eq!((o.guest_visible_workarounds, o.host_data), ([0; 16], [0; 32]));
        assert!(o.id_block.is_none() && o.id_auth.is_none());
        assert!(!o.author_key_enabled && !o.vcek_disabled && !o.kernel_hashes);
        assert_eq!(o.sev_device, PathBuf::from("/dev/sev"));
    }

    #[test]
    fn a_qemu_object_line_parses() {
        let id_block = [7u8; 96];
        let id_auth = [9u8; 4096];
        let line = format!(
            "sev-snp-guest,id=sev0,cbitpos=51,reduced-phys-bits=1,policy=0x30000,guest-visible-workarounds={SIXTEEN_ONES},\
             id-block={},id-auth={},author-key-enabled=on,host-data={},vcek-disabled=true,kernel-hashes=on",
            b64(&id_block),
            b64(&id_auth),
            b64(&[0x42; 32])
        );

        let o = SnpKvmOptions::parse(&line).unwrap();

        assert_eq!(o.guest_visible_workarounds, [1; 16]);
        assert_eq!(o.id_block.as_deref(), Some(&id_block));
        assert_eq!(o.id_auth.as_deref(), Some(&id_auth));
        assert_eq!(o.host_data, [0x42; 32]);
        assert!(o.author_key_enabled && o.vcek_disabled && o.kernel_hashes);
        assert_eq!((o.cbitpos, o.reduced_phys_bits), (Some(51), Some(1)));
    }

    #[test]
    fn policy_numbers_are_decimal_hex_or_octal() {
        for (text, value) in [("196608", 0x30000), ("0x30000", 0x30000), ("0X1", 1), ("0600000", 0x30000), ("0", 0)] {
            assert_eq!(SnpKvmOptions::parse(&format!("policy={text}")).unwrap().policy, value, "{text}");
        }
        for bad in ["", "0x", "-1", "0x3g", "09", "1e5", "18446744073709551616"] {
            let err = SnpKvmOptions::parse(&format!("policy={bad}")).unwrap_err();
            assert_eq!(err, OptionsError::Number { option: "policy", value: bad.into() });
            assert!(err.to_string().starts_with("policy: "), "{err}");
        }
    }

    #[test]
    fn booleans_take_qemus_words() {
        for (text, value) in [("on", true), ("yes", true), ("y", true), ("off", false), ("no", false), ("false", false)]
        {
            assert_eq!(SnpKvmOptions::parse(&format!("kernel-hashes={text}")).unwrap().kernel_hashes, value);
        }
        let err = SnpKvmOptions::parse("kernel-hashes=1").unwrap_err();
        assert_eq!(err.to_string(), "kernel-hashes: '1' is not 'on' or 'off'");
    }

    #[test]
    fn wrong_lengths_are_refused_with_the_option_name() {
        let err = SnpKvmOptions::parse(&format!("guest-visible-workarounds={FIFTEEN_ZEROS}")).unwrap_err();
        assert_eq!(err, OptionsError::Length { option: "guest-visible-workarounds", expected: "16", got: 15 });
        assert_eq!(err.to_string(), "guest-visible-workarounds: decodes to 15 bytes, must be 16");

        let err = SnpKvmOptions::parse(&format!("host-data={}", b64(&[0; 33]))).unwrap_err();
        assert_eq!(err, OptionsError::Length { option: "host-data", expected: "32", got: 33 });
        let err = SnpKvmOptions::parse(&format!("id-block={}", b64(&[0; 95]))).unwrap_err();
        assert_eq!(err, OptionsError::Length { option: "id-block", expected: "96", got: 95 });
        let err = SnpKvmOptions::parse(&format!("id-auth={}", b64(&[0; 4097]))).unwrap_err();
        assert_eq!(err, OptionsError::Length { option: "id-auth", expected: "1 to 4096", got: 4097 });
    }

    #[test]
    fn bad_base64_is_refused_with_the_option_name() {
        for bad in ["AQEB*QEB", "AQE", "A===", "AQEBAQEBAQEBAQEBAQEBAQ"] {
            let err = SnpKvmOptions::parse(&format!("host-data={bad}")).unwrap_err();
            assert!(matches!(err, OptionsError::Base64 { option: "host-data", .. }), "{bad}: {err:?}");
            assert!(err.to_string().starts_with("host-data: not valid base64"), "{err}");
        }
    }

    #[test]
    fn unused_trailing_bits_are_allowed_as_glib_does() {
        // "AB==" is the byte 0x00 with its 4 unused bits not zero: glib (and so QEMU)
        // accepts it, a strict decoder would not.
        let mut opts = SnpKvmOptions::default();

        opts.set("id-auth", "AB==").unwrap();

        assert_eq!(opts.id_auth.unwrap()[..2], [0, 0]);
    }

    #[test]
    fn a_short_id_auth_is_zero_padded() {
        let mut o = SnpKvmOptions::default();

        o.set("id-auth", &b64(&[5; 100])).unwrap();

        let auth = o.id_auth.unwrap();
        assert_eq!((auth[99], auth[100], auth.len()), (5, 0, 4096));
    }

    #[test]
    fn unknown_missing_and_repeated_options_are_named() {
        let err = SnpKvmOptions::parse("policy=1,secure-tsc=on").unwrap_err();
        assert_eq!(err, OptionsError::Unknown("secure-tsc".into()));
        assert!(err.to_string().contains("known: policy, guest-visible-workarounds"));
        assert_eq!(SnpKvmOptions::parse("policy").unwrap_err(), OptionsError::MissingValue("policy".into()));
        assert_eq!(SnpKvmOptions::parse("policy=1,policy=2").unwrap_err(), OptionsError::Duplicate("policy".into()));
        assert!(matches!(
            SnpKvmOptions::parse("cbitpos=0x100000000"),
            Err(OptionsError::Number { option: "cbitpos", .. })
        ));
    }

    #[test]
    fn id_block_and_id_auth_go_together() {
        let block = format!("id-block={}", b64(&[1; 96]));
        let auth = format!("id-auth={}", b64(&[1; 4096]));

        assert!(
            matches!(SnpKvmOptions::parse(&block), Err(OptionsError::Combination(m)) if m.starts_with("id-block needs id-auth"))
        );
        assert!(
            matches!(SnpKvmOptions::parse(&auth), Err(OptionsError::Combination(m)) if m.starts_with("id-auth needs id-block"))
        );
        assert!(matches!(
            SnpKvmOptions::parse("author-key-enabled=on"),
            Err(OptionsError::Combination(m)) if m.starts_with("author-key-enabled needs id-auth")
        ));
        assert!(SnpKvmOptions::parse(&format!("{block},{auth},author-key-enabled=on")).is_ok());
    }
}
