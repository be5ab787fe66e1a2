//! SNP-specific vCPU exits other than conversions (those are `super::memory`'s): a guest's
//! termination request (`KVM_SYSTEM_EVENT_SEV_TERM`), and the certificate request of an
//! extended attestation request (`KVM_EXIT_SNP_REQ_CERTS`, Linux 7.0), answered from a
//! certificate blob in the GHCB specification's format.
//!
//! Everything here reads values the guest chose: they are parsed and checked, never
//! trusted.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use kvm_bindings::{kvm_run, KVM_SYSTEM_EVENT_SEV_TERM};
use thiserror::Error;

use super::memory::SnpMemory;
use super::uapi::{ghcb_term, KvmExitSnpReqCerts, KVM_EXIT_SNP_REQ_CERTS};

/// Why a guest asked to be terminated (GHCB specification 2.0, "Termination Request";
/// Linux arch/x86/include/asm/sev-common.h for reason set 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SevTermination {
    /// A termination request through the GHCB MSR protocol, with its reason.
    Request {
        /// Reason code set (0: GHCB-defined, 1: Linux-defined).
        set: u8,
        /// Reason code.
        code: u8,
    },
    /// A termination request through a GHCB page (the reason is in the page's
    /// SW_EXITINFO fields: see [`ghcb_exit_info`]).
    GhcbRequest {
        /// The GHCB's guest-physical address.
        ghcb_gpa: u64,
    },
    /// KVM ended the guest for another GHCB MSR protocol request it could not serve.
    Protocol {
        /// The GHCB MSR value.
        msr: u64,
    },
    /// KVM gave no data.
    Unknown,
}

impl SevTermination {
    /// The termination a `KVM_EXIT_SYSTEM_EVENT` reports, if its type is
    /// `KVM_SYSTEM_EVENT_SEV_TERM`: `data[0]` is the GHCB MSR value at the exit (KVM's
    /// `control->ghcb_gpa`): a termination request when its low 12 bits are 0x100, a GHCB
    /// page address when they are 0, another protocol request otherwise.
    pub fn from_system_event(event_type: u32, data: &[u64]) -> Option<Self> {
        if event_type != KVM_SYSTEM_EVENT_SEV_TERM {
            return None;
        }
        let Some(&msr) = data.first() else {
            return Some(Self::Unknown);
        };
        Some(match msr & ghcb_term::GHCB_MSR_INFO_MASK {
            ghcb_term::GHCB_MSR_TERM_REQ => Self::Request {
                set: ((msr >> ghcb_term::REASON_SET_POS) & 0xf) as u8,
                code: ((msr >> ghcb_term::REASON_POS) & 0xff) as u8,
            },
            0 => Self::GhcbRequest { ghcb_gpa: msr },
            _ => Self::Protocol { msr },
        })
    }
}

/// What a termination reason means, when the GHCB specification or Linux defines it.
pub fn reason_name(set: u8, code: u8) -> Option<&'static str> {
    Some(match (set, code) {
        (0, 0) => "general termination request",
        (0, 1) => "the hypervisor's GHCB protocol version range is not supported",
        (0, 2) => "SEV-SNP features are not supported",
        (1, 0) => "GHCB GPA registration failed",
        (1, 1) => "a page state change failed",
        (1, 2) => "PVALIDATE failed",
        (1, 3) => "the guest is not running at VMPL0",
        (1, 4) => "CPUID validation failed",
        (1, 5) => "CPUID failed in the hypervisor fallback",
        (1, 6) => "the secrets page is unusable",
        (1, 7) => "no SVSM is advertised in the secrets page",
        (1, 8) => "the SVSM is present but gave VMPL 0",
        (1, 9) => "the SVSM calling area is not page aligned",
        _ => return None,
    })
}

impl std::fmt::Display for SevTermination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Self::Request { set, code } => {
                let set_name = match set {
                    0 => " (GHCB)",
                    1 => " (Linux)",
                    _ => "",
                };
                write!(f, "the guest asked to be terminated: reason set {set}{set_name}, code {code}")?;
                if let Some(name) = reason_name(set, code) {
                    write!(f, ": {name}")?;
                }
                Ok(())
            }
            Self::GhcbRequest { ghcb_gpa } => {
                write!(f, "the guest asked to be terminated through its GHCB at {ghcb_gpa:#x}")
            }
            Self::Protocol { msr } => {
                write!(f, "KVM terminated the guest for an unserviceable GHCB MSR protocol request {msr:#x}")
            }
            Self::Unknown => f.write_str("KVM terminated the SEV guest (no reason given)"),
        }
    }
}

