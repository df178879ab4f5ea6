//! The server state machine (RFC 2131 §4.3) with the guards of robustness.md §3 d1–d5.
//!
//! Per message, in order:
//! 1. the UDP payload must be a well-formed client message ([`DhcpMessage::parse`]),
//!    else `dhcp_malformed`; the port must be within its message allowance
//!    (`dhcp_rate_limited`); relayed messages (`giaddr` set) are not served and neither
//!    are server-only types (`dhcp_unsupported`);
//! 2. `chaddr` must be the frame's source MAC — which anti-spoofing has pinned to the
//!    vif's MAC — else `dhcp_chaddr_mismatch` (d1);
//! 3. DISCOVER → OFFER: the MAC's static address (the vif's `ip=`) if it has one; else
//!    its current lease or offer; else the requested address if free in the pool; else
//!    the first free pool address. A new address needs room under the per-port and total
//!    caps (`dhcp_lease_limit`) and a free address (`dhcp_pool_exhausted`). The offer is
//!    held for `offer_hold`;
//! 4. REQUEST → ACK or NAK: SELECTING (server id present: another server's id withdraws
//!    our offer silently), INIT-REBOOT (requested address, no `ciaddr`) and
//!    RENEWING/REBINDING (`ciaddr`). An address the client may have — its static
//!    address, its lease or offer, or (authoritatively, like `dhcp-authoritative`) a free
//!    pool address — is ACKed and bound; anything else, an off-subnet address included,
//!    is NAKed, never a crash (d4);
//! 5. DECLINE holds the declined address back for `decline_hold`; RELEASE frees the
//!    client's lease; INFORM is ACKed with configuration but no lease.
//!
//! Replies (RFC 2131 §4.1): NAK broadcast; to `ciaddr` when set; broadcast when the
//! client sets the broadcast flag; else unicast to `yiaddr` at `chaddr`. They carry
//! options 53, 54, 51, 58, 59, 1, 28, 3, 6, 15 (if configured), 26 (if configured), and
//! always fit 576 bytes (d3: the configuration is bounded so that they do).

use core::time::Duration;
use std::collections::HashMap;
use std::net::Ipv4Addr;

use foldhash::fast::RandomState;

use super::lease::{Lease, LeaseChange, LeaseRecord, LeaseState, LeaseTable};
use super::wire::{self, DhcpMessage, DhcpReply, MessageType};
use crate::counters::DropReason;
use crate::port::PortId;
use crate::router::ratelimit::{RateLimit, TokenBucket};
use crate::time::Timestamp;
use crate::wire::build::{self, L2Header};
use crate::wire::udp::{UdpPacket, DHCP_CLIENT_PORT, DHCP_SERVER_PORT};
use crate::wire::{FrameInfo, Ipv4Cidr, MacAddr};

/// Longest domain name the server hands out (keeps every reply within 576 bytes).
pub const MAX_DOMAIN_LEN: usize = 200;
/// Most DNS servers in option 6.
pub const MAX_DNS_SERVERS: usize = 8;

/// Server settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DhcpConfig {
    /// The server's address (option 54, the replies' source).
    pub server_ip: Ipv4Addr,
    /// The server's MAC (the replies' source).
    pub server_mac: MacAddr,
    /// The network served (option 1 and 28 derive from it).
    pub subnet: Ipv4Cidr,
    /// First address of the dynamic pool.
    pub pool_start: Ipv4Addr,
    /// Last address of the dynamic pool (inclusive).
    pub pool_end: Ipv4Addr,
    /// Option 3.
    pub router: Option<Ipv4Addr>,
    /// Option 6.
    pub dns_servers: Vec<Ipv4Addr>,
    /// Option 15.
    pub domain: Option<String>,
    /// Option 26 (`dhcp-option=option:mtu,N`).
    pub mtu: Option<u16>,
    /// Lease time (dnsmasq's default: 1 h).
    pub lease_time: Duration,
    /// How long an offer holds its address.
    pub offer_hold: Duration,
    /// How long a declined address is held back (dnsmasq: 10 min).
    pub decline_hold: Duration,
    /// Most declined addresses held back at once.
    pub max_declined: usize,
    /// Most leases and offers in total (dnsmasq `dhcp-lease-max`; libvirt sets the range
    /// size).
    pub max_leases: usize,
    /// Most leases and offers per port (one per vif: its MAC is pinned).
    pub max_leases_per_port: usize,
    /// DHCP messages allowed per port.
    pub rate_per_port: RateLimit,
    /// Most lease changes waiting for the shell.
    pub max_pending_changes: usize,
}

