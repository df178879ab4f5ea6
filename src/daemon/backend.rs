//! dom0's vif backend driver (what Linux netback's xenbus side does), as a task of the
//! daemon: it watches `backend/vif`, and for every device feeds the facts it reads from
//! xenstore into `vif::xenbus::backend_step`, then carries out the actions on xenstore
//! and on the switch worker (creating, connecting and removing `NetbackPort`s).

use std::collections::HashMap;
use std::sync::Arc;

use hypervisor::xenstore::wire::XsError;
use hypervisor::xenstored::XsClientError;
use hypervisor::DomId;
use tracing::{debug, info, warn};
use vif::netback::credit::TxRate;
use vif::netback::port::{NetbackConfig, NetbackPort};
use vif::xenbus::{backend_step, BackendAction, BackendFacts, XenbusState};
use vswitch::datapath::{DatapathError, Port, PortCtx};

use super::Daemon;

/// Keys the backend writes at probe (§1.9; single queue, no multicast filtering).
const FEATURES: &[(&str, &str)] = &[
    ("feature-sg", "1"),
    ("feature-gso-tcpv4", "1"),
    ("feature-gso-tcpv6", "1"),
    ("feature-ipv6-csum-offload", "1"),
    ("feature-rx-copy", "1"),
    ("feature-rx-flip", "0"),
    ("feature-split-event-channels", "1"),
];

/// What the driver remembers about a device between events.
#[derive(Debug, Default, Clone)]
struct Device {
    port: String,
    probed: bool,
    rings_connected: bool,
    connect_failed: bool,
    frontend_path: String,
    rate: Option<String>,
}

fn netback(p: &mut dyn Port) -> Result<&mut NetbackPort, DatapathError> {
    p.as_any_mut()
        .downcast_mut::<NetbackPort>()
        .ok_or_else(|| DatapathError::Failed("not a vif port".into()))
}

/// `backend/vif/<D>/<N>[/...]` (relative or absolute) → (D, N).
fn device_of(path: &str) -> Option<(DomId, u32)> {
    let rest = path
        .strip_prefix("/local/domain/0/")
        .unwrap_or(path)
        .strip_prefix("backend/vif/")?;
    let mut it = rest.split('/');
    let d = it.next()?.parse().ok()?;
    let n = it.next()?.parse().ok()?;
    Some((d, n))
}

/// Writes the backend's feature keys and InitWait (what a probe leads to) in one
/// transaction — one journal write, not one per key — unless the device went away
/// meanwhile or is past Initialising.
async fn write_features(
    xs: &hypervisor::xenstored::XsClient,
    be: &str,
) -> Result<(), XsClientError> {
    for _ in 0..10 {
        let tx = xs.transaction_start().await?;
        let r: Result<(), XsClientError> = async {
            if xs
                .try_read_string(tx, &format!("{be}/frontend"))
                .await?
                .is_none()
            {
                return Ok(());
            }
            for (k, v) in FEATURES {
                xs.write(tx, &format!("{be}/{k}"), v.as_bytes()).await?;
            }
            let state = xs.try_read_string(tx, &format!("{be}/state")).await?;
            if matches!(
                XenbusState::parse(state.as_deref()),
                XenbusState::Initialising | XenbusState::Unknown
            ) {
                let init_wait = XenbusState::InitWait.to_string();
                xs.write(tx, &format!("{be}/state"), init_wait.as_bytes())
                    .await?;
            }
            Ok(())
        }
        .await;
        if let Err(e) = r {
            let _ = xs.transaction_end(tx, false).await;
            return Err(e);
        }
        match xs.transaction_end(tx, true).await {
            Err(XsClientError::Xs(XsError::EAGAIN)) => continue,
            other => return other,
        }
    }
    Err(XsClientError::Xs(XsError::EAGAIN))
}

impl Daemon {
    /// Runs the backend driver until the daemon stops.
    pub async fn run_backend_driver(self: Arc<Self>) {
        let xs = self.xs.connect(0, true);
        if let Err(e) = xs.watch("backend/vif", "backend").await {
            warn!("backend driver cannot watch backend/vif: {e}");
            return;
        }
        let mut devices: HashMap<(DomId, u32), Device> = HashMap::new();
        loop {
            let first = match xs.next_event().await {
                Ok(ev) => ev,
                Err(_) => return,
            };
            // Events come in bursts (a transaction's commit fires one per node): take
            // every queued one and look at each device they name once. The driver
            // reads the current facts, so one look per burst sees everything.
            let mut batch = vec![first];
            while let Some(ev) = xs.try_next_event() {
                batch.push(ev);
            }
            let mut todo: std::collections::BTreeSet<(DomId, u32)> = Default::default();
            let mut everything = false;
            for ev in batch {
                if ev.token == "backend" {
                    match device_of(&ev.path) {
                        Some(k) => {
                            todo.insert(k);
                        }
                        // The whole tree changed (initial event): look at every device.
                        None => everything = true,
                    }
                } else if let Some(rest) = ev.token.strip_prefix("fe:") {
                    let mut it = rest.split(':');
                    if let (Some(d), Some(n)) = (
                        it.next().and_then(|s| s.parse().ok()),
                        it.next().and_then(|s| s.parse().ok()),
                    ) {
                        todo.insert((d, n));
                    }
                }
            }
            if everything {
                todo.extend(self.all_backend_devices().await);
            }
            for (d, n) in todo {
                self.reconcile_backend(&xs, &mut devices, d, n).await;
            }
        }
    }

