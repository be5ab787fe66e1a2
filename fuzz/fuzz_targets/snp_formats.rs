//! Fuzzes the SEV-SNP formats cvmm parses without cryptography, the first byte choosing
//! the parser: attestation reports (`launch::snp::report`), CPUID pages and the firmware's
//! check of them (`launch::snp::cpuid_page`, `launch::snp::kvm::cpuid_entries`), ID blocks
//! and ID auth structures (`launch::snp::id_block`), VMSAs (`launch::measure::snp`), the
//! `sev-snp-guest` options and policies (`launch::snp::kvm::options`, `launch::snp::policy`),
//! termination and conversion exits (`launch::snp::kvm::exits`, `launch::private_memory`),
//! certificate tables and blobs, secrets pages and guest-message payloads
//! (`launch::snp::guest_msg`, `launch::snp::secrets`). What parses must print back to
//! the same bytes (or to bytes that parse to the same value).
#![no_main]

use std::sync::OnceLock;

use launch::measure::snp::{parse_vmsa, vmsa_page, VMSA_SIZE};
use launch::private_memory::{Conversion, GuestRange};
use launch::snp::cpuid_page::{CpuidPage, CpuidPlatform, CPUID_PAGE_SIZE};
use launch::snp::guest_msg::{build_cert_table, parse_cert_table, ReportRequest, ReportResponse};
use launch::snp::id_block::{IdAuth, IdBlock, ID_AUTH_SIZE};
use launch::snp::kvm::exits::{reason_name, CertBlob, SevTermination};
use launch::snp::kvm::options::SnpKvmOptions;
use launch::snp::policy::{PolicyHost, SnpPolicy};
use launch::snp::report::AttestationReport;
use launch::snp::secrets::{SecretsPage, SECRETS_PAGE_SIZE};
use libfuzzer_sys::fuzz_target;

/// `data` cut or zero-padded to `N` bytes.
fn padded<const N: usize>(data: &[u8]) -> Box<[u8; N]> {
    let mut b = Box::new([0u8; N]);
    let n = data.len().min(N);
    b[..n].copy_from_slice(&data[..n]);
    b
}

/// The little-endian u64s of `data` (a short tail is zero-padded).
fn words(data: &[u8]) -> Vec<u64> {
    data.chunks(8).map(|c| u64::from_le_bytes(*padded::<8>(c))).collect()
}

