//! Route mode (vif-route): a routed domain is reachable from outside by its /32
//! through dom0, reaches outside, gets its ip= by DHCP, and a TTL-1 probe gets
//! time-exceeded from dom0's address.

mod common;

use std::process::Command;

use common::{guest_ok, guest_sh, require_root, require_tool, unique, Daemon, Netns};

#[test]
fn routed_domains_reach_and_are_reached_through_dom0() {
    require_root();
    require_tool("dhclient");
    let dom0 = Netns::new("rt0-");
    let out = Netns::new("rtout-");
    dom0.sh(&format!(
        "ip link add up0 type veth peer name eth0 netns {}",
        out.name
    ));
    dom0.sh("ip addr add 10.89.0.1/24 dev up0 && ip link set up0 up && ip route add default via 10.89.0.2");
    out.sh("ip addr add 10.89.0.2/24 dev eth0 && ip link set eth0 up");
    // The outside reaches the second guest, in another prefix, by a /32 via dom0.
    out.sh("ip route add 10.90.0.5/32 via 10.89.0.1");
    let d = Daemon::start_in(&dom0.name);

    let r1 = unique("rta");
    let r2 = unique("rtb");
    let etc = format!("/etc/netns/{r1}");
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::write(format!("{etc}/resolv.conf"), "").unwrap();
    let _cleanup = scopeguard(etc.clone());
    let id1 = d.create(&r1, "vif = [ 'script=vif-route,ip=10.89.0.50' ]");
    let id2 = d.create(&r2, "vif = [ 'script=vif-route,ip=10.90.0.5' ]");

    // dom0 holds a /32 route per ip= address, with its own address as source.
    let routes = dom0.sh("ip route show");
    assert!(
        routes.contains("10.89.0.50 dev rt-up0") && routes.contains("src 10.89.0.1"),
        "{routes}"
    );
    assert!(routes.contains("10.90.0.5 dev rt-up0"), "{routes}");

    // r1 gets exactly its ip= by DHCP, with dom0 as its router.
    guest_ok(&r1, "ip link set lo up");
    guest_ok(
        &r1,
        &format!("timeout 30 dhclient -1 -lf /tmp/{r1}.leases -pf /tmp/{r1}.pid eth0"),
    );
    let _ = guest_sh(&r1, &format!("dhclient -x -pf /tmp/{r1}.pid"));
    assert!(guest_ok(&r1, "ip -4 -o addr show dev eth0").contains("10.89.0.50/"));
    assert!(guest_ok(&r1, "ip route show default").contains("via 10.89.0.1"));
    // r2 is configured by hand (its prefix is not dom0's).
    guest_ok(&r2, "ip link set lo up && ip addr add 10.90.0.5/32 dev eth0 && ip route add 10.89.0.1 dev eth0 && ip route add default via 10.89.0.1");

    // Both reach the outside and are reached from it.
    guest_ok(&r1, "ping -c 2 -i 0.2 -W 2 10.89.0.2");
    guest_ok(&r2, "ping -c 2 -i 0.2 -W 2 10.89.0.2");
    out.sh("ping -c 2 -i 0.2 -W 2 10.89.0.50");
    out.sh("ping -c 2 -i 0.2 -W 2 10.90.0.5");
    // Routed guest to routed guest, and to dom0.
    guest_ok(&r1, "ping -c 2 -i 0.2 -W 2 10.90.0.5");
    guest_ok(&r2, "ping -c 1 -W 2 10.89.0.1");

    // TTL 1: time-exceeded from dom0's address.
    let probe = guest_sh(&r1, "ping -c 1 -t 1 -W 2 10.89.0.2");
    let text = String::from_utf8_lossy(&probe.stdout).to_string();
    assert!(
        text.contains("From 10.89.0.1") && text.contains("Time to live exceeded"),
        "{text}"
    );

    // A source the vif does not own is dropped and counted.
    let _ = guest_sh(
        &r2,
        "ip addr add 10.90.0.99/32 dev eth0; ping -c 1 -W 1 -I 10.90.0.99 10.89.0.2",
    );
    let stats: serde_json::Value =
        serde_json::from_str(&d.ok(&["stats", &format!("vif{id2}.0"), "--json"])).unwrap();
    let drops = stats["ports"][0]["rx_drops"].to_string();
    assert!(drops.contains("spoof"), "{drops}");

    // Detach removes the routes.
    d.ok(&["network-detach", &r1, "0"]);
    assert!(!dom0.sh("ip route show").contains("10.89.0.50"));
    let _ = id1;
}

