//! The rtnetlink error type: what was being done, and what the kernel said.

use super::wire::WireError;
use crate::netns::NetNsError;

/// A failed rtnetlink operation. Display reads like
/// `adding address 10.0.0.1/24 to xenbr0: File exists (EEXIST)`, with the kernel's
/// extended-ACK text appended when it sent one.
#[derive(Debug, thiserror::Error)]
pub enum RtnlError {
    /// The kernel rejected the request with `errno` (an `NLMSG_ERROR` with a negative code).
    #[error("{op}: {}", describe_errno(*errno, message.as_deref()))]
    Kernel {
        /// The operation and object, e.g. `adding address 10.0.0.1/24 to xenbr0`.
        op: String,
        /// Positive errno from the kernel.
        errno: i32,
        /// Extended ACK message (`NLMSGERR_ATTR_MSG`), if the kernel sent one.
        message: Option<String>,
    },
    /// The socket itself failed (send/recv/timeout).
    #[error("{op}: {source}")]
    Io {
        /// The operation and object.
        op: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The kernel's reply could not be decoded.
    #[error("{op}: malformed netlink reply: {source}")]
    Malformed {
        /// The operation and object.
        op: String,
        /// What was wrong with the bytes.
        #[source]
        source: WireError,
    },
    /// A lookup in a dump found nothing.
    #[error("{0} not found")]
    NotFound(String),
    /// The caller passed something the kernel would reject or we cannot encode.
    #[error("invalid {what}: {reason}")]
    Invalid {
        /// The argument.
        what: String,
        /// Why it is rejected.
        reason: String,
    },
    /// Entering the namespace for the socket failed.
    #[error("opening rtnetlink in a namespace: {0}")]
    Namespace(#[from] NetNsError),
}

impl RtnlError {
    /// The kernel's errno, for `Kernel` errors (and OS errors of the socket).
    pub fn errno(&self) -> Option<i32> {
        match self {
            RtnlError::Kernel { errno, .. } => Some(*errno),
            RtnlError::Io { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }

    /// Whether the object does not exist: a failed lookup, or the kernel answering
    /// `ENODEV`, `ENOENT`, `ESRCH` (no such route) or `EADDRNOTAVAIL` (no such address).
    pub fn is_not_found(&self) -> bool {
        matches!(self, RtnlError::NotFound(_))
            || matches!(
                self.errno(),
                Some(libc::ENODEV | libc::ENOENT | libc::ESRCH | libc::EADDRNOTAVAIL)
            )
    }

    /// Whether the kernel answered `EEXIST` (object already present).
    pub fn is_exists(&self) -> bool {
        self.errno() == Some(libc::EEXIST)
    }
}

/// `File exists (EEXIST)` plus `: <extended ack>` if present.
pub(crate) fn describe_errno(errno: i32, message: Option<&str>) -> String {
    let text = std::io::Error::from_raw_os_error(errno).to_string();
    // std renders "File exists (os error 17)"; keep the description only.
    let text = match text.rfind(" (os error ") {
        Some(at) => text[..at].to_string(),
        None => text,
    };
    let mut s = match errno_name(errno) {
        Some(name) => format!("{text} ({name})"),
        None => format!("{text} (errno {errno})"),
    };
    if let Some(m) = message.filter(|m| !m.is_empty()) {
        s.push_str(": ");
        s.push_str(m);
    }
    s
}

/// Symbolic names of the errnos rtnetlink commonly returns.
pub(crate) fn errno_name(errno: i32) -> Option<&'static str> {
    Some(match errno {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::ESRCH => "ESRCH",
        libc::EINTR => "EINTR",
        libc::EIO => "EIO",
        libc::ENXIO => "ENXIO",
        libc::E2BIG => "E2BIG",
        libc::EBADF => "EBADF",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::EXDEV => "EXDEV",
        libc::ENODEV => "ENODEV",
        libc::ENOTDIR => "ENOTDIR",
        libc::EINVAL => "EINVAL",
        libc::ENFILE => "ENFILE",
        libc::EMFILE => "EMFILE",
        libc::ENOTTY => "ENOTTY",
        libc::ENOSPC => "ENOSPC",
        libc::ERANGE => "ERANGE",
        libc::ENAMETOOLONG => "ENAMETOOLONG",
        libc::ENOTEMPTY => "ENOTEMPTY",
        libc::ENOLINK => "ENOLINK",
        libc::EPROTO => "EPROTO",
        libc::EMSGSIZE => "EMSGSIZE",
        libc::EPROTONOSUPPORT => "EPROTONOSUPPORT",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::EAFNOSUPPORT => "EAFNOSUPPORT",
        libc::EADDRINUSE => "EADDRINUSE",
        libc::EADDRNOTAVAIL => "EADDRNOTAVAIL",
        libc::ENETDOWN => "ENETDOWN",
        libc::ENETUNREACH => "ENETUNREACH",
        libc::ENOBUFS => "ENOBUFS",
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::EHOSTUNREACH => "EHOSTUNREACH",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_error_reads_like_the_spec() {
        let e = RtnlError::Kernel {
            op: "adding address 10.0.0.1/24 to xenbr0".into(),
            errno: libc::EEXIST,
            message: None,
        };
        assert_eq!(
            e.to_string(),
            "adding address 10.0.0.1/24 to xenbr0: File exists (EEXIST)"
        );
        assert!(e.is_exists());
        assert!(!e.is_not_found());
        let e = RtnlError::Kernel {
            op: "creating link tap0".into(),
            errno: libc::EOPNOTSUPP,
            message: Some("tun/tap creation via rtnetlink is not supported.".into()),
        };
        assert_eq!(
            e.to_string(),
            "creating link tap0: Operation not supported (EOPNOTSUPP): tun/tap creation via rtnetlink is not supported."
        );
        assert_eq!(
            describe_errno(9999, None),
            "Unknown error 9999 (errno 9999)"
        );
    }

    #[test]
    fn not_found_covers_the_kernel_spellings() {
        for errno in [libc::ENODEV, libc::ESRCH, libc::EADDRNOTAVAIL, libc::ENOENT] {
            let e = RtnlError::Kernel {
                op: String::new(),
                errno,
                message: None,
            };
            assert!(e.is_not_found(), "{errno}");
        }
        assert!(RtnlError::NotFound("link x".into()).is_not_found());
    }
}
