//! The MAC learning table (forwarding database).
//!
//! Modelled on OVS `lib/mac-learning.c` (ecosystem.md §B6, §D.2; robustness.md §3 b8):
//! entries keyed by (MAC, VLAN), learned or static; learned entries age out after an idle
//! time (default 300 s); the table is bounded (default 8192) and, when full, evicts the
//! least-recently-used entry of the port holding the most learned entries, so a port
//! flooding random source MACs only ever evicts its own entries once it is the largest.
//! Each port may also have its own cap. A gratuitous ARP locks its entry against
//! gratuitous-ARP moves for 5 s (OVS `MAC_GRAT_ARP_LOCK_TIME`).
//!
//! Every operation on the forwarding path is O(1): a hash lookup keyed by a seeded
//! DoS-resistant hash (`foldhash`, like Linux's salted `fdb_salt`), two intrusive LRU
//! lists (one global, ordered by last use, for aging; one per port for fair eviction), and
//! an indexed max-heap of ports by learned count (O(log ports) when a count changes).
//! Time is passed in; the table never reads a clock.

use core::time::Duration;
use std::collections::HashMap;

use foldhash::fast::RandomState;

use crate::port::PortId;
use crate::time::Timestamp;
use crate::wire::{MacAddr, VlanId};

/// OVS `MAC_ENTRY_DEFAULT_IDLE_TIME`, Linux `BR_DEFAULT_AGEING_TIME`.
pub const DEFAULT_AGING: Duration = Duration::from_secs(300);
/// OVS `MAC_DEFAULT_MAX`.
pub const DEFAULT_MAX_ENTRIES: usize = 8192;
/// OVS `MAC_GRAT_ARP_LOCK_TIME`.
pub const DEFAULT_GARP_LOCK: Duration = Duration::from_secs(5);
/// A learned entry's position and timestamp are refreshed at most this often, so a busy
/// flow does not rewrite the LRU links on every frame. Aging is exact to within this.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(1);

const NIL: u32 = u32::MAX;

/// Table limits and timers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FdbConfig {
    /// Idle time after which a learned entry expires. `Duration::ZERO` disables learning
    /// altogether, so unknown unicast is always flooded; static entries still apply. This
    /// is Linux's meaning of `ageing_time 0` ("some users want to always flood").
    pub aging: Duration,
    /// Most entries (learned + static) the table holds.
    pub max_entries: usize,
    /// Default most learned entries per port (overridable per port); when a port is at
    /// its cap, learning a new MAC there evicts that port's own LRU entry.
    pub max_per_port: usize,
    /// How long a gratuitous ARP locks its entry against gratuitous-ARP moves; zero
    /// disables the lock.
    pub garp_lock: Duration,
}

impl Default for FdbConfig {
    fn default() -> Self {
        FdbConfig {
            aging: DEFAULT_AGING,
            max_entries: DEFAULT_MAX_ENTRIES,
            max_per_port: DEFAULT_MAX_ENTRIES,
            garp_lock: DEFAULT_GARP_LOCK,
        }
    }
}

/// Running totals, named after OVS `mac_learning_*` coverage counters and `fdb/stats-show`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FdbStats {
    /// New learned entries.
    pub learned: u64,
    /// Learned entries removed by aging.
    pub expired: u64,
    /// Learned entries removed to make room (global fair eviction or a port cap).
    pub evicted: u64,
    /// Learned entries that moved to another port.
    pub moved: u64,
    /// Moves refused because the MAC is static on another port.
    pub static_move_refused: u64,
    /// Gratuitous-ARP moves refused while the entry was locked.
    pub garp_lock_refused: u64,
    /// New MACs not learned because nothing could be evicted (the table is all static,
    /// or the port's cap is 0).
    pub refused: u64,
}

/// What a call to [`Fdb::learn`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LearnOutcome {
    /// A new entry was created.
    Learned,
    /// The entry already pointed at this port (its age was reset).
    Refreshed,
    /// The entry moved from another port.
    Moved {
        /// The port the MAC was on.
        from: PortId,
    },
    /// The MAC is static (on this or another port); the table is unchanged.
    Static,
    /// A gratuitous ARP tried to move a locked entry; refused.
    GarpLocked,
    /// No room and nothing evictable.
    Refused,
    /// Group or all-zero MAC: never learned (robustness.md §3 b9).
    NotLearnable,
    /// Aging is zero: learning is disabled.
    Disabled,
}

/// Control-plane errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FdbError {
    /// Static entries must be valid unicast MACs.
    #[error("{0} is not a unicast MAC address")]
    NotUnicast(MacAddr),
    /// The table is full of static entries.
    #[error("MAC table full ({0} entries)")]
    TableFull(usize),
}

/// One row of `fdb show`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FdbRow {
    /// The MAC.
    pub mac: MacAddr,
    /// The VLAN it was learned on.
    pub vlan: VlanId,
    /// The port it forwards to.
    pub port: PortId,
    /// Time since last seen (zero for static entries).
    pub age: Duration,
    /// Configured rather than learned; never ages or moves.
    pub is_static: bool,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    key: u64,
    port: PortId,
    is_static: bool,
    last_seen: Timestamp,
    garp_lock_until: Timestamp,
    /// Global aging list (learned entries only), oldest at the head.
    g_prev: u32,
    g_next: u32,
    /// The port's learned or static list.
    p_prev: u32,
    p_next: u32,
}

#[derive(Clone, Copy, Debug)]
struct List {
    head: u32,
    tail: u32,
}

impl List {
    const EMPTY: List = List {
        head: NIL,
        tail: NIL,
    };
}

