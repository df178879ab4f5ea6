//! The NAT core: connection tracking and masquerade for domnet's NAT networks (libvirt's
//! `virbr0` model, ecosystem.md §D.1; Xen's `network-nat`, xen-networking.md §6.4), as a
//! pure function of `(packet, table, now)`.
//!
//! * **Masquerade** (guest → outside): a new connection's source becomes the external
//!   (uplink) address. TCP and UDP source ports are kept when free and inside the allowed
//!   range (default 1024–65535, minus excluded ranges and forwarded ports), else probed
//!   from a hashed start like Linux's `nf_nat_l4proto_unique_tuple`; ICMP echo ids are
//!   remapped the same way over 0–65535; other protocols keep no ports. No free tuple
//!   → dropped and counted ("Unable to NAT", `nat_no_port`), nothing else affected
//!   (robustness.md §3 c2). Broadcast, multicast, link-local and the guest network itself
//!   are never masqueraded.
//! * **Port forwards** (outside → guest, DNAT) and **hairpin**: a guest reaching
//!   `external:HOSTPORT` is DNATed to the target guest *and* SNATed to the gateway
//!   address, so the reply comes back through the gateway and is un-NATed (§3 c5).
//!   Forwarded host ports are never handed out by masquerade, and a DNAT whose reply
//!   tuple is already some other connection's is refused (`nat_clash`), so no guest can
//!   shadow another's mapping (§3 c6).
//! * **Connection tracking** ([`conntrack`], [`tcp`]): both directions in one table, the
//!   TCP state machine with Linux's timeouts, UDP/ICMP/generic timeouts, table and
//!   per-guest limits (§3 c1), expiry in bounded steps. A TCP packet with invalid flags,
//!   or a non-SYN without a connection, is INVALID and dropped (§3 c4).
//! * **ICMP errors** (RELATED, §3 c3): the embedded packet's reversed tuple names the
//!   connection; the outer address and the inner source (address and port or id) are
//!   translated and every checksum fixed (outer IP, inner IP, inner L4 when it is in the
//!   quote, ICMP). Nested errors, an inner source that is not the outer destination, and
//!   quotes with fewer than 8 L4 bytes are refused.
//! * **Fragments** ([`fragtrack`]): translated without reassembly.
//!
//! Rewrites are in place with incremental checksums ([`rewrite`]) and respect
//! `csum_partial` (GSO) frames. The table is pre-sized and the hash is seeded
//! (`foldhash`): no allocation per packet.

pub mod conntrack;
pub mod forward;
pub mod fragtrack;
pub mod gateway;
pub mod harness;
pub mod ports;
pub mod rewrite;
pub mod tcp;
pub mod tuple;

#[cfg(test)]
mod tests;

use core::hash::{BuildHasher, Hash, Hasher};
use core::time::Duration;
use std::collections::HashMap;
use std::net::Ipv4Addr;

use foldhash::fast::RandomState;

pub use conntrack::{Conn, ConnId, ConnKind, ConnTable, ConnTableStats, ProtoState};
pub use forward::{ForwardProto, ParseForwardError, PortForward};
pub use fragtrack::{FragKey, FragTrack};
pub use ports::{PortRange, PortSpace, DEFAULT_PORT_RANGE};
pub use tcp::{Dir, TcpState, TcpTrack, Timeouts};
pub use tuple::{PacketClass, Tuple};

use self::rewrite::{get16, get_addr, set_ip_addr, set_u16, L4Sum, IP_DST, IP_SRC};
use crate::counters::DropReason;
use crate::meta::FrameMeta;
use crate::router::is_martian_destination;
use crate::time::Timestamp;
use crate::wire::icmpv4::kind as icmp;
use crate::wire::{checksum, FrameInfo, IpProtocol, Ipv4Cidr, Ipv4Info, L4Info, TcpFlags};

/// Most candidate ports tried for one new connection, each at a fresh random place in
/// the range (Linux tries 128, then 64, 32, 16 from fresh random starts).
pub const MAX_PORT_PROBES: usize = 256;

