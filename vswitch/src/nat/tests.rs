//! NAT-network scenarios on the in-memory fabric (bridge + gateway + fake uplink), and
//! NAT property tests. Every fabric test ends with the conservation check.

use core::time::Duration;
use std::net::{Ipv4Addr, SocketAddr};

use proptest::prelude::*;

use super::gateway::{GatewayAction, GatewayConfig, GatewaySide};
use super::harness::NatFabric;
use super::*;
use crate::dhcp::wire::{emit_request, opt, parse_reply, FLAG_BROADCAST};
use crate::dhcp::MessageType;
use crate::meta::{Gso, GsoKind};
use crate::port::PortId;
use crate::wire::build::{self, L2Header, TcpSegment};
use crate::wire::{
    ArpOperation, Icmpv4Packet, Ipv4Packet, MacAddr, TcpFlags, TcpPacket, UdpPacket,
};

const GW_MAC: MacAddr = MacAddr([0x52, 0x54, 0x00, 0xaa, 0xbb, 0x01]);
const GW: Ipv4Addr = Ipv4Addr::new(192, 168, 122, 1);
const UP_MAC: MacAddr = MacAddr([0x52, 0x54, 0, 0, 0, 0x01]);
const EXT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const ROUTER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 254);
const ROUTER_MAC: MacAddr = MacAddr([0x52, 0x54, 0, 0, 0, 0xfe]);
const OUT_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
const OUT_MAC: MacAddr = MacAddr([0x52, 0x54, 0, 0, 0, 0x07]);
const SERVER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
const G1_MAC: MacAddr = MacAddr([0x00, 0x16, 0x3e, 0, 0, 1]);
const G1: Ipv4Addr = Ipv4Addr::new(192, 168, 122, 50);
const G2_MAC: MacAddr = MacAddr([0x00, 0x16, 0x3e, 0, 0, 2]);
const G2: Ipv4Addr = Ipv4Addr::new(192, 168, 122, 60);
const G3_MAC: MacAddr = MacAddr([0x00, 0x16, 0x3e, 0, 0, 3]);

fn dns_upstream() -> SocketAddr {
    SocketAddr::new(Ipv4Addr::new(192, 0, 2, 53).into(), 53)
}

fn config() -> GatewayConfig {
    let mut c = GatewayConfig::libvirt_default(
        GW_MAC,
        EXT,
        UP_MAC,
        "198.51.100.0/24".parse().unwrap(),
        Some(ROUTER),
        vec![dns_upstream()],
    );
    c.nat.forwards = vec!["tcp:8080:192.168.122.50:80".parse().unwrap()];
    c
}

struct Net {
    f: NatFabric,
    g1: PortId,
    g2: PortId,
    g3: PortId,
}

/// A NAT network: G1 with ip=192.168.122.50, G2 unfiltered answering ARP for .60, G3
/// unfiltered with no address; outside, the router and an on-link host answer ARP.
fn net_with(c: GatewayConfig) -> Net {
    let mut f = NatFabric::new(c);
    let g1 = f.add_guest("vif1.0", G1_MAC, Some(G1));
    let g2 = f.add_guest("vif2.0", G2_MAC, None);
    f.answer_arp_on_bridge(G2, g2, G2_MAC);
    let g3 = f.add_guest("vif3.0", G3_MAC, None);
    f.answer_arp_on_uplink(ROUTER, ROUTER_MAC);
    f.answer_arp_on_uplink(OUT_IP, OUT_MAC);
    Net { f, g1, g2, g3 }
}

fn net() -> Net {
    net_with(config())
}

#[allow(clippy::too_many_arguments)]
fn tcp(
    src: MacAddr,
    dst: MacAddr,
    sip: Ipv4Addr,
    dip: Ipv4Addr,
    sp: u16,
    dp: u16,
    seq: u32,
    ack: u32,
    flags: TcpFlags,
    payload: &[u8],
) -> Vec<u8> {
    let mut b = vec![0u8; payload.len() + 80];
    let n = build::ipv4_tcp(
        &mut b,
        L2Header::new(dst, src),
        sip,
        dip,
        &TcpSegment {
            src_port: sp,
            dst_port: dp,
            seq,
            ack,
            flags,
            window: 1000,
            payload,
        },
    )
    .unwrap();
    b.truncate(n);
    b
}

fn udp(
    src: MacAddr,
    dst: MacAddr,
    sip: Ipv4Addr,
    dip: Ipv4Addr,
    sp: u16,
    dp: u16,
    payload: &[u8],
) -> Vec<u8> {
    let mut b = vec![0u8; payload.len() + 80];
    let n = build::ipv4_udp(&mut b, L2Header::new(dst, src), sip, dip, sp, dp, payload).unwrap();
    b.truncate(n);
    b
}

fn echo(
    src: MacAddr,
    dst: MacAddr,
    sip: Ipv4Addr,
    dip: Ipv4Addr,
    msg_type: u8,
    id: u16,
    seq: u16,
) -> Vec<u8> {
    let mut b = vec![0u8; 120];
    let n = build::ipv4_icmp(
        &mut b,
        L2Header::new(dst, src),
        sip,
        dip,
        msg_type,
        0,
        (u32::from(id) << 16) | u32::from(seq),
        b"abcdefgh",
    )
    .unwrap();
    b.truncate(n);
    b
}

fn set_ttl(f: &mut [u8], ttl: u8) {
    let mut ip = Ipv4Packet::new_unchecked(&mut f[14..]);
    ip.set_ttl(ttl);
    ip.fill_checksum();
}

/// (src, sport, dst, dport) of a TCP/UDP frame, after checking every checksum.
#[track_caller]
fn ends(f: &[u8]) -> (Ipv4Addr, u16, Ipv4Addr, u16) {
    let ip = Ipv4Packet::new_checked(&f[14..]).unwrap();
    assert!(ip.verify_checksum(), "IP header checksum");
    let (s, d) = (ip.src_addr(), ip.dst_addr());
    let l4 = ip.payload();
    match ip.protocol() {
        crate::wire::IpProtocol::TCP => {
            let t = TcpPacket::new_checked(l4).unwrap();
            assert!(t.verify_checksum_v4(s, d), "TCP checksum");
            (s, t.src_port(), d, t.dst_port())
        }
        crate::wire::IpProtocol::UDP => {
            let u = UdpPacket::new_checked(l4).unwrap();
            assert!(u.verify_checksum_v4(s, d), "UDP checksum");
            (s, u.src_port(), d, u.dst_port())
        }
        crate::wire::IpProtocol::ICMP => {
            let i = Icmpv4Packet::new_checked(l4).unwrap();
            assert!(i.verify_checksum(), "ICMP checksum");
            (s, i.echo_ident(), d, 0)
        }
        p => panic!("unexpected protocol {p:?}"),
    }
}

#[track_caller]
fn one(mut v: Vec<Vec<u8>>) -> Vec<u8> {
    assert_eq!(v.len(), 1, "expected exactly one frame, got {}", v.len());
    v.remove(0)
}

fn dhcp_frame(mac: MacAddr, xid: u32, ciaddr: Ipv4Addr, opts: &[(u8, &[u8])]) -> Vec<u8> {
    let mut p = [0u8; 600];
    let n = emit_request(&mut p, xid, FLAG_BROADCAST, ciaddr, mac, opts).unwrap();
    udp(
        mac,
        MacAddr::BROADCAST,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::BROADCAST,
        68,
        67,
        &p[..n],
    )
}

/// The one DHCP reply addressed to `mac` among `frames` (broadcast replies reach every
/// guest on the bridge).
#[track_caller]
fn dhcp_for(frames: Vec<Vec<u8>>, mac: MacAddr) -> Vec<u8> {
    one(frames
        .into_iter()
        .filter(|f| {
            FrameInfo::parse(f).is_ok_and(|i| i.udp_ports() == Some((67, 68)))
                && f.get(42 + 28..42 + 34) == Some(&mac.0[..])
        })
        .collect())
}

