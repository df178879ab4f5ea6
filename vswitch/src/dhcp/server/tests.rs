//! Server rules, one test per rule of RFC 2131 §4.3 and robustness.md §3 d1–d4.

use super::*;
use crate::dhcp::wire::{emit_request, opt, parse_reply, ReplySummary, FLAG_BROADCAST};
use crate::wire::Ipv4Packet;
use proptest::prelude::*;

const SERVER_MAC: MacAddr = MacAddr([0x52, 0x54, 0x00, 0xaa, 0xbb, 0x01]);
const C1: MacAddr = MacAddr([0x00, 0x16, 0x3e, 0, 0, 1]);
const C2: MacAddr = MacAddr([0x00, 0x16, 0x3e, 0, 0, 2]);
const GW: Ipv4Addr = Ipv4Addr::new(192, 168, 122, 1);
const P1: PortId = PortId(1);
const P2: PortId = PortId(2);

fn server() -> DhcpServer {
    DhcpServer::new(DhcpConfig::libvirt_default(SERVER_MAC)).unwrap()
}

/// A client frame: `src` MAC, DHCP from `sip` (0.0.0.0 or the client's address).
fn frame(
    src: MacAddr,
    chaddr: MacAddr,
    sip: Ipv4Addr,
    xid: u32,
    flags: u16,
    ciaddr: Ipv4Addr,
    opts: &[(u8, &[u8])],
) -> Vec<u8> {
    let mut p = [0u8; 600];
    let n = emit_request(&mut p, xid, flags, ciaddr, chaddr, opts).unwrap();
    let mut b = vec![0u8; 700];
    let dst = if sip.is_unspecified() {
        Ipv4Addr::BROADCAST
    } else {
        GW
    };
    let dmac = if sip.is_unspecified() {
        MacAddr::BROADCAST
    } else {
        SERVER_MAC
    };
    let k = build::ipv4_udp(&mut b, L2Header::new(dmac, src), sip, dst, 68, 67, &p[..n]).unwrap();
    b.truncate(k);
    b
}

fn discover(mac: MacAddr, xid: u32) -> Vec<u8> {
    frame(
        mac,
        mac,
        Ipv4Addr::UNSPECIFIED,
        xid,
        FLAG_BROADCAST,
        Ipv4Addr::UNSPECIFIED,
        &[(opt::MESSAGE_TYPE, &[1])],
    )
}

fn select(mac: MacAddr, xid: u32, ip: Ipv4Addr, server: Ipv4Addr) -> Vec<u8> {
    frame(
        mac,
        mac,
        Ipv4Addr::UNSPECIFIED,
        xid,
        0,
        Ipv4Addr::UNSPECIFIED,
        &[
            (opt::MESSAGE_TYPE, &[3]),
            (opt::REQUESTED_IP, &ip.octets()),
            (opt::SERVER_ID, &server.octets()),
        ],
    )
}

struct Sent {
    outcome: DhcpOutcome,
    frame: Vec<u8>,
}

impl Sent {
    fn summary(&self) -> ReplySummary {
        let info = FrameInfo::parse(&self.frame).unwrap();
        parse_reply(&self.frame[usize::from(info.l4_offset) + 8..]).unwrap()
    }
    fn ip(&self) -> Ipv4Packet<&[u8]> {
        Ipv4Packet::new_checked(&self.frame[14..]).unwrap()
    }
}

fn run(s: &mut DhcpServer, port: PortId, f: &[u8], now: Timestamp) -> Sent {
    let info = FrameInfo::parse(f).unwrap();
    let mut out = [0u8; 700];
    let outcome = s.handle(port, f, &info, now, &mut out);
    let len = match outcome {
        DhcpOutcome::Reply { len, .. } => len,
        _ => 0,
    };
    Sent {
        outcome,
        frame: out[..len].to_vec(),
    }
}

fn t(s: u64) -> Timestamp {
    Timestamp::from_secs(s)
}

