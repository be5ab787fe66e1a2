#!/usr/bin/env bash
# Host-side virtio device benchmark: virtio-blk and virtio-net queues driven directly
# by a mock driver, 4 KiB and 64 KiB requests, MB/s next to a memcpy of the same bytes
# measured in the same run. Nothing is asserted.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo run --release -q -p devices --example virtio_bench
