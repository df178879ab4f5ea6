//! IPv4 fragmentation on the routed path (RFC 791 §3.2 "Fragmentation", RFC 1812
//! §4.2.2.7, §5.2.6).
//!
//! When a datagram without DF is larger than the egress MTU, the router splits it: every
//! fragment but the last carries a multiple of 8 payload bytes; the first keeps the whole
//! header, later ones only the options whose "copied" flag is set; offsets and MF are
//! relative to the original datagram (which may itself be a fragment). A datagram whose L4
//! checksum was left to offload (`csum_partial`) gets it completed first with
//! [`complete_l4_checksum`], since no fragment can carry a partial checksum.
//!
//! [`Fragmenter`] is an allocation-free iterator: the shell calls
//! [`Fragmenter::next_fragment`] with the frame and a buffer until it returns `None`.

use crate::wire::ipv4::{self, Ipv4Packet};
use crate::wire::tcp::TcpPacket;
use crate::wire::udp::UdpPacket;
use crate::wire::{FrameInfo, IpProtocol, L4Info};

/// Why a frame cannot be fragmented.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FragError {
    /// Not a valid IPv4 datagram.
    #[error("not an IPv4 datagram")]
    NotIpv4,
    /// DF is set (the router sends "fragmentation needed" instead).
    #[error("don't-fragment is set")]
    DontFragment,
    /// The MTU leaves fewer than 8 payload bytes after the header.
    #[error("MTU too small to fragment")]
    MtuTooSmall,
    /// The output buffer cannot hold a fragment.
    #[error("output buffer too small")]
    BufferTooSmall,
}

/// Splits one IPv4 datagram into fragments that fit an MTU.
#[derive(Clone, Debug)]
pub struct Fragmenter {
    l3: usize,
    hl: usize,
    payload_len: usize,
    done: usize,
    finished: bool,
    mtu: usize,
    orig_offset: usize,
    orig_mf: bool,
    rest_hdr: [u8; 60],
    rest_hl: usize,
}

fn chunk(mtu: usize, hdr: usize) -> usize {
    mtu.saturating_sub(hdr) & !7
}

impl Fragmenter {
    /// Prepares to fragment `frame` (parsed as `info`) for `mtu` (an L3 size).
    pub fn new(frame: &[u8], info: &FrameInfo, mtu: u32) -> Result<Fragmenter, FragError> {
        let ip = info.ipv4().ok_or(FragError::NotIpv4)?;
        if ip.dont_frag {
            return Err(FragError::DontFragment);
        }
        let l3 = info.l2_header_len();
        let hl = usize::from(ip.header_len);
        let total = usize::from(ip.total_len);
        if frame.len() < l3 + total || total < hl || hl < ipv4::HEADER_LEN {
            return Err(FragError::NotIpv4);
        }
        let mtu = mtu as usize;
        let mut rest_hdr = [0u8; 60];
        rest_hdr[..ipv4::HEADER_LEN].copy_from_slice(&frame[l3..l3 + ipv4::HEADER_LEN]);
        let mut rest_hl = ipv4::HEADER_LEN;
        let opts = &frame[l3 + ipv4::HEADER_LEN..l3 + hl];
        let mut i = 0;
        while i < opts.len() {
            let t = opts[i];
            if t == 0 {
                break;
            }
            if t == 1 {
                i += 1;
                continue;
            }
            let Some(&len) = opts.get(i + 1) else { break };
            let len = usize::from(len);
            if len < 2 || i + len > opts.len() {
                break;
            }
            if t & 0x80 != 0 {
                rest_hdr[rest_hl..rest_hl + len].copy_from_slice(&opts[i..i + len]);
                rest_hl += len;
            }
            i += len;
        }
        // Pad to a 32-bit boundary with end-of-options (zero) bytes.
        rest_hl = (rest_hl + 3) & !3;
        {
            let mut h = Ipv4Packet::new_unchecked(&mut rest_hdr[..]);
            h.set_version_and_header_len(rest_hl);
        }
        if chunk(mtu, hl) < 8 || chunk(mtu, rest_hl) < 8 {
            return Err(FragError::MtuTooSmall);
        }
        Ok(Fragmenter {
            l3,
            hl,
            payload_len: total - hl,
            done: 0,
            finished: false,
            mtu,
            orig_offset: usize::from(ip.frag_offset),
            orig_mf: ip.more_frags,
            rest_hdr,
            rest_hl,
        })
    }

    /// How many fragments [`next_fragment`](Self::next_fragment) will produce in all.
    pub fn count(&self) -> usize {
        let first = chunk(self.mtu, self.hl);
        if self.payload_len <= first {
            return 1;
        }
        let rest = chunk(self.mtu, self.rest_hl).max(8);
        1 + (self.payload_len - first).div_ceil(rest)
    }

