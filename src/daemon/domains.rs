//! Domains: `create`, `destroy`, and bringing them back after a restart.
//!
//! A domain is a hypervisor object (registry entry, memory, event channels, xenstore
//! tree — the hypervisor crate) plus a network namespace named after it, in which its
//! vifs appear as eth0, eth1, …

use hypervisor::domain::DomainRequest;
use netcfg::netns::NetNs;
use tracing::{info, warn};

use super::{row, toolstack_error, Daemon};
use crate::control::{ErrorKind, Response};

impl Daemon {
    /// `domnet create CFG`.
    pub async fn create(&self, text: &str, path: &str) -> Response {
        let parsed = match netcfg::xlcfg::parse_xl_cfg(text) {
            Ok(p) => p,
            Err(e) => return Response::err(ErrorKind::BadInput, format!("{path}: {e}")),
        };
        let cfg = match netcfg::xlcfg::domain_config(&parsed, &mut rand::thread_rng()) {
            Ok(c) => c,
            Err(e) => return Response::err(ErrorKind::BadInput, format!("{path}: {e}")),
        };
        let warnings: Vec<String> = cfg
            .warnings
            .iter()
            .map(|w| format!("{path}: {w}"))
            .collect();
        for w in &warnings {
            warn!("{w}");
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
        info!(
            "domain {} ({}) created with its namespace",
            info.domid, info.name
        );
        Response::ok(row(&info, 0.0)).with_warnings(warnings)
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
        let info = match self.xs.destroy_domain(info.domid.to_string()).await {
            Ok(i) => i,
            Err(e) => return toolstack_error(e),
        };
        if NetNs::exists(&info.name) {
            if let Err(e) = NetNs::delete(&info.name) {
                warn!("destroy {}: deleting its namespace: {e}", info.name);
            }
        }
        Response::ok(row(&info, 0.0))
    }

    /// After a restart: every domain in the registry gets its namespace back (it usually
    /// survived the daemon; a reboot loses it).
    pub async fn restore_domains(&self) {
        let Ok(domains) = self.xs.list_domains().await else {
            return;
        };
        for d in domains.iter().filter(|d| d.domid != 0) {
            if !NetNs::exists(&d.name) {
                match NetNs::create(&d.name) {
                    Ok(_) => info!("domain {}: namespace recreated", d.name),
                    Err(e) => warn!("domain {}: cannot recreate its namespace: {e}", d.name),
                }
            }
        }
    }
}
