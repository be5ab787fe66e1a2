//! virtio-console: one port (no multiport) whose transmitted bytes go to a host writer
//! (stdout in the VMM) and whose receive queue is fed from buffered host input.
//!
//! Hostile input: at most [`MAX_TX_CHAIN`] bytes of one transmit chain are copied out
//! (the rest is dropped and counted), so a chain cannot make the VMM allocate without
//! bound; receive buffers that are read-only or outside shared memory get nothing and
//! are counted. Host input is buffered up to [`MAX_INPUT`] bytes; beyond that it is
//! dropped.

use std::collections::VecDeque;
use std::io::{Read, Write};

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestAddressSpace;
use vmm_sys_util::eventfd::EventFd;

use super::{device_id, ActivateContext, ActivateError, GuestMem, VirtioDevice, VirtioInterrupt};

/// Size of each queue.
pub const QUEUE_SIZE: u16 = 256;
/// Index of the receive queue (host to guest).
pub const RX_QUEUE: usize = 0;
/// Index of the transmit queue (guest to host).
pub const TX_QUEUE: usize = 1;
/// Most bytes taken from one transmit chain.
pub const MAX_TX_CHAIN: usize = 64 << 10;
/// Most host input bytes buffered while the guest has no receive buffers.
pub const MAX_INPUT: usize = 64 << 10;

/// `struct virtio_console_config`: cols, rows (0: unknown), max_nr_ports 1, emerg_wr.
const CONFIG: [u8; 12] = [0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0];

struct Active {
    mem: GuestMem,
    rx: Queue,
    tx: Queue,
    interrupt: VirtioInterrupt,
}

/// Counters of what the console did and refused.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConsoleStats {
    /// Bytes the guest transmitted that reached the writer.
    pub transmitted: u64,
    /// Bytes of host input delivered into receive buffers.
    pub received: u64,
    /// Host input bytes dropped because the buffer was full.
    pub input_dropped: u64,
    /// Transmitted bytes dropped: beyond [`MAX_TX_CHAIN`] or not accepted by the writer.
    pub output_dropped: u64,
    /// Chains refused: private or missing memory, or receive buffers not writable.
    pub failed: u64,
}

/// The virtio-console device.
pub struct Console {
    queue_events: [EventFd; 2],
    output: Box<dyn Write + Send>,
    input: VecDeque<u8>,
    active: Option<Active>,
    stats: ConsoleStats,
}

impl std::fmt::Debug for Console {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Console")
            .field("active", &self.active.is_some())
            .field("buffered_input", &self.input.len())
            .field("stats", &self.stats)
            .finish()
    }
}

impl Console {
    /// A console woken by `queue_events` (receiveq, transmitq), writing the guest's
    /// output to `output`.
    pub fn new(queue_events: [EventFd; 2], output: Box<dyn Write + Send>) -> Self {
        Self { queue_events, output, input: VecDeque::new(), active: None, stats: ConsoleStats::default() }
    }

    /// What the console did and refused so far.
    pub fn stats(&self) -> ConsoleStats {
        self.stats
    }

    /// Bytes of host input waiting for receive buffers.
    pub fn pending_input(&self) -> usize {
        self.input.len()
    }

    /// Buffers host input for the guest (bytes beyond [`MAX_INPUT`] waiting are dropped)
    /// and delivers what the guest has room for.
    pub fn queue_input(&mut self, bytes: &[u8]) {
        let room = MAX_INPUT - self.input.len();
        let take = bytes.len().min(room);
        self.input.extend(&bytes[..take]);
        if take < bytes.len() {
            self.stats.input_dropped += (bytes.len() - take) as u64;
            log::debug!("virtio-console: input buffer full, {} bytes dropped", bytes.len() - take);
        }
        self.process_rx();
    }

