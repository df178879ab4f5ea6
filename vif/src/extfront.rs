//! The frontend's half of the vif XenBus handshake, for a frontend running in its own
//! process and talking to xenstore over the domain's socket (the `xenstore` path the
//! hypervisor socket's `hello` returns): what Linux netfront's xenbus side does
//! (xen-networking.md §1.9, §5; `netback_changed`, `talk_to_netback`).
//!
//! The connection acts as the unprivileged guest, so paths are relative to its home
//! (`device/vif/<N>` is `/local/domain/<D>/device/vif/<N>`). [`XenbusFrontend`]:
//!
//! * [`XenbusFrontend::open`] reads `device/vif/<N>/backend` and `backend-id`, and
//!   watches the frontend directory and the backend's `state`;
//! * [`XenbusFrontend::publish`] writes the ring references, event channels,
//!   `request-rx-copy` and feature keys ([`crate::keys::FrontendKeys::pairs`]) and
//!   `state = 4` in one transaction (Linux netfront skips Initialised), retrying when
//!   the transaction conflicts (`EAGAIN`);
//! * [`XenbusFrontend::poll`] turns the watch events into what the driver must do next
//!   ([`VifEvent`]), following `vif::xenbus::frontend_step`: set up on the backend's
//!   InitWait, start on Connected, walk to Closed when the backend closes, and tear down
//!   only once the backend is Closed (its mappings are gone, so every grant can be
//!   revoked; XSA-396);
//! * [`XenbusFrontend::connect`] is the whole connect sequence for a driver whose keys
//!   are ready (the mock frontend of the hostile tests);
//! * [`XenbusFrontend::close`] is the frontend leaving: `state = 6`, then waiting for
//!   the backend to reach Closed.
//!
//! The decisions are made by the pure [`decide`]; this module's shell only reads and
//! writes xenstore.

use std::path::Path;
use std::time::{Duration, Instant};

use hypervisor::xenstore::wire::{MsgType, XsError};
use hypervisor::xs_socket::{SocketClient, SocketClientError};
use hypervisor::DomId;

use crate::xenbus::{frontend_step, FrontendAction, FrontendFacts, XenbusState};

/// How long each wait for a watch event lasts inside the longer waits (states are also
/// re-read after it, so a lost event costs at most this).
const RECHECK: Duration = Duration::from_millis(200);
/// Attempts at a conflicting transaction.
const TX_ATTEMPTS: usize = 20;

/// Every key of the frontend directory the backend reads at connect
/// ([`crate::keys::FrontendRings::parse`]); those a new frontend does not publish are
/// removed, so the backend never mixes the keys of two frontends (a predecessor's
/// `multi-queue-num-queues` or single `event-channel` would otherwise linger).
pub const PROTOCOL_KEYS: &[&str] = &[
    "tx-ring-ref",
    "rx-ring-ref",
    "event-channel",
    "event-channel-tx",
    "event-channel-rx",
    "request-rx-copy",
    "multi-queue-num-queues",
    "feature-rx-notify",
    "feature-sg",
    "feature-gso-tcpv4",
    "feature-gso-tcpv6",
    "feature-ipv6-csum-offload",
    "feature-no-csum-offload",
];

