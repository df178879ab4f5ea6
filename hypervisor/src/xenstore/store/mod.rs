//! The pure xenstore: tree, permissions, watches, transactions, quotas and
//! domains, driven one request at a time.
//!
//! [`Store::handle`] takes one decoded request from one connection and
//! returns the messages to send (the reply and any watch events, for any
//! connection, in sending order) and the committed [`Change`]s for the
//! journal. No I/O, clocks or threads: the daemon's shell owns sockets and
//! persistence. Behaviour follows Xen 4.17's C xenstored as documented in
//! xen-networking.md §4 and robustness.md §1.4 / §3(e).

mod args;
mod change;
mod ops;
mod transaction;
mod tree;
mod view;
mod watch;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

pub use change::{Change, ChangeDecodeError};

use crate::xenstore::path::{self, SpecialPath};
use crate::xenstore::perms::{Access, Caller, PermList, Rights};
use crate::xenstore::wire::{Message, MsgType, XsError, PAYLOAD_MAX};
use crate::{DomId, DOMID_FIRST_RESERVED, DOMID_SELF};

use ops::{Fire, OpCtx};
use transaction::Transaction;
use tree::Tree;
use view::View;
use watch::WatchTable;

/// Identifies one client connection of the shell (a socket or a domain's
/// ring).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// Per-domain limits, applied to unprivileged connections only (§4.5,
/// robustness §1.5: C xenstored 4.17 `quotas[]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quotas {
    /// Nodes a domain may own (ENOSPC beyond).
    pub nodes_per_domain: usize,
    /// Watches per connection (E2BIG beyond).
    pub watches_per_conn: usize,
    /// Largest value in bytes (ENOSPC beyond).
    pub node_size: usize,
    /// Concurrent transactions per connection (ENOSPC beyond).
    pub transactions_per_conn: usize,
    /// Permission entries per node (ENOSPC beyond).
    pub perms_per_node: usize,
    /// Distinct nodes one transaction may touch (ENOSPC beyond).
    pub nodes_per_transaction: usize,
}

impl Default for Quotas {
    /// The C xenstored 4.17 defaults: 1000 nodes, 128 watches, 2048-byte
    /// nodes, 10 transactions, 5 permissions, 1024 transaction nodes.
    fn default() -> Quotas {
        Quotas {
            nodes_per_domain: 1000,
            watches_per_conn: 128,
            node_size: 2048,
            transactions_per_conn: 10,
            perms_per_node: 5,
            nodes_per_transaction: 1024,
        }
    }
}

/// One message for the shell to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// Destination connection.
    pub conn: ConnId,
    /// The message.
    pub msg: Message,
}

/// The result of one call into the store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Response {
    /// Messages in the exact order they must be sent.
    pub out: Vec<Outgoing>,
    /// Committed mutations, in order, for the write-ahead journal.
    pub changes: Vec<Change>,
}

/// How often each quota refused a request.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct QuotaHits {
    /// `nodes_per_domain`.
    pub nodes: u64,
    /// `node_size`.
    pub node_size: u64,
    /// `watches_per_conn`.
    pub watches: u64,
    /// `transactions_per_conn`.
    pub transactions: u64,
    /// `perms_per_node`.
    pub perms: u64,
    /// `nodes_per_transaction`.
    pub transaction_nodes: u64,
}

/// Store counters and sizes (see [`Store::stats`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct StoreStats {
    /// Committed nodes, root included.
    pub nodes: usize,
    /// Connected clients.
    pub connections: usize,
    /// Registered watches.
    pub watches: usize,
    /// Open transactions.
    pub transactions: usize,
    /// Introduced domains (dom0 included).
    pub introduced_domains: usize,
    /// Requests handled.
    pub requests: u64,
    /// Requests answered with XS_ERROR.
    pub error_replies: u64,
    /// Requests from a connection the store does not know.
    pub unknown_connection: u64,
    /// Watch events queued for sending.
    pub events_sent: u64,
    /// Events not queued because an identical one was already pending.
    pub events_coalesced: u64,
    /// Events dropped for exceeding 4096 bytes (XSA-324).
    pub events_dropped_oversize: u64,
    /// Transactions committed.
    pub commits: u64,
    /// Commits refused with EAGAIN.
    pub commit_conflicts: u64,
    /// Commits refused because a request inside had failed (XSA-415) or a
    /// quota would be exceeded.
    pub commit_failures: u64,
    /// Transactions aborted (`F`, disconnect, RESET_WATCHES, release).
    pub aborts: u64,
    /// Journal records applied by [`Store::apply`].
    pub changes_applied: u64,
    /// Journal records ignored by [`Store::apply`] (invalid path, root removal).
    pub changes_rejected: u64,
    /// Quota refusals by kind.
    pub quota_hits: QuotaHits,
}

