//! Netback transmit: from the requests copied off a tx ring to packets (§1.3, §1.7;
//! robustness.md §3(a) a1–a10).
//!
//! The shell copies every published request into a private buffer (the ring never holds
//! more than 256, so a 256-entry buffer always suffices) and calls [`build_tx_packet`] on
//! the unprocessed tail of that buffer. The buffer must hold everything published so far:
//! a chain that runs past its end is the frontend's fault (fatal), exactly as Linux
//! compares against the unconsumed-request count.
//!
//! The checks, their order and their verdicts follow Linux `xenvif_tx_build_gops`,
//! `xenvif_get_extras`, `xenvif_count_requests`, `xenvif_get_requests` and
//! `xenvif_set_skb_gso`:
//!
//! | rule | verdict |
//! |---|---|
//! | more than 256 requests offered | fatal `impossible_request_count` |
//! | extra chain runs out of requests | fatal `missing_extra_info` |
//! | extra type 0 or ≥ 5 | fatal `invalid_extra_type` |
//! | MCAST_ADD / MCAST_DEL extra | dummy request: no packet, the first slot answered by the shell |
//! | follow-on chain runs out of requests | fatal `slots_exceed_requests` |
//! | a 21st follow-on slot (≥ `fatal_skb_slots`) | fatal `malicious_slot_count` |
//! | 19th or 20th follow-on slot | drop `tx_too_many_slots`, every data slot ERROR |
//! | follow-on slot larger than the remaining total | drop `tx_slot_exceeds_total` |
//! | any follow-on slot `offset + size > 4096` (even after a drop was decided) | fatal `cross_page_boundary` |
//! | first slot's own data < 14 bytes | drop `tx_first_slot_too_short` |
//! | first slot `offset + own data > 4096` | fatal `cross_page_boundary` |
//! | GSO size 0 / GSO type not TCPv4/TCPv6 | fatal `gso_size_zero` / `bad_gso_type` |
//! | unknown NETTXF bits | ignored |
//! | zero-length follow-on slot | answered OKAY, no fragment (XSA-448) |
//!
//! Every non-fatal outcome answers every consumed slot exactly once, in slot order: data
//! slots with their id and a status, extra-info slots with `NETIF_RSP_NULL`.

use hypervisor::grant::GrantRef;
use hypervisor::memory::PAGE_SIZE;

use crate::netback::reason::{DropReason, FatalReason};
use crate::netif::{
    ChecksumState, Extra, ExtraInfo, GsoInfo, GsoType, HashInfo, TxRequest, TxResponse,
    NETIF_RSP_ERROR, NETIF_RSP_NULL, NETIF_RSP_OKAY, NETTXF_EXTRA_INFO, NETTXF_MORE_DATA,
    NET_TX_RING_SIZE, XEN_NETIF_EXTRA_TYPE_GSO, XEN_NETIF_EXTRA_TYPE_HASH,
    XEN_NETIF_EXTRA_TYPE_MAX, XEN_NETIF_EXTRA_TYPE_MCAST_ADD, XEN_NETIF_EXTRA_TYPE_MCAST_DEL,
};

/// `ETH_HLEN`: the first slot must carry at least an Ethernet header.
pub const ETH_HLEN: usize = 14;
/// `XEN_NETBK_LEGACY_SLOTS_MAX` (= `XEN_NETIF_NR_SLOTS_MIN`): follow-on slots accepted.
pub const XEN_NETBK_LEGACY_SLOTS_MAX: usize = 18;
/// netback's `fatal_skb_slots` module parameter default.
pub const FATAL_SKB_SLOTS_DEFAULT: usize = 20;
/// `XEN_NETBACK_TX_COPY_LEN`: header bytes Linux copies into private memory.
pub const XEN_NETBACK_TX_COPY_LEN: usize = 128;
/// Most fragments an accepted packet has: the first slot plus 18 follow-on slots. Scratch
/// arrays are sized for this worst case (XSA-432).
pub const MAX_TX_FRAGMENTS: usize = XEN_NETBK_LEGACY_SLOTS_MAX + 1;

/// Linux `XEN_NETBK_MCAST_MAX`: how many multicast addresses a frontend may add; the
/// next MCAST_ADD is answered ERROR (robustness.md a9).
pub const XEN_NETBK_MCAST_MAX: usize = 64;

/// Tunables of the tx path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxLimits {
    fatal_skb_slots: usize,
}

