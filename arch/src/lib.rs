//! `arch`: the x86_64 guest layout and boot state of a cvmm VM.
//!
//! This crate owns *data*, never ioctls: the guest-physical memory map and its e820
//! table ([`layout`]), the boot GDT ([`gdt`]), identity page tables ([`paging`]), the
//! initial vCPU registers for each entry protocol ([`regs`]), the CPUID table a guest
//! is given ([`cpuid`]), the Linux zero page and PVH start info ([`boot`]), and the
//! boot-information block cvmm's own guests read ([`abi`]), and the GHCB ABI
//! SEV-SNP guests and the VMM share ([`ghcb`]), and the ACPI tables of confidential
//! guests ([`acpi`]).
//!
//! Everything here is a pure function of a configuration, so the same values can be
//! handed to plain KVM, to a confidential launch, or to a measurement calculator.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod abi;
pub mod acpi;
pub mod boot;
pub mod cpuid;
pub mod gdt;
pub mod ghcb;
pub mod layout;
pub mod mptable;
pub mod paging;
pub mod regs;
pub mod tdcall;
