//! The emulated SEV-SNP platform: what the PSP and an SNP-capable KVM do, in software,
//! on a host without SNP hardware (`--tee snp --emulated`; never chosen silently).
//!
//! # Memory and the C-bit
//! This host's MAXPHYADDR is 48, so the hardware C-bit (51) would fault. The emulated
//! platform reports C-bit position [`C_BIT`] (47) in CPUID Fn8000_001F[EBX] and maps
//! every RAM region twice: at its GPA (the shared view) and at GPA | 2^47 (the private
//! view). Both alias the same host memory; which pages are private is tracked by the
//! [`Rmp`] (and, for the devices, by `devices::virtio::SharedMemory`), not by hardware:
//! this platform does not stop the guest itself from touching its memory through the
//! wrong alias, nor from using pages it has not validated. What it does enforce is
//! everything that crosses the guest/host boundary: devices see only shared pages,
//! PVALIDATE follows the RMP rules, page-state changes are checked.
//!
//! # Exits
//! The GHCB MSR (0xC001_0130) and SEV_STATUS (0xC001_0131) are intercepted with an
//! MSR filter; PVALIDATE and RMPADJUST end in emulation-failure exits that carry the
//! instruction bytes (KVM_CAP_EXIT_ON_EMULATION_FAILURE); VMGEXIT is a port write to
//! `arch::ghcb::EMULATED_VMGEXIT_PORT`. The VMM's GHCB handler does the rest.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use kvm_bindings::{
    kvm_enable_cap, kvm_regs, kvm_sregs, KVM_CAP_X86_USER_SPACE_MSR, KVM_MAX_CPUID_ENTRIES, KVM_MSR_EXIT_REASON_FILTER,
};
use kvm_ioctls::{Kvm, MsrFilterDefaultAction, MsrFilterRange, MsrFilterRangeFlags, VcpuFd, VmFd};
use thiserror::Error;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use super::kvm::vcpu::{regs_of, unpack_segment};
use super::psp::{EmulatedPsp, PspError, PspLaunch};
use crate::emulation::{self, emu_err};
use crate::memslots::add_memory_slots;
use crate::plan::snp::SnpVcpu;
use crate::plan::{LaunchPlan, PageType, VcpuState, PAGE_SIZE};
use crate::{LaunchBackend, LaunchError, VcpuInit};

/// The C-bit position the emulated platform reports.
pub const C_BIT: u32 = 47;
/// The C-bit as an address mask.
pub const C_BIT_MASK: u64 = 1 << C_BIT;

/// SEV_STATUS the emulated platform reports: SEV, SEV-ES and SEV-SNP enabled.
pub const SEV_STATUS: u64 = arch::ghcb::SEV_STATUS_SEV | arch::ghcb::SEV_STATUS_ES | arch::ghcb::SEV_STATUS_SNP;

const PAGE: usize = PAGE_SIZE as usize;
const PAGES_PER_2M: u64 = 512;

/// Errors of the emulated RMP.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum RmpError {
    /// A range outside guest RAM (or misaligned, or empty).
    #[error("{gpa:#x} (+{len:#x}) is not page-aligned guest RAM")]
    OutOfRange {
        /// Start.
        gpa: u64,
        /// Length.
        len: u64,
    },
}

/// One page's RMP state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PageState {
    /// Assigned to the guest (private); otherwise shared with the hypervisor.
    pub private: bool,
    /// Validated by the guest (PVALIDATE) or by the launch.
    pub validated: bool,
    /// A VMSA page (RMPADJUST with the VMSA bit).
    pub vmsa: bool,
    /// The page's 2 MiB region is mapped with 4 KiB RMP entries.
    pub split: bool,
}

/// The emulated Reverse Map Table: the state of every 4 KiB page of guest RAM.
#[derive(Debug)]
pub struct Rmp {
    /// (first GPA, pages) of each RAM region, and the index of its first page.
    regions: Vec<(u64, u64, usize)>,
    pages: Vec<PageState>,
}

