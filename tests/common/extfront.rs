//! A hostile external frontend for a domain created with `vif_frontend = "external"`:
//! the test process attaches over the domain's hypervisor socket
//! (docs/hypervisor-socket.md), adopts its memory and grant table, runs the xenbus
//! handshake with Xen's own xenstore tools, and then drives the rings with
//! [`vif::mock::MockFrontend`] — so it can send what no guest kernel would (runts,
//! frames longer than any MTU).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hypervisor::evtchn::{EventFd, Port};
use hypervisor::grant::{GrantRef, GrantTable, NR_RESERVED_ENTRIES};
use hypervisor::hvsock::HvClient;
use hypervisor::memory::{Gfn, GuestMemory};
use hypervisor::DomId;
use vif::env::{EnvError, FrontendEnv, PeerNotifier};
use vif::mock::MockFrontend;

use super::{wait_for, Daemon};

/// Frames and grant references handed out (never reused: tests are short).
#[derive(Debug)]
struct Alloc {
    next_frame: Gfn,
    next_gref: GrantRef,
}

/// [`FrontendEnv`] over the hypervisor socket, as an external frontend process has it.
pub struct SocketEnv {
    client: HvClient,
    domid: DomId,
    grants: GrantTable,
    alloc: Mutex<Alloc>,
}

fn other(e: impl std::fmt::Display) -> EnvError {
    EnvError::Other(e.to_string())
}

impl SocketEnv {
    /// Connects to `RUN_DIR/hv/dom<domid>.sock` and adopts the domain's memory.
    pub fn connect(sock: &std::path::Path) -> SocketEnv {
        let client = HvClient::connect(sock)
            .unwrap_or_else(|e| panic!("connecting {}: {e}", sock.display()));
        let hello = client.hello().expect("hypervisor socket hello");
        let mem = Arc::new(GuestMemory::from_fd(hello.memory).expect("adopt guest memory"));
        let grants = GrantTable::new(hello.domid, mem, hello.grant_frames);
        SocketEnv {
            client,
            domid: hello.domid,
            grants,
            alloc: Mutex::new(Alloc {
                next_frame: Gfn::from(hello.grant_frames),
                next_gref: NR_RESERVED_ENTRIES,
            }),
        }
    }

    fn alloc(&self) -> std::sync::MutexGuard<'_, Alloc> {
        self.alloc.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl FrontendEnv for SocketEnv {
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
        let mut a = self.alloc();
        if a.next_frame >= self.grants.memory().frames() {
            return Err(EnvError::NoFrames(self.domid));
        }
        a.next_frame += 1;
        Ok(a.next_frame - 1)
    }

    fn free_frame(&self, _gfn: Gfn) {}

    fn alloc_gref(&self) -> Result<GrantRef, EnvError> {
        let mut a = self.alloc();
        if a.next_gref >= self.grants.nr_entries() {
            return Err(EnvError::NoGrantRefs(self.domid));
        }
        a.next_gref += 1;
        Ok(a.next_gref - 1)
    }

    fn free_gref(&self, _gref: GrantRef) {}

    fn alloc_unbound(&self, remote: DomId) -> Result<(Port, Arc<EventFd>), EnvError> {
        let (port, fd) = self.client.alloc_unbound(remote).map_err(other)?;
        Ok((port, Arc::new(fd)))
    }

    fn notifier(&self, port: Port) -> Result<PeerNotifier, EnvError> {
        let fd = self.client.notifier(port).map_err(other)?;
        Ok(PeerNotifier::Fd(Arc::new(fd)))
    }

    fn close(&self, port: Port) {
        let _ = self.client.close(port);
    }
}

/// An external frontend connected to one vif of a domain.
pub struct ExternalVif {
    /// The rings, under the test's full control.
    pub mock: MockFrontend,
    /// The domain.
    pub domid: DomId,
    /// The vif's device id.
    pub devid: u32,
}

fn xs_read(d: &Daemon, path: &str) -> Option<String> {
    let o = d.xs_tool(&d.dom0_socket(), "xenstore-read", &[path]);
    o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
}

/// Attaches to vif `devid` of `domain` (created with `vif_frontend = "external"`):
/// waits for the backend's InitWait, publishes the rings and event channels as Linux
/// netfront does, switches to Connected and waits until the backend is Connected too.
pub fn attach(d: &Daemon, domain: &str, devid: u32) -> ExternalVif {
    let domid = d.domid(domain);
    let sock: PathBuf = d.run_dir.join("hv").join(format!("dom{domid}.sock"));
    let env = SocketEnv::connect(&sock);
    let mut mock = MockFrontend::new(Box::new(env), 0).expect("mock frontend set-up");
    let be = format!("/local/domain/0/backend/vif/{domid}/{devid}");
    let fe = format!("/local/domain/{domid}/device/vif/{devid}");
    assert!(
        wait_for(Duration::from_secs(10), || xs_read(
            d,
            &format!("{be}/state")
        )
        .as_deref()
            == Some("2")),
        "backend {be} never reached InitWait"
    );
    let guest_sock = d.domain_socket(domain);
    let mut args: Vec<String> = Vec::new();
    for (k, v) in mock.keys().pairs() {
        args.push(format!("{fe}/{k}"));
        args.push(v);
    }
    let args_ref: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = d.xs_tool(&guest_sock, "xenstore-write", &args_ref);
    assert!(
        o.status.success(),
        "writing frontend keys: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = d.xs_tool(
        &guest_sock,
        "xenstore-write",
        &[&format!("{fe}/state"), "4"],
    );
    assert!(o.status.success(), "frontend state 4");
    assert!(
        wait_for(Duration::from_secs(10), || xs_read(
            d,
            &format!("{be}/state")
        )
        .as_deref()
            == Some("4")),
        "backend {be} never connected; log:\n{}",
        d.log()
    );
    assert!(
        wait_for(Duration::from_secs(5), || mock.connected().is_ok()),
        "the backend never bound the event channels"
    );
    ExternalVif { mock, domid, devid }
}
