//! One function per ioctl and per `KVM_MEMORY_ENCRYPT_OP` command of the real SNP launch,
//! each named after what it issues, with the argument structure built from its
//! parameters and the firmware status code kept in the error.
//!
//! kvm-ioctls 0.25 issues the ioctls it has (`KVM_CREATE_VM`, `KVM_MEMORY_ENCRYPT_OP`);
//! this file issues the two it lacks: `KVM_GET_DEVICE_ATTR` on the /dev/kvm fd and
//! `SEV_ISSUE_CMD` on /dev/sev. The guest_memfd, memory-slot, memory-attribute and
//! hypercall-exit ioctls are TEE-neutral: they are [`crate::private_memory`]'s, and
//! re-exported here.

use std::fs::File;
use std::os::fd::{AsRawFd, RawFd};

use kvm_bindings::{
    kvm_device_attr, kvm_sev_cmd, kvm_sev_init, kvm_sev_snp_launch_finish, kvm_sev_snp_launch_start,
    kvm_sev_snp_launch_update, sev_cmd_id_KVM_SEV_INIT2, sev_cmd_id_KVM_SEV_SNP_LAUNCH_FINISH,
    sev_cmd_id_KVM_SEV_SNP_LAUNCH_START, sev_cmd_id_KVM_SEV_SNP_LAUNCH_UPDATE, KVM_X86_SNP_VM,
};
use kvm_ioctls::{Kvm, VmFd};
use thiserror::Error;

pub use crate::private_memory::{
    create_guest_memfd, enable_exit_hypercall, set_memory_attributes, set_user_memory_region2, GmemIoctlError,
};

use super::uapi::{
    kvm_get_device_attr_request, sev_issue_cmd_request, sev_ret_name, SevIssueCmd, SevUserDataSnpStatus,
    KVM_SEV_SNP_ENABLE_REQ_CERTS, SNP_PLATFORM_STATUS,
};

/// An SEV firmware status code, printed with its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FwError(pub u32);

impl std::fmt::Display for FwError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0 == 0 {
            f.write_str("no firmware error")
        } else {
            write!(f, "firmware status {:#x} ({})", self.0, sev_ret_name(self.0))
        }
    }
}

/// A failed `KVM_MEMORY_ENCRYPT_OP` command: the ioctl's error and the firmware status
/// KVM copied into `kvm_sev_cmd.error`.
#[derive(Debug, Error)]
#[error("{source} ({fw_error})")]
pub struct SevCmdError {
    /// The ioctl's error.
    #[source]
    pub source: kvm_ioctls::Error,
    /// The firmware's status (0 when the command failed before reaching the firmware).
    pub fw_error: FwError,
}

impl SevCmdError {
    /// The errno of the failed ioctl.
    pub fn errno(&self) -> i32 {
        self.source.errno()
    }
}

