#!/usr/bin/env bash
# Runs cvmm's cargo-fuzz targets, each for SECONDS (default 600), JOBS at a time
# (default: the number of cores), and prints each target's executions and result.
# Seeds come from fuzz/corpus/<target>/ (kept in the repository) plus inputs made
# here from real files (Debian's OVMF.fd tail, the demo guest ELF). A crash fails the
# script and leaves the input in fuzz/artifacts/<target>/.
#
# usage: scripts/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-600}"
shift || true
jobs="${JOBS:-$(nproc)}"

if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked >&2
fi

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cd fuzz && cargo +nightly fuzz list)
fi

# Seeds made from real inputs (not committed: they are built or installed here).
mkdir -p fuzz/corpus
for t in "${targets[@]}"; do mkdir -p "fuzz/corpus/$t"; done
if [ -f /usr/share/ovmf/OVMF.fd ]; then
    for t in ovmf_footer sev_metadata tdvf_metadata; do
        [ -d "fuzz/corpus/$t" ] && tail -c 8192 /usr/share/ovmf/OVMF.fd > "fuzz/corpus/$t/seed-ovmf-tail"
    done
fi
demo=$(ls target/*/build/firmware-*/out/demo.elf 2>/dev/null | head -n 1 || true)
[ -n "$demo" ] && [ -d fuzz/corpus/kernel_image ] && cp "$demo" fuzz/corpus/kernel_image/seed-demo-elf

echo "fuzz.sh: building ${#targets[@]} targets" >&2
(cd fuzz && cargo +nightly fuzz build -O >&2)

logdir=$(mktemp -d)
run_one() {
    local t=$1
    (cd fuzz && cargo +nightly fuzz run -O "$t" "corpus/$t" -- \
        -max_total_time="$seconds" -print_final_stats=1 -rss_limit_mb=4096 >"$logdir/$t.log" 2>&1)
}
failed=0
running=0
for t in "${targets[@]}"; do
    run_one "$t" &
    running=$((running + 1))
    if [ "$running" -ge "$jobs" ]; then
        wait -n || failed=1
        running=$((running - 1))
    fi
done
while [ "$running" -gt 0 ]; do
    wait -n || failed=1
    running=$((running - 1))
done

printf '%-18s %14s %10s  %s\n' target executions exec/s result
for t in "${targets[@]}"; do
    log="$logdir/$t.log"
    execs=$(awk '/stat::number_of_executed_units:/ {print $2}' "$log" | tail -n 1)
    rate=$(awk '/stat::average_exec_per_sec:/ {print $2}' "$log" | tail -n 1)
    if grep -q 'SUMMARY\|panicked\|deadly signal' "$log"; then
        result="CRASH (see $log and fuzz/artifacts/$t/)"
        failed=1
    else
        result=ok
    fi
    printf '%-18s %14s %10s  %s\n' "$t" "${execs:-?}" "${rate:-?}" "$result"
done
exit "$failed"
