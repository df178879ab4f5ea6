//! Links (`RTM_*LINK`): listing, lookup, up/down, MTU, MAC, rename, master, namespace
//! moves, ARP/promisc flags, veth/bridge/dummy creation, deletion.
//!
//! Message shape (linux/rtnetlink.h, linux/if_link.h): `struct ifinfomsg {family u8, pad
//! u8, type u16, index i32, flags u32, change u32}` then `IFLA_*` attributes. Flag changes
//! go in `flags` with the bits to change in `change` (what `ip link set up|arp|promisc`
//! sends). A link is named either by `index` or, with index 0, by `IFLA_IFNAME`.

use super::netaddr::MacAddr;
use super::uapi::*;
use super::wire::{self, MessageBuilder, NlMsg, WireError};
use super::{Rtnl, RtnlError};
use crate::netns::NetNs;
use std::fmt;
use std::os::fd::{AsFd, AsRawFd};

/// Longest interface name the kernel accepts (`IFNAMSIZ` - 1).
pub const IFNAME_MAX: usize = 15;

/// `net_device_flags` of a link (`IFF_*` from linux/if.h).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct LinkFlags(pub u32);

impl LinkFlags {
    /// Administratively up (`IFF_UP`).
    pub fn up(&self) -> bool {
        self.0 & IFF_UP != 0
    }
    /// Operationally running (`IFF_RUNNING`, RFC 2863 "up").
    pub fn running(&self) -> bool {
        self.0 & IFF_RUNNING != 0
    }
    /// Carrier present (`IFF_LOWER_UP`).
    pub fn lower_up(&self) -> bool {
        self.0 & IFF_LOWER_UP != 0
    }
    /// ARP disabled (`IFF_NOARP`).
    pub fn noarp(&self) -> bool {
        self.0 & IFF_NOARP != 0
    }
    /// Promiscuous mode (`IFF_PROMISC`).
    pub fn promisc(&self) -> bool {
        self.0 & IFF_PROMISC != 0
    }
    /// Loopback device (`IFF_LOOPBACK`).
    pub fn loopback(&self) -> bool {
        self.0 & IFF_LOOPBACK != 0
    }
    /// Broadcast-capable (`IFF_BROADCAST`).
    pub fn broadcast(&self) -> bool {
        self.0 & IFF_BROADCAST != 0
    }
    /// Multicast-capable (`IFF_MULTICAST`).
    pub fn multicast(&self) -> bool {
        self.0 & IFF_MULTICAST != 0
    }
    /// Point-to-point (`IFF_POINTOPOINT`).
    pub fn pointopoint(&self) -> bool {
        self.0 & IFF_POINTOPOINT != 0
    }
}

/// RFC 2863 operational state (`IFLA_OPERSTATE`, `IF_OPER_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OperState {
    /// `IF_OPER_UNKNOWN` (e.g. TAP with no reader, loopback).
    Unknown,
    /// `IF_OPER_NOTPRESENT`.
    NotPresent,
    /// `IF_OPER_DOWN`.
    Down,
    /// `IF_OPER_LOWERLAYERDOWN` (e.g. veth whose peer is down).
    LowerLayerDown,
    /// `IF_OPER_TESTING`.
    Testing,
    /// `IF_OPER_DORMANT`.
    Dormant,
    /// `IF_OPER_UP`.
    Up,
    /// A value this crate does not know.
    Other(u8),
}

impl OperState {
    fn from_u8(v: u8) -> OperState {
        match v {
            IF_OPER_UNKNOWN => OperState::Unknown,
            IF_OPER_NOTPRESENT => OperState::NotPresent,
            IF_OPER_DOWN => OperState::Down,
            IF_OPER_LOWERLAYERDOWN => OperState::LowerLayerDown,
            IF_OPER_TESTING => OperState::Testing,
            IF_OPER_DORMANT => OperState::Dormant,
            IF_OPER_UP => OperState::Up,
            o => OperState::Other(o),
        }
    }
}

impl fmt::Display for OperState {
    /// The spelling `ip link` uses (`UP`, `DOWN`, `LOWERLAYERDOWN`, ...).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OperState::Unknown => f.write_str("UNKNOWN"),
            OperState::NotPresent => f.write_str("NOTPRESENT"),
            OperState::Down => f.write_str("DOWN"),
            OperState::LowerLayerDown => f.write_str("LOWERLAYERDOWN"),
            OperState::Testing => f.write_str("TESTING"),
            OperState::Dormant => f.write_str("DORMANT"),
            OperState::Up => f.write_str("UP"),
            OperState::Other(v) => write!(f, "{v}"),
        }
    }
}

