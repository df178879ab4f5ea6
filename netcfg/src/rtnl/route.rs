//! Routes (`RTM_*ROUTE`), IPv4 and IPv6, including multipath next hops.
//!
//! Message shape (linux/rtnetlink.h): `struct rtmsg {family, dst_len, src_len, tos, table,
//! protocol, scope, type: u8; flags: u32}` then `RTA_*` attributes. Tables above 255 only
//! fit in `RTA_TABLE` (u32), so it is always sent. `RTA_MULTIPATH` is a list of
//! `struct rtnexthop {len u16, flags u8, hops u8, ifindex i32}`, each followed by its own
//! attributes (`RTA_GATEWAY`). Deletion mirrors iproute2: scope `RT_SCOPE_NOWHERE` matches
//! any scope, and the identifying attributes (dst, table, oif, gateway, metric, prefsrc,
//! protocol, type) narrow the match (`fib_table_delete`, `ip6_route_del`).

use super::addr::Scope;
use super::netaddr::IpCidr;
use super::uapi::*;
use super::wire::{self, MessageBuilder, NlMsg, WireError};
use super::{Rtnl, RtnlError};
use std::fmt;
use std::net::IpAddr;

/// A routing table id (`RT_TABLE_*`; values above 255 are allowed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RouteTable(pub u32);

impl RouteTable {
    /// `RT_TABLE_MAIN` (254), where `ip route` looks by default.
    pub const MAIN: RouteTable = RouteTable(RT_TABLE_MAIN);
    /// `RT_TABLE_LOCAL` (255): local and broadcast routes the kernel derives from addresses.
    pub const LOCAL: RouteTable = RouteTable(RT_TABLE_LOCAL);
}

/// Who installed a route (`RTPROT_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RouteProtocol(pub u8);

impl RouteProtocol {
    /// `RTPROT_UNSPEC` (matches any protocol on delete).
    pub const UNSPEC: RouteProtocol = RouteProtocol(RTPROT_UNSPEC);
    /// `RTPROT_REDIRECT`.
    pub const REDIRECT: RouteProtocol = RouteProtocol(RTPROT_REDIRECT);
    /// `RTPROT_KERNEL`: derived by the kernel from an address (prefix routes).
    pub const KERNEL: RouteProtocol = RouteProtocol(RTPROT_KERNEL);
    /// `RTPROT_BOOT`: iproute2's default for `ip route add`.
    pub const BOOT: RouteProtocol = RouteProtocol(RTPROT_BOOT);
    /// `RTPROT_STATIC`.
    pub const STATIC: RouteProtocol = RouteProtocol(RTPROT_STATIC);
    /// `RTPROT_RA`: IPv6 router advertisement.
    pub const RA: RouteProtocol = RouteProtocol(RTPROT_RA);
    /// `RTPROT_DHCP`.
    pub const DHCP: RouteProtocol = RouteProtocol(RTPROT_DHCP);
}

/// Route type (`RTN_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RouteType(pub u8);

impl RouteType {
    /// `RTN_UNSPEC`.
    pub const UNSPEC: RouteType = RouteType(RTN_UNSPEC);
    /// `RTN_UNICAST`: a gateway or direct route.
    pub const UNICAST: RouteType = RouteType(RTN_UNICAST);
    /// `RTN_LOCAL`: accept locally.
    pub const LOCAL: RouteType = RouteType(RTN_LOCAL);
    /// `RTN_BROADCAST`.
    pub const BROADCAST: RouteType = RouteType(RTN_BROADCAST);
    /// `RTN_ANYCAST`.
    pub const ANYCAST: RouteType = RouteType(RTN_ANYCAST);
    /// `RTN_MULTICAST`.
    pub const MULTICAST: RouteType = RouteType(RTN_MULTICAST);
    /// `RTN_BLACKHOLE`: drop silently.
    pub const BLACKHOLE: RouteType = RouteType(RTN_BLACKHOLE);
    /// `RTN_UNREACHABLE`: drop with ICMP unreachable.
    pub const UNREACHABLE: RouteType = RouteType(RTN_UNREACHABLE);
    /// `RTN_PROHIBIT`: drop with ICMP prohibited.
    pub const PROHIBIT: RouteType = RouteType(RTN_PROHIBIT);
    /// `RTN_THROW`.
    pub const THROW: RouteType = RouteType(RTN_THROW);
}

