//! `TDG.VP.VMCALL<GetQuote>`: the TD puts a TD report in a shared buffer, the VMM forwards
//! it to a quote generation service (Intel's QGS, at a Unix socket or vsock address:
//! the `quote-generation-socket` option) and writes the quote back, asynchronously, then
//! notifies the TD through the vector it registered with SetupEventNotifyInterrupt.
//!
//! # The shared buffer (GHCI specification, "`TDG.VP.VMCALL<GetQuote>`"; QEMU's
//! `struct tdx_get_quote_header`)
//!
//! A 24-byte header, little-endian: `u64 structure_version` (1), `u64 error_code`
//! (0 success, `u64::MAX` in flight, `0x8000000000000000` error, `0x8000000000000001`
//! QGS unavailable), `u32 in_len` (the TD report's length, the message that follows),
//! `u32 out_len` (the quote's length, written by the VMM); then the message: the TD
//! report in, the quote out. The VMM writes the quote first and the header last, so a
//! TD polling `error_code` never sees a half-written quote.
//!
//! # The QGS protocol (QGS message library 1.1, as QEMU's tdx-quote-generator.c speaks it)
//!
//! Every message is preceded by its length as a 4-byte big-endian number. A message
//! starts with a 16-byte header, little-endian: `u16 major_version` (1), `u16
//! minor_version` (1), `u32 type` (0 GET_QUOTE_REQ, 1 GET_QUOTE_RESP), `u32 size` (the
//! whole message, header included), `u32 error_code` (responses). A request then has
//! `u32 report_size`, `u32 id_list_size` (0) and the report; a response `u32
//! selected_id_size` (0), `u32 quote_size` and the quote. A response that does not
//! fit the TD's buffer, has another version or type, a non-zero error code, a selected
//! ID, or a quote size that does not match its length is an error for the TD.
//!
//! Everything the TD wrote is untrusted: the header and lengths are checked before
//! anything is sent, and the quote service's answer is checked before it is written
//! back.

use std::io::{Read, Write};
use std::mem::{offset_of, size_of};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use thiserror::Error;

use super::options::QgsAddress;
use super::uapi::tdvmcall_status;
use crate::private_memory::{PrivateMemory, PAGE_SIZE};

/// `TDX_GET_QUOTE_STRUCTURE_VERSION`.
pub const GET_QUOTE_STRUCTURE_VERSION: u64 = 1;
/// `TDX_VP_GET_QUOTE_SUCCESS`.
pub const GET_QUOTE_SUCCESS: u64 = 0;
/// `TDX_VP_GET_QUOTE_IN_FLIGHT`.
pub const GET_QUOTE_IN_FLIGHT: u64 = u64::MAX;
/// `TDX_VP_GET_QUOTE_ERROR`.
pub const GET_QUOTE_ERROR: u64 = 0x8000_0000_0000_0000;
/// `TDX_VP_GET_QUOTE_QGS_UNAVAILABLE`.
pub const GET_QUOTE_QGS_UNAVAILABLE: u64 = 0x8000_0000_0000_0001;
/// The largest GetQuote buffer accepted (QEMU's `TDX_GET_QUOTE_MAX_BUF_LEN`).
pub const GET_QUOTE_MAX_BUF_LEN: u64 = 128 * 1024;
/// The most GetQuote requests in flight at once (QEMU's `TDX_MAX_GET_QUOTE_REQUEST`);
/// beyond it the TD is told to retry.
pub const MAX_IN_FLIGHT: usize = 16;
/// How long a request to the quote service may take (QEMU's `TRANSACTION_TIMEOUT`).
pub const QGS_TIMEOUT: Duration = Duration::from_secs(30);

/// `QGS_MSG_LIB_MAJOR_VER`, `QGS_MSG_LIB_MINOR_VER`.
pub const QGS_MSG_VERSION: (u16, u16) = (1, 1);
/// `GET_QUOTE_REQ`.
pub const QGS_GET_QUOTE_REQ: u32 = 0;
/// `GET_QUOTE_RESP`.
pub const QGS_GET_QUOTE_RESP: u32 = 1;

/// The header of the GetQuote shared buffer:
///
/// ```c
/// struct tdx_get_quote_header {
///     uint64_t structure_version;
///     uint64_t error_code;
///     uint32_t in_len;
///     uint32_t out_len;
/// };
/// ```
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct GetQuoteHeader {
    /// Must be [`GET_QUOTE_STRUCTURE_VERSION`].
    pub structure_version: u64,
    /// The request's status.
    pub error_code: u64,
    /// Length of the TD report that follows.
    pub in_len: u32,
    /// Length of the quote that follows, once done.
    pub out_len: u32,
}

impl GetQuoteHeader {
    /// Size of the header.
    pub const SIZE: usize = size_of::<Self>();

    /// Reads it from its 24 bytes.
    pub fn from_bytes(b: &[u8; Self::SIZE]) -> Self {
        let u64_at = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap_or_default());
        let u32_at = |at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap_or_default());
        Self {
            structure_version: u64_at(offset_of!(Self, structure_version)),
            error_code: u64_at(offset_of!(Self, error_code)),
            in_len: u32_at(offset_of!(Self, in_len)),
            out_len: u32_at(offset_of!(Self, out_len)),
        }
    }

    /// Its 24 bytes.
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        let mut b = [0u8; Self::SIZE];
        b[offset_of!(Self, structure_version)..][..8].copy_from_slice(&self.structure_version.to_le_bytes());
        b[offset_of!(Self, error_code)..][..8].copy_from_slice(&self.error_code.to_le_bytes());
        b[offset_of!(Self, in_len)..][..4].copy_from_slice(&self.in_len.to_le_bytes());
        b[offset_of!(Self, out_len)..][..4].copy_from_slice(&self.out_len.to_le_bytes());
        b
    }
}

