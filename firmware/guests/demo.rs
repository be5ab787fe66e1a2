//! The cvmm demo guest: a tiny no_std program `cvmm run` boots when no kernel is given.
//!
//! Entered in 64-bit mode with `RDI` = cvmm boot info and `RSI` = Linux zero page
//! (arch::regs::BootEntry::Long64). It prints a greeting with the vCPU count and memory
//! size from the boot information, then drives each virtio device the boot information
//! lists, in this order, through the guest-side driver in `virtio.rs`, with every ring
//! and buffer in the bounce region:
//!
//! - virtio-console (ID 3): every line below, the greeting included, goes out through
//!   its transmit queue instead of COM1;
//! - virtio-blk (ID 2): reads sector 0 and prints `disk: sector 0 sha256 <hex>`; unless
//!   the device is read-only (`disk: read-only`), writes [`SECTOR1_PATTERN`] to sector 1
//!   (this overwrites the image's sector 1), reads it back and prints
//!   `disk: write/read-back ok`;
//! - virtio-rng (ID 4): prints `rng: <hex>` for 32 bytes;
//! - virtio-vsock (ID 19): connects to host CID 2 port 1234, sends [`VSOCK_MESSAGE`],
//!   shuts the connection down and prints `vsock: sent`.
//!
//! A confidential guest (boot information with an ACPI RSDP) then prints `acpi: MADT
//! lists <n> CPUs`; a TD with more than one vCPU wakes CPU 1 through the MADT's
//! multiprocessor wakeup mailbox as Linux does (a stub copied into the mailbox's OS
//! area, which records the vCPU index TDG.VP.INFO gives it) and prints `acpi: CPU 1
//! woke through the mailbox` once the stub has run. After its attestation a TD prints
//! its CC event log (the CCEL table's area) as `ccel: <n> <hex>` lines of 48 bytes.
//!
//! With the word `wait` on its command line (`cvmm run --cmdline wait`), the guest
//! then prints `demo: waiting for Ctrl-Alt-Del` and halts until the host asks it to
//! shut down (the Ctrl-Alt-Del key presses of `abi::CTRL_ALT_DEL_SCANCODES` on the
//! i8042, with the keyboard interrupt routed to [`KEYBOARD_VECTOR`]), prints
//! `demo: Ctrl-Alt-Del, shutting down` and ends as below. Halted, it costs the host
//! nothing; it is how the VM handle's pause, resume and shutdown are tested. (A
//! confidential launch passes no command line yet, so there the guest never waits.)
//!
//! A part that fails prints a line saying so; the guest then ends the VM through the
//! debug-exit port with the status of the first failure (0 when everything worked):
//! 1 no valid boot information, 2 panic, 3 console, 4 disk I/O, 5 disk read-back
//! mismatch, 6 rng, 7 vsock, 8 attestation, 9 ACPI (tables or AP wakeup).
//!
//! Constraints: this host emulates CPL0 code at ~2 M instructions/s, so the whole boot
//! path is tens of thousands of instructions; no core::fmt, no SSE, no interrupts.
#![no_std]
#![no_main]

#[path = "../../arch/src/abi.rs"]
#[allow(dead_code)]
mod abi;
#[path = "rt.rs"]
mod rt;
#[path = "sha256.rs"]
mod sha256;
#[path = "virtio.rs"]
mod virtio;
#[path = "aes_gcm.rs"]
mod aes_gcm;
#[path = "snp_msg.rs"]
mod snp_msg;

use core::arch::{asm, global_asm};

use abi::{BootInfo, CTRL_ALT_DEL_SCANCODES, I8042_DATA_PORT, I8042_STATUS_PORT, KEYBOARD_GSI};
use virtio::{Buf, Bump, Device, Queue};

const STATUS_CONSOLE: u8 = 3;
const STATUS_DISK: u8 = 4;
const STATUS_DISK_MISMATCH: u8 = 5;
const STATUS_RNG: u8 = 6;
const STATUS_VSOCK: u8 = 7;
const STATUS_ATTESTATION: u8 = 8;
const STATUS_ACPI: u8 = 9;

/// What the demo writes to sector 1: this, repeated to fill 512 bytes.
pub const SECTOR1_PATTERN: &[u8; 16] = b"cvmm-demo-guest\n";
/// What the demo sends over vsock.
pub const VSOCK_MESSAGE: &[u8] = b"hello from the cvmm demo guest\n";
/// The host port the demo connects to.
const VSOCK_PORT: u32 = 1234;
/// The guest's own (ephemeral) port.
const VSOCK_LOCAL_PORT: u32 = 49152;

const SECTOR: usize = 512;

/// Where lines go: the virtio console once it works, COM1 otherwise. One line is
/// collected and sent as one transmit request (one notification per line).
struct Out {
    console: Option<(Device, Queue, u64)>,
    line: [u8; 256],
    len: usize,
}

