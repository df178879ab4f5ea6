//! Bridges: `bridge add|del|show|addif|delif`, `fdb`, `stats`, `capture`.
//!
//! A bridge is a pipeline in the switch worker plus its host port: a persistent TAP in
//! dom0 named after the bridge (like an Open vSwitch internal port), which carries
//! dom0's own address. Bridge definitions are kept in xenstore under
//! `/tool/domnet/bridge/<name>` so they come back after a daemon restart.

use std::time::Duration;

use netcfg::rtnl::Rtnl;
use netcfg::tap::{Tap, TapConfig};
use serde::{Deserialize, Serialize};
use vswitch::datapath::tap_port::TapPort;
use vswitch::datapath::{BridgeSettings, DatapathError};
use vswitch::fdb::FdbConfig;
use vswitch::port::PortConfig;

use super::Daemon;
use crate::control::{ErrorKind, Response};

/// Where bridge definitions live in xenstore.
pub const BRIDGE_STORE: &str = "/tool/domnet/bridge";

/// Where static MAC table entries (`fdb add`) live in xenstore:
/// `FDB_STORE/<bridge>/<aa-bb-cc-dd-ee-ff>` holds the port's name. The switch drops a
/// port's entries with the port, so they are replayed whenever the port (re)joins its
/// bridge — after a daemon restart, when its vif is reconnected.
pub const FDB_STORE: &str = "/tool/domnet/fdb";

/// The xenstore key of a static entry (xenstore paths have no `:`).
fn fdb_key(bridge: &str, mac: &netcfg::vifspec::MacAddr) -> String {
    format!("{FDB_STORE}/{bridge}/{}", mac.to_string().replace(':', "-"))
}

/// A bridge definition (what is persisted).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BridgeDef {
    /// MAC table aging in seconds (0: never learn, always flood).
    pub aging_secs: u64,
    /// MAC table size.
    pub max_entries: usize,
    /// MAC address of the host port (kept stable across restarts).
    pub mac: Option<String>,
    /// MTU of the host port.
    pub mtu: u32,
}

impl Default for BridgeDef {
    fn default() -> Self {
        let f = FdbConfig::default();
        BridgeDef {
            aging_secs: f.aging.as_secs(),
            max_entries: f.max_entries,
            mac: None,
            mtu: 1500,
        }
    }
}

/// Maps datapath errors to CLI errors.
pub fn dp_error(e: DatapathError) -> Response {
    match e {
        DatapathError::Stopped => Response::err(ErrorKind::Internal, e.to_string()),
        DatapathError::Failed(_) => Response::err(ErrorKind::Failed, e.to_string()),
        other => Response::err(ErrorKind::BadInput, other.to_string()),
    }
}

/// Opens (or re-attaches to) the persistent host TAP of a bridge in dom0 and brings it
/// up with the given MAC and MTU.
pub fn open_host_tap(name: &str, mac: Option<&str>, mtu: u32) -> Result<Tap, String> {
    netcfg::rtnl::validate_ifname(name).map_err(|e| format!("bad bridge name `{name}`: {e}"))?;
    let mut cfg = TapConfig::with_offloads(name);
    cfg.persist = true;
    let tap = Tap::create(&cfg).map_err(|e| format!("creating host port {name}: {e}"))?;
    let rtnl = Rtnl::open().map_err(|e| e.to_string())?;
    if let Some(mac) = mac {
        let mac: netcfg::rtnl::MacAddr = mac.parse().map_err(|_| format!("bad MAC {mac}"))?;
        let current = rtnl.link_by_name(name).map_err(|e| e.to_string())?.mac;
        if current != Some(mac) {
            rtnl.set_mac(name, mac).map_err(|e| e.to_string())?;
        }
    }
    rtnl.set_mtu(name, mtu).map_err(|e| e.to_string())?;
    rtnl.set_up(name).map_err(|e| e.to_string())?;
    Ok(tap)
}

