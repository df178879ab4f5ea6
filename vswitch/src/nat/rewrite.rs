//! In-place rewriting of IPv4 addresses, ports and ICMP ids with incremental checksum
//! updates (RFC 1624), the way Linux `nf_nat_ipv4_manip_pkt` and
//! `inet_proto_csum_replace{2,4}` do it.
//!
//! Two checksum conventions meet here:
//! * complete: the TCP/UDP field holds the complement of the sum; an address or port
//!   change is patched with `HC' = ~(~HC + ~m + m')`;
//! * partial (`csum_partial`, every GSO frame): the field holds the *uncomplemented*
//!   pseudo-header sum and the NIC (or the receiving guest) sums the segment later. An
//!   address change (part of the pseudo-header) is patched as `C' = C + ~m + m'`; a port
//!   change needs nothing, since the ports are summed with the data later.
//!
//! A UDP checksum of 0 means "none" and stays 0; a computed 0 is sent as 0xffff
//! (RFC 768). The ICMP checksum covers no pseudo-header, so only id changes touch it.
//! The first fragment of a datagram carries the L4 checksum of the whole datagram, and
//! the incremental update is still exact; later fragments have no L4 header and get only
//! the IP header changes.

use std::net::Ipv4Addr;

use super::tuple::Tuple;
use crate::wire::checksum;
use crate::wire::{FrameInfo, IpProtocol, L4Info};

pub(crate) fn get16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

pub(crate) fn put16(b: &mut [u8], at: usize, v: u16) -> Option<()> {
    b.get_mut(at..at + 2)?.copy_from_slice(&v.to_be_bytes());
    Some(())
}

pub(crate) fn get_addr(b: &[u8], at: usize) -> Option<Ipv4Addr> {
    let s = b.get(at..at + 4)?;
    Some(Ipv4Addr::new(s[0], s[1], s[2], s[3]))
}

pub(crate) fn put_addr(b: &mut [u8], at: usize, a: Ipv4Addr) -> Option<()> {
    b.get_mut(at..at + 4)?.copy_from_slice(&a.octets());
    Some(())
}

/// How an L4 checksum field is patched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum L4Sum {
    /// TCP: always present.
    Tcp,
    /// UDP: 0 means absent.
    Udp,
    /// ICMP: no pseudo-header.
    Icmp,
}

/// Patches the checksum at `at` for a 32-bit field change that is part of the
/// pseudo-header (an address). ICMP has no pseudo-header and is left alone.
pub(crate) fn patch_addr_sum(
    b: &mut [u8],
    at: usize,
    kind: L4Sum,
    partial: bool,
    old: Ipv4Addr,
    new: Ipv4Addr,
) {
    let (old, new) = (u32::from(old), u32::from(new));
    let Some(c) = get16(b, at) else { return };
    let n = match (kind, partial) {
        (L4Sum::Icmp, _) => return,
        (_, true) => !checksum::update_u32(!c, old, new),
        (L4Sum::Udp, false) if c == 0 => return,
        (L4Sum::Udp, false) => match checksum::update_u32(c, old, new) {
            0 => 0xffff,
            x => x,
        },
        (L4Sum::Tcp, false) => checksum::update_u32(c, old, new),
    };
    put16(b, at, n);
}

/// Patches the checksum at `at` for a 16-bit change inside the summed data (a port or
/// ICMP id). Partial TCP/UDP sums need nothing: the data is summed later.
pub(crate) fn patch_data_sum(
    b: &mut [u8],
    at: usize,
    kind: L4Sum,
    partial: bool,
    old: u16,
    new: u16,
) {
    let Some(c) = get16(b, at) else { return };
    let n = match (kind, partial) {
        (L4Sum::Icmp, _) => checksum::update_u16(c, old, new),
        (_, true) => return,
        (L4Sum::Udp, false) if c == 0 => return,
        (L4Sum::Udp, false) => match checksum::update_u16(c, old, new) {
            0 => 0xffff,
            x => x,
        },
        (L4Sum::Tcp, false) => checksum::update_u16(c, old, new),
    };
    put16(b, at, n);
}

/// Offsets inside an IPv4 header.
pub(crate) const IP_CSUM: usize = 10;
pub(crate) const IP_SRC: usize = 12;
pub(crate) const IP_DST: usize = 16;

