//! The parts of the Linux SEV/SNP user-space ABI that kvm-bindings 0.14 does not have:
//! constants and `#[repr(C)]` structures (each quoted from the upstream header it comes
//! from), the ioctl request numbers cvmm issues itself, and layout tests of every
//! structure this module tree passes to the kernel, including kvm-bindings' own.
//!
//! Sources: `include/uapi/linux/kvm.h`, `arch/x86/include/uapi/asm/kvm.h`,
//! `arch/x86/include/uapi/asm/kvm_para.h`, `include/uapi/linux/kvm_para.h` and
//! `include/uapi/linux/psp-sev.h` of Linux 6.16 to 7.0, and the SEV-SNP certificate
//! request patches merged for 7.0 (kvm-x86 `svm` branch, commits fa9893fadbc2
//! "KVM: Introduce KVM_EXIT_SNP_REQ_CERTS for SNP certificate-fetching" and 20c3c4108d58
//! "KVM: SEV: Add KVM_SEV_SNP_ENABLE_REQ_CERTS command").

use std::os::raw::c_ulong;

use kvm_bindings::{kvm_device_attr, KVMIO};

pub use crate::private_memory::{
    KVM_HC_MAP_GPA_RANGE, KVM_MAP_GPA_RANGE_DECRYPTED, KVM_MAP_GPA_RANGE_ENCRYPTED, KVM_MAP_GPA_RANGE_PAGE_SZ_1G,
    KVM_MAP_GPA_RANGE_PAGE_SZ_2M, KVM_MAP_GPA_RANGE_PAGE_SZ_4K,
};

/// `#  define KVM_X86_SNP_POLICY_BITS 1` (arch/x86/include/uapi/asm/kvm.h, Linux 6.19):
/// the SNP policy bits KVM accepts in SNP_LAUNCH_START, read with `KVM_GET_DEVICE_ATTR`
/// in group `KVM_X86_GRP_SEV` on /dev/kvm (ENXIO on older kernels).
pub const KVM_X86_SNP_POLICY_BITS: u64 = 1;
/// `#  define KVM_X86_SEV_SNP_REQ_CERTS 2` (arch/x86/include/uapi/asm/kvm.h, Linux 7.0):
/// 1 when the kernel has `KVM_SEV_SNP_ENABLE_REQ_CERTS` and `KVM_EXIT_SNP_REQ_CERTS`.
pub const KVM_X86_SEV_SNP_REQ_CERTS: u64 = 2;

/// `KVM_SEV_SNP_ENABLE_REQ_CERTS` in `enum sev_cmd_id` (arch/x86/include/uapi/asm/kvm.h,
/// Linux 7.0): the entry after `KVM_SEV_SNP_LAUNCH_FINISH` (102), so 103.
pub const KVM_SEV_SNP_ENABLE_REQ_CERTS: u32 = 103;

/// `#define KVM_EXIT_SNP_REQ_CERTS 43` (include/uapi/linux/kvm.h, Linux 7.0).
///
/// The patch series used 40, then 42; it was merged after `KVM_EXIT_ARM_LDST64B` took
/// 42, and the upstream header has `KVM_EXIT_ARM_SEA 41`, `KVM_EXIT_ARM_LDST64B 42`,
/// `KVM_EXIT_SNP_REQ_CERTS 43` (as quoted by later patches against it, e.g. "kvm: Add
/// KVM_EXIT_PLANE_EVENT", which adds 44).
pub const KVM_EXIT_SNP_REQ_CERTS: u32 = 43;

/// The `KVM_EXIT_SNP_REQ_CERTS` member of `kvm_run`'s exit union (include/uapi/linux/kvm.h,
/// Linux 7.0):
///
/// ```c
/// struct kvm_exit_snp_req_certs {
///         __u64 gpa;
///         __u64 npages;
///         __u64 ret;
/// };
/// ```
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct KvmExitSnpReqCerts {
    /// Guest-physical address of the guest's certificate buffer (the GHCB's RAX), 4 KiB
    /// aligned (KVM checks).
    pub gpa: u64,
    /// Its size in 4 KiB pages (the GHCB's RBX); on `ENOSPC`, user space writes the
    /// number of pages needed here.
    pub npages: u64,
    /// Written by user space: 0, `ENOSPC`, `EAGAIN` or `EIO` (positive errno values).
    pub ret: u64,
}

