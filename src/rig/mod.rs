//! Test rigs: a whole Xen-style network — dom0 and its bridges, NAT networks, routed
//! and bridged domains, an outside LAN — described in one TOML file, built in seconds
//! on a private daemon, exercised (`exec`, `pingall`, `iperf`) and removed without a
//! trace. What mininet does for OpenFlow switches, for domnet.
//!
//! Each rig `R` runs its own daemon inside its own dom0 namespace `R-dom0` (run and
//! state directories under `<rigs dir>/R/`), so rigs never touch the host's networking
//! and several run side by side; its domains are `R-<name>` (each domain's namespace is
//! named after it), the outside is `R-outside`. Users type the short names.
//!
//! Modules: [`spec`] (the file as written), [`plan`] (checked and resolved, pure),
//! [`reach`] (who should reach whom, pure), [`output`] (reading tools' output, pure),
//! [`report`] (tables), [`build`] (`up`), [`teardown`] (`down`, `clean`), [`probe`]
//! (`exec`, `ping`, `pingall`, `iperf`), [`state`] (the record on disk), [`cli`]
//! (the verbs).

pub mod addr;
pub mod build;
pub mod cli;
mod daemon;
pub mod error;
pub mod interrupt;
pub mod names;
pub mod output;
pub mod plan;
pub mod probe;
pub mod reach;
pub mod report;
pub mod spec;
pub mod state;
mod sys;
pub mod teardown;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};

pub use error::RigError;
pub use plan::RigPlan;
pub use state::RigState;

/// Where a rig's pieces come from.
#[derive(Debug, Clone)]
pub struct RigOptions {
    /// The `domnet` binary the rig's daemon runs.
    pub domnet: PathBuf,
    /// The directory holding rig directories.
    pub rigs_dir: PathBuf,
}

impl RigOptions {
    /// This executable and the rigs directory of [`names::rigs_dir`].
    pub fn from_env() -> Result<RigOptions, RigError> {
        let domnet = std::env::current_exe().map_err(|e| RigError::io("/proc/self/exe", e))?;
        Ok(RigOptions {
            domnet,
            rigs_dir: names::rigs_dir(),
        })
    }
}

/// Reads and checks a rig file: its plan, under `override_name` if given.
pub fn load_file(path: &Path, override_name: Option<&str>) -> Result<RigPlan, RigError> {
    let text = std::fs::read_to_string(path).map_err(|e| RigError::io(path, e))?;
    load_text(
        &text,
        &path.display().to_string(),
        Some(path),
        override_name,
    )
}

/// Checks rig file text (`label` names it in messages).
pub fn load_text(
    text: &str,
    label: &str,
    path: Option<&Path>,
    override_name: Option<&str>,
) -> Result<RigPlan, RigError> {
    let file = spec::parse(text).map_err(|message| RigError::Syntax {
        path: label.to_string(),
        message,
    })?;
    let invalid = |source| RigError::Invalid {
        path: label.to_string(),
        source,
    };
    let name = plan::resolve_name(&file, override_name, path).map_err(invalid)?;
    plan::plan(&file, &name).map_err(invalid)
}

/// A rig that is up (or was, if its daemon died).
#[derive(Debug)]
pub struct Rig {
    dir: PathBuf,
    state: RigState,
    /// The daemon, when this process started it (so it can be reaped).
    daemon: Option<Child>,
}

impl Rig {
    /// Opens rig `name`; with `None`, the only rig that is up.
    pub fn open(rigs_dir: &Path, name: Option<&str>) -> Result<Rig, RigError> {
        let name = match name {
            Some(n) => n.to_string(),
            None => {
                let up: Vec<String> = teardown::list(rigs_dir)
                    .into_iter()
                    .filter(|r| r.daemon_alive)
                    .map(|r| r.name)
                    .collect();
                match up.as_slice() {
                    [one] => one.clone(),
                    [] => {
                        return Err(RigError::WhichRig(
                            "no rig is up (domnet rig up FILE.toml)".into(),
                        ))
                    }
                    many => {
                        return Err(RigError::WhichRig(format!(
                            "several rigs are up ({}): say which with --rig NAME",
                            many.join(", ")
                        )))
                    }
                }
            }
        };
        names::validate_rig_name(&name).map_err(|_| RigError::NoSuchRig(name.clone()))?;
        let dir = names::rig_dir(rigs_dir, &name);
        let state = match RigState::load(&dir) {
            Ok(s) => s,
            Err(RigError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                return Err(RigError::NoSuchRig(name))
            }
            Err(e) => return Err(e),
        };
        Ok(Rig {
            dir,
            state,
            daemon: None,
        })
    }

