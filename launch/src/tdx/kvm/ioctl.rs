//! One function per ioctl and per TDX `KVM_MEMORY_ENCRYPT_OP` command of the real TDX
//! launch, each named after what it issues, with the argument structure built from its
//! parameters and the TDX module's status (`hw_error`) kept in the error.
//!
//! TDX commands go through `KVM_MEMORY_ENCRYPT_OP` on the VM fd (`KVM_TDX_CAPABILITIES`,
//! `KVM_TDX_INIT_VM`, `KVM_TDX_FINALIZE_VM`) or on a vCPU fd (`KVM_TDX_INIT_VCPU`,
//! `KVM_TDX_INIT_MEM_REGION`, `KVM_TDX_GET_CPUID`); kvm-ioctls 0.25 has neither the TDX
//! structures nor the vCPU-level ioctl, so [`vm_memory_encrypt_op`] and
//! [`vcpu_memory_encrypt_op`] issue them. `KVM_SET_TSC_KHZ` on the VM fd is issued here
//! too (kvm-ioctls has only the vCPU one). Guest_memfd, memory slots, memory attributes
//! and `KVM_CAP_EXIT_HYPERCALL` are [`crate::private_memory`]'s.

use std::fmt;

use kvm_bindings::{
    kvm_cpuid_entry2, kvm_enable_cap, CpuId, KVM_CAP_SPLIT_IRQCHIP, KVM_CAP_X86_APIC_BUS_CYCLES_NS,
    KVM_MAX_CPUID_ENTRIES,
};
use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use thiserror::Error;
use vmm_sys_util::errno;
use vmm_sys_util::ioctl::{ioctl_with_mut_ref, ioctl_with_val};

use super::uapi::{
    attributes, cmd, kvm_memory_encrypt_op_request, kvm_set_tsc_khz_request, tdx_status, KvmCpuid2Header,
    KvmTdxCapabilitiesBuf, KvmTdxCmd, KvmTdxInitMemRegion, KvmTdxInitVm, KvmTdxInitVmBuf,
    KVM_TDX_MEASURE_MEMORY_REGION, KVM_X86_TDX_VM,
};

/// A TDX module status code from `hw_error`, printed with its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TdxStatus(pub u64);

impl fmt::Display for TdxStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == 0 {
            return f.write_str("no TDX module status");
        }
        write!(f, "TDX module status {:#018x}", self.0)?;
        match tdx_status::name(self.0) {
            Some("OPERAND_INVALID") => write!(f, " (OPERAND_INVALID, operand {})", self.0 & 0xffff_ffff),
            Some(name) => write!(f, " ({name})"),
            None => Ok(()),
        }
    }
}

/// What the TDX module and KVM support (`KVM_TDX_CAPABILITIES`).
#[derive(Debug, Clone, PartialEq)]
pub struct TdxCapabilities {
    /// TD attribute bits `KVM_TDX_INIT_VM` accepts.
    pub supported_attrs: u64,
    /// XFAM bits `KVM_TDX_INIT_VM` accepts.
    pub supported_xfam: u64,
    /// GetTdVmCallInfo leaf 1 R11 bits KVM serves itself.
    pub kernel_tdvmcallinfo_1_r11: u64,
    /// GetTdVmCallInfo leaf 1 R11 bits KVM forwards to user space.
    pub user_tdvmcallinfo_1_r11: u64,
    /// GetTdVmCallInfo leaf 1 R12 bits KVM serves itself.
    pub kernel_tdvmcallinfo_1_r12: u64,
    /// GetTdVmCallInfo leaf 1 R12 bits KVM forwards to user space.
    pub user_tdvmcallinfo_1_r12: u64,
    /// The configurable CPUID leaves: which bits of each `KVM_TDX_INIT_VM` may set.
    pub cpuid_configs: Vec<kvm_cpuid_entry2>,
}

