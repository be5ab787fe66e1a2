//! Legacy ports a guest uses to end the VM: the debug-exit port and the i8042 reset.

use std::sync::Arc;

use crate::bus::BusDevice;
use crate::{GuestStop, StopHandler};

/// The debug-exit device (see `arch::abi::DEBUG_EXIT_PORT`): a write ends the VM
/// with the low byte as the guest's exit status. Reads return 0.
pub struct DebugExit {
    handler: Arc<dyn StopHandler>,
}

impl DebugExit {
    /// A debug-exit device reporting to `handler`.
    pub fn new(handler: Arc<dyn StopHandler>) -> Self {
        Self { handler }
    }
}

impl BusDevice for DebugExit {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset == 0 {
            if let Some(&status) = data.first() {
                self.handler.stop(GuestStop::Exit(status));
            }
        }
    }
}

/// The i8042 controller, reduced to its reset line: writing 0xfe to the command port
/// ends the VM (vm-superio's model). Sits at ports 0x60-0x64 (offset 4 = command).
pub struct I8042 {
    inner: vm_superio::I8042Device<ResetTrigger>,
}

/// vm-superio's reset trigger, forwarding to the stop handler.
struct ResetTrigger(Arc<dyn StopHandler>);

impl vm_superio::Trigger for ResetTrigger {
    type E = std::convert::Infallible;

    fn trigger(&self) -> Result<(), Self::E> {
        self.0.stop(GuestStop::Reset);
        Ok(())
    }
}

impl I8042 {
    /// An i8042 reporting resets to `handler`.
    pub fn new(handler: Arc<dyn StopHandler>) -> Self {
        Self { inner: vm_superio::I8042Device::new(ResetTrigger(handler)) }
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let v = self.inner.read(offset as u8);
        data.fill(0);
        if let Some(b) = data.first_mut() {
            *b = v;
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let (Ok(off), Some(&v)) = (u8::try_from(offset), data.first()) {
            let Ok(()) = self.inner.write(off, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Record(Mutex<Vec<GuestStop>>);
    impl StopHandler for Record {
        fn stop(&self, reason: GuestStop) {
            self.0.lock().unwrap().push(reason);
        }
    }

    #[test]
    fn debug_exit_reports_the_low_byte() {
        let r = Arc::new(Record::default());
        let mut d = DebugExit::new(r.clone());
        d.write(0, &[0x2a, 0x01, 0, 0]);
        d.write(1, &[9]); // not the port itself
        assert_eq!(*r.0.lock().unwrap(), vec![GuestStop::Exit(0x2a)]);
    }

    #[test]
    fn i8042_reset_command_requests_a_reset_and_nothing_else_does() {
        let r = Arc::new(Record::default());
        let mut d = I8042::new(r.clone());
        d.write(4, &[0xaa]);
        d.write(0, &[0xfe]);
        assert!(r.0.lock().unwrap().is_empty());
        d.write(4, &[0xfe]);
        assert_eq!(*r.0.lock().unwrap(), vec![GuestStop::Reset]);
    }
}
