//! The guest-physical memory map: where RAM, the MMIO hole and each boot structure live.
//!
//! ```text
//! 0x0000_0000  +---------------------------+
//!              | real-mode IVT/BDA (unused) |
//! 0x0000_0500  | boot GDT                   |
//! 0x0000_5000  | cvmm boot info (abi)       |
//! 0x0000_6000  | PVH start info + memmap    |
//! 0x0000_7000  | Linux zero page            |
//! 0x0000_9000  | PML4, PDPT, 4 x PD         |
//! 0x0000_f000  | setup_data (confidential)  |
//! 0x0002_0000  | kernel command line        |
//! 0x0009_fc00  +- reserved: EBDA, VGA, ROMs -+  (not RAM; e820 "reserved")
//! 0x000e_0000  | ACPI tables (confidential)  |  RSDP, XSDT, MADT, CCEL (crate::acpi)
//! 0x000e_1000  | TDX MP wakeup mailbox       |
//! 0x000e_2000  | CC event log area (TDX)     |  64 KiB, the CCEL table's LASA
//! 0x0010_0000  +---------------------------+  kernel images load at or above here
//!              | RAM                        |
//! 0xc000_0000  +- MMIO hole (1 GiB) --------+  IOAPIC 0xfec0_0000, LAPIC 0xfee0_0000
//! 0x1_0000_0000 + RAM above 4 GiB (if any) -+
//! ```

use thiserror::Error;

/// Size of a small page.
pub const PAGE_SIZE: u64 = 0x1000;
/// Boot GDT.
pub const GDT_START: u64 = 0x500;
/// cvmm's own boot-information block ([`crate::abi::BootInfo`]).
pub const BOOT_INFO_START: u64 = 0x5000;
/// PVH `hvm_start_info`, followed by its memory map and module list.
pub const PVH_INFO_START: u64 = 0x6000;
/// Linux `boot_params` (the "zero page").
pub const ZERO_PAGE_START: u64 = 0x7000;
const _: () = assert!(ZERO_PAGE_START == crate::abi::LINUX_ZERO_PAGE);
/// First page-table page (PML4); PDPT and page directories follow.
pub const PAGE_TABLES_START: u64 = 0x9000;
/// The `setup_data` list of a confidential Linux boot (the SEV-SNP CC blob), right
/// after the page tables.
pub const SETUP_DATA_START: u64 = 0xf000;
/// Kernel command line.
pub const CMDLINE_START: u64 = 0x20000;
/// Largest command line accepted, including its terminating NUL (Linux x86's
/// `COMMAND_LINE_SIZE`).
pub const CMDLINE_MAX_SIZE: usize = 2048;
/// End of conventional memory that is usable RAM; the EBDA follows.
pub const EBDA_START: u64 = 0x9fc00;
/// ACPI tables of a confidential guest ([`crate::acpi`]): the RSDP at this address,
/// then the XSDT, MADT and (TDX) CCEL. In the e820 reserved range below 1 MiB, where
/// Linux also finds the RSDP by scanning.
pub const ACPI_START: u64 = 0xe_0000;
/// Bytes reserved for the ACPI tables.
pub const ACPI_SIZE: u64 = 0x1000;
/// The TDX multiprocessor wakeup mailbox (ACPI 6.4 5.2.12.19), one page.
pub const MP_WAKEUP_MAILBOX: u64 = 0xe_1000;
/// The TDX guest firmware's CC event log area (the CCEL table's LASA).
pub const CC_EVENT_LOG_START: u64 = 0xe_2000;
/// Size of that area (the CCEL table's LAML).
pub const CC_EVENT_LOG_SIZE: u64 = 0x1_0000;
/// Start of "high" memory: kernels are loaded at or above it.
pub const HIGH_MEMORY_START: u64 = 0x10_0000;
/// Start of the 32-bit MMIO hole.
pub const MMIO_HOLE_START: u64 = 0xc000_0000;
/// First address above 4 GiB.
pub const FOUR_GIB: u64 = 0x1_0000_0000;
/// The region cvmm's own guests place every device buffer in (announced in the boot
/// info): shared memory, which a confidential guest converts before use.
pub const BOUNCE_START: u64 = 0x40_0000;
/// Size of the bounce region.
pub const BOUNCE_SIZE: u64 = 0x40_0000;
/// Start of what cvmm's confidential-guest firmware keeps for itself while a Linux
/// kernel runs: application-processor VMSAs and stacks (1-2 MiB), the firmware
/// program (2 MiB), its bounce region (shared, 4-8 MiB).
pub const FIRMWARE_RESERVED_START: u64 = HIGH_MEMORY_START;
/// End of that region: a Linux kernel handed over by the firmware loads above it.
pub const FIRMWARE_RESERVED_END: u64 = BOUNCE_START + BOUNCE_SIZE;
/// First virtio-mmio device window (in the MMIO hole); devices follow every
/// [`VIRTIO_MMIO_STRIDE`] bytes.
pub const VIRTIO_MMIO_START: u64 = 0xd000_0000;
/// Distance between virtio-mmio device windows.
pub const VIRTIO_MMIO_STRIDE: u64 = 0x1000;
/// IOAPIC pin (and GSI) of the first virtio-mmio device; devices follow one pin each.
pub const VIRTIO_FIRST_GSI: u32 = 5;
/// Most virtio-mmio devices (pins 5 to 23).
pub const VIRTIO_MAX_DEVICES: u32 = 19;
/// The IOAPIC's MMIO window.
pub const IOAPIC_START: u64 = 0xfec0_0000;
/// Size of the IOAPIC's MMIO window.
pub const IOAPIC_SIZE: u64 = 0x1000;
/// The local APICs' MMIO window (handled by KVM).
pub const LAPIC_START: u64 = 0xfee0_0000;
/// Smallest guest memory cvmm accepts.
pub const MIN_MEMORY: u64 = 16 << 20;
/// Largest guest memory cvmm accepts (1 TiB).
pub const MAX_MEMORY: u64 = 1 << 40;

