//! Netback receive: delivering packets into the buffers a frontend posted (§1.4, §1.7;
//! robustness.md XSA-392, a8, a11, a16). Two pure parts:
//!
//! * [`plan_rx`] — for one packet and the rx requests it will consume, the responses
//!   (written into the caller's buffer, each for the slot of the request it answers) and
//!   the grant copies (one per data slot, ≤ 4096 bytes at offset 0 of the slot's page). Layout, as Linux `xenvif_rx_skb`: data
//!   slot 0; then the extras (GSO, then HASH), overlaying the responses of slots 1..;
//!   then the remaining data slots. Only slot 0 carries the checksum flags and
//!   `extra_info`; every data slot with bytes after it carries `more_data`. A failed copy
//!   overwrites its slot's status with the GNTST code ([`apply_copy_status`]).
//! * [`RxBacklog`] — the per-queue queue of packets waiting for rx buffers: bounded in
//!   bytes (512 KiB, then drop and count), each packet expiring after the drain timeout,
//!   and stall detection (no progress for 60 s while the free slots are fewer than the head
//!   packet needs ⇒ carrier off, until enough slots appear).

use std::collections::VecDeque;
use std::time::Duration;

use hypervisor::grant::{GntSt, GrantRef};
use hypervisor::memory::PAGE_SIZE;

use crate::netback::reason::DropReason;
use crate::netif::{
    ChecksumState, Extra, ExtraInfo, GsoInfo, HashInfo, RxRequest, RxResponse, NETRXF_EXTRA_INFO,
    NETRXF_MORE_DATA, XEN_NETIF_NR_SLOTS_MIN,
};

/// Most data slots a packet may use: the 18 every frontend must accept.
pub const MAX_RX_DATA_SLOTS: usize = XEN_NETIF_NR_SLOTS_MIN;
/// Most extra slots netback sends (GSO and HASH).
pub const MAX_RX_EXTRAS: usize = 2;
/// Most slots one packet consumes.
pub const MAX_RX_SLOTS: usize = MAX_RX_DATA_SLOTS + MAX_RX_EXTRAS;
/// Longest packet [`plan_rx`] accepts (18 full pages).
pub const MAX_RX_PACKET_LEN: usize = MAX_RX_DATA_SLOTS * PAGE_SIZE;

/// What netback knows about a packet it is about to deliver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RxPacketInfo {
    /// Bytes of the packet.
    pub len: usize,
    /// Segmentation offload to announce with a GSO extra (frontend must have negotiated it).
    pub gso: Option<GsoInfo>,
    /// Checksum state to announce on the first slot.
    pub checksum: ChecksumState,
    /// Hash to announce with a HASH extra (only if the frontend configured hashing).
    pub hash: Option<HashInfo>,
}

impl RxPacketInfo {
    /// Data slots: `ceil(len / 4096)`, at least 1.
    pub fn data_slots(&self) -> usize {
        self.len.div_ceil(PAGE_SIZE).max(1)
    }

    /// Extra slots: one for GSO, one for a hash.
    pub fn extra_slots(&self) -> usize {
        usize::from(self.gso.is_some()) + usize::from(self.hash.is_some())
    }

    /// Rx requests the packet consumes (Linux `xenvif_rx_ring_slots_needed`).
    pub fn slots_needed(&self) -> usize {
        self.data_slots() + self.extra_slots()
    }
}

/// One grant copy of the plan: packet bytes `packet_offset .. packet_offset + len` go to
/// `dest_offset` in the page granted by `gref`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RxCopy {
    /// Index of the packet slot (and of its request and response).
    pub slot: usize,
    /// The request's grant (the frontend's empty page, writable by us).
    pub gref: GrantRef,
    /// Offset in that page (0: Linux without XDP headroom).
    pub dest_offset: u16,
    /// Where these bytes start in the packet.
    pub packet_offset: usize,
    /// Bytes to copy (1..=4096; 0 only for an empty packet).
    pub len: u16,
}

/// Why [`plan_rx`] refused a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RxPlanError {
    /// More than [`MAX_RX_PACKET_LEN`] bytes: the frontend need not accept it.
    #[error("packet of {len} bytes needs more than {MAX_RX_DATA_SLOTS} rx slots")]
    TooLarge {
        /// The packet length.
        len: usize,
    },
    /// Fewer requests than [`RxPacketInfo::slots_needed`] were supplied.
    #[error("packet needs {needed} rx slots, only {available} posted")]
    NotEnoughRequests {
        /// Slots the packet needs.
        needed: usize,
        /// Requests supplied.
        available: usize,
    },
    /// The response buffer is shorter than [`RxPacketInfo::slots_needed`].
    #[error("response buffer holds {available} of the {needed} responses")]
    ResponseBufferTooSmall {
        /// Slots the packet needs.
        needed: usize,
        /// Buffer length.
        available: usize,
    },
}

