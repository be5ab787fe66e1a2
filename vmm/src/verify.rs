//! `cvmm verify`: reading evidence, certificates, collateral and a policy file from
//! disk, running [`launch::verify`], and printing the checks (docs/verify.md).
//!
//! Policy file (JSON; every field optional, unknown fields rejected; flags given on
//! the command line override it):
//!
//! ```json
//! {
//!   "measurement": "<hex, 48 bytes>",      // SNP launch digest or TDX MRTD
//!   "report_data": "<hex, up to 64 bytes>", // zero padded to 64
//!   "allow_debug": false,
//!   "host_data": "<hex or base64, 32 bytes>",   // SNP
//!   "policy": "0x30000",                        // SNP, exact
//!   "min_tcb": "bl=3,tee=0,snp=8,ucode=115",    // SNP, or "0x7308000000000003"
//!   "vmpl": 0,                                  // SNP
//!   "rtmr0": "<hex>", "rtmr1": "...", "rtmr2": "...", "rtmr3": "...",  // TDX
//!   "mr_config_id": "<hex>", "mr_owner": "<hex>", "mr_owner_config": "<hex>",  // TDX
//!   "min_tee_tcb_svn": "<hex, 16 bytes>",       // TDX
//!   "accepted_tcb_status": ["SWHardeningNeeded"] // TDX, besides UpToDate
//! }
//! ```

use std::path::{Path, PathBuf};

use base64::Engine;
use launch::verify::snp::{MinTcb, Product, SnpCerts, SnpVerifyOptions, TrustedRoot};
use launch::verify::tdx::{Collateral, TdxVerifyOptions};
use launch::verify::{parse_hex, parse_hex_padded, Evidence, Expectations, Verdict, VerifyError};
use serde::Deserialize;
use thiserror::Error;

/// Errors from `cvmm verify` before any check is made (exit status 2).
#[derive(Debug, Error)]
pub enum VerifyCliError {
    /// A file could not be read.
    #[error("cannot read {what} {path}: {source}")]
    Read {
        /// Which input.
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Malformed evidence, certificate, collateral or expectation.
    #[error("{what}: {source}")]
    Verify {
        /// Which input.
        what: String,
        /// The error.
        #[source]
        source: VerifyError,
    },
    /// The policy file is not valid JSON for its schema.
    #[error("policy file {path}: {source}")]
    Policy {
        /// The file.
        path: PathBuf,
        /// serde's error (names the field and position).
        #[source]
        source: serde_json::Error,
    },
    /// Options that do not go together.
    #[error("{0}")]
    Usage(String),
}

/// The policy file's fields (see the module documentation).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    /// Launch digest (SNP) or MRTD (TDX), hex.
    pub measurement: Option<String>,
    /// REPORT_DATA, hex of up to 64 bytes.
    pub report_data: Option<String>,
    /// Accept a debuggable guest.
    pub allow_debug: Option<bool>,
    /// SNP HOST_DATA, hex or base64 of 32 bytes.
    pub host_data: Option<String>,
    /// SNP guest policy, exact (`0x...` or decimal).
    pub policy: Option<String>,
    /// SNP minimum REPORTED_TCB.
    pub min_tcb: Option<String>,
    /// SNP VMPL.
    pub vmpl: Option<u32>,
    /// TDX RTMR0.
    pub rtmr0: Option<String>,
    /// TDX RTMR1.
    pub rtmr1: Option<String>,
    /// TDX RTMR2.
    pub rtmr2: Option<String>,
    /// TDX RTMR3.
    pub rtmr3: Option<String>,
    /// TDX MRCONFIGID.
    pub mr_config_id: Option<String>,
    /// TDX MROWNER.
    pub mr_owner: Option<String>,
    /// TDX MROWNERCONFIG.
    pub mr_owner_config: Option<String>,
    /// TDX minimum TEE_TCB_SVN.
    pub min_tee_tcb_svn: Option<String>,
    /// TDX TCB statuses accepted besides UpToDate.
    pub accepted_tcb_status: Option<Vec<String>>,
}

impl PolicyFile {
    /// Reads a policy file.
    pub fn read(path: &Path) -> Result<Self, VerifyCliError> {
        let text = read_file("policy file", path)?;
        serde_json::from_slice(&text).map_err(|source| VerifyCliError::Policy { path: path.into(), source })
    }

