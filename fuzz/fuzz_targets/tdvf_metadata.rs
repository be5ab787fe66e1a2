//! Fuzzes the TDVF metadata parser and the TDX plan and MRTD built from an arbitrary
//! firmware image.
#![no_main]

use libfuzzer_sys::fuzz_target;
use launch::plan::tdx::{plan_tdx, TdxPlanOptions};

fuzz_target!(|data: &[u8]| {
    if firmware::tdvf::TdvfMetadata::parse(data).is_err() {
        return;
    }
    if let Ok(plan) = plan_tdx(&TdxPlanOptions { firmware: data, vcpus: 1 }) {
        let _ = launch::measure::tdx::mrtd(&plan);
    }
});