#[test]
fn dora_dynamic_with_exact_options() {
    let mut s = server();
    let o = run(&mut s, P1, &discover(C1, 7), t(0));
    assert!(matches!(
        o.outcome,
        DhcpOutcome::Reply {
            message_type: MessageType::Offer,
            ..
        }
    ));
    let sum = o.summary();
    let ip = sum.yiaddr.unwrap();
    assert_eq!(ip, Ipv4Addr::new(192, 168, 122, 2), "first pool address");
    assert_eq!(sum.xid, 7);
    assert_eq!(sum.server_id, Some(GW));
    assert_eq!(sum.subnet_mask, Some(Ipv4Addr::new(255, 255, 255, 0)));
    assert_eq!(sum.broadcast, Some(Ipv4Addr::new(192, 168, 122, 255)));
    assert_eq!(sum.router, Some(GW));
    assert_eq!(sum.dns, Some(GW));
    assert_eq!(
        (sum.lease_secs, sum.renewal_secs, sum.rebinding_secs),
        (Some(3600), Some(1800), Some(3150))
    );
    assert!(!sum.has_domain && sum.mtu.is_none());
    // Broadcast flag: IP and L2 broadcast, from the server's address and MAC, 67 -> 68.
    assert_eq!(
        &o.frame[0..12],
        &[MacAddr::BROADCAST.0, SERVER_MAC.0].concat()[..]
    );
    let ipp = o.ip();
    assert!(ipp.verify_checksum());
    assert_eq!((ipp.src_addr(), ipp.dst_addr()), (GW, Ipv4Addr::BROADCAST));
    assert_eq!(&o.frame[34..38], &[0, 67, 0, 68]);
    assert!(usize::from(ipp.total_len()) <= 576);
    let udp = UdpPacket::new_checked(ipp.payload()).unwrap();
    assert!(udp.verify_checksum_v4(GW, Ipv4Addr::BROADCAST));
    // The offer holds the address: another client gets the next one.
    let o2 = run(&mut s, P2, &discover(C2, 8), t(1));
    assert_eq!(o2.summary().yiaddr, Some(Ipv4Addr::new(192, 168, 122, 3)));
    // REQUEST (selecting) -> ACK, lease bound and recorded.
    let a = run(&mut s, P1, &select(C1, 7, ip, GW), t(2));
    assert!(matches!(
        a.outcome,
        DhcpOutcome::Reply {
            message_type: MessageType::Ack,
            ..
        }
    ));
    assert_eq!(a.summary().yiaddr, Some(ip));
    let l = s.leases().by_mac(C1).unwrap();
    assert_eq!((l.ip, l.state, l.expires), (ip, LeaseState::Bound, t(3602)));
    let mut ch = Vec::new();
    s.take_changes(&mut ch);
    assert_eq!(
        ch,
        vec![LeaseChange::Bound(LeaseRecord {
            mac: C1,
            ip,
            expires: t(3602)
        })]
    );
    assert_eq!((s.stats().offer, s.stats().ack), (2, 1));
}

#[test]
fn static_binding_with_its_own_subnet_router_and_host_name() {
    // Xen's vif-nat: domid 5, devid 0 => 10.0.5.1/16 with router 10.0.5.128.
    let mut s = server();
    let ip = Ipv4Addr::new(10, 0, 5, 1);
    let router = Ipv4Addr::new(10, 0, 5, 128);
    let opts = StaticOptions {
        subnet: Ipv4Cidr::new(ip, 16),
        router: Some(router),
        host_name: Some("dom5".into()),
    };
    s.set_static_with(C1, ip, opts.clone()).unwrap();
    let o = run(&mut s, P1, &discover(C1, 1), t(0));
    let r = o.summary();
    assert_eq!(r.yiaddr, Some(ip));
    assert_eq!(r.subnet_mask, Some(Ipv4Addr::new(255, 255, 0, 0)));
    assert_eq!(r.broadcast, Some(Ipv4Addr::new(10, 0, 255, 255)));
    assert_eq!(r.router, Some(router));
    assert!(r.has_host_name);
    let a = run(&mut s, P1, &select(C1, 1, ip, GW), t(0));
    assert_eq!(a.summary().message_type, Some(MessageType::Ack));
    assert_eq!(a.summary().router, Some(router));
    // Other clients keep the server's options.
    let o2 = run(&mut s, P2, &discover(C2, 2), t(0));
    assert_eq!(o2.summary().router, Some(GW));
    assert!(!o2.summary().has_host_name);
    // The address must be a host of its own subnet; the host name must fit.
    let bad = StaticOptions {
        subnet: Ipv4Cidr::new(Ipv4Addr::new(10, 0, 0, 0), 16),
        ..StaticOptions::default()
    };
    assert!(s
        .set_static_with(C2, Ipv4Addr::new(10, 0, 0, 0), bad)
        .is_err());
    let long = StaticOptions {
        host_name: Some("x".repeat(300)),
        ..opts
    };
    assert_eq!(
        s.set_static_with(C2, Ipv4Addr::new(10, 0, 6, 1), long),
        Err(DhcpConfigError::BadHostName)
    );
    // Removing the binding removes its options.
    s.remove_static(C1);
    assert!(s.static_opts.is_empty());
}

