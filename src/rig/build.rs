//! `rig up`: carries a plan out, step by step, against the rig's own daemon — and when a
//! step fails (or Ctrl-C arrives), takes down everything made so far.
//!
//! Order: claim the rig's directory and lock it; refuse if any of its namespaces exists;
//! write the record; dom0 and outside namespaces and the veth between them; the daemon
//! (in dom0); bridges (plain or `network-bridge`); NAT networks; domains one by one
//! (`create` from the plan's xl.cfg, impairments on their ports, static addresses);
//! then dhclient in every guest that asked for DHCP, all at once; finally the addresses
//! the guests hold are read back into the record.

use std::process::{Child, Stdio};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::control::Request;

use super::daemon;
use super::error::RigError;
use super::interrupt;
use super::names::{self, DOM0, OUTSIDE, UPLINK};
use super::output;
use super::plan::{Addressing, DomainPlan, RigPlan};
use super::state::{HostRecord, RigLock, RigState, VifRecord};
use super::sys;
use super::teardown;
use super::{Rig, RigOptions};

/// How long dhclient may take to get a lease.
const DHCP_TIMEOUT_S: u32 = 30;

fn check_interrupt() -> Result<(), RigError> {
    if interrupt::interrupted() {
        Err(RigError::Interrupted)
    } else {
        Ok(())
    }
}

/// The tools a plan needs, with their Debian packages.
fn required_tools(plan: &RigPlan) -> Vec<(&'static str, &'static str)> {
    let mut v = vec![("ip", "iproute2")];
    let vifs = plan.domains.iter().flat_map(|d| d.vifs.iter());
    let mut any_vif = false;
    let mut dhcp = false;
    for v in vifs {
        any_vif = true;
        dhcp |= v.addressing == Addressing::Dhcp;
    }
    if any_vif {
        // The hotplug scripts talk to xenstore with Xen's own tools.
        v.push(("xenstore-write", "xenstore-utils"));
    }
    if dhcp {
        v.push(("dhclient", "isc-dhcp-client"));
    }
    if !plan.networks.is_empty()
        || plan
            .domains
            .iter()
            .any(|d| d.vifs.iter().any(|v| v.link == super::plan::Link::VifNat))
    {
        v.push(("nft", "nftables"));
    }
    v
}

/// A vif row of `network-list --json` (the fields a rig needs).
#[derive(serde::Deserialize)]
struct VifRow {
    idx: u32,
    vif: String,
    mac: String,
}

/// A domain row (create's answer).
#[derive(serde::Deserialize)]
struct DomainRow {
    domid: u16,
}

/// What is being built.
struct Builder<'a> {
    rig: &'a mut Rig,
    opts: &'a RigOptions,
    progress: &'a mut dyn FnMut(&str),
}

