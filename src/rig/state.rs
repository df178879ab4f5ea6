//! A rig's record on disk (`<rigs dir>/<rig>/rig.json`) and its lock.
//!
//! The record is written before anything is created (the plan: every namespace the rig
//! will own) and rewritten as things come up (the daemon's pid, each domain's ports and
//! addresses), so `rig down` and `rig clean` find everything even when `rig up` died
//! half-way. The lock (`flock` on `<rig>/lock`) is held by whoever is building or
//! tearing down the rig, so `rig clean` leaves a rig under construction alone.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::addr::IfAddr;
use super::error::RigError;
use super::plan::RigPlan;

/// The record's file name.
pub const STATE_FILE: &str = "rig.json";
const LOCK_FILE: &str = "lock";

/// What exists of a rig.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RigState {
    /// The plan it was built from.
    pub plan: RigPlan,
    /// The rig file, for `rig list`.
    pub source: Option<String>,
    /// When `rig up` started (seconds since the epoch).
    pub created_unix: u64,
    /// The rig's daemon once started.
    pub daemon: Option<ProcessRecord>,
    /// Domains created so far.
    pub hosts: Vec<HostRecord>,
    /// `/etc/netns/<ns>` directories made for dhclient's resolv.conf.
    pub etc_dirs: Vec<PathBuf>,
    /// `rig up` finished.
    pub complete: bool,
}

/// A process, identified beyond its pid (which the kernel reuses) by its start time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessRecord {
    /// Its pid.
    pub pid: u32,
    /// Field 22 of `/proc/<pid>/stat` (clock ticks after boot).
    pub start_ticks: u64,
}

/// A domain as created.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostRecord {
    /// Short name.
    pub name: String,
    /// Domain id.
    pub domid: u16,
    /// Its vifs.
    pub vifs: Vec<VifRecord>,
}

/// A vif as created and configured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VifRecord {
    /// devid.
    pub devid: u32,
    /// Guest interface.
    pub ifname: String,
    /// Backend port in the switch (`vif<domid>.<devid>`).
    pub port: String,
    /// MAC.
    pub mac: String,
    /// IPv4 addresses the guest holds on it.
    pub addresses: Vec<IfAddr>,
}

impl RigState {
    /// A fresh record for `plan`.
    pub fn new(plan: RigPlan, source: Option<String>, now_unix: u64) -> RigState {
        RigState {
            plan,
            source,
            created_unix: now_unix,
            daemon: None,
            hosts: Vec::new(),
            etc_dirs: Vec::new(),
            complete: false,
        }
    }

    /// Reads the record in rig directory `dir`.
    pub fn load(dir: &Path) -> Result<RigState, RigError> {
        let path = dir.join(STATE_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| RigError::io(&path, e))?;
        serde_json::from_str(&text).map_err(|e| {
            RigError::io(
                &path,
                std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            )
        })
    }

    /// Writes the record (a new file renamed over the old, so a crash leaves one whole).
    pub fn save(&self, dir: &Path) -> Result<(), RigError> {
        let path = dir.join(STATE_FILE);
        let tmp = dir.join(format!("{STATE_FILE}.tmp"));
        let data = serde_json::to_vec_pretty(self)
            .map_err(|e| RigError::io(&path, std::io::Error::other(e)))?;
        std::fs::write(&tmp, data).map_err(|e| RigError::io(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| RigError::io(&path, e))
    }

    /// The record of domain `name`.
    pub fn host(&self, name: &str) -> Option<&HostRecord> {
        self.hosts.iter().find(|h| h.name == name)
    }
}

/// An exclusive lock on a rig directory, released on drop.
#[derive(Debug)]
pub struct RigLock {
    _file: File,
}

impl RigLock {
    /// Takes the lock of rig directory `dir` without waiting; `Ok(None)` when someone
    /// else holds it.
    pub fn try_acquire(dir: &Path) -> Result<Option<RigLock>, RigError> {
        let path = dir.join(LOCK_FILE);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| RigError::io(&path, e))?;
        // SAFETY: flock on an fd we own; non-blocking.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            return if e.kind() == std::io::ErrorKind::WouldBlock {
                Ok(None)
            } else {
                Err(RigError::io(&path, e))
            };
        }
        Ok(Some(RigLock { _file: file }))
    }
}

/// Reads `(state letter, start time)` from the text of `/proc/<pid>/stat`: the fields
/// after the command name (which is in parentheses and may itself hold `)` and spaces).
pub fn parse_proc_stat(text: &str) -> Option<(char, u64)> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); starttime is field 22.
    let state = fields.first()?.chars().next()?;
    let start = fields.get(22 - 3)?.parse().ok()?;
    Some((state, start))
}

/// The record of a running process `pid`, if there is one.
pub fn process_record(pid: u32) -> Option<ProcessRecord> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, start_ticks) = parse_proc_stat(&text)?;
    Some(ProcessRecord { pid, start_ticks })
}

/// Whether the process of `rec` still runs: same pid, same start time, not a zombie.
pub fn alive(rec: &ProcessRecord) -> bool {
    std::fs::read_to_string(format!("/proc/{}/stat", rec.pid))
        .ok()
        .and_then(|t| parse_proc_stat(&t))
        .is_some_and(|(state, start)| start == rec.start_ticks && state != 'Z' && state != 'X')
}

/// The rig directories under `rigs_dir` (each holding a record or not), sorted.
pub fn rig_dirs(rigs_dir: &Path) -> Vec<(String, PathBuf)> {
    let mut v: Vec<(String, PathBuf)> = std::fs::read_dir(rigs_dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
                .filter_map(|e| Some((e.file_name().to_str()?.to_string(), e.path())))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_fields() {
        let line =
            "4242 (domnet) d) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 5 0 987654 1000 10";
        assert_eq!(parse_proc_stat(line), Some(('S', 987654)));
        assert_eq!(parse_proc_stat("12 (x) Z 1"), None);
        assert_eq!(parse_proc_stat("garbage"), None);
    }

    #[test]
    fn this_process_is_alive_and_a_changed_start_is_not() {
        let me = process_record(std::process::id()).unwrap();
        assert!(alive(&me));
        assert!(!alive(&ProcessRecord {
            start_ticks: me.start_ticks + 1,
            ..me
        }));
    }

    #[test]
    fn record_round_trips_and_lock_excludes() {
        let dir = std::env::temp_dir().join(format!("domnet-rigstate-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let plan = super::super::plan::plan(&super::super::spec::parse("").unwrap(), "x").unwrap();
        let mut st = RigState::new(plan, Some("f.toml".into()), 7);
        st.hosts.push(HostRecord {
            name: "a".into(),
            domid: 3,
            vifs: vec![VifRecord {
                devid: 0,
                ifname: "eth0".into(),
                port: "vif3.0".into(),
                mac: "00:16:3e:00:00:01".into(),
                addresses: vec!["10.0.0.1/24".parse().unwrap()],
            }],
        });
        st.save(&dir).unwrap();
        assert_eq!(RigState::load(&dir).unwrap(), st);
        let l = RigLock::try_acquire(&dir).unwrap();
        assert!(l.is_some());
        assert!(RigLock::try_acquire(&dir).unwrap().is_none());
        drop(l);
        assert!(RigLock::try_acquire(&dir).unwrap().is_some());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
