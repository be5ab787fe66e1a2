//! The emulated TDX platform: what the TDX module and a TDX-capable KVM do, in software,
//! on a host without TDX (`--tee tdx --emulated`; never chosen silently).
//!
//! # Memory and the shared bit
//! With a 48-bit guest physical address width the TDX shared bit is bit 47: a shared
//! GPA aliases the private one with that bit set. The emulated platform maps every RAM
//! region twice, at its GPA (the private view) and at GPA | 2^47 (the shared view), both
//! aliases of the same host memory (this host's MAXPHYADDR is 48). Page states (private
//! or shared, accepted or pending) are tracked per 4 KiB page by [`Rmp`] (the Secure
//! EPT's role); the devices see only shared pages. Like upstream KVM, the platform maps
//! TD private memory with 4 KiB pages: a 2 MiB TDG.MEM.PAGE.ACCEPT answers
//! TDX_PAGE_SIZE_MISMATCH and the guest accepts page by page.
//!
//! # The TDX module
//! MRTD is built with the same TDH.MEM.PAGE.ADD / TDH.MR.EXTEND sequence KVM issues for
//! the plan ([`crate::measure::tdx::Mrtd`], the code `cvmm measure --tee tdx` uses); the
//! RTMRs are extended on the guest's request. The guest reaches the module with the real
//! TDCALL instruction, which on this project's hosts ends in an emulation-failure exit
//! carrying its bytes; the VMM (`vmm::tdx`) completes it here.

use std::sync::{Arc, Mutex, MutexGuard};

use kvm_bindings::{kvm_mp_state, kvm_regs, kvm_segment, KVM_MAX_CPUID_ENTRIES, KVM_MP_STATE_RUNNABLE};
use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::emulation;
use crate::measure::tdx::{Mrtd, Rtmr, DIGEST_SIZE};
use crate::memslots::add_memory_slots;
use crate::plan::{LaunchPlan, PageType, TdxPageType, VcpuState, PAGE_SIZE};
use crate::snp::emulated::{PvalidateResult, Rmp};
use crate::{LaunchBackend, LaunchError, VcpuInit};

/// The shared bit (GPAW 48).
pub const SHARED_BIT: u64 = 1 << 47;
/// The guest physical address width the emulated TD has.
pub const GPAW: u64 = 48;
/// TD ATTRIBUTES the emulated module reports: SEPT_VE_DISABLE (bit 28) set, no debug.
pub const ATTRIBUTES: u64 = 1 << 28;
/// XFAM: x87 and SSE state only.
pub const XFAM: u64 = 0x3;

const PAGE: usize = PAGE_SIZE as usize;

/// What TDG.MEM.PAGE.ACCEPT does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcceptResult {
    /// The page was pending and is accepted now.
    Accepted,
    /// It was already accepted (a warning; nothing changed).
    AlreadyAccepted,
    /// The page's mapping is not of the requested size (2 MiB: always, as KVM maps 4 KiB).
    SizeMismatch,
    /// Not RAM, unaligned, or a level that does not exist.
    Invalid,
    /// The page is shared: the VMM converts it (as KVM would on the memory fault) first.
    Shared,
}

/// The TD's launch-time and run-time measurement state, and its configuration.
#[derive(Debug)]
pub struct TdxModule {
    building: Option<Mrtd>,
    mrtd: Option<[u8; DIGEST_SIZE]>,
    rtmrs: [Rtmr; 4],
    /// MRCONFIGID, MROWNER, MROWNERCONFIG as given at TD creation.
    pub mrconfigid: [u8; DIGEST_SIZE],
    /// MROWNER.
    pub mrowner: [u8; DIGEST_SIZE],
    /// MROWNERCONFIG.
    pub mrownerconfig: [u8; DIGEST_SIZE],
    /// The vector SetupEventNotifyInterrupt set, if any, and the APIC ID of the vCPU
    /// that set it (where GetQuote completions are announced).
    pub notify: Option<(u8, u32)>,
    /// The GPA of the GetQuote buffer in flight, if any: the emulated quoting enclave
    /// serves one request at a time.
    pub quote_in_flight: Option<u64>,
}

impl TdxModule {
    fn new(config: &TdxModuleConfig) -> Self {
        Self {
            building: Some(Mrtd::new()),
            mrtd: None,
            rtmrs: Default::default(),
            mrconfigid: config.mrconfigid,
            mrowner: config.mrowner,
            mrownerconfig: config.mrownerconfig,
            notify: None,
            quote_in_flight: None,
        }
    }

    /// MRTD, once the TD is finalized.
    pub fn mrtd(&self) -> Option<[u8; DIGEST_SIZE]> {
        self.mrtd
    }

