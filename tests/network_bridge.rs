//! `network-bridge start|stop` in a namespace standing in for dom0, with an uplink veth
//! to an "outside" namespace: dom0 keeps its address and connectivity through the
//! switch, and `stop` leaves `ip -j addr` and `ip -j route` exactly as before.

mod common;

use common::{net_state, require_root, Daemon, Netns};

fn topology() -> (Netns, Netns) {
    let dom0 = Netns::new("nbd0-");
    let out = Netns::new("nbout-");
    dom0.sh(&format!(
        "ip link add eth0 type veth peer name eth0 netns {}",
        out.name
    ));
    dom0.sh("ip addr add 10.210.0.1/24 dev eth0 && ip addr add 10.210.0.11/24 dev eth0");
    dom0.sh("ip -6 addr add 2001:db8:210::1/64 dev eth0 nodad");
    dom0.sh("ip link set eth0 up");
    dom0.sh(
        "ip route add default via 10.210.0.2 && ip route add 10.99.0.0/16 via 10.210.0.2 metric 7",
    );
    out.sh("ip addr add 10.210.0.2/24 dev eth0 && ip -6 addr add 2001:db8:210::2/64 dev eth0 nodad && ip link set eth0 up");
    (dom0, out)
}

#[test]
fn start_moves_dom0_onto_the_bridge_and_stop_restores_exactly() {
    require_root();
    let (dom0, out) = topology();
    let before = net_state(&dom0);
    let d = Daemon::start_in(&dom0.name);

    d.ok(&["network-bridge", "start", "bridge=xenbr0", "netdev=eth0"]);
    // The address now lives on the host port; the NIC carries none of it.
    let br = dom0.sh("ip -j addr show dev xenbr0");
    assert!(
        br.contains("10.210.0.1") && br.contains("10.210.0.11") && br.contains("2001:db8:210::1"),
        "{br}"
    );
    assert!(!dom0.sh("ip -j addr show dev eth0").contains("10.210.0.1"));
    assert!(dom0.sh("ip route show default").contains("dev xenbr0"));
    // dom0 still reaches the outside, now through the switch (host port → uplink).
    dom0.sh("ping -c 2 -i 0.2 -W 2 10.210.0.2");
    out.sh("ping -c 2 -i 0.2 -W 2 10.210.0.1");
    // Twice is a no-op.
    d.ok(&["network-bridge", "start", "bridge=xenbr0", "netdev=eth0"]);
    let show = d.ok(&["bridge", "show"]);
    assert!(
        show.lines().nth(1).unwrap().starts_with("xenbr0\t"),
        "{show}"
    );
    assert!(show.contains("eth0"), "{show}");
    let stats = d.ok(&["stats", "eth0"]);
    assert!(stats.contains("eth0"), "{stats}");

    d.ok(&["network-bridge", "stop", "bridge=xenbr0"]);
    assert_eq!(
        net_state(&dom0),
        before,
        "stop must restore addresses and routes exactly"
    );
    dom0.sh("ping -c 1 -W 2 10.210.0.2");
    assert!(
        dom0.exec("ip link show xenbr0").status.code() != Some(0),
        "host port removed"
    );
    // Stop twice is a no-op too.
    d.ok(&["network-bridge", "stop", "bridge=xenbr0"]);
}

#[test]
fn legacy_renames_follow_xen_3() {
    require_root();
    let (dom0, out) = topology();
    let before = net_state(&dom0);
    let mac = dom0.sh("cat /sys/class/net/eth0/address");
    let d = Daemon::start_in(&dom0.name);
    d.ok(&[
        "network-bridge",
        "start",
        "bridge=xenbr0",
        "netdev=eth0",
        "--legacy-renames",
    ]);
    let p: serde_json::Value = serde_json::from_str(&dom0.sh("ip -j link show peth0")).unwrap();
    assert_eq!(p[0]["address"], "fe:ff:ff:ff:ff:ff");
    assert!(
        p[0]["flags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f == "NOARP"),
        "{p}"
    );
    assert_eq!(
        dom0.sh("cat /sys/class/net/xenbr0/address"),
        mac,
        "the bridge takes the NIC's MAC"
    );
    assert!(dom0.sh("ip -j addr show dev xenbr0").contains("10.210.0.1"));
    dom0.sh("ping -c 2 -i 0.2 -W 2 10.210.0.2");
    out.sh("ping -c 1 -W 2 10.210.0.1");
    d.ok(&["network-bridge", "stop", "bridge=xenbr0"]);
    assert_eq!(net_state(&dom0), before);
}

#[test]
fn a_failure_half_way_rolls_back() {
    require_root();
    let (dom0, _out) = topology();
    let before = net_state(&dom0);
    let d = Daemon::start_in(&dom0.name);
    // A bridge of that name already exists as a kernel device: start must fail cleanly.
    dom0.sh("ip link add xenbr9 type veth peer name xenbr9p");
    let o = d.cli(&["network-bridge", "start", "bridge=xenbr9", "netdev=eth0"]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    dom0.sh("ip link del xenbr9");
    assert_eq!(net_state(&dom0), before, "nothing changed");
    dom0.sh("ping -c 1 -W 2 10.210.0.2");
    let status = d.ok(&["network-bridge", "status", "bridge=xenbr9"]);
    assert!(status.contains("\"running\": false"), "{status}");
}
