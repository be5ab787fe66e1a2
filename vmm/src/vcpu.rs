//! The vCPU run loop, its exit dispatch, and the kick that interrupts KVM_RUN.
//!
//! Some instructions make KVM_RUN spin forever on hosts like ours (see
//! docs/ARCHITECTURE.md), so every vCPU can be kicked: the controller sets the stop
//! flag and sends [`kick_signal`] to the thread; the handler sets
//! `kvm_run.immediate_exit` through a thread-local pointer, so the kick also works
//! when it lands between the flag check and the next KVM_RUN. A pause kicks the same
//! way: the thread comes back to its loop and parks at the [`PauseGate`].

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Once};

use devices::bus::Bus;
use kvm_bindings::{kvm_run, KVM_SYSTEM_EVENT_CRASH, KVM_SYSTEM_EVENT_RESET, KVM_SYSTEM_EVENT_SHUTDOWN};
use kvm_ioctls::{VcpuExit, VcpuFd};
use vmm_sys_util::signal::{register_signal_handler, SIGRTMIN};

use crate::pause::PauseGate;
use crate::seccomp::{Filter, SeccompError};
use crate::snp::SnpVcpuExits;
use crate::snp_real::RealSnpExits;
use crate::vm::VmEvent;

thread_local! {
    static KVM_RUN_PTR: Cell<*mut kvm_run> = const { Cell::new(std::ptr::null_mut()) };
}

/// The signal that kicks a vCPU thread out of KVM_RUN.
pub fn kick_signal() -> libc::c_int {
    SIGRTMIN()
}

extern "C" fn handle_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // Only touches this thread's own kvm_run mapping: async-signal-safe.
    KVM_RUN_PTR.with(|p| {
        let run = p.get();
        if !run.is_null() {
            // SAFETY: the pointer is this thread's live kvm_run mapping, set by the run
            // loop and cleared before the VcpuFd is dropped.
            unsafe { std::ptr::write_volatile(&raw mut (*run).immediate_exit, 1) };
        }
    });
}

/// Installs the kick handler (once per process).
pub fn install_kick_handler() -> std::io::Result<()> {
    static ONCE: Once = Once::new();
    let mut result = Ok(());
    ONCE.call_once(|| {
        result = register_signal_handler(kick_signal(), handle_kick)
            .map_err(|e| std::io::Error::from_raw_os_error(e.errno()));
    });
    result
}

/// What a vCPU thread needs besides its fd.
pub struct VcpuContext {
    /// Port I/O devices.
    pub pio: Arc<Bus>,
    /// MMIO devices.
    pub mmio: Arc<Bus>,
    /// Set by the controller when the VM is ending.
    pub stopping: Arc<AtomicBool>,
    /// Where the vCPU reports the end of the VM.
    pub events: mpsc::Sender<VmEvent>,
    /// The seccomp filter the thread installs before its first KVM_RUN.
    pub seccomp: Option<Filter>,
    /// Where the thread reports whether it installed its filter (it runs the vCPU
    /// only if it did).
    pub ready: mpsc::Sender<Result<(), SeccompError>>,
    /// Where the thread parks, between two KVM_RUNs, while the VM is paused.
    pub pause: Arc<PauseGate>,
    /// The emulated SEV-SNP platform's exits of this vCPU, for an emulated SNP guest.
    pub snp: Option<SnpVcpuExits>,
    /// A real SEV-SNP guest's page conversions and termination requests.
    pub snp_real: Option<RealSnpExits>,
    /// A real TD's conversions, forwarded TDVMCALLs and fatal error.
    pub tdx_real: Option<crate::tdx_real::RealTdxExits>,
    /// The emulated TDX platform's TDCALLs of this vCPU, for an emulated TD.
    pub tdx: Option<crate::tdx::TdxVcpuExits>,
}

impl std::fmt::Debug for VcpuContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VcpuContext").field("stopping", &self.stopping).finish_non_exhaustive()
    }
}

/// What the loop does after an exit.
enum Next {
    Continue,
    /// KVM_EXIT_INTERNAL_ERROR: described once the exit's borrow of the vCPU ends.
    InternalError,
    /// The emulated SNP platform's VMGEXIT doorbell: served once the borrow ends.
    Vmgexit,
    /// KVM_EXIT_SNP_REQ_CERTS: answered through kvm_run once the borrow ends.
    ReqCerts,
    /// KVM_EXIT_TDX: answered through kvm_run once the borrow ends.
    TdxExit,
    Stop(VmEvent),
}

