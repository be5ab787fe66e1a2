//! Whether this host can launch TDs through KVM, and what it offers: KVM's TDX VM type,
//! the TDX module's capabilities (`KVM_TDX_CAPABILITIES` on a throw-away TD), and the
//! KVM capabilities a TD launch needs (guest_memfd, private memory attributes, the
//! split irqchip, hypercall exits for MapGPA). Each missing piece is its own error saying
//! what to do; when the VM type itself is missing, the error also says what the host
//! shows (CPU vendor, `tdx_host_platform`, `kvm_intel` and its `tdx` parameter).

use std::path::Path;

use kvm_bindings::{
    KVM_CAP_EXIT_HYPERCALL, KVM_CAP_GUEST_MEMFD, KVM_CAP_MEMORY_ATTRIBUTES, KVM_CAP_SPLIT_IRQCHIP, KVM_CAP_VM_TYPES,
    KVM_CAP_X86_APIC_BUS_CYCLES_NS, KVM_MEMORY_ATTRIBUTE_PRIVATE,
};
use kvm_ioctls::Kvm;
use thiserror::Error;

use super::ioctl::{create_tdx_vm, tdx_capabilities, TdxCapabilities, TdxIoctlError};
use super::uapi::{attributes, KVM_X86_TDX_VM};
use crate::private_memory::KVM_HC_MAP_GPA_RANGE;
use crate::snp::kvm::probe::vm_type_names;

/// Errors from [`probe_host`] and from checking a TD's configuration against the host.
#[derive(Debug, Error)]
pub enum TdxHostError {
    /// KVM does not offer the TDX VM type.
    #[error(
        "KVM does not offer the TDX VM type (KVM_CAP_VM_TYPES = {vm_types:#x}: {}): needs Linux >= 6.16 with \
         kvm_intel.tdx=1 and the TDX module loaded ({detail})",
        vm_type_names(*vm_types)
    )]
    TdxVmTypeMissing {
        /// The VM types KVM offers (bit n set: type n).
        vm_types: u32,
        /// What the host shows, and what that means.
        detail: String,
    },
    /// KVM lists the TDX VM type but cannot create one.
    #[error("KVM lists the TDX VM type but cannot create a TD: {source}")]
    CreateVm {
        /// The ioctl's error.
        #[source]
        source: TdxIoctlError,
    },
    /// `KVM_TDX_CAPABILITIES` failed.
    #[error("cannot read the TDX module's capabilities: {source}")]
    Capabilities {
        /// The ioctl's error.
        #[source]
        source: TdxIoctlError,
    },
    /// A KVM capability a TD launch needs is missing from the TD's VM.
    #[error("KVM lacks {cap} for TDs ({cap} = {value:#x}): {why}")]
    MissingCapability {
        /// The capability.
        cap: &'static str,
        /// What `KVM_CHECK_EXTENSION` said on a TD.
        value: i32,
        /// What it is needed for.
        why: &'static str,
    },
    /// TD attributes the host does not support.
    #[error(
        "the TD attributes {asked:#x} ({}) include {unsupported:#x} ({}), which this host's TDX module and KVM do \
         not support (KVM_TDX_CAPABILITIES supported_attrs = {supported:#x}: {}); change the tdx-guest options \
         'attributes' or 'sept-ve-disable'",
        attributes::names(*asked),
        attributes::names(*unsupported),
        attributes::names(*supported)
    )]
    Attributes {
        /// The attributes asked for.
        asked: u64,
        /// What the host supports.
        supported: u64,
        /// What it does not.
        unsupported: u64,
    },
    /// XFAM bits the host does not support.
    #[error(
        "the XFAM {asked:#x} includes {unsupported:#x}, which this host's TDX module and KVM do not support \
         (KVM_TDX_CAPABILITIES supported_xfam = {supported:#x}): the TD's CPUID must not offer those XSAVE features"
    )]
    Xfam {
        /// The XFAM asked for.
        asked: u64,
        /// What the host supports.
        supported: u64,
        /// What it does not.
        unsupported: u64,
    },
}

/// What a TDX-capable host offers.
#[derive(Debug, Clone, PartialEq)]
pub struct TdxHost {
    /// `KVM_CAP_VM_TYPES`: the VM types KVM offers.
    pub vm_types: u32,
    /// `KVM_TDX_CAPABILITIES`.
    pub capabilities: TdxCapabilities,
    /// Whether KVM has `KVM_CAP_X86_APIC_BUS_CYCLES_NS` (Linux 6.11; QEMU sets TDX's
    /// 25 MHz APIC bus through it).
    pub apic_bus_cycles: bool,
}

