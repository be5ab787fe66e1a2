//! The device event loop: one thread running an event-manager over every virtio
//! device's queue eventfds (signalled by KVM's ioeventfds), so device I/O never runs
//! on a vCPU thread.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use event_manager::{EventManager, EventOps, EventSet, Events, MutEventSubscriber, SubscriberOps};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

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
    /// Starts the loop over `devices` (nothing to start without devices).
    pub fn start(devices: Vec<Subscriber>) -> std::io::Result<Option<Self>> {
        if devices.is_empty() {
            return Ok(None);
        }
        let mut manager: EventManager<Subscriber> =
            EventManager::new().map_err(|e| std::io::Error::other(format!("event manager: {e:?}")))?;
        let exit = EventFd::new(EFD_NONBLOCK)?;
        let stop = Arc::new(AtomicBool::new(false));
        manager.add_subscriber(Arc::new(Mutex::new(Exit { evt: exit.try_clone()?, stop: stop.clone() })));
        for d in devices {
            manager.add_subscriber(d);
        }
        let handle = std::thread::Builder::new().name("devices".into()).spawn(move || {
            while !stop.load(Ordering::Acquire) {
                if let Err(e) = manager.run() {
                    log::error!("device loop: {e:?}");
                    break;
                }
            }
        })?;
        Ok(Some(Self { exit, handle: Some(handle) }))
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
