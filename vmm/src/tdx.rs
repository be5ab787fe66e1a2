//! The VMM's side of an emulated TDX guest: TDCALL, as the TDX module and KVM would
//! answer it.
//!
//! On this project's hosts TDCALL (`66 0f 01 cc`) ends in an emulation-failure exit that
//! carries the instruction bytes; cvmm reads the registers, does what the TDX module
//! (TDG.VP.INFO, TDG.MEM.PAGE.ACCEPT, TDG.MR.RTMR.EXTEND, TDG.MR.REPORT) or, for
//! TDG.VP.VMCALL, what KVM and the VMM do for a real TD (the GHCI's TDVMCALLs: MapGPA,
//! GetQuote, ReportFatalError, SetupEventNotifyInterrupt, GetTdVmCallInfo, and the
//! instruction exits CPUID, HLT, IO, RDMSR, WRMSR, EPT violation (MMIO)), writes the
//! results back and moves RIP past the instruction.
//!
//! Every register argument is checked (alignment, range, shared or private, the
//! buffer's size); a bad one gets the GHCI status (invalid operand, alignment error,
//! retry) or the TDX module's (operand invalid), never a VMM failure. Guest memory the
//! module reads or writes (RTMR data, REPORTDATA, the TD report) must be private; the
//! GetQuote buffer must be shared.
//!
//! GetQuote completes asynchronously, as with a real quote service: the vCPU marks the
//! buffer IN_FLIGHT and returns to the guest; the emulated quoting enclave's quote is
//! made by a job on the VM's GetQuote thread (`crate::quote_thread`), which writes it
//! (quote first, header with SUCCESS last) and sends the vector registered with
//! SetupEventNotifyInterrupt to the registering vCPU's APIC as an MSI (KVM_SIGNAL_MSI;
//! the local APICs are KVM's, the IOAPIC is not involved). The emulated enclave serves
//! one request at a time: a GetQuote while another is in flight is answered
//! TDVMCALL_RETRY with its buffer untouched (QEMU's answer when its queue is full).

use std::sync::Arc;

use arch::tdcall::*;
use devices::bus::Bus;
use devices::virtio::SharedMemory;
use kvm_bindings::{kvm_cpuid_entry2, kvm_regs};
use kvm_ioctls::VcpuFd;
use launch::tdx::emulated::{AcceptResult, EmulatedTdxPlatform, SHARED_BIT};
use launch::tdx::kvm::exits::{notify_msi, MsiInjector};
use launch::tdx::kvm::quote::{QuoteJob, QuoteRunner};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::msr::MsrAccess;
use crate::vm::VmEvent;

const PAGE: u64 = 0x1000;
/// MapGPA converts at most this much per call and answers RETRY for the rest.
const MAP_GPA_CHUNK: u64 = 0x20_0000;
/// How long the emulated quote generation takes at least when it runs off the vCPU
/// thread: about what a local quote generation service takes, so that a TD sees its
/// request in flight (and a second one answered RETRY) as it would on hardware.
pub const EMULATED_QUOTE_LATENCY: std::time::Duration = std::time::Duration::from_millis(10);
/// How long a TDVMCALL<HLT> with interrupts enabled idles the vCPU.
pub const IDLE_WAKEUP: std::time::Duration = std::time::Duration::from_millis(1);

/// What the vCPU loop does after a TDCALL.
pub enum TdcallOutcome {
    /// Run the vCPU again.
    Continue,
    /// Park the vCPU until the VM ends (TDVMCALL<HLT> with interrupts blocked).
    Park,
    /// Let the vCPU idle for [`IDLE_WAKEUP`], then run it again (TDVMCALL<HLT> with
    /// interrupts enabled: this platform injects no timer interrupts into a TD, so a
    /// halt that may be woken ends after one timer tick's worth of time, as if a timer
    /// interrupt had arrived; an interrupt it does inject (a GetQuote notification) is
    /// delivered when the vCPU runs again). This is how the firmware's parked application
    /// processors poll the ACPI wakeup mailbox without spinning at CPL0.
    Idle,
    /// End the VM.
    End(VmEvent),
}

/// One vCPU's TDCALL handler.
pub struct TdxVcpuExits {
    index: u32,
    platform: Arc<EmulatedTdxPlatform>,
    shared: Arc<SharedMemory>,
    cpuid: Arc<[kvm_cpuid_entry2]>,
    /// All of guest memory: only the module's own accesses (private memory) use it.
    mem: GuestMemoryMmap,
    /// Where GetQuote completions run.
    quotes: Arc<dyn QuoteRunner>,
    /// How completions are announced (none: the vector is never raised).
    injector: Option<Arc<dyn MsiInjector>>,
    /// The least time a quote takes ([`EMULATED_QUOTE_LATENCY`] off the vCPU thread).
    quote_latency: std::time::Duration,
}

/// Runs each GetQuote job at once, on the vCPU's thread (the handler's default: tests
/// and fuzzing, where there is no VM to notify).
struct Inline;

impl QuoteRunner for Inline {
    fn run(&self, job: QuoteJob) -> Result<(), QuoteJob> {
        job();
        Ok(())
    }
}

