//! How a rig names what it makes, so several rigs live side by side and a crashed one
//! can be found again: everything of rig `R` is `R-<something>` (namespaces) or under
//! `<rigs dir>/R/` (sockets, journal, logs, leases).

use std::path::{Path, PathBuf};

/// Where rigs keep their directories unless `DOMNET_RIGS_DIR` says otherwise.
pub const DEFAULT_RIGS_DIR: &str = "/run/domnet/rigs";

/// The environment variable that moves the rigs directory (tests use their own).
pub const RIGS_DIR_ENV: &str = "DOMNET_RIGS_DIR";

/// The host names a user types for the two namespaces every rig may have.
pub const DOM0: &str = "dom0";
/// See [`DOM0`].
pub const OUTSIDE: &str = "outside";

/// dom0's uplink (a veth whose peer is the outside's `eth0`). `network-bridge` takes it
/// as `netdev=`.
pub const UPLINK: &str = "eth0";

/// Longest rig name: `<rig>-<domain>` must stay a valid domain name (64) with room for
/// domain names of [`MAX_HOST_LEN`].
pub const MAX_RIG_LEN: usize = 20;
/// Longest short domain name.
pub const MAX_HOST_LEN: usize = 40;

/// The rigs directory: `DOMNET_RIGS_DIR` when set, else [`DEFAULT_RIGS_DIR`].
pub fn rigs_dir() -> PathBuf {
    std::env::var_os(RIGS_DIR_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_RIGS_DIR))
}

/// The directory of rig `rig`.
pub fn rig_dir(rigs_dir: &Path, rig: &str) -> PathBuf {
    rigs_dir.join(rig)
}

/// The network namespace of host `host` (a domain's short name, `dom0` or `outside`)
/// of rig `rig`; for domains this is also the domain's name in the daemon, which names
/// each domain's namespace after the domain.
pub fn ns_name(rig: &str, host: &str) -> String {
    format!("{rig}-{host}")
}

fn name_chars_ok(name: &str, extra: &[char]) -> bool {
    name.chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || extra.contains(&c))
}

/// A rig name: 1..=20 characters of `[a-z0-9-]`, starting with a letter or digit and
/// not ending with `-` (it prefixes namespace and domain names).
pub fn validate_rig_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_RIG_LEN {
        return Err(format!("must be 1 to {MAX_RIG_LEN} characters"));
    }
    if !name_chars_ok(name, &['-']) {
        return Err("may contain only a-z, 0-9 and `-`".into());
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Err("may not start or end with `-`".into());
    }
    Ok(())
}

/// A domain's short name: 1..=40 characters of `[a-z0-9_-]`, starting with a letter
/// or digit, and not one of the reserved host names `dom0` and `outside`.
pub fn validate_host_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_HOST_LEN {
        return Err(format!("must be 1 to {MAX_HOST_LEN} characters"));
    }
    if !name_chars_ok(name, &['-', '_']) {
        return Err("may contain only a-z, 0-9, `-` and `_`".into());
    }
    if name.starts_with(['-', '_']) {
        return Err("must start with a letter or digit".into());
    }
    if name == DOM0 || name == OUTSIDE {
        return Err(format!("`{name}` is reserved for the rig's own namespace"));
    }
    Ok(())
}

/// A rig name made from a file name (`lab.toml` → `lab`): lower-cased, characters
/// outside `[a-z0-9-]` turned into `-`, trimmed to a valid name; `None` if nothing
/// usable is left.
pub fn rig_name_from_file(path: &Path) -> Option<String> {
    let stem = path.file_stem()?.to_str()?;
    let mut name: String = stem
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '-'
            }
        })
        .collect();
    name.truncate(MAX_RIG_LEN);
    let name = name.trim_matches('-').to_string();
    validate_rig_name(&name).ok().map(|_| name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rig_names() {
        for ok in ["lab", "a", "rig-1", "0demo"] {
            assert!(validate_rig_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Lab", "-x", "x-", "a_b", "a.b", "abcdefghijklmnopqrstu"] {
            assert!(validate_rig_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn host_names() {
        for ok in ["web", "db_1", "r-2"] {
            assert!(validate_host_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "dom0", "outside", "_x", "Web", "a b"] {
            assert!(validate_host_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_from_files() {
        assert_eq!(
            rig_name_from_file(Path::new("/x/Two_Pairs.toml")).as_deref(),
            Some("two-pairs")
        );
        assert_eq!(rig_name_from_file(Path::new("___.toml")), None);
    }

    proptest! {
        /// Every namespace a valid rig makes is a valid domain name (what the daemon
        /// needs) and a valid namespace name.
        #[test]
        fn namespaces_are_valid_domain_names(rig in "[a-z0-9][a-z0-9-]{0,18}[a-z0-9]", host in "[a-z0-9][a-z0-9_-]{0,39}") {
            prop_assume!(validate_host_name(&host).is_ok());
            let ns = ns_name(&rig, &host);
            prop_assert!(netcfg::xlcfg::validate_domain_name(&ns).is_ok(), "{}", ns);
            prop_assert!(netcfg::netns::validate_name(&ns).is_ok());
        }

        #[test]
        fn file_names_give_valid_rig_names(stem in ".{0,30}") {
            if let Some(n) = rig_name_from_file(Path::new(&format!("{stem}.toml"))) {
                prop_assert!(validate_rig_name(&n).is_ok());
            }
        }
    }
}
