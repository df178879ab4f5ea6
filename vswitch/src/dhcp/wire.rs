//! DHCPv4 messages (RFC 2131 §2, options RFC 2132): a total parser and a reply emitter.
//!
//! The parser follows smoltcp's `new_checked` → `parse` discipline (robustness.md §3
//! d2): it never indexes past the buffer and refuses, with a reason, anything malformed —
//! a message shorter than the fixed header and cookie, longer than an MTU (d3), a bad
//! magic cookie, an option whose length runs past its field, options without END, a
//! known option with the wrong length. Option overload (52) may extend the options into
//! `file` and `sname` once: an overload option inside those fields is ignored, so there
//! are no loops. For a repeated option the first occurrence wins (RFC 3396 concatenation
//! is not needed for any option the server reads).

use std::net::Ipv4Addr;

use crate::wire::MacAddr;

/// BOOTP fixed header (op … file).
pub const FIXED_LEN: usize = 236;
/// The magic cookie 99.130.83.99 (RFC 2131 §3).
pub const MAGIC_COOKIE: [u8; 4] = [99, 130, 83, 99];
/// Fixed header plus cookie: the shortest DHCP message.
pub const MIN_LEN: usize = FIXED_LEN + 4;
/// Longest message accepted: a 1500-byte MTU minus IP and UDP headers (§3 d3).
pub const MAX_LEN: usize = 1500 - 28;
/// Shortest BOOTP message on the wire (RFC 1542 §2.1); replies are padded to it.
pub const MIN_BOOTP_LEN: usize = 300;
/// Largest DHCP message every client must accept: a 576-byte datagram (RFC 2131 §2).
pub const DEFAULT_MAX_REPLY: usize = 576 - 28;

const OP_BOOTREQUEST: u8 = 1;
const OP_BOOTREPLY: u8 = 2;
/// The broadcast bit of `flags` (RFC 2131 §2, figure 2).
pub const FLAG_BROADCAST: u16 = 0x8000;

mod field {
    pub const OP: usize = 0;
    pub const HTYPE: usize = 1;
    pub const HLEN: usize = 2;
    pub const HOPS: usize = 3;
    pub const XID: usize = 4;
    pub const SECS: usize = 8;
    pub const FLAGS: usize = 10;
    pub const CIADDR: usize = 12;
    pub const YIADDR: usize = 16;
    pub const SIADDR: usize = 20;
    pub const GIADDR: usize = 24;
    pub const CHADDR: usize = 28;
    pub const SNAME: usize = 44;
    pub const FILE: usize = 108;
    pub const COOKIE: usize = 236;
}

/// Option codes (RFC 2132).
pub mod opt {
    /// Padding.
    pub const PAD: u8 = 0;
    /// Subnet mask.
    pub const SUBNET_MASK: u8 = 1;
    /// Routers.
    pub const ROUTER: u8 = 3;
    /// DNS servers.
    pub const DNS: u8 = 6;
    /// Host name.
    pub const HOSTNAME: u8 = 12;
    /// Domain name.
    pub const DOMAIN: u8 = 15;
    /// Interface MTU.
    pub const MTU: u8 = 26;
    /// Broadcast address.
    pub const BROADCAST: u8 = 28;
    /// Requested IP address.
    pub const REQUESTED_IP: u8 = 50;
    /// Lease time.
    pub const LEASE_TIME: u8 = 51;
    /// Option overload.
    pub const OVERLOAD: u8 = 52;
    /// DHCP message type.
    pub const MESSAGE_TYPE: u8 = 53;
    /// Server identifier.
    pub const SERVER_ID: u8 = 54;
    /// Parameter request list.
    pub const PARAMETER_LIST: u8 = 55;
    /// Message (NAK reason).
    pub const MESSAGE: u8 = 56;
    /// Maximum DHCP message size.
    pub const MAX_MESSAGE_SIZE: u8 = 57;
    /// Renewal (T1) time.
    pub const RENEWAL_TIME: u8 = 58;
    /// Rebinding (T2) time.
    pub const REBINDING_TIME: u8 = 59;
    /// Client identifier.
    pub const CLIENT_ID: u8 = 61;
    /// End.
    pub const END: u8 = 255;
}

