//! The 16550 debug serial console (vm-superio), with output to any writer.

use std::io::Write;

use vm_superio::serial::NoEvents;
use vm_superio::Serial;

use crate::bus::BusDevice;
use crate::EventFdTrigger;

/// Number of I/O ports a 16550 occupies.
pub const SERIAL_PORT_COUNT: u64 = 8;

/// A 16550 UART whose transmitter writes to `W` and whose interrupt is an eventfd.
pub struct SerialConsole<W: Write + Send> {
    inner: Serial<EventFdTrigger, NoEvents, W>,
}

impl<W: Write + Send> SerialConsole<W> {
    /// A UART raising `irq` and writing the guest's output to `out`.
    pub fn new(irq: EventFdTrigger, out: W) -> Self {
        Self { inner: Serial::new(irq, out) }
    }

    /// Flushes buffered output.
    pub fn flush(&mut self) -> std::io::Result<()> {
        self.inner.writer_mut().flush()
    }
}

impl<W: Write + Send> BusDevice for SerialConsole<W> {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if let (Ok(off), Some(b)) = (u8::try_from(offset), data.first_mut()) {
            *b = self.inner.read(off);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let (Ok(off), Some(&v)) = (u8::try_from(offset), data.first()) {
            if let Err(e) = self.inner.write(off, v) {
                log::warn!("serial: {e:?}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmm_sys_util::eventfd::EventFd;

    #[test]
    fn transmitted_bytes_reach_the_writer() {
        let irq = EventFdTrigger(EventFd::new(libc_nonblock()).unwrap());
        let mut s = SerialConsole::new(irq, Vec::new());
        for b in b"hi\n" {
            s.write(0, &[*b]);
        }
        assert_eq!(s.inner.writer(), b"hi\n");
    }

    fn libc_nonblock() -> i32 {
        vmm_sys_util::eventfd::EFD_NONBLOCK
    }
}
