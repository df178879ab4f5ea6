//! Test rigs end to end, in real namespaces, through the `domnet::rig` API and the
//! `domnet rig` CLI:
//!
//! * a rig with a bridged pair, a rate-limited and delayed domain, a routed domain and
//!   an outside: `pingall` 0 % loss, `exec` passes exit codes through, `iperf` gives a
//!   positive figure, `rate=` holds iperf3 near the rate, `delay` shows in the RTT,
//!   `down` leaves no namespace, process or directory;
//! * two rigs with the same domain names up side by side;
//! * a rig whose daemon was `kill -9`ed is removed by `rig clean`, a healthy one kept;
//! * a bad rig file is refused naming the offending key.
//!
//! Every test uses its own rigs directory and unique rig names, and a guard takes its
//! rigs down even when the test fails.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;

use common::{require_root, require_tool, unique};
use domnet::rig::probe::{self, IperfRun};
use domnet::rig::{self, Rig, RigGuard, RigOptions};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_domnet")
}

/// A rigs directory of this test; on drop every rig in it is taken down (even when the
/// test panicked) and the directory removed.
struct RigsDir(PathBuf);

impl RigsDir {
    fn new() -> RigsDir {
        let d = PathBuf::from(format!("/run/domnet/{}", unique("rigtest-")));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        RigsDir(d)
    }

    fn opts(&self) -> RigOptions {
        RigOptions {
            domnet: PathBuf::from(bin()),
            rigs_dir: self.0.clone(),
        }
    }

    /// `domnet rig ARGS` with this rigs directory.
    fn cli(&self, args: &[&str]) -> Output {
        Command::new(bin())
            .arg("rig")
            .args(args)
            .env("DOMNET_RIGS_DIR", &self.0)
            .output()
            .unwrap()
    }