/// Removes a host TAP (persistent, so it must be deleted explicitly).
pub fn delete_host_tap(name: &str) {
    if let Ok(rtnl) = Rtnl::open() {
        let _ = rtnl.delete_link(name);
    }
}

impl Daemon {
    /// Creates a bridge (switch pipeline + host port) from its definition.
    pub async fn bridge_create(&self, name: &str, def: &BridgeDef) -> Result<(), Response> {
        let known = self.dp.bridges().await.map_err(dp_error)?;
        if known.iter().any(|b| b.name == name) {
            return Err(Response::err(
                ErrorKind::BadInput,
                format!("bridge `{name}` already exists"),
            ));
        }
        let tap = open_host_tap(name, def.mac.as_deref(), def.mtu)
            .map_err(|e| Response::err(ErrorKind::Failed, e))?;
        let settings = BridgeSettings {
            fdb: FdbConfig {
                aging: Duration::from_secs(def.aging_secs),
                max_entries: def.max_entries,
                ..FdbConfig::default()
            },
        };
        let mut host = PortConfig::host(name);
        host.mtu = def.mtu;
        if let Err(e) = self
            .dp
            .add_bridge(
                name,
                settings,
                Some((Box::new(TapPort::new(name, tap)), host)),
            )
            .await
        {
            delete_host_tap(name);
            return Err(dp_error(e));
        }
        self.replay_static_fdb(name, name).await;
        Ok(())
    }

    /// `domnet bridge add NAME`.
    pub async fn bridge_add(&self, name: &str, aging: Option<u64>) -> Response {
        let mut def = BridgeDef::default();
        if let Some(a) = aging {
            def.aging_secs = a;
        }
        if let Err(r) = self.bridge_create(name, &def).await {
            return r;
        }
        // Remember the MAC the kernel gave the host port, so a restart keeps it.
        if let Ok(rtnl) = Rtnl::open() {
            def.mac = rtnl
                .link_by_name(name)
                .ok()
                .and_then(|l| l.mac)
                .map(|m| m.to_string());
        }
        if let Err(e) = self
            .store_json(&format!("{BRIDGE_STORE}/{name}"), &def)
            .await
        {
            return Response::err(ErrorKind::Failed, format!("recording bridge {name}: {e}"));
        }
        Response::ok(serde_json::json!({ "bridge": name }))
    }

    /// `domnet bridge del NAME`.
    pub async fn bridge_del(&self, name: &str) -> Response {
        if let Err(e) = self.dp.del_bridge(name).await {
            return dp_error(e);
        }
        delete_host_tap(name);
        let _ = self.ctl.rm(0, &format!("{BRIDGE_STORE}/{name}")).await;
        let _ = self.ctl.rm(0, &format!("{FDB_STORE}/{name}")).await;
        Response::ok(serde_json::json!({ "bridge": name }))
    }

    /// `domnet bridge show`.
    pub async fn bridge_show(&self) -> Response {
        let bridges = match self.dp.bridges().await {
            Ok(b) => b,
            Err(e) => return dp_error(e),
        };
        let rtnl = Rtnl::open().ok();
        let rows: Vec<serde_json::Value> = bridges
            .iter()
            .map(|b| {
                let link = rtnl.as_ref().and_then(|r| r.link_by_name(&b.name).ok());
                let mtu = link.as_ref().map(|l| l.mtu).unwrap_or(1500);
                let mac = link
                    .and_then(|l| l.mac)
                    .map(|m| m.to_string())
                    .unwrap_or_default();
                serde_json::json!({
                    "name": b.name,
                    "id": format!("8000.{}", mac.replace(':', "")),
                    "stp": false,
                    "interfaces": b.ports.iter().filter(|p| *p != &b.name).collect::<Vec<_>>(),
                    "fdb_entries": b.fdb_entries,
                    "aging_secs": b.aging_secs,
                    "fdb_max": b.fdb_max,
                    "fdb_learned": b.fdb_learned,
                    "fdb_expired": b.fdb_expired,
                    "fdb_evicted": b.fdb_evicted,
                    "fdb_moved": b.fdb_moved,
                    "mtu": mtu,
                })
            })
            .collect();
        Response::ok(rows)
    }

