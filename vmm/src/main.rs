//! `cvmm`: the command line over the `vmm` library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use vmm::{KernelSource, VmConfig};

#[derive(Parser, Debug)]
#[command(name = "cvmm", version, about = "A minimal KVM VMM for confidential guests")]
struct Cli {
    /// Log level: error, warn, info, debug or trace.
    #[arg(long, global = true, default_value = "warn")]
    log_level: log::LevelFilter,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Boot a guest and run it until it ends; exits with the guest's status.
    Run(RunArgs),
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// Kernel image: 64-bit ELF (PVH note or 64-bit entry) or bzImage. Without it,
    /// the bundled demo guest boots.
    #[arg(long)]
    kernel: Option<PathBuf>,
    /// Initial ramdisk.
    #[arg(long, requires = "kernel")]
    initrd: Option<PathBuf>,
    /// Kernel command line (default "console=ttyS0" with --kernel).
    #[arg(long)]
    cmdline: Option<String>,
    /// Guest memory, e.g. 256M or 2G.
    #[arg(long, default_value = "256M", value_parser = parse_memory)]
    memory: u64,
    /// Number of vCPUs.
    #[arg(long, default_value_t = 1)]
    vcpus: u32,
    /// End the VM (exit status 1) if the guest runs longer than this many seconds.
    #[arg(long, value_parser = parse_seconds)]
    timeout: Option<Duration>,
    /// KVM device node.
    #[arg(long, default_value = "/dev/kvm")]
    kvm_device: PathBuf,
    /// Print launch-step timings and memory use to stderr when the VM ends.
    #[arg(long)]
    stats: bool,
}

fn parse_memory(s: &str) -> Result<u64, String> {
    arch::layout::parse_size(s)
}

fn parse_seconds(s: &str) -> Result<Duration, String> {
    let secs: f64 = s.parse().map_err(|_| format!("'{s}' is not a number of seconds"))?;
    if !(secs > 0.0 && secs.is_finite()) {
        return Err(format!("'{s}' is not a positive number of seconds"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    env_logger::Builder::new().filter_level(cli.log_level).format_timestamp_micros().init();
    match cli.command {
        Command::Run(args) => run(args),
    }
}

fn run(args: RunArgs) -> ExitCode {
    let config = VmConfig {
        memory: args.memory,
        vcpus: args.vcpus,
        kernel: args.kernel.map_or(KernelSource::Demo, KernelSource::File),
        initrd: args.initrd,
        cmdline: args.cmdline,
        kvm_device: args.kvm_device,
        timeout: args.timeout,
    };
    let mut vm = match vmm::build_vm(&config, Box::new(std::io::stdout())) {
        Ok(vm) => vm,
        Err(e) => return fail(&e),
    };
    log::info!("launched with {}", vm.backend_name());
    let exit = match vm.run() {
        Ok(exit) => exit,
        Err(e) => return fail(&e),
    };
    if args.stats {
        print_stats(&vm);
    }
    if !exit.is_guest_requested() {
        eprintln!("cvmm: {exit}");
    } else {
        log::info!("{exit}");
    }
    ExitCode::from(exit.exit_status() as u8)
}

fn print_stats(vm: &vmm::Vm) {
    for (step, d) in vm.launch_steps() {
        eprintln!("stats: step {:<32} {:>9.3} ms", step, d.as_secs_f64() * 1e3);
    }
    let peak = vmm::stats::peak_rss_kib().unwrap_or(0);
    let guest = vmm::stats::guest_resident_kib(vm.guest_memory());
    eprintln!("stats: peak_rss_kib={peak} guest_resident_kib={guest} vmm_overhead_kib={}", peak.saturating_sub(guest));
}

fn fail(e: &dyn std::error::Error) -> ExitCode {
    let mut msg = format!("cvmm: error: {e}");
    let mut source = e.source();
    // Append causes not already in the message.
    while let Some(s) = source {
        let text = s.to_string();
        if !msg.contains(&text) {
            msg.push_str(&format!(": {text}"));
        }
        source = s.source();
    }
    eprintln!("{msg}");
    ExitCode::FAILURE
}
