//! `domnet frontend DOM [--devid N] [--tap NAME]`: an external netfront for vif N of a
//! domain created with `vif_frontend = "external"`, in a process of its own.
//!
//! It is what a Xen guest kernel's netfront is, driven from outside the daemon through
//! nothing but Xen's ABI (docs/hypervisor-socket.md): the domain's memory, grant table
//! and event channels come over `RUN_DIR/hv/dom<D>.sock` (`vif::env_socket::SocketEnv`),
//! the handshake runs over the domain's own xenstore socket
//! (`vif::extfront::XenbusFrontend`), and the guest side is a TAP (`eth<N>` by default)
//! in the domain's network namespace, with the vif's MAC and MTU. A
//! `vif::netfront::port::NetfrontPort` shuttles frames between the TAP and the rings in
//! a single-threaded epoll loop over the port's eventfds and TAP, the xenstore socket
//! and a signalfd.
//!
//! It runs until SIGTERM/SIGINT — then it leaves cleanly: `state = 6`, waits for the
//! backend to unmap (Closed), revokes every grant and closes its event channels — or
//! until the backend closes or the vif is detached.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hypervisor::hv::Hypervisor;
use hypervisor::hvsock::socket_path;
use hypervisor::xs_socket::SocketClient;
use netcfg::netns::NetNs;
use netcfg::rtnl::{MacAddr, Rtnl};
use netcfg::tap::{Tap, TapConfig};
use tracing::{info, warn};
use vif::env_socket::SocketEnv;
use vif::extfront::{VifEvent, XenbusFrontend};
use vif::netfront::port::{FrontendError, NetfrontPort};
use vswitch::datapath::{BufferPool, Pkt, Port, PortCtx};
use vswitch::Timestamp;

use crate::cli::{EXIT_FAILED, EXIT_INTERNAL};
use crate::control::Request;
use crate::daemon::DomainRow;

/// Frames handled per `receive` call (the datapath workers' batch).
const BUDGET: usize = 64;
/// How often xenstore is looked at even without a watch event.
const XS_TICK: Duration = Duration::from_millis(500);
/// How long leaving waits for the backend to unmap the rings.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

const TOKEN_SIGNAL: u64 = 0;
const TOKEN_XENSTORE: u64 = 1;
const TOKEN_PORT: u64 = 2;

/// Why the frontend stopped (or could not start).
#[derive(Debug, thiserror::Error)]
enum RunError {
    #[error("{0}")]
    Setup(String),
    #[error("{0}")]
    Xenbus(#[from] vif::extfront::XenbusFrontendError),
    #[error("{0}")]
    Frontend(#[from] FrontendError),
    #[error("{what}: {source}")]
    Os {
        what: &'static str,
        source: std::io::Error,
    },
}

fn os(what: &'static str) -> RunError {
    RunError::Os {
        what,
        source: std::io::Error::last_os_error(),
    }
}

/// How the loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    Signal,
    BackendClosed,
    Detached,
}

/// A level-triggered epoll set.
struct Epoll(OwnedFd);

impl Epoll {
    fn new() -> Result<Epoll, RunError> {
        // SAFETY: epoll_create1 with a valid flag; the result is checked.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(os("epoll_create1"));
        }
        // SAFETY: a fresh fd we now own.
        Ok(Epoll(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    fn add(&self, fd: RawFd, token: u64) -> Result<(), RunError> {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token,
        };
        // SAFETY: valid epoll fd, a caller-owned open fd and a live event struct.
        if unsafe { libc::epoll_ctl(self.0.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) } < 0 {
            return Err(os("epoll_ctl"));
        }
        Ok(())
    }

    fn del(&self, fd: RawFd) {
        let mut ev = libc::epoll_event { events: 0, u64: 0 };
        // SAFETY: as in `add`; failing on an fd no longer registered is harmless.
        unsafe { libc::epoll_ctl(self.0.as_raw_fd(), libc::EPOLL_CTL_DEL, fd, &mut ev) };
    }

    /// Ready tokens, waiting up to `timeout`.
    fn wait(&self, out: &mut Vec<u64>, timeout: Duration) -> Result<(), RunError> {
        let mut evs = [libc::epoll_event { events: 0, u64: 0 }; 16];
        let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: the buffer holds evs.len() entries.
        let n =
            unsafe { libc::epoll_wait(self.0.as_raw_fd(), evs.as_mut_ptr(), evs.len() as i32, ms) };
        out.clear();
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                return Ok(());
            }
            return Err(RunError::Os {
                what: "epoll_wait",
                source: e,
            });
        }
        out.extend(evs.iter().take(n as usize).map(|e| e.u64));
        Ok(())
    }
}

