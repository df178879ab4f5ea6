//! Switch ports and their configuration.
//!
//! A port is one attachment of the bridge: a guest's vif (netback), the bridge's own
//! host-side TAP (what `xenbr0` is in dom0), or the physical uplink (AF_PACKET on the NIC).
//! Only vif ports are untrusted: anti-spoofing, RA-Guard and the rogue-DHCP guard apply to
//! them alone (robustness.md §3 b5, b6, b12).

use core::fmt;

use crate::wire::{Ipv4Cidr, Ipv6Cidr, MacAddr};

/// Index of a port on one bridge. Ids are reused after a port is removed (its MAC table
/// entries are flushed first, so a new port never inherits them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortId(pub u16);

impl PortId {
    /// The id as an index.
    pub const fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for PortId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Default MTU of every port kind (`mtu` xenstore key default, robustness.md §3 b4).
pub const DEFAULT_MTU: u32 = 1500;

/// Largest MTU a vif can have: 65535 minus an Ethernet header with one VLAN tag
/// (robustness.md §3 b4, netback `interface.c`).
pub const MAX_MTU: u32 = 65535 - 18;

/// What a port is attached to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PortKind {
    /// A guest's netback vif: untrusted.
    Vif(VifConfig),
    /// The bridge's internal TAP port in dom0 (holds dom0's address on the bridge).
    Host,
    /// The physical NIC, bridged through AF_PACKET.
    Uplink,
}

/// The anti-spoofing identity of a vif (xl vif spec `mac=` and `ip=`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VifConfig {
    /// The vif's MAC. Every frame from the guest must carry it as Ethernet source and as
    /// ARP sender hardware address.
    pub mac: MacAddr,
    /// IPv4 sources the guest may use. When this and `allowed_ipv6` are both empty, IP
    /// addresses are not filtered (Xen: no `ip=` means no iptables rule).
    pub allowed_ipv4: Vec<Ipv4Cidr>,
    /// IPv6 sources the guest may use (besides link-local and `::`).
    pub allowed_ipv6: Vec<Ipv6Cidr>,
}

impl VifConfig {
    /// A vif with MAC filtering only.
    pub fn new(mac: MacAddr) -> Self {
        VifConfig {
            mac,
            allowed_ipv4: Vec::new(),
            allowed_ipv6: Vec::new(),
        }
    }

    /// IP filtering is active once any address is configured (fail closed from then on:
    /// a family with no addresses is refused entirely).
    pub fn filters_ip(&self) -> bool {
        !self.allowed_ipv4.is_empty() || !self.allowed_ipv6.is_empty()
    }
}

/// How a port treats VLAN-tagged frames.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum VlanMode {
    /// Tagged and untagged frames pass unchanged, learned per outer VLAN (a Linux bridge
    /// without `vlan_filtering`; OVS trunk without `trunks`). The default for host and
    /// uplink ports.
    #[default]
    Trunk,
    /// Only untagged (or priority-tagged, VID 0) frames: tagged frames are dropped on
    /// ingress (`ingress_vlan_filter`) and never sent on egress (`egress_vlan_filter`).
    /// The default for vifs (robustness.md §3 b3).
    Untagged,
}

/// Configuration of one port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortConfig {
    /// Name for listings (`vif1.0`, `xenbr0`, `eth0`); not used for forwarding.
    pub name: String,
    /// What the port is attached to.
    pub kind: PortKind,
    /// Largest L2 payload (L3 packet) the port transmits.
    pub mtu: u32,
    /// A disabled port neither receives nor transmits (its frames are dropped with
    /// `port_disabled`), and its learned MACs are flushed (Linux `br_stp_disable_port`).
    pub enabled: bool,
    /// VLAN handling.
    pub vlan_mode: VlanMode,
    /// Per-port limit on learned MACs; `None` uses the table's default.
    pub max_learned_macs: Option<usize>,
}

impl PortConfig {
    /// A vif port with the defaults: MTU 1500, enabled, untagged only.
    pub fn vif(name: impl Into<String>, vif: VifConfig) -> Self {
        PortConfig {
            name: name.into(),
            kind: PortKind::Vif(vif),
            mtu: DEFAULT_MTU,
            enabled: true,
            vlan_mode: VlanMode::Untagged,
            max_learned_macs: None,
        }
    }

    /// The bridge's host (TAP) port: MTU 1500, enabled, trunk.
    pub fn host(name: impl Into<String>) -> Self {
        PortConfig {
            name: name.into(),
            kind: PortKind::Host,
            mtu: DEFAULT_MTU,
            enabled: true,
            vlan_mode: VlanMode::Trunk,
            max_learned_macs: None,
        }
    }

    /// An uplink port: MTU 1500, enabled, trunk.
    pub fn uplink(name: impl Into<String>) -> Self {
        PortConfig {
            name: name.into(),
            kind: PortKind::Uplink,
            mtu: DEFAULT_MTU,
            enabled: true,
            vlan_mode: VlanMode::Trunk,
            max_learned_macs: None,
        }
    }

    /// The vif identity, if this is a vif port.
    pub fn vif_config(&self) -> Option<&VifConfig> {
        match &self.kind {
            PortKind::Vif(v) => Some(v),
            _ => None,
        }
    }
}
