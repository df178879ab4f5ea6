//! Netfront receive: posting buffers and reading frames back (§1.4; Linux
//! `xennet_alloc_rx_buffers`, `xennet_get_responses`, `xennet_get_extras`,
//! `xennet_set_skb_gso`).
//!
//! Buffers are posted with id = ring index mod 256 and found again by *position*: the
//! response for the request in ring slot `i` is in slot `i` ([`RxBufferSlots`]). A frame
//! starts with a data slot; if it says `extra_info`, extra-info records follow (chained by
//! FLAG_MORE), then the remaining data slots (chained by `more_data`). Its length is Σ
//! status of its data slots.
//!
//! A malformed frame from a hostile or buggy backend is dropped — all its slots consumed,
//! buffers recycled, `rx_errors` counted by [`RxFrameError`] — never trusted:
//! missing or invalid extras, a data slot with negative status or `offset + status > 4096`,
//! a chain that runs past the published responses, more than 18 (19 for a small first
//! slot) data slots, or a bad GSO extra.

use hypervisor::grant::GrantRef;
use hypervisor::memory::PAGE_SIZE;

use crate::netif::{
    ChecksumState, Extra, ExtraInfo, GsoInfo, GsoType, HashInfo, RingIdx, RxRequest, RxResponse,
    NETRXF_EXTRA_INFO, NETRXF_MORE_DATA, NET_RX_RING_SIZE, XEN_NETIF_NR_SLOTS_MIN,
};

/// `RX_COPY_THRESHOLD`: a first slot this small lets a frame use one more data slot.
pub const RX_COPY_THRESHOLD: i16 = 256;
/// Most data slots a frame may have (with a small first slot).
pub const MAX_RX_FRAME_DATA_SLOTS: usize = XEN_NETIF_NR_SLOTS_MIN + 1;

/// The rx request that posts the buffer granted by `gref` into ring slot `idx`: Linux
/// uses id = `idx mod 256`, unique among outstanding requests because at most 256 are.
pub fn rx_request(idx: RingIdx, gref: GrantRef) -> RxRequest {
    RxRequest {
        id: (idx & (NET_RX_RING_SIZE - 1)) as u16,
        pad: 0,
        gref,
    }
}

/// The buffers posted in each rx ring slot, indexed by ring position.
#[derive(Debug)]
pub struct RxBufferSlots<T> {
    slots: Vec<Option<T>>,
}

impl<T> Default for RxBufferSlots<T> {
    fn default() -> Self {
        RxBufferSlots::new()
    }
}

impl<T> RxBufferSlots<T> {
    /// 256 empty slots.
    pub fn new() -> RxBufferSlots<T> {
        RxBufferSlots {
            slots: (0..NET_RX_RING_SIZE).map(|_| None).collect(),
        }
    }

    fn index(idx: RingIdx) -> usize {
        (idx & (NET_RX_RING_SIZE - 1)) as usize
    }

    /// Records `buffer` as posted at ring index `idx`; hands it back if that slot still
    /// holds a buffer (the request would not be unique).
    pub fn post(&mut self, idx: RingIdx, buffer: T) -> Result<(), T> {
        match self.slots.get_mut(Self::index(idx)) {
            Some(slot @ None) => {
                *slot = Some(buffer);
                Ok(())
            }
            _ => Err(buffer),
        }
    }

    /// Takes the buffer posted at ring index `idx` (Linux `xennet_get_rx_skb`); `None`
    /// means the backend answered a slot with nothing posted ("Bad rx response id").
    pub fn take(&mut self, idx: RingIdx) -> Option<T> {
        self.slots.get_mut(Self::index(idx))?.take()
    }

    /// Buffers currently posted.
    pub fn posted(&self) -> usize {
        self.slots.iter().filter(|s| s.is_some()).count()
    }
}

/// Why a received frame was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RxFrameError {
    /// `extra_info` chain ran past the published responses ("Missing extra info").
    MissingExtraInfo,
    /// Extra type 0 or ≥ 5 ("Invalid extra type").
    InvalidExtraType,
    /// A data slot with negative status (error or failed copy) or `offset + status > 4096`.
    BadSlot,
    /// `more_data` chain ran past the published responses ("Need more slots").
    NeedMoreSlots,
    /// More data slots than allowed ("Too many slots").
    TooManySlots,
    /// GSO extra with size 0.
    GsoSizeZero,
    /// GSO extra with a type other than TCPv4/TCPv6.
    BadGsoType,
}

impl RxFrameError {
    /// Every error.
    pub const ALL: &'static [RxFrameError] = &[
        RxFrameError::MissingExtraInfo,
        RxFrameError::InvalidExtraType,
        RxFrameError::BadSlot,
        RxFrameError::NeedMoreSlots,
        RxFrameError::TooManySlots,
        RxFrameError::GsoSizeZero,
        RxFrameError::BadGsoType,
    ];

    /// Stable snake_case name for counters.
    pub const fn name(self) -> &'static str {
        match self {
            RxFrameError::MissingExtraInfo => "rx_missing_extra_info",
            RxFrameError::InvalidExtraType => "rx_invalid_extra_type",
            RxFrameError::BadSlot => "rx_bad_slot",
            RxFrameError::NeedMoreSlots => "rx_need_more_slots",
            RxFrameError::TooManySlots => "rx_too_many_slots",
            RxFrameError::GsoSizeZero => "rx_gso_size_zero",
            RxFrameError::BadGsoType => "rx_bad_gso_type",
        }
    }
}

/// Where one piece of a received frame is: `len` bytes at `offset` in the buffer of the
/// frame's slot `slot` (relative to the frame's first response).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RxDataSlot {
    /// Slot index relative to the frame's first response.
    pub slot: usize,
    /// Offset in the buffer page.
    pub offset: u16,
    /// Bytes (> 0; empty data slots are consumed but not listed).
    pub len: u16,
}

