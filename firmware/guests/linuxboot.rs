//! cvmm's Linux boot firmware for confidential guests: the guest program that, instead
//! of a demo payload, hands the machine to a Linux kernel the host placed in memory.
//!
//! It is started like every cvmm guest program at its 32-bit entry (`rt.rs`, `snp.rs`):
//! the platform layer builds the identity page tables (4 GiB, 2 MiB pages, the SEV-SNP
//! C-bit on private memory / no TDX shared bit), validates (SNP, PVALIDATE) or accepts
//! (TDX, TDG.MEM.PAGE.ACCEPT) all guest RAM below the MMIO hole except the bounce region,
//! sets up and registers the GHCB (SNP), converts the bounce region to shared, and parks
//! the application processors (SNP: `cli; hlt` after their share of the validation;
//! TDX: TDVMCALL<HLT>). Then [`guest_main`] checks the zero page the host built at
//! `abi::LINUX_ZERO_PAGE` (boot-protocol magic, 64-bit entry flag, load address) and
//! enters the kernel at `code32_start + 0x200` (startup_64) as the 64-bit boot protocol
//! asks: long mode on those page tables, a GDT with `__BOOT_CS` = 0x10 and `__BOOT_DS` =
//! 0x18 (flat), CS/DS/ES/SS loaded from it, interrupts off, `RSI` = the zero page.
//!
//! The memory the firmware keeps (its image, stacks, AP VMSAs, the shared bounce region,
//! its page tables and boot information) is reserved in the e820 map the host wrote, so
//! the kernel never reuses it. The kernel sets up its own GHCB (SNP) and starts the
//! application processors itself.
#![no_std]
#![no_main]

#[path = "../../arch/src/abi.rs"]
#[allow(dead_code)]
mod abi;
#[path = "rt.rs"]
mod rt;

use core::arch::global_asm;

use abi::BootInfo;

/// `"HdrS"`: the setup header's magic (zero page offset 0x202).
const HDRS_MAGIC: u32 = 0x5372_6448;
/// `xloadflags` bit: the kernel has a 64-bit entry at `code32_start + 0x200`.
const XLF_KERNEL_64: u16 = 1;
/// Offset of startup_64 from the protected-mode kernel's start.
const STARTUP_64_OFFSET: u64 = 0x200;
/// Zero page offsets.
const OFF_HDR_MAGIC: u64 = 0x202;
const OFF_CODE32_START: u64 = 0x214;
const OFF_XLOADFLAGS: u64 = 0x236;

global_asm!(
    // The boot protocol's GDT: null, null, __BOOT_CS (0x10, 64-bit code), __BOOT_DS
    // (0x18, flat data), and its LGDT operand.
    ".section .rodata.linux_gdt, \"a\"",
    ".balign 8",
    "linux_gdt: .quad 0, 0, 0x00af9a000000ffff, 0x00cf92000000ffff",
    "linux_gdtr: .word 31",
    "    .quad linux_gdt",
    ".text",
    // enter_linux(entry: RDI, boot_params: RSI): never returns.
    ".global enter_linux",
    "enter_linux:",
    "    cli",
    "    lgdt [rip + linux_gdtr]",
    "    mov eax, 0x18",
    "    mov ds, eax",
    "    mov es, eax",
    "    mov ss, eax",
    "    mov fs, eax",
    "    mov gs, eax",
    "    push 0x10",
    "    lea rax, [rip + 2f]",
    "    push rax",
    // REX.W far return: reload CS with __BOOT_CS.
    "    .byte 0x48, 0xcb",
    "2:  xor eax, eax",
    "    xor ebx, ebx",
    "    xor ecx, ecx",
    "    xor edx, edx",
    "    xor ebp, ebp",
    "    jmp rdi",
);

extern "C" {
    fn enter_linux(entry: u64, boot_params: u64) -> !;
}

fn read<T: Copy>(gpa: u64) -> T {
    // SAFETY: the zero page is measured private memory at a fixed GPA, identity-mapped.
    unsafe { core::ptr::read_volatile(gpa as *const T) }
}

/// Ends the guest with `code` the way its platform offers.
fn fail(code: u64) -> ! {
    rt::puts(b"cvmm linuxboot: no 64-bit Linux kernel in the zero page\n");
    if rt::snp::active() {
        rt::snp::terminate(code);
    }
    if rt::tdx::is_tdx() {
        rt::tdx::fatal(code);
    }
    rt::exit(code as u8)
}

#[no_mangle]
extern "C" fn guest_main(_info: *const BootInfo, _zero_page: *const u8) -> ! {
    let zp = abi::LINUX_ZERO_PAGE;
    let magic: u32 = read(zp + OFF_HDR_MAGIC);
    let xloadflags: u16 = read(zp + OFF_XLOADFLAGS);
    let code32_start: u32 = read(zp + OFF_CODE32_START);
    if magic != HDRS_MAGIC || xloadflags & XLF_KERNEL_64 == 0 || code32_start == 0 {
        fail(0x40);
    }
    rt::puts(b"cvmm linuxboot: entering Linux\n");
    // SAFETY: the host placed the protected-mode kernel at code32_start (measured with
    // the zero page); control passes to it for good.
    unsafe { enter_linux(u64::from(code32_start) + STARTUP_64_OFFSET, zp) }
}
