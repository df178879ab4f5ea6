//! Per-port counters and the closed set of drop reasons.
//!
//! Nothing is dropped silently (DESIGN.md "The data path"): every drop names a
//! [`DropReason`], a closed enum with stable snake_case names taken from the devlink-trap
//! and OVS vocabularies (robustness.md §4.2, §4.3), never a free-form string. Counters obey
//! the conservation rule of robustness.md §4.1, per port and direction:
//!
//! * receive: `rx_packets = rx_forwarded + rx_delivered_local + Σ rx_drops[reason]`
//! * transmit: `tx_offered = tx_packets + Σ tx_drops[reason]`
//!
//! where `tx_offered` counts every (frame, destination port) pair the pipeline decided on,
//! so a shell that forgets to report an outcome breaks the equation.

use core::fmt;
use core::ops::{Index, IndexMut};

macro_rules! drop_reasons {
    ($($(#[$doc:meta])* $variant:ident => $name:literal,)*) => {
        /// Why a frame was dropped.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum DropReason {
            $($(#[$doc])* $variant,)*
        }

        impl DropReason {
            /// Every reason, in declaration order (for listings and `stats` output).
            pub const ALL: &'static [DropReason] = &[$(DropReason::$variant,)*];

            /// Number of reasons.
            pub const COUNT: usize = Self::ALL.len();

            /// The stable snake_case name used in `domnet stats` and logs.
            pub const fn name(self) -> &'static str {
                match self {
                    $(DropReason::$variant => $name,)*
                }
            }

            /// The reason with this name, if any.
            pub fn from_name(name: &str) -> Option<DropReason> {
                match name {
                    $($name => Some(DropReason::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

drop_reasons! {
    /// The frame arrived on a port id the bridge does not have (OVS
    /// `datapath_drop_invalid_port`). Counted per bridge, since there is no port.
    UnknownPort => "unknown_port",
    /// The ingress (or, on transmit, the egress) port is administratively disabled.
    PortDisabled => "port_disabled",
    /// Shorter than an Ethernet header (robustness.md §3 b1; `PKT_TOO_SMALL`).
    RuntFrame => "runt_frame",
    /// Source MAC is a group address (devlink `source_mac_is_multicast`, §3 b9).
    SourceMacMulticast => "source_mac_multicast",
    /// Source MAC is all zeros (Linux `is_valid_ether_addr`, §3 b9).
    SourceMacZero => "source_mac_zero",
    /// A VLAN-tagged frame on a port that accepts untagged frames only (devlink
    /// `ingress_vlan_filter`, §3 b3).
    IngressVlanFilter => "ingress_vlan_filter",
    /// A vif sent a frame whose source MAC is not its own (§3 b5; libvirt
    /// `no-mac-spoofing`).
    SpoofedSourceMac => "spoofed_source_mac",
    /// A vif sent IP from an address outside its allowed set (§3 b5; libvirt
    /// `no-ip-spoofing`).
    SpoofedSourceIp => "spoofed_source_ip",
    /// A vif sent ARP with a foreign sender MAC or sender IP (§3 b6; libvirt
    /// `no-arp-spoofing`).
    SpoofedArp => "spoofed_arp",
    /// A vif advertised (IPv6 NA) an address it does not own (§3 b12).
    SpoofedNeighborAdvert => "spoofed_neighbor_advert",
    /// A vif with IP filtering sent a protocol it has no addresses for, or a non-IP,
    /// non-ARP frame (fail closed, §3 b5).
    DisallowedEthertype => "disallowed_ethertype",
    /// A vif sent an ARP/IP/L4 header too broken to check (§3 b10; fail closed).
    MalformedHeader => "malformed_header",
    /// A vif sent a DHCP or DHCPv6 server message (UDP source port 67 / 547).
    RogueDhcpServer => "rogue_dhcp_server",
    /// A vif sent an IPv6 Router Advertisement (RA-Guard, RFC 6105, §3 b12).
    Ipv6RaFromGuest => "ipv6_ra_from_guest",
    /// A vif sent an IPv6 first fragment whose header chain does not reach the
    /// upper-layer header (the RA-Guard evasion of RFC 7113).
    Ipv6IncompleteHeaderChain => "ipv6_incomplete_header_chain",
    /// The offload metadata contradicts the frame (GSO on a non-TCP/UDP packet, GSO size
    /// 0; netback `xenvif_set_skb_gso`).
    InvalidGso => "invalid_gso",
    /// Destination is 01:80:C2:00:00:0X, never forwarded by a bridge (§3 b9).
    ReservedMulticast => "reserved_multicast",
    /// The MAC table sends the frame back out of its ingress port (devlink
    /// `port_loopback_filter`).
    PortLoopback => "port_loopback",
    /// Flooding found no other enabled port (devlink `port_list_is_empty`).
    PortListEmpty => "port_list_is_empty",
    /// The MAC table points at a disabled port (a static entry; learned ones are flushed
    /// when the port goes down).
    EgressPortDisabled => "egress_port_disabled",
    /// A tagged frame would leave through an untagged-only port.
    EgressVlanFilter => "egress_vlan_filter",
    /// The frame (or, for GSO, one segment) exceeds the egress port's MTU (§3 b4, devlink
    /// `mtu_value_is_too_small`).
    EgressMtuExceeded => "egress_mtu_exceeded",
    /// The egress queue or ring was full (devlink `tail_drop`; netback `tx_dropped`).
    TxQueueFull => "tx_queue_full",
    /// Writing to the egress port failed.
    TxError => "tx_error",
    /// Lost, or over the queue limit, on a link impaired for a test rig (netem's
    /// `loss`/`limit`; see `impair`).
    LinkImpairment => "link_impairment",
    /// The routed path received a frame that is neither IPv4 nor ARP (robustness.md §3 b2,
    /// devlink `non_ip`).
    NonIp => "non_ip",
    /// The routed path received an IPv4 header whose checksum does not verify (§3 b10,
    /// kernel `IP_CSUM`).
    IpChecksum => "ip_csum",
    /// A routed or NAT port received a frame addressed to another host's MAC (kernel
    /// `OTHERHOST`): on a shared uplink this is the neighbours' and dom0's own traffic.
    OtherHost => "otherhost",
    /// A unicast destination IP inside a multicast/broadcast Ethernet frame (§3 b13,
    /// devlink `uc_dip_over_mc_dmac`).
    UnicastDipOverMulticastDmac => "uc_dip_over_mc_dmac",
    /// Source IP that may never appear on the wire of a routed link: multicast,
    /// limited broadcast, loopback, 0.0.0.0, class E, link-local (§3 b13; Linux
    /// `martian_source`, RFC 1812 §5.3.7, RFC 3927 §7).
    MartianSource => "martian_source",
    /// Destination IP that is never routed: 0.0.0.0, loopback, class E (§3 b13; Linux
    /// `martian_destination`, RFC 1812 §5.3.7).
    MartianDestination => "martian_destination",
    /// Broadcast, multicast or link-local destination: never routed and never
    /// masqueraded (RFC 1812 §5.3.5, RFC 3927 §7; libvirt's NAT `return` rules).
    NotRoutable => "not_routable",
    /// TTL would reach zero (RFC 1812 §5.3.1; devlink `ttl_value_is_too_small`); an ICMP
    /// time-exceeded is sent when allowed.
    TtlExpired => "ttl_value_is_too_small",
    /// No route to the destination (kernel `IP_NOROUTE`); ICMP net unreachable is sent.
    NoRoute => "ip_noroute",
    /// The route is of type unreachable (ICMP host unreachable is sent).
    UnreachableRoute => "unreachable_route",
    /// The route is of type prohibit (ICMP administratively prohibited is sent).
    ProhibitedRoute => "prohibited_route",
    /// The route is a blackhole (silent; devlink `blackhole_route`).
    BlackholeRoute => "blackhole_route",
    /// The next hop's MAC could not be resolved: resolution failed or timed out, the
    /// neighbour table or the pending queue is full (devlink `unresolved_neigh`, kernel
    /// `NEIGH_FAILED`/`NEIGH_QUEUEFULL`).
    UnresolvedNeigh => "unresolved_neigh",
    /// A new connection found the conntrack table full (robustness.md §3 c1; OVS
    /// `conntrack_full`).
    ConntrackFull => "conntrack_full",
    /// A new connection found its guest's (zone's) share of the table used up (§3 c1;
    /// OVS `conntrack_zone_full`).
    ConntrackZoneFull => "conntrack_zone_full",
    /// No free NAT source port (or ICMP id) for the connection: "Unable to NAT due to
    /// tuple space exhaustion" (§3 c2).
    NatPortExhausted => "nat_no_port",
    /// A packet conntrack classes INVALID: impossible TCP flags, a TCP non-SYN with no
    /// connection (§3 c4; OVS `conntrack_invalid_tcp_flags`).
    ConntrackInvalid => "conntrack_invalid",
    /// A new mapping would collide with an existing one (port shadowing or DNAT clash,
    /// §3 c6).
    NatClash => "nat_clash",
    /// An ICMP error whose embedded packet is unusable or unrelated: nested error, inner
    /// source not the outer destination, fewer than 8 L4 bytes, no matching connection
    /// (§3 c3).
    IcmpErrorInvalid => "icmp_error_invalid",
    /// A guest sent to the external (uplink) address on a port with no port forward: NAT
    /// has nowhere to send it (dom0's own services are not reachable through NAT).
    NatNoForward => "nat_no_forward",
    /// A non-first IPv4 fragment for which no first fragment was seen (so its connection
    /// is unknown; §3 b11).
    FragmentNoFlow => "fragment_no_flow",
    /// A DHCP message that fails the total parser: bad cookie, option overrun, no END,
    /// wrong hardware type, oversized (robustness.md §3 d2, d3).
    DhcpMalformed => "dhcp_malformed",
    /// A DHCP `chaddr` that is not the frame's source MAC (§3 d1).
    DhcpChaddrMismatch => "dhcp_chaddr_mismatch",
    /// A port sent DHCP faster than its allowance (§3 d1).
    DhcpRateLimited => "dhcp_rate_limited",
    /// A new lease would exceed the per-port or the total lease cap (§3 d1).
    DhcpLeaseLimit => "dhcp_lease_limit",
    /// The dynamic pool has no free address.
    DhcpPoolExhausted => "dhcp_pool_exhausted",
    /// A DHCP message the server does not serve: relayed (giaddr set), or a server-only
    /// message type sent by a client.
    DhcpUnsupported => "dhcp_unsupported",
    /// A DNS query the forwarder refuses to parse: a response, no question, oversized,
    /// truncated (§3 d2 applied to DNS).
    DnsMalformed => "dns_malformed",
    /// The DNS forwarder's pending-query table is full, or there is no upstream server.
    DnsUnavailable => "dns_unavailable",
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A count per [`DropReason`].
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct DropCounts([u64; DropReason::COUNT]);

impl Default for DropCounts {
    fn default() -> Self {
        DropCounts([0; DropReason::COUNT])
    }
}

impl DropCounts {
    /// Sum over all reasons.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// Reasons with a non-zero count, in declaration order.
    pub fn nonzero(&self) -> impl Iterator<Item = (DropReason, u64)> + '_ {
        DropReason::ALL
            .iter()
            .zip(self.0.iter())
            .filter(|(_, &n)| n != 0)
            .map(|(&r, &n)| (r, n))
    }

    /// Adds another set of counts.
    pub fn add(&mut self, other: &DropCounts) {
        for (a, b) in self.0.iter_mut().zip(other.0.iter()) {
            *a += b;
        }
    }
}

impl Index<DropReason> for DropCounts {
    type Output = u64;
    fn index(&self, r: DropReason) -> &u64 {
        // `r as usize` < COUNT by construction of the enum.
        &self.0[r as usize]
    }
}

impl IndexMut<DropReason> for DropCounts {
    fn index_mut(&mut self, r: DropReason) -> &mut u64 {
        &mut self.0[r as usize]
    }
}

impl fmt::Debug for DropCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.nonzero().map(|(r, n)| (r.name(), n)))
            .finish()
    }
}

/// Counters of one port. "rx" is what the port handed to the switch, "tx" what the switch
/// handed (or tried to hand) to the port.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortCounters {
    /// Frames received from the port.
    pub rx_packets: u64,
    /// Bytes received from the port.
    pub rx_bytes: u64,
    /// Received frames given a forwarding decision (unicast or flood).
    pub rx_forwarded: u64,
    /// Of `rx_forwarded`, those flooded (broadcast, multicast, unknown unicast).
    pub rx_flooded: u64,
    /// Received frames consumed inside the switch (router, DHCP server).
    pub rx_delivered_local: u64,
    /// Received frames dropped, by reason.
    pub rx_drops: DropCounts,
    /// (frame, this port) pairs the pipeline decided to send here.
    pub tx_offered: u64,
    /// Frames transmitted on the port.
    pub tx_packets: u64,
    /// Bytes transmitted on the port.
    pub tx_bytes: u64,
    /// Offered frames dropped at egress, by reason.
    pub tx_drops: DropCounts,
}

/// A counter equation of robustness.md §4.1 failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConservationError {
    /// Receive side does not add up.
    #[error(
        "rx: {rx_packets} received != {forwarded} forwarded + {local} local + {dropped} dropped"
    )]
    Rx {
        /// Frames received.
        rx_packets: u64,
        /// Frames forwarded.
        forwarded: u64,
        /// Frames delivered locally.
        local: u64,
        /// Frames dropped.
        dropped: u64,
    },
    /// Transmit side does not add up.
    #[error("tx: {offered} offered != {sent} sent + {dropped} dropped")]
    Tx {
        /// Frames offered.
        offered: u64,
        /// Frames sent.
        sent: u64,
        /// Frames dropped.
        dropped: u64,
    },
}

impl PortCounters {
    /// Checks both conservation equations.
    pub fn check_conservation(&self) -> Result<(), ConservationError> {
        let dropped = self.rx_drops.total();
        if self.rx_packets != self.rx_forwarded + self.rx_delivered_local + dropped {
            return Err(ConservationError::Rx {
                rx_packets: self.rx_packets,
                forwarded: self.rx_forwarded,
                local: self.rx_delivered_local,
                dropped,
            });
        }
        let dropped = self.tx_drops.total();
        if self.tx_offered != self.tx_packets + dropped {
            return Err(ConservationError::Tx {
                offered: self.tx_offered,
                sent: self.tx_packets,
                dropped,
            });
        }
        Ok(())
    }

    /// Adds another port's counters (for bridge totals).
    pub fn add(&mut self, o: &PortCounters) {
        self.rx_packets += o.rx_packets;
        self.rx_bytes += o.rx_bytes;
        self.rx_forwarded += o.rx_forwarded;
        self.rx_flooded += o.rx_flooded;
        self.rx_delivered_local += o.rx_delivered_local;
        self.rx_drops.add(&o.rx_drops);
        self.tx_offered += o.tx_offered;
        self.tx_packets += o.tx_packets;
        self.tx_bytes += o.tx_bytes;
        self.tx_drops.add(&o.tx_drops);
    }
}

/// Bridge-wide totals: the sum over current ports plus removed ports, plus what belongs to
/// no port.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BridgeCounters {
    /// Sum of all ports' counters, including ports since removed.
    pub ports: PortCounters,
    /// Frames that arrived with an unknown port id (`unknown_port`).
    pub unknown_port: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_snake_case_and_round_trip() {
        let mut seen = std::collections::HashSet::new();
        for &r in DropReason::ALL {
            let n = r.name();
            assert!(seen.insert(n), "duplicate {n}");
            assert!(
                n.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "{n}"
            );
            assert_eq!(DropReason::from_name(n), Some(r));
            assert_eq!(r.to_string(), n);
        }
        assert_eq!(DropReason::COUNT, DropReason::ALL.len());
        assert_eq!(DropReason::from_name("nope"), None);
        // Discriminants index the array: the last one must be COUNT - 1.
        let last = *DropReason::ALL.last().unwrap();
        assert_eq!(last as usize, DropReason::COUNT - 1);
    }

    #[test]
    fn conservation() {
        let mut c = PortCounters {
            rx_packets: 5,
            rx_forwarded: 3,
            ..Default::default()
        };
        c.rx_drops[DropReason::RuntFrame] += 1;
        assert!(c.check_conservation().is_err());
        c.rx_delivered_local = 1;
        c.check_conservation().unwrap();
        c.tx_offered = 2;
        c.tx_packets = 1;
        assert!(matches!(
            c.check_conservation(),
            Err(ConservationError::Tx { .. })
        ));
        c.tx_drops[DropReason::EgressMtuExceeded] += 1;
        c.check_conservation().unwrap();
        assert_eq!(format!("{:?}", c.tx_drops), "{\"egress_mtu_exceeded\": 1}");
        let mut t = PortCounters::default();
        t.add(&c);
        t.add(&c);
        assert_eq!(t.rx_packets, 10);
        assert_eq!(t.tx_drops[DropReason::EgressMtuExceeded], 2);
    }
}
