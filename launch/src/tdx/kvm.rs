//! The real TDX launch through the upstream KVM ABI (Linux >= 6.16).

pub mod exits;
pub mod ioctl;
pub mod options;
pub mod probe;
pub mod quote;
pub mod uapi;
