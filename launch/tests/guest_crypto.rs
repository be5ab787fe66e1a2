//! The guest-side AES-256-GCM (`firmware/guests/aes_gcm.rs`) and guest-message code
//! (`firmware/guests/snp_msg.rs`), run on the host: against NIST's vectors, the
//! aes-gcm crate, and the PSP's side in `launch::snp::guest_msg`, in both directions.

#[path = "../../firmware/guests/aes_gcm.rs"]
mod aes_gcm;
#[path = "../../firmware/guests/snp_msg.rs"]
mod snp_msg;

use ::aes_gcm::aead::AeadInPlace;
use ::aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use launch::snp::guest_msg::{
    msg_type, report_status, seal, MsgHeader, PspMsgChannel, ReportRequest, ReportResponse, MSG_PAGE_SIZE,
};
use launch::snp::report::{AttestationReport, REPORT_SIZE};
use snp_msg::{GuestChannel, MsgError};

fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap()
}

/// A small deterministic generator for test inputs (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }

    fn array<const N: usize>(&mut self) -> [u8; N] {
        self.bytes(N).try_into().unwrap()
    }
}

#[test]
fn aes256_block_matches_fips_197() {
    // FIPS 197, Appendix C.3.
    let key: [u8; 32] = unhex("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f").try_into().unwrap();
    let mut block: [u8; 16] = unhex("00112233445566778899aabbccddeeff").try_into().unwrap();
    aes_gcm::Aes256::new(&key).encrypt_block(&mut block);
    assert_eq!(hex::encode(block), "8ea2b7ca516745bfeafc49904b496089");
}

#[test]
fn gcm_matches_the_nist_aes256_test_cases() {
    // The AES-256 test cases 13 to 16 of the GCM specification (McGrew and Viega).
    let k15 = "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308";
    let p15 = "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72\
               1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255";
    let c15 = "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa\
               8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662898015ad";
    let cases = [
        ("00".repeat(32), "00".repeat(12), String::new(), "", "", "530f8afbc74536b9a963b4f1c4cb738b"),
        (
            "00".repeat(32),
            "00".repeat(12),
            String::new(),
            &*"00".repeat(16),
            "cea7403d4d606b6e074ec5d3baf39d18",
            "d0d1c8a799996bf0265b98b5d48ab919",
        ),
        (
            k15.to_string(),
            "cafebabefacedbaddecaf888".into(),
            String::new(),
            p15,
            c15,
            "b094dac5d93471bdec1a502270e3cc6c",
        ),
        (
            k15.to_string(),
            "cafebabefacedbaddecaf888".into(),
            "feedfacedeadbeeffeedfacedeadbeefabaddad2".into(),
            &p15[..120],
            &c15[..120],
            "76fc6ece0f4e1768cddf8853bb2d551b",
        ),
    ];
    for (i, (key, iv, aad, pt, ct, tag)) in cases.iter().enumerate() {
        let gcm = aes_gcm::Gcm::new(&unhex(key).try_into().unwrap());
        let iv: [u8; 12] = unhex(iv).try_into().unwrap();
        let mut data = unhex(pt);
        let got_tag = gcm.encrypt(&iv, &unhex(aad), &mut data);
        assert_eq!(hex::encode(&data), *ct, "case {}", 13 + i);
        assert_eq!(hex::encode(got_tag), *tag, "case {}", 13 + i);
        assert!(gcm.decrypt(&iv, &unhex(aad), &mut data, &got_tag));
        assert_eq!(hex::encode(&data), *pt, "case {}", 13 + i);
    }
}