struct Conn {
    domid: DomId,
    privileged: bool,
    home: String,
    seq: u64,
    txs: BTreeMap<u32, Transaction>,
    next_tx_id: u32,
}

struct Domains {
    introduced: BTreeSet<DomId>,
    targets: HashMap<DomId, DomId>,
    introduce_perms: PermList,
    release_perms: PermList,
}

impl Domains {
    fn special_perms(&self, sp: SpecialPath) -> &PermList {
        match sp {
            SpecialPath::IntroduceDomain => &self.introduce_perms,
            SpecialPath::ReleaseDomain => &self.release_perms,
        }
    }
}

/// What a successful request answers.
struct Reply {
    payload: Vec<u8>,
    /// WATCH: the reply precedes the initial event; everything else queues
    /// its events before the reply, like C xenstored.
    before_events: bool,
}

impl Reply {
    fn ok() -> Reply {
        Reply::data(b"OK\0".to_vec())
    }

    fn data(payload: Vec<u8>) -> Reply {
        Reply {
            payload,
            before_events: false,
        }
    }
}

/// Watch events of one call, with C's "identical pending event" coalescing
/// (except for `@` events) and the XSA-324 size limit.
#[derive(Default)]
struct EventQueue {
    out: Vec<Outgoing>,
    seen: HashSet<(ConnId, Vec<u8>)>,
}

/// The xenstore state machine.
pub struct Store {
    quotas: Quotas,
    tree: Tree,
    conns: HashMap<ConnId, Conn>,
    next_conn_seq: u64,
    watches: WatchTable,
    domains: Domains,
    stats: StoreStats,
}

fn is_privileged_only(kind: MsgType) -> bool {
    matches!(
        kind,
        MsgType::Control
            | MsgType::Introduce
            | MsgType::Release
            | MsgType::IsDomainIntroduced
            | MsgType::Resume
            | MsgType::SetTarget
    )
}

fn domid_from(raw: &[u8]) -> Option<DomId> {
    DomId::try_from(args::atoi_u32(raw)).ok()
}

impl Store {
    /// A store holding the initial tree (`/`, `/local`, `/local/domain`,
    /// `/tool`, `/tool/xenstored`, all `n0`) with dom0 introduced.
    pub fn new(quotas: Quotas) -> Store {
        let n0 = PermList::owner_only(0, Access::None);
        Store {
            quotas,
            tree: Tree::new(),
            conns: HashMap::new(),
            next_conn_seq: 0,
            watches: WatchTable::default(),
            domains: Domains {
                introduced: BTreeSet::from([0]),
                targets: HashMap::new(),
                introduce_perms: n0.clone(),
                release_perms: n0,
            },
            stats: StoreStats::default(),
        }
    }

    /// The limits in force.
    pub fn quotas(&self) -> &Quotas {
        &self.quotas
    }

    /// Registers a connection. `privileged` connections (dom0, unix sockets)
    /// bypass permissions and quotas; relative paths resolve under
    /// `/local/domain/<domid>`. Re-connecting an id resets it.
    pub fn connect(&mut self, conn: ConnId, domid: DomId, privileged: bool) {
        self.disconnect(conn);
        self.next_conn_seq += 1;
        self.conns.insert(
            conn,
            Conn {
                domid,
                privileged,
                home: path::domain_home(domid),
                seq: self.next_conn_seq,
                txs: BTreeMap::new(),
                next_tx_id: 1,
            },
        );
    }

    /// Forgets a connection: its transactions are aborted and its watches
    /// dropped, nothing else changes (XSA-325). Idempotent (XSA-233).
    pub fn disconnect(&mut self, conn: ConnId) {
        if let Some(c) = self.conns.remove(&conn) {
            self.stats.aborts += c.txs.len() as u64;
        }
        self.watches.remove_conn(conn);
    }

    /// Handles one request of `conn` and returns the reply, the watch events
    /// it caused and its committed changes.
    pub fn handle(&mut self, conn: ConnId, msg: &Message) -> Response {
        self.stats.requests += 1;
        let mut resp = Response::default();
        if !self.conns.contains_key(&conn) {
            self.stats.unknown_connection += 1;
            self.stats.error_replies += 1;
            resp.out.push(Outgoing {
                conn,
                msg: msg.reply_error(XsError::EINVAL),
            });
            return resp;
        }
        let mut events = EventQueue::default();
        let result = self.dispatch(conn, msg, &mut events, &mut resp.changes);
        let result = result.and_then(|r| {
            if r.payload.len() > PAYLOAD_MAX {
                Err(XsError::E2BIG)
            } else {
                Ok(r)
            }
        });
        match result {
            Ok(reply) => {
                let before_events = reply.before_events;
                let reply = Outgoing {
                    conn,
                    msg: msg.reply(reply.payload),
                };
                if before_events {
                    resp.out.push(reply);
                    resp.out.append(&mut events.out);
                } else {
                    resp.out.append(&mut events.out);
                    resp.out.push(reply);
                }
            }
            Err(e) => {
                self.stats.error_replies += 1;
                resp.out.append(&mut events.out);
                resp.out.push(Outgoing {
                    conn,
                    msg: msg.reply_error(e),
                });
            }
        }
        resp
    }

