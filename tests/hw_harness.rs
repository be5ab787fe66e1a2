//! scripts/hw-harness.sh run with `--emulated`, as a tester would run it on hardware:
//! the summary's rows, checked against an independent reading of the evidence it
//! collected (the sev crate verifies the report against the exported chain); its
//! failures, provoked through stand-ins for `cvmm measure` and `cvmm verify`; and the
//! attestation initrd's /init, run as a process against a stand-in configfs-tsm
//! directory. The harness reuses the test's cvmm binary (CVMM=...): nothing is built.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{cvmm, unhex};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned()
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cvmm-hw-harness-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

struct Harness {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    out: PathBuf,
}

impl Harness {
    /// The summary row of `tee guest check`, after its three columns.
    fn row(&self, tee: &str, guest: &str, check: &str) -> &str {
        self.stdout
            .lines()
            .find_map(|l| {
                let mut rest = l;
                for column in [tee, guest, check] {
                    let (first, tail) = rest.split_once(char::is_whitespace)?;
                    if first != column {
                        return None;
                    }
                    rest = tail.trim_start();
                }
                Some(rest)
            })
            .unwrap_or_else(|| panic!("no row {tee} {guest} {check}:\n{}\n{}", self.stdout, self.stderr))
    }

    fn last_line(&self) -> &str {
        self.stdout.lines().last().unwrap_or_default()
    }
}

/// Runs the harness with `--emulated` and `cvmm_path` as its cvmm.
fn harness(name: &str, cvmm_path: &Path) -> Harness {
    let out = temp_dir(name);
    let run = Command::new("bash")
        .arg(repo().join("scripts/hw-harness.sh"))
        .args(["--emulated", "--out"])
        .arg(&out)
        .env("CVMM", cvmm_path)
        .output()
        .unwrap();
    Harness {
        code: run.status.code(),
        stdout: String::from_utf8_lossy(&run.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&run.stderr).into_owned(),
        out,
    }
}

/// An executable shell script standing in for cvmm: `body` runs first, and whatever it
/// does not handle goes to the real binary.
fn wrapper(name: &str, body: &str) -> PathBuf {
    let path = temp_dir(name).join("cvmm");
    let script = format!("#!/usr/bin/env bash\nreal='{}'\n{body}\nexec \"$real\" \"$@\"\n", env!("CARGO_BIN_EXE_cvmm"));
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// A stand-in `cvmm verify` that does what the harness expects of the real one, as far
/// as a shell can: the chain directory holds the exported certificates and the report's
/// MEASUREMENT (offset 0x90, 48 bytes) is the expected one. With `accept_all`, it
/// accepts anything.
fn with_fake_verify(name: &str, accept_all: bool) -> PathBuf {
    let check = if accept_all {
        "exit 0".to_owned()
    } else {
        r#"if [ -s "$certs/ark.pem" ] && [ -s "$certs/vcek.pem" ]; then at=144;
    elif [ -s "$root" ] && [ -s "$collateral" ]; then at=184;
    else echo "no chain in $certs$root"; exit 1; fi
    got=$(od -An -v -tx1 -j $at -N 48 "$report" | tr -d ' \n')
    [ "$got" = "$expect" ] || { echo "measurement $got, expected $expect"; exit 1; }
    exit 0"#
            .to_owned()
    };
    let body = format!(
        r#"if [ "$1" = --help ]; then "$real" --help; echo "  verify     Verify an attestation report (stand-in)"; exit 0; fi
if [ "$1" = verify ]; then
    shift
    while [ $# -gt 0 ]; do
        case "$1" in --report) report=$2 ;; --certs) certs=$2 ;; --root) root=$2 ;; --collateral) collateral=$2 ;;
            --expect-measurement) expect=$2 ;; esac
        shift 2
    done
    {check}
fi"#
    );
    wrapper(name, &body)
}

fn has_verify() -> bool {
    let help = cvmm().arg("--help").output().unwrap();
    String::from_utf8_lossy(&help.stdout).lines().any(|l| l.trim_start().starts_with("verify "))
}

const LINUX_SKIP: &str = "SKIP: Linux guests are not run on the emulated platforms (they serve cvmm's own guest \
                          programs; Linux under emulated SNP would spin on VMGEXIT)";

