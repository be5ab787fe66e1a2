//! The virtio-mmio transport (virtio 1.2, 4.2; version 2 register layout).
//!
//! Every register access is validated: registers are 32 bits wide (other widths are
//! ignored and read as 0), queue registers only change while the driver is setting up
//! (FEATURES_OK set, DRIVER_OK not, the queue not ready), status bits only accumulate
//! (writing 0 resets), and FEATURES_OK is refused for a feature set that is not a
//! subset of the offer or (for confidential guests) lacks VERSION_1 and
//! ACCESS_PLATFORM. A device that cannot start sets DEVICE_NEEDS_RESET.

use std::sync::{Arc, Mutex};

use virtio_queue::{Queue, QueueT};
use vm_memory::GuestAddressSpace;
use vmm_sys_util::eventfd::EventFd;

use super::{features, ActivateContext, GuestMem, VirtioDevice, VirtioInterrupt};
use crate::bus::BusDevice;

/// Size of a virtio-mmio device window.
pub const MMIO_WINDOW: u64 = 0x200;
/// Offset of the QueueNotify register (for the ioeventfd).
pub const QUEUE_NOTIFY: u64 = 0x050;

const MAGIC: u32 = 0x7472_6976; // "virt"
const VERSION: u32 = 2;
const VENDOR_ID: u32 = 0x4d4d_5643; // "CVMM"
const CONFIG_SPACE: u64 = 0x100;

/// Device status bits.
pub mod status {
    /// The guest found the device.
    pub const ACKNOWLEDGE: u32 = 1;
    /// The guest has a driver for it.
    pub const DRIVER: u32 = 2;
    /// The driver is ready.
    pub const DRIVER_OK: u32 = 4;
    /// Feature negotiation is complete.
    pub const FEATURES_OK: u32 = 8;
    /// The device hit an error and needs a reset.
    pub const DEVICE_NEEDS_RESET: u32 = 0x40;
    /// The driver gave up.
    pub const FAILED: u32 = 0x80;
}

/// The register file of one virtio-mmio device.
pub struct MmioTransport {
    device: Arc<Mutex<dyn VirtioDevice>>,
    mem: GuestMem,
    confidential: bool,
    interrupt: VirtioInterrupt,
    queues: Vec<Queue>,
    queue_events: Vec<EventFd>,
    status: u32,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    queue_sel: u32,
    config_generation: u32,
}

impl std::fmt::Debug for MmioTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MmioTransport").field("status", &self.status).field("queues", &self.queues.len()).finish()
    }
}

fn lock(d: &Mutex<dyn VirtioDevice>) -> std::sync::MutexGuard<'_, dyn VirtioDevice + 'static> {
    d.lock().unwrap_or_else(|e| e.into_inner())
}

