//! Two namespace domains on one bridge through their netbacks, against a real daemon
//! (needs root, ping and iperf3):
//!
//! * two domains with the daemon's own netfronts ping both ways and move TCP for 10 s
//!   with iperf3; `domnet stats vif<D>.0 --json` shows frames larger than 1500 bytes
//!   crossing as single GSO packets in both directions and no unexpected drop;
//! * a domain driven by an external `domnet frontend` process (the hypervisor-socket
//!   protocol, docs/hypervisor-socket.md) pings a builtin one and moves TCP with GSO;
//!   stopped by SIGTERM it leaves cleanly (state Closed on both ends, every grant
//!   revoked), a second process takes the vif over, and a detach ends that one.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{guest_ok, guest_sh, require_root, require_tool, unique, wait_for, Daemon, Netns};
use vif::env::FrontendEnv;
use vif::env_socket::{SocketEnv, VIF_WINDOW};

const GTF_TYPE_MASK: u16 = 3;

fn ping(from: &str, to: &str) {
    guest_ok(from, &format!("ping -c 3 -i 0.2 -W 2 {to}"));
}

fn xs_read(d: &Daemon, path: &str) -> Option<String> {
    let o = d.xs_tool(&d.dom0_socket(), "xenstore-read", &[path]);
    o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).trim_end().to_string())
}

/// One port's `domnet stats PORT --json`: carrier and driver counters.
fn port_stats(d: &Daemon, port: &str) -> (bool, HashMap<String, u64>) {
    let v: serde_json::Value = serde_json::from_str(&d.ok(&["stats", port, "--json"])).unwrap();
    let p = &v["ports"][0];
    let driver = p["driver"]
        .as_array()
        .unwrap_or_else(|| panic!("{port}: no driver counters: {v}"))
        .iter()
        .map(|kv| (kv[0].as_str().unwrap().to_string(), kv[1].as_u64().unwrap()))
        .collect();
    (p["carrier"].as_bool().unwrap(), driver)
}

fn counter(c: &HashMap<String, u64>, name: &str) -> u64 {
    *c.get(name)
        .unwrap_or_else(|| panic!("no counter {name}: {c:?}"))
}

/// Drops that must not happen between well-behaved guests (`rx_backlog_full`, the tail
/// drop of a saturated vif, is bounded separately).
const UNEXPECTED: &[&str] = &[
    "tx_too_many_slots",
    "tx_first_slot_too_short",
    "tx_slot_exceeds_total",
    "tx_grant_copy_failed",
    "rx_expired",
    "rx_carrier_off",
    "rx_packet_too_large",
    "rx_grant_copy_failed",
    "rx_unsupported_offload",
    "disabled",
];

fn assert_clean_vif(d: &Daemon, port: &str) -> HashMap<String, u64> {
    let (carrier, c) = port_stats(d, port);
    assert!(carrier, "{port} carrier");
    for name in UNEXPECTED {
        assert_eq!(counter(&c, name), 0, "{port}: {name}");
    }
    let fatal: Vec<_> = c
        .iter()
        .filter(|(k, v)| k.starts_with("fatal_") && **v > 0)
        .collect();
    assert!(fatal.is_empty(), "{port}: {fatal:?}");
    let tail = counter(&c, "rx_backlog_full");
    assert!(
        tail * 10 <= counter(&c, "rx_frames").max(1),
        "{port}: tail drops {tail} stay under 10% of delivered frames"
    );
    c
}

