//! cvmm's SEV-SNP guest firmware and platform layer, shared by every cvmm guest
//! program (included by `rt.rs`).
//!
//! # Boot
//! A confidential launch starts the guest at its 32-bit entry (`_start32`, at
//! `abi::ENTRY32_OFFSET` from the ELF entry) in protected mode with paging off, `ESI`
//! = boot info. With paging off every access of an SNP guest is private. The stub
//! finds the encryption bit (C-bit) in the CPUID page (leaf 0x8000_001F, EBX[5:0]),
//! builds identity page tables for the first 4 GiB with 2 MiB pages, the C-bit set on
//! private memory and clear on the bounce region (2-8 MiB, shared with the host) and on
//! the MMIO hole (3-4 GiB), enters long mode and calls [`snp_start`].
//!
//! [`snp_start`] then, in this order: checks the GHCB protocol range and the
//! hypervisor's SNP features (GHCB MSR protocol), validates all guest RAM it hands
//! over with PVALIDATE (2 MiB pages, 4 KiB where the RMP says the page is split),
//! makes the GHCB page shared (MSR-protocol page-state change) and registers it,
//! makes the rest of the bounce region shared (GHCB-page PSC), and calls the guest
//! program's `guest_main` with the remaining bounce region in its boot info.
//!
//! # Platform interface
//! Every instruction that differs between hardware and cvmm's emulated platform is
//! in one place: [`vmgexit`] (`rep vmmcall` on hardware; a write to
//! `ghcb::EMULATED_VMGEXIT_PORT` on the emulated platform, chosen by the measured boot
//! info flag `FLAG_EMULATED_PLATFORM`). PVALIDATE, RDMSR/WRMSR of the GHCB MSR and
//! everything else are the real instructions on both.
//!
//! Guest code here is emulated at ~2 M instructions/s on our hosts: every operation is
//! a handful of instructions, and memory is validated 2 MiB at a time.
#![allow(dead_code)]

use core::arch::{asm, global_asm};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

#[path = "../../arch/src/ghcb.rs"]
pub mod ghcb;

use crate::abi::{BootInfo, FLAG_EMULATED_PLATFORM, FLAG_SNP};
use ghcb::*;

/// Where the stub builds the page tables: PML4, PDPT, then four page directories.
const PT_BASE: u64 = 0x9000;
/// Bytes of the bounce region the firmware keeps for itself: the GHCB and the guest
/// request pages. The guest program gets the rest.
pub const FIRMWARE_SHARED: u64 = 0x10000;
/// Offsets in that area.
const GHCB_OFFSET: u64 = 0;
const REQ_PAGE_OFFSET: u64 = 0x1000;
const RESP_PAGE_OFFSET: u64 = 0x2000;
const CERTS_OFFSET: u64 = 0x4000;
/// Pages for the certificate table of an extended guest request.
pub const CERTS_PAGES: u64 = 8;

const TWO_MIB: u64 = 0x20_0000;
const FOUR_KIB: u64 = 0x1000;
const MMIO_HOLE_START: u64 = 0xc000_0000;