#[track_caller]
fn dhcp_reply(f: &[u8]) -> crate::dhcp::wire::ReplySummary {
    let (s, sp, _, dp) = ends(f);
    assert_eq!((s, sp, dp), (GW, 67, 68));
    parse_reply(&f[42..]).unwrap()
}

#[test]
fn dhcp_dora_static_dynamic_and_nak_through_the_bridge() {
    let mut n = net();
    // Static: ip=192.168.122.50 gets exactly .50, with router and DNS = the gateway.
    n.f.from_guest(
        n.g1,
        &dhcp_frame(
            G1_MAC,
            1,
            Ipv4Addr::UNSPECIFIED,
            &[(opt::MESSAGE_TYPE, &[1])],
        ),
    );
    let offer = dhcp_reply(&dhcp_for(n.f.take_guest(n.g1), G1_MAC));
    assert_eq!(
        (offer.message_type, offer.yiaddr),
        (Some(MessageType::Offer), Some(G1))
    );
    assert_eq!(
        (offer.router, offer.dns, offer.subnet_mask),
        (Some(GW), Some(GW), Some(Ipv4Addr::new(255, 255, 255, 0)))
    );
    n.f.from_guest(
        n.g1,
        &dhcp_frame(
            G1_MAC,
            1,
            Ipv4Addr::UNSPECIFIED,
            &[(53, &[3]), (50, &G1.octets()), (54, &GW.octets())],
        ),
    );
    let ack = dhcp_reply(&dhcp_for(n.f.take_guest(n.g1), G1_MAC));
    assert_eq!(
        (ack.message_type, ack.yiaddr, ack.lease_secs),
        (Some(MessageType::Ack), Some(G1), Some(3600))
    );
    // The broadcast DISCOVER also reached the other guests (a bridge floods it).
    assert!(!n.f.take_guest(n.g2).is_empty());
    // Dynamic: G3 gets an address from the range .2-.254.
    n.f.from_guest(
        n.g3,
        &dhcp_frame(G3_MAC, 2, Ipv4Addr::UNSPECIFIED, &[(53, &[1])]),
    );
    let y = dhcp_reply(&dhcp_for(n.f.take_guest(n.g3), G3_MAC))
        .yiaddr
        .unwrap();
    assert!((2..=254).contains(&y.octets()[3]) && y != G1);
    n.f.from_guest(
        n.g3,
        &dhcp_frame(
            G3_MAC,
            2,
            Ipv4Addr::UNSPECIFIED,
            &[(53, &[3]), (50, &y.octets()), (54, &GW.octets())],
        ),
    );
    assert_eq!(
        dhcp_reply(&dhcp_for(n.f.take_guest(n.g3), G3_MAC)).message_type,
        Some(MessageType::Ack)
    );
    // A REQUEST for G1's address from G3: NAK.
    n.f.from_guest(
        n.g3,
        &dhcp_frame(
            G3_MAC,
            3,
            Ipv4Addr::UNSPECIFIED,
            &[(53, &[3]), (50, &G1.octets())],
        ),
    );
    assert_eq!(
        dhcp_reply(&dhcp_for(n.f.take_guest(n.g3), G3_MAC)).message_type,
        Some(MessageType::Nak)
    );
    // The gateway learned where the bound guests are.
    assert_eq!(n.f.gateway.neigh().peek(PortId(0), y), Some(G3_MAC));
    n.f.assert_conservation();
}

#[test]
fn dhcp_starvation_and_malformed_are_bounded_and_counted() {
    let mut n = net();
    // chaddr that is not the frame's source.
    n.f.from_guest(n.g3, &{
        let mut p = [0u8; 600];
        let k = emit_request(
            &mut p,
            1,
            0,
            Ipv4Addr::UNSPECIFIED,
            MacAddr([2, 0, 0, 0, 0, 9]),
            &[(53, &[1])],
        )
        .unwrap();
        udp(
            G3_MAC,
            MacAddr::BROADCAST,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::BROADCAST,
            68,
            67,
            &p[..k],
        )
    });
    assert_eq!(n.f.gateway_drops(DropReason::DhcpChaddrMismatch), 1);
    // Malformed: options without END.
    let mut bad = dhcp_frame(G3_MAC, 2, Ipv4Addr::UNSPECIFIED, &[(53, &[1])]);
    let end = bad.iter().rposition(|&b| b == 255).unwrap();
    bad[end] = 0;
    n.f.from_guest(n.g3, &bad);
    assert_eq!(n.f.gateway_drops(DropReason::DhcpMalformed), 1);
    // A flood of DISCOVERs from one vif: one offer, then rate-limited — never more than
    // one lease for the vif.
    for i in 0..100 {
        n.f.from_guest(
            n.g3,
            &dhcp_frame(G3_MAC, 10 + i, Ipv4Addr::UNSPECIFIED, &[(53, &[1])]),
        );
    }
    let d = n.f.gateway.dhcp().unwrap();
    assert_eq!(d.leases().len(), 1);
    assert!(n.f.gateway_drops(DropReason::DhcpRateLimited) > 70);
    // Another vif is unaffected.
    n.f.from_guest(
        n.g2,
        &dhcp_frame(G2_MAC, 1, Ipv4Addr::UNSPECIFIED, &[(53, &[1])]),
    );
    assert_eq!(
        dhcp_reply(&dhcp_for(n.f.take_guest(n.g2), G2_MAC)).message_type,
        Some(MessageType::Offer)
    );
    n.f.assert_conservation();
}

#[test]
fn arp_and_ping_the_gateway() {
    let mut n = net();
    let mut b = vec![0u8; 64];
    let k = build::arp_request(&mut b, G2_MAC, G2, GW).unwrap();
    n.f.from_guest(n.g2, &b[..k]);
    let reply =
        n.f.take_guest(n.g2)
            .into_iter()
            .find(|f| {
                FrameInfo::parse(f)
                    .unwrap()
                    .arp()
                    .is_some_and(|a| a.sender_ip == GW)
            })
            .unwrap();
    let a = *FrameInfo::parse(&reply).unwrap().arp().unwrap();
    assert_eq!(
        (a.operation, a.sender_mac, a.target_ip),
        (ArpOperation::REPLY, GW_MAC, G2)
    );
    // An RFC 5227 probe for the gateway address is answered: the address is taken.
    let k = build::arp_request(&mut b, G3_MAC, Ipv4Addr::UNSPECIFIED, GW).unwrap();
    n.f.from_guest(n.g3, &b[..k]);
    let defended = n.f.take_guest(n.g3).into_iter().any(|f| {
        FrameInfo::parse(&f)
            .unwrap()
            .arp()
            .is_some_and(|a| a.sender_ip == GW && a.sender_mac == GW_MAC)
    });
    assert!(defended);
    n.f.from_guest(n.g2, &echo(G2_MAC, GW_MAC, G2, GW, 8, 77, 1));
    let r = one(n.f.take_guest_ip(n.g2));
    assert_eq!(ends(&r), (GW, 77, G2, 0));
    assert_eq!(r[34], 0, "echo reply");
    assert_eq!(&r[42..], b"abcdefgh");
    n.f.assert_conservation();
}

