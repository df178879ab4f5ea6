//! A rig's own daemon: `domnet daemon --netns <rig>-dom0` with its run and state
//! directories under the rig's directory, in a session of its own (so a Ctrl-C aimed at
//! `rig up` does not kill it, and it outlives `rig up`), and the control calls to it.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::control::{self, Request};

use super::error::RigError;
use super::state::{self, ProcessRecord};

/// Its run directory (sockets).
pub fn run_dir(rig_dir: &Path) -> PathBuf {
    rig_dir.join("run")
}

/// Its state directory (journal).
pub fn state_dir(rig_dir: &Path) -> PathBuf {
    rig_dir.join("state")
}

/// Its log.
pub fn log_path(rig_dir: &Path) -> PathBuf {
    rig_dir.join("daemon.log")
}

/// How long a hotplug script may run in a rig.
const HOTPLUG_TIMEOUT_S: &str = "20";

/// The last lines of the daemon's log, for error messages.
pub fn log_tail(rig_dir: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(log_path(rig_dir)).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Starts the daemon in namespace `dom0_ns` and waits until it answers.
pub fn spawn(
    domnet: &Path,
    dom0_ns: &str,
    rig_dir: &Path,
) -> Result<(Child, ProcessRecord), RigError> {
    let log_file = log_path(rig_dir);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_file)
        .map_err(|e| RigError::io(&log_file, e))?;
    let mut cmd = Command::new(domnet);
    cmd.args(["daemon", "--netns", dom0_ns, "--run-dir"])
        .arg(run_dir(rig_dir))
        .arg("--state-dir")
        .arg(state_dir(rig_dir))
        .args(["--hotplug-timeout", HOTPLUG_TIMEOUT_S])
        .env_remove("DOMNET_RUN_DIR")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    if std::env::var_os("DOMNET_LOG").is_none() {
        cmd.env("DOMNET_LOG", "info");
    }
    // SAFETY: setsid(2) is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|e| {
        RigError::step(
            "starting the rig's daemon",
            format!("{}: {e}", domnet.display()),
        )
    })?;
    let rec = state::process_record(child.id()).unwrap_or(ProcessRecord {
        pid: child.id(),
        start_ticks: 0,
    });
    let run = run_dir(rig_dir);
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(30) {
        if control::call(&run, &Request::List).is_ok() {
            return Ok((child, rec));
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(RigError::step(
                "starting the rig's daemon",
                format!("it exited with {status}:\n{}", log_tail(rig_dir, 10)),
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(RigError::step(
        "starting the rig's daemon",
        format!("no answer within 30 s:\n{}", log_tail(rig_dir, 10)),
    ))
}

/// Sends `req` to the rig's daemon; its data, or the daemon's error worded with `step`.
pub fn request(rig_dir: &Path, req: &Request, step: &str) -> Result<serde_json::Value, RigError> {
    match control::call(&run_dir(rig_dir), req) {
        Ok(r) if r.ok => Ok(r.data),
        Ok(r) => Err(RigError::step(
            step,
            r.error.unwrap_or_else(|| "refused".into()),
        )),
        Err(e) => Err(RigError::step(step, e)),
    }
}

/// Stops the daemon: SIGTERM, up to 5 s to finish, then SIGKILL; reaps it when it is
/// our child.
pub fn stop(rec: &ProcessRecord, child: Option<&mut Child>) {
    if state::alive(rec) {
        super::sys::kill(rec.pid, libc::SIGTERM);
        if !super::sys::wait_until(Duration::from_secs(5), || !state::alive(rec)) {
            super::sys::kill(rec.pid, libc::SIGKILL);
            super::sys::wait_until(Duration::from_secs(2), || !state::alive(rec));
        }
    }
    if let Some(c) = child {
        let _ = c.wait();
    }
}