/// The host's CPUID as the firmware would check a CPUID page against it (read once).
fn platform() -> &'static CpuidPlatform {
    static PLATFORM: OnceLock<CpuidPlatform> = OnceLock::new();
    PLATFORM.get_or_init(CpuidPlatform::host)
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else { return };
    match selector % 10 {
        0 => {
            if let Ok(report) = AttestationReport::from_bytes(rest) {
                assert_eq!(&report.to_bytes()[..], rest, "an attestation report prints back to its bytes");
                let _ = report.signature();
            }
        }
        1 => {
            let page = padded::<CPUID_PAGE_SIZE>(rest);
            let _ = launch::snp::kvm::cpuid_entries(&page);
            if let Ok(cpuid) = CpuidPage::from_bytes(&page[..]) {
                let again = CpuidPage::from_bytes(&cpuid.to_bytes()[..]).expect("a printed CPUID page parses");
                assert_eq!(again.entries(), cpuid.entries());
                let check = cpuid.check(platform());
                assert_eq!(check.mismatches.is_empty(), cpuid.validate(platform()).is_ok());
                // The page the firmware writes back is one it accepts.
                assert!(check.corrected.check(platform()).mismatches.is_empty(), "the corrected page is accepted");
                let _ = cpuid.mismatches(&check.corrected);
            }
        }
        2 => {
            if let Ok(block) = IdBlock::from_bytes(rest) {
                assert_eq!(&block.to_bytes()[..], rest, "an ID block prints back to its bytes");
            }
            if rest.len() <= ID_AUTH_SIZE {
                let auth = IdAuth::from_bytes(&padded::<ID_AUTH_SIZE>(rest)[..]).expect("any 4 KiB is an ID auth");
                let again = IdAuth::from_bytes(&auth.to_bytes()[..]).expect("a printed ID auth parses");
                assert!(again == auth, "an ID auth reads back");
                let _ = (auth.id_block_sig.to_signature(), auth.id_key_sig.to_signature(), auth.id_key.curve());
            }
            if let Ok(text) = std::str::from_utf8(rest) {
                if let Ok(block) = IdBlock::from_base64(text) {
                    assert_eq!(IdBlock::from_base64(&block.to_base64()).ok(), Some(block));
                }
                let _ = IdAuth::from_base64(text);
            }
        }
        3 => {
            let vcpu = parse_vmsa(&padded::<VMSA_SIZE>(rest));
            assert_eq!(parse_vmsa(&vmsa_page(&vcpu)), vcpu, "a VMSA made from a parsed one parses the same");
        }
        4 => {
            let Ok(text) = std::str::from_utf8(rest) else { return };
            if let Ok(opts) = SnpKvmOptions::parse(text) {
                opts.check().expect("parsed options pass their checks");
            }
            if let Ok(policy) = SnpPolicy::parse(text) {
                assert_eq!(SnpPolicy::parse(&format!("{:#x}", policy.bits())).ok(), Some(policy));
                for (smt, debug) in [(false, false), (true, true)] {
                    let _ = policy.validate(&PolicyHost::new(smt, debug, 1, 55));
                }
            }
        }
        5 => {
            let w = words(rest);
            let event_type = w.first().map_or(0, |v| *v as u32 % 8);
            if let Some(t) = SevTermination::from_system_event(event_type, w.get(1..).unwrap_or_default()) {
                let _ = t.to_string();
            }
            let _ = reason_name(rest.get(1).copied().unwrap_or(0) % 3, rest.get(2).copied().unwrap_or(0) % 12);
        }
        6 => {
            // nr, args[6], flags, gpa, size, then RAM ranges (start, length).
            let w = words(rest);
            let at = |i: usize| w.get(i).copied().unwrap_or(0);
            let ram: Vec<GuestRange> = w
                .get(10..)
                .unwrap_or_default()
                .chunks(2)
                .map(|c| GuestRange { gpa: c[0], len: c.get(1).copied().unwrap_or(0) })
                .collect();
            let args = [at(1), at(2), at(3), at(4), at(5), at(6)];
            let inside = |c: &Conversion| {
                c.len > 0 && c.gpa.is_multiple_of(0x1000) && c.len.is_multiple_of(0x1000) && c.check(&ram).is_ok()
            };
            if let Ok(c) = Conversion::from_hypercall(at(0) % 16, &args, &ram) {
                assert!(inside(&c), "{c:?} lies in {ram:?}");
            }
            if let Ok(c) = Conversion::from_memory_fault(at(7), at(8), at(9), &ram) {
                assert!(inside(&c), "{c:?} lies in {ram:?}");
                assert!(ram.iter().any(|r| r.gpa <= c.gpa && c.gpa < r.gpa.saturating_add(r.len)));
            }
        }
        7 => {
            if let Ok(entries) = parse_cert_table(rest) {
                if let Ok(table) = build_cert_table(&entries) {
                    assert_eq!(parse_cert_table(&table).expect("a built table parses"), entries);
                }
            }
            if let Ok(blob) = CertBlob::new(rest.to_vec()) {
                assert_eq!(blob.as_bytes(), rest);
                assert!(blob.pages() * 0x1000 >= rest.len() as u64);
            }
        }
        8 => {
            if let Ok(page) = SecretsPage::from_bytes(&padded::<SECRETS_PAGE_SIZE>(rest)[..]) {
                assert_eq!(&page.to_bytes()[..], &padded::<SECRETS_PAGE_SIZE>(rest)[..], "a secrets page prints back");
                let _ = page.vmpck(rest.first().copied().unwrap_or(0) % 5);
            }
        }
        _ => {
            if let Ok(req) = ReportRequest::from_bytes(rest) {
                assert_eq!(&req.to_bytes()[..], rest, "a report request prints back to its bytes");
                let _ = req.status(rest[0x40] % 5);
            }
            if let Ok(resp) = ReportResponse::from_bytes(rest) {
                assert_eq!(ReportResponse::from_bytes(&resp.to_bytes()).ok(), Some(resp));
            }
        }
    }
});
