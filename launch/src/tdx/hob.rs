//! The TD HOB: the hand-off block list a TDX firmware (TDVF, OVMF's IntelTdx build)
//! finds at the address in RCX, in the TDVF metadata's TD_HOB section, telling it
//! which memory exists and which of it is already accepted.
//!
//! # Format (UEFI Platform Initialization specification, volume 3, "HOB Code
//! Definitions"; QEMU's hw/i386/tdvf-hob.c builds the same list)
//!
//! 1. A Phase Handoff Information Table (`EFI_HOB_HANDOFF_INFO_TABLE`, 56 bytes),
//!    version 9, boot mode BOOT_WITH_FULL_CONFIGURATION, the memory top/bottom fields 0
//!    (TDVF ignores them), `EfiEndOfHobList` the address just past the end-of-list HOB
//!    (as QEMU writes it).
//! 2. One resource descriptor (`EFI_HOB_RESOURCE_DESCRIPTOR`, 48 bytes, owner GUID zero)
//!    per piece of RAM, in address order: pieces the launch added to the TD
//!    (TDH.MEM.PAGE.ADD: already accepted) as `EFI_RESOURCE_SYSTEM_MEMORY` with PRESENT |
//!    INITIALIZED | ENCRYPTED | TESTED, the rest as `EFI_RESOURCE_MEMORY_UNACCEPTED`
//!    (PI 1.8) with PRESENT | INITIALIZED, for the firmware to accept; then one
//!    `EFI_RESOURCE_MEMORY_MAPPED_IO` descriptor per MMIO range (PRESENT | INITIALIZED |
//!    UNCACHEABLE).
//! 3. The end-of-list HOB (`EFI_HOB_TYPE_END_OF_HOB_LIST`, 8 bytes).
//!
//! RAM is split the way QEMU splits it (`tdx_accept_ram_range`): each range added at
//! launch cuts the RAM range holding it into unaccepted head, accepted range and
//! unaccepted tail, and adjacent accepted ranges stay separate descriptors, so that for
//! the same memory and firmware the TD HOB is byte for byte QEMU's. That matters: TDVF
//! measures the TD HOB (up to the end-of-list HOB) into `RTMR[0]`.
//!
//! TDVF checks the list before using it (OvmfPkg's `ValidateHobList`): zero reserved
//! header fields, exact lengths, a known boot mode and resource type, no unknown
//! attribute bits; the tests here check the built list against those rules with a walker
//! of their own.
//!
//! The TD HOB goes into the TD_HOB range of the launch plan ([`install`]), which is added
//! without MR.EXTEND: it does not change MRTD.

use std::mem::{offset_of, size_of};
use std::sync::Arc;

use thiserror::Error;

use crate::plan::{Contents, LaunchPlan, PageType, TdxPageType, VcpuState, PAGE_SIZE};
use crate::private_memory::GuestRange;

/// `EFI_HOB_TYPE_HANDOFF`.
pub const HOB_TYPE_HANDOFF: u16 = 0x0001;
/// `EFI_HOB_TYPE_RESOURCE_DESCRIPTOR`.
pub const HOB_TYPE_RESOURCE_DESCRIPTOR: u16 = 0x0003;
/// `EFI_HOB_TYPE_END_OF_HOB_LIST`.
pub const HOB_TYPE_END_OF_HOB_LIST: u16 = 0xffff;
/// `EFI_HOB_HANDOFF_TABLE_VERSION`.
pub const HOB_HANDOFF_TABLE_VERSION: u32 = 0x0009;
/// `BOOT_WITH_FULL_CONFIGURATION` (`EFI_BOOT_MODE`).
pub const BOOT_WITH_FULL_CONFIGURATION: u32 = 0x00;

/// `EFI_RESOURCE_SYSTEM_MEMORY`.
pub const RESOURCE_SYSTEM_MEMORY: u32 = 0x0;
/// `EFI_RESOURCE_MEMORY_MAPPED_IO`.
pub const RESOURCE_MEMORY_MAPPED_IO: u32 = 0x1;
/// `EFI_RESOURCE_MEMORY_UNACCEPTED` (PI 1.8).
pub const RESOURCE_MEMORY_UNACCEPTED: u32 = 0x7;

/// `EFI_RESOURCE_ATTRIBUTE_PRESENT`.
pub const ATTR_PRESENT: u32 = 0x0000_0001;
/// `EFI_RESOURCE_ATTRIBUTE_INITIALIZED`.
pub const ATTR_INITIALIZED: u32 = 0x0000_0002;
/// `EFI_RESOURCE_ATTRIBUTE_TESTED`.
pub const ATTR_TESTED: u32 = 0x0000_0004;
/// `EFI_RESOURCE_ATTRIBUTE_UNCACHEABLE`.
pub const ATTR_UNCACHEABLE: u32 = 0x0000_0400;
/// `EFI_RESOURCE_ATTRIBUTE_ENCRYPTED`.
pub const ATTR_ENCRYPTED: u32 = 0x0400_0000;

