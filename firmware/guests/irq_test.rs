//! Test guest: proves the interrupt path end to end. It installs an IDT gate for
//! vector 0x30, enables its local APIC, routes IOAPIC pin 4 (COM1) to vector 0x30 on
//! APIC 0, enables interrupts and asks the 16550 for a "transmitter empty" interrupt.
//! The handler prints "irq" and ends the VM with status 0x30; if no interrupt
//! arrives the guest halts forever (the test's watchdog then fails it), and a wrong
//! vector triple-faults (no other gate exists).
#![no_std]
#![no_main]

#[path = "../../arch/src/abi.rs"]
#[allow(dead_code)]
mod abi;
#[path = "rt.rs"]
mod rt;

use core::arch::{asm, global_asm};

use abi::{BootInfo, SERIAL_PORT};
use rt::{outb, puts};

const VECTOR: usize = 0x30;
const IOAPIC: usize = 0xfec0_0000;
const LAPIC: usize = 0xfee0_0000;
const LAPIC_SVR: usize = 0xf0;
const LAPIC_EOI: usize = 0xb0;
const SERIAL_IRQ_PIN: u32 = 4;

#[repr(C, align(16))]
struct Idt([u64; 2 * (VECTOR + 1)]);

static mut IDT: Idt = Idt([0; 2 * (VECTOR + 1)]);

global_asm!(
    ".global irq_entry",
    "irq_entry:",
    "    call irq_handler",
    "3:  hlt",
    "    jmp 3b",
);

extern "C" {
    fn irq_entry();
}

fn mmio_write(addr: usize, value: u32) {
    // SAFETY: identity-mapped device registers of the IOAPIC/LAPIC.
    unsafe { core::ptr::write_volatile(addr as *mut u32, value) };
}

#[no_mangle]
extern "C" fn irq_handler() -> ! {
    puts(b"irq\n");
    mmio_write(LAPIC + LAPIC_EOI, 0);
    rt::exit(VECTOR as u8);
}

#[no_mangle]
extern "C" fn guest_main(_boot_info: *const BootInfo, _zero_page: *const u8) -> ! {
    let handler = irq_entry as usize as u64;
    // 64-bit interrupt gate: selector 0x08 (64-bit code), present, DPL0, type 0xe.
    let low = (handler & 0xffff) | (0x08 << 16) | (0x8e00u64 << 32) | ((handler & 0xffff_0000) << 32);
    let high = handler >> 32;
    // SAFETY: single-threaded guest code; the IDT is only read by the CPU.
    let idt_base = unsafe {
        let idt = &raw mut IDT;
        core::ptr::write_volatile(&raw mut (*idt).0[2 * VECTOR], low);
        core::ptr::write_volatile(&raw mut (*idt).0[2 * VECTOR + 1], high);
        idt as u64
    };
    let mut idtr = [0u8; 10];
    idtr[..2].copy_from_slice(&((16 * (VECTOR + 1) - 1) as u16).to_le_bytes());
    idtr[2..].copy_from_slice(&idt_base.to_le_bytes());
    // SAFETY: the descriptor points at a valid IDT that lives for the whole program.
    unsafe { asm!("lidt [{}]", in(reg) idtr.as_ptr(), options(nostack)) };

    mmio_write(LAPIC + LAPIC_SVR, 0x1ff); // APIC software enable, spurious vector 0xff
    mmio_write(IOAPIC, 0x10 + 2 * SERIAL_IRQ_PIN + 1); // IOREGSEL: high dword
    mmio_write(IOAPIC + 0x10, 0); // destination APIC 0
    mmio_write(IOAPIC, 0x10 + 2 * SERIAL_IRQ_PIN); // IOREGSEL: low dword
    mmio_write(IOAPIC + 0x10, VECTOR as u32); // fixed, physical, edge, unmasked

    // SAFETY: the IDT has a gate for the only vector that can arrive.
    unsafe { asm!("sti", options(nomem, nostack)) };
    outb(SERIAL_PORT + 1, 0x02); // IER: transmitter-empty interrupt
    loop {
        // SAFETY: waits for the interrupt.
        unsafe { asm!("hlt", options(nomem, nostack)) };
    }
}
