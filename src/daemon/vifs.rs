//! The toolstack's vif verbs: `network-attach`, `network-detach`, `network-list`, as
//! libxl does them (xen-networking.md §5, §6, §7).
//!
//! Attach writes, in one transaction, `/libxl/<D>/device/vif/<N>` (our durable record),
//! the frontend directory (owned by the guest) and the backend directory (owned by
//! dom0, `hotplug-status` present but empty). The backend driver probes and goes to
//! InitWait; then the hotplug script runs and reports `hotplug-status`; the frontend
//! (in the daemon for namespace domains) connects; the backend publishes Connected.
//! Any failure rolls the attach back completely: no port, no xenstore node, no
//! interface left.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use hypervisor::domain::DomainInfo;
use hypervisor::xenstore::wire::XsError;
use hypervisor::xenstored::XsClientError;
use hypervisor::DomId;
use netcfg::vifspec::{self, NicSelector, VifDefaults, VifSpec};
use serde::Serialize;
use tracing::{info, warn};
use vif::hotplug::{self, HotplugCall, HotplugOutcome, VifEnv};
use vif::xenbus::XenbusState;

use super::{toolstack_error, Daemon};
use crate::control::{ErrorKind, Response};

/// libxl's wait for the backend to reach InitWait / Closed (`LIBXL_INIT_TIMEOUT`,
/// `LIBXL_DESTROY_TIMEOUT`).
const STATE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long attach waits for an in-daemon frontend to connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The key of `/libxl/<D>/device/vif/<N>` that marks an attach not yet acknowledged:
/// written with the vif's nodes, removed once the vif is connected. A daemon that
/// finds it after a restart rolls the attach back (the user never got a success).
pub(crate) const ATTACH_PENDING: &str = "attach-pending";

/// How often a conflicting (EAGAIN) device transaction is tried before giving up.
const TX_ATTEMPTS: u32 = 100;

/// The xenstore paths of one vif.
#[derive(Debug, Clone)]
pub struct VifPaths {
    /// `/libxl/<D>/device/vif/<N>`.
    pub libxl: String,
    /// `/local/domain/<D>/device/vif/<N>`.
    pub frontend: String,
    /// `/local/domain/0/backend/vif/<D>/<N>`.
    pub backend: String,
    /// `/local/domain/0/error/backend/vif/<D>/<N>` (where the backend reports a fatal
    /// connection error).
    pub error: String,
}

impl VifPaths {
    /// The paths of vif `devid` of `domid`.
    pub fn new(domid: DomId, devid: u32) -> VifPaths {
        VifPaths {
            libxl: format!("/libxl/{domid}/device/vif/{devid}"),
            frontend: format!("/local/domain/{domid}/device/vif/{devid}"),
            backend: format!("/local/domain/0/backend/vif/{domid}/{devid}"),
            error: format!("/local/domain/0/error/backend/vif/{domid}/{devid}"),
        }
    }
}

/// One row of `network-list`.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct VifRow {
    /// Device id.
    pub idx: u32,
    /// Backend domain.
    pub backend_id: u16,
    /// MAC.
    pub mac: String,
    /// Handle (= devid).
    pub handle: i64,
    /// Frontend state.
    pub state: i64,
    /// Frontend `event-channel` (-1 with split channels).
    pub evtch: i64,
    /// `tx-ring-ref`.
    pub tx_ring_ref: i64,
    /// `rx-ring-ref`.
    pub rx_ring_ref: i64,
    /// Backend path.
    pub be_path: String,
    /// Backend state.
    pub backend_state: i64,
    /// The backend port name.
    pub vif: String,
    /// The bridge (or network) it joins.
    pub bridge: String,
}

fn xs_msg(e: XsClientError) -> String {
    e.to_string()
}

impl Daemon {
    /// Where domnet's own hotplug scripts live.
    pub(crate) fn script_dir(&self) -> String {
        self.script_dir.display().to_string()
    }

    /// The defaults xl would apply (bridge xenbr0, script vif-bridge from our dir).
    fn vif_defaults(&self) -> VifDefaults {
        VifDefaults {
            script_dir: self.script_dir(),
            ..VifDefaults::default()
        }
    }