    /// Fields set in `other` replace this one's.
    pub fn overridden_by(self, other: PolicyFile) -> PolicyFile {
        PolicyFile {
            measurement: other.measurement.or(self.measurement),
            report_data: other.report_data.or(self.report_data),
            allow_debug: other.allow_debug.or(self.allow_debug),
            host_data: other.host_data.or(self.host_data),
            policy: other.policy.or(self.policy),
            min_tcb: other.min_tcb.or(self.min_tcb),
            vmpl: other.vmpl.or(self.vmpl),
            rtmr0: other.rtmr0.or(self.rtmr0),
            rtmr1: other.rtmr1.or(self.rtmr1),
            rtmr2: other.rtmr2.or(self.rtmr2),
            rtmr3: other.rtmr3.or(self.rtmr3),
            mr_config_id: other.mr_config_id.or(self.mr_config_id),
            mr_owner: other.mr_owner.or(self.mr_owner),
            mr_owner_config: other.mr_owner_config.or(self.mr_owner_config),
            min_tee_tcb_svn: other.min_tee_tcb_svn.or(self.min_tee_tcb_svn),
            accepted_tcb_status: other.accepted_tcb_status.or(self.accepted_tcb_status),
        }
    }

    /// The typed expectations.
    pub fn expectations(&self) -> Result<Expectations, VerifyCliError> {
        let bad = |what: &'static str| verify_err(format!("expectation {what}"));
        let h48 = |what: &'static str, v: &Option<String>| v.as_deref().map(|s| parse_hex::<48>(what, s)).transpose();
        let policy = self
            .policy
            .as_deref()
            .map(|s| {
                parse_u64(s)
                    .map_err(|reason| VerifyError::Expectation { what: "policy", reason })
                    .map_err(bad("policy"))
            })
            .transpose()?;
        let min_tcb = self
            .min_tcb
            .as_deref()
            .map(|s| MinTcb::parse(s).map_err(|e| bad("min_tcb")(VerifyError::Snp(e))))
            .transpose()?;
        Ok(Expectations {
            measurement: h48("measurement", &self.measurement).map_err(bad("measurement"))?,
            host_data: self.host_data.as_deref().map(host_data).transpose().map_err(bad("host_data"))?,
            report_data: self
                .report_data
                .as_deref()
                .map(|s| parse_hex_padded::<64>("report_data", s))
                .transpose()
                .map_err(bad("report_data"))?,
            allow_debug: self.allow_debug.unwrap_or(false),
            snp_policy: policy,
            snp_min_tcb: min_tcb,
            snp_vmpl: self.vmpl,
            rtmrs: [
                h48("rtmr0", &self.rtmr0).map_err(bad("rtmr0"))?,
                h48("rtmr1", &self.rtmr1).map_err(bad("rtmr1"))?,
                h48("rtmr2", &self.rtmr2).map_err(bad("rtmr2"))?,
                h48("rtmr3", &self.rtmr3).map_err(bad("rtmr3"))?,
            ],
            mr_config_id: h48("mr_config_id", &self.mr_config_id).map_err(bad("mr_config_id"))?,
            mr_owner: h48("mr_owner", &self.mr_owner).map_err(bad("mr_owner"))?,
            mr_owner_config: h48("mr_owner_config", &self.mr_owner_config).map_err(bad("mr_owner_config"))?,
            tdx_min_tee_tcb_svn: self
                .min_tee_tcb_svn
                .as_deref()
                .map(|s| parse_hex::<16>("min_tee_tcb_svn", s))
                .transpose()
                .map_err(bad("min_tee_tcb_svn"))?,
            tdx_accepted_tcb_status: self.accepted_tcb_status.clone().unwrap_or_default(),
        })
    }
}

/// HOST_DATA as 64 hex digits or the base64 QEMU's `host-data` option takes.
fn host_data(s: &str) -> Result<[u8; 32], VerifyError> {
    if let Ok(h) = parse_hex::<32>("host_data", s) {
        return Ok(h);
    }
    let bytes = base64::engine::general_purpose::STANDARD.decode(s.trim()).map_err(|_| VerifyError::Expectation {
        what: "host_data",
        reason: "neither 32 bytes of hex nor base64".into(),
    })?;
    bytes.as_slice().try_into().map_err(|_| VerifyError::Expectation {
        what: "host_data",
        reason: format!("base64 of {} bytes, not 32", bytes.len()),
    })
}

