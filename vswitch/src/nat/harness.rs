//! An in-memory NAT network for tests (DESIGN.md "Testing habits"): a [`Bridge`] with
//! guest vifs and a gateway port, the [`NatGateway`] on that port, and a fake uplink — all
//! on a fake clock. It drives both cores exactly as a datapath shell must: the bridge's
//! decisions with egress checks and transmit records, the gateway's verdicts, emitted
//! frames, DNS queries, released frames and fragments, with every transmit recorded, so
//! the conservation equations of the bridge's ports and the gateway's two sides hold at
//! the end of every test. Guests and outside hosts registered with
//! [`NatFabric::answer_arp_on_bridge`] / [`NatFabric::answer_arp_on_uplink`] answer ARP
//! requests for their address, like real hosts.
//!
//! Test-support code: it allocates freely and panics on misuse.

use core::time::Duration;
use std::collections::{HashMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddr};

use super::gateway::{
    GatewayAction, GatewayConfig, GatewayEmit, GatewaySide, GatewayVerdict, NatGateway,
};
use crate::bridge::{Bridge, BridgeConfig, Decision};
use crate::counters::DropReason;
use crate::meta::FrameMeta;
use crate::port::{PortConfig, PortId, VifConfig};
use crate::router::Fragmenter;
use crate::time::Timestamp;
use crate::wire::build;
use crate::wire::{ArpOperation, ArpRepr, FrameInfo, MacAddr, VlanId};

#[derive(Debug)]
enum Work {
    BridgeIn(PortId, Vec<u8>, FrameMeta),
    UplinkIn(Vec<u8>, FrameMeta),
}

/// A NAT network in memory.
#[derive(Debug)]
pub struct NatFabric {
    /// The network's bridge.
    pub bridge: Bridge,
    /// The gateway on its gateway port.
    pub gateway: NatGateway,
    /// The bridge port the gateway sits on.
    pub gw_port: PortId,
    now: Timestamp,
    outbox: Vec<Vec<Vec<u8>>>,
    uplink: Vec<Vec<u8>>,
    dns: Vec<(SocketAddr, Vec<u8>)>,
    guest_arp: HashMap<Ipv4Addr, (PortId, MacAddr)>,
    uplink_arp: HashMap<Ipv4Addr, MacAddr>,
    /// The last verdict the gateway gave for a frame from the uplink.
    pub last_uplink_verdict: Option<GatewayVerdict>,
    /// Every verdict the gateway gave for frames from the bridge, in order.
    pub bridge_verdicts: Vec<GatewayVerdict>,
    work: VecDeque<Work>,
}

impl NatFabric {
    /// A bridge with only the gateway port, at time zero.
    pub fn new(config: GatewayConfig) -> Self {
        let mut bridge = Bridge::new(BridgeConfig::default());
        let gw_port = bridge
            .add_port(PortConfig::host("gateway"))
            .expect("gateway port");
        // The gateway's MAC lives on the gateway port (a shell does the same): frames to
        // it are never flooded to the guests.
        bridge
            .fdb_mut()
            .add_static(config.gateway_mac, VlanId::NONE, gw_port)
            .expect("static gateway MAC");
        NatFabric {
            bridge,
            gateway: NatGateway::new(config).expect("gateway config"),
            gw_port,
            now: Timestamp::ZERO,
            outbox: vec![Vec::new(); usize::from(gw_port.0) + 1],
            uplink: Vec::new(),
            dns: Vec::new(),
            guest_arp: HashMap::new(),
            uplink_arp: HashMap::new(),
            last_uplink_verdict: None,
            bridge_verdicts: Vec::new(),
            work: VecDeque::new(),
        }
    }

    /// Adds a guest vif with MAC `mac` and, optionally, `ip=` (anti-spoofing, a static
    /// DHCP binding, and an ARP answer for it).
    pub fn add_guest(&mut self, name: &str, mac: MacAddr, ip: Option<Ipv4Addr>) -> PortId {
        let mut vif = VifConfig::new(mac);
        if let Some(ip) = ip {
            vif.allowed_ipv4 = vec![ip.into()];
        }
        let port = self
            .bridge
            .add_port(PortConfig::vif(name, vif))
            .expect("vif port");
        if self.outbox.len() <= port.index() {
            self.outbox.resize_with(port.index() + 1, Vec::new);
        }
        if let Some(ip) = ip {
            self.gateway
                .add_static_guest(mac, ip, self.now)
                .expect("static binding");
            self.answer_arp_on_bridge(ip, port, mac);
        }
        port
    }

