//! A hostile external frontend for a domain created with `vif_frontend = "external"`:
//! the test process attaches over the domain's hypervisor socket
//! (docs/hypervisor-socket.md, `vif::env_socket::SocketEnv`), runs Xen's vif handshake
//! over the domain's xenstore socket (`vif::extfront::XenbusFrontend`) and then drives
//! the rings with [`vif::mock::MockFrontend`] — so it can send what no guest kernel
//! would (runts, frames longer than any MTU).

use std::time::Duration;

use hypervisor::DomId;
use vif::env_socket::SocketEnv;
use vif::extfront::XenbusFrontend;
use vif::mock::MockFrontend;

use super::{wait_for, Daemon};

/// An external frontend connected to one vif of a domain.
pub struct ExternalVif {
    /// The rings, under the test's full control.
    pub mock: MockFrontend,
    /// The XenBus side (kept open: closing it would not end the vif, but keeping it
    /// shows the frontend is alive).
    pub xenbus: XenbusFrontend,
    /// The domain.
    pub domid: DomId,
    /// The vif's device id.
    pub devid: u32,
}

/// Attaches to vif `devid` of `domain` (created with `vif_frontend = "external"`):
/// publishes the rings and event channels as Linux netfront does, switches to
/// Connected and waits until the backend is Connected too.
pub fn attach(d: &Daemon, domain: &str, devid: u32) -> ExternalVif {
    let domid = d.domid(domain);
    let sock = d.run_dir.join("hv").join(format!("dom{domid}.sock"));
    let env = SocketEnv::connect_for_vif(&sock, devid)
        .unwrap_or_else(|e| panic!("hypervisor socket {}: {e}", sock.display()));
    let xs_path = env.xenstore_path().to_path_buf();
    let mut mock = MockFrontend::new(Box::new(env), 0).expect("mock frontend set-up");
    let mut xenbus = XenbusFrontend::open(&xs_path, devid)
        .unwrap_or_else(|e| panic!("xenstore {}: {e}", xs_path.display()));
    xenbus
        .connect(&mock.keys().pairs(), Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("vif handshake: {e}; log:\n{}", d.log()));
    assert!(
        wait_for(Duration::from_secs(5), || mock.connected().is_ok()),
        "the backend never bound the event channels"
    );
    ExternalVif {
        mock,
        xenbus,
        domid,
        devid,
    }
}