    fn caller(&self, conn: &Conn) -> Caller {
        Caller {
            domid: conn.domid,
            privileged: conn.privileged,
            target: self.domains.targets.get(&conn.domid).copied(),
        }
    }

    fn conn(&self, conn: ConnId) -> Result<&Conn, XsError> {
        self.conns.get(&conn).ok_or(XsError::EINVAL)
    }

    fn dispatch(
        &mut self,
        conn: ConnId,
        msg: &Message,
        events: &mut EventQueue,
        changes: &mut Vec<Change>,
    ) -> Result<Reply, XsError> {
        let kind = match msg.kind() {
            None | Some(MsgType::WatchEvent) | Some(MsgType::Error) => return Err(XsError::ENOSYS),
            Some(kind) => kind,
        };
        let (privileged, tx_known) = {
            let c = self.conn(conn)?;
            (c.privileged, c.txs.contains_key(&msg.tx_id))
        };
        if is_privileged_only(kind) && !privileged {
            return Err(XsError::EACCES);
        }
        // WATCH/UNWATCH ignore tx_id (XSA-115); everything else must name an
        // open transaction of this connection or none.
        let tx_id = match kind {
            MsgType::Watch | MsgType::Unwatch => 0,
            _ => msg.tx_id,
        };
        if tx_id != 0 && !tx_known {
            return Err(XsError::ENOENT);
        }
        let payload = msg.payload.as_slice();
        match kind {
            MsgType::Read
            | MsgType::Directory
            | MsgType::DirectoryPart
            | MsgType::GetPerms
            | MsgType::Write
            | MsgType::Mkdir
            | MsgType::Rm
            | MsgType::SetPerms => self.node_request(conn, kind, tx_id, payload, events, changes),
            MsgType::Watch => self.do_watch(conn, payload, events),
            MsgType::Unwatch => self.do_unwatch(conn, payload),
            MsgType::TransactionStart => self.do_transaction_start(conn, tx_id),
            MsgType::TransactionEnd => {
                self.do_transaction_end(conn, tx_id, payload, events, changes)
            }
            MsgType::GetDomainPath => {
                let arg = args::onearg(payload).ok_or(XsError::EINVAL)?;
                let mut out = format!("/local/domain/{}", args::atoi_u32(arg)).into_bytes();
                out.push(0);
                Ok(Reply::data(out))
            }
            MsgType::IsDomainIntroduced => {
                let arg = args::onearg(payload).ok_or(XsError::EINVAL)?;
                let domid = args::atoi_u32(arg);
                let yes = domid == u32::from(DOMID_SELF)
                    || DomId::try_from(domid).is_ok_and(|d| self.domains.introduced.contains(&d));
                Ok(Reply::data(if yes {
                    b"T\0".to_vec()
                } else {
                    b"F\0".to_vec()
                }))
            }
            MsgType::Introduce => {
                let v: Vec<&[u8]> = args::strings(payload).take(3).collect();
                let [dom, _gfn, port] = v.as_slice() else {
                    return Err(XsError::EINVAL);
                };
                let domid = domid_from(dom)
                    .filter(|&d| d < DOMID_FIRST_RESERVED)
                    .ok_or(XsError::EINVAL)?;
                if args::atoi(port) as i32 <= 0 {
                    return Err(XsError::EINVAL);
                }
                self.introduce_inner(domid, events);
                Ok(Reply::ok())
            }
            MsgType::Release | MsgType::Resume => {
                let arg = args::onearg(payload).ok_or(XsError::EINVAL)?;
                let raw = args::atoi_u32(arg);
                if raw == 0 {
                    return Err(XsError::EINVAL);
                }
                let domid = DomId::try_from(raw)
                    .ok()
                    .filter(|d| self.domains.introduced.contains(d))
                    .ok_or(XsError::ENOENT)?;
                if kind == MsgType::Release {
                    self.release_inner(domid, events, changes);
                }
                Ok(Reply::ok())
            }
            MsgType::SetTarget => {
                let v: Vec<&[u8]> = args::strings(payload).take(2).collect();
                let [dom, target] = v.as_slice() else {
                    return Err(XsError::EINVAL);
                };
                let known = |raw: &[u8]| {
                    domid_from(raw)
                        .filter(|d| self.domains.introduced.contains(d))
                        .ok_or(XsError::ENOENT)
                };
                let (domid, target) = (known(dom)?, known(target)?);
                self.domains.targets.insert(domid, target);
                Ok(Reply::ok())
            }
            MsgType::ResetWatches => {
                self.reset_conn(conn);
                Ok(Reply::ok())
            }
            MsgType::Control => self.do_control(payload),
            MsgType::WatchEvent | MsgType::Error => Err(XsError::ENOSYS),
        }
    }

