#!/usr/bin/env bash
# Runs cvmm's cargo-fuzz targets, JOBS at a time (default: the number of cores), and
# prints each target's executions, rate, time and whether it met its goal.
#
# The goals (issue 9, docs/security.md): GOAL executions (default 10,000,000) with no
# crash, or CRYPTO_GOAL (default 1,000,000) for the targets that verify signatures or
# decrypt (CRYPTO_TARGETS). Each target runs for at least MIN_SECONDS (default 0), then
# on until it has reached its goal, for SECONDS in all (default 600; CRYPTO_SECONDS for
# the crypto ones). Issue 9 asks for at least 10 minutes per target: MIN_SECONDS=600. The
# targets are built without compare tracing (cargo fuzz --no-trace-compares, in
# fuzz/target-crypto): the tracing hooks in the constant-time field arithmetic cost
# them more than half their speed, and their inputs are structures, not magic values.
#
# Seeds come from fuzz/corpus/<target>/ (the committed seed-* and regression-* inputs,
# and whatever earlier runs left there) plus inputs made here: Debian's OVMF.fd tail,
# the demo guest ELF, and, through scripts/fuzz-seeds.py, the shared attestation samples
# (FUZZ_REFS, default ../shared/refs/attestation) and the emulated platforms' report
# and quote (when target/debug/cvmm is built and /dev/kvm is usable). A crash fails the
# script and leaves the input in fuzz/artifacts/<target>/.
#
# usage: [JOBS=N] [GOAL=N] [CRYPTO_GOAL=N] [MIN_SECONDS=N] [CRYPTO_SECONDS=N]
#        scripts/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-600}"
shift || true
jobs="${JOBS:-$(nproc)}"
goal="${GOAL:-10000000}"
crypto_goal="${CRYPTO_GOAL:-1000000}"
min_seconds="${MIN_SECONDS:-0}"
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

is_crypto() { [[ "$crypto_targets" == *" $1 "* ]]; }

echo "fuzz.sh: building ${#targets[@]} targets" >&2
(cd fuzz && cargo +nightly fuzz build -O >&2)
for t in "${targets[@]}"; do
    if is_crypto "$t"; then
        (cd fuzz && cargo +nightly fuzz build -O --no-trace-compares --target-dir target-crypto "$t" >&2)
    fi
done

logdir=$(mktemp -d)
commit=$(git rev-parse --short HEAD) # what the targets were built from (HEAD may move during a long run)
goal_of() { if is_crypto "$1"; then echo "$crypto_goal"; else echo "$goal"; fi; }
# One libFuzzer run of target $1 with the given limits, appended to its log.
fuzz_pass() {
    local t=$1
    shift
    (cd fuzz && cargo +nightly fuzz run -O "${build[@]}" "$t" "corpus/$t" -- \
        "$@" -print_final_stats=1 -rss_limit_mb=4096 >>"$logdir/$t.log" 2>&1)
}
# Sum of a libFuzzer statistic over the runs in a log ("Done N runs in S second(s)").
execs_of() { awk '/^Done [0-9]+ runs in/ {n += $2} END {print n + 0}' "$1"; }
seconds_of() { awk '/^Done [0-9]+ runs in/ {s += $5} END {print s + 0}' "$1"; }
run_one() {
    local t=$1 total=$seconds build=() want first n
    want=$(goal_of "$t")
    if is_crypto "$t"; then
        total=$crypto_seconds
        build=(--no-trace-compares --target-dir target-crypto)
    fi
    first=$((min_seconds < total ? min_seconds : total))
    : >"$logdir/$t.log"
    if [ "$first" -gt 0 ]; then
        fuzz_pass "$t" -max_total_time="$first" || return 1
    fi
    n=$(execs_of "$logdir/$t.log")
    if [ "$n" -lt "$want" ] && [ "$total" -gt "$first" ]; then
        fuzz_pass "$t" -max_total_time="$((total - first))" -runs="$((want - n))" || return 1
    fi
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

echo "fuzz.sh: $(date -u +%FT%TZ), $(( $(date +%s) - start )) s, commit $commit, JOBS=$jobs GOAL=$goal CRYPTO_GOAL=$crypto_goal MIN_SECONDS=$min_seconds SECONDS=$seconds CRYPTO_SECONDS=$crypto_seconds, logs in $logdir"
printf '%-16s %12s %8s %8s  %-8s %s\n' target executions exec/s seconds goal result
for t in "${targets[@]}"; do
    log="$logdir/$t.log"
    n=$(execs_of "$log")
    took=$(seconds_of "$log")
    rate=$((n / (took > 0 ? took : 1)))
    if [ -n "$n" ] && [ "$n" -ge "$(goal_of "$t")" ]; then
        met=met
    else
        met=BELOW
    fi
    is_crypto "$t" && met="$met(1M)"
    if grep -q 'SUMMARY\|panicked\|deadly signal' "$log"; then
        result="CRASH (see $log and fuzz/artifacts/$t/)"
        failed=1
    else
        result=ok
    fi
    printf '%-16s %12s %8s %8s  %-8s %s\n' "$t" "${n:-?}" "${rate:-?}" "${took:-?}" "$met" "$result"
done
exit "$failed"
