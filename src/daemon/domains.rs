//! Domains: `create`, `destroy`, and bringing them back after a restart.
//!
//! A domain is a hypervisor object (registry entry, memory, event channels, xenstore
//! tree — the hypervisor crate) plus a network namespace named after it, in which its
//! vifs appear as eth0, eth1, … (eth<devid>). Unless the config says
//! `vif_frontend = "external"`, the daemon runs the domain's netfront itself.

use std::sync::Arc;

use hypervisor::domain::{DomainInfo, DomainRequest};
use netcfg::netns::NetNs;
use netcfg::xlcfg::Value;
use tracing::{info, warn};

use super::frontend::delete_guest_tap;
use super::vifs::{VifPaths, ATTACH_PENDING};
use super::{row, toolstack_error, Daemon};
use crate::control::{ErrorKind, Response};

/// The domnet extension key choosing the frontend.
const FRONTEND_KEY: &str = "vif_frontend";

impl Daemon {
    /// `domnet create CFG`.
    pub async fn create(self: &Arc<Self>, text: &str, path: &str) -> Response {
        let parsed = match netcfg::xlcfg::parse_xl_cfg(text) {
            Ok(p) => p,
            Err(e) => return Response::err(ErrorKind::BadInput, format!("{path}: {e}")),
        };
        let external = match parsed.get(FRONTEND_KEY) {
            None => false,
            Some(Value::Str(s)) if s == "builtin" => false,
            Some(Value::Str(s)) if s == "external" => true,
            Some(other) => {
                return Response::err(
                    ErrorKind::BadInput,
                    format!("{path}: key `{FRONTEND_KEY}` = {other:?}: expected \"builtin\" or \"external\""),
                )
            }
        };
        let mut cfg = match netcfg::xlcfg::domain_config(&parsed, &mut rand::thread_rng()) {
            Ok(c) => c,
            Err(e) => return Response::err(ErrorKind::BadInput, format!("{path}: {e}")),
        };
        let warnings: Vec<String> = cfg
            .warnings
            .iter()
            .filter(|w| !w.contains(FRONTEND_KEY))
            .map(|w| format!("{path}: {w}"))
            .collect();
        for w in &warnings {
            warn!("{w}");
        }
        let defaults = netcfg::vifspec::VifDefaults {
            script_dir: self.script_dir(),
            ..Default::default()
        };
        for (i, v) in cfg.vifs.iter_mut().enumerate() {
            if let Err(e) = v.fill_defaults(&defaults, &mut rand::thread_rng()) {
                return Response::err(ErrorKind::BadInput, format!("{path}: vif {i}: {e}"))
                    .with_warnings(warnings);
            }
        }
        if NetNs::exists(&cfg.name) {
            return Response::err(
                ErrorKind::Failed,
                format!(
                    "network namespace `{}` already exists (a leftover? `ip netns del {}`)",
                    cfg.name, cfg.name
                ),
            )
            .with_warnings(warnings);
        }
        let req = DomainRequest {
            name: cfg.name.clone(),
            uuid: cfg.uuid.clone(),
            memory_mib: cfg.memory_mib,
            vcpus: cfg.vcpus,
            domid: cfg.domid,
            max_grant_frames: cfg.max_grant_frames,
        };
        let info = match self.xs.create_domain(req).await {
            Ok(info) => info,
            Err(e) => return toolstack_error(e).with_warnings(warnings),
        };
        if let Err(e) = NetNs::create(&info.name) {
            let _ = self.xs.destroy_domain(info.domid.to_string()).await;
            return Response::err(
                ErrorKind::Failed,
                format!("creating network namespace `{}`: {e}", info.name),
            )
            .with_warnings(warnings);
        }
        self.open_hvsock(info.domid);
        if external {
            let _ = self
                .ctl
                .write(
                    0,
                    &format!("/libxl/{}/domnet-frontend", info.domid),
                    b"external",
                )
                .await;
        } else {
            tokio::spawn(Arc::clone(self).run_frontend_driver(info.clone()));
        }
        // Devices, in devid order; any failure fails the create (xl destroys the domain).
        let _guard = self.vif_lock(info.domid).await;
        for spec in &cfg.vifs {
            if let Err(e) = self.attach_vif(&info, spec).await {
                drop(_guard);
                self.teardown_domain(&info).await;
                return Response::err(
                    ErrorKind::Failed,
                    format!("{path}: vif {}: {e}", spec.devid.unwrap_or(0)),
                )
                .with_warnings(warnings);
            }
        }
        info!("domain {} ({}) created", info.domid, info.name);
        Response::ok(row(&info, 0.0)).with_warnings(warnings)
    }