/// Blocks SIGTERM and SIGINT and returns a signalfd that reports them (so a signal
/// becomes an event of the loop, never an interrupted step).
fn termination_signals() -> Result<OwnedFd, RunError> {
    // SAFETY: sigset manipulation on a local set, then sigprocmask/signalfd with it; the
    // process has no other threads yet, so blocking here blocks everywhere.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        if libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
            return Err(os("sigprocmask"));
        }
        let fd = libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK);
        if fd < 0 {
            return Err(os("signalfd"));
        }
        Ok(OwnedFd::from_raw_fd(fd))
    }
}

/// Finds the domain by name or id through the daemon's control socket.
fn lookup_domain(run_dir: &Path, dom: &str) -> Result<DomainRow, ExitCode> {
    let data = crate::cli::request(run_dir, &Request::List)?;
    let rows: Vec<DomainRow> = serde_json::from_value(data).map_err(|e| {
        eprintln!("domnet: unexpected answer from the daemon: {e}");
        ExitCode::from(EXIT_INTERNAL)
    })?;
    let Some(row) = rows
        .into_iter()
        .find(|r| r.name == dom || r.domid.to_string() == dom)
    else {
        eprintln!("domnet: domain `{dom}` does not exist");
        return Err(ExitCode::from(EXIT_FAILED));
    };
    if row.domid == 0 {
        eprintln!("domnet: dom0 has no frontend vifs");
        return Err(ExitCode::from(EXIT_FAILED));
    }
    Ok(row)
}

/// Refuses a domain whose vifs the daemon's own netfront drives (two frontends on one
/// vif would undo each other's handshake): the toolstack records the choice in
/// `/libxl/<D>/domnet-frontend`, which only dom0 can read.
fn require_external(run_dir: &Path, row: &DomainRow) -> Result<(), ExitCode> {
    let data = crate::cli::request(run_dir, &Request::XenstorePath { domain: None })?;
    let Some(dom0) = data.as_str() else {
        eprintln!("domnet: unexpected answer from the daemon: {data}");
        return Err(ExitCode::from(EXIT_INTERNAL));
    };
    let mut xs = SocketClient::connect(Path::new(dom0)).map_err(|e| {
        eprintln!("domnet: dom0's xenstore socket {dom0}: {e}");
        ExitCode::from(EXIT_FAILED)
    })?;
    let key = format!("/libxl/{}/domnet-frontend", row.domid);
    match xs.read(&key) {
        Ok(v) if v == b"external" => Ok(()),
        _ => {
            eprintln!(
                "domnet: domain {} uses the daemon's own netfront; create it with \
                 vif_frontend = \"external\" to drive its vifs from outside",
                row.name
            );
            Err(ExitCode::from(EXIT_FAILED))
        }
    }
}

/// The guest's TAP in the domain's namespace, with the vif's MAC and MTU, up. It is not
/// persistent: it goes away with this process, as a NIC goes with its guest.
fn open_tap(domain: &str, name: &str, mac: Option<&str>, mtu: u32) -> Result<Tap, RunError> {
    let ns = NetNs::open(domain)
        .map_err(|e| RunError::Setup(format!("namespace of domain {domain}: {e}")))?;
    let tap = Tap::create_in(&ns, &TapConfig::with_offloads(name))
        .map_err(|e| RunError::Setup(format!("creating {name} in {domain}: {e}")))?;
    let rtnl = Rtnl::open_in(&ns).map_err(|e| RunError::Setup(e.to_string()))?;
    let link = |r: Result<(), netcfg::rtnl::RtnlError>, what: &str| {
        r.map_err(|e| RunError::Setup(format!("{name} in {domain}: {what}: {e}")))
    };
    if let Some(mac) = mac {
        let m: MacAddr = mac
            .parse()
            .map_err(|_| RunError::Setup(format!("the vif's MAC {mac:?} is malformed")))?;
        link(rtnl.set_mac(name, m), "setting the MAC")?;
    }
    link(rtnl.set_mtu(name, mtu), "setting the MTU")?;
    link(rtnl.set_up(name), "bringing it up")?;
    Ok(tap)
}

