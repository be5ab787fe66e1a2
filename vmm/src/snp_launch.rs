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
        ..Default::default()
    };
    let slots = config.virtio_devices();
    for (entry, slot) in info.virtio.iter_mut().zip(&slots) {
        *entry = VirtioDeviceInfo { base: slot.base, device_id: slot.kind.device_id(), gsi: slot.gsi };
    }
    info.virtio_count = slots.len().min(arch::abi::MAX_VIRTIO_DEVICES) as u32;
    info
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

    let mut info_page = vec![0u8; PAGE as usize];
    info_page[..BOOT_INFO_SIZE].copy_from_slice(&boot_info(config, layout, snp).to_bytes());
    let plan = plan_snp_direct(&SnpDirectOptions {
        images: vec![
            PlanImage { gpa: BOOT_INFO_START, bytes: info_page.into(), what: "boot info".into() },
            PlanImage { gpa: start, bytes: image.into(), what: "guest program".into() },
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

/// The CPUID page (SNP firmware ABI layout: count, then 48-byte entries) for `table`.
pub fn cpuid_page(table: &[kvm_cpuid_entry2]) -> Arc<[u8]> {
    const MAX_ENTRIES: usize = 64;
    let mut page = vec![0u8; PAGE as usize];
    // Leaf 0x8000001F first: it must be in the page even if the table is long.
    let mut entries: Vec<&kvm_cpuid_entry2> = table.iter().filter(|e| e.function == 0x8000_001f).collect();
    entries.extend(table.iter().filter(|e| e.function != 0x8000_001f));
    entries.truncate(MAX_ENTRIES);
    page[0..4].copy_from_slice(&(entries.len() as u32).to_le_bytes());
    for (i, e) in entries.iter().enumerate() {
        let o = 16 + 48 * i;
        page[o..o + 4].copy_from_slice(&e.function.to_le_bytes());
        page[o + 4..o + 8].copy_from_slice(&e.index.to_le_bytes());
        page[o + 24..o + 28].copy_from_slice(&e.eax.to_le_bytes());
        page[o + 28..o + 32].copy_from_slice(&e.ebx.to_le_bytes());
        page[o + 32..o + 36].copy_from_slice(&e.ecx.to_le_bytes());
        page[o + 36..o + 40].copy_from_slice(&e.edx.to_le_bytes());
    }
    page.into()
}
