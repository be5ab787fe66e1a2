//! `cvmm`: the command line over the `vmm` library.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
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
    /// Print the launch measurement (SNP launch digest or TDX MRTD) a firmware and
    /// configuration produce; the value is alone on the last line of stdout.
    Measure(MeasureArgs),
    /// Export the emulated SEV-SNP platform's AMD-style certificate chain (ARK, ASK,
    /// VCEK; generated once per installation and cached) for relying parties.
    SnpCerts(CertsArgs),
    /// Export the emulated TDX platform's Intel-style certificate chain (root, PCK
    /// platform CA, PCK; generated once per installation and cached) and collateral
    /// (collateral.json: TCB info, QE identity, CRLs, valid for 30 days) for relying
    /// parties.
    TdxCerts(CertsArgs),
    /// Serve the HTTP API on a Unix socket (docs/api.md): VMs are created, booted,
    /// paused, resumed and shut down through it; their consoles go to stdout.
    Serve(ServeArgs),
    /// Check whether this host can launch SEV-SNP or TDX guests: one line per requirement
    /// (PASS, WARN or FAIL with the evidence), then a verdict per platform. Exits 0 when
    /// the platform asked for with --tee (and --emulated) is ready; without --tee, 0.
    HostCheck(HostCheckArgs),
    /// Check attestation evidence (an SEV-SNP report or a TDX quote) as a relying
    /// party: signatures and certificate chain up to the vendor's root, then what is
    /// expected of the guest. One PASS/FAIL line per check; exit status 0 when all
    /// pass, 1 when one fails, 2 when the inputs cannot be read (docs/verify.md).
    Verify(Box<VerifyArgs>),
}

#[derive(clap::Args, Debug)]
struct HostCheckArgs {
    /// Exit 0 only if this TEE can launch guests here: snp or tdx.
    #[arg(long, value_name = "snp|tdx", value_parser = parse_tee)]
    tee: Option<vmm::measure::Tee>,
    /// With --tee: ask about cvmm's emulated platform for that TEE instead of the hardware.
    #[arg(long, requires = "tee")]
    emulated: bool,
    /// KVM device node.
    #[arg(long, default_value = "/dev/kvm")]
    kvm_device: PathBuf,
    /// SEV firmware device (QEMU's sev-device).
    #[arg(long, default_value = "/dev/sev")]
    sev_device: PathBuf,
}

/// `cvmm host-check`: the report on stdout; the exit status answers --tee.
fn host_check(args: HostCheckArgs) -> ExitCode {
    let opts = vmm::host_check::HostCheckOptions { kvm_device: args.kvm_device, sev_device: args.sev_device };
    let report = vmm::host_check::check_host(&opts);
    print!("{report}");
    match args.tee {
        None => ExitCode::SUCCESS,
        Some(tee) => match report.verdict(tee, args.emulated) {
            Some(v) if v.ready() => ExitCode::SUCCESS,
            _ => ExitCode::FAILURE,
        },
    }
}

#[derive(clap::Args, Debug)]
struct ServeArgs {
    /// The Unix socket to serve the API on (created with mode 0600, removed on exit).
    #[arg(long, value_name = "PATH")]
    api_socket: PathBuf,
}

#[derive(clap::Args, Debug)]
struct CertsArgs {
    /// Directory to write the chain into: for SNP ark.pem, ask.pem, vcek.pem and
    /// cert_chain.pem (ASK then ARK); for TDX root.pem, pck_chain.pem, pck.pem and
    /// tcb_signing_chain.pem.
    #[arg(long, value_name = "DIR")]
    export: PathBuf,
}

