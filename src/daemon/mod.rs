//! `domnet daemon`: plays hypervisor, xenstored and dom0's backend.
//!
//! Startup order: take the run directory's lock (one daemon per run dir), kill hotplug
//! scripts a killed predecessor left running, replay the journal and start xenstored
//! (sockets under `RUN_DIR/xenstored/`), start the two datapath workers ("switch" and
//! "frontends"), bind the control socket, bring back what the journal says exists
//! (bridges, uplinks, NAT networks; then every vif's XenBus states are reset before the
//! backend and frontend drivers start, and domains and their vifs come back), then
//! serve the CLI. SIGTERM/SIGINT stop it cleanly; `kill -9` loses nothing that was
//! acknowledged (the journal is written before every reply), and an attach or detach
//! it interrupted is rolled back or finished at the next start.

mod backend;
mod bridges;
mod domains;
mod frontend;
mod leftovers;
mod links;
mod netbridge;
mod networks;
mod routes;
mod vifnat;
mod vifs;

pub use vifs::VifRow;

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use hypervisor::domain::DomainInfo;
use hypervisor::journal::SyncPolicy;
use hypervisor::xenstored::{ToolstackError, Xenstored, XenstoredConfig, XsClient};
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tracing::{info, warn};
use vswitch::datapath::{Datapath, WorkerConfig};

use crate::control::{self, ErrorKind, Request, Response};

/// Options of `domnet daemon`.
#[derive(Debug, Clone)]
pub struct DaemonOptions {
    /// Sockets and pid file.
    pub run_dir: PathBuf,
    /// Journal.
    pub state_dir: PathBuf,
    /// fsync policy for the journal.
    pub sync: SyncPolicy,
    /// Where relative hotplug script names resolve (domnet's own scripts).
    pub script_dir: PathBuf,
    /// How long a hotplug script may run.
    pub hotplug_timeout: Duration,
}

/// The daemon's shared state, one per process.
pub struct Daemon {
    pub(crate) xs: Xenstored,
    /// dom0's privileged in-process xenstore connection (the toolstack's).
    pub(crate) ctl: XsClient,
    /// The switch worker: bridges, host ports, uplinks, netbacks.
    pub(crate) dp: Datapath,
    /// The frontend worker: in-daemon netfronts of namespace domains.
    pub(crate) fe: Datapath,
    pub(crate) started: Instant,
    pub(crate) run_dir: PathBuf,
    /// Serialises network-bridge start/stop.
    pub(crate) netbridge_lock: tokio::sync::Mutex<()>,
    /// Serialises router creation (route attaches of several domains at once — a
    /// restart restores them in parallel — must not each create the router).
    pub(crate) router_lock: tokio::sync::Mutex<()>,
    /// Where relative hotplug script names resolve.
    pub(crate) script_dir: PathBuf,
    /// Hotplug script timeout.
    pub(crate) hotplug_timeout: Duration,
    /// Each guest's hypervisor socket (external frontends).
    pub(crate) hvsocks:
        std::sync::Mutex<std::collections::HashMap<u16, hypervisor::hvsock::HvSocketServer>>,
    /// Serialises device changes per domain (attach/detach/destroy).
    pub(crate) vif_locks:
        std::sync::Mutex<std::collections::HashMap<u16, Arc<tokio::sync::Mutex<()>>>>,
}

/// One row of `domnet list`.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct DomainRow {
    /// Name.
    pub name: String,
    /// Domain id.
    pub domid: u16,
    /// UUID.
    pub uuid: String,
    /// Memory (MiB).
    pub mem: u64,
    /// vCPUs.
    pub vcpus: u32,
    /// xl state flags.
    pub state: String,
    /// Seconds since creation.
    pub time: f64,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub(crate) fn row(d: &DomainInfo, daemon_uptime: f64) -> DomainRow {
    let time = if d.domid == 0 {
        daemon_uptime
    } else {
        now_ms().saturating_sub(d.created_ms) as f64 / 1000.0
    };
    DomainRow {
        name: d.name.clone(),
        domid: d.domid,
        uuid: d.uuid.clone(),
        mem: d.memory_mib,
        vcpus: d.vcpus,
        state: d.state.xl_flags().to_string(),
        time,
    }
}

pub(crate) fn toolstack_error(e: ToolstackError) -> Response {
    match e {
        ToolstackError::Domain(d) => Response::err(ErrorKind::BadInput, d.to_string()),
        ToolstackError::Failed(m) => Response::err(ErrorKind::Failed, m),
        ToolstackError::Stopped => Response::err(ErrorKind::Internal, "xenstored stopped"),
    }
}

