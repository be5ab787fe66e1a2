//! The real SEV-SNP launch through the upstream KVM ABI (Linux >= 6.11).

pub mod ioctl;
pub mod memory;
pub mod probe;
pub mod uapi;
pub mod vcpu;
