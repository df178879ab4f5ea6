//! Builders for the frames the switch synthesises (ARP replies for proxy ARP, ICMP errors
//! from the router, DHCP server replies) and that tests inject. Each writes a complete
//! frame into a caller-provided buffer and returns its length: no allocation, and
//! `Error::BufferTooSmall` instead of a panic when the buffer is short.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::arp::{self, ArpOperation, ArpRepr};
use super::ethernet::{self, EtherType, EthernetRepr, MacAddr};
use super::icmpv4::{self, Icmpv4Packet};
use super::icmpv6::{self, Icmpv6Packet};
use super::info::{FrameInfo, L4Info, MAX_VLAN_TAGS};
use super::ipv4::{self, Ipv4Repr};
use super::ipv6::{self, Ipv6Repr};
use super::tcp::{self, TcpFlags, TcpPacket};
use super::udp::{self, UdpPacket};
use super::vlan::{self, VlanHeader};
use super::{Error, IpProtocol, Result};

/// Default TTL / hop limit of synthesised packets (Linux `net.ipv4.ip_default_ttl`).
pub const DEFAULT_TTL: u8 = 64;

/// RFC 1812 §4.3.2.3: an ICMP error carries as much of the offending datagram as fits
/// without the error datagram exceeding 576 bytes.
pub const ICMPV4_ERROR_MAX_IP_LEN: usize = 576;

/// Most VLAN tags an [`L2Header`] can carry: one more than the parser reads, so tests can
/// build frames past the depth limit.
pub const MAX_BUILD_VLAN_TAGS: usize = MAX_VLAN_TAGS + 1;

/// The link-layer header of a frame to build: addresses and up to
/// [`MAX_BUILD_VLAN_TAGS`] VLAN tags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct L2Header {
    /// Destination MAC.
    pub dst: MacAddr,
    /// Source MAC.
    pub src: MacAddr,
    vlans: [(EtherType, u16); MAX_BUILD_VLAN_TAGS],
    vlan_count: usize,
}

impl L2Header {
    /// An untagged header.
    pub const fn new(dst: MacAddr, src: MacAddr) -> Self {
        L2Header {
            dst,
            src,
            vlans: [(EtherType(0), 0); MAX_BUILD_VLAN_TAGS],
            vlan_count: 0,
        }
    }

    /// Sets the VLAN tags `(tpid, tci)`, outermost first; tags beyond
    /// [`MAX_BUILD_VLAN_TAGS`] are ignored.
    pub fn with_vlans(mut self, tags: &[(EtherType, u16)]) -> Self {
        self.vlan_count = tags.len().min(MAX_BUILD_VLAN_TAGS);
        self.vlans[..self.vlan_count].copy_from_slice(&tags[..self.vlan_count]);
        self
    }

    fn tags(&self) -> &[(EtherType, u16)] {
        &self.vlans[..self.vlan_count.min(MAX_BUILD_VLAN_TAGS)]
    }

    /// Bytes the header occupies.
    pub const fn len(&self) -> usize {
        ethernet::HEADER_LEN + vlan::HEADER_LEN * self.vlan_count
    }

    /// Always false: a header has at least 14 bytes (present for clippy's `len` rule).
    pub const fn is_empty(&self) -> bool {
        false
    }

    /// Writes the header with `ethertype` as the payload type; returns its length.
    pub fn emit(&self, buf: &mut [u8], ethertype: EtherType) -> Result<usize> {
        let len = self.len();
        need(buf, len)?;
        let tags = self.tags();
        EthernetRepr {
            dst: self.dst,
            src: self.src,
            ethertype: tags.first().map_or(ethertype, |t| t.0),
        }
        .emit(buf)?;
        let mut off = ethernet::HEADER_LEN;
        for (i, &(_, tci)) in tags.iter().enumerate() {
            let next = tags.get(i + 1).map_or(ethertype, |t| t.0);
            let mut h = VlanHeader::new_unchecked(&mut buf[off..off + vlan::HEADER_LEN]);
            h.set_tci(tci);
            h.set_ethertype(next);
            off += vlan::HEADER_LEN;
        }
        Ok(len)
    }
}

