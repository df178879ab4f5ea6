//! Xen's virtual network interface: the netif ring ABI, the front/back ring index
//! protocol, and the pure (sans-IO) cores of netback and netfront.
//!
//! * [`netif`] — the `#[repr(C)]` records of `xen/io/netif.h` with explicit wire encoding;
//! * [`ring`] — one shared ring page, front and back ends (`xen/io/ring.h` §1.2);
//! * [`netback`] — tx packet building and validation, rx copy planning and the rx backlog,
//!   the credit rate limiter, drop/fatal reasons;
//! * [`netfront`] — tx slot planning, rx buffer posting and rx response parsing.
//!
//! Nothing here reads a clock or does I/O except the ring's accesses to guest memory,
//! which go through `hypervisor::memory`'s bounds-checked volatile accessors.

#![warn(missing_docs)]

pub mod env;
pub mod hotplug;
pub mod keys;
pub mod mock;
pub mod netback;
pub mod netfront;
pub mod netif;
pub mod ring;
pub mod xenbus;