    /// Moves buffered input into available receive buffers; returns how many buffers
    /// were completed.
    pub fn process_rx(&mut self) -> usize {
        let Some(active) = self.active.as_mut() else { return 0 };
        let mem = active.mem.memory();
        let mut done = 0;
        while !self.input.is_empty() {
            let Some(chain) = active.rx.pop_descriptor_chain(&*mem) else { break };
            let head = chain.head_index();
            let written = match chain.writer(&*mem) {
                Ok(mut w) if w.available_bytes() > 0 => {
                    let n = w.available_bytes().min(self.input.len());
                    let bytes: Vec<u8> = self.input.iter().take(n).copied().collect();
                    match w.write_all(&bytes) {
                        Ok(()) => {
                            self.input.drain(..n);
                            self.stats.received += n as u64;
                            n
                        }
                        Err(e) => {
                            log::warn!("virtio-console: receive buffer {head}: {e}");
                            self.stats.failed += 1;
                            0
                        }
                    }
                }
                Ok(_) => {
                    log::warn!("virtio-console: receive buffer {head} is not writable");
                    self.stats.failed += 1;
                    0
                }
                Err(e) => {
                    log::warn!("virtio-console: receive buffer {head} refused: {e:?}");
                    self.stats.failed += 1;
                    0
                }
            };
            if let Err(e) = active.rx.add_used(&*mem, head, written as u32) {
                log::warn!("virtio-console: cannot complete receive buffer {head}: {e:?}");
                self.stats.failed += 1;
                break;
            }
            done += 1;
        }
        if done > 0 && active.rx.needs_notification(&*mem).unwrap_or(true) {
            active.interrupt.signal_used_queue();
        }
        done
    }

    /// Writes every available transmit chain to the output; returns how many chains
    /// were completed.
    pub fn process_tx(&mut self) -> usize {
        let Some(active) = self.active.as_mut() else { return 0 };
        let mem = active.mem.memory();
        let mut done = 0;
        while let Some(chain) = active.tx.pop_descriptor_chain(&*mem) {
            let head = chain.head_index();
            match chain.reader(&*mem) {
                Ok(mut r) => {
                    let available = r.available_bytes();
                    let n = available.min(MAX_TX_CHAIN);
                    let mut buf = vec![0u8; n];
                    match r.read_exact(&mut buf) {
                        Ok(()) => match self.output.write_all(&buf) {
                            Ok(()) => self.stats.transmitted += n as u64,
                            Err(e) => {
                                // Once is enough: a closed output (EPIPE) fails every line.
                                if self.stats.output_dropped == 0 {
                                    log::warn!(
                                        "virtio-console: output: {e}; the guest's output is dropped from now on"
                                    );
                                }
                                self.stats.output_dropped += n as u64;
                            }
                        },
                        Err(e) => {
                            log::warn!("virtio-console: transmit buffer {head}: {e}");
                            self.stats.failed += 1;
                        }
                    }
                    if available > n {
                        self.stats.output_dropped += (available - n) as u64;
                        log::warn!("virtio-console: transmit buffer {head}: {} bytes over the cap", available - n);
                    }
                }
                Err(e) => {
                    log::warn!("virtio-console: transmit buffer {head} refused: {e:?}");
                    self.stats.failed += 1;
                }
            }
            // The device writes nothing into transmit buffers.
            if let Err(e) = active.tx.add_used(&*mem, head, 0) {
                log::warn!("virtio-console: cannot complete transmit buffer {head}: {e:?}");
                self.stats.failed += 1;
                break;
            }
            done += 1;
        }
        if done > 0 {
            if let Err(e) = self.output.flush() {
                if self.stats.output_dropped == 0 {
                    log::warn!("virtio-console: output: {e}");
                }
            }
            if active.tx.needs_notification(&*mem).unwrap_or(true) {
                active.interrupt.signal_used_queue();
            }
        }
        done
    }
}

impl VirtioDevice for Console {
    fn device_type(&self) -> u32 {
        device_id::CONSOLE
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE, QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        0
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        super::read_config_bytes(&CONFIG, offset, data);
    }