/// Offset of the exit union in `struct kvm_run` on x86: `request_interrupt_window` (1),
/// `immediate_exit` (1), `padding1[6]`, `exit_reason` (4), `ready_for_interrupt_injection`
/// (1), `if_flag` (1), `flags` (2), `cr8` (8), `apic_base` (8).
pub const KVM_RUN_EXIT_UNION_OFFSET: usize = 32;

/// `#define SEV_IOC_TYPE 'S'` (include/uapi/linux/psp-sev.h).
pub const SEV_IOC_TYPE: u32 = b'S' as u32;

/// `SNP_PLATFORM_STATUS` in the SEV platform command enum (include/uapi/linux/psp-sev.h):
/// `SEV_FACTORY_RESET = 0, ..., SEV_GET_ID2, SNP_PLATFORM_STATUS, SNP_COMMIT, ...`, i.e. 9.
pub const SNP_PLATFORM_STATUS: u32 = 9;

/// The argument of the `SEV_ISSUE_CMD` ioctl on /dev/sev (include/uapi/linux/psp-sev.h):
///
/// ```c
/// struct sev_issue_cmd {
///         __u32 cmd;                              /* In */
///         __u64 data;                             /* In */
///         __u32 error;                            /* Out */
/// } __packed;
/// ```
#[repr(C, packed)]
#[derive(Debug, Default, Clone, Copy)]
pub struct SevIssueCmd {
    /// The command (`SNP_PLATFORM_STATUS`, ...).
    pub cmd: u32,
    /// User address of the command's data.
    pub data: u64,
    /// The firmware's status code on failure.
    pub error: u32,
}

/// The SNP_PLATFORM_STATUS result (include/uapi/linux/psp-sev.h), with the bit fields as
/// the bytes they occupy:
///
/// ```c
/// struct sev_user_data_snp_status {
///         __u8 api_major;                 /* Out */
///         __u8 api_minor;                 /* Out */
///         __u8 state;                     /* Out */
///         __u8 is_rmp_initialized:1;      /* Out */
///         __u8 rsvd:7;
///         __u32 build_id;                 /* Out */
///         __u32 mask_chip_id:1;           /* Out */
///         __u32 mask_chip_key:1;          /* Out */
///         __u32 vlek_en:1;                /* Out */
///         __u32 feature_info:1;           /* Out */
///         __u32 rapl_dis:1;               /* Out */
///         __u32 ciphertext_hiding_cap:1;  /* Out */
///         __u32 ciphertext_hiding_en:1;   /* Out */
///         __u32 rsvd1:25;
///         __u32 guest_count;              /* Out */
///         __u64 current_tcb_version;      /* Out */
///         __u64 reported_tcb_version;     /* Out */
/// } __packed;
/// ```
#[repr(C, packed)]
#[derive(Debug, Default, Clone, Copy)]
pub struct SevUserDataSnpStatus {
    /// Firmware API major version.
    pub api_major: u8,
    /// Firmware API minor version.
    pub api_minor: u8,
    /// Platform state (0 UNINIT, 1 INIT).
    pub state: u8,
    /// Bit 0: the RMP is initialized.
    pub rmp_flags: u8,
    /// Firmware build.
    pub build_id: u32,
    /// Bit 0 mask_chip_id, 1 mask_chip_key, 2 vlek_en, 3 feature_info, 4 rapl_dis,
    /// 5 ciphertext_hiding_cap, 6 ciphertext_hiding_en.
    pub flags: u32,
    /// Guests the firmware currently manages.
    pub guest_count: u32,
    /// The installed TCB version.
    pub current_tcb_version: u64,
    /// The TCB version reported in attestation reports.
    pub reported_tcb_version: u64,
}

/// `SEV_RET_INVALID_PARAM = 0x0016` (include/uapi/linux/psp-sev.h, `sev_ret_code`): the
/// firmware status SNP_LAUNCH_UPDATE returns when it rejects a CPUID page.
pub const SEV_RET_INVALID_PARAM: u32 = 0x16;