    /// `domnet rig ARGS`, asserting success; stdout.
    fn ok(&self, args: &[&str]) -> String {
        let o = self.cli(args);
        assert!(
            o.status.success(),
            "domnet rig {args:?} failed ({}):\n{}{}",
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    fn file(&self, name: &str, text: &str) -> PathBuf {
        // In the rigs directory (which holds only rig directories otherwise), so the
        // guard removes it too.
        let p = self.0.join(format!("{}-{name}", unique("rigfile-")));
        std::fs::write(&p, text).unwrap();
        p
    }
}

impl Drop for RigsDir {
    fn drop(&mut self) {
        for (name, _) in domnet::rig::state::rig_dirs(&self.0) {
            if let Ok(r) = Rig::open(&self.0, Some(&name)) {
                if let Err(e) = r.down() {
                    eprintln!("taking rig {name} down: {e}");
                }
            }
        }
        let _ = domnet::rig::teardown::clean(&self.0);
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Everything a rig should leave no trace of, captured while it is up.
struct Traces {
    namespaces: Vec<String>,
    pids: Vec<u32>,
    dir: PathBuf,
    etc: Vec<PathBuf>,
}

impl Traces {
    fn of(rig: &Rig) -> Traces {
        let namespaces = rig.plan().namespaces();
        let mut pids = Vec::new();
        for ns in &namespaces {
            let o = Command::new("ip")
                .args(["netns", "pids", ns])
                .output()
                .unwrap();
            pids.extend(
                String::from_utf8_lossy(&o.stdout)
                    .split_whitespace()
                    .filter_map(|p| p.parse::<u32>().ok()),
            );
        }
        Traces {
            namespaces,
            pids,
            dir: rig.dir().to_path_buf(),
            etc: rig.state().etc_dirs.clone(),
        }
    }

    fn assert_gone(&self) {
        for ns in &self.namespaces {
            assert!(
                !Path::new("/run/netns").join(ns).exists(),
                "namespace {ns} left behind"
            );
        }
        for p in &self.pids {
            let state = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
            let st = state
                .rfind(')')
                .and_then(|i| state[i + 1..].split_whitespace().next())
                .unwrap_or("gone");
            assert!(
                st == "gone" || st == "Z" || st == "X",
                "process {p} left running ({state})"
            );
        }
        assert!(!self.dir.exists(), "{} left behind", self.dir.display());
        for e in &self.etc {
            assert!(!e.exists(), "{} left behind", e.display());
        }
    }
}

const LAN: &str = r#"
[outside]

[[bridge]]
name = "xenbr0"
netdev = "eth0"

[[domain]]
name = "a"
vif = [ "bridge=xenbr0,ip=10.0.0.11/24" ]

[[domain]]
name = "b"
vif = [ "bridge=xenbr0,ip=10.0.0.12/24" ]

[[domain]]
name = "slow"
vif = [ { spec = "bridge=xenbr0,ip=10.0.0.13/24", rate = "20Mb/s", delay = "15ms" } ]

[[domain]]
name = "r"
vif = [ "script=vif-route,ip=10.0.0.30" ]
"#;

#[test]
fn bridged_routed_and_outside_pingall_exec_iperf_rate_delay_and_down() {
    require_root();
    for t in ["iperf3", "dhclient", "xenstore-write"] {
        require_tool(t);
    }
    let _s = serial();
    let rigs = RigsDir::new();
    let name = unique("t");
    let file = rigs.file("lan.toml", LAN);
    let out = rigs.ok(&["up", file.to_str().unwrap(), "--name", &name]);
    // The summary names every vif's port and address.
    for want in [
        "10.0.0.11/24",
        "10.0.0.12/24",
        "10.0.0.13/24",
        "10.0.0.30/",
        "10.0.0.254/24",
    ] {
        assert!(out.contains(want), "{want} missing from:\n{out}");
    }
    assert!(out.contains("vif") && out.contains("route"), "{out}");
    let rig = Rig::open(&rigs.0, Some(&name)).unwrap();
    let traces = Traces::of(&rig);
    assert!(rig.daemon_alive());
    assert!(!traces.pids.is_empty());

    // `rig list` shows it up; with one rig up, --rig may be left out.
    let list: serde_json::Value = serde_json::from_str(&rigs.ok(&["list", "--json"])).unwrap();
    assert_eq!(list[0]["name"], name.as_str());
    assert_eq!(list[0]["daemon_alive"], true);

    // pingall: every pair, 0 % loss, exit 0.
    let ping = rigs.ok(&["pingall"]);
    assert!(ping.contains("*** Results: 0% dropped"), "{ping}");
    let j: serde_json::Value =
        serde_json::from_str(&rigs.ok(&["pingall", "--rig", &name, "--json", "--count", "1"]))
            .unwrap();
    // 4 domains and the outside, all on one LAN: everyone reaches everyone.
    assert_eq!(j["pairs"].as_array().unwrap().len(), 5 * 4, "{j}");
    assert_eq!(j["sent"], j["received"]);

    // exec runs in the domain's namespace and passes the exit code through.
    let addr = rigs.ok(&[
        "exec", "--rig", &name, "a", "--", "ip", "-4", "-o", "addr", "show", "dev", "eth0",
    ]);
    assert!(addr.contains("10.0.0.11/24"), "{addr}");
    assert_eq!(
        rigs.cli(&["exec", "b", "--", "sh", "-c", "exit 7"])
            .status
            .code(),
        Some(7)
    );
    let o = rigs.cli(&["exec", "nosuch", "--", "true"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("no host `nosuch`"));
    // The routed domain got its ip= by DHCP, with dom0 as its router.
    let route = rig.sh("r", "ip route show default").unwrap();
    assert!(route.contains("via 10.0.0.1"), "{route}");

    // iperf through the CLI: a positive figure.
    let line = rigs.ok(&["iperf", "a", "b", "--time", "1"]);
    assert!(
        line.contains("a -> b (10.0.0.12:") && line.contains("Gbit/s"),
        "{line}"
    );
    let gbps: f64 = line
        .split("): ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap();
    assert!(gbps > 0.0, "{line}");
    // And through the API, from the routed domain to the outside.
    let r = probe::iperf(&rig, &IperfRun::new("r", "outside", 1)).unwrap();
    assert!(r.stats.received_bps > 1e6, "{r:?}");

    // rate=20Mb/s: netback's credit limiter holds the guest's sending near 20 Mbit/s.
    let r = probe::iperf(&rig, &IperfRun::new("slow", "b", 3)).unwrap();
    let mbps = r.stats.received_bps / 1e6;
    assert!(
        (8.0..=26.0).contains(&mbps),
        "rate=20Mb/s but iperf3 measured {mbps:.1} Mbit/s"
    );
    // delay=15ms on slow's link, both ways: its round trips take 30 ms more.
    let fast = probe::ping(&rig, "a", "10.0.0.12".parse().unwrap(), 5).unwrap();
    let slow = probe::ping(&rig, "a", "10.0.0.13".parse().unwrap(), 5).unwrap();
    let (fast, slow) = (fast.rtt_avg_ms.unwrap(), slow.rtt_avg_ms.unwrap());
    assert!(
        slow - fast >= 27.0 && slow - fast < 200.0,
        "delay 15ms: rtt {slow:.1} ms against {fast:.1} ms"
    );

    // down: no namespace, process, directory or /etc/netns entry left.
    drop(rig);
    let out = rigs.ok(&["down", &name]);
    assert!(out.contains("is down"), "{out}");
    traces.assert_gone();
    assert!(rigs.ok(&["list"]).lines().count() == 1, "only the header");
    let _ = std::fs::remove_file(file);
}

const PAIR: &str = r#"
[[bridge]]
name = "br0"

[[domain]]
name = "web"
vif = [ "bridge=br0,ip=10.5.0.1/24" ]

[[domain]]
name = "db"
vif = [ "bridge=br0,ip=10.5.0.2/24" ]
"#;

#[test]
fn two_rigs_with_the_same_domain_names_run_side_by_side() {
    require_root();
    let _s = serial();
    let rigs = RigsDir::new();
    let names = [unique("p"), unique("p")];
    let opts = rigs.opts();
    // Built at the same time, from the same file.
    let built: Vec<Result<Rig, rig::RigError>> = std::thread::scope(|s| {
        let hs: Vec<_> = names
            .iter()
            .map(|n| {
                let opts = opts.clone();
                s.spawn(move || {
                    let plan = rig::load_text(PAIR, "pair.toml", None, Some(n)).unwrap();
                    rig::build::up(plan, None, &opts, &mut |_| {})
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let guards: Vec<RigGuard> = built
        .into_iter()
        .map(|r| RigGuard::new(r.unwrap()))
        .collect();
    let traces: Vec<Traces> = guards.iter().map(|g| Traces::of(g)).collect();
    for g in &guards {
        assert!(g.daemon_alive());
        let p = probe::pingall(g, 2).unwrap();
        assert_eq!(p.results.len(), 2, "{p:?}");
        assert_eq!(p.received, p.sent, "{p:?}");
        // Each rig's web is its own namespace.
        assert_eq!(g.ns("web").unwrap(), format!("{}-web", g.name()));
    }
    // Same addresses, separate worlds: a MAC seen in one rig is not in the other.
    let mac = |g: &RigGuard| g.sh("web", "cat /sys/class/net/eth0/address").unwrap();
    assert_ne!(mac(&guards[0]), mac(&guards[1]));
    // --rig is needed now that two are up.
    let o = rigs.cli(&["pingall"]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("several rigs are up"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    for g in guards {
        g.down().unwrap();
    }
    for t in &traces {
        t.assert_gone();
    }
}

#[test]
fn clean_removes_a_rig_whose_daemon_was_killed_and_keeps_a_healthy_one() {
    require_root();
    let _s = serial();
    let rigs = RigsDir::new();
    let file = rigs.file("pair.toml", PAIR);
    let (dead, healthy) = (unique("k"), unique("h"));
    rigs.ok(&["up", file.to_str().unwrap(), "--name", &dead]);
    rigs.ok(&["up", file.to_str().unwrap(), "--name", &healthy]);
    let victim = Rig::open(&rigs.0, Some(&dead)).unwrap();
    let traces = Traces::of(&victim);
    let pid = victim.daemon_pid().unwrap();
    // SAFETY: kill(2) on the daemon `rig up` started for this test.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    assert!(common::wait_for(std::time::Duration::from_secs(5), || {
        !victim.daemon_alive()
    }));
    let list: serde_json::Value = serde_json::from_str(&rigs.ok(&["list", "--json"])).unwrap();
    let row = |n: &str| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == n)
            .cloned()
            .unwrap()
    };
    assert_eq!(row(&dead)["daemon_alive"], false);
    assert_eq!(row(&healthy)["daemon_alive"], true);
    assert!(rigs.ok(&["list"]).contains("dead"));

    let out = rigs.ok(&["clean"]);
    assert!(out.contains(&format!("{dead}: removed")), "{out}");
    assert!(out.contains(&format!("{healthy}: kept (up)")), "{out}");
    traces.assert_gone();
    // The healthy rig still works.
    let healthy_rig = Rig::open(&rigs.0, Some(&healthy)).unwrap();
    let p = probe::pingall(&healthy_rig, 1).unwrap();
    assert_eq!(p.received, p.sent);
    rigs.ok(&["down", &healthy]);
    let _ = std::fs::remove_file(file);
}

#[test]
fn a_bad_rig_file_is_refused_naming_the_key() {
    require_root();
    let rigs = RigsDir::new();
    let cases = [
        (
            "[[bridge]]\nname = \"br0\"\n[[domain]]\nname = \"a\"\nvif = [ { spec = \"bridge=br0\", rate = \"fast\" } ]\n",
            "domain[a].vif[0].rate",
        ),
        ("[[domain]]\nname = \"a\"\nmemroy = 64\n", "memroy"),
        ("[[domain]]\nname = \"a\"\nvif = [ \"bridge=xenbr7\" ]\n", "xenbr7"),
        ("[outside]\naddress = \"10.0.0.300/24\"\n", "outside.address"),
    ];
    for (text, key) in cases {
        let file = rigs.file("bad.toml", text);
        let o = rigs.cli(&["up", file.to_str().unwrap(), "--name", &unique("bad")]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert!(err.contains(key), "{key} not named in: {err}");
        let e = rig::load_file(&file, Some("x")).unwrap_err().to_string();
        assert!(e.contains(key), "{e}");
        let _ = std::fs::remove_file(file);
    }
    // Nothing was made.
    assert!(domnet::rig::state::rig_dirs(&rigs.0).is_empty());
}

#[test]
fn a_failing_step_takes_down_what_was_built() {
    require_root();
    let _s = serial();
    let rigs = RigsDir::new();
    let name = unique("f");
    // The second domain's hotplug script fails: create fails after the first domain,
    // the bridge and the daemon exist.
    let file = rigs.file(
        "fail.toml",
        "[[bridge]]\nname = \"br0\"\n[[domain]]\nname = \"ok\"\nvif = [ \"bridge=br0,ip=10.6.0.1/24\" ]\n\
         [[domain]]\nname = \"broken\"\nvif = [ \"bridge=br0,script=/bin/false\" ]\n",
    );
    let o = rigs.cli(&["up", file.to_str().unwrap(), "--name", &name]);
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{out}{err}");
    assert!(err.contains("broken"), "{err}");
    assert!(out.contains("taking down what was built"), "{out}");
    for host in ["dom0", "ok", "broken"] {
        let ns = format!("{name}-{host}");
        assert!(!Path::new("/run/netns").join(&ns).exists(), "{ns} left");
    }
    assert!(domnet::rig::state::rig_dirs(&rigs.0).is_empty());
    let _ = std::fs::remove_file(file);
}

/// `domnet demo` with its rigs in this test's directory.
fn demo(rigs: &RigsDir) -> std::process::Child {
    Command::new(bin())
        .arg("demo")
        .env("DOMNET_RIGS_DIR", &rigs.0)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn the_demo_passes_and_leaves_nothing() {
    require_root();
    for t in ["iperf3", "dhclient", "xenstore-write", "nft"] {
        require_tool(t);
    }
    let _s = serial();
    let rigs = RigsDir::new();
    let child = demo(&rigs);
    let pid = child.id();
    let o = child.wait_with_output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    for want in [
        "checks passed",
        "web      db 10.0.0.12",
        "port forward",
        "Gbit/s",
        "ms",
    ] {
        assert!(out.contains(want), "{want} missing:\n{out}");
    }
    assert!(!out.contains("FAIL"), "{out}");
    assert!(domnet::rig::state::rig_dirs(&rigs.0).is_empty());
    let prefix = format!("demo-{}-", pid % 100_000);
    let left: Vec<String> = std::fs::read_dir("/run/netns")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(&prefix))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn the_demo_interrupted_by_ctrl_c_tears_down() {
    use std::io::BufRead;
    require_root();
    for t in ["iperf3", "dhclient", "xenstore-write", "nft"] {
        require_tool(t);
    }
    let _s = serial();
    let rigs = RigsDir::new();
    let mut child = demo(&rigs);
    let pid = child.id();
    let stdout = child.stdout.take().unwrap();
    // Ctrl-C once the rig is up and the checks run.
    let reader = std::thread::spawn(move || {
        let mut seen = Vec::new();
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if line.starts_with("==> connectivity") {
                // SAFETY: kill(2) on the demo this test started.
                unsafe { libc::kill(pid as i32, libc::SIGINT) };
            }
            seen.push(line);
        }
        seen
    });
    let status = child.wait().unwrap();
    let lines = reader.join().unwrap();
    assert!(!status.success(), "{lines:#?}");
    assert!(
        lines.iter().any(|l| l.contains("tearing the rig down")),
        "{lines:#?}"
    );
    assert!(domnet::rig::state::rig_dirs(&rigs.0).is_empty());
    let prefix = format!("demo-{}-", pid % 100_000);
    let left: Vec<String> = std::fs::read_dir("/run/netns")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(&prefix))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}
