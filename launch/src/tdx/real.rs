//! The real TDX launch as a [`LaunchBackend`]: the steps of [`super::kvm`] in the
//! builder's order. KVM needs a vCPU for KVM_TDX_INIT_MEM_REGION and every vCPU
//! initialized before it, so the plan's ranges go in when the last vCPU has been set up.

use std::sync::Arc;

use kvm_bindings::{kvm_cpuid_entry2, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use vm_memory::GuestMemoryMmap;

use super::kvm::options::TdxKvmOptions;
use super::kvm::probe::TdxHost;
use super::kvm::{vcpu_cpuid, TdxKvmLaunch, TdxVmConfig, DEFAULT_GPAW};
use crate::plan::LaunchPlan;
use crate::{LaunchBackend, LaunchError, VcpuInit};

/// The real TDX launch backend.
#[derive(Debug)]
pub struct RealTdx {
    launch: Option<TdxKvmLaunch>,
    plan: Option<LaunchPlan>,
    cpuid: Vec<kvm_cpuid_entry2>,
}

impl RealTdx {
    /// A launch on `host` with `options`, the TD's CPUID configured from `cpuid` (what
    /// the guest should see, e.g. KVM_GET_SUPPORTED_CPUID filtered).
    pub fn new(host: TdxHost, options: TdxKvmOptions, cpuid: Vec<kvm_cpuid_entry2>) -> Result<Self, LaunchError> {
        Ok(Self { launch: Some(TdxKvmLaunch::new(host, options)?), plan: None, cpuid })
    }

    fn launch(&mut self) -> Result<&mut TdxKvmLaunch, LaunchError> {
        self.launch.as_mut().ok_or(LaunchError::OutOfOrder("the TDX launch was handed over"))
    }

    /// Hands the launch (its guest_memfds and exit handling) over to the running VM.
    pub fn into_runtime(mut self) -> Option<Arc<TdxKvmLaunch>> {
        self.launch.take().map(Arc::new)
    }
}

impl LaunchBackend for RealTdx {
    fn name(&self) -> &'static str {
        "TDX"
    }

    /// Creates the TD and configures it (split irqchip, MapGPA exits): the builder must
    /// not enable the split irqchip again.
    fn create_vm(&mut self, kvm: &Kvm) -> Result<VmFd, LaunchError> {
        let launch = self.launch()?;
        let vm = launch.create_vm(kvm)?;
        launch.configure_vm(&vm, None)?;
        Ok(vm)
    }

    fn add_memory(&mut self, vm: &VmFd, mem: &GuestMemoryMmap) -> Result<(), LaunchError> {
        self.launch()?.add_memory(vm, mem, 0)?;
        Ok(())
    }

    /// KVM_TDX_INIT_VM (before any vCPU); the ranges go in with the last vCPU.
    fn load_plan(&mut self, vm: &VmFd, _mem: &GuestMemoryMmap, plan: &LaunchPlan) -> Result<(), LaunchError> {
        self.plan = Some(plan.clone());
        let cpuid = self.cpuid.clone();
        self.launch()?.init_vm(vm, &TdxVmConfig { cpuid: &cpuid, xfam: None, gpaw: DEFAULT_GPAW })?;
        Ok(())
    }

    fn init_vcpu(&mut self, kvm: &Kvm, vcpu: &VcpuFd, init: &VcpuInit) -> Result<(), LaunchError> {
        let supported = kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES).map_err(LaunchError::SupportedCpuid)?;
        let plan = self.plan.clone().ok_or(LaunchError::OutOfOrder("init_vcpu before load_plan"))?;
        let launch = self.launch()?;
        let td = launch.td_cpuid(vcpu)?;
        let cpuid = vcpu_cpuid(&td, &supported)?;
        vcpu.set_cpuid2(&cpuid).map_err(|source| LaunchError::VcpuSetup {
            index: init.index,
            what: "KVM_SET_CPUID2",
            source,
        })?;
        let state = plan.vcpus.get(init.index as usize).ok_or(LaunchError::OutOfOrder("no such vCPU in the plan"))?;
        launch.init_vcpu(vcpu, state)?;
        if init.index + 1 == init.count {
            launch.init_mem_regions(vcpu, &plan)?;
        }
        Ok(())
    }

    fn finalize(&mut self, vm: &VmFd, _mem: &GuestMemoryMmap) -> Result<(), LaunchError> {
        self.launch()?.finalize(vm)?;
        Ok(())
    }
}