#[test]
fn gcm_matches_the_aes_gcm_crate_on_random_inputs() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for len in [0, 1, 15, 16, 17, 31, 32, 33, 96, 255, 1216, 4000] {
        for aad_len in [0, 1, 16, 48, 49] {
            let key: [u8; 32] = rng.array();
            let iv: [u8; 12] = rng.array();
            let aad = rng.bytes(aad_len);
            let plain = rng.bytes(len);
            let mut ours = plain.clone();
            let tag = aes_gcm::Gcm::new(&key).encrypt(&iv, &aad, &mut ours);
            let mut theirs = plain.clone();
            let their_tag =
                Aes256Gcm::new(&key.into()).encrypt_in_place_detached(&Nonce::from(iv), &aad, &mut theirs).unwrap();
            assert_eq!(ours, theirs, "ciphertext, len {len} aad {aad_len}");
            assert_eq!(tag[..], their_tag[..], "tag, len {len} aad {aad_len}");
            assert!(aes_gcm::Gcm::new(&key).decrypt(&iv, &aad, &mut theirs, &tag));
            assert_eq!(theirs, plain);
        }
    }
}

#[test]
fn gcm_decrypt_rejects_a_bad_tag_and_leaves_the_data_alone() {
    let mut rng = Rng(7);
    let key: [u8; 32] = rng.array();
    let iv: [u8; 12] = rng.array();
    let gcm = aes_gcm::Gcm::new(&key);
    let mut data = rng.bytes(100);
    let tag = gcm.encrypt(&iv, b"aad", &mut data);
    let ciphertext = data.clone();
    for i in 0..16 {
        let mut bad = tag;
        bad[i] ^= 0x80;
        assert!(!gcm.decrypt(&iv, b"aad", &mut data, &bad), "tag byte {i}");
        assert_eq!(data, ciphertext);
    }
    assert!(!gcm.decrypt(&iv, b"aaD", &mut data, &tag), "other AAD");
    assert!(!aes_gcm::Gcm::new(&[0; 32]).decrypt(&iv, b"aad", &mut data, &tag), "other key");
    let mut other_iv = iv;
    other_iv[11] ^= 1;
    assert!(!gcm.decrypt(&other_iv, b"aad", &mut data, &tag), "other IV");
    data[50] ^= 1;
    assert!(!gcm.decrypt(&iv, b"aad", &mut data, &tag), "modified ciphertext");
}

const VMPCKS: [[u8; 32]; 4] = [[0x31; 32], [0x32; 32], [0x33; 32], [0x34; 32]];

/// A signed report as the PSP would return it.
fn signed_report(report_data: [u8; 64]) -> [u8; REPORT_SIZE] {
    let vcek = p384::ecdsa::SigningKey::from_slice(&[0x17; 48]).unwrap();
    let report = AttestationReport { report_data, chip_id: [5; 64], ..Default::default() };
    report.sign(&vcek).unwrap()
}

/// The PSP's answer to a guest's request page: a report carrying its REPORT_DATA.
fn psp_answer(psp: &mut PspMsgChannel, request: &[u8]) -> Vec<u8> {
    let req = psp.open_request(request).unwrap();
    assert_eq!(req.header.msg_type, msg_type::REPORT_REQ);
    let rr = ReportRequest::from_bytes(&req.payload).unwrap();
    let rsp = match rr.status(req.header.vmpck) {
        report_status::SUCCESS => ReportResponse::success(signed_report(rr.report_data)),
        status => ReportResponse::error(status),
    };
    psp.seal_response(&req, &rsp.to_bytes()).unwrap()
}

#[test]
fn guest_request_is_opened_by_the_psp_and_its_response_by_the_guest() {
    let mut psp = PspMsgChannel::new(VMPCKS);
    let mut guest = GuestChannel::new(&VMPCKS[0], 0, 0);
    let mut page = [0u8; MSG_PAGE_SIZE];
    for round in 0..3u8 {
        let report_data = [round; 64];
        let seqno = guest.build_report_request(&report_data, 0, &mut page).unwrap();
        assert_eq!(seqno, 1 + 2 * u64::from(round));
        let response = psp_answer(&mut psp, &page);
        let mut report = [0u8; REPORT_SIZE];
        guest.open_report_response(&response, &mut report).unwrap();
        assert_eq!(report, signed_report(report_data));
        assert_eq!(guest.last_seqno(), seqno + 1);
        assert_eq!(psp.last_seqno(0), Some(seqno + 1));
    }
}