fn need(buf: &[u8], len: usize) -> Result<()> {
    if buf.len() < len {
        Err(Error::BufferTooSmall)
    } else {
        Ok(())
    }
}

/// Writes an Ethernet/IPv4 ARP frame.
pub fn arp(buf: &mut [u8], l2: L2Header, repr: &ArpRepr) -> Result<usize> {
    let total = l2.len() + arp::PACKET_LEN;
    need(buf, total)?;
    let off = l2.emit(buf, EtherType::ARP)?;
    repr.emit(&mut buf[off..total])?;
    Ok(total)
}

/// Writes the reply to an ARP `request` on behalf of `answer_mac` (proxy ARP, or the
/// bridge's own address): "`request.target_ip` is-at `answer_mac`", sent to the requester
/// (RFC 826 "swap the sender and target fields").
pub fn arp_reply(buf: &mut [u8], request: &ArpRepr, answer_mac: MacAddr) -> Result<usize> {
    arp(
        buf,
        L2Header::new(request.sender_mac, answer_mac),
        &ArpRepr {
            operation: ArpOperation::REPLY,
            sender_mac: answer_mac,
            sender_ip: request.target_ip,
            target_mac: request.sender_mac,
            target_ip: request.sender_ip,
        },
    )
}

/// Writes a broadcast "who-has `target_ip` tell `sender_ip`" request.
pub fn arp_request(
    buf: &mut [u8],
    sender_mac: MacAddr,
    sender_ip: Ipv4Addr,
    target_ip: Ipv4Addr,
) -> Result<usize> {
    arp(
        buf,
        L2Header::new(MacAddr::BROADCAST, sender_mac),
        &ArpRepr {
            operation: ArpOperation::REQUEST,
            sender_mac,
            sender_ip,
            target_mac: MacAddr::ZERO,
            target_ip,
        },
    )
}

/// Writes L2 + an option-less IPv4 header for a payload of `l4_len` bytes; returns the
/// L4 offset.
fn ipv4_headers(
    buf: &mut [u8],
    l2: L2Header,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    protocol: IpProtocol,
    l4_len: usize,
) -> Result<usize> {
    need(buf, l2.len() + ipv4::HEADER_LEN + l4_len)?;
    let off = l2.emit(buf, EtherType::IPV4)?;
    Ipv4Repr {
        src,
        dst,
        protocol,
        payload_len: l4_len,
        ttl: DEFAULT_TTL,
        ident: 0,
        dont_frag: false,
    }
    .emit(&mut buf[off..])?;
    Ok(off + ipv4::HEADER_LEN)
}

/// Writes L2 + a fixed IPv6 header; returns the L4 offset.
fn ipv6_headers(
    buf: &mut [u8],
    l2: L2Header,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    next_header: IpProtocol,
    hop_limit: u8,
    l4_len: usize,
) -> Result<usize> {
    need(buf, l2.len() + ipv6::HEADER_LEN + l4_len)?;
    let off = l2.emit(buf, EtherType::IPV6)?;
    Ipv6Repr {
        src,
        dst,
        next_header,
        payload_len: l4_len,
        hop_limit,
    }
    .emit(&mut buf[off..])?;
    Ok(off + ipv6::HEADER_LEN)
}

fn udp_len(payload: &[u8]) -> Result<u16> {
    u16::try_from(udp::HEADER_LEN + payload.len()).map_err(|_| Error::Malformed)
}

/// Writes an IPv4/UDP frame with a valid UDP checksum (the DHCP server's replies use this).
pub fn ipv4_udp(
    buf: &mut [u8],
    l2: L2Header,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    src_port: u16,
    dst_port: u16,
    payload: &[u8],
) -> Result<usize> {
    let len = udp_len(payload)?;
    let l4 = ipv4_headers(buf, l2, src, dst, IpProtocol::UDP, usize::from(len))?;
    let end = l4 + usize::from(len);
    let mut u = UdpPacket::new_unchecked(&mut buf[l4..end]);
    u.set_src_port(src_port);
    u.set_dst_port(dst_port);
    u.set_len(len);
    u.payload_mut().copy_from_slice(payload);
    u.fill_checksum_v4(src, dst);
    Ok(end)
}