    /// Devids recorded for a domain.
    pub(crate) async fn devids(&self, domid: DomId) -> Vec<u32> {
        let mut v: Vec<u32> = self
            .ctl
            .directory(0, &format!("/libxl/{domid}/device/vif"))
            .await
            .unwrap_or_default()
            .iter()
            .filter_map(|s| s.parse().ok())
            .collect();
        v.sort_unstable();
        v
    }

    async fn read_opt(&self, path: &str) -> Option<String> {
        self.ctl.try_read_string(0, path).await.ok().flatten()
    }

    async fn state_of(&self, path: &str) -> XenbusState {
        XenbusState::parse(self.read_opt(&format!("{path}/state")).await.as_deref())
    }

    /// Waits until `path/state` satisfies `want` or the timeout passes, woken by a
    /// watch on the node (its own connection, so the wait costs nothing while
    /// nothing changes and ends as soon as the state is written).
    async fn wait_state(
        &self,
        path: &str,
        timeout: Duration,
        want: impl Fn(XenbusState) -> bool,
    ) -> XenbusState {
        let deadline = tokio::time::Instant::now() + timeout;
        let node = format!("{path}/state");
        let xs = self.xs.connect(0, true);
        let mut watching = xs.watch(&node, "state").await.is_ok();
        loop {
            let s =
                XenbusState::parse(xs.try_read_string(0, &node).await.ok().flatten().as_deref());
            if want(s) || tokio::time::Instant::now() >= deadline {
                return s;
            }
            if watching {
                // Any event (or the deadline) is a reason to look again.
                if let Ok(Err(_)) = tokio::time::timeout_at(deadline, xs.next_event()).await {
                    watching = false;
                }
            } else {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }

    /// The backend port name of a vif.
    pub(crate) fn vif_port_name(domid: DomId, devid: u32, vifname: Option<&str>) -> String {
        vifname
            .map(str::to_string)
            .unwrap_or_else(|| format!("vif{domid}.{devid}"))
    }

    /// Whether a switch port has vif `domid`.`devid`'s name (its `vifname`, or the
    /// default) without being its netback.
    async fn port_is_foreign(&self, domid: DomId, devid: u32) -> bool {
        let be = VifPaths::new(domid, devid).backend;
        let vifname = self.read_opt(&format!("{be}/vifname")).await;
        let port = Self::vif_port_name(domid, devid, vifname.as_deref());
        // One look: the backend may remove this vif's own port meanwhile, and a port
        // that is gone is nobody's.
        self.netback_of(&port, domid, devid).await == Some(false)
    }

    /// Writes the three directories of a new vif in one transaction (retried on EAGAIN).
    async fn write_vif_nodes(
        &self,
        info: &DomainInfo,
        spec: &VifSpec,
        devid: u32,
    ) -> Result<VifPaths, String> {
        let d = info.domid;
        let p = VifPaths::new(d, devid);
        let be_keys = spec.to_backend_keys().map_err(|e| e.to_string())?;
        let fe_keys = spec.to_frontend_keys().map_err(|e| e.to_string())?;
        let spec_json = serde_json::to_string(spec).map_err(|e| e.to_string())?;
        // The per-domain parents are made outside the transaction: a new child changes
        // its parent's generation (C xenstored's rule), so creating
        // `backend/vif/<D>` inside it would make the first attach of every domain
        // conflict with every other domain's. Below them only this domain's attaches
        // meet, and those are serialised by its device lock.
        for dir in [
            format!("/local/domain/0/backend/vif/{d}"),
            format!("/libxl/{d}/device/vif"),
        ] {
            if self.ctl.directory(0, &dir).await.is_err() {
                self.ctl.mkdir(0, &dir).await.map_err(xs_msg)?;
            }
        }
        for attempt in 0..TX_ATTEMPTS {
            if attempt > 0 {
                // libxl retries EAGAIN without limit; a short, growing pause lets the
                // competing commit through.
                tokio::time::sleep(Duration::from_millis(u64::from(attempt.min(20)))).await;
            }
            let tx = self.ctl.transaction_start().await.map_err(xs_msg)?;
            let r: Result<(), XsClientError> = async {
                let w = |path: String, value: String| async move {
                    self.ctl.write(tx, &path, value.as_bytes()).await
                };
                // Directories first, with their permissions, so every key written
                // below inherits them (as libxl's mknod-with-perms does).
                self.ctl.mkdir(tx, &p.frontend).await?;
                self.ctl
                    .set_perms(tx, &p.frontend, &[format!("n{d}"), "r0".into()])
                    .await?;
                self.ctl.mkdir(tx, &p.backend).await?;
                self.ctl
                    .set_perms(tx, &p.backend, &["n0".into(), format!("r{d}")])
                    .await?;
                // Our own record (dom0 only).
                w(format!("{}/frontend", p.libxl), p.frontend.clone()).await?;
                w(format!("{}/backend", p.libxl), p.backend.clone()).await?;
                w(format!("{}/domnet-spec", p.libxl), spec_json.clone()).await?;
                w(format!("{}/{ATTACH_PENDING}", p.libxl), "1".into()).await?;
                // Frontend: owned by the guest, readable by the backend.
                w(format!("{}/backend", p.frontend), p.backend.clone()).await?;
                w(format!("{}/backend-id", p.frontend), "0".into()).await?;
                w(format!("{}/state", p.frontend), "1".into()).await?;
                for (k, v) in &fe_keys {
                    w(format!("{}/{k}", p.frontend), v.clone()).await?;
                }
                // mtu: read-only to the guest.
                w(
                    format!("{}/mtu", p.frontend),
                    spec.effective_mtu().to_string(),
                )
                .await?;
                self.ctl
                    .set_perms(
                        tx,
                        &format!("{}/mtu", p.frontend),
                        &["n0".into(), format!("r{d}")],
                    )
                    .await?;
                // Backend: owned by dom0, readable by the guest.
                w(format!("{}/frontend", p.backend), p.frontend.clone()).await?;
                w(format!("{}/frontend-id", p.backend), d.to_string()).await?;
                w(format!("{}/online", p.backend), "1".into()).await?;
                w(format!("{}/state", p.backend), "1".into()).await?;
                for (k, v) in &be_keys {
                    w(format!("{}/{k}", p.backend), v.clone()).await?;
                }
                w(format!("{}/hotplug-status", p.backend), String::new()).await?;
                Ok(())
            }
            .await;
            match r {
                Ok(()) => match self.ctl.transaction_end(tx, true).await {
                    Ok(()) => return Ok(p),
                    Err(XsClientError::Xs(XsError::EAGAIN)) => continue,
                    Err(e) => return Err(xs_msg(e)),
                },
                Err(e) => {
                    let _ = self.ctl.transaction_end(tx, false).await;
                    return Err(xs_msg(e));
                }
            }
        }
        Err("xenstore transaction kept conflicting".into())
    }

    /// Runs the vif's hotplug script.
    async fn run_hotplug(
        &self,
        domid: DomId,
        devid: u32,
        command: &str,
    ) -> Option<(PathBuf, HotplugOutcome)> {
        let p = VifPaths::new(domid, devid);
        let script = PathBuf::from(self.read_opt(&format!("{}/script", p.backend)).await?);
        let vifname = self.read_opt(&format!("{}/vifname", p.backend)).await;
        let env = VifEnv {
            domid,
            devid,
            vif: Self::vif_port_name(domid, devid, vifname.as_deref()),
            netdev: self
                .read_opt(&format!("{}/gatewaydev", p.backend))
                .await
                .unwrap_or_default(),
            xenstored_path: self.xs.dom0_socket(),
            extra: vec![
                (
                    "DOMNET".into(),
                    std::env::current_exe()
                        .map(|p| p.display().to_string())
                        .unwrap_or_else(|_| "domnet".into()),
                ),
                ("DOMNET_RUN_DIR".into(), self.run_dir.display().to_string()),
            ],
        };
        let call = HotplugCall::vif(&script, command, &env);
        let log = self.run_dir.join("hotplug.log");
        let outcome = hotplug::run(&call, self.hotplug_timeout, Some(&log)).await;
        Some((script, outcome))
    }

    /// `domnet network-attach DOM SPEC…`.
    pub async fn network_attach(&self, dom: &str, items: &[String]) -> Response {
        let info = match self.xs.lookup_domain(dom.to_string()).await {
            Ok(i) => i,
            Err(e) => return toolstack_error(e),
        };
        if info.domid == 0 {
            return Response::err(ErrorKind::BadInput, "dom0 has no frontend vifs");
        }
        // Each word is one item; words may also hold several comma-separated items.
        let split: Vec<String> = items
            .iter()
            .flat_map(|w| {
                w.split(',')
                    .filter(|s| !s.is_empty())
                    .map(|s| s.trim_start().to_string())
            })
            .collect();
        let mut spec = match vifspec::parse_vif_items(&split) {
            Ok(s) => s,
            Err(e) => return Response::err(ErrorKind::BadInput, e.to_string()),
        };
        if let Err(e) = spec.fill_defaults(&self.vif_defaults(), &mut rand::thread_rng()) {
            return Response::err(ErrorKind::BadInput, e.to_string());
        }
        let _guard = self.vif_lock(info.domid).await;
        let existing = self.devids(info.domid).await;
        let devid = match spec.devid {
            Some(d) if existing.contains(&d) => {
                return Response::err(
                    ErrorKind::BadInput,
                    format!("device vif/{d} of {} already exists", info.name),
                )
            }
            Some(d) => d,
            None => vifspec::next_attach_devid(&existing),
        };
        spec.devid = Some(devid);
        let warnings = spec.warnings.clone();
        match self.attach_vif(&info, &spec).await {
            Ok(row) => Response::ok(row).with_warnings(warnings),
            Err(msg) => Response::err(ErrorKind::Failed, msg).with_warnings(warnings),
        }
    }

    /// The attach sequence for one vif whose devid is set; rolls back on failure.
    pub(crate) async fn attach_vif(
        &self,
        info: &DomainInfo,
        spec: &VifSpec,
    ) -> Result<VifRow, String> {
        let devid = spec.devid.ok_or("devid unset")?;
        let d = info.domid;
        let t0 = Instant::now();
        // A vif never takes over another port's name (robustness.md f5): its rollback
        // would remove that port.
        let port = Self::vif_port_name(d, devid, spec.vifname.as_deref());
        let taken = self
            .dp
            .with_port(
                &port,
                Box::new(|_p: &mut dyn vswitch::datapath::Port, _ctx| Ok(())),
            )
            .await
            .is_ok();
        if taken {
            return Err(format!("vif name `{port}` is already in use"));
        }
        let paths = self.write_vif_nodes(info, spec, devid).await?;
        let mut phases = AttachPhases::new(t0);
        phases.mark("nodes");
        let result = self.bring_up(info, devid, &paths, &mut phases).await;
        let result = match result {
            Ok(()) => self
                .ctl
                .rm(0, &format!("{}/{ATTACH_PENDING}", paths.libxl))
                .await
                .map_err(|e| format!("recording the attach: {e}")),
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => {
                phases.mark("recorded");
                info!(
                    "vif{d}.{devid} of {} attached in {:.1} ms ({phases})",
                    info.name,
                    t0.elapsed().as_secs_f64() * 1000.0
                );
                Ok(self.vif_row(d, devid).await)
            }
            Err(msg) => {
                warn!("attaching vif{d}.{devid} failed, rolling back: {msg}");
                self.remove_vif(d, devid, true).await;
                Err(msg)
            }
        }
    }

    /// Walks an existing vif's handshake again (daemon restart).
    pub(crate) async fn restart_vif(&self, info: &DomainInfo, devid: u32) -> Result<(), String> {
        let mut phases = AttachPhases::new(Instant::now());
        self.bring_up(info, devid, &VifPaths::new(info.domid, devid), &mut phases)
            .await
    }

    async fn bring_up(
        &self,
        info: &DomainInfo,
        devid: u32,
        p: &VifPaths,
        phases: &mut AttachPhases,
    ) -> Result<(), String> {
        let s = self
            .wait_state(&p.backend, STATE_TIMEOUT, |s| s == XenbusState::InitWait)
            .await;
        phases.mark("initwait");
        if s != XenbusState::InitWait {
            return Err(format!(
                "backend {} did not reach InitWait (state {s})",
                p.backend
            ));
        }
        // The script acts on the port by name: it must be this vif's (a `vifname=`
        // taken by another port meanwhile makes the backend refuse the name).
        if self.port_is_foreign(info.domid, devid).await {
            let hp_error = self.read_opt(&format!("{}/hotplug-error", p.backend)).await;
            return Err(hp_error.unwrap_or_else(|| "the vif's name is in use".into()));
        }
        let Some((script, outcome)) = self.run_hotplug(info.domid, devid, "online").await else {
            return Err("backend has no script".into());
        };
        phases.mark("script");
        let status = self
            .read_opt(&format!("{}/hotplug-status", p.backend))
            .await;
        let hp_error = self.read_opt(&format!("{}/hotplug-error", p.backend)).await;
        if !outcome.success() || status.as_deref() != Some("connected") {
            let why = match (&outcome, hp_error) {
                (_, Some(e)) if !e.is_empty() => e,
                (o, _) if !o.success() => o.describe(&script),
                _ => format!(
                    "{} exited without reporting hotplug-status",
                    script.display()
                ),
            };
            // What libxl shows the user; the nodes go with the rollback.
            let _ = self
                .ctl
                .write(0, &format!("{}/hotplug-error", p.backend), why.as_bytes())
                .await;
            let _ = self
                .ctl
                .write(0, &format!("{}/hotplug-status", p.backend), b"error")
                .await;
            return Err(format!("hotplug script failed: {why}"));
        }
        if self.builtin_frontend(info.domid).await {
            let s = self
                .wait_state(&p.backend, CONNECT_TIMEOUT, |s| s == XenbusState::Connected)
                .await;
            phases.mark("connected");
            if s != XenbusState::Connected {
                let fe = self.state_of(&p.frontend).await;
                return Err(format!(
                    "vif did not connect (backend state {s}, frontend state {fe})"
                ));
            }
        }
        Ok(())
    }

    /// Walks a vif back (libxl's device removal): online=0, Closing, wait for Closed,
    /// offline script, then remove every node. `force` skips waiting on a frontend.
    pub(crate) async fn remove_vif(&self, domid: DomId, devid: u32, force: bool) {
        let p = VifPaths::new(domid, devid);
        let vifname = self.read_opt(&format!("{}/vifname", p.backend)).await;
        let port = Self::vif_port_name(domid, devid, vifname.as_deref());
        if self
            .read_opt(&format!("{}/frontend", p.backend))
            .await
            .is_some()
        {
            for _ in 0..10 {
                let Ok(tx) = self.ctl.transaction_start().await else {
                    break;
                };
                let _ = self
                    .ctl
                    .write(tx, &format!("{}/online", p.backend), b"0")
                    .await;
                let st = self
                    .ctl
                    .try_read_string(tx, &format!("{}/state", p.backend))
                    .await
                    .ok()
                    .flatten();
                if st.as_deref() != Some("6") {
                    let _ = self
                        .ctl
                        .write(tx, &format!("{}/state", p.backend), b"5")
                        .await;
                }
                match self.ctl.transaction_end(tx, true).await {
                    Err(XsClientError::Xs(XsError::EAGAIN)) => continue,
                    _ => break,
                }
            }
            let timeout = if force {
                Duration::from_secs(2)
            } else {
                STATE_TIMEOUT
            };
            let s = self
                .wait_state(&p.backend, timeout, |s| s == XenbusState::Closed)
                .await;
            if s != XenbusState::Closed {
                // libxl's forced path: take the frontend away and wait once more.
                warn!("vif{domid}.{devid}: backend stuck in state {s}; removing the frontend");
                let _ = self.ctl.rm(0, &p.frontend).await;
                self.wait_state(&p.backend, Duration::from_secs(2), |s| {
                    s == XenbusState::Closed
                })
                .await;
            }
            if self.port_is_foreign(domid, devid).await {
                // Never run offline on a name this vif did not own: it would detach
                // the port that has it.
                warn!("vif{domid}.{devid}: {port} belongs to another port; offline skipped");
            } else if let Some((script, outcome)) = self.run_hotplug(domid, devid, "offline").await
            {
                if !outcome.success() {
                    warn!("vif{domid}.{devid}: {}", outcome.describe(&script));
                }
            }
        }
        for _ in 0..10 {
            let Ok(tx) = self.ctl.transaction_start().await else {
                break;
            };
            let _ = self.ctl.rm(tx, &p.frontend).await;
            let _ = self.ctl.rm(tx, &p.libxl).await;
            let _ = self.ctl.rm(tx, &p.backend).await;
            // A failed connection's error node (xenbus_dev_fatal) goes with the device.
            let _ = self.ctl.rm(tx, &p.error).await;
            match self.ctl.transaction_end(tx, true).await {
                Err(XsClientError::Xs(XsError::EAGAIN)) => continue,
                _ => break,
            }
        }
        // Static MAC entries on the port went with it in the switch.
        self.forget_static_fdb(None, &port).await;
        // Empty parents go too (libxl leaves no debris).
        for parent in [
            format!("/local/domain/0/backend/vif/{domid}"),
            format!("/local/domain/0/error/backend/vif/{domid}"),
            "/local/domain/0/error/backend/vif".to_string(),
            "/local/domain/0/error/backend".to_string(),
            "/local/domain/0/error".to_string(),
        ] {
            self.rm_if_empty(&parent).await;
        }
    }

    /// `domnet network-detach DOM DEVID|MAC`.
    pub async fn network_detach(&self, dom: &str, which: &str) -> Response {
        let info = match self.xs.lookup_domain(dom.to_string()).await {
            Ok(i) => i,
            Err(e) => return toolstack_error(e),
        };
        let target = match vifspec::parse_detach_target(which) {
            Ok(t) => t,
            Err(e) => return Response::err(ErrorKind::BadInput, e.to_string()),
        };
        let _guard = self.vif_lock(info.domid).await;
        let devids = self.devids(info.domid).await;
        let devid = match target {
            NicSelector::Devid(d) if devids.contains(&d) => d,
            NicSelector::Devid(_) => {
                return Response::err(ErrorKind::BadInput, format!("Unknown device {which}."))
            }
            NicSelector::Mac(mac) => {
                let mut found = None;
                for d in &devids {
                    let m = self
                        .read_opt(&format!("{}/mac", VifPaths::new(info.domid, *d).frontend))
                        .await;
                    if m.as_deref() == Some(&mac.to_string()) {
                        found = Some(*d);
                        break;
                    }
                }
                match found {
                    Some(d) => d,
                    None => {
                        return Response::err(
                            ErrorKind::BadInput,
                            format!("Unknown device {which}."),
                        )
                    }
                }
            }
        };
        self.remove_vif(info.domid, devid, false).await;
        Response::ok(serde_json::json!({ "domain": info.name, "devid": devid }))
    }

    /// One `network-list` row.
    pub(crate) async fn vif_row(&self, domid: DomId, devid: u32) -> VifRow {
        let p = VifPaths::new(domid, devid);
        let num = |v: Option<String>| v.and_then(|s| s.trim().parse::<i64>().ok()).unwrap_or(-1);
        let fe = |k: &str| format!("{}/{k}", p.frontend);
        let vifname = self.read_opt(&format!("{}/vifname", p.backend)).await;
        VifRow {
            idx: devid,
            backend_id: self
                .read_opt(&fe("backend-id"))
                .await
                .and_then(|s| s.parse().ok())
                .unwrap_or(0),
            mac: self.read_opt(&fe("mac")).await.unwrap_or_default(),
            handle: num(self.read_opt(&fe("handle")).await),
            state: num(self.read_opt(&fe("state")).await),
            evtch: num(self.read_opt(&fe("event-channel")).await),
            tx_ring_ref: num(self.read_opt(&fe("tx-ring-ref")).await),
            rx_ring_ref: num(self.read_opt(&fe("rx-ring-ref")).await),
            be_path: p.backend.clone(),
            backend_state: num(self.read_opt(&format!("{}/state", p.backend)).await),
            vif: Self::vif_port_name(domid, devid, vifname.as_deref()),
            bridge: self
                .read_opt(&format!("{}/bridge", p.backend))
                .await
                .unwrap_or_default(),
        }
    }

    /// `domnet network-list DOM…`.
    pub async fn network_list(&self, doms: &[String]) -> Response {
        let mut rows = Vec::new();
        for dom in doms {
            let info = match self.xs.lookup_domain(dom.clone()).await {
                Ok(i) => i,
                Err(e) => return toolstack_error(e),
            };
            for devid in self.devids(info.domid).await {
                rows.push(self.vif_row(info.domid, devid).await);
            }
        }
        Response::ok(rows)
    }
}

/// How long each step of an attach took, for the log line that reports it.
struct AttachPhases {
    last: Instant,
    marks: Vec<(&'static str, Duration)>,
}

impl AttachPhases {
    fn new(start: Instant) -> Self {
        AttachPhases {
            last: start,
            marks: Vec::with_capacity(6),
        }
    }

    /// Ends the step called `name` now.
    fn mark(&mut self, name: &'static str) {
        let now = Instant::now();
        self.marks.push((name, now - self.last));
        self.last = now;
    }
}

impl std::fmt::Display for AttachPhases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (name, d)) in self.marks.iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            write!(f, "{sep}{name} {:.1}", d.as_secs_f64() * 1000.0)?;
        }
        Ok(())
    }
}
