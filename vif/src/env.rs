//! What a frontend needs from "its hypervisor" ([`FrontendEnv`]): its domain's memory and
//! grant table, frames and grant references to use, and event channels.
//!
//! A Xen guest gets these from the hypervisor (its pseudo-physical memory, the grant
//! table frames from `GNTTABOP_setup_table`, `EVTCHNOP_alloc_unbound` …) and from its own
//! kernel's allocators (free pages; grant references from 8 up, refs 0–7 being reserved,
//! `GNTTAB_NR_RESERVED_ENTRIES`). In domnet a frontend runs either inside the daemon
//! ([`LocalEnv`]) or in another process that received the domain's memfd and eventfds
//! over the hypervisor socket; the trait is small and object-safe so the second kind can
//! implement it too. Granting and revoking go through [`GrantTable::offer`] /
//! [`GrantTable::revoke`] on the domain's own table, which works on any process's mapping
//! of the same memory.
//!
//! All frontends of one domain share that domain's allocators ([`DomainPages`], handed
//! out per domain by a [`DomainPagesRegistry`]), exactly as all drivers of one guest
//! kernel share its page allocator and grant-reference pool.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use hypervisor::evtchn::{EventFd, EvtchnError, Notifier, Port};
use hypervisor::grant::{GrantRef, GrantTable, NR_RESERVED_ENTRIES};
use hypervisor::hv::Hypervisor;
use hypervisor::memory::{Gfn, GuestMemory};
use hypervisor::DomId;

/// Why the environment could not provide something.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    /// The domain does not exist (any more).
    #[error("domain {0} does not exist")]
    NoDomain(DomId),
    /// Every frame of the domain's memory is in use.
    #[error("domain {0} has no free memory frame")]
    NoFrames(DomId),
    /// Every grant reference of the domain's table is in use.
    #[error("domain {0} has no free grant reference")]
    NoGrantRefs(DomId),
    /// An event-channel operation failed.
    #[error("event channel: {0}")]
    Evtchn(#[from] EvtchnError),
    /// Anything else (a socket environment's transport error, described).
    #[error("{0}")]
    Other(String),
}

/// A way to set the peer's end of an interdomain event channel pending (`EVTCHNOP_send`
/// without the lookup): the daemon's lock-free [`Notifier`], or the peer's eventfd
/// received over a socket.
#[derive(Debug, Clone)]
pub enum PeerNotifier {
    /// In the daemon.
    Local(Notifier),
    /// In another process: the peer port's eventfd.
    Fd(Arc<EventFd>),
}

impl PeerNotifier {
    /// Sets the peer port pending.
    #[inline]
    pub fn notify(&self) {
        match self {
            PeerNotifier::Local(n) => n.notify(),
            PeerNotifier::Fd(fd) => fd.signal(),
        }
    }
}

/// What a frontend needs from its hypervisor and guest kernel.
pub trait FrontendEnv: Send {
    /// The frontend's domain.
    fn domid(&self) -> DomId;
    /// The domain's memory (the frontend's own frames).
    fn memory(&self) -> &Arc<GuestMemory>;
    /// The domain's grant table, for offering and revoking grants.
    fn grant_table(&self) -> &GrantTable;
    /// A free frame of the domain's memory (outside the grant table).
    fn alloc_frame(&self) -> Result<Gfn, EnvError>;
    /// Gives a frame back.
    fn free_frame(&self, gfn: Gfn);
    /// A free grant reference (from 8 up).
    fn alloc_gref(&self) -> Result<GrantRef, EnvError>;
    /// Gives a grant reference back (it must have been revoked).
    fn free_gref(&self, gref: GrantRef);
    /// `EVTCHNOP_alloc_unbound`: a new port that only `remote` may bind, and the eventfd
    /// that becomes readable when the port is pending.
    fn alloc_unbound(&self, remote: DomId) -> Result<(Port, Arc<EventFd>), EnvError>;
    /// The sender to the peer of `port`; fails until the backend has bound it.
    fn notifier(&self, port: Port) -> Result<PeerNotifier, EnvError>;
    /// `EVTCHNOP_close`.
    fn close(&self, port: Port);
}

/// One domain's frame and grant-reference allocators.
#[derive(Debug)]
pub struct DomainPages {
    domid: DomId,
    frames: Gfn,
    next_frame: Gfn,
    free_frames: Vec<Gfn>,
    nr_grefs: u32,
    next_gref: GrantRef,
    free_grefs: Vec<GrantRef>,
}

impl DomainPages {
    /// Allocators for a domain of `frames` frames whose grant table occupies frames
    /// `0..grant_frames` and holds `nr_grefs` entries.
    pub fn new(domid: DomId, frames: Gfn, grant_frames: u32, nr_grefs: u32) -> DomainPages {
        DomainPages {
            domid,
            frames,
            next_frame: Gfn::from(grant_frames),
            free_frames: Vec::new(),
            nr_grefs,
            next_gref: NR_RESERVED_ENTRIES,
            free_grefs: Vec::new(),
        }
    }

