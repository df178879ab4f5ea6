//! Bridge mode end to end, in namespaces: a namespace standing in for dom0, whose
//! uplink veth leads to an "outside" namespace (the LAN and its gateway), guest
//! domains on xenbr0 after `network-bridge start`, and the tools that look inside the
//! switch (`fdb`, `stats`, `capture`).
//!
//! * forwarding: domain↔domain, domain↔dom0 (the host port's address), domain↔outside,
//!   ping and TCP (iperf3) each; `fdb show` puts every learned MAC on the right port;
//! * MAC table: learned entries age out, static ones stay;
//! * hostile guests: spoofed source MAC, spoofed source IP, ARP poisoning of the
//!   gateway, 100k random source MACs (from a guest and from the uplink), runts from a
//!   hostile external frontend, frames over the MTU — each dropped and counted under
//!   its own reason (`domnet stats PORT --json`) while the other ports keep forwarding;
//! * `network-bridge stop` refuses while vifs are attached and restores dom0 exactly
//!   after they are gone;
//! * `domnet capture` output read back by tcpdump.
//!
//! The tests run one at a time (they share 2 vCPUs with their daemons and iperf3).

mod common;

use std::net::Ipv4Addr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::frames::{self, mac, mac_str, Mac, BROADCAST};
use common::{
    driver, net_state, port_stats, require_root, require_tool, rx_drops, tx_drops, unique,
    wait_for, Background, Daemon, Netns,
};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// A guest domain: its namespace (named after it), id, vif port and addresses.
struct Guest {
    name: String,
    id: u16,
    ip: Ipv4Addr,
    mac: Mac,
}

impl Guest {
    fn port(&self) -> String {
        format!("vif{}.0", self.id)
    }

    fn exec(&self, cmd: &str) -> std::process::Output {
        std::process::Command::new("ip")
            .args(["netns", "exec", &self.name, "sh", "-c", cmd])
            .output()
            .unwrap()
    }

    fn sh(&self, cmd: &str) -> String {
        let o = self.exec(cmd);
        assert!(
            o.status.success(),
            "[{}] {cmd}: {}{}",
            self.name,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// eth0's tx_dropped: frames the guest kernel's own TAP queue dropped before
    /// netfront could read them (a full queue, as on any NIC).
    fn tx_dropped(&self) -> u64 {
        self.sh("cat /sys/class/net/eth0/statistics/tx_dropped")
            .trim()
            .parse()
            .unwrap()
    }
}

/// Creates a guest on `bridge` with `vif_extra` appended to its vif spec (e.g.
/// `,ip=10.0.0.5`), gives eth0 `ip`/24 with IPv6 off (so the only traffic is the
/// test's), and a default route via `gw` if given.
fn guest(d: &Daemon, bridge: &str, vif_extra: &str, ip: Ipv4Addr, gw: Option<Ipv4Addr>) -> Guest {
    let name = unique("bm");
    let id = d.create(&name, &format!("vif = [ 'bridge={bridge}{vif_extra}' ]"));
    let g = Guest {
        mac: [0; 6],
        name,
        id,
        ip,
    };
    g.sh(&format!(
        "sysctl -qw net.ipv6.conf.eth0.disable_ipv6=1 && ip link set lo up && \
         ip addr add {ip}/24 dev eth0 && ip link set eth0 up"
    ));
    if let Some(gw) = gw {
        g.sh(&format!("ip route add default via {gw}"));
    }
    let m = mac(&g.sh("cat /sys/class/net/eth0/address"));
    Guest { mac: m, ..g }
}

fn ping_ok(ns: &str, dst: Ipv4Addr) -> bool {
    std::process::Command::new("ip")
        .args(["netns", "exec", ns, "ping", "-n", "-c", "1", "-W", "1"])
        .arg(dst.to_string())
        .output()
        .unwrap()
        .status
        .success()
}

/// Pings until one reply comes (ARP, learning), then 3 more that must all succeed.
fn ping(ns: &str, dst: Ipv4Addr) {
    assert!(
        wait_for(Duration::from_secs(10), || ping_ok(ns, dst)),
        "{ns} cannot reach {dst}"
    );
    let o = std::process::Command::new("ip")
        .args([
            "netns", "exec", ns, "ping", "-n", "-c", "3", "-i", "0.1", "-W", "2",
        ])
        .arg(dst.to_string())
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{ns} -> {dst}: {}",
        String::from_utf8_lossy(&o.stdout)
    );
}

/// One second of iperf3 TCP from `client_ns` to an iperf3 server in `server_ns` at
/// `dst`; returns the bytes the server received.
fn tcp(server_ns: &str, client_ns: &str, dst: Ipv4Addr) -> u64 {
    let _server = Background::in_netns(server_ns, "iperf3 -s -1 -p 5201");
    assert!(
        wait_for(Duration::from_secs(5), || {
            std::process::Command::new("ip")
                .args(["netns", "exec", server_ns, "ss", "-Hltn", "sport = :5201"])
                .output()
                .map(|o| !o.stdout.is_empty())
                .unwrap_or(false)
        }),
        "iperf3 server in {server_ns} did not listen"
    );
    let o = std::process::Command::new("timeout")
        .args(["30", "ip", "netns", "exec", client_ns, "iperf3", "-c"])
        .arg(dst.to_string())
        .args(["-p", "5201", "-t", "1", "-J"])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "iperf3 {client_ns} -> {dst}: {out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let bytes = v["end"]["sum_received"]["bytes"].as_u64().unwrap_or(0);
    assert!(
        bytes > 1_000_000,
        "iperf3 {client_ns} -> {dst} moved only {bytes} bytes"
    );
    bytes
}

/// `fdb show --json` as (mac, port, is_static) rows.
fn fdb(d: &Daemon, bridge: &str) -> Vec<(String, String, bool)> {
    let v: serde_json::Value =
        serde_json::from_str(&d.ok(&["fdb", "show", bridge, "--json"])).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["mac"].as_str().unwrap().to_string(),
                r["port"].as_str().unwrap().to_string(),
                r["is_static"].as_bool().unwrap(),
            )
        })
        .collect()
}

