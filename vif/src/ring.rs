//! One shared ring page and its two ends (`xen/io/ring.h`, xen-networking.md §1.1–§1.2).
//!
//! The page lives in guest memory: the frontend's own frame, or the backend's grant
//! mapping of it ([`RingPage`]). Each end keeps its private indices — front
//! `{req_prod_pvt, rsp_cons}`, back `{rsp_prod_pvt, req_cons}` — and publishes through the
//! four shared index words with atomics, so the protocol works between threads and between
//! processes mapping the same memfd.
//!
//! Hostile-peer rules (robustness.md §1.1, §3 a1/a2):
//! * the peer's producer index is checked before anything is read: a back end refuses
//!   `req_prod − rsp_prod_pvt > nr_ents` (`RING_REQUEST_PROD_OVERFLOW`), a front end refuses
//!   more responses than it has outstanding requests; both as [`RingError::Overflow`],
//!   which the caller treats as fatal for that vif. All index arithmetic is mod 2^32, so
//!   indices that go backwards wrap to huge differences and hit the same check;
//! * each slot is copied out of shared memory exactly once into a private buffer and only
//!   then decoded (XSA-155); the caller validates the decoded copy;
//! * each record we write is fully built in a zeroed private slot buffer — padding and the
//!   unused tail of the slot included — before it is copied in (XSA-216);
//! * an end never reads back the index words it owns: it keeps its own copies, so a peer
//!   scribbling on them can only confuse itself.

use std::marker::PhantomData;
use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;

use hypervisor::grant::GrantMapping;
use hypervisor::memory::{Gfn, GuestMemory, MemError};

use crate::netif::{
    RingIdx, RingLayout, RingRecord, SlotBytes, MAX_SLOT_SIZE, REQ_EVENT_OFFSET, REQ_PROD_OFFSET,
    RING_HEADER_SIZE, RSP_EVENT_OFFSET, RSP_PROD_OFFSET,
};

/// The 4096-byte frame that holds a shared ring.
pub trait RingPage {
    /// The guest memory containing the frame.
    fn memory(&self) -> &GuestMemory;
    /// The frame number inside [`RingPage::memory`].
    fn gfn(&self) -> Gfn;
}

/// The backend's view: the frontend's ring page held mapped through its grant.
impl RingPage for GrantMapping {
    fn memory(&self) -> &GuestMemory {
        GrantMapping::memory(self)
    }
    fn gfn(&self) -> Gfn {
        GrantMapping::gfn(self)
    }
}

/// The frontend's view: one of its own frames.
impl RingPage for (Arc<GuestMemory>, Gfn) {
    fn memory(&self) -> &GuestMemory {
        &self.0
    }
    fn gfn(&self) -> Gfn {
        self.1
    }
}

impl<T: RingPage + ?Sized> RingPage for &T {
    fn memory(&self) -> &GuestMemory {
        (**self).memory()
    }
    fn gfn(&self) -> Gfn {
        (**self).gfn()
    }
}

impl<T: RingPage + ?Sized> RingPage for Arc<T> {
    fn memory(&self) -> &GuestMemory {
        (**self).memory()
    }
    fn gfn(&self) -> Gfn {
        (**self).gfn()
    }
}

impl<T: RingPage + ?Sized> RingPage for Box<T> {
    fn memory(&self) -> &GuestMemory {
        (**self).memory()
    }
    fn gfn(&self) -> Gfn {
        (**self).gfn()
    }
}

/// Why a ring operation failed. [`RingError::Overflow`] means the peer is misbehaving and
/// the ring must not be used again (netback's `xenvif_fatal_tx_err`, netfront's "broken").
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RingError {
    /// The peer's producer index claims more entries than can possibly be outstanding.
    #[error(
        "{ring} ring: peer producer index {prod} is {} past our index {base} (at most {limit} possible)",
        prod.wrapping_sub(*base)
    )]
    Overflow {
        /// Which ring ("tx", "rx", "ctrl").
        ring: &'static str,
        /// The peer's producer index as read.
        prod: RingIdx,
        /// Our index it was compared against (`rsp_prod_pvt` on the back end, `rsp_cons`
        /// on the front end).
        base: RingIdx,
        /// The most entries that could legitimately lie between the two.
        limit: u32,
    },
    /// Attaching to an existing ring whose indices are inconsistent
    /// (`req_prod − rsp_prod > nr_ents`; Linux netback returns -EIO).
    #[error("{ring} ring: cannot attach, req_prod {req_prod} is more than {size} past rsp_prod {rsp_prod}")]
    AttachRefused {
        /// Which ring.
        ring: &'static str,
        /// Shared `req_prod` found.
        req_prod: RingIdx,
        /// Shared `rsp_prod` found.
        rsp_prod: RingIdx,
        /// Ring entries.
        size: u32,
    },
    /// A front end may only attach to a quiescent ring (every request answered).
    #[error("{ring} ring: cannot attach front end, {outstanding} requests are outstanding")]
    NotQuiescent {
        /// Which ring.
        ring: &'static str,
        /// `req_prod − rsp_prod`.
        outstanding: u32,
    },
    /// The ring page is not addressable (the frame is outside guest memory).
    #[error("ring page access failed: {0}")]
    Memory(#[from] MemError),
}

