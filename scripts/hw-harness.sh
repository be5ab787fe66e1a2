#!/usr/bin/env bash
# cvmm's end-to-end check of a confidential-computing host (docs/hardware-testing.md):
# builds cvmm, runs `cvmm host-check`, then for each TEE (SEV-SNP, TDX) the host can run:
# launches the bundled demo guest and, if given, a Linux kernel with an initrd that prints
# its attestation evidence (scripts/build-attest-initrd.sh), collects the report or quote
# from the console, checks its measurement against `cvmm measure` for the same arguments
# and verifies it with `cvmm verify`. Prints a summary table: one row per TEE, guest and
# check, PASS / FAIL / SKIP: <reason>.
#
# Usage: scripts/hw-harness.sh [--emulated] [--kernel PATH --initrd PATH] [--cmdline STR]
#                              [--memory SIZE] [--certs DIR] [--out DIR]
#   --emulated       run against cvmm's emulated platforms instead of the hardware
#   --kernel/--initrd  the Linux guest (both or neither)
#   --cmdline        its command line (default: console=ttyS0 reboot=k panic=-1); the harness
#                    appends attest.nonce=<128 hex digits>, which the initrd's /init puts
#                    in its report
#   --memory         the Linux guest's memory (default 1G)
#   --certs DIR      the certificates `cvmm verify --certs` checks real reports against
#                    (for SNP: ark.pem, ask.pem, vcek.pem of this chip); with --emulated
#                    the harness exports the emulated chain (cvmm snp-certs) instead
#   --out DIR        where logs, consoles and evidence go (default: a new /tmp directory)
# Environment: CVMM=/path/to/cvmm uses that binary instead of building one (release).
#
# Exit status: 0 when no row failed and at least one passed, 1 when a row failed, 2 on
# a usage error, 3 when every row was skipped (nothing was tested).
set -uo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
log() { echo "hw-harness: $*" >&2; }
usage() { awk '/^# Usage:/ { on = 1 } /^set / { on = 0 } on { sub(/^# ?/, ""); print }' "$0" >&2; exit 2; }

emulated=0 kernel="" initrd="" cmdline="console=ttyS0 reboot=k panic=-1" memory="1G" certs="" out=""
while [ $# -gt 0 ]; do
    case "$1" in
        --emulated) emulated=1 ;;
        --kernel) kernel=${2:?}; shift ;;
        --initrd) initrd=${2:?}; shift ;;
        --cmdline) cmdline=${2:?}; shift ;;
        --memory) memory=${2:?}; shift ;;
        --certs) certs=${2:?}; shift ;;
        --out) out=${2:?}; shift ;;
        -h|--help) usage ;;
        *) log "unknown argument: $1"; usage ;;
    esac
    shift
done
if { [ -n "$kernel" ] && [ -z "$initrd" ]; } || { [ -z "$kernel" ] && [ -n "$initrd" ]; }; then
    log "--kernel and --initrd go together"; exit 2
fi
for f in "$kernel" "$initrd"; do
    if [ -n "$f" ] && [ ! -r "$f" ]; then log "cannot read $f"; exit 2; fi
done

# What this build of cvmm does not do at all, as opposed to failures: its message for a
# Linux kernel under a confidential launch (cvmm's firmware boots its own programs
# only), and the TEEs whose demo guest prints no attestation evidence (none now; their
# evidence rows would say SKIP when the console has none).
UNSUPPORTED=("direct Linux boot under SNP is not done yet")
NO_DEMO_EVIDENCE=""

# 1. The cvmm binary.
if [ -n "${CVMM:-}" ]; then
    [ -x "$CVMM" ] || { log "CVMM=$CVMM is not an executable"; exit 2; }
else
    log "building cvmm (cargo build --release -p vmm --bin cvmm)"
    (cd "$root" && cargo build --release -p vmm --bin cvmm >&2) || { log "the build failed"; exit 1; }
    CVMM="$root/target/release/cvmm"
