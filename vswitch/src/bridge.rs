//! The L2 forwarding pipeline: what `xenbr0` does, as a pure function of
//! `(in_port, frame, meta, now)` and the bridge's state.
//!
//! Per frame, in order (Linux `br_handle_frame`/`br_handle_frame_finish` and OVS
//! `xlate_normal`, robustness.md §3 b1–b9, b12):
//! 1. unknown ingress port → `unknown_port` (bridge counter); disabled port → `port_disabled`;
//! 2. parse once into [`FrameInfo`]; under 14 bytes → `runt_frame`;
//! 3. source MAC multicast → `source_mac_multicast`, all-zero → `source_mac_zero`
//!    (never learned);
//! 4. tagged frame on an untagged-only port → `ingress_vlan_filter`;
//! 5. vif ports: anti-spoofing, RA-Guard, rogue-DHCP guard ([`check_vif_ingress`]);
//! 6. GSO metadata must match the packet → `invalid_gso`;
//! 7. learn (source MAC, outer VLAN) on the ingress port;
//! 8. destination 01:80:C2:00:00:0X → `reserved_multicast`;
//! 9. broadcast/multicast/unknown unicast → flood to every other enabled port
//!    (none → `port_list_is_empty`); known unicast → that port, unless it is the ingress
//!    port (`port_loopback`) or disabled (`egress_port_disabled`).
//!
//! Egress checks (MTU, VLAN) depend on the destination and run per destination port in
//! [`Bridge::egress_check`], which the shell calls for each port it is about to send to,
//! then reports the outcome with [`Bridge::record_tx`] or [`Bridge::record_tx_drop`].
//!
//! The bridge allocates nothing per frame: parsing fills a stack value, learning reuses
//! FDB slots, and batches write into caller-provided verdict buffers.

use crate::antispoof::check_vif_ingress;
use crate::counters::{BridgeCounters, DropReason, PortCounters};
use crate::fdb::{Fdb, FdbConfig};
use crate::meta::{FrameMeta, Gso, GsoKind};
use crate::port::{PortConfig, PortId, VlanMode, MAX_MTU};
use crate::time::Timestamp;
use crate::wire::{FrameInfo, L4Info};

/// Most frames a datapath thread should hand to [`Bridge::process_batch`] at once
/// (DESIGN.md "batches (up to 64 frames)"; Linux netback `RX_BATCH_SIZE`).
pub const MAX_BATCH: usize = 64;

/// Smallest MTU accepted (IPv4's minimum, RFC 791; Linux `ETH_MIN_MTU`).
pub const MIN_MTU: u32 = 68;

/// Default most ports on one bridge; port ids stay below this.
pub const DEFAULT_MAX_PORTS: usize = 4096;

/// What to do with one received frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Decision {
    /// Drop it; the reason is already counted on the ingress port.
    Drop(DropReason),
    /// Send it to this one port.
    Unicast(PortId),
    /// Send it to every enabled port except the ingress one ([`Bridge::flood_ports`]).
    Flood,
}

/// A decision with the parsed frame it was made on; later stages and the egress check
/// reuse `info` instead of parsing again. `info` is default (zeroed) for frames dropped
/// before parsing (unknown or disabled port, runt).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// The forwarding decision.
    pub decision: Decision,
    /// The one-pass parse of the frame.
    pub info: FrameInfo,
}

impl Verdict {
    fn drop(reason: DropReason) -> Verdict {
        Verdict {
            decision: Decision::Drop(reason),
            info: FrameInfo::default(),
        }
    }
}

impl Default for Verdict {
    fn default() -> Self {
        Verdict::drop(DropReason::UnknownPort)
    }
}

/// One received frame of a batch.
#[derive(Clone, Copy, Debug)]
pub struct RxFrame<'a> {
    /// The frame bytes (Ethernet header first, no FCS).
    pub data: &'a [u8],
    /// Its offload metadata.
    pub meta: FrameMeta,
}

