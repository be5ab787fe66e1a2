//! `cvmm`: the command line over the `vmm` library.

use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

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
    MAIN_START.get_or_init(Instant::now);
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
    // The guest's console goes straight to fd 1, unbuffered: each byte the guest
    // transmits is visible at once, as on a real serial line.
    let console: Box<dyn std::io::Write + Send> = match std::io::stdout().as_fd().try_clone_to_owned() {
        Ok(fd) => Box::new(FirstOutput(std::fs::File::from(fd))),
        Err(e) => return fail(&e),
    };
    let mut vm = match vmm::build_vm(&config, console) {
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

/// When `main` started, and when the guest first wrote to the console.
static MAIN_START: OnceLock<Instant> = OnceLock::new();
static FIRST_OUTPUT: OnceLock<Instant> = OnceLock::new();

/// A console writer that notes the time of the guest's first output.
struct FirstOutput(std::fs::File);

impl std::io::Write for FirstOutput {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        FIRST_OUTPUT.get_or_init(Instant::now);
        self.0.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

fn since_main_ms(t: Option<&Instant>) -> f64 {
    match (MAIN_START.get(), t) {
        (Some(start), Some(t)) => (*t - *start).as_secs_f64() * 1e3,
        _ => f64::NAN,
    }
}

fn print_stats(vm: &vmm::Vm) {
    eprintln!(
        "stats: main_to_first_output_ms={:.3} main_to_exit_ms={:.3}",
        since_main_ms(FIRST_OUTPUT.get()),
        since_main_ms(Some(&Instant::now()))
    );
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