/// e820 type of usable RAM.
pub const E820_RAM: u32 = 1;
/// e820 type of reserved memory.
pub const E820_RESERVED: u32 = 2;

/// Errors from building a memory layout.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum LayoutError {
    /// Memory size below [`MIN_MEMORY`].
    #[error("guest memory of {size} bytes is too small: cvmm needs at least {} MiB", MIN_MEMORY >> 20)]
    TooSmall {
        /// The requested size.
        size: u64,
    },
    /// Memory size above [`MAX_MEMORY`].
    #[error("guest memory of {size} bytes is too large: cvmm accepts at most {} GiB", MAX_MEMORY >> 30)]
    TooLarge {
        /// The requested size.
        size: u64,
    },
    /// Memory size not a multiple of the page size.
    #[error("guest memory of {size} bytes is not a multiple of 4 KiB")]
    Unaligned {
        /// The requested size.
        size: u64,
    },
}

/// One e820 entry, as the guest will see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct E820Entry {
    /// First guest-physical address.
    pub addr: u64,
    /// Length in bytes.
    pub size: u64,
    /// [`E820_RAM`] or [`E820_RESERVED`].
    pub kind: u32,
}

/// The guest-physical layout for a given memory size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryLayout {
    mem_size: u64,
}

impl MemoryLayout {
    /// Builds the layout for `mem_size` bytes of guest RAM.
    ///
    /// ```
    /// let layout = arch::layout::MemoryLayout::new(256 << 20).unwrap();
    /// assert_eq!(layout.ram_regions(), vec![(0, 256 << 20)]);
    /// ```
    pub fn new(mem_size: u64) -> Result<Self, LayoutError> {
        if mem_size < MIN_MEMORY {
            return Err(LayoutError::TooSmall { size: mem_size });
        }
        if mem_size > MAX_MEMORY {
            return Err(LayoutError::TooLarge { size: mem_size });
        }
        if !mem_size.is_multiple_of(PAGE_SIZE) {
            return Err(LayoutError::Unaligned { size: mem_size });
        }
        Ok(Self { mem_size })
    }

