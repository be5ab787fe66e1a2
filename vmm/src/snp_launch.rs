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

use std::sync::Arc;

use arch::abi::{
    BootInfo, VirtioDeviceInfo, BOOT_INFO_MAGIC, BOOT_INFO_SIZE, BOOT_INFO_VERSION, ENTRY32_MARKER, ENTRY32_OFFSET,
    FLAG_CONFIDENTIAL, FLAG_EMULATED_PLATFORM, FLAG_SNP,
};
use arch::layout::{MemoryLayout, BOOT_INFO_START, PAGE_TABLES_START};
use firmware::kernel::LoadedKernel;
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
    #[error("the kernel is not a cvmm guest program with a 32-bit entry (no {:?} marker at entry + 0x38): an SEV-SNP guest boots cvmm's own programs (direct Linux boot under SNP is not done yet)", std::str::from_utf8(&ENTRY32_MARKER).unwrap_or_default())]
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
/// loaded into `mem`: boot info, TD HOB, program, page tables, reset vector; every page
/// added and measured into MRTD.
pub fn tdx_plan(
    config: &VmConfig,
    layout: &MemoryLayout,
    mem: &GuestMemoryMmap,
    kernel: &LoadedKernel,
) -> Result<LaunchPlan, SnpLaunchError> {
    use launch::plan::tdx_direct::{plan_tdx_direct, TdxDirectOptions};
    let (start, image, entry32) = program_image(mem, kernel)?;
    let mut info_page = vec![0u8; PAGE as usize];
    info_page[..BOOT_INFO_SIZE].copy_from_slice(&tdx_boot_info(config, layout).to_bytes());
    // An empty HOB list: cvmm's firmware reads the boot info; the HOB's address only
    // marks the entry as a TD's.
    let hob = vec![0u8; PAGE as usize];
    let acpi = crate::acpi::tdx_tables(config.vcpus)?;
    let mut zero = vec![(PAGE_TABLES_START, PAGE_TABLES_LEN, "page tables".into())];
    zero.extend(crate::acpi::tdx_zero_ranges());
    plan_tdx_direct(&TdxDirectOptions {
        images: vec![
            (BOOT_INFO_START, info_page.into(), "boot info".into()),
            (TD_HOB_GPA, hob.into(), "TD HOB".into()),
            (start, image.into(), "guest program".into()),
            (acpi.rsdp, acpi.bytes.into(), crate::acpi::ACPI_TABLES_WHAT.into()),
        ],
        zero,
        entry32,
        hob: TD_HOB_GPA,
        vcpus: config.vcpus,
    })
    .map_err(|e| SnpLaunchError::Plan(e.into()))
}

/// The SNP launch plan for `config`, whose guest program `kernel` has been loaded into
/// `mem`. `cpuid_page` is the CPUID page a launch uses (`None` when only measuring).
pub fn snp_plan(
    config: &VmConfig,
    layout: &MemoryLayout,
    snp: &SnpConfig,
    mem: &GuestMemoryMmap,
    kernel: &LoadedKernel,
    cpuid_page: Option<Arc<[u8]>>,
) -> Result<LaunchPlan, SnpLaunchError> {
    let (start, image, entry) = program_image(mem, kernel)?;
    let mut info_page = vec![0u8; PAGE as usize];
    info_page[..BOOT_INFO_SIZE].copy_from_slice(&boot_info(config, layout, snp).to_bytes());
    let acpi = crate::acpi::snp_tables(config.vcpus)?;
    let plan = plan_snp_direct(&SnpDirectOptions {
        images: vec![
            PlanImage { gpa: BOOT_INFO_START, bytes: info_page.into(), what: "boot info".into() },
            PlanImage { gpa: start, bytes: image.into(), what: "guest program".into() },
            PlanImage { gpa: acpi.rsdp, bytes: acpi.bytes.into(), what: crate::acpi::ACPI_TABLES_WHAT.into() },
        ],
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
