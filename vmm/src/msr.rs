//! The MSR access the emulated platforms' exit handlers forward a guest's MSR requests
//! to: a vCPU's (KVM_GET_MSRS / KVM_SET_MSRS), or a stand-in where no KVM runs (the
//! fuzz targets that drive the GHCB and TDCALL handlers).

use kvm_bindings::{kvm_msr_entry, Msrs};
use kvm_ioctls::VcpuFd;

/// Reads and writes one vCPU's MSRs.
pub trait MsrAccess {
    /// RDMSR of `index`: its value, or `None` when the vCPU refuses it (the guest gets
    /// #GP or the GHCI's invalid-operand status).
    fn read_msr(&mut self, index: u32) -> Option<u64>;
    /// WRMSR of `value` to `index`: whether the vCPU took it.
    fn write_msr(&mut self, index: u32, value: u64) -> bool;
}

impl MsrAccess for VcpuFd {
    fn read_msr(&mut self, index: u32) -> Option<u64> {
        let mut msrs = Msrs::from_entries(&[kvm_msr_entry { index, ..Default::default() }]).ok()?;
        match self.get_msrs(&mut msrs) {
            Ok(1) => msrs.as_slice().first().map(|e| e.data),
            _ => None,
        }
    }

    fn write_msr(&mut self, index: u32, value: u64) -> bool {
        Msrs::from_entries(&[kvm_msr_entry { index, data: value, ..Default::default() }])
            .is_ok_and(|msrs| self.set_msrs(&msrs).is_ok_and(|n| n == 1))
    }
}
