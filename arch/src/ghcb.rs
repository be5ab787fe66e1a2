//! The SEV-ES/SEV-SNP guest-hypervisor communication block (GHCB) ABI: the GHCB MSR
//! protocol, the GHCB page layout, the exit codes and error codes, and the page-state
//! change structure (AMD GHCB specification #56421, version 2), plus the doorbell of
//! cvmm's emulated SNP platform.
//!
//! Plain `core` Rust with no dependencies: cvmm's `no_std` guest firmware includes this
//! file verbatim (`#[path]`), so the guest and the VMM's GHCB handler read one
//! definition of every offset and code.

/// The GHCB MSR (SEV-ES GHCB address / MSR protocol value).
pub const MSR_GHCB: u32 = 0xc001_0130;
/// SEV_STATUS: which SEV features are active in this guest (read-only).
pub const MSR_SEV_STATUS: u32 = 0xc001_0131;
/// SEV_STATUS bits: SEV, SEV-ES, SEV-SNP enabled.
pub const SEV_STATUS_SEV: u64 = 1 << 0;
/// SEV-ES enabled.
pub const SEV_STATUS_ES: u64 = 1 << 1;
/// SEV-SNP enabled.
pub const SEV_STATUS_SNP: u64 = 1 << 2;

/// The GHCB protocol version cvmm speaks (minimum and maximum).
pub const GHCB_PROTOCOL_VERSION: u16 = 2;

/// The emulated SNP platform's VMGEXIT doorbell: on this project's development hosts
/// the `VMGEXIT` instruction never leaves KVM (see docs/snp.md), so a guest that runs
/// on cvmm's emulated platform writes any byte to this I/O port instead. Everything
/// else about the call (the GHCB MSR value, the GHCB page) is as on hardware.
pub const EMULATED_VMGEXIT_PORT: u16 = 0x0c5e;

// GHCB MSR protocol: GHCBInfo in bits 11:0, GHCBData in bits 63:12.
/// Mask of GHCBInfo.
pub const MSR_INFO_MASK: u64 = 0xfff;
/// SEV information response: [63:48] max version, [47:32] min version, [31:24] C-bit.
pub const MSR_SEV_INFO_RESP: u64 = 0x001;
/// SEV information request.
pub const MSR_SEV_INFO_REQ: u64 = 0x002;
/// CPUID request: [63:32] function, [31:30] register (0 EAX, 1 EBX, 2 ECX, 3 EDX).
pub const MSR_CPUID_REQ: u64 = 0x004;
/// CPUID response: [63:32] the register's value.
pub const MSR_CPUID_RESP: u64 = 0x005;
/// AP reset hold request.
pub const MSR_AP_RESET_HOLD_REQ: u64 = 0x006;
/// AP reset hold response.
pub const MSR_AP_RESET_HOLD_RESP: u64 = 0x007;
/// Preferred GHCB GPA request.
pub const MSR_PREF_GPA_REQ: u64 = 0x010;
/// Preferred GHCB GPA response.
pub const MSR_PREF_GPA_RESP: u64 = 0x011;
/// GHCB GPA registration request: [63:12] the GHCB's guest frame number.
pub const MSR_REG_GPA_REQ: u64 = 0x012;
/// GHCB GPA registration response: [63:12] the registered GFN, or all ones on failure.
pub const MSR_REG_GPA_RESP: u64 = 0x013;
/// SNP page state change request: [51:12] GFN, [55:52] operation.
pub const MSR_PSC_REQ: u64 = 0x014;
/// SNP page state change response: [63:32] error code (0 = success).
pub const MSR_PSC_RESP: u64 = 0x015;
/// Hypervisor feature support request.
pub const MSR_HV_FT_REQ: u64 = 0x080;
/// Hypervisor feature support response: [63:12] the feature bitmap.
pub const MSR_HV_FT_RESP: u64 = 0x081;
/// Termination request: [15:12] reason set, [23:16] reason code.
pub const MSR_TERM_REQ: u64 = 0x100;

/// Page state change operation: make the page private.
pub const PSC_OP_PRIVATE: u64 = 1;
/// Page state change operation: make the page shared.
pub const PSC_OP_SHARED: u64 = 2;

/// Hypervisor feature: SEV-SNP.
pub const HV_FT_SNP: u64 = 1 << 0;
/// Hypervisor feature: SEV-SNP AP creation.
pub const HV_FT_SNP_AP_CREATION: u64 = 1 << 1;

/// Termination reason set 0: general (GHCB specification).
pub const TERM_SET_GENERAL: u64 = 0;
/// Set 0, code 0: general termination request.
pub const TERM_GENERAL_REQUEST: u64 = 0;
/// Set 0, code 1: SEV-ES / GHCB protocol range is not supported.
pub const TERM_UNSUPPORTED_PROTOCOL: u64 = 1;
/// Set 0, code 2: SEV-SNP features not supported.
pub const TERM_SNP_UNSUPPORTED: u64 = 2;

