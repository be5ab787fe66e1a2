//! `launch`: how a VM is created, given its initial memory and vCPU state, and started.
//!
//! One trait, [`LaunchBackend`], stands between the VMM's builder and the hypervisor
//! specifics of a launch. This crate has the plain-KVM backend ([`plain::PlainKvm`]);
//! the SEV-SNP and TDX backends (real KVM and emulated) implement the same trait, and
//! the builder chooses one at run time from the configuration, never by a cargo
//! feature and never by silently falling back.
#![deny(missing_docs)]

mod bytes;
pub mod cert_cache;
mod emulation;
pub mod measure;
mod memslots;
pub mod plain;
pub mod plan;
pub mod private_memory;
pub mod snp;
pub mod tdx;
pub mod verify;
pub mod x509;

use arch::regs::BootEntry;
use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use thiserror::Error;
use vm_memory::GuestMemoryMmap;

/// Errors from a launch step, each naming the step and the KVM error.
#[derive(Debug, Error)]
pub enum LaunchError {
    /// KVM_CREATE_VM failed.
    #[error("cannot create the VM (KVM_CREATE_VM): {0}")]
    CreateVm(#[source] kvm_ioctls::Error),
    /// KVM_SET_USER_MEMORY_REGION failed for a slot.
    #[error("cannot register guest memory slot {slot} at {gpa:#x} ({len:#x} bytes): {source}")]
    SetMemoryRegion {
        /// Memory slot.
        slot: u32,
        /// Guest-physical start.
        gpa: u64,
        /// Length.
        len: u64,
        /// KVM's error.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// Reading KVM's supported CPUID failed.
    #[error("cannot read KVM's supported CPUID: {0}")]
    SupportedCpuid(#[source] kvm_ioctls::Error),
    /// A backend step was called before the one it depends on.
    #[error("launch steps out of order: {0}")]
    OutOfOrder(&'static str),
    /// A capability the emulated platform needs from KVM is missing.
    #[error("the emulated confidential platform needs {what} from KVM: {source}")]
    Emulation {
        /// The capability or ioctl.
        what: &'static str,
        /// KVM's error.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// A step of the real SEV-SNP launch failed.
    #[error(transparent)]
    SnpKvm(#[from] snp::kvm::SnpLaunchError),
    /// A step of the real TDX launch failed.
    #[error(transparent)]
    TdxKvm(#[from] tdx::kvm::TdxLaunchError),
    /// The emulated PSP refused a launch command.
    #[error(transparent)]
    Psp(#[from] snp::psp::PspError),
    /// Writing a plan range into guest memory failed.
    #[error("cannot put '{what}' at {gpa:#x} into guest memory: {message}")]
    GuestWrite {
        /// The range.
        what: String,
        /// Where.
        gpa: u64,
        /// The error.
        message: String,
    },
    /// A vCPU state ioctl failed.
    #[error("cannot set up vCPU {index} ({what}): {source}")]
    VcpuSetup {
        /// vCPU index.
        index: u32,
        /// Which ioctl.
        what: &'static str,
        /// KVM's error.
        #[source]
        source: kvm_ioctls::Error,
    },
}

/// What each vCPU starts with.
#[derive(Debug, Clone, Copy)]
pub struct VcpuInit {
    /// vCPU index (and APIC ID).
    pub index: u32,
    /// Number of vCPUs in the VM.
    pub count: u32,
    /// Entry state for the boot vCPU; `None` for application processors, which wait
    /// for INIT/SIPI from the guest.
    pub boot: Option<BootEntry>,
}

/// A way of launching a VM on KVM: plain, or (later) SEV-SNP or TDX, real or emulated.
///
/// The builder calls the methods in this order: [`create_vm`](Self::create_vm),
/// [`add_memory`](Self::add_memory), [`load_plan`](Self::load_plan) (confidential
/// launches), [`init_vcpu`](Self::init_vcpu) for each vCPU, and
/// [`finalize`](Self::finalize) once guest memory holds everything the guest boots from.
pub trait LaunchBackend: Send {
    /// A short name for logs ("plain KVM", "SEV-SNP (emulated)", ...).
    fn name(&self) -> &'static str;

    /// Creates the VM with this backend's VM type.
    fn create_vm(&mut self, kvm: &Kvm) -> Result<VmFd, LaunchError>;

    /// Makes `mem` the guest's memory.
    fn add_memory(&mut self, vm: &VmFd, mem: &GuestMemoryMmap) -> Result<(), LaunchError>;

    /// Puts the launch plan's ranges into guest memory, in order (encrypting and
    /// measuring them where the TEE does), and records the plan's vCPU states.
    fn load_plan(&mut self, vm: &VmFd, mem: &GuestMemoryMmap, plan: &plan::LaunchPlan) -> Result<(), LaunchError>;

    /// Gives a freshly created vCPU its CPUID table and initial state.
    fn init_vcpu(&mut self, kvm: &Kvm, vcpu: &VcpuFd, init: &VcpuInit) -> Result<(), LaunchError>;

    /// Seals the launch: after this the guest's initial memory and state are fixed.
    fn finalize(&mut self, vm: &VmFd, mem: &GuestMemoryMmap) -> Result<(), LaunchError>;
}
