//! The shell around the rig: running `ip` and programs inside namespaces, finding and
//! ending the processes that live in a namespace, root. Nothing here decides anything.

use std::os::unix::fs::MetadataExt;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::error::RigError;

/// Whether the process runs as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Fails with [`RigError::NotRoot`] unless root.
pub fn require_root() -> Result<(), RigError> {
    if is_root() {
        Ok(())
    } else {
        Err(RigError::NotRoot)
    }
}

/// A command that runs `argv` inside namespace `ns` (`ip netns exec`, which also
/// bind-mounts `/etc/netns/<ns>/*` over `/etc`, so a guest's resolv.conf is its own).
pub fn in_ns<S: AsRef<std::ffi::OsStr>>(ns: &str, argv: &[S]) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns]);
    c.args(argv);
    c
}

/// Output of a finished command, or the failure worded with `what` and its stderr.
pub fn run(mut cmd: Command, what: &str) -> Result<Output, RigError> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| RigError::step(what, format!("cannot run {:?}: {e}", cmd.get_program())))?;
    if !out.status.success() {
        let mut msg = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if msg.is_empty() {
            msg = String::from_utf8_lossy(&out.stdout).trim().to_string();
        }
        return Err(RigError::step(
            what,
            format!(
                "{} ({})",
                if msg.is_empty() { "failed" } else { &msg },
                out.status
            ),
        ));
    }
    Ok(out)
}

/// `ip ARGS`, failing with its stderr.
pub fn ip(args: &[&str], what: &str) -> Result<String, RigError> {
    let mut c = Command::new("ip");
    c.args(args);
    run(c, what).map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
}

/// `sh -c SCRIPT` inside namespace `ns`, failing with its stderr.
pub fn sh_in(ns: &str, script: &str, what: &str) -> Result<String, RigError> {
    run(in_ns(ns, &["sh", "-c", script]), what)
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
}

/// Whether a program is on PATH.
pub fn have_tool(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
}

/// Fails naming the package when `tool` is missing.
pub fn require_tool(tool: &str, package: &str) -> Result<(), RigError> {
    if have_tool(tool) {
        Ok(())
    } else {
        Err(RigError::step(
            format!("looking for {tool}"),
            format!("`{tool}` is not installed (Debian: apt-get install {package})"),
        ))
    }
}

/// The pids of every process whose network namespace is the named namespace `ns`
/// (what `ip netns pids` lists), this process excepted.
pub fn pids_in_netns(ns: &str) -> Vec<u32> {
    let Ok(target) = std::fs::metadata(netcfg::netns::netns_path(ns)) else {
        return Vec::new();
    };
    let me = std::process::id();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me)
        .filter(|pid| {
            std::fs::metadata(format!("/proc/{pid}/ns/net"))
                .is_ok_and(|m| m.ino() == target.ino() && m.dev() == target.dev())
        })
        .collect()
}

/// Sends `signal` to `pid` (errors ignored: it may have gone already).
pub fn kill(pid: u32, signal: i32) {
    if let Ok(p) = i32::try_from(pid) {
        if p > 0 {
            // SAFETY: kill(2) with a positive pid; no memory involved.
            unsafe { libc::kill(p, signal) };
        }
    }
}

/// Polls `done` every 20 ms until it holds or `timeout` passes; the last answer.
pub fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < timeout {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    done()
}

/// Whether process `pid` has ended (gone, or a zombie waiting for its parent).
fn ended(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|t| super::state::parse_proc_stat(&t))
        .is_none_or(|(state, _)| state == 'Z' || state == 'X')
}

/// Ends every process in namespace `ns`: SIGTERM, a moment's grace, then SIGKILL; and
/// waits (up to 5 s) until each has really exited, not merely left the namespace on
/// its way out.
pub fn end_processes_in(ns: &str) {
    let mut pids = pids_in_netns(ns);
    if pids.is_empty() {
        return;
    }
    for &p in &pids {
        kill(p, libc::SIGTERM);
    }
    if !wait_until(Duration::from_millis(1000), || {
        pids.iter().all(|&p| ended(p)) && pids_in_netns(ns).is_empty()
    }) {
        pids.extend(pids_in_netns(ns));
        for &p in &pids {
            kill(p, libc::SIGKILL);
        }
        wait_until(Duration::from_secs(5), || {
            pids.iter().all(|&p| ended(p)) && pids_in_netns(ns).is_empty()
        });
    }
}
