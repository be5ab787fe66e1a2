//! From a [`VmConfig`] to a [`Vm`] ready to run, in one straight chain of steps.
//!
//! Every step either succeeds or returns a [`BuildError`] naming what failed; all
//! resources created so far are owned by locals and released on the way out, so a
//! failed build leaves nothing behind.

use std::fs::File;
use std::io::{Cursor, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};

use arch::abi::{
    BootInfo, VirtioDeviceInfo, BOOT_INFO_MAGIC, BOOT_INFO_SIZE, BOOT_INFO_VERSION, DEBUG_EXIT_PORT, KEYBOARD_GSI,
    SERIAL_PORT,
};
use arch::boot::BootBlobs;
use arch::layout::{
    MemoryLayout, BOOT_INFO_START, CMDLINE_START, GDT_START, HIGH_MEMORY_START, IOAPIC_SIZE, IOAPIC_START,
    PVH_INFO_START, ZERO_PAGE_START,
};
use arch::regs::BootEntry;
use devices::bus::{Bus, BusDevice};
use devices::ioapic::Ioapic;
use devices::legacy::{DebugExit, I8042};
use devices::serial::{SerialConsole, SERIAL_PORT_COUNT};
use devices::virtio::block::{Block, BlockOptions};
use devices::virtio::net::{Net, NetBackend, TapBackend, UnixDatagramBackend};
use devices::virtio::vsock::Vsock;
use devices::virtio::{self, mmio::MmioTransport, rng::Rng, SharedMemory, VirtioDevice, VirtioInterrupt};
use devices::EventFdTrigger;
use firmware::kernel::{KernelError, LoadedKernel};
use kvm_bindings::{kvm_enable_cap, KVM_API_VERSION, KVM_CAP_SPLIT_IRQCHIP};
use kvm_ioctls::{Cap, IoEventAddress, Kvm, VcpuFd, VmFd};
use launch::plain::PlainKvm;
use launch::snp::emulated::EmulatedSnp;
use launch::snp::real::RealSnp;
use launch::tdx::emulated::{EmulatedTdx, TdxModuleConfig};
use launch::tdx::real::RealTdx;
use launch::{LaunchBackend, LaunchError, VcpuInit};
use thiserror::Error;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion, ReadVolatile};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::config::{ConfigError, GuestMemoryPolicy, KernelSource, NetConfig, Tee, VirtioKind, VmConfig};
use crate::device_loop::Subscriber;
use crate::irq::KvmMsiRouter;
use crate::stats::StepTimes;
use crate::vm::{ChannelStop, Console, LaunchInfo, Vm};

/// IOAPIC pin (and GSI) of the COM1 serial port.
const SERIAL_GSI: u32 = 4;
/// Pins reserved for the user-space IOAPIC in KVM_CAP_SPLIT_IRQCHIP.
const IOAPIC_PINS: u64 = devices::ioapic::NUM_PINS as u64;
/// The i8042's ports: 0x60 (data) to 0x64 (command).
const I8042_BASE: u64 = 0x60;
const I8042_LEN: u64 = 5;

