//! The real SEV-SNP launch through the upstream KVM ABI (Linux >= 6.11: `KVM_X86_SNP_VM`,
//! `KVM_SEV_INIT2`, guest_memfd, `KVM_SEV_SNP_LAUNCH_*`), driven by a launch plan
//! (`crate::plan`), so that what the firmware measures is what
//! `crate::measure::snp::launch_digest` computes.
//!
//! # A launch in ten steps
//!
//! 1. [`probe::probe_host`] (or [`probe::probe_host_with`] for another `sev-device`)
//!    checks /dev/sev, the SNP VM type, KVM's VMSA features, the firmware's status, SMT.
//! 2. [`SnpKvmLaunch::new`] takes the host and the [`options::SnpKvmOptions`] (QEMU's
//!    `sev-snp-guest` options) and checks the policy against the host.
//! 3. [`SnpKvmLaunch::create_vm`] issues `KVM_CREATE_VM(KVM_X86_SNP_VM)`.
//! 4. [`SnpKvmLaunch::init`], given [`vmsa_features_of`] the plan, issues
//!    `KVM_SEV_INIT2` (GHCB version 2), then `KVM_CAP_EXIT_HYPERCALL` for
//!    `KVM_HC_MAP_GPA_RANGE`.
//! 5. Optionally, [`SnpKvmLaunch::enable_req_certs`] (Linux 7.0) makes attestation
//!    requests ask user space for certificates. Before any vCPU exists.
//! 6. [`SnpKvmLaunch::launch_start`] issues `KVM_SEV_SNP_LAUNCH_START` (policy,
//!    workarounds).
//! 7. [`SnpKvmLaunch::add_memory`] gives every RAM region a guest_memfd and a
//!    `KVM_SET_USER_MEMORY_REGION2` slot, then makes all of RAM private.
//! 8. For each vCPU, in order: `KVM_CREATE_VCPU` and `KVM_SET_CPUID2` (the caller's),
//!    then [`SnpKvmLaunch::set_vcpu`] with the plan's [`crate::plan::snp::SnpVcpu`].
//! 9. [`SnpKvmLaunch::launch_plan`] (or [`SnpKvmLaunch::launch_update`] range by range)
//!    issues `KVM_SET_MEMORY_ATTRIBUTES(PRIVATE)`, then `KVM_SEV_SNP_LAUNCH_UPDATE` until
//!    KVM has taken the whole range.
//! 10. [`SnpKvmLaunch::launch_finish`] issues `KVM_SEV_SNP_LAUNCH_FINISH` (ID block, ID
//!     auth, host data); KVM builds every VMSA from the vCPU state of step 8.
//!
//! Then, in the vCPU loop: `KVM_EXIT_HYPERCALL` (KVM_HC_MAP_GPA_RANGE) goes to
//! [`SnpKvmLaunch::memory`]'s `handle_map_gpa_range` (put [`memory::hypercall_ret`] of
//! its result in `kvm_run.hypercall.ret`), `KVM_EXIT_MEMORY_FAULT` to its
//! `handle_memory_fault` (after either, tell the devices' view of guest memory which
//! pages are shared now);
//! `KVM_SYSTEM_EVENT_SEV_TERM` to [`exits::SevTermination::from_system_event`];
//! `KVM_EXIT_SNP_REQ_CERTS` (`VcpuExit::Unsupported(43)` in kvm-ioctls 0.25) to
//! [`exits::req_certs_exit`] and [`exits::CertServer::serve`].
//!
//! # What was verified where
//!
//! The host this was written on has no SNP: the structure layouts and
//! ioctl numbers are tested against the upstream headers; guest_memfd, memory slots,
//! discards and the vCPU register ioctls run against the host's KVM (default VM type);
//! the SNP commands themselves only run in tests/snp_hardware.rs on an SNP host.

pub mod exits;
pub mod ioctl;
pub mod memory;
pub mod options;
pub mod probe;
pub mod uapi;
pub mod vcpu;

use kvm_bindings::kvm_sev_snp_launch_update;
use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use thiserror::Error;
use vm_memory::GuestMemoryMmap;

use crate::bytes::{le_u32, le_u64};
use crate::plan::snp::SnpVcpu;
use crate::plan::{Contents, LaunchPlan, PageType, SnpPageType, VcpuState, PAGE_SIZE};
use ioctl::{FwError, SnpIoctlError};
use memory::{SnpMemory, SnpMemoryError};
use options::SnpKvmOptions;
use probe::{SnpHost, SnpHostError};
use uapi::{cpuid_page, KVM_HC_MAP_GPA_RANGE, SEV_RET_INVALID_PARAM, SVM_SEV_FEAT_SNP_ACTIVE};
use vcpu::VcpuStateError;