impl std::fmt::Debug for TdxVcpuExits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TdxVcpuExits").field("index", &self.index).finish_non_exhaustive()
    }
}

impl TdxVcpuExits {
    /// The handler of vCPU `index`.
    pub fn new(
        index: u32,
        platform: Arc<EmulatedTdxPlatform>,
        shared: Arc<SharedMemory>,
        cpuid: Arc<[kvm_cpuid_entry2]>,
        mem: GuestMemoryMmap,
    ) -> Self {
        Self {
            index,
            platform,
            shared,
            cpuid,
            mem,
            quotes: Arc::new(Inline),
            injector: None,
            quote_latency: std::time::Duration::ZERO,
        }
    }

    /// The same with GetQuote completions run by `quotes`, taking at least
    /// [`EMULATED_QUOTE_LATENCY`], and announced through `injector` (without, they
    /// complete on the vCPU's thread at once, unannounced).
    pub fn with_quotes(mut self, quotes: Arc<dyn QuoteRunner>, injector: Arc<dyn MsiInjector>) -> Self {
        self.quotes = quotes;
        self.injector = Some(injector);
        self.quote_latency = EMULATED_QUOTE_LATENCY;
        self
    }

    fn end(&self, message: String) -> TdcallOutcome {
        TdcallOutcome::End(VmEvent::VcpuFailed { vcpu: self.index, message })
    }

    /// An emulation failure: a TDCALL is served (`Some`), anything else is the caller's.
    pub fn emulation_failure(&mut self, vcpu: &mut VcpuFd, pio: &Bus, mmio: &Bus) -> Option<TdcallOutcome> {
        let run = vcpu.get_kvm_run();
        // SAFETY: the exit reason is KVM_EXIT_INTERNAL_ERROR (the caller checked); with the
        // instruction-bytes flag its `emulation_failure` member's bytes are valid.
        let (flags, bytes) = unsafe {
            let e = run.__bindgen_anon_1.emulation_failure;
            (e.flags, e.__bindgen_anon_1.__bindgen_anon_1.insn_bytes)
        };
        if flags & u64::from(kvm_bindings::KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES) == 0
            || bytes[..4] != TDCALL_BYTES
        {
            return None;
        }
        let mut regs = match vcpu.get_regs() {
            Ok(r) => r,
            Err(e) => return Some(self.end(format!("KVM_GET_REGS: {e}"))),
        };
        let outcome = self.tdcall(&mut regs, vcpu, pio, mmio);
        if let TdcallOutcome::End(_) = outcome {
            return Some(outcome);
        }
        if let Err(e) = vcpu.set_regs(&regs) {
            return Some(self.end(format!("KVM_SET_REGS: {e}")));
        }
        Some(outcome)
    }

    /// A TDCALL with the vCPU's registers `regs` (RAX the leaf, the rest its operands),
    /// as the TDX module (and, for TDG.VP.VMCALL, KVM and the VMM) would complete it:
    /// results in `regs`, RIP past the instruction, except when the VM ends. MSR
    /// requests go to `msrs`, port I/O to `pio`, MMIO to `mmio`.
    pub fn tdcall(&mut self, regs: &mut kvm_regs, msrs: &mut impl MsrAccess, pio: &Bus, mmio: &Bus) -> TdcallOutcome {
        let outcome = match regs.rax {
            TDG_VP_VMCALL => self.tdvmcall(regs, msrs, pio, mmio),
            TDG_VP_INFO => {
                regs.rcx = launch::tdx::emulated::GPAW;
                regs.rdx = launch::tdx::emulated::ATTRIBUTES;
                let n = u64::from(self.platform.vcpus());
                regs.r8 = (n << 32) | n;
                regs.r9 = u64::from(self.index);
                regs.rax = TDX_SUCCESS;
                TdcallOutcome::Continue
            }
            TDG_MEM_PAGE_ACCEPT => {
                regs.rax = self.accept(regs.rcx & !0xfff, regs.rcx & 0x7);
                TdcallOutcome::Continue
            }
            TDG_MR_RTMR_EXTEND => {
                regs.rax = self.rtmr_extend(regs.rcx, regs.rdx);
                TdcallOutcome::Continue
            }
            TDG_MR_REPORT => {
                regs.rax = self.report(regs.rcx, regs.rdx, regs.r8);
                TdcallOutcome::Continue
            }
            _ => {
                regs.rax = TDX_OPERAND_INVALID;
                TdcallOutcome::Continue
            }
        };
        if !matches!(outcome, TdcallOutcome::End(_)) {
            regs.rip += 4;
        }
        outcome
    }

    /// Whether `[gpa, gpa + len)` is private, accepted guest RAM (what the module may
    /// read and write for the TD).
    fn private(&self, gpa: u64, len: u64) -> bool {
        let pages = self.platform.pages();
        let first = gpa & !(PAGE - 1);
        let Some(end) = gpa.checked_add(len) else { return false };
        (first..end).step_by(PAGE as usize).all(|p| pages.state(p).is_some_and(|s| s.private && s.validated))
    }

