//! The control socket protocol between the `domnet` CLI and the daemon.
//!
//! One request per connection: the client writes one JSON object and a newline, the
//! daemon answers with one JSON object and a newline (`{"ok":true,"data":…}` or
//! `{"ok":false,"error":"…","kind":"…"}`) and closes. Streaming verbs (capture) send
//! further lines after the first answer.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Default run directory (sockets, pid file).
pub const DEFAULT_RUN_DIR: &str = "/run/domnet";
/// Default state directory (journal).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/domnet";

/// The control socket of a daemon whose run directory is `run_dir`.
pub fn control_socket(run_dir: &Path) -> PathBuf {
    run_dir.join("control.sock")
}

/// A request from the CLI.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "verb", rename_all = "kebab-case")]
pub enum Request {
    /// Create a domain from xl.cfg text.
    Create {
        /// The configuration file's contents.
        config: String,
        /// Its path, for messages.
        path: String,
    },
    /// Destroy a domain.
    Destroy {
        /// Name or id.
        domain: String,
    },
    /// List domains.
    List,
    /// Where a domain's xenstore socket is (dom0's when `None`).
    XenstorePath {
        /// Name or id.
        domain: Option<String>,
    },
    /// Port counters (all ports, or one).
    Stats {
        /// Only this port.
        port: Option<String>,
    },
    /// Create a bridge with its host port.
    BridgeAdd {
        /// Bridge name (also its host port's name).
        name: String,
        /// MAC aging in seconds.
        aging: Option<u64>,
    },
    /// Delete a bridge.
    BridgeDel {
        /// Bridge name.
        name: String,
    },
    /// List bridges.
    BridgeShow,
    /// Attach a port to a bridge.
    BridgeAddif {
        /// Bridge.
        bridge: String,
        /// Port.
        port: String,
        /// MTU to set on the port.
        mtu: Option<u32>,
        /// Called by a hotplug script for a vif: the bridge is the one the vif's
        /// backend names, else `bridge`, else the first bridge, and success is
        /// reported by writing the backend's `hotplug-status` = `connected`.
        #[serde(default)]
        hotplug: bool,
    },
    /// Detach a port from a bridge.
    BridgeDelif {
        /// Bridge.
        bridge: String,
        /// Port.
        port: String,
    },
    /// dom0 bridge set-up.
    NetworkBridge {
        /// start, stop or status.
        action: String,
        /// The bridge.
        bridge: String,
        /// The NIC (default: the default-route device, else eth0).
        netdev: Option<String>,
        /// Xen 3.x renames (netdev → `p<netdev>`).
        legacy_renames: bool,
    },
    /// A bridge's MAC table.
    FdbShow {
        /// Bridge.
        bridge: String,
    },
    /// Add a static MAC table entry.
    FdbAdd {
        /// Bridge.
        bridge: String,
        /// MAC.
        mac: String,
        /// Port.
        port: String,
    },
    /// Delete a MAC table entry.
    FdbDel {
        /// Bridge.
        bridge: String,
        /// MAC.
        mac: String,
    },
    /// Attach a vif to a domain (xl network-attach).
    NetworkAttach {
        /// Name or id.
        domain: String,
        /// vif spec items.
        spec: Vec<String>,
    },
    /// Detach a vif (xl network-detach).
    NetworkDetach {
        /// Name or id.
        domain: String,
        /// Devid or MAC.
        device: String,
    },
    /// List vifs (xl network-list).
    NetworkList {
        /// Names or ids.
        domains: Vec<String>,
    },
    /// Define (or redefine) a NAT network from TOML.
    NetDefine {
        /// The file's contents.
        config: String,
        /// Its path, for messages.
        path: String,
    },
    /// Start a network.
    NetStart {
        /// Network name.
        name: String,
    },
    /// Stop a network.
    NetStop {
        /// Network name.
        name: String,
    },
    /// List networks.
    NetList,
    /// Port forwards of a network.
    NetForward {
        /// Network name.
        name: String,
        /// add, del or list.
        action: String,
        /// PROTO:HOSTPORT:GUESTIP:GUESTPORT.
        spec: Option<String>,
    },
    /// Put a vif in route mode (vif-route).
    RouteAttach {
        /// The vif port.
        vif: String,
        /// dom0's uplink (default: the default-route device).
        netdev: Option<String>,
        /// vif-nat's addressing and masquerade instead of vif-route's.
        #[serde(default)]
        nat: bool,
        /// Called by a hotplug script: success is reported by writing the vif's
        /// backend `hotplug-status` = `connected`.
        #[serde(default)]
        hotplug: bool,
    },
    /// Take a vif out of route mode.
    RouteDetach {
        /// The vif port.
        vif: String,
        /// dom0's uplink it was masqueraded out of (vif-nat).
        #[serde(default)]
        netdev: Option<String>,
        /// Undo vif-nat's part too.
        #[serde(default)]
        nat: bool,
    },
    /// Routed vifs.
    RouteShow,
    /// Impair a port's link in both directions, as netem would (test rigs); all zeros
    /// lift it.
    SetImpairment {
        /// The port.
        port: String,
        /// Added one-way delay, µs.
        delay_us: u64,
        /// Uniform jitter around the delay, µs (at most the delay).
        jitter_us: u64,
        /// Loss probability, parts per million.
        loss_ppm: u32,
    },
    /// Stream a pcap of a port's frames (the answer line is followed by pcap bytes).
    Capture {
        /// Port.
        port: String,
        /// Stop after this many frames.
        count: Option<u64>,
    },
}

