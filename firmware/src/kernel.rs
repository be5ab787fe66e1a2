//! Kernel images (64-bit ELF, PVH ELF, bzImage), initrd placement and the command line.

use std::io::{Read, Seek, SeekFrom};

use arch::layout::{MemoryLayout, CMDLINE_MAX_SIZE, FOUR_GIB, HIGH_MEMORY_START, PAGE_SIZE};
use arch::regs::BootEntry;
use linux_loader::loader::bootparam::setup_header;
use linux_loader::loader::elf::PvhBootCapability;
use linux_loader::loader::{BzImage, Elf, KernelLoader};
use thiserror::Error;
use vm_memory::{GuestAddress, GuestMemoryBackend, ReadVolatile};

/// `xloadflags` bit: the kernel has the 64-bit entry point at `code32_start + 0x200`.
const XLF_KERNEL_64: u16 = 1 << 0;
/// Offset of the 64-bit entry point from the protected-mode load address.
const BZIMAGE_64BIT_ENTRY_OFFSET: u64 = 0x200;

/// Errors from loading a kernel, an initrd or a command line.
#[derive(Debug, Error)]
pub enum KernelError {
    /// Reading the image failed.
    #[error("cannot read the kernel image: {0}")]
    Read(#[source] std::io::Error),
    /// Neither an ELF file nor a bzImage.
    #[error("not a kernel: the file is neither an ELF executable nor a Linux bzImage")]
    NotAKernel,
    /// linux-loader rejected the ELF file.
    #[error("invalid ELF kernel: {0}")]
    Elf(#[source] linux_loader::loader::Error),
    /// linux-loader rejected the bzImage.
    #[error("invalid bzImage kernel: {0}")]
    BzImage(#[source] linux_loader::loader::Error),
    /// A bzImage without the 64-bit boot protocol.
    #[error("the bzImage has no 64-bit entry point (xloadflags bit 0 clear)")]
    No64BitEntry,
    /// An ELF file that is not a 64-bit x86 executable.
    #[error("the ELF kernel is not a 64-bit x86-64 executable")]
    WrongElfClass,
    /// The initrd does not fit between the kernel and the top of low memory.
    #[error("initrd of {size} bytes does not fit in guest memory (room below {limit:#x} above the kernel ending at {kernel_end:#x})")]
    InitrdTooLarge {
        /// Initrd size.
        size: u64,
        /// Highest address the initrd may reach.
        limit: u64,
        /// End of the kernel image.
        kernel_end: u64,
    },
    /// The command line is too long or contains a NUL byte.
    #[error("kernel command line is invalid: {0}")]
    Cmdline(String),
}

/// A kernel placed in guest memory.
#[derive(Debug, Clone, Copy)]
pub struct LoadedKernel {
    /// How the boot vCPU enters it (register values still to be completed with the
    /// boot-structure addresses).
    pub kind: KernelKind,
    /// Lowest guest address the kernel occupies.
    pub start: u64,
    /// First guest address above the kernel and its working area.
    pub end: u64,
    /// The bzImage setup header, for the zero page.
    pub setup_header: Option<setup_header>,
}

/// The entry protocol a kernel uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelKind {
    /// 64-bit ELF entered in long mode at its ELF entry point.
    Elf64 {
        /// Entry point.
        entry: u64,
    },
    /// ELF with a `XEN_ELFNOTE_PHYS32_ENTRY` note: PVH entry in 32-bit mode.
    Pvh {
        /// Entry point from the note.
        entry: u64,
    },
    /// bzImage entered at its 64-bit entry point.
    BzImage {
        /// Entry point.
        entry: u64,
    },
}

impl KernelKind {
    /// The complete boot entry, given the addresses of the boot structures.
    pub fn boot_entry(&self, zero_page: u64, pvh_start_info: u64, boot_info: u64) -> BootEntry {
        match *self {
            KernelKind::Elf64 { entry } | KernelKind::BzImage { entry } => {
                BootEntry::Long64 { rip: entry, zero_page, boot_info }
            }
            KernelKind::Pvh { entry } => BootEntry::Pvh32 { rip: entry, start_info: pvh_start_info },
        }
    }
}

/// Loads the kernel in `image` into `mem`, choosing the format from its contents.
pub fn load_kernel<M, F>(mem: &M, image: &mut F) -> Result<LoadedKernel, KernelError>
where
    M: GuestMemoryBackend,
    F: Read + ReadVolatile + Seek,
{
    let mut head = [0u8; 0x210];
    image.seek(SeekFrom::Start(0)).map_err(KernelError::Read)?;
    let n = read_up_to(image, &mut head).map_err(KernelError::Read)?;
    let head = &head[..n];
    if head.starts_with(b"\x7fELF") {
        // e_ident[EI_CLASS] == ELFCLASS64, e_machine == EM_X86_64
        if head.len() < 20 || head[4] != 2 || u16::from_le_bytes([head[18], head[19]]) != 62 {
            return Err(KernelError::WrongElfClass);
        }
        let r = Elf::load(mem, None, image, Some(GuestAddress(HIGH_MEMORY_START))).map_err(KernelError::Elf)?;
        let kind = match r.pvh_boot_cap {
            PvhBootCapability::PvhEntryPresent(addr) => KernelKind::Pvh { entry: addr.0 },
            _ => KernelKind::Elf64 { entry: r.kernel_load.0 },
        };
        let start = lowest_load_address(image)?;
        Ok(LoadedKernel { kind, start, end: r.kernel_end, setup_header: None })
    } else if head.len() >= 0x206 && &head[0x202..0x206] == b"HdrS" {
        let r = BzImage::load(mem, None, image, Some(GuestAddress(HIGH_MEMORY_START))).map_err(KernelError::BzImage)?;
        let hdr = r.setup_header.ok_or(KernelError::NotAKernel)?;
        if hdr.xloadflags & XLF_KERNEL_64 == 0 {
            return Err(KernelError::No64BitEntry);
        }
        // The kernel decompresses itself into [pref_address, pref_address + init_size).
        let pref = hdr.pref_address;
        let work_end = pref.saturating_add(u64::from(hdr.init_size));
        Ok(LoadedKernel {
            kind: KernelKind::BzImage { entry: r.kernel_load.0 + BZIMAGE_64BIT_ENTRY_OFFSET },
            start: r.kernel_load.0,
            end: r.kernel_end.max(work_end),
            setup_header: Some(hdr),
        })
    } else {
        Err(KernelError::NotAKernel)
    }
}

fn read_up_to<F: Read>(f: &mut F, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// The lowest `p_paddr` of the ELF's loadable segments.
fn lowest_load_address<F: Read + Seek>(image: &mut F) -> Result<u64, KernelError> {
    let mut ehdr = [0u8; 64];
    image.seek(SeekFrom::Start(0)).map_err(KernelError::Read)?;
    image.read_exact(&mut ehdr).map_err(KernelError::Read)?;
    let phoff = u64::from_le_bytes(ehdr[32..40].try_into().expect("8 bytes"));
    let phnum = u16::from_le_bytes([ehdr[56], ehdr[57]]);
    let mut lowest = u64::MAX;
    for i in 0..u64::from(phnum) {
        let mut ph = [0u8; 56];
        image.seek(SeekFrom::Start(phoff + i * 56)).map_err(KernelError::Read)?;
        image.read_exact(&mut ph).map_err(KernelError::Read)?;
        let p_type = u32::from_le_bytes(ph[0..4].try_into().expect("4 bytes"));
        let p_paddr = u64::from_le_bytes(ph[24..32].try_into().expect("8 bytes"));
        if p_type == 1 {
            lowest = lowest.min(p_paddr);
        }
    }
    Ok(if lowest == u64::MAX { HIGH_MEMORY_START } else { lowest })
}

/// Chooses the initrd's guest address: the highest page-aligned spot below both the
/// top of low RAM and the kernel's `initrd_addr_max`, above the kernel.
pub fn place_initrd(layout: &MemoryLayout, kernel: &LoadedKernel, size: u64) -> Result<u64, KernelError> {
    let mut limit = layout.low_ram_end().min(FOUR_GIB);
    if let Some(hdr) = kernel.setup_header {
        let max = u64::from(hdr.initrd_addr_max);
        if max != 0 {
            limit = limit.min(max + 1);
        }
    }
    let kernel_end = kernel.end.div_ceil(PAGE_SIZE) * PAGE_SIZE;
    let too_large = || KernelError::InitrdTooLarge { size, limit, kernel_end };
    let start = limit.checked_sub(size).ok_or_else(too_large)? & !(PAGE_SIZE - 1);
    if start < kernel_end {
        return Err(too_large());
    }
    Ok(start)
}

/// The command line as the guest reads it: the bytes plus a terminating NUL, checked
/// against cvmm's limit and, for a bzImage, the kernel's own `cmdline_size`.
pub fn cmdline_bytes(cmdline: &str, header: Option<&setup_header>) -> Result<Vec<u8>, KernelError> {
    if cmdline.as_bytes().contains(&0) {
        return Err(KernelError::Cmdline("it contains a NUL byte".into()));
    }
    let mut limit = CMDLINE_MAX_SIZE - 1;
    if let Some(h) = header {
        let size = h.cmdline_size as usize;
        if size != 0 {
            limit = limit.min(size);
        }
    }
    if cmdline.len() > limit {
        return Err(KernelError::Cmdline(format!(
            "{} bytes is longer than the {limit} the kernel accepts",
            cmdline.len()
        )));
    }
    let mut bytes = cmdline.as_bytes().to_vec();
    bytes.push(0);
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;
    use vm_memory::GuestMemoryMmap;

    fn mem(size: usize) -> GuestMemoryMmap<()> {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), size)]).unwrap()
    }

    #[test]
    fn demo_guest_loads_as_a_64_bit_elf() {
        let m = mem(32 << 20);
        let k = load_kernel(&m, &mut Cursor::new(crate::demo_guest())).unwrap();
        assert_eq!(k.kind, KernelKind::Elf64 { entry: 0x20_0000 });
        assert_eq!(k.start, 0x20_0000);
        assert!(k.end > k.start && k.end < 0x30_0000);
    }

    #[test]
    fn garbage_is_not_a_kernel() {
        let m = mem(32 << 20);
        let err = load_kernel(&m, &mut Cursor::new(vec![0x55u8; 4096])).unwrap_err();
        assert!(matches!(err, KernelError::NotAKernel), "{err}");
        let err = load_kernel(&m, &mut Cursor::new(Vec::<u8>::new())).unwrap_err();
        assert!(matches!(err, KernelError::NotAKernel), "{err}");
    }

    #[test]
    fn truncated_elf_is_rejected() {
        let m = mem(32 << 20);
        let elf = crate::demo_guest();
        let err = load_kernel(&m, &mut Cursor::new(elf[..100].to_vec())).unwrap_err();
        assert!(matches!(err, KernelError::Elf(_) | KernelError::Read(_)), "{err}");
    }

    #[test]
    fn elf_for_another_class_is_rejected() {
        let m = mem(32 << 20);
        let mut elf = crate::demo_guest().to_vec();
        elf[4] = 1; // ELFCLASS32
        assert!(matches!(load_kernel(&m, &mut Cursor::new(elf)).unwrap_err(), KernelError::WrongElfClass));
    }

    #[test]
    fn kernel_that_does_not_fit_in_memory_is_rejected() {
        let m = mem(0x20_0000 + 0x100); // ends inside the demo guest's text
        assert!(load_kernel(&m, &mut Cursor::new(crate::demo_guest())).is_err());
    }

    #[test]
    fn initrd_goes_to_the_top_of_low_memory() {
        let layout = MemoryLayout::new(64 << 20).unwrap();
        let k = LoadedKernel {
            kind: KernelKind::Elf64 { entry: 0x20_0000 },
            start: 0x20_0000,
            end: 0x30_0000,
            setup_header: None,
        };
        assert_eq!(place_initrd(&layout, &k, 0x1000).unwrap(), (64 << 20) - 0x1000);
        assert_eq!(place_initrd(&layout, &k, 0x1001).unwrap(), (64 << 20) - 0x2000);
        let err = place_initrd(&layout, &k, 63 << 20).unwrap_err();
        assert!(matches!(err, KernelError::InitrdTooLarge { .. }), "{err}");
        assert!(place_initrd(&layout, &k, u64::MAX).is_err());
    }

    #[test]
    fn initrd_respects_the_kernels_initrd_addr_max() {
        let layout = MemoryLayout::new(64 << 20).unwrap();
        let hdr = setup_header { initrd_addr_max: (32 << 20) - 1, ..Default::default() };
        let k = LoadedKernel {
            kind: KernelKind::BzImage { entry: 0x10_0200 },
            start: 0x10_0000,
            end: 0x20_0000,
            setup_header: Some(hdr),
        };
        assert_eq!(place_initrd(&layout, &k, 0x1000).unwrap(), (32 << 20) - 0x1000);
    }

    #[test]
    fn cmdline_limits_are_enforced() {
        assert_eq!(cmdline_bytes("console=ttyS0", None).unwrap(), b"console=ttyS0\0");
        assert!(cmdline_bytes("a\0b", None).is_err());
        assert!(cmdline_bytes(&"x".repeat(CMDLINE_MAX_SIZE), None).is_err());
        let hdr = setup_header { cmdline_size: 8, ..Default::default() };
        assert!(cmdline_bytes("123456789", Some(&hdr)).is_err());
        assert!(cmdline_bytes("12345678", Some(&hdr)).is_ok());
    }
}
