//! Netlink message and attribute encoding/decoding — pure, no sockets.
//!
//! Layout rules (linux/netlink.h, `man 7 netlink`): every message starts with a 16-byte
//! `nlmsghdr {len u32, type u16, flags u16, seq u32, pid u32}` in host byte order; payloads
//! and attributes are padded to 4 bytes (`NLMSG_ALIGN`/`NLA_ALIGN`); an attribute is
//! `nlattr {len u16, type u16}` followed by its payload, `len` counting the 4-byte header
//! but not the trailing padding. The top two bits of an attribute type are flags
//! (`NLA_F_NESTED`, `NLA_F_NET_BYTEORDER`) and are masked off on decode.

use super::uapi::*;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Size of `struct nlmsghdr`.
pub(crate) const NLMSG_HDRLEN: usize = 16;
/// Size of `struct nlattr`.
pub(crate) const NLA_HDRLEN: usize = 4;

/// Rounds `len` up to the 4-byte netlink alignment (`NLMSG_ALIGN`, `NLA_ALIGN`).
pub(crate) const fn align4(len: usize) -> usize {
    (len + 3) & !3
}

/// A reply from the kernel that does not follow the netlink layout rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// A message header or fixed family header is cut short.
    #[error("truncated {what}: need {need} bytes, have {have}")]
    Truncated {
        /// Which structure was being read.
        what: &'static str,
        /// Bytes the structure needs.
        need: usize,
        /// Bytes that were there.
        have: usize,
    },
    /// A length field points outside its container or below its own header size.
    #[error("bad length {len} for {what} (room {room})")]
    BadLength {
        /// Which structure carried the length.
        what: &'static str,
        /// The length field.
        len: usize,
        /// Bytes left in the container.
        room: usize,
    },
    /// An attribute payload has the wrong size for its type.
    #[error("attribute {kind} has {len} bytes, expected {expected}")]
    AttrSize {
        /// Attribute type.
        kind: u16,
        /// Payload length seen.
        len: usize,
        /// Payload length the ABI defines.
        expected: &'static str,
    },
    /// A request grew beyond what a 16/32-bit netlink length field can describe.
    #[error("request too large for netlink ({0} bytes)")]
    TooLarge(usize),
}

/// Builds one netlink request: header, a fixed family header, then attributes (nested
/// attributes via [`MessageBuilder::nest_start`]/[`MessageBuilder::nest_end`]).
#[derive(Debug, Clone)]
pub(crate) struct MessageBuilder {
    buf: Vec<u8>,
    oversized: Option<usize>,
}

/// Position of an open nested attribute, closed with [`MessageBuilder::nest_end`].
#[derive(Debug)]
#[must_use]
pub(crate) struct Nest(usize);

impl MessageBuilder {
    /// Starts a message of `msg_type` with `flags` (`NLM_F_REQUEST` is always added).
    pub(crate) fn new(msg_type: u16, flags: u16) -> Self {
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(&0u32.to_ne_bytes());
        buf.extend_from_slice(&msg_type.to_ne_bytes());
        buf.extend_from_slice(&(flags | NLM_F_REQUEST).to_ne_bytes());
        buf.extend_from_slice(&[0u8; 8]);
        MessageBuilder {
            buf,
            oversized: None,
        }
    }

    /// Appends raw bytes (a fixed family header such as `ifinfomsg`), padded to 4 bytes.
    pub(crate) fn push_header(&mut self, bytes: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(bytes);
        self.pad();
        self
    }

    fn pad(&mut self) {
        let padded = align4(self.buf.len());
        self.buf.resize(padded, 0);
    }

