//! IEEE 802.1Q / 802.1ad VLAN tags.
//!
//! A tag sits where the EtherType would be: the TPID (0x8100 or 0x88a8) is read as the
//! outer EtherType, then 4 bytes follow: the TCI (PCP 3 bits, DEI 1 bit, VID 12 bits) and
//! the next EtherType. This view covers those 4 bytes.

use core::fmt;

use super::{get_u16, put_u16, Error, EtherType, Result};

/// A 12-bit VLAN identifier. 0 means "priority tag only, no VLAN" and is what untagged
/// frames are keyed under in the MAC table; 4095 is reserved.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VlanId(u16);

impl VlanId {
    /// The untagged / priority-tagged VLAN.
    pub const NONE: VlanId = VlanId(0);

    /// A VLAN id from its 12-bit value; `None` above 4095.
    pub const fn new(vid: u16) -> Option<VlanId> {
        if vid <= 0x0fff {
            Some(VlanId(vid))
        } else {
            None
        }
    }

    /// The VID bits of a tag control information field.
    pub const fn from_tci(tci: u16) -> VlanId {
        VlanId(tci & 0x0fff)
    }

    /// The numeric id.
    pub const fn get(self) -> u16 {
        self.0
    }
}

impl fmt::Display for VlanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

mod field {
    pub const TCI: usize = 0;
    pub const ETHERTYPE: usize = 2;
    pub const PAYLOAD: usize = 4;
}

/// Length of one VLAN tag after the TPID.
pub const HEADER_LEN: usize = field::PAYLOAD;

/// A view of the 4 bytes that follow a VLAN TPID.
#[derive(Debug, Clone)]
pub struct VlanHeader<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> VlanHeader<T> {
    /// Wraps a buffer without checking its length.
    pub const fn new_unchecked(buffer: T) -> Self {
        VlanHeader { buffer }
    }

    /// Wraps a buffer after [`check_len`](Self::check_len).
    pub fn new_checked(buffer: T) -> Result<Self> {
        let v = Self::new_unchecked(buffer);
        v.check_len()?;
        Ok(v)
    }

    /// The buffer must hold TCI and the inner EtherType.
    pub fn check_len(&self) -> Result<()> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            Err(Error::Truncated)
        } else {
            Ok(())
        }
    }

    /// Tag control information (PCP, DEI, VID).
    pub fn tci(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::TCI)
    }

    /// The VLAN id.
    pub fn vid(&self) -> VlanId {
        VlanId::from_tci(self.tci())
    }

    /// The EtherType of what follows the tag.
    pub fn ethertype(&self) -> EtherType {
        EtherType(get_u16(self.buffer.as_ref(), field::ETHERTYPE))
    }

    /// Everything after the tag.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::PAYLOAD..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> VlanHeader<T> {
    /// Sets the TCI.
    pub fn set_tci(&mut self, tci: u16) {
        put_u16(self.buffer.as_mut(), field::TCI, tci);
    }

    /// Sets the inner EtherType.
    pub fn set_ethertype(&mut self, t: EtherType) {
        put_u16(self.buffer.as_mut(), field::ETHERTYPE, t.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_fields() {
        let mut b = [0u8; 4];
        let mut h = VlanHeader::new_checked(&mut b[..]).unwrap();
        h.set_tci(0xa00a); // PCP 5, VID 10
        h.set_ethertype(EtherType::IPV4);
        let h = VlanHeader::new_checked(&b[..]).unwrap();
        assert_eq!(h.vid(), VlanId::new(10).unwrap());
        assert_eq!(h.ethertype(), EtherType::IPV4);
        assert!(VlanHeader::new_checked(&b[..3]).is_err());
        assert_eq!(VlanId::new(4096), None);
    }
}