/// The GHCB protocol version given to `KVM_SEV_INIT2` (SNP needs 2).
pub const GHCB_VERSION: u16 = 2;

/// How many times in a row `KVM_SEV_SNP_LAUNCH_UPDATE` may fail with EAGAIN or EINTR, or
/// succeed without taking a page, before the launch gives up.
const MAX_UPDATE_RETRIES: u32 = 1000;

/// Errors of the real SNP launch.
#[derive(Debug, Error)]
pub enum SnpLaunchError {
    /// The host cannot run this guest.
    #[error(transparent)]
    Host(#[from] SnpHostError),
    /// A step was called out of order.
    #[error("{step} must come after {needs}")]
    Order {
        /// The step called.
        step: &'static str,
        /// What has to happen first.
        needs: &'static str,
    },
    /// The plan wants VMSA features the host's KVM does not offer.
    #[error(
        "the plan's VMSA features {asked:#x} include {unsupported:#x}, which this KVM does not support \
         (KVM_X86_SEV_VMSA_FEATURES = {supported:#x})"
    )]
    VmsaFeatures {
        /// The features asked for (without SNPActive).
        asked: u64,
        /// What KVM supports.
        supported: u64,
        /// What it does not.
        unsupported: u64,
    },
    /// The plan's vCPUs cannot be launched by KVM.
    #[error("plan vCPU {index}: {reason}")]
    PlanVcpu {
        /// vCPU index.
        index: usize,
        /// What is wrong.
        reason: String,
    },
    /// A plan range cannot be launched by KVM.
    #[error("plan range '{what}' at {gpa:#x}: {reason}")]
    PlanRange {
        /// The range's name.
        what: String,
        /// Its start.
        gpa: u64,
        /// What is wrong.
        reason: &'static str,
    },
    /// An ioctl failed.
    #[error(transparent)]
    Ioctl(#[from] SnpIoctlError),
    /// Guest memory could not be set up.
    #[error(transparent)]
    Memory(#[from] SnpMemoryError),
    /// A vCPU's state could not be set.
    #[error("vCPU state: {0}")]
    Vcpu(#[from] VcpuStateError),
    /// `KVM_SEV_SNP_LAUNCH_UPDATE` failed.
    #[error(
        "KVM_SEV_SNP_LAUNCH_UPDATE of {len:#x} bytes at {gpa:#x} ({page_type:?} pages) failed: {source} ({fw_error})"
    )]
    LaunchUpdate {
        /// Where the failing call started.
        gpa: u64,
        /// How much it had left to do.
        len: u64,
        /// The page type.
        page_type: SnpPageType,
        /// The firmware's status.
        fw_error: FwError,
        /// The ioctl's error.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// `KVM_SEV_SNP_LAUNCH_UPDATE` kept succeeding without taking pages, or kept being
    /// interrupted.
    #[error(
        "KVM_SEV_SNP_LAUNCH_UPDATE at {gpa:#x} made no progress in {MAX_UPDATE_RETRIES} calls ({len:#x} bytes left)"
    )]
    NoProgress {
        /// Where it was stuck.
        gpa: u64,
        /// What was left.
        len: u64,
    },
    /// KVM reported a different end than the range asked for.
    #[error("KVM_SEV_SNP_LAUNCH_UPDATE of {gpa:#x}+{len:#x} ended at {end:#x}")]
    UpdateEnd {
        /// Start.
        gpa: u64,
        /// Length.
        len: u64,
        /// Where KVM said it ended.
        end: u64,
    },
    /// The firmware rejected the CPUID page and gave its corrected version.
    #[error("{}", CpuidRejection { gpa: *gpa, given, corrected })]
    CpuidRejected {
        /// The page's address.
        gpa: u64,
        /// The page as given.
        given: Box<[u8; 4096]>,
        /// The page as the firmware corrected it.
        corrected: Box<[u8; 4096]>,
    },
    /// `KVM_SEV_SNP_ENABLE_REQ_CERTS` does not exist in this kernel.
    #[error(
        "this kernel cannot ask user space for certificates (no KVM_X86_SEV_SNP_REQ_CERTS: Linux 6.11 to 6.19): \
         KVM answers extended attestation requests with an empty certificate table, so the guest must fetch the \
         VCEK, ASK and ARK from AMD's KDS itself"
    )]
    ReqCertsUnsupported,
}

/// Where a launch is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Stage {
    New,
    VmCreated,
    Initialized,
    Started,
    Finished,
}

/// What a [`SnpKvmLaunch::launch_update`] puts into the range.
#[derive(Debug, Clone, Copy)]
pub enum UpdateData<'a> {
    /// These bytes (a whole number of pages).
    Bytes(&'a [u8]),
    /// Zeros, this many bytes (a whole number of pages).
    Zero(u64),
}

