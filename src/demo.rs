//! `domnet demo`: the embedded default rig (`scripts/rigs/demo.toml`) — dom0 with
//! xenbr0 on its uplink to an outside LAN, a bridged pair, a routed domain and a NAT
//! domain with a port forward — built on a private daemon, then connectivity (ping RTT)
//! and throughput (iperf3) checks along every kind of path, a table of what reached
//! what, and everything torn down, on failure and Ctrl-C too. Exit 0 when every check
//! passed.

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::ExitCode;
use std::time::Instant;

use domnet::rig::probe::{self, IperfRun};
use domnet::rig::{self, interrupt, report, Rig, RigError, RigGuard, RigOptions};

/// The demo's topology.
const DEMO_RIG: &str = include_str!("../scripts/rigs/demo.toml");

/// Pings per connectivity check.
const PINGS: u32 = 5;
/// Seconds per throughput check.
const IPERF_SECONDS: u32 = 2;

/// Tools the demo drives, with their Debian packages (scripts/demo installs them).
const TOOLS: &[(&str, &str)] = &[
    ("ip", "iproute2"),
    ("ping", "iputils-ping"),
    ("iperf3", "iperf3"),
    ("dhclient", "isc-dhcp-client"),
    ("xenstore-write", "xenstore-utils"),
    ("nft", "nftables"),
];

/// One row of the final table.
struct Check {
    from: String,
    to: String,
    path: &'static str,
    rtt_ms: Option<f64>,
    gbps: Option<f64>,
    ok: bool,
    note: String,
}

fn say(line: &str) {
    println!("{line}");
    let _ = std::io::stdout().flush();
}

fn mark(ok: bool) -> &'static str {
    if ok {
        " ok "
    } else {
        "FAIL"
    }
}

/// A host's first address, from the rig's record (`dom0`/`outside` from the plan).
fn addr_of(rig: &Rig, host: &str) -> Option<Ipv4Addr> {
    let plan = rig.plan();
    match host {
        "dom0" => plan.outside.as_ref().map(|o| o.dom0_address.ip),
        "outside" => plan.outside.as_ref().map(|o| o.address.ip),
        _ => rig
            .state()
            .host(host)
            .and_then(|h| h.vifs.first())
            .and_then(|v| v.addresses.first())
            .map(|a| a.ip),
    }
}

/// Runs the demo.
pub fn run() -> ExitCode {
    let t0 = Instant::now();
    if let Err(e) = preflight() {
        eprintln!("domnet demo: {e}");
        return ExitCode::from(1);
    }
    interrupt::install();
    let name = format!("demo-{}", std::process::id() % 100_000);
    let mut checks = Vec::new();
    let outcome = demo(&name, &mut checks);
    let took = t0.elapsed().as_secs_f64();
    print_table(&checks);
    let failed = checks.iter().filter(|c| !c.ok).count();
    match outcome {
        Ok(()) if failed == 0 => {
            say(&format!(
                "\n{} checks passed in {took:.1} s; the rig is gone.",
                checks.len()
            ));
            ExitCode::SUCCESS
        }
        Ok(()) => {
            say(&format!(
                "\n{failed} of {} checks FAILED ({took:.1} s); the rig is gone.",
                checks.len()
            ));
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("\ndomnet demo: {e} ({took:.1} s); the rig is gone.");
            ExitCode::from(1)
        }
    }
}

fn preflight() -> Result<(), RigError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(RigError::NotRoot);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let missing: Vec<String> = TOOLS
        .iter()
        .filter(|(t, _)| !std::env::split_paths(&path).any(|d| d.join(t).is_file()))
        .map(|(t, p)| format!("{t} ({p})"))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(RigError::step(
            "looking for the demo's tools",
            format!(
                "missing: {} — scripts/demo installs them with apt-get",
                missing.join(", ")
            ),
        ))
    }
}

fn demo(name: &str, checks: &mut Vec<Check>) -> Result<(), RigError> {
    say(&format!(
        "==> building the demo rig `{name}` (scripts/rigs/demo.toml) on a private daemon"
    ));
    let plan = rig::load_text(DEMO_RIG, "scripts/rigs/demo.toml", None, Some(name))?;
    let opts = RigOptions::from_env()?;
    let mut progress = |l: &str| say(&format!("    {l}"));
    let built = rig::build::up(plan, Some("(embedded demo)".into()), &opts, &mut progress)?;
    let guard = RigGuard::new(built);
    println!();
    for line in report::summary(guard.state()).lines() {
        say(&format!("    {line}"));
    }
    println!();
    let result = exercise(&guard, checks);
    say("==> tearing the rig down");
    let down = guard.down();
    result?;
    down
}

fn interrupted() -> Result<(), RigError> {
    if interrupt::interrupted() {
        Err(RigError::Interrupted)
    } else {
        Ok(())
    }
}