/// One next hop of a multipath route (`struct rtnexthop` + `RTA_GATEWAY`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NextHop {
    /// `rtnh_ifindex`.
    pub oif: u32,
    /// `RTA_GATEWAY` inside the next hop.
    pub gateway: Option<IpAddr>,
    /// `rtnh_hops`: weight - 1.
    pub hops: u8,
    /// `rtnh_flags` (`RTNH_F_*`).
    pub flags: u8,
}

/// One route as in `RTM_NEWROUTE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Destination prefix (`RTA_DST` + `rtm_dst_len`); `/0` is the default route.
    pub dst: IpCidr,
    /// Source prefix of a source-specific route (`RTA_SRC` + `rtm_src_len`).
    pub src: Option<IpCidr>,
    /// Gateway (`RTA_GATEWAY`).
    pub gateway: Option<IpAddr>,
    /// Output interface (`RTA_OIF`).
    pub oif: Option<u32>,
    /// Preferred source address (`RTA_PREFSRC`, `ip route ... src X`).
    pub prefsrc: Option<IpAddr>,
    /// Metric (`RTA_PRIORITY`).
    pub priority: Option<u32>,
    /// Table (`RTA_TABLE`, else `rtm_table`).
    pub table: RouteTable,
    /// `rtm_protocol`.
    pub protocol: RouteProtocol,
    /// `rtm_scope`.
    pub scope: Scope,
    /// `rtm_type`.
    pub kind: RouteType,
    /// `rtm_flags` (`RTNH_F_ONLINK`, ...; `RTNH_F_LINKDOWN` etc. are kernel state).
    pub flags: u32,
    /// `rtm_tos`.
    pub tos: u8,
    /// `RTA_METRICS` entries (`RTAX_*` type, raw payload), e.g. `RTAX_MTU` = 2.
    pub metrics: Vec<(u16, Vec<u8>)>,
    /// IPv6 router preference (`RTA_PREF`).
    pub pref: Option<u8>,
    /// Next hops of a multipath route (`RTA_MULTIPATH`); empty otherwise.
    pub nexthops: Vec<NextHop>,
    /// Nexthop object id (`RTA_NH_ID`), for routes using `ip nexthop` objects.
    pub nh_id: Option<u32>,
}

/// `rtm_flags` bits the kernel reports as state and refuses or ignores on input
/// (`RTNH_F_DEAD|PERVASIVE(2)|OFFLOAD|LINKDOWN|UNRESOLVED|TRAP` and `RTM_F_*`).
const ROUTE_FLAGS_SETTABLE: u32 = RTNH_F_ONLINK;

impl Route {
    /// A direct route to `dst` like `ip route add DST dev X`: main table, protocol boot,
    /// unicast, scope link for IPv4 (iproute2's choice when there is no gateway).
    pub fn new(dst: IpCidr) -> Route {
        Route {
            dst,
            src: None,
            gateway: None,
            oif: None,
            prefsrc: None,
            priority: None,
            table: RouteTable::MAIN,
            protocol: RouteProtocol::BOOT,
            scope: if dst.is_ipv6() {
                Scope::UNIVERSE
            } else {
                Scope::LINK
            },
            kind: RouteType::UNICAST,
            flags: 0,
            tos: 0,
            metrics: Vec::new(),
            pref: None,
            nexthops: Vec::new(),
            nh_id: None,
        }
    }

    /// A gateway route (`ip route add DST via GW`), scope global.
    pub fn via(dst: IpCidr, gateway: IpAddr) -> Route {
        Route {
            gateway: Some(gateway),
            scope: Scope::UNIVERSE,
            ..Route::new(dst)
        }
    }

