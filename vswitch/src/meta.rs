//! Offload metadata that travels with a frame from netback or a TAP's `virtio_net_hdr`.
//!
//! A GSO frame is one large TCP/UDP packet that the egress side (or the receiving guest)
//! segments; its size limit is per segment, not per frame (Linux
//! `skb_gso_validate_network_len`). Checksum flags say whether the L4 checksum is still to
//! be filled in (`csum_partial`: netif `NETTXF_csum_blank`, `VIRTIO_NET_HDR_F_NEEDS_CSUM`) or
//! already verified (`data_validated`: `NETTXF_data_validated`,
//! `VIRTIO_NET_HDR_F_DATA_VALID`).

/// GSO type (netif `XEN_NETIF_GSO_TYPE_*`, virtio `VIRTIO_NET_HDR_GSO_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GsoKind {
    /// TCP over IPv4 (netif type 1, virtio TCPV4).
    TcpV4,
    /// TCP over IPv6 (netif type 2, virtio TCPV6).
    TcpV6,
    /// UDP fragmentation offload (virtio UDP, legacy UFO).
    Udp,
    /// UDP segmentation offload (virtio UDP_L4, USO).
    UdpL4,
}

/// Segmentation offload request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Gso {
    /// The kind of segmentation.
    pub kind: GsoKind,
    /// Payload bytes per segment (the MSS for TCP); never 0 on a valid frame.
    pub size: u16,
}

/// Per-frame offload metadata. The default is a plain frame with a complete checksum.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FrameMeta {
    /// Set for a GSO super-frame.
    pub gso: Option<Gso>,
    /// The L4 checksum is partial and must be completed before the frame leaves to a
    /// peer that cannot offload it.
    pub csum_partial: bool,
    /// The checksum was already verified upstream.
    pub data_validated: bool,
}