/// The producer's notification rule (`RING_PUSH_*_AND_CHECK_NOTIFY`): after moving the
/// shared producer index from `old` to `new`, notify iff the peer's event index lies in the
/// half-open window `(old, new]`, i.e. `(new − event) < (new − old)` mod 2^32.
#[inline]
pub fn notify_needed(old: RingIdx, new: RingIdx, event: RingIdx) -> bool {
    new.wrapping_sub(event) < new.wrapping_sub(old)
}

/// Slots copied per guest-memory access when moving a batch (1 KiB of stack at most).
const CHUNK_SLOTS: usize = 64;

/// The page plus the slot arithmetic shared by both ends.
struct SharedRing<L: RingLayout, P: RingPage> {
    page: P,
    _layout: PhantomData<L>,
}

impl<L: RingLayout, P: RingPage> SharedRing<L, P> {
    const MASK: u32 = L::NR_ENTS - 1;

    fn new(page: P) -> Result<Self, RingError> {
        const {
            assert!(L::SLOT_SIZE <= MAX_SLOT_SIZE);
            assert!(L::Request::SIZE <= L::SLOT_SIZE);
            assert!(L::Response::SIZE <= L::SLOT_SIZE);
            assert!(L::NR_ENTS.is_power_of_two());
        }
        let ring = SharedRing {
            page,
            _layout: PhantomData,
        };
        // Probe the whole page once so later accesses can only fail if the memory shrinks,
        // which sealing forbids.
        let mut probe = [0u8; 1];
        ring.mem()
            .read(ring.gfn(), hypervisor::memory::PAGE_SIZE - 1, &mut probe)?;
        Ok(ring)
    }

    fn mem(&self) -> &GuestMemory {
        self.page.memory()
    }

    fn gfn(&self) -> Gfn {
        self.page.gfn()
    }

    fn load(&self, offset: usize, order: Ordering) -> Result<RingIdx, RingError> {
        Ok(self.mem().load_u32(self.gfn(), offset, order)?)
    }

    fn store(&self, offset: usize, value: RingIdx, order: Ordering) -> Result<(), RingError> {
        Ok(self.mem().store_u32(self.gfn(), offset, value, order)?)
    }

    fn slot_offset(idx: RingIdx) -> usize {
        RING_HEADER_SIZE + (idx & Self::MASK) as usize * L::SLOT_SIZE
    }

    /// Copies `out.len()` consecutive slots starting at `start` out of shared memory (one
    /// volatile copy per contiguous run), then decodes the private copies.
    fn read_slots<R: RingRecord>(&self, start: RingIdx, out: &mut [R]) -> Result<(), RingError> {
        let mut buf = [0u8; CHUNK_SLOTS * MAX_SLOT_SIZE];
        let mut done = 0usize;
        while done < out.len() {
            let idx = start.wrapping_add(done as u32);
            let until_wrap = (L::NR_ENTS - (idx & Self::MASK)) as usize;
            let n = (out.len() - done).min(until_wrap).min(CHUNK_SLOTS);
            let bytes = &mut buf[..n * L::SLOT_SIZE];
            self.mem().read(self.gfn(), Self::slot_offset(idx), bytes)?;
            for (rec, raw) in out[done..done + n]
                .iter_mut()
                .zip(bytes.chunks_exact(L::SLOT_SIZE))
            {
                let mut slot = SlotBytes::default();
                slot[..L::SLOT_SIZE].copy_from_slice(raw);
                *rec = R::decode(&slot);
            }
            done += n;
        }
        Ok(())
    }

