//! The parts of the Linux TDX user-space ABI that kvm-bindings 0.14 does not have:
//! constants and `#[repr(C)]` structures (each quoted from the upstream header it comes
//! from), the ioctl request numbers cvmm issues itself, and layout tests of every
//! structure this module tree passes to the kernel or reads from `kvm_run`.
//!
//! Sources: `arch/x86/include/uapi/asm/kvm.h` and `include/uapi/linux/kvm.h` of Linux
//! 6.16 and later (the TDX ABI as merged, with `KVM_TDX_GET_CPUID`, the
//! `kvm_tdvmcallinfo` fields of `struct kvm_tdx_capabilities` and the
//! `setup_event_notify` member of the `KVM_EXIT_TDX` exit), `arch/x86/include/asm/shared/tdx.h`
//! for the TDG.VP.VMCALL leaves and status codes (the GHCI specification's values),
//! and `arch/x86/include/asm/shared/tdx_errno.h` for the TDX module status codes KVM
//! passes back in `hw_error`.

use std::os::raw::c_ulong;

use kvm_bindings::{kvm_cpuid_entry2, KVMIO};

pub use kvm_bindings::KVM_X86_TDX_VM;

/// The fixed part of `struct kvm_cpuid2` (include/uapi/asm/kvm.h) as it sits inside
/// the TDX structures (kvm-bindings' `kvm_cpuid2` is the same layout, but not `Copy`):
///
/// ```c
/// struct kvm_cpuid2 {
///         __u32 nent;
///         __u32 padding;
///         struct kvm_cpuid_entry2 entries[];
/// };
/// ```
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct KvmCpuid2Header {
    /// Number of entries that follow.
    pub nent: u32,
    /// Must be zero.
    pub padding: u32,
}

/// The TDX sub-commands of `KVM_MEMORY_ENCRYPT_OP` (arch/x86/include/uapi/asm/kvm.h):
///
/// ```c
/// enum kvm_tdx_cmd_id {
///         KVM_TDX_CAPABILITIES = 0,
///         KVM_TDX_INIT_VM,
///         KVM_TDX_INIT_VCPU,
///         KVM_TDX_INIT_MEM_REGION,
///         KVM_TDX_FINALIZE_VM,
///         KVM_TDX_GET_CPUID,
///
///         KVM_TDX_CMD_NR_MAX,
/// };
/// ```
pub mod cmd {
    /// `KVM_TDX_CAPABILITIES` (VM ioctl): what the TDX module and KVM support.
    pub const KVM_TDX_CAPABILITIES: u32 = 0;
    /// `KVM_TDX_INIT_VM` (VM ioctl): TDH.MNG.CREATE, TDH.MNG.KEY.CONFIG, TDH.MNG.INIT.
    pub const KVM_TDX_INIT_VM: u32 = 1;
    /// `KVM_TDX_INIT_VCPU` (vCPU ioctl): TDH.VP.CREATE, TDH.VP.INIT with RCX = `data`.
    pub const KVM_TDX_INIT_VCPU: u32 = 2;
    /// `KVM_TDX_INIT_MEM_REGION` (vCPU ioctl): TDH.MEM.PAGE.ADD (and TDH.MR.EXTEND).
    pub const KVM_TDX_INIT_MEM_REGION: u32 = 3;
    /// `KVM_TDX_FINALIZE_VM` (VM ioctl): TDH.MR.FINALIZE.
    pub const KVM_TDX_FINALIZE_VM: u32 = 4;
    /// `KVM_TDX_GET_CPUID` (vCPU ioctl): the TD's CPUID as the TDX module virtualizes it.
    pub const KVM_TDX_GET_CPUID: u32 = 5;

    /// The command's name, for messages.
    pub fn name(id: u32) -> &'static str {
        match id {
            KVM_TDX_CAPABILITIES => "KVM_TDX_CAPABILITIES",
            KVM_TDX_INIT_VM => "KVM_TDX_INIT_VM",
            KVM_TDX_INIT_VCPU => "KVM_TDX_INIT_VCPU",
            KVM_TDX_INIT_MEM_REGION => "KVM_TDX_INIT_MEM_REGION",
            KVM_TDX_FINALIZE_VM => "KVM_TDX_FINALIZE_VM",
            KVM_TDX_GET_CPUID => "KVM_TDX_GET_CPUID",
            _ => "unknown KVM_TDX command",
        }
    }
}