impl From<&KvmTdxCapabilitiesBuf> for TdxCapabilities {
    fn from(buf: &KvmTdxCapabilitiesBuf) -> Self {
        let c = &buf.caps;
        let n = (c.cpuid.nent as usize).min(KVM_MAX_CPUID_ENTRIES);
        Self {
            supported_attrs: c.supported_attrs,
            supported_xfam: c.supported_xfam,
            kernel_tdvmcallinfo_1_r11: c.kernel_tdvmcallinfo_1_r11,
            user_tdvmcallinfo_1_r11: c.user_tdvmcallinfo_1_r11,
            kernel_tdvmcallinfo_1_r12: c.kernel_tdvmcallinfo_1_r12,
            user_tdvmcallinfo_1_r12: c.user_tdvmcallinfo_1_r12,
            cpuid_configs: buf.entries[..n].to_vec(),
        }
    }
}

/// The input of `KVM_TDX_INIT_VM`.
#[derive(Debug, Clone, PartialEq)]
pub struct TdxInitVm {
    /// TD attributes.
    pub attributes: u64,
    /// XFAM.
    pub xfam: u64,
    /// MRCONFIGID (SHA-384 sized).
    pub mrconfigid: [u8; 48],
    /// MROWNER.
    pub mrowner: [u8; 48],
    /// MROWNERCONFIG.
    pub mrownerconfig: [u8; 48],
    /// The CPUID configuration: only leaves in the capabilities' `cpuid_configs`, and
    /// 0x80000008 with the guest physical address width (48 or 52) in `EAX[23:16]`.
    pub cpuid: Vec<kvm_cpuid_entry2>,
}

/// 48 bytes as the six little-endian words of a `__u64 [6]` digest field.
fn digest_words(bytes: &[u8; 48]) -> [u64; 6] {
    let mut words = [0u64; 6];
    for (w, chunk) in words.iter_mut().zip(bytes.chunks_exact(8)) {
        *w = u64::from_le_bytes(chunk.try_into().unwrap_or_default());
    }
    words
}

impl TdxInitVm {
    /// The argument structure, with the CPUID entries after it; `None` when there are
    /// more than `KVM_MAX_CPUID_ENTRIES` of them (KVM would refuse with E2BIG).
    pub fn to_kvm(&self) -> Option<Box<KvmTdxInitVmBuf>> {
        if self.cpuid.len() > KVM_MAX_CPUID_ENTRIES {
            return None;
        }
        let mut entries = [kvm_cpuid_entry2::default(); KVM_MAX_CPUID_ENTRIES];
        entries[..self.cpuid.len()].copy_from_slice(&self.cpuid);
        Some(Box::new(KvmTdxInitVmBuf {
            init: KvmTdxInitVm {
                attributes: self.attributes,
                xfam: self.xfam,
                mrconfigid: digest_words(&self.mrconfigid),
                mrowner: digest_words(&self.mrowner),
                mrownerconfig: digest_words(&self.mrownerconfig),
                reserved: [0; 12],
                cpuid: KvmCpuid2Header { nent: self.cpuid.len() as u32, padding: 0 },
            },
            entries,
        }))
    }
}

