//! `cvmm measure` from the command line: output formats, the launch log, and bad input.
//! (Digest agreement with third-party calculators is in snp_measure.rs / tdx_measure.rs.)

mod common;

use common::{cvmm, temp_file};

const OVMF: &str = "/usr/share/ovmf/OVMF.fd";
/// Debian 12's OVMF.fd: SEV metadata header 0x52c bytes before the end.
const SEV_METADATA_FROM_END: usize = 0x52c;

fn ovmf() -> Vec<u8> {
    std::fs::read(OVMF).unwrap_or_else(|e| panic!("{OVMF}: {e} (scripts/setup.sh installs the ovmf package)"))
}

/// Runs `cvmm measure ARGS`, returning (exit code, stdout, stderr).
fn measure(args: &[&str]) -> (i32, String, String) {
    let out = cvmm().arg("measure").args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_fails_with(args: &[&str], needle: &str) {
    let (code, out, err) = measure(args);
    assert_ne!(code, 0, "{args:?} must fail; stdout {out:?}");
    assert!(out.is_empty(), "no digest on failure: {out:?}");
    assert!(err.to_lowercase().contains(&needle.to_lowercase()), "{args:?}: expected {needle:?} in stderr {err:?}");
}

/// Points the footer-table entry `guid` (a `u32` offset from the end) at `offset`.
fn set_footer_offset(image: &mut [u8], guid: &[u8; 16], offset: u32) {
    let tail = image.len() - 0x1000;
    let pos = image[tail..].windows(16).position(|w| w == guid).expect("entry in the footer table") + tail;
    image[pos - 6..pos - 2].copy_from_slice(&offset.to_le_bytes());
}

/// EFI byte order of dc886566-984a-4798-a75e-5585a7bf67cc (SEV metadata).
const SEV_METADATA_GUID: [u8; 16] =
    [0x66, 0x65, 0x88, 0xdc, 0x4a, 0x98, 0x98, 0x47, 0xa7, 0x5e, 0x55, 0x85, 0xa7, 0xbf, 0x67, 0xcc];
/// EFI byte order of e47a6535-984a-4798-865e-4685a7bf8ec2 (TDX metadata).
const TDX_METADATA_GUID: [u8; 16] =
    [0x35, 0x65, 0x7a, 0xe4, 0x4a, 0x98, 0x98, 0x47, 0x86, 0x5e, 0x46, 0x85, 0xa7, 0xbf, 0x8e, 0xc2];

fn with_sev_section(image: &mut [u8], index: usize, base: u32, size: u32, kind: u32) {
    let at = image.len() - SEV_METADATA_FROM_END + 16 + 12 * index;
    image[at..at + 4].copy_from_slice(&base.to_le_bytes());
    image[at + 4..at + 8].copy_from_slice(&size.to_le_bytes());
    image[at + 8..at + 12].copy_from_slice(&kind.to_le_bytes());
}

#[test]
fn plain_output_is_the_digest_alone_on_the_last_line() {
    let (code, out, err) = measure(&["--tee", "snp", "--firmware", OVMF, "--vcpus", "1", "--vcpu-type", "EPYC-v4"]);
    assert_eq!(code, 0, "{err}");
    let last = out.lines().last().unwrap();
    assert_eq!(last.len(), 96);
    assert!(last.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()), "{last}");
    let (code, out, err) = measure(&["--tee", "tdx", "--firmware", OVMF]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().last().unwrap().len(), 96);
}