    /// Appends an attribute of type `kind` with `payload`.
    pub(crate) fn attr(&mut self, kind: u16, payload: &[u8]) -> &mut Self {
        let len = NLA_HDRLEN + payload.len();
        let Ok(len16) = u16::try_from(len) else {
            self.oversized = Some(len);
            return self;
        };
        self.buf.extend_from_slice(&len16.to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(payload);
        self.pad();
        self
    }

    /// Appends a `u8` attribute.
    pub(crate) fn attr_u8(&mut self, kind: u16, v: u8) -> &mut Self {
        self.attr(kind, &[v])
    }

    /// Appends a `u32` attribute in host byte order.
    pub(crate) fn attr_u32(&mut self, kind: u16, v: u32) -> &mut Self {
        self.attr(kind, &v.to_ne_bytes())
    }

    /// Appends a NUL-terminated string attribute (`NLA_STRING`/`NLA_NUL_STRING`).
    pub(crate) fn attr_str(&mut self, kind: u16, s: &str) -> &mut Self {
        let mut v = Vec::with_capacity(s.len() + 1);
        v.extend_from_slice(s.as_bytes());
        v.push(0);
        self.attr(kind, &v)
    }

    /// Appends an IP address attribute in network byte order (4 or 16 bytes).
    pub(crate) fn attr_ip(&mut self, kind: u16, ip: IpAddr) -> &mut Self {
        match ip {
            IpAddr::V4(a) => self.attr(kind, &a.octets()),
            IpAddr::V6(a) => self.attr(kind, &a.octets()),
        }
    }

    /// Opens a nested attribute; everything appended until `nest_end` is inside it.
    /// No `NLA_F_NESTED` flag is set, as iproute2 does, which every kernel accepts for the
    /// legacy nests used here (`IFLA_LINKINFO`, `IFLA_INFO_DATA`, `RTA_METRICS`).
    pub(crate) fn nest_start(&mut self, kind: u16) -> Nest {
        let at = self.buf.len();
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        Nest(at)
    }

    /// Closes a nested attribute by writing its length.
    pub(crate) fn nest_end(&mut self, nest: Nest) -> &mut Self {
        let len = self.buf.len() - nest.0;
        match u16::try_from(len) {
            Ok(l) => self.buf[nest.0..nest.0 + 2].copy_from_slice(&l.to_ne_bytes()),
            Err(_) => self.oversized = Some(len),
        }
        self
    }

    /// Finishes the message with sequence number `seq`; the port id stays 0 (the kernel
    /// fills in the sender).
    pub(crate) fn finish(mut self, seq: u32) -> Result<Vec<u8>, WireError> {
        if let Some(len) = self.oversized {
            return Err(WireError::TooLarge(len));
        }
        let len = u32::try_from(self.buf.len()).map_err(|_| WireError::TooLarge(self.buf.len()))?;
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf[8..12].copy_from_slice(&seq.to_ne_bytes());
        Ok(self.buf)
    }

    /// Flags of the message so far.
    pub(crate) fn flags(&self) -> u16 {
        u16::from_ne_bytes([self.buf[6], self.buf[7]])
    }

    /// Adds `extra` to the message flags.
    pub(crate) fn add_flags(&mut self, extra: u16) {
        let f = self.flags() | extra;
        self.buf[6..8].copy_from_slice(&f.to_ne_bytes());
    }
}

/// One decoded netlink message borrowing its payload from the receive buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NlMsg<'a> {
    /// `nlmsg_type`.
    pub msg_type: u16,
    /// `nlmsg_flags`.
    pub flags: u16,
    /// `nlmsg_seq`.
    pub seq: u32,
    /// `nlmsg_pid` (port id of the sender or addressee).
    pub port: u32,
    /// Bytes after the header, up to `nlmsg_len`.
    pub payload: &'a [u8],
}

fn read_u16(b: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes([b[at], b[at + 1]])
}

fn read_u32(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Iterates the messages of one datagram (`NLMSG_OK`/`NLMSG_NEXT`). Stops after the first
/// malformed one, which it yields as an error.
#[derive(Debug, Clone)]
pub(crate) struct MessageIter<'a> {
    rest: &'a [u8],
}

/// Splits a received datagram into messages.
pub(crate) fn messages(datagram: &[u8]) -> MessageIter<'_> {
    MessageIter { rest: datagram }
}