global_asm!(
    ".section .text.entry32, \"ax\"",
    // The marker cvmm checks before it launches a program at its 32-bit entry.
    ".ascii \"CVMM-E32\"",
    ".code32",
    ".global _start32",
    "_start32:",
    // TDX: every vCPU starts here at once (via the reset vector), RCX = TD HOB (non-zero),
    // ESI = vCPU index. SEV-SNP: only the BSP, RCX = 0, ESI = boot info.
    "    test ecx, ecx",
    "    jz 20f",
    "    test esi, esi",
    "    jnz 30f",
    "    mov esi, 0x5000",
    "20: mov ebx, esi",
    // Masks for the high dword of page-table entries: EBP private, EDI shared.
    // TDX: shared GPAs have bit 47 set. SNP: private ones have the C-bit (CPUID page).
    "    xor ebp, ebp",
    "    mov edi, 0x8000",
    "    test dword ptr [esi + 0x14], 8",
    "    jnz 3f",
    "    xor edi, edi",
    "    mov eax, [esi + 0x140]",
    "    test eax, eax",
    "    jz 3f",
    "    mov ecx, [eax]",
    "    cmp ecx, 64",
    "    ja 3f",
    "    lea edx, [eax + 16]",
    "1:  test ecx, ecx",
    "    jz 3f",
    "    cmp dword ptr [edx], 0x8000001f",
    "    je 2f",
    "    add edx, 48",
    "    dec ecx",
    "    jmp 1b",
    "2:  mov ecx, [edx + 28]",
    "    and ecx, 0x3f",
    "    sub ecx, 32",
    "    jb 3f",
    "    mov ebp, 1",
    "    shl ebp, cl",
    // PML4[0] -> PDPT, PDPT[0..4] -> PDs, PD entries: 2 MiB pages.
    "3:  mov dword ptr [0x9000], 0xa003",
    "    mov dword ptr [0x9004], ebp",
    "    xor ecx, ecx",
    "4:  mov eax, ecx",
    "    shl eax, 12",
    "    add eax, 0xb003",
    "    mov [ecx * 8 + 0xa000], eax",
    "    mov [ecx * 8 + 0xa004], ebp",
    "    inc ecx",
    "    cmp ecx, 4",
    "    jne 4b",
    "    xor ecx, ecx",
    "5:  mov eax, ecx",
    "    shl eax, 21",
    "    or eax, 0x83",
    "    mov [ecx * 8 + 0xb000], eax",
    "    mov edx, ebp",
    "    cmp ecx, 2",
    "    jb 6f",
    "    cmp ecx, 4",
    "    jb 7f",
    "    cmp ecx, 1536",
    "    jb 6f",
    "7:  mov edx, edi",
    "6:  mov [ecx * 8 + 0xb004], edx",
    "    inc ecx",
    "    cmp ecx, 2048",
    "    jne 5b",
    // The page tables are ready: TDX application processors may follow.
    "    mov dword ptr [tdx_ap_go], 1",
    "    jmp 40f",
    // TDX application processors: wait (paging off) until the BSP built the tables.
    "30: xor ebx, ebx",
    "31: pause",
    "    cmp dword ptr [tdx_ap_go], 0",
    "    je 31b",
    // Long mode on the shared page tables; EBX = boot info (BSP) or 0 (AP, ESI = index).
    "40: mov eax, 0x9000",
    "    mov cr3, eax",
    "    mov eax, cr4",
    "    or eax, 0x20",
    "    mov cr4, eax",
    "    mov ecx, 0xc0000080",
    "    rdmsr",
    "    or eax, 0x100",
    "    wrmsr",
    "    mov eax, cr0",
    "    or eax, 0x80000001",
    "    mov cr0, eax",
    "    lgdt [gdtr64]",
    "    mov esp, esi",
    "    inc esp",
    "    shl esp, 12",
    "    add esp, 0x180000",
    "    test ebx, ebx",
    "    jz 41f",
    "    mov esp, offset __stack_top",
    "41: push 0x8",
    "    .byte 0x68",
    "    .long snp_entry64",
    "    retf",
    ".code64",
    "snp_entry64:",
    "    mov eax, 0x10",
    "    mov ds, eax",
    "    mov es, eax",
    "    mov ss, eax",
    "    xor eax, eax",
    "    mov fs, eax",
    "    mov gs, eax",
    "    xor ebp, ebp",
    "    test ebx, ebx",
    "    jz 42f",
    "    lea rsp, [rip + __stack_top]",
    "    mov edi, ebx",
    "    call snp_start",
    "9:  hlt",
    "    jmp 9b",
    "42: mov edi, esi",
    "    call tdx_ap_main",
    "43: pause",
    "    jmp 43b",
    // Application processors start here, in long mode, from the VMSA the BSP built:
    // RSP is their stack, RDI their index.
    ".code64",
    ".global snp_ap_entry",
    "snp_ap_entry:",
    "    call snp_ap_main",
    "10: cli",
    "    hlt",
    "    jmp 10b",
    // The 64-bit GDT (null, code 0x08, data 0x10) and its 32-bit LGDT operand.
    ".section .rodata.gdt64, \"a\"",
    ".balign 8",
    "gdt64: .quad 0, 0x00af9a000000ffff, 0x00cf92000000ffff",
    "gdtr64: .word 23",
    "    .long gdt64",
    ".text",
);