impl Daemon {
    /// The per-domain device lock (attach, detach and destroy of one domain serialise).
    pub(crate) async fn vif_lock(&self, domid: u16) -> tokio::sync::OwnedMutexGuard<()> {
        let m = {
            let mut locks = self.vif_locks.lock().unwrap_or_else(|p| p.into_inner());
            Arc::clone(locks.entry(domid).or_default())
        };
        m.lock_owned().await
    }

    /// Opens a domain's hypervisor socket (external frontends).
    pub(crate) fn open_hvsock(&self, domid: u16) {
        match hypervisor::hvsock::HvSocketServer::start(
            Arc::clone(self.xs.hypervisor()),
            &self.run_dir,
            domid,
            self.xs.domain_socket(domid),
        ) {
            Ok(s) => {
                self.hvsocks
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(domid, s);
            }
            Err(e) => warn!("domain {domid}: hypervisor socket: {e}"),
        }
    }

    /// Closes a domain's hypervisor socket.
    pub(crate) fn close_hvsock(&self, domid: u16) {
        self.hvsocks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&domid);
    }

    /// Writes a JSON record to xenstore (durable before it returns).
    pub(crate) async fn store_json<T: Serialize>(
        &self,
        path: &str,
        value: &T,
    ) -> Result<(), String> {
        let data = serde_json::to_vec(value).map_err(|e| e.to_string())?;
        self.ctl
            .write(0, path, &data)
            .await
            .map_err(|e| e.to_string())
    }

    /// Reads a JSON record from xenstore.
    pub(crate) async fn load_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> Option<T> {
        let data = self.ctl.read(0, path).await.ok()?;
        match serde_json::from_slice(&data) {
            Ok(v) => Some(v),
            Err(e) => {
                warn!("{path}: unreadable record ignored: {e}");
                None
            }
        }
    }

    /// Removes `path` if it has no children (no debris of emptied directories).
    pub(crate) async fn rm_if_empty(&self, path: &str) {
        if self
            .ctl
            .directory(0, path)
            .await
            .is_ok_and(|c| c.is_empty())
        {
            let _ = self.ctl.rm(0, path).await;
        }
    }

    /// The backend directory of a vif port (`vif<D>.<N>`, or a custom `vifname`).
    pub(crate) async fn vif_backend_of(&self, port: &str) -> Option<String> {
        if let Some((d, n)) = port
            .strip_prefix("vif")
            .and_then(|r| r.split_once('.'))
            .and_then(|(d, n)| Some((d.parse::<u16>().ok()?, n.parse::<u32>().ok()?)))
        {
            let be = format!("/local/domain/0/backend/vif/{d}/{n}");
            if self
                .ctl
                .try_read_string(0, &format!("{be}/frontend"))
                .await
                .ok()
                .flatten()
                .is_some()
            {
                return Some(be);
            }
        }
        for d in self
            .ctl
            .directory(0, "/local/domain/0/backend/vif")
            .await
            .unwrap_or_default()
        {
            for n in self
                .ctl
                .directory(0, &format!("/local/domain/0/backend/vif/{d}"))
                .await
                .unwrap_or_default()
            {
                let be = format!("/local/domain/0/backend/vif/{d}/{n}");
                if self
                    .ctl
                    .try_read_string(0, &format!("{be}/vifname"))
                    .await
                    .ok()
                    .flatten()
                    .as_deref()
                    == Some(port)
                {
                    return Some(be);
                }
            }
        }
        None
    }

    /// A hotplug script's success, reported for it (`--hotplug`): the backend's
    /// `hotplug-status` becomes `connected`, which is what libxl waits for. When the
    /// write fails the caller's work stays done; the script fails and its caller
    /// rolls the attach back.
    pub(crate) async fn hotplug_connected(&self, backend: &str) -> Result<(), Response> {
        let key = format!("{backend}/hotplug-status");
        self.ctl
            .write(0, &key, b"connected")
            .await
            .map_err(|e| Response::err(ErrorKind::Failed, format!("cannot write {key}: {e}")))
    }

    /// The switch-side configuration for attaching `port` to a bridge: a vif gets its
    /// identity (MAC, `ip=` addresses, MTU) so the switch can enforce it; anything
    /// else is an uplink.
    /// Also returns the vif's backend directory (`None` for an uplink).
    pub(crate) async fn port_config_for(
        &self,
        port: &str,
    ) -> Result<(vswitch::port::PortConfig, Option<String>), Response> {
        // Does the port exist? (A no-op on it, rather than a report of every port.)
        let exists = self
            .dp
            .with_port(
                port,
                Box::new(|_p: &mut dyn vswitch::datapath::Port, _ctx| Ok(())),
            )
            .await;
        match exists {
            Ok(()) => {}
            Err(vswitch::datapath::DatapathError::NoSuchPort(_)) => {
                return Err(Response::err(
                    ErrorKind::BadInput,
                    format!("no port named `{port}`"),
                ))
            }
            Err(e) => return Err(bridges::dp_error(e)),
        }
        let Some(be) = self.vif_backend_of(port).await else {
            return Ok((vswitch::port::PortConfig::uplink(port), None));
        };
        let read = |k: &str| {
            let p = format!("{be}/{k}");
            async move { self.ctl.try_read_string(0, &p).await.ok().flatten() }
        };
        let mac: netcfg::vifspec::MacAddr = read("mac")
            .await
            .and_then(|m| m.parse().ok())
            .ok_or_else(|| {
                Response::err(
                    ErrorKind::Failed,
                    format!("vif {port} has no valid mac in {be}"),
                )
            })?;
        let mut vif = vswitch::port::VifConfig::new(vswitch::MacAddr(mac.0));
        for a in read("ip").await.unwrap_or_default().split_whitespace() {
            let spec: netcfg::vifspec::IpAddrSpec = a.parse().map_err(|_| {
                Response::err(ErrorKind::Failed, format!("vif {port}: bad ip `{a}`"))
            })?;
            match spec.addr {
                std::net::IpAddr::V4(v4) => {
                    vif.allowed_ipv4.push(vswitch::wire::Ipv4Cidr::from(v4))
                }
                std::net::IpAddr::V6(v6) => {
                    vif.allowed_ipv6.push(vswitch::wire::Ipv6Cidr::from(v6))
                }
            }
        }
        let mut cfg = vswitch::port::PortConfig::vif(port, vif);
        if let Some(mtu) = read("mtu").await.and_then(|m| m.parse().ok()) {
            cfg.mtu = mtu;
        }
        Ok((cfg, Some(be)))
    }

    async fn handle(self: &Arc<Self>, req: Request) -> Response {
        match req {
            Request::Create { config, path } => self.create(&config, &path).await,
            Request::Destroy { domain } => self.destroy(&domain).await,
            Request::List => match self.xs.list_domains().await {
                Ok(list) => {
                    let up = self.started.elapsed().as_secs_f64();
                    Response::ok(list.iter().map(|d| row(d, up)).collect::<Vec<_>>())
                }
                Err(e) => toolstack_error(e),
            },
            Request::XenstorePath { domain } => match domain {
                None => Response::ok(self.xs.dom0_socket()),
                Some(d) => match self.xs.lookup_domain(d).await {
                    Ok(info) => Response::ok(self.xs.domain_socket(info.domid)),
                    Err(e) => toolstack_error(e),
                },
            },
            Request::Stats { port } => self.stats(port).await,
            Request::BridgeAdd { name, aging } => self.bridge_add(&name, aging).await,
            Request::BridgeDel { name } => self.bridge_del(&name).await,
            Request::BridgeShow => self.bridge_show().await,
            Request::BridgeAddif {
                bridge,
                port,
                mtu,
                hotplug,
            } => self.bridge_addif(&bridge, &port, mtu, hotplug).await,
            Request::BridgeDelif { bridge, port } => self.bridge_delif(&bridge, &port).await,
            Request::NetworkBridge {
                action,
                bridge,
                netdev,
                legacy_renames,
            } => match action.as_str() {
                "start" => self.netbridge_start(&bridge, netdev, legacy_renames).await,
                "stop" => self.netbridge_stop(&bridge).await,
                "status" => self.netbridge_status(&bridge).await,
                other => Response::err(
                    ErrorKind::BadInput,
                    format!("unknown action `{other}` (start|stop|status)"),
                ),
            },
            Request::FdbShow { bridge } => self.fdb_show(&bridge).await,
            Request::FdbAdd { bridge, mac, port } => self.fdb_add(&bridge, &mac, &port).await,
            Request::FdbDel { bridge, mac } => self.fdb_del(&bridge, &mac).await,
            Request::Capture { .. } => {
                Response::err(ErrorKind::Internal, "capture is a streaming request")
            }
            Request::NetworkAttach { domain, spec } => self.network_attach(&domain, &spec).await,
            Request::NetworkDetach { domain, device } => {
                self.network_detach(&domain, &device).await
            }
            Request::NetworkList { domains } => self.network_list(&domains).await,
            Request::NetDefine { config, path } => self.net_define(&config, &path).await,
            Request::NetStart { name } => self.net_start(&name).await,
            Request::NetStop { name } => self.net_stop(&name).await,
            Request::NetList => self.net_list().await,
            Request::SetImpairment {
                port,
                delay_us,
                jitter_us,
                loss_ppm,
            } => {
                self.set_impairment(&port, delay_us, jitter_us, loss_ppm)
                    .await
            }
            Request::RouteAttach {
                vif,
                netdev,
                nat,
                hotplug,
            } => {
                let backend = if hotplug {
                    match self.vif_backend_of(&vif).await {
                        Some(be) => Some(be),
                        None => {
                            return Response::err(
                                ErrorKind::BadInput,
                                format!("--hotplug: {vif} is not a vif with a backend"),
                            )
                        }
                    }
                } else {
                    None
                };
                let r = if nat {
                    self.vifnat_attach(&vif, routes::netdev_or_default(netdev))
                        .await
                } else {
                    self.route_attach(&vif, netdev).await
                };
                match backend {
                    Some(be) if r.ok => self.hotplug_connected(&be).await.err().unwrap_or(r),
                    _ => r,
                }
            }
            Request::RouteDetach {
                vif,
                netdev: _,
                nat: false,
            } => self.route_detach(&vif).await,
            Request::RouteDetach {
                vif,
                netdev,
                nat: true,
            } => {
                self.vifnat_detach(&vif, routes::netdev_or_default(netdev))
                    .await
            }
            Request::RouteShow => self.route_show().await,
            Request::NetForward { name, action, spec } => {
                self.net_forward(&name, &action, spec).await
            }
        }
    }

    /// `domnet capture`: streams a pcap of the port's frames down the connection.
    async fn capture(
        &self,
        port: String,
        count: Option<u64>,
        mut wr: tokio::net::unix::OwnedWriteHalf,
    ) {
        let (tx, mut rx) = tokio::sync::mpsc::channel(4096);
        let dp = if self
            .dp
            .ports()
            .await
            .map(|p| p.iter().any(|p| p.name == port))
            .unwrap_or(false)
        {
            &self.dp
        } else {
            &self.fe
        };
        let first = match dp.capture(&port, tx, count).await {
            Ok(()) => Response::ok(serde_json::json!({ "port": port })),
            Err(e) => bridges::dp_error(e),
        };
        let mut line = serde_json::to_vec(&first).unwrap_or_default();
        line.push(b'\n');
        if wr.write_all(&line).await.is_err() || !first.ok {
            return;
        }
        let Ok(mut pcap) = vswitch::pcap::PcapWriter::new(Vec::new()) else {
            return;
        };
        if wr.write_all(pcap.get_ref()).await.is_err() {
            return;
        }
        pcap.get_mut().clear();
        while let Some(frame) = rx.recv().await {
            let since = frame.time.duration_since(UNIX_EPOCH).unwrap_or_default();
            if pcap.write_frame(since, &frame.data).is_err()
                || wr.write_all(pcap.get_ref()).await.is_err()
            {
                return;
            }
            pcap.get_mut().clear();
        }
    }
}