#[derive(Clone, Copy, Debug)]
struct PortSlot {
    learned: List,
    statics: List,
    learned_count: u32,
    static_count: u32,
    limit: Option<u32>,
    heap_pos: u32,
}

impl PortSlot {
    const EMPTY: PortSlot = PortSlot {
        learned: List::EMPTY,
        statics: List::EMPTY,
        learned_count: 0,
        static_count: 0,
        limit: None,
        heap_pos: NIL,
    };
}

fn pack(mac: MacAddr, vlan: VlanId) -> u64 {
    (mac.to_u64() << 12) | u64::from(vlan.get())
}

fn unpack(key: u64) -> (MacAddr, VlanId) {
    (
        MacAddr::from_u64(key >> 12),
        VlanId::from_tci((key & 0xfff) as u16),
    )
}

fn clamp_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The MAC learning table. Single-threaded: the datapath shell owns it.
#[derive(Debug, Clone)]
pub struct Fdb {
    config: FdbConfig,
    map: HashMap<u64, u32, RandomState>,
    entries: Vec<Entry>,
    free: Vec<u32>,
    aging_list: List,
    ports: Vec<PortSlot>,
    /// Max-heap of ports with learned entries, keyed by learned count.
    heap: Vec<PortId>,
    learned: usize,
    statics: usize,
    /// Latest time seen; keeps the aging list sorted even if a caller's clock steps back.
    clock: Timestamp,
    stats: FdbStats,
}

impl Default for Fdb {
    fn default() -> Self {
        Fdb::new(FdbConfig::default())
    }
}

impl Fdb {
    /// An empty table. A `max_entries` of 0 is raised to 1.
    pub fn new(mut config: FdbConfig) -> Self {
        config.max_entries = config.max_entries.max(1);
        Fdb {
            config,
            map: HashMap::with_capacity_and_hasher(
                config.max_entries.min(DEFAULT_MAX_ENTRIES),
                RandomState::default(),
            ),
            entries: Vec::new(),
            free: Vec::new(),
            aging_list: List::EMPTY,
            ports: Vec::new(),
            heap: Vec::new(),
            learned: 0,
            statics: 0,
            clock: Timestamp::ZERO,
            stats: FdbStats::default(),
        }
    }

    /// The current configuration.
    pub fn config(&self) -> &FdbConfig {
        &self.config
    }

    /// Number of entries (learned + static).
    pub fn len(&self) -> usize {
        self.learned + self.statics
    }

    /// The table has no entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of learned entries.
    pub fn learned_len(&self) -> usize {
        self.learned
    }

    /// Number of static entries.
    pub fn static_len(&self) -> usize {
        self.statics
    }

    /// Learned entries on `port`.
    pub fn port_learned(&self, port: PortId) -> usize {
        self.ports
            .get(port.index())
            .map_or(0, |p| p.learned_count as usize)
    }

    /// Counters since creation or the last [`clear_stats`](Self::clear_stats).
    pub fn stats(&self) -> &FdbStats {
        &self.stats
    }

    /// Resets the counters (OVS `fdb/stats-clear`).
    pub fn clear_stats(&mut self) {
        self.stats = FdbStats::default();
    }

    fn is_expired(&self, e: &Entry, now: Timestamp) -> bool {
        !e.is_static && now.saturating_since(e.last_seen) >= self.config.aging
    }

    /// The port `mac` on `vlan` forwards to, if known and not aged out at `now` (an entry
    /// past its idle time counts as absent even before [`expire`](Self::expire) runs,
    /// like Linux `has_expired`).
    pub fn lookup(&self, mac: MacAddr, vlan: VlanId, now: Timestamp) -> Option<PortId> {
        let &idx = self.map.get(&pack(mac, vlan))?;
        let e = self.entries.get(idx as usize)?;
        if self.is_expired(e, now) {
            None
        } else {
            Some(e.port)
        }
    }

    /// Learns that `mac` on `vlan` was seen as a source on `port` at `now`.
    /// `gratuitous_arp` marks a gratuitous ARP, which sets (and is subject to) the move
    /// lock.
    pub fn learn(
        &mut self,
        mac: MacAddr,
        vlan: VlanId,
        port: PortId,
        now: Timestamp,
        gratuitous_arp: bool,
    ) -> LearnOutcome {
        if !mac.is_valid_unicast() {
            return LearnOutcome::NotLearnable;
        }
        if self.config.aging.is_zero() {
            return LearnOutcome::Disabled;
        }
        self.clock = self.clock.max(now);
        let now = self.clock;
        let key = pack(mac, vlan);
        if let Some(&idx) = self.map.get(&key) {
            let Some(&e) = self.entries.get(idx as usize) else {
                return LearnOutcome::Refused;
            };
            if e.is_static {
                if e.port != port {
                    self.stats.static_move_refused += 1;
                }
                return LearnOutcome::Static;
            }
            if self.is_expired(&e, now) {
                self.remove_index(idx);
                self.stats.expired += 1;
                return self.insert_learned(key, port, now, gratuitous_arp);
            }
            if e.port == port {
                self.refresh(idx, now, gratuitous_arp);
                return LearnOutcome::Refreshed;
            }
            if gratuitous_arp && now < e.garp_lock_until {
                self.stats.garp_lock_refused += 1;
                return LearnOutcome::GarpLocked;
            }
            return self.move_entry(idx, port, now, gratuitous_arp);
        }
        self.insert_learned(key, port, now, gratuitous_arp)
    }

    fn lock_until(&self, now: Timestamp, gratuitous_arp: bool, previous: Timestamp) -> Timestamp {
        if gratuitous_arp && !self.config.garp_lock.is_zero() {
            now + self.config.garp_lock
        } else {
            previous
        }
    }