/// Bridge-wide settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BridgeConfig {
    /// MAC table settings.
    pub fdb: FdbConfig,
    /// Most ports (port ids are below this; at most 65536).
    pub max_ports: usize,
}

impl Default for BridgeConfig {
    fn default() -> Self {
        BridgeConfig {
            fdb: FdbConfig::default(),
            max_ports: DEFAULT_MAX_PORTS,
        }
    }
}

/// Control-plane errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BridgeError {
    /// No such port.
    #[error("no port {0}")]
    UnknownPort(PortId),
    /// The bridge has `max_ports` ports already.
    #[error("bridge is full ({0} ports)")]
    TooManyPorts(usize),
    /// MTU outside 68..=65517.
    #[error("MTU {0} outside {MIN_MTU}..={MAX_MTU}")]
    InvalidMtu(u32),
}

#[derive(Clone, Debug)]
struct PortState {
    config: PortConfig,
    counters: PortCounters,
}

/// One bridge: ports, their counters and the MAC table. Single-threaded; the datapath
/// shell owns it.
#[derive(Debug, Clone)]
pub struct Bridge {
    fdb: Fdb,
    ports: Vec<Option<PortState>>,
    enabled_ports: usize,
    max_ports: usize,
    removed: PortCounters,
    unknown_port: u64,
}

impl Default for Bridge {
    fn default() -> Self {
        Bridge::new(BridgeConfig::default())
    }
}

fn check_mtu(mtu: u32) -> Result<(), BridgeError> {
    if (MIN_MTU..=MAX_MTU).contains(&mtu) {
        Ok(())
    } else {
        Err(BridgeError::InvalidMtu(mtu))
    }
}

/// A frame counts as tagged unless it is untagged or carries a single priority tag
/// (VID 0), which IEEE 802.1Q treats as untagged.
fn is_tagged(info: &FrameInfo) -> bool {
    match info.vlans.as_slice() {
        [] => false,
        [only] => only.vid().get() != 0,
        _ => true,
    }
}

/// GSO metadata must describe the packet it rides on (netback `xenvif_set_skb_gso`,
/// Linux `virtio_net_hdr_to_skb`): a non-zero segment size and a matching L3/L4.
fn gso_matches(info: &FrameInfo, gso: &Gso) -> bool {
    if gso.size == 0 {
        return false;
    }
    let tcp = matches!(info.l4, L4Info::Tcp(_));
    let udp = matches!(info.l4, L4Info::Udp { .. });
    match gso.kind {
        GsoKind::TcpV4 => tcp && info.ipv4().is_some(),
        GsoKind::TcpV6 => tcp && info.ipv6().is_some(),
        GsoKind::Udp | GsoKind::UdpL4 => udp,
    }
}

/// Steps 2–9 of the module doc for an existing, enabled ingress port.
fn classify(
    ports: &[Option<PortState>],
    enabled_ports: usize,
    fdb: &mut Fdb,
    in_port: PortId,
    frame: &[u8],
    meta: &FrameMeta,
    now: Timestamp,
) -> Verdict {
    let Some(Some(PortState { config, .. })) = ports.get(in_port.index()) else {
        return Verdict::drop(DropReason::UnknownPort);
    };
    let Ok(info) = FrameInfo::parse(frame) else {
        return Verdict::drop(DropReason::RuntFrame);
    };
    let decide = |d: Decision| Verdict { decision: d, info };
    if info.src.is_multicast() {
        return decide(Decision::Drop(DropReason::SourceMacMulticast));
    }
    if info.src.is_zero() {
        return decide(Decision::Drop(DropReason::SourceMacZero));
    }
    if config.vlan_mode == VlanMode::Untagged && is_tagged(&info) {
        return decide(Decision::Drop(DropReason::IngressVlanFilter));
    }
    if let Some(vif) = config.vif_config() {
        if let Err(reason) = check_vif_ingress(vif, frame, &info) {
            return decide(Decision::Drop(reason));
        }
    }
    if let Some(gso) = &meta.gso {
        if !gso_matches(&info, gso) {
            return decide(Decision::Drop(DropReason::InvalidGso));
        }
    }
    let vlan = info.vlan();
    fdb.learn(info.src, vlan, in_port, now, info.is_gratuitous_arp());
    if info.dst.is_ieee_reserved() {
        return decide(Decision::Drop(DropReason::ReservedMulticast));
    }
    let flood = || {
        // The ingress port is enabled, so the others number enabled_ports - 1.
        if enabled_ports > 1 {
            decide(Decision::Flood)
        } else {
            decide(Decision::Drop(DropReason::PortListEmpty))
        }
    };
    if info.dst.is_multicast() {
        return flood();
    }
    match fdb.lookup(info.dst, vlan, now) {
        Some(p) if p == in_port => decide(Decision::Drop(DropReason::PortLoopback)),
        Some(p) => match ports.get(p.index()) {
            Some(Some(dst)) if dst.config.enabled => decide(Decision::Unicast(p)),
            Some(Some(_)) => decide(Decision::Drop(DropReason::EgressPortDisabled)),
            // Entries are flushed when a port is removed; treat a stale one as unknown.
            _ => flood(),
        },
        None => flood(),
    }
}

