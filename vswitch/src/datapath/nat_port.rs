//! A NAT network's gateway as a bridge port (libvirt's virbr0 router, inside the switch).
//!
//! The port sits on the NAT network's bridge with the gateway's MAC and owns the other
//! side of the gateway: the uplink (AF_PACKET on dom0's NIC) and a UDP socket towards
//! dom0's DNS resolvers. Frames the bridge sends it go through
//! `NatGateway::from_bridge` (ARP, DHCP, DNS, masquerade out of the uplink, hairpin back
//! into the bridge); frames from the uplink go through `from_uplink` (replies of NATed
//! connections, port forwards) and come out of this port into the bridge.

use std::any::Any;
use std::collections::VecDeque;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};

use hypervisor::evtchn::EventFd;

use super::packet_port::PacketPort;
use super::pool::HEADROOM;
use super::port::{DriverCounters, Pkt, Port, PortCtx};
use crate::counters::DropReason;
use crate::meta::FrameMeta;
use crate::nat::gateway::{GatewayAction, GatewayEmit, GatewaySide, GatewayVerdict, NatGateway};
use crate::port::PortId;
use crate::router::Fragmenter;
use crate::wire::FrameInfo;
use crate::MAX_BATCH;

/// Most frames waiting to go into the bridge.
const QUEUE_MAX: usize = 512;

#[derive(Debug, Default, Clone, Copy)]
struct NatPortCounters {
    to_bridge: u64,
    to_uplink: u64,
    dns_queries_sent: u64,
    dns_send_errors: u64,
    dns_answers: u64,
    queue_full: u64,
    no_buffer: u64,
    runts: u64,
    isolated_drops: u64,
}

/// The gateway port of a NAT network.
pub struct NatGatewayPort {
    name: String,
    gw: NatGateway,
    /// dom0's NIC; none for an isolated network.
    uplink: Option<PacketPort>,
    dns: Option<UdpSocket>,
    wake: EventFd,
    to_bridge: VecDeque<Pkt>,
    scratch: Vec<u8>,
    uplink_rx: Vec<Pkt>,
    last_expire: crate::time::Timestamp,
    isolated: bool,
    c: NatPortCounters,
}

impl std::fmt::Debug for NatGatewayPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatGatewayPort")
            .field("name", &self.name)
            .finish()
    }
}

impl NatGatewayPort {
    /// A gateway port named `name` with its uplink socket; DNS queries go out of a UDP
    /// socket bound in the caller's (dom0's) namespace.
    pub fn new(
        name: impl Into<String>,
        gw: NatGateway,
        uplink: PacketPort,
    ) -> std::io::Result<NatGatewayPort> {
        Self::build(name.into(), gw, Some(uplink))
    }

    /// The gateway of an isolated network (libvirt's network without `<forward>`):
    /// DHCP, DNS and guest-to-guest, no uplink at all.
    pub fn isolated(name: impl Into<String>, gw: NatGateway) -> std::io::Result<NatGatewayPort> {
        let mut p = Self::build(name.into(), gw, None)?;
        p.isolated = true;
        Ok(p)
    }

    fn build(
        name: String,
        gw: NatGateway,
        uplink: Option<PacketPort>,
    ) -> std::io::Result<NatGatewayPort> {
        let dns = UdpSocket::bind("0.0.0.0:0").ok();
        if let Some(s) = &dns {
            s.set_nonblocking(true)?;
        }
        Ok(NatGatewayPort {
            name,
            gw,
            uplink,
            dns,
            wake: EventFd::new()?,
            to_bridge: VecDeque::new(),
            scratch: vec![0u8; 4096],
            uplink_rx: Vec::with_capacity(MAX_BATCH),
            last_expire: crate::time::Timestamp::from_millis(0),
            isolated: false,
            c: NatPortCounters::default(),
        })
    }

    /// An isolated network (libvirt's no-`<forward>`): nothing leaves through the
    /// uplink; such frames are dropped as `isolated_network`.
    pub fn set_isolated(&mut self, isolated: bool) {
        self.isolated = isolated;
    }

