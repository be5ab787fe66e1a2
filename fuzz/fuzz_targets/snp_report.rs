//! Fuzzes the relying party's SEV-SNP parsers (`launch::verify::snp`): the attestation
//! report (versions 2 to 5) with its JSON form and a verification without certificates,
//! the extended request's certificate table, certificate files (PEM or DER) and the
//! VCEK extensions of whatever certificate they hold.
#![no_main]

use launch::verify::snp::{certs_from_bytes, vek_info, SnpCerts, SnpReport, SnpVerifyOptions, REPORT_SIZE};
use launch::verify::Expectations;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Inputs of a report's size are reports; others are certificate material.
    if data.len() == REPORT_SIZE {
        if let Ok(report) = SnpReport::parse(data) {
            let _ = report.to_json();
            let exp =
                Expectations { snp_min_tcb: Some(launch::verify::snp::MinTcb::Raw(u64::MAX)), ..Default::default() };
            let verdict = launch::verify::snp::verify(&report, &SnpVerifyOptions::default(), &exp);
            assert!(!verdict.passed(), "no report verifies without certificates");
        }
        return;
    }
    let _ = SnpCerts::from_cert_table(data);
    if let Ok(certs) = certs_from_bytes(data, "fuzz") {
        for c in &certs {
            let _ = vek_info(c);
            let _ = SnpCerts::default().add(c.clone(), "fuzz");
        }
    }
});
