//! Which addresses each host of a rig should reach, from the topology alone (what
//! `rig pingall` tests and `rig iperf` aims at). Pure.
//!
//! Every host (a domain, `outside`, `dom0`) has interfaces; an interface sits on a
//! segment (a bridge of the switch) or not, and its addresses are *public* when the
//! rest of the rig routes to them: the bridge carrying dom0's uplink (the outside's
//! LAN), routed vifs and dom0's uplink address, and the outside itself. Host A reaches
//! address X of another host when
//!
//! * A has an interface on X's segment (same bridge, NAT network included), or
//! * X is public and A has a way out: a default route (static gateway, DHCP from a
//!   network that masquerades, a routed or vif-nat vif), or A is the outside or dom0.
//!
//! Two exceptions follow from how the switch does NAT: a NAT network's gateway sends
//! its masqueraded traffic (from dom0's own address) straight out of the uplink, past
//! dom0's kernel, so it reaches neither dom0 itself nor the routed vifs dom0's kernel
//! routes; and addresses behind NAT
//! (network guests, vif-nat guests) are reached only from their own segment — from
//! elsewhere through port forwards.

use std::net::Ipv4Addr;

use serde::Serialize;

use super::names::{DOM0, OUTSIDE};
use super::plan::{Addressing, Link};
use super::state::RigState;

/// An address of a host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Target {
    /// The host (short domain name, `outside` or `dom0`).
    pub host: String,
    /// Its address.
    pub addr: Ipv4Addr,
}

/// What kind of interface an address is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Delivered by dom0's kernel: dom0's own addresses and the routed vifs it routes
    /// to.
    Dom0Kernel,
    /// Anything else.
    Plain,
}

#[derive(Debug, Clone)]
struct Iface {
    segment: Option<String>,
    public: bool,
    kind: Kind,
    addrs: Vec<Ipv4Addr>,
}

#[derive(Debug, Clone)]
struct Host {
    name: String,
    ifaces: Vec<Iface>,
    /// Has a default route (or is the outside or dom0).
    way_out: bool,
    /// Its only way out is a NAT network's gateway.
    only_network_nat: bool,
}

fn hosts(state: &RigState) -> Vec<Host> {
    let plan = &state.plan;
    let uplink_bridge = plan
        .bridges
        .iter()
        .find(|b| b.uplink)
        .map(|b| b.name.clone());
    let mut out = Vec::new();
    for d in &plan.domains {
        let rec = state.host(&d.name);
        let mut ifaces = Vec::new();
        let mut nat_out = false;
        let mut other_out = d.gateway.is_some();
        for v in &d.vifs {
            let addrs: Vec<Ipv4Addr> = rec
                .and_then(|r| r.vifs.iter().find(|x| x.devid == v.devid))
                .map(|x| x.addresses.iter().map(|a| a.ip).collect())
                .unwrap_or_else(|| match &v.addressing {
                    Addressing::Static(a) => a.iter().map(|a| a.ip).collect(),
                    _ => Vec::new(),
                });
            let (segment, public, kind) = match &v.link {
                Link::Bridge { bridge, uplink } => (Some(bridge.clone()), *uplink, Kind::Plain),
                Link::Network { bridge, nat, .. } => {
                    if *nat && v.addressing == Addressing::Dhcp {
                        nat_out = true;
                    }
                    (Some(bridge.clone()), false, Kind::Plain)
                }
                Link::Routed => {
                    other_out = true;
                    (None, true, Kind::Dom0Kernel)
                }
                Link::VifNat => {
                    other_out = true;
                    (None, false, Kind::Plain)
                }
            };
            ifaces.push(Iface {
                segment,
                public,
                kind,
                addrs,
            });
        }
        out.push(Host {
            name: d.name.clone(),
            ifaces,
            way_out: nat_out || other_out,
            only_network_nat: nat_out && !other_out,
        });
    }
    if let Some(o) = &plan.outside {
        out.push(Host {
            name: OUTSIDE.into(),
            ifaces: vec![Iface {
                segment: uplink_bridge.clone(),
                public: true,
                kind: Kind::Plain,
                addrs: vec![o.address.ip],
            }],
            way_out: true,
            only_network_nat: false,
        });
    }
    let mut dom0 = Vec::new();
    if let Some(o) = &plan.outside {
        dom0.push(Iface {
            segment: uplink_bridge,
            public: true,
            kind: Kind::Dom0Kernel,
            addrs: vec![o.dom0_address.ip],
        });
    }
    for b in &plan.bridges {
        if let Some(a) = b.address {
            dom0.push(Iface {
                segment: Some(b.name.clone()),
                public: false,
                kind: Kind::Dom0Kernel,
                addrs: vec![a.ip],
            });
        }
    }
    out.push(Host {
        name: DOM0.into(),
        ifaces: dom0,
        way_out: true,
        only_network_nat: false,
    });
    out
}

fn reaches(from: &Host, iface: &Iface) -> bool {
    let same_segment = iface
        .segment
        .as_ref()
        .is_some_and(|s| from.ifaces.iter().any(|i| i.segment.as_ref() == Some(s)));
    if same_segment {
        return true;
    }
    iface.public && from.way_out && !(from.only_network_nat && iface.kind == Kind::Dom0Kernel)
}

