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
    /// Give the guest a virtio-console writing to the VMM's console output.
    pub console: bool,
    /// Disks (virtio-blk), in order.
    pub disks: Vec<DiskConfig>,
    /// A network card (virtio-net).
    pub net: Option<NetConfig>,
    /// A socket device (virtio-vsock, hybrid: host side over Unix sockets).
    pub vsock: Option<VsockConfig>,
    /// Confine the VM's threads with seccomp filters (`vmm::seccomp`); on by default,
    /// off only for debugging.
    pub seccomp: bool,
    /// What the host may do with guest memory: include it in core dumps, leave it out,
    /// or lock it in RAM.
    pub guest_memory: GuestMemoryPolicy,
    /// The trusted execution environment: none (a plain VM) or SEV-SNP.
    pub tee: Tee,
}

/// The TEE a VM runs in.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Tee {
    /// A plain VM: all memory shared with the host.
    #[default]
    None,
    /// AMD SEV-SNP.
    Snp(SnpConfig),
    /// Intel TDX.
    Tdx(TdxConfig),
}

/// An Intel TDX guest's launch options: QEMU's `tdx-guest` options (names and value
/// formats: [`launch::tdx::kvm::options::TdxKvmOptions`]), and the platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TdxConfig {
    /// Run on cvmm's software-emulated TDX platform instead of TDX hardware.
    pub emulated: bool,
    /// attributes, sept-ve-disable, mrconfigid, mrowner, mrownerconfig,
    /// quote-generation-socket.
    pub options: launch::tdx::kvm::options::TdxKvmOptions,
}

impl TdxConfig {
    /// A TD with QEMU's default `tdx-guest` options.
    pub fn new(emulated: bool) -> Self {
        Self { emulated, options: launch::tdx::kvm::options::TdxKvmOptions::default() }
    }
}

impl Tee {
    /// Whether the guest's memory is private (confidential guest).
    pub fn is_confidential(&self) -> bool {
        !matches!(self, Tee::None)
    }

    /// A short name: "plain", "snp" or "snp-emulated".
    pub fn name(&self) -> &'static str {
        match self {
            Tee::None => "plain",
            Tee::Snp(s) if s.emulated => "snp-emulated",
            Tee::Snp(_) => "snp",
            Tee::Tdx(t) if t.emulated => "tdx-emulated",
            Tee::Tdx(_) => "tdx",
        }
    }
}

/// An SEV-SNP guest's launch options: QEMU's `sev-snp-guest` options (names and value
/// formats: [`launch::snp::kvm::options::SnpKvmOptions`]), and the platform.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SnpConfig {
    /// Run on cvmm's software-emulated SNP platform instead of SNP hardware.
    pub emulated: bool,
    /// policy, host-data, id-block, id-auth, author-key-enabled, ...
    pub options: launch::snp::kvm::options::SnpKvmOptions,
    /// A certificate blob (GHCB certificate-table format) served to the guest's
    /// extended attestation requests on SNP hardware (`certs-file`, cvmm's own option;
    /// needs a host kernel with KVM_SEV_SNP_ENABLE_REQ_CERTS). The emulated platform
    /// serves its own chain.
    pub certs_file: Option<std::path::PathBuf>,
}

impl SnpConfig {
    /// Applies `key=value,...` options with QEMU's sev-snp-guest names and value formats
    /// (e.g. `policy=0x30000,host-data=BASE64,id-block=BASE64,id-auth=BASE64`), and
    /// cvmm's `certs-file=PATH`.
    pub fn apply_options(&mut self, options: &str) -> Result<(), String> {
        for item in options.split(',').filter(|s| !s.is_empty()) {
            let (key, value) = item.split_once('=').ok_or_else(|| format!("'{item}' is not KEY=VALUE"))?;
            if key == "certs-file" {
                self.certs_file = Some(value.into());
                continue;
            }
            self.options.set(key, value).map_err(|e| e.to_string())?;
        }
        self.options.check().map_err(|e| e.to_string())
    }
}

/// The most memory a direct-boot SNP guest may have: cvmm's guest firmware maps and
/// validates the memory below the 3 GiB MMIO hole.
pub const MAX_SNP_MEMORY: u64 = arch::layout::MMIO_HOLE_START;

