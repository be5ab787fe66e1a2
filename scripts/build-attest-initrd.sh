#!/usr/bin/env bash
# Builds the attestation initrd for scripts/hw-harness.sh's Linux guest rows: a newc cpio
# archive whose only program is /init, scripts/attest-init.c compiled statically. In an
# SEV-SNP or TDX guest it prints the guest's attestation report (or quote) on the console
# and reboots, which ends the VM (docs/hardware-testing.md says which guest kernel options
# it needs).
#
# Usage: scripts/build-attest-initrd.sh [OUT]   (default: target/attest-initrd.cpio)
# Needs a C compiler with a static libc (Debian: gcc, libc6-dev) and cpio. CC overrides cc.
# Prints the archive's absolute path as the last line of stdout.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$root/target/attest-initrd.cpio}
case "$out" in /*) ;; *) out="$PWD/$out" ;; esac
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

mkdir -p "$work/root/dev" "$work/root/proc" "$work/root/sys" "$(dirname "$out")"
"${CC:-cc}" -static -Os -Wall -Wextra -Werror -o "$work/root/init" "$root/scripts/attest-init.c"
(cd "$work/root" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) > "$out.tmp"
mv "$out.tmp" "$out"
echo "build-attest-initrd: $(stat -c %s "$out") bytes" >&2
echo "$out"