/// Installs the thread's seccomp filter (if any), then runs `vcpu` until the VM ends.
/// Reports the filter's installation on `ctx.ready`, and why the VM ended on
/// `ctx.events` when this vCPU is the one that ended it.
pub fn run_vcpu(mut vcpu: VcpuFd, index: u32, mut ctx: VcpuContext) {
    let installed = ctx.seccomp.as_ref().map_or(Ok(()), Filter::apply);
    let failed = installed.is_err();
    let _ = ctx.ready.send(installed);
    if failed {
        return;
    }
    KVM_RUN_PTR.with(|p| p.set(vcpu.get_kvm_run() as *mut kvm_run));
    let mut snp = ctx.snp.take();
    let mut tdx = ctx.tdx.take();
    // An SNP AP runs only once the guest creates it from a VMSA of its own.
    if let Some(s) = &snp {
        if !s.wait_for_creation(&mut vcpu, &ctx.stopping) {
            KVM_RUN_PTR.with(|p| p.set(std::ptr::null_mut()));
            return;
        }
    }
    let outcome = run_loop(&mut vcpu, index, &ctx, &mut snp, &mut tdx);
    KVM_RUN_PTR.with(|p| p.set(std::ptr::null_mut()));
    if let Some(event) = outcome {
        // The controller may already be gone if another vCPU ended the VM first.
        let _ = ctx.events.send(event);
    }
}

fn run_loop(
    vcpu: &mut VcpuFd,
    index: u32,
    ctx: &VcpuContext,
    snp: &mut Option<SnpVcpuExits>,
    tdx: &mut Option<crate::tdx::TdxVcpuExits>,
) -> Option<VmEvent> {
    loop {
        ctx.pause.park_while_closed();
        if ctx.stopping.load(Ordering::Acquire) {
            if log::log_enabled!(log::Level::Debug) {
                log::debug!("vCPU {index} stopped at {:x?}", vcpu.get_regs().map(|r| (r.rip, r.rsp, r.rax, r.rcx)));
            }
            return None;
        }
        let next = match vcpu.run() {
            Ok(exit) => dispatch(exit, index, ctx, snp),
            Err(e) if e.errno() == libc::EINTR => {
                vcpu.set_kvm_immediate_exit(0);
                Next::Continue
            }
            Err(e) if e.errno() == libc::EAGAIN => Next::Continue,
            Err(e) => Next::Stop(VmEvent::VcpuFailed { vcpu: index, message: format!("KVM_RUN failed: {e}") }),
        };
        match next {
            Next::Continue => {}
            Next::InternalError if tdx.is_some() => {
                use crate::tdx::TdcallOutcome;
                match tdx.as_mut().and_then(|t| t.emulation_failure(vcpu, &ctx.pio, &ctx.mmio)) {
                    Some(TdcallOutcome::Continue) => {}
                    Some(TdcallOutcome::Park) => {
                        // A halted vCPU with interrupts blocked never runs again.
                        while !ctx.stopping.load(Ordering::Acquire) {
                            std::thread::sleep(std::time::Duration::from_millis(10));
                        }
                    }
                    Some(TdcallOutcome::Idle) => std::thread::sleep(crate::tdx::IDLE_WAKEUP),
                    Some(TdcallOutcome::End(event)) => return Some(event),
                    None => return Some(VmEvent::VcpuFailed { vcpu: index, message: describe_internal_error(vcpu) }),
                }
            }
            Next::InternalError => match snp.as_mut().and_then(|s| s.emulation_failure(vcpu)) {
                Some(Ok(())) => {}
                Some(Err(event)) => return Some(event),
                None => return Some(VmEvent::VcpuFailed { vcpu: index, message: describe_internal_error(vcpu) }),
            },
            Next::TdxExit => {
                if let Some(real) = &ctx.tdx_real {
                    real.tdx(vcpu.get_kvm_run());
                }
            }
            Next::ReqCerts => {
                if let Some(real) = &ctx.snp_real {
                    real.req_certs(vcpu.get_kvm_run());
                }
            }
            Next::Vmgexit => {
                if let Some(s) = snp.as_mut() {
                    if let Err(event) = s.vmgexit(vcpu, &ctx.pio, &ctx.mmio) {
                        return Some(event);
                    }
                }
            }
            Next::Stop(event) => {
                if log::log_enabled!(log::Level::Debug) {
                    log::debug!("vCPU {index} at the end: {:x?}", vcpu.get_regs());
                }
                return Some(event);
            }
        }
    }
}

fn describe_internal_error(vcpu: &mut VcpuFd) -> String {
    let run = vcpu.get_kvm_run();
    // SAFETY: exit_reason is KVM_EXIT_INTERNAL_ERROR, so `internal` is the live member.
    let internal = unsafe { run.__bindgen_anon_1.internal };
    let rip = vcpu.get_regs().map(|r| format!("{:#x}", r.rip)).unwrap_or_else(|_| "?".into());
    let what = if internal.suberror == 1 { " (instruction emulation failed)" } else { "" };
    format!("KVM internal error, suberror {}{what}, at rip {rip}", internal.suberror)
}

