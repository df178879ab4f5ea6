//! The pure cores of netback, the backend half of a vif (xen-networking.md §1.3–§1.8,
//! robustness.md §1.1 and §3(a)).
//!
//! * [`tx`] — turn the requests copied off a tx ring into packets, drops or a fatal
//!   verdict, with one response per consumed slot;
//! * [`rx`] — plan the grant copies and responses that deliver a packet into posted rx
//!   buffers, and the bounded rx backlog with drain and stall timers;
//! * [`credit`] — the `rate` credit limiter;
//! * [`reason`] — the closed sets of drop and fatal reasons and their counters.
//!
//! A shell (the datapath thread owning a vif) feeds these with ring contents and the
//! current time and carries out what they return.

pub mod credit;
pub mod port;
pub mod reason;
pub mod rx;
pub mod tx;

pub use reason::{DropReason, FatalReason, ReasonCounters};
