//! Hashing throughput of cvmm's measurement calculators against raw SHA-384 on this
//! machine, measured in the same run (used by scripts/bench-measure.sh).
//!
//! usage: cargo run --release -p launch --example measure_throughput [MiB]

use std::sync::Arc;
use std::time::Instant;

use launch::plan::{Contents, LaunchPlan, PageType, PlanRange, SnpPageType, TdxPageType};
use sha2::{Digest, Sha384};

fn best_of<F: FnMut()>(runs: usize, mut f: F) -> f64 {
    (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    let mib: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(256);
    let bytes = mib << 20;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    // Deterministic, non-trivial contents.
    let data: Arc<[u8]> = (0..bytes).map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[3]).collect();

    let raw_1 = best_of(3, || {
        std::hint::black_box(Sha384::digest(&data));
    });
    let raw_all = best_of(3, || {
        let chunk = bytes.div_ceil(threads);
        std::thread::scope(|s| {
            for part in data.chunks(chunk) {
                s.spawn(move || std::hint::black_box(Sha384::digest(part)));
            }
        });
    });

    let plan_of = |page_type| {
        let mut plan = LaunchPlan::default();
        plan.push(PlanRange {
            gpa: 0x1_0000_0000,
            len: bytes as u64,
            page_type,
            contents: Contents::Bytes(data.clone()),
            what: "bench".into(),
        })
        .expect("valid range");
        plan
    };
    let snp_plan = plan_of(PageType::Snp(SnpPageType::Normal));
    let tdx_plan = plan_of(PageType::Tdx(TdxPageType::AddMeasured));
    let snp = best_of(3, || {
        std::hint::black_box(launch::measure::snp::launch_digest(&snp_plan).expect("digest"));
    });
    let tdx = best_of(3, || {
        std::hint::black_box(launch::measure::tdx::mrtd(&tdx_plan).expect("mrtd"));
    });

    let mbps = |secs: f64| bytes as f64 / secs / 1e6;
    println!("hashing throughput over {mib} MiB, best of 3, {threads} hardware threads");
    println!("{:<52}{:>12}{:>16}", "what", "MB/s", "raw(all)/this");
    for (name, secs) in [
        ("raw SHA-384, 1 core (sha2)", raw_1),
        (&*format!("raw SHA-384, all {threads} cores (sha2)"), raw_all),
        ("cvmm SNP launch digest (NORMAL pages)", snp),
        ("cvmm TDX MRTD (PAGE.ADD + MR.EXTEND)", tdx),
    ] {
        println!("{name:<52}{:>12.0}{:>15.2}x", mbps(secs), mbps(raw_all) / mbps(secs));
    }
}
