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
use super::port::{Pkt, Port, PortCtx};
use super::report::{BridgeReport, CapturedFrame, Direction, FdbEntryReport, PortReport};
use super::{BridgeSettings, Cmd, DatapathError};
use crate::bridge::{Bridge, BridgeConfig, Decision};
use crate::port::{PortConfig, PortId};
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

struct Slot {
    port: Box<dyn Port>,
    fds: Vec<RawFd>,
    attached: Option<(String, PortId)>,
    captures: Vec<CaptureSink>,
    dirty: bool,
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
        }
        wait.as_millis().min(i32::MAX as u128) as i32
    }

    fn on_tick(&mut self) {
        let now = self.now();
        for b in self.bridges.values_mut() {
            b.bridge.expire(now, AGING_BUDGET);
        }
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
                    let mut ctx = PortCtx { pool, now, hv };
                    s.port.on_timer(&mut ctx);
                    s.dirty = true;
                }
                self.mark_dirty(i);
            }
        }
    }

    fn mark_dirty(&mut self, slot: usize) {
        if let Some(Some(s)) = self.slots.get_mut(slot) {
            if !s.dirty {
                s.dirty = true;
            }
        }
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
                let mut ctx = PortCtx { pool, now, hv };
                s.port.flush(&mut ctx);
                s.dirty = false;
            }
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
            let mut ctx = PortCtx { pool, now, hv };
            let more = s.port.receive(&mut ctx, &mut rx, MAX_BATCH);
            (more, s.attached.clone())
        };
        if more {
            self.again.push(slot);
        }
        self.mark_dirty(slot);
        for pkt in &rx {
            self.capture(slot, Direction::Rx, pkt);
            match &attached {
                Some((bridge, pid)) => self.forward(bridge, *pid, pkt, now),
                None => self.unattached_drops += 1,
            }
            self.pool.release(pkt.buf);
        }
        {
            let Worker {
                slots, pool, hv, ..
            } = self;
            if let Some(Some(s)) = slots.get_mut(slot) {
                let mut ctx = PortCtx { pool, now, hv };
                s.port.complete_rx(&mut ctx);
            }
        }
        self.rx = rx;
    }

    fn forward(&mut self, bridge: &str, in_port: PortId, pkt: &Pkt, now: Timestamp) {
        let Some(b) = self.bridges.get_mut(bridge) else {
            return;
        };
        let frame = self.pool.bytes(pkt.buf, pkt.off, pkt.len);
        let verdict = b.bridge.process(in_port, frame, &pkt.meta, now);
        match verdict.decision {
            Decision::Drop(_) => {}
            Decision::Unicast(dst) => self.deliver(bridge, dst, &verdict.info, pkt),
            Decision::Flood => {
                let mut flood = std::mem::take(&mut self.flood);
                if let Some(b) = self.bridges.get(bridge) {
                    b.bridge.flood_ports_into(in_port, &mut flood);
                }
                for &dst in &flood {
                    self.deliver(bridge, dst, &verdict.info, pkt);
                }
                self.flood = flood;
            }
        }
    }

    fn deliver(&mut self, bridge: &str, dst: PortId, info: &FrameInfo, pkt: &Pkt) {
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
            b.bridge.record_tx_drop(dst, crate::DropReason::UnknownPort);
            return;
        };
        let Some(Some(s)) = slots.get_mut(slot) else {
            b.bridge.record_tx_drop(dst, crate::DropReason::UnknownPort);
            return;
        };
        let mut ctx = PortCtx { pool, now, hv };
        match s.port.transmit(&mut ctx, pkt, info) {
            Ok(()) => b.bridge.record_tx(dst, pkt.len),
            Err(r) => b.bridge.record_tx_drop(dst, r),
        }
        self.mark_dirty(slot);
        self.capture(slot, Direction::Tx, pkt);
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
                                    let mut ctx = PortCtx { pool, now, hv };
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
            dirty: false,
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
            let mut ctx = PortCtx {
                pool: &mut self.pool,
                now,
                hv: &self.hv,
            };
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
            if let Some((b, _)) = &s.attached {
                if b == bridge {
                    // Idempotent: update the configuration.
                    return self.update_port(port, config);
                }
                return Err(DatapathError::Busy {
                    port: port.to_string(),
                    bridge: b.clone(),
                });
            }
        }
        let b = self
            .bridges
            .get_mut(bridge)
            .ok_or_else(|| DatapathError::NoSuchBridge(bridge.to_string()))?;
        let pid = b
            .bridge
            .add_port(config)
            .map_err(|e| DatapathError::Failed(format!("attaching {port} to {bridge}: {e}")))?;
        b.slots.insert(pid, slot);
        if let Some(Some(s)) = self.slots.get_mut(slot) {
            s.attached = Some((bridge.to_string(), pid));
        }
        info!("{}: {port} attached to {bridge}", self.name);
        Ok(())
    }

    fn detach(&mut self, port: &str) -> Result<(), DatapathError> {
        let slot = *self
            .by_name
            .get(port)
            .ok_or_else(|| DatapathError::NoSuchPort(port.to_string()))?;
        let Some(Some(s)) = self.slots.get_mut(slot) else {
            return Err(DatapathError::NoSuchPort(port.to_string()));
        };
        let Some((bridge, pid)) = s.attached.take() else {
            return Err(DatapathError::Failed(format!(
                "port `{port}` is not attached to a bridge"
            )));
        };
        if let Some(b) = self.bridges.get_mut(&bridge) {
            let _ = b.bridge.remove_port(pid);
            b.slots.remove(&pid);
        }
        info!("{}: {port} detached from {bridge}", self.name);
        Ok(())
    }

    fn update_port(&mut self, port: &str, config: PortConfig) -> Result<(), DatapathError> {
        let slot = *self
            .by_name
            .get(port)
            .ok_or_else(|| DatapathError::NoSuchPort(port.to_string()))?;
        let Some(Some(s)) = self.slots.get(slot) else {
            return Err(DatapathError::NoSuchPort(port.to_string()));
        };
        let Some((bridge, pid)) = s.attached.clone() else {
            return Err(DatapathError::Failed(format!(
                "port `{port}` is not attached to a bridge"
            )));
        };
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
                    bridge: s.attached.as_ref().map(|(b, _)| b.clone()),
                    carrier: s.port.carrier(),
                    driver: s
                        .port
                        .counters()
                        .into_iter()
                        .map(|(k, v)| (k.to_string(), v))
                        .collect(),
                    ..PortReport::default()
                };
                if let Some((b, pid)) = &s.attached {
                    if let Some(c) = self
                        .bridges
                        .get(b)
                        .and_then(|b| b.bridge.port_counters(*pid))
                    {
                        r.fill_from(c);
                    }
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
            Some((b, pid)) if b == bridge => pid,
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
