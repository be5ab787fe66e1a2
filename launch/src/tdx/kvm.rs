//! The real TDX launch through the upstream KVM ABI (Linux >= 6.16: `KVM_X86_TDX_VM`,
//! guest_memfd, `KVM_TDX_*` through `KVM_MEMORY_ENCRYPT_OP`), driven by a launch plan
//! (`crate::plan::tdx`), so that the MRTD the TDX module computes is what
//! `crate::measure::tdx::mrtd` computes.
//!
//! # A launch in eleven steps (the order KVM requires; QEMU's `tdx_kvm_init`,
//! `tdx_pre_create_vcpu` and `tdx_finalize_vm` take the same)
//!
//! 1. [`probe::probe_host`] checks KVM's TDX VM type (and says what is missing: Linux
//!    6.16 or later, `kvm_intel.tdx=1`, the TDX module), reads `KVM_TDX_CAPABILITIES`
//!    on a throw-away TD and checks guest_memfd, private memory attributes, hypercall
//!    exits and the split irqchip.
//! 2. [`TdxKvmLaunch::new`] takes the host and the [`options::TdxKvmOptions`] (QEMU's
//!    `tdx-guest` options) and refuses attributes the host does not support.
//! 3. [`TdxKvmLaunch::create_vm`] issues `KVM_CREATE_VM(KVM_X86_TDX_VM)`.
//! 4. [`TdxKvmLaunch::configure_vm`] issues `KVM_ENABLE_CAP(KVM_CAP_SPLIT_IRQCHIP, 24)`
//!    (a TD requires it: the caller must not create an in-kernel PIC/IOAPIC, and devices
//!    interrupt through MSI routes), `KVM_ENABLE_CAP(KVM_CAP_EXIT_HYPERCALL)` for
//!    `KVM_HC_MAP_GPA_RANGE` (without it a TD's MapGPA fails),
//!    `KVM_ENABLE_CAP(KVM_CAP_X86_APIC_BUS_CYCLES_NS, 40)` where KVM has it, and, when a
//!    TSC frequency is configured, `KVM_SET_TSC_KHZ` on the VM (100 MHz to 10 GHz, a
//!    multiple of 25 MHz: TDH.MNG.INIT fixes it).
//! 5. [`TdxKvmLaunch::add_memory`] gives every memory region (RAM and the firmware's
//!    region at the top of 4 GiB) a guest_memfd and a `KVM_SET_USER_MEMORY_REGION2` slot,
//!    then makes all of it private (`KVM_SET_MEMORY_ATTRIBUTES`). May come before step 4.
//! 6. [`TdxKvmLaunch::init_vm`] issues `KVM_TDX_INIT_VM` with the options' attributes,
//!    MRCONFIGID, MROWNER, MROWNERCONFIG, the XFAM (given, or [`xfam_of`] the CPUID) and
//!    the CPUID configuration ([`td_cpuid_config`] of the wanted CPUID, e.g.
//!    `KVM_GET_SUPPORTED_CPUID`: the configurable leaves only, masked, with the guest
//!    physical address width in 0x80000008), retried while the TDX module lacks entropy.
//!    Before any vCPU exists.
//! 7. The TD HOB: [`crate::tdx::hob::TdHob::for_plan`] with the RAM ranges (and MMIO),
//!    then [`crate::tdx::hob::install`] into the plan (it does not change MRTD).
//! 8. For each vCPU, in order: `KVM_CREATE_VCPU`; [`TdxKvmLaunch::td_cpuid`]
//!    (`KVM_TDX_GET_CPUID`: the TD's CPUID as the TDX module virtualizes it);
//!    `KVM_SET_CPUID2` with it (plus KVM's paravirtual leaves if wanted: [`vcpu_cpuid`]),
//!    which must offer x2APIC; then [`TdxKvmLaunch::init_vcpu`] (`KVM_TDX_INIT_VCPU` with
//!    the plan's RCX, the TD HOB's address).
//! 9. [`TdxKvmLaunch::init_mem_regions`] (or [`TdxKvmLaunch::init_mem_region`] range by
//!    range), on a vCPU of step 8: `KVM_TDX_INIT_MEM_REGION` for every plan range but the
//!    PAGE.AUG ones, in plan order (the measured order), with
//!    `KVM_TDX_MEASURE_MEMORY_REGION` exactly for `TdxPageType::AddMeasured` (MR.EXTEND),
//!    re-issued on EINTR and EAGAIN until KVM has added every page; the shared copy of the
//!    range is dropped after.
//! 10. [`TdxKvmLaunch::finalize`] issues `KVM_TDX_FINALIZE_VM` (TDH.MR.FINALIZE): MRTD is
//!     fixed and the TD can run. Every vCPU must have had step 8 before.
//! 11. [`TdxKvmLaunch::exit_handler`] gives the vCPU loop its [`exits::TdxExitHandler`].
//!
//! Then, in the vCPU loop: `KVM_EXIT_HYPERCALL` (`KVM_HC_MAP_GPA_RANGE`: a TD's MapGPA,
//! in chunks of at most 2 MiB, the shared bit already cleared) goes to
//! [`TdxKvmLaunch::memory`]'s `handle_map_gpa_range` (put
//! [`crate::private_memory::hypercall_ret`] of its result in `kvm_run.hypercall.ret`: KVM
//! turns non-zero into TDG.VP.VMCALL_INVALID_OPERAND), `KVM_EXIT_MEMORY_FAULT` to its
//! `handle_memory_fault` (after either, tell the devices' view of guest memory which
//! pages are shared now); `KVM_EXIT_TDX` (`VcpuExit::Unsupported(40)` in kvm-ioctls
//! 0.25) to [`exits::tdx_exit`] and [`exits::TdxExitHandler::handle`];
//! `KVM_SYSTEM_EVENT_TDX_FATAL` to [`exits::TdxFatalError::from_system_event`], which
//! ends the VM with the TD's message.
//!
//! # What was verified where
//!
//! The host this was written on has no TDX (an AMD CPU, `kvm_pvm`): the structure
//! layouts, ioctl numbers and command numbers are tested against the upstream headers
//! (quoted in [`uapi`]); the generic ioctls (split irqchip, VM TSC, guest_memfd slots,
//! hypercall exits) run against the host's KVM on a default VM; every TDX command is
//! issued there too and checked to fail with an error naming it; the TD HOB is checked
//! against TDVF's validation rules and QEMU's layout for Debian's OVMF; the QGS protocol
//! against a fake service written from QEMU's structures. The TDX commands themselves
//! only run in tests/tdx_hardware.rs on a TDX host.

