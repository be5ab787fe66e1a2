//! Guest RAM as KVM memory slots, for every backend that registers it with
//! KVM_SET_USER_MEMORY_REGION (plain KVM and the emulated SEV-SNP and TDX platforms):
//! each region at its guest-physical address and, on the emulated platforms, once more
//! at an alias (the address with the SEV C-bit or the TDX shared bit set), so both
//! addresses reach the same host pages.

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::VmFd;
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use crate::LaunchError;

/// Registers every region of `mem` once per entry of `gpa_bits`: with `n` regions,
/// region `i` goes at its start address ORed with `gpa_bits[k]`, in slot `i + k * n`
/// (`&[0]` registers each region once, at its own address).
pub(crate) fn add_memory_slots(vm: &VmFd, mem: &GuestMemoryMmap, gpa_bits: &[u64]) -> Result<(), LaunchError> {
    let count = mem.num_regions();
    for (i, region) in mem.iter().enumerate() {
        for (k, bits) in gpa_bits.iter().enumerate() {
            let slot = (i + k * count) as u32;
            let gpa = region.start_addr().0 | bits;
            let desc = kvm_userspace_memory_region {
                slot,
                flags: 0,
                guest_phys_addr: gpa,
                memory_size: region.len(),
                userspace_addr: region.as_ptr() as u64,
            };
            // SAFETY: the mapping belongs to `mem`, which outlives the VM (the builder
            // keeps both until the VM fd is closed), and covers `memory_size` bytes;
            // several slots may alias it.
            unsafe { vm.set_user_memory_region(desc) }.map_err(|source| LaunchError::SetMemoryRegion {
                slot,
                gpa,
                len: region.len(),
                source,
            })?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvm_ioctls::Kvm;
    use vm_memory::GuestAddress;

    /// A VM on this host's KVM, or `None` where there is no /dev/kvm.
    fn vm() -> Option<VmFd> {
        Kvm::new().ok()?.create_vm().ok()
    }

    /// Whether KVM takes a new one-page slot at `gpa` (it refuses one that overlaps
    /// a registered slot).
    fn free(vm: &VmFd, mem: &GuestMemoryMmap, gpa: u64) -> bool {
        let desc = kvm_userspace_memory_region {
            slot: 100,
            flags: 0,
            guest_phys_addr: gpa,
            memory_size: 0x1000,
            userspace_addr: mem.get_host_address(GuestAddress(0)).unwrap() as u64,
        };
        // SAFETY: the mapping belongs to `mem`, which outlives the VM in these tests.
        let free = unsafe { vm.set_user_memory_region(desc) }.is_ok();
        if free {
            // SAFETY: a zero size deletes the slot.
            unsafe { vm.set_user_memory_region(kvm_userspace_memory_region { memory_size: 0, ..desc }) }.unwrap();
        }
        free
    }

    #[test]
    fn every_region_is_registered_at_its_address_and_its_alias() {
        let Some(vm) = vm() else {
            eprintln!("SKIP: no /dev/kvm");
            return;
        };
        let ranges = [(GuestAddress(0), 0x10_0000), (GuestAddress(0x20_0000), 0x10_0000)];
        let mem = GuestMemoryMmap::<()>::from_ranges(&ranges).unwrap();
        const ALIAS: u64 = 1 << 40;

        add_memory_slots(&vm, &mem, &[0, ALIAS]).unwrap();

        for gpa in [0, 0xf_f000, 0x20_0000, 0x2f_f000] {
            assert!(!free(&vm, &mem, gpa), "{gpa:#x} is not registered");
            assert!(!free(&vm, &mem, gpa | ALIAS), "{:#x} is not registered", gpa | ALIAS);
        }
        for gpa in [0x10_0000, 0x30_0000, ALIAS | 0x10_0000, ALIAS | 0x30_0000] {
            assert!(free(&vm, &mem, gpa), "{gpa:#x} is registered");
        }
    }

    #[test]
    fn a_failing_slot_names_its_number_and_address() {
        let Some(vm) = vm() else {
            eprintln!("SKIP: no /dev/kvm");
            return;
        };
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();

        // The same address twice: the second slot overlaps the first.
        let err = add_memory_slots(&vm, &mem, &[0, 0]).unwrap_err();

        assert!(matches!(err, LaunchError::SetMemoryRegion { slot: 1, gpa: 0, len: 0x10_0000, .. }), "{err}");
    }
}