/// DHCP message types (option 53).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MessageType {
    /// Client looks for servers.
    Discover,
    /// Server offers an address.
    Offer,
    /// Client requests (selects, confirms, renews) an address.
    Request,
    /// Client found the address in use.
    Decline,
    /// Server confirms.
    Ack,
    /// Server refuses.
    Nak,
    /// Client gives the address back.
    Release,
    /// Client wants configuration only.
    Inform,
}

impl MessageType {
    /// From the option value.
    pub const fn from_u8(v: u8) -> Option<MessageType> {
        Some(match v {
            1 => MessageType::Discover,
            2 => MessageType::Offer,
            3 => MessageType::Request,
            4 => MessageType::Decline,
            5 => MessageType::Ack,
            6 => MessageType::Nak,
            7 => MessageType::Release,
            8 => MessageType::Inform,
            _ => return None,
        })
    }

    /// The option value.
    pub const fn to_u8(self) -> u8 {
        match self {
            MessageType::Discover => 1,
            MessageType::Offer => 2,
            MessageType::Request => 3,
            MessageType::Decline => 4,
            MessageType::Ack => 5,
            MessageType::Nak => 6,
            MessageType::Release => 7,
            MessageType::Inform => 8,
        }
    }
}

/// Why a message was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum DhcpError {
    /// Shorter than the fixed header and cookie.
    #[error("shorter than a DHCP header")]
    Truncated,
    /// Longer than [`MAX_LEN`].
    #[error("oversized DHCP message")]
    Oversized,
    /// `op` is not BOOTREQUEST (a client must not send replies).
    #[error("not a BOOTREQUEST")]
    NotRequest,
    /// Hardware type/length is not Ethernet (1/6).
    #[error("hardware type is not Ethernet")]
    BadHardware,
    /// The magic cookie is wrong.
    #[error("bad magic cookie")]
    BadCookie,
    /// An option's length runs past the end of its field.
    #[error("option {0} overruns its field")]
    OptionOverrun(u8),
    /// The options field has no END option.
    #[error("options without END")]
    MissingEnd,
    /// A known option has an impossible length or value.
    #[error("invalid option {0}")]
    BadOption(u8),
    /// No message type option.
    #[error("no message type")]
    NoMessageType,
    /// The output buffer is too small for the reply.
    #[error("output buffer too small")]
    BufferTooSmall,
}

/// The options the server reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DhcpOptions<'a> {
    /// 53.
    pub message_type: Option<MessageType>,
    /// 50.
    pub requested_ip: Option<Ipv4Addr>,
    /// 54.
    pub server_id: Option<Ipv4Addr>,
    /// 51.
    pub lease_time: Option<u32>,
    /// 57 (only values ≥ 576 are kept, RFC 2132 §9.10).
    pub max_message_size: Option<u16>,
    /// 61.
    pub client_id: Option<&'a [u8]>,
    /// 12.
    pub hostname: Option<&'a [u8]>,
    /// 55.
    pub parameter_list: Option<&'a [u8]>,
    /// 52: 1 = `file` holds options, 2 = `sname`, 3 = both.
    pub overload: u8,
}

fn addr(d: &[u8], code: u8) -> Result<Ipv4Addr, DhcpError> {
    match *d {
        [a, b, c, e] => Ok(Ipv4Addr::new(a, b, c, e)),
        _ => Err(DhcpError::BadOption(code)),
    }
}

