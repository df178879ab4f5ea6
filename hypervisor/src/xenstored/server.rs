//! The xenstored thread: one mio loop over the listening sockets, the client
//! connections and the in-process command queue.

use std::collections::{HashMap, HashSet};
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mio::net::{UnixListener, UnixStream};
use mio::{Events, Interest, Poll, Token, Waker};
use serde::Serialize;
use tokio::sync::{mpsc as tmpsc, oneshot};
use tracing::{debug, error, info, warn};

use super::domtree;
use super::record_kind;
use super::{Recovery, StartError, ToolstackError, XenstoredConfig};
use crate::domain::{DomainInfo, DomainRequest, DomainState, Registry, RegistryChange};
use crate::hv::Hypervisor;
use crate::journal::{Entry, Journal};
use crate::xenstore::store::{Change, ConnId, Outgoing, Response, Store};
use crate::xenstore::wire::{FrameDecoder, Message, MsgType, XsError};
use crate::{DomId, DOM0};

const WAKER: Token = Token(0);
/// Bytes read from one connection per loop round before others get their turn.
const READ_BUDGET: usize = 64 * 1024;
/// Requests handled for one connection per round (fairness between clients).
const REQUEST_BUDGET: usize = 128;
/// Stop reading a connection's requests while this much output waits for it
/// (backpressure on a client that does not read its replies: robustness e8).
const OUT_PAUSE: usize = 512 * 1024;
/// Drop watch events for an unprivileged connection beyond this much queued output
/// (C xenstored's hard memory quota is 2.5 MB); counted, never silent.
const OUT_HARD_UNPRIVILEGED: usize = 2_500_000;

/// Counters of the server, for `domnet stats` and tests.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ServerStats {
    /// Socket connections accepted.
    pub connections_accepted: u64,
    /// Connections currently open (sockets and in-process).
    pub connections_open: u64,
    /// Connections dropped for breaking the framing (len > 4096, …).
    pub protocol_errors: u64,
    /// Requests handled.
    pub requests: u64,
    /// Error replies sent.
    pub error_replies: u64,
    /// Watch events dropped because the client stopped reading.
    pub events_dropped_slow_reader: u64,
    /// Batches written to the journal.
    pub journal_batches: u64,
    /// Snapshots taken.
    pub compactions: u64,
    /// Store counters.
    pub store: crate::xenstore::store::StoreStats,
}

/// Requests from other threads to the xenstored thread.
pub(crate) enum Command {
    Connect {
        conn: ConnId,
        domid: DomId,
        privileged: bool,
        replies: tmpsc::UnboundedSender<Message>,
        watches: tmpsc::UnboundedSender<Message>,
    },
    Request {
        conn: ConnId,
        msg: Message,
    },
    Disconnect {
        conn: ConnId,
    },
    CreateDomain {
        req: DomainRequest,
        reply: oneshot::Sender<Result<DomainInfo, ToolstackError>>,
    },
    DestroyDomain {
        name_or_id: String,
        reply: oneshot::Sender<Result<DomainInfo, ToolstackError>>,
    },
    ListDomains {
        reply: oneshot::Sender<Vec<DomainInfo>>,
    },
    LookupDomain {
        name_or_id: String,
        reply: oneshot::Sender<Result<DomainInfo, ToolstackError>>,
    },
    Stats {
        reply: oneshot::Sender<ServerStats>,
    },
    Shutdown,
}

