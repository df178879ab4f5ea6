//! A small synchronous rtnetlink client: links, addresses, routes, neighbours.
//!
//! Hand-rolled over a `NETLINK_ROUTE` socket (no tokio, no netlink crates): `wire` is the
//! pure message/attribute codec, `socket` the request/ACK/dump loop, and one module per
//! object type holds that type's decoding and the [`Rtnl`] methods that act on it. Every
//! request carries `NLM_F_ACK` and waits for the kernel's verdict; dumps are read to
//! `NLMSG_DONE` and restarted when the kernel flags them `NLM_F_DUMP_INTR`.
//!
//! A [`Rtnl`] handle is bound to the network namespace it was opened in ([`Rtnl::open`]: the
//! calling thread's; [`Rtnl::open_in`]: any [`NetNs`]), for its whole life, whichever thread
//! later uses it. It is `Send` but not `Sync`: one request at a time.
//!
//! [`AddrRouteSnapshot`] moves a device's addresses and routes to another device and back,
//! the core of `network-bridge start/stop`.

mod addr;
mod error;
mod link;
mod neigh;
mod netaddr;
mod route;
mod snapshot;
mod socket;
mod uapi;
pub(crate) mod wire;

pub use addr::{AddrFlags, Address, Scope, INFINITY_LIFETIME};
pub use error::RtnlError;
pub use link::{
    validate_ifname, Link, LinkFlags, LinkId, LinkKind, LinkStats, OperState, IFNAME_MAX,
};
pub use neigh::{Neighbour, NeighbourState};
pub use netaddr::{AddrParseError, IpCidr, MacAddr};
pub use route::{NextHop, Route, RouteProtocol, RouteTable, RouteType};
pub use snapshot::{apply_transfer, AddrRouteSnapshot, TransferStep};
pub use wire::WireError;

use crate::netns::NetNs;
use socket::{NetlinkSocket, RequestError};
use wire::{MessageBuilder, NlMsg};

/// How many times a dump is restarted after the kernel reports it inconsistent.
const DUMP_RETRIES: usize = 8;

/// A synchronous rtnetlink handle bound to one network namespace.
#[derive(Debug)]
pub struct Rtnl {
    sock: NetlinkSocket,
}

impl Rtnl {
    /// Opens a handle in the calling thread's network namespace.
    pub fn open() -> Result<Rtnl, RtnlError> {
        let sock = NetlinkSocket::open().map_err(|source| RtnlError::Io {
            op: "opening NETLINK_ROUTE socket".into(),
            source,
        })?;
        Ok(Rtnl { sock })
    }

    /// Opens a handle bound to `ns`: the socket is created on a thread inside `ns`, and
    /// stays there.
    pub fn open_in(ns: &NetNs) -> Result<Rtnl, RtnlError> {
        ns.run(Rtnl::open)?
    }

    fn convert(err: RequestError, op: impl FnOnce() -> String) -> RtnlError {
        match err {
            RequestError::Kernel(ack) => RtnlError::Kernel {
                op: op(),
                errno: ack.errno,
                message: ack.message,
            },
            RequestError::Io(source) => RtnlError::Io { op: op(), source },
            RequestError::Wire(source) => RtnlError::Malformed { op: op(), source },
            RequestError::Interrupted => RtnlError::Io {
                op: op(),
                source: std::io::Error::new(
                    std::io::ErrorKind::Interrupted,
                    "dump kept being interrupted by concurrent changes",
                ),
            },
        }
    }

    /// Sends a request and waits for its ACK. `op` describes it for the error.
    pub(crate) fn execute(
        &self,
        b: MessageBuilder,
        op: impl FnOnce() -> String,
    ) -> Result<(), RtnlError> {
        self.sock
            .request(b, |_| Ok(()))
            .map_err(|e| Self::convert(e, op))
    }

    /// Sends a non-dump request (e.g. a GET by name) and decodes its replies.
    pub(crate) fn query<T>(
        &self,
        b: MessageBuilder,
        op: impl FnOnce() -> String,
        mut parse: impl FnMut(&NlMsg<'_>) -> Result<Option<T>, WireError>,
    ) -> Result<Vec<T>, RtnlError> {
        let mut out = Vec::new();
        let r = self.sock.request(b, |m| {
            if let Some(t) = parse(m)? {
                out.push(t);
            }
            Ok(())
        });
        r.map_err(|e| Self::convert(e, op))?;
        Ok(out)
    }

    /// Runs a dump to completion, restarting it while the kernel flags it interrupted.
    pub(crate) fn dump<T>(
        &self,
        b: MessageBuilder,
        op: impl FnOnce() -> String,
        mut parse: impl FnMut(&NlMsg<'_>) -> Result<Option<T>, WireError>,
    ) -> Result<Vec<T>, RtnlError> {
        let mut last = RequestError::Interrupted;
        for _ in 0..DUMP_RETRIES {
            let mut out = Vec::new();
            let r = self.sock.dump(b.clone(), |m| {
                if let Some(t) = parse(m)? {
                    out.push(t);
                }
                Ok(())
            });
            match r {
                Ok(()) => return Ok(out),
                Err(RequestError::Interrupted) => last = RequestError::Interrupted,
                Err(e) => {
                    last = e;
                    break;
                }
            }
        }
        Err(Self::convert(last, op))
    }
}

/// Test helper: links with carrier in kernels without the `dummy` driver.
#[cfg(test)]
pub(crate) mod testing {
    use super::Rtnl;

    /// Creates a veth pair `name` <-> `name`+`p` in the handle's namespace, both ends up,
    /// and returns the index of `name`. Behaves like a dummy device with carrier.
    pub(crate) fn veth_link(r: &Rtnl, name: &str) -> u32 {
        let peer = format!("{name}p");
        r.create_veth(name, &peer, None).unwrap();
        r.set_up(name).unwrap();
        r.set_up(peer.as_str()).unwrap();
        r.link_by_name(name).unwrap().index
    }
}

#[cfg(test)]
mod tests {
    /// Handles move between threads (the daemon opens them on one thread and uses them on
    /// another); `Rtnl` is deliberately not `Sync`.
    #[test]
    fn handles_are_send() {
        fn is_send<T: Send>() {}
        fn is_sync<T: Sync>() {}
        is_send::<super::Rtnl>();
        is_send::<crate::netns::NetNs>();
        is_send::<crate::tap::Tap>();
        is_sync::<crate::tap::Tap>();
    }
}