impl Out {
    fn put(&mut self, s: &[u8]) {
        for &b in s {
            if self.len < self.line.len() {
                self.line[self.len] = b;
                self.len += 1;
            }
        }
    }

    fn dec(&mut self, v: u64) {
        self.put(rt::format_u64(v, &mut [0u8; 20]));
    }

    fn hex(&mut self, bytes: &[u8]) {
        const D: &[u8; 16] = b"0123456789abcdef";
        for &b in bytes {
            self.put(&[D[(b >> 4) as usize], D[(b & 15) as usize]]);
        }
    }

    /// Ends the line and sends it.
    fn end(&mut self) {
        self.put(b"\n");
        let len = self.len;
        self.len = 0;
        if let Some((dev, q, buf)) = self.console.as_mut() {
            virtio::write_bytes(*buf, &self.line[..len]);
            match q.transfer(&[Buf::out(*buf, len as u32)]) {
                Ok(_) => return,
                Err(e) => {
                    dev.fail();
                    self.console = None;
                    rt::puts(b"console: ");
                    rt::puts(e.text());
                    rt::puts(b"\n");
                }
            }
        }
        rt::puts(&self.line[..len]);
    }

    /// Prints `<what>: <error>` for a failed part.
    fn failed(&mut self, what: &[u8], e: virtio::Error) {
        self.put(what);
        self.put(b": ");
        self.put(e.text());
        self.end();
    }
}

/// The first failure's status wins.
fn note(status: &mut u8, failure: u8) {
    if *status == 0 {
        *status = failure;
    }
}

#[no_mangle]
extern "C" fn guest_main(boot_info: *const BootInfo, zero_page: *const u8) -> ! {
    // Read the block once, by value (no double fetch of host-provided data).
    // SAFETY: cvmm maps the boot-info page; a bad pointer faults and cvmm reports it.
    let info = unsafe { core::ptr::read_volatile(boot_info) };
    if !info.is_valid() {
        rt::puts(b"cvmm demo guest: no valid boot information\n");
        rt::exit(1);
    }
    let mut mem = Bump::new(info.bounce_base, info.bounce_size);
    let mut out = Out { console: None, line: [0; 256], len: 0 };
    let mut status = 0;

    if let Some(d) = info.find_virtio(3) {
        match console(d.base, &mut mem) {
            Ok(c) => out.console = Some(c),
            Err(e) => {
                out.failed(b"console", e);
                note(&mut status, STATUS_CONSOLE);
            }
        }
    }
    greet(&mut out, &info);
    if out.console.is_none() && info.find_virtio(3).is_some() {
        note(&mut status, STATUS_CONSOLE);
    }
    if info.acpi_rsdp != 0 && !acpi(&info, &mut out) {
        note(&mut status, STATUS_ACPI);
    }
    if let Some(d) = info.find_virtio(2) {
        if let Err(s) = disk(d.base, &mut mem, &mut out) {
            note(&mut status, s);
        }
    }
    let mut nonce = *b"cvmm demo guest: no virtio-rng, so this is not a fresh nonce.\0\0\0";
    if let Some(d) = info.find_virtio(4) {
        match rng(d.base, &mut mem, &mut out) {
            Some(bytes) => {
                nonce = [0; 64];
                nonce[..32].copy_from_slice(&bytes);
            }
            None => note(&mut status, STATUS_RNG),
        }
    }
    if let Some(d) = info.find_virtio(19) {
        if !vsock(d.base, &mut mem, &mut out) {
            note(&mut status, STATUS_VSOCK);
        }
    }
    if rt::snp::active() && !attest(&info, &nonce, &mut out) {
        note(&mut status, STATUS_ATTESTATION);
    }
    if rt::tdx::is_tdx() && !attest_tdx(&nonce, &mut out) {
        note(&mut status, STATUS_ATTESTATION);
    }
    if cmdline_has_word(zero_page, b"wait") {
        out.put(b"demo: waiting for Ctrl-Alt-Del");
        out.end();
        wait_for_ctrl_alt_del();
        out.put(b"demo: Ctrl-Alt-Del, shutting down");
        out.end();
    }
    rt::exit(status);
}

/// Whether the kernel command line (the zero page's `cmd_line_ptr` and `cmdline_size`)
/// holds `word` as a whole space-separated word.
fn cmdline_has_word(zero_page: *const u8, word: &[u8]) -> bool {
    if zero_page.is_null() {
        return false;
    }
    // SAFETY: cvmm maps the zero page; the fields are at their boot-protocol offsets.
    let (ptr, size) = unsafe {
        (
            core::ptr::read_volatile(zero_page.add(0x228).cast::<u32>()),
            core::ptr::read_volatile(zero_page.add(0x238).cast::<u32>()),
        )
    };
    if ptr == 0 {
        return false;
    }
    // SAFETY: the command line lies in guest RAM cvmm maps (at most 2 KiB, as cvmm
    // writes it); a bad pointer would fault and cvmm would report it.
    let line = unsafe { core::slice::from_raw_parts(ptr as usize as *const u8, (size as usize).min(2048)) };
    line.split(|&b| b == b' ' || b == 0).any(|w| w == word)
}

