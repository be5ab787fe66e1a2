//! Fuzzes the SEV metadata / reset block / hashes table parsers, the kernel-hashes page
//! and, for inputs whose sections are small, the SNP plan and launch digest built from
//! them. (The digest hashes one SHA-384 block per planned page: sections of millions of
//! pages are parsed and checked, but not hashed, so the fuzzer stays fast.)
#![no_main]

use firmware::sev::{KernelHashes, SevFirmware};
use launch::plan::snp::{plan_snp, SnpPlanOptions, VcpuType, VmmType};
use libfuzzer_sys::fuzz_target;

/// Planned pages above which the digest is not computed.
const MAX_PAGES: u64 = 1024;

fuzz_target!(|data: &[u8]| {
    let Ok(fw) = SevFirmware::parse(data) else { return };
    let _ = fw.kernel_hashes_page(&KernelHashes { cmdline: [1; 32], initrd: [2; 32], kernel: [3; 32] });
    let pages: u64 = fw.sections().iter().map(|s| u64::from(s.size) / 4096).sum::<u64>() + data.len() as u64 / 4096;
    if pages > MAX_PAGES {
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
