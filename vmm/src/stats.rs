//! Launch statistics: step timings and the VMM's memory use beyond guest RAM.

use std::time::{Duration, Instant};

use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

/// Timings of a launch's steps, in the order they ran.
#[derive(Debug, Default, Clone)]
pub struct StepTimes {
    steps: Vec<(&'static str, Duration)>,
    last: Option<Instant>,
}

impl StepTimes {
    /// Starts timing.
    pub fn start() -> Self {
        Self { steps: Vec::new(), last: Some(Instant::now()) }
    }

    /// Records the time since the previous mark as step `name`, and logs it at once
    /// (info level, with the structured fields `step`, `index` and `ms`), so a long
    /// launch shows its progress.
    pub fn mark(&mut self, name: &'static str) {
        let now = Instant::now();
        let since = self.last.map(|l| now - l).unwrap_or_default();
        self.steps.push((name, since));
        self.last = Some(now);
        let ms = since.as_secs_f64() * 1e3;
        log::info!(step:? = name, index = self.steps.len(), ms:% = format_args!("{ms:.3}"); "launch step done");
    }

    /// The recorded steps.
    pub fn steps(&self) -> &[(&'static str, Duration)] {
        &self.steps
    }
}

/// The process's peak resident set (VmHWM) in KiB, from /proc/self/status.
pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// How much of guest memory is resident in the host, in KiB (mincore over every
/// guest mapping).
pub fn guest_resident_kib(mem: &GuestMemoryMmap) -> u64 {
    // SAFETY: sysconf has no memory effects.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
    let mut resident_pages = 0u64;
    for region in mem.iter() {
        let len = region.len() as usize;
        let mut vec = vec![0u8; len.div_ceil(page)];
        // SAFETY: the range is one live mapping owned by `mem`; `vec` has one byte per page.
        let rc = unsafe { libc::mincore(region.as_ptr().cast(), len, vec.as_mut_ptr()) };
        if rc == 0 {
            resident_pages += vec.iter().filter(|b| **b & 1 != 0).count() as u64;
        }
    }
    resident_pages * page as u64 / 1024
}
