//! The virtio-net header a TAP with `IFF_VNET_HDR` puts before every frame.
//!
//! Layout is `struct virtio_net_hdr_v1` (linux/virtio_net.h; virtio 1.x spec §5.1.6): 12
//! bytes, all multi-byte fields little-endian (the TAP is put in little-endian mode with
//! `TUNSETVNETLE`, so this holds on any host):
//!
//! | off | field       | meaning                                                        |
//! |-----|-------------|----------------------------------------------------------------|
//! | 0   | flags       | `NEEDS_CSUM` (1): checksum from `csum_start`, store at +`csum_offset`; `DATA_VALID` (2): checksum already verified |
//! | 1   | gso_type    | `NONE` 0, `TCPV4` 1, `UDP` 3, `TCPV6` 4, `UDP_L4` 5, ORed with `ECN` 0x80 |
//! | 2   | hdr_len     | length of the headers to copy in front of each segment        |
//! | 4   | gso_size    | segment payload size (MSS)                                    |
//! | 6   | csum_start  | offset where checksumming starts                               |
//! | 8   | csum_offset | offset after `csum_start` where the checksum goes             |
//! | 10  | num_buffers | merged rx buffers (always 1 from a TAP)                        |
//!
//! These map onto Xen's netif flags (`NETTXF_csum_blank` ≈ `NEEDS_CSUM`,
//! `NETTXF_data_validated` ≈ `DATA_VALID`) and GSO extra info (`XEN_NETIF_GSO_TYPE_TCPV4/6`
//! with `gso.size`).

/// A malformed or unsupported virtio-net header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VnetHdrError {
    /// Fewer than 12 bytes.
    #[error("virtio-net header needs {need} bytes, have {have}")]
    TooShort {
        /// Bytes needed.
        need: usize,
        /// Bytes available.
        have: usize,
    },
    /// Flag bits other than `NEEDS_CSUM`/`DATA_VALID` (e.g. `RSC_INFO`, never sent by a TAP).
    #[error("unknown virtio-net header flags {0:#04x}")]
    UnknownFlags(u8),
    /// A GSO type this fabric does not carry.
    #[error("unknown virtio-net GSO type {0:#04x}")]
    UnknownGsoType(u8),
}

/// Segmentation offload kind of a frame (`VIRTIO_NET_HDR_GSO_*` without the ECN bit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum GsoType {
    /// `VIRTIO_NET_HDR_GSO_NONE`: a single frame.
    #[default]
    None,
    /// `VIRTIO_NET_HDR_GSO_TCPV4`: TSO over IPv4.
    TcpV4,
    /// `VIRTIO_NET_HDR_GSO_UDP`: UFO (IP fragmentation).
    Udp,
    /// `VIRTIO_NET_HDR_GSO_TCPV6`: TSO over IPv6.
    TcpV6,
    /// `VIRTIO_NET_HDR_GSO_UDP_L4`: USO (UDP segmentation).
    UdpL4,
}

impl GsoType {
    fn code(self) -> u8 {
        match self {
            GsoType::None => VirtioNetHdr::GSO_NONE,
            GsoType::TcpV4 => VirtioNetHdr::GSO_TCPV4,
            GsoType::Udp => VirtioNetHdr::GSO_UDP,
            GsoType::TcpV6 => VirtioNetHdr::GSO_TCPV6,
            GsoType::UdpL4 => VirtioNetHdr::GSO_UDP_L4,
        }
    }

    fn from_code(c: u8) -> Option<GsoType> {
        Some(match c {
            VirtioNetHdr::GSO_NONE => GsoType::None,
            VirtioNetHdr::GSO_TCPV4 => GsoType::TcpV4,
            VirtioNetHdr::GSO_UDP => GsoType::Udp,
            VirtioNetHdr::GSO_TCPV6 => GsoType::TcpV6,
            VirtioNetHdr::GSO_UDP_L4 => GsoType::UdpL4,
            _ => return None,
        })
    }
}

/// A decoded `virtio_net_hdr_v1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct VirtioNetHdr {
    /// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: the L4 checksum is partial and must be completed.
    pub needs_csum: bool,
    /// `VIRTIO_NET_HDR_F_DATA_VALID`: the checksum was verified (rx direction).
    pub data_valid: bool,
    /// Segmentation kind.
    pub gso_type: GsoType,
    /// `VIRTIO_NET_HDR_GSO_ECN`: the TCP stream uses ECN (CWR must be set on the first
    /// segment only).
    pub gso_ecn: bool,
    /// `hdr_len`.
    pub hdr_len: u16,
    /// `gso_size` (MSS).
    pub gso_size: u16,
    /// `csum_start`.
    pub csum_start: u16,
    /// `csum_offset`.
    pub csum_offset: u16,
    /// `num_buffers`.
    pub num_buffers: u16,
}

impl VirtioNetHdr {
    /// Size of `virtio_net_hdr_v1` (what `TUNSETVNETHDRSZ` is set to).
    pub const LEN: usize = 12;
    /// `VIRTIO_NET_HDR_F_NEEDS_CSUM`.
    pub const F_NEEDS_CSUM: u8 = 1;
    /// `VIRTIO_NET_HDR_F_DATA_VALID`.
    pub const F_DATA_VALID: u8 = 2;
    /// `VIRTIO_NET_HDR_GSO_NONE`.
    pub const GSO_NONE: u8 = 0;
    /// `VIRTIO_NET_HDR_GSO_TCPV4`.
    pub const GSO_TCPV4: u8 = 1;
    /// `VIRTIO_NET_HDR_GSO_UDP`.
    pub const GSO_UDP: u8 = 3;
    /// `VIRTIO_NET_HDR_GSO_TCPV6`.
    pub const GSO_TCPV6: u8 = 4;
    /// `VIRTIO_NET_HDR_GSO_UDP_L4`.
    pub const GSO_UDP_L4: u8 = 5;
    /// `VIRTIO_NET_HDR_GSO_ECN`.
    pub const GSO_ECN: u8 = 0x80;