impl RxPlanError {
    /// The drop reason to count when the packet is discarded for this error.
    pub fn drop_reason(&self) -> Option<DropReason> {
        match self {
            RxPlanError::TooLarge { .. } => Some(DropReason::RxPacketTooLarge),
            _ => None,
        }
    }
}

/// The shape of one planned delivery: slot 0 is data, slots `1..=extras` are extras, the
/// rest data. The copies are derived from it and the requests it was planned on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RxPlan {
    slots: usize,
    extras: usize,
    len: usize,
}

impl RxPlan {
    /// Requests consumed (= responses written).
    pub fn slots(&self) -> usize {
        self.slots
    }

    /// Extra-info slots among them.
    pub fn extras(&self) -> usize {
        self.extras
    }

    /// The grant copies, in packet order; `reqs` must be the slice given to [`plan_rx`].
    pub fn copies<'a>(&self, reqs: &'a [RxRequest]) -> RxCopies<'a> {
        RxCopies {
            reqs,
            plan: *self,
            slot: 0,
            done: 0,
        }
    }
}

/// Iterator over a plan's copies (see [`RxPlan::copies`]).
#[derive(Debug, Clone)]
pub struct RxCopies<'a> {
    reqs: &'a [RxRequest],
    plan: RxPlan,
    slot: usize,
    done: usize,
}

impl Iterator for RxCopies<'_> {
    type Item = RxCopy;

    #[inline]
    fn next(&mut self) -> Option<RxCopy> {
        let slot = self.slot;
        if slot >= self.plan.slots {
            return None;
        }
        self.slot = if slot == 0 {
            self.plan.extras + 1
        } else {
            slot + 1
        };
        let req = self.reqs.get(slot)?;
        let len = (self.plan.len - self.done).min(PAGE_SIZE);
        let copy = RxCopy {
            slot,
            gref: req.gref,
            dest_offset: 0,
            packet_offset: self.done,
            len: len as u16,
        };
        self.done += len;
        Some(copy)
    }
}

/// Records the outcome of `copy` in the responses written by [`plan_rx`]: a failure
/// overwrites the status of that copy's slot with the (negative) GNTST code, as
/// `xenvif_rx_copy_flush` does. Returns whether the copy failed.
pub fn apply_copy_status(responses: &mut [RxResponse], copy: &RxCopy, status: GntSt) -> bool {
    if status == GntSt::Okay {
        return false;
    }
    if let Some(rsp) = responses.get_mut(copy.slot) {
        rsp.status = status.code();
    }
    true
}

/// Plans the delivery of `pkt` into the first [`RxPacketInfo::slots_needed`] of `reqs`
/// (requests the shell consumed, in ring order): writes one response per request into the
/// front of `responses` (to be produced on the ring in that order, so each lands in its
/// request's slot) and returns the plan whose [`RxPlan::copies`] move the data. See the
/// module rules. Nothing is written on error.
pub fn plan_rx(
    pkt: &RxPacketInfo,
    reqs: &[RxRequest],
    responses: &mut [RxResponse],
) -> Result<RxPlan, RxPlanError> {
    if pkt.len > MAX_RX_PACKET_LEN {
        return Err(RxPlanError::TooLarge { len: pkt.len });
    }
    let needed = pkt.slots_needed();
    let Some(reqs) = reqs.get(..needed) else {
        return Err(RxPlanError::NotEnoughRequests {
            needed,
            available: reqs.len(),
        });
    };
    let available = responses.len();
    let Some(responses) = responses.get_mut(..needed) else {
        return Err(RxPlanError::ResponseBufferTooSmall { needed, available });
    };
    let mut extras = [ExtraInfo::default(); MAX_RX_EXTRAS];
    let mut nr_extras = 0;
    if let Some(gso) = pkt.gso {
        extras[nr_extras] = ExtraInfo::gso(gso, false);
        nr_extras += 1;
    }
    if let Some(hash) = pkt.hash {
        extras[nr_extras] = ExtraInfo::encode(&Extra::Hash(hash), false);
        nr_extras += 1;
    }
    // Chain them: every extra but the last says "more".
    for e in extras.iter_mut().take(nr_extras.saturating_sub(1)) {
        e.flags |= crate::netif::XEN_NETIF_EXTRA_FLAG_MORE;
    }

    let mut done = 0usize;
    let mut next_extra = 0usize;
    for (slot, (req, rsp)) in reqs.iter().zip(responses.iter_mut()).enumerate() {
        if slot != 0 && next_extra < nr_extras {
            // Extras go right after the first data slot, overlaying those responses; the
            // request's page is left unused (the frontend recycles it).
            *rsp = extras[next_extra].to_rx_response();
            next_extra += 1;
            continue;
        }
        let len = (pkt.len - done).min(PAGE_SIZE);
        done += len;
        let mut flags = 0;
        if slot == 0 {
            flags |= pkt.checksum.rx_flags();
            if nr_extras > 0 {
                flags |= NETRXF_EXTRA_INFO;
            }
        }
        if done < pkt.len {
            flags |= NETRXF_MORE_DATA;
        }
        *rsp = RxResponse {
            id: req.id,
            offset: 0,
            flags,
            status: len as i16,
        };
    }
    Ok(RxPlan {
        slots: needed,
        extras: nr_extras,
        len: pkt.len,
    })
}