/// The name of an SEV firmware status code (`sev_ret_code`, include/uapi/linux/psp-sev.h).
pub fn sev_ret_name(code: u32) -> &'static str {
    match code {
        0x00 => "SUCCESS",
        0x01 => "INVALID_PLATFORM_STATE",
        0x02 => "INVALID_GUEST_STATE",
        0x03 => "INVALID_CONFIG",
        0x04 => "INVALID_LEN",
        0x05 => "ALREADY_OWNED",
        0x06 => "INVALID_CERTIFICATE",
        0x07 => "POLICY_FAILURE",
        0x08 => "INACTIVE",
        0x09 => "INVALID_ADDRESS",
        0x0a => "BAD_SIGNATURE",
        0x0b => "BAD_MEASUREMENT",
        0x0c => "ASID_OWNED",
        0x0d => "INVALID_ASID",
        0x0e => "WBINVD_REQUIRED",
        0x0f => "DFFLUSH_REQUIRED",
        0x10 => "INVALID_GUEST",
        0x11 => "INVALID_COMMAND",
        0x12 => "ACTIVE",
        0x13 => "HWSEV_RET_PLATFORM",
        0x14 => "HWSEV_RET_UNSAFE",
        0x15 => "UNSUPPORTED",
        0x16 => "INVALID_PARAM",
        0x17 => "RESOURCE_LIMIT",
        0x18 => "SECURE_DATA_INVALID",
        0x19 => "INVALID_PAGE_SIZE",
        0x1a => "INVALID_PAGE_STATE",
        0x1b => "INVALID_MDATA_ENTRY",
        0x1c => "INVALID_PAGE_OWNER",
        0x1d => "AEAD_OFLOW",
        0x1f => "EXIT_RING_BUFFER",
        0x20 => "RMP_INIT_REQUIRED",
        0x21 => "BAD_SVN",
        0x22 => "BAD_VERSION",
        0x23 => "SHUTDOWN_REQUIRED",
        0x24 => "UPDATE_FAILED",
        0x25 => "RESTORE_REQUIRED",
        0x26 => "RMP_INITIALIZATION_FAILED",
        0x27 => "INVALID_KEY",
        _ => "unknown status",
    }
}

/// `#define SVM_SEV_FEAT_SNP_ACTIVE BIT(0)` (arch/x86/include/asm/svm.h): KVM sets it in
/// every SNP VMSA itself; Linux 6.11 to 7.0 reject it in `KVM_SEV_INIT2`'s
/// `vmsa_features` (it is not in `KVM_X86_SEV_VMSA_FEATURES`).
pub const SVM_SEV_FEAT_SNP_ACTIVE: u64 = 1 << 0;

/// The SNP CPUID page (SEV-SNP firmware ABI, "CPUID Reporting"; Linux
/// `struct snp_cpuid_table`): a 16-byte header (`u32 count`, reserved) then at most 64
/// entries of 48 bytes.
pub mod cpuid_page {
    /// Bytes before the first entry.
    pub const HEADER: usize = 16;
    /// Size of one `struct snp_cpuid_fn` entry: `u32 eax_in, ecx_in; u64 xcr0_in, xss_in;
    /// u32 eax, ebx, ecx, edx; u64 reserved`.
    pub const ENTRY: usize = 48;
    /// `#define SNP_CPUID_COUNT_MAX 64`.
    pub const COUNT_MAX: usize = 64;
}

/// The GHCB MSR protocol's termination request (GHCB specification 2.0, "Termination
/// Request"; Linux arch/x86/include/asm/sev-common.h): `GHCBData[11:0] = 0x100`, the
/// reason code set in bits 15:12 and the reason code in bits 23:16.
pub mod ghcb_term {
    /// `#define GHCB_MSR_TERM_REQ 0x100`.
    pub const GHCB_MSR_TERM_REQ: u64 = 0x100;
    /// `#define GHCB_MSR_INFO_MASK (BIT_ULL(12) - 1)`.
    pub const GHCB_MSR_INFO_MASK: u64 = 0xfff;
    /// `#define GHCB_MSR_TERM_REASON_SET_POS 12`, mask 0xf.
    pub const REASON_SET_POS: u32 = 12;
    /// `#define GHCB_MSR_TERM_REASON_POS 16`, mask 0xff.
    pub const REASON_POS: u32 = 16;
}

/// The request numbers, computed by vmm-sys-util's `_IOC` macros.
mod nr {
    #![allow(missing_docs)]
    use super::{kvm_device_attr, SevIssueCmd, KVMIO, SEV_IOC_TYPE};

