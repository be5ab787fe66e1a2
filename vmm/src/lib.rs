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
//! - [`acpi`]: the ACPI tables (MADT, CCEL) in confidential launch plans.
//! - [`measure`]: the launch measurement of a configuration (`cvmm measure`).
//! - [`msr`]: the MSR access the emulated platforms' exit handlers forward guest requests to.
//! - [`seccomp`]: the seccomp allow-lists of the vCPU, device-loop and main threads.
//! - [`host_check`]: whether this host can launch SEV-SNP or TDX guests (`cvmm host-check`).
//! - [`verify`]: `cvmm verify`, checking attestation evidence as a relying party.
//!
//! The `cvmm` binary (`src/main.rs`) is a thin command line over this library.
#![deny(missing_docs)]

pub mod acpi;
pub mod api;
pub mod builder;
pub mod config;
pub mod config_file;
mod conversions;
pub mod device_loop;
pub mod handle;
pub mod host_check;
pub mod irq;
pub mod launch_log;
pub mod measure;
pub mod msr;
pub mod pause;
pub mod quote_thread;
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

/// An error and its causes, each once: "a: b: c" (a cause whose text the message
/// already holds, as many errors repeat their source's, is left out).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
        source = s.source();
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error with a message and an optional source.
    #[derive(Debug)]
    struct E(&'static str, Option<Box<E>>);

    impl std::fmt::Display for E {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for E {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|e| e as _)
        }
    }

    #[test]
    fn error_chain_appends_each_cause_once() {
        let root = E("permission denied", None);
        let repeats = E("cannot open /dev/kvm: permission denied", Some(Box::new(root)));
        let top = E("cannot create the VM", Some(Box::new(repeats)));

        assert_eq!(error_chain(&top), "cannot create the VM: cannot open /dev/kvm: permission denied");
        assert_eq!(error_chain(&E("alone", None)), "alone");
    }
}