    /// Encodes each record into a zeroed private slot (padding and unused slot tail
    /// included) and copies consecutive slots starting at `start` into shared memory.
    fn write_slots<R: RingRecord>(&self, start: RingIdx, recs: &[R]) -> Result<(), RingError> {
        let mut buf = [0u8; CHUNK_SLOTS * MAX_SLOT_SIZE];
        let mut done = 0usize;
        while done < recs.len() {
            let idx = start.wrapping_add(done as u32);
            let until_wrap = (L::NR_ENTS - (idx & Self::MASK)) as usize;
            let n = (recs.len() - done).min(until_wrap).min(CHUNK_SLOTS);
            let bytes = &mut buf[..n * L::SLOT_SIZE];
            for (rec, raw) in recs[done..done + n]
                .iter()
                .zip(bytes.chunks_exact_mut(L::SLOT_SIZE))
            {
                let mut slot = SlotBytes::default();
                rec.encode(&mut slot);
                raw.copy_from_slice(&slot[..L::SLOT_SIZE]);
            }
            self.mem()
                .write(self.gfn(), Self::slot_offset(idx), bytes)?;
            done += n;
        }
        Ok(())
    }

    /// Publishes `new` in the producer word at `prod_offset` and evaluates the notify rule
    /// against the event word at `event_offset` (§1.2 push-and-check-notify).
    fn push(
        &self,
        prod_offset: usize,
        event_offset: usize,
        old: RingIdx,
        new: RingIdx,
    ) -> Result<bool, RingError> {
        // Release: every slot written before this store (the volatile copies in
        // `write_slots`) is visible to a consumer whose Acquire load sees `new`
        // (ring.h's write barrier before updating the producer index).
        self.store(prod_offset, new, Ordering::Release)?;
        // Full barrier (ring.h `xen_mb()`): the producer-index store must be globally
        // visible before we read the consumer's event index. Paired with the SeqCst fence
        // in `final_check` between the consumer's event store and its re-read of our
        // index, this is the store-buffering (Dekker) pattern: at least one side sees the
        // other's store, so either we notify or the consumer finds the new work itself.
        fence(Ordering::SeqCst);
        let event = self.load(event_offset, Ordering::Relaxed)?;
        Ok(notify_needed(old, new, event))
    }
}

/// The frontend end of a ring: produces requests, consumes responses.
pub struct FrontRing<L: RingLayout, P: RingPage> {
    shared: SharedRing<L, P>,
    req_prod_pvt: RingIdx,
    req_prod_pushed: RingIdx,
    rsp_cons: RingIdx,
}

impl<L: RingLayout, P: RingPage> std::fmt::Debug for FrontRing<L, P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrontRing")
            .field("ring", &L::NAME)
            .field("req_prod_pvt", &self.req_prod_pvt)
            .field("req_prod_pushed", &self.req_prod_pushed)
            .field("rsp_cons", &self.rsp_cons)
            .finish()
    }
}

impl<L: RingLayout, P: RingPage> FrontRing<L, P> {
    /// `SHARED_RING_INIT` + `FRONT_RING_INIT`: resets the shared header (all producer
    /// indices 0, both event indices 1, `pvt` and padding zeroed) and starts the private
    /// indices at 0. Only the frontend initialises a ring, before it grants the page.
    pub fn init(page: P) -> Result<Self, RingError> {
        let shared = SharedRing::<L, P>::new(page)?;
        shared
            .mem()
            .write(shared.gfn(), REQ_PROD_OFFSET, &[0u8; RING_HEADER_SIZE])?;
        shared.store(REQ_EVENT_OFFSET, 1, Ordering::Relaxed)?;
        shared.store(RSP_EVENT_OFFSET, 1, Ordering::Relaxed)?;
        // Nobody else may look at the page yet; the fence only makes the header complete
        // before whatever publication (grant, xenstore write) follows.
        fence(Ordering::SeqCst);
        Ok(FrontRing {
            shared,
            req_prod_pvt: 0,
            req_prod_pushed: 0,
            rsp_cons: 0,
        })
    }

