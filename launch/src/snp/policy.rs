//! The SEV-SNP guest policy: the 64-bit value SNP_LAUNCH_START binds to a guest, parsed
//! the way QEMU's `sev-snp-guest,policy=` takes it and checked against the host before
//! the launch (what the firmware would refuse, and what cvmm refuses on its own).
//!
//! Bits (SEV-SNP firmware ABI, AMD 56860, "Guest Policy"; the same masks as Linux
//! `include/linux/psp-sev.h` `SNP_POLICY_MASK_*`):
//!
//! | bits  | name              | meaning when set                                        |
//! |-------|-------------------|---------------------------------------------------------|
//! | 7:0   | ABI_MINOR         | minimum firmware ABI minor version                      |
//! | 15:8  | ABI_MAJOR         | minimum firmware ABI major version                      |
//! | 16    | SMT               | the host may have SMT enabled                           |
//! | 17    | (reserved)        | must be one                                             |
//! | 18    | MIGRATE_MA        | a migration agent may be associated                     |
//! | 19    | DEBUG             | SNP_DBG_DECRYPT/ENCRYPT allowed (the host reads memory) |
//! | 20    | SINGLE_SOCKET     | the guest may only run on one socket                    |
//! | 21    | CXL_ALLOW         | CXL may be populated with devices or memory             |
//! | 22    | MEM_AES_256_XTS   | AES-256-XTS memory encryption required                  |
//! | 23    | RAPL_DIS          | Running Average Power Limit must be disabled            |
//! | 24    | CIPHERTEXT_HIDING | ciphertext hiding must be enabled                       |
//! | 25    | PAGE_SWAP_DISABLE | SNP_PAGE_MOVE/SWAP_OUT/SWAP_IN refused for the guest    |
//! | 63:26 | (reserved)        | must be zero                                            |
//!
//! What SNP_LAUNCH_START checks (AMD's SEV firmware source, `snp_mcmd_launch_start` in
//! `sev_mcmd.c` of AMD-ASPFW, Genoa 1.55.25): bit 17 set, SMT set if the platform has
//! SMT enabled, the ABI version at most the firmware's, no reserved bit set; a failure
//! is POLICY_FAILURE. Bits 21..=25 are accepted by newer firmware only when the platform
//! supports the feature (Linux `sev_get_snp_policy_bits`), and cvmm refuses DEBUG unless
//! the operator asked for it.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use thiserror::Error;

/// Firmware status POLICY_FAILURE (SEV firmware ABI status codes).
const STATUS_POLICY_FAILURE: u32 = 0x07;

/// Where Linux reports the host's SMT state.
pub const HOST_SMT_DIR: &str = "/sys/devices/system/cpu/smt";