    /// Drops the watches and transactions of a connection (RESET_WATCHES).
    fn reset_conn(&mut self, conn: ConnId) {
        self.watches.remove_conn(conn);
        if let Some(c) = self.conns.get_mut(&conn) {
            self.stats.aborts += c.txs.len() as u64;
            c.txs.clear();
        }
    }

    fn node_request(
        &mut self,
        conn: ConnId,
        kind: MsgType,
        tx_id: u32,
        payload: &[u8],
        events: &mut EventQueue,
        changes: &mut Vec<Change>,
    ) -> Result<Reply, XsError> {
        let c = self.conn(conn)?;
        let caller = self.caller(c);
        enum Op {
            Read,
            Directory,
            DirectoryPart(u32),
            GetPerms,
            Write(Vec<u8>),
            Mkdir,
            Rm,
            SetPerms(PermList),
        }
        let (raw_path, op) = match kind {
            MsgType::Write => {
                // path\0value: the value is everything after the first NUL.
                let nul = payload
                    .iter()
                    .position(|&b| b == 0)
                    .ok_or(XsError::EINVAL)?;
                let (p, rest) = payload.split_at(nul);
                (p, Op::Write(rest.get(1..).unwrap_or(&[]).to_vec()))
            }
            MsgType::SetPerms => {
                let n = args::count_nuls(payload);
                if n < 2 {
                    return Err(XsError::EINVAL);
                }
                if !caller.privileged && n - 1 > self.quotas.perms_per_node {
                    self.stats.quota_hits.perms += 1;
                    return Err(XsError::ENOSPC);
                }
                let mut strings = args::strings(payload);
                let p = strings.next().ok_or(XsError::EINVAL)?;
                let perms = PermList::parse(strings).map_err(|_| XsError::EINVAL)?;
                if p.first() == Some(&b'@') {
                    return self.set_special_perms(caller, p, perms);
                }
                (p, Op::SetPerms(perms))
            }
            MsgType::DirectoryPart => {
                if args::count_nuls(payload) != 2 {
                    return Err(XsError::EINVAL);
                }
                let mut strings = args::strings(payload);
                let p = strings.next().ok_or(XsError::EINVAL)?;
                let off = strings.next().map(args::atoi_u32).unwrap_or(0);
                (p, Op::DirectoryPart(off))
            }
            _ => {
                let p = args::onearg(payload).ok_or(XsError::EINVAL)?;
                if kind == MsgType::GetPerms && p.first() == Some(&b'@') {
                    return self.get_special_perms(caller, p);
                }
                let op = match kind {
                    MsgType::Read => Op::Read,
                    MsgType::Directory => Op::Directory,
                    MsgType::GetPerms => Op::GetPerms,
                    MsgType::Mkdir => Op::Mkdir,
                    _ => Op::Rm,
                };
                (p, op)
            }
        };
        let path = path::canonicalize(raw_path, &c.home).map_err(|_| XsError::EINVAL)?;
        let path: &str = &path;

        let Store {
            tree,
            conns,
            quotas,
            stats,
            watches,
            ..
        } = self;
        let mut ctx = OpCtx {
            caller,
            quotas,
            hits: &mut stats.quota_hits,
            fires: Vec::new(),
            collect_fires: watches.total() > 0,
        };
        let run = |view: &mut View| -> Result<Reply, XsError> {
            match op {
                Op::Read => ops::read(view, &ctx, path).map(Reply::data),
                Op::Directory => ops::directory(view, &ctx, path).map(Reply::data),
                Op::DirectoryPart(off) => {
                    ops::directory_part(view, &ctx, path, off).map(Reply::data)
                }
                Op::GetPerms => ops::get_perms(view, &ctx, path).map(Reply::data),
                Op::Write(value) => ops::write(view, &mut ctx, path, &value).map(|()| Reply::ok()),
                Op::Mkdir => ops::mkdir(view, &mut ctx, path).map(|()| Reply::ok()),
                Op::Rm => ops::rm(view, &mut ctx, path).map(|()| Reply::ok()),
                Op::SetPerms(perms) => {
                    ops::set_perms(view, &mut ctx, path, perms).map(|()| Reply::ok())
                }
            }
        };
        let mut limit_hit = false;
        let result = if tx_id == 0 {
            run(&mut View::Direct { tree, changes })
        } else {
            let tx = conns
                .get_mut(&conn)
                .and_then(|c| c.txs.get_mut(&tx_id))
                .ok_or(XsError::ENOENT)?;
            let limit = (!caller.privileged).then_some(quotas.nodes_per_transaction);
            let result = run(&mut View::Tx {
                tree: &mut *tree,
                tx: &mut *tx,
                limit,
            });
            limit_hit = std::mem::take(&mut tx.limit_hit);
            result
        };
        let fires = std::mem::take(&mut ctx.fires);
        drop(ctx);
        if limit_hit {
            self.stats.quota_hits.transaction_nodes += 1;
        }
        if result.is_ok() {
            for fire in &fires {
                self.deliver(fire, events);
            }
        }
        result
    }

