//! The connection table: both directions of every connection in one hash map, bounded
//! in total and per guest, with expiry in bounded steps (robustness.md §3 c1, c4).
//!
//! * Each connection is stored once in a slab and keyed twice, by its original and its
//!   reply tuple (Linux's two `nf_conntrack_tuple_hash` per entry), with a seeded
//!   DoS-resistant hash.
//! * The table holds at most `max_connections`; when full, a new connection may evict an
//!   unassured or expired one found in a short scan (Linux `early_drop`), else it is
//!   refused and counted (`conntrack_full`). Each guest (zone) may hold at most
//!   `max_per_guest`, so one guest cannot starve the others (`conntrack_zone_full`).
//! * Expiry is lazy on lookup and also driven by [`ConnTable::expire`] with a budget,
//!   walking the slab round-robin, so no call does unbounded work.
//!
//! Storage is reserved up front; in steady state nothing allocates.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use foldhash::fast::RandomState;

use super::tcp::{Dir, TcpTrack, Timeouts};
use super::tuple::Tuple;
use crate::counters::DropReason;
use crate::time::Timestamp;

/// Slots examined for an early-drop victim when the table is full.
const EARLY_DROP_SCAN: usize = 16;

/// A handle to a connection; stale once the connection is gone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnId {
    idx: u32,
    gen: u32,
}

/// Why the connection exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConnKind {
    /// A guest's connection masqueraded to the external address (SNAT).
    Masquerade,
    /// An outside connection to a forwarded port (DNAT).
    PortForward,
    /// A guest reaching a forwarded port through the external address (DNAT + SNAT to
    /// the gateway).
    Hairpin,
}

/// Per-protocol tracking state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProtoState {
    /// TCP with its state machine.
    Tcp(TcpTrack),
    /// UDP.
    Udp,
    /// ICMP echo.
    Icmp,
    /// Any other protocol.
    Other,
}

/// One tracked connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conn {
    /// The first packet's tuple, as it arrived.
    pub orig: Tuple,
    /// The tuple replies arrive with.
    pub reply: Tuple,
    /// Why it exists.
    pub kind: ConnKind,
    /// Protocol state.
    pub state: ProtoState,
    /// The guest address it is accounted to.
    pub guest: Ipv4Addr,
    /// A packet was seen in the reply direction.
    pub seen_reply: bool,
    /// TCP: the sequence number just past the original side's SYN, which a reset
    /// refusing the connection must acknowledge (RFC 793: in SYN-SENT a reset is
    /// acceptable only if it acknowledges the SYN).
    pub syn_end: Option<u32>,
    /// When it expires unless refreshed.
    pub expires: Timestamp,
    gen: u32,
    live: bool,
}

impl Conn {
    /// A new connection.
    pub fn new(
        orig: Tuple,
        reply: Tuple,
        kind: ConnKind,
        state: ProtoState,
        guest: Ipv4Addr,
    ) -> Self {
        Conn {
            orig,
            reply,
            kind,
            state,
            guest,
            seen_reply: false,
            syn_end: None,
            expires: Timestamp::ZERO,
            gen: 0,
            live: false,
        }
    }

    /// The tuple of direction `d`.
    pub fn tuple(&self, d: Dir) -> &Tuple {
        match d {
            Dir::Original => &self.orig,
            Dir::Reply => &self.reply,
        }
    }

    /// Established in Linux's sense (`IPS_ASSURED`): early drop spares these. A TCP
    /// connection picked up mid-stream is not, until the far side answers.
    pub fn is_assured(&self) -> bool {
        match self.state {
            ProtoState::Tcp(t) => t.is_assured() && self.seen_reply,
            _ => self.seen_reply,
        }
    }

