//! `domnet daemon`: plays hypervisor, xenstored and dom0's backend.
//!
//! Startup order: take the run directory's lock (one daemon per run dir), replay the
//! journal and start xenstored (sockets under `RUN_DIR/xenstored/`), then open the
//! control socket the CLI talks to. SIGTERM/SIGINT stop it cleanly; `kill -9` loses
//! nothing that was acknowledged (the journal is written before every reply).

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use hypervisor::domain::{DomainInfo, DomainRequest};
use hypervisor::journal::SyncPolicy;
use hypervisor::xenstored::{ToolstackError, Xenstored, XenstoredConfig};
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tracing::{info, warn};

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
}

/// The daemon's shared state, one per process.
struct Daemon {
    xs: Xenstored,
    started: Instant,
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

fn row(d: &DomainInfo, daemon_uptime: f64) -> DomainRow {
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

fn toolstack_error(e: ToolstackError) -> Response {
    match e {
        ToolstackError::Domain(d) => Response::err(ErrorKind::BadInput, d.to_string()),
        ToolstackError::Failed(m) => Response::err(ErrorKind::Failed, m),
        ToolstackError::Stopped => Response::err(ErrorKind::Internal, "xenstored stopped"),
    }
}

impl Daemon {
    async fn handle(&self, req: Request) -> Response {
        match req {
            Request::Create { config, path } => self.create(&config, &path).await,
            Request::Destroy { domain } => match self.xs.destroy_domain(domain).await {
                Ok(info) => Response::ok(row(&info, 0.0)),
                Err(e) => toolstack_error(e),
            },
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
            Request::Stats => match self.xs.stats().await {
                Ok(s) => Response::ok(serde_json::json!({ "xenstored": s })),
                Err(e) => toolstack_error(e),
            },
        }
    }

    async fn create(&self, text: &str, path: &str) -> Response {
        let parsed = match netcfg::xlcfg::parse_xl_cfg(text) {
            Ok(p) => p,
            Err(e) => return Response::err(ErrorKind::BadInput, format!("{path}: {e}")),
        };
        let cfg = match netcfg::xlcfg::domain_config(&parsed, &mut rand::thread_rng()) {
            Ok(c) => c,
            Err(e) => return Response::err(ErrorKind::BadInput, format!("{path}: {e}")),
        };
        let req = DomainRequest {
            name: cfg.name.clone(),
            uuid: cfg.uuid.clone(),
            memory_mib: cfg.memory_mib,
            vcpus: cfg.vcpus,
            domid: cfg.domid,
            max_grant_frames: cfg.max_grant_frames,
        };
        let warnings: Vec<String> = cfg
            .warnings
            .iter()
            .map(|w| format!("{path}: {w}"))
            .collect();
        for w in &warnings {
            warn!("{w}");
        }
        match self.xs.create_domain(req).await {
            Ok(info) => Response::ok(row(&info, 0.0)).with_warnings(warnings),
            Err(e) => toolstack_error(e).with_warnings(warnings),
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

/// Runs the daemon until SIGTERM/SIGINT.
pub fn run(opts: DaemonOptions) -> Result<()> {
    let _lock = lock_run_dir(&opts.run_dir)?;
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
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("domnet-ctl")
        .build()
        .context("starting the control runtime")?;
    let daemon = Arc::new(Daemon {
        xs: xs.clone(),
        started: Instant::now(),
    });
    let result = rt.block_on(serve(daemon, &opts.run_dir));
    xs.shutdown();
    let _ = std::fs::remove_file(control::control_socket(&opts.run_dir));
    let _ = std::fs::remove_file(opts.run_dir.join("daemon.pid"));
    result
}

async fn serve(daemon: Arc<Daemon>, run_dir: &Path) -> Result<()> {
    let path = control::control_socket(run_dir);
    let _ = std::fs::remove_file(&path);
    let listener =
        UnixListener::bind(&path).with_context(|| format!("binding {}", path.display()))?;
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
            Ok(req) => daemon.handle(req).await,
            Err(e) => Response::err(ErrorKind::BadInput, format!("malformed request: {e}")),
        },
        Err(e) => Response::err(ErrorKind::BadInput, format!("reading request: {e}")),
    };
    let mut out = serde_json::to_vec(&resp).unwrap_or_else(|_| b"{\"ok\":false}".to_vec());
    out.push(b'\n');
    let _ = wr.write_all(&out).await;
}