#[test]
fn the_emulated_snp_demo_rows_pass_and_the_other_rows_skip_with_their_reason() {
    let run = harness("emulated", Path::new(env!("CARGO_BIN_EXE_cvmm")));

    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.starts_with("cvmm host-check: Linux "), "the host-check report comes first:\n{}", run.stdout);
    assert!(run.row("snp-emulated", "demo", "launch").starts_with("PASS  exit 0: Hello from the cvmm demo guest"));
    assert!(run.row("snp-emulated", "demo", "evidence").starts_with("PASS  1184-byte report in "));
    assert!(run.row("snp-emulated", "demo", "evidence").ends_with(", carrying the nonce"));
    let verify = run.row("snp-emulated", "demo", "verify");
    if has_verify() {
        assert!(verify.starts_with("PASS  verifies against "), "{verify}");
    } else {
        assert_eq!(verify, "SKIP: cvmm verify not available in this build");
    }
    // The emulated TDX demo guest prints its quote, with the nonce and cvmm measure's MRTD.
    assert!(run.row("tdx-emulated", "demo", "launch").starts_with("PASS  exit 0: Hello from the cvmm demo guest"));
    let tdx_evidence = run.row("tdx-emulated", "demo", "evidence");
    assert!(
        tdx_evidence.contains("-byte quote in ") && tdx_evidence.ends_with(", carrying the nonce"),
        "{tdx_evidence}"
    );
    let mrtd = cvmm().args(["measure", "--tee", "tdx", "--emulated", "--rng"]).output().unwrap();
    let mrtd = String::from_utf8_lossy(&mrtd.stdout).trim().to_owned();
    assert_eq!(run.row("tdx-emulated", "demo", "measurement"), format!("PASS  {mrtd}"));
    for check in ["launch", "evidence", "measurement", "verify"] {
        assert_eq!(run.row("snp-emulated", "linux", check), LINUX_SKIP);
        assert_eq!(run.row("tdx-emulated", "linux", check), LINUX_SKIP);
    }
    let tdx_verify = run.row("tdx-emulated", "demo", "verify");
    let tdx_verified = usize::from(tdx_verify.starts_with("PASS"));
    let (passed, skipped) = if has_verify() { (7 + tdx_verified, 9 - tdx_verified) } else { (6, 10) };
    assert_eq!(
        run.last_line(),
        format!("harness: {passed} passed, 0 failed, {skipped} skipped; logs in {}", run.out.display())
    );

    // The evidence the harness collected, read independently: the sev crate parses it and
    // verifies its signature against the exported chain; its measurement is cvmm
    // measure's for the demo's arguments and its report data starts with the guest's
    // nonce.
    use sev::certs::snp::Verifiable;
    use sev::parser::ByteParser;
    let evidence = std::fs::read(run.out.join("snp-emulated-demo/evidence.bin")).unwrap();
    let report = sev::firmware::guest::AttestationReport::from_bytes(&evidence).unwrap();
    let certs = run.out.join("chain");
    let export = cvmm().args(["snp-certs", "--export"]).arg(&certs).output().unwrap();
    assert_eq!(export.status.code(), Some(0));
    let pem = |name: &str| std::fs::read(certs.join(name)).unwrap();
    let chain = sev::certs::snp::Chain::from_pem(&pem("ark.pem"), &pem("ask.pem"), &pem("vcek.pem")).unwrap();
    (&chain, &report).verify().expect("the collected report verifies against the chain");
    let measure = cvmm().args(["measure", "--tee", "snp", "--emulated", "--rng"]).output().unwrap();
    let expected = String::from_utf8_lossy(&measure.stdout).trim().to_owned();
    assert_eq!(unhex(&expected), report.measurement.to_vec());
    assert_eq!(run.row("snp-emulated", "demo", "measurement"), format!("PASS  {expected}"));
    let console = std::fs::read_to_string(run.out.join("snp-emulated-demo/console.txt")).unwrap();
    let nonce = console.lines().find_map(|l| l.strip_prefix("rng: ")).unwrap();
    assert_eq!(&report.report_data[..32], &unhex(nonce)[..]);
}

