//! The route-mode L3 core: what dom0's kernel does for `vif-route` domains
//! (xen-networking.md §6.3), as a pure function of `(in_port, frame, now)` and the
//! router's tables.
//!
//! The picture: every routed vif is a point-to-point link whose far end is the guest. The
//! guest sees dom0's address as its gateway: the router answers every ARP request from a
//! routed vif with its own MAC (proxy ARP, `proxy_arp=1` on the vif), except for the
//! guest's own addresses and RFC 5227 probes. Each `ip=` address gets a route through its
//! vif (`ip route add A dev vifD.N src <main_ip>`); dom0's own addresses are delivered to
//! the host port (the TAP that carries them in dom0); the default route leaves through
//! the uplink via a gateway resolved by ARP, or through the host port to let dom0's kernel
//! route. On the uplink and host port the router answers ARP for addresses routed to a vif
//! (`proxy_arp` on `netdev`, formerly `network-route`).
//!
//! Per IPv4 packet, in order (RFC 1812 §5.2–5.3, robustness.md §3 b2, b4, b10, b13):
//! 1. unknown/disabled port, VLAN-tagged frame, group or zero source MAC → drop;
//! 2. routed vif: Ethernet source must be the guest's MAC; IPv4 source must be one of its
//!    `ip=` addresses (DHCP client messages are handed to the shell as
//!    [`RouteAction::Dhcp`]);
//! 3. frames not addressed to the router's MAC → `otherhost`; a unicast destination IP
//!    in a group frame → `uc_dip_over_mc_dmac`; other group frames → `not_routable`;
//! 4. bad header checksum → `ip_csum`; truncated L4 header → `malformed_header`;
//! 5. martian source (0/8, 127/8, 169.254/16, 224/4, 240/4) or destination (0/8, 127/8,
//!    240/4) → drop; broadcast, multicast and link-local destinations are never routed;
//! 6. longest-prefix match: none → ICMP net unreachable; `unreachable`/`prohibit` routes
//!    → ICMP host unreachable / administratively prohibited; `blackhole` → silent drop;
//!    disabled egress → ICMP host unreachable;
//! 7. TTL ≤ 1 → ICMP time exceeded (the TTL is decremented only when neither side is the
//!    host port: a packet to or from dom0's kernel crosses one hop there, not two);
//! 8. larger than the egress MTU (per segment for GSO): DF → ICMP fragmentation needed
//!    with the next-hop MTU; otherwise fragmented ([`RouteAction::Fragment`]), except GSO
//!    frames without DF, which are dropped (`egress_mtu_exceeded`; Linux TCP always sets DF
//!    on GSO, so this does not happen in practice and is not worth a software GSO);
//! 9. the next hop's MAC: the guest's MAC on a routed vif (the link is point-to-point and
//!    the MAC is pinned by anti-spoofing), dom0's TAP MAC on the host port if known, else
//!    the neighbour cache; an unresolved packet waits in a small queue while an ARP
//!    request goes out ([`RouteAction::Queued`]);
//! 10. rewrite in place: Ethernet source/destination, TTL with an RFC 1624 incremental
//!     header checksum (the L4 checksum does not cover the TTL, so csum-partial and GSO
//!     frames need nothing more).
//!
//! ICMP errors come from dom0's address, back out of the ingress port to the frame's
//! source MAC, and are rate-limited ([`icmp`]). Every frame's outcome is counted per port
//! with the conservation rule of robustness.md §4.1, the same way as the bridge.

pub mod frag;
pub mod harness;
pub mod icmp;
pub mod neigh;
pub mod ratelimit;
pub mod table;

#[cfg(test)]
mod tests;

use std::net::Ipv4Addr;

pub use frag::{complete_l4_checksum, FragError, Fragmenter};
pub use icmp::{IcmpError, IcmpErrorSender, IcmpErrorStats, DEFAULT_ICMP_RATE};
pub use neigh::{NeighConfig, NeighLookup, NeighStats, NeighbourCache, ReadyFrame};
pub use ratelimit::{RateLimit, TokenBucket};
pub use table::{NextHop, Route, RouteTable};

use crate::bridge::MIN_MTU;
use crate::counters::{BridgeCounters, DropReason, PortCounters};
use crate::meta::FrameMeta;
use crate::port::{PortId, DEFAULT_MTU, MAX_MTU};
use crate::time::Timestamp;
use crate::wire::build::{self, L2Header};
use crate::wire::ipv4::Ipv4Packet;
use crate::wire::{
    ArpInfo, ArpOperation, EthernetFrame, FrameInfo, Ipv4Cidr, Ipv4Info, L4Info, MacAddr,
};

