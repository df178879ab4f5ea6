//! Xenstore path canonicalisation, validation and tree-shape helpers.
//!
//! Rules (xen-networking.md §4.1, C xenstored 4.17 `canonicalize` /
//! `is_valid_nodename`, XSA-323):
//! * a path not starting with `/` or `@` is relative and resolves against the
//!   connection's home `/local/domain/<domid>`;
//! * a node path starts with `/`, does not end with `/` (except the root),
//!   contains no `//`, and only the characters `A-Z a-z 0-9 - / _ @`;
//! * the length is checked on the canonical path: the part after a leading
//!   `/local/domain/<id>/` may be at most `XENSTORE_REL_PATH_MAX` (2048) and the
//!   whole path at most `XENSTORE_ABS_PATH_MAX` (3072);
//! * `@…` names are not nodes: only WATCH accepts any of them, and only the
//!   special nodes `@introduceDomain` / `@releaseDomain` carry permissions.

use std::borrow::Cow;

use thiserror::Error;

use crate::DomId;

/// `XENSTORE_ABS_PATH_MAX`.
pub const ABS_PATH_MAX: usize = 3072;
/// `XENSTORE_REL_PATH_MAX` (also C xenstored's `path-max` quota).
pub const REL_PATH_MAX: usize = 2048;
/// The root node.
pub const ROOT: &str = "/";

/// Why a path was rejected; every variant maps to `EINVAL` on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum PathError {
    /// Empty path (or empty after relative resolution).
    #[error("empty path")]
    Empty,
    /// Does not start with `/` after canonicalisation.
    #[error("path is not absolute")]
    NotAbsolute,
    /// Ends with `/` and is not the root.
    #[error("trailing slash")]
    TrailingSlash,
    /// Contains `//`.
    #[error("empty path component")]
    DoubleSlash,
    /// A byte outside `A-Za-z0-9-/_@`.
    #[error("invalid character in path")]
    BadChar,
    /// Longer than the relative or absolute limit.
    #[error("path too long")]
    TooLong,
    /// An `@` name where a node path is required, or an unknown special name.
    #[error("special path not allowed here")]
    Special,
}

/// The special watch/permission nodes that are not part of the tree (§4.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SpecialPath {
    /// `@introduceDomain`: fires when a domain is introduced.
    IntroduceDomain,
    /// `@releaseDomain`: fires when a domain is released or dies.
    ReleaseDomain,
}

impl SpecialPath {
    /// Recognises the exact special names.
    pub fn parse(path: &[u8]) -> Option<SpecialPath> {
        match path {
            b"@introduceDomain" => Some(SpecialPath::IntroduceDomain),
            b"@releaseDomain" => Some(SpecialPath::ReleaseDomain),
            _ => None,
        }
    }

    /// The wire name.
    pub fn name(self) -> &'static str {
        match self {
            SpecialPath::IntroduceDomain => "@introduceDomain",
            SpecialPath::ReleaseDomain => "@releaseDomain",
        }
    }
}

/// `/local/domain/<domid>`: a domain's home, against which its relative
/// paths resolve (§4.1; socket connections use domid 0).
pub fn domain_home(domid: DomId) -> String {
    format!("/local/domain/{domid}")
}

fn valid_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'/' | b'_' | b'@')
}

/// Length of a leading `/local/domain/<1..5 digits>/` prefix, else 0 (the
/// `sscanf("/local/domain/%5u/%n")` of C xenstored).
pub fn local_domain_prefix_len(path: &str) -> usize {
    const PREFIX: &str = "/local/domain/";
    let Some(rest) = path.strip_prefix(PREFIX) else {
        return 0;
    };
    let digits = rest.bytes().take(5).take_while(u8::is_ascii_digit).count();
    if digits == 0 || rest.as_bytes().get(digits) != Some(&b'/') {
        return 0;
    }
    PREFIX.len() + digits + 1
}

