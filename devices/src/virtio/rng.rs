//! virtio-rng: fills the driver's writable buffers with bytes from the host's
//! getrandom(2).
//!
//! Hostile input: read-only descriptors get nothing written, a chain that points
//! outside shared memory is answered with zero bytes and counted, and one request is
//! served at most [`MAX_REQUEST`] bytes.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestAddressSpace;
use vmm_sys_util::eventfd::EventFd;

use super::{device_id, ActivateContext, ActivateError, GuestMem, VirtioDevice, VirtioInterrupt};

/// Queue size.
pub const QUEUE_SIZE: u16 = 256;
/// Most bytes one request is given.
pub const MAX_REQUEST: usize = 64 << 10;

struct Active {
    mem: GuestMem,
    queue: Queue,
    interrupt: VirtioInterrupt,
}

/// The virtio-rng device.
pub struct Rng {
    queue_event: EventFd,
    active: Option<Active>,
    served: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
}

impl std::fmt::Debug for Rng {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rng").field("active", &self.active.is_some()).finish()
    }
}

impl Rng {
    /// A virtio-rng device woken by `queue_event`.
    pub fn new(queue_event: EventFd) -> Self {
        Self { queue_event, active: None, served: Arc::new(AtomicU64::new(0)), failed: Arc::new(AtomicU64::new(0)) }
    }

    /// Bytes of entropy handed to the guest.
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    /// Requests that failed (bad chains, private or missing memory).
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    /// Serves every available request; returns how many were completed.
    pub fn process_queue(&mut self) -> usize {
        let Some(active) = self.active.as_mut() else { return 0 };
        let mem = active.mem.memory();
        let mut done = 0;
        while let Some(chain) = active.queue.pop_descriptor_chain(&*mem) {
            let head = chain.head_index();
            let written = match chain.writer(&*mem) {
                Ok(mut w) => {
                    let n = w.available_bytes().min(MAX_REQUEST);
                    let mut buf = vec![0u8; n];
                    match getrandom::fill(&mut buf)
                        .map_err(|e| e.to_string())
                        .and_then(|()| w.write_all(&buf).map_err(|e| e.to_string()))
                    {
                        Ok(()) => n,
                        Err(e) => {
                            log::warn!("virtio-rng: request {head}: {e}");
                            self.failed.fetch_add(1, Ordering::Relaxed);
                            0
                        }
                    }
                }
                Err(e) => {
                    log::warn!("virtio-rng: request {head} refused: {e:?}");
                    self.failed.fetch_add(1, Ordering::Relaxed);
                    0
                }
            };
            self.served.fetch_add(written as u64, Ordering::Relaxed);
            log::debug!("virtio-rng: request {head}: {written} bytes of entropy");
            if let Err(e) = active.queue.add_used(&*mem, head, written as u32) {
                log::warn!("virtio-rng: cannot complete request {head}: {e:?}");
                self.failed.fetch_add(1, Ordering::Relaxed);
                break;
            }
            done += 1;
        }
        if done > 0 && active.queue.needs_notification(&*mem).unwrap_or(true) {
            active.interrupt.signal_used_queue();
        }
        done
    }
}

impl VirtioDevice for Rng {
    fn device_type(&self) -> u32 {
        device_id::RNG
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        0
    }

    fn read_config(&self, _offset: u64, data: &mut [u8]) {
        data.fill(0); // virtio-rng has no configuration space
    }

    fn activate(&mut self, ctx: ActivateContext) -> Result<(), ActivateError> {
        let got = ctx.queues.len();
        let queue = ctx.queues.into_iter().next().filter(|_| got == 1);
        let queue = queue.ok_or(ActivateError::QueueCount { got, want: 1 })?;
        self.active = Some(Active { mem: ctx.mem, queue, interrupt: ctx.interrupt });
        // Requests queued before activation are served at once.
        let _ = self.queue_event.write(1);
        Ok(())
    }