fi
out=${out:-$(mktemp -d "${TMPDIR:-/tmp}/cvmm-hw-harness.XXXXXX")}
mkdir -p "$out"
emu=()
[ "$emulated" = 1 ] && emu=(--emulated)

# The summary: one "tee|guest|check|result|detail" line per row.
rows=() passed=0 failed=0 skipped=0
row() {
    rows+=("$1|$2|$3|$4|$5")
    case "$4" in PASS) passed=$((passed + 1)) ;; FAIL) failed=$((failed + 1)) ;; *) skipped=$((skipped + 1)) ;; esac
    [ "$4" = SKIP ] || log "$1 $2 $3: $4 $5"
}
CHECKS=(launch evidence measurement verify)
skip_rest() { # label guest first-check reason: SKIP that check and the ones after it
    local started=0 c
    for c in "${CHECKS[@]}"; do
        [ "$c" = "$3" ] && started=1
        [ "$started" = 1 ] && row "$1" "$2" "$c" SKIP "$4"
    done
}
unsupported() { # file: the first line of it naming something this build does not do
    local p
    for p in "${UNSUPPORTED[@]}"; do
        if grep -q -- "$p" "$1"; then grep -m1 -- "$p" "$1"; return 0; fi
    done
    return 1
}

# 2. The host.
"$CVMM" host-check > "$out/host-check.txt" 2>&1
cat "$out/host-check.txt"
has_verify=0
help=$("$CVMM" --help 2>/dev/null)
grep -qE '^ +verify( |$)' <<< "$help" && has_verify=1

