//! What can go wrong with a rig, worded for the user.

use std::path::PathBuf;

use super::plan::PlanError;

/// A rig operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RigError {
    /// The rig file is not valid TOML or has an unknown key.
    #[error("rig file {path}: {message}")]
    Syntax {
        /// The file.
        path: String,
        /// The TOML reader's message (line, column, key).
        message: String,
    },
    /// A value in the rig file is wrong.
    #[error("rig file {path}: {source}")]
    Invalid {
        /// The file.
        path: String,
        /// Key, value and reason.
        source: PlanError,
    },
    /// Rigs need root.
    #[error("domnet rig needs root (it creates network namespaces, veths and TAP devices); run it with sudo")]
    NotRoot,
    /// No such rig.
    #[error("no rig named `{0}` is up (domnet rig list)")]
    NoSuchRig(String),
    /// `--rig` was left out but not exactly one rig is up.
    #[error("{0}")]
    WhichRig(String),
    /// The rig (or a namespace it would make) already exists.
    #[error("{0}")]
    Exists(String),
    /// Another domnet process is working on this rig.
    #[error("rig `{0}` is busy (another domnet rig command is working on it)")]
    Busy(String),
    /// No such host in the rig.
    #[error("rig `{rig}` has no host `{host}` (hosts: {known})")]
    NoSuchHost {
        /// The rig.
        rig: String,
        /// The name asked for.
        host: String,
        /// What there is.
        known: String,
    },
    /// A step of building or using the rig failed.
    #[error("{step}: {detail}")]
    Step {
        /// What was being done.
        step: String,
        /// What went wrong.
        detail: String,
    },
    /// Ctrl-C or SIGTERM arrived.
    #[error("interrupted")]
    Interrupted,
    /// A file or directory could not be used.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

impl RigError {
    /// A failed step.
    pub fn step(step: impl Into<String>, detail: impl ToString) -> RigError {
        RigError::Step {
            step: step.into(),
            detail: detail.to_string(),
        }
    }

    /// An I/O failure on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> RigError {
        RigError::Io {
            path: path.into(),
            source,
        }
    }
}