    /// Total guest RAM in bytes.
    pub fn mem_size(&self) -> u64 {
        self.mem_size
    }

    /// The RAM regions as `(guest address, length)`: one below the MMIO hole and, for
    /// guests larger than 3 GiB, one above 4 GiB.
    pub fn ram_regions(&self) -> Vec<(u64, u64)> {
        if self.mem_size <= MMIO_HOLE_START {
            vec![(0, self.mem_size)]
        } else {
            vec![(0, MMIO_HOLE_START), (FOUR_GIB, self.mem_size - MMIO_HOLE_START)]
        }
    }

    /// End (exclusive) of the RAM below 4 GiB.
    pub fn low_ram_end(&self) -> u64 {
        self.mem_size.min(MMIO_HOLE_START)
    }

    /// The e820 map the guest is given: RAM below the EBDA, the EBDA and the legacy
    /// VGA/ROM hole as one reserved range up to 1 MiB (what Linux itself reserves for
    /// the ISA range, so the kernel's printed map equals this one), RAM up to the MMIO
    /// hole, and RAM above 4 GiB.
    pub fn e820(&self) -> Vec<E820Entry> {
        let mut map = vec![
            E820Entry { addr: 0, size: EBDA_START, kind: E820_RAM },
            E820Entry { addr: EBDA_START, size: HIGH_MEMORY_START - EBDA_START, kind: E820_RESERVED },
            E820Entry { addr: HIGH_MEMORY_START, size: self.low_ram_end() - HIGH_MEMORY_START, kind: E820_RAM },
        ];
        if self.mem_size > MMIO_HOLE_START {
            map.push(E820Entry { addr: FOUR_GIB, size: self.mem_size - MMIO_HOLE_START, kind: E820_RAM });
        }
        map
    }

    /// The [`e820`](Self::e820) map with the `(address, length)` ranges in `reserved`
    /// cut out of the RAM entries and listed as reserved, sorted by address, adjacent
    /// entries of one type merged. RAM at or above `ram_limit` is left out (a firmware
    /// that validates memory only below it cannot hand the rest over).
    pub fn e820_reserving(&self, reserved: &[(u64, u64)], ram_limit: u64) -> Vec<E820Entry> {
        // Split points: every boundary of a map entry or a reserved range.
        let base = self.e820();
        let mut cuts: Vec<u64> = base.iter().flat_map(|e| [e.addr, e.addr + e.size]).collect();
        cuts.extend(reserved.iter().flat_map(|&(a, l)| [a, a.saturating_add(l)]));
        cuts.push(ram_limit);
        cuts.sort_unstable();
        cuts.dedup();
        let mut map: Vec<E820Entry> = Vec::new();
        for w in cuts.windows(2) {
            let (start, end) = (w[0], w[1]);
            let Some(entry) = base.iter().find(|e| e.addr <= start && end <= e.addr + e.size) else {
                continue;
            };
            let is_reserved = reserved.iter().any(|&(a, l)| a <= start && end <= a.saturating_add(l));
            let kind = if is_reserved { E820_RESERVED } else { entry.kind };
            if kind == E820_RAM && start >= ram_limit {
                continue;
            }
            match map.last_mut() {
                Some(last) if last.kind == kind && last.addr + last.size == start => last.size += end - start,
                _ => map.push(E820Entry { addr: start, size: end - start, kind }),
            }
        }
        map
    }
}

