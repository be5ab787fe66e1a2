//! Embedding cvmm as a library: launch the demo guest as an SEV-SNP guest on the
//! emulated SNP platform, check that the measurement the launch produced is the one
//! `vmm::snp_measurement` predicts for the same configuration, run it to its end, and
//! read the measurement from the attestation report the guest printed.
//!
//! Run with `cargo run -p vmm --example snp_emulated`; tests/vm_handle.rs runs
//! [`snp_emulated`] as a test.

use std::error::Error;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use vmm::{SnpConfig, Tee, VmConfig, VmExit, VmHandle};

/// A console that keeps what the guest wrote, and copies it to `out`.
#[derive(Clone)]
struct Tee2(Arc<Mutex<Vec<u8>>>, Arc<Mutex<Box<dyn Write + Send>>>);

impl Write for Tee2 {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).extend_from_slice(buf);
        self.1.lock().unwrap_or_else(|e| e.into_inner()).write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.1.lock().unwrap_or_else(|e| e.into_inner()).flush()
    }
}

/// Launches, runs and checks an emulated SNP demo guest; returns how it ended and the
/// measurement (hex) its attestation report carried.
pub fn snp_emulated(console: Box<dyn Write + Send>) -> Result<(VmExit, String), Box<dyn Error>> {
    let config = VmConfig {
        tee: Tee::Snp(SnpConfig { emulated: true, ..Default::default() }),
        rng: true,
        timeout: Some(Duration::from_secs(60)),
        ..Default::default()
    };
    let (_, predicted) = vmm::snp_measurement(&config)?;
    let predicted: String = predicted.iter().map(|b| format!("{b:02x}")).collect();
    let seen = Tee2(Arc::default(), Arc::new(Mutex::new(console)));
    let vm = VmHandle::create(&config, Box::new(seen.clone()))?;
    println!("created: tee {}, expected measurement {:?}", vm.tee(), vm.expected_measurement());
    if vm.expected_measurement() != Some(predicted.as_str()) {
        return Err(format!("the launch measured {:?}, not {predicted}", vm.expected_measurement()).into());
    }
    vm.start()?;
    let exit = vm.wait()?;
    let text = String::from_utf8_lossy(&seen.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned();
    let reported = text
        .lines()
        .find_map(|l| l.strip_prefix("attestation: measurement "))
        .ok_or("the guest printed no attestation report")?
        .to_string();
    println!("ended: {exit}; the report's measurement is {reported}");
    Ok((exit, reported))
}

fn main() -> Result<(), Box<dyn Error>> {
    env_logger::Builder::new().filter_level(log::LevelFilter::Info).init();
    let (exit, _) = snp_emulated(Box::new(std::io::stdout()))?;
    std::process::exit(exit.exit_status());
}