/// Writes an IPv6/UDP frame with a valid checksum.
#[allow(clippy::too_many_arguments)]
pub fn ipv6_udp(
    buf: &mut [u8],
    l2: L2Header,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    hop_limit: u8,
    src_port: u16,
    dst_port: u16,
    payload: &[u8],
) -> Result<usize> {
    let len = udp_len(payload)?;
    let l4 = ipv6_headers(
        buf,
        l2,
        src,
        dst,
        IpProtocol::UDP,
        hop_limit,
        usize::from(len),
    )?;
    let end = l4 + usize::from(len);
    let mut u = UdpPacket::new_unchecked(&mut buf[l4..end]);
    u.set_src_port(src_port);
    u.set_dst_port(dst_port);
    u.set_len(len);
    u.payload_mut().copy_from_slice(payload);
    u.fill_checksum_v6(src, dst);
    Ok(end)
}

/// TCP segment fields for [`ipv4_tcp`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpSegment<'a> {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgment number.
    pub ack: u32,
    /// Control bits.
    pub flags: TcpFlags,
    /// Window.
    pub window: u16,
    /// Payload.
    pub payload: &'a [u8],
}

/// Writes an IPv4/TCP frame (20-byte TCP header, valid checksum).
pub fn ipv4_tcp(
    buf: &mut [u8],
    l2: L2Header,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    seg: &TcpSegment<'_>,
) -> Result<usize> {
    let l4_len = tcp::HEADER_LEN + seg.payload.len();
    let l4 = ipv4_headers(buf, l2, src, dst, IpProtocol::TCP, l4_len)?;
    let end = l4 + l4_len;
    buf[l4 + tcp::HEADER_LEN..end].copy_from_slice(seg.payload);
    let mut t = TcpPacket::new_unchecked(&mut buf[l4..end]);
    t.set_src_port(seg.src_port);
    t.set_dst_port(seg.dst_port);
    t.set_seq_number(seg.seq);
    t.set_ack_number(seg.ack);
    t.set_header_len_and_flags(tcp::HEADER_LEN, seg.flags);
    t.set_window(seg.window);
    t.set_urgent(0);
    t.fill_checksum_v4(src, dst);
    Ok(end)
}

/// Writes an IPv4 ICMP message of the given type with a 4-byte rest-of-header and body.
#[allow(clippy::too_many_arguments)]
pub fn ipv4_icmp(
    buf: &mut [u8],
    l2: L2Header,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    msg_type: u8,
    code: u8,
    rest_of_header: u32,
    body: &[u8],
) -> Result<usize> {
    let l4_len = icmpv4::HEADER_LEN + body.len();
    let l4 = ipv4_headers(buf, l2, src, dst, IpProtocol::ICMP, l4_len)?;
    let end = l4 + l4_len;
    let mut p = Icmpv4Packet::new_unchecked(&mut buf[l4..end]);
    p.set_msg_type(msg_type);
    p.set_msg_code(code);
    p.set_rest_of_header(rest_of_header);
    p.data_mut().copy_from_slice(body);
    p.fill_checksum();
    Ok(end)
}

/// Whether an ICMP error may be sent about `offending` (RFC 1122 §3.2.2, RFC 1812
/// §4.3.2.7): never about an ICMP error, a non-first fragment, a link-layer broadcast or
/// multicast, or a datagram whose source is not a unicast host address.
pub fn icmpv4_error_allowed(offending: &FrameInfo) -> bool {
    let Some(ip) = offending.ipv4() else {
        return false;
    };
    if offending.dst.is_multicast() || ip.frag_offset != 0 {
        return false;
    }
    if let L4Info::Icmpv4 { msg_type, .. } = offending.l4 {
        if icmpv4::kind::is_error(msg_type) {
            return false;
        }
    }
    let s = ip.src;
    let d = ip.dst;
    !(s.is_unspecified()
        || s.is_broadcast()
        || s.is_multicast()
        || s.is_loopback()
        || s.octets()[0] >= 240
        || d.is_broadcast()
        || d.is_multicast())
}

