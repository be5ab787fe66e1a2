//! The SEV-SNP launch plan of a [`VmConfig`]: what `cvmm run --tee snp` launches and
//! what `cvmm measure --tee snp` with the same arguments measures, built by one
//! function ([`snp_plan`]) so the two cannot disagree.
//!
//! Guest-physical layout of a direct-boot SNP guest (cvmm's own firmware, see
//! firmware/guests/snp.rs):
//!
//! | GPA | what | page type |
//! |---|---|---|
//! | 0x3000 | secrets page | SECRETS |
//! | 0x4000 | CPUID page | CPUID |
//! | 0x5000 | boot information (flags SNP, emulated) | NORMAL |
//! | 0x9000-0xefff | the firmware's page tables | ZERO |
//! | 0xe0000 | ACPI tables (see [`crate::acpi`]; TDX also has the mailbox and event log area after them) | NORMAL |
//! | 2 MiB + | the guest program (ELF segments, .bss included) | NORMAL |
//! | 4-8 MiB | the bounce region, converted to shared by the guest | (not in the plan) |
//!
//! # Linux direct boot
//! With a bzImage as `--kernel`, the guest program is cvmm's Linux boot firmware
//! (`firmware/guests/linuxboot.rs`) and the plan also holds, as NORMAL pages (TDX:
//! added and measured into MRTD like every other page), what the 64-bit boot protocol
//! hands the kernel ([`linux_images`]):
//!
//! | GPA | what |
//! |---|---|
//! | 0x7000 | the zero page (`boot_params`): setup header from the image, e820, pointers |
//! | 0xf000 | SNP: `setup_data` SETUP_CC_BLOB and `cc_blob_sev_info` (secrets, CPUID page) |
//! | 0x20000 | the command line |
//! | `pref_address` (or 8 MiB+, relocatable) | the protected-mode kernel |
//! | top of low RAM | the initrd |
//!
//! The e820 map reserves what the firmware keeps: the secrets and CPUID pages (SNP),
//! the boot information, the TD HOB (TDX), the page tables, and 1-8 MiB (AP VMSAs and
//! stacks, the firmware program, its shared bounce region).

use std::sync::Arc;

use arch::abi::{
    BootInfo, VirtioDeviceInfo, BOOT_INFO_MAGIC, BOOT_INFO_SIZE, BOOT_INFO_VERSION, ENTRY32_MARKER, ENTRY32_OFFSET,
    FLAG_CONFIDENTIAL, FLAG_EMULATED_PLATFORM, FLAG_SNP,
};
use arch::boot::{BootBlobs, ZeroPageExtras};
use arch::layout::{MemoryLayout, BOOT_INFO_START, PAGE_TABLES_START};
use arch::layout::{
    CMDLINE_START, FIRMWARE_RESERVED_END, FIRMWARE_RESERVED_START, MMIO_HOLE_START, SETUP_DATA_START, ZERO_PAGE_START,
};
use firmware::kernel::{BzImageParts, KernelError, LoadedKernel};
use kvm_bindings::kvm_cpuid_entry2;
use launch::plan::snp_direct::{plan_snp_direct, PlanImage, SnpDirectOptions};
use launch::plan::LaunchPlan;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::config::{SnpConfig, VmConfig};

/// GPA of the secrets page.
pub const SECRETS_GPA: u64 = 0x3000;
/// GPA of the CPUID page.
pub const CPUID_GPA: u64 = 0x4000;
/// The page tables cvmm's firmware builds: PML4, PDPT and four page directories.
const PAGE_TABLES_LEN: u64 = 0x6000;
/// SEV_FEATURES of every VMSA: SNPActive only.
pub const SEV_FEATURES: u64 = 1;

const PAGE: u64 = 0x1000;

