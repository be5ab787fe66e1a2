//! The SEV-SNP CPUID page: the table of CPUID results the guest trusts instead of the
//! hypervisor's, built from a KVM CPUID table, its byte layout, and the check the PSP
//! makes of it at SNP_LAUNCH_UPDATE (with the corrected page the firmware writes back).
//!
//! Layout (SEV-SNP firmware ABI, AMD 56860, "CPUID Reporting"; Linux
//! `arch/x86/include/asm/sev.h` `struct snp_cpuid_table`, QEMU `target/i386/sev.c`
//! `SnpCpuidInfo`): COUNT (u32), two reserved fields (u32, u64), then up to 64 entries
//! of 48 bytes: EAX_IN, ECX_IN (u32), XCR0_IN, XSS_IN (u64), EAX, EBX, ECX, EDX (u32),
//! reserved (u64). The page is 4096 bytes; the bytes after the 64th entry are unused.
//!
//! # The firmware's check
//!
//! Implemented after AMD's SEV firmware source (AMD-ASPFW, Genoa SEV firmware 1.55.25,
//! `cpuid_lookup.c`: `sanitize_cpuid_list`, `sanitize_cpuid_entry` and the `lookup_table`
//! of the PPR's "CPUID Policy Enforcement" rules), with the platform's values taken
//! from a [`CpuidPlatform`] instead of the fixed per-product values the firmware has:
//!
//! - The header's reserved fields must be zero and COUNT at most 64 (INVALID_PARAM,
//!   nothing written back).
//! - Entries whose EAX_IN is outside 0x0..=0xFFFF and 0x8000_0000..=0x8000_FFFF (the
//!   hypervisor range 0x4000_0000.. included) are not checked.
//! - Each checked entry's reserved field must be zero.
//! - A (leaf, subleaf) the rule table lists is checked register by register, each
//!   register or bit field by one rule: *mask* (only bits the platform has), *exact*
//!   (the platform's value), *less-or-equal* (at most the platform's value), *zero*,
//!   *ones*, or *unchecked*; leaves 0x1, 0x7.0, 0xD.0, 0xD.1, 0x8000_0001,
//!   0x8000_0008, 0x8000_001F and 0x8000_0022 have the firmware's per-field rules
//!   (see [`RULES`]). XSAVE area sizes (0xD.0 and 0xD.1 EBX) must equal the size for
//!   the entry's XCR0_IN (and XSS_IN), computed from the platform's 0xD subleaves.
//! - Any other (leaf, subleaf) in those ranges must read all zero.
//!
//! On failure the firmware writes the page back with every failing register replaced
//! by what it allows; [`CpuidPage::check`] returns that page and the list of
//! differences, and [`CpuidPage::mismatches`] lists the differences between a submitted
//! page and the one KVM copies back after a real SNP_LAUNCH_UPDATE failure.
//!
//! Not implemented: the per-product reserved-bit masks of the firmware's table (they
//! only matter for registers whose rule is *unchecked* or *less-or-equal*; for *mask*
//! and *exact* rules the platform's value already excludes them), and the firmware's
//! quirks (it compares family/model/stepping with a model of `ext + base` instead of
//! `ext << 4 | base`, and leaves a non-zero entry reserved field in the page it writes
//! back; here the written-back page has it zero). The rules come from one firmware
//! version for one product (Genoa); other firmware may differ.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use kvm_bindings::{kvm_cpuid_entry2, KVM_CPUID_FLAG_SIGNIFCANT_INDEX};
use thiserror::Error;

use crate::bytes::{le_u32, le_u64};

/// Size of the CPUID page.
pub const CPUID_PAGE_SIZE: usize = 4096;
/// Most entries a CPUID page holds.
pub const CPUID_COUNT_MAX: usize = 64;
/// Size of one entry.
pub const CPUID_ENTRY_SIZE: usize = 48;
/// Size of the header before the entries.
const HEADER_SIZE: usize = 16;
// 64 entries end at 16 + 64 * 48 = 0xc10, inside the page.
const _: () = assert!(HEADER_SIZE + CPUID_COUNT_MAX * CPUID_ENTRY_SIZE <= CPUID_PAGE_SIZE);

/// Firmware status INVALID_PARAM.
const STATUS_INVALID_PARAM: u32 = 0x16;

/// XSAVE legacy area and header: the size with only x87 and SSE state.
const XSAVE_LEGACY_SIZE: u32 = 0x240;

/// Errors about a CPUID page, including the firmware's rejection of one.
#[derive(Debug, Error)]
pub enum CpuidPageError {
    /// More entries than the page holds.
    #[error(
        "the SNP CPUID page holds at most {CPUID_COUNT_MAX} entries, the CPUID table has {count}: give the guest \
         fewer CPUID leaves"
    )]
    TooManyEntries {
        /// The number of entries.
        count: usize,
    },
    /// The bytes are not a page.
    #[error("an SNP CPUID page is {CPUID_PAGE_SIZE} bytes, got {len}")]
    Length {
        /// Their length.
        len: usize,
    },
    /// The header's reserved fields are not zero.
    #[error("SNP CPUID page header reserved fields are not zero ({reserved1:#x}, {reserved2:#x})")]
    ReservedHeader {
        /// The u32 after COUNT.
        reserved1: u32,
        /// The u64 after that.
        reserved2: u64,
    },
    /// The firmware rejects the page.
    #[error("the SNP firmware rejects the CPUID page (INVALID_PARAM): {}", list(.mismatches))]
    Rejected {
        /// The page the firmware writes back: each failing value replaced by what it allows.
        corrected: Box<CpuidPage>,
        /// What differs between the page and the corrected one.
        mismatches: Vec<CpuidMismatch>,
    },
}

impl CpuidPageError {
    /// The status SNP_LAUNCH_UPDATE returns for this page (INVALID_PARAM), `None` for a
    /// table that does not fit a page.
    pub fn fw_status(&self) -> Option<u32> {
        match self {
            Self::ReservedHeader { .. } | Self::Rejected { .. } => Some(STATUS_INVALID_PARAM),
            Self::TooManyEntries { .. } | Self::Length { .. } => None,
        }
    }
}

fn list(mismatches: &[CpuidMismatch]) -> String {
    mismatches.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

/// One entry of the CPUID page.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuidFunction {
    /// EAX_IN: the leaf.
    pub eax_in: u32,
    /// ECX_IN: the subleaf (0 for leaves without subleaves).
    pub ecx_in: u32,
    /// XCR0_IN: the XCR0 value the results hold for (XSAVE leaves).
    pub xcr0_in: u64,
    /// XSS_IN: the IA32_XSS value the results hold for (XSAVE leaves).
    pub xss_in: u64,
    /// EAX result.
    pub eax: u32,
    /// EBX result.
    pub ebx: u32,
    /// ECX result.
    pub ecx: u32,
    /// EDX result.
    pub edx: u32,
    /// Reserved, must be zero.
    pub reserved: u64,
}