    /// A free frame.
    pub fn alloc_frame(&mut self) -> Result<Gfn, EnvError> {
        if let Some(g) = self.free_frames.pop() {
            return Ok(g);
        }
        if self.next_frame >= self.frames {
            return Err(EnvError::NoFrames(self.domid));
        }
        self.next_frame += 1;
        Ok(self.next_frame - 1)
    }

    /// Returns a frame.
    pub fn free_frame(&mut self, gfn: Gfn) {
        if gfn < self.next_frame && !self.free_frames.contains(&gfn) {
            self.free_frames.push(gfn);
        }
    }

    /// A free grant reference (never 0–7).
    pub fn alloc_gref(&mut self) -> Result<GrantRef, EnvError> {
        if let Some(r) = self.free_grefs.pop() {
            return Ok(r);
        }
        if self.next_gref >= self.nr_grefs {
            return Err(EnvError::NoGrantRefs(self.domid));
        }
        self.next_gref += 1;
        Ok(self.next_gref - 1)
    }

    /// Returns a grant reference.
    pub fn free_gref(&mut self, gref: GrantRef) {
        if (NR_RESERVED_ENTRIES..self.next_gref).contains(&gref) && !self.free_grefs.contains(&gref)
        {
            self.free_grefs.push(gref);
        }
    }
}

struct RegistryEntry {
    memory: Weak<GuestMemory>,
    pages: Weak<Mutex<DomainPages>>,
}

/// Hands out each live domain's [`DomainPages`], shared by all frontends of that domain.
/// A domain is known by its id and its memory, so a re-created domain (new memory) gets
/// fresh allocators, and two hypervisors in one process (tests) never share any.
#[derive(Default)]
pub struct DomainPagesRegistry {
    entries: Mutex<HashMap<(DomId, usize), RegistryEntry>>,
}

/// The process-wide registry [`LocalEnv::new`] uses.
static GLOBAL_PAGES: std::sync::OnceLock<DomainPagesRegistry> = std::sync::OnceLock::new();

impl std::fmt::Debug for DomainPagesRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DomainPagesRegistry")
            .finish_non_exhaustive()
    }
}

impl DomainPagesRegistry {
    /// An empty registry.
    pub fn new() -> DomainPagesRegistry {
        DomainPagesRegistry::default()
    }

    /// The allocators of `domid` (created on first use).
    pub fn get(&self, hv: &Hypervisor, domid: DomId) -> Result<Arc<Mutex<DomainPages>>, EnvError> {
        let grants = hv.grant_table(domid).ok_or(EnvError::NoDomain(domid))?;
        let mem = grants.memory();
        let key = (domid, Arc::as_ptr(mem) as usize);
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = entries.get(&key) {
            if let (Some(m), Some(p)) = (e.memory.upgrade(), e.pages.upgrade()) {
                if Arc::ptr_eq(&m, mem) {
                    return Ok(p);
                }
            }
        }
        // Forget domains whose frontends are all gone.
        entries.retain(|_, e| e.pages.strong_count() > 0 && e.memory.strong_count() > 0);
        let pages = Arc::new(Mutex::new(DomainPages::new(
            domid,
            mem.frames(),
            grants.nr_frames(),
            grants.nr_entries(),
        )));
        entries.insert(
            key,
            RegistryEntry {
                memory: Arc::downgrade(mem),
                pages: Arc::downgrade(&pages),
            },
        );
        Ok(pages)
    }
}

/// A frontend inside the daemon: the hypervisor is in the same process.
pub struct LocalEnv {
    hv: Arc<Hypervisor>,
    domid: DomId,
    grants: Arc<GrantTable>,
    pages: Arc<Mutex<DomainPages>>,
}

impl std::fmt::Debug for LocalEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalEnv")
            .field("domid", &self.domid)
            .finish()
    }
}

impl LocalEnv {
    /// The environment of a frontend in domain `domid`, sharing that domain's allocators
    /// with every other `LocalEnv` of it in this process.
    pub fn new(hv: Arc<Hypervisor>, domid: DomId) -> Result<LocalEnv, EnvError> {
        LocalEnv::with_registry(
            hv,
            domid,
            GLOBAL_PAGES.get_or_init(DomainPagesRegistry::new),
        )
    }

    /// The environment of a frontend in domain `domid`, with that domain's allocators from
    /// `registry`.
    pub fn with_registry(
        hv: Arc<Hypervisor>,
        domid: DomId,
        registry: &DomainPagesRegistry,
    ) -> Result<LocalEnv, EnvError> {
        let grants = hv.grant_table(domid).ok_or(EnvError::NoDomain(domid))?;
        let pages = registry.get(&hv, domid)?;
        Ok(LocalEnv {
            hv,
            domid,
            grants,
            pages,
        })
    }

