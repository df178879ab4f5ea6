//! Route-mode rules on the in-memory fabric; each test ends with the conservation check.

use core::time::Duration;
use std::net::Ipv4Addr;

use proptest::prelude::*;

use super::harness::RouteFabric;
use super::*;
use crate::meta::{Gso, GsoKind};
use crate::wire::build::{self, L2Header, TcpSegment};
use crate::wire::icmpv4::Icmpv4Packet;
use crate::wire::tcp::TcpPacket;
use crate::wire::udp::UdpPacket;
use crate::wire::{ArpOperation, ArpRepr, EtherType, TcpFlags};

const DOM0: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const UP_MAC: MacAddr = MacAddr([0x52, 0x54, 0, 0, 0, 0x01]);
const HOST_MAC: MacAddr = MacAddr([0xfe, 0xff, 0xff, 0xff, 0xff, 0xfe]);
const DOM0_TAP_MAC: MacAddr = MacAddr([0x52, 0x54, 0, 0, 0, 0xd0]);
const G1_MAC: MacAddr = MacAddr([0x00, 0x16, 0x3e, 0, 0, 1]);
const G2_MAC: MacAddr = MacAddr([0x00, 0x16, 0x3e, 0, 0, 2]);
const G1_IP: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 5);
const G2_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 20);
const GW_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 254);
const GW_MAC: MacAddr = MacAddr([0x52, 0x54, 0, 0, 0, 0xfe]);
const OUT_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
const OUT_MAC: MacAddr = MacAddr([0x52, 0x54, 0, 0, 0, 0x07]);
const FAR_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 9);

struct Net {
    f: RouteFabric,
    up: PortId,
    host: PortId,
    v1: PortId,
    v2: PortId,
}

/// dom0 198.51.100.1 on the uplink (198.51.100.0/24, default via .254); a host port; vif1
/// with ip=10.1.0.5, vif2 with ip=198.51.100.20 (inside the uplink's subnet: reachable by
/// proxy ARP).
fn net() -> Net {
    let mut f = RouteFabric::new(RouterConfig::new(DOM0));
    let up = f.add_port(RouterPortConfig::uplink("eth0", UP_MAC));
    let host = f.add_port(RouterPortConfig::host(
        "domnet0",
        HOST_MAC,
        Some(DOM0_TAP_MAC),
    ));
    let v1 = f.add_port(RouterPortConfig::routed_vif(
        "vif1.0",
        G1_MAC,
        vec![Ipv4Cidr::host(G1_IP)],
    ));
    let v2 = f.add_port(RouterPortConfig::routed_vif(
        "vif2.0",
        G2_MAC,
        vec![Ipv4Cidr::host(G2_IP)],
    ));
    f.router.add_route(Route {
        dest: "198.51.100.0/24".parse().unwrap(),
        next_hop: NextHop::OnLink(up),
    });
    f.router.add_route(Route {
        dest: "0.0.0.0/0".parse().unwrap(),
        next_hop: NextHop::Gateway(up, GW_IP),
    });
    Net {
        f,
        up,
        host,
        v1,
        v2,
    }
}

fn arp(src_mac: MacAddr, op: ArpOperation, sip: Ipv4Addr, tip: Ipv4Addr, dst: MacAddr) -> Vec<u8> {
    let mut b = vec![0u8; 64];
    let n = build::arp(
        &mut b,
        L2Header::new(dst, src_mac),
        &ArpRepr {
            operation: op,
            sender_mac: src_mac,
            sender_ip: sip,
            target_mac: if op == ArpOperation::REPLY {
                dst
            } else {
                MacAddr::ZERO
            },
            target_ip: tip,
        },
    )
    .unwrap();
    b.truncate(n);
    b
}

fn udp(src: MacAddr, dst: MacAddr, sip: Ipv4Addr, dip: Ipv4Addr, ttl: u8, len: usize) -> Vec<u8> {
    let mut b = vec![0u8; len + 64];
    let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
    let n = build::ipv4_udp(
        &mut b,
        L2Header::new(dst, src),
        sip,
        dip,
        40000,
        33434,
        &payload,
    )
    .unwrap();
    b.truncate(n);
    let mut ip = Ipv4Packet::new_unchecked(&mut b[14..]);
    ip.set_ttl(ttl);
    ip.fill_checksum();
    b
}

