//! Xen's netif ring ABI (`xen/io/netif.h` + `xen/io/ring.h`, xen-networking.md §1, §9).
//!
//! Every record that crosses a ring is a `#[repr(C)]` struct whose size and field offsets
//! are asserted at compile time against the numbers the Xen 4.17 headers produce (and, in
//! `tests/abi_c.rs`, against a C program compiled with those headers). The structs are
//! *local copies*: they are never overlaid on guest memory. The ring code reads a slot's
//! bytes once into a private buffer and [`RingRecord::decode`]s them (XSA-155), and builds a
//! whole response, padding zeroed, before [`RingRecord::encode`] writes it (XSA-216). All
//! integers are little-endian.

use core::mem::{offset_of, size_of};

use hypervisor::grant::GrantRef;
use hypervisor::memory::PAGE_SIZE;

// ---- ring geometry (ring.h) ---------------------------------------------------------------

/// A free-running ring index (`RING_IDX`): never masked when stored, compared mod 2^32.
pub type RingIdx = u32;

/// The shared ring page header produced by `DEFINE_RING_TYPES` (`struct __name##_sring`
/// minus its `ring[]`): four indices, the `pvt` union and 44 bytes of padding (§1.1).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedRingHeader {
    /// Requests published by the frontend.
    pub req_prod: RingIdx,
    /// The backend's "wake me when `req_prod` passes this" index.
    pub req_event: RingIdx,
    /// Responses published by the backend.
    pub rsp_prod: RingIdx,
    /// The frontend's "wake me when `rsp_prod` passes this" index.
    pub rsp_event: RingIdx,
    /// The `pvt` union (`netif.smartpoll_active` / `pvt_pad[4]`); unused by netif, zeroed.
    pub pvt: [u8; 4],
    /// `__pad[44]`, zeroed.
    pub pad: [u8; 44],
}

/// Size of the shared ring header: entries start at this offset in the page.
pub const RING_HEADER_SIZE: usize = size_of::<SharedRingHeader>();
/// Byte offset of `req_prod` in the ring page.
pub const REQ_PROD_OFFSET: usize = offset_of!(SharedRingHeader, req_prod);
/// Byte offset of `req_event` in the ring page.
pub const REQ_EVENT_OFFSET: usize = offset_of!(SharedRingHeader, req_event);
/// Byte offset of `rsp_prod` in the ring page.
pub const RSP_PROD_OFFSET: usize = offset_of!(SharedRingHeader, rsp_prod);
/// Byte offset of `rsp_event` in the ring page.
pub const RSP_EVENT_OFFSET: usize = offset_of!(SharedRingHeader, rsp_event);

/// `__CONST_RING_SIZE` on a 4096-byte page: `(4096 − 64) / slot_size`, rounded down to a
/// power of two (`__RD32`), so indices can be masked with `nr_ents − 1`.
pub const fn ring_entries(slot_size: usize) -> u32 {
    if slot_size == 0 || slot_size > PAGE_SIZE - RING_HEADER_SIZE {
        return 0;
    }
    let raw = (PAGE_SIZE - RING_HEADER_SIZE) / slot_size;
    let top_bit = usize::BITS - 1 - raw.leading_zeros();
    1u32 << top_bit
}

/// Largest slot of any netif ring (the control ring's 16 bytes): the size of the private
/// buffer a slot is copied into.
pub const MAX_SLOT_SIZE: usize = 16;

/// The private copy of one ring slot.
pub type SlotBytes = [u8; MAX_SLOT_SIZE];

/// A record that lives in a ring slot, with its explicit little-endian wire form.
pub trait RingRecord: Copy + Default + core::fmt::Debug + PartialEq {
    /// Bytes the record occupies at the start of its slot.
    const SIZE: usize;
    /// Reads the record from the first [`RingRecord::SIZE`] bytes of a private slot copy.
    fn decode(bytes: &SlotBytes) -> Self;
    /// Writes the record into the first [`RingRecord::SIZE`] bytes of `bytes`, leaving the
    /// rest untouched (the ring zeroes the whole slot buffer first).
    fn encode(&self, bytes: &mut SlotBytes);
}

/// One ring type made by `DEFINE_RING_TYPES(name, request, response)`: which records go
/// each way and how big a slot (the request/response union) is.
pub trait RingLayout {
    /// Frontend → backend record.
    type Request: RingRecord;
    /// Backend → frontend record.
    type Response: RingRecord;
    /// `sizeof(union name##_sring_entry)` = max(request, response).
    const SLOT_SIZE: usize;
    /// Entries in a one-page ring (`__CONST_RING_SIZE`).
    const NR_ENTS: u32 = ring_entries(Self::SLOT_SIZE);
    /// Short name for errors and logs ("tx", "rx", "ctrl").
    const NAME: &'static str;
}

const fn max(a: usize, b: usize) -> usize {
    if a > b {
        a
    } else {
        b
    }
}

#[inline]
fn le16(b: &SlotBytes, at: usize) -> u16 {
    match b.get(at..at + 2) {
        Some(&[x, y]) => u16::from_le_bytes([x, y]),
        _ => 0,
    }
}

#[inline]
fn le32(b: &SlotBytes, at: usize) -> u32 {
    match b.get(at..at + 4) {
        Some(&[w, x, y, z]) => u32::from_le_bytes([w, x, y, z]),
        _ => 0,
    }
}

#[inline]
fn put(b: &mut SlotBytes, at: usize, v: &[u8]) {
    if let Some(dst) = b.get_mut(at..at + v.len()) {
        dst.copy_from_slice(v);
    }
}

// ---- transmit ring (§1.3) -----------------------------------------------------------------