/// `0x`-prefixed hex or decimal.
pub fn parse_u64(s: &str) -> Result<u64, String> {
    let t = s.trim();
    match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16),
        None => t.parse(),
    }
    .map_err(|_| format!("'{s}' is not a number"))
}

fn read_file(what: &'static str, path: &Path) -> Result<Vec<u8>, VerifyCliError> {
    std::fs::read(path).map_err(|source| VerifyCliError::Read { what, path: path.into(), source })
}

/// Evidence file contents: binary, or the same as hex text (whitespace ignored), as
/// some tools write reports.
pub fn read_evidence(path: &Path) -> Result<Evidence, VerifyCliError> {
    let bytes = read_file("evidence", path)?;
    let text_hex = !bytes.is_empty() && bytes.iter().all(|b| b.is_ascii_hexdigit() || b.is_ascii_whitespace());
    let bytes = match text_hex {
        true => {
            let clean: Vec<u8> = bytes.iter().copied().filter(|b| !b.is_ascii_whitespace()).collect();
            hex::decode(clean).unwrap_or(bytes)
        }
        false => bytes,
    };
    Evidence::parse(&bytes).map_err(|source| VerifyCliError::Verify { what: path.display().to_string(), source })
}

/// Where the certificates, roots and collateral come from.
#[derive(Debug, Clone, Default)]
pub struct VerifyInputs {
    /// A directory of AMD certificates (ark/ask/asvk/vcek/vlek/cert_chain files).
    pub certs_dir: Option<PathBuf>,
    /// Certificate files (DER or PEM), placed by their subject names.
    pub cert_files: Vec<PathBuf>,
    /// An extended guest request's certificate table.
    pub cert_table: Option<PathBuf>,
    /// The root to trust (AMD ARK or Intel root CA), PEM or DER.
    pub root: Option<PathBuf>,
    /// SNP: AMD's product whose built-in ARK to trust.
    pub product: Option<String>,
    /// TDX: the collateral JSON.
    pub collateral: Option<PathBuf>,
    /// The time to check validity at (seconds since 1970); `None`: now.
    pub now: Option<u64>,
}

fn verify_err(what: String) -> impl FnOnce(VerifyError) -> VerifyCliError {
    move |source| VerifyCliError::Verify { what, source }
}

/// Verifies `evidence` as the inputs say and checks `exp`.
pub fn verify(evidence: &Evidence, inputs: &VerifyInputs, exp: &Expectations) -> Result<Verdict, VerifyCliError> {
    let now = inputs.now.unwrap_or_else(launch::verify::now_secs);
    match evidence {
        Evidence::Snp(report) => {
            if inputs.collateral.is_some() {
                return Err(VerifyCliError::Usage(
                    "--collateral is for TDX quotes; the evidence is an SNP report".into(),
                ));
            }
            let mut certs = SnpCerts::default();
            let snp = |what: &Path| verify_err(what.display().to_string());
            if let Some(dir) = &inputs.certs_dir {
                certs = SnpCerts::from_dir(dir).map_err(|e| snp(dir)(e.into()))?;
            }
            if let Some(table) = &inputs.cert_table {
                let t = SnpCerts::from_cert_table(&read_file("certificate table", table)?)
                    .map_err(|e| snp(table)(e.into()))?;
                for c in [t.ark, t.ask, t.vek].into_iter().flatten() {
                    certs.add(c, &table.display().to_string()).map_err(|e| snp(table)(e.into()))?;
                }
            }
            for f in &inputs.cert_files {
                certs.add_file(f).map_err(|e| snp(f)(e.into()))?;
            }
            let root = match (&inputs.root, &inputs.product) {
                (Some(_), Some(_)) => return Err(VerifyCliError::Usage("give --root or --product, not both".into())),
                (Some(path), None) => {
                    let bytes = read_file("root certificate", path)?;
                    let mut c = launch::verify::snp::certs_from_bytes(&bytes, &path.display().to_string())
                        .map_err(|e| snp(path)(e.into()))?;
                    if c.len() != 1 {
                        return Err(VerifyCliError::Usage(format!(
                            "{}: a root file holds one certificate, not {}",
                            path.display(),
                            c.len()
                        )));
                    }
                    TrustedRoot::Given(Box::new(c.remove(0)))
                }
                (None, Some(p)) => {
                    TrustedRoot::Product(Product::parse(p).map_err(|e| verify_err("--product".into())(e.into()))?)
                }
                (None, None) => TrustedRoot::Auto,
            };
            Ok(launch::verify::snp::verify(report, &SnpVerifyOptions { certs, root, now }, exp))
        }
        Evidence::Tdx(quote) => {
            if inputs.certs_dir.is_some() || !inputs.cert_files.is_empty() || inputs.cert_table.is_some() {
                return Err(VerifyCliError::Usage(
                    "--certs, --cert and --cert-table are for SNP reports; a TDX quote carries its PCK chain".into(),
                ));
            }
            if inputs.product.is_some() {
                return Err(VerifyCliError::Usage("--product is for SNP reports".into()));
            }
            let collateral = match &inputs.collateral {
                Some(p) => Some(
                    Collateral::from_json(&read_file("collateral", p)?)
                        .map_err(|e| verify_err(p.display().to_string())(e.into()))?,
                ),
                None => None,
            };
            let root = match &inputs.root {
                Some(p) => Some(
                    launch::verify::tdx::root_from_bytes(&read_file("root certificate", p)?)
                        .map_err(|e| verify_err(p.display().to_string())(e.into()))?,
                ),
                None => None,
            };
            Ok(launch::verify::tdx::verify(quote, &TdxVerifyOptions { collateral, root, now }, exp))
        }
    }
}

