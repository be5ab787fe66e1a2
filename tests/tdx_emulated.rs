//! The emulated TDX platform end to end: `cvmm run --tee tdx --emulated` boots guests
//! through cvmm's own firmware (all vCPUs at the reset vector, memory accepted page by
//! page), and MRTD from the launch, the library and `cvmm measure` agree.

mod common;

use std::time::Duration;

use common::{cvmm, field, hex_of, numbered_hex, temp_file, unhex, SharedBuf};
use vmm::{build_vm, TdxConfig, Tee, VmConfig, VmExit};

fn tdx_config() -> VmConfig {
    VmConfig {
        tee: Tee::Tdx(TdxConfig::new(true)),
        memory: 64 << 20,
        timeout: Some(Duration::from_secs(60)),
        ..Default::default()
    }
}

#[test]
fn demo_guest_boots_as_a_td_with_every_vcpu_accepting_memory() {
    let console = SharedBuf::default();
    let config = VmConfig { vcpus: 3, ..tdx_config() };
    let mut vm = build_vm(&config, Box::new(console.clone())).expect("build");
    assert_eq!(vm.backend_name(), "TDX (emulated)");
    assert_eq!(vm.run().expect("run"), VmExit::GuestExit(0), "console: {}", console.text());
    assert!(console.text().starts_with("Hello from the cvmm demo guest: 3 vCPUs, 64 MiB of memory\n"));
    let platform = vm.tdx_platform().expect("emulated TDX");
    let pages = platform.pages();
    // 64 MiB and the reset page; all accepted but the 4 MiB bounce region, now shared.
    assert_eq!(pages.pages(), 16384 + 1);
    assert_eq!(pages.validated_pages(), 16384 + 1 - 1024);
    drop(pages);
    assert!(vm.shared_memory().is_shared(0x40_0000, 0x40_0000));
    assert!(!vm.shared_memory().is_shared(0x20_0000, 0x1000));
}

#[test]
fn mrtd_equals_cvmm_measure_for_the_same_arguments() {
    let config = VmConfig { rng: true, ..tdx_config() };
    let mut vm = build_vm(&config, Box::new(SharedBuf::default())).expect("build");
    let launched = vm.launch_measurement().expect("a TD has an MRTD");
    assert_eq!(vm.run().expect("run"), VmExit::GuestExit(0));
    assert_eq!(vmm::tdx_measurement(&config).unwrap().1, launched);
    let out = cvmm().args(["measure", "--tee", "tdx", "--emulated", "--rng", "--memory", "64M"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), hex_of(&launched));
    let out = cvmm().args(["measure", "--tee", "tdx", "--emulated", "--memory", "64M"]).output().unwrap();
    assert_ne!(String::from_utf8_lossy(&out.stdout).trim(), hex_of(&launched), "the boot info is measured");
}

#[test]
fn malformed_tdcalls_get_the_ghci_status_and_a_fatal_error_report_ends_the_vm() {
    let guest = temp_file("tdx_test.elf", firmware::test_guests::tdx());
    let out = cvmm()
        .args(["run", "--tee", "tdx", "--emulated", "--memory", "64M", "--timeout", "60", "--kernel"])
        .arg(&guest)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // A debug exit with a check number means that check failed.
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(stderr.contains("the TD reported a fatal error on vCPU 0: code 0x42"), "stderr: {stderr}");
}