fn fdb_port_of(rows: &[(String, String, bool)], m: &Mac) -> Option<String> {
    let m = mac_str(m);
    rows.iter().find(|r| r.0 == m).map(|r| r.1.clone())
}

/// `bridge show --json`'s row of `bridge`.
fn bridge_row(d: &Daemon, bridge: &str) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_str(&d.ok(&["bridge", "show", "--json"])).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == bridge)
        .cloned()
        .unwrap_or_else(|| panic!("no bridge {bridge}: {v}"))
}

/// Received / transmitted counts of a finished `ping` run.
fn ping_summary(out: &std::process::Output) -> (u64, u64) {
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .unwrap_or_else(|| panic!("no ping summary: {text}"));
    let nums: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    (nums[1], nums[0])
}

/// dom0 with an uplink: a namespace standing in for dom0 whose eth0 (a veth) leads to
/// an "outside" namespace holding the LAN's gateway `10.<net>.0.254`; dom0 is
/// `10.<net>.0.1/24` with its default route via the gateway. Then a private daemon in
/// dom0 and `network-bridge start` (dom0's address moves to the host port xenbr0).
struct Uplinked {
    // Field order is drop order: the daemon (and its guests) before the namespaces.
    d: Daemon,
    dom0: Netns,
    out: Netns,
    net: u8,
    before: serde_json::Value,
}

impl Uplinked {
    fn new(net: u8) -> Uplinked {
        let dom0 = Netns::new("bmd0-");
        let out = Netns::new("bmout-");
        dom0.sh(&format!(
            "ip link add eth0 type veth peer name eth0 netns {}",
            out.name
        ));
        dom0.sh(&format!(
            "ip addr add 10.{net}.0.1/24 dev eth0 && ip link set eth0 up && \
             ip route add default via 10.{net}.0.254"
        ));
        out.sh(&format!(
            "sysctl -qw net.ipv6.conf.eth0.disable_ipv6=1; \
             ip addr add 10.{net}.0.254/24 dev eth0 && ip link set eth0 up"
        ));
        let before = net_state(&dom0);
        let d = Daemon::start_in(&dom0.name);
        d.ok(&["network-bridge", "start", "bridge=xenbr0", "netdev=eth0"]);
        Uplinked {
            d,
            dom0,
            out,
            net,
            before,
        }
    }

