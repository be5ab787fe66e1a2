//! A handle to a VM for the code that embeds cvmm: start it, pause and resume it, ask
//! it to shut down, wait for its end, and query its state and launch information while
//! it runs.
//!
//! ```no_run
//! use std::time::Duration;
//!
//! let config = vmm::VmConfig { cmdline: Some("wait".into()), ..Default::default() };
//! let vm = vmm::VmHandle::create(&config, Box::new(std::io::stdout())).unwrap();
//! vm.start().unwrap();
//! vm.pause().unwrap();
//! assert_eq!(vm.state(), vmm::VmState::Paused);
//! vm.resume().unwrap();
//! vm.shutdown(Duration::from_secs(5)).unwrap();
//! assert_eq!(vm.wait().unwrap(), vmm::VmExit::GuestExit(0));
//! ```
//!
//! A handle's VM runs on threads of its own (a supervisor that owns the [`Vm`], the
//! control thread, one thread per vCPU, the device loop); the handle only sends
//! requests to the control thread and reads the state it publishes, so any number of
//! VMs can run in one process, each under its own handle, and a handle can be shared
//! between threads (`Arc<VmHandle>`).
//!
//! **Shutdown.** [`VmHandle::shutdown`] asks the guest first, the way Firecracker does
//! for Linux: the i8042 delivers the Ctrl-Alt-Del key presses
//! (`arch::abi::CTRL_ALT_DEL_SCANCODES`) with the keyboard interrupt (IRQ 1). cvmm's
//! demo guest honours it when started with `wait` on its command line; a Linux guest
//! whose i8042 and keyboard drivers are running reboots, which ends the VM. A guest
//! still running when the grace period ends is ended by force, as the watchdog does
//! ([`VmExit::ShutdownForced`]).

use std::io::Write;
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;
use thiserror::Error;
use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};

use crate::builder::{build_vm, BuildError};
use crate::config::VmConfig;
use crate::error_chain;
use crate::launch_log::LogEntry;
use crate::vm::{LaunchInfo, Request, RequestKind, RunError, Vm, VmEvent, VmExit};

/// Where a VM is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VmState {
    /// Built, not started.
    Created,
    /// Its vCPUs run.
    Running,
    /// Every vCPU is parked outside KVM_RUN.
    Paused,
    /// The guest was asked to shut down; it is ended by force when the grace period
    /// runs out.
    ShuttingDown,
    /// The VM has ended and its resources are released.
    Exited,
}

impl VmState {
    /// The state's name as the API spells it (`created`, `running`, `paused`,
    /// `shutting_down`, `exited`).
    pub fn name(self) -> &'static str {
        match self {
            VmState::Created => "created",
            VmState::Running => "running",
            VmState::Paused => "paused",
            VmState::ShuttingDown => "shutting_down",
            VmState::Exited => "exited",
        }
    }
}

impl std::fmt::Display for VmState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a handle could not do what it was asked.
#[derive(Debug, Error, Clone)]
pub enum ControlError {
    /// The request does not apply to the VM's current state.
    #[error("cannot {action} the VM: it is {state}")]
    WrongState {
        /// What was asked (`start`, `pause`, `resume`, `shut down`, ...).
        action: &'static str,
        /// The state the VM was in.
        state: VmState,
    },
    /// Some vCPU threads did not park in time; the VM was left running.
    #[error("cannot pause the VM: {stuck} vCPU(s) did not leave KVM_RUN within {:.1} s", waited.as_secs_f64())]
    PauseTimeout {
        /// How many vCPUs did not park.
        stuck: usize,
        /// How long the pause waited.
        waited: Duration,
    },
    /// The VM could not be run (its threads or seccomp filters could not be set up).
    #[error("the VM could not run: {0}")]
    Run(#[source] Arc<RunError>),
}

/// A VM's end as the API reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExitInfo {
    /// [`VmExit::kind`].
    pub reason: &'static str,
    /// The exit status `cvmm run` would end with ([`VmExit::exit_status`]).
    pub exit_status: i32,
    /// Whether the guest ended the VM on purpose ([`VmExit::is_guest_requested`]).
    pub guest_requested: bool,
    /// The end, in words.
    pub message: String,
}