pub mod exits;
pub mod ioctl;
pub mod options;
pub mod probe;
pub mod quote;
pub mod uapi;

use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use kvm_bindings::{kvm_cpuid_entry2, CpuId, KVM_CPUID_FLAG_SIGNIFCANT_INDEX, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use thiserror::Error;
use vm_memory::GuestMemoryMmap;

use crate::plan::{Contents, LaunchPlan, PageType, TdxPageType, VcpuState, PAGE_SIZE};
use crate::private_memory::{
    enable_exit_hypercall, Conversion, GmemIoctlError, PrivateMemory, PrivateMemoryError, KVM_HC_MAP_GPA_RANGE,
};
use exits::{MsiInjector, TdxExitHandler};
use ioctl::{TdxInitVm, TdxIoctlError};
use options::TdxKvmOptions;
use probe::{TdxHost, TdxHostError};
use quote::{QuoteRunner, QuoteService};
use uapi::{tsc, KvmTdxInitMemRegion, SPLIT_IRQCHIP_IOAPIC_PINS, TDX_APIC_BUS_CYCLES_NS};

/// The guest physical address width a TD gets unless told otherwise: 48 (4-level EPT;
/// the shared bit is bit 47). 52 needs 5-level EPT on the host.
pub const DEFAULT_GPAW: u32 = 48;

/// How often `KVM_TDX_INIT_VM` is retried while the TDX module lacks entropy (QEMU's).
const MAX_INIT_VM_RETRIES: u32 = 10_000;

/// How many times in a row `KVM_TDX_INIT_MEM_REGION` may be interrupted without adding
/// a page before the launch gives up.
const MAX_MEM_REGION_RETRIES: u32 = 1000;

/// XFAM bits every TD has: x87 and SSE (the TDX module's XFAM fixed-1 bits).
pub const XFAM_FIXED1: u64 = 0x3;

/// Errors of the real TDX launch.
#[derive(Debug, Error)]
pub enum TdxLaunchError {
    /// The host cannot run this TD.
    #[error(transparent)]
    Host(#[from] TdxHostError),
    /// A step was called out of order.
    #[error("{step} must come after {needs}")]
    Order {
        /// The step called.
        step: &'static str,
        /// What has to happen first.
        needs: &'static str,
    },
    /// A TDX ioctl failed.
    #[error(transparent)]
    Ioctl(#[from] TdxIoctlError),
    /// A guest_memfd or hypercall-exit ioctl failed.
    #[error(transparent)]
    Gmem(#[from] GmemIoctlError),
    /// Guest memory could not be set up.
    #[error(transparent)]
    Memory(#[from] PrivateMemoryError),
    /// A TSC frequency the TDX module does not take.
    #[error(
        "TSC frequency {khz} kHz: a TD's must be {} to {} kHz and a multiple of {} kHz (25 MHz)",
        tsc::MIN_KHZ,
        tsc::MAX_KHZ,
        tsc::STEP_KHZ
    )]
    TscKhz {
        /// The frequency asked for.
        khz: u32,
    },
    /// A guest physical address width other than 48 or 52.
    #[error("guest physical address width {0}: a TD's is 48 (4-level EPT) or 52 (5-level EPT)")]
    Gpaw(u32),
    /// The CPUID configuration cannot be given to KVM.
    #[error("TD CPUID configuration: {0}")]
    Cpuid(String),
    /// The plan's vCPUs cannot be launched by KVM.
    #[error("plan vCPU: {0}")]
    PlanVcpu(String),
    /// A plan range cannot be launched by KVM.
    #[error("plan range '{what}' at {gpa:#x}: {reason}")]
    PlanRange {
        /// The range's name.
        what: String,
        /// Its start.
        gpa: u64,
        /// What is wrong.
        reason: &'static str,
    },
    /// `KVM_TDX_INIT_MEM_REGION` kept being interrupted without adding pages.
    #[error(
        "KVM_TDX_INIT_MEM_REGION at {gpa:#x} made no progress in {MAX_MEM_REGION_RETRIES} calls ({pages} pages left)"
    )]
    NoProgress {
        /// Where it was stuck.
        gpa: u64,
        /// What was left.
        pages: u64,
    },
    /// The source buffer for `KVM_TDX_INIT_MEM_REGION` could not be mapped.
    #[error("cannot map a {len:#x}-byte source buffer: {source}")]
    Source {
        /// Its size.
        len: u64,
        /// mmap's error.
        #[source]
        source: std::io::Error,
    },
}

/// Where a launch is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Stage {
    New,
    VmCreated,
    Configured,
    Initialized,
    MemoryLoaded,
    Finalized,
}

/// What [`TdxKvmLaunch::init_vm`] gives `KVM_TDX_INIT_VM` besides the options.
#[derive(Debug, Clone)]
pub struct TdxVmConfig<'a> {
    /// The CPUID the TD should have (e.g. `KVM_GET_SUPPORTED_CPUID`): filtered by
    /// [`td_cpuid_config`].
    pub cpuid: &'a [kvm_cpuid_entry2],
    /// XFAM; `None`: [`xfam_of`] the CPUID, limited to what the host supports.
    pub xfam: Option<u64>,
    /// Guest physical address width, 48 or 52 ([`DEFAULT_GPAW`]).
    pub gpaw: u32,
}

