//! The device event loop: one thread running an event-manager over every virtio
//! device's queue eventfds (signalled by KVM's ioeventfds), so device I/O never runs
//! on a vCPU thread.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;

use event_manager::{EventManager, EventOps, EventSet, Events, MutEventSubscriber, SubscriberOps};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::seccomp::Filter;
use crate::vm::RunError;

/// A device as the event loop holds it.
pub type Subscriber = Arc<Mutex<dyn MutEventSubscriber + Send>>;

/// Ends the loop when its eventfd is written.
struct Exit {
    evt: EventFd,
    stop: Arc<AtomicBool>,
}

impl MutEventSubscriber for Exit {
    fn process(&mut self, _events: Events, _ops: &mut EventOps<'_>) {
        let _ = self.evt.read();
        self.stop.store(true, Ordering::Release);
    }

    fn init(&mut self, ops: &mut EventOps<'_>) {
        if let Err(e) = ops.add(Events::new(&self.evt, EventSet::IN)) {
            log::error!("device loop: cannot watch the exit event: {e:?}");
        }
    }
}

/// A running device event loop.
pub struct DeviceLoop {
    exit: EventFd,
    handle: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for DeviceLoop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceLoop").field("running", &self.handle.is_some()).finish()
    }
}

impl DeviceLoop {
    /// Starts the loop over `devices` (nothing to start without devices). With a
    /// `filter`, the loop's thread installs it before it touches a device; `start`
    /// returns once it has, and fails if it could not.
    pub fn start(devices: Vec<Subscriber>, filter: Option<Filter>) -> Result<Option<Self>, RunError> {
        if devices.is_empty() {
            return Ok(None);
        }
        let mut manager: EventManager<Subscriber> = EventManager::new()
            .map_err(|e| RunError::DeviceLoop(std::io::Error::other(format!("event manager: {e:?}"))))?;
        let exit = EventFd::new(EFD_NONBLOCK).map_err(RunError::DeviceLoop)?;
        let stop = Arc::new(AtomicBool::new(false));
        let exit_evt = exit.try_clone().map_err(RunError::DeviceLoop)?;
        manager.add_subscriber(Arc::new(Mutex::new(Exit { evt: exit_evt, stop: stop.clone() })));
        for d in devices {
            manager.add_subscriber(d);
        }
        let (ready_tx, ready_rx) = mpsc::sync_channel(1);
        let handle = std::thread::Builder::new()
            .name("devices".into())
            .spawn(move || {
                let installed = filter.as_ref().map_or(Ok(()), Filter::apply);
                let failed = installed.is_err();
                let _ = ready_tx.send(installed);
                if failed {
                    return;
                }
                while !stop.load(Ordering::Acquire) {
                    if let Err(e) = manager.run() {
                        log::error!("device loop: {e:?}");
                        break;
                    }
                }
            })
            .map_err(RunError::DeviceLoop)?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Some(Self { exit, handle: Some(handle) })),
            Ok(Err(e)) => {
                let _ = handle.join();
                Err(RunError::Seccomp(e))
            }
            Err(_) => {
                let _ = handle.join();
                Err(RunError::DeviceLoop(std::io::Error::other("the device loop thread ended before it started")))
            }
        }
    }

    /// Stops the loop and joins its thread.
    pub fn stop(&mut self) {
        if let Some(h) = self.handle.take() {
            let _ = self.exit.write(1);
            if h.join().is_err() {
                log::error!("the device loop thread panicked");
            }
        }
    }
}

impl Drop for DeviceLoop {
    fn drop(&mut self) {
        self.stop();
    }
}