fn dispatch(exit: VcpuExit<'_>, index: u32, ctx: &VcpuContext, snp: &mut Option<SnpVcpuExits>) -> Next {
    match exit {
        VcpuExit::IoOut(arch::ghcb::EMULATED_VMGEXIT_PORT, _) if snp.is_some() => Next::Vmgexit,
        VcpuExit::Unsupported(launch::snp::kvm::uapi::KVM_EXIT_SNP_REQ_CERTS) if ctx.snp_real.is_some() => {
            Next::ReqCerts
        }
        VcpuExit::Unsupported(launch::tdx::kvm::uapi::KVM_EXIT_TDX) if ctx.tdx_real.is_some() => Next::TdxExit,
        VcpuExit::Hypercall(h) if ctx.tdx_real.is_some() => {
            if let Some(real) = &ctx.tdx_real {
                *h.ret = real.hypercall(h.nr, &h.args);
            }
            Next::Continue
        }
        VcpuExit::MemoryFault { flags, gpa, size } if ctx.tdx_real.is_some() => {
            match ctx.tdx_real.as_ref().map(|r| r.memory_fault(flags, gpa, size)) {
                Some(Err(event)) => Next::Stop(event),
                _ => Next::Continue,
            }
        }
        VcpuExit::SystemEvent(kind, data) if ctx.tdx_real.as_ref().and_then(|r| r.fatal(kind, data)).is_some() => {
            match ctx.tdx_real.as_ref().and_then(|r| r.fatal(kind, data)) {
                Some(event) => Next::Stop(event),
                None => Next::Continue,
            }
        }
        VcpuExit::Hypercall(h) if ctx.snp_real.is_some() => {
            if let Some(real) = &ctx.snp_real {
                *h.ret = real.hypercall(h.nr, &h.args);
            }
            Next::Continue
        }
        VcpuExit::MemoryFault { flags, gpa, size } if ctx.snp_real.is_some() => {
            match ctx.snp_real.as_ref().map(|r| r.memory_fault(flags, gpa, size)) {
                Some(Err(event)) => Next::Stop(event),
                _ => Next::Continue,
            }
        }
        VcpuExit::SystemEvent(kind, data)
            if ctx.snp_real.as_ref().and_then(|r| r.termination(kind, data)).is_some() =>
        {
            match ctx.snp_real.as_ref().and_then(|r| r.termination(kind, data)) {
                Some(event) => Next::Stop(event),
                None => Next::Continue,
            }
        }
        VcpuExit::X86Rdmsr(msr) if snp.is_some() => {
            match snp.as_ref().and_then(|s| s.rdmsr(msr.index)) {
                Some(v) => *msr.data = v,
                None => *msr.error = 1,
            }
            Next::Continue
        }
        VcpuExit::X86Wrmsr(msr) if snp.is_some() => {
            if !snp.as_mut().is_some_and(|s| s.wrmsr(msr.index, msr.data)) {
                *msr.error = 1;
            }
            Next::Continue
        }
        VcpuExit::IoOut(port, data) => {
            if data.len() <= 4 {
                ctx.pio.write(u64::from(port), data);
            } else {
                // String I/O (rep outs): handled as a run of byte accesses.
                for b in data.chunks(1) {
                    ctx.pio.write(u64::from(port), b);
                }
            }
            Next::Continue
        }
        VcpuExit::IoIn(port, data) => {
            if data.len() <= 4 {
                ctx.pio.read(u64::from(port), data);
            } else {
                for b in data.chunks_mut(1) {
                    ctx.pio.read(u64::from(port), b);
                }
            }
            Next::Continue
        }
        VcpuExit::MmioRead(addr, data) => {
            ctx.mmio.read(addr, data);
            Next::Continue
        }
        VcpuExit::MmioWrite(addr, data) => {
            ctx.mmio.write(addr, data);
            Next::Continue
        }
        VcpuExit::Hlt | VcpuExit::IoapicEoi(_) | VcpuExit::IrqWindowOpen | VcpuExit::Intr => Next::Continue,
        VcpuExit::Shutdown => Next::Stop(VmEvent::TripleFault { vcpu: index }),
        VcpuExit::SystemEvent(kind, _) => match kind {
            KVM_SYSTEM_EVENT_SHUTDOWN => Next::Stop(VmEvent::Shutdown),
            KVM_SYSTEM_EVENT_RESET => Next::Stop(VmEvent::Guest(devices::GuestStop::Reset)),
            KVM_SYSTEM_EVENT_CRASH => Next::Stop(VmEvent::Crash { vcpu: index }),
            other => {
                Next::Stop(VmEvent::VcpuFailed { vcpu: index, message: format!("unexpected system event {other}") })
            }
        },
        VcpuExit::InternalError => Next::InternalError,
        VcpuExit::FailEntry(reason, cpu) => Next::Stop(VmEvent::VcpuFailed {
            vcpu: index,
            message: format!("VM entry failed: hardware reason {reason:#x} on host CPU {cpu}"),
        }),
        other => Next::Stop(VmEvent::VcpuFailed { vcpu: index, message: format!("unhandled exit {other:?}") }),
    }
}
