//! The SEV-SNP launch digest: the PAGE_INFO chain the SNP firmware extends at each
//! SNP_LAUNCH_UPDATE page and at each VMSA (SEV-SNP firmware ABI, "PAGE_INFO"),
//! computed from a [`LaunchPlan`] ([`launch_digest`]) or page by page ([`SnpDigest`],
//! for the emulated PSP).
//!
//! For each page, `digest = SHA-384(PAGE_INFO)` where PAGE_INFO (0x70 bytes) is the
//! current digest (48 bytes), the page's contents hash (48 bytes: SHA-384 of the page
//! for NORMAL and VMSA pages, zero for ZERO, UNMEASURED, SECRETS and CPUID pages), the
//! structure's length (`u16` 0x70), the page type (`u8`), IMI_PAGE (`u8`, 0), the
//! VMPL3/2/1 permissions (`u8` each, 0), a reserved byte, and the page's GPA (`u64`).
//! The digest starts as 48 zero bytes. KVM's VMSAs are measured after all other
//! pages, in vCPU order, at GPA [`VMSA_GPA`].

#[path = "vmsa.rs"]
pub mod vmsa;

pub use vmsa::{parse_vmsa, vmsa_page, VMSA_SIZE};

use sha2::{Digest, Sha384};
use thiserror::Error;

use crate::plan::snp::SnpVcpu;
use crate::plan::{Contents, LaunchPlan, PageType, PlanError, PlanRange, SnpPageType, VcpuState, PAGE_SIZE};

/// Size of a launch digest (SHA-384).
pub const LD_SIZE: usize = 48;

/// A launch digest.
pub type LaunchDigest = [u8; LD_SIZE];

/// The GPA at which VMSA pages are measured: the RMP records a VMSA at GPA -1, page
/// aligned and cut to bits 51:12.
pub const VMSA_GPA: u64 = 0xFFFF_FFFF_F000;

/// Length of the PAGE_INFO structure.
const PAGE_INFO_LEN: usize = 0x70;

const PAGE: usize = PAGE_SIZE as usize;

/// Pages a hashing thread hashes and hands over at a time (256 KiB).
const BLOCK_PAGES: usize = 64;

/// Blocks each hashing thread may have ready before the chain consumes them.
const BLOCKS_IN_FLIGHT: usize = 4;

/// Ranges smaller than this (1 MiB) are hashed on the calling thread.
const PARALLEL_MIN_PAGES: usize = 256;

/// Most threads [`launch_digest`] hashes page contents with.
const MAX_THREADS: usize = 8;

/// Errors from computing a launch digest from a plan.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SnpMeasureError {
    /// A range whose page type is not an SNP page type.
    #[error("plan range '{what}' at {gpa:#x} is not an SEV-SNP range ({page_type:?})")]
    NotSnpRange {
        /// The range.
        what: String,
        /// Its address.
        gpa: u64,
        /// Its type.
        page_type: PageType,
    },
    /// A vCPU whose state is not SNP state.
    #[error("vCPU {index} of the plan has no SEV-SNP register state")]
    NotSnpVcpu {
        /// vCPU index.
        index: usize,
    },
    /// A range that is unaligned, wraps, or whose contents are not its length.
    #[error("malformed plan: {0}")]
    Range(#[from] PlanError),
}

/// Whether the firmware hashes a page's contents into PAGE_INFO for this page type.
pub fn contents_measured(page_type: SnpPageType) -> bool {
    matches!(page_type, SnpPageType::Normal | SnpPageType::Vmsa)
}

/// The launch digest, extended one page at a time as the SNP firmware does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnpDigest {
    ld: LaunchDigest,
}

impl Default for SnpDigest {
    fn default() -> Self {
        Self::new()
    }
}

impl SnpDigest {
    /// A digest at the start of a launch (all zero).
    pub fn new() -> Self {
        Self { ld: [0; LD_SIZE] }
    }

    /// A digest that continues from `ld` (e.g. a precomputed firmware digest).
    pub fn from_seed(ld: LaunchDigest) -> Self {
        Self { ld }
    }

