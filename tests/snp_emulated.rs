//! The emulated SEV-SNP platform end to end: `cvmm run --tee snp --emulated` boots
//! guests through cvmm's own firmware, and what the guest, the launch and `cvmm
//! measure` say about the launch agree.

mod common;

use std::time::Duration;

use common::{cvmm, field, hex_of, temp_file, unhex, SharedBuf};
use vmm::{build_vm, SnpConfig, Tee, VmConfig, VmExit};

fn snp_config() -> VmConfig {
    VmConfig {
        tee: Tee::Snp(SnpConfig { emulated: true, ..Default::default() }),
        timeout: Some(Duration::from_secs(30)),
        ..Default::default()
    }
}

#[test]
fn demo_guest_boots_on_the_emulated_snp_platform_through_virtio_console() {
    let console = SharedBuf::default();
    let mut vm = build_vm(&snp_config(), Box::new(console.clone())).expect("build");
    assert_eq!(vm.backend_name(), "SEV-SNP (emulated)");
    let exit = vm.run().expect("run");
    assert_eq!(exit, VmExit::GuestExit(0), "console: {}", console.text());
    assert!(console.text().starts_with("Hello from the cvmm demo guest: 1 vCPU, 256 MiB of memory\n"));
    // The guest shared its bounce region (4-8 MiB) and nothing else.
    let shared = vm.shared_memory();
    assert!(shared.is_shared(0x40_0000, 0x40_0000));
    assert!(!shared.is_shared(0x20_0000, 0x1000));
    assert!(!shared.is_shared(0x80_0000, 0x1000));
}

#[test]
fn application_processors_are_created_by_the_guest_and_validate_memory_with_it() {
    let config = VmConfig { vcpus: 4, ..snp_config() };
    let console = SharedBuf::default();
    let mut vm = build_vm(&config, Box::new(console.clone())).expect("build");
    assert_eq!(vm.run().expect("run"), VmExit::GuestExit(0), "console: {}", console.text());
    assert!(console.text().starts_with("Hello from the cvmm demo guest: 4 vCPUs, 256 MiB"));
    let platform = vm.snp_platform().expect("emulated SNP");
    assert_eq!(platform.aps_started(), 3);
    // Everything but the 4 MiB bounce region was validated (by all four vCPUs).
    let rmp = platform.rmp();
    assert_eq!(rmp.pages(), 65536);
    assert_eq!(rmp.validated_pages(), 65536 - 1024);
}

#[test]
fn the_launch_measurement_equals_cvmm_measure_for_the_same_arguments() {
    let config = VmConfig { memory: 128 << 20, rng: true, ..snp_config() };
    let mut vm = build_vm(&config, Box::new(SharedBuf::default())).expect("build");
    let launched = vm.launch_measurement().expect("an SNP launch has a measurement");
    assert_eq!(vm.run().expect("run"), VmExit::GuestExit(0));
    let (_, calculated) = vmm::snp_measurement(&config).expect("measure");
    assert_eq!(launched, calculated);

    let args = ["--tee", "snp", "--emulated", "--memory", "128M", "--rng"];
    let out = cvmm().arg("measure").args(args).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), hex_of(&launched));
    // A different configuration (the boot info is measured) measures differently.
    let out = cvmm().arg("measure").args(["--tee", "snp", "--emulated", "--memory", "128M"]).output().unwrap();
    assert_ne!(String::from_utf8_lossy(&out.stdout).trim(), hex_of(&launched));
}

#[test]
fn malformed_ghcb_requests_get_the_spec_errors_and_the_vm_survives_them() {
    let guest = temp_file("snp_ghcb_test.elf", firmware::test_guests::snp_ghcb());
    let out =
        cvmm().args(["run", "--tee", "snp", "--emulated", "--timeout", "30", "--kernel"]).arg(&guest).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // A debug exit with a check number means that check failed.
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(stderr.contains("the guest asked to be terminated on vCPU 0: reason set 1, code 0x42"), "stderr: {stderr}");
}