impl CpuidFunction {
    fn regs(&self) -> [u32; 4] {
        [self.eax, self.ebx, self.ecx, self.edx]
    }

    fn set_regs(&mut self, r: [u32; 4]) {
        [self.eax, self.ebx, self.ecx, self.edx] = r;
    }

    fn to_bytes(self) -> [u8; CPUID_ENTRY_SIZE] {
        let mut b = [0u8; CPUID_ENTRY_SIZE];
        b[0..4].copy_from_slice(&self.eax_in.to_le_bytes());
        b[4..8].copy_from_slice(&self.ecx_in.to_le_bytes());
        b[8..16].copy_from_slice(&self.xcr0_in.to_le_bytes());
        b[16..24].copy_from_slice(&self.xss_in.to_le_bytes());
        b[24..28].copy_from_slice(&self.eax.to_le_bytes());
        b[28..32].copy_from_slice(&self.ebx.to_le_bytes());
        b[32..36].copy_from_slice(&self.ecx.to_le_bytes());
        b[36..40].copy_from_slice(&self.edx.to_le_bytes());
        b[40..48].copy_from_slice(&self.reserved.to_le_bytes());
        b
    }

    fn from_bytes(b: &[u8]) -> Self {
        Self {
            eax_in: le_u32(b, 0),
            ecx_in: le_u32(b, 4),
            xcr0_in: le_u64(b, 8),
            xss_in: le_u64(b, 16),
            eax: le_u32(b, 24),
            ebx: le_u32(b, 28),
            ecx: le_u32(b, 32),
            edx: le_u32(b, 36),
            reserved: le_u64(b, 40),
        }
    }
}

/// Whether [`CpuidPage::from_kvm_entries`] keeps leaves whose results are all zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZeroLeaves {
    /// Keep every entry, as QEMU does.
    Keep,
    /// Leave out entries whose four results are zero. Linux guests read a leaf missing
    /// from the table but inside its range (up to the range's maximum leaf) as zero
    /// (`snp_cpuid` in Linux `arch/x86/boot/startup/sev-shared.c`: "Some hypervisors
    /// will avoid keeping track of CPUID entries where all values are zero"); this
    /// fits KVM's tables of more than 64 entries into the page.
    Drop,
}

/// A register of a CPUID entry, or its reserved field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuidRegister {
    /// EAX.
    Eax,
    /// EBX.
    Ebx,
    /// ECX.
    Ecx,
    /// EDX.
    Edx,
    /// The entry's reserved u64.
    Reserved,
}

impl CpuidRegister {
    const REGS: [CpuidRegister; 4] = [Self::Eax, Self::Ebx, Self::Ecx, Self::Edx];
}

impl fmt::Display for CpuidRegister {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Eax => "eax",
            Self::Ebx => "ebx",
            Self::Ecx => "ecx",
            Self::Edx => "edx",
            Self::Reserved => "reserved field",
        })
    }
}

/// A value of the CPUID page the firmware does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuidMismatch {
    /// Index of the entry in the page.
    pub index: usize,
    /// Its leaf (EAX_IN).
    pub leaf: u32,
    /// Its subleaf (ECX_IN).
    pub subleaf: u32,
    /// The register.
    pub register: CpuidRegister,
    /// The value given.
    pub given: u64,
    /// The value the firmware writes back.
    pub allowed: u64,
}

impl fmt::Display for CpuidMismatch {
    /// `leaf 0x7 subleaf 0: ebx 0x1 given, firmware allows 0x0 (bits 0x1 differ)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "leaf {:#x} subleaf {}: {} {:#x} given, firmware allows {:#x} (bits {:#x} differ)",
            self.leaf,
            self.subleaf,
            self.register,
            self.given,
            self.allowed,
            self.given ^ self.allowed
        )
    }
}

/// The SNP CPUID page: at most [`CPUID_COUNT_MAX`] entries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CpuidPage {
    entries: Vec<CpuidFunction>,
}

impl CpuidPage {
    /// A page with these entries.
    pub fn new(entries: Vec<CpuidFunction>) -> Result<Self, CpuidPageError> {
        if entries.len() > CPUID_COUNT_MAX {
            return Err(CpuidPageError::TooManyEntries { count: entries.len() });
        }
        Ok(Self { entries })
    }

    /// Builds the page from a KVM CPUID table (`KVM_GET_SUPPORTED_CPUID` as cvmm
    /// filters it for a vCPU) the way QEMU does (`sev_snp_cpuid_info_fill`): one entry
    /// per KVM entry in order, ECX_IN the subleaf for leaves with
    /// `KVM_CPUID_FLAG_SIGNIFCANT_INDEX` (0 otherwise), and for XSAVE leaves 0xD
    /// subleaves 0 and 1 the results for XCR0 = 1 (x87 only): XCR0_IN 1, XSS_IN 0 and
    /// EBX 0x240, the guest computing larger sizes itself from the other 0xD subleaves.
    pub fn from_kvm_entries(entries: &[kvm_cpuid_entry2], zero_leaves: ZeroLeaves) -> Result<Self, CpuidPageError> {
        let mut out = Vec::with_capacity(entries.len());
        for e in entries {
            let mut f = CpuidFunction {
                eax_in: e.function,
                ecx_in: if e.flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX != 0 { e.index } else { 0 },
                eax: e.eax,
                ebx: e.ebx,
                ecx: e.ecx,
                edx: e.edx,
                ..Default::default()
            };
            if f.eax_in == 0xd && (f.ecx_in == 0 || f.ecx_in == 1) {
                f.ebx = XSAVE_LEGACY_SIZE;
                f.xcr0_in = 1;
                f.xss_in = 0;
            }
            if zero_leaves == ZeroLeaves::Drop && f.regs() == [0; 4] {
                continue;
            }
            out.push(f);
        }
        Self::new(out)
    }

    /// The entries.
    pub fn entries(&self) -> &[CpuidFunction] {
        &self.entries
    }

    /// The first entry for this leaf and subleaf.
    pub fn get(&self, leaf: u32, subleaf: u32) -> Option<&CpuidFunction> {
        self.entries.iter().find(|e| e.eax_in == leaf && e.ecx_in == subleaf)
    }

    /// The first entry for this leaf and subleaf, to change.
    pub fn get_mut(&mut self, leaf: u32, subleaf: u32) -> Option<&mut CpuidFunction> {
        self.entries.iter_mut().find(|e| e.eax_in == leaf && e.ecx_in == subleaf)
    }