    fn activate(&mut self, ctx: ActivateContext) -> Result<(), ActivateError> {
        let got = ctx.queues.len();
        if got != 2 {
            return Err(ActivateError::QueueCount { got, want: 2 });
        }
        let mut queues = ctx.queues.into_iter();
        let (Some(rx), Some(tx)) = (queues.next(), queues.next()) else {
            return Err(ActivateError::QueueCount { got, want: 2 });
        };
        self.active = Some(Active { mem: ctx.mem, rx, tx, interrupt: ctx.interrupt });
        // Output queued before activation, and input buffered before it, move at once.
        for event in &self.queue_events {
            let _ = event.write(1);
        }
        Ok(())
    }

    fn reset(&mut self) {
        // Buffered host input is kept for the next activation.
        self.active = None;
    }
}

impl MutEventSubscriber for Console {
    fn process(&mut self, events: Events, _ops: &mut EventOps<'_>) {
        if !events.event_set().contains(EventSet::IN) {
            return;
        }
        match events.data() as usize {
            RX_QUEUE => {
                let _ = self.queue_events[RX_QUEUE].read();
                self.process_rx();
            }
            TX_QUEUE => {
                let _ = self.queue_events[TX_QUEUE].read();
                self.process_tx();
            }
            other => log::warn!("virtio-console: event for unknown queue {other}"),
        }
    }

    fn init(&mut self, ops: &mut EventOps<'_>) {
        for (i, event) in self.queue_events.iter().enumerate() {
            if let Err(e) = ops.add(Events::with_data(event, i as u32, EventSet::IN)) {
                log::error!("virtio-console: cannot watch queue event {i}: {e:?}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::{SharedMemory, INT_USED_RING};
    use std::sync::{Arc, Mutex};
    use virtio_queue::desc::{split::Descriptor, RawDescriptor};
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
    use vmm_sys_util::eventfd::EFD_NONBLOCK;

    const NEXT: u16 = 1;
    const WRITE: u16 = 2;
    const RX_RING: u64 = 0;
    const TX_RING: u64 = 0x1_0000;
    const BUF: u64 = 0x10_0000;
    const PRIVATE: u64 = 0x30_0000;

    /// A writer the test can look into.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    struct Rig {
        m: GuestMemoryMmap,
        s: SharedMemory,
    }

    fn rig(shared: bool) -> Rig {
        let m = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x40_0000)]).unwrap();
        let s = if shared { SharedMemory::all_shared(&m) } else { SharedMemory::all_private(&m) };
        if !shared {
            s.set_shared(0, 0x2_0000, true).unwrap(); // both queues
        }
        Rig { m, s }
    }

    fn queues(m: &GuestMemoryMmap) -> (MockSplitQueue<'_, GuestMemoryMmap>, MockSplitQueue<'_, GuestMemoryMmap>) {
        (MockSplitQueue::create(m, GuestAddress(RX_RING), 16), MockSplitQueue::create(m, GuestAddress(TX_RING), 16))
    }

    fn add_chain(mock: &MockSplitQueue<'_, GuestMemoryMmap>, at: u16, descs: &[(u64, u32, u16)]) {
        let raw: Vec<RawDescriptor> = descs
            .iter()
            .enumerate()
            .map(|(i, &(addr, len, flags))| {
                let flags = if i + 1 == descs.len() { flags } else { flags | NEXT };
                RawDescriptor::from(Descriptor::new(addr, len, flags, at + i as u16 + 1))
            })
            .collect();
        mock.add_desc_chains(&raw, at).unwrap();
    }

    fn console() -> (Console, Sink) {
        let sink = Sink::default();
        let events = [EventFd::new(EFD_NONBLOCK).unwrap(), EventFd::new(EFD_NONBLOCK).unwrap()];
        (Console::new(events, Box::new(sink.clone())), sink)
    }

