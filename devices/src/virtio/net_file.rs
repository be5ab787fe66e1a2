//! virtio-net's file backend ([`FileBackend`]): transmitted frames are appended to a
//! file as length-prefixed records, received frames are read from another file in the
//! same format. Needs no privileges; for tests, captures and benchmarks.
//!
//! # Record format
//!
//! A file is a sequence of records, each a 4-byte little-endian length `N` followed by
//! `N` bytes of Ethernet frame (no virtio header), with `1 <= N <=`
//! [`MAX_FRAME_LEN`]; nothing between or after records. (The same format both ways, so
//! one VM's tx file can be another's rx file.)
//!
//! # Transmit
//!
//! The tx file is opened for appending (created if missing; what it holds is kept). A
//! burst of frames goes out with one `writev` of each record's header and the frame's
//! parts, straight from the shared-memory view (no copy in cvmm); up to 1024 iovecs
//! per call. A short write (a full disk) is cut back to the last whole record with
//! `ftruncate`, so the file always holds whole records; the frame it cut is dropped.
//! The file must have no other writer.
//!
//! # Receive
//!
//! Records are read (`pread`) from the rx file from its start, in order, one per rx
//! buffer. Frames wait in the file until the guest has posted a buffer: the backend is
//! read when the device starts and whenever the guest posts rx buffers (there is no
//! file watch: a record appended later is picked up at the next such moment). A record
//! cut short by the end of the file is left there (a writer may still be appending). A
//! record of length 0 or above [`MAX_FRAME_LEN`] is malformed: receiving fails with
//! `InvalidData` and stops for good (the rest of the file cannot be trusted to be
//! framed).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::FileExt;
use std::path::Path;

use vm_memory::volatile_memory::PtrGuard;
use vm_memory::VolatileSlice;

use super::net::{send_bytes_as_batch, send_slices_as_batch, NetBackend, NetError, MAX_FRAME_LEN};

/// Size of a record's length prefix.
pub const RECORD_HEADER_LEN: usize = 4;
/// Linux's limit on iovecs per `writev` (UIO_MAXIOV).
const UIO_MAXIOV: usize = 1024;

/// The record header of a `len`-byte frame.
pub fn record_header(len: usize) -> [u8; RECORD_HEADER_LEN] {
    (len as u32).to_le_bytes()
}

/// Frames to and from files of length-prefixed records (see the module documentation).
#[derive(Debug)]
pub struct FileBackend {
    tx: File,
    /// Where the tx file ends: the last whole record's end.
    tx_len: u64,
    rx: Option<File>,
    /// Where the next rx record starts.
    rx_pos: u64,
    /// A malformed rx record was met: nothing more is received.
    rx_failed: bool,
    /// Reused per burst: the record headers.
    headers: Vec<[u8; RECORD_HEADER_LEN]>,
}