/// `NETTXF_csum_blank`: the L4 checksum is not filled in (partial-checksum offload).
pub const NETTXF_CSUM_BLANK: u16 = 0x1;
/// `NETTXF_data_validated`: the packet's checksum has been verified.
pub const NETTXF_DATA_VALIDATED: u16 = 0x2;
/// `NETTXF_more_data`: another data slot of this packet follows.
pub const NETTXF_MORE_DATA: u16 = 0x4;
/// `NETTXF_extra_info`: extra-info slots follow this first slot.
pub const NETTXF_EXTRA_INFO: u16 = 0x8;
/// `XEN_NETIF_MAX_TX_SIZE`: the largest packet a tx request can describe (u16 size).
pub const XEN_NETIF_MAX_TX_SIZE: usize = 0xFFFF;
/// `XEN_NETIF_NR_SLOTS_MIN`: slots per packet every backend must accept.
pub const XEN_NETIF_NR_SLOTS_MIN: usize = 18;

/// `netif_tx_request_t` (12 bytes): one chunk of a packet the frontend sends.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TxRequest {
    /// Grant of the page holding this chunk.
    pub gref: GrantRef,
    /// Offset of the chunk in that page.
    pub offset: u16,
    /// `NETTXF_*`.
    pub flags: u16,
    /// Frontend-chosen id, echoed in the response.
    pub id: u16,
    /// First slot: the whole packet's length; later slots: this chunk's length.
    pub size: u16,
}

/// `netif_tx_response_t` (4 bytes, in a 12-byte slot).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TxResponse {
    /// The request's id.
    pub id: u16,
    /// `NETIF_RSP_*`.
    pub status: i16,
}

impl RingRecord for TxRequest {
    const SIZE: usize = size_of::<TxRequest>();
    #[inline]
    fn decode(b: &SlotBytes) -> Self {
        TxRequest {
            gref: le32(b, offset_of!(TxRequest, gref)),
            offset: le16(b, offset_of!(TxRequest, offset)),
            flags: le16(b, offset_of!(TxRequest, flags)),
            id: le16(b, offset_of!(TxRequest, id)),
            size: le16(b, offset_of!(TxRequest, size)),
        }
    }
    #[inline]
    fn encode(&self, b: &mut SlotBytes) {
        put(b, offset_of!(TxRequest, gref), &self.gref.to_le_bytes());
        put(b, offset_of!(TxRequest, offset), &self.offset.to_le_bytes());
        put(b, offset_of!(TxRequest, flags), &self.flags.to_le_bytes());
        put(b, offset_of!(TxRequest, id), &self.id.to_le_bytes());
        put(b, offset_of!(TxRequest, size), &self.size.to_le_bytes());
    }
}

impl RingRecord for TxResponse {
    const SIZE: usize = size_of::<TxResponse>();
    #[inline]
    fn decode(b: &SlotBytes) -> Self {
        TxResponse {
            id: le16(b, offset_of!(TxResponse, id)),
            status: le16(b, offset_of!(TxResponse, status)) as i16,
        }
    }
    #[inline]
    fn encode(&self, b: &mut SlotBytes) {
        put(b, offset_of!(TxResponse, id), &self.id.to_le_bytes());
        put(
            b,
            offset_of!(TxResponse, status),
            &self.status.to_le_bytes(),
        );
    }
}

impl TxRequest {
    /// True if every bit of `flag` is set.
    #[inline]
    pub fn has(&self, flag: u16) -> bool {
        self.flags & flag == flag
    }
}

/// The netif transmit ring (`DEFINE_RING_TYPES(netif_tx, …)`): 12-byte slots, 256 entries.
#[derive(Debug, Clone, Copy)]
pub struct NetifTx;

impl RingLayout for NetifTx {
    type Request = TxRequest;
    type Response = TxResponse;
    const SLOT_SIZE: usize = max(size_of::<TxRequest>(), size_of::<TxResponse>());
    const NAME: &'static str = "tx";
}

// ---- receive ring (§1.4) ------------------------------------------------------------------

/// `NETRXF_data_validated` (bit 0 — swapped relative to NETTXF).
pub const NETRXF_DATA_VALIDATED: u16 = 0x1;
/// `NETRXF_csum_blank` (bit 1).
pub const NETRXF_CSUM_BLANK: u16 = 0x2;
/// `NETRXF_more_data`: another data slot of this packet follows.
pub const NETRXF_MORE_DATA: u16 = 0x4;
/// `NETRXF_extra_info`: extra-info slots follow the first data slot.
pub const NETRXF_EXTRA_INFO: u16 = 0x8;
/// `NETRXF_gso_prefix` (deprecated; never produced here).
pub const NETRXF_GSO_PREFIX: u16 = 0x10;

/// `netif_rx_request_t` (8 bytes): an empty page the frontend offers for one slot.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RxRequest {
    /// Echoed in the response (Linux netfront uses the slot index).
    pub id: u16,
    /// Padding, zero.
    pub pad: u16,
    /// Grant of the page, writable by the backend domain.
    pub gref: GrantRef,
}

/// `netif_rx_response_t` (8 bytes). Also the slot an rx extra-info record overlays.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RxResponse {
    /// The id of the request that was in this slot.
    pub id: u16,
    /// Where the data starts in the page.
    pub offset: u16,
    /// `NETRXF_*`.
    pub flags: u16,
    /// `< 0`: `NETIF_RSP_*` error (or a `GNTST_*` copy failure); `≥ 0`: bytes in this slot.
    pub status: i16,
}

impl RingRecord for RxRequest {
    const SIZE: usize = size_of::<RxRequest>();
    #[inline]
    fn decode(b: &SlotBytes) -> Self {
        RxRequest {
            id: le16(b, offset_of!(RxRequest, id)),
            pad: le16(b, offset_of!(RxRequest, pad)),
            gref: le32(b, offset_of!(RxRequest, gref)),
        }
    }
    #[inline]
    fn encode(&self, b: &mut SlotBytes) {
        put(b, offset_of!(RxRequest, id), &self.id.to_le_bytes());
        put(b, offset_of!(RxRequest, pad), &self.pad.to_le_bytes());
        put(b, offset_of!(RxRequest, gref), &self.gref.to_le_bytes());
    }
}