#[test]
fn nated_tcp_handshake_data_and_close() {
    let mut n = net();
    let syn = tcp(
        G1_MAC,
        GW_MAC,
        G1,
        SERVER,
        40000,
        80,
        100,
        0,
        TcpFlags::SYN,
        b"",
    );
    n.f.from_guest(n.g1, &syn);
    // Seen from outside: from dom0's uplink address, source port kept, via the router.
    let out = one(n.f.take_uplink_ip());
    assert_eq!(ends(&out), (EXT, 40000, SERVER, 80));
    assert_eq!(&out[0..12], &[ROUTER_MAC.0, UP_MAC.0].concat()[..]);
    assert_eq!(Ipv4Packet::new_checked(&out[14..]).unwrap().ttl(), 63);
    // SYN-ACK back.
    let v = n.f.from_uplink(&tcp(
        ROUTER_MAC,
        UP_MAC,
        SERVER,
        EXT,
        80,
        40000,
        500,
        101,
        TcpFlags::SYN | TcpFlags::ACK,
        b"",
    ));
    assert_eq!(v.action, GatewayAction::Forward(GatewaySide::Bridge));
    let inb = one(n.f.take_guest_ip(n.g1));
    assert_eq!(ends(&inb), (SERVER, 80, G1, 40000));
    assert_eq!(&inb[0..12], &[G1_MAC.0, GW_MAC.0].concat()[..]);
    // ACK + data both ways.
    n.f.from_guest(
        n.g1,
        &tcp(
            G1_MAC,
            GW_MAC,
            G1,
            SERVER,
            40000,
            80,
            101,
            501,
            TcpFlags::ACK,
            b"GET / HTTP/1.0\r\n\r\n",
        ),
    );
    let out = one(n.f.take_uplink_ip());
    assert_eq!(ends(&out), (EXT, 40000, SERVER, 80));
    assert!(out.ends_with(b"GET / HTTP/1.0\r\n\r\n"));
    let t = Tuple {
        proto: crate::wire::IpProtocol::TCP,
        src: G1,
        src_port: 40000,
        dst: SERVER,
        dst_port: 80,
    };
    let now = n.f.now();
    assert_eq!(
        n.f.gateway.nat_mut().lookup(&t, now).map(|(c, _)| c.state),
        Some(ProtoState::Tcp(TcpTrack {
            state: TcpState::Established,
            first_fin: None
        }))
    );
    n.f.from_uplink(&tcp(
        ROUTER_MAC,
        UP_MAC,
        SERVER,
        EXT,
        80,
        40000,
        501,
        119,
        TcpFlags::ACK | TcpFlags::PSH,
        b"HTTP/1.0 200 OK\r\n",
    ));
    assert!(one(n.f.take_guest_ip(n.g1)).ends_with(b"200 OK\r\n"));
    // Orderly close: FIN from the server, ACK, FIN from the guest, ACK.
    n.f.from_uplink(&tcp(
        ROUTER_MAC,
        UP_MAC,
        SERVER,
        EXT,
        80,
        40000,
        518,
        119,
        TcpFlags(0x11),
        b"",
    ));
    n.f.from_guest(
        n.g1,
        &tcp(
            G1_MAC,
            GW_MAC,
            G1,
            SERVER,
            40000,
            80,
            119,
            519,
            TcpFlags::ACK,
            b"",
        ),
    );
    n.f.from_guest(
        n.g1,
        &tcp(
            G1_MAC,
            GW_MAC,
            G1,
            SERVER,
            40000,
            80,
            119,
            519,
            TcpFlags(0x11),
            b"",
        ),
    );
    n.f.from_uplink(&tcp(
        ROUTER_MAC,
        UP_MAC,
        SERVER,
        EXT,
        80,
        40000,
        519,
        120,
        TcpFlags::ACK,
        b"",
    ));
    let now = n.f.now();
    let (c, _) = n.f.gateway.nat_mut().lookup(&t, now).unwrap();
    assert_eq!(
        c.state,
        ProtoState::Tcp(TcpTrack {
            state: TcpState::TimeWait,
            first_fin: Some(Dir::Reply)
        })
    );
    assert_eq!(c.expires, now + Duration::from_secs(120));
    assert_eq!(n.f.take_uplink_ip().len(), 2);
    assert_eq!(n.f.take_guest_ip(n.g1).len(), 2);
    // TIME_WAIT runs out.
    n.f.advance(Duration::from_secs(121));
    assert!(n.f.gateway.nat().table().is_empty());
    assert_eq!(n.f.gateway.nat_stats().established, 1);
    // A guest's ACK with no connection (its entry lost, e.g. to a restart) is picked
    // up mid-stream under the same external port, as Linux's nf_conntrack_tcp_loose;
    // it is not assured, and times out like a SYN, until the server answers.
    n.f.from_guest(
        n.g1,
        &tcp(
            G1_MAC,
            GW_MAC,
            G1,
            SERVER,
            40000,
            80,
            1,
            1,
            TcpFlags::ACK,
            b"",
        ),
    );
    assert_eq!(ends(&one(n.f.take_uplink_ip())), (EXT, 40000, SERVER, 80));
    assert_eq!(n.f.gateway.nat_stats().picked_up, 1);
    let now = n.f.now();
    let (c, _) = n.f.gateway.nat_mut().lookup(&t, now).unwrap();
    assert!(!c.is_assured());
    assert_eq!(c.expires, now + Duration::from_secs(120));
    n.f.from_uplink(&tcp(
        ROUTER_MAC,
        UP_MAC,
        SERVER,
        EXT,
        80,
        40000,
        1,
        2,
        TcpFlags::ACK,
        b"",
    ));
    assert_eq!(n.f.take_guest_ip(n.g1).len(), 1);
    let (c, _) = n.f.gateway.nat_mut().lookup(&t, now).unwrap();
    assert!(c.is_assured());
    assert_eq!(n.f.gateway.nat_stats().established, 2);
    // A stray RST, or a SYN-ACK, from the guest opens nothing.
    for flags in [TcpFlags::RST, TcpFlags::SYN | TcpFlags::ACK] {
        n.f.from_guest(
            n.g1,
            &tcp(G1_MAC, GW_MAC, G1, SERVER, 40001, 80, 1, 1, flags, b""),
        );
    }
    assert_eq!(n.f.gateway_drops(DropReason::ConntrackInvalid), 2);
    assert!(n.f.take_uplink_ip().is_empty());
    n.f.assert_conservation();
}

#[test]
fn gso_tcp_with_partial_checksum_is_translated() {
    let mut n = net();
    n.f.from_guest(
        n.g1,
        &tcp(
            G1_MAC,
            GW_MAC,
            G1,
            SERVER,
            40001,
            80,
            1,
            0,
            TcpFlags::SYN,
            b"",
        ),
    );
    n.f.from_uplink(&tcp(
        ROUTER_MAC,
        UP_MAC,
        SERVER,
        EXT,
        80,
        40001,
        9,
        2,
        TcpFlags(0x12),
        b"",
    ));
    n.f.take_uplink();
    let mut big = tcp(
        G1_MAC,
        GW_MAC,
        G1,
        SERVER,
        40001,
        80,
        2,
        10,
        TcpFlags::ACK,
        &[0x5a; 4000],
    );
    {
        let mut ip = Ipv4Packet::new_unchecked(&mut big[14..]);
        ip.set_frag(true, false, 0);
        ip.fill_checksum();
    }
    let ph =
        crate::wire::checksum::pseudo_header_v4(G1, SERVER, crate::wire::IpProtocol::TCP, 4020);
    big[50..52].copy_from_slice(&ph.to_be_bytes());
    let meta = FrameMeta {
        gso: Some(Gso {
            kind: GsoKind::TcpV4,
            size: 1448,
        }),
        csum_partial: true,
        data_validated: false,
    };
    n.f.from_guest_with_meta(n.g1, &big, meta);
    let out = one(n.f.take_uplink_ip());
    let expect =
        crate::wire::checksum::pseudo_header_v4(EXT, SERVER, crate::wire::IpProtocol::TCP, 4020);
    assert_eq!(
        &out[50..52],
        &expect.to_be_bytes(),
        "partial sum follows the new address"
    );
    assert!(Ipv4Packet::new_checked(&out[14..])
        .unwrap()
        .verify_checksum());
    n.f.assert_conservation();
}

