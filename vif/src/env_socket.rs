//! A frontend's environment in a process of its own ([`SocketEnv`]): everything a
//! [`FrontendEnv`] provides, obtained over the domain's hypervisor socket
//! (`docs/hypervisor-socket.md`, `hypervisor::hvsock`).
//!
//! What a Xen guest kernel gets from the hypervisor arrives here by `SCM_RIGHTS`:
//!
//! * its pseudo-physical memory — the memfd from `hello`, mapped `MAP_SHARED`
//!   ([`GuestMemory::from_fd`] refuses one that is not sealed against shrinking);
//! * its grant table — frames `0..grant_frames` of that memory, which this process
//!   writes itself ([`GrantTable::offer`] / [`GrantTable::revoke`] work on any mapping:
//!   the entry flags, `GTF_reading`/`GTF_writing` included, live in the shared frames);
//! * event channels — `alloc_unbound` hands back the port's pending eventfd, `notifier`
//!   the peer's (`EVTCHNOP_send` becomes a write to it), `close` is `EVTCHNOP_close`.
//!
//! Frames and grant references are this process's to hand out, like a guest kernel's
//! page allocator and grant-reference pool: frames from `grant_frames` up, references
//! from 8 up (0–7 are `GNTTAB_NR_RESERVED_ENTRIES`). Nothing coordinates two processes
//! attached to the same domain, so each takes an [`Allotment`]: the whole domain by
//! default, or a disjoint per-vif window ([`Allotment::for_vif`]) so that one process
//! per vif can run side by side.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use hypervisor::evtchn::{EventFd, Port};
use hypervisor::grant::{GrantRef, GrantTable, ENTRIES_PER_FRAME, NR_RESERVED_ENTRIES};
use hypervisor::hvsock::{HvClient, HvClientError, HvHello};
use hypervisor::memory::{Gfn, GuestMemory};
use hypervisor::DomId;

use crate::env::{EnvError, FrontendEnv, PeerNotifier};
use crate::netfront::port::{RX_BUFFERS, TX_PAGES};

/// Frames (and grant references) one netfront uses: two ring pages, a tx page per tx
/// slot and an rx buffer per rx slot ([`crate::netfront::port::NetfrontPort::setup`]).
pub const NETFRONT_PAGES: u32 = 2 + TX_PAGES as u32 + RX_BUFFERS as u32;

/// The per-vif window of [`Allotment::for_vif`]: a netfront's pages with some slack.
pub const VIF_WINDOW: u32 = NETFRONT_PAGES + 14;

/// The frames and grant references a process may hand out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allotment {
    /// Frames (all at or above the grant table).
    pub frames: Range<Gfn>,
    /// Grant references (all at or above `NR_RESERVED_ENTRIES`).
    pub grefs: Range<GrantRef>,
}

impl Allotment {
    /// Everything the domain has: frames `grant_frames..frames`, references
    /// `8..grant_frames * 512`.
    pub fn whole(frames: u64, grant_frames: u32) -> Allotment {
        Allotment {
            frames: Gfn::from(grant_frames).min(frames)..frames,
            grefs: NR_RESERVED_ENTRIES
                ..grant_frames
                    .saturating_mul(ENTRIES_PER_FRAME)
                    .max(NR_RESERVED_ENTRIES),
        }
    }

    /// Window `devid` of [`VIF_WINDOW`] frames and references, so that the frontends of
    /// different vifs of one domain, run by different processes, never hand out the same
    /// frame or reference. `None` when the domain is too small for that window.
    pub fn for_vif(frames: u64, grant_frames: u32, devid: u32) -> Option<Allotment> {
        let whole = Allotment::whole(frames, grant_frames);
        let w = u64::from(VIF_WINDOW);
        let f0 = whole
            .frames
            .start
            .checked_add(u64::from(devid).checked_mul(w)?)?;
        let r0 = whole
            .grefs
            .start
            .checked_add(devid.checked_mul(VIF_WINDOW)?)?;
        let (f1, r1) = (f0.checked_add(w)?, r0.checked_add(VIF_WINDOW)?);
        (f1 <= whole.frames.end && r1 <= whole.grefs.end).then_some(Allotment {
            frames: f0..f1,
            grefs: r0..r1,
        })
    }

    /// True when the allotment lies inside the domain (above the table and the reserved
    /// references).
    fn fits(&self, frames: u64, grant_frames: u32) -> bool {
        let whole = Allotment::whole(frames, grant_frames);
        self.frames.start >= whole.frames.start
            && self.frames.end <= whole.frames.end
            && self.grefs.start >= whole.grefs.start
            && self.grefs.end <= whole.grefs.end
    }
}

