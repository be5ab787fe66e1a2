//! The KVM side of `cvmm host-check`: the capabilities every cvmm VM needs, the ones a
//! confidential launch on real hardware needs (VM types, guest_memfd, memory
//! attributes, user-space hypercall exits for MAP_GPA_RANGE, split irqchip, ...) and the
//! ones cvmm's emulated platform needs, read with KVM_CHECK_EXTENSION on /dev/kvm.
#![forbid(unsafe_code)]

use kvm_bindings::{
    KVM_CAP_EXIT_HYPERCALL, KVM_CAP_EXIT_ON_EMULATION_FAILURE, KVM_CAP_GUEST_MEMFD, KVM_CAP_IMMEDIATE_EXIT,
    KVM_CAP_IRQFD, KVM_CAP_IRQ_ROUTING, KVM_CAP_MEMORY_ATTRIBUTES, KVM_CAP_SPLIT_IRQCHIP, KVM_CAP_USER_MEMORY,
    KVM_CAP_USER_MEMORY2, KVM_CAP_VM_TYPES, KVM_CAP_X86_MSR_FILTER, KVM_CAP_X86_USER_SPACE_MSR,
    KVM_MEMORY_ATTRIBUTE_PRIVATE,
};
use kvm_ioctls::Kvm;

use super::{Check, Status};
pub use launch::snp::kvm::probe::{vm_type_names, VM_TYPE_NAMES};
use launch::snp::kvm::uapi::KVM_HC_MAP_GPA_RANGE;

/// The capabilities every cvmm VM needs (what the builder checks before it creates one).
pub const BASE_CAPS: [(u32, &str); 5] = [
    (KVM_CAP_USER_MEMORY, "USER_MEMORY"),
    (KVM_CAP_IRQFD, "IRQFD"),
    (KVM_CAP_IRQ_ROUTING, "IRQ_ROUTING"),
    (KVM_CAP_IMMEDIATE_EXIT, "IMMEDIATE_EXIT"),
    (KVM_CAP_SPLIT_IRQCHIP, "SPLIT_IRQCHIP"),
];

/// What /dev/kvm answers to KVM_CHECK_EXTENSION (the raw values).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KvmCaps {
    /// KVM_GET_API_VERSION.
    pub api_version: i32,
    /// The [`BASE_CAPS`] KVM lacks, by name.
    pub base_missing: Vec<&'static str>,
    /// KVM_CAP_VM_TYPES: bit n set when VM type n can be created.
    pub vm_types: u32,
    /// KVM_CAP_GUEST_MEMFD.
    pub guest_memfd: i32,
    /// KVM_CAP_MEMORY_ATTRIBUTES: the attributes KVM_SET_MEMORY_ATTRIBUTES accepts.
    pub memory_attributes: i32,
    /// KVM_CAP_USER_MEMORY2 (KVM_SET_USER_MEMORY_REGION2, memory slots with a guest_memfd).
    pub user_memory2: i32,
    /// KVM_CAP_EXIT_HYPERCALL: the hypercalls that can exit to user space, as a mask.
    pub exit_hypercall: i32,
    /// KVM_CAP_SPLIT_IRQCHIP.
    pub split_irqchip: i32,
    /// KVM_CAP_X86_USER_SPACE_MSR.
    pub user_space_msr: i32,
    /// KVM_CAP_X86_MSR_FILTER.
    pub msr_filter: i32,
    /// KVM_CAP_EXIT_ON_EMULATION_FAILURE.
    pub exit_on_emulation_failure: i32,
}

impl KvmCaps {
    /// Asks `kvm`.
    pub fn read(kvm: &Kvm) -> Self {
        let cap = |c: u32| kvm.check_extension_raw(u64::from(c));
        Self {
            api_version: kvm.get_api_version(),
            base_missing: BASE_CAPS.iter().filter(|(c, _)| cap(*c) <= 0).map(|(_, name)| *name).collect(),
            vm_types: u32::try_from(cap(KVM_CAP_VM_TYPES)).unwrap_or(0),
            guest_memfd: cap(KVM_CAP_GUEST_MEMFD),
            memory_attributes: cap(KVM_CAP_MEMORY_ATTRIBUTES),
            user_memory2: cap(KVM_CAP_USER_MEMORY2),
            exit_hypercall: cap(KVM_CAP_EXIT_HYPERCALL),
            split_irqchip: cap(KVM_CAP_SPLIT_IRQCHIP),
            user_space_msr: cap(KVM_CAP_X86_USER_SPACE_MSR),
            msr_filter: cap(KVM_CAP_X86_MSR_FILTER),
            exit_on_emulation_failure: cap(KVM_CAP_EXIT_ON_EMULATION_FAILURE),
        }
    }