/// `qgs_msg_header_t`:
///
/// ```c
/// typedef struct _qgs_msg_header_t {
///     uint16_t major_version;
///     uint16_t minor_version;
///     uint32_t type;
///     uint32_t size;       // size of the whole message, include this header, in byte
///     uint32_t error_code; // used in response only
/// } qgs_msg_header_t;
/// ```
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct QgsMsgHeader {
    /// 1.
    pub major_version: u16,
    /// 1.
    pub minor_version: u16,
    /// GET_QUOTE_REQ or GET_QUOTE_RESP.
    pub msg_type: u32,
    /// The whole message's size.
    pub size: u32,
    /// 0 in requests; the QGS's status in responses.
    pub error_code: u32,
}

/// The fixed part of `qgs_msg_get_quote_req_t` (the report follows):
///
/// ```c
/// typedef struct _qgs_msg_get_quote_req_t {
///     qgs_msg_header_t header;    // header.type = GET_QUOTE_REQ
///     uint32_t report_size;       // cannot be 0
///     uint32_t id_list_size;      // length of id_list, in byte, can be 0
/// } qgs_msg_get_quote_req_t;
/// ```
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct QgsGetQuoteReq {
    /// The header.
    pub header: QgsMsgHeader,
    /// The report's length.
    pub report_size: u32,
    /// 0: no ID list.
    pub id_list_size: u32,
}

/// The fixed part of `qgs_msg_get_quote_resp_t` (the selected ID and the quote follow):
///
/// ```c
/// typedef struct _qgs_msg_get_quote_resp_s {
///     qgs_msg_header_t header;    // header.type = GET_QUOTE_RESP
///     uint32_t selected_id_size;  // can be 0 in case only one id is sent in request
///     uint32_t quote_size;        // length of quote_data, in byte
///     uint8_t id_quote[];         // selected id followed by quote
/// } qgs_msg_get_quote_resp_t;
/// ```
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct QgsGetQuoteResp {
    /// The header.
    pub header: QgsMsgHeader,
    /// Must be 0 (no ID list was sent).
    pub selected_id_size: u32,
    /// The quote's length.
    pub quote_size: u32,
}

/// The framed GET_QUOTE_REQ for `report`: the 4-byte big-endian length, then the message.
pub fn encode_get_quote_request(report: &[u8]) -> Vec<u8> {
    let size = (size_of::<QgsGetQuoteReq>() + report.len()) as u32;
    let mut b = Vec::with_capacity(4 + size as usize);
    b.extend_from_slice(&size.to_be_bytes());
    b.extend_from_slice(&QGS_MSG_VERSION.0.to_le_bytes());
    b.extend_from_slice(&QGS_MSG_VERSION.1.to_le_bytes());
    b.extend_from_slice(&QGS_GET_QUOTE_REQ.to_le_bytes());
    b.extend_from_slice(&size.to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes());
    b.extend_from_slice(&(report.len() as u32).to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes());
    b.extend_from_slice(report);
    b
}

