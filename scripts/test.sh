#!/usr/bin/env bash
# Runs cvmm's whole test suite on a fresh machine: prepares the guest kernels the
# tests boot or parse (installing what that needs; cached after the first run), then
# runs every unit, integration and doc test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
echo "test.sh: preparing the test kernel (cached after the first build)" >&2
CVMM_TEST_KERNEL=$(scripts/build-test-kernel.sh | tail -n 1)
echo "test.sh: fetching Debian's stock bzImage (cached)" >&2
CVMM_DEBIAN_BZIMAGE=$(scripts/fetch-debian-kernel.sh | tail -n 1)
export CVMM_TEST_KERNEL CVMM_DEBIAN_BZIMAGE

cargo test --workspace --locked "$@"