    /// The header of a plain frame: no offload, one buffer.
    pub fn plain() -> VirtioNetHdr {
        VirtioNetHdr {
            num_buffers: 1,
            ..Default::default()
        }
    }

    /// Decodes the first 12 bytes of `bytes`, rejecting unknown flags and GSO types.
    pub fn decode(bytes: &[u8]) -> Result<VirtioNetHdr, VnetHdrError> {
        let b: &[u8; Self::LEN] = bytes
            .get(..Self::LEN)
            .and_then(|s| s.try_into().ok())
            .ok_or(VnetHdrError::TooShort {
                need: Self::LEN,
                have: bytes.len(),
            })?;
        let flags = b[0];
        if flags & !(Self::F_NEEDS_CSUM | Self::F_DATA_VALID) != 0 {
            return Err(VnetHdrError::UnknownFlags(flags));
        }
        let gso = b[1];
        let gso_type =
            GsoType::from_code(gso & !Self::GSO_ECN).ok_or(VnetHdrError::UnknownGsoType(gso))?;
        let le = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        Ok(VirtioNetHdr {
            needs_csum: flags & Self::F_NEEDS_CSUM != 0,
            data_valid: flags & Self::F_DATA_VALID != 0,
            gso_type,
            gso_ecn: gso & Self::GSO_ECN != 0,
            hdr_len: le(2),
            gso_size: le(4),
            csum_start: le(6),
            csum_offset: le(8),
            num_buffers: le(10),
        })
    }

    /// Encodes into 12 bytes.
    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        b[0] = (if self.needs_csum {
            Self::F_NEEDS_CSUM
        } else {
            0
        }) | (if self.data_valid {
            Self::F_DATA_VALID
        } else {
            0
        });
        b[1] = self.gso_type.code() | if self.gso_ecn { Self::GSO_ECN } else { 0 };
        b[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
        b[10..12].copy_from_slice(&self.num_buffers.to_le_bytes());
        b
    }

    /// Encodes into the front of `out` (no allocation, for the data path).
    pub fn encode_into(&self, out: &mut [u8]) -> Result<(), VnetHdrError> {
        let have = out.len();
        let dst = out.get_mut(..Self::LEN).ok_or(VnetHdrError::TooShort {
            need: Self::LEN,
            have,
        })?;
        dst.copy_from_slice(&self.encode());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_bytes_decode() {
        // NEEDS_CSUM, TCPV4|ECN, hdr_len 54, mss 1448, csum_start 34, csum_offset 16, 1 buffer
        let raw = [1, 0x81, 54, 0, 0xa8, 0x05, 34, 0, 16, 0, 1, 0];
        let h = VirtioNetHdr::decode(&raw).unwrap();
        assert!(h.needs_csum && !h.data_valid);
        assert_eq!(h.gso_type, GsoType::TcpV4);
        assert!(h.gso_ecn);
        assert_eq!(
            (h.hdr_len, h.gso_size, h.csum_start, h.csum_offset),
            (54, 1448, 34, 16)
        );
        assert_eq!(h.num_buffers, 1);
        assert_eq!(h.encode(), raw);
    }

    #[test]
    fn bad_headers_are_rejected() {
        assert_eq!(
            VirtioNetHdr::decode(&[0; 11]),
            Err(VnetHdrError::TooShort { need: 12, have: 11 })
        );
        let mut raw = [0u8; 12];
        raw[0] = 4;
        assert_eq!(
            VirtioNetHdr::decode(&raw),
            Err(VnetHdrError::UnknownFlags(4))
        );
        raw[0] = 0;
        raw[1] = 2;
        assert_eq!(
            VirtioNetHdr::decode(&raw),
            Err(VnetHdrError::UnknownGsoType(2))
        );
        let mut small = [0u8; 4];
        assert!(VirtioNetHdr::plain().encode_into(&mut small).is_err());
    }

    fn any_hdr() -> impl Strategy<Value = VirtioNetHdr> {
        (
            any::<(bool, bool, bool)>(),
            prop_oneof![
                Just(GsoType::None),
                Just(GsoType::TcpV4),
                Just(GsoType::Udp),
                Just(GsoType::TcpV6),
                Just(GsoType::UdpL4)
            ],
            any::<[u16; 5]>(),
        )
            .prop_map(|((nc, dv, ecn), g, f)| VirtioNetHdr {
                needs_csum: nc,
                data_valid: dv,
                gso_type: g,
                gso_ecn: ecn,
                hdr_len: f[0],
                gso_size: f[1],
                csum_start: f[2],
                csum_offset: f[3],
                num_buffers: f[4],
            })
    }

    proptest! {
        #[test]
        fn encode_decode_round_trip(h in any_hdr()) {
            prop_assert_eq!(VirtioNetHdr::decode(&h.encode()).unwrap(), h);
        }

        #[test]
        fn decode_is_total_and_reencodes_exactly(raw in any::<[u8; 12]>()) {
            if let Ok(h) = VirtioNetHdr::decode(&raw) {
                prop_assert_eq!(h.encode(), raw);
            }
        }
    }
}
