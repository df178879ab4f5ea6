//! Xenstore: the `xs_wire` codec, paths, permissions and the pure store that
//! domnet's xenstored daemon is built on (xen-networking.md §4).
//!
//! * [`wire`] — message framing, types and error names;
//! * [`path`] — canonicalisation and validation of node paths;
//! * [`perms`] — permission lists and the access check;
//! * [`store`] — the tree, watches, transactions, quotas and domains, as a
//!   sans-IO state machine: [`store::Store::handle`] turns one request into
//!   replies, watch events and journal records.

pub mod path;
pub mod perms;
pub mod store;
pub mod wire;

pub use perms::{Access, Perm, PermList};
pub use store::{Change, ConnId, Outgoing, Quotas, Response, Store, StoreStats};
pub use wire::{FrameDecoder, FrameError, Header, Message, MsgType, XsError};