/// Set by the BSP's 32-bit stub once the page tables exist: TDX APs enter long mode.
#[no_mangle]
#[allow(non_upper_case_globals)]
static mut tdx_ap_go: u32 = 0;

/// GPA of this vCPU's GHCB (0: not an SNP guest, use the plain instructions).
static GHCB_GPA: AtomicU64 = AtomicU64::new(0);
/// Whether the platform is cvmm's emulated one (doorbell port instead of VMGEXIT).
static EMULATED: AtomicBool = AtomicBool::new(false);
/// Whether the GHCB MSR currently holds the GHCB's GPA (an MSR-protocol call
/// overwrites it).
static GHCB_MSR_SET: AtomicBool = AtomicBool::new(false);
/// Application processors: their VMSAs and stacks (1-2 MiB, validated by the BSP
/// before it starts them).
const AP_VMSA_BASE: u64 = 0x10_0000;
const AP_STACK_BASE: u64 = 0x18_0000;
/// The most vCPUs cvmm's firmware starts.
pub const MAX_VCPUS: u64 = 128;
/// Set by each AP when its share of memory is validated (1) or failed (2).
pub static AP_DONE: [core::sync::atomic::AtomicU8; MAX_VCPUS as usize] =
    [const { core::sync::atomic::AtomicU8::new(0) }; MAX_VCPUS as usize];
/// What the APs validate: [2 MiB, TOP) without the bounce region, 2 MiB page number
/// `n` by vCPU `n % VCPUS`.
static VALIDATE_TOP: AtomicU64 = AtomicU64::new(0);
static BOUNCE: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];
static VCPUS: AtomicU64 = AtomicU64::new(1);
/// The guest request message sequence number last used.
static SEQNO: AtomicU64 = AtomicU64::new(0);

/// Whether this guest runs under SEV-SNP with a working GHCB.
pub fn active() -> bool {
    GHCB_GPA.load(Ordering::Relaxed) != 0
}

/// The shared area the firmware keeps for itself (GHCB first), or 0.
pub fn shared_area() -> u64 {
    GHCB_GPA.load(Ordering::Relaxed)
}

fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: reads an MSR this guest is allowed to read (the GHCB MSR).
    unsafe { asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags)) };
    u64::from(lo) | (u64::from(hi) << 32)
}

fn wrmsr(msr: u32, v: u64) {
    // SAFETY: writes the GHCB MSR, which only carries the protocol value.
    unsafe {
        asm!("wrmsr", in("ecx") msr, in("eax") v as u32, in("edx") (v >> 32) as u32, options(nomem, nostack, preserves_flags))
    };
}

/// Exits to the hypervisor: VMGEXIT on hardware, the doorbell port when emulated.
pub fn vmgexit() {
    if EMULATED.load(Ordering::Relaxed) {
        // SAFETY: a port write; the emulated platform handles it as VMGEXIT.
        unsafe { asm!("out dx, al", in("dx") EMULATED_VMGEXIT_PORT, in("al") 0u8, options(nostack, preserves_flags)) };
    } else {
        // SAFETY: VMGEXIT (rep vmmcall) hands the GHCB to the hypervisor and returns.
        unsafe { asm!(".byte 0xf3, 0x0f, 0x01, 0xd9", options(nostack)) };
    }
}