// Exit codes (SW_EXITCODE).
/// CPUID (SVM intercept code).
pub const EXIT_CPUID: u64 = 0x72;
/// IOIO (SVM intercept code).
pub const EXIT_IOIO: u64 = 0x7b;
/// MSR (SVM intercept code).
pub const EXIT_MSR: u64 = 0x7c;
/// MMIO read.
pub const EXIT_MMIO_READ: u64 = 0x8000_0001;
/// MMIO write.
pub const EXIT_MMIO_WRITE: u64 = 0x8000_0002;
/// SNP page state change.
pub const EXIT_PSC: u64 = 0x8000_0010;
/// SNP guest request.
pub const EXIT_GUEST_REQUEST: u64 = 0x8000_0011;
/// SNP extended guest request.
pub const EXIT_EXT_GUEST_REQUEST: u64 = 0x8000_0012;
/// SNP AP creation.
pub const EXIT_AP_CREATION: u64 = 0x8000_0013;
/// Termination request.
pub const EXIT_TERM_REQUEST: u64 = 0x8000_00fe;
/// Hypervisor feature support.
pub const EXIT_HV_FEATURES: u64 = 0x8000_fffd;

/// AP creation request (SW_EXITINFO1[31:0]): create the AP when it receives INIT.
pub const AP_CREATE_ON_INIT: u64 = 1;
/// AP creation request: create (start) the AP now.
pub const AP_CREATE: u64 = 2;
/// AP creation request: destroy the AP.
pub const AP_DESTROY: u64 = 3;

// GHCB error reporting: SW_EXITINFO1 = 1 and SW_EXITINFO2 = one of these.
/// SW_EXITINFO1 value of a failed request.
pub const EXITINFO1_ERROR: u64 = 1;
/// The GHCB GPA is not the registered one.
pub const ERR_NOT_REGISTERED: u64 = 1;
/// GHCB usage is not the standard format.
pub const ERR_INVALID_USAGE: u64 = 2;
/// SW_SCRATCH does not describe a usable area.
pub const ERR_INVALID_SCRATCH_AREA: u64 = 3;
/// A required field is not marked valid.
pub const ERR_MISSING_INPUT: u64 = 4;
/// A field's value is invalid.
pub const ERR_INVALID_INPUT: u64 = 5;
/// The exit code is not supported.
pub const ERR_INVALID_EVENT: u64 = 6;

/// Guest request: the certificate buffer is too small (SW_EXITINFO2 upper 32 bits);
/// RBX returns the number of pages needed.
pub const GUEST_REQ_ERR_INVALID_LEN: u64 = 1 << 32;
/// Guest request: the hypervisor is busy, retry.
pub const GUEST_REQ_ERR_BUSY: u64 = 2 << 32;

// GHCB page layout (the save area fields cvmm uses; offsets into the 4 KiB page).
/// CPL (u8).
pub const OFF_CPL: usize = 0x0cb;
/// XSS.
pub const OFF_XSS: usize = 0x140;
/// RAX.
pub const OFF_RAX: usize = 0x1f8;
/// RCX.
pub const OFF_RCX: usize = 0x308;
/// RDX.
pub const OFF_RDX: usize = 0x310;
/// RBX.
pub const OFF_RBX: usize = 0x318;
/// SW_EXITCODE.
pub const OFF_SW_EXIT_CODE: usize = 0x390;
/// SW_EXITINFO1.
pub const OFF_SW_EXIT_INFO_1: usize = 0x398;
/// SW_EXITINFO2.
pub const OFF_SW_EXIT_INFO_2: usize = 0x3a0;
/// SW_SCRATCH.
pub const OFF_SW_SCRATCH: usize = 0x3a8;
/// XCR0.
pub const OFF_XCR0: usize = 0x3e8;
/// The valid bitmap (16 bytes): bit N marks the quadword at offset 8*N valid.
pub const OFF_VALID_BITMAP: usize = 0x3f0;
/// The shared buffer.
pub const OFF_SHARED_BUFFER: usize = 0x800;
/// Size of the shared buffer.
pub const SHARED_BUFFER_SIZE: usize = 0x7f0;
/// Protocol version (u16).
pub const OFF_PROTOCOL_VERSION: usize = 0xffa;
/// GHCB usage (u32): 0 is the standard format.
pub const OFF_GHCB_USAGE: usize = 0xffc;
/// Size of the GHCB page.
pub const GHCB_SIZE: usize = 0x1000;

/// The bit in the valid bitmap for the field at `offset`.
pub const fn valid_bit(offset: usize) -> usize {
    offset / 8
}

