//! The configuration of one VM, and its validation.

use std::path::PathBuf;
use std::time::Duration;

use arch::layout::{LayoutError, MemoryLayout};
use thiserror::Error;

/// Most vCPUs cvmm gives a VM (xAPIC IDs are 8 bits; 255 is the broadcast ID).
pub const MAX_VCPUS: u32 = 254;
/// Default guest memory.
pub const DEFAULT_MEMORY: u64 = 256 << 20;
/// Default kernel command line when a kernel is given without one.
pub const DEFAULT_CMDLINE: &str = "console=ttyS0";

/// What the guest boots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelSource {
    /// The bundled demo guest.
    Demo,
    /// A kernel image file (64-bit ELF, PVH ELF or bzImage).
    File(PathBuf),
}

/// A VM's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmConfig {
    /// Guest RAM in bytes.
    pub memory: u64,
    /// Number of vCPUs.
    pub vcpus: u32,
    /// The kernel.
    pub kernel: KernelSource,
    /// An initial ramdisk.
    pub initrd: Option<PathBuf>,
    /// Kernel command line (defaults to [`DEFAULT_CMDLINE`] for a kernel file, empty
    /// for the demo guest).
    pub cmdline: Option<String>,
    /// The KVM device node.
    pub kvm_device: PathBuf,
    /// End the VM if the guest has not ended it after this long.
    pub timeout: Option<Duration>,
    /// Give the guest a virtio-rng device.
    pub rng: bool,
}

impl Default for VmConfig {
    fn default() -> Self {
        Self {
            memory: DEFAULT_MEMORY,
            vcpus: 1,
            kernel: KernelSource::Demo,
            initrd: None,
            cmdline: None,
            kvm_device: PathBuf::from("/dev/kvm"),
            timeout: None,
            rng: false,
        }
    }
}

/// A configuration that cannot describe a VM, naming the field.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    /// `vcpus` is 0 or above [`MAX_VCPUS`].
    #[error("vcpus: {0} is not a valid vCPU count (1 to {MAX_VCPUS})")]
    Vcpus(u32),
    /// `memory` is out of range or unaligned.
    #[error("memory: {0}")]
    Memory(#[from] LayoutError),
    /// An initrd was given for the demo guest.
    #[error("initrd: the demo guest takes no initrd (give --kernel as well)")]
    InitrdWithoutKernel,
    /// A timeout of zero.
    #[error("timeout: must be greater than zero")]
    ZeroTimeout,
}

impl VmConfig {
    /// Checks every field that can be checked without touching files or KVM, and
    /// returns the memory layout the configuration implies.
    pub fn validate(&self) -> Result<MemoryLayout, ConfigError> {
        if self.vcpus == 0 || self.vcpus > MAX_VCPUS {
            return Err(ConfigError::Vcpus(self.vcpus));
        }
        if self.kernel == KernelSource::Demo && self.initrd.is_some() {
            return Err(ConfigError::InitrdWithoutKernel);
        }
        if self.timeout == Some(Duration::ZERO) {
            return Err(ConfigError::ZeroTimeout);
        }
        Ok(MemoryLayout::new(self.memory)?)
    }

    /// The command line the guest will get: the configured (or default) one, then one
    /// `virtio_mmio.device=` entry per virtio device so Linux finds them.
    pub fn effective_cmdline(&self) -> String {
        let base = match (&self.cmdline, &self.kernel) {
            (Some(c), _) => c.as_str(),
            (None, KernelSource::File(_)) => DEFAULT_CMDLINE,
            (None, KernelSource::Demo) => "",
        };
        let mut cmdline = base.to_string();
        for d in self.virtio_devices() {
            if !cmdline.is_empty() {
                cmdline.push(' ');
            }
            cmdline.push_str(&format!("virtio_mmio.device=4K@{:#x}:{}", d.base, d.gsi));
        }
        cmdline
    }

    /// The virtio devices this configuration asks for, with their MMIO windows and
    /// interrupt lines (fixed by their order).
    pub fn virtio_devices(&self) -> Vec<VirtioSlot> {
        let kinds = [(self.rng, VirtioKind::Rng)];
        kinds
            .iter()
            .filter(|(wanted, _)| *wanted)
            .enumerate()
            .map(|(i, (_, kind))| VirtioSlot {
                kind: *kind,
                base: arch::layout::VIRTIO_MMIO_START + i as u64 * arch::layout::VIRTIO_MMIO_STRIDE,
                gsi: arch::layout::VIRTIO_FIRST_GSI + i as u32,
            })
            .collect()
    }
}

/// Which virtio device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VirtioKind {
    /// virtio-rng.
    Rng,
}

impl VirtioKind {
    /// The virtio device ID.
    pub fn device_id(self) -> u32 {
        match self {
            VirtioKind::Rng => devices::virtio::device_id::RNG,
        }
    }
}

/// Where a virtio device sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VirtioSlot {
    /// The device.
    pub kind: VirtioKind,
    /// Its virtio-mmio window.
    pub base: u64,
    /// Its IOAPIC pin / GSI.
    pub gsi: u32,
}

impl VmConfig {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_is_valid() {
        assert_eq!(VmConfig::default().validate().unwrap().mem_size(), DEFAULT_MEMORY);
    }

    #[test]
    fn zero_and_too_many_vcpus_are_rejected() {
        let c = VmConfig { vcpus: 0, ..Default::default() };
        assert_eq!(c.validate(), Err(ConfigError::Vcpus(0)));
        let c = VmConfig { vcpus: 255, ..Default::default() };
        assert_eq!(c.validate(), Err(ConfigError::Vcpus(255)));
    }

    #[test]
    fn memory_errors_name_the_field() {
        let c = VmConfig { memory: 4096, ..Default::default() };
        assert!(c.validate().unwrap_err().to_string().starts_with("memory: "));
    }

    #[test]
    fn initrd_needs_a_kernel() {
        let c = VmConfig { initrd: Some("x".into()), ..Default::default() };
        assert_eq!(c.validate(), Err(ConfigError::InitrdWithoutKernel));
    }

    #[test]
    fn cmdline_defaults_depend_on_the_kernel() {
        assert_eq!(VmConfig::default().effective_cmdline(), "");
        let c = VmConfig { kernel: KernelSource::File("k".into()), ..Default::default() };
        assert_eq!(c.effective_cmdline(), DEFAULT_CMDLINE);
        let c = VmConfig { rng: true, ..c };
        assert_eq!(c.effective_cmdline(), "console=ttyS0 virtio_mmio.device=4K@0xd0000000:5");
    }
}
