//! `domnet network-bridge start|stop|status`: dom0's bridge set-up at boot, the job of
//! Xen's old network-bridge script (xen-networking.md §8).
//!
//! Start: create the bridge with its host port (taking the NIC's MAC and MTU), attach
//! the NIC as the uplink (AF_PACKET, promiscuous), keep the host stack off the NIC with
//! a netdev-ingress drop (AF_PACKET still sees every frame: taps run before that hook),
//! then move the NIC's IPv4/IPv6 addresses and routes (default route included) to the
//! host port — adding on the new device before removing from the old one, so the host
//! never loses its address. `--legacy-renames` also does Xen 3.x's dance: the NIC is
//! renamed `p<netdev>`, gets MAC fe:ff:ff:ff:ff:ff and ARP off.
//!
//! Every step has an undo; a failure rolls back what was done. The state is recorded
//! in xenstore (`/tool/domnet/network-bridge/<bridge>`) before the NIC is touched, so
//! `stop` works after a daemon restart, and `start` twice is a no-op.

use std::process::{Command, Stdio};

use netcfg::rtnl::{AddrRouteSnapshot, MacAddr, Rtnl};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};
use vswitch::datapath::packet_port::PacketPort;
use vswitch::port::PortConfig;

use super::bridges::{delete_host_tap, BridgeDef};
use super::Daemon;
use crate::control::{ErrorKind, Response};

/// Where network-bridge state lives in xenstore.
pub const NETBRIDGE_STORE: &str = "/tool/domnet/network-bridge";

/// What `start` did, enough for `stop` to undo it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NetBridgeState {
    /// The bridge.
    pub bridge: String,
    /// The NIC's name before start.
    pub netdev: String,
    /// The NIC's name while bridged (`p<netdev>` with legacy renames).
    pub uplink: String,
    /// The NIC's MAC before start.
    pub mac: String,
    /// The NIC's MTU.
    pub mtu: u32,
    /// Whether the NIC was up.
    pub was_up: bool,
    /// Whether the NIC had ARP on.
    pub had_arp: bool,
    /// Legacy Xen 3.x renames.
    pub legacy: bool,
}

/// Runs `f` with a fresh rtnetlink handle (never held across an await: the handle is
/// not `Sync`).
fn with_rtnl<T>(f: impl FnOnce(&Rtnl) -> Result<T, String>) -> Result<T, String> {
    let rtnl = Rtnl::open().map_err(|e| format!("rtnetlink: {e}"))?;
    f(&rtnl)
}

/// The MAC Xen gives backend-side devices.
const DUMMY_MAC: MacAddr = MacAddr([0xfe, 0xff, 0xff, 0xff, 0xff, 0xff]);