    /// Writes the next fragment (L2 header copied from `frame`) into `out` and returns
    /// its length; `None` when all have been written. `frame` must be the frame given to
    /// [`new`](Self::new).
    pub fn next_fragment(
        &mut self,
        frame: &[u8],
        out: &mut [u8],
    ) -> Option<Result<usize, FragError>> {
        if self.finished {
            return None;
        }
        let first = self.done == 0;
        let hdr_len = if first { self.hl } else { self.rest_hl };
        let remaining = self.payload_len - self.done;
        let len = remaining.min(chunk(self.mtu, hdr_len));
        let last = self.done + len >= self.payload_len;
        let total = self.l3 + hdr_len + len;
        let data_at = self.l3 + self.hl + self.done;
        let (Some(out), Some(l2), Some(data)) = (
            out.get_mut(..total),
            frame.get(..self.l3),
            frame.get(data_at..data_at + len),
        ) else {
            self.finished = true;
            return Some(Err(FragError::BufferTooSmall));
        };
        out[..self.l3].copy_from_slice(l2);
        let hdr = if first {
            frame.get(self.l3..self.l3 + self.hl)
        } else {
            self.rest_hdr.get(..self.rest_hl)
        };
        let Some(hdr) = hdr else {
            self.finished = true;
            return Some(Err(FragError::BufferTooSmall));
        };
        out[self.l3..self.l3 + hdr_len].copy_from_slice(hdr);
        out[self.l3 + hdr_len..].copy_from_slice(data);
        let mut ip = Ipv4Packet::new_unchecked(&mut out[self.l3..]);
        ip.set_total_len((hdr_len + len) as u16);
        ip.set_frag(
            false,
            !last || self.orig_mf,
            (self.orig_offset + self.done) as u16,
        );
        ip.fill_checksum();
        self.done += len;
        self.finished = last;
        Some(Ok(total))
    }
}

