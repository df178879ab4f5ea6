//! The vif hotplug script runner (xen-networking.md §6.1, libxl's device hotplug).
//!
//! A script is run as `<script> online|offline type_if=vif` with Xen's environment
//! (`XENBUS_PATH` relative, `XENBUS_TYPE`, `XENBUS_BASE_PATH`, `netdev`, `vif`,
//! `script`) plus `XENSTORED_PATH`, so Xen's own helpers (`xenstore-read`,
//! `xenstore-write`) reach domnet's xenstored from inside the script. It runs in its
//! own process group; on timeout the whole group is killed. Its stderr is kept (tail)
//! for the error message and appended to a log file.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncReadExt;

use hypervisor::DomId;

/// libxl's hotplug timeout (`LIBXL_HOTPLUG_TIMEOUT`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(40);

/// Most stderr kept for the error message.
const STDERR_TAIL: usize = 4096;

/// One script invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HotplugCall {
    /// The executable.
    pub script: PathBuf,
    /// `online`, `offline`, `add` or `remove`.
    pub command: String,
    /// Environment in addition to the daemon's.
    pub env: Vec<(String, String)>,
}

/// What the environment of a vif script holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VifEnv {
    /// Frontend domain.
    pub domid: DomId,
    /// Device id.
    pub devid: u32,
    /// The backend port's name (`vif<D>.<N>` or `vifname`).
    pub vif: String,
    /// `gatewaydev` (vif-route's `netdev`), or empty.
    pub netdev: String,
    /// dom0's xenstore socket.
    pub xenstored_path: PathBuf,
    /// Extra variables (e.g. `DOMNET`, `DOMNET_RUN_DIR` for scripts calling the CLI).
    pub extra: Vec<(String, String)>,
}

impl HotplugCall {
    /// The call libxl makes for a PV vif: `<script> <command> type_if=vif` with Xen's
    /// variables.
    pub fn vif(script: &Path, command: &str, env: &VifEnv) -> HotplugCall {
        let mut vars = vec![
            ("script".to_string(), script.display().to_string()),
            ("XENBUS_TYPE".into(), "vif".into()),
            (
                "XENBUS_PATH".into(),
                format!("backend/vif/{}/{}", env.domid, env.devid),
            ),
            ("XENBUS_BASE_PATH".into(), "backend".into()),
            ("netdev".into(), env.netdev.clone()),
            ("vif".into(), env.vif.clone()),
            (
                "XENSTORED_PATH".into(),
                env.xenstored_path.display().to_string(),
            ),
        ];
        vars.extend(env.extra.iter().cloned());
        HotplugCall {
            script: script.to_path_buf(),
            command: command.to_string(),
            env: vars,
        }
    }
}

/// How a script run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HotplugOutcome {
    /// It exited (status code, or -signal) with this stderr tail.
    Exited {
        /// Exit code (negative: killed by that signal).
        code: i32,
        /// Last bytes of its stderr.
        stderr: String,
    },
    /// It ran past the timeout and its process group was killed.
    TimedOut {
        /// Last bytes of its stderr.
        stderr: String,
    },
    /// It could not be started.
    SpawnFailed(String),
}

impl HotplugOutcome {
    /// Exit 0.
    pub fn success(&self) -> bool {
        matches!(self, HotplugOutcome::Exited { code: 0, .. })
    }

    /// A one-line description for `hotplug-error` and logs.
    pub fn describe(&self, script: &Path) -> String {
        let tail = |s: &str| {
            let t = s.trim();
            if t.is_empty() {
                String::new()
            } else {
                format!(": {}", t.lines().last().unwrap_or(t))
            }
        };
        match self {
            HotplugOutcome::Exited { code, stderr } => {
                format!(
                    "{} exited with status {code}{}",
                    script.display(),
                    tail(stderr)
                )
            }
            HotplugOutcome::TimedOut { stderr } => {
                format!(
                    "{} timed out and was killed{}",
                    script.display(),
                    tail(stderr)
                )
            }
            HotplugOutcome::SpawnFailed(e) => format!("cannot run {}: {e}", script.display()),
        }
    }
}