impl Bridge {
    /// An empty bridge.
    pub fn new(config: BridgeConfig) -> Self {
        Bridge {
            fdb: Fdb::new(config.fdb),
            ports: Vec::new(),
            enabled_ports: 0,
            max_ports: config.max_ports.clamp(1, usize::from(u16::MAX) + 1),
            removed: PortCounters::default(),
            unknown_port: 0,
        }
    }

    /// Adds a port and returns its id (the lowest free one).
    pub fn add_port(&mut self, config: PortConfig) -> Result<PortId, BridgeError> {
        check_mtu(config.mtu)?;
        let idx = match self.ports.iter().position(Option::is_none) {
            Some(i) => i,
            None if self.ports.len() < self.max_ports => {
                self.ports.push(None);
                self.ports.len() - 1
            }
            None => return Err(BridgeError::TooManyPorts(self.max_ports)),
        };
        let id = PortId(idx as u16);
        self.fdb.remove_port(id);
        self.fdb.set_port_limit(id, config.max_learned_macs);
        if config.enabled {
            self.enabled_ports += 1;
        }
        if let Some(slot) = self.ports.get_mut(idx) {
            *slot = Some(PortState {
                config,
                counters: PortCounters::default(),
            });
        }
        Ok(id)
    }

    /// Removes a port, flushing its MAC entries (static ones too); its counters are
    /// folded into the bridge totals and returned.
    pub fn remove_port(&mut self, id: PortId) -> Result<PortCounters, BridgeError> {
        let state = self
            .ports
            .get_mut(id.index())
            .and_then(Option::take)
            .ok_or(BridgeError::UnknownPort(id))?;
        if state.config.enabled {
            self.enabled_ports -= 1;
        }
        self.fdb.remove_port(id);
        self.removed.add(&state.counters);
        Ok(state.counters)
    }

    fn state_mut(&mut self, id: PortId) -> Result<&mut PortState, BridgeError> {
        self.ports
            .get_mut(id.index())
            .and_then(Option::as_mut)
            .ok_or(BridgeError::UnknownPort(id))
    }

    /// Replaces a port's configuration, keeping its counters. Disabling flushes its
    /// learned MACs; a new per-port MAC cap applies at once.
    pub fn update_port(&mut self, id: PortId, config: PortConfig) -> Result<(), BridgeError> {
        check_mtu(config.mtu)?;
        let limit = config.max_learned_macs;
        let state = self.state_mut(id)?;
        let (was, is) = (state.config.enabled, config.enabled);
        state.config = config;
        match (was, is) {
            (true, false) => {
                self.enabled_ports -= 1;
                self.fdb.flush_port(id);
            }
            (false, true) => self.enabled_ports += 1,
            _ => {}
        }
        self.fdb.set_port_limit(id, limit);
        Ok(())
    }