/// The driver kind of a link (`IFLA_INFO_KIND`); `None` in [`Link::kind`] for devices
/// without one (physical NICs, loopback).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LinkKind {
    /// `veth`.
    Veth,
    /// `tun` (TUN or TAP from /dev/net/tun).
    Tun,
    /// `bridge`.
    Bridge,
    /// `dummy`.
    Dummy,
    /// `vxlan`.
    Vxlan,
    /// Anything else, by its kernel name.
    Other(String),
}

impl LinkKind {
    /// Maps a kernel kind string.
    pub fn from_kernel(s: &str) -> LinkKind {
        match s {
            "veth" => LinkKind::Veth,
            "tun" => LinkKind::Tun,
            "bridge" => LinkKind::Bridge,
            "dummy" => LinkKind::Dummy,
            "vxlan" => LinkKind::Vxlan,
            o => LinkKind::Other(o.to_string()),
        }
    }

    /// The kernel kind string.
    pub fn as_str(&self) -> &str {
        match self {
            LinkKind::Veth => "veth",
            LinkKind::Tun => "tun",
            LinkKind::Bridge => "bridge",
            LinkKind::Dummy => "dummy",
            LinkKind::Vxlan => "vxlan",
            LinkKind::Other(s) => s,
        }
    }
}

/// The leading counters of `struct rtnl_link_stats64` (`IFLA_STATS64`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LinkStats {
    /// Packets received.
    pub rx_packets: u64,
    /// Packets sent.
    pub tx_packets: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Receive errors.
    pub rx_errors: u64,
    /// Transmit errors.
    pub tx_errors: u64,
    /// Received packets dropped.
    pub rx_dropped: u64,
    /// Packets dropped on transmit.
    pub tx_dropped: u64,
}

/// One network device as the kernel reports it in `RTM_NEWLINK`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// `ifi_index`.
    pub index: u32,
    /// `IFLA_IFNAME`.
    pub name: String,
    /// `ifi_type` (`ARPHRD_*`: 1 Ethernet, 772 loopback, 65534 none).
    pub link_type: u16,
    /// `IFLA_ADDRESS` when it is a 6-byte Ethernet address.
    pub mac: Option<MacAddr>,
    /// `IFLA_PERM_ADDRESS` (hardware address at probe time), if reported.
    pub perm_mac: Option<MacAddr>,
    /// `IFLA_MTU`.
    pub mtu: u32,
    /// `IFLA_MIN_MTU`.
    pub min_mtu: Option<u32>,
    /// `IFLA_MAX_MTU`.
    pub max_mtu: Option<u32>,
    /// `ifi_flags`.
    pub flags: LinkFlags,
    /// `IFLA_OPERSTATE`.
    pub operstate: OperState,
    /// `IFLA_LINKINFO/IFLA_INFO_KIND`.
    pub kind: Option<LinkKind>,
    /// `IFLA_LINKINFO/IFLA_INFO_SLAVE_KIND` (e.g. `bridge` for a bridge port).
    pub port_kind: Option<String>,
    /// `IFLA_MASTER`: the bridge (or bond, VRF) this link is enslaved to.
    pub master: Option<u32>,
    /// `IFLA_LINK`: the parent or, for veth, the peer's index (in the peer's namespace).
    pub parent: Option<u32>,
    /// `IFLA_LINK_NETNSID`: the peer lives in another namespace with this id.
    pub link_netnsid: Option<i32>,
    /// `IFLA_TXQLEN`.
    pub txqlen: Option<u32>,
    /// `IFLA_STATS64`.
    pub stats: Option<LinkStats>,
}

/// Names a link: by name (looked up by the kernel via `IFLA_IFNAME`) or by index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkId<'a> {
    /// Interface name.
    Name(&'a str),
    /// Interface index.
    Index(u32),
}

impl<'a> From<&'a str> for LinkId<'a> {
    fn from(s: &'a str) -> Self {
        LinkId::Name(s)
    }
}

impl<'a> From<&'a String> for LinkId<'a> {
    fn from(s: &'a String) -> Self {
        LinkId::Name(s)
    }
}

impl From<u32> for LinkId<'_> {
    fn from(i: u32) -> Self {
        LinkId::Index(i)
    }
}

impl<'a> From<&'a Link> for LinkId<'a> {
    fn from(l: &'a Link) -> Self {
        LinkId::Index(l.index)
    }
}

impl fmt::Display for LinkId<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinkId::Name(n) => f.write_str(n),
            LinkId::Index(i) => write!(f, "ifindex {i}"),
        }
    }
}

