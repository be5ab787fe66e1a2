//! A small guest-side virtio-mmio driver (virtio 1.2, 4.2 and 2.7) for cvmm's own
//! no_std guests: device initialization and feature negotiation, split virtqueues in
//! the boot information's bounce region, request submission, and bounded polling of
//! the used ring.
//!
//! Included with `#[path = "virtio.rs"] mod virtio;` by a guest program that also
//! includes `abi` and `rt` as crate-level modules. Every buffer and ring a device sees
//! must come from the [`Bump`] allocator over the bounce region (the memory the guest
//! shares with the host). Device memory, rings and buffers are accessed only with
//! volatile reads and writes; values the device writes (used ring entries, lengths,
//! configuration) are read once and checked before use. No interrupts: completions are
//! found by polling with a bounded spin, so a silent device fails the request instead
//! of hanging the guest. Guests run at CPL0 on a host that emulates it at ~2 M
//! instructions/s, so every operation here is a handful of instructions.
#![allow(dead_code)]

use core::ptr::{read_volatile, write_volatile};
use core::sync::atomic::{compiler_fence, Ordering};

/// VIRTIO_F_VERSION_1.
pub const F_VERSION_1: u64 = 1 << 32;
/// VIRTIO_F_ACCESS_PLATFORM: the device reaches only memory the platform lets it
/// (for a confidential guest: shared memory).
pub const F_ACCESS_PLATFORM: u64 = 1 << 33;

/// Queue size this driver uses (or the device's maximum, if smaller).
pub const QUEUE_SIZE: u16 = 16;

/// Polling iterations before a request counts as unanswered: about four seconds of
/// emulated CPL0 code. A device on the host answers within a few hundred.
pub const DEFAULT_SPINS: u32 = 1_000_000;

const MAGIC: u32 = 0x7472_6976; // "virt"

// Register offsets (virtio 1.2, 4.2.2).
const REG_MAGIC: usize = 0x000;
const REG_VERSION: usize = 0x004;
const REG_DEVICE_ID: usize = 0x008;
const REG_DEVICE_FEATURES: usize = 0x010;
const REG_DEVICE_FEATURES_SEL: usize = 0x014;
const REG_DRIVER_FEATURES: usize = 0x020;
const REG_DRIVER_FEATURES_SEL: usize = 0x024;
const REG_QUEUE_SEL: usize = 0x030;
const REG_QUEUE_NUM_MAX: usize = 0x034;
const REG_QUEUE_NUM: usize = 0x038;
const REG_QUEUE_READY: usize = 0x044;
const REG_QUEUE_NOTIFY: usize = 0x050;
const REG_INTERRUPT_STATUS: usize = 0x060;
const REG_INTERRUPT_ACK: usize = 0x064;
const REG_STATUS: usize = 0x070;
const REG_QUEUE_DESC: usize = 0x080;
const REG_QUEUE_AVAIL: usize = 0x090;
const REG_QUEUE_USED: usize = 0x0a0;
const REG_CONFIG_GENERATION: usize = 0x0fc;
const REG_CONFIG: usize = 0x100;

// Device status bits (2.1).
const ACKNOWLEDGE: u32 = 1;
const DRIVER: u32 = 2;
const DRIVER_OK: u32 = 4;
const FEATURES_OK: u32 = 8;
const FAILED: u32 = 0x80;

// Descriptor flags (2.7.5).
const DESC_F_NEXT: u16 = 1;
const DESC_F_WRITE: u16 = 2;

/// Why a virtio operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// No virtio-mmio device (version 2) with the expected ID at that address.
    NoDevice,
    /// The device did not accept the negotiated features (FEATURES_OK stayed clear).
    FeaturesRefused,
    /// The queue does not exist or is already in use.
    NoQueue,
    /// The bounce region is exhausted.
    OutOfMemory,
    /// The chain is empty or longer than the free descriptors.
    NoDescriptors,
    /// The device did not complete the request within the spin budget.
    Timeout,
    /// The device returned a used entry that names no outstanding request.
    BadUsedEntry,
}

impl Error {
    /// A short description for the console.
    pub fn text(self) -> &'static [u8] {
        match self {
            Error::NoDevice => b"no device",
            Error::FeaturesRefused => b"features refused",
            Error::NoQueue => b"no such queue",
            Error::OutOfMemory => b"bounce region exhausted",
            Error::NoDescriptors => b"no free descriptors",
            Error::Timeout => b"no answer",
            Error::BadUsedEntry => b"bad used ring entry",
        }
    }
}

