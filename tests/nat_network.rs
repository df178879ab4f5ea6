//! NAT networks (libvirt's default network, inside the switch): Debian's dhclient in
//! the guests, masquerade to dom0's uplink, port forwards with hairpin, ICMP errors
//! translated back.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{require_root, require_tool, unique, Daemon, Netns};

fn guest(name: &str, cmd: &str) -> std::process::Output {
    Command::new("ip")
        .args(["netns", "exec", name, "sh", "-c", cmd])
        .output()
        .unwrap()
}

fn guest_ok(name: &str, cmd: &str) -> String {
    let o = guest(name, cmd);
    assert!(
        o.status.success(),
        "[{name}] {cmd}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Per-namespace resolv.conf, so `ip netns exec` bind-mounts it and dhclient-script
/// never touches the host's. Removed on drop.
struct NetnsEtc(String);

impl NetnsEtc {
    fn new(ns: &str) -> NetnsEtc {
        let dir = format!("/etc/netns/{ns}");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(format!("{dir}/resolv.conf"), "").unwrap();
        NetnsEtc(dir)
    }
}

impl Drop for NetnsEtc {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs dhclient once on eth0 of `ns`; returns the address it configured.
fn dhclient(ns: &str) -> String {
    let lease = format!("/tmp/{ns}.leases");
    let pid = format!("/tmp/{ns}.pid");
    guest_ok(ns, "ip link set lo up");
    guest_ok(
        ns,
        &format!("timeout 30 dhclient -1 -lf {lease} -pf {pid} eth0"),
    );
    let _ = guest(ns, &format!("dhclient -x -pf {pid}"));
    let _ = std::fs::remove_file(&lease);
    let addr = guest_ok(ns, "ip -4 -o addr show dev eth0");
    addr.split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .unwrap_or_default()
        .to_string()
}

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
        let c = guest(client, "timeout 15 iperf3 -c 10.88.0.1 -p 8080 -t 1");
        let _ = srv.wait_with_output();
        assert!(
            c.status.success(),
            "{who}: {}{}",
            String::from_utf8_lossy(&c.stdout),
            String::from_utf8_lossy(&c.stderr)
        );
    }

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