impl MmioTransport {
    /// A transport for `device`, reaching memory through `mem`, raising `interrupt`.
    /// `queue_events` are the device's queue eventfds (one per queue), written here
    /// when a QueueNotify write reaches user space instead of KVM's ioeventfd.
    /// `confidential` makes VERSION_1 and ACCESS_PLATFORM mandatory.
    pub fn new(
        device: Arc<Mutex<dyn VirtioDevice>>,
        mem: GuestMem,
        interrupt: VirtioInterrupt,
        queue_events: Vec<EventFd>,
        confidential: bool,
    ) -> std::io::Result<Self> {
        let sizes: Vec<u16> = lock(&device).queue_max_sizes().to_vec();
        if queue_events.len() != sizes.len() {
            return Err(std::io::Error::other(format!(
                "{} queue events for {} queues",
                queue_events.len(),
                sizes.len()
            )));
        }
        let queues = sizes
            .iter()
            .map(|&max| Queue::new(max).map_err(|e| std::io::Error::other(format!("queue of size {max}: {e:?}"))))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            device,
            mem,
            confidential,
            interrupt,
            queues,
            queue_events,
            status: 0,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            queue_sel: 0,
            config_generation: 0,
        })
    }

    /// The eventfd of queue `i`, for registering an ioeventfd on QueueNotify with
    /// datamatch `i`.
    pub fn queue_event(&self, i: usize) -> Option<&EventFd> {
        self.queue_events.get(i)
    }

    /// Number of queues.
    pub fn queue_count(&self) -> usize {
        self.queues.len()
    }

    /// The interrupt (for registering its irqfd).
    pub fn interrupt(&self) -> &VirtioInterrupt {
        &self.interrupt
    }

    /// The device status register.
    pub fn status(&self) -> u32 {
        self.status
    }

    fn offered_features(&self) -> u64 {
        lock(&self.device).features() | features::VERSION_1 | features::ACCESS_PLATFORM
    }

    fn selected_queue(&mut self) -> Option<&mut Queue> {
        self.queues.get_mut(self.queue_sel as usize)
    }

    /// Queue registers may change only during setup, and only for a queue not yet ready.
    fn queue_writable(&self) -> bool {
        self.status & status::FEATURES_OK != 0
            && self.status & status::DRIVER_OK == 0
            && self.queues.get(self.queue_sel as usize).is_some_and(|q| !q.ready())
    }

    fn reset(&mut self) {
        lock(&self.device).reset();
        for q in &mut self.queues {
            q.reset();
        }
        self.status = 0;
        self.driver_features = 0;
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.queue_sel = 0;
        self.interrupt.ack(u32::MAX);
    }

    fn features_acceptable(&self) -> bool {
        let offered = self.offered_features();
        let required =
            if self.confidential { features::VERSION_1 | features::ACCESS_PLATFORM } else { features::VERSION_1 };
        self.driver_features & !offered == 0 && self.driver_features & required == required
    }

    fn write_status(&mut self, value: u32) {
        if value == 0 {
            self.reset();
            return;
        }
        // Bits only accumulate; anything else is a driver bug we ignore.
        if value & self.status != self.status {
            log::warn!("virtio-mmio: status {value:#x} drops bits of {:#x}; ignored", self.status);
            return;
        }
        let new = value & !self.status;
        if new & status::FEATURES_OK != 0 && !self.features_acceptable() {
            log::warn!("virtio-mmio: refusing features {:#x}", self.driver_features);
            self.status = value & !status::FEATURES_OK;
            return;
        }
        if new & status::DRIVER_OK != 0 {
            if self.status & status::FEATURES_OK == 0 {
                log::warn!("virtio-mmio: DRIVER_OK before FEATURES_OK; ignored");
                return;
            }
            self.status = value;
            self.activate();
            return;
        }
        self.status = value;
    }

    fn activate(&mut self) {
        let mem = self.mem.memory();
        let mem = &*mem;
        let mut queues = Vec::with_capacity(self.queues.len());
        for (i, q) in self.queues.iter().enumerate() {
            if q.ready() && !q.is_valid(mem) {
                log::warn!("virtio-mmio: queue {i} is invalid (addresses outside shared memory or misaligned)");
                self.needs_reset();
                return;
            }
            match Queue::try_from(q.state()) {
                Ok(copy) => queues.push(copy),
                Err(e) => {
                    log::warn!("virtio-mmio: queue {i}: {e:?}");
                    self.needs_reset();
                    return;
                }
            }
        }
        let ctx = ActivateContext {
            mem: self.mem.clone(),
            queues,
            interrupt: self.interrupt.clone(),
            acked_features: self.driver_features,
        };
        let result = lock(&self.device).activate(ctx);
        if let Err(e) = result {
            log::error!("virtio-mmio: activation failed: {e}");
            self.needs_reset();
        }
    }

    fn needs_reset(&mut self) {
        self.status |= status::DEVICE_NEEDS_RESET;
        self.interrupt.signal_config_change();
    }

    fn read_register(&mut self, offset: u64) -> u32 {
        match offset {
            0x000 => MAGIC,
            0x004 => VERSION,
            0x008 => lock(&self.device).device_type(),
            0x00c => VENDOR_ID,
            0x010 => match self.device_features_sel {
                0 => self.offered_features() as u32,
                1 => (self.offered_features() >> 32) as u32,
                _ => 0,
            },
            0x034 => self.queues.get(self.queue_sel as usize).map_or(0, |q| u32::from(q.max_size())),
            0x044 => self.queues.get(self.queue_sel as usize).map_or(0, |q| u32::from(q.ready())),
            0x060 => self.interrupt.status(),
            0x070 => self.status,
            0x0b0 | 0x0b4 => u32::MAX, // SHMLen: no shared memory regions
            0x0fc => self.config_generation,
            _ => 0,
        }
    }

    fn write_register(&mut self, offset: u64, v: u32) {
        match offset {
            0x014 => self.device_features_sel = v,
            0x020 => {
                if self.status & (status::FEATURES_OK | status::DRIVER_OK) != 0 {
                    return; // features are fixed once accepted
                }
                match self.driver_features_sel {
                    0 => self.driver_features = (self.driver_features & !0xffff_ffff) | u64::from(v),
                    1 => self.driver_features = (self.driver_features & 0xffff_ffff) | (u64::from(v) << 32),
                    _ => {}
                }
            }
            0x024 => self.driver_features_sel = v,
            0x030 => self.queue_sel = v,
            0x038 if self.queue_writable() => {
                if let Some(q) = self.selected_queue() {
                    // Sizes above the maximum or not a power of two leave the queue invalid.
                    q.set_size(v.min(u32::from(u16::MAX)) as u16);
                }
            }
            0x044 if self.queue_writable() || v == 0 => {
                let setting_up = self.status & status::DRIVER_OK == 0;
                if let Some(q) = self.selected_queue() {
                    if setting_up {
                        q.set_ready(v == 1);
                    }
                }
            }
            0x050 => {
                // Normally KVM's ioeventfd absorbs these; this is the fallback path.
                if let Some(e) = self.queue_events.get(v as usize) {
                    let _ = e.write(1);
                }
            }
            0x064 => self.interrupt.ack(v),
            0x070 => self.write_status(v),
            0x080 | 0x084 | 0x090 | 0x094 | 0x0a0 | 0x0a4 if self.queue_writable() => {
                let (low, high) = if offset & 4 == 0 { (Some(v), None) } else { (None, Some(v)) };
                if let Some(q) = self.selected_queue() {
                    match offset & !4 {
                        0x080 => q.set_desc_table_address(low, high),
                        0x090 => q.set_avail_ring_address(low, high),
                        _ => q.set_used_ring_address(low, high),
                    }
                }
            }
            _ => log::debug!("virtio-mmio: ignoring write of {v:#x} at {offset:#x}"),
        }
    }
}