#[test]
fn static_binding_gets_exactly_its_address() {
    let mut s = server();
    let fifty = Ipv4Addr::new(192, 168, 122, 50);
    s.set_static(C1, fifty).unwrap();
    let o = run(&mut s, P1, &discover(C1, 1), t(0));
    assert_eq!(o.summary().yiaddr, Some(fifty));
    let a = run(&mut s, P1, &select(C1, 1, fifty, GW), t(0));
    assert_eq!(a.summary().message_type, Some(MessageType::Ack));
    // Asking for anything else is refused.
    let n = run(
        &mut s,
        P1,
        &select(C1, 2, Ipv4Addr::new(192, 168, 122, 51), GW),
        t(0),
    );
    assert_eq!(n.summary().message_type, Some(MessageType::Nak));
    // NAK: broadcast, no lease options, no yiaddr.
    assert_eq!(n.ip().dst_addr(), Ipv4Addr::BROADCAST);
    assert_eq!(n.summary().lease_secs, None);
    assert_eq!(n.summary().yiaddr, None);
    // The static address is never handed to anyone else.
    let o2 = run(
        &mut s,
        P2,
        &frame(
            C2,
            C2,
            Ipv4Addr::UNSPECIFIED,
            3,
            0,
            Ipv4Addr::UNSPECIFIED,
            &[(53, &[1]), (50, &fifty.octets())],
        ),
        t(0),
    );
    assert_ne!(o2.summary().yiaddr, Some(fifty));
    let n2 = run(
        &mut s,
        P2,
        &frame(
            C2,
            C2,
            Ipv4Addr::UNSPECIFIED,
            4,
            0,
            Ipv4Addr::UNSPECIFIED,
            &[(53, &[3]), (50, &fifty.octets())],
        ),
        t(0),
    );
    assert_eq!(n2.summary().message_type, Some(MessageType::Nak));
    // Static addresses must be host addresses of the subnet.
    assert!(s.set_static(C2, Ipv4Addr::new(10, 0, 0, 1)).is_err());
    assert!(s.set_static(C2, GW).is_err());
    assert!(s.set_static(C2, Ipv4Addr::new(192, 168, 122, 255)).is_err());
    assert_eq!(
        s.set_static(C2, fifty),
        Err(DhcpConfigError::StaticInUse(fifty, C1))
    );
}

#[test]
fn wrong_requests_are_naked_never_crash() {
    let mut s = server();
    let ip = run(&mut s, P1, &discover(C1, 1), t(0))
        .summary()
        .yiaddr
        .unwrap();
    run(&mut s, P1, &select(C1, 1, ip, GW), t(0));
    // INIT-REBOOT for an off-subnet address (d4), and for C1's address by C2.
    let off = frame(
        C2,
        C2,
        Ipv4Addr::UNSPECIFIED,
        2,
        0,
        Ipv4Addr::UNSPECIFIED,
        &[(53, &[3]), (50, &[10, 9, 9, 9])],
    );
    assert_eq!(
        run(&mut s, P2, &off, t(1)).summary().message_type,
        Some(MessageType::Nak)
    );
    let theirs = frame(
        C2,
        C2,
        Ipv4Addr::UNSPECIFIED,
        3,
        0,
        Ipv4Addr::UNSPECIFIED,
        &[(53, &[3]), (50, &ip.octets())],
    );
    assert_eq!(
        run(&mut s, P2, &theirs, t(1)).summary().message_type,
        Some(MessageType::Nak)
    );
    // RENEWING a lease that does not exist, on an address someone holds.
    let renew = frame(C2, C2, ip, 4, 0, ip, &[(53, &[3])]);
    assert_eq!(
        run(&mut s, P2, &renew, t(1)).summary().message_type,
        Some(MessageType::Nak)
    );
    // REQUEST with nothing to request.
    let empty = frame(
        C2,
        C2,
        Ipv4Addr::UNSPECIFIED,
        5,
        0,
        Ipv4Addr::UNSPECIFIED,
        &[(53, &[3])],
    );
    assert_eq!(
        run(&mut s, P2, &empty, t(1)).summary().message_type,
        Some(MessageType::Nak)
    );
    // SELECTING another server: our offer is withdrawn silently.
    run(&mut s, P2, &discover(C2, 6), t(1));
    assert!(s.leases().by_mac(C2).is_some());
    let other = select(
        C2,
        6,
        Ipv4Addr::new(192, 168, 122, 3),
        Ipv4Addr::new(192, 168, 122, 254),
    );
    assert_eq!(run(&mut s, P2, &other, t(1)).outcome, DhcpOutcome::NoReply);
    assert!(s.leases().by_mac(C2).is_none());
    assert_eq!(s.stats().nak, 4);
}

