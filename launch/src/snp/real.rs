//! The real SEV-SNP launch as a [`LaunchBackend`]: the steps of [`super::kvm`], in the
//! builder's order (create the VM and start the launch, give it memory, put the plan
//! in, set up the vCPUs, finish), on a host that [`super::kvm::probe::probe_host`]
//! accepted.

use std::sync::Arc;

use kvm_bindings::KVM_MAX_CPUID_ENTRIES;
use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use vm_memory::GuestMemoryMmap;

use super::kvm::options::SnpKvmOptions;
use super::kvm::probe::SnpHost;
use super::kvm::uapi::SVM_SEV_FEAT_SNP_ACTIVE;
use super::kvm::SnpKvmLaunch;
use crate::plan::snp::SnpVcpu;
use crate::plan::{LaunchPlan, VcpuState};
use crate::{LaunchBackend, LaunchError, VcpuInit};

/// The real SNP launch backend.
#[derive(Debug)]
pub struct RealSnp {
    launch: Option<SnpKvmLaunch>,
    sev_features: u64,
    vcpus: Vec<SnpVcpu>,
    serve_certs: bool,
}

impl RealSnp {
    /// A launch on `host` with `options`, whose VMSAs have `sev_features` (SNPActive
    /// included); `serve_certs`: the guest's extended attestation requests get their
    /// certificates from user space (KVM_SEV_SNP_ENABLE_REQ_CERTS; the launch fails on
    /// kernels without it, saying no certificates can be served).
    pub fn new(
        host: SnpHost,
        options: SnpKvmOptions,
        sev_features: u64,
        serve_certs: bool,
    ) -> Result<Self, LaunchError> {
        Ok(Self { launch: Some(SnpKvmLaunch::new(host, options)?), sev_features, vcpus: Vec::new(), serve_certs })
    }

    fn launch(&mut self) -> Result<&mut SnpKvmLaunch, LaunchError> {
        self.launch.as_mut().ok_or(LaunchError::OutOfOrder("the SNP launch was handed over"))
    }

    /// Hands the launch (its guest_memfds, which must live as long as the VM, and the
    /// page conversions of the vCPU loop) over to the running VM.
    pub fn into_runtime(mut self) -> Option<Arc<SnpKvmLaunch>> {
        self.launch.take().map(Arc::new)
    }
}

impl LaunchBackend for RealSnp {
    fn name(&self) -> &'static str {
        "SEV-SNP"
    }

    fn create_vm(&mut self, kvm: &Kvm) -> Result<VmFd, LaunchError> {
        let features = self.sev_features & !SVM_SEV_FEAT_SNP_ACTIVE;
        let serve_certs = self.serve_certs;
        let launch = self.launch()?;
        let vm = launch.create_vm(kvm)?;
        launch.init(&vm, features)?;
        if serve_certs {
            launch.enable_req_certs(&vm)?;
        }
        launch.launch_start(&vm)?;
        Ok(vm)
    }

    fn add_memory(&mut self, vm: &VmFd, mem: &GuestMemoryMmap) -> Result<(), LaunchError> {
        self.launch()?.add_memory(vm, mem, 0)?;
        Ok(())
    }

    fn load_plan(&mut self, vm: &VmFd, _mem: &GuestMemoryMmap, plan: &LaunchPlan) -> Result<(), LaunchError> {
        self.vcpus = plan
            .vcpus
            .iter()
            .filter_map(|v| match v {
                VcpuState::Snp(s) => Some(s.clone()),
                VcpuState::Tdx { .. } => None,
            })
            .collect();
        self.launch()?.launch_plan(vm, plan)?;
        Ok(())
    }

    fn init_vcpu(&mut self, kvm: &Kvm, vcpu: &VcpuFd, init: &VcpuInit) -> Result<(), LaunchError> {
        let mut cpuid = kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES).map_err(LaunchError::SupportedCpuid)?;
        let count = u8::try_from(init.count).unwrap_or(u8::MAX);
        arch::cpuid::filter_cpuid(cpuid.as_mut_slice(), init.index as u8, count);
        vcpu.set_cpuid2(&cpuid).map_err(|source| LaunchError::VcpuSetup {
            index: init.index,
            what: "KVM_SET_CPUID2",
            source,
        })?;
        let state = self.vcpus.get(init.index as usize).cloned();
        let state = state.ok_or(LaunchError::OutOfOrder("init_vcpu before load_plan"))?;
        self.launch()?.set_vcpu(kvm, vcpu, &state)?;
        Ok(())
    }

    fn finalize(&mut self, vm: &VmFd, _mem: &GuestMemoryMmap) -> Result<(), LaunchError> {
        self.launch()?.launch_finish(vm)?;
        Ok(())
    }
}