    /// The default route via `gateway` (`ip route add default via GW`).
    pub fn default_via(gateway: IpAddr) -> Route {
        Route::via(IpCidr::default_for(gateway.is_ipv6()), gateway)
    }

    /// Sets the output interface.
    pub fn dev(mut self, oif: u32) -> Route {
        self.oif = Some(oif);
        self
    }

    /// Sets the metric.
    pub fn metric(mut self, priority: u32) -> Route {
        self.priority = Some(priority);
        self
    }

    /// Sets the preferred source address.
    pub fn src(mut self, prefsrc: IpAddr) -> Route {
        self.prefsrc = Some(prefsrc);
        self
    }

    /// Sets the table.
    pub fn table(mut self, table: RouteTable) -> Route {
        self.table = table;
        self
    }

    /// Whether this is an IPv6 route.
    pub fn is_ipv6(&self) -> bool {
        self.dst.is_ipv6()
    }

    /// Whether the route sends traffic out of `ifindex` (directly or as a next hop).
    pub fn uses_oif(&self, ifindex: u32) -> bool {
        self.oif == Some(ifindex) || self.nexthops.iter().any(|n| n.oif == ifindex)
    }

    /// The same route with every reference to interface `from` changed to `to`.
    pub fn with_oif_replaced(&self, from: u32, to: u32) -> Route {
        let mut r = self.clone();
        if r.oif == Some(from) {
            r.oif = Some(to);
        }
        for n in &mut r.nexthops {
            if n.oif == from {
                n.oif = to;
            }
        }
        r
    }

    fn family(&self) -> u8 {
        if self.is_ipv6() {
            AF_INET6
        } else {
            AF_INET
        }
    }

    /// `ip route` style text, with `dev_name` mapping indices to names.
    pub fn describe(&self, dev_name: impl Fn(u32) -> String) -> String {
        let mut s = if self.dst.is_default() {
            "default".to_string()
        } else {
            IpCidr::new(self.dst.network(), self.dst.prefix_len())
                .map(|c| c.to_string())
                .unwrap_or_else(|_| self.dst.to_string())
        };
        if let Some(g) = self.gateway {
            s.push_str(&format!(" via {g}"));
        }
        if let Some(o) = self.oif {
            s.push_str(&format!(" dev {}", dev_name(o)));
        }
        for n in &self.nexthops {
            s.push_str(" nexthop");
            if let Some(g) = n.gateway {
                s.push_str(&format!(" via {g}"));
            }
            s.push_str(&format!(" dev {}", dev_name(n.oif)));
        }
        if let Some(p) = self.prefsrc {
            s.push_str(&format!(" src {p}"));
        }
        if let Some(m) = self.priority {
            s.push_str(&format!(" metric {m}"));
        }
        if self.table != RouteTable::MAIN {
            s.push_str(&format!(" table {}", self.table.0));
        }
        s
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe(|i| format!("#{i}")))
    }
}

/// `struct rtmsg`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct RtMsg {
    pub family: u8,
    pub dst_len: u8,
    pub src_len: u8,
    pub tos: u8,
    pub table: u8,
    pub protocol: u8,
    pub scope: u8,
    pub kind: u8,
    pub flags: u32,
}

impl RtMsg {
    pub(crate) const LEN: usize = 12;

    pub(crate) fn encode(&self) -> [u8; 12] {
        let mut b = [0u8; 12];
        b[0] = self.family;
        b[1] = self.dst_len;
        b[2] = self.src_len;
        b[3] = self.tos;
        b[4] = self.table;
        b[5] = self.protocol;
        b[6] = self.scope;
        b[7] = self.kind;
        b[8..12].copy_from_slice(&self.flags.to_ne_bytes());
        b
    }

