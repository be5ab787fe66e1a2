//! An SNP vCPU's initial state on KVM: the KVM register state whose VMSA, as KVM builds
//! it at `KVM_SEV_SNP_LAUNCH_FINISH`, is `crate::measure::snp::vmsa_page(vcpu)`.
//!
//! # How KVM builds the VMSA (arch/x86/kvm/svm/sev.c, `sev_es_sync_vmsa`)
//!
//! It copies the VMCB save area (which `KVM_SET_SREGS`, `KVM_SET_DEBUGREGS` and
//! `KVM_SET_MSRS` fill through `svm_set_segment`, `svm_set_efer`, `svm_set_cr0/4`,
//! `svm_set_dr7` and the PAT MSR), then overwrites the general registers and RIP
//! (`KVM_SET_REGS`), XCR0 (`KVM_SET_XCRS`), PKRU, XSS (`KVM_SET_MSRS`), DR6
//! (`KVM_SET_DEBUGREGS`), SEV_FEATURES (`KVM_SEV_INIT2`'s `vmsa_features` plus
//! SNPActive) and, for VMs created with `KVM_SEV_INIT2`, the x87/SSE/AVX state from the
//! vCPU's XSAVE buffer (`KVM_SET_XSAVE`: `KVM_SET_FPU` would do for FCW, but it ignores
//! MXCSR). Field by field, from [`SnpVcpu`]:
//!
//! | VMSA field | from | through |
//! |---|---|---|
//! | ES, CS, SS, DS, FS, GS, LDTR, TR | selector, base, limit as given; the 12-bit `attrib` unpacked into `kvm_segment` (type 3:0, S 4, DPL 6:5, P 7, AVL 8, L 9, D/B 10, G 11; `unusable` = !P), which `svm_set_segment` packs back | `KVM_SET_SREGS` |
//! | GDTR, IDTR | base and limit (a 16-bit `kvm_dtable` limit); selector and attributes stay 0 | `KVM_SET_SREGS` |
//! | CPL | SS.DPL (`svm_set_segment`); `vmsa_page` leaves it 0, so SS.DPL must be 0 | `KVM_SET_SREGS` |
//! | EFER | `efer` without SVME; `svm_set_efer` adds EFER.SVME, so `efer` must have it | `KVM_SET_SREGS` |
//! | CR0 | `cr0`; KVM clears CD and NW (quirk `KVM_X86_QUIRK_CD_NW_CLEARED`, on by default), so they must be clear | `KVM_SET_SREGS` |
//! | CR3 | `cr3` | `KVM_SET_SREGS` |
//! | CR4 | `cr4`; `svm_set_cr4` adds the host's CR4.MCE (set on every host with machine checks), so `cr4` must have MCE | `KVM_SET_SREGS` |
//! | CR2 | always 0: KVM writes the VMCB's CR2 only at VMRUN, so `cr2` must be 0 | — |
//! | DR7 | `dr7`; LAUNCH_FINISH fails unless only bit 10 (`DR7_FIXED_1`) may be set | `KVM_SET_DEBUGREGS` |
//! | DR6 | `dr6` (32 bits) | `KVM_SET_DEBUGREGS` |
//! | RFLAGS | `rflags`; KVM forces bit 1, so it must be set | `KVM_SET_REGS` |
//! | RIP, RSP, RAX, RBX, RCX, RDX, RSI, RDI, RBP, R8-R15 | as given | `KVM_SET_REGS` |
//! | G_PAT | `g_pat` (MSR 0x277; every byte a valid memory type) | `KVM_SET_MSRS` |
//! | XSS | `xss` (MSR 0xda0; 0 in a new vCPU, written only when not 0) | `KVM_SET_MSRS` |
//! | XCR0 | `xcr0` (bit 0 must be set) | `KVM_SET_XCRS` |
//! | X87_FCW, MXCSR | `x87_fcw`, `mxcsr`; every other x87/SSE field (FSW, FTW, FOP, RIP, DP, ST0-7, XMM0-15) 0 | `KVM_SET_XSAVE` (legacy area, XSTATE_BV \|= x87 \| SSE) |
//! | SEV_FEATURES | must equal INIT2's `vmsa_features` | SNPActive (bit 0) | `KVM_SEV_INIT2` |
//! | PKRU, STAR, LSTAR, CSTAR, SFMASK, KERNEL_GS_BASE, SYSENTER_*, DBGCTL, YMM | 0 at vCPU creation, not touched | — |
//!
//! `SnpVcpu` has no field for the ones in the last row; `vmsa_page` writes them as 0 too.

use kvm_bindings::{
    kvm_debugregs, kvm_dtable, kvm_fpu, kvm_msr_entry, kvm_regs, kvm_segment, kvm_sregs, kvm_xcrs, kvm_xsave, Msrs,
};
use kvm_ioctls::{Cap, Kvm, VcpuFd};
use thiserror::Error;

use crate::plan::snp::{SnpSegment, SnpVcpu};

use super::uapi::SVM_SEV_FEAT_SNP_ACTIVE;

