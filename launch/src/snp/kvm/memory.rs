//! SNP guest memory on KVM: one guest_memfd per RAM region as the private side, the
//! ordinary mapping as the shared side, and the conversions between them that the
//! guest asks for at run time (`KVM_HC_MAP_GPA_RANGE` hypercall exits, which is how KVM
//! forwards an SNP guest's Page State Change requests, and `KVM_EXIT_MEMORY_FAULT`).
//!
//! None of it is SNP-specific: it is [`crate::private_memory`], which the TDX launch
//! uses too, under the names the SNP launch has always had.

pub use crate::private_memory::{
    hypercall_ret, Conversion, ConversionError, GuestRange, PrivateMemory, PrivateMemoryError, HYPERCALL_RET_EINVAL,
    PAGE_SIZE,
};

/// Guest RAM of an SNP VM ([`PrivateMemory`]).
pub type SnpMemory = PrivateMemory;

/// Errors from setting up SNP memory or converting it ([`PrivateMemoryError`]).
pub type SnpMemoryError = PrivateMemoryError;
