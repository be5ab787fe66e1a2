#!/usr/bin/env bash
# Measurement benchmark: `cvmm measure` against sev-snp-measure on the same inputs, in
# one run, as ratios (medians of RUNS runs each), then cvmm's hashing throughput
# against this machine's raw SHA-384 throughput (all cores).
#
# Cases: OVMF alone (1 vCPU); OVMF (AmdSev build) + kernel + 100 MiB initrd (kernel
# hashes); OVMF with 64 vCPUs. Nothing is asserted: the numbers are reported.
#
# usage: scripts/bench-measure.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-5}"
scripts/setup.sh
cargo build --release -q -p vmm --bin cvmm
kernel=$(scripts/fetch-debian-kernel.sh | tail -n 1)
amdsev=../shared/refs/attestation/virtee-sev__tests_measurement_ovmf_AmdSev_suffix.bin
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
head -c $((100 << 20)) /dev/urandom > "$work/initrd.img"

python3 - "$runs" "$kernel" "$work/initrd.img" "$amdsev" <<'PY'
import statistics, subprocess, sys, time
runs, kernel, initrd, amdsev = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
ovmf = "/usr/share/ovmf/OVMF.fd"
cmdline = "console=ttyS0 root=/dev/vda"
cases = [
    ("OVMF, 1 vCPU", ["--vcpus", "1", "--vcpu-type", "EPYC-v4"], ovmf, []),
    ("OVMF + kernel + 100 MiB initrd", ["--vcpus", "1", "--vcpu-type", "EPYC-v4"], amdsev,
     [("--kernel", kernel), ("--initrd", initrd), ("--append", cmdline)]),
    ("OVMF, 64 vCPUs", ["--vcpus", "64", "--vcpu-type", "EPYC-v4"], ovmf, []),
]

def timed(argv):
    t = time.perf_counter()
    out = subprocess.run(argv, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"{argv} failed: {out.stderr}")
    return time.perf_counter() - t, out.stdout.strip().splitlines()[-1]

print(f"cvmm measure vs sev-snp-measure 0.0.13, median of {runs} runs each (interleaved)")
print(f"{'case':<34}{'cvmm':>10}{'sev-snp-measure':>18}{'speed-up':>10}  same digest")
for name, common, fw, extra in cases:
    ours, theirs = [], []
    for _ in range(runs):
        t, d1 = timed(["target/release/cvmm", "measure", "--tee", "snp", "--firmware", fw, *common,
                       *[x for kv in extra for x in kv]])
        ours.append(t)
        t, d2 = timed(["sev-snp-measure", "--mode", "snp", "--output-format", "hex", "--ovmf", fw, *common,
                       *[x for kv in extra for x in kv]])
        theirs.append(t)
    a, b = statistics.median(ours), statistics.median(theirs)
    print(f"{name:<34}{a*1e3:>8.1f}ms{b*1e3:>16.1f}ms{b/a:>9.1f}x  {'yes' if d1 == d2 else 'NO: ' + d1 + ' vs ' + d2}")
PY

echo
cargo run --release -q -p launch --example measure_throughput -- 256
echo
echo "reference: openssl speed -evp sha384, 4 KiB blocks, all cores:"
openssl speed -seconds 2 -bytes 4096 -multi "$(nproc)" -evp sha384 2>/dev/null | tail -n 1