    fn accept(&self, gpa: u64, level: u64) -> u64 {
        let mut result = self.platform.accept(gpa, level);
        if result == AcceptResult::Shared {
            // KVM would see a private access to a shared page (memory fault) and the VMM
            // convert it: do the same.
            if self.convert(gpa, PAGE, true).is_err() {
                return TDX_OPERAND_INVALID;
            }
            result = self.platform.accept(gpa, level);
        }
        match result {
            AcceptResult::Accepted => TDX_SUCCESS,
            AcceptResult::AlreadyAccepted => TDX_PAGE_ALREADY_ACCEPTED,
            AcceptResult::SizeMismatch => TDX_PAGE_SIZE_MISMATCH,
            AcceptResult::Invalid | AcceptResult::Shared => TDX_OPERAND_INVALID,
        }
    }

    fn rtmr_extend(&self, gpa: u64, index: u64) -> u64 {
        if !gpa.is_multiple_of(64) || !self.private(gpa, 48) {
            return TDX_OPERAND_INVALID;
        }
        let mut data = [0u8; 48];
        if self.mem.read_slice(&mut data, GuestAddress(gpa)).is_err() {
            return TDX_OPERAND_INVALID;
        }
        if self.platform.module().rtmr_extend(index, &data) {
            TDX_SUCCESS
        } else {
            TDX_OPERAND_INVALID
        }
    }

    fn report(&self, report_gpa: u64, data_gpa: u64, subtype: u64) -> u64 {
        if subtype != 0 || !report_gpa.is_multiple_of(1024) || !data_gpa.is_multiple_of(64) {
            return TDX_OPERAND_INVALID;
        }
        if !self.private(report_gpa, TDREPORT_SIZE as u64) || !self.private(data_gpa, 64) {
            return TDX_OPERAND_INVALID;
        }
        let mut report_data = [0u8; 64];
        if self.mem.read_slice(&mut report_data, GuestAddress(data_gpa)).is_err() {
            return TDX_OPERAND_INVALID;
        }
        match self.platform.td_report(&report_data) {
            Ok(report) if self.mem.write_slice(&report, GuestAddress(report_gpa)).is_ok() => TDX_SUCCESS,
            _ => TDX_OPERAND_INVALID,
        }
    }

    /// A page conversion in the page states and the devices' view.
    fn convert(&self, gpa: u64, len: u64, private: bool) -> Result<(), ()> {
        self.platform.pages().set_private(gpa, len, private).map_err(|_| ())?;
        self.shared.set_shared(gpa, len, !private).map_err(|_| ())
    }

    fn tdvmcall(&self, regs: &mut kvm_regs, msrs: &mut impl MsrAccess, pio: &Bus, mmio: &Bus) -> TdcallOutcome {
        regs.rax = TDX_SUCCESS;
        if regs.r10 != TDVMCALL_STANDARD {
            regs.r10 = TDVMCALL_INVALID_OPERAND;
            return TdcallOutcome::Continue;
        }
        let (status, outcome) = match regs.r11 {
            TDVMCALL_GET_TD_VM_CALL_INFO if regs.r12 == 0 => {
                (regs.r11, regs.r12, regs.r13, regs.r14) = (0, 0, 0, 0);
                (TDVMCALL_SUCCESS, TdcallOutcome::Continue)
            }
            TDVMCALL_MAP_GPA => (self.map_gpa(regs), TdcallOutcome::Continue),
            TDVMCALL_GET_QUOTE => (self.get_quote(regs.r12, regs.r13), TdcallOutcome::Continue),
            TDVMCALL_REPORT_FATAL_ERROR => {
                let event = VmEvent::TdxFatalError { vcpu: self.index, code: regs.r12 };
                return TdcallOutcome::End(event);
            }
            TDVMCALL_SETUP_EVENT_NOTIFY => match u8::try_from(regs.r12) {
                Ok(v) if v >= 32 => {
                    self.platform.module().notify = Some((v, self.index));
                    (TDVMCALL_SUCCESS, TdcallOutcome::Continue)
                }
                _ => (TDVMCALL_INVALID_OPERAND, TdcallOutcome::Continue),
            },
            EXIT_REASON_CPUID => {
                let e = self.cpuid.iter().find(|e| {
                    u64::from(e.function) == regs.r12 && (u64::from(e.index) == regs.r13 || e.flags & 1 == 0)
                });
                let (a, b, c, d) = e.map_or((0, 0, 0, 0), |e| (e.eax, e.ebx, e.ecx, e.edx));
                (regs.r12, regs.r13, regs.r14, regs.r15) = (a.into(), b.into(), c.into(), d.into());
                (TDVMCALL_SUCCESS, TdcallOutcome::Continue)
            }
            // R12: the interrupt-blocked flag.
            EXIT_REASON_HLT if regs.r12 == 0 => (TDVMCALL_SUCCESS, TdcallOutcome::Idle),
            EXIT_REASON_HLT => (TDVMCALL_SUCCESS, TdcallOutcome::Park),
            EXIT_REASON_IO => (self.io(regs, pio), TdcallOutcome::Continue),
            EXIT_REASON_EPT_VIOLATION => (self.mmio(regs, mmio), TdcallOutcome::Continue),
            EXIT_REASON_RDMSR => match u32::try_from(regs.r12).ok().and_then(|index| msrs.read_msr(index)) {
                Some(value) => {
                    regs.r11 = value;
                    (TDVMCALL_SUCCESS, TdcallOutcome::Continue)
                }
                None => (TDVMCALL_INVALID_OPERAND, TdcallOutcome::Continue),
            },
            EXIT_REASON_WRMSR => {
                let ok = u32::try_from(regs.r12).is_ok_and(|index| msrs.write_msr(index, regs.r13));
                (if ok { TDVMCALL_SUCCESS } else { TDVMCALL_INVALID_OPERAND }, TdcallOutcome::Continue)
            }
            _ => (TDVMCALL_INVALID_OPERAND, TdcallOutcome::Continue),
        };
        regs.r10 = status;
        outcome
    }