#[test]
fn renew_unicast_release_decline_inform() {
    let mut s = server();
    let ip = run(&mut s, P1, &discover(C1, 1), t(0))
        .summary()
        .yiaddr
        .unwrap();
    run(&mut s, P1, &select(C1, 1, ip, GW), t(0));
    // RENEWING: unicast to ciaddr at chaddr; lease extended.
    let r = run(
        &mut s,
        P1,
        &frame(C1, C1, ip, 2, 0, ip, &[(53, &[3])]),
        t(1800),
    );
    assert_eq!(r.summary().message_type, Some(MessageType::Ack));
    assert_eq!(&r.frame[0..6], &C1.0);
    assert_eq!(r.ip().dst_addr(), ip);
    assert_eq!(s.leases().by_mac(C1).unwrap().expires, t(5400));
    // Without the broadcast flag, an OFFER goes unicast to yiaddr at chaddr.
    let o = run(
        &mut s,
        P2,
        &frame(
            C2,
            C2,
            Ipv4Addr::UNSPECIFIED,
            3,
            0,
            Ipv4Addr::UNSPECIFIED,
            &[(53, &[1])],
        ),
        t(1800),
    );
    let y = o.summary().yiaddr.unwrap();
    assert_eq!((&o.frame[0..6], o.ip().dst_addr()), (&C2.0[..], y));
    // DECLINE: the address is held back for decline_hold.
    run(&mut s, P2, &select(C2, 3, y, GW), t(1800));
    assert_eq!(
        run(
            &mut s,
            P2,
            &frame(
                C2,
                C2,
                Ipv4Addr::UNSPECIFIED,
                4,
                0,
                Ipv4Addr::UNSPECIFIED,
                &[(53, &[4]), (50, &y.octets()), (54, &GW.octets())]
            ),
            t(1801)
        )
        .outcome,
        DhcpOutcome::NoReply
    );
    assert!(s.leases().by_mac(C2).is_none());
    let again = run(
        &mut s,
        P2,
        &frame(
            C2,
            C2,
            Ipv4Addr::UNSPECIFIED,
            5,
            0,
            Ipv4Addr::UNSPECIFIED,
            &[(53, &[1]), (50, &y.octets())],
        ),
        t(1802),
    );
    assert_ne!(
        again.summary().yiaddr,
        Some(y),
        "declined address not offered"
    );
    // RELEASE frees C1's lease.
    assert_eq!(
        run(
            &mut s,
            P1,
            &frame(C1, C1, ip, 6, 0, ip, &[(53, &[7]), (54, &GW.octets())]),
            t(1900)
        )
        .outcome,
        DhcpOutcome::NoReply
    );
    assert!(s.leases().by_mac(C1).is_none());
    // INFORM: ACK with configuration, no lease, to ciaddr.
    let i = run(
        &mut s,
        P1,
        &frame(C1, C1, ip, 7, 0, ip, &[(53, &[8])]),
        t(1901),
    );
    let sum = i.summary();
    assert_eq!(
        (sum.message_type, sum.lease_secs, sum.yiaddr, sum.router),
        (Some(MessageType::Ack), None, None, Some(GW))
    );
    assert_eq!(i.ip().dst_addr(), ip);
    let mut ch = Vec::new();
    s.take_changes(&mut ch);
    assert!(ch.iter().any(|c| matches!(c, LeaseChange::Declined { .. })));
    assert!(ch
        .iter()
        .any(|c| matches!(c, LeaseChange::Released(r) if r.mac == C1)));
}

