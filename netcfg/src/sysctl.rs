//! Network sysctls of a namespace (`/proc/sys/net/...`).
//!
//! `/proc/sys/net` resolves against the network namespace of the *thread* that opens the
//! file, so every read and write here runs on a short-lived thread inside the target
//! namespace ([`NetNs::run`]). Keys are typed: the forwarding/proxy-ARP/IPv6 knobs Xen's
//! `network-route`, `vif-route` and `vif-nat` scripts flip have named constructors, and
//! arbitrary `conf/<if>/<name>` keys are checked before they become paths.

use crate::netns::{NetNs, NetNsError};
use std::fmt;
use std::path::PathBuf;

/// Root of the network sysctls.
pub const PROC_SYS_NET: &str = "/proc/sys/net";

/// A failed sysctl access.
#[derive(Debug, thiserror::Error)]
pub enum SysctlError {
    /// The key cannot name a sysctl (bad interface or parameter name).
    #[error("invalid sysctl key {key:?}: {reason}")]
    InvalidKey {
        /// The rejected component.
        key: String,
        /// Why.
        reason: &'static str,
    },
    /// The file could not be read or written (`ENOENT`: no such key or interface).
    #[error("{op} {key}: {source}")]
    Io {
        /// `"reading"` or `"writing"`.
        op: &'static str,
        /// The dotted key, e.g. `net.ipv4.conf.eth0.proxy_arp`.
        key: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The value read is not what the key holds (e.g. not a number).
    #[error("unexpected value {value:?} in {key}")]
    BadValue {
        /// The dotted key.
        key: String,
        /// What was read.
        value: String,
    },
    /// Entering the namespace failed.
    #[error(transparent)]
    Namespace(#[from] NetNsError),
}

/// A sysctl under `/proc/sys/net`, stored as its path components.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    parts: Vec<String>,
}

/// `accept_ra` values (Documentation/networking/ip-sysctl.rst).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcceptRa {
    /// 0: never accept router advertisements.
    Never,
    /// 1: accept unless the interface forwards.
    UnlessForwarding,
    /// 2: accept even when forwarding (what a dom0 bridge port with SLAAC wants).
    Always,
}

impl AcceptRa {
    fn value(self) -> &'static str {
        match self {
            AcceptRa::Never => "0",
            AcceptRa::UnlessForwarding => "1",
            AcceptRa::Always => "2",
        }
    }
}

/// Checks the interface component of a `conf/<if>/` key: `all`, `default` or a kernel
/// interface name (1..=15 bytes, no `/`, not `.`/`..`).
fn check_iface(iface: &str) -> Result<(), SysctlError> {
    let reason = if iface.is_empty() {
        Some("empty interface name")
    } else if iface.len() > 15 {
        Some("interface name longer than 15 bytes")
    } else if iface == "." || iface == ".." {
        Some("interface name is '.' or '..'")
    } else if iface.contains('/') || iface.contains('\0') {
        Some("interface name contains '/' or NUL")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(SysctlError::InvalidKey {
            key: iface.to_string(),
            reason,
        }),
        None => Ok(()),
    }
}

/// Checks a parameter name: lowercase letters, digits and `_` only.
fn check_param(name: &str) -> Result<(), SysctlError> {
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(SysctlError::InvalidKey {
            key: name.to_string(),
            reason: "parameter names are [a-z0-9_]+",
        })
    }
}

