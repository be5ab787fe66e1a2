//! Fuzzes the TDX formats cvmm parses without signatures, the first byte choosing the
//! parser: DCAP quotes (`launch::tdx::quote::Quote::parse` and `parse_prefix`), TD reports
//! and the quoting enclave's check of them (`launch::tdx::report`: the MAC is made right
//! for half of the inputs so the hash checks behind it run too), the PCK certificate's
//! SGX extensions (`launch::tdx::certs::SgxExtensions::from_der`), and the real TDX
//! launch's exits (`launch::tdx::kvm`): the forwarded TDG.VP.VMCALLs with GetQuote's
//! shared buffer, ReportFatalError, the quote service's answer, and the `tdx-guest`
//! options. What parses must print back to the same bytes (or value).
#![no_main]

use std::sync::{Arc, Mutex};

use launch::tdx::certs::SgxExtensions;
use launch::tdx::kvm::exits::{TdxExitAction, TdxExitHandler, TdxFatalError};
use launch::tdx::kvm::ioctl::TdxCapabilities;
use launch::tdx::kvm::options::TdxKvmOptions;
use launch::tdx::kvm::quote::{
    complete, decode_get_quote_response, GetQuoteHeader, GuestAccessError, QgsError, QuoteRequest, QuoteService,
    SharedGuestMemory,
};
use launch::tdx::kvm::uapi::{tdvmcall, tdvmcall_status, KvmTdxExit, KvmTdxExitArgs, TdxExitUnknown};
use launch::tdx::quote::{Quote, SgxReportBody};
use launch::tdx::report::{verify_td_report, ReportMacKey, TdReport};
use libfuzzer_sys::fuzz_target;

/// `data` cut or zero-padded to `N` bytes.
fn padded<const N: usize>(data: &[u8]) -> [u8; N] {
    let mut b = [0u8; N];
    let n = data.len().min(N);
    b[..n].copy_from_slice(&data[..n]);
    b
}

/// The little-endian u64s of `data` (a short tail is zero-padded).
fn words(data: &[u8]) -> Vec<u64> {
    data.chunks(8).map(|c| u64::from_le_bytes(padded::<8>(c))).collect()
}

/// A TD's memory as GetQuote sees it: `bytes` from `base`, shared where `shared` says.
struct Memory {
    base: u64,
    shared: (u64, u64),
    bytes: Mutex<Vec<u8>>,
}

impl Memory {
    fn range(&self, gpa: u64, len: usize) -> Option<std::ops::Range<usize>> {
        let start = usize::try_from(gpa.checked_sub(self.base)?).ok()?;
        let end = start.checked_add(len)?;
        (end <= self.bytes.lock().ok()?.len() && self.is_shared(gpa, len as u64)).then_some(start..end)
    }
}

impl SharedGuestMemory for Memory {
    fn is_shared(&self, gpa: u64, len: u64) -> bool {
        gpa >= self.shared.0 && gpa.checked_add(len).is_some_and(|end| end <= self.shared.1)
    }
    fn read_shared(&self, gpa: u64, buf: &mut [u8]) -> Result<(), GuestAccessError> {
        let r = self.range(gpa, buf.len()).ok_or(GuestAccessError { gpa, len: buf.len() })?;
        buf.copy_from_slice(&self.bytes.lock().map_err(|_| GuestAccessError { gpa, len: 0 })?[r]);
        Ok(())
    }
    fn write_shared(&self, gpa: u64, bytes: &[u8]) -> Result<(), GuestAccessError> {
        let r = self.range(gpa, bytes.len()).ok_or(GuestAccessError { gpa, len: bytes.len() })?;
        self.bytes.lock().map_err(|_| GuestAccessError { gpa, len: 0 })?[r].copy_from_slice(bytes);
        Ok(())
    }
}

