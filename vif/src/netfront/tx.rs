//! Netfront transmit: frames to tx requests, and the ids awaiting responses (§1.3; Linux
//! `xennet_start_xmit`, `xennet_tx_buf_gc`).
//!
//! A frame of up to 65535 bytes lies in pages granted read-only to the backend. Its first
//! request names the first chunk and carries the *total* length; each further chunk gets
//! its own request with `more_data` on all but the last. A TSO frame gets a GSO extra
//! right after the first request (`extra_info` on the first). Partial checksums set
//! `csum_blank | data_validated`, verified ones `data_validated`. At most 18 data slots
//! (`MAX_XEN_SKB_FRAGS + 1`) — what every backend must accept.

use hypervisor::grant::GrantRef;
use hypervisor::memory::PAGE_SIZE;

use crate::netif::{
    ChecksumState, ExtraInfo, GsoInfo, TxRequest, TxResponse, NETIF_RSP_NULL, NETTXF_EXTRA_INFO,
    NETTXF_MORE_DATA, NET_TX_RING_SIZE, XEN_NETIF_MAX_TX_SIZE, XEN_NETIF_NR_SLOTS_MIN,
};

/// Most data slots a frame may use.
pub const MAX_TX_DATA_SLOTS: usize = XEN_NETIF_NR_SLOTS_MIN;
/// Most requests one frame produces (data slots plus the GSO extra).
pub const MAX_TX_REQUESTS: usize = MAX_TX_DATA_SLOTS + 1;
/// The smallest frame (an Ethernet header); netback drops shorter first slots.
pub const MIN_TX_FRAME: usize = 14;

/// Where one piece of a frame lies: `len` bytes at `offset` in the page granted by `gref`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TxChunk {
    /// Grant of the page (read-only to the backend suffices).
    pub gref: GrantRef,
    /// Offset in the page.
    pub offset: u16,
    /// Bytes.
    pub len: u16,
}

/// What the frontend knows about a frame it is sending.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TxFrameMeta {
    /// Total length.
    pub len: usize,
    /// Segmentation offload (a TSO frame, from the vnet header).
    pub gso: Option<GsoInfo>,
    /// Checksum state (partial ⇒ `csum_blank`).
    pub checksum: ChecksumState,
}

/// Why a frame cannot be laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TxPlanError {
    /// Shorter than an Ethernet header or longer than 65535.
    #[error("frame of {0} bytes is outside 14..=65535")]
    BadLength(usize),
    /// The chunks need more than 18 data slots (Linux: "skb rides the rocket").
    #[error("frame needs {0} data slots, at most {MAX_TX_DATA_SLOTS} allowed")]
    TooManySlots(usize),
    /// Not enough pages (grefs) or ids were supplied.
    #[error("{0} more pages or ids needed")]
    Short(usize),
    /// The chunks do not add up to the frame length.
    #[error("chunks hold {chunks} bytes, frame is {frame}")]
    LengthMismatch {
        /// Σ chunk lengths.
        chunks: usize,
        /// The frame length.
        frame: usize,
    },
    /// A chunk is empty, crosses its page, or the first is shorter than 14 bytes.
    #[error("chunk {0} is empty, crosses its page or (first) is shorter than 14 bytes")]
    BadChunk(usize),
}

/// Splits a frame of `len` bytes stored contiguously from `first_offset` of the first page
/// onward (then from offset 0 of each following page) into chunks, one per page, written
/// to `out`; returns how many.
pub fn chunk_frame(
    len: usize,
    first_offset: u16,
    grefs: &[GrantRef],
    out: &mut [TxChunk],
) -> Result<usize, TxPlanError> {
    if !(MIN_TX_FRAME..=XEN_NETIF_MAX_TX_SIZE).contains(&len) {
        return Err(TxPlanError::BadLength(len));
    }
    if usize::from(first_offset) >= PAGE_SIZE {
        return Err(TxPlanError::BadChunk(0));
    }
    let mut offset = usize::from(first_offset);
    let mut left = len;
    let mut n = 0;
    while left > 0 {
        if n >= MAX_TX_DATA_SLOTS {
            let more = left.div_ceil(PAGE_SIZE);
            return Err(TxPlanError::TooManySlots(n + more));
        }
        let (Some(&gref), Some(slot)) = (grefs.get(n), out.get_mut(n)) else {
            return Err(TxPlanError::Short(left.div_ceil(PAGE_SIZE)));
        };
        let take = left.min(PAGE_SIZE - offset);
        *slot = TxChunk {
            gref,
            offset: offset as u16,
            len: take as u16,
        };
        left -= take;
        offset = 0;
        n += 1;
    }
    Ok(n)
}