/// The interrupt vector the demo routes the i8042's keyboard interrupt to.
const KEYBOARD_VECTOR: usize = 0x21;
const IOAPIC_BASE: u64 = 0xfec0_0000;
const LAPIC_BASE: u64 = 0xfee0_0000;

#[repr(C, align(16))]
struct Idt([u64; 2 * (KEYBOARD_VECTOR + 1)]);

static mut IDT: Idt = Idt([0; 2 * (KEYBOARD_VECTOR + 1)]);

// The keyboard interrupt's handler does nothing: the interrupt only ends the HLT of
// the waiting loop, which acknowledges it (LAPIC EOI) and reads the i8042 itself, with
// interrupts off, through `rt` (the GHCB in an SNP guest, where a direct access to a
// device register would need a #VC handler).
global_asm!(".global keyboard_entry", "keyboard_entry:", "    iretq");

extern "C" {
    fn keyboard_entry();
}

const LAPIC_EOI: u64 = LAPIC_BASE + 0xb0;

/// Routes the keyboard interrupt to [`KEYBOARD_VECTOR`] and halts until the i8042 has
/// delivered the Ctrl-Alt-Del sequence.
fn wait_for_ctrl_alt_del() {
    let handler = keyboard_entry as *const () as usize as u64;
    // 64-bit interrupt gate: selector 0x08 (64-bit code), present, DPL0, type 0xe.
    let low = (handler & 0xffff) | (0x08 << 16) | (0x8e00u64 << 32) | ((handler & 0xffff_0000) << 32);
    // SAFETY: single-threaded guest code; the IDT is only read by the CPU.
    let idt_base = unsafe {
        let idt = &raw mut IDT;
        core::ptr::write_volatile(&raw mut (*idt).0[2 * KEYBOARD_VECTOR], low);
        core::ptr::write_volatile(&raw mut (*idt).0[2 * KEYBOARD_VECTOR + 1], handler >> 32);
        idt as u64
    };
    let mut idtr = [0u8; 10];
    idtr[..2].copy_from_slice(&((16 * (KEYBOARD_VECTOR + 1) - 1) as u16).to_le_bytes());
    idtr[2..].copy_from_slice(&idt_base.to_le_bytes());
    // SAFETY: the descriptor points at an IDT that lives for the whole program.
    unsafe { asm!("lidt [{}]", in(reg) idtr.as_ptr(), options(nostack)) };
    rt::mmio_write32(LAPIC_BASE + 0xf0, 0x1ff); // APIC software enable, spurious vector 0xff
    let pin = KEYBOARD_GSI;
    rt::mmio_write32(IOAPIC_BASE, 0x10 + 2 * pin + 1); // IOREGSEL: redirection entry, high
    rt::mmio_write32(IOAPIC_BASE + 0x10, 0); // destination APIC 0
    rt::mmio_write32(IOAPIC_BASE, 0x10 + 2 * pin); // low: fixed, physical, edge, unmasked
    rt::mmio_write32(IOAPIC_BASE + 0x10, KEYBOARD_VECTOR as u32);

    let mut seen = 0usize;
    loop {
        // Acknowledges the interrupt that ended the last HLT (harmless if none did).
        rt::mmio_write32(LAPIC_EOI, 0);
        // Interrupts are off here: a key press that lands now stays pending and wakes
        // the HLT below (STI delays interrupts by one instruction).
        while rt::inb(I8042_STATUS_PORT) & 1 != 0 {
            let byte = rt::inb(I8042_DATA_PORT);
            seen = if byte == CTRL_ALT_DEL_SCANCODES[seen] {
                seen + 1
            } else {
                usize::from(byte == CTRL_ALT_DEL_SCANCODES[0])
            };
            if seen == CTRL_ALT_DEL_SCANCODES.len() {
                return;
            }
        }
        // SAFETY: the IDT has a gate for the only vector that can arrive; its handler
        // returns at once.
        unsafe { asm!("sti; hlt; cli", options(nomem, nostack)) };
    }
}

fn greet(out: &mut Out, info: &BootInfo) {
    out.put(b"Hello from the cvmm demo guest: ");
    out.dec(u64::from(info.vcpus));
    out.put(if info.vcpus == 1 { b" vCPU, " } else { b" vCPUs, " });
    if info.mem_size.is_multiple_of(1 << 20) {
        out.dec(info.mem_size >> 20);
        out.put(b" MiB of memory");
    } else {
        out.dec(info.mem_size);
        out.put(b" bytes of memory");
    }
    out.end();
}

