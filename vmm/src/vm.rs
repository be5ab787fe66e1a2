//! A built VM: runs its vCPU threads until the guest (or the watchdog, or its
//! handle) ends it, then tears everything down.
//!
//! One control thread per running VM waits on the VM's event channel: events from the
//! vCPUs and devices that end the VM, and requests from its [`VmHandle`]
//! (pause, resume, shut down), so every change of a running VM's state is made by that
//! one thread, under its seccomp filter.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use devices::bus::Bus;
use devices::serial::SerialConsole;
use devices::{GuestStop, StopHandler};
use kvm_ioctls::{VcpuFd, VmFd};
use thiserror::Error;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::signal::Killable;

use crate::handle::{ControlError, StatusCell, VmHandle, VmState};
use crate::launch_log::LogEntry;
use crate::pause::PauseGate;
use crate::seccomp::{Filter, SeccompError, ThreadKind};
use crate::stats::StepTimes;
use crate::vcpu::{install_kick_handler, kick_signal, run_vcpu, VcpuContext};

/// How long teardown waits for vCPU threads to leave KVM_RUN after being kicked.
const TEARDOWN_GRACE: Duration = Duration::from_secs(5);
/// How long a pause waits for every vCPU thread to park.
const PAUSE_GRACE: Duration = Duration::from_secs(5);

/// Something that ends the VM, as reported by a device or a vCPU thread, or a request
/// from the VM's handle.
#[derive(Debug, Clone)]
pub enum VmEvent {
    /// The guest asked (debug-exit port, reset).
    Guest(GuestStop),
    /// KVM reported a guest-initiated shutdown (e.g. ACPI/PSCI off).
    Shutdown,
    /// A vCPU triple-faulted.
    TripleFault {
        /// The vCPU.
        vcpu: u32,
    },
    /// KVM reported a guest crash.
    Crash {
        /// The vCPU.
        vcpu: u32,
    },
    /// A vCPU could not continue (KVM error, emulation failure, unhandled exit).
    VcpuFailed {
        /// The vCPU.
        vcpu: u32,
        /// What happened.
        message: String,
    },
    /// A confidential guest asked its platform to terminate it (GHCB termination).
    GuestTerminated {
        /// The vCPU.
        vcpu: u32,
        /// Reason set.
        set: u64,
        /// Reason code.
        code: u64,
    },
    /// A TD reported a fatal error (TDVMCALL ReportFatalError).
    TdxFatalError {
        /// The vCPU.
        vcpu: u32,
        /// The guest's error code (R12).
        code: u64,
    },
    /// A request from the VM's [`VmHandle`]; it does not end the VM by itself.
    Request(Request),
}

/// What a [`VmHandle`] asks the control thread of a running VM to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RequestKind {
    /// Park every vCPU outside KVM_RUN.
    Pause,
    /// Let parked vCPUs run again.
    Resume,
    /// Ask the guest to shut down (Ctrl-Alt-Del on the i8042), resuming it if it is
    /// paused, and end the VM by force if it is still running after `grace`.
    Shutdown {
        /// How long the guest has to end the VM itself.
        grace: Duration,
    },
    /// Press Ctrl-Alt-Del on the i8042 and nothing else (no resume, no deadline).
    CtrlAltDel,
}

/// A request from a [`VmHandle`] to the control thread, with where to send the answer.
#[derive(Debug, Clone)]
pub struct Request {
    pub(crate) kind: RequestKind,
    pub(crate) reply: mpsc::Sender<Result<(), ControlError>>,
}

/// How a VM ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmExit {
    /// The guest wrote its exit status to the debug-exit port.
    GuestExit(u8),
    /// The guest requested a reset; cvmm ends the VM instead.
    Reset,
    /// The guest shut down.
    Shutdown,
    /// A vCPU triple-faulted.
    TripleFault {
        /// The vCPU.
        vcpu: u32,
    },
    /// The guest crashed (KVM_SYSTEM_EVENT_CRASH).
    Crash {
        /// The vCPU.
        vcpu: u32,
    },
    /// The watchdog ended a guest that ran longer than the configured timeout.
    Timeout(Duration),
    /// A vCPU failed.
    VcpuFailed {
        /// The vCPU.
        vcpu: u32,
        /// What happened.
        message: String,
    },
    /// The VM's handle asked the guest to shut down and the guest was still running
    /// after the grace period, so cvmm ended it (as the watchdog does).
    ShutdownForced {
        /// The grace period the guest had.
        grace: Duration,
    },
    /// A confidential guest asked to be terminated (SEV-SNP GHCB termination request),
    /// with its reason.
    GuestTerminated {
        /// The vCPU.
        vcpu: u32,
        /// Reason set.
        set: u64,
        /// Reason code.
        code: u64,
    },
    /// A TD reported a fatal error (TDVMCALL ReportFatalError), with its code.
    TdxFatalError {
        /// The vCPU.
        vcpu: u32,
        /// The guest's error code.
        code: u64,
    },
}