    /// The 4096-byte page.
    pub fn to_bytes(&self) -> Box<[u8; CPUID_PAGE_SIZE]> {
        let mut b = Box::new([0u8; CPUID_PAGE_SIZE]);
        // The constructor keeps at most 64 entries.
        b[0..4].copy_from_slice(&(self.entries.len() as u32).to_le_bytes());
        for (i, e) in self.entries.iter().enumerate() {
            let off = HEADER_SIZE + i * CPUID_ENTRY_SIZE;
            b[off..off + CPUID_ENTRY_SIZE].copy_from_slice(&e.to_bytes());
        }
        b
    }

    /// Parses a 4096-byte page: COUNT at most 64, reserved header fields zero (as the
    /// firmware requires). Entries past COUNT are ignored.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CpuidPageError> {
        if bytes.len() != CPUID_PAGE_SIZE {
            return Err(CpuidPageError::Length { len: bytes.len() });
        }
        let header = CpuidFunction::from_bytes(&bytes[..CPUID_ENTRY_SIZE]);
        // COUNT, reserved u32 and reserved u64 are where EAX_IN, ECX_IN and XCR0_IN are.
        let (count, reserved1, reserved2) = (header.eax_in as usize, header.ecx_in, header.xcr0_in);
        if count > CPUID_COUNT_MAX {
            return Err(CpuidPageError::TooManyEntries { count });
        }
        if reserved1 != 0 || reserved2 != 0 {
            return Err(CpuidPageError::ReservedHeader { reserved1, reserved2 });
        }
        let entries = (0..count)
            .map(|i| {
                let off = HEADER_SIZE + i * CPUID_ENTRY_SIZE;
                CpuidFunction::from_bytes(&bytes[off..off + CPUID_ENTRY_SIZE])
            })
            .collect();
        Ok(Self { entries })
    }

    /// The firmware's check against `platform`: the page the firmware would write back
    /// (equal to `self` when the page is accepted) and what differs.
    pub fn check(&self, platform: &CpuidPlatform) -> CpuidCheck {
        let mut corrected = self.clone();
        let mut mismatches = Vec::new();
        for (index, (given, fixed)) in self.entries.iter().zip(corrected.entries.iter_mut()).enumerate() {
            if !checked_range(given.eax_in) {
                continue;
            }
            fixed.reserved = 0;
            let rule = RULES.iter().find(|r| r.leaf == given.eax_in && r.subleaf == given.ecx_in);
            let allowed = match rule {
                Some(rule) => {
                    let plat = platform.get(given.eax_in, given.ecx_in);
                    let mut regs = given.regs();
                    for ((reg, r), p) in regs.iter_mut().zip(rule.regs.iter()).zip(plat) {
                        *reg = r.apply(*reg, p, given, platform);
                    }
                    regs
                }
                None => [0; 4],
            };
            fixed.set_regs(allowed);
            mismatches.extend(entry_mismatches(index, given, fixed));
        }
        CpuidCheck { corrected, mismatches }
    }

    /// [`check`](Self::check) as a result: `Ok` if the firmware accepts the page,
    /// otherwise [`CpuidPageError::Rejected`] with the corrected page and the differences.
    pub fn validate(&self, platform: &CpuidPlatform) -> Result<(), CpuidPageError> {
        let check = self.check(platform);
        if check.mismatches.is_empty() {
            Ok(())
        } else {
            Err(CpuidPageError::Rejected { corrected: Box::new(check.corrected), mismatches: check.mismatches })
        }
    }

    /// What differs between this (submitted) page and `returned`, the page the firmware
    /// wrote back: for the real SNP_LAUNCH_UPDATE, after which KVM copies the
    /// firmware's corrected page into the submitted buffer on failure.
    pub fn mismatches(&self, returned: &CpuidPage) -> Vec<CpuidMismatch> {
        self.entries
            .iter()
            .zip(returned.entries.iter())
            .enumerate()
            .flat_map(|(index, (given, allowed))| entry_mismatches(index, given, allowed))
            .collect()
    }
}

/// The outcome of [`CpuidPage::check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuidCheck {
    /// The page the firmware writes back.
    pub corrected: CpuidPage,
    /// What differs; empty if the firmware accepts the page.
    pub mismatches: Vec<CpuidMismatch>,
}

fn entry_mismatches(index: usize, given: &CpuidFunction, allowed: &CpuidFunction) -> Vec<CpuidMismatch> {
    let mut out = Vec::new();
    for (i, register) in CpuidRegister::REGS.into_iter().enumerate() {
        let (g, a) = (given.regs()[i], allowed.regs()[i]);
        if g != a {
            out.push(CpuidMismatch {
                index,
                leaf: given.eax_in,
                subleaf: given.ecx_in,
                register,
                given: u64::from(g),
                allowed: u64::from(a),
            });
        }
    }
    if given.reserved != allowed.reserved {
        out.push(CpuidMismatch {
            index,
            leaf: given.eax_in,
            subleaf: given.ecx_in,
            register: CpuidRegister::Reserved,
            given: given.reserved,
            allowed: allowed.reserved,
        });
    }
    out
}

/// Whether the firmware checks entries of this leaf: the standard and extended ranges.
fn checked_range(leaf: u32) -> bool {
    leaf <= 0xffff || (0x8000_0000..=0x8000_ffff).contains(&leaf)
}

/// The platform the CPUID page is checked against: the CPUID values its processor
/// (or the hypervisor, for an emulated platform) supports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CpuidPlatform {
    values: BTreeMap<(u32, u32), [u32; 4]>,
    /// Leaves whose results do not depend on the subleaf.
    unindexed: BTreeSet<u32>,
}

impl CpuidPlatform {
    /// A platform whose CPUID values are these entries (in KVM's format; an entry
    /// without `KVM_CPUID_FLAG_SIGNIFCANT_INDEX` holds for every subleaf). Leaves not
    /// listed read as zero.
    pub fn from_entries(entries: &[kvm_cpuid_entry2]) -> Self {
        let mut p = Self::default();
        for e in entries {
            let indexed = e.flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX != 0;
            if !indexed {
                p.unindexed.insert(e.function);
            }
            p.values.entry((e.function, if indexed { e.index } else { 0 })).or_insert([e.eax, e.ebx, e.ecx, e.edx]);
        }
        p
    }

    /// The platform an emulated PSP on this host offers: what KVM can give a guest
    /// (`KVM_GET_SUPPORTED_CPUID`, unfiltered), plus CPUID.1:EDX.HTT, which KVM leaves
    /// to the VMM to set per topology and which the firmware's leaf 1 EDX mask has
    /// (AMD-ASPFW `FN00000001_EDX_DEFAULT`).
    pub fn from_kvm_supported(entries: &[kvm_cpuid_entry2]) -> Self {
        let mut p = Self::from_entries(entries);
        if let Some(leaf1) = p.values.get_mut(&(1, 0)) {
            leaf1[3] |= 1 << 28;
        }
        p
    }

