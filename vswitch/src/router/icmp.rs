//! ICMPv4 errors sent by the L3 cores (RFC 792, RFC 1812 §4.3.2, RFC 1191).
//!
//! An error is never sent about an ICMP error, a non-first fragment, a link-layer
//! broadcast/multicast frame, or a datagram whose source is not a unicast host
//! (RFC 1122 §3.2.2, RFC 1812 §4.3.2.7; [`build::icmpv4_error_allowed`]). It quotes as
//! much of the offending datagram as keeps it within 576 bytes (RFC 1812 §4.3.2.3), and
//! errors are rate-limited by a token bucket (RFC 1812 §4.3.2.8; Linux
//! `icmp_msgs_per_sec` 1000, `icmp_msgs_burst` 50).

use std::net::Ipv4Addr;

use super::ratelimit::{RateLimit, TokenBucket};
use crate::time::Timestamp;
use crate::wire::build::{self, L2Header};
use crate::wire::icmpv4::{code, kind};
use crate::wire::FrameInfo;

/// Linux's defaults for the global ICMP error limit.
pub const DEFAULT_ICMP_RATE: RateLimit = RateLimit::new(1000, 50);

/// The errors the cores generate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IcmpError {
    /// Time exceeded in transit (type 11 code 0): TTL would reach zero.
    TimeExceeded,
    /// Destination unreachable, network (3/0): no route.
    NetUnreachable,
    /// Destination unreachable, host (3/1): unreachable route, disabled egress, failed
    /// neighbour.
    HostUnreachable,
    /// Destination unreachable, protocol (3/2): a service address got a protocol it does
    /// not speak.
    ProtocolUnreachable,
    /// Destination unreachable, port (3/3): UDP to a closed port.
    PortUnreachable,
    /// Fragmentation needed and DF set (3/4) with the next-hop MTU (RFC 1191).
    FragmentationNeeded {
        /// The MTU of the next hop.
        mtu: u16,
    },
    /// Communication administratively prohibited (3/13, RFC 1812 §5.2.7.1).
    AdminProhibited,
}

impl IcmpError {
    /// (type, code, rest-of-header word).
    pub const fn fields(self) -> (u8, u8, u32) {
        match self {
            IcmpError::TimeExceeded => (kind::TIME_EXCEEDED, code::TTL_EXCEEDED, 0),
            IcmpError::NetUnreachable => (kind::DEST_UNREACHABLE, code::NET_UNREACHABLE, 0),
            IcmpError::HostUnreachable => (kind::DEST_UNREACHABLE, code::HOST_UNREACHABLE, 0),
            IcmpError::ProtocolUnreachable => (kind::DEST_UNREACHABLE, 2, 0),
            IcmpError::PortUnreachable => (kind::DEST_UNREACHABLE, code::PORT_UNREACHABLE, 0),
            IcmpError::FragmentationNeeded { mtu } => {
                (kind::DEST_UNREACHABLE, code::FRAG_NEEDED, mtu as u32)
            }
            IcmpError::AdminProhibited => (kind::DEST_UNREACHABLE, code::ADMIN_PROHIBITED, 0),
        }
    }
}

/// Counts of errors sent and withheld.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IcmpErrorStats {
    /// Errors written.
    pub sent: u64,
    /// Withheld by the rate limit.
    pub rate_limited: u64,
    /// Withheld because the offending datagram may not elicit an error.
    pub suppressed: u64,
}

/// The rate-limited error writer.
#[derive(Clone, Debug)]
pub struct IcmpErrorSender {
    bucket: TokenBucket,
    stats: IcmpErrorStats,
}

impl IcmpErrorSender {
    /// A writer limited to `limit`.
    pub fn new(limit: RateLimit) -> Self {
        IcmpErrorSender {
            bucket: TokenBucket::new(limit),
            stats: IcmpErrorStats::default(),
        }
    }

    /// Counters.
    pub fn stats(&self) -> &IcmpErrorStats {
        &self.stats
    }