/// Attributes of accepted (private) RAM: QEMU's `EFI_RESOURCE_ATTRIBUTE_TDVF_PRIVATE`.
pub const ACCEPTED_ATTRIBUTES: u32 = ATTR_PRESENT | ATTR_INITIALIZED | ATTR_ENCRYPTED | ATTR_TESTED;
/// Attributes of unaccepted RAM: QEMU's `EFI_RESOURCE_ATTRIBUTE_TDVF_UNACCEPTED`.
pub const UNACCEPTED_ATTRIBUTES: u32 = ATTR_PRESENT | ATTR_INITIALIZED;
/// Attributes of MMIO.
pub const MMIO_ATTRIBUTES: u32 = ATTR_PRESENT | ATTR_INITIALIZED | ATTR_UNCACHEABLE;

/// `EFI_HOB_GENERIC_HEADER`:
///
/// ```c
/// typedef struct {
///   UINT16    HobType;
///   UINT16    HobLength;
///   UINT32    Reserved;
/// } EFI_HOB_GENERIC_HEADER;
/// ```
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct HobHeader {
    /// `HobType`.
    pub hob_type: u16,
    /// `HobLength`: the whole HOB's length.
    pub hob_length: u16,
    /// `Reserved`: zero.
    pub reserved: u32,
}

/// `EFI_HOB_HANDOFF_INFO_TABLE` (the PHIT):
///
/// ```c
/// typedef struct {
///   EFI_HOB_GENERIC_HEADER  Header;
///   UINT32                  Version;
///   EFI_BOOT_MODE           BootMode;            // UINT32
///   EFI_PHYSICAL_ADDRESS    EfiMemoryTop;        // UINT64
///   EFI_PHYSICAL_ADDRESS    EfiMemoryBottom;
///   EFI_PHYSICAL_ADDRESS    EfiFreeMemoryTop;
///   EFI_PHYSICAL_ADDRESS    EfiFreeMemoryBottom;
///   EFI_PHYSICAL_ADDRESS    EfiEndOfHobList;
/// } EFI_HOB_HANDOFF_INFO_TABLE;
/// ```
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct HandoffInfoTable {
    /// Type HANDOFF, length 56.
    pub header: HobHeader,
    /// `Version`.
    pub version: u32,
    /// `BootMode`.
    pub boot_mode: u32,
    /// `EfiMemoryTop`.
    pub efi_memory_top: u64,
    /// `EfiMemoryBottom`.
    pub efi_memory_bottom: u64,
    /// `EfiFreeMemoryTop`.
    pub efi_free_memory_top: u64,
    /// `EfiFreeMemoryBottom`.
    pub efi_free_memory_bottom: u64,
    /// `EfiEndOfHobList`.
    pub efi_end_of_hob_list: u64,
}

/// `EFI_HOB_RESOURCE_DESCRIPTOR`:
///
/// ```c
/// typedef struct {
///   EFI_HOB_GENERIC_HEADER         Header;
///   EFI_GUID                       Owner;
///   EFI_RESOURCE_TYPE              ResourceType;       // UINT32
///   EFI_RESOURCE_ATTRIBUTE_TYPE    ResourceAttribute;  // UINT32
///   EFI_PHYSICAL_ADDRESS           PhysicalStart;
///   UINT64                         ResourceLength;
/// } EFI_HOB_RESOURCE_DESCRIPTOR;
/// ```
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ResourceDescriptor {
    /// Type RESOURCE_DESCRIPTOR, length 48.
    pub header: HobHeader,
    /// `Owner` (an `EFI_GUID`, 16 bytes, 4-byte aligned): zero.
    pub owner: [u32; 4],
    /// `ResourceType`.
    pub resource_type: u32,
    /// `ResourceAttribute`.
    pub resource_attribute: u32,
    /// `PhysicalStart`.
    pub physical_start: u64,
    /// `ResourceLength`.
    pub resource_length: u64,
}

/// Little-endian serialization at the fields' `#[repr(C)]` offsets.
fn put(buf: &mut [u8], at: usize, bytes: &[u8]) {
    buf[at..at + bytes.len()].copy_from_slice(bytes);
}

impl HobHeader {
    fn write(&self, buf: &mut [u8]) {
        put(buf, offset_of!(Self, hob_type), &self.hob_type.to_le_bytes());
        put(buf, offset_of!(Self, hob_length), &self.hob_length.to_le_bytes());
        put(buf, offset_of!(Self, reserved), &self.reserved.to_le_bytes());
    }

    /// The header as bytes.
    pub fn to_bytes(&self) -> [u8; size_of::<Self>()] {
        let mut b = [0u8; size_of::<Self>()];
        self.write(&mut b);
        b
    }
}

