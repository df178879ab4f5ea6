//! The datapath shell: worker threads that own ports and bridges and run the pipeline.
//!
//! A worker is one thread with one epoll set. It polls its ports' file descriptors,
//! pulls frames in batches of up to [`MAX_BATCH`](crate::MAX_BATCH), runs each batch to
//! completion through the bridge pipeline, hands frames to the destination ports and,
//! at the end of the round, lets every touched port flush (push ring responses, notify
//! peers). Per-thread state, no locks on the fast path; the control plane talks to a
//! worker only through its command queue ([`Datapath`]).
//!
//! The daemon runs two workers: "switch" (netbacks, host ports, uplinks, bridges) and
//! "frontends" (the in-daemon netfronts of namespace domains), so guest-side and
//! switch-side work run on the two cores of a small dom0, and the only thing crossing
//! between them is Xen's ABI (rings, grants, event channels).

#![allow(unsafe_code)]

mod epoll;
pub mod nat_port;
pub mod offload;
pub mod packet_port;
pub mod pool;
pub mod port;
pub mod report;
pub mod tap_port;
mod worker;

use std::os::fd::RawFd;
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use hypervisor::evtchn::EventFd;
use hypervisor::hv::Hypervisor;
use tokio::sync::{mpsc as tmpsc, oneshot};

pub use pool::{BufId, BufferPool, BUF_FRAMES, BUF_SIZE, HEADROOM};
pub use port::{DriverCounters, Pkt, Port, PortCtx};
pub use report::{BridgeReport, CapturedFrame, Direction, FdbEntryReport, PortReport};

use crate::fdb::FdbConfig;
use crate::port::PortConfig;
use crate::router::{Route, RouterConfig, RouterPortConfig};
use crate::wire::MacAddr;

/// Settings of a bridge (`domnet bridge add`, network definitions).
#[derive(Debug, Clone, Default)]
pub struct BridgeSettings {
    /// MAC table settings (aging, limits).
    pub fdb: FdbConfig,
}

/// Errors of datapath commands, in words a CLI can show.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DatapathError {
    /// No port by that name.
    #[error("no port named `{0}`")]
    NoSuchPort(String),
    /// No bridge by that name.
    #[error("no bridge named `{0}`")]
    NoSuchBridge(String),
    /// The name is taken.
    #[error("`{0}` already exists")]
    Exists(String),
    /// The port is attached to another bridge (EBUSY in Linux terms).
    #[error("port `{port}` is already attached to bridge `{bridge}`")]
    Busy {
        /// The port.
        port: String,
        /// Where it is attached.
        bridge: String,
    },
    /// The bridge still has ports other than its host port.
    #[error("bridge `{bridge}` still has ports: {ports}")]
    NotEmpty {
        /// The bridge.
        bridge: String,
        /// Its ports.
        ports: String,
    },
    /// Something else, described.
    #[error("{0}")]
    Failed(String),
    /// The worker is gone.
    #[error("the datapath worker has stopped")]
    Stopped,
}

type Reply<T> = oneshot::Sender<Result<T, DatapathError>>;

/// Work on a router (and its optional DHCP server) on the worker thread.
pub type RouterFn = Box<
    dyn FnOnce(
            &mut crate::router::Router,
            &mut Option<crate::dhcp::server::DhcpServer>,
            crate::time::Timestamp,
        ) -> Result<(), DatapathError>
        + Send,
>;