/// Holds the run directory's lock for the daemon's lifetime.
struct RunDirLock {
    _file: std::fs::File,
}

fn lock_run_dir(run_dir: &Path) -> Result<RunDirLock> {
    std::fs::create_dir_all(run_dir).with_context(|| format!("creating {}", run_dir.display()))?;
    let path = run_dir.join("daemon.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    // SAFETY: flock on an fd we own; non-blocking exclusive lock.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        bail!(
            "another domnet daemon is already running with run directory {}",
            run_dir.display()
        );
    }
    std::fs::write(
        run_dir.join("daemon.pid"),
        format!("{}\n", std::process::id()),
    )
    .with_context(|| format!("writing the pid file in {}", run_dir.display()))?;
    Ok(RunDirLock { _file: file })
}

/// Dom0 frames reserved for the switch worker's buffers.
const SWITCH_POOL: (u64, u32) = (1024, 384);
/// Dom0 frames reserved for the frontend worker's buffers.
const FRONTEND_POOL: (u64, u32) = (1024 + 384 * vswitch::datapath::BUF_FRAMES, 256);

/// Runs the daemon until SIGTERM/SIGINT.
pub fn run(opts: DaemonOptions) -> Result<()> {
    let _lock = lock_run_dir(&opts.run_dir)?;
    let leftovers = leftovers::kill_leftover_hotplug(&opts.run_dir);
    if leftovers > 0 {
        warn!("killed {leftovers} hotplug script processes a previous daemon left running");
    }
    let mut cfg = XenstoredConfig::new(&opts.run_dir, &opts.state_dir);
    cfg.sync = opts.sync;
    let t0 = Instant::now();
    let (xs, recovery) = Xenstored::start(cfg).context("starting xenstored")?;
    info!(
        "state recovered in {:.1} ms: {} domains, {} xenstore nodes, {} journal batches{}",
        t0.elapsed().as_secs_f64() * 1000.0,
        recovery.domains,
        recovery.nodes,
        recovery.batches,
        if recovery.torn_bytes > 0 {
            format!(", {} torn bytes dropped", recovery.torn_bytes)
        } else {
            String::new()
        }
    );
    let worker = |name: &str, (base, count): (u64, u32)| {
        Datapath::start(
            Arc::clone(xs.hypervisor()),
            WorkerConfig {
                name: name.into(),
                pool_base_gfn: base,
                pool_buffers: count,
                tick: Duration::from_millis(500),
            },
        )
        .with_context(|| format!("starting the {name} worker"))
    };
    let dp = worker("switch", SWITCH_POOL)?;
    let fe = worker("frontends", FRONTEND_POOL)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("domnet-ctl")
        .build()
        .context("starting the control runtime")?;
    let daemon = Arc::new(Daemon {
        ctl: xs.connect(0, true),
        xs: xs.clone(),
        dp: dp.clone(),
        fe: fe.clone(),
        started: Instant::now(),
        run_dir: opts.run_dir.clone(),
        netbridge_lock: tokio::sync::Mutex::new(()),
        router_lock: tokio::sync::Mutex::new(()),
        script_dir: opts.script_dir.clone(),
        hotplug_timeout: opts.hotplug_timeout,
        vif_locks: std::sync::Mutex::new(std::collections::HashMap::new()),
        hvsocks: std::sync::Mutex::new(std::collections::HashMap::new()),
    });
    let result = rt.block_on(async {
        // Bound before the vifs come back: their hotplug scripts call the CLI (served
        // once the restore tasks are started).
        let listener = bind_control(&opts.run_dir)?;
        let t1 = Instant::now();
        daemon.restore_bridges().await;
        daemon.restore_netbridges().await;
        daemon.restore_networks().await;
        let plan = daemon.prepare_restore().await;
        tokio::spawn(Arc::clone(&daemon).run_backend_driver());
        tokio::spawn(Arc::clone(&daemon).run_lease_saver());
        Arc::clone(&daemon).restore_domains(plan).await;
        info!(
            "configuration restored in {:.1} ms",
            t1.elapsed().as_secs_f64() * 1000.0
        );
        serve(Arc::clone(&daemon), listener, &opts.run_dir).await
    });
    drop(rt);
    fe.shutdown();
    dp.shutdown();
    xs.shutdown();
    let _ = std::fs::remove_file(control::control_socket(&opts.run_dir));
    let _ = std::fs::remove_file(opts.run_dir.join("daemon.pid"));
    result
}