/// Errors from building a VM; each says which input or step failed.
#[derive(Debug, Error)]
pub enum BuildError {
    /// The configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    /// The kernel file cannot be opened or read.
    #[error("cannot read kernel {path}: {source}")]
    KernelFile {
        /// The path given.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The kernel file is not a kernel cvmm can load, or does not fit.
    #[error("cannot load kernel {path}: {source}")]
    Kernel {
        /// The path given ("<demo guest>" for the bundled one).
        path: PathBuf,
        /// The loader's error.
        #[source]
        source: KernelError,
    },
    /// The kernel wants to load below 1 MiB, where cvmm keeps its boot structures.
    #[error("cannot load kernel {path}: it loads at {start:#x}, below 1 MiB")]
    KernelTooLow {
        /// The path given.
        path: PathBuf,
        /// Its lowest load address.
        start: u64,
    },
    /// The initrd file cannot be opened or read.
    #[error("cannot read initrd {path}: {source}")]
    InitrdFile {
        /// The path given.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The initrd does not fit or the command line is invalid.
    #[error("{0}")]
    BootData(#[source] KernelError),
    /// /dev/kvm cannot be opened.
    #[error("cannot open the KVM device {path}: {source}{hint}")]
    KvmOpen {
        /// The device path.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
        /// What to do about it.
        hint: &'static str,
    },
    /// The device does not answer as KVM does.
    #[error("{path} is not a KVM device (KVM_GET_API_VERSION returned {version})")]
    NotKvm {
        /// The device path.
        path: PathBuf,
        /// What the ioctl returned.
        version: i32,
    },
    /// A capability cvmm requires is missing.
    #[error("the host KVM lacks {0}, which cvmm requires")]
    MissingCapability(&'static str),
    /// More vCPUs than KVM supports.
    #[error("vcpus: {requested} is more than this host's KVM supports ({max})")]
    TooManyVcpus {
        /// Requested.
        requested: u32,
        /// KVM's limit.
        max: usize,
    },
    /// A launch backend step failed.
    #[error(transparent)]
    Launch(#[from] LaunchError),
    /// KVM_ENABLE_CAP(KVM_CAP_SPLIT_IRQCHIP) failed.
    #[error("cannot enable the split irqchip: {0}")]
    SplitIrqchip(#[source] kvm_ioctls::Error),
    /// Guest memory could not be mapped.
    #[error("cannot allocate {size} bytes of guest memory: {message}")]
    GuestMemory {
        /// Requested size.
        size: u64,
        /// The error.
        message: String,
    },
    /// Writing a boot structure into guest memory failed.
    #[error("cannot write the {what} at {gpa:#x} into guest memory: {message}")]
    WriteBootData {
        /// Which structure.
        what: &'static str,
        /// Where.
        gpa: u64,
        /// The error.
        message: String,
    },
    /// The MP table cannot describe the configured vCPUs.
    #[error("cannot build the MP table: {0}")]
    MpTable(#[source] arch::mptable::MptableError),
    /// A disk image could not be opened.
    #[error("disk {path}: {message}")]
    Disk {
        /// The image path.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A device could not be set up.
    #[error("cannot set up the {what}: {source}")]
    Device {
        /// Which device.
        what: &'static str,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A real TDX launch was asked for on a host that cannot do it.
    #[error("--tee tdx: {0} (use --emulated for cvmm's software-emulated TDX platform)")]
    TdxHardware(String),
    /// A real SEV-SNP launch was asked for on a host that cannot do it.
    #[error("--tee snp: {0} (use --emulated for cvmm's software-emulated SNP platform)")]
    SnpHardware(String),
    /// An SEV-SNP launch option is invalid or the platform cannot be prepared.
    #[error("--tee snp: {0}")]
    Snp(String),
    /// The SNP launch plan could not be built.
    #[error("SEV-SNP launch plan: {0}")]
    SnpPlan(#[from] crate::snp_launch::SnpLaunchError),
    /// KVM_CREATE_VCPU failed.
    #[error("cannot create vCPU {index}: {source}")]
    CreateVcpu {
        /// vCPU index.
        index: u32,
        /// KVM's error.
        #[source]
        source: kvm_ioctls::Error,
    },
}

/// Builds a VM from `config`, writing the guest's serial output to `console`.
///
/// ```no_run
/// let config = vmm::VmConfig { vcpus: 2, ..Default::default() };
/// let mut vm = vmm::build_vm(&config, Box::new(std::io::stdout())).unwrap();
/// let exit = vm.run().unwrap();
/// assert_eq!(exit, vmm::VmExit::GuestExit(0));
/// ```
pub fn build_vm(config: &VmConfig, console: Box<dyn Write + Send>) -> Result<Vm, BuildError> {
    let mut steps = StepTimes::start();
    let layout = config.validate()?;
    let mut kernel_image = open_kernel(&config.kernel)?;
    let mut initrd = config.initrd.as_deref().map(open_initrd).transpose()?;
    // A confidential guest given a bzImage: cvmm's Linux boot firmware runs it.
    let linux = confidential_linux(config, &mut kernel_image, &mut initrd)?;
    let kvm = open_kvm(&config.kvm_device)?;
    check_kvm(&kvm, config.vcpus)?;
    steps.mark("validate inputs and open KVM");

    let snp_config = match &config.tee {
        Tee::Snp(s) => Some(s),
        Tee::None | Tee::Tdx(_) => None,
    };
    let tdx_config = match &config.tee {
        Tee::Tdx(t) => Some(t),
        _ => None,
    };
    let tdx = tdx_config.is_some();
    let mut cert_blob = None;
    let mut backend = match snp_config {
        None if tdx_config.is_some_and(|t| !t.emulated) => {
            let host = launch::tdx::kvm::probe::probe_host(&kvm).map_err(|e| BuildError::TdxHardware(e.to_string()))?;
            let cpuid = snp_cpuid_table(&kvm)?.to_vec();
            let options = tdx_config.map(|t| t.options.clone()).unwrap_or_default();
            Backend::Tdx(RealTdx::new(host, options, cpuid)?)
        }
        None if tdx => {
            let chain = launch::tdx::certs::EmulatedIntelChain::load_or_create_default()
                .map_err(|e| BuildError::TdxHardware(format!("the emulated Intel key chain: {e}")))?;
            let backend =
                EmulatedTdx::new(TdxModuleConfig::default(), Arc::new(chain)).map_err(BuildError::TdxHardware)?;
            steps.mark("prepare the TDX platform (key chain, quoting enclave)");
            Backend::TdxEmulated(backend)
        }
        None => Backend::Plain(PlainKvm::new()),
        Some(s) if s.emulated => {
            let b = Backend::SnpEmulated(EmulatedSnp::new(psp_launch(&kvm, s)?));
            steps.mark("prepare the SNP platform (policy, key chain)");
            b
        }
        Some(s) => {
            let host = launch::snp::kvm::probe::probe_host(&kvm).map_err(|e| BuildError::SnpHardware(e.to_string()))?;
            let certs = match &s.certs_file {
                Some(path) => Some(
                    launch::snp::kvm::exits::CertBlob::from_file(path)
                        .map_err(|e| BuildError::Snp(format!("certs-file: {e}")))?,
                ),
                None => None,
            };
            cert_blob = certs.clone();
            Backend::Snp(RealSnp::new(host, s.options.clone(), crate::snp_launch::SEV_FEATURES, certs.is_some())?)
        }
    };
    let vm = Arc::new(backend.as_dyn().create_vm(&kvm)?);
    // A real TD's backend enables the split irqchip itself (KVM requires it of a TD).
    if !matches!(backend, Backend::Tdx(_)) {
        enable_split_irqchip(&vm)?;
    }
    // A TD starts at the reset vector: the top page below 4 GiB is guest memory too.
    let extra: &[(u64, u64)] = if tdx { &[(launch::plan::tdx_direct::RESET_PAGE, 0x1000)] } else { &[] };
    let mem = create_guest_memory(&layout, extra, config.guest_memory)?;
    backend.as_dyn().add_memory(&vm, &mem)?;
    // A plain VM shares all of its memory with the devices; a confidential one none,
    // until the guest converts pages.
    let shared = Arc::new(if config.tee.is_confidential() {
        SharedMemory::all_private(&mem)
    } else {
        SharedMemory::all_shared(&mem)
    });
    steps.mark("create VM and guest memory");

    let kernel = match &linux {
        Some(_) => load_linux_boot_firmware(&mem)?,
        None => load_kernel(&mem, &config.kernel, &mut kernel_image)?,
    };
    // The entry state of a confidential guest comes from its plan (VMSAs) or from the
    // TDX module; this one is not used then.
    let unused_entry = BootEntry::Long64 { rip: 0, zero_page: 0, boot_info: BOOT_INFO_START };
    let mut tdx_runtime = None;
    let (entry, snp_runtime, launch_info) = match snp_config {
        None if tdx => {
            let plan = crate::snp_launch::tdx_plan(config, &layout, &mem, &kernel, linux.as_ref())?;
            backend.as_dyn().load_plan(&vm, &mem, &plan)?;
            if let Backend::TdxEmulated(b) = &backend {
                if let Some(p) = b.platform() {
                    tdx_runtime = Some((p, snp_cpuid_table(&kvm)?));
                }
            }
            (unused_entry, None, LaunchInfo::tdx(config.tee.name(), &plan))
        }
        None => (write_boot_data(&mem, &layout, config, &kernel, initrd)?, None, LaunchInfo::plain()),
        Some(snp) => {
            let table = snp_cpuid_table(&kvm)?;
            let page = crate::snp_launch::cpuid_page(&table)?;
            let plan = crate::snp_launch::snp_plan(config, &layout, snp, &mem, &kernel, linux.as_ref(), Some(page))?;
            backend.as_dyn().load_plan(&vm, &mem, &plan)?;
            let platform = match &backend {
                Backend::SnpEmulated(b) => b.platform(),
                _ => None,
            };
            (unused_entry, platform.map(|p| (p, table)), LaunchInfo::snp(config.tee.name(), &plan))
        }
    };
    steps.mark("load kernel and boot data");

    let (events_tx, events_rx) = mpsc::channel();
    let stop: Arc<dyn devices::StopHandler> = Arc::new(ChannelStop(events_tx.clone()));
    let console = SharedWriter(Arc::new(Mutex::new(console)));
    let mut devs = create_devices(&vm, Box::new(console.clone()), stop, !config.tee.is_confidential())?;
    let subscribers = create_virtio_devices(&vm, config, &shared, &mut devs, &console)?;
    steps.mark("create devices");

    let vcpus = create_vcpus(&kvm, &vm, backend.as_dyn(), config.vcpus, entry)?;
    backend.as_dyn().finalize(&vm, &mem)?;
    steps.mark("create vCPUs and finalize");
    let backend_name = backend.as_dyn().name();
    let (snp_real, tdx_real) = match backend {
        Backend::Snp(b) => (b.into_runtime(), None),
        Backend::Tdx(b) => (None, b.into_runtime()),
        _ => (None, None),
    };
    let quotes = Arc::new(crate::quote_thread::QuoteThread::new());
    let tdx_real = tdx_real.map(|launch| {
        let msi_vm = vm.clone();
        let injector: Arc<dyn launch::tdx::kvm::exits::MsiInjector> =
            Arc::new(move |msi| msi_vm.signal_msi(msi).map(|_| ()));
        let handler = Arc::new(launch.exit_handler(injector, quotes.clone()));
        (launch, handler)
    });

    Ok(Vm {
        vcpus,
        pio: Arc::new(devs.pio),
        mmio: Arc::new(devs.mmio),
        serial: devs.serial,
        irqfds: devs.irqfds,
        subscribers,
        shared,
        events_tx,
        events_rx,
        timeout: config.timeout,
        seccomp: config.seccomp,
        steps,
        backend_name,
        snp_real,
        tdx_real,
        snp_certs: cert_blob
            .map(|b| Arc::new(launch::snp::kvm::exits::CertServer::new(launch::snp::kvm::exits::CertSource::Blob(b)))),
        tdx: tdx_runtime,
        launch: launch_info,
        i8042: devs.i8042,
        snp: snp_runtime,
        quotes,
        vm,
        mem,
    })
}

/// The SEV-SNP launch plan `config` describes and its launch digest, as the launch
/// would produce them (the CPUID page, whose contents are not measured, left empty):
/// what `cvmm measure --tee snp` prints for the arguments of a `cvmm run`.
pub fn snp_measurement(config: &VmConfig) -> Result<(launch::plan::LaunchPlan, [u8; 48]), BuildError> {
    let layout = config.validate()?;
    let Tee::Snp(snp) = &config.tee else {
        return Err(BuildError::Config(ConfigError::NotSnp));
    };
    let (mem, kernel, linux) = measured_program(config, &layout)?;
    let plan = crate::snp_launch::snp_plan(config, &layout, snp, &mem, &kernel, linux.as_ref(), None)?;
    let digest = launch::measure::snp::launch_digest(&plan)
        .map_err(|e| BuildError::SnpPlan(crate::snp_launch::SnpLaunchError::ReadImage(e.to_string())))?;
    Ok((plan, digest))
}

/// The TDX launch plan `config` describes and its MRTD, as the launch would produce
/// them: what `cvmm measure --tee tdx` prints for the arguments of a `cvmm run`.
pub fn tdx_measurement(config: &VmConfig) -> Result<(launch::plan::LaunchPlan, [u8; 48]), BuildError> {
    let layout = config.validate()?;
    if !matches!(config.tee, Tee::Tdx(_)) {
        return Err(BuildError::Config(ConfigError::NotTdx));
    }
    let (mem, kernel, linux) = measured_program(config, &layout)?;
    let plan = crate::snp_launch::tdx_plan(config, &layout, &mem, &kernel, linux.as_ref())?;
    let mrtd = launch::measure::tdx::mrtd(&plan)
        .map_err(|e| BuildError::SnpPlan(crate::snp_launch::SnpLaunchError::ReadImage(e.to_string())))?;
    Ok((plan, mrtd))
}

/// What a measurement of a confidential launch loads, as the launch does: the guest
/// program (cvmm's Linux boot firmware for a bzImage) in scratch memory (never
/// touched, so never allocated beyond the program's own pages) and the Linux payload.
fn measured_program(
    config: &VmConfig,
    layout: &MemoryLayout,
) -> Result<(GuestMemoryMmap, LoadedKernel, Option<crate::snp_launch::LinuxPayload>), BuildError> {
    let mut image = open_kernel(&config.kernel)?;
    let mut initrd = config.initrd.as_deref().map(open_initrd).transpose()?;
    let linux = confidential_linux(config, &mut image, &mut initrd)?;
    let mem = create_guest_memory(layout, &[], GuestMemoryPolicy::Dump)?;
    let kernel = match &linux {
        Some(_) => load_linux_boot_firmware(&mem)?,
        None => load_kernel(&mem, &config.kernel, &mut image)?,
    };
    Ok((mem, kernel, linux))
}

/// For a confidential guest whose kernel file is a bzImage: the kernel's parts and the
/// initrd's contents (taken from `initrd`), which cvmm's Linux boot firmware boots.
/// `None` for every other guest (cvmm's own programs are ELF files).
fn confidential_linux(
    config: &VmConfig,
    image: &mut KernelImage,
    initrd: &mut Option<(File, u64)>,
) -> Result<Option<crate::snp_launch::LinuxPayload>, BuildError> {
    let (KernelImage::File(file), KernelSource::File(path)) = (image, &config.kernel) else {
        return Ok(None);
    };
    if !config.tee.is_confidential() {
        return Ok(None);
    }
    let err = |source| BuildError::Kernel { path: path.clone(), source };
    let Some(kernel) = firmware::kernel::BzImageParts::read(file).map_err(err)? else {
        return Ok(None);
    };
    let initrd = match initrd.take() {
        Some((mut file, size)) => {
            let path = config.initrd.clone().unwrap_or_default();
            let mut bytes = Vec::with_capacity(size as usize);
            file.seek(SeekFrom::Start(0))
                .and_then(|_| file.read_to_end(&mut bytes))
                .map_err(|source| BuildError::InitrdFile { path, source })?;
            Some(bytes)
        }
        None => None,
    };
    Ok(Some(crate::snp_launch::LinuxPayload { kernel, initrd }))
}

/// Loads cvmm's Linux boot firmware (the guest program of a confidential Linux boot).
fn load_linux_boot_firmware(mem: &GuestMemoryMmap) -> Result<LoadedKernel, BuildError> {
    firmware::kernel::load_kernel(mem, &mut Cursor::new(firmware::linux_boot_firmware()))
        .map_err(|source| BuildError::Kernel { path: PathBuf::from("<linux boot firmware>"), source })
}

/// The launch backend a configuration chose (one per build, on the stack: no point in
/// boxing the larger variants).
#[allow(clippy::large_enum_variant)]
enum Backend {
    Plain(PlainKvm),
    SnpEmulated(EmulatedSnp),
    Snp(RealSnp),
    TdxEmulated(EmulatedTdx),
    Tdx(RealTdx),
}

impl Backend {
    fn as_dyn(&mut self) -> &mut dyn LaunchBackend {
        match self {
            Backend::Plain(b) => b,
            Backend::SnpEmulated(b) => b,
            Backend::Snp(b) => b,
            Backend::TdxEmulated(b) => b,
            Backend::Tdx(b) => b,
        }
    }
}

/// A kernel image: the embedded demo guest or a file.
enum KernelImage {
    Demo(Cursor<&'static [u8]>),
    File(File),
}

fn open_kernel(source: &KernelSource) -> Result<KernelImage, BuildError> {
    match source {
        KernelSource::Demo => Ok(KernelImage::Demo(Cursor::new(firmware::demo_guest()))),
        KernelSource::File(path) => {
            let err = |source| BuildError::KernelFile { path: path.clone(), source };
            let file = File::open(path).map_err(err)?;
            let meta = file.metadata().map_err(err)?;
            if !meta.is_file() {
                return Err(err(std::io::Error::other("not a regular file")));
            }
            Ok(KernelImage::File(file))
        }
    }
}

fn open_initrd(path: &Path) -> Result<(File, u64), BuildError> {
    let err = |source| BuildError::InitrdFile { path: path.to_path_buf(), source };
    let file = File::open(path).map_err(err)?;
    let meta = file.metadata().map_err(err)?;
    if !meta.is_file() {
        return Err(err(std::io::Error::other("not a regular file")));
    }
    Ok((file, meta.len()))
}

fn open_kvm(path: &Path) -> Result<Kvm, BuildError> {
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).map_err(|_| BuildError::KvmOpen {
        path: path.to_path_buf(),
        source: std::io::Error::from_raw_os_error(libc::EINVAL),
        hint: " (the path contains a NUL byte)",
    })?;
    let kvm = Kvm::new_with_path(&c_path).map_err(|e| {
        let source = std::io::Error::from_raw_os_error(e.errno());
        let hint = match e.errno() {
            libc::ENOENT => " (is the kvm module loaded? cvmm needs hardware virtualization or a KVM-capable host)",
            libc::EACCES | libc::EPERM => " (add your user to the group that owns it, usually 'kvm', or run as root)",
            _ => "",
        };
        BuildError::KvmOpen { path: path.to_path_buf(), source, hint }
    })?;
    let version = kvm.get_api_version();
    if version != KVM_API_VERSION as i32 {
        return Err(BuildError::NotKvm { path: path.to_path_buf(), version });
    }
    Ok(kvm)
}

fn check_kvm(kvm: &Kvm, vcpus: u32) -> Result<(), BuildError> {
    for (cap, name) in [
        (Cap::UserMemory, "KVM_CAP_USER_MEMORY"),
        (Cap::SplitIrqchip, "KVM_CAP_SPLIT_IRQCHIP"),
        (Cap::Irqfd, "KVM_CAP_IRQFD"),
        (Cap::IrqRouting, "KVM_CAP_IRQ_ROUTING"),
        (Cap::ImmediateExit, "KVM_CAP_IMMEDIATE_EXIT"),
    ] {
        if !kvm.check_extension(cap) {
            return Err(BuildError::MissingCapability(name));
        }
    }
    let max = kvm.get_max_vcpus();
    if vcpus as usize > max {
        return Err(BuildError::TooManyVcpus { requested: vcpus, max });
    }
    Ok(())
}

fn enable_split_irqchip(vm: &VmFd) -> Result<(), BuildError> {
    let cap = kvm_enable_cap { cap: KVM_CAP_SPLIT_IRQCHIP, args: [IOAPIC_PINS, 0, 0, 0], ..Default::default() };
    vm.enable_cap(&cap).map_err(BuildError::SplitIrqchip)
}

/// Maps the layout's RAM regions and `extra` ones (GPA, length).
fn create_guest_memory(
    layout: &MemoryLayout,
    extra: &[(u64, u64)],
    policy: GuestMemoryPolicy,
) -> Result<GuestMemoryMmap, BuildError> {
    let ranges: Vec<(GuestAddress, usize)> =
        layout.ram_regions().iter().chain(extra).map(|&(gpa, len)| (GuestAddress(gpa), len as usize)).collect();
    let err = |message: String| BuildError::GuestMemory { size: layout.mem_size(), message };
    let mem = GuestMemoryMmap::from_ranges(&ranges).map_err(|e| err(e.to_string()))?;
    for region in mem.iter() {
        let (ptr, len) = (region.as_ptr().cast::<libc::c_void>(), region.len() as usize);
        if policy != GuestMemoryPolicy::Dump {
            // SAFETY: madvise on a mapping `mem` owns, for its whole length; it changes only
            // whether the pages appear in core dumps.
            if unsafe { libc::madvise(ptr, len, libc::MADV_DONTDUMP) } != 0 {
                return Err(err(format!("MADV_DONTDUMP: {}", std::io::Error::last_os_error())));
            }
        }
        if policy == GuestMemoryPolicy::Lock {
            // SAFETY: mlock on a mapping `mem` owns; it only pins its pages in RAM.
            if unsafe { libc::mlock(ptr, len) } != 0 {
                return Err(err(format!("mlock: {} (check RLIMIT_MEMLOCK)", std::io::Error::last_os_error())));
            }
        }
    }
    Ok(mem)
}

fn load_kernel(
    mem: &GuestMemoryMmap,
    source: &KernelSource,
    image: &mut KernelImage,
) -> Result<LoadedKernel, BuildError> {
    let path = match source {
        KernelSource::Demo => PathBuf::from("<demo guest>"),
        KernelSource::File(p) => p.clone(),
    };
    let loaded = match image {
        KernelImage::Demo(c) => firmware::kernel::load_kernel(mem, c),
        KernelImage::File(f) => firmware::kernel::load_kernel(mem, f),
    }
    .map_err(|source| BuildError::Kernel { path: path.clone(), source })?;
    if loaded.start < HIGH_MEMORY_START {
        return Err(BuildError::KernelTooLow { path, start: loaded.start });
    }
    Ok(loaded)
}

fn write_blob(mem: &GuestMemoryMmap, what: &'static str, gpa: u64, bytes: &[u8]) -> Result<(), BuildError> {
    mem.write_slice(bytes, GuestAddress(gpa)).map_err(|e| BuildError::WriteBootData {
        what,
        gpa,
        message: e.to_string(),
    })
}

/// Writes the command line, initrd, zero page, PVH start info, cvmm boot info, GDT,
/// MP table and page tables, and returns the boot vCPU's entry state.
fn write_boot_data(
    mem: &GuestMemoryMmap,
    layout: &MemoryLayout,
    config: &VmConfig,
    kernel: &LoadedKernel,
    initrd: Option<(File, u64)>,
) -> Result<BootEntry, BuildError> {
    let cmdline = firmware::kernel::cmdline_bytes(&config.effective_cmdline(), kernel.setup_header.as_ref())
        .map_err(BuildError::BootData)?;
    write_blob(mem, "command line", CMDLINE_START, &cmdline)?;

    let initrd_range = match initrd {
        Some((mut file, size)) => {
            let path = config.initrd.clone().unwrap_or_default();
            let addr = firmware::kernel::place_initrd(layout, kernel, size).map_err(BuildError::BootData)?;
            file.seek(SeekFrom::Start(0)).map_err(|source| BuildError::InitrdFile { path: path.clone(), source })?;
            read_into_guest(mem, addr, &mut file, size as usize)
                .map_err(|source| BuildError::InitrdFile { path, source })?;
            Some((addr, size))
        }
        None => None,
    };

    let blobs =
        BootBlobs { cmdline_addr: CMDLINE_START, cmdline_len: (cmdline.len() - 1) as u32, initrd: initrd_range };
    let e820 = layout.e820();
    let (zp_addr, zp) = arch::boot::zero_page(kernel.setup_header, &blobs, &e820);
    write_blob(mem, "zero page", zp_addr, &zp)?;
    let (pvh_addr, pvh) = arch::boot::pvh_start_info(&blobs, &e820);
    write_blob(mem, "PVH start info", pvh_addr, &pvh)?;
    let mut info = BootInfo {
        magic: BOOT_INFO_MAGIC,
        version: BOOT_INFO_VERSION,
        size: BOOT_INFO_SIZE as u32,
        vcpus: config.vcpus,
        flags: 0,
        mem_size: layout.mem_size(),
        bounce_base: arch::layout::BOUNCE_START,
        bounce_size: arch::layout::BOUNCE_SIZE,
        ..Default::default()
    };
    let slots = config.virtio_devices();
    for (entry, slot) in info.virtio.iter_mut().zip(&slots) {
        *entry = VirtioDeviceInfo { base: slot.base, device_id: slot.kind.device_id(), gsi: slot.gsi };
    }
    info.virtio_count = slots.len().min(arch::abi::MAX_VIRTIO_DEVICES) as u32;
    write_blob(mem, "boot info", BOOT_INFO_START, &info.to_bytes())?;
    write_blob(mem, "GDT", GDT_START, &arch::gdt::gdt_bytes())?;
    let (mp_addr, mp) = arch::mptable::mptable(config.vcpus).map_err(BuildError::MpTable)?;
    write_blob(mem, "MP table", mp_addr, &mp)?;
    for (gpa, page) in arch::paging::identity_map_4g() {
        write_blob(mem, "page tables", gpa, &page)?;
    }
    Ok(kernel.kind.boot_entry(ZERO_PAGE_START, PVH_INFO_START, BOOT_INFO_START))
}

/// Reads exactly `len` bytes of `file` into guest memory at `addr`.
fn read_into_guest<F: Read + ReadVolatile>(
    mem: &GuestMemoryMmap,
    addr: u64,
    file: &mut F,
    len: usize,
) -> std::io::Result<()> {
    mem.read_exact_volatile_from(GuestAddress(addr), file, len).map_err(|e| std::io::Error::other(e.to_string()))
}

/// The console output, shared by the serial port and virtio-console.
#[derive(Clone)]
struct SharedWriter(Arc<Mutex<Box<dyn Write + Send>>>);

impl Write for SharedWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).flush()
    }
}

/// The guest's MAC address: locally administered, fixed.
const GUEST_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0xc7, 0x00, 0x01];

struct Devices {
    pio: Bus,
    mmio: Bus,
    serial: Arc<Mutex<Console>>,
    i8042: Arc<Mutex<I8042>>,
    irqfds: Vec<(EventFd, u32)>,
}

/// The legacy devices; `serial` attaches the 16550 (not for confidential guests,
/// which get nothing but virtio).
fn create_devices(
    vm: &Arc<VmFd>,
    console: Box<dyn Write + Send>,
    stop: Arc<dyn devices::StopHandler>,
    serial_port: bool,
) -> Result<Devices, BuildError> {
    let dev_err = |what| move |source| BuildError::Device { what, source };
    let mut pio = Bus::new();
    let mut mmio = Bus::new();

    let serial_irq = EventFd::new(EFD_NONBLOCK).map_err(dev_err("serial interrupt"))?;
    let irqfd = serial_irq.try_clone().map_err(dev_err("serial interrupt"))?;
    vm.register_irqfd(&irqfd, SERIAL_GSI).map_err(|e| BuildError::Device {
        what: "serial interrupt",
        source: std::io::Error::from_raw_os_error(e.errno()),
    })?;
    let serial = Arc::new(Mutex::new(SerialConsole::new(EventFdTrigger(serial_irq), console)));
    // The i8042's keyboard interrupt carries the host's shutdown request (Ctrl-Alt-Del).
    let keyboard_irq = EventFd::new(EFD_NONBLOCK).map_err(dev_err("keyboard interrupt"))?;
    let keyboard_irqfd = keyboard_irq.try_clone().map_err(dev_err("keyboard interrupt"))?;
    vm.register_irqfd(&keyboard_irqfd, KEYBOARD_GSI).map_err(|e| BuildError::Device {
        what: "keyboard interrupt",
        source: std::io::Error::from_raw_os_error(e.errno()),
    })?;
    let i8042 = Arc::new(Mutex::new(I8042::with_keyboard_interrupt(stop.clone(), EventFdTrigger(keyboard_irq))));

    let ioapic = Ioapic::new(Arc::new(KvmMsiRouter::new(vm.clone())));
    let insert = |bus: &mut Bus, dev: Arc<Mutex<dyn BusDevice>>, base: u64, len: u64, what: &'static str| {
        bus.insert(dev, base, len).map_err(|e| BuildError::Device { what, source: std::io::Error::other(e) })
    };
    if serial_port {
        insert(&mut pio, serial.clone(), u64::from(SERIAL_PORT), SERIAL_PORT_COUNT, "serial console")?;
    }
    insert(
        &mut pio,
        Arc::new(Mutex::new(DebugExit::new(stop.clone()))),
        u64::from(DEBUG_EXIT_PORT),
        1,
        "debug-exit port",
    )?;
    insert(&mut pio, i8042.clone(), I8042_BASE, I8042_LEN, "i8042")?;
    insert(&mut mmio, Arc::new(Mutex::new(ioapic)), IOAPIC_START, IOAPIC_SIZE, "IOAPIC")?;
    Ok(Devices { pio, mmio, serial, i8042, irqfds: vec![(irqfd, SERIAL_GSI), (keyboard_irqfd, KEYBOARD_GSI)] })
}

/// Creates the configured virtio devices: each gets a virtio-mmio window on the MMIO
/// bus, an ioeventfd per queue on its QueueNotify register (datamatch = queue index),
/// and an irqfd on its GSI. Returns them as event-loop subscribers.
fn create_virtio_devices(
    vm: &Arc<VmFd>,
    config: &VmConfig,
    shared: &SharedMemory,
    devs: &mut Devices,
    console: &SharedWriter,
) -> Result<Vec<Subscriber>, BuildError> {
    let err = |what| move |source: std::io::Error| BuildError::Device { what, source };
    let kvm_err = |what| {
        move |e: kvm_ioctls::Error| BuildError::Device { what, source: std::io::Error::from_raw_os_error(e.errno()) }
    };
    let mut subscribers: Vec<Subscriber> = Vec::new();
    for slot in config.virtio_devices() {
        let what = slot.kind.name();
        let events = |n: usize| -> Result<Vec<EventFd>, BuildError> {
            (0..n).map(|_| EventFd::new(EFD_NONBLOCK).map_err(err(what))).collect()
        };
        let clones = |evts: &[EventFd]| -> Result<Vec<EventFd>, BuildError> {
            evts.iter().map(|e| e.try_clone().map_err(err(what))).collect()
        };
        let backend = |e: String| BuildError::Device { what, source: std::io::Error::other(e) };
        let (queue_events, device, subscriber): (Vec<EventFd>, Arc<Mutex<dyn VirtioDevice>>, Subscriber) =
            match slot.kind {
                VirtioKind::Rng => {
                    let evts = events(1)?;
                    let rng = Arc::new(Mutex::new(Rng::new(evts[0].try_clone().map_err(err(what))?)));
                    (evts, rng.clone(), rng)
                }
                VirtioKind::Console => {
                    let evts = events(2)?;
                    let c = clones(&evts)?;
                    let q: [EventFd; 2] = c.try_into().map_err(|_| backend("queue events".into()))?;
                    let dev = Arc::new(Mutex::new(virtio::console::Console::new(q, Box::new(console.clone()))));
                    (evts, dev.clone(), dev)
                }
                VirtioKind::Block(i) => {
                    let disk = &config.disks[i];
                    let evts = events(1)?;
                    let options = BlockOptions { read_only: disk.read_only, id: format!("cvmm-disk{i}") };
                    let dev = Block::open(&disk.path, options, evts[0].try_clone().map_err(err(what))?)
                        .map_err(|e| BuildError::Disk { path: disk.path.clone(), message: e.to_string() })?;
                    let dev = Arc::new(Mutex::new(dev));
                    (evts, dev.clone(), dev)
                }
                VirtioKind::Net => {
                    let evts = events(2)?;
                    let q: [EventFd; 2] = clones(&evts)?.try_into().map_err(|_| backend("queue events".into()))?;
                    let net_backend: Box<dyn NetBackend> = match config.net.as_ref() {
                        Some(NetConfig::Tap(name)) => {
                            Box::new(TapBackend::open(name).map_err(|e| backend(format!("tap {name}: {e}")))?)
                        }
                        Some(NetConfig::Socket(path)) => {
                            let sock = std::os::unix::net::UnixDatagram::unbound().map_err(err(what))?;
                            sock.connect(path).map_err(|e| backend(format!("socket {}: {e}", path.display())))?;
                            Box::new(UnixDatagramBackend::new(sock).map_err(|e| backend(e.to_string()))?)
                        }
                        Some(NetConfig::File { tx, rx }) => Box::new(
                            devices::virtio::net_file::FileBackend::open_default_rx(tx, rx.as_deref())
                                .map_err(|e| backend(e.to_string()))?,
                        ),
                        Some(NetConfig::Ring { path, size }) => Box::new(
                            devices::virtio::net_ring::RingBackend::create(path, *size)
                                .map_err(|e| backend(e.to_string()))?,
                        ),
                        None => return Err(backend("no backend configured".into())),
                    };
                    let dev = Arc::new(Mutex::new(Net::new(GUEST_MAC, net_backend, q)));
                    (evts, dev.clone(), dev)
                }
                VirtioKind::Vsock => {
                    let v = config.vsock.as_ref().ok_or_else(|| backend("no vsock configured".into()))?;
                    let evts = events(3)?;
                    let q: [EventFd; 3] = clones(&evts)?.try_into().map_err(|_| backend("queue events".into()))?;
                    let dev = Vsock::new(v.cid, v.uds_path.clone(), q).map_err(|e| backend(e.to_string()))?;
                    let dev = Arc::new(Mutex::new(dev));
                    (evts, dev.clone(), dev)
                }
            };
        let irq = EventFd::new(EFD_NONBLOCK).map_err(err(what))?;
        let irqfd = irq.try_clone().map_err(err(what))?;
        vm.register_irqfd(&irqfd, slot.gsi).map_err(kvm_err(what))?;
        devs.irqfds.push((irqfd, slot.gsi));
        let notify = IoEventAddress::Mmio(slot.base + virtio::mmio::QUEUE_NOTIFY);
        for (index, evt) in queue_events.iter().enumerate() {
            vm.register_ioevent(evt, &notify, index as u32).map_err(kvm_err(what))?;
        }
        let confidential = config.tee.is_confidential();
        let transport =
            MmioTransport::new(device, shared.view(), VirtioInterrupt::new(irq), queue_events, confidential)
                .map_err(err(what))?;
        devs.mmio
            .insert(Arc::new(Mutex::new(transport)), slot.base, virtio::mmio::MMIO_WINDOW)
            .map_err(|e| BuildError::Device { what, source: std::io::Error::other(e) })?;
        subscribers.push(subscriber);
    }
    Ok(subscribers)
}

fn create_vcpus(
    kvm: &Kvm,
    vm: &VmFd,
    backend: &mut dyn LaunchBackend,
    count: u32,
    entry: BootEntry,
) -> Result<Vec<(u32, VcpuFd)>, BuildError> {
    (0..count)
        .map(|index| {
            let vcpu = vm.create_vcpu(u64::from(index)).map_err(|source| BuildError::CreateVcpu { index, source })?;
            let init = VcpuInit { index, count, boot: (index == 0).then_some(entry) };
            backend.init_vcpu(kvm, &vcpu, &init)?;
            Ok((index, vcpu))
        })
        .collect()
}

/// The CPUID table an emulated SNP guest sees (KVM's, filtered, with the SEV leaf).
fn snp_cpuid_table(kvm: &Kvm) -> Result<Arc<[kvm_bindings::kvm_cpuid_entry2]>, BuildError> {
    let mut cpuid = kvm
        .get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
        .map_err(|e| BuildError::Launch(LaunchError::SupportedCpuid(e)))?;
    arch::cpuid::filter_cpuid(cpuid.as_mut_slice(), 0, 1);
    launch::snp::emulated::set_sev_cpuid(cpuid.as_mut_slice());
    Ok(cpuid.as_slice().into())
}

/// What the emulated PSP is given for an SNP launch: the policy (checked as the
/// firmware does), the LAUNCH_FINISH options, the platform's CPUID and the key chain.
fn psp_launch(kvm: &Kvm, snp: &crate::config::SnpConfig) -> Result<launch::snp::psp::PspLaunch, BuildError> {
    use launch::snp::policy::{host_smt_enabled, PolicyHost, SnpPolicy};
    let psp_err = |what: &str, e: &dyn std::fmt::Display| BuildError::Snp(format!("{what}: {e}"));
    let smt = host_smt_enabled().map_err(|e| psp_err("cannot read the host's SMT state", &e))?;
    let fw = launch::snp::psp::FIRMWARE_VERSION;
    // The policy is the operator's request: debug is allowed when the policy asks for it.
    let host = PolicyHost::new(smt, true, fw.major, fw.minor);
    let o = &snp.options;
    SnpPolicy::new(o.policy).validate(&host).map_err(|e| psp_err("policy", &e))?;
    use launch::snp::id_block::{FinishOptions, IdAuth, IdBlock};
    let id = match (&o.id_block, &o.id_auth) {
        (Some(block), Some(auth)) => Some((
            IdBlock::from_bytes(&block[..]).map_err(|e| psp_err("id-block", &e))?,
            IdAuth::from_bytes(&auth[..]).map_err(|e| psp_err("id-auth", &e))?,
        )),
        _ => None,
    };
    let finish = FinishOptions { id, author_key_enabled: o.author_key_enabled, host_data: o.host_data };
    let mut supported = kvm
        .get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
        .map_err(|e| BuildError::Launch(LaunchError::SupportedCpuid(e)))?;
    launch::snp::emulated::set_sev_cpuid(supported.as_mut_slice());
    let cpuid = launch::snp::cpuid_page::CpuidPlatform::from_kvm_supported(supported.as_slice());
    let chain = launch::snp::certs::EmulatedAmdChain::load_or_create_default()
        .map_err(|e| psp_err("the emulated AMD key chain", &e))?;
    Ok(launch::snp::psp::PspLaunch { policy: o.policy, finish, cpuid, chain: Arc::new(chain) })
}