/// How guest memory is treated by the host kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GuestMemoryPolicy {
    /// Ordinary memory (in core dumps, swappable). The default for plain VMs.
    #[default]
    Dump,
    /// Left out of core dumps (MADV_DONTDUMP). Confidential VMs will default to this
    /// for their private memory.
    DontDump,
    /// Locked in RAM (mlock) and left out of core dumps.
    Lock,
}

impl std::str::FromStr for GuestMemoryPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "dump" => Ok(Self::Dump),
            "dontdump" | "no-dump" => Ok(Self::DontDump),
            "lock" => Ok(Self::Lock),
            _ => Err(format!("guest-memory: '{s}' is not dump, dontdump or lock")),
        }
    }
}

/// A virtio-blk disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskConfig {
    /// Raw image file.
    pub path: PathBuf,
    /// Refuse writes.
    pub read_only: bool,
}

/// A virtio-net backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetConfig {
    /// A tap device, by name.
    Tap(String),
    /// A Unix datagram socket to connect to (one frame per datagram).
    Socket(PathBuf),
    /// Files of length-prefixed records (`devices::virtio::net_file`): tx appended to
    /// `tx`, rx read from `rx` (default: `<tx>.rx`, if it exists).
    File {
        /// The tx file (created if missing, appended to).
        tx: PathBuf,
        /// The rx file.
        rx: Option<PathBuf>,
    },
    /// Shared-memory rings in a file cvmm creates and maps (`devices::virtio::net_ring`),
    /// with its doorbell FIFO at `<path>.kick`.
    Ring {
        /// The ring file (replaced at start; tmpfs, e.g. /dev/shm, for speed).
        path: PathBuf,
        /// Data bytes of each ring: a multiple of 4096 from 128 KiB to 1 GiB.
        size: usize,
    },
}

impl NetConfig {
    /// `ring=PATH[,size=N]` with `size` already a number of bytes: checks both.
    pub fn ring(path: PathBuf, size: Option<u64>) -> Result<Self, String> {
        if path.as_os_str().is_empty() {
            return Err("net: ring=PATH[,size=N] needs a non-empty path".into());
        }
        let size = size.unwrap_or(devices::virtio::net_ring::DEFAULT_RING_SIZE as u64);
        let size = devices::virtio::net_ring::check_ring_size(size).map_err(|e| format!("net: {e}"))?;
        Ok(NetConfig::Ring { path, size })
    }
}

/// A virtio-vsock device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VsockConfig {
    /// The guest's context ID (3 or more).
    pub cid: u64,
    /// Host side: a guest connection to port P goes to the Unix socket `<path>_<P>`.
    pub uds_path: PathBuf,
}

/// Splits `a=b,c=d,flag` into pairs (a bare word has an empty value).
fn options(s: &str) -> impl Iterator<Item = (&str, &str)> {
    s.split(',').filter(|p| !p.is_empty()).map(|p| p.split_once('=').unwrap_or((p, "")))
}

impl std::str::FromStr for DiskConfig {
    type Err = String;

    /// `PATH[,ro]`.
    fn from_str(s: &str) -> Result<Self, String> {
        let mut parts = s.split(',');
        let path = parts.next().filter(|p| !p.is_empty()).ok_or("disk: a path is required (PATH[,ro])")?;
        let mut read_only = false;
        for opt in parts {
            match opt {
                "ro" | "readonly" => read_only = true,
                "rw" => read_only = false,
                other => return Err(format!("disk: unknown option '{other}' (PATH[,ro])")),
            }
        }
        Ok(DiskConfig { path: path.into(), read_only })
    }
}

impl std::str::FromStr for NetConfig {
    type Err = String;

    /// `tap=NAME`, `socket=PATH`, `file=PATH[,rx=RXPATH]` or `ring=PATH[,size=N]`.
    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once('=') {
            Some(("tap", name)) if !name.is_empty() && name.len() < 16 => Ok(NetConfig::Tap(name.into())),
            Some(("tap", _)) => Err("net: a tap name has 1 to 15 characters".into()),
            Some(("socket", path)) if !path.is_empty() => Ok(NetConfig::Socket(path.into())),
            Some(("file", rest)) => {
                let (tx, rx) = match rest.split_once(",rx=") {
                    Some((tx, rx)) => (tx, Some(rx)),
                    None => (rest, None),
                };
                if tx.is_empty() || rx.is_some_and(str::is_empty) {
                    return Err("net: file=PATH[,rx=RXPATH] needs non-empty paths".into());
                }
                Ok(NetConfig::File { tx: tx.into(), rx: rx.map(Into::into) })
            }
            Some(("ring", rest)) => {
                let (path, size) = match rest.rsplit_once(",size=") {
                    Some((path, size)) => {
                        (path, Some(arch::layout::parse_size(size).map_err(|e| format!("net: {e}"))?))
                    }
                    None => (rest, None),
                };
                NetConfig::ring(path.into(), size)
            }
            _ => Err(format!(
                "net: '{s}' is neither tap=NAME, socket=PATH, file=PATH[,rx=RXPATH] nor ring=PATH[,size=N]"
            )),
        }
    }
}