/// virtio-console: both queues (the device wants them), output through transmitq (1).
fn console(base: u64, mem: &mut Bump) -> Result<(Device, Queue, u64), virtio::Error> {
    let dev = Device::init(base, 3, 0)?;
    let _rx = dev.queue(0, mem)?;
    let tx = dev.queue(1, mem)?;
    let buf = mem.alloc(128, 64).ok_or(virtio::Error::OutOfMemory)?;
    dev.driver_ok();
    Ok((dev, tx, buf))
}

/// A virtio-blk queue with one request header (and status byte) in the bounce region.
struct Blk {
    q: Queue,
    hdr: u64,
}

impl Blk {
    /// One request: header, optional data buffer, status byte. Prints what failed.
    fn request(&mut self, out: &mut Out, what: &[u8], kind: u32, sector: u64, data: Option<Buf>) -> Result<(), u8> {
        let st = self.hdr + 16;
        virtio::poke::<u32>(self.hdr, kind);
        virtio::poke::<u32>(self.hdr + 4, 0);
        virtio::poke::<u64>(self.hdr + 8, sector);
        virtio::poke::<u8>(st, 0xff);
        let (h, s) = (Buf::out(self.hdr, 16), Buf::input(st, 1));
        let done = match data {
            Some(d) => self.q.transfer(&[h, d, s]),
            None => self.q.transfer(&[h, s]),
        };
        let status = match done {
            Ok(_) => virtio::peek::<u8>(st),
            Err(e) => {
                out.put(b"disk: ");
                out.put(what);
                out.put(b": ");
                out.put(e.text());
                out.end();
                return Err(STATUS_DISK);
            }
        };
        if status == 0 {
            return Ok(());
        }
        out.put(b"disk: ");
        out.put(what);
        out.put(b" failed with status ");
        out.dec(u64::from(status));
        out.end();
        Err(STATUS_DISK)
    }
}

fn disk(base: u64, mem: &mut Bump, out: &mut Out) -> Result<(), u8> {
    const F_RO: u32 = 5;
    const F_FLUSH: u32 = 9;
    const IN: u32 = 0;
    const OUT: u32 = 1;
    const FLUSH: u32 = 4;
    let mut setup = || -> Result<(Device, Blk, u64), virtio::Error> {
        let dev = Device::init(base, 2, (1 << F_RO) | (1 << F_FLUSH))?;
        let q = dev.queue(0, mem)?;
        let hdr = mem.alloc(32, 16).ok_or(virtio::Error::OutOfMemory)?;
        let data = mem.alloc(SECTOR as u64, SECTOR as u64).ok_or(virtio::Error::OutOfMemory)?;
        dev.driver_ok();
        Ok((dev, Blk { q, hdr }, data))
    };
    let (dev, mut blk, data) = setup().map_err(|e| {
        out.failed(b"disk", e);
        STATUS_DISK
    })?;
    let mut sector = [0u8; SECTOR];
    blk.request(out, b"read of sector 0", IN, 0, Some(Buf::input(data, SECTOR as u32)))?;
    virtio::read_bytes(data, &mut sector);
    out.put(b"disk: sector 0 sha256 ");
    out.hex(&sha256::sha256(&sector));
    out.end();
    if dev.has(F_RO) {
        out.put(b"disk: read-only");
        out.end();
        return Ok(());
    }
    if dev.config_u64(0) < 2 {
        out.put(b"disk: too small for the write test");
        out.end();
        return Ok(());
    }
    for chunk in sector.chunks_exact_mut(SECTOR1_PATTERN.len()) {
        chunk.copy_from_slice(SECTOR1_PATTERN);
    }
    virtio::write_bytes(data, &sector);
    blk.request(out, b"write of sector 1", OUT, 1, Some(Buf::out(data, SECTOR as u32)))?;
    if dev.has(F_FLUSH) {
        blk.request(out, b"flush", FLUSH, 0, None)?;
    }
    virtio::write_bytes(data, &[0u8; SECTOR]);
    blk.request(out, b"read of sector 1", IN, 1, Some(Buf::input(data, SECTOR as u32)))?;
    let mut back = [0u8; SECTOR];
    virtio::read_bytes(data, &mut back);
    if back == sector {
        out.put(b"disk: write/read-back ok");
        out.end();
        Ok(())
    } else {
        out.put(b"disk: write/read-back mismatch");
        out.end();
        Err(STATUS_DISK_MISMATCH)
    }
}