    fn activate(
        c: &mut Console,
        r: &Rig,
        rx: &MockSplitQueue<'_, GuestMemoryMmap>,
        tx: &MockSplitQueue<'_, GuestMemoryMmap>,
    ) -> VirtioInterrupt {
        let interrupt = VirtioInterrupt::new(EventFd::new(EFD_NONBLOCK).unwrap());
        let ctx = ActivateContext {
            mem: r.s.view(),
            queues: vec![rx.create_queue().unwrap(), tx.create_queue().unwrap()],
            interrupt: interrupt.clone(),
            acked_features: 0,
        };
        c.activate(ctx).unwrap();
        interrupt
    }

    fn used_len(mock: &MockSplitQueue<'_, GuestMemoryMmap>, i: usize) -> u32 {
        mock.used().ring().ref_at(i).unwrap().load().len()
    }

    #[test]
    fn config_space_reports_one_port() {
        let (c, _) = console();
        let mut max_ports = [0u8; 4];
        c.read_config(4, &mut max_ports);
        assert_eq!(u32::from_le_bytes(max_ports), 1);
        assert_eq!(c.features(), 0);
        assert_eq!(c.device_type(), device_id::CONSOLE);
        assert_eq!(c.queue_max_sizes().len(), 2);
    }

    #[test]
    fn transmitted_bytes_reach_the_writer() {
        let r = rig(true);
        let (rx, tx) = queues(&r.m);
        r.m.write_slice(b"hello, ", GuestAddress(BUF)).unwrap();
        r.m.write_slice(b"world\n", GuestAddress(BUF + 0x1000)).unwrap();
        add_chain(&tx, 0, &[(BUF, 7, 0), (BUF + 0x1000, 6, 0)]);
        let (mut c, sink) = console();
        let interrupt = activate(&mut c, &r, &rx, &tx);

        assert_eq!(c.process_tx(), 1);

        assert_eq!(&*sink.0.lock().unwrap(), b"hello, world\n");
        assert_eq!(used_len(&tx, 0), 0);
        assert_eq!(c.stats().transmitted, 13);
        assert_eq!(interrupt.status() & INT_USED_RING, INT_USED_RING);
    }

    #[test]
    fn input_reaches_the_receive_buffer() {
        let r = rig(true);
        let (rx, tx) = queues(&r.m);
        add_chain(&rx, 0, &[(BUF, 64, WRITE)]);
        let (mut c, _) = console();
        let interrupt = activate(&mut c, &r, &rx, &tx);

        c.queue_input(b"ls\n");

        let mut got = [0u8; 3];
        r.m.read_slice(&mut got, GuestAddress(BUF)).unwrap();
        assert_eq!(&got, b"ls\n");
        assert_eq!(used_len(&rx, 0), 3);
        assert_eq!(c.pending_input(), 0);
        assert_eq!(interrupt.status() & INT_USED_RING, INT_USED_RING);
    }

    #[test]
    fn input_before_activation_is_delivered_when_buffers_arrive() {
        let r = rig(true);
        let (rx, tx) = queues(&r.m);
        let (mut c, _) = console();
        c.queue_input(b"early");
        assert_eq!(c.pending_input(), 5);
        activate(&mut c, &r, &rx, &tx);
        assert_eq!(c.process_rx(), 0, "no receive buffers yet");

        add_chain(&rx, 0, &[(BUF, 2, WRITE)]);
        add_chain(&rx, 1, &[(BUF + 0x1000, 16, WRITE)]);
        assert_eq!(c.process_rx(), 2);

        let mut a = [0u8; 2];
        let mut b = [0u8; 3];
        r.m.read_slice(&mut a, GuestAddress(BUF)).unwrap();
        r.m.read_slice(&mut b, GuestAddress(BUF + 0x1000)).unwrap();
        assert_eq!((&a, &b), (b"ea", b"rly"));
        assert_eq!((used_len(&rx, 0), used_len(&rx, 1)), (2, 3));
    }

