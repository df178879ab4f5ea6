//! The XenBus device handshake for vifs (xen-networking.md §5), as pure state machines.
//!
//! Each end owns a `state` key; each reacts to the other's. The backend writes its
//! features and goes to InitWait at probe; it connects the rings when the frontend is
//! Connected, but publishes Connected only once the hotplug script has reported
//! `hotplug-status = connected`. Closing/Closed on either side walks the other back.
//! The machines here only decide; the daemon's shells read xenstore, feed the facts in
//! and carry out the actions.

use std::fmt;

/// `enum xenbus_state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum XenbusState {
    /// 0 (also what a missing `state` key reads as).
    Unknown,
    /// 1.
    Initialising,
    /// 2.
    InitWait,
    /// 3.
    Initialised,
    /// 4.
    Connected,
    /// 5.
    Closing,
    /// 6.
    Closed,
    /// 7.
    Reconfiguring,
    /// 8.
    Reconfigured,
}

impl XenbusState {
    /// Parses the decimal `state` value; anything else (or a missing key) is Unknown.
    pub fn parse(value: Option<&str>) -> XenbusState {
        match value.map(str::trim) {
            Some("1") => XenbusState::Initialising,
            Some("2") => XenbusState::InitWait,
            Some("3") => XenbusState::Initialised,
            Some("4") => XenbusState::Connected,
            Some("5") => XenbusState::Closing,
            Some("6") => XenbusState::Closed,
            Some("7") => XenbusState::Reconfiguring,
            Some("8") => XenbusState::Reconfigured,
            _ => XenbusState::Unknown,
        }
    }

    /// The number stored in xenstore.
    pub fn code(self) -> u8 {
        match self {
            XenbusState::Unknown => 0,
            XenbusState::Initialising => 1,
            XenbusState::InitWait => 2,
            XenbusState::Initialised => 3,
            XenbusState::Connected => 4,
            XenbusState::Closing => 5,
            XenbusState::Closed => 6,
            XenbusState::Reconfiguring => 7,
            XenbusState::Reconfigured => 8,
        }
    }
}

impl fmt::Display for XenbusState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code())
    }
}

/// What the backend knows about one vif.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendFacts {
    /// Its own `state`.
    pub state: XenbusState,
    /// The frontend's `state`.
    pub frontend: XenbusState,
    /// `hotplug-status` (None when absent).
    pub hotplug_status: Option<String>,
    /// `online` = 1.
    pub online: bool,
    /// Rings mapped and event channels bound.
    pub rings_connected: bool,
    /// A connect attempt failed fatally (bad frontend keys); stays until the frontend
    /// starts over.
    pub connect_failed: bool,
    /// The backend probed (features written, port created).
    pub probed: bool,
}

/// What the backend should do next (in order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendAction {
    /// Write the feature keys and create the (disconnected) port.
    Probe,
    /// Read the frontend's keys, map the rings, bind the event channels.
    ConnectRings,
    /// Unmap the rings and close the event channels.
    DisconnectRings,
    /// Write our `state`.
    SetState(XenbusState),
    /// `online` is 0 and the frontend is gone: remove `hotplug-status` and the port.
    Unregister,
}

/// Decides the backend's next actions from the facts (Linux netback's
/// `frontend_changed` / `hotplug_status_changed` / `set_backend_state`, in the
/// shortest legal path).
pub fn backend_step(f: &BackendFacts) -> Vec<BackendAction> {
    use BackendAction::*;
    use XenbusState as S;
    let mut out = Vec::new();
    if !f.probed {
        if f.online && matches!(f.state, S::Initialising | S::Unknown | S::InitWait) {
            out.push(Probe);
            if f.state != S::InitWait {
                out.push(SetState(S::InitWait));
            }
        }
        return out;
    }
    match f.frontend {
        S::Connected if f.online => {
            if !f.rings_connected && !f.connect_failed {
                out.push(ConnectRings);
                // Connected is published by the next step, once the rings are up and
                // the hotplug script has reported success.
                return out;
            }
            if f.rings_connected
                && f.hotplug_status.as_deref() == Some("connected")
                && f.state != S::Connected
            {
                out.push(SetState(S::Connected));
            }
            if f.connect_failed && f.state != S::Closing && f.state != S::Closed {
                out.push(SetState(S::Closing));
            }
        }
        S::Initialising | S::InitWait | S::Initialised if f.online => {
            // A frontend (re)starting: tear down a previous connection and wait again.
            if f.rings_connected {
                out.push(DisconnectRings);
            }
            if matches!(f.state, S::Closing | S::Closed | S::Connected) {
                out.push(SetState(S::InitWait));
            }
        }
        S::Closing => {
            if f.rings_connected {
                out.push(DisconnectRings);
            }
            if f.state != S::Closing && f.state != S::Closed {
                out.push(SetState(S::Closing));
            }
        }
        _ => {
            if f.rings_connected {
                out.push(DisconnectRings);
            }
            if matches!(f.frontend, S::Closed | S::Unknown) || !f.online {
                if f.state != S::Closed {
                    if f.state != S::Closing && f.state == S::Connected {
                        out.push(SetState(S::Closing));
                    }
                    out.push(SetState(S::Closed));
                }
                if !f.online {
                    out.push(Unregister);
                }
            }
        }
    }
    out
}

