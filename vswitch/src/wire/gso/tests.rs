use super::*;
use crate::wire::tcp::TcpPacket;
use crate::wire::udp::UdpPacket;
use crate::wire::{Ipv6Packet, TcpFlags};
use proptest::prelude::*;

const SRC4: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const DST4: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

fn src6() -> Ipv6Addr {
    "fd00::1".parse().unwrap()
}
fn dst6() -> Ipv6Addr {
    "fd00::2".parse().unwrap()
}

/// A TCP frame written by hand: Ethernet, IPv4 or IPv6, TCP with `opt_words` 4-byte
/// option words, the given flags, a correct checksum, and `pad` bytes of link padding.
fn tcp_frame(v6: bool, flags: u8, opt_words: usize, payload: &[u8], pad: usize) -> Vec<u8> {
    let tcp_hlen = 20 + opt_words * 4;
    let l3 = 14;
    let ip_hlen = if v6 { 40 } else { 20 };
    let l4 = l3 + ip_hlen;
    let end = l4 + tcp_hlen + payload.len();
    let mut f = vec![0u8; end + pad];
    f[0..6].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
    f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
    if v6 {
        f[12..14].copy_from_slice(&[0x86, 0xdd]);
        f[l3] = 0x60;
        put_u16(&mut f, l3 + 4, (tcp_hlen + payload.len()) as u16);
        f[l3 + 6] = 6;
        f[l3 + 7] = 64;
        f[l3 + 8..l3 + 24].copy_from_slice(&src6().octets());
        f[l3 + 24..l3 + 40].copy_from_slice(&dst6().octets());
    } else {
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[l3] = 0x45;
        put_u16(&mut f, l3 + 2, (ip_hlen + tcp_hlen + payload.len()) as u16);
        put_u16(&mut f, l3 + 4, 0xfff0);
        put_u16(&mut f, l3 + 6, 0x4000);
        f[l3 + 8] = 64;
        f[l3 + 9] = 6;
        f[l3 + 12..l3 + 16].copy_from_slice(&SRC4.octets());
        f[l3 + 16..l3 + 20].copy_from_slice(&DST4.octets());
        Ipv4Packet::new_unchecked(&mut f[l3..l4]).fill_checksum();
    }
    put_u16(&mut f, l4, 40000);
    put_u16(&mut f, l4 + 2, 5201);
    put_u32(&mut f, l4 + 4, 0xffff_ff00); // wraps within a 64 KiB frame
    put_u32(&mut f, l4 + 8, 77);
    f[l4 + 12] = ((tcp_hlen / 4) as u8) << 4;
    f[l4 + 13] = flags;
    put_u16(&mut f, l4 + 14, 512);
    for w in 0..opt_words {
        // NOP NOP + 2 bytes of a timestamp-ish option body: any bytes are fine for TCP.
        f[l4 + 20 + w * 4..l4 + 24 + w * 4].copy_from_slice(&[1, 1, 8, w as u8]);
    }
    f[l4 + tcp_hlen..end].copy_from_slice(payload);
    let mut t = TcpPacket::new_unchecked(&mut f[l4..end]);
    if v6 {
        t.fill_checksum_v6(src6(), dst6());
    } else {
        t.fill_checksum_v4(SRC4, DST4);
    }
    f
}

fn tcp_ok(seg: &[u8]) -> (FrameInfo, bool) {
    let info = FrameInfo::parse(seg).unwrap();
    let l4 = usize::from(info.l4_offset);
    let ok = match info.l3 {
        L3Info::Ipv4(ip) => {
            let end = 14 + usize::from(ip.total_len);
            Ipv4Packet::new_checked(&seg[14..end])
                .unwrap()
                .verify_checksum()
                && TcpPacket::new_checked(&seg[l4..end])
                    .unwrap()
                    .verify_checksum_v4(ip.src, ip.dst)
        }
        L3Info::Ipv6(ip) => {
            let end = 14 + 40 + usize::from(ip.payload_len);
            TcpPacket::new_checked(&seg[l4..end])
                .unwrap()
                .verify_checksum_v6(ip.src, ip.dst)
        }
        _ => false,
    };
    (info, ok)
}

