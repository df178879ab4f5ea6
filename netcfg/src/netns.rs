//! Named network namespaces, compatible with iproute2's `ip netns`.
//!
//! iproute2 names a namespace by bind-mounting its `nsfs` file onto `/run/netns/NAME`
//! (`ip/ipnetns.c`, `netns_add`): it makes `/run/netns` a shared mount point (bind-mounting
//! the directory on itself first if needed) so the bind mounts propagate to other mount
//! namespaces, creates an empty file `/run/netns/NAME`, `unshare(CLONE_NEWNET)`s and binds
//! its own `ns/net` onto the file. `ip netns delete` lazily unmounts and unlinks it. This
//! module does the same, except that the unsharing happens on a short-lived dedicated thread
//! (`/proc/self/task/<tid>/ns/net`), so the caller's threads never change namespace.
//!
//! [`NetNs::run`] runs a closure on a fresh thread that has `setns()`-ed into the namespace;
//! sockets and TAP fds opened there stay bound to the namespace after the thread ends.

use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

/// Directory where iproute2 keeps named network namespaces (`NETNS_RUN_DIR`).
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// Failure to create, open, enter or delete a network namespace.
#[derive(Debug, thiserror::Error)]
pub enum NetNsError {
    /// The name cannot be a file name under `/run/netns` (iproute2's `is_valid_netns_name`:
    /// non-empty, at most 255 bytes, no `/`, not `.` or `..`).
    #[error("invalid network namespace name {name:?}: {reason}")]
    InvalidName {
        /// The rejected name.
        name: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// `ip netns add` refuses an existing name; so do we.
    #[error("network namespace {0:?} already exists")]
    Exists(String),
    /// No `/run/netns/NAME`.
    #[error("network namespace {0:?} does not exist")]
    NotFound(String),
    /// A system call failed.
    #[error("{op} {target}: {source}")]
    Io {
        /// What was being done (`"unshare"`, `"mount"`, ...).
        op: &'static str,
        /// The path or namespace concerned.
        target: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

impl NetNsError {
    fn io(op: &'static str, target: impl Into<String>, source: io::Error) -> Self {
        NetNsError::Io {
            op,
            target: target.into(),
            source,
        }
    }
}

/// Checks a namespace name the way iproute2 does before using it as a file name.
pub fn validate_name(name: &str) -> Result<(), NetNsError> {
    let reason = if name.is_empty() {
        Some("empty")
    } else if name.len() > 255 {
        Some("longer than 255 bytes")
    } else if name.contains('/') {
        Some("contains '/'")
    } else if name == "." || name == ".." {
        Some("is '.' or '..'")
    } else if name.contains('\0') {
        Some("contains NUL")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(NetNsError::InvalidName {
            name: name.to_string(),
            reason,
        }),
        None => Ok(()),
    }
}

/// Path of the bind mount that names namespace `name`.
pub fn netns_path(name: &str) -> PathBuf {
    Path::new(NETNS_RUN_DIR).join(name)
}

/// An open network namespace (an `nsfs` fd), optionally with its iproute2 name.
#[derive(Debug)]
pub struct NetNs {
    fd: OwnedFd,
    name: Option<String>,
}

fn cstring(p: &Path) -> Result<CString, NetNsError> {
    CString::new(p.as_os_str().as_encoded_bytes()).map_err(|_| NetNsError::InvalidName {
        name: p.display().to_string(),
        reason: "contains NUL",
    })
}

fn last_os_error(op: &'static str, target: impl Into<String>) -> NetNsError {
    NetNsError::io(op, target, io::Error::last_os_error())
}

/// Serialises the "make /run/netns a shared mount point" step inside this process, so two
/// threads creating namespaces at once do not stack two bind mounts.
static RUN_DIR_MOUNT: Mutex<()> = Mutex::new(());

/// Makes `/run/netns` exist and be a shared mount point, as iproute2 does: try
/// `MS_SHARED|MS_REC` on it; if that fails with `EINVAL` (not a mount point), bind-mount the
/// directory onto itself and try again, once. A mutex (threads) and an `flock` on the
/// directory (other processes, e.g. parallel test binaries) keep two creators from stacking
/// two bind mounts.
fn ensure_run_dir_shared() -> Result<(), NetNsError> {
    let _guard = RUN_DIR_MOUNT.lock().unwrap_or_else(|p| p.into_inner());
    match fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(NETNS_RUN_DIR)
    {
        Ok(()) => {}
        Err(e) => return Err(NetNsError::io("mkdir", NETNS_RUN_DIR, e)),
    }
    let dir_fd = File::open(NETNS_RUN_DIR).map_err(|e| NetNsError::io("open", NETNS_RUN_DIR, e))?;
    // SAFETY: dir_fd is an open fd; the lock is released when it is closed at return.
    if unsafe { libc::flock(dir_fd.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(last_os_error("flock", NETNS_RUN_DIR));
    }
    let dir = cstring(Path::new(NETNS_RUN_DIR))?;
    let none = c"none";
    let empty = c"";
    let mut made_mount_point = false;
    loop {
        // SAFETY: all pointers are valid NUL-terminated strings for the call's duration;
        // data is NULL, which mount(2) accepts.
        let rc = unsafe {
            libc::mount(
                empty.as_ptr(),
                dir.as_ptr(),
                none.as_ptr(),
                libc::MS_SHARED | libc::MS_REC,
                std::ptr::null(),
            )
        };
        if rc == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINVAL) || made_mount_point {
            return Err(NetNsError::io("mount --make-rshared", NETNS_RUN_DIR, err));
        }
        // SAFETY: as above; MS_BIND|MS_REC of a directory onto itself.
        let rc = unsafe {
            libc::mount(
                dir.as_ptr(),
                dir.as_ptr(),
                none.as_ptr(),
                libc::MS_BIND | libc::MS_REC,
                std::ptr::null(),
            )
        };
        if rc != 0 {
            return Err(last_os_error("mount --rbind", NETNS_RUN_DIR));
        }
        made_mount_point = true;
    }
}

fn gettid() -> libc::pid_t {
    // SAFETY: gettid has no arguments and cannot fail.
    unsafe { libc::gettid() }
}

/// `unshare(CLONE_NEWNET)` on the calling thread, then bind-mount the thread's new
/// namespace onto `target`. Runs on a dedicated thread that exits right after.
fn unshare_and_bind(target: &Path) -> Result<(), NetNsError> {
    // SAFETY: unshare only changes the calling thread's namespace membership; this thread
    // is dedicated to it and ends right after.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(last_os_error(
            "unshare(CLONE_NEWNET)",
            target.display().to_string(),
        ));
    }
    let source = cstring(Path::new(&format!("/proc/self/task/{}/ns/net", gettid())))?;
    let dest = cstring(target)?;
    let none = c"none";
    // SAFETY: valid NUL-terminated strings; data NULL.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            dest.as_ptr(),
            none.as_ptr(),
            libc::MS_BIND,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(last_os_error("bind mount", target.display().to_string()));
    }
    Ok(())
}

