//! Query forwarding with id remapping and spoof-resistant answer matching.
//!
//! A guest's query is checked ([`check_query`]), given a fresh unpredictable id (RFC
//! 5452 §9.2: the id is the forwarder's main defence against forged answers, so it must
//! not be the guest's id or a counter), remembered in a bounded pending table, and handed
//! to the shell to send to an upstream server. An answer is accepted only if it comes
//! from a configured upstream, carries a pending id, and repeats the query's question
//! (RFC 5452 §3); it then goes back to the guest with the guest's id, from the gateway's
//! address and port 53. Servers are tried in order (dnsmasq `strict-order`): a guest's
//! retransmission of a pending query moves it to the next server. Entries time out after
//! `timeout`; a full table refuses new queries (`dns_unavailable`) rather than growing.
//! An answer larger than the guest's link allows is cut to its header and question with
//! TC set, so the guest retries... over TCP, which this forwarder does not carry (see the
//! module docs): in practice EDNS answers fit a 1500-byte MTU.

use core::hash::{BuildHasher, Hasher};
use core::time::Duration;
use std::collections::HashMap;
use std::hash::DefaultHasher;
use std::net::{Ipv4Addr, SocketAddr};

use foldhash::fast::RandomState;

use super::wire::{self, check_query, parse_question, same_question, DnsHeader};
use crate::counters::DropReason;
use crate::time::Timestamp;
use crate::wire::build::{self, L2Header};
use crate::wire::MacAddr;

/// Longest question kept for matching: a 255-byte name plus type and class.
const QUESTION_CAP: usize = wire::MAX_NAME_LEN + 4;

/// Forwarder settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsConfig {
    /// The address guests send queries to (the gateway).
    pub listen_ip: Ipv4Addr,
    /// The gateway's MAC (replies' source).
    pub listen_mac: MacAddr,
    /// Upstream servers, in order (from dom0's `/etc/resolv.conf`).
    pub upstreams: Vec<SocketAddr>,
    /// Most queries in flight.
    pub max_pending: usize,
    /// How long a query waits for an answer.
    pub timeout: Duration,
    /// Largest UDP payload sent to a guest (its link MTU minus 28).
    pub max_reply: usize,
    /// Secret for id generation; the shell should fill it from `getrandom`.
    pub id_seed: [u64; 2],
}

impl DnsConfig {
    /// Defaults: 1024 pending queries, 10 s timeout, 1472-byte replies, and an id seed
    /// drawn from the process's random hash keys.
    pub fn new(listen_ip: Ipv4Addr, listen_mac: MacAddr, upstreams: Vec<SocketAddr>) -> Self {
        let rs = std::collections::hash_map::RandomState::new();
        DnsConfig {
            listen_ip,
            listen_mac,
            upstreams,
            max_pending: 1024,
            timeout: Duration::from_secs(10),
            max_reply: 1500 - 28,
            id_seed: [rs.hash_one(0u8), rs.hash_one(1u8)],
        }
    }
}

/// Where a guest's query came from (and its answer goes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GuestEndpoint {
    /// The guest's MAC.
    pub mac: MacAddr,
    /// The guest's address.
    pub ip: Ipv4Addr,
    /// The guest's UDP source port.
    pub port: u16,
}

/// A query to send upstream: `out[..len]` to `server`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct UpstreamQuery {
    /// The upstream server.
    pub server: SocketAddr,
    /// Length of the query written into `out`.
    pub len: usize,
}

/// Counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DnsStats {
    /// Queries forwarded for the first time.
    pub forwarded: u64,
    /// Guest retransmissions sent on (to the next server).
    pub retransmitted: u64,
    /// Answers delivered to guests.
    pub answered: u64,
    /// Answers cut to TC because they did not fit the guest's link.
    pub truncated: u64,
    /// Queries refused as malformed.
    pub malformed: u64,
    /// Queries refused: no upstream, or the pending table is full.
    pub unavailable: u64,
    /// Queries that timed out.
    pub timeouts: u64,
    /// Answers that matched nothing (unknown id, wrong source, other question).
    pub unmatched: u64,
}

#[derive(Clone, Copy, Debug)]
struct Pending {
    upstream_id: u16,
    guest: GuestEndpoint,
    guest_id: u16,
    server: usize,
    question: [u8; QUESTION_CAP],
    qlen: usize,
    deadline: Timestamp,
}

impl Pending {
    fn question(&self) -> &[u8] {
        self.question.get(..self.qlen).unwrap_or(&[])
    }
}

type GuestKey = (Ipv4Addr, u16, u16);