/// The MAC Linux netback gives every vif in dom0 (`xenvif_alloc`), hence the gateway MAC
/// a routed guest learns by proxy ARP.
pub const XEN_VIF_MAC: MacAddr = MacAddr([0xfe, 0xff, 0xff, 0xff, 0xff, 0xff]);

/// Router-wide settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouterConfig {
    /// dom0's main address (`vif-route`'s `main_ip`): the source of ICMP errors and of
    /// ARP requests, the gateway routed guests see, and a local address of the host port.
    pub dom0_ip: Ipv4Addr,
    /// More dom0 addresses delivered to the host port.
    pub local_addresses: Vec<Ipv4Addr>,
    /// Neighbour cache limits and timers.
    pub neigh: NeighConfig,
    /// ICMP error rate limit.
    pub icmp_rate: RateLimit,
    /// Most ports.
    pub max_ports: usize,
}

impl RouterConfig {
    /// Defaults around dom0's address.
    pub fn new(dom0_ip: Ipv4Addr) -> Self {
        RouterConfig {
            dom0_ip,
            local_addresses: Vec::new(),
            neigh: NeighConfig::default(),
            icmp_rate: DEFAULT_ICMP_RATE,
            max_ports: 4096,
        }
    }
}

/// What a router port is attached to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RouterPortKind {
    /// A guest's vif in route mode: untrusted, anti-spoofed, point-to-point.
    RoutedVif {
        /// The guest's MAC (xl `mac=`): the only accepted source MAC and the next hop's
        /// MAC for everything routed to this vif.
        guest_mac: MacAddr,
        /// The guest's `ip=` addresses: the accepted sources, each routed to this vif.
        addresses: Vec<Ipv4Cidr>,
    },
    /// The TAP into dom0's kernel, holding dom0's addresses.
    Host {
        /// The TAP's MAC in dom0, if the shell knows it (else it is resolved by ARP).
        dom0_mac: Option<MacAddr>,
    },
    /// The physical network (AF_PACKET on the NIC).
    Uplink,
}

/// Configuration of one router port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouterPortConfig {
    /// Name for listings.
    pub name: String,
    /// What the port is attached to.
    pub kind: RouterPortKind,
    /// The router's own MAC on this link (routed vifs: [`XEN_VIF_MAC`]; uplink: the
    /// NIC's MAC).
    pub mac: MacAddr,
    /// Sender address of ARP requests on this link (default: `dom0_ip`).
    pub ip: Option<Ipv4Addr>,
    /// Largest L3 packet the link carries.
    pub mtu: u32,
    /// A disabled port neither receives nor transmits.
    pub enabled: bool,
    /// Answer ARP for addresses routed through a routed vif (always on for routed vifs,
    /// whose every ARP request is answered).
    pub proxy_arp: bool,
}

impl RouterPortConfig {
    /// A routed vif with Xen's gateway MAC, MTU 1500.
    pub fn routed_vif(
        name: impl Into<String>,
        guest_mac: MacAddr,
        addresses: Vec<Ipv4Cidr>,
    ) -> Self {
        RouterPortConfig {
            name: name.into(),
            kind: RouterPortKind::RoutedVif {
                guest_mac,
                addresses,
            },
            mac: XEN_VIF_MAC,
            ip: None,
            mtu: DEFAULT_MTU,
            enabled: true,
            proxy_arp: true,
        }
    }

    /// The host port with the router's MAC `mac` on it.
    pub fn host(name: impl Into<String>, mac: MacAddr, dom0_mac: Option<MacAddr>) -> Self {
        RouterPortConfig {
            name: name.into(),
            kind: RouterPortKind::Host { dom0_mac },
            mac,
            ip: None,
            mtu: DEFAULT_MTU,
            enabled: true,
            proxy_arp: true,
        }
    }

    /// The uplink with the NIC's MAC.
    pub fn uplink(name: impl Into<String>, mac: MacAddr) -> Self {
        RouterPortConfig {
            name: name.into(),
            kind: RouterPortKind::Uplink,
            mac,
            ip: None,
            mtu: DEFAULT_MTU,
            enabled: true,
            proxy_arp: true,
        }
    }
}