    pub(crate) fn decode(payload: &[u8]) -> Result<(RtMsg, &[u8]), WireError> {
        let (h, rest) = wire::fixed_header::<{ RtMsg::LEN }>(payload, "rtmsg")?;
        Ok((
            RtMsg {
                family: h[0],
                dst_len: h[1],
                src_len: h[2],
                tos: h[3],
                table: h[4],
                protocol: h[5],
                scope: h[6],
                kind: h[7],
                flags: u32::from_ne_bytes([h[8], h[9], h[10], h[11]]),
            },
            rest,
        ))
    }
}

fn cidr(addr: IpAddr, len: u8, kind: u16) -> Result<IpCidr, WireError> {
    IpCidr::new(addr, len).map_err(|_| WireError::AttrSize {
        kind,
        len: usize::from(len),
        expected: "prefix length within the address size",
    })
}

fn decode_multipath(payload: &[u8]) -> Result<Vec<NextHop>, WireError> {
    let mut out = Vec::new();
    let mut rest = payload;
    while rest.len() >= 8 {
        let len = usize::from(u16::from_ne_bytes([rest[0], rest[1]]));
        if len < 8 || len > rest.len() {
            return Err(WireError::BadLength {
                what: "rtnexthop",
                len,
                room: rest.len(),
            });
        }
        let mut nh = NextHop {
            oif: u32::from_ne_bytes([rest[4], rest[5], rest[6], rest[7]]),
            gateway: None,
            hops: rest[3],
            flags: rest[2],
        };
        for a in wire::attrs(&rest[8..len]) {
            let a = a?;
            if a.kind == RTA_GATEWAY {
                nh.gateway = Some(a.ip()?);
            }
        }
        out.push(nh);
        rest = rest.get(wire::align4(len)..).unwrap_or(&[]);
    }
    Ok(out)
}

/// Decodes an `RTM_NEWROUTE` payload; `None` for families other than IPv4/IPv6.
pub(crate) fn decode_route(payload: &[u8]) -> Result<Option<Route>, WireError> {
    let (h, attrs) = RtMsg::decode(payload)?;
    let v6 = match h.family {
        AF_INET => false,
        AF_INET6 => true,
        _ => return Ok(None),
    };
    let mut r = Route {
        dst: cidr(IpCidr::default_for(v6).addr(), h.dst_len, RTA_DST)?,
        src: None,
        gateway: None,
        oif: None,
        prefsrc: None,
        priority: None,
        table: RouteTable(u32::from(h.table)),
        protocol: RouteProtocol(h.protocol),
        scope: Scope(h.scope),
        kind: RouteType(h.kind),
        flags: h.flags,
        tos: h.tos,
        metrics: Vec::new(),
        pref: None,
        nexthops: Vec::new(),
        nh_id: None,
    };
    for a in wire::attrs(attrs) {
        let a = a?;
        match a.kind {
            RTA_DST => r.dst = cidr(a.ip()?, h.dst_len, RTA_DST)?,
            RTA_SRC => r.src = Some(cidr(a.ip()?, h.src_len, RTA_SRC)?),
            RTA_GATEWAY => r.gateway = Some(a.ip()?),
            RTA_OIF => r.oif = Some(a.u32()?),
            RTA_PREFSRC => r.prefsrc = Some(a.ip()?),
            RTA_PRIORITY => r.priority = Some(a.u32()?),
            RTA_TABLE => r.table = RouteTable(a.u32()?),
            RTA_PREF => r.pref = Some(a.u8()?),
            RTA_NH_ID => r.nh_id = Some(a.u32()?),
            RTA_MULTIPATH => r.nexthops = decode_multipath(a.payload)?,
            RTA_METRICS => {
                for m in a.nested() {
                    let m = m?;
                    r.metrics.push((m.kind, m.payload.to_vec()));
                }
            }
            _ => {}
        }
    }
    Ok(Some(r))
}

fn parse_route_msg(m: &NlMsg<'_>) -> Result<Option<Route>, WireError> {
    if m.msg_type != RTM_NEWROUTE {
        return Ok(None);
    }
    decode_route(m.payload)
}

