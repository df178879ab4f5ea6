//! `rig down`, `rig clean` and `rig list`: removing a rig leaves nothing — no
//! namespace, no process, no directory — whether it is healthy, half-built or its
//! daemon was killed.
//!
//! Teardown does not walk the daemon through destroying each domain: everything a rig's
//! daemon makes lives in the rig's namespaces (it runs inside dom0's; guests' TAPs are
//! in theirs) or under the rig's directory, so stopping it, ending every process left in
//! those namespaces, deleting them and the directory is complete, and works the same
//! when the daemon is hung or dead. Domains added by hand to a live rig's daemon are
//! found through its domain list, and namespaces named `<rig>-*` that no other rig
//! claims are removed too.

use std::path::PathBuf;

use serde::Serialize;

use crate::control::Request;

use super::daemon;
use super::error::RigError;
use super::names;
use super::state::{self, RigLock, RigState};
use super::sys;
use super::Rig;

/// A rig as `rig list` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct RigStatus {
    /// Its name.
    pub name: String,
    /// Its directory.
    pub dir: PathBuf,
    /// Its daemon's pid.
    pub daemon_pid: Option<u32>,
    /// Whether the daemon runs.
    pub daemon_alive: bool,
    /// `rig up` finished.
    pub complete: bool,
    /// Another command holds its lock (being built or taken down).
    pub busy: bool,
    /// Its domains (short names).
    pub domains: Vec<String>,
    /// The rig file it came from.
    pub source: Option<String>,
    /// When it was made (seconds since the epoch).
    pub created_unix: u64,
}

impl RigStatus {
    /// `up`, `building`, `dead` (daemon gone: `rig clean` removes it).
    pub fn condition(&self) -> &'static str {
        if self.busy {
            "busy"
        } else if self.daemon_alive && self.complete {
            "up"
        } else {
            "dead"
        }
    }
}

/// Every rig under `rigs_dir`.
pub fn list(rigs_dir: &std::path::Path) -> Vec<RigStatus> {
    state::rig_dirs(rigs_dir)
        .into_iter()
        .map(|(name, dir)| {
            let st = RigState::load(&dir).ok();
            let busy = matches!(RigLock::try_acquire(&dir), Ok(None));
            RigStatus {
                daemon_pid: st.as_ref().and_then(|s| s.daemon).map(|d| d.pid),
                daemon_alive: st
                    .as_ref()
                    .and_then(|s| s.daemon)
                    .is_some_and(|d| state::alive(&d)),
                complete: st.as_ref().is_some_and(|s| s.complete),
                domains: st
                    .as_ref()
                    .map(|s| s.plan.domains.iter().map(|d| d.name.clone()).collect())
                    .unwrap_or_default(),
                source: st.as_ref().and_then(|s| s.source.clone()),
                created_unix: st.as_ref().map(|s| s.created_unix).unwrap_or(0),
                busy,
                name,
                dir,
            }
        })
        .collect()
}

/// The namespaces that belong to `rig`: its plan's, the domains its daemon lists (when
/// it answers), and any `<rig>-*` namespace no other rig in `rigs_dir` claims.
fn namespaces_of(rig: &Rig, others: &[String]) -> Vec<String> {
    let mut v = rig.state.plan.namespaces();
    if rig.daemon_alive() {
        if let Ok(data) = daemon::request(&rig.dir, &Request::List, "list") {
            for d in data.as_array().into_iter().flatten() {
                if d["domid"] != 0 {
                    if let Some(n) = d["name"].as_str() {
                        v.push(n.to_string());
                    }
                }
            }
        }
    }
    let prefix = format!("{}-", rig.name());
    for ns in netcfg::netns::NetNs::list().unwrap_or_default() {
        if ns.starts_with(&prefix) && !others.contains(&ns) {
            v.push(ns);
        }
    }
    let mut unique: Vec<String> = Vec::new();
    for n in v {
        if !unique.contains(&n) {
            unique.push(n);
        }
    }
    // Domains first, dom0 (where the daemon lives) last.
    let dom0 = names::ns_name(rig.name(), names::DOM0);
    unique.sort_by_key(|n| *n == dom0);
    unique
}

