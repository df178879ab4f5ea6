//! Address value types used in rtnetlink messages: an IP prefix and an Ethernet MAC.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// An IP address with a prefix length, as written `10.0.0.1/24` or `fe80::1/64`.
/// The address keeps its host bits (an interface address), unlike a pure network prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IpCidr {
    addr: IpAddr,
    prefix_len: u8,
}

/// A malformed IP prefix or MAC address string, or an impossible prefix length.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddrParseError {
    /// The prefix length exceeds 32 (IPv4) or 128 (IPv6).
    #[error("prefix length {len} too long for {addr}")]
    PrefixTooLong {
        /// The address.
        addr: IpAddr,
        /// The rejected length.
        len: u8,
    },
    /// Not an `ADDR/LEN` string.
    #[error("invalid IP prefix {0:?}")]
    BadPrefix(String),
    /// Not six colon-separated hex bytes.
    #[error("invalid MAC address {0:?}")]
    BadMac(String),
}

impl IpCidr {
    /// `addr/prefix_len`; fails if the length is longer than the address.
    pub fn new(addr: IpAddr, prefix_len: u8) -> Result<IpCidr, AddrParseError> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix_len > max {
            return Err(AddrParseError::PrefixTooLong {
                addr,
                len: prefix_len,
            });
        }
        Ok(IpCidr { addr, prefix_len })
    }

    /// The whole address space of a family: `0.0.0.0/0` or `::/0` (a default route's dst).
    pub fn default_for(v6: bool) -> IpCidr {
        let addr = if v6 {
            IpAddr::V6(Ipv6Addr::UNSPECIFIED)
        } else {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        };
        IpCidr {
            addr,
            prefix_len: 0,
        }
    }

    /// A host prefix (`/32` or `/128`).
    pub fn host(addr: IpAddr) -> IpCidr {
        let prefix_len = if addr.is_ipv4() { 32 } else { 128 };
        IpCidr { addr, prefix_len }
    }

    /// The address, host bits included.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length.
    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// Whether this is an IPv6 prefix.
    pub fn is_ipv6(&self) -> bool {
        self.addr.is_ipv6()
    }

    /// Whether this is a default route destination (`/0`).
    pub fn is_default(&self) -> bool {
        self.prefix_len == 0
    }

    /// The network address (host bits cleared).
    pub fn network(&self) -> IpAddr {
        match self.addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix_len))
                    .unwrap_or(0);
                IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix_len))
                    .unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
            }
        }
    }

    /// Whether `ip` lies inside this prefix.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match IpCidr::new(ip, self.prefix_len) {
            Ok(other) if ip.is_ipv4() == self.addr.is_ipv4() => other.network() == self.network(),
            _ => false,
        }
    }
}

impl fmt::Display for IpCidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

impl FromStr for IpCidr {
    type Err = AddrParseError;

    /// `ADDR/LEN`, or a bare address meaning a host prefix.
    fn from_str(s: &str) -> Result<IpCidr, AddrParseError> {
        let bad = || AddrParseError::BadPrefix(s.to_string());
        match s.split_once('/') {
            Some((a, l)) => {
                let addr: IpAddr = a.parse().map_err(|_| bad())?;
                let len: u8 = l.parse().map_err(|_| bad())?;
                IpCidr::new(addr, len)
            }
            None => Ok(IpCidr::host(s.parse().map_err(|_| bad())?)),
        }
    }
}

/// An Ethernet MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// The six bytes.
    pub fn octets(&self) -> [u8; 6] {
        self.0
    }

    /// Whether the address is usable as a device address: not multicast (I/G bit clear)
    /// and not all-zero — the kernel's `is_valid_ether_addr` rule for `IFLA_ADDRESS`.
    pub fn is_valid_unicast(&self) -> bool {
        self.0[0] & 1 == 0 && self.0 != [0; 6]
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl FromStr for MacAddr {
    type Err = AddrParseError;

    /// Six colon-separated hex bytes, `00:16:3e:00:00:01`.
    fn from_str(s: &str) -> Result<MacAddr, AddrParseError> {
        let bad = || AddrParseError::BadMac(s.to_string());
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for b in out.iter_mut() {
            let p = parts.next().ok_or_else(bad)?;
            if p.is_empty() || p.len() > 2 {
                return Err(bad());
            }
            *b = u8::from_str_radix(p, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(MacAddr(out))
    }
}

impl TryFrom<&[u8]> for MacAddr {
    type Error = AddrParseError;

    fn try_from(b: &[u8]) -> Result<MacAddr, AddrParseError> {
        <[u8; 6]>::try_from(b)
            .map(MacAddr)
            .map_err(|_| AddrParseError::BadMac(format!("{b:02x?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn cidr_parses_prints_and_masks() {
        let c: IpCidr = "10.1.2.3/24".parse().unwrap();
        assert_eq!(c.to_string(), "10.1.2.3/24");
        assert_eq!(c.network(), "10.1.2.0".parse::<IpAddr>().unwrap());
        assert!(c.contains("10.1.2.200".parse().unwrap()));
        assert!(!c.contains("10.1.3.1".parse().unwrap()));
        assert!(!c.contains("::1".parse().unwrap()));
        assert!("10.0.0.1/33".parse::<IpCidr>().is_err());
        assert!("fe80::1/129".parse::<IpCidr>().is_err());
        assert_eq!("fe80::1".parse::<IpCidr>().unwrap().prefix_len(), 128);
        assert!(IpCidr::default_for(false).is_default());
        assert_eq!(IpCidr::default_for(true).to_string(), "::/0");
        let z: IpCidr = "10.9.9.9/0".parse().unwrap();
        assert_eq!(z.network(), "0.0.0.0".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn mac_parses_and_prints() {
        let m: MacAddr = "00:16:3e:0a:0B:ff".parse().unwrap();
        assert_eq!(m.to_string(), "00:16:3e:0a:0b:ff");
        assert!(m.is_valid_unicast());
        assert!(!MacAddr([1, 0, 0, 0, 0, 0]).is_valid_unicast());
        assert!(!MacAddr::default().is_valid_unicast());
        for bad in [
            "",
            "00:16:3e:0a:0b",
            "00:16:3e:0a:0b:ff:00",
            "000:1:2:3:4:5",
            "g0:1:2:3:4:5",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn mac_display_parse_round_trip(b in any::<[u8; 6]>()) {
            let m = MacAddr(b);
            prop_assert_eq!(m.to_string().parse::<MacAddr>().unwrap(), m);
        }

        #[test]
        fn cidr_network_is_contained(a in any::<u32>(), len in 0u8..=32) {
            let c = IpCidr::new(IpAddr::V4(Ipv4Addr::from(a)), len).unwrap();
            prop_assert!(c.contains(c.network()));
            prop_assert!(c.contains(c.addr()));
            prop_assert_eq!(c.to_string().parse::<IpCidr>().unwrap(), c);
        }
    }
}