impl RingRecord for RxResponse {
    const SIZE: usize = size_of::<RxResponse>();
    #[inline]
    fn decode(b: &SlotBytes) -> Self {
        RxResponse {
            id: le16(b, offset_of!(RxResponse, id)),
            offset: le16(b, offset_of!(RxResponse, offset)),
            flags: le16(b, offset_of!(RxResponse, flags)),
            status: le16(b, offset_of!(RxResponse, status)) as i16,
        }
    }
    #[inline]
    fn encode(&self, b: &mut SlotBytes) {
        put(b, offset_of!(RxResponse, id), &self.id.to_le_bytes());
        put(
            b,
            offset_of!(RxResponse, offset),
            &self.offset.to_le_bytes(),
        );
        put(b, offset_of!(RxResponse, flags), &self.flags.to_le_bytes());
        put(
            b,
            offset_of!(RxResponse, status),
            &self.status.to_le_bytes(),
        );
    }
}

impl RxResponse {
    /// True if every bit of `flag` is set.
    #[inline]
    pub fn has(&self, flag: u16) -> bool {
        self.flags & flag == flag
    }
}

/// The netif receive ring (`DEFINE_RING_TYPES(netif_rx, …)`): 8-byte slots, 256 entries.
#[derive(Debug, Clone, Copy)]
pub struct NetifRx;

impl RingLayout for NetifRx {
    type Request = RxRequest;
    type Response = RxResponse;
    const SLOT_SIZE: usize = max(size_of::<RxRequest>(), size_of::<RxResponse>());
    const NAME: &'static str = "rx";
}

// ---- status codes (§1.6) ------------------------------------------------------------------

/// `NETIF_RSP_DROPPED`.
pub const NETIF_RSP_DROPPED: i16 = -2;
/// `NETIF_RSP_ERROR`.
pub const NETIF_RSP_ERROR: i16 = -1;
/// `NETIF_RSP_OKAY`.
pub const NETIF_RSP_OKAY: i16 = 0;
/// `NETIF_RSP_NULL`: the response to an extra-info (auxiliary) slot.
pub const NETIF_RSP_NULL: i16 = 1;

// ---- extra info (§1.5) --------------------------------------------------------------------

/// `XEN_NETIF_EXTRA_TYPE_NONE`: never valid.
pub const XEN_NETIF_EXTRA_TYPE_NONE: u8 = 0;
/// `XEN_NETIF_EXTRA_TYPE_GSO`.
pub const XEN_NETIF_EXTRA_TYPE_GSO: u8 = 1;
/// `XEN_NETIF_EXTRA_TYPE_MCAST_ADD`.
pub const XEN_NETIF_EXTRA_TYPE_MCAST_ADD: u8 = 2;
/// `XEN_NETIF_EXTRA_TYPE_MCAST_DEL`.
pub const XEN_NETIF_EXTRA_TYPE_MCAST_DEL: u8 = 3;
/// `XEN_NETIF_EXTRA_TYPE_HASH`.
pub const XEN_NETIF_EXTRA_TYPE_HASH: u8 = 4;
/// `XEN_NETIF_EXTRA_TYPE_MAX` in Xen 4.17 (Linux's copy adds XDP = 5 and MAX = 6).
pub const XEN_NETIF_EXTRA_TYPE_MAX: u8 = 5;
/// `XEN_NETIF_EXTRA_FLAG_MORE`: another extra-info slot follows.
pub const XEN_NETIF_EXTRA_FLAG_MORE: u8 = 0x1;

/// `XEN_NETIF_GSO_TYPE_NONE`.
pub const XEN_NETIF_GSO_TYPE_NONE: u8 = 0;
/// `XEN_NETIF_GSO_TYPE_TCPV4`.
pub const XEN_NETIF_GSO_TYPE_TCPV4: u8 = 1;
/// `XEN_NETIF_GSO_TYPE_TCPV6`.
pub const XEN_NETIF_GSO_TYPE_TCPV6: u8 = 2;

/// `netif_extra_info_t` (8 bytes) in its raw form: a type, flags and a 6-byte union.
/// On the tx ring it overlays the first 8 bytes of a request slot, on the rx ring a whole
/// response slot.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExtraInfo {
    /// `XEN_NETIF_EXTRA_TYPE_*`.
    pub extra_type: u8,
    /// `XEN_NETIF_EXTRA_FLAG_*`.
    pub flags: u8,
    /// The union `u` (GSO / mcast / hash views; see [`Extra`]).
    pub payload: [u8; 6],
}

/// Layout of the GSO view of the union (`u.gso`), for the ABI asserts.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExtraGsoPayload {
    /// MSS.
    pub size: u16,
    /// `XEN_NETIF_GSO_TYPE_*`.
    pub gso_type: u8,
    /// Padding.
    pub pad: u8,
    /// No feature bits are defined; 0.
    pub features: u16,
}

/// Layout of the hash view of the union (`u.hash`), for the ABI asserts.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExtraHashPayload {
    /// A `_XEN_NETIF_CTRL_HASH_TYPE_*` bit number (0..3).
    pub hash_type: u8,
    /// `XEN_NETIF_CTRL_HASH_ALGORITHM_*`.
    pub algorithm: u8,
    /// The hash, least significant byte first.
    pub value: [u8; 4],
}

/// Offset of the union inside [`ExtraInfo`].
pub const EXTRA_PAYLOAD_OFFSET: usize = offset_of!(ExtraInfo, payload);

/// Segmentation offload kinds a GSO extra may name (§1.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GsoType {
    /// `XEN_NETIF_GSO_TYPE_TCPV4`.
    TcpV4,
    /// `XEN_NETIF_GSO_TYPE_TCPV6`.
    TcpV6,
}

impl GsoType {
    /// The wire value.
    #[inline]
    pub fn code(self) -> u8 {
        match self {
            GsoType::TcpV4 => XEN_NETIF_GSO_TYPE_TCPV4,
            GsoType::TcpV6 => XEN_NETIF_GSO_TYPE_TCPV6,
        }
    }

    /// The kind a wire value names; `None` for NONE and unknown values.
    #[inline]
    pub fn from_code(code: u8) -> Option<GsoType> {
        match code {
            XEN_NETIF_GSO_TYPE_TCPV4 => Some(GsoType::TcpV4),
            XEN_NETIF_GSO_TYPE_TCPV6 => Some(GsoType::TcpV6),
            _ => None,
        }
    }
}