/// Control-plane errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouterError {
    /// No such port.
    #[error("no router port {0}")]
    UnknownPort(PortId),
    /// The router has `max_ports` ports.
    #[error("router is full ({0} ports)")]
    TooManyPorts(usize),
    /// MTU outside 68..=65517.
    #[error("MTU {0} outside {MIN_MTU}..={MAX_MTU}")]
    InvalidMtu(u32),
    /// Another port already routes this address.
    #[error("address {0} is already routed to port {1}")]
    AddressInUse(Ipv4Cidr, PortId),
    /// A port's MAC must be a unicast address.
    #[error("{0} is not a unicast MAC")]
    InvalidMac(MacAddr),
}

/// What happens to the received frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RouteAction {
    /// Rewritten in place; send it on this port.
    Forward(PortId),
    /// Rewritten in place but larger than the port's MTU: send the `count` fragments a
    /// [`Fragmenter`] for `mtu` produces (its L4 checksum was completed if partial).
    Fragment {
        /// Egress port.
        port: PortId,
        /// Egress MTU.
        mtu: u32,
        /// Number of fragments (each is offered to the port).
        count: u16,
    },
    /// Waiting for its next hop's MAC: it comes back from [`Router::pop_ready`] (or is
    /// dropped as `unresolved_neigh` by [`Router::expire`]). Counted as forwarded.
    Queued(PortId),
    /// Consumed by the router (ARP).
    Local,
    /// A DHCP client message from a routed vif, for the shell's DHCP server (if any).
    Dhcp,
    /// Dropped for this reason.
    Drop(DropReason),
}

/// A frame the router wrote into the caller's `out` buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Emit {
    /// Port to send it on.
    pub port: PortId,
    /// Its length in `out`.
    pub len: usize,
}

/// The outcome of [`Router::process`]: what became of the frame, and at most one frame
/// the router synthesised (ARP reply or request, ICMP error) into `out`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RouteVerdict {
    /// The received frame's fate.
    pub action: RouteAction,
    /// A synthesised frame in `out`.
    pub emit: Option<Emit>,
}

impl RouteVerdict {
    const fn drop(reason: DropReason) -> Self {
        RouteVerdict {
            action: RouteAction::Drop(reason),
            emit: None,
        }
    }

    const fn action(action: RouteAction) -> Self {
        RouteVerdict { action, emit: None }
    }
}

/// Router-level counters (per-port ones are [`PortCounters`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RouterStats {
    /// Proxy ARP replies sent.
    pub arp_replies: u64,
    /// ARP requests sent for next hops.
    pub arp_requests: u64,
    /// Packets forwarded with the TTL decremented.
    pub ttl_decremented: u64,
    /// Datagrams fragmented.
    pub fragmented: u64,
    /// Frames for unknown port ids.
    pub unknown_port: u64,
}

#[derive(Clone, Debug)]
struct PortState {
    config: RouterPortConfig,
    counters: PortCounters,
}

/// The route-mode router. Single-threaded; the datapath shell owns it.
#[derive(Clone, Debug)]
pub struct Router {
    config: RouterConfig,
    ports: Vec<Option<PortState>>,
    table: RouteTable,
    neigh: NeighbourCache,
    icmp: IcmpErrorSender,
    stats: RouterStats,
    removed: PortCounters,
}

fn check_mtu(mtu: u32) -> Result<(), RouterError> {
    if (MIN_MTU..=MAX_MTU).contains(&mtu) {
        Ok(())
    } else {
        Err(RouterError::InvalidMtu(mtu))
    }
}

/// Sources that never appear on a routed link (RFC 1812 §5.3.7, RFC 3927 §7).
pub fn is_martian_source(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    o[0] == 0 || o[0] == 127 || ip.is_link_local() || ip.is_multicast() || o[0] >= 240
}

/// Destinations that are never routed to: "this network", loopback, class E (the limited
/// broadcast is handled as a broadcast).
pub fn is_martian_destination(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    o[0] == 0 || o[0] == 127 || (o[0] >= 240 && !ip.is_broadcast())
}

/// The L3 size the egress MTU applies to: the datagram, or for GSO each segment (Linux
/// `skb_gso_validate_network_len`).
pub fn l3_size(info: &FrameInfo, meta: &FrameMeta) -> usize {
    let Some(ip) = info.ipv4() else {
        return (info.len as usize).saturating_sub(info.l2_header_len());
    };
    match (meta.gso, info.l4_header_len()) {
        (Some(gso), Some(l4)) if info.l4_offset != 0 => {
            usize::from(info.l4_offset).saturating_sub(info.l2_header_len())
                + l4
                + usize::from(gso.size)
        }
        _ => usize::from(ip.total_len),
    }
}

