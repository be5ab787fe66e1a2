//! TDX-specific vCPU exits other than conversions (those are `crate::private_memory`'s):
//! the TDG.VP.VMCALLs KVM forwards as `KVM_EXIT_TDX` (GetQuote, SetupEventNotifyInterrupt,
//! GetTdVmCallInfo) and the TD's ReportFatalError (`KVM_SYSTEM_EVENT_TDX_FATAL`).
//!
//! Each TDG.VP.VMCALL is parsed into a [`TdVmCall`], its arguments checked (alignment,
//! ranges, the shared bit, the buffer in shared memory) and answered with a GHCI status
//! code in `ret` ([`super::uapi::tdvmcall_status`]), which KVM hands to the TD in R10 at
//! the next `KVM_RUN`. [`TdxExitHandler`] does all of it for the vCPU loop.
//!
//! Everything here reads values the TD chose: they are parsed and checked, never trusted.

use std::fmt;
use std::sync::{Arc, Mutex};

use kvm_bindings::{kvm_msi, kvm_run};

use super::ioctl::TdxCapabilities;
use super::options::QgsAddress;
use super::quote::{QuoteRequest, QuoteService, SharedGuestMemory, Started};
use super::uapi::{
    tdvmcall, tdvmcall_status, KvmTdxExit, KVM_EXIT_TDX, KVM_SYSTEM_EVENT_TDX_FATAL,
    TDVMCALLINFO_SETUP_EVENT_NOTIFY_INTERRUPT,
};

/// The `KVM_EXIT_TDX` fields of `run`, if that is its exit reason.
pub fn tdx_exit(run: &mut kvm_run) -> Option<&mut KvmTdxExit> {
    if run.exit_reason != KVM_EXIT_TDX {
        return None;
    }
    // SAFETY: the exit union is 256 bytes at offset 32, aligned to 8 (kvm-bindings lays
    // it out so: checked in uapi's tests), and KvmTdxExit is 64 bytes of u64s, valid for
    // any bits; the reference borrows `run` mutably, so nothing else aliases it.
    Some(unsafe { &mut *(&mut run.__bindgen_anon_1 as *mut _ as *mut KvmTdxExit) })
}

/// A forwarded TDG.VP.VMCALL, with its arguments as KVM gives them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TdVmCall {
    /// GetQuote: the shared buffer (KVM checked the shared bit was set and cleared it).
    GetQuote {
        /// The buffer's GPA.
        gpa: u64,
        /// Its size.
        size: u64,
    },
    /// SetupEventNotifyInterrupt: the vector to notify completions with.
    SetupEventNotifyInterrupt {
        /// The vector (KVM checked 32 to 255).
        vector: u64,
    },
    /// GetTdVmCallInfo (KVM forwards only leaf 1).
    GetTdVmCallInfo {
        /// The leaf.
        leaf: u64,
    },
    /// A leaf cvmm does not know.
    Other {
        /// The leaf.
        nr: u64,
    },
}

impl KvmTdxExit {
    /// The TDG.VP.VMCALL this exit forwards.
    pub fn call(&self) -> TdVmCall {
        // SAFETY: every member of the union is u64s only, valid for any bits.
        let u = unsafe { self.u.unknown };
        match self.nr {
            tdvmcall::GET_QUOTE => TdVmCall::GetQuote { gpa: u.data[0], size: u.data[1] },
            tdvmcall::SETUP_EVENT_NOTIFY_INTERRUPT => TdVmCall::SetupEventNotifyInterrupt { vector: u.data[0] },
            tdvmcall::GET_TD_VM_CALL_INFO => TdVmCall::GetTdVmCallInfo { leaf: u.data[0] },
            nr => TdVmCall::Other { nr },
        }
    }

    /// The status the TD gets in R10.
    pub fn ret(&self) -> u64 {
        // SAFETY: `ret` is the first u64 of every member.
        unsafe { self.u.unknown.ret }
    }