pub(crate) fn nft(script: &str) -> Result<(), String> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("running nft (package nftables): {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        use std::io::Write;
        stdin
            .write_all(script.as_bytes())
            .map_err(|e| e.to_string())?;
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "nft: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

fn ingress_table(bridge: &str) -> String {
    format!("domnet_{}", bridge.replace(['-', '.'], "_"))
}

/// Keeps dom0's own stack off the uplink NIC: frames are dropped at netdev ingress,
/// after AF_PACKET taps have seen them.
fn install_ingress_drop(bridge: &str, dev: &str) -> Result<(), String> {
    let t = ingress_table(bridge);
    nft(&format!(
        "table netdev {t} {{}}\ndelete table netdev {t}\ntable netdev {t} {{\n  chain uplink {{\n    type filter hook ingress device \"{dev}\" priority -500; policy drop;\n  }}\n}}\n"
    ))
}

fn remove_ingress_drop(bridge: &str) -> Result<(), String> {
    let t = ingress_table(bridge);
    nft(&format!("table netdev {t} {{}}\ndelete table netdev {t}\n"))
}

/// The device carrying the IPv4 default route, else `eth0` (Xen's choice of netdev).
pub fn default_netdev(rtnl: &Rtnl) -> String {
    rtnl.routes()
        .ok()
        .and_then(|routes| {
            routes
                .iter()
                .find(|r| r.dst.prefix_len() == 0 && r.dst.addr().is_ipv4() && r.oif.is_some())
                .and_then(|r| r.oif)
        })
        .and_then(|idx| rtnl.link_by_index(idx).ok())
        .map(|l| l.name)
        .unwrap_or_else(|| "eth0".to_string())
}

enum Undo {
    Bridge(String),
    UplinkPort(String),
    IngressDrop(String),
    Legacy {
        uplink: String,
        netdev: String,
        mac: MacAddr,
        was_up: bool,
        had_arp: bool,
    },
    Record(String),
    Addresses {
        snapshot: AddrRouteSnapshot,
        bridge: String,
    },
}

impl Daemon {
    async fn load_netbridge(&self, bridge: &str) -> Option<NetBridgeState> {
        self.load_json(&format!("{NETBRIDGE_STORE}/{bridge}")).await
    }

    /// `network-bridge start`.
    pub async fn netbridge_start(
        &self,
        bridge: &str,
        netdev: Option<String>,
        legacy: bool,
    ) -> Response {
        let _guard = self.netbridge_lock.lock().await;
        if let Some(st) = self.load_netbridge(bridge).await {
            return Response::ok(serde_json::json!({
                "bridge": bridge, "netdev": st.netdev, "already": true,
            }));
        }
        let probed = with_rtnl(|rtnl| {
            let netdev = netdev.clone().unwrap_or_else(|| default_netdev(rtnl));
            let link = rtnl
                .link_by_name(&netdev)
                .map_err(|e| format!("netdev `{netdev}`: {e}"))?;
            let snapshot = AddrRouteSnapshot::capture(rtnl, netdev.as_str())
                .map_err(|e| format!("reading {netdev}'s addresses: {e}"))?;
            Ok((netdev, link, snapshot))
        });
        let (netdev, link, snapshot) = match probed {
            Ok(p) => p,
            Err(e) => return Response::err(ErrorKind::BadInput, e),
        };
        if netdev == bridge {
            return Response::err(
                ErrorKind::BadInput,
                format!("netdev and bridge are both `{bridge}`"),
            );
        }
        let Some(mac) = link.mac else {
            return Response::err(
                ErrorKind::BadInput,
                format!("netdev `{netdev}` has no Ethernet address"),
            );
        };
        let uplink = if legacy {
            format!("p{netdev}")
        } else {
            netdev.clone()
        };
        let state = NetBridgeState {
            bridge: bridge.to_string(),
            netdev: netdev.clone(),
            uplink: uplink.clone(),
            mac: mac.to_string(),
            mtu: link.mtu,
            was_up: link.flags.up(),
            had_arp: !link.flags.noarp(),
            legacy,
        };
        let mut undo: Vec<Undo> = Vec::new();
        let result = self.netbridge_steps(&state, mac, snapshot, &mut undo).await;
        match result {
            Ok(()) => {
                info!("network-bridge: {netdev} bridged on {bridge}");
                Response::ok(
                    serde_json::json!({ "bridge": bridge, "netdev": netdev, "uplink": uplink }),
                )
            }
            Err(msg) => {
                warn!("network-bridge start failed, rolling back: {msg}");
                self.rollback(undo).await;
                Response::err(ErrorKind::Failed, msg)
            }
        }
    }

    async fn netbridge_steps(
        &self,
        st: &NetBridgeState,
        mac: MacAddr,
        snapshot: AddrRouteSnapshot,
        undo: &mut Vec<Undo>,
    ) -> Result<(), String> {
        // 1. Record first, so a crash anywhere below can be undone by `stop`.
        self.store_json(&format!("{NETBRIDGE_STORE}/{}", st.bridge), st)
            .await
            .map_err(|e| format!("recording state: {e}"))?;
        undo.push(Undo::Record(st.bridge.clone()));
        // 2. The bridge and its host port, with the NIC's MAC and MTU.
        let def = BridgeDef {
            mac: Some(mac.to_string()),
            mtu: st.mtu,
            ..BridgeDef::default()
        };
        self.bridge_create(&st.bridge, &def)
            .await
            .map_err(|r| r.error.unwrap_or_default())?;
        undo.push(Undo::Bridge(st.bridge.clone()));
        self.store_json(
            &format!("{}/{}", super::bridges::BRIDGE_STORE, st.bridge),
            &def,
        )
        .await
        .map_err(|e| format!("recording bridge: {e}"))?;
        if st.legacy {
            // Xen 3.x order: dom0's address moves to the bridge first, then the NIC is
            // renamed p<netdev>, given the dummy MAC and ARP off, and becomes the uplink.
            let moved = with_rtnl(|rtnl| {
                snapshot
                    .move_to(rtnl, st.bridge.as_str())
                    .map_err(|e| format!("moving addresses to {}: {e}", st.bridge))
            });
            undo.push(Undo::Addresses {
                snapshot,
                bridge: st.bridge.clone(),
            });
            moved?;
            undo.push(Undo::Legacy {
                uplink: st.uplink.clone(),
                netdev: st.netdev.clone(),
                mac,
                was_up: st.was_up,
                had_arp: st.had_arp,
            });
            with_rtnl(|rtnl| {
                let e = |e: netcfg::rtnl::RtnlError| e.to_string();
                rtnl.set_down(st.netdev.as_str()).map_err(e)?;
                rtnl.rename(st.netdev.as_str(), &st.uplink).map_err(e)?;
                rtnl.set_mac(st.uplink.as_str(), DUMMY_MAC).map_err(e)?;
                rtnl.set_arp(st.uplink.as_str(), false).map_err(e)?;
                rtnl.set_up(st.uplink.as_str()).map_err(e)
            })?;
            self.attach_uplink(&st.bridge, &st.uplink).await?;
            undo.push(Undo::UplinkPort(st.uplink.clone()));
            install_ingress_drop(&st.bridge, &st.uplink)?;
            undo.push(Undo::IngressDrop(st.bridge.clone()));
        } else {
            // The uplink first, then keep the host stack off the NIC, then move the
            // addresses (added on the bridge before being removed from the NIC).
            self.attach_uplink(&st.bridge, &st.uplink).await?;
            undo.push(Undo::UplinkPort(st.uplink.clone()));
            install_ingress_drop(&st.bridge, &st.uplink)?;
            undo.push(Undo::IngressDrop(st.bridge.clone()));
            let moved = with_rtnl(|rtnl| {
                snapshot
                    .move_to(rtnl, st.bridge.as_str())
                    .map_err(|e| format!("moving addresses to {}: {e}", st.bridge))
            });
            undo.push(Undo::Addresses {
                snapshot,
                bridge: st.bridge.clone(),
            });
            moved?;
        }
        Ok(())
    }

    async fn attach_uplink(&self, bridge: &str, uplink: &str) -> Result<(), String> {
        let (idx, mtu) = with_rtnl(|rtnl| {
            let l = rtnl.link_by_name(uplink).map_err(|e| e.to_string())?;
            Ok((l.index, l.mtu))
        })?;
        let port =
            PacketPort::open(uplink, idx).map_err(|e| format!("opening uplink {uplink}: {e}"))?;
        self.dp
            .add_port(Box::new(port))
            .await
            .map_err(|e| e.to_string())?;
        let mut cfg = PortConfig::uplink(uplink);
        cfg.mtu = mtu;
        if let Err(e) = self.dp.attach(uplink, bridge, cfg).await {
            let _ = self.dp.remove_port(uplink).await;
            return Err(e.to_string());
        }
        self.replay_static_fdb(bridge, uplink).await;
        Ok(())
    }

    async fn rollback(&self, undo: Vec<Undo>) {
        for step in undo.into_iter().rev() {
            match step {
                Undo::Addresses { snapshot, bridge } => {
                    let r = with_rtnl(|rtnl| {
                        snapshot
                            .restore_from(rtnl, bridge.as_str())
                            .map_err(|e| e.to_string())
                    });
                    if let Err(e) = r {
                        warn!("rollback: restoring addresses: {e}");
                    }
                }
                Undo::UplinkPort(p) => {
                    let _ = self.dp.remove_port(&p).await;
                }
                Undo::IngressDrop(b) => {
                    let _ = remove_ingress_drop(&b);
                }
                Undo::Legacy {
                    uplink,
                    netdev,
                    mac,
                    was_up,
                    had_arp,
                } => {
                    let _ = with_rtnl(|rtnl| {
                        restore_legacy(rtnl, &uplink, &netdev, mac, was_up, had_arp);
                        Ok(())
                    });
                }
                Undo::Bridge(b) => {
                    let _ = self.dp.del_bridge(&b).await;
                    delete_host_tap(&b);
                    let _ = self
                        .ctl
                        .rm(0, &format!("{}/{b}", super::bridges::BRIDGE_STORE))
                        .await;
                }
                Undo::Record(b) => {
                    let _ = self.ctl.rm(0, &format!("{NETBRIDGE_STORE}/{b}")).await;
                }
            }
        }
    }

    /// `network-bridge stop`: puts everything back as it was before `start`.
    pub async fn netbridge_stop(&self, bridge: &str) -> Response {
        let _guard = self.netbridge_lock.lock().await;
        let Some(st) = self.load_netbridge(bridge).await else {
            return Response::ok(serde_json::json!({ "bridge": bridge, "already": true }));
        };
        if let Ok(ports) = self.dp.ports().await {
            let guests: Vec<String> = ports
                .iter()
                .filter(|p| {
                    p.bridge.as_deref() == Some(bridge) && p.name != bridge && p.name != st.uplink
                })
                .map(|p| p.name.clone())
                .collect();
            if !guests.is_empty() {
                return Response::err(
                    ErrorKind::Failed,
                    format!(
                        "bridge `{bridge}` still has vifs: {} (detach them first)",
                        guests.join(", ")
                    ),
                );
            }
        }
        let mut problems = Vec::new();
        let on_bridge = match with_rtnl(|rtnl| match rtnl.find_link(bridge).ok().flatten() {
            Some(_) => AddrRouteSnapshot::capture(rtnl, bridge)
                .map(Some)
                .map_err(|e| e.to_string()),
            None => Ok(None),
        }) {
            Ok(s) => s,
            Err(e) => {
                problems.push(format!("reading {bridge}'s addresses: {e}"));
                None
            }
        };
        let move_back = |problems: &mut Vec<String>| {
            if let Some(s) = &on_bridge {
                let r = with_rtnl(|rtnl| {
                    s.move_to(rtnl, st.netdev.as_str())
                        .map_err(|e| e.to_string())
                });
                if let Err(e) = r {
                    problems.push(format!("moving addresses back to {}: {e}", st.netdev));
                }
            }
        };
        if !st.legacy {
            // Addresses back on the NIC before the bridge lets go of it.
            move_back(&mut problems);
        }
        let _ = self.dp.remove_port(&st.uplink).await;
        if let Err(e) = remove_ingress_drop(bridge) {
            warn!("network-bridge stop: {e}");
        }
        if st.legacy {
            let mac: MacAddr = st.mac.parse().unwrap_or(DUMMY_MAC);
            let _ = with_rtnl(|rtnl| {
                restore_legacy(rtnl, &st.uplink, &st.netdev, mac, st.was_up, st.had_arp);
                Ok(())
            });
            move_back(&mut problems);
        }
        if let Err(e) = self.dp.del_bridge(bridge).await {
            problems.push(format!("deleting bridge: {e}"));
        }
        delete_host_tap(bridge);
        let _ = self
            .ctl
            .rm(0, &format!("{}/{bridge}", super::bridges::BRIDGE_STORE))
            .await;
        let _ = self.ctl.rm(0, &format!("{NETBRIDGE_STORE}/{bridge}")).await;
        let _ = self
            .ctl
            .rm(0, &format!("{}/{bridge}", super::bridges::FDB_STORE))
            .await;
        if problems.is_empty() {
            info!("network-bridge: {} restored from {bridge}", st.netdev);
            Response::ok(serde_json::json!({ "bridge": bridge, "netdev": st.netdev }))
        } else {
            Response::err(ErrorKind::Failed, problems.join("; "))
        }
    }

    /// `network-bridge status`.
    pub async fn netbridge_status(&self, bridge: &str) -> Response {
        let st = self.load_netbridge(bridge).await;
        let addrs = |dev: &str| -> Vec<String> {
            with_rtnl(|r| {
                Ok(r.addresses_of(dev)
                    .map(|v| v.iter().map(|a| a.local.to_string()).collect())
                    .unwrap_or_default())
            })
            .unwrap_or_default()
        };
        let ports = self
            .dp
            .bridges()
            .await
            .ok()
            .and_then(|b| b.into_iter().find(|b| b.name == bridge))
            .map(|b| b.ports)
            .unwrap_or_default();
        Response::ok(serde_json::json!({
            "bridge": bridge,
            "running": st.is_some(),
            "netdev": st.as_ref().map(|s| s.netdev.clone()),
            "uplink": st.as_ref().map(|s| s.uplink.clone()),
            "legacy": st.as_ref().map(|s| s.legacy),
            "bridge_addresses": addrs(bridge),
            "netdev_addresses": st.as_ref().map(|s| addrs(&s.uplink)).unwrap_or_default(),
            "ports": ports,
        }))
    }

    /// Re-attaches uplinks recorded by `start` after a daemon restart (bridges are
    /// restored first).
    pub async fn restore_netbridges(&self) {
        let names = self
            .ctl
            .directory(0, NETBRIDGE_STORE)
            .await
            .unwrap_or_default();
        for name in names {
            if let Some(st) = self.load_netbridge(&name).await {
                match self.attach_uplink(&name, &st.uplink).await {
                    Ok(()) => info!("network-bridge {name}: uplink {} re-attached", st.uplink),
                    Err(e) => warn!("network-bridge {name}: uplink not re-attached: {e}"),
                }
            }
        }
    }
}

fn restore_legacy(
    rtnl: &Rtnl,
    uplink: &str,
    netdev: &str,
    mac: MacAddr,
    was_up: bool,
    had_arp: bool,
) {
    let name = if rtnl.find_link(uplink).ok().flatten().is_some() {
        uplink
    } else {
        netdev
    };
    let _ = rtnl.set_down(name);
    if name != netdev {
        if let Err(e) = rtnl.rename(name, netdev) {
            warn!("renaming {name} back to {netdev}: {e}");
        }
    }
    let _ = rtnl.set_mac(netdev, mac);
    let _ = rtnl.set_arp(netdev, had_arp);
    if was_up {
        let _ = rtnl.set_up(netdev);
    }
}
