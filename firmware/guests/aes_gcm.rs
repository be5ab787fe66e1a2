//! AES-256-GCM (FIPS 197, NIST SP 800-38D) for cvmm's no_std guests: integer-only (no
//! SSE, no AES-NI), no allocation, 96-bit IVs, 16-byte tags.
//!
//! Sized for a guest whose kernel code the host emulates at ~2 M instructions/s: AES
//! uses one 1 KiB table of combined SubBytes/MixColumns words (computed at compile
//! time, rotated for the other rows) and a key schedule expanded once per key; GHASH
//! uses Shoup's 4-bit tables, precomputed once per key. Measured with callgrind on a
//! host build with the guests' compiler flags: a key setup takes about 4 000
//! instructions, sealing a 96-byte MSG_REPORT_REQ about 18 000, opening a 1216-byte
//! MSG_REPORT_RSP about 170 000 (roughly 1 200 per AES block, 750 per GHASH block).
//!
//! The tag check runs in constant time and a message that fails it is left
//! undecrypted. The table lookups are not hardened against cache-timing side channels;
//! hardware AES would be needed for that.
//!
//! Included with `#[path = "aes_gcm.rs"] mod aes_gcm;` by guest programs (beside
//! `snp_msg.rs`, which uses it as `super::aes_gcm`) and by `launch/tests/guest_crypto.rs`,
//! which checks it against the aes-gcm crate and NIST's test vectors on the host.
#![allow(dead_code)]

/// Key length.
pub const KEY_LEN: usize = 32;
/// IV length (the 96-bit IVs GCM handles directly).
pub const IV_LEN: usize = 12;
/// Tag length.
pub const TAG_LEN: usize = 16;
/// AES-256 rounds.
const ROUNDS: usize = 14;

/// Multiplication in GF(2^8) modulo x^8 + x^4 + x^3 + x + 1.
const fn gmul(mut a: u8, mut b: u8) -> u8 {
    let mut p = 0u8;
    while b != 0 {
        if b & 1 != 0 {
            p ^= a;
        }
        let carry = a & 0x80;
        a <<= 1;
        if carry != 0 {
            a ^= 0x1B;
        }
        b >>= 1;
    }
    p
}

/// The S-box: the multiplicative inverse (x^254) followed by the affine map.
const fn make_sbox() -> [u8; 256] {
    let mut s = [0u8; 256];
    let mut x = 0usize;
    while x < 256 {
        // x^254 = x^-1 (0 for 0) by square and multiply: 254 = 0b11111110.
        let mut inv = 1u8;
        let mut sq = x as u8;
        let mut e = 254u32;
        while e != 0 {
            if e & 1 != 0 {
                inv = gmul(inv, sq);
            }
            sq = gmul(sq, sq);
            e >>= 1;
        }
        if x == 0 {
            inv = 0;
        }
        s[x] = inv ^ inv.rotate_left(1) ^ inv.rotate_left(2) ^ inv.rotate_left(3) ^ inv.rotate_left(4) ^ 0x63;
        x += 1;
    }
    s
}

/// SubBytes then MixColumns of one byte in row 0, as a column word (row r in bits
/// 8r..8r+8): (2·S\[x\], S\[x\], S\[x\], 3·S\[x\]). A byte in row r contributes this word
/// rotated left by 8r bits.
const fn make_te(sbox: &[u8; 256]) -> [u32; 256] {
    let mut t = [0u32; 256];
    let mut x = 0;
    while x < 256 {
        let s = sbox[x];
        t[x] = (gmul(s, 2) as u32) | ((s as u32) << 8) | ((s as u32) << 16) | ((gmul(s, 3) as u32) << 24);
        x += 1;
    }
    t
}

static SBOX: [u8; 256] = make_sbox();
static TE: [u32; 256] = make_te(&SBOX);

/// SubBytes of each byte of a word.
fn sub_word(w: u32) -> u32 {
    let b = w.to_le_bytes();
    u32::from_le_bytes([SBOX[b[0] as usize], SBOX[b[1] as usize], SBOX[b[2] as usize], SBOX[b[3] as usize]])
}

/// An AES-256 key schedule (encryption only: GCM never decrypts blocks).
#[derive(Clone)]
pub struct Aes256 {
    /// Round keys, one column word per entry (byte 4i+r of the block in bits 8r).
    rk: [u32; 4 * (ROUNDS + 1)],
}

