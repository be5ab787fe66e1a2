//! Embedding cvmm as a library: build the demo guest, start it, pause it, resume it,
//! ask it to shut down and wait for its end, querying the handle on the way.
//!
//! Run with `cargo run -p vmm --example lifecycle`; tests/vm_handle.rs runs
//! [`lifecycle`] as a test.

use std::error::Error;
use std::io::Write;
use std::time::Duration;

use vmm::{VmConfig, VmExit, VmHandle, VmState};

/// Runs the demo guest's whole life, its console going to `console`, and returns how
/// it ended.
pub fn lifecycle(console: Box<dyn Write + Send>) -> Result<VmExit, Box<dyn Error>> {
    // `wait` on its command line makes the demo guest halt until it is asked to shut
    // down (Ctrl-Alt-Del on the i8042) instead of exiting at once.
    let config =
        VmConfig { cmdline: Some("wait".into()), timeout: Some(Duration::from_secs(60)), ..Default::default() };
    let vm = VmHandle::create(&config, console)?;
    println!("created: tee {}, expected measurement {:?}", vm.tee(), vm.expected_measurement());

    vm.start()?;
    println!("state: {}", vm.state());
    vm.pause()?;
    assert_eq!(vm.state(), VmState::Paused);
    println!("state: {}", vm.state());
    vm.resume()?;
    println!("state: {}", vm.state());

    vm.shutdown(Duration::from_secs(10))?;
    let exit = vm.wait()?;
    println!("ended: {exit}");
    Ok(exit)
}

fn main() -> Result<(), Box<dyn Error>> {
    env_logger::Builder::new().filter_level(log::LevelFilter::Info).init();
    let exit = lifecycle(Box::new(std::io::stdout()))?;
    std::process::exit(exit.exit_status());
}