/// Writes the Ethernet addresses of a frame in place.
pub fn set_ethernet_addrs(frame: &mut [u8], dst: MacAddr, src: MacAddr) {
    if let Ok(mut eth) = EthernetFrame::new_checked(frame) {
        eth.set_dst_addr(dst);
        eth.set_src_addr(src);
    }
}

fn allowed(addresses: &[Ipv4Cidr], ip: Ipv4Addr) -> bool {
    addresses.iter().any(|c| c.contains(ip))
}

impl Router {
    /// A router with no ports and no routes.
    pub fn new(config: RouterConfig) -> Self {
        Router {
            neigh: NeighbourCache::new(config.neigh),
            icmp: IcmpErrorSender::new(config.icmp_rate),
            config,
            ports: Vec::new(),
            table: RouteTable::new(),
            stats: RouterStats::default(),
            removed: PortCounters::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &RouterConfig {
        &self.config
    }

    fn local_addresses(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        core::iter::once(self.config.dom0_ip).chain(self.config.local_addresses.iter().copied())
    }

    /// Adds a port. A routed vif's addresses get routes through it (an address already
    /// routed to another port is refused); a host port gets dom0's local addresses.
    pub fn add_port(&mut self, config: RouterPortConfig) -> Result<PortId, RouterError> {
        check_mtu(config.mtu)?;
        if !config.mac.is_valid_unicast() {
            return Err(RouterError::InvalidMac(config.mac));
        }
        if let RouterPortKind::RoutedVif { addresses, .. } = &config.kind {
            for a in addresses {
                if let Some(p) = self.table.lookup_exact(*a).and_then(|nh| nh.port()) {
                    return Err(RouterError::AddressInUse(*a, p));
                }
            }
        }
        let idx = match self.ports.iter().position(Option::is_none) {
            Some(i) => i,
            None if self.ports.len() < self.config.max_ports.min(usize::from(u16::MAX) + 1) => {
                self.ports.push(None);
                self.ports.len() - 1
            }
            None => return Err(RouterError::TooManyPorts(self.config.max_ports)),
        };
        let id = PortId(idx as u16);
        match &config.kind {
            RouterPortKind::RoutedVif { addresses, .. } => {
                for a in addresses {
                    self.table.add(Route {
                        dest: *a,
                        next_hop: NextHop::OnLink(id),
                    });
                }
            }
            RouterPortKind::Host { .. } => {
                let locals: Vec<Ipv4Addr> = self.local_addresses().collect();
                for a in locals {
                    self.table.add(Route {
                        dest: Ipv4Cidr::host(a),
                        next_hop: NextHop::OnLink(id),
                    });
                }
            }
            RouterPortKind::Uplink => {}
        }
        if let Some(slot) = self.ports.get_mut(idx) {
            *slot = Some(PortState {
                config,
                counters: PortCounters::default(),
            });
        }
        Ok(id)
    }

    /// Removes a port with its routes, neighbours and queued frames; returns its counters
    /// (which stay in the router totals).
    pub fn remove_port(&mut self, id: PortId) -> Result<PortCounters, RouterError> {
        let state = self
            .ports
            .get_mut(id.index())
            .and_then(Option::take)
            .ok_or(RouterError::UnknownPort(id))?;
        self.table.remove_port(id);
        let mut counters = state.counters;
        self.neigh.remove_port(id, &mut |_| {
            counters.tx_drops[DropReason::UnresolvedNeigh] += 1;
        });
        self.removed.add(&counters);
        Ok(counters)
    }

    fn state(&self, id: PortId) -> Option<&PortState> {
        self.ports.get(id.index()).and_then(Option::as_ref)
    }

    fn state_mut(&mut self, id: PortId) -> Result<&mut PortState, RouterError> {
        self.ports
            .get_mut(id.index())
            .and_then(Option::as_mut)
            .ok_or(RouterError::UnknownPort(id))
    }

    /// A port's configuration.
    pub fn port(&self, id: PortId) -> Option<&RouterPortConfig> {
        self.state(id).map(|s| &s.config)
    }

    /// All ports in id order.
    pub fn ports(&self) -> impl Iterator<Item = (PortId, &RouterPortConfig)> + '_ {
        self.ports
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().map(|s| (PortId(i as u16), &s.config)))
    }

    /// Enables or disables a port.
    pub fn set_port_enabled(&mut self, id: PortId, enabled: bool) -> Result<(), RouterError> {
        self.state_mut(id)?.config.enabled = enabled;
        Ok(())
    }