/// What PVALIDATE does to the RMP, as the instruction reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PvalidateResult {
    /// The validated state changed.
    Changed,
    /// It already had the requested state (CF=1, RAX=0).
    Unchanged,
    /// Bad input (`PVALIDATE_FAIL_INPUT`).
    FailInput,
    /// A 2 MiB request on a region with 4 KiB entries (`PVALIDATE_FAIL_SIZEMISMATCH`).
    FailSizeMismatch,
    /// The page is not assigned to the guest: the access faults to the hypervisor.
    NotPrivate,
}

impl Rmp {
    /// An RMP covering `mem`'s regions, every page private and not validated (the state
    /// of guest_memfd memory an SNP VM starts with).
    pub fn new(mem: &GuestMemoryMmap) -> Self {
        let mut regions = Vec::new();
        let mut total = 0usize;
        for r in mem.iter() {
            let pages = r.len() / PAGE_SIZE;
            regions.push((r.start_addr().0, pages, total));
            total += pages as usize;
        }
        let pages = vec![PageState { private: true, ..Default::default() }; total];
        Self { regions, pages }
    }

    fn index(&self, gpa: u64) -> Option<usize> {
        self.regions.iter().find_map(|&(start, pages, first)| {
            let off = gpa.checked_sub(start)? / PAGE_SIZE;
            (off < pages).then_some(first + off as usize)
        })
    }

    /// The indexes of `[gpa, gpa + len)`, if it is page-aligned RAM within one region.
    fn indexes(&self, gpa: u64, len: u64) -> Result<std::ops::Range<usize>, RmpError> {
        let bad = RmpError::OutOfRange { gpa, len };
        if len == 0 || (gpa | len) & (PAGE_SIZE - 1) != 0 {
            return Err(bad);
        }
        let last = gpa.checked_add(len - PAGE_SIZE).ok_or(bad.clone())?;
        let (first, end) = (self.index(gpa).ok_or(bad.clone())?, self.index(last).ok_or(bad.clone())?);
        if end - first + 1 != (len / PAGE_SIZE) as usize {
            return Err(bad);
        }
        Ok(first..end + 1)
    }

    /// The state of the page at `gpa`.
    pub fn state(&self, gpa: u64) -> Option<PageState> {
        self.index(gpa).map(|i| self.pages[i])
    }

    /// How many pages of guest RAM are private and validated.
    pub fn validated_pages(&self) -> usize {
        self.pages.iter().filter(|p| p.private && p.validated).count()
    }

    /// How many pages of guest RAM there are.
    pub fn pages(&self) -> usize {
        self.pages.len()
    }

