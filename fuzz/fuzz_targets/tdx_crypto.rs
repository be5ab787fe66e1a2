//! Fuzzes the TDX code behind signatures (ECDSA P-256, X.509), the first byte choosing
//! what: a DCAP quote's verification up to the emulated Intel root
//! (`launch::tdx::quote::Quote::verify`: PCK chain, QE report signature and binding,
//! attestation key signature, the PCK certificate's SGX extensions), and the emulated
//! quoting enclave on TD reports whose MAC and hashes are made right for half of the
//! inputs (`launch::tdx::quote::QuotingEnclave::quote`: what it quotes must verify and
//! carry the report's data). A "crypto" target: slower per input; its goal is 1 M
//! executions (issue 9), not 10 M.
#![no_main]

use std::sync::OnceLock;

use launch::tdx::certs::{EmulatedIntelChain, SgxExtensions};
use launch::tdx::quote::{Quote, QuoteFormat, QuotingEnclave};
use launch::tdx::report::TdReport;
use libfuzzer_sys::fuzz_target;
use p256::ecdsa::VerifyingKey;

/// The VMM's emulated Intel chain, its quoting enclave, and the PCK chain the enclave
/// puts in its quotes with the PCK key it verifies to (made and verified once).
struct Emulated {
    chain: EmulatedIntelChain,
    qe: QuotingEnclave,
    pck_chain: Vec<u8>,
    pck: VerifyingKey,
}

fn emulated() -> &'static Emulated {
    static EMULATED: OnceLock<Emulated> = OnceLock::new();
    EMULATED.get_or_init(|| {
        let chain = EmulatedIntelChain::load_or_create_default().expect("Intel chain");
        let qe = QuotingEnclave::new(&chain).expect("quoting enclave");
        let mut report = [0u8; 1024];
        report[0] = launch::tdx::report::TDX_REPORT_TYPE;
        let mut mac_covered = [0u8; 224];
        let parsed = TdReport::from_bytes(&report).expect("a TD report");
        report[32..80].copy_from_slice(&parsed.tee_tcb_info.hash());
        report[80..128].copy_from_slice(&parsed.td_info.hash());
        mac_covered.copy_from_slice(&report[..224]);
        report[224..256].copy_from_slice(&chain.report_mac_key().mac(&mac_covered));
        let quote = Quote::parse(&qe.quote(&report, QuoteFormat::V4).expect("a quote")).expect("it parses");
        let pck_cert = quote.verify(chain.root_der()).expect("the enclave's quotes verify");
        let pck = VerifyingKey::from_sec1_bytes(pck_cert.tbs_certificate.subject_public_key_info.subject_public_key.raw_bytes())
            .expect("a P-256 PCK key");
        Emulated { chain, qe, pck_chain: quote.pck_chain.clone(), pck }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else { return };
    let Emulated { chain, qe, pck_chain, pck } = emulated();
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
        // Quote::verify, with the chain checked once in `emulated()`: the same chain,
        // the PCK's signature over the QE report, the binding, the quote's signature.
        assert_eq!(&quote.pck_chain, pck_chain, "the enclave's quotes carry its PCK chain");
        quote.verify_qe_report_signature(pck).expect("the PCK signs the QE report");
        quote.verify_qe_report_data().expect("the QE report binds the attestation key");
        quote.verify_signature().expect("the attestation key signs the quote");
        assert_eq!(quote.body.report_data, report[128..192], "the quote carries the report's data");
    }
});