impl<'a> DhcpOptions<'a> {
    fn apply(&mut self, code: u8, d: &'a [u8], main: bool) -> Result<(), DhcpError> {
        match code {
            opt::MESSAGE_TYPE if self.message_type.is_none() => {
                let [v] = *d else {
                    return Err(DhcpError::BadOption(code));
                };
                self.message_type =
                    Some(MessageType::from_u8(v).ok_or(DhcpError::BadOption(code))?);
            }
            opt::REQUESTED_IP if self.requested_ip.is_none() => {
                self.requested_ip = Some(addr(d, code)?)
            }
            opt::SERVER_ID if self.server_id.is_none() => self.server_id = Some(addr(d, code)?),
            opt::LEASE_TIME if self.lease_time.is_none() => match *d {
                [a, b, c, e] => self.lease_time = Some(u32::from_be_bytes([a, b, c, e])),
                _ => return Err(DhcpError::BadOption(code)),
            },
            opt::MAX_MESSAGE_SIZE if self.max_message_size.is_none() => match *d {
                [a, b] => {
                    let v = u16::from_be_bytes([a, b]);
                    if v >= 576 {
                        self.max_message_size = Some(v);
                    }
                }
                _ => return Err(DhcpError::BadOption(code)),
            },
            opt::CLIENT_ID if self.client_id.is_none() && d.len() >= 2 => self.client_id = Some(d),
            opt::HOSTNAME if self.hostname.is_none() && !d.is_empty() => self.hostname = Some(d),
            opt::PARAMETER_LIST if self.parameter_list.is_none() => self.parameter_list = Some(d),
            opt::OVERLOAD if main && self.overload == 0 => match *d {
                [v @ 1..=3] => self.overload = v,
                _ => return Err(DhcpError::BadOption(code)),
            },
            _ => {}
        }
        Ok(())
    }

    /// Reads one options field. `main` is the options field proper (END required,
    /// overload honoured); `file`/`sname` may end without END.
    fn parse_field(&mut self, field: &'a [u8], main: bool) -> Result<(), DhcpError> {
        let mut i = 0;
        loop {
            let Some(&code) = field.get(i) else {
                return if main {
                    Err(DhcpError::MissingEnd)
                } else {
                    Ok(())
                };
            };
            match code {
                opt::PAD => i += 1,
                opt::END => return Ok(()),
                _ => {
                    let len = usize::from(*field.get(i + 1).ok_or(DhcpError::OptionOverrun(code))?);
                    let data = field
                        .get(i + 2..i + 2 + len)
                        .ok_or(DhcpError::OptionOverrun(code))?;
                    self.apply(code, data, main)?;
                    i += 2 + len;
                }
            }
        }
    }
}

/// A parsed client message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DhcpMessage<'a> {
    /// Relay hops.
    pub hops: u8,
    /// Transaction id.
    pub xid: u32,
    /// Seconds since the client began.
    pub secs: u16,
    /// Flags (broadcast bit).
    pub flags: u16,
    /// Client address (RENEWING, REBINDING, INFORM, RELEASE).
    pub ciaddr: Ipv4Addr,
    /// "Your" address (0 in requests).
    pub yiaddr: Ipv4Addr,
    /// Next server.
    pub siaddr: Ipv4Addr,
    /// Relay agent address (relays are not supported).
    pub giaddr: Ipv4Addr,
    /// Client hardware address.
    pub chaddr: MacAddr,
    /// The 16-byte `chaddr` field, echoed in replies.
    pub chaddr_field: [u8; 16],
    /// Options.
    pub options: DhcpOptions<'a>,
}

fn get_addr(b: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(b[at], b[at + 1], b[at + 2], b[at + 3])
}

