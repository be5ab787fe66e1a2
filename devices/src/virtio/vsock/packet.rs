//! The virtio-vsock packet header (`struct virtio_vsock_hdr`, 44 bytes, little
//! endian): its layout, parsing, and the checks every guest header must pass.

/// Size of the header.
pub const HDR_LEN: usize = 44;
/// The host's CID (VMADDR_CID_HOST).
pub const HOST_CID: u64 = 2;
/// VIRTIO_VSOCK_TYPE_STREAM, the only socket type cvmm supports.
pub const TYPE_STREAM: u16 = 1;
/// Largest payload one packet may carry.
pub const MAX_PAYLOAD: u32 = 64 << 10;
/// SHUTDOWN flag: the sender will receive no more.
pub const SHUTDOWN_RCV: u32 = 1;
/// SHUTDOWN flag: the sender will send no more.
pub const SHUTDOWN_SEND: u32 = 2;

/// Packet operations (VIRTIO_VSOCK_OP_*).
pub mod op {
    /// Connection request.
    pub const REQUEST: u16 = 1;
    /// Connection accepted.
    pub const RESPONSE: u16 = 2;
    /// Connection refused or reset.
    pub const RST: u16 = 3;
    /// One or both directions closed.
    pub const SHUTDOWN: u16 = 4;
    /// Data.
    pub const RW: u16 = 5;
    /// Credit information, unprompted.
    pub const CREDIT_UPDATE: u16 = 6;
    /// Asks the peer for a CREDIT_UPDATE.
    pub const CREDIT_REQUEST: u16 = 7;
}

/// A decoded packet header.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Header {
    /// Source CID.
    pub src_cid: u64,
    /// Destination CID.
    pub dst_cid: u64,
    /// Source port.
    pub src_port: u32,
    /// Destination port.
    pub dst_port: u32,
    /// Payload length.
    pub len: u32,
    /// Socket type.
    pub kind: u16,
    /// Operation ([`op`]).
    pub op: u16,
    /// Operation flags (SHUTDOWN).
    pub flags: u32,
    /// The sender's receive buffer size.
    pub buf_alloc: u32,
    /// Bytes the sender has consumed from its receive buffer.
    pub fwd_cnt: u32,
}

/// Why a guest header was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HeaderError {
    /// Not a stream packet.
    #[error("socket type {0} is not STREAM")]
    Type(u16),
    /// The source is not the guest.
    #[error("source CID {got} is not the guest's ({want})")]
    SrcCid {
        /// In the header.
        got: u64,
        /// The guest's CID.
        want: u64,
    },
    /// The destination is not the host.
    #[error("destination CID {0} is not the host")]
    DstCid(u64),
    /// The payload length exceeds the chain or [`MAX_PAYLOAD`].
    #[error("payload length {len} exceeds the {available} bytes available (limit {MAX_PAYLOAD})")]
    Len {
        /// In the header.
        len: u32,
        /// Readable bytes after the header.
        available: usize,
    },
}

fn le_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    u64::from(le_u32(b, at)) | (u64::from(le_u32(b, at + 4)) << 32)
}

impl Header {
    /// Decodes a header (every bit pattern decodes; [`validate`](Self::validate) judges).
    pub fn from_bytes(b: &[u8; HDR_LEN]) -> Self {
        Self {
            src_cid: le_u64(b, 0),
            dst_cid: le_u64(b, 8),
            src_port: le_u32(b, 16),
            dst_port: le_u32(b, 20),
            len: le_u32(b, 24),
            kind: le_u16(b, 28),
            op: le_u16(b, 30),
            flags: le_u32(b, 32),
            buf_alloc: le_u32(b, 36),
            fwd_cnt: le_u32(b, 40),
        }
    }

    /// Encodes the header.
    pub fn to_bytes(&self) -> [u8; HDR_LEN] {
        let mut b = [0u8; HDR_LEN];
        b[0..8].copy_from_slice(&self.src_cid.to_le_bytes());
        b[8..16].copy_from_slice(&self.dst_cid.to_le_bytes());
        b[16..20].copy_from_slice(&self.src_port.to_le_bytes());
        b[20..24].copy_from_slice(&self.dst_port.to_le_bytes());
        b[24..28].copy_from_slice(&self.len.to_le_bytes());
        b[28..30].copy_from_slice(&self.kind.to_le_bytes());
        b[30..32].copy_from_slice(&self.op.to_le_bytes());
        b[32..36].copy_from_slice(&self.flags.to_le_bytes());
        b[36..40].copy_from_slice(&self.buf_alloc.to_le_bytes());
        b[40..44].copy_from_slice(&self.fwd_cnt.to_le_bytes());
        b
    }

    /// Checks a header the guest sent: a stream packet from `guest_cid` to the host
    /// whose payload fits in the `available` bytes that follow it and in [`MAX_PAYLOAD`].
    pub fn validate(&self, guest_cid: u64, available: usize) -> Result<(), HeaderError> {
        if self.kind != TYPE_STREAM {
            return Err(HeaderError::Type(self.kind));
        }
        if self.src_cid != guest_cid {
            return Err(HeaderError::SrcCid { got: self.src_cid, want: guest_cid });
        }
        if self.dst_cid != HOST_CID {
            return Err(HeaderError::DstCid(self.dst_cid));
        }
        if self.len > MAX_PAYLOAD || self.len as usize > available {
            return Err(HeaderError::Len { len: self.len, available });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> Header {
        Header { src_cid: 3, dst_cid: HOST_CID, kind: TYPE_STREAM, op: op::RW, len: 10, ..Default::default() }
    }

    #[test]
    fn headers_round_trip_in_the_kernel_layout() {
        let h = Header {
            src_cid: 0x0102_0304_0506_0708,
            dst_cid: 2,
            src_port: 0x1111_2222,
            dst_port: 0x3333_4444,
            len: 5,
            kind: 1,
            op: 5,
            flags: 3,
            buf_alloc: 0x1_0000,
            fwd_cnt: 77,
        };
        let b = h.to_bytes();
        assert_eq!(&b[0..8], &[8, 7, 6, 5, 4, 3, 2, 1]);
        assert_eq!(&b[28..32], &[1, 0, 5, 0], "type then op at offset 28");
        assert_eq!(&b[40..44], &77u32.to_le_bytes(), "fwd_cnt last");
        assert_eq!(Header::from_bytes(&b), h);
    }

    #[test]
    fn a_well_formed_header_passes() {
        assert_eq!(good().validate(3, 10), Ok(()));
    }

    #[test]
    fn each_bad_field_is_refused() {
        assert_eq!(Header { kind: 2, ..good() }.validate(3, 10), Err(HeaderError::Type(2)));
        assert_eq!(Header { src_cid: 4, ..good() }.validate(3, 10), Err(HeaderError::SrcCid { got: 4, want: 3 }));
        assert_eq!(Header { dst_cid: 3, ..good() }.validate(3, 10), Err(HeaderError::DstCid(3)));
        assert!(matches!(good().validate(3, 9), Err(HeaderError::Len { .. })));
        let huge = Header { len: MAX_PAYLOAD + 1, ..good() };
        assert!(matches!(huge.validate(3, usize::MAX), Err(HeaderError::Len { .. })));
    }
}
