//! Whether this host can launch SEV-SNP guests through KVM, and what it offers: the SEV
//! firmware device, KVM's SNP VM type and VMSA features, the SNP firmware's status and
//! the host's SMT state. Each missing piece is its own error saying what to do.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use kvm_bindings::{KVM_CAP_VM_TYPES, KVM_X86_GRP_SEV, KVM_X86_SEV_VMSA_FEATURES, KVM_X86_SNP_VM};
use kvm_ioctls::Kvm;
use thiserror::Error;

use super::ioctl::{kvm_get_device_attr, snp_platform_status, SnpIoctlError};
use super::uapi::{SevUserDataSnpStatus, KVM_X86_SEV_SNP_REQ_CERTS, KVM_X86_SNP_POLICY_BITS};

/// Where the SEV firmware interface lives unless configured otherwise (QEMU's
/// `sev-device` default).
pub const DEFAULT_SEV_DEVICE: &str = "/dev/sev";

/// The SNP guest policy bit that allows SMT (SEV-SNP firmware ABI, "Guest Policy").
pub const POLICY_SMT: u64 = 1 << 16;

/// Errors from [`probe_host`]: each names what is missing and how to get it.
#[derive(Debug, Error)]
pub enum SnpHostError {
    /// The SEV firmware device does not exist.
    #[error(
        "{} does not exist: the host has no SEV firmware interface (load the ccp module; enable SME, \
         SEV-SNP and SNP memory coverage in the BIOS)",
        path.display()
    )]
    SevDeviceMissing {
        /// The device path.
        path: PathBuf,
    },
    /// The SEV firmware device cannot be opened.
    #[error(
        "cannot open {} read/write: {source} (run as root or as a member of the group that owns it)",
        path.display()
    )]
    SevDeviceOpen {
        /// The device path.
        path: PathBuf,
        /// The open error.
        #[source]
        source: std::io::Error,
    },
    /// KVM does not offer the SNP VM type.
    #[error(
        "KVM does not offer the SNP VM type (KVM_CAP_VM_TYPES = {vm_types:#x}: {}): needs Linux >= 6.11 with \
         kvm_amd.sev_snp=1{}",
        vm_type_names(*vm_types),
        kvm_amd_detail.as_deref().map(|d| format!(" ({d})")).unwrap_or_default()
    )]
    SnpVmTypeMissing {
        /// The VM types KVM offers (bit n set: type n).
        vm_types: u32,
        /// What the kvm_amd module says about SNP, when it can be read.
        kvm_amd_detail: Option<String>,
    },
    /// KVM's supported VMSA features cannot be read.
    #[error(
        "cannot read the VMSA features KVM supports (KVM_X86_GRP_SEV/KVM_X86_SEV_VMSA_FEATURES): {source}: needs \
         Linux >= 6.11 with kvm_amd.sev_snp=1"
    )]
    VmsaFeatures {
        /// The ioctl's error.
        #[source]
        source: SnpIoctlError,
    },
    /// SNP_PLATFORM_STATUS failed.
    #[error(
        "the SEV firmware does not answer SNP_PLATFORM_STATUS: {source}: it has no SNP support or is not initialized"
    )]
    PlatformStatus {
        /// The ioctl's error.
        #[source]
        source: SnpIoctlError,
    },
    /// The SNP firmware runs, but SNP_INIT has not run (no RMP).
    #[error(
        "the SNP firmware (API {}.{}, build {}) has no initialized RMP: SNP_INIT has not run (kvm_amd initializes \
         it when loaded with sev_snp=1; see dmesg for 'SEV-SNP')",
        status.api_major, status.api_minor, status.build_id
    )]
    RmpNotInitialized {
        /// The firmware's status.
        status: SnpFirmwareStatus,
    },
    /// The guest policy forbids SMT but SMT is active on the host.
    #[error(
        "the guest policy {policy:#x} does not allow SMT (bit 16) but SMT is active on this host: the firmware \
         would refuse SNP_LAUNCH_START (set policy bit 16, or disable SMT: echo off > /sys/devices/system/cpu/smt/control)"
    )]
    SmtNotAllowed {
        /// The guest policy.
        policy: u64,
    },
    /// The guest policy has bits this KVM refuses.
    #[error("the guest policy {policy:#x} has bits {extra:#x} this KVM does not accept (KVM_X86_SNP_POLICY_BITS = {supported:#x})")]
    PolicyBits {
        /// The guest policy.
        policy: u64,
        /// The bits KVM accepts.
        supported: u64,
        /// The bits it does not.
        extra: u64,
    },
}

/// The names of the VM types (KVM_X86_*_VM) by number.
pub const VM_TYPE_NAMES: [&str; 6] = ["DEFAULT", "SW_PROTECTED", "SEV", "SEV_ES", "SNP", "TDX"];