/// One GHCB MSR protocol call: writes `request`, exits, returns the response.
pub fn msr_call(request: u64) -> u64 {
    GHCB_MSR_SET.store(false, Ordering::Relaxed);
    wrmsr(MSR_GHCB, request);
    vmgexit();
    rdmsr(MSR_GHCB)
}

/// Asks the hypervisor to end the guest with `reason` in reason set 0; never returns.
pub fn terminate(code: u64) -> ! {
    loop {
        msr_call(MSR_TERM_REQ | (TERM_SET_GENERAL << 12) | ((code & 0xff) << 16));
        // SAFETY: parks the vCPU if the hypervisor returns.
        unsafe { asm!("cli; hlt", options(nomem, nostack)) };
    }
}

/// PVALIDATE of the page at virtual address `va` (`huge`: 2 MiB). Returns the return
/// code and whether the validation state was left unchanged (CF).
pub fn pvalidate(va: u64, huge: bool, validate: bool) -> (u64, bool) {
    let rc: u64;
    let unchanged: u8;
    // SAFETY: PVALIDATE changes only the RMP's validated bit of a page of this guest.
    unsafe {
        asm!(
            ".byte 0xf2, 0x0f, 0x01, 0xff",
            "setc {cf}",
            cf = out(reg_byte) unchanged,
            inout("rax") va => rc,
            in("rcx") u64::from(huge),
            in("rdx") u64::from(validate),
            options(nostack)
        )
    };
    (rc, unchanged != 0)
}

/// Validates `[start, end)` (2 MiB aligned) 2 MiB at a time, 4 KiB where the RMP has
/// the region split. Returns false on any other failure.
fn validate_range(start: u64, end: u64) -> bool {
    validate_strided(start, end, 0, 1)
}

/// Validates the 2 MiB pages `n` of `[start, end)` with `n % stride == which`.
fn validate_strided(start: u64, end: u64, which: u64, stride: u64) -> bool {
    if crate::rt::tdx::is_tdx() {
        return crate::rt::tdx::accept_strided(start, end, which, stride);
    }
    let mut at = start;
    while at < end {
        if (at / TWO_MIB) % stride != which {
            at += TWO_MIB;
            continue;
        }
        let (rc, _) = pvalidate(at, true, true);
        match rc {
            PVALIDATE_SUCCESS => {}
            PVALIDATE_FAIL_SIZEMISMATCH => {
                let mut page = at;
                while page < at + TWO_MIB {
                    // Already validated pages (the launch's own) answer "unchanged".
                    if pvalidate(page, false, true).0 != PVALIDATE_SUCCESS {
                        return false;
                    }
                    page += FOUR_KIB;
                }
            }
            _ => return false,
        }
        at += TWO_MIB;
    }
    true
}

pub fn ghcb_write<T: Copy>(off: usize, v: T) {
    // SAFETY: the GHCB is a shared page this vCPU owns; `off` is a field offset.
    unsafe { core::ptr::write_volatile((GHCB_GPA.load(Ordering::Relaxed) + off as u64) as *mut T, v) }
}

pub fn ghcb_read<T: Copy>(off: usize) -> T {
    // SAFETY: as for ghcb_write; each field is read once.
    unsafe { core::ptr::read_volatile((GHCB_GPA.load(Ordering::Relaxed) + off as u64) as *const T) }
}

/// Sets a save-area field and marks it valid.
pub fn ghcb_set(off: usize, v: u64) {
    ghcb_write::<u64>(off, v);
    let bit = valid_bit(off);
    let word = OFF_VALID_BITMAP + (bit / 64) * 8;
    let old: u64 = ghcb_read(word);
    ghcb_write::<u64>(word, old | (1 << (bit % 64)));
}