    /// The host processor's own CPUID values (the `CPUID` instruction), for every
    /// (leaf, subleaf) the rules read, within the processor's standard and extended
    /// ranges. Under a hypervisor this is the hypervisor's view.
    #[cfg(target_arch = "x86_64")]
    pub fn host() -> Self {
        let cpuid = |leaf: u32, subleaf: u32| {
            // SAFETY: CPUID is available on every x86_64 processor and only reads
            // processor identification; `__cpuid_count` is a safe function on newer
            // toolchains, hence the allow.
            #[allow(unused_unsafe)]
            let r = unsafe { core::arch::x86_64::__cpuid_count(leaf, subleaf) };
            [r.eax, r.ebx, r.ecx, r.edx]
        };
        let max_std = cpuid(0, 0)[0];
        let max_ext = cpuid(0x8000_0000, 0)[0];
        let in_range = |leaf: u32| if leaf >= 0x8000_0000 { leaf <= max_ext } else { leaf <= max_std };
        let xsave_components = (2..64).map(|i| (0xd, i));
        let mut p = Self::default();
        for (leaf, subleaf) in RULES.iter().map(|r| (r.leaf, r.subleaf)).chain(xsave_components) {
            if in_range(leaf) {
                p.values.insert((leaf, subleaf), cpuid(leaf, subleaf));
            }
        }
        p
    }

    /// The platform's values for a leaf and subleaf (zero if it has none).
    pub fn get(&self, leaf: u32, subleaf: u32) -> [u32; 4] {
        let subleaf = if self.unindexed.contains(&leaf) { 0 } else { subleaf };
        self.values.get(&(leaf, subleaf)).copied().unwrap_or([0; 4])
    }

    /// The size of the XSAVE area for the state components in `xfeatures`, from the
    /// platform's 0xD subleaves (EAX size, EBX offset of each component from 2 up):
    /// standard format, the end of the last component; compacted, the legacy area and
    /// header plus the sizes of the components (as the firmware and Linux's
    /// `snp_cpuid_calc_xsave_size` compute it).
    pub fn xsave_size(&self, xfeatures: u64, compacted: bool) -> u32 {
        (2..64).filter(|i| xfeatures & (1 << i) != 0).fold(XSAVE_LEGACY_SIZE, |size, i| {
            let [len, offset, _, _] = self.get(0xd, i);
            if compacted {
                size.saturating_add(len)
            } else {
                size.max(offset.saturating_add(len))
            }
        })
    }
}

/// How the firmware checks a bit field of a register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldRule {
    /// Any value.
    Unchecked,
    /// Only bits the platform has.
    Mask,
    /// The platform's value.
    Exact,
    /// At most the platform's value (the field as an unsigned number).
    LessOrEqual,
    /// Zero.
    Zero,
    /// All ones.
    Ones,
}

/// How the firmware checks a register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegisterRule {
    /// Disjoint bit fields with their rules; bits in none of them are unchecked.
    Fields(&'static [(u32, FieldRule)]),
    /// Family, model and stepping at most the platform's leaf 1 EAX; reserved bits
    /// 31:28 and 15:12 zero. On failure the firmware writes the platform's value.
    FamilyModelStepping,
    /// The standard-format XSAVE size for the entry's XCR0_IN.
    XsaveStandardSize,
    /// The compacted-format XSAVE size for the entry's XCR0_IN | XSS_IN.
    XsaveCompactedSize,
}

impl RegisterRule {
    /// The value the firmware allows for a register given as `given`, whose platform
    /// value is `plat`, in `entry`.
    fn apply(&self, given: u32, plat: u32, entry: &CpuidFunction, platform: &CpuidPlatform) -> u32 {
        match self {
            Self::Fields(fields) => {
                fields.iter().fold(given, |value, &(mask, rule)| apply_field(value, plat, mask, rule))
            }
            Self::FamilyModelStepping => {
                let allowed = platform.get(1, 0)[0];
                if fms(given) <= fms(allowed) {
                    given & !FMS_RESERVED
                } else {
                    allowed
                }
            }
            Self::XsaveStandardSize => platform.xsave_size(entry.xcr0_in, false),
            Self::XsaveCompactedSize => platform.xsave_size(entry.xcr0_in | entry.xss_in, true),
        }
    }
}

/// The value the firmware allows for the bits `mask` of `value`, whose platform value
/// is `plat`; the other bits unchanged.
fn apply_field(value: u32, plat: u32, mask: u32, rule: FieldRule) -> u32 {
    let shift = mask.trailing_zeros();
    let (v, p) = (value & mask, plat & mask);
    let allowed = match rule {
        FieldRule::Unchecked => v,
        FieldRule::Mask => v & p,
        FieldRule::Exact => p,
        FieldRule::LessOrEqual => {
            if (v >> shift) <= (p >> shift) {
                v
            } else {
                p
            }
        }
        FieldRule::Zero => 0,
        FieldRule::Ones => mask,
    };
    (value & !mask) | allowed
}

/// CPUID.1:EAX reserved bits.
const FMS_RESERVED: u32 = 0xf000_f000;

/// Family, model and stepping of a CPUID.1:EAX value, in the order they compare:
/// family = base + extended (extended only when base is 0xF), model = extended << 4 |
/// base (extended only when the base family is 0x6 or 0xF).
fn fms(eax: u32) -> (u32, u32, u32) {
    let base_family = (eax >> 8) & 0xf;
    let family = if base_family == 0xf { base_family + ((eax >> 20) & 0xff) } else { base_family };
    let base_model = (eax >> 4) & 0xf;
    let model = if base_family == 0x6 || base_family == 0xf { ((eax >> 12) & 0xf0) | base_model } else { base_model };
    (family, model, eax & 0xf)
}

/// The rule for one (leaf, subleaf) of the firmware's table.
#[derive(Debug, Clone, Copy)]
pub struct LeafRule {
    /// EAX_IN.
    pub leaf: u32,
    /// ECX_IN.
    pub subleaf: u32,
    /// Rules for EAX, EBX, ECX and EDX.
    pub regs: [RegisterRule; 4],
}

use FieldRule::{Exact as E, LessOrEqual as L, Mask as M, Ones, Unchecked as U, Zero};

const ALL: u32 = u32::MAX;
const UNCHECKED: RegisterRule = RegisterRule::Fields(&[(ALL, U)]);
const MASK: RegisterRule = RegisterRule::Fields(&[(ALL, M)]);
const EXACT: RegisterRule = RegisterRule::Fields(&[(ALL, E)]);
const LESS: RegisterRule = RegisterRule::Fields(&[(ALL, L)]);
const UNCHECKED_LEAF: [RegisterRule; 4] = [UNCHECKED; 4];