    /// Extends the digest with one PAGE_INFO whose contents hash is `contents_hash`.
    pub fn update_page_info(&mut self, gpa: u64, page_type: SnpPageType, contents_hash: &[u8; LD_SIZE]) {
        let mut info = [0u8; PAGE_INFO_LEN];
        info[..0x30].copy_from_slice(&self.ld);
        info[0x30..0x60].copy_from_slice(contents_hash);
        info[0x60..0x62].copy_from_slice(&(PAGE_INFO_LEN as u16).to_le_bytes());
        info[0x62] = page_type as u8;
        // 0x63 IMI_PAGE, 0x64..0x67 VMPL3/2/1 permissions, 0x67 reserved: all zero.
        info[0x68..0x70].copy_from_slice(&gpa.to_le_bytes());
        self.ld = Sha384::digest(info).into();
    }

    /// Extends the digest with one page at `gpa` as SNP_LAUNCH_UPDATE does: `page` is
    /// hashed for NORMAL and VMSA pages and ignored (a zero contents hash) for the
    /// other types.
    pub fn update_page(&mut self, gpa: u64, page_type: SnpPageType, page: &[u8; PAGE]) {
        let hash = if contents_measured(page_type) { Sha384::digest(page).into() } else { [0; LD_SIZE] };
        self.update_page_info(gpa, page_type, &hash);
    }

    /// Extends the digest with a page of a type whose contents are not measured (ZERO,
    /// UNMEASURED, SECRETS, CPUID).
    pub fn update_unmeasured_page(&mut self, gpa: u64, page_type: SnpPageType) {
        self.update_page_info(gpa, page_type, &[0; LD_SIZE]);
    }

    /// Extends the digest with the VMSA KVM builds for `vcpu` at SNP_LAUNCH_FINISH.
    pub fn update_vmsa(&mut self, vcpu: &SnpVcpu) {
        self.update_page(VMSA_GPA, SnpPageType::Vmsa, &vmsa_page(vcpu));
    }

    /// The digest so far.
    pub fn current(&self) -> LaunchDigest {
        self.ld
    }

    /// The final digest.
    pub fn finish(self) -> LaunchDigest {
        self.ld
    }
}

/// The launch digest of `plan`: every range's pages in plan order, then one VMSA per
/// vCPU in vCPU order.
///
/// The contents of large measured ranges are hashed on several threads while the
/// chain, which is sequential, runs on the calling thread; the result does not depend
/// on the number of threads.
pub fn launch_digest(plan: &LaunchPlan) -> Result<LaunchDigest, SnpMeasureError> {
    // The host's parallelism is read once: reading it costs system calls, which small
    // plans (and the fuzz targets, digest after digest) would pay every time.
    static THREADS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    let threads = *THREADS.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()).min(MAX_THREADS));
    let mut digest = SnpDigest::new();
    for range in &plan.ranges {
        let page_type = snp_page_type(range)?;
        range.check()?; // the plan's fields are public: check again
        match (&range.contents, contents_measured(page_type)) {
            (Contents::Bytes(bytes), true) => chain_pages(&mut digest, range.gpa, page_type, bytes, threads),
            (Contents::Zero, true) => {
                let hash: [u8; LD_SIZE] = Sha384::digest([0u8; PAGE]).into();
                for i in 0..range.pages() {
                    digest.update_page_info(range.gpa + i * PAGE_SIZE, page_type, &hash);
                }
            }
            (_, false) => {
                for i in 0..range.pages() {
                    digest.update_unmeasured_page(range.gpa + i * PAGE_SIZE, page_type);
                }
            }
        }
    }
    for (index, vcpu) in plan.vcpus.iter().enumerate() {
        match vcpu {
            VcpuState::Snp(v) => digest.update_vmsa(v),
            VcpuState::Tdx { .. } => return Err(SnpMeasureError::NotSnpVcpu { index }),
        }
    }
    Ok(digest.finish())
}

fn snp_page_type(range: &PlanRange) -> Result<SnpPageType, SnpMeasureError> {
    match range.page_type {
        PageType::Snp(t) => Ok(t),
        page_type => Err(SnpMeasureError::NotSnpRange { what: range.what.clone(), gpa: range.gpa, page_type }),
    }
}

