//! Zero-copy views over frame bytes, in smoltcp's style (ecosystem.md §B1).
//!
//! Each protocol has a packet type `Xxx<T: AsRef<[u8]>>` wrapping a buffer. `new_checked`
//! runs `check_len` first, after which every getter stays inside the buffer, so no input
//! a guest sends can make a getter panic. `new_unchecked` exists for buffers whose length
//! the caller has already established (the builders do this). Field positions live in a
//! private `field` module of byte ranges per protocol.
//!
//! [`FrameInfo`] is the one-pass summary of a frame (L2 addresses, VLAN tags, L3/L4
//! fields) that every pipeline stage reuses, and [`build`] writes the frames the switch
//! synthesises into caller-provided buffers.

pub mod arp;
pub mod build;
pub mod checksum;
pub mod cidr;
pub mod ethernet;
pub mod gso;
pub mod icmpv4;
pub mod icmpv6;
pub mod info;
pub mod ipv4;
pub mod ipv6;
pub mod tcp;
pub mod udp;
pub mod vlan;

pub use arp::{ArpOperation, ArpPacket, ArpRepr};
pub use cidr::{Ipv4Cidr, Ipv6Cidr};
pub use ethernet::{EtherType, EthernetFrame, EthernetRepr, MacAddr};
pub use icmpv4::Icmpv4Packet;
pub use icmpv6::Icmpv6Packet;
pub use info::{
    ArpInfo, FrameInfo, Ipv4Info, Ipv6Info, L3Info, L4Info, TcpInfo, VlanTag, VlanTags,
};
pub use ipv4::{Ipv4Packet, Ipv4Repr};
pub use ipv6::{Ipv6Packet, Ipv6Repr};
pub use tcp::{TcpFlags, TcpPacket};
pub use udp::UdpPacket;
pub use vlan::{VlanHeader, VlanId};

/// Why bytes could not be viewed as, or written as, a protocol header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Error {
    /// The buffer ends before the header (or the length the header claims) does.
    #[error("buffer too short for the header")]
    Truncated,
    /// A header field contradicts the protocol (bad IHL, length below the header, ...).
    #[error("malformed header")]
    Malformed,
    /// The caller's output buffer cannot hold the frame being built.
    #[error("output buffer too small")]
    BufferTooSmall,
}

/// Result of parsing or emitting wire data.
pub type Result<T> = core::result::Result<T, Error>;

/// IP protocol / IPv6 next-header numbers (IANA "Assigned Internet Protocol Numbers").
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct IpProtocol(pub u8);

impl IpProtocol {
    /// IPv6 Hop-by-Hop Options extension header.
    pub const HOP_BY_HOP: IpProtocol = IpProtocol(0);
    /// ICMP for IPv4 (RFC 792).
    pub const ICMP: IpProtocol = IpProtocol(1);
    /// TCP (RFC 9293).
    pub const TCP: IpProtocol = IpProtocol(6);
    /// UDP (RFC 768).
    pub const UDP: IpProtocol = IpProtocol(17);
    /// IPv6 Routing extension header.
    pub const IPV6_ROUTE: IpProtocol = IpProtocol(43);
    /// IPv6 Fragment extension header.
    pub const IPV6_FRAG: IpProtocol = IpProtocol(44);
    /// Encapsulating Security Payload: what follows is encrypted.
    pub const ESP: IpProtocol = IpProtocol(50);
    /// Authentication Header (its length counts 4-octet units, RFC 4302).
    pub const AH: IpProtocol = IpProtocol(51);
    /// ICMP for IPv6 (RFC 4443).
    pub const ICMPV6: IpProtocol = IpProtocol(58);
    /// IPv6 "no next header".
    pub const IPV6_NO_NEXT: IpProtocol = IpProtocol(59);
    /// IPv6 Destination Options extension header.
    pub const IPV6_OPTS: IpProtocol = IpProtocol(60);
}

/// Reads a big-endian u16 at `at`; callers have checked the length.
#[inline]
pub(crate) fn get_u16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// Reads a big-endian u32 at `at`; callers have checked the length.
#[inline]
pub(crate) fn get_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Writes a big-endian u16 at `at`; callers have checked the length.
#[inline]
pub(crate) fn put_u16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

/// Writes a big-endian u32 at `at`; callers have checked the length.
#[inline]
pub(crate) fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}
