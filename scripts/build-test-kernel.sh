#!/usr/bin/env bash
# Build a tiny Linux guest kernel for cvmm's tests and cache it.
#
# Source: Debian 12's linux-source-6.1 package. Output: an uncompressed ELF
# `vmlinux` that carries the Xen PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY), so
# it can be booted through its PVH entry point.
#
# The config and the source changes follow shared/HOST-KVM.md: the KVM on our
# machines emulates guest CPL0 code (slowly) and cannot emulate INT3,
# FNCLEX/EMMS/FILD or FWAIT, among others, so the kernel is kept tiny and the
# code paths that execute those instructions unconditionally are patched out.
# Boot it with a command line such as
#   console=ttyS0 earlyprintk=serial noxsave nofsgsbase clearcpuid=308,151,59,534,298
#
# Usage: scripts/build-test-kernel.sh
#   Prints the absolute path of the cached vmlinux as the last line of stdout;
#   progress goes to stderr. A rerun with nothing changed returns at once.
# Environment:
#   CVMM_CACHE_DIR            cache root (default: $HOME/.cache/cvmm)
#   CVMM_TEST_KERNEL_REBUILD  set to 1 to rebuild even if the cache is valid
set -euo pipefail

SRC_PKG=linux-source-6.1
SRC_TARBALL=/usr/src/linux-source-6.1.tar.xz
PKGS=("$SRC_PKG" build-essential bc bison flex libelf-dev libssl-dev lz4 cpio xz-utils binutils patch perl)

CACHE="${CVMM_CACHE_DIR:-$HOME/.cache/cvmm}/test-kernel"
SELF="$(readlink -f "${BASH_SOURCE[0]}")"

log() { printf '[build-test-kernel] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# run LOGFILE CMD...: run CMD with its output appended to LOGFILE; on failure
# show the log's tail and stop.
run() {
    local logfile=$1 rc=0
    shift
    "$@" >>"$logfile" 2>&1 || rc=$?
    if [ "$rc" -ne 0 ]; then
        log "command failed (exit $rc): $*"
        log "last lines of $logfile:"
        tail -n 60 "$logfile" >&2
        exit "$rc"
    fi
}

mkdir -p "$CACHE"
CACHE="$(cd "$CACHE" && pwd -P)"

# Serialise concurrent runs (e.g. parallel test jobs) on the same cache.
exec 9>"$CACHE/.lock"
flock 9

# --- 1. Packages -------------------------------------------------------------
pkg_installed() {
    [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null || true)" = installed ]
}
missing=()
for p in "${PKGS[@]}"; do
    pkg_installed "$p" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    sudo_cmd=()
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null || die "need root (or sudo) to install: ${missing[*]}"
        sudo_cmd=(sudo)
    fi
    log "installing ${missing[*]} (apt log: $CACHE/apt.log)"
    : >"$CACHE/apt.log"
    run "$CACHE/apt.log" "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update
    run "$CACHE/apt.log" "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y --no-install-recommends "${missing[@]}"
fi
[ -f "$SRC_TARBALL" ] || die "$SRC_TARBALL missing although $SRC_PKG is installed"

# --- 2. Cache check ----------------------------------------------------------
# The key covers this script (config + patches live in it), the kernel source
# version and the compiler.
SRC_VERSION="$(dpkg-query -W -f='${Version}' "$SRC_PKG")"
KEY="$({
    sha256sum <"$SELF"
    echo "$SRC_PKG $SRC_VERSION"
    gcc --version | head -n 1
} | sha256sum | cut -d' ' -f1)"

OUT="$CACHE/vmlinux"
if [ "${CVMM_TEST_KERNEL_REBUILD:-0}" != 1 ] && [ -f "$OUT" ] && [ -f "$CACHE/key" ] &&
    [ "$(cat "$CACHE/key")" = "$KEY" ]; then
    log "cached: $OUT ($SRC_PKG $SRC_VERSION)"
    echo "$OUT"
    exit 0
fi

# --- 3. Source ---------------------------------------------------------------
BUILD_LOG="$CACHE/build.log"
WORK="$CACHE/build"
rm -f "$CACHE/key"
rm -rf "$WORK"
mkdir -p "$WORK"
: >"$BUILD_LOG"
start=$SECONDS
log "building tiny kernel from $SRC_PKG $SRC_VERSION (log: $BUILD_LOG)"
log "extracting $SRC_TARBALL"
run "$BUILD_LOG" tar -xf "$SRC_TARBALL" -C "$WORK"
SRC="$WORK/linux-source-6.1"
[ -f "$SRC/Makefile" ] || die "unexpected tarball layout: no $SRC/Makefile"
cd "$SRC"