    /// MapGPA R12 (shared bit: to shared), R13 bytes: at most [`MAP_GPA_CHUNK`] per call,
    /// RETRY with R11 = where to resume.
    fn map_gpa(&self, regs: &mut kvm_regs) -> u64 {
        let (gpa, size) = (regs.r12, regs.r13);
        let shared = gpa & SHARED_BIT != 0;
        let start = gpa & !SHARED_BIT;
        if !start.is_multiple_of(PAGE) || size % PAGE != 0 {
            return TDVMCALL_ALIGN_ERROR;
        }
        if size == 0 || start >= SHARED_BIT || start.checked_add(size).is_none_or(|e| e > SHARED_BIT) {
            return TDVMCALL_INVALID_OPERAND;
        }
        let now = size.min(MAP_GPA_CHUNK);
        if self.convert(start, now, !shared).is_err() {
            return TDVMCALL_INVALID_OPERAND;
        }
        if now < size {
            regs.r11 = (start + now) | (gpa & SHARED_BIT);
            return TDVMCALL_RETRY;
        }
        TDVMCALL_SUCCESS
    }

    fn io(&self, regs: &mut kvm_regs, pio: &Bus) -> u64 {
        let size = match regs.r12 {
            1 | 2 | 4 => regs.r12 as usize,
            _ => return TDVMCALL_INVALID_OPERAND,
        };
        let Ok(port) = u16::try_from(regs.r14) else { return TDVMCALL_INVALID_OPERAND };
        match regs.r13 {
            0 => {
                let mut data = [0u8; 8];
                pio.read(u64::from(port), &mut data[..size]);
                regs.r11 = u64::from_le_bytes(data);
            }
            1 => {
                pio.write(u64::from(port), &regs.r15.to_le_bytes()[..size]);
            }
            _ => return TDVMCALL_INVALID_OPERAND,
        }
        TDVMCALL_SUCCESS
    }

    fn mmio(&self, regs: &mut kvm_regs, mmio: &Bus) -> u64 {
        let size = match regs.r12 {
            1 | 2 | 4 | 8 => regs.r12 as usize,
            _ => return TDVMCALL_INVALID_OPERAND,
        };
        let gpa = regs.r14 & !SHARED_BIT;
        if !gpa.is_multiple_of(regs.r12) {
            return TDVMCALL_ALIGN_ERROR;
        }
        // MMIO requests are for device memory, never for guest RAM.
        if self.platform.pages().state(gpa & !(PAGE - 1)).is_some() {
            return TDVMCALL_INVALID_OPERAND;
        }
        match regs.r13 {
            0 => {
                let mut data = [0u8; 8];
                mmio.read(gpa, &mut data[..size]);
                regs.r11 = u64::from_le_bytes(data);
            }
            1 => {
                mmio.write(gpa, &regs.r15.to_le_bytes()[..size]);
            }
            _ => return TDVMCALL_INVALID_OPERAND,
        }
        TDVMCALL_SUCCESS
    }