/// The names of the VM types set in a `KVM_CAP_VM_TYPES` mask: "DEFAULT, SNP"; a type
/// without a name is "type N", an empty mask "none".
pub fn vm_type_names(vm_types: u32) -> String {
    let names: Vec<String> = (0..32)
        .filter(|bit| vm_types & (1 << bit) != 0)
        .map(|bit| VM_TYPE_NAMES.get(bit).map_or_else(|| format!("type {bit}"), |n| (*n).to_owned()))
        .collect();
    if names.is_empty() {
        "none".to_owned()
    } else {
        names.join(", ")
    }
}

/// The SNP firmware's status (SNP_PLATFORM_STATUS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnpFirmwareStatus {
    /// Firmware API major version.
    pub api_major: u8,
    /// Firmware API minor version.
    pub api_minor: u8,
    /// Firmware build.
    pub build_id: u32,
    /// Platform state (0 UNINIT, 1 INIT).
    pub state: u8,
    /// Whether the RMP is initialized (SNP_INIT has run).
    pub rmp_initialized: bool,
    /// Guests the firmware currently manages.
    pub guest_count: u32,
    /// The installed TCB version, raw (its byte layout depends on the CPU generation:
    /// Milan/Genoa: bootloader, TEE, 4 reserved, SNP, microcode; Turin: FMC,
    /// bootloader, TEE, SNP, 3 reserved, microcode).
    pub current_tcb: u64,
    /// The TCB version put in attestation reports, raw.
    pub reported_tcb: u64,
    /// CHIP_ID is zero in attestation reports.
    pub mask_chip_id: bool,
    /// Reports are not signed with the VCEK.
    pub mask_chip_key: bool,
    /// A VLEK is loaded.
    pub vlek_loaded: bool,
}

impl From<SevUserDataSnpStatus> for SnpFirmwareStatus {
    fn from(s: SevUserDataSnpStatus) -> Self {
        let flags = s.flags;
        Self {
            api_major: s.api_major,
            api_minor: s.api_minor,
            build_id: s.build_id,
            state: s.state,
            rmp_initialized: s.rmp_flags & 1 != 0,
            guest_count: s.guest_count,
            current_tcb: s.current_tcb_version,
            reported_tcb: s.reported_tcb_version,
            mask_chip_id: flags & 1 != 0,
            mask_chip_key: flags & 2 != 0,
            vlek_loaded: flags & 4 != 0,
        }
    }
}

/// The host's simultaneous multithreading state (/sys/devices/system/cpu/smt/active).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtState {
    /// Sibling threads are online: the guest policy must allow SMT.
    Active,
    /// No sibling thread is online.
    Inactive,
    /// The kernel does not say.
    Unknown,
}

impl SmtState {
    /// Reads /sys/devices/system/cpu/smt/active.
    pub fn read() -> Self {
        Self::parse(std::fs::read_to_string("/sys/devices/system/cpu/smt/active").ok().as_deref())
    }

    fn parse(active: Option<&str>) -> Self {
        match active.map(str::trim) {
            Some("1") => Self::Active,
            Some("0") => Self::Inactive,
            _ => Self::Unknown,
        }
    }
}

/// What an SNP-capable host offers.
#[derive(Debug)]
pub struct SnpHost {
    /// The opened SEV firmware device; its fd goes into every SEV command.
    pub sev: File,
    /// Its path.
    pub sev_path: PathBuf,
    /// `KVM_CAP_VM_TYPES`: the VM types KVM offers.
    pub vm_types: u32,
    /// `KVM_X86_SEV_VMSA_FEATURES`: the SEV_FEATURES bits `KVM_SEV_INIT2` accepts.
    pub vmsa_features: u64,
    /// `KVM_X86_SNP_POLICY_BITS` (Linux 6.19): the policy bits SNP_LAUNCH_START accepts;
    /// `None` on older kernels.
    pub policy_bits: Option<u64>,
    /// `KVM_X86_SEV_SNP_REQ_CERTS` (Linux 7.0): whether KVM can ask user space for the
    /// certificates of an attestation request.
    pub req_certs: bool,
    /// The SNP firmware's status.
    pub firmware: SnpFirmwareStatus,
    /// The host's SMT state.
    pub smt: SmtState,
}

impl SnpHost {
    /// Checks the host-dependent parts of a guest policy: SMT must be allowed when the
    /// host has it active, and the policy must be within the bits KVM accepts (when KVM
    /// says which). The policy's own consistency is `crate::snp::policy`'s business.
    pub fn check_policy(&self, policy: u64) -> Result<(), SnpHostError> {
        if self.smt == SmtState::Active && policy & POLICY_SMT == 0 {
            return Err(SnpHostError::SmtNotAllowed { policy });
        }
        if let Some(supported) = self.policy_bits {
            let extra = policy & !supported;
            if extra != 0 {
                return Err(SnpHostError::PolicyBits { policy, supported, extra });
            }
        }
        Ok(())
    }
}