/// EFER.SVME.
pub const EFER_SVME: u64 = 1 << 12;
/// CR4.MCE.
pub const CR4_MCE: u64 = 1 << 6;
/// CR0.NW and CR0.CD.
pub const CR0_NW_CD: u64 = (1 << 29) | (1 << 30);
/// DR7 bit 10, always 1 (`DR7_FIXED_1`).
pub const DR7_FIXED_1: u64 = 0x400;
/// RFLAGS bit 1, always 1.
pub const RFLAGS_FIXED: u64 = 0x2;
/// IA32_PAT.
pub const MSR_IA32_CR_PAT: u32 = 0x277;
/// IA32_XSS.
pub const MSR_IA32_XSS: u32 = 0xda0;

/// Why an [`SnpVcpu`] cannot be given to KVM, or KVM refused it.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum VcpuStateError {
    /// SEV_FEATURES other than what KVM will put in the VMSA.
    #[error(
        "the plan's SEV_FEATURES {plan:#x} cannot be produced: KVM puts KVM_SEV_INIT2's vmsa_features | SNPActive = \
         {kvm:#x} in every VMSA"
    )]
    SevFeatures {
        /// The plan's value.
        plan: u64,
        /// KVM's value.
        kvm: u64,
    },
    /// EFER without SVME, which KVM always sets.
    #[error("the plan's EFER {0:#x} lacks SVME (bit 12), which KVM always sets in an SNP VMSA")]
    EferWithoutSvme(u64),
    /// CR4 without MCE, which KVM sets from the host.
    #[error("the plan's CR4 {0:#x} lacks MCE (bit 6), which KVM copies from the host's CR4 into the VMSA")]
    Cr4WithoutMce(u64),
    /// CR0 with CD or NW, which KVM clears.
    #[error("the plan's CR0 {0:#x} has CD or NW set, which KVM clears (quirk CD_NW_CLEARED)")]
    Cr0CacheBits(u64),
    /// A non-zero CR2, which KVM cannot put in a VMSA before the first VMRUN.
    #[error("the plan's CR2 {0:#x} is not 0: KVM's VMSA holds the CR2 of the last VMRUN, 0 before launch")]
    Cr2(u64),
    /// DR7 with bits KVM refuses at launch.
    #[error("the plan's DR7 {0:#x} has bits other than bit 10: KVM refuses to launch with breakpoints set")]
    Dr7(u64),
    /// DR6 wider than 32 bits.
    #[error("the plan's DR6 {0:#x} does not fit 32 bits (KVM_SET_DEBUGREGS refuses it)")]
    Dr6(u64),
    /// RFLAGS without bit 1.
    #[error("the plan's RFLAGS {0:#x} lacks bit 1, which KVM always sets")]
    Rflags(u64),
    /// XCR0 without x87.
    #[error("the plan's XCR0 {0:#x} lacks bit 0 (x87), which KVM_SET_XCRS requires")]
    Xcr0(u64),
    /// A PAT with an invalid memory type.
    #[error("the plan's PAT {0:#x} has a byte that is not a memory type (0, 1, 4, 5, 6, 7)")]
    Pat(u64),
    /// A segment attribute with bits above the 12 the VMCB format has.
    #[error("the plan's {name} attributes {attrib:#x} have bits above bit 11")]
    SegmentAttrib {
        /// The segment.
        name: &'static str,
        /// Its attributes.
        attrib: u16,
    },
    /// A GDTR or IDTR KVM cannot hold (it has only base and a 16-bit limit).
    #[error("the plan's {name} (selector {selector:#x}, attributes {attrib:#x}, limit {limit:#x}) needs a zero selector and attributes and a 16-bit limit")]
    DescriptorTable {
        /// GDTR or IDTR.
        name: &'static str,
        /// Its selector.
        selector: u16,
        /// Its attributes.
        attrib: u16,
        /// Its limit.
        limit: u32,
    },
    /// SS.DPL not 0: KVM would write it to the VMSA's CPL, which the plan has as 0.
    #[error("the plan's SS.DPL is {0}: KVM copies it into the VMSA's CPL, which the measured VMSA has as 0")]
    SsDpl(u8),
    /// A vCPU ioctl failed.
    #[error("{what} failed: {source}")]
    Ioctl {
        /// The ioctl.
        what: &'static str,
        /// KVM's error.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// The vCPU's XSAVE buffer is larger than `struct kvm_xsave`.
    #[error("KVM_CAP_XSAVE2 says the XSAVE buffer takes {0} bytes, more than KVM_SET_XSAVE's 4096")]
    XsaveSize(i32),
    /// KVM_SET_MSRS set fewer MSRs than given.
    #[error("KVM_SET_MSRS set {set} of the {given} MSRs (PAT, then XSS when not 0): KVM refused the next one")]
    Msrs {
        /// How many were set.
        set: usize,
        /// How many were given.
        given: usize,
    },
}

