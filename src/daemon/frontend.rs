//! The in-daemon netfront driver of a namespace domain: what Linux netfront's xenbus
//! side does inside a guest, run as a task of the daemon that talks to xenstore *as
//! that unprivileged domain* (its own connection, relative paths under its home).
//!
//! For every `device/vif/<N>` it follows `vif::xenbus::frontend_step`: when the
//! backend reaches InitWait it creates the guest's `eth<N>` (a persistent TAP in the
//! domain's namespace with the vif's MAC), sets up rings, grants and event channels
//! (`NetfrontPort::setup`), publishes its keys and Connected in one transaction, and
//! hands the port to the frontend worker.

use std::collections::HashMap;
use std::sync::Arc;

use hypervisor::domain::DomainInfo;
use hypervisor::xenstore::wire::XsError;
use hypervisor::xenstored::{XsClient, XsClientError};
use netcfg::netns::NetNs;
use netcfg::rtnl::Rtnl;
use netcfg::tap::{Tap, TapConfig};
use tracing::{debug, info, warn};
use vif::env::LocalEnv;
use vif::netfront::port::NetfrontPort;
use vif::xenbus::{frontend_step, FrontendAction, FrontendFacts, XenbusState};
use vswitch::datapath::{DatapathError, Port, PortCtx};

use super::Daemon;

#[derive(Debug, Default)]
struct FeDevice {
    set_up: bool,
    started: bool,
    port: String,
    backend: String,
    watching: bool,
}

fn netfront(p: &mut dyn Port) -> Result<&mut NetfrontPort, DatapathError> {
    p.as_any_mut()
        .downcast_mut::<NetfrontPort>()
        .ok_or_else(|| DatapathError::Failed("not a netfront port".into()))
}

/// The guest interface of vif `devid`.
pub fn guest_ifname(devid: u32) -> String {
    format!("eth{devid}")
}

/// Opens (or re-attaches to) the persistent TAP `eth<N>` inside the domain's namespace,
/// with the vif's MAC and MTU, up.
fn open_guest_tap(domain: &str, devid: u32, mac: &str, mtu: u32) -> Result<Tap, String> {
    let ns = NetNs::open(domain).map_err(|e| format!("namespace {domain}: {e}"))?;
    let ifname = guest_ifname(devid);
    let mut cfg = TapConfig::with_offloads(&ifname);
    cfg.persist = true;
    let tap =
        Tap::create_in(&ns, &cfg).map_err(|e| format!("creating {ifname} in {domain}: {e}"))?;
    let rtnl = Rtnl::open_in(&ns).map_err(|e| e.to_string())?;
    let mac: netcfg::rtnl::MacAddr = mac.parse().map_err(|_| format!("bad MAC {mac}"))?;
    rtnl.set_mac(ifname.as_str(), mac)
        .map_err(|e| e.to_string())?;
    rtnl.set_mtu(ifname.as_str(), mtu)
        .map_err(|e| e.to_string())?;
    rtnl.set_up(ifname.as_str()).map_err(|e| e.to_string())?;
    Ok(tap)
}

/// Deletes the guest's `eth<N>` (detach finished).
pub(crate) fn delete_guest_tap(domain: &str, devid: u32) {
    if let Ok(ns) = NetNs::open(domain) {
        if let Ok(rtnl) = Rtnl::open_in(&ns) {
            let _ = rtnl.delete_link(guest_ifname(devid).as_str());
        }
    }
}

impl Daemon {
    /// Whether a domain's vifs are driven by the daemon's own netfront (the default)
    /// rather than an external frontend process.
    pub(crate) async fn builtin_frontend(&self, domid: hypervisor::DomId) -> bool {
        self.ctl
            .try_read_string(0, &format!("/libxl/{domid}/domnet-frontend"))
            .await
            .ok()
            .flatten()
            .as_deref()
            != Some("external")
    }

    /// Runs a domain's netfront driver until the domain goes away.
    pub async fn run_frontend_driver(self: Arc<Self>, info: DomainInfo) {
        let xs = self.xs.connect(info.domid, false);
        if let Err(e) = xs.watch("device/vif", "vifs").await {
            warn!(
                "frontend driver of {}: cannot watch device/vif: {e}",
                info.name
            );
            return;
        }
        let mut devices: HashMap<u32, FeDevice> = HashMap::new();
        loop {
            let ev = match xs.next_event().await {
                Ok(ev) => ev,
                Err(_) => break, // the domain was destroyed
            };
            debug!("frontend {}: event {} ({})", info.name, ev.path, ev.token);
            // A burst of events (a transaction's commit fires one per node) needs one
            // look at the devices, which reads their current state.
            while xs.try_next_event().is_some() {}
            let mut ids: Vec<u32> = xs
                .directory(0, "device/vif")
                .await
                .unwrap_or_default()
                .iter()
                .filter_map(|s| s.parse().ok())
                .collect();
            ids.extend(devices.keys().copied());
            ids.sort_unstable();
            ids.dedup();
            for n in ids {
                self.reconcile_frontend(&xs, &info, &mut devices, n).await;
            }
        }
        for (_, dev) in devices.drain() {
            if dev.set_up {
                let _ = self.fe.remove_port(&dev.port).await;
            }
        }
        debug!("frontend driver of {} stopped", info.name);
    }