impl std::str::FromStr for VsockConfig {
    type Err = String;

    /// `cid=N,socket=PATH`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (mut cid, mut path) = (None, None);
        for (k, v) in options(s) {
            match k {
                "cid" => cid = Some(v.parse::<u64>().map_err(|_| format!("vsock: cid '{v}' is not a number"))?),
                "socket" | "uds" | "uds_path" if !v.is_empty() => path = Some(PathBuf::from(v)),
                other => return Err(format!("vsock: unknown option '{other}' (cid=N,socket=PATH)")),
            }
        }
        let cid = cid.ok_or("vsock: cid=N is required")?;
        if cid < 3 || cid > u64::from(u32::MAX) {
            return Err(format!("vsock: cid {cid} is reserved or too large (3 to 4294967295)"));
        }
        Ok(VsockConfig { cid, uds_path: path.ok_or("vsock: socket=PATH is required")? })
    }
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
            console: false,
            disks: Vec::new(),
            net: None,
            vsock: None,
            seccomp: true,
            guest_memory: GuestMemoryPolicy::Dump,
            tee: Tee::None,
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
    /// A question about a TDX launch for a configuration without `--tee tdx`.
    #[error("tee: this needs a TDX configuration (--tee tdx)")]
    NotTdx,
    /// A question about an SEV-SNP launch for a configuration without `--tee snp`.
    #[error("tee: this needs an SEV-SNP configuration (--tee snp)")]
    NotSnp,
    /// An SEV-SNP guest with more memory than cvmm's firmware maps.
    #[error("memory: a confidential guest may have at most {} MiB (cvmm's guest firmware maps the memory below the MMIO hole)", MAX_SNP_MEMORY >> 20)]
    SnpMemory,
    /// More virtio devices than interrupt lines.
    #[error("devices: {0} virtio devices, more than the {max} cvmm can wire", max = arch::layout::VIRTIO_MAX_DEVICES)]
    TooManyDevices(usize),
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
        if self.tee.is_confidential() && self.memory > MAX_SNP_MEMORY {
            return Err(ConfigError::SnpMemory);
        }
        let n = self.virtio_devices().len();
        if n > arch::layout::VIRTIO_MAX_DEVICES as usize {
            return Err(ConfigError::TooManyDevices(n));
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
        let mut kinds = Vec::new();
        // A confidential guest gets nothing but virtio: its console is virtio-console.
        if self.console || self.tee.is_confidential() {
            kinds.push(VirtioKind::Console);
        }
        kinds.extend((0..self.disks.len()).map(VirtioKind::Block));
        if self.net.is_some() {
            kinds.push(VirtioKind::Net);
        }
        if self.vsock.is_some() {
            kinds.push(VirtioKind::Vsock);
        }
        if self.rng {
            kinds.push(VirtioKind::Rng);
        }
        kinds
            .into_iter()
            .enumerate()
            .map(|(i, kind)| VirtioSlot {
                kind,
                base: arch::layout::VIRTIO_MMIO_START + i as u64 * arch::layout::VIRTIO_MMIO_STRIDE,
                gsi: arch::layout::VIRTIO_FIRST_GSI + i as u32,
            })
            .collect()
    }
}

/// Which virtio device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VirtioKind {
    /// virtio-console.
    Console,
    /// virtio-blk: the index into [`VmConfig::disks`].
    Block(usize),
    /// virtio-net.
    Net,
    /// virtio-vsock.
    Vsock,
    /// virtio-rng.
    Rng,
}