    /// GetQuote: the buffer (R12, shared GPA; R13 bytes) holds a header and the TD report.
    /// A valid request is marked IN_FLIGHT and handed to the GetQuote runner, which
    /// replaces the report with the emulated quoting enclave's quote, sets the status
    /// and raises the notify vector, if one is registered. A malformed header is
    /// answered in the buffer at once (status ERROR). RETRY while another request is
    /// in flight or when the runner is gone.
    fn get_quote(&self, gpa: u64, len: u64) -> u64 {
        if gpa & SHARED_BIT == 0 {
            return TDVMCALL_INVALID_OPERAND;
        }
        let buf = gpa & !SHARED_BIT;
        if !buf.is_multiple_of(PAGE) || !len.is_multiple_of(PAGE) {
            return TDVMCALL_ALIGN_ERROR;
        }
        let min = (QUOTE_HEADER_SIZE + TDREPORT_SIZE) as u64;
        if len < min || len > 64 * PAGE || !self.shared.is_shared(buf, len) {
            return TDVMCALL_INVALID_OPERAND;
        }
        let mut request = vec![0u8; QUOTE_HEADER_SIZE + TDREPORT_SIZE];
        if read_shared(&self.shared, buf, &mut request).is_err() {
            return TDVMCALL_INVALID_OPERAND;
        }
        let version = u64::from_le_bytes(request[0..8].try_into().unwrap_or_default());
        let in_len = u32::from_le_bytes(request[16..20].try_into().unwrap_or_default());
        if version != 1 || in_len as usize != TDREPORT_SIZE {
            let header = quote_header(GET_QUOTE_ERROR, in_len, 0);
            return match write_shared(&self.shared, buf, &header) {
                Ok(()) => TDVMCALL_SUCCESS,
                Err(()) => TDVMCALL_INVALID_OPERAND,
            };
        }
        {
            let mut module = self.platform.module();
            if module.quote_in_flight.is_some() {
                return TDVMCALL_RETRY;
            }
            module.quote_in_flight = Some(buf);
        }
        let in_flight = quote_header(GET_QUOTE_IN_FLIGHT, in_len, 0);
        if write_shared(&self.shared, buf, &in_flight).is_err() {
            self.platform.module().quote_in_flight = None;
            return TDVMCALL_INVALID_OPERAND;
        }
        let job = QuoteCompletion {
            vcpu: self.index,
            platform: self.platform.clone(),
            shared: self.shared.clone(),
            injector: self.injector.clone(),
            latency: self.quote_latency,
            buf,
            len,
            report: request[QUOTE_HEADER_SIZE..].to_vec(),
        };
        match self.quotes.run(Box::new(move || job.run())) {
            Ok(()) => TDVMCALL_SUCCESS,
            Err(_) => {
                // Nothing will complete it: give the TD its header back and let it retry.
                let _ = write_shared(&self.shared, buf, &request[..QUOTE_HEADER_SIZE]);
                self.platform.module().quote_in_flight = None;
                TDVMCALL_RETRY
            }
        }
    }
}

/// A GetQuote buffer's header: version 1, `status`, `in_len`, `out_len`.
fn quote_header(status: u64, in_len: u32, out_len: u32) -> [u8; QUOTE_HEADER_SIZE] {
    let mut h = [0u8; QUOTE_HEADER_SIZE];
    h[0..8].copy_from_slice(&1u64.to_le_bytes());
    h[8..16].copy_from_slice(&status.to_le_bytes());
    h[16..20].copy_from_slice(&in_len.to_le_bytes());
    h[20..24].copy_from_slice(&out_len.to_le_bytes());
    h
}

fn read_shared(shared: &SharedMemory, gpa: u64, buf: &mut [u8]) -> Result<(), ()> {
    use vm_memory::GuestAddressSpace;
    shared.view().memory().read_slice(buf, GuestAddress(gpa)).map_err(|_| ())
}

fn write_shared(shared: &SharedMemory, gpa: u64, bytes: &[u8]) -> Result<(), ()> {
    use vm_memory::GuestAddressSpace;
    shared.view().memory().write_slice(bytes, GuestAddress(gpa)).map_err(|_| ())
}

/// The rest of one GetQuote, off the vCPU's thread.
struct QuoteCompletion {
    vcpu: u32,
    platform: Arc<EmulatedTdxPlatform>,
    shared: Arc<SharedMemory>,
    injector: Option<Arc<dyn MsiInjector>>,
    latency: std::time::Duration,
    buf: u64,
    len: u64,
    report: Vec<u8>,
}

impl QuoteCompletion {
    /// Makes the quote, writes it and then the header (a TD polling the status never
    /// sees SUCCESS before its quote), ends the request and announces it. A buffer the
    /// TD made private meanwhile is left alone and nothing is announced.
    fn run(self) {
        let started = std::time::Instant::now();
        let quoted = self.platform.quote(&self.report);
        if let Some(rest) = self.latency.checked_sub(started.elapsed()) {
            std::thread::sleep(rest);
        }
        let (status, quote) = match quoted {
            Ok(q) if (QUOTE_HEADER_SIZE + q.len()) as u64 <= self.len => (GET_QUOTE_SUCCESS, q),
            Ok(q) => {
                log::warn!("vCPU {}: GetQuote: a {}-byte quote does not fit the buffer", self.vcpu, q.len());
                (GET_QUOTE_ERROR, Vec::new())
            }
            Err(e) => {
                log::warn!("vCPU {}: GetQuote: {e}", self.vcpu);
                (GET_QUOTE_SERVICE_UNAVAILABLE, Vec::new())
            }
        };
        let written = self.shared.is_shared(self.buf, self.len)
            && write_shared(&self.shared, self.buf + QUOTE_HEADER_SIZE as u64, &quote).is_ok()
            && {
                std::sync::atomic::fence(std::sync::atomic::Ordering::Release);
                let header = quote_header(status, TDREPORT_SIZE as u32, quote.len() as u32);
                write_shared(&self.shared, self.buf, &header).is_ok()
            };
        // The request ends before the TD hears of it, so that its handler may ask again.
        let notify = {
            let mut module = self.platform.module();
            module.quote_in_flight = None;
            module.notify
        };
        if !written {
            log::warn!("vCPU {}: GetQuote: the buffer at {:#x} is no longer shared", self.vcpu, self.buf);
            return;
        }
        if let (Some((vector, apic_id)), Some(injector)) = (notify, &self.injector) {
            if let Err(e) = injector.inject(notify_msi(vector, apic_id)) {
                log::warn!("vCPU {}: GetQuote: cannot notify the TD (vector {vector:#x}): {e}", self.vcpu);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use launch::tdx::certs::EmulatedIntelChain;
    use launch::tdx::emulated::TdxModuleConfig;
    use launch::tdx::quote::QuotingEnclave;

    /// MSRs that exist: 0x10 only.
    struct OneMsr(u64);

    impl MsrAccess for OneMsr {
        fn read_msr(&mut self, index: u32) -> Option<u64> {
            (index == 0x10).then_some(self.0)
        }
        fn write_msr(&mut self, index: u32, value: u64) -> bool {
            if index == 0x10 {
                self.0 = value;
            }
            index == 0x10
        }
    }

    /// vCPU 1's handler on a finalized emulated TD of 2 vCPUs over 8 MiB of memory.
    fn handler() -> TdxVcpuExits {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 8 << 20)]).unwrap();
        let chain = EmulatedIntelChain::load_or_create_default().unwrap();
        let qe = Arc::new(QuotingEnclave::new(&chain).unwrap());
        let platform = EmulatedTdxPlatform::new(&mem, &TdxModuleConfig::default(), 2, Arc::new(chain), qe);
        platform.finalize().unwrap();
        let shared = Arc::new(SharedMemory::all_private(&mem));
        TdxVcpuExits::new(1, Arc::new(platform), shared, Vec::new().into(), mem)
    }