#[test]
fn a_measurement_other_than_the_reports_fails_its_row_and_the_harness() {
    let zeros = "0".repeat(96);
    let lying = wrapper("lying-measure", &format!("if [ \"$1\" = measure ]; then echo {zeros}; exit 0; fi"));

    let run = harness("lying-run", &lying);

    assert_eq!(run.code, Some(1), "{}", run.stdout);
    let row = run.row("snp-emulated", "demo", "measurement");
    assert!(row.starts_with("FAIL  the report has "), "{row}");
    assert!(row.ends_with(&format!("cvmm measure says {zeros}")), "{row}");
    let tdx = run.row("tdx-emulated", "demo", "measurement");
    assert!(tdx.starts_with("FAIL  the quote has "), "{tdx}");
    // With cvmm verify, the verify rows check against the lying measurement too: they fail.
    let failed = if has_verify() { 4 } else { 2 };
    assert!(run.last_line().starts_with(&format!("harness: 4 passed, {failed} failed, ")), "{}", run.last_line());
}

#[test]
fn a_failed_launch_fails_its_row_and_skips_the_guests_other_rows() {
    let failing = wrapper("failing-run", "if [ \"$1\" = run ]; then echo 'cvmm: error: no luck' >&2; exit 1; fi");

    let run = harness("failing", &failing);

    assert_eq!(run.code, Some(1), "{}", run.stdout);
    let launch = run.row("snp-emulated", "demo", "launch");
    assert!(launch.starts_with("FAIL  cvmm run exited 1: cvmm: error: no luck"), "{launch}");
    assert_eq!(run.row("snp-emulated", "demo", "evidence"), "SKIP: the launch failed");
    assert_eq!(run.row("snp-emulated", "demo", "verify"), "SKIP: the launch failed");
}

#[test]
fn cvmm_verify_must_accept_the_report_and_refuse_a_wrong_measurement() {
    let honest = with_fake_verify("verify-honest", false);
    let gullible = with_fake_verify("verify-gullible", true);

    let good = harness("verify-good", &honest);
    let bad = harness("verify-bad", &gullible);

    assert_eq!(good.code, Some(0), "{}\n{}", good.stdout, good.stderr);
    let row = good.row("snp-emulated", "demo", "verify");
    assert_eq!(row, format!("PASS  verifies against {}/certs-snp; a wrong measurement is refused", good.out.display()));
    assert_eq!(bad.code, Some(1), "{}", bad.stdout);
    let row = bad.row("snp-emulated", "demo", "verify");
    assert!(row.starts_with("FAIL  cvmm verify also accepted the wrong measurement "), "{row}");
}

/// Builds the attestation initrd (once per test run) and takes its /init back out of
/// the archive.
fn attest_init() -> PathBuf {
    static INIT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    INIT.get_or_init(build_attest_init).clone()
}