    fn refresh(&mut self, idx: u32, now: Timestamp, gratuitous_arp: bool) {
        let Some(e) = self.entries.get(idx as usize).copied() else {
            return;
        };
        let lock = self.lock_until(now, gratuitous_arp, e.garp_lock_until);
        if now.saturating_since(e.last_seen) >= REFRESH_INTERVAL {
            self.unlink_aging(idx);
            self.unlink_port(idx);
            if let Some(e) = self.entries.get_mut(idx as usize) {
                e.last_seen = now;
            }
            self.link_aging(idx);
            self.link_port(idx);
        }
        if let Some(e) = self.entries.get_mut(idx as usize) {
            e.garp_lock_until = lock;
        }
    }

    fn move_entry(
        &mut self,
        idx: u32,
        port: PortId,
        now: Timestamp,
        gratuitous_arp: bool,
    ) -> LearnOutcome {
        let Some(e) = self.entries.get(idx as usize).copied() else {
            return LearnOutcome::Refused;
        };
        if self.port_limit(port) == 0 {
            self.stats.refused += 1;
            return LearnOutcome::Refused;
        }
        if self.port_learned(port) >= self.port_limit(port) {
            self.evict_from(port);
        }
        let from = e.port;
        self.unlink_aging(idx);
        self.unlink_port(idx);
        self.dec_learned(from);
        let lock = self.lock_until(now, gratuitous_arp, e.garp_lock_until);
        if let Some(e) = self.entries.get_mut(idx as usize) {
            e.port = port;
            e.last_seen = now;
            e.garp_lock_until = lock;
        }
        self.link_aging(idx);
        self.link_port(idx);
        self.inc_learned(port);
        self.stats.moved += 1;
        LearnOutcome::Moved { from }
    }

    fn port_limit(&self, port: PortId) -> usize {
        self.ports
            .get(port.index())
            .and_then(|p| p.limit)
            .map_or(self.config.max_per_port, |l| l as usize)
    }

    /// Frees a slot for one more entry: the port's own LRU entry if `port` is at its cap,
    /// else the fair victim if the table is full. False if nothing could be evicted.
    fn make_room(&mut self, port: Option<PortId>) -> bool {
        if let Some(p) = port {
            let limit = self.port_limit(p);
            if limit == 0 {
                return false;
            }
            if self.port_learned(p) >= limit {
                self.evict_from(p);
            }
        }
        if self.len() >= self.config.max_entries {
            match self.heap.first().copied() {
                Some(victim) => self.evict_from(victim),
                None => return false,
            }
        }
        self.len() < self.config.max_entries
    }

    fn insert_learned(
        &mut self,
        key: u64,
        port: PortId,
        now: Timestamp,
        gratuitous_arp: bool,
    ) -> LearnOutcome {
        if !self.make_room(Some(port)) {
            self.stats.refused += 1;
            return LearnOutcome::Refused;
        }
        let lock = self.lock_until(now, gratuitous_arp, Timestamp::ZERO);
        let idx = self.alloc(Entry {
            key,
            port,
            is_static: false,
            last_seen: now,
            garp_lock_until: lock,
            g_prev: NIL,
            g_next: NIL,
            p_prev: NIL,
            p_next: NIL,
        });
        self.map.insert(key, idx);
        self.link_aging(idx);
        self.link_port(idx);
        self.inc_learned(port);
        self.stats.learned += 1;
        LearnOutcome::Learned
    }

    /// Adds or replaces a static entry (`fdb add`). A learned entry for the same key is
    /// converted. Makes room by fair eviction of a learned entry if the table is full.
    pub fn add_static(&mut self, mac: MacAddr, vlan: VlanId, port: PortId) -> Result<(), FdbError> {
        if !mac.is_valid_unicast() {
            return Err(FdbError::NotUnicast(mac));
        }
        let key = pack(mac, vlan);
        if let Some(&idx) = self.map.get(&key) {
            self.remove_index(idx);
        }
        if !self.make_room(None) {
            return Err(FdbError::TableFull(self.config.max_entries));
        }
        let idx = self.alloc(Entry {
            key,
            port,
            is_static: true,
            last_seen: self.clock,
            garp_lock_until: Timestamp::ZERO,
            g_prev: NIL,
            g_next: NIL,
            p_prev: NIL,
            p_next: NIL,
        });
        self.map.insert(key, idx);
        self.link_port(idx);
        self.statics += 1;
        if let Some(p) = self.port_slot_mut(port) {
            p.static_count += 1;
        }
        Ok(())
    }

    /// Removes the entry for `mac` on `vlan`, learned or static (`fdb del`). Returns
    /// whether there was one.
    pub fn remove(&mut self, mac: MacAddr, vlan: VlanId) -> bool {
        match self.map.get(&pack(mac, vlan)) {
            Some(&idx) => {
                self.remove_index(idx);
                true
            }
            None => false,
        }
    }

    /// Removes all learned entries (`fdb flush`); static entries stay. Returns how many.
    pub fn flush(&mut self) -> usize {
        let mut n = 0;
        while self.aging_list.head != NIL {
            self.remove_index(self.aging_list.head);
            n += 1;
        }
        n
    }

    /// Removes the learned entries on `port` (port disabled, `fdb flush PORT`). Returns
    /// how many.
    pub fn flush_port(&mut self, port: PortId) -> usize {
        let mut n = 0;
        while let Some(head) = self
            .ports
            .get(port.index())
            .map(|p| p.learned.head)
            .filter(|&h| h != NIL)
        {
            self.remove_index(head);
            n += 1;
        }
        n
    }