/// Offset of SW_EXITCODE in a GHCB page (GHCB specification, "GHCB Layout"); SW_EXITINFO1
/// and SW_EXITINFO2 follow at 0x398 and 0x3a0.
pub const GHCB_SW_EXITCODE: u64 = 0x390;

/// SW_EXITCODE, SW_EXITINFO1 and SW_EXITINFO2 of the GHCB page at `ghcb_gpa`, read from
/// shared memory (for [`SevTermination::GhcbRequest`]: the guest's own account of why it
/// stopped, which it may have written as it liked).
pub fn ghcb_exit_info(mem: &SnpMemory, ghcb_gpa: u64) -> Option<[u64; 3]> {
    let mut raw = [0u8; 24];
    mem.read(ghcb_gpa.checked_add(GHCB_SW_EXITCODE)?, &mut raw).ok()?;
    let word = |i: usize| u64::from_le_bytes(raw[i * 8..i * 8 + 8].try_into().unwrap_or_default());
    Some([word(0), word(1), word(2)])
}

/// The `KVM_EXIT_SNP_REQ_CERTS` fields of `run`, if that is its exit reason.
pub fn req_certs_exit(run: &mut kvm_run) -> Option<&mut KvmExitSnpReqCerts> {
    if run.exit_reason != KVM_EXIT_SNP_REQ_CERTS {
        return None;
    }
    // SAFETY: the exit union is 256 bytes at offset 32, aligned to 8 (kvm-bindings lays it
    // out so: checked in uapi's tests), and KvmExitSnpReqCerts is three u64s at its start,
    // valid for any bits; the reference borrows `run` mutably, so nothing else aliases it.
    Some(unsafe { &mut *(&mut run.__bindgen_anon_1 as *mut _ as *mut KvmExitSnpReqCerts) })
}

/// Errors in a certificate blob.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum CertError {
    /// The blob is empty or too short for its table.
    #[error("certificate blob of {len} bytes ends inside its table (entries of 24 bytes, ended by a zero entry)")]
    Truncated {
        /// Blob length.
        len: usize,
    },
    /// An entry points outside the blob or into the table.
    #[error("certificate table entry {index} ({offset:#x}+{length:#x}) is not inside the blob's data ({table_end:#x}..{len:#x})")]
    Entry {
        /// Entry index.
        index: usize,
        /// Its offset.
        offset: u32,
        /// Its length.
        length: u32,
        /// Where the table ends.
        table_end: usize,
        /// Blob length.
        len: usize,
    },
    /// The blob file cannot be read.
    #[error("cannot read the certificate blob {}: {message}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The error.
        message: String,
    },
}

/// A certificate blob as a guest receives it (GHCB specification 2.0, "SNP Extended Guest
/// Request"): a table of 24-byte entries (GUID, `u32` offset, `u32` length, offsets from
/// the start of the blob) ended by an all-zero entry, then the certificates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertBlob(Vec<u8>);

impl CertBlob {
    /// Checks `bytes` and wraps them.
    pub fn new(bytes: Vec<u8>) -> Result<Self, CertError> {
        let len = bytes.len();
        let mut entries = Vec::new();
        let mut at = 0;
        loop {
            let entry = bytes.get(at..at + 24).ok_or(CertError::Truncated { len })?;
            if entry.iter().all(|&b| b == 0) {
                break;
            }
            let offset = u32::from_le_bytes([entry[16], entry[17], entry[18], entry[19]]);
            let length = u32::from_le_bytes([entry[20], entry[21], entry[22], entry[23]]);
            entries.push((offset, length));
            at += 24;
        }
        let table_end = at + 24;
        for (index, &(offset, length)) in entries.iter().enumerate() {
            let end = u64::from(offset) + u64::from(length);
            if (offset as usize) < table_end || end > len as u64 {
                return Err(CertError::Entry { index, offset, length, table_end, len });
            }
        }
        Ok(Self(bytes))
    }

    /// Reads and checks the blob in `path`.
    pub fn from_file(path: &Path) -> Result<Self, CertError> {
        let bytes =
            std::fs::read(path).map_err(|e| CertError::Read { path: path.to_owned(), message: e.to_string() })?;
        Self::new(bytes)
    }

    /// The blob's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The 4 KiB pages the blob takes.
    pub fn pages(&self) -> u64 {
        (self.0.len() as u64).div_ceil(0x1000)
    }
}

