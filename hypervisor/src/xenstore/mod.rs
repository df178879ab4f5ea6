//! Xenstore: wire codec, paths, permissions and the pure store (filled in by the xenstore work).
