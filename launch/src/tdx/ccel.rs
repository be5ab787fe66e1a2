//! The CC event log a TD publishes through the ACPI CCEL table: parsing the TCG
//! crypto-agile log (TCG PC Client Platform Firmware Profile 10.2: a SHA-1-format Spec
//! ID event, then `TCG_PCR_EVENT2` entries) and replaying it into RTMR values.
//!
//! MR indexes follow the confidential-computing convention (UEFI CC measurement
//! protocol): 0 is MRTD (never extended at run time), RTMR n is index n + 1. Replay
//! starts every RTMR at 48 zero bytes and folds in each event's SHA-384 digest:
//! `RTMR = SHA-384(RTMR || digest)`, as TDG.MR.RTMR.EXTEND does.
//!
//! The log area is fixed-size and zero-filled, so the log ends at the area's end or
//! where an entry would start with MR index 0 and event type 0 (which no CC log
//! entry has: index 0 is MRTD). The bytes are the TD's (untrusted until replayed
//! against a verified quote): every length is checked before it is used.

use sha2::{Digest, Sha384};
use thiserror::Error;

/// TPM_ALG_SHA384.
pub const TPM_ALG_SHA384: u16 = 0x000c;
/// EV_NO_ACTION, the Spec ID event's type.
pub const EV_NO_ACTION: u32 = 3;
/// The Spec ID event's signature (crypto-agile format).
pub const SPEC_ID_SIGNATURE: &[u8; 16] = b"Spec ID Event03\0";
/// Number of RTMRs.
pub const RTMR_COUNT: usize = 4;

/// Errors from parsing or replaying a log.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum CcelError {
    /// The log ends inside a structure.
    #[error("the event log is truncated at byte {at}: {what} needs {need} more bytes")]
    Truncated {
        /// Offset of the structure.
        at: usize,
        /// What was being read.
        what: &'static str,
        /// How many bytes it needed.
        need: usize,
    },
    /// The first event is not a Spec ID event.
    #[error("the event log does not start with a Spec ID event (\"Spec ID Event03\", EV_NO_ACTION): {0}")]
    NoSpecId(&'static str),
    /// The Spec ID event does not list SHA-384.
    #[error("the event log's Spec ID event lists no SHA-384 digests")]
    NoSha384,
    /// An event's digest uses an algorithm the Spec ID event did not list.
    #[error("event at byte {at} has a digest of algorithm {alg:#06x}, which the Spec ID event does not list")]
    UnknownAlgorithm {
        /// Offset of the event.
        at: usize,
        /// Its algorithm ID.
        alg: u16,
    },
    /// An event has no SHA-384 digest.
    #[error("event at byte {at} has no SHA-384 digest")]
    MissingSha384 {
        /// Offset of the event.
        at: usize,
    },
    /// An event extends a measurement register that is not an RTMR.
    #[error("event at byte {at} names MR index {index}: only 1-4 (RTMR0-3) are extended at run time")]
    BadMrIndex {
        /// Offset of the event.
        at: usize,
        /// Its MR index.
        index: u32,
    },
}

/// One `TCG_PCR_EVENT2` entry, with its SHA-384 digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CcEvent {
    /// Offset of the entry in the log.
    pub offset: usize,
    /// The MR index (RTMR n is n + 1).
    pub mr_index: u32,
    /// The TCG event type.
    pub event_type: u32,
    /// The SHA-384 digest the entry carries (the value extended).
    pub digest: [u8; 48],
    /// The event data.
    pub data: Vec<u8>,
}

