//! ICMPv6 (RFC 4443) header and the Neighbor Discovery fields (RFC 4861) that RA-Guard and
//! the NA anti-spoofing check read.

use std::net::Ipv6Addr;

use super::{checksum, get_u16, put_u16, Error, IpProtocol, Result};

mod field {
    use core::ops::Range;
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: usize = 2;
    pub const ND_TARGET: Range<usize> = 8..24;
}

/// Length of the ICMPv6 header (type, code, checksum, 4 message-specific bytes).
pub const HEADER_LEN: usize = 8;

/// ICMPv6 message types.
pub mod kind {
    /// Router Solicitation (RFC 4861 §4.1).
    pub const ROUTER_SOLICIT: u8 = 133;
    /// Router Advertisement (RFC 4861 §4.2): only routers send these; RA-Guard (RFC 6105)
    /// drops them from guest ports.
    pub const ROUTER_ADVERT: u8 = 134;
    /// Neighbor Solicitation.
    pub const NEIGHBOR_SOLICIT: u8 = 135;
    /// Neighbor Advertisement.
    pub const NEIGHBOR_ADVERT: u8 = 136;
    /// Redirect.
    pub const REDIRECT: u8 = 137;
}

/// A view of an ICMPv6 message.
#[derive(Debug, Clone)]
pub struct Icmpv6Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Icmpv6Packet<T> {
    /// Wraps a buffer without checking it.
    pub const fn new_unchecked(buffer: T) -> Self {
        Icmpv6Packet { buffer }
    }

    /// Wraps a buffer after [`check_len`](Self::check_len).
    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// The 8-byte header must be present.
    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            Err(Error::Truncated)
        } else {
            Ok(())
        }
    }

    /// Message type.
    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[field::TYPE]
    }

    /// Message code.
    pub fn msg_code(&self) -> u8 {
        self.buffer.as_ref()[field::CODE]
    }

    /// Checksum field.
    pub fn checksum(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// Target address of a Neighbor Solicitation/Advertisement (or Redirect); `None` for
    /// other types or when the message is too short to hold one.
    pub fn nd_target(&self) -> Option<Ipv6Addr> {
        match self.msg_type() {
            kind::NEIGHBOR_SOLICIT | kind::NEIGHBOR_ADVERT | kind::REDIRECT => {
                let b = self.buffer.as_ref().get(field::ND_TARGET)?;
                let mut a = [0u8; 16];
                a.copy_from_slice(b);
                Some(Ipv6Addr::from(a))
            }
            _ => None,
        }
    }

    /// Verifies the checksum over the IPv6 pseudo-header and the whole message.
    pub fn verify_checksum(&self, src: Ipv6Addr, dst: Ipv6Addr) -> bool {
        let b = self.buffer.as_ref();
        let ph = checksum::pseudo_header_v6(src, dst, IpProtocol::ICMPV6, b.len() as u32);
        checksum::combine(&[ph, checksum::data(b)]) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Icmpv6Packet<T> {
    /// Sets the type.
    pub fn set_msg_type(&mut self, v: u8) {
        self.buffer.as_mut()[field::TYPE] = v;
    }

    /// Sets the code.
    pub fn set_msg_code(&mut self, v: u8) {
        self.buffer.as_mut()[field::CODE] = v;
    }

    /// Sets the checksum field verbatim.
    pub fn set_checksum(&mut self, v: u16) {
        put_u16(self.buffer.as_mut(), field::CHECKSUM, v);
    }

    /// Computes the checksum with the IPv6 pseudo-header.
    pub fn fill_checksum(&mut self, src: Ipv6Addr, dst: Ipv6Addr) {
        self.set_checksum(0);
        let b = self.buffer.as_ref();
        let ph = checksum::pseudo_header_v6(src, dst, IpProtocol::ICMPV6, b.len() as u32);
        let c = !checksum::combine(&[ph, checksum::data(b)]);
        self.set_checksum(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nd_target_and_checksum() {
        let target: Ipv6Addr = "2001:db8::5".parse().unwrap();
        let mut b = [0u8; 24];
        b[0] = kind::NEIGHBOR_ADVERT;
        b[8..24].copy_from_slice(&target.octets());
        let src: Ipv6Addr = "fe80::1".parse().unwrap();
        let dst: Ipv6Addr = "ff02::1".parse().unwrap();
        Icmpv6Packet::new_checked(&mut b[..])
            .unwrap()
            .fill_checksum(src, dst);
        let p = Icmpv6Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.nd_target(), Some(target));
        assert!(p.verify_checksum(src, dst));
        assert!(!p.verify_checksum(src, "ff02::2".parse().unwrap()));
        assert_eq!(
            Icmpv6Packet::new_checked(&b[..20]).unwrap().nd_target(),
            None
        );
        b[0] = kind::ROUTER_ADVERT;
        assert_eq!(Icmpv6Packet::new_checked(&b[..]).unwrap().nd_target(), None);
    }
}