impl UpdateData<'_> {
    fn len(&self) -> u64 {
        match self {
            Self::Bytes(b) => b.len() as u64,
            Self::Zero(len) => *len,
        }
    }
}

/// The SEV_FEATURES every vCPU of `plan` has, without SNPActive (which KVM adds): the
/// `vmsa_features` for `KVM_SEV_INIT2`. KVM gives all vCPUs the same, so they must agree,
/// and each must have SNPActive.
pub fn vmsa_features_of(plan: &LaunchPlan) -> Result<u64, SnpLaunchError> {
    let mut features = None;
    for (index, v) in plan.vcpus.iter().enumerate() {
        let VcpuState::Snp(v) = v else {
            return Err(SnpLaunchError::PlanVcpu { index, reason: "not an SEV-SNP vCPU".into() });
        };
        if v.sev_features & SVM_SEV_FEAT_SNP_ACTIVE == 0 {
            return Err(SnpLaunchError::PlanVcpu {
                index,
                reason: format!("SEV_FEATURES {:#x} lacks SNPActive (bit 0), which KVM always sets", v.sev_features),
            });
        }
        match features {
            None => features = Some(v.sev_features),
            Some(f) if f != v.sev_features => {
                return Err(SnpLaunchError::PlanVcpu {
                    index,
                    reason: format!(
                        "SEV_FEATURES {:#x} differ from vCPU 0's {f:#x}: KVM gives every vCPU the same",
                        v.sev_features
                    ),
                })
            }
            Some(_) => {}
        }
    }
    let features = features.ok_or(SnpLaunchError::PlanVcpu { index: 0, reason: "the plan has no vCPU".into() })?;
    Ok(features & !SVM_SEV_FEAT_SNP_ACTIVE)
}

/// A real SNP launch on KVM. See the module documentation for the order of the steps;
/// each step checks that the ones before it were done.
#[derive(Debug)]
pub struct SnpKvmLaunch {
    host: SnpHost,
    options: SnpKvmOptions,
    stage: Stage,
    vmsa_features: u64,
    memory: Option<SnpMemory>,
}

impl SnpKvmLaunch {
    /// A launch on `host` with `options`; refuses a policy the host cannot run (SMT, KVM's
    /// policy bits).
    pub fn new(host: SnpHost, options: SnpKvmOptions) -> Result<Self, SnpLaunchError> {
        host.check_policy(options.policy)?;
        Ok(Self { host, options, stage: Stage::New, vmsa_features: 0, memory: None })
    }

    /// The host this launch runs on.
    pub fn host(&self) -> &SnpHost {
        &self.host
    }

    /// The launch's options.
    pub fn options(&self) -> &SnpKvmOptions {
        &self.options
    }

    fn at(&self, step: &'static str, stage: Stage, needs: &'static str) -> Result<(), SnpLaunchError> {
        if self.stage == stage {
            Ok(())
        } else {
            Err(SnpLaunchError::Order { step, needs })
        }
    }

    /// Step 3: `KVM_CREATE_VM(KVM_X86_SNP_VM)`.
    pub fn create_vm(&mut self, kvm: &Kvm) -> Result<VmFd, SnpLaunchError> {
        self.at("create_vm", Stage::New, "SnpKvmLaunch::new, once")?;
        let vm = ioctl::create_snp_vm(kvm)?;
        self.stage = Stage::VmCreated;
        Ok(vm)
    }

    /// Step 4: `KVM_SEV_INIT2` with `vmsa_features` (from [`vmsa_features_of`]; refused
    /// unless the host's KVM supports them all) and GHCB version 2, then
    /// `KVM_CAP_EXIT_HYPERCALL` for `KVM_HC_MAP_GPA_RANGE` (page-state changes exit to
    /// user space).
    pub fn init(&mut self, vm: &VmFd, vmsa_features: u64) -> Result<(), SnpLaunchError> {
        self.at("init", Stage::VmCreated, "create_vm")?;
        let unsupported = vmsa_features & !self.host.vmsa_features;
        if unsupported != 0 {
            return Err(SnpLaunchError::VmsaFeatures {
                asked: vmsa_features,
                supported: self.host.vmsa_features,
                unsupported,
            });
        }
        ioctl::sev_init2(vm, &self.host.sev, vmsa_features, GHCB_VERSION)?;
        ioctl::enable_exit_hypercall(vm, 1 << KVM_HC_MAP_GPA_RANGE).map_err(SnpIoctlError::from)?;
        self.vmsa_features = vmsa_features;
        self.stage = Stage::Initialized;
        Ok(())
    }