impl DhcpConfig {
    /// libvirt's default network: server and router 192.168.122.1/24, pool .2–.254,
    /// DNS through the gateway, 1 h leases, 253 leases at most.
    pub fn libvirt_default(server_mac: MacAddr) -> Self {
        let gw = Ipv4Addr::new(192, 168, 122, 1);
        DhcpConfig {
            server_ip: gw,
            server_mac,
            subnet: Ipv4Cidr::new(Ipv4Addr::new(192, 168, 122, 0), 24)
                .unwrap_or(Ipv4Cidr::host(gw)),
            pool_start: Ipv4Addr::new(192, 168, 122, 2),
            pool_end: Ipv4Addr::new(192, 168, 122, 254),
            router: Some(gw),
            dns_servers: vec![gw],
            domain: None,
            mtu: None,
            lease_time: Duration::from_secs(3600),
            offer_hold: Duration::from_secs(30),
            decline_hold: Duration::from_secs(600),
            max_declined: 64,
            max_leases: 253,
            max_leases_per_port: 1,
            rate_per_port: RateLimit::new(5, 20),
            max_pending_changes: 4096,
        }
    }

    fn mask(&self) -> u32 {
        u32::MAX
            .checked_shl(32 - u32::from(self.subnet.prefix_len()))
            .unwrap_or(0)
    }

    /// Option 1.
    pub fn subnet_mask(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.mask())
    }

    /// Option 28.
    pub fn broadcast_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.subnet.addr()) | !self.mask())
    }

    /// Whether `ip` is in the dynamic pool.
    pub fn in_pool(&self, ip: Ipv4Addr) -> bool {
        (u32::from(self.pool_start)..=u32::from(self.pool_end)).contains(&u32::from(ip))
    }

    /// A usable host address of the subnet (not the network or broadcast address, not
    /// the server).
    pub fn is_host_address(&self, ip: Ipv4Addr) -> bool {
        self.subnet.contains(ip)
            && ip != self.server_ip
            && (self.subnet.prefix_len() >= 31
                || (ip != self.broadcast_addr() && u32::from(ip) & !self.mask() != 0))
    }
}

/// Configuration errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DhcpConfigError {
    /// The pool is empty, reversed, or leaves the subnet.
    #[error("pool {0}-{1} is not a range inside the subnet")]
    BadPool(Ipv4Addr, Ipv4Addr),
    /// The server address is not on the subnet.
    #[error("server address {0} is not on the subnet")]
    ServerOffSubnet(Ipv4Addr),
    /// The domain is too long for a 576-byte reply.
    #[error("domain longer than {MAX_DOMAIN_LEN} bytes")]
    DomainTooLong,
    /// Too many DNS servers.
    #[error("more than {MAX_DNS_SERVERS} DNS servers")]
    TooManyDnsServers,
    /// A static address that is not a host address of the subnet.
    #[error("static address {0} is not a host address of the subnet")]
    StaticOffSubnet(Ipv4Addr),
    /// A static binding's host name is empty or longer than an option holds.
    #[error("host name must be 1 to {MAX_DOMAIN_LEN} bytes")]
    BadHostName,
    /// A static address already bound to another MAC.
    #[error("static address {0} is already bound to {1}")]
    StaticInUse(Ipv4Addr, MacAddr),
}

/// What the server did with a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DhcpOutcome {
    /// A reply frame of `len` bytes was written into `out`.
    Reply {
        /// Frame length.
        len: usize,
        /// OFFER, ACK or NAK.
        message_type: MessageType,
    },
    /// Handled; no reply is due (RELEASE, DECLINE, another server selected).
    NoReply,
    /// Dropped for this reason.
    Drop(DropReason),
}