/// Errors talking to the quote generation service.
#[derive(Debug, Error)]
pub enum QgsError {
    /// It cannot be reached.
    #[error("cannot connect to the quote generation service at {addr}: {source}")]
    Connect {
        /// Its address.
        addr: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Sending or receiving failed (or timed out).
    #[error("talking to the quote generation service failed: {0}")]
    Io(#[source] std::io::Error),
    /// Its answer is not a valid GET_QUOTE_RESP for this request.
    #[error("the quote generation service's answer is invalid: {0}")]
    Response(String),
}

/// The quote in a GET_QUOTE_RESP message (without its length prefix), if the message is
/// valid (see the module documentation).
pub fn decode_get_quote_response(msg: &[u8]) -> Result<Vec<u8>, QgsError> {
    let bad = |m: String| Err(QgsError::Response(m));
    let fixed = size_of::<QgsGetQuoteResp>();
    if msg.len() < fixed {
        return bad(format!("{} bytes, shorter than the {fixed}-byte GET_QUOTE_RESP", msg.len()));
    }
    let u16_at = |at: usize| u16::from_le_bytes([msg[at], msg[at + 1]]);
    let u32_at = |at: usize| u32::from_le_bytes([msg[at], msg[at + 1], msg[at + 2], msg[at + 3]]);
    let h = offset_of!(QgsGetQuoteResp, header);
    let version =
        (u16_at(h + offset_of!(QgsMsgHeader, major_version)), u16_at(h + offset_of!(QgsMsgHeader, minor_version)));
    let msg_type = u32_at(h + offset_of!(QgsMsgHeader, msg_type));
    let size = u32_at(h + offset_of!(QgsMsgHeader, size));
    let error_code = u32_at(h + offset_of!(QgsMsgHeader, error_code));
    let selected_id_size = u32_at(offset_of!(QgsGetQuoteResp, selected_id_size));
    let quote_size = u32_at(offset_of!(QgsGetQuoteResp, quote_size));
    if version != QGS_MSG_VERSION {
        return bad(format!("message version {}.{}, expected 1.1", version.0, version.1));
    }
    if msg_type != QGS_GET_QUOTE_RESP {
        return bad(format!("message type {msg_type}, expected GET_QUOTE_RESP (1)"));
    }
    if size as usize > msg.len() {
        return bad(format!("message size {size} exceeds the {} bytes received", msg.len()));
    }
    if error_code != 0 {
        return bad(format!("error code {error_code:#x}"));
    }
    if selected_id_size != 0 {
        return bad(format!("selected ID of {selected_id_size} bytes, none was asked for"));
    }
    if quote_size as usize != msg.len() - fixed {
        return bad(format!("quote size {quote_size}, but {} bytes follow the header", msg.len() - fixed));
    }
    Ok(msg[fixed..].to_vec())
}

/// A connected stream to the quote service.
enum Conn {
    Unix(UnixStream),
    Vsock(OwnedFd),
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Self::Unix(s) => s.read(buf),
            Self::Vsock(fd) => {
                // SAFETY: read(2) into `buf`, which is valid for `buf.len()` bytes.
                let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
                if n < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(n as usize)
            }
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Self::Unix(s) => s.write(buf),
            Self::Vsock(fd) => {
                // SAFETY: write(2) from `buf`, valid for `buf.len()` bytes.
                let n = unsafe { libc::write(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len()) };
                if n < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(n as usize)
            }
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Sets SO_RCVTIMEO and SO_SNDTIMEO of a socket.
fn set_timeouts(fd: &OwnedFd, timeout: Duration) -> std::io::Result<()> {
    let tv = libc::timeval {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_usec: libc::suseconds_t::from(timeout.subsec_micros() as i32),
    };
    for opt in [libc::SO_RCVTIMEO, libc::SO_SNDTIMEO] {
        // SAFETY: setsockopt reads a timeval from `tv`, which lives for the call.
        let ret = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&tv as *const libc::timeval).cast(),
                size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if ret != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

fn connect_vsock(cid: u32, port: u32, timeout: Duration) -> std::io::Result<OwnedFd> {
    // SAFETY: socket(2) with constant arguments; the fd it returns is owned below.
    let raw = unsafe { libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a new fd nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    set_timeouts(&fd, timeout)?;
    // SAFETY: all-zero is a valid sockaddr_vm; the fields that matter are set next.
    let mut addr: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
    addr.svm_family = libc::AF_VSOCK as libc::sa_family_t;
    addr.svm_cid = cid;
    addr.svm_port = port;
    // SAFETY: connect(2) reads `addr`, a sockaddr_vm of the size given.
    let ret = unsafe {
        libc::connect(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_vm).cast(),
            size_of::<libc::sockaddr_vm>() as libc::socklen_t,
        )
    };
    if ret != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(fd)
}

fn connect(addr: &QgsAddress, timeout: Duration) -> Result<Conn, QgsError> {
    let err = |source| QgsError::Connect { addr: addr.to_string(), source };
    let conn = match addr {
        QgsAddress::Unix(path) => Conn::Unix(UnixStream::connect(path).map_err(err)?),
        QgsAddress::UnixAbstract(name) => {
            use std::os::linux::net::SocketAddrExt;
            let sa = std::os::unix::net::SocketAddr::from_abstract_name(name).map_err(err)?;
            Conn::Unix(UnixStream::connect_addr(&sa).map_err(err)?)
        }
        QgsAddress::Vsock { cid, port } => Conn::Vsock(connect_vsock(*cid, *port, timeout).map_err(err)?),
    };
    if let Conn::Unix(s) = &conn {
        s.set_read_timeout(Some(timeout)).map_err(QgsError::Io)?;
        s.set_write_timeout(Some(timeout)).map_err(QgsError::Io)?;
    }
    Ok(conn)
}

/// Asks the quote service at `addr` for the quote of `report`, blocking (at most
/// `timeout` per read or write); the response message may be at most `capacity` bytes
/// long with its length prefix (the TD's buffer without its header, as QEMU counts).
pub fn get_quote(addr: &QgsAddress, report: &[u8], capacity: usize, timeout: Duration) -> Result<Vec<u8>, QgsError> {
    let mut conn = connect(addr, timeout)?;
    conn.write_all(&encode_get_quote_request(report)).map_err(QgsError::Io)?;
    let mut prefix = [0u8; 4];
    conn.read_exact(&mut prefix).map_err(QgsError::Io)?;
    let len = u32::from_be_bytes(prefix) as usize;
    if len == 0 || len > capacity.saturating_sub(4) {
        return Err(QgsError::Response(format!(
            "message length {len} must be non-zero and at most {} (the TD's buffer)",
            capacity.saturating_sub(4)
        )));
    }
    let mut msg = vec![0u8; len];
    conn.read_exact(&mut msg).map_err(QgsError::Io)?;
    decode_get_quote_response(&msg)
}

/// Why guest memory could not be read or written.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("cannot access {len:#x} bytes of shared guest memory at {gpa:#x}")]
pub struct GuestAccessError {
    /// Start.
    pub gpa: u64,
    /// Length.
    pub len: usize,
}

/// The guest's shared memory, as the GetQuote handling sees it.
pub trait SharedGuestMemory: Send + Sync {
    /// Whether all of `[gpa, gpa + len)` is shared RAM now.
    fn is_shared(&self, gpa: u64, len: u64) -> bool;
    /// Reads shared memory.
    fn read_shared(&self, gpa: u64, buf: &mut [u8]) -> Result<(), GuestAccessError>;
    /// Writes shared memory.
    fn write_shared(&self, gpa: u64, bytes: &[u8]) -> Result<(), GuestAccessError>;
}

impl SharedGuestMemory for PrivateMemory {
    fn is_shared(&self, gpa: u64, len: u64) -> bool {
        PrivateMemory::is_shared(self, gpa, len)
    }

    fn read_shared(&self, gpa: u64, buf: &mut [u8]) -> Result<(), GuestAccessError> {
        self.read(gpa, buf).map_err(|_| GuestAccessError { gpa, len: buf.len() })
    }

    fn write_shared(&self, gpa: u64, bytes: &[u8]) -> Result<(), GuestAccessError> {
        self.write(gpa, bytes).map_err(|_| GuestAccessError { gpa, len: bytes.len() })
    }
}

/// A GetQuote request, checked: the buffer and what the TD put in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuoteRequest {
    /// The buffer's GPA (without the shared bit).
    pub gpa: u64,
    /// Its size.
    pub size: u64,
    /// Its header as the TD wrote it.
    pub header: GetQuoteHeader,
    /// The TD report (`in_len` bytes after the header).
    pub report: Vec<u8>,
}

impl QuoteRequest {
    /// Checks GetQuote's register arguments and the buffer they point to, as QEMU and the
    /// GHCI do, and reads the report: `size` non-zero (INVALID_OPERAND), `gpa` and `size`
    /// 4 KiB aligned (ALIGN_ERROR), `size` at most [`GET_QUOTE_MAX_BUF_LEN`], `gpa` below
    /// `shared_bit` (KVM clears the shared bit before the exit: a GPA that still has it,
    /// or a higher bit, is not a TD address), the whole buffer in shared RAM, a header of
    /// version 1 whose `in_len` fits the buffer (all INVALID_OPERAND).
    pub fn parse(
        gpa: u64,
        size: u64,
        shared_bit: u64,
        mem: &dyn SharedGuestMemory,
    ) -> Result<Self, (u64, &'static str)> {
        use tdvmcall_status::{ALIGN_ERROR, INVALID_OPERAND};
        if size == 0 {
            return Err((INVALID_OPERAND, "the buffer is empty"));
        }
        if !gpa.is_multiple_of(PAGE_SIZE) || !size.is_multiple_of(PAGE_SIZE) {
            return Err((ALIGN_ERROR, "the buffer is not 4 KiB aligned"));
        }
        if size > GET_QUOTE_MAX_BUF_LEN {
            return Err((INVALID_OPERAND, "the buffer is larger than 128 KiB"));
        }
        if gpa.checked_add(size).is_none_or(|end| end > shared_bit) {
            return Err((INVALID_OPERAND, "the buffer is not below the shared bit"));
        }
        if !mem.is_shared(gpa, size) {
            return Err((INVALID_OPERAND, "the buffer is not in shared memory"));
        }
        let mut raw = [0u8; GetQuoteHeader::SIZE];
        mem.read_shared(gpa, &mut raw).map_err(|_| (INVALID_OPERAND, "the buffer cannot be read"))?;
        let header = GetQuoteHeader::from_bytes(&raw);
        if header.structure_version != GET_QUOTE_STRUCTURE_VERSION {
            return Err((INVALID_OPERAND, "the buffer's structure version is not 1"));
        }
        if u64::from(header.in_len) > size - GetQuoteHeader::SIZE as u64 {
            return Err((INVALID_OPERAND, "in_len runs past the buffer"));
        }
        let mut report = vec![0u8; header.in_len as usize];
        mem.read_shared(gpa + GetQuoteHeader::SIZE as u64, &mut report)
            .map_err(|_| (INVALID_OPERAND, "the buffer cannot be read"))?;
        Ok(Self { gpa, size, header, report })
    }

    /// The room for the quote service's framed answer: the buffer without its header.
    pub fn payload_capacity(&self) -> usize {
        (self.size as usize).saturating_sub(GetQuoteHeader::SIZE)
    }
}

/// How a GetQuote finished, as written into the TD's buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuoteOutcome {
    /// The quote was written (its length).
    Quote(usize),
    /// No quote service is configured, or it could not be reached.
    Unavailable(String),
    /// The service failed or answered something invalid.
    Failed(String),
    /// The buffer was no longer shared when the answer came: nothing was written.
    BufferGone,
}

/// Writes the outcome into the TD's buffer: the quote first, then the header (with a
/// release fence between), so that the TD never sees `error_code` 0 before its quote.
pub fn complete(mem: &dyn SharedGuestMemory, req: &QuoteRequest, result: Result<Vec<u8>, QgsError>) -> QuoteOutcome {
    if !mem.is_shared(req.gpa, req.size) {
        return QuoteOutcome::BufferGone;
    }
    let mut header = req.header;
    let outcome = match result {
        Ok(quote) if quote.len() <= req.payload_capacity() => {
            if mem.write_shared(req.gpa + GetQuoteHeader::SIZE as u64, &quote).is_err() {
                return QuoteOutcome::BufferGone;
            }
            header.out_len = quote.len() as u32;
            header.error_code = GET_QUOTE_SUCCESS;
            QuoteOutcome::Quote(quote.len())
        }
        Ok(quote) => {
            header.error_code = GET_QUOTE_ERROR;
            QuoteOutcome::Failed(format!("a {}-byte quote does not fit the buffer", quote.len()))
        }
        Err(e @ QgsError::Connect { .. }) => {
            header.error_code = GET_QUOTE_QGS_UNAVAILABLE;
            QuoteOutcome::Unavailable(e.to_string())
        }
        Err(e) => {
            header.error_code = GET_QUOTE_ERROR;
            QuoteOutcome::Failed(e.to_string())
        }
    };
    std::sync::atomic::fence(Ordering::Release);
    if mem.write_shared(req.gpa, &header.to_bytes()).is_err() {
        return QuoteOutcome::BufferGone;
    }
    outcome
}

/// A GetQuote completion to run off the vCPU thread: asks the service, writes the
/// answer and notifies the TD.
pub type QuoteJob = Box<dyn FnOnce() + Send>;

/// Where GetQuote completions run. A vCPU thread must not talk to the quote service
/// itself (it would stall the TD, and its seccomp filter forbids sockets): it hands
/// each request's job to a runner.
pub trait QuoteRunner: Send + Sync {
    /// Runs `job` on another thread, soon; gives it back if it cannot (the TD is then
    /// told to retry).
    fn run(&self, job: QuoteJob) -> Result<(), QuoteJob>;
}

/// A runner that starts a thread per job: for tools and tests. cvmm's vCPUs use one
/// long-lived thread that runs under its own seccomp filter (`vmm::quote_thread`),
/// since a thread a vCPU thread started would inherit the vCPU's filter.
#[derive(Debug, Default, Clone, Copy)]
pub struct ThreadPerJob;

impl QuoteRunner for ThreadPerJob {
    fn run(&self, job: QuoteJob) -> Result<(), QuoteJob> {
        // The job is needed back if the thread cannot start: hand it over through a slot.
        let slot = Arc::new(std::sync::Mutex::new(Some(job)));
        let theirs = slot.clone();
        let spawned = std::thread::Builder::new().name("tdx-getquote".into()).spawn(move || {
            let job = theirs.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(job) = job {
                job();
            }
        });
        match spawned {
            Ok(_) => Ok(()),
            Err(_) => slot.lock().unwrap_or_else(|e| e.into_inner()).take().map_or(Ok(()), Err),
        }
    }
}

/// Forwards GetQuote requests to the quote service, each as a job on its runner, at
/// most [`MAX_IN_FLIGHT`] at once.
#[derive(Clone)]
pub struct QuoteService {
    addr: Option<QgsAddress>,
    timeout: Duration,
    in_flight: Arc<AtomicUsize>,
    runner: Arc<dyn QuoteRunner>,
}

impl std::fmt::Debug for QuoteService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuoteService")
            .field("addr", &self.addr)
            .field("timeout", &self.timeout)
            .field("in_flight", &self.in_flight)
            .finish_non_exhaustive()
    }
}

