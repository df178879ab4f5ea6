//! Shared helpers for the integration tests: a private daemon per test (own run and
//! state directories, killed and cleaned up on drop, even when the test panics), the
//! CLI, and Xen's xenstore tools pointed at it.

#![allow(dead_code)]

pub mod extfront;
pub mod frames;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A unique short tag for names (namespaces, domains) of this test process.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}{}x{}",
        std::process::id() % 100_000,
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// Fails loudly (never skips) when not root.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test needs root (run scripts/test as root)"
    );
}

/// Fails loudly when a tool the test drives is missing.
pub fn require_tool(tool: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "`{tool}` is not installed (scripts/test installs it)"
    );
}

/// A daemon running in its own temporary directories.
pub struct Daemon {
    pub dir: PathBuf,
    pub run_dir: PathBuf,
    pub state_dir: PathBuf,
    /// The namespace standing in for dom0 (`None`: the test's own namespace).
    pub netns: Option<String>,
    child: Option<Child>,
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_domnet")
}

impl Daemon {
    /// Starts a daemon in a fresh directory and waits until it answers.
    pub fn start() -> Daemon {
        Self::start_with(None)
    }

    /// Starts a daemon inside network namespace `netns` (which stands in for dom0).
    pub fn start_in(netns: &str) -> Daemon {
        Self::start_with(Some(netns.to_string()))
    }