/// Errors from parsing or checking a guest policy, each saying what to do about it.
#[derive(Debug, Error)]
pub enum PolicyError {
    /// The value is not a number QEMU's `policy=` would take.
    #[error("invalid SEV-SNP policy '{value}': {reason}")]
    Parse {
        /// What was given.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Bits the firmware ABI reserves (must be zero) are set.
    #[error(
        "SEV-SNP policy {policy:#x} sets bit(s) {bits:#x} (bit {first}), reserved by the SNP firmware ABI \
         (must be zero): clear them (policy {fixed:#x})"
    )]
    UnknownBits {
        /// The policy.
        policy: u64,
        /// The reserved bits that are set.
        bits: u64,
        /// The lowest of them.
        first: u32,
        /// The policy without them.
        fixed: u64,
    },
    /// Bit 17 (reserved, must be one) is clear.
    #[error(
        "SEV-SNP policy {policy:#x} has bit 17 clear: the SNP firmware ABI requires it set (reserved, \
         must be one); use policy {fixed:#x}"
    )]
    ReservedBitClear {
        /// The policy.
        policy: u64,
        /// The policy with bit 17 set.
        fixed: u64,
    },
    /// An optional bit the platform's firmware cannot enforce is set.
    #[error(
        "SEV-SNP policy {policy:#x} sets bit {bit} ({name}), which this platform's SNP firmware does not \
         support: clear it (policy {fixed:#x})"
    )]
    Unsupported {
        /// The policy.
        policy: u64,
        /// The bit.
        bit: u32,
        /// Its name in the firmware ABI.
        name: &'static str,
        /// The policy without it.
        fixed: u64,
    },
    /// SMT is enabled on the host but the policy does not allow it.
    #[error(
        "SEV-SNP policy {policy:#x} has bit 16 (SMT) clear but SMT is enabled on this host, so the \
         firmware would refuse the launch (POLICY_FAILURE): set bit 16 (policy {fixed:#x}) or disable SMT \
         in the host's firmware setup"
    )]
    SmtNotAllowed {
        /// The policy.
        policy: u64,
        /// The policy with bit 16 set.
        fixed: u64,
    },
    /// DEBUG is set but debugging was not asked for.
    #[error(
        "SEV-SNP policy {policy:#x} sets bit 19 (DEBUG), which lets the host decrypt and modify guest \
         memory: clear it (policy {fixed:#x}), or allow debugging explicitly in the configuration"
    )]
    DebugNotAllowed {
        /// The policy.
        policy: u64,
        /// The policy without bit 19.
        fixed: u64,
    },
    /// The policy asks for a newer firmware ABI than the firmware implements.
    #[error(
        "SEV-SNP policy {policy:#x} requires firmware ABI {major}.{minor} (bits 15:8 and 7:0) but the \
         firmware implements {fw_major}.{fw_minor}: lower them (e.g. policy {fixed:#x}) or update the \
         SEV firmware"
    )]
    AbiTooNew {
        /// The policy.
        policy: u64,
        /// ABI_MAJOR of the policy.
        major: u8,
        /// ABI_MINOR of the policy.
        minor: u8,
        /// The firmware's ABI major version.
        fw_major: u8,
        /// The firmware's ABI minor version.
        fw_minor: u8,
        /// The policy with the firmware's version.
        fixed: u64,
    },
    /// The host's SMT state could not be read.
    #[error("cannot read the host's SMT state from {path}: {source}")]
    SmtRead {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The host's SMT state file holds something unexpected.
    #[error("unexpected host SMT state in {path}: '{value}'")]
    SmtValue {
        /// The file.
        path: PathBuf,
        /// Its contents.
        value: String,
    },
}

impl PolicyError {
    /// The firmware status SNP_LAUNCH_START returns for the checks the firmware makes
    /// (POLICY_FAILURE); `None` for cvmm's own checks and read errors.
    pub fn fw_status(&self) -> Option<u32> {
        match self {
            Self::UnknownBits { .. }
            | Self::ReservedBitClear { .. }
            | Self::Unsupported { .. }
            | Self::SmtNotAllowed { .. }
            | Self::AbiTooNew { .. } => Some(STATUS_POLICY_FAILURE),
            Self::Parse { .. } | Self::DebugNotAllowed { .. } | Self::SmtRead { .. } | Self::SmtValue { .. } => None,
        }
    }
}

/// What the host and its firmware allow, for [`SnpPolicy::validate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolicyHost {
    /// Whether the platform has SMT enabled (see [`host_smt_enabled`]).
    pub smt_enabled: bool,
    /// Whether the operator asked for a debuggable guest.
    pub debug_allowed: bool,
    /// The firmware's ABI major version (SNP_PLATFORM_STATUS).
    pub fw_abi_major: u8,
    /// The firmware's ABI minor version.
    pub fw_abi_minor: u8,
    /// The optional policy bits (MIGRATE_MA, SINGLE_SOCKET, CXL_ALLOW ..= PAGE_SWAP_DISABLE)
    /// the platform can enforce; [`SnpPolicy::BASE_OPTIONAL_BITS`] on every SNP firmware.
    pub supported_bits: u64,
}

impl PolicyHost {
    /// A host with the optional bits every SNP firmware accepts
    /// ([`SnpPolicy::BASE_OPTIONAL_BITS`]).
    pub fn new(smt_enabled: bool, debug_allowed: bool, fw_abi_major: u8, fw_abi_minor: u8) -> Self {
        Self { smt_enabled, debug_allowed, fw_abi_major, fw_abi_minor, supported_bits: SnpPolicy::BASE_OPTIONAL_BITS }
    }
}