/// The forwarder. Single-threaded; the gateway owns it.
#[derive(Clone, Debug)]
pub struct DnsForwarder {
    config: DnsConfig,
    slots: Vec<Option<Pending>>,
    free: Vec<u32>,
    by_id: HashMap<u16, u32, RandomState>,
    by_guest: HashMap<GuestKey, u32, RandomState>,
    cursor: usize,
    counter: u64,
    stats: DnsStats,
}

impl DnsForwarder {
    /// A forwarder with an empty pending table (storage reserved now).
    pub fn new(config: DnsConfig) -> Self {
        let max = config.max_pending.clamp(1, 60_000);
        DnsForwarder {
            slots: vec![None; max],
            free: (0..max as u32).rev().collect(),
            by_id: HashMap::with_capacity_and_hasher(max, RandomState::default()),
            by_guest: HashMap::with_capacity_and_hasher(max, RandomState::default()),
            config,
            cursor: 0,
            counter: 0,
            stats: DnsStats::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &DnsConfig {
        &self.config
    }

    /// Replaces the upstream servers (resolv.conf changed); pending queries are kept.
    pub fn set_upstreams(&mut self, upstreams: Vec<SocketAddr>) {
        self.config.upstreams = upstreams;
    }

    /// Counters.
    pub fn stats(&self) -> &DnsStats {
        &self.stats
    }

    /// Queries in flight.
    pub fn pending(&self) -> usize {
        self.by_id.len()
    }

    fn next_id(&mut self) -> Option<u16> {
        for _ in 0..16 {
            self.counter = self.counter.wrapping_add(1);
            let mut h = DefaultHasher::new();
            h.write_u64(self.config.id_seed[0]);
            h.write_u64(self.config.id_seed[1]);
            h.write_u64(self.counter);
            let id = h.finish() as u16;
            if !self.by_id.contains_key(&id) {
                return Some(id);
            }
        }
        None
    }

    /// Takes a guest's query (the UDP payload it sent to the gateway's port 53) and
    /// writes the upstream query into `out`.
    pub fn query(
        &mut self,
        guest: GuestEndpoint,
        payload: &[u8],
        now: Timestamp,
        out: &mut [u8],
    ) -> Result<UpstreamQuery, DropReason> {
        let Ok((header, q)) = check_query(payload) else {
            self.stats.malformed += 1;
            return Err(DropReason::DnsMalformed);
        };
        let question = q.bytes(payload);
        let n_servers = self.config.upstreams.len();
        if n_servers == 0 || question.len() > QUESTION_CAP || out.len() < payload.len() {
            self.stats.unavailable += 1;
            return Err(DropReason::DnsUnavailable);
        }
        let key = (guest.ip, guest.port, header.id);
        let retrans = self.by_guest.get(&key).copied().and_then(|i| {
            let p = self.slots.get_mut(i as usize)?.as_mut()?;
            (p.question() == question).then_some(p)
        });
        let (upstream_id, server) = if let Some(p) = retrans {
            p.server = (p.server + 1) % n_servers;
            p.deadline = now + self.config.timeout;
            self.stats.retransmitted += 1;
            (p.upstream_id, p.server)
        } else {
            if let Some(i) = self.by_guest.get(&key).copied() {
                self.remove_slot(i as usize);
            }
            let (Some(id), Some(&slot)) = (self.next_id(), self.free.last()) else {
                self.stats.unavailable += 1;
                return Err(DropReason::DnsUnavailable);
            };
            self.free.pop();
            let mut qbuf = [0u8; QUESTION_CAP];
            qbuf[..question.len()].copy_from_slice(question);
            if let Some(s) = self.slots.get_mut(slot as usize) {
                *s = Some(Pending {
                    upstream_id: id,
                    guest,
                    guest_id: header.id,
                    server: 0,
                    question: qbuf,
                    qlen: question.len(),
                    deadline: now + self.config.timeout,
                });
            }
            self.by_id.insert(id, slot);
            self.by_guest.insert(key, slot);
            self.stats.forwarded += 1;
            (id, 0)
        };
        out[..payload.len()].copy_from_slice(payload);
        wire::set_id(out, upstream_id);
        let server = self
            .config
            .upstreams
            .get(server)
            .copied()
            .ok_or(DropReason::DnsUnavailable)?;
        Ok(UpstreamQuery {
            server,
            len: payload.len(),
        })
    }

    fn remove_slot(&mut self, i: usize) -> Option<Pending> {
        let p = self.slots.get_mut(i)?.take()?;
        self.by_id.remove(&p.upstream_id);
        self.by_guest
            .remove(&(p.guest.ip, p.guest.port, p.guest_id));
        self.free.push(i as u32);
        Some(p)
    }

    /// Takes an answer the shell received from `from` (modified in place: its id) and
    /// writes the reply frame for the guest into `out`; returns its length, or `None`
    /// (counted) if the answer matches no pending query.
    pub fn answer(
        &mut self,
        from: SocketAddr,
        payload: &mut [u8],
        now: Timestamp,
        out: &mut [u8],
    ) -> Option<usize> {
        let r = self.try_answer(from, payload, now, out);
        if r.is_none() {
            self.stats.unmatched += 1;
        }
        r
    }

    fn try_answer(
        &mut self,
        from: SocketAddr,
        payload: &mut [u8],
        now: Timestamp,
        out: &mut [u8],
    ) -> Option<usize> {
        if !self.config.upstreams.contains(&from) {
            return None;
        }
        let h = DnsHeader::parse(payload).ok()?;
        if !h.is_response() || h.qdcount == 0 {
            return None;
        }
        let i = *self.by_id.get(&h.id)? as usize;
        let p = (*self.slots.get(i)?)?;
        if p.deadline <= now {
            return None;
        }
        let q = parse_question(payload).ok()?;
        if !same_question(q.bytes(payload), p.question()) {
            return None;
        }
        self.remove_slot(i);
        wire::set_id(payload, p.guest_id);
        let mut len = payload.len();
        if len > self.config.max_reply {
            len = wire::truncate_response(payload, &q);
            self.stats.truncated += 1;
        }
        let n = build::ipv4_udp(
            out,
            L2Header::new(p.guest.mac, self.config.listen_mac),
            self.config.listen_ip,
            p.guest.ip,
            53,
            p.guest.port,
            payload.get(..len)?,
        )
        .ok()?;
        self.stats.answered += 1;
        Some(n)
    }

    /// Drops queries past their timeout, examining at most `budget` slots.
    pub fn expire(&mut self, now: Timestamp, budget: usize) -> usize {
        let n = self.slots.len();
        let mut removed = 0;
        for _ in 0..budget.min(n) {
            self.cursor %= n;
            let i = self.cursor;
            self.cursor += 1;
            if self
                .slots
                .get(i)
                .copied()
                .flatten()
                .is_some_and(|p| p.deadline <= now)
            {
                self.remove_slot(i);
                self.stats.timeouts += 1;
                removed += 1;
            }
        }
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::udp::UdpPacket;
    use crate::wire::FrameInfo;
    use proptest::prelude::*;

    const GW_MAC: MacAddr = MacAddr([0x52, 0x54, 0, 0xaa, 0, 1]);
    const GW: Ipv4Addr = Ipv4Addr::new(192, 168, 122, 1);
    const G: GuestEndpoint = GuestEndpoint {
        mac: MacAddr([0, 0x16, 0x3e, 0, 0, 5]),
        ip: Ipv4Addr::new(192, 168, 122, 5),
        port: 40000,
    };

    fn up(i: u8) -> SocketAddr {
        SocketAddr::new(Ipv4Addr::new(192, 0, 2, i).into(), 53)
    }

    fn fwd() -> DnsForwarder {
        let mut c = DnsConfig::new(GW, GW_MAC, vec![up(1), up(2)]);
        c.max_pending = 4;
        DnsForwarder::new(c)
    }

    fn query(id: u16) -> Vec<u8> {
        let mut q = id.to_be_bytes().to_vec();
        q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
        q.extend_from_slice(b"\x07example\x03com\x00\x00\x01\x00\x01");
        q
    }

    fn answer_for(upstream_query: &[u8]) -> Vec<u8> {
        let mut a = upstream_query.to_vec();
        a[2] = 0x81;
        a[3] = 0x80;
        a[7] = 1;
        a.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 93, 184, 216, 34]);
        a
    }

    #[test]
    fn forward_and_answer() {
        let mut f = fwd();
        let mut out = [0u8; 1600];
        let q = f
            .query(G, &query(0xabcd), Timestamp::ZERO, &mut out)
            .unwrap();
        assert_eq!(q.server, up(1));
        let sent = out[..q.len].to_vec();
        let upstream_id = u16::from_be_bytes([sent[0], sent[1]]);
        assert_eq!(&sent[2..], &query(0xabcd)[2..], "only the id changes");
        let mut a = answer_for(&sent);
        // From a stranger, with another id, or another question: refused.
        assert_eq!(
            f.answer(up(9), &mut a.clone(), Timestamp::ZERO, &mut out),
            None
        );
        let mut wrong_id = a.clone();
        wrong_id[0] ^= 0xff;
        assert_eq!(
            f.answer(up(1), &mut wrong_id, Timestamp::ZERO, &mut out),
            None
        );
        let mut wrong_q = a.clone();
        wrong_q[13] = b'x';
        assert_eq!(
            f.answer(up(1), &mut wrong_q, Timestamp::ZERO, &mut out),
            None
        );
        assert_eq!(f.stats().unmatched, 3);
        // The real one (case-changed question is fine) goes to the guest with its id.
        a[14] = b'X';
        let n = f.answer(up(1), &mut a, Timestamp::ZERO, &mut out).unwrap();
        let info = FrameInfo::parse(&out[..n]).unwrap();
        assert_eq!((info.dst, info.src), (G.mac, GW_MAC));
        let ip = info.ipv4().unwrap();
        assert_eq!((ip.src, ip.dst), (GW, G.ip));
        assert_eq!(info.udp_ports(), Some((53, 40000)));
        let udp = UdpPacket::new_checked(&out[34..n]).unwrap();
        assert!(udp.verify_checksum_v4(GW, G.ip));
        assert_eq!(&udp.payload()[..2], &0xabcdu16.to_be_bytes());
        assert_eq!(f.pending(), 0);
        // A replay of the same answer matches nothing.
        let mut again = answer_for(&sent);
        assert_eq!(f.answer(up(1), &mut again, Timestamp::ZERO, &mut out), None);
        assert_ne!(upstream_id, 0xabcd);
    }

    #[test]
    fn retransmission_rotates_servers_and_limits_hold() {
        let mut f = fwd();
        let mut out = [0u8; 600];
        assert_eq!(
            f.query(G, &query(1), Timestamp::ZERO, &mut out)
                .unwrap()
                .server,
            up(1)
        );
        let first = u16::from_be_bytes([out[0], out[1]]);
        assert_eq!(
            f.query(G, &query(1), Timestamp::from_secs(2), &mut out)
                .unwrap()
                .server,
            up(2)
        );
        assert_eq!(u16::from_be_bytes([out[0], out[1]]), first);
        assert_eq!(f.stats().retransmitted, 1);
        for id in 2..5 {
            f.query(G, &query(id), Timestamp::ZERO, &mut out).unwrap();
        }
        assert_eq!(
            f.query(G, &query(9), Timestamp::ZERO, &mut out),
            Err(DropReason::DnsUnavailable)
        );
        // Timeouts free the table.
        assert_eq!(f.expire(Timestamp::from_secs(10), 100), 3);
        assert_eq!(f.expire(Timestamp::from_secs(12), 100), 1);
        assert!(f
            .query(G, &query(9), Timestamp::from_secs(12), &mut out)
            .is_ok());
        // Malformed queries and no upstream.
        let mut bad = query(3);
        bad[2] |= 0x80;
        assert_eq!(
            f.query(G, &bad, Timestamp::ZERO, &mut out),
            Err(DropReason::DnsMalformed)
        );
        f.set_upstreams(Vec::new());
        assert_eq!(
            f.query(G, &query(7), Timestamp::ZERO, &mut out),
            Err(DropReason::DnsUnavailable)
        );
    }

    #[test]
    fn oversized_answers_are_truncated() {
        let mut c = DnsConfig::new(GW, GW_MAC, vec![up(1)]);
        c.max_reply = 100;
        let mut f = DnsForwarder::new(c);
        let mut out = [0u8; 2000];
        let q = f.query(G, &query(5), Timestamp::ZERO, &mut out).unwrap();
        let mut a = answer_for(&out[..q.len]);
        a.extend_from_slice(&[0u8; 200]);
        let n = f.answer(up(1), &mut a, Timestamp::ZERO, &mut out).unwrap();
        let payload = &out[42..n];
        assert_eq!(payload.len(), 12 + 17);
        assert!(payload[2] & 0x02 != 0, "TC set");
        assert_eq!(f.stats().truncated, 1);
    }

    proptest! {
        #[test]
        fn never_panics(q in proptest::collection::vec(any::<u8>(), 0..600), a in proptest::collection::vec(any::<u8>(), 0..600)) {
            let mut f = fwd();
            let mut out = [0u8; 2000];
            let _ = f.query(G, &q, Timestamp::ZERO, &mut out);
            let mut a = a;
            let _ = f.answer(up(1), &mut a, Timestamp::ZERO, &mut out);
            f.expire(Timestamp::from_secs(100), 10);
        }
    }
}
