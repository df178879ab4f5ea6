//! NAT networks under pressure: a guest that opens more flows than its share of the
//! connection table, a network whose masquerade ports run out, DHCP starvation and
//! malformed DHCP. Each is bounded and counted, and the other guest keeps working.
//! Also the gateway's DNS forwarding, with glibc's resolver in the guest.

mod common;

use common::{
    dhclient, driver, guest_ok, guest_sh, require_root, require_tool, unique, Background, Daemon,
    Netns, NetnsEtc,
};

fn helper(name: &str) -> String {
    format!("{}/tests/helpers/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// dom0 with an uplink veth to an "outside" namespace (10.92.0.2) running a UDP echo
/// on port 7, and a daemon whose network `lab` (bridge `labbr`, 10.91.0.1/24) has the
/// given extra TOML lines.
struct Lab {
    d: Daemon,
    _out: Netns,
    _dom0: Netns,
    _echo: Background,
}

impl Lab {
    fn new(tag: &str, extra: &str) -> Lab {
        let dom0 = Netns::new(&format!("{tag}0-"));
        let out = Netns::new(&format!("{tag}o-"));
        dom0.sh(&format!(
            "ip link add up0 type veth peer name eth0 netns {}",
            out.name
        ));
        dom0.sh("ip addr add 10.92.0.1/24 dev up0 && ip link set up0 up && ip route add default via 10.92.0.2");
        out.sh("ip addr add 10.92.0.2/24 dev eth0 && ip link set eth0 up && ip link set lo up");
        let echo = Background::in_netns(&out.name, &format!("python3 {} 7", helper("udp_echo.py")));
        let d = Daemon::start_in(&dom0.name);
        let def = d.dir.join("lab.toml");
        std::fs::write(
            &def,
            format!(
                "name = \"lab\"\nbridge = \"labbr\"\naddress = \"10.91.0.1/24\"\n\
                 dhcp_start = \"10.91.0.100\"\ndhcp_end = \"10.91.0.200\"\nuplink = \"up0\"\n{extra}\n"
            ),
        )
        .unwrap();
        d.ok(&["net", "define", def.to_str().unwrap()]);
        d.ok(&["net", "start", "lab"]);
        Lab {
            d,
            _out: out,
            _dom0: dom0,
            _echo: echo,
        }
    }

    /// A guest on `labbr` with a static address (by DHCP through `ip=`).
    fn guest_sh(&self, name: &str, ip: &str) -> NetnsEtc {
        let etc = NetnsEtc::new(name);
        self.d
            .create(name, &format!("vif = [ 'bridge=labbr,ip={ip}' ]"));
        assert_eq!(dhclient(name), format!("{ip}/24"));
        etc
    }

    /// How many of `count` UDP flows from `ns` (source ports from `first`) are echoed.
    fn flows(&self, ns: &str, first: u16, count: u16) -> u64 {
        let out = guest_ok(
            ns,
            &format!(
                "python3 {} 10.92.0.2 7 {first} {count}",
                helper("udp_flows.py")
            ),
        );
        out.trim()
            .parse()
            .unwrap_or_else(|_| panic!("udp_flows: {out}"))
    }

    /// The gateway port's whole report, for failure messages.
    fn dump(&self) -> String {
        common::port_stats(&self.d, "labbr:gw").to_string()
    }

    fn gw(&self, name: &str) -> u64 {
        driver(&self.d, "labbr:gw", name)
    }
}

#[test]
fn a_guest_over_its_connection_share_is_capped_and_counted_while_another_keeps_working() {
    require_root();
    for t in ["dhclient", "python3"] {
        require_tool(t);
    }
    let lab = Lab::new(
        "ncz",
        "max_connections = 35\nmax_connections_per_guest = 20",
    );
    let (a, b) = (unique("ncza"), unique("nczb"));
    let _ea = lab.guest_sh(&a, "10.91.0.10");
    let _eb = lab.guest_sh(&b, "10.91.0.11");

    // a opens 60 flows: 20 get through, the rest are refused (zone full) and counted.
    let ok = lab.flows(&a, 20000, 60);
    assert!((15..=20).contains(&ok), "a got {ok} flows through");
    assert!(lab.gw("conntrack_zone_full") >= 40, "zone_full not counted");
    // b, on the same network, is unaffected.
    assert_eq!(lab.flows(&b, 20000, 10), 10, "b lost flows to a's flood");
    // The table itself (35) overflows on b's next ten: counted, never a crash, and the
    // flows already tracked keep working.
    let more = lab.flows(&b, 20010, 10);
    assert!(more <= 5, "b got {more} flows past the table limit");
    assert!(
        lab.gw("conntrack_full") + lab.gw("conntrack_early_dropped") >= 5,
        "{}",
        lab.dump()
    );
    assert!(lab.gw("nat_connections") <= 35, "{}", lab.dump());
    assert_eq!(lab.flows(&b, 20000, 10), 10, "b's tracked flows broke");
}

#[test]
fn masquerade_port_exhaustion_is_bounded_and_counted() {
    require_root();
    for t in ["dhclient", "python3"] {
        require_tool(t);
    }
    // Ten source ports for the whole network.
    let lab = Lab::new("ncp", "nat_ports = \"40000-40009\"");
    let (a, b) = (unique("ncpa"), unique("ncpb"));
    let _ea = lab.guest_sh(&a, "10.91.0.10");
    let _eb = lab.guest_sh(&b, "10.91.0.11");

    let ok = lab.flows(&a, 21000, 8);
    assert_eq!(ok, 8, "the first flows fit in the range: {}", lab.dump());
    // b asks for 8 more: only 2 ports are left.
    let ok_b = lab.flows(&b, 21000, 8);
    assert_eq!(ok_b, 2, "b got {ok_b} flows through ten ports");
    assert!(lab.gw("nat_no_port") >= 6, "no_port not counted");
    // Established flows keep working through exhaustion.
    assert_eq!(lab.flows(&a, 21000, 8), 8, "a's established flows broke");
    assert!(lab.gw("nat_connections") <= 10);
}

#[test]
fn dhcp_starvation_and_garbage_are_bounded_and_counted_and_dhclient_still_works() {
    require_root();
    for t in ["dhclient", "python3"] {
        require_tool(t);
    }
    let lab = Lab::new("ncd", "");
    let (a, b) = (unique("ncda"), unique("ncdb"));
    let _ea = NetnsEtc::new(&a);
    let _eb = NetnsEtc::new(&b);
    lab.d.create(&a, "vif = [ 'bridge=labbr' ]");
    lab.d.create(&b, "vif = [ 'bridge=labbr' ]");
    guest_ok(&a, "ip link set lo up && ip link set eth0 up");

    // Ten malformed payloads (within the per-port allowance: each is parsed and
    // refused), then 500 DISCOVERs with random client addresses.
    guest_ok(
        &a,
        &format!("python3 {} garbage 10", helper("dhcp_flood.py")),
    );
    assert_eq!(lab.gw("dhcp_malformed"), 10, "garbage: {}", lab.dump());
    guest_ok(
        &a,
        &format!("python3 {} starve 500", helper("dhcp_flood.py")),
    );
    let refused = lab.gw("dhcp_chaddr_mismatch") + lab.gw("dhcp_rate_limited");
    assert_eq!(refused, 500, "starvation: {}", lab.dump());
    assert!(lab.gw("dhcp_rate_limited") >= 450, "{}", lab.dump());
    assert_eq!(lab.gw("dhcp_leases"), 0, "the flood took leases");
    assert_eq!(lab.gw("dhcp_offer"), 0, "the flood got offers");

    // b still gets an address in range; so does a, once its allowance refills.
    let addr = dhclient(&b);
    assert!(
        addr.starts_with("10.91.0.1") && addr.ends_with("/24"),
        "{addr}"
    );
    let addr = dhclient(&a);
    assert!(addr.starts_with("10.91.0.1"), "{addr}");
}

#[test]
fn guests_resolve_names_through_the_gateway_which_forwards_to_the_configured_servers() {
    require_root();
    for t in ["dhclient", "python3", "getent"] {
        require_tool(t);
    }
    let lab = Lab::new("ncn", "dns_servers = [\"10.92.0.2\"]");
    let _dns = Background::in_netns(
        &lab._out.name,
        &format!("python3 {} 10.1.2.3", helper("dns_answer.py")),
    );
    let a = unique("ncna");
    let _ea = NetnsEtc::new(&a);
    lab.d.create(&a, "vif = [ 'bridge=labbr' ]");
    dhclient(&a);
    // dhclient-script wrote the gateway as the guest's resolver.
    let resolv = std::fs::read_to_string(format!("/etc/netns/{a}/resolv.conf")).unwrap();
    assert!(resolv.contains("nameserver 10.91.0.1"), "{resolv}");
    let got = guest_ok(&a, "getent ahostsv4 www.example.test");
    assert!(got.starts_with("10.1.2.3"), "{got}");
    // A negative answer comes back as one too (not a timeout).
    let o = guest_sh(&a, "timeout 5 getent ahostsv4 nothing.missing");
    assert_eq!(o.status.code(), Some(2), "NXDOMAIN: {o:?}");
    assert!(lab.gw("dns_queries_sent") >= 2, "{}", lab.dump());
    assert!(lab.gw("dns_answers") >= 2, "{}", lab.dump());
}

#[test]
fn an_isolated_network_is_a_bridge_with_dhcp_and_no_way_out() {
    require_root();
    require_tool("dhclient");
    // No uplink in this dom0 at all: an isolated network needs none.
    let dom0 = Netns::new("nci0-");
    let d = Daemon::start_in(&dom0.name);
    let def = d.dir.join("iso.toml");
    std::fs::write(
        &def,
        "name = \"iso\"\nbridge = \"isobr\"\nforward = \"none\"\naddress = \"10.93.0.1/24\"\n\
         dhcp_start = \"10.93.0.100\"\ndhcp_end = \"10.93.0.150\"\n",
    )
    .unwrap();
    d.ok(&["net", "define", def.to_str().unwrap()]);
    d.ok(&["net", "start", "iso"]);
    let (a, b) = (unique("ncia"), unique("ncib"));
    let _ea = NetnsEtc::new(&a);
    let _eb = NetnsEtc::new(&b);
    d.create(&a, "vif = [ 'bridge=isobr,ip=10.93.0.7' ]");
    d.create(&b, "vif = [ 'bridge=isobr' ]");
    // ip= on a bridged vif is made real by the bridge's DHCP; the other gets the pool.
    assert_eq!(dhclient(&a), "10.93.0.7/24");
    let addr_b = dhclient(&b);
    let ip_b = addr_b.split('/').next().unwrap_or_default().to_string();
    let last: u8 = ip_b.rsplit('.').next().unwrap().parse().unwrap();
    assert!(
        ip_b.starts_with("10.93.0.") && (100..=150).contains(&last),
        "{addr_b}"
    );
    guest_ok(&a, &format!("ping -c 2 -i 0.2 -W 2 {ip_b}"));
    guest_ok(&a, "ping -c 1 -W 2 10.93.0.1");
    // Nothing leaves: the gateway refuses anything for the outside with ICMP
    // "administratively prohibited" (ping says "Packet filtered").
    let o = guest_sh(&a, "ping -c 1 -W 2 192.0.2.1");
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        !o.status.success() && text.contains("From 10.93.0.1") && text.contains("filtered"),
        "{text}"
    );
}
