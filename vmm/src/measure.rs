//! `cvmm measure`: the launch measurement a configuration will produce, computed from
//! the same launch plan the launch itself uses.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use firmware::sev::KernelHashes;
use launch::plan::snp::{plan_snp, KernelHashesInput, SnpPlanOptions, VcpuType, VmmType};
use launch::plan::tdx::{plan_tdx, TdxPlanOptions};
use launch::plan::{LaunchPlan, VcpuState};
use serde::Serialize;
use sha2::{Digest, Sha256, Sha384};
use thiserror::Error;

use crate::launch_log::{log_entries, LogEntry};

/// Which TEE to measure for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tee {
    /// AMD SEV-SNP: the launch digest.
    Snp,
    /// Intel TDX: MRTD.
    Tdx,
}

/// What to measure.
#[derive(Debug, Clone)]
pub struct MeasureOptions {
    /// The TEE.
    pub tee: Tee,
    /// Firmware image path.
    pub firmware: PathBuf,
    /// vCPU count.
    pub vcpus: u32,
    /// SNP vCPU type name (required for SNP).
    pub vcpu_type: Option<String>,
    /// SNP VMM type name (QEMU, ec2, gce).
    pub vmm_type: Option<String>,
    /// SNP guest features (the VMSA's SEV_FEATURES).
    pub guest_features: u64,
    /// Kernel for a measured direct boot (SNP kernel hashes).
    pub kernel: Option<PathBuf>,
    /// Initrd for a measured direct boot.
    pub initrd: Option<PathBuf>,
    /// Command line for a measured direct boot.
    pub cmdline: Option<String>,
    /// Also compute the firmware's own hashes (for `--json`).
    pub firmware_hashes: bool,
    /// Also build the launch log (for `--launch-log`); it hashes every range again.
    pub launch_log: bool,
}