    fn special_of(raw: &[u8]) -> Result<SpecialPath, XsError> {
        SpecialPath::parse(raw).ok_or(XsError::EINVAL)
    }

    /// SET_PERMS on `@introduceDomain` / `@releaseDomain`: the caller needs
    /// write+owner on the special node's own permissions (C
    /// `set_perms_special`); only a privileged caller may change the owner.
    fn set_special_perms(
        &mut self,
        caller: Caller,
        raw: &[u8],
        perms: PermList,
    ) -> Result<Reply, XsError> {
        let sp = Self::special_of(raw)?;
        let current = self.domains.special_perms(sp);
        if !current
            .rights(&caller)
            .contains(Rights::WRITE.union(Rights::OWNER))
        {
            return Err(XsError::EACCES);
        }
        if !caller.privileged && perms.owner() != current.owner() {
            return Err(XsError::EPERM);
        }
        match sp {
            SpecialPath::IntroduceDomain => self.domains.introduce_perms = perms,
            SpecialPath::ReleaseDomain => self.domains.release_perms = perms,
        }
        Ok(Reply::ok())
    }

    /// GET_PERMS on a special node (an extension of 4.17, which answers
    /// EINVAL; later Xen versions answer like this).
    fn get_special_perms(&self, caller: Caller, raw: &[u8]) -> Result<Reply, XsError> {
        let perms = self.domains.special_perms(Self::special_of(raw)?);
        if !perms.rights(&caller).contains(Rights::READ) {
            return Err(XsError::EACCES);
        }
        let mut out = Vec::new();
        perms.format_into(&mut out);
        Ok(Reply::data(out))
    }

    fn do_watch(
        &mut self,
        conn: ConnId,
        payload: &[u8],
        events: &mut EventQueue,
    ) -> Result<Reply, XsError> {
        // Exactly two strings: 4.17 rejects a third (depth) argument.
        if args::count_nuls(payload) != 2 {
            return Err(XsError::EINVAL);
        }
        let mut strings = args::strings(payload);
        let raw = strings.next().ok_or(XsError::EINVAL)?;
        let token = strings.next().ok_or(XsError::EINVAL)?;
        let c = self.conn(conn)?;
        let (privileged, home) = (c.privileged, c.home.clone());
        let (wpath, relative): (Vec<u8>, bool) = if raw.first() == Some(&b'@') {
            if raw.len() > path::REL_PATH_MAX {
                return Err(XsError::EINVAL);
            }
            (raw.to_vec(), false)
        } else {
            let canon = path::canonicalize(raw, &home).map_err(|_| XsError::EINVAL)?;
            (canon.as_bytes().to_vec(), path::is_relative(raw))
        };
        if self
            .watches
            .of(conn)
            .iter()
            .any(|w| *w.path == *wpath && &*w.token == token)
        {
            return Err(XsError::EEXIST);
        }
        if !privileged && self.watches.count(conn) >= self.quotas.watches_per_conn {
            self.stats.quota_hits.watches += 1;
            return Err(XsError::E2BIG);
        }
        self.watches.add(conn, &wpath, token, relative)?;
        // The immediate initial event, reported as registered.
        let shown: &[u8] = if relative {
            std::str::from_utf8(&wpath)
                .map(|p| path::relative_to(p, &home).as_bytes())
                .unwrap_or(&wpath)
        } else {
            &wpath
        };
        let msg = Message::watch_event(shown, token);
        self.queue_event(events, conn, msg);
        Ok(Reply {
            payload: b"OK\0".to_vec(),
            before_events: true,
        })
    }

    fn do_unwatch(&mut self, conn: ConnId, payload: &[u8]) -> Result<Reply, XsError> {
        if args::count_nuls(payload) != 2 {
            return Err(XsError::EINVAL);
        }
        let mut strings = args::strings(payload);
        let raw = strings.next().ok_or(XsError::EINVAL)?;
        let token = strings.next().ok_or(XsError::EINVAL)?;
        let home = &self.conn(conn)?.home;
        let wpath = if path::is_relative(raw) {
            let mut p = home.as_bytes().to_vec();
            p.push(b'/');
            p.extend_from_slice(raw);
            p
        } else {
            raw.to_vec()
        };
        if self.watches.remove(conn, &wpath, token) {
            Ok(Reply::ok())
        } else {
            Err(XsError::ENOENT)
        }
    }