/// A validated GSO request: the segmentation kind and the MSS (never 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GsoInfo {
    /// TCPv4 or TCPv6.
    pub gso_type: GsoType,
    /// Segment size (MSS), ≥ 1.
    pub size: u16,
}

/// A hash the sender computed (`XEN_NETIF_EXTRA_TYPE_HASH`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HashInfo {
    /// `_XEN_NETIF_CTRL_HASH_TYPE_*` bit number (0 IPv4, 1 IPv4+TCP, 2 IPv6, 3 IPv6+TCP).
    pub hash_type: u8,
    /// `XEN_NETIF_CTRL_HASH_ALGORITHM_*`.
    pub algorithm: u8,
    /// The 32-bit hash value.
    pub value: u32,
}

/// The decoded union of an [`ExtraInfo`], by type. Decoding does not validate values
/// (e.g. a GSO size of 0): that is the receiver's rule to apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extra {
    /// `u.gso`.
    Gso {
        /// MSS.
        size: u16,
        /// Raw `XEN_NETIF_GSO_TYPE_*`.
        gso_type: u8,
        /// Feature bits (none defined).
        features: u16,
    },
    /// `u.mcast` of a MCAST_ADD request.
    McastAdd([u8; 6]),
    /// `u.mcast` of a MCAST_DEL request.
    McastDel([u8; 6]),
    /// `u.hash`.
    Hash(HashInfo),
}

impl ExtraInfo {
    /// True if `XEN_NETIF_EXTRA_FLAG_MORE` is set.
    #[inline]
    pub fn has_more(&self) -> bool {
        self.flags & XEN_NETIF_EXTRA_FLAG_MORE != 0
    }

    /// Decodes the union by type; `None` for type 0 or ≥ `XEN_NETIF_EXTRA_TYPE_MAX`.
    #[inline]
    pub fn decode(&self) -> Option<Extra> {
        let p = self.payload;
        match self.extra_type {
            XEN_NETIF_EXTRA_TYPE_GSO => Some(Extra::Gso {
                size: u16::from_le_bytes([p[0], p[1]]),
                gso_type: p[2],
                features: u16::from_le_bytes([p[4], p[5]]),
            }),
            XEN_NETIF_EXTRA_TYPE_MCAST_ADD => Some(Extra::McastAdd(p)),
            XEN_NETIF_EXTRA_TYPE_MCAST_DEL => Some(Extra::McastDel(p)),
            XEN_NETIF_EXTRA_TYPE_HASH => Some(Extra::Hash(HashInfo {
                hash_type: p[0],
                algorithm: p[1],
                value: u32::from_le_bytes([p[2], p[3], p[4], p[5]]),
            })),
            _ => None,
        }
    }

    /// Encodes `extra` with the MORE flag set if `more`.
    #[inline]
    pub fn encode(extra: &Extra, more: bool) -> ExtraInfo {
        let (extra_type, payload) = match *extra {
            Extra::Gso {
                size,
                gso_type,
                features,
            } => {
                let s = size.to_le_bytes();
                let f = features.to_le_bytes();
                (
                    XEN_NETIF_EXTRA_TYPE_GSO,
                    [s[0], s[1], gso_type, 0, f[0], f[1]],
                )
            }
            Extra::McastAdd(a) => (XEN_NETIF_EXTRA_TYPE_MCAST_ADD, a),
            Extra::McastDel(a) => (XEN_NETIF_EXTRA_TYPE_MCAST_DEL, a),
            Extra::Hash(h) => {
                let v = h.value.to_le_bytes();
                (
                    XEN_NETIF_EXTRA_TYPE_HASH,
                    [h.hash_type, h.algorithm, v[0], v[1], v[2], v[3]],
                )
            }
        };
        ExtraInfo {
            extra_type,
            flags: if more { XEN_NETIF_EXTRA_FLAG_MORE } else { 0 },
            payload,
        }
    }

    /// The GSO extra for `gso` (features 0).
    #[inline]
    pub fn gso(gso: GsoInfo, more: bool) -> ExtraInfo {
        ExtraInfo::encode(
            &Extra::Gso {
                size: gso.size,
                gso_type: gso.gso_type.code(),
                features: 0,
            },
            more,
        )
    }

    #[inline]
    fn to_bytes(self) -> [u8; 8] {
        let p = self.payload;
        [
            self.extra_type,
            self.flags,
            p[0],
            p[1],
            p[2],
            p[3],
            p[4],
            p[5],
        ]
    }

    #[inline]
    fn from_bytes(b: [u8; 8]) -> ExtraInfo {
        ExtraInfo {
            extra_type: b[0],
            flags: b[1],
            payload: [b[2], b[3], b[4], b[5], b[6], b[7]],
        }
    }

    /// Reinterprets a tx request slot as the extra-info record it overlays (its first 8
    /// bytes), exactly as a C union read of the same slot would.
    #[inline]
    pub fn from_tx_request(req: &TxRequest) -> ExtraInfo {
        let mut b = SlotBytes::default();
        req.encode(&mut b);
        ExtraInfo::from_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
    }

    /// The tx request slot that carries this extra (bytes 8..11 zero).
    #[inline]
    pub fn to_tx_request(self) -> TxRequest {
        let mut b = SlotBytes::default();
        put(&mut b, 0, &self.to_bytes());
        TxRequest::decode(&b)
    }

    /// Reinterprets an rx response slot as the extra-info record it overlays.
    #[inline]
    pub fn from_rx_response(rsp: &RxResponse) -> ExtraInfo {
        let mut b = SlotBytes::default();
        rsp.encode(&mut b);
        ExtraInfo::from_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
    }

    /// The rx response slot that carries this extra.
    #[inline]
    pub fn to_rx_response(self) -> RxResponse {
        let mut b = SlotBytes::default();
        put(&mut b, 0, &self.to_bytes());
        RxResponse::decode(&b)
    }
}

