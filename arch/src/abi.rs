//! The boot-information block cvmm hands its own guests, and the fixed I/O ports they use.
//!
//! This file is plain `core` Rust with no dependencies, so the project's `no_std` guest
//! code includes it verbatim (`#[path]`): one definition for both sides of the ABI.
//!
//! A guest entered through the 64-bit entry finds the block's guest-physical address
//! in `RDI` (and the Linux zero page in `RSI`); it is always at
//! [`crate::layout::BOOT_INFO_START`].
//!
//! Layout (little-endian, [`BOOT_INFO_SIZE`] bytes):
//!
//! | offset | field |
//! |---|---|
//! | 0x00 | magic `"CVMMBOOT"` |
//! | 0x08 | version ([`BOOT_INFO_VERSION`]) |
//! | 0x0c | size of the block |
//! | 0x10 | vCPU count |
//! | 0x14 | flags (bit 0: confidential guest) |
//! | 0x18 | guest RAM in bytes |
//! | 0x20 | bounce region base: where the guest should place every device buffer |
//! | 0x28 | bounce region size |
//! | 0x30 | number of virtio-mmio devices (at most [`MAX_VIRTIO_DEVICES`]) |
//! | 0x34 | reserved |
//! | 0x38 | virtio devices: 16 bytes each: window base (u64), device ID (u32), GSI (u32) |
//! | 0x138 | SEV-SNP secrets page GPA (0 unless [`FLAG_SNP`]) |
//! | 0x140 | SEV-SNP CPUID page GPA (0 unless [`FLAG_SNP`]) |
//! | 0x148 | GPA of the ACPI RSDP (0: no ACPI tables; confidential guests have them, see `arch::acpi`) |
//!
//! # Entry points
//! A cvmm guest program is a static ELF whose entry point is its 64-bit entry (plain
//! KVM: long mode, identity paging). At entry + [`ENTRY32_OFFSET`] it has a 32-bit
//! protected-mode entry with paging off, `ESI` = boot info: how a confidential launch
//! starts it (the guest builds its own page tables with the platform's encryption bit).

/// `"CVMMBOOT"` as a little-endian `u64`.
pub const BOOT_INFO_MAGIC: u64 = u64::from_le_bytes(*b"CVMMBOOT");
/// Version of [`BootInfo`] this build writes.
pub const BOOT_INFO_VERSION: u32 = 4;
/// Most virtio devices the block lists.
pub const MAX_VIRTIO_DEVICES: usize = 16;
/// `flags` bit: the guest is confidential (its memory is private until it shares it).
pub const FLAG_CONFIDENTIAL: u32 = 1;
/// `flags` bit: the guest is an SEV-SNP guest (with [`FLAG_CONFIDENTIAL`]).
pub const FLAG_SNP: u32 = 1 << 1;
/// `flags` bit: the confidential platform is cvmm's software emulation, whose
/// VMGEXIT doorbell is a port write (`crate::ghcb::EMULATED_VMGEXIT_PORT`).
pub const FLAG_EMULATED_PLATFORM: u32 = 1 << 2;
/// `flags` bit: the guest is an Intel TDX guest (with [`FLAG_CONFIDENTIAL`]).
pub const FLAG_TDX: u32 = 1 << 3;
/// Offset of the 32-bit entry from a cvmm guest program's ELF entry point.
pub const ENTRY32_OFFSET: u64 = 0x40;
/// The 8 bytes right before the 32-bit entry, which mark a program that has one.
pub const ENTRY32_MARKER: [u8; 8] = *b"CVMM-E32";

/// Where cvmm's Linux boot firmware (`firmware/guests/linuxboot.rs`) finds the zero
/// page (`boot_params`) of a confidential direct Linux boot; equal to
/// `crate::layout::ZERO_PAGE_START`.
pub const LINUX_ZERO_PAGE: u64 = 0x7000;

/// I/O port of the 16550 debug serial console (COM1).
pub const SERIAL_PORT: u16 = 0x3f8;
/// I/O port of the debug-exit device: a write of one byte ends the VM, and `cvmm run`
/// exits with that byte as its status. Wider writes use their low byte.
pub const DEBUG_EXIT_PORT: u16 = 0xf4;
/// I/O port of the i8042 controller's command register: writing 0xfe resets (ends) the VM.
pub const I8042_COMMAND_PORT: u16 = 0x64;
/// I/O port of the i8042's status register (reads of the command port): bit 0 is set
/// while the data port holds a byte for the guest.
pub const I8042_STATUS_PORT: u16 = 0x64;
/// I/O port of the i8042's data register.
pub const I8042_DATA_PORT: u16 = 0x60;
/// IOAPIC pin (and GSI) of the i8042's keyboard interrupt.
pub const KEYBOARD_GSI: u32 = 1;
/// What the host's request to shut down looks like from the guest: these bytes
/// (Ctrl, Alt and Delete key presses in scancode set 2) arrive through the i8042 data
/// port, with the keyboard interrupt. A guest that honours the request ends the VM
/// itself (debug-exit port, reset or shutdown); cvmm ends it by force otherwise.
pub const CTRL_ALT_DEL_SCANCODES: [u8; 4] = [0x14, 0x11, 0xe0, 0x71];