    /// Enables or disables a port (carrier up/down, vif disabled by netback).
    pub fn set_port_enabled(&mut self, id: PortId, enabled: bool) -> Result<(), BridgeError> {
        let mut config = self.port(id).ok_or(BridgeError::UnknownPort(id))?.clone();
        config.enabled = enabled;
        self.update_port(id, config)
    }

    /// Changes a port's MTU.
    pub fn set_port_mtu(&mut self, id: PortId, mtu: u32) -> Result<(), BridgeError> {
        check_mtu(mtu)?;
        self.state_mut(id)?.config.mtu = mtu;
        Ok(())
    }

    /// A port's configuration.
    pub fn port(&self, id: PortId) -> Option<&PortConfig> {
        self.ports
            .get(id.index())
            .and_then(Option::as_ref)
            .map(|s| &s.config)
    }

    /// All ports in id order.
    pub fn ports(&self) -> impl Iterator<Item = (PortId, &PortConfig)> + '_ {
        self.ports
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().map(|s| (PortId(i as u16), &s.config)))
    }

    /// A port's counters.
    pub fn port_counters(&self, id: PortId) -> Option<&PortCounters> {
        self.ports
            .get(id.index())
            .and_then(Option::as_ref)
            .map(|s| &s.counters)
    }

    /// Bridge totals: all ports, current and removed, plus frames for unknown ports.
    pub fn counters(&self) -> BridgeCounters {
        let mut ports = self.removed;
        for s in self.ports.iter().flatten() {
            ports.add(&s.counters);
        }
        BridgeCounters {
            ports,
            unknown_port: self.unknown_port,
        }
    }

    /// The MAC table.
    pub fn fdb(&self) -> &Fdb {
        &self.fdb
    }

    /// The MAC table, for `fdb add|del|flush` and configuration.
    pub fn fdb_mut(&mut self) -> &mut Fdb {
        &mut self.fdb
    }

    /// Ages out idle MAC entries; see [`Fdb::expire`].
    pub fn expire(&mut self, now: Timestamp, budget: usize) -> usize {
        self.fdb.expire(now, budget)
    }

    /// Runs one received frame through the pipeline and counts the outcome: on the
    /// ingress port (`rx_*`, `rx_drops`) and, for forwarded frames, `tx_offered` on each
    /// destination.
    pub fn process(
        &mut self,
        in_port: PortId,
        frame: &[u8],
        meta: &FrameMeta,
        now: Timestamp,
    ) -> Verdict {
        let verdict = match self.ports.get(in_port.index()) {
            Some(Some(state)) if state.config.enabled => classify(
                &self.ports,
                self.enabled_ports,
                &mut self.fdb,
                in_port,
                frame,
                meta,
                now,
            ),
            Some(Some(_)) => Verdict::drop(DropReason::PortDisabled),
            _ => {
                self.unknown_port += 1;
                return Verdict::drop(DropReason::UnknownPort);
            }
        };
        self.account(in_port, frame.len(), verdict.decision);
        verdict
    }

    /// Runs a batch of frames received on one port, writing one verdict per frame into
    /// `out`. Processes `min(frames.len(), out.len())` frames and returns that count.
    pub fn process_batch(
        &mut self,
        in_port: PortId,
        frames: &[RxFrame<'_>],
        now: Timestamp,
        out: &mut [Verdict],
    ) -> usize {
        let n = frames.len().min(out.len());
        for (f, slot) in frames.iter().zip(out.iter_mut()) {
            *slot = self.process(in_port, f.data, &f.meta, now);
        }
        n
    }

    fn account(&mut self, in_port: PortId, len: usize, decision: Decision) {
        let len = len as u64;
        match decision {
            Decision::Unicast(dst) => {
                if let Some(Some(d)) = self.ports.get_mut(dst.index()) {
                    d.counters.tx_offered += 1;
                }
            }
            Decision::Flood => {
                for (i, s) in self.ports.iter_mut().enumerate() {
                    if let Some(s) = s {
                        if s.config.enabled && i != in_port.index() {
                            s.counters.tx_offered += 1;
                        }
                    }
                }
            }
            Decision::Drop(_) => {}
        }
        if let Some(Some(s)) = self.ports.get_mut(in_port.index()) {
            let c = &mut s.counters;
            c.rx_packets += 1;
            c.rx_bytes += len;
            match decision {
                Decision::Drop(r) => c.rx_drops[r] += 1,
                Decision::Unicast(_) => c.rx_forwarded += 1,
                Decision::Flood => {
                    c.rx_forwarded += 1;
                    c.rx_flooded += 1;
                }
            }
        }
    }

    /// The ports a [`Decision::Flood`] from `in_port` goes to: every enabled port but
    /// the ingress one, in id order.
    pub fn flood_ports(&self, in_port: PortId) -> impl Iterator<Item = PortId> + '_ {
        self.ports
            .iter()
            .enumerate()
            .filter(move |(i, s)| {
                *i != in_port.index() && s.as_ref().is_some_and(|s| s.config.enabled)
            })
            .map(|(i, _)| PortId(i as u16))
    }

    /// [`flood_ports`](Self::flood_ports) written into a caller-owned vector (cleared
    /// first), so the shell can then call `&mut self` methods per destination without
    /// allocating once the vector has grown to the port count.
    pub fn flood_ports_into(&self, in_port: PortId, out: &mut Vec<PortId>) {
        out.clear();
        out.extend(self.flood_ports(in_port));
    }

    /// Whether a frame may leave through `dst`: the port exists and is enabled, a tagged
    /// frame is not sent to an untagged-only port, and the frame fits the port's MTU —
    /// for a plain frame its L2 payload (frame minus Ethernet and VLAN headers) must be
    /// at most the MTU; for a GSO frame each segment (L3 + L4 headers + `gso.size`) must
    /// be (Linux `is_skb_forwardable`, `skb_gso_validate_network_len`; robustness.md §3
    /// b4). Counts nothing: report the outcome with [`record_tx`](Self::record_tx) or
    /// [`record_tx_drop`](Self::record_tx_drop).
    pub fn egress_check(
        &self,
        dst: PortId,
        info: &FrameInfo,
        meta: &FrameMeta,
    ) -> Result<(), DropReason> {
        let Some(Some(port)) = self.ports.get(dst.index()) else {
            return Err(DropReason::UnknownPort);
        };
        let cfg = &port.config;
        if !cfg.enabled {
            return Err(DropReason::PortDisabled);
        }
        if cfg.vlan_mode == VlanMode::Untagged && is_tagged(info) {
            return Err(DropReason::EgressVlanFilter);
        }
        let l2 = info.l2_header_len() as u64;
        let size = match (meta.gso, info.l4_header_len()) {
            (Some(gso), Some(l4_hdr)) if info.l4_offset != 0 => {
                u64::from(info.l4_offset).saturating_sub(l2) + l4_hdr as u64 + u64::from(gso.size)
            }
            _ => u64::from(info.len).saturating_sub(l2),
        };
        if size > u64::from(cfg.mtu) {
            return Err(DropReason::EgressMtuExceeded);
        }
        Ok(())
    }

    /// Records a frame of `bytes` transmitted on `port` (a port that no longer exists is
    /// counted under the bridge's `unknown_port`, so the frame is not lost from the sums).
    pub fn record_tx(&mut self, port: PortId, bytes: usize) {
        match self.ports.get_mut(port.index()) {
            Some(Some(s)) => {
                s.counters.tx_packets += 1;
                s.counters.tx_bytes += bytes as u64;
            }
            _ => self.unknown_port += 1,
        }
    }

    /// Records a frame offered to `port` but dropped there (egress check failure, full
    /// queue, write error).
    pub fn record_tx_drop(&mut self, port: PortId, reason: DropReason) {
        match self.ports.get_mut(port.index()) {
            Some(Some(s)) => s.counters.tx_drops[reason] += 1,
            _ => self.unknown_port += 1,
        }
    }
}

#[cfg(test)]
mod tests;