impl TdxHost {
    /// Refuses TD attributes outside `supported_attrs`.
    pub fn check_attributes(&self, attrs: u64) -> Result<(), TdxHostError> {
        let supported = self.capabilities.supported_attrs;
        let unsupported = attrs & !supported;
        if unsupported != 0 {
            return Err(TdxHostError::Attributes { asked: attrs, supported, unsupported });
        }
        Ok(())
    }

    /// Refuses an XFAM outside `supported_xfam`.
    pub fn check_xfam(&self, xfam: u64) -> Result<(), TdxHostError> {
        let supported = self.capabilities.supported_xfam;
        let unsupported = xfam & !supported;
        if unsupported != 0 {
            return Err(TdxHostError::Xfam { asked: xfam, supported, unsupported });
        }
        Ok(())
    }
}

/// Probes the host, in this order: `KVM_CAP_VM_TYPES` has `KVM_X86_TDX_VM`; a TD can be
/// created; `KVM_TDX_CAPABILITIES` answers on it; that TD has guest_memfd, the private
/// memory attribute, `KVM_CAP_EXIT_HYPERCALL` for `KVM_HC_MAP_GPA_RANGE` and the split
/// irqchip. The TD is dropped before returning (creating one allocates no TDX key:
/// that happens at `KVM_TDX_INIT_VM`).
pub fn probe_host(kvm: &Kvm) -> Result<TdxHost, TdxHostError> {
    let vm_types = u32::try_from(kvm.check_extension_raw(KVM_CAP_VM_TYPES.into())).unwrap_or(0);
    if vm_types & (1 << KVM_X86_TDX_VM) == 0 {
        return Err(TdxHostError::TdxVmTypeMissing { vm_types, detail: HostDetail::read().explain() });
    }
    let vm = create_tdx_vm(kvm).map_err(|source| TdxHostError::CreateVm { source })?;
    let capabilities = tdx_capabilities(&vm).map_err(|source| TdxHostError::Capabilities { source })?;
    let check = |cap: u32, name: &'static str, needed: i32, why: &'static str| {
        let value = vm.check_extension_raw(cap.into());
        if value & needed != needed || value == 0 {
            return Err(TdxHostError::MissingCapability { cap: name, value, why });
        }
        Ok(())
    };
    check(KVM_CAP_GUEST_MEMFD, "KVM_CAP_GUEST_MEMFD", 1, "a TD's private memory is a guest_memfd")?;
    check(
        KVM_CAP_MEMORY_ATTRIBUTES,
        "KVM_CAP_MEMORY_ATTRIBUTES",
        KVM_MEMORY_ATTRIBUTE_PRIVATE as i32,
        "pages are made private or shared with KVM_MEMORY_ATTRIBUTE_PRIVATE",
    )?;
    check(
        KVM_CAP_EXIT_HYPERCALL,
        "KVM_CAP_EXIT_HYPERCALL",
        1 << KVM_HC_MAP_GPA_RANGE,
        "without KVM_HC_MAP_GPA_RANGE exits a TD's MapGPA fails",
    )?;
    check(KVM_CAP_SPLIT_IRQCHIP, "KVM_CAP_SPLIT_IRQCHIP", 1, "a TD requires the split irqchip")?;
    let apic_bus_cycles = vm.check_extension_raw(KVM_CAP_X86_APIC_BUS_CYCLES_NS.into()) > 0;
    Ok(TdxHost { vm_types, capabilities, apic_bus_cycles })
}

/// What the host shows about TDX, for the error when KVM has no TDX VM type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostDetail {
    /// `vendor_id` of /proc/cpuinfo.
    pub cpu_vendor: Option<String>,
    /// Whether /proc/cpuinfo lists the `tdx_host_platform` flag (the kernel found TDX
    /// private keys set up by the BIOS); `None` if /proc/cpuinfo cannot be read.
    pub tdx_host_platform: Option<bool>,
    /// Whether /sys/module/kvm_intel exists.
    pub kvm_intel_loaded: bool,
    /// /sys/module/kvm_intel/parameters/tdx ("Y" or "N"), if it exists.
    pub kvm_intel_tdx: Option<String>,
}