fn open_nsfs(path: &Path) -> io::Result<OwnedFd> {
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)?;
    Ok(OwnedFd::from(f))
}

impl NetNs {
    /// Creates the named namespace `/run/netns/NAME` (`ip netns add NAME`) and opens it.
    pub fn create(name: &str) -> Result<NetNs, NetNsError> {
        validate_name(name)?;
        ensure_run_dir_shared()?;
        let path = netns_path(name);
        match OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o000)
            .open(&path)
        {
            Ok(f) => drop(f),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(NetNsError::Exists(name.to_string()))
            }
            Err(e) => return Err(NetNsError::io("create", path.display().to_string(), e)),
        }
        let bound = std::thread::scope(|s| {
            let worker = std::thread::Builder::new()
                .name("netns-create".into())
                .spawn_scoped(s, || unshare_and_bind(&path));
            match worker {
                Ok(h) => h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)),
                Err(e) => Err(NetNsError::io("spawn thread for", name, e)),
            }
        });
        if let Err(e) = bound {
            let _ = fs::remove_file(&path);
            return Err(e);
        }
        let fd =
            open_nsfs(&path).map_err(|e| NetNsError::io("open", path.display().to_string(), e))?;
        Ok(NetNs {
            fd,
            name: Some(name.to_string()),
        })
    }

    /// Opens the existing named namespace `/run/netns/NAME`.
    pub fn open(name: &str) -> Result<NetNs, NetNsError> {
        validate_name(name)?;
        let path = netns_path(name);
        match open_nsfs(&path) {
            Ok(fd) => Ok(NetNs {
                fd,
                name: Some(name.to_string()),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(NetNsError::NotFound(name.to_string()))
            }
            Err(e) => Err(NetNsError::io("open", path.display().to_string(), e)),
        }
    }

    /// Opens a namespace by an nsfs path such as `/proc/<pid>/ns/net`.
    pub fn open_path(path: &Path) -> Result<NetNs, NetNsError> {
        let fd =
            open_nsfs(path).map_err(|e| NetNsError::io("open", path.display().to_string(), e))?;
        Ok(NetNs { fd, name: None })
    }

    /// The network namespace of the calling thread (`/proc/thread-self/ns/net`).
    pub fn current() -> Result<NetNs, NetNsError> {
        let path = format!("/proc/self/task/{}/ns/net", gettid());
        Self::open_path(Path::new(&path))
    }

    /// Deletes the named namespace (`ip netns delete NAME`): lazy unmount, then unlink. The
    /// namespace itself lives on while any fd, socket or process still holds it.
    pub fn delete(name: &str) -> Result<(), NetNsError> {
        validate_name(name)?;
        let path = netns_path(name);
        let c = cstring(&path)?;
        // SAFETY: valid NUL-terminated path. A failure (e.g. EINVAL: not mounted) is
        // ignored, as iproute2 does; unlink below reports a missing name.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(NetNsError::NotFound(name.to_string()))
            }
            Err(e) => Err(NetNsError::io("unlink", path.display().to_string(), e)),
        }
    }

    /// Names of the namespaces in `/run/netns` (`ip netns list`), sorted.
    pub fn list() -> Result<Vec<String>, NetNsError> {
        let entries = match fs::read_dir(NETNS_RUN_DIR) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(NetNsError::io("read", NETNS_RUN_DIR, e)),
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| NetNsError::io("read", NETNS_RUN_DIR, e))?;
            if let Some(n) = entry.file_name().to_str() {
                names.push(n.to_string());
            }
        }
        names.sort();
        Ok(names)
    }

    /// Whether `/run/netns/NAME` exists.
    pub fn exists(name: &str) -> bool {
        validate_name(name).is_ok() && netns_path(name).exists()
    }

    /// The iproute2 name, if this namespace was opened or created by name.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// Identity of the namespace: the nsfs inode number (what `ip netns identify` compares).
    pub fn inode(&self) -> Result<u64, NetNsError> {
        let f = File::from(
            self.fd
                .try_clone()
                .map_err(|e| NetNsError::io("dup", self.label(), e))?,
        );
        let m = f
            .metadata()
            .map_err(|e| NetNsError::io("fstat", self.label(), e))?;
        Ok(m.ino())
    }

    /// Whether two handles refer to the same namespace.
    pub fn same_as(&self, other: &NetNs) -> Result<bool, NetNsError> {
        Ok(self.inode()? == other.inode()?)
    }

    /// A second handle to the same namespace.
    pub fn try_clone(&self) -> Result<NetNs, NetNsError> {
        Ok(NetNs {
            fd: self
                .fd
                .try_clone()
                .map_err(|e| NetNsError::io("dup", self.label(), e))?,
            name: self.name.clone(),
        })
    }

    fn label(&self) -> String {
        match &self.name {
            Some(n) => format!("netns {n}"),
            None => format!("netns fd {}", self.fd.as_raw_fd()),
        }
    }

    /// Runs `f` on a new thread that has entered this namespace and returns its result.
    /// The caller's thread never changes namespace; a panic in `f` is re-raised here.
    /// Anything `f` opens (netlink sockets, TAP fds, AF_PACKET sockets) stays bound to
    /// the namespace after the thread is gone.
    pub fn run<F, T>(&self, f: F) -> Result<T, NetNsError>
    where
        F: FnOnce() -> T + Send,
        T: Send,
    {
        let fd = self.fd.as_fd();
        std::thread::scope(|s| {
            let worker = std::thread::Builder::new()
                .name("netns-run".into())
                .spawn_scoped(s, move || {
                    // SAFETY: fd is a valid nsfs fd borrowed for the scope; setns only
                    // changes this (dedicated) thread's network namespace.
                    if unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                        return Err(io::Error::last_os_error());
                    }
                    Ok(f())
                });
            let handle = worker.map_err(|e| NetNsError::io("spawn thread for", self.label(), e))?;
            match handle.join() {
                Ok(r) => r.map_err(|e| NetNsError::io("setns", self.label(), e)),
                Err(p) => std::panic::resume_unwind(p),
            }
        })
    }
}