/// Errors from the ioctls of this file, each naming the ioctl and its arguments.
#[derive(Debug, Error)]
pub enum SnpIoctlError {
    /// `KVM_CREATE_VM` with type `KVM_X86_SNP_VM` failed.
    #[error("KVM_CREATE_VM(KVM_X86_SNP_VM) failed: {0}")]
    CreateVm(#[source] kvm_ioctls::Error),
    /// `KVM_SEV_INIT2` failed.
    #[error("KVM_SEV_INIT2 (vmsa_features {vmsa_features:#x}, GHCB version {ghcb_version}) failed: {source}")]
    SevInit2 {
        /// The VMSA features asked for.
        vmsa_features: u64,
        /// The GHCB protocol version asked for.
        ghcb_version: u16,
        /// The command's error.
        #[source]
        source: SevCmdError,
    },
    /// `KVM_SEV_SNP_LAUNCH_START` failed.
    #[error("KVM_SEV_SNP_LAUNCH_START (policy {policy:#x}) failed: {source}")]
    SnpLaunchStart {
        /// The guest policy.
        policy: u64,
        /// The command's error.
        #[source]
        source: SevCmdError,
    },
    /// `KVM_SEV_SNP_LAUNCH_FINISH` failed.
    #[error("KVM_SEV_SNP_LAUNCH_FINISH (ID block {id_block}, author key {auth_key}) failed: {source}")]
    SnpLaunchFinish {
        /// Whether an ID block was given.
        id_block: bool,
        /// Whether the ID authentication structure has an author key.
        auth_key: bool,
        /// The command's error.
        #[source]
        source: SevCmdError,
    },
    /// `KVM_SEV_SNP_ENABLE_REQ_CERTS` failed.
    #[error("KVM_SEV_SNP_ENABLE_REQ_CERTS failed (it must come before the first vCPU is created): {0}")]
    SnpEnableReqCerts(#[source] SevCmdError),
    /// A guest_memfd, memory slot, memory attribute or hypercall-exit ioctl failed.
    #[error(transparent)]
    Gmem(#[from] GmemIoctlError),
    /// `KVM_GET_DEVICE_ATTR` on /dev/kvm failed.
    #[error("KVM_GET_DEVICE_ATTR (group {group}, attribute {attr}) on /dev/kvm failed: {source}")]
    GetDeviceAttr {
        /// Attribute group.
        group: u32,
        /// Attribute.
        attr: u64,
        /// The ioctl's error.
        #[source]
        source: std::io::Error,
    },
    /// `SEV_ISSUE_CMD` on /dev/sev failed.
    #[error("SEV_ISSUE_CMD (command {cmd}) on /dev/sev failed: {source} ({fw_error})")]
    SevIssueCmd {
        /// The platform command.
        cmd: u32,
        /// The firmware's status.
        fw_error: FwError,
        /// The ioctl's error.
        #[source]
        source: std::io::Error,
    },
}

impl SnpIoctlError {
    /// The errno of the failed ioctl.
    pub fn errno(&self) -> i32 {
        match self {
            Self::CreateVm(e) => e.errno(),
            Self::Gmem(e) => e.errno(),
            Self::SevInit2 { source, .. }
            | Self::SnpLaunchStart { source, .. }
            | Self::SnpLaunchFinish { source, .. }
            | Self::SnpEnableReqCerts(source) => source.errno(),
            Self::GetDeviceAttr { source, .. } | Self::SevIssueCmd { source, .. } => source.raw_os_error().unwrap_or(0),
        }
    }
}

/// `KVM_CREATE_VM` with type `KVM_X86_SNP_VM` (4).
pub fn create_snp_vm(kvm: &Kvm) -> Result<VmFd, SnpIoctlError> {
    kvm.create_vm_with_type(u64::from(KVM_X86_SNP_VM)).map_err(SnpIoctlError::CreateVm)
}

/// Issues `KVM_MEMORY_ENCRYPT_OP` command `id` with `data` as its argument structure.
///
/// # Safety
///
/// `data` must be the argument structure the kernel expects for command `id` (or null
/// for commands without one): the kernel reads and writes `size_of::<T>()` bytes there.
unsafe fn sev_cmd<T>(vm: &VmFd, sev_fd: RawFd, id: u32, data: *mut T) -> Result<(), SevCmdError> {
    let mut cmd = kvm_sev_cmd { id, data: data as u64, sev_fd: sev_fd as u32, ..Default::default() };
    vm.encrypt_op_sev(&mut cmd).map_err(|source| SevCmdError { source, fw_error: FwError(cmd.error) })
}

/// `KVM_SEV_INIT2`: initializes the SNP context of `vm` with the VMSA features every
/// vCPU's SEV_FEATURES will hold (besides SNPActive, which KVM adds) and the GHCB
/// protocol version (2 for SNP).
pub fn sev_init2(vm: &VmFd, sev: &File, vmsa_features: u64, ghcb_version: u16) -> Result<(), SnpIoctlError> {
    let mut init = kvm_sev_init { vmsa_features, flags: 0, ghcb_version, ..Default::default() };
    // SAFETY: KVM_SEV_INIT2 takes a struct kvm_sev_init, which `init` is.
    unsafe { sev_cmd(vm, sev.as_raw_fd(), sev_cmd_id_KVM_SEV_INIT2, &mut init) }
        .map_err(|source| SnpIoctlError::SevInit2 { vmsa_features, ghcb_version, source })
}

/// `KVM_SEV_SNP_LAUNCH_START`: starts the launch with the guest `policy` and the 16
/// bytes of guest-visible workarounds (`gosvw`).
pub fn snp_launch_start(vm: &VmFd, sev: &File, policy: u64, gosvw: [u8; 16]) -> Result<(), SnpIoctlError> {
    let mut start = kvm_sev_snp_launch_start { policy, gosvw, ..Default::default() };
    // SAFETY: KVM_SEV_SNP_LAUNCH_START takes a struct kvm_sev_snp_launch_start.
    unsafe { sev_cmd(vm, sev.as_raw_fd(), sev_cmd_id_KVM_SEV_SNP_LAUNCH_START, &mut start) }
        .map_err(|source| SnpIoctlError::SnpLaunchStart { policy, source })
}

/// `KVM_SEV_SNP_LAUNCH_UPDATE`, once: on success KVM has advanced `update.gfn_start`,
/// `update.uaddr` (except for ZERO pages) and `update.len` past the pages it populated,
/// which may be fewer than asked for; on failure `update` is as it was.
///
/// # Safety
///
/// Unless `update.type_` is ZERO, `update.uaddr` must point to `update.len` readable
/// bytes, which KVM may also write (it copies the firmware's corrected CPUID page back
/// when it rejects a CPUID page).
pub unsafe fn snp_launch_update(
    vm: &VmFd,
    sev: &File,
    update: &mut kvm_sev_snp_launch_update,
) -> Result<(), SevCmdError> {
    // SAFETY: KVM_SEV_SNP_LAUNCH_UPDATE takes a struct kvm_sev_snp_launch_update; the
    // source buffer is the caller's contract.
    unsafe { sev_cmd(vm, sev.as_raw_fd(), sev_cmd_id_KVM_SEV_SNP_LAUNCH_UPDATE, update) }
}

/// `KVM_SEV_SNP_LAUNCH_FINISH`: KVM builds and encrypts every vCPU's VMSA from its
/// registers, then the firmware finishes the launch digest and checks the ID block.
///
/// # Safety
///
/// When `finish.id_block_en` is set, `finish.id_block_uaddr` must point to 96 readable
/// bytes and `finish.id_auth_uaddr` to 4096.
pub unsafe fn snp_launch_finish(
    vm: &VmFd,
    sev: &File,
    finish: &mut kvm_sev_snp_launch_finish,
) -> Result<(), SnpIoctlError> {
    let (id_block, auth_key) = (finish.id_block_en != 0, finish.auth_key_en != 0);
    // SAFETY: KVM_SEV_SNP_LAUNCH_FINISH takes a struct kvm_sev_snp_launch_finish; the ID
    // block and authentication buffers are the caller's contract.
    unsafe { sev_cmd(vm, sev.as_raw_fd(), sev_cmd_id_KVM_SEV_SNP_LAUNCH_FINISH, finish) }
        .map_err(|source| SnpIoctlError::SnpLaunchFinish { id_block, auth_key, source })
}

/// `KVM_SEV_SNP_ENABLE_REQ_CERTS` (Linux 7.0): from now on an attestation request with
/// certificates exits to user space as `KVM_EXIT_SNP_REQ_CERTS`. Only before the first
/// vCPU is created.
pub fn snp_enable_req_certs(vm: &VmFd, sev: &File) -> Result<(), SnpIoctlError> {
    // SAFETY: KVM_SEV_SNP_ENABLE_REQ_CERTS has no argument structure; KVM does not read
    // `data`.
    unsafe { sev_cmd::<u8>(vm, sev.as_raw_fd(), KVM_SEV_SNP_ENABLE_REQ_CERTS, std::ptr::null_mut()) }
        .map_err(SnpIoctlError::SnpEnableReqCerts)
}

/// `KVM_GET_DEVICE_ATTR` on the /dev/kvm fd: the 64-bit value of attribute `attr` in
/// `group` (the SEV attributes live in group `KVM_X86_GRP_SEV`).
pub fn kvm_get_device_attr(kvm: &Kvm, group: u32, attr: u64) -> Result<u64, SnpIoctlError> {
    let mut value = 0u64;
    let dev_attr = kvm_device_attr { flags: 0, group, attr, addr: &mut value as *mut u64 as u64 };
    // SAFETY: KVM_GET_DEVICE_ATTR reads the struct and writes one u64 at `addr`, which
    // points to `value`, alive for the call.
    let ret = unsafe { vmm_sys_util::ioctl::ioctl_with_ref(kvm, kvm_get_device_attr_request(), &dev_attr) };
    if ret < 0 {
        return Err(SnpIoctlError::GetDeviceAttr { group, attr, source: std::io::Error::last_os_error() });
    }
    Ok(value)
}

/// `SEV_ISSUE_CMD(SNP_PLATFORM_STATUS)` on /dev/sev: the SNP firmware's status.
pub fn snp_platform_status(sev: &File) -> Result<SevUserDataSnpStatus, SnpIoctlError> {
    let mut status = SevUserDataSnpStatus::default();
    let mut cmd = SevIssueCmd { cmd: SNP_PLATFORM_STATUS, data: &mut status as *mut _ as u64, error: 0 };
    // SAFETY: SEV_ISSUE_CMD reads `cmd` and, for SNP_PLATFORM_STATUS, writes a struct
    // sev_user_data_snp_status (32 bytes) at `data`, which points to `status`.
    let ret = unsafe { vmm_sys_util::ioctl::ioctl_with_mut_ref(sev, sev_issue_cmd_request(), &mut cmd) };
    if ret < 0 {
        let error = cmd.error;
        return Err(SnpIoctlError::SevIssueCmd {
            cmd: SNP_PLATFORM_STATUS,
            fw_error: FwError(error),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn firmware_errors_are_printed_with_their_name() {
        assert_eq!(FwError(0x16).to_string(), "firmware status 0x16 (INVALID_PARAM)");
        assert_eq!(FwError(0x7).to_string(), "firmware status 0x7 (POLICY_FAILURE)");
        assert_eq!(FwError(0).to_string(), "no firmware error");
        assert_eq!(FwError(0x99).to_string(), "firmware status 0x99 (unknown status)");
    }

    #[test]
    fn snp_vm_creation_fails_on_a_host_without_snp() {
        // This host's KVM offers only the default VM type (docs: HOST-KVM.md); on an SNP
        // host the VM is created.
        let kvm = Kvm::new().unwrap();
        let vm_types = kvm.check_extension_raw(kvm_bindings::KVM_CAP_VM_TYPES.into()) as u32;
        let result = create_snp_vm(&kvm);
        if vm_types & (1 << KVM_X86_SNP_VM) == 0 {
            let err = result.unwrap_err();
            assert_eq!(err.errno(), libc::EINVAL);
            assert!(err.to_string().starts_with("KVM_CREATE_VM(KVM_X86_SNP_VM) failed"), "{err}");
        } else {
            assert!(result.is_ok());
        }
    }

    #[test]
    fn sev_commands_on_a_default_vm_name_the_command_and_its_arguments() {
        let kvm = Kvm::new().unwrap();
        let vm = kvm.create_vm().unwrap();
        let null = File::open("/dev/null").unwrap();

        let err = sev_init2(&vm, &null, 0x20, 2).unwrap_err();

        // ENOTTY here (no SEV in this KVM); EINVAL or ENOTTY on an SNP host for a
        // default VM: either way the message names the command and what it was given.
        assert!(err.errno() == libc::ENOTTY || err.errno() == libc::EINVAL, "{err}");
        let msg = err.to_string();
        assert!(msg.contains("KVM_SEV_INIT2") && msg.contains("vmsa_features 0x20") && msg.contains("GHCB version 2"));
        let err = snp_launch_start(&vm, &null, 0x30000, [0; 16]).unwrap_err();
        assert!(err.to_string().contains("KVM_SEV_SNP_LAUNCH_START (policy 0x30000)"), "{err}");
    }

    #[test]
    fn device_attr_of_an_unknown_group_fails_with_the_group_in_the_message() {
        let kvm = Kvm::new().unwrap();

        let err = kvm_get_device_attr(&kvm, 0x7777, 0).unwrap_err();

        assert!(err.to_string().contains("group 30583"), "{err}");
        assert_ne!(err.errno(), 0);
    }
}
