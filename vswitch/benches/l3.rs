//! Per-packet cost of the L3 cores: a new NAT connection (conntrack insert, port choice,
//! rewrite), the established NAT fast path, the same through the whole NAT gateway, and
//! route-mode forwarding. Targets (issue "Routed vifs and NAT networks"): well under
//! 1 µs per new connection in the core, so the shell reaches ≥ 22k new TCP
//! connections/s on a 2-core dom0.

use std::hint::black_box;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use vswitch::nat::gateway::{GatewayAction, GatewayConfig, GatewaySide, NatGateway};
use vswitch::nat::{Nat, NatConfig, NatVerdict};
use vswitch::router::{NextHop, Route, Router, RouterConfig, RouterPortConfig, XEN_VIF_MAC};
use vswitch::wire::build::{self, L2Header, TcpSegment};
use vswitch::wire::{Ipv4Cidr, TcpFlags};
use vswitch::{FrameInfo, FrameMeta, MacAddr, PortId, Timestamp};

const GW_MAC: MacAddr = MacAddr([0x52, 0x54, 0, 0xaa, 0xbb, 1]);
const G_MAC: MacAddr = MacAddr([0, 0x16, 0x3e, 0, 0, 1]);
const UP_MAC: MacAddr = MacAddr([0x52, 0x54, 0, 0, 0, 1]);
const ROUTER_MAC: MacAddr = MacAddr([0x52, 0x54, 0, 0, 0, 0xfe]);
const EXT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const GW: Ipv4Addr = Ipv4Addr::new(192, 168, 122, 1);
const ROUTER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 254);

fn tcp(sip: Ipv4Addr, dip: Ipv4Addr, sp: u16, dp: u16, flags: TcpFlags) -> Vec<u8> {
    let mut b = vec![0u8; 128];
    let n = build::ipv4_tcp(
        &mut b,
        L2Header::new(GW_MAC, G_MAC),
        sip,
        dip,
        &TcpSegment {
            src_port: sp,
            dst_port: dp,
            seq: 1,
            ack: 0,
            flags,
            window: 64240,
            payload: &[0u8; 6],
        },
    )
    .expect("frame");
    b.truncate(n);
    b
}

/// 50 000 distinct SYNs from 50 guests to 1000 servers.
fn syns() -> Vec<(Vec<u8>, FrameInfo)> {
    (0..50_000u32)
        .map(|i| {
            let g = Ipv4Addr::new(192, 168, 122, 2 + (i % 50) as u8);
            let d = Ipv4Addr::new(203, 0, 113 + (i / 50 % 4) as u8, (i / 200 % 250) as u8 + 1);
            let f = tcp(g, d, 20_000 + (i % 40_000) as u16, 443, TcpFlags::SYN);
            let info = FrameInfo::parse(&f).expect("parse");
            (f, info)
        })
        .collect()
}

fn nat_config() -> NatConfig {
    let mut c = NatConfig::new(EXT, "192.168.122.0/24".parse().expect("cidr"), GW);
    c.max_connections = 65_536;
    c.max_per_guest = 65_536;
    c
}

fn nat_new_connection(c: &mut Criterion) {
    let pristine = syns();
    let mut nat = Nat::new(nat_config()).expect("nat");
    let meta = FrameMeta::default();
    let mut g = c.benchmark_group("nat");
    g.throughput(Throughput::Elements(1));
    g.bench_function("new_tcp_connection", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut done = 0u64;
            while done < iters {
                let n = (iters - done).min(pristine.len() as u64) as usize;
                let mut frames: Vec<Vec<u8>> =
                    pristine[..n].iter().map(|(f, _)| f.clone()).collect();
                nat.clear();
                let start = Instant::now();
                for (f, (_, info)) in frames.iter_mut().zip(&pristine[..n]) {
                    let v = nat.outbound(f, info, &meta, Timestamp::ZERO);
                    debug_assert_eq!(v, NatVerdict::ToUplink);
                    black_box(v);
                }
                total += start.elapsed();
                done += n as u64;
            }
            total
        })
    });
    // Established: an ACK of an open connection, out.
    let syn = tcp(
        Ipv4Addr::new(192, 168, 122, 9),
        Ipv4Addr::new(203, 0, 113, 9),
        40000,
        443,
        TcpFlags::SYN,
    );
    let mut f = syn.clone();
    nat.clear();
    nat.outbound(
        &mut f,
        &FrameInfo::parse(&syn).expect("parse"),
        &meta,
        Timestamp::ZERO,
    );
    let ack = tcp(
        Ipv4Addr::new(192, 168, 122, 9),
        Ipv4Addr::new(203, 0, 113, 9),
        40000,
        443,
        TcpFlags::ACK,
    );
    let info = FrameInfo::parse(&ack).expect("parse");
    let mut buf = ack.clone();
    g.bench_function("established_packet", |b| {
        b.iter(|| {
            buf.copy_from_slice(&ack);
            black_box(nat.outbound(&mut buf, &info, &meta, Timestamp::ZERO))
        })
    });
    g.finish();
}