/// One GHCB page protocol call. Returns SW_EXITINFO2, or the error the hypervisor
/// reported in it.
pub fn ghcb_call(code: u64, info1: u64, info2: u64) -> Result<u64, u64> {
    ghcb_write::<u64>(OFF_VALID_BITMAP, 0);
    ghcb_write::<u64>(OFF_VALID_BITMAP + 8, 0);
    ghcb_set(OFF_SW_EXIT_CODE, code);
    ghcb_set(OFF_SW_EXIT_INFO_1, info1);
    ghcb_set(OFF_SW_EXIT_INFO_2, info2);
    ghcb_call_prepared()
}

/// Completes a call whose fields are already set (after [`ghcb_call`]'s prologue).
pub fn ghcb_call_prepared() -> Result<u64, u64> {
    ghcb_write::<u16>(OFF_PROTOCOL_VERSION, GHCB_PROTOCOL_VERSION);
    ghcb_write::<u32>(OFF_GHCB_USAGE, 0);
    if !GHCB_MSR_SET.load(Ordering::Relaxed) {
        wrmsr(MSR_GHCB, GHCB_GPA.load(Ordering::Relaxed));
        GHCB_MSR_SET.store(true, Ordering::Relaxed);
    }
    vmgexit();
    let info1: u64 = ghcb_read(OFF_SW_EXIT_INFO_1);
    let info2: u64 = ghcb_read(OFF_SW_EXIT_INFO_2);
    if info1 & 0xffff_ffff == EXITINFO1_ERROR {
        return Err(info2);
    }
    Ok(info2)
}

/// Starts a call with extra fields: clears the valid bitmap and sets the exit fields;
/// the caller sets more with [`ghcb_set`] and finishes with [`ghcb_call_prepared`].
pub fn ghcb_begin(code: u64, info1: u64, info2: u64) {
    ghcb_write::<u64>(OFF_VALID_BITMAP, 0);
    ghcb_write::<u64>(OFF_VALID_BITMAP + 8, 0);
    ghcb_set(OFF_SW_EXIT_CODE, code);
    ghcb_set(OFF_SW_EXIT_INFO_1, info1);
    ghcb_set(OFF_SW_EXIT_INFO_2, info2);
}

/// Port output through the GHCB (IOIO).
pub fn outb(port: u16, value: u8) {
    let info1 = (u64::from(port) << IOIO_PORT_SHIFT) | IOIO_SZ8;
    ghcb_begin(EXIT_IOIO, info1, 0);
    ghcb_set(OFF_RAX, u64::from(value));
    if ghcb_call_prepared().is_err() {
        terminate(TERM_GENERAL_REQUEST);
    }
}

/// Port input through the GHCB (IOIO).
pub fn inb(port: u16) -> u8 {
    let info1 = (u64::from(port) << IOIO_PORT_SHIFT) | IOIO_SZ8 | IOIO_TYPE_IN;
    ghcb_begin(EXIT_IOIO, info1, 0);
    ghcb_set(OFF_RAX, 0);
    if ghcb_call_prepared().is_err() {
        terminate(TERM_GENERAL_REQUEST);
    }
    ghcb_read::<u64>(OFF_RAX) as u8
}

/// A 32-bit MMIO read through the GHCB, with the shared buffer as scratch.
pub fn mmio_read32(gpa: u64) -> u32 {
    let scratch = GHCB_GPA.load(Ordering::Relaxed) + OFF_SHARED_BUFFER as u64;
    ghcb_begin(EXIT_MMIO_READ, gpa, 4);
    ghcb_set(OFF_SW_SCRATCH, scratch);
    if ghcb_call_prepared().is_err() {
        terminate(TERM_GENERAL_REQUEST);
    }
    ghcb_read::<u32>(OFF_SHARED_BUFFER)
}

/// A 32-bit MMIO write through the GHCB.
pub fn mmio_write32(gpa: u64, v: u32) {
    let scratch = GHCB_GPA.load(Ordering::Relaxed) + OFF_SHARED_BUFFER as u64;
    ghcb_write::<u32>(OFF_SHARED_BUFFER, v);
    ghcb_begin(EXIT_MMIO_WRITE, gpa, 4);
    ghcb_set(OFF_SW_SCRATCH, scratch);
    if ghcb_call_prepared().is_err() {
        terminate(TERM_GENERAL_REQUEST);
    }
}

