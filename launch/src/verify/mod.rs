//! The relying party's side of attestation: evidence from a guest (an SEV-SNP
//! attestation report or a TDX DCAP quote) parsed into typed structures, checked for
//! being genuine (signatures and certificate chains up to the vendor's root), and
//! compared with what the relying party expects (measurement, host data, policy,
//! minimum TCB, report data, RTMRs, ...).
//!
//! - [`snp`]: SNP reports of versions 2 to 5 (parsed by the `sev` crate), the VCEK or
//!   VLEK chain up to AMD's ARK for the product (or a given root), TCB versus the
//!   certificate.
//! - [`tdx`]: TDX quotes of versions 4 and 5 with TD 1.0 and TD 1.5 bodies (parsed and
//!   verified by the `dcap-qvl` crate against collateral from a file).
//!
//! Every check yields one [`Check`] line, passed or failed with the reason; a
//! [`Verdict`] passes when all of its checks do. Malformed evidence is an error
//! ([`VerifyError`]), never a panic.
#![forbid(unsafe_code)]

pub mod snp;
pub mod tdx;

use thiserror::Error;

/// Errors from reading evidence (checks that fail are not errors: they are [`Check`]s).
#[derive(Debug, Error)]
pub enum VerifyError {
    /// The bytes are neither an SNP report nor a TDX quote.
    #[error(
        "{len} bytes are neither an SEV-SNP attestation report ({} bytes) nor a TDX quote (version 4 or 5, TEE type 0x81)",
        snp::REPORT_SIZE
    )]
    UnknownEvidence {
        /// Length of the input.
        len: usize,
    },
    /// A malformed SNP report.
    #[error(transparent)]
    Snp(#[from] snp::SnpError),
    /// A malformed TDX quote or collateral.
    #[error(transparent)]
    Tdx(#[from] tdx::TdxError),
    /// A malformed expectation (hex of the wrong length, unknown TCB component, ...).
    #[error("invalid expectation {what}: {reason}")]
    Expectation {
        /// Which expectation.
        what: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

/// Evidence from a guest.
#[derive(Debug, Clone)]
pub enum Evidence {
    /// An SEV-SNP attestation report.
    Snp(Box<snp::SnpReport>),
    /// A TDX quote.
    Tdx(Box<tdx::TdxQuote>),
}

impl Evidence {
    /// Tells an SNP report from a TDX quote and parses it. A TDX quote starts with a
    /// 16-bit version (4 or 5), the attestation key type 2 and the TEE type 0x81; an SNP
    /// report starts with a 32-bit version of 2 to 5, so the two cannot be confused.
    pub fn parse(bytes: &[u8]) -> Result<Self, VerifyError> {
        if tdx::looks_like_quote(bytes) {
            return Ok(Self::Tdx(Box::new(tdx::TdxQuote::parse(bytes)?)));
        }
        if bytes.len() == snp::REPORT_SIZE {
            return Ok(Self::Snp(Box::new(snp::SnpReport::parse(bytes)?)));
        }
        Err(VerifyError::UnknownEvidence { len: bytes.len() })
    }

    /// "snp" or "tdx".
    pub fn tee(&self) -> &'static str {
        match self {
            Self::Snp(_) => "snp",
            Self::Tdx(_) => "tdx",
        }
    }

    /// Every field, as JSON (byte strings as lowercase hex).
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Self::Snp(r) => r.to_json(),
            Self::Tdx(q) => q.to_json(),
        }
    }
}

/// The result of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// A short stable name ("snp.signature", "measurement", ...).
    pub name: String,
    /// Whether it passed.
    pub passed: bool,
    /// What was checked and found, or why it failed.
    pub detail: String,
}

impl Check {
    /// A passed check.
    pub fn pass(name: impl Into<String>, detail: impl Into<String>) -> Self {
        Self { name: name.into(), passed: true, detail: detail.into() }
    }

    /// A failed check.
    pub fn fail(name: impl Into<String>, detail: impl Into<String>) -> Self {
        Self { name: name.into(), passed: false, detail: detail.into() }
    }

    /// `pass` or `fail` by `ok`.
    pub fn new(name: impl Into<String>, ok: bool, detail: impl Into<String>) -> Self {
        Self { name: name.into(), passed: ok, detail: detail.into() }
    }
}

impl std::fmt::Display for Check {
    /// `PASS name: detail` or `FAIL name: detail`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let word = if self.passed { "PASS" } else { "FAIL" };
        write!(f, "{word} {}: {}", self.name, self.detail)
    }
}

/// Every check made on a piece of evidence.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verdict {
    /// The checks, in the order they were made.
    pub checks: Vec<Check>,
}