    /// Detaches every vif, destroys the hypervisor domain and deletes its namespace.
    async fn teardown_domain(&self, info: &DomainInfo) -> Option<DomainInfo> {
        {
            let _guard = self.vif_lock(info.domid).await;
            for devid in self.devids(info.domid).await {
                self.remove_vif(info.domid, devid, true).await;
            }
        }
        self.close_hvsock(info.domid);
        let gone = self.xs.destroy_domain(info.domid.to_string()).await.ok();
        if NetNs::exists(&info.name) {
            if let Err(e) = NetNs::delete(&info.name) {
                warn!("destroy {}: deleting its namespace: {e}", info.name);
            }
        }
        gone
    }

    /// `domnet destroy DOM`.
    pub async fn destroy(&self, dom: &str) -> Response {
        let info = match self.xs.lookup_domain(dom.to_string()).await {
            Ok(i) => i,
            Err(e) => return toolstack_error(e),
        };
        if info.domid == 0 {
            return Response::err(ErrorKind::BadInput, "dom0 cannot be destroyed");
        }
        match self.teardown_domain(&info).await {
            Some(i) => Response::ok(row(&i, 0.0)),
            None => Response::err(
                ErrorKind::Failed,
                format!("destroying domain {}", info.name),
            ),
        }
    }

    /// After a restart, before the backend and frontend drivers run: decides what
    /// becomes of every recorded vif ([`VifRecovery`]) and resets its XenBus states
    /// accordingly, so no driver ever acts on the dead daemon's states (rings that no
    /// longer exist). A vif to restore goes back to Initialising on both ends with an
    /// empty `hotplug-status`; one to remove goes offline and Closed on both ends.
    pub async fn prepare_restore(&self) -> Vec<(DomainInfo, Vec<(u32, VifRecovery)>)> {
        let Ok(domains) = self.xs.list_domains().await else {
            return Vec::new();
        };
        let mut plan = Vec::new();
        for d in domains.into_iter().filter(|d| d.domid != 0) {
            let mut vifs = Vec::new();
            for devid in self.devids(d.domid).await {
                let p = VifPaths::new(d.domid, devid);
                let read =
                    |k: String| async move { self.ctl.try_read_string(0, &k).await.ok().flatten() };
                let what = VifRecovery::decide(
                    read(format!("{}/{ATTACH_PENDING}", p.libxl))
                        .await
                        .is_some(),
                    read(format!("{}/online", p.backend)).await.as_deref(),
                );
                if let Err(e) = self.reset_vif_states(&p, what).await {
                    warn!("vif{}.{devid}: cannot reset its states: {e}", d.domid);
                }
                vifs.push((devid, what));
            }
            plan.push((d, vifs));
        }
        // Backend directories of domains with no vif left (a removal cut short).
        for dom in self
            .ctl
            .directory(0, "/local/domain/0/backend/vif")
            .await
            .unwrap_or_default()
        {
            let dir = format!("/local/domain/0/backend/vif/{dom}");
            if self
                .ctl
                .directory(0, &dir)
                .await
                .is_ok_and(|c| c.is_empty())
            {
                let _ = self.ctl.rm(0, &dir).await;
            }
        }
        plan
    }

    async fn reset_vif_states(
        &self,
        p: &VifPaths,
        what: VifRecovery,
    ) -> Result<(), hypervisor::xenstored::XsClientError> {
        let (online, state): (&[u8], &[u8]) = match what {
            VifRecovery::Restore => (b"1", b"1"),
            VifRecovery::RollBack | VifRecovery::FinishDetach => (b"0", b"6"),
        };
        for _ in 0..10 {
            let tx = self.ctl.transaction_start().await?;
            let r: Result<(), hypervisor::xenstored::XsClientError> = async {
                let exists = |path: String| async move {
                    self.ctl
                        .try_read_string(tx, &path)
                        .await
                        .ok()
                        .flatten()
                        .is_some()
                };
                if exists(format!("{}/frontend", p.backend)).await {
                    self.ctl
                        .write(tx, &format!("{}/online", p.backend), online)
                        .await?;
                    self.ctl
                        .write(tx, &format!("{}/state", p.backend), state)
                        .await?;
                    if what == VifRecovery::Restore {
                        self.ctl
                            .write(tx, &format!("{}/hotplug-status", p.backend), b"")
                            .await?;
                        let _ = self
                            .ctl
                            .rm(tx, &format!("{}/hotplug-error", p.backend))
                            .await;
                    }
                }
                if exists(format!("{}/state", p.frontend)).await {
                    self.ctl
                        .write(tx, &format!("{}/state", p.frontend), state)
                        .await?;
                }
                // A connection error of the dead daemon's rings is no longer true.
                let _ = self.ctl.rm(tx, &p.error).await;
                Ok(())
            }
            .await;
            if let Err(e) = r {
                let _ = self.ctl.transaction_end(tx, false).await;
                return Err(e);
            }
            match self.ctl.transaction_end(tx, true).await {
                Err(hypervisor::xenstored::XsClientError::Xs(
                    hypervisor::xenstore::wire::XsError::EAGAIN,
                )) => continue,
                other => return other,
            }
        }
        Ok(())
    }

