//! `cvmm verify` from the command line: third-party SNP reports and TDX quotes (with
//! the values their own repositories' tests state), the emulated SNP platform's
//! reports against its exported chain and against AMD's roots, expectations from flags,
//! a policy file and `cvmm measure`'s arguments, and malformed input.

mod common;

use std::path::{Path, PathBuf};

use common::{cvmm, field, temp_file};

const REFS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/refs/attestation/");
const GO_REPORT: &str = "go-sev-guest__verify_testdata_attestation.bin";
const GO_VCEK: &str = "go-sev-guest__verify_testdata_vcek.testcer";
const GO_CHAIN: &str = "go-sev-guest__verify_testdata_milan.testcer";
const GO_MEASUREMENT: &str =
    "b07af9620f3b839b47996422ddec6058338951d984e312115131ea82705eaf5b6bdf8a9ece31a5a608eb0cf2e4872b01";
const DCAP_QUOTE: &str = "dcap-qvl__sample_tdx_quote";
const DCAP_COLLATERAL: &str = "dcap-qvl__sample_tdx_quote_collateral.json";
const SPR_QUOTE: &str = "go-tdx-guest__testing_testdata_tdx_prod_quote_SPR_E4.dat";
/// Inside the dcap-qvl collateral's validity (issued 2025-06-19, next update 2025-07-19).
const DCAP_NOW: &str = "2025-06-20T00:00:00Z";

fn refs(name: &str) -> String {
    format!("{REFS}{name}")
}

/// Runs `cvmm verify ARGS`: (exit code, stdout, stderr).
fn verify<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> (i32, String, String) {
    let out = cvmm().arg("verify").args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The check lines of a verdict: (PASS or FAIL, name).
fn checks(stdout: &str) -> Vec<(String, String)> {
    stdout
        .lines()
        .filter_map(|l| {
            let (word, rest) = l.split_once(' ')?;
            let (name, _) = rest.split_once(':')?;
            matches!(word, "PASS" | "FAIL").then(|| (word.to_string(), name.to_string()))
        })
        .collect()
}

fn failed(stdout: &str) -> Vec<String> {
    checks(stdout).into_iter().filter(|(w, _)| w == "FAIL").map(|(_, n)| n).collect()
}

fn go_sev_guest_args() -> Vec<String> {
    vec!["--report".into(), refs(GO_REPORT), "--cert".into(), refs(GO_VCEK), "--cert".into(), refs(GO_CHAIN)]
}

fn show(path: &str) -> serde_json::Value {
    let (code, out, err) = verify(&["--show", path]);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).unwrap()
}

#[test]
fn go_sev_guest_report_verifies_and_meets_the_values_its_tests_state() {
    let mut args = go_sev_guest_args();
    args.extend(
        [
            "--allow-debug",
            "--expect-measurement",
            GO_MEASUREMENT,
            "--expect-report-data",
            "0102030405",
            "--expect-host-data",
            &"00".repeat(32),
            "--min-tcb",
            "0x4405000000000002",
            "--expect-vmpl",
            "0",
        ]
        .map(String::from),
    );
    let (code, out, err) = verify(&args);
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    let names: Vec<String> = checks(&out).into_iter().map(|(w, n)| format!("{w} {n}")).collect();
    assert_eq!(
        names,
        [
            "PASS snp.root",
            "PASS snp.ark",
            "PASS snp.ask",
            "PASS snp.vek",
            "PASS snp.signature",
            "PASS snp.tcb",
            "PASS snp.chip_id",
            "PASS debug",
            "PASS measurement",
            "PASS host_data",
            "PASS report_data",
            "PASS vmpl",
            "PASS min_tcb",
        ]
    );
    assert!(out.contains("AMD's Milan ARK (built in)"), "{out}");
    assert!(out.ends_with("verified: all 13 checks passed (snp evidence)\n"), "{out}");
}

