//! SEV-SNP launch plans (owned by the SNP measurement work; placeholder until then).

/// The initial register state of an SNP vCPU (placeholder until the SNP plan lands).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnpVcpu;