/// The KVM register state of an SNP vCPU: what [`set_vcpu_state`] gives KVM.
#[derive(Debug, Clone, PartialEq)]
pub struct KvmVcpuState {
    /// General registers, RIP and RFLAGS.
    pub regs: kvm_regs,
    /// ES, CS, SS, DS, FS, GS, TR, LDTR.
    pub segments: KvmSegments,
    /// GDTR.
    pub gdt: kvm_dtable,
    /// IDTR.
    pub idt: kvm_dtable,
    /// CR0.
    pub cr0: u64,
    /// CR3.
    pub cr3: u64,
    /// CR4.
    pub cr4: u64,
    /// EFER (without SVME).
    pub efer: u64,
    /// x87 and SSE state (FCW and MXCSR; the rest 0), set through the XSAVE buffer.
    pub fpu: kvm_fpu,
    /// XCR0.
    pub xcr0: u64,
    /// DR6 and DR7.
    pub debugregs: kvm_debugregs,
    /// IA32_PAT.
    pub pat: u64,
    /// IA32_XSS.
    pub xss: u64,
}

/// The segment registers of a [`KvmVcpuState`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KvmSegments {
    /// ES.
    pub es: kvm_segment,
    /// CS.
    pub cs: kvm_segment,
    /// SS.
    pub ss: kvm_segment,
    /// DS.
    pub ds: kvm_segment,
    /// FS.
    pub fs: kvm_segment,
    /// GS.
    pub gs: kvm_segment,
    /// TR.
    pub tr: kvm_segment,
    /// LDTR.
    pub ldt: kvm_segment,
}

/// Unpacks a VMCB-format segment (12-bit attributes) into a `kvm_segment`, or names the
/// attribute bits KVM cannot represent.
fn kvm_segment_of(name: &'static str, s: &SnpSegment) -> Result<kvm_segment, VcpuStateError> {
    if s.attrib & !0xfff != 0 {
        return Err(VcpuStateError::SegmentAttrib { name, attrib: s.attrib });
    }
    Ok(unpack_segment(s))
}

/// Unpacks a VMCB-format segment into a `kvm_segment` (attribute bits above 11, which
/// the VMCB format does not have, are ignored); a segment that is not present is
/// unusable.
pub(crate) fn unpack_segment(s: &SnpSegment) -> kvm_segment {
    let a = s.attrib;
    let bit = |n: u16| ((a >> n) & 1) as u8;
    kvm_segment {
        base: s.base,
        limit: s.limit,
        selector: s.selector,
        type_: (a & 0xf) as u8,
        s: bit(4),
        dpl: ((a >> 5) & 3) as u8,
        present: bit(7),
        avl: bit(8),
        l: bit(9),
        db: bit(10),
        g: bit(11),
        unusable: 1 - bit(7),
        padding: 0,
    }
}

/// The general-purpose registers, RIP and RFLAGS of `v` as KVM takes them.
pub(crate) fn regs_of(v: &SnpVcpu) -> kvm_regs {
    let [r8, r9, r10, r11, r12, r13, r14, r15] = v.r8_to_r15;
    kvm_regs {
        rax: v.rax,
        rbx: v.rbx,
        rcx: v.rcx,
        rdx: v.rdx,
        rsi: v.rsi,
        rdi: v.rdi,
        rsp: v.rsp,
        rbp: v.rbp,
        r8,
        r9,
        r10,
        r11,
        r12,
        r13,
        r14,
        r15,
        rip: v.rip,
        rflags: v.rflags,
    }
}

fn kvm_dtable_of(name: &'static str, s: &SnpSegment) -> Result<kvm_dtable, VcpuStateError> {
    if s.selector != 0 || s.attrib != 0 || s.limit > 0xffff {
        return Err(VcpuStateError::DescriptorTable { name, selector: s.selector, attrib: s.attrib, limit: s.limit });
    }
    Ok(kvm_dtable { base: s.base, limit: s.limit as u16, padding: [0; 3] })
}

/// Whether every byte of a PAT value is a valid memory type (`kvm_pat_valid`).
fn pat_valid(pat: u64) -> bool {
    pat.to_le_bytes().iter().all(|b| matches!(b, 0 | 1 | 4 | 5 | 6 | 7))
}

