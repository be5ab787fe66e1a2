//! virtio-console (being written).