/// One virtio-mmio device.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VirtioDeviceInfo {
    /// Guest-physical base of its virtio-mmio window.
    pub base: u64,
    /// Virtio device ID (1 net, 2 block, 3 console, 4 rng, 19 vsock).
    pub device_id: u32,
    /// Its interrupt: IOAPIC pin / GSI.
    pub gsi: u32,
}

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
    /// [`FLAG_CONFIDENTIAL`] and reserved zero bits.
    pub flags: u32,
    /// Guest RAM in bytes (what `--memory` asked for).
    pub mem_size: u64,
    /// Base of the region the guest uses for every device buffer (shared memory).
    pub bounce_base: u64,
    /// Size of that region.
    pub bounce_size: u64,
    /// Number of valid entries in `virtio`.
    pub virtio_count: u32,
    /// Reserved, zero.
    pub reserved: u32,
    /// The virtio-mmio devices.
    pub virtio: [VirtioDeviceInfo; MAX_VIRTIO_DEVICES],
    /// GPA of the SEV-SNP secrets page (0 unless [`FLAG_SNP`]).
    pub snp_secrets: u64,
    /// GPA of the SEV-SNP CPUID page (0 unless [`FLAG_SNP`]).
    pub snp_cpuid: u64,
    /// GPA of the ACPI RSDP, or 0 when the guest has no ACPI tables.
    pub acpi_rsdp: u64,
}

impl BootInfo {
    /// Whether the magic, version and size fields are ones this build understands.
    pub fn is_valid(&self) -> bool {
        // Reads the fields of a block the guest already copied out of memory once.
        self.magic == BOOT_INFO_MAGIC
            && self.version == BOOT_INFO_VERSION
            && self.size as usize >= core::mem::size_of::<BootInfo>()
            && self.virtio_count as usize <= MAX_VIRTIO_DEVICES
    }

    /// The valid virtio entries.
    pub fn virtio_devices(&self) -> &[VirtioDeviceInfo] {
        &self.virtio[..(self.virtio_count as usize).min(MAX_VIRTIO_DEVICES)]
    }

    /// The first virtio device with `device_id`.
    pub fn find_virtio(&self, device_id: u32) -> Option<VirtioDeviceInfo> {
        self.virtio_devices().iter().copied().find(|d| d.device_id == device_id)
    }
}

/// Size in bytes of [`BootInfo`] as written to guest memory.
pub const BOOT_INFO_SIZE: usize = 0x38 + 16 * MAX_VIRTIO_DEVICES + 24;

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
        b[32..40].copy_from_slice(&self.bounce_base.to_le_bytes());
        b[40..48].copy_from_slice(&self.bounce_size.to_le_bytes());
        b[48..52].copy_from_slice(&self.virtio_count.to_le_bytes());
        b[52..56].copy_from_slice(&self.reserved.to_le_bytes());
        for (i, d) in self.virtio.iter().enumerate() {
            let o = 0x38 + 16 * i;
            b[o..o + 8].copy_from_slice(&d.base.to_le_bytes());
            b[o + 8..o + 12].copy_from_slice(&d.device_id.to_le_bytes());
            b[o + 12..o + 16].copy_from_slice(&d.gsi.to_le_bytes());
        }
        let o = 0x38 + 16 * MAX_VIRTIO_DEVICES;
        b[o..o + 8].copy_from_slice(&self.snp_secrets.to_le_bytes());
        b[o + 8..o + 16].copy_from_slice(&self.snp_cpuid.to_le_bytes());
        b[o + 16..o + 24].copy_from_slice(&self.acpi_rsdp.to_le_bytes());
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialized_layout_matches_the_repr_c_struct() {
        assert_eq!(core::mem::size_of::<BootInfo>(), BOOT_INFO_SIZE);
        let mut info = BootInfo {
            magic: BOOT_INFO_MAGIC,
            version: BOOT_INFO_VERSION,
            size: BOOT_INFO_SIZE as u32,
            vcpus: 3,
            mem_size: 1 << 30,
            bounce_base: 0x80_0000,
            bounce_size: 0x10_0000,
            virtio_count: 1,
            ..Default::default()
        };
        info.virtio[0] = VirtioDeviceInfo { base: 0xd000_0000, device_id: 4, gsi: 5 };
        let b = info.to_bytes();
        assert_eq!(&b[0..8], b"CVMMBOOT");
        assert_eq!(u32::from_le_bytes(b[16..20].try_into().unwrap()), 3);
        assert_eq!(u64::from_le_bytes(b[24..32].try_into().unwrap()), 1 << 30);
        assert_eq!(u64::from_le_bytes(b[0x38..0x40].try_into().unwrap()), 0xd000_0000);
        assert_eq!(u32::from_le_bytes(b[0x40..0x44].try_into().unwrap()), 4);
        assert_eq!(u32::from_le_bytes(b[0x44..0x48].try_into().unwrap()), 5);
        // The struct's own memory image is the same (repr(C), little-endian host).
        assert!(info.is_valid());
        assert_eq!(info.find_virtio(4).unwrap().gsi, 5);
        assert!(info.find_virtio(2).is_none());
        let info = BootInfo { snp_cpuid: 0x4000, ..info };
        assert_eq!(u64::from_le_bytes(info.to_bytes()[0x140..0x148].try_into().unwrap()), 0x4000);
        let info = BootInfo { acpi_rsdp: 0xe_0000, ..info };
        assert_eq!(u64::from_le_bytes(info.to_bytes()[0x148..0x150].try_into().unwrap()), 0xe_0000);
        assert_eq!(BOOT_INFO_SIZE, 0x150);
        assert!(!BootInfo { version: 1, ..info }.is_valid());
        assert!(!BootInfo { virtio_count: 17, ..info }.is_valid());
    }
}
