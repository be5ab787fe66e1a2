//! The boot-information block cvmm hands its own guests, and the fixed I/O ports they use.
//!
//! This file is plain `core` Rust with no dependencies, so the project's `no_std` guest
//! code includes it verbatim (`#[path]`): one definition for both sides of the ABI.
//!
//! A guest entered through the 64-bit entry finds the block's guest-physical address
//! in `RDI` (and the Linux zero page in `RSI`); it is always at
//! [`crate::layout::BOOT_INFO_START`].

/// `"CVMMBOOT"` as a little-endian `u64`.
pub const BOOT_INFO_MAGIC: u64 = u64::from_le_bytes(*b"CVMMBOOT");
/// Version of [`BootInfo`] this build writes.
pub const BOOT_INFO_VERSION: u32 = 1;

/// I/O port of the 16550 debug serial console (COM1).
pub const SERIAL_PORT: u16 = 0x3f8;
/// I/O port of the debug-exit device: a write of one byte ends the VM, and `cvmm run`
/// exits with that byte as its status. Wider writes use their low byte.
pub const DEBUG_EXIT_PORT: u16 = 0xf4;
/// I/O port of the i8042 controller's command register: writing 0xfe resets (ends) the VM.
pub const I8042_COMMAND_PORT: u16 = 0x64;

/// What cvmm tells its own guests about the machine they run on.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BootInfo {
    /// [`BOOT_INFO_MAGIC`].
    pub magic: u64,
    /// [`BOOT_INFO_VERSION`].
    pub version: u32,
    /// `size_of::<BootInfo>()` as written; a guest reads no further than this.
    pub size: u32,
    /// Number of vCPUs the VM was given.
    pub vcpus: u32,
    /// Reserved, zero.
    pub flags: u32,
    /// Guest RAM in bytes (what `--memory` asked for).
    pub mem_size: u64,
}

impl BootInfo {
    /// Whether the magic, version and size fields are ones this build understands.
    pub fn is_valid(&self) -> bool {
        // Reads the fields of a block the guest already copied out of memory once.
        self.magic == BOOT_INFO_MAGIC
            && self.version == BOOT_INFO_VERSION
            && self.size as usize >= core::mem::size_of::<BootInfo>()
    }
}

/// Size in bytes of [`BootInfo`] as written to guest memory.
pub const BOOT_INFO_SIZE: usize = 32;

impl BootInfo {
    /// The block's little-endian bytes, as the guest reads them.
    pub fn to_bytes(&self) -> [u8; BOOT_INFO_SIZE] {
        let mut b = [0u8; BOOT_INFO_SIZE];
        b[0..8].copy_from_slice(&self.magic.to_le_bytes());
        b[8..12].copy_from_slice(&self.version.to_le_bytes());
        b[12..16].copy_from_slice(&self.size.to_le_bytes());
        b[16..20].copy_from_slice(&self.vcpus.to_le_bytes());
        b[20..24].copy_from_slice(&self.flags.to_le_bytes());
        b[24..32].copy_from_slice(&self.mem_size.to_le_bytes());
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialized_layout_matches_the_repr_c_struct() {
        assert_eq!(core::mem::size_of::<BootInfo>(), BOOT_INFO_SIZE);
        let info = BootInfo { magic: BOOT_INFO_MAGIC, version: 1, size: 32, vcpus: 3, flags: 0, mem_size: 1 << 30 };
        let b = info.to_bytes();
        assert_eq!(&b[0..8], b"CVMMBOOT");
        assert_eq!(u32::from_le_bytes(b[16..20].try_into().unwrap()), 3);
        assert_eq!(u64::from_le_bytes(b[24..32].try_into().unwrap()), 1 << 30);
        assert!(info.is_valid());
        assert!(!BootInfo { version: 2, ..info }.is_valid());
    }
}