    fn vmcall(sub: u64, r12: u64, r13: u64) -> kvm_regs {
        kvm_regs { rax: TDG_VP_VMCALL, r10: TDVMCALL_STANDARD, r11: sub, r12, r13, rip: 0x1000, ..Default::default() }
    }

    #[test]
    fn msr_tdvmcalls_go_to_the_msr_access_and_refused_indexes_are_invalid_operands() {
        let mut exits = handler();
        let mut msrs = OneMsr(0x55);
        let (pio, mmio) = (Bus::new(), Bus::new());

        let mut regs = vmcall(EXIT_REASON_RDMSR, 0x10, 0);
        assert!(matches!(exits.tdcall(&mut regs, &mut msrs, &pio, &mmio), TdcallOutcome::Continue));
        assert_eq!((regs.rax, regs.r10, regs.r11, regs.rip), (TDX_SUCCESS, TDVMCALL_SUCCESS, 0x55, 0x1004));

        let mut regs = vmcall(EXIT_REASON_WRMSR, 0x10, 0x66);
        exits.tdcall(&mut regs, &mut msrs, &pio, &mmio);
        assert_eq!((regs.r10, msrs.0), (TDVMCALL_SUCCESS, 0x66));

        // An index the vCPU refuses, and one that is not an MSR index at all.
        for index in [0x11, 0x1_0000_0010] {
            let mut regs = vmcall(EXIT_REASON_RDMSR, index, 0);
            exits.tdcall(&mut regs, &mut msrs, &pio, &mmio);
            assert_eq!(regs.r10, TDVMCALL_INVALID_OPERAND, "RDMSR {index:#x}");
            let mut regs = vmcall(EXIT_REASON_WRMSR, index, 1);
            exits.tdcall(&mut regs, &mut msrs, &pio, &mmio);
            assert_eq!(regs.r10, TDVMCALL_INVALID_OPERAND, "WRMSR {index:#x}");
        }
        assert_eq!(msrs.0, 0x66);
    }

    #[test]
    fn map_gpa_converts_at_most_2_mib_per_call_and_says_where_to_resume() {
        let mut exits = handler();
        let (pio, mmio) = (Bus::new(), Bus::new());
        let mut regs = vmcall(TDVMCALL_MAP_GPA, SHARED_BIT | 0x20_0000, 0x30_0000);
        exits.tdcall(&mut regs, &mut OneMsr(0), &pio, &mmio);
        assert_eq!((regs.r10, regs.r11), (TDVMCALL_RETRY, SHARED_BIT | 0x40_0000));
        assert!(exits.shared.is_shared(0x20_0000, 0x20_0000));
        assert!(!exits.shared.is_shared(0x40_0000, PAGE));
        let state = exits.platform.pages().state(0x3f_f000).unwrap();
        assert!(!state.private);
    }

    /// A runner that keeps its jobs until the test runs them.
    #[derive(Default)]
    struct Held(std::sync::Mutex<Vec<QuoteJob>>);

    impl QuoteRunner for Held {
        fn run(&self, job: QuoteJob) -> Result<(), QuoteJob> {
            self.0.lock().unwrap().push(job);
            Ok(())
        }
    }

    impl Held {
        fn run_all(&self) -> usize {
            let jobs: Vec<_> = self.0.lock().unwrap().drain(..).collect();
            let n = jobs.len();
            jobs.into_iter().for_each(|j| j());
            n
        }
    }

    /// A runner whose thread is gone.
    struct Refusing;