impl BusDevice for MmioTransport {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= CONFIG_SPACE {
            lock(&self.device).read_config(offset - CONFIG_SPACE, data);
            return;
        }
        data.fill(0);
        if data.len() == 4 && offset.is_multiple_of(4) {
            let v = self.read_register(offset);
            data.copy_from_slice(&v.to_le_bytes());
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= CONFIG_SPACE {
            lock(&self.device).write_config(offset - CONFIG_SPACE, data);
            self.config_generation = self.config_generation.wrapping_add(1);
            return;
        }
        match <[u8; 4]>::try_from(data) {
            Ok(b) if offset.is_multiple_of(4) => self.write_register(offset, u32::from_le_bytes(b)),
            _ => log::debug!("virtio-mmio: ignoring a {}-byte write at {offset:#x}", data.len()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::rng::Rng;
    use crate::virtio::SharedMemory;
    use virtio_queue::desc::{split::Descriptor, RawDescriptor};
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
    use vmm_sys_util::eventfd::EFD_NONBLOCK;

    fn w(t: &mut MmioTransport, off: u64, v: u32) {
        t.write(off, &v.to_le_bytes());
    }

    fn r(t: &mut MmioTransport, off: u64) -> u32 {
        let mut b = [0u8; 4];
        t.read(off, &mut b);
        u32::from_le_bytes(b)
    }

    struct Rig {
        mem: GuestMemoryMmap,
        rng: Arc<Mutex<Rng>>,
        t: MmioTransport,
    }

    fn rig(confidential: bool) -> Rig {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x40_0000)]).unwrap();
        let shared = SharedMemory::all_shared(&mem);
        let ev = EventFd::new(EFD_NONBLOCK).unwrap();
        let rng = Arc::new(Mutex::new(Rng::new(ev.try_clone().unwrap())));
        let irq = VirtioInterrupt::new(EventFd::new(EFD_NONBLOCK).unwrap());
        let t = MmioTransport::new(rng.clone(), shared.view(), irq, vec![ev], confidential).unwrap();
        Rig { mem, rng, t }
    }