impl From<&VmExit> for ExitInfo {
    fn from(e: &VmExit) -> Self {
        Self {
            reason: e.kind(),
            exit_status: e.exit_status(),
            guest_requested: e.is_guest_requested(),
            message: e.to_string(),
        }
    }
}

/// One launch step and how long it took.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LaunchStep {
    /// The step.
    pub name: &'static str,
    /// Its duration in milliseconds.
    pub ms: f64,
}

/// A snapshot of a VM's state and launch information.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VmInfo {
    /// Where the VM is in its life.
    pub state: VmState,
    /// The TEE (`plain` for a VM without one).
    pub tee: &'static str,
    /// The launch backend.
    pub backend: &'static str,
    /// The launch measurement the guest's attestation should carry (hex); `None` for a
    /// plain VM.
    pub expected_measurement: Option<String>,
    /// Number of vCPUs.
    pub vcpus: usize,
    /// Guest RAM in bytes.
    pub memory_bytes: u64,
    /// The launch steps the builder ran.
    pub launch_steps: Vec<LaunchStep>,
    /// How the VM ended, once it has.
    pub exit: Option<ExitInfo>,
    /// Why the VM could not run, if it could not.
    pub error: Option<String>,
}

/// The state a running VM publishes to its handle.
#[derive(Debug)]
pub(crate) struct StatusCell {
    inner: Mutex<Status>,
    changed: Condvar,
}

#[derive(Debug)]
struct Status {
    state: VmState,
    outcome: Option<Result<VmExit, ControlError>>,
}

impl StatusCell {
    fn new() -> Self {
        Self { inner: Mutex::new(Status { state: VmState::Created, outcome: None }), changed: Condvar::new() }
    }

    fn lock(&self) -> MutexGuard<'_, Status> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Publishes a new state (the control thread's changes while the VM runs).
    pub(crate) fn set_state(&self, state: VmState) {
        let mut s = self.lock();
        if s.state != VmState::Exited {
            s.state = state;
        }
        self.changed.notify_all();
    }

    /// Publishes the VM's end.
    fn finish(&self, outcome: Result<VmExit, ControlError>) {
        let mut s = self.lock();
        s.state = VmState::Exited;
        s.outcome.get_or_insert(outcome);
        self.changed.notify_all();
    }

    /// Waits while `cond` holds, at most `timeout` (forever with `None`).
    fn wait_while(&self, timeout: Option<Duration>, cond: impl Fn(&Status) -> bool) -> MutexGuard<'_, Status> {
        let mut s = self.lock();
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        while cond(&s) {
            s = match deadline {
                None => self.changed.wait(s).unwrap_or_else(|e| e.into_inner()),
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    self.changed.wait_timeout(s, left).unwrap_or_else(|e| e.into_inner()).0
                }
            };
        }
        s
    }
}

/// Publishes an end if the supervisor thread unwinds (a panic in a debug build), so
/// waiters never wait forever.
struct FinishGuard(Arc<StatusCell>);

impl Drop for FinishGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.finish(Err(ControlError::Run(Arc::new(RunError::SpawnController(std::io::Error::other(
                "the VM's supervisor thread panicked",
            ))))));
        }
    }
}