#[test]
fn go_sev_guest_report_allows_debugging_so_it_fails_by_default() {
    let (code, out, _) = verify(&go_sev_guest_args());
    assert_eq!(code, 1);
    assert_eq!(failed(&out), ["debug"]);
    assert!(out.contains("NOT verified: 1 of 8 checks failed: debug"), "{out}");
}

#[test]
fn go_sev_guest_report_with_a_flipped_signed_byte_fails_its_signature() {
    let bytes = std::fs::read(refs(GO_REPORT)).unwrap();
    for off in [0x50, 0x90, 0x140, 0x1A0] {
        let mut b = bytes.clone();
        b[off] ^= 0x80;
        let forged = temp_file(&format!("verify_forged_{off:x}.bin"), &b);
        let mut args = go_sev_guest_args();
        args[1] = forged.display().to_string();
        args.push("--allow-debug".into());
        let (code, out, _) = verify(&args);
        assert_eq!(code, 1, "offset {off:#x}: {out}");
        assert!(failed(&out).contains(&"snp.signature".to_string()), "offset {off:#x}: {out}");
    }
}

#[test]
fn wrong_expectations_fail_one_line_each() {
    let mut args = go_sev_guest_args();
    let wrong_measurement = format!("00{}", &GO_MEASUREMENT[2..]);
    args.extend(
        ["--allow-debug", "--expect-measurement", &wrong_measurement, "--expect-report-data", "0102030406"]
            .map(String::from),
    );
    let (code, out, _) = verify(&args);
    assert_eq!(code, 1);
    assert_eq!(failed(&out), ["measurement", "report_data"]);
    assert!(out.contains(&format!("FAIL measurement: expected {wrong_measurement}, found {GO_MEASUREMENT}")), "{out}");
}

#[test]
fn go_sev_guest_report_shows_as_json_with_its_fields() {
    let j = show(&refs(GO_REPORT));
    assert_eq!(j["tee"], "snp");
    assert_eq!(j["version"], 2);
    assert_eq!(j["measurement"], GO_MEASUREMENT);
    assert!(j["chip_id"].as_str().unwrap().starts_with("3ac3fe21e13fb099"));
    assert_eq!(j["reported_tcb"]["raw"], "0x4405000000000002");
    assert_eq!(j["report_data"].as_str().unwrap(), format!("0102030405{}", "00".repeat(59)));
    assert_eq!(j["policy"]["debug"], true);
}

#[test]
fn virtee_milan_report_in_hex_verifies_with_its_vcek_and_cert_chain() {
    let args = [
        "--report",
        &refs("virtee-sev__tests_certs_data_report_milan.hex"),
        "--cert",
        &refs("virtee-sev__tests_certs_data_vcek_milan.der"),
        "--cert",
        &refs("virtee-sev__tests_certs_data_cert_chain_milan"),
        "--product",
        "milan",
    ];
    let (code, out, err) = verify(&args);
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    // The same report against Genoa's root fails the chain.
    let mut genoa = args;
    genoa[7] = "genoa";
    let (code, out, _) = verify(&genoa);
    assert_eq!(code, 1);
    assert_eq!(failed(&out), ["snp.ark", "snp.ask"]);
}

#[test]
fn go_tdx_guest_quote_shows_its_fields_and_its_trailing_bytes() {
    let j = show(&refs(SPR_QUOTE));
    assert_eq!(j["tee"], "tdx");
    assert_eq!(j["header"]["version"], 4);
    assert_eq!(j["trailing_bytes"], 39);
    assert_eq!(j["quote_len"], 4935);
    let td = &j["td_report"];
    assert_eq!(
        td["mr_td"],
        "6363b8043668a3ad953278e10389574d326c6749fb78aa810ecd9336923db86f22fc00b8dcd404bc10d5e119d7215cbb"
    );
    assert_eq!(
        td["mr_seam"],
        "2fd279c16164a93dd5bf373d834328d46008c2b693af9ebb865b08b2ced320c9a89b4869a9fab60fbe9d0c5a5363c656"
    );
    assert_eq!(
        td["rtmr2"],
        "8652f0caaba7e215ea442dc36a4499d8fec3362f3a0b2ca151cbe4b3e6466fe59c7368b3c2287fc7c3bf5c924eb4424e"
    );
    assert!(td["report_data"].as_str().unwrap().starts_with("6c62dec1b8191749"));
    let j5 = show(&refs("go-tdx-guest__testing_testdata_quote_v5_sample.dat"));
    assert_eq!((j5["header"]["version"].as_u64(), j5["body_type"].as_str()), (Some(5), Some("TD15")));
}