    /// Writes `error` about the IPv4 datagram in `frame` (parsed as `info`) into `out`,
    /// from `src` with link header `l2`; returns the frame length, or `None` when the
    /// error is not allowed, rate-limited, or does not fit `out` (each counted).
    #[allow(clippy::too_many_arguments)]
    pub fn write(
        &mut self,
        frame: &[u8],
        info: &FrameInfo,
        error: IcmpError,
        src: Ipv4Addr,
        l2: L2Header,
        now: Timestamp,
        out: &mut [u8],
    ) -> Option<usize> {
        let Some(ip) = info.ipv4() else {
            self.stats.suppressed += 1;
            return None;
        };
        if !build::icmpv4_error_allowed(info) {
            self.stats.suppressed += 1;
            return None;
        }
        let l3 = info.l2_header_len();
        let Some(offending) = frame.get(l3..l3 + usize::from(ip.total_len)) else {
            self.stats.suppressed += 1;
            return None;
        };
        if !self.bucket.try_take(now) {
            self.stats.rate_limited += 1;
            return None;
        }
        let (t, c, rest) = error.fields();
        match build::icmpv4_error(out, l2, src, t, c, rest, offending) {
            Ok(n) => {
                self.stats.sent += 1;
                Some(n)
            }
            Err(_) => {
                self.stats.suppressed += 1;
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Icmpv4Packet, Ipv4Packet, MacAddr};

    const A: MacAddr = MacAddr([0x00, 0x16, 0x3e, 0, 0, 1]);
    const R: MacAddr = MacAddr([0xfe, 0xff, 0xff, 0xff, 0xff, 0xff]);

    #[test]
    fn exact_bytes_and_limits() {
        let mut f = [0u8; 200];
        let n = build::ipv4_udp(
            &mut f,
            L2Header::new(R, A),
            Ipv4Addr::new(10, 0, 0, 5),
            Ipv4Addr::new(192, 0, 2, 9),
            33434,
            33435,
            &[0xaa; 12],
        )
        .unwrap();
        let info = FrameInfo::parse(&f[..n]).unwrap();
        let mut s = IcmpErrorSender::new(RateLimit::new(0, 2));
        let mut out = [0u8; 700];
        let dom0 = Ipv4Addr::new(198, 51, 100, 1);
        let m = s
            .write(
                &f[..n],
                &info,
                IcmpError::TimeExceeded,
                dom0,
                L2Header::new(A, R),
                Timestamp::ZERO,
                &mut out,
            )
            .unwrap();
        // 14 + 20 + 8 + the whole 40-byte datagram.
        assert_eq!(m, 14 + 20 + 8 + 40);
        assert_eq!(&out[0..6], &A.0);
        assert_eq!(&out[6..12], &R.0);
        let ip = Ipv4Packet::new_checked(&out[14..m]).unwrap();
        assert!(ip.verify_checksum());
        assert_eq!(ip.src_addr(), dom0);
        assert_eq!(ip.dst_addr(), Ipv4Addr::new(10, 0, 0, 5));
        let icmp = Icmpv4Packet::new_checked(ip.payload()).unwrap();
        assert_eq!((icmp.msg_type(), icmp.msg_code()), (11, 0));
        assert!(icmp.verify_checksum());
        assert_eq!(icmp.data(), &f[14..n]);

        // Frag needed carries the MTU in the low 16 bits of the rest-of-header word.
        let m = s
            .write(
                &f[..n],
                &info,
                IcmpError::FragmentationNeeded { mtu: 1400 },
                dom0,
                L2Header::new(A, R),
                Timestamp::ZERO,
                &mut out,
            )
            .unwrap();
        assert_eq!(&out[34..42], &[3, 4, out[36], out[37], 0, 0, 0x05, 0x78]);
        let _ = m;
        // The burst is spent and the rate is zero.
        assert!(s
            .write(
                &f[..n],
                &info,
                IcmpError::TimeExceeded,
                dom0,
                L2Header::new(A, R),
                Timestamp::from_secs(9),
                &mut out
            )
            .is_none());
        assert_eq!(s.stats().rate_limited, 1);
        assert_eq!(s.stats().sent, 2);

        // Never about an error.
        let k = build::icmpv4_error(
            &mut f,
            L2Header::new(R, A),
            Ipv4Addr::new(10, 0, 0, 5),
            3,
            3,
            0,
            &out[14..14 + 40],
        )
        .unwrap();
        let info = FrameInfo::parse(&f[..k]).unwrap();
        let mut s = IcmpErrorSender::new(DEFAULT_ICMP_RATE);
        assert!(s
            .write(
                &f[..k],
                &info,
                IcmpError::TimeExceeded,
                dom0,
                L2Header::new(A, R),
                Timestamp::ZERO,
                &mut out
            )
            .is_none());
        assert_eq!(s.stats().suppressed, 1);
    }
}