/// NAT settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatConfig {
    /// The address connections are masqueraded to (dom0's uplink address).
    pub external_ip: Ipv4Addr,
    /// The guest network (libvirt default: 192.168.122.0/24).
    pub internal: Ipv4Cidr,
    /// The gateway's address on the guest network: the source of hairpinned packets.
    pub gateway_ip: Ipv4Addr,
    /// TCP/UDP source ports masquerade may use.
    pub port_range: PortRange,
    /// Ports never used (dom0's ephemeral range, its listening ports).
    pub excluded_ports: Vec<PortRange>,
    /// Port forwards.
    pub forwards: Vec<PortForward>,
    /// Most connections (Linux `nf_conntrack_max`, OVS 3 000 000 by default).
    pub max_connections: usize,
    /// Most connections per guest address (OVS zone limit).
    pub max_per_guest: usize,
    /// Per-state timeouts.
    pub timeouts: Timeouts,
    /// First fragments remembered.
    pub max_fragments: usize,
    /// How long a first fragment is remembered.
    pub fragment_timeout: Duration,
    /// The secret that, with a connection's tuple, decides which external ports it
    /// tries: the same connection gets the same port again (a restarted daemon that
    /// keeps the key picks a connection up under its old port), while outsiders cannot
    /// predict ports (as Linux keys its port choice).
    pub port_key: u64,
}

impl NatConfig {
    /// Defaults: ports 1024–65535, 65536 connections, 16384 per guest, Linux timeouts,
    /// 256 datagrams of fragments for 30 s.
    pub fn new(external_ip: Ipv4Addr, internal: Ipv4Cidr, gateway_ip: Ipv4Addr) -> Self {
        NatConfig {
            external_ip,
            internal,
            gateway_ip,
            port_range: DEFAULT_PORT_RANGE,
            excluded_ports: Vec::new(),
            forwards: Vec::new(),
            max_connections: 65_536,
            max_per_guest: 16_384,
            timeouts: Timeouts::default(),
            max_fragments: 256,
            fragment_timeout: Duration::from_secs(30),
            port_key: std::collections::hash_map::RandomState::new().hash_one(0u8),
        }
    }
}

/// Configuration errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NatError {
    /// Two forwards for one protocol and host port.
    #[error("port forward {0} duplicates an earlier one")]
    DuplicateForward(PortForward),
    /// A forward's guest address is not on the guest network.
    #[error("port forward {0} targets an address outside the guest network")]
    ForwardOutsideNetwork(PortForward),
}

/// What to do with a packet after NAT.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NatVerdict {
    /// Translated in place; send it out of the uplink (toward its new destination).
    ToUplink,
    /// Translated in place; deliver it into the guest network (its new destination is a
    /// guest: inbound, port forward, hairpin).
    ToGuests,
    /// Not NAT traffic: outbound, a packet within the guest network (or to the gateway's
    /// own services); inbound, a packet for dom0 itself.
    Pass,
    /// Dropped for this reason.
    Drop(DropReason),
}

/// NAT counters (table counters are in [`ConnTableStats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NatStats {
    /// Packets translated (ICMP errors and fragments included).
    pub translated: u64,
    /// New masqueraded connections.
    pub new_masquerade: u64,
    /// New connections through port forwards.
    pub new_forward: u64,
    /// New hairpin connections.
    pub new_hairpin: u64,
    /// Of the new masqueraded connections, those picked up mid-stream (a guest's TCP
    /// segment with no entry, e.g. after a daemon restart), as Linux's
    /// `nf_conntrack_tcp_loose`.
    pub picked_up: u64,
    /// Connections that became established (assured).
    pub established: u64,
    /// INVALID packets dropped.
    pub invalid: u64,
    /// New connections without a free port or id ("Unable to NAT").
    pub no_port: u64,
    /// Guest packets to the external address with no forward for their port.
    pub unforwarded: u64,
    /// ICMP errors translated (RELATED).
    pub icmp_related: u64,
    /// ICMP errors refused.
    pub icmp_invalid: u64,
    /// Non-first fragments translated.
    pub fragments: u64,
    /// Non-first fragments without a known first fragment.
    pub fragments_no_flow: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Guests,
    Uplink,
}

/// The NAT engine of one NAT network. Single-threaded; the gateway owns it.
#[derive(Clone, Debug)]
pub struct Nat {
    config: NatConfig,
    table: ConnTable,
    forwards: HashMap<(u8, u16), PortForward, RandomState>,
    tcp_ports: PortSpace,
    udp_ports: PortSpace,
    frags: FragTrack,
    stats: NatStats,
}

