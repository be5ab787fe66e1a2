//! Virtio devices over the virtio-mmio transport, reaching guest memory only through
//! the shared-memory view ([`shared_memory::SharedMemory`]).
//!
//! The pieces:
//! - [`mmio::MmioTransport`]: the virtio-mmio (version 2) register file a vCPU thread
//!   dispatches MMIO exits to. It negotiates features (VERSION_1 and ACCESS_PLATFORM are
//!   always offered, and required in confidential mode), configures the queues, and on
//!   DRIVER_OK hands them to the device.
//! - [`VirtioDevice`]: what a device model implements. Devices run on the device event
//!   loop (event-manager), woken by one eventfd per queue that KVM signals through an
//!   ioeventfd on the QueueNotify register, and raise interrupts through
//!   [`VirtioInterrupt`] (an irqfd: an edge-triggered MSI via the user-space IOAPIC).
//! - [`shared_memory::SharedMemory`]: the guest memory a device may touch: only pages
//!   the guest has shared. A descriptor that points at private memory fails the request.

pub mod block;
pub mod console;
mod mapped_image;
pub mod mmio;
pub mod net;
pub mod net_file;
pub mod net_ring;
pub mod rng;
pub mod shared_memory;
pub mod vsock;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use vmm_sys_util::eventfd::EventFd;

pub use shared_memory::{GuestMem, SharedMemory};

/// Virtio device IDs (virtio 1.2, 5).
pub mod device_id {
    /// Network card.
    pub const NET: u32 = 1;
    /// Block device.
    pub const BLOCK: u32 = 2;
    /// Console.
    pub const CONSOLE: u32 = 3;
    /// Entropy source.
    pub const RNG: u32 = 4;
    /// Socket device.
    pub const VSOCK: u32 = 19;
}

/// Transport feature bits every cvmm device offers.
pub mod features {
    /// VIRTIO_F_VERSION_1: modern (non-legacy) device.
    pub const VERSION_1: u64 = 1 << 32;
    /// VIRTIO_F_ACCESS_PLATFORM: the device reaches memory only through the platform's
    /// rules (for a confidential guest: only shared memory, so the guest bounces).
    pub const ACCESS_PLATFORM: u64 = 1 << 33;
    /// VIRTIO_RING_F_EVENT_IDX.
    pub const RING_EVENT_IDX: u64 = 1 << 29;
}

/// Interrupt status bit: a used buffer was added to a queue.
pub const INT_USED_RING: u32 = 0x1;
/// Interrupt status bit: the configuration changed.
pub const INT_CONFIG: u32 = 0x2;

/// How a device signals the guest: sets the transport's interrupt status and fires the
/// irqfd. Cheap to clone; shared between the transport and the device.
#[derive(Clone, Debug)]
pub struct VirtioInterrupt {
    status: Arc<AtomicU32>,
    irq: Arc<EventFd>,
}

impl VirtioInterrupt {
    /// An interrupt firing `irq` (registered with KVM as an irqfd).
    pub fn new(irq: EventFd) -> Self {
        Self { status: Arc::new(AtomicU32::new(0)), irq: Arc::new(irq) }
    }

    /// Tells the guest that queue buffers were used.
    pub fn signal_used_queue(&self) {
        self.signal(INT_USED_RING);
    }

    /// Tells the guest that the device configuration changed.
    pub fn signal_config_change(&self) {
        self.signal(INT_CONFIG);
    }

    fn signal(&self, bit: u32) {
        self.status.fetch_or(bit, Ordering::SeqCst);
        if let Err(e) = self.irq.write(1) {
            log::error!("virtio: cannot raise the interrupt: {e}");
        }
    }

    /// The InterruptStatus register.
    pub fn status(&self) -> u32 {
        self.status.load(Ordering::SeqCst)
    }

    /// InterruptACK: clears the acknowledged bits.
    pub fn ack(&self, bits: u32) {
        self.status.fetch_and(!bits, Ordering::SeqCst);
    }

    /// The eventfd (for registering the irqfd).
    pub fn eventfd(&self) -> &EventFd {
        &self.irq
    }
}

/// What a device gets when the driver sets DRIVER_OK.
#[derive(Debug)]
pub struct ActivateContext {
    /// The shared-memory view of guest memory: the only memory the device may touch.
    pub mem: GuestMem,
    /// The queues the driver configured, in index order.
    pub queues: Vec<virtio_queue::Queue>,
    /// The interrupt to raise.
    pub interrupt: VirtioInterrupt,
    /// The features the driver accepted.
    pub acked_features: u64,
}

/// Errors from activating a device.
#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    /// The driver configured a different number of queues than the device has.
    #[error("the driver configured {got} queues, the device needs {want}")]
    QueueCount {
        /// Configured.
        got: usize,
        /// Needed.
        want: usize,
    },
    /// The device could not start (its backend failed).
    #[error("device backend: {0}")]
    Backend(String),
}

/// A virtio device model.
///
/// The transport calls [`activate`](Self::activate) from a vCPU thread when the driver
/// sets DRIVER_OK, and [`reset`](Self::reset) when it writes 0 to the status register.
/// Processing happens on the device event loop: the device is also an event-manager
/// `MutEventSubscriber` watching its queue events (one eventfd per queue, given at
/// construction; KVM signals them through an ioeventfd on QueueNotify).
pub trait VirtioDevice: Send {
    /// The virtio device ID ([`device_id`]).
    fn device_type(&self) -> u32;

    /// The largest size of each queue; the length is the number of queues.
    fn queue_max_sizes(&self) -> &[u16];

    /// Device-specific feature bits (the transport adds VERSION_1 and ACCESS_PLATFORM).
    fn features(&self) -> u64;

    /// Reads the device configuration space at `offset` (bytes past the end read as 0).
    fn read_config(&self, offset: u64, data: &mut [u8]);

    /// Writes the device configuration space; most devices ignore writes.
    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}

    /// Starts the device with the driver's queues.
    fn activate(&mut self, ctx: ActivateContext) -> Result<(), ActivateError>;

    /// Stops the device and returns it to its initial state.
    fn reset(&mut self);
}

/// Reads a little-endian configuration structure: copies `config[offset..]` into
/// `data`, zero-filling whatever lies past the end (a helper for `read_config`).
pub fn read_config_bytes(config: &[u8], offset: u64, data: &mut [u8]) {
    data.fill(0);
    let Ok(offset) = usize::try_from(offset) else { return };
    if offset < config.len() {
        let n = data.len().min(config.len() - offset);
        data[..n].copy_from_slice(&config[offset..offset + n]);
    }
}