    /// `FRONT_RING_ATTACH`: takes over an already initialised ring (a restarted external
    /// frontend). Only a quiescent ring can be adopted — `req_prod == rsp_prod` — because
    /// the private state of the previous owner (which requests it still expects answers
    /// for) is gone. Both private indices start at that value.
    pub fn attach(page: P) -> Result<Self, RingError> {
        let shared = SharedRing::<L, P>::new(page)?;
        let req_prod = shared.load(REQ_PROD_OFFSET, Ordering::Acquire)?;
        let rsp_prod = shared.load(RSP_PROD_OFFSET, Ordering::Acquire)?;
        if req_prod != rsp_prod {
            return Err(RingError::NotQuiescent {
                ring: L::NAME,
                outstanding: req_prod.wrapping_sub(rsp_prod),
            });
        }
        Ok(FrontRing {
            shared,
            req_prod_pvt: req_prod,
            req_prod_pushed: req_prod,
            rsp_cons: rsp_prod,
        })
    }

    /// The page the ring lives in.
    pub fn page(&self) -> &P {
        &self.shared.page
    }

    /// Entries in the ring (`RING_SIZE`).
    pub const fn size(&self) -> u32 {
        L::NR_ENTS
    }

    /// Next request index to fill (`req_prod_pvt`).
    pub fn req_prod_pvt(&self) -> RingIdx {
        self.req_prod_pvt
    }

    /// Next response index to consume (`rsp_cons`).
    pub fn rsp_cons(&self) -> RingIdx {
        self.rsp_cons
    }

    /// `RING_FREE_REQUESTS`: `nr_ents − (req_prod_pvt − rsp_cons)`.
    pub fn free_requests(&self) -> u32 {
        L::NR_ENTS.saturating_sub(self.req_prod_pvt.wrapping_sub(self.rsp_cons))
    }

    /// `RING_FULL`.
    pub fn is_full(&self) -> bool {
        self.free_requests() == 0
    }

    /// Requests produced but not yet answered (pushed or not).
    pub fn outstanding_requests(&self) -> u32 {
        self.req_prod_pvt.wrapping_sub(self.rsp_cons)
    }

    /// Writes up to [`FrontRing::free_requests`] requests into the slots at
    /// `req_prod_pvt..` without publishing them; returns how many were written.
    pub fn produce_requests(&mut self, reqs: &[L::Request]) -> Result<usize, RingError> {
        let n = reqs.len().min(self.free_requests() as usize);
        let batch = &reqs[..n];
        self.shared.write_slots(self.req_prod_pvt, batch)?;
        self.req_prod_pvt = self.req_prod_pvt.wrapping_add(n as u32);
        Ok(n)
    }

    /// `RING_PUSH_REQUESTS_AND_CHECK_NOTIFY`: publishes every produced request and returns
    /// whether the backend must be notified.
    pub fn push_requests(&mut self) -> Result<bool, RingError> {
        let old = self.req_prod_pushed;
        let new = self.req_prod_pvt;
        if old == new {
            return Ok(false);
        }
        let notify = self
            .shared
            .push(REQ_PROD_OFFSET, REQ_EVENT_OFFSET, old, new)?;
        self.req_prod_pushed = new;
        Ok(notify)
    }

    /// `RING_HAS_UNCONSUMED_RESPONSES` with the misbehaving-backend check: the backend
    /// cannot have answered more requests than we published (`rsp_prod − rsp_cons ≤
    /// req_prod − rsp_cons`, which implies Linux's `≤ nr_ents`).
    pub fn unconsumed_responses(&self) -> Result<u32, RingError> {
        // Acquire: responses written before the backend's Release store of rsp_prod are
        // visible to the slot reads that follow.
        let prod = self.shared.load(RSP_PROD_OFFSET, Ordering::Acquire)?;
        let n = prod.wrapping_sub(self.rsp_cons);
        let limit = self.req_prod_pushed.wrapping_sub(self.rsp_cons);
        if n > limit {
            return Err(RingError::Overflow {
                ring: L::NAME,
                prod,
                base: self.rsp_cons,
                limit,
            });
        }
        Ok(n)
    }

    /// Copies up to `out.len()` published responses out of the ring (each slot read once)
    /// and advances `rsp_cons`; returns how many.
    pub fn consume_responses(&mut self, out: &mut [L::Response]) -> Result<usize, RingError> {
        let n = out.len().min(self.unconsumed_responses()? as usize);
        self.shared.read_slots(self.rsp_cons, &mut out[..n])?;
        self.rsp_cons = self.rsp_cons.wrapping_add(n as u32);
        Ok(n)
    }

