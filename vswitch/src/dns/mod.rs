//! The DNS forwarder of NAT networks: the gateway is the guests' DNS server (DHCP option
//! 6) and relays their queries to dom0's resolvers, as dnsmasq does for libvirt
//! (ecosystem.md §D.1, `strict-order`).
//!
//! * [`wire`]: the DNS header and question checks (RFC 1035 §4.1);
//! * [`forwarder`]: query-id remapping, the pending table, answer matching (id, source
//!   and question, to resist spoofed answers; RFC 5452), the reply frame;
//! * [`resolv`]: the `nameserver` lines of `/etc/resolv.conf` (resolv.conf(5)).
//!
//! The shell owns the upstream UDP socket(s) and reads `/etc/resolv.conf`; this core never
//! touches either. DNS over TCP is not forwarded.

pub mod forwarder;
pub mod resolv;
pub mod wire;

pub use forwarder::{DnsConfig, DnsForwarder, DnsStats, GuestEndpoint, UpstreamQuery};
pub use resolv::parse_resolv_conf;
pub use wire::{DnsError, DnsHeader, Question};