/// Errors from `cvmm measure`.
#[derive(Debug, Error)]
pub enum MeasureError {
    /// A file could not be read.
    #[error("cannot read {what} {path}: {source}")]
    Read {
        /// Which input.
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// An option that does not apply.
    #[error("{0}")]
    Usage(String),
    /// Building the SNP plan failed.
    #[error(transparent)]
    SnpPlan(#[from] launch::plan::snp::SnpPlanError),
    /// Building the TDX plan failed.
    #[error(transparent)]
    TdxPlan(#[from] launch::plan::tdx::TdxPlanError),
    /// Computing the SNP digest failed.
    #[error(transparent)]
    SnpDigest(#[from] launch::measure::snp::SnpMeasureError),
    /// Computing MRTD failed.
    #[error(transparent)]
    Mrtd(#[from] launch::measure::tdx::TdxMeasureError),
}

/// SHA-256 digests of a measured direct boot's inputs, as the kernel-hashes page has them.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct KernelHashesReport {
    /// SHA-256 of the kernel file.
    pub kernel_sha256: String,
    /// SHA-256 of the initrd (of no bytes without one).
    pub initrd_sha256: String,
    /// SHA-256 of the command line with its terminating NUL.
    pub cmdline_sha256: String,
}

/// Every value `cvmm measure --json` prints.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct MeasureReport {
    /// "snp" or "tdx".
    pub tee: &'static str,
    /// SNP launch digest (hex).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// TDX MRTD (hex).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mrtd: Option<String>,
    /// SHA-256 of the firmware file (when asked for).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub firmware_sha256: Option<String>,
    /// SHA-384 of the firmware file (when asked for).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub firmware_sha384: Option<String>,
    /// vCPU count.
    pub vcpus: u32,
    /// SNP vCPU type.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vcpu_type: Option<String>,
    /// SNP VMM type.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vmm_type: Option<String>,
    /// SNP guest features, as `0x...`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guest_features: Option<String>,
    /// Kernel hashes of a measured direct boot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel_hashes: Option<KernelHashesReport>,
    /// Number of ranges in the plan (and of VMSAs).
    pub plan_ranges: usize,
    #[serde(skip)]
    /// The launch log (not part of the JSON object; written with --launch-log).
    pub launch_log: Vec<LogEntry>,
}

impl MeasureReport {
    /// The measurement as lowercase hex.
    pub fn measurement(&self) -> &str {
        self.digest.as_deref().or(self.mrtd.as_deref()).unwrap_or_default()
    }
}

/// Reads a whole file straight into shared memory (the plan shares it, no second copy).
fn read_shared(what: &'static str, path: &Path) -> Result<Arc<[u8]>, MeasureError> {
    let err = |source| MeasureError::Read { what, path: path.to_path_buf(), source };
    let mut file = std::fs::File::open(path).map_err(err)?;
    let len = file.metadata().map_err(err)?.len();
    let len = usize::try_from(len).map_err(|_| err(std::io::Error::other("file too large")))?;
    let mut buf = Arc::<[u8]>::new_zeroed_slice(len);
    let slot = Arc::get_mut(&mut buf).expect("a fresh Arc is unique");
    // SAFETY: zeroed memory is a valid [u8]; the bytes are then overwritten by the read.
    let bytes: &mut [u8] = unsafe { &mut *(slot as *mut [std::mem::MaybeUninit<u8>] as *mut [u8]) };
    file.read_exact(bytes).map_err(err)?;
    // SAFETY: every element was initialized (zeroed, then read into).
    Ok(unsafe { buf.assume_init() })
}

/// Builds the plan for `opts` and measures it.
pub fn measure(opts: &MeasureOptions) -> Result<MeasureReport, MeasureError> {
    let firmware = read_shared("firmware", &opts.firmware)?;
    let base = MeasureReport {
        tee: "snp",
        digest: None,
        mrtd: None,
        firmware_sha256: opts.firmware_hashes.then(|| hex::encode(Sha256::digest(&firmware))),
        firmware_sha384: opts.firmware_hashes.then(|| hex::encode(Sha384::digest(&firmware))),
        vcpus: opts.vcpus,
        vcpu_type: None,
        vmm_type: None,
        guest_features: None,
        kernel_hashes: None,
        plan_ranges: 0,
        launch_log: Vec::new(),
    };
    match opts.tee {
        Tee::Snp => measure_snp(opts, &firmware, base),
        Tee::Tdx => measure_tdx(opts, &firmware, base),
    }
}

fn measure_snp(
    opts: &MeasureOptions,
    firmware: &Arc<[u8]>,
    base: MeasureReport,
) -> Result<MeasureReport, MeasureError> {
    let vcpu_type_name = opts
        .vcpu_type
        .as_deref()
        .ok_or_else(|| MeasureError::Usage("--vcpu-type is required with --tee snp (e.g. EPYC-v4)".into()))?;
    let vcpu_type: VcpuType = vcpu_type_name.parse()?;
    let vmm_type: VmmType = opts.vmm_type.as_deref().map(str::parse).transpose()?.unwrap_or_default();
    if opts.kernel.is_none() && (opts.initrd.is_some() || opts.cmdline.is_some()) {
        return Err(MeasureError::Usage("--initrd and --cmdline measure a direct boot: give --kernel too".into()));
    }
    let hashes = match &opts.kernel {
        Some(kernel) => Some(kernel_hashes(kernel, opts.initrd.as_deref(), opts.cmdline.as_deref().unwrap_or(""))?),
        None => None,
    };
    let kernel_hashes = hashes.map(|h| KernelHashesReport {
        kernel_sha256: hex::encode(h.kernel),
        initrd_sha256: hex::encode(h.initrd),
        cmdline_sha256: hex::encode(h.cmdline),
    });
    let plan = plan_snp(&SnpPlanOptions {
        firmware: firmware.clone(),
        vcpus: opts.vcpus,
        vcpu_type,
        vmm_type,
        guest_features: opts.guest_features,
        kernel_hashes: hashes,
    })?;
    let digest = launch::measure::snp::launch_digest(&plan)?;
    Ok(MeasureReport {
        tee: "snp",
        digest: Some(hex::encode(digest)),
        vcpu_type: Some(vcpu_type.name().to_string()),
        vmm_type: Some(vmm_type.name().to_string()),
        guest_features: Some(format!("{:#x}", opts.guest_features)),
        kernel_hashes,
        plan_ranges: plan.ranges.len(),
        launch_log: if opts.launch_log { snp_log(&plan) } else { Vec::new() },
        ..base
    })
}

/// SHA-256 of a file, read in 1 MiB pieces (a large initrd is never held whole).
fn sha256_file(what: &'static str, path: &Path) -> Result<[u8; 32], MeasureError> {
    let err = |source| MeasureError::Read { what, path: path.to_path_buf(), source };
    let mut file = std::fs::File::open(path).map_err(err)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => hasher.update(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(err(e)),
        }
    }
    Ok(hasher.finalize().into())
}

/// The kernel-hashes digests, hashing the kernel and the initrd in parallel.
fn kernel_hashes(kernel: &Path, initrd: Option<&Path>, cmdline: &str) -> Result<KernelHashes, MeasureError> {
    // The command line's digest (with its NUL) comes from the plan's own helper.
    let cmdline_only = KernelHashesInput { kernel: &[], initrd: None, cmdline }.hashes()?;
    let (kernel, initrd) = std::thread::scope(|s| {
        let initrd = s.spawn(|| initrd.map(|p| sha256_file("initrd", p)).transpose());
        let kernel = sha256_file("kernel", kernel);
        (kernel, initrd.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
    });
    Ok(KernelHashes { cmdline: cmdline_only.cmdline, initrd: initrd?.unwrap_or(cmdline_only.initrd), kernel: kernel? })
}

/// The launch log of an SNP plan: every range, then every VMSA.
pub fn snp_log(plan: &LaunchPlan) -> Vec<LogEntry> {
    log_entries(plan, |v| match v {
        VcpuState::Snp(s) => Some((launch::measure::snp::VMSA_GPA, launch::measure::snp::vmsa_page(s).to_vec())),
        VcpuState::Tdx { .. } => None,
    })
}

fn measure_tdx(opts: &MeasureOptions, firmware: &[u8], base: MeasureReport) -> Result<MeasureReport, MeasureError> {
    for (given, flag) in [
        (opts.vcpu_type.is_some(), "--vcpu-type"),
        (opts.vmm_type.is_some(), "--vmm-type"),
        (opts.kernel.is_some(), "--kernel"),
        (opts.initrd.is_some(), "--initrd"),
        (opts.cmdline.is_some(), "--cmdline"),
    ] {
        if given {
            return Err(MeasureError::Usage(format!(
                "{flag} does not apply to --tee tdx (MRTD covers the firmware only)"
            )));
        }
    }
    let plan = plan_tdx(&TdxPlanOptions { firmware, vcpus: opts.vcpus })?;
    let mrtd = launch::measure::tdx::mrtd(&plan)?;
    Ok(MeasureReport {
        tee: "tdx",
        mrtd: Some(hex::encode(mrtd)),
        plan_ranges: plan.ranges.len(),
        launch_log: if opts.launch_log { log_entries(&plan, |_| None) } else { Vec::new() },
        ..base
    })
}