impl KvmVcpuState {
    /// The KVM state for `v` in a VM whose `KVM_SEV_INIT2` got `vmsa_features`, or why
    /// KVM cannot produce `v`'s VMSA (see the module documentation for each rule).
    pub fn from_snp(v: &SnpVcpu, vmsa_features: u64) -> Result<Self, VcpuStateError> {
        let kvm_features = vmsa_features | SVM_SEV_FEAT_SNP_ACTIVE;
        if v.sev_features != kvm_features {
            return Err(VcpuStateError::SevFeatures { plan: v.sev_features, kvm: kvm_features });
        }
        if v.efer & EFER_SVME == 0 {
            return Err(VcpuStateError::EferWithoutSvme(v.efer));
        }
        if v.cr4 & CR4_MCE == 0 {
            return Err(VcpuStateError::Cr4WithoutMce(v.cr4));
        }
        if v.cr0 & CR0_NW_CD != 0 {
            return Err(VcpuStateError::Cr0CacheBits(v.cr0));
        }
        if v.cr2 != 0 {
            return Err(VcpuStateError::Cr2(v.cr2));
        }
        if v.dr7 & !DR7_FIXED_1 != 0 {
            return Err(VcpuStateError::Dr7(v.dr7));
        }
        if v.dr6 > u64::from(u32::MAX) {
            return Err(VcpuStateError::Dr6(v.dr6));
        }
        if v.rflags & RFLAGS_FIXED == 0 {
            return Err(VcpuStateError::Rflags(v.rflags));
        }
        if v.xcr0 & 1 == 0 {
            return Err(VcpuStateError::Xcr0(v.xcr0));
        }
        if !pat_valid(v.g_pat) {
            return Err(VcpuStateError::Pat(v.g_pat));
        }
        let segments = KvmSegments {
            es: kvm_segment_of("ES", &v.es)?,
            cs: kvm_segment_of("CS", &v.cs)?,
            ss: kvm_segment_of("SS", &v.ss)?,
            ds: kvm_segment_of("DS", &v.ds)?,
            fs: kvm_segment_of("FS", &v.fs)?,
            gs: kvm_segment_of("GS", &v.gs)?,
            tr: kvm_segment_of("TR", &v.tr)?,
            ldt: kvm_segment_of("LDTR", &v.ldtr)?,
        };
        if segments.ss.dpl != 0 {
            return Err(VcpuStateError::SsDpl(segments.ss.dpl));
        }
        let regs = regs_of(v);
        let fpu = kvm_fpu { fcw: v.x87_fcw, mxcsr: v.mxcsr, ..Default::default() };
        let debugregs = kvm_debugregs { dr6: v.dr6, dr7: v.dr7, ..Default::default() };
        Ok(Self {
            regs,
            segments,
            gdt: kvm_dtable_of("GDTR", &v.gdtr)?,
            idt: kvm_dtable_of("IDTR", &v.idtr)?,
            cr0: v.cr0,
            cr3: v.cr3,
            cr4: v.cr4,
            efer: v.efer & !EFER_SVME,
            fpu,
            xcr0: v.xcr0,
            debugregs,
            pat: v.g_pat,
            xss: v.xss,
        })
    }

    /// `base` (from `KVM_GET_SREGS`: APIC base and pending interrupts are kept) with this
    /// state's segments, descriptor tables, control registers and EFER.
    pub fn sregs(&self, base: kvm_sregs) -> kvm_sregs {
        let s = &self.segments;
        kvm_sregs {
            cs: s.cs,
            ds: s.ds,
            es: s.es,
            fs: s.fs,
            gs: s.gs,
            ss: s.ss,
            tr: s.tr,
            ldt: s.ldt,
            gdt: self.gdt,
            idt: self.idt,
            cr0: self.cr0,
            cr2: 0,
            cr3: self.cr3,
            cr4: self.cr4,
            efer: self.efer,
            ..base
        }
    }

    /// XCR0 as `KVM_SET_XCRS` takes it.
    pub fn xcrs(&self) -> kvm_xcrs {
        let mut xcrs = kvm_xcrs { nr_xcrs: 1, ..Default::default() };
        xcrs.xcrs[0].xcr = 0;
        xcrs.xcrs[0].value = self.xcr0;
        xcrs
    }

    /// `base` (from `KVM_GET_XSAVE`) with this state's x87 and SSE registers in the
    /// legacy area (FXSAVE layout: FCW at 0, FSW 2, abridged FTW 4, FOP 6, FIP 8, FDP 16,
    /// MXCSR 24, ST0-7 from 32, XMM0-15 from 160) and x87 and SSE marked in use in
    /// XSTATE_BV (byte 512), so that `KVM_SET_XSAVE` copies them. MXCSR_MASK (28) and the
    /// extended components are kept.
    pub fn xsave(&self, base: &kvm_xsave) -> kvm_xsave {
        let mut bytes = [0u8; 4096];
        for (chunk, word) in bytes.chunks_exact_mut(4).zip(base.region.iter()) {
            chunk.copy_from_slice(&word.to_le_bytes());
        }
        let f = &self.fpu;
        bytes[0..2].copy_from_slice(&f.fcw.to_le_bytes());
        bytes[2..4].copy_from_slice(&f.fsw.to_le_bytes());
        bytes[4] = f.ftwx;
        bytes[5] = 0;
        bytes[6..8].copy_from_slice(&f.last_opcode.to_le_bytes());
        bytes[8..16].copy_from_slice(&f.last_ip.to_le_bytes());
        bytes[16..24].copy_from_slice(&f.last_dp.to_le_bytes());
        bytes[24..28].copy_from_slice(&f.mxcsr.to_le_bytes());
        for (i, st) in f.fpr.iter().enumerate() {
            bytes[32 + 16 * i..48 + 16 * i].copy_from_slice(st);
        }
        for (i, xmm) in f.xmm.iter().enumerate() {
            bytes[160 + 16 * i..176 + 16 * i].copy_from_slice(xmm);
        }
        bytes[512] |= 0b11; // XSTATE_BV: x87, SSE
        let mut xsave = kvm_xsave::default();
        for (word, chunk) in xsave.region.iter_mut().zip(bytes.chunks_exact(4)) {
            *word = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        }
        xsave
    }
}