impl TxLimits {
    /// Limits with `fatal_skb_slots` follow-on slots considered malicious; clamped to at
    /// least [`XEN_NETBK_LEGACY_SLOTS_MAX`] like the module parameter.
    pub fn new(fatal_skb_slots: usize) -> TxLimits {
        TxLimits {
            fatal_skb_slots: fatal_skb_slots.max(XEN_NETBK_LEGACY_SLOTS_MAX),
        }
    }

    /// The effective `fatal_skb_slots`.
    pub fn fatal_skb_slots(&self) -> usize {
        self.fatal_skb_slots
    }
}

impl Default for TxLimits {
    fn default() -> Self {
        TxLimits::new(FATAL_SKB_SLOTS_DEFAULT)
    }
}

/// How the consumed slots of one outcome are laid out: slot 0 is the first data slot, then
/// `extras` extra-info slots, then follow-on data slots up to `slots`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxSlotLayout {
    /// Slots consumed (≥ 1).
    pub slots: usize,
    /// Extra-info slots among them (indices `1..=extras`).
    pub extras: usize,
}

impl TxSlotLayout {
    /// Whether consumed slot `index` is an extra-info slot.
    #[inline]
    pub fn is_extra(&self, index: usize) -> bool {
        index >= 1 && index <= self.extras
    }

    /// The responses for these slots in slot order: extra-info slots get
    /// `NETIF_RSP_NULL` (id 0 — the slot held no id), data slots their request's id and
    /// `data_status(index)`. `reqs` must be the slice the outcome was built from.
    pub fn responses<'a, F>(&self, reqs: &'a [TxRequest], data_status: F) -> TxResponses<'a, F>
    where
        F: FnMut(usize) -> i16,
    {
        TxResponses {
            reqs,
            layout: *self,
            next: 0,
            data_status,
        }
    }
}

/// Iterator over the responses of one outcome (see [`TxSlotLayout::responses`]).
#[derive(Debug)]
pub struct TxResponses<'a, F> {
    reqs: &'a [TxRequest],
    layout: TxSlotLayout,
    next: usize,
    data_status: F,
}

impl<F: FnMut(usize) -> i16> Iterator for TxResponses<'_, F> {
    type Item = TxResponse;

    fn next(&mut self) -> Option<TxResponse> {
        let i = self.next;
        if i >= self.layout.slots {
            return None;
        }
        let req = self.reqs.get(i)?;
        self.next += 1;
        Some(if self.layout.is_extra(i) {
            TxResponse {
                id: 0,
                status: NETIF_RSP_NULL,
            }
        } else {
            TxResponse {
                id: req.id,
                status: (self.data_status)(i),
            }
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self
            .layout
            .slots
            .min(self.reqs.len())
            .saturating_sub(self.next);
        (n, Some(n))
    }
}

/// One piece of a packet's data in a granted page.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TxFragment {
    /// Grant of the page.
    pub gref: GrantRef,
    /// Offset of the data in the page.
    pub offset: u16,
    /// Bytes (never 0; `offset + len ≤ 4096`).
    pub len: u16,
    /// Index of the consumed slot it came from.
    pub slot: u16,
}

/// A validated packet ready to be copied out of the frontend's pages.
///
/// It is a small summary over the private request copies it was built from: pass the
/// same `reqs` slice to [`TxPacket::fragments`] and [`TxPacket::responses`]. (Those copies
/// are the shell's own memory, so re-reading them is not a double fetch.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxPacket {
    /// Total length (the first slot's size) = Σ fragment lengths, 14..=65535.
    pub total_len: u16,
    /// Bytes in the first slot itself (total − Σ follow-on sizes), ≥ 14.
    pub first_len: u16,
    /// Number of fragments: the first slot plus every non-empty follow-on slot (≤ 19).
    pub nr_fragments: usize,
    /// Segmentation offload requested by a GSO extra.
    pub gso: Option<GsoInfo>,
    /// From the first slot's csum flags.
    pub checksum: ChecksumState,
    /// A hash the frontend supplied (accepted, not required).
    pub hash: Option<HashInfo>,
    /// Which slots the packet consumed.
    pub layout: TxSlotLayout,
}