# Source changes. `patch --fuzz=0` fails if any hunk's context is not found
# exactly, so a changed linux-source cannot silently skip one.
log "patching source"
run "$BUILD_LOG" patch -p1 --forward --fuzz=0 --no-backup-if-mismatch <<'PATCH'
--- a/arch/x86/kernel/alternative.c
+++ b/arch/x86/kernel/alternative.c
@@ -1149,7 +1149,9 @@
 {
 	u64 ibt;
 
-	int3_selftest();
+	/* cvmm test kernel: INT3 is not emulated by the host's KVM; skip the selftest. */
+	if (0)
+		int3_selftest();
 
 	/*
 	 * The patching is not fully atomic, so try to avoid local
--- a/arch/x86/kernel/fpu/core.c
+++ b/arch/x86/kernel/fpu/core.c
@@ -141,7 +141,8 @@
 	 * here by setting it to fixed values.  "m" is a random variable
 	 * that should be in L1.
 	 */
-	if (unlikely(static_cpu_has_bug(X86_BUG_FXSAVE_LEAK))) {
+	/* cvmm test kernel: FNCLEX/EMMS/FILD are not emulated by the host's KVM. */
+	if (0 && unlikely(static_cpu_has_bug(X86_BUG_FXSAVE_LEAK))) {
 		asm volatile(
 			"fnclex\n\t"
 			"emms\n\t"
@@ -671,7 +672,8 @@
 
 	if (fpu == &current->thread.fpu) {
 		/* Ignore delayed exceptions from user space */
-		asm volatile("1: fwait\n"
+		/* cvmm test kernel: FWAIT is not emulated by the host's KVM. */
+		asm volatile("1: nop\n"
 			     "2:\n"
 			     _ASM_EXTABLE(1b, 2b));
 		fpregs_deactivate(fpu);
PATCH
# Belt and braces: the instructions must be gone from the code paths above.
grep -q 'if (0)$' arch/x86/kernel/alternative.c || die "int3_selftest patch did not apply"
grep -q 'if (0 && unlikely(static_cpu_has_bug(X86_BUG_FXSAVE_LEAK)))' arch/x86/kernel/fpu/core.c ||
    die "FXSAVE_LEAK patch did not apply"
grep -q '"1: fwait' arch/x86/kernel/fpu/core.c && die "fpu__drop FWAIT patch did not apply"

# --- 4. Config ---------------------------------------------------------------
MAKE=(make ARCH=x86_64 -j"$(nproc)")
ENABLE=(
    64BIT PRINTK EARLY_PRINTK TTY SERIAL_8250 SERIAL_8250_CONSOLE
    BLK_DEV_INITRD BINFMT_ELF BLOCK BLK_DEV PARTITION_ADVANCED MSDOS_PARTITION
    VIRTIO_MENU VIRTIO VIRTIO_MMIO VIRTIO_MMIO_CMDLINE_DEVICES VIRTIO_CONSOLE VIRTIO_BLK
    HW_RANDOM HW_RANDOM_VIRTIO
    HYPERVISOR_GUEST PARAVIRT KVM_GUEST PVH KERNEL_LZ4
)
# Enabled, but their menu may be absent (then they must merely not be "=n"):
# the crypto self-tests only exist if something selects CONFIG_CRYPTO.
ENABLE_IF_VISIBLE=(CRYPTO_MANAGER_DISABLE_TESTS)
DISABLE=(
    KERNEL_XZ KERNEL_GZIP KERNEL_BZIP2 KERNEL_LZMA KERNEL_LZO KERNEL_ZSTD
    LEGACY_PTYS VT
    # Other hardware RNG drivers that HW_RANDOM would default on: not wanted.
    HW_RANDOM_INTEL HW_RANDOM_AMD HW_RANDOM_VIA
)
declare -A VALUES=([SERIAL_8250_NR_UARTS]=1 [SERIAL_8250_RUNTIME_UARTS]=1)

log "configuring (tinyconfig + cvmm options)"
run "$BUILD_LOG" "${MAKE[@]}" tinyconfig
cfg_args=()
for o in "${ENABLE[@]}" "${ENABLE_IF_VISIBLE[@]}"; do cfg_args+=(--enable "$o"); done
for o in "${DISABLE[@]}"; do cfg_args+=(--disable "$o"); done
for o in "${!VALUES[@]}"; do cfg_args+=(--set-val "$o" "${VALUES[$o]}"); done
run "$BUILD_LOG" ./scripts/config --file .config "${cfg_args[@]}"
run "$BUILD_LOG" "${MAKE[@]}" olddefconfig

bad=()
for o in "${ENABLE[@]}"; do
    grep -qx "CONFIG_$o=y" .config || bad+=("CONFIG_$o should be y, is: $(grep -E "(^|# )CONFIG_${o}[= ]" .config || echo unset)")
done
for o in "${ENABLE_IF_VISIBLE[@]}"; do
    ! grep -qx "# CONFIG_$o is not set" .config || bad+=("CONFIG_$o should be y, is: not set")
done
for o in "${DISABLE[@]}"; do
    ! grep -qx "CONFIG_$o=[ym]" .config || bad+=("CONFIG_$o should be off, is: $(grep -x "CONFIG_$o=[ym]" .config)")
done
for o in "${!VALUES[@]}"; do
    grep -qx "CONFIG_$o=${VALUES[$o]}" .config || bad+=("CONFIG_$o should be ${VALUES[$o]}, is: $(grep -E "(^|# )CONFIG_${o}[= ]" .config || echo unset)")
done
if [ "${#bad[@]}" -gt 0 ]; then
    for b in "${bad[@]}"; do log "config: $b"; done
    die "kernel config is missing required options (see above); .config kept in $SRC"
fi

# --- 5. Build ----------------------------------------------------------------
log "make vmlinux (-j$(nproc)); this takes a few minutes"
run "$BUILD_LOG" "${MAKE[@]}" vmlinux

# The PVH entry is announced by an ELF note of owner "Xen", type 18
# (XEN_ELFNOTE_PHYS32_ENTRY = 0x12).
readelf -n vmlinux | grep -Eiq 'Xen[[:space:]]+0x[0-9a-f]+[[:space:]].*(0x0*12\)|PHYS32_ENTRY)' ||
    die "vmlinux has no Xen PVH note (XEN_ELFNOTE_PHYS32_ENTRY); readelf -n says: $(readelf -n vmlinux | grep -i xen || true)"
KVER="$(cat include/config/kernel.release)"

cp vmlinux "$OUT.tmp"
mv -f "$OUT.tmp" "$OUT"
cp .config "$CACHE/config"
echo "$KVER" >"$CACHE/kernel.release"
echo "$KEY" >"$CACHE/key"
cd "$CACHE"
rm -rf "$WORK"
log "built $KVER in $((SECONDS - start)) s: $OUT"
echo "$OUT"
