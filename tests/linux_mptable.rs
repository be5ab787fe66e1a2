//! A real Linux kernel reads cvmm's MP table: it finds the MultiProcessor
//! Specification 1.4 tables, every vCPU's processor entry and the IOAPIC with its 24
//! GSIs, which is what makes it route device interrupts through the IOAPIC.
//!
//! The tiny test kernel (scripts/build-test-kernel.sh) prints all of this a few seconds
//! into its boot; the test stops the VM as soon as the IOAPIC line appears. A missing
//! kernel fails the test with the command that builds it (never a skip).

mod common;

const CMDLINE: &str = "console=ttyS0 earlyprintk=serial noxsave nofsgsbase clearcpuid=308,151,59,534,298";

/// Boots the test kernel with `vcpus` vCPUs and returns its console lines up to and
/// including the first one for which `last` holds, then stops the VM.
fn boot_linux_until(vcpus: u32, last: impl Fn(&str) -> bool) -> Vec<String> {
    let vcpus = vcpus.to_string();
    let args = ["--memory", "256M", "--vcpus", vcpus.as_str(), "--cmdline", CMDLINE];
    common::boot_linux_until(&args, |lines| lines.last().is_some_and(|l| last(l))).lines
}

#[test]
fn linux_finds_the_mp_table_its_processors_and_the_ioapic_with_24_gsis() {
    let lines = boot_linux_until(2, |l| l.starts_with("IOAPIC[0]: "));
    let has = |text: &str| lines.iter().any(|l| l.trim_end() == text);
    let console = lines.join("\n");

    assert!(lines.iter().any(|l| l.starts_with("found SMP MP-table at [mem 0x0009fc00-")), "no MP table:\n{console}");
    assert!(has("Intel MultiProcessor Specification v1.4"), "no MP 1.4 line:\n{console}");
    assert!(has("MPTABLE: OEM ID: CVMM"), "OEM ID:\n{console}");
    assert!(has("MPTABLE: Product ID: CVMM-VM"), "product ID:\n{console}");
    assert!(has("MPTABLE: APIC at: 0xFEE00000"), "local APIC address:\n{console}");
    // Both processor entries are read (the test kernel is built without SMP, so it
    // then ignores the second one).
    assert!(has("Processor #0 (Bootup-CPU)"), "BSP entry:\n{console}");
    assert!(has("Processor #1"), "AP entry:\n{console}");
    assert_eq!(
        lines.last().unwrap(),
        "IOAPIC[0]: apic_id 2, version 17, address 0xfec00000, GSI 0-23",
        "the IOAPIC, with an ID above the vCPUs' APIC IDs and 24 pins:\n{console}"
    );
}