impl<'a> DhcpMessage<'a> {
    /// Parses a client message (a BOOTREQUEST from an Ethernet client).
    pub fn parse(b: &'a [u8]) -> Result<DhcpMessage<'a>, DhcpError> {
        if b.len() < MIN_LEN {
            return Err(DhcpError::Truncated);
        }
        if b.len() > MAX_LEN {
            return Err(DhcpError::Oversized);
        }
        if b[field::OP] != OP_BOOTREQUEST {
            return Err(DhcpError::NotRequest);
        }
        if b[field::HTYPE] != 1 || b[field::HLEN] != 6 {
            return Err(DhcpError::BadHardware);
        }
        if b[field::COOKIE..MIN_LEN] != MAGIC_COOKIE {
            return Err(DhcpError::BadCookie);
        }
        let mut options = DhcpOptions::default();
        options.parse_field(&b[MIN_LEN..], true)?;
        if options.overload & 1 != 0 {
            options.parse_field(&b[field::FILE..field::COOKIE], false)?;
        }
        if options.overload & 2 != 0 {
            options.parse_field(&b[field::SNAME..field::FILE], false)?;
        }
        if options.message_type.is_none() {
            return Err(DhcpError::NoMessageType);
        }
        let mut chaddr_field = [0u8; 16];
        chaddr_field.copy_from_slice(&b[field::CHADDR..field::CHADDR + 16]);
        let mut mac = [0u8; 6];
        mac.copy_from_slice(&chaddr_field[..6]);
        Ok(DhcpMessage {
            hops: b[field::HOPS],
            xid: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
            secs: u16::from_be_bytes([b[field::SECS], b[field::SECS + 1]]),
            flags: u16::from_be_bytes([b[field::FLAGS], b[field::FLAGS + 1]]),
            ciaddr: get_addr(b, field::CIADDR),
            yiaddr: get_addr(b, field::YIADDR),
            siaddr: get_addr(b, field::SIADDR),
            giaddr: get_addr(b, field::GIADDR),
            chaddr: MacAddr(mac),
            chaddr_field,
            options,
        })
    }

    /// The message type (always present after `parse`).
    pub fn message_type(&self) -> MessageType {
        self.options.message_type.unwrap_or(MessageType::Discover)
    }

    /// The client asked for broadcast replies.
    pub fn wants_broadcast(&self) -> bool {
        self.flags & FLAG_BROADCAST != 0
    }
}

/// A server reply to emit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DhcpReply<'a> {
    /// OFFER, ACK or NAK.
    pub message_type: MessageType,
    /// The request's transaction id.
    pub xid: u32,
    /// The request's flags.
    pub flags: u16,
    /// The request's `ciaddr` (ACK to INFORM/RENEW) or 0.
    pub ciaddr: Ipv4Addr,
    /// The address given (0 for INFORM and NAK).
    pub yiaddr: Ipv4Addr,
    /// The request's `chaddr` field.
    pub chaddr_field: [u8; 16],
    /// Option 54.
    pub server_id: Ipv4Addr,
    /// Option 51 (with 58 = ½ and 59 = ⅞ of it, RFC 2131 §4.4.5).
    pub lease_secs: Option<u32>,
    /// Option 1.
    pub subnet_mask: Option<Ipv4Addr>,
    /// Option 28.
    pub broadcast: Option<Ipv4Addr>,
    /// Option 3.
    pub router: Option<Ipv4Addr>,
    /// Option 6 (at most 8 are sent).
    pub dns: &'a [Ipv4Addr],
    /// Option 12 (the host name given to this client).
    pub host_name: Option<&'a str>,
    /// Option 15.
    pub domain: Option<&'a str>,
    /// Option 26.
    pub mtu: Option<u16>,
    /// Option 56 (NAK reason).
    pub message: Option<&'a str>,
}

struct OptWriter<'b> {
    buf: &'b mut [u8],
    at: usize,
}

impl OptWriter<'_> {
    fn put(&mut self, code: u8, data: &[u8]) -> Result<(), DhcpError> {
        let len = u8::try_from(data.len()).map_err(|_| DhcpError::BadOption(code))?;
        let end = self.at + 2 + data.len();
        let dst = self
            .buf
            .get_mut(self.at..end)
            .ok_or(DhcpError::BufferTooSmall)?;
        dst[0] = code;
        dst[1] = len;
        dst[2..].copy_from_slice(data);
        self.at = end;
        Ok(())
    }
}