    fn ip(&self, host: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, self.net, 0, host)
    }

    fn gw(&self) -> Ipv4Addr {
        self.ip(254)
    }

    /// A guest on xenbr0 with `ip=` (anti-spoofing on) and a default route via the
    /// gateway.
    fn guest(&self, host: u8) -> Guest {
        let ip = self.ip(host);
        guest(&self.d, "xenbr0", &format!(",ip={ip}"), ip, Some(self.gw()))
    }

    fn out_mac(&self) -> Mac {
        mac(&self.out.sh("cat /sys/class/net/eth0/address"))
    }

    fn host_port_mac(&self) -> Mac {
        mac(&self.dom0.sh("cat /sys/class/net/xenbr0/address"))
    }
}

/// A dom0 namespace with IPv6 off and a daemon with one plain bridge (`bridge add`)
/// holding dom0's `10.<net>.0.1/24` on its host port.
fn plain_bridge(net: u8, aging: Option<u64>) -> (Daemon, Netns) {
    let dom0 = Netns::new("bmp0-");
    dom0.sh("sysctl -qw net.ipv6.conf.default.disable_ipv6=1 net.ipv6.conf.all.disable_ipv6=1");
    let d = Daemon::start_in(&dom0.name);
    let aging_s = aging.map(|a| a.to_string());
    let mut args = vec!["bridge", "add", "xenbr0"];
    if let Some(a) = &aging_s {
        args.extend(["--aging", a]);
    }
    d.ok(&args);
    dom0.sh(&format!("ip addr add 10.{net}.0.1/24 dev xenbr0"));
    (d, dom0)
}

#[test]
fn xenbr0_forwards_between_domains_dom0_and_the_outside() {
    require_root();
    require_tool("iperf3");
    let _s = serial();
    let t = Uplinked::new(240);
    let g1 = t.guest(11);
    let g2 = t.guest(12);
    let dom0_ip = t.ip(1);
    // (Drops so far: IPv6 the guests sent before they turned it off; their `ip=`
    // allows IPv4 only.)
    let drops1 = port_stats(&t.d, &g1.port())["rx_drops"].clone();
    let drops2 = port_stats(&t.d, &g2.port())["rx_drops"].clone();

    // Ping: domain↔domain, domain↔dom0 (the host port's address), domain↔outside.
    ping(&g1.name, g2.ip);
    ping(&g2.name, g1.ip);
    ping(&g1.name, dom0_ip);
    ping(&t.dom0.name, g2.ip);
    ping(&g2.name, t.gw());
    ping(&t.out.name, g1.ip);

    // TCP each way round the same three paths.
    tcp(&g2.name, &g1.name, g2.ip);
    tcp(&t.dom0.name, &g1.name, dom0_ip);
    tcp(&g2.name, &t.dom0.name, g2.ip);
    tcp(&t.out.name, &g2.name, t.gw());
    tcp(&g1.name, &t.out.name, g1.ip);

    // Every MAC learned on the port it lives behind.
    let rows = fdb(&t.d, "xenbr0");
    let want = [
        (g1.mac, g1.port()),
        (g2.mac, g2.port()),
        (t.out_mac(), "eth0".to_string()),
        (t.host_port_mac(), "xenbr0".to_string()),
    ];
    for (m, port) in &want {
        assert_eq!(
            fdb_port_of(&rows, m).as_deref(),
            Some(port.as_str()),
            "{} should be learned on {port}: {rows:?}",
            mac_str(m)
        );
    }
    assert!(
        rows.iter().all(|r| !r.2),
        "nothing static was added: {rows:?}"
    );
    assert_eq!(
        bridge_row(&t.d, "xenbr0")["fdb_entries"].as_u64(),
        Some(rows.len() as u64)
    );
    // The human layout carries the same rows.
    let text = t.d.ok(&["fdb", "show", "xenbr0"]);
    assert!(text.starts_with("  port  VLAN  MAC"), "{text}");
    for (m, port) in &want {
        assert!(
            text.lines()
                .any(|l| l.contains(&mac_str(m)) && l.trim_start().starts_with(port.as_str())),
            "{text}"
        );
    }
    // Well-behaved guests caused no drop on the way in.
    for (g, before) in [(&g1, &drops1), (&g2, &drops2)] {
        let s = port_stats(&t.d, &g.port());
        assert_eq!(&s["rx_drops"], before, "{}: {s}", g.port());
    }
}

