//! The IPv4 routing table: longest-prefix match over host (/32) routes and prefixes.
//!
//! vif-route (xen-networking.md §6.3) installs one route per `ip=` address of a vif
//! (`ip route add A dev vifD.N src <main_ip>`); dom0's own addresses are local; the
//! default route leaves through the uplink to a gateway (or through dom0's kernel). Host
//! routes — one per guest address, the common case — sit in a hash map, so a lookup is one
//! probe plus a scan of the (few) shorter prefixes, sorted longest first.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use foldhash::fast::RandomState;

use crate::port::PortId;
use crate::wire::Ipv4Cidr;

/// Where a route sends a packet (Linux route types `unicast`, `unreachable`,
/// `prohibit`, `blackhole`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NextHop {
    /// The destination is on the link behind this port (resolve the destination itself).
    OnLink(PortId),
    /// Via a gateway on the link behind this port (resolve the gateway).
    Gateway(PortId, Ipv4Addr),
    /// Reject with ICMP host unreachable.
    Unreachable,
    /// Reject with ICMP communication administratively prohibited.
    Prohibit,
    /// Discard silently.
    Blackhole,
}

impl NextHop {
    /// The egress port of a unicast route.
    pub const fn port(&self) -> Option<PortId> {
        match *self {
            NextHop::OnLink(p) | NextHop::Gateway(p, _) => Some(p),
            _ => None,
        }
    }
}

/// One route.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Route {
    /// Destination prefix (host bits ignored).
    pub dest: Ipv4Cidr,
    /// What to do with matching packets.
    pub next_hop: NextHop,
}

fn mask(len: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0)
}

fn network(c: &Ipv4Cidr) -> (u32, u8) {
    let len = c.prefix_len();
    (u32::from(c.addr()) & mask(len), len)
}

/// The table.
#[derive(Clone, Debug, Default)]
pub struct RouteTable {
    hosts: HashMap<u32, NextHop, RandomState>,
    /// (network, prefix length, next hop), longest prefix first.
    prefixes: Vec<(u32, u8, NextHop)>,
}

impl RouteTable {
    /// An empty table.
    pub fn new() -> Self {
        RouteTable::default()
    }

    /// Adds a route, replacing one with the same destination. Returns the one replaced.
    pub fn add(&mut self, route: Route) -> Option<NextHop> {
        let (net, len) = network(&route.dest);
        if len == 32 {
            return self.hosts.insert(net, route.next_hop);
        }
        if let Some(r) = self
            .prefixes
            .iter_mut()
            .find(|(n, l, _)| *n == net && *l == len)
        {
            return Some(core::mem::replace(&mut r.2, route.next_hop));
        }
        let at = self.prefixes.partition_point(|(_, l, _)| *l >= len);
        self.prefixes.insert(at, (net, len, route.next_hop));
        None
    }

    /// Removes the route for exactly `dest`. Returns its next hop.
    pub fn remove(&mut self, dest: Ipv4Cidr) -> Option<NextHop> {
        let (net, len) = network(&dest);
        if len == 32 {
            return self.hosts.remove(&net);
        }
        let at = self
            .prefixes
            .iter()
            .position(|(n, l, _)| *n == net && *l == len)?;
        Some(self.prefixes.remove(at).2)
    }

    /// Removes every unicast route through `port`; returns how many.
    pub fn remove_port(&mut self, port: PortId) -> usize {
        let before = self.len();
        self.hosts.retain(|_, nh| nh.port() != Some(port));
        self.prefixes.retain(|(_, _, nh)| nh.port() != Some(port));
        before - self.len()
    }

    /// The route for exactly `dest`, if any.
    pub fn lookup_exact(&self, dest: Ipv4Cidr) -> Option<NextHop> {
        let (net, len) = network(&dest);
        if len == 32 {
            return self.hosts.get(&net).copied();
        }
        self.prefixes
            .iter()
            .find(|(n, l, _)| *n == net && *l == len)
            .map(|(_, _, nh)| *nh)
    }

