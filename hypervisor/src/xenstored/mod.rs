//! xenstored: the unix-socket shell around the pure [`crate::xenstore::store::Store`],
//! plus the domain registry and the durable journal.
//!
//! One thread ("xenstored") owns the store, the registry and the journal and serves,
//! with one epoll loop like C xenstored:
//!
//! * `RUN_DIR/xenstored/socket` — privileged dom0 connections (what Xen's tools use
//!   through `XENSTORED_PATH`);
//! * `RUN_DIR/xenstored/dom<D>/socket` — one per guest domain; connections act as that
//!   unprivileged domain (relative paths under its home, quotas, permission checks);
//! * in-process clients ([`XsClient`]) — the toolstack, backends and frontends of the
//!   daemon, each with its own domid and privilege.
//!
//! Durability is group commit: all requests that arrive in one loop round are applied,
//! their committed changes are appended to the journal as one batch and synced, and
//! only then are the replies and watch events of that round sent.

mod client;
pub mod domtree;
mod server;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use client::{WatchEvent, XsClient, XsClientError};
pub use server::ServerStats;

use crate::domain::{DomainInfo, DomainRequest};
use crate::hv::Hypervisor;
use crate::journal::SyncPolicy;
use crate::xenstore::store::Quotas;
use crate::DomId;

/// Record kinds in the journal.
pub mod record_kind {
    /// A committed xenstore change (`Change::encode`).
    pub const XENSTORE: u8 = 1;
    /// A domain registry change (JSON of `RegistryChange`).
    pub const REGISTRY: u8 = 2;
}

/// How to run xenstored.
#[derive(Debug, Clone)]
pub struct XenstoredConfig {
    /// Sockets live under `run_dir/xenstored/`.
    pub run_dir: PathBuf,
    /// The journal lives in `state_dir`.
    pub state_dir: PathBuf,
    /// When journal writes are forced to disk.
    pub sync: SyncPolicy,
    /// Quotas for unprivileged domains.
    pub quotas: Quotas,
    /// Compact the journal into a snapshot once the log passes this many bytes.
    pub compact_after_bytes: u64,
}

impl XenstoredConfig {
    /// Defaults for the given directories: fdatasync on commit, C xenstored's quotas,
    /// compaction at 8 MiB of log.
    pub fn new(run_dir: &Path, state_dir: &Path) -> XenstoredConfig {
        XenstoredConfig {
            run_dir: run_dir.to_path_buf(),
            state_dir: state_dir.to_path_buf(),
            sync: SyncPolicy::Data,
            quotas: Quotas::default(),
            compact_after_bytes: 8 << 20,
        }
    }
}

/// Path of dom0's (privileged) socket under `run_dir`.
pub fn dom0_socket_path(run_dir: &Path) -> PathBuf {
    run_dir.join("xenstored").join("socket")
}

/// Path of a guest domain's own (unprivileged) socket under `run_dir`.
pub fn domain_socket_path(run_dir: &Path, domid: DomId) -> PathBuf {
    if domid == crate::DOM0 {
        return dom0_socket_path(run_dir);
    }
    run_dir
        .join("xenstored")
        .join(format!("dom{domid}"))
        .join("socket")
}

/// Errors starting xenstored.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The journal could not be opened or is corrupt.
    #[error(transparent)]
    Journal(#[from] crate::journal::JournalError),
    /// Socket or thread setup failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being set up.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// Replayed state failed the integrity check.
    #[error("recovered xenstore failed its integrity check: {0}")]
    Integrity(String),
    /// Guest memory could not be created.
    #[error(transparent)]
    Memory(#[from] crate::memory::MemSetupError),
}

/// Errors of toolstack requests (create/destroy).
#[derive(Debug, Clone, thiserror::Error)]
pub enum ToolstackError {
    /// The registry refused.
    #[error(transparent)]
    Domain(#[from] crate::domain::DomainError),
    /// Anything else (resources, xenstore).
    #[error("{0}")]
    Failed(String),
    /// xenstored is gone.
    #[error("xenstored is not running")]
    Stopped,
}

/// What the startup replay found (for the daemon's log).
#[derive(Debug, Clone, Default)]
pub struct Recovery {
    /// Domains brought back.
    pub domains: usize,
    /// Xenstore nodes in the recovered tree.
    pub nodes: usize,
    /// Bytes of torn tail dropped from the journal.
    pub torn_bytes: u64,
    /// Batches replayed from the log.
    pub batches: usize,
}

/// A handle on the running xenstored thread; cheap to clone.
#[derive(Clone)]
pub struct Xenstored {
    inner: Arc<server::Shared>,
}

impl std::fmt::Debug for Xenstored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Xenstored").finish_non_exhaustive()
    }
}

impl Xenstored {
    /// Replays the journal, binds the sockets and starts the thread.
    pub fn start(config: XenstoredConfig) -> Result<(Xenstored, Recovery), StartError> {
        let (shared, recovery) = server::start(config)?;
        Ok((Xenstored { inner: shared }, recovery))
    }

    /// The live hypervisor objects (memory, grants, event channels).
    pub fn hypervisor(&self) -> &Arc<Hypervisor> {
        &self.inner.hv
    }

    /// A new in-process connection acting as `domid` (privileged or not).
    pub fn connect(&self, domid: DomId, privileged: bool) -> XsClient {
        client::connect(&self.inner, domid, privileged)
    }

    /// Creates a domain: registry entry, memory, event channels, its standard xenstore
    /// nodes, `@introduceDomain`, its own socket. Durable before it returns.
    pub async fn create_domain(&self, req: DomainRequest) -> Result<DomainInfo, ToolstackError> {
        server::call(&self.inner, |reply| server::Command::CreateDomain {
            req,
            reply,
        })
        .await?
    }

    /// Destroys a domain: its socket and connections, its xenstore nodes (and every
    /// node it owns elsewhere), `@releaseDomain`, its memory and ports.
    pub async fn destroy_domain(&self, name_or_id: String) -> Result<DomainInfo, ToolstackError> {
        server::call(&self.inner, |reply| server::Command::DestroyDomain {
            name_or_id,
            reply,
        })
        .await?
    }

    /// Live domains, dom0 first.
    pub async fn list_domains(&self) -> Result<Vec<DomainInfo>, ToolstackError> {
        server::call(&self.inner, |reply| server::Command::ListDomains { reply }).await
    }

    /// Looks a domain up by name or id.
    pub async fn lookup_domain(&self, name_or_id: String) -> Result<DomainInfo, ToolstackError> {
        server::call(&self.inner, |reply| server::Command::LookupDomain {
            name_or_id,
            reply,
        })
        .await?
    }

    /// Counters of the server and the store.
    pub async fn stats(&self) -> Result<ServerStats, ToolstackError> {
        server::call(&self.inner, |reply| server::Command::Stats { reply }).await
    }

    /// Where dom0's socket is.
    pub fn dom0_socket(&self) -> PathBuf {
        dom0_socket_path(&self.inner.run_dir)
    }

    /// Where a domain's socket is.
    pub fn domain_socket(&self, domid: DomId) -> PathBuf {
        domain_socket_path(&self.inner.run_dir, domid)
    }

    /// Stops the thread after the current round; committed state is already on disk.
    pub fn shutdown(&self) {
        server::shutdown(&self.inner);
    }
}