impl Aes256 {
    /// Expands `key`.
    pub fn new(key: &[u8; KEY_LEN]) -> Self {
        let mut rk = [0u32; 4 * (ROUNDS + 1)];
        for (i, w) in rk.iter_mut().take(8).enumerate() {
            *w = u32::from_le_bytes([key[4 * i], key[4 * i + 1], key[4 * i + 2], key[4 * i + 3]]);
        }
        let mut rcon = 1u8;
        for i in 8..rk.len() {
            let mut t = rk[i - 1];
            if i % 8 == 0 {
                // RotWord moves byte 1 to byte 0: a right rotation of the column word.
                t = sub_word(t.rotate_right(8)) ^ rcon as u32;
                rcon = gmul(rcon, 2);
            } else if i % 8 == 4 {
                t = sub_word(t);
            }
            rk[i] = rk[i - 8] ^ t;
        }
        Self { rk }
    }

    /// Encrypts one block in place.
    pub fn encrypt_block(&self, block: &mut [u8; 16]) {
        let mut s = [0u32; 4];
        for c in 0..4 {
            s[c] =
                u32::from_le_bytes([block[4 * c], block[4 * c + 1], block[4 * c + 2], block[4 * c + 3]]) ^ self.rk[c];
        }
        let te = |x: u32| TE[(x & 0xFF) as usize];
        for round in 1..ROUNDS {
            let k = &self.rk[4 * round..4 * round + 4];
            // ShiftRows: row r of column c comes from column c + r.
            let t = [
                te(s[0])
                    ^ te(s[1] >> 8).rotate_left(8)
                    ^ te(s[2] >> 16).rotate_left(16)
                    ^ te(s[3] >> 24).rotate_left(24),
                te(s[1])
                    ^ te(s[2] >> 8).rotate_left(8)
                    ^ te(s[3] >> 16).rotate_left(16)
                    ^ te(s[0] >> 24).rotate_left(24),
                te(s[2])
                    ^ te(s[3] >> 8).rotate_left(8)
                    ^ te(s[0] >> 16).rotate_left(16)
                    ^ te(s[1] >> 24).rotate_left(24),
                te(s[3])
                    ^ te(s[0] >> 8).rotate_left(8)
                    ^ te(s[1] >> 16).rotate_left(16)
                    ^ te(s[2] >> 24).rotate_left(24),
            ];
            s = [t[0] ^ k[0], t[1] ^ k[1], t[2] ^ k[2], t[3] ^ k[3]];
        }
        // Last round: SubBytes and ShiftRows, no MixColumns.
        let sb = |x: u32, row: u32| (SBOX[((x >> (8 * row)) & 0xFF) as usize] as u32) << (8 * row);
        for c in 0..4 {
            let w = sb(s[c], 0) | sb(s[(c + 1) % 4], 1) | sb(s[(c + 2) % 4], 2) | sb(s[(c + 3) % 4], 3);
            block[4 * c..4 * c + 4].copy_from_slice(&(w ^ self.rk[4 * ROUNDS + c]).to_le_bytes());
        }
    }
}

/// GHASH with Shoup's 4-bit tables: `tab[i]` is i·H for the 4-bit polynomial i (its
/// bit 3 the lowest power of x), elements as (high, low) halves of the big-endian
/// 128-bit string.
#[derive(Clone)]
struct Ghash {
    hi: [u64; 16],
    lo: [u64; 16],
}

/// The reduction terms for the four low bits `r` that a 4-bit right shift of the
/// accumulator drops: bit j of `r` folds back as 0xE100 >> (3 - j) in the top 16 bits
/// (0xE1 being x^128 mod the GCM polynomial in GCM's bit-reflected order).
const fn make_last4() -> [u64; 16] {
    let mut t = [0u64; 16];
    let mut r = 0;
    while r < 16 {
        let mut v = 0u64;
        let mut j = 0;
        while j < 4 {
            if r & (1 << j) != 0 {
                v ^= 0xE100 >> (3 - j);
            }
            j += 1;
        }
        t[r] = v << 48;
        r += 1;
    }
    t
}

static LAST4: [u64; 16] = make_last4();

impl Ghash {
    fn new(h: &[u8; 16]) -> Self {
        let mut t = Self { hi: [0; 16], lo: [0; 16] };
        let (mut vh, mut vl) = (be64(&h[..8]), be64(&h[8..]));
        t.hi[8] = vh;
        t.lo[8] = vl;
        // 4, 2, 1: multiply by x (a right shift in GCM's bit order, reducing by 0xE1).
        let mut i = 4;
        while i > 0 {
            let carry = vl & 1;
            vl = (vh << 63) | (vl >> 1);
            vh = (vh >> 1) ^ if carry != 0 { 0xE1 << 56 } else { 0 };
            t.hi[i] = vh;
            t.lo[i] = vl;
            i >>= 1;
        }
        for i in [2usize, 4, 8] {
            for j in 1..i {
                t.hi[i + j] = t.hi[i] ^ t.hi[j];
                t.lo[i + j] = t.lo[i] ^ t.lo[j];
            }
        }
        t
    }