    /// Changes a port's MTU.
    pub fn set_port_mtu(&mut self, id: PortId, mtu: u32) -> Result<(), RouterError> {
        check_mtu(mtu)?;
        self.state_mut(id)?.config.mtu = mtu;
        Ok(())
    }

    /// Adds a route (replacing one for the same prefix).
    pub fn add_route(&mut self, route: Route) -> Option<NextHop> {
        self.table.add(route)
    }

    /// Removes the route for exactly `dest`.
    pub fn remove_route(&mut self, dest: Ipv4Cidr) -> Option<NextHop> {
        self.table.remove(dest)
    }

    /// The routing table.
    pub fn routes(&self) -> &RouteTable {
        &self.table
    }

    /// The neighbour cache.
    pub fn neigh(&self) -> &NeighbourCache {
        &self.neigh
    }

    /// The neighbour cache, for static entries.
    pub fn neigh_mut(&mut self) -> &mut NeighbourCache {
        &mut self.neigh
    }

    /// Router-level counters.
    pub fn stats(&self) -> &RouterStats {
        &self.stats
    }

    /// ICMP error counters.
    pub fn icmp_stats(&self) -> &IcmpErrorStats {
        self.icmp.stats()
    }

    /// A port's counters.
    pub fn port_counters(&self, id: PortId) -> Option<&PortCounters> {
        self.state(id).map(|s| &s.counters)
    }

    /// Totals over current and removed ports.
    pub fn counters(&self) -> BridgeCounters {
        let mut ports = self.removed;
        for s in self.ports.iter().flatten() {
            ports.add(&s.counters);
        }
        BridgeCounters {
            ports,
            unknown_port: self.stats.unknown_port,
        }
    }

    /// Records a frame of `bytes` sent on `port` (forwarded, fragment, emitted or
    /// released).
    pub fn record_tx(&mut self, port: PortId, bytes: usize) {
        match self.ports.get_mut(port.index()) {
            Some(Some(s)) => {
                s.counters.tx_packets += 1;
                s.counters.tx_bytes += bytes as u64;
            }
            _ => self.stats.unknown_port += 1,
        }
    }

    /// Records a frame offered to `port` but not sent.
    pub fn record_tx_drop(&mut self, port: PortId, reason: DropReason) {
        match self.ports.get_mut(port.index()) {
            Some(Some(s)) => s.counters.tx_drops[reason] += 1,
            _ => self.stats.unknown_port += 1,
        }
    }

    /// Hands the next frame released by neighbour resolution to `f` (its destination MAC
    /// filled in); the shell sends it on `ReadyFrame::port` and records the outcome.
    pub fn pop_ready<R>(&mut self, f: impl FnOnce(ReadyFrame, &[u8]) -> R) -> Option<R> {
        self.neigh.pop_ready(f)
    }

    /// Runs the neighbour timers (failed resolutions drop their queued frames, counted as
    /// `unresolved_neigh` on the egress port), examining at most `budget` entries.
    pub fn expire(&mut self, now: Timestamp, budget: usize) -> usize {
        let ports = &mut self.ports;
        let unknown = &mut self.stats.unknown_port;
        self.neigh
            .expire(now, budget, &mut |p| match ports.get_mut(p.index()) {
                Some(Some(s)) => s.counters.tx_drops[DropReason::UnresolvedNeigh] += 1,
                _ => *unknown += 1,
            })
    }

    /// Runs one received frame through the router. `frame` is the whole frame in a
    /// mutable buffer (rewritten in place when forwarded), `info` its parse; a frame the
    /// router synthesises is written into `out` (which should hold at least 590 bytes for
    /// ICMP errors). Counts the outcome on the ingress port (`rx_*`) and `tx_offered` on
    /// each egress port.
    #[allow(clippy::too_many_arguments)]
    pub fn process(
        &mut self,
        in_port: PortId,
        frame: &mut [u8],
        info: &FrameInfo,
        meta: &FrameMeta,
        now: Timestamp,
        out: &mut [u8],
    ) -> RouteVerdict {
        let verdict = match self.state(in_port) {
            Some(s) if s.config.enabled => self.classify(in_port, frame, info, meta, now, out),
            Some(_) => RouteVerdict::drop(DropReason::PortDisabled),
            None => {
                self.stats.unknown_port += 1;
                return RouteVerdict::drop(DropReason::UnknownPort);
            }
        };
        self.account(in_port, frame.len(), &verdict);
        verdict
    }