/// State shared between the thread and its handles.
pub(crate) struct Shared {
    pub(crate) hv: Arc<Hypervisor>,
    pub(crate) run_dir: PathBuf,
    cmd_tx: Mutex<Sender<Command>>,
    waker: Waker,
    next_conn: AtomicU64,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Shared {
    pub(crate) fn send(&self, cmd: Command) -> bool {
        let ok = self
            .cmd_tx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(cmd)
            .is_ok();
        if ok {
            let _ = self.waker.wake();
        }
        ok
    }

    pub(crate) fn new_conn_id(&self) -> ConnId {
        ConnId(self.next_conn.fetch_add(1, Ordering::Relaxed))
    }
}

/// Sends a command that answers through a oneshot and waits for the answer.
pub(crate) async fn call<T>(
    shared: &Shared,
    make: impl FnOnce(oneshot::Sender<T>) -> Command,
) -> Result<T, ToolstackError> {
    let (tx, rx) = oneshot::channel();
    if !shared.send(make(tx)) {
        return Err(ToolstackError::Stopped);
    }
    rx.await.map_err(|_| ToolstackError::Stopped)
}

pub(crate) fn shutdown(shared: &Shared) {
    shared.send(Command::Shutdown);
    let handle = shared
        .thread
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    if let Some(h) = handle {
        let _ = h.join();
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> StartError {
    let what = what.into();
    move |source| StartError::Io { what, source }
}

struct SocketConn {
    stream: UnixStream,
    id: ConnId,
    privileged: bool,
    domid: DomId,
    decoder: FrameDecoder,
    out: Vec<u8>,
    out_pos: usize,
    want_write: bool,
}

impl SocketConn {
    fn queued(&self) -> usize {
        self.out.len() - self.out_pos
    }
}

enum Sock {
    Listener {
        listener: UnixListener,
        domid: DomId,
        privileged: bool,
    },
    Conn(Box<SocketConn>),
}

enum Peer {
    Socket(Token),
    Internal {
        domid: DomId,
        replies: tmpsc::UnboundedSender<Message>,
        watches: tmpsc::UnboundedSender<Message>,
    },
}

type Deferred = Box<dyn FnOnce() + Send>;

struct Server {
    poll: Poll,
    store: Store,
    registry: Registry,
    journal: Journal,
    hv: Arc<Hypervisor>,
    cfg: XenstoredConfig,
    cmd_rx: Receiver<Command>,
    shared_next_conn: Arc<Shared>,
    sockets: HashMap<Token, Sock>,
    peers: HashMap<ConnId, Peer>,
    dom_listeners: HashMap<DomId, Token>,
    next_token: usize,
    self_conn: ConnId,
    pending_changes: Vec<Entry>,
    pending_out: Vec<Outgoing>,
    deferred: Vec<Deferred>,
    carry: HashSet<Token>,
    flush: HashSet<Token>,
    stats: ServerStats,
    stop: bool,
}

pub(crate) fn start(cfg: XenstoredConfig) -> Result<(Arc<Shared>, Recovery), StartError> {
    let (journal, recovered) = Journal::open(&cfg.state_dir, cfg.sync)?;
    let mut store = Store::new(cfg.quotas.clone());
    let mut registry = Registry::new();
    let mut recovery = Recovery {
        torn_bytes: recovered.torn_bytes,
        batches: recovered.batches.len(),
        ..Recovery::default()
    };
    let replay = |entry: &Entry, store: &mut Store, registry: &mut Registry| match entry.kind {
        record_kind::XENSTORE => match Change::decode(&entry.data) {
            Ok(c) => store.apply(&c),
            Err(e) => warn!("journal: undecodable xenstore change skipped: {e:?}"),
        },
        record_kind::REGISTRY => match serde_json::from_slice::<RegistryChange>(&entry.data) {
            Ok(c) => registry.apply(&c),
            Err(e) => warn!("journal: undecodable registry change skipped: {e}"),
        },
        other => warn!("journal: unknown record kind {other} skipped"),
    };
    for e in &recovered.snapshot {
        replay(e, &mut store, &mut registry);
    }
    for batch in &recovered.batches {
        for e in batch {
            replay(e, &mut store, &mut registry);
        }
    }
    store.check().map_err(StartError::Integrity)?;
    if recovered.torn_bytes > 0 {
        warn!(
            "journal: dropped a torn tail of {} bytes (an interrupted write)",
            recovered.torn_bytes
        );
    }

    let dom0 = registry
        .get(DOM0)
        .cloned()
        .ok_or_else(|| StartError::Integrity("dom0 missing from the registry".into()))?;
    let hv = Arc::new(Hypervisor::new(&dom0)?);
    let guests: Vec<DomainInfo> = registry
        .list()
        .filter(|d| d.domid != DOM0)
        .cloned()
        .collect();
    for d in &guests {
        hv.instantiate(d)?;
    }
    recovery.domains = guests.len();

    let poll = Poll::new().map_err(io_err("creating the xenstored poller"))?;
    let waker =
        Waker::new(poll.registry(), WAKER).map_err(io_err("creating the xenstored waker"))?;
    let (cmd_tx, cmd_rx) = mpsc::channel();
    let shared = Arc::new(Shared {
        hv: Arc::clone(&hv),
        run_dir: cfg.run_dir.clone(),
        cmd_tx: Mutex::new(cmd_tx),
        waker,
        next_conn: AtomicU64::new(1),
        thread: Mutex::new(None),
    });
    let self_conn = shared.new_conn_id();
    store.connect(self_conn, DOM0, true);

    let mut server = Server {
        poll,
        store,
        registry,
        journal,
        hv,
        cfg,
        cmd_rx,
        shared_next_conn: Arc::clone(&shared),
        sockets: HashMap::new(),
        peers: HashMap::new(),
        dom_listeners: HashMap::new(),
        next_token: 1,
        self_conn,
        pending_changes: Vec::new(),
        pending_out: Vec::new(),
        deferred: Vec::new(),
        carry: HashSet::new(),
        flush: HashSet::new(),
        stats: ServerStats::default(),
        stop: false,
    };
    if server.store_read("/local/domain/0/name").is_err() {
        for n in domtree::dom0_nodes() {
            server.write_node(0, &n).map_err(|e| {
                StartError::Integrity(format!("writing dom0 node {}: {e:?}", n.path))
            })?;
        }
    }
    for d in &guests {
        let resp = server.store.introduce_domain(d.domid);
        server.absorb(resp);
    }
    server.pending_out.clear();
    server
        .commit_round()
        .map_err(io_err("writing the journal"))?;
    recovery.nodes = server.store.dump().len();

    let sock_dir = server.cfg.run_dir.join("xenstored");
    std::fs::create_dir_all(&sock_dir)
        .map_err(io_err(format!("creating {}", sock_dir.display())))?;
    let _ = std::fs::set_permissions(&sock_dir, std::fs::Permissions::from_mode(0o755));
    let dom0_path = super::dom0_socket_path(&server.cfg.run_dir);
    server
        .listen(&dom0_path, DOM0, true)
        .map_err(io_err(format!("binding {}", dom0_path.display())))?;
    for d in &guests {
        server
            .listen_domain(d.domid)
            .map_err(io_err(format!("binding the socket of domain {}", d.domid)))?;
    }

    let handle = std::thread::Builder::new()
        .name("xenstored".into())
        .spawn(move || server.run())
        .map_err(io_err("spawning the xenstored thread"))?;
    *shared.thread.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle);
    Ok((shared, recovery))
}

fn bind_fresh(path: &Path) -> io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    UnixListener::bind(path)
}

impl Server {
    fn token(&mut self) -> Token {
        self.next_token += 1;
        Token(self.next_token)
    }