#[test]
fn dcap_qvl_sample_quote_verifies_with_its_collateral_inside_its_validity() {
    let args = ["--report", &refs(DCAP_QUOTE), "--collateral", &refs(DCAP_COLLATERAL), "--now", DCAP_NOW];
    let (code, out, err) = verify(&args);
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    assert!(out.contains("PASS tdx.tcb_status: TCB status UpToDate"), "{out}");
    // With Intel's root given explicitly (go-tdx-guest's copy): the same.
    let mut with_root = args.to_vec();
    let root = refs("go-tdx-guest__verify_trusted_root.pem");
    with_root.extend(["--root", &root]);
    assert_eq!(verify(&with_root).0, 0);
    // In 2027 the collateral has expired.
    let (code, out, _) = verify(&[
        "--report",
        &refs(DCAP_QUOTE),
        "--collateral",
        &refs(DCAP_COLLATERAL),
        "--now",
        "2027-01-01T00:00:00Z",
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(failed(&out).contains(&"tdx.quote".to_string()));
}

#[test]
fn tdx_expectations_from_flags_and_a_policy_file() {
    let mr_td = "91eb2b44d141d4ece09f0c75c2c53d247a3c68edd7fafe8a3520c942a604a407de03ae6dc5f87f27428b2538873118b7";
    let rtmr0 = "44c0197b39157fdd7a4dcc44767f9d6b0bb3977c7a8e347b8492f827fe9d9e5c48aca29b220b80b6a540cf994b9bc9c0";
    let policy = temp_file(
        "verify_tdx_policy.json",
        serde_json::json!({ "measurement": mr_td, "rtmr0": rtmr0, "mr_owner": "00".repeat(48) }).to_string().as_bytes(),
    );
    let base = ["--report", &refs(DCAP_QUOTE), "--collateral", &refs(DCAP_COLLATERAL), "--now", DCAP_NOW];
    let mut args: Vec<String> = base.iter().map(|s| s.to_string()).collect();
    args.extend(["--policy".into(), policy.display().to_string()]);
    let (code, out, err) = verify(&args);
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    assert!(out.contains("PASS rtmr0"), "{out}");
    // A flag overrides the file's RTMR0; an SNP-only expectation fails on a quote.
    args.extend(["--expect-rtmr".into(), format!("0={}", "11".repeat(48)), "--expect-vmpl".into(), "0".into()]);
    let (code, out, _) = verify(&args);
    assert_eq!(code, 1);
    assert_eq!(failed(&out), ["rtmr0", "vmpl"]);
    // --json: the same checks as one object.
    args.push("--json".into());
    let (_, out, _) = verify(&args);
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j["verified"], false);
    assert_eq!(j["checks"].as_array().unwrap().iter().filter(|c| c["passed"] == false).count(), 2);
}

#[test]
fn malformed_evidence_and_inputs_are_errors_with_status_2() {
    let report = std::fs::read(refs(GO_REPORT)).unwrap();
    let quote = std::fs::read(refs(SPR_QUOTE)).unwrap();
    let mut v9 = report.clone();
    v9[0] = 9;
    // A signed reserved byte: the sev crate rejects the report before any check.
    let mut reserved = report.clone();
    reserved[0x29F] = 1;
    let mut quote_v3 = quote.clone();
    quote_v3[0] = 3;
    let mut quote_bad_len = quote.clone();
    quote_bad_len[632..636].copy_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty", vec![], "neither an SEV-SNP attestation report"),
        ("truncated_report", report[..1000].to_vec(), "neither an SEV-SNP attestation report"),
        ("report_v9", v9, "version 9 is not supported"),
        ("report_reserved", reserved, "malformed SEV-SNP attestation report"),
        ("truncated_quote", quote[..700].to_vec(), "shorter than"),
        ("quote_v3", quote_v3, "neither an SEV-SNP attestation report"),
        ("quote_bad_len", quote_bad_len, "shorter than"),
    ];
    for (name, bytes, needle) in cases {
        let path = temp_file(&format!("verify_bad_{name}.bin"), &bytes);
        for mode in ["--show", "--report"] {
            let (code, out, err) = verify(&[mode, path.to_str().unwrap()]);
            assert_eq!(code, 2, "{name} {mode}: {out} {err}");
            assert!(err.contains(needle), "{name} {mode}: {err}");
            assert!(!err.contains("panicked"), "{err}");
        }
    }
    // Garbage certificates.
    let garbage = temp_file("verify_garbage.pem", b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n");
    let (code, _, err) = verify(&["--report", &refs(GO_REPORT), "--cert", garbage.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("invalid certificate"), "{err}");
    let (code, _, err) = verify(&["--report", &refs(GO_REPORT), "--cert", "/nonexistent.pem"]);
    assert_eq!(code, 2);
    assert!(err.contains("/nonexistent.pem"), "{err}");
    // Garbage collateral, an expectation of the wrong length, options for the other TEE.
    let (code, _, err) = verify(&["--report", &refs(DCAP_QUOTE), "--collateral", garbage.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("collateral"), "{err}");
    let (code, _, err) = verify(&["--report", &refs(GO_REPORT), "--expect-measurement", "abcd"]);
    assert_eq!(code, 2);
    assert!(err.contains("measurement") && err.contains("not 48"), "{err}");
    let (code, _, err) = verify(&["--report", &refs(DCAP_QUOTE), "--cert", &refs(GO_VCEK)]);
    assert_eq!(code, 2);
    assert!(err.contains("for SNP reports"), "{err}");
    let bad_policy = temp_file("verify_bad_policy.json", br#"{"measurment": "00"}"#);
    let (code, _, err) = verify(&["--report", &refs(GO_REPORT), "--policy", bad_policy.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("unknown field"), "{err}");
}

#[test]
fn expect_measurement_of_takes_cvmm_measures_arguments() {
    let mut args = go_sev_guest_args();
    args.extend(["--allow-debug", "--expect-measurement-of", "--", "--tee", "snp", "--emulated"].map(String::from));
    let (code, out, _) = verify(&args);
    // The go-sev-guest guest is not cvmm's demo guest: the measurement differs.
    assert_eq!(code, 1);
    assert_eq!(failed(&out), ["measurement"]);
    let expected = measure(&["--tee", "snp", "--emulated"]);
    assert!(out.contains(&format!("FAIL measurement: expected {expected}, found {GO_MEASUREMENT}")), "{out}");
    // Arguments `cvmm measure` rejects are an error.
    let mut bad = go_sev_guest_args();
    bad.extend(["--expect-measurement-of", "--", "--tee", "snp", "--no-such-flag"].map(String::from));
    let (code, _, err) = verify(&bad);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--no-such-flag"), "{err}");
}

/// `cvmm measure ARGS`'s output.
fn measure(args: &[&str]) -> String {
    let out = cvmm().arg("measure").args(args).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The lines of `text` after `prefix`.
/// Boots the demo guest on the emulated SNP platform with `args` and returns the
/// attestation report it printed and the nonce (its virtio-rng bytes) it asked it for.
fn emulated_report(args: &[&str]) -> (Vec<u8>, String) {
    let run = cvmm().args(["run", "--timeout", "60"]).args(args).output().unwrap();
    let console = String::from_utf8_lossy(&run.stdout);
    assert_eq!(run.status.code(), Some(0), "console: {console}\nstderr: {}", String::from_utf8_lossy(&run.stderr));
    let mut report = Vec::new();
    for line in field(&console, "attestation: report ") {
        if let Some((index, hex)) = line.split_once(' ').filter(|(i, _)| i.parse::<u32>().is_ok()) {
            assert_eq!(index.parse::<usize>().unwrap(), report.len() / 48, "report lines in order");
            report.extend(hex::decode(hex).unwrap());
        }
    }
    assert_eq!(report.len(), 0x4a0, "console: {console}");
    (report, field(&console, "rng: ")[0].to_string())
}

fn export_chain(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cvmm-verify-{name}-{}", std::process::id()));
    let out = cvmm().args(["snp-certs", "--export"]).arg(&dir).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    dir
}

/// The DER of a one-certificate PEM file.
fn pem_to_der(pem: &str) -> Vec<u8> {
    use base64::Engine;
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD.decode(body).unwrap()
}

fn path_str(p: &Path) -> String {
    p.display().to_string()
}

#[test]
fn emulated_snp_report_verifies_with_its_exported_chain_and_fails_with_amds_roots() {
    // Arrange: a report from the emulated platform, its exported chain, the launch arguments.
    let launch = ["--tee", "snp", "--emulated", "--rng", "--memory", "128M", "--tee-options", "policy=0x30000"];
    let (report, nonce) = emulated_report(&launch);
    let report_file = temp_file("verify_emulated_report.bin", &report);
    let dir = export_chain("emulated");
    let ark = dir.join("ark.pem");

    // Act + assert: trusting the exported ARK, everything passes, the measurement
    // computed from the same launch arguments included.
    let mut args: Vec<String> =
        ["--report", &path_str(&report_file), "--certs", &path_str(&dir), "--root", &path_str(&ark)]
            .map(String::from)
            .to_vec();
    args.extend(["--expect-report-data".into(), nonce.clone(), "--expect-policy".into(), "0x30000".into()]);
    args.extend(["--expect-measurement-of", "--"].map(String::from));
    args.extend(launch.map(String::from));
    let (code, out, err) = verify(&args);
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    for name in ["snp.root", "snp.ark", "snp.ask", "snp.vek", "snp.signature", "snp.tcb", "snp.chip_id", "measurement"]
    {
        assert!(checks(&out).contains(&("PASS".to_string(), name.to_string())), "{name}: {out}");
    }

    // The certificates as an extended guest request returns them: the same verdict.
    let der = |name: &str| pem_to_der(&std::fs::read_to_string(dir.join(name)).unwrap());
    use launch::snp::guest_msg::{build_cert_table, cert_guid, CertTableEntry};
    let table = build_cert_table(&[
        CertTableEntry { guid: cert_guid::ARK, data: der("ark.pem") },
        CertTableEntry { guid: cert_guid::ASK, data: der("ask.pem") },
        CertTableEntry { guid: cert_guid::VCEK, data: der("vcek.pem") },
    ])
    .unwrap();
    let table_file = temp_file("verify_cert_table.bin", &table);
    let (code, out, err) = verify(&[
        "--report",
        &path_str(&report_file),
        "--cert-table",
        &path_str(&table_file),
        "--root",
        &path_str(&ark),
    ]);
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    assert!(out.contains("PASS snp.chip_id"), "{out}");

    // Against AMD's real roots (the report names Milan), the same evidence fails.
    let amd: Vec<String> = ["--report", &path_str(&report_file), "--certs", &path_str(&dir)].map(String::from).to_vec();
    let (code, out, _) = verify(&amd);
    assert_eq!(code, 1, "{out}");
    assert_eq!(failed(&out), ["snp.ark", "snp.ask"]);
    assert!(out.contains("AMD's Milan ARK (built in)"), "{out}");
    for product in ["genoa", "turin"] {
        let mut a = amd.clone();
        a.extend(["--product".into(), product.into()]);
        let (code, out, _) = verify(&a);
        assert_eq!(code, 1, "{product}: {out}");
        assert!(failed(&out).contains(&"snp.ask".to_string()), "{product}: {out}");
    }

    // A flipped byte of the emulated report fails its signature.
    let mut forged = report.clone();
    forged[0x90] ^= 1;
    let forged_file = temp_file("verify_emulated_forged.bin", &forged);
    let (code, out, _) = verify(&[
        "--report",
        forged_file.to_str().unwrap(),
        "--certs",
        dir.to_str().unwrap(),
        "--root",
        ark.to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert_eq!(failed(&out), ["snp.signature"]);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn emulated_tdx_quote_verifies_with_its_exported_root_and_collateral_and_fails_with_intels() {
    // Arrange: a quote from the demo TD on the emulated TDX platform, its exported root
    // and collateral.
    let launch = ["--tee", "tdx", "--emulated", "--rng", "--memory", "64M"];
    let run = cvmm().args(["run", "--timeout", "60"]).args(launch).output().unwrap();
    let console = String::from_utf8_lossy(&run.stdout);
    assert_eq!(run.status.code(), Some(0), "console: {console}\nstderr: {}", String::from_utf8_lossy(&run.stderr));
    let mut quote = Vec::new();
    for line in field(&console, "attestation: quote ") {
        let (_, hex) = line.split_once(' ').unwrap();
        quote.extend(hex::decode(hex).unwrap());
    }
    let quote_file = temp_file("verify_emulated_quote.bin", &quote);
    let nonce = field(&console, "rng: ")[0].to_string();
    let dir = std::env::temp_dir().join(format!("cvmm-verify-tdx-{}", std::process::id()));
    let out = cvmm().args(["tdx-certs", "--export"]).arg(&dir).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let quote_arg = path_str(&quote_file);
    let collateral = path_str(&dir.join("collateral.json"));
    let expectations = |args: &mut Vec<String>| {
        args.extend([
            "--expect-report-data".into(),
            nonce.clone(),
            "--expect-rtmr".into(),
            format!("0={}", "00".repeat(48)),
        ]);
        args.extend(["--expect-measurement-of", "--"].map(String::from));
        args.extend(launch.map(String::from));
    };

    // Act + assert: with the exported root and collateral, every check passes (MRTD
    // computed from the same launch arguments, the nonce, RTMR0, the quote's signatures,
    // chain and TCB status).
    let mut args: Vec<String> =
        ["--report", &quote_arg, "--root", &path_str(&dir.join("root.pem")), "--collateral", &collateral]
            .map(String::from)
            .to_vec();
    expectations(&mut args);
    let (code, out, err) = verify(&args);
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    for name in ["tdx.quote", "tdx.tcb_status", "debug", "measurement", "report_data", "rtmr0"] {
        assert!(checks(&out).contains(&("PASS".to_string(), name.to_string())), "{name}: {out}");
    }

    // Against Intel's root (the default), the same quote and collateral fail.
    let mut args: Vec<String> = ["--report", &quote_arg, "--collateral", &collateral].map(String::from).to_vec();
    expectations(&mut args);
    let (code, out, _) = verify(&args);
    assert_eq!(code, 1, "{out}");
    assert!(failed(&out).contains(&"tdx.quote".to_string()), "{out}");

    // Without collateral, the quote meets its expectations but is not verified.
    let mut args: Vec<String> =
        ["--report", &quote_arg, "--root", &path_str(&dir.join("root.pem"))].map(String::from).to_vec();
    expectations(&mut args);
    let (code, out, _) = verify(&args);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("FAIL tdx.quote: no collateral"), "{out}");
    let _ = std::fs::remove_dir_all(dir);
}