/// What [`QuoteService::start`] did, for the TD's R10 and the caller's log.
#[derive(Debug)]
pub enum Started {
    /// The request is in flight: its job completes it, then calls `notify`; the
    /// receiver gets the outcome.
    InFlight(mpsc::Receiver<QuoteOutcome>),
    /// No service is configured: the buffer says QGS_UNAVAILABLE already (no
    /// notification, as in QEMU).
    Unavailable,
}

impl QuoteService {
    /// A service at `addr` (`None`: every request is answered QGS_UNAVAILABLE), its
    /// requests each on a thread of their own ([`ThreadPerJob`]).
    pub fn new(addr: Option<QgsAddress>) -> Self {
        Self { addr, timeout: QGS_TIMEOUT, in_flight: Arc::new(AtomicUsize::new(0)), runner: Arc::new(ThreadPerJob) }
    }

    /// The same with another timeout (tests).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The same with its requests run by `runner`.
    pub fn with_runner(mut self, runner: Arc<dyn QuoteRunner>) -> Self {
        self.runner = runner;
        self
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Starts a checked request: marks the buffer in flight and hands the runner a job
    /// that asks the service, writes the answer ([`complete`]) and calls `notify`.
    /// Errors are the GHCI status for the TD: RETRY when [`MAX_IN_FLIGHT`] requests are
    /// pending or the runner refuses the job, INVALID_OPERAND when the buffer cannot
    /// be written.
    pub fn start(
        &self,
        mem: Arc<dyn SharedGuestMemory>,
        req: QuoteRequest,
        notify: Box<dyn FnOnce() + Send>,
    ) -> Result<Started, u64> {
        let mut header = req.header;
        let Some(addr) = self.addr.clone() else {
            header.error_code = GET_QUOTE_QGS_UNAVAILABLE;
            mem.write_shared(req.gpa, &header.to_bytes()).map_err(|_| tdvmcall_status::INVALID_OPERAND)?;
            return Ok(Started::Unavailable);
        };
        let pending = self.in_flight.fetch_add(1, Ordering::AcqRel);
        if pending >= MAX_IN_FLIGHT {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            return Err(tdvmcall_status::RETRY);
        }
        header.error_code = GET_QUOTE_IN_FLIGHT;
        if mem.write_shared(req.gpa, &header.to_bytes()).is_err() {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            return Err(tdvmcall_status::INVALID_OPERAND);
        }
        let (restore, restore_gpa, restore_header) = (mem.clone(), req.gpa, req.header);
        let in_flight = self.in_flight.clone();
        let timeout = self.timeout;
        let (done, outcome) = mpsc::channel();
        let job: QuoteJob = Box::new(move || {
            let result = get_quote(&addr, &req.report, req.payload_capacity(), timeout);
            let outcome = complete(&*mem, &req, result);
            in_flight.fetch_sub(1, Ordering::AcqRel);
            if outcome != QuoteOutcome::BufferGone {
                notify();
            }
            let _ = done.send(outcome);
        });
        match self.runner.run(job) {
            Ok(()) => Ok(Started::InFlight(outcome)),
            Err(_) => {
                // No thread will complete it: put the TD's header back and let it retry.
                let _ = restore.write_shared(restore_gpa, &restore_header.to_bytes());
                self.in_flight.fetch_sub(1, Ordering::AcqRel);
                Err(tdvmcall_status::RETRY)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixListener;
    use std::sync::Mutex;
    use std::thread::JoinHandle;

    use super::*;

    #[test]
    fn structures_have_the_c_layout() {
        // struct tdx_get_quote_header: u64 @0, u64 @8, u32 @16, u32 @20.
        assert_eq!(GetQuoteHeader::SIZE, 24);
        assert_eq!(
            (
                offset_of!(GetQuoteHeader, error_code),
                offset_of!(GetQuoteHeader, in_len),
                offset_of!(GetQuoteHeader, out_len)
            ),
            (8, 16, 20)
        );
        // qgs_msg_header_t: u16 @0, u16 @2, u32 @4, u32 @8, u32 @12.
        assert_eq!(size_of::<QgsMsgHeader>(), 16);
        assert_eq!(
            (offset_of!(QgsMsgHeader, msg_type), offset_of!(QgsMsgHeader, size), offset_of!(QgsMsgHeader, error_code)),
            (4, 8, 12)
        );
        assert_eq!((size_of::<QgsGetQuoteReq>(), offset_of!(QgsGetQuoteReq, id_list_size)), (24, 20));
        assert_eq!((size_of::<QgsGetQuoteResp>(), offset_of!(QgsGetQuoteResp, quote_size)), (24, 20));
    }

    #[test]
    fn a_request_is_framed_as_qemu_frames_it() {
        let framed = encode_get_quote_request(&[0xaa, 0xbb, 0xcc]);

        // Written out from the C structures: length 27 big-endian; version 1.1,
        // GET_QUOTE_REQ, size 27, error 0; report_size 3, id_list_size 0; the report.
        let expected: &[u8] = &[
            0, 0, 0, 27, //
            1, 0, 1, 0, 0, 0, 0, 0, 27, 0, 0, 0, 0, 0, 0, 0, //
            3, 0, 0, 0, 0, 0, 0, 0, //
            0xaa, 0xbb, 0xcc,
        ];
        assert_eq!(framed, expected);
    }

    /// A GET_QUOTE_RESP (without the length prefix) as a QGS writes it.
    fn response(version: (u16, u16), msg_type: u32, error: u32, selected: u32, quote: &[u8]) -> Vec<u8> {
        let size = 24 + quote.len() as u32;
        let mut m = Vec::new();
        m.extend_from_slice(&version.0.to_le_bytes());
        m.extend_from_slice(&version.1.to_le_bytes());
        m.extend_from_slice(&msg_type.to_le_bytes());
        m.extend_from_slice(&size.to_le_bytes());
        m.extend_from_slice(&error.to_le_bytes());
        m.extend_from_slice(&selected.to_le_bytes());
        m.extend_from_slice(&(quote.len() as u32).to_le_bytes());
        m.extend_from_slice(quote);
        m
    }

    #[test]
    fn responses_are_checked_before_their_quote_is_used() {
        let quote = [7u8; 100];
        assert_eq!(decode_get_quote_response(&response((1, 1), 1, 0, 0, &quote)).unwrap(), quote);
        let cases = [
            (response((1, 0), 1, 0, 0, &quote), "message version 1.0"),
            (response((1, 1), 0, 0, 0, &quote), "message type 0"),
            (response((1, 1), 1, 0x12, 0, &quote), "error code 0x12"),
            (response((1, 1), 1, 0, 4, &quote), "selected ID of 4 bytes"),
            (response((1, 1), 1, 0, 0, &quote)[..60].to_vec(), "message size 124 exceeds the 60 bytes received"),
            (vec![1, 0, 1, 0], "4 bytes, shorter than the 24-byte"),
        ];
        for (msg, expected) in cases {
            let err = decode_get_quote_response(&msg).unwrap_err();
            assert!(err.to_string().contains(expected), "{err}");
        }
        let mut short_quote = response((1, 1), 1, 0, 0, &quote);
        short_quote[20..24].copy_from_slice(&99u32.to_le_bytes());
        assert!(decode_get_quote_response(&short_quote)
            .unwrap_err()
            .to_string()
            .contains("quote size 99, but 100 bytes follow the header"));
        let mut oversized = response((1, 1), 1, 0, 0, &quote);
        oversized[8..12].copy_from_slice(&1000u32.to_le_bytes());
        assert!(decode_get_quote_response(&oversized).unwrap_err().to_string().contains("message size 1000"));
    }

    /// Shared guest memory backed by a byte vector, with a switch for "no longer shared".
    struct FakeMemory {
        base: u64,
        bytes: Mutex<Vec<u8>>,
        shared: std::sync::atomic::AtomicBool,
    }

    impl FakeMemory {
        fn new(base: u64, len: usize) -> Arc<Self> {
            Arc::new(Self { base, bytes: Mutex::new(vec![0; len]), shared: true.into() })
        }

        fn range(&self, gpa: u64, len: usize) -> Option<std::ops::Range<usize>> {
            let start = gpa.checked_sub(self.base)? as usize;
            (start + len <= self.bytes.lock().unwrap().len()).then_some(start..start + len)
        }

        fn header(&self, gpa: u64) -> GetQuoteHeader {
            let mut raw = [0u8; 24];
            self.read_shared(gpa, &mut raw).unwrap();
            GetQuoteHeader::from_bytes(&raw)
        }
    }

    impl SharedGuestMemory for FakeMemory {
        fn is_shared(&self, gpa: u64, len: u64) -> bool {
            self.shared.load(Ordering::SeqCst) && self.range(gpa, len as usize).is_some()
        }

        fn read_shared(&self, gpa: u64, buf: &mut [u8]) -> Result<(), GuestAccessError> {
            let r = self.range(gpa, buf.len()).ok_or(GuestAccessError { gpa, len: buf.len() })?;
            buf.copy_from_slice(&self.bytes.lock().unwrap()[r]);
            Ok(())
        }

        fn write_shared(&self, gpa: u64, bytes: &[u8]) -> Result<(), GuestAccessError> {
            let r = self.range(gpa, bytes.len()).ok_or(GuestAccessError { gpa, len: bytes.len() })?;
            self.bytes.lock().unwrap()[r].copy_from_slice(bytes);
            Ok(())
        }
    }

    const BUF: u64 = 0x10_0000;
    const SHARED_BIT: u64 = 1 << 47;

    /// A 2-page buffer at BUF holding a version-1 header and a 16-byte report.
    fn memory_with_request() -> Arc<FakeMemory> {
        let mem = FakeMemory::new(BUF, 0x4000);
        let header = GetQuoteHeader { structure_version: 1, error_code: 0, in_len: 16, out_len: 0 };
        mem.write_shared(BUF, &header.to_bytes()).unwrap();
        mem.write_shared(BUF + 24, &[0x5a; 16]).unwrap();
        mem
    }

    #[test]
    fn a_valid_buffer_gives_the_report() {
        let mem = memory_with_request();

        let req = QuoteRequest::parse(BUF, 0x2000, SHARED_BIT, &*mem).unwrap();

        assert_eq!((req.gpa, req.size, req.report.as_slice()), (BUF, 0x2000, &[0x5a; 16][..]));
        assert_eq!(req.payload_capacity(), 0x2000 - 24);
    }

    #[test]
    fn every_argument_and_the_header_are_checked() {
        use tdvmcall_status::{ALIGN_ERROR, INVALID_OPERAND};
        let mem = memory_with_request();
        let parse = |gpa, size| QuoteRequest::parse(gpa, size, SHARED_BIT, &*mem).map(|_| ()).map_err(|e| e.0);

        assert_eq!(parse(BUF, 0), Err(INVALID_OPERAND));
        assert_eq!(parse(BUF + 0x800, 0x1000), Err(ALIGN_ERROR));
        assert_eq!(parse(BUF, 0x1800), Err(ALIGN_ERROR));
        assert_eq!(parse(BUF, GET_QUOTE_MAX_BUF_LEN + 0x1000), Err(INVALID_OPERAND));
        assert_eq!(parse(SHARED_BIT | BUF, 0x1000), Err(INVALID_OPERAND), "the shared bit is cleared by KVM");
        assert_eq!(parse(!0xfff, 0x2000), Err(INVALID_OPERAND));
        assert_eq!(parse(BUF + 0x3000, 0x2000), Err(INVALID_OPERAND), "runs out of shared memory");
        mem.write_shared(BUF + 16, &0x1fe9u32.to_le_bytes()).unwrap(); // in_len = 0x2000 - 23
        assert_eq!(parse(BUF, 0x2000), Err(INVALID_OPERAND), "in_len runs past the buffer");
        mem.write_shared(BUF, &2u64.to_le_bytes()).unwrap();
        assert_eq!(parse(BUF, 0x2000), Err(INVALID_OPERAND), "structure version 2");
        mem.shared.store(false, Ordering::SeqCst);
        assert_eq!(
            QuoteRequest::parse(BUF, 0x1000, SHARED_BIT, &*mem).unwrap_err(),
            (INVALID_OPERAND, "the buffer is not in shared memory")
        );
    }

    /// A QGS on a Unix socket that answers one request with `answer(request)`, after
    /// `go` is signalled.
    fn fake_qgs(
        answer: impl FnOnce(Vec<u8>) -> Vec<u8> + Send + 'static,
    ) -> (QgsAddress, mpsc::Sender<()>, JoinHandle<Vec<u8>>) {
        let dir =
            std::env::temp_dir().join(format!("cvmm-qgs-{}-{:?}", std::process::id(), std::thread::current().id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("qgs.socket");
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).unwrap();
        let (go, wait) = mpsc::channel();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut prefix = [0u8; 4];
            s.read_exact(&mut prefix).unwrap();
            let mut msg = vec![0u8; u32::from_be_bytes(prefix) as usize];
            s.read_exact(&mut msg).unwrap();
            wait.recv().unwrap();
            let reply = answer(msg.clone());
            s.write_all(&(reply.len() as u32).to_be_bytes()).unwrap();
            s.write_all(&reply).unwrap();
            msg
        });
        (QgsAddress::Unix(path), go, server)
    }

    #[test]
    fn a_quote_is_fetched_written_back_and_notified() {
        let mem = memory_with_request();
        let quote: Vec<u8> = (0..600u32).map(|i| (i % 251) as u8).collect();
        let q = quote.clone();
        let (addr, go, server) = fake_qgs(move |_| response((1, 1), 1, 0, 0, &q));
        let service = QuoteService::new(Some(addr));
        let (notified, notice) = mpsc::channel();
        let req = QuoteRequest::parse(BUF, 0x2000, SHARED_BIT, &*mem).unwrap();

        let started = service.start(mem.clone(), req, Box::new(move || notified.send(()).unwrap())).unwrap();

        assert_eq!(mem.header(BUF).error_code, GET_QUOTE_IN_FLIGHT, "in flight until the service answers");
        assert_eq!(service.in_flight(), 1);
        go.send(()).unwrap();
        let Started::InFlight(outcome) = started else { panic!("a service is configured") };
        assert_eq!(outcome.recv_timeout(Duration::from_secs(10)).unwrap(), QuoteOutcome::Quote(600));
        notice.recv_timeout(Duration::from_secs(5)).unwrap();
        let sent = server.join().unwrap();
        assert_eq!(&sent[24..], &[0x5a; 16], "the TD report went to the service after the request header");
        let header = mem.header(BUF);
        assert_eq!((header.error_code, header.out_len, header.in_len), (GET_QUOTE_SUCCESS, 600, 16));
        let mut back = vec![0u8; 600];
        mem.read_shared(BUF + 24, &mut back).unwrap();
        assert_eq!(back, quote);
        assert_eq!(service.in_flight(), 0);
    }

    #[test]
    fn a_service_error_is_reported_in_the_buffer() {
        let mem = memory_with_request();
        let (addr, go, server) = fake_qgs(|_| response((1, 1), 1, 0x12, 0, &[]));
        let service = QuoteService::new(Some(addr));
        let req = QuoteRequest::parse(BUF, 0x1000, SHARED_BIT, &*mem).unwrap();

        let started = service.start(mem.clone(), req, Box::new(|| {})).unwrap();
        go.send(()).unwrap();

        let Started::InFlight(outcome) = started else { panic!("a service is configured") };
        assert!(
            matches!(outcome.recv_timeout(Duration::from_secs(10)).unwrap(), QuoteOutcome::Failed(m) if m.contains("error code 0x12"))
        );
        server.join().unwrap();
        assert_eq!((mem.header(BUF).error_code, mem.header(BUF).out_len), (GET_QUOTE_ERROR, 0));
    }

    #[test]
    fn without_a_service_the_buffer_says_unavailable_at_once() {
        let mem = memory_with_request();
        let req = QuoteRequest::parse(BUF, 0x1000, SHARED_BIT, &*mem).unwrap();

        let started = QuoteService::new(None).start(mem.clone(), req, Box::new(|| panic!("no notification"))).unwrap();

        assert!(matches!(started, Started::Unavailable));
        assert_eq!(mem.header(BUF).error_code, GET_QUOTE_QGS_UNAVAILABLE);
    }

    #[test]
    fn an_unreachable_service_is_unavailable_and_still_notifies() {
        let mem = memory_with_request();
        let service = QuoteService::new(Some(QgsAddress::Unix("/nonexistent/qgs.socket".into())));
        let req = QuoteRequest::parse(BUF, 0x1000, SHARED_BIT, &*mem).unwrap();
        let (notified, notice) = mpsc::channel();

        let started = service.start(mem.clone(), req, Box::new(move || notified.send(()).unwrap())).unwrap();

        let Started::InFlight(outcome) = started else { panic!("a service is configured") };
        let outcome = outcome.recv_timeout(Duration::from_secs(10)).unwrap();
        assert!(
            matches!(&outcome, QuoteOutcome::Unavailable(m) if m.contains("unix:/nonexistent/qgs.socket")),
            "{outcome:?}"
        );
        assert_eq!(mem.header(BUF).error_code, GET_QUOTE_QGS_UNAVAILABLE);
        notice.recv_timeout(Duration::from_secs(5)).unwrap();
    }

    #[test]
    fn an_answer_too_large_for_the_buffer_is_an_error() {
        let mem = memory_with_request();
        let (addr, go, server) = fake_qgs(|_| response((1, 1), 1, 0, 0, &[1u8; 0x1000]));
        let req = QuoteRequest::parse(BUF, 0x1000, SHARED_BIT, &*mem).unwrap();

        let started = QuoteService::new(Some(addr)).start(mem.clone(), req, Box::new(|| {})).unwrap();
        go.send(()).unwrap();

        let Started::InFlight(outcome) = started else { panic!("a service is configured") };
        let outcome = outcome.recv_timeout(Duration::from_secs(10)).unwrap();
        assert!(matches!(&outcome, QuoteOutcome::Failed(m) if m.contains("at most 4068")), "{outcome:?}");
        assert_eq!(mem.header(BUF).error_code, GET_QUOTE_ERROR);
        // The service may see the connection closed before it writes: either is fine.
        let _ = server.join();
    }

    #[test]
    fn a_buffer_converted_to_private_meanwhile_is_left_alone() {
        let mem = memory_with_request();
        let req = QuoteRequest::parse(BUF, 0x1000, SHARED_BIT, &*mem).unwrap();
        mem.shared.store(false, Ordering::SeqCst);

        let outcome = complete(&*mem, &req, Ok(vec![9; 10]));

        assert_eq!(outcome, QuoteOutcome::BufferGone);
        let mut first = [0u8; 8];
        mem.read_shared(BUF + 24, &mut first).unwrap();
        assert_eq!(first, [0x5a; 8], "nothing written");
    }

    #[test]
    fn requests_beyond_the_limit_are_told_to_retry() {
        let mem = memory_with_request();
        let service = QuoteService::new(Some(QgsAddress::Vsock { cid: 2, port: 4050 }));
        service.in_flight.store(MAX_IN_FLIGHT, Ordering::SeqCst);
        let req = QuoteRequest::parse(BUF, 0x1000, SHARED_BIT, &*mem).unwrap();

        let err = service.start(mem.clone(), req, Box::new(|| {})).unwrap_err();

        assert_eq!(err, tdvmcall_status::RETRY);
        assert_eq!(service.in_flight(), MAX_IN_FLIGHT);
        assert_eq!(mem.header(BUF).error_code, 0, "the buffer is untouched");
    }

    /// A runner that refuses every job (its thread is gone).
    struct Refusing;

    impl QuoteRunner for Refusing {
        fn run(&self, job: QuoteJob) -> Result<(), QuoteJob> {
            Err(job)
        }
    }

    /// A runner that keeps its jobs until the test runs them.
    #[derive(Default)]
    struct Held(Mutex<Vec<QuoteJob>>);

    impl QuoteRunner for Held {
        fn run(&self, job: QuoteJob) -> Result<(), QuoteJob> {
            self.0.lock().unwrap().push(job);
            Ok(())
        }
    }

    #[test]
    fn a_runner_that_refuses_the_job_gets_the_td_to_retry_with_its_buffer_restored() {
        let mem = memory_with_request();
        let service = QuoteService::new(Some(QgsAddress::Vsock { cid: 2, port: 4050 })).with_runner(Arc::new(Refusing));
        let req = QuoteRequest::parse(BUF, 0x1000, SHARED_BIT, &*mem).unwrap();

        let err = service.start(mem.clone(), req, Box::new(|| panic!("no notification"))).unwrap_err();

        assert_eq!(err, tdvmcall_status::RETRY);
        assert_eq!(service.in_flight(), 0);
        assert_eq!(mem.header(BUF).error_code, 0, "the TD's header is back");
    }

    #[test]
    fn the_request_stays_in_flight_until_the_runner_runs_its_job() {
        let mem = memory_with_request();
        let quote = [3u8; 40];
        let (addr, go, server) = fake_qgs(move |_| response((1, 1), 1, 0, 0, &quote));
        let runner = Arc::new(Held::default());
        let service = QuoteService::new(Some(addr)).with_runner(runner.clone());
        let req = QuoteRequest::parse(BUF, 0x1000, SHARED_BIT, &*mem).unwrap();
        let (notified, notice) = mpsc::channel();

        let started = service.start(mem.clone(), req, Box::new(move || notified.send(()).unwrap())).unwrap();

        assert_eq!(mem.header(BUF).error_code, GET_QUOTE_IN_FLIGHT);
        assert!(notice.try_recv().is_err(), "nothing is notified before the job runs");
        go.send(()).unwrap();
        let job = runner.0.lock().unwrap().pop().expect("one job handed to the runner");
        job();
        let Started::InFlight(outcome) = started else { panic!("a service is configured") };
        assert_eq!(outcome.recv().unwrap(), QuoteOutcome::Quote(40));
        notice.try_recv().expect("notified after completion");
        assert_eq!((mem.header(BUF).error_code, service.in_flight()), (GET_QUOTE_SUCCESS, 0));
        server.join().unwrap();
    }

    #[test]
    fn an_unreachable_vsock_service_is_a_connect_error() {
        // CID 1 is the local loopback CID; nothing listens on port 1 (or the host has no
        // vsock transport at all): either way connect() fails, quickly.
        let addr = QgsAddress::Vsock { cid: 1, port: 1 };
        let started = std::time::Instant::now();

        let err = get_quote(&addr, &[0; 16], 0x1000, Duration::from_millis(300)).unwrap_err();

        assert!(matches!(err, QgsError::Connect { .. }), "{err}");
        assert!(err.to_string().starts_with("cannot connect to the quote generation service at vsock:1:1"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }
}
