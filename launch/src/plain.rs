//! The plain (non-confidential) KVM launch: memory is ordinary shared memory and the
//! boot vCPU's registers are set directly.

use kvm_bindings::{kvm_msr_entry, Msrs, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::{Kvm, VcpuFd, VmFd};

use crate::memslots::add_memory_slots;
use crate::{LaunchBackend, LaunchError, VcpuInit};

/// IA32_MISC_ENABLE and its "fast strings" bit, which Linux expects set.
const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
const MISC_ENABLE_FAST_STRING: u64 = 1;
/// MTRR default type: enabled, write-back.
const MSR_MTRR_DEF_TYPE: u32 = 0x2ff;
const MTRR_ENABLE_WB: u64 = (1 << 11) | 6;

/// Launches an ordinary KVM VM (`KVM_CREATE_VM` type 0).
#[derive(Debug, Default)]
pub struct PlainKvm;

impl PlainKvm {
    /// A plain-KVM backend.
    pub fn new() -> Self {
        Self
    }
}

fn vcpu_err(index: u32, what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> LaunchError {
    move |source| LaunchError::VcpuSetup { index, what, source }
}

impl LaunchBackend for PlainKvm {
    fn name(&self) -> &'static str {
        "plain KVM"
    }

    fn create_vm(&mut self, kvm: &Kvm) -> Result<VmFd, LaunchError> {
        kvm.create_vm().map_err(LaunchError::CreateVm)
    }

    fn add_memory(&mut self, vm: &VmFd, mem: &vm_memory::GuestMemoryMmap) -> Result<(), LaunchError> {
        add_memory_slots(vm, mem, &[0])
    }

    fn load_plan(
        &mut self,
        _vm: &VmFd,
        mem: &vm_memory::GuestMemoryMmap,
        plan: &crate::plan::LaunchPlan,
    ) -> Result<(), LaunchError> {
        use vm_memory::Bytes;
        // Plain memory: the ranges are simply copied.
        for range in &plan.ranges {
            for i in 0..range.pages() {
                let gpa = range.gpa + i * crate::plan::PAGE_SIZE;
                mem.write_slice(range.page(i), vm_memory::GuestAddress(gpa)).map_err(|e| LaunchError::GuestWrite {
                    what: range.what.clone(),
                    gpa,
                    message: e.to_string(),
                })?;
            }
        }
        Ok(())
    }

    fn init_vcpu(&mut self, kvm: &Kvm, vcpu: &VcpuFd, init: &VcpuInit) -> Result<(), LaunchError> {
        let mut cpuid = kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES).map_err(LaunchError::SupportedCpuid)?;
        let count = u8::try_from(init.count).unwrap_or(u8::MAX);
        arch::cpuid::filter_cpuid(cpuid.as_mut_slice(), init.index as u8, count);
        vcpu.set_cpuid2(&cpuid).map_err(vcpu_err(init.index, "KVM_SET_CPUID2"))?;

        let msrs = Msrs::from_entries(&[
            kvm_msr_entry { index: MSR_IA32_MISC_ENABLE, data: MISC_ENABLE_FAST_STRING, ..Default::default() },
            kvm_msr_entry { index: MSR_MTRR_DEF_TYPE, data: MTRR_ENABLE_WB, ..Default::default() },
        ])
        .expect("two entries fit a kvm_msrs");
        vcpu.set_msrs(&msrs).map_err(vcpu_err(init.index, "KVM_SET_MSRS"))?;

        if let Some(entry) = &init.boot {
            let sregs = vcpu.get_sregs().map_err(vcpu_err(init.index, "KVM_GET_SREGS"))?;
            vcpu.set_sregs(&arch::regs::boot_sregs(entry, sregs)).map_err(vcpu_err(init.index, "KVM_SET_SREGS"))?;
            vcpu.set_regs(&arch::regs::boot_regs(entry)).map_err(vcpu_err(init.index, "KVM_SET_REGS"))?;
            vcpu.set_fpu(&arch::regs::boot_fpu()).map_err(vcpu_err(init.index, "KVM_SET_FPU"))?;
        }
        Ok(())
    }

    fn finalize(&mut self, _vm: &VmFd, _mem: &vm_memory::GuestMemoryMmap) -> Result<(), LaunchError> {
        // Plain memory needs no sealing: the guest boots from what the builder wrote.
        Ok(())
    }
}