    /// Whether VM type `vm_type` (KVM_X86_*_VM) can be created.
    pub fn has_vm_type(&self, vm_type: u32) -> bool {
        vm_type < 32 && self.vm_types & (1 << vm_type) != 0
    }
}

/// The rows of the KVM checks a real confidential launch (SNP or TDX) needs, besides the
/// VM type the TEE's own rows check.
pub const CONFIDENTIAL_ROWS: [&str; 5] =
    ["kvm.guest-memfd", "kvm.memory-attributes", "kvm.user-memory2", "kvm.exit-hypercall", "kvm.split-irqchip"];

/// The rows cvmm's emulated SEV-SNP platform needs (`launch::snp::emulated`: GHCB MSR
/// accesses exit to user space through an MSR filter; VMGEXIT reaches cvmm as an
/// emulation failure).
pub const EMULATED_SNP_ROWS: [&str; 5] =
    ["kvm.device", "kvm.base", "kvm.user-space-msr", "kvm.msr-filter", "kvm.exit-on-emulation-failure"];

/// The rows cvmm's emulated TDX platform needs (`launch::tdx::emulated`: TDCALL
/// reaches cvmm as an emulation failure).
pub const EMULATED_TDX_ROWS: [&str; 3] = ["kvm.device", "kvm.base", "kvm.exit-on-emulation-failure"];