    /// Every RAM region: its first GPA and the states of its pages in GPA order.
    pub fn regions(&self) -> impl Iterator<Item = (u64, &[PageState])> + '_ {
        self.regions.iter().map(|&(start, pages, first)| (start, &self.pages[first..first + pages as usize]))
    }

    /// Whether every page of the range is shared.
    pub fn is_shared(&self, gpa: u64, len: u64) -> bool {
        self.indexes(gpa, len).is_ok_and(|r| self.pages[r].iter().all(|p| !p.private))
    }

    /// The launch puts `[gpa, gpa + len)` into the guest: private, validated, and (like
    /// SNP_LAUNCH_UPDATE with 4 KiB pages) mapped with 4 KiB entries.
    pub fn launch_update(&mut self, gpa: u64, len: u64) -> Result<(), RmpError> {
        let r = self.indexes(gpa, len)?;
        for p in &mut self.pages[r] {
            *p = PageState { private: true, validated: true, vmsa: false, split: true };
        }
        self.split_regions(gpa, len);
        Ok(())
    }

    /// Marks the 2 MiB regions touching `[gpa, gpa + len)` as split into 4 KiB entries
    /// (the RAM pages of those regions: one slice per RAM region, not a lookup per page).
    fn split_regions(&mut self, gpa: u64, len: u64) {
        const SPAN: u64 = PAGES_PER_2M * PAGE_SIZE;
        let start = gpa & !(SPAN - 1);
        let end = gpa.saturating_add(len).saturating_add(SPAN - 1) & !(SPAN - 1);
        for &(region, pages, first) in &self.regions {
            let region_end = region + pages * PAGE_SIZE;
            let (lo, hi) = (start.max(region), end.min(region_end));
            if lo < hi {
                let (a, b) = ((lo - region) / PAGE_SIZE, (hi - region) / PAGE_SIZE);
                for p in &mut self.pages[first + a as usize..first + b as usize] {
                    p.split = true;
                }
            }
        }
    }

    /// A page-state change: private pages lose their validation when they become
    /// shared, shared pages come back private and not validated (as KVM's conversions
    /// and the RMP do).
    pub fn set_private(&mut self, gpa: u64, len: u64, private: bool) -> Result<(), RmpError> {
        let r = self.indexes(gpa, len)?;
        let whole_2m = gpa.is_multiple_of(PAGES_PER_2M * PAGE_SIZE) && len.is_multiple_of(PAGES_PER_2M * PAGE_SIZE);
        for p in &mut self.pages[r] {
            *p = PageState { private, validated: false, vmsa: false, split: p.split };
        }
        if !whole_2m {
            self.split_regions(gpa, len);
        }
        Ok(())
    }

    /// PVALIDATE of the page (4 KiB or 2 MiB) at `gpa`.
    pub fn pvalidate(&mut self, gpa: u64, huge: bool, validate: bool) -> PvalidateResult {
        let len = if huge { PAGES_PER_2M * PAGE_SIZE } else { PAGE_SIZE };
        if !gpa.is_multiple_of(len) {
            return PvalidateResult::FailInput;
        }
        let Ok(r) = self.indexes(gpa, len) else { return PvalidateResult::FailInput };
        let pages = &mut self.pages[r];
        if pages.iter().any(|p| !p.private) {
            return PvalidateResult::NotPrivate;
        }
        if huge && pages.iter().any(|p| p.split) {
            return PvalidateResult::FailSizeMismatch;
        }
        if pages.iter().all(|p| p.validated == validate) {
            return PvalidateResult::Unchanged;
        }
        for p in pages {
            p.validated = validate;
        }
        PvalidateResult::Changed
    }

    /// RMPADJUST's VMSA bit for the (private, validated) page at `gpa`.
    pub fn set_vmsa(&mut self, gpa: u64, vmsa: bool) -> Result<(), RmpError> {
        let r = self.indexes(gpa, PAGE_SIZE)?;
        let p = &mut self.pages[r.start];
        if !p.private || !p.validated {
            return Err(RmpError::OutOfRange { gpa, len: PAGE_SIZE });
        }
        p.vmsa = vmsa;
        Ok(())
    }
}

/// Why an AP creation request is refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ApCreationError {
    /// No such vCPU, or the BSP.
    #[error("AP creation: vCPU {0} does not exist or is the BSP")]
    NoSuchVcpu(u64),
    /// The vCPU was already started.
    #[error("AP creation: vCPU {0} is already running (re-creation is not supported)")]
    AlreadyRunning(u64),
    /// The VMSA page is not a private, validated page the guest made a VMSA.
    #[error("AP creation: {0:#x} is not a VMSA page (RMPADJUST with the VMSA bit on a validated private page)")]
    NotVmsa(u64),
    /// The SEV features asked for are not the VM's.
    #[error("AP creation: SEV features {asked:#x} are not the VM's {vm:#x}")]
    Features {
        /// In the request (RAX) or the VMSA.
        asked: u64,
        /// The VM's.
        vm: u64,
    },
}

/// One vCPU's start state for AP creation.
#[derive(Debug, Clone)]
enum ApSlot {
    /// Waiting for the guest to create it.
    Waiting,
    /// Created: start from this state.
    Start(Box<SnpVcpu>),
    /// Running.
    Running,
}

/// What the VMM's exit handlers share with the launch: the RMP and the PSP.
#[derive(Debug)]
pub struct EmulatedSnpPlatform {
    rmp: Mutex<Rmp>,
    psp: Mutex<EmulatedPsp>,
    /// Every vCPU's launch state (all measured; only the BSP starts from it: SNP guests
    /// start their APs with AP creation).
    vcpus: Mutex<Vec<SnpVcpu>>,
    aps: Mutex<Vec<ApSlot>>,
    ap_created: Condvar,
    aps_started: AtomicU32,
}

