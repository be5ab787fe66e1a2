//! The SEV-ES/SNP VMSA page (the encrypted save area, AMD APM vol. 2 table B-4; Linux
//! `struct sev_es_save_area`) built from an [`SnpVcpu`]: what KVM writes at
//! SNP_LAUNCH_FINISH for a vCPU with that register state, and what the firmware
//! measures as the vCPU's VMSA page. The field offsets are [`arch::ghcb::vmsa`]'s,
//! which the guest firmware uses too (it builds the VMSAs of the APs it starts).

use crate::bytes::{le_u16, le_u32, le_u64};
use crate::plan::snp::{SnpSegment, SnpVcpu};

/// Size of a VMSA page.
pub const VMSA_SIZE: usize = 0x1000;

fn put(page: &mut [u8; VMSA_SIZE], at: usize, bytes: &[u8]) {
    page[at..at + bytes.len()].copy_from_slice(bytes);
}

fn put_segment(page: &mut [u8; VMSA_SIZE], at: usize, s: &SnpSegment) {
    put(page, at, &s.selector.to_le_bytes());
    put(page, at + 2, &s.attrib.to_le_bytes());
    put(page, at + 4, &s.limit.to_le_bytes());
    put(page, at + 8, &s.base.to_le_bytes());
}

/// The VMSA page of a vCPU with state `v`; every field not in [`SnpVcpu`] is zero.
pub fn vmsa_page(v: &SnpVcpu) -> [u8; VMSA_SIZE] {
    use arch::ghcb::vmsa::*;
    let mut p = [0u8; VMSA_SIZE];
    let segments = [
        (ES, &v.es),
        (CS, &v.cs),
        (SS, &v.ss),
        (DS, &v.ds),
        (FS, &v.fs),
        (GS, &v.gs),
        (GDTR, &v.gdtr),
        (LDTR, &v.ldtr),
        (IDTR, &v.idtr),
        (TR, &v.tr),
    ];
    for (at, s) in segments {
        put_segment(&mut p, at, s);
    }
    let qwords = [
        (EFER, v.efer),
        (XSS, v.xss),
        (CR4, v.cr4),
        (CR3, v.cr3),
        (CR0, v.cr0),
        (DR7, v.dr7),
        (DR6, v.dr6),
        (RFLAGS, v.rflags),
        (RIP, v.rip),
        (RSP, v.rsp),
        (RAX, v.rax),
        (CR2, v.cr2),
        (G_PAT, v.g_pat),
        (RCX, v.rcx),
        (RDX, v.rdx),
        (RBX, v.rbx),
        (RBP, v.rbp),
        (RSI, v.rsi),
        (RDI, v.rdi),
        (SEV_FEATURES, v.sev_features),
        (XCR0, v.xcr0),
    ];
    for (at, value) in qwords {
        put(&mut p, at, &value.to_le_bytes());
    }
    for (i, r) in v.r8_to_r15.iter().enumerate() {
        put(&mut p, R8 + 8 * i, &r.to_le_bytes());
    }
    put(&mut p, MXCSR, &v.mxcsr.to_le_bytes());
    put(&mut p, X87_FCW, &v.x87_fcw.to_le_bytes());
    p
}

fn get_segment(page: &[u8; VMSA_SIZE], at: usize) -> SnpSegment {
    SnpSegment {
        selector: le_u16(page, at),
        attrib: le_u16(page, at + 2),
        limit: le_u32(page, at + 4),
        base: le_u64(page, at + 8),
    }
}