    /// The gateway (NAT table, DHCP leases, port forwards).
    pub fn gateway(&self) -> &NatGateway {
        &self.gw
    }

    /// The gateway, to reconfigure (forwards, static guests).
    pub fn gateway_mut(&mut self) -> &mut NatGateway {
        &mut self.gw
    }

    fn queue_to_bridge(&mut self, ctx: &mut PortCtx<'_>, pkt: Pkt) {
        if self.to_bridge.len() >= QUEUE_MAX {
            self.c.queue_full += 1;
            self.gw
                .record_tx_drop(GatewaySide::Bridge, DropReason::TxQueueFull);
            ctx.pool.release(pkt.buf);
            return;
        }
        self.gw.record_tx(GatewaySide::Bridge, pkt.len);
        self.c.to_bridge += 1;
        self.to_bridge.push_back(pkt);
        self.wake.signal();
    }

    fn send_uplink(&mut self, ctx: &mut PortCtx<'_>, pkt: &Pkt) {
        if self.isolated {
            self.c.isolated_drops += 1;
            self.gw
                .record_tx_drop(GatewaySide::Uplink, DropReason::PortDisabled);
            return;
        }
        let Some(uplink) = self.uplink.as_mut() else {
            self.c.isolated_drops += 1;
            self.gw
                .record_tx_drop(GatewaySide::Uplink, DropReason::PortDisabled);
            return;
        };
        let frame = ctx.pool.bytes(pkt.buf, pkt.off, pkt.len);
        let info = match FrameInfo::parse(frame) {
            Ok(i) => i,
            Err(_) => {
                self.c.runts += 1;
                return;
            }
        };
        match uplink.transmit(ctx, pkt, &info) {
            Ok(()) => {
                self.c.to_uplink += 1;
                self.gw.record_tx(GatewaySide::Uplink, pkt.len);
            }
            Err(r) => self.gw.record_tx_drop(GatewaySide::Uplink, r),
        }
    }

    /// Copies `scratch[..len]` into a new buffer and sends it to `side`.
    fn emit_scratch(
        &mut self,
        ctx: &mut PortCtx<'_>,
        side: GatewaySide,
        len: usize,
        meta: FrameMeta,
    ) {
        let Some(buf) = ctx.pool.alloc() else {
            self.c.no_buffer += 1;
            self.gw.record_tx_drop(side, DropReason::TxQueueFull);
            return;
        };
        let len = len.min(self.scratch.len());
        ctx.pool
            .bytes_mut(buf, HEADROOM, len)
            .copy_from_slice(&self.scratch[..len]);
        let pkt = Pkt {
            buf,
            off: HEADROOM,
            len,
            meta,
        };
        match side {
            GatewaySide::Bridge => self.queue_to_bridge(ctx, pkt),
            GatewaySide::Uplink => {
                self.send_uplink(ctx, &pkt);
                ctx.pool.release(buf);
            }
        }
    }

    /// Carries out a verdict about `pkt` (whose buffer we own: it is released or
    /// queued here).
    fn apply(&mut self, ctx: &mut PortCtx<'_>, pkt: Pkt, info: &FrameInfo, v: GatewayVerdict) {
        match v.emit {
            Some(GatewayEmit::Frame { side, len }) => {
                self.emit_scratch(ctx, side, len, FrameMeta::default())
            }
            Some(GatewayEmit::DnsQuery { server, len }) => self.send_dns(server, len),
            None => {}
        }
        match v.action {
            GatewayAction::Forward(GatewaySide::Bridge) => {
                self.queue_to_bridge(ctx, pkt);
                return;
            }
            GatewayAction::Forward(GatewaySide::Uplink) => self.send_uplink(ctx, &pkt),
            GatewayAction::Fragment { side, mtu, .. } => self.fragments(ctx, &pkt, info, side, mtu),
            GatewayAction::Queued(_) | GatewayAction::Local | GatewayAction::Drop(_) => {}
        }
        ctx.pool.release(pkt.buf);
    }