/// Returns the 32 random bytes that arrived (having printed them, or what failed).
fn rng(base: u64, mem: &mut Bump, out: &mut Out) -> Option<[u8; 32]> {
    const LEN: usize = 32;
    let mut fetch = || -> Result<(u32, [u8; LEN]), virtio::Error> {
        let dev = Device::init(base, 4, 0)?;
        let mut q = dev.queue(0, mem)?;
        let buf = mem.alloc(LEN as u64, 64).ok_or(virtio::Error::OutOfMemory)?;
        dev.driver_ok();
        let got = q.transfer(&[Buf::input(buf, LEN as u32)])?;
        let mut bytes = [0u8; LEN];
        virtio::read_bytes(buf, &mut bytes);
        out.put(b"rng: ");
        if got as usize == LEN {
            out.hex(&bytes);
        }
        Ok((got, bytes))
    };
    match fetch() {
        Ok((got, bytes)) if got as usize == LEN => {
            out.end();
            Some(bytes)
        }
        Ok((got, _)) => {
            out.put(b"short read of ");
            out.dec(u64::from(got));
            out.put(b" bytes");
            out.end();
            None
        }
        Err(e) => {
            out.failed(b"rng", e);
            None
        }
    }
}

/// What the TD measures into RTMR3 (the demo's one run-time event): SHA-256 of this
/// text, zero-padded to the 48 bytes TDG.MR.RTMR.EXTEND takes.
pub const RTMR3_EVENT: &[u8] = b"cvmm demo guest: RTMR3 event";

/// Private, aligned buffers for the TDX module's operands.
#[repr(C, align(1024))]
struct TdBuffers {
    report: [u8; 1024],
    report_data: [u8; 64],
    event: [u8; 64],
}

static mut TD_BUFFERS: TdBuffers = TdBuffers { report: [0; 1024], report_data: [0; 64], event: [0; 64] };

/// TDX: extends RTMR3 with [`RTMR3_EVENT`]'s digest (printed), gets a TD report with
/// `nonce` as REPORTDATA and a quote for it (TDVMCALL GetQuote), and prints the quote's
/// MRTD, RTMR0-3 and report data, and the quote itself, in hex.
fn attest_tdx(nonce: &[u8; 64], out: &mut Out) -> bool {
    let buffers = &raw mut TD_BUFFERS;
    // SAFETY: the demo is single-threaded here; the buffers are private statics whose
    // addresses are their GPAs (identity mapping), aligned as the TDX module requires.
    let (report, report_data, event) = unsafe {
        ((*buffers).report.as_mut_ptr(), (*buffers).report_data.as_mut_ptr(), (*buffers).event.as_mut_ptr())
    };
    let digest = sha256::sha256(RTMR3_EVENT);
    let mut event48 = [0u8; 48];
    event48[..32].copy_from_slice(&digest);
    // SAFETY: `event` and `report_data` point into TD_BUFFERS (64 bytes each).
    unsafe {
        core::ptr::copy_nonoverlapping(event48.as_ptr(), event, 48);
        core::ptr::copy_nonoverlapping(nonce.as_ptr(), report_data, 64);
    }
    out.put(b"attestation: rtmr3 event ");
    out.hex(&event48);
    out.end();
    let fail = |out: &mut Out, what: &[u8], code: u64| {
        out.put(b"attestation: ");
        out.put(what);
        out.put(b" failed: 0x");
        out.hex(&code.to_be_bytes());
        out.end();
        false
    };
    let rc = rt::tdx::rtmr_extend_logged(3, event as u64, rt::ccel::EV_COMPACT_HASH, RTMR3_EVENT);
    if rc != 0 {
        return fail(out, b"RTMR3 extend", rc);
    }
    let rc = rt::tdx::report(report as u64, report_data as u64);
    if rc != 0 {
        return fail(out, b"TDG.MR.REPORT", rc);
    }
    // The GetQuote buffer: in the firmware's shared area, after the first 32 KiB.
    const QUOTE_BUF_OFFSET: u64 = 0x8000;
    const QUOTE_BUF_LEN: u64 = 0x8000;
    let buf = rt::tdx::shared_area() + QUOTE_BUF_OFFSET;
    let mut header = [0u8; 24];
    header[0..8].copy_from_slice(&1u64.to_le_bytes());
    header[8..16].copy_from_slice(&u64::MAX.to_le_bytes()); // in flight
    header[16..20].copy_from_slice(&1024u32.to_le_bytes());
    virtio::write_bytes(buf, &header);
    // SAFETY: `report` is TD_BUFFERS.report, 1024 bytes written by the TDX module.
    virtio::write_bytes(buf + 24, unsafe { core::slice::from_raw_parts(report, 1024) });
    let rc = rt::tdx::get_quote(buf, QUOTE_BUF_LEN);
    if rc != 0 {
        return fail(out, b"GetQuote", rc);
    }
    // The host completes the request asynchronously: wait for the status to change
    // (this guest registers no notification vector; it polls).
    let status = rt::tdx::wait_quote(buf);
    let len = virtio::peek::<u32>(buf + 20) as u64;
    if status != 0 || len < 48 + 584 || len > QUOTE_BUF_LEN - 24 {
        return fail(out, b"the quote", status);
    }
    let quote = buf + 24;
    let mut field = [0u8; 64];
    let fields: [(&[u8], u64, usize); 6] = [
        (b"attestation: mrtd ", 48 + 136, 48),
        (b"attestation: rtmr0 ", 48 + 328, 48),
        (b"attestation: rtmr1 ", 48 + 376, 48),
        (b"attestation: rtmr2 ", 48 + 424, 48),
        (b"attestation: rtmr3 ", 48 + 472, 48),
        (b"attestation: report data ", 48 + 520, 64),
    ];
    for (name, at, n) in fields {
        virtio::read_bytes(quote + at, &mut field[..n]);
        out.put(name);
        out.hex(&field[..n]);
        out.end();
    }
    let mut line = [0u8; 48];
    let mut at = 0;
    while at < len {
        let n = (len - at).min(48) as usize;
        virtio::read_bytes(quote + at, &mut line[..n]);
        out.put(b"attestation: quote ");
        out.dec(at / 48);
        out.put(b" ");
        out.hex(&line[..n]);
        out.end();
        at += 48;
    }
    let (log, len) = rt::ccel::log();
    let mut at = 0;
    while at < len {
        let n = (len - at).min(48) as usize;
        // SAFETY: the log is private memory the firmware wrote, `len` bytes from `log`.
        let chunk = unsafe { core::slice::from_raw_parts((log + at) as *const u8, n) };
        out.put(b"ccel: ");
        out.dec(at / 48);
        out.put(b" ");
        out.hex(chunk);
        out.end();
        at += 48;
    }
    true
}