#[test]
fn learned_entries_age_out_and_static_entries_stay() {
    require_root();
    let _s = serial();
    let (d, _dom0) = plain_bridge(241, Some(2));
    assert_eq!(bridge_row(&d, "xenbr0")["aging_secs"].as_u64(), Some(2));
    let g1 = guest(&d, "xenbr0", "", Ipv4Addr::new(10, 241, 0, 11), None);
    let g2 = guest(&d, "xenbr0", "", Ipv4Addr::new(10, 241, 0, 12), None);
    let sink = "02:00:00:00:00:42";
    d.ok(&["fdb", "add", "xenbr0", sink, &g1.port()]);

    ping(&g1.name, g2.ip);
    let rows = fdb(&d, "xenbr0");
    assert_eq!(fdb_port_of(&rows, &g1.mac), Some(g1.port()), "{rows:?}");
    assert_eq!(fdb_port_of(&rows, &g2.mac), Some(g2.port()), "{rows:?}");
    assert!(
        rows.contains(&(sink.to_string(), g1.port(), true)),
        "{rows:?}"
    );

    // Silence: the learned entries go within the aging time (plus slack for a loaded
    // machine); the static one stays.
    let t0 = Instant::now();
    assert!(
        wait_for(Duration::from_secs(8), || {
            let rows = fdb(&d, "xenbr0");
            fdb_port_of(&rows, &g1.mac).is_none() && fdb_port_of(&rows, &g2.mac).is_none()
        }),
        "learned entries did not age out: {:?}",
        fdb(&d, "xenbr0")
    );
    assert!(
        t0.elapsed() >= Duration::from_millis(500),
        "entries vanished long before the 2 s aging time ({:?})",
        t0.elapsed()
    );
    std::thread::sleep(Duration::from_millis(2500));
    let rows = fdb(&d, "xenbr0");
    assert_eq!(rows, vec![(sink.to_string(), g1.port(), true)]);
    assert_eq!(bridge_row(&d, "xenbr0")["fdb_entries"].as_u64(), Some(1));
    let text = d.ok(&["fdb", "show", "xenbr0"]);
    assert!(text.contains(sink) && text.contains("static"), "{text}");

    // Traffic relearns; `fdb del` removes the static entry.
    ping(&g2.name, g1.ip);
    assert_eq!(fdb_port_of(&fdb(&d, "xenbr0"), &g2.mac), Some(g2.port()));
    d.ok(&["fdb", "del", "xenbr0", sink]);
    assert!(fdb(&d, "xenbr0").iter().all(|r| r.0 != sink));
}