/// Work a port driver's owner wants done on the worker thread with the driver in hand.
pub type PortFn =
    Box<dyn FnOnce(&mut dyn Port, &mut PortCtx<'_>) -> Result<(), DatapathError> + Send>;

pub(crate) enum Cmd {
    AddBridge {
        name: String,
        settings: BridgeSettings,
        host: Option<(Box<dyn Port>, PortConfig)>,
        reply: Reply<()>,
    },
    DelBridge {
        name: String,
        reply: Reply<()>,
    },
    AddPort {
        port: Box<dyn Port>,
        reply: Reply<()>,
    },
    RemovePort {
        name: String,
        reply: Reply<()>,
    },
    Attach {
        port: String,
        bridge: String,
        config: PortConfig,
        reply: Reply<()>,
    },
    Detach {
        port: String,
        reply: Reply<()>,
    },
    UpdatePort {
        port: String,
        config: PortConfig,
        reply: Reply<()>,
    },
    WithPort {
        port: String,
        f: PortFn,
        reply: Reply<()>,
    },
    Ports {
        reply: Reply<Vec<PortReport>>,
    },
    Bridges {
        reply: Reply<Vec<BridgeReport>>,
    },
    Fdb {
        bridge: String,
        reply: Reply<Vec<FdbEntryReport>>,
    },
    FdbAdd {
        bridge: String,
        mac: MacAddr,
        port: String,
        reply: Reply<()>,
    },
    FdbDel {
        bridge: String,
        mac: MacAddr,
        reply: Reply<()>,
    },
    Capture {
        port: String,
        sink: tmpsc::Sender<CapturedFrame>,
        count: Option<u64>,
        reply: Reply<()>,
    },
    AddRouter {
        name: String,
        config: RouterConfig,
        reply: Reply<()>,
    },
    DelRouter {
        name: String,
        reply: Reply<()>,
    },
    AttachRouter {
        port: String,
        router: String,
        config: RouterPortConfig,
        reply: Reply<()>,
    },
    WithRouter {
        name: String,
        f: RouterFn,
        reply: Reply<()>,
    },
    RouterRoute {
        router: String,
        route: Route,
        add: bool,
        reply: Reply<()>,
    },
    SetImpairment {
        port: String,
        config: crate::impair::ImpairConfig,
        reply: Reply<()>,
    },
    Shutdown,
}

struct Inner {
    name: String,
    cmd_tx: Mutex<Sender<Cmd>>,
    wake: Arc<EventFd>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// Handle on one datapath worker; cheap to clone.
#[derive(Clone)]
pub struct Datapath {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Datapath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Datapath")
            .field("name", &self.inner.name)
            .finish()
    }
}

/// How a worker is set up.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Thread name.
    pub name: String,
    /// First dom0 frame of this worker's buffer pool (frames are reserved per worker).
    pub pool_base_gfn: u64,
    /// Buffers in the pool.
    pub pool_buffers: u32,
    /// How often bridge aging and port timers run at the latest.
    pub tick: Duration,
}

impl Datapath {
    /// Starts a worker thread.
    pub fn start(hv: Arc<Hypervisor>, config: WorkerConfig) -> Result<Datapath, DatapathError> {
        let dom0 = hv
            .domain(hypervisor::DOM0)
            .ok_or_else(|| DatapathError::Failed("dom0 is not instantiated".into()))?;
        let pool = BufferPool::new(
            Arc::clone(dom0.memory()),
            config.pool_base_gfn,
            config.pool_buffers,
        )
        .map_err(|e| DatapathError::Failed(e.to_string()))?;
        let wake =
            Arc::new(EventFd::new().map_err(|e| DatapathError::Failed(format!("eventfd: {e}")))?);
        let (cmd_tx, cmd_rx) = mpsc::channel();
        let mut worker = worker::Worker::new(
            config.name.clone(),
            hv,
            pool,
            cmd_rx,
            Arc::clone(&wake),
            config.tick,
        )
        .map_err(|e| DatapathError::Failed(format!("epoll: {e}")))?;
        let thread = std::thread::Builder::new()
            .name(config.name.clone())
            .spawn(move || worker.run())
            .map_err(|e| DatapathError::Failed(format!("spawning {}: {e}", config.name)))?;
        Ok(Datapath {
            inner: Arc::new(Inner {
                name: config.name,
                cmd_tx: Mutex::new(cmd_tx),
                wake,
                thread: Mutex::new(Some(thread)),
            }),
        })
    }

