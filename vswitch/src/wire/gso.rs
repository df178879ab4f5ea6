//! Software segmentation offload for TCP and software checksum completion, for egress
//! ports whose peer cannot take a GSO super-frame or a partial checksum (a netfront that
//! did not negotiate `feature-gso-tcpv4/6`, or set `feature-no-csum-offload`).
//!
//! The rules are Linux's `tcp_gso_segment` / `skb_segment` and `skb_checksum_help`:
//! * the TCP payload is cut into `mss`-byte pieces; every segment repeats the L2, L3 and
//!   TCP headers (options included);
//! * IPv4: total length per segment, the identification incremented per segment, the
//!   header checksum recomputed; IPv6: the payload length per segment;
//! * TCP: the sequence number advances by the payload before the segment; FIN and PSH stay
//!   only on the last segment, CWR only on the first (RFC 3168 §6.1.2: CWR is set on the
//!   first new segment after a window reduction); the checksum is computed in full over
//!   the pseudo-header, the segment's header and its payload.
//!
//! Nothing here copies the payload: [`TcpSegments::write_header`] writes a segment's
//! headers into a caller buffer and names the payload bytes of the original frame that
//! follow them, so a shell can move header and payload with two copies (the datapath
//! names both as grant-copy sources) and keep one shared buffer for the whole frame.
//! [`TcpSegments::write_segment`] builds a contiguous segment for callers that want one.
//! [`ChecksumCompletion`] is the single-frame analogue for TCP and UDP.

use core::ops::Range;
use std::net::{Ipv4Addr, Ipv6Addr};

use super::checksum;
use super::info::{FrameInfo, L3Info, L4Info};
use super::ipv4::Ipv4Packet;
use super::{get_u16, get_u32, put_u16, put_u32, IpProtocol};

/// Longest header block (L2 + L3 + L4 headers) a segment may repeat. Real stacks send at
/// most 14 + 8 (VLANs) + 60 + 60; IPv6 extension headers may add some, and more is refused
/// so a shell can reserve fixed-size header slots.
pub const MAX_HEADER_LEN: usize = 256;

/// Most segments one frame may be cut into. A hostile MSS of a few bytes would otherwise
/// turn one 64 KiB frame into tens of thousands of packets; Linux's minimum TCP MSS (88)
/// needs at most 745.
pub const MAX_SEGMENTS: usize = 1024;

/// Why a frame cannot be segmented or have its checksum completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum GsoError {
    /// Not an IPv4/IPv6 frame with a complete TCP (or, for checksum completion, UDP)
    /// header.
    #[error("not a TCP/IP frame with a complete transport header")]
    NotTcpUdp,
    /// An IP fragment: its transport payload is not all here.
    #[error("IP fragment")]
    Fragment,
    /// The IP length fields disagree with the headers or the frame.
    #[error("IP length inconsistent with the frame")]
    BadLength,
    /// The segment size is zero, or cuts the frame into more than [`MAX_SEGMENTS`].
    #[error("segment size {0} unusable")]
    BadMss(u16),
    /// The headers exceed [`MAX_HEADER_LEN`].
    #[error("headers of {0} bytes are too long to repeat")]
    HeaderTooLong(usize),
    /// The output buffer is too small, or the segment index is out of range.
    #[error("output buffer too small or segment out of range")]
    BufferTooSmall,
}

/// IP version and addresses, for the pseudo-header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum IpAddrs {
    V4(Ipv4Addr, Ipv4Addr),
    V6(Ipv6Addr, Ipv6Addr),
}

impl IpAddrs {
    fn pseudo(&self, proto: IpProtocol, l4_len: u32) -> u16 {
        match *self {
            IpAddrs::V4(s, d) => checksum::pseudo_header_v4(s, d, proto, l4_len),
            IpAddrs::V6(s, d) => checksum::pseudo_header_v6(s, d, proto, l4_len),
        }
    }
}

/// The L3/L4 geometry of an unfragmented TCP or UDP datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Geometry {
    addrs: IpAddrs,
    proto: IpProtocol,
    l3_offset: u16,
    l4_offset: u16,
    /// End of the L4 header (start of the payload).
    header_len: u16,
    /// End of the IP datagram in the frame (link-layer padding after it is ignored).
    end: u32,
}