/// Parses a memory size such as `256M`, `2G`, `65536K` or `1073741824` (bytes).
/// Suffixes are binary (K = 1024) and case-insensitive; `MiB`/`GiB` forms are accepted.
///
/// ```
/// assert_eq!(arch::layout::parse_size("256M"), Ok(256 << 20));
/// assert!(arch::layout::parse_size("lots").is_err());
/// ```
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let digits_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, suffix) = t.split_at(digits_end);
    if num.is_empty() {
        return Err(format!("'{text}' is not a size (expected a number with an optional K, M, G or T suffix)"));
    }
    let shift = match suffix.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return Err(format!("'{text}' is not a size: unknown suffix '{suffix}' (use K, M, G or T)")),
    };
    let value: u64 = num.parse().map_err(|_| format!("'{text}' is not a size: number too large"))?;
    value.checked_mul(1u64 << shift).ok_or_else(|| format!("'{text}' is not a size: too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_guest_has_one_region_and_three_e820_entries() {
        let l = MemoryLayout::new(256 << 20).unwrap();
        assert_eq!(l.ram_regions(), vec![(0, 256 << 20)]);
        let e = l.e820();
        assert_eq!(e.len(), 3);
        assert_eq!(e[2], E820Entry { addr: 0x10_0000, size: (256 << 20) - 0x10_0000, kind: E820_RAM });
    }

    #[test]
    fn large_guest_is_split_around_the_mmio_hole() {
        let l = MemoryLayout::new(6 << 30).unwrap();
        assert_eq!(l.ram_regions(), vec![(0, 3 << 30), (4 << 30, 3 << 30)]);
        let e = l.e820();
        assert_eq!(e.last().unwrap(), &E820Entry { addr: 4 << 30, size: 3 << 30, kind: E820_RAM });
        let ram: u64 = e.iter().filter(|e| e.kind == E820_RAM).map(|e| e.size).sum();
        assert_eq!(ram, (6 << 30) - (HIGH_MEMORY_START - EBDA_START));
        let covered: u64 = e.iter().map(|e| e.size).sum();
        assert_eq!(covered, 6 << 30, "every byte below the top of RAM, minus the MMIO hole, appears once");
    }

    #[test]
    fn reserved_ranges_are_cut_out_of_ram_and_merged_with_their_neighbours() {
        let l = MemoryLayout::new(64 << 20).unwrap();
        let map = l.e820_reserving(&[(0x3000, 0x2000), (0x5000, 0x1000), (0x10_0000, 0x70_0000)], FOUR_GIB);
        let want = [
            E820Entry { addr: 0, size: 0x3000, kind: E820_RAM },
            E820Entry { addr: 0x3000, size: 0x3000, kind: E820_RESERVED },
            E820Entry { addr: 0x6000, size: EBDA_START - 0x6000, kind: E820_RAM },
            // The EBDA/ROM hole and the firmware's range touch: one reserved entry.
            E820Entry { addr: EBDA_START, size: 0x80_0000 - EBDA_START, kind: E820_RESERVED },
            E820Entry { addr: 0x80_0000, size: (64 << 20) - 0x80_0000, kind: E820_RAM },
        ];
        assert_eq!(map, want);
        let covered: u64 = map.iter().map(|e| e.size).sum();
        assert_eq!(covered, 64 << 20);
        // Nothing reserved: the plain map.
        assert_eq!(l.e820_reserving(&[], FOUR_GIB), l.e820());
    }

    #[test]
    fn ram_above_the_limit_is_left_out_of_the_reserving_map() {
        let l = MemoryLayout::new(6 << 30).unwrap();
        let map = l.e820_reserving(&[(0x5000, 0x1000)], MMIO_HOLE_START);
        assert!(map.iter().all(|e| e.addr + e.size <= MMIO_HOLE_START), "{map:x?}");
        assert_eq!(map.last().unwrap().addr + map.last().unwrap().size, MMIO_HOLE_START);
    }

    #[test]
    fn too_small_too_large_and_unaligned_sizes_are_rejected() {
        assert_eq!(MemoryLayout::new(1 << 20), Err(LayoutError::TooSmall { size: 1 << 20 }));
        assert!(matches!(MemoryLayout::new(MAX_MEMORY + PAGE_SIZE), Err(LayoutError::TooLarge { .. })));
        assert!(matches!(MemoryLayout::new((64 << 20) + 1), Err(LayoutError::Unaligned { .. })));
    }

    #[test]
    fn sizes_parse_with_binary_suffixes() {
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("").is_err());
        assert!(parse_size("12Q").is_err());
        assert!(parse_size("-1M").is_err());
        assert!(parse_size("99999999999999999999").is_err());
        assert!(parse_size("99999999999T").is_err());
    }
}