    #[test]
    fn read_only_receive_buffers_are_refused() {
        let r = rig(true);
        let (rx, tx) = queues(&r.m);
        add_chain(&rx, 0, &[(BUF, 64, 0)]);
        let (mut c, _) = console();
        activate(&mut c, &r, &rx, &tx);

        c.queue_input(b"secret");

        assert_eq!(r.m.read_obj::<u64>(GuestAddress(BUF)).unwrap(), 0, "nothing written");
        assert_eq!(used_len(&rx, 0), 0);
        assert_eq!(c.stats().failed, 1);
        assert_eq!(c.pending_input(), 6, "input kept for a proper buffer");
    }

    #[test]
    fn receive_buffers_in_private_memory_are_refused() {
        let r = rig(false);
        let (rx, tx) = queues(&r.m);
        add_chain(&rx, 0, &[(PRIVATE, 64, WRITE)]);
        let (mut c, _) = console();
        activate(&mut c, &r, &rx, &tx);

        c.queue_input(b"secret");

        assert_eq!(r.m.read_obj::<u64>(GuestAddress(PRIVATE)).unwrap(), 0, "private memory untouched");
        assert_eq!(used_len(&rx, 0), 0);
        assert_eq!(c.stats().failed, 1);
        assert_eq!(c.stats().received, 0);
    }

    #[test]
    fn transmit_buffers_in_private_memory_are_refused() {
        let r = rig(false);
        let (rx, tx) = queues(&r.m);
        r.m.write_slice(b"private", GuestAddress(PRIVATE)).unwrap();
        add_chain(&tx, 0, &[(PRIVATE, 7, 0)]);
        let (mut c, sink) = console();
        activate(&mut c, &r, &rx, &tx);

        assert_eq!(c.process_tx(), 1);

        assert!(sink.0.lock().unwrap().is_empty());
        assert_eq!(c.stats().failed, 1);
    }

    #[test]
    fn output_per_chain_is_capped() {
        let r = rig(true);
        let (rx, tx) = queues(&r.m);
        let len = (MAX_TX_CHAIN + 0x1000) as u32;
        add_chain(&tx, 0, &[(BUF, len, 0)]);
        let (mut c, sink) = console();
        activate(&mut c, &r, &rx, &tx);

        assert_eq!(c.process_tx(), 1);

        assert_eq!(sink.0.lock().unwrap().len(), MAX_TX_CHAIN);
        assert_eq!(c.stats().output_dropped, 0x1000);
    }

    #[test]
    fn input_beyond_the_buffer_limit_is_dropped() {
        let (mut c, _) = console();
        c.queue_input(&vec![b'x'; MAX_INPUT - 10]);
        c.queue_input(&[b'y'; 30]);
        assert_eq!(c.pending_input(), MAX_INPUT);
        assert_eq!(c.stats().input_dropped, 20);
    }

    #[test]
    fn activation_needs_two_queues() {
        let r = rig(true);
        let (rx, _) = queues(&r.m);
        let (mut c, _) = console();
        let ctx = ActivateContext {
            mem: r.s.view(),
            queues: vec![rx.create_queue().unwrap()],
            interrupt: VirtioInterrupt::new(EventFd::new(EFD_NONBLOCK).unwrap()),
            acked_features: 0,
        };
        assert!(matches!(c.activate(ctx), Err(ActivateError::QueueCount { got: 1, want: 2 })));
    }

    #[test]
    fn an_inactive_console_only_buffers() {
        let (mut c, sink) = console();
        c.queue_input(b"abc");
        assert_eq!(c.process_tx(), 0);
        assert_eq!(c.process_rx(), 0);
        assert!(sink.0.lock().unwrap().is_empty());
        assert_eq!(c.pending_input(), 3);
    }
}