impl VmExit {
    /// The process exit status `cvmm run` uses: the guest's own status for a
    /// debug-exit, 0 for a requested reset or shutdown, 1 for every failure.
    pub fn exit_status(&self) -> i32 {
        match self {
            VmExit::GuestExit(s) => i32::from(*s),
            VmExit::Reset | VmExit::Shutdown => 0,
            _ => 1,
        }
    }

    /// Whether the guest ended the VM on purpose.
    pub fn is_guest_requested(&self) -> bool {
        matches!(self, VmExit::GuestExit(_) | VmExit::Reset | VmExit::Shutdown)
    }

    /// A short name for the kind of end, as the API reports it: `guest_exit`, `reset`,
    /// `shutdown`, `triple_fault`, `crash`, `timeout`, `vcpu_failed`, `shutdown_forced`,
    /// `guest_terminated`.
    pub fn kind(&self) -> &'static str {
        match self {
            VmExit::GuestExit(_) => "guest_exit",
            VmExit::Reset => "reset",
            VmExit::Shutdown => "shutdown",
            VmExit::TripleFault { .. } => "triple_fault",
            VmExit::Crash { .. } => "crash",
            VmExit::Timeout(_) => "timeout",
            VmExit::VcpuFailed { .. } => "vcpu_failed",
            VmExit::ShutdownForced { .. } => "shutdown_forced",
            VmExit::GuestTerminated { .. } => "guest_terminated",
            VmExit::TdxFatalError { .. } => "tdx_fatal_error",
        }
    }

    /// The exit of an event that ends the VM, or the handle's request the event carries.
    fn from_event(e: VmEvent) -> Result<Self, Request> {
        Ok(match e {
            VmEvent::Guest(GuestStop::Exit(s)) => VmExit::GuestExit(s),
            VmEvent::Guest(GuestStop::Reset) => VmExit::Reset,
            VmEvent::Shutdown => VmExit::Shutdown,
            VmEvent::TripleFault { vcpu } => VmExit::TripleFault { vcpu },
            VmEvent::Crash { vcpu } => VmExit::Crash { vcpu },
            VmEvent::VcpuFailed { vcpu, message } => VmExit::VcpuFailed { vcpu, message },
            VmEvent::GuestTerminated { vcpu, set, code } => VmExit::GuestTerminated { vcpu, set, code },
            VmEvent::TdxFatalError { vcpu, code } => VmExit::TdxFatalError { vcpu, code },
            VmEvent::Request(r) => return Err(r),
        })
    }
}

impl std::fmt::Display for VmExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VmExit::GuestExit(s) => write!(f, "the guest exited with status {s}"),
            VmExit::Reset => write!(f, "the guest requested a reset; the VM was ended (a restart is a new launch)"),
            VmExit::Shutdown => write!(f, "the guest shut down"),
            VmExit::TripleFault { vcpu } => write!(f, "vCPU {vcpu} triple-faulted; the VM was ended"),
            VmExit::Crash { vcpu } => write!(f, "the guest crashed on vCPU {vcpu}"),
            VmExit::Timeout(t) => {
                write!(f, "the guest did not finish within {:.1} s; the watchdog ended the VM", t.as_secs_f64())
            }
            VmExit::VcpuFailed { vcpu, message } => write!(f, "vCPU {vcpu} failed: {message}"),
            VmExit::ShutdownForced { grace } => write!(
                f,
                "the guest did not shut down within {:.1} s of the request; the VM was ended",
                grace.as_secs_f64()
            ),
            VmExit::GuestTerminated { vcpu, set, code } => {
                write!(f, "the guest asked to be terminated on vCPU {vcpu}: reason set {set}, code {code:#x}")
            }
            VmExit::TdxFatalError { vcpu, code } => {
                write!(f, "the TD reported a fatal error on vCPU {vcpu}: code {code:#x}")
            }
        }
    }
}