#[test]
fn segments_follow_tcp_gso_rules() {
    let payload: Vec<u8> = (0..4000u32).map(|i| (i * 7) as u8).collect();
    let flags = TcpFlags::ACK.0 | TcpFlags::PSH.0 | TcpFlags::FIN.0 | TcpFlags::CWR.0;
    for v6 in [false, true] {
        let frame = tcp_frame(v6, flags, 3, &payload, 0);
        let info = FrameInfo::parse(&frame).unwrap();
        let segs = TcpSegments::new(&frame, &info, 1448).unwrap();
        assert_eq!(segs.count(), 3);
        assert_eq!(segs.header_len(), 14 + if v6 { 40 } else { 20 } + 32);
        let mut joined = Vec::new();
        let mut out = vec![0u8; 2000];
        for i in 0..3 {
            let n = segs.write_segment(&frame, i, &mut out).unwrap();
            let seg = &out[..n];
            let (si, ok) = tcp_ok(seg);
            assert!(ok, "segment {i} checksums (v6={v6})");
            let l4 = usize::from(si.l4_offset);
            let seq = get_u32(seg, l4 + 4);
            assert_eq!(seq, 0xffff_ff00u32.wrapping_add(1448 * i as u32));
            let f = seg[l4 + 13];
            assert_eq!(f & TcpFlags::ACK.0, TcpFlags::ACK.0);
            assert_eq!(f & TcpFlags::CWR.0 != 0, i == 0, "CWR only on the first");
            assert_eq!(f & TcpFlags::FIN.0 != 0, i == 2, "FIN only on the last");
            assert_eq!(f & TcpFlags::PSH.0 != 0, i == 2, "PSH only on the last");
            if let L3Info::Ipv4(ip) = si.l3 {
                assert_eq!(ip.ident, 0xfff0u16.wrapping_add(i as u16));
                assert_eq!(usize::from(ip.total_len), n - 14);
                assert!(ip.dont_frag);
            }
            assert!(n - segs.header_len() <= 1448);
            joined.extend_from_slice(&seg[segs.header_len()..]);
        }
        assert_eq!(joined, payload);
    }
}

#[test]
fn link_padding_is_not_payload_and_one_segment_frames_keep_their_flags() {
    let payload = [9u8; 100];
    let flags = TcpFlags::ACK.0 | TcpFlags::PSH.0 | TcpFlags::FIN.0 | TcpFlags::CWR.0;
    let frame = tcp_frame(false, flags, 0, &payload, 6);
    let info = FrameInfo::parse(&frame).unwrap();
    let segs = TcpSegments::new(&frame, &info, 1448).unwrap();
    assert_eq!(segs.count(), 1);
    let mut out = [0u8; 200];
    let n = segs.write_segment(&frame, 0, &mut out).unwrap();
    assert_eq!(n, frame.len() - 6);
    assert_eq!(
        &out[..n],
        &frame[..n],
        "a single segment is the frame itself"
    );
}

#[test]
fn refusals() {
    let frame = tcp_frame(false, 0x10, 0, &[1; 3000], 0);
    let info = FrameInfo::parse(&frame).unwrap();
    assert_eq!(TcpSegments::new(&frame, &info, 0), Err(GsoError::BadMss(0)));
    assert_eq!(
        TcpSegments::new(&frame, &info, 2),
        Err(GsoError::BadMss(2)),
        "1500 segments is too many"
    );
    let segs = TcpSegments::new(&frame, &info, 1000).unwrap();
    let mut small = [0u8; 40];
    assert_eq!(
        segs.write_header(&frame, 0, &mut small),
        Err(GsoError::BufferTooSmall)
    );
    let mut hdr = [0u8; MAX_HEADER_LEN];
    assert_eq!(
        segs.write_header(&frame, 3, &mut hdr),
        Err(GsoError::BufferTooSmall)
    );
    // IP total length beyond the frame.
    let mut cut = frame.clone();
    cut.truncate(1000);
    let ci = FrameInfo::parse(&cut).unwrap();
    assert!(TcpSegments::new(&cut, &ci, 500).is_err());
    // A fragment.
    let mut frag = frame.clone();
    put_u16(&mut frag, 14 + 6, 0x2000);
    Ipv4Packet::new_unchecked(&mut frag[14..34]).fill_checksum();
    let fi = FrameInfo::parse(&frag).unwrap();
    assert_eq!(TcpSegments::new(&frag, &fi, 500), Err(GsoError::Fragment));
    // UDP is not segmented (but its checksum can be completed).
    let mut u = vec![0u8; 200];
    let n = crate::wire::build::ipv4_udp(
        &mut u,
        crate::wire::build::L2Header::new(
            crate::wire::MacAddr([2, 0, 0, 0, 0, 2]),
            crate::wire::MacAddr([2, 0, 0, 0, 0, 1]),
        ),
        SRC4,
        DST4,
        1,
        2,
        &[5; 50],
    )
    .unwrap();
    let ui = FrameInfo::parse(&u[..n]).unwrap();
    assert_eq!(TcpSegments::new(&u[..n], &ui, 10), Err(GsoError::NotTcpUdp));
    assert!(ChecksumCompletion::new(&u[..n], &ui).is_ok());
}

/// The partial-checksum convention: the field holds the uncomplemented pseudo-header sum.
fn make_partial(frame: &mut [u8], info: &FrameInfo, tcp: bool) {
    let l4 = usize::from(info.l4_offset);
    let at = l4 + if tcp { 16 } else { 6 };
    let l4_len = match info.l3 {
        L3Info::Ipv4(ip) => usize::from(ip.total_len) - usize::from(ip.header_len),
        L3Info::Ipv6(ip) => usize::from(ip.payload_len),
        _ => unreachable!(),
    } as u32;
    let proto = if tcp {
        IpProtocol::TCP
    } else {
        IpProtocol::UDP
    };
    let ph = match info.l3 {
        L3Info::Ipv4(ip) => checksum::pseudo_header_v4(ip.src, ip.dst, proto, l4_len),
        L3Info::Ipv6(ip) => checksum::pseudo_header_v6(ip.src, ip.dst, proto, l4_len),
        _ => unreachable!(),
    };
    put_u16(frame, at, ph);
}