    fn listen(&mut self, path: &Path, domid: DomId, privileged: bool) -> io::Result<Token> {
        let mut listener = bind_fresh(path)?;
        let token = self.token();
        self.poll
            .registry()
            .register(&mut listener, token, Interest::READABLE)?;
        self.sockets.insert(
            token,
            Sock::Listener {
                listener,
                domid,
                privileged,
            },
        );
        Ok(token)
    }

    fn listen_domain(&mut self, domid: DomId) -> io::Result<()> {
        let path = super::domain_socket_path(&self.cfg.run_dir, domid);
        let token = self.listen(&path, domid, false)?;
        self.dom_listeners.insert(domid, token);
        Ok(())
    }

    fn run(mut self) {
        let mut events = Events::with_capacity(256);
        while !self.stop {
            let timeout = if self.carry.is_empty() {
                None
            } else {
                Some(Duration::ZERO)
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                error!("xenstored: poll failed: {e}");
                break;
            }
            let mut ready: Vec<(Token, bool, bool)> = events
                .iter()
                .map(|e| {
                    (
                        e.token(),
                        e.is_readable() || e.is_read_closed() || e.is_error(),
                        e.is_writable(),
                    )
                })
                .collect();
            for t in std::mem::take(&mut self.carry) {
                ready.push((t, true, false));
            }
            for (token, readable, writable) in ready {
                if token == WAKER {
                    self.drain_commands();
                    continue;
                }
                match self.sockets.get(&token) {
                    Some(Sock::Listener { .. }) => self.accept(token),
                    Some(Sock::Conn(_)) => {
                        if writable {
                            self.flush.insert(token);
                        }
                        if readable {
                            self.service_conn(token);
                        }
                    }
                    None => {}
                }
            }
            if let Err(e) = self.commit_round() {
                // Never acknowledge what is not durable: stop, so the state visible after
                // a restart is exactly what was acknowledged.
                error!("xenstored: journal write failed, stopping: {e}");
                std::process::exit(70);
            }
            self.deliver();
        }
        info!("xenstored: stopped");
    }