/// Why the handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum XenbusFrontendError {
    /// The xenstore socket could not be reached.
    #[error("xenstore socket {path}: {source}")]
    Connect {
        /// The socket.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// A xenstore request failed.
    #[error("xenstore: {0}")]
    Xs(#[from] SocketClientError),
    /// `device/vif/<N>` has no `backend` key: the vif does not exist (or was detached).
    #[error("device/vif/{0} does not exist")]
    NoDevice(u32),
    /// A key the toolstack wrote is malformed.
    #[error("device/vif/{devid}/{key} = {value:?} is not valid")]
    BadKey {
        /// The vif.
        devid: u32,
        /// The key.
        key: &'static str,
        /// What it holds.
        value: String,
    },
    /// The backend did not reach the awaited state in time.
    #[error("timed out after {waited:?} waiting for the backend (its state is {state})")]
    Timeout {
        /// How long.
        waited: Duration,
        /// The backend's state at the end.
        state: XenbusState,
    },
    /// The backend closed instead of connecting (it refused our keys, or is detaching).
    #[error("the backend closed instead of connecting (state {0})")]
    BackendClosed(XenbusState),
    /// The keys could not be committed: the transaction kept conflicting.
    #[error("the frontend keys could not be committed (transaction kept conflicting)")]
    Conflict,
}

/// What the frontend's driver must do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VifEvent {
    /// The backend waits (InitWait): set up rings, grants and event channels, then call
    /// [`XenbusFrontend::publish`] with the keys.
    Setup,
    /// Both ends are Connected: start moving traffic (fetch the notifiers).
    Start,
    /// The backend is Closed: revoke every grant, close the event channels, then call
    /// [`XenbusFrontend::torn_down`].
    Teardown,
    /// The vif's directory is gone (detached).
    Gone,
}

/// What [`decide`] concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Decision {
    /// Write this as our `state` first.
    pub set_state: Option<XenbusState>,
    /// Then tell the driver this.
    pub event: Option<VifEvent>,
}

/// The frontend's next step from the two states and what the driver has done
/// (`frontend_step`, with two refinements for a driver outside the daemon): `Start` is
/// reported once per connection, and `Teardown` waits for the backend's Closed, since
/// before that it still maps the rings and their grants cannot be revoked.
pub fn decide(facts: &FrontendFacts, started: bool) -> Decision {
    let mut d = Decision::default();
    for a in frontend_step(facts) {
        match a {
            FrontendAction::SetState(s) => d.set_state = Some(s),
            FrontendAction::Setup if d.event.is_none() => d.event = Some(VifEvent::Setup),
            FrontendAction::Start if !started && d.event.is_none() => {
                d.event = Some(VifEvent::Start)
            }
            FrontendAction::Teardown if facts.backend == XenbusState::Closed => {
                d.event = Some(VifEvent::Teardown)
            }
            _ => {}
        }
    }
    d
}

fn missing(e: &SocketClientError) -> bool {
    e.xs() == Some(XsError::ENOENT)
}

