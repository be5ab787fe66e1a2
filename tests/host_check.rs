//! `cvmm host-check` on the machine the tests run on: every requirement gets a row, each
//! platform a verdict, and the verdicts agree with independent evidence (the kernel's
//! /proc/cpuinfo flags, whether /dev/kvm opens, whether `cvmm run` actually launches the
//! emulated platform); the exit status answers --tee.

mod common;

use common::cvmm;

/// Every row host-check prints, in order.
const ROWS: [&str; 27] = [
    "host.kernel",
    "kvm.device",
    "kvm.base",
    "kvm.vm-types",
    "kvm.guest-memfd",
    "kvm.memory-attributes",
    "kvm.user-memory2",
    "kvm.exit-hypercall",
    "kvm.split-irqchip",
    "kvm.user-space-msr",
    "kvm.msr-filter",
    "kvm.exit-on-emulation-failure",
    "snp.cpu",
    "snp.syscfg",
    "snp.kernel",
    "snp.kvm_amd",
    "snp.sev-device",
    "snp.firmware",
    "snp.vm-type",
    "snp.kvm-probe",
    "snp.smt",
    "tdx.cpu",
    "tdx.keyids",
    "tdx.kernel",
    "tdx.kvm_intel",
    "tdx.module",
    "tdx.vm-type",
];

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn host_check(args: &[&str]) -> Run {
    let out = cvmm().arg("host-check").args(args).output().unwrap();
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The verdict line for `platform` ("SNP", "TDX (emulated)"), without its prefix.
fn verdict<'a>(stdout: &'a str, platform: &str) -> &'a str {
    let prefix = format!("verdict {platform}: ");
    stdout.lines().find_map(|l| l.strip_prefix(prefix.as_str())).unwrap_or_else(|| panic!("no {prefix}: {stdout}"))
}

/// The kernel's flags, read here without cvmm.
fn cpuinfo_has(flag: &str) -> bool {
    let text = std::fs::read_to_string("/proc/cpuinfo").unwrap();
    let flags = text.lines().find(|l| l.starts_with("flags")).unwrap();
    flags.split_whitespace().any(|f| f == flag)
}

#[test]
fn every_requirement_gets_one_row_then_a_verdict_per_platform_and_a_summary() {
    let run = host_check(&[]);

    assert_eq!(run.code, Some(0), "without --tee host-check reports and exits 0: {}", run.stderr);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert!(lines[0].starts_with("cvmm host-check: Linux "), "{}", run.stdout);
    let rows: Vec<&str> = lines[1..].iter().take_while(|l| !l.starts_with("verdict ")).copied().collect();
    let names: Vec<&str> = rows.iter().map(|l| l.split_whitespace().nth(1).unwrap()).collect();
    assert_eq!(names, ROWS, "{}", run.stdout);
    for row in &rows {
        let (status, rest) = row.split_once("  ").unwrap();
        assert!(["PASS", "WARN", "FAIL"].contains(&status), "{row}");
        assert!(rest.split_whitespace().count() >= 2, "a row without evidence: {row}");
    }
    let verdicts: Vec<&str> = lines.iter().filter(|l| l.starts_with("verdict ")).copied().collect();
    assert_eq!(verdicts.len(), 4, "{}", run.stdout);
    assert!(lines.last().unwrap().starts_with("host: "), "{}", run.stdout);
}

#[test]
fn the_snp_verdict_agrees_with_the_kernel_and_the_exit_status() {
    let run = host_check(&["--tee", "snp"]);

    let snp = verdict(&run.stdout, "SNP");
    if cpuinfo_has("sev_snp") && std::path::Path::new("/dev/sev").exists() {
        // An SNP host: whatever the verdict, the exit status must say the same.
        assert_eq!(run.code == Some(0), snp.starts_with("ready: "), "{}", run.stdout);
        return;
    }
    // Without the kernel's sev_snp flag no SNP guest can run here.
    let reason = snp.strip_prefix("not ready: ").unwrap_or_else(|| panic!("SNP said {snp}"));
    assert!(reason.starts_with("snp."), "the reason names the failed row: {reason}");
    assert!(reason.len() > 20, "the reason has evidence: {reason}");
    assert_eq!(run.code, Some(1), "{}", run.stdout);
    assert!(!run.stdout.contains("host: SNP ready"), "{}", run.stdout);
}

