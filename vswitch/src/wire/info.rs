//! [`FrameInfo`]: everything the pipeline needs to know about a frame, computed in one pass.
//!
//! Like OVS `miniflow_extract`, the frame is parsed once at ingress and every later stage
//! (anti-spoofing, learning, forwarding, the egress MTU check, and later the router, NAT and
//! DHCP server) reads this summary instead of re-parsing. Parsing never fails past the
//! Ethernet header: a malformed or truncated L3/L4 header is recorded as such and the frame
//! is still bridged as opaque L2 (robustness.md §3 b2, b10).

use std::net::{Ipv4Addr, Ipv6Addr};

use super::arp::{ArpPacket, ArpRepr};
use super::ethernet::{self, EtherType, EthernetFrame, MacAddr};
use super::icmpv4::Icmpv4Packet;
use super::icmpv6::Icmpv6Packet;
use super::ipv4::Ipv4Packet;
use super::ipv6::Ipv6Packet;
use super::tcp::{TcpFlags, TcpPacket};
use super::udp::{self, UdpPacket};
use super::vlan::{self, VlanHeader, VlanId};
use super::{IpProtocol, Result};

/// At most this many VLAN tags are parsed; deeper tags are payload (OVS
/// `FLOW_MAX_VLAN_HEADERS`, robustness.md §3 b3).
pub const MAX_VLAN_TAGS: usize = 2;

/// One parsed VLAN tag.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct VlanTag {
    /// Tag protocol identifier (0x8100 or 0x88a8).
    pub tpid: EtherType,
    /// Tag control information (PCP, DEI, VID).
    pub tci: u16,
}

impl VlanTag {
    /// The VLAN id.
    pub const fn vid(&self) -> VlanId {
        VlanId::from_tci(self.tci)
    }
}

/// Up to [`MAX_VLAN_TAGS`] VLAN tags, outermost first.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct VlanTags {
    tags: [VlanTag; MAX_VLAN_TAGS],
    count: u8,
}

impl VlanTags {
    /// Number of tags parsed.
    pub const fn len(&self) -> usize {
        self.count as usize
    }

    /// The frame was untagged.
    pub const fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The parsed tags, outermost first.
    pub fn as_slice(&self) -> &[VlanTag] {
        &self.tags[..self.len().min(MAX_VLAN_TAGS)]
    }

    /// The VLAN the MAC table keys this frame under: the outer tag's VID, or
    /// [`VlanId::NONE`] for untagged frames.
    pub fn outer_vid(&self) -> VlanId {
        self.as_slice().first().map_or(VlanId::NONE, VlanTag::vid)
    }

    fn push(&mut self, tag: VlanTag) {
        if let Some(slot) = self.tags.get_mut(usize::from(self.count)) {
            *slot = tag;
            self.count += 1;
        }
    }
}

/// ARP fields of an Ethernet/IPv4 ARP packet.
pub type ArpInfo = ArpRepr;

/// Fields of a valid IPv4 header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ipv4Info {
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// Payload protocol.
    pub protocol: IpProtocol,
    /// Time to live.
    pub ttl: u8,
    /// Header length in bytes (options included).
    pub header_len: u8,
    /// Total length field.
    pub total_len: u16,
    /// Identification.
    pub ident: u16,
    /// Don't-fragment flag.
    pub dont_frag: bool,
    /// More-fragments flag.
    pub more_frags: bool,
    /// Fragment offset in bytes.
    pub frag_offset: u16,
}

impl Ipv4Info {
    /// Part of a fragmented datagram.
    pub const fn is_fragment(&self) -> bool {
        self.more_frags || self.frag_offset != 0
    }
}

/// Fields of a valid IPv6 fixed header and its extension-header chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ipv6Info {
    /// Source address.
    pub src: Ipv6Addr,
    /// Destination address.
    pub dst: Ipv6Addr,
    /// Next header of the fixed header.
    pub next_header: IpProtocol,
    /// Upper-layer protocol after the extension headers (see `chain_complete`).
    pub protocol: IpProtocol,
    /// Hop limit.
    pub hop_limit: u8,
    /// Payload length field.
    pub payload_len: u16,
    /// Fragment header, if any: (offset in bytes, more-fragments).
    pub fragment: Option<(u16, bool)>,
    /// The walk reached the upper-layer header (see `ipv6::UpperLayer::complete`).
    pub chain_complete: bool,
}