    /// Sets the status the TD gets in R10.
    pub fn set_ret(&mut self, ret: u64) {
        // Writing a union field of a Copy type is safe; the other members see it as
        // their `ret`.
        self.u.unknown.ret = ret;
    }

    /// Sets GetTdVmCallInfo's R11 to R14 for the TD.
    pub fn set_tdvmcall_info(&mut self, regs: [u64; 4]) {
        self.u.get_tdvmcall_info.r11 = regs[0];
        self.u.get_tdvmcall_info.r12 = regs[1];
        self.u.get_tdvmcall_info.r13 = regs[2];
        self.u.get_tdvmcall_info.r14 = regs[3];
    }
}

/// SetupEventNotifyInterrupt's vector, if it is one the TD may use (32 to 255, as the
/// GHCI and KVM say); INVALID_OPERAND otherwise.
pub fn event_notify_vector(vector: u64) -> Result<u8, u64> {
    match u8::try_from(vector) {
        Ok(v) if v >= 32 => Ok(v),
        _ => Err(tdvmcall_status::INVALID_OPERAND),
    }
}

/// GetTdVmCallInfo's R11 to R14 for `leaf`: leaf 1 is answered with the sub-functions
/// KVM serves itself plus those of the ones it forwards that cvmm implements
/// (SetupEventNotifyInterrupt), as QEMU answers; any other leaf is INVALID_OPERAND (KVM
/// answers leaf 0 itself).
pub fn tdvmcall_info(leaf: u64, caps: &TdxCapabilities) -> Result<[u64; 4], u64> {
    if leaf != 1 {
        return Err(tdvmcall_status::INVALID_OPERAND);
    }
    let r11 =
        (caps.user_tdvmcallinfo_1_r11 & TDVMCALLINFO_SETUP_EVENT_NOTIFY_INTERRUPT) | caps.kernel_tdvmcallinfo_1_r11;
    let r12 = caps.kernel_tdvmcallinfo_1_r12;
    Ok([r11, r12, 0, 0])
}

/// The MSI that delivers `vector` to the local APIC `apic_id` (fixed delivery, edge,
/// physical destination; APIC IDs above 255 in the upper address bits, the extended
/// destination ID layout KVM's x2APIC API and QEMU use).
pub fn notify_msi(vector: u8, apic_id: u32) -> kvm_msi {
    kvm_msi {
        address_lo: 0xfee0_0000 | ((apic_id & 0xff) << 12),
        address_hi: apic_id & 0xffff_ff00,
        data: u32::from(vector),
        ..Default::default()
    }
}

/// Where GetQuote completions are announced: the vector the TD registered with
/// SetupEventNotifyInterrupt and the APIC of the vCPU that registered it.
#[derive(Debug, Default)]
pub struct EventNotify(Mutex<Option<(u8, u32)>>);

impl EventNotify {
    /// Records a registration.
    pub fn set(&self, vector: u8, apic_id: u32) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some((vector, apic_id));
    }

    /// The registration, if any.
    pub fn get(&self) -> Option<(u8, u32)> {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The MSI announcing a completion, if the TD registered a vector.
    pub fn msi(&self) -> Option<kvm_msi> {
        self.get().map(|(vector, apic_id)| notify_msi(vector, apic_id))
    }
}

/// Sends an MSI into the TD (`KVM_SIGNAL_MSI`: with kvm-ioctls, `move |msi| vm.signal_msi(msi).map(|_| ())`
/// on an `Arc<VmFd>`).
pub trait MsiInjector: Send + Sync {
    /// Sends `msi`.
    fn inject(&self, msi: kvm_msi) -> Result<(), kvm_ioctls::Error>;
}

impl<F: Fn(kvm_msi) -> Result<(), kvm_ioctls::Error> + Send + Sync> MsiInjector for F {
    fn inject(&self, msi: kvm_msi) -> Result<(), kvm_ioctls::Error> {
        self(msi)
    }
}

