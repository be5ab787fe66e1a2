//! Fuzzes IGVM parsing and its conversion to SNP and TDX launch plans.
#![no_main]

use launch::plan::igvm::{plan_igvm, IgvmTarget};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = plan_igvm(data, IgvmTarget::Snp);
    let _ = plan_igvm(data, IgvmTarget::Tdx);
});