/// Replaces the address at `ip + field` (IP_SRC or IP_DST) of the IPv4 header starting at
/// `ip`, patching the header checksum and, when `l4` names a checksum field, that too.
pub(crate) fn set_ip_addr(
    b: &mut [u8],
    ip: usize,
    field: usize,
    new: Ipv4Addr,
    l4: Option<(usize, L4Sum)>,
    partial: bool,
) -> Option<()> {
    let old = get_addr(b, ip + field)?;
    if old == new {
        return Some(());
    }
    put_addr(b, ip + field, new)?;
    let c = get16(b, ip + IP_CSUM)?;
    put16(
        b,
        ip + IP_CSUM,
        checksum::update_u32(c, u32::from(old), u32::from(new)),
    )?;
    if let Some((at, kind)) = l4 {
        patch_addr_sum(b, at, kind, partial, old, new);
    }
    Some(())
}

/// Replaces the 16-bit value at `at` (a port or ICMP id), patching the checksum `sum`.
pub(crate) fn set_u16(
    b: &mut [u8],
    at: usize,
    new: u16,
    sum: Option<(usize, L4Sum)>,
    partial: bool,
) -> Option<()> {
    let old = get16(b, at)?;
    if old == new {
        return Some(());
    }
    put16(b, at, new)?;
    if let Some((c, kind)) = sum {
        patch_data_sum(b, c, kind, partial, old, new);
    }
    Some(())
}