fn push_header(b: &mut MessageBuilder, r: &Route, scope: u8, protocol: u8, kind: u8) {
    let table8 = u8::try_from(r.table.0).unwrap_or(RT_TABLE_UNSPEC as u8);
    b.push_header(
        &RtMsg {
            family: r.family(),
            dst_len: r.dst.prefix_len(),
            src_len: r.src.map_or(0, |s| s.prefix_len()),
            tos: r.tos,
            table: table8,
            protocol,
            scope,
            kind,
            flags: r.flags & ROUTE_FLAGS_SETTABLE,
        }
        .encode(),
    );
    if !r.dst.is_default() {
        b.attr_ip(RTA_DST, r.dst.network());
    }
    if let Some(s) = r.src {
        b.attr_ip(RTA_SRC, s.network());
    }
    b.attr_u32(RTA_TABLE, r.table.0);
}

fn push_nexthops(b: &mut MessageBuilder, r: &Route) {
    if let Some(id) = r.nh_id {
        b.attr_u32(RTA_NH_ID, id);
        return;
    }
    if let Some(g) = r.gateway {
        b.attr_ip(RTA_GATEWAY, g);
    }
    if let Some(o) = r.oif {
        b.attr_u32(RTA_OIF, o);
    }
    if !r.nexthops.is_empty() {
        let mut mp = Vec::new();
        for n in &r.nexthops {
            let gw_len = match n.gateway {
                Some(IpAddr::V4(_)) => 8,
                Some(IpAddr::V6(_)) => 20,
                None => 0,
            };
            let len = 8 + gw_len;
            mp.extend_from_slice(&(len as u16).to_ne_bytes());
            mp.push(n.flags);
            mp.push(n.hops);
            mp.extend_from_slice(&n.oif.to_ne_bytes());
            if let Some(g) = n.gateway {
                let octets: Vec<u8> = match g {
                    IpAddr::V4(a) => a.octets().to_vec(),
                    IpAddr::V6(a) => a.octets().to_vec(),
                };
                mp.extend_from_slice(&((4 + octets.len()) as u16).to_ne_bytes());
                mp.extend_from_slice(&RTA_GATEWAY.to_ne_bytes());
                mp.extend_from_slice(&octets);
            }
        }
        b.attr(RTA_MULTIPATH, &mp);
    }
}

/// Encodes `RTM_NEWROUTE` with `nl_flags` (`NLM_F_CREATE|NLM_F_EXCL` for add,
/// `|NLM_F_REPLACE` for replace, `|NLM_F_APPEND` for append).
pub(crate) fn encode_new_route(r: &Route, nl_flags: u16) -> MessageBuilder {
    let mut b = MessageBuilder::new(RTM_NEWROUTE, nl_flags | NLM_F_ACK);
    push_header(&mut b, r, r.scope.0, r.protocol.0, r.kind.0);
    push_nexthops(&mut b, r);
    if let Some(p) = r.prefsrc {
        b.attr_ip(RTA_PREFSRC, p);
    }
    if let Some(m) = r.priority {
        b.attr_u32(RTA_PRIORITY, m);
    }
    if let Some(p) = r.pref {
        b.attr_u8(RTA_PREF, p);
    }
    if !r.metrics.is_empty() {
        let n = b.nest_start(RTA_METRICS);
        for (k, v) in &r.metrics {
            b.attr(*k, v);
        }
        b.nest_end(n);
    }
    b
}

/// Encodes `RTM_DELROUTE` for exactly this route: scope `NOWHERE` (any), and every field
/// that identifies it.
pub(crate) fn encode_delete_route(r: &Route) -> MessageBuilder {
    let mut b = MessageBuilder::new(RTM_DELROUTE, NLM_F_ACK);
    push_header(&mut b, r, RT_SCOPE_NOWHERE, r.protocol.0, r.kind.0);
    push_nexthops(&mut b, r);
    if let Some(p) = r.prefsrc {
        b.attr_ip(RTA_PREFSRC, p);
    }
    if let Some(m) = r.priority {
        b.attr_u32(RTA_PRIORITY, m);
    }
    b
}

