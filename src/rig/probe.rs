//! Using a rig: run a command in a host, ping, ping everything that should answer
//! (`pingall`), measure TCP throughput with iperf3.

use std::net::Ipv4Addr;
use std::process::{Child, ExitStatus, Stdio};
use std::time::Duration;

use serde::Serialize;

use super::error::RigError;
use super::output::{self, IperfStats, PingStats};
use super::reach;
use super::sys;
use super::Rig;

/// Runs `argv` in `host` with this process's stdin/stdout/stderr; its exit status.
pub fn exec(rig: &Rig, host: &str, argv: &[String]) -> Result<ExitStatus, RigError> {
    if argv.is_empty() {
        return Err(RigError::step("exec", "no command given"));
    }
    let mut cmd = rig.command(host, argv)?;
    cmd.status()
        .map_err(|e| RigError::step(format!("exec in {host}"), e))
}

/// A running `ping` whose summary is read when it ends.
fn spawn_ping(rig: &Rig, from: &str, addr: Ipv4Addr, count: u32) -> Result<Child, RigError> {
    let mut cmd = rig.command(
        from,
        &[
            "ping".to_string(),
            "-n".into(),
            "-q".into(),
            "-c".into(),
            count.to_string(),
            "-i".into(),
            "0.2".into(),
            "-W".into(),
            "2".into(),
            addr.to_string(),
        ],
    )?;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| RigError::step(format!("ping from {from}"), e))
}

fn finish_ping(child: Child, count: u32) -> PingStats {
    let text = child
        .wait_with_output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    output::ping_stats(&text).unwrap_or(PingStats {
        sent: count,
        received: 0,
        rtt_avg_ms: None,
    })
}

/// `count` pings (0.2 s apart) from `from` to `addr`.
pub fn ping(rig: &Rig, from: &str, addr: Ipv4Addr, count: u32) -> Result<PingStats, RigError> {
    let c = spawn_ping(rig, from, addr, count)?;
    Ok(finish_ping(c, count))
}

/// One pair of `pingall`.
#[derive(Debug, Clone, Serialize)]
pub struct PingResult {
    /// Source host.
    pub from: String,
    /// Target host.
    pub to: String,
    /// Target address.
    pub addr: Ipv4Addr,
    /// Outcome.
    #[serde(flatten)]
    pub stats: PingStats,
}

/// `pingall`'s outcome.
#[derive(Debug, Clone, Serialize)]
pub struct PingAll {
    /// The hosts, in matrix order.
    pub hosts: Vec<String>,
    /// Every pair tested.
    pub results: Vec<PingResult>,
    /// Echo requests sent in all.
    pub sent: u32,
    /// Replies received in all.
    pub received: u32,
}

impl PingAll {
    /// Percentage of requests without a reply.
    pub fn dropped_percent(&self) -> f64 {
        if self.sent == 0 {
            0.0
        } else {
            100.0 * f64::from(self.sent - self.received.min(self.sent)) / f64::from(self.sent)
        }
    }
}

/// Pings every `(from, addr)` pair at once: one unmeasured round first (neighbour
/// resolution, MAC learning), then `count` pings per pair (0.2 s apart). The stats in
/// pair order.
pub fn ping_many(
    rig: &Rig,
    pairs: &[(String, Ipv4Addr)],
    count: u32,
) -> Result<Vec<PingStats>, RigError> {
    let mut warm = Vec::new();
    for (from, addr) in pairs {
        let mut cmd = rig.command(
            from,
            &["ping", "-n", "-q", "-c", "1", "-W", "2", &addr.to_string()],
        )?;
        if let Ok(c) = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            warm.push(c);
        }
    }
    for mut c in warm {
        let _ = c.wait();
    }
    let mut running = Vec::new();
    for (from, addr) in pairs {
        running.push(spawn_ping(rig, from, *addr, count)?);
    }
    Ok(running.into_iter().map(|c| finish_ping(c, count)).collect())
}