    impl QuoteRunner for Refusing {
        fn run(&self, job: QuoteJob) -> Result<(), QuoteJob> {
            Err(job)
        }
    }

    type Sent = Arc<std::sync::Mutex<Vec<kvm_bindings::kvm_msi>>>;

    fn recording_injector() -> (Arc<dyn MsiInjector>, Sent) {
        let sent: Sent = Arc::default();
        let s = sent.clone();
        let injector: Arc<dyn MsiInjector> = Arc::new(move |msi: kvm_bindings::kvm_msi| {
            s.lock().unwrap().push(msi);
            Ok(())
        });
        (injector, sent)
    }

    const QUOTE_BUF: u64 = 0x40_0000;

    /// Shares 2 pages at QUOTE_BUF (MapGPA) and writes a GetQuote request for a TD
    /// report of this platform into them.
    fn quote_request(exits: &mut TdxVcpuExits) -> Vec<u8> {
        let mut regs = vmcall(TDVMCALL_MAP_GPA, SHARED_BIT | QUOTE_BUF, 2 * PAGE);
        exits.tdcall(&mut regs, &mut OneMsr(0), &Bus::new(), &Bus::new());
        assert_eq!(regs.r10, TDVMCALL_SUCCESS);
        let report = exits.platform.td_report(&[0x11; 64]).unwrap();
        let mut request = quote_header(0, TDREPORT_SIZE as u32, 0).to_vec();
        request.extend_from_slice(&report);
        write_shared(&exits.shared, QUOTE_BUF, &request).unwrap();
        request
    }

    fn get_quote(exits: &mut TdxVcpuExits) -> u64 {
        let mut regs = vmcall(TDVMCALL_GET_QUOTE, SHARED_BIT | QUOTE_BUF, 2 * PAGE);
        let outcome = exits.tdcall(&mut regs, &mut OneMsr(0), &Bus::new(), &Bus::new());
        assert!(matches!(outcome, TdcallOutcome::Continue));
        assert_eq!((regs.rax, regs.rip), (TDX_SUCCESS, 0x1004));
        regs.r10
    }

    fn buffer(exits: &TdxVcpuExits, len: usize) -> Vec<u8> {
        let mut b = vec![0u8; len];
        read_shared(&exits.shared, QUOTE_BUF, &mut b).unwrap();
        b
    }

    fn status_of(buffer: &[u8]) -> u64 {
        u64::from_le_bytes(buffer[8..16].try_into().unwrap())
    }

    #[test]
    fn get_quote_is_in_flight_until_its_job_runs_then_written_and_announced_to_the_registering_apic() {
        let runner = Arc::new(Held::default());
        let (injector, sent) = recording_injector();
        let mut exits = handler().with_quotes(runner.clone(), injector);
        let mut regs = vmcall(TDVMCALL_SETUP_EVENT_NOTIFY, 0x41, 0);
        exits.tdcall(&mut regs, &mut OneMsr(0), &Bus::new(), &Bus::new());
        assert_eq!(regs.r10, TDVMCALL_SUCCESS);
        let request = quote_request(&mut exits);

        assert_eq!(get_quote(&mut exits), TDVMCALL_SUCCESS);

        let now = buffer(&exits, request.len());
        assert_eq!(status_of(&now), GET_QUOTE_IN_FLIGHT);
        assert_eq!(now[24..], request[24..], "the report is untouched while in flight");
        assert!(sent.lock().unwrap().is_empty(), "nothing announced before completion");

        assert_eq!(runner.run_all(), 1);

        let done = buffer(&exits, 2 * PAGE as usize);
        assert_eq!(status_of(&done), GET_QUOTE_SUCCESS);
        let out_len = u32::from_le_bytes(done[20..24].try_into().unwrap()) as usize;
        let quote = &done[24..24 + out_len];
        // An independent check of the quote: the verifier parses it and finds the
        // report data the TD asked for.
        let parsed = launch::tdx::quote::Quote::parse(quote).expect("a DCAP quote");
        assert_eq!(parsed.body.report_data, [0x11; 64]);
        // vCPU 1 registered vector 0x41: an MSI to APIC 1 (address 0xfee01000).
        let msis = sent.lock().unwrap().clone();
        assert_eq!(msis.len(), 1);
        assert_eq!((msis[0].address_lo, msis[0].address_hi, msis[0].data), (0xfee0_1000, 0, 0x41));
        assert_eq!(exits.platform.module().quote_in_flight, None);
    }