/// The XFAM a TD with `cpuid` needs: the XCR0 bits of leaf 0xD subleaf 0 (EAX, EDX) and
/// the IA32_XSS bits of subleaf 1 (ECX, EDX), plus x87 and SSE, within `supported`.
pub fn xfam_of(cpuid: &[kvm_cpuid_entry2], supported: u64) -> u64 {
    let leaf = |index| cpuid.iter().find(|e| e.function == 0xd && e.index == index);
    let xcr0 = leaf(0).map_or(0, |e| u64::from(e.eax) | u64::from(e.edx) << 32);
    let xss = leaf(1).map_or(0, |e| u64::from(e.ecx) | u64::from(e.edx) << 32);
    ((xcr0 | xss) & supported) | XFAM_FIXED1
}

/// The CPUID configuration for `KVM_TDX_INIT_VM`: of `wanted`, the entries whose leaf and
/// subleaf are configurable (`caps`' `cpuid_configs`, at most one entry each, with the
/// configuration's flags), each register masked with the configurable bits, and leaf
/// 0x80000008 (which KVM requires) with `gpaw` in `EAX[23:16]`. KVM refuses any other leaf.
pub fn td_cpuid_config(
    wanted: &[kvm_cpuid_entry2],
    configs: &[kvm_cpuid_entry2],
    gpaw: u32,
) -> Result<Vec<kvm_cpuid_entry2>, TdxLaunchError> {
    if gpaw != 48 && gpaw != 52 {
        return Err(TdxLaunchError::Gpaw(gpaw));
    }
    let mut out: Vec<kvm_cpuid_entry2> = Vec::new();
    for c in configs {
        let significant = c.flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX != 0;
        let found = wanted.iter().find(|e| e.function == c.function && (!significant || e.index == c.index));
        let mut e = match found {
            Some(e) => kvm_cpuid_entry2 {
                function: c.function,
                index: c.index,
                flags: c.flags,
                eax: e.eax & c.eax,
                ebx: e.ebx & c.ebx,
                ecx: e.ecx & c.ecx,
                edx: e.edx & c.edx,
                padding: [0; 3],
            },
            None if c.function == 0x8000_0008 => {
                kvm_cpuid_entry2 { function: c.function, index: c.index, flags: c.flags, ..Default::default() }
            }
            None => continue,
        };
        if e.function == 0x8000_0008 {
            e.eax = (e.eax & !0x00ff_0000) | (gpaw << 16);
        }
        out.push(e);
    }
    if !out.iter().any(|e| e.function == 0x8000_0008) {
        return Err(TdxLaunchError::Cpuid(
            "the TDX module does not list leaf 0x80000008 as configurable, but KVM needs it for the guest physical \
             address width"
                .into(),
        ));
    }
    if out.len() > KVM_MAX_CPUID_ENTRIES {
        return Err(TdxLaunchError::Cpuid(format!("{} entries, KVM takes {KVM_MAX_CPUID_ENTRIES}", out.len())));
    }
    Ok(out)
}

/// QEMU's `TDX_SUPPORTED_KVM_FEATURES`: the KVM paravirtual features (leaf 0x40000001 EAX)
/// a TD may use: NOP_IO_DELAY (1), PV_UNHALT (7), PV_TLB_FLUSH (9), PV_SEND_IPI (11),
/// POLL_CONTROL (12), PV_SCHED_YIELD (13), MSI_EXT_DEST_ID (15).
pub const TDX_KVM_FEATURES: u32 = 1 << 1 | 1 << 7 | 1 << 9 | 1 << 11 | 1 << 12 | 1 << 13 | 1 << 15;

/// The CPUID for `KVM_SET_CPUID2` of a TD's vCPU: the TD's own (`td`, from
/// [`TdxKvmLaunch::td_cpuid`]) plus KVM's paravirtual leaves 0x40000000 and 0x40000001
/// from `supported` (`KVM_GET_SUPPORTED_CPUID`), the features limited to
/// [`TDX_KVM_FEATURES`].
pub fn vcpu_cpuid(td: &CpuId, supported: &CpuId) -> Result<CpuId, TdxLaunchError> {
    let mut entries: Vec<kvm_cpuid_entry2> =
        td.as_slice().iter().filter(|e| !(0x4000_0000..=0x4000_00ff).contains(&e.function)).copied().collect();
    for e in supported.as_slice().iter().filter(|e| matches!(e.function, 0x4000_0000 | 0x4000_0001)) {
        let mut e = *e;
        if e.function == 0x4000_0001 {
            e.eax &= TDX_KVM_FEATURES;
        }
        entries.push(e);
    }
    CpuId::from_entries(&entries).map_err(|_| TdxLaunchError::Cpuid(format!("{} entries do not fit", entries.len())))
}

/// Checks a TSC frequency against the TDX module's rules.
pub fn check_tsc_khz(khz: u32) -> Result<(), TdxLaunchError> {
    if !(tsc::MIN_KHZ..=tsc::MAX_KHZ).contains(&khz) || !khz.is_multiple_of(tsc::STEP_KHZ) {
        return Err(TdxLaunchError::TscKhz { khz });
    }
    Ok(())
}

/// Page-aligned anonymous memory holding a range's contents for `KVM_TDX_INIT_MEM_REGION`.
struct SourcePages {
    ptr: *mut libc::c_void,
    len: usize,
}