    fn send(&self, cmd: Cmd) -> bool {
        let ok = self
            .inner
            .cmd_tx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(cmd)
            .is_ok();
        self.inner.wake.signal();
        ok
    }

    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Cmd) -> Result<T, DatapathError> {
        let (tx, rx) = oneshot::channel();
        if !self.send(make(tx)) {
            return Err(DatapathError::Stopped);
        }
        rx.await.map_err(|_| DatapathError::Stopped)?
    }

    /// Blocking form of a command, for callers outside an async runtime.
    fn call_blocking<T>(&self, make: impl FnOnce(Reply<T>) -> Cmd) -> Result<T, DatapathError> {
        let (tx, rx) = oneshot::channel();
        if !self.send(make(tx)) {
            return Err(DatapathError::Stopped);
        }
        rx.blocking_recv().map_err(|_| DatapathError::Stopped)?
    }

    /// Creates a bridge, optionally with its host port (attached with `config`).
    pub async fn add_bridge(
        &self,
        name: &str,
        settings: BridgeSettings,
        host: Option<(Box<dyn Port>, PortConfig)>,
    ) -> Result<(), DatapathError> {
        let name = name.to_string();
        self.call(|reply| Cmd::AddBridge {
            name,
            settings,
            host,
            reply,
        })
        .await
    }

    /// Deletes a bridge (it must have no ports but its host port, which goes with it).
    pub async fn del_bridge(&self, name: &str) -> Result<(), DatapathError> {
        let name = name.to_string();
        self.call(|reply| Cmd::DelBridge { name, reply }).await
    }

    /// Adds an unattached port.
    pub async fn add_port(&self, port: Box<dyn Port>) -> Result<(), DatapathError> {
        self.call(|reply| Cmd::AddPort { port, reply }).await
    }

    /// Blocking [`Datapath::add_port`].
    pub fn add_port_blocking(&self, port: Box<dyn Port>) -> Result<(), DatapathError> {
        self.call_blocking(|reply| Cmd::AddPort { port, reply })
    }

    /// Detaches (if attached), closes and removes a port.
    pub async fn remove_port(&self, name: &str) -> Result<(), DatapathError> {
        let name = name.to_string();
        self.call(|reply| Cmd::RemovePort { name, reply }).await
    }

    /// Attaches a port to a bridge with its switch-side configuration.
    pub async fn attach(
        &self,
        port: &str,
        bridge: &str,
        config: PortConfig,
    ) -> Result<(), DatapathError> {
        let (port, bridge) = (port.to_string(), bridge.to_string());
        self.call(|reply| Cmd::Attach {
            port,
            bridge,
            config,
            reply,
        })
        .await
    }

    /// Detaches a port from its bridge (its learned MACs are flushed).
    pub async fn detach(&self, port: &str) -> Result<(), DatapathError> {
        let port = port.to_string();
        self.call(|reply| Cmd::Detach { port, reply }).await
    }

    /// Replaces an attached port's switch-side configuration (MTU, allowed IPs…).
    pub async fn update_port(&self, port: &str, config: PortConfig) -> Result<(), DatapathError> {
        let port = port.to_string();
        self.call(|reply| Cmd::UpdatePort {
            port,
            config,
            reply,
        })
        .await
    }

    /// Runs `f` on the worker with the driver of `port`.
    pub async fn with_port(&self, port: &str, f: PortFn) -> Result<(), DatapathError> {
        let port = port.to_string();
        self.call(|reply| Cmd::WithPort { port, f, reply }).await
    }

    /// Blocking [`Datapath::with_port`].
    pub fn with_port_blocking(&self, port: &str, f: PortFn) -> Result<(), DatapathError> {
        let port = port.to_string();
        self.call_blocking(|reply| Cmd::WithPort { port, f, reply })
    }

    /// Counters of every port.
    pub async fn ports(&self) -> Result<Vec<PortReport>, DatapathError> {
        self.call(|reply| Cmd::Ports { reply }).await
    }

    /// Every bridge with its ports.
    pub async fn bridges(&self) -> Result<Vec<BridgeReport>, DatapathError> {
        self.call(|reply| Cmd::Bridges { reply }).await
    }

    /// The MAC table of a bridge.
    pub async fn fdb(&self, bridge: &str) -> Result<Vec<FdbEntryReport>, DatapathError> {
        let bridge = bridge.to_string();
        self.call(|reply| Cmd::Fdb { bridge, reply }).await
    }

    /// Adds a static MAC table entry.
    pub async fn fdb_add(
        &self,
        bridge: &str,
        mac: MacAddr,
        port: &str,
    ) -> Result<(), DatapathError> {
        let (bridge, port) = (bridge.to_string(), port.to_string());
        self.call(|reply| Cmd::FdbAdd {
            bridge,
            mac,
            port,
            reply,
        })
        .await
    }

    /// Removes a MAC table entry (static or learned).
    pub async fn fdb_del(&self, bridge: &str, mac: MacAddr) -> Result<(), DatapathError> {
        let bridge = bridge.to_string();
        self.call(|reply| Cmd::FdbDel { bridge, mac, reply }).await
    }

    /// Streams copies of the frames a port receives and sends into `sink` (stops after
    /// `count` frames, or when the receiver is dropped).
    pub async fn capture(
        &self,
        port: &str,
        sink: tmpsc::Sender<CapturedFrame>,
        count: Option<u64>,
    ) -> Result<(), DatapathError> {
        let port = port.to_string();
        self.call(|reply| Cmd::Capture {
            port,
            sink,
            count,
            reply,
        })
        .await
    }

    /// Creates a route-mode router (a pipeline ports attach to instead of a bridge).
    pub async fn add_router(&self, name: &str, config: RouterConfig) -> Result<(), DatapathError> {
        let name = name.to_string();
        self.call(|reply| Cmd::AddRouter {
            name,
            config,
            reply,
        })
        .await
    }

    /// Deletes a router (it must have no ports).
    pub async fn del_router(&self, name: &str) -> Result<(), DatapathError> {
        let name = name.to_string();
        self.call(|reply| Cmd::DelRouter { name, reply }).await
    }

    /// Attaches a port to a router.
    pub async fn attach_router(
        &self,
        port: &str,
        router: &str,
        config: RouterPortConfig,
    ) -> Result<(), DatapathError> {
        let (port, router) = (port.to_string(), router.to_string());
        self.call(|reply| Cmd::AttachRouter {
            port,
            router,
            config,
            reply,
        })
        .await
    }

    /// Impairs the link of `port` in both directions (delay with jitter, loss), as
    /// netem would; a no-op config lifts it once held frames are out.
    pub async fn set_impairment(
        &self,
        port: &str,
        config: crate::impair::ImpairConfig,
    ) -> Result<(), DatapathError> {
        let port = port.to_string();
        self.call(|reply| Cmd::SetImpairment {
            port,
            config,
            reply,
        })
        .await
    }

    /// Runs `f` on the worker with a router and its DHCP server slot.
    pub async fn with_router(&self, name: &str, f: RouterFn) -> Result<(), DatapathError> {
        let name = name.to_string();
        self.call(|reply| Cmd::WithRouter { name, f, reply }).await
    }

    /// Adds (or with `add == false` removes) a route of a router.
    pub async fn router_route(
        &self,
        router: &str,
        route: Route,
        add: bool,
    ) -> Result<(), DatapathError> {
        let router = router.to_string();
        self.call(|reply| Cmd::RouterRoute {
            router,
            route,
            add,
            reply,
        })
        .await
    }

    /// Stops the worker (ports are closed) and waits for it.
    pub fn shutdown(&self) {
        self.send(Cmd::Shutdown);
        let t = self
            .inner
            .thread
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(t) = t {
            let _ = t.join();
        }
    }
}

/// Sets an fd non-blocking (helper for drivers).
pub fn set_nonblocking(fd: RawFd) -> std::io::Result<()> {
    // SAFETY: fcntl on a caller-owned fd with valid commands.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}