/// The packet a connection's direction-`d` packets are rewritten to: the reverse of the
/// other direction's tuple (Linux's "invert the other tuple" rule). For ICMP the id of
/// the other direction is used as is.
fn target(other: &Tuple) -> Tuple {
    other.reversed()
}

fn with_port(t: Tuple, p: u16) -> Tuple {
    match t.proto {
        IpProtocol::TCP | IpProtocol::UDP => Tuple { dst_port: p, ..t },
        IpProtocol::ICMP => Tuple { src_port: p, ..t },
        _ => t,
    }
}

/// A TCP segment's sequence and acknowledgement numbers.
fn tcp_seq_ack(frame: &[u8], info: &FrameInfo) -> Option<(u32, u32)> {
    let at = usize::from(info.l4_offset);
    let word = |o: usize| -> Option<u32> {
        Some(u32::from_be_bytes(
            frame.get(at + o..at + o + 4)?.try_into().ok()?,
        ))
    };
    Some((word(4)?, word(8)?))
}

fn fresh_state(proto: IpProtocol) -> ProtoState {
    match proto {
        IpProtocol::TCP => ProtoState::Tcp(TcpTrack::new()),
        IpProtocol::UDP => ProtoState::Udp,
        IpProtocol::ICMP => ProtoState::Icmp,
        _ => ProtoState::Other,
    }
}

fn build_spaces(config: &NatConfig) -> (PortSpace, PortSpace) {
    let reserved = |p: ForwardProto| {
        config
            .forwards
            .iter()
            .filter(move |f| f.proto == p)
            .map(|f| f.host_port)
    };
    (
        PortSpace::new(
            config.port_range,
            &config.excluded_ports,
            reserved(ForwardProto::Tcp),
        ),
        PortSpace::new(
            config.port_range,
            &config.excluded_ports,
            reserved(ForwardProto::Udp),
        ),
    )
}

fn forward_map(
    config: &NatConfig,
) -> Result<HashMap<(u8, u16), PortForward, RandomState>, NatError> {
    let mut m = HashMap::with_hasher(RandomState::default());
    for f in &config.forwards {
        if !config.internal.contains(f.guest_ip) {
            return Err(NatError::ForwardOutsideNetwork(*f));
        }
        if m.insert((f.proto.ip_protocol().0, f.host_port), *f)
            .is_some()
        {
            return Err(NatError::DuplicateForward(*f));
        }
    }
    Ok(m)
}

/// An embedded (quoted) packet inside an ICMP error.
struct Inner {
    ip: usize,
    l4: usize,
    end: usize,
    tuple: Tuple,
}