/// Writes an ICMPv4 error (destination unreachable, time exceeded, ...) about
/// `offending_ip` (the offending IPv4 datagram, header first) to that datagram's source.
/// `rest_of_header` carries the next-hop MTU for "fragmentation needed" (RFC 1191) and is 0
/// otherwise. The quote is cut so the error datagram stays within 576 bytes (RFC 1812
/// §4.3.2.3). The caller decides whether an error is allowed ([`icmpv4_error_allowed`]).
pub fn icmpv4_error(
    buf: &mut [u8],
    l2: L2Header,
    src: Ipv4Addr,
    msg_type: u8,
    code: u8,
    rest_of_header: u32,
    offending_ip: &[u8],
) -> Result<usize> {
    if offending_ip.len() < ipv4::HEADER_LEN {
        return Err(Error::Truncated);
    }
    let dst = Ipv4Addr::new(
        offending_ip[12],
        offending_ip[13],
        offending_ip[14],
        offending_ip[15],
    );
    let max_quote = ICMPV4_ERROR_MAX_IP_LEN - ipv4::HEADER_LEN - icmpv4::HEADER_LEN;
    let quote = &offending_ip[..offending_ip.len().min(max_quote)];
    ipv4_icmp(buf, l2, src, dst, msg_type, code, rest_of_header, quote)
}

/// Writes an IPv6/ICMPv6 message with a valid checksum; `body` follows the 4-byte
/// type/code/checksum header (so it starts with the 4 message-specific bytes).
#[allow(clippy::too_many_arguments)]
pub fn ipv6_icmpv6(
    buf: &mut [u8],
    l2: L2Header,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    hop_limit: u8,
    msg_type: u8,
    code: u8,
    body: &[u8],
) -> Result<usize> {
    let l4_len = 4 + body.len();
    if l4_len < icmpv6::HEADER_LEN {
        return Err(Error::Malformed);
    }
    let l4 = ipv6_headers(buf, l2, src, dst, IpProtocol::ICMPV6, hop_limit, l4_len)?;
    let end = l4 + l4_len;
    buf[l4 + 4..end].copy_from_slice(body);
    let mut p = Icmpv6Packet::new_unchecked(&mut buf[l4..end]);
    p.set_msg_type(msg_type);
    p.set_msg_code(code);
    p.fill_checksum(src, dst);
    Ok(end)
}