/// Checks an interface name against the kernel's `dev_valid_name`: 1..=15 bytes, not
/// `.`/`..`, no `/`, `:` or whitespace.
pub fn validate_ifname(name: &str) -> Result<(), RtnlError> {
    let reason = if name.is_empty() {
        Some("empty")
    } else if name.len() > IFNAME_MAX {
        Some("longer than 15 bytes")
    } else if name == "." || name == ".." {
        Some("is '.' or '..'")
    } else if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace() || c == '\0')
    {
        Some("contains '/', ':', NUL or whitespace")
    } else {
        None
    };
    match reason {
        Some(r) => Err(RtnlError::Invalid {
            what: format!("interface name {name:?}"),
            reason: r.into(),
        }),
        None => Ok(()),
    }
}

/// `struct ifinfomsg`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct IfInfoMsg {
    pub family: u8,
    pub link_type: u16,
    pub index: u32,
    pub flags: u32,
    pub change: u32,
}

impl IfInfoMsg {
    pub(crate) const LEN: usize = 16;

    pub(crate) fn encode(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[0] = self.family;
        b[2..4].copy_from_slice(&self.link_type.to_ne_bytes());
        b[4..8].copy_from_slice(&self.index.to_ne_bytes());
        b[8..12].copy_from_slice(&self.flags.to_ne_bytes());
        b[12..16].copy_from_slice(&self.change.to_ne_bytes());
        b
    }

    pub(crate) fn decode(payload: &[u8]) -> Result<(IfInfoMsg, &[u8]), WireError> {
        let (h, rest) = wire::fixed_header::<{ IfInfoMsg::LEN }>(payload, "ifinfomsg")?;
        Ok((
            IfInfoMsg {
                family: h[0],
                link_type: u16::from_ne_bytes([h[2], h[3]]),
                index: u32::from_ne_bytes([h[4], h[5], h[6], h[7]]),
                flags: u32::from_ne_bytes([h[8], h[9], h[10], h[11]]),
                change: u32::from_ne_bytes([h[12], h[13], h[14], h[15]]),
            },
            rest,
        ))
    }
}

fn stats64(payload: &[u8]) -> Option<LinkStats> {
    let field = |i: usize| -> Option<u64> {
        let b = payload.get(i * 8..i * 8 + 8)?;
        Some(u64::from_ne_bytes(b.try_into().ok()?))
    };
    Some(LinkStats {
        rx_packets: field(0)?,
        tx_packets: field(1)?,
        rx_bytes: field(2)?,
        tx_bytes: field(3)?,
        rx_errors: field(4)?,
        tx_errors: field(5)?,
        rx_dropped: field(6)?,
        tx_dropped: field(7)?,
    })
}

