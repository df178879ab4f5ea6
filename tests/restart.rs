//! Restart safety (issue 6 item 4): `kill -9` of the daemon with traffic flowing, a
//! restart on the same directories, and everything comes back as it was, with no
//! action from anyone.
//!
//! One topology covers every kind of state the daemon keeps: dom0 (a namespace) with
//! `network-bridge start` (xenbr0 on an uplink veth to an "outside" namespace), a
//! second plain bridge (xenbr1), bridged domains (one with two vifs), a routed domain
//! (vif-route), a vif-nat domain, libvirt's `default` NAT network with a dhclient guest
//! holding a lease and a port forward to it, and static MAC table entries.
//!
//! "Identical" means: every listing the toolstack prints (`list` without the running
//! time, `network-list` without the event channel and ring references, `bridge show`
//! without the learned-entry count, static `fdb` entries, `net list`, `net forward
//! list`, `route show` without its counters), the DHCP lease records, dom0's and every
//! guest's addresses and routes, and the whole xenstore tree (as Debian's
//! `xenstore-ls -f -p` prints it) except the keys a frontend publishes afresh on every
//! connection (`event-channel*`, `tx-ring-ref`, `rx-ring-ref`: a restarted daemon has
//! a new guest memory, new grant and event channel tables, so the rings are new ones,
//! exactly as after a Xen guest's netfront reconnects on resume).
//!
//! A second test kills the daemon while a network-attach and then a network-detach are
//! half-way (a hotplug script that waits): the restart finishes what was acknowledged
//! and undoes what was not — the interrupted attach is rolled back completely, the
//! interrupted detach completes — with no debris.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use common::{net_state, require_root, require_tool, unique, wait_for, Daemon, Netns};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn sh_in(ns: &str, cmd: &str) -> std::process::Output {
    Command::new("ip")
        .args(["netns", "exec", ns, "sh", "-c", cmd])
        .output()
        .unwrap()
}

