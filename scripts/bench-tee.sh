#!/usr/bin/env bash
# Confidential launch cost on the emulated platforms: `cvmm run --tee snp|tdx
# --emulated` of the demo guest against a plain launch of the same guest, at 256 MiB and
# 2 GiB, interleaved (N runs of each), with the median time of every launch step
# (`--stats`) and to the guest's exit. The confidential guests do more than the plain
# one: their firmware validates (SNP, 2 MiB PVALIDATEs) or accepts (TDX, 4 KiB
# TDG.MEM.PAGE.ACCEPTs: KVM maps TD memory at 4 KiB) all memory, shares its bounce
# buffers and, with an attestation service, asks for evidence. Results are ratios
# against the plain launch measured in the same run; nothing is asserted.
#
# usage: scripts/bench-tee.sh [RUNS] [snp|tdx ...]   (default: snp tdx)
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-10}"
shift || true
tees="${*:-snp tdx}"
cargo build --release -q -p vmm --bin cvmm
# The emulated AMD key chain is generated once per installation: do it before timing.
target/release/cvmm snp-certs --export "$(mktemp -d)" >/dev/null
exec python3 - "$runs" target/release/cvmm $tees <<'PY'
import statistics, subprocess, sys, time

runs, cvmm, tees = int(sys.argv[1]), sys.argv[2], sys.argv[3:]

def launch(extra):
    t0 = time.perf_counter()
    p = subprocess.run([cvmm, "run", "--stats", *extra], capture_output=True, text=True)
    total = time.perf_counter() - t0
    if p.returncode != 0:
        sys.exit(f"{extra} failed with {p.returncode}: {p.stderr}")
    steps = {}
    for line in p.stderr.splitlines():
        if line.startswith("stats: step "):
            name, ms = line[len("stats: step "):].rsplit(None, 2)[0], line.split()[-2]
            steps[name.strip()] = float(ms)
        elif "main_to_exit_ms=" in line:
            steps["total (process start to guest exit)"] = float(line.split("main_to_exit_ms=")[1].split()[0])
    steps["wall clock incl. process exit"] = total * 1e3
    return steps

for tee in tees:
  for mem in ["256M", "2G"]:
    plain, snp = [], []
    for _ in range(runs):
        plain.append(launch(["--memory", mem]))
        snp.append(launch(["--memory", mem, "--tee", tee, "--emulated"]))
    names = list(dict.fromkeys([k for r in snp for k in r] + [k for r in plain for k in r]))
    print(f"\n## {tee}, {mem}, median of {runs} runs (ms)\n")
    print(f"| step | plain | {tee} (emulated) | ratio |")
    print(f"|---|---|---|---|")
    for n in names:
        p = [r[n] for r in plain if n in r]
        s = [r[n] for r in snp if n in r]
        pm = statistics.median(p) if p else None
        sm = statistics.median(s) if s else None
        ratio = f"{sm / pm:.2f}" if pm and sm and pm > 0 else "-"
        fmt = lambda v: f"{v:.3f}" if v is not None else "-"
        print(f"| {n} | {fmt(pm)} | {fmt(sm)} | {ratio} |")
PY