/// Changes the state of `[gpa, gpa + len)` (2 MiB entries where aligned) with the GHCB
/// page-state-change request. Returns false if the hypervisor refused.
pub fn page_state_change(gpa: u64, len: u64, shared: bool) -> bool {
    let op = if shared { PSC_OP_SHARED } else { PSC_OP_PRIVATE };
    let buf = GHCB_GPA.load(Ordering::Relaxed) + OFF_SHARED_BUFFER as u64;
    let max = (SHARED_BUFFER_SIZE - PSC_HEADER_SIZE) / 8;
    let mut at = gpa;
    let end = gpa + len;
    while at < end {
        let mut n = 0usize;
        while at < end && n < max {
            let huge = at % TWO_MIB == 0 && end - at >= TWO_MIB;
            ghcb_write::<u64>(OFF_SHARED_BUFFER + PSC_HEADER_SIZE + 8 * n, psc_entry(at >> 12, op, huge));
            at += if huge { TWO_MIB } else { FOUR_KIB };
            n += 1;
        }
        ghcb_write::<u16>(OFF_SHARED_BUFFER, 0);
        ghcb_write::<u16>(OFF_SHARED_BUFFER + 2, (n - 1) as u16);
        ghcb_write::<u32>(OFF_SHARED_BUFFER + 4, 0);
        ghcb_begin(EXIT_PSC, 0, 0);
        ghcb_set(OFF_SW_SCRATCH, buf);
        match ghcb_call_prepared() {
            Ok(0) => {}
            _ => return false,
        }
    }
    true
}

/// Sends an SNP guest request (`extended`: with a certificate buffer). The message is
/// already in the request page; the response lands in the response page. Returns
/// SW_EXITINFO2 (0 on success).
pub fn guest_request(extended: bool) -> Result<u64, u64> {
    let area = GHCB_GPA.load(Ordering::Relaxed);
    let (req, resp) = (area + REQ_PAGE_OFFSET, area + RESP_PAGE_OFFSET);
    if extended {
        ghcb_begin(EXIT_EXT_GUEST_REQUEST, req, resp);
        ghcb_set(OFF_RAX, area + CERTS_OFFSET);
        ghcb_set(OFF_RBX, CERTS_PAGES);
        ghcb_call_prepared()
    } else {
        ghcb_call(EXIT_GUEST_REQUEST, req, resp)
    }
}

/// The request page, response page and certificate buffer addresses.
pub fn request_pages() -> (u64, u64, u64) {
    let area = GHCB_GPA.load(Ordering::Relaxed);
    (area + REQ_PAGE_OFFSET, area + RESP_PAGE_OFFSET, area + CERTS_OFFSET)
}

/// Sets what the vCPUs validate (or accept): RAM up to `top` without the bounce region.
pub fn set_share_plan(top: u64, bounce: (u64, u64), vcpus: u64) {
    VALIDATE_TOP.store(top, Ordering::Relaxed);
    BOUNCE[0].store(bounce.0, Ordering::Relaxed);
    BOUNCE[1].store(bounce.1, Ordering::Relaxed);
    VCPUS.store(vcpus, Ordering::Relaxed);
}

/// How many vCPUs share the validation.
pub fn share_stride() -> u64 {
    VCPUS.load(Ordering::Relaxed)
}

/// Validates (SNP) or accepts (TDX) the first 2 MiB.
pub fn validate_first(end: u64) -> bool {
    validate_range(0, end)
}

/// Validates vCPU `which`'s share of the memory above 2 MiB.
pub fn validate_share(which: u64, stride: u64) -> bool {
    let top = VALIDATE_TOP.load(Ordering::Relaxed);
    let (b0, b1) = (BOUNCE[0].load(Ordering::Relaxed), BOUNCE[1].load(Ordering::Relaxed));
    validate_strided(TWO_MIB, b0.clamp(TWO_MIB, top), which, stride) && validate_strided(b1.min(top), top, which, stride)
}