impl AsFd for NetNs {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// A uniquely named namespace (`PREFIX-<pid>-<n>`) that is deleted when dropped, even
/// during a panic — for tests and throw-away rigs that must leave nothing behind.
#[derive(Debug)]
pub struct ScratchNetNs {
    ns: NetNs,
    name: String,
}

static SCRATCH_SEQ: AtomicU32 = AtomicU32::new(0);

impl ScratchNetNs {
    /// Deletes `PREFIX-<pid>-<n>` namespaces whose process `<pid>` no longer exists
    /// (left behind by a test run that was killed); returns their names.
    pub fn reap_stale(prefix: &str) -> Result<Vec<String>, NetNsError> {
        let mut reaped = Vec::new();
        for name in NetNs::list()? {
            let Some(rest) = name.strip_prefix(prefix).and_then(|r| r.strip_prefix('-')) else {
                continue;
            };
            let Some(Ok(pid)) = rest.split('-').next().map(str::parse::<u32>) else {
                continue;
            };
            if !Path::new(&format!("/proc/{pid}")).exists() {
                NetNs::delete(&name)?;
                reaped.push(name);
            }
        }
        Ok(reaped)
    }

    /// Creates `PREFIX-<pid>-<n>` with a process-wide counter `n`.
    pub fn new(prefix: &str) -> Result<ScratchNetNs, NetNsError> {
        let n = SCRATCH_SEQ.fetch_add(1, Ordering::Relaxed);
        let name = format!("{prefix}-{}-{n}", std::process::id());
        let ns = NetNs::create(&name)?;
        Ok(ScratchNetNs { ns, name })
    }