    /// The timeout its current state earns. A TCP connection nobody answered (picked up
    /// mid-stream) gets SYN_SENT's, not ESTABLISHED's five days.
    pub fn timeout(&self, t: &Timeouts) -> core::time::Duration {
        match self.state {
            ProtoState::Tcp(tcp) if !self.seen_reply => {
                t.tcp(tcp.state).min(t.tcp(crate::nat::TcpState::SynSent))
            }
            ProtoState::Tcp(tcp) => t.tcp(tcp.state),
            ProtoState::Udp if self.seen_reply => t.udp_replied,
            ProtoState::Udp => t.udp_unreplied,
            ProtoState::Icmp => t.icmp,
            ProtoState::Other => t.generic,
        }
    }
}

/// Table counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnTableStats {
    /// Connections created.
    pub created: u64,
    /// Connections removed by timeout (lazily or by `expire`).
    pub expired: u64,
    /// Unassured connections evicted to admit a new one.
    pub early_dropped: u64,
    /// New connections refused: table full.
    pub full: u64,
    /// New connections refused: the guest's share is used up.
    pub zone_full: u64,
    /// New connections refused: a tuple is already in use.
    pub clash: u64,
    /// Connections whose only answer was a reset, removed at once (Linux does the same:
    /// a refused connection holds no entry).
    pub refused: u64,
}

/// The table.
#[derive(Clone, Debug)]
pub struct ConnTable {
    conns: Vec<Conn>,
    free: Vec<u32>,
    map: HashMap<Tuple, u32, RandomState>,
    per_guest: HashMap<Ipv4Addr, u32, RandomState>,
    max: usize,
    max_per_guest: usize,
    cursor: usize,
    stats: ConnTableStats,
}

fn slot(idx: u32, d: Dir) -> u32 {
    (idx << 1) | u32::from(d == Dir::Reply)
}

impl ConnTable {
    /// A table for `max` connections (storage reserved now), at most `max_per_guest` per
    /// guest.
    pub fn new(max: usize, max_per_guest: usize) -> Self {
        let max = max.clamp(1, (u32::MAX >> 2) as usize);
        ConnTable {
            conns: Vec::with_capacity(max),
            free: Vec::with_capacity(max),
            map: HashMap::with_capacity_and_hasher(2 * max, RandomState::default()),
            per_guest: HashMap::with_capacity_and_hasher(256, RandomState::default()),
            max,
            max_per_guest: max_per_guest.max(1),
            cursor: 0,
            stats: ConnTableStats::default(),
        }
    }

    /// Live connections.
    pub fn len(&self) -> usize {
        self.map.len() / 2
    }

    /// No connections.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Capacity.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Counters.
    pub fn stats(&self) -> &ConnTableStats {
        &self.stats
    }

    /// Connections accounted to `guest`.
    pub fn guest_count(&self, guest: Ipv4Addr) -> usize {
        self.per_guest.get(&guest).map_or(0, |&n| n as usize)
    }