/// Gives `vcpu` the state `state`: `KVM_GET_SREGS` then `KVM_SET_SREGS`, `KVM_SET_REGS`,
/// `KVM_GET_XSAVE` then `KVM_SET_XSAVE`, `KVM_SET_XCRS`, `KVM_SET_DEBUGREGS`,
/// `KVM_SET_MSRS` (PAT; XSS when it is not 0, a new vCPU's value). Call it after
/// `KVM_SET_CPUID2` (XCR0 is checked against the vCPU's CPUID) and before
/// `KVM_SEV_SNP_LAUNCH_FINISH`, which turns this state into the VMSA. `kvm` tells the
/// XSAVE buffer's size (`KVM_CAP_XSAVE2`), which must be the 4096 bytes of
/// `struct kvm_xsave` (no dynamically enabled XSAVE feature such as AMX).
pub fn set_vcpu_state(kvm: &Kvm, vcpu: &VcpuFd, state: &KvmVcpuState) -> Result<(), VcpuStateError> {
    let err = |what| move |source| VcpuStateError::Ioctl { what, source };
    let base = vcpu.get_sregs().map_err(err("KVM_GET_SREGS"))?;
    vcpu.set_sregs(&state.sregs(base)).map_err(err("KVM_SET_SREGS"))?;
    vcpu.set_regs(&state.regs).map_err(err("KVM_SET_REGS"))?;
    let xsave_size = kvm.check_extension_int(Cap::Xsave2);
    if xsave_size > 4096 {
        return Err(VcpuStateError::XsaveSize(xsave_size));
    }
    let xsave = state.xsave(&vcpu.get_xsave().map_err(err("KVM_GET_XSAVE"))?);
    // SAFETY: KVM_SET_XSAVE reads the vCPU's XSAVE buffer size from `xsave`, which
    // KVM_CAP_XSAVE2 just said is at most the 4096 bytes of `struct kvm_xsave` (0 when
    // the capability is absent: then it is 4096).
    unsafe { vcpu.set_xsave(&xsave) }.map_err(err("KVM_SET_XSAVE"))?;
    vcpu.set_xcrs(&state.xcrs()).map_err(err("KVM_SET_XCRS"))?;
    vcpu.set_debug_regs(&state.debugregs).map_err(err("KVM_SET_DEBUGREGS"))?;
    // XSS is 0 in a new vCPU; it is written only when the plan wants another value
    // (KVM refuses XSS writes, even of 0, on hosts without XSAVES support).
    let mut entries = vec![kvm_msr_entry { index: MSR_IA32_CR_PAT, data: state.pat, ..Default::default() }];
    if state.xss != 0 {
        entries.push(kvm_msr_entry { index: MSR_IA32_XSS, data: state.xss, ..Default::default() });
    }
    let msrs = Msrs::from_entries(&entries).expect("two entries fit a kvm_msrs");
    let set = vcpu.set_msrs(&msrs).map_err(err("KVM_SET_MSRS"))?;
    if set != entries.len() {
        return Err(VcpuStateError::Msrs { set, given: entries.len() });
    }
    Ok(())
}