    /// RTMR `i`.
    pub fn rtmr(&self, i: usize) -> Option<&[u8; DIGEST_SIZE]> {
        self.rtmrs.get(i).map(Rtmr::value)
    }

    /// TDG.MR.RTMR.EXTEND of RTMR `index` (0-3) with `data`; false for a bad index or
    /// before the TD runs.
    pub fn rtmr_extend(&mut self, index: u64, data: &[u8; DIGEST_SIZE]) -> bool {
        match (self.mrtd, usize::try_from(index).ok().and_then(|i| self.rtmrs.get_mut(i))) {
            (Some(_), Some(r)) => {
                r.extend(data);
                true
            }
            _ => false,
        }
    }
}

/// The TD's configuration (KVM_TDX_INIT_VM's measured inputs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TdxModuleConfig {
    /// MRCONFIGID.
    pub mrconfigid: [u8; DIGEST_SIZE],
    /// MROWNER.
    pub mrowner: [u8; DIGEST_SIZE],
    /// MROWNERCONFIG.
    pub mrownerconfig: [u8; DIGEST_SIZE],
}

impl Default for TdxModuleConfig {
    fn default() -> Self {
        Self { mrconfigid: [0; DIGEST_SIZE], mrowner: [0; DIGEST_SIZE], mrownerconfig: [0; DIGEST_SIZE] }
    }
}

/// What the VMM's TDCALL handler shares with the launch.
pub struct EmulatedTdxPlatform {
    pages: Mutex<Rmp>,
    module: Mutex<TdxModule>,
    vcpus: u32,
    chain: Arc<super::certs::EmulatedIntelChain>,
    qe: Arc<super::quote::QuotingEnclave>,
}

impl EmulatedTdxPlatform {
    /// A platform for guest memory `mem` (every page private and pending) and a TD of
    /// `vcpus` vCPUs configured with `config`, whose quotes `qe` makes with `chain`'s keys.
    /// No KVM is involved: the backend makes one when it adds memory, tests and fuzz
    /// targets make their own.
    pub fn new(
        mem: &GuestMemoryMmap,
        config: &TdxModuleConfig,
        vcpus: u32,
        chain: Arc<super::certs::EmulatedIntelChain>,
        qe: Arc<super::quote::QuotingEnclave>,
    ) -> Self {
        Self { pages: Mutex::new(Rmp::new(mem)), module: Mutex::new(TdxModule::new(config)), vcpus, chain, qe }
    }

    /// TDH.MR.FINALIZE: MRTD is final and the TD may run (RTMR extensions, reports).
    pub fn finalize(&self) -> Result<(), LaunchError> {
        let mut module = self.module();
        let building = module.building.take().ok_or(LaunchError::OutOfOrder("finalize twice"))?;
        module.mrtd = Some(building.finish());
        Ok(())
    }

    /// The page states.
    pub fn pages(&self) -> MutexGuard<'_, Rmp> {
        self.pages.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The TDX module's state.
    pub fn module(&self) -> MutexGuard<'_, TdxModule> {
        self.module.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The TD's vCPU count.
    pub fn vcpus(&self) -> u32 {
        self.vcpus
    }

    /// TDG.MR.REPORT: the TDREPORT_STRUCT of this TD for `report_data`, MACed with the
    /// platform's report key (which the quoting enclave checks).
    pub fn td_report(&self, report_data: &[u8; 64]) -> Result<[u8; 1024], String> {
        use super::report::{TdInfo, TdReport, TeeTcbInfo};
        let module = self.module();
        let mr_td = module.mrtd.ok_or("the TD is not finalized")?;
        let mut td_info = TdInfo {
            attributes: ATTRIBUTES,
            xfam: XFAM,
            mr_td,
            mr_config_id: module.mrconfigid,
            mr_owner: module.mrowner,
            mr_owner_config: module.mrownerconfig,
            rtmr: [[0; DIGEST_SIZE]; 4],
            servtd_hash: [0; DIGEST_SIZE],
        };
        td_info.set_rtmrs(&module.rtmrs);
        let chain = &self.chain;
        let report = TdReport::create(
            &chain.report_mac_key(),
            chain.sgx_extensions().tcb.cpu_svn,
            TeeTcbInfo::emulated(),
            td_info,
            *report_data,
        );
        Ok(report.to_bytes())
    }

    /// The emulated quoting enclave: a DCAP quote (version 4) for `td_report`, which
    /// must carry this platform's MAC.
    pub fn quote(&self, td_report: &[u8]) -> Result<Vec<u8>, String> {
        self.qe.quote(td_report, super::quote::QuoteFormat::V4).map_err(|e| e.to_string())
    }

    /// The key chain that signs this platform's quotes.
    pub fn chain(&self) -> &super::certs::EmulatedIntelChain {
        &self.chain
    }

