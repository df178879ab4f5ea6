//! The DHCPv4 server of domnet's networks (RFC 2131, RFC 2132): what dnsmasq does for
//! libvirt's `virbr0` (ecosystem.md §D.1) and what `vif-nat`'s dhcpd host entries did for
//! Xen (xen-networking.md §6.4), so that `ip=` becomes real: a vif with `ip=` always gets
//! exactly that address.
//!
//! * [`wire`]: the total message parser and the reply emitter;
//! * [`lease`]: the lease table, its change records and their text form;
//! * [`server`]: the RFC 2131 §4.3 state machine with starvation protection
//!   (robustness.md §3 d1–d4).

pub mod lease;
pub mod server;
pub mod wire;

pub use lease::{Lease, LeaseChange, LeaseRecord, LeaseState, LeaseTable, ParseLeaseError};
pub use server::{DhcpConfig, DhcpConfigError, DhcpOutcome, DhcpServer, DhcpStats};
pub use wire::{DhcpError, DhcpMessage, DhcpOptions, DhcpReply, MessageType};
