//! The Internet checksum (RFC 1071) and its incremental update (RFC 1624).
//!
//! Functions return the folded ones'-complement *sum*; a header's checksum field holds its
//! complement, so emitters write `!combine(&[...])` and verifiers check that the sum over
//! the covered bytes (checksum field included) folds to `0xffff`.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::IpProtocol;

/// Folds a wide ones'-complement accumulator into 16 bits (end-around carry).
#[inline]
fn fold(mut s: u64) -> u16 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// Ones'-complement sum of `data` as big-endian 16-bit words, an odd trailing byte padded
/// with zero (RFC 1071 §1). Summed 32 bits at a time, which RFC 1071 §2(B) allows.
pub fn data(data: &[u8]) -> u16 {
    let mut acc: u64 = 0;
    let mut words = data.chunks_exact(4);
    for w in &mut words {
        acc += u64::from(u32::from_be_bytes([w[0], w[1], w[2], w[3]]));
    }
    let rest = words.remainder();
    let mut tail = [0u8; 4];
    tail[..rest.len()].copy_from_slice(rest);
    acc += u64::from(u32::from_be_bytes(tail));
    fold(acc)
}

/// Ones'-complement sum of partial sums.
pub fn combine(parts: &[u16]) -> u16 {
    fold(parts.iter().map(|&p| u64::from(p)).sum())
}

/// Sum of the IPv4 pseudo-header (RFC 768, RFC 9293 §3.1): addresses, protocol, L4 length.
pub fn pseudo_header_v4(src: Ipv4Addr, dst: Ipv4Addr, proto: IpProtocol, l4_len: u32) -> u16 {
    let mut b = [0u8; 12];
    b[0..4].copy_from_slice(&src.octets());
    b[4..8].copy_from_slice(&dst.octets());
    b[9] = proto.0;
    b[10..12].copy_from_slice(&(l4_len as u16).to_be_bytes());
    data(&b)
}

/// Sum of the IPv6 pseudo-header (RFC 8200 §8.1): addresses, 32-bit upper-layer length,
/// next header.
pub fn pseudo_header_v6(src: Ipv6Addr, dst: Ipv6Addr, proto: IpProtocol, l4_len: u32) -> u16 {
    let mut b = [0u8; 40];
    b[0..16].copy_from_slice(&src.octets());
    b[16..32].copy_from_slice(&dst.octets());
    b[32..36].copy_from_slice(&l4_len.to_be_bytes());
    b[39] = proto.0;
    data(&b)
}

/// Incrementally updates a checksum field `hc` after a 16-bit word changed from `old` to
/// `new`, by RFC 1624 eqn. 3: `HC' = ~(~HC + ~m + m')`. NAT uses this to rewrite ports and
/// addresses without re-summing the payload.
pub fn update_u16(hc: u16, old: u16, new: u16) -> u16 {
    !fold(u64::from(!hc) + u64::from(!old) + u64::from(new))
}

/// [`update_u16`] for a 32-bit field (an IPv4 address): both halves at once.
pub fn update_u32(hc: u16, old: u32, new: u32) -> u16 {
    let s = u64::from(!hc)
        + u64::from(!(old >> 16) as u16)
        + u64::from(!(old as u16))
        + u64::from((new >> 16) as u16)
        + u64::from(new as u16);
    !fold(s)
}

/// [`update_u16`] for an arbitrary even-length field (an IPv6 address); `old` and `new`
/// must be the same length (extra bytes of the longer one are ignored).
pub fn update_bytes(hc: u16, old: &[u8], new: &[u8]) -> u16 {
    let n = old.len().min(new.len());
    let mut s = u64::from(!hc);
    for (o, w) in old[..n].chunks(2).zip(new[..n].chunks(2)) {
        let ow = u16::from_be_bytes([o[0], *o.get(1).unwrap_or(&0)]);
        let nw = u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)]);
        s += u64::from(!ow) + u64::from(nw);
    }
    !fold(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Straightforward RFC 1071 reference: 16 bits at a time.
    fn reference(d: &[u8]) -> u16 {
        let mut s: u64 = 0;
        for c in d.chunks(2) {
            s += u64::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
        }
        fold(s)
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3 worked example: 00 01 f2 03 f4 f5 f6 f7 sums to ddf2.
        assert_eq!(
            data(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            0xddf2
        );
        assert_eq!(data(&[]), 0);
        assert_eq!(data(&[0xab]), 0xab00);
    }

    proptest! {
        #[test]
        fn wide_sum_matches_reference(d in proptest::collection::vec(any::<u8>(), 0..300)) {
            prop_assert_eq!(data(&d), reference(&d));
        }

        /// Incremental update must agree with recomputation (RFC 1624 §3).
        #[test]
        fn incremental_matches_recompute(
            mut d in proptest::collection::vec(any::<u8>(), 8..64),
            at in 0usize..3, new16 in any::<u16>(), new32 in any::<u32>(),
        ) {
            let len = d.len() & !1;
            d.truncate(len);
            let hc = !data(&d);
            let at = at * 2;
            let old16 = u16::from_be_bytes([d[at], d[at + 1]]);
            d[at..at + 2].copy_from_slice(&new16.to_be_bytes());
            let upd = update_u16(hc, old16, new16);
            // Both are valid encodings of the same sum; compare the verified sums.
            prop_assert_eq!(combine(&[data(&d), upd]), 0xffff);

            let old32 = u32::from_be_bytes([d[4], d[5], d[6], d[7]]);
            let old_bytes = [d[4], d[5], d[6], d[7]];
            d[4..8].copy_from_slice(&new32.to_be_bytes());
            let upd2 = update_u32(upd, old32, new32);
            prop_assert_eq!(combine(&[data(&d), upd2]), 0xffff);
            let upd3 = update_bytes(upd, &old_bytes, &new32.to_be_bytes());
            prop_assert_eq!(combine(&[data(&d), upd3]), 0xffff);
        }
    }
}
