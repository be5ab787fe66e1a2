//! The Intel TDX guest ABI cvmm's firmware and the VMM share: TDCALL leaves and their
//! completion status codes (TDX module ABI), and the TDVMCALL sub-functions and status
//! codes of the Guest-Hypervisor Communication Interface (GHCI 1.5).
//!
//! Plain `core` Rust with no dependencies: cvmm's `no_std` guest firmware includes this
//! file verbatim (`#[path]`).

/// The TDCALL instruction's bytes (`66 0f 01 cc`).
pub const TDCALL_BYTES: [u8; 4] = [0x66, 0x0f, 0x01, 0xcc];

// TDCALL leaves (RAX).
/// TDG.VP.VMCALL: a call to the host VMM (TDVMCALL).
pub const TDG_VP_VMCALL: u64 = 0;
/// TDG.VP.INFO: the TD's execution environment.
pub const TDG_VP_INFO: u64 = 1;
/// TDG.MR.RTMR.EXTEND: extend an RTMR.
pub const TDG_MR_RTMR_EXTEND: u64 = 2;
/// TDG.MR.REPORT: a TDREPORT_STRUCT.
pub const TDG_MR_REPORT: u64 = 4;
/// TDG.MEM.PAGE.ACCEPT: accept a pending private page.
pub const TDG_MEM_PAGE_ACCEPT: u64 = 6;

// TDCALL completion status (RAX).
/// Success.
pub const TDX_SUCCESS: u64 = 0;
/// An operand is invalid (class "operand", details in the low bits).
pub const TDX_OPERAND_INVALID: u64 = 0xc000_0100_0000_0000;
/// ACCEPT: the page is already accepted (a warning: nothing changed).
pub const TDX_PAGE_ALREADY_ACCEPTED: u64 = 0x0000_0b0a_0000_0000;
/// ACCEPT: the page's mapping size is not the requested level.
pub const TDX_PAGE_SIZE_MISMATCH: u64 = 0xc000_0b0b_0000_0001;

/// ACCEPT level (RCX[2:0]): 4 KiB.
pub const ACCEPT_4K: u64 = 0;
/// ACCEPT level: 2 MiB.
pub const ACCEPT_2M: u64 = 1;

// TDVMCALL (TDG.VP.VMCALL with R10 = 0): R11 = sub-function, R12.. = arguments,
// R10 = status on return, R11 = output.
/// R10 for the GHCI's standard TDVMCALLs.
pub const TDVMCALL_STANDARD: u64 = 0;
/// GetTdVmCallInfo.
pub const TDVMCALL_GET_TD_VM_CALL_INFO: u64 = 0x10000;
/// MapGPA: R12 = GPA (shared bit selects the direction), R13 = size.
pub const TDVMCALL_MAP_GPA: u64 = 0x10001;
/// GetQuote: R12 = shared GPA of the buffer, R13 = its size.
pub const TDVMCALL_GET_QUOTE: u64 = 0x10002;
/// ReportFatalError: R12 = error code.
pub const TDVMCALL_REPORT_FATAL_ERROR: u64 = 0x10003;
/// SetupEventNotifyInterrupt: R12 = vector.
pub const TDVMCALL_SETUP_EVENT_NOTIFY: u64 = 0x10004;
/// Instruction exits (the VMX basic exit reasons): CPUID.
pub const EXIT_REASON_CPUID: u64 = 10;
/// HLT.
pub const EXIT_REASON_HLT: u64 = 12;
/// I/O: R12 = size, R13 = direction (1 out), R14 = port, R15 = value.
pub const EXIT_REASON_IO: u64 = 30;
/// RDMSR: R12 = index.
pub const EXIT_REASON_RDMSR: u64 = 31;
/// WRMSR: R12 = index, R13 = value.
pub const EXIT_REASON_WRMSR: u64 = 32;
/// EPT violation (MMIO): R12 = size, R13 = direction (1 write), R14 = GPA, R15 = value.
pub const EXIT_REASON_EPT_VIOLATION: u64 = 48;

// TDVMCALL status (R10).
/// Success.
pub const TDVMCALL_SUCCESS: u64 = 0;
/// Retry: MapGPA converted part of the range; R11 = where to resume.
pub const TDVMCALL_RETRY: u64 = 1;
/// An operand is invalid.
pub const TDVMCALL_INVALID_OPERAND: u64 = 0x8000_0000_0000_0000;
/// MapGPA: the GPA is in use.
pub const TDVMCALL_GPA_INUSE: u64 = 0x8000_0000_0000_0001;
/// An operand is not aligned.
pub const TDVMCALL_ALIGN_ERROR: u64 = 0x8000_0000_0000_0002;

// GetQuote buffer: version u64 (1), status u64, input length u32, output length u32, data.
/// Size of the GetQuote buffer header.
pub const QUOTE_HEADER_SIZE: usize = 24;
/// GetQuote status: done.
pub const GET_QUOTE_SUCCESS: u64 = 0;
/// GetQuote status: in flight (set by the guest before the call).
pub const GET_QUOTE_IN_FLIGHT: u64 = 0xffff_ffff_ffff_ffff;
/// GetQuote status: error.
pub const GET_QUOTE_ERROR: u64 = 0x8000_0000_0000_0000;
/// GetQuote status: the quoting service is unavailable.
pub const GET_QUOTE_SERVICE_UNAVAILABLE: u64 = 0x8000_0000_0000_0001;

/// The shared bit of a TD with a 48-bit guest physical address width (GPAW 48): shared
/// GPAs alias private ones with this bit set.
pub const SHARED_BIT_GPAW48: u64 = 1 << 47;
/// Size of a TDREPORT_STRUCT.
pub const TDREPORT_SIZE: usize = 1024;