    /// `domnet bridge addif BRIDGE PORT [--mtu N] [--hotplug]` (what vif-bridge calls).
    /// With `hotplug`, the bridge is the one the vif's backend names, else BRIDGE
    /// (Xen's `xenstore_read_default $XENBUS_PATH/bridge "$bridge"`), else the first
    /// bridge (vif-bridge's fallback); success is written to the backend as
    /// hotplug-status=connected. If that write fails the port stays attached: the
    /// script then fails and the attach is rolled back by its caller.
    pub async fn bridge_addif(
        &self,
        bridge: &str,
        port: &str,
        mtu: Option<u32>,
        hotplug: bool,
    ) -> Response {
        let (mut config, backend) = match self.port_config_for(port).await {
            Ok(c) => c,
            Err(r) => return r,
        };
        let hotplug_backend = match (hotplug, &backend) {
            (false, _) => None,
            (true, Some(be)) => Some(be.clone()),
            (true, None) => {
                return Response::err(
                    ErrorKind::BadInput,
                    format!("--hotplug: {port} is not a vif with a backend"),
                )
            }
        };
        let resolved;
        let bridge = match &hotplug_backend {
            // Xen's vif-bridge: the backend's `bridge` key, else the script's own
            // `bridge` (given here as BRIDGE), else the first bridge.
            Some(be) => {
                resolved = match self.read_key(&format!("{be}/bridge")).await {
                    Some(b) if !b.is_empty() => b,
                    _ if !bridge.is_empty() => bridge.to_string(),
                    _ => match self.dp.bridges().await {
                        Ok(bs) => match bs.into_iter().next() {
                            Some(b) => b.name,
                            None => {
                                return Response::err(
                                    ErrorKind::Failed,
                                    "Could not find bridge, and none was specified",
                                )
                            }
                        },
                        Err(e) => return dp_error(e),
                    },
                };
                resolved.as_str()
            }
            None if bridge.is_empty() => {
                return Response::err(ErrorKind::BadInput, "no bridge given")
            }
            None => bridge,
        };
        // The frontend's `mtu` to update once attached (Xen's set_mtu: a vif with no
        // MTU of its own takes the bridge's).
        let mut frontend_mtu = None;
        match (mtu, &backend) {
            (Some(m), _) => config.mtu = m,
            (None, Some(be)) => {
                let own = self.read_key(&format!("{be}/mtu")).await;
                if own.is_none() {
                    if let Some(m) = self.bridge_mtu(bridge).await {
                        config.mtu = m;
                        frontend_mtu = self
                            .read_key(&format!("{be}/frontend"))
                            .await
                            .map(|fe| (format!("{fe}/mtu"), m));
                    }
                }
            }
            (None, None) => {}
        }
        let vif = config.vif_config().cloned();
        match self.dp.attach(port, bridge, config).await {
            Ok(()) => {
                if let Some((key, m)) = frontend_mtu {
                    let m = m.to_string();
                    if self.read_key(&key).await.as_deref() != Some(m.as_str()) {
                        let _ = self.ctl.write(0, &key, m.as_bytes()).await;
                    }
                }
                // A vif with ip= on a NAT network: DHCP binds its MAC to that address.
                if let Some(v) = vif.filter(|v| !v.allowed_ipv4.is_empty()) {
                    let ips = v.allowed_ipv4.iter().map(|c| c.addr()).collect();
                    self.nat_static_guest(bridge, v.mac, ips, true).await;
                }
                self.replay_static_fdb(bridge, port).await;
                if let Some(be) = hotplug_backend {
                    if let Err(r) = self.hotplug_connected(&be).await {
                        return r;
                    }
                }
                Response::ok(serde_json::json!({ "bridge": bridge, "port": port }))
            }
            Err(e) => dp_error(e),
        }
    }

    /// A key's value, if it exists.
    async fn read_key(&self, path: &str) -> Option<String> {
        self.ctl.try_read_string(0, path).await.ok().flatten()
    }