/// Lays out a frame whose data is in `chunks` as tx requests written to the front of `out`
/// (a staging buffer the caller then produces on the ring), giving data slot `k` the id
/// `ids[k]` (ids of outstanding requests must be unique; see [`TxInFlight`]). Returns the
/// number of requests written: the data slots plus one for a GSO extra. Nothing is
/// written unless the whole frame is valid.
pub fn plan_tx_frame(
    meta: &TxFrameMeta,
    chunks: &[TxChunk],
    ids: &[u16],
    out: &mut [TxRequest],
) -> Result<usize, TxPlanError> {
    if !(MIN_TX_FRAME..=XEN_NETIF_MAX_TX_SIZE).contains(&meta.len) {
        return Err(TxPlanError::BadLength(meta.len));
    }
    if chunks.len() > MAX_TX_DATA_SLOTS {
        return Err(TxPlanError::TooManySlots(chunks.len()));
    }
    if chunks.is_empty() {
        return Err(TxPlanError::Short(1));
    }
    if ids.len() < chunks.len() {
        return Err(TxPlanError::Short(chunks.len() - ids.len()));
    }
    let nr_requests = chunks.len() + usize::from(meta.gso.is_some());
    if out.len() < nr_requests {
        return Err(TxPlanError::Short(nr_requests - out.len()));
    }
    let total: usize = chunks.iter().map(|c| usize::from(c.len)).sum();
    if total != meta.len {
        return Err(TxPlanError::LengthMismatch {
            chunks: total,
            frame: meta.len,
        });
    }
    for (i, c) in chunks.iter().enumerate() {
        let min = if i == 0 { MIN_TX_FRAME } else { 1 };
        if usize::from(c.len) < min || usize::from(c.offset) + usize::from(c.len) > PAGE_SIZE {
            return Err(TxPlanError::BadChunk(i));
        }
    }
    let last = chunks.len() - 1;
    let mut slots = out.iter_mut();
    for (i, (c, &id)) in chunks.iter().zip(ids).enumerate() {
        let mut flags = if i < last { NETTXF_MORE_DATA } else { 0 };
        let size = if i == 0 {
            flags |= meta.checksum.tx_flags();
            if meta.gso.is_some() {
                flags |= NETTXF_EXTRA_INFO;
            }
            meta.len as u16
        } else {
            c.len
        };
        if let Some(slot) = slots.next() {
            *slot = TxRequest {
                gref: c.gref,
                offset: c.offset,
                flags,
                id,
                size,
            };
        }
        if let (0, Some(gso)) = (i, meta.gso) {
            if let Some(slot) = slots.next() {
                *slot = ExtraInfo::gso(gso, false).to_tx_request();
            }
        }
    }
    Ok(nr_requests)
}

/// A backend answered something it was never asked (netfront marks itself broken).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TxResponseError {
    /// The id is outside the ring ("Response has incorrect id").
    #[error("tx response id {0} is out of range")]
    BadId(u16),
    /// No request with this id is outstanding ("Response for inactive request").
    #[error("tx response for inactive request id {0}")]
    InactiveId(u16),
}

impl TxResponseError {
    /// Stable snake_case name for counters.
    pub fn name(&self) -> &'static str {
        match self {
            TxResponseError::BadId(_) => "tx_response_bad_id",
            TxResponseError::InactiveId(_) => "tx_response_inactive_id",
        }
    }
}

/// The ids of outstanding tx data slots (0..256) and what each holds (e.g. the page to
/// recycle when it is answered).
#[derive(Debug)]
pub struct TxInFlight<T> {
    slots: Vec<Option<T>>,
    free: Vec<u16>,
}

impl<T> Default for TxInFlight<T> {
    fn default() -> Self {
        TxInFlight::new()
    }
}

impl<T> TxInFlight<T> {
    /// All 256 ids free.
    pub fn new() -> TxInFlight<T> {
        let n = NET_TX_RING_SIZE as u16;
        TxInFlight {
            slots: (0..n).map(|_| None).collect(),
            free: (0..n).rev().collect(),
        }
    }

    /// Ids available.
    pub fn available(&self) -> usize {
        self.free.len()
    }

    /// Ids outstanding.
    pub fn outstanding(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// Takes a free id for a data slot holding `item`.
    pub fn alloc(&mut self, item: T) -> Result<u16, T> {
        let Some(id) = self.free.pop() else {
            return Err(item);
        };
        match self.slots.get_mut(usize::from(id)) {
            Some(slot) => {
                *slot = Some(item);
                Ok(id)
            }
            None => Err(item),
        }
    }

    /// Consumes one tx response: `Ok(None)` for an extra slot's `NETIF_RSP_NULL`,
    /// `Ok(Some((item, status)))` for a data slot (its id becomes free), or an error if the
    /// backend answered an id that is out of range or not outstanding.
    pub fn complete(&mut self, rsp: &TxResponse) -> Result<Option<(T, i16)>, TxResponseError> {
        if rsp.status == NETIF_RSP_NULL {
            return Ok(None);
        }
        let slot = self
            .slots
            .get_mut(usize::from(rsp.id))
            .ok_or(TxResponseError::BadId(rsp.id))?;
        let item = slot.take().ok_or(TxResponseError::InactiveId(rsp.id))?;
        self.free.push(rsp.id);
        Ok(Some((item, rsp.status)))
    }
}

#[cfg(test)]
mod tests;