#[test]
fn spoofed_frames_from_a_guest_are_dropped_under_their_own_reasons() {
    require_root();
    let _s = serial();
    let t = Uplinked::new(242);
    let g1 = t.guest(11);
    let g2 = t.guest(12);
    let gw = t.gw();
    let gw_mac = t.out_mac();
    // Neighbour entries for the gateway exist in g2 and dom0 (what poisoning targets).
    ping(&g2.name, gw);
    ping(&t.dom0.name, gw);
    ping(&g1.name, g2.ip);
    let p1 = g1.port();
    let base = port_stats(&t.d, &p1);

    // 1. Source MAC not the vif's.
    let fake: Mac = [0x02, 0xde, 0xad, 0, 0, 1];
    let before = rx_drops(&t.d, &p1, "spoofed_source_mac");
    let frames: Vec<Vec<u8>> = (0..10)
        .map(|_| frames::experimental(BROADCAST, fake))
        .collect();
    frames::inject_frames(&g1.name, "eth0", &frames).unwrap();
    assert!(wait_for(Duration::from_secs(5), || rx_drops(
        &t.d,
        &p1,
        "spoofed_source_mac"
    ) == before + 10));
    assert_eq!(
        fdb_port_of(&fdb(&t.d, "xenbr0"), &fake),
        None,
        "never learned"
    );

    // 2. Source IP outside the vif's `ip=`; the same datagram from its own address
    //    passes (the control).
    let before_ip = rx_drops(&t.d, &p1, "spoofed_source_ip");
    let fwd0 = port_stats(&t.d, &p1)["rx_forwarded"].as_u64().unwrap();
    let spoofed = frames::udp4(g2.mac, g1.mac, t.ip(99), g2.ip, 4000, 9, b"spoofed");
    let honest = frames::udp4(g2.mac, g1.mac, g1.ip, g2.ip, 4000, 9, b"honest");
    frames::inject_frames(&g1.name, "eth0", &vec![spoofed; 7]).unwrap();
    frames::inject_frames(&g1.name, "eth0", &vec![honest; 5]).unwrap();
    assert!(wait_for(Duration::from_secs(5), || rx_drops(
        &t.d,
        &p1,
        "spoofed_source_ip"
    ) == before_ip + 7));
    assert!(
        wait_for(Duration::from_secs(5), || port_stats(&t.d, &p1)
            ["rx_forwarded"]
            .as_u64()
            .unwrap()
            >= fwd0 + 5),
        "the honest datagrams were forwarded"
    );
    assert_eq!(rx_drops(&t.d, &p1, "spoofed_source_ip"), before_ip + 7);

    // 3. ARP poisoning of the gateway: g1 claims the gateway's address, once with its
    //    own MAC as sender and once with another MAC.
    let before_arp = rx_drops(&t.d, &p1, "spoofed_arp");
    let claim = |sender: Mac| frames::arp(BROADCAST, g1.mac, 2, sender, gw, BROADCAST, gw);
    let mut poison = vec![claim(g1.mac); 4];
    poison.push(claim([0x02, 0xba, 0xd0, 0, 0, 2]));
    frames::inject_frames(&g1.name, "eth0", &poison).unwrap();
    assert!(wait_for(Duration::from_secs(5), || rx_drops(
        &t.d,
        &p1,
        "spoofed_arp"
    ) == before_arp + 5));
    // Nobody believed it: the gateway still resolves to the outside's MAC.
    for ns in [g2.name.as_str(), t.dom0.name.as_str()] {
        let n: serde_json::Value = serde_json::from_str(&String::from_utf8_lossy(
            &std::process::Command::new("ip")
                .args(["netns", "exec", ns, "ip", "-j", "neigh", "show"])
                .arg(gw.to_string())
                .output()
                .unwrap()
                .stdout,
        ))
        .unwrap();
        assert_eq!(
            n[0]["lladdr"].as_str(),
            Some(mac_str(&gw_mac).as_str()),
            "{ns}: {n}"
        );
    }
    ping(&g2.name, gw);
    // Each attack landed under its own reason, and nothing else was dropped meanwhile.
    let s = port_stats(&t.d, &p1);
    let mut changed: Vec<(String, u64)> = s["rx_drops"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let name = e[0].as_str().unwrap().to_string();
            let delta = e[1].as_u64().unwrap() - common::named(&base, "rx_drops", &name);
            (name, delta)
        })
        .filter(|(_, n)| *n > 0)
        .collect();
    changed.sort();
    assert_eq!(
        changed,
        vec![
            ("spoofed_arp".to_string(), 5),
            ("spoofed_source_ip".to_string(), 7),
            ("spoofed_source_mac".to_string(), 10),
        ],
        "{s}"
    );
}