impl<'a> Iterator for MessageIter<'a> {
    type Item = Result<NlMsg<'a>, WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let b = self.rest;
        if b.len() < NLMSG_HDRLEN {
            self.rest = &[];
            return Some(Err(WireError::Truncated {
                what: "nlmsghdr",
                need: NLMSG_HDRLEN,
                have: b.len(),
            }));
        }
        let len = read_u32(b, 0) as usize;
        if len < NLMSG_HDRLEN || len > b.len() {
            self.rest = &[];
            return Some(Err(WireError::BadLength {
                what: "nlmsghdr",
                len,
                room: b.len(),
            }));
        }
        let msg = NlMsg {
            msg_type: read_u16(b, 4),
            flags: read_u16(b, 6),
            seq: read_u32(b, 8),
            port: read_u32(b, 12),
            payload: &b[NLMSG_HDRLEN..len],
        };
        self.rest = b.get(align4(len)..).unwrap_or(&[]);
        Some(Ok(msg))
    }
}

/// One attribute; `kind` has the `NLA_F_*` flag bits removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Attr<'a> {
    /// Attribute type without flag bits.
    pub kind: u16,
    /// Payload without padding.
    pub payload: &'a [u8],
}

impl<'a> Attr<'a> {
    fn fixed<const N: usize>(&self, expected: &'static str) -> Result<[u8; N], WireError> {
        self.payload.try_into().map_err(|_| WireError::AttrSize {
            kind: self.kind,
            len: self.payload.len(),
            expected,
        })
    }

    /// The payload as a `u8`.
    pub(crate) fn u8(&self) -> Result<u8, WireError> {
        Ok(self.fixed::<1>("1")?[0])
    }

    /// The payload as a host-order `u32`.
    pub(crate) fn u32(&self) -> Result<u32, WireError> {
        Ok(u32::from_ne_bytes(self.fixed("4")?))
    }

    /// The payload as a host-order `i32`.
    pub(crate) fn i32(&self) -> Result<i32, WireError> {
        Ok(i32::from_ne_bytes(self.fixed("4")?))
    }

    /// The payload as a string, cut at the first NUL; invalid UTF-8 is replaced.
    pub(crate) fn string(&self) -> String {
        let end = self
            .payload
            .iter()
            .position(|&c| c == 0)
            .unwrap_or(self.payload.len());
        String::from_utf8_lossy(&self.payload[..end]).into_owned()
    }

    /// The payload as an IPv4 (4 bytes) or IPv6 (16 bytes) address.
    pub(crate) fn ip(&self) -> Result<IpAddr, WireError> {
        match self.payload.len() {
            4 => Ok(IpAddr::V4(Ipv4Addr::from(self.fixed::<4>("4 or 16")?))),
            16 => Ok(IpAddr::V6(Ipv6Addr::from(self.fixed::<16>("4 or 16")?))),
            len => Err(WireError::AttrSize {
                kind: self.kind,
                len,
                expected: "4 or 16",
            }),
        }
    }

    /// The attributes nested in this one.
    pub(crate) fn nested(&self) -> AttrIter<'a> {
        attrs(self.payload)
    }
}

/// Iterates attributes (`nla_for_each_attr`); yields an error for a malformed one and stops.
#[derive(Debug, Clone)]
pub(crate) struct AttrIter<'a> {
    rest: &'a [u8],
}

/// Splits an attribute stream.
pub(crate) fn attrs(bytes: &[u8]) -> AttrIter<'_> {
    AttrIter { rest: bytes }
}

impl<'a> Iterator for AttrIter<'a> {
    type Item = Result<Attr<'a>, WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        let b = self.rest;
        // Trailing bytes shorter than an attribute header are padding.
        if b.len() < NLA_HDRLEN {
            self.rest = &[];
            return None;
        }
        let len = usize::from(read_u16(b, 0));
        if len < NLA_HDRLEN || len > b.len() {
            self.rest = &[];
            return Some(Err(WireError::BadLength {
                what: "nlattr",
                len,
                room: b.len(),
            }));
        }
        let kind = read_u16(b, 2) & !(NLA_F_NESTED | NLA_F_NET_BYTEORDER);
        let attr = Attr {
            kind,
            payload: &b[NLA_HDRLEN..len],
        };
        self.rest = b.get(align4(len)..).unwrap_or(&[]);
        Some(Ok(attr))
    }
}

