//! The CPUID table a vCPU is given: KVM's supported set, filtered per vCPU.

use kvm_bindings::kvm_cpuid_entry2;

/// CPUID.1:ECX bit 31, "running under a hypervisor".
const LEAF1_ECX_HYPERVISOR: u32 = 1 << 31;
/// CPUID.1:EDX bit 28, HTT (the logical-processor count in EBX is valid).
const LEAF1_EDX_HTT: u32 = 1 << 28;
/// KVM paravirtual features (leaf 0x40000001 EAX) that make a guest issue hypercalls:
/// PV_UNHALT (7), PV_SEND_IPI (11), PV_SCHED_YIELD (13). cvmm hides them: hypercalls
/// never reach user space on hosts like ours (the vCPU spins in KVM_RUN; an SMP Linux
/// guest hangs in its first IPI), and a confidential guest cannot use them anyway.
const KVM_PV_HYPERCALL_FEATURES: u32 = (1 << 7) | (1 << 11) | (1 << 13);

/// Filters KVM's supported CPUID entries for vCPU `index` of `vcpu_count`:
/// sets the APIC ID (leaf 1 EBX, leaves 0xB/0x1F EDX) and the logical-processor
/// count, sets the hypervisor bit, hides the performance-monitoring leaf (cvmm
/// exposes no PMU) and the KVM paravirtual features that issue hypercalls.
pub fn filter_cpuid(entries: &mut [kvm_cpuid_entry2], index: u8, vcpu_count: u8) {
    for e in entries.iter_mut() {
        match e.function {
            0x1 => {
                e.ebx = (e.ebx & 0x0000_ffff) | (u32::from(index) << 24) | (u32::from(vcpu_count) << 16);
                e.ecx |= LEAF1_ECX_HYPERVISOR;
                e.edx |= LEAF1_EDX_HTT;
            }
            0xb | 0x1f => e.edx = u32::from(index),
            0x4000_0001 => e.eax &= !KVM_PV_HYPERCALL_FEATURES,
            0xa => {
                e.eax = 0;
                e.ebx = 0;
                e.ecx = 0;
                e.edx = 0;
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaf1_carries_apic_id_count_and_hypervisor_bit() {
        let mut entries = [
            kvm_cpuid_entry2 { function: 1, ebx: 0xff00_0800, ..Default::default() },
            kvm_cpuid_entry2 { function: 0xb, edx: 7, ..Default::default() },
            kvm_cpuid_entry2 { function: 0xa, eax: 0x0704_3000, ..Default::default() },
            kvm_cpuid_entry2 { function: 0x4000_0001, eax: 0xffff_ffff, ..Default::default() },
        ];
        filter_cpuid(&mut entries, 3, 4);
        assert_eq!(entries[0].ebx >> 24, 3);
        assert_eq!((entries[0].ebx >> 16) & 0xff, 4);
        assert_eq!(entries[0].ebx & 0xffff, 0x0800);
        assert_ne!(entries[0].ecx & LEAF1_ECX_HYPERVISOR, 0);
        assert_eq!(entries[1].edx, 3);
        assert_eq!(entries[2].eax, 0);
        assert_eq!(entries[3].eax & KVM_PV_HYPERCALL_FEATURES, 0, "no feature that issues hypercalls");
        assert_eq!(entries[3].eax | KVM_PV_HYPERCALL_FEATURES, 0xffff_ffff, "the others stay");
    }
}