/// Pings, from every domain and the outside, every address of the others that the
/// topology should make reachable ([`reach`]), all pairs at once (see [`ping_many`]).
pub fn pingall(rig: &Rig, count: u32) -> Result<PingAll, RigError> {
    let pairs: Vec<(String, reach::Target)> = reach::ping_plan(rig.state())
        .into_iter()
        .flat_map(|(from, ts)| ts.into_iter().map(move |t| (from.clone(), t)))
        .collect();
    let addrs: Vec<(String, Ipv4Addr)> = pairs.iter().map(|(f, t)| (f.clone(), t.addr)).collect();
    let stats = ping_many(rig, &addrs, count)?;
    let results: Vec<PingResult> = pairs
        .into_iter()
        .zip(stats)
        .map(|((from, t), stats)| PingResult {
            from,
            to: t.host,
            addr: t.addr,
            stats,
        })
        .collect();
    Ok(PingAll {
        hosts: reach::participants(rig.state()),
        sent: results.iter().map(|r| r.stats.sent).sum(),
        received: results.iter().map(|r| r.stats.received).sum(),
        results,
    })
}

/// An iperf3 measurement to make.
#[derive(Debug, Clone)]
pub struct IperfRun {
    /// Host running the client (it sends).
    pub client: String,
    /// Host running the server (it receives).
    pub server: String,
    /// Where the client connects (default: the server's first address the client
    /// should reach) and on which port (default: the server's).
    pub connect: Option<(Ipv4Addr, Option<u16>)>,
    /// The server's port (default: a random one in 20000–29999).
    pub server_port: Option<u16>,
    /// Seconds of traffic.
    pub seconds: u32,
}

impl IperfRun {
    /// `seconds` of TCP from `client` to `server`.
    pub fn new(client: &str, server: &str, seconds: u32) -> IperfRun {
        IperfRun {
            client: client.into(),
            server: server.into(),
            connect: None,
            server_port: None,
            seconds,
        }
    }
}

/// A measured iperf3 run.
#[derive(Debug, Clone, Serialize)]
pub struct IperfResult {
    /// Client host.
    pub client: String,
    /// Server host.
    pub server: String,
    /// Address connected to.
    pub addr: Ipv4Addr,
    /// Port connected to.
    pub port: u16,
    /// What iperf3 measured.
    #[serde(flatten)]
    pub stats: IperfStats,
}

/// Kills and reaps the iperf3 server however the measurement ends.
struct ServerGuard(Option<Child>);

impl Drop for ServerGuard {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs iperf3: a one-shot server in `run.server`, the client in `run.client`.
pub fn iperf(rig: &Rig, run: &IperfRun) -> Result<IperfResult, RigError> {
    sys::require_tool("iperf3", "iperf3")?;
    let step = format!("iperf3 {} -> {}", run.client, run.server);
    let server_port = run
        .server_port
        .unwrap_or_else(|| 20000 + rand::random::<u16>() % 10000);
    let (addr, port) = match run.connect {
        Some((a, p)) => (a, p.unwrap_or(server_port)),
        None => {
            let targets = reach::targets_of(rig.state(), &run.client, &run.server);
            rig.ns(&run.client)?;
            rig.ns(&run.server)?;
            let a = targets.first().copied().ok_or_else(|| {
                RigError::step(
                    &step,
                    format!(
                        "{} has no address {} can reach (guests behind NAT are reached through port forwards)",
                        run.server, run.client
                    ),
                )
            })?;
            (a, server_port)
        }
    };
    let server_ns = rig.ns(&run.server)?;
    let mut server = rig.command(
        &run.server,
        &["iperf3", "-s", "-1", "-p", &server_port.to_string()],
    )?;
    let guard = ServerGuard(Some(
        server
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| RigError::step(&step, format!("starting the server: {e}")))?,
    ));
    let listening = sys::wait_until(Duration::from_secs(5), || {
        sys::in_ns(
            &server_ns,
            &["ss", "-Hltn", &format!("sport = :{server_port}")],
        )
        .output()
        .is_ok_and(|o| !o.stdout.is_empty())
    });
    if !listening {
        return Err(RigError::step(
            &step,
            "the iperf3 server did not start listening",
        ));
    }
    let out = rig
        .command(
            &run.client,
            &[
                "timeout".to_string(),
                (run.seconds + 20).to_string(),
                "iperf3".into(),
                "-c".into(),
                addr.to_string(),
                "-p".into(),
                port.to_string(),
                "-t".into(),
                run.seconds.to_string(),
                "-J".into(),
            ],
        )?
        .stdin(Stdio::null())
        .output()
        .map_err(|e| RigError::step(&step, e))?;
    drop(guard);
    let stats = output::iperf_stats(&String::from_utf8_lossy(&out.stdout))
        .map_err(|e| RigError::step(&step, format!("to {addr}:{port}: {e}")))?;
    Ok(IperfResult {
        client: run.client.clone(),
        server: run.server.clone(),
        addr,
        port,
        stats,
    })
}