/// Returns the leading `N` bytes of a payload, i.e. a family's fixed header.
pub(crate) fn fixed_header<'a, const N: usize>(
    payload: &'a [u8],
    what: &'static str,
) -> Result<([u8; N], &'a [u8]), WireError> {
    let head: [u8; N] =
        payload
            .get(..N)
            .and_then(|h| h.try_into().ok())
            .ok_or(WireError::Truncated {
                what,
                need: N,
                have: payload.len(),
            })?;
    let rest = payload.get(align4(N)..).unwrap_or(&[]);
    Ok((head, rest))
}

/// The contents of an `NLMSG_ERROR` message: `errno` is 0 for an ACK, otherwise the
/// positive errno; `message` is the extended-ACK text (`NLMSGERR_ATTR_MSG`) if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AckError {
    /// Positive errno, 0 for success.
    pub errno: i32,
    /// Extended ACK message from the kernel (`NETLINK_EXT_ACK`).
    pub message: Option<String>,
}

/// Decodes the payload of `NLMSG_ERROR` (`struct nlmsgerr` + optional TLVs): the error
/// code, the echoed request header (`nlmsg_len` tells how much request follows unless
/// `NLM_F_CAPPED`), then extended-ACK attributes when `NLM_F_ACK_TLVS` is set.
pub(crate) fn parse_ack(flags: u16, payload: &[u8]) -> Result<AckError, WireError> {
    let need = 4 + NLMSG_HDRLEN;
    if payload.len() < 4 {
        return Err(WireError::Truncated {
            what: "nlmsgerr",
            need,
            have: payload.len(),
        });
    }
    let code = i32::from_ne_bytes([payload[0], payload[1], payload[2], payload[3]]);
    let errno = code.checked_neg().unwrap_or(i32::MAX);
    let mut message = None;
    if flags & NLM_F_ACK_TLVS != 0 && payload.len() >= need {
        let echoed = if flags & NLM_F_CAPPED != 0 {
            NLMSG_HDRLEN
        } else {
            read_u32(payload, 4) as usize
        };
        let tlv_at = align4(4 + echoed);
        if let Some(tlvs) = payload.get(tlv_at..) {
            for a in attrs(tlvs).flatten() {
                if a.kind == NLMSGERR_ATTR_MSG {
                    message = Some(a.string());
                }
            }
        }
    }
    Ok(AckError { errno, message })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn builder_lays_out_header_and_padded_attributes() {
        let mut b = MessageBuilder::new(RTM_NEWLINK, NLM_F_ACK);
        b.push_header(&[1, 2, 3]).attr_str(IFLA_IFNAME, "ab");
        let msg = b.finish(7).unwrap();
        // 16 header + 4 (3 padded) + 4 attr header + "ab\0" padded to 4
        assert_eq!(msg.len(), 28);
        assert_eq!(read_u32(&msg, 0), 28);
        assert_eq!(read_u16(&msg, 4), RTM_NEWLINK);
        assert_eq!(read_u16(&msg, 6), NLM_F_ACK | NLM_F_REQUEST);
        assert_eq!(read_u32(&msg, 8), 7);
        assert_eq!(&msg[16..20], &[1, 2, 3, 0]);
        assert_eq!(read_u16(&msg, 20), 7); // nla_len excludes padding
        assert_eq!(read_u16(&msg, 22), IFLA_IFNAME);
        assert_eq!(&msg[24..28], b"ab\0\0");
    }

    #[test]
    fn nested_attributes_round_trip() {
        let mut b = MessageBuilder::new(RTM_NEWLINK, 0);
        let n = b.nest_start(IFLA_LINKINFO);
        b.attr_str(IFLA_INFO_KIND, "veth");
        let inner = b.nest_start(IFLA_INFO_DATA);
        b.attr_u32(VETH_INFO_PEER, 5);
        b.nest_end(inner);
        b.nest_end(n);
        b.attr_u32(IFLA_MTU, 1400);
        let msg = b.finish(1).unwrap();
        let m = messages(&msg).next().unwrap().unwrap();
        let top: Vec<_> = attrs(m.payload).map(Result::unwrap).collect();
        assert_eq!(top.len(), 2);
        assert_eq!(top[0].kind, IFLA_LINKINFO);
        assert_eq!(top[1].u32().unwrap(), 1400);
        let info: Vec<_> = top[0].nested().map(Result::unwrap).collect();
        assert_eq!(info[0].string(), "veth");
        let data: Vec<_> = info[1].nested().map(Result::unwrap).collect();
        assert_eq!(data[0].u32().unwrap(), 5);
    }

    #[test]
    fn flag_bits_are_masked_from_attribute_type() {
        let mut raw = Vec::new();
        raw.extend_from_slice(&8u16.to_ne_bytes());
        raw.extend_from_slice(&(IFLA_LINKINFO | NLA_F_NESTED).to_ne_bytes());
        raw.extend_from_slice(&[0; 4]);
        let a = attrs(&raw).next().unwrap().unwrap();
        assert_eq!(a.kind, IFLA_LINKINFO);
    }

    #[test]
    fn malformed_lengths_are_errors_not_panics() {
        // attribute claiming more than there is
        let raw = [40u8, 0, 1, 0, 0, 0];
        assert!(matches!(
            attrs(&raw).next(),
            Some(Err(WireError::BadLength { .. }))
        ));
        // message shorter than its header
        let raw = [8u8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        assert!(matches!(
            messages(&raw).next(),
            Some(Err(WireError::BadLength { .. }))
        ));
        assert!(matches!(
            messages(&raw[..5]).next(),
            Some(Err(WireError::Truncated { .. }))
        ));
    }

    #[test]
    fn ack_with_extended_message_is_decoded() {
        // nlmsgerr: -95 (EOPNOTSUPP), capped echo of a 16-byte header, then NLMSGERR_ATTR_MSG
        let mut p = Vec::new();
        p.extend_from_slice(&(-95i32).to_ne_bytes());
        p.extend_from_slice(&40u32.to_ne_bytes());
        p.extend_from_slice(&[0; 12]);
        let text = b"tun/tap creation via rtnetlink is not supported.\0";
        p.extend_from_slice(&((4 + text.len()) as u16).to_ne_bytes());
        p.extend_from_slice(&NLMSGERR_ATTR_MSG.to_ne_bytes());
        p.extend_from_slice(text);
        let e = parse_ack(NLM_F_CAPPED | NLM_F_ACK_TLVS, &p).unwrap();
        assert_eq!(e.errno, 95);
        assert_eq!(
            e.message.as_deref(),
            Some("tun/tap creation via rtnetlink is not supported.")
        );
        let ok = parse_ack(0, &[0, 0, 0, 0]).unwrap();
        assert_eq!(ok.errno, 0);
        assert_eq!(ok.message, None);
    }

    #[test]
    fn oversized_attribute_is_reported() {
        let mut b = MessageBuilder::new(RTM_NEWLINK, 0);
        b.attr(1, &vec![0u8; 70_000]);
        assert!(matches!(b.finish(1), Err(WireError::TooLarge(_))));
    }

    proptest! {
        /// Decoding arbitrary bytes never panics and never yields a slice beyond the input.
        #[test]
        fn decoding_arbitrary_bytes_is_total(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            for m in messages(&bytes) {
                let Ok(m) = m else { break };
                prop_assert!(m.payload.len() <= bytes.len());
                for a in attrs(m.payload) {
                    let Ok(a) = a else { break };
                    let _ = (a.u8(), a.u32(), a.i32(), a.ip(), a.string());
                }
                let _ = parse_ack(m.flags, m.payload);
            }
        }

        /// Whatever attributes are encoded decode back identically, in order.
        #[test]
        fn attributes_round_trip(list in proptest::collection::vec((1u16..0x3fff, proptest::collection::vec(any::<u8>(), 0..40)), 0..12)) {
            let mut b = MessageBuilder::new(RTM_NEWADDR, 0);
            b.push_header(&[0u8; 8]);
            for (k, p) in &list {
                b.attr(*k, p);
            }
            let msg = b.finish(3).unwrap();
            let all: Vec<_> = messages(&msg).collect();
            prop_assert_eq!(all.len(), 1);
            let m = all[0].clone().unwrap();
            let (_h, rest) = fixed_header::<8>(m.payload, "ifaddrmsg").unwrap();
            let got: Vec<(u16, Vec<u8>)> = attrs(rest).map(|a| { let a = a.unwrap(); (a.kind, a.payload.to_vec()) }).collect();
            prop_assert_eq!(got, list);
        }
    }
}