/// What an in-daemon frontend knows about one vif.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrontendFacts {
    /// Its own `state`.
    pub state: XenbusState,
    /// The backend's `state`.
    pub backend: XenbusState,
    /// Rings set up and keys published.
    pub set_up: bool,
}

/// What the frontend should do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrontendAction {
    /// Allocate and grant rings, bind event channels, write the keys and state 4 (one
    /// transaction; Linux netfront skips Initialised).
    Setup,
    /// The backend is Connected: start moving traffic (announce ourselves).
    Start,
    /// Tear everything down.
    Teardown,
    /// Write our `state`.
    SetState(XenbusState),
}

/// Decides the frontend's next actions (Linux netfront's `netback_changed`).
pub fn frontend_step(f: &FrontendFacts) -> Vec<FrontendAction> {
    use FrontendAction::*;
    use XenbusState as S;
    let mut out = Vec::new();
    match f.backend {
        S::InitWait | S::Initialised
            if !f.set_up && matches!(f.state, S::Initialising | S::Unknown | S::Closed) =>
        {
            out.push(Setup);
        }
        S::Connected if f.set_up && f.state == S::Connected => out.push(Start),
        S::Closing | S::Closed => {
            if f.set_up {
                out.push(Teardown);
            }
            if f.state != S::Closed {
                out.push(SetState(S::Closed));
            }
        }
        _ => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use XenbusState as S;

    fn facts() -> BackendFacts {
        BackendFacts {
            state: S::Initialising,
            frontend: S::Initialising,
            hotplug_status: Some(String::new()),
            online: true,
            rings_connected: false,
            connect_failed: false,
            probed: false,
        }
    }

    #[test]
    fn state_strings_round_trip() {
        for c in 0..=8u8 {
            let s = XenbusState::parse(Some(&c.to_string()));
            assert_eq!(s.code(), c);
        }
        assert_eq!(XenbusState::parse(None), S::Unknown);
        assert_eq!(XenbusState::parse(Some("garbage")), S::Unknown);
    }

    #[test]
    fn connect_waits_for_hotplug_status() {
        let mut f = facts();
        assert_eq!(
            backend_step(&f),
            vec![BackendAction::Probe, BackendAction::SetState(S::InitWait)]
        );
        f.probed = true;
        f.state = S::InitWait;
        assert!(backend_step(&f).is_empty(), "waits for the frontend");
        f.frontend = S::Connected;
        assert_eq!(backend_step(&f), vec![BackendAction::ConnectRings]);
        f.rings_connected = true;
        assert!(
            backend_step(&f).is_empty(),
            "Connected is held until hotplug-status says so"
        );
        f.hotplug_status = Some("connected".into());
        assert_eq!(
            backend_step(&f),
            vec![BackendAction::SetState(S::Connected)]
        );
        f.state = S::Connected;
        assert!(backend_step(&f).is_empty());
        f.hotplug_status = Some("error".into());
        f.rings_connected = true;
        assert!(
            backend_step(&f).is_empty(),
            "a connected vif stays up whatever the script says later"
        );
    }

    #[test]
    fn detach_walks_closing_closed_then_unregisters() {
        let mut f = facts();
        f.probed = true;
        f.state = S::Connected;
        f.frontend = S::Connected;
        f.rings_connected = true;
        f.hotplug_status = Some("connected".into());
        // libxl: online = 0, backend state = 5.
        f.online = false;
        f.state = S::Closing;
        // Frontend sees Closing, closes.
        f.frontend = S::Closed;
        assert_eq!(
            backend_step(&f),
            vec![
                BackendAction::DisconnectRings,
                BackendAction::SetState(S::Closed),
                BackendAction::Unregister
            ]
        );
    }

    #[test]
    fn frontend_going_away_closes_the_backend() {
        let mut f = facts();
        f.probed = true;
        f.state = S::Connected;
        f.frontend = S::Unknown; // frontend dir vanished
        f.rings_connected = true;
        assert_eq!(
            backend_step(&f),
            vec![
                BackendAction::DisconnectRings,
                BackendAction::SetState(S::Closing),
                BackendAction::SetState(S::Closed)
            ]
        );
        // With online still 1 the backend stays registered and can reconnect.
        f.rings_connected = false;
        f.state = S::Closed;
        f.frontend = S::Initialising;
        assert_eq!(backend_step(&f), vec![BackendAction::SetState(S::InitWait)]);
    }

    #[test]
    fn bad_frontend_keys_close_the_device() {
        let mut f = facts();
        f.probed = true;
        f.state = S::InitWait;
        f.frontend = S::Connected;
        f.connect_failed = true;
        assert_eq!(backend_step(&f), vec![BackendAction::SetState(S::Closing)]);
    }

    #[test]
    fn frontend_follows_the_backend() {
        let mut f = FrontendFacts {
            state: S::Initialising,
            backend: S::Initialising,
            set_up: false,
        };
        assert!(frontend_step(&f).is_empty());
        f.backend = S::InitWait;
        assert_eq!(frontend_step(&f), vec![FrontendAction::Setup]);
        f.set_up = true;
        f.state = S::Connected;
        assert!(frontend_step(&f).is_empty());
        f.backend = S::Connected;
        assert_eq!(frontend_step(&f), vec![FrontendAction::Start]);
        f.backend = S::Closing;
        assert_eq!(
            frontend_step(&f),
            vec![
                FrontendAction::Teardown,
                FrontendAction::SetState(S::Closed)
            ]
        );
    }
}