impl Nat {
    /// A NAT engine with an empty table (storage reserved now).
    pub fn new(config: NatConfig) -> Result<Nat, NatError> {
        let forwards = forward_map(&config)?;
        let (tcp_ports, udp_ports) = build_spaces(&config);
        Ok(Nat {
            table: ConnTable::new(config.max_connections, config.max_per_guest),
            frags: FragTrack::new(config.max_fragments, config.fragment_timeout),
            forwards,
            tcp_ports,
            udp_ports,
            config,
            stats: NatStats::default(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &NatConfig {
        &self.config
    }

    /// Replaces the port forwards (existing connections are kept).
    pub fn set_forwards(&mut self, forwards: Vec<PortForward>) -> Result<(), NatError> {
        let mut c = self.config.clone();
        c.forwards = forwards;
        self.forwards = forward_map(&c)?;
        (self.tcp_ports, self.udp_ports) = build_spaces(&c);
        self.config = c;
        Ok(())
    }

    /// Replaces the excluded port ranges (existing connections are kept).
    pub fn set_excluded_ports(&mut self, excluded: Vec<PortRange>) {
        self.config.excluded_ports = excluded;
        (self.tcp_ports, self.udp_ports) = build_spaces(&self.config);
    }

    /// Counters.
    pub fn stats(&self) -> &NatStats {
        &self.stats
    }

    /// The connection table (for listings and its counters).
    pub fn table(&self) -> &ConnTable {
        &self.table
    }

    /// Removes expired connections, examining at most `budget` slots.
    pub fn expire(&mut self, now: Timestamp, budget: usize) -> usize {
        self.table.expire(now, budget)
    }

    /// Drops every connection.
    pub fn clear(&mut self) {
        self.table.clear();
    }

    /// The connection a tuple belongs to, if any.
    pub fn lookup(&mut self, t: &Tuple, now: Timestamp) -> Option<(&Conn, Dir)> {
        let (id, d) = self.table.lookup(t, now)?;
        Some((self.table.get(id)?, d))
    }

    fn tracked_tuple(frame: &[u8], info: &FrameInfo) -> PacketClass {
        match tuple::classify(info) {
            PacketClass::Tracked(mut t) if t.proto == IpProtocol::ICMP => {
                match get16(frame, usize::from(info.l4_offset) + 4) {
                    Some(id) => {
                        t.src_port = id;
                        PacketClass::Tracked(t)
                    }
                    None => PacketClass::Truncated,
                }
            }
            c => c,
        }
    }

    fn verdict_for(&self, dst: Ipv4Addr) -> NatVerdict {
        if self.config.internal.contains(dst) {
            NatVerdict::ToGuests
        } else {
            NatVerdict::ToUplink
        }
    }

    /// NATs a packet a guest sent toward the gateway (destination outside the guest
    /// network, the external address for hairpin, or a hairpin reply to the gateway
    /// address). `frame` is rewritten in place.
    pub fn outbound(
        &mut self,
        frame: &mut [u8],
        info: &FrameInfo,
        meta: &FrameMeta,
        now: Timestamp,
    ) -> NatVerdict {
        let Some(ip) = info.ipv4().copied() else {
            return NatVerdict::Pass;
        };
        if !self.config.internal.contains(ip.src) {
            return NatVerdict::Drop(DropReason::SpoofedSourceIp);
        }
        match Self::tracked_tuple(frame, info) {
            PacketClass::NotIpv4 => NatVerdict::Pass,
            PacketClass::Truncated => NatVerdict::Drop(DropReason::MalformedHeader),
            PacketClass::IcmpError => self.related(frame, info, &ip, now, Side::Guests),
            PacketClass::NonFirstFragment => self.fragment(frame, info, &ip, now, Side::Guests),
            PacketClass::UntrackedIcmp if self.config.internal.contains(ip.dst) => NatVerdict::Pass,
            PacketClass::UntrackedIcmp => self.invalid(),
            PacketClass::Tracked(t) => {
                if let Some((id, dir)) = self.table.lookup(&t, now) {
                    return self.translate(frame, info, &ip, meta, id, dir, now);
                }
                if self.config.internal.contains(ip.dst) {
                    return NatVerdict::Pass;
                }
                if ip.dst.is_broadcast()
                    || ip.dst.is_multicast()
                    || ip.dst.is_link_local()
                    || is_martian_destination(ip.dst)
                {
                    return NatVerdict::Drop(DropReason::NotRoutable);
                }
                if ip.dst == self.config.external_ip {
                    return self.new_hairpin(frame, info, &ip, meta, t, now);
                }
                self.new_masquerade(frame, info, &ip, meta, t, now)
            }
        }
    }

    /// Un-NATs (or port-forwards) a packet that arrived on the uplink for the external
    /// address. `Pass` means it is dom0's own traffic.
    pub fn inbound(
        &mut self,
        frame: &mut [u8],
        info: &FrameInfo,
        meta: &FrameMeta,
        now: Timestamp,
    ) -> NatVerdict {
        let Some(ip) = info.ipv4().copied() else {
            return NatVerdict::Pass;
        };
        if ip.dst != self.config.external_ip {
            return NatVerdict::Pass;
        }
        if self.config.internal.contains(ip.src) {
            return NatVerdict::Drop(DropReason::MartianSource);
        }
        match Self::tracked_tuple(frame, info) {
            PacketClass::IcmpError => self.related(frame, info, &ip, now, Side::Uplink),
            PacketClass::NonFirstFragment => self.fragment(frame, info, &ip, now, Side::Uplink),
            PacketClass::Tracked(t) => {
                if let Some((id, dir)) = self.table.lookup(&t, now) {
                    return self.translate(frame, info, &ip, meta, id, dir, now);
                }
                self.new_forward(frame, info, &ip, meta, t, now)
            }
            _ => NatVerdict::Pass,
        }
    }

    /// Whether [`inbound`](Self::inbound) would hand this packet to a guest (an existing
    /// connection or a port forward), without changing anything. The gateway asks before
    /// answering an inbound packet with an ICMP error, which must quote it untranslated.
    pub fn inbound_matches(&mut self, frame: &[u8], info: &FrameInfo, now: Timestamp) -> bool {
        let Some(ip) = info.ipv4() else {
            return false;
        };
        if ip.dst != self.config.external_ip {
            return false;
        }
        match Self::tracked_tuple(frame, info) {
            PacketClass::Tracked(t) => {
                self.table.in_use(&t, now) || self.forwards.contains_key(&(t.proto.0, t.dst_port))
            }
            _ => false,
        }
    }

    fn invalid(&mut self) -> NatVerdict {
        self.stats.invalid += 1;
        NatVerdict::Drop(DropReason::ConntrackInvalid)
    }

    /// Whether a guest's TCP segment with no entry is picked up mid-stream (Linux's
    /// `nf_conntrack_tcp_loose`, on by default): an ACK without SYN or RST. The guest's
    /// source port is kept when free, so a connection whose entry was lost (a daemon
    /// restart) carries on under the same external port. Only for masquerade: from
    /// outside only a SYN opens anything.
    fn may_pick_up(info: &FrameInfo) -> bool {
        match info.l4 {
            L4Info::Tcp(t) => {
                tcp::valid_flags(t.flags)
                    && t.flags.contains(TcpFlags::ACK)
                    && !t.flags.contains(TcpFlags::SYN)
                    && !t.flags.contains(TcpFlags::RST)
            }
            _ => false,
        }
    }

    /// A TCP packet may open a connection only with a bare SYN; ICMP only with an echo
    /// request.
    fn may_open(info: &FrameInfo, t: &Tuple) -> bool {
        match info.l4 {
            L4Info::Tcp(tcp) => tcp::opens_connection(tcp.flags),
            L4Info::Icmpv4 { msg_type, .. } => msg_type == icmp::ECHO_REQUEST,
            _ => t.proto != IpProtocol::TCP && t.proto != IpProtocol::ICMP,
        }
    }

    /// Where the `i`-th port probe for connection `orig` lands: a hash of the secret
    /// port key, the tuple and `i` (the same for the same connection, every time).
    fn port_probe(&self, orig: &Tuple, i: usize) -> usize {
        let mut h = std::hash::DefaultHasher::new();
        (self.config.port_key, orig, i).hash(&mut h);
        h.finish() as usize
    }

    /// Picks the free reply tuple for new connection `orig`: `template` with its NAT
    /// port (or id) slot filled, keeping `keep` when it is allowed and free, else the
    /// first free one of the connection's own probe sequence.
    fn allocate(
        &mut self,
        orig: &Tuple,
        template: Tuple,
        keep: u16,
        now: Timestamp,
    ) -> Option<Tuple> {
        let space = match template.proto {
            IpProtocol::TCP => Some(&self.tcp_ports),
            IpProtocol::UDP => Some(&self.udp_ports),
            IpProtocol::ICMP => None,
            _ => return (!self.table.in_use(&template, now)).then_some(template),
        };
        if space.is_none_or(|s| s.allows(keep))
            && !self.table.in_use(&with_port(template, keep), now)
        {
            return Some(with_port(template, keep));
        }
        let start = self.port_probe(orig, 0);
        let candidates = space.map(PortSpace::candidates);
        let n = candidates.map_or(usize::from(u16::MAX) + 1, <[u16]>::len);
        // A small space is walked whole from a random start. A large one gets
        // independent random probes: consecutive ones would run into the clusters that
        // earlier allocations left, and fail while most ports are free.
        let walk = n <= MAX_PORT_PROBES;
        for i in 0..MAX_PORT_PROBES.min(n) {
            let at = if walk || i == 0 {
                start.wrapping_add(i) % n
            } else {
                self.port_probe(orig, i) % n
            };
            let p = match candidates {
                Some(c) => *c.get(at)?,
                None => at as u16,
            };
            let t = with_port(template, p);
            if !self.table.in_use(&t, now) {
                return Some(t);
            }
        }
        None
    }

    #[allow(clippy::too_many_arguments)]
    fn create(
        &mut self,
        frame: &mut [u8],
        info: &FrameInfo,
        ip: &Ipv4Info,
        meta: &FrameMeta,
        orig: Tuple,
        reply_template: Tuple,
        kind: ConnKind,
        guest: Ipv4Addr,
        now: Timestamp,
    ) -> NatVerdict {
        let pickup = kind == ConnKind::Masquerade && Self::may_pick_up(info);
        if !pickup && !Self::may_open(info, &orig) {
            return self.invalid();
        }
        if let Err(r) = self.table.admit(guest, now) {
            return NatVerdict::Drop(r);
        }
        let keep = match orig.proto {
            IpProtocol::TCP | IpProtocol::UDP | IpProtocol::ICMP => orig.src_port,
            _ => 0,
        };
        let reply = if kind == ConnKind::PortForward {
            Some(reply_template)
        } else {
            self.allocate(&orig, reply_template, keep, now)
        };
        let Some(reply) = reply else {
            self.stats.no_port += 1;
            return NatVerdict::Drop(DropReason::NatPortExhausted);
        };
        let state = if pickup {
            ProtoState::Tcp(TcpTrack {
                state: TcpState::Established,
                first_fin: None,
            })
        } else {
            fresh_state(orig.proto)
        };
        let conn = Conn::new(orig, reply, kind, state, guest);
        let id = match self.table.insert(conn, now) {
            Ok(id) => id,
            Err(r) => return NatVerdict::Drop(r),
        };
        if pickup {
            self.stats.picked_up += 1;
        }
        match kind {
            ConnKind::Masquerade => self.stats.new_masquerade += 1,
            ConnKind::PortForward => self.stats.new_forward += 1,
            ConnKind::Hairpin => self.stats.new_hairpin += 1,
        }
        self.translate(frame, info, ip, meta, id, Dir::Original, now)
    }

    fn new_masquerade(
        &mut self,
        frame: &mut [u8],
        info: &FrameInfo,
        ip: &Ipv4Info,
        meta: &FrameMeta,
        t: Tuple,
        now: Timestamp,
    ) -> NatVerdict {
        let template = Tuple {
            proto: t.proto,
            src: t.dst,
            src_port: if t.proto == IpProtocol::ICMP {
                0
            } else {
                t.dst_port
            },
            dst: self.config.external_ip,
            dst_port: 0,
        };
        self.create(
            frame,
            info,
            ip,
            meta,
            t,
            template,
            ConnKind::Masquerade,
            t.src,
            now,
        )
    }

    fn new_hairpin(
        &mut self,
        frame: &mut [u8],
        info: &FrameInfo,
        ip: &Ipv4Info,
        meta: &FrameMeta,
        t: Tuple,
        now: Timestamp,
    ) -> NatVerdict {
        let Some(fw) = self.forwards.get(&(t.proto.0, t.dst_port)).copied() else {
            self.stats.unforwarded += 1;
            return NatVerdict::Drop(DropReason::NatNoForward);
        };
        let template = Tuple {
            proto: t.proto,
            src: fw.guest_ip,
            src_port: fw.guest_port,
            dst: self.config.gateway_ip,
            dst_port: 0,
        };
        self.create(
            frame,
            info,
            ip,
            meta,
            t,
            template,
            ConnKind::Hairpin,
            t.src,
            now,
        )
    }

    fn new_forward(
        &mut self,
        frame: &mut [u8],
        info: &FrameInfo,
        ip: &Ipv4Info,
        meta: &FrameMeta,
        t: Tuple,
        now: Timestamp,
    ) -> NatVerdict {
        let Some(fw) = self.forwards.get(&(t.proto.0, t.dst_port)).copied() else {
            return NatVerdict::Pass;
        };
        let reply = Tuple {
            proto: t.proto,
            src: fw.guest_ip,
            src_port: fw.guest_port,
            dst: t.src,
            dst_port: t.src_port,
        };
        self.create(
            frame,
            info,
            ip,
            meta,
            t,
            reply,
            ConnKind::PortForward,
            fw.guest_ip,
            now,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn translate(
        &mut self,
        frame: &mut [u8],
        info: &FrameInfo,
        ip: &Ipv4Info,
        meta: &FrameMeta,
        id: ConnId,
        dir: Dir,
        now: Timestamp,
    ) -> NatVerdict {
        let timeouts = self.config.timeouts;
        let Some(c) = self.table.get_mut(id) else {
            return NatVerdict::Drop(DropReason::ConntrackInvalid);
        };
        let was_assured = c.is_assured();
        let mut refused = false;
        let mut blind = false;
        if let (ProtoState::Tcp(track), L4Info::Tcp(t)) = (&mut c.state, info.l4) {
            if !tcp::valid_flags(t.flags) {
                self.stats.invalid += 1;
                return NatVerdict::Drop(DropReason::ConntrackInvalid);
            }
            let before = track.state;
            let (seq, ack) = tcp_seq_ack(frame, info).unwrap_or_default();
            let rst = t.flags.contains(TcpFlags::RST);
            let syn = t.flags.contains(TcpFlags::SYN) && !t.flags.contains(TcpFlags::ACK);
            // RFC 793: in SYN-SENT a reset is acceptable only if it acknowledges the
            // SYN. An unacceptable one (a blind reset) changes nothing here; it is
            // passed on, and the guest's TCP ignores it too.
            let acks_syn = t.flags.contains(TcpFlags::ACK) && c.syn_end == Some(ack);
            let blind_rst = rst && dir == Dir::Reply && before == TcpState::SynSent && !acks_syn;
            if !blind_rst {
                track.update(dir, t.flags);
            }
            if dir == Dir::Original && syn {
                c.syn_end = Some(seq.wrapping_add(1));
                if matches!(before, TcpState::TimeWait | TcpState::Close) {
                    // A reopened tuple is a new connection: nothing answered it yet.
                    c.seen_reply = false;
                }
            }
            // Linux: when nothing but a reset ever answered, there never was a
            // connection; the entry goes at once instead of holding its tuple (and the
            // guest's share) in CLOSE for 10 s.
            refused = rst && !blind_rst && !c.seen_reply;
            blind = blind_rst;
        }
        if dir == Dir::Reply && !blind {
            c.seen_reply = true;
        }
        if !was_assured && c.is_assured() {
            self.stats.established += 1;
        }
        c.expires = now + c.timeout(&timeouts);
        let to = target(c.tuple(dir.other()));
        if rewrite::rewrite_packet(frame, info, meta.csum_partial, &to).is_none() {
            return NatVerdict::Drop(DropReason::MalformedHeader);
        }
        if refused {
            self.table.remove_refused(id);
            self.stats.translated += 1;
            return self.verdict_for(to.dst);
        }
        if ip.more_frags && ip.frag_offset == 0 {
            let key = FragKey {
                src: ip.src,
                dst: ip.dst,
                proto: ip.protocol,
                ident: ip.ident,
            };
            self.frags.insert(key, id, dir, now);
        }
        self.stats.translated += 1;
        self.verdict_for(to.dst)
    }

    fn fragment(
        &mut self,
        frame: &mut [u8],
        info: &FrameInfo,
        ip: &Ipv4Info,
        now: Timestamp,
        side: Side,
    ) -> NatVerdict {
        let key = FragKey {
            src: ip.src,
            dst: ip.dst,
            proto: ip.protocol,
            ident: ip.ident,
        };
        let found = self
            .frags
            .lookup(&key, now)
            .and_then(|(id, dir)| Some(target(self.table.get(id)?.tuple(dir.other()))));
        let Some(to) = found else {
            return match side {
                Side::Uplink => NatVerdict::Pass,
                Side::Guests => {
                    self.stats.fragments_no_flow += 1;
                    NatVerdict::Drop(DropReason::FragmentNoFlow)
                }
            };
        };
        let l3 = info.l2_header_len();
        if set_ip_addr(frame, l3, IP_SRC, to.src, None, false).is_none()
            || set_ip_addr(frame, l3, IP_DST, to.dst, None, false).is_none()
        {
            return NatVerdict::Drop(DropReason::MalformedHeader);
        }
        self.stats.fragments += 1;
        self.stats.translated += 1;
        self.verdict_for(to.dst)
    }

    /// Parses the packet quoted in an ICMP error (robustness.md §3 c3).
    fn inner(frame: &[u8], info: &FrameInfo, ip: &Ipv4Info) -> Option<Inner> {
        let end = (info.l2_header_len() + usize::from(ip.total_len)).min(frame.len());
        let at = usize::from(info.l4_offset) + 8;
        let vihl = *frame.get(at)?;
        let ihl = usize::from(vihl & 0x0f) * 4;
        if vihl >> 4 != 4 || ihl < 20 {
            return None;
        }
        let l4 = at + ihl;
        // At least 8 bytes of the inner transport header (OVS ICMP_ERROR_DATA_L4_LEN).
        if l4 + 8 > end {
            return None;
        }
        let frag = get16(frame, at + 6)? & 0x1fff;
        if frag != 0 {
            return None;
        }
        let proto = IpProtocol(*frame.get(at + 9)?);
        let src = get_addr(frame, at + IP_SRC)?;
        let dst = get_addr(frame, at + IP_DST)?;
        let (sp, dp) = match proto {
            IpProtocol::TCP | IpProtocol::UDP => (get16(frame, l4)?, get16(frame, l4 + 2)?),
            IpProtocol::ICMP => {
                let t = *frame.get(l4)?;
                if t != icmp::ECHO_REQUEST && t != icmp::ECHO_REPLY {
                    return None; // nested error, or untracked ICMP
                }
                (get16(frame, l4 + 4)?, 0)
            }
            _ => (0, 0),
        };
        Some(Inner {
            ip: at,
            l4,
            end,
            tuple: Tuple {
                proto,
                src,
                src_port: sp,
                dst,
                dst_port: dp,
            },
        })
    }

    fn related(
        &mut self,
        frame: &mut [u8],
        info: &FrameInfo,
        ip: &Ipv4Info,
        now: Timestamp,
        side: Side,
    ) -> NatVerdict {
        let refuse = |this: &mut Self| {
            this.stats.icmp_invalid += 1;
            NatVerdict::Drop(DropReason::IcmpErrorInvalid)
        };
        let Some(inner) = Self::inner(frame, info, ip) else {
            return match side {
                Side::Uplink => NatVerdict::Pass,
                Side::Guests => refuse(self),
            };
        };
        // The quoted packet travelled the other way: its reversed tuple is this error's.
        let key = inner.tuple.reversed();
        let found = self.table.lookup(&key, now);
        let Some((id, m)) = found else {
            return match side {
                Side::Uplink => NatVerdict::Pass,
                Side::Guests => refuse(self),
            };
        };
        if inner.tuple.src != ip.dst {
            return refuse(self);
        }
        let Some(c) = self.table.get(id) else {
            return refuse(self);
        };
        let (tm, to) = (*c.tuple(m), *c.tuple(m.other()));
        let l3 = info.l2_header_len();
        let ok = (|| {
            // Outer: the manip of direction m.
            if tm.src != to.dst {
                set_ip_addr(frame, l3, IP_SRC, to.dst, None, false)?;
            }
            if tm.dst != to.src {
                set_ip_addr(frame, l3, IP_DST, to.src, None, false)?;
            }
            // Inner: back to what was sent in the other direction.
            let sum = match to.proto {
                IpProtocol::TCP if inner.l4 + 18 <= inner.end => Some((inner.l4 + 16, L4Sum::Tcp)),
                IpProtocol::UDP => Some((inner.l4 + 6, L4Sum::Udp)),
                IpProtocol::ICMP => Some((inner.l4 + 2, L4Sum::Icmp)),
                _ => None,
            };
            set_ip_addr(frame, inner.ip, IP_SRC, to.src, sum, false)?;
            set_ip_addr(frame, inner.ip, IP_DST, to.dst, sum, false)?;
            match to.proto {
                IpProtocol::TCP | IpProtocol::UDP => {
                    set_u16(frame, inner.l4, to.src_port, sum, false)?;
                    set_u16(frame, inner.l4 + 2, to.dst_port, sum, false)?;
                }
                IpProtocol::ICMP => set_u16(frame, inner.l4 + 4, to.src_port, sum, false)?,
                _ => {}
            }
            // The ICMP checksum covers the quote: recompute it (errors are ≤ 576 bytes).
            let l4 = usize::from(info.l4_offset);
            let msg = frame.get_mut(l4..inner.end)?;
            msg.get_mut(2..4)?.copy_from_slice(&[0, 0]);
            let c = !checksum::data(msg);
            msg.get_mut(2..4)?.copy_from_slice(&c.to_be_bytes());
            Some(())
        })();
        if ok.is_none() {
            return refuse(self);
        }
        self.stats.icmp_related += 1;
        self.stats.translated += 1;
        let new_dst = if tm.dst != to.src { to.src } else { ip.dst };
        self.verdict_for(new_dst)
    }
}