    fn fragments(
        &mut self,
        ctx: &mut PortCtx<'_>,
        pkt: &Pkt,
        info: &FrameInfo,
        side: GatewaySide,
        mtu: u32,
    ) {
        let frame = ctx.pool.bytes(pkt.buf, pkt.off, pkt.len);
        let Ok(mut f) = Fragmenter::new(frame, info, mtu) else {
            self.gw.record_tx_drop(side, DropReason::EgressMtuExceeded);
            return;
        };
        loop {
            let frame = ctx.pool.bytes(pkt.buf, pkt.off, pkt.len);
            match f.next_fragment(frame, &mut self.scratch) {
                Some(Ok(len)) => self.emit_scratch(ctx, side, len, FrameMeta::default()),
                Some(Err(_)) => {
                    self.gw.record_tx_drop(side, DropReason::EgressMtuExceeded);
                    return;
                }
                None => return,
            }
        }
    }

    fn send_dns(&mut self, server: SocketAddr, len: usize) {
        match &self.dns {
            Some(s) => match s.send_to(&self.scratch[..len.min(self.scratch.len())], server) {
                Ok(_) => self.c.dns_queries_sent += 1,
                Err(_) => self.c.dns_send_errors += 1,
            },
            None => self.c.dns_send_errors += 1,
        }
    }

    fn drain_ready(&mut self, ctx: &mut PortCtx<'_>) {
        loop {
            let Some(buf) = ctx.pool.alloc() else { return };
            let pool = &mut *ctx.pool;
            let got = self.gw.pop_ready(|side, meta, bytes| {
                let room = pool.bytes(buf, HEADROOM, usize::MAX).len();
                let len = bytes.len().min(room);
                pool.bytes_mut(buf, HEADROOM, len)
                    .copy_from_slice(&bytes[..len]);
                (side, meta, len)
            });
            let Some((side, meta, len)) = got else {
                ctx.pool.release(buf);
                return;
            };
            let pkt = Pkt {
                buf,
                off: HEADROOM,
                len,
                meta,
            };
            match side {
                GatewaySide::Bridge => self.queue_to_bridge(ctx, pkt),
                GatewaySide::Uplink => {
                    self.send_uplink(ctx, &pkt);
                    ctx.pool.release(buf);
                }
            }
        }
    }
}

impl Port for NatGatewayPort {
    fn name(&self) -> &str {
        &self.name
    }

    fn fds(&self) -> Vec<RawFd> {
        let mut v = self.uplink.as_ref().map(|u| u.fds()).unwrap_or_default();
        v.push(self.wake.as_raw_fd());
        if let Some(s) = &self.dns {
            v.push(s.as_raw_fd());
        }
        v
    }

    fn receive(&mut self, ctx: &mut PortCtx<'_>, out: &mut Vec<Pkt>, budget: usize) -> bool {
        self.wake.consume();
        // Replies from upstream resolvers.
        let mut more_dns = false;
        if let Some(sock) = self.dns.take() {
            let mut buf = [0u8; 1500];
            let mut n_read = 0;
            while let Ok((n, from)) = sock.recv_from(&mut buf) {
                if let Some(len) =
                    self.gw
                        .dns_answer(from, &mut buf[..n], ctx.now, &mut self.scratch)
                {
                    self.c.dns_answers += 1;
                    self.emit_scratch(ctx, GatewaySide::Bridge, len, FrameMeta::default());
                    // dns_answer already counted it as offered to the bridge; emit
                    // counted the send.
                }
                n_read += 1;
                if n_read == budget {
                    more_dns = true;
                    break;
                }
            }
            self.dns = Some(sock);
        }
        // Frames from the uplink.
        let mut rx = std::mem::take(&mut self.uplink_rx);
        rx.clear();
        let more_uplink = match self.uplink.as_mut() {
            Some(u) => u.receive(ctx, &mut rx, budget),
            None => false,
        };
        for pkt in rx.drain(..) {
            let frame = ctx.pool.bytes_mut(pkt.buf, pkt.off, pkt.len);
            let Ok(info) = FrameInfo::parse(frame) else {
                self.c.runts += 1;
                ctx.pool.release(pkt.buf);
                continue;
            };
            let v = self
                .gw
                .from_uplink(frame, &info, &pkt.meta, ctx.now, &mut self.scratch);
            self.apply(ctx, pkt, &info, v);
        }
        self.uplink_rx = rx;
        self.drain_ready(ctx);
        // Everything bound for the bridge leaves through `out`.
        while out.len() < budget {
            match self.to_bridge.pop_front() {
                Some(p) => out.push(p),
                None => break,
            }
        }
        more_uplink || more_dns || !self.to_bridge.is_empty()
    }