/// What [`TdxExitHandler::handle`] did (the status is already in the exit's `ret`).
#[derive(Debug, PartialEq, Eq)]
pub enum TdxExitAction {
    /// A GetQuote is in flight; the TD is notified when it completes.
    QuoteStarted {
        /// The buffer.
        gpa: u64,
    },
    /// A GetQuote was answered QGS_UNAVAILABLE at once (no quote service configured).
    QuoteUnavailable {
        /// The buffer.
        gpa: u64,
    },
    /// A TDG.VP.VMCALL was refused with `status`, for `reason`.
    Refused {
        /// The call.
        call: TdVmCall,
        /// The GHCI status.
        status: u64,
        /// Why.
        reason: &'static str,
    },
    /// The TD registered its notification vector.
    NotifyVector {
        /// The vector.
        vector: u8,
        /// The registering vCPU's APIC ID.
        apic_id: u32,
    },
    /// GetTdVmCallInfo was answered.
    Info {
        /// R11 to R14.
        regs: [u64; 4],
    },
}

/// Handles `KVM_EXIT_TDX` for a TD.
pub struct TdxExitHandler {
    caps: TdxCapabilities,
    shared_bit: u64,
    quotes: QuoteService,
    notify: Arc<EventNotify>,
    injector: Arc<dyn MsiInjector>,
}

impl fmt::Debug for TdxExitHandler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TdxExitHandler")
            .field("shared_bit", &format_args!("{:#x}", self.shared_bit))
            .field("quotes", &self.quotes)
            .field("notify", &self.notify)
            .finish_non_exhaustive()
    }
}

impl TdxExitHandler {
    /// A handler for a TD with these capabilities and guest physical address width
    /// (48 or 52: the shared bit is bit `gpaw - 1`), forwarding GetQuote to `qgs` and
    /// announcing completions through `injector`.
    pub fn new(caps: TdxCapabilities, gpaw: u32, qgs: Option<QgsAddress>, injector: Arc<dyn MsiInjector>) -> Self {
        Self::with_quote_service(caps, gpaw, QuoteService::new(qgs), injector)
    }

    /// The same with a given quote service (its timeout, tests).
    pub fn with_quote_service(
        caps: TdxCapabilities,
        gpaw: u32,
        quotes: QuoteService,
        injector: Arc<dyn MsiInjector>,
    ) -> Self {
        let shared_bit = 1u64 << (gpaw.clamp(1, 64) - 1);
        Self { caps, shared_bit, quotes, notify: Arc::new(EventNotify::default()), injector }
    }

    /// The notification registration.
    pub fn event_notify(&self) -> &EventNotify {
        &self.notify
    }

    /// Handles one `KVM_EXIT_TDX` of the vCPU whose APIC ID is `apic_id`: checks the
    /// call, acts on it and sets `ret` (and GetTdVmCallInfo's registers); then run the
    /// vCPU again. `mem` is the TD's shared memory (a `PrivateMemory` in an `Arc`).
    pub fn handle(&self, exit: &mut KvmTdxExit, apic_id: u32, mem: Arc<dyn SharedGuestMemory>) -> TdxExitAction {
        let call = exit.call();
        let refuse = |exit: &mut KvmTdxExit, status: u64, reason| {
            exit.set_ret(status);
            TdxExitAction::Refused { call, status, reason }
        };
        match call {
            TdVmCall::GetQuote { gpa, size } => {
                let req = match QuoteRequest::parse(gpa, size, self.shared_bit, &*mem) {
                    Ok(req) => req,
                    Err((status, reason)) => return refuse(exit, status, reason),
                };
                let notify = self.notify.clone();
                let injector = self.injector.clone();
                let announce = Box::new(move || {
                    if let Some(msi) = notify.msi() {
                        if let Err(e) = injector.inject(msi) {
                            log::warn!("TDX GetQuote: cannot notify the TD (vector {}): {e}", msi.data);
                        }
                    }
                });
                match self.quotes.start(mem, req, announce) {
                    Ok(Started::InFlight(_)) => {
                        exit.set_ret(tdvmcall_status::SUCCESS);
                        TdxExitAction::QuoteStarted { gpa }
                    }
                    Ok(Started::Unavailable) => {
                        exit.set_ret(tdvmcall_status::SUCCESS);
                        TdxExitAction::QuoteUnavailable { gpa }
                    }
                    Err(status) if status == tdvmcall_status::RETRY => {
                        refuse(exit, status, "too many GetQuote requests in flight")
                    }
                    Err(status) => refuse(exit, status, "the buffer cannot be written"),
                }
            }
            TdVmCall::SetupEventNotifyInterrupt { vector } => match event_notify_vector(vector) {
                Ok(vector) => {
                    self.notify.set(vector, apic_id);
                    exit.set_ret(tdvmcall_status::SUCCESS);
                    TdxExitAction::NotifyVector { vector, apic_id }
                }
                Err(status) => refuse(exit, status, "the vector is not 32 to 255"),
            },
            TdVmCall::GetTdVmCallInfo { leaf } => match tdvmcall_info(leaf, &self.caps) {
                Ok(regs) => {
                    exit.set_tdvmcall_info(regs);
                    exit.set_ret(tdvmcall_status::SUCCESS);
                    TdxExitAction::Info { regs }
                }
                Err(status) => refuse(exit, status, "only leaf 1 reaches user space"),
            },
            TdVmCall::Other { .. } => {
                refuse(exit, tdvmcall_status::SUBFUNC_UNSUPPORTED, "cvmm does not implement this sub-function")
            }
        }
    }
}

