//! Fuzzes the SEV metadata / reset block / hashes table parsers and the SNP plan built
//! from an arbitrary firmware image.
#![no_main]

use libfuzzer_sys::fuzz_target;
use launch::plan::snp::{plan_snp, SnpPlanOptions, VcpuType, VmmType};

fuzz_target!(|data: &[u8]| {
    if firmware::sev::SevFirmware::parse(data).is_err() {
        return;
    }
    let opts = SnpPlanOptions {
        firmware: data.into(),
        vcpus: 2,
        vcpu_type: VcpuType::EpycV4,
        vmm_type: VmmType::Qemu,
        guest_features: 1,
        kernel_hashes: None,
    };
    if let Ok(plan) = plan_snp(&opts) {
        let _ = launch::measure::snp::launch_digest(&plan);
    }
});
