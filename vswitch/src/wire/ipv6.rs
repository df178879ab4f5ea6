//! IPv6 fixed header (RFC 8200 §3) and a bounded walk over extension headers (§4).

use std::net::Ipv6Addr;

use super::{get_u16, put_u16, Error, IpProtocol, Result};

mod field {
    use core::ops::Range;
    pub const VER_TC_FLOW: Range<usize> = 0..4;
    pub const LENGTH: usize = 4;
    pub const NEXT_HEADER: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC: Range<usize> = 8..24;
    pub const DST: Range<usize> = 24..40;
}

/// Length of the fixed IPv6 header.
pub const HEADER_LEN: usize = 40;

/// At most this many extension headers are walked looking for the upper-layer header; a
/// longer chain is treated as incomplete (like OVS `parse_ipv6_ext_hdrs`, a bounded loop).
pub const MAX_EXTENSION_HEADERS: usize = 8;

/// A view of an IPv6 packet.
#[derive(Debug, Clone)]
pub struct Ipv6Packet<T: AsRef<[u8]>> {
    buffer: T,
}

/// The result of walking the extension-header chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct UpperLayer {
    /// The first non-extension next-header value (or the last one seen if incomplete).
    pub protocol: IpProtocol,
    /// Offset of the upper-layer header from the start of the IPv6 header.
    pub offset: usize,
    /// Fragment header fields, if one was present: (offset in bytes, more-fragments).
    pub fragment: Option<(u16, bool)>,
    /// The chain ended at an upper-layer header inside the packet. False when it ran past
    /// the payload, exceeded [`MAX_EXTENSION_HEADERS`], or stopped at a non-first fragment
    /// (whose upper-layer header lives in another packet). RA-Guard must not trust an
    /// incomplete first fragment (RFC 7113 §3).
    pub complete: bool,
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    /// Wraps a buffer without checking it; getters panic if it is under 40 bytes.
    pub const fn new_unchecked(buffer: T) -> Self {
        Ipv6Packet { buffer }
    }

    /// Wraps a buffer after [`check_len`](Self::check_len).
    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Version 6, and the fixed header plus `payload_len` fit in the buffer (extra bytes
    /// are link-layer padding).
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated);
        }
        if self.version() != 6 {
            return Err(Error::Malformed);
        }
        if HEADER_LEN + usize::from(self.payload_len()) > len {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// The version nibble.
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[0] >> 4
    }

    /// Traffic class.
    pub fn traffic_class(&self) -> u8 {
        let b = &self.buffer.as_ref()[field::VER_TC_FLOW];
        (b[0] << 4) | (b[1] >> 4)
    }

    /// Payload length (everything after the fixed header).
    pub fn payload_len(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::LENGTH)
    }

    /// Next header of the fixed header.
    pub fn next_header(&self) -> IpProtocol {
        IpProtocol(self.buffer.as_ref()[field::NEXT_HEADER])
    }

    /// Hop limit.
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }

    /// Source address.
    pub fn src_addr(&self) -> Ipv6Addr {
        let mut a = [0u8; 16];
        a.copy_from_slice(&self.buffer.as_ref()[field::SRC]);
        Ipv6Addr::from(a)
    }

    /// Destination address.
    pub fn dst_addr(&self) -> Ipv6Addr {
        let mut a = [0u8; 16];
        a.copy_from_slice(&self.buffer.as_ref()[field::DST]);
        Ipv6Addr::from(a)
    }

    /// The payload (after the fixed header, up to `payload_len`).
    pub fn payload(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        let end = (HEADER_LEN + usize::from(self.payload_len())).min(b.len());
        &b[HEADER_LEN.min(end)..end]
    }

    /// Walks Hop-by-Hop, Routing, Fragment, Destination Options and AH headers (at most
    /// [`MAX_EXTENSION_HEADERS`]) to the upper-layer header. Never reads past the payload.
    pub fn upper_layer(&self) -> UpperLayer {
        let payload = self.payload();
        let mut proto = self.next_header();
        let mut at = 0usize;
        let mut fragment = None;
        for _ in 0..MAX_EXTENSION_HEADERS {
            let hdr_len = match proto {
                IpProtocol::HOP_BY_HOP | IpProtocol::IPV6_ROUTE | IpProtocol::IPV6_OPTS => {
                    match payload.get(at + 1) {
                        Some(&l) => (usize::from(l) + 1) * 8,
                        None => break,
                    }
                }
                IpProtocol::AH => match payload.get(at + 1) {
                    Some(&l) => (usize::from(l) + 2) * 4,
                    None => break,
                },
                IpProtocol::IPV6_FRAG => {
                    let Some(f) = payload.get(at..at + 8) else {
                        break;
                    };
                    let off_flags = u16::from_be_bytes([f[2], f[3]]);
                    let offset = off_flags & 0xfff8;
                    let more = off_flags & 1 != 0;
                    fragment = Some((offset, more));
                    if offset != 0 {
                        // The upper-layer header is in the first fragment, not here.
                        return UpperLayer {
                            protocol: IpProtocol(f[0]),
                            offset: HEADER_LEN + at + 8,
                            fragment,
                            complete: false,
                        };
                    }
                    8
                }
                _ => {
                    return UpperLayer {
                        protocol: proto,
                        offset: HEADER_LEN + at,
                        fragment,
                        complete: true,
                    }
                }
            };
            let Some(&next) = payload.get(at) else { break };
            if at + hdr_len > payload.len() {
                break;
            }
            proto = IpProtocol(next);
            at += hdr_len;
        }
        UpperLayer {
            protocol: proto,
            offset: HEADER_LEN + at.min(payload.len()),
            fragment,
            complete: false,
        }
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6Packet<T> {
    /// Sets version 6 with zero traffic class and flow label.
    pub fn set_version(&mut self) {
        self.buffer.as_mut()[field::VER_TC_FLOW].copy_from_slice(&[0x60, 0, 0, 0]);
    }

    /// Sets the payload length.
    pub fn set_payload_len(&mut self, v: u16) {
        put_u16(self.buffer.as_mut(), field::LENGTH, v);
    }

    /// Sets the next header.
    pub fn set_next_header(&mut self, p: IpProtocol) {
        self.buffer.as_mut()[field::NEXT_HEADER] = p.0;
    }

    /// Sets the hop limit.
    pub fn set_hop_limit(&mut self, v: u8) {
        self.buffer.as_mut()[field::HOP_LIMIT] = v;
    }

    /// Sets the source address.
    pub fn set_src_addr(&mut self, a: Ipv6Addr) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&a.octets());
    }

    /// Sets the destination address.
    pub fn set_dst_addr(&mut self, a: Ipv6Addr) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&a.octets());
    }
}