impl TxPacket {
    /// The data in packet order; zero-length follow-on slots contribute nothing (XSA-448).
    #[inline]
    pub fn fragments<'a>(&self, reqs: &'a [TxRequest]) -> TxFragments<'a> {
        TxFragments {
            reqs,
            first_len: self.first_len,
            layout: self.layout,
            next: 0,
        }
    }

    /// The responses to write once the data has been copied: data slots OKAY, except that
    /// a slot whose fragment copy failed (bit `k` of `failed_fragments` for the `k`-th
    /// fragment) is answered ERROR (a8); zero-length slots OKAY; extras NULL.
    pub fn responses<'a>(
        &self,
        reqs: &'a [TxRequest],
        failed_fragments: u32,
    ) -> TxResponses<'a, impl FnMut(usize) -> i16 + 'a> {
        // Data slots are visited in order, so the fragment index is a running count.
        let mut fragment = 0u32;
        self.layout.responses(reqs, move |slot| {
            let empty = slot != 0 && reqs.get(slot).is_none_or(|r| r.size == 0);
            if empty {
                return NETIF_RSP_OKAY;
            }
            let failed = fragment < 32 && failed_fragments & (1 << fragment) != 0;
            fragment += 1;
            if failed {
                NETIF_RSP_ERROR
            } else {
                NETIF_RSP_OKAY
            }
        })
    }
}

/// Iterator over a packet's fragments (see [`TxPacket::fragments`]).
#[derive(Debug, Clone)]
pub struct TxFragments<'a> {
    reqs: &'a [TxRequest],
    first_len: u16,
    layout: TxSlotLayout,
    next: usize,
}

impl Iterator for TxFragments<'_> {
    type Item = TxFragment;

    #[inline]
    fn next(&mut self) -> Option<TxFragment> {
        loop {
            let slot = self.next;
            if slot >= self.layout.slots {
                return None;
            }
            self.next = if slot == 0 {
                self.layout.extras + 1
            } else {
                slot + 1
            };
            let req = self.reqs.get(slot)?;
            let len = if slot == 0 { self.first_len } else { req.size };
            if len > 0 {
                return Some(TxFragment {
                    gref: req.gref,
                    offset: req.offset,
                    len,
                    slot: slot as u16,
                });
            }
        }
    }
}

/// A multicast filter change carried by a dummy request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum McastOp {
    /// `XEN_NETIF_EXTRA_TYPE_MCAST_ADD`: answer OKAY, or ERROR when the list
    /// ([`XEN_NETBK_MCAST_MAX`]) is full.
    Add([u8; 6]),
    /// `XEN_NETIF_EXTRA_TYPE_MCAST_DEL`: answer OKAY (the first matching entry goes).
    Del([u8; 6]),
}

/// What the next requests amount to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxOutcome {
    /// A good packet: copy its fragments, then write [`TxPacket::responses`].
    Packet(TxPacket),
    /// A dummy request carrying a multicast filter change: no packet. Answer with
    /// `layout.responses(reqs, |_| status)` (only slot 0 is a data slot).
    Multicast {
        /// The change requested.
        op: McastOp,
        /// Slots consumed (the first slot and its extras; `more_data` is ignored).
        layout: TxSlotLayout,
    },
    /// The packet is dropped and the vif stays up: answer with
    /// `layout.responses(reqs, |_| NETIF_RSP_ERROR)` and count `reason`.
    Dropped {
        /// Why.
        reason: DropReason,
        /// Slots consumed.
        layout: TxSlotLayout,
    },
    /// The frontend is misbehaving: disable the vif. Nothing more is read or answered.
    Fatal(FatalReason),
}

impl TxOutcome {
    /// Slots the outcome consumed (0 for a fatal verdict).
    pub fn slots(&self) -> usize {
        match self {
            TxOutcome::Packet(p) => p.layout.slots,
            TxOutcome::Multicast { layout, .. } | TxOutcome::Dropped { layout, .. } => layout.slots,
            TxOutcome::Fatal(_) => 0,
        }
    }
}

/// The extras of one packet, one kept per type (a later one replaces an earlier one).
#[derive(Default)]
struct Extras {
    gso: Option<ExtraInfo>,
    mcast_add: Option<ExtraInfo>,
    mcast_del: Option<ExtraInfo>,
    hash: Option<ExtraInfo>,
}

/// Reads the next packet from `reqs` — every request published and not yet processed,
/// starting at the packet's first slot — and decides its fate (see the module table).
/// Returns `None` if `reqs` is empty.
#[inline]
pub fn build_tx_packet(reqs: &[TxRequest], limits: &TxLimits) -> Option<TxOutcome> {
    let first = *reqs.first()?;
    Some(build(first, reqs, limits))
}

