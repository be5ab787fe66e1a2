//! The SEV-SNP launch digest (placeholder until the SNP measurement lands).