    vmm_sys_util::ioctl_iow_nr!(KVM_GET_DEVICE_ATTR, KVMIO, 0xe2, kvm_device_attr);
    vmm_sys_util::ioctl_iowr_nr!(SEV_ISSUE_CMD, SEV_IOC_TYPE, 0x0, SevIssueCmd);
}

/// `#define KVM_GET_DEVICE_ATTR _IOW(KVMIO, 0xe2, struct kvm_device_attr)`
/// (include/uapi/linux/kvm.h), issued on the /dev/kvm fd for the SEV attributes.
pub fn kvm_get_device_attr_request() -> c_ulong {
    nr::KVM_GET_DEVICE_ATTR()
}

/// `#define SEV_ISSUE_CMD _IOWR(SEV_IOC_TYPE, 0x0, struct sev_issue_cmd)`
/// (include/uapi/linux/psp-sev.h), issued on /dev/sev.
pub fn sev_issue_cmd_request() -> c_ulong {
    nr::SEV_ISSUE_CMD()
}

#[cfg(test)]
mod tests {
    //! Every structure handed to the kernel, against the upstream layout: sizes and field
    //! offsets as the C compiler lays out the quoted definitions (x86-64 SysV ABI). The
    //! kvm-bindings structures are checked too: cvmm depends on their layout.
    use std::mem::{offset_of, size_of};

    use kvm_bindings::*;

    use super::*;

    /// `_IOC(dir, type, nr, size)` from include/uapi/asm-generic/ioctl.h: dir in bits
    /// 31:30 (1 write, 2 read), size in 29:16, type in 15:8, nr in 7:0.
    fn ioc(dir: u64, ty: u64, nr: u64, size: usize) -> u64 {
        (dir << 30) | ((size as u64) << 16) | (ty << 8) | nr
    }

    #[test]
    fn ioctl_numbers_match_the_header_definitions() {
        // #define KVMIO 0xAE
        assert_eq!(KVMIO, 0xae);
        // #define KVM_GET_DEVICE_ATTR _IOW(KVMIO, 0xe2, struct kvm_device_attr)
        assert_eq!(kvm_get_device_attr_request() as u64, 0x4018_aee2);
        assert_eq!(kvm_get_device_attr_request() as u64, ioc(1, 0xae, 0xe2, 24));
        // #define SEV_ISSUE_CMD _IOWR(SEV_IOC_TYPE, 0x0, struct sev_issue_cmd)
        assert_eq!(sev_issue_cmd_request() as u64, 0xc010_5300);
        assert_eq!(sev_issue_cmd_request() as u64, ioc(3, b'S' as u64, 0, 16));
    }

    #[test]
    fn kvm_ioctls_request_numbers_match_the_header_definitions() {
        // The requests kvm-ioctls 0.25 issues for cvmm (src/kvm_ioctls.rs defines them
        // with the same macros); their values as the upstream header computes them:
        // #define KVM_MEMORY_ENCRYPT_OP _IOWR(KVMIO, 0xba, unsigned long)
        vmm_sys_util::ioctl_iowr_nr!(MEMORY_ENCRYPT_OP, KVMIO, 0xba, std::os::raw::c_ulong);
        assert_eq!(MEMORY_ENCRYPT_OP() as u64, 0xc008_aeba);
        // #define KVM_SET_MEMORY_ATTRIBUTES _IOW(KVMIO, 0xd2, struct kvm_memory_attributes)
        vmm_sys_util::ioctl_iow_nr!(SET_MEMORY_ATTRIBUTES, KVMIO, 0xd2, kvm_memory_attributes);
        assert_eq!(SET_MEMORY_ATTRIBUTES() as u64, 0x4020_aed2);
        // #define KVM_CREATE_GUEST_MEMFD _IOWR(KVMIO, 0xd4, struct kvm_create_guest_memfd)
        vmm_sys_util::ioctl_iowr_nr!(CREATE_GUEST_MEMFD, KVMIO, 0xd4, kvm_create_guest_memfd);
        assert_eq!(CREATE_GUEST_MEMFD() as u64, 0xc040_aed4);
        // #define KVM_SET_USER_MEMORY_REGION2 _IOW(KVMIO, 0x49, struct kvm_userspace_memory_region2)
        vmm_sys_util::ioctl_iow_nr!(SET_USER_MEMORY_REGION2, KVMIO, 0x49, kvm_userspace_memory_region2);
        assert_eq!(SET_USER_MEMORY_REGION2() as u64, 0x40a0_ae49);
    }

