//! The neighbour (ARP) cache of the L3 cores: IPv4 address → MAC per port.
//!
//! A reduced Linux `neighbour.c`/`arp.c` state machine (robustness.md §3 b4/b13 context;
//! RFC 826, RFC 1122 §2.3.2):
//! * an entry is `Incomplete` while an ARP request is outstanding, `Reachable` once a
//!   reply (or a request addressed to us) confirmed it, or `Static` (configured);
//! * a reachable entry older than `reachable_time` is still used but each use asks for a
//!   refresh request (Linux `STALE`→`DELAY`→`PROBE`, collapsed into one step), at most one
//!   per `retrans_time`; one unconfirmed for `stale_time` is removed by [`expire`];
//! * an incomplete entry that is not confirmed within `resolve_timeout` fails: it is
//!   removed and the frames queued on it are dropped (`unresolved_neigh`);
//! * ARP requests are limited per destination (one per `retrans_time`, RFC 1122
//!   §2.3.2.1) and globally by a token bucket;
//! * the table is bounded: when it is full a new destination may evict a stale entry found
//!   within a short bounded scan, else the frame is dropped (`NEIGH_QUEUEFULL`-like);
//! * frames waiting for resolution sit in a small pre-sized queue (per destination and in
//!   total), and are handed back through [`pop_ready`] once the MAC is known.
//!
//! Timers are driven by [`expire`] with a work budget, like the MAC table. Slot buffers
//! grow to the largest frame queued and are reused, so a steady state allocates nothing.
//!
//! [`expire`]: NeighbourCache::expire
//! [`pop_ready`]: NeighbourCache::pop_ready

use core::time::Duration;
use std::collections::{HashMap, VecDeque};
use std::net::Ipv4Addr;

use foldhash::fast::RandomState;

use super::ratelimit::{RateLimit, TokenBucket};
use crate::meta::FrameMeta;
use crate::port::PortId;
use crate::time::Timestamp;
use crate::wire::MacAddr;

const NIL: u32 = u32::MAX;
/// Slots examined for a victim when the table is full.
const EVICT_SCAN: usize = 16;

/// Limits and timers of the cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NeighConfig {
    /// Most entries (Linux `gc_thresh3` is 1024).
    pub max_entries: usize,
    /// A confirmation is trusted this long (Linux `base_reachable_time` 30 s).
    pub reachable_time: Duration,
    /// An entry not confirmed for this long is removed (Linux `gc_stale_time` 60 s).
    pub stale_time: Duration,
    /// Least time between two requests for one address (Linux `retrans_time` 1 s).
    pub retrans_time: Duration,
    /// Resolution fails after this long (Linux: `mcast_solicit` 3 × 1 s).
    pub resolve_timeout: Duration,
    /// Frames queued per unresolved address. Linux's historical `unres_qlen` of 3 loses
    /// the start of any burst (a client opening several flows at once); today's Linux
    /// bounds the queue by bytes (`unres_qlen_bytes`, about 100 small frames). 32 keeps
    /// bursts whole while `queue_total` still bounds memory.
    pub queue_per_neigh: usize,
    /// Frames queued in total.
    pub queue_total: usize,
    /// Largest frame that may be queued (a GSO frame is up to 64 KiB); larger ones are
    /// dropped while the address resolves.
    pub queue_frame_max: usize,
    /// Global limit on ARP requests asked of the shell.
    pub request_rate: RateLimit,
}

impl Default for NeighConfig {
    fn default() -> Self {
        NeighConfig {
            max_entries: 1024,
            reachable_time: Duration::from_secs(30),
            stale_time: Duration::from_secs(60),
            retrans_time: Duration::from_secs(1),
            resolve_timeout: Duration::from_secs(3),
            queue_per_neigh: 32,
            queue_total: 64,
            queue_frame_max: 65_536 + 18,
            request_rate: RateLimit::new(100, 20),
        }
    }
}

/// The answer to "which MAC has this address on this port?".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NeighLookup {
    /// Known: send to `mac`. With `probe`, also send an ARP request to refresh the entry.
    Known {
        /// The neighbour's MAC.
        mac: MacAddr,
        /// Ask for a refresh now.
        probe: bool,
    },
    /// Being resolved: queue the frame ([`NeighbourCache::enqueue`]); with `probe`, send an
    /// ARP request now.
    Pending {
        /// Send a request now.
        probe: bool,
    },
    /// The table is full of live entries: drop the frame.
    TableFull,
}