/// `cvmm snp-certs` and `cvmm tdx-certs`: loads the emulated platform's chain (creating
/// and caching it the first time), has `export` write it (and whatever else the relying
/// party needs) into `--export`, and prints that directory.
fn export_certs<C, E: std::error::Error>(
    args: CertsArgs,
    load_or_create: impl FnOnce() -> Result<C, E>,
    export: impl FnOnce(&C, &Path) -> Result<(), Box<dyn std::error::Error>>,
) -> ExitCode {
    let chain = match load_or_create() {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    if let Err(e) = std::fs::create_dir_all(&args.export) {
        return fail(&std::io::Error::new(e.kind(), format!("cannot create {}: {e}", args.export.display())));
    }
    match export(&chain, &args.export) {
        Ok(()) => {
            println!("{}", args.export.display());
            ExitCode::SUCCESS
        }
        Err(e) => fail(e.as_ref()),
    }
}

/// The emulated TDX platform's chain, and its collateral (TCB info, QE identity, CRLs)
/// so that `cvmm verify --collateral` can run a complete DCAP verification of the
/// emulated platform's quotes.
fn export_tdx_certs(
    chain: &launch::tdx::certs::EmulatedIntelChain,
    dir: &Path,
) -> Result<(), Box<dyn std::error::Error>> {
    use launch::tdx::quote::collateral::{collateral, fmspc};
    chain.export(dir)?;
    let json = serde_json::to_string_pretty(&collateral(chain, &fmspc(chain))?)?;
    let path = dir.join("collateral.json");
    std::fs::write(&path, json)
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot write {}: {e}", path.display())))?;
    Ok(())
}

#[derive(clap::Args, Debug)]
struct MeasureArgs {
    /// The arguments of the `cvmm run` to measure (with --tee snp or tdx). Without
    /// --firmware, the measurement is that of cvmm's own direct boot of that
    /// configuration; with it, that of the firmware image's launch.
    #[command(flatten)]
    run: RunArgs,
    /// Firmware image (an OVMF.fd with SEV/TDX metadata).
    #[arg(long, alias = "ovmf")]
    firmware: Option<PathBuf>,
    /// SNP vCPU type, as sev-snp-measure names them: EPYC-v4, EPYC-Milan, EPYC-Genoa, EPYC-Turin, ...
    #[arg(long)]
    vcpu_type: Option<String>,
    /// SNP guest features: the VMSA's SEV_FEATURES (hex with 0x, or decimal).
    #[arg(long, default_value = "0x1", value_parser = parse_u64)]
    guest_features: u64,
    /// SNP: whose launch conventions to follow: qemu (default), ec2 or gce.
    #[arg(long)]
    vmm_type: Option<String>,
    /// Print every value as one JSON object instead of the bare measurement.
    #[arg(long)]
    json: bool,
    /// Write the plan as it is measured to this file, one JSON line per range.
    #[arg(long)]
    launch_log: Option<PathBuf>,
}

impl MeasureArgs {
    /// What `cvmm measure --firmware` measures: the launch of `firmware` for `tee` with
    /// these run arguments; `firmware_hashes` and `launch_log` as the caller reports.
    fn firmware_options(
        &self,
        tee: vmm::measure::Tee,
        firmware: PathBuf,
        firmware_hashes: bool,
        launch_log: bool,
    ) -> vmm::measure::MeasureOptions {
        vmm::measure::MeasureOptions {
            tee,
            firmware,
            vcpus: self.run.vcpus,
            vcpu_type: self.vcpu_type.clone(),
            vmm_type: self.vmm_type.clone(),
            guest_features: self.guest_features,
            kernel: self.run.kernel.clone(),
            initrd: self.run.initrd.clone(),
            cmdline: self.run.cmdline.clone(),
            firmware_hashes,
            launch_log,
        }
    }
}

fn parse_tee(s: &str) -> Result<vmm::measure::Tee, String> {
    match s.to_ascii_lowercase().as_str() {
        "snp" | "sev-snp" => Ok(vmm::measure::Tee::Snp),
        "tdx" => Ok(vmm::measure::Tee::Tdx),
        _ => Err(format!("'{s}' is not a TEE cvmm measures (snp or tdx)")),
    }
}

fn parse_u64(s: &str) -> Result<u64, String> {
    let r = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => s.parse(),
    };
    r.map_err(|_| format!("'{s}' is not a number"))
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
    /// Read the VM's configuration from this JSON file (docs: vmm/src/config_file.rs);
    /// flags given as well override its fields.
    #[arg(long, value_name = "vm.json")]
    config: Option<PathBuf>,
    /// Print the effective configuration as JSON and exit without running.
    #[arg(long)]
    print_config: bool,
    /// Give the guest a virtio-rng device (entropy from the host's getrandom).
    #[arg(long)]
    rng: bool,
    /// Guest memory: dump (default: in core dumps), dontdump (MADV_DONTDUMP) or lock (mlock).
    #[arg(long, default_value = "dump", value_name = "dump|dontdump|lock")]
    guest_memory: vmm::config::GuestMemoryPolicy,
    /// Give the guest a virtio-console on stdout (the 16550 stays for early output).
    #[arg(long)]
    console: bool,
    /// A virtio-blk disk backed by a raw image: PATH[,ro]. Repeatable.
    #[arg(long, value_name = "PATH[,ro]")]
    disk: Vec<vmm::config::DiskConfig>,
    /// A virtio-net card: tap=NAME, socket=PATH (a Unix datagram socket, one frame per
    /// datagram) or file=PATH[,rx=RXPATH] (tx appended to PATH as 4-byte little-endian
    /// length-prefixed records; rx read from RXPATH, default PATH.rx if it exists) or
    /// ring=PATH[,size=N] (two shared-memory rings of such records in PATH, N data bytes
    /// each, default 4M; doorbell FIFO PATH.kick; docs/devices.md).
    #[arg(long, value_name = "tap=NAME|socket=PATH|file=PATH|ring=PATH")]
    net: Option<vmm::config::NetConfig>,
    /// A virtio-vsock device: cid=N,socket=PATH (a guest connection to port P reaches the Unix socket PATH_P).
    #[arg(long, value_name = "cid=N,socket=PATH")]
    vsock: Option<vmm::config::VsockConfig>,
    /// Run without the seccomp filters that confine cvmm's threads (for debugging only).
    #[arg(long)]
    no_seccomp: bool,
    /// Launch a confidential guest: snp (AMD SEV-SNP). Needs SNP hardware, or --emulated.
    #[arg(long, value_name = "snp")]
    tee: Option<String>,
    /// Run the confidential guest on cvmm's software-emulated platform (never chosen
    /// silently: without this flag, --tee needs the hardware).
    #[arg(long, requires = "tee")]
    emulated: bool,
    /// TEE launch options with QEMU's sev-snp-guest names and value formats:
    /// policy=0x30000,host-data=BASE64.
    #[arg(long, requires = "tee", value_name = "KEY=VALUE,...")]
    tee_options: Option<String>,
    /// Also serve the HTTP API (docs/api.md) on this Unix socket while the VM runs, to
    /// query, pause, resume or shut it down.
    #[arg(long, value_name = "PATH")]
    api_socket: Option<PathBuf>,
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
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    env_logger::Builder::new().filter_level(cli.log_level).format_timestamp_micros().init();
    match cli.command {
        Command::Run(args) => {
            let sub = matches.subcommand_matches("run").expect("the run subcommand was parsed");
            run(args, sub)
        }
        Command::SnpCerts(args) => {
            use launch::snp::certs::EmulatedAmdChain;
            export_certs(args, EmulatedAmdChain::load_or_create_default, |chain, dir| Ok(chain.export(dir)?))
        }
        Command::TdxCerts(args) => {
            use launch::tdx::certs::EmulatedIntelChain;
            export_certs(args, EmulatedIntelChain::load_or_create_default, export_tdx_certs)
        }
        Command::Measure(args) => {
            let sub = matches.subcommand_matches("measure").expect("the measure subcommand was parsed");
            measure(args, sub)
        }
        Command::Serve(args) => serve(&args.api_socket),
        Command::HostCheck(args) => host_check(args),
        Command::Verify(args) => verify(*args),
    }
}