/// What the EtherType announced and whether its header was valid.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum L3Info {
    /// An EtherType (or 802.3 length) the switch does not parse; bridged as opaque L2.
    #[default]
    None,
    /// Ethernet/IPv4 ARP.
    Arp(ArpInfo),
    /// A valid IPv4 header (robustness.md §3 b10).
    Ipv4(Ipv4Info),
    /// A valid IPv6 header.
    Ipv6(Ipv6Info),
    /// The EtherType said ARP, IPv4 or IPv6 (or a VLAN tag) but the header is truncated or
    /// invalid. Bridged as opaque L2; never trusted by anti-spoofing or routing.
    Malformed,
}

/// TCP header fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TcpInfo {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Control bits.
    pub flags: TcpFlags,
    /// Header length in bytes (options included).
    pub header_len: u8,
}

/// The transport header, where the packet carries one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum L4Info {
    /// No IP, or an IP protocol the switch does not parse.
    #[default]
    None,
    /// A non-first fragment: the transport header is in another packet.
    NonFirstFragment,
    /// The transport header is cut short (or, for IPv6, the extension chain of a first
    /// fragment never reaches it). Anti-spoofing fails closed on these.
    Truncated,
    /// TCP.
    Tcp(TcpInfo),
    /// UDP.
    Udp {
        /// Source port.
        src_port: u16,
        /// Destination port.
        dst_port: u16,
    },
    /// ICMPv4.
    Icmpv4 {
        /// Message type.
        msg_type: u8,
        /// Message code.
        code: u8,
    },
    /// ICMPv6.
    Icmpv6 {
        /// Message type.
        msg_type: u8,
        /// Message code.
        code: u8,
    },
}

/// The one-pass summary of a frame.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FrameInfo {
    /// Frame length in bytes (L2 header included, no FCS).
    pub len: u32,
    /// Destination MAC.
    pub dst: MacAddr,
    /// Source MAC.
    pub src: MacAddr,
    /// VLAN tags, outermost first.
    pub vlans: VlanTags,
    /// The EtherType after the parsed VLAN tags (still a TPID if there were more than two).
    pub ethertype: EtherType,
    /// Offset of the L3 header (= L2 header length).
    pub l3_offset: u16,
    /// L3 summary.
    pub l3: L3Info,
    /// Offset of the L4 header, 0 when `l4` carries no header.
    pub l4_offset: u16,
    /// L4 summary.
    pub l4: L4Info,
}

impl FrameInfo {
    /// Parses `frame`. The only error is a runt (< 14 bytes, robustness.md §3 b1); any
    /// other defect is recorded in `l3`/`l4`.
    pub fn parse(frame: &[u8]) -> Result<FrameInfo> {
        let eth = EthernetFrame::new_checked(frame)?;
        let mut info = FrameInfo {
            len: u32::try_from(frame.len()).unwrap_or(u32::MAX),
            dst: eth.dst_addr(),
            src: eth.src_addr(),
            ethertype: eth.ethertype(),
            l3_offset: ethernet::HEADER_LEN as u16,
            ..FrameInfo::default()
        };
        let mut off = ethernet::HEADER_LEN;
        while info.ethertype.is_vlan() && info.vlans.len() < MAX_VLAN_TAGS {
            let Some(Ok(tag)) = frame.get(off..).map(VlanHeader::new_checked) else {
                info.l3 = L3Info::Malformed;
                return Ok(info);
            };
            info.vlans.push(VlanTag {
                tpid: info.ethertype,
                tci: tag.tci(),
            });
            info.ethertype = tag.ethertype();
            off += vlan::HEADER_LEN;
        }
        info.l3_offset = off as u16;
        let l3 = frame.get(off..).unwrap_or(&[]);
        match info.ethertype {
            EtherType::ARP => {
                info.l3 = match ArpPacket::new_checked(l3).and_then(|p| ArpRepr::parse(&p)) {
                    Ok(a) => L3Info::Arp(a),
                    Err(_) => L3Info::Malformed,
                }
            }
            EtherType::IPV4 => info.parse_ipv4(l3, off),
            EtherType::IPV6 => info.parse_ipv6(l3, off),
            _ => {}
        }
        Ok(info)
    }

    fn parse_ipv4(&mut self, l3: &[u8], l3_offset: usize) {
        let Ok(ip) = Ipv4Packet::new_checked(l3) else {
            self.l3 = L3Info::Malformed;
            return;
        };
        let v4 = Ipv4Info {
            src: ip.src_addr(),
            dst: ip.dst_addr(),
            protocol: ip.protocol(),
            ttl: ip.ttl(),
            header_len: ip.header_len() as u8,
            total_len: ip.total_len(),
            ident: ip.ident(),
            dont_frag: ip.dont_frag(),
            more_frags: ip.more_frags(),
            frag_offset: ip.frag_offset(),
        };
        self.l3 = L3Info::Ipv4(v4);
        if v4.frag_offset != 0 {
            self.l4 = L4Info::NonFirstFragment;
            return;
        }
        let l4_offset = l3_offset + ip.header_len();
        self.parse_l4(v4.protocol, ip.payload(), l4_offset);
    }

