//! Fuzzes the TDVF metadata parser, the TDX plan built from it (for every input that
//! parses), and, for plans of a few pages, MRTD. (MRTD hashes 128 bytes per page and
//! 6 KiB more per measured page: sections of millions of pages are parsed, planned and
//! checked, but only small plans are hashed, so the fuzzer stays fast; the hashing code
//! is the same loop whatever the page count.)
#![no_main]

use firmware::tdvf::TdvfMetadata;
use launch::plan::tdx::{plan_tdx, TdxPlanOptions};
use launch::plan::{PageType, TdxPageType};
use libfuzzer_sys::fuzz_target;

/// Planned pages above which MRTD is not computed.
const MAX_PAGES: u64 = 64;
/// Measured pages above which MRTD is not computed.
const MAX_MEASURED_PAGES: u64 = 4;

fuzz_target!(|data: &[u8]| {
    let Ok(metadata) = TdvfMetadata::parse(data) else { return };
    let _ = metadata.td_hob();
    let Ok(plan) = plan_tdx(&TdxPlanOptions { firmware: data, vcpus: 1 }) else { return };
    let (mut pages, mut measured) = (0u64, 0u64);
    for r in &plan.ranges {
        pages = pages.saturating_add(r.pages());
        if r.page_type == PageType::Tdx(TdxPageType::AddMeasured) {
            measured = measured.saturating_add(r.pages());
        }
    }
    if pages <= MAX_PAGES && measured <= MAX_MEASURED_PAGES {
        let _ = launch::measure::tdx::mrtd(&plan);
    }
});
