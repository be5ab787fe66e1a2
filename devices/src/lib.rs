//! `devices`: the device models a cvmm guest talks to, decoupled from KVM.
//!
//! Devices sit on a [`bus::Bus`] (one for port I/O, one for MMIO) that the vCPU
//! threads dispatch exits to. They reach the rest of the VMM only through small
//! traits: an interrupt [`vm_superio::Trigger`] (an eventfd registered as a KVM irqfd),
//! [`StopHandler`] for guest requests to end the VM, and [`ioapic::MsiRouter`] for
//! the IOAPIC's interrupt routes. Nothing here issues an ioctl.
//!
//! - [`serial`]: the 16550 debug console (vm-superio) at COM1.
//! - [`legacy`]: the debug-exit port and the i8042 (reset line, Ctrl-Alt-Del).
//! - [`ioapic`]: a user-space IOAPIC that turns redirection entries into MSI routes.
#![deny(missing_docs)]
#![deny(unsafe_code)]

pub mod bus;
pub mod ioapic;
pub mod legacy;
pub mod serial;
pub mod virtio;

/// Why the guest asked to end the VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestStop {
    /// A write to the debug-exit port, with the guest's status.
    Exit(u8),
    /// A reset request (i8042 or similar). A confidential guest cannot be reset in
    /// place, so cvmm ends the VM; a restart is a new launch.
    Reset,
}

/// Receives the guest's requests to end the VM.
pub trait StopHandler: Send + Sync {
    /// Called from a vCPU thread when the guest asks to stop.
    fn stop(&self, reason: GuestStop);
}

/// An interrupt line backed by an eventfd (registered with KVM as an irqfd).
#[derive(Debug)]
pub struct EventFdTrigger(pub vmm_sys_util::eventfd::EventFd);

impl vm_superio::Trigger for EventFdTrigger {
    type E = std::io::Error;

    fn trigger(&self) -> std::io::Result<()> {
        self.0.write(1)
    }
}
