//! An in-memory fabric for route-mode tests (DESIGN.md "Testing habits"): a [`Router`]
//! with a fake clock, frames injected on ports, and what each port would transmit
//! collected in memory. It drives the router exactly as a datapath shell must — process,
//! send the forwarded frame (or its fragments) and the synthesised one, drain released
//! frames, record every transmit — so the conservation equations hold at the end of every
//! test.
//!
//! Test-support code: it allocates freely and panics on misuse.

use core::time::Duration;

use super::{Fragmenter, RouteAction, RouteVerdict, Router, RouterConfig, RouterPortConfig};
use crate::meta::FrameMeta;
use crate::port::PortId;
use crate::time::Timestamp;
use crate::wire::FrameInfo;

/// A router, a clock and per-port outboxes.
#[derive(Debug)]
pub struct RouteFabric {
    /// The router under test.
    pub router: Router,
    now: Timestamp,
    outbox: Vec<Vec<Vec<u8>>>,
    /// DHCP client frames the router handed over, with their ingress port.
    pub dhcp: Vec<(PortId, Vec<u8>)>,
}

impl RouteFabric {
    /// A router with no ports at time zero.
    pub fn new(config: RouterConfig) -> Self {
        RouteFabric {
            router: Router::new(config),
            now: Timestamp::ZERO,
            outbox: Vec::new(),
            dhcp: Vec::new(),
        }
    }

    /// Adds a port.
    pub fn add_port(&mut self, config: RouterPortConfig) -> PortId {
        let id = self.router.add_port(config).expect("add_port");
        if self.outbox.len() <= id.index() {
            self.outbox.resize_with(id.index() + 1, Vec::new);
        }
        id
    }

    /// The fake clock.
    pub fn now(&self) -> Timestamp {
        self.now
    }

    /// Moves the clock and runs the router's timers.
    pub fn advance(&mut self, d: Duration) {
        self.now = self.now + d;
        self.router.expire(self.now, usize::MAX);
    }

    /// Injects a plain frame.
    pub fn inject(&mut self, port: PortId, frame: &[u8]) -> RouteVerdict {
        self.inject_with_meta(port, frame, FrameMeta::default())
    }

    fn send(&mut self, port: PortId, frame: &[u8]) {
        self.router.record_tx(port, frame.len());
        self.outbox[port.index()].push(frame.to_vec());
    }

    /// Injects a frame with offload metadata, then delivers everything it caused.
    pub fn inject_with_meta(
        &mut self,
        port: PortId,
        frame: &[u8],
        meta: FrameMeta,
    ) -> RouteVerdict {
        let mut buf = frame.to_vec();
        let info = FrameInfo::parse(&buf).expect("not a runt");
        let mut out = vec![0u8; 2048];
        let v = self
            .router
            .process(port, &mut buf, &info, &meta, self.now, &mut out);
        match v.action {
            RouteAction::Forward(p) => self.send(p, &buf.clone()),
            RouteAction::Fragment {
                port: p,
                mtu,
                count,
            } => {
                let info = FrameInfo::parse(&buf).expect("parse");
                let mut f = Fragmenter::new(&buf, &info, mtu).expect("fragmenter");
                assert_eq!(f.count(), usize::from(count));
                let mut fo = vec![0u8; 70_000];
                while let Some(r) = f.next_fragment(&buf, &mut fo) {
                    let n = r.expect("fragment");
                    let frag = fo[..n].to_vec();
                    self.send(p, &frag);
                }
            }
            RouteAction::Dhcp => self.dhcp.push((port, buf.clone())),
            _ => {}
        }
        if let Some(e) = v.emit {
            let f = out[..e.len].to_vec();
            self.send(e.port, &f);
        }
        self.drain_ready();
        v
    }

    fn drain_ready(&mut self) {
        let mut ready = Vec::new();
        while let Some(()) = self
            .router
            .pop_ready(|rf, f| ready.push((rf.port, f.to_vec())))
        {}
        for (p, f) in ready {
            self.send(p, &f);
        }
    }

    /// Frames sent on `port` since the last `take`.
    pub fn delivered(&self, port: PortId) -> &[Vec<u8>] {
        &self.outbox[port.index()]
    }

    /// Removes and returns the frames sent on `port`.
    pub fn take(&mut self, port: PortId) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.outbox[port.index()])
    }

    /// Panics unless every port's and the totals' conservation equations hold.
    pub fn assert_conservation(&self) {
        for (id, _) in self.router.ports() {
            if let Err(e) = self
                .router
                .port_counters(id)
                .expect("port")
                .check_conservation()
            {
                panic!("conservation violated on router port {id}: {e}");
            }
        }
        if let Err(e) = self.router.counters().ports.check_conservation() {
            panic!("router totals: {e}");
        }
    }
}