    /// y = (y ^ block)·H.
    fn block(&self, y: &mut [u8; 16], block: &[u8]) {
        let mut x = *y;
        for (a, b) in x.iter_mut().zip(block) {
            *a ^= *b;
        }
        let (mut zh, mut zl) = (0u64, 0u64);
        // Horner's rule from the last nibble (highest powers of x) to the first.
        for i in (0..16).rev() {
            for nibble in [x[i] & 0xF, x[i] >> 4] {
                let rem = (zl & 0xF) as usize;
                zl = (zh << 60) | (zl >> 4);
                zh = (zh >> 4) ^ LAST4[rem];
                zh ^= self.hi[nibble as usize];
                zl ^= self.lo[nibble as usize];
            }
        }
        y[..8].copy_from_slice(&zh.to_be_bytes());
        y[8..].copy_from_slice(&zl.to_be_bytes());
    }

    /// Absorbs `data`, its last partial block zero padded.
    fn update(&self, y: &mut [u8; 16], data: &[u8]) {
        let mut chunks = data.chunks_exact(16);
        for c in &mut chunks {
            self.block(y, c);
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut last = [0u8; 16];
            last[..rest.len()].copy_from_slice(rest);
            self.block(y, &last);
        }
    }
}

fn be64(b: &[u8]) -> u64 {
    u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
}

/// AES-256-GCM under one key: the key schedule and GHASH tables, made once.
#[derive(Clone)]
pub struct Gcm {
    aes: Aes256,
    ghash: Ghash,
}

impl Gcm {
    /// Expands `key` and computes H = AES(key, 0).
    pub fn new(key: &[u8; KEY_LEN]) -> Self {
        let aes = Aes256::new(key);
        let mut h = [0u8; 16];
        aes.encrypt_block(&mut h);
        Self { aes, ghash: Ghash::new(&h) }
    }

    /// XORs the keystream for `iv` (counter blocks 2, 3, ...) into `data`.
    fn ctr(&self, iv: &[u8; IV_LEN], data: &mut [u8]) {
        let mut counter = 2u32;
        for chunk in data.chunks_mut(16) {
            let mut ks = [0u8; 16];
            ks[..IV_LEN].copy_from_slice(iv);
            ks[IV_LEN..].copy_from_slice(&counter.to_be_bytes());
            self.aes.encrypt_block(&mut ks);
            for (d, k) in chunk.iter_mut().zip(ks) {
                *d ^= k;
            }
            counter = counter.wrapping_add(1);
        }
    }

    /// The tag of ciphertext `ct` with additional data `aad`.
    fn tag(&self, iv: &[u8; IV_LEN], aad: &[u8], ct: &[u8]) -> [u8; TAG_LEN] {
        let mut y = [0u8; 16];
        self.ghash.update(&mut y, aad);
        self.ghash.update(&mut y, ct);
        let mut lens = [0u8; 16];
        lens[..8].copy_from_slice(&((aad.len() as u64) * 8).to_be_bytes());
        lens[8..].copy_from_slice(&((ct.len() as u64) * 8).to_be_bytes());
        self.ghash.block(&mut y, &lens);
        let mut j0 = [0u8; 16];
        j0[..IV_LEN].copy_from_slice(iv);
        j0[15] = 1;
        self.aes.encrypt_block(&mut j0);
        for (t, k) in y.iter_mut().zip(j0) {
            *t ^= k;
        }
        y
    }

    /// Encrypts `data` in place and returns the tag over `aad` and the ciphertext.
    pub fn encrypt(&self, iv: &[u8; IV_LEN], aad: &[u8], data: &mut [u8]) -> [u8; TAG_LEN] {
        self.ctr(iv, data);
        self.tag(iv, aad, data)
    }

    /// Checks `tag` over `aad` and the ciphertext `data` in constant time, then
    /// decrypts `data` in place. Returns false, leaving `data` as it was, if the tag
    /// does not match.
    pub fn decrypt(&self, iv: &[u8; IV_LEN], aad: &[u8], data: &mut [u8], tag: &[u8; TAG_LEN]) -> bool {
        let expected = self.tag(iv, aad, data);
        let mut diff = 0u8;
        for (a, b) in expected.iter().zip(tag) {
            diff |= a ^ b;
        }
        // Keep the compiler from turning the accumulation into an early exit.
        if core::hint::black_box(diff) != 0 {
            return false;
        }
        self.ctr(iv, data);
        true
    }
}
