//! The emulated PSP: what the SNP firmware does for one guest, in software. It takes
//! the same launch plan as the real launch (SNP_LAUNCH_START, one SNP_LAUNCH_UPDATE
//! per range, SNP_LAUNCH_FINISH), extends the launch digest page by page exactly as
//! the firmware does ([`crate::measure::snp::SnpDigest`], the same code `cvmm measure`
//! uses), fills the secrets page (fresh VMPCKs per launch), checks the CPUID page
//! against the platform's CPUID as the firmware's rules do, checks the ID block and
//! ID auth at LAUNCH_FINISH, and answers the guest's messages (MSG_REPORT_REQ) with
//! attestation reports signed by the emulated VCEK.

use std::sync::Arc;

use thiserror::Error;

use super::certs::EmulatedAmdChain;
use super::cpuid_page::{CpuidPage, CpuidPageError, CpuidPlatform};
use super::guest_msg::{msg_type, GuestMsgError, PspMsgChannel, ReportRequest, ReportResponse};
use super::id_block::{verify_id_block, FinishOptions, IdBlockError, IdDigests};
use super::report::{AttestationReport, CpuidFms, FirmwareVersion, ReportError};
use super::secrets::SecretsPage;
use crate::measure::snp::{LaunchDigest, SnpDigest, VMSA_GPA};
use crate::plan::snp::SnpVcpu;
use crate::plan::{SnpPageType, PAGE_SIZE};

/// The SNP firmware (ABI) version the emulated PSP reports: 1.55.
pub const FIRMWARE_VERSION: FirmwareVersion = FirmwareVersion { major: 1, minor: 55, build: 0 };

/// Firmware status: INVALID_PARAM.
pub const STATUS_INVALID_PARAM: u32 = 0x16;
/// Firmware status: AEAD_OFLOW (a VMPCK's sequence numbers are used up).
pub const STATUS_AEAD_OFLOW: u32 = 0x1d;

const PAGE: usize = PAGE_SIZE as usize;

/// Errors the emulated PSP returns, named after the firmware's status codes.
#[derive(Debug, Error)]
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
    /// The CPUID page breaks the firmware's rules (the launch fails, as on hardware).
    #[error("SNP_LAUNCH_UPDATE of the CPUID page at {gpa:#x}: {source}")]
    Cpuid {
        /// Where.
        gpa: u64,
        /// The entries the firmware rejected, with the values it allows.
        #[source]
        source: CpuidPageError,
    },
    /// The ID block or ID auth does not check out.
    #[error("SNP_LAUNCH_FINISH: {0}")]
    IdBlock(#[source] IdBlockError),
    /// The secrets page could not be made (no randomness).
    #[error("SNP_LAUNCH_START: cannot make the secrets page: {0}")]
    Secrets(String),
}

