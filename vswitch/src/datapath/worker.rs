//! One datapath worker thread.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use hypervisor::evtchn::EventFd;
use hypervisor::hv::Hypervisor;
use tokio::sync::mpsc as tmpsc;
use tracing::{debug, error, info, warn};

use super::epoll::Epoll;
use super::pool::BufferPool;
use super::pool::HEADROOM;
use super::port::{Pkt, Port, PortCtx};
use super::report::{BridgeReport, CapturedFrame, Direction, FdbEntryReport, PortReport};
use super::{BridgeSettings, Cmd, DatapathError};
use crate::bridge::{Bridge, BridgeConfig, Decision};
use crate::counters::DropReason;
use crate::dhcp::server::{DhcpOutcome, DhcpServer};
use crate::impair::{ImpairConfig, ImpairQueue, ImpairVerdict};
use crate::meta::FrameMeta;
use crate::port::{PortConfig, PortId};
use crate::router::{Fragmenter, RouteAction, Router, RouterConfig, RouterPortConfig};
use crate::time::Timestamp;
use crate::wire::vlan::VlanId;
use crate::wire::FrameInfo;
use crate::MAX_BATCH;

const WAKE_TOKEN: u64 = 0;
/// How many ready ports one round serves before looking at the clock and commands again.
const EVENTS: usize = 256;
/// Aging work per bridge per tick.
const AGING_BUDGET: usize = 4096;

struct CaptureSink {
    tx: tmpsc::Sender<CapturedFrame>,
    remaining: Option<u64>,
}

/// What a port is attached to: a bridge (L2 pipeline) or a router (route mode).
#[derive(Clone, Debug, PartialEq, Eq)]
enum Attachment {
    Bridge(String, PortId),
    Router(String, PortId),
}

impl Attachment {
    fn pipeline(&self) -> &str {
        match self {
            Attachment::Bridge(n, _) | Attachment::Router(n, _) => n,
        }
    }
}

struct Slot {
    port: Box<dyn Port>,
    fds: Vec<RawFd>,
    attached: Option<Attachment>,
    captures: Vec<CaptureSink>,
    /// A rig's link impairment (delay/loss) on this port, both directions.
    impair: Option<Box<SlotImpair>>,
    /// Whether the control plane wants the port forwarding (its `PortConfig.enabled`).
    admin_enabled: bool,
    /// The driver's carrier as last applied to the pipeline: like the kernel bridge, a
    /// port without carrier (a vif before its rings connect, after a fatal error or a
    /// stall) is disabled, so nothing is flooded to it and its MACs are flushed.
    link_up: bool,
}

/// Frames held by a port's impairment: received ones (guest → switch) and ones the
/// switch sent towards the port. Each held frame keeps a pool reference.
struct SlotImpair {
    ingress: ImpairQueue<Pkt>,
    egress: ImpairQueue<Pkt>,
}

impl SlotImpair {
    fn new(config: ImpairConfig) -> Self {
        let seed: u64 = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        SlotImpair {
            ingress: ImpairQueue::new(config, seed),
            egress: ImpairQueue::new(config, seed.rotate_left(17) ^ 0x9E37_79B9),
        }
    }