/// Validates an absolute node path (see the module rules).
pub fn validate(path: &str) -> Result<(), PathError> {
    let bytes = path.as_bytes();
    match bytes.first() {
        None => return Err(PathError::Empty),
        Some(b'/') => {}
        Some(b'@') => return Err(PathError::Special),
        Some(_) => return Err(PathError::NotAbsolute),
    }
    if bytes.len() > 1 && bytes.last() == Some(&b'/') {
        return Err(PathError::TrailingSlash);
    }
    if bytes.len() > ABS_PATH_MAX
        || bytes.len() > local_domain_prefix_len(path).saturating_add(REL_PATH_MAX)
    {
        return Err(PathError::TooLong);
    }
    let mut prev_slash = false;
    for &c in bytes {
        if !valid_char(c) {
            return Err(PathError::BadChar);
        }
        let slash = c == b'/';
        if slash && prev_slash {
            return Err(PathError::DoubleSlash);
        }
        prev_slash = slash;
    }
    Ok(())
}

/// Resolves a raw path argument to a validated canonical node path: absolute
/// paths are borrowed, relative ones are prefixed with `home` and a `/`.
/// `@` names are rejected ([`PathError::Special`]).
pub fn canonicalize<'a>(raw: &'a [u8], home: &str) -> Result<Cow<'a, str>, PathError> {
    match raw.first() {
        Some(b'@') => Err(PathError::Special),
        Some(b'/') => {
            let path = std::str::from_utf8(raw).map_err(|_| PathError::BadChar)?;
            validate(path)?;
            Ok(Cow::Borrowed(path))
        }
        _ => {
            if raw.iter().any(|&c| !valid_char(c)) {
                return Err(PathError::BadChar);
            }
            let rel = std::str::from_utf8(raw).map_err(|_| PathError::BadChar)?;
            let mut path = String::with_capacity(home.len() + 1 + rel.len());
            path.push_str(home);
            path.push('/');
            path.push_str(rel);
            validate(&path)?;
            Ok(Cow::Owned(path))
        }
    }
}

/// True when `raw` is relative (neither `/…` nor `@…`), i.e. watch events
/// for it are reported relative to the home.
pub fn is_relative(raw: &[u8]) -> bool {
    !matches!(raw.first(), Some(b'/') | Some(b'@'))
}

/// The parent of a canonical path; `None` for the root.
pub fn parent(path: &str) -> Option<&str> {
    if path == ROOT {
        return None;
    }
    match path.rfind('/') {
        Some(0) => Some(ROOT),
        Some(i) => path.get(..i),
        None => None,
    }
}

/// The last component of a canonical path (empty for the root).
pub fn basename(path: &str) -> &str {
    match path.rfind('/') {
        Some(i) => path.get(i + 1..).unwrap_or(""),
        None => path,
    }
}

/// `parent/name` for a canonical parent path.
pub fn join(parent: &str, name: &str) -> String {
    let mut out = String::with_capacity(parent.len() + 1 + name.len());
    out.push_str(parent);
    if parent != ROOT {
        out.push('/');
    }
    out.push_str(name);
    out
}

/// Iterates over the strict ancestors of a canonical path, nearest first,
/// ending with the root.
pub fn ancestors(path: &str) -> impl Iterator<Item = &str> {
    std::iter::successors(parent(path), |p| parent(p))
}