/// A well-formed received frame: a summary over the response copies it was parsed from
/// (pass the same slice to [`RxFrame::data`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RxFrame {
    /// Σ status of the data slots.
    pub len: usize,
    /// From a GSO extra.
    pub gso: Option<GsoInfo>,
    /// From the first slot's flags.
    pub checksum: ChecksumState,
    /// From a HASH extra.
    pub hash: Option<HashInfo>,
    /// Responses the frame consumed (data and extra slots).
    pub slots: usize,
    /// Extra-info slots among them (indices `1..=extras`).
    pub extras: usize,
    /// Non-empty data slots (≤ [`MAX_RX_FRAME_DATA_SLOTS`]).
    pub nr_data: usize,
}

impl RxFrame {
    /// The frame's bytes, in order; empty data slots are skipped. `rsps` must be the slice
    /// given to [`parse_rx_frame`].
    pub fn data<'a>(&self, rsps: &'a [RxResponse]) -> RxFrameData<'a> {
        RxFrameData {
            rsps,
            frame: *self,
            next: 0,
        }
    }
}

/// Iterator over a frame's data slots (see [`RxFrame::data`]).
#[derive(Debug, Clone)]
pub struct RxFrameData<'a> {
    rsps: &'a [RxResponse],
    frame: RxFrame,
    next: usize,
}

impl Iterator for RxFrameData<'_> {
    type Item = RxDataSlot;

    #[inline]
    fn next(&mut self) -> Option<RxDataSlot> {
        loop {
            let slot = self.next;
            if slot >= self.frame.slots {
                return None;
            }
            self.next = if slot == 0 {
                self.frame.extras + 1
            } else {
                slot + 1
            };
            let rsp = self.rsps.get(slot)?;
            if rsp.status > 0 {
                return Some(RxDataSlot {
                    slot,
                    offset: rsp.offset,
                    len: rsp.status as u16,
                });
            }
        }
    }
}

/// What the next responses amount to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RxOutcome {
    /// A frame to hand to the stack; its buffers are in its slots.
    Frame(RxFrame),
    /// A malformed frame: consume `slots` responses, recycle their buffers, count `reason`.
    Dropped {
        /// The first problem found.
        reason: RxFrameError,
        /// Responses consumed.
        slots: usize,
    },
}

impl RxOutcome {
    /// Responses consumed.
    pub fn slots(&self) -> usize {
        match self {
            RxOutcome::Frame(f) => f.slots,
            RxOutcome::Dropped { slots, .. } => *slots,
        }
    }
}

/// Reads the next frame from `rsps` — every response published and not yet processed,
/// starting at the frame's first slot. Returns `None` if `rsps` is empty.
pub fn parse_rx_frame(rsps: &[RxResponse]) -> Option<RxOutcome> {
    let first = *rsps.first()?;
    let mut err: Option<RxFrameError> = None;
    let mut fail = |e: RxFrameError| {
        err.get_or_insert(e);
    };

    // Extras: right after the first data slot.
    let mut last_extra = 0usize;
    let mut gso = None;
    let mut hash = None;
    if first.flags & NETRXF_EXTRA_INFO != 0 {
        loop {
            let Some(rsp) = rsps.get(last_extra + 1) else {
                fail(RxFrameError::MissingExtraInfo);
                break;
            };
            last_extra += 1;
            let extra = ExtraInfo::from_rx_response(rsp);
            match extra.decode() {
                Some(e @ Extra::Gso { .. }) => gso = Some(e),
                Some(Extra::Hash(h)) => hash = Some(h),
                Some(Extra::McastAdd(_) | Extra::McastDel(_)) => {}
                None => fail(RxFrameError::InvalidExtraType),
            }
            if !extra.has_more() {
                break;
            }
        }
    }

    // Data slots: the first, then those after the extras.
    let mut nr_data = 0usize;
    let mut len = 0usize;
    let mut slots = 1usize;
    let mut rsp = first;
    loop {
        if rsp.status < 0 || usize::from(rsp.offset) + rsp.status as usize > PAGE_SIZE {
            fail(RxFrameError::BadSlot);
        } else if rsp.status > 0 {
            nr_data += 1;
            len += rsp.status as usize;
        }
        if rsp.flags & NETRXF_MORE_DATA == 0 {
            break;
        }
        let Some(next) = rsps.get(last_extra + slots) else {
            fail(RxFrameError::NeedMoreSlots);
            break;
        };
        rsp = *next;
        slots += 1;
    }
    let max = XEN_NETIF_NR_SLOTS_MIN + usize::from(first.status <= RX_COPY_THRESHOLD);
    if slots > max {
        fail(RxFrameError::TooManySlots);
    }
    let consumed = last_extra + slots;
    if let Some(reason) = err {
        return Some(RxOutcome::Dropped {
            reason,
            slots: consumed,
        });
    }

    let gso = match gso {
        Some(Extra::Gso { size, gso_type, .. }) => {
            if size == 0 {
                return Some(RxOutcome::Dropped {
                    reason: RxFrameError::GsoSizeZero,
                    slots: consumed,
                });
            }
            let Some(gso_type) = GsoType::from_code(gso_type) else {
                return Some(RxOutcome::Dropped {
                    reason: RxFrameError::BadGsoType,
                    slots: consumed,
                });
            };
            Some(GsoInfo { gso_type, size })
        }
        _ => None,
    };
    Some(RxOutcome::Frame(RxFrame {
        nr_data,
        len,
        gso,
        checksum: ChecksumState::from_rx_flags(first.flags),
        hash,
        slots: consumed,
        extras: last_extra,
    }))
}

#[cfg(test)]
mod tests;