#[inline]
fn build(first: TxRequest, reqs: &[TxRequest], limits: &TxLimits) -> TxOutcome {
    if reqs.len() > NET_TX_RING_SIZE as usize {
        return TxOutcome::Fatal(FatalReason::ImpossibleRequestCount);
    }
    // --- extra-info chain (xenvif_get_extras) ---
    let mut pos = 1usize;
    let mut extras = Extras::default();
    if first.flags & NETTXF_EXTRA_INFO != 0 {
        loop {
            let Some(slot) = reqs.get(pos) else {
                return TxOutcome::Fatal(FatalReason::MissingExtraInfo);
            };
            pos += 1;
            let extra = ExtraInfo::from_tx_request(slot);
            let keep = match extra.extra_type {
                XEN_NETIF_EXTRA_TYPE_GSO => &mut extras.gso,
                XEN_NETIF_EXTRA_TYPE_MCAST_ADD => &mut extras.mcast_add,
                XEN_NETIF_EXTRA_TYPE_MCAST_DEL => &mut extras.mcast_del,
                XEN_NETIF_EXTRA_TYPE_HASH => &mut extras.hash,
                _ => return TxOutcome::Fatal(FatalReason::InvalidExtraType),
            };
            debug_assert!(extra.extra_type < XEN_NETIF_EXTRA_TYPE_MAX);
            *keep = Some(extra);
            if !extra.has_more() {
                break;
            }
        }
    }
    let extra_slots = pos - 1;

    // --- multicast control: a dummy request, answered on its own ---
    let dummy = TxSlotLayout {
        slots: pos,
        extras: extra_slots,
    };
    if let Some(Extra::McastAdd(addr)) = extras.mcast_add.and_then(|e| e.decode()) {
        return TxOutcome::Multicast {
            op: McastOp::Add(addr),
            layout: dummy,
        };
    }
    if let Some(Extra::McastDel(addr)) = extras.mcast_del.and_then(|e| e.decode()) {
        return TxOutcome::Multicast {
            op: McastOp::Del(addr),
            layout: dummy,
        };
    }

    // --- follow-on data slots (xenvif_count_requests) ---
    let mut remaining = u32::from(first.size);
    let mut follow = 0usize;
    let mut drop: Option<DropReason> = None;
    let mut nr_fragments = 1usize; // the first slot
    if first.flags & NETTXF_MORE_DATA != 0 {
        loop {
            let Some(txp) = reqs.get(pos + follow) else {
                return TxOutcome::Fatal(FatalReason::SlotsExceedRequests);
            };
            if follow >= limits.fatal_skb_slots {
                return TxOutcome::Fatal(FatalReason::MaliciousSlotCount);
            }
            if drop.is_none() && follow >= XEN_NETBK_LEGACY_SLOTS_MAX {
                drop = Some(DropReason::TxTooManySlots);
            }
            let size = u32::from(txp.size);
            if drop.is_none() && size > remaining {
                drop = Some(DropReason::TxSlotExceedsTotal);
            }
            remaining = remaining.saturating_sub(size);
            follow += 1;
            if usize::from(txp.offset) + usize::from(txp.size) > PAGE_SIZE {
                return TxOutcome::Fatal(FatalReason::CrossPageBoundary);
            }
            if txp.size > 0 {
                nr_fragments += 1;
            }
            if txp.flags & NETTXF_MORE_DATA == 0 {
                break;
            }
        }
    }
    let layout = TxSlotLayout {
        slots: pos + follow,
        extras: extra_slots,
    };
    if let Some(reason) = drop {
        return TxOutcome::Dropped { reason, layout };
    }

    // --- the first slot's own data (what is left of the total) ---
    if (remaining as usize) < ETH_HLEN {
        return TxOutcome::Dropped {
            reason: DropReason::TxFirstSlotTooShort,
            layout,
        };
    }
    if usize::from(first.offset) + remaining as usize > PAGE_SIZE {
        return TxOutcome::Fatal(FatalReason::CrossPageBoundary);
    }

    // --- GSO (xenvif_set_skb_gso): failures are fatal ---
    let gso = match extras.gso.and_then(|e| e.decode()) {
        Some(Extra::Gso { size, gso_type, .. }) => {
            if size == 0 {
                return TxOutcome::Fatal(FatalReason::GsoSizeZero);
            }
            let Some(gso_type) = GsoType::from_code(gso_type) else {
                return TxOutcome::Fatal(FatalReason::BadGsoType);
            };
            Some(GsoInfo { gso_type, size })
        }
        _ => None,
    };
    let hash = match extras.hash.and_then(|e| e.decode()) {
        Some(Extra::Hash(h)) => Some(h),
        _ => None,
    };

    debug_assert!(nr_fragments <= MAX_TX_FRAGMENTS);
    TxOutcome::Packet(TxPacket {
        total_len: first.size,
        first_len: remaining as u16,
        nr_fragments,
        gso,
        checksum: ChecksumState::from_tx_flags(first.flags),
        hash,
        layout,
    })
}

#[cfg(test)]
mod tests;