    // ---- socket handling -----------------------------------------------------------------

    fn accept(&mut self, token: Token) {
        loop {
            let (stream, domid, privileged) = match self.sockets.get(&token) {
                Some(Sock::Listener {
                    listener,
                    domid,
                    privileged,
                }) => match listener.accept() {
                    Ok((s, _)) => (s, *domid, *privileged),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                    Err(e) => {
                        warn!("xenstored: accept failed: {e}");
                        return;
                    }
                },
                _ => return,
            };
            let mut stream = stream;
            let ctoken = self.token();
            if let Err(e) = self
                .poll
                .registry()
                .register(&mut stream, ctoken, Interest::READABLE)
            {
                warn!("xenstored: cannot watch a new connection: {e}");
                continue;
            }
            let id = self.shared_next_conn.new_conn_id();
            self.store.connect(id, domid, privileged);
            self.peers.insert(id, Peer::Socket(ctoken));
            self.sockets.insert(
                ctoken,
                Sock::Conn(Box::new(SocketConn {
                    stream,
                    id,
                    privileged,
                    domid,
                    decoder: FrameDecoder::new(),
                    out: Vec::new(),
                    out_pos: 0,
                    want_write: false,
                })),
            );
            self.stats.connections_accepted += 1;
            debug!("xenstored: connection {id:?} as dom{domid} (privileged: {privileged})");
        }
    }