impl DhcpReply<'_> {
    /// Writes the BOOTREPLY into `buf` (padded to 300 bytes); returns its length.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, DhcpError> {
        if buf.len() < MIN_BOOTP_LEN {
            return Err(DhcpError::BufferTooSmall);
        }
        buf[..MIN_BOOTP_LEN].fill(0);
        buf[field::OP] = OP_BOOTREPLY;
        buf[field::HTYPE] = 1;
        buf[field::HLEN] = 6;
        buf[field::XID..field::XID + 4].copy_from_slice(&self.xid.to_be_bytes());
        buf[field::FLAGS..field::FLAGS + 2].copy_from_slice(&self.flags.to_be_bytes());
        buf[field::CIADDR..field::CIADDR + 4].copy_from_slice(&self.ciaddr.octets());
        buf[field::YIADDR..field::YIADDR + 4].copy_from_slice(&self.yiaddr.octets());
        buf[field::CHADDR..field::CHADDR + 16].copy_from_slice(&self.chaddr_field);
        buf[field::COOKIE..MIN_LEN].copy_from_slice(&MAGIC_COOKIE);
        let mut w = OptWriter { buf, at: MIN_LEN };
        w.put(opt::MESSAGE_TYPE, &[self.message_type.to_u8()])?;
        w.put(opt::SERVER_ID, &self.server_id.octets())?;
        if let Some(l) = self.lease_secs {
            w.put(opt::LEASE_TIME, &l.to_be_bytes())?;
            w.put(opt::RENEWAL_TIME, &(l / 2).to_be_bytes())?;
            w.put(
                opt::REBINDING_TIME,
                &((u64::from(l) * 7 / 8) as u32).to_be_bytes(),
            )?;
        }
        if let Some(m) = self.subnet_mask {
            w.put(opt::SUBNET_MASK, &m.octets())?;
        }
        if let Some(b) = self.broadcast {
            w.put(opt::BROADCAST, &b.octets())?;
        }
        if let Some(r) = self.router {
            w.put(opt::ROUTER, &r.octets())?;
        }
        if !self.dns.is_empty() {
            let mut d = [0u8; 32];
            let n = self.dns.len().min(8);
            for (slot, a) in d.chunks_exact_mut(4).zip(&self.dns[..n]) {
                slot.copy_from_slice(&a.octets());
            }
            w.put(opt::DNS, &d[..4 * n])?;
        }
        if let Some(h) = self.host_name {
            w.put(opt::HOSTNAME, h.as_bytes())?;
        }
        if let Some(dom) = self.domain {
            w.put(opt::DOMAIN, dom.as_bytes())?;
        }
        if let Some(mtu) = self.mtu {
            w.put(opt::MTU, &mtu.to_be_bytes())?;
        }
        if let Some(msg) = self.message {
            w.put(opt::MESSAGE, msg.as_bytes())?;
        }
        let end = w.at;
        *w.buf.get_mut(end).ok_or(DhcpError::BufferTooSmall)? = opt::END;
        Ok((end + 1).max(MIN_BOOTP_LEN))
    }
}

/// Writes a client message (for tests, fuzzing and the harness' fake clients): a
/// BOOTREQUEST with the given options in order (`(code, data)`), END and padding.
pub fn emit_request(
    buf: &mut [u8],
    xid: u32,
    flags: u16,
    ciaddr: Ipv4Addr,
    chaddr: MacAddr,
    options: &[(u8, &[u8])],
) -> Result<usize, DhcpError> {
    if buf.len() < MIN_BOOTP_LEN {
        return Err(DhcpError::BufferTooSmall);
    }
    buf[..MIN_BOOTP_LEN].fill(0);
    buf[field::OP] = OP_BOOTREQUEST;
    buf[field::HTYPE] = 1;
    buf[field::HLEN] = 6;
    buf[field::XID..field::XID + 4].copy_from_slice(&xid.to_be_bytes());
    buf[field::FLAGS..field::FLAGS + 2].copy_from_slice(&flags.to_be_bytes());
    buf[field::CIADDR..field::CIADDR + 4].copy_from_slice(&ciaddr.octets());
    buf[field::CHADDR..field::CHADDR + 6].copy_from_slice(&chaddr.0);
    buf[field::COOKIE..MIN_LEN].copy_from_slice(&MAGIC_COOKIE);
    let mut w = OptWriter { buf, at: MIN_LEN };
    for (code, data) in options {
        w.put(*code, data)?;
    }
    let end = w.at;
    *w.buf.get_mut(end).ok_or(DhcpError::BufferTooSmall)? = opt::END;
    Ok((end + 1).max(MIN_BOOTP_LEN))
}