    fn do_transaction_start(&mut self, conn: ConnId, tx_id: u32) -> Result<Reply, XsError> {
        if tx_id != 0 {
            return Err(XsError::EBUSY);
        }
        let limit = self.quotas.transactions_per_conn;
        let c = self.conns.get_mut(&conn).ok_or(XsError::EINVAL)?;
        if !c.privileged && c.txs.len() >= limit {
            self.stats.quota_hits.transactions += 1;
            return Err(XsError::ENOSPC);
        }
        let id = loop {
            let id = c.next_tx_id;
            c.next_tx_id = c.next_tx_id.wrapping_add(1);
            if id != 0 && !c.txs.contains_key(&id) {
                break id;
            }
        };
        c.txs.insert(id, Transaction::new());
        let mut out = id.to_string().into_bytes();
        out.push(0);
        Ok(Reply::data(out))
    }

    fn do_transaction_end(
        &mut self,
        conn: ConnId,
        tx_id: u32,
        payload: &[u8],
        events: &mut EventQueue,
        changes: &mut Vec<Change>,
    ) -> Result<Reply, XsError> {
        let commit = match args::onearg(payload) {
            Some(b"T") => true,
            Some(b"F") => false,
            _ => return Err(XsError::EINVAL),
        };
        if tx_id == 0 {
            return Err(XsError::ENOENT);
        }
        let c = self.conns.get_mut(&conn).ok_or(XsError::EINVAL)?;
        let tx = c.txs.remove(&tx_id).ok_or(XsError::ENOENT)?;
        let c = self.conn(conn)?;
        let caller = self.caller(c);
        if !commit {
            self.stats.aborts += 1;
            return Ok(Reply::ok());
        }
        if tx.failed {
            self.stats.commit_failures += 1;
            return Err(XsError::ENOMEM);
        }
        if tx.conflicts(&self.tree) {
            self.stats.commit_conflicts += 1;
            return Err(XsError::EAGAIN);
        }
        if tx.created && !caller.privileged {
            let owned = i64::try_from(self.tree.owned(caller.domid)).unwrap_or(i64::MAX);
            let limit = i64::try_from(self.quotas.nodes_per_domain).unwrap_or(i64::MAX);
            if owned.saturating_add(tx.owned_delta(caller.domid)) > limit {
                self.stats.quota_hits.nodes += 1;
                self.stats.commit_failures += 1;
                return Err(XsError::ENOSPC);
            }
        }
        let tx_changes = tx.to_changes();
        for ch in &tx_changes {
            self.tree.apply(ch);
        }
        changes.extend(tx_changes);
        self.stats.commits += 1;
        if self.watches.total() > 0 {
            for e in tx.entries() {
                let Some(exact) = e.fire else {
                    continue;
                };
                let mut perms = Vec::with_capacity(3);
                perms.extend(e.old_perms.clone());
                if let Some(node) = self.tree.get(&e.path) {
                    perms.push(node.perms.clone());
                    if let Some(parent) = path::parent(&e.path).and_then(|p| self.tree.get(p)) {
                        perms.push(parent.perms.clone());
                    }
                }
                let fire = Fire {
                    path: e.path.clone(),
                    exact,
                    perms,
                };
                self.deliver(&fire, events);
            }
        }
        Ok(Reply::ok())
    }

    fn do_control(&mut self, payload: &[u8]) -> Result<Reply, XsError> {
        let v: Vec<&[u8]> = args::strings(payload).collect();
        let (cmd, rest) = v.split_first().ok_or(XsError::EINVAL)?;
        match (*cmd, rest) {
            (b"check", []) => match self.check() {
                Ok(()) => Ok(Reply::ok()),
                Err(_) => Err(XsError::EIO),
            },
            (b"help", []) => Ok(Reply::data(
                b"check\t\nhelp\t\nlog\ton|off\nprint\t<string>\nquota\t[set <name> <val>|<domid>]\n\0".to_vec(),
            )),
            (b"log", [b"on" | b"off"]) | (b"print", [_]) => Ok(Reply::ok()),
            (b"quota", []) => {
                let q = &self.quotas;
                let mut s = String::from("Quota settings:\n");
                for (name, value, descr) in [
                    ("nodes", q.nodes_per_domain, "Nodes per domain"),
                    ("watches", q.watches_per_conn, "Watches per domain"),
                    ("transactions", q.transactions_per_conn, "Transactions per domain"),
                    ("transaction-nodes", q.nodes_per_transaction, "Max. number of accessed nodes per transaction"),
                    ("node-size", q.node_size, "Max. size of a node"),
                    ("permissions", q.perms_per_node, "Max. number of permissions per node"),
                ] {
                    s.push_str(&format!("{name:<17}: {value:>8} {descr}\n"));
                }
                let mut out = s.into_bytes();
                out.push(0);
                Ok(Reply::data(out))
            }
            (b"quota", [b"set", name, value]) => {
                let value = usize::try_from(args::atoi(value)).ok().filter(|&v| v >= 1).ok_or(XsError::EINVAL)?;
                let q = &mut self.quotas;
                let slot = match *name {
                    b"nodes" => &mut q.nodes_per_domain,
                    b"watches" => &mut q.watches_per_conn,
                    b"transactions" => &mut q.transactions_per_conn,
                    b"transaction-nodes" => &mut q.nodes_per_transaction,
                    b"node-size" => &mut q.node_size,
                    b"permissions" => &mut q.perms_per_node,
                    _ => return Err(XsError::EINVAL),
                };
                *slot = value;
                Ok(Reply::ok())
            }
            (b"quota", [domid]) => {
                let domid = domid_from(domid).ok_or(XsError::EINVAL)?;
                let watches: usize = self
                    .conns
                    .iter()
                    .filter(|(_, c)| c.domid == domid)
                    .map(|(id, _)| self.watches.count(*id))
                    .sum();
                let mut out = format!(
                    "Domain {domid}:\nnodes             : {}\nwatches           : {watches}\n",
                    self.tree.owned(domid)
                )
                .into_bytes();
                out.push(0);
                Ok(Reply::data(out))
            }
            _ => Err(XsError::EINVAL),
        }
    }

