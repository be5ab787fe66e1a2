//! The TDX MRTD and RTMRs (placeholder until the TDX measurement lands).