impl HandoffInfoTable {
    /// The PHIT as bytes.
    pub fn to_bytes(&self) -> [u8; size_of::<Self>()] {
        let mut b = [0u8; size_of::<Self>()];
        self.header.write(&mut b[offset_of!(Self, header)..]);
        put(&mut b, offset_of!(Self, version), &self.version.to_le_bytes());
        put(&mut b, offset_of!(Self, boot_mode), &self.boot_mode.to_le_bytes());
        put(&mut b, offset_of!(Self, efi_memory_top), &self.efi_memory_top.to_le_bytes());
        put(&mut b, offset_of!(Self, efi_memory_bottom), &self.efi_memory_bottom.to_le_bytes());
        put(&mut b, offset_of!(Self, efi_free_memory_top), &self.efi_free_memory_top.to_le_bytes());
        put(&mut b, offset_of!(Self, efi_free_memory_bottom), &self.efi_free_memory_bottom.to_le_bytes());
        put(&mut b, offset_of!(Self, efi_end_of_hob_list), &self.efi_end_of_hob_list.to_le_bytes());
        b
    }
}

impl ResourceDescriptor {
    /// The descriptor as bytes.
    pub fn to_bytes(&self) -> [u8; size_of::<Self>()] {
        let mut b = [0u8; size_of::<Self>()];
        self.header.write(&mut b[offset_of!(Self, header)..]);
        for (i, word) in self.owner.iter().enumerate() {
            put(&mut b, offset_of!(Self, owner) + 4 * i, &word.to_le_bytes());
        }
        put(&mut b, offset_of!(Self, resource_type), &self.resource_type.to_le_bytes());
        put(&mut b, offset_of!(Self, resource_attribute), &self.resource_attribute.to_le_bytes());
        put(&mut b, offset_of!(Self, physical_start), &self.physical_start.to_le_bytes());
        put(&mut b, offset_of!(Self, resource_length), &self.resource_length.to_le_bytes());
        b
    }
}

/// What a resource descriptor describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceKind {
    /// RAM added at launch: private and accepted.
    Accepted,
    /// RAM the firmware must accept.
    Unaccepted,
    /// Memory-mapped I/O.
    Mmio,
}

impl ResourceKind {
    /// The descriptor's resource type and attributes.
    pub fn type_and_attributes(self) -> (u32, u32) {
        match self {
            Self::Accepted => (RESOURCE_SYSTEM_MEMORY, ACCEPTED_ATTRIBUTES),
            Self::Unaccepted => (RESOURCE_MEMORY_UNACCEPTED, UNACCEPTED_ATTRIBUTES),
            Self::Mmio => (RESOURCE_MEMORY_MAPPED_IO, MMIO_ATTRIBUTES),
        }
    }
}

/// One resource descriptor's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resource {
    /// What it is.
    pub kind: ResourceKind,
    /// Start.
    pub gpa: u64,
    /// Length.
    pub len: u64,
}

/// Errors from building or installing a TD HOB.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum HobError {
    /// A RAM, MMIO or accepted range that is empty, unaligned or wraps.
    #[error("{what} range {gpa:#x}+{len:#x} is not a non-empty, page-aligned range that does not wrap")]
    BadRange {
        /// "RAM", "MMIO" or the plan range's name.
        what: String,
        /// Start.
        gpa: u64,
        /// Length.
        len: u64,
    },
    /// Two RAM or MMIO ranges overlap.
    #[error("{a} range at {a_gpa:#x} and {b} range at {b_gpa:#x} overlap")]
    Overlap {
        /// The first range's kind.
        a: &'static str,
        /// Its start.
        a_gpa: u64,
        /// The second range's kind.
        b: &'static str,
        /// Its start.
        b_gpa: u64,
    },
    /// A range added at launch that lies partly in RAM, or across RAM ranges.
    #[error(
        "'{what}' ({gpa:#x}+{len:#x}) is added at launch but does not lie inside one RAM range (the TD HOB would \
         describe it wrongly)"
    )]
    AcceptedOutsideRam {
        /// The plan range.
        what: String,
        /// Start.
        gpa: u64,
        /// Length.
        len: u64,
    },
    /// The list does not fit in the TD_HOB section.
    #[error(
        "the TD HOB needs {needed:#x} bytes ({resources} resource descriptors) but the TD_HOB section has {size:#x}"
    )]
    TooLarge {
        /// Bytes needed.
        needed: u64,
        /// Resource descriptors.
        resources: usize,
        /// The section's size.
        size: u64,
    },
    /// The plan's vCPUs do not give one TD HOB address.
    #[error("the plan's vCPUs do not agree on a TD HOB address (RCX): {0}")]
    Vcpus(String),
    /// No plan range at the TD HOB address.
    #[error("the plan has no range at the TD HOB address {0:#x}")]
    NoHobRange(u64),
    /// The TD HOB range is not added without measurement.
    #[error(
        "the plan's TD HOB range at {gpa:#x} is {page_type:?}: it must be added at launch without MR.EXTEND \
         (AddUnmeasured) so that the VMM-written TD HOB stays out of MRTD"
    )]
    HobRangeType {
        /// Its address.
        gpa: u64,
        /// Its page type.
        page_type: PageType,
    },
}

fn check_range(what: &str, r: &GuestRange) -> Result<u64, HobError> {
    let bad = || HobError::BadRange { what: what.to_owned(), gpa: r.gpa, len: r.len };
    if r.len == 0 || !r.gpa.is_multiple_of(PAGE_SIZE) || !r.len.is_multiple_of(PAGE_SIZE) {
        return Err(bad());
    }
    r.gpa.checked_add(r.len).ok_or_else(bad)
}

