//! Fragments through NAT without reassembly (robustness.md §3 b11).
//!
//! Only a datagram's first fragment carries ports, but NAT must rewrite the addresses of
//! every fragment. Instead of reassembling (OVS `ipf`, Linux defrag), the first fragment
//! is translated like any packet — its L4 checksum covers the whole datagram and the
//! incremental update stays exact — and remembered by (source, destination, protocol,
//! IP id); later fragments with the same key get the same address rewrite. A fragment
//! arriving before its first one has no known connection and is dropped
//! (`fragment_no_flow`). Memory is a fixed ring of entries with a timeout, like the
//! bounded fragment lists of OVS (1000 by default).

use core::time::Duration;
use std::collections::HashMap;
use std::net::Ipv4Addr;

use foldhash::fast::RandomState;

use super::conntrack::ConnId;
use super::tcp::Dir;
use crate::time::Timestamp;
use crate::wire::IpProtocol;

/// What identifies the fragments of one datagram (RFC 791).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FragKey {
    /// Source as received.
    pub src: Ipv4Addr,
    /// Destination as received.
    pub dst: Ipv4Addr,
    /// Protocol.
    pub proto: IpProtocol,
    /// Identification.
    pub ident: u16,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    key: FragKey,
    conn: ConnId,
    dir: Dir,
    expires: Timestamp,
    live: bool,
}

/// The ring of recently seen first fragments.
#[derive(Clone, Debug)]
pub struct FragTrack {
    ring: Vec<Option<Entry>>,
    map: HashMap<FragKey, u32, RandomState>,
    next: usize,
    timeout: Duration,
}

impl FragTrack {
    /// Room for `capacity` datagrams in flight, each remembered for `timeout` (Linux
    /// `ipfrag_time` is 30 s).
    pub fn new(capacity: usize, timeout: Duration) -> Self {
        let capacity = capacity.max(1);
        FragTrack {
            ring: vec![None; capacity],
            map: HashMap::with_capacity_and_hasher(capacity, RandomState::default()),
            next: 0,
            timeout,
        }
    }

    /// Remembers a first fragment's connection, overwriting the oldest entry when full.
    pub fn insert(&mut self, key: FragKey, conn: ConnId, dir: Dir, now: Timestamp) {
        let entry = Entry {
            key,
            conn,
            dir,
            expires: now + self.timeout,
            live: true,
        };
        if let Some(&i) = self.map.get(&key) {
            if let Some(slot) = self.ring.get_mut(i as usize) {
                *slot = Some(entry);
            }
            return;
        }
        let i = self.next % self.ring.len();
        self.next = i + 1;
        if let Some(Some(old)) = self.ring.get(i) {
            if old.live {
                self.map.remove(&old.key);
            }
        }
        if let Some(slot) = self.ring.get_mut(i) {
            *slot = Some(entry);
        }
        self.map.insert(key, i as u32);
    }

    /// The connection and direction of a later fragment, if its first one was seen.
    pub fn lookup(&mut self, key: &FragKey, now: Timestamp) -> Option<(ConnId, Dir)> {
        let i = *self.map.get(key)? as usize;
        let e = (*self.ring.get(i)?)?;
        if e.expires <= now {
            self.map.remove(key);
            if let Some(slot) = self.ring.get_mut(i) {
                *slot = None;
            }
            return None;
        }
        Some((e.conn, e.dir))
    }

    /// Datagrams remembered.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// None remembered.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}
