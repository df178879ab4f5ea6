//! Neighbour entries (`RTM_*NEIGH`): static ARP/NDP entries and proxy-ARP entries.
//!
//! Message shape (linux/neighbour.h): `struct ndmsg {family u8, pad u8, pad u16, ifindex
//! i32, state u16, flags u8, type u8}` then `NDA_DST` / `NDA_LLADDR`. Proxy entries
//! (`ip neigh add proxy IP dev DEV`) carry `NTF_PROXY` in `ndm_flags`; a dump returns them
//! only when the request's `ndm_flags` is exactly `NTF_PROXY` (`neigh_dump_info`). Xen's
//! `vif-route` relies on proxy ARP so dom0 answers for routed guests.

use super::link::LinkId;
use super::netaddr::MacAddr;
use super::uapi::*;
use super::wire::{self, MessageBuilder, NlMsg, WireError};
use super::{Rtnl, RtnlError};
use std::net::IpAddr;

/// Neighbour state bits (`NUD_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct NeighbourState(pub u16);

impl NeighbourState {
    /// `NUD_INCOMPLETE`.
    pub const INCOMPLETE: NeighbourState = NeighbourState(NUD_INCOMPLETE);
    /// `NUD_REACHABLE`.
    pub const REACHABLE: NeighbourState = NeighbourState(NUD_REACHABLE);
    /// `NUD_STALE`.
    pub const STALE: NeighbourState = NeighbourState(NUD_STALE);
    /// `NUD_DELAY`.
    pub const DELAY: NeighbourState = NeighbourState(NUD_DELAY);
    /// `NUD_PROBE`.
    pub const PROBE: NeighbourState = NeighbourState(NUD_PROBE);
    /// `NUD_FAILED`.
    pub const FAILED: NeighbourState = NeighbourState(NUD_FAILED);
    /// `NUD_NOARP`.
    pub const NOARP: NeighbourState = NeighbourState(NUD_NOARP);
    /// `NUD_PERMANENT`: static entry.
    pub const PERMANENT: NeighbourState = NeighbourState(NUD_PERMANENT);
}

/// One neighbour or proxy entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Neighbour {
    /// The interface (`ndm_ifindex`).
    pub ifindex: u32,
    /// The IP address (`NDA_DST`).
    pub dst: IpAddr,
    /// The link-layer address (`NDA_LLADDR`), absent for proxy and incomplete entries.
    pub lladdr: Option<MacAddr>,
    /// `ndm_state`.
    pub state: NeighbourState,
    /// `ndm_flags` (`NTF_ROUTER`, `NTF_PROXY`, ...).
    pub flags: u8,
}

impl Neighbour {
    /// Whether this is a proxy entry (`NTF_PROXY`).
    pub fn is_proxy(&self) -> bool {
        self.flags & NTF_PROXY != 0
    }

    /// Whether the neighbour advertised itself as a router (`NTF_ROUTER`).
    pub fn is_router(&self) -> bool {
        self.flags & NTF_ROUTER != 0
    }
}

/// `struct ndmsg`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct NdMsg {
    pub family: u8,
    pub ifindex: u32,
    pub state: u16,
    pub flags: u8,
    pub kind: u8,
}

impl NdMsg {
    pub(crate) const LEN: usize = 12;

    pub(crate) fn encode(&self) -> [u8; 12] {
        let mut b = [0u8; 12];
        b[0] = self.family;
        b[4..8].copy_from_slice(&self.ifindex.to_ne_bytes());
        b[8..10].copy_from_slice(&self.state.to_ne_bytes());
        b[10] = self.flags;
        b[11] = self.kind;
        b
    }

    pub(crate) fn decode(payload: &[u8]) -> Result<(NdMsg, &[u8]), WireError> {
        let (h, rest) = wire::fixed_header::<{ NdMsg::LEN }>(payload, "ndmsg")?;
        Ok((
            NdMsg {
                family: h[0],
                ifindex: u32::from_ne_bytes([h[4], h[5], h[6], h[7]]),
                state: u16::from_ne_bytes([h[8], h[9]]),
                flags: h[10],
                kind: h[11],
            },
            rest,
        ))
    }
}

