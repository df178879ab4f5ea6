//! The pure cores of netfront, the guest half of a vif (xen-networking.md §1.3–§1.5).
//!
//! * [`tx`] — lay a frame over granted pages as tx requests (first slot = total size, GSO
//!   extra, checksum flags, ≤ 18 data slots) and track which ids await responses;
//! * [`rx`] — post rx buffers (id = slot index) and turn rx responses back into frames.
//!
//! The backend is a peer too: every response is copied before it is checked, and a
//! backend that answers ids it was never given, or publishes more responses than there
//! are requests, is treated as broken (Linux netfront's `info->broken`).
//! Malformed rx frames are dropped and counted, as netfront's `rx_errors`.

pub mod port;
pub mod rx;
pub mod tx;