impl Geometry {
    fn parse(frame: &[u8], info: &FrameInfo) -> Result<Geometry, GsoError> {
        let l3_offset = usize::from(info.l3_offset);
        let l4_offset = usize::from(info.l4_offset);
        let (proto, l4_hlen) = match info.l4 {
            L4Info::Tcp(t) => (IpProtocol::TCP, usize::from(t.header_len)),
            L4Info::Udp { .. } => (IpProtocol::UDP, super::udp::HEADER_LEN),
            L4Info::NonFirstFragment => return Err(GsoError::Fragment),
            _ => return Err(GsoError::NotTcpUdp),
        };
        let (addrs, end) = match info.l3 {
            L3Info::Ipv4(ip) => {
                if ip.is_fragment() {
                    return Err(GsoError::Fragment);
                }
                (
                    IpAddrs::V4(ip.src, ip.dst),
                    l3_offset + usize::from(ip.total_len),
                )
            }
            L3Info::Ipv6(ip) => {
                if ip.fragment.is_some() || !ip.chain_complete {
                    return Err(GsoError::Fragment);
                }
                (
                    IpAddrs::V6(ip.src, ip.dst),
                    l3_offset + super::ipv6::HEADER_LEN + usize::from(ip.payload_len),
                )
            }
            _ => return Err(GsoError::NotTcpUdp),
        };
        let header_len = l4_offset + l4_hlen;
        if l4_offset <= l3_offset || header_len > end || end > frame.len() {
            return Err(GsoError::BadLength);
        }
        if header_len > MAX_HEADER_LEN {
            return Err(GsoError::HeaderTooLong(header_len));
        }
        Ok(Geometry {
            addrs,
            proto,
            l3_offset: l3_offset as u16,
            l4_offset: l4_offset as u16,
            header_len: header_len as u16,
            end: end as u32,
        })
    }

    fn header_len(&self) -> usize {
        usize::from(self.header_len)
    }

    fn payload(&self) -> Range<usize> {
        self.header_len()..self.end as usize
    }

    /// Rewrites the IP length fields of the header block `hdr` for `l4_len` transport
    /// bytes, sets the IPv4 identification to `ident_add` past the original, and fixes the
    /// IPv4 header checksum.
    fn fix_ip(&self, hdr: &mut [u8], l4_len: usize, ident_add: u16) {
        let l3 = usize::from(self.l3_offset);
        let l4 = usize::from(self.l4_offset);
        match self.addrs {
            IpAddrs::V4(..) => {
                let total = (l4 - l3 + l4_len) as u16;
                put_u16(hdr, l3 + 2, total);
                let ident = get_u16(hdr, l3 + 4).wrapping_add(ident_add);
                put_u16(hdr, l3 + 4, ident);
                let mut ip = Ipv4Packet::new_unchecked(&mut hdr[l3..l4]);
                ip.fill_checksum();
            }
            IpAddrs::V6(..) => {
                let payload = (l4 - l3 - super::ipv6::HEADER_LEN + l4_len) as u16;
                put_u16(hdr, l3 + 4, payload);
            }
        }
    }

    /// Fills the L4 checksum of the header block `hdr` whose transport payload is
    /// `payload`.
    fn fill_l4_checksum(&self, hdr: &mut [u8], payload: &[u8]) {
        let l4 = usize::from(self.l4_offset);
        let at = l4 + if self.proto == IpProtocol::TCP { 16 } else { 6 };
        let l4_len = self.header_len() - l4 + payload.len();
        put_u16(hdr, at, 0);
        let sum = checksum::combine(&[
            self.addrs.pseudo(self.proto, l4_len as u32),
            checksum::data(&hdr[l4..self.header_len()]),
            checksum::data(payload),
        ]);
        let mut c = !sum;
        if c == 0 && self.proto == IpProtocol::UDP {
            // RFC 768: a computed zero is sent as all ones (zero means "no checksum").
            c = 0xffff;
        }
        put_u16(hdr, at, c);
    }
}

/// A TCP GSO frame cut into segments of `mss` payload bytes (see the module rules).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TcpSegments {
    geo: Geometry,
    mss: u16,
    count: u16,
}

impl TcpSegments {
    /// Prepares to segment `frame` (parsed as `info`) at `mss` payload bytes per segment.
    /// A frame whose payload fits one segment yields one segment (headers unchanged but
    /// for a completed checksum).
    pub fn new(frame: &[u8], info: &FrameInfo, mss: u16) -> Result<TcpSegments, GsoError> {
        let geo = Geometry::parse(frame, info)?;
        if geo.proto != IpProtocol::TCP {
            return Err(GsoError::NotTcpUdp);
        }
        if mss == 0 {
            return Err(GsoError::BadMss(mss));
        }
        let payload = geo.payload().len();
        let count = payload.div_ceil(usize::from(mss)).max(1);
        if count > MAX_SEGMENTS {
            return Err(GsoError::BadMss(mss));
        }
        Ok(TcpSegments {
            geo,
            mss,
            count: count as u16,
        })
    }

    /// Number of segments (≥ 1).
    pub fn count(&self) -> usize {
        usize::from(self.count)
    }

    /// Bytes of headers each segment repeats (L2 through TCP options).
    pub fn header_len(&self) -> usize {
        self.geo.header_len()
    }

    /// The payload bytes of segment `i` in the original frame (empty past the end).
    pub fn payload_range(&self, i: usize) -> Range<usize> {
        let all = self.geo.payload();
        let start = (all.start + i.saturating_mul(usize::from(self.mss))).min(all.end);
        let end = (start + usize::from(self.mss)).min(all.end);
        start..end
    }