impl Rtnl {
    /// All IPv4 and IPv6 routes of every table (`ip route show table all` for both
    /// families), in kernel order.
    pub fn routes(&self) -> Result<Vec<Route>, RtnlError> {
        let mut out = Vec::new();
        for family in [AF_INET, AF_INET6] {
            let mut b = MessageBuilder::new(RTM_GETROUTE, NLM_F_DUMP);
            b.push_header(
                &RtMsg {
                    family,
                    ..Default::default()
                }
                .encode(),
            );
            out.extend(self.dump(b, || "listing routes".into(), parse_route_msg)?);
        }
        Ok(out)
    }

    /// The routes of one table (e.g. [`RouteTable::MAIN`], what `ip route` shows).
    pub fn routes_in(&self, table: RouteTable) -> Result<Vec<Route>, RtnlError> {
        Ok(self
            .routes()?
            .into_iter()
            .filter(|r| r.table == table)
            .collect())
    }

    fn describe_route(&self, r: &Route) -> String {
        r.describe(|i| self.describe_link(i))
    }

    /// Adds a route (`ip route add`); `EEXIST` if an equal one exists.
    pub fn add_route(&self, r: &Route) -> Result<(), RtnlError> {
        self.execute(encode_new_route(r, NLM_F_CREATE | NLM_F_EXCL), || {
            format!("adding route {}", self.describe_route(r))
        })
    }

    /// Adds or replaces a route (`ip route replace`).
    pub fn replace_route(&self, r: &Route) -> Result<(), RtnlError> {
        self.execute(encode_new_route(r, NLM_F_CREATE | NLM_F_REPLACE), || {
            format!("replacing route {}", self.describe_route(r))
        })
    }

    /// Appends a route after existing ones with the same key (`ip route append`, IPv4:
    /// allows one prefix/metric to exist on two devices at once).
    pub fn append_route(&self, r: &Route) -> Result<(), RtnlError> {
        self.execute(encode_new_route(r, NLM_F_CREATE | NLM_F_APPEND), || {
            format!("appending route {}", self.describe_route(r))
        })
    }