/// A bump allocator over a range with a free list (what a guest's page allocator and
/// grant-reference pool amount to for a frontend).
#[derive(Debug)]
struct RangeAlloc<T> {
    next: T,
    end: T,
    free: Vec<T>,
    start: T,
}

impl<T: Copy + Ord + std::ops::Add<Output = T> + From<u8>> RangeAlloc<T> {
    fn new(r: Range<T>) -> RangeAlloc<T> {
        RangeAlloc {
            next: r.start,
            end: r.end,
            free: Vec::new(),
            start: r.start,
        }
    }

    fn alloc(&mut self) -> Option<T> {
        if let Some(v) = self.free.pop() {
            return Some(v);
        }
        if self.next >= self.end {
            return None;
        }
        let v = self.next;
        self.next = v + T::from(1);
        Some(v)
    }

    /// Returns `v`; values never handed out, or already free, are ignored.
    fn free(&mut self, v: T) {
        if v >= self.start && v < self.next && !self.free.contains(&v) {
            self.free.push(v);
        }
    }
}

#[derive(Debug)]
struct Pools {
    frames: RangeAlloc<Gfn>,
    grefs: RangeAlloc<GrantRef>,
}

struct Inner {
    client: Mutex<HvClient>,
    domid: DomId,
    grant_frames: u32,
    xenstore: PathBuf,
    grants: GrantTable,
    pools: Mutex<Pools>,
}

/// A [`FrontendEnv`] over the hypervisor socket (see the module doc). Cloning shares
/// the connection and the allocators (several frontends of one domain in one process).
#[derive(Clone)]
pub struct SocketEnv {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SocketEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SocketEnv")
            .field("domid", &self.inner.domid)
            .field("frames", &self.inner.grants.memory().frames())
            .field("grant_frames", &self.inner.grant_frames)
            .finish()
    }
}

fn transport(e: HvClientError) -> EnvError {
    EnvError::Other(e.to_string())
}

impl SocketEnv {
    /// Connects to a domain's hypervisor socket (`RUN_DIR/hv/dom<D>.sock`) and takes the
    /// whole domain as its allotment.
    pub fn connect(path: &Path) -> Result<SocketEnv, EnvError> {
        SocketEnv::connect_with(path, |frames, grant_frames| {
            Some(Allotment::whole(frames, grant_frames))
        })
    }

    /// Connects and takes the window of vif `devid` ([`Allotment::for_vif`]).
    pub fn connect_for_vif(path: &Path, devid: u32) -> Result<SocketEnv, EnvError> {
        SocketEnv::connect_with(path, |frames, grant_frames| {
            Allotment::for_vif(frames, grant_frames, devid)
        })
    }

    /// Connects; `allot(frames, grant_frames)` picks the allotment once the domain's
    /// size is known (`None`: the domain is too small).
    pub fn connect_with(
        path: &Path,
        allot: impl FnOnce(u64, u32) -> Option<Allotment>,
    ) -> Result<SocketEnv, EnvError> {
        let client = HvClient::connect(path).map_err(transport)?;
        let hello = client.hello().map_err(transport)?;
        let allotment = allot(hello.frames, hello.grant_frames).ok_or_else(|| {
            EnvError::Other(format!(
                "domain {} ({} frames, {} grant frames) is too small for this frontend",
                hello.domid, hello.frames, hello.grant_frames
            ))
        })?;
        SocketEnv::from_hello(client, hello, allotment)
    }

    /// Builds the environment from an answered `hello` on `client`.
    pub fn from_hello(
        client: HvClient,
        hello: HvHello,
        allotment: Allotment,
    ) -> Result<SocketEnv, EnvError> {
        let mem = GuestMemory::from_fd(hello.memory)
            .map_err(|e| EnvError::Other(format!("domain {} memory: {e}", hello.domid)))?;
        if mem.frames() != hello.frames {
            return Err(EnvError::Other(format!(
                "domain {} memory has {} frames, hello said {}",
                hello.domid,
                mem.frames(),
                hello.frames
            )));
        }
        if !allotment.fits(hello.frames, hello.grant_frames) {
            return Err(EnvError::Other(format!(
                "allotment {allotment:?} lies outside domain {}",
                hello.domid
            )));
        }
        let grants = GrantTable::new(hello.domid, Arc::new(mem), hello.grant_frames);
        Ok(SocketEnv {
            inner: Arc::new(Inner {
                client: Mutex::new(client),
                domid: hello.domid,
                grant_frames: hello.grant_frames,
                xenstore: hello.xenstore,
                grants,
                pools: Mutex::new(Pools {
                    frames: RangeAlloc::new(allotment.frames),
                    grefs: RangeAlloc::new(allotment.grefs),
                }),
            }),
        })
    }