/// Errors from planning an SNP launch.
#[derive(Debug, thiserror::Error)]
pub enum SnpLaunchError {
    /// The guest program cannot be read back from guest memory.
    #[error("cannot read the guest program back from guest memory: {0}")]
    ReadImage(String),
    /// The guest program is not where cvmm's firmware expects it.
    #[error(
        "the guest program's entry {entry:#x} is not a cvmm guest program's (its 32-bit entry must be below 4 GiB)"
    )]
    Entry {
        /// The 64-bit entry point.
        entry: u64,
    },
    /// The program has no 32-bit entry (it is not one of cvmm's guest programs).
    #[error("the kernel is not a cvmm guest program with a 32-bit entry (no {:?} marker at entry + 0x38): a confidential guest boots cvmm's own programs or a Linux bzImage", std::str::from_utf8(&ENTRY32_MARKER).unwrap_or_default())]
    NoEntry32,
    /// The CPUID table does not fit a CPUID page.
    #[error("cannot build the CPUID page: {0}")]
    Cpuid(String),
    /// The ACPI tables cannot describe the VM.
    #[error(transparent)]
    Acpi(#[from] arch::acpi::AcpiError),
    /// The plan is inconsistent.
    #[error(transparent)]
    Plan(#[from] launch::plan::snp::SnpPlanError),
    /// The Linux kernel, initrd or command line of a direct boot cannot be placed.
    #[error("Linux direct boot: {0}")]
    Linux(#[source] KernelError),
    /// The kernel does not fit in guest memory where it must load.
    #[error("Linux direct boot: the kernel needs [{start:#x}, {end:#x}), beyond the {ram:#x} bytes of low RAM")]
    KernelTooLarge {
        /// Load address.
        start: u64,
        /// End of its image or decompression area.
        end: u64,
        /// End of RAM below the MMIO hole.
        ram: u64,
    },
}

/// The confidential platform a Linux direct boot is planned for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CcPlatform {
    /// AMD SEV-SNP: secrets and CPUID pages, a CC blob for the kernel.
    Snp,
    /// Intel TDX: a TD HOB.
    Tdx,
}

/// A Linux kernel (bzImage) and initrd that cvmm's Linux boot firmware hands the
/// machine to.
#[derive(Debug, Clone)]
pub struct LinuxPayload {
    /// The bzImage's setup header and protected-mode part.
    pub kernel: BzImageParts,
    /// The initrd's contents, if any.
    pub initrd: Option<Vec<u8>>,
}

/// What the firmware keeps for itself while Linux runs, as `(GPA, length)`: reserved
/// in the e820 map Linux gets.
pub fn firmware_reserved(platform: CcPlatform) -> Vec<(u64, u64)> {
    let mut reserved = vec![
        (BOOT_INFO_START, PAGE),
        (PAGE_TABLES_START, PAGE_TABLES_LEN),
        (FIRMWARE_RESERVED_START, FIRMWARE_RESERVED_END - FIRMWARE_RESERVED_START),
    ];
    match platform {
        CcPlatform::Snp => reserved.extend([(SECRETS_GPA, PAGE), (CPUID_GPA, PAGE)]),
        CcPlatform::Tdx => reserved.push((TD_HOB_GPA, PAGE)),
    }
    reserved
}

fn page_padded(mut bytes: Vec<u8>) -> Arc<[u8]> {
    bytes.resize((bytes.len() as u64).next_multiple_of(PAGE) as usize, 0);
    bytes.into()
}

/// The measured images of a Linux direct boot, in launch order: the protected-mode
/// kernel (at its preferred address, or above the firmware's region if relocatable),
/// the initrd (top of low RAM), the command line, the SNP `setup_data` page, and the
/// zero page built from the image's setup header (boot protocol 2.12+: type_of_loader
/// 0xff, code32_start, cmd_line_ptr, ramdisk_image/size, setup_data, cc_blob_address,
/// the e820 map with [`firmware_reserved`] cut out, `acpi_rsdp_addr` = the RSDP of
/// cvmm's ACPI tables, [`crate::acpi`]).
pub fn linux_images(
    config: &VmConfig,
    layout: &MemoryLayout,
    platform: CcPlatform,
    payload: &LinuxPayload,
) -> Result<Vec<PlanImage>, SnpLaunchError> {
    let parts = &payload.kernel;
    let load = parts.load_address(FIRMWARE_RESERVED_END).map_err(SnpLaunchError::Linux)?;
    let kernel = parts.loaded_at(load);
    let ram = layout.low_ram_end();
    if kernel.end > ram {
        return Err(SnpLaunchError::KernelTooLarge { start: kernel.start, end: kernel.end, ram });
    }
    let mut images =
        vec![PlanImage { gpa: load, bytes: page_padded(parts.protected_mode.clone()), what: "Linux kernel".into() }];
    let initrd = match &payload.initrd {
        Some(bytes) => {
            let size = bytes.len() as u64;
            let gpa = firmware::kernel::place_initrd(layout, &kernel, size).map_err(SnpLaunchError::Linux)?;
            images.push(PlanImage { gpa, bytes: page_padded(bytes.clone()), what: "initrd".into() });
            Some((gpa, size))
        }
        None => None,
    };
    let cmdline = firmware::kernel::cmdline_bytes(&config.effective_cmdline(), kernel.setup_header.as_ref())
        .map_err(SnpLaunchError::Linux)?;
    let blobs = BootBlobs { cmdline_addr: CMDLINE_START, cmdline_len: (cmdline.len() - 1) as u32, initrd };
    images.push(PlanImage { gpa: CMDLINE_START, bytes: page_padded(cmdline), what: "command line".into() });
    let mut extras =
        ZeroPageExtras { code32_start: load as u32, acpi_rsdp_addr: arch::layout::ACPI_START, ..Default::default() };
    if platform == CcPlatform::Snp {
        let (setup_data, blob) = arch::boot::snp_cc_blob_setup_data(SETUP_DATA_START, SECRETS_GPA, CPUID_GPA);
        extras.setup_data = SETUP_DATA_START;
        extras.cc_blob_address = blob as u32;
        images.push(PlanImage { gpa: SETUP_DATA_START, bytes: page_padded(setup_data), what: "setup_data".into() });
    }
    let e820 = layout.e820_reserving(&firmware_reserved(platform), MMIO_HOLE_START);
    let (zp_gpa, zero_page) = arch::boot::zero_page_with(kernel.setup_header, &blobs, &e820, &extras);
    debug_assert_eq!(zp_gpa, ZERO_PAGE_START);
    images.push(PlanImage { gpa: zp_gpa, bytes: page_padded(zero_page), what: "zero page".into() });
    Ok(images)
}

/// The boot information an SNP guest gets.
pub fn boot_info(config: &VmConfig, layout: &MemoryLayout, snp: &SnpConfig) -> BootInfo {
    let mut flags = FLAG_CONFIDENTIAL | FLAG_SNP;
    if snp.emulated {
        flags |= FLAG_EMULATED_PLATFORM;
    }
    let mut info = BootInfo {
        magic: BOOT_INFO_MAGIC,
        version: BOOT_INFO_VERSION,
        size: BOOT_INFO_SIZE as u32,
        vcpus: config.vcpus,
        flags,
        mem_size: layout.mem_size(),
        bounce_base: arch::layout::BOUNCE_START,
        bounce_size: arch::layout::BOUNCE_SIZE,
        snp_secrets: SECRETS_GPA,
        snp_cpuid: CPUID_GPA,
        acpi_rsdp: arch::layout::ACPI_START,
        ..Default::default()
    };
    let slots = config.virtio_devices();
    for (entry, slot) in info.virtio.iter_mut().zip(&slots) {
        *entry = VirtioDeviceInfo { base: slot.base, device_id: slot.kind.device_id(), gsi: slot.gsi };
    }
    info.virtio_count = slots.len().min(arch::abi::MAX_VIRTIO_DEVICES) as u32;
    info
}

/// The loaded guest program as plan bytes: its first page's GPA, its pages (`.bss` and
/// stack included), and its 32-bit entry, checked to be a cvmm guest program's.
pub fn program_image(mem: &GuestMemoryMmap, kernel: &LoadedKernel) -> Result<(u64, Vec<u8>, u32), SnpLaunchError> {
    let start = kernel.start & !(PAGE - 1);
    let end = kernel.end.next_multiple_of(PAGE);
    let mut image = vec![0u8; (end - start) as usize];
    mem.read_slice(&mut image, GuestAddress(start)).map_err(|e| SnpLaunchError::ReadImage(e.to_string()))?;
    let entry = match kernel.kind {
        firmware::kernel::KernelKind::Elf64 { entry } => entry,
        firmware::kernel::KernelKind::Pvh { entry } => entry,
        _ => 0,
    } + ENTRY32_OFFSET;
    let entry = u32::try_from(entry).map_err(|_| SnpLaunchError::Entry { entry: u64::from(u32::MAX) })?;
    let mut marker = [0u8; 8];
    let at = GuestAddress(u64::from(entry) - 8);
    if mem.read_slice(&mut marker, at).is_err() || marker != ENTRY32_MARKER {
        return Err(SnpLaunchError::NoEntry32);
    }
    Ok((start, image, entry))
}

/// GPA of the TD HOB in a direct-boot TDX plan (RCX of every vCPU; cvmm's firmware
/// tells a TD entry from an SNP one by it being non-zero).
pub const TD_HOB_GPA: u64 = 0x8000;

/// The boot information a TD gets (the devices, memory; flags confidential and TDX).
pub fn tdx_boot_info(config: &VmConfig, layout: &MemoryLayout) -> BootInfo {
    let mut info = boot_info(config, layout, &SnpConfig::default());
    info.flags = FLAG_CONFIDENTIAL | arch::abi::FLAG_TDX;
    if matches!(&config.tee, crate::config::Tee::Tdx(t) if t.emulated) {
        // The firmware's idle loop differs (see firmware/guests/acpi.rs).
        info.flags |= FLAG_EMULATED_PLATFORM;
    }
    info.snp_secrets = 0;
    info.snp_cpuid = 0;
    info
}

/// The direct-boot TDX launch plan for `config`, whose guest program `kernel` has been
/// loaded into `mem`: boot info, TD HOB, program, the Linux images of a direct Linux
/// boot ([`linux_images`]), page tables, reset vector; every page added and measured
/// into MRTD.
pub fn tdx_plan(
    config: &VmConfig,
    layout: &MemoryLayout,
    mem: &GuestMemoryMmap,
    kernel: &LoadedKernel,
    linux: Option<&LinuxPayload>,
) -> Result<LaunchPlan, SnpLaunchError> {
    use launch::plan::tdx_direct::{plan_tdx_direct, TdxDirectOptions};
    let (start, image, entry32) = program_image(mem, kernel)?;
    let mut info_page = vec![0u8; PAGE as usize];
    info_page[..BOOT_INFO_SIZE].copy_from_slice(&tdx_boot_info(config, layout).to_bytes());
    // An empty HOB list: cvmm's firmware reads the boot info; the HOB's address only
    // marks the entry as a TD's.
    let hob = vec![0u8; PAGE as usize];
    let acpi = crate::acpi::tdx_tables(config.vcpus)?;
    let mut images: Vec<(u64, Arc<[u8]>, String)> = vec![
        (BOOT_INFO_START, info_page.into(), "boot info".into()),
        (TD_HOB_GPA, hob.into(), "TD HOB".into()),
        (start, image.into(), "guest program".into()),
        (acpi.rsdp, acpi.bytes.into(), crate::acpi::ACPI_TABLES_WHAT.into()),
    ];
    if let Some(payload) = linux {
        let linux = linux_images(config, layout, CcPlatform::Tdx, payload)?;
        images.extend(linux.into_iter().map(|i| (i.gpa, i.bytes, i.what)));
    }
    let mut zero = vec![(PAGE_TABLES_START, PAGE_TABLES_LEN, "page tables".into())];
    zero.extend(crate::acpi::tdx_zero_ranges());
    plan_tdx_direct(&TdxDirectOptions { images, zero, entry32, hob: TD_HOB_GPA, vcpus: config.vcpus })
        .map_err(|e| SnpLaunchError::Plan(e.into()))
}

/// The SNP launch plan for `config`, whose guest program `kernel` has been loaded into
/// `mem`, with the Linux images of a direct Linux boot ([`linux_images`]) when `linux`
/// is given. `cpuid_page` is the CPUID page a launch uses (`None` when only measuring).
pub fn snp_plan(
    config: &VmConfig,
    layout: &MemoryLayout,
    snp: &SnpConfig,
    mem: &GuestMemoryMmap,
    kernel: &LoadedKernel,
    linux: Option<&LinuxPayload>,
    cpuid_page: Option<Arc<[u8]>>,
) -> Result<LaunchPlan, SnpLaunchError> {
    let (start, image, entry) = program_image(mem, kernel)?;
    let mut info_page = vec![0u8; PAGE as usize];
    info_page[..BOOT_INFO_SIZE].copy_from_slice(&boot_info(config, layout, snp).to_bytes());
    let acpi = crate::acpi::snp_tables(config.vcpus)?;
    let mut images = vec![
        PlanImage { gpa: BOOT_INFO_START, bytes: info_page.into(), what: "boot info".into() },
        PlanImage { gpa: start, bytes: image.into(), what: "guest program".into() },
        PlanImage { gpa: acpi.rsdp, bytes: acpi.bytes.into(), what: crate::acpi::ACPI_TABLES_WHAT.into() },
    ];
    if let Some(payload) = linux {
        images.extend(linux_images(config, layout, CcPlatform::Snp, payload)?);
    }
    let plan = plan_snp_direct(&SnpDirectOptions {
        images,
        zero: vec![(PAGE_TABLES_START, PAGE_TABLES_LEN, "page tables".into())],
        secrets_gpa: SECRETS_GPA,
        cpuid_gpa: CPUID_GPA,
        cpuid_page,
        entry,
        boot_info: BOOT_INFO_START as u32,
        vcpus: config.vcpus,
        sev_features: SEV_FEATURES,
    })?;
    Ok(plan)
}

/// The CPUID page for `table` (the vCPU's CPUID, as the guest sees it): leaves whose
/// results are all zero are left out so the page's 64 entries suffice.
pub fn cpuid_page(table: &[kvm_cpuid_entry2]) -> Result<Arc<[u8]>, SnpLaunchError> {
    use launch::snp::cpuid_page::{CpuidPage, ZeroLeaves};
    let page =
        CpuidPage::from_kvm_entries(table, ZeroLeaves::Drop).map_err(|e| SnpLaunchError::Cpuid(e.to_string()))?;
    Ok(Arc::from(&page.to_bytes()[..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{KernelSource, TdxConfig, Tee};
    use arch::layout::{E820_RAM, E820_RESERVED};
    use std::io::Cursor;

    /// A bzImage (protocol 2.15, relocatable, 64-bit entry) preferring 16 MiB, with a
    /// protected-mode part of `pm_len` bytes and an `init_size` of 3 MiB.
    fn bzimage(pm_len: usize, relocatable: bool, pref: u64) -> BzImageParts {
        let mut b = vec![0u8; 1024];
        b[0x1f1] = 1;
        b[0x202..0x206].copy_from_slice(b"HdrS");
        b[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
        b[0x211] = 1;
        b[0x22c..0x230].copy_from_slice(&0x7fff_ffffu32.to_le_bytes()); // initrd_addr_max
        b[0x230..0x234].copy_from_slice(&0x20_0000u32.to_le_bytes());
        b[0x234] = u8::from(relocatable);
        b[0x236..0x238].copy_from_slice(&1u16.to_le_bytes());
        b[0x238..0x23c].copy_from_slice(&2047u32.to_le_bytes()); // cmdline_size
        b[0x258..0x260].copy_from_slice(&pref.to_le_bytes());
        b[0x260..0x264].copy_from_slice(&0x30_0000u32.to_le_bytes());
        b.extend((0..pm_len).map(|i| (i % 251) as u8));
        BzImageParts::read(&mut Cursor::new(b)).unwrap().unwrap()
    }

    fn config(tee: Tee) -> VmConfig {
        VmConfig {
            memory: 64 << 20,
            kernel: KernelSource::File("bzImage".into()),
            cmdline: Some("console=ttyS0 quiet".into()),
            tee,
            ..Default::default()
        }
    }

    fn u32_at(b: &[u8], off: usize) -> u32 {
        u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
    }

    fn u64_at(b: &[u8], off: usize) -> u64 {
        u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
    }

    fn image<'a>(images: &'a [PlanImage], what: &str) -> &'a PlanImage {
        images.iter().find(|i| i.what == what).unwrap_or_else(|| panic!("no {what}"))
    }

    /// The e820 table of a zero page: (addr, size, type).
    fn e820_of(zp: &[u8]) -> Vec<(u64, u64, u32)> {
        (0..zp[0x1e8] as usize)
            .map(|i| {
                let o = 0x2d0 + 20 * i;
                (u64_at(zp, o), u64_at(zp, o + 8), u32_at(zp, o + 16))
            })
            .collect()
    }

    fn kind_of(e820: &[(u64, u64, u32)], gpa: u64) -> Option<u32> {
        e820.iter().find(|&&(a, l, _)| a <= gpa && gpa < a + l).map(|e| e.2)
    }

    #[test]
    fn snp_zero_page_points_at_kernel_cmdline_initrd_and_the_cc_blob() {
        let config = config(Tee::Snp(SnpConfig { emulated: true, ..Default::default() }));
        let layout = config.validate().unwrap();
        let payload = LinuxPayload { kernel: bzimage(0x3456, true, 0x100_0000), initrd: Some(vec![0xab; 0x1800]) };
        let images = linux_images(&config, &layout, CcPlatform::Snp, &payload).unwrap();

        let kernel = image(&images, "Linux kernel");
        assert_eq!(kernel.gpa, 0x100_0000);
        assert_eq!(&kernel.bytes[..0x3456], &payload.kernel.protected_mode[..]);
        assert_eq!(kernel.bytes.len(), 0x4000, "padded to pages");
        let initrd = image(&images, "initrd");
        assert_eq!(initrd.gpa, (64 << 20) - 0x2000, "page-aligned at the top of RAM");
        let cmdline = image(&images, "command line");
        assert_eq!(cmdline.gpa, CMDLINE_START);
        let want = format!("{}\0", config.effective_cmdline());
        assert!(want.starts_with("console=ttyS0 quiet"));
        assert!(cmdline.bytes.starts_with(want.as_bytes()));

        let zp = &image(&images, "zero page").bytes;
        assert_eq!(image(&images, "zero page").gpa, ZERO_PAGE_START);
        assert_eq!(&zp[0x202..0x206], b"HdrS");
        assert_eq!(zp[0x210], 0xff, "type_of_loader");
        assert_eq!(u32_at(zp, 0x214), 0x100_0000, "code32_start");
        assert_eq!((u32_at(zp, 0x218), u32_at(zp, 0x21c)), (initrd.gpa as u32, 0x1800), "ramdisk");
        assert_eq!(u64::from(u32_at(zp, 0x228)), CMDLINE_START, "cmd_line_ptr");
        assert_eq!(u64_at(zp, 0x70), 0xe_0000, "acpi_rsdp_addr");
        assert_eq!(kind_of(&e820_of(zp), 0xe_0000), Some(E820_RESERVED), "the ACPI tables are reserved");

        // setup_data chain: one SETUP_CC_BLOB entry whose payload is the blob's address.
        let sd = image(&images, "setup_data");
        assert_eq!(u64_at(zp, 0x250), sd.gpa);
        assert_eq!((u64_at(&sd.bytes, 0), u32_at(&sd.bytes, 8), u32_at(&sd.bytes, 12)), (0, 7, 4));
        let blob = u64::from(u32_at(&sd.bytes, 16));
        assert_eq!(u64::from(u32_at(zp, 0x13c)), blob, "cc_blob_address");
        let b = &sd.bytes[(blob - sd.gpa) as usize..];
        assert_eq!(u32_at(b, 0), 0x4544_4d41);
        assert_eq!((u64_at(b, 8), u32_at(b, 16)), (SECRETS_GPA, 4096));
        assert_eq!((u64_at(b, 24), u32_at(b, 32)), (CPUID_GPA, 4096));

        // e820: the firmware's pages reserved, the kernel, initrd and the rest RAM.
        let e820 = e820_of(zp);
        for gpa in
            [SECRETS_GPA, CPUID_GPA, BOOT_INFO_START, PAGE_TABLES_START, 0x10_0000, 0x20_0000, 0x40_0000, 0x7f_f000]
        {
            assert_eq!(kind_of(&e820, gpa), Some(E820_RESERVED), "{gpa:#x} in {e820:x?}");
        }
        for gpa in [0, ZERO_PAGE_START, CMDLINE_START, 0x80_0000, 0x100_0000, initrd.gpa, (64 << 20) - 1] {
            assert_eq!(kind_of(&e820, gpa), Some(E820_RAM), "{gpa:#x} in {e820:x?}");
        }
        let covered: u64 = e820.iter().map(|e| e.1).sum();
        assert_eq!(covered, 64 << 20);
    }

    #[test]
    fn tdx_zero_page_has_no_cc_blob_and_reserves_the_td_hob() {
        let config = config(Tee::Tdx(TdxConfig::new(true)));
        let layout = config.validate().unwrap();
        let payload = LinuxPayload { kernel: bzimage(0x1000, true, 0x100_0000), initrd: None };
        let images = linux_images(&config, &layout, CcPlatform::Tdx, &payload).unwrap();
        assert!(images.iter().all(|i| i.what != "setup_data" && i.what != "initrd"));
        let zp = &image(&images, "zero page").bytes;
        assert_eq!((u32_at(zp, 0x13c), u64_at(zp, 0x250)), (0, 0));
        assert_eq!((u32_at(zp, 0x218), u32_at(zp, 0x21c)), (0, 0));
        let e820 = e820_of(zp);
        assert_eq!(kind_of(&e820, TD_HOB_GPA), Some(E820_RESERVED));
        assert_eq!(kind_of(&e820, SECRETS_GPA), Some(E820_RAM), "no secrets page in a TD");
    }

    #[test]
    fn a_relocatable_kernel_preferring_low_memory_loads_above_the_firmware() {
        let config = config(Tee::Tdx(TdxConfig::new(true)));
        let layout = config.validate().unwrap();
        let payload = LinuxPayload { kernel: bzimage(0x1000, true, 0x10_0000), initrd: None };
        let images = linux_images(&config, &layout, CcPlatform::Tdx, &payload).unwrap();
        assert_eq!(image(&images, "Linux kernel").gpa, FIRMWARE_RESERVED_END);
    }

    #[test]
    fn kernels_that_cannot_be_placed_are_refused() {
        let config = config(Tee::Snp(SnpConfig { emulated: true, ..Default::default() }));
        let layout = config.validate().unwrap();
        let fixed_low = LinuxPayload { kernel: bzimage(0x1000, false, 0x10_0000), initrd: None };
        let err = linux_images(&config, &layout, CcPlatform::Snp, &fixed_low).unwrap_err();
        assert!(matches!(err, SnpLaunchError::Linux(KernelError::LoadAddress { .. })), "{err}");
        let huge = LinuxPayload { kernel: bzimage(0x1000, true, 0x3f0_0000), initrd: None };
        let err = linux_images(&config, &layout, CcPlatform::Snp, &huge).unwrap_err();
        assert!(matches!(err, SnpLaunchError::KernelTooLarge { .. }), "{err}");
        let big_initrd = LinuxPayload { kernel: bzimage(0x1000, true, 0x100_0000), initrd: Some(vec![0; 60 << 20]) };
        let err = linux_images(&config, &layout, CcPlatform::Snp, &big_initrd).unwrap_err();
        assert!(matches!(err, SnpLaunchError::Linux(KernelError::InitrdTooLarge { .. })), "{err}");
    }
}