/// General-purpose register indices of `KVM_SYSTEM_EVENT_TDX_FATAL`'s `data` (KVM's
/// `VCPU_REGS_*` order: RAX, RCX, RDX, RBX, RSP, RBP, RSI, RDI, R8..R15).
pub mod fatal_regs {
    /// RCX: which registers hold the message.
    pub const RCX: usize = 1;
    /// RDX.
    pub const RDX: usize = 2;
    /// RBX.
    pub const RBX: usize = 3;
    /// RSI.
    pub const RSI: usize = 6;
    /// RDI.
    pub const RDI: usize = 7;
    /// R8.
    pub const R8: usize = 8;
    /// R9.
    pub const R9: usize = 9;
    /// R12: the error code.
    pub const R12: usize = 12;
    /// R13: the GPA, when error code bit 63 is set.
    pub const R13: usize = 13;
    /// R14.
    pub const R14: usize = 14;
    /// R15.
    pub const R15: usize = 15;
    /// The message registers, in message order (GHCI; QEMU's `tdx_handle_report_fatal_error`).
    pub const MESSAGE: [usize; 8] = [R14, R15, RBX, RDI, RSI, R8, R9, RDX];
}

/// Bit 63 of ReportFatalError's error code: R13 holds a GPA.
pub const FATAL_ERROR_GPA_VALID: u64 = 1 << 63;

/// A TD's `TDG.VP.VMCALL<ReportFatalError>`: the TD has stopped for good.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TdxFatalError {
    /// The report.
    Report {
        /// R12: bits 31:0 the TD's error code (0: panic), bit 63 GPA valid.
        error_code: u64,
        /// The message in the registers RCX selects (at most 64 bytes, up to the first
        /// NUL), with anything not printable escaped.
        message: Option<String>,
        /// R13, when the error code says it is a GPA.
        gpa: Option<u64>,
    },
    /// KVM gave fewer than the 16 registers it always gives.
    Malformed {
        /// How many it gave.
        ndata: usize,
    },
}

impl TdxFatalError {
    /// The report a `KVM_EXIT_SYSTEM_EVENT` carries, if its type is
    /// `KVM_SYSTEM_EVENT_TDX_FATAL`.
    pub fn from_system_event(event_type: u32, data: &[u64]) -> Option<Self> {
        if event_type != KVM_SYSTEM_EVENT_TDX_FATAL {
            return None;
        }
        if data.len() < 16 {
            return Some(Self::Malformed { ndata: data.len() });
        }
        let error_code = data[fatal_regs::R12];
        let mask = data[fatal_regs::RCX];
        let gpa = (error_code & FATAL_ERROR_GPA_VALID != 0).then_some(data[fatal_regs::R13]);
        let message = (mask != 0).then(|| {
            let bytes: Vec<u8> = fatal_regs::MESSAGE
                .iter()
                .filter(|&&reg| mask & (1 << reg) != 0)
                .flat_map(|&reg| data[reg].to_le_bytes())
                .take_while(|&b| b != 0)
                .collect();
            bytes.escape_ascii().to_string()
        });
        Some(Self::Report { error_code, message, gpa })
    }
}