/// An SEV-SNP guest policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SnpPolicy(u64);

/// Names of the single-bit policy fields, by bit number.
const BIT_NAMES: [(u32, &str); 10] = [
    (16, "SMT"),
    (17, "reserved, must be one"),
    (18, "MIGRATE_MA"),
    (19, "DEBUG"),
    (20, "SINGLE_SOCKET"),
    (21, "CXL_ALLOW"),
    (22, "MEM_AES_256_XTS"),
    (23, "RAPL_DIS"),
    (24, "CIPHERTEXT_HIDING"),
    (25, "PAGE_SWAP_DISABLE"),
];

impl SnpPolicy {
    /// ABI_MINOR, bits 7:0.
    pub const ABI_MINOR_MASK: u64 = 0xff;
    /// ABI_MAJOR, bits 15:8.
    pub const ABI_MAJOR_MASK: u64 = 0xff << 8;
    /// SMT allowed on the host.
    pub const SMT: u64 = 1 << 16;
    /// Reserved, must be one.
    pub const RESERVED_MBO: u64 = 1 << 17;
    /// Association with a migration agent allowed.
    pub const MIGRATE_MA: u64 = 1 << 18;
    /// Debugging allowed.
    pub const DEBUG: u64 = 1 << 19;
    /// Single socket only.
    pub const SINGLE_SOCKET: u64 = 1 << 20;
    /// CXL allowed.
    pub const CXL_ALLOW: u64 = 1 << 21;
    /// AES-256-XTS memory encryption required.
    pub const MEM_AES_256_XTS: u64 = 1 << 22;
    /// RAPL must be disabled.
    pub const RAPL_DIS: u64 = 1 << 23;
    /// Ciphertext hiding must be enabled.
    pub const CIPHERTEXT_HIDING: u64 = 1 << 24;
    /// Page move and swap commands refused for this guest.
    pub const PAGE_SWAP_DISABLE: u64 = 1 << 25;
    /// Every bit the firmware ABI defines (bits 26..=63 are reserved, must be zero).
    pub const KNOWN_BITS: u64 = (1 << 26) - 1;
    /// Optional bits every SNP firmware accepts (Linux `SNP_POLICY_MASK_BASE` less the
    /// ABI version, SMT, reserved and DEBUG bits, which [`SnpPolicy::validate`] checks
    /// on their own).
    pub const BASE_OPTIONAL_BITS: u64 = Self::MIGRATE_MA | Self::SINGLE_SOCKET;
    /// Optional bits only newer firmware with the matching platform feature accepts.
    pub const FEATURE_BITS: u64 =
        Self::CXL_ALLOW | Self::MEM_AES_256_XTS | Self::RAPL_DIS | Self::CIPHERTEXT_HIDING | Self::PAGE_SWAP_DISABLE;
    /// QEMU's default for `sev-snp-guest`: SMT allowed, reserved bit set.
    pub const DEFAULT: SnpPolicy = SnpPolicy(Self::SMT | Self::RESERVED_MBO);

    /// A policy with these bits (not checked: see [`validate`](Self::validate)).
    pub const fn new(bits: u64) -> Self {
        Self(bits)
    }

    /// The raw value, as SNP_LAUNCH_START and the attestation report carry it.
    pub const fn bits(self) -> u64 {
        self.0
    }