#[test]
fn a_real_snp_launch_on_a_host_without_snp_says_what_is_missing() {
    let out = cvmm().args(["run", "--tee", "snp"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("--tee snp:"), "{stderr}");
    assert!(stderr.contains("/dev/sev") || stderr.contains("SNP VM type"), "{stderr}");
    assert!(stderr.contains("--emulated"), "{stderr}");
}

#[test]
fn snp_rejects_programs_without_a_32_bit_entry_and_too_much_memory() {
    let elf = temp_file("plain.elf", &common::tiny_elf(&common::exit_with(0)));
    let out = cvmm().args(["run", "--tee", "snp", "--emulated", "--kernel"]).arg(&elf).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a cvmm guest program"));
    let out = cvmm().args(["run", "--tee", "snp", "--emulated", "--memory", "4G"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("at most 3072 MiB"));
}

/// The lines of `text` after `prefix`.
#[test]
fn the_demo_guests_attestation_report_verifies_against_the_exported_chain() {
    use sev::certs::snp::Verifiable;
    use sev::parser::ByteParser;
    // Arrange: the relying party's view: the exported chain and the expected digest.
    let dir = std::env::temp_dir().join(format!("cvmm-snp-chain-{}", std::process::id()));
    let out = cvmm().args(["snp-certs", "--export"]).arg(&dir).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let pem = |name: &str| std::fs::read(dir.join(name)).unwrap();
    let chain = sev::certs::snp::Chain::from_pem(&pem("ark.pem"), &pem("ask.pem"), &pem("vcek.pem")).unwrap();
    let args = ["--tee", "snp", "--emulated", "--rng", "--vcpus", "2"];
    let host_data = "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=";
    let options = format!("policy=0x30000,host-data={host_data}");
    let measure = cvmm().arg("measure").args(args).args(["--tee-options", &options]).output().unwrap();
    let expected = String::from_utf8_lossy(&measure.stdout).trim().to_string();

    // Act: the guest asks for a report with its nonce (the virtio-rng bytes).
    let run = cvmm().arg("run").args(args).args(["--tee-options", &options, "--timeout", "60"]).output().unwrap();
    let console = String::from_utf8_lossy(&run.stdout);
    assert_eq!(run.status.code(), Some(0), "console: {console}\nstderr: {}", String::from_utf8_lossy(&run.stderr));

    // Assert: the report the guest printed is signed by the chain's VCEK, carries the
    // nonce, and its measurement is the one `cvmm measure` predicted.
    let mut bytes = Vec::new();
    for line in field(&console, "attestation: report ") {
        if let Some((index, hex)) = line.split_once(' ').filter(|(i, _)| i.parse::<u32>().is_ok()) {
            assert_eq!(index.parse::<usize>().unwrap(), bytes.len() / 48, "report lines in order");
            bytes.extend(unhex(hex));
        }
    }
    assert_eq!(bytes.len(), 0x4a0);
    chain.verify().unwrap();
    let report = sev::firmware::guest::AttestationReport::from_bytes(&bytes).unwrap();
    (&chain, &report).verify().expect("the report verifies against the exported chain");
    let nonce = unhex(field(&console, "rng: ")[0]);
    assert_eq!(&report.report_data[..32], &nonce[..]);
    assert_eq!(hex_of(&report.measurement), expected);
    assert_eq!(field(&console, "attestation: measurement "), [expected.as_str()]);
    assert_eq!(report.host_data[..4], [1, 2, 3, 4]);
    assert_eq!(field(&console, "attestation: policy "), ["0x0000000000030000"]);
    assert_eq!(field(&console, "attestation: certificates "), ["received"]);
    // A flipped report byte no longer verifies.
    let mut forged = bytes.clone();
    forged[0x50] ^= 1;
    let forged = sev::firmware::guest::AttestationReport::from_bytes(&forged).unwrap();
    assert!((&chain, &forged).verify().is_err());
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_wrong_id_block_fails_the_launch_and_a_right_one_is_accepted() {
    use launch::snp::id_block::IdBlock;
    use p384::ecdsa::SigningKey;
    let config = VmConfig { memory: 64 << 20, ..snp_config() };
    let (_, digest) = vmm::snp_measurement(&config).unwrap();
    let key = SigningKey::from_bytes(&[7u8; 48].into()).unwrap();
    let with_id = |ld: [u8; 48]| {
        let block = IdBlock::new(ld, 0x30000);
        let auth = block.sign(&key, None).unwrap();
        let Tee::Snp(mut snp) = config.tee.clone() else { unreachable!() };
        snp.apply_options(&format!("id-block={},id-auth={}", block.to_base64(), auth.to_base64())).unwrap();
        VmConfig { tee: Tee::Snp(snp), ..config.clone() }
    };
    let mut vm = build_vm(&with_id(digest), Box::new(SharedBuf::default())).expect("the right ID block launches");
    assert_eq!(vm.run().unwrap(), VmExit::GuestExit(0));
    let mut wrong = digest;
    wrong[0] ^= 1;
    let err = build_vm(&with_id(wrong), Box::new(SharedBuf::default())).unwrap_err().to_string();
    assert!(err.contains("SNP_LAUNCH_FINISH"), "{err}");
}