fn ok_in(ns: &str, cmd: &str) -> String {
    let o = sh_in(ns, cmd);
    assert!(
        o.status.success(),
        "[{ns}] {cmd}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `domnet ARGS --json` parsed.
fn json(d: &Daemon, args: &[&str]) -> serde_json::Value {
    let mut a = args.to_vec();
    a.push("--json");
    serde_json::from_str(&d.ok(&a)).unwrap()
}

/// Per-namespace /etc (resolv.conf), so `ip netns exec` bind-mounts it and
/// dhclient-script never touches the host's. Removed on drop, with the guest's
/// dhclient files.
struct NetnsEtc(String);

impl NetnsEtc {
    fn new(ns: &str) -> NetnsEtc {
        let dir = format!("/etc/netns/{ns}");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(format!("{dir}/resolv.conf"), "").unwrap();
        NetnsEtc(ns.to_string())
    }
}

impl Drop for NetnsEtc {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(format!("/etc/netns/{}", self.0));
        for ext in ["leases", "pid"] {
            let _ = std::fs::remove_file(format!("/tmp/{}.{ext}", self.0));
        }
    }
}

/// Runs dhclient once on eth0 of `ns`, keeping its lease file (so a second run is the
/// guest rebooting with its lease: INIT-REBOOT asks for the same address), or
/// starting from `preset` lease-file text if it is not empty; returns the IPv4
/// address eth0 then holds.
fn dhclient(ns: &str, preset: &str) -> String {
    let lease = format!("/tmp/{ns}.leases");
    let pid = format!("/tmp/{ns}.pid");
    if !preset.is_empty() {
        std::fs::write(&lease, preset).unwrap();
    }
    ok_in(
        ns,
        &format!("timeout 30 dhclient -v -1 -lf {lease} -pf {pid} eth0 2>&1"),
    );
    let _ = sh_in(ns, &format!("dhclient -x -pf {pid}"));
    let addr = ok_in(ns, "ip -4 -o addr show dev eth0");
    addr.split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .unwrap_or_default()
        .to_string()
}

/// A dhclient lease file claiming `ip` from the gateway 192.168.122.1, valid for
/// years: what a guest that believes it holds `ip` reboots with.
fn claimed_lease(ip: &str) -> String {
    format!(
        "lease {{\n  interface \"eth0\";\n  fixed-address {ip};\n  \
         option subnet-mask 255.255.255.0;\n  option routers 192.168.122.1;\n  \
         option dhcp-server-identifier 192.168.122.1;\n  option dhcp-lease-time 86400;\n  \
         renew 4 2037/01/01 00:00:00;\n  rebind 4 2037/01/01 00:00:00;\n  \
         expire 4 2037/01/01 00:00:00;\n}}\n"
    )
}

/// A `ping -D -i` running in a namespace, its output in a file (iputils flushes
/// every line), stopped with SIGINT.
struct Pinger {
    what: String,
    child: Option<Child>,
    out: PathBuf,
    interval: Duration,
}

/// One answered echo request: its sequence number and when the answer arrived.
#[derive(Debug, Clone, Copy)]
struct Reply {
    seq: u64,
    at: f64,
}

impl Pinger {
    fn start(dir: &Path, what: &str, ns: &str, dst: &str, interval: Duration) -> Pinger {
        let out = dir.join(format!("ping-{}.out", what.replace([' ', '>'], "_")));
        let file = std::fs::File::create(&out).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", ns, "ping", "-n", "-D", "-i"])
            .arg(format!("{}", interval.as_secs_f64()))
            .arg(dst)
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Pinger {
            what: what.to_string(),
            child: Some(child),
            out,
            interval,
        }
    }

    /// The answers so far, in arrival order (`[1700000000.123456] 64 bytes from …
    /// icmp_seq=N …`).
    fn replies(&self) -> Vec<Reply> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(" bytes from "))
            .filter_map(|l| {
                let at = l
                    .strip_prefix('[')
                    .and_then(|r| r.split(']').next())
                    .and_then(|t| t.parse().ok())?;
                let seq = l
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("icmp_seq="))
                    .and_then(|s| s.parse().ok())?;
                Some(Reply { seq, at })
            })
            .collect()
    }

    fn last_reply(&self) -> Option<Reply> {
        self.replies().last().copied()
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on our own child, not yet reaped.
            unsafe { libc::kill(c.id() as i32, libc::SIGINT) };
            let _ = c.wait();
        }
    }

    /// The longest time without an answer: the largest interval between two answers
    /// arriving. (Requests sent while the guest's interface had no carrier wait in its
    /// queue and are answered late, so counting unanswered sequence numbers alone
    /// would understate the outage.)
    fn longest_silence(&self) -> Duration {
        let r = self.replies();
        let worst = r
            .windows(2)
            .map(|w| w[1].at - w[0].at)
            .fold(0.0f64, f64::max);
        Duration::from_secs_f64(worst.max(0.0))
    }

    /// The longest run of never-answered requests, as time (requests × interval).
    fn longest_loss(&self) -> Duration {
        let mut seqs: Vec<u64> = self.replies().iter().map(|r| r.seq).collect();
        seqs.sort_unstable();
        seqs.dedup();
        let worst = seqs.windows(2).map(|w| w[1] - w[0] - 1).max().unwrap_or(0);
        self.interval * worst as u32
    }
}

impl Drop for Pinger {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on our own child, not yet reaped.
            unsafe { libc::kill(c.id() as i32, libc::SIGKILL) };
            let _ = c.wait();
        }
    }
}