/// Why a guest request failed: the firmware status the guest sees.
#[derive(Debug, Error)]
pub enum GuestRequestError {
    /// The message did not open (header, sequence number, tag) or was not a request
    /// the PSP serves.
    #[error("SNP guest request refused: {0}")]
    Message(#[from] GuestMsgError),
    /// The report could not be signed.
    #[error("SNP guest request: cannot sign the report: {0}")]
    Report(#[from] ReportError),
    /// A request before LAUNCH_FINISH.
    #[error("SNP guest request before the launch finished")]
    NotRunning,
}

impl GuestRequestError {
    /// The firmware status code the guest gets in SW_EXITINFO2.
    pub fn fw_status(&self) -> u32 {
        match self {
            GuestRequestError::Message(GuestMsgError::SeqnoExhausted(_)) => STATUS_AEAD_OFLOW,
            GuestRequestError::NotRunning => 0x1, // INVALID_PLATFORM_STATE
            _ => STATUS_INVALID_PARAM,
        }
    }
}

/// Where the guest is in its life, as the firmware tracks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GuestState {
    Launching,
    Running,
}

/// What a launch gives the emulated PSP.
#[derive(Debug, Clone)]
pub struct PspLaunch {
    /// Guest policy (SNP_LAUNCH_START).
    pub policy: u64,
    /// ID block, ID auth, author key flag and host data (SNP_LAUNCH_FINISH).
    pub finish: FinishOptions,
    /// The platform's CPUID, for checking the CPUID page.
    pub cpuid: CpuidPlatform,
    /// The key chain that signs reports.
    pub chain: Arc<EmulatedAmdChain>,
}

/// The emulated firmware's state for one guest.
pub struct EmulatedPsp {
    state: GuestState,
    digest: SnpDigest,
    launch: PspLaunch,
    measurement: Option<LaunchDigest>,
    id_digests: Option<IdDigests>,
    secrets: SecretsPage,
    channel: PspMsgChannel,
    report_id: [u8; 32],
}

impl std::fmt::Debug for EmulatedPsp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the VMPCKs.
        f.debug_struct("EmulatedPsp")
            .field("state", &self.state)
            .field("policy", &format_args!("{:#x}", self.launch.policy))
            .field("measurement", &self.measurement.map(hex::encode))
            .finish_non_exhaustive()
    }
}

impl EmulatedPsp {
    /// SNP_LAUNCH_START: a new guest. The VMPCKs and the report ID are fresh for every
    /// launch.
    pub fn launch_start(launch: PspLaunch) -> Result<Self, PspError> {
        let secrets =
            SecretsPage::new_random(CpuidFms::MILAN_B0.cpuid_eax()).map_err(|e| PspError::Secrets(e.to_string()))?;
        let mut report_id = [0u8; 32];
        getrandom::fill(&mut report_id).map_err(|e| PspError::Secrets(e.to_string()))?;
        Ok(Self {
            state: GuestState::Launching,
            digest: SnpDigest::new(),
            launch,
            measurement: None,
            id_digests: None,
            channel: secrets.msg_channel(),
            secrets,
            report_id,
        })
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
            SnpPageType::Secrets => bytes.copy_from_slice(&self.secrets.to_bytes()[..]),
            SnpPageType::Cpuid => {
                let page = CpuidPage::from_bytes(bytes).map_err(|source| PspError::Cpuid { gpa, source })?;
                page.validate(&self.launch.cpuid).map_err(|source| PspError::Cpuid { gpa, source })?;
            }
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
        let measurement = self.digest.current();
        if let Some((block, auth)) = &self.launch.finish.id {
            let digests =
                verify_id_block(block, auth, self.launch.finish.author_key_enabled, &measurement, self.launch.policy)
                    .map_err(PspError::IdBlock)?;
            self.id_digests = Some(digests);
        }
        self.measurement = Some(measurement);
        self.state = GuestState::Running;
        Ok(())
    }

    /// The launch measurement, once the launch is finished.
    pub fn measurement(&self) -> Option<LaunchDigest> {
        self.measurement
    }

    /// The guest policy.
    pub fn policy(&self) -> u64 {
        self.launch.policy
    }

    /// The host data.
    pub fn host_data(&self) -> [u8; 32] {
        self.launch.finish.host_data
    }

    /// The key chain that signs this guest's reports.
    pub fn chain(&self) -> &Arc<EmulatedAmdChain> {
        &self.launch.chain
    }

    /// SNP_GUEST_REQUEST: opens the guest's message (VMPCK, sequence number, tag) and
    /// returns the sealed response page. A request that does not open changes nothing
    /// and is answered with the firmware status of [`GuestRequestError::fw_status`].
    pub fn guest_request(&mut self, page: &[u8]) -> Result<Vec<u8>, GuestRequestError> {
        let Some(measurement) = self.measurement else { return Err(GuestRequestError::NotRunning) };
        let req = self.channel.open_request(page)?;
        if req.header.msg_type != msg_type::REPORT_REQ {
            // The channel accepted it (and used its sequence number) but the emulated
            // PSP serves only reports: answer with the error response of that type.
            return Err(GuestRequestError::Message(GuestMsgError::BadMsgType(req.header.msg_type)));
        }
        let ask = ReportRequest::from_bytes(&req.payload)?;
        // The guest runs at VMPL 0: it may ask for any VMPL's report.
        let status = ask.status(0);
        let response = if status != 0 {
            ReportResponse::error(status)
        } else {
            ReportResponse::success(self.report(&ask.report_data, ask.vmpl, &measurement)?)
        };
        Ok(self.channel.seal_response(&req, &response.to_bytes())?)
    }