/// Counters, named after the messages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DhcpStats {
    /// DISCOVERs received.
    pub discover: u64,
    /// REQUESTs received.
    pub request: u64,
    /// DECLINEs received.
    pub decline: u64,
    /// RELEASEs received.
    pub release: u64,
    /// INFORMs received.
    pub inform: u64,
    /// OFFERs sent.
    pub offer: u64,
    /// ACKs sent.
    pub ack: u64,
    /// NAKs sent.
    pub nak: u64,
    /// Messages dropped as malformed.
    pub malformed: u64,
    /// Messages whose `chaddr` was not the frame's source.
    pub chaddr_mismatch: u64,
    /// Messages over the per-port allowance.
    pub rate_limited: u64,
    /// New leases refused by the caps.
    pub lease_limit: u64,
    /// DISCOVERs with no free address.
    pub pool_exhausted: u64,
    /// Relayed or server-type messages.
    pub unsupported: u64,
}

impl DhcpStats {
    /// Every counter under its `dhcp_*` name, as ports report them.
    pub fn named(&self) -> [(&'static str, u64); 14] {
        [
            ("dhcp_discover", self.discover),
            ("dhcp_request", self.request),
            ("dhcp_decline", self.decline),
            ("dhcp_release", self.release),
            ("dhcp_inform", self.inform),
            ("dhcp_offer", self.offer),
            ("dhcp_ack", self.ack),
            ("dhcp_nak", self.nak),
            ("dhcp_malformed", self.malformed),
            ("dhcp_chaddr_mismatch", self.chaddr_mismatch),
            ("dhcp_rate_limited", self.rate_limited),
            ("dhcp_lease_limit", self.lease_limit),
            ("dhcp_pool_exhausted", self.pool_exhausted),
            ("dhcp_unsupported", self.unsupported),
        ]
    }
}

/// Options of one static binding that differ from the server's (Xen's vif-nat gives
/// every vif its own subnet, router address and host name).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StaticOptions {
    /// The client's subnet (options 1 and 28) instead of the server's; the address must
    /// be a host address of it.
    pub subnet: Option<Ipv4Cidr>,
    /// Option 3 instead of the server's router.
    pub router: Option<Ipv4Addr>,
    /// Option 12.
    pub host_name: Option<String>,
}

/// The server. Single-threaded; the gateway (or the shell) owns it.
#[derive(Clone, Debug)]
pub struct DhcpServer {
    config: DhcpConfig,
    leases: LeaseTable,
    statics: HashMap<MacAddr, Ipv4Addr, RandomState>,
    static_ips: HashMap<Ipv4Addr, MacAddr, RandomState>,
    static_opts: HashMap<MacAddr, StaticOptions, RandomState>,
    buckets: HashMap<PortId, TokenBucket, RandomState>,
    pool_cursor: u32,
    stats: DhcpStats,
}

fn mask_bits(net: Ipv4Cidr) -> u32 {
    u32::MAX
        .checked_shl(32 - u32::from(net.prefix_len()))
        .unwrap_or(0)
}

fn mask_of(net: Ipv4Cidr) -> Ipv4Addr {
    Ipv4Addr::from(mask_bits(net))
}

fn broadcast_of(net: Ipv4Cidr) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(net.addr()) | !mask_bits(net))
}

/// Whether `ip` is a host address of `net` (not its network or broadcast address,
/// except on /31 and /32).
fn is_host_of(net: Ipv4Cidr, ip: Ipv4Addr) -> bool {
    net.contains(ip)
        && (net.prefix_len() >= 31
            || (ip != broadcast_of(net) && u32::from(ip) & !mask_bits(net) != 0))
}

/// Where a reply goes (RFC 2131 §4.1).
struct Destination {
    ip: Ipv4Addr,
    mac: MacAddr,
}

