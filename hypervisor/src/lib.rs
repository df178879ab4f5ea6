//! The emulated hypervisor: domains, guest memory, grant tables, event channels and
//! the xenstore tree.
//!
//! Everything that decides something is a pure state machine (the xenstore
//! [`xenstore::store::Store`], the grant-table rules, the event-channel port table);
//! the thin shells around them (the xenstored socket server, memfd mappings,
//! eventfds) live in the daemon or in small I/O modules here.

pub mod domain;
pub mod evtchn;
pub mod grant;
pub mod hv;
pub mod hvsock;
pub mod journal;
pub mod memory;
pub mod xenstore;
pub mod xenstored;
pub mod xs_socket;

/// A Xen domain id (`domid_t`, 16 bits). Dom0 is 0; guests count up from 1.
pub type DomId = u16;

/// Dom0, the privileged control domain that runs the backends.
pub const DOM0: DomId = 0;
/// `DOMID_SELF`: "the calling domain" in hypercall arguments.
pub const DOMID_SELF: DomId = 0x7FF0;
/// `DOMID_FIRST_RESERVED`: ids from here up are never real domains.
pub const DOMID_FIRST_RESERVED: DomId = 0x7FF0;
/// `DOMID_INVALID`.
pub const DOMID_INVALID: DomId = 0x7FF4;