fn wall_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// The xenstore tree as Debian's xenstore-ls prints it (full paths, permissions),
/// without the keys a frontend publishes afresh on every connection.
fn xenstore_tree(d: &Daemon) -> Vec<String> {
    let o = d.xs_tool(&d.dom0_socket(), "xenstore-ls", &["-f", "-p", "/"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| {
            let key = l.split(" = ").next().unwrap_or_default();
            let leaf = key.rsplit('/').next().unwrap_or_default();
            !(leaf.starts_with("event-channel") || leaf == "tx-ring-ref" || leaf == "rx-ring-ref")
        })
        .map(str::to_string)
        .collect()
}

/// Everything the toolstack and the kernels show, in the form compared before and
/// after the restart (see the module doc for what is left out and why).
fn snapshot(
    d: &Daemon,
    dom0: &Netns,
    guests: &[&str],
    bridges: &[&str],
    nets: &[&str],
) -> serde_json::Value {
    let mut list = json(d, &["list"]);
    for row in list.as_array_mut().unwrap() {
        row.as_object_mut().unwrap().remove("time");
    }
    let mut vifs = serde_json::Map::new();
    for g in guests {
        let mut rows = json(d, &["network-list", g]);
        for r in rows.as_array_mut().unwrap() {
            let o = r.as_object_mut().unwrap();
            for k in ["evtch", "tx_ring_ref", "rx_ring_ref"] {
                o.remove(k);
            }
        }
        vifs.insert(g.to_string(), rows);
    }
    let mut bridge_rows = json(d, &["bridge", "show"]);
    for b in bridge_rows.as_array_mut().unwrap() {
        let o = b.as_object_mut().unwrap();
        // Counters, not state: a restarted switch learns afresh.
        for k in [
            "fdb_entries",
            "fdb_learned",
            "fdb_expired",
            "fdb_evicted",
            "fdb_moved",
        ] {
            o.remove(k);
        }
        if let Some(ifs) = o.get_mut("interfaces").and_then(|v| v.as_array_mut()) {
            ifs.sort_by_key(|v| v.to_string());
        }
    }
    bridge_rows
        .as_array_mut()
        .unwrap()
        .sort_by_key(|b| b["name"].to_string());
    let mut fdb = serde_json::Map::new();
    for b in bridges {
        let statics: Vec<serde_json::Value> = json(d, &["fdb", "show", b])
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["is_static"] == true)
            .cloned()
            .collect();
        fdb.insert(b.to_string(), statics.into());
    }
    let mut forwards = serde_json::Map::new();
    let mut leases = serde_json::Map::new();
    for n in nets {
        forwards.insert(n.to_string(), d.ok(&["net", "forward", "list", n]).into());
        let o = d.xs_tool(
            &d.dom0_socket(),
            "xenstore-ls",
            &["-f", &format!("/tool/domnet/net/{n}/lease")],
        );
        leases.insert(
            n.to_string(),
            String::from_utf8_lossy(&o.stdout).into_owned().into(),
        );
    }
    let mut routes = json(d, &["route", "show"]);
    for r in routes.as_array_mut().unwrap() {
        let o = r.as_object_mut().unwrap();
        o.remove("rx_packets");
        o.remove("tx_packets");
    }
    routes
        .as_array_mut()
        .unwrap()
        .sort_by_key(|r| r["port"].to_string());
    let mut guest_net = serde_json::Map::new();
    for g in guests {
        guest_net.insert(g.to_string(), links_state(&Netns::borrow(g)));
    }
    serde_json::json!({
        "list": list,
        "network-list": vifs,
        "bridge show": bridge_rows,
        "fdb static": fdb,
        "net list": json(d, &["net", "list"]),
        "net forward list": forwards,
        "leases": leases,
        "route show": routes,
        "dom0 addresses and routes": links_state(dom0),
        "guest addresses and routes": guest_net,
        "xenstore": xenstore_tree(d),
    })
}

/// `value` flattened to `path = leaf` lines (array elements keyed by index, or by
/// `ifname`/`name`/`dst` where they have one, so a diff names what changed).
fn flatten(prefix: &str, value: &serde_json::Value, out: &mut BTreeSet<String>) {
    match value {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                flatten(&format!("{prefix}/{k}"), v, out);
            }
        }
        serde_json::Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                let key = ["ifname", "name", "dst", "local", "mac"]
                    .iter()
                    .find_map(|k| v.get(k).and_then(|x| x.as_str()).map(str::to_string))
                    .unwrap_or_else(|| i.to_string());
                flatten(&format!("{prefix}[{key}]"), v, out);
            }
        }
        leaf => {
            out.insert(format!("{prefix} = {leaf}"));
        }
    }
}