/// What the sender says about a packet's L4 checksum, carried by the csum flags of the
/// first data slot (§1.3, §1.4). The tx and rx flag bits differ; this is the meaning.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum ChecksumState {
    /// Nothing claimed: the receiver must verify the checksum itself.
    #[default]
    Unknown,
    /// Partial-checksum offload: the checksum field is blank and must be filled in
    /// (tx `csum_blank`; rx `csum_blank | data_validated`, Linux `CHECKSUM_PARTIAL`).
    Partial,
    /// Already verified (`data_validated`, Linux `CHECKSUM_UNNECESSARY`).
    Validated,
}

impl ChecksumState {
    /// From NETTXF flags: `csum_blank` wins over `data_validated` (netback's order).
    #[inline]
    pub fn from_tx_flags(flags: u16) -> ChecksumState {
        if flags & NETTXF_CSUM_BLANK != 0 {
            ChecksumState::Partial
        } else if flags & NETTXF_DATA_VALIDATED != 0 {
            ChecksumState::Validated
        } else {
            ChecksumState::Unknown
        }
    }

    /// The NETTXF flags a frontend sets for this state.
    #[inline]
    pub fn tx_flags(self) -> u16 {
        match self {
            ChecksumState::Unknown => 0,
            ChecksumState::Partial => NETTXF_CSUM_BLANK | NETTXF_DATA_VALIDATED,
            ChecksumState::Validated => NETTXF_DATA_VALIDATED,
        }
    }

    /// From NETRXF flags: `csum_blank` means partial (netfront's order).
    #[inline]
    pub fn from_rx_flags(flags: u16) -> ChecksumState {
        if flags & NETRXF_CSUM_BLANK != 0 {
            ChecksumState::Partial
        } else if flags & NETRXF_DATA_VALIDATED != 0 {
            ChecksumState::Validated
        } else {
            ChecksumState::Unknown
        }
    }

    /// The NETRXF flags Linux netback puts on the first data slot for this state.
    #[inline]
    pub fn rx_flags(self) -> u16 {
        match self {
            ChecksumState::Unknown => 0,
            ChecksumState::Partial => NETRXF_CSUM_BLANK | NETRXF_DATA_VALIDATED,
            ChecksumState::Validated => NETRXF_DATA_VALIDATED,
        }
    }
}

// ---- control ring (§1.11) -----------------------------------------------------------------

/// `XEN_NETIF_CTRL_TYPE_INVALID`.
pub const XEN_NETIF_CTRL_TYPE_INVALID: u16 = 0;
/// `XEN_NETIF_CTRL_TYPE_GET_HASH_FLAGS`.
pub const XEN_NETIF_CTRL_TYPE_GET_HASH_FLAGS: u16 = 1;
/// `XEN_NETIF_CTRL_TYPE_SET_HASH_FLAGS`.
pub const XEN_NETIF_CTRL_TYPE_SET_HASH_FLAGS: u16 = 2;
/// `XEN_NETIF_CTRL_TYPE_SET_HASH_KEY` (data0 = gref of the key, data1 = length).
pub const XEN_NETIF_CTRL_TYPE_SET_HASH_KEY: u16 = 3;
/// `XEN_NETIF_CTRL_TYPE_GET_HASH_MAPPING_SIZE`.
pub const XEN_NETIF_CTRL_TYPE_GET_HASH_MAPPING_SIZE: u16 = 4;
/// `XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING_SIZE`.
pub const XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING_SIZE: u16 = 5;
/// `XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING` (gref, entries, offset).
pub const XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING: u16 = 6;
/// `XEN_NETIF_CTRL_TYPE_SET_HASH_ALGORITHM`.
pub const XEN_NETIF_CTRL_TYPE_SET_HASH_ALGORITHM: u16 = 7;
/// `XEN_NETIF_CTRL_TYPE_GET_GREF_MAPPING_SIZE`.
pub const XEN_NETIF_CTRL_TYPE_GET_GREF_MAPPING_SIZE: u16 = 8;
/// `XEN_NETIF_CTRL_TYPE_ADD_GREF_MAPPING`.
pub const XEN_NETIF_CTRL_TYPE_ADD_GREF_MAPPING: u16 = 9;
/// `XEN_NETIF_CTRL_TYPE_DEL_GREF_MAPPING`.
pub const XEN_NETIF_CTRL_TYPE_DEL_GREF_MAPPING: u16 = 10;

/// `XEN_NETIF_CTRL_STATUS_SUCCESS`.
pub const XEN_NETIF_CTRL_STATUS_SUCCESS: u32 = 0;
/// `XEN_NETIF_CTRL_STATUS_NOT_SUPPORTED`.
pub const XEN_NETIF_CTRL_STATUS_NOT_SUPPORTED: u32 = 1;
/// `XEN_NETIF_CTRL_STATUS_INVALID_PARAMETER`.
pub const XEN_NETIF_CTRL_STATUS_INVALID_PARAMETER: u32 = 2;
/// `XEN_NETIF_CTRL_STATUS_BUFFER_OVERFLOW`.
pub const XEN_NETIF_CTRL_STATUS_BUFFER_OVERFLOW: u32 = 3;

/// `XEN_NETIF_CTRL_HASH_ALGORITHM_NONE`.
pub const XEN_NETIF_CTRL_HASH_ALGORITHM_NONE: u32 = 0;
/// `XEN_NETIF_CTRL_HASH_ALGORITHM_TOEPLITZ`.
pub const XEN_NETIF_CTRL_HASH_ALGORITHM_TOEPLITZ: u32 = 1;
/// `XEN_NETIF_CTRL_HASH_TYPE_IPV4` (bit 0): over source + destination address.
pub const XEN_NETIF_CTRL_HASH_TYPE_IPV4: u32 = 1 << 0;
/// `XEN_NETIF_CTRL_HASH_TYPE_IPV4_TCP` (bit 1): addresses + ports.
pub const XEN_NETIF_CTRL_HASH_TYPE_IPV4_TCP: u32 = 1 << 1;
/// `XEN_NETIF_CTRL_HASH_TYPE_IPV6` (bit 2).
pub const XEN_NETIF_CTRL_HASH_TYPE_IPV6: u32 = 1 << 2;
/// `XEN_NETIF_CTRL_HASH_TYPE_IPV6_TCP` (bit 3).
pub const XEN_NETIF_CTRL_HASH_TYPE_IPV6_TCP: u32 = 1 << 3;
/// `XEN_NETIF_CTRLF_GREF_readonly` in [`NetifGref::flags`].
pub const XEN_NETIF_CTRLF_GREF_READONLY: u16 = 0x1;

