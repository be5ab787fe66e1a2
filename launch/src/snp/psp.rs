//! The emulated PSP: what the SNP firmware does for one guest, in software. It takes
//! the same launch plan as the real launch (SNP_LAUNCH_START, one SNP_LAUNCH_UPDATE
//! per range, SNP_LAUNCH_FINISH), extends the launch digest page by page exactly as
//! the firmware does ([`crate::measure::snp::SnpDigest`], the same code `cvmm measure`
//! uses), fills the secrets page, and checks the CPUID page.

use thiserror::Error;

use crate::measure::snp::{LaunchDigest, SnpDigest, VMSA_GPA};
use crate::plan::snp::SnpVcpu;
use crate::plan::{SnpPageType, PAGE_SIZE};

const PAGE: usize = PAGE_SIZE as usize;

/// Errors the emulated PSP returns, named after the firmware's status codes.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PspError {
    /// A plan range or vCPU that is not for SNP.
    #[error("'{0}' is not an SEV-SNP launch input")]
    NotSnp(String),
    /// A command in the wrong guest state (e.g. an update after LAUNCH_FINISH).
    #[error("SNP firmware: {0} in the wrong guest state (INVALID_GUEST_STATE)")]
    InvalidGuestState(&'static str),
    /// A range that is not a whole number of pages.
    #[error("SNP_LAUNCH_UPDATE at {gpa:#x}: length {len:#x} is not a whole number of pages (INVALID_LENGTH)")]
    InvalidLength {
        /// Start.
        gpa: u64,
        /// Length.
        len: usize,
    },
    /// The secrets or CPUID range is not exactly one page.
    #[error("SNP_LAUNCH_UPDATE at {gpa:#x}: a {page_type:?} range must be one page (INVALID_PARAM)")]
    SinglePage {
        /// Start.
        gpa: u64,
        /// Its type.
        page_type: SnpPageType,
    },
    /// The guest has no VMSA (no vCPU).
    #[error("SNP_LAUNCH_FINISH without any vCPU")]
    NoVcpus,
}

/// Where the guest is in its life, as the firmware tracks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GuestState {
    Launching,
    Running,
}

/// The emulated firmware's state for one guest.
pub struct EmulatedPsp {
    state: GuestState,
    digest: SnpDigest,
    policy: u64,
    host_data: [u8; 32],
    measurement: Option<LaunchDigest>,
    /// The VMPCKs it put into the secrets page.
    vmpcks: [[u8; 32]; 4],
}

impl std::fmt::Debug for EmulatedPsp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the VMPCKs.
        f.debug_struct("EmulatedPsp")
            .field("state", &self.state)
            .field("policy", &format_args!("{:#x}", self.policy))
            .field("measurement", &self.measurement.map(hex::encode))
            .finish_non_exhaustive()
    }
}

impl EmulatedPsp {
    /// SNP_LAUNCH_START: a new guest with `policy` and the host data its reports carry.
    /// The VMPCKs are fresh for every launch.
    pub fn launch_start(policy: u64, host_data: [u8; 32]) -> Self {
        let mut vmpcks = [[0u8; 32]; 4];
        for k in &mut vmpcks {
            fill_random(k);
        }
        Self { state: GuestState::Launching, digest: SnpDigest::new(), policy, host_data, measurement: None, vmpcks }
    }

    /// SNP_LAUNCH_UPDATE of `bytes` at `gpa` with `page_type`: extends the digest page by
    /// page; fills a secrets page and checks a CPUID page in place.
    pub fn launch_update(&mut self, gpa: u64, page_type: SnpPageType, bytes: &mut [u8]) -> Result<(), PspError> {
        if self.state != GuestState::Launching {
            return Err(PspError::InvalidGuestState("SNP_LAUNCH_UPDATE"));
        }
        if bytes.is_empty() || !bytes.len().is_multiple_of(PAGE) {
            return Err(PspError::InvalidLength { gpa, len: bytes.len() });
        }
        match page_type {
            SnpPageType::Secrets | SnpPageType::Cpuid if bytes.len() != PAGE => {
                return Err(PspError::SinglePage { gpa, page_type });
            }
            SnpPageType::Secrets => self.fill_secrets(bytes),
            SnpPageType::Zero => bytes.fill(0),
            _ => {}
        }
        for (i, page) in bytes.chunks_exact(PAGE).enumerate() {
            let page: &[u8; PAGE] = page.try_into().map_err(|_| PspError::InvalidLength { gpa, len: page.len() })?;
            self.digest.update_page(gpa + (i * PAGE) as u64, page_type, page);
        }
        Ok(())
    }

