//! Offload metadata between the kernel's virtio-net header (TAP `IFF_VNET_HDR`,
//! AF_PACKET `PACKET_VNET_HDR`) and the switch's [`FrameMeta`].
//!
//! The header carries GSO type/size and "checksum partial"; the netif ring carries GSO
//! type/size and `csum_blank`, without checksum offsets. So the offsets are never
//! stored: when a frame leaves towards the kernel they are derived from the parsed
//! headers (`csum_start` = L4 offset, `csum_offset` = 16 for TCP, 6 for UDP), exactly
//! as Linux netback's `checksum_setup` does for frames coming off the ring.

use netcfg::tap::{GsoType, VirtioNetHdr};

use crate::meta::{FrameMeta, Gso, GsoKind};
use crate::wire::info::L4Info;
use crate::wire::FrameInfo;

/// Reads a virtio-net header into frame metadata.
pub fn meta_from_vnet(h: &VirtioNetHdr) -> FrameMeta {
    let gso = match h.gso_type {
        GsoType::TcpV4 => Some(Gso {
            kind: GsoKind::TcpV4,
            size: h.gso_size,
        }),
        GsoType::TcpV6 => Some(Gso {
            kind: GsoKind::TcpV6,
            size: h.gso_size,
        }),
        GsoType::Udp => Some(Gso {
            kind: GsoKind::Udp,
            size: h.gso_size,
        }),
        GsoType::UdpL4 => Some(Gso {
            kind: GsoKind::UdpL4,
            size: h.gso_size,
        }),
        _ => None,
    };
    FrameMeta {
        gso: gso.filter(|g| g.size > 0),
        csum_partial: h.needs_csum,
        data_validated: h.data_valid,
    }
}

/// Builds the virtio-net header for a frame leaving towards the kernel. Returns `None`
/// when the metadata cannot be expressed (partial checksum on a protocol whose
/// checksum field we cannot locate); the caller then drops the frame (`invalid_gso`).
pub fn vnet_from_meta(meta: &FrameMeta, info: &FrameInfo) -> Option<VirtioNetHdr> {
    let mut h = VirtioNetHdr::plain();
    let (csum_offset, l4_len) = match info.l4 {
        L4Info::Tcp(t) => (16u16, u16::from(t.header_len)),
        L4Info::Udp { .. } => (6u16, 8u16),
        _ => (0, 0),
    };
    if meta.csum_partial {
        if csum_offset == 0 {
            return None;
        }
        h.needs_csum = true;
        h.csum_start = info.l4_offset;
        h.csum_offset = csum_offset;
    } else if meta.data_validated {
        h.data_valid = true;
    }
    if let Some(g) = meta.gso {
        if csum_offset == 0 {
            return None;
        }
        h.gso_type = match g.kind {
            GsoKind::TcpV4 => GsoType::TcpV4,
            GsoKind::TcpV6 => GsoType::TcpV6,
            GsoKind::Udp => GsoType::Udp,
            GsoKind::UdpL4 => GsoType::UdpL4,
        };
        h.gso_size = g.size;
        h.hdr_len = info.l4_offset + l4_len;
        // GSO always implies a partial checksum for the kernel.
        h.needs_csum = true;
        h.data_valid = false;
        h.csum_start = info.l4_offset;
        h.csum_offset = csum_offset;
    }
    Some(h)
}
