//! From a rig file to a plan: every value checked and resolved (defaults filled in,
//! each vif's link and addressing decided, the xl.cfg of each domain written), or an
//! error naming the offending key and value. Pure: the builder only carries the plan
//! out.
//!
//! Rules beyond the grammars (xl vif spec: `netcfg::vifspec`; rate: `netcfg::rate`;
//! NAT networks: `netcfg::netdef`; delay and loss: `netcfg::netem`):
//!
//! * a vif's link follows from its spec as in Xen: `script=vif-route` routes it,
//!   `script=vif-nat` is Xen's per-vif NAT, anything else joins `bridge=` (default
//!   `xenbr0`), which must be one of the rig's bridges or a NAT network's bridge;
//! * addresses are given the way a user would: a bridged vif's IPv4 `ip=` is set in the
//!   guest (prefix from `ip=`, else from the bridge's or the outside's subnet, else
//!   /24); vifs on a NAT network with DHCP, routed and vif-nat vifs, and vifs with
//!   `dhcp = true` run dhclient (the switch's DHCP hands out `ip=` when given);
//! * routed and vif-nat vifs, NAT networks that masquerade and a bridge taking the
//!   uplink (`netdev`) need an `[outside]`: dom0 has no address to route or
//!   masquerade with otherwise;
//! * routed addresses outside the outside's subnet get a /32 route via dom0 in the
//!   outside, so the outside reaches them as a LAN router would.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use netcfg::netdef::{ForwardMode, NetDefError, NetworkDef, PortForwardDef};
use serde::{Deserialize, Serialize};

use super::addr::IfAddr;
use super::names::{self, UPLINK};
use super::spec::{DomainSpec, RigFile, VifEntry};

/// Default guest memory (MiB).
pub const DEFAULT_MEMORY_MIB: u32 = 32;
/// The outside's default address.
pub const DEFAULT_OUTSIDE: &str = "10.0.0.254/24";
/// xl's default bridge.
const DEFAULT_BRIDGE: &str = "xenbr0";

/// A rig file value that is wrong; the message names the key (a path such as
/// `domain[web].vif[0].rate`) and the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{key}`{}: {reason}", if value.is_empty() { String::new() } else { format!(" = {value:?}") })]
pub struct PlanError {
    /// Where the value is.
    pub key: String,
    /// The value as written.
    pub value: String,
    /// What is wrong.
    pub reason: String,
}

fn invalid(key: impl Into<String>, value: impl ToString, reason: impl Into<String>) -> PlanError {
    PlanError {
        key: key.into(),
        value: value.to_string(),
        reason: reason.into(),
    }
}

/// A whole rig, resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RigPlan {
    /// The rig's name.
    pub name: String,
    /// The outside namespace and dom0's uplink.
    pub outside: Option<OutsidePlan>,
    /// dom0's bridges, in file order.
    pub bridges: Vec<BridgePlan>,
    /// NAT networks, complete definitions.
    pub networks: Vec<NetworkDef>,
    /// Domains, in file order.
    pub domains: Vec<DomainPlan>,
}

/// The outside namespace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutsidePlan {
    /// Its `eth0` address.
    pub address: IfAddr,
    /// dom0's uplink (`eth0`) address; dom0's default route goes to the outside.
    pub dom0_address: IfAddr,
    /// Routed guest addresses off the outside's subnet, routed via dom0.
    pub routes: Vec<Ipv4Addr>,
}

/// A bridge in dom0's switch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BridgePlan {
    /// Name.
    pub name: String,
    /// Carries dom0's uplink (`network-bridge start`).
    pub uplink: bool,
    /// dom0's address on the host port (plain bridges).
    pub address: Option<IfAddr>,
    /// MAC aging, seconds.
    pub aging: Option<u64>,
}

/// A domain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DomainPlan {
    /// Short name.
    pub name: String,
    /// Memory, MiB.
    pub memory: u32,
    /// Default route for static addressing.
    pub gateway: Option<Ipv4Addr>,
    /// The vif (devid) the gateway is reached on directly, when it is on none of the
    /// domain's subnets (a routed vif with an address of its own prefix).
    #[serde(default)]
    pub gateway_dev: Option<u32>,
    /// vifs, in xl's order.
    pub vifs: Vec<VifPlan>,
}

/// How a vif reaches the rest of the rig.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Link {
    /// A port of one of the rig's bridges.
    Bridge {
        /// The bridge.
        bridge: String,
        /// It carries dom0's uplink (its addresses are on the outside's LAN).
        uplink: bool,
    },
    /// A port of a NAT network's bridge.
    Network {
        /// The network.
        network: String,
        /// Its bridge.
        bridge: String,
        /// It masquerades to the uplink (else isolated).
        nat: bool,
    },
    /// vif-route: dom0 routes its `ip=` addresses.
    Routed,
    /// vif-nat: Xen's per-vif NAT.
    VifNat,
}

impl Link {
    /// The bridge the vif is a port of, for bridged and network vifs.
    pub fn bridge(&self) -> Option<&str> {
        match self {
            Link::Bridge { bridge, .. } | Link::Network { bridge, .. } => Some(bridge),
            Link::Routed | Link::VifNat => None,
        }
    }