    /// Parses a policy as QEMU's `sev-snp-guest,policy=` takes it: a decimal number or
    /// a `0x` hexadecimal one. A decimal number with a leading zero is refused: QEMU
    /// would read it as octal.
    pub fn parse(s: &str) -> Result<Self, PolicyError> {
        let err = |reason| PolicyError::Parse { value: s.to_string(), reason };
        let t = s.trim();
        if t.is_empty() {
            return Err(err("empty"));
        }
        let (digits, radix) = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
            Some(hex) => (hex, 16),
            None => (t, 10),
        };
        if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
            return Err(err(if radix == 16 {
                "expected hexadecimal digits after 0x"
            } else {
                "expected a decimal number or a 0x hexadecimal number"
            }));
        }
        if radix == 10 && digits.len() > 1 && digits.starts_with('0') {
            return Err(err("a leading zero makes QEMU read the number as octal: write it in hexadecimal (0x...)"));
        }
        u64::from_str_radix(digits, radix).map(Self).map_err(|_| err("does not fit in 64 bits"))
    }

    /// ABI_MAJOR: the minimum firmware ABI major version.
    pub const fn abi_major(self) -> u8 {
        ((self.0 >> 8) & 0xff) as u8
    }

    /// ABI_MINOR: the minimum firmware ABI minor version.
    pub const fn abi_minor(self) -> u8 {
        (self.0 & 0xff) as u8
    }

    /// Whether the host may have SMT enabled.
    pub const fn smt_allowed(self) -> bool {
        self.0 & Self::SMT != 0
    }

    /// Whether the guest is debuggable (the host may decrypt and modify its memory).
    pub const fn debug(self) -> bool {
        self.0 & Self::DEBUG != 0
    }

    /// Whether a migration agent may be associated.
    pub const fn migrate_ma(self) -> bool {
        self.0 & Self::MIGRATE_MA != 0
    }

    /// Whether the guest may only run on a single socket.
    pub const fn single_socket(self) -> bool {
        self.0 & Self::SINGLE_SOCKET != 0
    }

    /// Checks the policy against the host: reserved bits zero, bit 17 set, optional
    /// bits the platform supports, SMT allowed if the host has SMT enabled, DEBUG only
    /// when asked for, and a minimum ABI version the firmware meets. Returns the first
    /// problem found.
    pub fn validate(&self, host: &PolicyHost) -> Result<(), PolicyError> {
        let policy = self.0;
        let unknown = policy & !Self::KNOWN_BITS;
        if unknown != 0 {
            return Err(PolicyError::UnknownBits {
                policy,
                bits: unknown,
                first: unknown.trailing_zeros(),
                fixed: policy & Self::KNOWN_BITS,
            });
        }
        if policy & Self::RESERVED_MBO == 0 {
            return Err(PolicyError::ReservedBitClear { policy, fixed: policy | Self::RESERVED_MBO });
        }
        let unsupported = policy & (Self::BASE_OPTIONAL_BITS | Self::FEATURE_BITS) & !host.supported_bits;
        if unsupported != 0 {
            let bit = unsupported.trailing_zeros();
            return Err(PolicyError::Unsupported { policy, bit, name: bit_name(bit), fixed: policy & !unsupported });
        }
        if host.smt_enabled && !self.smt_allowed() {
            return Err(PolicyError::SmtNotAllowed { policy, fixed: policy | Self::SMT });
        }
        if self.debug() && !host.debug_allowed {
            return Err(PolicyError::DebugNotAllowed { policy, fixed: policy & !Self::DEBUG });
        }
        if (self.abi_major(), self.abi_minor()) > (host.fw_abi_major, host.fw_abi_minor) {
            return Err(PolicyError::AbiTooNew {
                policy,
                major: self.abi_major(),
                minor: self.abi_minor(),
                fw_major: host.fw_abi_major,
                fw_minor: host.fw_abi_minor,
                fixed: (policy & !(Self::ABI_MAJOR_MASK | Self::ABI_MINOR_MASK))
                    | (u64::from(host.fw_abi_major) << 8)
                    | u64::from(host.fw_abi_minor),
            });
        }
        Ok(())
    }
}

impl Default for SnpPolicy {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl FromStr for SnpPolicy {
    type Err = PolicyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for SnpPolicy {
    /// `0x30000 (ABI >= 0.0, SMT)`: the value and its set fields (and bit 17 only when
    /// it is clear).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x} (ABI >= {}.{}", self.0, self.abi_major(), self.abi_minor())?;
        for (bit, name) in BIT_NAMES {
            if bit != 17 && self.0 & (1 << bit) != 0 {
                write!(f, ", {name}")?;
            }
        }
        if self.0 & Self::RESERVED_MBO == 0 {
            write!(f, ", bit 17 clear")?;
        }
        let unknown = self.0 & !Self::KNOWN_BITS;
        if unknown != 0 {
            write!(f, ", reserved bits {unknown:#x}")?;
        }
        write!(f, ")")
    }
}

/// The firmware ABI's name for a single-bit policy field.
fn bit_name(bit: u32) -> &'static str {
    BIT_NAMES.iter().find(|(b, _)| *b == bit).map_or("reserved", |(_, name)| name)
}