    /// Removes every entry on `port`, static ones included, and forgets its cap (the port
    /// was deleted). Returns how many entries went.
    pub fn remove_port(&mut self, port: PortId) -> usize {
        let mut n = self.flush_port(port);
        while let Some(head) = self
            .ports
            .get(port.index())
            .map(|p| p.statics.head)
            .filter(|&h| h != NIL)
        {
            self.remove_index(head);
            n += 1;
        }
        if let Some(p) = self.port_slot_mut(port) {
            p.limit = None;
        }
        n
    }

    /// Removes learned entries idle for at least the aging time at `now`, oldest first,
    /// at most `budget` of them (bounded work per call, like OVS `mac_learning_run`).
    /// Returns how many were removed.
    pub fn expire(&mut self, now: Timestamp, budget: usize) -> usize {
        let mut n = 0;
        while n < budget {
            let head = self.aging_list.head;
            let Some(e) = self.entries.get(head as usize) else {
                break;
            };
            if !self.is_expired(e, now) {
                break;
            }
            self.remove_index(head);
            self.stats.expired += 1;
            n += 1;
        }
        n
    }

    /// When the oldest learned entry will expire (for the shell's timer), if any.
    pub fn next_expiry(&self) -> Option<Timestamp> {
        let e = self.entries.get(self.aging_list.head as usize)?;
        Some(e.last_seen + self.config.aging)
    }

    /// Changes the idle time. Zero disables learning and flushes learned entries.
    pub fn set_aging(&mut self, aging: Duration) {
        self.config.aging = aging;
        if aging.is_zero() {
            self.flush();
        }
    }

    /// Changes the gratuitous-ARP lock time.
    pub fn set_garp_lock(&mut self, lock: Duration) {
        self.config.garp_lock = lock;
    }

    /// Changes the table size (minimum 1), evicting fairly until the learned entries fit.
    /// Static entries are never evicted, so they alone may keep the table above the limit.
    pub fn set_max_entries(&mut self, max: usize) {
        self.config.max_entries = max.max(1);
        while self.len() > self.config.max_entries {
            match self.heap.first().copied() {
                Some(victim) => self.evict_from(victim),
                None => break,
            }
        }
    }

    /// Changes the default per-port cap; ports above it shed their LRU entries.
    pub fn set_max_per_port(&mut self, max: usize) {
        self.config.max_per_port = max;
        for p in 0..self.ports.len() {
            self.enforce_port_limit(PortId(p as u16));
        }
    }

    /// Sets `port`'s own cap (`None` = the table default); sheds LRU entries above it.
    pub fn set_port_limit(&mut self, port: PortId, limit: Option<usize>) {
        if let Some(p) = self.port_slot_mut(port) {
            p.limit = limit.map(clamp_u32);
        }
        self.enforce_port_limit(port);
    }

    fn enforce_port_limit(&mut self, port: PortId) {
        let limit = self.port_limit(port);
        while self.port_learned(port) > limit {
            self.evict_from(port);
        }
    }