/// The argument of `KVM_MEMORY_ENCRYPT_OP` on a TDX VM or vCPU:
///
/// ```c
/// struct kvm_tdx_cmd {
///         /* enum kvm_tdx_cmd_id */
///         __u32 id;
///         /* flags for sub-commend. If sub-command doesn't use this, set zero. */
///         __u32 flags;
///         /*
///          * data for each sub-command. An immediate or a pointer to the actual
///          * data in process virtual address.  If sub-command doesn't use it,
///          * set zero.
///          */
///         __u64 data;
///         /*
///          * Auxiliary error code.  The sub-command may return TDX SEAMCALL
///          * status code in addition to -Exxx.
///          */
///         __u64 hw_error;
/// };
/// ```
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct KvmTdxCmd {
    /// One of [`cmd`].
    pub id: u32,
    /// The command's flags (only `KVM_TDX_INIT_MEM_REGION` has one).
    pub flags: u32,
    /// An immediate (the RCX of `KVM_TDX_INIT_VCPU`) or a user address.
    pub data: u64,
    /// Written by KVM: the TDX module's status, when a SEAMCALL failed. KVM refuses a
    /// command whose `hw_error` is not 0 on entry.
    pub hw_error: u64,
}

/// `KVM_TDX_CAPABILITIES`'s result, followed by `cpuid.nent` entries:
///
/// ```c
/// struct kvm_tdx_capabilities {
///         __u64 supported_attrs;
///         __u64 supported_xfam;
///
///         __u64 kernel_tdvmcallinfo_1_r11;
///         __u64 user_tdvmcallinfo_1_r11;
///         __u64 kernel_tdvmcallinfo_1_r12;
///         __u64 user_tdvmcallinfo_1_r12;
///
///         __u64 reserved[250];
///
///         /* Configurable CPUID bits for userspace */
///         struct kvm_cpuid2 cpuid;
/// };
/// ```
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct KvmTdxCapabilities {
    /// TD attributes KVM and the TDX module allow (`KVM_TDX_INIT_VM`'s `attributes`).
    pub supported_attrs: u64,
    /// XFAM bits allowed (`KVM_TDX_INIT_VM`'s `xfam`).
    pub supported_xfam: u64,
    /// GetTdVmCallInfo leaf 1 R11 bits KVM implements itself.
    pub kernel_tdvmcallinfo_1_r11: u64,
    /// GetTdVmCallInfo leaf 1 R11 bits KVM forwards to user space.
    pub user_tdvmcallinfo_1_r11: u64,
    /// GetTdVmCallInfo leaf 1 R12 bits KVM implements itself.
    pub kernel_tdvmcallinfo_1_r12: u64,
    /// GetTdVmCallInfo leaf 1 R12 bits KVM forwards to user space.
    pub user_tdvmcallinfo_1_r12: u64,
    /// Zeroed by KVM.
    pub reserved: [u64; 250],
    /// The configurable CPUID leaves: `nent` in, how many there are out.
    pub cpuid: KvmCpuid2Header,
}

/// A [`KvmTdxCapabilities`] with room for [`kvm_bindings::KVM_MAX_CPUID_ENTRIES`]
/// entries right after it, as `KVM_TDX_CAPABILITIES` writes them.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct KvmTdxCapabilitiesBuf {
    /// The fixed part.
    pub caps: KvmTdxCapabilities,
    /// `caps.cpuid.entries[]`.
    pub entries: [kvm_cpuid_entry2; kvm_bindings::KVM_MAX_CPUID_ENTRIES],
}