/// A bump allocator over the bounce region; nothing is ever freed.
pub struct Bump {
    next: u64,
    end: u64,
}

impl Bump {
    /// Allocates from `[base, base + size)`.
    pub fn new(base: u64, size: u64) -> Self {
        Bump { next: base, end: base.saturating_add(size) }
    }

    /// `size` bytes aligned to `align` (a power of two), or `None` when exhausted.
    /// The memory is not cleared.
    pub fn alloc(&mut self, size: u64, align: u64) -> Option<u64> {
        let start = self.next.checked_add(align - 1)? & !(align - 1);
        let end = start.checked_add(size)?;
        if end > self.end {
            return None;
        }
        self.next = end;
        Some(start)
    }
}

/// Reads a `T` from guest-physical (identity-mapped) `addr` with one volatile access.
pub fn peek<T: Copy>(addr: u64) -> T {
    // SAFETY: callers pass addresses of identity-mapped RAM they allocated from the
    // bounce region (or rings they own), aligned for T.
    unsafe { read_volatile(addr as *const T) }
}

/// Writes a `T` to guest-physical (identity-mapped) `addr` with one volatile access.
pub fn poke<T: Copy>(addr: u64, v: T) {
    // SAFETY: as for `peek`.
    unsafe { write_volatile(addr as *mut T, v) }
}

/// Copies `src` into guest memory at `addr` (a bounce buffer).
pub fn write_bytes(addr: u64, src: &[u8]) {
    compiler_fence(Ordering::SeqCst);
    // SAFETY: `addr` is a bounce buffer of at least `src.len()` bytes the caller owns;
    // the ranges cannot overlap (src is in the guest's private memory or stack).
    unsafe { core::ptr::copy_nonoverlapping(src.as_ptr(), addr as *mut u8, src.len()) };
    compiler_fence(Ordering::SeqCst);
}

/// Copies guest memory at `addr` (a bounce buffer) into `dst`, once: the caller works
/// on the copy, never on memory the host can still change.
pub fn read_bytes(addr: u64, dst: &mut [u8]) {
    compiler_fence(Ordering::SeqCst);
    // SAFETY: as for `write_bytes`, in the other direction.
    unsafe { core::ptr::copy_nonoverlapping(addr as *const u8, dst.as_mut_ptr(), dst.len()) };
    compiler_fence(Ordering::SeqCst);
}

/// One buffer of a request: guest-physical address, length, and whether the device
/// writes it (otherwise it reads it).
#[derive(Clone, Copy, Debug)]
pub struct Buf {
    /// Guest-physical address (in the bounce region).
    pub addr: u64,
    /// Length in bytes.
    pub len: u32,
    /// The device writes this buffer.
    pub writable: bool,
}

impl Buf {
    /// A buffer the device reads.
    pub fn out(addr: u64, len: u32) -> Self {
        Buf { addr, len, writable: false }
    }

    /// A buffer the device writes.
    pub fn input(addr: u64, len: u32) -> Self {
        Buf { addr, len, writable: true }
    }
}

/// A virtio-mmio device past feature negotiation; live once [`Device::driver_ok`] is called.
pub struct Device {
    base: u64,
    /// The features both sides agreed on.
    pub features: u64,
}

impl Device {
    fn rd(&self, off: usize) -> u32 {
        crate::rt::mmio_read32(self.base + off as u64)
    }

    fn wr(&self, off: usize, v: u32) {
        crate::rt::mmio_write32(self.base + off as u64, v)
    }

    /// Resets the device at `base` and negotiates VERSION_1 | ACCESS_PLATFORM plus
    /// whichever of the `wanted` device-specific bits the device offers. The caller then
    /// sets up queues and calls [`driver_ok`](Self::driver_ok).
    pub fn init(base: u64, device_id: u32, wanted: u64) -> Result<Device, Error> {
        let mut dev = Device { base, features: 0 };
        if dev.rd(REG_MAGIC) != MAGIC || dev.rd(REG_VERSION) != 2 || dev.rd(REG_DEVICE_ID) != device_id {
            return Err(Error::NoDevice);
        }
        dev.wr(REG_STATUS, 0);
        dev.wr(REG_STATUS, ACKNOWLEDGE);
        dev.wr(REG_STATUS, ACKNOWLEDGE | DRIVER);
        dev.wr(REG_DEVICE_FEATURES_SEL, 0);
        let low = dev.rd(REG_DEVICE_FEATURES);
        dev.wr(REG_DEVICE_FEATURES_SEL, 1);
        let offered = u64::from(low) | (u64::from(dev.rd(REG_DEVICE_FEATURES)) << 32);
        let required = F_VERSION_1 | F_ACCESS_PLATFORM;
        if offered & required != required {
            dev.wr(REG_STATUS, ACKNOWLEDGE | DRIVER | FAILED);
            return Err(Error::FeaturesRefused);
        }
        dev.features = offered & (wanted | required);
        dev.wr(REG_DRIVER_FEATURES_SEL, 0);
        dev.wr(REG_DRIVER_FEATURES, dev.features as u32);
        dev.wr(REG_DRIVER_FEATURES_SEL, 1);
        dev.wr(REG_DRIVER_FEATURES, (dev.features >> 32) as u32);
        dev.wr(REG_STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK);
        if dev.rd(REG_STATUS) & FEATURES_OK == 0 {
            dev.wr(REG_STATUS, ACKNOWLEDGE | DRIVER | FAILED);
            return Err(Error::FeaturesRefused);
        }
        Ok(dev)
    }