    /// Short description for tables: the bridge, `route` or `vif-nat`.
    pub fn describe(&self) -> String {
        match self {
            Link::Bridge { bridge, .. } => bridge.clone(),
            Link::Network {
                bridge, network, ..
            } => format!("{bridge} ({network})"),
            Link::Routed => "route".into(),
            Link::VifNat => "vif-nat".into(),
        }
    }
}

/// How a vif's guest interface gets its address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "addresses", rename_all = "kebab-case")]
pub enum Addressing {
    /// `ip addr add` in the guest.
    Static(Vec<IfAddr>),
    /// dhclient in the guest.
    Dhcp,
    /// None (a link-layer only vif).
    None,
}

/// A link impairment in the switch (both directions of the vif's link).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Impairment {
    /// Added one-way delay, µs.
    pub delay_us: u64,
    /// Jitter around it, µs.
    pub jitter_us: u64,
    /// Loss, parts per million.
    pub loss_ppm: u32,
}

/// A vif.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VifPlan {
    /// Its devid (the guest interface is `eth<devid>`).
    pub devid: u32,
    /// The xl vif spec sent to the daemon (the file's, with `rate=` added).
    pub spec: String,
    /// Its link.
    pub link: Link,
    /// Its addressing.
    pub addressing: Addressing,
    /// Delay/loss to set on its port.
    pub impairment: Option<Impairment>,
}

impl VifPlan {
    /// The guest interface.
    pub fn ifname(&self) -> String {
        format!("eth{}", self.devid)
    }
}

impl DomainPlan {
    /// The xl.cfg the domain is created from (`name` is the rig-qualified domain name).
    pub fn xl_cfg(&self, domain_name: &str) -> String {
        let vifs: Vec<String> = self.vifs.iter().map(|v| format!("'{}'", v.spec)).collect();
        format!(
            "# made by domnet rig\nname = \"{domain_name}\"\nmemory = {}\nvcpus = 1\nvif = [ {} ]\n",
            self.memory,
            vifs.join(", ")
        )
    }
}

impl RigPlan {
    /// Every network namespace of the rig: dom0, the outside, the domains.
    pub fn namespaces(&self) -> Vec<String> {
        let mut v = vec![names::ns_name(&self.name, names::DOM0)];
        if self.outside.is_some() {
            v.push(names::ns_name(&self.name, names::OUTSIDE));
        }
        v.extend(
            self.domains
                .iter()
                .map(|d| names::ns_name(&self.name, &d.name)),
        );
        v
    }

    /// A domain by short name.
    pub fn domain(&self, name: &str) -> Option<&DomainPlan> {
        self.domains.iter().find(|d| d.name == name)
    }

    /// Whether any vif asks for delay or loss.
    pub fn has_impairments(&self) -> bool {
        self.domains
            .iter()
            .any(|d| d.vifs.iter().any(|v| v.impairment.is_some()))
    }
}

/// The rig's name: `--name`, else the file's `name`, else made from the file name.
pub fn resolve_name(
    file: &RigFile,
    override_name: Option<&str>,
    path: Option<&std::path::Path>,
) -> Result<String, PlanError> {
    let (key, name) = match (override_name, &file.name) {
        (Some(n), _) => ("--name", n.to_string()),
        (None, Some(n)) => ("name", n.clone()),
        (None, None) => match path.and_then(names::rig_name_from_file) {
            Some(n) => return Ok(n),
            None => {
                return Err(invalid(
                    "name",
                    "",
                    "missing, and the file name gives no usable rig name",
                ))
            }
        },
    };
    names::validate_rig_name(&name).map_err(|r| invalid(key, &name, r))?;
    Ok(name)
}

/// Checks and resolves a rig file into a plan for rig `name`.
pub fn plan(file: &RigFile, name: &str) -> Result<RigPlan, PlanError> {
    names::validate_rig_name(name).map_err(|r| invalid("name", name, r))?;
    let outside = plan_outside(file)?;
    let bridges = plan_bridges(file, outside.as_ref())?;
    let networks = plan_networks(file, outside.as_ref(), &bridges)?;
    let mut domains = Vec::new();
    let mut seen_addrs: Vec<(Ipv4Addr, String)> = Vec::new();
    for (i, d) in file.domain.iter().enumerate() {
        let dp = plan_domain(i, d, outside.as_ref(), &bridges, &networks)?;
        if domains.iter().any(|o: &DomainPlan| o.name == dp.name) {
            return Err(invalid(
                format!("domain[{i}].name"),
                &dp.name,
                "two domains with this name",
            ));
        }
        for v in &dp.vifs {
            if let Addressing::Static(addrs) = &v.addressing {
                for a in addrs {
                    let key = format!("domain[{}].vif[{}]", dp.name, v.devid);
                    if let Some((_, other)) = seen_addrs.iter().find(|(ip, _)| *ip == a.ip) {
                        return Err(invalid(key, a, format!("address already used by {other}")));
                    }
                    if outside
                        .as_ref()
                        .is_some_and(|o| o.address.ip == a.ip || o.dom0_address.ip == a.ip)
                    {
                        return Err(invalid(key, a, "address of the outside or dom0's uplink"));
                    }
                    seen_addrs.push((a.ip, format!("domain {}", dp.name)));
                }
            }
        }
        domains.push(dp);
    }
    let mut outside = outside;
    if let Some(o) = outside.as_mut() {
        for d in file.domain.iter() {
            for v in &d.vif {
                let Ok(spec) = netcfg::vifspec::parse_vif_spec(&v.spec) else {
                    continue;
                };
                if script_name(&spec) != Some("vif-route") {
                    continue;
                }
                for ip in routed_ipv4(&spec) {
                    if !o.address.contains(ip) && !o.routes.contains(&ip) {
                        o.routes.push(ip);
                    }
                }
            }
        }
    }
    Ok(RigPlan {
        name: name.to_string(),
        outside,
        bridges,
        networks,
        domains,
    })
}