#[test]
fn udp_and_icmp_echo_ids() {
    let mut n = net();
    n.f.from_guest(n.g1, &udp(G1_MAC, GW_MAC, G1, SERVER, 5353, 9999, b"hi"));
    assert_eq!(ends(&one(n.f.take_uplink_ip())), (EXT, 5353, SERVER, 9999));
    n.f.from_uplink(&udp(ROUTER_MAC, UP_MAC, SERVER, EXT, 9999, 5353, b"ho"));
    assert_eq!(
        ends(&one(n.f.take_guest_ip(n.g1))),
        (SERVER, 9999, G1, 5353)
    );
    // Two guests ping the same host with the same id: the second id is remapped.
    n.f.from_guest(n.g1, &echo(G1_MAC, GW_MAC, G1, SERVER, 8, 4242, 1));
    n.f.from_guest(n.g2, &echo(G2_MAC, GW_MAC, G2, SERVER, 8, 4242, 1));
    let out = n.f.take_uplink_ip();
    let (a, b) = (ends(&out[0]).1, ends(&out[1]).1);
    assert_eq!(a, 4242);
    assert_ne!(b, 4242);
    n.f.from_uplink(&echo(ROUTER_MAC, UP_MAC, SERVER, EXT, 0, b, 1));
    assert_eq!(ends(&one(n.f.take_guest_ip(n.g2))), (SERVER, 4242, G2, 0));
    n.f.from_uplink(&echo(ROUTER_MAC, UP_MAC, SERVER, EXT, 0, a, 1));
    assert_eq!(ends(&one(n.f.take_guest_ip(n.g1))), (SERVER, 4242, G1, 0));
    assert!(n.f.take_guest_ip(n.g2).is_empty());
    n.f.assert_conservation();
}

#[test]
fn icmp_port_unreachable_from_outside_is_translated_back() {
    let mut n = net();
    let probe = udp(G1_MAC, GW_MAC, G1, SERVER, 33000, 7, b"anyone?");
    n.f.from_guest(n.g1, &probe);
    let sent = one(n.f.take_uplink_ip());
    // The server's error quotes what it received (from EXT).
    let mut e = vec![0u8; 200];
    let k = build::icmpv4_error(
        &mut e,
        L2Header::new(UP_MAC, ROUTER_MAC),
        SERVER,
        3,
        3,
        0,
        &sent[14..],
    )
    .unwrap();
    let v = n.f.from_uplink(&e[..k]);
    assert_eq!(v.action, GatewayAction::Forward(GatewaySide::Bridge));
    let got = one(n.f.take_guest_ip(n.g1));
    let ip = Ipv4Packet::new_checked(&got[14..]).unwrap();
    assert!(ip.verify_checksum());
    assert_eq!((ip.src_addr(), ip.dst_addr()), (SERVER, G1));
    let icmp = Icmpv4Packet::new_checked(ip.payload()).unwrap();
    assert!(icmp.verify_checksum());
    assert_eq!((icmp.msg_type(), icmp.msg_code()), (3, 3));
    // The quote is the guest's own datagram again (TTL aside): addresses, ports, checksums.
    let inner = Ipv4Packet::new_checked(icmp.data()).unwrap();
    assert!(inner.verify_checksum());
    assert_eq!((inner.src_addr(), inner.dst_addr()), (G1, SERVER));
    let iu = UdpPacket::new_checked(inner.payload()).unwrap();
    assert_eq!((iu.src_port(), iu.dst_port()), (33000, 7));
    assert!(iu.verify_checksum_v4(G1, SERVER));
    assert_eq!(n.f.gateway.nat_stats().icmp_related, 1);
    // c3: an error whose inner source is not the outer destination, a nested error, or a
    // quote cut below 8 L4 bytes is not delivered.
    let mut forged = e[..k].to_vec();
    forged[34 + 8 + 12..34 + 8 + 16].copy_from_slice(&[198, 51, 100, 99]);
    fix_icmp(&mut forged);
    n.f.from_uplink(&forged);
    let short = build::icmpv4_error(
        &mut e,
        L2Header::new(UP_MAC, ROUTER_MAC),
        SERVER,
        3,
        3,
        0,
        &sent[14..14 + 24],
    )
    .unwrap();
    n.f.from_uplink(&e[..short]);
    assert!(n.f.take_guest_ip(n.g1).is_empty());
    n.f.assert_conservation();
}

fn fix_icmp(f: &mut [u8]) {
    f[36] = 0;
    f[37] = 0;
    let c = !crate::wire::checksum::data(&f[34..]);
    f[36..38].copy_from_slice(&c.to_be_bytes());
}

#[test]
fn port_forward_from_outside_and_hairpin() {
    let mut n = net();
    // Outside connects to EXT:8080 -> G1:80.
    n.f.from_uplink(&tcp(
        OUT_MAC,
        UP_MAC,
        OUT_IP,
        EXT,
        51000,
        8080,
        7,
        0,
        TcpFlags::SYN,
        b"",
    ));
    let got = one(n.f.take_guest_ip(n.g1));
    assert_eq!(ends(&got), (OUT_IP, 51000, G1, 80));
    n.f.from_guest(
        n.g1,
        &tcp(
            G1_MAC,
            GW_MAC,
            G1,
            OUT_IP,
            80,
            51000,
            70,
            8,
            TcpFlags(0x12),
            b"",
        ),
    );
    let out = one(n.f.take_uplink_ip());
    assert_eq!(ends(&out), (EXT, 8080, OUT_IP, 51000));
    assert_eq!(&out[0..6], &OUT_MAC.0, "on-link host, no router");
    assert_eq!(n.f.gateway.nat_stats().new_forward, 1);

    // (G1's MAC was unknown to the bridge when the first SYN arrived: flooded to all.)
    n.f.take_guest(n.g2);
    // Hairpin: G2 reaches EXT:8080 and lands on G1 from the gateway address.
    n.f.from_guest(
        n.g2,
        &tcp(
            G2_MAC,
            GW_MAC,
            G2,
            EXT,
            42000,
            8080,
            1,
            0,
            TcpFlags::SYN,
            b"",
        ),
    );
    let got = one(n.f.take_guest_ip(n.g1));
    let (s, sp, d, dp) = ends(&got);
    assert_eq!((s, d, dp), (GW, G1, 80));
    // G1 answers the gateway address; G2 sees the answer from EXT:8080.
    n.f.from_guest(
        n.g1,
        &tcp(G1_MAC, GW_MAC, G1, GW, 80, sp, 5, 2, TcpFlags(0x12), b""),
    );
    assert_eq!(ends(&one(n.f.take_guest_ip(n.g2))), (EXT, 8080, G2, 42000));
    assert!(n.f.take_uplink_ip().is_empty(), "hairpin never leaves");
    assert_eq!(n.f.gateway.nat_stats().new_hairpin, 1);
    // A port without a forward: rejected with port unreachable from the gateway.
    n.f.from_guest(n.g2, &udp(G2_MAC, GW_MAC, G2, EXT, 1, 9090, b"x"));
    let e = one(n.f.take_guest_ip(n.g2));
    assert_eq!((e[34], e[35]), (3, 3));
    assert_eq!(n.f.gateway_drops(DropReason::NatNoForward), 1);
    n.f.assert_conservation();
}

#[test]
fn port_shadowing_is_refused() {
    let mut n = net();
    // G2 opens a connection from source port 8080: masquerade must not hand it EXT:8080
    // (forwarded), so the forward cannot be shadowed.
    n.f.from_guest(
        n.g2,
        &tcp(
            G2_MAC,
            GW_MAC,
            G2,
            OUT_IP,
            8080,
            51000,
            1,
            0,
            TcpFlags::SYN,
            b"",
        ),
    );
    let (_, sp, _, _) = ends(&one(n.f.take_uplink_ip()));
    assert_ne!(sp, 8080);
    // G1 pre-creates the tuple a forward's reply would use: the DNAT is refused, not
    // hijacked (c6).
    n.f.from_guest(
        n.g1,
        &tcp(
            G1_MAC,
            GW_MAC,
            G1,
            OUT_IP,
            80,
            52000,
            1,
            0,
            TcpFlags::SYN,
            b"",
        ),
    );
    n.f.take_uplink();
    let v = n.f.from_uplink(&tcp(
        OUT_MAC,
        UP_MAC,
        OUT_IP,
        EXT,
        52000,
        8080,
        9,
        0,
        TcpFlags::SYN,
        b"",
    ));
    assert_eq!(v.action, GatewayAction::Drop(DropReason::NatClash));
    n.f.assert_conservation();
}

