#!/usr/bin/env bash
# Installs what cvmm's tests and tools need on a fresh Debian 12 machine (idempotent;
# installs only what is missing). Called by scripts/test.sh.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

apt_need=()
[ -f /usr/share/ovmf/OVMF.fd ] || apt_need+=(ovmf)           # a real firmware image to measure
command -v setpriv >/dev/null || apt_need+=(util-linux)      # permission tests
command -v cc >/dev/null || apt_need+=(build-essential)      # links the no_std guests
command -v curl >/dev/null || apt_need+=(curl)               # the API tests' HTTP client
if [ ${#apt_need[@]} -gt 0 ]; then
    echo "setup.sh: installing ${apt_need[*]}" >&2
    apt-get update -qq
    apt-get install -y -qq "${apt_need[@]}" >&2
fi

# sev-snp-measure: the third-party SNP launch-digest calculator the tests compare with.
if ! command -v sev-snp-measure >/dev/null; then
    echo "setup.sh: installing sev-snp-measure" >&2
    python3 -m pip install -q 'sev-snp-measure==0.0.13' >&2
    # pyenv puts console scripts behind shims that exist only after a rehash.
    if command -v pyenv >/dev/null; then pyenv rehash; fi
    command -v sev-snp-measure >/dev/null || {
        echo "setup.sh: sev-snp-measure was installed but is not on PATH ($(python3 -m pip show -f sev-snp-measure | grep -m1 bin/ || true))" >&2
        exit 1
    }
fi