/// Runs a hotplug script with a timeout, in its own process group (killed whole on
/// timeout). Stderr is returned (tail) and appended to `log` when given.
pub async fn run(call: &HotplugCall, timeout: Duration, log: Option<&Path>) -> HotplugOutcome {
    let mut cmd = tokio::process::Command::new(&call.script);
    cmd.arg(&call.command)
        .arg("type_if=vif")
        .envs(call.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return HotplugOutcome::SpawnFailed(e.to_string()),
    };
    let pgid = child.id().map(|p| p as i32);
    let mut stderr_pipe = child.stderr.take();
    let collect = async move {
        let mut buf = Vec::new();
        if let Some(p) = stderr_pipe.as_mut() {
            let _ = p.read_to_end(&mut buf).await;
        }
        buf
    };
    let waited = tokio::time::timeout(timeout, async {
        let (status, err) = tokio::join!(child.wait(), collect);
        (status, err)
    })
    .await;
    let outcome = match waited {
        Ok((status, err)) => {
            let stderr = tail(&err);
            let code = match status {
                Ok(s) => s.code().unwrap_or_else(|| {
                    -std::os::unix::process::ExitStatusExt::signal(&s).unwrap_or(0)
                }),
                Err(e) => return HotplugOutcome::SpawnFailed(e.to_string()),
            };
            HotplugOutcome::Exited { code, stderr }
        }
        Err(_) => {
            if let Some(pgid) = pgid {
                // SAFETY: kill(2) of the script's own process group (it was started
                // with process_group(0), so its pgid is its pid).
                unsafe { libc::kill(-pgid, libc::SIGKILL) };
            }
            HotplugOutcome::TimedOut {
                stderr: String::new(),
            }
        }
    };
    if let Some(log) = log {
        append_log(log, call, &outcome);
    }
    outcome
}

fn tail(buf: &[u8]) -> String {
    let start = buf.len().saturating_sub(STDERR_TAIL);
    String::from_utf8_lossy(&buf[start..]).into_owned()
}

fn append_log(log: &Path, call: &HotplugCall, outcome: &HotplugOutcome) {
    use std::io::Write;
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
    {
        let vif = call
            .env
            .iter()
            .find(|(k, _)| k == "vif")
            .map(|(_, v)| v.as_str())
            .unwrap_or("?");
        let _ = writeln!(
            f,
            "{} {} {vif}: {}",
            call.script.display(),
            call.command,
            outcome.describe(&call.script)
        );
        if let HotplugOutcome::Exited { stderr, .. } | HotplugOutcome::TimedOut { stderr } = outcome
        {
            if !stderr.trim().is_empty() {
                let _ = writeln!(f, "{}", stderr.trim_end());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    fn env() -> VifEnv {
        VifEnv {
            domid: 7,
            devid: 1,
            vif: "vif7.1".into(),
            netdev: String::new(),
            xenstored_path: "/run/x/socket".into(),
            extra: vec![("DOMNET".into(), "/bin/domnet".into())],
        }
    }

    #[tokio::test]
    async fn passes_xens_arguments_and_environment() {
        let dir = std::env::temp_dir().join(format!("hp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("out");
        let s = script(
            &dir,
            "vif-test",
            &format!("echo \"$1 $2 $XENBUS_PATH $XENBUS_TYPE $XENBUS_BASE_PATH $vif [$netdev] $XENSTORED_PATH $DOMNET $script\" > {}", out.display()),
        );
        let r = run(
            &HotplugCall::vif(&s, "online", &env()),
            Duration::from_secs(5),
            None,
        )
        .await;
        assert!(r.success(), "{r:?}");
        let got = std::fs::read_to_string(&out).unwrap();
        assert_eq!(
            got.trim(),
            format!("online type_if=vif backend/vif/7/1 vif backend vif7.1 [] /run/x/socket /bin/domnet {}", s.display())
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn failure_and_timeout_are_reported_and_the_group_is_killed() {
        let dir = std::env::temp_dir().join(format!("hp2-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fail = script(&dir, "fail", "echo 'bridge xenbr7 missing' >&2; exit 3");
        let r = run(
            &HotplugCall::vif(&fail, "online", &env()),
            Duration::from_secs(5),
            None,
        )
        .await;
        assert_eq!(
            r,
            HotplugOutcome::Exited {
                code: 3,
                stderr: "bridge xenbr7 missing\n".into()
            }
        );
        assert!(r.describe(&fail).contains("bridge xenbr7 missing"));
        // A hanging script with a child of its own: both die at the timeout.
        let pidfile = dir.join("child.pid");
        let hang = script(
            &dir,
            "hang",
            &format!("sleep 300 & echo $! > {}; wait", pidfile.display()),
        );
        let log = dir.join("hotplug.log");
        let r = run(
            &HotplugCall::vif(&hang, "online", &env()),
            Duration::from_millis(300),
            Some(&log),
        )
        .await;
        assert!(matches!(r, HotplugOutcome::TimedOut { .. }), "{r:?}");
        let child: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        std::thread::sleep(Duration::from_millis(100));
        // Killed children may linger as zombies until init reaps them: dead either way.
        let alive = std::fs::read_to_string(format!("/proc/{child}/stat"))
            .map(|st| {
                !st.rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('Z')
            })
            .unwrap_or(false);
        assert!(!alive, "the script's child survived the timeout");
        assert!(std::fs::read_to_string(&log).unwrap().contains("timed out"));
        let missing = run(
            &HotplugCall::vif(Path::new("/nonexistent/script"), "online", &env()),
            Duration::from_secs(1),
            None,
        )
        .await;
        assert!(matches!(missing, HotplugOutcome::SpawnFailed(_)));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