/// Decodes an `RTM_NEWNEIGH` payload; `None` for entries without an IP `NDA_DST`.
pub(crate) fn decode_neighbour(payload: &[u8]) -> Result<Option<Neighbour>, WireError> {
    let (h, attrs) = NdMsg::decode(payload)?;
    if h.family != AF_INET && h.family != AF_INET6 {
        return Ok(None);
    }
    let mut dst = None;
    let mut lladdr = None;
    for a in wire::attrs(attrs) {
        let a = a?;
        match a.kind {
            NDA_DST => dst = Some(a.ip()?),
            NDA_LLADDR => lladdr = MacAddr::try_from(a.payload).ok(),
            _ => {}
        }
    }
    Ok(dst.map(|dst| Neighbour {
        ifindex: h.ifindex,
        dst,
        lladdr,
        state: NeighbourState(h.state),
        flags: h.flags,
    }))
}

fn parse_neigh_msg(m: &NlMsg<'_>) -> Result<Option<Neighbour>, WireError> {
    if m.msg_type != RTM_NEWNEIGH {
        return Ok(None);
    }
    decode_neighbour(m.payload)
}

fn family_of(ip: IpAddr) -> u8 {
    if ip.is_ipv6() {
        AF_INET6
    } else {
        AF_INET
    }
}

/// Encodes `RTM_NEWNEIGH`/`RTM_DELNEIGH` for `dst` on `ifindex`.
pub(crate) fn encode_neighbour(
    msg_type: u16,
    nl_flags: u16,
    ifindex: u32,
    dst: IpAddr,
    lladdr: Option<MacAddr>,
    proxy: bool,
) -> MessageBuilder {
    let mut b = MessageBuilder::new(msg_type, nl_flags | NLM_F_ACK);
    b.push_header(
        &NdMsg {
            family: family_of(dst),
            ifindex,
            state: NUD_PERMANENT,
            flags: if proxy { NTF_PROXY } else { 0 },
            kind: 0,
        }
        .encode(),
    );
    b.attr_ip(NDA_DST, dst);
    if let Some(m) = lladdr {
        b.attr(NDA_LLADDR, &m.octets());
    }
    b
}

impl Rtnl {
    /// The neighbour (ARP/NDP) cache entries (`ip neigh show`).
    pub fn neighbours(&self) -> Result<Vec<Neighbour>, RtnlError> {
        let mut b = MessageBuilder::new(RTM_GETNEIGH, NLM_F_DUMP);
        b.push_header(&NdMsg::default().encode());
        self.dump(b, || "listing neighbours".into(), parse_neigh_msg)
    }

    /// The proxy entries (`ip neigh show proxy`).
    pub fn proxy_neighbours(&self) -> Result<Vec<Neighbour>, RtnlError> {
        let mut b = MessageBuilder::new(RTM_GETNEIGH, NLM_F_DUMP);
        b.push_header(
            &NdMsg {
                flags: NTF_PROXY,
                ..Default::default()
            }
            .encode(),
        );
        self.dump(b, || "listing proxy neighbours".into(), parse_neigh_msg)
    }