    fn transmit(
        &mut self,
        ctx: &mut PortCtx<'_>,
        pkt: &Pkt,
        _info: &FrameInfo,
    ) -> Result<(), DropReason> {
        // The gateway rewrites frames in place: take the buffer when nobody else needs
        // it, otherwise work on a copy.
        let own = if ctx.exclusive {
            ctx.pool.retain(pkt.buf);
            *pkt
        } else {
            let Some(buf) = ctx.pool.alloc() else {
                self.c.no_buffer += 1;
                return Err(DropReason::TxQueueFull);
            };
            ctx.pool.copy(pkt.buf, pkt.off, buf, HEADROOM, pkt.len);
            Pkt {
                buf,
                off: HEADROOM,
                len: pkt.len,
                meta: pkt.meta,
            }
        };
        let ingress = ctx.ingress.unwrap_or(PortId(0));
        let frame = ctx.pool.bytes_mut(own.buf, own.off, own.len);
        let Ok(info) = FrameInfo::parse(frame) else {
            ctx.pool.release(own.buf);
            return Err(DropReason::RuntFrame);
        };
        let v = self
            .gw
            .from_bridge(ingress, frame, &info, &own.meta, ctx.now, &mut self.scratch);
        self.apply(ctx, own, &info, v);
        Ok(())
    }

    fn next_timer(&self) -> Option<crate::time::Timestamp> {
        Some(self.last_expire + std::time::Duration::from_secs(1))
    }

    fn counters(&self) -> DriverCounters {
        let c = self.c;
        let n = self.gw.nat_stats();
        let mut v = vec![
            ("to_bridge", c.to_bridge),
            ("to_uplink", c.to_uplink),
            ("dns_queries_sent", c.dns_queries_sent),
            ("dns_send_errors", c.dns_send_errors),
            ("dns_answers", c.dns_answers),
            ("queue_full", c.queue_full),
            ("no_buffer", c.no_buffer),
            ("runts", c.runts),
            ("isolated_drops", c.isolated_drops),
            ("nat_connections", self.gw.nat().table().len() as u64),
        ];
        let t = self.gw.nat().table().stats();
        v.extend([
            ("nat_translated", n.translated),
            ("nat_new_masquerade", n.new_masquerade),
            ("nat_new_forward", n.new_forward),
            ("nat_new_hairpin", n.new_hairpin),
            ("nat_picked_up", n.picked_up),
            ("nat_established", n.established),
            ("nat_invalid", n.invalid),
            ("nat_no_port", n.no_port),
            ("nat_unforwarded", n.unforwarded),
            ("nat_icmp_related", n.icmp_related),
            ("nat_icmp_invalid", n.icmp_invalid),
            ("nat_fragments", n.fragments),
            ("nat_fragments_no_flow", n.fragments_no_flow),
            ("conntrack_created", t.created),
            ("conntrack_expired", t.expired),
            ("conntrack_early_dropped", t.early_dropped),
            ("conntrack_refused", t.refused),
            ("conntrack_full", t.full),
            ("conntrack_zone_full", t.zone_full),
        ]);
        if let Some(d) = self.gw.dhcp() {
            v.extend(d.stats().named());
            v.push(("dhcp_leases", d.leases().len() as u64));
        }
        if let Some(u) = &self.uplink {
            v.extend(u.counters());
        }
        v
    }

    fn close(&mut self, ctx: &mut PortCtx<'_>) {
        for p in self.to_bridge.drain(..) {
            ctx.pool.release(p.buf);
        }
    }

    fn on_timer(&mut self, ctx: &mut PortCtx<'_>) {
        self.gw.expire(ctx.now, 1024);
        self.last_expire = ctx.now;
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}