fn exercise(rig: &Rig, checks: &mut Vec<Check>) -> Result<(), RigError> {
    let pings: [(&str, &str, &'static str); 10] = [
        ("web", "db", "xenbr0 (bridged pair)"),
        ("db", "web", "xenbr0 (bridged pair)"),
        ("web", "dom0", "xenbr0 -> host port"),
        ("web", "outside", "xenbr0 -> uplink"),
        ("outside", "db", "uplink -> xenbr0"),
        ("routed", "outside", "route (vif-route)"),
        ("outside", "routed", "dom0 /32 -> route"),
        ("web", "routed", "xenbr0 -> dom0 -> route"),
        ("natted", "outside", "virbr0 NAT (masquerade)"),
        ("natted", "web", "virbr0 NAT -> xenbr0"),
    ];
    say(&format!(
        "==> connectivity: {} paths, {PINGS} pings each, all at once",
        pings.len()
    ));
    let mut pairs = Vec::new();
    for (from, to, _) in &pings {
        let addr = addr_of(rig, to)
            .ok_or_else(|| RigError::step("connectivity", format!("{to} has no address")))?;
        pairs.push((from.to_string(), addr));
    }
    let stats = probe::ping_many(rig, &pairs, PINGS)?;
    for ((from, to, path), ((_, addr), s)) in pings.iter().zip(pairs.iter().zip(stats)) {
        let ok = s.received == s.sent && s.sent > 0;
        say(&format!(
            "    [{}] {from} -> {to} ({addr}): {}/{} replies{}",
            mark(ok),
            s.received,
            s.sent,
            s.rtt_avg_ms
                .map(|r| format!(", rtt avg {r:.2} ms"))
                .unwrap_or_default()
        ));
        checks.push(Check {
            from: from.to_string(),
            to: format!("{to} {addr}"),
            path,
            rtt_ms: s.rtt_avg_ms,
            gbps: None,
            ok,
            note: if ok {
                String::new()
            } else {
                format!("{}/{} replies", s.received, s.sent)
            },
        });
    }
    interrupted()?;
    let forward = rig
        .plan()
        .networks
        .first()
        .and_then(|n| n.port_forward.first().copied());
    let dom0 = addr_of(rig, "dom0");
    let mut runs: Vec<(IperfRun, String, &'static str)> = vec![
        (
            IperfRun::new("web", "db", IPERF_SECONDS),
            "db".into(),
            "xenbr0 (bridged pair)",
        ),
        (
            IperfRun::new("routed", "outside", IPERF_SECONDS),
            "outside".into(),
            "route -> dom0 -> uplink",
        ),
        (
            IperfRun::new("natted", "outside", IPERF_SECONDS),
            "outside".into(),
            "virbr0 NAT (masquerade)",
        ),
    ];
    if let (Some(f), Some(dom0)) = (forward, dom0) {
        let mut r = IperfRun::new("outside", "natted", IPERF_SECONDS);
        r.connect = Some((dom0, Some(f.host_port)));
        r.server_port = Some(f.guest_port);
        runs.push((
            r,
            format!("natted via {dom0}:{}", f.host_port),
            "port forward -> virbr0",
        ));
    }
    say(&format!(
        "==> throughput: iperf3 TCP, {IPERF_SECONDS} s per path"
    ));
    for (run, to, path) in runs {
        interrupted()?;
        let r = probe::iperf(rig, &run);
        match &r {
            Ok(res) => say(&format!(
                "    [ ok ] {} -> {to} ({}:{}): {}",
                run.client,
                res.addr,
                res.port,
                report::gbits(res.stats.received_bps)
            )),
            Err(e) => say(&format!("    [FAIL] {} -> {to}: {e}", run.client)),
        }
        let ok = r.as_ref().is_ok_and(|res| res.stats.received_bps > 0.0);
        let gbps = r.as_ref().ok().map(|res| res.stats.gbps());
        let note = r.as_ref().err().map(|e| e.to_string()).unwrap_or_default();
        // The same path as a ping check: one row with both figures.
        let same = r
            .as_ref()
            .ok()
            .filter(|_| run.connect.is_none())
            .and_then(|res| {
                let to = format!("{} {}", run.server, res.addr);
                checks
                    .iter_mut()
                    .find(|c| c.from == run.client && c.to == to)
            });
        match same {
            Some(c) => {
                c.gbps = gbps;
                c.ok &= ok;
            }
            None => checks.push(Check {
                from: run.client.clone(),
                to: to.clone(),
                path,
                rtt_ms: None,
                gbps,
                ok,
                note,
            }),
        }
    }
    interrupted()
}

fn print_table(checks: &[Check]) {
    if checks.is_empty() {
        return;
    }
    let w_to = checks.iter().map(|c| c.to.len()).max().unwrap_or(2).max(2);
    let w_path = checks
        .iter()
        .map(|c| c.path.len())
        .max()
        .unwrap_or(4)
        .max(4);
    println!();
    say(&format!(
        "{:<8} {:<w_to$}  {:<w_path$}  {:>9}  {:>12}  RESULT",
        "FROM", "TO", "PATH", "RTT avg", "THROUGHPUT"
    ));
    for c in checks {
        say(&format!(
            "{:<8} {:<w_to$}  {:<w_path$}  {:>9}  {:>12}  {}{}",
            c.from,
            c.to,
            c.path,
            c.rtt_ms
                .map(|r| format!("{r:.2} ms"))
                .unwrap_or_else(|| "-".into()),
            c.gbps
                .map(|g| format!("{g:.2} Gbit/s"))
                .unwrap_or_else(|| "-".into()),
            if c.ok { "ok" } else { "FAIL" },
            if c.note.is_empty() {
                String::new()
            } else {
                format!(" ({})", c.note)
            }
        ));
    }
}