    fn account(&mut self, in_port: PortId, len: usize, v: &RouteVerdict) {
        let mut offer = |port: PortId, n: u64| {
            if let Some(Some(s)) = self.ports.get_mut(port.index()) {
                s.counters.tx_offered += n;
            }
        };
        match v.action {
            RouteAction::Forward(p) | RouteAction::Queued(p) => offer(p, 1),
            RouteAction::Fragment { port, count, .. } => offer(port, u64::from(count)),
            _ => {}
        }
        if let Some(e) = v.emit {
            offer(e.port, 1);
        }
        if let Some(Some(s)) = self.ports.get_mut(in_port.index()) {
            let c = &mut s.counters;
            c.rx_packets += 1;
            c.rx_bytes += len as u64;
            match v.action {
                RouteAction::Forward(_) | RouteAction::Fragment { .. } | RouteAction::Queued(_) => {
                    c.rx_forwarded += 1
                }
                RouteAction::Local | RouteAction::Dhcp => c.rx_delivered_local += 1,
                RouteAction::Drop(r) => c.rx_drops[r] += 1,
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn classify(
        &mut self,
        in_port: PortId,
        frame: &mut [u8],
        info: &FrameInfo,
        meta: &FrameMeta,
        now: Timestamp,
        out: &mut [u8],
    ) -> RouteVerdict {
        if !info.vlans.is_empty() {
            return RouteVerdict::drop(DropReason::IngressVlanFilter);
        }
        if info.src.is_multicast() {
            return RouteVerdict::drop(DropReason::SourceMacMulticast);
        }
        if info.src.is_zero() {
            return RouteVerdict::drop(DropReason::SourceMacZero);
        }
        let Some(port) = self.state(in_port) else {
            return RouteVerdict::drop(DropReason::UnknownPort);
        };
        if let RouterPortKind::RoutedVif { guest_mac, .. } = &port.config.kind {
            if info.src != *guest_mac {
                return RouteVerdict::drop(DropReason::SpoofedSourceMac);
            }
        }
        match (&info.l3, info.ipv4()) {
            (crate::wire::L3Info::Arp(a), _) => self.arp(in_port, a, now, out),
            (_, Some(ip)) => self.ipv4(in_port, frame, info, *ip, meta, now, out),
            (crate::wire::L3Info::Malformed, _) => RouteVerdict::drop(DropReason::MalformedHeader),
            _ => RouteVerdict::drop(DropReason::NonIp),
        }
    }

    /// Proxy ARP and neighbour learning (RFC 826, RFC 5227 §2.1.1, Linux `arp_process`).
    fn arp(
        &mut self,
        in_port: PortId,
        a: &ArpInfo,
        now: Timestamp,
        out: &mut [u8],
    ) -> RouteVerdict {
        let Some(port) = self.state(in_port) else {
            return RouteVerdict::drop(DropReason::UnknownPort);
        };
        let our_mac = port.config.mac;
        let our_ip = port.config.ip.unwrap_or(self.config.dom0_ip);
        let proxy = port.config.proxy_arp;
        let request = a.operation == ArpOperation::REQUEST;
        match &port.config.kind {
            RouterPortKind::RoutedVif {
                guest_mac,
                addresses,
            } => {
                if a.sender_mac != *guest_mac {
                    return RouteVerdict::drop(DropReason::SpoofedArp);
                }
                if !a.sender_ip.is_unspecified() && !allowed(addresses, a.sender_ip) {
                    return RouteVerdict::drop(DropReason::SpoofedArp);
                }
                // Probes (sender 0.0.0.0) and announcements (sender = target) must not be
                // answered, or the guest would think its address is taken (RFC 5227);
                // nor any address routed back to this very vif (the guest's own).
                if !request
                    || a.sender_ip.is_unspecified()
                    || a.target_ip == a.sender_ip
                    || self.table.lookup(a.target_ip).and_then(|nh| nh.port()) == Some(in_port)
                {
                    return RouteVerdict::action(RouteAction::Local);
                }
            }
            RouterPortKind::Host { .. } | RouterPortKind::Uplink => {
                // Learn like Linux: create an entry for ARP addressed to us, refresh an
                // existing one otherwise.
                let to_us = a.target_ip == our_ip;
                self.neigh
                    .confirm(in_port, a.sender_ip, a.sender_mac, now, to_us);
                let routed_to_vif = request
                    && proxy
                    && !a.sender_ip.is_unspecified()
                    && a.target_ip != a.sender_ip
                    && match self.table.lookup(a.target_ip) {
                        Some(NextHop::OnLink(p)) | Some(NextHop::Gateway(p, _)) => {
                            p != in_port
                                && self.state(p).is_some_and(|s| {
                                    matches!(s.config.kind, RouterPortKind::RoutedVif { .. })
                                })
                        }
                        _ => false,
                    };
                if !routed_to_vif {
                    return RouteVerdict::action(RouteAction::Local);
                }
            }
        }
        match build::arp_reply(out, a, our_mac) {
            Ok(len) => {
                self.stats.arp_replies += 1;
                RouteVerdict {
                    action: RouteAction::Local,
                    emit: Some(Emit { port: in_port, len }),
                }
            }
            Err(_) => RouteVerdict::action(RouteAction::Local),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn reject(
        &mut self,
        in_port: PortId,
        frame: &[u8],
        info: &FrameInfo,
        reason: DropReason,
        error: IcmpError,
        now: Timestamp,
        out: &mut [u8],
    ) -> RouteVerdict {
        let Some(port) = self.state(in_port) else {
            return RouteVerdict::drop(reason);
        };
        let l2 = L2Header::new(info.src, port.config.mac);
        let emit = self
            .icmp
            .write(frame, info, error, self.config.dom0_ip, l2, now, out)
            .map(|len| Emit { port: in_port, len });
        RouteVerdict {
            action: RouteAction::Drop(reason),
            emit,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn ipv4(
        &mut self,
        in_port: PortId,
        frame: &mut [u8],
        info: &FrameInfo,
        ip: Ipv4Info,
        meta: &FrameMeta,
        now: Timestamp,
        out: &mut [u8],
    ) -> RouteVerdict {
        let Some(port) = self.state(in_port) else {
            return RouteVerdict::drop(DropReason::UnknownPort);
        };
        let in_host = matches!(port.config.kind, RouterPortKind::Host { .. });
        // Step 2: anti-spoofing and DHCP on routed vifs.
        if let RouterPortKind::RoutedVif { addresses, .. } = &port.config.kind {
            let src_ok = allowed(addresses, ip.src);
            if info.is_dhcp_client() && (src_ok || ip.src.is_unspecified()) {
                return RouteVerdict::action(RouteAction::Dhcp);
            }
            if !src_ok {
                return RouteVerdict::drop(DropReason::SpoofedSourceIp);
            }
        }
        // Step 3: link-layer destination.
        if info.dst != port.config.mac {
            if !info.dst.is_multicast() {
                return RouteVerdict::drop(DropReason::OtherHost);
            }
            if !(ip.dst.is_broadcast() || ip.dst.is_multicast() || self.is_subnet_broadcast(ip.dst))
            {
                return RouteVerdict::drop(DropReason::UnicastDipOverMulticastDmac);
            }
            return RouteVerdict::drop(DropReason::NotRoutable);
        }
        // Step 4: header sanity.
        let l3 = info.l2_header_len();
        let header_ok = frame
            .get(l3..)
            .and_then(|b| Ipv4Packet::new_checked(b).ok())
            .is_some_and(|p| p.verify_checksum());
        if !header_ok {
            return RouteVerdict::drop(DropReason::IpChecksum);
        }
        if info.l4 == L4Info::Truncated {
            return RouteVerdict::drop(DropReason::MalformedHeader);
        }
        // Step 5: martians and addresses that are never routed.
        if is_martian_source(ip.src) {
            return RouteVerdict::drop(DropReason::MartianSource);
        }
        if is_martian_destination(ip.dst) {
            return RouteVerdict::drop(DropReason::MartianDestination);
        }
        if ip.dst.is_broadcast() || ip.dst.is_multicast() || ip.dst.is_link_local() {
            return RouteVerdict::drop(DropReason::NotRoutable);
        }
        // Step 6: the route.
        let (out_port, nh_ip) = match self.table.lookup(ip.dst) {
            None => {
                return self.reject(
                    in_port,
                    frame,
                    info,
                    DropReason::NoRoute,
                    IcmpError::NetUnreachable,
                    now,
                    out,
                )
            }
            Some(NextHop::Unreachable) => {
                return self.reject(
                    in_port,
                    frame,
                    info,
                    DropReason::UnreachableRoute,
                    IcmpError::HostUnreachable,
                    now,
                    out,
                )
            }
            Some(NextHop::Prohibit) => {
                return self.reject(
                    in_port,
                    frame,
                    info,
                    DropReason::ProhibitedRoute,
                    IcmpError::AdminProhibited,
                    now,
                    out,
                )
            }
            Some(NextHop::Blackhole) => return RouteVerdict::drop(DropReason::BlackholeRoute),
            Some(NextHop::OnLink(p)) => (p, ip.dst),
            Some(NextHop::Gateway(p, g)) => (p, g),
        };
        let egress = match self.state(out_port) {
            Some(e) if e.config.enabled => e.config.clone(),
            _ => {
                return self.reject(
                    in_port,
                    frame,
                    info,
                    DropReason::EgressPortDisabled,
                    IcmpError::HostUnreachable,
                    now,
                    out,
                )
            }
        };
        // Step 7: TTL.
        let out_host = matches!(egress.kind, RouterPortKind::Host { .. });
        let decrement = !in_host && !out_host;
        if decrement && ip.ttl <= 1 {
            return self.reject(
                in_port,
                frame,
                info,
                DropReason::TtlExpired,
                IcmpError::TimeExceeded,
                now,
                out,
            );
        }
        // Step 8: MTU.
        let mut fragment = None;
        if l3_size(info, meta) > egress.mtu as usize {
            if ip.dont_frag {
                let mtu = u16::try_from(egress.mtu).unwrap_or(u16::MAX);
                return self.reject(
                    in_port,
                    frame,
                    info,
                    DropReason::EgressMtuExceeded,
                    IcmpError::FragmentationNeeded { mtu },
                    now,
                    out,
                );
            }
            if meta.gso.is_some() {
                return RouteVerdict::drop(DropReason::EgressMtuExceeded);
            }
            fragment = Some(egress.mtu);
        }
        // Step 9: the next hop's MAC.
        let lookup = match egress.kind {
            RouterPortKind::RoutedVif { guest_mac, .. } => NeighLookup::Known {
                mac: guest_mac,
                probe: false,
            },
            RouterPortKind::Host {
                dom0_mac: Some(mac),
            } => NeighLookup::Known { mac, probe: false },
            _ => self.neigh.lookup(out_port, nh_ip, now),
        };
        // Step 10: rewrite.
        set_ethernet_addrs(frame, MacAddr::ZERO, egress.mac);
        if decrement {
            if let Some(b) = frame.get_mut(l3..) {
                Ipv4Packet::new_unchecked(b).decrement_ttl();
                self.stats.ttl_decremented += 1;
            }
        }
        let arp_sender = egress.ip.unwrap_or(self.config.dom0_ip);
        let mut request = |probe: bool, this: &mut Self| -> Option<Emit> {
            if !probe {
                return None;
            }
            let len = build::arp_request(out, egress.mac, arp_sender, nh_ip).ok()?;
            this.stats.arp_requests += 1;
            Some(Emit {
                port: out_port,
                len,
            })
        };
        match lookup {
            NeighLookup::Known { mac, probe } => {
                set_ethernet_addrs(frame, mac, egress.mac);
                let emit = request(probe, self);
                let action = match fragment {
                    None => RouteAction::Forward(out_port),
                    Some(mtu) => {
                        if meta.csum_partial {
                            complete_l4_checksum(frame, info);
                        }
                        match Fragmenter::new(frame, info, mtu) {
                            Ok(f) => {
                                self.stats.fragmented += 1;
                                RouteAction::Fragment {
                                    port: out_port,
                                    mtu,
                                    count: u16::try_from(f.count()).unwrap_or(u16::MAX),
                                }
                            }
                            Err(_) => RouteAction::Drop(DropReason::EgressMtuExceeded),
                        }
                    }
                };
                RouteVerdict { action, emit }
            }
            NeighLookup::Pending { probe } => {
                let queued =
                    fragment.is_none() && self.neigh.enqueue(out_port, nh_ip, frame, *meta);
                let action = if queued {
                    RouteAction::Queued(out_port)
                } else {
                    RouteAction::Drop(DropReason::UnresolvedNeigh)
                };
                RouteVerdict {
                    action,
                    emit: request(probe, self),
                }
            }
            NeighLookup::TableFull => RouteVerdict::drop(DropReason::UnresolvedNeigh),
        }
    }

    /// Whether `ip` is the broadcast address of a prefix routed on-link (a directed
    /// broadcast, never forwarded: RFC 2644).
    fn is_subnet_broadcast(&self, ip: Ipv4Addr) -> bool {
        self.table.routes().any(|r| {
            let len = r.dest.prefix_len();
            len < 31 && r.dest.contains(ip) && {
                let host_mask = u32::MAX.checked_shr(u32::from(len)).unwrap_or(0);
                u32::from(ip) & host_mask == host_mask
            }
        })
    }
}