/// The verdict as text: one line per check, then a summary line.
pub fn verdict_text(evidence: &Evidence, verdict: &Verdict) -> String {
    let mut out = String::new();
    for c in &verdict.checks {
        out.push_str(&format!("{c}\n"));
    }
    let n = verdict.checks.len();
    let failed = verdict.failed();
    if verdict.passed() {
        out.push_str(&format!("verified: all {n} checks passed ({} evidence)\n", evidence.tee()));
    } else {
        out.push_str(&format!("NOT verified: {} of {n} checks failed: {}\n", failed.len(), failed.join(", ")));
    }
    out
}

/// The verdict as JSON: `{"tee", "verified", "checks": [{"name", "passed", "detail"}]}`.
pub fn verdict_json(evidence: &Evidence, verdict: &Verdict) -> serde_json::Value {
    serde_json::json!({
        "tee": evidence.tee(),
        "verified": verdict.passed(),
        "checks": verdict.checks.iter().map(|c| serde_json::json!({
            "name": c.name, "passed": c.passed, "detail": c.detail,
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_file_fields_become_expectations() {
        let p: PolicyFile = serde_json::from_str(
            r#"{"measurement": "00", "allow_debug": true, "policy": "0x30000", "vmpl": 1,
                "min_tcb": "bl=1", "report_data": "0102", "accepted_tcb_status": ["OutOfDate"]}"#,
        )
        .unwrap();
        assert!(p.expectations().is_err(), "a 1-byte measurement");
        let p = PolicyFile { measurement: Some("ab".repeat(48)), ..p };
        let e = p.expectations().unwrap();
        assert_eq!(e.measurement, Some([0xab; 48]));
        assert!(e.allow_debug);
        assert_eq!((e.snp_policy, e.snp_vmpl), (Some(0x30000), Some(1)));
        assert_eq!(e.report_data.unwrap()[..3], [1, 2, 0]);
        assert_eq!(e.tdx_accepted_tcb_status, ["OutOfDate"]);
    }

    #[test]
    fn unknown_policy_fields_are_rejected() {
        assert!(serde_json::from_str::<PolicyFile>(r#"{"measurment": "00"}"#).is_err());
    }

    #[test]
    fn flags_override_the_policy_file() {
        let file = PolicyFile { measurement: Some("a".into()), vmpl: Some(1), ..Default::default() };
        let flags = PolicyFile { measurement: Some("b".into()), ..Default::default() };
        let merged = file.overridden_by(flags);
        assert_eq!((merged.measurement.as_deref(), merged.vmpl), (Some("b"), Some(1)));
    }

    #[test]
    fn host_data_is_hex_or_base64_of_32_bytes() {
        let b64 = "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=";
        let expected: Vec<u8> = (1..=32).collect();
        assert_eq!(host_data(b64).unwrap().to_vec(), expected);
        assert_eq!(host_data(&hex::encode(&expected)).unwrap().to_vec(), expected);
        assert!(host_data("AQID").is_err());
        assert!(host_data("not base64!").is_err());
    }
}