/// Whether the host's platform has SMT enabled, as the SNP firmware sees it: read from
/// [`HOST_SMT_DIR`] (see [`host_smt_enabled_in`]).
pub fn host_smt_enabled() -> Result<bool, PolicyError> {
    host_smt_enabled_in(Path::new(HOST_SMT_DIR))
}

/// Whether SMT is enabled, from a directory laid out like `/sys/devices/system/cpu/smt`:
/// `active` is 1 when sibling threads are online. The firmware checks the platform's SMT
/// enablement (set in the host's firmware setup), not which threads Linux has online, so
/// a `control` of `off` or `forceoff` (siblings offlined by Linux, e.g. with `nosmt`)
/// also counts as enabled; `notsupported` and `notimplemented` mean no SMT. A missing
/// `control` file leaves `active` alone to decide.
pub fn host_smt_enabled_in(dir: &Path) -> Result<bool, PolicyError> {
    let active_path = dir.join("active");
    let active = std::fs::read_to_string(&active_path)
        .map_err(|source| PolicyError::SmtRead { path: active_path.clone(), source })?;
    let active = match active.trim() {
        "0" => false,
        "1" => true,
        other => return Err(PolicyError::SmtValue { path: active_path, value: other.to_string() }),
    };
    let control_path = dir.join("control");
    let control = match std::fs::read_to_string(&control_path) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(active),
        Err(source) => return Err(PolicyError::SmtRead { path: control_path, source }),
    };
    match control.trim() {
        "on" => Ok(active),
        "off" | "forceoff" => Ok(true),
        "notsupported" | "notimplemented" => Ok(false),
        other => Err(PolicyError::SmtValue { path: control_path, value: other.to_string() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> PolicyHost {
        PolicyHost::new(false, false, 1, 55)
    }

    #[test]
    fn parse_takes_decimal_and_hex() {
        assert_eq!(SnpPolicy::parse("0x30000").unwrap().bits(), 0x30000);
        assert_eq!(SnpPolicy::parse("0X3001f").unwrap().bits(), 0x3001f);
        assert_eq!(SnpPolicy::parse("196608").unwrap().bits(), 0x30000);
        assert_eq!(SnpPolicy::parse("0").unwrap().bits(), 0);
        assert_eq!(" 0x30000 ".parse::<SnpPolicy>().unwrap(), SnpPolicy::DEFAULT);
        assert_eq!(SnpPolicy::parse("0xffffffffffffffff").unwrap().bits(), u64::MAX);
    }

    #[test]
    fn parse_rejects_what_qemu_would_read_otherwise_or_not_at_all() {
        for bad in ["", "0x", "-1", "0x3g000", "30000h", "1e5", "0x1_0000", "0x10000000000000000", "030000"] {
            let e = SnpPolicy::parse(bad).unwrap_err();
            assert!(matches!(e, PolicyError::Parse { .. }), "{bad}: {e}");
        }
        let octal = SnpPolicy::parse("030000").unwrap_err().to_string();
        assert!(octal.contains("octal"), "{octal}");
    }

    #[test]
    fn fields_sit_at_their_abi_bits() {
        let p = SnpPolicy::new(0x00_0b_0a_07);
        assert_eq!(p.abi_major(), 0x0a);
        assert_eq!(p.abi_minor(), 0x07);
        assert!(p.smt_allowed());
        assert!(p.debug());
        assert!(!p.migrate_ma());
        assert!(!p.single_socket());
        assert_eq!(SnpPolicy::default().bits(), 0x30000);
    }

    /// The sev crate's `GuestPolicy` bitfield (an independent definition of the same
    /// layout) reads the same fields from the same values.
    #[test]
    fn fields_agree_with_sev_crate_guest_policy() {
        use sev::firmware::guest::GuestPolicy;
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..200 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let ours = SnpPolicy::new(x & SnpPolicy::KNOWN_BITS);
            let theirs: GuestPolicy = ours.bits().into();
            assert_eq!(u64::from(ours.abi_major()), theirs.abi_major());
            assert_eq!(u64::from(ours.abi_minor()), theirs.abi_minor());
            assert_eq!(ours.smt_allowed(), theirs.smt_allowed());
            assert_eq!(ours.debug(), theirs.debug_allowed());
            assert_eq!(ours.migrate_ma(), theirs.migrate_ma_allowed());
            assert_eq!(ours.single_socket(), theirs.single_socket_required());
            assert_eq!(ours.bits() & SnpPolicy::CXL_ALLOW != 0, theirs.cxl_allowed());
            assert_eq!(ours.bits() & SnpPolicy::MEM_AES_256_XTS != 0, theirs.mem_aes_256_xts());
            assert_eq!(ours.bits() & SnpPolicy::RAPL_DIS != 0, theirs.rapl_dis());
            assert_eq!(ours.bits() & SnpPolicy::CIPHERTEXT_HIDING != 0, theirs.ciphertext_hiding());
            assert_eq!(ours.bits() & SnpPolicy::PAGE_SWAP_DISABLE != 0, theirs.page_swap_disabled());
        }
    }

    #[test]
    fn default_policy_is_valid_on_a_host_without_smt_and_with_smt() {
        SnpPolicy::DEFAULT.validate(&host()).unwrap();
        SnpPolicy::DEFAULT.validate(&PolicyHost { smt_enabled: true, ..host() }).unwrap();
    }

    #[test]
    fn reserved_bit_17_clear_is_rejected() {
        let e = SnpPolicy::new(0x10000).validate(&host()).unwrap_err();
        assert!(matches!(e, PolicyError::ReservedBitClear { fixed: 0x30000, .. }), "{e}");
        assert!(e.to_string().contains("bit 17"), "{e}");
        assert_eq!(e.fw_status(), Some(0x07));
    }

    #[test]
    fn bits_above_25_are_rejected_and_named() {
        let e = SnpPolicy::new(0x30000 | (1 << 40) | (1 << 26)).validate(&host()).unwrap_err();
        match &e {
            PolicyError::UnknownBits { bits, first, fixed, .. } => {
                assert_eq!(*bits, (1 << 40) | (1 << 26));
                assert_eq!(*first, 26);
                assert_eq!(*fixed, 0x30000);
            }
            other => panic!("unexpected {other}"),
        }
        assert!(e.to_string().contains("bit 26"), "{e}");
    }

    #[test]
    fn smt_clear_is_rejected_only_when_the_host_has_smt() {
        let p = SnpPolicy::new(0x20000);
        p.validate(&host()).unwrap();
        let e = p.validate(&PolicyHost { smt_enabled: true, ..host() }).unwrap_err();
        assert!(matches!(e, PolicyError::SmtNotAllowed { fixed: 0x30000, .. }), "{e}");
        assert!(e.to_string().contains("bit 16 (SMT)"), "{e}");
    }

    #[test]
    fn debug_is_rejected_unless_asked_for() {
        let p = SnpPolicy::new(0x30000 | SnpPolicy::DEBUG);
        let e = p.validate(&host()).unwrap_err();
        assert!(matches!(e, PolicyError::DebugNotAllowed { fixed: 0x30000, .. }), "{e}");
        assert!(e.to_string().contains("bit 19 (DEBUG)"), "{e}");
        assert_eq!(e.fw_status(), None, "the firmware itself accepts DEBUG");
        p.validate(&PolicyHost { debug_allowed: true, ..host() }).unwrap();
    }

    #[test]
    fn abi_version_above_the_firmware_is_rejected() {
        // 1.55 firmware: policy asking for 1.55 passes, 1.56 and 2.0 do not.
        SnpPolicy::new(0x30000 | 0x0137).validate(&host()).unwrap();
        let e = SnpPolicy::new(0x30000 | 0x0138).validate(&host()).unwrap_err();
        assert!(
            matches!(
                e,
                PolicyError::AbiTooNew { major: 1, minor: 0x38, fw_major: 1, fw_minor: 55, fixed: 0x30137, .. }
            ),
            "{e}"
        );
        let e = SnpPolicy::new(0x30000 | 0x0200).validate(&host()).unwrap_err();
        assert!(matches!(e, PolicyError::AbiTooNew { major: 2, minor: 0, .. }), "{e}");
        // A lower major with a higher minor is older: 0.99 <= 1.55.
        SnpPolicy::new(0x30000 | 0x0063).validate(&host()).unwrap();
    }

    #[test]
    fn feature_bits_need_platform_support() {
        let p = SnpPolicy::new(0x30000 | SnpPolicy::CIPHERTEXT_HIDING);
        let e = p.validate(&host()).unwrap_err();
        assert!(matches!(e, PolicyError::Unsupported { bit: 24, name: "CIPHERTEXT_HIDING", .. }), "{e}");
        let capable = PolicyHost { supported_bits: SnpPolicy::BASE_OPTIONAL_BITS | SnpPolicy::FEATURE_BITS, ..host() };
        p.validate(&capable).unwrap();
        // The base optional bits need nothing.
        SnpPolicy::new(0x30000 | SnpPolicy::MIGRATE_MA | SnpPolicy::SINGLE_SOCKET).validate(&host()).unwrap();
    }

    #[test]
    fn display_names_the_set_fields() {
        let s = SnpPolicy::new(0x30000 | SnpPolicy::DEBUG | 0x0102).to_string();
        assert_eq!(s, "0xb0102 (ABI >= 1.2, SMT, DEBUG)");
        let s = SnpPolicy::new(0x1_0000_0000_0000 | SnpPolicy::PAGE_SWAP_DISABLE).to_string();
        assert_eq!(s, "0x1000002000000 (ABI >= 0.0, PAGE_SWAP_DISABLE, bit 17 clear, reserved bits 0x1000000000000)");
    }

    fn smt_dir(active: &str, control: Option<&str>) -> std::path::PathBuf {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "cvmm-smt-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("active"), active).unwrap();
        if let Some(c) = control {
            std::fs::write(dir.join("control"), c).unwrap();
        }
        dir
    }

    #[test]
    fn smt_state_is_read_like_the_firmware_sees_it() {
        let cases = [
            ("1\n", Some("on\n"), true),
            ("0\n", Some("on\n"), false),
            ("0\n", Some("off\n"), true),
            ("0\n", Some("forceoff\n"), true),
            ("0\n", Some("notsupported\n"), false),
            ("0\n", Some("notimplemented\n"), false),
            ("1\n", None, true),
            ("0\n", None, false),
        ];
        for (active, control, expected) in cases {
            let dir = smt_dir(active, control);
            assert_eq!(host_smt_enabled_in(&dir).unwrap(), expected, "{active:?} {control:?}");
            std::fs::remove_dir_all(dir).unwrap();
        }
    }

    #[test]
    fn smt_state_garbage_and_missing_files_are_errors() {
        let dir = smt_dir("2\n", Some("on\n"));
        assert!(matches!(host_smt_enabled_in(&dir), Err(PolicyError::SmtValue { .. })));
        std::fs::remove_dir_all(dir).unwrap();
        let dir = smt_dir("1\n", Some("sideways\n"));
        assert!(matches!(host_smt_enabled_in(&dir), Err(PolicyError::SmtValue { .. })));
        std::fs::remove_dir_all(dir).unwrap();
        let missing = std::env::temp_dir().join("cvmm-smt-test-does-not-exist");
        assert!(matches!(host_smt_enabled_in(&missing), Err(PolicyError::SmtRead { .. })));
    }

    #[test]
    fn this_hosts_smt_state_reads_when_linux_reports_it() {
        if !Path::new(HOST_SMT_DIR).join("active").exists() {
            eprintln!("skipped: no {HOST_SMT_DIR}/active");
            return;
        }
        let enabled = host_smt_enabled().unwrap();
        let active = std::fs::read_to_string(Path::new(HOST_SMT_DIR).join("active")).unwrap();
        if active.trim() == "1" {
            assert!(enabled, "active siblings mean SMT is enabled");
        }
    }
}