/// Writes an opaque frame: L2 header, `ethertype`, then `payload` verbatim.
pub fn raw(buf: &mut [u8], l2: L2Header, ethertype: EtherType, payload: &[u8]) -> Result<usize> {
    let total = l2.len() + payload.len();
    need(buf, total)?;
    let off = l2.emit(buf, ethertype)?;
    buf[off..total].copy_from_slice(payload);
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{ArpPacket, Ipv4Packet, L3Info};

    const A: MacAddr = MacAddr([0x00, 0x16, 0x3e, 0, 0, 0x0a]);
    const R: MacAddr = MacAddr([0xfe, 0xff, 0xff, 0xff, 0xff, 0xff]);

    #[test]
    fn arp_reply_swaps_fields() {
        let req = ArpRepr {
            operation: ArpOperation::REQUEST,
            sender_mac: A,
            sender_ip: Ipv4Addr::new(10, 0, 0, 5),
            target_mac: MacAddr::ZERO,
            target_ip: Ipv4Addr::new(10, 0, 0, 1),
        };
        let mut buf = [0u8; 60];
        let n = arp_reply(&mut buf, &req, R).unwrap();
        assert_eq!(n, 42);
        let info = FrameInfo::parse(&buf[..n]).unwrap();
        assert_eq!(info.dst, A);
        assert_eq!(info.src, R);
        let a = info.arp().unwrap();
        assert_eq!(a.operation, ArpOperation::REPLY);
        assert_eq!(a.sender_ip, Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(a.sender_mac, R);
        assert_eq!((a.target_mac, a.target_ip), (A, req.sender_ip));
        assert!(ArpPacket::new_checked(&buf[14..n]).is_ok());
        assert_eq!(
            arp_reply(&mut buf[..41], &req, R),
            Err(Error::BufferTooSmall)
        );
    }

    #[test]
    fn icmp_error_quotes_and_caps() {
        let mut orig = [0u8; 1500];
        let n = ipv4_udp(
            &mut orig,
            L2Header::new(R, A),
            Ipv4Addr::new(10, 0, 0, 5),
            Ipv4Addr::new(192, 0, 2, 9),
            4000,
            53,
            &[7u8; 1400],
        )
        .unwrap();
        let info = FrameInfo::parse(&orig[..n]).unwrap();
        assert!(icmpv4_error_allowed(&info));
        let mut buf = [0u8; 700];
        let m = icmpv4_error(
            &mut buf,
            L2Header::new(A, R),
            Ipv4Addr::new(10, 0, 0, 1),
            icmpv4::kind::DEST_UNREACHABLE,
            icmpv4::code::FRAG_NEEDED,
            1400,
            &orig[14..n],
        )
        .unwrap();
        let e = FrameInfo::parse(&buf[..m]).unwrap();
        let ip = e.ipv4().unwrap();
        assert_eq!(ip.dst, Ipv4Addr::new(10, 0, 0, 5));
        assert_eq!(usize::from(ip.total_len), ICMPV4_ERROR_MAX_IP_LEN);
        assert!(Ipv4Packet::new_checked(&buf[14..m])
            .unwrap()
            .verify_checksum());
        let icmp = Icmpv4Packet::new_checked(&buf[34..m]).unwrap();
        assert!(icmp.verify_checksum());
        assert_eq!(icmp.rest_of_header(), 1400);
        assert_eq!(&icmp.data()[..20], &orig[14..34]);

        // Never an error about an error.
        let k = ipv4_icmp(
            &mut orig,
            L2Header::new(R, A),
            Ipv4Addr::new(10, 0, 0, 5),
            Ipv4Addr::new(10, 0, 0, 1),
            icmpv4::kind::TIME_EXCEEDED,
            0,
            0,
            &[0; 28],
        )
        .unwrap();
        assert!(!icmpv4_error_allowed(
            &FrameInfo::parse(&orig[..k]).unwrap()
        ));
        assert_eq!(
            icmpv4_error(
                &mut buf,
                L2Header::new(A, R),
                Ipv4Addr::LOCALHOST,
                3,
                1,
                0,
                &[0; 19]
            ),
            Err(Error::Truncated)
        );
    }

    #[test]
    fn tcp_and_raw() {
        let mut buf = [0u8; 128];
        let n = ipv4_tcp(
            &mut buf,
            L2Header::new(R, A),
            Ipv4Addr::new(10, 0, 0, 5),
            Ipv4Addr::new(10, 0, 0, 1),
            &TcpSegment {
                src_port: 1234,
                dst_port: 22,
                seq: 1,
                ack: 0,
                flags: TcpFlags::SYN,
                window: 100,
                payload: b"hi",
            },
        )
        .unwrap();
        let info = FrameInfo::parse(&buf[..n]).unwrap();
        assert!(matches!(info.l4, L4Info::Tcp(t) if t.dst_port == 22 && t.flags == TcpFlags::SYN));
        let t = TcpPacket::new_checked(&buf[34..n]).unwrap();
        assert!(t.verify_checksum_v4(Ipv4Addr::new(10, 0, 0, 5), Ipv4Addr::new(10, 0, 0, 1)));

        let n = raw(&mut buf, L2Header::new(R, A), EtherType(0x88cc), &[1, 2, 3]).unwrap();
        let info = FrameInfo::parse(&buf[..n]).unwrap();
        assert_eq!(info.ethertype, EtherType(0x88cc));
        assert_eq!(info.l3, L3Info::None);
    }

    mod roundtrip {
        use super::*;
        use crate::wire::{
            ArpPacket, Icmpv4Packet, Icmpv6Packet, Ipv4Packet, Ipv6Packet, TcpPacket, UdpPacket,
            VlanId,
        };
        use proptest::prelude::*;

        fn unicast_mac() -> impl Strategy<Value = MacAddr> {
            any::<[u8; 6]>().prop_map(|mut a| {
                a[0] &= 0xfe;
                a[5] |= 1;
                MacAddr(a)
            })
        }

        fn tags() -> impl Strategy<Value = Vec<(EtherType, u16)>> {
            proptest::collection::vec(
                (
                    prop_oneof![Just(EtherType::VLAN), Just(EtherType::QINQ)],
                    0u16..0x1000,
                ),
                0..=2,
            )
        }

        #[derive(Debug, Clone)]
        enum Kind {
            Udp4(Ipv4Addr, Ipv4Addr, u16, u16, Vec<u8>),
            Tcp4(Ipv4Addr, Ipv4Addr, u16, u16, u8),
            Arp(bool, MacAddr, Ipv4Addr, Ipv4Addr),
            Udp6(Ipv6Addr, Ipv6Addr, u16, u16, u8),
            Icmp6(Ipv6Addr, Ipv6Addr, u8, u8),
        }

        fn kind() -> impl Strategy<Value = Kind> {
            let v4 = any::<u32>().prop_map(Ipv4Addr::from);
            let v6 = any::<u128>().prop_map(Ipv6Addr::from);
            prop_oneof![
                (
                    v4.clone(),
                    v4.clone(),
                    any::<u16>(),
                    any::<u16>(),
                    proptest::collection::vec(any::<u8>(), 0..64)
                )
                    .prop_map(|(a, b, c, d, e)| Kind::Udp4(a, b, c, d, e)),
                (
                    v4.clone(),
                    v4.clone(),
                    any::<u16>(),
                    any::<u16>(),
                    any::<u8>()
                )
                    .prop_map(|(a, b, c, d, e)| Kind::Tcp4(a, b, c, d, e)),
                (any::<bool>(), unicast_mac(), v4.clone(), v4)
                    .prop_map(|(a, b, c, d)| Kind::Arp(a, b, c, d)),
                (
                    v6.clone(),
                    v6.clone(),
                    any::<u16>(),
                    any::<u16>(),
                    any::<u8>()
                )
                    .prop_map(|(a, b, c, d, e)| Kind::Udp6(a, b, c, d, e)),
                (v6.clone(), v6, any::<u8>(), any::<u8>())
                    .prop_map(|(a, b, c, d)| Kind::Icmp6(a, b, c, d)),
            ]
        }

        proptest! {
            /// Whatever a builder writes, `FrameInfo::parse` reads back field for field.
            #[test]
            fn frame_info_round_trips(src in unicast_mac(), dst in unicast_mac(), tags in tags(), k in kind()) {
                let l2 = L2Header::new(dst, src).with_vlans(&tags);
                let mut buf = [0u8; 256];
                let n = match &k {
                    Kind::Udp4(s, d, sp, dp, pl) => ipv4_udp(&mut buf, l2, *s, *d, *sp, *dp, pl),
                    Kind::Tcp4(s, d, sp, dp, fl) => ipv4_tcp(&mut buf, l2, *s, *d, &TcpSegment {
                        src_port: *sp, dst_port: *dp, seq: 7, ack: 9, flags: TcpFlags(*fl), window: 512, payload: b"abc",
                    }),
                    Kind::Arp(req, m, s, t) => arp(&mut buf, l2, &ArpRepr {
                        operation: if *req { ArpOperation::REQUEST } else { ArpOperation::REPLY },
                        sender_mac: *m, sender_ip: *s, target_mac: MacAddr::ZERO, target_ip: *t,
                    }),
                    Kind::Udp6(s, d, sp, dp, hl) => ipv6_udp(&mut buf, l2, *s, *d, *hl, *sp, *dp, b"six"),
                    Kind::Icmp6(s, d, ty, code) => ipv6_icmpv6(&mut buf, l2, *s, *d, 255, *ty, *code, &[0; 20]),
                }.unwrap();
                let info = FrameInfo::parse(&buf[..n]).unwrap();
                prop_assert_eq!(info.len as usize, n);
                prop_assert_eq!(info.src, src);
                prop_assert_eq!(info.dst, dst);
                prop_assert_eq!(info.vlans.len(), tags.len());
                prop_assert_eq!(info.vlan(), tags.first().map_or(VlanId::NONE, |t| VlanId::from_tci(t.1)));
                prop_assert_eq!(usize::from(info.l3_offset), 14 + 4 * tags.len());
                match k {
                    Kind::Udp4(s, d, sp, dp, _) => {
                        let ip = info.ipv4().unwrap();
                        prop_assert_eq!((ip.src, ip.dst, ip.ttl), (s, d, DEFAULT_TTL));
                        prop_assert_eq!(info.udp_ports(), Some((sp, dp)));
                        prop_assert_eq!(info.is_dhcp_client(), (sp, dp) == (68, 67));
                        let l4 = usize::from(info.l4_offset);
                        prop_assert!(UdpPacket::new_checked(&buf[l4..n]).unwrap().verify_checksum_v4(s, d));
                        prop_assert!(Ipv4Packet::new_checked(&buf[usize::from(info.l3_offset)..n]).unwrap().verify_checksum());
                    }
                    Kind::Tcp4(s, d, sp, dp, fl) => {
                        let L4Info::Tcp(t) = info.l4 else { return Err(TestCaseError::fail("not tcp")) };
                        prop_assert_eq!((t.src_port, t.dst_port, t.flags, t.header_len), (sp, dp, TcpFlags(fl), 20));
                        prop_assert!(TcpPacket::new_checked(&buf[usize::from(info.l4_offset)..n]).unwrap().verify_checksum_v4(s, d));
                    }
                    Kind::Arp(req, m, s, t) => {
                        let a = info.arp().unwrap();
                        prop_assert_eq!(a.operation, if req { ArpOperation::REQUEST } else { ArpOperation::REPLY });
                        prop_assert_eq!((a.sender_mac, a.sender_ip, a.target_ip), (m, s, t));
                        prop_assert_eq!(info.is_gratuitous_arp(), s == t && !s.is_unspecified());
                    }
                    Kind::Udp6(s, d, sp, dp, hl) => {
                        let ip = info.ipv6().unwrap();
                        prop_assert_eq!((ip.src, ip.dst, ip.hop_limit), (s, d, hl));
                        prop_assert_eq!(info.udp_ports(), Some((sp, dp)));
                        prop_assert!(UdpPacket::new_checked(&buf[usize::from(info.l4_offset)..n]).unwrap().verify_checksum_v6(s, d));
                    }
                    Kind::Icmp6(s, d, ty, code) => {
                        prop_assert_eq!(info.l4, L4Info::Icmpv6 { msg_type: ty, code });
                        prop_assert!(Icmpv6Packet::new_checked(&buf[usize::from(info.l4_offset)..n]).unwrap().verify_checksum(s, d));
                    }
                }
            }

            /// Every view's checked constructor and getters survive arbitrary bytes.
            #[test]
            fn views_never_panic(b in proptest::collection::vec(any::<u8>(), 0..100)) {
                if let Ok(p) = ArpPacket::new_checked(&b[..]) { let _ = ArpRepr::parse(&p); }
                if let Ok(p) = Ipv4Packet::new_checked(&b[..]) {
                    let _ = (p.verify_checksum(), p.payload().len(), p.frag_offset(), p.src_addr());
                }
                if let Ok(p) = Ipv6Packet::new_checked(&b[..]) { let _ = (p.upper_layer(), p.traffic_class()); }
                if let Ok(p) = TcpPacket::new_checked(&b[..]) {
                    let _ = (p.flags(), p.seq_number(), p.verify_checksum_v4(Ipv4Addr::LOCALHOST, Ipv4Addr::LOCALHOST));
                }
                if let Ok(p) = UdpPacket::new_checked(&b[..]) {
                    let _ = (p.payload().len(), p.verify_checksum_v4(Ipv4Addr::LOCALHOST, Ipv4Addr::LOCALHOST));
                }
                if let Ok(p) = Icmpv4Packet::new_checked(&b[..]) { let _ = (p.data().len(), p.verify_checksum()); }
                if let Ok(p) = Icmpv6Packet::new_checked(&b[..]) { let _ = p.nd_target(); }
                let _ = icmpv4_error(&mut [0u8; 64], L2Header::new(A, R), Ipv4Addr::LOCALHOST, 3, 1, 0, &b);
            }
        }
    }
}