impl VirtioKind {
    /// A name for messages.
    pub fn name(self) -> &'static str {
        match self {
            VirtioKind::Console => "virtio-console",
            VirtioKind::Block(_) => "virtio-blk",
            VirtioKind::Net => "virtio-net",
            VirtioKind::Vsock => "virtio-vsock",
            VirtioKind::Rng => "virtio-rng",
        }
    }

    /// The virtio device ID.
    pub fn device_id(self) -> u32 {
        use devices::virtio::device_id;
        match self {
            VirtioKind::Console => device_id::CONSOLE,
            VirtioKind::Block(_) => device_id::BLOCK,
            VirtioKind::Net => device_id::NET,
            VirtioKind::Vsock => device_id::VSOCK,
            VirtioKind::Rng => device_id::RNG,
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
    fn device_options_parse_and_bad_ones_are_named() {
        assert_eq!("/d.img,ro".parse::<DiskConfig>(), Ok(DiskConfig { path: "/d.img".into(), read_only: true }));
        assert!("/d.img,rx".parse::<DiskConfig>().unwrap_err().contains("unknown option 'rx'"));
        assert!("".parse::<DiskConfig>().is_err());
        assert_eq!("tap=tap0".parse::<NetConfig>(), Ok(NetConfig::Tap("tap0".into())));
        assert_eq!("socket=/s".parse::<NetConfig>(), Ok(NetConfig::Socket("/s".into())));
        assert!("tap=".parse::<NetConfig>().is_err());
        assert!("vde=x".parse::<NetConfig>().is_err());
        assert_eq!("file=/w".parse::<NetConfig>(), Ok(NetConfig::File { tx: "/w".into(), rx: None }));
        assert_eq!(
            "file=/w,rx=/r".parse::<NetConfig>(),
            Ok(NetConfig::File { tx: "/w".into(), rx: Some("/r".into()) })
        );
        assert!("file=".parse::<NetConfig>().unwrap_err().contains("non-empty"));
        assert!("file=/w,rx=".parse::<NetConfig>().unwrap_err().contains("non-empty"));
        assert_eq!(
            "ring=/dev/shm/r".parse::<NetConfig>(),
            Ok(NetConfig::Ring { path: "/dev/shm/r".into(), size: 4 << 20 })
        );
        assert_eq!(
            "ring=/r,size=256K".parse::<NetConfig>(),
            Ok(NetConfig::Ring { path: "/r".into(), size: 256 << 10 })
        );
        assert_eq!(
            "ring=/r,size=1048576".parse::<NetConfig>(),
            Ok(NetConfig::Ring { path: "/r".into(), size: 1 << 20 })
        );
        assert!("ring=".parse::<NetConfig>().unwrap_err().contains("non-empty"));
        assert!("ring=/r,size=".parse::<NetConfig>().unwrap_err().contains("not a size"));
        assert_eq!("ring=/r,size=3M".parse::<NetConfig>(), Ok(NetConfig::Ring { path: "/r".into(), size: 3 << 20 }));
        assert!("ring=/r,size=1000000".parse::<NetConfig>().unwrap_err().contains("multiple of 4096"));
        assert!("ring=/r,size=64K".parse::<NetConfig>().unwrap_err().contains("multiple of 4096 from 131072"));
        assert!("ring=/r,size=2G".parse::<NetConfig>().unwrap_err().contains("multiple of 4096"));
        assert!("vde=x".parse::<NetConfig>().unwrap_err().contains("ring=PATH"));
        let v: VsockConfig = "cid=3,socket=/tmp/v".parse().unwrap();
        assert_eq!((v.cid, v.uds_path.to_str().unwrap()), (3, "/tmp/v"));
        assert!("cid=2,socket=/x".parse::<VsockConfig>().unwrap_err().contains("reserved"));
        assert!("socket=/x".parse::<VsockConfig>().unwrap_err().contains("cid=N is required"));
        assert!("cid=x,socket=/x".parse::<VsockConfig>().is_err());
    }

    #[test]
    fn devices_get_consecutive_windows_and_pins_in_a_fixed_order() {
        let c = VmConfig {
            rng: true,
            console: true,
            disks: vec!["/a".parse().unwrap(), "/b".parse().unwrap()],
            ..Default::default()
        };
        let slots = c.virtio_devices();
        let kinds: Vec<_> = slots.iter().map(|s| s.kind).collect();
        assert_eq!(kinds, vec![VirtioKind::Console, VirtioKind::Block(0), VirtioKind::Block(1), VirtioKind::Rng]);
        assert_eq!(slots[3].base, 0xd000_3000);
        assert_eq!(slots[3].gsi, 8);
        let many = VmConfig { disks: vec!["/a".parse().unwrap(); 20], ..Default::default() };
        assert_eq!(many.validate(), Err(ConfigError::TooManyDevices(20)));
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
