//! UDP headers (RFC 768).

use std::net::{Ipv4Addr, Ipv6Addr};

use super::{checksum, get_u16, put_u16, Error, IpProtocol, Result};

mod field {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const LENGTH: usize = 4;
    pub const CHECKSUM: usize = 6;
}

/// Length of the UDP header.
pub const HEADER_LEN: usize = 8;

/// DHCP server port (RFC 2131 §4.1).
pub const DHCP_SERVER_PORT: u16 = 67;
/// DHCP client port.
pub const DHCP_CLIENT_PORT: u16 = 68;
/// DHCPv6 client port (RFC 8415 §7.2).
pub const DHCPV6_CLIENT_PORT: u16 = 546;
/// DHCPv6 server/relay port.
pub const DHCPV6_SERVER_PORT: u16 = 547;

/// A view of a UDP datagram.
#[derive(Debug, Clone)]
pub struct UdpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> UdpPacket<T> {
    /// Wraps a buffer without checking it.
    pub const fn new_unchecked(buffer: T) -> Self {
        UdpPacket { buffer }
    }

    /// Wraps a buffer after [`check_len`](Self::check_len).
    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// The header fits, and the length field covers at least the header and at most the
    /// buffer.
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let field_len = usize::from(self.len());
        if field_len < HEADER_LEN {
            return Err(Error::Malformed);
        }
        if field_len > len {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// Source port.
    pub fn src_port(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::SRC_PORT)
    }

    /// Destination port.
    pub fn dst_port(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::DST_PORT)
    }

    /// Length field (header plus payload).
    pub fn len(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::LENGTH)
    }

    /// Whether the length field says there is no payload.
    pub fn is_empty(&self) -> bool {
        usize::from(self.len()) <= HEADER_LEN
    }

    /// Checksum field (0 means "not computed" over IPv4).
    pub fn checksum(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// The payload, as bounded by the length field.
    pub fn payload(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        let end = usize::from(self.len()).clamp(HEADER_LEN, b.len().max(HEADER_LEN));
        b.get(HEADER_LEN..end).unwrap_or(&[])
    }

    fn covered(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        &b[..usize::from(self.len()).min(b.len())]
    }

    /// Verifies the checksum over the IPv4 pseudo-header; a zero field means none was sent
    /// and is accepted (RFC 768).
    pub fn verify_checksum_v4(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        if self.checksum() == 0 {
            return true;
        }
        let ph = checksum::pseudo_header_v4(src, dst, IpProtocol::UDP, u32::from(self.len()));
        checksum::combine(&[ph, checksum::data(self.covered())]) == 0xffff
    }

    /// Verifies the checksum over the IPv6 pseudo-header (mandatory over IPv6, RFC 8200 §8.1).
    pub fn verify_checksum_v6(&self, src: Ipv6Addr, dst: Ipv6Addr) -> bool {
        let ph = checksum::pseudo_header_v6(src, dst, IpProtocol::UDP, u32::from(self.len()));
        checksum::combine(&[ph, checksum::data(self.covered())]) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpPacket<T> {
    /// Sets the source port.
    pub fn set_src_port(&mut self, v: u16) {
        put_u16(self.buffer.as_mut(), field::SRC_PORT, v);
    }

    /// Sets the destination port.
    pub fn set_dst_port(&mut self, v: u16) {
        put_u16(self.buffer.as_mut(), field::DST_PORT, v);
    }

    /// Sets the length field.
    pub fn set_len(&mut self, v: u16) {
        put_u16(self.buffer.as_mut(), field::LENGTH, v);
    }

    /// Sets the checksum field verbatim.
    pub fn set_checksum(&mut self, v: u16) {
        put_u16(self.buffer.as_mut(), field::CHECKSUM, v);
    }

    /// Mutable payload, as bounded by the length field.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let len = self.buffer.as_ref().len();
        let end = usize::from(self.len()).clamp(HEADER_LEN, len.max(HEADER_LEN));
        self.buffer
            .as_mut()
            .get_mut(HEADER_LEN..end)
            .unwrap_or(&mut [])
    }

    fn store_checksum(&mut self, ph: u16) {
        self.set_checksum(0);
        let sum = checksum::combine(&[ph, checksum::data(self.covered())]);
        // A computed zero is sent as all ones; zero on the wire means "no checksum".
        let c = !sum;
        self.set_checksum(if c == 0 { 0xffff } else { c });
    }

    /// Computes the checksum with the IPv4 pseudo-header.
    pub fn fill_checksum_v4(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        let ph = checksum::pseudo_header_v4(src, dst, IpProtocol::UDP, u32::from(self.len()));
        self.store_checksum(ph);
    }

    /// Computes the checksum with the IPv6 pseudo-header.
    pub fn fill_checksum_v6(&mut self, src: Ipv6Addr, dst: Ipv6Addr) {
        let ph = checksum::pseudo_header_v6(src, dst, IpProtocol::UDP, u32::from(self.len()));
        self.store_checksum(ph);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_and_checksum() {
        let mut b = [0u8; 12];
        {
            let mut p = UdpPacket::new_unchecked(&mut b[..]);
            p.set_src_port(68);
            p.set_dst_port(67);
            p.set_len(12);
            p.payload_mut().copy_from_slice(&[1, 2, 3, 4]);
            p.fill_checksum_v4(Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST);
        }
        let p = UdpPacket::new_checked(&b[..]).unwrap();
        assert_eq!((p.src_port(), p.dst_port()), (68, 67));
        assert_eq!(p.payload(), &[1, 2, 3, 4]);
        assert!(p.verify_checksum_v4(Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST));
        assert!(!p.verify_checksum_v4(Ipv4Addr::LOCALHOST, Ipv4Addr::BROADCAST));
        assert_eq!(
            UdpPacket::new_checked(&b[..11]).unwrap_err(),
            Error::Truncated
        );
        let mut bad = b;
        bad[5] = 4;
        assert_eq!(
            UdpPacket::new_checked(&bad[..]).unwrap_err(),
            Error::Malformed
        );
    }
}
