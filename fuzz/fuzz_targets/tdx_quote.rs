//! Fuzzes the relying party's TDX parsers (`launch::verify::tdx`): DCAP quotes
//! (versions 4 and 5, any body type, any signature data) with their JSON form, the
//! evidence type detection, and the collateral JSON.
#![no_main]

use launch::verify::tdx::{Collateral, TdxQuote};
use launch::verify::Evidence;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(quote) = TdxQuote::parse(data) {
        let _ = quote.to_json();
        assert_eq!(quote.bytes().len() + quote.trailing, data.len());
    }
    if let Ok(evidence) = Evidence::parse(data) {
        let _ = evidence.to_json();
    }
    let _ = Collateral::from_json(data);
});