/// Creates AP `index` from a VMSA of its own: 64-bit mode on the BSP's page tables.
fn start_ap(index: u64) -> bool {
    let page = AP_VMSA_BASE + index * FOUR_KIB;
    // SAFETY: the page is validated private memory in 1-2 MiB that only this code uses.
    unsafe { core::ptr::write_bytes(page as *mut u8, 0, FOUR_KIB as usize) };
    let rc: u64;
    // SAFETY: RMPADJUST (target VMPL 1, VMSA bit) of that page: it becomes a VMSA.
    unsafe {
        asm!(".byte 0xf3, 0x0f, 0x01, 0xfe", inout("rax") page => rc, in("rcx") 0u64,
             in("rdx") RMPADJUST_VMSA | 1, options(nostack));
    }
    if rc != 0 {
        return false;
    }
    let put = |off: usize, v: u64| {
        // SAFETY: `off` is a VMSA field offset inside the page.
        unsafe { core::ptr::write_volatile((page + off as u64) as *mut u64, v) }
    };
    let seg = |off: usize, selector: u64, attrib: u64, limit: u64, base: u64| {
        put(off, selector | (attrib << 16) | (limit << 32));
        put(off + 8, base);
    };
    let gdt: u64;
    // SAFETY: takes the address of the GDT the stub loaded.
    unsafe { asm!("lea {}, [rip + gdt64]", out(reg) gdt, options(nomem, nostack, preserves_flags)) };
    seg(vmsa::CS, 0x08, 0x29b, 0xffff_ffff, 0);
    for off in [vmsa::DS, vmsa::ES, vmsa::SS, vmsa::FS, vmsa::GS] {
        seg(off, 0x10, 0xc93, 0xffff_ffff, 0);
    }
    seg(vmsa::GDTR, 0, 0, 23, gdt);
    seg(vmsa::IDTR, 0, 0, 0xffff, 0);
    seg(vmsa::LDTR, 0, 0x82, 0xffff, 0);
    seg(vmsa::TR, 0, 0x8b, 0xffff, 0);
    put(vmsa::EFER, 0x1500); // SVME | LMA | LME
    put(vmsa::CR0, 0x8000_0011);
    put(vmsa::CR3, PT_BASE);
    put(vmsa::CR4, 0x60); // PAE | MCE
    put(vmsa::DR6, 0xffff_0ff0);
    put(vmsa::DR7, 0x400);
    put(vmsa::RFLAGS, 2);
    let entry: u64;
    // SAFETY: takes the address of the AP entry point.
    unsafe { asm!("lea {}, [rip + snp_ap_entry]", out(reg) entry, options(nomem, nostack, preserves_flags)) };
    put(vmsa::RIP, entry);
    put(vmsa::RSP, AP_STACK_BASE + (index + 1) * FOUR_KIB);
    put(vmsa::RDI, index);
    put(vmsa::G_PAT, 0x0007_0406_0007_0406);
    put(vmsa::XCR0, 1);
    put(vmsa::SEV_FEATURES, 1);
    ghcb_begin(EXIT_AP_CREATION, (index << 32) | AP_CREATE, page);
    ghcb_set(OFF_RAX, 1);
    ghcb_call_prepared().is_ok()
}

/// An application processor's work: validate its share, report, park.
#[no_mangle]
extern "C" fn snp_ap_main(index: u64) {
    let ok = validate_share(index, VCPUS.load(Ordering::Relaxed));
    AP_DONE[index as usize % MAX_VCPUS as usize].store(if ok { 1 } else { 2 }, Ordering::Release);
}