    fn next_due(&self) -> Option<Timestamp> {
        match (self.ingress.next_due(), self.egress.next_due()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Lifted and nothing left waiting: the slot can forget it.
    fn finished(&self) -> bool {
        self.ingress.config().is_noop() && self.ingress.is_empty() && self.egress.is_empty()
    }

    fn counters(&self) -> [(&'static str, u64); 6] {
        let (i, e) = (self.ingress.stats(), self.egress.stats());
        [
            ("impair_rx_delayed", i.delayed),
            ("impair_rx_lost", i.lost),
            ("impair_rx_overflow", i.overflow),
            ("impair_tx_delayed", e.delayed),
            ("impair_tx_lost", e.lost),
            ("impair_tx_overflow", e.overflow),
        ]
    }
}

struct RouterState {
    router: Router,
    /// Port id → slot.
    slots: HashMap<PortId, usize>,
    /// Answers DHCP from routed vifs that have `ip=` (static bindings only).
    dhcp: Option<DhcpServer>,
}

struct BridgeState {
    bridge: Bridge,
    /// Port id → slot.
    slots: HashMap<PortId, usize>,
    /// The host port's slot (deleted with the bridge).
    host: Option<usize>,
}

pub(crate) struct Worker {
    name: String,
    epoll: Epoll,
    hv: Arc<Hypervisor>,
    pool: BufferPool,
    slots: Vec<Option<Slot>>,
    by_name: HashMap<String, usize>,
    bridges: HashMap<String, BridgeState>,
    routers: HashMap<String, RouterState>,
    /// Where routers write frames they synthesise (ARP, ICMP errors, fragments).
    scratch: Vec<u8>,
    /// Frames too short to parse that reached a router port.
    router_runts: u64,
    /// DHCP messages from routed vifs that got no answer (no binding, malformed…).
    router_dhcp_drops: u64,
    cmd_rx: Receiver<Cmd>,
    wake: Arc<EventFd>,
    tick: Duration,
    epoch: Instant,
    rx: Vec<Pkt>,
    flood: Vec<PortId>,
    again: Vec<usize>,
    dirty: Vec<usize>,
    unattached_drops: u64,
    stop: bool,
}

fn mac_from(m: crate::wire::MacAddr) -> String {
    m.to_string()
}

impl Worker {
    pub(crate) fn new(
        name: String,
        hv: Arc<Hypervisor>,
        pool: BufferPool,
        cmd_rx: Receiver<Cmd>,
        wake: Arc<EventFd>,
        tick: Duration,
    ) -> std::io::Result<Worker> {
        let epoll = Epoll::new()?;
        epoll.add(wake.as_raw_fd(), WAKE_TOKEN)?;
        Ok(Worker {
            name,
            epoll,
            hv,
            pool,
            slots: Vec::new(),
            by_name: HashMap::new(),
            bridges: HashMap::new(),
            routers: HashMap::new(),
            scratch: vec![0u8; 4096],
            router_runts: 0,
            router_dhcp_drops: 0,
            cmd_rx,
            wake,
            tick,
            epoch: Instant::now(),
            rx: Vec::with_capacity(MAX_BATCH),
            flood: Vec::new(),
            again: Vec::new(),
            dirty: Vec::new(),
            unattached_drops: 0,
            stop: false,
        })
    }

    fn now(&self) -> Timestamp {
        Timestamp::from_millis(self.epoch.elapsed().as_millis() as u64)
    }

    pub(crate) fn run(&mut self) {
        info!(
            "datapath worker {} running ({} buffers)",
            self.name,
            self.pool.capacity()
        );
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; EVENTS];
        let mut last_tick = Instant::now();
        let mut ready: Vec<usize> = Vec::new();
        while !self.stop {
            let timeout = if self.again.is_empty() {
                self.next_timeout_ms()
            } else {
                0
            };
            let n = match self.epoll.wait(&mut events, timeout) {
                Ok(n) => n,
                Err(e) => {
                    error!("datapath worker {}: epoll failed: {e}", self.name);
                    break;
                }
            };
            ready.clear();
            ready.append(&mut self.again);
            let mut commands = false;
            for ev in &events[..n] {
                let token = ev.u64;
                if token == WAKE_TOKEN {
                    commands = true;
                } else {
                    ready.push((token - 1) as usize);
                }
            }
            ready.sort_unstable();
            ready.dedup();
            for &slot in &ready {
                self.service(slot);
            }
            self.flush_dirty();
            if commands {
                self.wake.consume();
                self.drain_commands();
                self.flush_dirty();
            }
            if self.run_port_timers() {
                self.flush_dirty();
            }
            if self.run_impairments() {
                self.flush_dirty();
            }
            if last_tick.elapsed() >= self.tick {
                last_tick = Instant::now();
                self.on_tick();
                self.flush_dirty();
            }
        }
        // Close every port so retained buffers and grants are released.
        let names: Vec<String> = self.by_name.keys().cloned().collect();
        for n in names {
            let _ = self.remove_port(&n);
        }
        info!("datapath worker {} stopped", self.name);
    }

    fn next_timeout_ms(&self) -> i32 {
        let now = self.now();
        let mut wait = self.tick;
        for s in self.slots.iter().flatten() {
            if let Some(t) = s.port.next_timer() {
                wait = wait.min(t.saturating_since(now));
            }
            if let Some(t) = s.impair.as_ref().and_then(|i| i.next_due()) {
                wait = wait.min(t.saturating_since(now));
            }
        }
        wait.as_millis().min(i32::MAX as u128) as i32
    }

    fn on_tick(&mut self) {
        let now = self.now();
        for b in self.bridges.values_mut() {
            b.bridge.expire(now, AGING_BUDGET);
        }
        for r in self.routers.values_mut() {
            r.router.expire(now, AGING_BUDGET);
        }
    }

    /// Runs the ports whose timers are due (every loop pass, so a timer fires at its
    /// time and never makes the loop spin); true if any ran.
    fn run_port_timers(&mut self) -> bool {
        let now = self.now();
        let mut ran = false;
        for i in 0..self.slots.len() {
            let due = match &self.slots[i] {
                Some(s) => s.port.next_timer().is_some_and(|t| t <= now),
                None => false,
            };
            if due {
                let Worker {
                    slots, pool, hv, ..
                } = self;
                if let Some(s) = slots[i].as_mut() {
                    let mut ctx = PortCtx::new(pool, now, hv);
                    s.port.on_timer(&mut ctx);
                }
                self.mark_dirty(i);
                ran = true;
            }
        }
        ran
    }

    fn mark_dirty(&mut self, slot: usize) {
        if !self.dirty.contains(&slot) {
            self.dirty.push(slot);
        }
    }

    fn flush_dirty(&mut self) {
        let now = self.now();
        let dirty = std::mem::take(&mut self.dirty);
        for slot in dirty {
            let Worker {
                slots, pool, hv, ..
            } = self;
            if let Some(Some(s)) = slots.get_mut(slot) {
                let mut ctx = PortCtx::new(pool, now, hv);
                s.port.flush(&mut ctx);
            }
            self.sync_link(slot);
        }
        // Ports whose fd set changed (a vif got its rings) are re-registered.
        for i in 0..self.slots.len() {
            let changed = self.slots[i]
                .as_mut()
                .is_some_and(|s| s.port.take_fds_changed());
            if changed {
                self.register_fds(i);
            }
        }
    }

    /// Applies a carrier change of the port in `slot` to its bridge or router port.
    fn sync_link(&mut self, slot: usize) {
        let Some(Some(s)) = self.slots.get_mut(slot) else {
            return;
        };
        let carrier = s.port.carrier();
        if carrier == s.link_up {
            return;
        }
        s.link_up = carrier;
        let enabled = s.admin_enabled && carrier;
        let applied = match &s.attached {
            Some(Attachment::Bridge(b, pid)) => self
                .bridges
                .get_mut(b)
                .is_some_and(|b| b.bridge.set_port_enabled(*pid, enabled).is_ok()),
            Some(Attachment::Router(r, pid)) => self
                .routers
                .get_mut(r)
                .is_some_and(|r| r.router.set_port_enabled(*pid, enabled).is_ok()),
            None => false,
        };
        if applied {
            info!(
                "{}: {} carrier {}",
                self.name,
                s.port.name(),
                if carrier { "on" } else { "off" }
            );
        }
    }

    fn register_fds(&mut self, slot: usize) {
        let Some(s) = self.slots[slot].as_mut() else {
            return;
        };
        for fd in s.fds.drain(..) {
            self.epoll.del(fd);
        }
        let fds = s.port.fds();
        for &fd in &fds {
            if let Err(e) = self.epoll.add(fd, slot as u64 + 1) {
                warn!(
                    "{}: cannot poll fd {fd} of port {}: {e}",
                    self.name,
                    s.port.name()
                );
            }
        }
        s.fds = fds;
        // Something may already be waiting.
        self.again.push(slot);
    }

    // ---- the fast path -----------------------------------------------------------------------

    fn service(&mut self, slot: usize) {
        let now = self.now();
        let mut rx = std::mem::take(&mut self.rx);
        rx.clear();
        let (more, attached) = {
            let Worker {
                slots, pool, hv, ..
            } = self;
            let Some(Some(s)) = slots.get_mut(slot) else {
                self.rx = rx;
                return;
            };
            let mut ctx = PortCtx::new(pool, now, hv);
            let more = s.port.receive(&mut ctx, &mut rx, MAX_BATCH);
            (more, s.attached.clone())
        };
        if more {
            self.again.push(slot);
        }
        self.mark_dirty(slot);
        for pkt in &rx {
            self.capture(slot, Direction::Rx, pkt);
            if self.hold_ingress(slot, pkt, now) {
                continue;
            }
            self.ingest(attached.as_ref(), pkt, now);
        }
        if let Some(Attachment::Router(router, _)) = &attached {
            self.route_ready(router);
        }
        {
            let Worker {
                slots, pool, hv, ..
            } = self;
            if let Some(Some(s)) = slots.get_mut(slot) {
                let mut ctx = PortCtx::new(pool, now, hv);
                s.port.complete_rx(&mut ctx);
            }
        }
        self.rx = rx;
    }

    /// A received frame enters its pipeline; the buffer is released afterwards.
    fn ingest(&mut self, attached: Option<&Attachment>, pkt: &Pkt, now: Timestamp) {
        match attached {
            Some(Attachment::Bridge(bridge, pid)) => self.forward(bridge, *pid, pkt, now),
            Some(Attachment::Router(router, pid)) => self.route(router, *pid, pkt, now),
            None => self.unattached_drops += 1,
        }
        self.pool.release(pkt.buf);
    }

    /// Applies the ingress side of a port's impairment: true when the frame was lost
    /// (released) or held (kept for later), false when it goes on now.
    fn hold_ingress(&mut self, slot: usize, pkt: &Pkt, now: Timestamp) -> bool {
        let Some(Some(s)) = self.slots.get_mut(slot) else {
            return false;
        };
        let Some(imp) = s.impair.as_mut() else {
            return false;
        };
        match imp.ingress.decide(now) {
            ImpairVerdict::Pass => false,
            ImpairVerdict::Hold(due) => {
                imp.ingress.push(due, *pkt);
                true
            }
            ImpairVerdict::Lose | ImpairVerdict::Overflow => {
                self.pool.release(pkt.buf);
                true
            }
        }
    }

    /// Applies the egress side of port `slot`'s impairment to a frame the pipeline sends
    /// there: `None` to transmit now, else held (a pool reference taken) or lost.
    fn hold_egress(
        slots: &mut [Option<Slot>],
        pool: &mut BufferPool,
        slot: usize,
        pkt: &Pkt,
        now: Timestamp,
    ) -> Option<Result<(), DropReason>> {
        let imp = slots.get_mut(slot)?.as_mut()?.impair.as_mut()?;
        match imp.egress.decide(now) {
            ImpairVerdict::Pass => None,
            ImpairVerdict::Hold(due) => {
                pool.retain(pkt.buf);
                imp.egress.push(due, *pkt);
                Some(Ok(()))
            }
            ImpairVerdict::Lose | ImpairVerdict::Overflow => Some(Err(DropReason::LinkImpairment)),
        }
    }

    /// Releases the frames of impaired ports that are due; true if any moved.
    fn run_impairments(&mut self) -> bool {
        let now = self.now();
        let mut moved = false;
        for slot in 0..self.slots.len() {
            if self.slots[slot].as_ref().is_none_or(|s| s.impair.is_none()) {
                continue;
            }
            // Frames the guest sent: into the pipeline.
            let attached = self.slots[slot].as_ref().and_then(|s| s.attached.clone());
            let mut routed = false;
            while let Some(pkt) = self.slots[slot]
                .as_mut()
                .and_then(|s| s.impair.as_mut())
                .and_then(|i| i.ingress.pop_due(now))
            {
                self.ingest(attached.as_ref(), &pkt, now);
                routed = true;
                moved = true;
            }
            if routed {
                if let Some(Attachment::Router(router, _)) = &attached {
                    self.route_ready(router);
                }
            }
            // Frames towards the guest: out of the port.
            loop {
                let Worker {
                    slots, pool, hv, ..
                } = self;
                let Some(s) = slots[slot].as_mut() else { break };
                let Some(pkt) = s.impair.as_mut().and_then(|i| i.egress.pop_due(now)) else {
                    break;
                };
                if let Ok(info) = FrameInfo::parse(pool.bytes(pkt.buf, pkt.off, pkt.len)) {
                    let mut ctx = PortCtx::new(pool, now, hv);
                    // A failure now is the port's own (ring full…), counted by its driver.
                    let _ = s.port.transmit(&mut ctx, &pkt, &info);
                }
                self.pool.release(pkt.buf);
                self.mark_dirty(slot);
                moved = true;
            }
            if let Some(s) = self.slots[slot].as_mut() {
                if s.impair.as_ref().is_some_and(|i| i.finished()) {
                    s.impair = None;
                }
            }
        }
        moved
    }

    fn set_impairment(&mut self, port: &str, config: ImpairConfig) -> Result<(), DatapathError> {
        let slot = *self
            .by_name
            .get(port)
            .ok_or_else(|| DatapathError::NoSuchPort(port.to_string()))?;
        let Some(Some(s)) = self.slots.get_mut(slot) else {
            return Err(DatapathError::NoSuchPort(port.to_string()));
        };
        match s.impair.as_mut() {
            Some(imp) => {
                imp.ingress.set_config(config);
                imp.egress.set_config(config);
            }
            None if config.is_noop() => {}
            None => s.impair = Some(Box::new(SlotImpair::new(config))),
        }
        Ok(())
    }

    fn forward(&mut self, bridge: &str, in_port: PortId, pkt: &Pkt, now: Timestamp) {
        let Some(b) = self.bridges.get_mut(bridge) else {
            return;
        };
        let frame = self.pool.bytes(pkt.buf, pkt.off, pkt.len);
        let verdict = b.bridge.process(in_port, frame, &pkt.meta, now);
        match verdict.decision {
            Decision::Drop(_) => {}
            Decision::Unicast(dst) => self.deliver(bridge, in_port, dst, &verdict.info, pkt, true),
            Decision::Flood => {
                let mut flood = std::mem::take(&mut self.flood);
                if let Some(b) = self.bridges.get(bridge) {
                    b.bridge.flood_ports_into(in_port, &mut flood);
                }
                for &dst in &flood {
                    self.deliver(bridge, in_port, dst, &verdict.info, pkt, false);
                }
                self.flood = flood;
            }
        }
    }

    fn deliver(
        &mut self,
        bridge: &str,
        in_port: PortId,
        dst: PortId,
        info: &FrameInfo,
        pkt: &Pkt,
        unicast: bool,
    ) {
        let now = self.now();
        let Worker {
            bridges,
            slots,
            pool,
            hv,
            ..
        } = self;
        let Some(b) = bridges.get_mut(bridge) else {
            return;
        };
        if let Err(r) = b.bridge.egress_check(dst, info, &pkt.meta) {
            b.bridge.record_tx_drop(dst, r);
            return;
        }
        let Some(&slot) = b.slots.get(&dst) else {
            b.bridge.record_tx_drop(dst, DropReason::UnknownPort);
            return;
        };
        let Some(Some(s)) = slots.get_mut(slot) else {
            b.bridge.record_tx_drop(dst, DropReason::UnknownPort);
            return;
        };
        if s.impair.is_some() {
            match Self::hold_egress(slots, pool, slot, pkt, now) {
                Some(Ok(())) => {
                    b.bridge.record_tx(dst, pkt.len);
                    self.capture(slot, Direction::Tx, pkt);
                    return;
                }
                Some(Err(r)) => {
                    b.bridge.record_tx_drop(dst, r);
                    return;
                }
                None => {}
            }
        }
        let Some(Some(s)) = slots.get_mut(slot) else {
            return;
        };
        let exclusive = unicast && pool.holders(pkt.buf) == 1 && s.captures.is_empty();
        let mut ctx = PortCtx {
            ingress: Some(in_port),
            exclusive,
            ..PortCtx::new(pool, now, hv)
        };
        match s.port.transmit(&mut ctx, pkt, info) {
            Ok(()) => b.bridge.record_tx(dst, pkt.len),
            Err(r) => b.bridge.record_tx_drop(dst, r),
        }
        self.mark_dirty(slot);
        if !exclusive {
            self.capture(slot, Direction::Tx, pkt);
        }
    }

    /// Route mode: the router rewrites the frame in place and names the egress port; it
    /// may also synthesise one frame (ARP reply/request, ICMP error) into `scratch`.
    fn route(&mut self, router: &str, in_port: PortId, pkt: &Pkt, now: Timestamp) {
        let Worker {
            routers,
            pool,
            scratch,
            router_runts,
            ..
        } = self;
        let Some(r) = routers.get_mut(router) else {
            return;
        };
        let frame = pool.bytes_mut(pkt.buf, pkt.off, pkt.len);
        let Ok(info) = FrameInfo::parse(frame) else {
            *router_runts += 1;
            return;
        };
        let v = r
            .router
            .process(in_port, frame, &info, &pkt.meta, now, scratch);
        if let Some(e) = v.emit {
            self.emit_scratch(router, e.port, e.len, FrameMeta::default());
        }
        match v.action {
            RouteAction::Forward(p) => self.router_deliver(router, p, &info, pkt),
            RouteAction::Fragment { port, mtu, .. } => {
                self.route_fragments(router, port, mtu, pkt, &info)
            }
            RouteAction::Queued(_) | RouteAction::Local | RouteAction::Drop(_) => {}
            RouteAction::Dhcp => {
                let frame = self.pool.bytes(pkt.buf, pkt.off, pkt.len);
                let outcome = match self.routers.get_mut(router).and_then(|r| r.dhcp.as_mut()) {
                    Some(d) => d.handle(in_port, frame, &info, now, &mut self.scratch),
                    None => DhcpOutcome::Drop(DropReason::DhcpUnsupported),
                };
                match outcome {
                    DhcpOutcome::Reply { len, .. } => {
                        self.emit_scratch(router, in_port, len, FrameMeta::default())
                    }
                    DhcpOutcome::NoReply => {}
                    DhcpOutcome::Drop(_) => self.router_dhcp_drops += 1,
                }
            }
        }
    }

    fn route_fragments(
        &mut self,
        router: &str,
        port: PortId,
        mtu: u32,
        pkt: &Pkt,
        info: &FrameInfo,
    ) {
        let frame = self.pool.bytes(pkt.buf, pkt.off, pkt.len);
        let Ok(mut frag) = Fragmenter::new(frame, info, mtu) else {
            if let Some(r) = self.routers.get_mut(router) {
                r.router.record_tx_drop(port, DropReason::EgressMtuExceeded);
            }
            return;
        };
        loop {
            let frame = self.pool.bytes(pkt.buf, pkt.off, pkt.len);
            match frag.next_fragment(frame, &mut self.scratch) {
                Some(Ok(len)) => self.emit_scratch(router, port, len, FrameMeta::default()),
                Some(Err(_)) => {
                    if let Some(r) = self.routers.get_mut(router) {
                        r.router.record_tx_drop(port, DropReason::EgressMtuExceeded);
                    }
                    return;
                }
                None => return,
            }
        }
    }

    /// Sends `scratch[..len]` out of a router port (copied into a pool buffer).
    fn emit_scratch(&mut self, router: &str, port: PortId, len: usize, meta: FrameMeta) {
        let Some(buf) = self.pool.alloc() else {
            if let Some(r) = self.routers.get_mut(router) {
                r.router.record_tx_drop(port, DropReason::TxQueueFull);
            }
            return;
        };
        let len = len.min(self.scratch.len());
        self.pool
            .bytes_mut(buf, HEADROOM, len)
            .copy_from_slice(&self.scratch[..len]);
        let pkt = Pkt {
            buf,
            off: HEADROOM,
            len,
            meta,
        };
        match FrameInfo::parse(self.pool.bytes(buf, HEADROOM, len)) {
            Ok(info) => self.router_deliver(router, port, &info, &pkt),
            Err(_) => {
                if let Some(r) = self.routers.get_mut(router) {
                    r.router.record_tx_drop(port, DropReason::RuntFrame);
                }
            }
        }
        self.pool.release(buf);
    }

    /// Frames whose next hop got resolved.
    fn route_ready(&mut self, router: &str) {
        loop {
            let Some(r) = self.routers.get_mut(router) else {
                return;
            };
            let Some(buf) = self.pool.alloc() else { return };
            let pool = &mut self.pool;
            let got = r.router.pop_ready(|ready, bytes| {
                let len = bytes.len().min(pool.bytes(buf, HEADROOM, usize::MAX).len());
                pool.bytes_mut(buf, HEADROOM, len)
                    .copy_from_slice(&bytes[..len]);
                (ready.port, ready.meta, len)
            });
            let Some((port, meta, len)) = got else {
                self.pool.release(buf);
                return;
            };
            let pkt = Pkt {
                buf,
                off: HEADROOM,
                len,
                meta,
            };
            if let Ok(info) = FrameInfo::parse(self.pool.bytes(buf, HEADROOM, len)) {
                self.router_deliver(router, port, &info, &pkt);
            }
            self.pool.release(buf);
        }
    }

    fn router_deliver(&mut self, router: &str, dst: PortId, info: &FrameInfo, pkt: &Pkt) {
        let now = self.now();
        let Worker {
            routers,
            slots,
            pool,
            hv,
            ..
        } = self;
        let Some(r) = routers.get_mut(router) else {
            return;
        };
        let Some(&slot) = r.slots.get(&dst) else {
            r.router.record_tx_drop(dst, DropReason::UnknownPort);
            return;
        };
        match Self::hold_egress(slots, pool, slot, pkt, now) {
            Some(Ok(())) => {
                r.router.record_tx(dst, pkt.len);
                self.capture(slot, Direction::Tx, pkt);
                return;
            }
            Some(Err(reason)) => {
                r.router.record_tx_drop(dst, reason);
                return;
            }
            None => {}
        }
        let Some(Some(s)) = slots.get_mut(slot) else {
            r.router.record_tx_drop(dst, DropReason::UnknownPort);
            return;
        };
        let mut ctx = PortCtx::new(pool, now, hv);
        match s.port.transmit(&mut ctx, pkt, info) {
            Ok(()) => r.router.record_tx(dst, pkt.len),
            Err(reason) => r.router.record_tx_drop(dst, reason),
        }
        if let Some(&slot) = r.slots.get(&dst) {
            self.mark_dirty(slot);
            self.capture(slot, Direction::Tx, pkt);
        }
    }

    fn capture(&mut self, slot: usize, dir: Direction, pkt: &Pkt) {
        let Some(Some(s)) = self.slots.get_mut(slot) else {
            return;
        };
        if s.captures.is_empty() {
            return;
        }
        let data = self.pool.bytes(pkt.buf, pkt.off, pkt.len).to_vec();
        s.captures.retain_mut(|c| {
            if c.remaining == Some(0) || c.tx.is_closed() {
                return false;
            }
            let frame = CapturedFrame {
                time: SystemTime::now(),
                dir,
                data: data.clone(),
            };
            match c.tx.try_send(frame) {
                Ok(()) => {
                    if let Some(r) = c.remaining.as_mut() {
                        *r -= 1;
                    }
                    c.remaining != Some(0)
                }
                // A slow reader loses frames rather than slowing the switch.
                Err(tmpsc::error::TrySendError::Full(_)) => true,
                Err(tmpsc::error::TrySendError::Closed(_)) => false,
            }
        });
    }

    // ---- commands ----------------------------------------------------------------------------

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

    fn command(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::AddBridge {
                name,
                settings,
                host,
                reply,
            } => {
                let _ = reply.send(self.add_bridge(name, settings, host));
            }
            Cmd::DelBridge { name, reply } => {
                let _ = reply.send(self.del_bridge(&name));
            }
            Cmd::AddPort { port, reply } => {
                let _ = reply.send(self.add_port(port).map(|_| ()));
            }
            Cmd::RemovePort { name, reply } => {
                let _ = reply.send(self.remove_port(&name));
            }
            Cmd::Attach {
                port,
                bridge,
                config,
                reply,
            } => {
                let _ = reply.send(self.attach(&port, &bridge, config));
            }
            Cmd::Detach { port, reply } => {
                let _ = reply.send(self.detach(&port));
            }
            Cmd::UpdatePort {
                port,
                config,
                reply,
            } => {
                let _ = reply.send(self.update_port(&port, config));
            }
            Cmd::WithPort { port, f, reply } => {
                let now = self.now();
                let result = match self.by_name.get(&port).copied() {
                    Some(slot) => {
                        let r = {
                            let Worker {
                                slots, pool, hv, ..
                            } = self;
                            match slots[slot].as_mut() {
                                Some(s) => {
                                    let mut ctx = PortCtx::new(pool, now, hv);
                                    f(s.port.as_mut(), &mut ctx)
                                }
                                None => Err(DatapathError::NoSuchPort(port.clone())),
                            }
                        };
                        self.mark_dirty(slot);
                        r
                    }
                    None => Err(DatapathError::NoSuchPort(port)),
                };
                let _ = reply.send(result);
            }
            Cmd::Ports { reply } => {
                let _ = reply.send(Ok(self.port_reports()));
            }
            Cmd::Bridges { reply } => {
                let _ = reply.send(Ok(self.bridge_reports()));
            }
            Cmd::Fdb { bridge, reply } => {
                let _ = reply.send(self.fdb_rows(&bridge));
            }
            Cmd::FdbAdd {
                bridge,
                mac,
                port,
                reply,
            } => {
                let _ = reply.send(self.fdb_add(&bridge, mac, &port));
            }
            Cmd::FdbDel { bridge, mac, reply } => {
                let _ = reply.send(match self.bridges.get_mut(&bridge) {
                    Some(b) => {
                        if b.bridge.fdb_mut().remove(mac, VlanId::NONE) {
                            Ok(())
                        } else {
                            Err(DatapathError::Failed(format!(
                                "no entry for {mac} in {bridge}"
                            )))
                        }
                    }
                    None => Err(DatapathError::NoSuchBridge(bridge)),
                });
            }
            Cmd::Capture {
                port,
                sink,
                count,
                reply,
            } => {
                let r = match self
                    .by_name
                    .get(&port)
                    .and_then(|&s| self.slots[s].as_mut())
                {
                    Some(s) => {
                        s.captures.push(CaptureSink {
                            tx: sink,
                            remaining: count,
                        });
                        Ok(())
                    }
                    None => Err(DatapathError::NoSuchPort(port)),
                };
                let _ = reply.send(r);
            }
            Cmd::AddRouter {
                name,
                config,
                reply,
            } => {
                let _ = reply.send(self.add_router(name, config));
            }
            Cmd::DelRouter { name, reply } => {
                let _ = reply.send(self.del_router(&name));
            }
            Cmd::AttachRouter {
                port,
                router,
                config,
                reply,
            } => {
                let _ = reply.send(self.attach_router(&port, &router, config));
            }
            Cmd::WithRouter { name, f, reply } => {
                let now = self.now();
                let r = match self.routers.get_mut(&name) {
                    Some(r) => f(&mut r.router, &mut r.dhcp, now),
                    None => Err(DatapathError::NoSuchBridge(name)),
                };
                let _ = reply.send(r);
            }
            Cmd::RouterRoute {
                router,
                route,
                add,
                reply,
            } => {
                let r = match self.routers.get_mut(&router) {
                    Some(r) => {
                        if add {
                            r.router.add_route(route);
                        } else {
                            r.router.remove_route(route.dest);
                        }
                        Ok(())
                    }
                    None => Err(DatapathError::NoSuchBridge(router)),
                };
                let _ = reply.send(r);
            }
            Cmd::SetImpairment {
                port,
                config,
                reply,
            } => {
                let _ = reply.send(self.set_impairment(&port, config));
            }
            Cmd::Shutdown => self.stop = true,
        }
    }

    fn add_port(&mut self, port: Box<dyn Port>) -> Result<usize, DatapathError> {
        let name = port.name().to_string();
        if self.by_name.contains_key(&name) {
            return Err(DatapathError::Exists(name));
        }
        let slot = match self.slots.iter().position(Option::is_none) {
            Some(i) => i,
            None => {
                self.slots.push(None);
                self.slots.len() - 1
            }
        };
        self.slots[slot] = Some(Slot {
            port,
            fds: Vec::new(),
            attached: None,
            captures: Vec::new(),
            impair: None,
            admin_enabled: true,
            link_up: true,
        });
        self.by_name.insert(name.clone(), slot);
        self.register_fds(slot);
        debug!("{}: port {name} added", self.name);
        Ok(slot)
    }

    fn remove_port(&mut self, name: &str) -> Result<(), DatapathError> {
        let slot = *self
            .by_name
            .get(name)
            .ok_or_else(|| DatapathError::NoSuchPort(name.to_string()))?;
        let _ = self.detach(name);
        let now = self.now();
        if let Some(mut s) = self.slots[slot].take() {
            for fd in s.fds.drain(..) {
                self.epoll.del(fd);
            }
            if let Some(mut imp) = s.impair.take() {
                for p in imp.ingress.drain().chain(imp.egress.drain()) {
                    self.pool.release(p.buf);
                }
            }
            let mut ctx = PortCtx::new(&mut self.pool, now, &self.hv);
            s.port.close(&mut ctx);
        }
        self.by_name.remove(name);
        self.again.retain(|&s| s != slot);
        self.dirty.retain(|&s| s != slot);
        debug!("{}: port {name} removed", self.name);
        Ok(())
    }

    fn add_bridge(
        &mut self,
        name: String,
        settings: BridgeSettings,
        host: Option<(Box<dyn Port>, PortConfig)>,
    ) -> Result<(), DatapathError> {
        if self.bridges.contains_key(&name) {
            return Err(DatapathError::Exists(name));
        }
        let bridge = Bridge::new(BridgeConfig {
            fdb: settings.fdb,
            ..BridgeConfig::default()
        });
        self.bridges.insert(
            name.clone(),
            BridgeState {
                bridge,
                slots: HashMap::new(),
                host: None,
            },
        );
        if let Some((port, config)) = host {
            let pname = port.name().to_string();
            let result = self
                .add_port(port)
                .and_then(|slot| self.attach(&pname, &name, config).map(|_| slot));
            match result {
                Ok(slot) => {
                    if let Some(b) = self.bridges.get_mut(&name) {
                        b.host = Some(slot);
                    }
                }
                Err(e) => {
                    let _ = self.remove_port(&pname);
                    self.bridges.remove(&name);
                    return Err(e);
                }
            }
        }
        info!("{}: bridge {name} created", self.name);
        Ok(())
    }

    fn del_bridge(&mut self, name: &str) -> Result<(), DatapathError> {
        let b = self
            .bridges
            .get(name)
            .ok_or_else(|| DatapathError::NoSuchBridge(name.to_string()))?;
        let others: Vec<String> = b
            .slots
            .values()
            .filter(|&&s| Some(s) != b.host)
            .filter_map(|&s| self.slots[s].as_ref().map(|s| s.port.name().to_string()))
            .collect();
        if !others.is_empty() {
            return Err(DatapathError::NotEmpty {
                bridge: name.to_string(),
                ports: others.join(", "),
            });
        }
        if let Some(host) = b.host {
            if let Some(pname) = self.slots[host].as_ref().map(|s| s.port.name().to_string()) {
                self.remove_port(&pname)?;
            }
        }
        self.bridges.remove(name);
        info!("{}: bridge {name} deleted", self.name);
        Ok(())
    }

    fn attach(
        &mut self,
        port: &str,
        bridge: &str,
        config: PortConfig,
    ) -> Result<(), DatapathError> {
        let slot = *self
            .by_name
            .get(port)
            .ok_or_else(|| DatapathError::NoSuchPort(port.to_string()))?;
        if let Some(Some(s)) = self.slots.get(slot) {
            match &s.attached {
                Some(Attachment::Bridge(b, _)) if b == bridge => {
                    // Idempotent: update the configuration.
                    return self.update_port(port, config);
                }
                Some(a) => {
                    return Err(DatapathError::Busy {
                        port: port.to_string(),
                        bridge: a.pipeline().to_string(),
                    })
                }
                None => {}
            }
        }
        let mut config = config;
        let (admin, carrier) = (config.enabled, self.carrier_of(slot));
        config.enabled = admin && carrier;
        let b = self
            .bridges
            .get_mut(bridge)
            .ok_or_else(|| DatapathError::NoSuchBridge(bridge.to_string()))?;
        let pid = b
            .bridge
            .add_port(config)
            .map_err(|e| DatapathError::Failed(format!("attaching {port} to {bridge}: {e}")))?;
        b.slots.insert(pid, slot);
        self.record_attachment(
            slot,
            Attachment::Bridge(bridge.to_string(), pid),
            admin,
            carrier,
        );
        info!("{}: {port} attached to {bridge}", self.name);
        Ok(())
    }

    fn add_router(&mut self, name: String, config: RouterConfig) -> Result<(), DatapathError> {
        if self.routers.contains_key(&name) || self.bridges.contains_key(&name) {
            return Err(DatapathError::Exists(name));
        }
        self.routers.insert(
            name.clone(),
            RouterState {
                router: Router::new(config),
                slots: HashMap::new(),
                dhcp: None,
            },
        );
        info!("{}: router {name} created", self.name);
        Ok(())
    }

    fn del_router(&mut self, name: &str) -> Result<(), DatapathError> {
        let r = self
            .routers
            .get(name)
            .ok_or_else(|| DatapathError::NoSuchBridge(name.to_string()))?;
        if !r.slots.is_empty() {
            let ports: Vec<String> = r
                .slots
                .values()
                .filter_map(|&s| self.slots[s].as_ref().map(|s| s.port.name().to_string()))
                .collect();
            return Err(DatapathError::NotEmpty {
                bridge: name.to_string(),
                ports: ports.join(", "),
            });
        }
        self.routers.remove(name);
        Ok(())
    }

    fn attach_router(
        &mut self,
        port: &str,
        router: &str,
        config: RouterPortConfig,
    ) -> Result<(), DatapathError> {
        let slot = *self
            .by_name
            .get(port)
            .ok_or_else(|| DatapathError::NoSuchPort(port.to_string()))?;
        if let Some(a) = self.slots[slot].as_ref().and_then(|s| s.attached.as_ref()) {
            return Err(DatapathError::Busy {
                port: port.to_string(),
                bridge: a.pipeline().to_string(),
            });
        }
        let mut config = config;
        let (admin, carrier) = (config.enabled, self.carrier_of(slot));
        config.enabled = admin && carrier;
        let r = self
            .routers
            .get_mut(router)
            .ok_or_else(|| DatapathError::NoSuchBridge(router.to_string()))?;
        let pid = r
            .router
            .add_port(config)
            .map_err(|e| DatapathError::Failed(format!("attaching {port} to {router}: {e}")))?;
        r.slots.insert(pid, slot);
        self.record_attachment(
            slot,
            Attachment::Router(router.to_string(), pid),
            admin,
            carrier,
        );
        info!("{}: {port} attached to router {router}", self.name);
        Ok(())
    }

    /// Whether the port in `slot` has carrier.
    fn carrier_of(&self, slot: usize) -> bool {
        self.slots
            .get(slot)
            .and_then(Option::as_ref)
            .is_some_and(|s| s.port.carrier())
    }

    /// Records where the port in `slot` now is, with the enabled state its pipeline
    /// port was given (admin state and carrier both count).
    fn record_attachment(&mut self, slot: usize, at: Attachment, admin: bool, carrier: bool) {
        if let Some(Some(s)) = self.slots.get_mut(slot) {
            s.attached = Some(at);
            s.admin_enabled = admin;
            s.link_up = carrier;
        }
    }

    fn detach(&mut self, port: &str) -> Result<(), DatapathError> {
        let slot = *self
            .by_name
            .get(port)
            .ok_or_else(|| DatapathError::NoSuchPort(port.to_string()))?;
        let Some(Some(s)) = self.slots.get_mut(slot) else {
            return Err(DatapathError::NoSuchPort(port.to_string()));
        };
        let Some(att) = s.attached.take() else {
            return Err(DatapathError::Failed(format!(
                "port `{port}` is not attached to a bridge"
            )));
        };
        match &att {
            Attachment::Bridge(bridge, pid) => {
                if let Some(b) = self.bridges.get_mut(bridge) {
                    let _ = b.bridge.remove_port(*pid);
                    b.slots.remove(pid);
                }
            }
            Attachment::Router(router, pid) => {
                if let Some(r) = self.routers.get_mut(router) {
                    let _ = r.router.remove_port(*pid);
                    r.slots.remove(pid);
                }
            }
        }
        info!("{}: {port} detached from {}", self.name, att.pipeline());
        Ok(())
    }

    fn update_port(&mut self, port: &str, config: PortConfig) -> Result<(), DatapathError> {
        let slot = *self
            .by_name
            .get(port)
            .ok_or_else(|| DatapathError::NoSuchPort(port.to_string()))?;
        let Some(Some(s)) = self.slots.get_mut(slot) else {
            return Err(DatapathError::NoSuchPort(port.to_string()));
        };
        let Some(Attachment::Bridge(bridge, pid)) = s.attached.clone() else {
            return Err(DatapathError::Failed(format!(
                "port `{port}` is not attached to a bridge"
            )));
        };
        let mut config = config;
        s.admin_enabled = config.enabled;
        config.enabled = config.enabled && s.link_up;
        let b = self
            .bridges
            .get_mut(&bridge)
            .ok_or_else(|| DatapathError::NoSuchBridge(bridge.clone()))?;
        b.bridge
            .update_port(pid, config)
            .map_err(|e| DatapathError::Failed(format!("updating {port}: {e}")))
    }

    fn port_reports(&self) -> Vec<PortReport> {
        let mut out: Vec<PortReport> = self
            .by_name
            .iter()
            .filter_map(|(name, &slot)| {
                let s = self.slots[slot].as_ref()?;
                let mut r = PortReport {
                    name: name.clone(),
                    bridge: s.attached.as_ref().map(|a| a.pipeline().to_string()),
                    carrier: s.port.carrier(),
                    driver: s
                        .port
                        .counters()
                        .into_iter()
                        .chain(s.impair.iter().flat_map(|i| i.counters()))
                        .map(|(k, v)| (k.to_string(), v))
                        .collect(),
                    ..PortReport::default()
                };
                let counters = match &s.attached {
                    Some(Attachment::Bridge(b, pid)) => self
                        .bridges
                        .get(b)
                        .and_then(|b| b.bridge.port_counters(*pid)),
                    Some(Attachment::Router(n, pid)) => self
                        .routers
                        .get(n)
                        .and_then(|r| r.router.port_counters(*pid)),
                    None => None,
                };
                if let Some(c) = counters {
                    r.fill_from(c);
                }
                Some(r)
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    fn bridge_reports(&self) -> Vec<BridgeReport> {
        let mut out: Vec<BridgeReport> = self
            .bridges
            .iter()
            .map(|(name, b)| {
                let mut ports: Vec<(PortId, usize)> =
                    b.slots.iter().map(|(&p, &s)| (p, s)).collect();
                ports.sort_by_key(|(p, _)| p.0);
                let fdb = b.bridge.fdb();
                let stats = fdb.stats();
                BridgeReport {
                    name: name.clone(),
                    ports: ports
                        .iter()
                        .filter_map(|(_, s)| {
                            self.slots[*s].as_ref().map(|s| s.port.name().to_string())
                        })
                        .collect(),
                    fdb_entries: fdb.len(),
                    aging_secs: fdb.config().aging.as_secs(),
                    fdb_max: fdb.config().max_entries,
                    fdb_learned: stats.learned,
                    fdb_expired: stats.expired,
                    fdb_evicted: stats.evicted,
                    fdb_moved: stats.moved,
                }
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    fn fdb_rows(&self, bridge: &str) -> Result<Vec<FdbEntryReport>, DatapathError> {
        let b = self
            .bridges
            .get(bridge)
            .ok_or_else(|| DatapathError::NoSuchBridge(bridge.to_string()))?;
        let now = self.now();
        let mut rows: Vec<FdbEntryReport> = b
            .bridge
            .fdb()
            .rows(now)
            .map(|r| FdbEntryReport {
                mac: mac_from(r.mac),
                port: b
                    .slots
                    .get(&r.port)
                    .and_then(|&s| self.slots[s].as_ref())
                    .map(|s| s.port.name().to_string())
                    .unwrap_or_else(|| format!("port{}", r.port.0)),
                vlan: r.vlan.get(),
                age: r.age.as_secs_f64(),
                is_static: r.is_static,
            })
            .collect();
        rows.sort_by(|a, b| a.port.cmp(&b.port).then(a.mac.cmp(&b.mac)));
        Ok(rows)
    }

    fn fdb_add(
        &mut self,
        bridge: &str,
        mac: crate::wire::MacAddr,
        port: &str,
    ) -> Result<(), DatapathError> {
        let slot = *self
            .by_name
            .get(port)
            .ok_or_else(|| DatapathError::NoSuchPort(port.to_string()))?;
        let pid = match self.slots[slot].as_ref().and_then(|s| s.attached.clone()) {
            Some(Attachment::Bridge(b, pid)) if b == bridge => pid,
            _ => {
                return Err(DatapathError::Failed(format!(
                    "port `{port}` is not attached to bridge `{bridge}`"
                )))
            }
        };
        let b = self
            .bridges
            .get_mut(bridge)
            .ok_or_else(|| DatapathError::NoSuchBridge(bridge.to_string()))?;
        b.bridge
            .fdb_mut()
            .add_static(mac, VlanId::NONE, pid)
            .map_err(|e| DatapathError::Failed(format!("adding {mac} to {bridge}: {e}")))
    }
}
