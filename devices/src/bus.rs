//! Address-range dispatch of port I/O and MMIO accesses to devices.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use thiserror::Error;

/// A device that answers reads and writes at offsets within its range.
pub trait BusDevice: Send {
    /// Fills `data` for a read at `offset`.
    fn read(&mut self, offset: u64, data: &mut [u8]);
    /// Handles a write of `data` at `offset`.
    fn write(&mut self, offset: u64, data: &[u8]);
}

/// Errors from inserting a device.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum BusError {
    /// The new range overlaps one already on the bus, or is empty.
    #[error("bus range {base:#x}+{len:#x} overlaps an existing device or is empty")]
    Overlap {
        /// Start of the rejected range.
        base: u64,
        /// Its length.
        len: u64,
    },
}

/// A set of non-overlapping ranges, each with its device.
#[derive(Default)]
pub struct Bus {
    devices: BTreeMap<u64, (u64, Arc<Mutex<dyn BusDevice>>)>,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.devices.iter().map(|(b, (l, _))| (b, l))).finish()
    }
}

impl Bus {
    /// An empty bus.
    pub fn new() -> Self {
        Self::default()
    }

    /// Places `device` at `base..base+len`.
    pub fn insert(&mut self, device: Arc<Mutex<dyn BusDevice>>, base: u64, len: u64) -> Result<(), BusError> {
        let end = base.checked_add(len).filter(|_| len > 0).ok_or(BusError::Overlap { base, len })?;
        if let Some((&b, &(l, _))) = self.devices.range(..end).next_back() {
            if b + l > base {
                return Err(BusError::Overlap { base, len });
            }
        }
        self.devices.insert(base, (len, device));
        Ok(())
    }

    fn find(&self, addr: u64, size: usize) -> Option<(u64, &Arc<Mutex<dyn BusDevice>>)> {
        let (&base, (len, dev)) = self.devices.range(..=addr).next_back()?;
        let offset = addr - base;
        // The whole access must fall inside the device's range.
        (offset.checked_add(size as u64)? <= *len).then_some((offset, dev))
    }

    /// Dispatches a read; returns false (and leaves `data` as all ones, what an
    /// unclaimed bus returns) when no device claims the address.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.find(addr, data.len()) {
            Some((offset, dev)) => {
                lock(dev).read(offset, data);
                true
            }
            None => {
                data.fill(0xff);
                false
            }
        }
    }

    /// Dispatches a write; returns false when no device claims the address.
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        match self.find(addr, data.len()) {
            Some((offset, dev)) => {
                lock(dev).write(offset, data);
                true
            }
            None => false,
        }
    }
}

/// Locks a device, recovering from a poisoned lock: device state stays usable after a
/// panicking holder, and the VMM does not cascade one failure into every vCPU.
fn lock<'a>(dev: &'a Mutex<dyn BusDevice + 'static>) -> std::sync::MutexGuard<'a, dyn BusDevice + 'static> {
    dev.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Echo(Vec<(u64, Vec<u8>)>);
    impl BusDevice for Echo {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            self.0.push((offset, data.to_vec()));
        }
    }

    #[test]
    fn accesses_are_routed_by_offset_and_must_fit_the_range() {
        let mut bus = Bus::new();
        let dev = Arc::new(Mutex::new(Echo(vec![])));
        bus.insert(dev.clone(), 0x3f8, 8).unwrap();
        let mut b = [0u8; 1];
        assert!(bus.read(0x3fa, &mut b));
        assert_eq!(b, [2]);
        assert!(bus.write(0x3ff, &[7]));
        assert!(!bus.write(0x3ff, &[7, 7]), "access crossing the end is refused");
        assert!(!bus.read(0x400, &mut b));
        assert_eq!(b, [0xff]);
        assert_eq!(dev.lock().unwrap().0, vec![(7, vec![7])]);
    }

    #[test]
    fn overlapping_and_empty_ranges_are_rejected() {
        let mut bus = Bus::new();
        bus.insert(Arc::new(Mutex::new(Echo(vec![]))), 0x100, 0x10).unwrap();
        assert!(bus.insert(Arc::new(Mutex::new(Echo(vec![]))), 0x10f, 1).is_err());
        assert!(bus.insert(Arc::new(Mutex::new(Echo(vec![]))), 0xf8, 0x9).is_err());
        assert!(bus.insert(Arc::new(Mutex::new(Echo(vec![]))), 0x200, 0).is_err());
        assert!(bus.insert(Arc::new(Mutex::new(Echo(vec![]))), u64::MAX, 2).is_err());
        bus.insert(Arc::new(Mutex::new(Echo(vec![]))), 0x110, 1).unwrap();
    }
}