    /// A bridge's MTU: its host port's, or its NAT network's.
    async fn bridge_mtu(&self, bridge: &str) -> Option<u32> {
        let host = Rtnl::open()
            .ok()
            .and_then(|r| r.link_by_name(bridge).ok())
            .map(|l| l.mtu);
        match host {
            Some(m) => Some(m),
            None => self.network_of_bridge(bridge).await.map(|d| d.mtu),
        }
    }

    /// `domnet bridge delif BRIDGE PORT`.
    /// An empty BRIDGE is the bridge the port is on (what vif-bridge's offline passes);
    /// a port on a router is not detached this way (`route detach` undoes its routes).
    pub async fn bridge_delif(&self, bridge: &str, port: &str) -> Response {
        let current;
        let bridge = match self.dp.ports().await {
            Ok(ports) => match ports.iter().find(|p| p.name == port) {
                Some(p) if bridge.is_empty() => {
                    let on = p.bridge.clone().unwrap_or_default();
                    let is_bridge = match self.dp.bridges().await {
                        Ok(bs) => bs.iter().any(|b| b.name == on),
                        Err(e) => return dp_error(e),
                    };
                    if !is_bridge {
                        return Response::err(
                            ErrorKind::BadInput,
                            format!("port `{port}` is not on a bridge"),
                        );
                    }
                    current = on;
                    current.as_str()
                }
                Some(p) if p.bridge.as_deref() == Some(bridge) => bridge,
                Some(_) => {
                    return Response::err(
                        ErrorKind::BadInput,
                        format!("port `{port}` is not attached to bridge `{bridge}`"),
                    )
                }
                None => {
                    return Response::err(ErrorKind::BadInput, format!("no port named `{port}`"))
                }
            },
            Err(e) => return dp_error(e),
        };
        if let Ok((c, _)) = self.port_config_for(port).await {
            if let Some(v) = c.vif_config().filter(|v| !v.allowed_ipv4.is_empty()) {
                let ips = v.allowed_ipv4.iter().map(|c| c.addr()).collect();
                self.nat_static_guest(bridge, v.mac, ips, false).await;
            }
        }
        match self.dp.detach(port).await {
            Ok(()) => {
                self.forget_static_fdb(Some(bridge), port).await;
                Response::ok(serde_json::json!({ "bridge": bridge, "port": port }))
            }
            Err(e) => dp_error(e),
        }
    }

    /// `domnet fdb show BRIDGE`.
    pub async fn fdb_show(&self, bridge: &str) -> Response {
        match self.dp.fdb(bridge).await {
            Ok(rows) => Response::ok(rows),
            Err(e) => dp_error(e),
        }
    }

    /// `domnet fdb add BRIDGE MAC PORT`.
    pub async fn fdb_add(&self, bridge: &str, mac: &str, port: &str) -> Response {
        let Ok(m) = mac.parse::<netcfg::vifspec::MacAddr>() else {
            return Response::err(ErrorKind::BadInput, format!("bad MAC address `{mac}`"));
        };
        if let Err(e) = self.dp.fdb_add(bridge, vswitch::MacAddr(m.0), port).await {
            return dp_error(e);
        }
        if let Err(e) = self
            .ctl
            .write(0, &fdb_key(bridge, &m), port.as_bytes())
            .await
        {
            let _ = self.dp.fdb_del(bridge, vswitch::MacAddr(m.0)).await;
            return Response::err(ErrorKind::Failed, format!("recording {mac}: {e}"));
        }
        Response::ok(serde_json::json!({}))
    }