fn set_df(f: &mut [u8]) {
    let mut ip = Ipv4Packet::new_unchecked(&mut f[14..]);
    ip.set_frag(true, false, 0);
    ip.fill_checksum();
}

fn ip_of(f: &[u8]) -> Ipv4Packet<&[u8]> {
    Ipv4Packet::new_checked(&f[14..]).unwrap()
}

/// Resolves the default gateway and the outside host, so forwarding is immediate.
fn warm(n: &mut Net) {
    let now = n.f.now();
    n.f.router
        .neigh_mut()
        .confirm(n.up, GW_IP, GW_MAC, now, true);
    n.f.router
        .neigh_mut()
        .confirm(n.up, OUT_IP, OUT_MAC, now, true);
}

#[test]
fn proxy_arp_on_routed_vif_exact_bytes() {
    let mut n = net();
    let req = arp(
        G1_MAC,
        ArpOperation::REQUEST,
        G1_IP,
        Ipv4Addr::new(10, 1, 0, 1),
        MacAddr::BROADCAST,
    );
    let v = n.f.inject(n.v1, &req);
    assert_eq!(v.action, RouteAction::Local);
    let out = n.f.take(n.v1);
    assert_eq!(out.len(), 1);
    #[rustfmt::skip]
    let expected: [u8; 42] = [
        0x00, 0x16, 0x3e, 0, 0, 1,              // to the guest
        0xfe, 0xff, 0xff, 0xff, 0xff, 0xff,     // from Xen's vif MAC
        0x08, 0x06,
        0, 1, 0x08, 0, 6, 4, 0, 2,              // Ethernet/IPv4 reply
        0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 10, 1, 0, 1,
        0x00, 0x16, 0x3e, 0, 0, 1, 10, 1, 0, 5,
    ];
    assert_eq!(out[0], expected);
    // Any target at all (it is the gateway for everything) ...
    n.f.inject(
        n.v1,
        &arp(
            G1_MAC,
            ArpOperation::REQUEST,
            G1_IP,
            FAR_IP,
            MacAddr::BROADCAST,
        ),
    );
    assert_eq!(n.f.take(n.v1).len(), 1);
    // ... but not the guest's own address, an RFC 5227 probe or an announcement.
    n.f.inject(
        n.v1,
        &arp(
            G1_MAC,
            ArpOperation::REQUEST,
            G1_IP,
            G1_IP,
            MacAddr::BROADCAST,
        ),
    );
    n.f.inject(
        n.v1,
        &arp(
            G1_MAC,
            ArpOperation::REQUEST,
            Ipv4Addr::UNSPECIFIED,
            G1_IP,
            MacAddr::BROADCAST,
        ),
    );
    n.f.inject(
        n.v1,
        &arp(
            G1_MAC,
            ArpOperation::REQUEST,
            Ipv4Addr::UNSPECIFIED,
            FAR_IP,
            MacAddr::BROADCAST,
        ),
    );
    assert!(n.f.take(n.v1).is_empty());
    // Spoofed sender IP or MAC.
    let v = n.f.inject(
        n.v1,
        &arp(
            G1_MAC,
            ArpOperation::REQUEST,
            G2_IP,
            FAR_IP,
            MacAddr::BROADCAST,
        ),
    );
    assert_eq!(v.action, RouteAction::Drop(DropReason::SpoofedArp));
    let mut bad = arp(
        G1_MAC,
        ArpOperation::REQUEST,
        G1_IP,
        FAR_IP,
        MacAddr::BROADCAST,
    );
    bad[22..28].copy_from_slice(&G2_MAC.0);
    assert_eq!(
        n.f.inject(n.v1, &bad).action,
        RouteAction::Drop(DropReason::SpoofedArp)
    );
    assert_eq!(n.f.router.stats().arp_replies, 2);
    n.f.assert_conservation();
}