/// Where the certificates come from.
#[derive(Debug, Clone)]
pub enum CertSource {
    /// A blob read once.
    Blob(CertBlob),
    /// A file read at each request under a shared lock, so that a tool updating the
    /// firmware's endorsement key and the file together (under an exclusive lock) is
    /// never half-seen (the scheme of the kernel's KVM_SEV_SNP_ENABLE_REQ_CERTS
    /// documentation).
    File(PathBuf),
}

/// How a certificate request was answered (the value put in `ret`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertReply {
    /// The certificates were written into the guest's buffer (`ret` 0: KVM then asks the
    /// firmware for the report).
    Served {
        /// Bytes written.
        len: usize,
    },
    /// The guest's buffer is too small (`ret` ENOSPC, `npages` set to what is needed).
    TooSmall {
        /// Pages needed.
        pages: u64,
    },
    /// The certificates are being updated (`ret` EAGAIN: the guest retries).
    Busy,
    /// They cannot be served (`ret` EIO).
    Failed,
}

/// A shared lock on the certificate file, held from serving a request until KVM has sent
/// the attestation request to the firmware. See [`CertServer::serve`].
#[derive(Debug)]
pub struct CertLock(#[allow(dead_code)] Option<File>);

/// Answers `KVM_EXIT_SNP_REQ_CERTS` exits.
#[derive(Debug, Clone)]
pub struct CertServer {
    source: CertSource,
}

impl CertServer {
    /// A server for `source`.
    pub fn new(source: CertSource) -> Self {
        Self { source }
    }

    /// Answers one request: fills `exit.ret` (and `exit.npages` for ENOSPC) and writes the
    /// blob at `exit.gpa` through the shared mapping when it fits in `exit.npages` pages.
    ///
    /// With a [`CertSource::File`], the returned lock must be held until KVM has issued
    /// the attestation request: set `kvm_run.immediate_exit` to 1 before the next
    /// `KVM_RUN`, which then completes the request and returns EINTR; drop the lock then
    /// (and clear `immediate_exit`).
    pub fn serve(&self, mem: &SnpMemory, exit: &mut KvmExitSnpReqCerts) -> (CertReply, CertLock) {
        let (blob, lock) = match &self.source {
            CertSource::Blob(blob) => (blob.clone(), CertLock(None)),
            CertSource::File(path) => match read_locked(path) {
                Ok((blob, file)) => (blob, CertLock(Some(file))),
                Err(reply) => return (self.reply(exit, reply), CertLock(None)),
            },
        };
        let capacity = exit.npages.saturating_mul(0x1000);
        if blob.as_bytes().len() as u64 > capacity {
            return (self.reply(exit, CertReply::TooSmall { pages: blob.pages() }), lock);
        }
        match mem.write(exit.gpa, blob.as_bytes()) {
            Ok(()) => (self.reply(exit, CertReply::Served { len: blob.as_bytes().len() }), lock),
            Err(e) => {
                log::warn!("certificate request: cannot write into the guest's buffer: {e}");
                (self.reply(exit, CertReply::Failed), lock)
            }
        }
    }

    fn reply(&self, exit: &mut KvmExitSnpReqCerts, reply: CertReply) -> CertReply {
        exit.ret = match reply {
            CertReply::Served { .. } => 0,
            CertReply::TooSmall { pages } => {
                exit.npages = pages;
                libc::ENOSPC as u64
            }
            CertReply::Busy => libc::EAGAIN as u64,
            CertReply::Failed => libc::EIO as u64,
        };
        reply
    }
}

/// Reads `path` under a shared OFD lock: Busy if someone holds an exclusive lock, Failed
/// if it cannot be read or is malformed.
fn read_locked(path: &Path) -> Result<(CertBlob, File), CertReply> {
    let file = File::open(path).map_err(|e| {
        log::warn!("certificate request: {}: {e}", path.display());
        CertReply::Failed
    })?;
    // SAFETY: an all-zero flock is valid; the fields that matter are set below.
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = libc::F_RDLCK as libc::c_short;
    lock.l_whence = libc::SEEK_SET as libc::c_short;
    // SAFETY: F_OFD_SETLK reads `lock`, which lives for the call.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &lock) } != 0 {
        let err = std::io::Error::last_os_error();
        return Err(match err.raw_os_error() {
            Some(libc::EAGAIN) | Some(libc::EACCES) => CertReply::Busy,
            _ => {
                log::warn!("certificate request: cannot lock {}: {err}", path.display());
                CertReply::Failed
            }
        });
    }
    match CertBlob::from_file(path) {
        Ok(blob) => Ok((blob, file)),
        Err(e) => {
            log::warn!("certificate request: {e}");
            Err(CertReply::Failed)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvm_ioctls::Kvm;
    use vm_memory::{GuestAddress, GuestMemoryMmap};

    #[test]
    fn msr_protocol_termination_reasons_are_decoded() {
        // Linux's sev_es_terminate(SEV_TERM_SET_LINUX, GHCB_TERM_CPUID): set 1 in bits
        // 15:12, code 4 in bits 23:16, request 0x100 in bits 11:0.
        let t = SevTermination::from_system_event(KVM_SYSTEM_EVENT_SEV_TERM, &[0x04_1100]).unwrap();

        assert_eq!(t, SevTermination::Request { set: 1, code: 4 });
        assert_eq!(
            t.to_string(),
            "the guest asked to be terminated: reason set 1 (Linux), code 4: CPUID validation failed"
        );
        let general = SevTermination::from_system_event(KVM_SYSTEM_EVENT_SEV_TERM, &[0x100]).unwrap();
        assert!(general.to_string().ends_with("set 0 (GHCB), code 0: general termination request"));
        let odd = SevTermination::from_system_event(KVM_SYSTEM_EVENT_SEV_TERM, &[0xab_f100]).unwrap();
        assert_eq!(odd, SevTermination::Request { set: 0xf, code: 0xab });
        assert!(odd.to_string().ends_with("reason set 15, code 171"));
    }

    #[test]
    fn ghcb_page_and_other_protocol_terminations_are_told_apart() {
        assert_eq!(
            SevTermination::from_system_event(KVM_SYSTEM_EVENT_SEV_TERM, &[0x7000]),
            Some(SevTermination::GhcbRequest { ghcb_gpa: 0x7000 })
        );
        // A GHCB GPA registration request (0x012) KVM refused.
        assert_eq!(
            SevTermination::from_system_event(KVM_SYSTEM_EVENT_SEV_TERM, &[0x5012]),
            Some(SevTermination::Protocol { msr: 0x5012 })
        );
        assert_eq!(SevTermination::from_system_event(KVM_SYSTEM_EVENT_SEV_TERM, &[]), Some(SevTermination::Unknown));
    }

    #[test]
    fn other_system_events_are_not_sev_terminations() {
        assert_eq!(SevTermination::from_system_event(kvm_bindings::KVM_SYSTEM_EVENT_SHUTDOWN, &[0x100]), None);
    }

    #[test]
    fn req_certs_fields_are_read_and_written_in_kvm_run() {
        let mut run = kvm_run { exit_reason: KVM_EXIT_SNP_REQ_CERTS, ..Default::default() };
        // SAFETY: writing the union's padding bytes, as KVM would.
        unsafe {
            run.__bindgen_anon_1.padding[..8].copy_from_slice(&0x9000u64.to_le_bytes().map(|b| b as _));
            run.__bindgen_anon_1.padding[8..16].copy_from_slice(&4u64.to_le_bytes().map(|b| b as _));
        }

        let exit = req_certs_exit(&mut run).unwrap();
        assert_eq!((exit.gpa, exit.npages, exit.ret), (0x9000, 4, 0));
        exit.ret = 28;

        // SAFETY: reading the union's bytes back.
        let bytes: [std::os::raw::c_char; 8] = unsafe { run.__bindgen_anon_1.padding[16..24].try_into().unwrap() };
        let ret = u64::from_le_bytes(bytes.map(|b| b as u8));
        assert_eq!(ret, 28);
        let mut other = kvm_run { exit_reason: 3, ..Default::default() };
        assert!(req_certs_exit(&mut other).is_none());
    }

    /// A blob with one entry of `data_len` bytes.
    fn blob(data_len: usize) -> Vec<u8> {
        let mut b = vec![0u8; 48 + data_len];
        b[..16].copy_from_slice(&[0x11; 16]);
        b[16..20].copy_from_slice(&48u32.to_le_bytes());
        b[20..24].copy_from_slice(&(data_len as u32).to_le_bytes());
        b[48..].fill(0x5a);
        b
    }

    #[test]
    fn cert_blobs_are_checked() {
        assert!(CertBlob::new(blob(100)).is_ok());
        assert_eq!(CertBlob::new(vec![0; 24]).unwrap().pages(), 1, "an empty table is a valid blob");
        assert_eq!(CertBlob::new(vec![]), Err(CertError::Truncated { len: 0 }));
        assert_eq!(CertBlob::new(vec![1; 30]), Err(CertError::Truncated { len: 30 }));
        let mut past_end = blob(100);
        past_end[20..24].copy_from_slice(&101u32.to_le_bytes());
        assert!(matches!(CertBlob::new(past_end), Err(CertError::Entry { index: 0, .. })));
        let mut into_table = blob(100);
        into_table[16..20].copy_from_slice(&8u32.to_le_bytes());
        assert!(matches!(CertBlob::new(into_table), Err(CertError::Entry { .. })));
    }

    fn memory() -> (kvm_ioctls::VmFd, SnpMemory) {
        let kvm = Kvm::new().unwrap();
        let vm = kvm.create_vm().unwrap();
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        let snp = SnpMemory::register(&vm, &mem, 0).unwrap();
        (vm, snp)
    }

    #[test]
    fn a_blob_that_fits_is_written_into_the_guest_buffer() {
        let (_vm, mem) = memory();
        let server = CertServer::new(CertSource::Blob(CertBlob::new(blob(5000)).unwrap()));
        let mut exit = KvmExitSnpReqCerts { gpa: 0x4000, npages: 2, ret: 0 };

        let (reply, _lock) = server.serve(&mem, &mut exit);

        assert_eq!(reply, CertReply::Served { len: 5048 });
        assert_eq!(exit.ret, 0);
        let mut back = vec![0u8; 5048];
        mem.read(0x4000, &mut back).unwrap();
        assert_eq!(back, blob(5000));
    }

    #[test]
    fn a_small_buffer_gets_enospc_and_the_pages_needed() {
        let (_vm, mem) = memory();
        let server = CertServer::new(CertSource::Blob(CertBlob::new(blob(5000)).unwrap()));
        let mut exit = KvmExitSnpReqCerts { gpa: 0x4000, npages: 1, ret: 0 };

        let (reply, _lock) = server.serve(&mem, &mut exit);

        assert_eq!(reply, CertReply::TooSmall { pages: 2 });
        assert_eq!((exit.ret, exit.npages), (libc::ENOSPC as u64, 2));
        let mut untouched = [0u8; 16];
        mem.read(0x4000, &mut untouched).unwrap();
        assert_eq!(untouched, [0; 16]);
    }

    #[test]
    fn a_buffer_outside_ram_gets_eio() {
        let (_vm, mem) = memory();
        let server = CertServer::new(CertSource::Blob(CertBlob::new(blob(10)).unwrap()));
        let mut exit = KvmExitSnpReqCerts { gpa: 0x20_0000, npages: u64::MAX, ret: 0 };

        let (reply, _lock) = server.serve(&mem, &mut exit);

        assert_eq!((reply, exit.ret), (CertReply::Failed, libc::EIO as u64));
    }

    #[test]
    fn a_file_locked_for_update_gets_eagain_and_a_free_one_is_served() {
        let (_vm, mem) = memory();
        let path = std::env::temp_dir().join(format!("cvmm-certs-{}.bin", std::process::id()));
        std::fs::write(&path, blob(64)).unwrap();
        let server = CertServer::new(CertSource::File(path.clone()));
        // An updater's exclusive OFD lock, on its own open file description.
        let updater = std::fs::OpenOptions::new().read(true).write(true).open(&path).unwrap();
        // SAFETY: all-zero flock, then the fields used.
        let mut wr: libc::flock = unsafe { std::mem::zeroed() };
        wr.l_type = libc::F_WRLCK as libc::c_short;
        // SAFETY: F_OFD_SETLK reads `wr`.
        assert_eq!(unsafe { libc::fcntl(updater.as_raw_fd(), libc::F_OFD_SETLK, &wr) }, 0);
        let mut exit = KvmExitSnpReqCerts { gpa: 0x1000, npages: 1, ret: 0 };

        let (busy, _) = server.serve(&mem, &mut exit);
        drop(updater);
        let (served, lock) = server.serve(&mem, &mut exit);

        assert_eq!(busy, CertReply::Busy);
        assert_eq!(served, CertReply::Served { len: 112 });
        assert!(lock.0.is_some(), "the shared lock is handed to the caller");
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn a_malformed_file_gets_eio() {
        let (_vm, mem) = memory();
        let path = std::env::temp_dir().join(format!("cvmm-badcerts-{}.bin", std::process::id()));
        std::fs::write(&path, [1u8; 10]).unwrap();
        let mut exit = KvmExitSnpReqCerts { gpa: 0x1000, npages: 1, ret: 0 };

        let (reply, _) = CertServer::new(CertSource::File(path.clone())).serve(&mem, &mut exit);

        assert_eq!((reply, exit.ret), (CertReply::Failed, libc::EIO as u64));
        std::fs::remove_file(&path).unwrap();
    }
}