/// A handle to one VM: see the module documentation.
pub struct VmHandle {
    status: Arc<StatusCell>,
    requests: mpsc::Sender<VmEvent>,
    pending: Mutex<Option<Vm>>,
    supervisor: Mutex<Option<JoinHandle<()>>>,
    launch: LaunchInfo,
    backend: &'static str,
    vcpus: usize,
    memory: u64,
    steps: Vec<(&'static str, Duration)>,
}

impl std::fmt::Debug for VmHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VmHandle")
            .field("state", &self.state())
            .field("tee", &self.launch.tee)
            .field("vcpus", &self.vcpus)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl VmHandle {
    /// Takes charge of a built VM (state [`VmState::Created`]).
    pub fn new(vm: Vm) -> Self {
        let memory = vm.guest_memory().iter().map(|r| r.len()).sum();
        Self {
            status: Arc::new(StatusCell::new()),
            requests: vm.events_tx.clone(),
            launch: vm.launch_info().clone(),
            backend: vm.backend_name(),
            vcpus: vm.vcpu_count(),
            memory,
            steps: vm.launch_steps().to_vec(),
            pending: Mutex::new(Some(vm)),
            supervisor: Mutex::new(None),
        }
    }

    /// Builds a VM from `config` ([`build_vm`]), writing the guest's console to
    /// `console`, and returns its handle (state [`VmState::Created`]).
    pub fn create(config: &VmConfig, console: Box<dyn Write + Send>) -> Result<Self, BuildError> {
        Ok(Self::new(build_vm(config, console)?))
    }

    /// Starts the VM: returns once its vCPUs run (state [`VmState::Running`]), or with
    /// the reason it could not run (state [`VmState::Exited`]). Only a created VM
    /// can be started.
    pub fn start(&self) -> Result<(), ControlError> {
        let mut pending = lock(&self.pending);
        let Some(mut vm) = pending.take() else {
            return Err(ControlError::WrongState { action: "start", state: self.state() });
        };
        let status = self.status.clone();
        let spawned = std::thread::Builder::new().name("vm-supervisor".into()).spawn(move || {
            let guard = FinishGuard(status.clone());
            let result = vm.run_with(Some(&status));
            // Released here, outside the VM's confined threads: unregistering irqfds,
            // closing fds and unmapping guest memory need system calls they may not make.
            drop(vm);
            status.finish(result.map_err(|e| ControlError::Run(Arc::new(e))));
            drop(guard);
        });
        match spawned {
            Ok(h) => *lock(&self.supervisor) = Some(h),
            Err(e) => {
                let err = ControlError::Run(Arc::new(RunError::SpawnController(e)));
                self.status.finish(Err(err.clone()));
                return Err(err);
            }
        }
        // `pending` stays locked until the VM runs (or failed to): a concurrent start
        // then sees the outcome, not a VM still `created`.
        let s = self.status.wait_while(None, |s| s.state == VmState::Created);
        let started = match &s.outcome {
            Some(Err(e)) => Err(e.clone()),
            _ => Ok(()),
        };
        drop(pending);
        started
    }

    /// Parks every vCPU outside KVM_RUN (state [`VmState::Paused`]); returns once all
    /// are parked. Only a running VM can be paused. The devices stay as they are; the
    /// watchdog's clock keeps running.
    pub fn pause(&self) -> Result<(), ControlError> {
        self.request("pause", RequestKind::Pause)
    }

    /// Lets a paused VM's vCPUs run again (state [`VmState::Running`]).
    pub fn resume(&self) -> Result<(), ControlError> {
        self.request("resume", RequestKind::Resume)
    }

    /// Asks the guest to shut down (Ctrl-Alt-Del on the i8042; a paused VM is resumed
    /// first) and ends the VM by force if it still runs after `grace`
    /// ([`VmExit::ShutdownForced`]); a zero `grace` ends it at once without asking.
    /// Returns once the request is made (state [`VmState::ShuttingDown`]); [`wait`]
    /// for the end. Repeating it while shutting down can only bring the deadline
    /// forward.
    ///
    /// [`wait`]: VmHandle::wait
    pub fn shutdown(&self, grace: Duration) -> Result<(), ControlError> {
        self.request("shut down", RequestKind::Shutdown { grace })
    }

    /// Presses Ctrl-Alt-Del on the guest's i8042, and does nothing else: no resume, no
    /// deadline (Firecracker's `SendCtrlAltDel`). A paused guest sees it once resumed.
    pub fn send_ctrl_alt_del(&self) -> Result<(), ControlError> {
        self.request("send Ctrl-Alt-Del to", RequestKind::CtrlAltDel)
    }

    fn request(&self, action: &'static str, kind: RequestKind) -> Result<(), ControlError> {
        let state = self.state();
        if matches!(state, VmState::Created | VmState::Exited) {
            return Err(ControlError::WrongState { action, state });
        }
        let (reply, answer) = mpsc::channel();
        let gone = ControlError::WrongState { action, state: VmState::Exited };
        if self.requests.send(VmEvent::Request(Request { kind, reply })).is_err() {
            return Err(gone);
        }
        // The control thread answers every request it takes; a request still queued
        // when the VM ends is dropped with the VM, and with it the reply channel.
        answer.recv().unwrap_or(Err(gone))
    }

    /// Waits for the VM to end and returns how it ended, or why it could not run.
    /// Fails at once for a VM that was never started.
    pub fn wait(&self) -> Result<VmExit, ControlError> {
        self.wait_for(None).unwrap_or_else(|| Err(ControlError::WrongState { action: "wait for", state: self.state() }))
    }

    /// [`VmHandle::wait`], for at most `timeout`: `None` if the VM still runs then.
    pub fn wait_timeout(&self, timeout: Duration) -> Option<Result<VmExit, ControlError>> {
        self.wait_for(Some(timeout))
    }

    fn wait_for(&self, timeout: Option<Duration>) -> Option<Result<VmExit, ControlError>> {
        if self.state() == VmState::Created {
            return Some(Err(ControlError::WrongState { action: "wait for", state: VmState::Created }));
        }
        let outcome = self.status.wait_while(timeout, |s| s.state != VmState::Exited).outcome.clone()?;
        // The supervisor publishes the end as its last act; joining it leaves no thread.
        if let Some(h) = lock(&self.supervisor).take() {
            let _ = h.join();
        }
        Some(outcome)
    }

    /// Where the VM is in its life.
    pub fn state(&self) -> VmState {
        self.status.lock().state
    }

    /// How the VM ended, once it has (without waiting).
    pub fn exit(&self) -> Option<Result<VmExit, ControlError>> {
        self.status.lock().outcome.clone()
    }

    /// The TEE in use: `plain` for a VM without one.
    pub fn tee(&self) -> &'static str {
        self.launch.tee
    }