const fn rule(leaf: u32, subleaf: u32, regs: [RegisterRule; 4]) -> LeafRule {
    LeafRule { leaf, subleaf, regs }
}

/// The firmware's rule table: AMD-ASPFW `cpuid_lookup.c` `lookup_table` and its custom
/// functions (`FN00000001_CUSTOM`, `FN00000007_x00_CUSTOM`, `FN0000000D_X00_CUSTOM`,
/// `FN0000000D_X01_CUSTOM`, `FN80000001_CUSTOM`, `FN80000008_CUSTOM`,
/// `FN8000001F_CUSTOM`, `FN80000022_CUSTOM`), rules only (the values come from the
/// [`CpuidPlatform`]).
pub static RULES: &[LeafRule] = &[
    // Max standard leaf and vendor.
    rule(0x0, 0, [LESS, UNCHECKED, UNCHECKED, UNCHECKED]),
    // Family/model/stepping; CLFLUSH size exact, brand ID zero, APIC ID and logical
    // count unchecked; OSXSAVE (27) and the hypervisor bit (31) unchecked.
    rule(
        0x1,
        0,
        [
            RegisterRule::FamilyModelStepping,
            RegisterRule::Fields(&[(0xff00, E), (0xff, Zero)]),
            RegisterRule::Fields(&[(!((1 << 27) | (1 << 31)), M)]),
            MASK,
        ],
    ),
    rule(0x2, 0, UNCHECKED_LEAF),
    rule(0x4, 0, UNCHECKED_LEAF),
    rule(0x5, 0, UNCHECKED_LEAF),
    rule(0x6, 0, [MASK, EXACT, MASK, EXACT]),
    // Structured extended features; OSPKE (ECX 4) unchecked.
    rule(0x7, 0, [LESS, MASK, RegisterRule::Fields(&[(!(1 << 4), M)]), MASK]),
    rule(0x7, 1, [MASK, EXACT, EXACT, EXACT]),
    rule(0xb, 0, UNCHECKED_LEAF),
    rule(0xb, 1, UNCHECKED_LEAF),
    rule(0xb, 2, UNCHECKED_LEAF),
    // XSAVE: x87 and SSE always, other components as the platform; sizes computed.
    rule(
        0xd,
        0,
        [RegisterRule::Fields(&[(0b11, Ones), (!0b11, M)]), RegisterRule::XsaveStandardSize, UNCHECKED, EXACT],
    ),
    rule(0xd, 1, [MASK, RegisterRule::XsaveCompactedSize, MASK, MASK]),
    rule(0xd, 2, [EXACT; 4]),
    rule(0xd, 5, [EXACT, EXACT, MASK, EXACT]),
    rule(0xd, 6, [EXACT, EXACT, MASK, EXACT]),
    rule(0xd, 7, [EXACT, EXACT, MASK, EXACT]),
    rule(0xd, 9, [EXACT; 4]),
    rule(0xd, 0xb, [EXACT; 4]),
    rule(0xd, 0xc, [EXACT; 4]),
    rule(0xf, 0, [EXACT, UNCHECKED, EXACT, UNCHECKED]),
    rule(0xf, 1, UNCHECKED_LEAF),
    rule(0x10, 0, [EXACT, UNCHECKED, EXACT, EXACT]),
    rule(0x10, 1, UNCHECKED_LEAF),
    // Max extended leaf and vendor.
    rule(0x8000_0000, 0, [LESS, UNCHECKED, UNCHECKED, UNCHECKED]),
    rule(0x8000_0001, 0, [RegisterRule::FamilyModelStepping, UNCHECKED, MASK, MASK]),
    rule(0x8000_0002, 0, UNCHECKED_LEAF),
    rule(0x8000_0003, 0, UNCHECKED_LEAF),
    rule(0x8000_0004, 0, UNCHECKED_LEAF),
    rule(0x8000_0005, 0, UNCHECKED_LEAF),
    rule(0x8000_0006, 0, UNCHECKED_LEAF),
    rule(0x8000_0007, 0, [EXACT, MASK, UNCHECKED, MASK]),
    // Address sizes (physical, linear, guest physical) each at most the platform's;
    // INVLPGB count and RDPRU max likewise.
    rule(
        0x8000_0008,
        0,
        [
            RegisterRule::Fields(&[(0xff, L), (0xff00, L), (0xff_0000, L), (0xff00_0000, Zero)]),
            MASK,
            UNCHECKED,
            RegisterRule::Fields(&[(0xffff, L), (0xff_0000, L), (0xff00_0000, Zero)]),
        ],
    ),
    rule(0x8000_000a, 0, [UNCHECKED, UNCHECKED, EXACT, MASK]),
    rule(0x8000_0019, 0, [UNCHECKED, UNCHECKED, EXACT, EXACT]),
    rule(0x8000_001a, 0, [UNCHECKED, EXACT, EXACT, EXACT]),
    rule(0x8000_001b, 0, [MASK, EXACT, EXACT, EXACT]),
    rule(0x8000_001d, 0, UNCHECKED_LEAF),
    rule(0x8000_001d, 1, UNCHECKED_LEAF),
    rule(0x8000_001d, 2, UNCHECKED_LEAF),
    rule(0x8000_001d, 3, UNCHECKED_LEAF),
    rule(0x8000_001d, 4, [UNCHECKED, EXACT, UNCHECKED, EXACT]),
    rule(0x8000_001e, 0, UNCHECKED_LEAF),
    // Memory encryption: C-bit position exact, physical address reduction unchecked,
    // number of VMPLs at most the platform's, the rest exact.
    rule(
        0x8000_001f,
        0,
        [MASK, RegisterRule::Fields(&[(0x3f, E), (0xfc0, U), (0xf000, L), (0xffff_0000, E)]), UNCHECKED, UNCHECKED],
    ),
    rule(0x8000_0020, 0, [EXACT, UNCHECKED, EXACT, EXACT]),
    rule(0x8000_0020, 1, [UNCHECKED, EXACT, EXACT, UNCHECKED]),
    rule(0x8000_0020, 2, [UNCHECKED, EXACT, EXACT, UNCHECKED]),
    rule(0x8000_0020, 3, [EXACT, UNCHECKED, MASK, EXACT]),
    rule(0x8000_0021, 0, [MASK, UNCHECKED, EXACT, EXACT]),
    // Performance monitoring: core counters and LBR stack size at most the platform's.
    rule(0x8000_0022, 0, [MASK, RegisterRule::Fields(&[(0xf, L), (0x3f0, L)]), UNCHECKED, EXACT]),
    rule(0x8000_0023, 0, [MASK, UNCHECKED, EXACT, EXACT]),
    rule(0x8000_0024, 0, [LESS, MASK, MASK, EXACT]),
    rule(0x8000_0024, 1, [MASK, EXACT, EXACT, EXACT]),
    rule(0x8000_0026, 0, UNCHECKED_LEAF),
    rule(0x8000_0026, 1, UNCHECKED_LEAF),
    rule(0x8000_0026, 2, UNCHECKED_LEAF),
    rule(0x8000_0026, 3, UNCHECKED_LEAF),
];