fn bind_control(run_dir: &Path) -> Result<UnixListener> {
    let path = control::control_socket(run_dir);
    let _ = std::fs::remove_file(&path);
    UnixListener::bind(&path).with_context(|| format!("binding {}", path.display()))
}

async fn serve(daemon: Arc<Daemon>, listener: UnixListener, run_dir: &Path) -> Result<()> {
    let path = control::control_socket(run_dir);
    info!("domnet daemon ready: control socket {}", path.display());
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                match accepted {
                    Ok((stream, _)) => {
                        let d = Arc::clone(&daemon);
                        tokio::spawn(async move { serve_one(d, stream).await });
                    }
                    Err(e) => warn!("control socket accept failed: {e}"),
                }
            }
            _ = term.recv() => { info!("SIGTERM: stopping"); return Ok(()); }
            _ = int.recv() => { info!("SIGINT: stopping"); return Ok(()); }
        }
    }
}

async fn serve_one(daemon: Arc<Daemon>, stream: UnixStream) {
    let (rd, mut wr) = stream.into_split();
    let mut reader = BufReader::new(rd);
    let mut line = String::new();
    let resp = match reader.read_line(&mut line).await {
        Ok(0) => return,
        Ok(_) => match serde_json::from_str::<Request>(&line) {
            Ok(Request::Capture { port, count }) => {
                daemon.capture(port, count, wr).await;
                return;
            }
            Ok(req) => daemon.handle(req).await,
            Err(e) => Response::err(ErrorKind::BadInput, format!("malformed request: {e}")),
        },
        Err(e) => Response::err(ErrorKind::BadInput, format!("reading request: {e}")),
    };
    let mut out = serde_json::to_vec(&resp).unwrap_or_else(|_| b"{\"ok\":false}".to_vec());
    out.push(b'\n');
    let _ = wr.write_all(&out).await;
}