#[test]
fn guest_request_payload_is_what_the_psp_parses() {
    let mut psp = PspMsgChannel::new(VMPCKS);
    let mut guest = GuestChannel::new(&VMPCKS[2], 2, 0);
    let mut page = [0xEEu8; MSG_PAGE_SIZE];
    guest.build_report_request(&[0xA5; 64], 3, &mut page).unwrap();
    let req = psp.open_request(&page).unwrap();
    assert_eq!(
        req.header,
        MsgHeader { seqno: 1, msg_type: msg_type::REPORT_REQ, msg_version: 1, msg_sz: 0x60, vmpck: 2 }
    );
    assert_eq!(
        ReportRequest::from_bytes(&req.payload).unwrap(),
        ReportRequest { report_data: [0xA5; 64], vmpl: 3, key_sel: 0 }
    );
}

#[test]
fn replayed_guest_request_is_rejected_by_the_psp() {
    let mut psp = PspMsgChannel::new(VMPCKS);
    let mut guest = GuestChannel::new(&VMPCKS[0], 0, 0);
    let mut page = [0u8; MSG_PAGE_SIZE];
    guest.build_report_request(&[1; 64], 0, &mut page).unwrap();
    psp.open_request(&page).unwrap();
    assert!(psp.open_request(&page).is_err());
}

/// A guest with one request outstanding (sequence number 1) and the PSP's good answer.
fn pending_guest() -> (GuestChannel, Vec<u8>) {
    let mut psp = PspMsgChannel::new(VMPCKS);
    let mut guest = GuestChannel::new(&VMPCKS[0], 0, 0);
    let mut page = [0u8; MSG_PAGE_SIZE];
    guest.build_report_request(&[9; 64], 0, &mut page).unwrap();
    let response = psp_answer(&mut psp, &page);
    (guest, response)
}

fn open(guest: &mut GuestChannel, response: &[u8]) -> Result<(), MsgError> {
    guest.open_report_response(response, &mut [0; REPORT_SIZE])
}

#[test]
fn response_with_a_flipped_tag_is_refused_by_the_guest() {
    let (mut guest, mut response) = pending_guest();
    response[5] ^= 1;
    assert_eq!(open(&mut guest, &response), Err(MsgError::AuthFailed));
    assert_eq!(guest.last_seqno(), 0, "a refused response does not advance the sequence");
    response[5] ^= 1;
    assert_eq!(open(&mut guest, &response), Ok(()));
}

#[test]
fn response_with_a_flipped_payload_byte_is_refused_by_the_guest() {
    let (mut guest, mut response) = pending_guest();
    response[0x60 + 0x300] ^= 1;
    assert_eq!(open(&mut guest, &response), Err(MsgError::AuthFailed));
}

#[test]
fn response_under_another_key_is_refused_by_the_guest() {
    let (mut guest, _) = pending_guest();
    let header = MsgHeader { seqno: 2, msg_type: msg_type::REPORT_RSP, msg_version: 1, msg_sz: 0, vmpck: 0 };
    let forged = seal(&VMPCKS[1], header, &ReportResponse::success([0; REPORT_SIZE]).to_bytes()).unwrap();
    assert_eq!(open(&mut guest, &forged), Err(MsgError::AuthFailed));
}

#[test]
fn response_with_a_wrong_seqno_type_or_header_is_refused_by_the_guest() {
    let (mut guest, _) = pending_guest();
    let ok = MsgHeader { seqno: 2, msg_type: msg_type::REPORT_RSP, msg_version: 1, msg_sz: 0, vmpck: 0 };
    let payload = ReportResponse::success([0; REPORT_SIZE]).to_bytes();
    let cases = [
        (MsgHeader { seqno: 1, ..ok }, MsgError::BadSeqno),
        (MsgHeader { seqno: 4, ..ok }, MsgError::BadSeqno),
        (MsgHeader { msg_type: msg_type::KEY_RSP, ..ok }, MsgError::BadType),
        (MsgHeader { msg_version: 2, ..ok }, MsgError::BadHeader),
        (MsgHeader { vmpck: 1, ..ok }, MsgError::BadHeader),
    ];
    for (header, err) in cases {
        let page = seal(&VMPCKS[0], header, &payload).unwrap();
        assert_eq!(open(&mut guest, &page), Err(err), "{header:?}");
    }
    let mut page = seal(&VMPCKS[0], ok, &payload).unwrap();
    page[0x30] = 2;
    assert_eq!(open(&mut guest, &page), Err(MsgError::BadHeader), "ALGO");
    let mut page = seal(&VMPCKS[0], ok, &payload).unwrap();
    page[0x50] = 1;
    assert_eq!(open(&mut guest, &page), Err(MsgError::BadHeader), "reserved byte");
}