/// Runs `iperf3 -c` from `client` to `server_ip` (a one-shot server in `server`) and
/// returns the received bit rates (forward, reverse).
fn iperf3(server: &str, client: &str, server_ip: &str, secs: u32, bidir: bool) -> (f64, f64) {
    let mut srv = Command::new("ip")
        .args(["netns", "exec", server, "iperf3", "-s", "-1", "-p", "5201"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("iperf3 server");
    assert!(
        wait_for(Duration::from_secs(5), || guest_sh(server, "ss -ltn")
            .stdout
            .windows(5)
            .any(|w| w == b":5201")),
        "iperf3 server listening"
    );
    let mut cmd = format!("iperf3 -c {server_ip} -p 5201 -t {secs} -J");
    if bidir {
        cmd.push_str(" --bidir");
    }
    let out = guest_sh(client, &cmd);
    let _ = srv.kill();
    let _ = srv.wait();
    assert!(
        out.status.success(),
        "iperf3: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let fwd = j["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or(0.0);
    let rev = j["end"]["sum_received_bidir_reverse"]["bits_per_second"]
        .as_f64()
        .unwrap_or(0.0);
    (fwd, rev)
}

/// A daemon in its own dom0 namespace with bridge xenbr0 (dom0 at `<subnet>.1`).
fn fabric(subnet: &str) -> (Daemon, Netns) {
    require_root();
    require_tool("ping");
    require_tool("iperf3");
    let dom0 = Netns::new("td0-");
    let d = Daemon::start_in(&dom0.name);
    d.ok(&["bridge", "add", "xenbr0"]);
    dom0.sh(&format!("ip addr add {subnet}.1/24 dev xenbr0"));
    (d, dom0)
}

/// A builtin-frontend domain on xenbr0 with address `ip`; returns its vif's port.
fn builtin(d: &Daemon, name: &str, ip: &str) -> String {
    let id = d.create(name, "vif = [ 'bridge=xenbr0' ]");
    guest_ok(
        name,
        &format!("ip link set lo up && ip addr add {ip}/24 dev eth0 && ip link set eth0 up"),
    );
    format!("vif{id}.0")
}

#[test]
fn two_builtin_domains_ping_and_move_tcp_as_gso_packets() {
    let subnet = "10.232.0";
    let (d, _dom0) = fabric(subnet);
    let (a, b) = (unique("tda"), unique("tdb"));
    let pa = builtin(&d, &a, &format!("{subnet}.2"));
    let pb = builtin(&d, &b, &format!("{subnet}.3"));
    ping(&a, &format!("{subnet}.3"));
    ping(&b, &format!("{subnet}.2"));

    let (fwd, rev) = iperf3(&b, &a, &format!("{subnet}.3"), 10, true);
    eprintln!(
        "{a} → {b}: {:.2} Gbit/s, {b} → {a}: {:.2} Gbit/s (bidirectional, 10 s)",
        fwd / 1e9,
        rev / 1e9
    );
    assert!(
        fwd > 5e7 && rev > 5e7,
        "TCP moved both ways: {fwd} / {rev} bit/s"
    );

    for port in [&pa, &pb] {
        let c = assert_clean_vif(&d, port);
        eprintln!("{port}: {c:?}");
        assert!(
            counter(&c, "tx_gso_frames") > 0,
            "{port}: GSO packets from the guest"
        );
        assert!(
            counter(&c, "rx_gso_frames") > 0,
            "{port}: GSO packets to the guest"
        );
        assert!(
            counter(&c, "tx_max_frame") > 1500,
            "{port}: large frames out"
        );
        assert!(
            counter(&c, "rx_max_frame") > 1500,
            "{port}: large frames in"
        );
        assert_eq!(counter(&c, "connected"), 1);
    }
    // After the run both ways still work.
    ping(&a, &format!("{subnet}.3"));
    assert!(!d.log().contains("panicked"));
}

/// A `domnet frontend` child, killed on drop if still running; its stdout lines
/// arrive on a channel.
struct FrontendProc {
    child: Option<Child>,
    lines: std::sync::mpsc::Receiver<String>,
}

impl FrontendProc {
    fn spawn(d: &Daemon, domain: &str, log: &str) -> FrontendProc {
        let stderr = std::fs::File::create(d.dir.join(log)).unwrap();
        let mut child = Command::new(common::bin())
            .args(["frontend", domain, "--devid", "0"])
            .env("DOMNET_RUN_DIR", &d.run_dir)
            .env("DOMNET_LOG", "debug")
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn domnet frontend");
        let out = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        FrontendProc {
            child: Some(child),
            lines,
        }
    }

    /// Waits for the "connected" line.
    fn wait_connected(&self, d: &Daemon, log: &str) {
        let got = self.lines.recv_timeout(Duration::from_secs(20));
        assert!(
            got.as_deref()
                .is_ok_and(|l| l.contains("connected to backend domain 0")),
            "the external frontend connected: {got:?}\n{}",
            std::fs::read_to_string(d.dir.join(log)).unwrap_or_default()
        );
    }

    /// Signals it and waits (up to `timeout`) for it to exit; returns its status.
    fn stop(&mut self, signal: i32, timeout: Duration) -> std::process::ExitStatus {
        let c = self.child.take().expect("running");
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(c.id() as i32, signal) };
        self.wait_exit(c, timeout)
    }

    /// Waits for it to exit on its own.
    fn wait(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let c = self.child.take().expect("running");
        self.wait_exit(c, timeout)
    }

    fn wait_exit(&mut self, mut c: Child, timeout: Duration) -> std::process::ExitStatus {
        let mut st = None;
        wait_for(timeout, || {
            st = c.try_wait().unwrap();
            st.is_some()
        });
        match st {
            Some(s) => s,
            None => {
                let _ = c.kill();
                let _ = c.wait();
                panic!("domnet frontend did not exit within {timeout:?}");
            }
        }
    }
}

impl Drop for FrontendProc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn an_external_frontend_process_carries_real_traffic() {
    let subnet = "10.233.0";
    let (d, _dom0) = fabric(subnet);
    let a = unique("tdc");
    let pa = builtin(&d, &a, &format!("{subnet}.2"));
    let x = unique("tdx");
    let xid = d.create(&x, "vif_frontend = \"external\"\nvif = [ 'bridge=xenbr0' ]");
    let px = format!("vif{xid}.0");
    let fe_state = format!("/local/domain/{xid}/device/vif/0/state");
    let be_state = format!("/local/domain/0/backend/vif/{xid}/0/state");
    // Without a frontend the backend waits.
    assert_eq!(xs_read(&d, &be_state).as_deref(), Some("2"));
    // A builtin domain's vifs are the daemon's; an unknown domain is refused.
    let o = d.cli(&["frontend", &a]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("vif_frontend"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(
        d.cli(&["frontend", "no-such-domain"]).status.code(),
        Some(1)
    );
    ping(&a, &format!("{subnet}.1"));

    let mut fe = FrontendProc::spawn(&d, &x, "frontend1.log");
    fe.wait_connected(&d, "frontend1.log");
    assert_eq!(xs_read(&d, &be_state).as_deref(), Some("4"));
    assert_eq!(xs_read(&d, &fe_state).as_deref(), Some("4"));
    let mac = xs_read(&d, &format!("/local/domain/{xid}/device/vif/0/mac")).unwrap();
    assert_eq!(
        guest_ok(&x, "cat /sys/class/net/eth0/address").trim(),
        mac,
        "the TAP carries the vif's MAC"
    );
    guest_ok(
        &x,
        &format!("ip link set lo up && ip addr add {subnet}.9/24 dev eth0"),
    );
    ping(&x, &format!("{subnet}.2"));
    ping(&a, &format!("{subnet}.9"));
    ping(&x, &format!("{subnet}.1"));

    // TCP through the external frontend, as GSO packets both ways.
    let (fwd, rev) = iperf3(&a, &x, &format!("{subnet}.2"), 3, true);
    eprintln!(
        "external → builtin {:.2} Gbit/s, builtin → external {:.2} Gbit/s",
        fwd / 1e9,
        rev / 1e9
    );
    assert!(fwd > 1e7 && rev > 1e7, "{fwd} / {rev}");
    let c = assert_clean_vif(&d, &px);
    assert!(counter(&c, "tx_gso_frames") > 0 && counter(&c, "tx_max_frame") > 1500);
    assert!(counter(&c, "rx_gso_frames") > 0 && counter(&c, "rx_max_frame") > 1500);
    assert_clean_vif(&d, &pa);
    let list = d.ok(&["network-list", &x]);
    assert!(
        list.lines()
            .nth(1)
            .is_some_and(|r| r.split_whitespace().nth(4) == Some("4")),
        "{list}"
    );

    // SIGTERM: the frontend leaves cleanly.
    let st = fe.stop(libc::SIGTERM, Duration::from_secs(20));
    assert!(st.success(), "clean exit: {st}");
    assert_eq!(xs_read(&d, &fe_state).as_deref(), Some("6"));
    assert!(
        wait_for(Duration::from_secs(5), || xs_read(&d, &be_state).as_deref()
            == Some("6")),
        "backend Closed"
    );
    let (carrier, c) = port_stats(&d, &px);
    assert!(
        !carrier && counter(&c, "connected") == 0,
        "backend disconnected: {c:?}"
    );
    // Every grant of the vif's window is revoked (seen through the same protocol).
    let sock = hypervisor::hvsock::socket_path(&d.run_dir, xid);
    let look = SocketEnv::connect(&sock).unwrap();
    let live: Vec<u32> = (8..8 + VIF_WINDOW)
        .filter(|&r| {
            look.grant_table()
                .entry(r)
                .is_some_and(|(flags, _, _)| flags & GTF_TYPE_MASK != 0)
        })
        .collect();
    assert!(live.is_empty(), "grants left after a clean exit: {live:?}");
    // The TAP went with the process.
    assert!(!guest_sh(&x, "ip link show eth0").status.success());

    // A second process takes the vif over (the backend walks back to InitWait).
    let mut fe2 = FrontendProc::spawn(&d, &x, "frontend2.log");
    fe2.wait_connected(&d, "frontend2.log");
    guest_ok(&x, &format!("ip addr add {subnet}.9/24 dev eth0"));
    ping(&x, &format!("{subnet}.2"));
    // Detaching the vif ends it: it follows the backend to Closed and exits.
    d.ok(&["network-detach", &x, "0"]);
    let st = fe2.wait(Duration::from_secs(20));
    assert!(st.success(), "exit after the backend closed: {st}");
    let log2 = std::fs::read_to_string(d.dir.join("frontend2.log")).unwrap_or_default();
    assert!(
        log2.contains("the backend closed") || log2.contains("detached"),
        "{log2}"
    );
    assert!(xs_read(&d, &be_state).is_none(), "vif gone");
    ping(&a, &format!("{subnet}.1"));
    d.ok(&["destroy", &x]);
    assert!(!d.log().contains("panicked"));
}
