//! The exits of a vCPU of a real SEV-SNP guest that KVM hands to user space: page-state
//! changes (KVM_HC_MAP_GPA_RANGE hypercalls, memory faults), termination requests, and
//! certificate requests (KVM_EXIT_SNP_REQ_CERTS). KVM serves the GHCB itself.

use std::sync::Arc;

use devices::virtio::SharedMemory;

use crate::conversions::Converter;
use crate::vm::VmEvent;

/// The exits of a vCPU of a real SEV-SNP guest that KVM hands to user space: page-state
/// changes (MAP_GPA_RANGE hypercalls, memory faults) and termination requests. KVM
/// serves the GHCB itself.
pub struct RealSnpExits {
    /// The vCPU.
    pub index: u32,
    /// The certificates KVM_EXIT_SNP_REQ_CERTS is answered with, if any.
    pub certs: Option<Arc<launch::snp::kvm::exits::CertServer>>,
    /// The launch: its guest_memfds and conversions.
    pub launch: Arc<launch::snp::kvm::SnpKvmLaunch>,
    /// The VM (KVM_SET_MEMORY_ATTRIBUTES).
    pub vm: Arc<kvm_ioctls::VmFd>,
    /// The devices' view of guest memory.
    pub shared: Arc<SharedMemory>,
}

impl std::fmt::Debug for RealSnpExits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RealSnpExits").field("index", &self.index).finish_non_exhaustive()
    }
}

impl RealSnpExits {
    fn converter(&self) -> Converter<'_> {
        Converter { index: self.index, vm: &self.vm, shared: &self.shared }
    }

    /// KVM_EXIT_HYPERCALL: MAP_GPA_RANGE converts; the value to return to the guest.
    pub fn hypercall(&self, nr: u64, args: &[u64; 6]) -> u64 {
        self.converter().hypercall(self.launch.memory(), nr, args)
    }

    /// KVM_EXIT_MEMORY_FAULT: converts the faulting range, or ends the VM (the fault
    /// would repeat forever).
    pub fn memory_fault(&self, flags: u64, gpa: u64, size: u64) -> Result<(), VmEvent> {
        self.converter().memory_fault(self.launch.memory(), flags, gpa, size)
    }

    /// KVM_SYSTEM_EVENT_SEV_TERM: the guest's termination request, if this is one.
    pub fn termination(&self, event_type: u32, data: &[u64]) -> Option<VmEvent> {
        use launch::snp::kvm::exits::SevTermination;
        Some(match SevTermination::from_system_event(event_type, data)? {
            SevTermination::Request { set, code } => {
                VmEvent::GuestTerminated { vcpu: self.index, set: u64::from(set), code: u64::from(code) }
            }
            other => VmEvent::VcpuFailed { vcpu: self.index, message: format!("SEV termination: {other:?}") },
        })
    }

    /// KVM_EXIT_SNP_REQ_CERTS: writes the certificate blob into the guest's buffer (or
    /// says how many pages it needs) and sets the exit's return value; without a blob,
    /// the request fails (KVM then fails the guest's extended request).
    pub fn req_certs(&self, run: &mut kvm_bindings::kvm_run) {
        let Some(exit) = launch::snp::kvm::exits::req_certs_exit(run) else { return };
        match (&self.certs, self.launch.memory()) {
            (Some(server), Some(memory)) => {
                // A blob read at launch: no lock to hold across the next KVM_RUN.
                let (reply, _lock) = server.serve(memory, exit);
                log::debug!("vCPU {}: certificate request: {reply:?}", self.index);
            }
            _ => exit.ret = u64::from(libc::EIO as u32),
        }
    }
}