#[test]
fn the_tdx_verdict_agrees_with_the_kernel_and_the_exit_status() {
    let run = host_check(&["--tee", "tdx"]);

    let tdx = verdict(&run.stdout, "TDX");
    if cpuinfo_has("tdx_host_platform") {
        assert_eq!(run.code == Some(0), tdx.starts_with("ready: "), "{}", run.stdout);
        return;
    }
    let reason = tdx.strip_prefix("not ready: ").unwrap_or_else(|| panic!("TDX said {tdx}"));
    assert!(reason.starts_with("tdx."), "the reason names the failed row: {reason}");
    assert_eq!(run.code, Some(1), "{}", run.stdout);
}

/// host-check's verdict on an emulated platform against the independent evidence: a
/// launch of the demo guest on it.
fn emulated_is_available_exactly_when_it_launches(tee: &str, platform: &str) {
    let run = host_check(&["--tee", tee, "--emulated"]);
    let launch = cvmm().args(["run", "--tee", tee, "--emulated", "--timeout", "30"]).output().unwrap();

    let emulated = verdict(&run.stdout, platform);
    if launch.status.code() == Some(0) {
        assert_eq!(emulated, format!("available: cvmm run --tee {tee} --emulated"));
        assert_eq!(run.code, Some(0), "{}", run.stdout);
    } else {
        assert!(emulated.starts_with("not available: kvm."), "{emulated}");
        assert_eq!(run.code, Some(1));
    }
}

#[test]
fn emulated_snp_is_available_exactly_when_it_launches() {
    emulated_is_available_exactly_when_it_launches("snp", "SNP (emulated)");
}

#[test]
fn emulated_tdx_is_available_exactly_when_it_launches() {
    emulated_is_available_exactly_when_it_launches("tdx", "TDX (emulated)");
}

#[test]
fn the_summary_names_the_ready_platforms() {
    let run = host_check(&[]);

    let ready = |platform: &str| verdict(&run.stdout, platform).starts_with("ready: ");
    let available = |platform: &str| verdict(&run.stdout, platform).starts_with("available: ");
    let summary = run.stdout.lines().last().unwrap();
    match (ready("SNP"), ready("TDX")) {
        (true, true) => assert_eq!(summary, "host: SNP ready, TDX ready"),
        (true, false) => assert_eq!(summary, "host: SNP ready"),
        (false, true) => assert_eq!(summary, "host: TDX ready"),
        (false, false) => {
            let emulated: Vec<&str> = [("SNP", "SNP (emulated)"), ("TDX", "TDX (emulated)")]
                .into_iter()
                .filter(|(_, p)| available(p))
                .map(|(t, _)| t)
                .collect();
            let expected = if emulated.is_empty() {
                "host: no confidential guests (no SNP, no TDX, no emulation)".to_owned()
            } else {
                format!("host: emulation only ({})", emulated.join(", "))
            };
            assert_eq!(summary, expected, "{}", run.stdout);
        }
    }
}

#[test]
fn a_missing_kvm_device_fails_its_row_and_leaves_nothing_ready() {
    let run = host_check(&["--kvm-device", "/nonexistent/kvm", "--tee", "snp", "--emulated"]);

    assert_eq!(run.code, Some(1), "{}", run.stdout);
    assert!(
        run.stdout
            .contains("FAIL  kvm.device                     cannot open /nonexistent/kvm: No such file or directory"),
        "{}",
        run.stdout
    );
    assert!(
        verdict(&run.stdout, "SNP (emulated)").starts_with("not available: kvm.device: cannot open /nonexistent/kvm")
    );
    assert!(run.stdout.ends_with("host: no confidential guests (no SNP, no TDX, no emulation)\n"), "{}", run.stdout);
}

#[test]
fn another_sev_device_is_the_one_checked() {
    let run = host_check(&["--sev-device", "/nonexistent/sev"]);

    assert_eq!(run.code, Some(0));
    assert!(
        run.stdout.contains("FAIL  snp.sev-device                 /nonexistent/sev does not exist"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("FAIL  snp.kvm-probe                  probe_host: /nonexistent/sev does not exist"),
        "{}",
        run.stdout
    );
}

#[test]
fn an_unknown_tee_or_emulated_alone_is_a_usage_error() {
    let bogus = host_check(&["--tee", "sgx"]);
    let alone = host_check(&["--emulated"]);

    assert_eq!(bogus.code, Some(2));
    assert!(bogus.stderr.contains("'sgx' is not a TEE"), "{}", bogus.stderr);
    assert_eq!(alone.code, Some(2));
    assert!(alone.stderr.contains("--tee"), "{}", alone.stderr);
}
