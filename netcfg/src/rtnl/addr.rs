//! Interface addresses (`RTM_*ADDR`), IPv4 and IPv6.
//!
//! Message shape (linux/if_addr.h): `struct ifaddrmsg {family u8, prefixlen u8, flags u8,
//! scope u8, index u32}` then `IFA_*` attributes. `IFA_LOCAL` is the interface's own
//! address and `IFA_ADDRESS` the peer on point-to-point links (equal otherwise; IPv6 sends
//! only `IFA_ADDRESS` when there is no peer). `IFA_FLAGS` (u32) supersedes the 8-bit
//! `ifa_flags`. `IFA_CACHEINFO` carries the preferred/valid lifetimes in seconds,
//! `0xffffffff` meaning forever.

use super::netaddr::IpCidr;
use super::uapi::*;
use super::wire::{self, MessageBuilder, NlMsg, WireError};
use super::{Rtnl, RtnlError};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

/// Lifetime value meaning "forever" (`INFINITY_LIFE_TIME` in the kernel).
pub const INFINITY_LIFETIME: u32 = u32::MAX;

/// An address or route scope (`RT_SCOPE_*`, linux/rtnetlink.h).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Scope(pub u8);

impl Scope {
    /// `RT_SCOPE_UNIVERSE` (printed `global`).
    pub const UNIVERSE: Scope = Scope(RT_SCOPE_UNIVERSE);
    /// `RT_SCOPE_SITE`.
    pub const SITE: Scope = Scope(RT_SCOPE_SITE);
    /// `RT_SCOPE_LINK`.
    pub const LINK: Scope = Scope(RT_SCOPE_LINK);
    /// `RT_SCOPE_HOST`.
    pub const HOST: Scope = Scope(RT_SCOPE_HOST);
    /// `RT_SCOPE_NOWHERE` (wildcard in route deletion).
    pub const NOWHERE: Scope = Scope(RT_SCOPE_NOWHERE);
}

impl fmt::Display for Scope {
    /// iproute2's names (`global`, `site`, `link`, `host`, `nowhere`) or the number.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            RT_SCOPE_UNIVERSE => f.write_str("global"),
            RT_SCOPE_SITE => f.write_str("site"),
            RT_SCOPE_LINK => f.write_str("link"),
            RT_SCOPE_HOST => f.write_str("host"),
            RT_SCOPE_NOWHERE => f.write_str("nowhere"),
            n => write!(f, "{n}"),
        }
    }
}

/// Address flags (`IFA_F_*`, linux/if_addr.h).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct AddrFlags(pub u32);

impl AddrFlags {
    /// `IFA_F_SECONDARY` (IPv4: not the first address of its subnet; IPv6: temporary).
    pub const SECONDARY: AddrFlags = AddrFlags(IFA_F_SECONDARY);
    /// `IFA_F_NODAD`: skip duplicate address detection.
    pub const NODAD: AddrFlags = AddrFlags(IFA_F_NODAD);
    /// `IFA_F_OPTIMISTIC`: optimistic DAD (RFC 4429).
    pub const OPTIMISTIC: AddrFlags = AddrFlags(IFA_F_OPTIMISTIC);
    /// `IFA_F_DADFAILED`.
    pub const DADFAILED: AddrFlags = AddrFlags(IFA_F_DADFAILED);
    /// `IFA_F_HOMEADDRESS` (Mobile IPv6).
    pub const HOMEADDRESS: AddrFlags = AddrFlags(IFA_F_HOMEADDRESS);
    /// `IFA_F_DEPRECATED`: preferred lifetime expired.
    pub const DEPRECATED: AddrFlags = AddrFlags(IFA_F_DEPRECATED);
    /// `IFA_F_TENTATIVE`: DAD in progress.
    pub const TENTATIVE: AddrFlags = AddrFlags(IFA_F_TENTATIVE);
    /// `IFA_F_PERMANENT`: configured with infinite lifetime (set by the kernel).
    pub const PERMANENT: AddrFlags = AddrFlags(IFA_F_PERMANENT);
    /// `IFA_F_MANAGETEMPADDR`: manage RFC 4941 temporaries from this address.
    pub const MANAGETEMPADDR: AddrFlags = AddrFlags(IFA_F_MANAGETEMPADDR);
    /// `IFA_F_NOPREFIXROUTE`: do not create the prefix route.
    pub const NOPREFIXROUTE: AddrFlags = AddrFlags(IFA_F_NOPREFIXROUTE);
    /// `IFA_F_MCAUTOJOIN`: join the multicast group of this address.
    pub const MCAUTOJOIN: AddrFlags = AddrFlags(IFA_F_MCAUTOJOIN);
    /// `IFA_F_STABLE_PRIVACY` (RFC 7217 address).
    pub const STABLE_PRIVACY: AddrFlags = AddrFlags(IFA_F_STABLE_PRIVACY);

