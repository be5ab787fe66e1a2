//! Legacy ports: the debug-exit port and the i8042 (its reset line, and the
//! Ctrl-Alt-Del key presses the host sends to ask the guest to shut down).

use std::collections::VecDeque;
use std::sync::Arc;

use vm_superio::Trigger;

use crate::bus::BusDevice;
use crate::{EventFdTrigger, GuestStop, StopHandler};

/// The scancodes (set 2, as an i8042 in translation-off mode delivers them) of the
/// Ctrl, Alt and Delete key presses: what [`I8042::press_ctrl_alt_del`] queues, the
/// sequence Firecracker sends for the same purpose.
pub const CTRL_ALT_DEL: [u8; 4] = [0x14, 0x11, 0xe0, 0x71];
/// Status register bit: the output buffer (data port) holds a byte for the guest.
pub const I8042_STATUS_OUTPUT_FULL: u8 = 0x01;
/// Most bytes queued for the guest; further key presses are dropped until it reads.
const OUTPUT_CAPACITY: usize = 4 * CTRL_ALT_DEL.len();

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

/// The i8042 controller, reduced to its reset line and a keyboard that can only press
/// Ctrl-Alt-Del. Sits at ports 0x60-0x64 (offset 0 = data, offset 4 = status/command).
///
/// Writing 0xfe to the command port ends the VM (vm-superio's model). The host asks
/// the guest to shut down with [`I8042::press_ctrl_alt_del`]: the [`CTRL_ALT_DEL`]
/// scancodes wait in the output buffer (status bit 0 set while any is left, each read
/// of the data port takes one) and the keyboard interrupt (IRQ 1) is raised for each.
/// Until then, every read returns 0, as vm-superio's model does.
pub struct I8042 {
    inner: vm_superio::I8042Device<ResetTrigger>,
    output: VecDeque<u8>,
    keyboard_irq: Option<EventFdTrigger>,
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
        Self { inner: vm_superio::I8042Device::new(ResetTrigger(handler)), output: VecDeque::new(), keyboard_irq: None }
    }

    /// An i8042 reporting resets to `handler` and raising `keyboard_irq` (IRQ 1) when
    /// it has a byte for the guest.
    pub fn with_keyboard_interrupt(handler: Arc<dyn StopHandler>, keyboard_irq: EventFdTrigger) -> Self {
        Self { keyboard_irq: Some(keyboard_irq), ..Self::new(handler) }
    }

    /// Queues the [`CTRL_ALT_DEL`] key presses for the guest and raises the keyboard
    /// interrupt. Presses beyond a few unread sequences are dropped (the guest is not
    /// reading); the interrupt is raised all the same.
    pub fn press_ctrl_alt_del(&mut self) -> std::io::Result<()> {
        if self.output.len() + CTRL_ALT_DEL.len() <= OUTPUT_CAPACITY {
            self.output.extend(CTRL_ALT_DEL);
        }
        self.raise_keyboard_interrupt()
    }

    /// How many bytes wait for the guest.
    pub fn pending_output(&self) -> usize {
        self.output.len()
    }

    fn raise_keyboard_interrupt(&self) -> std::io::Result<()> {
        self.keyboard_irq.as_ref().map_or(Ok(()), Trigger::trigger)
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let v = match offset {
            0 if !self.output.is_empty() => {
                let byte = self.output.pop_front().unwrap_or(0);
                if !self.output.is_empty() {
                    // One interrupt per byte, as a keyboard controller does.
                    if let Err(e) = self.raise_keyboard_interrupt() {
                        log::warn!("i8042: cannot raise the keyboard interrupt: {e}");
                    }
                }
                byte
            }
            4 if !self.output.is_empty() => self.inner.read(4) | I8042_STATUS_OUTPUT_FULL,
            _ => self.inner.read(offset as u8),
        };
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
    fn ctrl_alt_del_is_read_one_byte_at_a_time_with_the_status_bit_and_an_interrupt_each() {
        let irq = vmm_sys_util::eventfd::EventFd::new(vmm_sys_util::eventfd::EFD_NONBLOCK).unwrap();
        let r = Arc::new(Record::default());
        let mut d = I8042::with_keyboard_interrupt(r.clone(), EventFdTrigger(irq.try_clone().unwrap()));
        let mut b = [0xffu8; 1];
        d.read(4, &mut b);
        assert_eq!(b[0] & I8042_STATUS_OUTPUT_FULL, 0, "nothing pending yet");
        assert!(irq.read().is_err(), "no interrupt yet");

        d.press_ctrl_alt_del().unwrap();
        assert_eq!(irq.read().unwrap(), 1);
        let mut got = Vec::new();
        loop {
            d.read(4, &mut b);
            if b[0] & I8042_STATUS_OUTPUT_FULL == 0 {
                break;
            }
            d.read(0, &mut b);
            got.push(b[0]);
        }
        assert_eq!(got, [0x14, 0x11, 0xe0, 0x71]);
        // One more interrupt for each byte left after a read: three.
        assert_eq!(irq.read().unwrap(), 3);
        d.read(0, &mut b);
        assert_eq!(b[0], 0, "an empty buffer reads as zero");
        assert!(r.0.lock().unwrap().is_empty(), "a key press is not a reset");
    }

    #[test]
    fn unread_key_presses_are_bounded() {
        let mut d = I8042::new(Arc::new(Record::default()));
        for _ in 0..100 {
            d.press_ctrl_alt_del().unwrap();
        }
        assert_eq!(d.pending_output(), OUTPUT_CAPACITY);
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