    #[test]
    fn kvm_sev_cmd_layout() {
        // struct kvm_sev_cmd { __u32 id; __u32 pad0; __u64 data; __u32 error; __u32 sev_fd; };
        assert_eq!(size_of::<kvm_sev_cmd>(), 24);
        assert_eq!(
            (offset_of!(kvm_sev_cmd, id), offset_of!(kvm_sev_cmd, data), offset_of!(kvm_sev_cmd, error)),
            (0, 8, 16)
        );
        assert_eq!(offset_of!(kvm_sev_cmd, sev_fd), 20);
    }

    #[test]
    fn kvm_sev_init_layout() {
        // struct kvm_sev_init { __u64 vmsa_features; __u32 flags; __u16 ghcb_version;
        //                       __u16 pad1; __u32 pad2[8]; };
        assert_eq!(size_of::<kvm_sev_init>(), 48);
        assert_eq!(
            (
                offset_of!(kvm_sev_init, vmsa_features),
                offset_of!(kvm_sev_init, flags),
                offset_of!(kvm_sev_init, ghcb_version),
                offset_of!(kvm_sev_init, pad2)
            ),
            (0, 8, 12, 16)
        );
    }

    #[test]
    fn kvm_sev_snp_launch_start_layout() {
        // struct kvm_sev_snp_launch_start { __u64 policy; __u8 gosvw[16]; __u16 flags;
        //                                   __u8 pad0[6]; __u64 pad1[4]; };
        assert_eq!(size_of::<kvm_sev_snp_launch_start>(), 64);
        assert_eq!(
            (
                offset_of!(kvm_sev_snp_launch_start, policy),
                offset_of!(kvm_sev_snp_launch_start, gosvw),
                offset_of!(kvm_sev_snp_launch_start, flags),
                offset_of!(kvm_sev_snp_launch_start, pad1)
            ),
            (0, 8, 24, 32)
        );
    }

    #[test]
    fn kvm_sev_snp_launch_update_layout() {
        // struct kvm_sev_snp_launch_update { __u64 gfn_start; __u64 uaddr; __u64 len;
        //     __u8 type; __u8 pad0; __u16 flags; __u32 pad1; __u64 pad2[4]; };
        assert_eq!(size_of::<kvm_sev_snp_launch_update>(), 64);
        assert_eq!(
            (
                offset_of!(kvm_sev_snp_launch_update, gfn_start),
                offset_of!(kvm_sev_snp_launch_update, uaddr),
                offset_of!(kvm_sev_snp_launch_update, len),
                offset_of!(kvm_sev_snp_launch_update, type_),
                offset_of!(kvm_sev_snp_launch_update, flags),
                offset_of!(kvm_sev_snp_launch_update, pad2)
            ),
            (0, 8, 16, 24, 26, 32)
        );
    }

    #[test]
    fn kvm_sev_snp_launch_finish_layout() {
        // struct kvm_sev_snp_launch_finish { __u64 id_block_uaddr; __u64 id_auth_uaddr;
        //     __u8 id_block_en; __u8 auth_key_en; __u8 vcek_disabled; __u8 host_data[32];
        //     __u8 pad0[3]; __u16 flags; __u64 pad1[4]; };
        assert_eq!(size_of::<kvm_sev_snp_launch_finish>(), 88);
        assert_eq!(
            (
                offset_of!(kvm_sev_snp_launch_finish, id_block_uaddr),
                offset_of!(kvm_sev_snp_launch_finish, id_auth_uaddr),
                offset_of!(kvm_sev_snp_launch_finish, id_block_en),
                offset_of!(kvm_sev_snp_launch_finish, auth_key_en),
                offset_of!(kvm_sev_snp_launch_finish, vcek_disabled),
                offset_of!(kvm_sev_snp_launch_finish, host_data),
                offset_of!(kvm_sev_snp_launch_finish, flags),
                offset_of!(kvm_sev_snp_launch_finish, pad1)
            ),
            (0, 8, 16, 17, 18, 19, 54, 56)
        );
    }

    #[test]
    fn kvm_create_guest_memfd_layout() {
        // struct kvm_create_guest_memfd { __u64 size; __u64 flags; __u64 reserved[6]; };
        assert_eq!(size_of::<kvm_create_guest_memfd>(), 64);
        assert_eq!((offset_of!(kvm_create_guest_memfd, size), offset_of!(kvm_create_guest_memfd, flags)), (0, 8));
    }