// IOIO SW_EXITINFO1 (AMD APM vol. 2, 15.10.2).
/// IN (otherwise OUT).
pub const IOIO_TYPE_IN: u64 = 1 << 0;
/// String operation.
pub const IOIO_STR: u64 = 1 << 2;
/// REP prefix.
pub const IOIO_REP: u64 = 1 << 3;
/// 8-bit operand.
pub const IOIO_SZ8: u64 = 1 << 4;
/// 16-bit operand.
pub const IOIO_SZ16: u64 = 1 << 5;
/// 32-bit operand.
pub const IOIO_SZ32: u64 = 1 << 6;
/// Port number position (bits 31:16).
pub const IOIO_PORT_SHIFT: u64 = 16;

// Page state change structure (in the scratch area): a header (cur_entry u16,
// end_entry u16, reserved u32) and up to PSC_MAX_ENTRIES 8-byte entries:
// [11:0] cur_page, [51:12] GFN, [55:52] operation, [56] page size (1 = 2 MiB).
/// Size of the PSC header.
pub const PSC_HEADER_SIZE: usize = 8;
/// Most entries one PSC structure holds.
pub const PSC_MAX_ENTRIES: usize = 253;
/// PSC entry: 2 MiB page size.
pub const PSC_ENTRY_2M: u64 = 1 << 56;
/// PSC error: the header's indexes are invalid.
pub const PSC_ERR_INVALID_HDR: u64 = (1 << 32) | 1;
/// PSC error: an entry is invalid.
pub const PSC_ERR_INVALID_ENTRY: u64 = (1 << 32) | 2;

/// Builds a PSC entry for `gfn` with `op` ([`PSC_OP_PRIVATE`] or [`PSC_OP_SHARED`]).
pub const fn psc_entry(gfn: u64, op: u64, huge: bool) -> u64 {
    ((gfn & 0xff_ffff_ffff) << 12) | ((op & 0xf) << 52) | if huge { PSC_ENTRY_2M } else { 0 }
}

// PVALIDATE return codes (RAX).
/// Success.
pub const PVALIDATE_SUCCESS: u64 = 0;
/// Invalid input (unaligned address, bad page size).
pub const PVALIDATE_FAIL_INPUT: u64 = 1;
/// The RMP entry's page size does not match the request.
pub const PVALIDATE_FAIL_SIZEMISMATCH: u64 = 6;

/// RMPADJUST attribute: the page becomes a VMSA (RDX bit 16).
pub const RMPADJUST_VMSA: u64 = 1 << 16;

/// VMSA (SEV-ES save area) field offsets a guest fills to create an AP (AMD APM vol. 2
/// table B-4; Linux `struct sev_es_save_area`). Segments are 16 bytes: selector (u16),
/// attributes (u16, VMCB format), limit (u32), base (u64).
pub mod vmsa {
    /// ES.
    pub const ES: usize = 0x000;
    /// CS.
    pub const CS: usize = 0x010;
    /// SS.
    pub const SS: usize = 0x020;
    /// DS.
    pub const DS: usize = 0x030;
    /// FS.
    pub const FS: usize = 0x040;
    /// GS.
    pub const GS: usize = 0x050;
    /// GDTR.
    pub const GDTR: usize = 0x060;
    /// LDTR.
    pub const LDTR: usize = 0x070;
    /// IDTR.
    pub const IDTR: usize = 0x080;
    /// TR.
    pub const TR: usize = 0x090;
    /// EFER.
    pub const EFER: usize = 0x0d0;
    /// XSS.
    pub const XSS: usize = 0x140;
    /// CR4.
    pub const CR4: usize = 0x148;
    /// CR3.
    pub const CR3: usize = 0x150;
    /// CR0.
    pub const CR0: usize = 0x158;
    /// DR7.
    pub const DR7: usize = 0x160;
    /// DR6.
    pub const DR6: usize = 0x168;
    /// RFLAGS.
    pub const RFLAGS: usize = 0x170;
    /// RIP.
    pub const RIP: usize = 0x178;
    /// RSP.
    pub const RSP: usize = 0x1d8;
    /// RAX.
    pub const RAX: usize = 0x1f8;
    /// CR2.
    pub const CR2: usize = 0x240;
    /// Guest PAT.
    pub const G_PAT: usize = 0x268;
    /// RCX.
    pub const RCX: usize = 0x308;
    /// RDX.
    pub const RDX: usize = 0x310;
    /// RBX.
    pub const RBX: usize = 0x318;
    /// RBP.
    pub const RBP: usize = 0x328;
    /// RSI.
    pub const RSI: usize = 0x330;
    /// RDI.
    pub const RDI: usize = 0x338;
    /// R8; R9-R15 follow, 8 bytes apart.
    pub const R8: usize = 0x340;
    /// SEV_FEATURES.
    pub const SEV_FEATURES: usize = 0x3b0;
    /// XCR0.
    pub const XCR0: usize = 0x3e8;
    /// MXCSR (u32).
    pub const MXCSR: usize = 0x408;
    /// x87 FPU control word (u16).
    pub const X87_FCW: usize = 0x410;
}