/// The 64-bit continuation of `_start32`: prepares the SNP guest, then runs the
/// guest program. Termination codes (reason set 0): 1 protocol, 2 SNP features; set 0
/// code 0x10+ are cvmm firmware failures (0x10 validation, 0x11 GHCB sharing, 0x12
/// GHCB registration, 0x13 bounce sharing, 0x14 boot info).
#[no_mangle]
extern "C" fn snp_start(boot_info: u64) -> ! {
    // SAFETY: the boot info page is measured private memory the launch put there.
    let info: BootInfo = unsafe { core::ptr::read_volatile(boot_info as *const BootInfo) };
    if info.is_valid() && info.flags & crate::abi::FLAG_TDX != 0 {
        crate::rt::tdx::tdx_start(info);
    }
    let mut info = info;
    if !info.is_valid() || info.flags & FLAG_SNP == 0 {
        terminate(0x14);
    }
    EMULATED.store(info.flags & FLAG_EMULATED_PLATFORM != 0, Ordering::Relaxed);

    let sev_info = msr_call(MSR_SEV_INFO_REQ);
    let (max, min) = ((sev_info >> 48) & 0xffff, (sev_info >> 32) & 0xffff);
    if sev_info & MSR_INFO_MASK != MSR_SEV_INFO_RESP
        || !(min..=max).contains(&u64::from(GHCB_PROTOCOL_VERSION))
    {
        terminate(TERM_UNSUPPORTED_PROTOCOL);
    }
    let features = msr_call(MSR_HV_FT_REQ);
    if features & MSR_INFO_MASK != MSR_HV_FT_RESP || (features >> 12) & HV_FT_SNP == 0 {
        terminate(TERM_SNP_UNSUPPORTED);
    }

    // Validate RAM below the MMIO hole, except the bounce region, which is shared:
    // the first 2 MiB here, the rest spread over every vCPU.
    let bounce = (info.bounce_base, info.bounce_base + info.bounce_size);
    let top = info.mem_size.min(MMIO_HOLE_START) & !(TWO_MIB - 1);
    if !validate_range(0, TWO_MIB) {
        terminate(0x10);
    }
    let vcpus = u64::from(info.vcpus).clamp(1, MAX_VCPUS);
    VALIDATE_TOP.store(top, Ordering::Relaxed);
    BOUNCE[0].store(bounce.0, Ordering::Relaxed);
    BOUNCE[1].store(bounce.1, Ordering::Relaxed);
    VCPUS.store(vcpus, Ordering::Relaxed);

    // The GHCB: first page of the bounce region, shared with the MSR protocol.
    let ghcb = bounce.0;
    let resp = msr_call(MSR_PSC_REQ | ((ghcb >> 12) << 12) | (PSC_OP_SHARED << 52));
    if resp & MSR_INFO_MASK != MSR_PSC_RESP || resp >> 32 != 0 {
        terminate(0x11);
    }
    let resp = msr_call(MSR_REG_GPA_REQ | ghcb);
    if resp & MSR_INFO_MASK != MSR_REG_GPA_RESP || resp & !MSR_INFO_MASK != ghcb {
        terminate(0x12);
    }
    GHCB_GPA.store(ghcb, Ordering::Relaxed);
    if !page_state_change(bounce.0, bounce.1 - bounce.0, true) {
        terminate(0x13);
    }

    // Start the APs (AP creation) if the hypervisor offers it; each validates its share.
    let started = if vcpus > 1 && (features >> 12) & HV_FT_SNP_AP_CREATION != 0 { vcpus } else { 1 };
    for i in 1..started {
        if !start_ap(i) {
            terminate(0x15);
        }
    }
    if !validate_share(0, started) {
        terminate(0x10);
    }
    for i in 1..started as usize {
        loop {
            match AP_DONE[i].load(Ordering::Acquire) {
                0 => core::hint::spin_loop(),
                1 => break,
                _ => terminate(0x10),
            }
        }
    }

    info.bounce_base += FIRMWARE_SHARED;
    info.bounce_size -= FIRMWARE_SHARED;
    crate::guest_main(&info, core::ptr::null())
}