#[test]
fn random_source_mac_floods_leave_the_fdb_bounded_and_other_ports_forwarding() {
    require_root();
    let _s = serial();
    const FLOOD: u64 = 100_000;
    let t = Uplinked::new(243);
    let g1 = t.guest(11);
    let g2 = t.guest(12);
    let g3 = t.guest(13);
    ping(&g1.name, g2.ip);
    ping(&g3.name, g1.ip);
    let entries0 = bridge_row(&t.d, "xenbr0")["fdb_entries"].as_u64().unwrap();

    // From a guest: every frame carries a foreign source MAC, so each is dropped as
    // spoofed before learning; the table does not grow.
    let pinger = Background::in_netns(&g1.name, &format!("ping -n -c 60 -i 0.05 -W 1 {}", g2.ip));
    let drops0 = rx_drops(&t.d, &g3.port(), "spoofed_source_mac");
    let tap0 = g3.tx_dropped();
    // At most ~130k frames/s (bursts of 64), so that most of the flood gets past the
    // guest's own TAP queue.
    let sent = frames::inject_paced(
        &g3.name,
        "eth0",
        FLOOD,
        Some((64, Duration::from_micros(500))),
        |i, buf| {
            buf.extend(frames::experimental(
                BROADCAST,
                frames::numbered_mac(0x42, i as u32),
            ))
        },
    )
    .unwrap();
    assert_eq!(sent, FLOOD);
    let (rx, tx) = ping_summary(&pinger.wait());
    assert!(
        rx * 10 >= tx * 9,
        "g1 -> g2 kept working during the guest's flood: {rx}/{tx} replies"
    );
    // Conservation: each frame was either dropped by the guest's own full TAP queue
    // (tx_dropped, before netfront) or reached the switch and was counted as spoofed.
    let counted = |d: &Daemon| rx_drops(d, &g3.port(), "spoofed_source_mac") - drops0;
    // (A frame or two of the guest's own, e.g. an ARP reply, may share the TAP's fate.)
    assert!(
        wait_for(Duration::from_secs(10), || (FLOOD..FLOOD + 3)
            .contains(&(counted(&t.d) + (g3.tx_dropped() - tap0)))),
        "spoofed {} + dropped at the guest's TAP {} != {FLOOD}",
        counted(&t.d),
        g3.tx_dropped() - tap0
    );
    assert!(counted(&t.d) <= FLOOD);
    assert!(
        counted(&t.d) >= FLOOD / 2,
        "most of the flood reached the switch: {}",
        counted(&t.d)
    );
    let rows = fdb(&t.d, "xenbr0");
    assert!(
        rows.iter().all(|r| !r.0.starts_with("02:42:")),
        "a spoofed MAC was learned"
    );
    assert!(rows.len() as u64 <= entries0 + 1, "{rows:?}");
    ping(&g1.name, g2.ip);

    // From the uplink (no MAC filter there): the table fills to its limit and no
    // further; fair eviction takes the flooding port's own entries, so the guests'
    // entries stay, and so does a static one. The flood is addressed to that static
    // entry, which points back out of the uplink (dropped as port_loopback).
    let sink = "02:00:00:00:00:99";
    t.d.ok(&["fdb", "add", "xenbr0", sink, "eth0"]);
    let loop0 = rx_drops(&t.d, "eth0", "port_loopback");
    let pinger = Background::in_netns(&g1.name, &format!("ping -n -c 60 -i 0.05 -W 1 {}", g2.ip));
    let sink_mac = mac(sink);
    frames::inject(&t.out.name, "eth0", FLOOD, |i, buf| {
        buf.extend(frames::experimental(
            sink_mac,
            frames::numbered_mac(0x43, i as u32),
        ))
    })
    .unwrap();
    let (rx, tx) = ping_summary(&pinger.wait());
    assert!(
        rx * 10 >= tx * 9,
        "g1 -> g2 kept working during the uplink flood: {rx}/{tx} replies"
    );
    let cap = vswitch::fdb::DEFAULT_MAX_ENTRIES as u64;
    assert!(wait_for(Duration::from_secs(10), || rx_drops(
        &t.d,
        "eth0",
        "port_loopback"
    ) > loop0 + cap));
    let rows = fdb(&t.d, "xenbr0");
    let row = bridge_row(&t.d, "xenbr0");
    let n = row["fdb_entries"].as_u64().unwrap();
    assert_eq!(n, rows.len() as u64);
    assert_eq!(n, cap, "the flood fills the table to its limit, not beyond");
    assert_eq!(row["fdb_max"].as_u64(), Some(cap), "{row}");
    assert!(
        row["fdb_learned"].as_u64().unwrap() >= cap,
        "every flood entry was learned: {row}"
    );
    let flooded = rows.iter().filter(|r| r.0.starts_with("02:43:")).count() as u64;
    assert!(
        flooded >= cap - 16
            && rows
                .iter()
                .filter(|r| r.0.starts_with("02:43:"))
                .all(|r| r.1 == "eth0"),
        "{flooded} flood entries"
    );
    for g in [&g1, &g2, &g3] {
        assert_eq!(
            fdb_port_of(&rows, &g.mac),
            Some(g.port()),
            "{}'s entry survived the flood",
            g.name
        );
    }
    assert!(rows.contains(&(sink.to_string(), "eth0".to_string(), true)));
    ping(&g1.name, g2.ip);
    ping(&g2.name, t.gw());
}