/// Reads the options of a server reply (for tests and fake clients): message type,
/// server id, lease time, mask, router, first DNS server, `yiaddr`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplySummary {
    /// Option 53.
    pub message_type: Option<MessageType>,
    /// `yiaddr`.
    pub yiaddr: Option<Ipv4Addr>,
    /// `xid`.
    pub xid: u32,
    /// Option 54.
    pub server_id: Option<Ipv4Addr>,
    /// Option 51.
    pub lease_secs: Option<u32>,
    /// Option 58.
    pub renewal_secs: Option<u32>,
    /// Option 59.
    pub rebinding_secs: Option<u32>,
    /// Option 1.
    pub subnet_mask: Option<Ipv4Addr>,
    /// Option 28.
    pub broadcast: Option<Ipv4Addr>,
    /// Option 3.
    pub router: Option<Ipv4Addr>,
    /// Option 6, first address.
    pub dns: Option<Ipv4Addr>,
    /// Option 26.
    pub mtu: Option<u16>,
    /// Option 15 present.
    pub has_domain: bool,
    /// Option 12 present.
    pub has_host_name: bool,
}

/// Parses a BOOTREPLY into a [`ReplySummary`] (total, like the request parser).
pub fn parse_reply(b: &[u8]) -> Result<ReplySummary, DhcpError> {
    if b.len() < MIN_LEN {
        return Err(DhcpError::Truncated);
    }
    if b[field::OP] != OP_BOOTREPLY {
        return Err(DhcpError::NotRequest);
    }
    if b[field::COOKIE..MIN_LEN] != MAGIC_COOKIE {
        return Err(DhcpError::BadCookie);
    }
    let mut s = ReplySummary {
        xid: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
        yiaddr: Some(get_addr(b, field::YIADDR)).filter(|a| !a.is_unspecified()),
        ..ReplySummary::default()
    };
    let o = &b[MIN_LEN..];
    let mut i = 0;
    loop {
        let Some(&code) = o.get(i) else {
            return Err(DhcpError::MissingEnd);
        };
        if code == opt::END {
            return Ok(s);
        }
        if code == opt::PAD {
            i += 1;
            continue;
        }
        let len = usize::from(*o.get(i + 1).ok_or(DhcpError::OptionOverrun(code))?);
        let d = o
            .get(i + 2..i + 2 + len)
            .ok_or(DhcpError::OptionOverrun(code))?;
        let a = |d: &[u8]| d.get(..4).map(|x| Ipv4Addr::new(x[0], x[1], x[2], x[3]));
        let n = |d: &[u8]| {
            d.get(..4)
                .map(|x| u32::from_be_bytes([x[0], x[1], x[2], x[3]]))
        };
        match code {
            opt::MESSAGE_TYPE => s.message_type = d.first().and_then(|&v| MessageType::from_u8(v)),
            opt::SERVER_ID => s.server_id = a(d),
            opt::LEASE_TIME => s.lease_secs = n(d),
            opt::RENEWAL_TIME => s.renewal_secs = n(d),
            opt::REBINDING_TIME => s.rebinding_secs = n(d),
            opt::SUBNET_MASK => s.subnet_mask = a(d),
            opt::BROADCAST => s.broadcast = a(d),
            opt::ROUTER => s.router = a(d),
            opt::DNS => s.dns = a(d),
            opt::MTU => s.mtu = d.get(..2).map(|x| u16::from_be_bytes([x[0], x[1]])),
            opt::DOMAIN => s.has_domain = true,
            opt::HOSTNAME => s.has_host_name = true,
            _ => {}
        }
        i += 2 + len;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MAC: MacAddr = MacAddr([0x00, 0x16, 0x3e, 0x12, 0x34, 0x56]);

    fn discover() -> Vec<u8> {
        let mut b = vec![0u8; 600];
        let n = emit_request(
            &mut b,
            0xdead_beef,
            FLAG_BROADCAST,
            Ipv4Addr::UNSPECIFIED,
            MAC,
            &[
                (opt::MESSAGE_TYPE, &[1]),
                (opt::REQUESTED_IP, &[192, 168, 122, 9]),
                (opt::MAX_MESSAGE_SIZE, &[0x05, 0xdc]),
                (opt::CLIENT_ID, &[1, 0, 0x16, 0x3e, 0x12, 0x34, 0x56]),
                (opt::PARAMETER_LIST, &[1, 3, 6, 15, 28]),
            ],
        )
        .unwrap();
        b.truncate(n);
        b
    }

    #[test]
    fn parses_a_discover() {
        let b = discover();
        assert_eq!(b.len(), MIN_BOOTP_LEN);
        let m = DhcpMessage::parse(&b).unwrap();
        assert_eq!(m.message_type(), MessageType::Discover);
        assert_eq!(m.xid, 0xdead_beef);
        assert!(m.wants_broadcast());
        assert_eq!(m.chaddr, MAC);
        assert_eq!(
            m.options.requested_ip,
            Some(Ipv4Addr::new(192, 168, 122, 9))
        );
        assert_eq!(m.options.max_message_size, Some(1500));
        assert_eq!(m.options.client_id.unwrap().len(), 7);
        assert_eq!(m.options.parameter_list, Some(&[1u8, 3, 6, 15, 28][..]));
    }

    #[test]
    fn refuses_malformed() {
        let good = discover();
        assert_eq!(DhcpMessage::parse(&good[..239]), Err(DhcpError::Truncated));
        let mut b = good.clone();
        b[236] = 0;
        assert_eq!(DhcpMessage::parse(&b), Err(DhcpError::BadCookie));
        let mut b = good.clone();
        b[0] = 2;
        assert_eq!(DhcpMessage::parse(&b), Err(DhcpError::NotRequest));
        let mut b = good.clone();
        b[1] = 6;
        assert_eq!(DhcpMessage::parse(&b), Err(DhcpError::BadHardware));
        // Option length past the end.
        let mut b = good[..MIN_LEN].to_vec();
        b.extend_from_slice(&[53, 1, 1, 12, 200, b'x']);
        assert_eq!(DhcpMessage::parse(&b), Err(DhcpError::OptionOverrun(12)));
        // No END.
        let mut b = good[..MIN_LEN].to_vec();
        b.extend_from_slice(&[53, 1, 1, 0, 0]);
        assert_eq!(DhcpMessage::parse(&b), Err(DhcpError::MissingEnd));
        // Wrong lengths and values of known options.
        let mut b = good[..MIN_LEN].to_vec();
        b.extend_from_slice(&[53, 1, 9, 255]);
        assert_eq!(DhcpMessage::parse(&b), Err(DhcpError::BadOption(53)));
        let mut b = good[..MIN_LEN].to_vec();
        b.extend_from_slice(&[53, 1, 1, 50, 3, 1, 2, 3, 255]);
        assert_eq!(DhcpMessage::parse(&b), Err(DhcpError::BadOption(50)));
        // No message type.
        let mut b = good[..MIN_LEN].to_vec();
        b.push(255);
        assert_eq!(DhcpMessage::parse(&b), Err(DhcpError::NoMessageType));
        // Oversized.
        let mut b = good.clone();
        b.resize(MAX_LEN + 1, 0);
        assert_eq!(DhcpMessage::parse(&b), Err(DhcpError::Oversized));
    }

    #[test]
    fn overload_is_bounded() {
        // Message type lives in `file` via overload 1; an overload option inside `file`
        // is ignored (no loop), and `file` may end without END.
        let mut b = discover()[..MIN_LEN].to_vec();
        b.extend_from_slice(&[52, 1, 1, 255]);
        b[108..111].copy_from_slice(&[53, 1, 3]);
        b[111..114].copy_from_slice(&[52, 1, 3]);
        let m = DhcpMessage::parse(&b).unwrap();
        assert_eq!(m.message_type(), MessageType::Request);
        assert_eq!(m.options.overload, 1);
        // Overload with a bad value.
        let mut b = discover()[..MIN_LEN].to_vec();
        b.extend_from_slice(&[52, 1, 7, 255]);
        assert_eq!(DhcpMessage::parse(&b), Err(DhcpError::BadOption(52)));
    }

    #[test]
    fn reply_bytes() {
        let dns = [Ipv4Addr::new(192, 168, 122, 1)];
        let r = DhcpReply {
            message_type: MessageType::Offer,
            xid: 0x0102_0304,
            flags: 0,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            yiaddr: Ipv4Addr::new(192, 168, 122, 50),
            chaddr_field: {
                let mut c = [0u8; 16];
                c[..6].copy_from_slice(&MAC.0);
                c
            },
            server_id: Ipv4Addr::new(192, 168, 122, 1),
            lease_secs: Some(3600),
            subnet_mask: Some(Ipv4Addr::new(255, 255, 255, 0)),
            broadcast: Some(Ipv4Addr::new(192, 168, 122, 255)),
            router: Some(Ipv4Addr::new(192, 168, 122, 1)),
            dns: &dns,
            host_name: None,
            domain: None,
            mtu: None,
            message: None,
        };
        let mut buf = [0u8; 600];
        let n = r.emit(&mut buf).unwrap();
        assert_eq!(n, MIN_BOOTP_LEN);
        assert_eq!(&buf[0..4], &[2, 1, 6, 0]);
        assert_eq!(&buf[4..8], &[1, 2, 3, 4]);
        assert_eq!(&buf[16..20], &[192, 168, 122, 50]);
        assert_eq!(&buf[28..34], &MAC.0);
        assert_eq!(&buf[236..240], &MAGIC_COOKIE);
        #[rustfmt::skip]
        let options: &[u8] = &[
            53, 1, 2,
            54, 4, 192, 168, 122, 1,
            51, 4, 0, 0, 0x0e, 0x10,
            58, 4, 0, 0, 0x07, 0x08,
            59, 4, 0, 0, 0x0c, 0x4e,
            1, 4, 255, 255, 255, 0,
            28, 4, 192, 168, 122, 255,
            3, 4, 192, 168, 122, 1,
            6, 4, 192, 168, 122, 1,
            255,
        ];
        assert_eq!(&buf[240..240 + options.len()], options);
        assert!(buf[240 + options.len()..n].iter().all(|&b| b == 0));
        let s = parse_reply(&buf[..n]).unwrap();
        assert_eq!(s.message_type, Some(MessageType::Offer));
        assert_eq!(s.rebinding_secs, Some(3150));
        assert!(r.emit(&mut [0u8; 299]).is_err());
    }

    proptest! {
        #[test]
        fn parser_is_total(bytes in proptest::collection::vec(any::<u8>(), 0..700)) {
            let _ = DhcpMessage::parse(&bytes);
            let _ = parse_reply(&bytes);
        }

        /// A valid header followed by random option bytes: never a panic, and whatever
        /// parses has a message type.
        #[test]
        fn random_options_never_panic(opts in proptest::collection::vec(any::<u8>(), 0..300), file in proptest::collection::vec(any::<u8>(), 0..128)) {
            let mut b = discover()[..MIN_LEN].to_vec();
            b[108..108 + file.len()].copy_from_slice(&file);
            b.extend_from_slice(&opts);
            if let Ok(m) = DhcpMessage::parse(&b) {
                prop_assert!(m.options.message_type.is_some());
            }
        }

        /// Emitted requests parse back to the same fields.
        #[test]
        fn request_round_trip(xid in any::<u32>(), t in 1u8..=8, ip in any::<[u8; 4]>(), flags in any::<u16>()) {
            let mut b = [0u8; 400];
            let n = emit_request(&mut b, xid, flags, Ipv4Addr::from(ip), MAC, &[(53, &[t]), (50, &ip), (54, &ip)]).unwrap();
            let m = DhcpMessage::parse(&b[..n]).unwrap();
            prop_assert_eq!(m.xid, xid);
            prop_assert_eq!(m.flags, flags);
            prop_assert_eq!(m.message_type().to_u8(), t);
            prop_assert_eq!(m.options.requested_ip, Some(Ipv4Addr::from(ip)));
            prop_assert_eq!(m.ciaddr, Ipv4Addr::from(ip));
        }
    }
}
