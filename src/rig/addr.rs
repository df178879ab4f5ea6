//! An interface address with its prefix, `a.b.c.d/len`, as `ip addr add` takes it.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An IPv4 address on an interface and the length of its subnet's prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IfAddr {
    /// The address.
    pub ip: Ipv4Addr,
    /// Prefix length, 0..=32.
    pub len: u8,
}

impl IfAddr {
    /// `ip/len`, refusing a length over 32.
    pub fn new(ip: Ipv4Addr, len: u8) -> Option<IfAddr> {
        (len <= 32).then_some(IfAddr { ip, len })
    }

    fn mask(&self) -> u32 {
        if self.len == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.len))
        }
    }

    /// Whether `ip` is on this address's subnet.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(self.ip) & self.mask() == u32::from(ip) & self.mask()
    }

    /// Whether two subnets share an address.
    pub fn overlaps(&self, other: &IfAddr) -> bool {
        let m = self.mask() & other.mask();
        u32::from(self.ip) & m == u32::from(other.ip) & m
    }

    /// The `n`th address of the subnet (`n` = 1: its first host address); `None` past
    /// the subnet's end.
    pub fn nth_host(&self, n: u32) -> Option<Ipv4Addr> {
        let size = 1u64 << (32 - u32::from(self.len));
        (u64::from(n) < size).then(|| Ipv4Addr::from((u32::from(self.ip) & self.mask()) | n))
    }

    /// The same subnet with another address on it.
    pub fn with_ip(&self, ip: Ipv4Addr) -> IfAddr {
        IfAddr { ip, len: self.len }
    }
}

impl fmt::Display for IfAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.ip, self.len)
    }
}

/// Why an address was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected an IPv4 address with a prefix length, a.b.c.d/len")]
pub struct IfAddrError;

impl FromStr for IfAddr {
    type Err = IfAddrError;
    fn from_str(s: &str) -> Result<IfAddr, IfAddrError> {
        let (ip, len) = s.split_once('/').ok_or(IfAddrError)?;
        let ip: Ipv4Addr = ip.parse().map_err(|_| IfAddrError)?;
        if len.is_empty() || len.len() > 2 || !len.bytes().all(|b| b.is_ascii_digit()) {
            return Err(IfAddrError);
        }
        let len: u8 = len.parse().map_err(|_| IfAddrError)?;
        IfAddr::new(ip, len).ok_or(IfAddrError)
    }
}

impl Serialize for IfAddr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for IfAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parse_and_subnets() {
        let a: IfAddr = "10.0.0.254/24".parse().unwrap();
        assert!(a.contains(Ipv4Addr::new(10, 0, 0, 1)));
        assert!(!a.contains(Ipv4Addr::new(10, 0, 1, 1)));
        assert_eq!(a.nth_host(1), Some(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(a.nth_host(256), None);
        assert!(a.overlaps(&"10.0.0.0/16".parse().unwrap()));
        assert!(!a.overlaps(&"192.168.122.1/24".parse().unwrap()));
        for bad in [
            "10.0.0.1",
            "10.0.0.1/33",
            "10.0.0.1/",
            "x/24",
            "10.0.0.1/024",
        ] {
            assert!(bad.parse::<IfAddr>().is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn display_parses_back(ip in any::<u32>(), len in 0u8..=32) {
            let a = IfAddr::new(Ipv4Addr::from(ip), len).unwrap();
            prop_assert_eq!(a.to_string().parse::<IfAddr>(), Ok(a));
            prop_assert!(a.contains(a.ip));
        }

        #[test]
        fn never_panics(s in ".{0,24}") {
            let _ = s.parse::<IfAddr>();
        }
    }
}