/// Checks that `ranges` are well formed and do not overlap each other or `others`.
fn check_disjoint(
    kind: &'static str,
    ranges: &[GuestRange],
    other_kind: &'static str,
    others: &[GuestRange],
) -> Result<(), HobError> {
    for (i, a) in ranges.iter().enumerate() {
        let a_end = check_range(kind, a)?;
        let overlaps = |b: &GuestRange| a.gpa < b.gpa.saturating_add(b.len) && b.gpa < a_end;
        if let Some(b) = ranges[i + 1..].iter().find(|b| overlaps(b)) {
            return Err(HobError::Overlap { a: kind, a_gpa: a.gpa, b: kind, b_gpa: b.gpa });
        }
        if let Some(b) = others.iter().find(|b| overlaps(b)) {
            return Err(HobError::Overlap { a: kind, a_gpa: a.gpa, b: other_kind, b_gpa: b.gpa });
        }
    }
    Ok(())
}

/// The resource descriptors for `ram` with the named ranges of `accepted` (in the order
/// the launch adds them) already accepted, and `mmio`: RAM pieces in address order,
/// then MMIO in address order. An accepted range must lie inside one RAM range (or one
/// piece of it that an earlier accepted range made: QEMU's rule).
pub fn resources(
    ram: &[GuestRange],
    accepted: &[(String, GuestRange)],
    mmio: &[GuestRange],
) -> Result<Vec<Resource>, HobError> {
    check_disjoint("RAM", ram, "MMIO", mmio)?;
    check_disjoint("MMIO", mmio, "RAM", ram)?;
    let mut pieces: Vec<Resource> =
        ram.iter().map(|r| Resource { kind: ResourceKind::Unaccepted, gpa: r.gpa, len: r.len }).collect();
    for (what, a) in accepted {
        let a_end = check_range(what, a)?;
        // The first piece the range overlaps must hold all of it.
        let Some(i) = pieces.iter().position(|p| a.gpa < p.gpa + p.len && p.gpa < a_end) else {
            return Err(HobError::AcceptedOutsideRam { what: what.clone(), gpa: a.gpa, len: a.len });
        };
        let p = pieces[i];
        if p.gpa > a.gpa || p.gpa + p.len < a_end {
            return Err(HobError::AcceptedOutsideRam { what: what.clone(), gpa: a.gpa, len: a.len });
        }
        if p.kind == ResourceKind::Accepted {
            continue;
        }
        pieces[i] = Resource { kind: ResourceKind::Accepted, gpa: a.gpa, len: a.len };
        if a.gpa > p.gpa {
            pieces.push(Resource { kind: ResourceKind::Unaccepted, gpa: p.gpa, len: a.gpa - p.gpa });
        }
        if a_end < p.gpa + p.len {
            pieces.push(Resource { kind: ResourceKind::Unaccepted, gpa: a_end, len: p.gpa + p.len - a_end });
        }
    }
    pieces.sort_by_key(|p| p.gpa);
    let mut io: Vec<Resource> =
        mmio.iter().map(|r| Resource { kind: ResourceKind::Mmio, gpa: r.gpa, len: r.len }).collect();
    io.sort_by_key(|r| r.gpa);
    pieces.extend(io);
    Ok(pieces)
}

/// Size of a TD HOB with `resources` descriptors.
pub fn hob_size(resources: usize) -> u64 {
    (size_of::<HandoffInfoTable>() + resources * size_of::<ResourceDescriptor>() + size_of::<HobHeader>()) as u64
}

/// The TD HOB bytes at `hob_gpa` for `resources` (see the module documentation), refused
/// when longer than `capacity`.
pub fn build(hob_gpa: u64, capacity: u64, resources: &[Resource]) -> Result<Vec<u8>, HobError> {
    let needed = hob_size(resources.len());
    if needed > capacity {
        return Err(HobError::TooLarge { needed, resources: resources.len(), size: capacity });
    }
    let phit = HandoffInfoTable {
        header: HobHeader { hob_type: HOB_TYPE_HANDOFF, hob_length: size_of::<HandoffInfoTable>() as u16, reserved: 0 },
        version: HOB_HANDOFF_TABLE_VERSION,
        boot_mode: BOOT_WITH_FULL_CONFIGURATION,
        efi_end_of_hob_list: hob_gpa + needed,
        ..Default::default()
    };
    let mut bytes = Vec::with_capacity(needed as usize);
    bytes.extend_from_slice(&phit.to_bytes());
    for r in resources {
        let (resource_type, resource_attribute) = r.kind.type_and_attributes();
        let d = ResourceDescriptor {
            header: HobHeader {
                hob_type: HOB_TYPE_RESOURCE_DESCRIPTOR,
                hob_length: size_of::<ResourceDescriptor>() as u16,
                reserved: 0,
            },
            owner: [0; 4],
            resource_type,
            resource_attribute,
            physical_start: r.gpa,
            resource_length: r.len,
        };
        bytes.extend_from_slice(&d.to_bytes());
    }
    let end = HobHeader { hob_type: HOB_TYPE_END_OF_HOB_LIST, hob_length: size_of::<HobHeader>() as u16, reserved: 0 };
    bytes.extend_from_slice(&end.to_bytes());
    Ok(bytes)
}