#[test]
fn get_quote_completes_asynchronously_a_request_in_flight_makes_the_next_retry_and_completions_raise_the_vector() {
    let guest = temp_file("tdx_quote_test.elf", firmware::test_guests::tdx_quote());
    let out = cvmm()
        .args(["run", "--tee", "tdx", "--emulated", "--memory", "64M", "--timeout", "60", "--kernel"])
        .arg(&guest)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The guest checks everything; its exit status says which case it saw (a number
    // from 1 to 14 is the check that failed). The emulated quote takes at least 10 ms
    // and a TDCALL round trip far less, so the second request meets the first in
    // flight and is told to retry; 0x51 (the first completed in between) is also
    // correct, and tolerated on a loaded host.
    match out.status.code() {
        Some(0) => {}
        Some(0x51) => eprintln!("note: the first GetQuote completed before the second was made"),
        other => panic!("guest status {other:?} (a failed check's number); stderr: {stderr}"),
    }
}

#[test]
fn a_real_tdx_launch_on_a_host_without_tdx_says_what_is_missing() {
    let out = cvmm().args(["run", "--tee", "tdx"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("--tee tdx:") && stderr.contains("--emulated"), "{stderr}");
}

/// The lines of `text` after `prefix`.
#[test]
fn the_demo_tds_quote_verifies_against_the_exported_chain_with_nonce_mrtd_and_rtmr3() {
    use sha2::{Digest, Sha384};
    // Arrange: the relying party's view: the exported root and the expected MRTD.
    let dir = std::env::temp_dir().join(format!("cvmm-tdx-chain-{}", std::process::id()));
    let out = cvmm().args(["tdx-certs", "--export"]).arg(&dir).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let root_pem = std::fs::read_to_string(dir.join("root.pem")).unwrap();
    let root_der = pem_to_der(&root_pem);
    let args = ["--tee", "tdx", "--emulated", "--rng", "--memory", "64M", "--vcpus", "2"];
    let measure = cvmm().arg("measure").args(args).output().unwrap();
    let expected_mrtd = String::from_utf8_lossy(&measure.stdout).trim().to_string();

    // Act
    let run = cvmm().arg("run").args(args).args(["--timeout", "60"]).output().unwrap();
    let console = String::from_utf8_lossy(&run.stdout);
    assert_eq!(run.status.code(), Some(0), "console: {console}\nstderr: {}", String::from_utf8_lossy(&run.stderr));

    // Assert: the quote the guest printed parses with an independent DCAP parser,
    // verifies with cvmm's verifier against the exported root, and carries the nonce,
    // the predicted MRTD, and an RTMR3 the host recomputes from the printed event.
    let quote = numbered_hex(&console, "attestation: quote ");
    let theirs = dcap_qvl::quote::Quote::parse(&quote).expect("dcap-qvl parses the quote");
    let td = theirs.report.as_td10().expect("a TD 1.0 body");
    let ours = launch::tdx::quote::Quote::parse(&quote).unwrap();
    ours.verify(&root_der).expect("the quote verifies against the exported root");
    let nonce = unhex(field(&console, "rng: ")[0]);
    assert_eq!(&td.report_data[..32], &nonce[..]);
    assert_eq!(hex_of(&td.mr_td), expected_mrtd);
    let event = unhex(field(&console, "attestation: rtmr3 event ")[0]);
    let rtmr3: Vec<u8> = Sha384::new().chain_update([0u8; 48]).chain_update(&event).finalize().to_vec();
    assert_eq!(td.rt_mr3.to_vec(), rtmr3);
    let printed: Vec<&str> =
        field(&console, "attestation: rtmr3 ").into_iter().filter(|l| !l.starts_with("event")).collect();
    assert_eq!(printed, [hex_of(&rtmr3).as_str()]);
    assert_eq!(td.rt_mr0, [0; 48]);
    // The same run: CPU 1 started through the ACPI wakeup mailbox, and the CC event log
    // the TD printed replays to the quoted RTMRs.
    assert!(console.contains("\nacpi: MADT lists 2 CPUs\nacpi: CPU 1 woke through the mailbox\n"), "{console}");
    let log = launch::tdx::ccel::EventLog::parse(&numbered_hex(&console, "ccel: ")).unwrap();
    assert_eq!(log.events.len(), 1, "the demo's one run-time measurement");
    let logged = &log.events[0];
    assert_eq!((logged.mr_index, logged.data.as_slice()), (4, &b"cvmm demo guest: RTMR3 event"[..]));
    assert_eq!(logged.digest.to_vec(), event);
    let replayed = log.replay().unwrap();
    assert_eq!(replayed, [td.rt_mr0, td.rt_mr1, td.rt_mr2, td.rt_mr3], "the log replays to the quoted RTMRs");
    // A flipped body byte no longer verifies.
    let mut forged = quote.clone();
    forged[48 + 520] ^= 1;
    assert!(launch::tdx::quote::Quote::parse(&forged).unwrap().verify(&root_der).is_err());
    let _ = std::fs::remove_dir_all(dir);
}

/// The DER of the first PEM block in `pem`.
fn pem_to_der(pem: &str) -> Vec<u8> {
    use base64::Engine;
    let body: String = pem
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    base64::engine::general_purpose::STANDARD.decode(body).unwrap()
}
