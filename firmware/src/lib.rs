//! `firmware`: what cvmm loads into a guest before it runs.
//!
//! It owns the guest images and their formats: kernel loading (64-bit ELF with or
//! without a PVH entry note, bzImage) through linux-loader ([`kernel`]), initrd
//! placement and the command line ([`kernel::place_initrd`], [`kernel::cmdline_bytes`]),
//! and the project's own guest-side code, built from `firmware/guests/` and embedded in
//! the `cvmm` binary ([`demo_guest`]).
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod kernel;
pub mod ovmf;
pub mod sev;
pub mod tdvf;

/// The bundled demo guest: a static 64-bit ELF built from `firmware/guests/demo.rs`.
///
/// ```
/// let elf = firmware::demo_guest();
/// assert_eq!(&elf[..4], b"\x7fELF");
/// ```
pub fn demo_guest() -> &'static [u8] {
    include_bytes!(concat!(env!("OUT_DIR"), "/demo.elf"))
}

/// cvmm's Linux boot firmware for confidential guests: a static 64-bit ELF built from
/// `firmware/guests/linuxboot.rs`. Started like every cvmm guest program at its 32-bit
/// entry, it validates (SEV-SNP) or accepts (TDX) guest memory and enters the Linux
/// kernel named by the zero page at [`arch::abi::LINUX_ZERO_PAGE`] at its 64-bit entry.
///
/// ```
/// let elf = firmware::linux_boot_firmware();
/// assert_eq!(&elf[..4], b"\x7fELF");
/// ```
pub fn linux_boot_firmware() -> &'static [u8] {
    include_bytes!(concat!(env!("OUT_DIR"), "/linuxboot.elf"))
}

/// Guest programs that exercise one VMM feature each, for integration tests
/// (feature `test-guests`).
#[cfg(feature = "test-guests")]
pub mod test_guests {
    /// Routes COM1's interrupt through the IOAPIC to vector 0x30 and exits with
    /// status 0x30 from the interrupt handler (`firmware/guests/irq_test.rs`).
    pub fn irq() -> &'static [u8] {
        include_bytes!(concat!(env!("OUT_DIR"), "/irq_test.elf"))
    }

    /// A minimal virtio-mmio driver that reads 32 bytes from the virtio-rng device in
    /// the first virtio slot and prints them as hex (`firmware/guests/virtio_rng_test.rs`).
    pub fn virtio_rng() -> &'static [u8] {
        include_bytes!(concat!(env!("OUT_DIR"), "/virtio_rng_test.elf"))
    }

    /// The emulated-TDX TDCALL test guest (firmware/guests/tdx_test.rs).
    pub fn tdx() -> &'static [u8] {
        include_bytes!(concat!(env!("OUT_DIR"), "/tdx_test.elf"))
    }

    /// The emulated-SNP GHCB test guest (firmware/guests/snp_ghcb_test.rs).
    pub fn snp_ghcb() -> &'static [u8] {
        include_bytes!(concat!(env!("OUT_DIR"), "/snp_ghcb_test.elf"))
    }
}
