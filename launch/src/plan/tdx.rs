//! TDX launch plans (owned by the TDX measurement work; placeholder until then).
