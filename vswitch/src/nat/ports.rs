//! The NAT source-port space: which ports masquerade may hand out.
//!
//! libvirt masquerades TCP and UDP "to :1024-65535" (ecosystem.md §D.1: ports below 1024
//! are trusted by NFS and similar); the shell also excludes dom0's ephemeral range and its
//! listening ports, since the uplink address is dom0's own. Host ports of port forwards
//! are reserved per protocol so that a masqueraded connection can never take (shadow) a
//! forwarded port (robustness.md §3 c6). The allowed set is kept twice: a bitmap for the
//! "keep the original port" test, and a dense list for uniform probing.

use core::fmt;
use core::str::FromStr;

/// An inclusive port range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PortRange {
    /// First port.
    pub min: u16,
    /// Last port (inclusive).
    pub max: u16,
}

impl PortRange {
    /// `min..=max`; `None` if `min > max`.
    pub const fn new(min: u16, max: u16) -> Option<PortRange> {
        if min > max {
            None
        } else {
            Some(PortRange { min, max })
        }
    }

    /// A single port.
    pub const fn single(p: u16) -> PortRange {
        PortRange { min: p, max: p }
    }

    /// Whether `p` is inside.
    pub const fn contains(&self, p: u16) -> bool {
        self.min <= p && p <= self.max
    }

    /// Number of ports.
    pub const fn len(&self) -> usize {
        self.max as usize - self.min as usize + 1
    }

    /// Never empty (present for clippy's `len` rule).
    pub const fn is_empty(&self) -> bool {
        false
    }
}

/// libvirt's masquerade range.
pub const DEFAULT_PORT_RANGE: PortRange = PortRange {
    min: 1024,
    max: 65535,
};

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.min == self.max {
            write!(f, "{}", self.min)
        } else {
            write!(f, "{}-{}", self.min, self.max)
        }
    }
}

/// The text was not `PORT` or `MIN-MAX` with `MIN <= MAX`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid port range {0:?}")]
pub struct ParsePortRangeError(pub String);

impl FromStr for PortRange {
    type Err = ParsePortRangeError;
    /// `8080` or `1024-65535` (also `1024:65535`, the iptables form).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParsePortRangeError(s.to_string());
        let (a, b) = match s.split_once(['-', ':']) {
            Some((a, b)) => (a, b),
            None => (s, s),
        };
        let a = a.trim().parse::<u16>().map_err(|_| err())?;
        let b = b.trim().parse::<u16>().map_err(|_| err())?;
        PortRange::new(a, b).ok_or_else(err)
    }
}

/// The ports one protocol may allocate.
#[derive(Clone, Debug)]
pub struct PortSpace {
    bitmap: Vec<u64>,
    candidates: Vec<u16>,
}

impl PortSpace {
    /// `range` minus every `excluded` range and every `reserved` port.
    pub fn new(
        range: PortRange,
        excluded: &[PortRange],
        reserved: impl IntoIterator<Item = u16>,
    ) -> Self {
        let mut bitmap = vec![0u64; 1024];
        for p in range.min..=range.max {
            bitmap[usize::from(p) / 64] |= 1 << (p % 64);
        }
        let clear = |bitmap: &mut Vec<u64>, p: u16| bitmap[usize::from(p) / 64] &= !(1 << (p % 64));
        for r in excluded {
            for p in r.min..=r.max {
                clear(&mut bitmap, p);
            }
        }
        for p in reserved {
            clear(&mut bitmap, p);
        }
        let candidates = (0..=u16::MAX)
            .filter(|&p| bitmap[usize::from(p) / 64] & (1 << (p % 64)) != 0)
            .collect();
        PortSpace { bitmap, candidates }
    }

    /// Whether `p` may be allocated.
    pub fn allows(&self, p: u16) -> bool {
        self.bitmap
            .get(usize::from(p) / 64)
            .is_some_and(|w| w & (1 << (p % 64)) != 0)
    }

    /// The allowed ports, ascending.
    pub fn candidates(&self) -> &[u16] {
        &self.candidates
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_exclude() {
        assert_eq!("1024-65535".parse(), Ok(DEFAULT_PORT_RANGE));
        assert_eq!(
            "32768:60999".parse(),
            Ok(PortRange {
                min: 32768,
                max: 60999
            })
        );
        assert_eq!("80".parse(), Ok(PortRange::single(80)));
        assert!("9-1".parse::<PortRange>().is_err());
        assert!("x".parse::<PortRange>().is_err());
        assert_eq!(DEFAULT_PORT_RANGE.to_string(), "1024-65535");
        let s = PortSpace::new(
            PortRange::new(1000, 1010).unwrap(),
            &[PortRange::new(1002, 1004).unwrap()],
            [1008],
        );
        assert_eq!(s.candidates(), &[1000, 1001, 1005, 1006, 1007, 1009, 1010]);
        assert!(s.allows(1000) && !s.allows(1003) && !s.allows(1008) && !s.allows(999));
    }
}