/// A queued frame whose neighbour has been resolved (its destination MAC is filled in).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadyFrame {
    /// The port to send it on.
    pub port: PortId,
    /// Its offload metadata.
    pub meta: FrameMeta,
}

/// Running totals.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NeighStats {
    /// Entries that went from incomplete (or absent) to reachable.
    pub resolved: u64,
    /// ARP requests asked of the shell.
    pub requests: u64,
    /// Requests suppressed by the global rate limit.
    pub requests_rate_limited: u64,
    /// Resolutions that timed out.
    pub failed: u64,
    /// Stale entries removed (by `expire` or to make room).
    pub expired: u64,
    /// New destinations refused because the table was full.
    pub table_full: u64,
    /// Frames queued while resolving.
    pub queued: u64,
    /// Frames refused by a full queue (or too large to queue).
    pub queue_full: u64,
    /// Queued frames dropped because their resolution failed or the entry was removed.
    pub queue_dropped: u64,
    /// Queued frames released after resolution.
    pub released: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Incomplete { started: Timestamp },
    Reachable { mac: MacAddr, confirmed: Timestamp },
    Static { mac: MacAddr },
}

#[derive(Clone, Debug)]
struct Entry {
    key: u64,
    state: State,
    last_probe: Option<Timestamp>,
    queue_head: u32,
    queue_tail: u32,
    queued: u32,
    live: bool,
}

#[derive(Clone, Debug)]
struct QueueSlot {
    buf: Vec<u8>,
    meta: FrameMeta,
    port: PortId,
    next: u32,
}

impl QueueSlot {
    const EMPTY: QueueSlot = QueueSlot {
        buf: Vec::new(),
        meta: FrameMeta {
            gso: None,
            csum_partial: false,
            data_validated: false,
        },
        port: PortId(0),
        next: NIL,
    };
}

fn key(port: PortId, ip: Ipv4Addr) -> u64 {
    (u64::from(port.0) << 32) | u64::from(u32::from(ip))
}

fn key_port(k: u64) -> PortId {
    PortId((k >> 32) as u16)
}

/// A row of [`NeighbourCache::entries`], for `domnet neigh show`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NeighRow {
    /// Port.
    pub port: PortId,
    /// Address.
    pub ip: Ipv4Addr,
    /// MAC, if known.
    pub mac: Option<MacAddr>,
    /// Configured entry.
    pub is_static: bool,
}

/// The cache. Single-threaded; the core that owns it passes time in.
#[derive(Debug, Clone)]
pub struct NeighbourCache {
    config: NeighConfig,
    map: HashMap<u64, u32, RandomState>,
    entries: Vec<Entry>,
    free: Vec<u32>,
    cursor: usize,
    slots: Vec<QueueSlot>,
    free_slots: Vec<u32>,
    ready: VecDeque<(u32, MacAddr)>,
    bucket: TokenBucket,
    stats: NeighStats,
}