#[cfg(test)]
mod tests {
    use super::*;

    fn kvm_entry(function: u32, index: Option<u32>, regs: [u32; 4]) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index: index.unwrap_or(0),
            flags: if index.is_some() { KVM_CPUID_FLAG_SIGNIFCANT_INDEX } else { 0 },
            eax: regs[0],
            ebx: regs[1],
            ecx: regs[2],
            edx: regs[3],
            ..Default::default()
        }
    }

    fn f(leaf: u32, subleaf: u32, regs: [u32; 4]) -> CpuidFunction {
        let mut e = CpuidFunction { eax_in: leaf, ecx_in: subleaf, ..Default::default() };
        e.set_regs(regs);
        e
    }

    /// A Genoa-like platform: XSAVE component sizes and offsets as the architecture
    /// defines them (AVX 0x100 at 0x240, opmask 0x40 at 0x340, ZMM_Hi256 0x200 at
    /// 0x380, Hi16_ZMM 0x400 at 0x580, PKRU 8 at 0x980, CET_U 0x10, CET_S 0x18).
    fn platform() -> CpuidPlatform {
        CpuidPlatform::from_entries(&[
            kvm_entry(0x0, None, [0x10, 0x6874_7541, 0x444d_4163, 0x6974_6e65]),
            kvm_entry(0x1, None, [0x00a1_0f11, 0x0000_0800, 0x7ed8_320b, 0x178b_fbff]),
            kvm_entry(0x7, Some(0), [0x1, 0xf1bf_07ab, 0x0040_5fce, 0x1000_0010]),
            kvm_entry(0xd, Some(0), [0x2e7, 0x988, 0x988, 0]),
            kvm_entry(0xd, Some(1), [0xf, 0x9a8, 0x1800, 0]),
            kvm_entry(0xd, Some(2), [0x100, 0x240, 0, 0]),
            kvm_entry(0xd, Some(5), [0x40, 0x340, 0, 0]),
            kvm_entry(0xd, Some(6), [0x200, 0x380, 0, 0]),
            kvm_entry(0xd, Some(7), [0x400, 0x580, 0, 0]),
            kvm_entry(0xd, Some(9), [0x8, 0x980, 0, 0]),
            kvm_entry(0xd, Some(11), [0x10, 0, 1, 0]),
            kvm_entry(0xd, Some(12), [0x18, 0, 1, 0]),
            kvm_entry(0x8000_0000, None, [0x8000_0028, 0x6874_7541, 0x444d_4163, 0x6974_6e65]),
            kvm_entry(0x8000_0001, None, [0x00a1_0f11, 0x4000_0000, 0x75c2_37ff, 0x2fd3_fbff]),
            kvm_entry(0x8000_0008, None, [0x0000_3030, 0x791e_f257, 0x0000_707f, 0x0001_0007]),
            kvm_entry(0x8000_001f, None, [0x0101_fd3f, 0x0000_4173, 0x0000_03fd, 0x0000_0080]),
        ])
    }

    #[test]
    fn page_layout_offsets() {
        let e = CpuidFunction {
            eax_in: 0x1111_1111,
            ecx_in: 0x2222_2222,
            xcr0_in: 0x3333_3333_3333_3333,
            xss_in: 0x4444_4444_4444_4444,
            eax: 0x5555_5555,
            ebx: 0x6666_6666,
            ecx: 0x7777_7777,
            edx: 0x8888_8888,
            reserved: 0x9999_9999_9999_9999,
        };
        let page = CpuidPage::new(vec![CpuidFunction::default(), e]).unwrap();
        let b = page.to_bytes();
        assert_eq!(b.len(), 4096);
        assert_eq!(&b[0..4], &2u32.to_le_bytes(), "count");
        assert_eq!(&b[4..16], &[0; 12], "reserved");
        let at = 16 + 48; // second entry
        let expect: [(usize, &[u8]); 9] = [
            (0, &[0x11; 4]),
            (4, &[0x22; 4]),
            (8, &[0x33; 8]),
            (16, &[0x44; 8]),
            (24, &[0x55; 4]),
            (28, &[0x66; 4]),
            (32, &[0x77; 4]),
            (36, &[0x88; 4]),
            (40, &[0x99; 8]),
        ];
        for (off, bytes) in expect {
            assert_eq!(&b[at + off..at + off + bytes.len()], bytes, "offset {off}");
        }
        assert!(b[16 + 2 * 48..].iter().all(|&x| x == 0));
    }

    #[test]
    fn page_round_trips_through_bytes() {
        let entries = (0..64).map(|i| f(i, i % 3, [i, i << 8, i << 16, i << 24])).collect();
        let page = CpuidPage::new(entries).unwrap();
        assert_eq!(CpuidPage::from_bytes(page.to_bytes().as_slice()).unwrap(), page);
        assert_eq!(CpuidPage::from_bytes(CpuidPage::default().to_bytes().as_slice()).unwrap().entries().len(), 0);
    }

    #[test]
    fn parser_rejects_count_above_64_reserved_header_and_short_input() {
        let mut b = CpuidPage::default().to_bytes();
        b[0..4].copy_from_slice(&65u32.to_le_bytes());
        let e = CpuidPage::from_bytes(b.as_slice()).unwrap_err();
        assert!(matches!(e, CpuidPageError::TooManyEntries { count: 65 }), "{e}");
        b[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(CpuidPage::from_bytes(b.as_slice()), Err(CpuidPageError::TooManyEntries { .. })));
        let mut b = CpuidPage::default().to_bytes();
        b[8] = 1;
        let e = CpuidPage::from_bytes(b.as_slice()).unwrap_err();
        assert!(matches!(e, CpuidPageError::ReservedHeader { reserved1: 0, reserved2: 1 }), "{e}");
        assert_eq!(e.fw_status(), Some(0x16));
        assert!(matches!(CpuidPage::from_bytes(&[0u8; 4095]), Err(CpuidPageError::Length { len: 4095 })));
        assert!(matches!(
            CpuidPage::new(vec![CpuidFunction::default(); 65]),
            Err(CpuidPageError::TooManyEntries { count: 65 })
        ));
    }

    #[test]
    fn built_from_kvm_entries_like_qemu() {
        let kvm = [
            kvm_entry(0x1, None, [1, 2, 3, 4]),
            kvm_entry(0x7, Some(1), [5, 0, 0, 0]),
            kvm_entry(0xd, Some(0), [0xe7, 0x980, 0x980, 0]),
            kvm_entry(0xd, Some(1), [0, 0, 0, 0]),
            kvm_entry(0xd, Some(2), [0x100, 0x240, 0, 0]),
            kvm_entry(0x3, None, [0, 0, 0, 0]),
            // An index KVM marks insignificant is not the subleaf.
            kvm_entry(0x8000_0001, None, [9, 9, 9, 9]),
        ];
        let mut kvm = kvm.to_vec();
        kvm[6].index = 5;
        let page = CpuidPage::from_kvm_entries(&kvm, ZeroLeaves::Keep).unwrap();
        assert_eq!(page.entries().len(), 7);
        assert_eq!(page.entries()[0], f(0x1, 0, [1, 2, 3, 4]));
        assert_eq!(page.entries()[1].ecx_in, 1);
        let d0 = page.get(0xd, 0).unwrap();
        assert_eq!((d0.ebx, d0.xcr0_in, d0.xss_in, d0.eax, d0.ecx), (0x240, 1, 0, 0xe7, 0x980));
        let d1 = page.get(0xd, 1).unwrap();
        assert_eq!((d1.ebx, d1.xcr0_in), (0x240, 1));
        assert_eq!(page.get(0xd, 2).unwrap().xcr0_in, 0, "only subleaves 0 and 1 get XCR0_IN");
        assert_eq!(page.get(0x8000_0001, 0).unwrap().eax, 9);
        // Dropping zero leaves keeps 0xD.1, whose EBX is now 0x240.
        let compact = CpuidPage::from_kvm_entries(&kvm, ZeroLeaves::Drop).unwrap();
        assert_eq!(compact.entries().len(), 6);
        assert!(compact.get(0x3, 0).is_none());
        assert!(compact.get(0xd, 1).is_some());
    }

    #[test]
    fn too_many_kvm_entries_are_an_error() {
        let kvm: Vec<_> = (0..65).map(|i| kvm_entry(0x4000_0000 + i, None, [1, 0, 0, 0])).collect();
        let e = CpuidPage::from_kvm_entries(&kvm, ZeroLeaves::Drop).unwrap_err();
        assert!(matches!(e, CpuidPageError::TooManyEntries { count: 65 }), "{e}");
        assert!(e.to_string().contains("at most 64"), "{e}");
    }

    #[test]
    fn page_equal_to_the_platform_is_accepted() {
        let page = CpuidPage::new(vec![
            f(0x0, 0, [0x10, 0x6874_7541, 0x444d_4163, 0x6974_6e65]),
            // APIC ID, logical count, OSXSAVE and the hypervisor bit may differ.
            f(0x1, 0, [0x00a1_0f11, 0x0710_0800, 0x7ed8_320b | (1 << 27) | (1 << 31), 0x178b_fbff]),
            f(0x7, 0, [0x1, 0x0000_0001, 0x10, 0]),
            CpuidFunction { xcr0_in: 1, ..f(0xd, 0, [0x2e7, 0x240, 0x988, 0]) },
            CpuidFunction { xcr0_in: 1, ..f(0xd, 1, [0xf, 0x240, 0x1800, 0]) },
            f(0xd, 2, [0x100, 0x240, 0, 0]),
            f(0x3, 0, [0; 4]),
            f(0x4000_0001, 0, [0xffff_ffff; 4]),
            f(0x8000_0008, 0, [0x0000_2828, 0, 0, 0]),
            f(0x8000_001f, 0, [0x1a, 0x0000_1f73, 0, 0]),
        ])
        .unwrap();
        let check = page.check(&platform());
        assert_eq!(check.mismatches, vec![]);
        assert_eq!(check.corrected, page);
        page.validate(&platform()).unwrap();
    }

    #[test]
    fn forbidden_feature_bit_is_rejected_with_the_corrected_value() {
        // RTM (leaf 7 EBX bit 11) is not in the platform's mask.
        let page = CpuidPage::new(vec![f(0x7, 0, [0x1, 0xf1bf_07ab | (1 << 11), 0, 0])]).unwrap();
        let e = page.validate(&platform()).unwrap_err();
        let CpuidPageError::Rejected { corrected, mismatches } = &e else { panic!("{e}") };
        assert_eq!(corrected.get(0x7, 0).unwrap().ebx, 0xf1bf_07ab);
        assert_eq!(
            mismatches,
            &vec![CpuidMismatch {
                index: 0,
                leaf: 7,
                subleaf: 0,
                register: CpuidRegister::Ebx,
                given: 0xf1bf_0fab,
                allowed: 0xf1bf_07ab
            }]
        );
        assert_eq!(
            mismatches[0].to_string(),
            "leaf 0x7 subleaf 0: ebx 0xf1bf0fab given, firmware allows 0xf1bf07ab (bits 0x800 differ)"
        );
        assert_eq!(e.fw_status(), Some(0x16));
        assert!(e.to_string().contains("leaf 0x7 subleaf 0: ebx"), "{e}");
        // The corrected page passes.
        corrected.validate(&platform()).unwrap();
    }

    #[test]
    fn each_rule_kind_corrects_what_it_forbids() {
        let page = CpuidPage::new(vec![
            // LESS: more standard leaves than the platform.
            f(0x0, 0, [0x11, 0, 0, 0]),
            // Family/model/stepping above the platform's, and CLFLUSH size not 8.
            f(0x1, 0, [0x00a1_0f12, 0x0000_1000, 0, 0]),
            // ONES: x87 and SSE must be reported.
            CpuidFunction { xcr0_in: 1, ..f(0xd, 0, [0x2e4, 0x240, 0, 0]) },
            // EXACT: a component size other than the platform's.
            f(0xd, 2, [0x80, 0x240, 0, 0]),
            // Fields: a physical address width above the platform's (0x30), the rest fine.
            f(0x8000_0008, 0, [0x0000_2834, 0, 0, 0]),
            // C-bit position not the platform's, more VMPLs than it has.
            f(0x8000_001f, 0, [0, 0x0000_5174, 0, 0]),
            // An unlisted standard leaf must be zero.
            f(0x3, 0, [0, 0, 1, 0]),
            // An entry's reserved field must be zero.
            CpuidFunction { reserved: 1, ..f(0x8000_0001, 0, [0, 0, 0, 0]) },
        ])
        .unwrap();
        let check = page.check(&platform());
        let got: Vec<_> = check.mismatches.iter().map(|m| (m.leaf, m.register, m.given, m.allowed)).collect();
        use CpuidRegister::*;
        assert_eq!(
            got,
            vec![
                (0x0, Eax, 0x11, 0x10),
                (0x1, Eax, 0x00a1_0f12, 0x00a1_0f11),
                (0x1, Ebx, 0x1000, 0x0800),
                (0xd, Eax, 0x2e4, 0x2e7),
                (0xd, Eax, 0x80, 0x100),
                (0x8000_0008, Eax, 0x2834, 0x2830),
                (0x8000_001f, Ebx, 0x5174, 0x4173),
                (0x3, Ecx, 1, 0),
                (0x8000_0001, Reserved, 1, 0),
            ]
        );
        assert!(check.corrected.check(&platform()).mismatches.is_empty(), "the corrected page passes");
    }

    #[test]
    fn lower_family_model_stepping_is_accepted() {
        // Family 0x19 model 0x01 stepping 1 on a family 0x19 model 0x11 platform; and an
        // older family (0x17) with a higher model.
        for eax in [0x00a0_0f11, 0x0083_0f10] {
            let page = CpuidPage::new(vec![f(0x1, 0, [eax, 0x800, 0, 0])]).unwrap();
            assert_eq!(page.check(&platform()).mismatches, vec![], "{eax:#x}");
        }
        let reserved = CpuidPage::new(vec![f(0x1, 0, [0x00a0_0f11 | 0x1000, 0x800, 0, 0])]).unwrap();
        assert_eq!(reserved.check(&platform()).mismatches[0].allowed, 0x00a0_0f11);
    }

    #[test]
    fn xsave_sizes_must_match_xcr0_in_and_xss_in() {
        // Expected sizes are the constants AMD's firmware compares against
        // (FN0000000D_X00_CUSTOM and FN0000000D_X01_CUSTOM) for the same components.
        let p = platform();
        let x87_sse_avx = 0b111;
        let avx512 = x87_sse_avx | (0b111 << 5);
        assert_eq!(p.xsave_size(0b11, false), 0x240);
        assert_eq!(p.xsave_size(x87_sse_avx, false), 0x340);
        assert_eq!(p.xsave_size(avx512, false), 0x980);
        assert_eq!(p.xsave_size(avx512 | (1 << 9), false), 0x988);
        assert_eq!(p.xsave_size(x87_sse_avx, true), 0x240 + 0x100);
        assert_eq!(p.xsave_size(avx512 | (1 << 9), true), 0x240 + 0x100 + 0x8 + 0x400 + 0x200 + 0x40);
        assert_eq!(p.xsave_size(x87_sse_avx | (1 << 11) | (1 << 12), true), 0x240 + 0x100 + 0x10 + 0x18);

        let page = CpuidPage::new(vec![
            CpuidFunction { xcr0_in: avx512, ..f(0xd, 0, [0x2e7, 0x980, 0, 0]) },
            CpuidFunction { xcr0_in: x87_sse_avx, xss_in: 1 << 11, ..f(0xd, 1, [0xf, 0x350, 0, 0]) },
        ])
        .unwrap();
        assert_eq!(page.check(&p).mismatches, vec![]);
        let wrong = CpuidPage::new(vec![CpuidFunction { xcr0_in: avx512, ..f(0xd, 0, [0x2e7, 0x340, 0, 0]) }]).unwrap();
        let m = wrong.check(&p).mismatches;
        assert_eq!((m.len(), m[0].register, m[0].allowed), (1, CpuidRegister::Ebx, 0x980));
    }

    #[test]
    fn mismatches_against_a_returned_page_list_the_differences() {
        let page = CpuidPage::new(vec![f(0x1, 0, [0x00a1_0f11, 0x800, 0, 0]), f(0x7, 0, [1, 0x801, 0, 0])]).unwrap();
        let mut returned = page.clone();
        returned.get_mut(0x7, 0).unwrap().ebx = 0x1;
        let m = page.mismatches(&returned);
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].to_string(), "leaf 0x7 subleaf 0: ebx 0x801 given, firmware allows 0x1 (bits 0x800 differ)");
        assert_eq!(page.mismatches(&page), vec![]);
        // The emulated check's corrected page yields the same list.
        let check = page.check(&platform());
        assert_eq!(page.mismatches(&check.corrected), check.mismatches);
    }

    /// The CPUID table cvmm gives a vCPU on this host (KVM_GET_SUPPORTED_CPUID,
    /// filtered by `arch::cpuid::filter_cpuid`) makes a page the emulated PSP accepts.
    #[test]
    fn page_from_this_hosts_kvm_cpuid_validates() {
        let kvm = kvm_ioctls::Kvm::new().expect("this test needs /dev/kvm");
        let supported = kvm.get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES).unwrap();
        let platform = CpuidPlatform::from_kvm_supported(supported.as_slice());
        let mut entries = supported.as_slice().to_vec();
        arch::cpuid::filter_cpuid(&mut entries, 0, 1);
        let page = CpuidPage::from_kvm_entries(&entries, ZeroLeaves::Drop).unwrap();
        assert!(page.get(0x1, 0).is_some() && page.get(0x0, 0).is_some());
        if let Err(e) = page.validate(&platform) {
            panic!("{e}");
        }
        // The guest reads back the same page.
        assert_eq!(CpuidPage::from_bytes(page.to_bytes().as_slice()).unwrap(), page);

        // A feature bit KVM does not offer is refused, and the firmware's page drops it.
        let leaf7 = platform.get(0x7, 0);
        let forbidden = (0..32).map(|b| 1u32 << b).find(|bit| leaf7[1] & bit == 0).expect("a free leaf 7 EBX bit");
        let mut bad = page.clone();
        let given = bad.get(0x7, 0).expect("leaf 7 in the page").ebx;
        bad.get_mut(0x7, 0).unwrap().ebx |= forbidden;
        let e = bad.validate(&platform).unwrap_err();
        let CpuidPageError::Rejected { corrected, mismatches } = &e else { panic!("{e}") };
        assert_eq!(corrected.get(0x7, 0).unwrap().ebx, given);
        assert_eq!(mismatches.len(), 1);
        assert_eq!(mismatches[0].register, CpuidRegister::Ebx);
        assert_eq!(mismatches[0].allowed, u64::from(given));
        assert!(e.to_string().contains(&format!("leaf 0x7 subleaf 0: ebx {:#x} given", given | forbidden)), "{e}");
    }

    #[test]
    fn host_platform_reads_vendor_and_max_leaves() {
        let host = CpuidPlatform::host();
        let [max_std, b, c, d] = host.get(0, 0);
        assert!(max_std >= 1);
        assert!(host.get(0x8000_0000, 0)[0] >= 0x8000_0000);
        let vendor: Vec<u8> = [b, d, c].iter().flat_map(|r| r.to_le_bytes()).collect();
        assert!(vendor.iter().all(u8::is_ascii_graphic), "{vendor:?}");
        // Only the leaves the rules read are collected: not the hypervisor range.
        assert_eq!(host.get(0x4000_0000, 0), [0; 4]);
    }
}