    /// Drives the standard initialization up to FEATURES_OK with `features`.
    fn negotiate(t: &mut MmioTransport, features: u64) -> u32 {
        w(t, 0x070, status::ACKNOWLEDGE);
        w(t, 0x070, status::ACKNOWLEDGE | status::DRIVER);
        w(t, 0x024, 0);
        w(t, 0x020, features as u32);
        w(t, 0x024, 1);
        w(t, 0x020, (features >> 32) as u32);
        w(t, 0x070, status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK);
        r(t, 0x070)
    }

    fn setup_queue(t: &mut MmioTransport, mock: &MockSplitQueue<'_, GuestMemoryMmap>) {
        w(t, 0x030, 0);
        w(t, 0x038, 16);
        for (off, addr) in [(0x080, mock.desc_table_addr()), (0x090, mock.avail_addr()), (0x0a0, mock.used_addr())] {
            w(t, off, addr.0 as u32);
            w(t, off + 4, (addr.0 >> 32) as u32);
        }
        w(t, 0x044, 1);
    }

    #[test]
    fn identification_registers() {
        let mut rig = rig(false);
        assert_eq!(r(&mut rig.t, 0x000), 0x7472_6976);
        assert_eq!(r(&mut rig.t, 0x004), 2);
        assert_eq!(r(&mut rig.t, 0x008), 4);
        w(&mut rig.t, 0x014, 1);
        assert_eq!(r(&mut rig.t, 0x010) & 0b11, 0b11, "VERSION_1 and ACCESS_PLATFORM offered");
        w(&mut rig.t, 0x030, 0);
        assert_eq!(r(&mut rig.t, 0x034), 256);
    }

    #[test]
    fn full_initialization_activates_the_device_and_serves_a_request() {
        let mut rig = rig(true);
        let mock = MockSplitQueue::new(&rig.mem, 16);
        mock.add_desc_chains(&[RawDescriptor::from(Descriptor::new(0x10_0000, 32, 2, 0))], 0).unwrap();
        let st = negotiate(&mut rig.t, features::VERSION_1 | features::ACCESS_PLATFORM);
        assert_ne!(st & status::FEATURES_OK, 0);
        setup_queue(&mut rig.t, &mock);
        w(&mut rig.t, 0x070, st | status::DRIVER_OK);
        assert_eq!(r(&mut rig.t, 0x070) & status::DEVICE_NEEDS_RESET, 0);
        assert_eq!(rig.rng.lock().unwrap().process_queue(), 1);
        assert_eq!(rig.rng.lock().unwrap().served(), 32);
        assert_eq!(r(&mut rig.t, 0x060), 1, "used-ring interrupt pending");
        w(&mut rig.t, 0x064, 1);
        assert_eq!(r(&mut rig.t, 0x060), 0);
    }