// ---- the rx backlog --------------------------------------------------------------------

/// `XENVIF_RX_QUEUE_BYTES`: per-queue backlog bound (ring/2 × 4 KiB).
pub const XENVIF_RX_QUEUE_BYTES: usize = 512 * 1024;
/// `rx_drain_timeout_msecs`.
pub const RX_DRAIN_TIMEOUT: Duration = Duration::from_millis(10_000);
/// `rx_stall_timeout_msecs`.
pub const RX_STALL_TIMEOUT: Duration = Duration::from_millis(60_000);
/// Drain timeout for a frontend without `feature-rx-notify`.
pub const RX_DRAIN_TIMEOUT_NO_NOTIFY: Duration = Duration::from_millis(30);

/// Limits of one rx backlog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RxBacklogConfig {
    /// Queued bytes at which new packets are refused.
    pub max_bytes: usize,
    /// How long a packet may wait for rx buffers.
    pub drain_timeout: Duration,
    /// No progress for this long while too few buffers are posted ⇒ carrier off; `None`
    /// disables stall detection.
    pub stall_timeout: Option<Duration>,
}

impl RxBacklogConfig {
    /// Linux's settings for a frontend that did (or did not) advertise
    /// `feature-rx-notify`: without it the drain timeout is 30 ms and stalls are not
    /// detected.
    pub fn for_frontend(rx_notify: bool) -> RxBacklogConfig {
        RxBacklogConfig {
            max_bytes: XENVIF_RX_QUEUE_BYTES,
            drain_timeout: if rx_notify {
                RX_DRAIN_TIMEOUT
            } else {
                RX_DRAIN_TIMEOUT_NO_NOTIFY
            },
            stall_timeout: rx_notify.then_some(RX_STALL_TIMEOUT),
        }
    }
}

impl Default for RxBacklogConfig {
    fn default() -> Self {
        RxBacklogConfig::for_frontend(true)
    }
}

/// A carrier transition the shell must apply to the vif.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CarrierChange {
    /// The guest stalled: carrier off ("Guest Rx stalled").
    Off,
    /// Enough buffers are posted again: carrier on ("Guest Rx ready").
    On,
}

#[derive(Debug)]
struct Queued<T> {
    item: T,
    len: usize,
    slots: usize,
    expires: Duration,
}

/// Packets (of the shell's type `T`) waiting for rx buffers on one queue.
#[derive(Debug)]
pub struct RxBacklog<T> {
    config: RxBacklogConfig,
    queue: VecDeque<Queued<T>>,
    bytes: usize,
    last_progress: Duration,
    stalled: bool,
    slots_needed: usize,
}

fn saturating_add(t: Duration, d: Duration) -> Duration {
    t.checked_add(d).unwrap_or(Duration::MAX)
}

impl<T> RxBacklog<T> {
    /// An empty backlog; progress is counted from `now`.
    pub fn new(config: RxBacklogConfig, now: Duration) -> RxBacklog<T> {
        RxBacklog {
            config,
            queue: VecDeque::new(),
            bytes: 0,
            last_progress: now,
            stalled: false,
            slots_needed: 1,
        }
    }

    /// The limits in force.
    pub fn config(&self) -> &RxBacklogConfig {
        &self.config
    }