global_asm!(
    // What a TD's CPU 1 runs when the demo wakes it through the mailbox (copied into
    // the mailbox's OS area; position-independent): records "AP" and its vCPU index
    // (TDG.VP.INFO, R9) in `demo_ap_flag`, then halts with interrupts blocked.
    ".text",
    ".global demo_ap_stub",
    "demo_ap_stub:",
    "    mov eax, 1",
    "    .byte 0x66, 0x0f, 0x01, 0xcc",
    "    lea rdx, [rip + demo_ap_flag]",
    "    mov [rdx + 4], r9d",
    "    mov dword ptr [rdx], 0x5041",
    "2:  xor eax, eax",
    "    mov ecx, 0xfc00",
    "    xor r10d, r10d",
    "    mov r11d, 12",
    "    mov r12d, 1",
    "    .byte 0x66, 0x0f, 0x01, 0xcc",
    "    jmp 2b",
    "    .balign 8",
    ".global demo_ap_flag",
    "demo_ap_flag: .quad 0",
    ".global demo_ap_stub_end",
    "demo_ap_stub_end:",
);

extern "C" {
    static demo_ap_stub: u8;
    static demo_ap_flag: u8;
    static demo_ap_stub_end: u8;
}

/// Where the stub goes in the mailbox page (the OS's area starts at 16).
const AP_STUB_OFFSET: u64 = 0x100;

/// Prints the MADT's CPU count; a TD with two or more vCPUs wakes CPU 1 through the
/// mailbox (Command, ApicId, WakeupVector as ACPI 6.4 5.2.12.19 and Linux use them)
/// and waits for its acknowledgement and for the stub's record.
fn acpi(info: &BootInfo, out: &mut Out) -> bool {
    let cpus = rt::acpi::madt_cpus(info.acpi_rsdp);
    out.put(b"acpi: MADT lists ");
    out.dec(u64::from(cpus));
    out.put(b" CPUs");
    out.end();
    if cpus != info.vcpus {
        return false;
    }
    if !rt::tdx::is_tdx() || cpus < 2 {
        return true;
    }
    let Some(mailbox) = rt::acpi::mp_wakeup_mailbox(info.acpi_rsdp) else {
        out.put(b"acpi: no wakeup mailbox");
        out.end();
        return false;
    };
    let (stub, flag, end) =
        (&raw const demo_ap_stub as u64, &raw const demo_ap_flag as u64, &raw const demo_ap_stub_end as u64);
    let vector = mailbox + AP_STUB_OFFSET;
    let record = vector + (flag - stub);
    let post = |apic_id: u32, command: u16| {
        // SAFETY: the mailbox page is private memory the MADT reserves for this
        // protocol; the parked CPUs only read it (and clear Command when woken).
        unsafe {
            core::ptr::write_volatile(mailbox.wrapping_add(4) as *mut u32, apic_id);
            core::ptr::write_volatile(mailbox.wrapping_add(8) as *mut u64, vector);
            core::sync::atomic::fence(core::sync::atomic::Ordering::Release);
            core::ptr::write_volatile(mailbox as *mut u16, command);
        }
    };
    // SAFETY: the stub (a few dozen bytes) fits the mailbox's OS area.
    unsafe { core::ptr::copy_nonoverlapping(stub as *const u8, vector as *mut u8, (end - stub) as usize) };
    // A wakeup for an APIC ID no CPU has (the I/O APIC's) must be left alone.
    post(cpus, rt::acpi::MP_WAKEUP_COMMAND_WAKEUP);
    for _ in 0..20 {
        rt::acpi::idle();
    }
    // SAFETY: as above.
    if unsafe { core::ptr::read_volatile(mailbox as *const u16) } != rt::acpi::MP_WAKEUP_COMMAND_WAKEUP {
        out.put(b"acpi: a CPU took a wakeup meant for another APIC ID");
        out.end();
        return false;
    }
    post(1, rt::acpi::MP_WAKEUP_COMMAND_WAKEUP);
    let mut woke = false;
    for _ in 0..5000 {
        // SAFETY: as above; the woken CPU clears Command, then writes the record.
        let (command, seen) = unsafe {
            (core::ptr::read_volatile(mailbox as *const u16), core::ptr::read_volatile(record as *const u64))
        };
        if command == 0 && seen == 0x5041 | (1 << 32) {
            woke = true;
            break;
        }
        rt::acpi::idle();
    }
    out.put(if woke { b"acpi: CPU 1 woke through the mailbox" } else { b"acpi: CPU 1 did not wake" });
    out.end();
    woke
}