impl HostDetail {
    /// Reads /proc/cpuinfo and /sys/module/kvm_intel.
    pub fn read() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").ok();
        let module = Path::new("/sys/module/kvm_intel");
        let tdx = std::fs::read_to_string(module.join("parameters/tdx")).ok();
        Self::from_sources(cpuinfo.as_deref(), module.exists(), tdx.as_deref())
    }

    /// The detail from the text of /proc/cpuinfo, whether kvm_intel is loaded, and its
    /// `tdx` parameter.
    pub fn from_sources(cpuinfo: Option<&str>, kvm_intel_loaded: bool, kvm_intel_tdx: Option<&str>) -> Self {
        let field = |name: &str| {
            cpuinfo?.lines().find_map(|line| {
                let (key, value) = line.split_once(':')?;
                (key.trim() == name).then(|| value.trim().to_owned())
            })
        };
        let cpu_vendor = field("vendor_id");
        let tdx_host_platform = cpuinfo
            .map(|_| field("flags").is_some_and(|flags| flags.split_whitespace().any(|f| f == "tdx_host_platform")));
        Self {
            cpu_vendor,
            tdx_host_platform,
            kvm_intel_loaded,
            kvm_intel_tdx: kvm_intel_tdx.map(|t| t.trim().to_owned()),
        }
    }

    /// What the detail means, most basic cause first.
    pub fn explain(&self) -> String {
        let mut why = Vec::new();
        let intel = match self.cpu_vendor.as_deref() {
            Some("GenuineIntel") | None => true,
            Some(other) => {
                why.push(format!("this CPU is {other}: TDX needs an Intel Xeon with TDX"));
                false
            }
        };
        if intel && self.tdx_host_platform == Some(false) {
            why.push(
                "/proc/cpuinfo has no tdx_host_platform flag: TDX is not enabled in the BIOS (TME-MT and TDX with \
                 private key IDs) or the kernel lacks CONFIG_INTEL_TDX_HOST"
                    .to_owned(),
            );
        }
        match (self.kvm_intel_loaded, self.kvm_intel_tdx.as_deref()) {
            (false, _) => why.push("the kvm_intel module is not loaded".to_owned()),
            (true, None) => why.push(
                "kvm_intel has no tdx parameter: the kernel is older than 6.16 or lacks CONFIG_KVM_INTEL_TDX"
                    .to_owned(),
            ),
            (true, Some("Y" | "y" | "1")) => why.push(
                "kvm_intel.tdx is Y but KVM did not enable TDX: the TDX module failed to initialize (see dmesg for \
                 'virt/tdx' and 'tdx:')"
                    .to_owned(),
            ),
            (true, Some(value)) => why.push(format!("kvm_intel.tdx is {value}: load kvm_intel with tdx=1")),
        }
        why.join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvm_bindings::kvm_cpuid_entry2;

    #[test]
    fn probe_on_this_host_names_what_is_missing() {
        let kvm = Kvm::new().unwrap();
        let vm_types = kvm.check_extension_raw(KVM_CAP_VM_TYPES.into()) as u32;

        let result = probe_host(&kvm);

        match result {
            // A TDX host: everything was there.
            Ok(host) => assert!(host.vm_types & (1 << KVM_X86_TDX_VM) != 0),
            Err(err) => {
                let msg = err.to_string();
                if vm_types & (1 << KVM_X86_TDX_VM) == 0 {
                    assert!(matches!(err, TdxHostError::TdxVmTypeMissing { .. }), "{err:?}");
                    assert!(msg.starts_with("KVM does not offer the TDX VM type (KVM_CAP_VM_TYPES = "), "{msg}");
                    assert!(msg.contains(&format!("{vm_types:#x}: DEFAULT")), "{msg}");
                    assert!(
                        msg.contains("needs Linux >= 6.16 with kvm_intel.tdx=1 and the TDX module loaded"),
                        "{msg}"
                    );
                    // This development host: an AMD CPU without kvm_intel (HOST-KVM.md).
                    let detail = HostDetail::read();
                    if detail.cpu_vendor.as_deref() == Some("AuthenticAMD") {
                        assert!(msg.contains("this CPU is AuthenticAMD: TDX needs an Intel Xeon with TDX"), "{msg}");
                    }
                    if !detail.kvm_intel_loaded {
                        assert!(msg.contains("the kvm_intel module is not loaded"), "{msg}");
                    }
                } else {
                    assert!(!matches!(err, TdxHostError::TdxVmTypeMissing { .. }), "{msg}");
                }
            }
        }
    }

    const INTEL_TDX: &str = "processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu vme tdx_host_platform sse\n";
    const INTEL_NO_TDX: &str = "processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu vme sse tdx_guest\n";
    const AMD: &str = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sev_snp\n";

    #[test]
    fn an_amd_host_is_told_it_needs_intel() {
        let d = HostDetail::from_sources(Some(AMD), false, None);

        assert_eq!(d.cpu_vendor.as_deref(), Some("AuthenticAMD"));
        assert_eq!(d.tdx_host_platform, Some(false));
        let why = d.explain();
        assert!(why.starts_with("this CPU is AuthenticAMD: TDX needs an Intel Xeon with TDX; "), "{why}");
        assert!(why.ends_with("the kvm_intel module is not loaded"), "{why}");
        assert!(!why.contains("tdx_host_platform"), "nothing Intel-specific beyond the vendor: {why}");
    }

    #[test]
    fn an_intel_host_without_bios_tdx_is_told_so() {
        let why = HostDetail::from_sources(Some(INTEL_NO_TDX), true, Some("N\n")).explain();

        assert!(why.starts_with("/proc/cpuinfo has no tdx_host_platform flag"), "{why}");
        assert!(why.ends_with("kvm_intel.tdx is N: load kvm_intel with tdx=1"), "{why}");
    }

    #[test]
    fn kvm_intel_parameter_states_are_explained() {
        let old = HostDetail::from_sources(Some(INTEL_TDX), true, None);
        let enabled = HostDetail::from_sources(Some(INTEL_TDX), true, Some("Y\n"));

        assert_eq!(old.tdx_host_platform, Some(true));
        assert_eq!(
            old.explain(),
            "kvm_intel has no tdx parameter: the kernel is older than 6.16 or lacks CONFIG_KVM_INTEL_TDX"
        );
        assert!(
            enabled.explain().starts_with("kvm_intel.tdx is Y but KVM did not enable TDX"),
            "{}",
            enabled.explain()
        );
        let unreadable = HostDetail::from_sources(None, true, Some("N"));
        assert_eq!((unreadable.cpu_vendor, unreadable.tdx_host_platform), (None, None));
    }

    fn host(supported_attrs: u64, supported_xfam: u64) -> TdxHost {
        TdxHost {
            vm_types: 1 << 5,
            capabilities: TdxCapabilities {
                supported_attrs,
                supported_xfam,
                kernel_tdvmcallinfo_1_r11: 0,
                user_tdvmcallinfo_1_r11: 0,
                kernel_tdvmcallinfo_1_r12: 0,
                user_tdvmcallinfo_1_r12: 0,
                cpuid_configs: vec![kvm_cpuid_entry2::default()],
            },
            apic_bus_cycles: true,
        }
    }

    #[test]
    fn attributes_the_host_lacks_are_named() {
        let h = host(attributes::SEPT_VE_DISABLE | attributes::PKS, 0x3);

        let err = h.check_attributes(attributes::SEPT_VE_DISABLE | attributes::DEBUG).unwrap_err();

        assert!(matches!(err, TdxHostError::Attributes { unsupported: 1, .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.starts_with("the TD attributes 0x10000001 (DEBUG, SEPT_VE_DISABLE) include 0x1 (DEBUG)"), "{msg}");
        assert!(msg.contains("supported_attrs = 0x50000000: SEPT_VE_DISABLE, PKS"), "{msg}");
        assert!(msg.contains("'attributes' or 'sept-ve-disable'"), "{msg}");
        assert!(h.check_attributes(attributes::SEPT_VE_DISABLE).is_ok());
    }

    #[test]
    fn xfam_the_host_lacks_is_named() {
        let h = host(0, 0x6_0003);

        let err = h.check_xfam(0x2e7).unwrap_err();

        assert!(matches!(err, TdxHostError::Xfam { unsupported: 0x2e4, .. }), "{err:?}");
        assert!(err.to_string().contains("supported_xfam = 0x60003"), "{err}");
        assert!(h.check_xfam(0x2_0003).is_ok());
    }
}