/// `KVM_TDX_INIT_VM`'s argument, followed by `cpuid.nent` entries:
///
/// ```c
/// struct kvm_tdx_init_vm {
///         __u64 attributes;
///         __u64 xfam;
///         __u64 mrconfigid[6];    /* sha384 digest */
///         __u64 mrowner[6];       /* sha384 digest */
///         __u64 mrownerconfig[6]; /* sha384 digest */
///
///         /* The total space for TD_PARAMS before the CPUIDs is 256 bytes */
///         __u64 reserved[12];
///
///         /*
///          * Call KVM_TDX_INIT_VM before vcpu creation, thus before
///          * KVM_SET_CPUID2.
///          * This configuration supersedes KVM_SET_CPUID2s for VCPUs because the
///          * TDX module directly virtualizes those CPUIDs without VMM.  The user
///          * space VMM, e.g. qemu, should make KVM_SET_CPUID2 consistent with
///          * those values.  If it doesn't, KVM may have wrong idea of vCPUIDs of
///          * the guest, and KVM may wrongly emulate CPUIDs or MSRs that the TDX
///          * module doesn't virtualize.
///          */
///         struct kvm_cpuid2 cpuid;
/// };
/// ```
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct KvmTdxInitVm {
    /// TD attributes (TDX module ABI, TD_PARAMS.ATTRIBUTES).
    pub attributes: u64,
    /// Extended features available mask (XCR0 and IA32_XSS bits the TD may use).
    pub xfam: u64,
    /// MRCONFIGID: 48 bytes, as 6 little-endian words.
    pub mrconfigid: [u64; 6],
    /// MROWNER.
    pub mrowner: [u64; 6],
    /// MROWNERCONFIG.
    pub mrownerconfig: [u64; 6],
    /// Must be zero (KVM refuses anything else).
    pub reserved: [u64; 12],
    /// The CPUID configuration: `nent` entries follow; `padding` must be zero.
    pub cpuid: KvmCpuid2Header,
}

/// A [`KvmTdxInitVm`] with room for [`kvm_bindings::KVM_MAX_CPUID_ENTRIES`] entries.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct KvmTdxInitVmBuf {
    /// The fixed part.
    pub init: KvmTdxInitVm,
    /// `init.cpuid.entries[]`.
    pub entries: [kvm_cpuid_entry2; kvm_bindings::KVM_MAX_CPUID_ENTRIES],
}

/// `#define KVM_TDX_MEASURE_MEMORY_REGION _BITULL(0)`: the `flags` of
/// `KVM_TDX_INIT_MEM_REGION` that extends MRTD with every page added (TDH.MR.EXTEND).
pub const KVM_TDX_MEASURE_MEMORY_REGION: u32 = 1 << 0;

/// `KVM_TDX_INIT_MEM_REGION`'s argument; KVM advances all three fields past the pages
/// it has added when it stops early (EINTR) or fails:
///
/// ```c
/// struct kvm_tdx_init_mem_region {
///         __u64 source_addr;
///         __u64 gpa;
///         __u64 nr_pages;
/// };
/// ```
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct KvmTdxInitMemRegion {
    /// User address of the source pages, page-aligned.
    pub source_addr: u64,
    /// Guest-physical address (private, i.e. without the shared bit), page-aligned.
    pub gpa: u64,
    /// Number of 4 KiB pages.
    pub nr_pages: u64,
}

/// `#define KVM_EXIT_TDX 40` (include/uapi/linux/kvm.h): a TDG.VP.VMCALL KVM forwards
/// to user space (kvm-ioctls 0.25 returns it as `VcpuExit::Unsupported(40)`).
pub const KVM_EXIT_TDX: u32 = 40;

/// `#define KVM_SYSTEM_EVENT_TDX_FATAL 7` (include/uapi/linux/kvm.h): the TD called
/// `TDG.VP.VMCALL<ReportFatalError>`; `data[0..16]` are its RAX..R15.
pub const KVM_SYSTEM_EVENT_TDX_FATAL: u32 = 7;

/// The `KVM_EXIT_TDX` member of `kvm_run`'s exit union (include/uapi/linux/kvm.h):
///
/// ```c
/// /* KVM_EXIT_TDX */
/// struct {
///         __u64 flags;
///         __u64 nr;
///         union {
///                 struct {
///                         __u64 ret;
///                         __u64 data[5];
///                 } unknown;
///                 struct {
///                         __u64 ret;
///                         __u64 gpa;
///                         __u64 size;
///                 } get_quote;
///                 struct {
///                         __u64 ret;
///                         __u64 leaf;
///                         __u64 r11, r12, r13, r14;
///                 } get_tdvmcall_info;
///                 struct {
///                         __u64 ret;
///                         __u64 vector;
///                 } setup_event_notify;
///         };
/// } tdx;
/// ```
///
/// `ret` is what the TD gets in R10 (a [`tdvmcall_status`] code): KVM presets it to
/// `TDVMCALL_STATUS_SUBFUNC_UNSUPPORTED` for GetQuote and SetupEventNotifyInterrupt and
/// to `TDVMCALL_STATUS_SUCCESS` for GetTdVmCallInfo; user space overwrites it.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct KvmTdxExit {
    /// Zero.
    pub flags: u64,
    /// The TDG.VP.VMCALL leaf (one of [`tdvmcall`]).
    pub nr: u64,
    /// The leaf's arguments and results.
    pub u: KvmTdxExitArgs,
}

