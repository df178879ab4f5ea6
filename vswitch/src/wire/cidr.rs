//! IPv4/IPv6 prefixes, for the anti-spoofing allow-lists (`ip=` in an xl vif spec may name
//! addresses or prefixes; Xen's `vif-common.sh` passes each to iptables `--source`).

use core::fmt;
use core::str::FromStr;
use std::net::{Ipv4Addr, Ipv6Addr};

/// The text was not `ADDR` or `ADDR/LEN` with LEN within the family's width.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid address prefix {0:?}")]
pub struct ParseCidrError(pub String);

/// An IPv4 prefix. Host bits of `addr` are kept as written but ignored by `contains`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ipv4Cidr {
    addr: Ipv4Addr,
    prefix_len: u8,
}

impl Ipv4Cidr {
    /// A prefix; `None` if `prefix_len > 32`.
    pub const fn new(addr: Ipv4Addr, prefix_len: u8) -> Option<Self> {
        if prefix_len > 32 {
            None
        } else {
            Some(Ipv4Cidr { addr, prefix_len })
        }
    }

    /// The /32 holding exactly `addr`.
    pub const fn host(addr: Ipv4Addr) -> Self {
        Ipv4Cidr {
            addr,
            prefix_len: 32,
        }
    }

    /// The address as written.
    pub const fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    /// The prefix length.
    pub const fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// Whether `ip` lies inside the prefix.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = u32::MAX
            .checked_shl(32 - u32::from(self.prefix_len))
            .unwrap_or(0);
        u32::from(ip) & mask == u32::from(self.addr) & mask
    }
}

impl From<Ipv4Addr> for Ipv4Cidr {
    fn from(a: Ipv4Addr) -> Self {
        Ipv4Cidr::host(a)
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

impl FromStr for Ipv4Cidr {
    type Err = ParseCidrError;
    /// `10.0.0.5` (a /32) or `10.0.0.0/24`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseCidrError(s.to_string());
        let (a, l) = match s.split_once('/') {
            Some((a, l)) => (a, l.parse::<u8>().map_err(|_| err())?),
            None => (s, 32),
        };
        Ipv4Cidr::new(a.parse().map_err(|_| err())?, l).ok_or_else(err)
    }
}

/// An IPv6 prefix. Host bits of `addr` are kept as written but ignored by `contains`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ipv6Cidr {
    addr: Ipv6Addr,
    prefix_len: u8,
}

impl Ipv6Cidr {
    /// A prefix; `None` if `prefix_len > 128`.
    pub const fn new(addr: Ipv6Addr, prefix_len: u8) -> Option<Self> {
        if prefix_len > 128 {
            None
        } else {
            Some(Ipv6Cidr { addr, prefix_len })
        }
    }

    /// The /128 holding exactly `addr`.
    pub const fn host(addr: Ipv6Addr) -> Self {
        Ipv6Cidr {
            addr,
            prefix_len: 128,
        }
    }

    /// The address as written.
    pub const fn addr(&self) -> Ipv6Addr {
        self.addr
    }

    /// The prefix length.
    pub const fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// Whether `ip` lies inside the prefix.
    pub fn contains(&self, ip: Ipv6Addr) -> bool {
        let mask = u128::MAX
            .checked_shl(128 - u32::from(self.prefix_len))
            .unwrap_or(0);
        u128::from(ip) & mask == u128::from(self.addr) & mask
    }
}

impl From<Ipv6Addr> for Ipv6Cidr {
    fn from(a: Ipv6Addr) -> Self {
        Ipv6Cidr::host(a)
    }
}

impl fmt::Display for Ipv6Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

impl FromStr for Ipv6Cidr {
    type Err = ParseCidrError;
    /// `2001:db8::5` (a /128) or `2001:db8::/64`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseCidrError(s.to_string());
        let (a, l) = match s.split_once('/') {
            Some((a, l)) => (a, l.parse::<u8>().map_err(|_| err())?),
            None => (s, 128),
        };
        Ipv6Cidr::new(a.parse().map_err(|_| err())?, l).ok_or_else(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v4_contains() {
        let n: Ipv4Cidr = "10.0.0.0/24".parse().unwrap();
        assert!(n.contains(Ipv4Addr::new(10, 0, 0, 200)));
        assert!(!n.contains(Ipv4Addr::new(10, 0, 1, 1)));
        let h: Ipv4Cidr = "10.0.0.5".parse().unwrap();
        assert!(h.contains(Ipv4Addr::new(10, 0, 0, 5)));
        assert!(!h.contains(Ipv4Addr::new(10, 0, 0, 6)));
        let all: Ipv4Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(Ipv4Addr::new(1, 2, 3, 4)));
        assert!("10.0.0.0/33".parse::<Ipv4Cidr>().is_err());
        assert!("10.0.0/8".parse::<Ipv4Cidr>().is_err());
        assert_eq!(n.to_string(), "10.0.0.0/24");
    }

    #[test]
    fn v6_contains() {
        let n: Ipv6Cidr = "2001:db8::/64".parse().unwrap();
        assert!(n.contains("2001:db8::1234".parse().unwrap()));
        assert!(!n.contains("2001:db9::1".parse().unwrap()));
        let all: Ipv6Cidr = "::/0".parse().unwrap();
        assert!(all.contains("fe80::1".parse().unwrap()));
        assert!("::/129".parse::<Ipv6Cidr>().is_err());
    }
}
