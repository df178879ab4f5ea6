//! Event channels (xen-networking.md §3).
//!
//! A port is one bit of "something changed, go look": no payload, no count. Ports are
//! per domain, numbered from 1 (0 is reserved), always the lowest free one, up to a
//! per-domain limit (`max_event_channels`, 1023 by default). A frontend allocates an
//! *unbound* port reserved for its backend; the backend binds to it and the two become
//! *interdomain*. Sending on one end marks the other end pending.
//!
//! Delivery is an eventfd per port: "pending" is a non-zero eventfd counter, so sends
//! while pending coalesce exactly like Xen's pending bit, and reading the eventfd is
//! the receiver's acknowledgement. Each allocation gets a fresh eventfd, so a notifier
//! kept by a closed binding can never wake a later user of the same port number
//! (robustness §1.3: no reuse while a notifier may still target a port).

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex};

use crate::{DomId, DOMID_SELF};

/// An event-channel port number (`evtchn_port_t`).
pub type Port = u32;

/// xl's default `max_event_channels`: the highest port a domain may use.
pub const DEFAULT_MAX_PORT: Port = 1023;

/// `EVTCHNSTAT_*`: what a port is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum PortStatus {
    /// `EVTCHNSTAT_closed` (0): not allocated.
    Closed,
    /// `EVTCHNSTAT_unbound` (1): allocated, waiting for `remote` to bind.
    Unbound {
        /// The only domain allowed to bind.
        remote: DomId,
    },
    /// `EVTCHNSTAT_interdomain` (2): connected to `remote_port` of `remote`.
    Interdomain {
        /// The peer domain.
        remote: DomId,
        /// The peer's port.
        remote_port: Port,
    },
}

impl PortStatus {
    /// The numeric `EVTCHNSTAT_*` value.
    pub fn code(&self) -> u32 {
        match self {
            PortStatus::Closed => 0,
            PortStatus::Unbound { .. } => 1,
            PortStatus::Interdomain { .. } => 2,
        }
    }
}

/// Why an event-channel operation failed (errno semantics as Xen returns them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EvtchnError {
    /// `-ENOSPC`: no free port below the domain's limit.
    #[error("no free event channel port (limit {0})")]
    NoSpace(Port),
    /// `-EINVAL`: the port is not in a state that allows the operation.
    #[error("port {0} is not valid for this operation")]
    Invalid(Port),
    /// `-ESRCH`: the domain does not exist.
    #[error("domain {0} does not exist")]
    NoDomain(DomId),
}

impl EvtchnError {
    /// The (positive) errno Xen would return.
    pub fn errno(&self) -> i32 {
        match self {
            EvtchnError::NoSpace(_) => libc::ENOSPC,
            EvtchnError::Invalid(_) => libc::EINVAL,
            EvtchnError::NoDomain(_) => libc::ESRCH,
        }
    }
}

/// A non-blocking eventfd: the pending bit of one port.
#[derive(Debug)]
pub struct EventFd(OwnedFd);