    /// Whether feature `bit` was negotiated.
    pub fn has(&self, bit: u32) -> bool {
        self.features & (1u64 << bit) != 0
    }

    /// Sets up queue `index` with at most [`QUEUE_SIZE`] entries, its rings allocated
    /// from `mem`.
    pub fn queue(&self, index: u16, mem: &mut Bump) -> Result<Queue, Error> {
        self.wr(REG_QUEUE_SEL, u32::from(index));
        let max = self.rd(REG_QUEUE_NUM_MAX);
        if max == 0 || self.rd(REG_QUEUE_READY) != 0 {
            return Err(Error::NoQueue);
        }
        // Sizes are powers of two: the largest one up to both limits.
        let mut size = QUEUE_SIZE;
        while u32::from(size) > max {
            size >>= 1;
        }
        let n = u64::from(size);
        // Descriptor table (16-byte aligned), available ring, used ring (4-byte aligned).
        let desc = mem.alloc(16 * n + 6 + 2 * n + 8 + 6 + 8 * n, 64).ok_or(Error::OutOfMemory)?;
        let avail = desc + 16 * n;
        let used = (avail + 6 + 2 * n + 3) & !3;
        poke::<u16>(avail, 0); // flags: interrupts are welcome (we poll anyway)
        poke::<u16>(avail + 2, 0); // idx
        poke::<u16>(used, 0);
        poke::<u16>(used + 2, 0);
        self.wr(REG_QUEUE_NUM, u32::from(size));
        for (reg, addr) in [(REG_QUEUE_DESC, desc), (REG_QUEUE_AVAIL, avail), (REG_QUEUE_USED, used)] {
            self.wr(reg, addr as u32);
            self.wr(reg + 4, (addr >> 32) as u32);
        }
        self.wr(REG_QUEUE_READY, 1);
        Ok(Queue {
            notify: self.base + REG_QUEUE_NOTIFY as u64,
            index,
            size,
            desc,
            avail,
            used,
            avail_idx: 0,
            used_idx: 0,
            free: (1u32 << size) - 1, // size <= QUEUE_SIZE = 16
            heads: 0,
            next: [0; QUEUE_SIZE as usize],
        })
    }

    /// Sets DRIVER_OK: the device is live.
    pub fn driver_ok(&self) {
        self.wr(REG_STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK);
    }

    /// Reads the 32-bit little-endian configuration field at `offset`.
    pub fn config_u32(&self, offset: usize) -> u32 {
        self.rd(REG_CONFIG + offset)
    }

    /// Reads the 64-bit configuration field at `offset` as two 32-bit halves,
    /// retrying while the configuration generation changes under it (2.5.1).
    pub fn config_u64(&self, offset: usize) -> u64 {
        let mut v = 0;
        for _ in 0..4 {
            let gen = self.rd(REG_CONFIG_GENERATION);
            v = u64::from(self.config_u32(offset)) | (u64::from(self.config_u32(offset + 4)) << 32);
            if self.rd(REG_CONFIG_GENERATION) == gen {
                break;
            }
        }
        v
    }

    /// Acknowledges whatever interrupts are pending (we poll; this keeps the line quiet).
    pub fn ack_interrupts(&self) {
        let pending = self.rd(REG_INTERRUPT_STATUS);
        if pending != 0 {
            self.wr(REG_INTERRUPT_ACK, pending);
        }
    }

    /// Tells the device the driver is giving up on it (FAILED).
    pub fn fail(&self) {
        let st = self.rd(REG_STATUS);
        self.wr(REG_STATUS, st | FAILED);
    }

