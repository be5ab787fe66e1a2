//! Fields of the fixed-layout, little-endian structures this crate reads (attestation
//! reports, TD reports and quotes, ID blocks, secrets and CPUID pages, VMSA pages):
//! the `N` bytes at an offset, and the integers they hold.
//!
//! Callers pass offsets inside buffers whose size they have checked or whose type
//! fixes it; an offset outside the buffer is a bug in the caller and panics.

/// The `N` bytes of `b` at `at`, copied.
pub(crate) fn array<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&b[at..at + N]);
    out
}

/// The little-endian u16 at `at`.
pub(crate) fn le_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(array(b, at))
}

/// The little-endian u32 at `at`.
pub(crate) fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(array(b, at))
}

/// The little-endian u64 at `at`.
pub(crate) fn le_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(array(b, at))
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: [u8; 10] = [0x10, 0x32, 0x54, 0x76, 0x98, 0xba, 0xdc, 0xfe, 0x01, 0x23];

    #[test]
    fn integers_are_read_little_endian_at_their_offset() {
        assert_eq!(le_u16(&B, 1), 0x5432);
        assert_eq!(le_u32(&B, 0), 0x7654_3210);
        assert_eq!(le_u64(&B, 2), 0x2301_fedc_ba98_7654);
        assert_eq!(array::<3>(&B, 7), [0xfe, 0x01, 0x23]);
    }

    #[test]
    #[should_panic]
    fn a_field_past_the_end_panics() {
        le_u32(&B, 7);
    }
}