    /// Rows for `fdb show` at `now`: per port in id order, static entries first, then
    /// learned ones from least to most recently used (entries past their idle time but not
    /// yet expired are included with their age).
    pub fn rows(&self, now: Timestamp) -> FdbRows<'_> {
        FdbRows {
            fdb: self,
            now,
            port: 0,
            in_statics: true,
            cursor: self.ports.first().map_or(NIL, |p| p.statics.head),
        }
    }

    // --- slab and lists -------------------------------------------------------------

    fn alloc(&mut self, e: Entry) -> u32 {
        match self.free.pop() {
            Some(idx) => {
                if let Some(slot) = self.entries.get_mut(idx as usize) {
                    *slot = e;
                }
                idx
            }
            None => {
                self.entries.push(e);
                clamp_u32(self.entries.len() - 1)
            }
        }
    }

    fn port_slot_mut(&mut self, port: PortId) -> Option<&mut PortSlot> {
        let i = port.index();
        if self.ports.len() <= i {
            self.ports.resize(i + 1, PortSlot::EMPTY);
        }
        self.ports.get_mut(i)
    }

    fn remove_index(&mut self, idx: u32) {
        let Some(e) = self.entries.get(idx as usize).copied() else {
            return;
        };
        self.map.remove(&e.key);
        self.unlink_port(idx);
        if e.is_static {
            self.statics -= 1;
            if let Some(p) = self.port_slot_mut(e.port) {
                p.static_count -= 1;
            }
        } else {
            self.unlink_aging(idx);
            self.dec_learned(e.port);
        }
        self.free.push(idx);
    }

    fn evict_from(&mut self, port: PortId) {
        let head = self.ports.get(port.index()).map_or(NIL, |p| p.learned.head);
        if head != NIL {
            self.remove_index(head);
            self.stats.evicted += 1;
        }
    }

    fn link_aging(&mut self, idx: u32) {
        let tail = self.aging_list.tail;
        if let Some(e) = self.entries.get_mut(idx as usize) {
            e.g_prev = tail;
            e.g_next = NIL;
        }
        match self.entries.get_mut(tail as usize) {
            Some(t) => t.g_next = idx,
            None => self.aging_list.head = idx,
        }
        self.aging_list.tail = idx;
    }

    fn unlink_aging(&mut self, idx: u32) {
        let Some(e) = self.entries.get(idx as usize).copied() else {
            return;
        };
        match self.entries.get_mut(e.g_prev as usize) {
            Some(p) => p.g_next = e.g_next,
            None => self.aging_list.head = e.g_next,
        }
        match self.entries.get_mut(e.g_next as usize) {
            Some(n) => n.g_prev = e.g_prev,
            None => self.aging_list.tail = e.g_prev,
        }
    }

    fn port_list_mut(&mut self, port: PortId, is_static: bool) -> Option<&mut List> {
        self.port_slot_mut(port).map(|p| {
            if is_static {
                &mut p.statics
            } else {
                &mut p.learned
            }
        })
    }

    fn link_port(&mut self, idx: u32) {
        let Some(e) = self.entries.get(idx as usize).copied() else {
            return;
        };
        let Some(list) = self.port_list_mut(e.port, e.is_static) else {
            return;
        };
        let tail = list.tail;
        if tail == NIL {
            list.head = idx;
        }
        list.tail = idx;
        if let Some(t) = self.entries.get_mut(tail as usize) {
            t.p_next = idx;
        }
        if let Some(e) = self.entries.get_mut(idx as usize) {
            e.p_prev = tail;
            e.p_next = NIL;
        }
    }

    fn unlink_port(&mut self, idx: u32) {
        let Some(e) = self.entries.get(idx as usize).copied() else {
            return;
        };
        if let Some(p) = self.entries.get_mut(e.p_prev as usize) {
            p.p_next = e.p_next;
        }
        if let Some(n) = self.entries.get_mut(e.p_next as usize) {
            n.p_prev = e.p_prev;
        }
        if let Some(list) = self.port_list_mut(e.port, e.is_static) {
            if list.head == idx {
                list.head = e.p_next;
            }
            if list.tail == idx {
                list.tail = e.p_prev;
            }
        }
    }

    // --- the heap of ports by learned count ------------------------------------------

    fn count_at(&self, heap_index: usize) -> u32 {
        self.heap
            .get(heap_index)
            .and_then(|p| self.ports.get(p.index()))
            .map_or(0, |p| p.learned_count)
    }

    fn heap_swap(&mut self, a: usize, b: usize) {
        self.heap.swap(a, b);
        for i in [a, b] {
            if let Some(&p) = self.heap.get(i) {
                if let Some(slot) = self.ports.get_mut(p.index()) {
                    slot.heap_pos = clamp_u32(i);
                }
            }
        }
    }

    fn sift_up(&mut self, mut i: usize) {
        while i > 0 {
            let parent = (i - 1) / 2;
            if self.count_at(parent) >= self.count_at(i) {
                break;
            }
            self.heap_swap(parent, i);
            i = parent;
        }
    }

    fn sift_down(&mut self, mut i: usize) {
        loop {
            let (l, r) = (2 * i + 1, 2 * i + 2);
            let mut largest = i;
            if l < self.heap.len() && self.count_at(l) > self.count_at(largest) {
                largest = l;
            }
            if r < self.heap.len() && self.count_at(r) > self.count_at(largest) {
                largest = r;
            }
            if largest == i {
                break;
            }
            self.heap_swap(i, largest);
            i = largest;
        }
    }

    fn inc_learned(&mut self, port: PortId) {
        self.learned += 1;
        let len = self.heap.len();
        let Some(slot) = self.port_slot_mut(port) else {
            return;
        };
        slot.learned_count += 1;
        let pos = if slot.heap_pos == NIL {
            slot.heap_pos = clamp_u32(len);
            self.heap.push(port);
            len
        } else {
            slot.heap_pos as usize
        };
        self.sift_up(pos);
    }

    fn dec_learned(&mut self, port: PortId) {
        self.learned -= 1;
        let Some(slot) = self.port_slot_mut(port) else {
            return;
        };
        slot.learned_count -= 1;
        if slot.heap_pos == NIL {
            return;
        }
        let pos = slot.heap_pos as usize;
        if slot.learned_count > 0 {
            self.sift_down(pos);
            return;
        }
        let last = self.heap.len() - 1;
        if pos != last {
            self.heap_swap(pos, last);
        }
        self.heap.pop();
        if let Some(slot) = self.ports.get_mut(port.index()) {
            slot.heap_pos = NIL;
        }
        if pos < self.heap.len() {
            self.sift_down(pos);
            self.sift_up(pos);
        }
    }

    /// Checks every structural invariant (O(n); for tests): map, lists, counts and heap
    /// agree, no list is cyclic, the aging list is sorted by last use, and the table is
    /// within its limit unless static entries alone exceed it.
    pub fn check_invariants(&self) -> Result<(), String> {
        let live = self.entries.len() - self.free.len();
        if live != self.map.len() || live != self.len() {
            return Err(format!(
                "live {live} map {} len {}",
                self.map.len(),
                self.len()
            ));
        }
        if self.len() > self.config.max_entries && self.learned > 0 {
            return Err(format!(
                "{} entries over limit {}",
                self.len(),
                self.config.max_entries
            ));
        }
        for (&key, &idx) in &self.map {
            let e = self.entries.get(idx as usize).ok_or("dangling index")?;
            if e.key != key {
                return Err("map/entry key mismatch".into());
            }
        }
        // Aging list: learned only, sorted, length = learned.
        let (mut n, mut cur, mut prev, mut last) = (0, self.aging_list.head, NIL, Timestamp::ZERO);
        while cur != NIL {
            let e = self.entries.get(cur as usize).ok_or("bad aging link")?;
            if e.is_static || e.g_prev != prev || e.last_seen < last {
                return Err("aging list corrupt or unsorted".into());
            }
            last = e.last_seen;
            prev = cur;
            cur = e.g_next;
            n += 1;
            if n > self.learned {
                return Err("aging list longer than learned count".into());
            }
        }
        if n != self.learned || self.aging_list.tail != prev {
            return Err(format!("aging list {n} vs learned {}", self.learned));
        }
        let mut total_learned = 0;
        for (pi, p) in self.ports.iter().enumerate() {
            for (list, is_static, count) in [
                (p.learned, false, p.learned_count),
                (p.statics, true, p.static_count),
            ] {
                let (mut n, mut cur, mut prev) = (0u32, list.head, NIL);
                while cur != NIL {
                    let e = self.entries.get(cur as usize).ok_or("bad port link")?;
                    if e.port.index() != pi || e.is_static != is_static || e.p_prev != prev {
                        return Err(format!("port {pi} list corrupt"));
                    }
                    prev = cur;
                    cur = e.p_next;
                    n += 1;
                    if n > count {
                        return Err(format!("port {pi} list longer than its count"));
                    }
                }
                if n != count || list.tail != prev {
                    return Err(format!("port {pi} list {n} vs count {count}"));
                }
            }
            if (p.learned_count as usize) > self.port_limit(PortId(pi as u16)) {
                return Err(format!("port {pi} over its cap"));
            }
            total_learned += p.learned_count as usize;
            let in_heap = p.heap_pos != NIL;
            if in_heap != (p.learned_count > 0)
                || (in_heap && self.heap.get(p.heap_pos as usize) != Some(&PortId(pi as u16)))
            {
                return Err(format!("port {pi} heap position wrong"));
            }
        }
        if total_learned != self.learned {
            return Err("per-port learned counts do not add up".into());
        }
        for i in 1..self.heap.len() {
            if self.count_at((i - 1) / 2) < self.count_at(i) {
                return Err("heap order violated".into());
            }
        }
        Ok(())
    }
}