    async fn reconcile_frontend(
        &self,
        xs: &XsClient,
        info: &DomainInfo,
        devices: &mut HashMap<u32, FeDevice>,
        n: u32,
    ) {
        let fe = format!("device/vif/{n}");
        let Ok(Some(backend)) = xs.try_read_string(0, &format!("{fe}/backend")).await else {
            // Gone: detach finished.
            if let Some(dev) = devices.remove(&n) {
                if dev.set_up {
                    let _ = self.fe.remove_port(&dev.port).await;
                }
                let _ = xs
                    .unwatch(&format!("{}/state", dev.backend), &format!("be:{n}"))
                    .await;
                delete_guest_tap(&info.name, n);
                info!("frontend: {}:eth{n} removed", info.name);
            }
            return;
        };
        let dev = devices.entry(n).or_default();
        if !dev.watching {
            let _ = xs
                .watch(&format!("{backend}/state"), &format!("be:{n}"))
                .await;
            dev.watching = true;
            dev.backend = backend.clone();
            dev.port = format!("{}:eth{n}", info.name);
        }
        for _ in 0..4 {
            let facts = FrontendFacts {
                state: XenbusState::parse(
                    xs.try_read_string(0, &format!("{fe}/state"))
                        .await
                        .ok()
                        .flatten()
                        .as_deref(),
                ),
                backend: XenbusState::parse(
                    xs.try_read_string(0, &format!("{backend}/state"))
                        .await
                        .ok()
                        .flatten()
                        .as_deref(),
                ),
                set_up: dev.set_up,
            };
            let actions = frontend_step(&facts);
            if actions.is_empty() {
                break;
            }
            for a in actions {
                match a {
                    FrontendAction::Setup => {
                        match self.frontend_setup(xs, info, n, &dev.port).await {
                            Ok(()) => dev.set_up = true,
                            Err(e) => {
                                warn!("frontend {}: eth{n} setup failed: {e}", info.name);
                                let _ = xs.write(0, &format!("{fe}/state"), b"6").await;
                                return;
                            }
                        }
                    }
                    FrontendAction::Start => {
                        if dev.started {
                            return;
                        }
                        dev.started = true;
                        let _ = self
                            .fe
                            .with_port(
                                &dev.port,
                                Box::new(|p: &mut dyn Port, _ctx: &mut PortCtx<'_>| {
                                    netfront(p)?
                                        .connected()
                                        .map_err(|e| DatapathError::Failed(e.to_string()))
                                }),
                            )
                            .await;
                        // Start once per connection.
                        return;
                    }
                    FrontendAction::Teardown => {
                        // Grants can only be revoked once the backend has unmapped them:
                        // tell it we are Closed first, take the port down when it is.
                        if facts.backend != XenbusState::Closed {
                            continue;
                        }
                        let _ = self.fe.remove_port(&dev.port).await;
                        dev.set_up = false;
                        dev.started = false;
                    }
                    FrontendAction::SetState(s) => {
                        match xs
                            .write(0, &format!("{fe}/state"), s.to_string().as_bytes())
                            .await
                        {
                            Ok(()) | Err(XsClientError::Xs(XsError::ENOENT)) => {}
                            Err(e) => warn!("frontend {}: state {s}: {e}", info.name),
                        }
                    }
                }
            }
        }
    }

    async fn frontend_setup(
        &self,
        xs: &XsClient,
        info: &DomainInfo,
        n: u32,
        port: &str,
    ) -> Result<(), String> {
        let fe = format!("device/vif/{n}");
        let mac = xs
            .read_string(0, &format!("{fe}/mac"))
            .await
            .map_err(|e| format!("reading mac: {e}"))?;
        let mtu: u32 = xs
            .try_read_string(0, &format!("{fe}/mtu"))
            .await
            .ok()
            .flatten()
            .and_then(|s| s.parse().ok())
            .unwrap_or(1500);
        let tap = open_guest_tap(&info.name, n, &mac, mtu)?;
        let env = LocalEnv::new(std::sync::Arc::clone(self.xs.hypervisor()), info.domid)
            .map_err(|e| e.to_string())?;
        let mut front =
            NetfrontPort::new(port, Box::new(env), tap, 0, n).map_err(|e| e.to_string())?;
        let keys = front.setup().map_err(|e| e.to_string())?;
        // Keys and Connected in one transaction (Linux netfront skips Initialised).
        let mut committed = false;
        for _ in 0..10 {
            let tx = xs.transaction_start().await.map_err(|e| e.to_string())?;
            let mut ok = true;
            for (k, v) in keys.pairs() {
                if xs
                    .write(tx, &format!("{fe}/{k}"), v.as_bytes())
                    .await
                    .is_err()
                {
                    ok = false;
                    break;
                }
            }
            if ok && xs.write(tx, &format!("{fe}/state"), b"4").await.is_err() {
                ok = false;
            }
            match xs.transaction_end(tx, ok).await {
                Ok(()) if ok => {
                    committed = true;
                    break;
                }
                Err(XsClientError::Xs(XsError::EAGAIN)) => continue,
                _ => break,
            }
        }
        if !committed {
            if let Err(e) = front.teardown() {
                warn!("frontend {}: eth{n}: {e}", info.name);
            }
            return Err("publishing the frontend keys failed".into());
        }
        self.fe
            .add_port(Box::new(front))
            .await
            .map_err(|e| e.to_string())?;
        Ok(())
    }
}