impl Key {
    fn of(parts: &[&str]) -> Key {
        Key {
            parts: parts.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// `net.ipv4.ip_forward`: IPv4 forwarding for the whole namespace.
    pub fn ip_forward() -> Key {
        Key::of(&["ipv4", "ip_forward"])
    }

    /// `net.ipv4.conf.<iface>.<name>`; `iface` may be `all` or `default`.
    pub fn ipv4_conf(iface: &str, name: &str) -> Result<Key, SysctlError> {
        check_iface(iface)?;
        check_param(name)?;
        Ok(Key::of(&["ipv4", "conf", iface, name]))
    }

    /// `net.ipv6.conf.<iface>.<name>`; `iface` may be `all` or `default`.
    pub fn ipv6_conf(iface: &str, name: &str) -> Result<Key, SysctlError> {
        check_iface(iface)?;
        check_param(name)?;
        Ok(Key::of(&["ipv6", "conf", iface, name]))
    }

    /// `net.ipv4.conf.<iface>.proxy_arp` (what `vif-route` turns on for a routed vif).
    pub fn proxy_arp(iface: &str) -> Result<Key, SysctlError> {
        Key::ipv4_conf(iface, "proxy_arp")
    }

    /// `net.ipv4.neigh.<iface>.<name>`.
    pub fn ipv4_neigh(iface: &str, name: &str) -> Result<Key, SysctlError> {
        check_iface(iface)?;
        check_param(name)?;
        Ok(Key::of(&["ipv4", "neigh", iface, name]))
    }

    /// `net.ipv4.conf.<iface>.forwarding`.
    pub fn ipv4_forwarding(iface: &str) -> Result<Key, SysctlError> {
        Key::ipv4_conf(iface, "forwarding")
    }

    /// `net.ipv6.conf.<iface>.forwarding`.
    pub fn ipv6_forwarding(iface: &str) -> Result<Key, SysctlError> {
        Key::ipv6_conf(iface, "forwarding")
    }

    /// `net.ipv6.conf.<iface>.disable_ipv6`.
    pub fn disable_ipv6(iface: &str) -> Result<Key, SysctlError> {
        Key::ipv6_conf(iface, "disable_ipv6")
    }

    /// `net.ipv6.conf.<iface>.accept_ra`.
    pub fn accept_ra(iface: &str) -> Result<Key, SysctlError> {
        Key::ipv6_conf(iface, "accept_ra")
    }

    /// `net.ipv6.conf.<iface>.autoconf` (SLAAC).
    pub fn autoconf(iface: &str) -> Result<Key, SysctlError> {
        Key::ipv6_conf(iface, "autoconf")
    }

    /// `net.ipv6.conf.<iface>.proxy_ndp`.
    pub fn proxy_ndp(iface: &str) -> Result<Key, SysctlError> {
        Key::ipv6_conf(iface, "proxy_ndp")
    }

    /// The file under `/proc/sys/net`.
    pub fn path(&self) -> PathBuf {
        let mut p = PathBuf::from(PROC_SYS_NET);
        p.extend(&self.parts);
        p
    }
}

impl fmt::Display for Key {
    /// The `sysctl` spelling: `net.ipv4.conf.eth0.proxy_arp` (a `.` inside an interface
    /// name is written `/`, as sysctl(8) does).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("net")?;
        for p in &self.parts {
            write!(f, ".{}", p.replace('.', "/"))?;
        }
        Ok(())
    }
}

/// Reads a sysctl in `ns`, without the trailing newline.
pub fn read(ns: &NetNs, key: &Key) -> Result<String, SysctlError> {
    let path = key.path();
    ns.run(|| std::fs::read_to_string(&path))?
        .map(|s| s.trim_end().to_string())
        .map_err(|source| SysctlError::Io {
            op: "reading",
            key: key.to_string(),
            source,
        })
}

/// Writes a sysctl in `ns`.
pub fn write(ns: &NetNs, key: &Key, value: &str) -> Result<(), SysctlError> {
    let path = key.path();
    ns.run(|| std::fs::write(&path, value))?
        .map_err(|source| SysctlError::Io {
            op: "writing",
            key: key.to_string(),
            source,
        })
}

/// Reads a 0/1 (or any integer, non-zero = true) sysctl.
pub fn read_bool(ns: &NetNs, key: &Key) -> Result<bool, SysctlError> {
    let v = read(ns, key)?;
    v.parse::<i64>()
        .map(|n| n != 0)
        .map_err(|_| SysctlError::BadValue {
            key: key.to_string(),
            value: v,
        })
}

/// Writes `1` or `0`.
pub fn write_bool(ns: &NetNs, key: &Key, on: bool) -> Result<(), SysctlError> {
    write(ns, key, if on { "1" } else { "0" })
}

/// Turns IPv4 forwarding on or off for the namespace (`net.ipv4.ip_forward`).
pub fn set_ip_forward(ns: &NetNs, on: bool) -> Result<(), SysctlError> {
    write_bool(ns, &Key::ip_forward(), on)
}

/// Whether IPv4 forwarding is on in the namespace.
pub fn ip_forward(ns: &NetNs) -> Result<bool, SysctlError> {
    read_bool(ns, &Key::ip_forward())
}

/// Turns proxy ARP on or off for an interface.
pub fn set_proxy_arp(ns: &NetNs, iface: &str, on: bool) -> Result<(), SysctlError> {
    write_bool(ns, &Key::proxy_arp(iface)?, on)
}

/// Sets how long the kernel may hold back a proxy ARP answer on an interface
/// (`net.ipv4.neigh.<iface>.proxy_delay`, in USER_HZ ticks; Linux's default 80 delays
/// each answer randomly by up to 0.8 s, which is what a routed guest's first packets
/// wait for).
pub fn set_proxy_delay(ns: &NetNs, iface: &str, ticks: u32) -> Result<(), SysctlError> {
    write(
        ns,
        &Key::ipv4_neigh(iface, "proxy_delay")?,
        &ticks.to_string(),
    )
}

/// Turns IPv4 forwarding on or off for an interface.
pub fn set_ipv4_forwarding(ns: &NetNs, iface: &str, on: bool) -> Result<(), SysctlError> {
    write_bool(ns, &Key::ipv4_forwarding(iface)?, on)
}

/// Disables or enables IPv6 on an interface.
pub fn set_disable_ipv6(ns: &NetNs, iface: &str, disabled: bool) -> Result<(), SysctlError> {
    write_bool(ns, &Key::disable_ipv6(iface)?, disabled)
}

/// Sets `accept_ra` on an interface.
pub fn set_accept_ra(ns: &NetNs, iface: &str, mode: AcceptRa) -> Result<(), SysctlError> {
    write(ns, &Key::accept_ra(iface)?, mode.value())
}

/// Turns SLAAC (`autoconf`) on or off on an interface.
pub fn set_autoconf(ns: &NetNs, iface: &str, on: bool) -> Result<(), SysctlError> {
    write_bool(ns, &Key::autoconf(iface)?, on)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netns::testing::*;

    #[test]
    fn keys_become_paths_and_dotted_names() {
        let k = Key::proxy_arp("vif1.0").unwrap();
        assert_eq!(
            k.path(),
            PathBuf::from("/proc/sys/net/ipv4/conf/vif1.0/proxy_arp")
        );
        assert_eq!(k.to_string(), "net.ipv4.conf.vif1/0.proxy_arp");
        assert_eq!(Key::ip_forward().to_string(), "net.ipv4.ip_forward");
        for bad in ["", "..", "a/b", "0123456789abcdef"] {
            assert!(Key::proxy_arp(bad).is_err(), "{bad}");
        }
        assert!(Key::ipv4_conf("eth0", "../x").is_err());
        assert!(Key::ipv4_conf("eth0", "").is_err());
    }

    #[test]
    fn sysctls_are_per_namespace() {
        let a = scratch();
        let b = scratch();
        set_ip_forward(&a, true).unwrap();
        assert!(ip_forward(&a).unwrap());
        assert!(
            !ip_forward(&b).unwrap(),
            "a fresh namespace starts with forwarding off"
        );
        set_ip_forward(&a, false).unwrap();
        assert!(!ip_forward(&a).unwrap());

        let r = crate::rtnl::Rtnl::open_in(&a).unwrap();
        r.create_veth("vif1.0", "vif1.0p", None).unwrap();
        set_proxy_arp(&a, "vif1.0", true).unwrap();
        assert!(read_bool(&a, &Key::proxy_arp("vif1.0").unwrap()).unwrap());
        set_ipv4_forwarding(&a, "vif1.0", true).unwrap();
        assert!(read_bool(&a, &Key::ipv4_forwarding("vif1.0").unwrap()).unwrap());
        set_accept_ra(&a, "vif1.0", AcceptRa::Always).unwrap();
        assert_eq!(read(&a, &Key::accept_ra("vif1.0").unwrap()).unwrap(), "2");
        set_autoconf(&a, "vif1.0", false).unwrap();
        assert!(!read_bool(&a, &Key::autoconf("vif1.0").unwrap()).unwrap());
        set_disable_ipv6(&a, "vif1.0", true).unwrap();
        assert!(read_bool(&a, &Key::disable_ipv6("vif1.0").unwrap()).unwrap());
        // iproute2 sees the consequence: no inet6 address on the interface.
        r.set_up("vif1.0").unwrap();
        let shown = ip_in(&a, &["-o", "addr", "show", "vif1.0"]);
        assert!(!shown.contains("inet6"), "{shown}");
        // An interface that does not exist in that namespace is ENOENT, naming the key.
        let e = set_proxy_arp(&b, "vif1.0", true).unwrap_err();
        assert!(
            e.to_string().contains("net.ipv4.conf.vif1/0.proxy_arp"),
            "{e}"
        );
    }
}