impl EmulatedSnpPlatform {
    /// SNP AP creation: vCPU `index` starts from the VMSA page at `vmsa_gpa` of `mem`,
    /// which the guest made a VMSA with RMPADJUST; `features` is the SEV_FEATURES value
    /// the guest asked for.
    pub fn create_ap(
        &self,
        index: u64,
        vmsa_gpa: u64,
        features: u64,
        mem: &GuestMemoryMmap,
    ) -> Result<(), ApCreationError> {
        let vm_features = self.vcpus.lock().unwrap_or_else(|e| e.into_inner()).first().map_or(0, |v| v.sev_features);
        if features != vm_features {
            return Err(ApCreationError::Features { asked: features, vm: vm_features });
        }
        match self.rmp().state(vmsa_gpa) {
            Some(p) if p.private && p.validated && p.vmsa && vmsa_gpa.is_multiple_of(PAGE_SIZE) => {}
            _ => return Err(ApCreationError::NotVmsa(vmsa_gpa)),
        }
        let mut page = [0u8; PAGE];
        mem.read_slice(&mut page, GuestAddress(vmsa_gpa)).map_err(|_| ApCreationError::NotVmsa(vmsa_gpa))?;
        let state = crate::measure::snp::parse_vmsa(&page);
        if state.sev_features != vm_features {
            return Err(ApCreationError::Features { asked: state.sev_features, vm: vm_features });
        }
        let mut aps = self.aps.lock().unwrap_or_else(|e| e.into_inner());
        let slot = usize::try_from(index).ok().filter(|&i| i > 0).and_then(|i| aps.get_mut(i));
        match slot {
            None => Err(ApCreationError::NoSuchVcpu(index)),
            Some(ApSlot::Waiting) => {
                aps[index as usize] = ApSlot::Start(Box::new(state));
                self.ap_created.notify_all();
                Ok(())
            }
            Some(_) => Err(ApCreationError::AlreadyRunning(index)),
        }
    }