/// Why a request failed; maps to the CLI's exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorKind {
    /// The request named something that does not exist or is malformed (exit 1).
    BadInput,
    /// The operation was valid but failed (exit 1).
    Failed,
    /// The daemon hit an internal error (exit 4).
    Internal,
}

/// The daemon's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Response {
    /// Success?
    pub ok: bool,
    /// The result on success.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub data: serde_json::Value,
    /// Non-fatal remarks (e.g. ignored config keys) to show on stderr.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// The error message on failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The error class on failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<ErrorKind>,
}

impl Response {
    /// A success carrying `data`.
    pub fn ok(data: impl Serialize) -> Response {
        Response {
            ok: true,
            data: serde_json::to_value(data).unwrap_or(serde_json::Value::Null),
            warnings: Vec::new(),
            error: None,
            kind: None,
        }
    }

    /// A failure.
    pub fn err(kind: ErrorKind, msg: impl Into<String>) -> Response {
        Response {
            ok: false,
            data: serde_json::Value::Null,
            warnings: Vec::new(),
            error: Some(msg.into()),
            kind: Some(kind),
        }
    }

    /// Adds warnings.
    pub fn with_warnings(mut self, w: Vec<String>) -> Response {
        self.warnings = w;
        self
    }
}

/// Failure to talk to the daemon at all.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// No daemon listening.
    #[error("cannot reach the domnet daemon at {path}: {source} (is `domnet daemon` running? set DOMNET_RUN_DIR or --run-dir)")]
    Unreachable {
        /// The socket tried.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The conversation broke.
    #[error("talking to the domnet daemon: {0}")]
    Protocol(String),
}

/// Sends one request and reads the answer.
pub fn call(run_dir: &Path, req: &Request) -> Result<Response, CallError> {
    call_stream(run_dir, req).map(|(r, _)| r)
}

/// Sends one request, reads the answer line and returns it with the rest of the stream
/// (for streaming verbs such as `capture`).
pub fn call_stream(
    run_dir: &Path,
    req: &Request,
) -> Result<(Response, BufReader<UnixStream>), CallError> {
    let path = control_socket(run_dir);
    let stream = UnixStream::connect(&path).map_err(|source| CallError::Unreachable {
        path: path.clone(),
        source,
    })?;
    let timeout = match req {
        Request::Capture { .. } => None,
        _ => Some(Duration::from_secs(300)),
    };
    let _ = stream.set_read_timeout(timeout);
    let mut line = serde_json::to_vec(req).map_err(|e| CallError::Protocol(e.to_string()))?;
    line.push(b'\n');
    (&stream)
        .write_all(&line)
        .map_err(|e| CallError::Protocol(e.to_string()))?;
    let mut reader = BufReader::new(stream);
    let mut answer = String::new();
    reader
        .read_line(&mut answer)
        .map_err(|e| CallError::Protocol(e.to_string()))?;
    if answer.is_empty() {
        return Err(CallError::Protocol(
            "the daemon closed the connection without answering".into(),
        ));
    }
    let resp = serde_json::from_str(&answer)
        .map_err(|e| CallError::Protocol(format!("bad answer: {e}")))?;
    Ok((resp, reader))
}