    fn reset(&mut self) {
        self.active = None;
    }
}

impl MutEventSubscriber for Rng {
    fn process(&mut self, events: Events, _ops: &mut EventOps<'_>) {
        if events.event_set().contains(EventSet::IN) {
            let _ = self.queue_event.read();
            self.process_queue();
        }
    }

    fn init(&mut self, ops: &mut EventOps<'_>) {
        if let Err(e) = ops.add(Events::new(&self.queue_event, EventSet::IN)) {
            log::error!("virtio-rng: cannot watch the queue event: {e:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::SharedMemory;
    use virtio_queue::desc::{split::Descriptor, RawDescriptor};
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
    use vmm_sys_util::eventfd::EFD_NONBLOCK;

    const VRING_DESC_F_WRITE: u16 = 2;

    fn setup(shared: bool) -> (GuestMemoryMmap, SharedMemory) {
        let m = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x40_0000)]).unwrap();
        let s = if shared { SharedMemory::all_shared(&m) } else { SharedMemory::all_private(&m) };
        (m, s)
    }

    fn activated(s: &SharedMemory, queue: Queue) -> (Rng, VirtioInterrupt) {
        let interrupt = VirtioInterrupt::new(EventFd::new(EFD_NONBLOCK).unwrap());
        let mut rng = Rng::new(EventFd::new(EFD_NONBLOCK).unwrap());
        let ctx =
            ActivateContext { mem: s.view(), queues: vec![queue], interrupt: interrupt.clone(), acked_features: 0 };
        rng.activate(ctx).unwrap();
        (rng, interrupt)
    }

    #[test]
    fn writable_buffers_are_filled_and_completed() {
        let (m, s) = setup(true);
        let mock = MockSplitQueue::new(&m, 16);
        let descs = [RawDescriptor::from(Descriptor::new(0x10_0000, 64, VRING_DESC_F_WRITE, 0))];
        mock.add_desc_chains(&descs, 0).unwrap();
        let (mut rng, interrupt) = activated(&s, mock.create_queue().unwrap());

        assert_eq!(rng.process_queue(), 1);

        let mut got = [0u8; 64];
        m.read_slice(&mut got, GuestAddress(0x10_0000)).unwrap();
        assert_ne!(got, [0u8; 64], "64 random bytes are not all zero");
        assert_eq!(rng.served(), 64);
        assert_eq!(mock.used().idx().load(), 1);
        assert_eq!(interrupt.status() & crate::virtio::INT_USED_RING, 1);
    }

    #[test]
    fn read_only_buffers_get_nothing() {
        let (m, s) = setup(true);
        let mock = MockSplitQueue::new(&m, 16);
        let descs = [RawDescriptor::from(Descriptor::new(0x10_0000, 64, 0, 0))];
        mock.add_desc_chains(&descs, 0).unwrap();
        let (mut rng, _) = activated(&s, mock.create_queue().unwrap());
        assert_eq!(rng.process_queue(), 1);
        assert_eq!(rng.served(), 0);
        assert_eq!(m.read_obj::<u64>(GuestAddress(0x10_0000)).unwrap(), 0);
    }

    #[test]
    fn buffers_in_private_memory_are_refused_and_untouched() {
        let (m, s) = setup(false);
        // Only the queue's own pages (descriptor table, rings at 0..) are shared.
        s.set_shared(0, 0x1_0000, true).unwrap();
        let mock = MockSplitQueue::new(&m, 16);
        let descs = [RawDescriptor::from(Descriptor::new(0x20_0000, 64, VRING_DESC_F_WRITE, 0))];
        mock.add_desc_chains(&descs, 0).unwrap();
        let (mut rng, _) = activated(&s, mock.create_queue().unwrap());

        assert_eq!(rng.process_queue(), 1, "the request completes, with nothing written");

        assert_eq!(rng.failed(), 1);
        assert_eq!(rng.served(), 0);
        assert_eq!(m.read_obj::<u64>(GuestAddress(0x20_0000)).unwrap(), 0, "private memory untouched");
    }

