//! What the datapath reports to the control plane (`domnet stats`, `bridge show`,
//! `fdb show`, `capture`).

use serde::Serialize;

use crate::counters::{DropReason, PortCounters};

/// Counters of one port, as `domnet stats` shows them.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct PortReport {
    /// Port name.
    pub name: String,
    /// Bridge it is attached to.
    pub bridge: Option<String>,
    /// Link state.
    pub carrier: bool,
    /// Frames received from the port.
    pub rx_packets: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Frames sent out of the port.
    pub tx_packets: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Received frames forwarded (unicast or flooded).
    pub rx_forwarded: u64,
    /// Of those, flooded.
    pub rx_flooded: u64,
    /// Received frames consumed inside the switch (router, DHCP, DNS).
    pub rx_delivered_local: u64,
    /// Frames the pipeline offered to this port.
    pub tx_offered: u64,
    /// Receive-side drops by reason (only non-zero reasons).
    pub rx_drops: Vec<(String, u64)>,
    /// Transmit-side drops by reason (only non-zero reasons).
    pub tx_drops: Vec<(String, u64)>,
    /// The driver's own counters (ring errors, backlog drops, GSO frames…).
    pub driver: Vec<(String, u64)>,
}

impl PortReport {
    /// Fills the switch-side counters from the bridge's view of the port.
    pub fn fill_from(&mut self, c: &PortCounters) {
        self.rx_packets = c.rx_packets;
        self.rx_bytes = c.rx_bytes;
        self.tx_packets = c.tx_packets;
        self.tx_bytes = c.tx_bytes;
        self.rx_forwarded = c.rx_forwarded;
        self.rx_flooded = c.rx_flooded;
        self.rx_delivered_local = c.rx_delivered_local;
        self.tx_offered = c.tx_offered;
        self.rx_drops = nonzero(|r| c.rx_drops[r]);
        self.tx_drops = nonzero(|r| c.tx_drops[r]);
    }
}

fn nonzero(get: impl Fn(DropReason) -> u64) -> Vec<(String, u64)> {
    DropReason::ALL
        .iter()
        .filter_map(|&r| {
            let n = get(r);
            (n > 0).then(|| (r.name().to_string(), n))
        })
        .collect()
}

/// One bridge, as `domnet bridge show` lists it.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct BridgeReport {
    /// Bridge name.
    pub name: String,
    /// Attached ports in port-id order (the host port first).
    pub ports: Vec<String>,
    /// MAC table entries.
    pub fdb_entries: usize,
    /// MAC table aging in seconds.
    pub aging_secs: u64,
    /// MAC table limit.
    pub fdb_max: usize,
    /// Learned entries ever / expired / evicted / moved.
    pub fdb_learned: u64,
    /// Expired entries.
    pub fdb_expired: u64,
    /// Evicted entries.
    pub fdb_evicted: u64,
    /// MAC moves.
    pub fdb_moved: u64,
}

/// One MAC table row, as `domnet fdb show` lists it.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct FdbEntryReport {
    /// MAC address.
    pub mac: String,
    /// Port name.
    pub port: String,
    /// VLAN (0 = untagged).
    pub vlan: u16,
    /// Seconds since last seen (0 for static entries).
    pub age: f64,
    /// Configured rather than learned.
    pub is_static: bool,
}

/// Which way a captured frame went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Direction {
    /// Received from the port.
    Rx,
    /// Sent out of the port.
    Tx,
}

/// A captured frame.
#[derive(Debug, Clone)]
pub struct CapturedFrame {
    /// Wall-clock time.
    pub time: std::time::SystemTime,
    /// Direction.
    pub dir: Direction,
    /// The frame (Ethernet header first).
    pub data: Vec<u8>,
}
