//! The launch log: a launch plan as it is measured, one JSON object per range, for
//! auditors who want to recompute a measurement themselves.

use launch::plan::{Contents, LaunchPlan, PageType, SnpPageType, TdxPageType, VcpuState};
use serde::Serialize;
use sha2::{Digest, Sha384};

/// One line of the launch log.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LogEntry {
    /// Position in the measured order.
    pub index: usize,
    /// Guest-physical address, as `0x...`.
    pub gpa: String,
    /// Length in bytes.
    pub len: u64,
    /// `snp:normal`, `snp:zero`, ..., `snp:vmsa`, `tdx:add+extend`, `tdx:add`, `tdx:aug`.
    #[serde(rename = "type")]
    pub kind: String,
    /// What the range is (firmware, a metadata section, a vCPU's VMSA...).
    pub what: String,
    /// SHA-384 of the range's contents; absent for all-zero ranges.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha384: Option<String>,
    /// `true` for ranges the plan holds as zeros.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub zero: bool,
}

/// The type name used in the log.
pub fn type_name(t: PageType) -> &'static str {
    match t {
        PageType::Snp(SnpPageType::Normal) => "snp:normal",
        PageType::Snp(SnpPageType::Vmsa) => "snp:vmsa",
        PageType::Snp(SnpPageType::Zero) => "snp:zero",
        PageType::Snp(SnpPageType::Unmeasured) => "snp:unmeasured",
        PageType::Snp(SnpPageType::Secrets) => "snp:secrets",
        PageType::Snp(SnpPageType::Cpuid) => "snp:cpuid",
        PageType::Tdx(TdxPageType::AddMeasured) => "tdx:add+extend",
        PageType::Tdx(TdxPageType::AddUnmeasured) => "tdx:add",
        PageType::Tdx(TdxPageType::Aug) => "tdx:aug",
    }
}

/// The log entries of `plan`'s ranges, then (for SNP) one `snp:vmsa` entry per vCPU
/// at the VMSA GPA with the SHA-384 of its page, as `vmsa_page` builds it.
pub fn log_entries(plan: &LaunchPlan, vmsa_page: impl Fn(&VcpuState) -> Option<(u64, Vec<u8>)>) -> Vec<LogEntry> {
    let mut entries: Vec<LogEntry> = plan
        .ranges
        .iter()
        .enumerate()
        .map(|(index, r)| {
            let (sha384, zero) = match &r.contents {
                Contents::Zero => (None, true),
                Contents::Bytes(b) => (Some(hex::encode(Sha384::digest(b))), false),
            };
            LogEntry {
                index,
                gpa: format!("{:#x}", r.gpa),
                len: r.len,
                kind: type_name(r.page_type).into(),
                what: r.what.clone(),
                sha384,
                zero,
            }
        })
        .collect();
    for (i, v) in plan.vcpus.iter().enumerate() {
        if let Some((gpa, page)) = vmsa_page(v) {
            entries.push(LogEntry {
                index: entries.len(),
                gpa: format!("{gpa:#x}"),
                len: page.len() as u64,
                kind: "snp:vmsa".into(),
                what: format!("vCPU {i} VMSA"),
                sha384: Some(hex::encode(Sha384::digest(&page))),
                zero: false,
            });
        }
    }
    entries
}

/// The log as JSON lines.
pub fn to_json_lines(entries: &[LogEntry]) -> String {
    entries.iter().map(|e| serde_json::to_string(e).expect("log entries serialize") + "\n").collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use launch::plan::PlanRange;

    #[test]
    fn zero_ranges_have_no_hash_and_byte_ranges_do() {
        let mut plan = LaunchPlan::default();
        plan.push(PlanRange {
            gpa: 0x1000,
            len: 0x1000,
            page_type: PageType::Tdx(TdxPageType::AddMeasured),
            contents: Contents::Bytes(vec![1u8; 0x1000].into()),
            what: "bfv".into(),
        })
        .unwrap();
        plan.push(PlanRange {
            gpa: 0x2000,
            len: 0x2000,
            page_type: PageType::Tdx(TdxPageType::Aug),
            contents: Contents::Zero,
            what: "tempmem".into(),
        })
        .unwrap();
        let log = to_json_lines(&log_entries(&plan, |_| None));
        let lines: Vec<&str> = log.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].contains(r#""type":"tdx:add+extend""#) && lines[0].contains(r#""sha384":""#), "{}", lines[0]);
        assert!(lines[1].contains(r#""zero":true"#) && !lines[1].contains("sha384"), "{}", lines[1]);
        assert!(lines[1].contains(r#""gpa":"0x2000""#));
    }
}