impl fmt::Display for TdxFatalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Report { error_code, message, gpa } => {
                write!(f, "the TD reported a fatal error (code {:#x}", error_code & !FATAL_ERROR_GPA_VALID)?;
                if error_code & 0xffff_ffff == 0 {
                    f.write_str(": panic")?;
                }
                f.write_str(")")?;
                if let Some(m) = message {
                    write!(f, ": \"{m}\"")?;
                }
                if let Some(gpa) = gpa {
                    write!(f, " at GPA {gpa:#x}")?;
                }
                Ok(())
            }
            Self::Malformed { ndata } => {
                write!(f, "the TD reported a fatal error (KVM gave {ndata} registers instead of 16)")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use kvm_bindings::kvm_cpuid_entry2;

    use super::*;
    use crate::tdx::kvm::quote::{GetQuoteHeader, GuestAccessError, GET_QUOTE_QGS_UNAVAILABLE};

    /// A kvm_run whose exit is KVM_EXIT_TDX leaf `nr` with `ret` and `data`, written into
    /// the exit union's bytes at the C offsets (flags 0, nr 8, ret 16, data 24..).
    fn run_with(nr: u64, ret: u64, data: [u64; 5]) -> kvm_run {
        let mut run = kvm_run { exit_reason: KVM_EXIT_TDX, ..Default::default() };
        let mut bytes = [0u8; 64];
        bytes[8..16].copy_from_slice(&nr.to_le_bytes());
        bytes[16..24].copy_from_slice(&ret.to_le_bytes());
        for (i, d) in data.iter().enumerate() {
            bytes[24 + 8 * i..32 + 8 * i].copy_from_slice(&d.to_le_bytes());
        }
        // SAFETY: writing the union's padding bytes, as KVM would.
        unsafe { run.__bindgen_anon_1.padding[..64].copy_from_slice(&bytes.map(|b| b as std::os::raw::c_char)) };
        run
    }

    /// The union's bytes back as u64s.
    fn words(run: &kvm_run) -> [u64; 8] {
        // SAFETY: reading the union's bytes.
        let raw: [std::os::raw::c_char; 64] = unsafe { run.__bindgen_anon_1.padding[..64].try_into().unwrap() };
        let raw = raw.map(|b| b as u8);
        std::array::from_fn(|i| u64::from_le_bytes(raw[8 * i..8 * i + 8].try_into().unwrap()))
    }

    #[test]
    fn tdx_exits_are_read_at_the_c_offsets() {
        let mut run = run_with(0x10002, tdvmcall_status::SUBFUNC_UNSUPPORTED, [0x7000, 0x2000, 0, 0, 0]);
        let quote = tdx_exit(&mut run).unwrap();
        assert_eq!(quote.call(), TdVmCall::GetQuote { gpa: 0x7000, size: 0x2000 });
        assert_eq!(quote.ret(), tdvmcall_status::SUBFUNC_UNSUPPORTED);

        let mut run = run_with(0x10004, 0, [0x40, 0, 0, 0, 0]);
        assert_eq!(tdx_exit(&mut run).unwrap().call(), TdVmCall::SetupEventNotifyInterrupt { vector: 0x40 });
        let mut run = run_with(0x10000, 0, [1, 0, 0, 0, 0]);
        assert_eq!(tdx_exit(&mut run).unwrap().call(), TdVmCall::GetTdVmCallInfo { leaf: 1 });
        let mut run = run_with(0x10005, 0, [0; 5]);
        assert_eq!(tdx_exit(&mut run).unwrap().call(), TdVmCall::Other { nr: 0x10005 });
        let mut other = kvm_run { exit_reason: 3, ..Default::default() };
        assert!(tdx_exit(&mut other).is_none());
    }

    #[test]
    fn ret_and_tdvmcall_info_are_written_at_the_c_offsets() {
        let mut run = run_with(0x10000, 0, [1, 0, 0, 0, 0]);
        let exit = tdx_exit(&mut run).unwrap();

        exit.set_tdvmcall_info([0x11, 0x22, 0x33, 0x44]);
        exit.set_ret(tdvmcall_status::INVALID_OPERAND);

        // ret @16, leaf @24, r11 @32, r12 @40, r13 @48, r14 @56.
        assert_eq!(words(&run), [0, 0x10000, 0x8000_0000_0000_0000, 1, 0x11, 0x22, 0x33, 0x44]);
    }

    #[test]
    fn notify_vectors_below_32_or_above_255_are_invalid() {
        assert_eq!(event_notify_vector(32), Ok(32));
        assert_eq!(event_notify_vector(255), Ok(255));
        for bad in [0, 31, 256, u64::MAX] {
            assert_eq!(event_notify_vector(bad), Err(tdvmcall_status::INVALID_OPERAND), "{bad}");
        }
    }

    fn caps(user_r11: u64, kernel_r11: u64) -> TdxCapabilities {
        TdxCapabilities {
            supported_attrs: 0,
            supported_xfam: 0,
            kernel_tdvmcallinfo_1_r11: kernel_r11,
            user_tdvmcallinfo_1_r11: user_r11,
            kernel_tdvmcallinfo_1_r12: 0x8,
            user_tdvmcallinfo_1_r12: 0x4,
            cpuid_configs: vec![kvm_cpuid_entry2::default()],
        }
    }

    #[test]
    fn tdvmcall_info_offers_what_kvm_forwards_and_cvmm_implements() {
        // KVM forwards SetupEventNotifyInterrupt (bit 1) and something else (bit 5);
        // serves bit 8 itself.
        let c = caps(0x22, 0x100);

        assert_eq!(tdvmcall_info(1, &c), Ok([0x102, 0x8, 0, 0]));
        assert_eq!(tdvmcall_info(0, &c), Err(tdvmcall_status::INVALID_OPERAND));
        assert_eq!(tdvmcall_info(2, &c), Err(tdvmcall_status::INVALID_OPERAND));
    }

    #[test]
    fn notification_msis_address_the_registering_apic() {
        let low = notify_msi(0x40, 3);
        let high = notify_msi(0xf0, 0x1_2345);

        assert_eq!((low.address_lo, low.address_hi, low.data, low.flags), (0xfee0_3000, 0, 0x40, 0));
        assert_eq!((high.address_lo, high.address_hi, high.data), (0xfee4_5000, 0x1_2300, 0xf0));
    }

    /// Shared memory of one 8 KiB buffer at 0x10_0000.
    struct Buffer(Mutex<Vec<u8>>);

    impl SharedGuestMemory for Buffer {
        fn is_shared(&self, gpa: u64, len: u64) -> bool {
            gpa >= 0x10_0000 && gpa + len <= 0x10_2000
        }
        fn read_shared(&self, gpa: u64, buf: &mut [u8]) -> Result<(), GuestAccessError> {
            let at = (gpa - 0x10_0000) as usize;
            buf.copy_from_slice(&self.0.lock().unwrap()[at..at + buf.len()]);
            Ok(())
        }
        fn write_shared(&self, gpa: u64, bytes: &[u8]) -> Result<(), GuestAccessError> {
            let at = (gpa - 0x10_0000) as usize;
            self.0.lock().unwrap()[at..at + bytes.len()].copy_from_slice(bytes);
            Ok(())
        }
    }

    fn buffer() -> Arc<Buffer> {
        let mut b = vec![0u8; 0x2000];
        b[..24].copy_from_slice(&GetQuoteHeader { structure_version: 1, in_len: 8, ..Default::default() }.to_bytes());
        Arc::new(Buffer(Mutex::new(b)))
    }

    type Sent = Arc<Mutex<Vec<kvm_msi>>>;

    fn handler(qgs: Option<QgsAddress>) -> (TdxExitHandler, Sent) {
        let sent: Sent = Arc::default();
        let s = sent.clone();
        let injector: Arc<dyn MsiInjector> = Arc::new(move |msi: kvm_msi| {
            s.lock().unwrap().push(msi);
            Ok(())
        });
        let quotes = QuoteService::new(qgs).with_timeout(Duration::from_secs(2));
        (TdxExitHandler::with_quote_service(caps(0x2, 0), 48, quotes, injector), sent)
    }

    #[test]
    fn the_handler_answers_each_call_and_sets_ret() {
        let (h, _) = handler(None);
        let mem: Arc<dyn SharedGuestMemory> = buffer();

        let mut run = run_with(0x10004, tdvmcall_status::SUBFUNC_UNSUPPORTED, [0x50, 0, 0, 0, 0]);
        let action = h.handle(tdx_exit(&mut run).unwrap(), 7, mem.clone());
        assert_eq!(action, TdxExitAction::NotifyVector { vector: 0x50, apic_id: 7 });
        assert_eq!(words(&run)[2], tdvmcall_status::SUCCESS);
        assert_eq!(h.event_notify().get(), Some((0x50, 7)));

        let mut run = run_with(0x10004, 0, [0x10, 0, 0, 0, 0]);
        let action = h.handle(tdx_exit(&mut run).unwrap(), 7, mem.clone());
        assert!(matches!(action, TdxExitAction::Refused { status: tdvmcall_status::INVALID_OPERAND, .. }));
        assert_eq!(words(&run)[2], tdvmcall_status::INVALID_OPERAND);
        assert_eq!(h.event_notify().get(), Some((0x50, 7)), "a refused vector changes nothing");

        let mut run = run_with(0x10000, 0, [1, 0, 0, 0, 0]);
        assert_eq!(h.handle(tdx_exit(&mut run).unwrap(), 0, mem.clone()), TdxExitAction::Info { regs: [2, 8, 0, 0] });
        assert_eq!(words(&run)[4..6], [2, 8]);

        let mut run = run_with(0x10009, 0, [0; 5]);
        h.handle(tdx_exit(&mut run).unwrap(), 0, mem.clone());
        assert_eq!(words(&run)[2], tdvmcall_status::SUBFUNC_UNSUPPORTED);
    }

    #[test]
    fn get_quote_without_a_service_and_with_bad_arguments() {
        let (h, sent) = handler(None);
        let buf = buffer();
        let mem: Arc<dyn SharedGuestMemory> = buf.clone();

        let mut run = run_with(0x10002, tdvmcall_status::SUBFUNC_UNSUPPORTED, [0x10_0000, 0x1000, 0, 0, 0]);
        let action = h.handle(tdx_exit(&mut run).unwrap(), 0, mem.clone());
        assert_eq!(action, TdxExitAction::QuoteUnavailable { gpa: 0x10_0000 });
        assert_eq!(words(&run)[2], tdvmcall_status::SUCCESS);
        let mut header = [0u8; 24];
        buf.read_shared(0x10_0000, &mut header).unwrap();
        assert_eq!(GetQuoteHeader::from_bytes(&header).error_code, GET_QUOTE_QGS_UNAVAILABLE);

        let mut run = run_with(0x10002, 0, [0x10_0800, 0x1000, 0, 0, 0]);
        h.handle(tdx_exit(&mut run).unwrap(), 0, mem.clone());
        assert_eq!(words(&run)[2], tdvmcall_status::ALIGN_ERROR);
        let mut run = run_with(0x10002, 0, [0x20_0000, 0x1000, 0, 0, 0]);
        let action = h.handle(tdx_exit(&mut run).unwrap(), 0, mem.clone());
        assert!(matches!(action, TdxExitAction::Refused { reason: "the buffer is not in shared memory", .. }));
        assert!(sent.lock().unwrap().is_empty());
    }

    #[test]
    fn a_completed_quote_is_announced_with_the_registered_vector() {
        let (h, sent) = handler(Some(QgsAddress::Unix("/nonexistent/qgs".into())));
        let mem: Arc<dyn SharedGuestMemory> = buffer();
        let mut run = run_with(0x10004, 0, [0x60, 0, 0, 0, 0]);
        h.handle(tdx_exit(&mut run).unwrap(), 0x101, mem.clone());

        let mut run = run_with(0x10002, 0, [0x10_0000, 0x2000, 0, 0, 0]);
        let action = h.handle(tdx_exit(&mut run).unwrap(), 0, mem.clone());

        assert_eq!(action, TdxExitAction::QuoteStarted { gpa: 0x10_0000 });
        assert_eq!(words(&run)[2], tdvmcall_status::SUCCESS);
        // The unreachable service completes the request as QGS_UNAVAILABLE, then notifies.
        for _ in 0..500 {
            if !sent.lock().unwrap().is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(*sent.lock().unwrap(), [notify_msi(0x60, 0x101)]);
        assert_eq!(h.quotes.in_flight(), 0);
    }

    /// KVM_SYSTEM_EVENT_TDX_FATAL data: RAX..R15.
    fn fatal_data(error_code: u64, mask: u64, message: &[u8], gpa: u64) -> [u64; 16] {
        let mut d = [0u64; 16];
        d[fatal_regs::R12] = error_code;
        d[fatal_regs::RCX] = mask;
        d[fatal_regs::R13] = gpa;
        let mut chunks = message.chunks(8);
        for reg in fatal_regs::MESSAGE {
            if mask & (1 << reg) != 0 {
                let mut word = [0u8; 8];
                if let Some(c) = chunks.next() {
                    word[..c.len()].copy_from_slice(c);
                }
                d[reg] = u64::from_le_bytes(word);
            }
        }
        d
    }

    #[test]
    fn a_fatal_error_report_gives_the_message_and_the_gpa() {
        // R14, R15 and RBX hold "Kernel panic - not syncing" (26 bytes).
        let mask = 1 << 14 | 1 << 15 | 1 << 3 | 1 << 7;
        let data = fatal_data(FATAL_ERROR_GPA_VALID, mask, b"Kernel panic - not syncing", 0x1234_5000);

        let f = TdxFatalError::from_system_event(KVM_SYSTEM_EVENT_TDX_FATAL, &data).unwrap();

        assert_eq!(
            f,
            TdxFatalError::Report {
                error_code: 1 << 63,
                message: Some("Kernel panic - not syncing".into()),
                gpa: Some(0x1234_5000)
            }
        );
        assert_eq!(
            f.to_string(),
            "the TD reported a fatal error (code 0x0: panic): \"Kernel panic - not syncing\" at GPA 0x12345000"
        );
    }

    #[test]
    fn fatal_errors_without_message_or_with_odd_bytes() {
        let plain = TdxFatalError::from_system_event(7, &fatal_data(0x5, 0, b"", 0xdead)).unwrap();
        assert_eq!(plain, TdxFatalError::Report { error_code: 5, message: None, gpa: None });
        assert_eq!(plain.to_string(), "the TD reported a fatal error (code 0x5)");

        // A message register the mask does not select is ignored; non-ASCII is escaped.
        let mut data = fatal_data(0, 1 << 14, b"ab\x01\xff", 0);
        data[fatal_regs::R15] = u64::from_le_bytes(*b"ignored!");
        let odd = TdxFatalError::from_system_event(7, &data).unwrap();
        assert!(matches!(&odd, TdxFatalError::Report { message: Some(m), .. } if m == "ab\\x01\\xff"), "{odd:?}");

        assert_eq!(TdxFatalError::from_system_event(7, &[0; 4]), Some(TdxFatalError::Malformed { ndata: 4 }));
        assert_eq!(TdxFatalError::from_system_event(kvm_bindings::KVM_SYSTEM_EVENT_CRASH, &[0; 16]), None);
    }
}