/// Errors of the TDX ioctls, each naming the ioctl, its arguments and, where KVM gives
/// one, the TDX module's status.
#[derive(Debug, Error)]
pub enum TdxIoctlError {
    /// `KVM_CREATE_VM(KVM_X86_TDX_VM)` failed.
    #[error("KVM_CREATE_VM(KVM_X86_TDX_VM) failed: {0}")]
    CreateVm(#[source] kvm_ioctls::Error),
    /// `KVM_TDX_CAPABILITIES` failed.
    #[error("KVM_TDX_CAPABILITIES failed: {source}")]
    Capabilities {
        /// The ioctl's error.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// `KVM_TDX_INIT_VM` was given more CPUID entries than KVM takes.
    #[error("KVM_TDX_INIT_VM: {entries} CPUID entries, KVM takes at most {KVM_MAX_CPUID_ENTRIES}")]
    TooManyCpuidEntries {
        /// How many were given.
        entries: usize,
    },
    /// `KVM_TDX_INIT_VM` failed.
    #[error(
        "KVM_TDX_INIT_VM (attributes {attributes:#x} [{}], XFAM {xfam:#x}, {cpuid_entries} CPUID entries) failed: \
         {source} ({hw_error}){}",
        attributes::names(*attributes),
        init_vm_hint(source.errno(), *hw_error)
    )]
    InitVm {
        /// TD attributes given.
        attributes: u64,
        /// XFAM given.
        xfam: u64,
        /// How many CPUID entries were given.
        cpuid_entries: usize,
        /// The TDX module's status.
        hw_error: TdxStatus,
        /// The ioctl's error.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// `KVM_TDX_INIT_VCPU` failed.
    #[error(
        "KVM_TDX_INIT_VCPU (RCX {rcx:#x}) failed: {source}{}",
        if source.errno() == libc::EINVAL {
            ": KVM_SET_CPUID2 must come first and give the vCPU x2APIC (leaf 1 ECX bit 21), after KVM_TDX_INIT_VM, \
             once per vCPU"
        } else {
            ""
        }
    )]
    InitVcpu {
        /// The RCX given (the TD HOB's address).
        rcx: u64,
        /// The ioctl's error.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// `KVM_TDX_INIT_MEM_REGION` failed.
    #[error(
        "KVM_TDX_INIT_MEM_REGION ({pages} pages at {gpa:#x}{}) failed: {source} ({hw_error})",
        if *measure { ", measured" } else { "" }
    )]
    InitMemRegion {
        /// Where the failing call started.
        gpa: u64,
        /// How many pages it had left.
        pages: u64,
        /// Whether it measured (MR.EXTEND).
        measure: bool,
        /// The TDX module's status.
        hw_error: TdxStatus,
        /// The ioctl's error.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// `KVM_TDX_FINALIZE_VM` failed.
    #[error("KVM_TDX_FINALIZE_VM failed: {source} ({hw_error})")]
    FinalizeVm {
        /// The TDX module's status.
        hw_error: TdxStatus,
        /// The ioctl's error.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// `KVM_TDX_GET_CPUID` failed.
    #[error("KVM_TDX_GET_CPUID failed: {source}")]
    GetCpuid {
        /// The ioctl's error.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// `KVM_SET_TSC_KHZ` on the VM failed.
    #[error("KVM_SET_TSC_KHZ ({khz} kHz) on the VM failed: {source}")]
    SetTscKhz {
        /// The frequency.
        khz: u32,
        /// The ioctl's error.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// `KVM_ENABLE_CAP` failed.
    #[error("KVM_ENABLE_CAP({cap}, {arg}) failed: {source}")]
    EnableCap {
        /// The capability's name.
        cap: &'static str,
        /// Its argument.
        arg: u64,
        /// The ioctl's error.
        #[source]
        source: kvm_ioctls::Error,
    },
}

/// What usually makes `KVM_TDX_INIT_VM` fail with this errno and status.
fn init_vm_hint(errno: i32, hw_error: TdxStatus) -> &'static str {
    match errno {
        libc::EBUSY => ": it must come before the first KVM_CREATE_VCPU",
        libc::EAGAIN => ": the TDX module lacked entropy (RDRAND/RDSEED busy); retry",
        libc::E2BIG => ": too many CPUID entries",
        libc::EINVAL if hw_error.0 & tdx_status::STATUS_MASK == tdx_status::OPERAND_INVALID => {
            ": TDH.MNG.INIT refused an operand (a CPUID value, XFAM or attributes the TDX module does not allow)"
        }
        libc::EINVAL => {
            ": attributes or XFAM outside KVM_TDX_CAPABILITIES', a CPUID leaf that is not configurable, or no \
             0x80000008 leaf with a guest physical address width of 48 or 52"
        }
        _ => "",
    }
}

impl TdxIoctlError {
    /// The errno of the failed ioctl (0 for errors found before any ioctl).
    pub fn errno(&self) -> i32 {
        match self {
            Self::CreateVm(source)
            | Self::Capabilities { source }
            | Self::InitVm { source, .. }
            | Self::InitVcpu { source, .. }
            | Self::InitMemRegion { source, .. }
            | Self::FinalizeVm { source, .. }
            | Self::GetCpuid { source }
            | Self::SetTscKhz { source, .. }
            | Self::EnableCap { source, .. } => source.errno(),
            Self::TooManyCpuidEntries { .. } => 0,
        }
    }

    /// The TDX module's status, when KVM gave one.
    pub fn hw_error(&self) -> Option<TdxStatus> {
        match self {
            Self::InitVm { hw_error, .. }
            | Self::InitMemRegion { hw_error, .. }
            | Self::FinalizeVm { hw_error, .. } => Some(*hw_error),
            _ => None,
        }
    }
}

/// An ioctl's failure: its errno and the command's `hw_error`.
type CmdFailure = (kvm_ioctls::Error, TdxStatus);

/// `KVM_MEMORY_ENCRYPT_OP` on the VM fd with `cmd`; on failure, KVM's errno (`hw_error`
/// is in `cmd`).
///
/// # Safety
///
/// `cmd.data` must be what command `cmd.id` expects: the address of its argument
/// structure, alive and large enough for the kernel to read and write, or an immediate.
pub unsafe fn vm_memory_encrypt_op(vm: &VmFd, cmd: &mut KvmTdxCmd) -> Result<(), kvm_ioctls::Error> {
    // SAFETY: KVM_MEMORY_ENCRYPT_OP reads and writes a struct kvm_tdx_cmd, which `cmd`
    // is; what `data` points to is the caller's contract.
    let ret = unsafe { ioctl_with_mut_ref(vm, kvm_memory_encrypt_op_request(), cmd) };
    if ret < 0 {
        return Err(errno::Error::last());
    }
    Ok(())
}

/// `KVM_MEMORY_ENCRYPT_OP` on a vCPU fd with `cmd` (the vCPU-scoped TDX commands).
///
/// # Safety
///
/// As for [`vm_memory_encrypt_op`].
pub unsafe fn vcpu_memory_encrypt_op(vcpu: &VcpuFd, cmd: &mut KvmTdxCmd) -> Result<(), kvm_ioctls::Error> {
    // SAFETY: as above, on the vCPU fd.
    let ret = unsafe { ioctl_with_mut_ref(vcpu, kvm_memory_encrypt_op_request(), cmd) };
    if ret < 0 {
        return Err(errno::Error::last());
    }
    Ok(())
}

/// A VM-scoped TDX command.
///
/// # Safety
///
/// As for [`vm_memory_encrypt_op`].
unsafe fn vm_cmd(vm: &VmFd, id: u32, flags: u32, data: u64) -> Result<(), CmdFailure> {
    let mut c = KvmTdxCmd { id, flags, data, hw_error: 0 };
    // SAFETY: the caller's contract.
    unsafe { vm_memory_encrypt_op(vm, &mut c) }.map_err(|e| (e, TdxStatus(c.hw_error)))
}

/// A vCPU-scoped TDX command.
///
/// # Safety
///
/// As for [`vm_memory_encrypt_op`].
unsafe fn vcpu_cmd(vcpu: &VcpuFd, id: u32, flags: u32, data: u64) -> Result<(), CmdFailure> {
    let mut c = KvmTdxCmd { id, flags, data, hw_error: 0 };
    // SAFETY: the caller's contract.
    unsafe { vcpu_memory_encrypt_op(vcpu, &mut c) }.map_err(|e| (e, TdxStatus(c.hw_error)))
}

/// `KVM_CREATE_VM` with type `KVM_X86_TDX_VM` (5).
pub fn create_tdx_vm(kvm: &Kvm) -> Result<VmFd, TdxIoctlError> {
    kvm.create_vm_with_type(u64::from(KVM_X86_TDX_VM)).map_err(TdxIoctlError::CreateVm)
}

/// `KVM_TDX_CAPABILITIES` on a TDX VM: the supported attributes, XFAM, GetTdVmCallInfo
/// bits and configurable CPUID leaves (room is given for `KVM_MAX_CPUID_ENTRIES`).
pub fn tdx_capabilities(vm: &VmFd) -> Result<TdxCapabilities, TdxIoctlError> {
    // SAFETY: all-zero is a valid value of this plain-integer structure.
    let mut buf: Box<KvmTdxCapabilitiesBuf> = Box::new(unsafe { std::mem::zeroed() });
    buf.caps.cpuid.nent = KVM_MAX_CPUID_ENTRIES as u32;
    let data = &mut *buf as *mut KvmTdxCapabilitiesBuf as u64;
    // SAFETY: KVM reads the struct kvm_tdx_capabilities at `data` and writes it and
    // `cpuid.nent` (at most the 256 announced) entries after it, which `buf` has room for.
    unsafe { vm_cmd(vm, cmd::KVM_TDX_CAPABILITIES, 0, data) }
        .map_err(|(source, _)| TdxIoctlError::Capabilities { source })?;
    Ok(TdxCapabilities::from(&*buf))
}

/// `KVM_TDX_INIT_VM`: creates and initializes the TD (TDH.MNG.CREATE, key configuration,
/// TDH.MNG.INIT with these TD parameters). Before any vCPU; after `KVM_SET_TSC_KHZ`,
/// which gives the TD its TSC frequency.
pub fn tdx_init_vm(vm: &VmFd, init: &TdxInitVm) -> Result<(), TdxIoctlError> {
    let mut buf = init.to_kvm().ok_or(TdxIoctlError::TooManyCpuidEntries { entries: init.cpuid.len() })?;
    let data = &mut *buf as *mut KvmTdxInitVmBuf as u64;
    // SAFETY: KVM reads a struct kvm_tdx_init_vm and `cpuid.nent` entries after it, which
    // `buf` holds (to_kvm checked nent <= 256).
    unsafe { vm_cmd(vm, cmd::KVM_TDX_INIT_VM, 0, data) }.map_err(|(source, hw_error)| TdxIoctlError::InitVm {
        attributes: init.attributes,
        xfam: init.xfam,
        cpuid_entries: init.cpuid.len(),
        hw_error,
        source,
    })
}

/// `KVM_TDX_INIT_VCPU`: TDH.VP.CREATE and TDH.VP.INIT with `rcx` (the TD HOB's address)
/// as the vCPU's RCX at the reset vector. After `KVM_SET_CPUID2` (KVM puts the local
/// APIC in x2APIC mode, which the vCPU's CPUID must have).
pub fn tdx_init_vcpu(vcpu: &VcpuFd, rcx: u64) -> Result<(), TdxIoctlError> {
    // SAFETY: KVM_TDX_INIT_VCPU takes `data` as an immediate; it reads no memory of ours.
    unsafe { vcpu_cmd(vcpu, cmd::KVM_TDX_INIT_VCPU, 0, rcx) }
        .map_err(|(source, _)| TdxIoctlError::InitVcpu { rcx, source })
}

/// `KVM_TDX_INIT_MEM_REGION`, once: KVM adds `region.nr_pages` pages from
/// `region.source_addr` at `region.gpa` (TDH.MEM.PAGE.ADD, and with `measure` the 16
/// TDH.MR.EXTENDs of each page), advancing all three fields as it goes; when it stops
/// early (EINTR on a signal) or fails, `region` says where. The range must be private
/// (`KVM_SET_MEMORY_ATTRIBUTES`) in a guest_memfd slot; `vcpu` must have had
/// `KVM_TDX_INIT_VCPU`.
///
/// # Safety
///
/// `region.source_addr` must point to `region.nr_pages * 4096` readable bytes.
pub unsafe fn tdx_init_mem_region(
    vcpu: &VcpuFd,
    region: &mut KvmTdxInitMemRegion,
    measure: bool,
) -> Result<(), TdxIoctlError> {
    let flags = if measure { KVM_TDX_MEASURE_MEMORY_REGION } else { 0 };
    let data = region as *mut KvmTdxInitMemRegion as u64;
    // SAFETY: KVM reads and writes the struct kvm_tdx_init_mem_region `region`; the
    // source pages are the caller's contract.
    unsafe { vcpu_cmd(vcpu, cmd::KVM_TDX_INIT_MEM_REGION, flags, data) }.map_err(|(source, hw_error)| {
        TdxIoctlError::InitMemRegion { gpa: region.gpa, pages: region.nr_pages, measure, hw_error, source }
    })
}

/// `KVM_TDX_FINALIZE_VM`: TDH.MR.FINALIZE; MRTD is fixed and the TD can run.
pub fn tdx_finalize_vm(vm: &VmFd) -> Result<(), TdxIoctlError> {
    // SAFETY: KVM_TDX_FINALIZE_VM has no argument structure.
    unsafe { vm_cmd(vm, cmd::KVM_TDX_FINALIZE_VM, 0, 0) }
        .map_err(|(source, hw_error)| TdxIoctlError::FinalizeVm { hw_error, source })
}

/// `KVM_TDX_GET_CPUID`: the TD's CPUID as the TDX module virtualizes it (every leaf
/// up to the maximum basic and extended leaves). After `KVM_TDX_INIT_VM`, before
/// `KVM_TDX_FINALIZE_VM`.
pub fn tdx_get_cpuid(vcpu: &VcpuFd) -> Result<CpuId, TdxIoctlError> {
    let mut cpuid = CpuId::new(KVM_MAX_CPUID_ENTRIES)
        .map_err(|_| TdxIoctlError::GetCpuid { source: errno::Error::new(libc::ENOMEM) })?;
    let data = cpuid.as_mut_fam_struct_ptr() as u64;
    // SAFETY: KVM reads the struct kvm_cpuid2 header (nent = 256) and writes at most that
    // many entries after it, which the wrapper allocated; it then sets nent, which the
    // wrapper reads its length from.
    unsafe { vcpu_cmd(vcpu, cmd::KVM_TDX_GET_CPUID, 0, data) }
        .map_err(|(source, _)| TdxIoctlError::GetCpuid { source })?;
    Ok(cpuid)
}

/// `KVM_SET_TSC_KHZ` on the VM fd: the TSC frequency of the vCPUs created afterwards
/// (for a TD, the TSC frequency TDH.MNG.INIT fixes).
pub fn set_vm_tsc_khz(vm: &VmFd, khz: u32) -> Result<(), TdxIoctlError> {
    // SAFETY: KVM_SET_TSC_KHZ takes the frequency as its argument value; it reads no
    // memory of ours.
    let ret = unsafe { ioctl_with_val(vm, kvm_set_tsc_khz_request(), u64::from(khz) as libc::c_ulong) };
    if ret < 0 {
        return Err(TdxIoctlError::SetTscKhz { khz, source: errno::Error::last() });
    }
    Ok(())
}

/// `KVM_ENABLE_CAP(KVM_CAP_SPLIT_IRQCHIP)` with `ioapic_pins` IOAPIC routes: local APICs
/// in KVM, IOAPIC and PIC in user space. A TD requires it; before any vCPU.
pub fn enable_split_irqchip(vm: &VmFd, ioapic_pins: u64) -> Result<(), TdxIoctlError> {
    let mut cap = kvm_enable_cap { cap: KVM_CAP_SPLIT_IRQCHIP, ..Default::default() };
    cap.args[0] = ioapic_pins;
    vm.enable_cap(&cap).map_err(|source| TdxIoctlError::EnableCap {
        cap: "KVM_CAP_SPLIT_IRQCHIP",
        arg: ioapic_pins,
        source,
    })
}

/// `KVM_ENABLE_CAP(KVM_CAP_X86_APIC_BUS_CYCLES_NS)`: the APIC bus cycle in nanoseconds
/// (40 for TDX's 25 MHz). Before any vCPU.
pub fn enable_apic_bus_cycles_ns(vm: &VmFd, ns: u64) -> Result<(), TdxIoctlError> {
    let mut cap = kvm_enable_cap { cap: KVM_CAP_X86_APIC_BUS_CYCLES_NS, ..Default::default() };
    cap.args[0] = ns;
    vm.enable_cap(&cap).map_err(|source| TdxIoctlError::EnableCap {
        cap: "KVM_CAP_X86_APIC_BUS_CYCLES_NS",
        arg: ns,
        source,
    })
}

#[cfg(test)]
mod tests {
    use kvm_bindings::KVM_CAP_VM_TYPES;

    use super::*;

    #[test]
    fn tdx_module_statuses_are_printed_with_their_name_and_operand() {
        assert_eq!(TdxStatus(0).to_string(), "no TDX module status");
        assert_eq!(
            TdxStatus(0xC000_0100_0000_0012).to_string(),
            "TDX module status 0xc000010000000012 (OPERAND_INVALID, operand 18)"
        );
        assert_eq!(TdxStatus(0x8000_0200_0000_0000).to_string(), "TDX module status 0x8000020000000000 (OPERAND_BUSY)");
        assert_eq!(TdxStatus(0x8000_7700_0000_0000).to_string(), "TDX module status 0x8000770000000000");
    }

    #[test]
    fn init_vm_digests_are_little_endian_words_and_reserved_stays_zero() {
        let mut mrconfigid = [0u8; 48];
        mrconfigid[0] = 0x11;
        mrconfigid[7] = 0x22;
        mrconfigid[47] = 0x33;
        let entry = kvm_cpuid_entry2 { function: 0x8000_0008, eax: 0x30_2f30, ..Default::default() };
        let init = TdxInitVm {
            attributes: 1 << 28,
            xfam: 0xe7,
            mrconfigid,
            mrowner: [0xaa; 48],
            mrownerconfig: [0; 48],
            cpuid: vec![entry; 3],
        };

        let buf = init.to_kvm().unwrap();

        assert_eq!(buf.init.mrconfigid[0], 0x2200_0000_0000_0011);
        assert_eq!(buf.init.mrconfigid[5], 0x3300_0000_0000_0000);
        assert_eq!(buf.init.mrowner, [0xaaaa_aaaa_aaaa_aaaa; 6]);
        assert_eq!((buf.init.attributes, buf.init.xfam), (1 << 28, 0xe7));
        assert_eq!(buf.init.reserved, [0; 12]);
        assert_eq!(buf.init.cpuid, KvmCpuid2Header { nent: 3, padding: 0 });
        assert_eq!((buf.entries[2].function, buf.entries[2].eax, buf.entries[3].function), (0x8000_0008, 0x30_2f30, 0));
    }

    #[test]
    fn too_many_cpuid_entries_are_refused_before_the_ioctl() {
        let kvm = Kvm::new().unwrap();
        let vm = kvm.create_vm().unwrap();
        let init = TdxInitVm {
            attributes: 0,
            xfam: 0,
            mrconfigid: [0; 48],
            mrowner: [0; 48],
            mrownerconfig: [0; 48],
            cpuid: vec![kvm_cpuid_entry2::default(); KVM_MAX_CPUID_ENTRIES + 1],
        };

        let err = tdx_init_vm(&vm, &init).unwrap_err();

        assert!(matches!(err, TdxIoctlError::TooManyCpuidEntries { entries: 257 }), "{err}");
        assert_eq!(err.errno(), 0);
    }

    #[test]
    fn tdx_vm_creation_fails_on_a_host_without_tdx() {
        // This host's KVM offers only the default VM type (HOST-KVM.md); on a TDX host the
        // VM is created.
        let kvm = Kvm::new().unwrap();
        let vm_types = kvm.check_extension_raw(KVM_CAP_VM_TYPES.into()) as u32;

        let result = create_tdx_vm(&kvm);

        if vm_types & (1 << KVM_X86_TDX_VM) == 0 {
            let err = result.unwrap_err();
            assert_eq!(err.errno(), libc::EINVAL);
            assert!(err.to_string().starts_with("KVM_CREATE_VM(KVM_X86_TDX_VM) failed"), "{err}");
        } else {
            assert!(result.is_ok());
        }
    }

    #[test]
    fn tdx_commands_on_a_default_vm_name_the_command_and_its_arguments() {
        // A default VM has no TDX context: KVM refuses every command (ENOTTY where the
        // vendor module has no memory-encryption ioctl, as here; EINVAL on a TDX host),
        // and the message names the command and what it was given.
        let kvm = Kvm::new().unwrap();
        let vm = kvm.create_vm().unwrap();
        let vcpu = vm.create_vcpu(0).unwrap();
        let refused = |e: &TdxIoctlError| matches!(e.errno(), libc::ENOTTY | libc::EINVAL);

        let caps = tdx_capabilities(&vm).unwrap_err();
        let init_vcpu = tdx_init_vcpu(&vcpu, 0x80_9000).unwrap_err();
        let mut region = KvmTdxInitMemRegion { source_addr: 0, gpa: 0x1000, nr_pages: 2 };
        // SAFETY: KVM refuses the command before it reads a source page (no TDX context).
        let mem = unsafe { tdx_init_mem_region(&vcpu, &mut region, true) }.unwrap_err();
        let finalize = tdx_finalize_vm(&vm).unwrap_err();
        let cpuid = tdx_get_cpuid(&vcpu).unwrap_err();

        for e in [&caps, &init_vcpu, &mem, &finalize, &cpuid] {
            assert!(refused(e), "{e}: errno {}", e.errno());
        }
        assert!(caps.to_string().starts_with("KVM_TDX_CAPABILITIES failed"), "{caps}");
        assert!(init_vcpu.to_string().starts_with("KVM_TDX_INIT_VCPU (RCX 0x809000) failed"), "{init_vcpu}");
        assert!(mem.to_string().starts_with("KVM_TDX_INIT_MEM_REGION (2 pages at 0x1000, measured) failed"), "{mem}");
        assert_eq!(mem.hw_error(), Some(TdxStatus(0)));
        assert!(finalize.to_string().contains("KVM_TDX_FINALIZE_VM failed"), "{finalize}");
        assert!(cpuid.to_string().starts_with("KVM_TDX_GET_CPUID failed"), "{cpuid}");
        assert_eq!(region, KvmTdxInitMemRegion { source_addr: 0, gpa: 0x1000, nr_pages: 2 }, "untouched");
    }

    #[test]
    fn init_vm_on_a_default_vm_names_attributes_and_xfam() {
        let kvm = Kvm::new().unwrap();
        let vm = kvm.create_vm().unwrap();
        let init = TdxInitVm {
            attributes: 1 << 28,
            xfam: 0x2e7,
            mrconfigid: [0; 48],
            mrowner: [0; 48],
            mrownerconfig: [0; 48],
            cpuid: vec![kvm_cpuid_entry2::default(); 4],
        };

        let err = tdx_init_vm(&vm, &init).unwrap_err();

        let msg = err.to_string();
        assert!(
            msg.starts_with(
                "KVM_TDX_INIT_VM (attributes 0x10000000 [SEPT_VE_DISABLE], XFAM 0x2e7, 4 CPUID entries) failed"
            ),
            "{msg}"
        );
    }

    #[test]
    fn split_irqchip_and_the_vm_tsc_work_on_a_default_vm() {
        // Both are generic KVM: this host's KVM takes the split irqchip (HOST-KVM.md) and a
        // VM-wide TSC frequency (KVM records it for the vCPUs to come).
        let kvm = Kvm::new().unwrap();
        let vm = kvm.create_vm().unwrap();

        enable_split_irqchip(&vm, 24).unwrap();
        let tsc = set_vm_tsc_khz(&vm, 2_000_000);
        // Once a vCPU exists, KVM refuses to change the irqchip (EINVAL upstream; this
        // host's KVM answers EEXIST, as for a second irqchip).
        let late_vm = kvm.create_vm().unwrap();
        let _vcpu = late_vm.create_vcpu(0).unwrap();
        let late = enable_split_irqchip(&late_vm, 24).unwrap_err();

        assert!(matches!(late.errno(), libc::EINVAL | libc::EEXIST), "{late}");
        assert!(late.to_string().starts_with("KVM_ENABLE_CAP(KVM_CAP_SPLIT_IRQCHIP, 24) failed"), "{late}");
        tsc.unwrap();
        // Once a vCPU exists, the VM's default frequency is fixed.
        let err = set_vm_tsc_khz(&late_vm, 2_000_000).unwrap_err();
        assert_eq!(err.errno(), libc::EINVAL);
        assert!(err.to_string().starts_with("KVM_SET_TSC_KHZ (2000000 kHz) on the VM failed"), "{err}");
    }
}
