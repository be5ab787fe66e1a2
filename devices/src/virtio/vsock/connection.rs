//! One guest-initiated vsock stream and its host Unix socket: buffering in both
//! directions and the credit accounting (buf_alloc / fwd_cnt) that bounds them.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;

use event_manager::EventSet;

use super::packet::{Header, MAX_PAYLOAD};

/// The receive buffer cvmm advertises per connection: data the guest may send that
/// the host socket has not yet taken.
pub const BUF_ALLOC: u32 = 256 << 10;
/// Send an unprompted CREDIT_UPDATE once this much was forwarded since the last one.
const CREDIT_UPDATE_THRESHOLD: u32 = BUF_ALLOC / 4;

/// The guest sent more than the credit it was given.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    /// More data than [`BUF_ALLOC`] is waiting.
    #[error("the guest exceeded its credit ({pending} bytes pending, {len} more sent)")]
    CreditExceeded {
        /// Bytes already waiting.
        pending: usize,
        /// Bytes sent now.
        len: usize,
    },
    /// The host socket failed.
    #[error("host socket: {0}")]
    Io(#[from] io::Error),
}

/// State of one connection.
#[derive(Debug)]
pub struct Connection {
    pub(super) stream: UnixStream,
    /// Guest data not yet written to the host socket (at most [`BUF_ALLOC`]).
    to_host: Vec<u8>,
    /// Host data read but not yet delivered to the guest.
    to_guest: Vec<u8>,
    /// Bytes written to the host socket (our fwd_cnt).
    fwd_cnt: u32,
    fwd_cnt_sent: u32,
    /// Bytes delivered to the guest.
    rx_cnt: u32,
    peer_buf_alloc: u32,
    peer_fwd_cnt: u32,
    /// The guest will send no more: shut the host socket's write side once flushed.
    pub(super) guest_done_sending: bool,
    /// The guest will receive no more.
    pub(super) guest_done_receiving: bool,
    /// The host socket reached end of file (or the guest stopped receiving).
    pub(super) host_eof: bool,
    /// What the event loop watches on the socket (`None`: not registered).
    pub(super) registered: Option<EventSet>,
}

impl Connection {
    /// A connection over `stream` (made non-blocking) for the guest's `request`.
    pub fn new(stream: UnixStream, request: &Header) -> io::Result<Self> {
        stream.set_nonblocking(true)?;
        Ok(Self {
            stream,
            to_host: Vec::new(),
            to_guest: Vec::new(),
            fwd_cnt: 0,
            fwd_cnt_sent: 0,
            rx_cnt: 0,
            peer_buf_alloc: request.buf_alloc,
            peer_fwd_cnt: request.fwd_cnt,
            guest_done_sending: false,
            guest_done_receiving: false,
            host_eof: false,
            registered: None,
        })
    }

    /// Records the guest's credit from any header it sent on this connection.
    pub fn update_peer_credit(&mut self, h: &Header) {
        self.peer_buf_alloc = h.buf_alloc;
        self.peer_fwd_cnt = h.fwd_cnt;
    }

    /// Bytes the guest can still take.
    pub fn peer_credit(&self) -> u32 {
        let in_flight = self.rx_cnt.wrapping_sub(self.peer_fwd_cnt);
        self.peer_buf_alloc.saturating_sub(in_flight)
    }

    /// Our fwd_cnt, to put in a header (and remembered as sent).
    pub fn take_fwd_cnt(&mut self) -> u32 {
        self.fwd_cnt_sent = self.fwd_cnt;
        self.fwd_cnt
    }

    /// Whether enough was forwarded that the guest should hear of it.
    pub fn wants_credit_update(&self) -> bool {
        self.fwd_cnt.wrapping_sub(self.fwd_cnt_sent) >= CREDIT_UPDATE_THRESHOLD
    }

    /// Queues guest data for the host socket and writes what it takes.
    pub fn push_from_guest(&mut self, data: &[u8]) -> Result<(), ConnError> {
        if self.to_host.len() + data.len() > BUF_ALLOC as usize {
            return Err(ConnError::CreditExceeded { pending: self.to_host.len(), len: data.len() });
        }
        self.to_host.extend_from_slice(data);
        self.flush()
    }

    /// Writes pending guest data to the host socket until it would block; shuts the
    /// socket's write side once the guest is done sending and everything is written.
    pub fn flush(&mut self) -> Result<(), ConnError> {
        let mut written = 0;
        while written < self.to_host.len() {
            match self.stream.write(&self.to_host[written..]) {
                Ok(0) => return Err(ConnError::Io(io::ErrorKind::WriteZero.into())),
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        self.to_host.drain(..written);
        self.fwd_cnt = self.fwd_cnt.wrapping_add(written as u32);
        if self.guest_done_sending && self.to_host.is_empty() {
            let _ = self.stream.shutdown(Shutdown::Write);
        }
        Ok(())
    }

    /// Reads host data (up to the guest's credit) if nothing is waiting for delivery.
    /// Returns `Ok(true)` on end of file.
    pub fn fill(&mut self) -> io::Result<bool> {
        let credit = self.peer_credit().min(MAX_PAYLOAD) as usize;
        if self.host_eof || self.guest_done_receiving || !self.to_guest.is_empty() || credit == 0 {
            return Ok(false);
        }
        self.to_guest.resize(credit, 0);
        let r = loop {
            match self.stream.read(&mut self.to_guest) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                r => break r,
            }
        };
        match r {
            Ok(0) => {
                self.to_guest.clear();
                self.host_eof = true;
                Ok(true)
            }
            Ok(n) => {
                self.to_guest.truncate(n);
                Ok(false)
            }
            Err(e) => {
                self.to_guest.clear();
                if e.kind() == io::ErrorKind::WouldBlock {
                    Ok(false)
                } else {
                    Err(e)
                }
            }
        }
    }

    /// How many bytes can go to the guest now.
    pub fn sendable(&self) -> usize {
        self.to_guest.len().min(self.peer_credit() as usize)
    }

    /// The first `n` bytes waiting for the guest.
    pub fn to_guest(&self, n: usize) -> &[u8] {
        &self.to_guest[..n.min(self.to_guest.len())]
    }

    /// Marks `n` bytes delivered to the guest.
    pub fn delivered(&mut self, n: usize) {
        let n = n.min(self.to_guest.len());
        self.to_guest.drain(..n);
        self.rx_cnt = self.rx_cnt.wrapping_add(n as u32);
    }

    /// What the event loop should watch: readable while more host data can be taken,
    /// writable while guest data waits.
    pub fn interest(&self) -> Option<EventSet> {
        let mut set = EventSet::empty();
        if !self.host_eof && !self.guest_done_receiving && self.to_guest.is_empty() && self.peer_credit() > 0 {
            set |= EventSet::IN;
        }
        if !self.to_host.is_empty() {
            set |= EventSet::OUT;
        }
        (!set.is_empty()).then_some(set)
    }
}
