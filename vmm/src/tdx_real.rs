//! The exits of a vCPU of a real TD that KVM hands to user space: page conversions
//! (MapGPA as KVM_HC_MAP_GPA_RANGE, memory faults), the TDVMCALLs KVM forwards
//! (KVM_EXIT_TDX: GetQuote, SetupEventNotifyInterrupt, GetTdVmCallInfo) and the TD's
//! fatal error (KVM_SYSTEM_EVENT_TDX_FATAL). The TDX module and KVM serve the rest.

use std::sync::Arc;

use devices::virtio::SharedMemory;
use launch::tdx::kvm::exits::{tdx_exit, TdxExitHandler, TdxFatalError};
use launch::tdx::kvm::TdxKvmLaunch;

use crate::conversions::Converter;
use crate::vm::VmEvent;

/// One vCPU's real-TDX exits.
pub struct RealTdxExits {
    /// The vCPU (and its APIC ID).
    pub index: u32,
    /// The launch: guest_memfds and conversions.
    pub launch: Arc<TdxKvmLaunch>,
    /// KVM_EXIT_TDX's handler.
    pub handler: Arc<TdxExitHandler>,
    /// The VM (KVM_SET_MEMORY_ATTRIBUTES).
    pub vm: Arc<kvm_ioctls::VmFd>,
    /// The devices' view of guest memory.
    pub shared: Arc<SharedMemory>,
}

impl std::fmt::Debug for RealTdxExits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RealTdxExits").field("index", &self.index).finish_non_exhaustive()
    }
}

impl RealTdxExits {
    fn converter(&self) -> Converter<'_> {
        Converter { index: self.index, vm: &self.vm, shared: &self.shared }
    }

    /// KVM_EXIT_HYPERCALL (MapGPA): converts; the value to return to the TD.
    pub fn hypercall(&self, nr: u64, args: &[u64; 6]) -> u64 {
        self.converter().hypercall(self.launch.memory().map(Arc::as_ref), nr, args)
    }

    /// KVM_EXIT_MEMORY_FAULT: converts the range, or ends the VM.
    pub fn memory_fault(&self, flags: u64, gpa: u64, size: u64) -> Result<(), VmEvent> {
        self.converter().memory_fault(self.launch.memory().map(Arc::as_ref), flags, gpa, size)
    }

    /// KVM_EXIT_TDX: the TDVMCALLs KVM forwards; their status goes back in kvm_run.
    pub fn tdx(&self, run: &mut kvm_bindings::kvm_run) {
        let (Some(exit), Some(memory)) = (tdx_exit(run), self.launch.memory()) else { return };
        let action = self.handler.handle(exit, self.index, memory.clone());
        log::debug!("vCPU {}: {action:?}", self.index);
    }

    /// KVM_SYSTEM_EVENT_TDX_FATAL: the TD's fatal error, if this is one.
    pub fn fatal(&self, event_type: u32, data: &[u64]) -> Option<VmEvent> {
        let fatal = TdxFatalError::from_system_event(event_type, data)?;
        log::error!("vCPU {}: {fatal}", self.index);
        let code = data.first().copied().unwrap_or_default();
        Some(VmEvent::TdxFatalError { vcpu: self.index, code })
    }
}