/// Errors from running a VM.
#[derive(Debug, Error)]
pub enum RunError {
    /// The VM was already run.
    #[error("the VM has already run")]
    AlreadyRan,
    /// The kick signal handler could not be installed.
    #[error("cannot install the vCPU kick signal handler: {0}")]
    KickHandler(#[source] std::io::Error),
    /// The device event loop could not be started.
    #[error("cannot start the device event loop: {0}")]
    DeviceLoop(#[source] std::io::Error),
    /// A thread's seccomp filter could not be built or installed.
    #[error(transparent)]
    Seccomp(#[from] SeccompError),
    /// A TD's GetQuote thread could not be started.
    #[error(transparent)]
    QuoteThread(#[from] crate::quote_thread::QuoteThreadError),
    /// The thread that runs the VM could not be started.
    #[error("cannot start the VM's control thread: {0}")]
    SpawnController(#[source] std::io::Error),
    /// A vCPU thread could not be started.
    #[error("cannot start the thread of vCPU {vcpu}: {source}")]
    SpawnVcpu {
        /// The vCPU.
        vcpu: u32,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// Forwards device stop requests to the controller's event channel.
pub(crate) struct ChannelStop(pub(crate) mpsc::Sender<VmEvent>);

impl StopHandler for ChannelStop {
    fn stop(&self, reason: GuestStop) {
        let _ = self.0.send(VmEvent::Guest(reason));
    }
}

/// The serial console type the VM writes its guest's output through.
pub type Console = SerialConsole<Box<dyn Write + Send>>;

/// What a launch established about the VM, for its owner and for attestation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchInfo {
    /// The trusted execution environment: `plain` for a VM without one; the SNP and
    /// TDX backends name theirs.
    pub tee: &'static str,
    /// The launch measurement the guest's attestation report should carry (hex), as
    /// cvmm computed it from the launch plan; `None` for a plain VM, which has none.
    pub expected_measurement: Option<String>,
    /// The measured launch plan, one entry per range ([`crate::launch_log`]); empty
    /// for a plain VM.
    pub launch_log: Vec<LogEntry>,
}

impl LaunchInfo {
    /// A plain VM: no TEE, no measurement, an empty launch log.
    pub fn plain() -> Self {
        Self { tee: "plain", expected_measurement: None, launch_log: Vec::new() }
    }

    /// An SEV-SNP launch of `plan` under `tee` (`snp`, `snp-emulated`): the launch
    /// digest cvmm computes from the plan, and its launch log.
    pub fn snp(tee: &'static str, plan: &launch::plan::LaunchPlan) -> Self {
        let digest = launch::measure::snp::launch_digest(plan);
        if let Err(e) = &digest {
            log::warn!("cannot compute the expected SNP launch digest: {e}");
        }
        Self { tee, expected_measurement: digest.ok().map(hex::encode), launch_log: crate::measure::snp_log(plan) }
    }

    /// A TDX launch of `plan` under `tee` (`tdx`, `tdx-emulated`): MRTD as cvmm computes
    /// it from the plan, and its launch log.
    pub fn tdx(tee: &'static str, plan: &launch::plan::LaunchPlan) -> Self {
        let mrtd = launch::measure::tdx::mrtd(plan);
        if let Err(e) = &mrtd {
            log::warn!("cannot compute the expected MRTD: {e}");
        }
        Self {
            tee,
            expected_measurement: mrtd.ok().map(hex::encode),
            launch_log: crate::launch_log::log_entries(plan, |_| None),
        }
    }
}

/// A VM ready to run. Fields drop in declaration order: vCPUs and devices before the
/// VM fd, the VM fd before the guest memory it maps.
pub struct Vm {
    pub(crate) vcpus: Vec<(u32, VcpuFd)>,
    pub(crate) pio: Arc<Bus>,
    pub(crate) mmio: Arc<Bus>,
    pub(crate) serial: Arc<Mutex<Console>>,
    pub(crate) irqfds: Vec<(EventFd, u32)>,
    pub(crate) subscribers: Vec<crate::device_loop::Subscriber>,
    pub(crate) shared: Arc<devices::virtio::SharedMemory>,
    pub(crate) events_tx: mpsc::Sender<VmEvent>,
    pub(crate) events_rx: mpsc::Receiver<VmEvent>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) seccomp: bool,
    pub(crate) steps: StepTimes,
    pub(crate) backend_name: &'static str,
    pub(crate) launch: LaunchInfo,
    /// The i8042, through which a shutdown request reaches the guest.
    pub(crate) i8042: Arc<Mutex<devices::legacy::I8042>>,
    /// The emulated TDX platform and the CPUID table TDVMCALL<CPUID> serves, if any.
    pub(crate) tdx: Option<(Arc<launch::tdx::emulated::EmulatedTdxPlatform>, Arc<[kvm_bindings::kvm_cpuid_entry2]>)>,
    /// The real SNP launch (guest_memfds, conversions) of a VM on SNP hardware.
    pub(crate) snp_real: Option<Arc<launch::snp::kvm::SnpKvmLaunch>>,
    /// The real TDX launch and its KVM_EXIT_TDX handler, of a TD on TDX hardware.
    pub(crate) tdx_real: Option<(Arc<launch::tdx::kvm::TdxKvmLaunch>, Arc<launch::tdx::kvm::exits::TdxExitHandler>)>,
    /// The certificates served on KVM_EXIT_SNP_REQ_CERTS, if any.
    pub(crate) snp_certs: Option<Arc<launch::snp::kvm::exits::CertServer>>,
    /// The emulated SNP platform and the CPUID table its GHCB serves, if any.
    pub(crate) snp: Option<(Arc<launch::snp::emulated::EmulatedSnpPlatform>, Arc<[kvm_bindings::kvm_cpuid_entry2]>)>,
    /// The thread that completes a TD's GetQuote requests (started by `run` for a TD).
    pub(crate) quotes: Arc<crate::quote_thread::QuoteThread>,
    pub(crate) vm: Arc<VmFd>,
    pub(crate) mem: GuestMemoryMmap,
}

impl std::fmt::Debug for Vm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vm")
            .field("vcpus", &self.vcpus.len())
            .field("backend", &self.backend_name)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Vm {
    /// The guest's memory.
    pub fn guest_memory(&self) -> &GuestMemoryMmap {
        &self.mem
    }

    /// Durations of the launch steps the builder ran.
    pub fn launch_steps(&self) -> &[(&'static str, Duration)] {
        self.steps.steps()
    }

    /// The private/shared state of guest memory, as the devices see it.
    pub fn shared_memory(&self) -> &devices::virtio::SharedMemory {
        &self.shared
    }

    /// The launch measurement the (emulated) platform computed for a confidential VM:
    /// the SEV-SNP launch digest.
    pub fn launch_measurement(&self) -> Option<[u8; 48]> {
        if let Some((platform, _)) = &self.tdx {
            return platform.module().mrtd();
        }
        self.snp.as_ref().and_then(|(platform, _)| platform.psp().measurement())
    }

    /// The emulated TDX platform (page states, TDX module) of an emulated TD.
    pub fn tdx_platform(&self) -> Option<&Arc<launch::tdx::emulated::EmulatedTdxPlatform>> {
        self.tdx.as_ref().map(|(platform, _)| platform)
    }

    /// The emulated SEV-SNP platform (RMP, PSP, AP creation) of an emulated SNP VM.
    pub fn snp_platform(&self) -> Option<&Arc<launch::snp::emulated::EmulatedSnpPlatform>> {
        self.snp.as_ref().map(|(platform, _)| platform)
    }

    /// Which launch backend built this VM.
    pub fn backend_name(&self) -> &'static str {
        self.backend_name
    }

    /// What the launch established: TEE, expected measurement, launch log.
    pub fn launch_info(&self) -> &LaunchInfo {
        &self.launch
    }

    /// The number of vCPUs (0 once the VM has run: its vCPUs went with it).
    pub fn vcpu_count(&self) -> usize {
        self.vcpus.len()
    }

    /// Turns the VM into a [`VmHandle`] (state `created`), to start it and control it
    /// while it runs.
    pub fn into_handle(self) -> VmHandle {
        VmHandle::new(self)
    }

    /// Runs the VM until it ends: starts the device loop and one thread per vCPU,
    /// waits for the first event that ends the VM (or the timeout), kicks every vCPU
    /// out of KVM_RUN and joins the threads. Can be called once.
    ///
    /// With seccomp on (the default), every thread it starts runs under the filter of
    /// its kind (`crate::seccomp`), installed before it touches the guest or a device:
    /// the VM is run from a control thread of its own, which installs the main filter
    /// once the others exist, so the calling thread is left unconfined (it may build and
    /// run another VM). A filter that cannot be installed ends the run with
    /// [`RunError::Seccomp`].
    pub fn run(&mut self) -> Result<VmExit, RunError> {
        self.run_with(None)
    }

    /// [`Vm::run`], reporting the VM's state to `status` (a handle's) as it changes.
    pub(crate) fn run_with(&mut self, status: Option<&StatusCell>) -> Result<VmExit, RunError> {
        if self.vcpus.is_empty() {
            return Err(RunError::AlreadyRan);
        }
        install_kick_handler().map_err(RunError::KickHandler)?;
        let filters = if self.seccomp {
            Some(ThreadFilters {
                vcpu: Filter::new(ThreadKind::Vcpu)?,
                devices: Filter::new(ThreadKind::Devices)?,
                main: Filter::new(ThreadKind::Main)?,
                quote: Filter::new(ThreadKind::Quote)?,
            })
        } else {
            log::warn!("seccomp filters are off: the VM's threads may make any system call");
            None
        };
        std::thread::scope(|scope| {
            let control = std::thread::Builder::new()
                .name("vmm".into())
                .spawn_scoped(scope, || self.control(filters, status))
                .map_err(RunError::SpawnController)?;
            control.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// The body of [`Vm::run`], on the control thread.
    fn control(&mut self, filters: Option<ThreadFilters>, status: Option<&StatusCell>) -> Result<VmExit, RunError> {
        let (vcpu_filter, devices_filter, main_filter, quote_filter) = match filters {
            Some(f) => (Some(f.vcpu), Some(f.devices), Some(f.main), Some(f.quote)),
            None => (None, None, None, None),
        };
        // A TD's GetQuote requests complete on a thread of their own, started before
        // the vCPUs (it must not inherit their filter).
        if self.tdx.is_some() || self.tdx_real.is_some() {
            self.quotes.start(quote_filter)?;
        }
        let mut device_loop =
            crate::device_loop::DeviceLoop::start(std::mem::take(&mut self.subscribers), devices_filter)?;
        let stopping = Arc::new(AtomicBool::new(false));
        let gate = Arc::new(PauseGate::new());
        let (ready_tx, ready_rx) = mpsc::channel();
        let mut handles: Vec<JoinHandle<()>> = Vec::with_capacity(self.vcpus.len());
        for (index, vcpu) in self.vcpus.drain(..) {
            let ctx = VcpuContext {
                pio: self.pio.clone(),
                mmio: self.mmio.clone(),
                stopping: stopping.clone(),
                events: self.events_tx.clone(),
                seccomp: vcpu_filter.clone(),
                ready: ready_tx.clone(),
                pause: gate.clone(),
                tdx: self.tdx.as_ref().map(|(platform, cpuid)| {
                    let vm = self.vm.clone();
                    let injector: Arc<dyn launch::tdx::kvm::exits::MsiInjector> =
                        Arc::new(move |msi| vm.signal_msi(msi).map(|_| ()));
                    crate::tdx::TdxVcpuExits::new(
                        index,
                        platform.clone(),
                        self.shared.clone(),
                        cpuid.clone(),
                        self.mem.clone(),
                    )
                    .with_quotes(self.quotes.clone(), injector)
                }),
                tdx_real: self.tdx_real.as_ref().map(|(launch, handler)| crate::tdx_real::RealTdxExits {
                    index,
                    launch: launch.clone(),
                    handler: handler.clone(),
                    vm: self.vm.clone(),
                    shared: self.shared.clone(),
                }),
                snp_real: self.snp_real.as_ref().map(|launch| crate::snp_real::RealSnpExits {
                    index,
                    certs: self.snp_certs.clone(),
                    launch: launch.clone(),
                    vm: self.vm.clone(),
                    shared: self.shared.clone(),
                }),
                snp: self.snp.as_ref().map(|(platform, cpuid)| {
                    crate::snp::SnpVcpuExits::new(
                        index,
                        platform.clone(),
                        self.shared.clone(),
                        cpuid.clone(),
                        self.mem.clone(),
                    )
                }),
            };
            let spawned =
                std::thread::Builder::new().name(format!("vcpu{index}")).spawn(move || run_vcpu(vcpu, index, ctx));
            match spawned {
                Ok(h) => handles.push(h),
                Err(source) => {
                    stop_vcpus(&stopping, &gate, handles);
                    return Err(RunError::SpawnVcpu { vcpu: index, source });
                }
            }
        }
        drop(ready_tx);
        // Each vCPU thread reports its filter before its first KVM_RUN; this thread
        // confines itself only now, so no thread it started inherits its filter.
        let mut installed = Ok(());
        for report in ready_rx.iter().take(handles.len()) {
            installed = installed.and(report);
        }
        if let Some(main) = &main_filter {
            installed = installed.and_then(|()| main.apply());
        }
        if let Err(e) = installed {
            stop_vcpus(&stopping, &gate, handles);
            return Err(e.into());
        }
        if main_filter.is_some() {
            log::debug!("seccomp filters installed: {} vCPU thread(s), device loop, main", handles.len());
        }
        let started = Instant::now();
        if let Some(s) = status {
            s.set_state(VmState::Running);
        }
        let exit = Controller { vm: self, gate: &gate, vcpus: &handles, status, paused: false }.serve(started);
        stop_vcpus(&stopping, &gate, handles);
        // The emulated quoting enclave's jobs are short: wait for them. A quote service
        // may take up to its timeout: that thread ends on its own.
        self.quotes.stop(self.tdx_real.is_none());
        if let Some(l) = device_loop.as_mut() {
            l.stop();
        }
        log::info!("VM ended after {:.3} s: {exit}", started.elapsed().as_secs_f64());
        if let Err(e) = self.serial.lock().unwrap_or_else(|e| e.into_inner()).flush() {
            log::warn!("cannot flush the console: {e}");
        }
        Ok(exit)
    }
}

/// The control thread's view of a running VM, while it waits for the VM's end.
struct Controller<'a> {
    vm: &'a Vm,
    gate: &'a PauseGate,
    vcpus: &'a [JoinHandle<()>],
    status: Option<&'a StatusCell>,
    paused: bool,
}

impl Controller<'_> {
    /// Answers the handle's requests until an event ends the VM, the watchdog fires,
    /// or a requested shutdown's grace period runs out; returns why the VM ended.
    fn serve(&mut self, started: Instant) -> VmExit {
        // A timeout beyond Instant's range never fires.
        let watchdog = self.vm.timeout.and_then(|t| Some((started.checked_add(t)?, VmExit::Timeout(t))));
        let mut forced: Option<(Instant, VmExit)> = None;
        loop {
            let deadline = match (&watchdog, &forced) {
                (Some(w), Some(f)) => Some(if f.0 < w.0 { f } else { w }),
                (w, f) => w.as_ref().or(f.as_ref()),
            };
            // A wait beyond Instant's range is a plain recv; the VM holds a sender, so
            // the channel never disconnects.
            let wait = deadline.map_or(Duration::MAX, |(at, _)| at.saturating_duration_since(Instant::now()));
            let event = match self.vm.events_rx.recv_timeout(wait) {
                Ok(e) => e,
                Err(RecvTimeoutError::Timeout) => match deadline {
                    Some((_, exit)) => return exit.clone(),
                    None => continue,
                },
                Err(RecvTimeoutError::Disconnected) => {
                    return VmExit::VcpuFailed { vcpu: 0, message: "the VM's event channel closed".into() }
                }
            };
            let request = match VmExit::from_event(event) {
                Ok(exit) => return exit,
                Err(request) => request,
            };
            let result = self.handle(request.kind, &mut forced);
            // The requester may have given up waiting; nothing to do then.
            let _ = request.reply.send(result);
        }
    }

    fn handle(&mut self, kind: RequestKind, forced: &mut Option<(Instant, VmExit)>) -> Result<(), ControlError> {
        let state = if forced.is_some() {
            VmState::ShuttingDown
        } else if self.paused {
            VmState::Paused
        } else {
            VmState::Running
        };
        let wrong = |action| Err(ControlError::WrongState { action, state });
        match kind {
            RequestKind::Pause if state != VmState::Running => wrong("pause"),
            RequestKind::Pause => {
                self.pause()?;
                self.paused = true;
                self.set_state(VmState::Paused);
                log::info!("VM paused");
                Ok(())
            }
            RequestKind::Resume if state != VmState::Paused => wrong("resume"),
            RequestKind::Resume => {
                self.resume();
                self.set_state(VmState::Running);
                log::info!("VM resumed");
                Ok(())
            }
            RequestKind::CtrlAltDel => {
                self.press_ctrl_alt_del();
                Ok(())
            }
            RequestKind::Shutdown { grace } => {
                // The guest must run to honour the request.
                if self.paused {
                    self.resume();
                }
                // A grace period beyond Instant's range is a century.
                let now = Instant::now();
                let at = now.checked_add(grace).unwrap_or(now + Duration::from_secs(100 * 365 * 86_400));
                match forced {
                    // A repeated request can only bring the deadline forward.
                    Some((deadline, exit)) => {
                        if at < *deadline {
                            *deadline = at;
                            *exit = VmExit::ShutdownForced { grace };
                        }
                    }
                    None => {
                        // A zero grace period ends the VM at once, without asking.
                        if !grace.is_zero() {
                            self.press_ctrl_alt_del();
                        }
                        *forced = Some((at, VmExit::ShutdownForced { grace }));
                        self.set_state(VmState::ShuttingDown);
                        if grace.is_zero() {
                            log::info!("shutdown requested: the VM ends now");
                        } else {
                            log::info!(
                                "shutdown requested: Ctrl-Alt-Del sent; the VM ends within {:.1} s",
                                grace.as_secs_f64()
                            );
                        }
                    }
                }
                Ok(())
            }
        }
    }

    fn set_state(&self, state: VmState) {
        if let Some(s) = self.status {
            s.set_state(state);
        }
    }

    fn press_ctrl_alt_del(&self) {
        let pressed = self.vm.i8042.lock().unwrap_or_else(|e| e.into_inner()).press_ctrl_alt_del();
        if let Err(e) = pressed {
            log::warn!("cannot raise the keyboard interrupt for Ctrl-Alt-Del: {e}");
        }
    }

    /// Closes the gate and kicks every vCPU thread until each has parked or ended.
    fn pause(&self) -> Result<(), ControlError> {
        self.gate.close();
        let deadline = Instant::now() + PAUSE_GRACE;
        loop {
            let ended = self.vcpus.iter().filter(|h| h.is_finished()).count();
            let want = self.vcpus.len() - ended;
            if self.gate.parked() >= want {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.gate.open();
                return Err(ControlError::PauseTimeout {
                    stuck: want - self.gate.parked().min(want),
                    waited: PAUSE_GRACE,
                });
            }
            for h in self.vcpus.iter().filter(|h| !h.is_finished()) {
                // ESRCH: the thread is on its way out, which is as good as parked.
                let _ = h.kill(kick_signal());
            }
            self.gate.wait_parked(want, Duration::from_millis(2));
        }
    }

    fn resume(&mut self) {
        self.gate.open();
        self.paused = false;
    }
}

/// The compiled filters of a run, one per thread kind.
struct ThreadFilters {
    vcpu: Filter,
    devices: Filter,
    main: Filter,
    quote: Filter,
}

/// Sets the stop flag, releases parked vCPU threads and kicks every vCPU thread until
/// all have left KVM_RUN.
fn stop_vcpus(stopping: &AtomicBool, gate: &PauseGate, mut handles: Vec<JoinHandle<()>>) {
    stopping.store(true, Ordering::Release);
    gate.open();
    let deadline = Instant::now() + TEARDOWN_GRACE;
    while !handles.is_empty() {
        for h in &handles {
            if !h.is_finished() {
                // ESRCH just means the thread is already on its way out.
                let _ = h.kill(kick_signal());
            }
        }
        let (done, running): (Vec<_>, Vec<_>) = handles.into_iter().partition(|h| h.is_finished());
        for h in done {
            if h.join().is_err() {
                log::error!("a vCPU thread panicked");
            }
        }
        handles = running;
        if handles.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            log::error!("{} vCPU thread(s) did not leave KVM_RUN after being kicked; abandoning them", handles.len());
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        for (fd, gsi) in &self.irqfds {
            let _ = self.vm.unregister_irqfd(fd, *gsi);
        }
    }
}