#[test]
fn proxy_arp_on_uplink_only_for_routed_guests() {
    let mut n = net();
    n.f.inject(
        n.up,
        &arp(
            OUT_MAC,
            ArpOperation::REQUEST,
            OUT_IP,
            G2_IP,
            MacAddr::BROADCAST,
        ),
    );
    let out = n.f.take(n.up);
    assert_eq!(out.len(), 1);
    let info = FrameInfo::parse(&out[0]).unwrap();
    let a = info.arp().unwrap();
    assert_eq!((a.sender_ip, a.sender_mac), (G2_IP, UP_MAC));
    assert_eq!((info.dst, a.target_ip), (OUT_MAC, OUT_IP));
    // dom0's own address is answered by dom0's kernel, a neighbour's by the neighbour.
    n.f.inject(
        n.up,
        &arp(
            OUT_MAC,
            ArpOperation::REQUEST,
            OUT_IP,
            DOM0,
            MacAddr::BROADCAST,
        ),
    );
    n.f.inject(
        n.up,
        &arp(
            OUT_MAC,
            ArpOperation::REQUEST,
            OUT_IP,
            GW_IP,
            MacAddr::BROADCAST,
        ),
    );
    assert!(n.f.take(n.up).is_empty());
    // A request addressed to dom0 taught the router the asker's MAC.
    assert_eq!(n.f.router.neigh().peek(n.up, OUT_IP), Some(OUT_MAC));
    n.f.assert_conservation();
}

#[test]
fn guest_to_outside_resolves_then_forwards() {
    let mut n = net();
    let f = udp(G1_MAC, XEN_VIF_MAC, G1_IP, FAR_IP, 64, 20);
    let v = n.f.inject(n.v1, &f);
    assert_eq!(v.action, RouteAction::Queued(n.up));
    // The router asked for the gateway's MAC, from dom0's address.
    let out = n.f.take(n.up);
    assert_eq!(out.len(), 1);
    let a = *FrameInfo::parse(&out[0]).unwrap().arp().unwrap();
    assert_eq!(a.operation, ArpOperation::REQUEST);
    assert_eq!(
        (a.sender_ip, a.sender_mac, a.target_ip),
        (DOM0, UP_MAC, GW_IP)
    );
    // The reply releases the queued packet: MACs rewritten, TTL 63, checksum valid.
    n.f.inject(n.up, &arp(GW_MAC, ArpOperation::REPLY, GW_IP, DOM0, UP_MAC));
    let out = n.f.take(n.up);
    assert_eq!(out.len(), 1);
    assert_eq!(&out[0][0..6], &GW_MAC.0);
    assert_eq!(&out[0][6..12], &UP_MAC.0);
    let ip = ip_of(&out[0]);
    assert_eq!(ip.ttl(), 63);
    assert!(ip.verify_checksum());
    assert_eq!(&out[0][34..], &f[34..], "payload untouched");
    // Next packet goes straight out.
    let v = n.f.inject(n.v1, &f);
    assert_eq!(
        v,
        RouteVerdict {
            action: RouteAction::Forward(n.up),
            emit: None
        }
    );
    n.f.assert_conservation();
}

#[test]
fn outside_reaches_routed_domain_by_its_host_route() {
    let mut n = net();
    warm(&mut n);
    let f = udp(OUT_MAC, UP_MAC, OUT_IP, G1_IP, 64, 10);
    assert_eq!(n.f.inject(n.up, &f).action, RouteAction::Forward(n.v1));
    let out = n.f.take(n.v1);
    assert_eq!(&out[0][0..12], &[G1_MAC.0, XEN_VIF_MAC.0].concat()[..]);
    assert_eq!(ip_of(&out[0]).ttl(), 63);
    // vif to vif.
    let f = udp(G1_MAC, XEN_VIF_MAC, G1_IP, G2_IP, 64, 10);
    assert_eq!(n.f.inject(n.v1, &f).action, RouteAction::Forward(n.v2));
    // Frames for another MAC on the uplink are other hosts' business.
    let f = udp(OUT_MAC, GW_MAC, OUT_IP, G1_IP, 64, 10);
    assert_eq!(
        n.f.inject(n.up, &f).action,
        RouteAction::Drop(DropReason::OtherHost)
    );
    n.f.assert_conservation();
}