fn build_attest_init() -> PathBuf {
    let dir = temp_dir("initrd");
    let initrd = dir.join("initrd.cpio");
    let build = Command::new("bash").arg(repo().join("scripts/build-attest-initrd.sh")).arg(&initrd).output().unwrap();
    assert_eq!(build.status.code(), Some(0), "{}", String::from_utf8_lossy(&build.stderr));
    assert_eq!(String::from_utf8_lossy(&build.stdout).trim(), initrd.display().to_string());
    let list = Command::new("cpio").arg("-t").stdin(std::fs::File::open(&initrd).unwrap()).output().unwrap();
    let mut names: Vec<String> = String::from_utf8_lossy(&list.stdout).lines().map(str::to_owned).collect();
    names.sort();
    assert_eq!(names, ["dev", "init", "proc", "sys"]);
    let init = Command::new("cpio")
        .args(["-i", "--to-stdout", "init"])
        .stdin(std::fs::File::open(&initrd).unwrap())
        .output()
        .unwrap();
    let path = dir.join("init");
    std::fs::write(&path, &init.stdout).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// A directory laid out like /sys/kernel/config/tsm/report after the TEE answered:
/// `cvmm/provider` and `cvmm/outblob`, and a command line file.
fn fake_tsm(name: &str, provider: &str, outblob: &[u8], cmdline: &str) -> (PathBuf, PathBuf) {
    let dir = temp_dir(name);
    std::fs::create_dir_all(dir.join("tsm/cvmm")).unwrap();
    std::fs::write(dir.join("tsm/cvmm/provider"), format!("{provider}\n")).unwrap();
    std::fs::write(dir.join("tsm/cvmm/outblob"), outblob).unwrap();
    std::fs::write(dir.join("cmdline"), cmdline).unwrap();
    (dir.join("tsm"), dir.join("cmdline"))
}

#[test]
fn the_initrds_init_prints_the_tsm_evidence_in_the_harness_format() {
    let init = attest_init();
    let report: Vec<u8> = (0..1184u32).map(|i| (i * 7 + 1) as u8).collect();
    let quote: Vec<u8> = (0..5000u32).map(|i| (i * 13) as u8).collect();
    let (tsm, cmdline) = fake_tsm("tsm-snp", "sev_guest", &report, "console=ttyS0 attest.nonce=00ff10ab quiet\n");
    let (tdx_tsm, tdx_cmdline) = fake_tsm("tsm-tdx", "tdx_guest", &quote, "console=ttyS0\n");

    let run = Command::new(&init).arg("--tsm").arg(&tsm).arg("--cmdline").arg(&cmdline).output().unwrap();
    let tdx = Command::new(&init).arg("--tsm").arg(&tdx_tsm).arg("--cmdline").arg(&tdx_cmdline).output().unwrap();

    let console = String::from_utf8_lossy(&run.stdout);
    assert_eq!(run.status.code(), Some(0), "{console}");
    // The same parse as the harness's: numbered lines from 0, 48 bytes each.
    let collect = |console: &str, kind: &str| -> Vec<u8> {
        let mut bytes = Vec::new();
        let numbered = console
            .lines()
            .filter_map(|l| l.strip_prefix(&format!("attestation: {kind} "))?.split_once(' '))
            .filter(|(n, _)| n.parse::<usize>().is_ok());
        for (i, (n, hex)) in numbered.enumerate() {
            assert_eq!(n.parse::<usize>().unwrap(), i, "lines in order from 0");
            assert!(hex.len() <= 96, "{hex}");
            bytes.extend(unhex(hex));
        }
        bytes
    };
    assert_eq!(collect(&console, "report"), report);
    assert!(console.starts_with("attestation: provider sev_guest\n"), "{console}");
    assert!(console.ends_with("attestation: done\n"), "{console}");
    let mut inblob = vec![0u8; 64];
    inblob[..4].copy_from_slice(&[0x00, 0xff, 0x10, 0xab]);
    assert_eq!(std::fs::read(tsm.join("cvmm/inblob")).unwrap(), inblob, "the nonce is the report data");
    let tdx_console = String::from_utf8_lossy(&tdx.stdout);
    assert_eq!(tdx.status.code(), Some(0), "{tdx_console}");
    assert_eq!(collect(&tdx_console, "quote"), quote);
    assert_eq!(std::fs::read(tdx_tsm.join("cvmm/inblob")).unwrap(), vec![0u8; 64], "no nonce: zeros");
}

#[test]
fn the_initrds_init_reports_a_bad_nonce_and_a_missing_tsm_as_errors() {
    let init = attest_init();
    let (tsm, bad_nonce) = fake_tsm("tsm-bad", "sev_guest", &[1, 2, 3], "attest.nonce=0g\n");
    let (_, good_cmdline) = fake_tsm("tsm-good", "sev_guest", &[1, 2, 3], "attest.nonce=00\n");

    let bad = Command::new(&init).arg("--tsm").arg(&tsm).arg("--cmdline").arg(&bad_nonce).output().unwrap();
    let missing =
        Command::new(&init).args(["--tsm", "/nonexistent/tsm", "--cmdline"]).arg(&good_cmdline).output().unwrap();

    assert_eq!(bad.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&bad.stdout),
        "attestation: error attest.nonce: not an even number of hex digits (at most 128)\n"
    );
    assert_eq!(missing.status.code(), Some(1));
    let out = String::from_utf8_lossy(&missing.stdout);
    assert!(out.starts_with("attestation: error cannot create a configfs-tsm report"), "{out}");
    assert!(!out.contains("attestation: done"));
}