    fn parse_ipv6(&mut self, l3: &[u8], l3_offset: usize) {
        let Ok(ip) = Ipv6Packet::new_checked(l3) else {
            self.l3 = L3Info::Malformed;
            return;
        };
        let ul = ip.upper_layer();
        self.l3 = L3Info::Ipv6(Ipv6Info {
            src: ip.src_addr(),
            dst: ip.dst_addr(),
            next_header: ip.next_header(),
            protocol: ul.protocol,
            hop_limit: ip.hop_limit(),
            payload_len: ip.payload_len(),
            fragment: ul.fragment,
            chain_complete: ul.complete,
        });
        if !ul.complete {
            self.l4 = match ul.fragment {
                Some((offset, _)) if offset != 0 => L4Info::NonFirstFragment,
                _ => L4Info::Truncated,
            };
            return;
        }
        let end = super::ipv6::HEADER_LEN + usize::from(ip.payload_len());
        let l4 = l3.get(ul.offset..end).unwrap_or(&[]);
        self.parse_l4(ul.protocol, l4, l3_offset + ul.offset);
    }

    /// Reads the transport header at the start of `l4`. Only the header must be present:
    /// the first fragment of a large UDP datagram is shorter than its length field says.
    fn parse_l4(&mut self, protocol: IpProtocol, l4: &[u8], l4_offset: usize) {
        let parsed = match protocol {
            IpProtocol::TCP => TcpPacket::new_checked(l4).ok().map(|t| {
                L4Info::Tcp(TcpInfo {
                    src_port: t.src_port(),
                    dst_port: t.dst_port(),
                    flags: t.flags(),
                    header_len: t.header_len() as u8,
                })
            }),
            IpProtocol::UDP if l4.len() >= udp::HEADER_LEN => {
                let u = UdpPacket::new_unchecked(l4);
                Some(L4Info::Udp {
                    src_port: u.src_port(),
                    dst_port: u.dst_port(),
                })
            }
            IpProtocol::UDP => None,
            IpProtocol::ICMP if matches!(self.l3, L3Info::Ipv4(_)) => {
                Icmpv4Packet::new_checked(l4).ok().map(|i| L4Info::Icmpv4 {
                    msg_type: i.msg_type(),
                    code: i.msg_code(),
                })
            }
            IpProtocol::ICMPV6 if matches!(self.l3, L3Info::Ipv6(_)) => {
                Icmpv6Packet::new_checked(l4).ok().map(|i| L4Info::Icmpv6 {
                    msg_type: i.msg_type(),
                    code: i.msg_code(),
                })
            }
            _ => return,
        };
        match parsed {
            Some(l4info) => {
                self.l4 = l4info;
                self.l4_offset = l4_offset as u16;
            }
            None => self.l4 = L4Info::Truncated,
        }
    }

    /// The VLAN the MAC table keys this frame under.
    pub fn vlan(&self) -> VlanId {
        self.vlans.outer_vid()
    }

    /// Length of the L2 header (Ethernet plus parsed VLAN tags).
    pub const fn l2_header_len(&self) -> usize {
        self.l3_offset as usize
    }

    /// The ARP fields, if this is a valid Ethernet/IPv4 ARP packet.
    pub const fn arp(&self) -> Option<&ArpInfo> {
        match &self.l3 {
            L3Info::Arp(a) => Some(a),
            _ => None,
        }
    }

    /// The IPv4 fields, if the header is valid.
    pub const fn ipv4(&self) -> Option<&Ipv4Info> {
        match &self.l3 {
            L3Info::Ipv4(v) => Some(v),
            _ => None,
        }
    }

    /// The IPv6 fields, if the header is valid.
    pub const fn ipv6(&self) -> Option<&Ipv6Info> {
        match &self.l3 {
            L3Info::Ipv6(v) => Some(v),
            _ => None,
        }
    }

    /// UDP source and destination ports, if present.
    pub const fn udp_ports(&self) -> Option<(u16, u16)> {
        match self.l4 {
            L4Info::Udp { src_port, dst_port } => Some((src_port, dst_port)),
            _ => None,
        }
    }

