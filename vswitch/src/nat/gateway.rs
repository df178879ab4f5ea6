//! The gateway of a NAT network: the router that sits on the network's bridge as one more
//! port and owns the gateway address (libvirt's `virbr0` with 192.168.122.1, its
//! iptables rules and its dnsmasq, ecosystem.md §D.1; Xen's `network-nat` + `vif-nat`,
//! xen-networking.md §6.4).
//!
//! Frames reach it from two sides:
//! * **bridge side** ([`NatGateway::from_bridge`]): whatever the bridge sends to the
//!   gateway port — unicast to the gateway MAC, and broadcasts. It answers ARP for the
//!   gateway address; serves DHCP ([`DhcpServer`]); forwards DNS queries to dom0's
//!   resolvers ([`DnsForwarder`]); answers ICMP echo; rejects other traffic to the
//!   gateway address (UDP: ICMP port unreachable, TCP: RST, else protocol unreachable);
//!   routes guest-to-guest traffic sent to its MAC back into the bridge (libvirt's
//!   `LIBVIRT_FWX` accept); and NATs everything else out of the uplink ([`Nat`]): never a
//!   broadcast, multicast or link-local destination (libvirt's `return` rules), never a
//!   source outside the network (`LIBVIRT_FWO` reject). Guests reaching a forwarded port
//!   of the external address are hairpinned back into the bridge.
//! * **uplink side** ([`NatGateway::from_uplink`]): frames for the external address that
//!   belong to NAT connections or port forwards are translated and delivered into the
//!   bridge; everything else is dom0's own traffic (dom0's kernel shares the NIC) and is
//!   left alone (`otherhost`).
//!
//! It routes like the [`Router`](crate::router::Router): TTL checked before and
//! decremented after NAT, ICMP time-exceeded and fragmentation-needed quoting the packet
//! as received (from the gateway address toward guests, from the external address toward
//! the uplink), fragmentation when DF is clear, next hops resolved by ARP with a small
//! queue. Frames it synthesises go into the caller's `out` buffer; counts per side follow
//! the conservation rule, like a port pair.

use std::net::{Ipv4Addr, SocketAddr};

use super::{Nat, NatConfig, NatError, NatStats, NatVerdict};
use crate::counters::{DropReason, PortCounters};
use crate::dhcp::{DhcpConfig, DhcpConfigError, DhcpOutcome, DhcpServer, LeaseState};
use crate::dns::{DnsConfig, DnsForwarder, GuestEndpoint};
use crate::meta::FrameMeta;
use crate::port::{PortId, DEFAULT_MTU};
use crate::router::neigh::{NeighConfig, NeighLookup, NeighbourCache};
use crate::router::ratelimit::RateLimit;
use crate::router::{
    complete_l4_checksum, is_martian_source, l3_size, set_ethernet_addrs, Fragmenter, IcmpError,
    IcmpErrorSender, DEFAULT_ICMP_RATE,
};
use crate::time::Timestamp;
use crate::wire::build::{self, L2Header, TcpSegment};
use crate::wire::icmpv4::{kind as icmp, Icmpv4Packet};
use crate::wire::ipv4::Ipv4Packet;
use crate::wire::tcp::{TcpFlags, TcpPacket};
use crate::wire::udp::UdpPacket;
use crate::wire::{ArpInfo, ArpOperation, FrameInfo, Ipv4Cidr, Ipv4Info, L3Info, L4Info, MacAddr};

/// One of the gateway's two attachments.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GatewaySide {
    /// The NAT network's bridge (the gateway port).
    Bridge,
    /// The uplink.
    Uplink,
}

impl GatewaySide {
    const fn port(self) -> PortId {
        match self {
            GatewaySide::Bridge => PortId(0),
            GatewaySide::Uplink => PortId(1),
        }
    }

    const fn from_port(p: PortId) -> GatewaySide {
        if p.0 == 0 {
            GatewaySide::Bridge
        } else {
            GatewaySide::Uplink
        }
    }

    const fn index(self) -> usize {
        self.port().0 as usize
    }
}

/// Settings of a NAT network's gateway.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewayConfig {
    /// The gateway's address on the network (192.168.122.1).
    pub gateway_ip: Ipv4Addr,
    /// The gateway's MAC on the bridge.
    pub gateway_mac: MacAddr,
    /// The network (192.168.122.0/24).
    pub network: Ipv4Cidr,
    /// MTU of the bridge side.
    pub bridge_mtu: u32,
    /// The external address (dom0's uplink address): masquerade's source.
    pub uplink_ip: Ipv4Addr,
    /// The uplink NIC's MAC.
    pub uplink_mac: MacAddr,
    /// The prefix reachable directly on the uplink.
    pub uplink_subnet: Ipv4Cidr,
    /// The uplink's default router.
    pub uplink_gateway: Option<Ipv4Addr>,
    /// MTU of the uplink.
    pub uplink_mtu: u32,
    /// Answer ARP for the external address on the uplink. Off when dom0's kernel owns
    /// the NIC and answers itself (the AF_PACKET uplink); on for a dedicated link.
    pub answer_uplink_arp: bool,
    /// NAT settings (`external_ip`, `internal` and `gateway_ip` are taken from above).
    pub nat: NatConfig,
    /// The DHCP server, if the network serves DHCP.
    pub dhcp: Option<DhcpConfig>,
    /// The DNS forwarder, if the network serves DNS.
    pub dns: Option<DnsConfig>,
    /// Neighbour cache (both sides).
    pub neigh: NeighConfig,
    /// ICMP error rate limit.
    pub icmp_rate: RateLimit,
    /// An isolated network (libvirt's network without `<forward>`): guests reach each
    /// other and the gateway's services, and anything for the outside is refused with
    /// ICMP "administratively prohibited" (`prohibited_route`).
    pub isolated: bool,
}