#[test]
fn ttl_one_gets_time_exceeded_from_the_gateway() {
    let mut n = net();
    let mut f = udp(G1_MAC, GW_MAC, G1, SERVER, 33434, 33434, b"trace");
    set_ttl(&mut f, 1);
    n.f.from_guest(n.g1, &f);
    let e = one(n.f.take_guest_ip(n.g1));
    let ip = Ipv4Packet::new_checked(&e[14..]).unwrap();
    assert_eq!((ip.src_addr(), ip.dst_addr()), (GW, G1));
    let icmp = Icmpv4Packet::new_checked(ip.payload()).unwrap();
    assert_eq!((icmp.msg_type(), icmp.msg_code()), (11, 0));
    assert_eq!(icmp.data(), &f[14..]);
    assert!(n.f.take_uplink_ip().is_empty());
    assert!(
        n.f.gateway.nat().table().is_empty(),
        "no connection for a dropped packet"
    );
    // Inbound with TTL 1 for a NAT connection: time exceeded from the external address.
    n.f.from_guest(n.g1, &udp(G1_MAC, GW_MAC, G1, SERVER, 5000, 53, b"q"));
    n.f.take_uplink();
    let mut r = udp(ROUTER_MAC, UP_MAC, SERVER, EXT, 53, 5000, b"a");
    set_ttl(&mut r, 1);
    n.f.from_uplink(&r);
    let e = one(n.f.take_uplink_ip());
    let ip = Ipv4Packet::new_checked(&e[14..]).unwrap();
    assert_eq!((ip.src_addr(), ip.dst_addr(), e[34]), (EXT, SERVER, 11));
    n.f.assert_conservation();
}

#[test]
fn frag_needed_and_fragmentation_to_the_uplink() {
    let mut c = config();
    c.uplink_mtu = 1400;
    let mut n = net_with(c);
    let mut f = udp(G1_MAC, GW_MAC, G1, SERVER, 6000, 6001, &[1u8; 1472]);
    {
        let mut ip = Ipv4Packet::new_unchecked(&mut f[14..]);
        ip.set_frag(true, false, 0);
        ip.fill_checksum();
    }
    n.f.from_guest(n.g1, &f);
    let e = one(n.f.take_guest_ip(n.g1));
    let icmp = Icmpv4Packet::new_checked(&e[34..]).unwrap();
    assert_eq!(
        (icmp.msg_type(), icmp.msg_code(), icmp.rest_of_header()),
        (3, 4, 1400)
    );
    assert_eq!(&e[26..30], &GW.octets());
    // Without DF: NATed then fragmented; both fragments carry the external address.
    // (The router's MAC must be known: an oversized first packet to an unresolved next
    // hop is not queued.)
    n.f.from_guest(n.g1, &udp(G1_MAC, GW_MAC, G1, SERVER, 6000, 6001, b"warm"));
    n.f.take_uplink();
    let f = udp(G1_MAC, GW_MAC, G1, SERVER, 6000, 6001, &[1u8; 1472]);
    n.f.from_guest(n.g1, &f);
    let frags = n.f.take_uplink_ip();
    assert_eq!(frags.len(), 2);
    for fr in &frags {
        let ip = Ipv4Packet::new_checked(&fr[14..]).unwrap();
        assert!(ip.verify_checksum() && ip.src_addr() == EXT && fr.len() - 14 <= 1400);
    }
    n.f.assert_conservation();
}

#[test]
fn fragments_from_a_guest_follow_their_first_fragment() {
    let mut n = net();
    let whole = udp(G1_MAC, GW_MAC, G1, SERVER, 7000, 7001, &[9u8; 2000]);
    let info = FrameInfo::parse(&whole).unwrap();
    let mut fr = crate::router::Fragmenter::new(&whole, &info, 1500).unwrap();
    let mut pieces = Vec::new();
    let mut buf = [0u8; 1600];
    while let Some(r) = fr.next_fragment(&whole, &mut buf) {
        pieces.push(buf[..r.unwrap()].to_vec());
    }
    // The second fragment first: nobody knows its connection yet.
    n.f.from_guest(n.g1, &pieces[1]);
    assert_eq!(n.f.gateway_drops(DropReason::FragmentNoFlow), 1);
    n.f.from_guest(n.g1, &pieces[0]);
    n.f.from_guest(n.g1, &pieces[1]);
    let out = n.f.take_uplink_ip();
    assert_eq!(out.len(), 2);
    for o in &out {
        let ip = Ipv4Packet::new_checked(&o[14..]).unwrap();
        assert!(ip.verify_checksum());
        assert_eq!(ip.src_addr(), EXT);
    }
    // Reassembled, the datagram's UDP checksum is valid for the new source.
    let mut payload = Ipv4Packet::new_checked(&out[0][14..])
        .unwrap()
        .payload()
        .to_vec();
    payload.extend_from_slice(Ipv4Packet::new_checked(&out[1][14..]).unwrap().payload());
    assert!(UdpPacket::new_checked(&payload[..])
        .unwrap()
        .verify_checksum_v4(EXT, SERVER));
    n.f.assert_conservation();
}

#[test]
fn conntrack_full_and_zone_limit_leave_others_working() {
    let mut c = config();
    c.nat.max_connections = 4;
    c.nat.max_per_guest = 3;
    let mut n = net_with(c);
    // G2 has an established UDP flow.
    n.f.from_guest(n.g2, &udp(G2_MAC, GW_MAC, G2, SERVER, 1111, 53, b"q"));
    n.f.from_uplink(&udp(ROUTER_MAC, UP_MAC, SERVER, EXT, 53, 1111, b"a"));
    // G1 opens three, all answered (assured); the fourth hits its zone limit.
    for p in 0..4u16 {
        n.f.from_guest(n.g1, &udp(G1_MAC, GW_MAC, G1, SERVER, 2000 + p, 53, b"q"));
        n.f.from_uplink(&udp(ROUTER_MAC, UP_MAC, SERVER, EXT, 53, 2000 + p, b"a"));
    }
    assert_eq!(n.f.gateway_drops(DropReason::ConntrackZoneFull), 1);
    // The table is full of assured connections: G3's new one is refused.
    n.f.from_guest(
        n.g3,
        &udp(
            G3_MAC,
            GW_MAC,
            Ipv4Addr::new(192, 168, 122, 70),
            SERVER,
            3000,
            53,
            b"q",
        ),
    );
    assert_eq!(n.f.gateway_drops(DropReason::ConntrackFull), 1);
    // Established flows still work.
    n.f.take_guest_ip(n.g2);
    n.f.from_uplink(&udp(ROUTER_MAC, UP_MAC, SERVER, EXT, 53, 1111, b"again"));
    assert_eq!(one(n.f.take_guest_ip(n.g2)).len(), 42 + 5);
    n.f.assert_conservation();
}

#[test]
fn port_exhaustion_is_counted_and_isolated() {
    let mut c = config();
    c.nat.port_range = PortRange::new(1024, 1025).unwrap();
    let mut n = net_with(c);
    for p in 0..3u16 {
        n.f.from_guest(
            n.g1,
            &tcp(
                G1_MAC,
                GW_MAC,
                G1,
                SERVER,
                40000 + p,
                443,
                1,
                0,
                TcpFlags::SYN,
                b"",
            ),
        );
    }
    let out = n.f.take_uplink_ip();
    assert_eq!(out.len(), 2);
    let ports: Vec<u16> = out.iter().map(|f| ends(f).1).collect();
    assert!(ports.contains(&1024) && ports.contains(&1025));
    assert_eq!(n.f.gateway_drops(DropReason::NatPortExhausted), 1);
    assert_eq!(n.f.gateway.nat_stats().no_port, 1);
    // Another destination still has both ports free.
    n.f.from_guest(
        n.g2,
        &tcp(
            G2_MAC,
            GW_MAC,
            G2,
            OUT_IP,
            40000,
            443,
            1,
            0,
            TcpFlags::SYN,
            b"",
        ),
    );
    assert_eq!(ends(&one(n.f.take_uplink_ip())).0, EXT);
    n.f.assert_conservation();
}