impl SourcePages {
    /// `len` bytes (a whole number of pages): `bytes` then zeros.
    fn new(len: u64, bytes: &[u8]) -> Result<Self, TdxLaunchError> {
        let err = |source| TdxLaunchError::Source { len, source };
        let size = usize::try_from(len).map_err(|_| err(std::io::Error::from_raw_os_error(libc::ENOMEM)))?;
        // SAFETY: a new private anonymous mapping; nothing else refers to it.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(err(std::io::Error::last_os_error()));
        }
        let n = bytes.len().min(size);
        // SAFETY: the mapping is `size` writable bytes, `n <= size`, and `bytes` does not
        // overlap it (it was just created).
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), ptr.cast::<u8>(), n) };
        Ok(Self { ptr, len: size })
    }
}

impl Drop for SourcePages {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, no longer used (KVM copied from it).
        unsafe { libc::munmap(self.ptr, self.len) };
    }
}

/// A real TDX launch on KVM. See the module documentation for the order of the steps;
/// each step checks that the ones before it were done.
#[derive(Debug)]
pub struct TdxKvmLaunch {
    host: TdxHost,
    options: TdxKvmOptions,
    stage: Stage,
    gpaw: u32,
    memory: Option<Arc<PrivateMemory>>,
    vcpus: Vec<RawFd>,
}

impl TdxKvmLaunch {
    /// Step 2: a launch on `host` with `options`; refuses attributes the host does not
    /// support (`KVM_TDX_CAPABILITIES`' `supported_attrs`).
    pub fn new(host: TdxHost, options: TdxKvmOptions) -> Result<Self, TdxLaunchError> {
        host.check_attributes(options.attributes)?;
        Ok(Self { host, options, stage: Stage::New, gpaw: DEFAULT_GPAW, memory: None, vcpus: Vec::new() })
    }

    /// The host.
    pub fn host(&self) -> &TdxHost {
        &self.host
    }

    /// The options.
    pub fn options(&self) -> &TdxKvmOptions {
        &self.options
    }

    fn at(
        &self,
        step: &'static str,
        stages: std::ops::RangeInclusive<Stage>,
        needs: &'static str,
    ) -> Result<(), TdxLaunchError> {
        if stages.contains(&self.stage) {
            Ok(())
        } else {
            Err(TdxLaunchError::Order { step, needs })
        }
    }

    /// Step 3: `KVM_CREATE_VM(KVM_X86_TDX_VM)`.
    pub fn create_vm(&mut self, kvm: &Kvm) -> Result<VmFd, TdxLaunchError> {
        self.at("create_vm", Stage::New..=Stage::New, "TdxKvmLaunch::new, once")?;
        let vm = ioctl::create_tdx_vm(kvm)?;
        self.stage = Stage::VmCreated;
        Ok(vm)
    }

    /// Step 4: the split irqchip, hypercall exits for `KVM_HC_MAP_GPA_RANGE`, TDX's APIC
    /// bus frequency (where KVM can set it) and, with `tsc_khz`, the VM's TSC frequency.
    pub fn configure_vm(&mut self, vm: &VmFd, tsc_khz: Option<u32>) -> Result<(), TdxLaunchError> {
        self.at("configure_vm", Stage::VmCreated..=Stage::VmCreated, "create_vm, and before init_vm")?;
        if let Some(khz) = tsc_khz {
            check_tsc_khz(khz)?;
        }
        ioctl::enable_split_irqchip(vm, SPLIT_IRQCHIP_IOAPIC_PINS)?;
        enable_exit_hypercall(vm, 1 << KVM_HC_MAP_GPA_RANGE)?;
        if self.host.apic_bus_cycles {
            ioctl::enable_apic_bus_cycles_ns(vm, TDX_APIC_BUS_CYCLES_NS)?;
        }
        if let Some(khz) = tsc_khz {
            ioctl::set_vm_tsc_khz(vm, khz)?;
        }
        self.stage = Stage::Configured;
        Ok(())
    }

    /// Step 5: registers `mem` (every region a guest_memfd slot, from slot `first_slot`
    /// on) and makes all of it private. Once, after `create_vm` and before the first
    /// `init_mem_region`.
    pub fn add_memory(&mut self, vm: &VmFd, mem: &GuestMemoryMmap, first_slot: u32) -> Result<(), TdxLaunchError> {
        self.at("add_memory", Stage::VmCreated..=Stage::Initialized, "create_vm, and before init_mem_regions")?;
        if self.memory.is_some() {
            return Err(TdxLaunchError::Order { step: "add_memory", needs: "nothing: it is called once" });
        }
        let memory = PrivateMemory::register(vm, mem, first_slot)?;
        memory.make_all_private(vm)?;
        self.memory = Some(Arc::new(memory));
        Ok(())
    }

    /// The guest's memory, for the vCPU loop's conversions and GetQuote (after
    /// [`add_memory`](Self::add_memory)).
    pub fn memory(&self) -> Option<&Arc<PrivateMemory>> {
        self.memory.as_ref()
    }

    /// Step 6: `KVM_TDX_INIT_VM` with the options' attributes and measurement registers,
    /// `config`'s XFAM (refused when the host does not support it) and CPUID
    /// configuration ([`td_cpuid_config`]); retried while the TDX module lacks entropy
    /// (EAGAIN). Before any vCPU.
    pub fn init_vm(&mut self, vm: &VmFd, config: &TdxVmConfig<'_>) -> Result<(), TdxLaunchError> {
        self.at("init_vm", Stage::Configured..=Stage::Configured, "configure_vm")?;
        let caps = &self.host.capabilities;
        let cpuid = td_cpuid_config(config.cpuid, &caps.cpuid_configs, config.gpaw)?;
        let xfam = match config.xfam {
            Some(xfam) => xfam,
            None => xfam_of(config.cpuid, caps.supported_xfam),
        };
        self.host.check_xfam(xfam)?;
        let o = &self.options;
        let init = TdxInitVm {
            attributes: o.attributes,
            xfam,
            mrconfigid: o.mrconfigid,
            mrowner: o.mrowner,
            mrownerconfig: o.mrownerconfig,
            cpuid,
        };
        let mut tries = 0;
        loop {
            match ioctl::tdx_init_vm(vm, &init) {
                Err(e) if e.errno() == libc::EAGAIN && tries < MAX_INIT_VM_RETRIES => tries += 1,
                result => break result?,
            }
        }
        self.gpaw = config.gpaw;
        self.stage = Stage::Initialized;
        Ok(())
    }