/// The fields of an IPv6 fixed header, for emitting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ipv6Repr {
    /// Source address.
    pub src: Ipv6Addr,
    /// Destination address.
    pub dst: Ipv6Addr,
    /// Next header.
    pub next_header: IpProtocol,
    /// Payload length.
    pub payload_len: usize,
    /// Hop limit.
    pub hop_limit: u8,
}

impl Ipv6Repr {
    /// Header length written by [`emit`](Self::emit).
    pub const fn header_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the 40-byte fixed header into `buf`.
    pub fn emit(&self, buf: &mut [u8]) -> Result<()> {
        if buf.len() < HEADER_LEN {
            return Err(Error::BufferTooSmall);
        }
        let len = u16::try_from(self.payload_len).map_err(|_| Error::Malformed)?;
        let mut p = Ipv6Packet::new_unchecked(&mut buf[..HEADER_LEN]);
        p.set_version();
        p.set_payload_len(len);
        p.set_next_header(self.next_header);
        p.set_hop_limit(self.hop_limit);
        p.set_src_addr(self.src);
        p.set_dst_addr(self.dst);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(next: IpProtocol, payload: &[u8]) -> Vec<u8> {
        let r = Ipv6Repr {
            src: "fe80::1".parse().unwrap(),
            dst: "ff02::1".parse().unwrap(),
            next_header: next,
            payload_len: payload.len(),
            hop_limit: 255,
        };
        let mut b = vec![0u8; 40];
        r.emit(&mut b).unwrap();
        b.extend_from_slice(payload);
        b
    }

    #[test]
    fn fixed_header() {
        let b = packet(IpProtocol::ICMPV6, &[134, 0, 0, 0]);
        let p = Ipv6Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.hop_limit(), 255);
        assert_eq!(p.next_header(), IpProtocol::ICMPV6);
        assert_eq!(p.src_addr(), "fe80::1".parse::<Ipv6Addr>().unwrap());
        let u = p.upper_layer();
        assert_eq!(u.protocol, IpProtocol::ICMPV6);
        assert_eq!(u.offset, 40);
        assert!(u.complete);
        assert_eq!(
            Ipv6Packet::new_checked(&b[..43]).unwrap_err(),
            Error::Truncated
        );
        let mut bad = b.clone();
        bad[0] = 0x40;
        assert_eq!(
            Ipv6Packet::new_checked(&bad[..]).unwrap_err(),
            Error::Malformed
        );
    }

    #[test]
    fn walks_extension_headers() {
        // Hop-by-hop (8 bytes) -> destination options (16 bytes) -> ICMPv6.
        let mut pl = vec![60, 0, 0, 0, 0, 0, 0, 0];
        pl.extend_from_slice(&[58, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        pl.extend_from_slice(&[134, 0, 0, 0]);
        let b = packet(IpProtocol::HOP_BY_HOP, &pl);
        let u = Ipv6Packet::new_checked(&b[..]).unwrap().upper_layer();
        assert_eq!(u.protocol, IpProtocol::ICMPV6);
        assert_eq!(u.offset, 40 + 24);
        assert!(u.complete);

        // First fragment with the chain cut short: an option header claiming 64 bytes.
        let pl = vec![60, 0, 0, 1, 0, 0, 0, 1, 58, 7, 0, 0];
        let b = packet(IpProtocol::IPV6_FRAG, &pl);
        let u = Ipv6Packet::new_checked(&b[..]).unwrap().upper_layer();
        assert!(!u.complete);
        assert_eq!(u.fragment, Some((0, true)));

        // Non-first fragment.
        let pl = vec![58, 0, 0x05, 0x78, 0, 0, 0, 1, 1, 2, 3, 4];
        let b = packet(IpProtocol::IPV6_FRAG, &pl);
        let u = Ipv6Packet::new_checked(&b[..]).unwrap().upper_layer();
        assert!(!u.complete);
        assert_eq!(u.fragment, Some((0x0578, false)));
        assert_eq!(u.protocol, IpProtocol::ICMPV6);

        // A chain longer than the bound.
        let mut pl = Vec::new();
        for _ in 0..MAX_EXTENSION_HEADERS + 1 {
            pl.extend_from_slice(&[60, 0, 0, 0, 0, 0, 0, 0]);
        }
        let b = packet(IpProtocol::IPV6_OPTS, &pl);
        assert!(
            !Ipv6Packet::new_checked(&b[..])
                .unwrap()
                .upper_layer()
                .complete
        );
    }
}