    /// Length of segment `i` (headers plus payload).
    pub fn segment_len(&self, i: usize) -> usize {
        self.header_len() + self.payload_range(i).len()
    }

    /// Writes the headers of segment `i` into `hdr[..header_len()]`: lengths, IPv4
    /// identification, sequence number and flags adjusted, IP and TCP checksums complete
    /// over the payload `frame[payload_range(i)]`. Returns that payload range.
    pub fn write_header(
        &self,
        frame: &[u8],
        i: usize,
        hdr: &mut [u8],
    ) -> Result<Range<usize>, GsoError> {
        let hl = self.header_len();
        if i >= self.count() {
            return Err(GsoError::BufferTooSmall);
        }
        let (Some(src), Some(dst)) = (frame.get(..hl), hdr.get_mut(..hl)) else {
            return Err(GsoError::BufferTooSmall);
        };
        dst.copy_from_slice(src);
        let range = self.payload_range(i);
        let payload = frame.get(range.clone()).ok_or(GsoError::BufferTooSmall)?;
        let l4 = usize::from(self.geo.l4_offset);
        let tcp_hlen = hl - l4;
        self.geo.fix_ip(dst, tcp_hlen + payload.len(), i as u16);
        let seq = get_u32(dst, l4 + 4).wrapping_add((i * usize::from(self.mss)) as u32);
        put_u32(dst, l4 + 4, seq);
        let mut flags = dst[l4 + 13];
        if i + 1 < self.count() {
            flags &= !(super::TcpFlags::FIN.0 | super::TcpFlags::PSH.0);
        }
        if i > 0 {
            flags &= !super::TcpFlags::CWR.0;
        }
        dst[l4 + 13] = flags;
        self.geo.fill_l4_checksum(dst, payload);
        Ok(range)
    }

    /// Writes segment `i` contiguously into `out`; returns its length.
    pub fn write_segment(&self, frame: &[u8], i: usize, out: &mut [u8]) -> Result<usize, GsoError> {
        let hl = self.header_len();
        let len = self.segment_len(i);
        if out.len() < len {
            return Err(GsoError::BufferTooSmall);
        }
        let range = self.write_header(frame, i, out)?;
        let payload = frame.get(range).ok_or(GsoError::BufferTooSmall)?;
        out[hl..len].copy_from_slice(payload);
        Ok(len)
    }
}

/// Completion of a partial (offload) TCP or UDP checksum of one unfragmented IPv4/IPv6
/// frame, without modifying the frame: the completed headers are written elsewhere
/// (`skb_checksum_help` for a frame that may be shared with other ports).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChecksumCompletion {
    geo: Geometry,
}

impl ChecksumCompletion {
    /// Prepares to complete the checksum of `frame` (parsed as `info`).
    pub fn new(frame: &[u8], info: &FrameInfo) -> Result<ChecksumCompletion, GsoError> {
        Ok(ChecksumCompletion {
            geo: Geometry::parse(frame, info)?,
        })
    }

    /// Bytes of headers (L2 through the transport header).
    pub fn header_len(&self) -> usize {
        self.geo.header_len()
    }

    /// Length of the frame as delivered (link-layer padding after the datagram dropped).
    pub fn len(&self) -> usize {
        self.geo.end as usize
    }

    /// Always false: a datagram has at least its headers.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The payload bytes after the headers in the original frame.
    pub fn payload_range(&self) -> Range<usize> {
        self.geo.payload()
    }

    /// Writes the headers with the transport checksum completed into
    /// `hdr[..header_len()]`; returns the payload range that follows them.
    pub fn write_header(&self, frame: &[u8], hdr: &mut [u8]) -> Result<Range<usize>, GsoError> {
        let hl = self.header_len();
        let (Some(src), Some(dst)) = (frame.get(..hl), hdr.get_mut(..hl)) else {
            return Err(GsoError::BufferTooSmall);
        };
        dst.copy_from_slice(src);
        let range = self.payload_range();
        let payload = frame.get(range.clone()).ok_or(GsoError::BufferTooSmall)?;
        self.geo.fill_l4_checksum(dst, payload);
        Ok(range)
    }
}

/// Completes a partial TCP/UDP checksum in place (for a frame the caller owns alone).
pub fn complete_checksum(frame: &mut [u8], info: &FrameInfo) -> Result<(), GsoError> {
    let c = ChecksumCompletion::new(frame, info)?;
    let hl = c.header_len();
    let mut hdr = [0u8; MAX_HEADER_LEN];
    c.write_header(frame, &mut hdr)?;
    frame
        .get_mut(..hl)
        .ok_or(GsoError::BufferTooSmall)?
        .copy_from_slice(&hdr[..hl]);
    Ok(())
}

#[cfg(test)]
mod tests;