    /// Deletes a route (`ip route del`); `ESRCH` if there is no such route.
    pub fn delete_route(&self, r: &Route) -> Result<(), RtnlError> {
        self.execute(encode_delete_route(r), || {
            format!("deleting route {}", self.describe_route(r))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netns::testing::*;
    use crate::rtnl::testing::veth_link;
    use crate::rtnl::Address;

    fn round_trip(r: &Route) -> Route {
        let msg = encode_new_route(r, NLM_F_CREATE).finish(1).unwrap();
        let m = wire::messages(&msg).next().unwrap().unwrap();
        decode_route(m.payload).unwrap().unwrap()
    }

    #[test]
    fn routes_round_trip_through_the_codec() {
        let mut r = Route::default_via("10.0.0.254".parse().unwrap())
            .dev(3)
            .metric(100)
            .src("10.0.0.1".parse().unwrap())
            .table(RouteTable(1000));
        r.metrics.push((2, 1400u32.to_ne_bytes().to_vec()));
        r.flags = RTNH_F_ONLINK;
        assert_eq!(round_trip(&r), r);
        let mut mp = Route::new("2001:db8:1::/48".parse().unwrap());
        mp.nexthops = vec![
            NextHop {
                oif: 2,
                gateway: Some("fe80::1".parse().unwrap()),
                hops: 0,
                flags: 0,
            },
            NextHop {
                oif: 3,
                gateway: Some("fe80::2".parse().unwrap()),
                hops: 4,
                flags: 0,
            },
        ];
        mp.pref = Some(1);
        assert_eq!(round_trip(&mp), mp);
        assert!(mp.uses_oif(3) && !mp.uses_oif(4));
        let moved = mp.with_oif_replaced(3, 9);
        assert!(moved.uses_oif(9) && !moved.uses_oif(3));
    }

    #[test]
    fn delete_matches_any_scope_and_default_has_no_dst() {
        let r = Route::default_via("10.0.0.254".parse().unwrap()).dev(3);
        let msg = encode_delete_route(&r).finish(1).unwrap();
        let m = wire::messages(&msg).next().unwrap().unwrap();
        let (h, rest) = RtMsg::decode(m.payload).unwrap();
        assert_eq!(h.scope, RT_SCOPE_NOWHERE);
        assert_eq!(h.dst_len, 0);
        assert!(wire::attrs(rest).all(|a| a.unwrap().kind != RTA_DST));
        assert_eq!(
            r.describe(|i| format!("eth{i}")),
            "default via 10.0.0.254 dev eth3"
        );
    }

    #[test]
    fn routes_against_iproute2() {
        let ns = scratch();
        let r = Rtnl::open_in(&ns).unwrap();
        let idx = veth_link(&r, "d0");
        r.add_address(&Address::new(idx, "10.0.0.1/24".parse().unwrap()))
            .unwrap();
        let mut a6 = Address::new(idx, "2001:db8::1/64".parse().unwrap());
        a6.flags = crate::rtnl::AddrFlags::NODAD;
        r.add_address(&a6).unwrap();

        let gw: IpAddr = "10.0.0.254".parse().unwrap();
        let default = Route::default_via(gw)
            .dev(idx)
            .metric(100)
            .src("10.0.0.1".parse().unwrap());
        r.add_route(&default).unwrap();
        let mut net = Route::new("192.168.7.0/24".parse().unwrap()).dev(idx);
        net.protocol = RouteProtocol::STATIC;
        net.metrics.push((2, 1300u32.to_ne_bytes().to_vec())); // RTAX_MTU
        r.add_route(&net).unwrap();
        let d6 = Route::default_via("2001:db8::fe".parse().unwrap())
            .dev(idx)
            .metric(1024);
        r.add_route(&d6).unwrap();
        let blackhole = Route {
            kind: RouteType::BLACKHOLE,
            scope: Scope::UNIVERSE,
            ..Route::new("10.99.0.0/16".parse().unwrap())
        };
        r.add_route(&blackhole).unwrap();

        let main = r.routes_in(RouteTable::MAIN).unwrap();
        let got = main
            .iter()
            .find(|x| x.dst.is_default() && !x.is_ipv6())
            .unwrap();
        assert_eq!(got, &default);
        let got = main
            .iter()
            .find(|x| x.dst.to_string() == "192.168.7.0/24")
            .unwrap();
        assert_eq!(got.metrics, net.metrics);
        assert_eq!(got.scope, Scope::LINK);
        assert!(main
            .iter()
            .any(|x| x.protocol == RouteProtocol::KERNEL && x.dst.to_string() == "10.0.0.0/24"));
        let got6 = main
            .iter()
            .find(|x| x.dst.is_default() && x.is_ipv6())
            .unwrap();
        assert_eq!(got6.gateway, d6.gateway);
        assert_eq!(got6.priority, Some(1024));
        assert!(main.iter().any(|x| x.kind == RouteType::BLACKHOLE));

        let shown = ip_in(&ns, &["route"]);
        assert!(
            shown.contains("default via 10.0.0.254 dev d0 src 10.0.0.1 metric 100"),
            "{shown}"
        );
        assert!(
            shown.contains("192.168.7.0/24 dev d0 proto static scope link mtu 1300"),
            "{shown}"
        );
        assert!(shown.contains("blackhole 10.99.0.0/16"), "{shown}");

        let e = r.add_route(&default).unwrap_err();
        assert_eq!(
            e.to_string(),
            "adding route default via 10.0.0.254 dev d0 src 10.0.0.1 metric 100: File exists (EEXIST)"
        );
        r.delete_route(&default).unwrap();
        r.delete_route(&d6).unwrap();
        let e = r.delete_route(&default).unwrap_err();
        assert!(e.is_not_found(), "{e}");
        assert!(!r
            .routes_in(RouteTable::MAIN)
            .unwrap()
            .iter()
            .any(|x| x.dst.is_default()));
    }
}