#[test]
fn dom0_local_addresses_go_to_the_host_port_without_ttl_decrement() {
    let mut n = net();
    let f = udp(G1_MAC, XEN_VIF_MAC, G1_IP, DOM0, 1, 10);
    assert_eq!(n.f.inject(n.v1, &f).action, RouteAction::Forward(n.host));
    let out = n.f.take(n.host);
    assert_eq!(&out[0][0..12], &[DOM0_TAP_MAC.0, HOST_MAC.0].concat()[..]);
    assert_eq!(ip_of(&out[0]).ttl(), 1, "dom0's kernel is the next hop");
    // And dom0's replies go back to the guest.
    let f = udp(DOM0_TAP_MAC, HOST_MAC, DOM0, G1_IP, 64, 10);
    assert_eq!(n.f.inject(n.host, &f).action, RouteAction::Forward(n.v1));
    assert_eq!(ip_of(&n.f.take(n.v1)[0]).ttl(), 64);
    n.f.assert_conservation();
}

#[test]
fn ttl_one_gets_time_exceeded_from_dom0() {
    let mut n = net();
    warm(&mut n);
    let f = udp(G1_MAC, XEN_VIF_MAC, G1_IP, FAR_IP, 1, 12);
    let v = n.f.inject(n.v1, &f);
    assert_eq!(v.action, RouteAction::Drop(DropReason::TtlExpired));
    let out = n.f.take(n.v1);
    assert_eq!(out.len(), 1);
    let e = &out[0];
    assert_eq!(&e[0..12], &[G1_MAC.0, XEN_VIF_MAC.0].concat()[..]);
    let ip = ip_of(e);
    assert!(ip.verify_checksum());
    assert_eq!((ip.src_addr(), ip.dst_addr(), ip.ttl()), (DOM0, G1_IP, 64));
    let icmp = Icmpv4Packet::new_checked(ip.payload()).unwrap();
    assert_eq!(
        (icmp.msg_type(), icmp.msg_code(), icmp.rest_of_header()),
        (11, 0, 0)
    );
    assert!(icmp.verify_checksum());
    assert_eq!(
        icmp.data(),
        &f[14..],
        "quotes the datagram as received (TTL 1)"
    );
    assert!(n.f.take(n.up).is_empty());
    assert_eq!(
        n.f.router.port_counters(n.v1).unwrap().rx_drops[DropReason::TtlExpired],
        1
    );
    n.f.assert_conservation();
}

#[test]
fn frag_needed_and_fragmentation() {
    let mut n = net();
    warm(&mut n);
    n.f.router.set_port_mtu(n.up, 1400).unwrap();
    let mut f = udp(G1_MAC, XEN_VIF_MAC, G1_IP, FAR_IP, 64, 1472);
    set_df(&mut f);
    let v = n.f.inject(n.v1, &f);
    assert_eq!(v.action, RouteAction::Drop(DropReason::EgressMtuExceeded));
    let e = n.f.take(n.v1).remove(0);
    let ip = ip_of(&e);
    assert_eq!(ip.src_addr(), DOM0);
    let icmp = Icmpv4Packet::new_checked(ip.payload()).unwrap();
    assert_eq!((icmp.msg_type(), icmp.msg_code()), (3, 4));
    assert_eq!(icmp.rest_of_header(), 1400, "next-hop MTU (RFC 1191)");
    assert_eq!(usize::from(ip.total_len()), 576);

    // Without DF the datagram is fragmented to the uplink's MTU.
    let f = udp(G1_MAC, XEN_VIF_MAC, G1_IP, FAR_IP, 64, 1472);
    let v = n.f.inject(n.v1, &f);
    assert_eq!(
        v.action,
        RouteAction::Fragment {
            port: n.up,
            mtu: 1400,
            count: 2
        }
    );
    let frags = n.f.take(n.up);
    assert_eq!(frags.len(), 2);
    let a = ip_of(&frags[0]);
    let b = ip_of(&frags[1]);
    assert!(a.more_frags() && !b.more_frags());
    assert_eq!(a.ttl(), 63);
    assert_eq!(usize::from(b.frag_offset()), a.payload().len());
    assert_eq!(a.payload().len() + b.payload().len(), 1480);
    assert_eq!(&frags[0][0..6], &GW_MAC.0);
    assert_eq!(n.f.router.port_counters(n.up).unwrap().tx_packets, 2);
    assert_eq!(n.f.router.port_counters(n.up).unwrap().tx_offered, 2);
    n.f.assert_conservation();
}

