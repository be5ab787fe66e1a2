//! ACPI tables of confidential guests end to end: the MADT (and for TDX the
//! multiprocessor wakeup structure and the CCEL table) are in the launch plan, covered
//! by the launch digest / MRTD that `cvmm measure` predicts. (That a TD's CPU 1 starts
//! through the MADT's wakeup mailbox and that its CC event log replays to the RTMRs of
//! its quote is checked on the same run as its quote, in tests/tdx_emulated.rs.)

mod common;

use std::time::Duration;

use common::{cvmm, hex_of, numbered_hex};
use launch::plan::{Contents, LaunchPlan, PageType, SnpPageType, TdxPageType};
use vmm::{build_vm, SnpConfig, TdxConfig, Tee, VmConfig};

fn tdx_config(vcpus: u32) -> VmConfig {
    VmConfig {
        tee: Tee::Tdx(TdxConfig::new(true)),
        memory: 64 << 20,
        vcpus,
        timeout: Some(Duration::from_secs(60)),
        ..Default::default()
    }
}

fn snp_config(vcpus: u32) -> VmConfig {
    VmConfig {
        tee: Tee::Snp(SnpConfig { emulated: true, ..Default::default() }),
        memory: 64 << 20,
        vcpus,
        timeout: Some(Duration::from_secs(60)),
        ..Default::default()
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// The bytes of the plan range named `what`, and its index and page type.
fn range<'a>(plan: &'a LaunchPlan, what: &str) -> (usize, u64, &'a [u8], PageType) {
    let (i, r) = plan.ranges.iter().enumerate().find(|(_, r)| r.what == what).unwrap_or_else(|| panic!("no {what}"));
    let Contents::Bytes(b) = &r.contents else { panic!("{what} has no bytes") };
    (i, r.gpa, b, r.page_type)
}

/// What a guest OS reads from the tables at `gpa` (the ACPI block of the plan):
/// (number of enabled local APICs, wakeup mailbox, CCEL (LAML, LASA, CC type)),
/// following RSDP -> XSDT -> tables and checking every checksum, as read here from the
/// ACPI specification's offsets.
fn read_tables(base: u64, block: &[u8]) -> (u32, Option<u64>, Option<(u64, u64, u8)>) {
    let sum = |b: &[u8]| b.iter().fold(0u8, |a, x| a.wrapping_add(*x));
    let at = |gpa: u64| (gpa - base) as usize;
    assert_eq!(&block[..8], b"RSD PTR ");
    assert_eq!((sum(&block[..20]), sum(&block[..36]), block[15]), (0, 0, 2));
    let xsdt = at(u64_at(block, 24));
    let table = |off: usize| {
        let t = &block[off..off + u32_at(block, off + 4) as usize];
        assert_eq!(sum(t), 0, "checksum of {}", String::from_utf8_lossy(&t[..4]));
        t
    };
    let x = table(xsdt);
    assert_eq!(&x[..4], b"XSDT");
    let (mut cpus, mut mailbox, mut ccel) = (0, None, None);
    for e in (36..x.len()).step_by(8) {
        let t = table(at(u64_at(x, e)));
        match &t[..4] {
            b"APIC" => {
                let mut o = 44;
                while o < t.len() {
                    match t[o] {
                        0 if u32_at(t, o + 4) & 1 == 1 => cpus += 1,
                        0x10 => mailbox = Some(u64_at(t, o + 8)),
                        _ => {}
                    }
                    o += t[o + 1] as usize;
                }
            }
            b"CCEL" => ccel = Some((u64_at(t, 40), u64_at(t, 48), t[36])),
            other => panic!("unexpected table {}", String::from_utf8_lossy(other)),
        }
    }
    (cpus, mailbox, ccel)
}

#[test]
fn mrtd_covers_the_madt_wakeup_structure_and_ccel_and_equals_the_launch() {
    // Arrange
    let (plan1, mrtd1) = vmm::tdx_measurement(&tdx_config(1)).unwrap();
    let (plan2, mrtd2) = vmm::tdx_measurement(&tdx_config(2)).unwrap();

    // Assert: the tables describe the VM, and every byte of them is measured.
    for (plan, vcpus) in [(&plan1, 1), (&plan2, 2)] {
        let (_, gpa, bytes, page_type) = range(plan, "ACPI tables");
        assert_eq!((gpa, page_type), (0xe_0000, PageType::Tdx(TdxPageType::AddMeasured)));
        let (cpus, mailbox, ccel) = read_tables(gpa, bytes);
        assert_eq!(cpus, vcpus);
        let mailbox = mailbox.expect("a wakeup mailbox");
        let (laml, lasa, cc_type) = ccel.expect("a CCEL table");
        assert_eq!(cc_type, 2, "CC type TDX");
        for (start, len) in [(mailbox, 0x1000), (lasa, laml)] {
            let r = plan.ranges.iter().find(|r| r.gpa == start).expect("the mailbox and log area are in the plan");
            assert_eq!((r.len, r.page_type, &r.contents), (len, page_type, &Contents::Zero));
        }
        let (_, _, info, _) = range(plan, "boot info");
        assert_eq!(u64_at(info, 0x148), gpa, "the boot info names the RSDP");
    }
    assert_ne!(mrtd1, mrtd2);
    let (i, _, bytes, _) = range(&plan2, "ACPI tables");
    let mut other = plan2.clone();
    let mut changed = bytes.to_vec();
    changed[0x100 + 44 + 3] ^= 1; // CPU 0's APIC ID
    other.ranges[i].contents = Contents::Bytes(changed.into());
    assert_ne!(launch::measure::tdx::mrtd(&other).unwrap(), mrtd2, "the tables are measured");

    // Act / Assert: the launch measures what the calculator predicts.
    let vm = build_vm(&tdx_config(2), Box::new(std::io::sink())).unwrap();
    assert_eq!(vm.launch_measurement().unwrap(), mrtd2);
}

#[test]
fn the_snp_launch_digest_covers_the_madt_and_equals_the_launch() {
    let (plan1, digest1) = vmm::snp_measurement(&snp_config(1)).unwrap();
    let (plan3, digest3) = vmm::snp_measurement(&snp_config(3)).unwrap();
    for (plan, vcpus) in [(&plan1, 1), (&plan3, 3)] {
        let (_, gpa, bytes, page_type) = range(plan, "ACPI tables");
        assert_eq!((gpa, page_type), (0xe_0000, PageType::Snp(SnpPageType::Normal)));
        assert_eq!(read_tables(gpa, bytes), (vcpus, None, None), "a MADT only, no wakeup mailbox");
        let (_, _, info, _) = range(plan, "boot info");
        assert_eq!(u64_at(info, 0x148), gpa);
    }
    assert_ne!(digest1, digest3);
    let (i, _, bytes, _) = range(&plan3, "ACPI tables");
    let mut other = plan3.clone();
    let mut changed = bytes.to_vec();
    changed[0x100 + 36] ^= 1; // the local APIC address
    other.ranges[i].contents = Contents::Bytes(changed.into());
    assert_ne!(launch::measure::snp::launch_digest(&other).unwrap(), digest3, "the tables are measured");

    let vm = build_vm(&snp_config(3), Box::new(std::io::sink())).unwrap();
    assert_eq!(vm.launch_measurement().unwrap(), digest3);
    let out =
        cvmm().args(["measure", "--tee", "snp", "--emulated", "--memory", "64M", "--vcpus", "3"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), hex_of(&digest3));
}

#[test]
fn an_snp_guest_finds_its_cpus_in_the_madt() {
    let out = cvmm()
        .args(["run", "--tee", "snp", "--emulated", "--memory", "64M", "--vcpus", "2", "--timeout", "60"])
        .output()
        .unwrap();
    let console = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "console: {console}\nstderr: {}", String::from_utf8_lossy(&out.stderr));
    assert!(console.contains("\nacpi: MADT lists 2 CPUs\n"), "{console}");
}

/// The lines of `text` after `prefix`.
#[test]
fn a_single_vcpu_td_wakes_no_cpu_and_still_logs_its_measurement() {
    let out =
        cvmm().args(["run", "--tee", "tdx", "--emulated", "--memory", "64M", "--timeout", "60"]).output().unwrap();
    let console = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "console: {console}\nstderr: {}", String::from_utf8_lossy(&out.stderr));
    assert!(console.contains("\nacpi: MADT lists 1 CPUs\n") && !console.contains("woke"), "{console}");
    let log = launch::tdx::ccel::EventLog::parse(&numbered_hex(&console, "ccel: ")).unwrap();
    assert_eq!(log.events.len(), 1);
}