    #[test]
    fn confidential_guests_must_accept_access_platform() {
        let mut rig = rig(true);
        let st = negotiate(&mut rig.t, features::VERSION_1);
        assert_eq!(st & status::FEATURES_OK, 0, "FEATURES_OK refused");
        let mut plain = self::rig(false);
        assert_ne!(negotiate(&mut plain.t, features::VERSION_1) & status::FEATURES_OK, 0);
        let mut legacy = self::rig(false);
        assert_eq!(negotiate(&mut legacy.t, 0) & status::FEATURES_OK, 0, "VERSION_1 is always required");
    }

    #[test]
    fn features_not_offered_are_refused() {
        let mut rig = rig(false);
        let st = negotiate(&mut rig.t, features::VERSION_1 | (1 << 40));
        assert_eq!(st & status::FEATURES_OK, 0);
    }

    #[test]
    fn queue_registers_are_frozen_outside_setup() {
        let mut rig = rig(false);
        // Before FEATURES_OK: ignored.
        w(&mut rig.t, 0x038, 8);
        w(&mut rig.t, 0x044, 1);
        assert_eq!(r(&mut rig.t, 0x044), 0);
        let mock = MockSplitQueue::new(&rig.mem, 16);
        let st = negotiate(&mut rig.t, features::VERSION_1);
        setup_queue(&mut rig.t, &mock);
        w(&mut rig.t, 0x070, st | status::DRIVER_OK);
        // After DRIVER_OK: the descriptor table cannot be moved.
        w(&mut rig.t, 0x080, 0x30_0000);
        assert_eq!(rig.t.queues[0].desc_table(), mock.desc_table_addr().0);
        // Selecting a queue that does not exist reads as absent.
        w(&mut rig.t, 0x030, 7);
        assert_eq!(r(&mut rig.t, 0x034), 0);
    }

    #[test]
    fn invalid_queue_addresses_set_needs_reset() {
        let mut rig = rig(false);
        let st = negotiate(&mut rig.t, features::VERSION_1);
        w(&mut rig.t, 0x030, 0);
        w(&mut rig.t, 0x038, 16);
        w(&mut rig.t, 0x080, 0xffff_f000); // descriptor table outside memory
        w(&mut rig.t, 0x084, 0xff);
        w(&mut rig.t, 0x044, 1);
        w(&mut rig.t, 0x070, st | status::DRIVER_OK);
        assert_ne!(r(&mut rig.t, 0x070) & status::DEVICE_NEEDS_RESET, 0);
        w(&mut rig.t, 0x070, 0);
        assert_eq!(r(&mut rig.t, 0x070), 0, "a reset clears everything");
    }

    #[test]
    fn odd_widths_unaligned_offsets_and_status_regressions_are_ignored() {
        let mut rig = rig(false);
        let mut b = [0xaau8; 2];
        rig.t.read(0x000, &mut b);
        assert_eq!(b, [0, 0]);
        rig.t.write(0x070, &[1]);
        assert_eq!(r(&mut rig.t, 0x070), 0);
        w(&mut rig.t, 0x072, 1);
        assert_eq!(r(&mut rig.t, 0x070), 0);
        w(&mut rig.t, 0x070, status::ACKNOWLEDGE | status::DRIVER);
        w(&mut rig.t, 0x070, status::ACKNOWLEDGE);
        assert_eq!(r(&mut rig.t, 0x070), status::ACKNOWLEDGE | status::DRIVER, "bits only accumulate");
        w(&mut rig.t, 0x050, 99); // notify of a queue that does not exist
        let mut cfg = [0xffu8; 8];
        rig.t.read(0x100, &mut cfg);
        assert_eq!(cfg, [0; 8]);
        assert_eq!(rig.mem.read_obj::<u64>(GuestAddress(0)).unwrap(), 0);
    }
}
