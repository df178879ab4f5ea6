//! Frames per second through `Bridge::process` / `process_batch` for 64-byte frames:
//! unicast with a warm MAC table, and a random-source-MAC flood that keeps the table full
//! and evicting (robustness.md §3 b8).

use std::hint::black_box;
use std::net::Ipv4Addr;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use vswitch::wire::build::{self, L2Header};
use vswitch::{
    Bridge, FrameMeta, MacAddr, PortConfig, PortId, RxFrame, Timestamp, Verdict, VifConfig,
    VlanMode, MAX_BATCH,
};

const HOST_MAC: MacAddr = MacAddr([0xfe, 0xff, 0xff, 0xff, 0xff, 0xff]);
const VIF_MAC: MacAddr = MacAddr([0x00, 0x16, 0x3e, 0, 0, 1]);
const VIF_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 5);

/// A 64-byte IPv4/UDP frame (14 + 20 + 8 + 22).
fn frame64(src: MacAddr, dst: MacAddr) -> Vec<u8> {
    let mut b = vec![0u8; 64];
    let n = build::ipv4_udp(
        &mut b,
        L2Header::new(dst, src),
        VIF_IP,
        Ipv4Addr::new(10, 0, 0, 1),
        40000,
        5201,
        &[0u8; 22],
    )
    .expect("64-byte frame");
    assert_eq!(n, 64);
    b
}

/// xenbr0 with a host port, an uplink and a filtered vif; the uplink has 4000 learned MACs.
fn bridge() -> (Bridge, PortId, PortId, PortId) {
    let mut br = Bridge::default();
    let host = br.add_port(PortConfig::host("xenbr0")).expect("host");
    let uplink = br
        .add_port(PortConfig {
            vlan_mode: VlanMode::Trunk,
            ..PortConfig::uplink("eth0")
        })
        .expect("uplink");
    let mut vif = VifConfig::new(VIF_MAC);
    vif.allowed_ipv4 = vec![VIF_IP.into()];
    let v1 = br.add_port(PortConfig::vif("vif1.0", vif)).expect("vif");
    let meta = FrameMeta::default();
    br.process(
        host,
        &frame64(HOST_MAC, MacAddr::BROADCAST),
        &meta,
        Timestamp::ZERO,
    );
    br.process(
        v1,
        &frame64(VIF_MAC, MacAddr::BROADCAST),
        &meta,
        Timestamp::ZERO,
    );
    for i in 0..4000u32 {
        let b = i.to_be_bytes();
        let mac = MacAddr([0x52, 0x54, b[0], b[1], b[2], b[3]]);
        br.process(
            uplink,
            &frame64(mac, MacAddr::BROADCAST),
            &meta,
            Timestamp::ZERO,
        );
    }
    (br, host, uplink, v1)
}

fn unicast(c: &mut Criterion) {
    let (mut br, _host, _uplink, v1) = bridge();
    let frame = frame64(VIF_MAC, HOST_MAC);
    let mut g = c.benchmark_group("unicast_warm_fdb_64B");
    g.throughput(Throughput::Elements(1));
    g.bench_function("process", |b| {
        b.iter(|| {
            black_box(br.process(
                v1,
                black_box(&frame),
                &FrameMeta::default(),
                Timestamp::from_secs(1),
            ))
        })
    });
    let batch: Vec<RxFrame<'_>> = (0..MAX_BATCH)
        .map(|_| RxFrame {
            data: &frame,
            meta: FrameMeta::default(),
        })
        .collect();
    let mut out = [Verdict::default(); MAX_BATCH];
    g.throughput(Throughput::Elements(MAX_BATCH as u64));
    g.bench_function("process_batch_64", |b| {
        b.iter(|| {
            br.process_batch(v1, black_box(&batch), Timestamp::from_secs(1), &mut out);
            black_box(&out);
        })
    });
    g.finish();
}

fn random_mac_flood(c: &mut Criterion) {
    let (mut br, _host, uplink, _v1) = bridge();
    let mut frame = frame64(VIF_MAC, MacAddr::BROADCAST);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut g = c.benchmark_group("random_src_mac_flood_64B");
    g.throughput(Throughput::Elements(1));
    g.bench_function("process", |b| {
        b.iter(|| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            frame[6..12].copy_from_slice(&MacAddr::from_u64(x & 0xfeff_ffff_ffff).0);
            black_box(br.process(
                uplink,
                &frame,
                &FrameMeta::default(),
                Timestamp::from_secs(1),
            ))
        })
    });
    g.finish();
    assert!(br.fdb().len() <= br.fdb().config().max_entries);
}

criterion_group!(benches, unicast, random_mac_flood);
criterion_main!(benches);