impl DhcpServer {
    /// A server with no leases.
    pub fn new(config: DhcpConfig) -> Result<DhcpServer, DhcpConfigError> {
        let (s, e) = (config.pool_start, config.pool_end);
        if u32::from(s) > u32::from(e) || !config.subnet.contains(s) || !config.subnet.contains(e) {
            return Err(DhcpConfigError::BadPool(s, e));
        }
        if !config.subnet.contains(config.server_ip) {
            return Err(DhcpConfigError::ServerOffSubnet(config.server_ip));
        }
        if config
            .domain
            .as_ref()
            .is_some_and(|d| d.len() > MAX_DOMAIN_LEN)
        {
            return Err(DhcpConfigError::DomainTooLong);
        }
        if config.dns_servers.len() > MAX_DNS_SERVERS {
            return Err(DhcpConfigError::TooManyDnsServers);
        }
        Ok(DhcpServer {
            leases: LeaseTable::new(config.max_pending_changes),
            pool_cursor: u32::from(s),
            config,
            statics: HashMap::with_hasher(RandomState::default()),
            static_opts: HashMap::with_hasher(RandomState::default()),
            static_ips: HashMap::with_hasher(RandomState::default()),
            buckets: HashMap::with_hasher(RandomState::default()),
            stats: DhcpStats::default(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &DhcpConfig {
        &self.config
    }

    /// Counters.
    pub fn stats(&self) -> &DhcpStats {
        &self.stats
    }

    /// The lease table.
    pub fn leases(&self) -> &LeaseTable {
        &self.leases
    }

    /// Moves pending lease changes into `out`.
    pub fn take_changes(&mut self, out: &mut Vec<LeaseChange>) {
        self.leases.take_changes(out);
    }

    /// Binds `mac` to `ip` for good (a vif's `ip=`). A dynamic lease another client holds
    /// on `ip` is revoked; the MAC's own dynamic lease on another address is dropped.
    pub fn set_static(&mut self, mac: MacAddr, ip: Ipv4Addr) -> Result<(), DhcpConfigError> {
        self.set_static_with(mac, ip, StaticOptions::default())
    }

    /// [`DhcpServer::set_static`] with options of its own: with `opts.subnet` the
    /// address must be a host address of that subnet instead of the server's.
    pub fn set_static_with(
        &mut self,
        mac: MacAddr,
        ip: Ipv4Addr,
        opts: StaticOptions,
    ) -> Result<(), DhcpConfigError> {
        let on_subnet = match opts.subnet {
            Some(net) => is_host_of(net, ip),
            None => self.config.is_host_address(ip),
        };
        if !on_subnet {
            return Err(DhcpConfigError::StaticOffSubnet(ip));
        }
        if opts
            .host_name
            .as_ref()
            .is_some_and(|h| h.is_empty() || h.len() > MAX_DOMAIN_LEN)
        {
            return Err(DhcpConfigError::BadHostName);
        }
        if let Some(&other) = self.static_ips.get(&ip) {
            if other != mac {
                return Err(DhcpConfigError::StaticInUse(ip, other));
            }
        }
        self.remove_static(mac);
        if let Some(holder) = self.leases.by_ip(ip).map(|l| l.mac) {
            self.leases.remove(holder);
        }
        if self.leases.by_mac(mac).is_some_and(|l| l.ip != ip) {
            self.leases.remove(mac);
        }
        self.statics.insert(mac, ip);
        self.static_ips.insert(ip, mac);
        if opts != StaticOptions::default() {
            self.static_opts.insert(mac, opts);
        }
        Ok(())
    }

    /// Forgets the static binding of `mac`.
    pub fn remove_static(&mut self, mac: MacAddr) {
        if let Some(ip) = self.statics.remove(&mac) {
            self.static_ips.remove(&ip);
        }
        self.static_opts.remove(&mac);
    }

    /// The static address of `mac`.
    pub fn static_for(&self, mac: MacAddr) -> Option<Ipv4Addr> {
        self.statics.get(&mac).copied()
    }

    /// Forgets a port's rate-limit state (the vif went away); its leases run out
    /// normally.
    pub fn remove_port(&mut self, port: PortId) {
        self.buckets.remove(&port);
    }

    /// Restores bound leases from records (daemon restart); records already expired at
    /// `now`, off the pool, or clashing with a static binding are skipped. Returns how
    /// many were restored.
    pub fn restore(
        &mut self,
        records: impl IntoIterator<Item = LeaseRecord>,
        now: Timestamp,
    ) -> usize {
        let mut n = 0;
        for r in records {
            let clash = self.static_ips.get(&r.ip).is_some_and(|&m| m != r.mac)
                || self.statics.get(&r.mac).is_some_and(|&ip| ip != r.ip);
            let usable = self.config.in_pool(r.ip) || self.statics.get(&r.mac) == Some(&r.ip);
            if r.expires <= now || clash || !usable || self.leases.len() >= self.config.max_leases {
                continue;
            }
            if self.leases.by_ip(r.ip).is_some_and(|l| l.mac != r.mac) {
                continue;
            }
            self.leases.put(Lease {
                mac: r.mac,
                ip: r.ip,
                state: LeaseState::Bound,
                expires: r.expires,
                port: None,
            });
            n += 1;
        }
        // Restoring is not a change the shell needs to write back.
        self.leases.take_changes(&mut Vec::new());
        n
    }

    /// Runs lease and offer expiry, examining at most `budget` entries.
    pub fn expire(&mut self, now: Timestamp, budget: usize) -> usize {
        self.leases.expire(now, budget)
    }

    /// Whether `ip` is free for `mac` to take from the pool.
    fn free_for(&self, ip: Ipv4Addr, mac: MacAddr, now: Timestamp) -> bool {
        self.config.in_pool(ip)
            && self.config.is_host_address(ip)
            && !self.static_ips.contains_key(&ip)
            && !self.leases.is_declined(ip, now)
            && self
                .leases
                .by_ip(ip)
                .is_none_or(|l| l.mac == mac || l.expires <= now)
    }

    /// The first free pool address from the cursor. Bounded: with at most `max_leases`
    /// leases plus statics plus declined addresses in use, a free one is found within
    /// that many probes plus one, or the pool is full.
    fn pick_free(&mut self, mac: MacAddr, now: Timestamp) -> Option<Ipv4Addr> {
        let start = u32::from(self.config.pool_start);
        let size = u32::from(self.config.pool_end) - start + 1;
        // In-use addresses, plus the server, network and broadcast addresses if the pool
        // covers them, plus one.
        let in_use = self.leases.len() + self.statics.len() + self.leases.declined_count() + 4;
        let probes = size.min(u32::try_from(in_use).unwrap_or(u32::MAX));
        let from = self.pool_cursor.saturating_sub(start) % size;
        for i in 0..probes {
            let ip = Ipv4Addr::from(start + (from + i) % size);
            if self.free_for(ip, mac, now) {
                self.pool_cursor = start + (from + i + 1) % size;
                return Some(ip);
            }
        }
        None
    }

    /// Whether binding a new entry for `mac` on `port` stays within the caps.
    fn has_room(&self, mac: MacAddr, port: PortId) -> bool {
        if self.leases.by_mac(mac).is_some() {
            return true; // replacing its own entry
        }
        self.leases.len() < self.config.max_leases
            && self.leases.port_count(port) < self.config.max_leases_per_port
    }

    fn drop_with(&mut self, r: DropReason) -> DhcpOutcome {
        match r {
            DropReason::DhcpMalformed => self.stats.malformed += 1,
            DropReason::DhcpChaddrMismatch => self.stats.chaddr_mismatch += 1,
            DropReason::DhcpRateLimited => self.stats.rate_limited += 1,
            DropReason::DhcpLeaseLimit => self.stats.lease_limit += 1,
            DropReason::DhcpPoolExhausted => self.stats.pool_exhausted += 1,
            _ => self.stats.unsupported += 1,
        }
        DhcpOutcome::Drop(r)
    }

    /// Handles a DHCP client frame received from `port` (UDP to port 67, parsed as
    /// `info`); a reply frame is written into `out` (≥ 600 bytes is always enough).
    pub fn handle(
        &mut self,
        port: PortId,
        frame: &[u8],
        info: &FrameInfo,
        now: Timestamp,
        out: &mut [u8],
    ) -> DhcpOutcome {
        let limit = self.config.rate_per_port;
        let bucket = self
            .buckets
            .entry(port)
            .or_insert_with(|| TokenBucket::new(limit));
        if !bucket.try_take(now) {
            return self.drop_with(DropReason::DhcpRateLimited);
        }
        let payload = info.ipv4().and_then(|ip| {
            let end = info.l2_header_len() + usize::from(ip.total_len);
            let udp = frame.get(usize::from(info.l4_offset)..end)?;
            let u = UdpPacket::new_checked(udp).ok()?;
            (u.dst_port() == DHCP_SERVER_PORT).then_some(())?;
            let len = usize::from(u.len());
            udp.get(8..len)
        });
        let Some(payload) = payload else {
            return self.drop_with(DropReason::DhcpMalformed);
        };
        let msg = match DhcpMessage::parse(payload) {
            Ok(m) => m,
            Err(_) => return self.drop_with(DropReason::DhcpMalformed),
        };
        if !msg.giaddr.is_unspecified() {
            return self.drop_with(DropReason::DhcpUnsupported);
        }
        if msg.chaddr != info.src {
            return self.drop_with(DropReason::DhcpChaddrMismatch);
        }
        match msg.message_type() {
            MessageType::Discover => {
                self.stats.discover += 1;
                self.discover(port, &msg, now, out)
            }
            MessageType::Request => {
                self.stats.request += 1;
                self.request(port, &msg, now, out)
            }
            MessageType::Decline => {
                self.stats.decline += 1;
                self.decline(&msg, now)
            }
            MessageType::Release => {
                self.stats.release += 1;
                if self
                    .leases
                    .by_mac(msg.chaddr)
                    .is_some_and(|l| l.ip == msg.ciaddr)
                {
                    self.leases.remove(msg.chaddr);
                }
                DhcpOutcome::NoReply
            }
            MessageType::Inform => {
                self.stats.inform += 1;
                self.reply(&msg, MessageType::Ack, Ipv4Addr::UNSPECIFIED, false, out)
            }
            MessageType::Offer | MessageType::Ack | MessageType::Nak => {
                self.drop_with(DropReason::DhcpUnsupported)
            }
        }
    }

    fn discover(
        &mut self,
        port: PortId,
        msg: &DhcpMessage<'_>,
        now: Timestamp,
        out: &mut [u8],
    ) -> DhcpOutcome {
        let mac = msg.chaddr;
        let ip = if let Some(ip) = self.static_for(mac) {
            Some(ip)
        } else if let Some(l) = self.leases.by_mac(mac) {
            Some(l.ip)
        } else {
            if !self.has_room(mac, port) {
                return self.drop_with(DropReason::DhcpLeaseLimit);
            }
            match msg.options.requested_ip {
                Some(r) if self.free_for(r, mac, now) => Some(r),
                _ => self.pick_free(mac, now),
            }
        };
        let Some(ip) = ip else {
            return self.drop_with(DropReason::DhcpPoolExhausted);
        };
        if self.static_for(mac).is_none() {
            let bound = self
                .leases
                .by_mac(mac)
                .filter(|l| l.state == LeaseState::Bound && l.ip == ip);
            match bound {
                // Keep a bound lease bound (a client re-discovering its own address).
                Some(l) if l.port == Some(port) => {}
                Some(l) => {
                    let l = Lease {
                        port: Some(port),
                        ..*l
                    };
                    self.leases.put(l);
                }
                None => {
                    // Evict a stale holder whose lease ran out (free_for allowed it).
                    if let Some(old) = self
                        .leases
                        .by_ip(ip)
                        .filter(|l| l.mac != mac)
                        .map(|l| l.mac)
                    {
                        self.leases.remove(old);
                    }
                    self.leases.put(Lease {
                        mac,
                        ip,
                        state: LeaseState::Offered,
                        expires: now + self.config.offer_hold,
                        port: Some(port),
                    });
                }
            }
        }
        self.reply(msg, MessageType::Offer, ip, true, out)
    }

    fn request(
        &mut self,
        port: PortId,
        msg: &DhcpMessage<'_>,
        now: Timestamp,
        out: &mut [u8],
    ) -> DhcpOutcome {
        let mac = msg.chaddr;
        let wanted = match (msg.options.server_id, msg.options.requested_ip) {
            // SELECTING.
            (Some(sid), req) => {
                if sid != self.config.server_ip {
                    // The client chose another server: withdraw our offer.
                    if self
                        .leases
                        .by_mac(mac)
                        .is_some_and(|l| l.state == LeaseState::Offered)
                    {
                        self.leases.remove(mac);
                    }
                    return DhcpOutcome::NoReply;
                }
                req
            }
            // INIT-REBOOT.
            (None, Some(req)) if msg.ciaddr.is_unspecified() => Some(req),
            // RENEWING / REBINDING.
            (None, _) if !msg.ciaddr.is_unspecified() => Some(msg.ciaddr),
            (None, _) => None,
        };
        let Some(ip) = wanted else {
            return self.nak(msg, out);
        };
        let ok = if let Some(s) = self.static_for(mac) {
            s == ip
        } else if !self.config.is_host_address(ip) {
            false
        } else if self.leases.by_mac(mac).is_some_and(|l| l.ip == ip) {
            true
        } else {
            // Authoritative: a free pool address is granted (e.g. after a restart that
            // lost the lease file), within the caps.
            self.free_for(ip, mac, now) && self.has_room(mac, port)
        };
        if !ok {
            return self.nak(msg, out);
        }
        if self.static_for(mac).is_none() {
            if let Some(old) = self
                .leases
                .by_ip(ip)
                .filter(|l| l.mac != mac)
                .map(|l| l.mac)
            {
                self.leases.remove(old);
            }
            self.leases.put(Lease {
                mac,
                ip,
                state: LeaseState::Bound,
                expires: now + self.config.lease_time,
                port: Some(port),
            });
        }
        self.reply(msg, MessageType::Ack, ip, true, out)
    }

    fn decline(&mut self, msg: &DhcpMessage<'_>, now: Timestamp) -> DhcpOutcome {
        let ours = msg
            .options
            .server_id
            .is_none_or(|s| s == self.config.server_ip);
        let Some(ip) = msg.options.requested_ip else {
            return DhcpOutcome::NoReply;
        };
        if ours && self.leases.by_mac(msg.chaddr).is_some_and(|l| l.ip == ip) {
            self.leases.decline(
                msg.chaddr,
                now + self.config.decline_hold,
                self.config.max_declined,
            );
        }
        DhcpOutcome::NoReply
    }

    fn nak(&mut self, msg: &DhcpMessage<'_>, out: &mut [u8]) -> DhcpOutcome {
        self.reply(msg, MessageType::Nak, Ipv4Addr::UNSPECIFIED, false, out)
    }

    fn destination(msg: &DhcpMessage<'_>, kind: MessageType, yiaddr: Ipv4Addr) -> Destination {
        let broadcast = Destination {
            ip: Ipv4Addr::BROADCAST,
            mac: MacAddr::BROADCAST,
        };
        if kind == MessageType::Nak {
            return broadcast;
        }
        if !msg.ciaddr.is_unspecified() {
            return Destination {
                ip: msg.ciaddr,
                mac: msg.chaddr,
            };
        }
        if msg.wants_broadcast() || yiaddr.is_unspecified() {
            return broadcast;
        }
        Destination {
            ip: yiaddr,
            mac: msg.chaddr,
        }
    }

    fn reply(
        &mut self,
        msg: &DhcpMessage<'_>,
        kind: MessageType,
        yiaddr: Ipv4Addr,
        lease: bool,
        out: &mut [u8],
    ) -> DhcpOutcome {
        let c = &self.config;
        let nak = kind == MessageType::Nak;
        let own = self.static_opts.get(&msg.chaddr);
        let subnet = own.and_then(|o| o.subnet);
        let lease_secs = u32::try_from(c.lease_time.as_secs()).unwrap_or(u32::MAX);
        let r = DhcpReply {
            message_type: kind,
            xid: msg.xid,
            flags: msg.flags,
            ciaddr: if nak {
                Ipv4Addr::UNSPECIFIED
            } else {
                msg.ciaddr
            },
            yiaddr,
            chaddr_field: msg.chaddr_field,
            server_id: c.server_ip,
            lease_secs: (lease && !nak).then_some(lease_secs),
            subnet_mask: (!nak).then(|| subnet.map_or_else(|| c.subnet_mask(), mask_of)),
            broadcast: (!nak).then(|| subnet.map_or_else(|| c.broadcast_addr(), broadcast_of)),
            router: own.and_then(|o| o.router).or(c.router).filter(|_| !nak),
            host_name: own.and_then(|o| o.host_name.as_deref()).filter(|_| !nak),
            dns: if nak { &[] } else { &c.dns_servers },
            domain: c.domain.as_deref().filter(|_| !nak),
            mtu: c.mtu.filter(|_| !nak),
            message: nak.then_some("address not available"),
        };
        let mut payload = [0u8; wire::DEFAULT_MAX_REPLY];
        let Ok(n) = r.emit(&mut payload) else {
            return self.drop_with(DropReason::DhcpUnsupported);
        };
        let dst = Self::destination(msg, kind, yiaddr);
        let written = build::ipv4_udp(
            out,
            L2Header::new(dst.mac, c.server_mac),
            c.server_ip,
            dst.ip,
            DHCP_SERVER_PORT,
            DHCP_CLIENT_PORT,
            &payload[..n],
        );
        let Ok(len) = written else {
            return self.drop_with(DropReason::DhcpUnsupported);
        };
        match kind {
            MessageType::Offer => self.stats.offer += 1,
            MessageType::Ack => self.stats.ack += 1,
            _ => self.stats.nak += 1,
        }
        DhcpOutcome::Reply {
            len,
            message_type: kind,
        }
    }
}

#[cfg(test)]
mod tests;