    fn service_conn(&mut self, token: Token) {
        let mut closed = false;
        let mut budget_hit = false;
        let mut msgs = Vec::new();
        {
            let Some(Sock::Conn(c)) = self.sockets.get_mut(&token) else {
                return;
            };
            if c.queued() >= OUT_PAUSE {
                // Paused until the client reads; `flush` resumes us.
                return;
            }
            let mut buf = [0u8; 16384];
            let mut read = 0;
            while read < READ_BUDGET {
                match c.stream.read(&mut buf) {
                    Ok(0) => {
                        closed = true;
                        break;
                    }
                    Ok(n) => {
                        c.decoder.push(&buf[..n]);
                        read += n;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => {
                        closed = true;
                        break;
                    }
                }
            }
            if read >= READ_BUDGET {
                budget_hit = true;
            }
            loop {
                if msgs.len() >= REQUEST_BUDGET {
                    budget_hit = true;
                    break;
                }
                match c.decoder.next_message() {
                    Ok(Some(m)) => msgs.push(m),
                    Ok(None) => break,
                    Err(e) => {
                        debug!("xenstored: dropping connection {:?}: {e}", c.id);
                        self.stats.protocol_errors += 1;
                        closed = true;
                        break;
                    }
                }
            }
        }
        let id = match self.sockets.get(&token) {
            Some(Sock::Conn(c)) => c.id,
            _ => return,
        };
        for m in msgs {
            self.stats.requests += 1;
            let resp = self.store.handle(id, &m);
            self.absorb(resp);
        }
        if closed {
            // Requests that arrived before the EOF were handled; their replies die with
            // the connection, their committed changes do not.
            self.close_socket(token);
        } else if budget_hit {
            self.carry.insert(token);
        }
    }

    fn close_socket(&mut self, token: Token) {
        if let Some(Sock::Conn(mut c)) = self.sockets.remove(&token) {
            let _ = self.poll.registry().deregister(&mut c.stream);
            self.store.disconnect(c.id);
            self.peers.remove(&c.id);
            self.flush.remove(&token);
            self.carry.remove(&token);
        } else if let Some(Sock::Listener { mut listener, .. }) = self.sockets.remove(&token) {
            let _ = self.poll.registry().deregister(&mut listener);
        }
    }

    // ---- commands from in-process users ----------------------------------------------------

    fn drain_commands(&mut self) {
        loop {
            match self.cmd_rx.try_recv() {
                Ok(cmd) => self.command(cmd),
                Err(TryRecvError::Empty) => return,
                Err(TryRecvError::Disconnected) => {
                    self.stop = true;
                    return;
                }
            }
        }
    }

    fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Connect {
                conn,
                domid,
                privileged,
                replies,
                watches,
            } => {
                self.store.connect(conn, domid, privileged);
                self.peers.insert(
                    conn,
                    Peer::Internal {
                        domid,
                        replies,
                        watches,
                    },
                );
            }
            Command::Request { conn, msg } => {
                if self.peers.contains_key(&conn) {
                    self.stats.requests += 1;
                    let resp = self.store.handle(conn, &msg);
                    self.absorb(resp);
                } else {
                    // The connection was torn down (its domain died): answer EIO-free
                    // by closing, i.e. dropping the request; the client sees its channel end.
                    debug!("xenstored: request on closed connection {conn:?}");
                }
            }
            Command::Disconnect { conn } => {
                if matches!(self.peers.get(&conn), Some(Peer::Internal { .. })) {
                    self.peers.remove(&conn);
                    self.store.disconnect(conn);
                }
            }
            Command::CreateDomain { req, reply } => {
                let result = self.create_domain(req);
                self.deferred.push(Box::new(move || {
                    let _ = reply.send(result);
                }));
            }
            Command::DestroyDomain { name_or_id, reply } => {
                let result = self.destroy_domain(&name_or_id);
                self.deferred.push(Box::new(move || {
                    let _ = reply.send(result);
                }));
            }
            Command::ListDomains { reply } => {
                let _ = reply.send(self.registry.list().cloned().collect());
            }
            Command::LookupDomain { name_or_id, reply } => {
                let _ = reply.send(
                    self.registry
                        .lookup(&name_or_id)
                        .cloned()
                        .map_err(ToolstackError::from),
                );
            }
            Command::Stats { reply } => {
                let mut s = self.stats.clone();
                s.connections_open = self.peers.len() as u64;
                s.store = self.store.stats();
                let _ = reply.send(s);
            }
            Command::Shutdown => self.stop = true,
        }
    }

    // ---- domains -------------------------------------------------------------------------

    fn create_domain(&mut self, req: DomainRequest) -> Result<DomainInfo, ToolstackError> {
        let info = self.registry.plan_create(&req, now_ms())?;
        self.hv.instantiate(&info).map_err(|e| {
            ToolstackError::Failed(format!("creating memory of domain {}: {e}", info.domid))
        })?;
        if let Err(e) = self.write_domain_tree(&info) {
            self.hv.remove(info.domid);
            return Err(ToolstackError::Failed(format!(
                "writing the xenstore tree of domain {}: {e}",
                info.domid
            )));
        }
        let change = RegistryChange::Created(info.clone());
        self.record_registry(&change);
        self.registry.apply(&change);
        let resp = self.store.introduce_domain(info.domid);
        self.absorb(resp);
        if let Err(e) = self.listen_domain(info.domid) {
            warn!(
                "domain {}: cannot bind its xenstore socket: {e}",
                info.domid
            );
        }
        info!("created domain {} ({})", info.domid, info.name);
        Ok(info)
    }

    fn write_domain_tree(&mut self, info: &DomainInfo) -> Result<(), XsError> {
        let tx = self.exec(MsgType::TransactionStart, 0, b"\0")?;
        let tx: u32 = std::str::from_utf8(&tx)
            .ok()
            .and_then(|s| s.trim_end_matches('\0').parse().ok())
            .ok_or(XsError::EINVAL)?;
        let mut result = Ok(());
        for n in domtree::guest_nodes(info) {
            if let Err(e) = self.write_node(tx, &n) {
                result = Err(e);
                break;
            }
        }
        let end: &[u8] = if result.is_ok() { b"T\0" } else { b"F\0" };
        let committed = self.exec(MsgType::TransactionEnd, tx, end);
        result.and(committed.map(|_| ()))
    }