/// True when `path` equals `ancestor` or lies below it (C's `is_child`).
pub fn is_descendant_or_self(path: &str, ancestor: &str) -> bool {
    if ancestor == ROOT {
        return path.starts_with('/');
    }
    match path.strip_prefix(ancestor) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// A watch path made relative to `home` as C xenstored reports it: the home
/// prefix and one following `/` are removed.
pub fn relative_to<'a>(path: &'a str, home: &str) -> &'a str {
    match path.strip_prefix(home) {
        Some(rest) => rest.strip_prefix('/').unwrap_or(rest),
        None => path,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOME: &str = "/local/domain/7";

    fn canon(raw: &str) -> Result<String, PathError> {
        canonicalize(raw.as_bytes(), HOME).map(|c| c.into_owned())
    }

    #[test]
    fn absolute_and_relative_resolution() {
        assert_eq!(canon("/"), Ok("/".into()));
        assert_eq!(canon("/a/b-c_d@e/0"), Ok("/a/b-c_d@e/0".into()));
        assert_eq!(
            canon("device/vif/0"),
            Ok("/local/domain/7/device/vif/0".into())
        );
        assert!(matches!(canonicalize(b"/x", HOME), Ok(Cow::Borrowed(_))));
    }

    #[test]
    fn rejects_malformed_paths() {
        assert_eq!(canon(""), Err(PathError::TrailingSlash));
        assert_eq!(canon("/a/"), Err(PathError::TrailingSlash));
        assert_eq!(canon("a/"), Err(PathError::TrailingSlash));
        assert_eq!(canon("/a//b"), Err(PathError::DoubleSlash));
        assert_eq!(canon("//"), Err(PathError::TrailingSlash));
        assert_eq!(canon("/a b"), Err(PathError::BadChar));
        assert_eq!(canon("/a.b"), Err(PathError::BadChar));
        assert_eq!(canon("/a\u{e9}"), Err(PathError::BadChar));
        assert_eq!(canonicalize(b"/a\xff", HOME), Err(PathError::BadChar));
        assert_eq!(canon("@introduceDomain"), Err(PathError::Special));
        assert_eq!(validate("x"), Err(PathError::NotAbsolute));
        assert_eq!(validate(""), Err(PathError::Empty));
    }

    #[test]
    fn length_is_checked_on_the_canonical_path() {
        // XSA-323: the relative part counts against 2048, the
        // /local/domain/<id>/ prefix does not.
        let rel = "a".repeat(REL_PATH_MAX);
        assert!(canon(&rel).is_ok());
        let abs = format!("{HOME}/{rel}");
        assert!(validate(&abs).is_ok());
        assert_eq!(
            canon(&"a".repeat(REL_PATH_MAX + 1)),
            Err(PathError::TooLong)
        );
        // Outside a domain home the whole path counts.
        let outside = format!("/{}", "a".repeat(REL_PATH_MAX - 1));
        assert!(validate(&outside).is_ok());
        let outside = format!("/{}", "a".repeat(REL_PATH_MAX));
        assert_eq!(validate(&outside), Err(PathError::TooLong));
        // A six-digit "domid" is not a home prefix.
        let fake = format!("/local/domain/123456/{}", "a".repeat(REL_PATH_MAX - 10));
        assert_eq!(validate(&fake), Err(PathError::TooLong));
    }

    #[test]
    fn prefix_detection() {
        assert_eq!(local_domain_prefix_len("/local/domain/0/x"), 16);
        assert_eq!(local_domain_prefix_len("/local/domain/32752/x"), 20);
        assert_eq!(local_domain_prefix_len("/local/domain/0"), 0);
        assert_eq!(local_domain_prefix_len("/local/domain/x/y"), 0);
        assert_eq!(local_domain_prefix_len("/local/domain/123456/y"), 0);
    }

    #[test]
    fn tree_shape_helpers() {
        assert_eq!(parent("/"), None);
        assert_eq!(parent("/a"), Some("/"));
        assert_eq!(parent("/a/b/c"), Some("/a/b"));
        assert_eq!(basename("/a/b/c"), "c");
        assert_eq!(basename("/a"), "a");
        assert_eq!(basename("/"), "");
        assert_eq!(join("/", "a"), "/a");
        assert_eq!(join("/a", "b"), "/a/b");
        assert_eq!(ancestors("/a/b/c").collect::<Vec<_>>(), ["/a/b", "/a", "/"]);
        assert_eq!(ancestors("/").count(), 0);
        assert!(is_descendant_or_self("/a/b", "/a"));
        assert!(is_descendant_or_self("/a", "/a"));
        assert!(is_descendant_or_self("/a", "/"));
        assert!(!is_descendant_or_self("/ab", "/a"));
        assert!(!is_descendant_or_self("/a", "/a/b"));
        assert_eq!(
            relative_to("/local/domain/0/device/vbd", "/local/domain/0"),
            "device/vbd"
        );
        assert_eq!(relative_to("/local/domain/0", "/local/domain/0"), "");
        assert!(is_relative(b"device"));
        assert!(!is_relative(b"/device"));
        assert!(!is_relative(b"@releaseDomain"));
        assert_eq!(
            SpecialPath::parse(b"@releaseDomain"),
            Some(SpecialPath::ReleaseDomain)
        );
        assert_eq!(SpecialPath::parse(b"@releaseDomain/5"), None);
        assert_eq!(SpecialPath::IntroduceDomain.name(), "@introduceDomain");
    }
}