    /// Resets the device: it stops using every queue and buffer.
    pub fn reset(&self) {
        self.wr(REG_STATUS, 0);
    }
}

/// A split virtqueue (2.7) of at most [`QUEUE_SIZE`] entries.
pub struct Queue {
    notify: u64,
    index: u16,
    size: u16,
    desc: u64,
    avail: u64,
    used: u64,
    /// Next available-ring index to publish (free-running).
    avail_idx: u16,
    /// Next used-ring index to consume (free-running).
    used_idx: u16,
    /// Bit i set: descriptor i is free.
    free: u32,
    /// Bit i set: descriptor i heads an outstanding chain.
    heads: u32,
    /// The driver's own record of each chain (never read back from shared memory).
    next: [u8; QUEUE_SIZE as usize],
}

impl Queue {
    /// Publishes a chain of buffers (in order; device-readable ones first, as 2.7.4.2
    /// asks) and notifies the device. Returns the chain's head id, which
    /// [`poll`](Self::poll) and [`wait`](Self::wait) report when the device is done.
    pub fn submit(&mut self, bufs: &[Buf]) -> Result<u16, Error> {
        let n = bufs.len();
        if n == 0 || n > self.free.count_ones() as usize {
            return Err(Error::NoDescriptors);
        }
        // Take free descriptors and fill them in, last to first, linking each to the next.
        let mut next_id: u16 = 0;
        let mut i = n;
        let mut id: u16 = 0;
        while i > 0 {
            i -= 1;
            id = 0;
            while self.free & (1 << id) == 0 {
                id += 1;
            }
            self.free &= !(1 << id);
            let b = bufs[i];
            let d = self.desc + 16 * u64::from(id);
            let mut flags = if b.writable { DESC_F_WRITE } else { 0 };
            if i + 1 < n {
                flags |= DESC_F_NEXT;
                self.next[id as usize] = next_id as u8;
            } else {
                self.next[id as usize] = u8::MAX;
            }
            poke::<u64>(d, b.addr);
            poke::<u32>(d + 8, b.len);
            poke::<u16>(d + 12, flags);
            poke::<u16>(d + 14, if i + 1 < n { next_id } else { 0 });
            next_id = id;
        }
        self.heads |= 1 << id;
        let slot = self.avail + 4 + 2 * u64::from(self.avail_idx & (self.size - 1));
        // Buffers and descriptors before the ring entry, the entry before the index:
        // volatile stores stay in program order, and x86 does not reorder stores.
        compiler_fence(Ordering::SeqCst);
        poke::<u16>(slot, id);
        self.avail_idx = self.avail_idx.wrapping_add(1);
        poke::<u16>(self.avail + 2, self.avail_idx);
        compiler_fence(Ordering::SeqCst);
        crate::rt::mmio_write32(self.notify, u32::from(self.index));
        Ok(id)
    }

    /// The next completed chain, if any: its head id and the number of bytes the
    /// device wrote. The chain's descriptors are free again.
    pub fn poll(&mut self) -> Result<Option<(u16, u32)>, Error> {
        if peek::<u16>(self.used + 2) == self.used_idx {
            return Ok(None);
        }
        compiler_fence(Ordering::SeqCst);
        let elem = self.used + 4 + 8 * u64::from(self.used_idx & (self.size - 1));
        let id = peek::<u32>(elem);
        let len = peek::<u32>(elem + 4);
        self.used_idx = self.used_idx.wrapping_add(1);
        if id >= u32::from(self.size) || self.heads & (1 << id) == 0 {
            return Err(Error::BadUsedEntry);
        }
        self.heads &= !(1 << id);
        let mut d = id as u8;
        loop {
            self.free |= 1 << d;
            d = self.next[d as usize];
            if d == u8::MAX {
                break;
            }
        }
        compiler_fence(Ordering::SeqCst);
        Ok(Some((id as u16, len)))
    }

    /// Waits (at most `spins` polls) for the next completed chain.
    pub fn wait(&mut self, spins: u32) -> Result<(u16, u32), Error> {
        for _ in 0..spins {
            if let Some(done) = self.poll()? {
                return Ok(done);
            }
        }
        Err(Error::Timeout)
    }

    /// Submits one chain and waits for it: the number of bytes the device wrote.
    /// Meant for a queue with nothing else outstanding.
    pub fn transfer(&mut self, bufs: &[Buf]) -> Result<u32, Error> {
        let head = self.submit(bufs)?;
        let (id, len) = self.wait(DEFAULT_SPINS)?;
        if id != head {
            return Err(Error::BadUsedEntry);
        }
        Ok(len)
    }
}
