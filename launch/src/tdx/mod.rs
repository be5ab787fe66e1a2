//! Intel TDX: what the real KVM launch and the emulated TDX platform share, and each
//! of them.
//!
//! - Formats defined by the TDX module ABI and Intel's DCAP (TD report, quote, TD HOB),
//!   and the CC event log a TD publishes in its ACPI CCEL table ([`ccel`]).
//! - The real launch through the upstream KVM ABI (`KVM_X86_TDX_VM`, `KVM_TDX_*`).
//! - The emulated platform: the TDX module's and KVM's part, done in software for
//!   hosts without TDX (`--tee tdx --emulated`, never chosen silently).

pub mod ccel;
pub mod certs;
pub mod emulated;
pub mod hob;
pub mod kvm;
pub mod quote;
pub mod real;
pub mod report;