    /// Step 5 (optional): `KVM_SEV_SNP_ENABLE_REQ_CERTS`, so that attestation requests
    /// with certificates exit as `KVM_EXIT_SNP_REQ_CERTS` (serve them with
    /// [`exits::CertServer`]). Before the first vCPU is created; on kernels without it
    /// (6.11 to 6.19) an error saying that no certificates can be served.
    pub fn enable_req_certs(&mut self, vm: &VmFd) -> Result<(), SnpLaunchError> {
        self.at("enable_req_certs", Stage::Initialized, "init, and before launch_start")?;
        if !self.host.req_certs {
            return Err(SnpLaunchError::ReqCertsUnsupported);
        }
        ioctl::snp_enable_req_certs(vm, &self.host.sev)?;
        Ok(())
    }

    /// Step 6: `KVM_SEV_SNP_LAUNCH_START` with the options' policy and guest-visible
    /// workarounds.
    pub fn launch_start(&mut self, vm: &VmFd) -> Result<(), SnpLaunchError> {
        self.at("launch_start", Stage::Initialized, "init")?;
        ioctl::snp_launch_start(vm, &self.host.sev, self.options.policy, self.options.guest_visible_workarounds)?;
        self.stage = Stage::Started;
        Ok(())
    }

    /// Step 7: registers `mem` (every region a guest_memfd slot, from slot `first_slot`
    /// on) and makes all of it private.
    pub fn add_memory(&mut self, vm: &VmFd, mem: &GuestMemoryMmap, first_slot: u32) -> Result<(), SnpLaunchError> {
        self.at("add_memory", Stage::Started, "launch_start")?;
        if self.memory.is_some() {
            return Err(SnpLaunchError::Order { step: "add_memory", needs: "nothing: it is called once" });
        }
        let memory = SnpMemory::register(vm, mem, first_slot)?;
        memory.make_all_private(vm)?;
        self.memory = Some(memory);
        Ok(())
    }

    /// The guest's memory, for the vCPU loop's conversions (after [`add_memory`](Self::add_memory)).
    pub fn memory(&self) -> Option<&SnpMemory> {
        self.memory.as_ref()
    }

    /// Step 8: gives `vcpu` the state `v` (after `KVM_SET_CPUID2`); see [`vcpu`] for how
    /// KVM turns it into the VMSA at [`launch_finish`](Self::launch_finish).
    pub fn set_vcpu(&self, kvm: &Kvm, vcpu: &VcpuFd, v: &SnpVcpu) -> Result<(), SnpLaunchError> {
        if !(Stage::Initialized..=Stage::Started).contains(&self.stage) {
            return Err(SnpLaunchError::Order { step: "set_vcpu", needs: "init, and before launch_finish" });
        }
        vcpu::set_snp_vcpu(kvm, vcpu, v, self.vmsa_features)?;
        Ok(())
    }