/// Rewrites the packet parsed as `info` in place so that its addresses and ports become
/// those of `to` (`to.src_port` is the ICMP echo id for ICMP). Only fields that differ are
/// written. `partial` is the frame's `csum_partial` flag. Returns `None` if the frame is
/// shorter than `info` claims.
pub fn rewrite_packet(frame: &mut [u8], info: &FrameInfo, partial: bool, to: &Tuple) -> Option<()> {
    let ip = info.ipv4()?;
    let l3 = info.l2_header_len();
    let l4 = usize::from(info.l4_offset);
    let sum = match (info.l4, ip.protocol) {
        (L4Info::Tcp(_), IpProtocol::TCP) => Some((l4 + 16, L4Sum::Tcp)),
        (L4Info::Udp { .. }, IpProtocol::UDP) => Some((l4 + 6, L4Sum::Udp)),
        (L4Info::Icmpv4 { .. }, IpProtocol::ICMP) => Some((l4 + 2, L4Sum::Icmp)),
        _ => None,
    };
    set_ip_addr(frame, l3, IP_SRC, to.src, sum, partial)?;
    set_ip_addr(frame, l3, IP_DST, to.dst, sum, partial)?;
    match sum {
        Some((_, L4Sum::Tcp | L4Sum::Udp)) => {
            set_u16(frame, l4, to.src_port, sum, partial)?;
            set_u16(frame, l4 + 2, to.dst_port, sum, partial)?;
        }
        Some((_, L4Sum::Icmp)) => set_u16(frame, l4 + 4, to.src_port, sum, partial)?,
        None => {}
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::build::{self, L2Header, TcpSegment};
    use crate::wire::{Icmpv4Packet, Ipv4Packet, MacAddr, TcpFlags, TcpPacket, UdpPacket};
    use proptest::prelude::*;

    const M: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);

    fn tcp(s: Ipv4Addr, d: Ipv4Addr, sp: u16, dp: u16, payload: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; payload.len() + 80];
        let n = build::ipv4_tcp(
            &mut b,
            L2Header::new(M, M),
            s,
            d,
            &TcpSegment {
                src_port: sp,
                dst_port: dp,
                seq: 9,
                ack: 10,
                flags: TcpFlags::ACK,
                window: 1,
                payload,
            },
        )
        .unwrap();
        b.truncate(n);
        b
    }

    fn udp(s: Ipv4Addr, d: Ipv4Addr, sp: u16, dp: u16, payload: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; payload.len() + 80];
        let n = build::ipv4_udp(&mut b, L2Header::new(M, M), s, d, sp, dp, payload).unwrap();
        b.truncate(n);
        b
    }

    fn addr() -> impl Strategy<Value = Ipv4Addr> {
        any::<u32>().prop_map(Ipv4Addr::from)
    }

    /// What a NIC does with a partial checksum: sum the L4 bytes (field included) and
    /// store the complement.
    fn complete_partial(f: &mut [u8], at: usize) {
        let c = !checksum::data(&f[34..]);
        f[at..at + 2].copy_from_slice(&c.to_be_bytes());
    }

    proptest! {
        /// NAT out then back restores the original bytes exactly, and the translated
        /// packet verifies under its new addresses (complete checksums).
        #[test]
        fn tcp_udp_round_trip(
            s in addr(), d in addr(), n in addr(), sp in any::<u16>(), dp in any::<u16>(), np in any::<u16>(),
            payload in proptest::collection::vec(any::<u8>(), 0..64), is_udp in any::<bool>(),
        ) {
            let orig = if is_udp { udp(s, d, sp, dp, &payload) } else { tcp(s, d, sp, dp, &payload) };
            let info = FrameInfo::parse(&orig).unwrap();
            let mut f = orig.clone();
            let proto = if is_udp { IpProtocol::UDP } else { IpProtocol::TCP };
            rewrite_packet(&mut f, &info, false, &Tuple { proto, src: n, src_port: np, dst: d, dst_port: dp }).unwrap();
            prop_assert!(Ipv4Packet::new_checked(&f[14..]).unwrap().verify_checksum());
            if is_udp {
                prop_assert!(UdpPacket::new_checked(&f[34..]).unwrap().verify_checksum_v4(n, d));
            } else {
                prop_assert!(TcpPacket::new_checked(&f[34..]).unwrap().verify_checksum_v4(n, d));
            }
            let info2 = FrameInfo::parse(&f).unwrap();
            prop_assert_eq!(info2.ipv4().unwrap().src, n);
            rewrite_packet(&mut f, &info2, false, &Tuple { proto, src: s, src_port: sp, dst: d, dst_port: dp }).unwrap();
            prop_assert_eq!(f, orig);
        }

        /// With a partial checksum (the pseudo-header sum in the field), the rewritten
        /// packet completes to a valid checksum under the new addresses.
        #[test]
        fn partial_checksum_stays_completable(
            s in addr(), d in addr(), n in addr(), m in addr(), sp in any::<u16>(), np in any::<u16>(), np2 in any::<u16>(),
            payload in proptest::collection::vec(any::<u8>(), 0..64), is_udp in any::<bool>(),
        ) {
            let mut f = if is_udp { udp(s, d, sp, 80, &payload) } else { tcp(s, d, sp, 80, &payload) };
            let (proto, at) = if is_udp { (IpProtocol::UDP, 40) } else { (IpProtocol::TCP, 50) };
            let l4_len = (f.len() - 34) as u32;
            let ph = checksum::pseudo_header_v4(s, d, proto, l4_len);
            f[at..at + 2].copy_from_slice(&ph.to_be_bytes());
            let info = FrameInfo::parse(&f).unwrap();
            rewrite_packet(&mut f, &info, true, &Tuple { proto, src: n, src_port: np, dst: m, dst_port: np2 }).unwrap();
            let expect = checksum::pseudo_header_v4(n, m, proto, l4_len);
            // Equal as ones'-complement values (0x0000 and 0xffff are the same number).
            let got = u16::from_be_bytes([f[at], f[at + 1]]);
            prop_assert_eq!(checksum::combine(&[got, !expect]) , 0xffff);
            complete_partial(&mut f, at);
            if is_udp {
                prop_assert!(UdpPacket::new_checked(&f[34..]).unwrap().verify_checksum_v4(n, m));
            } else {
                prop_assert!(TcpPacket::new_checked(&f[34..]).unwrap().verify_checksum_v4(n, m));
            }
        }

        /// ICMP echo: id and addresses change, the ICMP checksum stays valid.
        #[test]
        fn icmp_echo_id(s in addr(), d in addr(), n in addr(), id in any::<u16>(), nid in any::<u16>()) {
            let mut b = vec![0u8; 100];
            let k = build::ipv4_icmp(&mut b, L2Header::new(M, M), s, d, 8, 0, u32::from(id) << 16 | 1, b"ping").unwrap();
            b.truncate(k);
            let info = FrameInfo::parse(&b).unwrap();
            rewrite_packet(&mut b, &info, false, &Tuple { proto: IpProtocol::ICMP, src: n, src_port: nid, dst: d, dst_port: 0 }).unwrap();
            let p = Icmpv4Packet::new_checked(&b[34..]).unwrap();
            prop_assert!(p.verify_checksum());
            prop_assert_eq!(p.echo_ident(), nid);
            prop_assert!(Ipv4Packet::new_checked(&b[14..]).unwrap().verify_checksum());
        }
    }

    #[test]
    fn udp_without_checksum_stays_without() {
        let s = Ipv4Addr::new(10, 0, 0, 2);
        let d = Ipv4Addr::new(192, 0, 2, 1);
        let mut f = udp(s, d, 5, 6, b"abc");
        f[40] = 0;
        f[41] = 0;
        let info = FrameInfo::parse(&f).unwrap();
        let n = Ipv4Addr::new(198, 51, 100, 1);
        rewrite_packet(
            &mut f,
            &info,
            false,
            &Tuple {
                proto: IpProtocol::UDP,
                src: n,
                src_port: 7,
                dst: d,
                dst_port: 6,
            },
        )
        .unwrap();
        assert_eq!(&f[40..42], &[0, 0]);
        assert_eq!(&f[26..30], &n.octets());
        assert_eq!(&f[34..36], &7u16.to_be_bytes());
    }
}
