//! A user-space IOAPIC (KVM's split irqchip) that turns redirection entries into MSIs.
//!
//! Each pin's interrupt source is an eventfd registered as a KVM irqfd on GSI = pin.
//! When the guest programs a redirection entry, the IOAPIC asks its [`MsiRouter`] to
//! route that GSI to the equivalent MSI (or to drop the route while the entry is
//! masked). Every interrupt is delivered edge-triggered: TDX allows nothing else, so
//! plain VMs use the same path. Level-triggered entries are accepted but delivered as
//! edges; remote IRR never sets.

use std::sync::Arc;

use crate::bus::BusDevice;

/// Number of input pins.
pub const NUM_PINS: usize = 24;
/// MMIO register offsets.
const IOREGSEL: u64 = 0x00;
const IOWIN: u64 = 0x10;
const EOI: u64 = 0x40;
/// Indirect register indices.
const REG_ID: u32 = 0x00;
const REG_VERSION: u32 = 0x01;
const REG_ARBITRATION: u32 = 0x02;
const REG_REDIR_BASE: u32 = 0x10;
/// IOAPIC version 0x11 (what KVM's in-kernel IOAPIC reports).
const VERSION: u32 = 0x11;
/// Redirection-entry bits.
const RTE_MASKED: u64 = 1 << 16;
const RTE_READ_ONLY: u64 = (1 << 12) | (1 << 14); // delivery status, remote IRR
/// x86 MSI address base.
const MSI_ADDRESS_BASE: u64 = 0xfee0_0000;

/// An MSI message: where and what the interrupt writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsiMessage {
    /// MSI address (0xfeeX_XXXX).
    pub address: u64,
    /// MSI data.
    pub data: u32,
}

/// Installs interrupt routes (implemented by the VMM with KVM_SET_GSI_ROUTING).
pub trait MsiRouter: Send + Sync {
    /// Routes `gsi` to `msi`, or removes its route with `None`.
    fn set_route(&self, gsi: u32, msi: Option<MsiMessage>) -> std::io::Result<()>;
}

/// The IOAPIC's register state.
pub struct Ioapic {
    id: u32,
    ioregsel: u32,
    redirection: [u64; NUM_PINS],
    router: Arc<dyn MsiRouter>,
}

impl std::fmt::Debug for Ioapic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ioapic").field("id", &self.id).field("redirection", &self.redirection).finish()
    }
}

impl Ioapic {
    /// An IOAPIC with every pin masked, reporting routes to `router`.
    pub fn new(router: Arc<dyn MsiRouter>) -> Self {
        Self { id: 0, ioregsel: 0, redirection: [RTE_MASKED; NUM_PINS], router }
    }

    /// The MSI a redirection entry stands for, `None` while masked.
    pub fn msi_for_entry(entry: u64) -> Option<MsiMessage> {
        if entry & RTE_MASKED != 0 {
            return None;
        }
        let vector = (entry & 0xff) as u32;
        let delivery_mode = ((entry >> 8) & 0x7) as u32;
        let dest_mode_logical = (entry >> 11) & 1;
        let dest = (entry >> 56) & 0xff;
        Some(MsiMessage {
            address: MSI_ADDRESS_BASE | (dest << 12) | (dest_mode_logical << 2),
            // Edge-triggered (bit 15 clear) whatever the entry's trigger mode.
            data: vector | (delivery_mode << 8),
        })
    }

    fn read_register(&self) -> u32 {
        match self.ioregsel {
            REG_ID | REG_ARBITRATION => self.id << 24,
            REG_VERSION => VERSION | (((NUM_PINS - 1) as u32) << 16),
            r if (REG_REDIR_BASE..REG_REDIR_BASE + 2 * NUM_PINS as u32).contains(&r) => {
                let entry = self.redirection[((r - REG_REDIR_BASE) / 2) as usize];
                if r % 2 == 0 {
                    entry as u32
                } else {
                    (entry >> 32) as u32
                }
            }
            _ => 0,
        }
    }