    /// Step 9, one range: makes `[gpa, gpa + len)` private (`KVM_SET_MEMORY_ATTRIBUTES`),
    /// puts `data` into its shared mapping as the source, then issues
    /// `KVM_SEV_SNP_LAUNCH_UPDATE` until KVM has taken the whole range (KVM advances
    /// `gfn_start`, `uaddr` and `len` as it goes; EAGAIN and EINTR are retried; a zero
    /// length is never sent), and finally drops the shared copy. A CPUID page the firmware
    /// rejects comes back as [`SnpLaunchError::CpuidRejected`] with both pages.
    pub fn launch_update(
        &self,
        vm: &VmFd,
        gpa: u64,
        data: UpdateData<'_>,
        page_type: SnpPageType,
    ) -> Result<(), SnpLaunchError> {
        self.at("launch_update", Stage::Started, "launch_start")?;
        let memory =
            self.memory.as_ref().ok_or(SnpLaunchError::Order { step: "launch_update", needs: "add_memory" })?;
        let len = data.len();
        let range_err = |reason| SnpLaunchError::PlanRange { what: format!("{page_type:?}"), gpa, reason };
        if page_type == SnpPageType::Vmsa {
            return Err(range_err("KVM builds VMSA pages itself at launch_finish"));
        }
        if len == 0 || !gpa.is_multiple_of(PAGE_SIZE) || !len.is_multiple_of(PAGE_SIZE) {
            return Err(range_err("not a non-empty, page-aligned whole number of pages"));
        }
        let host = memory.host_address(gpa, len)?;
        ioctl::set_memory_attributes(vm, gpa, len, true).map_err(SnpIoctlError::from)?;
        match data {
            UpdateData::Bytes(bytes) => memory.write(gpa, bytes)?,
            // KVM reads no source for ZERO pages; every other type copies one.
            UpdateData::Zero(_) if page_type == SnpPageType::Zero => {}
            UpdateData::Zero(_) => memory.write(gpa, &vec![0u8; len as usize])?,
        }
        let mut update = kvm_sev_snp_launch_update {
            gfn_start: gpa / PAGE_SIZE,
            uaddr: host as u64,
            len,
            type_: page_type as u8,
            ..Default::default()
        };
        let mut stuck = 0;
        while update.len != 0 {
            let before = update.len;
            // SAFETY: `uaddr` points into the shared mapping of [gpa, gpa + len), inside
            // one region (checked by host_address) that `memory` keeps mapped; KVM reads
            // it and, for a rejected CPUID page, writes it.
            match unsafe { ioctl::snp_launch_update(vm, &self.host.sev, &mut update) } {
                Ok(()) if update.len < before => stuck = 0,
                Ok(()) => stuck += 1,
                Err(e) if e.errno() == libc::EAGAIN || e.errno() == libc::EINTR => stuck += 1,
                Err(e) => {
                    let failed_gpa = update.gfn_start * PAGE_SIZE;
                    if page_type == SnpPageType::Cpuid && e.fw_error.0 == SEV_RET_INVALID_PARAM {
                        // KVM copied the firmware's version over the source page; the
                        // given one is still in `data`.
                        let mut corrected = Box::new([0u8; 4096]);
                        memory.read(failed_gpa, &mut corrected[..])?;
                        let mut given = Box::new([0u8; 4096]);
                        let at = failed_gpa.checked_sub(gpa).map(|at| at as usize);
                        if let (UpdateData::Bytes(bytes), Some(at)) = (data, at) {
                            if let Some(page) = bytes.get(at..at.saturating_add(4096)) {
                                given.copy_from_slice(page);
                            }
                        }
                        return Err(SnpLaunchError::CpuidRejected { gpa: failed_gpa, given, corrected });
                    }
                    return Err(SnpLaunchError::LaunchUpdate {
                        gpa: failed_gpa,
                        len: update.len,
                        page_type,
                        fw_error: e.fw_error,
                        source: e.source,
                    });
                }
            }
            if stuck >= MAX_UPDATE_RETRIES {
                return Err(SnpLaunchError::NoProgress { gpa: update.gfn_start * PAGE_SIZE, len: update.len });
            }
        }
        let end = update.gfn_start * PAGE_SIZE;
        if end != gpa + len {
            return Err(SnpLaunchError::UpdateEnd { gpa, len, end });
        }
        // The pages are private now: their shared copy is garbage the guest must not find
        // when it later shares them.
        memory.discard(&memory::Conversion { gpa, len, to_private: true })?;
        Ok(())
    }

    /// Step 9, whole plan: every range in plan order (the measured order) with its SNP
    /// page type and contents.
    pub fn launch_plan(&self, vm: &VmFd, plan: &LaunchPlan) -> Result<(), SnpLaunchError> {
        for range in &plan.ranges {
            let PageType::Snp(page_type) = range.page_type else {
                return Err(SnpLaunchError::PlanRange {
                    what: range.what.clone(),
                    gpa: range.gpa,
                    reason: "not an SEV-SNP range",
                });
            };
            if range.check().is_err() {
                return Err(SnpLaunchError::PlanRange {
                    what: range.what.clone(),
                    gpa: range.gpa,
                    reason: "malformed (unaligned, wrapping, or contents of the wrong length)",
                });
            }
            let data = match &range.contents {
                Contents::Bytes(b) => UpdateData::Bytes(b),
                Contents::Zero => UpdateData::Zero(range.len),
            };
            self.launch_update(vm, range.gpa, data, page_type)?;
        }
        Ok(())
    }

    /// Step 10: `KVM_SEV_SNP_LAUNCH_FINISH` with the options' ID block and ID
    /// authentication structure (when given), author-key flag, VCEK flag and host data.
    pub fn launch_finish(&mut self, vm: &VmFd) -> Result<(), SnpLaunchError> {
        self.at("launch_finish", Stage::Started, "launch_start")?;
        let o = &self.options;
        let mut finish = kvm_bindings::kvm_sev_snp_launch_finish {
            id_block_en: u8::from(o.id_block.is_some()),
            auth_key_en: u8::from(o.author_key_enabled),
            vcek_disabled: u8::from(o.vcek_disabled),
            host_data: o.host_data,
            ..Default::default()
        };
        if let (Some(block), Some(auth)) = (&o.id_block, &o.id_auth) {
            finish.id_block_uaddr = block.as_ptr() as u64;
            finish.id_auth_uaddr = auth.as_ptr() as u64;
        }
        // SAFETY: with an ID block, both buffers are the options' boxed arrays of 96 and
        // 4096 bytes (options::check makes them come together), alive for the call.
        unsafe { ioctl::snp_launch_finish(vm, &self.host.sev, &mut finish) }?;
        self.stage = Stage::Finished;
        Ok(())
    }
}