#[test]
fn runts_and_frames_over_the_mtu_are_dropped_and_counted() {
    use vif::netif::ChecksumState;
    require_root();
    let _s = serial();
    let (d, _dom0) = plain_bridge(244, None);
    let g1 = guest(&d, "xenbr0", "", Ipv4Addr::new(10, 244, 0, 11), None);
    let g2 = guest(&d, "xenbr0", "", Ipv4Addr::new(10, 244, 0, 12), None);
    ping(&g1.name, g2.ip);

    // A hostile frontend (the test itself, over the hypervisor socket) on the same
    // bridge: what no guest kernel can send.
    let hx = unique("bmx");
    let cfg = d.dir.join("hostile.cfg");
    std::fs::write(
        &cfg,
        format!("name = \"{hx}\"\nmemory = 16\nvif_frontend = \"external\"\nvif = [ 'bridge=xenbr0' ]\n"),
    )
    .unwrap();
    d.ok(&["create", cfg.to_str().unwrap()]);
    let mut x = common::extfront::attach(&d, &hx, 0);
    let xport = format!("vif{}.0", x.domid);
    let xmac = mac(&String::from_utf8_lossy(
        &d.xs_tool(
            &d.dom0_socket(),
            "xenstore-read",
            &[&format!("/local/domain/0/backend/vif/{}/0/mac", x.domid)],
        )
        .stdout,
    ));

    // Runts: 0, 1 and 13 bytes (shorter than an Ethernet header). netback answers
    // each with an error and counts it; nothing reaches the switch.
    let rx0 = port_stats(&d, &xport)["rx_packets"].as_u64().unwrap();
    let full = frames::experimental(g2.mac, xmac);
    let (_, gref) = x.mock.page(true).unwrap();
    let id = x.mock.next_id();
    x.mock
        .send_tx(&[vif::netif::TxRequest {
            gref,
            offset: 0,
            flags: 0,
            id,
            size: 0,
        }])
        .unwrap();
    for len in [1usize, 13] {
        x.mock
            .send_frame(&full[..len], None, ChecksumState::Unknown)
            .unwrap();
    }
    assert!(
        wait_for(Duration::from_secs(5), || driver(
            &d,
            &xport,
            "tx_first_slot_too_short"
        ) == 3),
        "{}",
        port_stats(&d, &xport)
    );
    let mut errors = 0;
    assert!(
        wait_for(Duration::from_secs(5), || {
            errors += x
                .mock
                .tx_responses()
                .unwrap()
                .iter()
                .filter(|r| r.status < 0)
                .count();
            errors == 3
        }),
        "every runt slot is answered with an error ({errors})"
    );
    assert_eq!(driver(&d, &xport, "disabled"), 0, "a runt is not fatal");
    assert_eq!(port_stats(&d, &xport)["rx_packets"].as_u64(), Some(rx0));

    // The same port still works: a whole frame passes.
    x.mock
        .send_frame(&full, None, ChecksumState::Unknown)
        .unwrap();
    assert!(wait_for(Duration::from_secs(5), || port_stats(&d, &xport)
        ["rx_forwarded"]
        .as_u64()
        .unwrap()
        >= 1));

    // Over the MTU from the hostile frontend: a 3000-byte non-GSO frame to g2, whose
    // port has MTU 1500.
    let mtu0 = tx_drops(&d, &g2.port(), "egress_mtu_exceeded");
    let mut big = frames::ethernet(g2.mac, xmac, 0x88b5, &[0x5a; 2986]);
    big.truncate(3000);
    x.mock
        .send_frame(&big, None, ChecksumState::Unknown)
        .unwrap();
    assert!(
        wait_for(Duration::from_secs(5), || tx_drops(
            &d,
            &g2.port(),
            "egress_mtu_exceeded"
        ) == mtu0 + 1),
        "{}",
        port_stats(&d, &g2.port())
    );

    // Over the MTU from a real guest that raised its own MTU: ping with DF set, 3000
    // bytes. Each request is dropped at g2's port; normal pings still pass.
    g1.sh("ip link set eth0 mtu 4000");
    let o = g1.exec(&format!("ping -n -c 3 -i 0.2 -W 1 -M do -s 3000 {}", g2.ip));
    assert!(!o.status.success(), "oversized pings must not arrive");
    assert!(wait_for(Duration::from_secs(5), || tx_drops(
        &d,
        &g2.port(),
        "egress_mtu_exceeded"
    ) == mtu0 + 4));
    assert!(driver(&d, &g1.port(), "tx_max_frame") >= 3042);
    ping(&g1.name, g2.ip);
    assert_eq!(driver(&d, &xport, "disabled"), 0);
    x.mock.close_ports();
}