    /// Step 8, first part: `KVM_TDX_GET_CPUID` on a new vCPU: the TD's CPUID, for
    /// `KVM_SET_CPUID2` (see [`vcpu_cpuid`]) and for checking what the TD sees.
    pub fn td_cpuid(&self, vcpu: &VcpuFd) -> Result<CpuId, TdxLaunchError> {
        self.at("td_cpuid", Stage::Initialized..=Stage::MemoryLoaded, "init_vm, and before finalize")?;
        Ok(ioctl::tdx_get_cpuid(vcpu)?)
    }

    /// Step 8, last part: `KVM_TDX_INIT_VCPU` with the plan vCPU's RCX (the TD HOB's
    /// address). After `KVM_SET_CPUID2` on `vcpu`.
    pub fn init_vcpu(&mut self, vcpu: &VcpuFd, plan_vcpu: &VcpuState) -> Result<(), TdxLaunchError> {
        self.at("init_vcpu", Stage::Initialized..=Stage::MemoryLoaded, "init_vm, and before finalize")?;
        let VcpuState::Tdx { rcx } = plan_vcpu else {
            return Err(TdxLaunchError::PlanVcpu("not a TDX vCPU (a TD's only vCPU input is RCX)".into()));
        };
        if self.vcpus.contains(&vcpu.as_raw_fd()) {
            return Err(TdxLaunchError::Order { step: "init_vcpu", needs: "a vCPU not initialized yet" });
        }
        ioctl::tdx_init_vcpu(vcpu, *rcx)?;
        self.vcpus.push(vcpu.as_raw_fd());
        Ok(())
    }

    /// Step 9, one range: `KVM_TDX_INIT_MEM_REGION` of `[gpa, gpa + len)` with `bytes`
    /// (zero-padded to `len`) as its contents, measured or not, re-issued on EINTR and
    /// EAGAIN with the region KVM advanced until every page is added; then the shared
    /// copy of the range is dropped. On a vCPU that had [`init_vcpu`](Self::init_vcpu).
    pub fn init_mem_region(
        &mut self,
        vcpu: &VcpuFd,
        gpa: u64,
        len: u64,
        bytes: &[u8],
        measure: bool,
    ) -> Result<(), TdxLaunchError> {
        self.at("init_mem_region", Stage::Initialized..=Stage::MemoryLoaded, "init_vm, and before finalize")?;
        let memory =
            self.memory.as_ref().ok_or(TdxLaunchError::Order { step: "init_mem_region", needs: "add_memory" })?;
        if !self.vcpus.contains(&vcpu.as_raw_fd()) {
            return Err(TdxLaunchError::Order {
                step: "init_mem_region",
                needs: "init_vcpu on the vCPU it is issued on",
            });
        }
        let range_err = |reason| TdxLaunchError::PlanRange { what: "INIT_MEM_REGION".into(), gpa, reason };
        if len == 0 || !gpa.is_multiple_of(PAGE_SIZE) || !len.is_multiple_of(PAGE_SIZE) || bytes.len() as u64 > len {
            return Err(range_err("not a non-empty, page-aligned whole number of pages holding the contents"));
        }
        let conversion = Conversion { gpa, len, to_private: true };
        if conversion.check(&memory.ranges()).is_err() {
            return Err(range_err("not inside guest memory (add_memory)"));
        }
        let source = SourcePages::new(len, bytes)?;
        let mut region = KvmTdxInitMemRegion { source_addr: source.ptr as u64, gpa, nr_pages: len / PAGE_SIZE };
        let mut stuck = 0;
        while region.nr_pages != 0 {
            let before = region.nr_pages;
            // SAFETY: `source_addr` points into `source`, `nr_pages` pages long, advanced
            // by KVM in step with `nr_pages`; `source` lives until after the loop.
            match unsafe { ioctl::tdx_init_mem_region(vcpu, &mut region, measure) } {
                Ok(()) => {}
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {}
                Err(e) => return Err(e.into()),
            }
            stuck = if region.nr_pages < before { 0 } else { stuck + 1 };
            if stuck >= MAX_MEM_REGION_RETRIES {
                return Err(TdxLaunchError::NoProgress { gpa: region.gpa, pages: region.nr_pages });
            }
        }
        // The pages are private now: a shared copy (the builder may have written the
        // plan there) is garbage the TD must not find if it later shares them.
        memory.discard(&conversion)?;
        self.stage = Stage::MemoryLoaded;
        Ok(())
    }

    /// Step 9, whole plan: every range in plan order (the measured order) but the
    /// PAGE.AUG ones (the TD accepts those itself), measured exactly when the plan says
    /// MR.EXTEND.
    pub fn init_mem_regions(&mut self, vcpu: &VcpuFd, plan: &LaunchPlan) -> Result<(), TdxLaunchError> {
        for range in &plan.ranges {
            let plan_err = |reason| TdxLaunchError::PlanRange { what: range.what.clone(), gpa: range.gpa, reason };
            let measure = match range.page_type {
                PageType::Tdx(TdxPageType::AddMeasured) => true,
                PageType::Tdx(TdxPageType::AddUnmeasured) => false,
                PageType::Tdx(TdxPageType::Aug) => continue,
                PageType::Snp(_) => return Err(plan_err("not a TDX range")),
            };
            if range.check().is_err() {
                return Err(plan_err("malformed (unaligned, wrapping, or contents of the wrong length)"));
            }
            let bytes: &[u8] = match &range.contents {
                Contents::Bytes(b) => b,
                Contents::Zero => &[],
            };
            self.init_mem_region(vcpu, range.gpa, range.len, bytes, measure).map_err(|e| match e {
                TdxLaunchError::PlanRange { reason, .. } => plan_err(reason),
                other => other,
            })?;
        }
        Ok(())
    }