fn parse_ifaddr(key: &str, text: &str) -> Result<IfAddr, PlanError> {
    text.parse::<IfAddr>()
        .map_err(|e| invalid(key, text, e.to_string()))
}

fn plan_outside(file: &RigFile) -> Result<Option<OutsidePlan>, PlanError> {
    let Some(o) = &file.outside else {
        return Ok(None);
    };
    let text = o.address.as_deref().unwrap_or(DEFAULT_OUTSIDE);
    let address = parse_ifaddr("outside.address", text)?;
    if !(8..=30).contains(&address.len) {
        return Err(invalid(
            "outside.address",
            text,
            "prefix length must be 8..=30",
        ));
    }
    let dom0_address = match &o.dom0_address {
        Some(t) => {
            let a = if t.contains('/') {
                parse_ifaddr("outside.dom0_address", t)?
            } else {
                let ip: Ipv4Addr = t
                    .parse()
                    .map_err(|_| invalid("outside.dom0_address", t, "not an IPv4 address"))?;
                address.with_ip(ip)
            };
            if a.len != address.len || !address.contains(a.ip) {
                return Err(invalid(
                    "outside.dom0_address",
                    t,
                    format!("not on the outside's subnet {address}"),
                ));
            }
            if a.ip == address.ip {
                return Err(invalid(
                    "outside.dom0_address",
                    t,
                    "the same as the outside's address",
                ));
            }
            a
        }
        None => {
            let first = address.nth_host(1).unwrap_or(address.ip);
            let ip = if first == address.ip {
                address.nth_host(2).unwrap_or(first)
            } else {
                first
            };
            address.with_ip(ip)
        }
    };
    Ok(Some(OutsidePlan {
        address,
        dom0_address,
        routes: Vec::new(),
    }))
}

fn plan_bridges(
    file: &RigFile,
    outside: Option<&OutsidePlan>,
) -> Result<Vec<BridgePlan>, PlanError> {
    let mut out: Vec<BridgePlan> = Vec::new();
    for (i, b) in file.bridge.iter().enumerate() {
        netcfg::vifspec::validate_ifname(&b.name)
            .map_err(|r| invalid(format!("bridge[{i}].name"), &b.name, r))?;
        let key = |k: &str| format!("bridge[{}].{k}", b.name);
        if b.name == UPLINK || b.name == "lo" {
            return Err(invalid(
                key("name"),
                &b.name,
                "the name of an interface dom0 already has",
            ));
        }
        if out.iter().any(|o| o.name == b.name) {
            return Err(invalid(key("name"), &b.name, "two bridges with this name"));
        }
        let uplink = match &b.netdev {
            None => false,
            Some(n) if n == UPLINK => {
                if outside.is_none() {
                    return Err(invalid(
                        key("netdev"),
                        n,
                        "dom0's uplink exists only with an [outside]",
                    ));
                }
                if out.iter().any(|o| o.uplink) {
                    return Err(invalid(
                        key("netdev"),
                        n,
                        "another bridge already takes dom0's uplink",
                    ));
                }
                true
            }
            Some(n) => {
                return Err(invalid(
                    key("netdev"),
                    n,
                    format!("dom0's only NIC is its uplink `{UPLINK}`"),
                ))
            }
        };
        let address = match &b.address {
            None => None,
            Some(_) if uplink => {
                return Err(invalid(
                    key("address"),
                    b.address.as_deref().unwrap_or_default(),
                    "a bridge with netdev takes dom0's uplink address; give no address",
                ))
            }
            Some(t) => {
                let a = parse_ifaddr(&key("address"), t)?;
                if outside.is_some_and(|o| o.address.overlaps(&a)) {
                    return Err(invalid(key("address"), t, "overlaps the outside's subnet"));
                }
                Some(a)
            }
        };
        out.push(BridgePlan {
            name: b.name.clone(),
            uplink,
            address,
            aging: b.aging,
        });
    }
    Ok(out)
}

/// The rig-only key of a network table: forwards in `net forward`'s string form.
const PORT_FORWARDS: &str = "port_forwards";

fn netdef_error(net: &str, e: NetDefError) -> PlanError {
    match e {
        NetDefError::Invalid { key, value, reason } => {
            invalid(format!("network[{net}].{key}"), value, reason)
        }
        NetDefError::Syntax(m) => invalid(format!("network[{net}]"), "", m),
        NetDefError::Forward(s) => invalid(
            format!("network[{net}].{PORT_FORWARDS}"),
            s,
            "expected PROTO:HOSTPORT:GUESTIP:GUESTPORT",
        ),
    }
}