/// The union of [`KvmTdxExit`].
#[repr(C)]
#[derive(Clone, Copy)]
pub union KvmTdxExitArgs {
    /// Any leaf.
    pub unknown: TdxExitUnknown,
    /// GetQuote.
    pub get_quote: TdxExitGetQuote,
    /// GetTdVmCallInfo.
    pub get_tdvmcall_info: TdxExitGetTdVmCallInfo,
    /// SetupEventNotifyInterrupt.
    pub setup_event_notify: TdxExitSetupEventNotify,
}

/// `unknown` of [`KvmTdxExitArgs`].
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TdxExitUnknown {
    /// Status for the TD.
    pub ret: u64,
    /// Leaf-specific.
    pub data: [u64; 5],
}

/// `get_quote` of [`KvmTdxExitArgs`].
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TdxExitGetQuote {
    /// Status for the TD.
    pub ret: u64,
    /// The buffer's GPA, without the shared bit (KVM checked it was set and cleared it).
    pub gpa: u64,
    /// The buffer's size in bytes.
    pub size: u64,
}

/// `get_tdvmcall_info` of [`KvmTdxExitArgs`].
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TdxExitGetTdVmCallInfo {
    /// Status for the TD.
    pub ret: u64,
    /// The leaf asked for (KVM forwards only leaf 1).
    pub leaf: u64,
    /// R11 for the TD.
    pub r11: u64,
    /// R12 for the TD.
    pub r12: u64,
    /// R13 for the TD.
    pub r13: u64,
    /// R14 for the TD.
    pub r14: u64,
}

/// `setup_event_notify` of [`KvmTdxExitArgs`].
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TdxExitSetupEventNotify {
    /// Status for the TD.
    pub ret: u64,
    /// The vector (KVM checked 32 to 255).
    pub vector: u64,
}

/// The TDG.VP.VMCALL leaves (sub-functions) of the GHCI specification
/// (arch/x86/include/asm/shared/tdx.h).
pub mod tdvmcall {
    /// `#define TDVMCALL_GET_TD_VM_CALL_INFO 0x10000`.
    pub const GET_TD_VM_CALL_INFO: u64 = 0x10000;
    /// `#define TDVMCALL_MAP_GPA 0x10001` (reaches user space as `KVM_HC_MAP_GPA_RANGE`).
    pub const MAP_GPA: u64 = 0x10001;
    /// `#define TDVMCALL_GET_QUOTE 0x10002`.
    pub const GET_QUOTE: u64 = 0x10002;
    /// `#define TDVMCALL_REPORT_FATAL_ERROR 0x10003` (reaches user space as
    /// `KVM_SYSTEM_EVENT_TDX_FATAL`).
    pub const REPORT_FATAL_ERROR: u64 = 0x10003;
    /// `#define TDVMCALL_SETUP_EVENT_NOTIFY_INTERRUPT 0x10004`.
    pub const SETUP_EVENT_NOTIFY_INTERRUPT: u64 = 0x10004;
}

/// TDG.VP.VMCALL status codes, returned to the TD in R10 (arch/x86/include/asm/shared/tdx.h).
pub mod tdvmcall_status {
    /// `#define TDVMCALL_STATUS_SUCCESS 0x0000000000000000ULL`.
    pub const SUCCESS: u64 = 0;
    /// `#define TDVMCALL_STATUS_RETRY 0x0000000000000001ULL`.
    pub const RETRY: u64 = 1;
    /// `#define TDVMCALL_STATUS_INVALID_OPERAND 0x8000000000000000ULL`.
    pub const INVALID_OPERAND: u64 = 0x8000_0000_0000_0000;
    /// `TDG_VP_VMCALL_GPA_INUSE 0x8000000000000001ULL` (GHCI; QEMU's target/i386/kvm/tdx.h).
    pub const GPA_INUSE: u64 = 0x8000_0000_0000_0001;
    /// `#define TDVMCALL_STATUS_ALIGN_ERROR 0x8000000000000002ULL`.
    pub const ALIGN_ERROR: u64 = 0x8000_0000_0000_0002;
    /// `#define TDVMCALL_STATUS_SUBFUNC_UNSUPPORTED 0x8000000000000003ULL`.
    pub const SUBFUNC_UNSUPPORTED: u64 = 0x8000_0000_0000_0003;
}