/// Iterator over [`FdbRow`]s; see [`Fdb::rows`].
#[derive(Debug, Clone)]
pub struct FdbRows<'a> {
    fdb: &'a Fdb,
    now: Timestamp,
    port: usize,
    in_statics: bool,
    cursor: u32,
}

impl Iterator for FdbRows<'_> {
    type Item = FdbRow;

    fn next(&mut self) -> Option<FdbRow> {
        loop {
            if let Some(e) = self.fdb.entries.get(self.cursor as usize) {
                self.cursor = e.p_next;
                let (mac, vlan) = unpack(e.key);
                return Some(FdbRow {
                    mac,
                    vlan,
                    port: e.port,
                    age: if e.is_static {
                        Duration::ZERO
                    } else {
                        self.now.saturating_since(e.last_seen)
                    },
                    is_static: e.is_static,
                });
            }
            let slot = self.fdb.ports.get(self.port)?;
            if self.in_statics {
                self.in_statics = false;
                self.cursor = slot.learned.head;
            } else {
                self.port += 1;
                self.in_statics = true;
                self.cursor = self.fdb.ports.get(self.port)?.statics.head;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const V0: VlanId = VlanId::NONE;

    fn mac(n: u32) -> MacAddr {
        let b = n.to_be_bytes();
        MacAddr([0x02, 0x00, b[0], b[1], b[2], b[3]])
    }

    fn t(s: u64) -> Timestamp {
        Timestamp::from_secs(s)
    }

    #[test]
    fn learn_lookup_refresh_move() {
        let mut f = Fdb::default();
        assert_eq!(
            f.learn(mac(1), V0, PortId(1), t(0), false),
            LearnOutcome::Learned
        );
        assert_eq!(f.lookup(mac(1), V0, t(1)), Some(PortId(1)));
        assert_eq!(f.lookup(mac(1), VlanId::new(5).unwrap(), t(1)), None);
        assert_eq!(
            f.learn(mac(1), V0, PortId(1), t(2), false),
            LearnOutcome::Refreshed
        );
        assert_eq!(
            f.learn(mac(1), V0, PortId(2), t(3), false),
            LearnOutcome::Moved { from: PortId(1) }
        );
        assert_eq!(f.lookup(mac(1), V0, t(3)), Some(PortId(2)));
        assert_eq!(f.port_learned(PortId(1)), 0);
        assert_eq!(f.port_learned(PortId(2)), 1);
        assert_eq!(f.stats().moved, 1);
        assert_eq!(f.stats().learned, 1);
        assert_eq!(
            f.learn(MacAddr::BROADCAST, V0, PortId(1), t(3), false),
            LearnOutcome::NotLearnable
        );
        assert_eq!(
            f.learn(MacAddr::ZERO, V0, PortId(1), t(3), false),
            LearnOutcome::NotLearnable
        );
        f.check_invariants().unwrap();
    }

    #[test]
    fn aging_and_expire_budget() {
        let mut f = Fdb::default();
        for i in 0..10 {
            f.learn(mac(i), V0, PortId(1), t(u64::from(i)), false);
        }
        assert_eq!(f.next_expiry(), Some(t(300)));
        // Refresh mac(0) at t=100: it is now the youngest.
        f.learn(mac(0), V0, PortId(1), t(100), false);
        assert_eq!(
            f.lookup(mac(5), V0, t(305)),
            None,
            "aged out before expire()"
        );
        assert_eq!(f.lookup(mac(6), V0, t(305)), Some(PortId(1)));
        assert_eq!(f.expire(t(305), 3), 3);
        assert_eq!(f.expire(t(305), 100), 2);
        assert_eq!(f.len(), 5);
        assert_eq!(f.lookup(mac(0), V0, t(305)), Some(PortId(1)));
        assert_eq!(f.stats().expired, 5);
        assert_eq!(f.next_expiry(), Some(t(306)));
        f.check_invariants().unwrap();
    }

    #[test]
    fn refresh_is_rate_limited_but_aging_exact_within_interval() {
        let mut f = Fdb::default();
        f.learn(mac(1), V0, PortId(1), Timestamp::from_millis(0), false);
        f.learn(mac(1), V0, PortId(1), Timestamp::from_millis(500), false);
        // The 500 ms refresh was skipped: the entry still dates from 0.
        assert_eq!(f.next_expiry(), Some(t(300)));
        f.learn(mac(1), V0, PortId(1), Timestamp::from_millis(1500), false);
        assert_eq!(f.next_expiry(), Some(Timestamp::from_millis(301_500)));
    }

    #[test]
    fn static_entries_never_age_or_move() {
        let mut f = Fdb::default();
        f.add_static(mac(7), V0, PortId(3)).unwrap();
        assert_eq!(
            f.learn(mac(7), V0, PortId(1), t(1), false),
            LearnOutcome::Static
        );
        assert_eq!(f.stats().static_move_refused, 1);
        assert_eq!(f.expire(t(100_000), usize::MAX), 0);
        assert_eq!(f.lookup(mac(7), V0, t(100_000)), Some(PortId(3)));
        assert_eq!(f.flush(), 0);
        assert_eq!(f.len(), 1);
        assert!(f.add_static(MacAddr::BROADCAST, V0, PortId(1)).is_err());
        // A learned entry converts to static.
        f.learn(mac(8), V0, PortId(1), t(1), false);
        f.add_static(mac(8), V0, PortId(2)).unwrap();
        assert_eq!((f.learned_len(), f.static_len()), (0, 2));
        assert!(f.remove(mac(8), V0));
        assert!(!f.remove(mac(8), V0));
        assert_eq!(f.remove_port(PortId(3)), 1);
        assert!(f.is_empty());
        f.check_invariants().unwrap();
    }

    #[test]
    fn fair_eviction_hits_the_biggest_port() {
        // OVS "MAC table overflow fairness": the port with most entries loses its LRU one.
        let mut f = Fdb::new(FdbConfig {
            max_entries: 10,
            ..FdbConfig::default()
        });
        for i in 0..3 {
            f.learn(mac(100 + i), V0, PortId(1), t(0), false);
        }
        for i in 0..2 {
            f.learn(mac(200 + i), V0, PortId(2), t(0), false);
        }
        for i in 0..5 {
            f.learn(mac(300 + i), V0, PortId(3), t(1), false);
        }
        assert_eq!(f.len(), 10);
        // Port 4 floods 16 new MACs.
        for i in 0..16 {
            assert_eq!(
                f.learn(mac(400 + i), V0, PortId(4), t(2), false),
                LearnOutcome::Learned
            );
            f.check_invariants().unwrap();
        }
        assert_eq!(f.len(), 10);
        // Counts level out: the flooder only ever takes from the largest port, so the
        // others keep at least 2 each and the flooder never towers over them.
        let counts: Vec<usize> = (1..=4).map(|p| f.port_learned(PortId(p))).collect();
        assert_eq!(counts.iter().sum::<usize>(), 10);
        assert!(counts[..3].iter().all(|&c| c >= 2), "{counts:?}");
        assert!(counts[3] <= 4, "{counts:?}");
        // The oldest of port 3 went first; its newest survive.
        assert_eq!(f.lookup(mac(300), V0, t(2)), None);
        assert_eq!(f.lookup(mac(304), V0, t(2)), Some(PortId(3)));
        assert_eq!(f.stats().evicted, 16);
    }

    #[test]
    fn per_port_cap_evicts_own_lru_and_zero_refuses() {
        let mut f = Fdb::default();
        f.set_port_limit(PortId(1), Some(2));
        for i in 0..5 {
            f.learn(mac(i), V0, PortId(1), t(u64::from(i)), false);
        }
        assert_eq!(f.port_learned(PortId(1)), 2);
        assert_eq!(f.lookup(mac(4), V0, t(5)), Some(PortId(1)));
        assert_eq!(f.lookup(mac(0), V0, t(5)), None);
        f.set_port_limit(PortId(2), Some(0));
        assert_eq!(
            f.learn(mac(50), V0, PortId(2), t(5), false),
            LearnOutcome::Refused
        );
        assert_eq!(
            f.learn(mac(4), V0, PortId(2), t(5), false),
            LearnOutcome::Refused
        );
        assert_eq!(f.stats().refused, 2);
        f.set_port_limit(PortId(1), Some(1));
        assert_eq!(f.port_learned(PortId(1)), 1);
        f.check_invariants().unwrap();
    }

    #[test]
    fn table_full_of_statics_refuses_learning() {
        let mut f = Fdb::new(FdbConfig {
            max_entries: 2,
            ..FdbConfig::default()
        });
        f.add_static(mac(1), V0, PortId(1)).unwrap();
        f.add_static(mac(2), V0, PortId(1)).unwrap();
        assert_eq!(
            f.learn(mac(3), V0, PortId(2), t(0), false),
            LearnOutcome::Refused
        );
        assert_eq!(
            f.add_static(mac(3), V0, PortId(1)),
            Err(FdbError::TableFull(2))
        );
        f.check_invariants().unwrap();
    }

    #[test]
    fn garp_lock() {
        let mut f = Fdb::default();
        f.learn(mac(1), V0, PortId(1), t(10), true);
        // A reflected gratuitous ARP on another port within 5 s does not move it...
        assert_eq!(
            f.learn(mac(1), V0, PortId(2), t(12), true),
            LearnOutcome::GarpLocked
        );
        assert_eq!(f.stats().garp_lock_refused, 1);
        // ...ordinary traffic does, and so does a gratuitous ARP after the lock.
        assert_eq!(
            f.learn(mac(1), V0, PortId(2), t(13), false),
            LearnOutcome::Moved { from: PortId(1) }
        );
        assert_eq!(
            f.learn(mac(1), V0, PortId(1), t(16), true),
            LearnOutcome::Moved { from: PortId(2) }
        );
    }

    #[test]
    fn aging_zero_disables_learning() {
        let mut f = Fdb::default();
        f.learn(mac(1), V0, PortId(1), t(0), false);
        f.add_static(mac(2), V0, PortId(1)).unwrap();
        f.set_aging(Duration::ZERO);
        assert_eq!(f.learned_len(), 0);
        assert_eq!(
            f.learn(mac(1), V0, PortId(1), t(1), false),
            LearnOutcome::Disabled
        );
        assert_eq!(f.lookup(mac(1), V0, t(1)), None);
        assert_eq!(f.lookup(mac(2), V0, t(1)), Some(PortId(1)));
    }

    #[test]
    fn rows_for_fdb_show() {
        let mut f = Fdb::default();
        f.learn(mac(1), V0, PortId(2), t(0), false);
        f.learn(mac(2), VlanId::new(10).unwrap(), PortId(0), t(5), false);
        f.add_static(mac(3), V0, PortId(2)).unwrap();
        let rows: Vec<FdbRow> = f.rows(t(30)).collect();
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].mac, mac(2));
        assert_eq!(rows[0].vlan.get(), 10);
        assert_eq!(rows[0].age, Duration::from_secs(25));
        assert!(rows[1].is_static && rows[1].port == PortId(2));
        assert_eq!(
            (rows[2].mac, rows[2].age),
            (mac(1), Duration::from_secs(30))
        );
    }

    #[test]
    fn hundred_thousand_random_macs_stay_bounded_and_fair() {
        let mut f = Fdb::default();
        for p in 1..4u16 {
            for i in 0..10 {
                f.learn(mac(u32::from(p) * 1000 + i), V0, PortId(p), t(0), false);
            }
        }
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let start = std::time::Instant::now();
        for _ in 0..100_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let m = MacAddr::from_u64(x & 0xfeff_ffff_ffff); // clear the group bit
            f.learn(m, V0, PortId(9), t(1), false);
        }
        assert!(start.elapsed() < std::time::Duration::from_secs(5));
        assert_eq!(f.len(), DEFAULT_MAX_ENTRIES);
        for p in 1..4u16 {
            assert_eq!(f.port_learned(PortId(p)), 10);
        }
        f.check_invariants().unwrap();
    }

    #[derive(Debug, Clone)]
    enum Op {
        Learn(u8, u8, u64, bool),
        Static(u8, u8),
        Remove(u8),
        Expire(u64, usize),
        FlushPort(u8),
        RemovePort(u8),
        SetMax(usize),
        SetPortLimit(u8, Option<usize>),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            8 => (any::<u8>(), 0u8..6, 0u64..2000, any::<bool>()).prop_map(|(m, p, dt, g)| Op::Learn(m, p, dt, g)),
            1 => (any::<u8>(), 0u8..6).prop_map(|(m, p)| Op::Static(m, p)),
            1 => any::<u8>().prop_map(Op::Remove),
            1 => (0u64..400_000, 0usize..20).prop_map(|(dt, b)| Op::Expire(dt, b)),
            1 => (0u8..6).prop_map(Op::FlushPort),
            1 => (0u8..6).prop_map(Op::RemovePort),
            1 => (1usize..40).prop_map(Op::SetMax),
            1 => (0u8..6, proptest::option::of(0usize..10)).prop_map(|(p, l)| Op::SetPortLimit(p, l)),
        ]
    }

    proptest! {
        /// Any sequence of learn/age/evict/move/static/flush keeps the structure intact and
        /// the table within its limit.
        #[test]
        fn invariants_hold(ops in proptest::collection::vec(op(), 1..200)) {
            let mut f = Fdb::new(FdbConfig { max_entries: 16, max_per_port: 8, ..FdbConfig::default() });
            let mut now = 0u64;
            for op in ops {
                match op {
                    Op::Learn(m, p, dt, g) => {
                        now += dt;
                        let out = f.learn(mac(u32::from(m % 64)), V0, PortId(u16::from(p)), Timestamp::from_millis(now), g);
                        if matches!(out, LearnOutcome::Learned | LearnOutcome::Refreshed | LearnOutcome::Moved { .. }) {
                            prop_assert_eq!(f.lookup(mac(u32::from(m % 64)), V0, Timestamp::from_millis(now)), Some(PortId(u16::from(p))));
                        }
                    }
                    Op::Static(m, p) => { let _ = f.add_static(mac(u32::from(m % 64)), V0, PortId(u16::from(p))); }
                    Op::Remove(m) => { f.remove(mac(u32::from(m % 64)), V0); }
                    Op::Expire(dt, b) => { now += dt; f.expire(Timestamp::from_millis(now), b); }
                    Op::FlushPort(p) => { f.flush_port(PortId(u16::from(p))); }
                    Op::RemovePort(p) => { f.remove_port(PortId(u16::from(p))); }
                    Op::SetMax(n) => f.set_max_entries(n),
                    Op::SetPortLimit(p, l) => f.set_port_limit(PortId(u16::from(p)), l),
                }
                if let Err(e) = f.check_invariants() {
                    return Err(TestCaseError::fail(e));
                }
            }
        }
    }
}
