//! Route mode in the datapath with real TAPs standing in for routed vifs: proxy ARP
//! makes dom0's address the gateway, packets are routed by /32, TTL-1 probes get
//! ICMP time-exceeded from dom0's address.

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
use vswitch::datapath::{Datapath, WorkerConfig};
use vswitch::router::{RouterConfig, RouterPortConfig};
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

/// A guest namespace with eth0 (a TAP) holding `ip`/24, default route via the gateway.
fn guest(ns: &ScratchNetNs, ip: &str, gw: &str) -> (Tap, MacAddr) {
    let tap = Tap::create_in(ns, &TapConfig::with_offloads("eth0")).expect("tap");
    let r = Rtnl::open_in(ns).expect("rtnl");
    let link = r.link_by_name("eth0").expect("eth0");
    let cidr = IpCidr::new(IpAddr::V4(ip.parse::<Ipv4Addr>().unwrap()), 24).unwrap();
    r.add_address(&Address::new(link.index, cidr))
        .expect("address");
    r.set_up("eth0").expect("up");
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            ns.name(),
            "ip",
            "route",
            "add",
            "default",
            "via",
            gw,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (tap, MacAddr(link.mac.expect("mac").0))
}

fn in_ns(ns: &ScratchNetNs, args: &[&str]) -> std::process::Output {
    Command::new("ip")
        .args(["netns", "exec", ns.name()])
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn routed_vifs_ping_through_the_router_and_ttl_expires_at_dom0() {
    require_root();
    let a = ScratchNetNs::new("dpr").unwrap();
    let b = ScratchNetNs::new("dpr").unwrap();
    let (tap_a, mac_a) = guest(&a, "10.230.0.1", "10.230.0.254");
    let (tap_b, mac_b) = guest(&b, "10.230.0.2", "10.230.0.254");

    let hv = Arc::new(Hypervisor::new(Registry::new().get(0).unwrap()).unwrap());
    let dp = Datapath::start(
        Arc::clone(&hv),
        WorkerConfig {
            name: "dp-router".into(),
            pool_base_gfn: 1024,
            pool_buffers: 64,
            tick: Duration::from_millis(200),
        },
    )
    .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let host32 = |ip: &str| Ipv4Cidr::new(ip.parse().unwrap(), 32).unwrap();
    rt.block_on(async {
        dp.add_router("rt", RouterConfig::new("10.230.0.254".parse().unwrap()))
            .await
            .unwrap();
        dp.add_port(Box::new(TapPort::new("vifA", tap_a)))
            .await
            .unwrap();
        dp.add_port(Box::new(TapPort::new("vifB", tap_b)))
            .await
            .unwrap();
        dp.attach_router(
            "vifA",
            "rt",
            RouterPortConfig::routed_vif("vifA", mac_a, vec![host32("10.230.0.1")]),
        )
        .await
        .unwrap();
        dp.attach_router(
            "vifB",
            "rt",
            RouterPortConfig::routed_vif("vifB", mac_b, vec![host32("10.230.0.2")]),
        )
        .await
        .unwrap();
    });

    let ping = in_ns(
        &a,
        &["ping", "-c", "3", "-i", "0.2", "-W", "2", "10.230.0.2"],
    );
    assert!(
        ping.status.success(),
        "ping: {}",
        String::from_utf8_lossy(&ping.stdout)
    );
    // The gateway's MAC is Xen's backend MAC, learned by proxy ARP.
    let neigh = String::from_utf8_lossy(&in_ns(&a, &["ip", "neigh", "show", "10.230.0.2"]).stdout)
        .to_string();
    assert!(neigh.contains("fe:ff:ff:ff:ff:ff"), "{neigh}");
    // TTL 1: the router answers time-exceeded from dom0's address.
    let probe = in_ns(&a, &["ping", "-c", "1", "-t", "1", "-W", "2", "10.230.0.2"]);
    let text = String::from_utf8_lossy(&probe.stdout).to_string();
    assert!(
        text.contains("From 10.230.0.254") && text.contains("Time to live exceeded"),
        "{text}"
    );
    // Anti-spoofing: a source the vif does not own is dropped and counted.
    let spoof = in_ns(
        &a,
        &[
            "sh",
            "-c",
            "ip addr add 10.230.0.77/24 dev eth0 && ping -c 1 -W 1 -I 10.230.0.77 10.230.0.2",
        ],
    );
    assert!(!spoof.status.success(), "spoofed source got through");
    let ports = rt.block_on(dp.ports()).unwrap();
    let pa = ports.iter().find(|p| p.name == "vifA").unwrap();
    assert!(
        pa.rx_drops
            .iter()
            .any(|(r, n)| r.contains("spoof") && *n > 0),
        "{pa:?}"
    );
    dp.shutdown();
}