fn plan_networks(
    file: &RigFile,
    outside: Option<&OutsidePlan>,
    bridges: &[BridgePlan],
) -> Result<Vec<NetworkDef>, PlanError> {
    let mut out: Vec<NetworkDef> = Vec::new();
    for (i, table) in file.network.iter().enumerate() {
        let mut table = table.clone();
        let name = match table.get("name") {
            Some(toml::Value::String(s)) => s.clone(),
            Some(other) => {
                return Err(invalid(
                    format!("network[{i}].name"),
                    other,
                    "must be a string",
                ))
            }
            None => return Err(invalid(format!("network[{i}].name"), "", "missing")),
        };
        let forwards = match table.remove(PORT_FORWARDS) {
            None => Vec::new(),
            Some(toml::Value::Array(a)) => a,
            Some(other) => {
                return Err(invalid(
                    format!("network[{name}].{PORT_FORWARDS}"),
                    other,
                    "must be a list of \"PROTO:HOSTPORT:GUESTIP:GUESTPORT\" strings",
                ))
            }
        };
        // `default` starts from libvirt's definition; the table's keys override it.
        let mut merged = if name == "default" {
            match toml::Value::try_from(NetworkDef::libvirt_default()) {
                Ok(toml::Value::Table(t)) => t,
                Ok(_) => toml::Table::new(),
                Err(e) => return Err(invalid(format!("network[{name}]"), "", e.to_string())),
            }
        } else {
            toml::Table::new()
        };
        merged.extend(table);
        let mut def: NetworkDef =
            toml::Value::Table(merged)
                .try_into()
                .map_err(|e: toml::de::Error| {
                    invalid(format!("network[{name}]"), "", e.message().to_string())
                })?;
        for f in forwards {
            let s = f.as_str().ok_or_else(|| {
                invalid(
                    format!("network[{name}].{PORT_FORWARDS}"),
                    &f,
                    "must be a string",
                )
            })?;
            let fwd: PortForwardDef = s.parse().map_err(|e| netdef_error(&name, e))?;
            def.port_forward.push(fwd);
        }
        def.validate().map_err(|e| netdef_error(&name, e))?;
        let key = |k: &str| format!("network[{name}].{k}");
        if out.iter().any(|o| o.name == def.name) {
            return Err(invalid(
                key("name"),
                &def.name,
                "two networks with this name",
            ));
        }
        if out.iter().any(|o| o.bridge == def.bridge)
            || bridges.iter().any(|b| b.name == def.bridge)
        {
            return Err(invalid(
                key("bridge"),
                &def.bridge,
                "a bridge of that name is already in the rig",
            ));
        }
        if def.forward == ForwardMode::Nat && outside.is_none() {
            return Err(invalid(
                key("forward"),
                "nat",
                "masquerade needs dom0's uplink: add an [outside] or set forward = \"none\"",
            ));
        }
        let (gw, len) = def.gateway().map_err(|e| netdef_error(&name, e))?;
        let subnet = IfAddr { ip: gw, len };
        if outside.is_some_and(|o| o.address.overlaps(&subnet)) {
            return Err(invalid(
                key("address"),
                &def.address,
                "overlaps the outside's subnet",
            ));
        }
        if let Some(u) = &def.uplink {
            if !bridges.iter().any(|b| &b.name == u && b.uplink) && u != UPLINK {
                return Err(invalid(
                    key("uplink"),
                    u,
                    "dom0's uplink is eth0 (or the bridge that took it)",
                ));
            }
        }
        out.push(def);
    }
    Ok(out)
}

fn script_name(spec: &netcfg::vifspec::VifSpec) -> Option<&str> {
    spec.script
        .as_deref()
        .map(|s| s.rsplit('/').next().unwrap_or(s))
}

fn routed_ipv4(spec: &netcfg::vifspec::VifSpec) -> Vec<Ipv4Addr> {
    spec.ip
        .iter()
        .filter_map(|a| match a.addr {
            std::net::IpAddr::V4(v4) => Some(v4),
            std::net::IpAddr::V6(_) => None,
        })
        .collect()
}