    /// Every live connection.
    pub fn iter(&self) -> impl Iterator<Item = &Conn> + '_ {
        self.conns.iter().filter(|c| c.live)
    }

    /// The connection, if the handle is still current.
    pub fn get(&self, id: ConnId) -> Option<&Conn> {
        self.conns
            .get(id.idx as usize)
            .filter(|c| c.live && c.gen == id.gen)
    }

    /// The connection, mutably.
    pub fn get_mut(&mut self, id: ConnId) -> Option<&mut Conn> {
        self.conns
            .get_mut(id.idx as usize)
            .filter(|c| c.live && c.gen == id.gen)
    }

    /// Finds the connection a tuple belongs to and the direction it travels; an expired
    /// connection is removed on the way and not returned.
    pub fn lookup(&mut self, t: &Tuple, now: Timestamp) -> Option<(ConnId, Dir)> {
        let v = *self.map.get(t)?;
        let idx = v >> 1;
        let dir = if v & 1 == 1 {
            Dir::Reply
        } else {
            Dir::Original
        };
        let c = self.conns.get(idx as usize)?;
        if c.expires <= now {
            self.stats.expired += 1;
            self.remove_idx(idx as usize);
            return None;
        }
        Some((ConnId { idx, gen: c.gen }, dir))
    }

    /// Whether `t` is used by a live connection (an expired one is reclaimed).
    pub fn in_use(&mut self, t: &Tuple, now: Timestamp) -> bool {
        self.lookup(t, now).is_some()
    }

    /// Checks that a new connection for `guest` may be admitted, evicting an expired or
    /// unassured one if the table is full.
    pub fn admit(&mut self, guest: Ipv4Addr, now: Timestamp) -> Result<(), DropReason> {
        if self.guest_count(guest) >= self.max_per_guest {
            self.stats.zone_full += 1;
            return Err(DropReason::ConntrackZoneFull);
        }
        if self.len() < self.max {
            return Ok(());
        }
        let n = self.conns.len();
        for i in 0..EARLY_DROP_SCAN.min(n) {
            let idx = (self.cursor + i) % n;
            let Some(c) = self.conns.get(idx) else {
                continue;
            };
            if c.live && (c.expires <= now || !c.is_assured()) {
                if c.expires <= now {
                    self.stats.expired += 1;
                } else {
                    self.stats.early_dropped += 1;
                }
                self.cursor = (idx + 1) % n;
                self.remove_idx(idx);
                return Ok(());
            }
        }
        self.cursor = (self.cursor + EARLY_DROP_SCAN) % n.max(1);
        self.stats.full += 1;
        Err(DropReason::ConntrackFull)
    }

    /// Inserts a connection admitted by [`admit`](Self::admit); refuses (`nat_clash`) if
    /// either tuple is already live, or (`conntrack_full`) if there is no room.
    pub fn insert(&mut self, mut conn: Conn, now: Timestamp) -> Result<ConnId, DropReason> {
        if self.in_use(&conn.orig, now) || self.in_use(&conn.reply, now) || conn.orig == conn.reply
        {
            self.stats.clash += 1;
            return Err(DropReason::NatClash);
        }
        if self.len() >= self.max {
            self.stats.full += 1;
            return Err(DropReason::ConntrackFull);
        }
        conn.live = true;
        let idx = match self.free.pop() {
            Some(i) => {
                let gen = self
                    .conns
                    .get(i as usize)
                    .map_or(0, |c| c.gen.wrapping_add(1));
                conn.gen = gen;
                if let Some(s) = self.conns.get_mut(i as usize) {
                    *s = conn;
                }
                i
            }
            None => {
                self.conns.push(conn);
                (self.conns.len() - 1) as u32
            }
        };
        self.map.insert(conn.orig, slot(idx, Dir::Original));
        self.map.insert(conn.reply, slot(idx, Dir::Reply));
        *self.per_guest.entry(conn.guest).or_insert(0) += 1;
        self.stats.created += 1;
        Ok(ConnId { idx, gen: conn.gen })
    }

    /// Removes a connection whose only answer was a reset (counted as `refused`).
    pub fn remove_refused(&mut self, id: ConnId) {
        if self.get(id).is_some() {
            self.stats.refused += 1;
            self.remove_idx(id.idx as usize);
        }
    }

    /// Removes a connection.
    pub fn remove(&mut self, id: ConnId) {
        if self.get(id).is_some() {
            self.remove_idx(id.idx as usize);
        }
    }

    fn remove_idx(&mut self, idx: usize) {
        let Some(c) = self.conns.get_mut(idx) else {
            return;
        };
        if !c.live {
            return;
        }
        c.live = false;
        let (orig, reply, guest) = (c.orig, c.reply, c.guest);
        self.map.remove(&orig);
        self.map.remove(&reply);
        if let Some(n) = self.per_guest.get_mut(&guest) {
            *n -= 1;
            if *n == 0 {
                self.per_guest.remove(&guest);
            }
        }
        self.free.push(idx as u32);
    }

    /// Removes expired connections, examining at most `budget` slots from where the last
    /// call stopped. Returns how many were removed.
    pub fn expire(&mut self, now: Timestamp, budget: usize) -> usize {
        let n = self.conns.len();
        let mut removed = 0;
        for _ in 0..budget.min(n) {
            self.cursor %= n;
            let idx = self.cursor;
            self.cursor += 1;
            if self
                .conns
                .get(idx)
                .is_some_and(|c| c.live && c.expires <= now)
            {
                self.stats.expired += 1;
                self.remove_idx(idx);
                removed += 1;
            }
        }
        removed
    }

    /// Removes every connection.
    pub fn clear(&mut self) {
        for i in 0..self.conns.len() {
            self.remove_idx(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::IpProtocol;

    fn t(src: u8, sp: u16) -> Tuple {
        Tuple {
            proto: IpProtocol::UDP,
            src: Ipv4Addr::new(10, 0, 0, src),
            src_port: sp,
            dst: Ipv4Addr::new(192, 0, 2, 1),
            dst_port: 53,
        }
    }

    fn conn(src: u8, sp: u16, exp: u64) -> Conn {
        let o = t(src, sp);
        let mut c = Conn::new(
            o,
            Tuple {
                src: o.dst,
                dst: Ipv4Addr::new(198, 51, 100, 1),
                src_port: 53,
                dst_port: sp + u16::from(src) * 1000,
                proto: o.proto,
            },
            ConnKind::Masquerade,
            ProtoState::Udp,
            o.src,
        );
        c.expires = Timestamp::from_secs(exp);
        c
    }

    #[test]
    fn both_directions_and_expiry() {
        let mut tab = ConnTable::new(8, 8);
        let now = Timestamp::ZERO;
        tab.admit(Ipv4Addr::new(10, 0, 0, 1), now).unwrap();
        let c = conn(1, 1000, 30);
        let id = tab.insert(c, now).unwrap();
        assert_eq!(tab.lookup(&c.orig, now), Some((id, Dir::Original)));
        assert_eq!(tab.lookup(&c.reply, now), Some((id, Dir::Reply)));
        assert_eq!(tab.guest_count(c.guest), 1);
        // Same tuple again: clash.
        assert_eq!(tab.insert(c, now), Err(DropReason::NatClash));
        // Lazily expired.
        assert_eq!(tab.lookup(&c.orig, Timestamp::from_secs(30)), None);
        assert!(tab.is_empty());
        assert_eq!(tab.guest_count(c.guest), 0);
        assert!(tab.get(id).is_none(), "stale handle");
        // Budgeted expiry.
        for sp in 0..5 {
            tab.insert(conn(1, sp, 10), now).unwrap();
        }
        assert_eq!(tab.expire(Timestamp::from_secs(10), 2), 2);
        assert_eq!(tab.expire(Timestamp::from_secs(10), 100), 3);
        assert_eq!(tab.stats().expired, 6);
    }

    #[test]
    fn limits_and_early_drop() {
        let mut tab = ConnTable::new(4, 3);
        let now = Timestamp::ZERO;
        let g1 = Ipv4Addr::new(10, 0, 0, 1);
        for sp in 0..3 {
            tab.admit(g1, now).unwrap();
            let mut c = conn(1, sp, 100);
            c.seen_reply = true; // assured
            tab.insert(c, now).unwrap();
        }
        assert_eq!(tab.admit(g1, now), Err(DropReason::ConntrackZoneFull));
        let g2 = Ipv4Addr::new(10, 0, 0, 2);
        tab.admit(g2, now).unwrap();
        tab.insert(conn(2, 1, 100), now).unwrap(); // unassured
                                                   // Full: the unassured connection is evicted for a new one.
        let g3 = Ipv4Addr::new(10, 0, 0, 3);
        assert_eq!(tab.admit(g3, now), Ok(()));
        assert_eq!(tab.stats().early_dropped, 1);
        tab.insert(conn(3, 1, 100), now).unwrap();
        // Now everything is... one unassured (g3) left: evicted again; after marking it
        // assured, the table is full for real.
        for c in tab.conns.iter_mut() {
            c.seen_reply = true;
        }
        assert_eq!(tab.admit(g2, now), Err(DropReason::ConntrackFull));
        assert_eq!(tab.stats().full, 1);
        assert_eq!(tab.len(), 4);
    }
}