/// SEV-SNP: asks the platform for an attestation report with `nonce` as its report
/// data (an extended guest request: the report and the certificate chain), and prints
/// its fields and the whole report in hex. The key is VMPCK0 from the secrets page.
fn attest(info: &BootInfo, nonce: &[u8; 64], out: &mut Out) -> bool {
    let mut key = [0u8; 32];
    // SAFETY: the secrets page is measured private memory the launch put there; the
    // key is copied out once.
    unsafe { core::ptr::copy_nonoverlapping((info.snp_secrets + 0x20) as *const u8, key.as_mut_ptr(), 32) };
    let mut channel = snp_msg::GuestChannel::new(&key, 0, 0);
    let mut page = [0u8; snp_msg::PAGE_SIZE];
    if channel.build_report_request(nonce, 0, &mut page).is_err() {
        out.put(b"attestation: cannot build the request");
        out.end();
        return false;
    }
    let (req, resp, certs) = rt::snp::request_pages();
    virtio::write_bytes(req, &page);
    match rt::snp::guest_request(true) {
        Ok(0) => {}
        Ok(e) | Err(e) => {
            out.put(b"attestation: the guest request failed: 0x");
            out.hex(&e.to_be_bytes());
            out.end();
            return false;
        }
    }
    virtio::read_bytes(resp, &mut page);
    let mut report = [0u8; snp_msg::REPORT_SIZE];
    if let Err(e) = channel.open_report_response(&page, &mut report) {
        out.put(b"attestation: the response did not open: ");
        out.put(match e {
            snp_msg::MsgError::AuthFailed => b"bad tag",
            snp_msg::MsgError::BadSeqno => b"bad sequence number",
            snp_msg::MsgError::Status(_) => b"PSP error status",
            _ => b"malformed",
        });
        out.end();
        return false;
    }
    let fields: [(&[u8], core::ops::Range<usize>); 4] = [
        (b"attestation: measurement ", 0x90..0xc0),
        (b"attestation: report data ", 0x50..0x90),
        (b"attestation: host data ", 0xc0..0xe0),
        (b"attestation: policy ", 0x08..0x10),
    ];
    for (name, range) in fields {
        out.put(name);
        if name.ends_with(b"policy ") {
            let mut be = [0u8; 8];
            for (i, b) in report[range].iter().enumerate() {
                be[7 - i] = *b;
            }
            out.put(b"0x");
            out.hex(&be);
        } else {
            out.hex(&report[range]);
        }
        out.end();
    }
    for (i, chunk) in report.chunks(48).enumerate() {
        out.put(b"attestation: report ");
        out.dec(i as u64);
        out.put(b" ");
        out.hex(chunk);
        out.end();
    }
    let mut table = [0u8; 24];
    virtio::read_bytes(certs, &mut table);
    out.put(b"attestation: certificates ");
    let entries = table.chunks(24).take(1).filter(|e| e.iter().any(|&b| b != 0)).count();
    out.put(if entries > 0 { b"received" } else { b"none" });
    out.end();
    true
}

// virtio-vsock (virtio 1.2, 5.10): `struct virtio_vsock_hdr` is 44 bytes.
const VSOCK_HDR: u64 = 44;
const OP_REQUEST: u16 = 1;
const OP_RESPONSE: u16 = 2;
const OP_RST: u16 = 3;
const OP_SHUTDOWN: u16 = 4;
const OP_RW: u16 = 5;
const VSOCK_RX_DATA: u32 = 256;
const VSOCK_BUF_ALLOC: u32 = 2 * VSOCK_RX_DATA;