fn scopeguard(dir: String) -> impl Drop {
    struct G(String);
    impl Drop for G {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    G(dir)
}

#[test]
fn vif_nat_domains_get_xens_addresses_by_dhcp_and_are_masqueraded() {
    require_root();
    require_tool("dhclient");
    require_tool("iperf3");
    let dom0 = Netns::new("vn0-");
    let out = Netns::new("vnout-");
    dom0.sh(&format!(
        "ip link add up0 type veth peer name eth0 netns {}",
        out.name
    ));
    dom0.sh("ip addr add 10.87.0.1/24 dev up0 && ip link set up0 up && ip route add default via 10.87.0.2");
    // The outside has no route back to the guests: only masquerade gets replies home.
    out.sh("ip addr add 10.87.0.2/24 dev eth0 && ip link set eth0 up && ip link set lo up");
    let d = Daemon::start_in(&dom0.name);
    // A NAT network on the same uplink: its rule keeping dom0's kernel out of the
    // switch's flows must leave the kernel's own masquerade (vif-nat's) alone.
    let def = d.dir.join("lab.toml");
    std::fs::write(
        &def,
        "name = \"lab\"\nbridge = \"labbr\"\naddress = \"10.91.0.1/24\"\nuplink = \"up0\"\n",
    )
    .unwrap();
    d.ok(&["net", "define", def.to_str().unwrap()]);
    d.ok(&["net", "start", "lab"]);

    let a = unique("vna");
    let b = unique("vnb");
    let mut guards = Vec::new();
    for g in [&a, &b] {
        let etc = format!("/etc/netns/{g}");
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::write(format!("{etc}/resolv.conf"), "").unwrap();
        guards.push(scopeguard(etc));
    }
    let ida = d.create(&a, "vif = [ 'script=vif-nat' ]");
    d.create(&b, "vif = [ 'script=vif-nat,ip=192.168.77.5/24' ]");

    // a: Xen's default address 10.<domid/256>.<domid%256>.1/16, router .128.
    let (hi, lo) = (ida / 256, ida % 256);
    let want_a = format!("10.{hi}.{lo}.1/16");
    let router_a = format!("10.{hi}.{lo}.128");
    for (g, want, router) in [
        (&a, want_a.as_str(), router_a.as_str()),
        (&b, "192.168.77.5/24", "192.168.77.132"),
    ] {
        guest_ok(g, "ip link set lo up");
        guest_ok(
            g,
            &format!("timeout 30 dhclient -1 -lf /tmp/{g}.leases -pf /tmp/{g}.pid eth0"),
        );
        let _ = guest_sh(g, &format!("dhclient -x -pf /tmp/{g}.pid"));
        let _ = std::fs::remove_file(format!("/tmp/{g}.leases"));
        let addr = guest_ok(g, "ip -4 -o addr show dev eth0");
        assert!(addr.contains(&format!("inet {want} ")), "{addr}");
        let def = guest_ok(g, "ip route show default");
        assert!(def.contains(&format!("via {router}")), "{def}");
        // dom0 holds the router address and answers it.
        guest_ok(g, &format!("ping -c 1 -W 2 {router}"));
    }
    let routes = dom0.sh("ip route show");
    assert!(
        routes.contains(&format!("10.{hi}.{lo}.1 dev rt-up0"))
            && routes.contains(&format!("src {router_a}")),
        "{routes}"
    );

    // Both reach a TCP server outside, which sees dom0's uplink address.
    for g in [&a, &b] {
        let srv = Command::new("ip")
            .args([
                "netns", "exec", &out.name, "timeout", "20", "iperf3", "-s", "-1", "-J",
            ])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(300));
        guest_ok(g, "timeout 15 iperf3 -c 10.87.0.2 -t 1");
        let j: serde_json::Value =
            serde_json::from_slice(&srv.wait_with_output().unwrap().stdout).unwrap();
        assert_eq!(j["start"]["connected"][0]["remote_host"], "10.87.0.1");
    }
    // And each other, routed through the switch.
    guest_ok(&a, "ping -c 2 -i 0.2 -W 2 192.168.77.5");

    // Detach takes the router address, the route and the masquerade with it.
    d.ok(&["network-detach", &a, "0"]);
    let routes = dom0.sh("ip route show");
    assert!(!routes.contains(&format!("10.{hi}.{lo}.1 ")), "{routes}");
    assert!(!dom0.sh("ip -4 addr show").contains(&router_a));
    let set = dom0.sh("nft list set ip domnet_vifnat guests");
    assert!(!set.contains(&format!("10.{hi}.{lo}.1 ")), "{set}");
    d.ok(&["network-detach", &b, "0"]);
    let tables = dom0.sh("nft list tables");
    assert!(!tables.contains("domnet_vifnat"), "{tables}");
}
