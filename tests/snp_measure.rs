//! cvmm's SEV-SNP launch digest (`launch::plan::snp::plan_snp` then
//! `launch::measure::snp::launch_digest`) against calculators no one here wrote:
//!
//! - sev-snp-measure 0.0.13 (IBM/VirTEE, Python), run as a subprocess: vCPU counts ×
//!   vCPU types × guest features on Debian's OVMF.fd, the ec2 and gce conventions,
//!   measured direct boots (kernel hashes) with Debian's stock kernel on an AmdSev
//!   OVMF, and its VMSA dumps byte for byte;
//! - the `sev` crate 8 (`measurement::snp`, pure Rust under `crypto_nossl`), in process;
//! - the digests virtee/sev's own tests state for the AmdSev OVMF suffix.
//!
//! sev-snp-measure, OVMF and the Debian kernel are installed by scripts/setup.sh and
//! scripts/fetch-debian-kernel.sh; a missing one fails these tests, never skips them.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use launch::measure::snp::{launch_digest, vmsa_page};
use launch::plan::snp::{plan_snp, KernelHashesInput, SnpPlanError, SnpPlanOptions, VcpuType, VmmType};
use launch::plan::VcpuState;

const OVMF: &str = "/usr/share/ovmf/OVMF.fd";

/// The last 4 KiB of an AmdSev OVMF build (virtee/sev tests/measurement): its footer
/// has an SNP_KERNEL_HASHES section and a hashes table at 0x810c00.
fn amd_sev_ovmf() -> PathBuf {
    let path = std::env::var_os("CVMM_AMDSEV_OVMF").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from("/work/shared/refs/attestation/virtee-sev__tests_measurement_ovmf_AmdSev_suffix.bin")
    });
    assert!(path.is_file(), "AmdSev OVMF suffix {} is missing (set CVMM_AMDSEV_OVMF)", path.display());
    path
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e} (scripts/setup.sh installs ovmf)", path.display()))
}

/// A small initrd (not a whole number of pages) with varied bytes.
fn test_initrd() -> PathBuf {
    let bytes: Vec<u8> = (0..3 * 1024 * 1024 + 123u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    common::temp_file("initrd.img", &bytes)
}

/// One launch to measure, described as sev-snp-measure's arguments are.
#[derive(Debug, Clone)]
struct Case {
    firmware: PathBuf,
    vcpus: u32,
    vcpu_type: &'static str,
    vmm: &'static str,
    guest_features: u64,
    kernel: Option<PathBuf>,
    initrd: Option<PathBuf>,
    append: Option<&'static str>,
}

impl Case {
    fn qemu(firmware: &Path, vcpus: u32, vcpu_type: &'static str, guest_features: u64) -> Self {
        Case {
            firmware: firmware.to_path_buf(),
            vcpus,
            vcpu_type,
            vmm: "QEMU",
            guest_features,
            kernel: None,
            initrd: None,
            append: None,
        }
    }

    fn args(&self) -> Vec<String> {
        let mut a: Vec<String> = ["--mode", "snp", "--output-format", "hex", "--ovmf"].map(String::from).into();
        a.push(self.firmware.display().to_string());
        a.extend(["--vcpus".into(), self.vcpus.to_string(), "--vcpu-type".into(), self.vcpu_type.into()]);
        a.extend(["--vmm-type".into(), self.vmm.into()]);
        a.extend(["--guest-features".into(), format!("{:#x}", self.guest_features)]);
        if let Some(k) = &self.kernel {
            a.extend(["--kernel".into(), k.display().to_string()]);
        }
        if let Some(i) = &self.initrd {
            a.extend(["--initrd".into(), i.display().to_string()]);
        }
        if let Some(c) = self.append {
            a.extend(["--append".into(), c.into()]);
        }
        a
    }
}

/// sev-snp-measure's digest for `case` (its stderr on failure).
fn sev_snp_measure(case: &Case) -> Result<String, String> {
    let out = Command::new("sev-snp-measure").args(case.args()).output().unwrap_or_else(|e| {
        panic!("cannot run sev-snp-measure ({e}): scripts/setup.sh installs it (pip install sev-snp-measure==0.0.13)")
    });
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// cvmm's digest for `case`.
fn cvmm_digest(case: &Case) -> Result<String, SnpPlanError> {
    let firmware = read(&case.firmware);
    let kernel = case.kernel.as_deref().map(read);
    let initrd = case.initrd.as_deref().map(read);
    let opts = SnpPlanOptions {
        firmware: firmware.as_slice().into(),
        vcpus: case.vcpus,
        vcpu_type: case.vcpu_type.parse()?,
        vmm_type: case.vmm.parse()?,
        guest_features: case.guest_features,
        kernel_hashes: kernel
            .as_deref()
            .map(|kernel| {
                KernelHashesInput { kernel, initrd: initrd.as_deref(), cmdline: case.append.unwrap_or("") }.hashes()
            })
            .transpose()?,
    };
    let plan = plan_snp(&opts)?;
    Ok(hex::encode(launch_digest(&plan).expect("an SNP plan measures")))
}

/// Runs sev-snp-measure for every case on a few threads; results in case order.
fn sev_snp_measure_all(cases: &[Case]) -> Vec<Result<String, String>> {
    let next = AtomicUsize::new(0);
    let results = Mutex::new(vec![None; cases.len()]);
    std::thread::scope(|s| {
        for _ in 0..cases.len().min(8) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(case) = cases.get(i) else { break };
                let r = sev_snp_measure(case);
                results.lock().unwrap()[i] = Some(r);
            });
        }
    });
    results.into_inner().unwrap().into_iter().map(|r| r.expect("every case ran")).collect()
}