/// The register state a VMSA page holds: the inverse of [`vmsa_page`] for the fields
/// [`SnpVcpu`] has (what the emulated platform starts an AP from when the guest
/// creates it with a VMSA of its own).
pub fn parse_vmsa(p: &[u8; VMSA_SIZE]) -> SnpVcpu {
    use arch::ghcb::vmsa::*;
    let mut r8_to_r15 = [0u64; 8];
    for (i, r) in r8_to_r15.iter_mut().enumerate() {
        *r = le_u64(p, R8 + 8 * i);
    }
    SnpVcpu {
        es: get_segment(p, ES),
        cs: get_segment(p, CS),
        ss: get_segment(p, SS),
        ds: get_segment(p, DS),
        fs: get_segment(p, FS),
        gs: get_segment(p, GS),
        gdtr: get_segment(p, GDTR),
        ldtr: get_segment(p, LDTR),
        idtr: get_segment(p, IDTR),
        tr: get_segment(p, TR),
        efer: le_u64(p, EFER),
        cr0: le_u64(p, CR0),
        cr2: le_u64(p, CR2),
        cr3: le_u64(p, CR3),
        cr4: le_u64(p, CR4),
        dr6: le_u64(p, DR6),
        dr7: le_u64(p, DR7),
        rflags: le_u64(p, RFLAGS),
        rip: le_u64(p, RIP),
        rsp: le_u64(p, RSP),
        rax: le_u64(p, RAX),
        rbx: le_u64(p, RBX),
        rcx: le_u64(p, RCX),
        rdx: le_u64(p, RDX),
        rsi: le_u64(p, RSI),
        rdi: le_u64(p, RDI),
        rbp: le_u64(p, RBP),
        r8_to_r15,
        g_pat: le_u64(p, G_PAT),
        xcr0: le_u64(p, XCR0),
        xss: le_u64(p, XSS),
        x87_fcw: le_u16(p, X87_FCW),
        mxcsr: le_u32(p, MXCSR),
        sev_features: le_u64(p, SEV_FEATURES),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::snp::{VcpuType, VmmType, BSP_RESET_EIP};

    #[test]
    fn parse_vmsa_inverts_vmsa_page() {
        let mut v = SnpVcpu::at_reset(BSP_RESET_EIP, VcpuType::EpycV4.signature(), 1, VmmType::Qemu);
        v.rsp = 0x1234_5678;
        v.r8_to_r15[7] = 15;
        v.cr3 = 0x9000;
        assert_eq!(parse_vmsa(&vmsa_page(&v)), v);
    }
    use sha2::{Digest, Sha384};

    fn u64_at(p: &[u8], at: usize) -> u64 {
        u64::from_le_bytes(p[at..at + 8].try_into().unwrap())
    }

    #[test]
    fn offsets_match_the_kernel_save_area_layout() {
        // struct sev_es_save_area (arch/x86/include/asm/svm.h), checked against
        // sev-snp-measure's ctypes layout of the same structure.
        use arch::ghcb::vmsa::*;
        assert_eq!((TR, EFER, XSS, RIP, RSP, RAX, CR2, G_PAT), (0x90, 0xd0, 0x140, 0x178, 0x1d8, 0x1f8, 0x240, 0x268));
        assert_eq!(
            (RCX, RDX, RBX, RBP, R8 + 7 * 8, SEV_FEATURES, XCR0),
            (0x308, 0x310, 0x318, 0x328, 0x378, 0x3b0, 0x3e8)
        );
        assert_eq!((MXCSR, X87_FCW), (0x408, 0x410));
    }

    #[test]
    fn every_field_lands_at_its_offset_and_nothing_else_is_written() {
        let v = SnpVcpu {
            cs: SnpSegment { selector: 0x1111, attrib: 0x2222, limit: 0x3333_3333, base: 0x4444_4444_4444_4444 },
            rdx: 0x55,
            r8_to_r15: [1, 2, 3, 4, 5, 6, 7, 8],
            x87_fcw: 0x37f,
            ..SnpVcpu::default()
        };

        let p = vmsa_page(&v);

        assert_eq!(
            p[0x10..0x20],
            [0x11, 0x11, 0x22, 0x22, 0x33, 0x33, 0x33, 0x33, 0x44, 0x44, 0x44, 0x44, 0x44, 0x44, 0x44, 0x44]
        );
        assert_eq!(u64_at(&p, 0x310), 0x55);
        assert_eq!(u64_at(&p, 0x340), 1);
        assert_eq!(u64_at(&p, 0x378), 8);
        assert_eq!(p[0x410..0x412], [0x7f, 0x03]);
        let nonzero = p.iter().filter(|&&b| b != 0).count();
        assert_eq!(nonzero, 16 + 1 + 8 + 2);
    }

    #[test]
    fn default_state_is_an_all_zero_page() {
        assert_eq!(vmsa_page(&SnpVcpu::default()), [0u8; VMSA_SIZE]);
    }

    #[test]
    fn qemu_bsp_vmsa_equals_sev_snp_measure_dump() {
        // sha384 of vmsa0.bin from `sev-snp-measure --mode snp --vcpus 1 --vcpu-type EPYC-v4
        // --ovmf /usr/share/ovmf/OVMF.fd --dump-vmsa` (guest features 0x1).
        let v = SnpVcpu::at_reset(BSP_RESET_EIP, VcpuType::EpycV4.signature(), 0x1, VmmType::Qemu);

        let page = vmsa_page(&v);

        assert_eq!(hex::encode(Sha384::digest(page)), QEMU_EPYC_V4_BSP_SHA384);
    }

    const QEMU_EPYC_V4_BSP_SHA384: &str =
        "77920c4c629ff47e90c0e174fc1ad0eb6fa664f88cd4739488058a8c6cb1a77b3856f55378e9518d0da99452d51c553a";
}