#[test]
fn json_output_carries_every_value() {
    let (code, out, err) =
        measure(&["--tee", "snp", "--firmware", OVMF, "--vcpus", "2", "--vcpu-type", "EPYC-Milan", "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["tee"], "snp");
    assert_eq!(v["vcpus"], 2);
    assert_eq!(v["vcpu_type"], "EPYC-Milan");
    assert_eq!(v["digest"].as_str().unwrap().len(), 96);
    assert_eq!(v["firmware_sha256"].as_str().unwrap().len(), 64);
    let (code, out, _) = measure(&["--tee", "tdx", "--firmware", OVMF, "--json"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["tee"], "tdx");
    assert_eq!(v["mrtd"].as_str().unwrap().len(), 96);
}

#[test]
fn launch_log_has_one_json_line_per_range() {
    let log = std::env::temp_dir().join(format!("cvmm-launch-log-{}.jsonl", std::process::id()));
    let (code, _, err) = measure(&[
        "--tee",
        "snp",
        "--firmware",
        OVMF,
        "--vcpus",
        "2",
        "--vcpu-type",
        "EPYC-v4",
        "--launch-log",
        log.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    // Firmware, five metadata sections, two VMSAs.
    assert_eq!(lines.len(), 8, "{text}");
    assert_eq!(lines[0]["type"], "snp:normal");
    assert_eq!(lines[0]["gpa"], "0xffe00000");
    assert_eq!(lines[0]["len"], 0x20_0000);
    assert_eq!(lines[0]["sha384"].as_str().unwrap().len(), 96);
    assert!(lines.iter().any(|l| l["type"] == "snp:secrets" && l["gpa"] == "0x80d000"));
    assert_eq!(lines[7]["type"], "snp:vmsa");
    assert_eq!(lines[7]["gpa"], "0xfffffffff000");
}

#[test]
fn firmware_without_a_footer_table_is_rejected() {
    let mut img = ovmf();
    let n = img.len();
    img[n - 64..].fill(0);
    let path = temp_file("nofooter.fd", &img);
    assert_fails_with(&["--tee", "snp", "--firmware", path.to_str().unwrap(), "--vcpu-type", "EPYC-v4"], "footer");
    assert_fails_with(&["--tee", "tdx", "--firmware", path.to_str().unwrap()], "footer");
}

#[test]
fn truncated_footer_table_is_rejected() {
    let mut img = ovmf();
    let n = img.len();
    let len_at = n - 32 - 16 - 2;
    img[len_at..len_at + 2].copy_from_slice(&0xfff0u16.to_le_bytes());
    let path = temp_file("truncated.fd", &img);
    assert_fails_with(&["--tee", "snp", "--firmware", path.to_str().unwrap(), "--vcpu-type", "EPYC-v4"], "footer");
}

#[test]
fn metadata_outside_the_file_is_rejected() {
    let mut img = ovmf();
    set_footer_offset(&mut img, &SEV_METADATA_GUID, 0x40_0000); // 4 MiB before the end of a 2 MiB file
    set_footer_offset(&mut img, &TDX_METADATA_GUID, 0x40_0000);
    let path = temp_file("outside.fd", &img);
    assert_fails_with(&["--tee", "snp", "--firmware", path.to_str().unwrap(), "--vcpu-type", "EPYC-v4"], "metadata");
    assert_fails_with(&["--tee", "tdx", "--firmware", path.to_str().unwrap()], "metadata");
}

#[test]
fn overlapping_sections_are_rejected() {
    let mut img = ovmf();
    with_sev_section(&mut img, 1, 0x80_8000, 0x3000, 1); // overlaps section 0 (0x800000+0x9000)
    let path = temp_file("overlap.fd", &img);
    assert_fails_with(&["--tee", "snp", "--firmware", path.to_str().unwrap(), "--vcpu-type", "EPYC-v4"], "overlap");
}

#[test]
fn unknown_section_types_are_rejected() {
    let mut img = ovmf();
    with_sev_section(&mut img, 4, 0x80_f000, 0x11000, 0x77);
    let path = temp_file("unknown.fd", &img);
    assert_fails_with(&["--tee", "snp", "--firmware", path.to_str().unwrap(), "--vcpu-type", "EPYC-v4"], "0x77");
}

#[test]
fn absurd_vcpu_counts_and_unknown_types_are_rejected() {
    assert_fails_with(&["--tee", "snp", "--firmware", OVMF, "--vcpu-type", "EPYC-v4", "--vcpus", "0"], "vcpu");
    assert_fails_with(&["--tee", "snp", "--firmware", OVMF, "--vcpu-type", "EPYC-v4", "--vcpus", "100000"], "vcpu");
    assert_fails_with(&["--tee", "snp", "--firmware", OVMF, "--vcpu-type", "Pentium-II"], "Pentium-II");
    assert_fails_with(&["--tee", "tdx", "--firmware", OVMF, "--vcpus", "0"], "vcpu");
}

#[test]
fn kernel_hashes_need_a_firmware_with_a_hashes_section() {
    let kernel = temp_file("k", b"kernel bytes");
    assert_fails_with(
        &["--tee", "snp", "--firmware", OVMF, "--vcpu-type", "EPYC-v4", "--kernel", kernel.to_str().unwrap()],
        "hashes",
    );
}

#[test]
fn missing_firmware_and_unknown_tee_are_rejected() {
    assert_fails_with(&["--tee", "snp", "--firmware", "/nonexistent.fd", "--vcpu-type", "EPYC-v4"], "/nonexistent.fd");
    assert_fails_with(&["--tee", "sgx", "--firmware", OVMF], "sgx");
}