    /// The flags `RTM_NEWADDR` accepts from userspace (the rest are kernel state):
    /// see `inet_rtm_newaddr` / `inet6_rtm_newaddr`.
    pub const SETTABLE: AddrFlags = AddrFlags(
        IFA_F_NODAD
            | IFA_F_OPTIMISTIC
            | IFA_F_HOMEADDRESS
            | IFA_F_MANAGETEMPADDR
            | IFA_F_NOPREFIXROUTE
            | IFA_F_MCAUTOJOIN,
    );

    /// Whether every bit of `other` is set.
    pub fn contains(&self, other: AddrFlags) -> bool {
        self.0 & other.0 == other.0
    }

    /// The bits of `self` also in `mask`.
    pub fn intersection(&self, mask: AddrFlags) -> AddrFlags {
        AddrFlags(self.0 & mask.0)
    }
}

impl std::ops::BitOr for AddrFlags {
    type Output = AddrFlags;
    fn bitor(self, rhs: AddrFlags) -> AddrFlags {
        AddrFlags(self.0 | rhs.0)
    }
}

/// One interface address as in `RTM_NEWADDR`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    /// The interface (`ifa_index`).
    pub ifindex: u32,
    /// The local address and prefix length (`IFA_LOCAL`, or `IFA_ADDRESS` without it).
    pub local: IpCidr,
    /// The peer of a point-to-point address (`IFA_ADDRESS` when it differs from local).
    pub peer: Option<IpAddr>,
    /// IPv4 broadcast (`IFA_BROADCAST`).
    pub broadcast: Option<Ipv4Addr>,
    /// IPv4 label (`IFA_LABEL`, e.g. `eth0:1`).
    pub label: Option<String>,
    /// Scope (`ifa_scope`).
    pub scope: Scope,
    /// Flags (`IFA_FLAGS`, or `ifa_flags`).
    pub flags: AddrFlags,
    /// Valid lifetime in seconds, [`INFINITY_LIFETIME`] for forever.
    pub valid_lft: u32,
    /// Preferred lifetime in seconds, [`INFINITY_LIFETIME`] for forever.
    pub preferred_lft: u32,
    /// Metric of the prefix route (`IFA_RT_PRIORITY`).
    pub metric: Option<u32>,
    /// Address protocol (`IFA_PROTO`), who installed it.
    pub proto: Option<u8>,
}

impl Address {
    /// A permanent global address on `ifindex` with no extras (`ip addr add CIDR dev X`).
    pub fn new(ifindex: u32, local: IpCidr) -> Address {
        Address {
            ifindex,
            local,
            peer: None,
            broadcast: None,
            label: None,
            scope: Scope::UNIVERSE,
            flags: AddrFlags::default(),
            valid_lft: INFINITY_LIFETIME,
            preferred_lft: INFINITY_LIFETIME,
            metric: None,
            proto: None,
        }
    }

    /// Whether this is an IPv6 address.
    pub fn is_ipv6(&self) -> bool {
        self.local.is_ipv6()
    }

    /// Whether the address is IPv4 secondary (`IFA_F_SECONDARY` on an IPv4 address).
    pub fn is_secondary_v4(&self) -> bool {
        !self.is_ipv6() && self.flags.contains(AddrFlags::SECONDARY)
    }

    fn family(&self) -> u8 {
        if self.is_ipv6() {
            AF_INET6
        } else {
            AF_INET
        }
    }
}

/// `struct ifaddrmsg`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct IfAddrMsg {
    pub family: u8,
    pub prefix_len: u8,
    pub flags: u8,
    pub scope: u8,
    pub index: u32,
}

impl IfAddrMsg {
    pub(crate) const LEN: usize = 8;

    pub(crate) fn encode(&self) -> [u8; 8] {
        let mut b = [0u8; 8];
        b[0] = self.family;
        b[1] = self.prefix_len;
        b[2] = self.flags;
        b[3] = self.scope;
        b[4..8].copy_from_slice(&self.index.to_ne_bytes());
        b
    }

