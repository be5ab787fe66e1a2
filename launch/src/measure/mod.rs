//! Launch measurement calculators: pure functions of a [`crate::plan::LaunchPlan`].
//!
//! - [`snp`]: the SEV-SNP launch digest (the PAGE_INFO chain, SHA-384).
//! - [`tdx`]: the TDX MRTD (TDH.MEM.PAGE.ADD / TDH.MR.EXTEND, SHA-384) and RTMR
//!   extension.

pub mod snp;
pub mod tdx;