/// A TD HOB for a launch plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TdHob {
    /// Its address (the TD_HOB range's, every vCPU's RCX).
    pub gpa: u64,
    /// The TD_HOB range's size.
    pub capacity: u64,
    /// What it describes.
    pub resources: Vec<Resource>,
    /// Its bytes.
    pub bytes: Vec<u8>,
}

impl TdHob {
    /// The TD HOB for `plan` with guest RAM `ram` and MMIO `mmio`: at the plan's vCPUs'
    /// RCX, in the plan range there (which must be added without MR.EXTEND), with every
    /// plan range added at launch that lies in RAM as accepted (ranges outside RAM, the
    /// firmware volumes at the top of 4 GiB, are not RAM and not described).
    pub fn for_plan(plan: &LaunchPlan, ram: &[GuestRange], mmio: &[GuestRange]) -> Result<Self, HobError> {
        let gpa = hob_address(plan)?;
        let range = plan.ranges.iter().find(|r| r.gpa == gpa).ok_or(HobError::NoHobRange(gpa))?;
        if range.page_type != PageType::Tdx(TdxPageType::AddUnmeasured) {
            return Err(HobError::HobRangeType { gpa, page_type: range.page_type });
        }
        let in_ram = |g: &GuestRange| ram.iter().any(|r| g.gpa < r.gpa.saturating_add(r.len) && r.gpa < g.gpa + g.len);
        let accepted: Vec<(String, GuestRange)> = plan
            .ranges
            .iter()
            .filter(|r| matches!(r.page_type, PageType::Tdx(TdxPageType::AddMeasured | TdxPageType::AddUnmeasured)))
            .map(|r| (r.what.clone(), GuestRange { gpa: r.gpa, len: r.len }))
            .filter(|(_, g)| g.gpa.checked_add(g.len).is_some() && in_ram(g))
            .collect();
        let resources = resources(ram, &accepted, mmio)?;
        let bytes = build(gpa, range.len, &resources)?;
        Ok(Self { gpa, capacity: range.len, resources, bytes })
    }
}

/// The TD HOB address the plan's vCPUs get in RCX (they must all have the same).
pub fn hob_address(plan: &LaunchPlan) -> Result<u64, HobError> {
    let mut rcx = None;
    for (i, v) in plan.vcpus.iter().enumerate() {
        let VcpuState::Tdx { rcx: r } = v else {
            return Err(HobError::Vcpus(format!("vCPU {i} is not a TDX vCPU")));
        };
        match rcx {
            None => rcx = Some(*r),
            Some(first) if first != *r => {
                return Err(HobError::Vcpus(format!("vCPU {i} has {r:#x}, vCPU 0 {first:#x}")));
            }
            Some(_) => {}
        }
    }
    rcx.ok_or_else(|| HobError::Vcpus("the plan has no vCPU".into()))
}