/// Gives `vcpu` the state of `v` in a VM whose `KVM_SEV_INIT2` got `vmsa_features`:
/// [`KvmVcpuState::from_snp`] then [`set_vcpu_state`].
pub fn set_snp_vcpu(kvm: &Kvm, vcpu: &VcpuFd, v: &SnpVcpu, vmsa_features: u64) -> Result<(), VcpuStateError> {
    set_vcpu_state(kvm, vcpu, &KvmVcpuState::from_snp(v, vmsa_features)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measure::snp::vmsa_page;
    use crate::plan::snp::{VcpuType, VmmType, BSP_RESET_EIP};

    /// What KVM writes into the VMSA for a vCPU with `state`, modelled from the kernel
    /// (`svm_set_segment`, `svm_set_efer`, `svm_set_cr0/4`, `sev_es_sync_vmsa`) with the
    /// offsets of `struct sev_es_save_area` (arch/x86/include/asm/svm.h), written here
    /// independently of `crate::measure::snp::vmsa`.
    fn kvm_vmsa_model(s: &KvmVcpuState, vmsa_features: u64) -> [u8; 4096] {
        let mut p = [0u8; 4096];
        let mut put = |at: usize, bytes: &[u8]| p[at..at + bytes.len()].copy_from_slice(bytes);
        let mut seg = |at: usize, k: &kvm_segment| {
            // svm_set_segment: attrib from the unpacked fields, P = present && !unusable.
            let attrib = u16::from(k.type_ & 0xf)
                | u16::from(k.s & 1) << 4
                | u16::from(k.dpl & 3) << 5
                | u16::from((k.present & 1 != 0 && k.unusable == 0) as u8) << 7
                | u16::from(k.avl & 1) << 8
                | u16::from(k.l & 1) << 9
                | u16::from(k.db & 1) << 10
                | u16::from(k.g & 1) << 11;
            put(at, &k.selector.to_le_bytes());
            put(at + 2, &attrib.to_le_bytes());
            put(at + 4, &k.limit.to_le_bytes());
            put(at + 8, &k.base.to_le_bytes());
        };
        // struct vmcb_seg es, cs, ss, ds, fs, gs, gdtr, ldtr, idtr, tr: 16 bytes each.
        let g = &s.segments;
        for (i, k) in [g.es, g.cs, g.ss, g.ds, g.fs, g.gs].iter().enumerate() {
            seg(i * 16, k);
        }
        seg(0x70, &g.ldt);
        seg(0x90, &g.tr);
        // svm_set_gdt/idt: limit and base only.
        put(0x64, &u32::from(s.gdt.limit).to_le_bytes());
        put(0x68, &s.gdt.base.to_le_bytes());
        put(0x84, &u32::from(s.idt.limit).to_le_bytes());
        put(0x88, &s.idt.base.to_le_bytes());
        put(0xcb, &[g.ss.dpl & 3]); // cpl
        put(0xd0, &(s.efer | EFER_SVME).to_le_bytes());
        put(0x140, &s.xss.to_le_bytes());
        put(0x148, &(s.cr4 | CR4_MCE).to_le_bytes());
        put(0x150, &s.cr3.to_le_bytes());
        put(0x158, &(s.cr0 & !CR0_NW_CD).to_le_bytes());
        put(0x160, &s.debugregs.dr7.to_le_bytes());
        put(0x168, &s.debugregs.dr6.to_le_bytes());
        let r = &s.regs;
        put(0x170, &(r.rflags | RFLAGS_FIXED).to_le_bytes());
        put(0x178, &r.rip.to_le_bytes());
        put(0x1d8, &r.rsp.to_le_bytes());
        put(0x1f8, &r.rax.to_le_bytes());
        put(0x268, &s.pat.to_le_bytes());
        for (at, v) in [(0x308, r.rcx), (0x310, r.rdx), (0x318, r.rbx), (0x328, r.rbp), (0x330, r.rsi), (0x338, r.rdi)]
        {
            put(at, &v.to_le_bytes());
        }
        for (i, v) in [r.r8, r.r9, r.r10, r.r11, r.r12, r.r13, r.r14, r.r15].iter().enumerate() {
            put(0x340 + 8 * i, &v.to_le_bytes());
        }
        put(0x3b0, &(vmsa_features | SVM_SEV_FEAT_SNP_ACTIVE).to_le_bytes());
        put(0x3e8, &s.xcr0.to_le_bytes());
        // x87_dp, mxcsr, x87_ftw, x87_fsw, x87_fcw, x87_fop, x87_ds, x87_cs, x87_rip.
        let f = &s.fpu;
        put(0x400, &f.last_dp.to_le_bytes());
        put(0x408, &f.mxcsr.to_le_bytes());
        put(0x40c, &u16::from(f.ftwx).to_le_bytes());
        put(0x40e, &f.fsw.to_le_bytes());
        put(0x410, &f.fcw.to_le_bytes());
        put(0x412, &f.last_opcode.to_le_bytes());
        put(0x418, &f.last_ip.to_le_bytes());
        for i in 0..8 {
            put(0x420 + 10 * i, &f.fpr[i][..10]);
        }
        for i in 0..16 {
            put(0x470 + 16 * i, &f.xmm[i]);
        }
        p
    }

    fn qemu(eip: u32) -> SnpVcpu {
        SnpVcpu::at_reset(eip, VcpuType::EpycMilan.signature(), 0x1, VmmType::Qemu)
    }

    /// A vCPU in 64-bit mode with every register different.
    fn busy() -> SnpVcpu {
        let code = SnpSegment { selector: 0x10, attrib: 0xa9b, limit: 0xffff_ffff, base: 0 };
        let data = SnpSegment { selector: 0x18, attrib: 0xc93, limit: 0xffff_ffff, base: 0x1234_0000 };
        SnpVcpu {
            es: data,
            cs: code,
            ss: data,
            ds: data,
            fs: SnpSegment { base: 0x7fff_0000_1000, ..data },
            gs: SnpSegment { base: 0xffff_8000_0000_2000, attrib: 0x193, ..data },
            gdtr: SnpSegment { selector: 0, attrib: 0, limit: 0x27, base: 0x9000 },
            ldtr: SnpSegment { selector: 0, attrib: 0x82, limit: 0xffff, base: 0 },
            idtr: SnpSegment { selector: 0, attrib: 0, limit: 0xfff, base: 0xa000 },
            tr: SnpSegment { selector: 0x28, attrib: 0x8b, limit: 0x67, base: 0xb000 },
            efer: 0x1d01,
            cr0: 0x8005_0033,
            cr3: 0x10_0000,
            cr4: 0x6f0,
            dr6: 0xffff_0ff0,
            dr7: 0x400,
            rflags: 0x246,
            rip: 0xffff_ffff_8100_0000,
            rsp: 0x8_0000,
            rax: 1,
            rbx: 2,
            rcx: 3,
            rdx: 4,
            rsi: 5,
            rdi: 6,
            rbp: 7,
            r8_to_r15: [8, 9, 10, 11, 12, 13, 14, 15],
            g_pat: 0x0007_0406_0007_0106,
            xcr0: 0x7,
            xss: 0,
            x87_fcw: 0x27f,
            mxcsr: 0x1fa0,
            sev_features: 0x21,
            ..SnpVcpu::default()
        }
    }

    #[test]
    fn qemu_reset_vcpus_give_the_measured_vmsa() {
        for v in [qemu(BSP_RESET_EIP), qemu(0x80_b004)] {
            let state = KvmVcpuState::from_snp(&v, 0).unwrap();

            assert_same_page(&kvm_vmsa_model(&state, 0), &vmsa_page(&v));
        }
    }

    #[test]
    fn a_64_bit_vcpu_with_every_register_set_gives_the_measured_vmsa() {
        let v = busy();

        let state = KvmVcpuState::from_snp(&v, 0x20).unwrap();

        assert_same_page(&kvm_vmsa_model(&state, 0x20), &vmsa_page(&v));
        assert_eq!(state.efer, 0xd01, "KVM gets EFER without SVME");
        assert_eq!((state.segments.cs.l, state.segments.cs.db, state.segments.cs.g), (1, 0, 1));
        assert_eq!((state.segments.gs.avl, state.segments.ss.db), (1, 1));
    }

    #[test]
    fn ec2_and_gce_reset_vcpus_map_too() {
        for vmm in [VmmType::Ec2, VmmType::Gce] {
            let v = SnpVcpu::at_reset(BSP_RESET_EIP, 0, 0x1, vmm);

            let state = KvmVcpuState::from_snp(&v, 0).unwrap();

            assert_same_page(&kvm_vmsa_model(&state, 0), &vmsa_page(&v));
        }
    }

    #[test]
    fn sev_features_must_be_init2_features_plus_snp_active() {
        let v = qemu(BSP_RESET_EIP); // sev_features 0x1

        assert_eq!(KvmVcpuState::from_snp(&v, 0x20), Err(VcpuStateError::SevFeatures { plan: 0x1, kvm: 0x21 }));
        let without_snp_active = SnpVcpu { sev_features: 0, ..qemu(BSP_RESET_EIP) };
        assert!(KvmVcpuState::from_snp(&without_snp_active, 0).is_err());
    }

    #[test]
    fn states_kvm_cannot_produce_are_refused() {
        let base = qemu(BSP_RESET_EIP);
        let cases: [(SnpVcpu, VcpuStateError); 11] = [
            (SnpVcpu { efer: 0, ..base.clone() }, VcpuStateError::EferWithoutSvme(0)),
            (SnpVcpu { cr4: 0, ..base.clone() }, VcpuStateError::Cr4WithoutMce(0)),
            (SnpVcpu { cr0: 0x6000_0010, ..base.clone() }, VcpuStateError::Cr0CacheBits(0x6000_0010)),
            (SnpVcpu { cr2: 0x1000, ..base.clone() }, VcpuStateError::Cr2(0x1000)),
            (SnpVcpu { dr7: 0x401, ..base.clone() }, VcpuStateError::Dr7(0x401)),
            (SnpVcpu { dr6: 1 << 32, ..base.clone() }, VcpuStateError::Dr6(1 << 32)),
            (SnpVcpu { rflags: 0, ..base.clone() }, VcpuStateError::Rflags(0)),
            (SnpVcpu { xcr0: 0, ..base.clone() }, VcpuStateError::Xcr0(0)),
            (SnpVcpu { g_pat: 0x2, ..base.clone() }, VcpuStateError::Pat(0x2)),
            (
                SnpVcpu { cs: SnpSegment { attrib: 0x109b, ..base.cs }, ..base.clone() },
                VcpuStateError::SegmentAttrib { name: "CS", attrib: 0x109b },
            ),
            (
                SnpVcpu { gdtr: SnpSegment { limit: 0x1_0000, ..base.gdtr }, ..base.clone() },
                VcpuStateError::DescriptorTable { name: "GDTR", selector: 0, attrib: 0, limit: 0x1_0000 },
            ),
        ];
        for (v, expected) in cases {
            assert_eq!(KvmVcpuState::from_snp(&v, 0), Err(expected));
        }
        let ring3_stack = SnpVcpu { ss: SnpSegment { attrib: 0xf3, ..base.ss }, ..base };
        assert_eq!(KvmVcpuState::from_snp(&ring3_stack, 0), Err(VcpuStateError::SsDpl(3)));
    }

    #[test]
    fn sregs_keep_the_apic_base_and_pending_interrupts() {
        let state = KvmVcpuState::from_snp(&qemu(BSP_RESET_EIP), 0).unwrap();
        let base = kvm_sregs { apic_base: 0xfee0_0900, interrupt_bitmap: [1, 2, 3, 4], cr8: 5, ..Default::default() };

        let sregs = state.sregs(base);

        assert_eq!((sregs.apic_base, sregs.interrupt_bitmap, sregs.cr8), (0xfee0_0900, [1, 2, 3, 4], 5));
        assert_eq!((sregs.cs.selector, sregs.cs.base, sregs.efer, sregs.cr4), (0xf000, 0xffff_0000, 0, 0x40));
    }

    /// Reads a vCPU's state back into a KvmVcpuState.
    fn read_back(vcpu: &VcpuFd) -> KvmVcpuState {
        let sregs = vcpu.get_sregs().unwrap();
        let xcrs = vcpu.get_xcrs().unwrap();
        let mut msrs = Msrs::from_entries(&[kvm_msr_entry { index: MSR_IA32_CR_PAT, ..Default::default() }]).unwrap();
        assert_eq!(vcpu.get_msrs(&mut msrs).unwrap(), 1);
        let x = vcpu.get_xsave().unwrap();
        // FCW and MXCSR from the legacy area (KVM_GET_FPU has no MXCSR).
        let fpu = kvm_fpu { fcw: x.region[0] as u16, mxcsr: x.region[6], ..vcpu.get_fpu().unwrap() };
        KvmVcpuState {
            regs: vcpu.get_regs().unwrap(),
            segments: KvmSegments {
                es: sregs.es,
                cs: sregs.cs,
                ss: sregs.ss,
                ds: sregs.ds,
                fs: sregs.fs,
                gs: sregs.gs,
                tr: sregs.tr,
                ldt: sregs.ldt,
            },
            gdt: sregs.gdt,
            idt: sregs.idt,
            cr0: sregs.cr0,
            cr3: sregs.cr3,
            cr4: sregs.cr4,
            efer: sregs.efer,
            fpu,
            xcr0: xcrs.xcrs[..xcrs.nr_xcrs as usize].iter().find(|x| x.xcr == 0).unwrap().value,
            debugregs: vcpu.get_debug_regs().unwrap(),
            pat: msrs.as_slice()[0].data,
            xss: 0, // not set (the plan's is 0), and this host's KVM cannot read it
        }
    }

    #[test]
    fn kvm_accepts_the_state_and_reads_it_back_into_the_measured_vmsa() {
        // A default VM on this host's KVM: it has no VMSA, but it takes the same ioctls;
        // what it reads back, run through the model of KVM's VMSA sync, must still give
        // the measured page.
        let kvm = kvm_ioctls::Kvm::new().unwrap();
        let vm = kvm.create_vm().unwrap();
        let vcpu = vm.create_vcpu(0).unwrap();
        let cpuid = kvm.get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES).unwrap();
        vcpu.set_cpuid2(&cpuid).unwrap();
        let v = qemu(BSP_RESET_EIP);

        set_snp_vcpu(&kvm, &vcpu, &v, 0).unwrap();

        let back = read_back(&vcpu);
        assert_same_page(&kvm_vmsa_model(&back, 0), &vmsa_page(&v));
    }

    #[test]
    fn fcw_and_mxcsr_reach_the_xsave_buffer() {
        // KVM_SET_FPU ignores MXCSR: the EC2 state (FCW 0, MXCSR 0) and a custom one must
        // both arrive, read back through KVM_GET_XSAVE.
        let kvm = kvm_ioctls::Kvm::new().unwrap();
        let vm = kvm.create_vm().unwrap();
        let vcpu = vm.create_vcpu(0).unwrap();
        vcpu.set_cpuid2(&kvm.get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES).unwrap()).unwrap();
        for (fcw, mxcsr) in [(0, 0), (0x27f, 0x1fa0)] {
            let v = SnpVcpu { x87_fcw: fcw, mxcsr, ..qemu(BSP_RESET_EIP) };

            set_snp_vcpu(&kvm, &vcpu, &v, 0).unwrap();

            let x = vcpu.get_xsave().unwrap();
            assert_eq!((x.region[0] & 0xffff, x.region[6]), (u32::from(fcw), mxcsr));
        }
    }

    #[test]
    fn xsave_keeps_mxcsr_mask_and_extended_state() {
        let state = KvmVcpuState::from_snp(&qemu(BSP_RESET_EIP), 0).unwrap();
        let mut base = kvm_xsave::default();
        base.region[0] = 0xdead_0000; // FSW/FCW garbage, replaced
        base.region[7] = 0xffbf; // MXCSR_MASK, kept
        base.region[128] = 0x4; // XSTATE_BV: YMM in use, kept
        base.region[200] = 0x1234; // YMM state, kept

        let x = state.xsave(&base);

        assert_eq!((x.region[0], x.region[6], x.region[7]), (0x37f, 0x1f80, 0xffbf));
        assert_eq!((x.region[128], x.region[200]), (0x7, 0x1234));
    }

    /// Compares two VMSA pages, naming the first differing offset instead of printing
    /// 4096 bytes.
    fn assert_same_page(got: &[u8; 4096], want: &[u8; 4096]) {
        if let Some(at) = got.iter().zip(want.iter()).position(|(a, b)| a != b) {
            panic!("VMSA differs first at {at:#x}: got {:02x?}, want {:02x?}", &got[at..at + 8], &want[at..at + 8]);
        }
    }
}