/// What `NetfrontPort` needs to be called through the `Port` trait: a buffer pool and a
/// hypervisor handle, neither of which a netfront touches. A local stand-in provides
/// them (its dom0 memory is a sparse memfd that is never written).
struct PortCtxParts {
    hv: Arc<Hypervisor>,
    pool: BufferPool,
    t0: Instant,
}

impl PortCtxParts {
    fn new() -> Result<PortCtxParts, RunError> {
        let dom0 = hypervisor::domain::Registry::new()
            .get(0)
            .cloned()
            .ok_or_else(|| RunError::Setup("no dom0 record".into()))?;
        let hv = Arc::new(Hypervisor::new(&dom0).map_err(|e| RunError::Setup(e.to_string()))?);
        let mem = hv
            .domain(0)
            .map(|d| Arc::clone(d.memory()))
            .ok_or_else(|| RunError::Setup("stand-in dom0 missing".into()))?;
        let pool = BufferPool::new(mem, 0, 1).map_err(|e| RunError::Setup(e.to_string()))?;
        Ok(PortCtxParts {
            hv,
            pool,
            t0: Instant::now(),
        })
    }

    fn ctx(&mut self) -> PortCtx<'_> {
        let now = Timestamp::from_millis(self.t0.elapsed().as_millis() as u64);
        PortCtx::new(&mut self.pool, now, &self.hv)
    }
}

/// The running frontend: the port, its handshake and the loop's state.
struct Frontend {
    port: NetfrontPort,
    xb: XenbusFrontend,
    parts: PortCtxParts,
    epoll: Epoll,
    port_fds: Vec<RawFd>,
    out: Vec<Pkt>,
    label: String,
}

impl Frontend {
    /// Re-registers the port's fds when they changed.
    fn refresh_fds(&mut self) -> Result<(), RunError> {
        if !self.port.take_fds_changed() {
            return Ok(());
        }
        for fd in self.port_fds.drain(..) {
            self.epoll.del(fd);
        }
        for fd in self.port.fds() {
            self.epoll.add(fd, TOKEN_PORT)?;
            self.port_fds.push(fd);
        }
        Ok(())
    }

    /// Handles what xenstore says; `Some` when the frontend must stop.
    fn follow_xenstore(&mut self) -> Result<Option<Ending>, RunError> {
        while let Some(ev) = self.xb.poll(Duration::ZERO)? {
            match ev {
                VifEvent::Setup => {
                    let keys = self.port.setup()?;
                    self.xb.publish(&keys.pairs())?;
                    info!("{}: keys published, waiting for the backend", self.label);
                }
                VifEvent::Start => {
                    self.port.connected()?;
                    println!(
                        "{}: connected to backend domain {} ({})",
                        self.label,
                        self.xb.backend_id(),
                        self.xb.backend_path()
                    );
                }
                VifEvent::Teardown => {
                    self.teardown(Duration::from_secs(2));
                    self.xb.torn_down();
                    return Ok(Some(Ending::BackendClosed));
                }
                VifEvent::Gone => return Ok(Some(Ending::Detached)),
            }
            self.refresh_fds()?;
        }
        Ok(None)
    }

    /// Revokes every grant and closes the event channels, retrying while the backend
    /// still holds grants; false when some are left.
    fn teardown(&mut self, patience: Duration) -> bool {
        let t0 = Instant::now();
        loop {
            match self.port.teardown() {
                Ok(()) => return true,
                Err(FrontendError::Busy(_)) if t0.elapsed() < patience => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => {
                    warn!("{}: teardown: {e}", self.label);
                    return false;
                }
            }
        }
    }

