//! NAT networks (libvirt's default network, inside the switch): Debian's dhclient in
//! the guests, masquerade to dom0's uplink, port forwards with hairpin, ICMP errors
//! translated back.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{
    dhclient, guest_ok, guest_sh, require_root, require_tool, unique, Daemon, Netns, NetnsEtc,
};

#[test]
fn default_network_dhcp_masquerade_forwards_and_icmp_errors() {
    require_root();
    for t in ["dhclient", "iperf3", "python3"] {
        require_tool(t);
    }
    let dom0 = Netns::new("nat0-");
    let out = Netns::new("natout-");
    dom0.sh(&format!(
        "ip link add up0 type veth peer name eth0 netns {}",
        out.name
    ));
    dom0.sh("ip addr add 10.88.0.1/24 dev up0 && ip link set up0 up && ip route add default via 10.88.0.2");
    out.sh("ip addr add 10.88.0.2/24 dev eth0 && ip link set eth0 up");
    let d = Daemon::start_in(&dom0.name);

    // `default` exists out of the box.
    let list = d.ok(&["net", "list"]);
    assert!(
        list.contains("default") && list.contains("virbr0") && list.contains("inactive"),
        "{list}"
    );
    d.ok(&["net", "start", "default"]);
    assert!(d.ok(&["net", "list"]).contains("active"));

    let a = unique("nata");
    let b = unique("natb");
    let _ea = NetnsEtc::new(&a);
    let _eb = NetnsEtc::new(&b);
    d.create(&a, "vif = [ 'bridge=virbr0' ]");
    d.create(&b, "vif = [ 'bridge=virbr0,ip=192.168.122.50' ]");

    // dhclient: an address in range, the default route, the gateway as DNS.
    let addr_a = dhclient(&a);
    let ip_a: std::net::Ipv4Addr = addr_a.split('/').next().unwrap().parse().unwrap();
    let o = ip_a.octets();
    assert!(
        o[..3] == [192, 168, 122] && (2..=254).contains(&o[3]) && addr_a.ends_with("/24"),
        "{addr_a}"
    );
    assert!(guest_ok(&a, "ip route show default").contains("via 192.168.122.1"));
    let resolv = std::fs::read_to_string(format!("/etc/netns/{a}/resolv.conf")).unwrap();
    assert!(resolv.contains("nameserver 192.168.122.1"), "{resolv}");
    // ip= makes the address real: exactly .50.
    assert_eq!(dhclient(&b), "192.168.122.50/24");

    // Both reach a TCP server outside, which sees dom0's uplink address.
    for g in [&a, &b] {
        let srv = Command::new("ip")
            .args([
                "netns", "exec", &out.name, "timeout", "20", "iperf3", "-s", "-1", "-J",
            ])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        guest_ok(g, "timeout 15 iperf3 -c 10.88.0.2 -t 1");
        let j: serde_json::Value =
            serde_json::from_slice(&srv.wait_with_output().unwrap().stdout).unwrap();
        assert_eq!(
            j["start"]["connected"][0]["remote_host"], "10.88.0.1",
            "masqueraded to the uplink address"
        );
    }

    // A port forward from outside reaches a server in b, and from a through the hairpin.
    d.ok(&[
        "net",
        "forward",
        "add",
        "default",
        "tcp:8080:192.168.122.50:5201",
    ]);
    assert!(d
        .ok(&["net", "forward", "list", "default"])
        .contains("tcp:8080:192.168.122.50:5201"));
    for (client, who) in [(&out.name, "outside"), (&a, "hairpin")] {
        let srv = Command::new("ip")
            .args([
                "netns", "exec", &b, "timeout", "20", "iperf3", "-s", "-1", "-J",
            ])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let c = guest_sh(client, "timeout 15 iperf3 -c 10.88.0.1 -p 8080 -t 1");
        let _ = srv.wait_with_output();
        assert!(
            c.status.success(),
            "{who}: {}{}",
            String::from_utf8_lossy(&c.stdout),
            String::from_utf8_lossy(&c.stderr)
        );
    }

    // A forward on a port below 1024 that dom0 has no socket on: dom0's kernel keeps
    // quiet (no RST) and the switch carries the connection.
    d.ok(&[
        "net",
        "forward",
        "add",
        "default",
        "tcp:80:192.168.122.50:5201",
    ]);
    let srv = Command::new("ip")
        .args(["netns", "exec", &b, "timeout", "20", "iperf3", "-s", "-1"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let c = guest_sh(&out.name, "timeout 15 iperf3 -c 10.88.0.1 -p 80 -t 1");
    let _ = srv.wait_with_output();
    assert!(
        c.status.success(),
        "forward on port 80: {}{}",
        String::from_utf8_lossy(&c.stdout),
        String::from_utf8_lossy(&c.stderr)
    );

    // UDP to a closed port outside: the ICMP error comes back translated (the socket
    // sees ECONNREFUSED).
    let probe = "python3 -c \"import socket,sys; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3); s.connect(('10.88.0.2', 9)); s.send(b'x');\ntry:\n    s.recv(10)\nexcept ConnectionRefusedError:\n    sys.exit(0)\nsys.exit(1)\"";
    guest_ok(&a, probe);

    let stats: serde_json::Value =
        serde_json::from_str(&d.ok(&["stats", "virbr0:gw", "--json"])).unwrap();
    let driver = &stats["ports"][0]["driver"];
    let get = |k: &str| {
        driver
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e[0] == k)
            .and_then(|e| e[1].as_u64())
            .unwrap_or(0)
    };
    assert!(get("nat_new_masquerade") >= 2, "{driver}");
    assert!(
        get("nat_new_forward") >= 1 && get("nat_new_hairpin") >= 1,
        "{driver}"
    );
    assert!(get("nat_icmp_related") >= 1, "{driver}");
    assert!(get("dhcp_ack") >= 2, "{driver}");
}