fn nul(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

/// The XenBus side of one vif's frontend, over the domain's xenstore socket (see the
/// module doc).
#[derive(Debug)]
pub struct XenbusFrontend {
    xs: SocketClient,
    devid: u32,
    dir: String,
    backend: String,
    backend_id: DomId,
    set_up: bool,
    started: bool,
}

impl XenbusFrontend {
    /// Connects to the domain's xenstore socket and looks up vif `devid`: its backend
    /// path and domain. Watches the vif's directory and the backend's `state`.
    pub fn open(xenstore: &Path, devid: u32) -> Result<XenbusFrontend, XenbusFrontendError> {
        let xs =
            SocketClient::connect(xenstore).map_err(|source| XenbusFrontendError::Connect {
                path: xenstore.display().to_string(),
                source,
            })?;
        let mut me = XenbusFrontend {
            xs,
            devid,
            dir: format!("device/vif/{devid}"),
            backend: String::new(),
            backend_id: 0,
            set_up: false,
            started: false,
        };
        me.backend = me
            .read("backend")?
            .filter(|b| !b.is_empty())
            .ok_or(XenbusFrontendError::NoDevice(devid))?;
        me.backend_id = match me.read("backend-id")? {
            None => 0,
            Some(v) => v.trim().parse().map_err(|_| XenbusFrontendError::BadKey {
                devid,
                key: "backend-id",
                value: v.clone(),
            })?,
        };
        let dir = me.dir.clone();
        me.xs.watch(&dir, "fe")?;
        me.xs.watch(&format!("{}/state", me.backend), "be")?;
        Ok(me)
    }

    /// The vif's device id.
    pub fn devid(&self) -> u32 {
        self.devid
    }

    /// The backend's domain (`backend-id`).
    pub fn backend_id(&self) -> DomId {
        self.backend_id
    }

    /// The backend's directory (absolute).
    pub fn backend_path(&self) -> &str {
        &self.backend
    }

    /// Reads `device/vif/<N>/<key>` (`None` when absent).
    pub fn read(&mut self, key: &str) -> Result<Option<String>, XenbusFrontendError> {
        let path = format!("{}/{key}", self.dir);
        match self.xs.read(&path) {
            Ok(v) => Ok(Some(String::from_utf8_lossy(&v).into_owned())),
            Err(e) if missing(&e) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The vif's MAC address as the toolstack wrote it.
    pub fn mac(&mut self) -> Result<Option<String>, XenbusFrontendError> {
        self.read("mac")
    }

    /// The vif's MTU (`mtu`, 1500 when absent or malformed).
    pub fn mtu(&mut self) -> Result<u32, XenbusFrontendError> {
        Ok(self
            .read("mtu")?
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(1500))
    }

    /// Our `state`.
    pub fn state(&mut self) -> Result<XenbusState, XenbusFrontendError> {
        Ok(XenbusState::parse(self.read("state")?.as_deref()))
    }

    /// The backend's `state` (Unknown when its directory is gone).
    pub fn backend_state(&mut self) -> Result<XenbusState, XenbusFrontendError> {
        let path = format!("{}/state", self.backend);
        match self.xs.read(&path) {
            Ok(v) => Ok(XenbusState::parse(Some(&String::from_utf8_lossy(&v)))),
            Err(e) if missing(&e) => Ok(XenbusState::Unknown),
            Err(e) => Err(e.into()),
        }
    }

    /// Writes our `state`.
    pub fn set_state(&mut self, s: XenbusState) -> Result<(), XenbusFrontendError> {
        let path = format!("{}/state", self.dir);
        self.xs.write(&path, s.to_string().as_bytes())?;
        Ok(())
    }

    /// A frontend starting over: if a previous one left our `state` at anything but
    /// Initialising (it connected and died, or closed), write Initialising so the
    /// backend walks back to InitWait (Linux netfront's probe does the same).
    pub fn reset(&mut self) -> Result<(), XenbusFrontendError> {
        self.set_up = false;
        self.started = false;
        match self.state()? {
            XenbusState::Initialising | XenbusState::Unknown => Ok(()),
            _ => self.set_state(XenbusState::Initialising),
        }
    }

    /// Publishes the frontend's keys and `state = 4` in one transaction, removing the
    /// [`PROTOCOL_KEYS`] that `pairs` does not carry (a predecessor's leftovers).
    pub fn publish(&mut self, pairs: &[(&str, String)]) -> Result<(), XenbusFrontendError> {
        for _ in 0..TX_ATTEMPTS {
            let reply = self.xs.request(MsgType::TransactionStart, 0, b"\0")?;
            let tx: u32 = String::from_utf8_lossy(&reply)
                .trim_end_matches('\0')
                .parse()
                .map_err(|_| {
                    SocketClientError::Protocol("TRANSACTION_START returned no id".into())
                })?;
            let wrote = self.write_keys(tx, pairs);
            let commit = wrote.is_ok();
            let end = self.xs.request(
                MsgType::TransactionEnd,
                tx,
                if commit { b"T\0" } else { b"F\0" },
            );
            wrote?;
            match end {
                Ok(_) => {
                    self.set_up = true;
                    return Ok(());
                }
                Err(e) if e.xs() == Some(XsError::EAGAIN) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(XenbusFrontendError::Conflict)
    }

    /// Inside transaction `tx`: removes the stale protocol keys, writes `pairs` and
    /// `state = 4`.
    fn write_keys(&mut self, tx: u32, pairs: &[(&str, String)]) -> Result<(), SocketClientError> {
        for k in PROTOCOL_KEYS
            .iter()
            .filter(|k| !pairs.iter().any(|(p, _)| p == *k))
        {
            let path = nul(&format!("{}/{k}", self.dir));
            match self.xs.request(MsgType::Rm, tx, &path) {
                Err(e) if !missing(&e) => return Err(e),
                _ => {}
            }
        }
        for (k, v) in pairs
            .iter()
            .map(|(k, v)| (*k, v.as_str()))
            .chain(std::iter::once(("state", "4")))
        {
            let mut p = nul(&format!("{}/{k}", self.dir));
            p.extend_from_slice(v.as_bytes());
            self.xs.request(MsgType::Write, tx, &p)?;
        }
        Ok(())
    }

    /// The driver tore its rings down (after [`VifEvent::Teardown`]).
    pub fn torn_down(&mut self) {
        self.set_up = false;
        self.started = false;
    }

    /// Waits up to `timeout` for a watch event, then reads both states and decides
    /// (writing our `state` when the step says so). Returns what the driver must do,
    /// if anything. A zero timeout only looks at events already received.
    pub fn poll(&mut self, timeout: Duration) -> Result<Option<VifEvent>, XenbusFrontendError> {
        if self.xs.wait_event(timeout)?.is_some() {
            while self.xs.wait_event(Duration::ZERO)?.is_some() {}
        }
        if self.read("backend")?.is_none() {
            return Ok(Some(VifEvent::Gone));
        }
        let facts = FrontendFacts {
            state: self.state()?,
            backend: self.backend_state()?,
            set_up: self.set_up,
        };
        let d = decide(&facts, self.started);
        if let Some(s) = d.set_state {
            match self.set_state(s) {
                Ok(()) => {}
                Err(XenbusFrontendError::Xs(e)) if missing(&e) => return Ok(Some(VifEvent::Gone)),
                Err(e) => return Err(e),
            }
        }
        if d.event == Some(VifEvent::Start) {
            self.started = true;
        }
        Ok(d.event)
    }

    /// Waits until the backend's state satisfies `want`; returns it.
    pub fn wait_backend(
        &mut self,
        timeout: Duration,
        want: impl Fn(XenbusState) -> bool,
    ) -> Result<XenbusState, XenbusFrontendError> {
        let t0 = Instant::now();
        loop {
            let s = self.backend_state()?;
            if want(s) {
                return Ok(s);
            }
            let left = timeout.saturating_sub(t0.elapsed());
            if left.is_zero() {
                return Err(XenbusFrontendError::Timeout {
                    waited: timeout,
                    state: s,
                });
            }
            self.xs.wait_event(left.min(RECHECK))?;
        }
    }

    /// The whole connect sequence for a driver whose keys are ready: start over if a
    /// previous frontend left state behind, wait for the backend's InitWait, publish
    /// `pairs` and Connected, and wait for the backend's Connected.
    pub fn connect(
        &mut self,
        pairs: &[(&str, String)],
        timeout: Duration,
    ) -> Result<(), XenbusFrontendError> {
        let t0 = Instant::now();
        self.reset()?;
        self.wait_backend(timeout, |s| {
            matches!(s, XenbusState::InitWait | XenbusState::Initialised)
        })?;
        self.publish(pairs)?;
        let s = self.wait_backend(timeout.saturating_sub(t0.elapsed()), |s| {
            matches!(
                s,
                XenbusState::Connected | XenbusState::Closing | XenbusState::Closed
            )
        })?;
        if s != XenbusState::Connected {
            return Err(XenbusFrontendError::BackendClosed(s));
        }
        self.started = true;
        Ok(())
    }

    /// The frontend leaving: `state = 6`, then waiting (up to `timeout`) for the backend
    /// to unmap and reach Closed (or for the vif to be removed). Returns the backend's
    /// last state; after Closed every grant can be revoked.
    pub fn close(&mut self, timeout: Duration) -> Result<XenbusState, XenbusFrontendError> {
        match self.set_state(XenbusState::Closed) {
            Ok(()) => {}
            Err(XenbusFrontendError::Xs(e)) if missing(&e) => return Ok(XenbusState::Unknown),
            Err(e) => return Err(e),
        }
        let s = self.wait_backend(timeout, |s| {
            matches!(s, XenbusState::Closed | XenbusState::Unknown)
        })?;
        self.started = false;
        Ok(s)
    }

    /// The xenstore connection (for raw requests).
    pub fn xenstore(&mut self) -> &mut SocketClient {
        &mut self.xs
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use XenbusState as S;

    fn facts(state: S, backend: S, set_up: bool) -> FrontendFacts {
        FrontendFacts {
            state,
            backend,
            set_up,
        }
    }

    #[test]
    fn setup_on_initwait_start_once_on_connected() {
        assert_eq!(
            decide(&facts(S::Initialising, S::InitWait, false), false).event,
            Some(VifEvent::Setup)
        );
        assert_eq!(
            decide(&facts(S::Connected, S::InitWait, true), false),
            Decision::default(),
            "published, waiting for the backend"
        );
        assert_eq!(
            decide(&facts(S::Connected, S::Connected, true), false).event,
            Some(VifEvent::Start)
        );
        assert_eq!(
            decide(&facts(S::Connected, S::Connected, true), true),
            Decision::default(),
            "started once"
        );
    }

    #[test]
    fn teardown_waits_for_the_backend_to_be_closed() {
        let d = decide(&facts(S::Connected, S::Closing, true), true);
        assert_eq!(d.set_state, Some(S::Closed));
        assert_eq!(d.event, None, "the backend still maps the rings");
        let d = decide(&facts(S::Closed, S::Closed, true), true);
        assert_eq!((d.set_state, d.event), (None, Some(VifEvent::Teardown)));
        assert_eq!(
            decide(&facts(S::Closed, S::Closed, false), false),
            Decision::default()
        );
    }

    #[test]
    fn protocol_keys_cover_what_the_backend_reads_and_netfront_writes() {
        use crate::keys::{FrontendKeys, FrontendRings};
        let keys = FrontendKeys {
            tx_ring_ref: 8,
            rx_ring_ref: 9,
            event_channel_tx: 3,
            event_channel_rx: 4,
        };
        for (k, _) in keys.pairs() {
            assert!(PROTOCOL_KEYS.contains(&k), "{k}");
        }
        // Every key parse asks for, with split and with single event channels.
        for single in [false, true] {
            let asked = std::cell::RefCell::new(Vec::new());
            let r = FrontendRings::parse(|k| {
                asked.borrow_mut().push(k.to_string());
                match k {
                    "event-channel-tx" | "event-channel-rx" if single => None,
                    _ => Some("1".into()),
                }
            });
            assert!(r.is_ok(), "{r:?}");
            let asked = asked.into_inner();
            assert!(asked.iter().any(|k| k
                == if single {
                    "event-channel"
                } else {
                    "event-channel-rx"
                }));
            for k in asked {
                assert!(PROTOCOL_KEYS.contains(&k.as_str()), "{k}");
            }
        }
    }

    proptest::proptest! {
        /// Whatever the two states, the decision is one of the step's own actions and
        /// Teardown never comes before the backend is Closed.
        #[test]
        fn decisions_follow_the_step(a in 0u8..9, b in 0u8..9, set_up: bool, started: bool) {
            let f = facts(
                S::parse(Some(&a.to_string())),
                S::parse(Some(&b.to_string())),
                set_up,
            );
            let d = decide(&f, started);
            let step = frontend_step(&f);
            if let Some(s) = d.set_state {
                proptest::prop_assert!(step.contains(&FrontendAction::SetState(s)));
            }
            match d.event {
                Some(VifEvent::Teardown) => {
                    proptest::prop_assert_eq!(f.backend, S::Closed);
                    proptest::prop_assert!(step.contains(&FrontendAction::Teardown));
                }
                Some(VifEvent::Setup) => proptest::prop_assert!(step.contains(&FrontendAction::Setup)),
                Some(VifEvent::Start) => {
                    proptest::prop_assert!(!started && step.contains(&FrontendAction::Start))
                }
                Some(VifEvent::Gone) => proptest::prop_assert!(false, "decide never says Gone"),
                None => {}
            }
        }
    }
}