    /// The launch measurement the guest's attestation should carry (hex); `None` for
    /// a plain VM.
    pub fn expected_measurement(&self) -> Option<&str> {
        self.launch.expected_measurement.as_deref()
    }

    /// The measured launch plan ([`crate::launch_log`]); empty for a plain VM.
    pub fn launch_log(&self) -> &[LogEntry] {
        &self.launch.launch_log
    }

    /// Everything the launch established.
    pub fn launch_info(&self) -> &LaunchInfo {
        &self.launch
    }

    /// The launch backend that built the VM.
    pub fn backend_name(&self) -> &'static str {
        self.backend
    }

    /// The launch steps the builder ran, with their durations.
    pub fn launch_steps(&self) -> &[(&'static str, Duration)] {
        &self.steps
    }

    /// A snapshot of the VM's state and launch information.
    pub fn info(&self) -> VmInfo {
        let (state, outcome) = {
            let s = self.status.lock();
            (s.state, s.outcome.clone())
        };
        let (exit, error) = match outcome {
            Some(Ok(e)) => (Some(ExitInfo::from(&e)), None),
            Some(Err(e)) => (None, Some(error_chain(&e))),
            None => (None, None),
        };
        VmInfo {
            state,
            tee: self.launch.tee,
            backend: self.backend,
            expected_measurement: self.launch.expected_measurement.clone(),
            vcpus: self.vcpus,
            memory_bytes: self.memory,
            launch_steps: self
                .steps
                .iter()
                .map(|(name, d)| LaunchStep { name, ms: d.as_micros() as f64 / 1e3 })
                .collect(),
            exit,
            error,
        }
    }
}

impl Drop for VmHandle {
    /// A VM still running when its handle goes is ended at once, and its threads are
    /// joined.
    fn drop(&mut self) {
        if matches!(self.state(), VmState::Running | VmState::Paused | VmState::ShuttingDown) {
            let _ = self.shutdown(Duration::ZERO);
        }
        if let Some(h) = lock(&self.supervisor).take() {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_serialize_as_the_api_names_them() {
        for s in [VmState::Created, VmState::Running, VmState::Paused, VmState::ShuttingDown, VmState::Exited] {
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{}\"", s.name()));
        }
    }

    #[test]
    fn wrong_state_errors_name_the_action_and_the_state() {
        let e = ControlError::WrongState { action: "pause", state: VmState::Created };
        assert_eq!(e.to_string(), "cannot pause the VM: it is created");
    }

    #[test]
    fn exit_info_carries_reason_status_and_message() {
        let i = ExitInfo::from(&VmExit::GuestExit(3));
        assert_eq!((i.reason, i.exit_status, i.guest_requested), ("guest_exit", 3, true));
        assert_eq!(i.message, "the guest exited with status 3");
        let i = ExitInfo::from(&VmExit::ShutdownForced { grace: Duration::from_secs(2) });
        assert_eq!((i.reason, i.exit_status, i.guest_requested), ("shutdown_forced", 1, false));
    }
}