    #[test]
    fn a_second_get_quote_while_one_is_in_flight_is_told_to_retry_and_its_buffer_left_alone() {
        let runner = Arc::new(Held::default());
        let (injector, _) = recording_injector();
        let mut exits = handler().with_quotes(runner.clone(), injector);
        quote_request(&mut exits);
        assert_eq!(get_quote(&mut exits), TDVMCALL_SUCCESS);
        // A second request in another buffer (vCPU 1 again; any vCPU is the same).
        let mut regs = vmcall(TDVMCALL_MAP_GPA, SHARED_BIT | 0x50_0000, 2 * PAGE);
        exits.tdcall(&mut regs, &mut OneMsr(0), &Bus::new(), &Bus::new());
        let second = quote_header(0, TDREPORT_SIZE as u32, 0);
        write_shared(&exits.shared, 0x50_0000, &second).unwrap();

        let mut regs = vmcall(TDVMCALL_GET_QUOTE, SHARED_BIT | 0x50_0000, 2 * PAGE);
        exits.tdcall(&mut regs, &mut OneMsr(0), &Bus::new(), &Bus::new());

        assert_eq!(regs.r10, TDVMCALL_RETRY);
        let mut back = [0u8; QUOTE_HEADER_SIZE];
        read_shared(&exits.shared, 0x50_0000, &mut back).unwrap();
        assert_eq!(back, second, "the retried request's buffer is untouched");
        assert_eq!(runner.run_all(), 1, "only the first was handed over");
        // Once the first is done, the same request is accepted.
        let mut regs = vmcall(TDVMCALL_GET_QUOTE, SHARED_BIT | 0x50_0000, 2 * PAGE);
        exits.tdcall(&mut regs, &mut OneMsr(0), &Bus::new(), &Bus::new());
        assert_eq!(regs.r10, TDVMCALL_SUCCESS);
    }

    #[test]
    fn without_a_registered_vector_a_completion_is_not_announced() {
        let runner = Arc::new(Held::default());
        let (injector, sent) = recording_injector();
        let mut exits = handler().with_quotes(runner.clone(), injector);
        quote_request(&mut exits);

        assert_eq!(get_quote(&mut exits), TDVMCALL_SUCCESS);
        runner.run_all();

        assert_eq!(status_of(&buffer(&exits, 24)), GET_QUOTE_SUCCESS);
        assert!(sent.lock().unwrap().is_empty());
    }

    #[test]
    fn a_runner_that_refuses_gets_the_td_to_retry_with_its_header_back() {
        let (injector, sent) = recording_injector();
        let mut exits = handler().with_quotes(Arc::new(Refusing), injector);
        let request = quote_request(&mut exits);

        assert_eq!(get_quote(&mut exits), TDVMCALL_RETRY);

        assert_eq!(buffer(&exits, request.len()), request);
        assert_eq!(exits.platform.module().quote_in_flight, None);
        assert!(sent.lock().unwrap().is_empty());
    }

    #[test]
    fn a_malformed_get_quote_header_is_answered_error_at_once() {
        let runner = Arc::new(Held::default());
        let (injector, _) = recording_injector();
        let mut exits = handler().with_quotes(runner.clone(), injector);
        quote_request(&mut exits);
        write_shared(&exits.shared, QUOTE_BUF, &2u64.to_le_bytes()).unwrap(); // version 2

        assert_eq!(get_quote(&mut exits), TDVMCALL_SUCCESS);

        assert_eq!(status_of(&buffer(&exits, 24)), GET_QUOTE_ERROR);
        assert_eq!(runner.run_all(), 0);
        assert_eq!(exits.platform.module().quote_in_flight, None);
    }

    #[test]
    fn a_fatal_error_report_ends_the_vm_without_moving_rip() {
        let mut exits = handler();
        let mut regs = vmcall(TDVMCALL_REPORT_FATAL_ERROR, 7, 0);
        let outcome = exits.tdcall(&mut regs, &mut OneMsr(0), &Bus::new(), &Bus::new());
        assert!(matches!(outcome, TdcallOutcome::End(VmEvent::TdxFatalError { vcpu: 1, code: 7 })));
        assert_eq!(regs.rip, 0x1000);
    }

    #[test]
    fn hlt_with_interrupts_enabled_idles_and_with_interrupts_blocked_parks() {
        let mut exits = handler();
        let mut regs = vmcall(EXIT_REASON_HLT, 0, 0);
        let outcome = exits.tdcall(&mut regs, &mut OneMsr(0), &Bus::new(), &Bus::new());
        assert!(matches!(outcome, TdcallOutcome::Idle));
        assert_eq!((regs.r10, regs.rip), (TDVMCALL_SUCCESS, 0x1004));
        let mut regs = vmcall(EXIT_REASON_HLT, 1, 0);
        assert!(matches!(exits.tdcall(&mut regs, &mut OneMsr(0), &Bus::new(), &Bus::new()), TdcallOutcome::Park));
    }

    #[test]
    fn unknown_leaves_and_non_standard_vmcalls_are_refused() {
        let mut exits = handler();
        let mut regs = kvm_regs { rax: 99, rip: 0x1000, ..Default::default() };
        exits.tdcall(&mut regs, &mut OneMsr(0), &Bus::new(), &Bus::new());
        assert_eq!((regs.rax, regs.rip), (TDX_OPERAND_INVALID, 0x1004));
        let mut regs = kvm_regs { r10: 1, ..vmcall(EXIT_REASON_CPUID, 0, 0) };
        exits.tdcall(&mut regs, &mut OneMsr(0), &Bus::new(), &Bus::new());
        assert_eq!((regs.rax, regs.r10), (TDX_SUCCESS, TDVMCALL_INVALID_OPERAND));
    }
}