    /// The domain's xenstore socket (from `hello`): connect to it to run the handshake.
    pub fn xenstore_path(&self) -> &Path {
        &self.inner.xenstore
    }

    /// Grant-table frames at the start of memory.
    pub fn grant_frames(&self) -> u32 {
        self.inner.grant_frames
    }

    /// `EVTCHNOP_status` of one of the domain's ports: `closed`, `unbound` or
    /// `interdomain` (the `state` the socket reports).
    pub fn port_state(&self, port: Port) -> Result<String, EnvError> {
        let st = self.client().status(port).map_err(transport)?;
        Ok(st
            .get("state")
            .and_then(|s| s.as_str())
            .unwrap_or_default()
            .to_string())
    }

    fn client(&self) -> MutexGuard<'_, HvClient> {
        self.inner.client.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn pools(&self) -> MutexGuard<'_, Pools> {
        self.inner.pools.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl FrontendEnv for SocketEnv {
    fn domid(&self) -> DomId {
        self.inner.domid
    }

    fn memory(&self) -> &Arc<GuestMemory> {
        self.inner.grants.memory()
    }

    fn grant_table(&self) -> &GrantTable {
        &self.inner.grants
    }

    fn alloc_frame(&self) -> Result<Gfn, EnvError> {
        self.pools()
            .frames
            .alloc()
            .ok_or(EnvError::NoFrames(self.inner.domid))
    }

    fn free_frame(&self, gfn: Gfn) {
        self.pools().frames.free(gfn)
    }

    fn alloc_gref(&self) -> Result<GrantRef, EnvError> {
        self.pools()
            .grefs
            .alloc()
            .ok_or(EnvError::NoGrantRefs(self.inner.domid))
    }

    fn free_gref(&self, gref: GrantRef) {
        self.pools().grefs.free(gref)
    }

    fn alloc_unbound(&self, remote: DomId) -> Result<(Port, Arc<EventFd>), EnvError> {
        let (port, fd) = self.client().alloc_unbound(remote).map_err(transport)?;
        Ok((port, Arc::new(fd)))
    }

    fn notifier(&self, port: Port) -> Result<PeerNotifier, EnvError> {
        let fd = self.client().notifier(port).map_err(transport)?;
        Ok(PeerNotifier::Fd(Arc::new(fd)))
    }

    fn close(&self, port: Port) {
        // A refused close (the port is already gone with its domain) leaves nothing to do.
        let _ = self.client().close(port);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hypervisor::domain::{DomainRequest, Registry, RegistryChange};
    use hypervisor::hv::Hypervisor;
    use hypervisor::hvsock::{socket_path, HvSocketServer};

    #[test]
    fn allotments_stay_inside_the_domain_and_never_overlap() {
        let w = Allotment::whole(4096, 64);
        assert_eq!(w.frames, 64..4096);
        assert_eq!(w.grefs, 8..64 * 512);
        let a = Allotment::for_vif(4096, 64, 0).unwrap();
        let b = Allotment::for_vif(4096, 64, 1).unwrap();
        assert_eq!(a.frames.start, 64);
        assert_eq!(a.frames.end, b.frames.start);
        assert_eq!(a.grefs.end, b.grefs.start);
        assert_eq!(a.grefs.start, 8);
        assert!(a.fits(4096, 64) && b.fits(4096, 64));
        // 4032 free frames hold 7 windows of 528.
        assert!(Allotment::for_vif(4096, 64, 6).is_some());
        assert!(Allotment::for_vif(4096, 64, 7).is_none());
        assert!(Allotment::for_vif(4096, 64, u32::MAX).is_none());
        // A table of one frame has 504 usable references: too few for a netfront.
        assert!(Allotment::for_vif(4096, 1, 0).is_none());
        // Degenerate sizes give empty ranges, never a panic.
        let tiny = Allotment::whole(2, 4);
        assert!(tiny.frames.is_empty());
        assert!(!Allotment {
            frames: 0..10,
            grefs: 8..9
        }
        .fits(4096, 64));
    }

    proptest::proptest! {
        /// Windows of different vifs are disjoint and inside the domain.
        #[test]
        fn vif_windows_are_disjoint(frames in 0u64..100_000, gf in 0u32..70, a in 0u32..40, b in 0u32..40) {
            if let (Some(x), Some(y)) = (
                Allotment::for_vif(frames, gf, a),
                Allotment::for_vif(frames, gf, b),
            ) {
                proptest::prop_assert!(x.fits(frames, gf) && y.fits(frames, gf));
                if a != b {
                    proptest::prop_assert!(x.frames.end <= y.frames.start || y.frames.end <= x.frames.start);
                    proptest::prop_assert!(x.grefs.end <= y.grefs.start || y.grefs.end <= x.grefs.start);
                }
            }
        }
    }

    #[test]
    fn range_alloc_reuses_and_ignores_foreign_values() {
        let mut r = RangeAlloc::<u32>::new(8..11);
        assert_eq!(
            (r.alloc(), r.alloc(), r.alloc(), r.alloc()),
            (Some(8), Some(9), Some(10), None)
        );
        r.free(9);
        r.free(9);
        r.free(3);
        r.free(11);
        assert_eq!((r.alloc(), r.alloc()), (Some(9), None));
    }

    #[test]
    fn a_socket_env_grants_and_signals_like_the_hypervisor_sees_it() {
        let mut reg = Registry::new();
        let hv = Arc::new(Hypervisor::new(reg.get(0).unwrap()).unwrap());
        let info = reg
            .plan_create(
                &DomainRequest {
                    name: "sockenv".into(),
                    uuid: "00000000-0000-4000-8000-00000000e001".into(),
                    memory_mib: 4,
                    vcpus: 1,
                    domid: None,
                    max_grant_frames: 2,
                },
                0,
            )
            .unwrap();
        reg.apply(&RegistryChange::Created(info.clone()));
        hv.instantiate(&info).unwrap();
        let dir = std::env::temp_dir().join(format!("sockenv-{}", std::process::id()));
        let server =
            HvSocketServer::start(Arc::clone(&hv), &dir, info.domid, "/x/socket".into()).unwrap();
        let path = socket_path(&dir, info.domid);
        let env = SocketEnv::connect(&path).unwrap();
        assert_eq!(env.domid(), info.domid);
        assert_eq!(env.xenstore_path(), Path::new("/x/socket"));
        assert_eq!(env.grant_frames(), 2);
        assert_eq!(env.alloc_frame().unwrap(), 2, "first frame after the table");
        assert_eq!(env.alloc_gref().unwrap(), 8, "first unreserved reference");

        // A grant offered here is seen (and honoured) by the hypervisor's table.
        let gfn = env.alloc_frame().unwrap();
        let gref = env.alloc_gref().unwrap();
        env.memory().write(gfn, 0, b"over the socket").unwrap();
        env.grant_table().offer(gref, 0, gfn, true).unwrap();
        let theirs = hv.grant_table(info.domid).unwrap();
        assert_eq!(theirs.acquire(gref, 0, false), Ok(gfn));
        assert!(
            env.grant_table().revoke(gref).is_err(),
            "busy while the hypervisor reads"
        );
        theirs.release(gref, false);
        env.grant_table().revoke(gref).unwrap();
        assert!(theirs.acquire(gref, 0, false).is_err(), "revoked");

        // Event channels both ways.
        let (port, pending) = env.alloc_unbound(0).unwrap();
        assert!(env.notifier(port).is_err(), "unbound: no peer yet");
        let bport = hv.evtchn().bind_interdomain(0, info.domid, port).unwrap();
        let backend_pending = hv.evtchn().pending_fd(0, bport).unwrap();
        backend_pending.consume();
        env.notifier(port).unwrap().notify();
        assert!(backend_pending.consume());
        hv.evtchn().send(0, bport).unwrap();
        assert!(pending.consume());
        assert_eq!(env.port_state(port).unwrap(), "interdomain");
        env.close(port);
        assert_eq!(hv.evtchn().ports_in_use(info.domid), 0);

        // Per-vif windows: a 4 MiB domain (1024 frames) holds one.
        let w = SocketEnv::connect_for_vif(&path, 0).unwrap();
        assert_eq!(w.alloc_frame().unwrap(), 2);
        assert!(SocketEnv::connect_for_vif(&path, 1).is_err());
        drop(server);
        assert!(SocketEnv::connect(&path).is_err(), "socket gone");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
