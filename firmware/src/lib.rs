//! `firmware`: what cvmm loads into a guest before it runs.
//!
//! It owns the guest images and their formats: kernel loading (64-bit ELF with or
//! without a PVH entry note, bzImage) through linux-loader ([`kernel`]), initrd
//! placement and the command line ([`kernel::place_initrd`], [`kernel::cmdline_bytes`]),
//! and the project's own guest-side code, built from this crate and embedded in the
//! `cvmm` binary ([`demo_guest`]).
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod kernel;

/// The bundled demo guest: a static 64-bit ELF built from `firmware/demo-guest/`.
///
/// ```
/// let elf = firmware::demo_guest();
/// assert_eq!(&elf[..4], b"\x7fELF");
/// ```
pub fn demo_guest() -> &'static [u8] {
    include_bytes!(concat!(env!("OUT_DIR"), "/demo-guest.elf"))
}