    /// Blocks the thread of AP `index` until the guest creates it (its start state) or
    /// `stopping` is set (`None`).
    pub fn wait_ap_start(&self, index: u32, stopping: &AtomicBool) -> Option<SnpVcpu> {
        let mut aps = self.aps.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if stopping.load(Ordering::Acquire) {
                return None;
            }
            let slot = aps.get_mut(index as usize)?;
            if let ApSlot::Start(state) = slot {
                let state = (**state).clone();
                *slot = ApSlot::Running;
                self.aps_started.fetch_add(1, Ordering::Relaxed);
                return Some(state);
            }
            aps = self.ap_created.wait_timeout(aps, Duration::from_millis(20)).unwrap_or_else(|e| e.into_inner()).0;
        }
    }

    /// How many APs the guest created and cvmm started.
    pub fn aps_started(&self) -> u32 {
        self.aps_started.load(Ordering::Relaxed)
    }

    /// The RMP.
    pub fn rmp(&self) -> MutexGuard<'_, Rmp> {
        self.rmp.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The PSP.
    pub fn psp(&self) -> MutexGuard<'_, EmulatedPsp> {
        self.psp.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A platform for guest memory `mem` (an RMP of its pages, every one private and not
    /// validated) whose PSP starts a launch with `launch` (SNP_LAUNCH_START). No KVM is
    /// involved: the backend makes one when it adds memory, tests and fuzz targets make
    /// their own.
    pub fn new(mem: &GuestMemoryMmap, launch: PspLaunch) -> Result<Self, PspError> {
        Ok(Self {
            rmp: Mutex::new(Rmp::new(mem)),
            psp: Mutex::new(EmulatedPsp::launch_start(launch)?),
            vcpus: Mutex::new(Vec::new()),
            aps: Mutex::new(Vec::new()),
            ap_created: Condvar::new(),
            aps_started: AtomicU32::new(0),
        })
    }

    /// Loads `plan` into `mem`: the PSP measures every range (SNP_LAUNCH_UPDATE), which
    /// becomes private and validated in the RMP; every vCPU's state is kept for
    /// SNP_LAUNCH_FINISH, the BSP runs and the APs wait for the guest to create them.
    pub fn load_plan(&self, mem: &GuestMemoryMmap, plan: &LaunchPlan) -> Result<(), LaunchError> {
        let mut psp = self.psp();
        let mut rmp = self.rmp();
        for range in &plan.ranges {
            let PageType::Snp(page_type) = range.page_type else {
                return Err(LaunchError::Psp(PspError::NotSnp(range.what.clone())));
            };
            let mut bytes = vec![0u8; range.len as usize];
            for i in 0..range.pages() {
                let at = (i * PAGE_SIZE) as usize;
                bytes[at..at + PAGE].copy_from_slice(range.page(i));
            }
            psp.launch_update(range.gpa, page_type, &mut bytes).map_err(LaunchError::Psp)?;
            mem.write_slice(&bytes, GuestAddress(range.gpa)).map_err(|e| LaunchError::GuestWrite {
                what: range.what.clone(),
                gpa: range.gpa,
                message: e.to_string(),
            })?;
            rmp.launch_update(range.gpa, range.len).map_err(|e| LaunchError::GuestWrite {
                what: range.what.clone(),
                gpa: range.gpa,
                message: e.to_string(),
            })?;
        }
        let mut vcpus = self.vcpus.lock().unwrap_or_else(|e| e.into_inner());
        *vcpus = plan
            .vcpus
            .iter()
            .map(|v| match v {
                VcpuState::Snp(s) => Ok(s.clone()),
                VcpuState::Tdx { .. } => Err(LaunchError::Psp(PspError::NotSnp("vCPU state".into()))),
            })
            .collect::<Result<_, _>>()?;
        let mut aps = self.aps.lock().unwrap_or_else(|e| e.into_inner());
        *aps = (0..vcpus.len()).map(|i| if i == 0 { ApSlot::Running } else { ApSlot::Waiting }).collect();
        Ok(())
    }

    /// SNP_LAUNCH_FINISH: the PSP measures every vCPU's VMSA and the guest may run.
    pub fn launch_finish(&self) -> Result<(), PspError> {
        let vcpus = self.vcpus.lock().unwrap_or_else(|e| e.into_inner()).clone();
        self.psp().launch_finish(&vcpus)
    }
}

/// The emulated SNP launch backend.
#[derive(Debug)]
pub struct EmulatedSnp {
    launch: PspLaunch,
    platform: Option<Arc<EmulatedSnpPlatform>>,
}

impl EmulatedSnp {
    /// A backend for one launch with the PSP's inputs.
    pub fn new(launch: PspLaunch) -> Self {
        Self { launch, platform: None }
    }

    /// The platform state the VMM's exit handlers use (after [`LaunchBackend::add_memory`]).
    pub fn platform(&self) -> Option<Arc<EmulatedSnpPlatform>> {
        self.platform.clone()
    }

    fn platform_ref(&self, step: &'static str) -> Result<&Arc<EmulatedSnpPlatform>, LaunchError> {
        self.platform.as_ref().ok_or(LaunchError::OutOfOrder(step))
    }
}