    #[test]
    fn kvm_userspace_memory_region2_layout() {
        // struct kvm_userspace_memory_region2 { __u32 slot; __u32 flags; __u64 guest_phys_addr;
        //     __u64 memory_size; __u64 userspace_addr; __u64 guest_memfd_offset;
        //     __u32 guest_memfd; __u32 pad1; __u64 pad2[14]; };
        assert_eq!(size_of::<kvm_userspace_memory_region2>(), 160);
        assert_eq!(
            (
                offset_of!(kvm_userspace_memory_region2, flags),
                offset_of!(kvm_userspace_memory_region2, guest_phys_addr),
                offset_of!(kvm_userspace_memory_region2, memory_size),
                offset_of!(kvm_userspace_memory_region2, userspace_addr),
                offset_of!(kvm_userspace_memory_region2, guest_memfd_offset),
                offset_of!(kvm_userspace_memory_region2, guest_memfd),
                offset_of!(kvm_userspace_memory_region2, pad2)
            ),
            (4, 8, 16, 24, 32, 40, 48)
        );
        // #define KVM_MEM_GUEST_MEMFD (1UL << 2)
        assert_eq!(KVM_MEM_GUEST_MEMFD, 1 << 2);
    }

    #[test]
    fn kvm_memory_attributes_layout() {
        // struct kvm_memory_attributes { __u64 address; __u64 size; __u64 attributes; __u64 flags; };
        assert_eq!(size_of::<kvm_memory_attributes>(), 32);
        assert_eq!(
            (
                offset_of!(kvm_memory_attributes, size),
                offset_of!(kvm_memory_attributes, attributes),
                offset_of!(kvm_memory_attributes, flags)
            ),
            (8, 16, 24)
        );
        // #define KVM_MEMORY_ATTRIBUTE_PRIVATE (1ULL << 3)
        assert_eq!(KVM_MEMORY_ATTRIBUTE_PRIVATE, 1 << 3);
    }

    #[test]
    fn kvm_device_attr_layout() {
        // struct kvm_device_attr { __u32 flags; __u32 group; __u64 attr; __u64 addr; };
        assert_eq!(size_of::<kvm_device_attr>(), 24);
        assert_eq!(
            (offset_of!(kvm_device_attr, group), offset_of!(kvm_device_attr, attr), offset_of!(kvm_device_attr, addr)),
            (4, 8, 16)
        );
        // #define KVM_X86_GRP_SEV 1, #  define KVM_X86_SEV_VMSA_FEATURES 0
        assert_eq!((KVM_X86_GRP_SEV, KVM_X86_SEV_VMSA_FEATURES), (1, 0));
    }

    #[test]
    fn kvm_exit_snp_req_certs_layout_and_place_in_kvm_run() {
        assert_eq!(size_of::<KvmExitSnpReqCerts>(), 24);
        assert_eq!(
            (
                offset_of!(KvmExitSnpReqCerts, gpa),
                offset_of!(KvmExitSnpReqCerts, npages),
                offset_of!(KvmExitSnpReqCerts, ret)
            ),
            (0, 8, 16)
        );
        // The exit union sits where kvm-bindings puts every other exit's fields.
        assert_eq!(offset_of!(kvm_run, __bindgen_anon_1), KVM_RUN_EXIT_UNION_OFFSET);
        assert!(size_of::<kvm_run__bindgen_ty_1>() >= size_of::<KvmExitSnpReqCerts>());
    }