    /// A signed attestation report.
    fn report(
        &self,
        report_data: &[u8; 64],
        vmpl: u32,
        measurement: &LaunchDigest,
    ) -> Result<[u8; 0x4a0], ReportError> {
        let chain = &self.launch.chain;
        let tcb = chain.tcb();
        let (block, author_key_en) = match &self.launch.finish.id {
            Some((block, _)) => (Some(block), self.launch.finish.author_key_enabled),
            None => (None, false),
        };
        let digests = self.id_digests.unwrap_or(IdDigests { id_key_digest: [0; 48], author_key_digest: [0; 48] });
        let report = AttestationReport {
            guest_svn: block.map_or(0, |b| b.guest_svn),
            policy: self.launch.policy,
            family_id: block.map_or([0; 16], |b| b.family_id),
            image_id: block.map_or([0; 16], |b| b.image_id),
            vmpl,
            current_tcb: tcb,
            author_key_en,
            report_data: *report_data,
            measurement: *measurement,
            host_data: self.launch.finish.host_data,
            id_key_digest: digests.id_key_digest,
            author_key_digest: digests.author_key_digest,
            report_id: self.report_id,
            reported_tcb: tcb,
            cpuid: Some(CpuidFms::MILAN_B0),
            chip_id: *chain.chip_id(),
            committed_tcb: tcb,
            current_version: FIRMWARE_VERSION,
            committed_version: FIRMWARE_VERSION,
            launch_tcb: tcb,
            ..AttestationReport::default()
        };
        report.sign(chain.vcek_signing_key())
    }
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
            cpuid_page: None,
            entry: 0x20_0040,
            boot_info: 0x5000,
            vcpus: 2,
            sev_features: 1,
        })
        .unwrap();
        let mut psp = EmulatedPsp::launch_start(test_launch()).unwrap();
        for r in &plan.ranges {
            let PageType::Snp(t) = r.page_type else { panic!() };
            let mut bytes: Vec<u8> = (0..r.pages()).flat_map(|i| r.page(i).to_vec()).collect();
            psp.launch_update(r.gpa, t, &mut bytes).unwrap();
        }
        let vcpus: Vec<SnpVcpu> =
            plan.vcpus.iter().map(|v| if let VcpuState::Snp(s) = v { s.clone() } else { panic!() }).collect();
        psp.launch_finish(&vcpus).unwrap();
        assert_eq!(psp.measurement().unwrap(), launch_digest(&plan).unwrap());
        assert!(matches!(psp.launch_finish(&vcpus), Err(PspError::InvalidGuestState("SNP_LAUNCH_FINISH"))));
    }

    fn test_launch() -> PspLaunch {
        PspLaunch {
            policy: 0x30000,
            finish: FinishOptions::default(),
            cpuid: CpuidPlatform::from_entries(&[]),
            chain: Arc::new(crate::snp::certs::tests_chain()),
        }
    }

    #[test]
    fn a_cpuid_page_with_a_bit_the_platform_lacks_fails_the_launch_update() {
        use crate::snp::cpuid_page::{CpuidPage, ZeroLeaves};
        let kvm = kvm_ioctls::Kvm::new().unwrap();
        let supported = kvm.get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES).unwrap();
        let launch = PspLaunch { cpuid: CpuidPlatform::from_kvm_supported(supported.as_slice()), ..test_launch() };
        let mut page = CpuidPage::from_kvm_entries(supported.as_slice(), ZeroLeaves::Drop).unwrap();
        let mut good = page.to_bytes().to_vec();
        let mut psp = EmulatedPsp::launch_start(launch.clone()).unwrap();
        psp.launch_update(0x4000, SnpPageType::Cpuid, &mut good).unwrap();
        // Leaf 7 EBX: a feature bit KVM does not offer here.
        let leaf7 = page.get_mut(7, 0).unwrap();
        let missing = (0..32).map(|b| 1u32 << b).find(|b| leaf7.ebx & b == 0).unwrap();
        leaf7.ebx |= missing;
        let mut bad = page.to_bytes().to_vec();
        let mut psp = EmulatedPsp::launch_start(launch).unwrap();
        let err = psp.launch_update(0x4000, SnpPageType::Cpuid, &mut bad).unwrap_err();
        assert!(matches!(err, PspError::Cpuid { gpa: 0x4000, .. }), "{err}");
        assert!(err.to_string().contains("leaf 0x7"), "{err}");
    }

    #[test]
    fn guest_messages_get_reports_and_replays_are_refused() {
        use crate::snp::guest_msg::{seal, MsgHeader, ReportResponse};
        let mut psp = EmulatedPsp::launch_start(test_launch()).unwrap();
        assert!(matches!(psp.guest_request(&[0u8; 4096]), Err(GuestRequestError::NotRunning)));
        psp.launch_finish(&[SnpVcpu::default()]).unwrap();
        let key = psp.secrets.vmpcks[0];
        let mut ask = [0u8; 0x60];
        ask[..64].copy_from_slice(&[9u8; 64]);
        let header = MsgHeader { seqno: 1, msg_type: msg_type::REPORT_REQ, msg_version: 1, msg_sz: 0, vmpck: 0 };
        let request = seal(&key, header, &ask).unwrap();
        let response = psp.guest_request(&request).unwrap();
        let (rh, payload) = crate::snp::guest_msg::open(&key, &response).unwrap();
        assert_eq!((rh.seqno, rh.msg_type), (2, msg_type::REPORT_REQ + 1));
        let report = ReportResponse::from_bytes(&payload).unwrap();
        let report = AttestationReport::from_bytes(&report.report.unwrap()).unwrap();
        assert_eq!(report.report_data, [9u8; 64]);
        assert_eq!(report.measurement, psp.measurement().unwrap());
        report.verify(psp.chain().vcek_verifying_key()).unwrap();
        // The same message again: refused, INVALID_PARAM, and nothing is answered.
        let replay = psp.guest_request(&request).unwrap_err();
        assert_eq!(replay.fw_status(), STATUS_INVALID_PARAM);
        // A message under another key does not open either.
        let other = seal(&[1u8; 32], MsgHeader { seqno: 3, ..header }, &ask).unwrap();
        assert_eq!(psp.guest_request(&other).unwrap_err().fw_status(), STATUS_INVALID_PARAM);
    }

    #[test]
    fn secrets_pages_get_fresh_vmpcks_and_bad_lengths_fail() {
        let mut a = EmulatedPsp::launch_start(test_launch()).unwrap();
        let b = EmulatedPsp::launch_start(test_launch()).unwrap();
        assert_ne!(a.secrets.vmpcks, b.secrets.vmpcks);
        let mut page = vec![0u8; 0x1000];
        a.launch_update(0x3000, SnpPageType::Secrets, &mut page).unwrap();
        assert_eq!(&page[0x20..0x40], &a.secrets.vmpcks[0]);
        let mut two = vec![0u8; 0x2000];
        assert!(matches!(a.launch_update(0x3000, SnpPageType::Cpuid, &mut two), Err(PspError::SinglePage { .. })));
        assert!(matches!(a.launch_update(0x3000, SnpPageType::Normal, &mut []), Err(PspError::InvalidLength { .. })));
    }
}