#[test]
fn response_of_a_wrong_size_is_refused_by_the_guest() {
    let (mut guest, response) = pending_guest();
    let mut big = response.clone();
    big[0x36..0x38].copy_from_slice(&0x4C1u16.to_le_bytes());
    assert_eq!(open(&mut guest, &big), Err(MsgError::BadSize));
    let mut small = response.clone();
    small[0x36..0x38].copy_from_slice(&0x10u16.to_le_bytes());
    assert_eq!(open(&mut guest, &small), Err(MsgError::BadSize));
    assert_eq!(open(&mut guest, &response[..0x200]), Err(MsgError::BadSize), "page cut short");
    // A short but authentic success response.
    let header = MsgHeader { seqno: 2, msg_type: msg_type::REPORT_RSP, msg_version: 1, msg_sz: 0, vmpck: 0 };
    let mut payload = ReportResponse::success([0; REPORT_SIZE]).to_bytes();
    payload.truncate(0x100);
    assert_eq!(open(&mut guest, &seal(&VMPCKS[0], header, &payload).unwrap()), Err(MsgError::BadSize));
}

#[test]
fn refused_report_request_reaches_the_guest_as_its_status() {
    let mut psp = PspMsgChannel::new(VMPCKS);
    // VMPCK 1 asking for a VMPL 0 report: below the caller's VMPL.
    let mut guest = GuestChannel::new(&VMPCKS[1], 1, 0);
    let mut page = [0u8; MSG_PAGE_SIZE];
    guest.build_report_request(&[0; 64], 0, &mut page).unwrap();
    let response = psp_answer(&mut psp, &page);
    assert_eq!(open(&mut guest, &response), Err(MsgError::Status(report_status::INVALID_PARAMS)));
    assert_eq!(guest.last_seqno(), 2, "an authentic refusal still uses its sequence numbers");
}

#[test]
fn response_without_a_pending_request_is_refused() {
    let (mut guest, response) = pending_guest();
    open(&mut guest, &response).unwrap();
    assert_eq!(open(&mut guest, &response), Err(MsgError::BadSeqno));
}

#[test]
fn guest_files_compile_as_no_std_with_the_guest_flags() {
    // The flags firmware/build.rs gives guest programs, on a library that includes both
    // files the way a guest does.
    let dir = std::env::temp_dir().join(format!("cvmm-guest-crypto-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let guests = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../firmware/guests");
    let lib = dir.join("lib.rs");
    std::fs::write(
        &lib,
        format!(
            "#![no_std]\n#![deny(warnings)]\n#[path = {:?}]\npub mod aes_gcm;\n#[path = {:?}]\npub mod snp_msg;\n",
            guests.join("aes_gcm.rs"),
            guests.join("snp_msg.rs")
        ),
    )
    .unwrap();
    let out = std::process::Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
        .args(["--edition", "2021", "--crate-type", "lib", "--target", "x86_64-unknown-linux-gnu"])
        .args(["-C", "opt-level=s", "-C", "panic=abort", "-C", "target-feature=-sse,-sse2,-avx,-avx2,+soft-float"])
        .args(["-C", "relocation-model=static", "-C", "code-model=small", "--emit", "metadata,obj"])
        .arg("--out-dir")
        .arg(&dir)
        .arg(&lib)
        .output()
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}