    /// TDG.MEM.PAGE.ACCEPT of `gpa` at `level` (0: 4 KiB, 1: 2 MiB).
    pub fn accept(&self, gpa: u64, level: u64) -> AcceptResult {
        match level {
            // Upstream KVM maps TD private memory at 4 KiB.
            1 if gpa.is_multiple_of(512 * PAGE_SIZE) && self.pages().state(gpa).is_some() => AcceptResult::SizeMismatch,
            0 => match self.pages().pvalidate(gpa, false, true) {
                PvalidateResult::Changed => AcceptResult::Accepted,
                PvalidateResult::Unchanged => AcceptResult::AlreadyAccepted,
                PvalidateResult::NotPrivate => AcceptResult::Shared,
                _ => AcceptResult::Invalid,
            },
            _ => AcceptResult::Invalid,
        }
    }
}

impl std::fmt::Debug for EmulatedTdxPlatform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmulatedTdxPlatform").field("vcpus", &self.vcpus).finish_non_exhaustive()
    }
}

/// The emulated TDX launch backend.
pub struct EmulatedTdx {
    config: TdxModuleConfig,
    chain: Arc<super::certs::EmulatedIntelChain>,
    qe: Arc<super::quote::QuotingEnclave>,
    platform: Option<Arc<EmulatedTdxPlatform>>,
    hob: u64,
    vcpus: u32,
}

impl std::fmt::Debug for EmulatedTdx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmulatedTdx").field("config", &self.config).finish_non_exhaustive()
    }
}

impl EmulatedTdx {
    /// A backend for one launch whose quotes the emulated Intel `chain` signs.
    pub fn new(config: TdxModuleConfig, chain: Arc<super::certs::EmulatedIntelChain>) -> Result<Self, String> {
        let qe = Arc::new(super::quote::QuotingEnclave::new(&chain).map_err(|e| e.to_string())?);
        Ok(Self { config, chain, qe, platform: None, hob: 0, vcpus: 0 })
    }

    /// The platform state the VMM's exit handlers use (after [`LaunchBackend::load_plan`]).
    pub fn platform(&self) -> Option<Arc<EmulatedTdxPlatform>> {
        self.platform.clone()
    }

    fn platform_ref(&self, step: &'static str) -> Result<&Arc<EmulatedTdxPlatform>, LaunchError> {
        self.platform.as_ref().ok_or(LaunchError::OutOfOrder(step))
    }
}