    pub(crate) fn decode(payload: &[u8]) -> Result<(IfAddrMsg, &[u8]), WireError> {
        let (h, rest) = wire::fixed_header::<{ IfAddrMsg::LEN }>(payload, "ifaddrmsg")?;
        Ok((
            IfAddrMsg {
                family: h[0],
                prefix_len: h[1],
                flags: h[2],
                scope: h[3],
                index: u32::from_ne_bytes([h[4], h[5], h[6], h[7]]),
            },
            rest,
        ))
    }
}

/// Decodes an `RTM_NEWADDR` payload; `None` for families other than IPv4/IPv6.
pub(crate) fn decode_address(payload: &[u8]) -> Result<Option<Address>, WireError> {
    let (h, attrs) = IfAddrMsg::decode(payload)?;
    if h.family != AF_INET && h.family != AF_INET6 {
        return Ok(None);
    }
    let mut local = None;
    let mut address = None;
    let mut broadcast = None;
    let mut label = None;
    let mut flags = u32::from(h.flags);
    let mut valid = INFINITY_LIFETIME;
    let mut preferred = INFINITY_LIFETIME;
    let mut metric = None;
    let mut proto = None;
    for a in wire::attrs(attrs) {
        let a = a?;
        match a.kind {
            IFA_LOCAL => local = Some(a.ip()?),
            IFA_ADDRESS => address = Some(a.ip()?),
            IFA_BROADCAST => {
                if let IpAddr::V4(b) = a.ip()? {
                    broadcast = Some(b);
                }
            }
            IFA_LABEL => label = Some(a.string()),
            IFA_FLAGS => flags = a.u32()?,
            IFA_CACHEINFO => {
                // struct ifa_cacheinfo { ifa_prefered, ifa_valid, cstamp, tstamp } (u32 each)
                let p = a.payload;
                if p.len() < 8 {
                    return Err(WireError::AttrSize {
                        kind: a.kind,
                        len: p.len(),
                        expected: "16",
                    });
                }
                preferred = u32::from_ne_bytes([p[0], p[1], p[2], p[3]]);
                valid = u32::from_ne_bytes([p[4], p[5], p[6], p[7]]);
            }
            IFA_RT_PRIORITY => metric = Some(a.u32()?),
            IFA_PROTO => proto = Some(a.u8()?),
            _ => {}
        }
    }
    let (own, peer) = match (local, address) {
        (Some(l), Some(a)) if a != l => (l, Some(a)),
        (Some(l), _) => (l, None),
        (None, Some(a)) => (a, None),
        (None, None) => {
            return Err(WireError::Truncated {
                what: "address without IFA_LOCAL/IFA_ADDRESS",
                need: 1,
                have: 0,
            })
        }
    };
    let local = IpCidr::new(own, h.prefix_len).map_err(|_| WireError::AttrSize {
        kind: IFA_ADDRESS,
        len: usize::from(h.prefix_len),
        expected: "prefix length within the address size",
    })?;
    Ok(Some(Address {
        ifindex: h.index,
        local,
        peer,
        broadcast,
        label,
        scope: Scope(h.scope),
        flags: AddrFlags(flags),
        valid_lft: valid,
        preferred_lft: preferred,
        metric,
        proto,
    }))
}

fn parse_addr_msg(m: &NlMsg<'_>) -> Result<Option<Address>, WireError> {
    if m.msg_type != RTM_NEWADDR {
        return Ok(None);
    }
    decode_address(m.payload)
}

/// Encodes `RTM_NEWADDR` (`ip addr add`), carrying everything the kernel lets userspace
/// set: settable flags, label, broadcast, peer, lifetimes, prefix-route metric, protocol.
pub(crate) fn encode_add_address(a: &Address) -> MessageBuilder {
    let settable = a.flags.intersection(AddrFlags::SETTABLE);
    let mut b = MessageBuilder::new(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL | NLM_F_ACK);
    b.push_header(
        &IfAddrMsg {
            family: a.family(),
            prefix_len: a.local.prefix_len(),
            flags: (settable.0 & 0xff) as u8,
            scope: a.scope.0,
            index: a.ifindex,
        }
        .encode(),
    );
    b.attr_ip(IFA_LOCAL, a.local.addr());
    b.attr_ip(IFA_ADDRESS, a.peer.unwrap_or(a.local.addr()));
    if let Some(brd) = a.broadcast {
        b.attr_ip(IFA_BROADCAST, IpAddr::V4(brd));
    }
    if let Some(label) = &a.label {
        if !a.is_ipv6() {
            b.attr_str(IFA_LABEL, label);
        }
    }
    if settable.0 != 0 {
        b.attr_u32(IFA_FLAGS, settable.0);
    }
    if a.valid_lft != INFINITY_LIFETIME || a.preferred_lft != INFINITY_LIFETIME {
        let mut ci = [0u8; 16];
        ci[0..4].copy_from_slice(&a.preferred_lft.to_ne_bytes());
        ci[4..8].copy_from_slice(&a.valid_lft.to_ne_bytes());
        b.attr(IFA_CACHEINFO, &ci);
    }
    if let Some(m) = a.metric {
        b.attr_u32(IFA_RT_PRIORITY, m);
    }
    if let Some(p) = a.proto {
        b.attr_u8(IFA_PROTO, p);
    }
    b
}