/// `struct xen_netif_ctrl_request` (16 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CtrlRequest {
    /// Echoed in the response.
    pub id: u16,
    /// `XEN_NETIF_CTRL_TYPE_*`.
    pub ctrl_type: u16,
    /// Type-specific arguments.
    pub data: [u32; 3],
}

/// `struct xen_netif_ctrl_response` (12 bytes, in a 16-byte slot).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CtrlResponse {
    /// The request's id.
    pub id: u16,
    /// The request's type.
    pub ctrl_type: u16,
    /// `XEN_NETIF_CTRL_STATUS_*`.
    pub status: u32,
    /// Type-specific result.
    pub data: u32,
}

impl RingRecord for CtrlRequest {
    const SIZE: usize = size_of::<CtrlRequest>();
    #[inline]
    fn decode(b: &SlotBytes) -> Self {
        let d = offset_of!(CtrlRequest, data);
        CtrlRequest {
            id: le16(b, offset_of!(CtrlRequest, id)),
            ctrl_type: le16(b, offset_of!(CtrlRequest, ctrl_type)),
            data: [le32(b, d), le32(b, d + 4), le32(b, d + 8)],
        }
    }
    #[inline]
    fn encode(&self, b: &mut SlotBytes) {
        let d = offset_of!(CtrlRequest, data);
        put(b, offset_of!(CtrlRequest, id), &self.id.to_le_bytes());
        put(
            b,
            offset_of!(CtrlRequest, ctrl_type),
            &self.ctrl_type.to_le_bytes(),
        );
        for (i, v) in self.data.iter().enumerate() {
            put(b, d + 4 * i, &v.to_le_bytes());
        }
    }
}

impl RingRecord for CtrlResponse {
    const SIZE: usize = size_of::<CtrlResponse>();
    #[inline]
    fn decode(b: &SlotBytes) -> Self {
        CtrlResponse {
            id: le16(b, offset_of!(CtrlResponse, id)),
            ctrl_type: le16(b, offset_of!(CtrlResponse, ctrl_type)),
            status: le32(b, offset_of!(CtrlResponse, status)),
            data: le32(b, offset_of!(CtrlResponse, data)),
        }
    }
    #[inline]
    fn encode(&self, b: &mut SlotBytes) {
        put(b, offset_of!(CtrlResponse, id), &self.id.to_le_bytes());
        put(
            b,
            offset_of!(CtrlResponse, ctrl_type),
            &self.ctrl_type.to_le_bytes(),
        );
        put(
            b,
            offset_of!(CtrlResponse, status),
            &self.status.to_le_bytes(),
        );
        put(b, offset_of!(CtrlResponse, data), &self.data.to_le_bytes());
    }
}

/// The netif control ring (`DEFINE_RING_TYPES(xen_netif_ctrl, …)`): 16-byte slots, 128
/// entries.
#[derive(Debug, Clone, Copy)]
pub struct NetifCtrl;

impl RingLayout for NetifCtrl {
    type Request = CtrlRequest;
    type Response = CtrlResponse;
    const SLOT_SIZE: usize = max(size_of::<CtrlRequest>(), size_of::<CtrlResponse>());
    const NAME: &'static str = "ctrl";
}

/// `struct xen_netif_gref` (8 bytes): one entry of an ADD/DEL_GREF_MAPPING table.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetifGref {
    /// The grant reference.
    pub gref: GrantRef,
    /// `XEN_NETIF_CTRLF_GREF_*`.
    pub flags: u16,
    /// `XEN_NETIF_CTRL_STATUS_*` (output).
    pub status: u16,
}

impl NetifGref {
    /// Size on the wire.
    pub const SIZE: usize = size_of::<NetifGref>();

    /// Decodes an entry from its 8 wire bytes.
    pub fn decode(b: [u8; 8]) -> NetifGref {
        NetifGref {
            gref: u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            flags: u16::from_le_bytes([b[4], b[5]]),
            status: u16::from_le_bytes([b[6], b[7]]),
        }
    }

    /// Encodes the entry into its 8 wire bytes.
    pub fn encode(&self) -> [u8; 8] {
        let g = self.gref.to_le_bytes();
        let f = self.flags.to_le_bytes();
        let s = self.status.to_le_bytes();
        [g[0], g[1], g[2], g[3], f[0], f[1], s[0], s[1]]
    }
}

// ---- ring sizes ----------------------------------------------------------------------------

/// Entries of the tx ring (`NET_TX_RING_SIZE`).
pub const NET_TX_RING_SIZE: u32 = NetifTx::NR_ENTS;
/// Entries of the rx ring (`NET_RX_RING_SIZE`).
pub const NET_RX_RING_SIZE: u32 = NetifRx::NR_ENTS;
/// Entries of the control ring.
pub const NET_CTRL_RING_SIZE: u32 = NetifCtrl::NR_ENTS;

// ---- compile-time layout asserts (§9) ----------------------------------------------------