/// A CPUID page the firmware rejected, printed as the entries that differ.
struct CpuidRejection<'a> {
    gpa: u64,
    given: &'a [u8; 4096],
    corrected: &'a [u8; 4096],
}

/// One 48-byte CPUID page entry: `eax_in`, `ecx_in`, `xcr0_in`, `xss_in`, then EAX, EBX,
/// ECX, EDX.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuidEntry {
    /// Leaf.
    pub eax_in: u32,
    /// Subleaf.
    pub ecx_in: u32,
    /// XCR0 the entry is for.
    pub xcr0_in: u64,
    /// XSS the entry is for.
    pub xss_in: u64,
    /// EAX, EBX, ECX, EDX.
    pub regs: [u32; 4],
}

/// The count and the entries of a CPUID page (the count clamped to 64).
pub fn cpuid_entries(page: &[u8; 4096]) -> (u32, Vec<CpuidEntry>) {
    let count = le_u32(page, 0);
    let entries = (0..(count as usize).min(cpuid_page::COUNT_MAX))
        .map(|i| {
            let e = cpuid_page::HEADER + i * cpuid_page::ENTRY;
            CpuidEntry {
                eax_in: le_u32(page, e),
                ecx_in: le_u32(page, e + 4),
                xcr0_in: le_u64(page, e + 8),
                xss_in: le_u64(page, e + 16),
                regs: [le_u32(page, e + 24), le_u32(page, e + 28), le_u32(page, e + 32), le_u32(page, e + 36)],
            }
        })
        .collect();
    (count, entries)
}

