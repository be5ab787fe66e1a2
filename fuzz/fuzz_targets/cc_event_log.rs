//! Fuzzes the CC event log parser and replay (`launch::tdx::ccel`): the bytes are a TD's
//! log area as the ACPI CCEL table names it. Whatever parses replays without panicking,
//! parses again from exactly its used bytes to the same events, and replays to the same
//! RTMRs.
#![no_main]

use launch::tdx::ccel::EventLog;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(log) = EventLog::parse(data) else { return };
    assert!(log.len <= data.len());
    let again = EventLog::parse(&data[..log.len]).expect("the used bytes parse alone");
    assert_eq!(again.events, log.events);
    assert_eq!(again.replay(), log.replay());
});
