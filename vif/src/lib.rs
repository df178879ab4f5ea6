//! Xen's virtual network interface: the netif ring ABI, the front/back ring index
//! protocol, and the pure (sans-IO) cores of netback and netfront.
//!
//! * [`netif`] — the `#[repr(C)]` records of `xen/io/netif.h` with explicit wire encoding;
//! * [`ring`] — one shared ring page, front and back ends (`xen/io/ring.h` §1.2);
//! * [`netback`] — tx packet building and validation, rx copy planning and the rx backlog,
//!   the credit rate limiter, drop/fatal reasons;
//! * [`netfront`] — tx slot planning, rx buffer posting and rx response parsing.
//!
//! The shells around them: [`netback::port::NetbackPort`] (a vif's backend as a switch
//! port), [`netfront::port::NetfrontPort`] (a guest's TAP driven through the rings),
//! [`env`](mod@env) (what a frontend needs from its hypervisor: [`env::FrontendEnv`],
//! [`env::LocalEnv`]; [`env_socket::SocketEnv`] for a frontend in another process, over
//! the hypervisor socket), [`keys`] (the frontend's xenstore keys), [`extfront`] (the
//! frontend's XenBus handshake over a domain's xenstore socket) and [`mock`] (a
//! frontend under a test's control, hostile sequences included).
//!
//! Nothing here reads a clock or does I/O except the ring's accesses to guest memory,
//! which go through `hypervisor::memory`'s bounds-checked volatile accessors.

#![warn(missing_docs)]

pub mod env;
pub mod env_socket;
pub mod extfront;
pub mod hotplug;
pub mod keys;
pub mod mock;
pub mod netback;
pub mod netfront;
pub mod netif;
pub mod ring;
pub mod xenbus;