    /// Step 10: `KVM_TDX_FINALIZE_VM`. After every vCPU's `init_vcpu` and the memory.
    pub fn finalize(&mut self, vm: &VmFd) -> Result<(), TdxLaunchError> {
        self.at("finalize", Stage::MemoryLoaded..=Stage::MemoryLoaded, "init_mem_regions")?;
        ioctl::tdx_finalize_vm(vm)?;
        self.stage = Stage::Finalized;
        Ok(())
    }

    /// Step 11: the `KVM_EXIT_TDX` handler for this TD: GetQuote to the options'
    /// `quote-generation-socket`, each request completed by `runner`, notifications
    /// through `injector`.
    pub fn exit_handler(&self, injector: Arc<dyn MsiInjector>, runner: Arc<dyn QuoteRunner>) -> TdxExitHandler {
        let quotes = QuoteService::new(self.options.quote_generation_socket.clone()).with_runner(runner);
        TdxExitHandler::with_quote_service(self.host.capabilities.clone(), self.gpaw, quotes, injector)
    }
}

#[cfg(test)]
mod tests {
    use vm_memory::GuestAddress;

    use super::*;
    use crate::plan::{PlanRange, SnpPageType};
    use ioctl::TdxCapabilities;
    use uapi::attributes;

    fn entry(function: u32, index: u32, flags: u32, regs: [u32; 4]) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            flags,
            eax: regs[0],
            ebx: regs[1],
            ecx: regs[2],
            edx: regs[3],
            padding: [0; 3],
        }
    }

    const SIG: u32 = KVM_CPUID_FLAG_SIGNIFCANT_INDEX;

    #[test]
    fn cpuid_configuration_keeps_configurable_leaves_masked_and_sets_the_gpaw() {
        let configs = [
            entry(0x1, 0, 0, [0, 0, 0xffff_ffff, 0x0000_00ff]),
            entry(0x7, 0, SIG, [0, 0x0000_ff00, 0, 0]),
            entry(0x7, 1, SIG, [0xf, 0, 0, 0]),
            entry(0x8000_0008, 0, 0, [0x00ff_00ff, 0, 0, 0]),
        ];
        let wanted = [
            entry(0x0, 0, 0, [0x1f, 1, 2, 3]),
            entry(0x1, 0, 0, [0x806f8, 0x1234, 0x7ffa_fbff, 0xbfeb_fbff]),
            entry(0x7, 0, SIG, [2, 0xf1bf_fbff, 0x1, 0x2]),
            entry(0x7, 2, SIG, [0, 0, 0, 0xffff]),
            entry(0x8000_0008, 0, 0, [0x0000_3030, 0, 0, 0]),
        ];

        let got = td_cpuid_config(&wanted, &configs, 48).unwrap();

        assert_eq!(
            got,
            [
                entry(0x1, 0, 0, [0, 0, 0x7ffa_fbff, 0xff]),
                entry(0x7, 0, SIG, [0, 0xfb00, 0, 0]),
                // MAXPHYADDR 0x30 kept through the mask, the guest physical address
                // width 48 (0x30) put in bits 23:16.
                entry(0x8000_0008, 0, 0, [0x0030_0030, 0, 0, 0]),
            ],
            "leaf 0 and 7.2 are not configurable, 7.1 is not wanted"
        );
    }

    #[test]
    fn leaf_0x80000008_is_added_when_not_wanted_and_gpaw_must_be_48_or_52() {
        let configs = [entry(0x8000_0008, 0, 0, [0x00ff_0000, 0, 0, 0])];

        let got = td_cpuid_config(&[], &configs, 52).unwrap();

        assert_eq!(got, [entry(0x8000_0008, 0, 0, [52 << 16, 0, 0, 0])]);
        assert!(matches!(td_cpuid_config(&[], &configs, 46), Err(TdxLaunchError::Gpaw(46))));
        let err = td_cpuid_config(&[], &[], 48).unwrap_err();
        assert!(err.to_string().contains("does not list leaf 0x80000008"), "{err}");
    }

    #[test]
    fn xfam_comes_from_the_xsave_leaves_within_what_is_supported() {
        // XCR0: x87, SSE, AVX, opmask, ZMM_Hi256, Hi16_ZMM, PKRU (0x2e7); XSS: CET_U (bit 11).
        let cpuid = [entry(0xd, 0, SIG, [0x2e7, 0, 0, 0]), entry(0xd, 1, SIG, [0xf, 0, 0x800, 0])];

        assert_eq!(xfam_of(&cpuid, u64::MAX), 0xae7);
        assert_eq!(xfam_of(&cpuid, 0x6_0207), 0x207, "AVX-512, PKRU and CET are not supported here");
        assert_eq!(xfam_of(&[], 0), XFAM_FIXED1);
    }

    #[test]
    fn tsc_frequencies_are_checked_as_qemu_checks_them() {
        assert!(check_tsc_khz(2_000_000).is_ok());
        assert!(check_tsc_khz(100_000).is_ok() && check_tsc_khz(10_000_000).is_ok());
        for bad in [75_000, 10_025_000, 2_010_000, 0] {
            let err = check_tsc_khz(bad).unwrap_err();
            assert!(
                err.to_string().starts_with(&format!("TSC frequency {bad} kHz: a TD's must be 100000 to")),
                "{err}"
            );
        }
    }

    #[test]
    fn the_vcpu_cpuid_is_the_tds_with_kvms_paravirtual_leaves() {
        let td = CpuId::from_entries(&[entry(0x1, 0, 0, [1, 2, 3, 4]), entry(0x4000_0001, 0, 0, [0xffff, 0, 0, 0])])
            .unwrap();
        let supported = CpuId::from_entries(&[
            entry(0x1, 0, 0, [9, 9, 9, 9]),
            entry(0x4000_0000, 0, 0, [0x4000_0001, 0x4b4d_564b, 0x564b_4d56, 0x4d]),
            entry(0x4000_0001, 0, 0, [0x0100_fbff, 0, 0, 0]),
        ])
        .unwrap();

        let got = vcpu_cpuid(&td, &supported).unwrap();

        assert_eq!(
            got.as_slice(),
            [
                entry(0x1, 0, 0, [1, 2, 3, 4]),
                entry(0x4000_0000, 0, 0, [0x4000_0001, 0x4b4d_564b, 0x564b_4d56, 0x4d]),
                entry(0x4000_0001, 0, 0, [0xba82, 0, 0, 0]),
            ]
        );
    }

    fn fake_host(supported_attrs: u64) -> TdxHost {
        TdxHost {
            vm_types: 1 << 5,
            capabilities: TdxCapabilities {
                supported_attrs,
                supported_xfam: 0x6_02ff,
                kernel_tdvmcallinfo_1_r11: 0,
                user_tdvmcallinfo_1_r11: 0x2,
                kernel_tdvmcallinfo_1_r12: 0,
                user_tdvmcallinfo_1_r12: 0,
                cpuid_configs: vec![entry(0x8000_0008, 0, 0, [0x00ff_0000, 0, 0, 0])],
            },
            apic_bus_cycles: false,
        }
    }

    #[test]
    fn attributes_the_host_lacks_are_refused_at_new() {
        let options =
            TdxKvmOptions { attributes: attributes::SEPT_VE_DISABLE | attributes::DEBUG, ..Default::default() };

        let err = TdxKvmLaunch::new(fake_host(attributes::SEPT_VE_DISABLE), options).unwrap_err();

        assert!(matches!(err, TdxLaunchError::Host(TdxHostError::Attributes { unsupported: 1, .. })), "{err}");
        assert!(TdxKvmLaunch::new(fake_host(attributes::SEPT_VE_DISABLE), TdxKvmOptions::default()).is_ok());
    }

    #[test]
    fn steps_out_of_order_are_refused_before_any_ioctl() {
        let kvm = Kvm::new().unwrap();
        let vm = kvm.create_vm().unwrap();
        let vcpu = vm.create_vcpu(0).unwrap();
        let mut launch = TdxKvmLaunch::new(fake_host(1 << 28), TdxKvmOptions::default()).unwrap();
        let config = TdxVmConfig { cpuid: &[], xfam: None, gpaw: 48 };

        let err = launch.configure_vm(&vm, None).unwrap_err();
        assert_eq!(err.to_string(), "configure_vm must come after create_vm, and before init_vm");
        assert!(matches!(launch.init_vm(&vm, &config), Err(TdxLaunchError::Order { step: "init_vm", .. })));
        assert!(matches!(launch.td_cpuid(&vcpu), Err(TdxLaunchError::Order { .. })));
        assert!(matches!(launch.init_vcpu(&vcpu, &VcpuState::Tdx { rcx: 0 }), Err(TdxLaunchError::Order { .. })));
        assert!(matches!(launch.init_mem_region(&vcpu, 0, 0x1000, &[], false), Err(TdxLaunchError::Order { .. })));
        assert!(matches!(launch.finalize(&vm), Err(TdxLaunchError::Order { step: "finalize", .. })));
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x1000)]).unwrap();
        assert!(matches!(launch.add_memory(&vm, &mem, 0), Err(TdxLaunchError::Order { step: "add_memory", .. })));
    }

    #[test]
    fn configure_vm_sets_up_a_vm_kvm_takes_it_from() {
        // The split irqchip, hypercall exits and the VM's TSC are generic KVM: this
        // host's default VM takes them, as a TD would.
        let kvm = Kvm::new().unwrap();
        let vm = kvm.create_vm().unwrap();
        let mut launch = TdxKvmLaunch::new(fake_host(1 << 28), TdxKvmOptions::default()).unwrap();
        launch.stage = Stage::VmCreated; // as after create_vm on a TDX host

        let bad_tsc = launch.configure_vm(&vm, Some(2_010_000)).unwrap_err();
        launch.configure_vm(&vm, Some(2_000_000)).unwrap();

        assert!(matches!(bad_tsc, TdxLaunchError::TscKhz { khz: 2_010_000 }), "{bad_tsc}");
        assert_eq!(launch.stage, Stage::Configured);
        let again = launch.configure_vm(&vm, None).unwrap_err();
        assert!(matches!(again, TdxLaunchError::Order { .. }), "{again}");
    }

    #[test]
    fn init_vm_refuses_xfam_the_host_lacks_then_names_the_command() {
        let kvm = Kvm::new().unwrap();
        let vm = kvm.create_vm().unwrap();
        let mut launch = TdxKvmLaunch::new(fake_host(1 << 28), TdxKvmOptions::default()).unwrap();
        launch.stage = Stage::Configured;
        let cpuid = [entry(0xd, 0, SIG, [0x2e7, 0, 0, 0])];

        let xfam =
            launch.init_vm(&vm, &TdxVmConfig { cpuid: &cpuid, xfam: Some(0x2_0000_0007), gpaw: 48 }).unwrap_err();
        // A default VM has no TD: KVM refuses KVM_TDX_INIT_VM itself.
        let ioctl = launch.init_vm(&vm, &TdxVmConfig { cpuid: &cpuid, xfam: None, gpaw: 48 }).unwrap_err();

        assert!(matches!(xfam, TdxLaunchError::Host(TdxHostError::Xfam { unsupported: 0x2_0000_0000, .. })), "{xfam}");
        let msg = ioctl.to_string();
        assert!(
            msg.starts_with("KVM_TDX_INIT_VM (attributes 0x10000000 [SEPT_VE_DISABLE], XFAM 0x2e7, 1 CPUID entries)"),
            "{msg}"
        );
        assert_eq!(launch.stage, Stage::Configured, "a failed init_vm leaves the stage");
    }

    /// A launch past init_vm on a default VM, with 1 MiB of RAM at 0 registered (shared:
    /// this host's KVM has no memory attributes) and `vcpu` marked initialized.
    fn loaded_launch(vm: &VmFd, vcpu: &VcpuFd) -> TdxKvmLaunch {
        let mut launch = TdxKvmLaunch::new(fake_host(1 << 28), TdxKvmOptions::default()).unwrap();
        launch.stage = Stage::Initialized;
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        launch.memory = Some(Arc::new(PrivateMemory::register(vm, &mem, 0).unwrap()));
        launch.vcpus.push(vcpu.as_raw_fd());
        launch
    }

    #[test]
    fn malformed_ranges_are_refused_before_the_ioctl_and_the_ioctl_is_named() {
        let kvm = Kvm::new().unwrap();
        let vm = kvm.create_vm().unwrap();
        let vcpu = vm.create_vcpu(0).unwrap();
        let other = vm.create_vcpu(1).unwrap();
        let mut launch = loaded_launch(&vm, &vcpu);

        let unaligned = launch.init_mem_region(&vcpu, 0x800, 0x1000, &[], false).unwrap_err();
        let too_much = launch.init_mem_region(&vcpu, 0x1000, 0x1000, &[1; 0x1001], false).unwrap_err();
        let outside = launch.init_mem_region(&vcpu, 0xff000, 0x2000, &[], false).unwrap_err();
        let not_initialized = launch.init_mem_region(&other, 0x1000, 0x1000, &[], false).unwrap_err();
        let refused = launch.init_mem_region(&vcpu, 0x1000, 0x2000, &[0xaa; 0x1800], true).unwrap_err();

        assert!(unaligned.to_string().contains("page-aligned"), "{unaligned}");
        assert!(too_much.to_string().contains("holding the contents"), "{too_much}");
        assert!(outside.to_string().contains("not inside guest memory"), "{outside}");
        assert!(not_initialized.to_string().contains("init_vcpu on the vCPU"), "{not_initialized}");
        let msg = refused.to_string();
        assert!(msg.starts_with("KVM_TDX_INIT_MEM_REGION (2 pages at 0x1000, measured) failed"), "{msg}");
        assert_eq!(launch.stage, Stage::Initialized);
    }

    #[test]
    fn plans_are_loaded_in_order_skipping_aug_and_refusing_other_tees() {
        let kvm = Kvm::new().unwrap();
        let vm = kvm.create_vm().unwrap();
        let vcpu = vm.create_vcpu(0).unwrap();
        let mut launch = loaded_launch(&vm, &vcpu);
        let range = |gpa, page_type, what: &str| PlanRange {
            gpa,
            len: 0x1000,
            page_type,
            contents: Contents::Zero,
            what: what.into(),
        };
        let aug_only = LaunchPlan {
            ranges: vec![range(0x20_0000, PageType::Tdx(TdxPageType::Aug), "outside RAM but AUG")],
            vcpus: vec![],
        };
        let snp = LaunchPlan { ranges: vec![range(0x1000, PageType::Snp(SnpPageType::Normal), "snp")], vcpus: vec![] };
        let first_fails = LaunchPlan {
            ranges: vec![
                range(0x2000, PageType::Tdx(TdxPageType::AddMeasured), "BFV"),
                range(0x20_0000, PageType::Tdx(TdxPageType::AddUnmeasured), "not RAM"),
            ],
            vcpus: vec![],
        };

        launch.init_mem_regions(&vcpu, &aug_only).unwrap();
        let not_tdx = launch.init_mem_regions(&vcpu, &snp).unwrap_err();
        let ioctl = launch.init_mem_regions(&vcpu, &first_fails).unwrap_err();

        assert_eq!(not_tdx.to_string(), "plan range 'snp' at 0x1000: not a TDX range");
        assert!(ioctl.to_string().starts_with("KVM_TDX_INIT_MEM_REGION (1 pages at 0x2000, measured)"), "{ioctl}");
    }

    #[test]
    fn non_tdx_plan_vcpus_are_refused() {
        let kvm = Kvm::new().unwrap();
        let vm = kvm.create_vm().unwrap();
        let vcpu = vm.create_vcpu(0).unwrap();
        let mut launch = TdxKvmLaunch::new(fake_host(1 << 28), TdxKvmOptions::default()).unwrap();
        launch.stage = Stage::Initialized;
        let snp = VcpuState::Snp(crate::plan::snp::SnpVcpu::default());

        let err = launch.init_vcpu(&vcpu, &snp).unwrap_err();
        let ioctl = launch.init_vcpu(&vcpu, &VcpuState::Tdx { rcx: 0x80_9000 }).unwrap_err();

        assert!(err.to_string().contains("not a TDX vCPU"), "{err}");
        assert!(ioctl.to_string().starts_with("KVM_TDX_INIT_VCPU (RCX 0x809000) failed"), "{ioctl}");
        assert!(launch.vcpus.is_empty(), "a refused vCPU is not recorded");
    }

    #[test]
    fn source_pages_hold_the_contents_then_zeros() {
        let src = SourcePages::new(0x2000, &[7; 0x1001]).unwrap();

        // SAFETY: the mapping is 0x2000 readable bytes, alive while `src` is.
        let bytes = unsafe { std::slice::from_raw_parts(src.ptr.cast::<u8>(), src.len) };

        assert_eq!(src.ptr as usize % 4096, 0);
        assert_eq!((bytes[0x1000], bytes[0x1001], bytes[0x1fff]), (7, 0, 0));
    }
}