fn gateway() -> NatGateway {
    let mut c = GatewayConfig::libvirt_default(
        GW_MAC,
        EXT,
        UP_MAC,
        "198.51.100.0/24".parse().expect("cidr"),
        Some(ROUTER),
        Vec::new(),
    );
    c.nat = nat_config();
    let mut gw = NatGateway::new(c).expect("gateway");
    gw.neigh_mut()
        .set_static(PortId(1), ROUTER, ROUTER_MAC, Timestamp::ZERO);
    gw
}

fn gateway_paths(c: &mut Criterion) {
    let pristine = syns();
    let meta = FrameMeta::default();
    let mut g = c.benchmark_group("nat_gateway");
    g.throughput(Throughput::Elements(1));
    let mut gw = gateway();
    let mut out = vec![0u8; 2048];
    {
        // The measured path really forwards to the uplink.
        let (f, info) = &pristine[0];
        let v = gw.from_bridge(
            PortId(2),
            &mut f.clone(),
            info,
            &meta,
            Timestamp::ZERO,
            &mut out,
        );
        assert_eq!(v.action, GatewayAction::Forward(GatewaySide::Uplink));
    }
    g.bench_function("new_tcp_connection", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut done = 0u64;
            while done < iters {
                let n = (iters - done).min(pristine.len() as u64) as usize;
                let mut frames: Vec<Vec<u8>> =
                    pristine[..n].iter().map(|(f, _)| f.clone()).collect();
                gw.nat_mut().clear();
                let start = Instant::now();
                for (f, (_, info)) in frames.iter_mut().zip(&pristine[..n]) {
                    black_box(gw.from_bridge(PortId(2), f, info, &meta, Timestamp::ZERO, &mut out));
                }
                total += start.elapsed();
                done += n as u64;
            }
            total
        })
    });
    let syn = tcp(
        Ipv4Addr::new(192, 168, 122, 9),
        Ipv4Addr::new(203, 0, 113, 9),
        40000,
        443,
        TcpFlags::SYN,
    );
    let mut f = syn.clone();
    gw.nat_mut().clear();
    gw.from_bridge(
        PortId(2),
        &mut f,
        &FrameInfo::parse(&syn).expect("parse"),
        &meta,
        Timestamp::ZERO,
        &mut out,
    );
    let ack = tcp(
        Ipv4Addr::new(192, 168, 122, 9),
        Ipv4Addr::new(203, 0, 113, 9),
        40000,
        443,
        TcpFlags::ACK,
    );
    let info = FrameInfo::parse(&ack).expect("parse");
    let mut buf = ack.clone();
    g.bench_function("established_packet", |b| {
        b.iter(|| {
            buf.copy_from_slice(&ack);
            black_box(gw.from_bridge(PortId(2), &mut buf, &info, &meta, Timestamp::ZERO, &mut out))
        })
    });
    g.finish();
}

fn route_forward(c: &mut Criterion) {
    let dom0 = Ipv4Addr::new(198, 51, 100, 1);
    let mut r = Router::new(RouterConfig::new(dom0));
    let up = r
        .add_port(RouterPortConfig::uplink("eth0", UP_MAC))
        .expect("uplink");
    let g_ip = Ipv4Addr::new(10, 1, 0, 5);
    let v1 = r
        .add_port(RouterPortConfig::routed_vif(
            "vif1.0",
            G_MAC,
            vec![Ipv4Cidr::host(g_ip)],
        ))
        .expect("vif");
    r.add_route(Route {
        dest: "0.0.0.0/0".parse().expect("cidr"),
        next_hop: NextHop::Gateway(up, ROUTER),
    });
    r.neigh_mut()
        .set_static(up, ROUTER, ROUTER_MAC, Timestamp::ZERO);
    let mut frame = vec![0u8; 64];
    let n = build::ipv4_udp(
        &mut frame,
        L2Header::new(XEN_VIF_MAC, G_MAC),
        g_ip,
        Ipv4Addr::new(203, 0, 113, 9),
        40000,
        5201,
        &[0u8; 22],
    )
    .expect("frame");
    assert_eq!(n, 64);
    let info = FrameInfo::parse(&frame).expect("parse");
    let meta = FrameMeta::default();
    let mut buf = frame.clone();
    let mut out = vec![0u8; 2048];
    let v = r.process(v1, &mut buf, &info, &meta, Timestamp::ZERO, &mut out);
    assert_eq!(v.action, vswitch::router::RouteAction::Forward(up));
    let mut g = c.benchmark_group("router");
    g.throughput(Throughput::Elements(1));
    g.bench_function("forward_64B", |b| {
        b.iter(|| {
            buf.copy_from_slice(&frame);
            black_box(r.process(v1, &mut buf, &info, &meta, Timestamp::ZERO, &mut out))
        })
    });
    g.finish();
}

criterion_group!(benches, nat_new_connection, gateway_paths, route_forward);
criterion_main!(benches);