    /// `RING_FINAL_CHECK_FOR_RESPONSES`: before going idle, asks to be notified at the
    /// next response (`rsp_event = rsp_cons + 1`) and re-checks; `true` means responses
    /// are waiting and the caller must not sleep.
    pub fn final_check_for_responses(&mut self) -> Result<bool, RingError> {
        if self.unconsumed_responses()? > 0 {
            return Ok(true);
        }
        self.shared.store(
            RSP_EVENT_OFFSET,
            self.rsp_cons.wrapping_add(1),
            Ordering::Relaxed,
        )?;
        // Full barrier: our event store must be visible before we re-read rsp_prod;
        // pairs with the producer's fence in `push` (see there).
        fence(Ordering::SeqCst);
        Ok(self.unconsumed_responses()? > 0)
    }

    /// Asks to be notified when `rsp_prod` passes `idx` (a batching consumer may wait for
    /// several responses). Follow with [`FrontRing::unconsumed_responses`] to re-check.
    pub fn set_rsp_event(&self, idx: RingIdx) -> Result<(), RingError> {
        self.shared
            .store(RSP_EVENT_OFFSET, idx, Ordering::Relaxed)?;
        fence(Ordering::SeqCst);
        Ok(())
    }
}

/// The backend end of a ring: consumes requests, produces responses.
pub struct BackRing<L: RingLayout, P: RingPage> {
    shared: SharedRing<L, P>,
    rsp_prod_pvt: RingIdx,
    rsp_prod_pushed: RingIdx,
    req_cons: RingIdx,
}

impl<L: RingLayout, P: RingPage> std::fmt::Debug for BackRing<L, P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackRing")
            .field("ring", &L::NAME)
            .field("rsp_prod_pvt", &self.rsp_prod_pvt)
            .field("rsp_prod_pushed", &self.rsp_prod_pushed)
            .field("req_cons", &self.req_cons)
            .finish()
    }
}

impl<L: RingLayout, P: RingPage> BackRing<L, P> {
    /// `BACK_RING_ATTACH` as Linux netback does it: starts `rsp_prod_pvt` and `req_cons`
    /// at the ring's current `rsp_prod`, and refuses a ring whose `req_prod − rsp_prod >
    /// nr_ents` (-EIO in `xenvif_map_frontend_data_rings`).
    pub fn attach(page: P) -> Result<Self, RingError> {
        let shared = SharedRing::<L, P>::new(page)?;
        let rsp_prod = shared.load(RSP_PROD_OFFSET, Ordering::Acquire)?;
        let req_prod = shared.load(REQ_PROD_OFFSET, Ordering::Acquire)?;
        if req_prod.wrapping_sub(rsp_prod) > L::NR_ENTS {
            return Err(RingError::AttachRefused {
                ring: L::NAME,
                req_prod,
                rsp_prod,
                size: L::NR_ENTS,
            });
        }
        Ok(BackRing {
            shared,
            rsp_prod_pvt: rsp_prod,
            rsp_prod_pushed: rsp_prod,
            req_cons: rsp_prod,
        })
    }

    /// The page the ring lives in.
    pub fn page(&self) -> &P {
        &self.shared.page
    }

    /// Entries in the ring (`RING_SIZE`).
    pub const fn size(&self) -> u32 {
        L::NR_ENTS
    }

    /// Next request index to consume (`req_cons`).
    pub fn req_cons(&self) -> RingIdx {
        self.req_cons
    }

    /// Next response index to fill (`rsp_prod_pvt`).
    pub fn rsp_prod_pvt(&self) -> RingIdx {
        self.rsp_prod_pvt
    }

    /// Requests consumed but not yet answered (`req_cons − rsp_prod_pvt`).
    pub fn unanswered_requests(&self) -> u32 {
        self.req_cons.wrapping_sub(self.rsp_prod_pvt)
    }

    /// The frontend's published `req_prod`, checked against `RING_REQUEST_PROD_OVERFLOW`
    /// (`req_prod − rsp_prod_pvt > nr_ents` ⇒ [`RingError::Overflow`]; this also catches
    /// `req_prod − req_cons > nr_ents`, netback's "impossible number of requests", and
    /// indices that went backwards).
    pub fn req_prod(&self) -> Result<RingIdx, RingError> {
        // Acquire: requests written before the frontend's Release store of req_prod are
        // visible to the slot reads that follow.
        let prod = self.shared.load(REQ_PROD_OFFSET, Ordering::Acquire)?;
        if prod.wrapping_sub(self.rsp_prod_pvt) > L::NR_ENTS {
            return Err(RingError::Overflow {
                ring: L::NAME,
                prod,
                base: self.rsp_prod_pvt,
                limit: L::NR_ENTS,
            });
        }
        Ok(prod)
    }

