//! Kernel images (64-bit ELF, PVH ELF, bzImage), initrd placement and the command line.

use std::io::{Read, Seek, SeekFrom};

use arch::layout::{MemoryLayout, CMDLINE_MAX_SIZE, FOUR_GIB, HIGH_MEMORY_START, PAGE_SIZE};
use arch::regs::BootEntry;
use linux_loader::loader::bootparam::setup_header;
use linux_loader::loader::elf::PvhBootCapability;
use linux_loader::loader::{BzImage, Elf, KernelLoader};
use thiserror::Error;
use vm_memory::{ByteValued, GuestAddress, GuestMemoryBackend, ReadVolatile};

/// `xloadflags` bit: the kernel has the 64-bit entry point at `code32_start + 0x200`.
const XLF_KERNEL_64: u16 = 1 << 0;
/// Offset of the 64-bit entry point from the protected-mode load address.
const BZIMAGE_64BIT_ENTRY_OFFSET: u64 = 0x200;

/// Offset of the setup header in a bzImage.
const SETUP_HEADER_OFFSET: u64 = 0x1f1;
/// `"HdrS"`.
const HDRS_MAGIC: u32 = 0x5372_6448;
/// The first boot protocol with `xloadflags` (and so a declared 64-bit entry): 2.12.
const MIN_64BIT_PROTOCOL: u16 = 0x020c;
/// `loadflags` bit: the protected-mode part loads at 1 MiB or above (a bzImage).
const LOADED_HIGH: u8 = 0x01;

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
    /// A bzImage whose boot protocol predates the 64-bit entry.
    #[error("the bzImage's boot protocol {version:#06x} is older than 2.12 (no declared 64-bit entry)")]
    ProtocolTooOld {
        /// `setup_header.version`.
        version: u16,
    },
    /// A bzImage that is not a "big" kernel (`loadflags` LOADED_HIGH clear) or whose
    /// setup part is longer than the file.
    #[error("malformed bzImage: {0}")]
    MalformedBzImage(&'static str),
    /// The kernel cannot be loaded above the given address.
    #[error("the kernel wants to load at {pref:#x}, below {min:#x}, and is not relocatable")]
    LoadAddress {
        /// Its preferred load address.
        pref: u64,
        /// The lowest address free for it.
        min: u64,
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

/// A bzImage taken apart for a firmware-driven boot (the confidential direct boot): its
/// setup header and its protected-mode part, which the host places in guest memory
/// itself instead of through linux-loader.
#[derive(Debug, Clone)]
pub struct BzImageParts {
    /// The setup header, as the image carries it.
    pub header: setup_header,
    /// The protected-mode kernel (everything after the setup sectors).
    pub protected_mode: Vec<u8>,
}

impl BzImageParts {
    /// Reads the bzImage in `image`. `Ok(None)` if it is not a bzImage (no `"HdrS"`);
    /// an error if it is one without the 64-bit boot protocol.
    pub fn read<F: Read + Seek>(image: &mut F) -> Result<Option<Self>, KernelError> {
        let mut header = setup_header::default();
        image.seek(SeekFrom::Start(SETUP_HEADER_OFFSET)).map_err(KernelError::Read)?;
        if read_up_to(image, header.as_mut_slice()).map_err(KernelError::Read)? < std::mem::size_of::<setup_header>()
            || header.header != HDRS_MAGIC
        {
            return Ok(None);
        }
        if header.version < MIN_64BIT_PROTOCOL {
            return Err(KernelError::ProtocolTooOld { version: header.version });
        }
        if header.loadflags & LOADED_HIGH == 0 {
            return Err(KernelError::MalformedBzImage("loadflags LOADED_HIGH is clear (not a bzImage)"));
        }
        if header.xloadflags & XLF_KERNEL_64 == 0 {
            return Err(KernelError::No64BitEntry);
        }
        let sects = if header.setup_sects == 0 { 4 } else { u64::from(header.setup_sects) };
        let setup_size = (sects + 1) * 512;
        let len = image.seek(SeekFrom::End(0)).map_err(KernelError::Read)?;
        if len <= setup_size + BZIMAGE_64BIT_ENTRY_OFFSET {
            return Err(KernelError::MalformedBzImage("the file ends before the 64-bit entry"));
        }
        let mut protected_mode = vec![0u8; (len - setup_size) as usize];
        image.seek(SeekFrom::Start(setup_size)).map_err(KernelError::Read)?;
        image.read_exact(&mut protected_mode).map_err(KernelError::Read)?;
        Ok(Some(Self { header, protected_mode }))
    }

    /// Where the protected-mode part goes when nothing below `min` may be used: the
    /// kernel's preferred address (`pref_address`) if it is at or above `min`, else,
    /// for a relocatable kernel, `min` rounded up to its `kernel_alignment`.
    pub fn load_address(&self, min: u64) -> Result<u64, KernelError> {
        let pref = match self.header.pref_address {
            0 => u64::from(self.header.code32_start),
            p => p,
        };
        if pref >= min {
            return Ok(pref);
        }
        if self.header.relocatable_kernel == 0 {
            return Err(KernelError::LoadAddress { pref, min });
        }
        let align = u64::from(self.header.kernel_alignment).max(PAGE_SIZE);
        Ok(min.div_ceil(align) * align)
    }

    /// The kernel placed at `load`: entry at `load + 0x200`, occupying
    /// `[load, load + max(image, init_size))` (it decompresses in place).
    pub fn loaded_at(&self, load: u64) -> LoadedKernel {
        let size = (self.protected_mode.len() as u64).max(u64::from(self.header.init_size));
        let mut header = self.header;
        header.code32_start = load as u32;
        LoadedKernel {
            kind: KernelKind::BzImage { entry: load + BZIMAGE_64BIT_ENTRY_OFFSET },
            start: load,
            end: load + size,
            setup_header: Some(header),
        }
    }
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

    /// A bzImage with `setup_sects` 1, protocol `version`, and `pm` as its
    /// protected-mode part.
    fn bzimage(version: u16, xloadflags: u16, pm: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; 1024];
        b[0x1f1] = 1;
        b[0x1fe..0x200].copy_from_slice(&0xaa55u16.to_le_bytes());
        b[0x202..0x206].copy_from_slice(b"HdrS");
        b[0x206..0x208].copy_from_slice(&version.to_le_bytes());
        b[0x211] = LOADED_HIGH;
        b[0x214..0x218].copy_from_slice(&0x10_0000u32.to_le_bytes());
        b[0x230..0x234].copy_from_slice(&0x20_0000u32.to_le_bytes()); // kernel_alignment
        b[0x234] = 1; // relocatable
        b[0x236..0x238].copy_from_slice(&xloadflags.to_le_bytes());
        b[0x258..0x260].copy_from_slice(&0x100_0000u64.to_le_bytes()); // pref_address
        b[0x260..0x264].copy_from_slice(&0x30_0000u32.to_le_bytes()); // init_size
        b.extend_from_slice(pm);
        b
    }

    #[test]
    fn bzimage_parts_are_the_header_and_the_protected_mode_part() {
        let pm: Vec<u8> = (0..0x1000u32).map(|i| i as u8).collect();
        let parts = BzImageParts::read(&mut Cursor::new(bzimage(0x20f, 1, &pm))).unwrap().unwrap();
        assert_eq!(parts.protected_mode, pm);
        assert_eq!({ parts.header.pref_address }, 0x100_0000);
        assert_eq!(parts.load_address(0x80_0000).unwrap(), 0x100_0000);
        // Below `min`: relocated to the next kernel_alignment boundary above it.
        assert_eq!(parts.load_address(0x110_0001).unwrap(), 0x120_0000);
        let k = parts.loaded_at(0x100_0000);
        assert_eq!(k.kind, KernelKind::BzImage { entry: 0x100_0200 });
        assert_eq!(k.end, 0x130_0000, "init_size is larger than the image");
        assert_eq!({ k.setup_header.unwrap().code32_start }, 0x100_0000);
    }

    #[test]
    fn bzimages_without_the_64_bit_protocol_or_relocation_are_refused() {
        let pm = vec![0u8; 0x1000];
        let old = BzImageParts::read(&mut Cursor::new(bzimage(0x20b, 1, &pm))).unwrap_err();
        assert!(matches!(old, KernelError::ProtocolTooOld { version: 0x20b }), "{old}");
        let no64 = BzImageParts::read(&mut Cursor::new(bzimage(0x20f, 0, &pm))).unwrap_err();
        assert!(matches!(no64, KernelError::No64BitEntry), "{no64}");
        let short = BzImageParts::read(&mut Cursor::new(bzimage(0x20f, 1, &[0u8; 0x100]))).unwrap_err();
        assert!(matches!(short, KernelError::MalformedBzImage(_)), "{short}");
        let mut fixed = BzImageParts::read(&mut Cursor::new(bzimage(0x20f, 1, &pm))).unwrap().unwrap();
        fixed.header.relocatable_kernel = 0;
        assert!(matches!(fixed.load_address(0x200_0000), Err(KernelError::LoadAddress { .. })));
        // Not a bzImage at all: None, so the caller can try other formats.
        assert!(BzImageParts::read(&mut Cursor::new(crate::demo_guest())).unwrap().is_none());
        assert!(BzImageParts::read(&mut Cursor::new(vec![0u8; 16])).unwrap().is_none());
    }

    #[test]
    fn linux_boot_firmware_has_the_32_bit_entry_marker() {
        let m = mem(32 << 20);
        let k = load_kernel(&m, &mut Cursor::new(crate::linux_boot_firmware())).unwrap();
        let KernelKind::Elf64 { entry } = k.kind else { panic!("not a 64-bit ELF") };
        let mut marker = [0u8; 8];
        vm_memory::Bytes::read_slice(&m, &mut marker, GuestAddress(entry + arch::abi::ENTRY32_OFFSET - 8)).unwrap();
        assert_eq!(marker, arch::abi::ENTRY32_MARKER);
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