/// Namespaces claimed by the other rigs of `rigs_dir`.
fn claimed_by_others(rig: &Rig) -> Vec<String> {
    let rigs_dir = rig.dir.parent().map(PathBuf::from).unwrap_or_default();
    state::rig_dirs(&rigs_dir)
        .into_iter()
        .filter(|(n, _)| n != rig.name())
        .filter_map(|(_, d)| RigState::load(&d).ok())
        .flat_map(|s| s.plan.namespaces())
        .collect()
}

/// Removes everything of `rig` (the caller holds its lock): the daemon, every process
/// in its namespaces, the namespaces, `/etc/netns` entries, its directory. Fails
/// listing whatever could not be removed.
pub fn teardown(rig: &mut Rig) -> Result<(), RigError> {
    let others = claimed_by_others(rig);
    let namespaces = namespaces_of(rig, &others);
    if let Some(rec) = rig.state.daemon {
        daemon::stop(&rec, rig.daemon.as_mut());
    }
    rig.daemon = None;
    let mut left = Vec::new();
    for ns in &namespaces {
        sys::end_processes_in(ns);
        if netcfg::netns::NetNs::exists(ns) {
            if let Err(e) = netcfg::netns::NetNs::delete(ns) {
                left.push(format!("namespace {ns}: {e}"));
            }
        }
    }
    for etc in &rig.state.etc_dirs {
        if etc.starts_with("/etc/netns/") {
            if let Err(e) = std::fs::remove_dir_all(etc) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    left.push(format!("{}: {e}", etc.display()));
                }
            }
        }
    }
    if let Err(e) = std::fs::remove_dir_all(&rig.dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            left.push(format!("{}: {e}", rig.dir.display()));
        }
    }
    if left.is_empty() {
        Ok(())
    } else {
        Err(RigError::step(
            format!("taking rig {} down", rig.name()),
            format!("left behind: {}", left.join("; ")),
        ))
    }
}

/// `rig down`: takes the lock and tears down.
pub fn down(rig: &mut Rig) -> Result<(), RigError> {
    sys::require_root()?;
    let Some(_lock) = RigLock::try_acquire(&rig.dir)? else {
        return Err(RigError::Busy(rig.name().to_string()));
    };
    teardown(rig)
}

/// What `rig clean` did with one rig.
#[derive(Debug, Clone, Serialize)]
pub struct CleanOutcome {
    /// The rig.
    pub name: String,
    /// `removed`, `kept (up)`, `kept (busy)` or `failed: …`.
    pub outcome: String,
}

/// `rig clean`: removes every rig under `rigs_dir` whose daemon is dead (or whose
/// `rig up` died half-way), with whatever it left; healthy and busy rigs stay.
pub fn clean(rigs_dir: &std::path::Path) -> Result<Vec<CleanOutcome>, RigError> {
    sys::require_root()?;
    let mut out = Vec::new();
    for (name, dir) in state::rig_dirs(rigs_dir) {
        let Some(lock) = RigLock::try_acquire(&dir)? else {
            out.push(CleanOutcome {
                name,
                outcome: "kept (busy)".into(),
            });
            continue;
        };
        let st = match RigState::load(&dir) {
            Ok(s) => s,
            Err(_) => {
                // No usable record: only the names every rig has can be known.
                let mut left = Vec::new();
                for host in [names::DOM0, names::OUTSIDE] {
                    let ns = names::ns_name(&name, host);
                    if netcfg::netns::NetNs::exists(&ns) {
                        sys::end_processes_in(&ns);
                        if let Err(e) = netcfg::netns::NetNs::delete(&ns) {
                            left.push(format!("{ns}: {e}"));
                        }
                    }
                }
                if let Err(e) = std::fs::remove_dir_all(&dir) {
                    left.push(format!("{}: {e}", dir.display()));
                }
                drop(lock);
                out.push(CleanOutcome {
                    name,
                    outcome: if left.is_empty() {
                        "removed (no record)".into()
                    } else {
                        format!("failed: {}", left.join("; "))
                    },
                });
                continue;
            }
        };
        let alive = st.daemon.as_ref().is_some_and(state::alive);
        if alive && st.complete {
            out.push(CleanOutcome {
                name,
                outcome: "kept (up)".into(),
            });
            continue;
        }
        let mut rig = Rig {
            dir,
            state: st,
            daemon: None,
        };
        let outcome = match teardown(&mut rig) {
            Ok(()) => "removed".to_string(),
            Err(e) => format!("failed: {e}"),
        };
        drop(lock);
        out.push(CleanOutcome { name, outcome });
    }
    Ok(out)
}