impl FileBackend {
    /// Appends tx records to `tx` (created if missing) and reads rx records from `rx`,
    /// if given (it must exist).
    pub fn open(tx: &Path, rx: Option<&Path>) -> Result<Self, NetError> {
        let file_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| NetError::File { path, source }
        };
        let tx_file = OpenOptions::new().append(true).create(true).open(tx).map_err(file_err(tx))?;
        let tx_len = tx_file.metadata().map_err(file_err(tx))?.len();
        let rx_file = rx.map(|p| File::open(p).map_err(file_err(p))).transpose()?;
        Ok(Self { tx: tx_file, tx_len, rx: rx_file, rx_pos: 0, rx_failed: false, headers: Vec::new() })
    }

    /// The same with `tx` and, when no rx path is given, `<tx>.rx` if that exists (no
    /// rx otherwise): what `--net file=PATH[,rx=RXPATH]` opens.
    pub fn open_default_rx(tx: &Path, rx: Option<&Path>) -> Result<Self, NetError> {
        match rx {
            Some(rx) => Self::open(tx, Some(rx)),
            None => {
                let mut default = tx.as_os_str().to_owned();
                default.push(".rx");
                let default = std::path::PathBuf::from(default);
                Self::open(tx, default.exists().then_some(default.as_path()))
            }
        }
    }

    /// Bytes of whole records in the tx file.
    pub fn tx_len(&self) -> u64 {
        self.tx_len
    }

    /// Writes `frames` (all within the iovec limit) as records with one `writev`: how
    /// many were written whole, or why none was.
    fn write_records(&mut self, frames: &[&[VolatileSlice<'_>]]) -> io::Result<usize> {
        self.headers.clear();
        self.headers.extend(frames.iter().map(|parts| record_header(parts.iter().map(VolatileSlice::len).sum())));
        let guards: Vec<Vec<PtrGuard>> =
            frames.iter().map(|parts| parts.iter().map(VolatileSlice::ptr_guard).collect()).collect();
        let mut iov = Vec::with_capacity(frames.len() + guards.iter().map(Vec::len).sum::<usize>());
        let mut total = 0usize;
        for (header, parts) in self.headers.iter().zip(&guards) {
            iov.push(libc::iovec { iov_base: header.as_ptr().cast_mut().cast(), iov_len: RECORD_HEADER_LEN });
            total += RECORD_HEADER_LEN;
            for g in parts {
                iov.push(libc::iovec { iov_base: g.as_ptr().cast_mut().cast(), iov_len: g.len() });
                total += g.len();
            }
        }
        let written = loop {
            #[allow(unsafe_code)]
            // SAFETY: every iovec points either at a header in `self.headers` (not
            // touched until the call returns) or into a slice of the shared-memory
            // view, kept mapped by the caller's view snapshot and `guards`; writev only
            // reads those bytes. The count is the vector's length (at most UIO_MAXIOV).
            let n = unsafe { libc::writev(self.tx.as_raw_fd(), iov.as_ptr(), iov.len() as libc::c_int) };
            match usize::try_from(n) {
                Ok(n) => break n,
                Err(_) => {
                    let e = io::Error::last_os_error();
                    if e.kind() != io::ErrorKind::Interrupted {
                        return Err(e);
                    }
                }
            }
        };
        if written == total {
            self.tx_len += total as u64;
            return Ok(frames.len());
        }
        // A short write: keep the whole records, cut the partial one.
        let (mut whole, mut bytes) = (0, 0usize);
        for h in &self.headers {
            let len = RECORD_HEADER_LEN + u32::from_le_bytes(*h) as usize;
            if bytes + len > written {
                break;
            }
            bytes += len;
            whole += 1;
        }
        self.tx_len += bytes as u64;
        if bytes < written {
            self.tx.set_len(self.tx_len)?;
        }
        if whole == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        Ok(whole)
    }
}

impl NetBackend for FileBackend {
    fn send(&mut self, frame: &[u8]) -> io::Result<()> {
        send_bytes_as_batch(self, frame)
    }

    fn send_slices(&mut self, parts: &[VolatileSlice<'_>]) -> io::Result<()> {
        send_slices_as_batch(self, parts)
    }

    /// One `writev` per run of frames whose iovecs fit [`UIO_MAXIOV`].
    fn send_frames(&mut self, frames: &[&[VolatileSlice<'_>]]) -> (usize, Option<io::Error>) {
        let mut sent = 0;
        while sent < frames.len() {
            let mut iovs = 0;
            let run = frames[sent..]
                .iter()
                .take_while(|parts| {
                    iovs += 1 + parts.len();
                    iovs <= UIO_MAXIOV
                })
                .count()
                .max(1);
            if 1 + frames[sent].len() > UIO_MAXIOV {
                return (sent, Some(io::Error::from_raw_os_error(libc::EMSGSIZE)));
            }
            match self.write_records(&frames[sent..sent + run]) {
                Ok(n) => sent += n,
                Err(e) => return (sent, Some(e)),
            }
        }
        (sent, None)
    }

    fn recv(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        let Some(rx) = &self.rx else { return Ok(None) };
        if self.rx_failed {
            return Ok(None);
        }
        let mut header = [0u8; RECORD_HEADER_LEN];
        if read_full_at(rx, &mut header, self.rx_pos)? < RECORD_HEADER_LEN {
            return Ok(None);
        }
        let len = u32::from_le_bytes(header) as usize;
        if len == 0 || len > MAX_FRAME_LEN {
            self.rx_failed = true;
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("rx record at offset {} has length {len} (1 to {MAX_FRAME_LEN})", self.rx_pos),
            ));
        }
        let take = len.min(buf.len());
        if read_full_at(rx, &mut buf[..take], self.rx_pos + RECORD_HEADER_LEN as u64)? < take {
            return Ok(None);
        }
        // A frame longer than `buf` is truncated, as a datagram would be: is the
        // record whole in the file, though?
        if take < len {
            let mut last = [0u8; 1];
            if read_full_at(rx, &mut last, self.rx_pos + (RECORD_HEADER_LEN + len - 1) as u64)? < 1 {
                return Ok(None);
            }
        }
        self.rx_pos += (RECORD_HEADER_LEN + len) as u64;
        Ok(Some(take))
    }

    /// The tx file's descriptor; it is never watched ([`NetBackend::pulled`]).
    fn raw_fd(&self) -> RawFd {
        self.tx.as_raw_fd()
    }

    fn pulled(&self) -> bool {
        true
    }
}

/// Reads into `buf` at `offset` until it is full or the file ends: how many bytes.
fn read_full_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!(
            "cvmm-net-file-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// Records written out by hand (independently of the backend).
    fn records(frames: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for f in frames {
            out.extend_from_slice(&(f.len() as u32).to_le_bytes());
            out.extend_from_slice(f);
        }
        out
    }

    #[test]
    fn tx_appends_length_prefixed_records_gathered_from_the_parts() {
        let d = dir();
        let tx = d.join("tx");
        std::fs::write(&tx, records(&[b"old"])).unwrap();
        let mut b = FileBackend::open(&tx, None).unwrap();
        let (mut a, mut c, mut e) = (b"head".to_vec(), b"tail!".to_vec(), vec![7u8; 1500]);
        let first = [VolatileSlice::from(&mut a[..]), VolatileSlice::from(&mut c[..])];
        let second = [VolatileSlice::from(&mut e[..])];

        let (sent, err) = b.send_frames(&[&first, &second]);

        assert_eq!((sent, err.is_none()), (2, true));
        let want = records(&[b"old", b"headtail!", &[7u8; 1500]]);
        assert_eq!(std::fs::read(&tx).unwrap(), want);
        assert_eq!(b.tx_len(), want.len() as u64);
    }

    #[test]
    fn more_frames_than_one_writev_takes_all_arrive_in_order() {
        let d = dir();
        let tx = d.join("tx-many");
        let _ = std::fs::remove_file(&tx);
        let mut b = FileBackend::open(&tx, None).unwrap();
        // 600 frames of 2 parts: 1800 iovecs, two writev calls.
        let mut bufs: Vec<Vec<u8>> = (0..1200).map(|i| vec![(i / 2) as u8; 10 + i % 2]).collect();
        let slices: Vec<VolatileSlice<'_>> = bufs.iter_mut().map(|v| VolatileSlice::from(&mut v[..])).collect();
        let frames: Vec<&[VolatileSlice<'_>]> = slices.chunks(2).collect();

        assert_eq!(b.send_frames(&frames).0, 600);

        let want: Vec<Vec<u8>> = (0..600).map(|i| vec![i as u8; 21]).collect();
        let want: Vec<&[u8]> = want.iter().map(Vec::as_slice).collect();
        assert_eq!(std::fs::read(&tx).unwrap(), records(&want));
    }

    #[test]
    fn rx_reads_records_in_order_and_leaves_a_cut_record_for_later() {
        let d = dir();
        let rx = d.join("rx");
        let mut bytes = records(&[b"one", &[2u8; 1000]]);
        bytes.extend_from_slice(&records(&[b"three"])[..6]); // cut short
        std::fs::write(&rx, &bytes).unwrap();
        let mut b = FileBackend::open(&d.join("rx-tx"), Some(&rx)).unwrap();
        let mut buf = vec![0u8; MAX_FRAME_LEN];

        assert_eq!(b.recv(&mut buf).unwrap(), Some(3));
        assert_eq!(&buf[..3], b"one");
        assert_eq!(b.recv(&mut buf).unwrap(), Some(1000));
        assert!(buf[..1000].iter().all(|&x| x == 2));
        assert_eq!(b.recv(&mut buf).unwrap(), None, "the cut record waits");
        // The writer finishes it.
        bytes.extend_from_slice(&records(&[b"three"])[6..]);
        std::fs::write(&rx, &bytes).unwrap();
        assert_eq!(b.recv(&mut buf).unwrap(), Some(5));
        assert_eq!(&buf[..5], b"three");
        assert_eq!(b.recv(&mut buf).unwrap(), None);
    }

    #[test]
    fn malformed_rx_records_are_rejected_and_receiving_stops() {
        let d = dir();
        for (name, bad) in [("zero", 0u32), ("huge", MAX_FRAME_LEN as u32 + 1), ("max", u32::MAX)] {
            let rx = d.join(format!("rx-{name}"));
            let mut bytes = records(&[b"good"]);
            bytes.extend_from_slice(&bad.to_le_bytes());
            bytes.extend_from_slice(&records(&[b"after"]));
            std::fs::write(&rx, &bytes).unwrap();
            let mut b = FileBackend::open(&d.join("rx-tx"), Some(&rx)).unwrap();
            let mut buf = vec![0u8; MAX_FRAME_LEN];

            assert_eq!(b.recv(&mut buf).unwrap(), Some(4), "{name}");
            let err = b.recv(&mut buf).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{name}");
            assert!(err.to_string().contains("offset 8"), "{name}: {err}");
            assert_eq!(b.recv(&mut buf).unwrap(), None, "{name}: nothing after a malformed record");
        }
    }

    #[test]
    fn the_default_rx_file_is_tx_dot_rx_if_it_exists() {
        let d = dir();
        let tx = d.join("dflt");
        let _ = std::fs::remove_file(d.join("dflt.rx"));
        let mut buf = [0u8; 64];
        let mut none = FileBackend::open_default_rx(&tx, None).unwrap();
        assert_eq!(none.recv(&mut buf).unwrap(), None);
        std::fs::write(d.join("dflt.rx"), records(&[b"hi"])).unwrap();
        let mut some = FileBackend::open_default_rx(&tx, None).unwrap();
        assert_eq!(some.recv(&mut buf).unwrap(), Some(2));
        assert!(matches!(
            FileBackend::open(&tx, Some(&d.join("missing"))),
            Err(NetError::File { path, .. }) if path.ends_with("missing")
        ));
    }
}