    #[test]
    fn kvm_run_hypercall_and_memory_fault_layout() {
        // struct { __u64 nr; __u64 args[6]; __u64 ret; union { __u32 longmode; __u64 flags; }; } hypercall;
        // struct { __u64 flags; __u64 gpa; __u64 size; } memory_fault;
        // struct { __u32 type; __u32 ndata; union { __u64 flags; __u64 data[16]; }; } system_event;
        assert_eq!(size_of::<kvm_run__bindgen_ty_1__bindgen_ty_8>(), 72); // hypercall
        assert_eq!(offset_of!(kvm_run__bindgen_ty_1__bindgen_ty_8, ret), 56);
        assert_eq!(size_of::<kvm_run__bindgen_ty_1__bindgen_ty_27>(), 24); // memory_fault
        assert_eq!(offset_of!(kvm_run__bindgen_ty_1__bindgen_ty_27, size), 16);
        assert_eq!(offset_of!(kvm_run__bindgen_ty_1__bindgen_ty_19, ndata), 4); // system_event
        assert_eq!(KVM_EXIT_HYPERCALL, 3);
        assert_eq!(KVM_EXIT_MEMORY_FAULT, 39);
        assert_eq!(KVM_EXIT_SYSTEM_EVENT, 24);
        assert_eq!(KVM_SYSTEM_EVENT_SEV_TERM, 6);
        // #define KVM_MEMORY_EXIT_FLAG_PRIVATE (1ULL << 3)
        assert_eq!(KVM_MEMORY_EXIT_FLAG_PRIVATE, 1 << 3);
    }

    #[test]
    fn sev_issue_cmd_layout() {
        // __packed: cmd at 0, data at 4, error at 12, 16 bytes.
        assert_eq!(size_of::<SevIssueCmd>(), 16);
        assert_eq!((offset_of!(SevIssueCmd, data), offset_of!(SevIssueCmd, error)), (4, 12));
    }

    #[test]
    fn sev_user_data_snp_status_layout() {
        // __packed: 4 single bytes, build_id at 4, the flag word at 8, guest_count at 12,
        // the two TCB versions at 16 and 24: 32 bytes (the sev crate's buffer is 32 too).
        assert_eq!(size_of::<SevUserDataSnpStatus>(), 32);
        assert_eq!(
            (
                offset_of!(SevUserDataSnpStatus, rmp_flags),
                offset_of!(SevUserDataSnpStatus, build_id),
                offset_of!(SevUserDataSnpStatus, flags),
                offset_of!(SevUserDataSnpStatus, guest_count),
                offset_of!(SevUserDataSnpStatus, current_tcb_version),
                offset_of!(SevUserDataSnpStatus, reported_tcb_version)
            ),
            (3, 4, 8, 12, 16, 24)
        );
    }

    #[test]
    fn sev_command_ids_match_the_enum() {
        // enum sev_cmd_id { ..., KVM_SEV_INIT2 = 22, ..., KVM_SEV_SNP_LAUNCH_START = 100,
        //   KVM_SEV_SNP_LAUNCH_UPDATE, KVM_SEV_SNP_LAUNCH_FINISH, KVM_SEV_SNP_ENABLE_REQ_CERTS, ... };
        assert_eq!(sev_cmd_id_KVM_SEV_INIT2, 22);
        assert_eq!(
            (
                sev_cmd_id_KVM_SEV_SNP_LAUNCH_START,
                sev_cmd_id_KVM_SEV_SNP_LAUNCH_UPDATE,
                sev_cmd_id_KVM_SEV_SNP_LAUNCH_FINISH
            ),
            (100, 101, 102)
        );
        assert_eq!(KVM_SEV_SNP_ENABLE_REQ_CERTS, sev_cmd_id_KVM_SEV_SNP_LAUNCH_FINISH + 1);
        // #define KVM_X86_SNP_VM 4, page types NORMAL 1, ZERO 3, UNMEASURED 4, SECRETS 5, CPUID 6.
        assert_eq!(KVM_X86_SNP_VM, 4);
        assert_eq!(
            (
                KVM_SEV_SNP_PAGE_TYPE_NORMAL,
                KVM_SEV_SNP_PAGE_TYPE_ZERO,
                KVM_SEV_SNP_PAGE_TYPE_UNMEASURED,
                KVM_SEV_SNP_PAGE_TYPE_SECRETS,
                KVM_SEV_SNP_PAGE_TYPE_CPUID
            ),
            (1, 3, 4, 5, 6)
        );
        assert_eq!((KVM_SEV_SNP_ID_BLOCK_SIZE, KVM_SEV_SNP_ID_AUTH_SIZE, KVM_SEV_SNP_FINISH_DATA_SIZE), (96, 4096, 32));
    }

    #[test]
    fn cpuid_page_entries_fit_one_page() {
        assert_eq!(cpuid_page::HEADER + cpuid_page::COUNT_MAX * cpuid_page::ENTRY, 3088);
        const { assert!(cpuid_page::HEADER + cpuid_page::COUNT_MAX * cpuid_page::ENTRY <= 4096) };
    }
}