    /// The generated name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl std::ops::Deref for ScratchNetNs {
    type Target = NetNs;
    fn deref(&self) -> &NetNs {
        &self.ns
    }
}

impl Drop for ScratchNetNs {
    fn drop(&mut self) {
        if let Err(e) = NetNs::delete(&self.name) {
            tracing::warn!("deleting scratch namespace {}: {e}", self.name);
        }
    }
}

/// Helpers for tests that need root and a scratch namespace.
#[cfg(test)]
pub(crate) mod testing {
    use super::ScratchNetNs;

    /// Fails the test loudly unless running as root: privileged tests never skip silently.
    pub(crate) fn require_root() {
        // SAFETY: geteuid cannot fail.
        let euid = unsafe { libc::geteuid() };
        assert_eq!(
            euid, 0,
            "this test needs root (CAP_SYS_ADMIN + CAP_NET_ADMIN) to create network namespaces; \
             run `cargo test -p netcfg` as root"
        );
    }

    /// A fresh `dnt-<pid>-<n>` namespace, deleted on drop. Namespaces of killed earlier
    /// runs are reaped first.
    pub(crate) fn scratch() -> ScratchNetNs {
        require_root();
        let _ = ScratchNetNs::reap_stale("dnt");
        ScratchNetNs::new("dnt").expect("creating a scratch namespace")
    }