/// Asserts cvmm and sev-snp-measure agree on every case, listing every disagreement.
fn assert_all_agree(cases: &[Case]) {
    let theirs = sev_snp_measure_all(cases);
    let mut failures = Vec::new();
    for (case, theirs) in cases.iter().zip(theirs) {
        let theirs = theirs.unwrap_or_else(|e| panic!("sev-snp-measure failed on {case:?}: {e}"));
        let ours = cvmm_digest(case).unwrap_or_else(|e| panic!("cvmm failed on {case:?}: {e}"));
        if ours != theirs {
            failures.push(format!("{:?}\n  sev-snp-measure {theirs}\n  cvmm            {ours}", case.args()));
        }
    }
    assert!(failures.is_empty(), "{} of {} cases disagree:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

#[test]
fn qemu_digests_agree_for_every_vcpu_count_type_and_guest_features() {
    let ovmf = Path::new(OVMF);
    let mut cases = Vec::new();
    for vcpus in [1, 2, 4, 16] {
        for vcpu_type in ["EPYC-v4", "EPYC-Milan", "EPYC-Genoa", "EPYC-Turin"] {
            for gf in [0x0, 0x1] {
                cases.push(Case::qemu(ovmf, vcpus, vcpu_type, gf));
            }
        }
    }

    assert_eq!(cases.len(), 32);
    assert_all_agree(&cases);
}

#[test]
fn ec2_and_gce_digests_agree() {
    let ovmf = Path::new(OVMF);
    let mut cases = Vec::new();
    for vmm in ["ec2", "gce"] {
        for (vcpus, vcpu_type, gf) in [(1, "EPYC-v4", 0x1), (4, "EPYC-Milan", 0x1), (16, "EPYC-Genoa", 0x0)] {
            cases.push(Case { vmm, ..Case::qemu(ovmf, vcpus, vcpu_type, gf) });
        }
    }

    assert_all_agree(&cases);
}

#[test]
fn kernel_hash_digests_agree_with_debian_kernel_initrd_and_cmdline() {
    let fw = amd_sev_ovmf();
    let kernel = common::debian_bzimage();
    let initrd = test_initrd();
    let cmdline = "console=ttyS0 root=/dev/vda1 ro quiet cvmm.test=snp-measure";
    let mut cases = Vec::new();
    for (initrd, append) in [(Some(&initrd), Some(cmdline)), (None, Some(cmdline)), (Some(&initrd), None), (None, None)]
    {
        for (vcpus, vcpu_type, gf) in [(1, "EPYC-v4", 0x1), (4, "EPYC-Milan", 0x21), (2, "EPYC-Genoa", 0x0)] {
            cases.push(Case {
                kernel: Some(kernel.clone()),
                initrd: initrd.cloned(),
                append,
                ..Case::qemu(&fw, vcpus, vcpu_type, gf)
            });
        }
    }
    for vmm in ["ec2", "gce"] {
        cases.push(Case {
            vmm,
            kernel: Some(kernel.clone()),
            initrd: Some(initrd.clone()),
            append: Some(cmdline),
            ..Case::qemu(&fw, 2, "EPYC-Turin", 0x1)
        });
    }

    assert_all_agree(&cases);
}

#[test]
fn kernel_hash_digests_equal_virtee_sev_test_values() {
    // virtee/sev tests/measurement.rs: AmdSev suffix, 1 EPYC-v4 vCPU, kernel and initrd
    // /dev/null (empty), QEMU.
    let fw = amd_sev_ovmf();
    let empty = common::temp_file("empty", b"");
    let refs = [
        (0x1, None, "ddc5224521617a536ee7ce9dd6224d1b58a8d4fda1c741f3ac99fc4bfa04ba6e9fc98646d4a07a9079397fa3852819b5"),
        (
            0x21,
            None,
            "329c8ce0972ae52343b64d34a434a86f245dfd74f5ed7aae15d22efc78fb9683632b9b50e4e1d7fa41179ef98a7ef198",
        ),
        (
            0x1,
            Some("console=ttyS0 loglevel=7"),
            "6d287813eb5222d770f75005c664e34c204f385ce832cc2ce7d0d6f354454362f390ef83a92046c042e706363b4b08fa",
        ),
        (
            0x21,
            Some("console=ttyS0 loglevel=7"),
            "803f691094946e42068aaa3a8f9e26a5c89f36f7b73ecfb28c653360fe4b3aba7e534442e7e1e17895dfe778d0228977",
        ),
    ];
    for (gf, append, expected) in refs {
        let case = Case {
            kernel: Some(empty.clone()),
            initrd: Some(empty.clone()),
            append,
            ..Case::qemu(&fw, 1, "EPYC-v4", gf)
        };

        assert_eq!(cvmm_digest(&case).unwrap(), expected, "{case:?}");
    }
}

#[test]
fn kernel_hashes_on_firmware_without_the_section_fail_in_both() {
    let case = Case {
        kernel: Some(common::debian_bzimage()),
        append: Some("quiet"),
        ..Case::qemu(Path::new(OVMF), 1, "EPYC-v4", 1)
    };

    let theirs = sev_snp_measure(&case);
    let ours = cvmm_digest(&case);

    assert!(theirs.as_ref().is_err_and(|e| e.contains("SNP_KERNEL_HASHES")), "sev-snp-measure: {theirs:?}");
    let err = ours.unwrap_err().to_string();
    assert!(err.contains("SNP_KERNEL_HASHES"), "{err}");
}

#[test]
fn vmsa_pages_equal_sev_snp_measure_dumps() {
    let fw = read(Path::new(OVMF));
    for vmm in ["QEMU", "ec2", "gce"] {
        let case = Case { vmm, ..Case::qemu(Path::new(OVMF), 2, "EPYC-Milan", 0x21) };
        let dir = std::env::temp_dir().join(format!("cvmm-snp-vmsa-{}-{vmm}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = Command::new("sev-snp-measure")
            .args(case.args())
            .arg("--dump-vmsa")
            .current_dir(&dir)
            .output()
            .unwrap_or_else(|e| panic!("cannot run sev-snp-measure ({e}): scripts/setup.sh installs it"));
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let opts = SnpPlanOptions {
            firmware: fw.as_slice().into(),
            vcpus: 2,
            vcpu_type: VcpuType::EpycMilan,
            vmm_type: vmm.parse().unwrap(),
            guest_features: 0x21,
            kernel_hashes: None,
        };

        let plan = plan_snp(&opts).unwrap();

        for (i, v) in plan.vcpus.iter().enumerate() {
            let VcpuState::Snp(v) = v else { panic!("not an SNP vCPU") };
            let theirs = read(&dir.join(format!("vmsa{i}.bin")));
            let ours = vmsa_page(v);
            let diff: Vec<usize> = (0..ours.len()).filter(|&b| theirs.get(b) != Some(&ours[b])).collect();
            assert!(diff.is_empty() && theirs.len() == ours.len(), "{vmm} vCPU {i}: bytes differ at {diff:x?}");
        }
        std::fs::remove_dir_all(&dir).ok();
    }
}

/// The `sev` crate's digest (measurement::snp under crypto_nossl) for a QEMU case.
fn sev_crate_digest(case: &Case) -> String {
    use sev::measurement::snp::{snp_calc_launch_digest, SnpMeasurementArgs};
    use sev::measurement::vcpu_types::CpuType;
    use sev::measurement::vmsa::{GuestFeatures, VMMType};
    use sev::parser::ByteParser;
    assert_eq!(case.vmm, "QEMU", "the sev crate's ec2 VMSA differs from sev-snp-measure's (RDX 0 vs 0x600)");
    let args = SnpMeasurementArgs {
        vcpus: case.vcpus,
        vcpu_type: CpuType::try_from(case.vcpu_type).unwrap(),
        ovmf_file: case.firmware.clone(),
        guest_features: GuestFeatures::from_bytes(&case.guest_features.to_le_bytes()).unwrap(),
        kernel_file: case.kernel.clone(),
        initrd_file: case.initrd.clone(),
        append: case.append,
        ovmf_hash_str: None,
        vmm_type: Some(VMMType::QEMU),
    };
    snp_calc_launch_digest(args).unwrap().get_hex_ld()
}

#[test]
fn qemu_digests_agree_with_the_sev_crate() {
    let ovmf = Path::new(OVMF);
    let fw = amd_sev_ovmf();
    let kernel = common::debian_bzimage();
    let initrd = test_initrd();
    let mut cases = Vec::new();
    for (vcpus, vcpu_type, gf) in
        [(1, "EPYC-v4", 0x1), (4, "EPYC-Milan", 0x0), (16, "EPYC-Genoa", 0x1), (2, "EPYC-Turin", 0x0)]
    {
        cases.push(Case::qemu(ovmf, vcpus, vcpu_type, gf));
    }
    cases.push(Case {
        kernel: Some(kernel.clone()),
        initrd: Some(initrd),
        append: Some("console=ttyS0 quiet"),
        ..Case::qemu(&fw, 4, "EPYC-Milan", 0x1)
    });
    cases.push(Case { kernel: Some(kernel), ..Case::qemu(&fw, 1, "EPYC-v4", 0x1) });

    for case in &cases {
        assert_eq!(cvmm_digest(case).unwrap(), sev_crate_digest(case), "{case:?}");
    }
}

#[test]
fn sixteen_vcpu_measurement_takes_milliseconds() {
    let fw = read(Path::new(OVMF));
    let opts = SnpPlanOptions {
        firmware: fw.as_slice().into(),
        vcpus: 16,
        vcpu_type: VcpuType::EpycGenoa,
        vmm_type: VmmType::Qemu,
        guest_features: 0x1,
        kernel_hashes: None,
    };

    let start = Instant::now();
    let digest = launch_digest(&plan_snp(&opts).unwrap()).unwrap();
    let elapsed = start.elapsed();

    eprintln!("16-vCPU SNP plan + launch digest of {OVMF}: {elapsed:?} ({})", hex::encode(digest));
    assert!(elapsed.as_secs_f64() < 2.0, "{elapsed:?}");
}