    /// Makes the guest on `port` answer ARP for `ip` with `mac`.
    pub fn answer_arp_on_bridge(&mut self, ip: Ipv4Addr, port: PortId, mac: MacAddr) {
        self.guest_arp.insert(ip, (port, mac));
    }

    /// Makes an outside host answer ARP for `ip` with `mac` on the uplink.
    pub fn answer_arp_on_uplink(&mut self, ip: Ipv4Addr, mac: MacAddr) {
        self.uplink_arp.insert(ip, mac);
    }

    /// The fake clock.
    pub fn now(&self) -> Timestamp {
        self.now
    }

    /// Moves the clock and runs every timer.
    pub fn advance(&mut self, d: Duration) {
        self.now = self.now + d;
        self.bridge.expire(self.now, usize::MAX);
        self.gateway.expire(self.now, usize::MAX);
    }

    /// A guest sends `frame` on its vif.
    pub fn from_guest(&mut self, port: PortId, frame: &[u8]) {
        self.from_guest_with_meta(port, frame, FrameMeta::default());
    }

    /// A guest sends `frame` with offload metadata.
    pub fn from_guest_with_meta(&mut self, port: PortId, frame: &[u8], meta: FrameMeta) {
        self.work
            .push_back(Work::BridgeIn(port, frame.to_vec(), meta));
        self.run();
    }

    /// The outside sends `frame` to the uplink; returns the gateway's verdict.
    pub fn from_uplink(&mut self, frame: &[u8]) -> GatewayVerdict {
        self.work
            .push_back(Work::UplinkIn(frame.to_vec(), FrameMeta::default()));
        self.run();
        self.last_uplink_verdict.expect("verdict")
    }

    /// An upstream DNS server answers.
    pub fn dns_answer(&mut self, from: SocketAddr, payload: &[u8]) -> bool {
        let mut p = payload.to_vec();
        let mut out = vec![0u8; 4096];
        let Some(n) = self.gateway.dns_answer(from, &mut p, self.now, &mut out) else {
            return false;
        };
        self.gateway.record_tx(GatewaySide::Bridge, n);
        self.work.push_back(Work::BridgeIn(
            self.gw_port,
            out[..n].to_vec(),
            FrameMeta::default(),
        ));
        self.run();
        true
    }

    fn run(&mut self) {
        while let Some(w) = self.work.pop_front() {
            match w {
                Work::BridgeIn(port, frame, meta) => self.bridge_in(port, frame, meta),
                Work::UplinkIn(frame, meta) => {
                    let mut f = frame;
                    let info = FrameInfo::parse(&f).expect("not a runt");
                    let mut out = vec![0u8; 4096];
                    let v = self
                        .gateway
                        .from_uplink(&mut f, &info, &meta, self.now, &mut out);
                    self.last_uplink_verdict = Some(v);
                    self.apply(v, f, meta, &out);
                }
            }
        }
    }

    fn bridge_in(&mut self, in_port: PortId, frame: Vec<u8>, meta: FrameMeta) {
        let v = self.bridge.process(in_port, &frame, &meta, self.now);
        let mut dests = Vec::new();
        match v.decision {
            Decision::Drop(_) => return,
            Decision::Unicast(p) => dests.push(p),
            Decision::Flood => self.bridge.flood_ports_into(in_port, &mut dests),
        }
        for dst in dests {
            if let Err(r) = self.bridge.egress_check(dst, &v.info, &meta) {
                self.bridge.record_tx_drop(dst, r);
                continue;
            }
            self.bridge.record_tx(dst, frame.len());
            if dst == self.gw_port {
                let mut f = frame.clone();
                let mut out = vec![0u8; 4096];
                let gv = self
                    .gateway
                    .from_bridge(in_port, &mut f, &v.info, &meta, self.now, &mut out);
                self.bridge_verdicts.push(gv);
                self.apply(gv, f, meta, &out);
            } else {
                self.deliver_guest(dst, frame.clone());
            }
        }
    }

    fn deliver_guest(&mut self, port: PortId, frame: Vec<u8>) {
        if let Some(a) = FrameInfo::parse(&frame).ok().and_then(|i| i.arp().copied()) {
            if a.operation == ArpOperation::REQUEST {
                if let Some(&(p, mac)) = self.guest_arp.get(&a.target_ip) {
                    if p == port {
                        let reply = arp_reply_frame(&a, mac);
                        self.work
                            .push_back(Work::BridgeIn(port, reply, FrameMeta::default()));
                    }
                }
            }
        }
        self.outbox[port.index()].push(frame);
    }

