//! TDX MRTD of Debian 12's OVMF.fd, computed from cvmm's launch plan, checked against
//! the value four third-party calculators agree on (../shared/refs/measurements.md).

use launch::measure::tdx::{mrtd, replay};
use launch::plan::tdx::{plan_tdx, TdxPlanOptions};

/// Debian 12 ovmf 2022.11-6+deb12u2, /usr/share/ovmf/OVMF.fd: td-shim tee-info-hash
/// (Python and Rust), gce-tcb-verifier and dstack-mr, single-pass order (each page's
/// TDH.MEM.PAGE.ADD, then its 16 TDH.MR.EXTENDs, as KVM_TDX_INIT_MEM_REGION does).
const DEBIAN_OVMF_MRTD: &str =
    "4c7206f0f483c524f12c366c711e9049030a8d47c471ee5aa9c4999a08de4057fb887fed0744d5631a212967fb231c47";
/// The same calculators' two-pass order (a section's adds, then its extends): not what
/// KVM does, so cvmm must not produce it.
const TWO_PASS_MRTD: &str =
    "acccbcc870a381adab0d3919d90a7f268ac3b0364771f202ed4bb4e892d045b33db3b32e6924cba830a724eed443f7e1";

fn debian_ovmf() -> Vec<u8> {
    std::fs::read("/usr/share/ovmf/OVMF.fd")
        .expect("/usr/share/ovmf/OVMF.fd is missing: apt-get install ovmf (scripts/test.sh does)")
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn debian_ovmf_mrtd_matches_the_third_party_value() {
    // Arrange
    let image = debian_ovmf();
    let plan = plan_tdx(&TdxPlanOptions { firmware: &image, vcpus: 1 }).unwrap();
    // Act
    let got = to_hex(&mrtd(&plan).unwrap());
    // Assert
    assert_eq!(got, DEBIAN_OVMF_MRTD);
    assert_ne!(got, TWO_PASS_MRTD);
}

#[test]
fn debian_ovmf_launch_adds_538_pages_and_extends_7680_chunks() {
    let image = debian_ovmf();
    let plan = plan_tdx(&TdxPlanOptions { firmware: &image, vcpus: 1 }).unwrap();
    let replayed = replay(&plan).unwrap();
    assert_eq!((replayed.page_adds(), replayed.mr_extends()), (538, 7680));
}

#[test]
fn mrtd_does_not_depend_on_the_vcpu_count() {
    let image = debian_ovmf();
    let of = |vcpus| to_hex(&mrtd(&plan_tdx(&TdxPlanOptions { firmware: &image, vcpus }).unwrap()).unwrap());
    assert_eq!(of(4), DEBIAN_OVMF_MRTD);
    assert_eq!(of(64), DEBIAN_OVMF_MRTD);
}