fn plan_domain(
    index: usize,
    d: &DomainSpec,
    outside: Option<&OutsidePlan>,
    bridges: &[BridgePlan],
    networks: &[NetworkDef],
) -> Result<DomainPlan, PlanError> {
    names::validate_host_name(&d.name)
        .map_err(|r| invalid(format!("domain[{index}].name"), &d.name, r))?;
    let key = |k: &str| format!("domain[{}].{k}", d.name);
    let memory = d.memory.unwrap_or(DEFAULT_MEMORY_MIB);
    if !(8..=65536).contains(&memory) {
        return Err(invalid(key("memory"), memory, "must be 8..=65536 MiB"));
    }
    let gateway = match &d.gateway {
        None => None,
        Some(g) => Some(
            g.parse::<Ipv4Addr>()
                .map_err(|_| invalid(key("gateway"), g, "not an IPv4 address"))?,
        ),
    };
    let mut vifs: Vec<VifPlan> = Vec::new();
    for (i, v) in d.vif.iter().enumerate() {
        let vp = plan_vif(&d.name, i, v, outside, bridges, networks)?;
        if vifs.iter().any(|o| o.devid == vp.devid) {
            return Err(invalid(
                format!("domain[{}].vif[{i}]", d.name),
                &v.spec,
                format!("devid {} used twice", vp.devid),
            ));
        }
        vifs.push(vp);
    }
    let routed_static = vifs
        .iter()
        .find(|v| v.link == Link::Routed && matches!(v.addressing, Addressing::Static(_)))
        .map(|v| v.devid);
    // A routed vif set by hand: dom0 is its router. A static address on the bridge
    // carrying the uplink: the outside is the LAN's router, as in the classic Xen
    // set-up.
    let gateway = gateway.or_else(|| routed_static.and(outside.map(|o| o.dom0_address.ip)));
    let gateway = gateway.or_else(|| {
        let o = outside?;
        vifs.iter().find_map(|v| match (&v.link, &v.addressing) {
            (Link::Bridge { uplink: true, .. }, Addressing::Static(a))
                if a.iter().any(|a| o.address.contains(a.ip)) =>
            {
                Some(o.address.ip)
            }
            _ => None,
        })
    });
    let on_a_subnet = |g: Ipv4Addr| {
        vifs.iter().any(|v| match &v.addressing {
            Addressing::Static(a) => a.iter().any(|a| a.len < 32 && a.contains(g)),
            _ => false,
        })
    };
    let gateway_dev = match gateway {
        Some(g) if !on_a_subnet(g) => routed_static,
        _ => None,
    };
    Ok(DomainPlan {
        name: d.name.clone(),
        memory,
        gateway,
        gateway_dev,
        vifs,
    })
}