    /// `XEN_RING_NR_UNCONSUMED_REQUESTS`: `min(req_prod − req_cons, nr_ents − (req_cons −
    /// rsp_prod_pvt))` — never more than there are free response slots — after the
    /// overflow check of [`BackRing::req_prod`].
    pub fn unconsumed_requests(&self) -> Result<u32, RingError> {
        let prod = self.req_prod()?;
        let published = prod.wrapping_sub(self.req_cons);
        let room = L::NR_ENTS.saturating_sub(self.unanswered_requests());
        Ok(published.min(room))
    }

    /// Copies up to `out.len()` requests out of the ring (each slot read exactly once, into
    /// `out`) and advances `req_cons`; returns how many. Every consumed request is owed a
    /// response.
    pub fn consume_requests(&mut self, out: &mut [L::Request]) -> Result<usize, RingError> {
        let n = out.len().min(self.unconsumed_requests()? as usize);
        self.shared.read_slots(self.req_cons, &mut out[..n])?;
        self.req_cons = self.req_cons.wrapping_add(n as u32);
        Ok(n)
    }

    /// Writes up to [`BackRing::unanswered_requests`] responses into the slots at
    /// `rsp_prod_pvt..` without publishing them; returns how many were written. Responses
    /// are written in consumption order, so while every consumed request is answered in
    /// order, each response lands in the slot of its request (the rx-ring rule, §1.4).
    pub fn produce_responses(&mut self, rsps: &[L::Response]) -> Result<usize, RingError> {
        let n = rsps.len().min(self.unanswered_requests() as usize);
        self.shared.write_slots(self.rsp_prod_pvt, &rsps[..n])?;
        self.rsp_prod_pvt = self.rsp_prod_pvt.wrapping_add(n as u32);
        Ok(n)
    }

    /// `RING_PUSH_RESPONSES_AND_CHECK_NOTIFY`: publishes every produced response and
    /// returns whether the frontend must be notified.
    pub fn push_responses(&mut self) -> Result<bool, RingError> {
        let old = self.rsp_prod_pushed;
        let new = self.rsp_prod_pvt;
        if old == new {
            return Ok(false);
        }
        let notify = self
            .shared
            .push(RSP_PROD_OFFSET, RSP_EVENT_OFFSET, old, new)?;
        self.rsp_prod_pushed = new;
        Ok(notify)
    }

    /// `RING_FINAL_CHECK_FOR_REQUESTS`: before going idle, asks to be notified at the next
    /// request (`req_event = req_cons + 1`) and re-checks; `true` means requests are
    /// waiting and the caller must not sleep.
    pub fn final_check_for_requests(&mut self) -> Result<bool, RingError> {
        if self.unconsumed_requests()? > 0 {
            return Ok(true);
        }
        self.shared.store(
            REQ_EVENT_OFFSET,
            self.req_cons.wrapping_add(1),
            Ordering::Relaxed,
        )?;
        // Full barrier: our event store must be visible before we re-read req_prod; pairs
        // with the producer's fence in `push` (see there).
        fence(Ordering::SeqCst);
        Ok(self.unconsumed_requests()? > 0)
    }

    /// Whether at least `needed` requests are waiting; if not, asks to be notified at the
    /// next request (`req_event = req_prod + 1`) and re-checks until `req_prod` is stable
    /// (Linux `xenvif_rx_ring_slots_available`). `false` means: sleep until notified,
    /// then ask again.
    pub fn has_requests_or_arm(&self, needed: u32) -> Result<bool, RingError> {
        loop {
            let prod = self.req_prod()?;
            if self.unconsumed_requests()? >= needed {
                return Ok(true);
            }
            self.set_req_event(prod.wrapping_add(1))?;
            if self.req_prod()? == prod {
                return Ok(false);
            }
        }
    }

    /// Asks to be notified when `req_prod` passes `idx` — netback's rx path uses
    /// `req_prod + 1` when too few rx buffers are posted for the head packet — followed by
    /// a full barrier; the caller must re-check [`BackRing::unconsumed_requests`].
    pub fn set_req_event(&self, idx: RingIdx) -> Result<(), RingError> {
        self.shared
            .store(REQ_EVENT_OFFSET, idx, Ordering::Relaxed)?;
        fence(Ordering::SeqCst);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