/// A writer to this process's stdout (fd 1, unbuffered), noting the first output.
fn stdout_console() -> std::io::Result<Box<dyn std::io::Write + Send>> {
    let fd = std::io::stdout().as_fd().try_clone_to_owned()?;
    Ok(Box::new(FirstOutput(std::fs::File::from(fd))))
}

/// The consoles of VMs created through the API: stdout.
fn api_consoles() -> vmm::api::ConsoleFactory {
    Box::new(|| match stdout_console() {
        Ok(c) => c,
        Err(e) => {
            log::warn!("cannot duplicate stdout for the console ({e}); the guest's output is dropped");
            Box::new(std::io::sink())
        }
    })
}

fn serve(path: &std::path::Path) -> ExitCode {
    let server = match vmm::api::ApiServer::bind(path, api_consoles()) {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    server.serve();
    ExitCode::SUCCESS
}

/// `cvmm run --api-socket`: runs the VM under a handle while the API serves it.
fn run_with_api(vm: vmm::Vm, config: VmConfig, path: &std::path::Path, stats: bool) -> ExitCode {
    let server = match vmm::api::ApiServer::bind(path, api_consoles()) {
        Ok(s) => std::sync::Arc::new(s),
        Err(e) => return fail(&e),
    };
    let handle = std::sync::Arc::new(vm.into_handle());
    server.attach(handle.clone(), config);
    let serving = server.clone();
    let api = match std::thread::Builder::new().name("api".into()).spawn(move || serving.serve()) {
        Ok(t) => t,
        Err(e) => return fail(&e),
    };
    let exit = handle.start().and_then(|()| handle.wait());
    server.stop();
    if api.join().is_err() {
        log::error!("the API thread panicked");
    }
    let exit = match exit {
        Ok(exit) => exit,
        Err(e) => return fail(&e),
    };
    if stats {
        print_times();
        print_step_stats(handle.launch_steps());
        // The VM's memory is gone with it: no guest residency here.
        eprintln!("stats: peak_rss_kib={}", vmm::stats::peak_rss_kib().unwrap_or(0));
    }
    report_exit(&exit)
}

fn measure(args: MeasureArgs, matches: &clap::ArgMatches) -> ExitCode {
    let tee = match args.run.tee.as_deref().map(parse_tee) {
        Some(Ok(t)) => t,
        Some(Err(e)) => return fail(&std::io::Error::other(e)),
        None => return fail(&std::io::Error::other("--tee is required: snp or tdx")),
    };
    let Some(firmware) = args.firmware.clone() else {
        return measure_direct_boot(args.run, matches, args.json, args.launch_log.as_deref());
    };
    let opts = args.firmware_options(tee, firmware, args.json, args.launch_log.is_some());
    let report = match vmm::measure::measure(&opts) {
        Ok(r) => r,
        Err(e) => return fail(&e),
    };
    if let Some(path) = &args.launch_log {
        let lines = vmm::launch_log::to_json_lines(&report.launch_log);
        if let Err(e) = std::fs::write(path, lines) {
            return fail(&std::io::Error::new(
                e.kind(),
                format!("cannot write the launch log {}: {e}", path.display()),
            ));
        }
    }
    if args.json {
        match serde_json::to_string_pretty(&report) {
            Ok(j) => println!("{j}"),
            Err(e) => return fail(&e),
        }
    } else {
        println!("{}", report.measurement());
    }
    ExitCode::SUCCESS
}

/// `cvmm measure --tee snp [run arguments]`: the launch digest of cvmm's own direct
/// boot of that configuration.
fn measure_direct_boot(
    run: RunArgs,
    matches: &clap::ArgMatches,
    json: bool,
    launch_log: Option<&std::path::Path>,
) -> ExitCode {
    let config = match effective_config(run, matches) {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    let is_tdx = matches!(config.tee, vmm::Tee::Tdx(_));
    let measured = if is_tdx { vmm::tdx_measurement(&config) } else { vmm::snp_measurement(&config) };
    let (plan, digest) = match measured {
        Ok(r) => r,
        Err(e) => return fail(&e),
    };
    if let Some(path) = launch_log {
        let log = if is_tdx { vmm::launch_log::log_entries(&plan, |_| None) } else { vmm::measure::snp_log(&plan) };
        let lines = vmm::launch_log::to_json_lines(&log);
        if let Err(e) = std::fs::write(path, lines) {
            return fail(&std::io::Error::new(
                e.kind(),
                format!("cannot write the launch log {}: {e}", path.display()),
            ));
        }
    }
    if json {
        let report = serde_json::json!({
            "tee": if is_tdx { "tdx" } else { "snp" },
            if is_tdx { "mrtd" } else { "digest" }: hex::encode(digest),
            "vcpus": config.vcpus,
            "plan_ranges": plan.ranges.len(),
            "tee_name": config.tee.name(),
        });
        println!("{report:#}");
    } else {
        println!("{}", hex::encode(digest));
    }
    ExitCode::SUCCESS
}

/// The configuration `cvmm run` describes: the `--config` file if given, with every
/// flag given on the command line overriding its field.
fn effective_config(args: RunArgs, matches: &clap::ArgMatches) -> Result<VmConfig, vmm::config_file::ConfigFileError> {
    let from_flags = VmConfig {
        memory: args.memory,
        vcpus: args.vcpus,
        kernel: args.kernel.map_or(KernelSource::Demo, KernelSource::File),
        initrd: args.initrd,
        cmdline: args.cmdline,
        kvm_device: args.kvm_device,
        timeout: args.timeout,
        rng: args.rng,
        console: args.console,
        disks: args.disk,
        net: args.net,
        vsock: args.vsock,
        guest_memory: args.guest_memory,
        seccomp: !args.no_seccomp,
        tee: tee_from_flags(args.tee.as_deref(), args.emulated, args.tee_options.as_deref())
            .map_err(|message| vmm::config_file::ConfigFileError::Field { field: "tee", message })?,
    };
    let Some(path) = &args.config else { return Ok(from_flags) };
    let mut config = VmConfig::from_json_file(path)?;
    let given = |id: &str| matches.value_source(id) == Some(clap::parser::ValueSource::CommandLine);
    if given("memory") {
        config.memory = from_flags.memory;
    }
    if given("vcpus") {
        config.vcpus = from_flags.vcpus;
    }
    if given("kernel") {
        config.kernel = from_flags.kernel;
    }
    if given("initrd") {
        config.initrd = from_flags.initrd;
    }
    if given("cmdline") {
        config.cmdline = from_flags.cmdline;
    }
    if given("kvm_device") {
        config.kvm_device = from_flags.kvm_device;
    }
    if given("timeout") {
        config.timeout = from_flags.timeout;
    }
    if given("rng") {
        config.rng = true;
    }
    if given("console") {
        config.console = true;
    }
    if given("disk") {
        config.disks = from_flags.disks;
    }
    if given("net") {
        config.net = from_flags.net;
    }
    if given("vsock") {
        config.vsock = from_flags.vsock;
    }
    if given("guest_memory") {
        config.guest_memory = from_flags.guest_memory;
    }
    if given("no_seccomp") {
        config.seccomp = false;
    }
    if given("tee") {
        config.tee = from_flags.tee;
    }
    Ok(config)
}

/// The TEE the flags describe.
fn tee_from_flags(tee: Option<&str>, emulated: bool, options: Option<&str>) -> Result<vmm::Tee, String> {
    match tee {
        None => Ok(vmm::Tee::None),
        Some("snp") => {
            let mut snp = vmm::SnpConfig { emulated, ..Default::default() };
            if let Some(o) = options {
                snp.apply_options(o)?;
            }
            Ok(vmm::Tee::Snp(snp))
        }
        Some("tdx") => {
            let mut tdx = vmm::TdxConfig::new(emulated);
            if let Some(o) = options {
                tdx.options = launch::tdx::kvm::options::TdxKvmOptions::parse(o).map_err(|e| e.to_string())?;
            }
            Ok(vmm::Tee::Tdx(tdx))
        }
        Some(other) => Err(format!("--tee {other}: cvmm knows snp and tdx")),
    }
}

fn run(args: RunArgs, matches: &clap::ArgMatches) -> ExitCode {
    let (print_config, stats, api_socket) = (args.print_config, args.stats, args.api_socket.clone());
    let config = match effective_config(args, matches) {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    if print_config {
        println!("{}", config.to_json());
        return ExitCode::SUCCESS;
    }
    // The guest's console goes straight to fd 1, unbuffered: each byte the guest
    // transmits is visible at once, as on a real serial line.
    let console = match stdout_console() {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    let mut vm = match vmm::build_vm(&config, console) {
        Ok(vm) => vm,
        Err(e) => return fail(&e),
    };
    if let Some(m) = vm.launch_measurement() {
        log::info!("{} launch measurement: {}", vm.backend_name(), hex::encode(m));
    }

    log::info!("launched with {}", vm.backend_name());
    if let Some(path) = &api_socket {
        return run_with_api(vm, config, path, stats);
    }
    let exit = match vm.run() {
        Ok(exit) => exit,
        Err(e) => return fail(&e),
    };
    if stats {
        print_stats(&vm);
    }
    report_exit(&exit)
}

/// Reports how the VM ended and returns `cvmm run`'s exit status.
fn report_exit(exit: &vmm::VmExit) -> ExitCode {
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

fn print_times() {
    eprintln!(
        "stats: main_to_first_output_ms={:.3} main_to_exit_ms={:.3}",
        since_main_ms(FIRST_OUTPUT.get()),
        since_main_ms(Some(&Instant::now()))
    );
}

fn print_stats(vm: &vmm::Vm) {
    print_times();
    print_step_stats(vm.launch_steps());
    let peak = vmm::stats::peak_rss_kib().unwrap_or(0);
    let guest = vmm::stats::guest_resident_kib(vm.guest_memory());
    eprintln!("stats: peak_rss_kib={peak} guest_resident_kib={guest} vmm_overhead_kib={}", peak.saturating_sub(guest));
}

fn print_step_stats(steps: &[(&'static str, Duration)]) {
    for (step, d) in steps {
        eprintln!("stats: step {:<32} {:>9.3} ms", step, d.as_secs_f64() * 1e3);
    }
}

fn fail(e: &dyn std::error::Error) -> ExitCode {
    eprintln!("cvmm: error: {}", vmm::error_chain(e));
    ExitCode::FAILURE
}

#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("evidence").required(true).args(["show", "report"])))]
struct VerifyArgs {
    /// Print every field of an SNP report or TDX quote (binary, or hex text) as JSON and exit.
    #[arg(long, value_name = "FILE")]
    show: Option<PathBuf>,
    /// The evidence to verify: an SNP attestation report or a TDX quote (binary, or hex text).
    #[arg(long, alias = "quote", value_name = "FILE")]
    report: Option<PathBuf>,
    /// SNP: a directory of AMD certificates: ark, ask, asvk, vcek, vlek (.pem/.der/.crt/.cer)
    /// and cert_chain.pem (what `cvmm snp-certs --export` and snpguest write).
    #[arg(long, value_name = "DIR")]
    certs: Option<PathBuf>,
    /// SNP: a certificate file (DER or PEM, one or more certificates), placed in the
    /// chain by its subject name. Repeatable.
    #[arg(long, value_name = "FILE")]
    cert: Vec<PathBuf>,
    /// SNP: the certificate table of an extended guest request (GUID table + DER certificates).
    #[arg(long, value_name = "FILE")]
    cert_table: Option<PathBuf>,
    /// The root certificate to trust (PEM or DER) instead of the vendor's: an ARK for
    /// SNP (e.g. the emulated platform's ark.pem), a root CA for TDX.
    #[arg(long, value_name = "FILE")]
    root: Option<PathBuf>,
    /// SNP: trust AMD's ARK for this product (milan, genoa, turin); without it (and
    /// without --root) the report's CPUID fields or the VCEK's product name choose.
    #[arg(long, value_name = "PRODUCT")]
    product: Option<String>,
    /// TDX: the collateral (TCB info, QE identity, CRLs and their issuer chains) as
    /// QuoteCollateralV3 JSON.
    #[arg(long, value_name = "FILE")]
    collateral: Option<PathBuf>,
    /// The time certificates and collateral must be valid at: YYYY-MM-DDTHH:MM:SSZ or
    /// seconds since 1970 (default: now).
    #[arg(long, value_name = "TIME")]
    now: Option<String>,
    /// Expectations from a JSON policy file (docs/verify.md); flags override its fields.
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
    /// Expected launch measurement (SNP) or MRTD (TDX), hex.
    #[arg(long, value_name = "HEX")]
    expect_measurement: Option<String>,
    /// Expect the measurement `cvmm measure` computes from the arguments after `--`
    /// (e.g. `-- --tee snp --emulated --memory 256M`).
    #[arg(long, requires = "measure_args", conflicts_with = "expect_measurement")]
    expect_measurement_of: bool,
    /// Expected REPORT_DATA (nonce), hex of up to 64 bytes, zero padded.
    #[arg(long, value_name = "HEX")]
    expect_report_data: Option<String>,
    /// SNP: expected HOST_DATA, hex or base64 of 32 bytes.
    #[arg(long, value_name = "HEX|BASE64")]
    expect_host_data: Option<String>,
    /// SNP: expected guest policy (exact), e.g. 0x30000.
    #[arg(long, value_name = "POLICY")]
    expect_policy: Option<String>,
    /// SNP: expected VMPL of the report.
    #[arg(long, value_name = "N")]
    expect_vmpl: Option<u32>,
    /// SNP: minimum REPORTED_TCB: bl=N,tee=N,snp=N,ucode=N[,fmc=N] or a TCB_VERSION (0x...).
    #[arg(long, value_name = "TCB")]
    min_tcb: Option<String>,
    /// TDX: expected RTMR N: N=HEX. Repeatable.
    #[arg(long, value_name = "N=HEX")]
    expect_rtmr: Vec<String>,
    /// TDX: expected MRCONFIGID, hex.
    #[arg(long, value_name = "HEX")]
    expect_mr_config_id: Option<String>,
    /// TDX: expected MROWNER, hex.
    #[arg(long, value_name = "HEX")]
    expect_mr_owner: Option<String>,
    /// TDX: expected MROWNERCONFIG, hex.
    #[arg(long, value_name = "HEX")]
    expect_mr_owner_config: Option<String>,
    /// TDX: minimum TEE_TCB_SVN (16 bytes of hex, compared byte by byte).
    #[arg(long, value_name = "HEX")]
    min_tee_tcb_svn: Option<String>,
    /// TDX: accept this TCB status besides UpToDate (e.g. SWHardeningNeeded). Repeatable.
    #[arg(long, value_name = "STATUS")]
    accept_tcb_status: Vec<String>,
    /// Accept a debuggable guest (SNP policy DEBUG, TDX attribute DEBUG).
    #[arg(long)]
    allow_debug: bool,
    /// Print the checks as one JSON object instead of lines.
    #[arg(long)]
    json: bool,
    /// The `cvmm measure` arguments for --expect-measurement-of.
    #[arg(last = true, value_name = "MEASURE ARGS")]
    measure_args: Vec<String>,
}

/// `cvmm verify`'s status when the inputs cannot be read (checks that fail give 1).
const VERIFY_INPUT_ERROR: u8 = 2;

fn verify_fail(e: &dyn std::error::Error) -> ExitCode {
    let _ = fail(e);
    ExitCode::from(VERIFY_INPUT_ERROR)
}

fn verify(args: VerifyArgs) -> ExitCode {
    if let Some(path) = &args.show {
        return match vmm::verify::read_evidence(path) {
            Ok(ev) => {
                println!("{:#}", ev.to_json());
                ExitCode::SUCCESS
            }
            Err(e) => verify_fail(&e),
        };
    }
    let Some(path) = &args.report else { return verify_fail(&std::io::Error::other("--report FILE is required")) };
    let evidence = match vmm::verify::read_evidence(path) {
        Ok(ev) => ev,
        Err(e) => return verify_fail(&e),
    };
    let expectations = match verify_expectations(&args) {
        Ok(e) => e,
        Err(e) => return verify_fail(e.as_ref()),
    };
    let now = match args.now.as_deref().map(launch::verify::parse_time).transpose() {
        Ok(n) => n,
        Err(e) => return verify_fail(&e),
    };
    let inputs = vmm::verify::VerifyInputs {
        certs_dir: args.certs,
        cert_files: args.cert,
        cert_table: args.cert_table,
        root: args.root,
        product: args.product,
        collateral: args.collateral,
        now,
    };
    let verdict = match vmm::verify::verify(&evidence, &inputs, &expectations) {
        Ok(v) => v,
        Err(e) => return verify_fail(&e),
    };
    if args.json {
        println!("{:#}", vmm::verify::verdict_json(&evidence, &verdict));
    } else {
        print!("{}", vmm::verify::verdict_text(&evidence, &verdict));
    }
    if verdict.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The expectations of `cvmm verify`: the policy file's, overridden by the flags.
fn verify_expectations(args: &VerifyArgs) -> Result<launch::verify::Expectations, Box<dyn std::error::Error>> {
    use vmm::verify::{PolicyFile, VerifyCliError};
    let file = match &args.policy {
        Some(p) => PolicyFile::read(p)?,
        None => PolicyFile::default(),
    };
    let mut rtmrs: [Option<String>; 4] = Default::default();
    for r in &args.expect_rtmr {
        let (n, hex) =
            r.split_once('=').ok_or_else(|| VerifyCliError::Usage(format!("--expect-rtmr {r}: not N=HEX")))?;
        let slot = n
            .trim()
            .parse::<usize>()
            .ok()
            .and_then(|i| rtmrs.get_mut(i))
            .ok_or_else(|| VerifyCliError::Usage(format!("--expect-rtmr {r}: RTMRs are 0 to 3")))?;
        *slot = Some(hex.to_string());
    }
    let measurement = match args.expect_measurement_of {
        true => Some(measurement_of(&args.measure_args)?),
        false => args.expect_measurement.clone(),
    };
    if !args.measure_args.is_empty() && !args.expect_measurement_of {
        return Err(Box::new(VerifyCliError::Usage("arguments after -- are for --expect-measurement-of".into())));
    }
    let [rtmr0, rtmr1, rtmr2, rtmr3] = rtmrs;
    let flags = PolicyFile {
        measurement,
        report_data: args.expect_report_data.clone(),
        allow_debug: args.allow_debug.then_some(true),
        host_data: args.expect_host_data.clone(),
        policy: args.expect_policy.clone(),
        min_tcb: args.min_tcb.clone(),
        vmpl: args.expect_vmpl,
        rtmr0,
        rtmr1,
        rtmr2,
        rtmr3,
        mr_config_id: args.expect_mr_config_id.clone(),
        mr_owner: args.expect_mr_owner.clone(),
        mr_owner_config: args.expect_mr_owner_config.clone(),
        min_tee_tcb_svn: args.min_tee_tcb_svn.clone(),
        accepted_tcb_status: (!args.accept_tcb_status.is_empty()).then(|| args.accept_tcb_status.clone()),
    };
    Ok(file.overridden_by(flags).expectations()?)
}

/// The measurement (hex) `cvmm measure ARGS` prints: the same parsing and the same
/// computation (vmm::measure for a firmware image, vmm::snp_measurement or
/// vmm::tdx_measurement for cvmm's own direct boot).
fn measurement_of(measure_args: &[String]) -> Result<String, Box<dyn std::error::Error>> {
    #[derive(Parser, Debug)]
    #[command(name = "cvmm verify --expect-measurement-of --", no_binary_name = true)]
    struct MeasureOnly {
        #[command(flatten)]
        measure: MeasureArgs,
    }
    let matches = MeasureOnly::command().try_get_matches_from(measure_args)?;
    let args = MeasureOnly::from_arg_matches(&matches)?.measure;
    let tee = match args.run.tee.as_deref().map(parse_tee) {
        Some(t) => t.map_err(std::io::Error::other)?,
        None => return Err(Box::new(std::io::Error::other("--expect-measurement-of: --tee is required: snp or tdx"))),
    };
    let Some(firmware) = args.firmware.clone() else {
        let config = effective_config(args.run, &matches)?;
        let (_, digest) = match config.tee {
            vmm::Tee::Tdx(_) => vmm::tdx_measurement(&config)?,
            _ => vmm::snp_measurement(&config)?,
        };
        return Ok(hex::encode(digest));
    };
    let opts = args.firmware_options(tee, firmware, false, false);
    Ok(vmm::measure::measure(&opts)?.measurement().to_string())
}