/// `#define TDVMCALLINFO_SETUP_EVENT_NOTIFY_INTERRUPT BIT_ULL(1)` (arch/x86/kvm/vmx/tdx.c):
/// the GetTdVmCallInfo leaf 1 R11 bit saying SetupEventNotifyInterrupt is implemented.
pub const TDVMCALLINFO_SETUP_EVENT_NOTIFY_INTERRUPT: u64 = 1 << 1;

/// TD attribute bits (TDX module ABI, TD_PARAMS.ATTRIBUTES; QEMU's target/i386/kvm/tdx.c).
pub mod attributes {
    /// `TDX_TD_ATTRIBUTES_DEBUG BIT_ULL(0)`: an off-TD debugger may read and write the
    /// TD's state; the TD is not trustworthy.
    pub const DEBUG: u64 = 1 << 0;
    /// LASS (bit 27): linear-address space separation may be enabled by the TD.
    pub const LASS: u64 = 1 << 27;
    /// `TDX_TD_ATTRIBUTES_SEPT_VE_DISABLE BIT_ULL(28)`: an EPT violation on a pending
    /// private page is not converted to #VE. A Linux TD without DEBUG refuses to boot
    /// without it.
    pub const SEPT_VE_DISABLE: u64 = 1 << 28;
    /// MIGRATABLE (bit 29).
    pub const MIGRATABLE: u64 = 1 << 29;
    /// `TDX_TD_ATTRIBUTES_PKS BIT_ULL(30)`: supervisor protection keys.
    pub const PKS: u64 = 1 << 30;
    /// KL (bit 31): Key Locker.
    pub const KL: u64 = 1 << 31;
    /// `TDX_TD_ATTRIBUTES_PERFMON BIT_ULL(63)`: the TD may use the performance monitor.
    pub const PERFMON: u64 = 1 << 63;

    /// The names of the set bits of `attrs` ("DEBUG", "SEPT_VE_DISABLE", "bit 5", ...).
    pub fn names(attrs: u64) -> String {
        let names: Vec<String> = (0..64)
            .filter(|bit| attrs & (1u64 << bit) != 0)
            .map(|bit| match 1u64 << bit {
                DEBUG => "DEBUG".to_owned(),
                LASS => "LASS".to_owned(),
                SEPT_VE_DISABLE => "SEPT_VE_DISABLE".to_owned(),
                MIGRATABLE => "MIGRATABLE".to_owned(),
                PKS => "PKS".to_owned(),
                KL => "KL".to_owned(),
                PERFMON => "PERFMON".to_owned(),
                _ => format!("bit {bit}"),
            })
            .collect();
        if names.is_empty() {
            "none".to_owned()
        } else {
            names.join(", ")
        }
    }
}

/// TDX module status codes KVM may put in `hw_error` (arch/x86/include/asm/shared/tdx_errno.h):
/// bits 63:32 are the status, bits 31:0 details (for OPERAND_INVALID, the operand).
pub mod tdx_status {
    /// `#define TDX_SEAMCALL_STATUS_MASK 0xFFFFFFFF00000000ULL`.
    pub const STATUS_MASK: u64 = 0xFFFF_FFFF_0000_0000;
    /// `#define TDX_OPERAND_INVALID 0xC000010000000000ULL`.
    pub const OPERAND_INVALID: u64 = 0xC000_0100_0000_0000;
    /// `#define TDX_OPERAND_BUSY 0x8000020000000000ULL`.
    pub const OPERAND_BUSY: u64 = 0x8000_0200_0000_0000;
    /// `#define TDX_RND_NO_ENTROPY 0x8000020300000000ULL`.
    pub const RND_NO_ENTROPY: u64 = 0x8000_0203_0000_0000;
    /// `#define TDX_PAGE_METADATA_INCORRECT 0xC000030000000000ULL`.
    pub const PAGE_METADATA_INCORRECT: u64 = 0xC000_0300_0000_0000;
    /// `#define TDX_KEY_GENERATION_FAILED 0x8000080000000000ULL`.
    pub const KEY_GENERATION_FAILED: u64 = 0x8000_0800_0000_0000;
    /// `#define TDX_EPT_WALK_FAILED 0xC0000B0000000000ULL`.
    pub const EPT_WALK_FAILED: u64 = 0xC000_0B00_0000_0000;