/// A parsed log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventLog {
    /// The digest algorithms the Spec ID event lists: (algorithm ID, digest size).
    pub algorithms: Vec<(u16, u16)>,
    /// The events after the Spec ID event, in order.
    pub events: Vec<CcEvent>,
    /// Bytes of the log used (where the zero fill starts).
    pub len: usize,
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], CcelError> {
        let end = self.at.checked_add(n).filter(|e| *e <= self.bytes.len());
        let Some(end) = end else {
            return Err(CcelError::Truncated { at: self.at, what, need: n - (self.bytes.len() - self.at) });
        };
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u16(&mut self, what: &'static str) -> Result<u16, CcelError> {
        Ok(u16::from_le_bytes(self.take(2, what)?.try_into().unwrap_or_default()))
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, CcelError> {
        Ok(u32::from_le_bytes(self.take(4, what)?.try_into().unwrap_or_default()))
    }
}

impl EventLog {
    /// Parses the log at the start of `area` (the whole LASA area, or just the bytes
    /// used).
    pub fn parse(area: &[u8]) -> Result<Self, CcelError> {
        let mut r = Reader { bytes: area, at: 0 };
        let algorithms = spec_id(&mut r)?;
        if !algorithms.iter().any(|&(alg, size)| alg == TPM_ALG_SHA384 && size == 48) {
            return Err(CcelError::NoSha384);
        }
        let mut events = Vec::new();
        while r.at < area.len() {
            let rest = &area[r.at..];
            if rest.len() < 8 || rest[..8] == [0; 8] {
                break;
            }
            let offset = r.at;
            let mr_index = r.u32("the MR index")?;
            let event_type = r.u32("the event type")?;
            let count = r.u32("the digest count")?;
            let mut sha384 = None;
            for _ in 0..count {
                let alg = r.u16("a digest's algorithm")?;
                let Some(&(_, size)) = algorithms.iter().find(|(a, _)| *a == alg) else {
                    return Err(CcelError::UnknownAlgorithm { at: offset, alg });
                };
                let digest = r.take(usize::from(size), "a digest")?;
                if alg == TPM_ALG_SHA384 {
                    sha384 = digest.try_into().ok();
                }
            }
            let digest = sha384.ok_or(CcelError::MissingSha384 { at: offset })?;
            let size = r.u32("the event size")? as usize;
            let data = r.take(size, "the event data")?.to_vec();
            events.push(CcEvent { offset, mr_index, event_type, digest, data });
        }
        Ok(Self { algorithms, events, len: r.at.min(area.len()) })
    }

    /// The RTMR values the events produce, RTMR0 first.
    pub fn replay(&self) -> Result<[[u8; 48]; RTMR_COUNT], CcelError> {
        let mut rtmrs = [[0u8; 48]; RTMR_COUNT];
        for e in &self.events {
            let rtmr = match e.mr_index {
                1..=4 => &mut rtmrs[e.mr_index as usize - 1],
                index => return Err(CcelError::BadMrIndex { at: e.offset, index }),
            };
            let next = Sha384::new().chain_update(&rtmr[..]).chain_update(e.digest).finalize();
            rtmr.copy_from_slice(&next);
        }
        Ok(rtmrs)
    }
}

/// Reads the Spec ID event; returns its algorithm list.
fn spec_id(r: &mut Reader<'_>) -> Result<Vec<(u16, u16)>, CcelError> {
    let pcr = r.u32("the Spec ID event's PCR index")?;
    let ty = r.u32("the Spec ID event's type")?;
    r.take(20, "the Spec ID event's SHA-1 digest")?;
    if pcr != 0 || ty != EV_NO_ACTION {
        return Err(CcelError::NoSpecId("the first event is not PCR 0, EV_NO_ACTION"));
    }
    let size = r.u32("the Spec ID event's size")? as usize;
    let body = r.take(size, "the Spec ID event")?;
    let mut b = Reader { bytes: body, at: 0 };
    if b.take(16, "the Spec ID signature")? != SPEC_ID_SIGNATURE {
        return Err(CcelError::NoSpecId("its signature is not \"Spec ID Event03\""));
    }
    b.take(4 + 4, "the Spec ID version fields")?; // platform class, minor, major, errata, uintn size
    let n = b.u32("the algorithm count")?;
    let mut algorithms = Vec::new();
    for _ in 0..n {
        algorithms.push((b.u16("an algorithm ID")?, b.u16("a digest size")?));
    }
    let vendor = b.take(1, "the vendor info size")?[0];
    b.take(usize::from(vendor), "the vendor info")?;
    Ok(algorithms)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An event to write: (MR index, type, digests as (algorithm, bytes), data).
    type Event<'a> = (u32, u32, Vec<(u16, Vec<u8>)>, &'a [u8]);

    /// A log written here field by field from the TCG layout (not by the parser's
    /// inverse): Spec ID with `algs`, then `events` as (MR index, type, digests, data).
    fn log(algs: &[(u16, u16)], events: &[Event<'_>]) -> Vec<u8> {
        let mut body = SPEC_ID_SIGNATURE.to_vec();
        body.extend([0, 0, 0, 0, 0, 2, 0, 2]);
        body.extend((algs.len() as u32).to_le_bytes());
        for (a, s) in algs {
            body.extend(a.to_le_bytes());
            body.extend(s.to_le_bytes());
        }
        body.push(0);
        let mut l = vec![0u8; 4];
        l.extend(EV_NO_ACTION.to_le_bytes());
        l.extend([0u8; 20]);
        l.extend((body.len() as u32).to_le_bytes());
        l.extend(body);
        for (mr, ty, digests, data) in events {
            l.extend(mr.to_le_bytes());
            l.extend(ty.to_le_bytes());
            l.extend((digests.len() as u32).to_le_bytes());
            for (a, d) in digests {
                l.extend(a.to_le_bytes());
                l.extend(d);
            }
            l.extend((data.len() as u32).to_le_bytes());
            l.extend(*data);
        }
        l
    }

    fn extend(rtmr: [u8; 48], digest: &[u8]) -> [u8; 48] {
        Sha384::new().chain_update(rtmr).chain_update(digest).finalize().into()
    }

    #[test]
    fn events_replay_into_the_rtmr_their_mr_index_names() {
        let (a, b) = ([1u8; 48], [2u8; 48]);
        let mut area = log(
            &[(TPM_ALG_SHA384, 48)],
            &[
                (4, 0xc, vec![(TPM_ALG_SHA384, a.to_vec())], b"first"),
                (1, 0xd, vec![(TPM_ALG_SHA384, b.to_vec())], b""),
                (4, 0xc, vec![(TPM_ALG_SHA384, b.to_vec())], b"third"),
            ],
        );
        let used = area.len();
        area.resize(0x1000, 0);
        let parsed = EventLog::parse(&area).unwrap();
        assert_eq!(parsed.len, used);
        assert_eq!(parsed.events.len(), 3);
        assert_eq!(parsed.events[0].data, b"first");
        let rtmrs = parsed.replay().unwrap();
        assert_eq!(rtmrs[0], extend([0; 48], &b));
        assert_eq!(rtmrs[3], extend(extend([0; 48], &a), &b));
        assert_eq!((rtmrs[1], rtmrs[2]), ([0; 48], [0; 48]));
    }

    #[test]
    fn a_sha256_digest_beside_the_sha384_one_is_skipped() {
        let area = log(
            &[(0x000b, 32), (TPM_ALG_SHA384, 48)],
            &[(2, 0xc, vec![(0x000b, vec![9; 32]), (TPM_ALG_SHA384, vec![7; 48])], b"x")],
        );
        let parsed = EventLog::parse(&area).unwrap();
        assert_eq!(parsed.events[0].digest, [7; 48]);
        assert_eq!(parsed.replay().unwrap()[1], extend([0; 48], &[7; 48]));
    }

    #[test]
    fn malformed_logs_are_rejected_with_where_and_why() {
        let ok = log(&[(TPM_ALG_SHA384, 48)], &[(4, 0xc, vec![(TPM_ALG_SHA384, vec![1; 48])], b"data")]);
        // Cut inside the last event's data.
        let cut = &ok[..ok.len() - 2];
        assert!(matches!(EventLog::parse(cut), Err(CcelError::Truncated { what: "the event data", need: 2, .. })));
        // No Spec ID event.
        assert!(matches!(EventLog::parse(&ok[32..]), Err(CcelError::NoSpecId(_))));
        assert!(EventLog::parse(&[]).is_err());
        // A Spec ID without SHA-384.
        assert_eq!(EventLog::parse(&log(&[(0x000b, 32)], &[])), Err(CcelError::NoSha384));
        // A digest of an algorithm not listed.
        let odd = log(&[(TPM_ALG_SHA384, 48)], &[(4, 0xc, vec![(0x0012, vec![0; 48])], b"")]);
        assert!(matches!(EventLog::parse(&odd), Err(CcelError::UnknownAlgorithm { alg: 0x12, .. })));
        // An event for MRTD (index 0 with a non-zero type) or beyond RTMR3.
        for index in [0, 5] {
            let bad = log(&[(TPM_ALG_SHA384, 48)], &[(index, 0xc, vec![(TPM_ALG_SHA384, vec![0; 48])], b"")]);
            let parsed = EventLog::parse(&bad).unwrap();
            assert!(matches!(parsed.replay(), Err(CcelError::BadMrIndex { index: i, .. }) if i == index));
        }
        // A huge event size does not allocate or panic.
        let mut huge = ok.clone();
        let at = huge.len() - 4 - 4;
        huge[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(EventLog::parse(&huge), Err(CcelError::Truncated { .. })));
    }
}