#[test]
fn gso_frames_use_segment_size_and_keep_partial_checksum() {
    let mut n = net();
    warm(&mut n);
    let mut f = vec![0u8; 9000];
    let len = build::ipv4_tcp(
        &mut f,
        L2Header::new(XEN_VIF_MAC, G1_MAC),
        G1_IP,
        FAR_IP,
        &TcpSegment {
            src_port: 5000,
            dst_port: 80,
            seq: 1,
            ack: 1,
            flags: TcpFlags::ACK,
            window: 100,
            payload: &[7u8; 8000],
        },
    )
    .unwrap();
    f.truncate(len);
    set_df(&mut f);
    // Partial checksum: the field holds the pseudo-header sum.
    let ph =
        crate::wire::checksum::pseudo_header_v4(G1_IP, FAR_IP, crate::wire::IpProtocol::TCP, 8020);
    f[50..52].copy_from_slice(&ph.to_be_bytes());
    let meta = FrameMeta {
        gso: Some(Gso {
            kind: GsoKind::TcpV4,
            size: 1448,
        }),
        csum_partial: true,
        data_validated: false,
    };
    let v = n.f.inject_with_meta(n.v1, &f, meta);
    assert_eq!(v.action, RouteAction::Forward(n.up));
    let out = n.f.take(n.up).remove(0);
    assert_eq!(
        &out[50..52],
        &ph.to_be_bytes(),
        "TTL is not in the pseudo-header"
    );
    assert!(ip_of(&out).verify_checksum());
    // Segments bigger than the MTU: frag-needed (DF is set on GSO TCP).
    n.f.router.set_port_mtu(n.up, 1400).unwrap();
    let v = n.f.inject_with_meta(n.v1, &f, meta);
    assert_eq!(v.action, RouteAction::Drop(DropReason::EgressMtuExceeded));
    assert!(v.emit.is_some());
    n.f.assert_conservation();
}

#[test]
fn route_types_and_unreachables() {
    let mut n = net();
    warm(&mut n);
    let probe = |n: &mut Net, dst: Ipv4Addr| {
        let v =
            n.f.inject(n.v1, &udp(G1_MAC, XEN_VIF_MAC, G1_IP, dst, 64, 8));
        let e = n.f.take(n.v1);
        let code = e.first().map(|e| {
            let ip = ip_of(e);
            let icmp = Icmpv4Packet::new_checked(ip.payload()).unwrap();
            (icmp.msg_type(), icmp.msg_code())
        });
        (v.action, code)
    };
    n.f.router.add_route(Route {
        dest: "203.0.113.0/24".parse().unwrap(),
        next_hop: NextHop::Prohibit,
    });
    assert_eq!(
        probe(&mut n, FAR_IP),
        (
            RouteAction::Drop(DropReason::ProhibitedRoute),
            Some((3, 13))
        )
    );
    n.f.router.add_route(Route {
        dest: "203.0.113.0/24".parse().unwrap(),
        next_hop: NextHop::Unreachable,
    });
    assert_eq!(
        probe(&mut n, FAR_IP),
        (
            RouteAction::Drop(DropReason::UnreachableRoute),
            Some((3, 1))
        )
    );
    n.f.router.add_route(Route {
        dest: "203.0.113.0/24".parse().unwrap(),
        next_hop: NextHop::Blackhole,
    });
    assert_eq!(
        probe(&mut n, FAR_IP),
        (RouteAction::Drop(DropReason::BlackholeRoute), None)
    );
    n.f.router.remove_route("0.0.0.0/0".parse().unwrap());
    assert_eq!(
        probe(&mut n, Ipv4Addr::new(8, 8, 8, 8)),
        (RouteAction::Drop(DropReason::NoRoute), Some((3, 0)))
    );
    n.f.router.set_port_enabled(n.v2, false).unwrap();
    assert_eq!(
        probe(&mut n, G2_IP),
        (
            RouteAction::Drop(DropReason::EgressPortDisabled),
            Some((3, 1))
        )
    );
    n.f.assert_conservation();
}