    /// The name of the status part of `code`, if known.
    pub fn name(code: u64) -> Option<&'static str> {
        Some(match code & STATUS_MASK {
            0 => "SUCCESS",
            OPERAND_INVALID => "OPERAND_INVALID",
            OPERAND_BUSY => "OPERAND_BUSY",
            RND_NO_ENTROPY => "RND_NO_ENTROPY",
            PAGE_METADATA_INCORRECT => "PAGE_METADATA_INCORRECT",
            KEY_GENERATION_FAILED => "KEY_GENERATION_FAILED",
            EPT_WALK_FAILED => "EPT_WALK_FAILED",
            _ => return None,
        })
    }
}

/// The IOAPIC routes reserved with `KVM_CAP_SPLIT_IRQCHIP` (QEMU's default, 24 pins): a
/// TD needs the split irqchip (local APICs in KVM, IOAPIC and PIC in user space).
pub const SPLIT_IRQCHIP_IOAPIC_PINS: u64 = 24;

/// `#define TDX_APIC_BUS_CYCLES_NS 40` (QEMU's target/i386/kvm/tdx.h): TDX virtualizes a
/// 25 MHz APIC bus; `KVM_CAP_X86_APIC_BUS_CYCLES_NS` is set to it.
pub const TDX_APIC_BUS_CYCLES_NS: u64 = 40;

/// The TSC frequencies the TDX module accepts (QEMU's `TDX_MIN_TSC_FREQUENCY_KHZ`,
/// `TDX_MAX_TSC_FREQUENCY_KHZ`), in kHz, and the step (25 MHz: TD_PARAMS.TSC_FREQUENCY
/// counts units of 25 MHz).
pub mod tsc {
    /// 100 MHz.
    pub const MIN_KHZ: u32 = 100 * 1000;
    /// 10 GHz.
    pub const MAX_KHZ: u32 = 10 * 1000 * 1000;
    /// 25 MHz.
    pub const STEP_KHZ: u32 = 25 * 1000;
}

/// The request numbers, computed by vmm-sys-util's `_IOC` macros.
mod nr {
    #![allow(missing_docs)]
    use super::KVMIO;

    vmm_sys_util::ioctl_iowr_nr!(KVM_MEMORY_ENCRYPT_OP, KVMIO, 0xba, std::os::raw::c_ulong);
    vmm_sys_util::ioctl_io_nr!(KVM_SET_TSC_KHZ, KVMIO, 0xa2);
}

/// `#define KVM_MEMORY_ENCRYPT_OP _IOWR(KVMIO, 0xba, unsigned long)`
/// (include/uapi/linux/kvm.h), issued on the VM fd and, for the vCPU-scoped TDX
/// commands, on the vCPU fd.
pub fn kvm_memory_encrypt_op_request() -> c_ulong {
    nr::KVM_MEMORY_ENCRYPT_OP()
}

/// `#define KVM_SET_TSC_KHZ _IO(KVMIO, 0xa2)` (include/uapi/linux/kvm.h), issued on the
/// VM fd (`KVM_CAP_VM_TSC_CONTROL`) to set the default TSC frequency of every vCPU.
pub fn kvm_set_tsc_khz_request() -> c_ulong {
    nr::KVM_SET_TSC_KHZ()
}

#[cfg(test)]
mod tests {
    //! Every structure handed to the kernel or read from `kvm_run`, against the upstream
    //! layout: sizes and field offsets as the C compiler lays out the quoted definitions
    //! (x86-64 SysV ABI), computed by hand from the field types.
    use std::mem::{align_of, offset_of, size_of};

    use kvm_bindings::{kvm_cpuid2, kvm_run, KVM_X86_SNP_VM};

    use super::*;

