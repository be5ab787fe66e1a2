//! Fuzzes the TDVF metadata parser and, for inputs whose measured sections are small,
//! the TDX plan and MRTD built from it. (MRTD hashes 6 KiB per measured page: sections
//! of millions of pages are parsed and checked, but not hashed, so the fuzzer stays
//! fast.)
#![no_main]

use firmware::tdvf::TdvfMetadata;
use launch::plan::tdx::{plan_tdx, TdxPlanOptions};
use libfuzzer_sys::fuzz_target;

/// Planned pages above which MRTD is not computed.
const MAX_PAGES: u64 = 1024;

fuzz_target!(|data: &[u8]| {
    let Ok(metadata) = TdvfMetadata::parse(data) else { return };
    let pages: u64 = metadata.sections.iter().map(|s| s.memory_data_size / 4096).sum();
    if pages > MAX_PAGES {
        return;
    }
    if let Ok(plan) = plan_tdx(&TdxPlanOptions { firmware: data, vcpus: 1 }) {
        let _ = launch::measure::tdx::mrtd(&plan);
    }
});
