//! Fuzzes the TDX code behind signatures (ECDSA P-256, X.509), the first byte choosing
//! what: a DCAP quote's verification up to the emulated Intel root
//! (`launch::tdx::quote::Quote::verify`: PCK chain, QE report signature and binding,
//! attestation key signature, the PCK certificate's SGX extensions), and the emulated
//! quoting enclave on TD reports whose MAC and hashes are made right for half of the
//! inputs (`launch::tdx::quote::QuotingEnclave::quote`: what it quotes must verify and
//! carry the report's data). A "crypto" target: slower per input, exempt from the
//! execution goal.
#![no_main]

use std::sync::OnceLock;

use launch::tdx::certs::{EmulatedIntelChain, SgxExtensions};
use launch::tdx::quote::{Quote, QuoteFormat, QuotingEnclave};
use launch::tdx::report::TdReport;
use libfuzzer_sys::fuzz_target;

/// The VMM's emulated Intel chain and its quoting enclave (made once).
fn chain() -> &'static (EmulatedIntelChain, QuotingEnclave) {
    static CHAIN: OnceLock<(EmulatedIntelChain, QuotingEnclave)> = OnceLock::new();
    CHAIN.get_or_init(|| {
        let chain = EmulatedIntelChain::load_or_create_default().expect("Intel chain");
        let qe = QuotingEnclave::new(&chain).expect("quoting enclave");
        (chain, qe)
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else { return };
    let (chain, qe) = chain();
    if selector % 2 == 0 {
        let Ok((quote, _)) = Quote::parse_prefix(rest) else { return };
        if let Ok(pck) = quote.verify(chain.root_der()) {
            let ext = SgxExtensions::from_certificate(&pck).expect("a verified PCK certificate has SGX extensions");
            assert_eq!(&ext, chain.sgx_extensions(), "only the emulated PCK chains up to the emulated root");
        }
        if let Ok(certs) = quote.pck_chain_certs() {
            for cert in &certs {
                let _ = SgxExtensions::from_certificate(cert);
            }
        }
        let _ = (quote.verify_signature(), quote.verify_qe_report_data());
        return;
    }
    // Flags, then a TD report: bit 1 makes its hashes right, bit 0 its MAC (the
    // platform's report key), bit 2 asks for a version 5 quote.
    let Some((&flags, rest)) = rest.split_first() else { return };
    let mut report = [0u8; 1024];
    let n = rest.len().min(1024);
    report[..n].copy_from_slice(&rest[..n]);
    if flags & 2 != 0 {
        let parsed = TdReport::from_bytes(&report).expect("any 1024 bytes are a TD report");
        report[32..80].copy_from_slice(&parsed.tee_tcb_info.hash());
        report[80..128].copy_from_slice(&parsed.td_info.hash());
    }
    if flags & 1 != 0 {
        let mut covered = [0u8; 224];
        covered.copy_from_slice(&report[..224]);
        report[224..256].copy_from_slice(&chain.report_mac_key().mac(&covered));
    }
    let format = if flags & 4 != 0 { QuoteFormat::V5Td15 } else { QuoteFormat::V4 };
    if let Ok(bytes) = qe.quote(&report, format) {
        let quote = Quote::parse(&bytes).expect("the quoting enclave's quote parses");
        quote.verify(chain.root_der()).expect("the quoting enclave's quote verifies");
        assert_eq!(quote.body.report_data, report[128..192], "the quote carries the report's data");
    }
});