#[test]
fn anti_spoofing_and_martians() {
    let mut n = net();
    warm(&mut n);
    let cases: Vec<(PortId, Vec<u8>, DropReason)> = vec![
        (
            n.v1,
            udp(G2_MAC, XEN_VIF_MAC, G1_IP, FAR_IP, 64, 8),
            DropReason::SpoofedSourceMac,
        ),
        (
            n.v1,
            udp(G1_MAC, XEN_VIF_MAC, G2_IP, FAR_IP, 64, 8),
            DropReason::SpoofedSourceIp,
        ),
        (
            n.up,
            udp(OUT_MAC, UP_MAC, Ipv4Addr::new(127, 0, 0, 1), G1_IP, 64, 8),
            DropReason::MartianSource,
        ),
        (
            n.up,
            udp(OUT_MAC, UP_MAC, Ipv4Addr::new(169, 254, 1, 1), G1_IP, 64, 8),
            DropReason::MartianSource,
        ),
        (
            n.up,
            udp(OUT_MAC, UP_MAC, Ipv4Addr::new(240, 0, 0, 1), G1_IP, 64, 8),
            DropReason::MartianSource,
        ),
        (
            n.up,
            udp(OUT_MAC, UP_MAC, OUT_IP, Ipv4Addr::new(127, 0, 0, 1), 64, 8),
            DropReason::MartianDestination,
        ),
        (
            n.up,
            udp(OUT_MAC, UP_MAC, OUT_IP, Ipv4Addr::new(0, 1, 2, 3), 64, 8),
            DropReason::MartianDestination,
        ),
        (
            n.v1,
            udp(
                G1_MAC,
                XEN_VIF_MAC,
                G1_IP,
                Ipv4Addr::new(169, 254, 9, 9),
                64,
                8,
            ),
            DropReason::NotRoutable,
        ),
        (
            n.v1,
            udp(
                G1_MAC,
                MacAddr::BROADCAST,
                G1_IP,
                Ipv4Addr::BROADCAST,
                64,
                8,
            ),
            DropReason::NotRoutable,
        ),
        (
            n.v1,
            udp(G1_MAC, MacAddr::BROADCAST, G1_IP, FAR_IP, 64, 8),
            DropReason::UnicastDipOverMulticastDmac,
        ),
        (
            n.v1,
            udp(
                G1_MAC,
                MacAddr::BROADCAST,
                G1_IP,
                Ipv4Addr::new(198, 51, 100, 255),
                64,
                8,
            ),
            DropReason::NotRoutable,
        ),
        (
            n.v1,
            udp(
                G1_MAC,
                XEN_VIF_MAC,
                G1_IP,
                Ipv4Addr::new(224, 0, 0, 251),
                64,
                8,
            ),
            DropReason::NotRoutable,
        ),
    ];
    for (port, f, reason) in cases {
        let v = n.f.inject(port, &f);
        assert_eq!(v.action, RouteAction::Drop(reason), "{reason}");
        assert_eq!(v.emit, None, "{reason}: no ICMP about these");
    }
    // Bad header checksum.
    let mut f = udp(OUT_MAC, UP_MAC, OUT_IP, G1_IP, 64, 8);
    f[24] ^= 0xff;
    assert_eq!(
        n.f.inject(n.up, &f).action,
        RouteAction::Drop(DropReason::IpChecksum)
    );
    // IPv6 and other EtherTypes are not routed; tagged frames are refused.
    let mut b = vec![0u8; 100];
    let k = build::raw(
        &mut b,
        L2Header::new(XEN_VIF_MAC, G1_MAC),
        EtherType(0x88cc),
        &[0; 40],
    )
    .unwrap();
    assert_eq!(
        n.f.inject(n.v1, &b[..k]).action,
        RouteAction::Drop(DropReason::NonIp)
    );
    let k = build::ipv4_udp(
        &mut b,
        L2Header::new(XEN_VIF_MAC, G1_MAC).with_vlans(&[(EtherType::VLAN, 5)]),
        G1_IP,
        FAR_IP,
        1,
        2,
        b"x",
    )
    .unwrap();
    assert_eq!(
        n.f.inject(n.v1, &b[..k]).action,
        RouteAction::Drop(DropReason::IngressVlanFilter)
    );
    assert!(n.f.take(n.up).is_empty());
    n.f.assert_conservation();
}