#[test]
fn checksum_completion_restores_the_sum_for_tcp_and_udp() {
    for v6 in [false, true] {
        let good = tcp_frame(v6, 0x18, 2, &[0xab; 1001], 0);
        let info = FrameInfo::parse(&good).unwrap();
        let mut partial = good.clone();
        make_partial(&mut partial, &info, true);
        assert_ne!(partial, good);
        // Out of place: headers elsewhere, payload from the original.
        let c = ChecksumCompletion::new(&partial, &info).unwrap();
        let mut hdr = [0u8; MAX_HEADER_LEN];
        let r = c.write_header(&partial, &mut hdr).unwrap();
        let mut rebuilt = hdr[..c.header_len()].to_vec();
        rebuilt.extend_from_slice(&partial[r]);
        assert_eq!(rebuilt, good);
        // In place.
        complete_checksum(&mut partial, &info).unwrap();
        assert_eq!(partial, good);
    }
    let mut u = vec![0u8; 300];
    let l2 = crate::wire::build::L2Header::new(
        crate::wire::MacAddr([2, 0, 0, 0, 0, 2]),
        crate::wire::MacAddr([2, 0, 0, 0, 0, 1]),
    );
    let n = crate::wire::build::ipv6_udp(&mut u, l2, src6(), dst6(), 64, 7, 9, &[3; 77]).unwrap();
    let good = u[..n].to_vec();
    let info = FrameInfo::parse(&good).unwrap();
    let mut partial = good.clone();
    make_partial(&mut partial, &info, false);
    complete_checksum(&mut partial, &info).unwrap();
    assert_eq!(partial, good);
    let l4 = usize::from(info.l4_offset);
    assert!(UdpPacket::new_checked(&partial[l4..])
        .unwrap()
        .verify_checksum_v6(src6(), dst6()));
    assert!(Ipv6Packet::new_checked(&partial[14..]).is_ok());
}

proptest! {
    /// Any TCP frame, any MSS: the segments verify, carry the payload in order, each at
    /// most `mss` bytes, the sequence numbers follow the payload, and header + payload
    /// written separately equal the contiguous segment.
    #[test]
    fn segmentation_preserves_the_stream(
        v6 in any::<bool>(),
        opt_words in 0usize..=10,
        len in 0usize..20_000,
        mss in 88u16..9000,
        flags in any::<u8>(),
        seed in any::<u8>(),
    ) {
        let payload: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect();
        let frame = tcp_frame(v6, flags, opt_words, &payload, 0);
        let info = FrameInfo::parse(&frame).unwrap();
        let segs = TcpSegments::new(&frame, &info, mss).unwrap();
        prop_assert_eq!(segs.count(), len.div_ceil(usize::from(mss)).max(1));
        let mut joined = Vec::new();
        let mut out = vec![0u8; 10_000];
        let mut hdr = [0u8; MAX_HEADER_LEN];
        let l4 = usize::from(info.l4_offset);
        for i in 0..segs.count() {
            let n = segs.write_segment(&frame, i, &mut out).unwrap();
            let (_, ok) = tcp_ok(&out[..n]);
            prop_assert!(ok);
            let r = segs.write_header(&frame, i, &mut hdr).unwrap();
            prop_assert_eq!(&hdr[..segs.header_len()], &out[..segs.header_len()]);
            prop_assert_eq!(&frame[r], &out[segs.header_len()..n]);
            prop_assert!(n - segs.header_len() <= usize::from(mss));
            prop_assert_eq!(get_u32(&out, l4 + 4), 0xffff_ff00u32.wrapping_add(joined.len() as u32));
            let f = out[l4 + 13];
            let last = i + 1 == segs.count();
            prop_assert_eq!(f & (TcpFlags::FIN.0 | TcpFlags::PSH.0), if last { flags & (TcpFlags::FIN.0 | TcpFlags::PSH.0) } else { 0 });
            prop_assert_eq!(f & TcpFlags::CWR.0, if i == 0 { flags & TcpFlags::CWR.0 } else { 0 });
            joined.extend_from_slice(&out[segs.header_len()..n]);
        }
        prop_assert_eq!(joined, payload);
    }

    /// Garbage never panics the preparation or the writers.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 14..400), mss in any::<u16>()) {
        if let Ok(info) = FrameInfo::parse(&bytes) {
            if let Ok(s) = TcpSegments::new(&bytes, &info, mss) {
                let mut out = vec![0u8; 70_000];
                for i in 0..s.count().min(4) {
                    let _ = s.write_segment(&bytes, i, &mut out);
                }
            }
            if let Ok(c) = ChecksumCompletion::new(&bytes, &info) {
                let mut hdr = [0u8; MAX_HEADER_LEN];
                let _ = c.write_header(&bytes, &mut hdr);
            }
        }
    }
}
