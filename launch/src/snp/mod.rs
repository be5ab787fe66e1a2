//! SEV-SNP: what the real KVM launch and the emulated SNP platform share, and each of
//! them.
//!
//! - Formats defined by the SNP firmware ABI and the GHCB specification (attestation
//!   report, guest messages, secrets page, CPUID page, ID block).
//! - The real launch through the upstream KVM ABI (`KVM_X86_SNP_VM`, `KVM_SEV_INIT2`,
//!   `SNP_LAUNCH_*`).
//! - The emulated platform: the PSP's and KVM's part, done in software for hosts
//!   without SNP hardware (`--tee snp --emulated`, never chosen silently).

pub mod certs;
pub mod cpuid_page;
pub mod emulated;
pub mod guest_msg;
pub mod id_block;
pub mod kvm;
pub mod policy;
pub mod psp;
pub mod real;
pub mod report;
pub mod secrets;