# Hex helpers: the evidence stays hex; bytes are written only for cvmm verify.
hex_slice() { echo "${1:$(($2 * 2)):$(($3 * 2))}"; } # hex offset length
hex_to_file() { # hex file
    local escaped="" i
    for ((i = 0; i < ${#1}; i += 2)); do escaped+="\\x${1:i:2}"; done
    printf '%b' "$escaped" > "$2"
}

# Where the measurement and the report data sit in the evidence, per TEE: the SEV-SNP
# ATTESTATION_REPORT (MEASUREMENT at 0x90, REPORT_DATA at 0x50), the TDX quote v4
# (48-byte header, then the TD report body: MRTD at 184, REPORTDATA at 568).
evidence_kind() { [ "$1" = snp ] && echo report || echo quote; }
evidence_min() { [ "$1" = snp ] && echo 1184 || echo 632; }
measurement_at() { [ "$1" = snp ] && echo 144 || echo 184; }
report_data_at() { [ "$1" = snp ] && echo 80 || echo 568; }

# run_guest LABEL TEE GUEST NONCE ARGS...: the four rows of one guest. NONCE is the hex
# the guest must put at the start of its report data ("" to take it from the console's
# "rng: " line, as the demo guest prints it).
run_guest() {
    local label=$1 tee=$2 guest=$3 nonce=$4
    shift 4
    local dir="$out/$label-$guest" timeout=60
    [ "$guest" = linux ] && timeout=300
    mkdir -p "$dir"

    # launch
    "$CVMM" run --tee "$tee" ${emu[@]+"${emu[@]}"} --timeout "$timeout" "$@" > "$dir/console.txt" 2> "$dir/stderr.txt"
    local rc=$? why
    if why=$(unsupported "$dir/stderr.txt"); then
        skip_rest "$label" "$guest" launch "this build of cvmm cannot: $why"; return
    fi
    if [ "$rc" != 0 ]; then
        row "$label" "$guest" launch FAIL "cvmm run exited $rc: $(tail -n 1 "$dir/stderr.txt") (see $dir)"
        skip_rest "$label" "$guest" evidence "the launch failed"; return
    fi
    local first
    first=$(head -n 1 "$dir/console.txt")
    row "$label" "$guest" launch PASS "exit 0: ${first:0:60}"

    # evidence: "attestation: report|quote N <hex>" lines, in order from 0
    local kind hex
    kind=$(evidence_kind "$tee")
    hex=$(awk -v kind="$kind" '$1 == "attestation:" && $2 == kind && $3 ~ /^[0-9]+$/ {
            if ($3 != n) exit 1; printf "%s", $4; n++ }' "$dir/console.txt") || hex=""
    local bytes=$((${#hex} / 2)) min
    min=$(evidence_min "$tee")
    if [ "$guest" = demo ] && [[ "$NO_DEMO_EVIDENCE" == *" $tee "* ]] && ! grep -q '^attestation: ' "$dir/console.txt"; then
        skip_rest "$label" "$guest" evidence "this build's demo guest prints no ${tee^^} evidence"; return
    fi
    if [ "$bytes" -lt "$min" ] || ! [[ "$hex" =~ ^[0-9a-f]+$ ]]; then
        local err
        err=$(grep -m1 '^attestation: ' "$dir/console.txt")
        row "$label" "$guest" evidence FAIL "no complete $kind on the console (${bytes} bytes; ${err:-no attestation lines})"
        skip_rest "$label" "$guest" measurement "no evidence"; return
    fi
    echo "$hex" > "$dir/evidence.hex"
    hex_to_file "$hex" "$dir/evidence.bin"
    [ -n "$nonce" ] || nonce=$(awk '$1 == "rng:" { print $2; exit }' "$dir/console.txt")
    local data
    data=$(hex_slice "$hex" "$(report_data_at "$tee")" 64)
    if [ -n "$nonce" ] && [ "${data:0:${#nonce}}" != "$nonce" ]; then
        row "$label" "$guest" evidence FAIL "the report data $data does not start with the nonce $nonce"
        skip_rest "$label" "$guest" measurement "stale evidence"; return
    fi
    row "$label" "$guest" evidence PASS "$bytes-byte $kind in $dir/evidence.bin${nonce:+, carrying the nonce}"

    # measurement: the evidence's against cvmm measure's for the same arguments
    local expected got
    expected=$("$CVMM" measure --tee "$tee" ${emu[@]+"${emu[@]}"} --timeout "$timeout" "$@" 2> "$dir/measure.stderr" | tail -n 1)
    got=$(hex_slice "$hex" "$(measurement_at "$tee")" 48)
    if why=$(unsupported "$dir/measure.stderr"); then
        row "$label" "$guest" measurement SKIP "this build of cvmm cannot measure it: $why"; expected=""
    elif ! [[ "$expected" =~ ^[0-9a-f]{96}$ ]]; then
        row "$label" "$guest" measurement FAIL "cvmm measure failed: $(tail -n 1 "$dir/measure.stderr")"; expected=""
    elif [ "$got" != "$expected" ]; then
        row "$label" "$guest" measurement FAIL "the $kind has $got, cvmm measure says $expected"
    else
        row "$label" "$guest" measurement PASS "$got"
    fi

    # verify: accepted against the certificates with the expected measurement, refused
    # with any other
    if [ "$has_verify" = 0 ]; then
        row "$label" "$guest" verify SKIP "cvmm verify not available in this build"; return
    fi
    if [ -z "$expected" ]; then
        row "$label" "$guest" verify SKIP "no expected measurement"; return
    fi
    local chain=$certs
    if [ "$emulated" = 1 ]; then
        chain="$out/certs-$tee"
        if ! "$CVMM" "$tee-certs" --export "$chain" > /dev/null 2> "$dir/certs.stderr"; then
            row "$label" "$guest" verify FAIL "cvmm $tee-certs failed: $(tail -n 1 "$dir/certs.stderr")"; return
        fi
    fi
    if [ -z "$chain" ]; then
        row "$label" "$guest" verify SKIP "no --certs DIR given (see docs/hardware-testing.md)"; return
    fi
    # The expected measurement with its last digit changed.
    local wrong=${expected:0:95}1
    [ "${expected:95:1}" = 1 ] && wrong=${expected:0:95}0
    # The emulated platforms' evidence chains to their own roots (and TDX quotes need
    # collateral); on hardware, the vendors' roots built into cvmm verify.
    # An SNP report's certificates come from the directory; a TDX quote carries its PCK
    # chain and needs collateral. The emulated platforms chain to their own roots; on
    # hardware, the vendors' roots built into cvmm verify are used.
    local trust=()
    if [ "$tee" = snp ]; then trust=(--certs "$chain"); fi
    if [ "$emulated" = 1 ] && [ "$tee" = snp ]; then trust+=(--root "$chain/ark.pem"); fi
    if [ "$emulated" = 1 ] && [ "$tee" = tdx ]; then trust+=(--root "$chain/root.pem"); fi
    if [ "$tee" = tdx ] && [ -f "$chain/collateral.json" ]; then trust+=(--collateral "$chain/collateral.json"); fi
    "$CVMM" verify --report "$dir/evidence.bin" ${trust[@]+"${trust[@]}"} \
        --expect-measurement "$expected" > "$dir/verify.txt" 2>&1
    local good=$?
    "$CVMM" verify --report "$dir/evidence.bin" ${trust[@]+"${trust[@]}"} \
        --expect-measurement "$wrong" > "$dir/verify-wrong.txt" 2>&1
    local bad=$?
    if [ "$good" != 0 ]; then
        row "$label" "$guest" verify FAIL "cvmm verify exited $good: $(tail -n 1 "$dir/verify.txt")"
    elif [ "$bad" = 0 ]; then
        row "$label" "$guest" verify FAIL "cvmm verify also accepted the wrong measurement $wrong"
    else
        row "$label" "$guest" verify PASS "verifies against $chain; a wrong measurement is refused"
    fi
}

# 3. Each TEE.
for tee in snp tdx; do
    label=$tee
    [ "$emulated" = 1 ] && label="$tee-emulated"
    if ! "$CVMM" host-check --tee "$tee" ${emu[@]+"${emu[@]}"} > "$out/host-check-$label.txt" 2>&1; then
        platform=${tee^^}
        [ "$emulated" = 1 ] && platform="$platform (emulated)"
        reason=$(grep -m1 -F "verdict $platform: " "$out/host-check-$label.txt" | sed 's/^verdict //')
        for guest in demo linux; do skip_rest "$label" "$guest" launch "${reason:-cvmm host-check --tee $tee failed}"; done
        continue
    fi
    run_guest "$label" "$tee" demo "" --rng
    if [ "$emulated" = 1 ]; then
        skip_rest "$label" linux launch "Linux guests are not run on the emulated platforms (they serve cvmm's own guest programs; Linux under emulated SNP would spin on VMGEXIT)"
    elif [ -z "$kernel" ]; then
        skip_rest "$label" linux launch "no --kernel/--initrd given (scripts/build-attest-initrd.sh builds the initrd)"
    else
        nonce=$(od -An -tx1 -N64 /dev/urandom | tr -d ' \n')
        run_guest "$label" "$tee" linux "$nonce" --kernel "$kernel" --initrd "$initrd" \
            --cmdline "$cmdline attest.nonce=$nonce" --memory "$memory"
    fi
done

# 4. The summary.
echo
echo "== cvmm hardware harness: $([ "$emulated" = 1 ] && echo "emulated platforms" || echo "hardware") =="
printf '%-13s %-6s %-12s %s\n' TEE GUEST CHECK RESULT
for r in "${rows[@]}"; do
    IFS='|' read -r t g c res detail <<< "$r"
    if [ "$res" = SKIP ]; then
        printf '%-13s %-6s %-12s SKIP: %s\n' "$t" "$g" "$c" "$detail"
    else
        printf '%-13s %-6s %-12s %s  %s\n' "$t" "$g" "$c" "$res" "$detail"
    fi
done
echo "harness: $passed passed, $failed failed, $skipped skipped; logs in $out"
if [ "$failed" -gt 0 ]; then exit 1; fi
if [ "$passed" -eq 0 ]; then echo "harness: nothing was tested"; exit 3; fi
exit 0