#[test]
fn dhcp_from_routed_vif_is_handed_over() {
    let mut n = net();
    let mut b = vec![0u8; 400];
    let k = build::ipv4_udp(
        &mut b,
        L2Header::new(MacAddr::BROADCAST, G1_MAC),
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::BROADCAST,
        68,
        67,
        &[0u8; 300],
    )
    .unwrap();
    assert_eq!(n.f.inject(n.v1, &b[..k]).action, RouteAction::Dhcp);
    assert_eq!(n.f.dhcp.len(), 1);
    assert_eq!(
        n.f.router.port_counters(n.v1).unwrap().rx_delivered_local,
        1
    );
    n.f.assert_conservation();
}

#[test]
fn icmp_errors_are_rate_limited_and_never_about_errors() {
    let mut cfg = RouterConfig::new(DOM0);
    cfg.icmp_rate = RateLimit::new(1, 2);
    let mut f = RouteFabric::new(cfg);
    let v1 = f.add_port(RouterPortConfig::routed_vif(
        "vif1.0",
        G1_MAC,
        vec![Ipv4Cidr::host(G1_IP)],
    ));
    let frame = udp(G1_MAC, XEN_VIF_MAC, G1_IP, FAR_IP, 64, 8); // no route at all
    let sent: Vec<bool> = (0..4)
        .map(|_| f.inject(v1, &frame).emit.is_some())
        .collect();
    assert_eq!(sent, vec![true, true, false, false]);
    f.advance(Duration::from_secs(1));
    assert!(f.inject(v1, &frame).emit.is_some());
    assert_eq!(f.router.icmp_stats().rate_limited, 2);
    // An ICMP error from the guest about something is never answered with another.
    let mut b = vec![0u8; 200];
    let k = build::icmpv4_error(
        &mut b,
        L2Header::new(XEN_VIF_MAC, G1_MAC),
        G1_IP,
        3,
        3,
        0,
        &frame[14..],
    )
    .unwrap();
    f.advance(Duration::from_secs(10));
    assert_eq!(f.inject(v1, &b[..k]).emit, None);
    f.assert_conservation();
}

#[test]
fn failed_resolution_drops_queued_frames_as_tx_drops() {
    let mut n = net();
    let f = udp(G1_MAC, XEN_VIF_MAC, G1_IP, OUT_IP, 64, 8);
    let per = NeighConfig::default().queue_per_neigh as u64;
    for _ in 0..=per {
        n.f.inject(n.v1, &f);
    }
    // `per` queued (per-neighbour cap), the next dropped at ingress.
    let c = n.f.router.port_counters(n.v1).unwrap();
    assert_eq!(c.rx_forwarded, per);
    assert_eq!(c.rx_drops[DropReason::UnresolvedNeigh], 1);
    n.f.advance(Duration::from_secs(4));
    let c = n.f.router.port_counters(n.up).unwrap();
    assert_eq!(c.tx_drops[DropReason::UnresolvedNeigh], per);
    n.f.assert_conservation();
}

