//! The exits of a real confidential vCPU that convert guest memory between private and
//! shared, the same for SEV-SNP ([`crate::snp_real`]) and TDX ([`crate::tdx_real`]):
//! KVM_HC_MAP_GPA_RANGE hypercalls (the guest's page-state change or MapGPA) and
//! KVM_EXIT_MEMORY_FAULT. KVM's memory attributes change first, then the devices' view
//! follows, so the devices see exactly the shared pages.

use devices::virtio::SharedMemory;
use kvm_ioctls::VmFd;
use launch::private_memory::{hypercall_ret, Conversion, PrivateMemory};

use crate::vm::VmEvent;

/// A vCPU's view of what a conversion changes.
pub(crate) struct Converter<'a> {
    /// The vCPU.
    pub index: u32,
    /// The VM (KVM_SET_MEMORY_ATTRIBUTES).
    pub vm: &'a VmFd,
    /// The devices' view of guest memory.
    pub shared: &'a SharedMemory,
}

impl Converter<'_> {
    /// After a conversion, the devices see exactly the shared pages.
    fn converted(&self, c: &Conversion) {
        if let Err(e) = self.shared.set_shared(c.gpa, c.len, !c.to_private) {
            log::warn!("vCPU {}: the devices' view of {:#x} (+{:#x}): {e}", self.index, c.gpa, c.len);
        }
    }

    /// KVM_EXIT_HYPERCALL: MAP_GPA_RANGE converts; the value to return to the guest
    /// (`u64::MAX` before the launch has memory).
    pub fn hypercall(&self, memory: Option<&PrivateMemory>, nr: u64, args: &[u64; 6]) -> u64 {
        let Some(memory) = memory else { return u64::MAX };
        let result = memory.handle_map_gpa_range(self.vm, nr, args);
        match &result {
            Ok(c) => self.converted(c),
            Err(e) => log::debug!("vCPU {}: MAP_GPA_RANGE refused: {e}", self.index),
        }
        hypercall_ret(&result)
    }

    /// KVM_EXIT_MEMORY_FAULT: converts the faulting range, or ends the VM (the fault
    /// would repeat forever).
    pub fn memory_fault(&self, memory: Option<&PrivateMemory>, flags: u64, gpa: u64, size: u64) -> Result<(), VmEvent> {
        let fail = |message: String| VmEvent::VcpuFailed { vcpu: self.index, message };
        let memory = memory.ok_or_else(|| fail("memory fault before the guest has memory".into()))?;
        let c = memory
            .handle_memory_fault(self.vm, flags, gpa, size)
            .map_err(|e| fail(format!("memory fault at {gpa:#x} (+{size:#x}) cannot be resolved: {e}")))?;
        self.converted(&c);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{GuestAddress, GuestMemoryMmap};

    #[test]
    fn exits_before_the_launch_has_memory_fail_without_converting() {
        let Ok(kvm) = kvm_ioctls::Kvm::new() else {
            eprintln!("SKIP: no /dev/kvm");
            return;
        };
        let vm = kvm.create_vm().unwrap();
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        let shared = SharedMemory::all_shared(&mem);
        let c = Converter { index: 3, vm: &vm, shared: &shared };

        assert_eq!(c.hypercall(None, 12, &[0, 1, 0, 0, 0, 0]), u64::MAX);
        let err = c.memory_fault(None, 0, 0x1000, 0x1000).unwrap_err();

        assert!(
            matches!(&err, VmEvent::VcpuFailed { vcpu: 3, message } if message == "memory fault before the guest has memory"),
            "{err:?}"
        );
    }
}
