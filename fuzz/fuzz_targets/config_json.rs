//! Fuzzes the JSON VM configuration parser (`cvmm run --config`) and its round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(config) = vmm::VmConfig::from_json(text) {
        let _ = config.validate();
        let again = vmm::VmConfig::from_json(&config.to_json()).expect("printed configurations read back");
        assert_eq!(again, config, "round trip");
    }
});