/// Encodes `RTM_DELADDR` (`ip addr del`): identified by interface, local address, prefix
/// length (and peer).
pub(crate) fn encode_delete_address(a: &Address) -> MessageBuilder {
    let mut b = MessageBuilder::new(RTM_DELADDR, NLM_F_ACK);
    b.push_header(
        &IfAddrMsg {
            family: a.family(),
            prefix_len: a.local.prefix_len(),
            flags: 0,
            scope: 0,
            index: a.ifindex,
        }
        .encode(),
    );
    b.attr_ip(IFA_LOCAL, a.local.addr());
    b.attr_ip(IFA_ADDRESS, a.peer.unwrap_or(a.local.addr()));
    b
}

impl Rtnl {
    /// All IPv4 and IPv6 addresses of the namespace (`ip addr show`), in kernel order.
    pub fn addresses(&self) -> Result<Vec<Address>, RtnlError> {
        let mut b = MessageBuilder::new(RTM_GETADDR, NLM_F_DUMP);
        b.push_header(&IfAddrMsg::default().encode());
        self.dump(b, || "listing addresses".into(), parse_addr_msg)
    }

    /// The addresses of one link, in kernel order (IPv4 first, as `ip addr show DEV`).
    pub fn addresses_of<'a>(
        &self,
        id: impl Into<super::LinkId<'a>>,
    ) -> Result<Vec<Address>, RtnlError> {
        let index = self.ifindex(id)?;
        Ok(self
            .addresses()?
            .into_iter()
            .filter(|a| a.ifindex == index)
            .collect())
    }

    /// Adds an address (`ip addr add`); `EEXIST` if it is already there.
    pub fn add_address(&self, a: &Address) -> Result<(), RtnlError> {
        self.execute(encode_add_address(a), || {
            format!(
                "adding address {} to {}",
                a.local,
                self.describe_link(a.ifindex)
            )
        })
    }

    /// Deletes an address (`ip addr del`); `EADDRNOTAVAIL` if it is not there.
    pub fn delete_address(&self, a: &Address) -> Result<(), RtnlError> {
        self.execute(encode_delete_address(a), || {
            format!(
                "deleting address {} from {}",
                a.local,
                self.describe_link(a.ifindex)
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netns::testing::*;
    use crate::rtnl::testing::veth_link;

    fn round_trip(a: &Address) -> Address {
        // Encode as the kernel would report it: NEWADDR carries the same attributes.
        let msg = encode_add_address(a).finish(1).unwrap();
        let m = wire::messages(&msg).next().unwrap().unwrap();
        decode_address(m.payload).unwrap().unwrap()
    }

    #[test]
    fn add_request_carries_settable_state() {
        let mut a = Address::new(4, "10.0.0.2/24".parse().unwrap());
        a.broadcast = Some("10.0.0.255".parse().unwrap());
        a.label = Some("eth0:1".into());
        a.flags = AddrFlags::NOPREFIXROUTE | AddrFlags::PERMANENT;
        a.valid_lft = 300;
        a.preferred_lft = 100;
        a.metric = Some(50);
        let back = round_trip(&a);
        // PERMANENT is kernel state and is not sent.
        assert_eq!(back.flags, AddrFlags::NOPREFIXROUTE);
        assert_eq!(
            Address {
                flags: AddrFlags::NOPREFIXROUTE,
                ..a.clone()
            },
            back
        );
        let v6 = Address::new(4, "2001:db8::5/64".parse().unwrap());
        assert_eq!(round_trip(&v6), v6);
    }

    #[test]
    fn point_to_point_peer_is_kept_apart() {
        let mut a = Address::new(2, "10.1.0.1/32".parse().unwrap());
        a.peer = Some("10.1.0.2".parse().unwrap());
        assert_eq!(round_trip(&a), a);
    }

    #[test]
    fn addresses_v4_v6_against_iproute2() {
        let ns = scratch();
        let r = Rtnl::open_in(&ns).unwrap();
        let idx = veth_link(&r, "d0");
        let mut a4 = Address::new(idx, "10.0.0.1/24".parse().unwrap());
        a4.broadcast = Some("10.0.0.255".parse().unwrap());
        a4.label = Some("d0:web".into());
        r.add_address(&a4).unwrap();
        let mut s4 = Address::new(idx, "10.0.0.2/24".parse().unwrap());
        s4.metric = Some(7);
        r.add_address(&s4).unwrap();
        let mut a6 = Address::new(idx, "2001:db8::1/64".parse().unwrap());
        a6.flags = AddrFlags::NODAD | AddrFlags::NOPREFIXROUTE;
        a6.valid_lft = 3600;
        a6.preferred_lft = 1800;
        r.add_address(&a6).unwrap();

        let got = r.addresses_of("d0").unwrap();
        let g4 = got.iter().find(|a| a.local == a4.local).unwrap();
        assert_eq!(g4.broadcast, a4.broadcast);
        assert_eq!(g4.label.as_deref(), Some("d0:web"));
        assert!(g4.flags.contains(AddrFlags::PERMANENT));
        assert!(!g4.flags.contains(AddrFlags::SECONDARY));
        let gs = got.iter().find(|a| a.local == s4.local).unwrap();
        assert!(
            gs.is_secondary_v4(),
            "second address of a subnet is secondary"
        );
        let g6 = got.iter().find(|a| a.local == a6.local).unwrap();
        assert!(g6
            .flags
            .contains(AddrFlags::NOPREFIXROUTE | AddrFlags::NODAD));
        assert!(
            g6.valid_lft <= 3600 && g6.valid_lft > 3500,
            "{}",
            g6.valid_lft
        );
        assert!(!g6.flags.contains(AddrFlags::PERMANENT));
        // The link-local address the kernel generated is there too, with link scope.
        assert!(got.iter().any(|a| a.is_ipv6() && a.scope == Scope::LINK));

        let shown = ip_in(&ns, &["-o", "addr", "show", "d0"]);
        assert!(
            shown.contains("inet 10.0.0.1/24 brd 10.0.0.255 scope global d0:web"),
            "{shown}"
        );
        assert!(
            shown.contains("inet 10.0.0.2/24 metric 7 scope global secondary d0"),
            "{shown}"
        );
        // A finite lifetime makes the address "dynamic" (not IFA_F_PERMANENT) in iproute2's words.
        assert!(
            shown.contains("inet6 2001:db8::1/64 scope global nodad dynamic noprefixroute"),
            "{shown}"
        );

        let e = r.add_address(&a4).unwrap_err();
        // The kernel's extended ACK text follows the errno.
        assert_eq!(
            e.to_string(),
            "adding address 10.0.0.1/24 to d0: File exists (EEXIST): ipv4: Address already assigned"
        );
        r.delete_address(&s4).unwrap();
        r.delete_address(&a6).unwrap();
        let e = r.delete_address(&a6).unwrap_err();
        assert!(e.is_not_found(), "{e}");
        let left: Vec<_> = r
            .addresses_of(idx)
            .unwrap()
            .into_iter()
            .filter(|a| a.scope != Scope::LINK)
            .map(|a| a.local)
            .collect();
        assert_eq!(left, vec![a4.local]);
    }

    #[test]
    fn multi_part_dumps_are_read_to_the_end() {
        let ns = scratch();
        let r = Rtnl::open_in(&ns).unwrap();
        let idx = veth_link(&r, "d0");
        // ~100 bytes per address: 1000 of them span several dump datagrams.
        for i in 0..1000u32 {
            let ip = std::net::Ipv4Addr::from(0x0a40_0000 + i);
            r.add_address(&Address::new(idx, IpCidr::host(IpAddr::V4(ip))))
                .unwrap();
        }
        let got = r.addresses_of(idx).unwrap();
        assert_eq!(got.iter().filter(|a| !a.is_ipv6()).count(), 1000);
        let shown = ip_in(&ns, &["-4", "-o", "addr", "show", "d0"]);
        assert_eq!(shown.lines().count(), 1000);
    }
}
