//! What the emulated SEV-SNP and TDX platforms ([`crate::snp::emulated`],
//! [`crate::tdx::emulated`]) ask of KVM alike: a VM in which an instruction KVM cannot
//! emulate (PVALIDATE, RMPADJUST, TDCALL) ends in an exit to user space that carries
//! its bytes, instead of an injected #UD; and errors that name the capability or ioctl
//! a missing piece of KVM broke.

use kvm_bindings::{kvm_enable_cap, KVM_CAP_EXIT_ON_EMULATION_FAILURE};
use kvm_ioctls::{Kvm, VmFd};

use crate::LaunchError;

/// A KVM error of capability or ioctl `what` as [`LaunchError::Emulation`].
pub(crate) fn emu_err(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> LaunchError {
    move |source| LaunchError::Emulation { what, source }
}

/// Creates a plain KVM VM with KVM_CAP_EXIT_ON_EMULATION_FAILURE enabled.
pub(crate) fn create_vm(kvm: &Kvm) -> Result<VmFd, LaunchError> {
    let vm = kvm.create_vm().map_err(LaunchError::CreateVm)?;
    let cap = kvm_enable_cap { cap: KVM_CAP_EXIT_ON_EMULATION_FAILURE, args: [1, 0, 0, 0], ..Default::default() };
    vm.enable_cap(&cap).map_err(emu_err("KVM_CAP_EXIT_ON_EMULATION_FAILURE"))?;
    Ok(vm)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_what_was_missing() {
        let err = emu_err("KVM_X86_SET_MSR_FILTER")(kvm_ioctls::Error::new(libc::EINVAL));

        assert!(matches!(err, LaunchError::Emulation { what: "KVM_X86_SET_MSR_FILTER", .. }));
        assert!(err
            .to_string()
            .starts_with("the emulated confidential platform needs KVM_X86_SET_MSR_FILTER from KVM: "));
    }

    #[test]
    fn create_vm_succeeds_where_kvm_has_the_capability() {
        let Ok(kvm) = Kvm::new() else {
            eprintln!("SKIP: no /dev/kvm");
            return;
        };
        if kvm.check_extension_raw(u64::from(KVM_CAP_EXIT_ON_EMULATION_FAILURE)) <= 0 {
            eprintln!("SKIP: KVM lacks KVM_CAP_EXIT_ON_EMULATION_FAILURE");
            return;
        }

        create_vm(&kvm).unwrap();
    }
}