impl LaunchBackend for EmulatedTdx {
    fn name(&self) -> &'static str {
        "TDX (emulated)"
    }

    fn create_vm(&mut self, kvm: &Kvm) -> Result<VmFd, LaunchError> {
        emulation::create_vm(kvm)
    }

    fn add_memory(&mut self, vm: &VmFd, mem: &GuestMemoryMmap) -> Result<(), LaunchError> {
        // The private view at the GPA, the shared view at GPA | shared bit: the same pages.
        add_memory_slots(vm, mem, &[0, SHARED_BIT])?;
        // The vCPU count is known once the plan is loaded; the platform is made then.
        self.platform =
            Some(Arc::new(EmulatedTdxPlatform::new(mem, &self.config, 0, self.chain.clone(), self.qe.clone())));
        Ok(())
    }

    fn load_plan(&mut self, _vm: &VmFd, mem: &GuestMemoryMmap, plan: &LaunchPlan) -> Result<(), LaunchError> {
        let platform = self.platform_ref("load_plan")?;
        {
            let mut module = platform.module();
            let mut pages = platform.pages();
            let mrtd = module.building.as_mut().ok_or(LaunchError::OutOfOrder("load_plan after finalize"))?;
            for range in &plan.ranges {
                let write_err =
                    |message: String| LaunchError::GuestWrite { what: range.what.clone(), gpa: range.gpa, message };
                let PageType::Tdx(page_type) = range.page_type else {
                    return Err(write_err("not a TDX range".into()));
                };
                if page_type == TdxPageType::Aug {
                    continue;
                }
                for i in 0..range.pages() {
                    let gpa = range.gpa + i * PAGE_SIZE;
                    let page: &[u8; PAGE] = range.page(i).try_into().map_err(|_| write_err("short page".into()))?;
                    // TDH.MEM.PAGE.ADD (and TDH.MR.EXTEND over the page when measured).
                    mrtd.init_mem_page(gpa, page, page_type == TdxPageType::AddMeasured);
                    mem.write_slice(page, GuestAddress(gpa)).map_err(|e| write_err(e.to_string()))?;
                }
                pages.launch_update(range.gpa, range.len).map_err(|e| write_err(e.to_string()))?;
            }
        }
        self.vcpus = plan.vcpus.len() as u32;
        self.hob = plan
            .vcpus
            .iter()
            .find_map(|v| match v {
                VcpuState::Tdx { rcx } => Some(*rcx),
                VcpuState::Snp(_) => None,
            })
            .unwrap_or(0);
        let old = self.platform.take().ok_or(LaunchError::OutOfOrder("load_plan"))?;
        let old = Arc::try_unwrap(old).map_err(|_| LaunchError::OutOfOrder("the platform is already shared"))?;
        self.platform = Some(Arc::new(EmulatedTdxPlatform { vcpus: self.vcpus, ..old }));
        Ok(())
    }

    fn init_vcpu(&mut self, kvm: &Kvm, vcpu: &VcpuFd, init: &VcpuInit) -> Result<(), LaunchError> {
        let err = |what| move |source| LaunchError::VcpuSetup { index: init.index, what, source };
        let mut cpuid = kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES).map_err(LaunchError::SupportedCpuid)?;
        let count = u8::try_from(init.count).unwrap_or(u8::MAX);
        arch::cpuid::filter_cpuid(cpuid.as_mut_slice(), init.index as u8, count);
        vcpu.set_cpuid2(&cpuid).map_err(err("KVM_SET_CPUID2"))?;
        // The TDX module's initial state: 32-bit protected mode, flat segments, paging
        // off, at the reset vector; RCX = TD HOB, RBX = GPAW, RSI = vCPU index. Every
        // vCPU runs at once.
        let mut sregs = vcpu.get_sregs().map_err(err("KVM_GET_SREGS"))?;
        let seg = |selector: u16, type_: u8| kvm_segment {
            base: 0,
            limit: 0xffff_ffff,
            selector,
            type_,
            present: 1,
            dpl: 0,
            db: 1,
            s: 1,
            l: 0,
            g: 1,
            avl: 0,
            unusable: 0,
            padding: 0,
        };
        sregs.cs = seg(0x08, 0xb);
        for s in [&mut sregs.ds, &mut sregs.es, &mut sregs.fs, &mut sregs.gs, &mut sregs.ss] {
            *s = seg(0x10, 0x3);
        }
        sregs.cr0 = 0x31; // PE | ET | NE
        sregs.cr4 = 0x40; // MCE
        sregs.efer = 0;
        vcpu.set_sregs(&sregs).map_err(err("KVM_SET_SREGS"))?;
        let regs = kvm_regs {
            rip: crate::plan::tdx_direct::RESET_VECTOR,
            rflags: 2,
            rcx: self.hob,
            rbx: GPAW,
            rsi: u64::from(init.index),
            ..Default::default()
        };
        vcpu.set_regs(&regs).map_err(err("KVM_SET_REGS"))?;
        vcpu.set_mp_state(kvm_mp_state { mp_state: KVM_MP_STATE_RUNNABLE }).map_err(err("KVM_SET_MP_STATE"))?;
        Ok(())
    }

    fn finalize(&mut self, _vm: &VmFd, _mem: &GuestMemoryMmap) -> Result<(), LaunchError> {
        self.platform_ref("finalize")?.finalize()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepting_follows_kvms_4k_mapping() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 8 << 20)]).unwrap();
        let chain = Arc::new(crate::tdx::certs::tests_chain().clone());
        let platform = EmulatedTdxPlatform {
            pages: Mutex::new(Rmp::new(&mem)),
            module: Mutex::new(TdxModule::new(&TdxModuleConfig::default())),
            vcpus: 1,
            qe: Arc::new(crate::tdx::quote::QuotingEnclave::new(&chain).unwrap()),
            chain,
        };
        assert_eq!(platform.accept(0x40_0000, 1), AcceptResult::SizeMismatch);
        assert_eq!(platform.accept(0x40_0000, 0), AcceptResult::Accepted);
        assert_eq!(platform.accept(0x40_0000, 0), AcceptResult::AlreadyAccepted);
        assert_eq!(platform.accept(0x40_0800, 0), AcceptResult::Invalid);
        assert_eq!(platform.accept(0x80_0000, 0), AcceptResult::Invalid);
        assert_eq!(platform.accept(0x40_0000, 2), AcceptResult::Invalid);
        platform.pages().set_private(0x50_0000, 0x1000, false).unwrap();
        assert_eq!(platform.accept(0x50_0000, 0), AcceptResult::Shared);
    }

    #[test]
    fn rtmrs_extend_only_once_the_td_runs_and_only_0_to_3() {
        let mut m = TdxModule::new(&TdxModuleConfig::default());
        assert!(!m.rtmr_extend(3, &[1; 48]));
        m.mrtd = Some([0; 48]);
        assert!(m.rtmr_extend(3, &[1; 48]));
        assert!(!m.rtmr_extend(4, &[1; 48]));
        assert_eq!(m.rtmr(3).unwrap(), Rtmr::replay([&[1u8; 48]]).value());
    }
}