    fn destroy_domain(&mut self, name_or_id: &str) -> Result<DomainInfo, ToolstackError> {
        let domid = self.registry.plan_destroy(name_or_id)?;
        let info = self
            .registry
            .get(domid)
            .cloned()
            .ok_or_else(|| ToolstackError::Failed(format!("domain {domid} vanished")))?;
        self.registry.set_state(domid, DomainState::Dying);
        // Its socket and every connection acting as it.
        if let Some(t) = self.dom_listeners.remove(&domid) {
            self.close_socket(t);
        }
        let _ = std::fs::remove_dir_all(
            super::domain_socket_path(&self.cfg.run_dir, domid)
                .parent()
                .unwrap_or(Path::new("/nonexistent")),
        );
        let victims: Vec<(ConnId, Option<Token>)> = self
            .peers
            .iter()
            .filter_map(|(id, p)| match p {
                Peer::Socket(t) => match self.sockets.get(t) {
                    Some(Sock::Conn(c)) if c.domid == domid && !c.privileged => {
                        Some((*id, Some(*t)))
                    }
                    _ => None,
                },
                Peer::Internal { domid: d, .. } if *d == domid => Some((*id, None)),
                Peer::Internal { .. } => None,
            })
            .collect();
        for (id, token) in victims {
            match token {
                Some(t) => self.close_socket(t),
                None => {
                    self.peers.remove(&id);
                    self.store.disconnect(id);
                }
            }
        }
        for root in domtree::guest_roots(&info) {
            let mut payload = root.into_bytes();
            payload.push(0);
            if let Err(e) = self.exec(MsgType::Rm, 0, &payload) {
                if e != XsError::ENOENT {
                    warn!("destroying domain {domid}: removing its nodes: {e:?}");
                }
            }
        }
        let resp = self.store.release_domain(domid);
        self.absorb(resp);
        self.hv.remove(domid);
        let change = RegistryChange::Destroyed(domid);
        self.record_registry(&change);
        self.registry.apply(&change);
        info!("destroyed domain {domid} ({})", info.name);
        Ok(info)
    }

    // ---- store helpers -----------------------------------------------------------------------

    /// Runs one request as the server's own privileged connection; returns its reply
    /// payload (or error) and routes everything else (watch events) normally.
    fn exec(&mut self, ty: MsgType, tx_id: u32, payload: &[u8]) -> Result<Vec<u8>, XsError> {
        let msg = Message {
            msg_type: ty as u32,
            req_id: 0,
            tx_id,
            payload: payload.to_vec(),
        };
        let resp = self.store.handle(self.self_conn, &msg);
        let mut reply = None;
        let mut rest = Vec::with_capacity(resp.out.len());
        for o in resp.out {
            if o.conn == self.self_conn {
                if o.msg.msg_type != MsgType::WatchEvent as u32 {
                    reply = Some(o.msg);
                }
            } else {
                rest.push(o);
            }
        }
        self.absorb(Response {
            out: rest,
            changes: resp.changes,
        });
        match reply {
            Some(m) if m.msg_type == MsgType::Error as u32 => {
                Err(m.error().unwrap_or(XsError::EINVAL))
            }
            Some(m) => Ok(m.payload),
            None => Err(XsError::EIO),
        }
    }

    fn store_read(&mut self, path: &str) -> Result<Vec<u8>, XsError> {
        let mut p = path.as_bytes().to_vec();
        p.push(0);
        self.exec(MsgType::Read, 0, &p)
    }

    fn write_node(&mut self, tx: u32, n: &domtree::StdNode) -> Result<(), XsError> {
        let mut payload = n.path.clone().into_bytes();
        payload.push(0);
        payload.extend_from_slice(n.value.as_bytes());
        self.exec(MsgType::Write, tx, &payload)?;
        if !n.perms.is_empty() {
            let mut payload = n.path.clone().into_bytes();
            payload.push(0);
            for p in &n.perms {
                payload.extend_from_slice(p.as_bytes());
                payload.push(0);
            }
            self.exec(MsgType::SetPerms, tx, &payload)?;
        }
        Ok(())
    }