impl EventFd {
    /// A fresh, not-pending eventfd.
    pub fn new() -> io::Result<EventFd> {
        // SAFETY: eventfd with valid flags; the result is checked.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh fd we own.
        Ok(EventFd(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Wraps an eventfd received from another process.
    pub fn from_fd(fd: OwnedFd) -> EventFd {
        EventFd(fd)
    }

    /// Marks pending (coalesces with an existing pending state).
    pub fn signal(&self) {
        let one: u64 = 1;
        // SAFETY: writing 8 bytes from a valid u64 to an eventfd. The only failure on a
        // valid eventfd is EAGAIN at counter overflow, which still leaves it pending.
        unsafe { libc::write(self.0.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    /// Clears the pending state; returns whether it was pending.
    pub fn consume(&self) -> bool {
        let mut v: u64 = 0;
        // SAFETY: reading 8 bytes into a valid u64 from a non-blocking eventfd.
        let n = unsafe { libc::read(self.0.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
        n == 8 && v > 0
    }

    /// Duplicates the fd (to hand to another process or poller).
    pub fn try_clone_fd(&self) -> io::Result<OwnedFd> {
        self.0.try_clone()
    }
}

impl AsFd for EventFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl AsRawFd for EventFd {
    fn as_raw_fd(&self) -> i32 {
        self.0.as_raw_fd()
    }
}

/// A ready-made "send" for one interdomain port: signals the peer's eventfd without
/// taking the event-channel lock (the data path's notify). If the binding has since
/// been closed it signals an orphaned eventfd, which is harmless (spurious events
/// are allowed and the fd is never reused).
#[derive(Debug, Clone)]
pub struct Notifier(Arc<EventFd>);

impl Notifier {
    /// Sets the peer port pending.
    pub fn notify(&self) {
        self.0.signal();
    }
}

#[derive(Debug)]
enum Binding {
    Unbound { remote: DomId },
    Interdomain { remote: DomId, remote_port: Port },
}

#[derive(Debug)]
struct PortEntry {
    binding: Binding,
    pending: Arc<EventFd>,
}

#[derive(Debug)]
struct DomainPorts {
    max_port: Port,
    ports: BTreeMap<Port, PortEntry>,
}

impl DomainPorts {
    fn lowest_free(&self) -> Option<Port> {
        let mut want = 1;
        for &p in self.ports.keys() {
            if p != want {
                break;
            }
            want += 1;
        }
        (want <= self.max_port).then_some(want)
    }
}

/// All domains' ports.
#[derive(Debug, Default)]
pub struct EventChannels {
    inner: Mutex<HashMap<DomId, DomainPorts>>,
}

impl EventChannels {
    /// An empty table.
    pub fn new() -> EventChannels {
        EventChannels::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<DomId, DomainPorts>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a domain with port limit `max_port`.
    pub fn add_domain(&self, domid: DomId, max_port: Port) {
        self.lock().entry(domid).or_insert(DomainPorts {
            max_port,
            ports: BTreeMap::new(),
        });
    }

    /// Closes every port of a dying domain (peers fall back to unbound) and forgets it.
    pub fn remove_domain(&self, domid: DomId) {
        let mut all = self.lock();
        let Some(dom) = all.remove(&domid) else {
            return;
        };
        for (_, entry) in dom.ports {
            if let Binding::Interdomain {
                remote,
                remote_port,
            } = entry.binding
            {
                unbind_peer(&mut all, remote, remote_port, domid);
            }
        }
    }

    /// `EVTCHNOP_alloc_unbound`: a new port in `dom` that only `remote` may bind
    /// (`DOMID_SELF` meaning `dom`).
    pub fn alloc_unbound(&self, dom: DomId, remote: DomId) -> Result<Port, EvtchnError> {
        let remote = if remote == DOMID_SELF { dom } else { remote };
        let mut all = self.lock();
        let ports = all.get_mut(&dom).ok_or(EvtchnError::NoDomain(dom))?;
        let port = ports
            .lowest_free()
            .ok_or(EvtchnError::NoSpace(ports.max_port))?;
        let pending = Arc::new(EventFd::new().map_err(|_| EvtchnError::NoSpace(ports.max_port))?);
        ports.ports.insert(
            port,
            PortEntry {
                binding: Binding::Unbound { remote },
                pending,
            },
        );
        Ok(port)
    }

    /// `EVTCHNOP_bind_interdomain`: connects a new port of `dom` to `remote_port` of
    /// `remote_dom`, which must be unbound and reserved for `dom`. The new port starts
    /// pending, covering sends that happened before the bind.
    pub fn bind_interdomain(
        &self,
        dom: DomId,
        remote_dom: DomId,
        remote_port: Port,
    ) -> Result<Port, EvtchnError> {
        let remote_dom = if remote_dom == DOMID_SELF {
            dom
        } else {
            remote_dom
        };
        let mut all = self.lock();
        if !all.contains_key(&dom) {
            return Err(EvtchnError::NoDomain(dom));
        }
        let remote = all
            .get(&remote_dom)
            .ok_or(EvtchnError::NoDomain(remote_dom))?;
        match remote.ports.get(&remote_port) {
            Some(PortEntry {
                binding: Binding::Unbound { remote },
                ..
            }) if *remote == dom => {}
            _ => return Err(EvtchnError::Invalid(remote_port)),
        }
        let local = all.get_mut(&dom).ok_or(EvtchnError::NoDomain(dom))?;
        let port = local
            .lowest_free()
            .ok_or(EvtchnError::NoSpace(local.max_port))?;
        let pending = Arc::new(EventFd::new().map_err(|_| EvtchnError::NoSpace(local.max_port))?);
        pending.signal();
        local.ports.insert(
            port,
            PortEntry {
                binding: Binding::Interdomain {
                    remote: remote_dom,
                    remote_port,
                },
                pending,
            },
        );
        if let Some(entry) = all
            .get_mut(&remote_dom)
            .and_then(|d| d.ports.get_mut(&remote_port))
        {
            entry.binding = Binding::Interdomain {
                remote: dom,
                remote_port: port,
            };
        }
        Ok(port)
    }

    /// `EVTCHNOP_send`: interdomain ⇒ the peer becomes pending; unbound ⇒ silently
    /// dropped (success); a closed port ⇒ `EINVAL`.
    pub fn send(&self, dom: DomId, port: Port) -> Result<(), EvtchnError> {
        let target = {
            let all = self.lock();
            let entry = all
                .get(&dom)
                .ok_or(EvtchnError::NoDomain(dom))?
                .ports
                .get(&port)
                .ok_or(EvtchnError::Invalid(port))?;
            match entry.binding {
                Binding::Unbound { .. } => return Ok(()),
                Binding::Interdomain {
                    remote,
                    remote_port,
                } => all
                    .get(&remote)
                    .and_then(|d| d.ports.get(&remote_port))
                    .map(|e| Arc::clone(&e.pending)),
            }
        };
        if let Some(fd) = target {
            fd.signal();
        }
        Ok(())
    }

    /// `EVTCHNOP_close`: frees the port; an interdomain peer returns to unbound,
    /// reserved for the closer.
    pub fn close(&self, dom: DomId, port: Port) -> Result<(), EvtchnError> {
        let mut all = self.lock();
        let entry = all
            .get_mut(&dom)
            .ok_or(EvtchnError::NoDomain(dom))?
            .ports
            .remove(&port)
            .ok_or(EvtchnError::Invalid(port))?;
        if let Binding::Interdomain {
            remote,
            remote_port,
        } = entry.binding
        {
            unbind_peer(&mut all, remote, remote_port, dom);
        }
        Ok(())
    }

    /// `EVTCHNOP_status`.
    pub fn status(&self, dom: DomId, port: Port) -> Result<PortStatus, EvtchnError> {
        let all = self.lock();
        let d = all.get(&dom).ok_or(EvtchnError::NoDomain(dom))?;
        Ok(match d.ports.get(&port).map(|e| &e.binding) {
            None => PortStatus::Closed,
            Some(Binding::Unbound { remote }) => PortStatus::Unbound { remote: *remote },
            Some(Binding::Interdomain {
                remote,
                remote_port,
            }) => PortStatus::Interdomain {
                remote: *remote,
                remote_port: *remote_port,
            },
        })
    }

    /// The eventfd that becomes readable when `port` of `dom` is pending (the receiver
    /// polls it and reads it to acknowledge).
    pub fn pending_fd(&self, dom: DomId, port: Port) -> Result<Arc<EventFd>, EvtchnError> {
        let all = self.lock();
        all.get(&dom)
            .ok_or(EvtchnError::NoDomain(dom))?
            .ports
            .get(&port)
            .map(|e| Arc::clone(&e.pending))
            .ok_or(EvtchnError::Invalid(port))
    }

    /// A lock-free sender for an interdomain `port` of `dom` (signals the peer).
    pub fn notifier(&self, dom: DomId, port: Port) -> Result<Notifier, EvtchnError> {
        let all = self.lock();
        let entry = all
            .get(&dom)
            .ok_or(EvtchnError::NoDomain(dom))?
            .ports
            .get(&port)
            .ok_or(EvtchnError::Invalid(port))?;
        match entry.binding {
            Binding::Interdomain {
                remote,
                remote_port,
            } => all
                .get(&remote)
                .and_then(|d| d.ports.get(&remote_port))
                .map(|e| Notifier(Arc::clone(&e.pending)))
                .ok_or(EvtchnError::Invalid(port)),
            Binding::Unbound { .. } => Err(EvtchnError::Invalid(port)),
        }
    }

    /// A duplicate of the peer's pending eventfd of an interdomain `port` (handed to an
    /// external frontend so it can notify without a round trip).
    pub fn notifier_fd(&self, dom: DomId, port: Port) -> Result<OwnedFd, EvtchnError> {
        let n = self.notifier(dom, port)?;
        n.0.try_clone_fd().map_err(|_| EvtchnError::NoSpace(0))
    }

    /// Number of allocated ports of a domain.
    pub fn ports_in_use(&self, dom: DomId) -> usize {
        self.lock().get(&dom).map_or(0, |d| d.ports.len())
    }
}

fn unbind_peer(
    all: &mut HashMap<DomId, DomainPorts>,
    remote: DomId,
    remote_port: Port,
    closer: DomId,
) {
    if let Some(peer) = all
        .get_mut(&remote)
        .and_then(|d| d.ports.get_mut(&remote_port))
    {
        peer.binding = Binding::Unbound { remote: closer };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn two() -> EventChannels {
        let e = EventChannels::new();
        e.add_domain(0, DEFAULT_MAX_PORT);
        e.add_domain(1, DEFAULT_MAX_PORT);
        e
    }

    #[test]
    fn bind_send_close_follow_xen() {
        let e = two();
        let fp = e.alloc_unbound(1, 0).unwrap();
        assert_eq!(fp, 1, "lowest free port ≥ 1");
        assert_eq!(e.status(1, fp).unwrap(), PortStatus::Unbound { remote: 0 });
        // Sending on an unbound port is dropped but succeeds.
        e.send(1, fp).unwrap();
        let bp = e.bind_interdomain(0, 1, fp).unwrap();
        assert_eq!(
            e.status(0, bp).unwrap(),
            PortStatus::Interdomain {
                remote: 1,
                remote_port: fp
            }
        );
        assert_eq!(
            e.status(1, fp).unwrap(),
            PortStatus::Interdomain {
                remote: 0,
                remote_port: bp
            }
        );
        // The new port starts pending.
        let back = e.pending_fd(0, bp).unwrap();
        assert!(back.consume());
        assert!(!back.consume());
        let front = e.pending_fd(1, fp).unwrap();
        assert!(!front.consume(), "the unbound send was dropped");
        // Sends coalesce like a pending bit.
        e.send(0, bp).unwrap();
        e.send(0, bp).unwrap();
        assert!(front.consume());
        assert!(!front.consume());
        e.notifier(1, fp).unwrap().notify();
        assert!(back.consume());
        // Close: the peer returns to unbound, reserved for the closer.
        e.close(0, bp).unwrap();
        assert_eq!(e.status(1, fp).unwrap(), PortStatus::Unbound { remote: 0 });
        assert_eq!(e.status(0, bp).unwrap(), PortStatus::Closed);
        assert_eq!(e.send(0, bp), Err(EvtchnError::Invalid(bp)));
        assert_eq!(e.close(0, bp), Err(EvtchnError::Invalid(bp)));
    }

    #[test]
    fn bind_requires_reservation_for_the_binder() {
        let e = two();
        e.add_domain(2, DEFAULT_MAX_PORT);
        let fp = e.alloc_unbound(1, 0).unwrap();
        assert_eq!(e.bind_interdomain(2, 1, fp), Err(EvtchnError::Invalid(fp)));
        assert_eq!(e.bind_interdomain(0, 1, 77), Err(EvtchnError::Invalid(77)));
        assert_eq!(e.bind_interdomain(0, 9, fp), Err(EvtchnError::NoDomain(9)));
        e.bind_interdomain(0, 1, fp).unwrap();
        assert_eq!(
            e.bind_interdomain(0, 1, fp),
            Err(EvtchnError::Invalid(fp)),
            "already bound"
        );
    }

    #[test]
    fn per_domain_limit_and_lowest_free() {
        let e = EventChannels::new();
        e.add_domain(3, 4);
        for want in 1..=4 {
            assert_eq!(e.alloc_unbound(3, 0).unwrap(), want);
        }
        assert_eq!(e.alloc_unbound(3, 0), Err(EvtchnError::NoSpace(4)));
        e.close(3, 2).unwrap();
        assert_eq!(e.alloc_unbound(3, 0).unwrap(), 2);
    }

    #[test]
    fn destroyed_domain_unbinds_its_peers_and_old_notifiers_are_inert() {
        let e = two();
        let fp = e.alloc_unbound(1, 0).unwrap();
        let bp = e.bind_interdomain(0, 1, fp).unwrap();
        let stale = e.notifier(0, bp).unwrap();
        e.remove_domain(1);
        assert_eq!(e.status(0, bp).unwrap(), PortStatus::Unbound { remote: 1 });
        e.add_domain(1, DEFAULT_MAX_PORT);
        let fp2 = e.alloc_unbound(1, 0).unwrap();
        assert_eq!(fp2, fp, "port number reused");
        stale.notify();
        assert!(
            !e.pending_fd(1, fp2).unwrap().consume(),
            "the old notifier cannot wake the new port"
        );
    }

    proptest! {
        /// Random op sequences keep the two ends of every interdomain binding
        /// consistent and never exceed the limit.
        #[test]
        fn bindings_stay_symmetric(ops in proptest::collection::vec((0u8..5, 0u16..3, 0u16..3, 0u32..8), 1..80)) {
            let e = EventChannels::new();
            for d in 0..3 { e.add_domain(d, 6); }
            for (kind, a, b, p) in ops {
                match kind {
                    0 => { let _ = e.alloc_unbound(a, b); }
                    1 => { let _ = e.bind_interdomain(a, b, p); }
                    2 => { let _ = e.close(a, p); }
                    3 => { let _ = e.send(a, p); }
                    _ => { e.remove_domain(a); e.add_domain(a, 6); }
                }
                for d in 0..3u16 {
                    prop_assert!(e.ports_in_use(d) <= 6);
                    for port in 0..8 {
                        if let Ok(PortStatus::Interdomain { remote, remote_port }) = e.status(d, port) {
                            prop_assert_eq!(
                                e.status(remote, remote_port).unwrap(),
                                PortStatus::Interdomain { remote: d, remote_port: port }
                            );
                        }
                    }
                    prop_assert_eq!(e.status(d, 0).unwrap(), PortStatus::Closed);
                }
            }
        }
    }
}
