//! Connection tuples: what conntrack keys a packet by (Linux `nf_conntrack_tuple`).
//!
//! TCP and UDP use (source, source port, destination, destination port). An ICMP echo
//! (RFC 792) uses its identifier in the source-port slot in *both* directions and 0 as
//! the destination port, as Linux does (`icmp_pkt_to_tuple`): a request and its reply
//! then carry the same id, and NAT remaps that id like a port. Other protocols have no
//! ports (GRE, ESP...: Linux's generic tracker).

use core::hash::{Hash, Hasher};
use std::net::Ipv4Addr;

use crate::wire::icmpv4::kind as icmp;
use crate::wire::{FrameInfo, IpProtocol, L4Info};

/// One direction of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tuple {
    /// IP protocol.
    pub proto: IpProtocol,
    /// Source address.
    pub src: Ipv4Addr,
    /// Source port, or the ICMP echo identifier.
    pub src_port: u16,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// Destination port (0 for ICMP and port-less protocols).
    pub dst_port: u16,
}

impl Hash for Tuple {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Two machine words instead of a dozen byte writes: this is the hot hash.
        state.write_u64((u64::from(u32::from(self.src)) << 32) | u64::from(u32::from(self.dst)));
        state.write_u64(
            (u64::from(self.src_port) << 32)
                | (u64::from(self.dst_port) << 16)
                | u64::from(self.proto.0),
        );
    }
}

impl Tuple {
    /// The tuple of a packet travelling the other way (ICMP keeps its id in place).
    pub fn reversed(&self) -> Tuple {
        if self.proto == IpProtocol::ICMP {
            Tuple {
                proto: self.proto,
                src: self.dst,
                src_port: self.src_port,
                dst: self.src,
                dst_port: 0,
            }
        } else {
            Tuple {
                proto: self.proto,
                src: self.dst,
                src_port: self.dst_port,
                dst: self.src,
                dst_port: self.src_port,
            }
        }
    }

    /// Whether the protocol has ports (TCP, UDP) that NAT may remap.
    pub fn has_ports(&self) -> bool {
        self.proto == IpProtocol::TCP || self.proto == IpProtocol::UDP
    }
}

/// How a packet's transport relates to connection tracking.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PacketClass {
    /// A packet with a tuple (TCP, UDP, ICMP echo, port-less protocol).
    Tracked(Tuple),
    /// An ICMP error: handled through its embedded packet (RELATED).
    IcmpError,
    /// ICMP that is neither an echo nor an error (timestamp, router solicitation...).
    UntrackedIcmp,
    /// A non-first fragment: no transport header in this packet.
    NonFirstFragment,
    /// The transport header is cut short.
    Truncated,
    /// Not IPv4.
    NotIpv4,
}

/// Classifies a parsed frame.
pub fn classify(info: &FrameInfo) -> PacketClass {
    let Some(ip) = info.ipv4() else {
        return PacketClass::NotIpv4;
    };
    let (src, dst, proto) = (ip.src, ip.dst, ip.protocol);
    let tuple = |sp: u16, dp: u16| {
        PacketClass::Tracked(Tuple {
            proto,
            src,
            src_port: sp,
            dst,
            dst_port: dp,
        })
    };
    match info.l4 {
        L4Info::Tcp(t) => tuple(t.src_port, t.dst_port),
        L4Info::Udp { src_port, dst_port } => tuple(src_port, dst_port),
        L4Info::Icmpv4 { msg_type, .. } if icmp::is_error(msg_type) => PacketClass::IcmpError,
        L4Info::Icmpv4 { msg_type, .. }
            if msg_type == icmp::ECHO_REQUEST || msg_type == icmp::ECHO_REPLY =>
        {
            PacketClass::Tracked(Tuple {
                proto,
                src,
                src_port: 0, // filled from the packet by the caller (echo id)
                dst,
                dst_port: 0,
            })
        }
        L4Info::Icmpv4 { .. } => PacketClass::UntrackedIcmp,
        L4Info::NonFirstFragment => PacketClass::NonFirstFragment,
        L4Info::Truncated => PacketClass::Truncated,
        // Protocols the parser does not look into: tracked without ports.
        L4Info::None if proto != IpProtocol::TCP && proto != IpProtocol::UDP => tuple(0, 0),
        _ => PacketClass::Truncated,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reverse_swaps_ports_but_not_icmp_ids() {
        let t = Tuple {
            proto: IpProtocol::TCP,
            src: Ipv4Addr::new(10, 0, 0, 1),
            src_port: 1000,
            dst: Ipv4Addr::new(192, 0, 2, 1),
            dst_port: 80,
        };
        let r = t.reversed();
        assert_eq!(
            (r.src, r.src_port, r.dst, r.dst_port),
            (t.dst, 80, t.src, 1000)
        );
        assert_eq!(r.reversed(), t);
        let i = Tuple {
            proto: IpProtocol::ICMP,
            src_port: 77,
            dst_port: 0,
            ..t
        };
        assert_eq!(i.reversed().src_port, 77);
        assert_eq!(i.reversed().reversed(), i);
    }
}