    fn pages(&self) -> std::sync::MutexGuard<'_, DomainPages> {
        self.pages.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl FrontendEnv for LocalEnv {
    fn domid(&self) -> DomId {
        self.domid
    }

    fn memory(&self) -> &Arc<GuestMemory> {
        self.grants.memory()
    }

    fn grant_table(&self) -> &GrantTable {
        &self.grants
    }

    fn alloc_frame(&self) -> Result<Gfn, EnvError> {
        self.pages().alloc_frame()
    }

    fn free_frame(&self, gfn: Gfn) {
        self.pages().free_frame(gfn)
    }

    fn alloc_gref(&self) -> Result<GrantRef, EnvError> {
        self.pages().alloc_gref()
    }

    fn free_gref(&self, gref: GrantRef) {
        self.pages().free_gref(gref)
    }

    fn alloc_unbound(&self, remote: DomId) -> Result<(Port, Arc<EventFd>), EnvError> {
        let ev = self.hv.evtchn();
        let port = ev.alloc_unbound(self.domid, remote)?;
        match ev.pending_fd(self.domid, port) {
            Ok(fd) => Ok((port, fd)),
            Err(e) => {
                let _ = ev.close(self.domid, port);
                Err(e.into())
            }
        }
    }

    fn notifier(&self, port: Port) -> Result<PeerNotifier, EnvError> {
        Ok(PeerNotifier::Local(
            self.hv.evtchn().notifier(self.domid, port)?,
        ))
    }

    fn close(&self, port: Port) {
        let _ = self.hv.evtchn().close(self.domid, port);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hypervisor::domain::{DomainInfo, DomainState, Registry};

    pub(crate) fn guest(domid: DomId, mib: u64) -> DomainInfo {
        DomainInfo {
            domid,
            name: format!("g{domid}"),
            uuid: format!("00000000-0000-0000-0000-{domid:012}"),
            memory_mib: mib,
            vcpus: 1,
            max_grant_frames: 4,
            created_ms: 0,
            state: DomainState::Blocked,
        }
    }

    #[test]
    fn allocators_skip_reserved_and_table_and_are_shared_per_domain() {
        let hv = Arc::new(Hypervisor::new(Registry::new().get(0).unwrap()).unwrap());
        hv.instantiate(&guest(1, 1)).unwrap();
        let reg = DomainPagesRegistry::new();
        let a = LocalEnv::with_registry(Arc::clone(&hv), 1, &reg).unwrap();
        let b = LocalEnv::new(Arc::clone(&hv), 1).unwrap();
        let b2 = LocalEnv::new(Arc::clone(&hv), 1).unwrap();
        assert_eq!(
            b.alloc_frame().unwrap(),
            4,
            "another registry, other allocators"
        );
        assert_eq!(
            b2.alloc_frame().unwrap(),
            5,
            "the global registry is shared"
        );
        drop((b, b2));
        let b = LocalEnv::with_registry(Arc::clone(&hv), 1, &reg).unwrap();
        assert_eq!(a.alloc_frame().unwrap(), 4, "frames after the grant table");
        assert_eq!(b.alloc_frame().unwrap(), 5, "shared allocator");
        assert_eq!(a.alloc_gref().unwrap(), 8);
        assert_eq!(b.alloc_gref().unwrap(), 9);
        a.free_gref(8);
        a.free_gref(3); // reserved: ignored
        assert_eq!(b.alloc_gref().unwrap(), 8);
        let mut n = 2;
        while a.alloc_frame().is_ok() {
            n += 1;
        }
        assert_eq!(n, 256 - 4, "1 MiB = 256 frames, 4 for the table");
        assert_eq!(a.alloc_frame(), Err(EnvError::NoFrames(1)));
        assert!(LocalEnv::with_registry(Arc::clone(&hv), 7, &reg).is_err());
        // A re-created domain gets fresh allocators.
        hv.remove(1);
        drop((a, b));
        hv.instantiate(&guest(1, 1)).unwrap();
        let c = LocalEnv::with_registry(Arc::clone(&hv), 1, &reg).unwrap();
        assert_eq!(c.alloc_frame().unwrap(), 4);
    }

    #[test]
    fn event_channels_bind_and_notify() {
        let hv = Arc::new(Hypervisor::new(Registry::new().get(0).unwrap()).unwrap());
        hv.instantiate(&guest(1, 1)).unwrap();
        let env = LocalEnv::new(Arc::clone(&hv), 1).unwrap();
        let (port, fd) = env.alloc_unbound(0).unwrap();
        assert!(env.notifier(port).is_err(), "not bound yet");
        let back = hv.evtchn().bind_interdomain(0, 1, port).unwrap();
        let back_fd = hv.evtchn().pending_fd(0, back).unwrap();
        back_fd.consume();
        env.notifier(port).unwrap().notify();
        assert!(back_fd.consume());
        hv.evtchn().send(0, back).unwrap();
        assert!(fd.consume());
        env.close(port);
        assert_eq!(hv.evtchn().ports_in_use(1), 0);
    }
}