    fn deliver_uplink(&mut self, frame: Vec<u8>) {
        if let Some(a) = FrameInfo::parse(&frame).ok().and_then(|i| i.arp().copied()) {
            if a.operation == ArpOperation::REQUEST {
                if let Some(&mac) = self.uplink_arp.get(&a.target_ip) {
                    let reply = arp_reply_frame(&a, mac);
                    self.work
                        .push_back(Work::UplinkIn(reply, FrameMeta::default()));
                }
            }
        }
        self.uplink.push(frame);
    }

    fn send(&mut self, side: GatewaySide, frame: Vec<u8>, meta: FrameMeta) {
        self.gateway.record_tx(side, frame.len());
        match side {
            GatewaySide::Bridge => self
                .work
                .push_back(Work::BridgeIn(self.gw_port, frame, meta)),
            GatewaySide::Uplink => self.deliver_uplink(frame),
        }
    }

    fn apply(&mut self, v: GatewayVerdict, frame: Vec<u8>, meta: FrameMeta, out: &[u8]) {
        match v.action {
            GatewayAction::Forward(side) => self.send(side, frame, meta),
            GatewayAction::Fragment { side, mtu, count } => {
                let info = FrameInfo::parse(&frame).expect("parse");
                let mut f = Fragmenter::new(&frame, &info, mtu).expect("fragmenter");
                assert_eq!(f.count(), usize::from(count));
                let mut buf = vec![0u8; 70_000];
                while let Some(r) = f.next_fragment(&frame, &mut buf) {
                    let n = r.expect("fragment");
                    self.send(side, buf[..n].to_vec(), FrameMeta::default());
                }
            }
            _ => {}
        }
        match v.emit {
            Some(GatewayEmit::Frame { side, len }) => {
                self.send(side, out[..len].to_vec(), FrameMeta::default())
            }
            Some(GatewayEmit::DnsQuery { server, len }) => {
                self.dns.push((server, out[..len].to_vec()))
            }
            None => {}
        }
        let mut ready = Vec::new();
        while let Some(()) = self
            .gateway
            .pop_ready(|side, meta, f| ready.push((side, meta, f.to_vec())))
        {}
        for (side, meta, f) in ready {
            self.send(side, f, meta);
        }
    }

    /// Frames delivered to the guest on `port` (ARP included) since the last take.
    pub fn take_guest(&mut self, port: PortId) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.outbox[port.index()])
    }

    /// Like [`take_guest`](Self::take_guest) but IPv4 frames only.
    pub fn take_guest_ip(&mut self, port: PortId) -> Vec<Vec<u8>> {
        only_ip(self.take_guest(port))
    }

    /// Frames sent out of the uplink since the last take.
    pub fn take_uplink(&mut self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.uplink)
    }

    /// Like [`take_uplink`](Self::take_uplink) but IPv4 frames only.
    pub fn take_uplink_ip(&mut self) -> Vec<Vec<u8>> {
        only_ip(self.take_uplink())
    }

    /// DNS queries handed to the shell since the last take.
    pub fn take_dns(&mut self) -> Vec<(SocketAddr, Vec<u8>)> {
        std::mem::take(&mut self.dns)
    }

    /// A drop count of the gateway's bridge side plus its uplink side.
    pub fn gateway_drops(&self, r: DropReason) -> u64 {
        self.gateway.counters(GatewaySide::Bridge).rx_drops[r]
            + self.gateway.counters(GatewaySide::Uplink).rx_drops[r]
    }

    /// Panics unless every bridge port and both gateway sides conserve frames.
    pub fn assert_conservation(&self) {
        for (id, _) in self.bridge.ports() {
            if let Err(e) = self
                .bridge
                .port_counters(id)
                .expect("port")
                .check_conservation()
            {
                panic!("conservation violated on bridge port {id}: {e}");
            }
        }
        for side in [GatewaySide::Bridge, GatewaySide::Uplink] {
            if let Err(e) = self.gateway.counters(side).check_conservation() {
                panic!("conservation violated on gateway side {side:?}: {e}");
            }
        }
    }
}

fn only_ip(frames: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    frames
        .into_iter()
        .filter(|f| FrameInfo::parse(f).is_ok_and(|i| i.ipv4().is_some()))
        .collect()
}

fn arp_reply_frame(req: &ArpRepr, mac: MacAddr) -> Vec<u8> {
    let mut b = vec![0u8; 64];
    let n = build::arp_reply(&mut b, req, mac).expect("arp reply");
    b.truncate(n);
    b
}