/// The KVM rows, from what /dev/kvm answered (or why it could not be opened).
pub fn checks(caps: &Result<KvmCaps, String>) -> Vec<Check> {
    let caps = match caps {
        Ok(c) => c,
        Err(why) => {
            let mut rows = vec![Check::new(Status::Fail, "kvm.device", why.clone())];
            for name in ["kvm.base", "kvm.vm-types"]
                .into_iter()
                .chain(CONFIDENTIAL_ROWS)
                .chain(EMULATED_SNP_ROWS.into_iter().skip(2))
            {
                rows.push(Check::new(Status::Fail, name, "not checked: no KVM".to_owned()));
            }
            return rows;
        }
    };
    let present = |ok: bool, yes: String, no: String| if ok { (Status::Pass, yes) } else { (Status::Fail, no) };
    let mut rows = Vec::new();
    let mut row =
        |name: &'static str, (status, evidence): (Status, String)| rows.push(Check::new(status, name, evidence));

    row("kvm.device", (Status::Pass, format!("KVM API version {}", caps.api_version)));
    row(
        "kvm.base",
        present(
            caps.base_missing.is_empty(),
            "USER_MEMORY, IRQFD, IRQ_ROUTING, IMMEDIATE_EXIT, SPLIT_IRQCHIP".to_owned(),
            format!("KVM lacks KVM_CAP_{}: cvmm cannot run any VM here", caps.base_missing.join(", KVM_CAP_")),
        ),
    );
    row(
        "kvm.vm-types",
        present(
            caps.vm_types != 0,
            format!("KVM_CAP_VM_TYPES = {:#x}: {}", caps.vm_types, vm_type_names(caps.vm_types)),
            "KVM_CAP_VM_TYPES is missing: the kernel predates VM types (Linux < 6.8)".to_owned(),
        ),
    );
    row(
        "kvm.guest-memfd",
        present(
            caps.guest_memfd > 0,
            "KVM_CAP_GUEST_MEMFD: private memory in a guest_memfd".to_owned(),
            "KVM_CAP_GUEST_MEMFD is missing: no private guest memory (Linux >= 6.8 with CONFIG_KVM_PRIVATE_MEM)"
                .to_owned(),
        ),
    );
    let attrs = u32::try_from(caps.memory_attributes).unwrap_or(0);
    row(
        "kvm.memory-attributes",
        present(
            attrs & KVM_MEMORY_ATTRIBUTE_PRIVATE != 0,
            format!("KVM_CAP_MEMORY_ATTRIBUTES = {attrs:#x}: PRIVATE"),
            format!("KVM_CAP_MEMORY_ATTRIBUTES = {attrs:#x}: no PRIVATE attribute (Linux >= 6.8)"),
        ),
    );
    row(
        "kvm.user-memory2",
        present(
            caps.user_memory2 > 0,
            "KVM_CAP_USER_MEMORY2: memory slots with a guest_memfd".to_owned(),
            "KVM_CAP_USER_MEMORY2 is missing (Linux >= 6.8)".to_owned(),
        ),
    );
    let hypercalls = caps.exit_hypercall.max(0) as u64;
    row(
        "kvm.exit-hypercall",
        present(
            hypercalls & (1 << KVM_HC_MAP_GPA_RANGE) != 0,
            format!("KVM_CAP_EXIT_HYPERCALL = {hypercalls:#x}: KVM_HC_MAP_GPA_RANGE exits to user space"),
            format!(
                "KVM_CAP_EXIT_HYPERCALL = {hypercalls:#x}: no KVM_HC_MAP_GPA_RANGE (bit {KVM_HC_MAP_GPA_RANGE}): page \
                 conversions cannot reach cvmm"
            ),
        ),
    );
    row(
        "kvm.split-irqchip",
        present(
            caps.split_irqchip > 0,
            "KVM_CAP_SPLIT_IRQCHIP: IOAPIC in user space".to_owned(),
            "KVM_CAP_SPLIT_IRQCHIP is missing".to_owned(),
        ),
    );
    row(
        "kvm.user-space-msr",
        present(
            caps.user_space_msr > 0,
            format!("KVM_CAP_X86_USER_SPACE_MSR = {:#x}", caps.user_space_msr),
            "KVM_CAP_X86_USER_SPACE_MSR is missing: the emulated platform cannot see GHCB MSR accesses".to_owned(),
        ),
    );
    row(
        "kvm.msr-filter",
        present(
            caps.msr_filter > 0,
            "KVM_CAP_X86_MSR_FILTER".to_owned(),
            "KVM_CAP_X86_MSR_FILTER is missing".to_owned(),
        ),
    );
    row(
        "kvm.exit-on-emulation-failure",
        present(
            caps.exit_on_emulation_failure > 0,
            "KVM_CAP_EXIT_ON_EMULATION_FAILURE".to_owned(),
            "KVM_CAP_EXIT_ON_EMULATION_FAILURE is missing: the emulated platform cannot see VMGEXIT".to_owned(),
        ),
    );
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host_check::fixtures::caps as full_caps;

    fn status_of(rows: &[Check], name: &str) -> Status {
        rows.iter().find(|r| r.name == name).unwrap_or_else(|| panic!("no row {name}")).status
    }

    #[test]
    fn a_kvm_with_every_capability_passes_every_row() {
        let rows = checks(&Ok(full_caps(0x13)));

        assert!(rows.iter().all(|r| r.status == Status::Pass), "{rows:?}");
        let types = rows.iter().find(|r| r.name == "kvm.vm-types").unwrap();
        assert_eq!(types.evidence, "KVM_CAP_VM_TYPES = 0x13: DEFAULT, SW_PROTECTED, SNP");
    }

    #[test]
    fn each_missing_capability_fails_its_own_row() {
        let caps = KvmCaps { exit_hypercall: 0, memory_attributes: 0, base_missing: vec!["IRQFD"], ..full_caps(1) };

        let rows = checks(&Ok(caps));

        assert_eq!(status_of(&rows, "kvm.exit-hypercall"), Status::Fail);
        assert_eq!(status_of(&rows, "kvm.memory-attributes"), Status::Fail);
        assert_eq!(status_of(&rows, "kvm.base"), Status::Fail);
        assert_eq!(status_of(&rows, "kvm.guest-memfd"), Status::Pass);
        assert!(rows.iter().any(|r| r.evidence.contains("KVM_CAP_IRQFD")));
    }

    #[test]
    fn an_exit_hypercall_mask_without_map_gpa_range_fails() {
        let rows = checks(&Ok(KvmCaps { exit_hypercall: 1 << 3, ..full_caps(1) }));

        assert_eq!(status_of(&rows, "kvm.exit-hypercall"), Status::Fail);
    }

    #[test]
    fn without_kvm_every_row_fails_and_the_device_row_says_why() {
        let rows = checks(&Err("cannot open /dev/kvm: No such file or directory".into()));

        assert!(rows.iter().all(|r| r.status == Status::Fail));
        assert_eq!(rows[0].evidence, "cannot open /dev/kvm: No such file or directory");
        for name in CONFIDENTIAL_ROWS.iter().chain(&EMULATED_SNP_ROWS).chain(&EMULATED_TDX_ROWS) {
            assert!(rows.iter().any(|r| r.name == *name), "{name} missing");
        }
    }

    #[test]
    fn this_hosts_kvm_answers_version_12() {
        let kvm = Kvm::new().unwrap();

        let caps = KvmCaps::read(&kvm);

        assert_eq!(caps.api_version, 12);
        assert!(caps.has_vm_type(0), "the default VM type: {:#x}", caps.vm_types);
        assert!(!caps.has_vm_type(40));
    }
}