#[test]
fn multicast_broadcast_and_foreign_sources_are_never_masqueraded() {
    let mut n = net();
    n.f.from_guest(
        n.g2,
        &udp(
            G2_MAC,
            MacAddr([0x01, 0, 0x5e, 0x7f, 0xff, 0xfa]),
            G2,
            Ipv4Addr::new(239, 255, 255, 250),
            1900,
            1900,
            b"M-SEARCH",
        ),
    );
    n.f.from_guest(
        n.g2,
        &udp(
            G2_MAC,
            MacAddr::BROADCAST,
            G2,
            Ipv4Addr::BROADCAST,
            137,
            137,
            b"nb",
        ),
    );
    n.f.from_guest(
        n.g2,
        &udp(
            G2_MAC,
            GW_MAC,
            G2,
            Ipv4Addr::new(224, 0, 0, 251),
            5353,
            5353,
            b"mdns",
        ),
    );
    n.f.from_guest(
        n.g2,
        &udp(
            G2_MAC,
            GW_MAC,
            G2,
            Ipv4Addr::new(169, 254, 1, 1),
            1,
            2,
            b"ll",
        ),
    );
    n.f.from_guest(
        n.g2,
        &udp(
            G2_MAC,
            GW_MAC,
            G2,
            Ipv4Addr::new(192, 168, 122, 255),
            1,
            2,
            b"bc",
        ),
    );
    n.f.from_guest(
        n.g2,
        &udp(
            G2_MAC,
            GW_MAC,
            Ipv4Addr::new(10, 9, 9, 9),
            SERVER,
            1,
            2,
            b"spoof",
        ),
    );
    assert!(n
        .f
        .take_uplink()
        .iter()
        .all(|f| FrameInfo::parse(f).unwrap().ipv4().is_none()));
    assert!(n.f.gateway_drops(DropReason::NotRoutable) >= 5);
    assert_eq!(n.f.gateway_drops(DropReason::SpoofedSourceIp), 1);
    // dom0's own traffic on the uplink is left alone.
    let v = n.f.from_uplink(&tcp(
        OUT_MAC,
        UP_MAC,
        OUT_IP,
        EXT,
        5555,
        22,
        1,
        0,
        TcpFlags::SYN,
        b"",
    ));
    assert_eq!(v.action, GatewayAction::Drop(DropReason::OtherHost));
    n.f.assert_conservation();
}

#[test]
fn guest_to_guest_through_the_gateway_and_gateway_services() {
    let mut n = net();
    // Sent to the gateway MAC but for another guest: routed back into the bridge.
    n.f.from_guest(n.g2, &udp(G2_MAC, GW_MAC, G2, G1, 1, 2, b"hi"));
    let got = one(n.f.take_guest_ip(n.g1));
    assert_eq!(ends(&got), (G2, 1, G1, 2));
    assert_eq!(&got[0..12], &[G1_MAC.0, GW_MAC.0].concat()[..]);
    n.f.take_guest(n.g2); // the bridge flooded that frame while G1's MAC was unknown
                          // UDP to a closed gateway port: port unreachable; TCP: RST.
    n.f.from_guest(n.g2, &udp(G2_MAC, GW_MAC, G2, GW, 4000, 9, b"discard"));
    let e = one(n.f.take_guest_ip(n.g2));
    assert_eq!((e[34], e[35]), (3, 3));
    n.f.from_guest(
        n.g2,
        &tcp(
            G2_MAC,
            GW_MAC,
            G2,
            GW,
            4001,
            22,
            1000,
            0,
            TcpFlags::SYN,
            b"",
        ),
    );
    let rst = one(n.f.take_guest_ip(n.g2));
    let t = TcpPacket::new_checked(&rst[34..]).unwrap();
    assert_eq!(
        (t.src_port(), t.dst_port(), t.flags(), t.ack_number()),
        (22, 4001, TcpFlags::RST | TcpFlags::ACK, 1001)
    );
    assert!(t.verify_checksum_v4(GW, G2));
    n.f.assert_conservation();
}