    fn start_with(netns: Option<String>) -> Daemon {
        let dir = std::env::temp_dir().join(unique("domnet-test-"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut d = Daemon {
            run_dir: dir.join("run"),
            state_dir: dir.join("state"),
            dir,
            netns,
            child: None,
        };
        d.spawn();
        d
    }

    /// (Re)starts the daemon process on the same directories.
    pub fn spawn(&mut self) -> Duration {
        assert!(self.child.is_none(), "daemon already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("daemon.log"))
            .unwrap();
        let t0 = Instant::now();
        // `--netns` (not `ip netns exec`, whose private mount namespace would hide the
        // guest namespaces the daemon creates from the rest of the system).
        let mut cmd = Command::new(bin());
        if let Some(ns) = &self.netns {
            cmd.args(["daemon", "--netns", ns]);
        } else {
            cmd.arg("daemon");
        }
        let child = cmd
            .args(["--run-dir"])
            .arg(&self.run_dir)
            .arg("--state-dir")
            .arg(&self.state_dir)
            .args(["--hotplug-timeout", "5"])
            .env("DOMNET_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn domnet daemon");
        self.child = Some(child);
        while t0.elapsed() < Duration::from_secs(30) {
            if self.cli(&["list"]).status.success() {
                return t0.elapsed();
            }
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    panic!("daemon exited at startup with {st}; log:\n{}", self.log());
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("daemon did not come up; log:\n{}", self.log());
    }

    /// Sends a signal and reaps the process.
    pub fn kill(&mut self, signal: i32) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(c.id() as i32, signal) };
            let _ = c.wait();
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// True while the daemon process is alive.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default()
    }

    /// Runs `domnet ARGS` against this daemon.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(bin())
            .args(args)
            .env("DOMNET_RUN_DIR", &self.run_dir)
            .output()
            .expect("run domnet")
    }

    /// Runs `domnet ARGS`, asserting success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "domnet {args:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Writes an xl.cfg in the test dir and creates the domain; returns its id.
    pub fn create(&self, name: &str, extra: &str) -> u16 {
        let cfg = self.dir.join(format!("{name}.cfg"));
        std::fs::write(&cfg, format!("name = \"{name}\"\nmemory = 16\n{extra}\n")).unwrap();
        self.ok(&["create", cfg.to_str().unwrap()]);
        self.domid(name)
    }

    pub fn domid(&self, name: &str) -> u16 {
        let list: serde_json::Value = serde_json::from_str(&self.ok(&["list", "--json"])).unwrap();
        list.as_array()
            .unwrap()
            .iter()
            .find(|d| d["name"] == name)
            .and_then(|d| d["domid"].as_u64())
            .unwrap_or_else(|| panic!("domain {name} not listed")) as u16
    }

    /// dom0's xenstore socket.
    pub fn dom0_socket(&self) -> PathBuf {
        self.run_dir.join("xenstored").join("socket")
    }

    /// A domain's own xenstore socket.
    pub fn domain_socket(&self, name: &str) -> PathBuf {
        PathBuf::from(self.ok(&["xenstore-path", name]).trim())
    }

    /// Runs one of Xen's xenstore tools against `socket`.
    pub fn xs_tool(&self, socket: &Path, tool: &str, args: &[&str]) -> Output {
        Command::new(tool)
            .args(args)
            .env("XENSTORED_PATH", socket)
            .output()
            .unwrap_or_else(|e| panic!("running {tool}: {e}"))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // Every guest domain is a network namespace: remove them even if the test failed.
        let guests: Vec<String> =
            serde_json::from_slice::<serde_json::Value>(&self.cli(&["list", "--json"]).stdout)
                .ok()
                .and_then(|v| v.as_array().cloned())
                .unwrap_or_default()
                .iter()
                .filter(|d| d["domid"] != 0)
                .filter_map(|d| d["name"].as_str().map(str::to_string))
                .collect();
        self.kill(libc::SIGKILL);
        for g in guests {
            let _ = Command::new("ip").args(["netns", "del", &g]).output();
        }
        if std::thread::panicking() {
            eprintln!(
                "--- daemon log ({}) ---\n{}",
                self.dir.display(),
                self.log()
            );
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A network namespace for a test, deleted on drop (even when the test panics).
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(prefix: &str) -> Netns {
        let name = unique(prefix);
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        let out = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ip netns add {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let n = Netns { name };
        n.sh("ip link set lo up");
        n
    }

    /// Runs a shell command inside the namespace; returns its output.
    pub fn exec(&self, cmd: &str) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name, "sh", "-c", cmd])
            .output()
            .unwrap()
    }

    /// Runs a shell command inside the namespace, asserting success; returns stdout.
    pub fn sh(&self, cmd: &str) -> String {
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
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Polls `f` until it returns true or `timeout` passes.
pub fn wait_for(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < timeout {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    f()
}

/// `ip -j addr` and every IPv4/IPv6 route of a namespace, without the fields that
/// legitimately change over time (address lifetimes, route expiry): what
/// `network-bridge stop` must restore exactly.
pub fn net_state(ns: &Netns) -> serde_json::Value {
    let mut addr: serde_json::Value = serde_json::from_str(&ns.sh("ip -j addr")).unwrap();
    for link in addr.as_array_mut().unwrap() {
        if let Some(infos) = link["addr_info"].as_array_mut() {
            for a in infos {
                let o = a.as_object_mut().unwrap();
                if o.get("dynamic").is_some() {
                    o.remove("valid_life_time");
                    o.remove("preferred_life_time");
                }
            }
        }
    }
    let r4: serde_json::Value =
        serde_json::from_str(&ns.sh("ip -j -4 route show table all")).unwrap();
    let mut r6: serde_json::Value =
        serde_json::from_str(&ns.sh("ip -j -6 route show table all")).unwrap();
    for r in r6.as_array_mut().unwrap() {
        r.as_object_mut().unwrap().remove("expires");
    }
    serde_json::json!({ "addr": addr, "route4": r4, "route6": r6 })
}

/// One port's `domnet stats PORT --json` entry.
pub fn port_stats(d: &Daemon, port: &str) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_str(&d.ok(&["stats", port, "--json"])).unwrap();
    v["ports"]
        .as_array()
        .and_then(|a| a.iter().find(|p| p["name"] == port).cloned())
        .unwrap_or_else(|| panic!("no port {port} in stats: {v}"))
}

/// A named counter from a `[[name, n], …]` list of a port report (0 when absent: the
/// drop lists only carry non-zero reasons).
pub fn named(report: &serde_json::Value, list: &str, name: &str) -> u64 {
    report[list]
        .as_array()
        .and_then(|a| a.iter().find(|e| e[0] == name).and_then(|e| e[1].as_u64()))
        .unwrap_or(0)
}

/// A receive-side drop counter of a port, by reason name.
pub fn rx_drops(d: &Daemon, port: &str, reason: &str) -> u64 {
    named(&port_stats(d, port), "rx_drops", reason)
}

/// A transmit-side drop counter of a port, by reason name.
pub fn tx_drops(d: &Daemon, port: &str, reason: &str) -> u64 {
    named(&port_stats(d, port), "tx_drops", reason)
}

/// A driver counter of a port (netback's own drop reasons, GSO frames…).
pub fn driver(d: &Daemon, port: &str, name: &str) -> u64 {
    named(&port_stats(d, port), "driver", name)
}

/// A background process killed (and reaped) when dropped, even if the test panics.
pub struct Background(Option<Child>);

impl Background {
    /// Starts `cmd` (a shell command) inside namespace `ns`; its output is kept for
    /// [`Background::wait`].
    pub fn in_netns(ns: &str, cmd: &str) -> Background {
        let child = Command::new("ip")
            .args(["netns", "exec", ns, "sh", "-c", &format!("exec {cmd}")])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting `{cmd}` in {ns}: {e}"));
        Background(Some(child))
    }

    /// Waits for the process to end by itself and returns its output.
    pub fn wait(mut self) -> Output {
        self.0
            .take()
            .expect("background process")
            .wait_with_output()
            .expect("wait for background process")
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            // SAFETY: kill(2) on our own child, not yet reaped.
            unsafe { libc::kill(c.id() as i32, libc::SIGKILL) };
            let _ = c.wait();
        }
    }
}

/// Runs `cmd` with `sh -c` inside namespace `ns` (a guest domain, dom0 or outside).
pub fn guest_sh(ns: &str, cmd: &str) -> Output {
    Command::new("ip")
        .args(["netns", "exec", ns, "sh", "-c", cmd])
        .output()
        .unwrap_or_else(|e| panic!("ip netns exec {ns}: {e}"))
}

/// [`guest_sh`] that must succeed; its stdout.
pub fn guest_ok(ns: &str, cmd: &str) -> String {
    let o = guest_sh(ns, cmd);
    assert!(
        o.status.success(),
        "[{ns}] {cmd}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A per-namespace `/etc/netns/NS/resolv.conf`, so `ip netns exec` bind-mounts it and
/// dhclient-script never touches the host's. Removed on drop.
pub struct NetnsEtc(String);

impl NetnsEtc {
    pub fn new(ns: &str) -> NetnsEtc {
        let dir = format!("/etc/netns/{ns}");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(format!("{dir}/resolv.conf"), "").unwrap();
        NetnsEtc(dir)
    }

    /// The guest's resolv.conf as dhclient-script left it.
    pub fn resolv_conf(&self) -> String {
        std::fs::read_to_string(format!("{}/resolv.conf", self.0)).unwrap_or_default()
    }
}

impl Drop for NetnsEtc {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs Debian's dhclient once on eth0 of `ns` (lo brought up first); the address it
/// configured, as `A.B.C.D/LEN` (empty if none).
pub fn dhclient(ns: &str) -> String {
    dhclient_on(ns, "eth0")
}

/// [`dhclient`] on interface `dev` of `ns`.
pub fn dhclient_on(ns: &str, dev: &str) -> String {
    let lease = format!("/tmp/{ns}.{dev}.leases");
    let pid = format!("/tmp/{ns}.{dev}.pid");
    guest_ok(ns, "ip link set lo up");
    guest_ok(
        ns,
        &format!("timeout 30 dhclient -1 -lf {lease} -pf {pid} {dev}"),
    );
    let _ = guest_sh(ns, &format!("dhclient -x -pf {pid}"));
    let _ = std::fs::remove_file(&lease);
    let addr = guest_ok(ns, &format!("ip -4 -o addr show dev {dev}"));
    addr.split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .unwrap_or_default()
        .to_string()
}