impl LaunchBackend for EmulatedSnp {
    fn name(&self) -> &'static str {
        "SEV-SNP (emulated)"
    }

    fn create_vm(&mut self, kvm: &Kvm) -> Result<VmFd, LaunchError> {
        let vm = emulation::create_vm(kvm)?;
        let cap = kvm_enable_cap {
            cap: KVM_CAP_X86_USER_SPACE_MSR,
            args: [u64::from(KVM_MSR_EXIT_REASON_FILTER), 0, 0, 0],
            ..Default::default()
        };
        vm.enable_cap(&cap).map_err(emu_err("KVM_CAP_X86_USER_SPACE_MSR"))?;
        // A zero bit denies: reads and writes of both MSRs exit to user space.
        let deny = [0u8; 1];
        let range = MsrFilterRange {
            flags: MsrFilterRangeFlags::READ | MsrFilterRangeFlags::WRITE,
            base: arch::ghcb::MSR_GHCB,
            msr_count: 2,
            bitmap: &deny,
        };
        vm.set_msr_filter(MsrFilterDefaultAction::ALLOW, &[range]).map_err(emu_err("KVM_X86_SET_MSR_FILTER"))?;
        Ok(vm)
    }

    fn add_memory(&mut self, vm: &VmFd, mem: &GuestMemoryMmap) -> Result<(), LaunchError> {
        // The shared view at the GPA, the private view at GPA | C-bit: the same pages.
        add_memory_slots(vm, mem, &[0, C_BIT_MASK])?;
        self.platform = Some(Arc::new(EmulatedSnpPlatform::new(mem, self.launch.clone())?));
        Ok(())
    }

    fn load_plan(&mut self, _vm: &VmFd, mem: &GuestMemoryMmap, plan: &LaunchPlan) -> Result<(), LaunchError> {
        self.platform_ref("load_plan")?.load_plan(mem, plan)
    }

    fn init_vcpu(&mut self, kvm: &Kvm, vcpu: &VcpuFd, init: &VcpuInit) -> Result<(), LaunchError> {
        let platform = self.platform_ref("init_vcpu")?;
        let mut cpuid = kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES).map_err(LaunchError::SupportedCpuid)?;
        let count = u8::try_from(init.count).unwrap_or(u8::MAX);
        arch::cpuid::filter_cpuid(cpuid.as_mut_slice(), init.index as u8, count);
        set_sev_cpuid(cpuid.as_mut_slice());
        let err = |what| move |source| LaunchError::VcpuSetup { index: init.index, what, source };
        vcpu.set_cpuid2(&cpuid).map_err(err("KVM_SET_CPUID2"))?;
        let state = platform.vcpus.lock().unwrap_or_else(|e| e.into_inner()).get(init.index as usize).cloned();
        let state = state.ok_or(LaunchError::OutOfOrder("init_vcpu before load_plan"))?;
        let (regs, sregs) = vcpu_registers(&state, vcpu.get_sregs().map_err(err("KVM_GET_SREGS"))?);
        vcpu.set_sregs(&sregs).map_err(err("KVM_SET_SREGS"))?;
        vcpu.set_regs(&regs).map_err(err("KVM_SET_REGS"))?;
        Ok(())
    }

    fn finalize(&mut self, _vm: &VmFd, _mem: &GuestMemoryMmap) -> Result<(), LaunchError> {
        self.platform_ref("finalize")?.launch_finish().map_err(LaunchError::Psp)
    }
}

/// CPUID Fn8000_001F as the emulated platform reports it: SME, SEV, SEV-ES and SEV-SNP
/// (EAX bits 0, 1, 3, 4), the C-bit position and a physical-address reduction of 1
/// (EBX), and one encrypted guest (ECX).
pub fn set_sev_cpuid(entries: &mut [kvm_bindings::kvm_cpuid_entry2]) {
    for e in entries.iter_mut() {
        if e.function == 0x8000_001f {
            e.eax = 0b1_1011;
            e.ebx = C_BIT | (1 << 6);
            e.ecx = 1;
            e.edx = 1;
        }
    }
}