/// Extends `digest` with the pages of `bytes` (a whole number of pages) from `gpa`.
///
/// Large ranges are hashed by `threads` threads, each taking every `threads`-th block
/// of [`BLOCK_PAGES`] pages and sending the block's hashes over its own bounded
/// channel, while the calling thread chains the blocks in order as they arrive: the
/// hashing never waits for the chain, and memory stays bounded.
fn chain_pages(digest: &mut SnpDigest, gpa: u64, page_type: SnpPageType, bytes: &[u8], threads: usize) {
    let pages = bytes.len() / PAGE;
    if threads <= 1 || pages < PARALLEL_MIN_PAGES {
        for (page, gpa) in bytes.chunks_exact(PAGE).zip((gpa..).step_by(PAGE)) {
            digest.update_page_info(gpa, page_type, &Sha384::digest(page).into());
        }
        return;
    }
    let blocks = pages.div_ceil(BLOCK_PAGES);
    std::thread::scope(|s| {
        let receivers: Vec<_> = (0..threads)
            .map(|first| {
                let (tx, rx) = std::sync::mpsc::sync_channel::<[[u8; LD_SIZE]; BLOCK_PAGES]>(BLOCKS_IN_FLIGHT);
                s.spawn(move || {
                    for block in (first..blocks).step_by(threads) {
                        let start = block * BLOCK_PAGES * PAGE;
                        let end = bytes.len().min(start + BLOCK_PAGES * PAGE);
                        let mut hashes = [[0u8; LD_SIZE]; BLOCK_PAGES];
                        for (page, hash) in bytes[start..end].chunks_exact(PAGE).zip(&mut hashes) {
                            *hash = Sha384::digest(page).into();
                        }
                        if tx.send(hashes).is_err() {
                            return; // the chain stopped: a sibling thread panicked
                        }
                    }
                });
                rx
            })
            .collect();
        let mut gpa = gpa;
        for block in 0..blocks {
            // A closed channel means its thread panicked; the scope re-raises that panic.
            let Ok(hashes) = receivers[block % threads].recv() else { break };
            let n = BLOCK_PAGES.min(pages - block * BLOCK_PAGES);
            for hash in &hashes[..n] {
                digest.update_page_info(gpa, page_type, hash);
                gpa += PAGE_SIZE;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::snp::{plan_snp, KernelHashesInput, SnpPlanOptions, VcpuType, VmmType};
    use std::sync::Arc;

    fn debian_ovmf() -> Vec<u8> {
        std::fs::read("/usr/share/ovmf/OVMF.fd")
            .unwrap_or_else(|e| panic!("/usr/share/ovmf/OVMF.fd: {e}: apt-get install ovmf (scripts/setup.sh does)"))
    }

    fn digest_hex(fw: &[u8], vcpus: u32, vcpu_type: VcpuType, vmm_type: VmmType, guest_features: u64) -> String {
        let opts =
            SnpPlanOptions { firmware: fw.into(), vcpus, vcpu_type, vmm_type, guest_features, kernel_hashes: None };
        hex::encode(launch_digest(&plan_snp(&opts).unwrap()).unwrap())
    }

    /// sev-snp-measure 0.0.13 on Debian 12's OVMF.fd (shared/refs/measurements.md):
    /// (type, vCPUs, guest features 0x1, guest features 0x0).
    const REFS: [(VcpuType, u32, &str, &str); 9] = [
        (
            VcpuType::EpycV4,
            1,
            "11570979c77a0adb515761a702527c8b9e11554e730552621d950988613a3a75c6ff1703f540bd22a9beede8fe7a97e3",
            "b7440647fbed6ab8aeb224e1b500ec2344827b21ffffcc253275fee874b4ae6113a9676b1d7cf7d449982d6e992e4086",
        ),
        (
            VcpuType::EpycV4,
            2,
            "a5b54e62ae971b58274dd24cc6c47b842662617036e7bd67d7326c07ac6363f35399ef933330a5ea160cead90a00603f",
            "32b0e271e489939b76ff75101ee9a2c7c34c0a7b928cbb72c50390cdb76f61c85cb05153bccee126b97cfcd8ba9dc9da",
        ),
        (
            VcpuType::EpycV4,
            4,
            "32ac9d7a17d28f7cd4404a4516d2f00519668c40ada2062351c36767e908eb3f090d66c33ab10f80150e00a4385b6d0f",
            "190740cc55ed501f257c92db32a53d9c924d380e281851624b8a052aa829f16f2dcb0f415834c1b1988ade957eb077f2",
        ),
        (
            VcpuType::EpycMilan,
            1,
            "80479ca85a2b182c026f6a3a2f2b180ab968d84b17540dd30de39039e70b8c0c33ead2cae6d34e37750035fcff60bfc8",
            "b9d77a573091dec8f27b44d921ec999a2a2222583e7bbe233418154c440c29a3b09872cb3ee8184678d32514fe8ad7cd",
        ),
        (
            VcpuType::EpycMilan,
            2,
            "a175292a4a09fcfb760c5bd80c93ed667dbaafce6247d0f21fc06638658b3ebf2804d3019e2abed05cb6a9efe0a7464e",
            "3f3a377abdf0964d0fb78d53cd1107bf7dca927245b9a46c1e2626a5af558cc9dcf8dd4c767e670e9f3d229716a157a3",
        ),
        (
            VcpuType::EpycMilan,
            4,
            "e9c10ab98f8086bf4a4993dcdc1f768b1128bcb02301d1791f1d3274329e790db2d12a301d66d99a462a13b5d87e2840",
            "d7393049d55b0518827ccc5bdc522ce79bb01c3c2bf52e076f152ff73baa813b39c47e3ff0c2e6119c88eca7ed63a0d7",
        ),
        (
            VcpuType::EpycGenoa,
            1,
            "98988ff584a1d2b80cbac0c290d592aec2caf460ca58ec34f13c29d44b84dcc3141a8571bb1747aba84fe30c36b2c757",
            "656c84836f2ea3e0cfd7eddd61d4caa91b3d5b3a76b3536cd77e5f9d6f2049110af714597dedc4b54214dd19d0529539",
        ),
        (
            VcpuType::EpycGenoa,
            2,
            "143c7e1f11948ce6cbc700b16c3acff0797146df54b0b3d6c5899dc30dc8e31c34a2217d162a219bbbf7a2a1aedd104a",
            "69096ef668277551becb954876d3c102026d589934b68df2acdb8660bc944b4ab421cb4dbee35d706a1326b0bba6a674",
        ),
        (
            VcpuType::EpycGenoa,
            4,
            "a509186122f6e4e095ebab39abf4aea568d9949b9e929d0759f45a3983dfc2df71404de97367aba26c08ddeebc3d7ba0",
            "f4d1f6cf6b5c9d2f7af396c56e0cfff936ba5211d534219102a84b4f9c7554334589cc73d355409cc522b2e9e5cdcf73",
        ),
    ];

    #[test]
    fn debian_ovmf_digests_equal_sev_snp_measure_refs() {
        let fw = debian_ovmf();
        for (t, vcpus, gf1, gf0) in REFS {
            assert_eq!(digest_hex(&fw, vcpus, t, VmmType::Qemu, 0x1), gf1, "{t} x{vcpus} gf 0x1");
            assert_eq!(digest_hex(&fw, vcpus, t, VmmType::Qemu, 0x0), gf0, "{t} x{vcpus} gf 0x0");
        }
    }

    #[test]
    fn debian_ovmf_ec2_and_gce_digests_equal_sev_snp_measure_refs() {
        let fw = debian_ovmf();

        let ec2 = digest_hex(&fw, 1, VcpuType::EpycV4, VmmType::Ec2, 0x1);
        let gce = digest_hex(&fw, 1, VcpuType::EpycV4, VmmType::Gce, 0x1);

        assert_eq!(
            ec2,
            "0aaa035d47b06741a745a62cb88eade395f648a7383d71cc322fab9df33859ca3c188a0578534c01526f1b4c0f0b0eb6"
        );
        assert_eq!(
            gce,
            "6c5ed8d7d566801c36cf93c1e735e111d212d71892755cc9967a50c67f72e387909cfd3a3961b10d2799f7779f3beac6"
        );
    }

    #[test]
    fn step_function_gives_the_plan_digest() {
        let fw = debian_ovmf();
        let opts = SnpPlanOptions {
            firmware: fw.as_slice().into(),
            vcpus: 2,
            vcpu_type: VcpuType::EpycMilan,
            vmm_type: VmmType::Qemu,
            guest_features: 1,
            kernel_hashes: None,
        };
        let plan = plan_snp(&opts).unwrap();

        let mut d = SnpDigest::new();
        for r in &plan.ranges {
            let PageType::Snp(t) = r.page_type else { panic!("not SNP") };
            for i in 0..r.pages() {
                d.update_page(r.gpa + i * PAGE_SIZE, t, r.page(i).try_into().unwrap());
            }
        }
        for v in &plan.vcpus {
            let VcpuState::Snp(v) = v else { panic!("not SNP") };
            d.update_vmsa(v);
        }

        assert_eq!(d.finish(), launch_digest(&plan).unwrap());
    }

    #[test]
    fn page_info_chain_of_one_zero_page_is_sha384_of_the_structure() {
        let mut info = [0u8; 0x70];
        info[0x60] = 0x70;
        info[0x62] = 3;
        info[0x68..0x70].copy_from_slice(&0x1234_5000u64.to_le_bytes());
        let mut d = SnpDigest::new();

        d.update_unmeasured_page(0x1234_5000, SnpPageType::Zero);

        assert_eq!(d.current(), <[u8; 48]>::from(Sha384::digest(info)));
    }

    #[test]
    fn update_page_ignores_contents_of_unmeasured_types_and_hashes_normal_ones() {
        let page = [0xa5u8; PAGE];
        for t in [SnpPageType::Zero, SnpPageType::Unmeasured, SnpPageType::Secrets, SnpPageType::Cpuid] {
            let (mut a, mut b) = (SnpDigest::new(), SnpDigest::new());

            a.update_page(0x1000, t, &page);
            b.update_unmeasured_page(0x1000, t);

            assert_eq!(a, b, "{t:?}");
        }
        let (mut a, mut b) = (SnpDigest::new(), SnpDigest::new());
        a.update_page(0x1000, SnpPageType::Normal, &page);
        b.update_page(0x1000, SnpPageType::Normal, &[0; PAGE]);
        assert_ne!(a, b);
    }

    #[test]
    fn parallel_hashing_gives_the_sequential_digest() {
        // 5 MiB + 1 page of varied bytes: several threads and an uneven split.
        let bytes: Vec<u8> = (0..(1281 * PAGE) as u32).map(|i| (i.wrapping_mul(2654435761) >> 24) as u8).collect();
        let mut plan = LaunchPlan::default();
        plan.push(PlanRange {
            gpa: 0x10_0000,
            len: bytes.len() as u64,
            page_type: PageType::Snp(SnpPageType::Normal),
            contents: Contents::Bytes(Arc::from(&bytes[..])),
            what: "big".into(),
        })
        .unwrap();
        let mut d = SnpDigest::new();
        for (i, p) in bytes.chunks_exact(PAGE).enumerate() {
            d.update_page(0x10_0000 + (i * PAGE) as u64, SnpPageType::Normal, p.try_into().unwrap());
        }

        assert_eq!(launch_digest(&plan).unwrap(), d.finish());
    }

    #[test]
    fn normal_zero_contents_hash_the_zero_page() {
        let zero_range = PlanRange {
            gpa: 0x2000,
            len: 0x2000,
            page_type: PageType::Snp(SnpPageType::Normal),
            contents: Contents::Zero,
            what: "z".into(),
        };
        let bytes_range = PlanRange { contents: Contents::Bytes(Arc::from(&[0u8; 0x2000][..])), ..zero_range.clone() };

        let a = launch_digest(&LaunchPlan { ranges: vec![zero_range], vcpus: vec![] }).unwrap();
        let b = launch_digest(&LaunchPlan { ranges: vec![bytes_range], vcpus: vec![] }).unwrap();

        assert_eq!(a, b);
    }

    #[test]
    fn tdx_ranges_and_vcpus_are_rejected() {
        let range = PlanRange {
            gpa: 0,
            len: 0x1000,
            page_type: PageType::Tdx(crate::plan::TdxPageType::AddMeasured),
            contents: Contents::Zero,
            what: "td".into(),
        };

        let err = launch_digest(&LaunchPlan { ranges: vec![range], vcpus: vec![] }).unwrap_err();
        assert!(matches!(err, SnpMeasureError::NotSnpRange { .. }), "{err}");
        let err = launch_digest(&LaunchPlan { ranges: vec![], vcpus: vec![VcpuState::Tdx { rcx: 0 }] }).unwrap_err();
        assert_eq!(err, SnpMeasureError::NotSnpVcpu { index: 0 });
    }

    #[test]
    fn malformed_ranges_are_rejected_not_panicked_on() {
        let good = PlanRange {
            gpa: 0x1000,
            len: 0x1000,
            page_type: PageType::Snp(SnpPageType::Normal),
            contents: Contents::Bytes(Arc::from(&[0u8; 0x1000][..])),
            what: "r".into(),
        };
        let bad = [
            PlanRange { len: 0x2000, ..good.clone() },
            PlanRange { gpa: 0x800, ..good.clone() },
            PlanRange { len: 0, contents: Contents::Zero, ..good.clone() },
            PlanRange { gpa: u64::MAX - 0xfff, contents: Contents::Zero, len: 0x2000, ..good.clone() },
        ];
        for r in bad {
            let err = launch_digest(&LaunchPlan { ranges: vec![r.clone()], vcpus: vec![] }).unwrap_err();

            assert!(matches!(err, SnpMeasureError::Range(_)), "{r:?}: {err}");
        }
    }

    #[test]
    fn kernel_hashes_change_only_the_hashes_page() {
        // A synthetic firmware with an SNP_KERNEL_HASHES section (built like an AmdSev OVMF).
        let fw = amd_sev_like_firmware();
        let base = SnpPlanOptions {
            firmware: fw.as_slice().into(),
            vcpus: 1,
            vcpu_type: VcpuType::EpycV4,
            vmm_type: VmmType::Qemu,
            guest_features: 1,
            kernel_hashes: None,
        };
        let input = KernelHashesInput { kernel: b"kernel", initrd: Some(b"initrd"), cmdline: "console=ttyS0" };

        let without = plan_snp(&base).unwrap();
        let with = plan_snp(&SnpPlanOptions { kernel_hashes: Some(input.hashes().unwrap()), ..base }).unwrap();

        let page = |p: &LaunchPlan| p.ranges.iter().find(|r| r.what == "SNP_KERNEL_HASHES").cloned().unwrap();
        assert_eq!(page(&without).page_type, PageType::Snp(SnpPageType::Zero));
        assert_eq!(page(&with).page_type, PageType::Snp(SnpPageType::Normal));
        assert_eq!(page(&with).page(0)[0xc00..0xc04], [0x06, 0xd6, 0x38, 0x94]);
        assert_ne!(launch_digest(&without).unwrap(), launch_digest(&with).unwrap());
    }

    /// A one-page image whose footer table has a reset block, a hashes table at
    /// 0x810c00 and SEV metadata with an SNP_KERNEL_HASHES page at 0x810000.
    fn amd_sev_like_firmware() -> Vec<u8> {
        use firmware::ovmf::{FOOTER_GUID, SEV_ES_RESET_BLOCK_GUID, SEV_HASH_TABLE_GUID, SEV_METADATA_GUID};
        let mut img = vec![0u8; PAGE];
        let meta_at = 0x400;
        let mut meta = b"ASEV".to_vec();
        let sections: [(u32, u32, u32); 3] =
            [(0x80_0000, 0x1000, 1), (0x80_d000, 0x1000, 2), (0x81_0000, 0x1000, 0x10)];
        for v in [16 + 12 * sections.len() as u32, 1, sections.len() as u32] {
            meta.extend_from_slice(&v.to_le_bytes());
        }
        for (a, b, c) in sections {
            for v in [a, b, c] {
                meta.extend_from_slice(&v.to_le_bytes());
            }
        }
        img[meta_at..meta_at + meta.len()].copy_from_slice(&meta);
        let entries: [(firmware::ovmf::Guid, Vec<u8>); 3] = [
            (SEV_ES_RESET_BLOCK_GUID, 0x80b004u32.to_le_bytes().to_vec()),
            (SEV_HASH_TABLE_GUID, [0x0081_0c00u32.to_le_bytes(), 0x400u32.to_le_bytes()].concat()),
            (SEV_METADATA_GUID, ((PAGE - meta_at) as u32).to_le_bytes().to_vec()),
        ];
        let mut table = Vec::new();
        for (g, d) in entries {
            table.extend_from_slice(&d);
            table.extend_from_slice(&((d.len() + 18) as u16).to_le_bytes());
            table.extend_from_slice(&g.0);
        }
        table.extend_from_slice(&((table.len() + 18) as u16).to_le_bytes());
        table.extend_from_slice(&FOOTER_GUID.0);
        let end = PAGE - 32;
        img[end - table.len()..end].copy_from_slice(&table);
        img
    }
}