    /// Length of the transport header, if one was parsed (TCP with options, UDP 8,
    /// ICMP 8).
    pub const fn l4_header_len(&self) -> Option<usize> {
        match self.l4 {
            L4Info::Tcp(t) => Some(t.header_len as usize),
            L4Info::Udp { .. } => Some(udp::HEADER_LEN),
            L4Info::Icmpv4 { .. } | L4Info::Icmpv6 { .. } => Some(8),
            _ => None,
        }
    }

    /// The DHCP client hint: IPv4 UDP from port 68 to port 67 (RFC 2131 §4.1). Xen's
    /// `vif-common.sh` lets exactly this through the anti-spoofing rules.
    pub fn is_dhcp_client(&self) -> bool {
        self.ipv4().is_some()
            && self.udp_ports() == Some((udp::DHCP_CLIENT_PORT, udp::DHCP_SERVER_PORT))
    }

    /// A gratuitous ARP (sender IP == target IP), the trigger for the FDB's move lock.
    pub fn is_gratuitous_arp(&self) -> bool {
        self.arp().is_some_and(ArpRepr::is_gratuitous)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::build::{self, L2Header};
    use crate::wire::icmpv6::kind as icmp6;
    use crate::wire::ArpOperation;
    use proptest::prelude::*;

    const A: MacAddr = MacAddr([0x00, 0x16, 0x3e, 0, 0, 0x0a]);
    const B: MacAddr = MacAddr([0x00, 0x16, 0x3e, 0, 0, 0x0b]);

    #[test]
    fn runt_is_the_only_error() {
        assert!(FrameInfo::parse(&[0u8; 13]).is_err());
        let info = FrameInfo::parse(&[0u8; 14]).unwrap();
        assert_eq!(info.l3, L3Info::None);
        assert_eq!(info.l3_offset, 14);
    }

    #[test]
    fn udp_dhcp_discover() {
        let mut buf = [0u8; 400];
        let n = build::ipv4_udp(
            &mut buf,
            L2Header::new(MacAddr::BROADCAST, A),
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::BROADCAST,
            68,
            67,
            &[0u8; 300],
        )
        .unwrap();
        let info = FrameInfo::parse(&buf[..n]).unwrap();
        assert_eq!(info.len as usize, n);
        assert!(info.is_dhcp_client());
        assert_eq!(info.l4_offset, 34);
        assert_eq!(info.ipv4().unwrap().src, Ipv4Addr::UNSPECIFIED);
        assert_eq!(info.l4_header_len(), Some(8));
    }

    #[test]
    fn qinq_and_depth_limit() {
        let mut buf = [0u8; 200];
        let l2 = L2Header::new(B, A).with_vlans(&[(EtherType::QINQ, 100), (EtherType::VLAN, 7)]);
        let n = build::ipv4_udp(
            &mut buf,
            l2,
            Ipv4Addr::new(10, 0, 0, 1),
            Ipv4Addr::new(10, 0, 0, 2),
            1,
            2,
            b"x",
        )
        .unwrap();
        let info = FrameInfo::parse(&buf[..n]).unwrap();
        assert_eq!(info.vlans.len(), 2);
        assert_eq!(info.vlan().get(), 100);
        assert_eq!(info.l3_offset, 22);
        assert!(info.ipv4().is_some());
        assert_eq!(info.udp_ports(), Some((1, 2)));

        // Three tags: the third is payload, L3 is not parsed.
        let l2 = L2Header::new(B, A).with_vlans(&[
            (EtherType::QINQ, 100),
            (EtherType::VLAN, 7),
            (EtherType::VLAN, 8),
        ]);
        let n = build::ipv4_udp(
            &mut buf,
            l2,
            Ipv4Addr::new(10, 0, 0, 1),
            Ipv4Addr::new(10, 0, 0, 2),
            1,
            2,
            b"x",
        )
        .unwrap();
        let info = FrameInfo::parse(&buf[..n]).unwrap();
        assert_eq!(info.vlans.len(), 2);
        assert_eq!(info.ethertype, EtherType::VLAN);
        assert_eq!(info.l3, L3Info::None);

        // A tag cut short.
        let info = FrameInfo::parse(&[0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 2, 0x81, 0, 0]).unwrap();
        assert_eq!(info.l3, L3Info::Malformed);
    }

    #[test]
    fn arp_and_gratuitous() {
        let mut buf = [0u8; 64];
        let n = build::arp(
            &mut buf,
            L2Header::new(MacAddr::BROADCAST, A),
            &ArpRepr {
                operation: ArpOperation::REQUEST,
                sender_mac: A,
                sender_ip: Ipv4Addr::new(10, 0, 0, 5),
                target_mac: MacAddr::ZERO,
                target_ip: Ipv4Addr::new(10, 0, 0, 5),
            },
        )
        .unwrap();
        let info = FrameInfo::parse(&buf[..n]).unwrap();
        assert!(info.is_gratuitous_arp());
        assert_eq!(info.arp().unwrap().sender_mac, A);
        // Truncated ARP.
        let info = FrameInfo::parse(&buf[..n - 1]).unwrap();
        assert_eq!(info.l3, L3Info::Malformed);
    }

    #[test]
    fn ipv4_fragments_and_malformed() {
        let mut buf = [0u8; 200];
        let n = build::ipv4_udp(
            &mut buf,
            L2Header::new(B, A),
            Ipv4Addr::new(10, 0, 0, 1),
            Ipv4Addr::new(10, 0, 0, 2),
            5000,
            53,
            &[0u8; 50],
        )
        .unwrap();
        let mut frag = buf;
        {
            let mut ip = Ipv4Packet::new_unchecked(&mut frag[14..n]);
            ip.set_frag(false, false, 1480);
            ip.fill_checksum();
        }
        let info = FrameInfo::parse(&frag[..n]).unwrap();
        assert_eq!(info.l4, L4Info::NonFirstFragment);
        assert_eq!(info.ipv4().unwrap().frag_offset, 1480);

        // First fragment whose UDP length exceeds the fragment: the header still parses.
        let mut first = buf;
        {
            let mut u = UdpPacket::new_unchecked(&mut first[34..n]);
            u.set_len(3000);
        }
        assert_eq!(
            FrameInfo::parse(&first[..n]).unwrap().udp_ports(),
            Some((5000, 53))
        );

        // IHL 4 -> malformed, treated as non-IP.
        let mut bad = buf;
        bad[14] = 0x44;
        assert_eq!(FrameInfo::parse(&bad[..n]).unwrap().l3, L3Info::Malformed);

        // TCP header cut short inside a valid IPv4 packet.
        let mut t = buf;
        t[14 + 9] = 6;
        let info = FrameInfo::parse(&t[..34 + 10]).unwrap();
        assert_eq!(info.l3, L3Info::Malformed); // tot_len > size
        let mut ip = Ipv4Packet::new_unchecked(&mut t[14..44]);
        ip.set_total_len(30);
        assert_eq!(FrameInfo::parse(&t[..44]).unwrap().l4, L4Info::Truncated);
    }

    #[test]
    fn ipv6_router_advert() {
        let mut buf = [0u8; 200];
        let n = build::ipv6_icmpv6(
            &mut buf,
            L2Header::new(MacAddr([0x33, 0x33, 0, 0, 0, 1]), A),
            "fe80::216:3eff:fe00:a".parse().unwrap(),
            "ff02::1".parse().unwrap(),
            255,
            icmp6::ROUTER_ADVERT,
            0,
            &[0u8; 8],
        )
        .unwrap();
        let info = FrameInfo::parse(&buf[..n]).unwrap();
        assert_eq!(
            info.l4,
            L4Info::Icmpv6 {
                msg_type: icmp6::ROUTER_ADVERT,
                code: 0
            }
        );
        assert_eq!(info.l4_offset, 54);
        assert!(info.ipv6().unwrap().chain_complete);
    }

    proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = FrameInfo::parse(&bytes);
        }

        /// Frames that look like Ethernet+VLAN+IPv4/IPv6 headers with random contents.
        #[test]
        fn never_panics_structured(
            et in prop_oneof![Just(0x0800u16), Just(0x86dd), Just(0x0806), Just(0x8100), Just(0x88a8)],
            inner in prop_oneof![Just(0x0800u16), Just(0x86dd), Just(0x8100)],
            body in proptest::collection::vec(any::<u8>(), 0..120),
            first in any::<u8>(),
        ) {
            let mut f = vec![0u8; 12];
            f.extend_from_slice(&et.to_be_bytes());
            if et == 0x8100 || et == 0x88a8 {
                f.extend_from_slice(&[0, 5]);
                f.extend_from_slice(&inner.to_be_bytes());
            }
            f.push(first);
            f.extend_from_slice(&body);
            if let Ok(info) = FrameInfo::parse(&f) {
                prop_assert!(info.l2_header_len() <= f.len());
                prop_assert!(usize::from(info.l4_offset) <= f.len());
            }
        }
    }
}