    fn run(&mut self, signals: &OwnedFd) -> Result<Ending, RunError> {
        self.epoll.add(signals.as_raw_fd(), TOKEN_SIGNAL)?;
        self.epoll
            .add(self.xb.xenstore().stream().as_raw_fd(), TOKEN_XENSTORE)?;
        let mut ready = Vec::new();
        let mut more = false;
        let mut last_xs = Instant::now() - XS_TICK;
        loop {
            let timeout = if more {
                Duration::ZERO
            } else {
                XS_TICK.saturating_sub(last_xs.elapsed())
            };
            self.epoll.wait(&mut ready, timeout)?;
            if ready.contains(&TOKEN_SIGNAL) {
                return Ok(Ending::Signal);
            }
            if ready.contains(&TOKEN_XENSTORE) || last_xs.elapsed() >= XS_TICK {
                last_xs = Instant::now();
                if let Some(end) = self.follow_xenstore()? {
                    return Ok(end);
                }
            }
            if more || ready.contains(&TOKEN_PORT) {
                let mut ctx = self.parts.ctx();
                more = self.port.receive(&mut ctx, &mut self.out, BUDGET);
                self.port.flush(&mut ctx);
                // A netfront hands nothing to a switch; keep the vector empty.
                self.out.clear();
                self.refresh_fds()?;
            }
        }
    }

    /// Leaves after a signal: Closed, wait for the backend to unmap, revoke everything.
    fn leave(&mut self) -> bool {
        match self.xb.close(CLOSE_TIMEOUT) {
            Ok(s) => info!("{}: closed (backend state {s})", self.label),
            Err(e) => warn!("{}: closing: {e}", self.label),
        }
        self.teardown(Duration::from_secs(2))
    }

    fn log_counters(&self) {
        let c: Vec<String> = self
            .port
            .counters()
            .into_iter()
            .filter(|(_, v)| *v > 0)
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        info!("{}: {}", self.label, c.join(" "));
    }
}

fn start(
    run_dir: &Path,
    row: &DomainRow,
    devid: u32,
    tap: Option<String>,
    signals: &OwnedFd,
) -> Result<(Ending, bool), RunError> {
    let env = SocketEnv::connect_for_vif(&socket_path(run_dir, row.domid), devid)
        .map_err(|e| RunError::Setup(format!("domain {}: {e}", row.name)))?;
    let mut xb = XenbusFrontend::open(env.xenstore_path(), devid)?;
    xb.reset()?;
    let ifname = tap.unwrap_or_else(|| format!("eth{devid}"));
    let mac = xb.mac()?;
    let mtu = xb.mtu()?;
    let tap = open_tap(&row.name, &ifname, mac.as_deref(), mtu)?;
    let label = format!("{}:{ifname}", row.name);
    let port = NetfrontPort::new(label.clone(), Box::new(env), tap, xb.backend_id(), devid)?;
    let mut fe = Frontend {
        port,
        xb,
        parts: PortCtxParts::new()?,
        epoll: Epoll::new()?,
        port_fds: Vec::new(),
        out: Vec::with_capacity(BUDGET),
        label,
    };
    info!(
        "{}: external netfront for vif {devid} of domain {} ({})",
        fe.label, row.name, row.domid
    );
    let ending = fe.run(signals);
    let clean = match ending {
        Ok(Ending::Signal) => fe.leave(),
        Ok(Ending::BackendClosed) => true,
        Ok(Ending::Detached) | Err(_) => fe.teardown(Duration::from_secs(1)),
    };
    fe.log_counters();
    Ok((ending?, clean))
}

/// `domnet frontend DOM [--devid N] [--tap NAME]`.
pub fn run(run_dir: &Path, domain: &str, devid: u32, tap: Option<String>) -> ExitCode {
    let signals = match termination_signals() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("domnet frontend: {e}");
            return ExitCode::from(EXIT_INTERNAL);
        }
    };
    let row = match lookup_domain(run_dir, domain) {
        Ok(r) => r,
        Err(code) => return code,
    };
    if let Err(code) = require_external(run_dir, &row) {
        return code;
    }
    match start(run_dir, &row, devid, tap, &signals) {
        Ok((ending, clean)) => {
            let why = match ending {
                Ending::Signal => "stopped by a signal",
                Ending::BackendClosed => "the backend closed",
                Ending::Detached => "the vif was detached",
            };
            info!("{}: vif {devid}: {why}", row.name);
            if clean {
                ExitCode::SUCCESS
            } else {
                eprintln!(
                    "domnet frontend: {}: vif {devid}: some grants are still held by the backend",
                    row.name
                );
                ExitCode::from(EXIT_FAILED)
            }
        }
        Err(e) => {
            eprintln!("domnet frontend: {}: vif {devid}: {e}", row.name);
            ExitCode::from(EXIT_FAILED)
        }
    }
}
