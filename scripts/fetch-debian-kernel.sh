#!/usr/bin/env bash
# Fetches Debian's stock kernel (the package linux-image-amd64 depends on) and
# unpacks its bzImage into a cache, without installing it on this machine.
# The loader tests parse and place this image; it is too slow to boot on hosts
# whose KVM emulates CPL0 code.
# Prints the bzImage's absolute path as the last line of stdout.
set -euo pipefail

cache_root="${CVMM_CACHE_DIR:-$HOME/.cache/cvmm}/debian-kernel"
log() { echo "fetch-debian-kernel: $*" >&2; }

if ! apt-cache show linux-image-amd64 >/dev/null 2>&1; then
    log "updating the package lists"
    apt-get update -qq >&2
fi
pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
[ -n "$pkg" ] || { log "cannot find the kernel package linux-image-amd64 depends on"; exit 1; }
version=$(apt-cache policy "$pkg" | awk '/Candidate:/ {print $2}')
dest="$cache_root/$pkg-$version"

if [ ! -s "$dest/vmlinuz" ]; then
    log "downloading $pkg $version"
    work=$(mktemp -d)
    chmod 755 "$work"  # apt-get download drops privileges to _apt
    trap 'rm -rf "$work"' EXIT
    (cd "$work" && apt-get download -qq "$pkg=$version" >&2)
    dpkg-deb -x "$work"/*.deb "$work/root"
    mkdir -p "$dest"
    image=$(ls "$work"/root/boot/vmlinuz-* | head -n 1)
    cp "$image" "$dest/vmlinuz.tmp"
    mv "$dest/vmlinuz.tmp" "$dest/vmlinuz"
fi
echo "$dest/vmlinuz"