/// Probes the host with the default SEV device, /dev/sev.
pub fn probe_host(kvm: &Kvm) -> Result<SnpHost, SnpHostError> {
    probe_host_with(kvm, Path::new(DEFAULT_SEV_DEVICE))
}

/// Probes the host with `sev_path` as the SEV firmware device (QEMU's `sev-device`), in
/// this order: the device exists and opens read/write; KVM_CAP_VM_TYPES has
/// `KVM_X86_SNP_VM`; `KVM_X86_SEV_VMSA_FEATURES` can be read; the firmware answers
/// SNP_PLATFORM_STATUS with an initialized RMP. `KVM_X86_SNP_POLICY_BITS` and
/// `KVM_X86_SEV_SNP_REQ_CERTS` are read when the kernel has them.
pub fn probe_host_with(kvm: &Kvm, sev_path: &Path) -> Result<SnpHost, SnpHostError> {
    if !sev_path.exists() {
        return Err(SnpHostError::SevDeviceMissing { path: sev_path.to_owned() });
    }
    let sev = OpenOptions::new()
        .read(true)
        .write(true)
        .open(sev_path)
        .map_err(|source| SnpHostError::SevDeviceOpen { path: sev_path.to_owned(), source })?;

    let vm_types = u32::try_from(kvm.check_extension_raw(KVM_CAP_VM_TYPES.into())).unwrap_or(0);
    if vm_types & (1 << KVM_X86_SNP_VM) == 0 {
        return Err(SnpHostError::SnpVmTypeMissing { vm_types, kvm_amd_detail: kvm_amd_detail() });
    }
    let vmsa_features = kvm_get_device_attr(kvm, KVM_X86_GRP_SEV, KVM_X86_SEV_VMSA_FEATURES.into())
        .map_err(|source| SnpHostError::VmsaFeatures { source })?;
    let policy_bits = kvm_get_device_attr(kvm, KVM_X86_GRP_SEV, KVM_X86_SNP_POLICY_BITS).ok();
    let req_certs = kvm_get_device_attr(kvm, KVM_X86_GRP_SEV, KVM_X86_SEV_SNP_REQ_CERTS).is_ok_and(|v| v == 1);

    let firmware =
        SnpFirmwareStatus::from(snp_platform_status(&sev).map_err(|source| SnpHostError::PlatformStatus { source })?);
    if !firmware.rmp_initialized {
        return Err(SnpHostError::RmpNotInitialized { status: firmware });
    }
    Ok(SnpHost {
        sev,
        sev_path: sev_path.to_owned(),
        vm_types,
        vmsa_features,
        policy_bits,
        req_certs,
        firmware,
        smt: SmtState::read(),
    })
}