impl std::fmt::Display for CpuidRejection<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (given_count, given) = cpuid_entries(self.given);
        let (fw_count, fixed) = cpuid_entries(self.corrected);
        write!(f, "the SNP firmware rejected the CPUID page at {:#x} (INVALID_PARAM)", self.gpa)?;
        if given_count != fw_count {
            write!(f, "; entry count {given_count} given, {fw_count} from the firmware")?;
        }
        let regs =
            |r: &[u32; 4]| format!("eax={:#010x} ebx={:#010x} ecx={:#010x} edx={:#010x}", r[0], r[1], r[2], r[3]);
        let mut differing = 0;
        for i in 0..given.len().max(fixed.len()) {
            match (given.get(i), fixed.get(i)) {
                (Some(g), Some(c)) if g == c => {}
                (Some(g), Some(c)) => {
                    differing += 1;
                    write!(
                        f,
                        "; leaf {:#x} subleaf {:#x}: given {}, firmware {}",
                        g.eax_in,
                        g.ecx_in,
                        regs(&g.regs),
                        regs(&c.regs)
                    )?;
                    if (g.eax_in, g.ecx_in, g.xcr0_in, g.xss_in) != (c.eax_in, c.ecx_in, c.xcr0_in, c.xss_in) {
                        write!(
                            f,
                            " (firmware entry is leaf {:#x} subleaf {:#x} xcr0 {:#x} xss {:#x})",
                            c.eax_in, c.ecx_in, c.xcr0_in, c.xss_in
                        )?;
                    }
                }
                (Some(g), None) => {
                    differing += 1;
                    write!(
                        f,
                        "; leaf {:#x} subleaf {:#x}: given {}, not in the firmware's page",
                        g.eax_in,
                        g.ecx_in,
                        regs(&g.regs)
                    )?;
                }
                (None, Some(c)) => {
                    differing += 1;
                    write!(
                        f,
                        "; leaf {:#x} subleaf {:#x}: only in the firmware's page: {}",
                        c.eax_in,
                        c.ecx_in,
                        regs(&c.regs)
                    )?;
                }
                (None, None) => {}
            }
        }
        if differing == 0 {
            f.write_str("; no entry differs (the firmware objected to something else in the page)")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::snp::{VmmType, BSP_RESET_EIP};
    use crate::plan::PlanRange;
    use probe::{SmtState, SnpFirmwareStatus};

    fn plan_with(features: &[u64]) -> LaunchPlan {
        LaunchPlan {
            ranges: vec![],
            vcpus: features
                .iter()
                .map(|&f| VcpuState::Snp(SnpVcpu::at_reset(BSP_RESET_EIP, 0, f, VmmType::Qemu)))
                .collect(),
        }
    }

    #[test]
    fn vmsa_features_are_the_vcpus_features_without_snp_active() {
        assert_eq!(vmsa_features_of(&plan_with(&[0x1, 0x1])).unwrap(), 0);
        assert_eq!(vmsa_features_of(&plan_with(&[0x21])).unwrap(), 0x20);
    }

    #[test]
    fn plans_whose_vcpus_kvm_cannot_give_are_refused() {
        let err = vmsa_features_of(&plan_with(&[0x1, 0x21])).unwrap_err();
        assert!(matches!(err, SnpLaunchError::PlanVcpu { index: 1, .. }), "{err}");
        assert!(err.to_string().contains("differ from vCPU 0's 0x1"), "{err}");

        let err = vmsa_features_of(&plan_with(&[0x20])).unwrap_err();
        assert!(err.to_string().contains("lacks SNPActive"), "{err}");
        assert!(vmsa_features_of(&plan_with(&[])).is_err());
        let tdx = LaunchPlan { ranges: vec![], vcpus: vec![VcpuState::Tdx { rcx: 0 }] };
        assert!(vmsa_features_of(&tdx).unwrap_err().to_string().contains("not an SEV-SNP vCPU"));
    }

    /// A host description for tests of the launch's own checks (no ioctl reaches /dev/null).
    fn fake_host(vmsa_features: u64, req_certs: bool) -> SnpHost {
        SnpHost {
            sev: std::fs::File::open("/dev/null").unwrap(),
            sev_path: "/dev/null".into(),
            vm_types: 1 << 4,
            vmsa_features,
            policy_bits: None,
            req_certs,
            firmware: SnpFirmwareStatus::from(uapi::SevUserDataSnpStatus::default()),
            smt: SmtState::Inactive,
        }
    }

    #[test]
    fn steps_out_of_order_are_refused_before_any_ioctl() {
        let kvm = Kvm::new().unwrap();
        let vm = kvm.create_vm().unwrap();
        let mut launch = SnpKvmLaunch::new(fake_host(0, true), SnpKvmOptions::default()).unwrap();

        let err = launch.launch_start(&vm).unwrap_err();
        assert_eq!(err.to_string(), "launch_start must come after init");
        assert!(matches!(launch.init(&vm, 0), Err(SnpLaunchError::Order { step: "init", .. })));
        assert!(matches!(launch.launch_finish(&vm), Err(SnpLaunchError::Order { .. })));
        assert!(matches!(
            launch.launch_update(&vm, 0, UpdateData::Zero(0x1000), SnpPageType::Zero),
            Err(SnpLaunchError::Order { .. })
        ));
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(vm_memory::GuestAddress(0), 0x1000)]).unwrap();
        assert!(matches!(launch.add_memory(&vm, &mem, 0), Err(SnpLaunchError::Order { .. })));
    }

    #[test]
    fn vmsa_features_the_host_lacks_are_refused_before_init2() {
        let kvm = Kvm::new().unwrap();
        let mut launch = SnpKvmLaunch::new(fake_host(0x20, true), SnpKvmOptions::default()).unwrap();
        launch.stage = Stage::VmCreated; // as after create_vm on an SNP host
        let vm = kvm.create_vm().unwrap();

        let err = launch.init(&vm, 0x220).unwrap_err();

        assert!(matches!(err, SnpLaunchError::VmsaFeatures { unsupported: 0x200, .. }), "{err}");
        assert!(err.to_string().contains("KVM_X86_SEV_VMSA_FEATURES = 0x20"), "{err}");
    }

    #[test]
    fn certificate_requests_on_older_kernels_say_why_none_can_be_served() {
        let kvm = Kvm::new().unwrap();
        let vm = kvm.create_vm().unwrap();
        let mut launch = SnpKvmLaunch::new(fake_host(0, false), SnpKvmOptions::default()).unwrap();
        launch.stage = Stage::Initialized;

        let err = launch.enable_req_certs(&vm).unwrap_err();

        assert!(matches!(err, SnpLaunchError::ReqCertsUnsupported));
        let msg = err.to_string();
        assert!(msg.contains("Linux 6.11 to 6.19") && msg.contains("empty certificate table"), "{msg}");
    }

    #[test]
    fn a_policy_the_host_cannot_run_is_refused_at_new() {
        let host = SnpHost { smt: SmtState::Active, ..fake_host(0, false) };
        let options = SnpKvmOptions { policy: 0x20000, ..SnpKvmOptions::default() };

        let err = SnpKvmLaunch::new(host, options).unwrap_err();

        assert!(matches!(err, SnpLaunchError::Host(SnpHostError::SmtNotAllowed { .. })), "{err}");
    }

    #[test]
    fn vmsa_and_malformed_ranges_are_refused() {
        let kvm = Kvm::new().unwrap();
        let vm = kvm.create_vm().unwrap();
        let mut launch = SnpKvmLaunch::new(fake_host(0, false), SnpKvmOptions::default()).unwrap();
        launch.stage = Stage::Started;
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(vm_memory::GuestAddress(0), 0x10000)]).unwrap();
        launch.memory = Some(SnpMemory::register(&vm, &mem, 0).unwrap());

        let vmsa = launch.launch_update(&vm, 0, UpdateData::Zero(0x1000), SnpPageType::Vmsa).unwrap_err();
        let unaligned = launch.launch_update(&vm, 0x800, UpdateData::Zero(0x1000), SnpPageType::Zero).unwrap_err();
        let empty = launch.launch_update(&vm, 0, UpdateData::Bytes(&[]), SnpPageType::Normal).unwrap_err();
        let outside = launch.launch_update(&vm, 0xf000, UpdateData::Zero(0x2000), SnpPageType::Zero).unwrap_err();
        let tdx_plan = LaunchPlan {
            ranges: vec![PlanRange {
                gpa: 0,
                len: 0x1000,
                page_type: PageType::Tdx(crate::plan::TdxPageType::AddMeasured),
                contents: Contents::Zero,
                what: "td".into(),
            }],
            vcpus: vec![],
        };
        let not_snp = launch.launch_plan(&vm, &tdx_plan).unwrap_err();

        assert!(vmsa.to_string().contains("KVM builds VMSA pages itself"), "{vmsa}");
        assert!(unaligned.to_string().contains("page-aligned"), "{unaligned}");
        assert!(empty.to_string().contains("non-empty"), "{empty}");
        assert!(matches!(outside, SnpLaunchError::Memory(SnpMemoryError::NotInOneRegion { .. })), "{outside}");
        assert!(not_snp.to_string().contains("'td' at 0x0: not an SEV-SNP range"), "{not_snp}");
    }

    fn cpuid_page(entries: &[(u32, u32, [u32; 4])]) -> Box<[u8; 4096]> {
        let mut p = Box::new([0u8; 4096]);
        p[0..4].copy_from_slice(&(entries.len() as u32).to_le_bytes());
        for (i, (leaf, sub, regs)) in entries.iter().enumerate() {
            let e = 16 + 48 * i;
            p[e..e + 4].copy_from_slice(&leaf.to_le_bytes());
            p[e + 4..e + 8].copy_from_slice(&sub.to_le_bytes());
            for (r, v) in regs.iter().enumerate() {
                p[e + 24 + 4 * r..e + 28 + 4 * r].copy_from_slice(&v.to_le_bytes());
            }
        }
        p
    }

    #[test]
    fn a_rejected_cpuid_page_lists_the_entries_the_firmware_changed() {
        let given = cpuid_page(&[(0, 0, [0x10, 1, 2, 3]), (7, 0, [0, 0xffff_ffff, 0, 0]), (0xd, 1, [0xf, 0, 0, 0])]);
        let corrected =
            cpuid_page(&[(0, 0, [0x10, 1, 2, 3]), (7, 0, [0, 0x219c_97a9, 0, 0]), (0xd, 1, [0xf, 0, 0, 0])]);

        let err = SnpLaunchError::CpuidRejected { gpa: 0x80e000, given, corrected };

        let msg = err.to_string();
        assert!(msg.starts_with("the SNP firmware rejected the CPUID page at 0x80e000 (INVALID_PARAM)"), "{msg}");
        assert!(
            msg.contains(
                "leaf 0x7 subleaf 0x0: given eax=0x00000000 ebx=0xffffffff ecx=0x00000000 edx=0x00000000, \
                 firmware eax=0x00000000 ebx=0x219c97a9"
            ),
            "{msg}"
        );
        assert!(
            !msg.contains("leaf 0x0 subleaf") && !msg.contains("leaf 0xd"),
            "unchanged entries are not listed: {msg}"
        );
    }

    #[test]
    fn a_rejected_cpuid_page_with_another_count_says_so() {
        let given = cpuid_page(&[(0, 0, [1, 0, 0, 0]), (0x8000_0000, 0, [2, 0, 0, 0])]);
        let corrected = cpuid_page(&[(0, 0, [1, 0, 0, 0])]);

        let msg = SnpLaunchError::CpuidRejected { gpa: 0, given, corrected }.to_string();

        assert!(msg.contains("entry count 2 given, 1 from the firmware"), "{msg}");
        assert!(msg.contains("leaf 0x80000000 subleaf 0x0: given eax=0x00000002"), "{msg}");
        assert!(msg.contains("not in the firmware's page"), "{msg}");
    }

    #[test]
    fn cpuid_entry_counts_beyond_64_are_clamped() {
        let mut page = Box::new([0u8; 4096]);
        page[0..4].copy_from_slice(&1000u32.to_le_bytes());

        let (count, entries) = cpuid_entries(&page);

        assert_eq!((count, entries.len()), (1000, 64));
    }
}