    /// `domnet fdb del BRIDGE MAC`.
    pub async fn fdb_del(&self, bridge: &str, mac: &str) -> Response {
        let Ok(m) = mac.parse::<netcfg::vifspec::MacAddr>() else {
            return Response::err(ErrorKind::BadInput, format!("bad MAC address `{mac}`"));
        };
        let recorded = self
            .ctl
            .try_read_string(0, &fdb_key(bridge, &m))
            .await
            .ok()
            .flatten()
            .is_some();
        if recorded {
            let _ = self.ctl.rm(0, &fdb_key(bridge, &m)).await;
            self.rm_if_empty(&format!("{FDB_STORE}/{bridge}")).await;
        }
        match self.dp.fdb_del(bridge, vswitch::MacAddr(m.0)).await {
            Ok(()) => Response::ok(serde_json::json!({})),
            // The port that held it is gone (its entries went with it).
            Err(_) if recorded => Response::ok(serde_json::json!({})),
            Err(e) => dp_error(e),
        }
    }

    /// The recorded static entries of `bridge` as (key, MAC, port).
    async fn static_fdb_records(
        &self,
        bridge: &str,
    ) -> Vec<(String, netcfg::vifspec::MacAddr, String)> {
        let dir = format!("{FDB_STORE}/{bridge}");
        let mut out = Vec::new();
        for k in self.ctl.directory(0, &dir).await.unwrap_or_default() {
            let key = format!("{dir}/{k}");
            let Ok(mac) = k.replace('-', ":").parse::<netcfg::vifspec::MacAddr>() else {
                continue;
            };
            if let Ok(Some(port)) = self.ctl.try_read_string(0, &key).await {
                out.push((key, mac, port));
            }
        }
        out
    }

    /// Puts back the recorded static entries of `port` on `bridge` (the port has just
    /// joined it).
    pub(crate) async fn replay_static_fdb(&self, bridge: &str, port: &str) {
        for (_, mac, p) in self.static_fdb_records(bridge).await {
            if p != port {
                continue;
            }
            if let Err(e) = self.dp.fdb_add(bridge, vswitch::MacAddr(mac.0), port).await {
                tracing::warn!("static entry {mac} on {bridge} via {port} not restored: {e}");
            }
        }
    }

    /// Forgets the recorded static entries of `port` (on `bridge`, or on every bridge):
    /// the port left, and the switch dropped its entries with it.
    pub(crate) async fn forget_static_fdb(&self, bridge: Option<&str>, port: &str) {
        let bridges = match bridge {
            Some(b) => vec![b.to_string()],
            None => self.ctl.directory(0, FDB_STORE).await.unwrap_or_default(),
        };
        for b in bridges {
            let records = self.static_fdb_records(&b).await;
            if !records.iter().any(|(_, _, p)| p == port) {
                continue;
            }
            for (key, _, p) in records {
                if p == port {
                    let _ = self.ctl.rm(0, &key).await;
                }
            }
            self.rm_if_empty(&format!("{FDB_STORE}/{b}")).await;
        }
    }

    /// `domnet stats [PORT]`.
    pub async fn stats(&self, port: Option<String>) -> Response {
        let mut ports = match self.dp.ports().await {
            Ok(p) => p,
            Err(e) => return dp_error(e),
        };
        if let Ok(fe) = self.fe.ports().await {
            ports.extend(fe);
        }
        if let Some(want) = &port {
            ports.retain(|p| &p.name == want);
            if ports.is_empty() {
                return Response::err(ErrorKind::BadInput, format!("no port named `{want}`"));
            }
            return Response::ok(serde_json::json!({ "ports": ports }));
        }
        let xs = self.xs.stats().await.ok();
        Response::ok(serde_json::json!({ "ports": ports, "xenstored": xs }))
    }

    /// Rebuilds the bridges recorded in xenstore (daemon start).
    pub async fn restore_bridges(&self) {
        let names = self
            .ctl
            .directory(0, BRIDGE_STORE)
            .await
            .unwrap_or_default();
        for name in names {
            let def: BridgeDef = match self.load_json(&format!("{BRIDGE_STORE}/{name}")).await {
                Some(d) => d,
                None => continue,
            };
            match self.bridge_create(&name, &def).await {
                Ok(()) => tracing::info!("bridge {name} restored"),
                Err(r) => tracing::warn!(
                    "bridge {name} not restored: {}",
                    r.error.unwrap_or_default()
                ),
            }
        }
    }
}