    fn absorb(&mut self, resp: Response) {
        for c in resp.changes {
            let mut data = Vec::new();
            c.encode(&mut data);
            self.pending_changes.push(Entry {
                kind: record_kind::XENSTORE,
                data,
            });
        }
        self.pending_out.extend(resp.out);
    }

    fn record_registry(&mut self, change: &RegistryChange) {
        match serde_json::to_vec(change) {
            Ok(data) => self.pending_changes.push(Entry {
                kind: record_kind::REGISTRY,
                data,
            }),
            Err(e) => error!("cannot encode registry change: {e}"),
        }
    }

    // ---- end of round: journal, then replies ----------------------------------------------

    fn commit_round(&mut self) -> io::Result<()> {
        if !self.pending_changes.is_empty() {
            self.journal.append(&self.pending_changes)?;
            self.journal.sync()?;
            self.pending_changes.clear();
            self.stats.journal_batches += 1;
            if self.journal.log_len() > self.cfg.compact_after_bytes {
                self.compact()?;
            }
        }
        Ok(())
    }

    fn compact(&mut self) -> io::Result<()> {
        let mut state = Vec::new();
        for c in self.store.dump() {
            let mut data = Vec::new();
            c.encode(&mut data);
            state.push(Entry {
                kind: record_kind::XENSTORE,
                data,
            });
        }
        for c in self.registry.dump() {
            if let Ok(data) = serde_json::to_vec(&c) {
                state.push(Entry {
                    kind: record_kind::REGISTRY,
                    data,
                });
            }
        }
        self.journal.compact(&state)?;
        self.stats.compactions += 1;
        info!(
            "xenstored: journal compacted into a snapshot of {} records",
            state.len()
        );
        Ok(())
    }

    fn deliver(&mut self) {
        for o in std::mem::take(&mut self.pending_out) {
            let is_event = o.msg.msg_type == MsgType::WatchEvent as u32;
            if o.msg.msg_type == MsgType::Error as u32 {
                self.stats.error_replies += 1;
            }
            match self.peers.get(&o.conn) {
                Some(Peer::Socket(t)) => {
                    let t = *t;
                    if let Some(Sock::Conn(c)) = self.sockets.get_mut(&t) {
                        if is_event && !c.privileged && c.queued() > OUT_HARD_UNPRIVILEGED {
                            self.stats.events_dropped_slow_reader += 1;
                            continue;
                        }
                        o.msg.encode_into(&mut c.out);
                        self.flush.insert(t);
                    }
                }
                Some(Peer::Internal {
                    replies, watches, ..
                }) => {
                    let _ = if is_event {
                        watches.send(o.msg)
                    } else {
                        replies.send(o.msg)
                    };
                }
                None => {}
            }
        }
        for t in std::mem::take(&mut self.flush) {
            self.flush_conn(t);
        }
        for d in std::mem::take(&mut self.deferred) {
            d();
        }
    }

    fn flush_conn(&mut self, token: Token) {
        let mut dead = false;
        let mut resume = false;
        if let Some(Sock::Conn(c)) = self.sockets.get_mut(&token) {
            let was_paused = c.queued() >= OUT_PAUSE;
            while c.out_pos < c.out.len() {
                match c.stream.write(&c.out[c.out_pos..]) {
                    Ok(0) => {
                        dead = true;
                        break;
                    }
                    Ok(n) => c.out_pos += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => {
                        dead = true;
                        break;
                    }
                }
            }
            if c.out_pos == c.out.len() {
                c.out.clear();
                c.out_pos = 0;
            } else if c.out_pos > 64 * 1024 {
                c.out.drain(..c.out_pos);
                c.out_pos = 0;
            }
            let want = c.queued() > 0;
            if want != c.want_write && !dead {
                let interest = if want {
                    Interest::READABLE | Interest::WRITABLE
                } else {
                    Interest::READABLE
                };
                if self
                    .poll
                    .registry()
                    .reregister(&mut c.stream, token, interest)
                    .is_err()
                {
                    dead = true;
                }
                c.want_write = want;
            }
            resume = was_paused && c.queued() < OUT_PAUSE;
        }
        if dead {
            self.close_socket(token);
        } else if resume {
            self.carry.insert(token);
        }
    }
}