/// Fills in a stream packet header to host port [`VSOCK_PORT`].
fn vsock_hdr(at: u64, guest_cid: u64, op: u16, len: u32, flags: u32) {
    virtio::poke::<u64>(at, guest_cid);
    virtio::poke::<u64>(at + 8, 2);
    virtio::poke::<u32>(at + 16, VSOCK_LOCAL_PORT);
    virtio::poke::<u32>(at + 20, VSOCK_PORT);
    virtio::poke::<u32>(at + 24, len);
    virtio::poke::<u16>(at + 28, 1); // VIRTIO_VSOCK_TYPE_STREAM
    virtio::poke::<u16>(at + 30, op);
    virtio::poke::<u32>(at + 32, flags);
    virtio::poke::<u32>(at + 36, VSOCK_BUF_ALLOC);
    virtio::poke::<u32>(at + 40, 0); // fwd_cnt: nothing received yet
}

/// Returns whether the message was sent (having printed the outcome).
fn vsock(base: u64, mem: &mut Bump, out: &mut Out) -> bool {
    match vsock_send(base, mem) {
        Ok(Some(OP_RESPONSE)) => {
            out.put(b"vsock: sent");
            out.end();
            return true;
        }
        Ok(Some(_)) => out.put(b"vsock: connection refused"),
        Ok(None) => out.put(b"vsock: no response"),
        Err(e) => {
            out.put(b"vsock: ");
            out.put(e.text());
        }
    }
    out.end();
    false
}

/// Connects, and once the host accepts (RESPONSE) sends the message and shuts the
/// connection down. Returns the host's answer to the request (RESPONSE or RST), `None`
/// when it never answered.
fn vsock_send(base: u64, mem: &mut Bump) -> Result<Option<u16>, virtio::Error> {
    let oom = virtio::Error::OutOfMemory;
    let dev = Device::init(base, 19, 1)?; // VIRTIO_VSOCK_F_STREAM, if offered
    let mut rx = dev.queue(0, mem)?;
    let mut tx = dev.queue(1, mem)?;
    let _event = dev.queue(2, mem)?;
    let guest_cid = dev.config_u64(0);
    // Two receive buffers (header + data descriptors), the transmit header and payload.
    let rx_bufs = mem.alloc(2 * 512, 64).ok_or(oom)?;
    let tx_hdr = mem.alloc(64 + 64, 64).ok_or(oom)?;
    let tx_data = tx_hdr + 64;
    dev.driver_ok();
    let mut heads = [0u16; 2];
    for (i, head) in heads.iter_mut().enumerate() {
        let b = rx_bufs + 512 * i as u64;
        *head = rx.submit(&[Buf::input(b, VSOCK_HDR as u32), Buf::input(b + VSOCK_HDR, VSOCK_RX_DATA)])?;
    }
    vsock_hdr(tx_hdr, guest_cid, OP_REQUEST, 0, 0);
    tx.transfer(&[Buf::out(tx_hdr, VSOCK_HDR as u32)])?;

    // Wait for the answer to our request, skipping packets for other connections
    // (re-posting their buffers) and credit updates.
    let mut answer = None;
    for _ in 0..8 {
        let (id, _len) = match rx.wait(virtio::DEFAULT_SPINS) {
            Ok(done) => done,
            Err(virtio::Error::Timeout) => break,
            Err(e) => return Err(e),
        };
        let Some(i) = heads.iter().position(|&h| h == id) else { return Err(virtio::Error::BadUsedEntry) };
        let b = rx_bufs + 512 * i as u64;
        let mut hdr = [0u8; VSOCK_HDR as usize];
        virtio::read_bytes(b, &mut hdr);
        let src_port = u32::from_le_bytes([hdr[16], hdr[17], hdr[18], hdr[19]]);
        let dst_port = u32::from_le_bytes([hdr[20], hdr[21], hdr[22], hdr[23]]);
        let op = u16::from_le_bytes([hdr[30], hdr[31]]);
        if src_port == VSOCK_PORT && dst_port == VSOCK_LOCAL_PORT && (op == OP_RESPONSE || op == OP_RST) {
            answer = Some(op);
            break;
        }
        heads[i] = rx.submit(&[Buf::input(b, VSOCK_HDR as u32), Buf::input(b + VSOCK_HDR, VSOCK_RX_DATA)])?;
    }
    if answer != Some(OP_RESPONSE) {
        return Ok(answer);
    }
    virtio::write_bytes(tx_data, VSOCK_MESSAGE);
    vsock_hdr(tx_hdr, guest_cid, OP_RW, VSOCK_MESSAGE.len() as u32, 0);
    tx.transfer(&[Buf::out(tx_hdr, VSOCK_HDR as u32), Buf::out(tx_data, VSOCK_MESSAGE.len() as u32)])?;
    // VIRTIO_VSOCK_SHUTDOWN_RCV | VIRTIO_VSOCK_SHUTDOWN_SEND. The host answers with RST
    // once it has closed its side; the guest does not wait for that.
    vsock_hdr(tx_hdr, guest_cid, OP_SHUTDOWN, 0, 3);
    tx.transfer(&[Buf::out(tx_hdr, VSOCK_HDR as u32)])?;
    Ok(answer)
}