    /// Whether the switch port `name` is the netback of vif `d`.`n`.
    async fn is_netback_of(&self, name: &str, d: DomId, n: u32) -> bool {
        self.netback_of(name, d, n).await == Some(true)
    }

    /// Whether the switch port `name` is the netback of vif `d`.`n` (`None`: there is
    /// no such port), in one look.
    pub(crate) async fn netback_of(&self, name: &str, d: DomId, n: u32) -> Option<bool> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let r = self
            .dp
            .with_port(
                name,
                Box::new(move |p: &mut dyn Port, _ctx: &mut PortCtx<'_>| {
                    let ours = p
                        .as_any_mut()
                        .downcast_mut::<NetbackPort>()
                        .is_some_and(|nb| nb.config().domid == d && nb.config().devid == n);
                    let _ = tx.send(ours);
                    Ok(())
                }),
            )
            .await;
        match r {
            Ok(()) => Some(rx.await.unwrap_or(false)),
            Err(_) => None,
        }
    }

    async fn all_backend_devices(&self) -> Vec<(DomId, u32)> {
        let mut out = Vec::new();
        for d in self
            .ctl
            .directory(0, "/local/domain/0/backend/vif")
            .await
            .unwrap_or_default()
        {
            let Ok(domid) = d.parse() else { continue };
            for n in self
                .ctl
                .directory(0, &format!("/local/domain/0/backend/vif/{d}"))
                .await
                .unwrap_or_default()
            {
                if let Ok(devid) = n.parse() {
                    out.push((domid, devid));
                }
            }
        }
        out
    }

    async fn reconcile_backend(
        &self,
        xs: &hypervisor::xenstored::XsClient,
        devices: &mut HashMap<(DomId, u32), Device>,
        d: DomId,
        n: u32,
    ) {
        let be = format!("/local/domain/0/backend/vif/{d}/{n}");
        let read = |k: &'static str| {
            let p = format!("{be}/{k}");
            async move { xs.try_read_string(0, &p).await.ok().flatten() }
        };
        let Some(frontend_path) = read("frontend").await else {
            // The directory is gone (detach finished, or a half-written attach): drop
            // whatever is left.
            if let Some(dev) = devices.remove(&(d, n)) {
                let _ = xs
                    .unwatch(
                        &format!("{}/state", dev.frontend_path),
                        &format!("fe:{d}:{n}"),
                    )
                    .await;
                if self.dp.remove_port(&dev.port).await.is_ok() {
                    info!("backend: {} removed", dev.port);
                }
            }
            return;
        };
        // Several rounds: an action changes the facts the next step looks at.
        for _ in 0..6 {
            let dev = devices.entry((d, n)).or_default();
            let facts = BackendFacts {
                state: XenbusState::parse(read("state").await.as_deref()),
                frontend: XenbusState::parse(
                    xs.try_read_string(0, &format!("{frontend_path}/state"))
                        .await
                        .ok()
                        .flatten()
                        .as_deref(),
                ),
                hotplug_status: read("hotplug-status").await,
                online: read("online").await.as_deref() == Some("1"),
                rings_connected: dev.rings_connected,
                connect_failed: dev.connect_failed,
                probed: dev.probed,
            };
            // A frontend starting over clears an earlier failure.
            if dev.connect_failed
                && matches!(
                    facts.frontend,
                    XenbusState::Initialising | XenbusState::Closed
                )
            {
                dev.connect_failed = false;
            }
            let actions = backend_step(&facts);
            debug!("backend {be}: {facts:?} -> {actions:?}");
            if actions.is_empty() {
                break;
            }
            for a in actions {
                self.backend_action(xs, devices, d, n, &be, &frontend_path, a)
                    .await;
            }
        }
        // Live rate changes (netback watches `rate`).
        if let Some(dev) = devices.get_mut(&(d, n)) {
            let rate = read("rate").await;
            if dev.probed && rate != dev.rate {
                dev.rate = rate.clone();
                let r = TxRate::from_key(rate.as_deref());
                let _ = self
                    .dp
                    .with_port(
                        &dev.port,
                        Box::new(move |p: &mut dyn Port, ctx: &mut PortCtx<'_>| {
                            netback(p)?.set_rate(r, ctx.now);
                            Ok(())
                        }),
                    )
                    .await;
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn backend_action(
        &self,
        xs: &hypervisor::xenstored::XsClient,
        devices: &mut HashMap<(DomId, u32), Device>,
        d: DomId,
        n: u32,
        be: &str,
        fe: &str,
        action: BackendAction,
    ) {
        let Some(dev) = devices.get_mut(&(d, n)) else {
            return;
        };
        match action {
            BackendAction::Probe => {
                let vifname = xs
                    .try_read_string(0, &format!("{be}/vifname"))
                    .await
                    .ok()
                    .flatten();
                let rate = xs
                    .try_read_string(0, &format!("{be}/rate"))
                    .await
                    .ok()
                    .flatten();
                let name = Self::vif_port_name(d, n, vifname.as_deref());
                let port = NetbackPort::new(NetbackConfig {
                    name: name.clone(),
                    domid: d,
                    devid: n,
                    rate: TxRate::from_key(rate.as_deref()),
                });
                match self.dp.add_port(Box::new(port)).await {
                    Ok(()) => {}
                    // Probed again (a restart's re-walk): the port is this vif's.
                    Err(DatapathError::Exists(_)) if self.is_netback_of(&name, d, n).await => {}
                    Err(DatapathError::Exists(_)) => {
                        // Another port has the name (a `vifname=` taken meanwhile):
                        // this vif never takes it over, so its rollback cannot remove
                        // that port (robustness.md f5).
                        warn!("backend {be}: port name {name} is already in use");
                        let _ = xs
                            .write(
                                0,
                                &format!("{be}/hotplug-error"),
                                format!("vif name `{name}` is already in use").as_bytes(),
                            )
                            .await;
                        // Probed without a port, and failed: the device goes to
                        // Closing and its attach is rolled back.
                        dev.probed = true;
                        dev.connect_failed = true;
                        return;
                    }
                    Err(e) => warn!("backend {be}: creating port {name}: {e}"),
                }
                let _ = xs
                    .watch(&format!("{fe}/state"), &format!("fe:{d}:{n}"))
                    .await;
                // Port first, then the features and InitWait in one transaction: the
                // frontend may connect as soon as it sees InitWait.
                if let Err(e) = write_features(xs, be).await {
                    warn!("backend {be}: writing its features: {e}");
                }
                dev.port = name;
                dev.probed = true;
                dev.rate = rate;
                dev.frontend_path = fe.to_string();
            }
            BackendAction::ConnectRings => {
                let mut keys = HashMap::new();
                for k in xs.directory(0, fe).await.unwrap_or_default() {
                    if let Ok(Some(v)) = xs.try_read_string(0, &format!("{fe}/{k}")).await {
                        keys.insert(k, v);
                    }
                }
                let rings = vif::keys::FrontendRings::parse(|k: &str| keys.get(k).cloned());
                let result = match rings {
                    Ok(rings) => {
                        self.dp
                            .with_port(
                                &dev.port,
                                Box::new(move |p: &mut dyn Port, ctx: &mut PortCtx<'_>| {
                                    netback(p)?
                                        .connect(ctx.hv, &rings)
                                        .map_err(|e| DatapathError::Failed(e.to_string()))
                                }),
                            )
                            .await
                    }
                    Err(e) => Err(DatapathError::Failed(e.to_string())),
                };
                match result {
                    Ok(()) => {
                        dev.rings_connected = true;
                        info!("backend: {} connected to domain {d}", dev.port);
                    }
                    Err(e) => {
                        // xenbus_dev_fatal: the error node, then Closing.
                        warn!("backend {be}: cannot connect: {e}");
                        dev.connect_failed = true;
                        let _ = xs
                            .write(
                                0,
                                &format!("/local/domain/0/error/backend/vif/{d}/{n}/error"),
                                format!("{} {e}", libc::EINVAL).as_bytes(),
                            )
                            .await;
                    }
                }
            }
            BackendAction::DisconnectRings => {
                let _ = self
                    .dp
                    .with_port(
                        &dev.port,
                        Box::new(|p: &mut dyn Port, ctx: &mut PortCtx<'_>| {
                            netback(p)?.disconnect(ctx);
                            Ok(())
                        }),
                    )
                    .await;
                dev.rings_connected = false;
            }
            BackendAction::SetState(s) => {
                // Only if the node still exists (a removed device stays removed), and
                // only if it changes (no journal write for nothing).
                let current = xs
                    .try_read_string(0, &format!("{be}/state"))
                    .await
                    .ok()
                    .flatten();
                if current.is_some_and(|c| c != s.to_string()) {
                    match xs
                        .write(0, &format!("{be}/state"), s.to_string().as_bytes())
                        .await
                    {
                        Ok(()) | Err(XsClientError::Xs(XsError::ENOENT)) => {}
                        Err(e) => warn!("backend {be}: writing state {s}: {e}"),
                    }
                }
            }
            BackendAction::Unregister => {
                let _ = xs.rm(0, &format!("{be}/hotplug-status")).await;
                let _ = xs
                    .unwatch(&format!("{fe}/state"), &format!("fe:{d}:{n}"))
                    .await;
                let port = dev.port.clone();
                devices.remove(&(d, n));
                let _ = self.dp.remove_port(&port).await;
                info!("backend: {port} unregistered");
            }
        }
    }
}