/// What /sys/module/kvm_amd says about SNP, for the error message.
fn kvm_amd_detail() -> Option<String> {
    let module = Path::new("/sys/module/kvm_amd");
    if !module.exists() {
        return Some("the kvm_amd module is not loaded".to_owned());
    }
    let snp = std::fs::read_to_string(module.join("parameters/sev_snp")).ok()?;
    Some(format!("kvm_amd.sev_snp is {}", snp.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_names_the_missing_sev_device() {
        let kvm = Kvm::new().unwrap();
        let path = Path::new("/nonexistent/sev");

        let err = probe_host_with(&kvm, path).unwrap_err();

        assert!(matches!(err, SnpHostError::SevDeviceMissing { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.starts_with("/nonexistent/sev does not exist: the host has no SEV firmware interface"), "{msg}");
        assert!(msg.contains("BIOS"), "{msg}");
    }

    #[test]
    fn probe_on_this_host_fails_and_names_what_is_missing() {
        let kvm = Kvm::new().unwrap();

        let result = probe_host(&kvm);

        match result {
            // An SNP host: everything was there.
            Ok(host) => assert!(host.firmware.rmp_initialized && host.vm_types & (1 << KVM_X86_SNP_VM) != 0),
            Err(err) => {
                let msg = err.to_string();
                if !Path::new(DEFAULT_SEV_DEVICE).exists() {
                    assert!(matches!(err, SnpHostError::SevDeviceMissing { .. }), "{err:?}");
                    assert!(msg.contains("/dev/sev does not exist"), "{msg}");
                } else {
                    assert!(!matches!(err, SnpHostError::SevDeviceMissing { .. }), "{msg}");
                }
            }
        }
    }

    #[test]
    fn probe_past_the_device_names_the_missing_snp_vm_type() {
        // /dev/null stands in for an openable /dev/sev: the next check is KVM's, which this
        // host's KVM (default VM type only) fails.
        let kvm = Kvm::new().unwrap();
        let vm_types = kvm.check_extension_raw(KVM_CAP_VM_TYPES.into()) as u32;
        if vm_types & (1 << KVM_X86_SNP_VM) != 0 {
            return; // an SNP host: this case cannot be produced here
        }

        let err = probe_host_with(&kvm, Path::new("/dev/null")).unwrap_err();

        let msg = err.to_string();
        assert!(matches!(err, SnpHostError::SnpVmTypeMissing { .. }), "{msg}");
        assert!(msg.starts_with("KVM does not offer the SNP VM type (KVM_CAP_VM_TYPES = "), "{msg}");
        assert!(msg.contains("needs Linux >= 6.11 with kvm_amd.sev_snp=1"), "{msg}");
        assert!(msg.contains(&format!("{vm_types:#x}: DEFAULT")), "{msg}");
    }

    #[test]
    fn vm_type_masks_are_named() {
        assert_eq!(vm_type_names(0x1), "DEFAULT");
        assert_eq!(vm_type_names(0x1d), "DEFAULT, SEV, SEV_ES, SNP");
        assert_eq!(vm_type_names(0x21), "DEFAULT, TDX");
        assert_eq!(vm_type_names(0x80), "type 7");
        assert_eq!(vm_type_names(0), "none");
    }

    #[test]
    fn smt_state_is_parsed_from_sysfs_text() {
        assert_eq!(SmtState::parse(Some("1\n")), SmtState::Active);
        assert_eq!(SmtState::parse(Some("0\n")), SmtState::Inactive);
        assert_eq!(SmtState::parse(Some("maybe")), SmtState::Unknown);
        assert_eq!(SmtState::parse(None), SmtState::Unknown);
    }

    #[test]
    fn firmware_status_fields_come_from_their_offsets() {
        let mut raw = [0u8; 32];
        raw[0] = 1; // api_major
        raw[1] = 55; // api_minor
        raw[2] = 1; // state INIT
        raw[3] = 1; // RMP initialized
        raw[4..8].copy_from_slice(&21u32.to_le_bytes());
        raw[8] = 0b101; // mask_chip_id, vlek_en
        raw[12..16].copy_from_slice(&3u32.to_le_bytes());
        raw[16..24].copy_from_slice(&0xdb18_0000_0000_0304u64.to_le_bytes());
        raw[24..32].copy_from_slice(&0x0a00_0000_0000_0203u64.to_le_bytes());
        // SAFETY: SevUserDataSnpStatus is a packed struct of integers, 32 bytes.
        let status: SevUserDataSnpStatus = unsafe { std::mem::transmute(raw) };

        let s = SnpFirmwareStatus::from(status);

        assert_eq!((s.api_major, s.api_minor, s.state, s.build_id, s.guest_count), (1, 55, 1, 21, 3));
        assert!(s.rmp_initialized && s.mask_chip_id && s.vlek_loaded && !s.mask_chip_key);
        assert_eq!((s.current_tcb, s.reported_tcb), (0xdb18_0000_0000_0304, 0x0a00_0000_0000_0203));
    }

    fn host(smt: SmtState, policy_bits: Option<u64>) -> SnpHost {
        SnpHost {
            sev: File::open("/dev/null").unwrap(),
            sev_path: PathBuf::from("/dev/null"),
            vm_types: 1 << 4,
            vmsa_features: 0,
            policy_bits,
            req_certs: false,
            firmware: SnpFirmwareStatus::from(SevUserDataSnpStatus::default()),
            smt,
        }
    }

    #[test]
    fn policy_without_smt_is_refused_when_smt_is_active() {
        let err = host(SmtState::Active, None).check_policy(0x20000).unwrap_err();

        assert!(matches!(err, SnpHostError::SmtNotAllowed { policy: 0x20000 }));
        assert!(err.to_string().contains("SMT is active"));
        assert!(host(SmtState::Active, None).check_policy(0x30000).is_ok());
        assert!(host(SmtState::Inactive, None).check_policy(0x20000).is_ok());
    }

    #[test]
    fn policy_bits_kvm_does_not_accept_are_named() {
        let h = host(SmtState::Inactive, Some(0x1_ffff));

        let err = h.check_policy(0x3_0000).unwrap_err();

        assert!(matches!(err, SnpHostError::PolicyBits { extra: 0x2_0000, .. }), "{err:?}");
        assert!(h.check_policy(0x1_0000).is_ok());
    }
}