    #[test]
    fn lengths_that_overflow_or_leave_memory_are_refused() {
        let (m, s) = setup(true);
        let mock = MockSplitQueue::new(&m, 16);
        let descs = [
            RawDescriptor::from(Descriptor::new(0x3f_ff00, 0x1000, VRING_DESC_F_WRITE, 0)),
            RawDescriptor::from(Descriptor::new(u64::MAX - 8, 64, VRING_DESC_F_WRITE, 0)),
        ];
        mock.add_desc_chains(&descs[..1], 0).unwrap();
        mock.add_desc_chains(&descs[1..], 1).unwrap();
        let (mut rng, _) = activated(&s, mock.create_queue().unwrap());
        rng.process_queue();
        assert_eq!(rng.failed(), 2);
        assert_eq!(rng.served(), 0);
    }

    #[test]
    fn an_inactive_device_does_nothing() {
        let mut rng = Rng::new(EventFd::new(EFD_NONBLOCK).unwrap());
        assert_eq!(rng.process_queue(), 0);
    }

    const VRING_DESC_F_NEXT: u16 = 1;

    #[test]
    fn a_descriptor_loop_ends_without_hanging() {
        let (m, s) = setup(true);
        let mock = MockSplitQueue::new(&m, 16);
        let flags = VRING_DESC_F_NEXT | VRING_DESC_F_WRITE;
        mock.desc_table().store(0, RawDescriptor::from(Descriptor::new(0x10_0000, 16, flags, 1))).unwrap();
        mock.desc_table().store(1, RawDescriptor::from(Descriptor::new(0x10_1000, 16, flags, 0))).unwrap();
        mock.avail().ring().ref_at(0).unwrap().store(0);
        mock.avail().idx().store(1);
        let (mut rng, _) = activated(&s, mock.create_queue().unwrap());

        // The chain is cut after at most queue-size descriptors (virtio-queue's TTL).
        rng.process_queue();

        assert!(rng.served() <= 16 * 16, "bounded by the queue size: {}", rng.served());
    }

    #[test]
    fn an_avail_index_beyond_the_queue_size_is_refused() {
        let (m, s) = setup(true);
        let mock = MockSplitQueue::new(&m, 16);
        mock.add_desc_chains(&[RawDescriptor::from(Descriptor::new(0x10_0000, 8, VRING_DESC_F_WRITE, 0))], 0).unwrap();
        mock.avail().idx().store(1000); // claims 1000 new entries in a 16-entry ring
        let (mut rng, _) = activated(&s, mock.create_queue().unwrap());

        assert_eq!(rng.process_queue(), 0);
        assert_eq!(rng.served(), 0);
        assert_eq!(mock.used().idx().load(), 0);
    }

    #[test]
    fn a_descriptor_index_outside_the_table_is_refused() {
        let (m, s) = setup(true);
        let mock = MockSplitQueue::new(&m, 16);
        mock.avail().ring().ref_at(0).unwrap().store(40); // head index 40 in a 16-entry table
        mock.avail().idx().store(1);
        let (mut rng, _) = activated(&s, mock.create_queue().unwrap());
        rng.process_queue();
        assert_eq!(rng.served(), 0);
    }

    #[test]
    fn rings_in_private_memory_cannot_be_read() {
        let (m, s) = setup(false);
        let mock = MockSplitQueue::new(&m, 16);
        mock.add_desc_chains(&[RawDescriptor::from(Descriptor::new(0x10_0000, 8, VRING_DESC_F_WRITE, 0))], 0).unwrap();
        let (mut rng, _) = activated(&s, mock.create_queue().unwrap());
        assert_eq!(rng.process_queue(), 0, "the available ring is private: nothing is read");
        assert_eq!(m.read_obj::<u64>(GuestAddress(0x10_0000)).unwrap(), 0);
    }
}
