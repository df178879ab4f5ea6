//! The lease table: who holds which address until when, plus offers in flight and
//! declined addresses — and the records a shell persists so leases survive a daemon
//! restart (dnsmasq keeps `dnsmasq.leases`; libvirt's leases helper mirrors it).
//!
//! A lease is keyed by the client's MAC (`chaddr`), which anti-spoofing pins to the vif,
//! so a guest holds at most one address per vif however many client identifiers it
//! invents (robustness.md §3 d1). Offers are kept for a short hold so that two clients are
//! not offered one address (RFC 2131 §4.3.1 "the server SHOULD reserve the address");
//! they are not persisted. Every change to a bound lease is also queued as a
//! [`LeaseChange`] for the shell, and [`LeaseRecord`] has a one-line text form
//! (`<expiry-ms> <mac> <ip>`, dnsmasq's order) for the lease file.
//!
//! Times are [`Timestamp`]s on the caller's clock (the datapath's monotonic one). For
//! leases to survive a reboot, the shell writes records rebased to the wall clock
//! ([`LeaseRecord::rebased`]) and rebases them back when it restores them.

use core::fmt;
use core::str::FromStr;
use std::collections::HashMap;
use std::net::Ipv4Addr;

use foldhash::fast::RandomState;

use crate::port::PortId;
use crate::time::Timestamp;
use crate::wire::MacAddr;

/// A persisted binding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LeaseRecord {
    /// Client MAC.
    pub mac: MacAddr,
    /// Address.
    pub ip: Ipv4Addr,
    /// End of the lease.
    pub expires: Timestamp,
}

impl LeaseRecord {
    /// The same lease on another clock: `from_now` and `to_now` are one instant read on
    /// both clocks. A shell whose DHCP server runs on the monotonic clock saves records
    /// rebased to the wall clock and rebases them back after a restart.
    pub fn rebased(self, from_now: Timestamp, to_now: Timestamp) -> LeaseRecord {
        let remaining = self.expires.saturating_since(from_now);
        LeaseRecord {
            expires: to_now + remaining,
            ..self
        }
    }
}

impl fmt::Display for LeaseRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.expires.millis(), self.mac, self.ip)
    }
}

/// The text was not `<expiry-ms> <mac> <ip>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid lease record {0:?}")]
pub struct ParseLeaseError(pub String);

impl FromStr for LeaseRecord {
    type Err = ParseLeaseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseLeaseError(s.to_string());
        let mut it = s.split_whitespace();
        let expires = it
            .next()
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or_else(err)?;
        let mac = it
            .next()
            .and_then(|v| v.parse::<MacAddr>().ok())
            .ok_or_else(err)?;
        let ip = it
            .next()
            .and_then(|v| v.parse::<Ipv4Addr>().ok())
            .ok_or_else(err)?;
        if it.next().is_some() {
            return Err(err());
        }
        Ok(LeaseRecord {
            mac,
            ip,
            expires: Timestamp::from_millis(expires),
        })
    }
}

/// A change to the persisted state, in the order it happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LeaseChange {
    /// A lease was granted or extended.
    Bound(LeaseRecord),
    /// The client released it.
    Released(LeaseRecord),
    /// It ran out.
    Expired(LeaseRecord),
    /// A client declined the address; it is not offered until `until`.
    Declined {
        /// The address.
        ip: Ipv4Addr,
        /// When it becomes usable again.
        until: Timestamp,
    },
}

impl fmt::Display for LeaseChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LeaseChange::Bound(r) => write!(f, "bound {r}"),
            LeaseChange::Released(r) => write!(f, "released {r}"),
            LeaseChange::Expired(r) => write!(f, "expired {r}"),
            LeaseChange::Declined { ip, until } => write!(f, "declined {} {ip}", until.millis()),
        }
    }
}

/// Offered (held briefly, not persisted) or bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LeaseState {
    /// Offered, waiting for the REQUEST.
    Offered,
    /// Bound.
    Bound,
}