impl Builder<'_> {
    fn save(&self) -> Result<(), RigError> {
        self.rig.state.save(&self.rig.dir)
    }

    fn say(&mut self, what: &str) {
        (self.progress)(what);
    }

    fn ns(&self, host: &str) -> String {
        names::ns_name(&self.rig.state.plan.name, host)
    }

    fn request(&self, req: &Request, step: &str) -> Result<serde_json::Value, RigError> {
        daemon::request(&self.rig.dir, req, step)
    }

    fn namespaces(&mut self) -> Result<(), RigError> {
        let plan = self.rig.state.plan.clone();
        let mut hosts = vec![DOM0];
        if plan.outside.is_some() {
            hosts.push(OUTSIDE);
        }
        for h in hosts {
            let ns = self.ns(h);
            netcfg::netns::NetNs::create(&ns)
                .map_err(|e| RigError::step(format!("creating namespace {ns}"), e))?;
            quiet_namespace(&ns)?;
        }
        let Some(o) = &plan.outside else {
            return Ok(());
        };
        let (dom0, out) = (self.ns(DOM0), self.ns(OUTSIDE));
        let step = "connecting dom0 to the outside";
        sys::ip(
            &[
                "-n", &dom0, "link", "add", UPLINK, "type", "veth", "peer", "name", UPLINK,
                "netns", &out,
            ],
            step,
        )?;
        let dom0_addr = o.dom0_address.to_string();
        let out_addr = o.address.to_string();
        let out_ip = o.address.ip.to_string();
        let dom0_ip = o.dom0_address.ip.to_string();
        sys::ip(
            &["-n", &dom0, "addr", "add", &dom0_addr, "dev", UPLINK],
            step,
        )?;
        sys::ip(&["-n", &dom0, "link", "set", UPLINK, "up"], step)?;
        sys::ip(
            &["-n", &dom0, "route", "add", "default", "via", &out_ip],
            step,
        )?;
        // The outside is the LAN's router: it forwards (between dom0's routed
        // prefixes and the LAN's hosts).
        sys::run(
            sys::in_ns(&out, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]),
            step,
        )?;
        sys::ip(&["-n", &out, "addr", "add", &out_addr, "dev", UPLINK], step)?;
        sys::ip(&["-n", &out, "link", "set", UPLINK, "up"], step)?;
        for r in &o.routes {
            sys::ip(
                &[
                    "-n",
                    &out,
                    "route",
                    "add",
                    &format!("{r}/32"),
                    "via",
                    &dom0_ip,
                ],
                step,
            )?;
        }
        Ok(())
    }

    fn start_daemon(&mut self) -> Result<(), RigError> {
        let dom0 = self.ns(DOM0);
        let (child, rec) = daemon::spawn(&self.opts.domnet, &dom0, &self.rig.dir)?;
        self.rig.daemon = Some(child);
        self.rig.state.daemon = Some(rec);
        self.save()
    }

    fn bridges(&mut self) -> Result<(), RigError> {
        let plan = self.rig.state.plan.clone();
        let dom0 = self.ns(DOM0);
        for b in &plan.bridges {
            check_interrupt()?;
            if b.uplink {
                self.say(&format!(
                    "bridge {}: network-bridge start netdev={UPLINK} (dom0's address moves to it)",
                    b.name
                ));
                self.request(
                    &Request::NetworkBridge {
                        action: "start".into(),
                        bridge: b.name.clone(),
                        netdev: Some(UPLINK.into()),
                        legacy_renames: false,
                    },
                    &format!("network-bridge start bridge={}", b.name),
                )?;
            } else {
                self.say(&format!("bridge {}", b.name));
                self.request(
                    &Request::BridgeAdd {
                        name: b.name.clone(),
                        aging: b.aging,
                    },
                    &format!("bridge add {}", b.name),
                )?;
                if let Some(a) = b.address {
                    let step = format!("dom0's address on {}", b.name);
                    sys::ip(
                        &["-n", &dom0, "addr", "add", &a.to_string(), "dev", &b.name],
                        &step,
                    )?;
                    sys::ip(&["-n", &dom0, "link", "set", &b.name, "up"], &step)?;
                }
            }
        }
        Ok(())
    }

    fn networks(&mut self) -> Result<(), RigError> {
        let plan = self.rig.state.plan.clone();
        for n in &plan.networks {
            check_interrupt()?;
            self.say(&format!(
                "network {} on {} ({}{})",
                n.name,
                n.bridge,
                n.address,
                if n.port_forward.is_empty() {
                    String::new()
                } else {
                    format!(
                        ", forwards {}",
                        n.port_forward
                            .iter()
                            .map(|f| f.to_string())
                            .collect::<Vec<_>>()
                            .join(" ")
                    )
                }
            ));
            let text =
                toml::to_string(n).map_err(|e| RigError::step(format!("network {}", n.name), e))?;
            self.request(
                &Request::NetDefine {
                    config: text,
                    path: format!("rig {} network {}", plan.name, n.name),
                },
                &format!("net define {}", n.name),
            )?;
            self.request(
                &Request::NetStart {
                    name: n.name.clone(),
                },
                &format!("net start {}", n.name),
            )?;
        }
        Ok(())
    }

    fn domain(&mut self, d: &DomainPlan) -> Result<(), RigError> {
        let name = self.ns(&d.name);
        let step = format!("domain {}", d.name);
        let data = self.request(
            &Request::Create {
                config: d.xl_cfg(&name),
                path: format!("rig {} domain {}", self.rig.state.plan.name, d.name),
            },
            &format!("creating {step}"),
        )?;
        let row: DomainRow = serde_json::from_value(data)
            .map_err(|e| RigError::step(format!("creating {step}"), e))?;
        let rows: Vec<VifRow> = serde_json::from_value(self.request(
            &Request::NetworkList {
                domains: vec![name.clone()],
            },
            &format!("listing the vifs of {step}"),
        )?)
        .map_err(|e| RigError::step(format!("listing the vifs of {step}"), e))?;
        let mut vifs = Vec::new();
        for v in &d.vifs {
            let r = rows.iter().find(|r| r.idx == v.devid).ok_or_else(|| {
                RigError::step(&step, format!("vif {} missing from network-list", v.devid))
            })?;
            vifs.push(VifRecord {
                devid: v.devid,
                ifname: v.ifname(),
                port: r.vif.clone(),
                mac: r.mac.clone(),
                addresses: Vec::new(),
            });
        }
        self.rig.state.hosts.push(HostRecord {
            name: d.name.clone(),
            domid: row.domid,
            vifs: vifs.clone(),
        });
        self.save()?;
        quiet_namespace(&name)?;
        for (v, rec) in d.vifs.iter().zip(&vifs) {
            if let Some(imp) = v.impairment {
                self.request(
                    &Request::SetImpairment {
                        port: rec.port.clone(),
                        delay_us: imp.delay_us,
                        jitter_us: imp.jitter_us,
                        loss_ppm: imp.loss_ppm,
                    },
                    &format!("impairing {} of {step}", rec.port),
                )?;
            }
            match &v.addressing {
                Addressing::Static(addrs) => {
                    for a in addrs {
                        sys::ip(
                            &[
                                "-n",
                                &name,
                                "addr",
                                "add",
                                &a.to_string(),
                                "dev",
                                &rec.ifname,
                            ],
                            &format!("addressing {} of {step}", rec.ifname),
                        )?;
                    }
                }
                Addressing::Dhcp => {
                    let etc = std::path::PathBuf::from(format!("/etc/netns/{name}"));
                    if !self.rig.state.etc_dirs.contains(&etc) {
                        self.rig.state.etc_dirs.push(etc.clone());
                        self.save()?;
                        std::fs::create_dir_all(&etc).map_err(|e| RigError::io(&etc, e))?;
                        let resolv = etc.join("resolv.conf");
                        std::fs::write(&resolv, "").map_err(|e| RigError::io(&resolv, e))?;
                    }
                }
                Addressing::None => {}
            }
            sys::ip(
                &["-n", &name, "link", "set", &rec.ifname, "up"],
                &format!("bringing {} of {step} up", rec.ifname),
            )?;
        }
        if let (Some(gw), Some(dev)) = (d.gateway, d.gateway_dev) {
            sys::ip(
                &[
                    "-n",
                    &name,
                    "route",
                    "add",
                    &format!("{gw}/32"),
                    "dev",
                    &format!("eth{dev}"),
                ],
                &format!("route to the router of {step}"),
            )?;
        }
        if let Some(gw) = d.gateway {
            sys::ip(
                &[
                    "-n",
                    &name,
                    "route",
                    "add",
                    "default",
                    "via",
                    &gw.to_string(),
                ],
                &format!("default route of {step}"),
            )?;
        }
        Ok(())
    }

    /// dhclient on every DHCP vif at once; each keeps running (renewing its lease)
    /// until the rig goes down.
    fn dhcp(&mut self) -> Result<(), RigError> {
        let plan = self.rig.state.plan.clone();
        let mut running: Vec<(String, Child)> = Vec::new();
        for d in &plan.domains {
            for v in d.vifs.iter().filter(|v| v.addressing == Addressing::Dhcp) {
                let ns = self.ns(&d.name);
                let ifname = v.ifname();
                let base = self.rig.dir.join(format!("dhclient-{}-{ifname}", d.name));
                let mut cmd = sys::in_ns(
                    &ns,
                    &[
                        "timeout".to_string(),
                        DHCP_TIMEOUT_S.to_string(),
                        "dhclient".into(),
                        "-1".into(),
                        "-lf".into(),
                        format!("{}.leases", base.display()),
                        "-pf".into(),
                        format!("{}.pid", base.display()),
                        ifname.clone(),
                    ],
                );
                cmd.stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped());
                let child = cmd.spawn().map_err(|e| {
                    RigError::step(format!("dhclient on {ifname} of {}", d.name), e)
                })?;
                running.push((format!("{} {ifname}", d.name), child));
            }
        }
        if running.is_empty() {
            return Ok(());
        }
        self.say(&format!(
            "dhclient in {}",
            running
                .iter()
                .map(|(w, _)| w.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
        let mut first_error = None;
        for (what, child) in running {
            match child.wait_with_output() {
                Ok(o) if o.status.success() => {}
                Ok(o) => {
                    let said = String::from_utf8_lossy(&o.stderr).trim().to_string();
                    first_error.get_or_insert_with(|| {
                        RigError::step(
                            format!("dhclient on {what}"),
                            if o.status.code() == Some(124) {
                                format!("no lease within {DHCP_TIMEOUT_S} s")
                            } else {
                                format!("no lease ({}): {said}", o.status)
                            },
                        )
                    });
                }
                Err(e) => {
                    first_error
                        .get_or_insert_with(|| RigError::step(format!("dhclient on {what}"), e));
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Reads the addresses the guests hold into the record.
    fn read_addresses(&mut self) -> Result<(), RigError> {
        let rig = self.rig.state.plan.name.clone();
        for h in &mut self.rig.state.hosts {
            let ns = names::ns_name(&rig, &h.name);
            for v in &mut h.vifs {
                let json = sys::ip(
                    &["-n", &ns, "-j", "-4", "addr", "show", "dev", &v.ifname],
                    &format!("reading the addresses of {} {}", h.name, v.ifname),
                )?;
                v.addresses = output::ip_addresses(&json);
            }
        }
        self.save()
    }
}

/// IPv6 off (no router solicitations or DAD noise in the switch's counters) and
/// loopback up in a rig namespace.
fn quiet_namespace(ns: &str) -> Result<(), RigError> {
    sys::ip(
        &["-n", ns, "link", "set", "lo", "up"],
        &format!("loopback of {ns}"),
    )?;
    sys::run(
        sys::in_ns(
            ns,
            &[
                "sysctl",
                "-qw",
                "net.ipv6.conf.all.disable_ipv6=1",
                "net.ipv6.conf.default.disable_ipv6=1",
            ],
        ),
        &format!("turning IPv6 off in {ns}"),
    )
    .map(|_| ())
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Builds rig `plan`; `progress` hears each step. On failure everything made is
/// removed again before the error is returned.
pub fn up(
    plan: RigPlan,
    source: Option<String>,
    opts: &RigOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<Rig, RigError> {
    sys::require_root()?;
    for (tool, package) in required_tools(&plan) {
        sys::require_tool(tool, package)?;
    }
    let name = plan.name.clone();
    std::fs::create_dir_all(&opts.rigs_dir).map_err(|e| RigError::io(&opts.rigs_dir, e))?;
    let dir = names::rig_dir(&opts.rigs_dir, &name);
    match std::fs::create_dir(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let alive = RigState::load(&dir)
                .ok()
                .and_then(|s| s.daemon)
                .is_some_and(|d| super::state::alive(&d));
            return Err(RigError::Exists(if alive {
                format!("rig `{name}` is already up (domnet rig down {name})")
            } else {
                format!("rig `{name}` is left over from a run that died (domnet rig clean)")
            }));
        }
        Err(e) => return Err(RigError::io(&dir, e)),
    }
    let Some(lock) = RigLock::try_acquire(&dir)? else {
        return Err(RigError::Busy(name));
    };
    if let Some(ns) = plan
        .namespaces()
        .into_iter()
        .find(|ns| netcfg::netns::NetNs::exists(ns))
    {
        let _ = std::fs::remove_dir_all(&dir);
        return Err(RigError::Exists(format!(
            "network namespace `{ns}` already exists (another rig's? domnet rig list; or ip netns del {ns})"
        )));
    }
    let mut rig = Rig {
        dir,
        state: RigState::new(plan, source, now_unix()),
        daemon: None,
    };
    if let Err(e) = rig.state.save(&rig.dir) {
        let _ = std::fs::remove_dir_all(&rig.dir);
        return Err(e);
    }
    let t0 = Instant::now();
    let result = build(&mut rig, opts, progress);
    match result {
        Ok(()) => {
            rig.state.complete = true;
            rig.state.save(&rig.dir)?;
            progress(&format!(
                "rig {name} up in {:.1} s",
                t0.elapsed().as_secs_f64()
            ));
            drop(lock);
            Ok(rig)
        }
        Err(e) => {
            progress(&format!("failed ({e}); taking down what was built"));
            if let Err(t) = teardown::teardown(&mut rig) {
                progress(&format!("teardown: {t}"));
            }
            drop(lock);
            Err(e)
        }
    }
}

fn build(rig: &mut Rig, opts: &RigOptions, progress: &mut dyn FnMut(&str)) -> Result<(), RigError> {
    let plan = rig.state.plan.clone();
    let mut b = Builder {
        rig,
        opts,
        progress,
    };
    b.say(&format!(
        "namespaces {}-dom0{}",
        plan.name,
        if plan.outside.is_some() {
            format!(" and {}-outside", plan.name)
        } else {
            String::new()
        }
    ));
    b.namespaces()?;
    check_interrupt()?;
    b.say("daemon");
    b.start_daemon()?;
    check_interrupt()?;
    b.bridges()?;
    b.networks()?;
    for d in &plan.domains {
        check_interrupt()?;
        b.say(&format!(
            "domain {} ({})",
            d.name,
            d.vifs
                .iter()
                .map(|v| format!("'{}'", v.spec))
                .collect::<Vec<_>>()
                .join(" ")
        ));
        b.domain(d)?;
    }
    check_interrupt()?;
    b.dhcp()?;
    check_interrupt()?;
    b.read_addresses()?;
    for h in &b.rig.state.hosts {
        let Some(d) = plan.domain(&h.name) else {
            continue;
        };
        for (v, rec) in d.vifs.iter().zip(&h.vifs) {
            if v.addressing == Addressing::Dhcp && rec.addresses.is_empty() {
                return Err(RigError::step(
                    format!("dhclient on {} {}", h.name, rec.ifname),
                    "no address configured",
                ));
            }
        }
    }
    Ok(())
}