#[test]
fn capture_reads_back_with_tcpdump() {
    require_root();
    require_tool("tcpdump");
    let _s = serial();
    let (d, _dom0) = plain_bridge(245, None);
    let g1 = guest(
        &d,
        "xenbr0",
        ",ip=10.245.0.11",
        Ipv4Addr::new(10, 245, 0, 11),
        None,
    );
    let g2 = guest(
        &d,
        "xenbr0",
        ",ip=10.245.0.12",
        Ipv4Addr::new(10, 245, 0, 12),
        None,
    );
    ping(&g1.name, g2.ip);

    // -w FILE -c N while g1 pings g2 (the pinger outlives the capture).
    let file = d.dir.join("vif.pcap");
    let pinger = Background::in_netns(&g1.name, &format!("ping -n -c 100 -i 0.05 {}", g2.ip));
    let o = std::process::Command::new("timeout")
        .args(["20", common::bin(), "capture", &g1.port(), "-c", "6", "-w"])
        .arg(&file)
        .env("DOMNET_RUN_DIR", &d.run_dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = std::process::Command::new("tcpdump")
        .args(["-nr"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8_lossy(&o.stdout);
    assert_eq!(text.lines().count(), 6, "{text}");
    let req = format!("IP {} > {}: ICMP echo request", g1.ip, g2.ip);
    let rep = format!("IP {} > {}: ICMP echo reply", g2.ip, g1.ip);
    assert!(text.contains(&req) && text.contains(&rep), "{text}");
    assert!(
        text.lines().all(|l| l.contains(&req) || l.contains(&rep)),
        "only the ping on the wire: {text}"
    );

    // To stdout, piped into tcpdump; on g2's port this time.
    let o = std::process::Command::new("timeout")
        .args([
            "20",
            "sh",
            "-c",
            &format!(
                "{} capture {} -c 4 | tcpdump -nr -",
                common::bin(),
                g2.port()
            ),
        ])
        .env("DOMNET_RUN_DIR", &d.run_dir)
        .output()
        .unwrap();
    drop(pinger);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8_lossy(&o.stdout);
    assert_eq!(text.lines().count(), 4, "{text}");
    assert!(text.contains(&req) && text.contains(&rep), "{text}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("link-type EN10MB"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn network_bridge_stop_refuses_while_vifs_are_attached_then_restores_exactly() {
    require_root();
    let _s = serial();
    let t = Uplinked::new(246);
    let g1 = t.guest(11);
    ping(&g1.name, t.gw());
    let during = net_state(&t.dom0);

    let o = t.d.cli(&["network-bridge", "stop", "bridge=xenbr0"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(&g1.port()), "the refusal names the vif: {err}");
    assert_eq!(net_state(&t.dom0), during, "a refused stop changes nothing");
    ping(&g1.name, t.ip(1));

    t.d.ok(&["network-detach", &g1.name, "0"]);
    t.d.ok(&["network-bridge", "stop", "bridge=xenbr0"]);
    assert_eq!(net_state(&t.dom0), t.before, "stop restores dom0 exactly");
    ping(&t.dom0.name, t.gw());
    assert!(t.dom0.exec("ip link show xenbr0").status.code() != Some(0));
}