/// One entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Lease {
    /// Client MAC.
    pub mac: MacAddr,
    /// Address.
    pub ip: Ipv4Addr,
    /// Offered or bound.
    pub state: LeaseState,
    /// End of the offer hold or of the lease.
    pub expires: Timestamp,
    /// The port it was last seen on (`None` for a lease restored from records).
    pub port: Option<PortId>,
}

impl Lease {
    /// The persisted form.
    pub fn record(&self) -> LeaseRecord {
        LeaseRecord {
            mac: self.mac,
            ip: self.ip,
            expires: self.expires,
        }
    }
}

/// The table. Bounded by the server's caps, which it checks before binding.
#[derive(Clone, Debug)]
pub struct LeaseTable {
    slots: Vec<Option<Lease>>,
    free: Vec<u32>,
    by_mac: HashMap<MacAddr, u32, RandomState>,
    by_ip: HashMap<Ipv4Addr, u32, RandomState>,
    per_port: HashMap<PortId, u32, RandomState>,
    declined: HashMap<Ipv4Addr, Timestamp, RandomState>,
    changes: Vec<LeaseChange>,
    max_changes: usize,
    changes_dropped: u64,
    cursor: usize,
}

impl LeaseTable {
    /// An empty table; at most `max_changes` changes wait for [`take_changes`] (older
    /// ones are dropped and counted — the shell should then rewrite the whole file).
    ///
    /// [`take_changes`]: LeaseTable::take_changes
    pub fn new(max_changes: usize) -> Self {
        LeaseTable {
            slots: Vec::new(),
            free: Vec::new(),
            by_mac: HashMap::with_hasher(RandomState::default()),
            by_ip: HashMap::with_hasher(RandomState::default()),
            per_port: HashMap::with_hasher(RandomState::default()),
            declined: HashMap::with_hasher(RandomState::default()),
            changes: Vec::new(),
            max_changes: max_changes.max(1),
            changes_dropped: 0,
            cursor: 0,
        }
    }

    /// Entries (offers and leases).
    pub fn len(&self) -> usize {
        self.by_mac.len()
    }

    /// No entries.
    pub fn is_empty(&self) -> bool {
        self.by_mac.is_empty()
    }

    /// Entries last seen on `port`.
    pub fn port_count(&self, port: PortId) -> usize {
        self.per_port.get(&port).map_or(0, |&n| n as usize)
    }

    /// The entry of `mac`.
    pub fn by_mac(&self, mac: MacAddr) -> Option<&Lease> {
        let i = *self.by_mac.get(&mac)?;
        self.slots.get(i as usize)?.as_ref()
    }

    /// The entry holding `ip`.
    pub fn by_ip(&self, ip: Ipv4Addr) -> Option<&Lease> {
        let i = *self.by_ip.get(&ip)?;
        self.slots.get(i as usize)?.as_ref()
    }

