//! Builds cvmm's own guest programs (`guests/*.rs`: the demo guest, the Linux boot firmware, and with the
//! `test-guests` feature the test guests) as static no_std ELF files.
//!
//! Only the x86_64-unknown-linux-gnu standard library is installed on our machines
//! (no other targets, no rust-src), so the guest is compiled for that target with
//! `#![no_std] #![no_main]`, static relocation and its own linker script, by invoking
//! the same `rustc` cargo uses. The ELF lands in OUT_DIR and is embedded with
//! `include_bytes!`.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let guests = manifest.join("guests");
    let ld = guests.join("linker.ld");
    // The guests share modules (rt.rs, virtio.rs, sha256.rs...): any change in the
    // directory rebuilds them all.
    println!("cargo:rerun-if-changed={}", guests.display());
    for p in [guests.join("rt.rs"), ld.clone(), manifest.join("../arch/src/abi.rs")] {
        println!("cargo:rerun-if-changed={}", p.display());
    }
    let mut programs = vec!["demo", "linuxboot"];
    if env::var_os("CARGO_FEATURE_TEST_GUESTS").is_some() {
        programs.extend(["irq_test", "virtio_rng_test", "snp_ghcb_test", "tdx_test"]);
    }
    for name in programs {
        let src = guests.join(format!("{name}.rs"));
        println!("cargo:rerun-if-changed={}", src.display());
        build_guest(&rustc, &src, &ld, &out.join(format!("{name}.elf")));
    }
}

/// Compiles one guest program into a static ELF at `elf`.
fn build_guest(rustc: &str, src: &Path, ld: &Path, elf: &Path) {
    let name = src.file_stem().and_then(|s| s.to_str()).expect("guest file name");
    let status = Command::new(rustc)
        .args(["--edition", "2021", "--crate-type", "bin", "--crate-name", &format!("cvmm_guest_{name}")])
        .args(["--target", "x86_64-unknown-linux-gnu"])
        .args(["-C", "opt-level=s", "-C", "panic=abort", "-C", "debuginfo=0", "-C", "strip=symbols"])
        .args(["-C", "relocation-model=static", "-C", "code-model=small"])
        // This host emulates CPL0 code and cannot emulate SSE instructions; a guest
        // kernel must not depend on them before it sets up its own FPU state anyway.
        .args(["-C", "target-feature=-sse,-sse2,-mmx,-avx,-avx2,+soft-float"])
        .args(["-C", "link-arg=-nostartfiles", "-C", "link-arg=-nostdlib"])
        .args(["-C", "link-arg=-static", "-C", "link-arg=-no-pie"])
        .args(["-C", "link-arg=-Wl,--build-id=none"])
        .arg("-C")
        .arg(format!("link-arg=-Wl,-T,{}", ld.display()))
        .arg("-o")
        .arg(elf)
        .arg(src)
        // Cargo's flags for the host build (e.g. coverage, sanitizers) must not leak
        // into the guest.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .status()
        .unwrap_or_else(|e| panic!("cannot run {rustc} for guest {name}: {e}"));
    assert!(status.success(), "building guest {name} failed");
}