/// Decodes an `RTM_NEWLINK` payload.
pub(crate) fn decode_link(payload: &[u8]) -> Result<Link, WireError> {
    let (h, attrs) = IfInfoMsg::decode(payload)?;
    let mut link = Link {
        index: h.index,
        name: String::new(),
        link_type: h.link_type,
        mac: None,
        perm_mac: None,
        mtu: 0,
        min_mtu: None,
        max_mtu: None,
        flags: LinkFlags(h.flags),
        operstate: OperState::Unknown,
        kind: None,
        port_kind: None,
        master: None,
        parent: None,
        link_netnsid: None,
        txqlen: None,
        stats: None,
    };
    for a in wire::attrs(attrs) {
        let a = a?;
        match a.kind {
            IFLA_IFNAME => link.name = a.string(),
            IFLA_ADDRESS => link.mac = MacAddr::try_from(a.payload).ok(),
            IFLA_PERM_ADDRESS => link.perm_mac = MacAddr::try_from(a.payload).ok(),
            IFLA_MTU => link.mtu = a.u32()?,
            IFLA_MIN_MTU => link.min_mtu = Some(a.u32()?),
            IFLA_MAX_MTU => link.max_mtu = Some(a.u32()?),
            IFLA_OPERSTATE => link.operstate = OperState::from_u8(a.u8()?),
            IFLA_MASTER => link.master = Some(a.u32()?),
            IFLA_LINK => link.parent = Some(a.u32()?),
            IFLA_LINK_NETNSID => link.link_netnsid = Some(a.i32()?),
            IFLA_TXQLEN => link.txqlen = Some(a.u32()?),
            IFLA_STATS64 => link.stats = stats64(a.payload),
            IFLA_LINKINFO => {
                for i in a.nested() {
                    let i = i?;
                    match i.kind {
                        IFLA_INFO_KIND => link.kind = Some(LinkKind::from_kernel(&i.string())),
                        IFLA_INFO_SLAVE_KIND => link.port_kind = Some(i.string()),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Ok(link)
}

fn parse_link_msg(m: &NlMsg<'_>) -> Result<Option<Link>, WireError> {
    if m.msg_type != RTM_NEWLINK {
        return Ok(None);
    }
    decode_link(m.payload).map(Some)
}

/// What to change on an existing link in one `RTM_NEWLINK` request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct LinkChange {
    pub up: Option<bool>,
    pub noarp: Option<bool>,
    pub promisc: Option<bool>,
    pub mtu: Option<u32>,
    pub mac: Option<MacAddr>,
    pub new_name: Option<String>,
    /// `Some(0)` detaches from the master (`ip link set nomaster`).
    pub master: Option<u32>,
    pub netns_fd: Option<i32>,
}

fn set_flag(h: &mut IfInfoMsg, bit: u32, on: Option<bool>) {
    if let Some(on) = on {
        h.change |= bit;
        if on {
            h.flags |= bit;
        } else {
            h.flags &= !bit;
        }
    }
}

/// Encodes a change of the link `id`: index in the header, or index 0 and `IFLA_IFNAME`.
pub(crate) fn encode_link_change(id: LinkId<'_>, c: &LinkChange) -> MessageBuilder {
    let mut h = IfInfoMsg::default();
    set_flag(&mut h, IFF_UP, c.up);
    set_flag(&mut h, IFF_NOARP, c.noarp);
    set_flag(&mut h, IFF_PROMISC, c.promisc);
    let mut b = MessageBuilder::new(RTM_NEWLINK, NLM_F_ACK);
    match id {
        LinkId::Index(i) => {
            h.index = i;
            b.push_header(&h.encode());
        }
        LinkId::Name(n) => {
            b.push_header(&h.encode());
            b.attr_str(IFLA_IFNAME, n);
        }
    }
    if let Some(name) = &c.new_name {
        b.attr_str(IFLA_IFNAME, name);
    }
    if let Some(mtu) = c.mtu {
        b.attr_u32(IFLA_MTU, mtu);
    }
    if let Some(mac) = c.mac {
        b.attr(IFLA_ADDRESS, &mac.octets());
    }
    if let Some(m) = c.master {
        b.attr_u32(IFLA_MASTER, m);
    }
    if let Some(fd) = c.netns_fd {
        b.attr_u32(IFLA_NET_NS_FD, fd as u32);
    }
    b
}

/// Encodes the creation of a link `name` of `kind`, with `info_data` appended inside
/// `IFLA_LINKINFO/IFLA_INFO_DATA` if given.
fn encode_new_link(
    name: &str,
    kind: &str,
    info_data: Option<&dyn Fn(&mut MessageBuilder)>,
) -> MessageBuilder {
    let mut b = MessageBuilder::new(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL | NLM_F_ACK);
    b.push_header(&IfInfoMsg::default().encode());
    b.attr_str(IFLA_IFNAME, name);
    let info = b.nest_start(IFLA_LINKINFO);
    b.attr_str(IFLA_INFO_KIND, kind);
    if let Some(fill) = info_data {
        let data = b.nest_start(IFLA_INFO_DATA);
        fill(&mut b);
        b.nest_end(data);
    }
    b.nest_end(info);
    b
}

/// Encodes `ip link add NAME type veth peer name PEER [netns FD]`: the peer is described by
/// a whole `ifinfomsg` + attributes inside `VETH_INFO_PEER` (linux/veth.h).
pub(crate) fn encode_new_veth(
    name: &str,
    peer: &str,
    peer_netns_fd: Option<i32>,
) -> MessageBuilder {
    let fill = |b: &mut MessageBuilder| {
        let p = b.nest_start(VETH_INFO_PEER);
        b.push_header(&IfInfoMsg::default().encode());
        b.attr_str(IFLA_IFNAME, peer);
        if let Some(fd) = peer_netns_fd {
            b.attr_u32(IFLA_NET_NS_FD, fd as u32);
        }
        b.nest_end(p);
    };
    encode_new_link(name, "veth", Some(&fill))
}

impl Rtnl {
    /// All links of the namespace (`ip link show`).
    pub fn links(&self) -> Result<Vec<Link>, RtnlError> {
        let mut b = MessageBuilder::new(RTM_GETLINK, NLM_F_DUMP);
        b.push_header(&IfInfoMsg::default().encode());
        self.dump(b, || "listing links".into(), parse_link_msg)
    }

    /// One link by name or index; `ENODEV` (see [`RtnlError::is_not_found`]) if absent.
    pub fn link<'a>(&self, id: impl Into<LinkId<'a>>) -> Result<Link, RtnlError> {
        let id = id.into();
        let mut h = IfInfoMsg::default();
        let mut b = MessageBuilder::new(RTM_GETLINK, 0);
        match id {
            LinkId::Index(i) => {
                h.index = i;
                b.push_header(&h.encode());
            }
            LinkId::Name(n) => {
                validate_ifname(n)?;
                b.push_header(&h.encode());
                b.attr_str(IFLA_IFNAME, n);
            }
        }
        let found = self.query(b, || format!("looking up link {id}"), parse_link_msg)?;
        found
            .into_iter()
            .next()
            .ok_or_else(|| RtnlError::NotFound(format!("link {id}")))
    }

    /// One link by name.
    pub fn link_by_name(&self, name: &str) -> Result<Link, RtnlError> {
        self.link(LinkId::Name(name))
    }

    /// One link by index.
    pub fn link_by_index(&self, index: u32) -> Result<Link, RtnlError> {
        self.link(LinkId::Index(index))
    }

    /// One link by name, or `None` if there is no such link.
    pub fn find_link(&self, name: &str) -> Result<Option<Link>, RtnlError> {
        match self.link_by_name(name) {
            Ok(l) => Ok(Some(l)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The index of a link (no request when it is already an index).
    pub fn ifindex<'a>(&self, id: impl Into<LinkId<'a>>) -> Result<u32, RtnlError> {
        match id.into() {
            LinkId::Index(i) => Ok(i),
            LinkId::Name(n) => Ok(self.link_by_name(n)?.index),
        }
    }

    /// A name for error messages: the link's name if it can be found, else `ifindex N`.
    pub(crate) fn describe_link(&self, index: u32) -> String {
        match self.link_by_index(index) {
            Ok(l) => l.name,
            Err(_) => format!("ifindex {index}"),
        }
    }

    fn describe_id(&self, id: LinkId<'_>) -> String {
        match id {
            LinkId::Name(n) => n.to_string(),
            LinkId::Index(i) => self.describe_link(i),
        }
    }

    fn change_link(
        &self,
        id: LinkId<'_>,
        change: &LinkChange,
        what: impl FnOnce(&str) -> String,
    ) -> Result<(), RtnlError> {
        if let LinkId::Name(n) = id {
            validate_ifname(n)?;
        }
        self.execute(encode_link_change(id, change), || {
            what(&self.describe_id(id))
        })
    }

    /// Sets the link administratively up (`ip link set DEV up`).
    pub fn set_up<'a>(&self, id: impl Into<LinkId<'a>>) -> Result<(), RtnlError> {
        let c = LinkChange {
            up: Some(true),
            ..Default::default()
        };
        self.change_link(id.into(), &c, |d| format!("setting link {d} up"))
    }

    /// Sets the link administratively down (`ip link set DEV down`).
    pub fn set_down<'a>(&self, id: impl Into<LinkId<'a>>) -> Result<(), RtnlError> {
        let c = LinkChange {
            up: Some(false),
            ..Default::default()
        };
        self.change_link(id.into(), &c, |d| format!("setting link {d} down"))
    }

    /// Sets the MTU (`ip link set DEV mtu N`).
    pub fn set_mtu<'a>(&self, id: impl Into<LinkId<'a>>, mtu: u32) -> Result<(), RtnlError> {
        let c = LinkChange {
            mtu: Some(mtu),
            ..Default::default()
        };
        self.change_link(id.into(), &c, |d| format!("setting MTU {mtu} on {d}"))
    }

    /// Sets the MAC address (`ip link set DEV address MAC`).
    pub fn set_mac<'a>(&self, id: impl Into<LinkId<'a>>, mac: MacAddr) -> Result<(), RtnlError> {
        let c = LinkChange {
            mac: Some(mac),
            ..Default::default()
        };
        self.change_link(id.into(), &c, |d| format!("setting MAC {mac} on {d}"))
    }

    /// Renames a link (`ip link set DEV name NEW`); the kernel requires it to be down.
    pub fn rename<'a>(&self, id: impl Into<LinkId<'a>>, new_name: &str) -> Result<(), RtnlError> {
        validate_ifname(new_name)?;
        let id = id.into();
        // Renaming needs the index in the header, since IFLA_IFNAME carries the new name.
        let index = self.ifindex(id)?;
        let c = LinkChange {
            new_name: Some(new_name.to_string()),
            ..Default::default()
        };
        self.change_link(LinkId::Index(index), &c, |d| {
            format!("renaming link {d} to {new_name}")
        })
    }

    /// Turns ARP on or off (`ip link set DEV arp on|off`, the `IFF_NOARP` flag).
    pub fn set_arp<'a>(&self, id: impl Into<LinkId<'a>>, on: bool) -> Result<(), RtnlError> {
        let c = LinkChange {
            noarp: Some(!on),
            ..Default::default()
        };
        let state = if on { "on" } else { "off" };
        self.change_link(id.into(), &c, |d| format!("setting arp {state} on {d}"))
    }

    /// Turns promiscuous mode on or off (`ip link set DEV promisc on|off`).
    pub fn set_promisc<'a>(&self, id: impl Into<LinkId<'a>>, on: bool) -> Result<(), RtnlError> {
        let c = LinkChange {
            promisc: Some(on),
            ..Default::default()
        };
        let state = if on { "on" } else { "off" };
        self.change_link(id.into(), &c, |d| format!("setting promisc {state} on {d}"))
    }

    /// Enslaves a link to a master such as a bridge (`ip link set DEV master BR`), or
    /// detaches it with `None` (`nomaster`).
    pub fn set_master<'a, 'b>(
        &self,
        id: impl Into<LinkId<'a>>,
        master: Option<LinkId<'b>>,
    ) -> Result<(), RtnlError> {
        let master_index = match master {
            Some(m) => self.ifindex(m)?,
            None => 0,
        };
        let c = LinkChange {
            master: Some(master_index),
            ..Default::default()
        };
        self.change_link(id.into(), &c, |d| match master {
            Some(m) => format!("enslaving {d} to {m}"),
            None => format!("detaching {d} from its master"),
        })
    }

    /// Moves a link into another namespace (`ip link set DEV netns NS`, by fd). The link
    /// keeps its name unless one already exists there (then `EEXIST`).
    pub fn move_to_netns<'a>(
        &self,
        id: impl Into<LinkId<'a>>,
        ns: &NetNs,
    ) -> Result<(), RtnlError> {
        let fd = ns.as_fd();
        let c = LinkChange {
            netns_fd: Some(fd.as_raw_fd()),
            ..Default::default()
        };
        let target = ns.name().unwrap_or("(unnamed)").to_string();
        self.change_link(id.into(), &c, |d| {
            format!("moving link {d} to netns {target}")
        })
    }

    /// Deletes a link (`ip link del DEV`); for veth this removes both ends.
    pub fn delete_link<'a>(&self, id: impl Into<LinkId<'a>>) -> Result<(), RtnlError> {
        let id = id.into();
        let mut h = IfInfoMsg::default();
        let mut b = MessageBuilder::new(RTM_DELLINK, NLM_F_ACK);
        match id {
            LinkId::Index(i) => {
                h.index = i;
                b.push_header(&h.encode());
            }
            LinkId::Name(n) => {
                validate_ifname(n)?;
                b.push_header(&h.encode());
                b.attr_str(IFLA_IFNAME, n);
            }
        }
        self.execute(b, || format!("deleting link {}", self.describe_id(id)))
    }

    /// Creates a veth pair `name` <-> `peer`; with `peer_ns` the peer end is created
    /// directly in that namespace (`ip link add NAME type veth peer name PEER netns NS`).
    pub fn create_veth(
        &self,
        name: &str,
        peer: &str,
        peer_ns: Option<&NetNs>,
    ) -> Result<(), RtnlError> {
        validate_ifname(name)?;
        validate_ifname(peer)?;
        let fd = peer_ns.map(|ns| ns.as_fd().as_raw_fd());
        self.execute(encode_new_veth(name, peer, fd), || {
            format!("creating veth pair {name}/{peer}")
        })
    }

    /// Creates a Linux bridge (`ip link add NAME type bridge`).
    pub fn create_bridge(&self, name: &str) -> Result<(), RtnlError> {
        validate_ifname(name)?;
        self.execute(encode_new_link(name, "bridge", None), || {
            format!("creating bridge {name}")
        })
    }

    /// Creates a dummy device (`ip link add NAME type dummy`).
    pub fn create_dummy(&self, name: &str) -> Result<(), RtnlError> {
        validate_ifname(name)?;
        self.execute(encode_new_link(name, "dummy", None), || {
            format!("creating dummy link {name}")
        })
    }

    /// Creates a link of an arbitrary `kind` with no kind-specific data (e.g. `"ifb"`).
    /// `"tun"` is refused by the kernel: TAPs come from [`crate::tap::Tap`].
    pub fn create_link(&self, name: &str, kind: &str) -> Result<(), RtnlError> {
        validate_ifname(name)?;
        self.execute(encode_new_link(name, kind, None), || {
            format!("creating {kind} link {name}")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netns::testing::*;

    fn attrs_of(msg: &[u8]) -> (IfInfoMsg, Vec<(u16, Vec<u8>)>) {
        let m = wire::messages(msg).next().unwrap().unwrap();
        let (h, rest) = IfInfoMsg::decode(m.payload).unwrap();
        let a = wire::attrs(rest)
            .map(|a| {
                let a = a.unwrap();
                (a.kind, a.payload.to_vec())
            })
            .collect();
        (h, a)
    }

    #[test]
    fn link_change_sets_flag_and_mask() {
        let c = LinkChange {
            up: Some(false),
            noarp: Some(true),
            mtu: Some(1400),
            ..Default::default()
        };
        let msg = encode_link_change(LinkId::Index(7), &c).finish(1).unwrap();
        let (h, a) = attrs_of(&msg);
        assert_eq!(h.index, 7);
        assert_eq!(h.change, IFF_UP | IFF_NOARP);
        assert_eq!(h.flags, IFF_NOARP);
        assert_eq!(a, vec![(IFLA_MTU, 1400u32.to_ne_bytes().to_vec())]);
        // By name: index 0 and IFLA_IFNAME.
        let msg = encode_link_change(LinkId::Name("eth0"), &LinkChange::default())
            .finish(1)
            .unwrap();
        let (h, a) = attrs_of(&msg);
        assert_eq!(h.index, 0);
        assert_eq!(a, vec![(IFLA_IFNAME, b"eth0\0".to_vec())]);
    }

    #[test]
    fn veth_request_nests_the_peer_ifinfomsg() {
        let msg = encode_new_veth("a", "b", Some(9)).finish(1).unwrap();
        let m = wire::messages(&msg).next().unwrap().unwrap();
        assert_eq!(
            m.flags & (NLM_F_CREATE | NLM_F_EXCL),
            NLM_F_CREATE | NLM_F_EXCL
        );
        let (_, rest) = IfInfoMsg::decode(m.payload).unwrap();
        let info = wire::attrs(rest)
            .map(Result::unwrap)
            .find(|a| a.kind == IFLA_LINKINFO)
            .unwrap();
        let inner: Vec<_> = info.nested().map(Result::unwrap).collect();
        assert_eq!(inner[0].string(), "veth");
        let peer = inner[1].nested().next().unwrap().unwrap();
        assert_eq!(peer.kind, VETH_INFO_PEER);
        let (ph, pattrs) = IfInfoMsg::decode(peer.payload).unwrap();
        assert_eq!(ph, IfInfoMsg::default());
        let pa: Vec<_> = wire::attrs(pattrs).map(Result::unwrap).collect();
        assert_eq!(pa[0].string(), "b");
        assert_eq!(pa[1].u32().unwrap(), 9);
    }

    #[test]
    fn decode_link_reads_the_fields() {
        let mut b = MessageBuilder::new(RTM_NEWLINK, 0);
        b.push_header(
            &IfInfoMsg {
                index: 3,
                link_type: 1,
                flags: IFF_UP | IFF_LOWER_UP | IFF_RUNNING,
                ..Default::default()
            }
            .encode(),
        );
        b.attr_str(IFLA_IFNAME, "xenbr0")
            .attr(IFLA_ADDRESS, &[0, 0x16, 0x3e, 0, 0, 1])
            .attr_u32(IFLA_MTU, 1500)
            .attr_u8(IFLA_OPERSTATE, IF_OPER_UP)
            .attr_u32(IFLA_MASTER, 9);
        let li = b.nest_start(IFLA_LINKINFO);
        b.attr_str(IFLA_INFO_KIND, "tun");
        b.nest_end(li);
        let mut st = Vec::new();
        for v in 1u64..=24 {
            st.extend_from_slice(&v.to_ne_bytes());
        }
        b.attr(IFLA_STATS64, &st);
        let msg = b.finish(1).unwrap();
        let m = wire::messages(&msg).next().unwrap().unwrap();
        let l = decode_link(m.payload).unwrap();
        assert_eq!(l.index, 3);
        assert_eq!(l.name, "xenbr0");
        assert_eq!(l.mac, Some(MacAddr([0, 0x16, 0x3e, 0, 0, 1])));
        assert!(l.flags.up() && l.flags.lower_up() && l.flags.running());
        assert!(!l.flags.noarp());
        assert_eq!(l.operstate, OperState::Up);
        assert_eq!(l.kind, Some(LinkKind::Tun));
        assert_eq!(l.master, Some(9));
        let s = l.stats.unwrap();
        assert_eq!((s.rx_packets, s.tx_packets, s.rx_bytes), (1, 2, 3));
    }

    #[test]
    fn interface_names_are_checked() {
        assert!(validate_ifname("vif1.0").is_ok());
        for bad in ["", ".", "..", "a/b", "a:b", "a b", "0123456789abcdef"] {
            assert!(validate_ifname(bad).is_err(), "{bad}");
        }
    }

    // ---- root tests against the real kernel, each in its own scratch namespaces ----

    #[test]
    fn veth_across_namespaces_and_link_settings() {
        let a = scratch();
        let b = scratch();
        let ra = Rtnl::open_in(&a).unwrap();
        let rb = Rtnl::open_in(&b).unwrap();
        ra.create_veth("va", "vb", Some(&b)).unwrap();
        let va = ra.link_by_name("va").unwrap();
        assert_eq!(va.kind, Some(LinkKind::Veth));
        assert!(
            ra.find_link("vb").unwrap().is_none(),
            "peer must be in the other ns"
        );
        let vb = rb.link_by_name("vb").unwrap();
        assert_eq!(vb.kind, Some(LinkKind::Veth));
        assert!(vb.link_netnsid.is_some());

        ra.set_mtu("va", 1400).unwrap();
        let mac: MacAddr = "02:00:00:00:00:aa".parse().unwrap();
        ra.set_mac(va.index, mac).unwrap();
        ra.set_up("va").unwrap();
        rb.set_up("vb").unwrap();
        let va = ra.link(&va).unwrap();
        assert_eq!(va.mtu, 1400);
        assert_eq!(va.mac, Some(mac));
        assert!(va.flags.up());
        // Carrier comes with both ends up.
        let mut lower = false;
        for _ in 0..50 {
            let l = ra.link_by_index(va.index).unwrap();
            if l.flags.lower_up() && l.operstate == OperState::Up {
                lower = true;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(lower, "veth never got carrier");
        // iproute2 agrees.
        let shown = ip_in(&a, &["-o", "link", "show", "va"]);
        assert!(shown.contains("mtu 1400"), "{shown}");
        assert!(shown.contains("02:00:00:00:00:aa"), "{shown}");

        ra.set_arp("va", false).unwrap();
        ra.set_promisc("va", true).unwrap();
        let l = ra.link_by_name("va").unwrap();
        assert!(l.flags.noarp() && l.flags.promisc());
        ra.set_arp("va", true).unwrap();
        ra.set_promisc("va", false).unwrap();
        let l = ra.link_by_name("va").unwrap();
        assert!(!l.flags.noarp() && !l.flags.promisc());

        ra.set_down("va").unwrap();
        ra.rename("va", "peth0").unwrap();
        assert!(ra.find_link("va").unwrap().is_none());
        assert_eq!(ra.link_by_name("peth0").unwrap().index, va.index);

        // Moving into the other namespace.
        ra.move_to_netns("peth0", &b).unwrap();
        assert!(ra.find_link("peth0").unwrap().is_none());
        assert!(rb.find_link("peth0").unwrap().is_some());

        // Deleting one end removes both.
        rb.delete_link("peth0").unwrap();
        assert!(rb.find_link("vb").unwrap().is_none());
        let names: Vec<String> = rb.links().unwrap().into_iter().map(|l| l.name).collect();
        assert_eq!(names, vec!["lo".to_string()]);
    }

    #[test]
    fn bridge_ports_and_errors_carry_errno_and_object() {
        let ns = scratch();
        let r = Rtnl::open_in(&ns).unwrap();
        r.create_bridge("xenbr0").unwrap();
        r.create_veth("d0", "d0p", None).unwrap();
        r.set_master("d0", Some(LinkId::Name("xenbr0"))).unwrap();
        let br = r.link_by_name("xenbr0").unwrap();
        let d0 = r.link_by_name("d0").unwrap();
        assert_eq!(br.kind, Some(LinkKind::Bridge));
        assert_eq!(d0.master, Some(br.index));
        assert_eq!(d0.port_kind.as_deref(), Some("bridge"));
        // Any kind without extra attributes goes through create_link.
        r.create_link("ifb0", "ifb").unwrap();
        assert_eq!(
            r.link_by_name("ifb0").unwrap().kind,
            Some(LinkKind::Other("ifb".into()))
        );
        r.set_master("d0", None).unwrap();
        assert_eq!(r.link_by_name("d0").unwrap().master, None);

        let e = r.create_bridge("xenbr0").unwrap_err();
        assert!(e.is_exists());
        assert_eq!(
            e.to_string(),
            "creating bridge xenbr0: File exists (EEXIST)"
        );
        let e = r.link_by_name("nosuch0").unwrap_err();
        assert!(e.is_not_found(), "{e}");
        assert!(e.to_string().contains("nosuch0"), "{e}");
        // The kernel refuses TAP creation over rtnetlink (ecosystem.md §0) and says why.
        let e = r.create_link("tap9", "tun").unwrap_err();
        assert_eq!(e.errno(), Some(libc::EOPNOTSUPP), "{e}");
        let e = r.set_mtu("d0", 10).unwrap_err();
        assert_eq!(e.errno(), Some(libc::EINVAL));
        assert!(e.to_string().starts_with("setting MTU 10 on d0: "), "{e}");
        r.delete_link(br.index).unwrap();
        assert!(r.find_link("xenbr0").unwrap().is_none());
    }
}