fn capabilities(w: &[u64]) -> TdxCapabilities {
    let at = |i: usize| w.get(i).copied().unwrap_or(0);
    TdxCapabilities {
        supported_attrs: 0,
        supported_xfam: 0,
        kernel_tdvmcallinfo_1_r11: at(0),
        user_tdvmcallinfo_1_r11: at(1),
        kernel_tdvmcallinfo_1_r12: at(2),
        user_tdvmcallinfo_1_r12: 0,
        cpuid_configs: Vec::new(),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else { return };
    match selector % 7 {
        0 => {
            if let Ok((quote, len)) = Quote::parse_prefix(rest) {
                assert_eq!(quote.to_bytes().expect("a parsed quote prints"), &rest[..len], "a quote prints back");
                assert_eq!(Quote::parse(rest).is_ok(), len == rest.len());
                let body = quote.qe_report_body();
                assert_eq!(SgxReportBody::from_bytes(&body.to_bytes()), body);
                let _ = (quote.qe_id(), quote.signed_bytes(), quote.verify_qe_report_data());
            }
        }
        1 => {
            // Flags, then the report. Bit 1: the two hashes are made right (of the parsed
            // TEE_TCB_INFO and TDINFO); bit 0: the MAC over the first 224 bytes is too.
            let Some((&flags, rest)) = rest.split_first() else { return };
            let mut report = padded::<1024>(rest);
            let key = ReportMacKey::derive(b"cvmm fuzz", b"report");
            if flags & 2 != 0 {
                let parsed = TdReport::from_bytes(&report).expect("any 1024 bytes are a TD report");
                report[32..80].copy_from_slice(&parsed.tee_tcb_info.hash());
                report[80..128].copy_from_slice(&parsed.td_info.hash());
            }
            if flags & 1 != 0 {
                let mac = key.mac(&padded(&report));
                report[224..256].copy_from_slice(&mac);
            }
            let parsed = TdReport::from_bytes(&report).expect("any 1024 bytes are a TD report");
            assert_eq!(TdReport::from_bytes(&parsed.to_bytes()).ok(), Some(parsed), "a TD report reads back");
            if let Ok(checked) = verify_td_report(&report, &key) {
                assert_eq!(checked, parsed);
                assert_eq!(checked.tee_tcb_info.hash(), checked.mac_struct.tee_tcb_info_hash);
                assert_eq!(checked.td_info.hash(), checked.mac_struct.tee_info_hash);
            }
            let _ = TdReport::from_bytes(rest);
        }
        2 => {
            if let Ok(ext) = SgxExtensions::from_der(rest) {
                let der = ext.to_der().expect("parsed extensions print");
                assert_eq!(SgxExtensions::from_der(&der).as_ref(), Ok(&ext), "SGX extensions read back");
            }
        }
        3 => {
            let w = words(rest);
            let event_type = w.first().map_or(0, |v| *v as u32 % 10);
            if let Some(e) = TdxFatalError::from_system_event(event_type, w.get(1..).unwrap_or_default()) {
                let _ = e.to_string();
            }
        }
        4 => {
            if let Ok(quote) = decode_get_quote_response(rest) {
                assert!(quote.len() + 24 <= rest.len());
            }
            let Ok(text) = std::str::from_utf8(rest) else { return };
            let _ = TdxKvmOptions::parse(text);
            let _ = TdxKvmOptions::parse_json(text);
        }
        _ => {
            // A forwarded TDG.VP.VMCALL: nr selector, arguments, capabilities, the vCPU's
            // APIC ID and the GPA width, then the TD's memory (from 0x10000, shared from
            // a page the input picks).
            let (head, mem_bytes) = rest.split_at(rest.len().min(8 * 12));
            let w = words(head);
            let at = |i: usize| w.get(i).copied().unwrap_or(0);
            let nr = match at(0) % 5 {
                0 => tdvmcall::GET_QUOTE,
                1 => tdvmcall::SETUP_EVENT_NOTIFY_INTERRUPT,
                2 => tdvmcall::GET_TD_VM_CALL_INFO,
                3 => tdvmcall::MAP_GPA,
                _ => at(0),
            };
            let base = 0x1_0000;
            let small = |v: u64| if v & 1 == 0 { base + (v >> 1) % 0x4000 } else { v >> 1 };
            let unknown = TdxExitUnknown {
                ret: tdvmcall_status::SUBFUNC_UNSUPPORTED,
                data: [small(at(1)), small(at(2)), at(3), 0, 0],
            };
            let mut exit = KvmTdxExit { flags: 0, nr, u: KvmTdxExitArgs { unknown } };
            let shared_from = base + (at(4) % 8) * 0x1000;
            let mut bytes = mem_bytes.to_vec();
            bytes.resize(0x8000, 0);
            let mem = Arc::new(Memory { base, shared: (shared_from, base + 0x8000), bytes: Mutex::new(bytes) });
            let injector = Arc::new(|_| Ok(()));
            let gpaw = if at(5) & 1 == 0 { 48 } else { 52 };
            let handler = TdxExitHandler::with_quote_service(
                capabilities(&w[w.len().min(6)..]),
                gpaw,
                QuoteService::new(None),
                injector,
            );
            let call = exit.call();
            let action = handler.handle(&mut exit, at(9) as u32, mem.clone());
            match action {
                TdxExitAction::Refused { status, .. } => assert_eq!(exit.ret(), status),
                _ => assert_eq!(exit.ret(), tdvmcall_status::SUCCESS, "{call:?}"),
            }
            // The same buffer as a request whose quote comes back (or does not).
            if let Ok(req) = QuoteRequest::parse(small(at(1)), small(at(2)), 1 << (gpaw - 1), &*mem) {
                assert!(req.report.len() + GetQuoteHeader::SIZE <= req.size as usize);
                let quote = mem_bytes.get(..(at(10) % 0x3000) as usize).unwrap_or(mem_bytes).to_vec();
                let result = match at(11) % 3 {
                    0 => Ok(quote),
                    1 => Err(QgsError::Response("fuzz".into())),
                    _ => Err(QgsError::Io(std::io::Error::other("fuzz"))),
                };
                let _ = complete(&*mem, &req, result);
                let mut header = [0u8; GetQuoteHeader::SIZE];
                if mem.read_shared(req.gpa, &mut header).is_ok() {
                    assert_eq!(GetQuoteHeader::from_bytes(&header).to_bytes(), header);
                }
            }
        }
    }
});
