//! A NAT network in the datapath: a guest (TAP) on a bridge whose gateway port
//! masquerades to an uplink veth leading to an "outside" namespace.

use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use hypervisor::domain::Registry;
use hypervisor::hv::Hypervisor;
use netcfg::netns::ScratchNetNs;
use netcfg::rtnl::{Address, IpCidr, Rtnl};
use netcfg::tap::{Tap, TapConfig};
use vswitch::datapath::nat_port::NatGatewayPort;
use vswitch::datapath::packet_port::PacketPort;
use vswitch::datapath::tap_port::TapPort;
use vswitch::datapath::{BridgeSettings, Datapath, WorkerConfig};
use vswitch::nat::gateway::{GatewayConfig, NatGateway};
use vswitch::port::PortConfig;
use vswitch::wire::Ipv4Cidr;
use vswitch::MacAddr;

fn require_root() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "needs root (scripts/test runs as root)"
    );
}

fn sh(ns: &ScratchNetNs, cmd: &str) -> std::process::Output {
    Command::new("ip")
        .args(["netns", "exec", ns.name(), "sh", "-c", cmd])
        .output()
        .unwrap()
}

fn ok(ns: &ScratchNetNs, cmd: &str) -> String {
    let o = sh(ns, cmd);
    assert!(
        o.status.success(),
        "[{}] {cmd}: {}{}",
        ns.name(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn guest_reaches_outside_masqueraded_and_a_forward_reaches_the_guest() {
    require_root();
    let dom0 = ScratchNetNs::new("dpn0").unwrap();
    let out = ScratchNetNs::new("dpnout").unwrap();
    let g = ScratchNetNs::new("dpng").unwrap();
    ok(
        &dom0,
        &format!(
            "ip link add up0 type veth peer name eth0 netns {}",
            out.name()
        ),
    );
    ok(
        &dom0,
        "ip addr add 10.88.0.1/24 dev up0 && ip link set up0 up",
    );
    ok(
        &out,
        "ip addr add 10.88.0.2/24 dev eth0 && ip link set eth0 up && ip link set lo up",
    );
    // dom0's kernel must not answer what the NAT owns: packets for the NAT port range
    // that belong to no kernel socket are dropped before the stack (the daemon installs
    // the same rule for a NAT network).
    ok(&dom0, "ip link set lo up");
    ok(
        &dom0,
        "nft -f - <<'X'
table inet domnet_nat {
  chain pre {
    type filter hook prerouting priority raw; policy accept;
    iifname \"up0\" ip daddr 10.88.0.1 meta l4proto tcp socket transparent 0 accept
    iifname \"up0\" ip daddr 10.88.0.1 meta l4proto udp socket transparent 0 accept
    iifname \"up0\" ip daddr 10.88.0.1 meta l4proto { tcp, udp } th dport 1024-65535 drop
  }
}
X",
    );
    let tap = Tap::create_in(&g, &TapConfig::with_offloads("eth0")).unwrap();
    {
        let r = Rtnl::open_in(&g).unwrap();
        let idx = r.ifindex("eth0").unwrap();
        r.add_address(&Address::new(
            idx,
            IpCidr::new(IpAddr::V4(Ipv4Addr::new(192, 168, 122, 50)), 24).unwrap(),
        ))
        .unwrap();
        r.set_up("eth0").unwrap();
    }
    ok(
        &g,
        "ip link set lo up && ip route add default via 192.168.122.1",
    );

    let (up_idx, up_mac) = {
        let r = Rtnl::open_in(&dom0).unwrap();
        let l = r.link_by_name("up0").unwrap();
        (l.index, MacAddr(l.mac.unwrap().0))
    };
    let uplink = dom0
        .run(move || PacketPort::open("up0", up_idx))
        .unwrap()
        .unwrap();
    let gw_mac = MacAddr([0x52, 0x54, 0x00, 0x12, 0x34, 0x01]);
    let mut cfg = GatewayConfig::libvirt_default(
        gw_mac,
        "10.88.0.1".parse().unwrap(),
        up_mac,
        Ipv4Cidr::new("10.88.0.0".parse().unwrap(), 24).unwrap(),
        None,
        vec![],
    );
    cfg.dns = None;
    let mut gw = NatGateway::new(cfg).unwrap();
    gw.nat_mut()
        .set_forwards(vec!["tcp:8022:192.168.122.50:22".parse().unwrap()])
        .unwrap();
    let gwport = dom0
        .run(move || NatGatewayPort::new("natbr-gw", gw, uplink))
        .unwrap()
        .unwrap();

    let hv = Arc::new(Hypervisor::new(Registry::new().get(0).unwrap()).unwrap());
    let dp = Datapath::start(
        Arc::clone(&hv),
        WorkerConfig {
            name: "dp-nat".into(),
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
        dp.add_bridge("natbr", BridgeSettings::default(), None)
            .await
            .unwrap();
        dp.add_port(Box::new(TapPort::new("g1", tap)))
            .await
            .unwrap();
        dp.attach("g1", "natbr", PortConfig::host("g1"))
            .await
            .unwrap();
        dp.add_port(Box::new(gwport)).await.unwrap();
        dp.attach("natbr-gw", "natbr", PortConfig::host("natbr-gw"))
            .await
            .unwrap();
        dp.fdb_add("natbr", gw_mac, "natbr-gw").await.unwrap();
    });

    eprintln!("step: ping gateway");
    ok(&g, "ping -c 2 -i 0.2 -W 2 192.168.122.1");
    eprintln!("step: ping outside");
    ok(&g, "ping -c 2 -i 0.2 -W 2 10.88.0.2");
    eprintln!("step: tcp");
    // TCP out: the outside sees the connection from dom0's uplink address.
    let server = Command::new("ip")
        .args([
            "netns",
            "exec",
            out.name(),
            "timeout",
            "15",
            "iperf3",
            "-s",
            "-1",
            "-J",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let c = sh(&g, "timeout 10 iperf3 -c 10.88.0.2 -t 2 -J");
    assert!(c.status.success(), "{}", String::from_utf8_lossy(&c.stdout));
    let server_out = server.wait_with_output().unwrap();
    let j: serde_json::Value = serde_json::from_slice(&server_out.stdout).unwrap();
    assert_eq!(
        j["start"]["connected"][0]["remote_host"], "10.88.0.1",
        "masqueraded source"
    );
    let cj: serde_json::Value = serde_json::from_slice(&c.stdout).unwrap();
    eprintln!(
        "NAT TCP: {:.2} Gbit/s",
        cj["end"]["sum_received"]["bits_per_second"]
            .as_f64()
            .unwrap()
            / 1e9
    );
    // A port forward from outside reaches the guest's server.
    let gsrv = Command::new("ip")
        .args([
            "netns",
            "exec",
            g.name(),
            "timeout",
            "15",
            "iperf3",
            "-s",
            "-1",
            "-p",
            "22",
            "-J",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let c = sh(&out, "timeout 10 iperf3 -c 10.88.0.1 -p 8022 -t 1 -J");
    let gj: serde_json::Value =
        serde_json::from_slice(&gsrv.wait_with_output().unwrap().stdout).unwrap();
    assert!(
        c.status.success(),
        "forward: {}",
        String::from_utf8_lossy(&c.stdout)
    );
    assert_eq!(
        gj["start"]["connected"][0]["remote_host"], "10.88.0.2",
        "DNAT keeps the client's address"
    );
    dp.shutdown();
}