impl NeighbourCache {
    /// An empty cache; entry and queue storage is reserved up front.
    pub fn new(config: NeighConfig) -> Self {
        let max = config.max_entries.max(1);
        let qt = config.queue_total;
        NeighbourCache {
            config,
            map: HashMap::with_capacity_and_hasher(max, RandomState::default()),
            entries: Vec::with_capacity(max),
            free: Vec::with_capacity(max),
            cursor: 0,
            slots: (0..qt).map(|_| QueueSlot::EMPTY).collect(),
            free_slots: (0..qt as u32).rev().collect(),
            ready: VecDeque::with_capacity(qt),
            bucket: TokenBucket::new(config.request_rate),
            stats: NeighStats::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &NeighConfig {
        &self.config
    }

    /// Running totals.
    pub fn stats(&self) -> &NeighStats {
        &self.stats
    }

    /// Live entries.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// No entries.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Every entry, for listings.
    pub fn entries(&self) -> impl Iterator<Item = NeighRow> + '_ {
        self.entries.iter().filter(|e| e.live).map(|e| {
            let (mac, is_static) = match e.state {
                State::Incomplete { .. } => (None, false),
                State::Reachable { mac, .. } => (Some(mac), false),
                State::Static { mac } => (Some(mac), true),
            };
            NeighRow {
                port: key_port(e.key),
                ip: Ipv4Addr::from(e.key as u32),
                mac,
                is_static,
            }
        })
    }

    /// The MAC known for `ip` on `port`, without side effects.
    pub fn peek(&self, port: PortId, ip: Ipv4Addr) -> Option<MacAddr> {
        let idx = *self.map.get(&key(port, ip))?;
        match self.entries.get(idx as usize)?.state {
            State::Reachable { mac, .. } | State::Static { mac } => Some(mac),
            State::Incomplete { .. } => None,
        }
    }

    fn may_probe(&mut self, idx: usize, now: Timestamp) -> bool {
        let retrans = self.config.retrans_time;
        let Some(e) = self.entries.get_mut(idx) else {
            return false;
        };
        if e.last_probe
            .is_some_and(|t| now.saturating_since(t) < retrans)
        {
            return false;
        }
        if !self.bucket.try_take(now) {
            self.stats.requests_rate_limited += 1;
            return false;
        }
        e.last_probe = Some(now);
        self.stats.requests += 1;
        true
    }

    /// Looks `ip` up on `port`, creating an incomplete entry for an unknown address. The
    /// caller sends an ARP request when the answer says `probe`.
    pub fn lookup(&mut self, port: PortId, ip: Ipv4Addr, now: Timestamp) -> NeighLookup {
        let k = key(port, ip);
        if let Some(&idx) = self.map.get(&k) {
            let idx = idx as usize;
            let Some(e) = self.entries.get(idx) else {
                return NeighLookup::TableFull;
            };
            return match e.state {
                State::Static { mac } => NeighLookup::Known { mac, probe: false },
                State::Reachable { mac, confirmed } => {
                    let fresh = now.saturating_since(confirmed) < self.config.reachable_time;
                    let probe = !fresh && self.may_probe(idx, now);
                    NeighLookup::Known { mac, probe }
                }
                State::Incomplete { .. } => NeighLookup::Pending {
                    probe: self.may_probe(idx, now),
                },
            };
        }
        match self.insert(k, State::Incomplete { started: now }, now) {
            Some(idx) => NeighLookup::Pending {
                probe: self.may_probe(idx, now),
            },
            None => {
                self.stats.table_full += 1;
                NeighLookup::TableFull
            }
        }
    }

    fn is_evictable(&self, e: &Entry, now: Timestamp) -> bool {
        match e.state {
            State::Static { .. } => false,
            State::Reachable { confirmed, .. } => {
                now.saturating_since(confirmed) >= self.config.reachable_time
            }
            State::Incomplete { started } => {
                now.saturating_since(started) >= self.config.resolve_timeout
            }
        }
    }

    fn insert(&mut self, k: u64, state: State, now: Timestamp) -> Option<usize> {
        if self.map.len() >= self.config.max_entries.max(1) {
            let n = self.entries.len();
            let victim = (0..EVICT_SCAN.min(n))
                .map(|i| (self.cursor + i) % n)
                .find(|&i| {
                    self.entries
                        .get(i)
                        .is_some_and(|e| e.live && self.is_evictable(e, now))
                })?;
            self.cursor = (victim + 1) % n;
            self.stats.expired += 1;
            self.remove_idx(victim, &mut |_| {});
        }
        let entry = Entry {
            key: k,
            state,
            last_probe: None,
            queue_head: NIL,
            queue_tail: NIL,
            queued: 0,
            live: true,
        };
        let idx = match self.free.pop() {
            Some(i) => {
                let i = i as usize;
                if let Some(slot) = self.entries.get_mut(i) {
                    *slot = entry;
                }
                i
            }
            None => {
                self.entries.push(entry);
                self.entries.len() - 1
            }
        };
        self.map.insert(k, idx as u32);
        Some(idx)
    }

    /// Queues a frame for `ip` on `port`, whose lookup answered `Pending`. The frame is
    /// copied; `false` (counted) if the address has no incomplete entry, its queue or the
    /// total queue is full, or the frame is larger than `queue_frame_max`.
    pub fn enqueue(&mut self, port: PortId, ip: Ipv4Addr, frame: &[u8], meta: FrameMeta) -> bool {
        let ok = self.try_enqueue(port, ip, frame, meta);
        if ok {
            self.stats.queued += 1;
        } else {
            self.stats.queue_full += 1;
        }
        ok
    }

    fn try_enqueue(&mut self, port: PortId, ip: Ipv4Addr, frame: &[u8], meta: FrameMeta) -> bool {
        if frame.len() > self.config.queue_frame_max {
            return false;
        }
        let Some(&idx) = self.map.get(&key(port, ip)) else {
            return false;
        };
        let per = self.config.queue_per_neigh;
        let Some(e) = self.entries.get(idx as usize) else {
            return false;
        };
        if !matches!(e.state, State::Incomplete { .. }) || e.queued as usize >= per {
            return false;
        }
        let tail = e.queue_tail;
        let Some(s) = self.free_slots.pop() else {
            return false;
        };
        if let Some(slot) = self.slots.get_mut(s as usize) {
            slot.buf.clear();
            slot.buf.extend_from_slice(frame);
            slot.meta = meta;
            slot.port = port;
            slot.next = NIL;
        }
        if tail != NIL {
            if let Some(t) = self.slots.get_mut(tail as usize) {
                t.next = s;
            }
        }
        if let Some(e) = self.entries.get_mut(idx as usize) {
            if e.queue_head == NIL {
                e.queue_head = s;
            }
            e.queue_tail = s;
            e.queued += 1;
        }
        true
    }

    /// Records that `ip` is at `mac` on `port` (an ARP reply, or a request addressed to
    /// us). Existing non-static entries are updated; a new entry is made only with
    /// `create` (Linux creates entries for ARP addressed to itself, and updates others
    /// only when it already has them). Frames queued on an incomplete entry become ready.
    pub fn confirm(
        &mut self,
        port: PortId,
        ip: Ipv4Addr,
        mac: MacAddr,
        now: Timestamp,
        create: bool,
    ) {
        if !mac.is_valid_unicast() || ip.is_unspecified() {
            return;
        }
        let k = key(port, ip);
        let reachable = State::Reachable {
            mac,
            confirmed: now,
        };
        let idx = match self.map.get(&k) {
            Some(&i) => i as usize,
            None => {
                if create && self.insert(k, reachable, now).is_some() {
                    self.stats.resolved += 1;
                }
                return;
            }
        };
        let Some(e) = self.entries.get_mut(idx) else {
            return;
        };
        match e.state {
            State::Static { .. } => {}
            State::Reachable { .. } => e.state = reachable,
            State::Incomplete { .. } => {
                e.state = reachable;
                self.stats.resolved += 1;
                let mut s = e.queue_head;
                e.queue_head = NIL;
                e.queue_tail = NIL;
                e.queued = 0;
                while s != NIL {
                    let next = self.slots.get(s as usize).map_or(NIL, |q| q.next);
                    self.ready.push_back((s, mac));
                    s = next;
                }
            }
        }
    }

    /// Adds or replaces a configured entry (never aged, never changed by ARP).
    pub fn set_static(&mut self, port: PortId, ip: Ipv4Addr, mac: MacAddr, now: Timestamp) {
        let k = key(port, ip);
        if let Some(&idx) = self.map.get(&k) {
            // Release anything queued on a previously incomplete entry.
            self.confirm(port, ip, mac, now, false);
            if let Some(e) = self.entries.get_mut(idx as usize) {
                e.state = State::Static { mac };
            }
        } else {
            // A static entry may always be added: make room past the limit if needed.
            let entry = Entry {
                key: k,
                state: State::Static { mac },
                last_probe: None,
                queue_head: NIL,
                queue_tail: NIL,
                queued: 0,
                live: true,
            };
            let idx = match self.free.pop() {
                Some(i) => {
                    if let Some(slot) = self.entries.get_mut(i as usize) {
                        *slot = entry;
                    }
                    i
                }
                None => {
                    self.entries.push(entry);
                    (self.entries.len() - 1) as u32
                }
            };
            self.map.insert(k, idx);
        }
    }

    /// Removes the entry for `ip` on `port`; frames queued on it are dropped and reported
    /// to `dropped`.
    pub fn remove(&mut self, port: PortId, ip: Ipv4Addr, dropped: &mut dyn FnMut(PortId)) {
        if let Some(&idx) = self.map.get(&key(port, ip)) {
            self.remove_idx(idx as usize, dropped);
        }
    }

    /// Removes every entry of `port` (the port went away), and its ready frames.
    pub fn remove_port(&mut self, port: PortId, dropped: &mut dyn FnMut(PortId)) {
        for i in 0..self.entries.len() {
            if self
                .entries
                .get(i)
                .is_some_and(|e| e.live && key_port(e.key) == port)
            {
                self.remove_idx(i, dropped);
            }
        }
        let mut kept = VecDeque::with_capacity(self.ready.capacity());
        while let Some((s, mac)) = self.ready.pop_front() {
            if self.slots.get(s as usize).is_some_and(|q| q.port == port) {
                self.free_slots.push(s);
                self.stats.queue_dropped += 1;
                dropped(port);
            } else {
                kept.push_back((s, mac));
            }
        }
        self.ready = kept;
    }

    fn remove_idx(&mut self, idx: usize, dropped: &mut dyn FnMut(PortId)) {
        let Some(e) = self.entries.get_mut(idx) else {
            return;
        };
        if !e.live {
            return;
        }
        e.live = false;
        let k = e.key;
        let mut s = e.queue_head;
        e.queue_head = NIL;
        e.queue_tail = NIL;
        e.queued = 0;
        self.map.remove(&k);
        self.free.push(idx as u32);
        while s != NIL {
            let next = self.slots.get(s as usize).map_or(NIL, |q| q.next);
            self.free_slots.push(s);
            self.stats.queue_dropped += 1;
            dropped(key_port(k));
            s = next;
        }
    }

    /// Whether [`pop_ready`](Self::pop_ready) has something.
    pub fn has_ready(&self) -> bool {
        !self.ready.is_empty()
    }

    /// Hands the next released frame (destination MAC filled in) to `f` and frees its
    /// slot; `None` when nothing is ready.
    pub fn pop_ready<R>(&mut self, f: impl FnOnce(ReadyFrame, &[u8]) -> R) -> Option<R> {
        let (s, mac) = self.ready.pop_front()?;
        self.free_slots.push(s);
        let slot = self.slots.get_mut(s as usize)?;
        if let Some(dst) = slot.buf.get_mut(0..6) {
            dst.copy_from_slice(&mac.0);
        }
        self.stats.released += 1;
        let rf = ReadyFrame {
            port: slot.port,
            meta: slot.meta,
        };
        Some(f(rf, &slot.buf))
    }

    /// Fails incomplete entries past `resolve_timeout` (their queued frames are reported
    /// to `dropped`, one call per frame) and removes entries unconfirmed for `stale_time`.
    /// Examines at most `budget` slots, continuing where the previous call stopped.
    /// Returns the number of entries removed.
    pub fn expire(
        &mut self,
        now: Timestamp,
        budget: usize,
        dropped: &mut dyn FnMut(PortId),
    ) -> usize {
        let n = self.entries.len();
        if n == 0 {
            return 0;
        }
        let mut removed = 0;
        for _ in 0..budget.min(n) {
            self.cursor %= n;
            let i = self.cursor;
            self.cursor += 1;
            let Some(e) = self.entries.get(i) else {
                continue;
            };
            if !e.live {
                continue;
            }
            let gone = match e.state {
                State::Static { .. } => false,
                State::Incomplete { started } => {
                    let dead = now.saturating_since(started) >= self.config.resolve_timeout;
                    if dead {
                        self.stats.failed += 1;
                    }
                    dead
                }
                State::Reachable { confirmed, .. } => {
                    let dead = now.saturating_since(confirmed) >= self.config.stale_time;
                    if dead {
                        self.stats.expired += 1;
                    }
                    dead
                }
            };
            if gone {
                self.remove_idx(i, dropped);
                removed += 1;
            }
        }
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: PortId = PortId(1);
    const IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
    const MAC: MacAddr = MacAddr([0x52, 0x54, 0, 0, 0, 1]);

    fn t(ms: u64) -> Timestamp {
        Timestamp::from_millis(ms)
    }

    #[test]
    fn resolve_queue_release() {
        let mut c = NeighbourCache::new(NeighConfig::default());
        assert_eq!(c.lookup(P, IP, t(0)), NeighLookup::Pending { probe: true });
        // Per-destination request limit: not again within a second.
        assert_eq!(
            c.lookup(P, IP, t(500)),
            NeighLookup::Pending { probe: false }
        );
        assert_eq!(
            c.lookup(P, IP, t(1000)),
            NeighLookup::Pending { probe: true }
        );
        let per = c.config().queue_per_neigh;
        for i in 0..per as u8 {
            assert!(c.enqueue(P, IP, &[0, 0, 0, 0, 0, 0, i], FrameMeta::default()));
        }
        // Per-destination queue cap.
        assert!(!c.enqueue(P, IP, &[0; 7], FrameMeta::default()));
        assert_eq!(c.stats().queue_full, 1);
        assert!(!c.has_ready());
        c.confirm(P, IP, MAC, t(1200), false);
        assert_eq!(
            c.lookup(P, IP, t(1300)),
            NeighLookup::Known {
                mac: MAC,
                probe: false
            }
        );
        let mut got = Vec::new();
        while let Some(()) = c.pop_ready(|rf, f| {
            assert_eq!(rf.port, P);
            got.push(f.to_vec());
        }) {}
        assert_eq!(got.len(), per);
        for (i, f) in got.iter().enumerate() {
            assert_eq!(&f[..6], &MAC.0, "destination MAC filled in");
            assert_eq!(f[6], i as u8, "FIFO order");
        }
        assert_eq!(c.stats().released, per as u64);
        assert_eq!(c.stats().resolved, 1);
    }

    #[test]
    fn failure_drops_queue_and_stale_refresh() {
        let mut c = NeighbourCache::new(NeighConfig::default());
        c.lookup(P, IP, t(0));
        assert!(c.enqueue(P, IP, &[0; 20], FrameMeta::default()));
        let mut drops = Vec::new();
        assert_eq!(c.expire(t(2999), 100, &mut |p| drops.push(p)), 0);
        assert_eq!(c.expire(t(3000), 100, &mut |p| drops.push(p)), 1);
        assert_eq!(drops, vec![P]);
        assert_eq!(c.stats().failed, 1);
        assert!(c.is_empty());

        // Stale: used but refreshed at most once a second.
        c.confirm(P, IP, MAC, t(10_000), true);
        assert_eq!(
            c.lookup(P, IP, t(39_999)),
            NeighLookup::Known {
                mac: MAC,
                probe: false
            }
        );
        assert_eq!(
            c.lookup(P, IP, t(40_000)),
            NeighLookup::Known {
                mac: MAC,
                probe: true
            }
        );
        assert_eq!(
            c.lookup(P, IP, t(40_500)),
            NeighLookup::Known {
                mac: MAC,
                probe: false
            }
        );
        // Unconfirmed for stale_time: removed.
        assert_eq!(c.expire(t(70_000), 100, &mut |_| {}), 1);
        assert_eq!(c.peek(P, IP), None);
    }

    #[test]
    fn bounded_table_and_static_entries() {
        let mut c = NeighbourCache::new(NeighConfig {
            max_entries: 2,
            ..NeighConfig::default()
        });
        c.set_static(P, IP, MAC, t(0));
        c.confirm(P, IP, MacAddr([2, 0, 0, 0, 0, 9]), t(0), true);
        assert_eq!(
            c.peek(P, IP),
            Some(MAC),
            "ARP never overrides a static entry"
        );
        let a = Ipv4Addr::new(192, 0, 2, 2);
        let b = Ipv4Addr::new(192, 0, 2, 3);
        assert!(matches!(c.lookup(P, a, t(0)), NeighLookup::Pending { .. }));
        // Full of live entries: refused.
        assert_eq!(c.lookup(P, b, t(100)), NeighLookup::TableFull);
        assert_eq!(c.stats().table_full, 1);
        // Once `a` has timed out it can be evicted for `b`.
        assert!(matches!(
            c.lookup(P, b, t(5000)),
            NeighLookup::Pending { .. }
        ));
        assert_eq!(c.len(), 2);
        assert_eq!(c.peek(P, IP), Some(MAC));
        // Removing a port drops its entries.
        c.remove_port(P, &mut |_| {});
        assert!(c.is_empty());
    }

    #[test]
    fn global_request_limit() {
        let mut c = NeighbourCache::new(NeighConfig {
            request_rate: RateLimit::new(1, 2),
            ..NeighConfig::default()
        });
        let probes: Vec<bool> = (0..5u8)
            .map(|i| {
                matches!(
                    c.lookup(P, Ipv4Addr::new(10, 0, 0, i), t(0)),
                    NeighLookup::Pending { probe: true }
                )
            })
            .collect();
        assert_eq!(probes, vec![true, true, false, false, false]);
        assert_eq!(c.stats().requests_rate_limited, 3);
        // Invalid MACs are never learned.
        c.confirm(P, IP, MacAddr::BROADCAST, t(0), true);
        assert_eq!(c.peek(P, IP), None);
    }
}