/// The addresses of `to` that `from` should reach (empty when none or unknown hosts).
pub fn targets_of(state: &RigState, from: &str, to: &str) -> Vec<Ipv4Addr> {
    let hs = hosts(state);
    let (Some(a), Some(b)) = (
        hs.iter().find(|h| h.name == from),
        hs.iter().find(|h| h.name == to),
    ) else {
        return Vec::new();
    };
    if a.name == b.name {
        return Vec::new();
    }
    b.ifaces
        .iter()
        .filter(|i| reaches(a, i))
        .flat_map(|i| i.addrs.iter().copied())
        .collect()
}

/// The hosts `pingall` tests: every domain, then the outside (dom0 is the switch's
/// host, not a participant).
pub fn participants(state: &RigState) -> Vec<String> {
    let mut v: Vec<String> = state.plan.domains.iter().map(|d| d.name.clone()).collect();
    if state.plan.outside.is_some() {
        v.push(OUTSIDE.into());
    }
    v
}

/// For every participant, the other participants' addresses it should reach.
pub fn ping_plan(state: &RigState) -> Vec<(String, Vec<Target>)> {
    let who = participants(state);
    who.iter()
        .map(|from| {
            let targets = who
                .iter()
                .filter(|to| *to != from)
                .flat_map(|to| {
                    targets_of(state, from, to).into_iter().map(|addr| Target {
                        host: to.clone(),
                        addr,
                    })
                })
                .collect();
            (from.clone(), targets)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rig::state::{HostRecord, VifRecord};
    use crate::rig::{plan, spec};

    fn state(text: &str) -> RigState {
        let p = plan::plan(&spec::parse(text).unwrap(), "t").unwrap();
        RigState::new(p, None, 0)
    }

    const DEMO: &str = r#"
[outside]
[[bridge]]
name = "xenbr0"
netdev = "eth0"
[[bridge]]
name = "iso"
[[network]]
name = "default"
[[domain]]
name = "a"
vif = [ "bridge=xenbr0,ip=10.0.0.11", "bridge=iso,ip=10.7.0.1" ]
[[domain]]
name = "b"
vif = [ "bridge=xenbr0,ip=10.0.0.12", "bridge=iso,ip=10.7.0.2" ]
[[domain]]
name = "r"
vif = [ "script=vif-route,ip=10.0.0.30" ]
[[domain]]
name = "n"
vif = [ "bridge=virbr0" ]
[[domain]]
name = "n2"
vif = [ "bridge=virbr0" ]
"#;

    fn with_dhcp(mut st: RigState) -> RigState {
        for (name, ip) in [
            ("r", "10.0.0.30/32"),
            ("n", "192.168.122.7/24"),
            ("n2", "192.168.122.8/24"),
        ] {
            st.hosts.push(HostRecord {
                name: name.into(),
                domid: 1,
                vifs: vec![VifRecord {
                    devid: 0,
                    ifname: "eth0".into(),
                    port: "vif1.0".into(),
                    mac: String::new(),
                    addresses: vec![ip.parse().unwrap()],
                }],
            });
        }
        st
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn bridged_pair_reaches_each_other_on_both_segments() {
        let st = with_dhcp(state(DEMO));
        assert_eq!(
            targets_of(&st, "a", "b"),
            vec![ip("10.0.0.12"), ip("10.7.0.2")]
        );
        assert_eq!(targets_of(&st, "a", "outside"), vec![ip("10.0.0.254")]);
        assert_eq!(targets_of(&st, "outside", "a"), vec![ip("10.0.0.11")]);
        assert_eq!(targets_of(&st, "a", "r"), vec![ip("10.0.0.30")]);
        assert_eq!(targets_of(&st, "a", "dom0"), vec![ip("10.0.0.1")]);
    }

    #[test]
    fn nat_guests_reach_out_but_are_reached_only_from_their_network() {
        let st = with_dhcp(state(DEMO));
        assert!(targets_of(&st, "a", "n").is_empty());
        assert!(targets_of(&st, "outside", "n").is_empty());
        assert_eq!(targets_of(&st, "n2", "n"), vec![ip("192.168.122.7")]);
        assert_eq!(targets_of(&st, "n", "outside"), vec![ip("10.0.0.254")]);
        assert_eq!(targets_of(&st, "n", "a"), vec![ip("10.0.0.11")]);
        // The NAT gateway goes out past dom0's kernel, which routes the routed vifs.
        assert!(targets_of(&st, "n", "r").is_empty());
        assert!(targets_of(&st, "n", "dom0").is_empty());
        assert_eq!(targets_of(&st, "r", "outside"), vec![ip("10.0.0.254")]);
        assert_eq!(targets_of(&st, "outside", "r"), vec![ip("10.0.0.30")]);
    }

    #[test]
    fn isolated_bridges_stay_isolated() {
        let st = state(
            "[[bridge]]\nname = \"b\"\n[[domain]]\nname = \"x\"\nvif = [ \"bridge=b,ip=10.1.0.1\" ]\n\
             [[domain]]\nname = \"y\"\nvif = [ \"bridge=b,ip=10.1.0.2\" ]\n\
             [[bridge]]\nname = \"c\"\n[[domain]]\nname = \"z\"\nvif = [ \"bridge=c,ip=10.2.0.1\" ]\n",
        );
        let plan = ping_plan(&st);
        let of = |h: &str| plan.iter().find(|(n, _)| n == h).unwrap().1.clone();
        assert_eq!(
            of("x"),
            vec![Target {
                host: "y".into(),
                addr: ip("10.1.0.2")
            }]
        );
        assert!(of("z").is_empty());
        assert_eq!(participants(&st), ["x", "y", "z"]);
    }
}
