//! An in-memory fabric for tests (quinn's `Pair`, smoltcp's netsim; DESIGN.md "Testing
//! habits"): a [`Bridge`] with a fake clock, frames injected on ports, and what each port
//! would have transmitted collected in memory. It drives the pipeline exactly as a
//! datapath shell must: `process`, then per destination `egress_check` and `record_tx` /
//! `record_tx_drop`, so the conservation equations hold at the end of every test.
//!
//! Test-support code: it allocates freely and panics on misuse.

use core::time::Duration;

use crate::bridge::{Bridge, BridgeConfig, Decision, RxFrame, Verdict, MAX_BATCH};
use crate::counters::{ConservationError, DropReason, PortCounters};
use crate::meta::FrameMeta;
use crate::pcap::PcapWriter;
use crate::port::{PortConfig, PortId};
use crate::time::Timestamp;

/// A bridge, a clock and per-port outboxes.
#[derive(Debug)]
pub struct Fabric {
    /// The bridge under test.
    pub bridge: Bridge,
    now: Timestamp,
    outbox: Vec<Vec<Vec<u8>>>,
    /// Ports whose transmit queue is "full": frames to them are dropped as
    /// `tx_queue_full`.
    full: Vec<bool>,
    capture: Option<(PortId, PcapWriter<Vec<u8>>)>,
}

impl Default for Fabric {
    fn default() -> Self {
        Fabric::new(BridgeConfig::default())
    }
}

impl Fabric {
    /// An empty fabric at time zero.
    pub fn new(config: BridgeConfig) -> Self {
        Fabric {
            bridge: Bridge::new(config),
            now: Timestamp::ZERO,
            outbox: Vec::new(),
            full: Vec::new(),
            capture: None,
        }
    }

    /// Adds a port.
    pub fn add_port(&mut self, config: PortConfig) -> PortId {
        let id = self.bridge.add_port(config).expect("add_port");
        if self.outbox.len() <= id.index() {
            self.outbox.resize_with(id.index() + 1, Vec::new);
            self.full.resize(id.index() + 1, false);
        }
        self.outbox[id.index()].clear();
        self.full[id.index()] = false;
        id
    }

    /// The fake clock.
    pub fn now(&self) -> Timestamp {
        self.now
    }

    /// Moves the clock forward and runs the aging timer, as a shell's periodic timer
    /// would.
    pub fn advance(&mut self, d: Duration) {
        self.now = self.now + d;
        self.bridge.expire(self.now, usize::MAX);
    }

    /// Marks a port's transmit queue full (or not).
    pub fn set_tx_full(&mut self, port: PortId, full: bool) {
        self.full[port.index()] = full;
    }

    /// Captures every frame transmitted on `port` into an in-memory pcap.
    pub fn capture(&mut self, port: PortId) {
        self.capture = Some((port, PcapWriter::new(Vec::new()).expect("pcap header")));
    }

    /// The capture so far (pcap file bytes), if capturing.
    pub fn capture_bytes(&self) -> Option<&[u8]> {
        self.capture.as_ref().map(|(_, w)| w.get_ref().as_slice())
    }

    /// Injects a plain frame on `port`.
    pub fn inject(&mut self, port: PortId, frame: &[u8]) -> Decision {
        self.inject_with_meta(port, frame, FrameMeta::default())
    }

    /// Injects a frame with offload metadata on `port`.
    pub fn inject_with_meta(&mut self, port: PortId, frame: &[u8], meta: FrameMeta) -> Decision {
        let v = self.bridge.process(port, frame, &meta, self.now);
        self.deliver(port, frame, &meta, &v);
        v.decision
    }

    /// Injects up to [`MAX_BATCH`] frames on `port` through the batch entry point.
    pub fn inject_batch(&mut self, port: PortId, frames: &[&[u8]]) -> Vec<Decision> {
        assert!(frames.len() <= MAX_BATCH);
        let rx: Vec<RxFrame<'_>> = frames
            .iter()
            .map(|&data| RxFrame {
                data,
                meta: FrameMeta::default(),
            })
            .collect();
        let mut out = [Verdict::default(); MAX_BATCH];
        let n = self.bridge.process_batch(port, &rx, self.now, &mut out);
        assert_eq!(n, frames.len());
        for (f, v) in rx.iter().zip(&out[..n]) {
            self.deliver(port, f.data, &f.meta, v);
        }
        out[..n].iter().map(|v| v.decision).collect()
    }

    fn deliver(&mut self, in_port: PortId, frame: &[u8], meta: &FrameMeta, v: &Verdict) {
        let mut dests = Vec::new();
        match v.decision {
            Decision::Drop(_) => return,
            Decision::Unicast(p) => dests.push(p),
            Decision::Flood => self.bridge.flood_ports_into(in_port, &mut dests),
        }
        for dst in dests {
            match self.bridge.egress_check(dst, &v.info, meta) {
                Err(r) => self.bridge.record_tx_drop(dst, r),
                Ok(()) if self.full[dst.index()] => {
                    self.bridge.record_tx_drop(dst, DropReason::TxQueueFull)
                }
                Ok(()) => {
                    self.bridge.record_tx(dst, frame.len());
                    self.outbox[dst.index()].push(frame.to_vec());
                    if let Some((cp, w)) = &mut self.capture {
                        if *cp == dst {
                            let t = Duration::from_millis(self.now.millis());
                            w.write_frame(t, frame).expect("pcap write");
                        }
                    }
                }
            }
        }
    }

    /// Frames transmitted on `port` since the last `take`.
    pub fn delivered(&self, port: PortId) -> &[Vec<u8>] {
        &self.outbox[port.index()]
    }

    /// Removes and returns the frames transmitted on `port`.
    pub fn take(&mut self, port: PortId) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.outbox[port.index()])
    }

    /// Empties every outbox.
    pub fn clear(&mut self) {
        for o in &mut self.outbox {
            o.clear();
        }
    }

    /// A port's counters.
    pub fn counters(&self, port: PortId) -> PortCounters {
        *self.bridge.port_counters(port).expect("port exists")
    }

    /// Checks both conservation equations on every port and the bridge totals.
    pub fn check_conservation(&self) -> Result<(), (Option<PortId>, ConservationError)> {
        for (id, _) in self.bridge.ports() {
            self.counters(id)
                .check_conservation()
                .map_err(|e| (Some(id), e))?;
        }
        self.bridge
            .counters()
            .ports
            .check_conservation()
            .map_err(|e| (None, e))
    }

    /// Panics with the failing port unless every conservation equation holds.
    pub fn assert_conservation(&self) {
        if let Err((port, e)) = self.check_conservation() {
            panic!("conservation violated on port {port:?}: {e}");
        }
    }
}