    /// `_IOC(dir, type, nr, size)` from include/uapi/asm-generic/ioctl.h.
    fn ioc(dir: u64, ty: u64, nr: u64, size: usize) -> u64 {
        (dir << 30) | ((size as u64) << 16) | (ty << 8) | nr
    }

    #[test]
    fn ioctl_numbers_match_the_header_definitions() {
        // #define KVM_MEMORY_ENCRYPT_OP _IOWR(KVMIO, 0xba, unsigned long)
        assert_eq!(kvm_memory_encrypt_op_request() as u64, 0xc008_aeba);
        assert_eq!(kvm_memory_encrypt_op_request() as u64, ioc(3, 0xae, 0xba, 8));
        // #define KVM_SET_TSC_KHZ _IO(KVMIO, 0xa2)
        assert_eq!(kvm_set_tsc_khz_request() as u64, 0xaea2);
    }

    #[test]
    fn vm_type_and_command_numbers_are_upstreams() {
        // #define KVM_X86_SNP_VM 4 / #define KVM_X86_TDX_VM 5
        assert_eq!((KVM_X86_SNP_VM, KVM_X86_TDX_VM), (4, 5));
        // enum kvm_tdx_cmd_id counts from KVM_TDX_CAPABILITIES = 0.
        let ids = [
            cmd::KVM_TDX_CAPABILITIES,
            cmd::KVM_TDX_INIT_VM,
            cmd::KVM_TDX_INIT_VCPU,
            cmd::KVM_TDX_INIT_MEM_REGION,
            cmd::KVM_TDX_FINALIZE_VM,
            cmd::KVM_TDX_GET_CPUID,
        ];
        assert_eq!(ids, [0, 1, 2, 3, 4, 5]);
        assert_eq!(cmd::name(3), "KVM_TDX_INIT_MEM_REGION");
        assert_eq!(cmd::name(6), "unknown KVM_TDX command");
        assert_eq!((KVM_EXIT_TDX, KVM_SYSTEM_EVENT_TDX_FATAL), (40, 7));
    }

    #[test]
    fn kvm_tdx_cmd_layout() {
        // __u32 id; __u32 flags; __u64 data; __u64 hw_error;
        assert_eq!(size_of::<KvmTdxCmd>(), 24);
        assert_eq!(
            (
                offset_of!(KvmTdxCmd, id),
                offset_of!(KvmTdxCmd, flags),
                offset_of!(KvmTdxCmd, data),
                offset_of!(KvmTdxCmd, hw_error)
            ),
            (0, 4, 8, 16)
        );
    }

    #[test]
    fn kvm_cpuid2_and_entry_layout() {
        // struct kvm_cpuid2 { __u32 nent; __u32 padding; struct kvm_cpuid_entry2 entries[]; };
        // struct kvm_cpuid_entry2 { __u32 function, index, flags, eax, ebx, ecx, edx; __u32 padding[3]; };
        assert_eq!(size_of::<kvm_cpuid2>(), 8);
        assert_eq!(size_of::<KvmCpuid2Header>(), size_of::<kvm_cpuid2>());
        assert_eq!(
            (offset_of!(KvmCpuid2Header, nent), offset_of!(KvmCpuid2Header, padding)),
            (offset_of!(kvm_cpuid2, nent), offset_of!(kvm_cpuid2, padding))
        );
        assert_eq!(offset_of!(kvm_cpuid2, entries), 8);
        assert_eq!(size_of::<kvm_cpuid_entry2>(), 40);
        assert_eq!(align_of::<kvm_cpuid_entry2>(), 4);
        assert_eq!((offset_of!(kvm_cpuid_entry2, flags), offset_of!(kvm_cpuid_entry2, edx)), (8, 24));
    }

    #[test]
    fn kvm_tdx_capabilities_layout() {
        // 6 __u64, reserved[250] (2000 bytes), then struct kvm_cpuid2 at 2048.
        assert_eq!(size_of::<KvmTdxCapabilities>(), 2056);
        assert_eq!(
            (
                offset_of!(KvmTdxCapabilities, supported_attrs),
                offset_of!(KvmTdxCapabilities, supported_xfam),
                offset_of!(KvmTdxCapabilities, kernel_tdvmcallinfo_1_r11),
                offset_of!(KvmTdxCapabilities, user_tdvmcallinfo_1_r11),
                offset_of!(KvmTdxCapabilities, kernel_tdvmcallinfo_1_r12),
                offset_of!(KvmTdxCapabilities, user_tdvmcallinfo_1_r12),
                offset_of!(KvmTdxCapabilities, reserved),
                offset_of!(KvmTdxCapabilities, cpuid),
            ),
            (0, 8, 16, 24, 32, 40, 48, 2048)
        );
        // The entries KVM writes at user_caps->cpuid.entries: right after the struct.
        assert_eq!(offset_of!(KvmTdxCapabilitiesBuf, entries), 2056);
    }