    /// Packets queued.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// True if nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Bytes queued.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// True while the carrier is off because the guest stalled.
    pub fn is_stalled(&self) -> bool {
        self.stalled
    }

    /// Queues a packet of `len` bytes needing `slots_needed` rx requests, to expire at
    /// `now + drain_timeout`. Refused — handed back with the reason, so the caller frees it
    /// outside any lock (XSA-424) and counts it — while the carrier is off, or when the
    /// backlog already holds `max_bytes` (Linux checks before adding, so the last packet
    /// admitted may overshoot by its own length).
    pub fn enqueue(
        &mut self,
        item: T,
        len: usize,
        slots_needed: usize,
        now: Duration,
    ) -> Result<(), (T, DropReason)> {
        if self.stalled {
            return Err((item, DropReason::RxCarrierOff));
        }
        if self.bytes >= self.config.max_bytes {
            return Err((item, DropReason::RxBacklogFull));
        }
        if self.queue.is_empty() {
            self.slots_needed = slots_needed.max(1);
        }
        self.queue.push_back(Queued {
            item,
            len,
            slots: slots_needed,
            expires: saturating_add(now, self.config.drain_timeout),
        });
        self.bytes = self.bytes.saturating_add(len);
        Ok(())
    }

    /// The head packet and the rx requests it needs.
    pub fn head(&self) -> Option<(&T, usize)> {
        self.queue.front().map(|q| (&q.item, q.slots))
    }

    /// Whether `free_slots` posted requests suffice for the head packet.
    pub fn head_fits(&self, free_slots: u32) -> bool {
        self.queue
            .front()
            .is_some_and(|q| free_slots as usize >= q.slots)
    }

    /// Takes the head packet off the queue because the shell is delivering it: this is
    /// the progress that stall detection watches (`last_rx_time`).
    pub fn pop(&mut self, now: Duration) -> Option<T> {
        let q = self.queue.pop_front()?;
        self.bytes = self.bytes.saturating_sub(q.len);
        self.last_progress = now;
        if let Some(next) = self.queue.front() {
            self.slots_needed = next.slots.max(1);
        }
        Some(q.item)
    }

    /// Drops every packet at the head whose drain timeout has passed (`now ≥ expires`),
    /// handing each to `dropped` (count it as [`DropReason::RxExpired`]); returns how many.
    pub fn drop_expired(&mut self, now: Duration, mut dropped: impl FnMut(T)) -> usize {
        let mut n = 0;
        while self.queue.front().is_some_and(|q| now >= q.expires) {
            if let Some(q) = self.queue.pop_front() {
                self.bytes = self.bytes.saturating_sub(q.len);
                dropped(q.item);
                n += 1;
            }
        }
        if let Some(next) = self.queue.front() {
            self.slots_needed = next.slots.max(1);
        }
        n
    }

    /// Drops everything (frontend gone, a12), handing each packet to `dropped`.
    pub fn purge(&mut self, mut dropped: impl FnMut(T)) -> usize {
        let n = self.queue.len();
        for q in self.queue.drain(..) {
            dropped(q.item);
        }
        self.bytes = 0;
        n
    }

    /// Stall detection (Linux `xenvif_rx_queue_stalled` / `_ready` after XSA-392):
    /// with `free_slots` requests posted, the carrier goes off when fewer than the head
    /// packet needs are posted and nothing was delivered for the stall timeout, and comes
    /// back on once enough are posted. With an empty queue the need of the last head
    /// packet is used.
    pub fn check_stall(&mut self, free_slots: u32, now: Duration) -> Option<CarrierChange> {
        let stall_timeout = self.config.stall_timeout?;
        let enough = free_slots as usize >= self.slots_needed;
        if self.stalled {
            if enough {
                self.stalled = false;
                self.last_progress = now;
                return Some(CarrierChange::On);
            }
        } else if !enough && now >= saturating_add(self.last_progress, stall_timeout) {
            self.stalled = true;
            return Some(CarrierChange::Off);
        }
        None
    }

    /// When the shell must next call [`RxBacklog::drop_expired`] /
    /// [`RxBacklog::check_stall`] even if nothing else happens.
    pub fn next_deadline(&self) -> Option<Duration> {
        let expiry = self.queue.front().map(|q| q.expires);
        let stall = match (
            self.config.stall_timeout,
            self.stalled,
            self.queue.is_empty(),
        ) {
            (Some(t), false, false) => Some(saturating_add(self.last_progress, t)),
            _ => None,
        };
        match (expiry, stall) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

#[cfg(test)]
mod tests;
