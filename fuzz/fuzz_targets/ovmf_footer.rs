//! Fuzzes the OVMF footer GUID table parser with arbitrary firmware images.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(table) = firmware::ovmf::FooterTable::parse(data) {
        for (guid, _) in table.entries() {
            let _ = table.entry_u32(guid);
        }
    }
});
