//! Hotplug scripts a killed daemon left behind.
//!
//! Scripts run in their own process group, so a `kill -9` of the daemon leaves a
//! running one orphaned. Left alone it would go on after the restart and write into
//! the tree the new daemon is restoring (`hotplug-status` of a vif that was rolled
//! back, a port for a device that no longer exists). A restarted daemon therefore
//! kills them before it restores anything: they are recognised by the environment the
//! daemon gives its scripts (`XENBUS_PATH`, and `DOMNET_RUN_DIR` naming this run
//! directory), which their own children inherit.

use std::path::Path;

use tracing::warn;

/// Whether a process environment (the NUL-separated `KEY=VALUE` list of
/// `/proc/<pid>/environ`) is that of a hotplug script, or a child of one, run by the
/// daemon of `run_dir`.
pub fn is_hotplug_of(environ: &[u8], run_dir: &str) -> bool {
    let mut xenbus = false;
    let mut ours = false;
    for var in environ.split(|b| *b == 0) {
        if var.starts_with(b"XENBUS_PATH=") {
            xenbus = true;
        } else if let Some(dir) = var.strip_prefix(b"DOMNET_RUN_DIR=") {
            ours = dir == run_dir.as_bytes();
        }
    }
    xenbus && ours
}

/// Kills (SIGKILL) every process that [`is_hotplug_of`] this run directory; returns
/// how many.
pub fn kill_leftover_hotplug(run_dir: &Path) -> usize {
    let run_dir = run_dir.display().to_string();
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut killed = 0;
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        if !is_hotplug_of(&env, &run_dir) {
            continue;
        }
        let Ok(raw) = i32::try_from(pid) else {
            continue;
        };
        // SAFETY: kill(2) has no memory-safety preconditions; the pid was just seen
        // carrying our run directory's hotplug environment.
        if unsafe { libc::kill(raw, libc::SIGKILL) } == 0 {
            killed += 1;
        } else {
            warn!(
                "cannot kill leftover hotplug process {pid}: {}",
                std::io::Error::last_os_error()
            );
        }
    }
    killed
}

#[cfg(test)]
mod tests {
    use super::is_hotplug_of;

    #[test]
    fn needs_both_the_xenbus_path_and_this_run_dir() {
        let env = b"PATH=/bin\0XENBUS_PATH=backend/vif/3/0\0DOMNET_RUN_DIR=/run/domnet\0";
        assert!(is_hotplug_of(env, "/run/domnet"));
        assert!(
            !is_hotplug_of(env, "/run/domnet2"),
            "another daemon's script"
        );
        assert!(!is_hotplug_of(
            b"XENBUS_PATH=backend/vif/3/0\0DOMNET_RUN_DIR=/run/domnet/x\0",
            "/run/domnet"
        ));
        assert!(
            !is_hotplug_of(b"DOMNET_RUN_DIR=/run/domnet\0", "/run/domnet"),
            "the CLI run by hand"
        );
        assert!(!is_hotplug_of(b"", "/run/domnet"));
    }

    #[test]
    fn odd_environments_are_not_scripts() {
        for env in [
            &b"\0\0\0"[..],
            b"XENBUS_PATH",
            b"DOMNET_RUN_DIR=/run/domnet",
            b"=XENBUS_PATH=x\0DOMNET_RUN_DIR=/run/domnet",
            b"\xff\xfe\0XENBUS_PATH=\0",
        ] {
            assert!(!is_hotplug_of(env, "/run/domnet"), "{env:?}");
        }
    }
}