impl Verdict {
    /// True when there is at least one check and all passed.
    pub fn passed(&self) -> bool {
        !self.checks.is_empty() && self.checks.iter().all(|c| c.passed)
    }

    /// The check named `name`, if it was made.
    pub fn get(&self, name: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.name == name)
    }

    /// The names of the failed checks.
    pub fn failed(&self) -> Vec<&str> {
        self.checks.iter().filter(|c| !c.passed).map(|c| c.name.as_str()).collect()
    }

    fn push(&mut self, check: Check) {
        self.checks.push(check);
    }
}

/// What the relying party expects of the guest. Fields left `None` are not checked;
/// debugging is forbidden unless [`Self::allow_debug`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expectations {
    /// The launch measurement (SNP) or MRTD (TDX).
    pub measurement: Option<[u8; 48]>,
    /// SNP HOST_DATA.
    pub host_data: Option<[u8; 32]>,
    /// REPORT_DATA (a nonce, or a hash binding a key); shorter values given as hex
    /// are zero padded to 64 bytes ([`parse_hex_padded`]).
    pub report_data: Option<[u8; 64]>,
    /// Accept a guest that can be debugged (SNP policy DEBUG, TDX attribute DEBUG).
    pub allow_debug: bool,
    /// SNP: the exact guest policy.
    pub snp_policy: Option<u64>,
    /// SNP: the minimum REPORTED_TCB, component by component.
    pub snp_min_tcb: Option<snp::MinTcb>,
    /// SNP: the VMPL the report must be for.
    pub snp_vmpl: Option<u32>,
    /// TDX: RTMR0..RTMR3.
    pub rtmrs: [Option<[u8; 48]>; 4],
    /// TDX: MRCONFIGID.
    pub mr_config_id: Option<[u8; 48]>,
    /// TDX: MROWNER.
    pub mr_owner: Option<[u8; 48]>,
    /// TDX: MROWNERCONFIG.
    pub mr_owner_config: Option<[u8; 48]>,
    /// TDX: the minimum TEE_TCB_SVN, byte by byte.
    pub tdx_min_tee_tcb_svn: Option<[u8; 16]>,
    /// TDX: TCB statuses accepted besides "UpToDate" (e.g. "SWHardeningNeeded").
    pub tdx_accepted_tcb_status: Vec<String>,
}

impl Expectations {
    /// The expectations only an SNP report can meet, by name (to fail them on a quote).
    fn snp_only(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.host_data.is_some() {
            v.push("host_data");
        }
        if self.snp_policy.is_some() {
            v.push("policy");
        }
        if self.snp_min_tcb.is_some() {
            v.push("min_tcb");
        }
        if self.snp_vmpl.is_some() {
            v.push("vmpl");
        }
        v
    }

    /// The expectations only a TDX quote can meet, by name.
    fn tdx_only(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        for (i, name) in ["rtmr0", "rtmr1", "rtmr2", "rtmr3"].into_iter().enumerate() {
            if self.rtmrs[i].is_some() {
                v.push(name);
            }
        }
        for (set, name) in [
            (self.mr_config_id.is_some(), "mr_config_id"),
            (self.mr_owner.is_some(), "mr_owner"),
            (self.mr_owner_config.is_some(), "mr_owner_config"),
            (self.tdx_min_tee_tcb_svn.is_some(), "min_tee_tcb_svn"),
            (!self.tdx_accepted_tcb_status.is_empty(), "accepted_tcb_status"),
        ] {
            if set {
                v.push(name);
            }
        }
        v
    }
}

/// Parses hex (an optional `0x`, whitespace ignored) of exactly `N` bytes.
pub fn parse_hex<const N: usize>(what: &'static str, s: &str) -> Result<[u8; N], VerifyError> {
    let bytes = decode_hex(what, s)?;
    bytes
        .as_slice()
        .try_into()
        .map_err(|_| VerifyError::Expectation { what, reason: format!("{} bytes of hex, not {N}", bytes.len()) })
}

/// Parses hex of at most `N` bytes, zero padded at the end to `N` (a nonce shorter
/// than REPORT_DATA fills its first bytes).
pub fn parse_hex_padded<const N: usize>(what: &'static str, s: &str) -> Result<[u8; N], VerifyError> {
    let bytes = decode_hex(what, s)?;
    if bytes.len() > N {
        return Err(VerifyError::Expectation { what, reason: format!("{} bytes of hex, more than {N}", bytes.len()) });
    }
    let mut out = [0u8; N];
    out[..bytes.len()].copy_from_slice(&bytes);
    Ok(out)
}