#[test]
fn dns_is_forwarded_to_dom0s_resolver() {
    let mut n = net();
    let mut q = 0x4242u16.to_be_bytes().to_vec();
    q.extend_from_slice(&[1, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    q.extend_from_slice(b"\x06debian\x03org\x00\x00\x01\x00\x01");
    n.f.from_guest(n.g2, &udp(G2_MAC, GW_MAC, G2, GW, 45000, 53, &q));
    let (server, sent) = n.f.take_dns().remove(0);
    assert_eq!(server, dns_upstream());
    assert_eq!(&sent[2..], &q[2..]);
    let mut a = sent.clone();
    a[2] = 0x81;
    a[3] = 0x80;
    assert!(n.f.dns_answer(dns_upstream(), &a));
    let r = one(n.f.take_guest_ip(n.g2));
    assert_eq!(ends(&r), (GW, 53, G2, 45000));
    assert_eq!(&r[42..44], &[0x42, 0x42]);
    assert!(!n.f.dns_answer(dns_upstream(), &a), "no second delivery");
    n.f.assert_conservation();
}

#[test]
fn idle_udp_expires_and_its_port_is_reused() {
    let mut c = config();
    c.nat.port_range = PortRange::new(2000, 2000).unwrap();
    let mut n = net_with(c);
    n.f.from_guest(n.g1, &udp(G1_MAC, GW_MAC, G1, SERVER, 1, 53, b"q"));
    assert_eq!(ends(&one(n.f.take_uplink_ip())).1, 2000);
    n.f.from_guest(n.g2, &udp(G2_MAC, GW_MAC, G2, SERVER, 1, 53, b"q"));
    assert_eq!(n.f.gateway_drops(DropReason::NatPortExhausted), 1);
    n.f.advance(Duration::from_secs(31));
    n.f.from_guest(n.g2, &udp(G2_MAC, GW_MAC, G2, SERVER, 1, 53, b"q"));
    assert_eq!(ends(&one(n.f.take_uplink_ip())), (EXT, 2000, SERVER, 53));
    n.f.assert_conservation();
}

#[test]
fn guest_icmp_errors_and_inbound_fragments_are_translated() {
    let mut c = config();
    c.nat
        .forwards
        .push("udp:5353:192.168.122.50:53".parse().unwrap());
    let mut n = net_with(c);
    // Outside -> EXT:5353 -> G1:53; G1's port is closed and it says so.
    n.f.from_uplink(&udp(OUT_MAC, UP_MAC, OUT_IP, EXT, 40404, 5353, b"query"));
    let got = one(n.f.take_guest_ip(n.g1));
    assert_eq!(ends(&got), (OUT_IP, 40404, G1, 53));
    let mut e = vec![0u8; 200];
    let k = build::icmpv4_error(
        &mut e,
        L2Header::new(GW_MAC, G1_MAC),
        G1,
        3,
        3,
        0,
        &got[14..],
    )
    .unwrap();
    n.f.from_guest(n.g1, &e[..k]);
    let out = one(n.f.take_uplink_ip());
    let ip = Ipv4Packet::new_checked(&out[14..]).unwrap();
    assert!(ip.verify_checksum());
    assert_eq!((ip.src_addr(), ip.dst_addr()), (EXT, OUT_IP));
    let icmp = Icmpv4Packet::new_checked(ip.payload()).unwrap();
    assert!(icmp.verify_checksum());
    let inner = Ipv4Packet::new_checked(icmp.data()).unwrap();
    assert!(inner.verify_checksum());
    assert_eq!((inner.src_addr(), inner.dst_addr()), (OUT_IP, EXT));
    let iu = UdpPacket::new_checked(inner.payload()).unwrap();
    assert_eq!((iu.src_port(), iu.dst_port()), (40404, 5353));
    assert!(iu.verify_checksum_v4(OUT_IP, EXT));
    // A guest error about nothing NAT knows is refused.
    let stray = udp(OUT_MAC, UP_MAC, OUT_IP, G1, 1, 2, b"?");
    let k = build::icmpv4_error(
        &mut e,
        L2Header::new(GW_MAC, G1_MAC),
        G1,
        3,
        3,
        0,
        &stray[14..],
    )
    .unwrap();
    n.f.from_guest(n.g1, &e[..k]);
    assert_eq!(n.f.gateway_drops(DropReason::IcmpErrorInvalid), 1);

    // A fragmented answer from outside follows its first fragment in.
    n.f.from_guest(n.g1, &udp(G1_MAC, GW_MAC, G1, SERVER, 7100, 53, b"q"));
    let (_, nport, _, _) = ends(&one(n.f.take_uplink_ip()));
    let whole = udp(ROUTER_MAC, UP_MAC, SERVER, EXT, 53, nport, &[3u8; 2500]);
    let info = FrameInfo::parse(&whole).unwrap();
    let mut fr = crate::router::Fragmenter::new(&whole, &info, 1500).unwrap();
    let mut buf = [0u8; 1600];
    while let Some(r) = fr.next_fragment(&whole, &mut buf) {
        let piece = buf[..r.unwrap()].to_vec();
        n.f.from_uplink(&piece);
    }
    let got = n.f.take_guest_ip(n.g1);
    assert_eq!(got.len(), 2);
    let mut payload = Vec::new();
    for g in &got {
        let ip = Ipv4Packet::new_checked(&g[14..]).unwrap();
        assert!(ip.verify_checksum());
        assert_eq!(ip.dst_addr(), G1);
        payload.extend_from_slice(ip.payload());
    }
    let u = UdpPacket::new_checked(&payload[..]).unwrap();
    assert_eq!(u.dst_port(), 7100);
    assert!(u.verify_checksum_v4(SERVER, G1));
    assert_eq!(n.f.gateway.nat_stats().fragments, 1);
    n.f.assert_conservation();
}

#[test]
fn a_reset_as_the_only_answer_leaves_no_entry() {
    let mut n = net();
    let syn = tcp(
        G1_MAC,
        GW_MAC,
        G1,
        SERVER,
        41000,
        80,
        1,
        0,
        TcpFlags::SYN,
        b"",
    );
    n.f.from_guest(n.g1, &syn);
    let ext_port = ends(&one(n.f.take_uplink_ip())).1;
    assert_eq!(n.f.gateway.nat_mut().table().len(), 1);
    let rst = tcp(
        ROUTER_MAC,
        UP_MAC,
        SERVER,
        EXT,
        80,
        ext_port,
        0,
        2,
        TcpFlags::RST | TcpFlags::ACK,
        b"",
    );
    n.f.from_uplink(&rst);
    assert_eq!(
        ends(&one(n.f.take_guest_ip(n.g1))).3,
        41000,
        "the RST reaches the guest"
    );
    assert_eq!(n.f.gateway.nat_mut().table().len(), 0, "refused: no entry");
    assert_eq!(n.f.gateway.nat_mut().table().stats().refused, 1);
    // A second reset finds nothing to translate and is not the guest's business.
    n.f.from_uplink(&rst);
    assert!(n.f.take_guest_ip(n.g1).is_empty());
    // The guest's retry opens a fresh connection.
    n.f.from_guest(n.g1, &syn);
    assert_eq!(one(n.f.take_uplink_ip()).len(), syn.len());
    assert_eq!(n.f.gateway.nat_mut().table().len(), 1);
    // A blind reset (not acknowledging the SYN) neither closes nor removes it: the
    // server's real answer still reaches the guest.
    let from_server = |ack: u32, flags: TcpFlags| {
        tcp(
            ROUTER_MAC, UP_MAC, SERVER, EXT, 80, ext_port, 0, ack, flags, b"",
        )
    };
    n.f.from_uplink(&from_server(99, TcpFlags::RST | TcpFlags::ACK));
    assert_eq!(n.f.take_guest_ip(n.g1).len(), 1, "passed on");
    assert_eq!(
        n.f.gateway.nat_mut().table().len(),
        1,
        "blind reset ignored"
    );
    n.f.from_uplink(&from_server(2, TcpFlags::SYN | TcpFlags::ACK));
    assert_eq!(
        n.f.take_guest_ip(n.g1).len(),
        1,
        "the SYN-ACK is translated"
    );
    assert_eq!(n.f.gateway.nat_mut().table().stats().refused, 1);
    n.f.assert_conservation();
    // The guest giving up before any answer removes the entry too.
    let mut n = net();
    n.f.from_guest(n.g1, &syn);
    let _ = n.f.take_uplink_ip();
    n.f.from_guest(
        n.g1,
        &tcp(
            G1_MAC,
            GW_MAC,
            G1,
            SERVER,
            41000,
            80,
            2,
            0,
            TcpFlags::RST,
            b"",
        ),
    );
    assert_eq!(n.f.take_uplink_ip().len(), 1);
    assert_eq!(n.f.gateway.nat_mut().table().len(), 0);
    n.f.assert_conservation();
}

#[test]
fn rst_closes_and_a_new_syn_reopens() {
    let mut n = net();
    n.f.from_guest(
        n.g1,
        &tcp(
            G1_MAC,
            GW_MAC,
            G1,
            SERVER,
            41000,
            80,
            1,
            0,
            TcpFlags::SYN,
            b"",
        ),
    );
    // The server answered once, so the connection existed: a reset closes it and the
    // entry stays in CLOSE.
    n.f.from_uplink(&tcp(
        ROUTER_MAC,
        UP_MAC,
        SERVER,
        EXT,
        80,
        41000,
        0,
        2,
        TcpFlags::SYN | TcpFlags::ACK,
        b"",
    ));
    assert_eq!(n.f.take_guest_ip(n.g1).len(), 1);
    n.f.from_uplink(&tcp(
        ROUTER_MAC,
        UP_MAC,
        SERVER,
        EXT,
        80,
        41000,
        0,
        2,
        TcpFlags::RST | TcpFlags::ACK,
        b"",
    ));
    assert_eq!(
        ends(&one(n.f.take_guest_ip(n.g1))).3,
        41000,
        "the RST reaches the guest"
    );
    let t = Tuple {
        proto: crate::wire::IpProtocol::TCP,
        src: G1,
        src_port: 41000,
        dst: SERVER,
        dst_port: 80,
    };
    let now = n.f.now();
    let (c, _) = n.f.gateway.nat_mut().lookup(&t, now).unwrap();
    assert!(matches!(
        c.state,
        ProtoState::Tcp(TcpTrack {
            state: TcpState::Close,
            ..
        })
    ));
    assert_eq!(c.expires, now + Duration::from_secs(10));
    // Invalid flags are dropped, the connection is untouched.
    n.f.from_guest(
        n.g1,
        &tcp(
            G1_MAC,
            GW_MAC,
            G1,
            SERVER,
            41000,
            80,
            1,
            0,
            TcpFlags(0x03),
            b"",
        ),
    );
    assert_eq!(n.f.gateway_drops(DropReason::ConntrackInvalid), 1);
    n.f.from_guest(
        n.g1,
        &tcp(
            G1_MAC,
            GW_MAC,
            G1,
            SERVER,
            41000,
            80,
            9,
            0,
            TcpFlags::SYN,
            b"",
        ),
    );
    let (c, _) = n.f.gateway.nat_mut().lookup(&t, now).unwrap();
    assert!(matches!(
        c.state,
        ProtoState::Tcp(TcpTrack {
            state: TcpState::SynSent,
            ..
        })
    ));
    n.f.assert_conservation();
}

#[test]
fn ports_are_found_beside_a_block_of_kept_ports() {
    // Guests keep their own source ports when free, so one busy guest leaves a long
    // contiguous block of used ports (its ephemeral range). Another guest whose ports
    // collide must be moved elsewhere: probing consecutive ports from a random start
    // that falls inside the block never gets out of it; random probes do.
    let mut c = NatConfig::new(EXT, "192.168.122.0/24".parse().unwrap(), GW);
    c.port_range = PortRange::new(1024, 3071).unwrap();
    c.max_connections = 4096;
    c.max_per_guest = 4096;
    let mut nat = Nat::new(c).unwrap();
    let now = Timestamp::ZERO;
    let mut seen = std::collections::HashSet::new();
    let g2 = Ipv4Addr::new(192, 168, 122, 60);
    for (guest, mac, count) in [(G1, G1_MAC, 1500u16), (g2, G2_MAC, 400)] {
        for i in 0..count {
            let mut f = tcp(
                mac,
                GW_MAC,
                guest,
                SERVER,
                1024 + i,
                443,
                1,
                0,
                TcpFlags::SYN,
                b"",
            );
            let info = FrameInfo::parse(&f).unwrap();
            let v = nat.outbound(&mut f, &info, &FrameMeta::default(), now);
            assert_eq!(v, NatVerdict::ToUplink, "{guest} port {}", 1024 + i);
            let p = ends(&f).1;
            assert!((1024..=3071).contains(&p));
            assert!(seen.insert(p), "port {p} given twice");
            if guest == G1 {
                assert_eq!(p, 1024 + i, "a free source port is kept");
            }
        }
    }
    assert_eq!(nat.stats().no_port, 0);
}

#[test]
fn a_restarted_nat_with_the_same_key_picks_a_connection_up_under_its_old_port() {
    // The guest's port is not allowed (dom0's ephemeral range is excluded), so the
    // external port is chosen: from the key and the tuple, the same both times.
    let mut c = NatConfig::new(EXT, "192.168.122.0/24".parse().unwrap(), GW);
    c.excluded_ports = vec![PortRange::new(32768, 60999).unwrap()];
    let now = Timestamp::ZERO;
    let out_port = |nat: &mut Nat, flags: TcpFlags| {
        let mut f = tcp(G1_MAC, GW_MAC, G1, SERVER, 40000, 443, 1, 0, flags, b"");
        let info = FrameInfo::parse(&f).unwrap();
        let v = nat.outbound(&mut f, &info, &FrameMeta::default(), now);
        assert_eq!(v, NatVerdict::ToUplink);
        ends(&f).1
    };
    let before = out_port(&mut Nat::new(c.clone()).unwrap(), TcpFlags::SYN);
    assert!(!(32768..=60999).contains(&before), "{before}");
    let mut restarted = Nat::new(c.clone()).unwrap();
    assert_eq!(out_port(&mut restarted, TcpFlags::ACK), before);
    assert_eq!(restarted.stats().picked_up, 1);
    // Another key (another network, or one that was not kept) chooses differently.
    let moved = (1..=8u64).any(|k| {
        let mut other = c.clone();
        other.port_key = c.port_key ^ k;
        out_port(&mut Nat::new(other).unwrap(), TcpFlags::SYN) != before
    });
    assert!(moved);
}

fn nat() -> Nat {
    Nat::new(NatConfig::new(EXT, "192.168.122.0/24".parse().unwrap(), GW)).unwrap()
}

proptest! {
    /// For any guest TCP/UDP/ICMP packet: out through NAT, a reply built by swapping the
    /// translated packet's ends, in through NAT — the reply arrives at exactly the
    /// original sender, with every checksum valid, and the outbound bytes differ from the
    /// original only in the NATed fields.
    #[test]
    fn nat_round_trip_restores_the_tuple(
        host in 2u8..254, sp in 1u16.., dst in any::<u32>(), dp in 1u16.., kind in 0u8..3,
        payload in proptest::collection::vec(any::<u8>(), 0..40),
    ) {
        let dst = Ipv4Addr::from(dst);
        prop_assume!(!dst.is_multicast() && !dst.is_broadcast() && !dst.is_link_local()
            && !crate::router::is_martian_destination(dst) && dst != EXT
            && !Ipv4Cidr::new(Ipv4Addr::new(192, 168, 122, 0), 24).unwrap().contains(dst));
        let g = Ipv4Addr::new(192, 168, 122, host);
        let mut nat = nat();
        let now = Timestamp::ZERO;
        let orig = match kind {
            0 => tcp(G1_MAC, GW_MAC, g, dst, sp, dp, 1, 0, TcpFlags::SYN, &payload),
            1 => udp(G1_MAC, GW_MAC, g, dst, sp, dp, &payload),
            _ => echo(G1_MAC, GW_MAC, g, dst, 8, sp, 1),
        };
        let mut f = orig.clone();
        let info = FrameInfo::parse(&f).unwrap();
        prop_assert_eq!(nat.outbound(&mut f, &info, &FrameMeta::default(), now), NatVerdict::ToUplink);
        let (s2, sp2, d2, dp2) = ends(&f);
        prop_assert_eq!((s2, d2), (EXT, dst));
        if kind != 2 { prop_assert_eq!(dp2, dp); }
        // Only the source address/port (id) and checksums changed.
        prop_assert_eq!(&f[0..26], &orig[0..26].iter().enumerate().map(|(i, &b)| if (24..26).contains(&i) { f[i] } else { b }).collect::<Vec<_>>()[..]);
        // The reply.
        let mut r = match kind {
            0 => tcp(ROUTER_MAC, UP_MAC, dst, EXT, dp2, sp2, 1, 2, TcpFlags(0x12), &payload),
            1 => udp(ROUTER_MAC, UP_MAC, dst, EXT, dp2, sp2, &payload),
            _ => echo(ROUTER_MAC, UP_MAC, dst, EXT, 0, sp2, 1),
        };
        let info = FrameInfo::parse(&r).unwrap();
        prop_assert_eq!(nat.inbound(&mut r, &info, &FrameMeta::default(), now), NatVerdict::ToGuests);
        let (s3, sp3, d3, dp3) = ends(&r);
        prop_assert_eq!((s3, d3), (dst, g));
        if kind == 2 { prop_assert_eq!(sp3, sp); } else { prop_assert_eq!((sp3, dp3), (dp, sp)); }
        // The same guest packet again maps the same way (the connection is reused).
        let mut again = orig.clone();
        let info = FrameInfo::parse(&again).unwrap();
        let v = nat.outbound(&mut again, &info, &FrameMeta::default(), now);
        if kind == 0 {
            // A second SYN in SYN_RECV is accepted as a retransmission.
            prop_assert_eq!(v, NatVerdict::ToUplink);
        }
        prop_assert_eq!(again, f);
    }

    /// Arbitrary frames from either side never panic NAT, and whatever it translates
    /// keeps a valid IP header checksum.
    #[test]
    fn nat_never_panics(bytes in proptest::collection::vec(any::<u8>(), 14..200), inbound in any::<bool>(), steer in any::<bool>()) {
        let mut nat = nat();
        let mut b = bytes;
        if steer && b.len() >= 34 {
            b[12] = 8; b[13] = 0; b[14] = 0x45;
            let tl = (b.len() - 14) as u16;
            b[16..18].copy_from_slice(&tl.to_be_bytes());
            b[20] &= 0x1f;
            if inbound { b[30..34].copy_from_slice(&EXT.octets()); } else { b[26..29].copy_from_slice(&[192, 168, 122]); }
            Ipv4Packet::new_unchecked(&mut b[14..]).fill_checksum();
        }
        let info = FrameInfo::parse(&b).unwrap();
        let v = if inbound {
            nat.inbound(&mut b, &info, &FrameMeta::default(), Timestamp::ZERO)
        } else {
            nat.outbound(&mut b, &info, &FrameMeta::default(), Timestamp::ZERO)
        };
        if matches!(v, NatVerdict::ToGuests | NatVerdict::ToUplink) {
            prop_assert!(Ipv4Packet::new_checked(&b[14..]).unwrap().verify_checksum());
        }
    }

    /// The gateway never panics and always conserves, whatever either side sends.
    #[test]
    fn gateway_never_panics_and_conserves(
        frames in proptest::collection::vec((any::<bool>(), proptest::collection::vec(any::<u8>(), 14..160)), 1..20),
    ) {
        let mut n = net();
        for (from_up, mut b) in frames {
            if b.len() >= 34 {
                b[12] = 8; b[13] = 0; b[14] = 0x45;
                let tl = (b.len() - 14) as u16;
                b[16..18].copy_from_slice(&tl.to_be_bytes());
                Ipv4Packet::new_unchecked(&mut b[14..]).fill_checksum();
            }
            if from_up {
                b[0..6].copy_from_slice(&UP_MAC.0);
                n.f.from_uplink(&b);
            } else {
                b[0..6].copy_from_slice(&GW_MAC.0);
                b[6..12].copy_from_slice(&G3_MAC.0);
                n.f.from_guest(n.g3, &b);
            }
        }
        n.f.assert_conservation();
    }
}