impl GatewayConfig {
    /// libvirt's default network (192.168.122.1/24, DHCP .2–.254, DNS through the
    /// gateway) masqueraded to `uplink_ip`.
    pub fn libvirt_default(
        gateway_mac: MacAddr,
        uplink_ip: Ipv4Addr,
        uplink_mac: MacAddr,
        uplink_subnet: Ipv4Cidr,
        uplink_gateway: Option<Ipv4Addr>,
        dns_upstreams: Vec<SocketAddr>,
    ) -> Self {
        let dhcp = DhcpConfig::libvirt_default(gateway_mac);
        let gw = dhcp.server_ip;
        let network = dhcp.subnet;
        GatewayConfig {
            gateway_ip: gw,
            gateway_mac,
            network,
            bridge_mtu: DEFAULT_MTU,
            uplink_ip,
            uplink_mac,
            uplink_subnet,
            uplink_gateway,
            uplink_mtu: DEFAULT_MTU,
            answer_uplink_arp: false,
            nat: NatConfig::new(uplink_ip, network, gw),
            dhcp: Some(dhcp),
            dns: Some(DnsConfig::new(gw, gateway_mac, dns_upstreams)),
            neigh: NeighConfig::default(),
            icmp_rate: DEFAULT_ICMP_RATE,
            isolated: false,
        }
    }
}

/// Configuration errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GatewayError {
    /// NAT settings.
    #[error(transparent)]
    Nat(#[from] NatError),
    /// DHCP settings.
    #[error(transparent)]
    Dhcp(#[from] DhcpConfigError),
    /// The gateway address is not on the network.
    #[error("gateway address {0} is not on the network")]
    GatewayOffNetwork(Ipv4Addr),
    /// A MAC that is not unicast.
    #[error("{0} is not a unicast MAC")]
    InvalidMac(MacAddr),
}

/// What happens to the received frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GatewayAction {
    /// Rewritten in place: send it to this side (into the bridge through the gateway
    /// port, or out of the uplink).
    Forward(GatewaySide),
    /// Rewritten in place but over the side's MTU without DF: send the `count` fragments
    /// a [`Fragmenter`] for `mtu` produces.
    Fragment {
        /// Where.
        side: GatewaySide,
        /// The MTU.
        mtu: u32,
        /// Fragments offered.
        count: u16,
    },
    /// Waiting for the next hop's MAC ([`NatGateway::pop_ready`]).
    Queued(GatewaySide),
    /// Consumed by the gateway (ARP, DHCP, DNS, ping, rejected service traffic).
    Local,
    /// Dropped.
    Drop(DropReason),
}

/// Something the gateway wrote into the caller's `out` buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GatewayEmit {
    /// A frame to send to a side.
    Frame {
        /// Where.
        side: GatewaySide,
        /// Its length in `out`.
        len: usize,
    },
    /// A DNS query (UDP payload) for the shell to send from its upstream socket.
    DnsQuery {
        /// The upstream server.
        server: SocketAddr,
        /// Its length in `out`.
        len: usize,
    },
}

/// The outcome of one received frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GatewayVerdict {
    /// The received frame's fate.
    pub action: GatewayAction,
    /// At most one synthesised frame or DNS query.
    pub emit: Option<GatewayEmit>,
}

impl GatewayVerdict {
    const fn drop(r: DropReason) -> Self {
        GatewayVerdict {
            action: GatewayAction::Drop(r),
            emit: None,
        }
    }

    const fn local(emit: Option<GatewayEmit>) -> Self {
        GatewayVerdict {
            action: GatewayAction::Local,
            emit,
        }
    }
}

/// Gateway-level counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GatewayStats {
    /// ARP replies for the gateway (or external) address.
    pub arp_replies: u64,
    /// ARP requests sent.
    pub arp_requests: u64,
    /// Echo replies sent.
    pub echo_replies: u64,
    /// Rejections of traffic to the gateway address (port unreachable, RST, protocol
    /// unreachable).
    pub rejected: u64,
    /// DNS queries handed to the shell.
    pub dns_queries: u64,
    /// DNS answers delivered.
    pub dns_answers: u64,
    /// Guest-to-guest packets routed back into the bridge.
    pub routed_internal: u64,
}