    /// After a restart (and [`Daemon::prepare_restore`]): every domain gets its
    /// namespace (usually it survived the daemon), its frontend driver and its vifs
    /// back. A vif is restored by walking the handshake again with its recorded keys:
    /// new rings in the new guest memory, the same MAC, and the guest's persistent
    /// `eth<N>` (with its addresses and routes) re-attached. An interrupted attach is
    /// rolled back and an interrupted detach finished, as a failed attach and a detach
    /// are: nothing of them is left.
    pub async fn restore_domains(
        self: Arc<Self>,
        plan: Vec<(DomainInfo, Vec<(u32, VifRecovery)>)>,
    ) {
        for (d, vifs) in plan {
            if !NetNs::exists(&d.name) {
                match NetNs::create(&d.name) {
                    Ok(_) => info!("domain {}: namespace recreated", d.name),
                    Err(e) => warn!("domain {}: cannot recreate its namespace: {e}", d.name),
                }
            }
            self.open_hvsock(d.domid);
            if self.builtin_frontend(d.domid).await {
                tokio::spawn(Arc::clone(&self).run_frontend_driver(d.clone()));
            }
            let me = Arc::clone(&self);
            tokio::spawn(async move {
                let _guard = me.vif_lock(d.domid).await;
                for (devid, what) in vifs {
                    me.recover_vif(&d, devid, what).await;
                }
            });
        }
    }

    async fn recover_vif(&self, info: &DomainInfo, devid: u32, what: VifRecovery) {
        let vif = format!("vif{}.{devid} of {}", info.domid, info.name);
        match what {
            VifRecovery::Restore => match self.restart_vif(info, devid).await {
                Ok(()) => info!("{vif} restored"),
                Err(e) => warn!("{vif} not restored: {e}"),
            },
            VifRecovery::RollBack | VifRecovery::FinishDetach => {
                self.remove_vif(info.domid, devid, true).await;
                delete_guest_tap(&info.name, devid);
                if what == VifRecovery::RollBack {
                    warn!("{vif}: its attach was interrupted by the restart; rolled back");
                } else {
                    info!("{vif}: its interrupted detach is finished");
                }
            }
        }
    }
}

/// What a restarted daemon does with a vif it finds recorded, decided from xenstore
/// alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VifRecovery {
    /// Acknowledged and not being removed: walk the handshake again.
    Restore,
    /// The attach was never acknowledged (the daemon died during it): undo it, as a
    /// failed attach is undone.
    RollBack,
    /// A detach (or a rollback) had started — `online` is 0: finish it.
    FinishDetach,
}

impl VifRecovery {
    /// The rule: an attach still marked pending is rolled back; a vif its backend was
    /// told to leave (`online` = 0, libxl's first step of removal) is removed; every
    /// other vif is restored.
    pub fn decide(attach_pending: bool, online: Option<&str>) -> VifRecovery {
        if attach_pending {
            VifRecovery::RollBack
        } else if online == Some("0") {
            VifRecovery::FinishDetach
        } else {
            VifRecovery::Restore
        }
    }
}

#[cfg(test)]
mod tests {
    use super::VifRecovery;

    #[test]
    fn pending_attaches_roll_back_and_started_detaches_finish() {
        assert_eq!(VifRecovery::decide(true, Some("1")), VifRecovery::RollBack);
        assert_eq!(VifRecovery::decide(true, Some("0")), VifRecovery::RollBack);
        assert_eq!(VifRecovery::decide(true, None), VifRecovery::RollBack);
        assert_eq!(
            VifRecovery::decide(false, Some("0")),
            VifRecovery::FinishDetach
        );
        assert_eq!(VifRecovery::decide(false, Some("1")), VifRecovery::Restore);
        // A backend without `online` (written by an older daemon) is restored.
        assert_eq!(VifRecovery::decide(false, None), VifRecovery::Restore);
    }
}
