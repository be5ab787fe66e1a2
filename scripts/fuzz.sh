#!/usr/bin/env bash
# Runs cvmm's cargo-fuzz targets, JOBS at a time (default: the number of cores), and
# prints each target's executions, rate and result.
#
# Every target but the crypto ones stops at EXECS executions (default 10,000,000, the
# project's goal: docs/security.md) or after SECONDS (default 600), whichever comes
# first; the crypto targets (CRYPTO_TARGETS: AES-GCM, ECDSA and X.509 per input, too
# slow for the goal) run for CRYPTO_SECONDS (default: SECONDS). EXECS=0 runs every
# target for its time only.
#
# Seeds come from fuzz/corpus/<target>/ (the committed seed-* and regression-* inputs,
# and whatever earlier runs left there) plus inputs made here: Debian's OVMF.fd tail,
# the demo guest ELF, and, through scripts/fuzz-seeds.py, the shared attestation samples
# (FUZZ_REFS, default ../shared/refs/attestation) and the emulated platforms' report
# and quote (when target/debug/cvmm is built and /dev/kvm is usable). A crash fails the
# script and leaves the input in fuzz/artifacts/<target>/.
#
# usage: [JOBS=N] [EXECS=N] [CRYPTO_SECONDS=N] scripts/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-600}"
shift || true
jobs="${JOBS:-$(nproc)}"
execs="${EXECS:-10000000}"
crypto_seconds="${CRYPTO_SECONDS:-$seconds}"
crypto_targets=" ${CRYPTO_TARGETS:-snp_crypto tdx_crypto} "
refs="${FUZZ_REFS:-../shared/refs/attestation}"

if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked >&2
fi

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cd fuzz && cargo +nightly fuzz list)
fi

# Seeds made from real inputs (not committed: they are built, installed or shared here).
mkdir -p fuzz/corpus
for t in "${targets[@]}"; do mkdir -p "fuzz/corpus/$t"; done
if [ -f /usr/share/ovmf/OVMF.fd ]; then
    for t in ovmf_footer sev_metadata tdvf_metadata; do
        [ -d "fuzz/corpus/$t" ] && tail -c 8192 /usr/share/ovmf/OVMF.fd > "fuzz/corpus/$t/seed-ovmf-tail"
    done
fi
demo=$(ls target/*/build/firmware-*/out/demo.elf 2>/dev/null | head -n 1 || true)
[ -n "$demo" ] && [ -d fuzz/corpus/kernel_image ] && cp "$demo" fuzz/corpus/kernel_image/seed-demo-elf
seed_args=()
[ -d "$refs" ] && seed_args+=(--refs "$refs")
[ -x target/debug/cvmm ] && [ -r /dev/kvm ] && [ -w /dev/kvm ] && seed_args+=(--emulated target/debug/cvmm)
python3 scripts/fuzz-seeds.py "${seed_args[@]}" >&2 || echo "fuzz.sh: some seeds could not be made" >&2

echo "fuzz.sh: building ${#targets[@]} targets" >&2
(cd fuzz && cargo +nightly fuzz build -O >&2)

is_crypto() { [[ "$crypto_targets" == *" $1 "* ]]; }

logdir=$(mktemp -d)
run_one() {
    local t=$1 limit=(-max_total_time="$seconds")
    if is_crypto "$t"; then
        limit=(-max_total_time="$crypto_seconds")
    elif [ "$execs" -gt 0 ]; then
        limit+=(-runs="$execs")
    fi
    (cd fuzz && cargo +nightly fuzz run -O "$t" "corpus/$t" -- \
        "${limit[@]}" -print_final_stats=1 -rss_limit_mb=4096 >"$logdir/$t.log" 2>&1)
}
failed=0
running=0
start=$(date +%s)
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

echo "fuzz.sh: $(date -u +%FT%TZ), $(( $(date +%s) - start )) s, JOBS=$jobs EXECS=$execs SECONDS=$seconds CRYPTO_SECONDS=$crypto_seconds, logs in $logdir"
printf '%-16s %12s %8s %8s  %-8s %s\n' target executions exec/s seconds goal result
for t in "${targets[@]}"; do
    log="$logdir/$t.log"
    n=$(awk '/stat::number_of_executed_units:/ {print $2}' "$log" | tail -n 1)
    rate=$(awk '/stat::average_exec_per_sec:/ {print $2}' "$log" | tail -n 1)
    took=$(awk '/^Done [0-9]+ runs in/ {print $5}' "$log" | tail -n 1)
    if is_crypto "$t"; then
        goal=crypto
    elif [ -n "$n" ] && [ "$n" -ge "$execs" ]; then
        goal=met
    else
        goal=BELOW
    fi
    if grep -q 'SUMMARY\|panicked\|deadly signal' "$log"; then
        result="CRASH (see $log and fuzz/artifacts/$t/)"
        failed=1
    else
        result=ok
    fi
    printf '%-16s %12s %8s %8s  %-8s %s\n' "$t" "${n:-?}" "${rate:-?}" "${took:-?}" "$goal" "$result"
done
exit "$failed"