#[test]
fn starvation_is_bounded_and_counted() {
    let mut cfg = DhcpConfig::libvirt_default(SERVER_MAC);
    cfg.max_leases = 3;
    let mut s = DhcpServer::new(cfg).unwrap();
    // chaddr must be the frame's source (a guest inventing MACs, d1).
    let forged = frame(
        C1,
        MacAddr([2, 0, 0, 0, 0, 9]),
        Ipv4Addr::UNSPECIFIED,
        1,
        0,
        Ipv4Addr::UNSPECIFIED,
        &[(53, &[1])],
    );
    assert_eq!(
        run(&mut s, P1, &forged, t(0)).outcome,
        DhcpOutcome::Drop(DropReason::DhcpChaddrMismatch)
    );
    // One lease per port: a second MAC on the same port is refused.
    assert!(matches!(
        run(&mut s, P1, &discover(C1, 2), t(0)).outcome,
        DhcpOutcome::Reply { .. }
    ));
    assert_eq!(
        run(&mut s, P1, &discover(C2, 3), t(0)).outcome,
        DhcpOutcome::Drop(DropReason::DhcpLeaseLimit)
    );
    // Total cap across ports.
    for p in 2..4u16 {
        let mac = MacAddr([0, 0x16, 0x3e, 0, 1, p as u8]);
        assert!(matches!(
            run(&mut s, PortId(p), &discover(mac, 4), t(0)).outcome,
            DhcpOutcome::Reply { .. }
        ));
    }
    let mac = MacAddr([0, 0x16, 0x3e, 0, 1, 9]);
    assert_eq!(
        run(&mut s, PortId(9), &discover(mac, 5), t(0)).outcome,
        DhcpOutcome::Drop(DropReason::DhcpLeaseLimit)
    );
    // Offers time out and free the room.
    s.expire(t(31), 100);
    assert!(matches!(
        run(&mut s, PortId(9), &discover(mac, 6), t(31)).outcome,
        DhcpOutcome::Reply { .. }
    ));
    // Rate limit per port: 20 back to back, then 5/s.
    let mut s = server();
    let results: Vec<bool> = (0..25)
        .map(|i| {
            !matches!(
                run(&mut s, P1, &discover(C1, i), t(0)).outcome,
                DhcpOutcome::Drop(DropReason::DhcpRateLimited)
            )
        })
        .collect();
    assert_eq!(results.iter().filter(|&&ok| ok).count(), 20);
    assert_eq!(s.stats().rate_limited, 5);
    assert_eq!(s.stats().lease_limit, 0, "other ports unaffected");
    assert!(matches!(
        run(&mut s, P2, &discover(C2, 1), t(0)).outcome,
        DhcpOutcome::Reply { .. }
    ));
}

#[test]
fn malformed_and_unsupported_are_counted() {
    let mut s = server();
    let mut bad = discover(C1, 1);
    bad[42 + 236] = 0; // break the cookie
    assert_eq!(
        run(&mut s, P1, &bad, t(0)).outcome,
        DhcpOutcome::Drop(DropReason::DhcpMalformed)
    );
    let mut trunc = discover(C1, 1);
    trunc.truncate(42 + 100);
    {
        let n = trunc.len() - 14;
        let mut ip = Ipv4Packet::new_unchecked(&mut trunc[14..]);
        ip.set_total_len(n as u16);
        ip.fill_checksum();
        trunc[38..40].copy_from_slice(&((n - 20) as u16).to_be_bytes());
    }
    assert_eq!(
        run(&mut s, P1, &trunc, t(0)).outcome,
        DhcpOutcome::Drop(DropReason::DhcpMalformed)
    );
    // A relayed message and a client sending an OFFER.
    let mut relayed = discover(C1, 2);
    relayed[42 + 24] = 10;
    assert_eq!(
        run(&mut s, P1, &relayed, t(0)).outcome,
        DhcpOutcome::Drop(DropReason::DhcpUnsupported)
    );
    let offer = frame(
        C1,
        C1,
        Ipv4Addr::UNSPECIFIED,
        3,
        0,
        Ipv4Addr::UNSPECIFIED,
        &[(53, &[2])],
    );
    assert_eq!(
        run(&mut s, P1, &offer, t(0)).outcome,
        DhcpOutcome::Drop(DropReason::DhcpUnsupported)
    );
    assert_eq!((s.stats().malformed, s.stats().unsupported), (2, 2));
}