/// Completes a partial (offload) TCP/UDP checksum of an unfragmented IPv4 datagram in
/// place, as `skb_checksum_help` does before software fragmentation or when a frame
/// leaves to a peer that cannot offload. Returns whether a checksum was written.
pub fn complete_l4_checksum(frame: &mut [u8], info: &FrameInfo) -> bool {
    let Some(ip) = info.ipv4() else {
        return false;
    };
    if ip.is_fragment() {
        return false;
    }
    let end = info.l2_header_len() + usize::from(ip.total_len);
    let start = usize::from(info.l4_offset);
    let Some(l4) = frame.get_mut(start..end) else {
        return false;
    };
    match (info.l4, ip.protocol) {
        (L4Info::Tcp(_), IpProtocol::TCP) => {
            let Ok(mut t) = TcpPacket::new_checked(l4) else {
                return false;
            };
            t.fill_checksum_v4(ip.src, ip.dst);
            true
        }
        (L4Info::Udp { .. }, IpProtocol::UDP) => {
            let Ok(mut u) = UdpPacket::new_checked(l4) else {
                return false;
            };
            u.fill_checksum_v4(ip.src, ip.dst);
            true
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::build::{self, L2Header};
    use crate::wire::MacAddr;
    use proptest::prelude::*;
    use std::net::Ipv4Addr;

    const A: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
    const B: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);
    const S: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 5);
    const D: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 9);

    fn udp(payload: usize) -> Vec<u8> {
        let mut b = vec![0u8; payload + 64];
        let body: Vec<u8> = (0..payload).map(|i| i as u8).collect();
        let n = build::ipv4_udp(&mut b, L2Header::new(B, A), S, D, 1000, 2000, &body).unwrap();
        b.truncate(n);
        b
    }

    /// Reassembles fragments (in order) back into the IP payload.
    fn reassemble(frags: &[Vec<u8>]) -> (Vec<u8>, bool) {
        let mut data = Vec::new();
        let mut last_mf = true;
        for f in frags {
            let ip = Ipv4Packet::new_checked(&f[14..]).unwrap();
            assert!(ip.verify_checksum());
            assert_eq!(usize::from(ip.frag_offset()), data.len());
            data.extend_from_slice(ip.payload());
            last_mf = ip.more_frags();
        }
        (data, last_mf)
    }

    #[test]
    fn splits_on_eight_byte_boundaries() {
        let f = udp(3000);
        let info = FrameInfo::parse(&f).unwrap();
        let mut fr = Fragmenter::new(&f, &info, 1500).unwrap();
        assert_eq!(fr.count(), 3);
        let mut out = vec![0u8; 1600];
        let mut frags = Vec::new();
        while let Some(r) = fr.next_fragment(&f, &mut out) {
            let n = r.unwrap();
            assert!(n - 14 <= 1500);
            frags.push(out[..n].to_vec());
        }
        assert_eq!(frags.len(), 3);
        // 1480 = (1500 - 20) rounded down to 8.
        assert_eq!(frags[0].len(), 14 + 1500);
        let (data, mf) = reassemble(&frags);
        assert!(!mf);
        assert_eq!(data, Ipv4Packet::new_checked(&f[14..]).unwrap().payload());
        // The first fragment still parses as UDP; later ones do not.
        assert!(FrameInfo::parse(&frags[0]).unwrap().udp_ports().is_some());
        assert_eq!(
            FrameInfo::parse(&frags[1]).unwrap().l4,
            L4Info::NonFirstFragment
        );
    }

    #[test]
    fn options_and_refusals() {
        // A header with a copied option (0x83 LSRR, len 7) and an uncopied one (0x07 RR).
        let mut f = udp(100);
        let opts = [0x83u8, 7, 4, 1, 2, 3, 4, 0x07, 3, 4, 1, 0];
        f.splice(34..34, opts.iter().copied());
        {
            let mut ip = Ipv4Packet::new_unchecked(&mut f[14..]);
            ip.set_version_and_header_len(32);
            ip.set_total_len(32 + 108);
            ip.fill_checksum();
        }
        let info = FrameInfo::parse(&f).unwrap();
        let mut fr = Fragmenter::new(&f, &info, 96).unwrap();
        let mut out = [0u8; 200];
        let n = fr.next_fragment(&f, &mut out).unwrap().unwrap();
        assert_eq!(
            Ipv4Packet::new_checked(&out[14..n]).unwrap().header_len(),
            32
        );
        let n = fr.next_fragment(&f, &mut out).unwrap().unwrap();
        let ip = Ipv4Packet::new_checked(&out[14..n]).unwrap();
        assert_eq!(ip.header_len(), 28, "only the copied option, padded");
        assert_eq!(&out[34..41], &opts[..7]);
        assert!(ip.verify_checksum());

        // DF set, tiny MTU, short buffer.
        let mut df = udp(100);
        Ipv4Packet::new_unchecked(&mut df[14..]).set_frag(true, false, 0);
        let info = FrameInfo::parse(&df).unwrap();
        assert_eq!(
            Fragmenter::new(&df, &info, 68).unwrap_err(),
            FragError::DontFragment
        );
        let f = udp(100);
        let info = FrameInfo::parse(&f).unwrap();
        assert_eq!(
            Fragmenter::new(&f, &info, 27).unwrap_err(),
            FragError::MtuTooSmall
        );
        let mut fr = Fragmenter::new(&f, &info, 68).unwrap();
        assert_eq!(
            fr.next_fragment(&f, &mut [0u8; 40]),
            Some(Err(FragError::BufferTooSmall))
        );
        assert_eq!(fr.next_fragment(&f, &mut [0u8; 40]), None);
    }

    #[test]
    fn completes_partial_checksum() {
        let mut f = udp(50);
        let info = FrameInfo::parse(&f).unwrap();
        f[40] = 0x12; // clobber the UDP checksum
        assert!(complete_l4_checksum(&mut f, &info));
        assert!(UdpPacket::new_checked(&f[34..])
            .unwrap()
            .verify_checksum_v4(S, D));
    }

    proptest! {
        /// Fragments reassemble to the original payload and each fits the MTU, for any
        /// size, MTU and already-fragmented input.
        #[test]
        fn reassembles(payload in 0usize..4000, mtu in 68u32..1600, pre_offset in 0u16..100, pre_mf in any::<bool>()) {
            let mut f = udp(payload);
            {
                let mut ip = Ipv4Packet::new_unchecked(&mut f[14..]);
                ip.set_frag(false, pre_mf, pre_offset * 8);
                ip.fill_checksum();
            }
            let info = FrameInfo::parse(&f).unwrap();
            let mut fr = Fragmenter::new(&f, &info, mtu).unwrap();
            let count = fr.count();
            let mut out = vec![0u8; 1700];
            let mut data = Vec::new();
            let mut n_frags = 0;
            let mut last_mf = false;
            while let Some(r) = fr.next_fragment(&f, &mut out) {
                let n = r.unwrap();
                prop_assert!((n - 14) as u32 <= mtu);
                let ip = Ipv4Packet::new_checked(&out[14..n]).unwrap();
                prop_assert!(ip.verify_checksum());
                prop_assert_eq!(usize::from(ip.frag_offset()), usize::from(pre_offset) * 8 + data.len());
                data.extend_from_slice(ip.payload());
                last_mf = ip.more_frags();
                n_frags += 1;
            }
            prop_assert_eq!(n_frags, count);
            prop_assert_eq!(last_mf, pre_mf);
            let orig = Ipv4Packet::new_checked(&f[14..]).unwrap();
            prop_assert_eq!(&data[..], orig.payload());
        }
    }
}