    /// Runs `ip ARGS...` inside the namespace and returns stdout (test oracle only).
    pub(crate) fn ip_in(ns: &ScratchNetNs, args: &[&str]) -> String {
        let out = std::process::Command::new("ip")
            .args(["-n", ns.name()])
            .args(args)
            .output()
            .expect("running ip");
        assert!(
            out.status.success(),
            "ip {:?} failed: {}",
            args,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 from ip")
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;

    #[test]
    fn names_are_validated_like_iproute2() {
        assert!(validate_name("dom1").is_ok());
        for bad in ["", ".", "..", "a/b", &"x".repeat(256)] {
            assert!(matches!(
                validate_name(bad),
                Err(NetNsError::InvalidName { .. })
            ));
        }
        assert_eq!(netns_path("d1"), Path::new("/run/netns/d1"));
    }

    #[test]
    fn create_is_visible_to_iproute2_and_delete_removes_it() {
        let ns = scratch();
        assert!(NetNs::list().unwrap().contains(&ns.name().to_string()));
        let listed = std::process::Command::new("ip")
            .args(["netns", "list"])
            .output()
            .unwrap();
        assert!(String::from_utf8_lossy(&listed.stdout).contains(ns.name()));
        // `ip netns exec` works: the namespace has only a loopback device.
        let links = ip_in(&ns, &["-o", "link"]);
        assert_eq!(links.lines().count(), 1, "{links}");
        assert!(links.contains("lo:"));
        // It is a different namespace from ours, and reopening by name finds the same one.
        let here = NetNs::current().unwrap();
        assert!(!ns.same_as(&here).unwrap());
        let again = NetNs::open(ns.name()).unwrap();
        assert!(ns.same_as(&again).unwrap());
        assert!(matches!(
            NetNs::create(ns.name()),
            Err(NetNsError::Exists(_))
        ));
        let name = ns.name().to_string();
        drop(ns);
        assert!(!NetNs::exists(&name));
        assert!(matches!(NetNs::open(&name), Err(NetNsError::NotFound(_))));
        assert!(matches!(NetNs::delete(&name), Err(NetNsError::NotFound(_))));
    }

    #[test]
    fn run_dir_is_a_shared_mount_point() {
        let _ns = scratch();
        let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
        let line = info
            .lines()
            .find(|l| l.split(' ').nth(4) == Some(NETNS_RUN_DIR))
            .expect("/run/netns is a mount point");
        assert!(line.contains("shared:"), "{line}");
    }

    #[test]
    fn run_enters_the_namespace_without_moving_the_caller() {
        let ns = scratch();
        let before = NetNs::current().unwrap().inode().unwrap();
        let inside = ns
            .run(|| NetNs::current().unwrap().inode().unwrap())
            .unwrap();
        assert_eq!(inside, ns.inode().unwrap());
        assert_ne!(inside, before);
        assert_eq!(NetNs::current().unwrap().inode().unwrap(), before);
    }

    #[test]
    fn scratch_namespace_is_deleted_after_a_panic() {
        require_root();
        let name = std::sync::Mutex::new(String::new());
        let r = std::panic::catch_unwind(|| {
            let ns = scratch();
            *name.lock().unwrap() = ns.name().to_string();
            panic!("test panic");
        });
        assert!(r.is_err());
        let name = name.into_inner().unwrap();
        assert!(!name.is_empty());
        assert!(!NetNs::exists(&name));
    }

    #[test]
    fn stale_scratch_namespaces_of_dead_processes_are_reaped() {
        require_root();
        // pid_max is at most 2^22, so this pid cannot be alive.
        let dead = "dntreap-99999999-0";
        drop(NetNs::create(dead).unwrap());
        let live = ScratchNetNs::new("dntreap").unwrap();
        let reaped = ScratchNetNs::reap_stale("dntreap").unwrap();
        assert_eq!(reaped, vec![dead.to_string()]);
        assert!(!NetNs::exists(dead));
        assert!(
            NetNs::exists(live.name()),
            "a live process's namespace is kept"
        );
    }

    #[test]
    fn panics_inside_run_propagate() {
        let ns = scratch();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            ns.run(|| panic!("inner")).unwrap();
        }));
        assert!(r.is_err());
    }
}