    fn queue_event(&mut self, events: &mut EventQueue, conn: ConnId, msg: Message) {
        if msg.payload.len() > PAYLOAD_MAX {
            self.stats.events_dropped_oversize += 1;
            return;
        }
        let coalesce = msg.payload.first() != Some(&b'@');
        if coalesce && !events.seen.insert((conn, msg.payload.clone())) {
            self.stats.events_coalesced += 1;
            return;
        }
        self.stats.events_sent += 1;
        events.out.push(Outgoing { conn, msg });
    }

    /// Queues the events one modification causes: to every matching watch
    /// whose connection may see the change (XSA-115), connections in connect
    /// order, each connection's watches in registration order.
    fn deliver(&mut self, fire: &Fire, events: &mut EventQueue) {
        let mut matched: Vec<(u64, u64, ConnId, Message)> = Vec::new();
        for (cid, w) in self.watches.matching(&fire.path, fire.exact) {
            let Some(c) = self.conns.get(&cid) else {
                continue;
            };
            let caller = self.caller(c);
            if !fire
                .perms
                .iter()
                .any(|p| p.rights(&caller).contains(Rights::READ))
            {
                continue;
            }
            let shown = if w.relative {
                path::relative_to(&fire.path, &c.home)
            } else {
                &fire.path
            };
            matched.push((
                c.seq,
                w.seq,
                cid,
                Message::watch_event(shown.as_bytes(), &w.token),
            ));
        }
        matched.sort_by_key(|m| (m.0, m.1));
        for (_, _, cid, msg) in matched {
            self.queue_event(events, cid, msg);
        }
    }

    /// Fires a special watch (`@introduceDomain`/`@releaseDomain`) to the
    /// connections allowed to read it: privileged ones, or those granted by
    /// SET_PERMS on the special node (XSA-115).
    fn deliver_special(&mut self, sp: SpecialPath, events: &mut EventQueue) {
        let perms = self.domains.special_perms(sp).clone();
        let mut matched: Vec<(u64, u64, ConnId, Message)> = Vec::new();
        for (cid, w) in self.watches.matching(sp.name(), true) {
            let Some(c) = self.conns.get(&cid) else {
                continue;
            };
            if !perms.rights(&self.caller(c)).contains(Rights::READ) {
                continue;
            }
            matched.push((
                c.seq,
                w.seq,
                cid,
                Message::watch_event(sp.name().as_bytes(), &w.token),
            ));
        }
        matched.sort_by_key(|m| (m.0, m.1));
        for (_, _, cid, msg) in matched {
            self.queue_event(events, cid, msg);
        }
    }

    fn introduce_inner(&mut self, domid: DomId, events: &mut EventQueue) {
        if domid != 0 && self.domains.introduced.insert(domid) {
            self.deliver_special(SpecialPath::IntroduceDomain, events);
        }
    }

    /// Marks a domain introduced and fires `@introduceDomain` (once; dom0
    /// and already-introduced domains fire nothing).
    pub fn introduce_domain(&mut self, domid: DomId) -> Response {
        let mut events = EventQueue::default();
        self.introduce_inner(domid, &mut events);
        Response {
            out: events.out,
            changes: Vec::new(),
        }
    }

