//! The CPUID table a vCPU is given: KVM's supported set, filtered per vCPU.

use kvm_bindings::kvm_cpuid_entry2;

/// CPUID.1:ECX bit 31, "running under a hypervisor".
const LEAF1_ECX_HYPERVISOR: u32 = 1 << 31;
/// CPUID.1:EDX bit 28, HTT (the logical-processor count in EBX is valid).
const LEAF1_EDX_HTT: u32 = 1 << 28;

/// Filters KVM's supported CPUID entries for vCPU `index` of `vcpu_count`:
/// sets the APIC ID (leaf 1 EBX, leaves 0xB/0x1F EDX) and the logical-processor
/// count, sets the hypervisor bit, and hides the performance-monitoring leaf
/// (cvmm exposes no PMU).
pub fn filter_cpuid(entries: &mut [kvm_cpuid_entry2], index: u8, vcpu_count: u8) {
    for e in entries.iter_mut() {
        match e.function {
            0x1 => {
                e.ebx = (e.ebx & 0x0000_ffff) | (u32::from(index) << 24) | (u32::from(vcpu_count) << 16);
                e.ecx |= LEAF1_ECX_HYPERVISOR;
                e.edx |= LEAF1_EDX_HTT;
            }
            0xb | 0x1f => e.edx = u32::from(index),
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
        ];
        filter_cpuid(&mut entries, 3, 4);
        assert_eq!(entries[0].ebx >> 24, 3);
        assert_eq!((entries[0].ebx >> 16) & 0xff, 4);
        assert_eq!(entries[0].ebx & 0xffff, 0x0800);
        assert_ne!(entries[0].ecx & LEAF1_ECX_HYPERVISOR, 0);
        assert_eq!(entries[1].edx, 3);
        assert_eq!(entries[2].eax, 0);
    }
}