    #[test]
    fn kvm_tdx_init_vm_layout() {
        // "The total space for TD_PARAMS before the CPUIDs is 256 bytes"; KVM's
        // BUILD_BUG_ON(sizeof(*init_vm) != 256 + sizeof_field(struct kvm_tdx_init_vm, cpuid)).
        assert_eq!(size_of::<KvmTdxInitVm>(), 256 + size_of::<kvm_cpuid2>());
        assert_eq!(
            (
                offset_of!(KvmTdxInitVm, attributes),
                offset_of!(KvmTdxInitVm, xfam),
                offset_of!(KvmTdxInitVm, mrconfigid),
                offset_of!(KvmTdxInitVm, mrowner),
                offset_of!(KvmTdxInitVm, mrownerconfig),
                offset_of!(KvmTdxInitVm, reserved),
                offset_of!(KvmTdxInitVm, cpuid),
            ),
            (0, 8, 16, 64, 112, 160, 256)
        );
        assert_eq!(offset_of!(KvmTdxInitVmBuf, entries), 264);
    }

    #[test]
    fn kvm_tdx_init_mem_region_layout() {
        assert_eq!(size_of::<KvmTdxInitMemRegion>(), 24);
        assert_eq!(
            (
                offset_of!(KvmTdxInitMemRegion, source_addr),
                offset_of!(KvmTdxInitMemRegion, gpa),
                offset_of!(KvmTdxInitMemRegion, nr_pages)
            ),
            (0, 8, 16)
        );
    }

    #[test]
    fn kvm_run_tdx_exit_layout() {
        // flags 0, nr 8, then the union at 16: ret 16, and
        // get_quote.gpa 24, .size 32; get_tdvmcall_info.leaf 24, r11 32, r12 40, r13 48,
        // r14 56; setup_event_notify.vector 24; unknown.data[0] 24 .. data[4] 56.
        assert_eq!(size_of::<KvmTdxExit>(), 64);
        assert_eq!(align_of::<KvmTdxExit>(), 8);
        assert_eq!((offset_of!(KvmTdxExit, flags), offset_of!(KvmTdxExit, nr), offset_of!(KvmTdxExit, u)), (0, 8, 16));
        assert_eq!(size_of::<KvmTdxExitArgs>(), 48);
        assert_eq!((offset_of!(TdxExitGetQuote, gpa), offset_of!(TdxExitGetQuote, size)), (8, 16));
        assert_eq!(
            (
                offset_of!(TdxExitGetTdVmCallInfo, leaf),
                offset_of!(TdxExitGetTdVmCallInfo, r11),
                offset_of!(TdxExitGetTdVmCallInfo, r14)
            ),
            (8, 16, 40)
        );
        assert_eq!(offset_of!(TdxExitSetupEventNotify, vector), 8);
        assert_eq!(offset_of!(TdxExitUnknown, data), 8);
        // The exit union of kvm_run: 256 bytes at offset 32, aligned for u64.
        assert_eq!(offset_of!(kvm_run, __bindgen_anon_1), 32);
        assert!(size_of::<KvmTdxExit>() <= 256);
    }

    #[test]
    fn status_and_attribute_names() {
        assert_eq!(tdx_status::name(0xC000_0100_0000_0005), Some("OPERAND_INVALID"));
        assert_eq!(tdx_status::name(0x8000_0203_0000_0000), Some("RND_NO_ENTROPY"));
        assert_eq!(tdx_status::name(0x1234_0000_0000_0000), None);
        assert_eq!(attributes::names(0x1000_0001), "DEBUG, SEPT_VE_DISABLE");
        assert_eq!(attributes::names(1 << 63 | 1 << 5), "bit 5, PERFMON");
        assert_eq!(attributes::names(0), "none");
    }
}