fn plan_vif(
    dom: &str,
    i: usize,
    v: &VifEntry,
    outside: Option<&OutsidePlan>,
    bridges: &[BridgePlan],
    networks: &[NetworkDef],
) -> Result<VifPlan, PlanError> {
    let key = |k: &str| {
        if k.is_empty() {
            format!("domain[{dom}].vif[{i}]")
        } else {
            format!("domain[{dom}].vif[{i}].{k}")
        }
    };
    if v.spec.contains(['\'', '"', '\n', '\r', '\\']) {
        return Err(invalid(
            key(""),
            &v.spec,
            "a vif spec may not contain quotes, backslashes or line breaks",
        ));
    }
    let spec = netcfg::vifspec::parse_vif_spec(&v.spec)
        .map_err(|e| invalid(key(""), &v.spec, e.to_string()))?;
    let mut xl = v.spec.clone();
    if let Some(rate) = &v.rate {
        if spec.rate.is_some() {
            return Err(invalid(
                key("rate"),
                rate,
                "the spec already has rate=; give it once",
            ));
        }
        netcfg::rate::parse_rate_spec(rate)
            .map_err(|e| invalid(key("rate"), rate, e.to_string()))?;
        if rate.contains(',') {
            return Err(invalid(key("rate"), rate, "may not contain `,`"));
        }
        if !xl.is_empty() {
            xl.push(',');
        }
        xl.push_str(&format!("rate={rate}"));
    }
    let time = |k: &str, t: &Option<String>| -> Result<u64, PlanError> {
        match t {
            None => Ok(0),
            Some(t) => netcfg::netem::parse_time(t)
                .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
                .map_err(|e| invalid(key(k), t, e.to_string())),
        }
    };
    let delay_us = time("delay", &v.delay)?;
    let jitter_us = time("jitter", &v.jitter)?;
    if jitter_us > delay_us {
        return Err(invalid(
            key("jitter"),
            v.jitter.as_deref().unwrap_or_default(),
            "larger than the delay",
        ));
    }
    let loss_ppm = match &v.loss {
        None => 0,
        Some(l) => {
            netcfg::netem::parse_loss(l).map_err(|e| invalid(key("loss"), l, e.to_string()))?
        }
    };
    let impairment = (delay_us > 0 || loss_ppm > 0).then_some(Impairment {
        delay_us,
        jitter_us,
        loss_ppm,
    });
    let devid = spec
        .devid
        .unwrap_or_else(|| u32::try_from(i).unwrap_or(u32::MAX));
    let v4: Vec<(Ipv4Addr, Option<u8>)> = spec
        .ip
        .iter()
        .filter_map(|a| match a.addr {
            std::net::IpAddr::V4(ip) => Some((ip, a.prefix_len)),
            std::net::IpAddr::V6(_) => None,
        })
        .collect();
    let need_outside = |what: &str| -> Result<(), PlanError> {
        if outside.is_none() {
            Err(invalid(
                key(""),
                &v.spec,
                format!("{what} needs dom0's uplink address: add an [outside]"),
            ))
        } else {
            Ok(())
        }
    };
    let dhcp_asked = v.dhcp == Some(true);
    let (link, addressing) = match script_name(&spec) {
        Some("vif-route") => {
            need_outside("a routed vif")?;
            if v4.is_empty() {
                return Err(invalid(
                    key(""),
                    &v.spec,
                    "a routed vif needs an IPv4 ip= (dom0 routes exactly those addresses)",
                ));
            }
            // dom0's DHCP answers for addresses on its own subnet; a routed address in
            // a prefix of its own is set by hand, as vif-route users do (a /32, and
            // dom0 as an on-link router).
            let on_dom0_subnet = outside.is_some_and(|o| {
                v4.first()
                    .is_some_and(|(ip, _)| o.dom0_address.contains(*ip))
            });
            let addressing = if on_dom0_subnet || dhcp_asked {
                Addressing::Dhcp
            } else {
                Addressing::Static(
                    v4.iter()
                        .map(|(ip, _)| IfAddr { ip: *ip, len: 32 })
                        .collect(),
                )
            };
            (Link::Routed, addressing)
        }
        Some("vif-nat") => {
            need_outside("a vif-nat vif")?;
            (Link::VifNat, Addressing::Dhcp)
        }
        _ => {
            let bridge = spec.bridge.as_deref().unwrap_or(DEFAULT_BRIDGE);
            if let Some(b) = bridges.iter().find(|b| b.name == bridge) {
                let subnet = |ip: Ipv4Addr| -> u8 {
                    if let Some(a) = b.address.filter(|a| a.contains(ip)) {
                        return a.len;
                    }
                    match outside {
                        Some(o) if b.uplink && o.address.contains(ip) => o.address.len,
                        _ => 24,
                    }
                };
                let addressing = if dhcp_asked {
                    Addressing::Dhcp
                } else if v4.is_empty() {
                    Addressing::None
                } else {
                    Addressing::Static(
                        v4.iter()
                            .map(|(ip, len)| IfAddr {
                                ip: *ip,
                                len: len.unwrap_or_else(|| subnet(*ip)),
                            })
                            .collect(),
                    )
                };
                (
                    Link::Bridge {
                        bridge: bridge.to_string(),
                        uplink: b.uplink,
                    },
                    addressing,
                )
            } else if let Some(n) = networks.iter().find(|n| n.bridge == bridge) {
                let (gw, len) = n.gateway().map_err(|e| netdef_error(&n.name, e))?;
                let net = IfAddr { ip: gw, len };
                for (ip, _) in &v4 {
                    if !net.contains(*ip) || *ip == gw {
                        return Err(invalid(
                            key(""),
                            &v.spec,
                            format!(
                                "ip= {ip} is not a guest address of network {} ({})",
                                n.name, n.address
                            ),
                        ));
                    }
                }
                let addressing = if n.dhcp_start.is_some() {
                    Addressing::Dhcp
                } else if dhcp_asked {
                    return Err(invalid(
                        key("dhcp"),
                        "true",
                        format!("network {} serves no DHCP (no dhcp_start/dhcp_end)", n.name),
                    ));
                } else if v4.is_empty() {
                    Addressing::None
                } else {
                    Addressing::Static(v4.iter().map(|(ip, _)| IfAddr { ip: *ip, len }).collect())
                };
                (
                    Link::Network {
                        network: n.name.clone(),
                        bridge: n.bridge.clone(),
                        nat: n.forward == ForwardMode::Nat,
                    },
                    addressing,
                )
            } else {
                let known: BTreeSet<String> = bridges
                    .iter()
                    .map(|b| b.name.clone())
                    .chain(
                        networks
                            .iter()
                            .map(|n| format!("{} (network {})", n.bridge, n.name)),
                    )
                    .collect();
                return Err(invalid(
                    key(""),
                    &v.spec,
                    format!(
                        "bridge `{bridge}` is not in this rig (it has: {})",
                        if known.is_empty() {
                            "none".to_string()
                        } else {
                            known.into_iter().collect::<Vec<_>>().join(", ")
                        }
                    ),
                ));
            }
        }
    };
    Ok(VifPlan {
        devid,
        spec: xl,
        link,
        addressing,
        impairment,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rig::spec;
    use proptest::prelude::*;

    fn plan_text(text: &str) -> Result<RigPlan, PlanError> {
        plan(&spec::parse(text).unwrap(), "t")
    }

    const FULL: &str = r#"
[outside]
[[bridge]]
name = "xenbr0"
netdev = "eth0"
[[bridge]]
name = "lan1"
address = "10.1.0.1/24"
[[network]]
name = "default"
port_forwards = ["tcp:8080:192.168.122.50:5201"]
[[domain]]
name = "web"
vif = [ "bridge=xenbr0,ip=10.0.0.11" ]
[[domain]]
name = "db"
vif = [ { spec = "bridge=xenbr0,ip=10.0.0.12/24", rate = "10Mb/s", delay = "5ms", loss = "1%" },
        "bridge=lan1,ip=10.1.0.5" ]
[[domain]]
name = "r1"
vif = [ "script=vif-route,ip=10.9.0.5" ]
[[domain]]
name = "nat1"
vif = [ "bridge=virbr0,ip=192.168.122.50" ]
"#;

    #[test]
    fn full_rig_resolves() {
        let p = plan_text(FULL).unwrap();
        let o = p.outside.as_ref().unwrap();
        assert_eq!(o.address.to_string(), "10.0.0.254/24");
        assert_eq!(o.dom0_address.to_string(), "10.0.0.1/24");
        assert_eq!(o.routes, vec![Ipv4Addr::new(10, 9, 0, 5)]);
        assert!(p.bridges[0].uplink && !p.bridges[1].uplink);
        let web = p.domain("web").unwrap();
        assert_eq!(
            web.vifs[0].addressing,
            Addressing::Static(vec!["10.0.0.11/24".parse().unwrap()])
        );
        assert_eq!(web.gateway, Some(Ipv4Addr::new(10, 0, 0, 254)));
        let db = p.domain("db").unwrap();
        assert_eq!(db.vifs[0].spec, "bridge=xenbr0,ip=10.0.0.12/24,rate=10Mb/s");
        assert_eq!(
            db.vifs[0].impairment,
            Some(Impairment {
                delay_us: 5000,
                jitter_us: 0,
                loss_ppm: 10_000
            })
        );
        assert_eq!(db.vifs[1].ifname(), "eth1");
        assert_eq!(
            db.vifs[1].addressing,
            Addressing::Static(vec!["10.1.0.5/24".parse().unwrap()])
        );
        // 10.9.0.5 is off dom0's subnet: set by hand, dom0 as on-link router.
        let r1 = p.domain("r1").unwrap();
        assert_eq!(r1.vifs[0].link, Link::Routed);
        assert_eq!(
            r1.vifs[0].addressing,
            Addressing::Static(vec!["10.9.0.5/32".parse().unwrap()])
        );
        assert_eq!(r1.gateway, Some(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(r1.gateway_dev, Some(0));
        assert_eq!(web.gateway_dev, None);
        let nat = &p.domain("nat1").unwrap().vifs[0];
        assert_eq!(nat.addressing, Addressing::Dhcp);
        assert!(
            matches!(&nat.link, Link::Network { network, nat: true, .. } if network == "default")
        );
        assert_eq!(p.networks[0].bridge, "virbr0");
        assert_eq!(
            p.networks[0].port_forward[0].to_string(),
            "tcp:8080:192.168.122.50:5201"
        );
        assert_eq!(
            p.namespaces(),
            ["t-dom0", "t-outside", "t-web", "t-db", "t-r1", "t-nat1"]
        );
        assert!(p.has_impairments());
    }

    #[test]
    fn xl_cfg_reads_back_with_xls_grammar() {
        let p = plan_text(FULL).unwrap();
        for d in &p.domains {
            let text = d.xl_cfg(&format!("t-{}", d.name));
            let cfg = netcfg::xlcfg::parse_xl_cfg(&text).unwrap();
            let dc = netcfg::xlcfg::domain_config(&cfg, &mut rand::thread_rng()).unwrap();
            assert_eq!(dc.name, format!("t-{}", d.name));
            assert_eq!(dc.vifs.len(), d.vifs.len());
        }
    }

    /// Each wrong value is refused with its key and value in the message.
    #[test]
    fn errors_name_the_key_and_value() {
        let cases: &[(&str, &[&str])] = &[
            (
                "[[domain]]\nname = \"Web\"\n",
                &["domain[0].name", "Web"],
            ),
            (
                "[[bridge]]\nname = \"b\"\n[[domain]]\nname = \"a\"\nvif = [ { spec = \"bridge=b\", rate = \"10Zb/s\" } ]\n",
                &["domain[a].vif[0].rate", "10Zb/s"],
            ),
            (
                "[[bridge]]\nname = \"b\"\n[[domain]]\nname = \"a\"\nvif = [ { spec = \"bridge=b\", delay = \"5 fortnights\" } ]\n",
                &["domain[a].vif[0].delay", "5 fortnights"],
            ),
            (
                "[[bridge]]\nname = \"b\"\n[[domain]]\nname = \"a\"\nvif = [ { spec = \"bridge=b\", loss = \"120%\" } ]\n",
                &["domain[a].vif[0].loss", "120%"],
            ),
            (
                "[[domain]]\nname = \"a\"\nvif = [ \"bridge=nope\" ]\n",
                &["domain[a].vif[0]", "nope", "not in this rig"],
            ),
            (
                "[[bridge]]\nname = \"b\"\n[[domain]]\nname = \"a\"\nvif = [ \"bridge=b,mac=zz\" ]\n",
                &["domain[a].vif[0]", "mac=zz"],
            ),
            (
                "[[domain]]\nname = \"a\"\nvif = [ \"script=vif-route,ip=10.0.0.5\" ]\n",
                &["domain[a].vif[0]", "[outside]"],
            ),
            (
                "[outside]\n[[domain]]\nname = \"a\"\nvif = [ \"script=vif-route\" ]\n",
                &["domain[a].vif[0]", "ip="],
            ),
            (
                "[outside]\naddress = \"10.0.0.1/33\"\n",
                &["outside.address", "10.0.0.1/33"],
            ),
            (
                "[outside]\ndom0_address = \"10.9.0.1\"\n",
                &["outside.dom0_address", "10.9.0.1"],
            ),
            (
                "[[bridge]]\nname = \"xenbr0\"\nnetdev = \"eth0\"\n",
                &["bridge[xenbr0].netdev", "eth0", "[outside]"],
            ),
            (
                "[outside]\n[[bridge]]\nname = \"xenbr0\"\nnetdev = \"eth1\"\n",
                &["bridge[xenbr0].netdev", "eth1"],
            ),
            (
                "[[network]]\nname = \"default\"\n",
                &["network[default].forward", "[outside]"],
            ),
            (
                "[outside]\n[[network]]\nname = \"lab\"\nbridge = \"labbr\"\naddress = \"10.5.0.1/40\"\n",
                &["network[lab].address", "10.5.0.1/40"],
            ),
            (
                "[outside]\n[[network]]\nname = \"lab\"\nbridge = \"labbr\"\naddress = \"10.5.0.1/24\"\nbogus = 1\n",
                &["network[lab]", "bogus"],
            ),
            (
                "[outside]\n[[network]]\nname = \"default\"\nport_forwards = [\"tcp:x:1.2.3.4:5\"]\n",
                &["network[default].port_forwards", "tcp:x:1.2.3.4:5"],
            ),
            (
                "[outside]\n[[network]]\nname = \"default\"\n[[domain]]\nname = \"a\"\nvif = [ \"bridge=virbr0,ip=10.1.1.1\" ]\n",
                &["domain[a].vif[0]", "10.1.1.1", "default"],
            ),
            (
                "[[bridge]]\nname = \"b\"\n[[domain]]\nname = \"a\"\nvif = [ \"bridge=b,ip=10.2.0.1\" ]\n[[domain]]\nname = \"c\"\nvif = [ \"bridge=b,ip=10.2.0.1\" ]\n",
                &["domain[c].vif[0]", "10.2.0.1", "already used"],
            ),
            (
                "[[bridge]]\nname = \"b\"\n[[domain]]\nname = \"a\"\nvif = [ \"bridge=b\", \"bridge=b,devid=0\" ]\n",
                &["domain[a].vif[1]", "devid 0"],
            ),
            (
                "[[bridge]]\nname = \"b\"\n[[domain]]\nname = \"a\"\nvif = [ \"bridge=b,ip='x'\" ]\n",
                &["domain[a].vif[0]", "quotes"],
            ),
        ];
        for (text, want) in cases {
            let e = plan_text(text).expect_err(text).to_string();
            for w in *want {
                assert!(e.contains(w), "{text}\n=> {e}\n(missing {w})");
            }
        }
    }

    /// The example rigs and the one in docs/rig.md stay valid.
    #[test]
    fn shipped_examples_plan() {
        let doc = include_str!("../../docs/rig.md");
        let start = doc.find("```toml\n").unwrap() + "```toml\n".len();
        let len = doc[start..].find("```").unwrap();
        for (label, text) in [
            ("demo.toml", include_str!("../../scripts/rigs/demo.toml")),
            ("lab.toml", include_str!("../../scripts/rigs/lab.toml")),
            ("docs/rig.md", &doc[start..start + len]),
        ] {
            let p = crate::rig::load_text(text, label, None, None)
                .unwrap_or_else(|e| panic!("{label}: {e}"));
            assert!(!p.domains.is_empty(), "{label}");
        }
    }

    #[test]
    fn names_resolve_in_order() {
        let f = spec::parse("name = \"lab\"\n").unwrap();
        assert_eq!(resolve_name(&f, None, None).unwrap(), "lab");
        assert_eq!(resolve_name(&f, Some("x1"), None).unwrap(), "x1");
        let e = resolve_name(&f, Some("X!"), None).unwrap_err();
        assert_eq!(e.key, "--name");
        let f = RigFile::default();
        assert_eq!(
            resolve_name(&f, None, Some(std::path::Path::new("/a/two.toml"))).unwrap(),
            "two"
        );
    }

    proptest! {
        /// Any spec the xl grammar accepts on a known bridge plans, and the spec sent
        /// to the daemon parses to the same vif plus the rate.
        #[test]
        fn accepted_specs_plan_and_round_trip(
            ip in proptest::option::of((1u8..=254, 1u8..=254)),
            mac in proptest::option::of(any::<[u8; 3]>()),
            rate in proptest::option::of(1u32..=1000),
            mtu in proptest::option::of(576u32..=9000),
        ) {
            let mut items = vec!["bridge=b".to_string()];
            if let Some((c, d)) = ip { items.push(format!("ip=10.3.{c}.{d}")); }
            if let Some(m) = mac { items.push(format!("mac=00:16:3e:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2])); }
            if let Some(m) = mtu { items.push(format!("mtu={m}")); }
            let rate_s = rate.map(|r| format!("{r}Mb/s"));
            let file = RigFile {
                bridge: vec![spec::BridgeSpec { name: "b".into(), ..Default::default() }],
                domain: vec![DomainSpec {
                    name: "a".into(),
                    vif: vec![VifEntry { spec: items.join(","), rate: rate_s.clone(), ..Default::default() }],
                    ..Default::default()
                }],
                ..Default::default()
            };
            let p = plan(&file, "p").unwrap();
            let v = &p.domains[0].vifs[0];
            let back = netcfg::vifspec::parse_vif_spec(&v.spec).unwrap();
            prop_assert_eq!(back.rate.is_some(), rate.is_some());
            prop_assert_eq!(back.mtu, mtu);
            prop_assert_eq!(matches!(v.addressing, Addressing::Static(_)), ip.is_some());
        }

        /// Nothing a user writes makes planning panic.
        #[test]
        fn arbitrary_specs_never_panic(s in "[a-z=,./0-9:-]{0,40}", r in ".{0,10}", l in ".{0,6}") {
            let file = RigFile {
                bridge: vec![spec::BridgeSpec { name: "xenbr0".into(), ..Default::default() }],
                domain: vec![DomainSpec {
                    name: "a".into(),
                    vif: vec![VifEntry { spec: s, rate: Some(r), loss: Some(l), ..Default::default() }],
                    ..Default::default()
                }],
                ..Default::default()
            };
            let _ = plan(&file, "p");
        }
    }
}
