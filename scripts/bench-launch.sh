#!/usr/bin/env bash
# Launch-latency benchmark: time from process start to the demo guest's first output
# and to VM exit (median of N runs), and the VMM's peak RSS beyond guest memory.
#
# Baseline, measured in the same run with the same harness: /bin/echo, a process that
# prints one line and exits (the cost of starting any process and reading its output). Results are printed as a table with ratios; no
# result is asserted.
#
# usage: scripts/bench-launch.sh [RUNS] [extra `cvmm run` args...]
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-30}"
shift || true
cargo build --release -q -p vmm --bin cvmm
exec python3 - "$runs" "target/release/cvmm" "$@" <<'PY'
import os, statistics, subprocess, sys, time

runs = int(sys.argv[1])
cvmm = sys.argv[2]
extra = sys.argv[3:]

def launch(argv):
    """Returns (seconds to first stdout byte or None, seconds to exit, maxrss KiB, stdout, stderr)."""
    t0 = time.perf_counter()
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = p.stdout.read(1)
    t_first = time.perf_counter() - t0 if first else None
    rest = p.stdout.read()
    err = p.stderr.read()
    _, status, ru = os.wait4(p.pid, 0)
    t_exit = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        sys.exit(f"{argv} failed with {p.returncode}: {err.decode()}")
    return t_first, t_exit, ru.ru_maxrss, (first + rest).decode(), err.decode()

def median_ms(xs):
    return statistics.median(xs) * 1e3

# Interleaved, so that both see the same machine conditions.
base, runs_cvmm = [], []
for _ in range(runs):
    base.append(launch(["/bin/echo", "x"]))
    runs_cvmm.append(launch([cvmm, "run", "--stats", *extra]))

first = [r[0] for r in runs_cvmm]
exit_ = [r[1] for r in runs_cvmm]
base_first = [r[0] for r in base]
base_exit = [r[1] for r in base]
def stat_values(key):
    vals = []
    for r in runs_cvmm:
        for line in r[4].splitlines():
            if key + "=" in line:
                vals.append(float(line.split(key + "=")[1].split()[0]))
    return vals
steps = {}
for r in runs_cvmm:
    for line in r[4].splitlines():
        if line.startswith("stats: step "):
            parts = line[len("stats: step "):].split()
            steps.setdefault(" ".join(parts[:-2]), []).append(float(parts[-2]))

def row(name, value, base=None, unit="ms"):
    b = f"{base:>10.2f}{unit}" if base is not None else " " * 12
    r = f"{value / base:>7.2f}x" if base else ""
    print(f"{name:<46}{value:>10.2f}{unit}{b}{r}")

print(f"cvmm launch benchmark: {runs} runs each, medians; guest printed: {runs_cvmm[0][3].strip()!r}")
print(f"{'measure':<46}{'cvmm':>12}{'baseline':>12}{'ratio':>8}")
row("process start -> first output (baseline: echo)", median_ms(first), median_ms(base_first))
row("process start -> exit (baseline: echo)", median_ms(exit_), median_ms(base_exit))
row("first output beyond the baseline's", median_ms(first) - median_ms(base_first))
row("cvmm main() -> first guest output (in-process)", statistics.median(stat_values("main_to_first_output_ms")))
row("cvmm main() -> VM torn down (in-process)", statistics.median(stat_values("main_to_exit_ms")))
for name, ms in steps.items():
    row("  launch step: " + name, statistics.median(ms))
print(f"{'cvmm peak RSS (VmHWM)':<46}{statistics.median(stat_values('peak_rss_kib')):>9.0f}KiB")
print(f"{'guest memory resident at exit':<46}{statistics.median(stat_values('guest_resident_kib')):>9.0f}KiB")
print(f"{'cvmm peak RSS beyond guest memory':<46}{statistics.median(stat_values('vmm_overhead_kib')):>9.0f}KiB")
print("goals: first guest output within 5 ms of process start; RSS overhead under 5 MiB (5120 KiB)")
PY
