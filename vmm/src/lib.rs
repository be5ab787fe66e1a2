//! `vmm`: turns a [`config::VmConfig`] into a running VM and runs it to its end.
//!
//! - [`config`]: what a VM is made of, validated before anything is created;
//!   [`config_file`]: its JSON form.
//! - [`builder`]: the straight-line chain of steps from configuration to a VM ready
//!   to run ([`builder::build_vm`]).
//! - [`vm`]: the built VM; [`vm::Vm::run`] starts one thread per vCPU, waits for the
//!   guest (or the watchdog) to end it, and tears everything down.
//! - [`handle`]: a [`VmHandle`] to start a VM, pause, resume and shut it down, wait for
//!   its end and query its state, for programs that embed cvmm; several VMs may run in
//!   one process.
//! - [`api`]: the HTTP API over a Unix socket (`cvmm serve`, `cvmm run --api-socket`),
//!   driving a [`VmHandle`].
//! - [`vcpu`]: the vCPU run loop, exit dispatch, and the kick that interrupts KVM_RUN;
//!   [`pause`]: the gate where paused vCPU threads park.
//! - [`device_loop`]: the thread that runs the virtio devices (event-manager).
//! - [`irq`]: the KVM side of the user-space IOAPIC's MSI routes.
//! - [`launch_log`]: a launch plan as JSON lines, for auditors.
//! - [`measure`]: the launch measurement of a configuration (`cvmm measure`).
//! - [`msr`]: the MSR access the emulated platforms' exit handlers forward guest requests to.
//! - [`seccomp`]: the seccomp allow-lists of the vCPU, device-loop and main threads.
//! - [`host_check`]: whether this host can launch SEV-SNP or TDX guests (`cvmm host-check`).
//! - [`verify`]: `cvmm verify`, checking attestation evidence as a relying party.
//!
//! The `cvmm` binary (`src/main.rs`) is a thin command line over this library.
#![deny(missing_docs)]

pub mod api;
pub mod builder;
pub mod config;
pub mod config_file;
pub mod device_loop;
pub mod handle;
pub mod host_check;
pub mod irq;
pub mod launch_log;
pub mod measure;
pub mod msr;
pub mod pause;
pub mod seccomp;
pub mod snp;
pub mod snp_launch;
pub mod snp_real;
pub mod stats;
pub mod tdx;
pub mod tdx_real;
pub mod vcpu;
pub mod verify;
pub mod vm;

pub use builder::{build_vm, snp_measurement, tdx_measurement, BuildError};
pub use config::{ConfigError, KernelSource, SnpConfig, TdxConfig, Tee, VmConfig};
pub use handle::{ControlError, VmHandle, VmInfo, VmState};
pub use vm::{LaunchInfo, RunError, Vm, VmExit};