#[test]
fn config_errors() {
    let mut r = Router::new(RouterConfig::new(DOM0));
    r.add_port(RouterPortConfig::routed_vif(
        "a",
        G1_MAC,
        vec![Ipv4Cidr::host(G1_IP)],
    ))
    .unwrap();
    assert!(matches!(
        r.add_port(RouterPortConfig::routed_vif(
            "b",
            G2_MAC,
            vec![Ipv4Cidr::host(G1_IP)]
        )),
        Err(RouterError::AddressInUse(..))
    ));
    let mut bad = RouterPortConfig::uplink("u", UP_MAC);
    bad.mtu = 20;
    assert_eq!(r.add_port(bad), Err(RouterError::InvalidMtu(20)));
    assert_eq!(
        r.add_port(RouterPortConfig::uplink("u", MacAddr::BROADCAST)),
        Err(RouterError::InvalidMac(MacAddr::BROADCAST))
    );
    // Removing a vif removes its routes.
    let id = r.ports().next().unwrap().0;
    r.remove_port(id).unwrap();
    assert_eq!(r.routes().lookup(G1_IP), None);
    assert!(r.remove_port(id).is_err());
}

proptest! {
    /// Whatever arrives on any port, the router never panics, the conservation rule
    /// holds, and a forwarded IPv4 frame keeps a valid header checksum and payload.
    #[test]
    fn never_panics_and_conserves(
        frames in proptest::collection::vec((0u16..5, proptest::collection::vec(any::<u8>(), 14..120), any::<bool>()), 1..30),
    ) {
        let mut n = net();
        warm(&mut n);
        for (port, mut bytes, steer) in frames {
            if steer && bytes.len() >= 34 {
                // Make it look like IPv4 to the router from a plausible sender.
                bytes[12] = 0x08; bytes[13] = 0x00; bytes[14] = 0x45;
                let tl = (bytes.len() - 14) as u16;
                bytes[16..18].copy_from_slice(&tl.to_be_bytes());
                bytes[0..6].copy_from_slice(&UP_MAC.0);
                bytes[6..12].copy_from_slice(&OUT_MAC.0);
                Ipv4Packet::new_unchecked(&mut bytes[14..]).fill_checksum();
            }
            if let Ok(info) = FrameInfo::parse(&bytes) {
                let v = n.f.inject(PortId(port), &bytes);
                if let RouteAction::Forward(p) = v.action {
                    let out = n.f.take(p).pop().unwrap();
                    prop_assert!(ip_of(&out).verify_checksum());
                    let l4 = ip_of(&bytes).header_len() + 14;
                    prop_assert_eq!(&out[l4..], &bytes[l4..]);
                    let _ = info;
                }
            }
        }
        n.f.assert_conservation();
    }
}

#[test]
fn tcp_and_udp_checksums_survive_forwarding() {
    let mut n = net();
    warm(&mut n);
    let mut b = vec![0u8; 200];
    let k = build::ipv4_tcp(
        &mut b,
        L2Header::new(XEN_VIF_MAC, G1_MAC),
        G1_IP,
        FAR_IP,
        &TcpSegment {
            src_port: 1,
            dst_port: 2,
            seq: 3,
            ack: 4,
            flags: TcpFlags::SYN,
            window: 5,
            payload: b"abc",
        },
    )
    .unwrap();
    n.f.inject(n.v1, &b[..k]);
    let out = n.f.take(n.up).remove(0);
    assert!(TcpPacket::new_checked(&out[34..])
        .unwrap()
        .verify_checksum_v4(G1_IP, FAR_IP));
    let f = udp(G1_MAC, XEN_VIF_MAC, G1_IP, FAR_IP, 64, 33);
    n.f.inject(n.v1, &f);
    let out = n.f.take(n.up).remove(0);
    assert!(UdpPacket::new_checked(&out[34..])
        .unwrap()
        .verify_checksum_v4(G1_IP, FAR_IP));
    n.f.assert_conservation();
}
