//! Fuzzes the SEV metadata / reset block / hashes table parsers, the kernel-hashes page,
//! the SNP plan built from them (for every input that parses; the image's first byte,
//! which the parsers do not read, picks the VMM type and whether kernel hashes are
//! measured), and, for plans of a few pages, the launch digest. (The digest hashes one
//! SHA-384 block per planned page and 4 KiB more per firmware page: sections of
//! millions of pages are parsed, planned and checked, but only small plans are hashed,
//! so the fuzzer stays fast; the hashing code is the same loop whatever the page count.)
#![no_main]

use firmware::sev::{KernelHashes, SevFirmware};
use launch::plan::snp::{plan_snp, SnpPlanOptions, VcpuType, VmmType};
use libfuzzer_sys::fuzz_target;

/// Planned pages above which the digest is not computed.
const MAX_PAGES: u64 = 64;

fuzz_target!(|data: &[u8]| {
    let Ok(fw) = SevFirmware::parse(data) else { return };
    let hashes = KernelHashes { cmdline: [1; 32], initrd: [2; 32], kernel: [3; 32] };
    let _ = fw.kernel_hashes_page(&hashes);
    let knobs = data.first().copied().unwrap_or(0);
    let opts = SnpPlanOptions {
        firmware: data.into(),
        vcpus: 2,
        vcpu_type: VcpuType::EpycV4,
        vmm_type: [VmmType::Qemu, VmmType::Ec2, VmmType::Gce][usize::from(knobs % 3)],
        guest_features: 1,
        kernel_hashes: (knobs & 4 != 0).then_some(hashes),
    };
    let Ok(plan) = plan_snp(&opts) else { return };
    let pages = plan.ranges.iter().fold(0u64, |n, r| n.saturating_add(r.pages()));
    if pages <= MAX_PAGES {
        let _ = launch::measure::snp::launch_digest(&plan);
    }
});
