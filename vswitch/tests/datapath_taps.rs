//! The datapath shell with real TAP devices: two namespaces, each with a TAP whose
//! other end is a port of one bridge in a worker thread; real ping and TCP across.

use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use hypervisor::domain::Registry;
use hypervisor::hv::Hypervisor;
use netcfg::netns::ScratchNetNs;
use netcfg::rtnl::{Address, IpCidr, Rtnl};
use netcfg::tap::{Tap, TapConfig};
use vswitch::datapath::tap_port::TapPort;
use vswitch::datapath::{BridgeSettings, Datapath, WorkerConfig};
use vswitch::port::PortConfig;

fn require_root() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "needs root (scripts/test runs as root)"
    );
}

fn tap_in(ns: &ScratchNetNs, ip: &str) -> Tap {
    let tap = Tap::create_in(ns, &TapConfig::with_offloads("eth0")).expect("tap");
    let r = Rtnl::open_in(ns).expect("rtnl");
    let idx = r.ifindex("eth0").expect("ifindex");
    let cidr = IpCidr::new(IpAddr::V4(ip.parse::<Ipv4Addr>().unwrap()), 24).unwrap();
    r.add_address(&Address::new(idx, cidr)).expect("address");
    r.set_up("eth0").expect("up");
    tap
}

fn in_ns(ns: &ScratchNetNs, args: &[&str]) -> std::process::Output {
    Command::new("ip")
        .args(["netns", "exec", ns.name()])
        .args(args)
        .output()
        .expect("ip netns exec")
}

#[test]
fn two_taps_ping_and_tcp_through_a_worker() {
    require_root();
    let a = ScratchNetNs::new("dpt").unwrap();
    let b = ScratchNetNs::new("dpt").unwrap();
    let tap_a = tap_in(&a, "10.201.0.1");
    let tap_b = tap_in(&b, "10.201.0.2");

    let hv = Arc::new(Hypervisor::new(Registry::new().get(0).unwrap()).unwrap());
    let dp = Datapath::start(
        Arc::clone(&hv),
        WorkerConfig {
            name: "dp-test".into(),
            pool_base_gfn: 1024,
            pool_buffers: 128,
            tick: Duration::from_millis(200),
        },
    )
    .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        dp.add_bridge("br-t", BridgeSettings::default(), None)
            .await
            .unwrap();
        dp.add_port(Box::new(TapPort::new("tapA", tap_a)))
            .await
            .unwrap();
        dp.add_port(Box::new(TapPort::new("tapB", tap_b)))
            .await
            .unwrap();
        dp.attach("tapA", "br-t", PortConfig::host("tapA"))
            .await
            .unwrap();
        dp.attach("tapB", "br-t", PortConfig::host("tapB"))
            .await
            .unwrap();
    });

    let ping = in_ns(
        &a,
        &["ping", "-c", "3", "-i", "0.2", "-W", "2", "10.201.0.2"],
    );
    assert!(
        ping.status.success(),
        "ping: {}",
        String::from_utf8_lossy(&ping.stdout)
    );

    // TCP with GSO offloads end to end: a 2-second iperf3 run through the worker.
    let mut server = Command::new("ip")
        .args([
            "netns",
            "exec",
            b.name(),
            "iperf3",
            "-s",
            "-1",
            "-p",
            "5201",
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("iperf3 server (scripts/test installs iperf3)");
    std::thread::sleep(Duration::from_millis(300));
    let client = in_ns(
        &a,
        &["iperf3", "-c", "10.201.0.2", "-p", "5201", "-t", "2", "-J"],
    );
    let _ = server.wait();
    assert!(
        client.status.success(),
        "iperf3: {}",
        String::from_utf8_lossy(&client.stdout)
    );
    let j: serde_json::Value = serde_json::from_slice(&client.stdout).unwrap();
    let bps = j["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap();
    eprintln!("tap-to-tap TCP through one worker: {:.2} Gbit/s", bps / 1e9);
    assert!(bps > 1e8, "TCP moved at {bps} bit/s");

    let (ports, fdb) =
        rt.block_on(async { (dp.ports().await.unwrap(), dp.fdb("br-t").await.unwrap()) });
    let pa = ports.iter().find(|p| p.name == "tapA").unwrap();
    assert!(pa.rx_packets >= 3 && pa.tx_packets >= 3, "{pa:?}");
    let gso = pa
        .driver
        .iter()
        .find(|(k, _)| k == "rx_gso_frames")
        .map(|(_, v)| *v)
        .unwrap_or(0);
    assert!(gso > 0, "TCP crossed as GSO frames: {pa:?}");
    assert_eq!(fdb.len(), 2, "both MACs learned: {fdb:?}");
    assert!(fdb.iter().any(|e| e.port == "tapA") && fdb.iter().any(|e| e.port == "tapB"));
    dp.shutdown();
}