    /// Every entry.
    pub fn iter(&self) -> impl Iterator<Item = &Lease> + '_ {
        self.slots.iter().flatten()
    }

    /// The bound leases in persisted form (what a lease file holds).
    pub fn records(&self) -> impl Iterator<Item = LeaseRecord> + '_ {
        self.iter()
            .filter(|l| l.state == LeaseState::Bound)
            .map(Lease::record)
    }

    /// Whether `ip` was declined and is still held back at `now`.
    pub fn is_declined(&self, ip: Ipv4Addr, now: Timestamp) -> bool {
        self.declined.get(&ip).is_some_and(|&until| until > now)
    }

    /// Declined addresses held back.
    pub fn declined_count(&self) -> usize {
        self.declined.len()
    }

    fn push_change(&mut self, c: LeaseChange) {
        if self.changes.len() >= self.max_changes {
            self.changes.remove(0);
            self.changes_dropped += 1;
        }
        self.changes.push(c);
    }

    /// Moves the pending changes into `out` (appending).
    pub fn take_changes(&mut self, out: &mut Vec<LeaseChange>) {
        out.append(&mut self.changes);
    }

    /// Changes dropped because nobody took them in time.
    pub fn changes_dropped(&self) -> u64 {
        self.changes_dropped
    }

    /// Inserts or replaces the entry of `lease.mac` (its old address, if different, is
    /// freed). A bound lease is recorded as a change.
    pub fn put(&mut self, lease: Lease) {
        if let Some(&i) = self.by_mac.get(&lease.mac) {
            let old = self.slots.get(i as usize).copied().flatten();
            if let Some(old) = old {
                if old.ip != lease.ip {
                    self.by_ip.remove(&old.ip);
                    self.by_ip.insert(lease.ip, i);
                }
                if old.port != lease.port {
                    self.dec_port(old.port);
                    self.inc_port(lease.port);
                }
            }
            if let Some(s) = self.slots.get_mut(i as usize) {
                *s = Some(lease);
            }
        } else {
            let i = match self.free.pop() {
                Some(i) => {
                    if let Some(s) = self.slots.get_mut(i as usize) {
                        *s = Some(lease);
                    }
                    i
                }
                None => {
                    self.slots.push(Some(lease));
                    (self.slots.len() - 1) as u32
                }
            };
            self.by_mac.insert(lease.mac, i);
            self.by_ip.insert(lease.ip, i);
            self.inc_port(lease.port);
        }
        if lease.state == LeaseState::Bound {
            self.push_change(LeaseChange::Bound(lease.record()));
        }
    }

    fn inc_port(&mut self, p: Option<PortId>) {
        if let Some(p) = p {
            *self.per_port.entry(p).or_insert(0) += 1;
        }
    }

    fn dec_port(&mut self, p: Option<PortId>) {
        if let Some(p) = p {
            if let Some(n) = self.per_port.get_mut(&p) {
                *n -= 1;
                if *n == 0 {
                    self.per_port.remove(&p);
                }
            }
        }
    }

    fn remove_slot(&mut self, i: u32) -> Option<Lease> {
        let l = self.slots.get_mut(i as usize)?.take()?;
        self.by_mac.remove(&l.mac);
        self.by_ip.remove(&l.ip);
        self.dec_port(l.port);
        self.free.push(i);
        Some(l)
    }

    /// Removes the entry of `mac` (a RELEASE, or a withdrawn offer); a bound lease is
    /// recorded as released.
    pub fn remove(&mut self, mac: MacAddr) -> Option<Lease> {
        let i = *self.by_mac.get(&mac)?;
        let l = self.remove_slot(i)?;
        if l.state == LeaseState::Bound {
            self.push_change(LeaseChange::Released(l.record()));
        }
        Some(l)
    }

    /// Removes the entry of `mac` and holds its address back until `until` (DECLINE).
    pub fn decline(&mut self, mac: MacAddr, until: Timestamp, max_declined: usize) {
        let Some(&i) = self.by_mac.get(&mac) else {
            return;
        };
        let Some(l) = self.remove_slot(i) else { return };
        if self.declined.len() < max_declined {
            self.declined.insert(l.ip, until);
            self.push_change(LeaseChange::Declined { ip: l.ip, until });
        }
    }

    /// Removes entries past their end (bound ones recorded as expired) and declined
    /// addresses whose hold is over, examining at most `budget` slots.
    pub fn expire(&mut self, now: Timestamp, budget: usize) -> usize {
        let n = self.slots.len();
        let mut removed = 0;
        for _ in 0..budget.min(n) {
            self.cursor %= n;
            let i = self.cursor;
            self.cursor += 1;
            let gone = self
                .slots
                .get(i)
                .copied()
                .flatten()
                .is_some_and(|l| l.expires <= now);
            if gone {
                if let Some(l) = self.remove_slot(i as u32) {
                    if l.state == LeaseState::Bound {
                        self.push_change(LeaseChange::Expired(l.record()));
                    }
                    removed += 1;
                }
            }
        }
        // Declined holds are few (bounded by the caller's cap): sweep them all.
        self.declined.retain(|_, until| *until > now);
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const M1: MacAddr = MacAddr([0x00, 0x16, 0x3e, 0, 0, 1]);

    #[test]
    fn record_text_round_trip() {
        let r = LeaseRecord {
            mac: M1,
            ip: Ipv4Addr::new(192, 168, 122, 10),
            expires: Timestamp::from_millis(1_700_000_000_000),
        };
        let s = r.to_string();
        assert_eq!(s, "1700000000000 00:16:3e:00:00:01 192.168.122.10");
        assert_eq!(s.parse::<LeaseRecord>(), Ok(r));
        // Monotonic 5 s with 3600 s left -> wall clock, and back after a restart.
        let mono = LeaseRecord {
            expires: Timestamp::from_secs(3605),
            ..r
        };
        let wall = mono.rebased(Timestamp::from_secs(5), Timestamp::from_secs(1_700_000_000));
        assert_eq!(wall.expires, Timestamp::from_secs(1_700_003_600));
        let back = wall.rebased(Timestamp::from_secs(1_700_000_100), Timestamp::from_secs(2));
        assert_eq!(back.expires, Timestamp::from_secs(3502));
        let gone = wall.rebased(Timestamp::from_secs(1_800_000_000), Timestamp::from_secs(2));
        assert_eq!(
            gone.expires,
            Timestamp::from_secs(2),
            "expired leases stay expired"
        );
        for bad in [
            "",
            "1 00:16:3e:00:00:01",
            "x 00:16:3e:00:00:01 1.2.3.4",
            "1 00:16:3e:00:00:01 1.2.3.4 extra",
        ] {
            assert!(bad.parse::<LeaseRecord>().is_err(), "{bad}");
        }
        assert_eq!(
            LeaseChange::Declined {
                ip: r.ip,
                until: Timestamp::from_secs(5)
            }
            .to_string(),
            "declined 5000 192.168.122.10"
        );
    }

    #[test]
    fn put_move_release_expire() {
        let mut t = LeaseTable::new(3);
        let a = Ipv4Addr::new(10, 0, 0, 2);
        let b = Ipv4Addr::new(10, 0, 0, 3);
        let p = Some(PortId(4));
        t.put(Lease {
            mac: M1,
            ip: a,
            state: LeaseState::Offered,
            expires: Timestamp::from_secs(60),
            port: p,
        });
        assert_eq!(t.port_count(PortId(4)), 1);
        let mut ch = Vec::new();
        t.take_changes(&mut ch);
        assert!(ch.is_empty(), "offers are not persisted");
        t.put(Lease {
            mac: M1,
            ip: b,
            state: LeaseState::Bound,
            expires: Timestamp::from_secs(3600),
            port: p,
        });
        assert!(t.by_ip(a).is_none());
        assert_eq!(t.by_ip(b).unwrap().mac, M1);
        assert_eq!(t.len(), 1);
        assert_eq!(t.records().count(), 1);
        assert_eq!(t.expire(Timestamp::from_secs(3599), 10), 0);
        assert_eq!(t.expire(Timestamp::from_secs(3600), 10), 1);
        assert!(t.is_empty());
        assert_eq!(t.port_count(PortId(4)), 0);
        t.take_changes(&mut ch);
        assert!(matches!(
            ch[..],
            [LeaseChange::Bound(_), LeaseChange::Expired(_)]
        ));
        // Change queue bound.
        for i in 0..5u8 {
            t.put(Lease {
                mac: MacAddr([2, 0, 0, 0, 0, i]),
                ip: Ipv4Addr::new(10, 0, 1, i),
                state: LeaseState::Bound,
                expires: Timestamp::from_secs(9),
                port: None,
            });
        }
        assert_eq!(t.changes_dropped(), 2);
        // Decline holds the address back.
        t.decline(MacAddr([2, 0, 0, 0, 0, 1]), Timestamp::from_secs(100), 8);
        assert!(t.is_declined(Ipv4Addr::new(10, 0, 1, 1), Timestamp::from_secs(50)));
        t.expire(Timestamp::from_secs(100), 100);
        assert!(!t.is_declined(Ipv4Addr::new(10, 0, 1, 1), Timestamp::from_secs(100)));
    }
}
