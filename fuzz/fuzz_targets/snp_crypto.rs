//! Fuzzes the SEV-SNP code behind cryptography (AES-256-GCM, ECDSA P-384), the first
//! byte choosing what: the PSP's guest-message channel on raw pages and on pages sealed
//! with its key from the fuzzer's header fields and payload
//! (`launch::snp::guest_msg::PspMsgChannel::open_request`), the emulated PSP's answer to
//! a sealed guest request (`launch::snp::psp::EmulatedPsp::guest_request`: the report in
//! its response must verify), attestation report signatures, and ID block / ID auth
//! verification (`launch::snp::id_block::verify_id_block`: what `IdBlock::sign` signs
//! must verify). A "crypto" target: slower per input; its goal is 1 M executions
//! (issue 9), not 10 M.
#![no_main]

use std::sync::{Arc, OnceLock};

use launch::plan::snp::SnpVcpu;
use launch::plan::SnpPageType;
use launch::snp::certs::EmulatedAmdChain;
use launch::snp::cpuid_page::CpuidPlatform;
use launch::snp::guest_msg::{msg_type, open, seal, MsgHeader, PspMsgChannel, ReportResponse, MSG_PAYLOAD_MAX};
use launch::snp::id_block::{verify_id_block, FinishOptions, IdAuth, IdBlock, ID_AUTH_SIZE, ID_BLOCK_SIZE};
use launch::snp::psp::{EmulatedPsp, PspLaunch};
use launch::snp::report::AttestationReport;
use launch::snp::secrets::SecretsPage;
use libfuzzer_sys::fuzz_target;
use p384::ecdsa::SigningKey;

const KEYS: [[u8; 32]; 4] = [[1; 32], [2; 32], [3; 32], [4; 32]];

/// The VMM's emulated AMD chain (made once).
fn chain() -> Arc<EmulatedAmdChain> {
    static CHAIN: OnceLock<Arc<EmulatedAmdChain>> = OnceLock::new();
    CHAIN.get_or_init(|| Arc::new(EmulatedAmdChain::load_or_create_default().expect("AMD chain"))).clone()
}

/// A PSP that launched a guest (one vCPU, its secrets page read back for the VMPCKs).
fn psp() -> (EmulatedPsp, SecretsPage) {
    let launch = PspLaunch {
        policy: 0x30000,
        finish: FinishOptions::default(),
        cpuid: CpuidPlatform::from_entries(&[]),
        chain: chain(),
    };
    let mut psp = EmulatedPsp::launch_start(launch).expect("launch start");
    let mut page = vec![0u8; 4096];
    psp.launch_update(0x3000, SnpPageType::Secrets, &mut page).expect("secrets page");
    psp.launch_finish(&[SnpVcpu::default()]).expect("launch finish");
    (psp, SecretsPage::from_bytes(&page).expect("the PSP's secrets page parses"))
}

/// A header from the fuzzer's bytes: sequence number 1 (the channel's next) unless byte
/// 0 says otherwise, type, version and key index from bytes 1 to 3.
fn header(b: &[u8; 4]) -> MsgHeader {
    MsgHeader {
        seqno: if b[0] == 0 { 1 } else { u64::from(b[0]) },
        msg_type: b[1] % (msg_type::LAST_REQ + 2),
        msg_version: if b[2] == 0 { 1 } else { b[2] },
        msg_sz: 0,
        vmpck: b[3] % 5,
    }
}