    /// The rig's name.
    pub fn name(&self) -> &str {
        &self.state.plan.name
    }

    /// Its plan.
    pub fn plan(&self) -> &RigPlan {
        &self.state.plan
    }

    /// Its record.
    pub fn state(&self) -> &RigState {
        &self.state
    }

    /// Its directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Its daemon's run directory (`DOMNET_RUN_DIR` for the other verbs).
    pub fn run_dir(&self) -> PathBuf {
        daemon::run_dir(&self.dir)
    }

    /// The domain name (in the daemon) of short name `host`.
    pub fn domain_name(&self, host: &str) -> String {
        names::ns_name(self.name(), host)
    }

    /// Every host name: the domains, `dom0`, and `outside` if there is one.
    pub fn host_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.plan().domains.iter().map(|d| d.name.clone()).collect();
        v.push(names::DOM0.into());
        if self.plan().outside.is_some() {
            v.push(names::OUTSIDE.into());
        }
        v
    }

    /// The network namespace of `host` (a domain's short name, `dom0` or `outside`).
    pub fn ns(&self, host: &str) -> Result<String, RigError> {
        if self.host_names().iter().any(|h| h == host) {
            Ok(names::ns_name(self.name(), host))
        } else {
            Err(RigError::NoSuchHost {
                rig: self.name().to_string(),
                host: host.to_string(),
                known: self.host_names().join(", "),
            })
        }
    }

    /// A command running `argv` in `host`'s namespace.
    pub fn command<S: AsRef<std::ffi::OsStr>>(
        &self,
        host: &str,
        argv: &[S],
    ) -> Result<Command, RigError> {
        Ok(sys::in_ns(&self.ns(host)?, argv))
    }

    /// Runs `sh -c script` in `host`, failing with its stderr; its stdout.
    pub fn sh(&self, host: &str, script: &str) -> Result<String, RigError> {
        sys::sh_in(&self.ns(host)?, script, &format!("[{host}] {script}"))
    }

    /// Whether the rig's daemon runs.
    pub fn daemon_alive(&self) -> bool {
        self.state.daemon.as_ref().is_some_and(state::alive)
    }

    /// The pid of the rig's daemon.
    pub fn daemon_pid(&self) -> Option<u32> {
        self.state.daemon.map(|d| d.pid)
    }

    /// Tears the rig down completely (see [`teardown`]).
    pub fn down(mut self) -> Result<(), RigError> {
        teardown::down(&mut self)
    }
}

/// Takes a rig down when dropped (tests, the demo: even when they fail or panic).
#[derive(Debug)]
pub struct RigGuard(Option<Rig>);

impl RigGuard {
    /// Guards `rig`.
    pub fn new(rig: Rig) -> RigGuard {
        RigGuard(Some(rig))
    }

    /// Takes the rig down now, reporting the outcome.
    pub fn down(mut self) -> Result<(), RigError> {
        match self.0.take() {
            Some(r) => r.down(),
            None => Ok(()),
        }
    }
}

impl std::ops::Deref for RigGuard {
    type Target = Rig;
    fn deref(&self) -> &Rig {
        // The Option is only emptied by `down`, which consumes the guard.
        self.0
            .as_ref()
            .unwrap_or_else(|| unreachable!("guard emptied"))
    }
}

impl Drop for RigGuard {
    fn drop(&mut self) {
        if let Some(r) = self.0.take() {
            if let Err(e) = r.down() {
                eprintln!("domnet rig: taking the rig down: {e}");
            }
        }
    }
}