    fn release_inner(&mut self, domid: DomId, events: &mut EventQueue, changes: &mut Vec<Change>) {
        if domid == 0 {
            return;
        }
        let was_introduced = self.domains.introduced.remove(&domid);
        self.domains
            .targets
            .retain(|&d, &mut t| d != domid && t != domid);
        let gone: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.domid == domid && !c.privileged)
            .map(|(&id, _)| id)
            .collect();
        for id in gone {
            self.reset_conn(id);
        }
        // XSA-322/419: remove every node the domain owns (whole subtrees).
        let mut owned_roots = Vec::new();
        let mut stack = vec![path::ROOT.to_owned()];
        while let Some(p) = stack.pop() {
            let Some(node) = self.tree.get(&p) else {
                continue;
            };
            if p != path::ROOT && node.perms.owner() == domid {
                owned_roots.push(p);
                continue;
            }
            for c in node.children.iter().rev() {
                stack.push(path::join(&p, c));
            }
        }
        for root in owned_roots {
            if self.watches.total() > 0 {
                for p in self.tree.postorder(&root) {
                    let mut perms = Vec::with_capacity(2);
                    if let Some(n) = self.tree.get(&p) {
                        perms.push(n.perms.clone());
                    }
                    if let Some(parent) = path::parent(&p).and_then(|pp| self.tree.get(pp)) {
                        perms.push(parent.perms.clone());
                    }
                    let fire = Fire {
                        exact: p != root,
                        path: p,
                        perms,
                    };
                    self.deliver(&fire, events);
                }
            }
            self.tree.remove(&root);
            changes.push(Change::Remove { path: root });
        }
        // XSA-322/417: strip it from every remaining permission list.
        for p in self.tree.preorder(path::ROOT) {
            let Some(node) = self.tree.get(&p) else {
                continue;
            };
            if !node.perms.mentions(domid) {
                continue;
            }
            let mut perms = node.perms.clone();
            perms.strip_domain(domid, 0);
            let value = node.value.clone();
            self.tree.set_content(&p, value.clone(), perms.clone());
            changes.push(Change::Write {
                path: p,
                value,
                perms,
            });
        }
        self.domains.introduce_perms.strip_domain(domid, 0);
        self.domains.release_perms.strip_domain(domid, 0);
        if was_introduced {
            self.deliver_special(SpecialPath::ReleaseDomain, events);
        }
    }

    /// Marks a domain released: drops its connections' watches and
    /// transactions, removes every node it owns (firing their watches),
    /// strips it from every other permission list (XSA-322/417/419; these
    /// appear in `changes`), then fires `@releaseDomain` if it had been
    /// introduced. Dom0 cannot be released. Idempotent.
    pub fn release_domain(&mut self, domid: DomId) -> Response {
        let mut events = EventQueue::default();
        let mut changes = Vec::new();
        self.release_inner(domid, &mut events, &mut changes);
        Response {
            out: events.out,
            changes,
        }
    }

    /// True when `domid` is introduced (dom0 always is).
    pub fn is_introduced(&self, domid: DomId) -> bool {
        self.domains.introduced.contains(&domid)
    }

    /// Replays a journal record: no events, no quota or permission checks.
    pub fn apply(&mut self, change: &Change) {
        if self.tree.apply(change) {
            self.stats.changes_applied += 1;
        } else {
            self.stats.changes_rejected += 1;
        }
    }

    /// The whole committed tree as records that rebuild it on a fresh
    /// [`Store::new`]: first `Remove`s of the initial top-level nodes (so
    /// child order is reproduced exactly), then a `Write` of every node,
    /// parents before children, children in creation order.
    pub fn dump(&self) -> Vec<Change> {
        let mut out: Vec<Change> = ["/local", "/tool"]
            .into_iter()
            .map(|p| Change::Remove { path: p.to_owned() })
            .collect();
        for p in self.tree.preorder(path::ROOT) {
            if let Some(node) = self.tree.get(&p) {
                out.push(Change::Write {
                    value: node.value.clone(),
                    perms: node.perms.clone(),
                    path: p,
                });
            }
        }
        out
    }

    /// Integrity check (robustness §3 e12): tree shape and accounting, watch
    /// index, and that every watch belongs to a live connection.
    pub fn check(&self) -> Result<(), String> {
        self.tree.check()?;
        self.watches.check()?;
        let listed: usize = self.conns.keys().map(|&c| self.watches.count(c)).sum();
        if listed != self.watches.total() {
            return Err("watches registered for unknown connections".into());
        }
        for (id, c) in &self.conns {
            if c.txs.contains_key(&0) {
                return Err(format!("{id:?} holds transaction id 0"));
            }
        }
        Ok(())
    }

    /// Counters and sizes.
    pub fn stats(&self) -> StoreStats {
        let mut s = self.stats.clone();
        s.nodes = self.tree.len();
        s.connections = self.conns.len();
        s.watches = self.watches.total();
        s.transactions = self.conns.values().map(|c| c.txs.len()).sum();
        s.introduced_domains = self.domains.introduced.len();
        s
    }

    /// Nodes currently owned by `domid` (the node quota's counter).
    pub fn nodes_owned(&self, domid: DomId) -> usize {
        self.tree.owned(domid)
    }
}

impl Default for Store {
    fn default() -> Store {
        Store::new(Quotas::default())
    }
}