    /// Longest-prefix match.
    pub fn lookup(&self, dst: Ipv4Addr) -> Option<NextHop> {
        let d = u32::from(dst);
        if let Some(nh) = self.hosts.get(&d) {
            return Some(*nh);
        }
        self.prefixes
            .iter()
            .find(|(n, l, _)| d & mask(*l) == *n)
            .map(|(_, _, nh)| *nh)
    }

    /// Number of routes.
    pub fn len(&self) -> usize {
        self.hosts.len() + self.prefixes.len()
    }

    /// No routes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every route (host routes in no particular order, then prefixes longest first).
    pub fn routes(&self) -> impl Iterator<Item = Route> + '_ {
        let hosts = self.hosts.iter().map(|(&n, &nh)| Route {
            dest: Ipv4Cidr::host(Ipv4Addr::from(n)),
            next_hop: nh,
        });
        let prefixes = self.prefixes.iter().filter_map(|&(n, l, nh)| {
            Some(Route {
                dest: Ipv4Cidr::new(Ipv4Addr::from(n), l)?,
                next_hop: nh,
            })
        });
        hosts.chain(prefixes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn r(dest: &str, nh: NextHop) -> Route {
        Route {
            dest: dest.parse().unwrap(),
            next_hop: nh,
        }
    }

    #[test]
    fn longest_prefix_wins() {
        let mut t = RouteTable::new();
        let up = PortId(1);
        let gw = Ipv4Addr::new(192, 0, 2, 254);
        t.add(r("0.0.0.0/0", NextHop::Gateway(up, gw)));
        t.add(r("192.0.2.0/24", NextHop::OnLink(up)));
        t.add(r("10.0.0.5", NextHop::OnLink(PortId(3))));
        t.add(r("10.0.0.0/8", NextHop::Prohibit));
        assert_eq!(
            t.lookup(Ipv4Addr::new(10, 0, 0, 5)),
            Some(NextHop::OnLink(PortId(3)))
        );
        assert_eq!(
            t.lookup(Ipv4Addr::new(10, 0, 0, 6)),
            Some(NextHop::Prohibit)
        );
        assert_eq!(
            t.lookup(Ipv4Addr::new(192, 0, 2, 7)),
            Some(NextHop::OnLink(up))
        );
        assert_eq!(
            t.lookup(Ipv4Addr::new(8, 8, 8, 8)),
            Some(NextHop::Gateway(up, gw))
        );
        // Replace, remove, remove by port.
        assert_eq!(
            t.add(r("10.0.0.0/8", NextHop::Unreachable)),
            Some(NextHop::Prohibit)
        );
        assert_eq!(
            t.lookup(Ipv4Addr::new(10, 9, 9, 9)),
            Some(NextHop::Unreachable)
        );
        assert_eq!(
            t.remove("10.0.0.0/8".parse().unwrap()),
            Some(NextHop::Unreachable)
        );
        assert_eq!(t.len(), 3);
        assert_eq!(t.remove_port(up), 2);
        assert_eq!(t.lookup(Ipv4Addr::new(8, 8, 8, 8)), None);
        assert_eq!(t.routes().count(), 1);
    }

    proptest! {
        /// The table agrees with a brute-force longest-prefix match.
        #[test]
        fn matches_brute_force(
            routes in proptest::collection::vec((any::<u32>(), 0u8..=32, 0u16..4), 0..20),
            probes in proptest::collection::vec(any::<u32>(), 1..20),
        ) {
            let mut t = RouteTable::new();
            let mut model: Vec<(u32, u8, NextHop)> = Vec::new();
            for (a, l, p) in routes {
                let nh = NextHop::OnLink(PortId(p));
                t.add(Route { dest: Ipv4Cidr::new(Ipv4Addr::from(a), l).unwrap(), next_hop: nh });
                let n = a & mask(l);
                model.retain(|(mn, ml, _)| !(*mn == n && *ml == l));
                model.push((n, l, nh));
            }
            for d in probes {
                let best = model.iter().filter(|(n, l, _)| d & mask(*l) == *n).max_by_key(|(_, l, _)| *l).map(|x| x.2);
                prop_assert_eq!(t.lookup(Ipv4Addr::from(d)), best);
            }
        }
    }
}