fn id_key(seed: u8) -> SigningKey {
    let mut bytes = [seed; 48];
    bytes[0] = 1;
    SigningKey::from_slice(&bytes).expect("a scalar below the P-384 order")
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else { return };
    match selector % 5 {
        0 => {
            let mut channel = PspMsgChannel::new(KEYS);
            if let Ok(req) = channel.open_request(rest) {
                assert_eq!(channel.last_seqno(req.header.vmpck), Some(req.header.seqno + 1));
            }
        }
        1 => {
            let Some((h, rest)) = rest.split_first_chunk::<4>() else { return };
            let (flip, payload) = rest.split_first().map_or((0, rest), |(f, p)| (*f, p));
            let header = header(h);
            let payload = &payload[..payload.len().min(MSG_PAYLOAD_MAX)];
            let Ok(mut page) = seal(&KEYS[usize::from(header.vmpck % 4)], header, payload) else { return };
            let mut channel = PspMsgChannel::new(KEYS);
            // Byte `flip` (of the header and payload) flipped: the page must not open.
            let flipped = usize::from(flip) * 17 % (0x60 + payload.len());
            if flip != 0 {
                page[flipped] ^= 0x80;
            }
            match channel.open_request(&page) {
                Ok(req) => {
                    assert_eq!(flip, 0, "a page with byte {flipped:#x} changed opened");
                    assert_eq!(req.payload, payload);
                    let response = channel.seal_response(&req, b"response").expect("a response seals");
                    let (rh, body) = open(&KEYS[usize::from(header.vmpck)], &response).expect("the response opens");
                    assert_eq!((rh.seqno, rh.msg_type, &body[..]), (2, header.msg_type + 1, &b"response"[..]));
                }
                Err(_) => {
                    let good = header.seqno == 1
                        && header.msg_type % 2 == 1
                        && header.msg_type <= msg_type::LAST_REQ
                        && header.msg_version == 1
                        && header.vmpck < 4;
                    assert!(!good || flip != 0, "a well-formed sealed request did not open: {header:?}");
                }
            }
        }
        2 => {
            let Some((h, payload)) = rest.split_first_chunk::<4>() else { return };
            let header = MsgHeader { msg_type: msg_type::REPORT_REQ, ..header(h) };
            let (mut psp, secrets) = psp();
            let Some(key) = secrets.vmpck(header.vmpck) else { return };
            let payload = &payload[..payload.len().min(MSG_PAYLOAD_MAX)];
            let Ok(page) = seal(key, header, payload) else { return };
            if let Ok(response) = psp.guest_request(&page) {
                let (_, body) = open(key, &response).expect("the PSP's response opens");
                let response = ReportResponse::from_bytes(&body).expect("the PSP's response parses");
                if let Some(report) = response.report {
                    let report = AttestationReport::from_bytes(&report).expect("the PSP's report parses");
                    report.verify(psp.chain().vcek_verifying_key()).expect("the PSP's report verifies");
                    assert_eq!(&report.report_data[..], &payload[..64]);
                }
            }
        }
        3 => {
            let Ok(report) = AttestationReport::from_bytes(rest) else { return };
            let chain = chain();
            let _ = report.verify(chain.vcek_verifying_key());
            let signed = report.sign(chain.vcek_signing_key()).expect("a parsed report signs");
            let signed = AttestationReport::from_bytes(&signed).expect("a signed report parses");
            if report.signature_algo == launch::snp::report::SIG_ALGO_ECDSA_P384_SHA384 {
                signed.verify(chain.vcek_verifying_key()).expect("a report signed with the VCEK verifies");
            }
        }
        _ => {
            // ID block, flags (author key, sign it ourselves), ID auth.
            let Some((block, rest)) = rest.split_first_chunk::<ID_BLOCK_SIZE>() else { return };
            let Ok(block) = IdBlock::from_bytes(block) else { return };
            let (flags, auth) = rest.split_first().map_or((0, rest), |(f, a)| (*f, a));
            let author_key_en = flags & 1 != 0;
            let auth = if flags & 2 != 0 {
                let author = id_key(0xa5);
                let auth = block.sign(&id_key(flags), author_key_en.then_some(&author)).expect("an ID block signs");
                verify_id_block(&block, &auth, author_key_en, &block.ld, block.policy)
                    .expect("a signed ID block verifies");
                auth
            } else {
                let mut bytes = [0u8; ID_AUTH_SIZE];
                let n = auth.len().min(ID_AUTH_SIZE);
                bytes[..n].copy_from_slice(&auth[..n]);
                IdAuth::from_bytes(&bytes).expect("any 4 KiB is an ID auth")
            };
            let _ = verify_id_block(&block, &auth, author_key_en, &block.ld, block.policy);
            let _ = (auth.id_key.to_verifying_key(), auth.author_key.to_verifying_key());
        }
    }
});