    /// SNP_LAUNCH_FINISH: measures the VMSAs in vCPU order and seals the launch.
    pub fn launch_finish(&mut self, vcpus: &[SnpVcpu]) -> Result<(), PspError> {
        if self.state != GuestState::Launching {
            return Err(PspError::InvalidGuestState("SNP_LAUNCH_FINISH"));
        }
        if vcpus.is_empty() {
            return Err(PspError::NoVcpus);
        }
        for v in vcpus {
            self.digest.update_vmsa(v);
        }
        debug_assert_eq!(VMSA_GPA & (PAGE_SIZE - 1), 0);
        self.measurement = Some(self.digest.current());
        self.state = GuestState::Running;
        Ok(())
    }

    /// The launch measurement, once the launch is finished.
    pub fn measurement(&self) -> Option<LaunchDigest> {
        self.measurement
    }

    /// The guest policy.
    pub fn policy(&self) -> u64 {
        self.policy
    }

    /// The host data.
    pub fn host_data(&self) -> [u8; 32] {
        self.host_data
    }

    /// The secrets page: version 3, VMPCK0-3 at 0x20, 0x40, 0x60, 0x80.
    fn fill_secrets(&self, page: &mut [u8]) {
        page.fill(0);
        page[0..4].copy_from_slice(&3u32.to_le_bytes());
        for (i, k) in self.vmpcks.iter().enumerate() {
            page[0x20 + 0x20 * i..0x40 + 0x20 * i].copy_from_slice(k);
        }
    }
}

/// Fills `buf` from the OS's random source.
fn fill_random(buf: &mut [u8]) {
    // getrandom fails only without any OS entropy source, where nothing is safe.
    getrandom::fill(buf).expect("the OS random source is available");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measure::snp::launch_digest;
    use crate::plan::snp_direct::{plan_snp_direct, PlanImage, SnpDirectOptions};
    use crate::plan::{PageType, VcpuState};

    #[test]
    fn the_psp_digest_equals_the_calculator_for_the_same_plan() {
        let plan = plan_snp_direct(&SnpDirectOptions {
            images: vec![PlanImage { gpa: 0x20_0000, bytes: vec![0xc3u8; 0x3000].into(), what: "program".into() }],
            zero: vec![(0x9000, 0x6000, "page tables".into())],
            secrets_gpa: 0x3000,
            cpuid_gpa: 0x4000,
            cpuid_page: Some(vec![1u8; 0x1000].into()),
            entry: 0x20_0040,
            boot_info: 0x5000,
            vcpus: 2,
            sev_features: 1,
        })
        .unwrap();
        let mut psp = EmulatedPsp::launch_start(0x30000, [0; 32]);
        for r in &plan.ranges {
            let PageType::Snp(t) = r.page_type else { panic!() };
            let mut bytes: Vec<u8> = (0..r.pages()).flat_map(|i| r.page(i).to_vec()).collect();
            psp.launch_update(r.gpa, t, &mut bytes).unwrap();
        }
        let vcpus: Vec<SnpVcpu> =
            plan.vcpus.iter().map(|v| if let VcpuState::Snp(s) = v { s.clone() } else { panic!() }).collect();
        psp.launch_finish(&vcpus).unwrap();
        assert_eq!(psp.measurement().unwrap(), launch_digest(&plan).unwrap());
        assert_eq!(psp.launch_finish(&vcpus), Err(PspError::InvalidGuestState("SNP_LAUNCH_FINISH")));
    }

    #[test]
    fn secrets_pages_get_fresh_vmpcks_and_bad_lengths_fail() {
        let mut a = EmulatedPsp::launch_start(0x30000, [0; 32]);
        let b = EmulatedPsp::launch_start(0x30000, [0; 32]);
        assert_ne!(a.vmpcks, b.vmpcks);
        let mut page = vec![0u8; 0x1000];
        a.launch_update(0x3000, SnpPageType::Secrets, &mut page).unwrap();
        assert_eq!(&page[0x20..0x40], &a.vmpcks[0]);
        let mut two = vec![0u8; 0x2000];
        assert!(matches!(a.launch_update(0x3000, SnpPageType::Cpuid, &mut two), Err(PspError::SinglePage { .. })));
        assert!(matches!(a.launch_update(0x3000, SnpPageType::Normal, &mut []), Err(PspError::InvalidLength { .. })));
    }
}