#[test]
fn restore_and_reply_size_limits() {
    let mut cfg = DhcpConfig::libvirt_default(SERVER_MAC);
    cfg.domain = Some("d".repeat(MAX_DOMAIN_LEN));
    cfg.dns_servers = vec![GW; MAX_DNS_SERVERS];
    cfg.mtu = Some(1400);
    let mut s = DhcpServer::new(cfg.clone()).unwrap();
    let o = run(&mut s, P1, &discover(C1, 1), t(0));
    assert!(
        usize::from(o.ip().total_len()) <= 576,
        "largest reply fits 576 bytes"
    );
    assert_eq!(o.summary().mtu, Some(1400));
    assert!(o.summary().has_domain);
    let mut too_long = cfg.clone();
    too_long.domain = Some("d".repeat(MAX_DOMAIN_LEN + 1));
    assert_eq!(
        DhcpServer::new(too_long).err(),
        Some(DhcpConfigError::DomainTooLong)
    );

    // Leases survive a restart through their records; expired ones do not.
    let mut s = server();
    let ip = run(&mut s, P1, &discover(C1, 1), t(0))
        .summary()
        .yiaddr
        .unwrap();
    run(&mut s, P1, &select(C1, 1, ip, GW), t(0));
    let mut lines: Vec<String> = s.leases().records().map(|r| r.to_string()).collect();
    lines.push(
        LeaseRecord {
            mac: C2,
            ip: Ipv4Addr::new(192, 168, 122, 77),
            expires: t(10),
        }
        .to_string(),
    );
    let mut fresh = server();
    let n = fresh.restore(lines.iter().map(|l| l.parse().unwrap()), t(100));
    assert_eq!(n, 1);
    // The restored client renews its address; another client cannot take it.
    let r = run(
        &mut fresh,
        P1,
        &frame(C1, C1, ip, 2, 0, ip, &[(53, &[3])]),
        t(200),
    );
    assert_eq!(r.summary().message_type, Some(MessageType::Ack));
    let steal = frame(
        C2,
        C2,
        Ipv4Addr::UNSPECIFIED,
        3,
        0,
        Ipv4Addr::UNSPECIFIED,
        &[(53, &[3]), (50, &ip.octets())],
    );
    assert_eq!(
        run(&mut fresh, P2, &steal, t(200)).summary().message_type,
        Some(MessageType::Nak)
    );
    // Authoritative INIT-REBOOT for a free pool address after a lost lease file.
    let lost = frame(
        C2,
        C2,
        Ipv4Addr::UNSPECIFIED,
        4,
        0,
        Ipv4Addr::UNSPECIFIED,
        &[(53, &[3]), (50, &[192, 168, 122, 99])],
    );
    assert_eq!(
        run(&mut fresh, P2, &lost, t(200)).summary().yiaddr,
        Some(Ipv4Addr::new(192, 168, 122, 99))
    );
}

#[test]
fn pool_exhaustion() {
    let mut cfg = DhcpConfig::libvirt_default(SERVER_MAC);
    cfg.pool_start = Ipv4Addr::new(192, 168, 122, 10);
    cfg.pool_end = Ipv4Addr::new(192, 168, 122, 11);
    let mut s = DhcpServer::new(cfg).unwrap();
    for i in 0..2u8 {
        let mac = MacAddr([0, 0x16, 0x3e, 0, 2, i]);
        assert!(matches!(
            run(&mut s, PortId(u16::from(i)), &discover(mac, 1), t(0)).outcome,
            DhcpOutcome::Reply { .. }
        ));
    }
    let mac = MacAddr([0, 0x16, 0x3e, 0, 2, 9]);
    assert_eq!(
        run(&mut s, PortId(9), &discover(mac, 1), t(0)).outcome,
        DhcpOutcome::Drop(DropReason::DhcpPoolExhausted)
    );
    assert!(DhcpServer::new(DhcpConfig {
        pool_start: Ipv4Addr::new(192, 168, 122, 20),
        pool_end: Ipv4Addr::new(192, 168, 122, 10),
        ..DhcpConfig::libvirt_default(SERVER_MAC)
    })
    .is_err());
}

proptest! {
    /// Random payloads behind a valid UDP/IP header never panic the server, and
    /// whatever it replies is a parseable BOOTREPLY within 576 bytes.
    #[test]
    fn never_panics(payload in proptest::collection::vec(any::<u8>(), 0..700), cookie in any::<bool>()) {
        let mut s = server();
        let mut p = payload;
        if cookie && p.len() >= 241 {
            p[0] = 1; p[1] = 1; p[2] = 6;
            p[28..34].copy_from_slice(&C1.0);
            p[236..240].copy_from_slice(&wire::MAGIC_COOKIE);
        }
        let mut b = vec![0u8; 800];
        let k = build::ipv4_udp(&mut b, L2Header::new(MacAddr::BROADCAST, C1), Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST, 68, 67, &p).unwrap();
        let sent = run(&mut s, P1, &b[..k], t(0));
        if let DhcpOutcome::Reply { .. } = sent.outcome {
            prop_assert!(usize::from(sent.ip().total_len()) <= 576);
            prop_assert!(sent.summary().message_type.is_some());
        }
    }
}
