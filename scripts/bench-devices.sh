#!/usr/bin/env bash
# Host-side virtio device benchmark: virtio-blk and virtio-net queues driven directly
# by a mock driver (net tx over a Unix datagram pair, over the file backend to a file
# in /dev/shm, and over the shared-memory ring backend in /dev/shm), 4 KiB and 64 KiB
# requests, MB/s next to a memcpy of the same bytes measured in the same run (each device run paired with a memcpy run; median of the
# pairs). Goal (docs/devices.md, "Performance"): 64 KiB virtio-blk reads and writes and
# virtio-net transmits at >= 70% of memcpy. Nothing is asserted but that every request
# succeeded and every byte arrived.
#
# usage: scripts/bench-devices.sh [case filter, e.g. "blk read  64"] [pairs per case, default 5]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo run --release -q -p devices --example virtio_bench -- "$@"