/// A namespace's links, addresses and routes ([`net_state`]) without `operstate`: a
/// TAP whose carrier never changed reports UNKNOWN, and UP once its carrier has gone
/// down (the daemon's file descriptors closed with it) and up again (reopened). The
/// carrier itself (`LOWER_UP`) is compared.
fn links_state(ns: &Netns) -> serde_json::Value {
    let mut v = net_state(ns);
    for link in v["addr"].as_array_mut().unwrap() {
        link.as_object_mut().unwrap().remove("operstate");
    }
    v
}

/// Asserts two snapshots are equal, listing the lines only one of them has.
fn assert_same(before: &serde_json::Value, after: &serde_json::Value) {
    let (mut b, mut a) = (BTreeSet::new(), BTreeSet::new());
    flatten("", before, &mut b);
    flatten("", after, &mut a);
    let only_before: Vec<&String> = b.difference(&a).collect();
    let only_after: Vec<&String> = a.difference(&b).collect();
    assert!(
        only_before.is_empty() && only_after.is_empty(),
        "state differs after the restart:\n only before:\n  {}\n only after:\n  {}",
        only_before
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n  "),
        only_after
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n  ")
    );
}

/// A borrowed namespace name (not deleted on drop) for `net_state`.
trait Borrow {
    fn borrow(name: &str) -> std::mem::ManuallyDrop<Netns>;
}

impl Borrow for Netns {
    fn borrow(name: &str) -> std::mem::ManuallyDrop<Netns> {
        std::mem::ManuallyDrop::new(Netns {
            name: name.to_string(),
        })
    }
}

/// Waits for a TCP listener on `port` inside `ns`.
fn listening(ns: &str, port: u16) -> bool {
    wait_for(Duration::from_secs(5), || {
        !sh_in(ns, &format!("ss -Hltn 'sport = :{port}'"))
            .stdout
            .is_empty()
    })
}

