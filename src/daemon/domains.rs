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

use super::vifs::VifPaths;
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

    /// After a restart: every domain gets its namespace (usually it survived the
    /// daemon), its frontend driver and its vifs back. A vif is restored by walking the
    /// handshake again from Initialising with the recorded spec: new rings in the new
    /// guest memory, the same MAC, and the guest's persistent `eth<N>` (with its
    /// addresses and routes) re-attached.
    pub async fn restore_domains(self: Arc<Self>) {
        let Ok(domains) = self.xs.list_domains().await else {
            return;
        };
        for d in domains.into_iter().filter(|d| d.domid != 0) {
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
                for devid in me.devids(d.domid).await {
                    me.restore_vif(&d, devid).await;
                }
            });
        }
    }

    async fn restore_vif(&self, info: &DomainInfo, devid: u32) {
        let p = VifPaths::new(info.domid, devid);
        let reset = async {
            let tx = self.ctl.transaction_start().await?;
            self.ctl
                .write(tx, &format!("{}/online", p.backend), b"1")
                .await?;
            self.ctl
                .write(tx, &format!("{}/state", p.backend), b"1")
                .await?;
            self.ctl
                .write(tx, &format!("{}/hotplug-status", p.backend), b"")
                .await?;
            let _ = self
                .ctl
                .rm(tx, &format!("{}/hotplug-error", p.backend))
                .await;
            self.ctl
                .write(tx, &format!("{}/state", p.frontend), b"1")
                .await?;
            self.ctl.transaction_end(tx, true).await
        };
        if let Err(e) = reset.await {
            warn!("vif{}.{devid}: cannot reset for restore: {e}", info.domid);
            return;
        }
        match self.restart_vif(info, devid).await {
            Ok(()) => info!("vif{}.{devid} of {} restored", info.domid, info.name),
            Err(e) => warn!(
                "vif{}.{devid} of {} not restored: {e}",
                info.domid, info.name
            ),
        }
    }
}