    /// Adds a proxy entry: answer ARP/NS for `ip` on the link (`ip neigh add proxy IP dev DEV`).
    /// Adding an existing entry succeeds (the kernel's `neigh_add` updates proxy entries).
    pub fn add_proxy_neighbour<'a>(
        &self,
        id: impl Into<LinkId<'a>>,
        ip: IpAddr,
    ) -> Result<(), RtnlError> {
        let id = id.into();
        let idx = self.ifindex(id)?;
        let b = encode_neighbour(RTM_NEWNEIGH, NLM_F_CREATE | NLM_F_EXCL, idx, ip, None, true);
        self.execute(b, || format!("adding proxy neighbour {ip} on {id}"))
    }

    /// Deletes a proxy entry (`ip neigh del proxy IP dev DEV`).
    pub fn delete_proxy_neighbour<'a>(
        &self,
        id: impl Into<LinkId<'a>>,
        ip: IpAddr,
    ) -> Result<(), RtnlError> {
        let id = id.into();
        let idx = self.ifindex(id)?;
        let b = encode_neighbour(RTM_DELNEIGH, 0, idx, ip, None, true);
        self.execute(b, || format!("deleting proxy neighbour {ip} on {id}"))
    }

    /// Adds or replaces a permanent neighbour entry (`ip neigh replace IP lladdr MAC dev
    /// DEV nud permanent`).
    pub fn set_neighbour<'a>(
        &self,
        id: impl Into<LinkId<'a>>,
        ip: IpAddr,
        mac: MacAddr,
    ) -> Result<(), RtnlError> {
        let id = id.into();
        let idx = self.ifindex(id)?;
        let b = encode_neighbour(
            RTM_NEWNEIGH,
            NLM_F_CREATE | NLM_F_REPLACE,
            idx,
            ip,
            Some(mac),
            false,
        );
        self.execute(b, || format!("setting neighbour {ip} lladdr {mac} on {id}"))
    }

    /// Deletes a neighbour entry (`ip neigh del IP dev DEV`).
    pub fn delete_neighbour<'a>(
        &self,
        id: impl Into<LinkId<'a>>,
        ip: IpAddr,
    ) -> Result<(), RtnlError> {
        let id = id.into();
        let idx = self.ifindex(id)?;
        let b = encode_neighbour(RTM_DELNEIGH, 0, idx, ip, None, false);
        self.execute(b, || format!("deleting neighbour {ip} on {id}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netns::testing::*;

    #[test]
    fn neighbour_codec_round_trip() {
        let mac: MacAddr = "00:16:3e:00:00:05".parse().unwrap();
        let msg = encode_neighbour(
            RTM_NEWNEIGH,
            0,
            4,
            "10.0.0.5".parse().unwrap(),
            Some(mac),
            false,
        )
        .finish(1)
        .unwrap();
        let m = wire::messages(&msg).next().unwrap().unwrap();
        let n = decode_neighbour(m.payload).unwrap().unwrap();
        assert_eq!(n.ifindex, 4);
        assert_eq!(n.lladdr, Some(mac));
        assert_eq!(n.state, NeighbourState::PERMANENT);
        assert!(!n.is_proxy());
    }

    #[test]
    fn proxy_and_static_entries_against_iproute2() {
        let ns = scratch();
        let r = Rtnl::open_in(&ns).unwrap();
        crate::rtnl::testing::veth_link(&r, "d0");
        let ip: IpAddr = "10.0.0.5".parse().unwrap();
        r.add_proxy_neighbour("d0", ip).unwrap();
        let shown = ip_in(&ns, &["neigh", "show", "proxy"]);
        assert!(shown.contains("10.0.0.5 dev d0 proxy"), "{shown}");
        let proxies = r.proxy_neighbours().unwrap();
        assert_eq!(proxies.len(), 1);
        assert!(proxies[0].is_proxy());
        assert_eq!(proxies[0].dst, ip);
        // The kernel treats re-adding a proxy entry as an update, not EEXIST.
        r.add_proxy_neighbour("d0", ip).unwrap();
        assert_eq!(r.proxy_neighbours().unwrap().len(), 1);
        r.delete_proxy_neighbour("d0", ip).unwrap();
        assert!(r.proxy_neighbours().unwrap().is_empty());

        let mac: MacAddr = "00:16:3e:00:00:09".parse().unwrap();
        let peer: IpAddr = "10.0.0.9".parse().unwrap();
        r.set_neighbour("d0", peer, mac).unwrap();
        let n = r
            .neighbours()
            .unwrap()
            .into_iter()
            .find(|n| n.dst == peer)
            .unwrap();
        assert_eq!(n.lladdr, Some(mac));
        assert_eq!(n.state, NeighbourState::PERMANENT);
        r.delete_neighbour("d0", peer).unwrap();
        assert!(!r.neighbours().unwrap().iter().any(|n| n.dst == peer));
    }
}