    fn write_register(&mut self, value: u32) {
        match self.ioregsel {
            REG_ID => self.id = (value >> 24) & 0xf,
            r if (REG_REDIR_BASE..REG_REDIR_BASE + 2 * NUM_PINS as u32).contains(&r) => {
                let pin = ((r - REG_REDIR_BASE) / 2) as usize;
                let old = self.redirection[pin];
                let new = if r % 2 == 0 {
                    (old & 0xffff_ffff_0000_0000) | u64::from(value)
                } else {
                    (old & 0xffff_ffff) | (u64::from(value) << 32)
                };
                let new = (new & !RTE_READ_ONLY) | (old & RTE_READ_ONLY);
                self.redirection[pin] = new;
                let (before, after) = (Self::msi_for_entry(old), Self::msi_for_entry(new));
                if before != after {
                    if let Err(e) = self.router.set_route(pin as u32, after) {
                        log::error!("ioapic: cannot update the route of pin {pin}: {e}");
                    }
                }
            }
            // Version and arbitration are read-only; unknown registers are ignored.
            _ => {}
        }
    }
}

impl BusDevice for Ioapic {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        let value = match offset {
            IOREGSEL => self.ioregsel,
            IOWIN => self.read_register(),
            _ => 0,
        };
        let bytes = value.to_le_bytes();
        let n = data.len().min(4);
        data[..n].copy_from_slice(&bytes[..n]);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        // The IOAPIC's registers are 32 bits wide; other widths are ignored.
        let Ok(bytes) = <[u8; 4]>::try_from(data) else {
            log::debug!("ioapic: ignoring a {}-byte write at {offset:#x}", data.len());
            return;
        };
        let value = u32::from_le_bytes(bytes);
        match offset {
            IOREGSEL => self.ioregsel = value & 0xff,
            IOWIN => self.write_register(value),
            EOI => {} // edge-only: nothing to clear
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Routes(Mutex<Vec<(u32, Option<MsiMessage>)>>);
    impl MsiRouter for Routes {
        fn set_route(&self, gsi: u32, msi: Option<MsiMessage>) -> std::io::Result<()> {
            self.0.lock().unwrap().push((gsi, msi));
            Ok(())
        }
    }

    fn write_reg(io: &mut Ioapic, reg: u32, v: u32) {
        io.write(IOREGSEL, &reg.to_le_bytes());
        io.write(IOWIN, &v.to_le_bytes());
    }

    fn read_reg(io: &mut Ioapic, reg: u32) -> u32 {
        io.write(IOREGSEL, &reg.to_le_bytes());
        let mut b = [0u8; 4];
        io.read(IOWIN, &mut b);
        u32::from_le_bytes(b)
    }

    #[test]
    fn unmasking_an_entry_installs_an_edge_msi_and_masking_removes_it() {
        let routes = Arc::new(Routes::default());
        let mut io = Ioapic::new(routes.clone());
        write_reg(&mut io, 0x10 + 2 * 4 + 1, 0x0300_0000); // pin 4 -> APIC 3
        assert!(routes.0.lock().unwrap().is_empty(), "still masked");
        write_reg(&mut io, 0x10 + 2 * 4, 0x0000_8024); // vector 0x24, level, unmasked
        write_reg(&mut io, 0x10 + 2 * 4, 0x0001_8024); // masked again
        let r = routes.0.lock().unwrap();
        assert_eq!(r[0], (4, Some(MsiMessage { address: 0xfee0_3000, data: 0x24 })));
        assert_eq!(r[1], (4, None));
    }

    #[test]
    fn version_reports_24_pins_and_read_only_bits_stay() {
        let mut io = Ioapic::new(Arc::new(Routes::default()));
        assert_eq!(read_reg(&mut io, 1), 0x0017_0011);
        write_reg(&mut io, 0x10, 0x0000_5030); // tries to set delivery status and remote IRR
        assert_eq!(read_reg(&mut io, 0x10) & 0x5000, 0);
    }

    #[test]
    fn out_of_range_registers_and_odd_widths_are_harmless() {
        let routes = Arc::new(Routes::default());
        let mut io = Ioapic::new(routes.clone());
        write_reg(&mut io, 0xff, 0xdead_beef);
        assert_eq!(read_reg(&mut io, 0xff), 0);
        io.write(IOWIN, &[1, 2]);
        io.write(0x1000, &[0; 4]);
        let mut b = [0u8; 8];
        io.read(0x20, &mut b);
        assert_eq!(b, [0; 8]);
        assert!(routes.0.lock().unwrap().is_empty());
    }
}
