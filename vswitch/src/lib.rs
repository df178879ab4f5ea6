//! The sans-IO core of domnet's userspace switch (DESIGN.md "Sans-IO cores", "The data
//! path").
//!
//! Layers, bottom up:
//! * [`wire`]: zero-copy views of Ethernet, VLAN, ARP, IPv4, IPv6, ICMP, UDP and TCP
//!   headers in smoltcp's style, checksums (with RFC 1624 incremental update), the one-pass
//!   [`FrameInfo`] every stage reuses, and builders for synthesised frames;
//! * [`fdb`]: the MAC learning table (OVS semantics: 300 s aging, 8192 entries, fair
//!   eviction, static entries, gratuitous-ARP lock);
//! * [`antispoof`]: fail-closed ingress filtering of guest vifs;
//! * [`bridge`]: the forwarding pipeline, `(in_port, frame, meta, now) -> Verdict`, single
//!   frames or batches, with per-port egress checks;
//! * [`counters`]: per-port counters and the closed [`DropReason`] enum, with the
//!   conservation rule of robustness.md §4.1;
//! * [`pcap`]: a libpcap writer for `domnet capture`;
//! * [`harness`]: an in-memory fabric with a fake clock for tests;
//! * [`router`]: the route-mode L3 core (`vif-route`): proxy ARP, /32 routes, TTL, ICMP
//!   errors, fragmentation, the neighbour cache;
//! * [`nat`]: connection tracking, masquerade, port forwards and hairpin, and the NAT
//!   network's gateway that ties NAT, DHCP and DNS to a bridge (libvirt's `virbr0`);
//! * [`dhcp`]: the DHCPv4 server (RFC 2131) with leases that survive restarts;
//! * [`dns`]: the DNS forwarder core for NAT guests;
//! * [`impair`]: netem-like delay, jitter and loss on a port, for test rigs.
//!
//! Nothing here performs I/O, reads a clock or spawns a thread: time is a [`Timestamp`]
//! passed in, and the datapath shell that owns sockets and threads drives these types.

#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod antispoof;
pub mod bridge;
pub mod counters;
pub mod datapath;
pub mod dhcp;
pub mod dns;
pub mod fdb;
pub mod harness;
pub mod impair;
pub mod meta;
pub mod nat;
pub mod pcap;
pub mod port;
pub mod router;
pub mod time;
pub mod wire;

pub use bridge::{Bridge, BridgeConfig, BridgeError, Decision, RxFrame, Verdict, MAX_BATCH};
pub use counters::{BridgeCounters, DropCounts, DropReason, PortCounters};
pub use fdb::{Fdb, FdbConfig, FdbRow, FdbStats, LearnOutcome};
pub use meta::{FrameMeta, Gso, GsoKind};
pub use port::{PortConfig, PortId, PortKind, VifConfig, VlanMode};
pub use time::Timestamp;
pub use wire::{FrameInfo, MacAddr};