fn decode_hex(what: &'static str, s: &str) -> Result<Vec<u8>, VerifyError> {
    let s = s.trim();
    let s = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")).unwrap_or(s);
    let clean: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    hex::decode(&clean).map_err(|e| VerifyError::Expectation { what, reason: format!("not hex: {e}") })
}

/// Compares an expected value with the one found: one check named `name`.
fn expect_eq(name: &str, expected: &[u8], found: &[u8]) -> Check {
    if expected == found {
        Check::pass(name, format!("{} as expected", hex::encode(found)))
    } else {
        Check::fail(name, format!("expected {}, found {}", hex::encode(expected), hex::encode(found)))
    }
}

/// Seconds since the Unix epoch from `YYYY-MM-DDTHH:MM:SSZ` (RFC 3339 in UTC, as
/// certificates and Intel's collateral write times) or a plain number of seconds.
pub fn parse_time(s: &str) -> Result<u64, VerifyError> {
    let bad = |reason: &str| VerifyError::Expectation { what: "time", reason: format!("'{s}': {reason}") };
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(secs);
    }
    let b = s.as_bytes();
    let shape_ok = b.len() == 20
        && b[4] == b'-'
        && b[7] == b'-'
        && (b[10] == b'T' || b[10] == b't')
        && b[13] == b':'
        && b[16] == b':'
        && (b[19] == b'Z' || b[19] == b'z');
    if !shape_ok {
        return Err(bad("not YYYY-MM-DDTHH:MM:SSZ nor seconds since 1970"));
    }
    let num = |r: std::ops::Range<usize>| s[r].parse::<u16>().map_err(|_| bad("not a number where one belongs"));
    let (y, mo, d, h, mi, sec) = (num(0..4)?, num(5..7)?, num(8..10)?, num(11..13)?, num(14..16)?, num(17..19)?);
    let to_u8 = |v: u16| u8::try_from(v).map_err(|_| bad("field out of range"));
    let dt = x509_cert::der::DateTime::new(y, to_u8(mo)?, to_u8(d)?, to_u8(h)?, to_u8(mi)?, to_u8(sec)?)
        .map_err(|e| bad(&e.to_string()))?;
    Ok(dt.unix_duration().as_secs())
}

/// Seconds since the Unix epoch now.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_of_the_right_length_parses_and_other_lengths_are_rejected() {
        assert_eq!(parse_hex::<2>("x", "0xABcd").unwrap(), [0xab, 0xcd]);
        assert_eq!(parse_hex::<2>("x", " ab cd\n").unwrap(), [0xab, 0xcd]);
        assert!(matches!(parse_hex::<2>("x", "abcdef"), Err(VerifyError::Expectation { what: "x", .. })));
        assert!(parse_hex::<2>("x", "zz00").is_err());
        assert!(parse_hex::<2>("x", "abc").is_err());
    }

    #[test]
    fn short_report_data_is_zero_padded_and_long_is_rejected() {
        let rd = parse_hex_padded::<64>("report_data", "0102030405").unwrap();
        assert_eq!(rd[..5], [1, 2, 3, 4, 5]);
        assert_eq!(rd[5..], [0; 59]);
        assert!(parse_hex_padded::<4>("report_data", "0102030405").is_err());
    }

    #[test]
    fn rfc3339_times_and_seconds_parse_and_others_are_rejected() {
        assert_eq!(parse_time("1970-01-01T00:00:00Z").unwrap(), 0);
        // 2025-06-20: 20259 days after 1970-01-01.
        assert_eq!(parse_time("2025-06-20T00:00:00Z").unwrap(), 20259 * 86400);
        assert_eq!(parse_time("2000-03-01T01:02:03Z").unwrap(), 951_872_523);
        assert_eq!(parse_time("1750377600").unwrap(), 1_750_377_600);
        for bad in ["2025-06-20", "2025-13-01T00:00:00Z", "2025-06-20T00:00:00+01:00", "yesterday", ""] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_verdict_passes_only_with_checks_that_all_pass() {
        assert!(!Verdict::default().passed());
        let mut v = Verdict { checks: vec![Check::pass("a", "ok")] };
        assert!(v.passed());
        v.push(Check::fail("b", "no"));
        assert!(!v.passed());
        assert_eq!(v.failed(), ["b"]);
        assert_eq!(v.checks[1].to_string(), "FAIL b: no");
        assert_eq!(v.checks[0].to_string(), "PASS a: ok");
    }

    #[test]
    fn bytes_that_are_neither_report_nor_quote_are_rejected() {
        assert!(matches!(Evidence::parse(&[0u8; 100]), Err(VerifyError::UnknownEvidence { len: 100 })));
        assert!(matches!(Evidence::parse(&[]), Err(VerifyError::UnknownEvidence { len: 0 })));
    }
}