/// Puts `hob` into its plan range (zero-padded to the range's length). The range is
/// added without MR.EXTEND, so MRTD does not change.
pub fn install(plan: &mut LaunchPlan, hob: &TdHob) -> Result<(), HobError> {
    let range = plan.ranges.iter_mut().find(|r| r.gpa == hob.gpa).ok_or(HobError::NoHobRange(hob.gpa))?;
    if range.page_type != PageType::Tdx(TdxPageType::AddUnmeasured) {
        return Err(HobError::HobRangeType { gpa: hob.gpa, page_type: range.page_type });
    }
    let needed = hob.bytes.len() as u64;
    if needed > range.len {
        return Err(HobError::TooLarge { needed, resources: hob.resources.len(), size: range.len });
    }
    let mut bytes = hob.bytes.clone();
    bytes.resize(range.len as usize, 0);
    range.contents = Contents::Bytes(Arc::from(bytes));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measure::tdx::mrtd;
    use crate::plan::tdx::{plan_tdx, TdxPlanOptions};
    use crate::plan::PlanRange;

    #[test]
    fn hob_structures_have_the_pi_spec_layout() {
        // EFI_HOB_GENERIC_HEADER: UINT16 HobType @0, UINT16 HobLength @2, UINT32 Reserved @4.
        assert_eq!(size_of::<HobHeader>(), 8);
        assert_eq!(
            (offset_of!(HobHeader, hob_type), offset_of!(HobHeader, hob_length), offset_of!(HobHeader, reserved)),
            (0, 2, 4)
        );
        // EFI_HOB_HANDOFF_INFO_TABLE: header, UINT32 Version @8, UINT32 BootMode @12, then
        // five EFI_PHYSICAL_ADDRESS (UINT64) @16, 24, 32, 40, 48: 56 bytes.
        assert_eq!(size_of::<HandoffInfoTable>(), 56);
        assert_eq!(
            (
                offset_of!(HandoffInfoTable, version),
                offset_of!(HandoffInfoTable, boot_mode),
                offset_of!(HandoffInfoTable, efi_memory_top),
                offset_of!(HandoffInfoTable, efi_memory_bottom),
                offset_of!(HandoffInfoTable, efi_free_memory_top),
                offset_of!(HandoffInfoTable, efi_free_memory_bottom),
                offset_of!(HandoffInfoTable, efi_end_of_hob_list),
            ),
            (8, 12, 16, 24, 32, 40, 48)
        );
        // EFI_HOB_RESOURCE_DESCRIPTOR: header, EFI_GUID Owner @8 (16 bytes), UINT32
        // ResourceType @24, UINT32 ResourceAttribute @28, UINT64 PhysicalStart @32,
        // UINT64 ResourceLength @40: 48 bytes.
        assert_eq!(size_of::<ResourceDescriptor>(), 48);
        assert_eq!(
            (
                offset_of!(ResourceDescriptor, owner),
                offset_of!(ResourceDescriptor, resource_type),
                offset_of!(ResourceDescriptor, resource_attribute),
                offset_of!(ResourceDescriptor, physical_start),
                offset_of!(ResourceDescriptor, resource_length),
            ),
            (8, 24, 28, 32, 40)
        );
    }

    #[test]
    fn constants_are_the_pi_specs() {
        assert_eq!((HOB_TYPE_HANDOFF, HOB_TYPE_RESOURCE_DESCRIPTOR, HOB_TYPE_END_OF_HOB_LIST), (1, 3, 0xffff));
        assert_eq!((RESOURCE_SYSTEM_MEMORY, RESOURCE_MEMORY_MAPPED_IO, RESOURCE_MEMORY_UNACCEPTED), (0, 1, 7));
        // QEMU's EFI_RESOURCE_ATTRIBUTE_TDVF_PRIVATE and _TDVF_UNACCEPTED values.
        assert_eq!((ACCEPTED_ATTRIBUTES, UNACCEPTED_ATTRIBUTES), (0x0400_0007, 0x3));
    }

    /// A resource descriptor as the walker reads it: type, attributes, start, length.
    type Walked = (u32, u32, u64, u64);

    /// A HOB list walker written from the PI specification's offsets and TDVF's
    /// `ValidateHobList` rules, independent of the builder: returns (end of list address
    /// from the PHIT, resources as (type, attributes, start, length)), or what is wrong.
    fn walk(bytes: &[u8]) -> Result<(u64, Vec<Walked>), String> {
        let u16_at = |at: usize| u16::from_le_bytes([bytes[at], bytes[at + 1]]);
        let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
        let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap());
        let mut at = 0;
        let mut end_of_list = None;
        let mut resources = Vec::new();
        loop {
            if at + 8 > bytes.len() {
                return Err(format!("no end-of-list HOB before {at:#x}"));
            }
            let (hob_type, len) = (u16_at(at), u16_at(at + 2) as usize);
            if u32_at(at + 4) != 0 {
                return Err(format!("HOB at {at:#x}: reserved header field is not zero"));
            }
            if len == 0 {
                return Err(format!("HOB at {at:#x}: zero length"));
            }
            match hob_type {
                0xffff => return end_of_list.map(|e| (e, resources)).ok_or("no PHIT".into()),
                0x0001 => {
                    if len != 56 || at != 0 {
                        return Err(format!("PHIT at {at:#x} of length {len}"));
                    }
                    if u32_at(at + 8) < 9 {
                        return Err("PHIT version below 9".into());
                    }
                    // BOOT_WITH_FULL_CONFIGURATION .. BOOT_IN_RECOVERY_MODE, as TDVF lists them.
                    if !matches!(u32_at(at + 12), 0x00..=0x06 | 0x10..=0x12 | 0x20) {
                        return Err("unknown boot mode".into());
                    }
                    if u64_at(at + 32) % 4096 != 0 {
                        return Err("EfiFreeMemoryTop is not 4 KiB aligned".into());
                    }
                    end_of_list = Some(u64_at(at + 48));
                }
                0x0003 => {
                    if len != 48 {
                        return Err(format!("resource descriptor at {at:#x} of length {len}"));
                    }
                    let (ty, attr) = (u32_at(at + 24), u32_at(at + 28));
                    if ty > 7 {
                        return Err(format!("resource type {ty}"));
                    }
                    // Every EFI_RESOURCE_ATTRIBUTE_* TDVF knows (PRESENT .. SPECIAL_PURPOSE).
                    if attr & !0x07ff_ffff != 0 {
                        return Err(format!("unknown attribute bits in {attr:#x}"));
                    }
                    if bytes[at + 8..at + 24].iter().any(|&b| b != 0) {
                        return Err("owner GUID is not zero".into());
                    }
                    resources.push((ty, attr, u64_at(at + 32), u64_at(at + 40)));
                }
                other => return Err(format!("HOB type {other:#x} is not expected in a TD HOB")),
            }
            at += len;
        }
    }

    fn g(gpa: u64, len: u64) -> GuestRange {
        GuestRange { gpa, len }
    }

    fn named(what: &str, gpa: u64, len: u64) -> (String, GuestRange) {
        (what.to_owned(), g(gpa, len))
    }

    #[test]
    fn a_built_list_passes_tdvf_validation_and_describes_the_memory() {
        let ram = [g(0, 0x8000_0000), g(0x1_0000_0000, 0x4000_0000)];
        let accepted = [named("TD_HOB", 0x80_9000, 0x2000), named("TempMem", 0x80_0000, 0x6000)];
        let mmio = [g(0xfec0_0000, 0x1000), g(0xe000_0000, 0x1000_0000)];

        let res = resources(&ram, &accepted, &mmio).unwrap();
        let bytes = build(0x80_9000, 0x2000, &res).unwrap();

        let (end, got) = walk(&bytes).unwrap();
        assert_eq!(end, 0x80_9000 + bytes.len() as u64, "just past the end-of-list HOB, as QEMU writes it");
        assert_eq!(bytes.len(), 56 + 8 * 48 + 8);
        let u = (7, 0x3);
        let a = (0, 0x0400_0007);
        let io = (1, 0x403);
        let expected = [
            (u, 0, 0x80_0000),
            (a, 0x80_0000, 0x6000),
            (u, 0x80_6000, 0x3000),
            (a, 0x80_9000, 0x2000),
            (u, 0x80_b000, 0x8000_0000 - 0x80_b000),
            (u, 0x1_0000_0000, 0x4000_0000),
            (io, 0xe000_0000, 0x1000_0000),
            (io, 0xfec0_0000, 0x1000),
        ];
        let expected: Vec<_> = expected.iter().map(|&((t, at), s, l)| (t, at, s, l)).collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn adjacent_accepted_ranges_stay_separate_as_in_qemu() {
        // Debian OVMF's sections: TempMem 0x810000+0x10000, TempMem 0x80b000+0x2000, TD_HOB
        // 0x809000+0x2000, TempMem 0x800000+0x6000 (in that order).
        let accepted = [
            named("a", 0x81_0000, 0x1_0000),
            named("b", 0x80_b000, 0x2000),
            named("hob", 0x80_9000, 0x2000),
            named("c", 0x80_0000, 0x6000),
        ];

        let res = resources(&[g(0, 0x1000_0000)], &accepted, &[]).unwrap();

        let got: Vec<_> = res.iter().map(|r| (r.kind == ResourceKind::Accepted, r.gpa, r.len)).collect();
        assert_eq!(
            got,
            [
                (false, 0, 0x80_0000),
                (true, 0x80_0000, 0x6000),
                (false, 0x80_6000, 0x3000),
                (true, 0x80_9000, 0x2000),
                (true, 0x80_b000, 0x2000),
                (false, 0x80_d000, 0x3000),
                (true, 0x81_0000, 0x1_0000),
                (false, 0x82_0000, 0x1000_0000 - 0x82_0000),
            ]
        );
    }

    #[test]
    fn bad_or_overlapping_ranges_are_refused() {
        let ram = [g(0, 0x10_0000)];
        assert!(matches!(resources(&[g(0, 0)], &[], &[]), Err(HobError::BadRange { .. })));
        assert!(matches!(resources(&[g(0x800, 0x1000)], &[], &[]), Err(HobError::BadRange { .. })));
        assert!(matches!(resources(&[g(!0xfff, 0x2000)], &[], &[]), Err(HobError::BadRange { .. })));
        assert_eq!(
            resources(&[g(0, 0x2000), g(0x1000, 0x2000)], &[], &[]),
            Err(HobError::Overlap { a: "RAM", a_gpa: 0, b: "RAM", b_gpa: 0x1000 })
        );
        assert_eq!(
            resources(&ram, &[], &[g(0xf_f000, 0x2000)]),
            Err(HobError::Overlap { a: "RAM", a_gpa: 0, b: "MMIO", b_gpa: 0xf_f000 })
        );
        let straddling = resources(&ram, &[named("TempMem", 0xf_f000, 0x2000)], &[]).unwrap_err();
        assert!(matches!(straddling, HobError::AcceptedOutsideRam { .. }), "{straddling}");
        assert!(straddling.to_string().starts_with("'TempMem' (0xff000+0x2000) is added at launch"));
        assert!(matches!(
            resources(&ram, &[named("x", 0x20_0000, 0x1000)], &[]),
            Err(HobError::AcceptedOutsideRam { .. })
        ));
    }

    #[test]
    fn a_list_larger_than_the_section_is_refused() {
        let res = vec![Resource { kind: ResourceKind::Unaccepted, gpa: 0, len: 0x1000 }; 85];

        let err = build(0x80_9000, 0x1000, &res).unwrap_err();

        // 56 + 85 * 48 + 8 = 4144 > 4096.
        assert_eq!(err, HobError::TooLarge { needed: 4144, resources: 85, size: 0x1000 });
        assert!(build(0x80_9000, 0x1000, &res[..84]).is_ok());
    }

    fn tdx_range(gpa: u64, len: u64, t: TdxPageType, what: &str) -> PlanRange {
        PlanRange { gpa, len, page_type: PageType::Tdx(t), contents: Contents::Zero, what: what.into() }
    }

    fn small_plan() -> LaunchPlan {
        LaunchPlan {
            ranges: vec![
                tdx_range(0xffff_0000, 0x1_0000, TdxPageType::AddMeasured, "BFV"),
                tdx_range(0x80_9000, 0x2000, TdxPageType::AddUnmeasured, "TD_HOB"),
                tdx_range(0x80_0000, 0x6000, TdxPageType::AddUnmeasured, "TempMem"),
                tdx_range(0x100_0000, 0x10_0000, TdxPageType::Aug, "PermMem"),
            ],
            vcpus: vec![VcpuState::Tdx { rcx: 0x80_9000 }; 2],
        }
    }

    #[test]
    fn a_plan_gets_its_hob_at_rcx_with_launch_added_ram_accepted() {
        let mut plan = small_plan();
        let before = mrtd(&plan).unwrap();

        let hob = TdHob::for_plan(&plan, &[g(0, 0x8000_0000)], &[]).unwrap();
        install(&mut plan, &hob).unwrap();

        assert_eq!(hob.gpa, 0x80_9000);
        let accepted: Vec<_> =
            hob.resources.iter().filter(|r| r.kind == ResourceKind::Accepted).map(|r| (r.gpa, r.len)).collect();
        assert_eq!(accepted, [(0x80_0000, 0x6000), (0x80_9000, 0x2000)], "the BFV is not RAM, PermMem is AUG");
        let Contents::Bytes(b) = &plan.ranges[1].contents else { panic!("the TD HOB is installed") };
        assert_eq!((&b[..hob.bytes.len()], b.len()), (&hob.bytes[..], 0x2000));
        assert!(b[hob.bytes.len()..].iter().all(|&x| x == 0));
        assert_eq!(mrtd(&plan).unwrap(), before, "the TD HOB is not measured");
        assert!(walk(&hob.bytes).is_ok());
    }

    #[test]
    fn plans_without_a_usable_hob_range_are_refused() {
        let mut no_vcpus = small_plan();
        no_vcpus.vcpus.clear();
        let mut disagree = small_plan();
        disagree.vcpus[1] = VcpuState::Tdx { rcx: 0x80_0000 };
        let mut elsewhere = small_plan();
        elsewhere.vcpus = vec![VcpuState::Tdx { rcx: 0x90_0000 }];
        let mut measured = small_plan();
        measured.ranges[1].page_type = PageType::Tdx(TdxPageType::AddMeasured);
        let ram = [g(0, 0x8000_0000)];

        assert!(matches!(TdHob::for_plan(&no_vcpus, &ram, &[]), Err(HobError::Vcpus(_))));
        let err = TdHob::for_plan(&disagree, &ram, &[]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the plan's vCPUs do not agree on a TD HOB address (RCX): vCPU 1 has 0x800000, vCPU 0 0x809000"
        );
        assert_eq!(TdHob::for_plan(&elsewhere, &ram, &[]), Err(HobError::NoHobRange(0x90_0000)));
        assert!(matches!(TdHob::for_plan(&measured, &ram, &[]), Err(HobError::HobRangeType { .. })));
        assert!(matches!(
            TdHob::for_plan(&small_plan(), &[g(0, 0x80_2000)], &[]),
            Err(HobError::AcceptedOutsideRam { .. })
        ));
    }

    #[test]
    fn debian_ovmf_gets_qemus_td_hob() {
        // Arrange: Debian's OVMF.fd, 2 GiB of RAM below 4 GiB, as QEMU's pc machine with
        // -m 2G gives a TD (its e820 RAM: one range from 0).
        let img = std::fs::read("/usr/share/ovmf/OVMF.fd")
            .expect("/usr/share/ovmf/OVMF.fd is missing: apt-get install ovmf (scripts/test.sh does)");
        let mut plan = plan_tdx(&TdxPlanOptions { firmware: &img, vcpus: 1 }).unwrap();
        // Act
        let hob = TdHob::for_plan(&plan, &[g(0, 0x8000_0000)], &[]).unwrap();
        install(&mut plan, &hob).unwrap();
        // Assert: QEMU's list for this image: the TempMem and TD_HOB sections accepted,
        // each its own descriptor, the gaps unaccepted.
        let (end, got) = walk(&hob.bytes).unwrap();
        let (a, u) = ((0, 0x0400_0007), (7, 0x3));
        let expected: Vec<(u32, u32, u64, u64)> = [
            (u, 0, 0x80_0000),
            (a, 0x80_0000, 0x6000),
            (u, 0x80_6000, 0x3000),
            (a, 0x80_9000, 0x2000),
            (a, 0x80_b000, 0x2000),
            (u, 0x80_d000, 0x3000),
            (a, 0x81_0000, 0x1_0000),
            (u, 0x82_0000, 0x8000_0000 - 0x82_0000),
        ]
        .iter()
        .map(|&((t, at), s, l)| (t, at, s, l))
        .collect();
        assert_eq!(got, expected);
        assert_eq!(end, 0x80_9000 + 56 + 8 * 48 + 8);
    }
}