/// A NAT network's gateway. Single-threaded; the shell owns it next to the bridge.
#[derive(Clone, Debug)]
pub struct NatGateway {
    config: GatewayConfig,
    nat: Nat,
    dhcp: Option<DhcpServer>,
    dns: Option<DnsForwarder>,
    neigh: NeighbourCache,
    icmp: IcmpErrorSender,
    counters: [PortCounters; 2],
    stats: GatewayStats,
}

/// Where a routed packet goes next.
struct Egress {
    side: GatewaySide,
    next_hop: Ipv4Addr,
    mtu: u32,
    mac: MacAddr,
    arp_ip: Ipv4Addr,
}

impl NatGateway {
    /// A gateway with empty tables.
    pub fn new(config: GatewayConfig) -> Result<NatGateway, GatewayError> {
        if !config.network.contains(config.gateway_ip) {
            return Err(GatewayError::GatewayOffNetwork(config.gateway_ip));
        }
        for m in [config.gateway_mac, config.uplink_mac] {
            if !m.is_valid_unicast() {
                return Err(GatewayError::InvalidMac(m));
            }
        }
        let mut nat_config = config.nat.clone();
        nat_config.external_ip = config.uplink_ip;
        nat_config.internal = config.network;
        nat_config.gateway_ip = config.gateway_ip;
        let nat = Nat::new(nat_config)?;
        let dhcp = config.dhcp.clone().map(DhcpServer::new).transpose()?;
        let dns = config.dns.clone().map(DnsForwarder::new);
        Ok(NatGateway {
            neigh: NeighbourCache::new(config.neigh),
            icmp: IcmpErrorSender::new(config.icmp_rate),
            nat,
            dhcp,
            dns,
            config,
            counters: [PortCounters::default(); 2],
            stats: GatewayStats::default(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &GatewayConfig {
        &self.config
    }

    /// The NAT engine.
    pub fn nat(&self) -> &Nat {
        &self.nat
    }

    /// The NAT engine, for port forwards and exclusions.
    pub fn nat_mut(&mut self) -> &mut Nat {
        &mut self.nat
    }

    /// NAT counters.
    pub fn nat_stats(&self) -> &NatStats {
        self.nat.stats()
    }

    /// The DHCP server.
    pub fn dhcp(&self) -> Option<&DhcpServer> {
        self.dhcp.as_ref()
    }

    /// The DHCP server, for static bindings and lease restore.
    pub fn dhcp_mut(&mut self) -> Option<&mut DhcpServer> {
        self.dhcp.as_mut()
    }

    /// The DNS forwarder.
    pub fn dns(&self) -> Option<&DnsForwarder> {
        self.dns.as_ref()
    }

    /// The DNS forwarder, for its upstreams.
    pub fn dns_mut(&mut self) -> Option<&mut DnsForwarder> {
        self.dns.as_mut()
    }

    /// The neighbour cache (port 0 is the bridge side, 1 the uplink).
    pub fn neigh(&self) -> &NeighbourCache {
        &self.neigh
    }

    /// The neighbour cache, for static entries.
    pub fn neigh_mut(&mut self) -> &mut NeighbourCache {
        &mut self.neigh
    }

    /// Declares a guest with a fixed address (a vif's `ip=`): the DHCP server binds its
    /// MAC to exactly that address, and the gateway delivers to it without ARP (the MAC is
    /// pinned by anti-spoofing).
    pub fn add_static_guest(
        &mut self,
        mac: MacAddr,
        ip: Ipv4Addr,
        now: Timestamp,
    ) -> Result<(), GatewayError> {
        if let Some(d) = self.dhcp.as_mut() {
            d.set_static(mac, ip)?;
        }
        self.neigh
            .set_static(GatewaySide::Bridge.port(), ip, mac, now);
        Ok(())
    }

    /// Forgets a guest declared with [`add_static_guest`](Self::add_static_guest) (its vif
    /// went away).
    pub fn remove_static_guest(&mut self, mac: MacAddr, ip: Ipv4Addr) {
        if let Some(d) = self.dhcp.as_mut() {
            d.remove_static(mac);
        }
        let counters = &mut self.counters;
        self.neigh.remove(GatewaySide::Bridge.port(), ip, &mut |_| {
            counters[GatewaySide::Bridge.index()].tx_drops[DropReason::UnresolvedNeigh] += 1;
        });
    }

    /// Gateway counters.
    pub fn stats(&self) -> &GatewayStats {
        &self.stats
    }

    /// ICMP error counters.
    pub fn icmp_stats(&self) -> &crate::router::IcmpErrorStats {
        self.icmp.stats()
    }

    /// A side's counters (rx: frames the gateway received from it; tx: frames offered to
    /// it).
    pub fn counters(&self, side: GatewaySide) -> &PortCounters {
        &self.counters[side.index()]
    }

    /// Records a frame sent to `side`.
    pub fn record_tx(&mut self, side: GatewaySide, bytes: usize) {
        let c = &mut self.counters[side.index()];
        c.tx_packets += 1;
        c.tx_bytes += bytes as u64;
    }

    /// Records a frame offered to `side` but not sent.
    pub fn record_tx_drop(&mut self, side: GatewaySide, reason: DropReason) {
        self.counters[side.index()].tx_drops[reason] += 1;
    }

    /// Hands the next frame released by neighbour resolution to `f`.
    pub fn pop_ready<R>(
        &mut self,
        f: impl FnOnce(GatewaySide, FrameMeta, &[u8]) -> R,
    ) -> Option<R> {
        self.neigh
            .pop_ready(|rf, frame| f(GatewaySide::from_port(rf.port), rf.meta, frame))
    }

    /// Runs every timer (NAT, neighbours, DHCP leases, DNS queries), each examining at
    /// most `budget` entries.
    pub fn expire(&mut self, now: Timestamp, budget: usize) {
        self.nat.expire(now, budget);
        let counters = &mut self.counters;
        self.neigh.expire(now, budget, &mut |p| {
            counters[GatewaySide::from_port(p).index()].tx_drops[DropReason::UnresolvedNeigh] += 1;
        });
        if let Some(d) = self.dhcp.as_mut() {
            d.expire(now, budget);
        }
        if let Some(d) = self.dns.as_mut() {
            d.expire(now, budget);
        }
    }

    fn account(&mut self, side: GatewaySide, len: usize, v: &GatewayVerdict) {
        let mut offer = |s: GatewaySide, n: u64| self.counters[s.index()].tx_offered += n;
        match v.action {
            GatewayAction::Forward(s) | GatewayAction::Queued(s) => offer(s, 1),
            GatewayAction::Fragment { side, count, .. } => offer(side, u64::from(count)),
            _ => {}
        }
        if let Some(GatewayEmit::Frame { side, .. }) = v.emit {
            offer(side, 1);
        }
        let c = &mut self.counters[side.index()];
        c.rx_packets += 1;
        c.rx_bytes += len as u64;
        match v.action {
            GatewayAction::Forward(_)
            | GatewayAction::Fragment { .. }
            | GatewayAction::Queued(_) => c.rx_forwarded += 1,
            GatewayAction::Local => c.rx_delivered_local += 1,
            GatewayAction::Drop(r) => c.rx_drops[r] += 1,
        }
    }

    /// Handles a frame the bridge sent to the gateway port. `in_port` is the bridge port
    /// it entered the bridge on (the DHCP server's per-port caps key on it).
    #[allow(clippy::too_many_arguments)]
    pub fn from_bridge(
        &mut self,
        in_port: PortId,
        frame: &mut [u8],
        info: &FrameInfo,
        meta: &FrameMeta,
        now: Timestamp,
        out: &mut [u8],
    ) -> GatewayVerdict {
        let v = if !info.vlans.is_empty() {
            GatewayVerdict::drop(DropReason::IngressVlanFilter)
        } else {
            match &info.l3 {
                L3Info::Arp(a) => self.bridge_arp(a, now, out),
                L3Info::Ipv4(ip) => self.bridge_ipv4(in_port, frame, info, *ip, meta, now, out),
                L3Info::Malformed => GatewayVerdict::drop(DropReason::MalformedHeader),
                _ => GatewayVerdict::drop(DropReason::NonIp),
            }
        };
        self.account(GatewaySide::Bridge, frame.len(), &v);
        v
    }

    /// Handles a frame received on the uplink.
    pub fn from_uplink(
        &mut self,
        frame: &mut [u8],
        info: &FrameInfo,
        meta: &FrameMeta,
        now: Timestamp,
        out: &mut [u8],
    ) -> GatewayVerdict {
        let v = if !info.vlans.is_empty() {
            GatewayVerdict::drop(DropReason::OtherHost)
        } else {
            match &info.l3 {
                L3Info::Arp(a) => self.uplink_arp(a, now, out),
                L3Info::Ipv4(ip) => self.uplink_ipv4(frame, info, *ip, meta, now, out),
                _ => GatewayVerdict::drop(DropReason::OtherHost),
            }
        };
        self.account(GatewaySide::Uplink, frame.len(), &v);
        v
    }

    /// Turns an upstream DNS answer into a frame for the guest in `out` (to be injected
    /// into the bridge through the gateway port, and counted as sent to
    /// [`GatewaySide::Bridge`]). `None` if it matches no query (counted by the
    /// forwarder).
    pub fn dns_answer(
        &mut self,
        from: SocketAddr,
        payload: &mut [u8],
        now: Timestamp,
        out: &mut [u8],
    ) -> Option<usize> {
        let n = self.dns.as_mut()?.answer(from, payload, now, out)?;
        self.stats.dns_answers += 1;
        self.counters[GatewaySide::Bridge.index()].tx_offered += 1;
        Some(n)
    }

    fn bridge_arp(&mut self, a: &ArpInfo, now: Timestamp, out: &mut [u8]) -> GatewayVerdict {
        let gw = self.config.gateway_ip;
        let side = GatewaySide::Bridge.port();
        if self.config.network.contains(a.sender_ip) && a.sender_ip != gw {
            self.neigh
                .confirm(side, a.sender_ip, a.sender_mac, now, a.target_ip == gw);
        }
        // Requests for the gateway address are answered, RFC 5227 probes (sender
        // 0.0.0.0) included, so that no guest can take the address (Linux `arp_process`
        // answers probes for its own addresses too).
        let asks_us =
            a.operation == ArpOperation::REQUEST && a.target_ip == gw && a.sender_ip != gw;
        if !asks_us {
            return GatewayVerdict::local(None);
        }
        match build::arp_reply(out, a, self.config.gateway_mac) {
            Ok(len) => {
                self.stats.arp_replies += 1;
                GatewayVerdict::local(Some(GatewayEmit::Frame {
                    side: GatewaySide::Bridge,
                    len,
                }))
            }
            Err(_) => GatewayVerdict::local(None),
        }
    }

    fn uplink_arp(&mut self, a: &ArpInfo, now: Timestamp, out: &mut [u8]) -> GatewayVerdict {
        let ext = self.config.uplink_ip;
        self.neigh.confirm(
            GatewaySide::Uplink.port(),
            a.sender_ip,
            a.sender_mac,
            now,
            a.target_ip == ext,
        );
        let asks_us = self.config.answer_uplink_arp
            && a.operation == ArpOperation::REQUEST
            && a.target_ip == ext
            && a.sender_ip != ext;
        if !asks_us {
            return GatewayVerdict::local(None);
        }
        match build::arp_reply(out, a, self.config.uplink_mac) {
            Ok(len) => {
                self.stats.arp_replies += 1;
                GatewayVerdict::local(Some(GatewayEmit::Frame {
                    side: GatewaySide::Uplink,
                    len,
                }))
            }
            Err(_) => GatewayVerdict::local(None),
        }
    }

    /// An ICMP error about `frame` back to its sender on `side`.
    #[allow(clippy::too_many_arguments)]
    fn reject(
        &mut self,
        side: GatewaySide,
        frame: &[u8],
        info: &FrameInfo,
        reason: Option<DropReason>,
        error: IcmpError,
        now: Timestamp,
        out: &mut [u8],
    ) -> GatewayVerdict {
        let (mac, src) = match side {
            GatewaySide::Bridge => (self.config.gateway_mac, self.config.gateway_ip),
            GatewaySide::Uplink => (self.config.uplink_mac, self.config.uplink_ip),
        };
        let emit = self
            .icmp
            .write(
                frame,
                info,
                error,
                src,
                L2Header::new(info.src, mac),
                now,
                out,
            )
            .map(|len| GatewayEmit::Frame { side, len });
        GatewayVerdict {
            action: reason.map_or(GatewayAction::Local, GatewayAction::Drop),
            emit,
        }
    }

    fn egress(&self, side: GatewaySide, dst: Ipv4Addr) -> Option<Egress> {
        let c = &self.config;
        Some(match side {
            GatewaySide::Bridge => Egress {
                side,
                next_hop: dst,
                mtu: c.bridge_mtu,
                mac: c.gateway_mac,
                arp_ip: c.gateway_ip,
            },
            GatewaySide::Uplink => Egress {
                side,
                next_hop: if c.uplink_subnet.contains(dst) {
                    dst
                } else {
                    c.uplink_gateway?
                },
                mtu: c.uplink_mtu,
                mac: c.uplink_mac,
                arp_ip: c.uplink_ip,
            },
        })
    }

    /// Decrements the TTL, writes the link header and resolves the next hop; the packet
    /// was checked for TTL and MTU (with DF) before NAT.
    fn send(
        &mut self,
        frame: &mut [u8],
        info: &FrameInfo,
        meta: &FrameMeta,
        eg: Egress,
        now: Timestamp,
        out: &mut [u8],
    ) -> GatewayVerdict {
        let l3 = info.l2_header_len();
        if let Some(b) = frame.get_mut(l3..) {
            Ipv4Packet::new_unchecked(b).decrement_ttl();
        }
        let fragment = (l3_size(info, meta) > eg.mtu as usize).then_some(eg.mtu);
        if fragment.is_some() && meta.gso.is_some() {
            return GatewayVerdict::drop(DropReason::EgressMtuExceeded);
        }
        set_ethernet_addrs(frame, MacAddr::ZERO, eg.mac);
        let lookup = self.neigh.lookup(eg.side.port(), eg.next_hop, now);
        let mut request = |probe: bool, this: &mut Self| -> Option<GatewayEmit> {
            if !probe {
                return None;
            }
            let len = build::arp_request(out, eg.mac, eg.arp_ip, eg.next_hop).ok()?;
            this.stats.arp_requests += 1;
            Some(GatewayEmit::Frame { side: eg.side, len })
        };
        match lookup {
            NeighLookup::Known { mac, probe } => {
                set_ethernet_addrs(frame, mac, eg.mac);
                let emit = request(probe, self);
                let action = match fragment {
                    None => GatewayAction::Forward(eg.side),
                    Some(mtu) => {
                        if meta.csum_partial {
                            complete_l4_checksum(frame, info);
                        }
                        match Fragmenter::new(frame, info, mtu) {
                            Ok(f) => GatewayAction::Fragment {
                                side: eg.side,
                                mtu,
                                count: u16::try_from(f.count()).unwrap_or(u16::MAX),
                            },
                            Err(_) => GatewayAction::Drop(DropReason::EgressMtuExceeded),
                        }
                    }
                };
                GatewayVerdict { action, emit }
            }
            NeighLookup::Pending { probe } => {
                let queued = fragment.is_none()
                    && self
                        .neigh
                        .enqueue(eg.side.port(), eg.next_hop, frame, *meta);
                GatewayVerdict {
                    action: if queued {
                        GatewayAction::Queued(eg.side)
                    } else {
                        GatewayAction::Drop(DropReason::UnresolvedNeigh)
                    },
                    emit: request(probe, self),
                }
            }
            NeighLookup::TableFull => GatewayVerdict::drop(DropReason::UnresolvedNeigh),
        }
    }

    fn header_ok(frame: &[u8], info: &FrameInfo) -> bool {
        frame
            .get(info.l2_header_len()..)
            .and_then(|b| Ipv4Packet::new_checked(b).ok())
            .is_some_and(|p| p.verify_checksum())
    }

    #[allow(clippy::too_many_arguments)]
    fn bridge_ipv4(
        &mut self,
        in_port: PortId,
        frame: &mut [u8],
        info: &FrameInfo,
        ip: Ipv4Info,
        meta: &FrameMeta,
        now: Timestamp,
        out: &mut [u8],
    ) -> GatewayVerdict {
        let c = &self.config;
        let (gw, gw_mac) = (c.gateway_ip, c.gateway_mac);
        if info.dst != gw_mac && !info.dst.is_multicast() {
            return GatewayVerdict::drop(DropReason::OtherHost);
        }
        if !Self::header_ok(frame, info) {
            return GatewayVerdict::drop(DropReason::IpChecksum);
        }
        if info.is_dhcp_client() {
            return self.serve_dhcp(in_port, frame, info, now, out);
        }
        if info.dst.is_multicast() {
            // mDNS, SSDP, NetBIOS, broadcasts: link-scoped, never masqueraded.
            return GatewayVerdict::drop(DropReason::NotRoutable);
        }
        if !self.config.network.contains(ip.src) || is_martian_source(ip.src) {
            return GatewayVerdict::drop(DropReason::SpoofedSourceIp);
        }
        if info.l4 == L4Info::Truncated {
            return GatewayVerdict::drop(DropReason::MalformedHeader);
        }
        let internal = self.config.network.contains(ip.dst);
        if ip.dst == gw || internal {
            // A hairpin reply to the gateway address, or guest-to-guest through us.
            return match self.nat.outbound(frame, info, meta, now) {
                // Already translated: too late to quote it in an ICMP error.
                NatVerdict::ToGuests if ip.ttl <= 1 => GatewayVerdict::drop(DropReason::TtlExpired),
                NatVerdict::ToGuests => {
                    let eg = self.egress_bridge(frame, info);
                    self.send(frame, info, meta, eg, now, out)
                }
                NatVerdict::Drop(r) => GatewayVerdict::drop(r),
                _ if ip.dst == gw => self.local_service(frame, info, &ip, now, out),
                _ => self.route_internal(frame, info, &ip, meta, now, out),
            };
        }
        if ip.dst.is_broadcast() || self.is_network_broadcast(ip.dst) {
            return GatewayVerdict::drop(DropReason::NotRoutable);
        }
        if self.config.isolated {
            return self.reject(
                GatewaySide::Bridge,
                frame,
                info,
                Some(DropReason::ProhibitedRoute),
                IcmpError::AdminProhibited,
                now,
                out,
            );
        }
        // To the outside (or a hairpin to the external address): route checks on the
        // packet as received, then NAT.
        let hairpin = ip.dst == self.config.uplink_ip;
        let side = if hairpin {
            GatewaySide::Bridge
        } else {
            GatewaySide::Uplink
        };
        let Some(eg_out) = self.egress(side, ip.dst) else {
            return self.reject(
                GatewaySide::Bridge,
                frame,
                info,
                Some(DropReason::NoRoute),
                IcmpError::NetUnreachable,
                now,
                out,
            );
        };
        if ip.ttl <= 1 {
            return self.reject(
                GatewaySide::Bridge,
                frame,
                info,
                Some(DropReason::TtlExpired),
                IcmpError::TimeExceeded,
                now,
                out,
            );
        }
        if ip.dont_frag && l3_size(info, meta) > eg_out.mtu as usize {
            let mtu = u16::try_from(eg_out.mtu).unwrap_or(u16::MAX);
            return self.reject(
                GatewaySide::Bridge,
                frame,
                info,
                Some(DropReason::EgressMtuExceeded),
                IcmpError::FragmentationNeeded { mtu },
                now,
                out,
            );
        }
        match self.nat.outbound(frame, info, meta, now) {
            NatVerdict::ToUplink => {
                let Some(eg) = self.egress(GatewaySide::Uplink, ip.dst) else {
                    return GatewayVerdict::drop(DropReason::NoRoute);
                };
                self.send(frame, info, meta, eg, now, out)
            }
            NatVerdict::ToGuests => {
                let eg = self.egress_bridge(frame, info);
                self.send(frame, info, meta, eg, now, out)
            }
            NatVerdict::Drop(DropReason::NatNoForward) => self.reject(
                GatewaySide::Bridge,
                frame,
                info,
                Some(DropReason::NatNoForward),
                IcmpError::PortUnreachable,
                now,
                out,
            ),
            NatVerdict::Drop(r) => GatewayVerdict::drop(r),
            NatVerdict::Pass => GatewayVerdict::drop(DropReason::NotRoutable),
        }
    }

    /// The bridge-side egress toward the (translated) destination in `frame`.
    fn egress_bridge(&self, frame: &[u8], info: &FrameInfo) -> Egress {
        let at = info.l2_header_len() + 16;
        let dst = frame.get(at..at + 4).map_or(Ipv4Addr::UNSPECIFIED, |d| {
            Ipv4Addr::new(d[0], d[1], d[2], d[3])
        });
        Egress {
            side: GatewaySide::Bridge,
            next_hop: dst,
            mtu: self.config.bridge_mtu,
            mac: self.config.gateway_mac,
            arp_ip: self.config.gateway_ip,
        }
    }

    fn is_network_broadcast(&self, ip: Ipv4Addr) -> bool {
        let len = self.config.network.prefix_len();
        let host = u32::MAX.checked_shr(u32::from(len)).unwrap_or(0);
        len < 31 && self.config.network.contains(ip) && u32::from(ip) & host == host
    }

    #[allow(clippy::too_many_arguments)]
    fn route_internal(
        &mut self,
        frame: &mut [u8],
        info: &FrameInfo,
        ip: &Ipv4Info,
        meta: &FrameMeta,
        now: Timestamp,
        out: &mut [u8],
    ) -> GatewayVerdict {
        if self.is_network_broadcast(ip.dst) {
            return GatewayVerdict::drop(DropReason::NotRoutable);
        }
        if ip.ttl <= 1 {
            return self.reject(
                GatewaySide::Bridge,
                frame,
                info,
                Some(DropReason::TtlExpired),
                IcmpError::TimeExceeded,
                now,
                out,
            );
        }
        self.stats.routed_internal += 1;
        let eg = self.egress_bridge(frame, info);
        self.send(frame, info, meta, eg, now, out)
    }

    fn serve_dhcp(
        &mut self,
        in_port: PortId,
        frame: &[u8],
        info: &FrameInfo,
        now: Timestamp,
        out: &mut [u8],
    ) -> GatewayVerdict {
        let Some(server) = self.dhcp.as_mut() else {
            return GatewayVerdict::drop(DropReason::DhcpUnsupported);
        };
        match server.handle(in_port, frame, info, now, out) {
            DhcpOutcome::Reply { len, .. } => {
                // A bound lease tells the gateway where the guest is.
                let bound = server
                    .leases()
                    .by_mac(info.src)
                    .filter(|l| l.state == LeaseState::Bound)
                    .map(|l| l.ip)
                    .or_else(|| server.static_for(info.src));
                if let Some(ip) = bound {
                    self.neigh
                        .confirm(GatewaySide::Bridge.port(), ip, info.src, now, true);
                }
                GatewayVerdict::local(Some(GatewayEmit::Frame {
                    side: GatewaySide::Bridge,
                    len,
                }))
            }
            DhcpOutcome::NoReply => GatewayVerdict::local(None),
            DhcpOutcome::Drop(r) => GatewayVerdict::drop(r),
        }
    }

    /// Traffic for the gateway address itself: DNS, ping, and rejections.
    fn local_service(
        &mut self,
        frame: &[u8],
        info: &FrameInfo,
        ip: &Ipv4Info,
        now: Timestamp,
        out: &mut [u8],
    ) -> GatewayVerdict {
        let l4 = usize::from(info.l4_offset);
        let end = info.l2_header_len() + usize::from(ip.total_len);
        match info.l4 {
            L4Info::Udp {
                src_port,
                dst_port: 53,
            } if self.dns.is_some() => {
                let payload = frame
                    .get(l4..end)
                    .and_then(|u| UdpPacket::new_checked(u).ok().map(|p| (u, p.len())))
                    .and_then(|(u, len)| u.get(8..usize::from(len)));
                let (Some(payload), Some(dns)) = (payload, self.dns.as_mut()) else {
                    return GatewayVerdict::drop(DropReason::DnsMalformed);
                };
                let guest = GuestEndpoint {
                    mac: info.src,
                    ip: ip.src,
                    port: src_port,
                };
                match dns.query(guest, payload, now, out) {
                    Ok(q) => {
                        self.stats.dns_queries += 1;
                        GatewayVerdict::local(Some(GatewayEmit::DnsQuery {
                            server: q.server,
                            len: q.len,
                        }))
                    }
                    Err(r) => GatewayVerdict::drop(r),
                }
            }
            L4Info::Icmpv4 {
                msg_type: icmp::ECHO_REQUEST,
                ..
            } => {
                let Some(req) = frame
                    .get(l4..end)
                    .and_then(|b| Icmpv4Packet::new_checked(b).ok())
                else {
                    return GatewayVerdict::drop(DropReason::MalformedHeader);
                };
                let written = build::ipv4_icmp(
                    out,
                    L2Header::new(info.src, self.config.gateway_mac),
                    self.config.gateway_ip,
                    ip.src,
                    icmp::ECHO_REPLY,
                    0,
                    req.rest_of_header(),
                    req.data(),
                );
                match written {
                    Ok(len) => {
                        self.stats.echo_replies += 1;
                        GatewayVerdict::local(Some(GatewayEmit::Frame {
                            side: GatewaySide::Bridge,
                            len,
                        }))
                    }
                    Err(_) => GatewayVerdict::local(None),
                }
            }
            L4Info::Icmpv4 { .. } => GatewayVerdict::local(None),
            L4Info::Udp { .. } => {
                self.stats.rejected += 1;
                self.reject(
                    GatewaySide::Bridge,
                    frame,
                    info,
                    None,
                    IcmpError::PortUnreachable,
                    now,
                    out,
                )
            }
            L4Info::Tcp(t) => {
                if t.flags.contains(TcpFlags::RST) {
                    return GatewayVerdict::local(None);
                }
                self.stats.rejected += 1;
                let emit = self.tcp_reset(frame, info, ip, out);
                GatewayVerdict::local(emit)
            }
            _ => {
                self.stats.rejected += 1;
                self.reject(
                    GatewaySide::Bridge,
                    frame,
                    info,
                    None,
                    IcmpError::ProtocolUnreachable,
                    now,
                    out,
                )
            }
        }
    }

    /// The RST a closed port sends (RFC 9293 §3.10.7.1).
    fn tcp_reset(
        &self,
        frame: &[u8],
        info: &FrameInfo,
        ip: &Ipv4Info,
        out: &mut [u8],
    ) -> Option<GatewayEmit> {
        let l4 = usize::from(info.l4_offset);
        let end = info.l2_header_len() + usize::from(ip.total_len);
        let seg = TcpPacket::new_checked(frame.get(l4..end)?).ok()?;
        let flags = seg.flags();
        let data_len = (end - l4).saturating_sub(seg.header_len()) as u32;
        let seg_len = data_len
            + u32::from(flags.contains(TcpFlags::SYN))
            + u32::from(flags.contains(TcpFlags::FIN));
        let (seq, ack, rflags) = if flags.contains(TcpFlags::ACK) {
            (seg.ack_number(), 0, TcpFlags::RST)
        } else {
            (
                0,
                seg.seq_number().wrapping_add(seg_len),
                TcpFlags::RST | TcpFlags::ACK,
            )
        };
        let len = build::ipv4_tcp(
            out,
            L2Header::new(info.src, self.config.gateway_mac),
            self.config.gateway_ip,
            ip.src,
            &TcpSegment {
                src_port: seg.dst_port(),
                dst_port: seg.src_port(),
                seq,
                ack,
                flags: rflags,
                window: 0,
                payload: &[],
            },
        )
        .ok()?;
        Some(GatewayEmit::Frame {
            side: GatewaySide::Bridge,
            len,
        })
    }

    fn uplink_ipv4(
        &mut self,
        frame: &mut [u8],
        info: &FrameInfo,
        ip: Ipv4Info,
        meta: &FrameMeta,
        now: Timestamp,
        out: &mut [u8],
    ) -> GatewayVerdict {
        if info.dst != self.config.uplink_mac || ip.dst != self.config.uplink_ip {
            return GatewayVerdict::drop(DropReason::OtherHost);
        }
        if !Self::header_ok(frame, info) {
            return GatewayVerdict::drop(DropReason::IpChecksum);
        }
        let too_big = ip.dont_frag && l3_size(info, meta) > self.config.bridge_mtu as usize;
        if (ip.ttl <= 1 || too_big) && self.nat.inbound_matches(frame, info, now) {
            let (reason, error) = if ip.ttl <= 1 {
                (DropReason::TtlExpired, IcmpError::TimeExceeded)
            } else {
                let mtu = u16::try_from(self.config.bridge_mtu).unwrap_or(u16::MAX);
                (
                    DropReason::EgressMtuExceeded,
                    IcmpError::FragmentationNeeded { mtu },
                )
            };
            return self.reject(
                GatewaySide::Uplink,
                frame,
                info,
                Some(reason),
                error,
                now,
                out,
            );
        }
        match self.nat.inbound(frame, info, meta, now) {
            NatVerdict::ToGuests => {
                if ip.ttl <= 1 {
                    return GatewayVerdict::drop(DropReason::TtlExpired);
                }
                let eg = self.egress_bridge(frame, info);
                self.send(frame, info, meta, eg, now, out)
            }
            NatVerdict::Drop(r) => GatewayVerdict::drop(r),
            NatVerdict::ToUplink => GatewayVerdict::drop(DropReason::NotRoutable),
            NatVerdict::Pass => GatewayVerdict::drop(DropReason::OtherHost),
        }
    }
}