/// One second of iperf3 from `client_ns` to `dst:port`, the server (port 5201) in
/// `server_ns`.
fn tcp_ok(server_ns: &str, client_ns: &str, dst: &str, port: u16) {
    let mut srv = Command::new("ip")
        .args([
            "netns", "exec", server_ns, "timeout", "20", "iperf3", "-s", "-1",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(listening(server_ns, 5201), "iperf3 server in {server_ns}");
    let o = sh_in(
        client_ns,
        &format!("timeout 15 iperf3 -c {dst} -p {port} -t 1"),
    );
    let _ = srv.wait();
    assert!(
        o.status.success(),
        "iperf3 {client_ns} -> {dst}:{port}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A rate-limited iperf3 TCP stream (12 s at 50 Mbit/s) from `client_ns` to a
/// server on `dst:port` in `server_ns`.
struct Stream {
    server: Child,
    client: Child,
}

impl Stream {
    fn start(server_ns: &str, client_ns: &str, dst: &str, port: u16) -> Stream {
        let p = port.to_string();
        let server = Command::new("ip")
            .args([
                "netns", "exec", server_ns, "timeout", "60", "iperf3", "-s", "-1",
            ])
            .args(["-p", &p])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        assert!(listening(server_ns, port), "iperf3 server in {server_ns}");
        let client = Command::new("ip")
            .args([
                "netns", "exec", client_ns, "timeout", "60", "iperf3", "-c", dst,
            ])
            .args(["-p", &p, "-t", "12", "-b", "50M", "-J"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Stream { server, client }
    }

    /// Waits for the end; the receiver's rate (Mbit/s) and the sender's retransmits.
    fn finish(mut self) -> Result<(f64, u64), String> {
        let out = self.client.wait_with_output().unwrap();
        let _ = self.server.wait();
        let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        // iperf3 -J can exit 0 with the error only in its JSON.
        if !out.status.success() || j.get("error").is_some() {
            return Err(j["error"].to_string());
        }
        Ok((
            j["end"]["sum_received"]["bits_per_second"]
                .as_f64()
                .unwrap_or(0.0)
                / 1e6,
            j["end"]["sum_sent"]["retransmits"].as_u64().unwrap_or(0),
        ))
    }
}

#[test]
fn kill_9_with_traffic_flowing_comes_back_identical() {
    require_root();
    for t in ["dhclient", "iperf3", "xenstore-ls", "nft"] {
        require_tool(t);
    }
    let _s = serial();
    let net = 150u8;
    let ip = |h: u8| format!("10.{net}.0.{h}");
    let dom0 = Netns::new("rs0-");
    let out = Netns::new("rsout-");
    dom0.sh(&format!(
        "ip link add eth0 type veth peer name eth0 netns {}",
        out.name
    ));
    dom0.sh(&format!(
        "ip addr add {}/24 dev eth0 && ip link set eth0 up && ip route add default via {}",
        ip(1),
        ip(254)
    ));
    out.sh(&format!(
        "sysctl -qw net.ipv6.conf.eth0.disable_ipv6=1; ip link set lo up; \
         ip addr add {}/24 dev eth0 && ip link set eth0 up",
        ip(254)
    ));
    let mut d = Daemon::start_in(&dom0.name);

    // dom0: xenbr0 on the uplink, a plain xenbr1, the default NAT network.
    d.ok(&["network-bridge", "start", "bridge=xenbr0", "netdev=eth0"]);
    d.ok(&["bridge", "add", "xenbr1"]);
    dom0.sh(&format!("ip addr add 10.{}.0.1/24 dev xenbr1", net + 1));
    d.ok(&["net", "start", "default"]);

    // Domains: a bridged pair (a with a second vif on xenbr1), a routed one, a vif-nat
    // one, and two on the NAT network.
    let ga = unique("rsa");
    let gb = unique("rsb");
    let gr = unique("rsr");
    let gn = unique("rsn");
    let gd = unique("rsd");
    let gt = unique("rst");
    let _etc: Vec<NetnsEtc> = [&gr, &gn, &gd, &gt]
        .iter()
        .map(|g| NetnsEtc::new(g))
        .collect();
    d.create(
        &ga,
        &format!("vif = [ 'bridge=xenbr0,ip={}', 'bridge=xenbr1' ]", ip(11)),
    );
    d.create(&gb, &format!("vif = [ 'bridge=xenbr0,ip={}' ]", ip(12)));
    d.create(&gr, &format!("vif = [ 'script=vif-route,ip={}' ]", ip(50)));
    let idn = d.create(&gn, "vif = [ 'script=vif-nat' ]");
    d.create(&gd, "vif = [ 'bridge=virbr0' ]");
    d.create(&gt, "vif = [ 'bridge=virbr0' ]");
    for (g, a) in [(&ga, ip(11)), (&gb, ip(12))] {
        ok_in(
            g,
            &format!(
                "ip link set lo up && ip addr add {a}/24 dev eth0 && \
                 ip route add default via {}",
                ip(254)
            ),
        );
    }
    ok_in(&ga, &format!("ip addr add 10.{}.0.11/24 dev eth1", net + 1));
    ok_in(&gr, "ip link set lo up");
    ok_in(&gn, "ip link set lo up");
    ok_in(&gd, "ip link set lo up");
    ok_in(&gt, "ip link set lo up");
    assert!(dhclient(&gr, "").starts_with(&format!("{}/", ip(50))));
    let (hi, lo) = (idn / 256, idn % 256);
    assert_eq!(dhclient(&gn, ""), format!("10.{hi}.{lo}.1/16"));
    let addr_d = dhclient(&gd, "");
    let ip_d = addr_d.split('/').next().unwrap().to_string();
    assert!(ip_d.starts_with("192.168.122."), "{addr_d}");
    d.ok(&[
        "net",
        "forward",
        "add",
        "default",
        &format!("tcp:8080:{ip_d}:5201"),
    ]);
    // Static MAC table entries: a MAC only reachable behind a's vif on xenbr0, and one
    // behind xenbr1's host port.
    let ida = d.domid(&ga);
    d.ok(&[
        "fdb",
        "add",
        "xenbr0",
        "02:00:00:00:aa:01",
        &format!("vif{ida}.0"),
    ]);
    d.ok(&["fdb", "add", "xenbr1", "02:00:00:00:aa:02", "xenbr1"]);

    // Everything works before the kill.
    ok_in(&ga, &format!("ping -c 1 -W 2 {}", ip(12)));
    ok_in(&ga, &format!("ping -c 1 -W 2 10.{}.0.1", net + 1));
    ok_in(&gb, &format!("ping -c 1 -W 2 {}", ip(254)));
    out.sh(&format!("ping -c 1 -W 2 {}", ip(50)));
    ok_in(&gn, &format!("ping -c 1 -W 2 {}", ip(254)));
    ok_in(&gd, &format!("ping -c 1 -W 2 {}", ip(254)));
    tcp_ok(&gd, &out.name, &ip(1), 8080);
    // The lease is on disk (the saver writes within a few seconds).
    let mac_d = ok_in(&gd, "cat /sys/class/net/eth0/address");
    let lease_key = format!(
        "/tool/domnet/net/default/lease/{}",
        mac_d.trim().replace(':', "")
    );
    assert!(
        wait_for(Duration::from_secs(10), || d
            .xs_tool(&d.dom0_socket(), "xenstore-read", &[&lease_key])
            .status
            .success()),
        "lease of {gd} not saved"
    );

    let guests = [&ga, &gb, &gr, &gn, &gd, &gt].map(|s| s.as_str());
    let bridges = ["xenbr0", "xenbr1", "virbr0"];
    let before = snapshot(&d, &dom0, &guests, &bridges, &["default"]);

    // Traffic: pings every 50 ms on each path, and TCP streams a -> outside and
    // d -> outside.
    let interval = Duration::from_millis(50);
    let mut pingers = vec![
        Pinger::start(&d.dir, "a>b bridged", &ga, &ip(12), interval),
        Pinger::start(
            &d.dir,
            "a>dom0 xenbr1",
            &ga,
            &format!("10.{}.0.1", net + 1),
            interval,
        ),
        Pinger::start(&d.dir, "b>outside uplink", &gb, &ip(254), interval),
        Pinger::start(&d.dir, "outside>r routed", &out.name, &ip(50), interval),
        Pinger::start(&d.dir, "n>outside vif-nat", &gn, &ip(254), interval),
        Pinger::start(&d.dir, "d>outside NAT network", &gd, &ip(254), interval),
    ];
    let bridged = Stream::start(&out.name, &ga, &ip(254), 5201);
    // Through the NAT network: its conntrack entries die with the daemon; the guest's
    // next segments pick the connection up under the same external port.
    let natted = Stream::start(&out.name, &gd, &ip(254), 5202);
    std::thread::sleep(Duration::from_secs(2));
    for p in &pingers {
        assert!(
            p.replies().len() > 10,
            "{}: no traffic before the kill",
            p.what
        );
    }

    // kill -9, restart on the same directories.
    let t_kill = wall_now();
    d.kill(libc::SIGKILL);
    let took = d.spawn();
    eprintln!(
        "restart: control socket answering {} ms after the kill",
        took.as_millis()
    );
    for p in &pingers {
        assert!(
            wait_for(Duration::from_secs(30), || p
                .last_reply()
                .is_some_and(|r| r.at > t_kill)),
            "{}: no connectivity 30 s after the restart; log:\n{}",
            p.what,
            d.log()
        );
    }
    std::thread::sleep(Duration::from_secs(1));
    let mut worst = Duration::ZERO;
    for p in pingers.iter_mut() {
        p.stop();
        let silence = p.longest_silence();
        let first_after = p
            .replies()
            .iter()
            .find(|r| r.at > t_kill)
            .map(|r| r.at - t_kill)
            .unwrap_or(f64::NAN);
        eprintln!(
            "restart: {:<24} no answer for {:>5} ms (first answer {:>5.0} ms after the kill), \
             longest loss {:>4} ms",
            p.what,
            silence.as_millis(),
            first_after * 1000.0,
            p.longest_loss().as_millis()
        );
        worst = worst.max(silence);
    }
    eprintln!("restart: connectivity back after {} ms", worst.as_millis());
    if let Some(path) = std::env::var_os("RESTART_TEST_LOG") {
        // For a closer look at the restart: the daemon's log, and the pings'.
        let _ = std::fs::write(&path, d.log());
        for p in &pingers {
            let _ = std::fs::copy(
                &p.out,
                format!(
                    "{}.{}",
                    path.to_string_lossy(),
                    p.what.replace([' ', '>'], "_")
                ),
            );
        }
    }
    assert!(
        worst < Duration::from_secs(10),
        "connectivity took {worst:?} to come back"
    );
    // The TCP streams across the restart finished (retransmissions bridged the gap).
    for (what, stream) in [("bridged", bridged), ("NAT network", natted)] {
        match stream.finish() {
            Ok((mbps, retransmits)) => eprintln!(
                "restart: TCP stream across the restart ({what}): {mbps:.1} Mbit/s, \
                 {retransmits} retransmits"
            ),
            Err(e) => panic!("the {what} TCP stream across the restart failed: {e}"),
        }
    }

    // State identical.
    let after = snapshot(&d, &dom0, &guests, &bridges, &["default"]);
    assert_same(&before, &after);
    for row in after["network-list"].as_object().unwrap().values() {
        for r in row.as_array().unwrap() {
            assert_eq!(r["state"], 4, "{r}");
            assert_eq!(r["backend_state"], 4, "{r}");
        }
    }

    // The port forward works again, the guest rebooting with its lease keeps its
    // address, and the restored lease is held: another guest rebooting with a claim
    // on that address is refused (DHCPNAK) and given another one — a server that had
    // lost the lease would have granted it.
    tcp_ok(&gd, &out.name, &ip(1), 8080);
    assert_eq!(dhclient(&gd, ""), addr_d);
    let addr_t = dhclient(&gt, &claimed_lease(&ip_d));
    assert!(
        addr_t.starts_with("192.168.122.") && !addr_t.starts_with(&format!("{ip_d}/")),
        "{gt} was given {addr_t}, {gd}'s leased address"
    );
    assert!(
        !d.log().contains(" ERROR "),
        "errors in the daemon log:\n{}",
        d.log()
    );
}

/// A hotplug script that waits (forever) while a marker file exists, so a test can
/// kill the daemon while an attach or detach is half-way; otherwise it is vif-bridge.
fn slow_script(dir: &Path) -> PathBuf {
    let bridge = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/vif-bridge");
    let s = dir.join("vif-slow");
    let d = dir.display();
    std::fs::write(
        &s,
        format!(
            "#!/bin/sh\n\
             if [ -e {d}/slow-$1 ]; then echo $$ > {d}/slow.pid; touch {d}/waiting-$1; sleep 600; fi\n\
             exec {} \"$@\"\n",
            bridge.display()
        ),
    )
    .unwrap();
    Command::new("chmod").arg("+x").arg(&s).status().unwrap();
    s
}

/// Whether process `pid` exists (not a zombie of ours: the scripts are the old
/// daemon's children, re-parented to init).
fn process_alive(pid: &str) -> bool {
    Path::new(&format!("/proc/{}", pid.trim())).exists()
}

#[test]
fn kill_9_half_way_through_attach_and_detach_leaves_no_debris() {
    require_root();
    let _s = serial();
    let dom0 = Netns::new("rh0-");
    let mut d = Daemon::start_in(&dom0.name);
    d.ok(&["bridge", "add", "xenbr0"]);
    dom0.sh("ip addr add 10.152.0.1/24 dev xenbr0");
    let g = unique("rhg");
    let id = d.create(&g, "vif = [ 'bridge=xenbr0' ]");
    ok_in(&g, "ip addr add 10.152.0.2/24 dev eth0");
    ok_in(&g, "ping -c 1 -W 2 10.152.0.1");
    let script = slow_script(&d.dir);
    let xs = |d: &Daemon, p: &str| {
        d.xs_tool(&d.dom0_socket(), "xenstore-read", &[p])
            .status
            .success()
    };
    let gone = |d: &Daemon, what: &str| {
        for p in [
            format!("/local/domain/0/backend/vif/{id}/1"),
            format!("/local/domain/{id}/device/vif/1"),
            format!("/libxl/{id}/device/vif/1"),
        ] {
            assert!(!xs(d, &p), "{what}: {p} left behind");
        }
        let stats = d.ok(&["stats", "--json"]);
        assert!(
            !stats.contains(&format!("\"vif{id}.1\"")),
            "{what}: port left behind"
        );
        assert!(
            wait_for(Duration::from_secs(5), || !sh_in(&g, "ip link show eth1")
                .status
                .success()),
            "{what}: eth1 left in the guest"
        );
        assert_eq!(
            json(d, &["network-list", &g]).as_array().unwrap().len(),
            1,
            "{what}"
        );
    };

    // 1. Attach interrupted while its hotplug script runs: rolled back after the
    //    restart (the attach was never acknowledged).
    std::fs::write(d.dir.join("slow-online"), "").unwrap();
    let attach = Command::new(common::bin())
        .args(["network-attach", &g])
        .arg(format!("script={},bridge=xenbr0", script.display()))
        .env("DOMNET_RUN_DIR", &d.run_dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(wait_for(Duration::from_secs(10), || d
        .dir
        .join("waiting-online")
        .exists()));
    let script_pid = std::fs::read_to_string(d.dir.join("slow.pid")).unwrap();
    d.kill(libc::SIGKILL);
    let o = attach.wait_with_output().unwrap();
    assert!(
        !o.status.success(),
        "the interrupted attach reports failure"
    );
    std::fs::remove_file(d.dir.join("slow-online")).unwrap();
    d.spawn();
    // The old daemon's script is gone too (it would write into the tree later).
    assert!(
        wait_for(Duration::from_secs(5), || !process_alive(&script_pid)),
        "the interrupted hotplug script still runs"
    );
    assert!(wait_for(Duration::from_secs(15), || json(
        &d,
        &["network-list", &g]
    )
    .as_array()
    .unwrap()
    .len()
        == 1));
    gone(&d, "interrupted attach");
    let log = d.log();
    assert!(
        log.contains("its attach was interrupted by the restart; rolled back")
            && log.contains("hotplug script processes a previous daemon left running"),
        "{log}"
    );
    assert!(
        wait_for(Duration::from_secs(10), || sh_in(
            &g,
            "ping -c 1 -W 1 10.152.0.1"
        )
        .status
        .success()),
        "eth0 works after the restart"
    );

    // 2. Detach interrupted while its offline script runs: completed after the restart.
    d.ok(&[
        "network-attach",
        &g,
        &format!("script={},bridge=xenbr0", script.display()),
    ]);
    assert!(xs(&d, &format!("/local/domain/0/backend/vif/{id}/1/state")));
    std::fs::write(d.dir.join("slow-offline"), "").unwrap();
    let detach = Command::new(common::bin())
        .args(["network-detach", &g, "1"])
        .env("DOMNET_RUN_DIR", &d.run_dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(wait_for(Duration::from_secs(15), || d
        .dir
        .join("waiting-offline")
        .exists()));
    let script_pid = std::fs::read_to_string(d.dir.join("slow.pid")).unwrap();
    d.kill(libc::SIGKILL);
    let _ = detach.wait_with_output();
    std::fs::remove_file(d.dir.join("slow-offline")).unwrap();
    d.spawn();
    assert!(
        wait_for(Duration::from_secs(5), || !process_alive(&script_pid)),
        "the interrupted hotplug script still runs"
    );
    assert!(wait_for(Duration::from_secs(15), || json(
        &d,
        &["network-list", &g]
    )
    .as_array()
    .unwrap()
    .len()
        == 1));
    gone(&d, "interrupted detach");
    assert!(d.log().contains("its interrupted detach is finished"));
    ok_in(&g, "ping -c 1 -W 2 10.152.0.1");
    let rows = json(&d, &["network-list", &g]);
    assert_eq!(rows[0]["state"], 4, "{rows}");
}