/// The KVM register state that starts a vCPU as the VMSA `v` describes it.
pub fn vcpu_registers(v: &SnpVcpu, mut sregs: kvm_sregs) -> (kvm_regs, kvm_sregs) {
    sregs.cs = unpack_segment(&v.cs);
    sregs.ds = unpack_segment(&v.ds);
    sregs.es = unpack_segment(&v.es);
    sregs.fs = unpack_segment(&v.fs);
    sregs.gs = unpack_segment(&v.gs);
    sregs.ss = unpack_segment(&v.ss);
    sregs.tr = unpack_segment(&v.tr);
    sregs.ldt = unpack_segment(&v.ldtr);
    sregs.gdt.base = v.gdtr.base;
    sregs.gdt.limit = v.gdtr.limit as u16;
    sregs.idt.base = v.idtr.base;
    sregs.idt.limit = v.idtr.limit as u16;
    sregs.cr0 = v.cr0;
    sregs.cr2 = v.cr2;
    sregs.cr3 = v.cr3;
    sregs.cr4 = v.cr4;
    // EFER.SVME belongs to the VMSA, not to the guest-visible EFER KVM takes.
    sregs.efer = v.efer & !0x1000;
    (regs_of(v), sregs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rmp(mib: usize) -> Rmp {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), mib << 20)]).unwrap();
        Rmp::new(&mem)
    }

    #[test]
    fn pvalidate_follows_the_rmp_rules() {
        let mut r = rmp(8);
        r.launch_update(0x20_0000, 0x1000).unwrap();
        // 2 MiB over a region the launch split: size mismatch; 4 KiB works.
        assert_eq!(r.pvalidate(0x20_0000, true, true), PvalidateResult::FailSizeMismatch);
        assert_eq!(r.pvalidate(0x20_0000, false, true), PvalidateResult::Unchanged);
        assert_eq!(r.pvalidate(0x20_1000, false, true), PvalidateResult::Changed);
        // An untouched 2 MiB region validates whole, once.
        assert_eq!(r.pvalidate(0x40_0000, true, true), PvalidateResult::Changed);
        assert_eq!(r.pvalidate(0x40_0000, true, true), PvalidateResult::Unchanged);
        assert_eq!(r.pvalidate(0x40_1000, true, true), PvalidateResult::FailInput);
        assert_eq!(r.pvalidate(0x80_0000, false, true), PvalidateResult::FailInput);
        // Shared pages are not the guest's to validate.
        r.set_private(0x60_0000, 0x1000, false).unwrap();
        assert_eq!(r.pvalidate(0x60_0000, false, true), PvalidateResult::NotPrivate);
        assert!(r.is_shared(0x60_0000, 0x1000));
        assert!(!r.is_shared(0x60_0000, 0x2000));
    }

    #[test]
    fn a_4k_conversion_splits_exactly_its_own_2m_region() {
        // Two regions: 0..4 MiB and 6..7 MiB (the second one smaller than 2 MiB).
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 4 << 20), (GuestAddress(6 << 20), 1 << 20)])
            .unwrap();
        let mut r = Rmp::new(&mem);
        r.set_private(0x20_3000, 0x1000, false).unwrap();
        r.set_private(0x60_0000, 0x1000, false).unwrap();
        let split: Vec<u64> = r
            .regions()
            .flat_map(|(start, pages)| {
                pages.iter().enumerate().filter(|(_, p)| p.split).map(move |(i, _)| start + i as u64 * PAGE_SIZE)
            })
            .collect();
        let expected: Vec<u64> = (0x20_0000..0x40_0000).chain(0x60_0000..0x70_0000).step_by(0x1000).collect();
        assert_eq!(split, expected);
        // A whole 2 MiB conversion does not split.
        r.set_private(0, 0x20_0000, false).unwrap();
        assert!(!r.state(0x1000).unwrap().split);
        assert_eq!(r.pvalidate(0, true, true), PvalidateResult::NotPrivate);
    }

    #[test]
    fn page_state_changes_outside_ram_are_refused() {
        let mut r = rmp(8);
        assert!(r.set_private(0x80_0000, 0x1000, false).is_err());
        assert!(r.set_private(0x7f_f000, 0x2000, false).is_err());
        assert!(r.set_private(0x1000, 0, false).is_err());
        assert!(r.set_private(0x1800, 0x1000, false).is_err());
        assert!(r.set_private(!0xfff, 0x1000, false).is_err());
    }

    #[test]
    fn segments_convert_from_vmcb_attributes() {
        let v = SnpVcpu::at_entry32(0x20_0040, 0x5000, 1);
        let (regs, sregs) = vcpu_registers(&v, kvm_sregs::default());
        assert_eq!((regs.rip, regs.rsi), (0x20_0040, 0x5000));
        assert_eq!((sregs.cs.type_, sregs.cs.db, sregs.cs.g, sregs.cs.present, sregs.cs.l), (0xb, 1, 1, 1, 0));
        assert_eq!(sregs.cs.limit, 0xffff_ffff);
        assert_eq!(sregs.ldt.type_, 2);
        assert_eq!(sregs.efer, 0);
    }
}
