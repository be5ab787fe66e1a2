//! A built VM: runs its vCPU threads until the guest (or the watchdog) ends it, then
//! tears everything down.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
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

use crate::seccomp::{Filter, SeccompError, ThreadKind};
use crate::stats::StepTimes;
use crate::vcpu::{install_kick_handler, kick_signal, run_vcpu, VcpuContext};

/// How long teardown waits for vCPU threads to leave KVM_RUN after being kicked.
const TEARDOWN_GRACE: Duration = Duration::from_secs(5);

/// Something that ends the VM, as reported by a device or a vCPU thread.
#[derive(Debug, Clone, PartialEq, Eq)]
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
    /// A confidential guest asked to be terminated (SEV-SNP GHCB termination request,
    /// TDX fatal error), with its reason.
    GuestTerminated {
        /// The vCPU.
        vcpu: u32,
        /// Reason set (SNP) or error class.
        set: u64,
        /// Reason code.
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
            VmExit::GuestTerminated { vcpu, set, code } => {
                write!(f, "the guest asked to be terminated on vCPU {vcpu}: reason set {set}, code {code:#x}")
            }
        }
    }
}

impl From<VmEvent> for VmExit {
    fn from(e: VmEvent) -> Self {
        match e {
            VmEvent::Guest(GuestStop::Exit(s)) => VmExit::GuestExit(s),
            VmEvent::Guest(GuestStop::Reset) => VmExit::Reset,
            VmEvent::Shutdown => VmExit::Shutdown,
            VmEvent::TripleFault { vcpu } => VmExit::TripleFault { vcpu },
            VmEvent::Crash { vcpu } => VmExit::Crash { vcpu },
            VmEvent::VcpuFailed { vcpu, message } => VmExit::VcpuFailed { vcpu, message },
            VmEvent::GuestTerminated { vcpu, set, code } => VmExit::GuestTerminated { vcpu, set, code },
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
    /// The emulated SNP platform and the CPUID table its GHCB serves, if any.
    pub(crate) snp: Option<(Arc<launch::snp::emulated::EmulatedSnpPlatform>, Arc<[kvm_bindings::kvm_cpuid_entry2]>)>,
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
        self.snp.as_ref().and_then(|(platform, _)| platform.psp().measurement())
    }

    /// The emulated SEV-SNP platform (RMP, PSP, AP creation) of an emulated SNP VM.
    pub fn snp_platform(&self) -> Option<&Arc<launch::snp::emulated::EmulatedSnpPlatform>> {
        self.snp.as_ref().map(|(platform, _)| platform)
    }

    /// Which launch backend built this VM.
    pub fn backend_name(&self) -> &'static str {
        self.backend_name
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
        if self.vcpus.is_empty() {
            return Err(RunError::AlreadyRan);
        }
        install_kick_handler().map_err(RunError::KickHandler)?;
        let filters = if self.seccomp {
            Some(ThreadFilters {
                vcpu: Filter::new(ThreadKind::Vcpu)?,
                devices: Filter::new(ThreadKind::Devices)?,
                main: Filter::new(ThreadKind::Main)?,
            })
        } else {
            log::warn!("seccomp filters are off: the VM's threads may make any system call");
            None
        };
        std::thread::scope(|scope| {
            let control = std::thread::Builder::new()
                .name("vmm".into())
                .spawn_scoped(scope, || self.control(filters))
                .map_err(RunError::SpawnController)?;
            control.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// The body of [`Vm::run`], on the control thread.
    fn control(&mut self, filters: Option<ThreadFilters>) -> Result<VmExit, RunError> {
        let (vcpu_filter, devices_filter, main_filter) = match filters {
            Some(f) => (Some(f.vcpu), Some(f.devices), Some(f.main)),
            None => (None, None, None),
        };
        let mut device_loop =
            crate::device_loop::DeviceLoop::start(std::mem::take(&mut self.subscribers), devices_filter)?;
        let stopping = Arc::new(AtomicBool::new(false));
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
                    stop_vcpus(&stopping, handles);
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
            stop_vcpus(&stopping, handles);
            return Err(e.into());
        }
        if main_filter.is_some() {
            log::debug!("seccomp filters installed: {} vCPU thread(s), device loop, main", handles.len());
        }
        let started = Instant::now();
        let event = match self.timeout {
            Some(t) => self.events_rx.recv_timeout(t).map_err(|_| t),
            // The controller holds a sender, so recv only fails if every sender is gone.
            None => self.events_rx.recv().map_err(|_| Duration::ZERO),
        };
        stop_vcpus(&stopping, handles);
        if let Some(l) = device_loop.as_mut() {
            l.stop();
        }
        let exit = match event {
            Ok(e) => VmExit::from(e),
            Err(t) => VmExit::Timeout(t),
        };
        log::info!("VM ended after {:.3} s: {exit}", started.elapsed().as_secs_f64());
        if let Err(e) = self.serial.lock().unwrap_or_else(|e| e.into_inner()).flush() {
            log::warn!("cannot flush the console: {e}");
        }
        Ok(exit)
    }
}

/// The compiled filters of a run, one per thread kind.
struct ThreadFilters {
    vcpu: Filter,
    devices: Filter,
    main: Filter,
}

/// Sets the stop flag and kicks every vCPU thread until all have left KVM_RUN.
fn stop_vcpus(stopping: &AtomicBool, mut handles: Vec<JoinHandle<()>>) {
    stopping.store(true, Ordering::Release);
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