const _: () = {
    assert!(size_of::<SharedRingHeader>() == 64);
    assert!(offset_of!(SharedRingHeader, req_prod) == 0);
    assert!(offset_of!(SharedRingHeader, req_event) == 4);
    assert!(offset_of!(SharedRingHeader, rsp_prod) == 8);
    assert!(offset_of!(SharedRingHeader, rsp_event) == 12);
    assert!(offset_of!(SharedRingHeader, pvt) == 16);
    assert!(offset_of!(SharedRingHeader, pad) == 20);

    assert!(size_of::<TxRequest>() == 12);
    assert!(offset_of!(TxRequest, gref) == 0);
    assert!(offset_of!(TxRequest, offset) == 4);
    assert!(offset_of!(TxRequest, flags) == 6);
    assert!(offset_of!(TxRequest, id) == 8);
    assert!(offset_of!(TxRequest, size) == 10);
    assert!(size_of::<TxResponse>() == 4);
    assert!(offset_of!(TxResponse, id) == 0);
    assert!(offset_of!(TxResponse, status) == 2);
    assert!(NetifTx::SLOT_SIZE == 12);

    assert!(size_of::<RxRequest>() == 8);
    assert!(offset_of!(RxRequest, id) == 0);
    assert!(offset_of!(RxRequest, pad) == 2);
    assert!(offset_of!(RxRequest, gref) == 4);
    assert!(size_of::<RxResponse>() == 8);
    assert!(offset_of!(RxResponse, id) == 0);
    assert!(offset_of!(RxResponse, offset) == 2);
    assert!(offset_of!(RxResponse, flags) == 4);
    assert!(offset_of!(RxResponse, status) == 6);
    assert!(NetifRx::SLOT_SIZE == 8);

    assert!(size_of::<ExtraInfo>() == 8);
    assert!(offset_of!(ExtraInfo, extra_type) == 0);
    assert!(offset_of!(ExtraInfo, flags) == 1);
    assert!(offset_of!(ExtraInfo, payload) == 2);
    assert!(size_of::<ExtraGsoPayload>() == 6);
    assert!(offset_of!(ExtraGsoPayload, size) == 0);
    assert!(offset_of!(ExtraGsoPayload, gso_type) == 2);
    assert!(offset_of!(ExtraGsoPayload, pad) == 3);
    assert!(offset_of!(ExtraGsoPayload, features) == 4);
    assert!(size_of::<ExtraHashPayload>() == 6);
    assert!(offset_of!(ExtraHashPayload, hash_type) == 0);
    assert!(offset_of!(ExtraHashPayload, algorithm) == 1);
    assert!(offset_of!(ExtraHashPayload, value) == 2);
    // An extra must fit in both a tx request slot and an rx response slot.
    assert!(size_of::<ExtraInfo>() <= NetifTx::SLOT_SIZE);
    assert!(size_of::<ExtraInfo>() <= NetifRx::SLOT_SIZE);

    assert!(size_of::<CtrlRequest>() == 16);
    assert!(offset_of!(CtrlRequest, id) == 0);
    assert!(offset_of!(CtrlRequest, ctrl_type) == 2);
    assert!(offset_of!(CtrlRequest, data) == 4);
    assert!(size_of::<CtrlResponse>() == 12);
    assert!(offset_of!(CtrlResponse, id) == 0);
    assert!(offset_of!(CtrlResponse, ctrl_type) == 2);
    assert!(offset_of!(CtrlResponse, status) == 4);
    assert!(offset_of!(CtrlResponse, data) == 8);
    assert!(NetifCtrl::SLOT_SIZE == 16);
    assert!(size_of::<NetifGref>() == 8);
    assert!(offset_of!(NetifGref, gref) == 0);
    assert!(offset_of!(NetifGref, flags) == 4);
    assert!(offset_of!(NetifGref, status) == 6);

    assert!(MAX_SLOT_SIZE >= NetifTx::SLOT_SIZE);
    assert!(MAX_SLOT_SIZE >= NetifRx::SLOT_SIZE);
    assert!(MAX_SLOT_SIZE >= NetifCtrl::SLOT_SIZE);

    assert!(NET_TX_RING_SIZE == 256);
    assert!(NET_RX_RING_SIZE == 256);
    assert!(NET_CTRL_RING_SIZE == 128);
};

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn bytes_of<R: RingRecord>(r: &R) -> SlotBytes {
        let mut b = SlotBytes::default();
        r.encode(&mut b);
        b
    }

    #[test]
    fn ring_entries_round_down_to_power_of_two() {
        assert_eq!(ring_entries(12), 256); // 336 fit
        assert_eq!(ring_entries(8), 256); // 504 fit
        assert_eq!(ring_entries(16), 128); // 252 fit
        assert_eq!(ring_entries(4), 512); // 1008 fit
        assert_eq!(ring_entries(4032), 1);
        assert_eq!(ring_entries(4033), 0);
        assert_eq!(ring_entries(0), 0);
    }

    #[test]
    fn tx_request_wire_form_is_little_endian_at_header_offsets() {
        let r = TxRequest {
            gref: 0x0403_0201,
            offset: 0x0605,
            flags: 0x0807,
            id: 0x0a09,
            size: 0x0c0b,
        };
        let b = bytes_of(&r);
        assert_eq!(&b[..12], &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
        assert_eq!(&b[12..], &[0; 4], "encode writes only SIZE bytes");
        assert_eq!(TxRequest::decode(&b), r);
    }

    #[test]
    fn responses_encode_signed_status() {
        let b = bytes_of(&TxResponse {
            id: 0x1234,
            status: NETIF_RSP_DROPPED,
        });
        assert_eq!(&b[..4], &[0x34, 0x12, 0xfe, 0xff]);
        let rsp = RxResponse {
            id: 1,
            offset: 2,
            flags: NETRXF_MORE_DATA,
            status: -3,
        };
        let b = bytes_of(&rsp);
        assert_eq!(&b[..8], &[1, 0, 2, 0, 4, 0, 0xfd, 0xff]);
        assert_eq!(RxResponse::decode(&b), rsp);
    }

    #[test]
    fn rx_request_and_ctrl_records_round_trip() {
        let r = RxRequest {
            id: 7,
            pad: 0,
            gref: 0xdead_beef,
        };
        assert_eq!(&bytes_of(&r)[..8], &[7, 0, 0, 0, 0xef, 0xbe, 0xad, 0xde]);
        let c = CtrlRequest {
            id: 1,
            ctrl_type: XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING,
            data: [10, 20, 30],
        };
        let b = bytes_of(&c);
        assert_eq!(&b[4..8], &[10, 0, 0, 0]);
        assert_eq!(&b[12..16], &[30, 0, 0, 0]);
        assert_eq!(CtrlRequest::decode(&b), c);
        let c = CtrlResponse {
            id: 1,
            ctrl_type: 2,
            status: XEN_NETIF_CTRL_STATUS_BUFFER_OVERFLOW,
            data: 0x0102_0304,
        };
        let b = bytes_of(&c);
        assert_eq!(&b[8..12], &[4, 3, 2, 1]);
        assert_eq!(&b[12..], &[0; 4]);
        assert_eq!(CtrlResponse::decode(&b), c);
        let g = NetifGref {
            gref: 9,
            flags: XEN_NETIF_CTRLF_GREF_READONLY,
            status: 2,
        };
        assert_eq!(g.encode(), [9, 0, 0, 0, 1, 0, 2, 0]);
        assert_eq!(NetifGref::decode(g.encode()), g);
    }

    #[test]
    fn extra_union_views_decode_at_header_offsets() {
        // GSO: size u16 @2, type u8 @4, pad @5, features u16 @6 (offsets from struct start).
        let gso = ExtraInfo::gso(
            GsoInfo {
                gso_type: GsoType::TcpV6,
                size: 1448,
            },
            true,
        );
        let req = gso.to_tx_request();
        let b = bytes_of(&req);
        assert_eq!(b[0], XEN_NETIF_EXTRA_TYPE_GSO);
        assert_eq!(b[1], XEN_NETIF_EXTRA_FLAG_MORE);
        assert_eq!(u16::from_le_bytes([b[2], b[3]]), 1448);
        assert_eq!(b[4], XEN_NETIF_GSO_TYPE_TCPV6);
        assert_eq!(&b[8..12], &[0; 4], "tx slot bytes past the extra are zero");
        assert_eq!(ExtraInfo::from_tx_request(&req), gso);
        assert!(gso.has_more());
        assert_eq!(
            gso.decode(),
            Some(Extra::Gso {
                size: 1448,
                gso_type: 2,
                features: 0
            })
        );

        let hash = ExtraInfo::encode(
            &Extra::Hash(HashInfo {
                hash_type: 1,
                algorithm: 1,
                value: 0x1122_3344,
            }),
            false,
        );
        let rsp = hash.to_rx_response();
        let b = bytes_of(&rsp);
        assert_eq!(&b[..8], &[4, 0, 1, 1, 0x44, 0x33, 0x22, 0x11]);
        assert_eq!(ExtraInfo::from_rx_response(&rsp), hash);

        let mac = [0x01, 0x00, 0x5e, 0, 0, 1];
        let add = ExtraInfo::encode(&Extra::McastAdd(mac), false);
        assert_eq!(add.extra_type, XEN_NETIF_EXTRA_TYPE_MCAST_ADD);
        assert_eq!(add.payload, mac);
        assert_eq!(add.decode(), Some(Extra::McastAdd(mac)));
        let del = ExtraInfo::encode(&Extra::McastDel(mac), false);
        assert_eq!(del.decode(), Some(Extra::McastDel(mac)));

        for bad in [0u8, 5, 6, 255] {
            let e = ExtraInfo {
                extra_type: bad,
                ..ExtraInfo::default()
            };
            assert_eq!(e.decode(), None);
        }
    }

    #[test]
    fn checksum_flags_follow_the_swapped_bits() {
        use ChecksumState::*;
        assert_eq!(ChecksumState::from_tx_flags(NETTXF_CSUM_BLANK), Partial);
        assert_eq!(
            ChecksumState::from_tx_flags(NETTXF_CSUM_BLANK | NETTXF_DATA_VALIDATED),
            Partial
        );
        assert_eq!(
            ChecksumState::from_tx_flags(NETTXF_DATA_VALIDATED),
            Validated
        );
        assert_eq!(ChecksumState::from_tx_flags(NETTXF_MORE_DATA), Unknown);
        assert_eq!(Partial.rx_flags(), 0x3);
        assert_eq!(Validated.rx_flags(), 0x1);
        assert_eq!(ChecksumState::from_rx_flags(0x1), Validated);
        assert_eq!(ChecksumState::from_rx_flags(0x2), Partial);
        assert_eq!(ChecksumState::from_rx_flags(0x4), Unknown);
        for st in [Unknown, Partial, Validated] {
            assert_eq!(ChecksumState::from_tx_flags(st.tx_flags()), st);
            assert_eq!(ChecksumState::from_rx_flags(st.rx_flags()), st);
        }
    }

    #[test]
    fn gso_type_codes() {
        assert_eq!(GsoType::from_code(1), Some(GsoType::TcpV4));
        assert_eq!(GsoType::from_code(2), Some(GsoType::TcpV6));
        assert_eq!(GsoType::from_code(0), None);
        assert_eq!(GsoType::from_code(3), None);
        assert_eq!(GsoType::TcpV4.code(), XEN_NETIF_GSO_TYPE_TCPV4);
    }

    proptest! {
        #[test]
        fn tx_request_round_trips(gref: u32, offset: u16, flags: u16, id: u16, size: u16) {
            let r = TxRequest { gref, offset, flags, id, size };
            prop_assert_eq!(TxRequest::decode(&bytes_of(&r)), r);
        }

        #[test]
        fn any_tx_slot_bytes_survive_the_extra_overlay(raw in any::<[u8; 8]>()) {
            // Reading a slot as a request and reinterpreting it as an extra must equal a
            // direct union read of the same bytes (the netback extras path).
            let mut b = SlotBytes::default();
            b[..8].copy_from_slice(&raw);
            let req = TxRequest::decode(&b);
            let e = ExtraInfo::from_tx_request(&req);
            prop_assert_eq!(e.extra_type, raw[0]);
            prop_assert_eq!(e.flags, raw[1]);
            prop_assert_eq!(&e.payload[..], &raw[2..8]);
            let rsp = RxResponse::decode(&b);
            prop_assert_eq!(ExtraInfo::from_rx_response(&rsp), e);
            prop_assert_eq!(ExtraInfo::from_rx_response(&e.to_rx_response()), e);
        }
    }
}
