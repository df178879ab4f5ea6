//! The netfront shell: a guest's vif as a port of the "frontends" worker, shuttling
//! frames between the guest's TAP (`eth0` in its namespace, with a virtio-net header)
//! and the netif rings in the guest's memory (xen-networking.md §1.3–§1.5, §1.9; Linux
//! `xen-netfront`).
//!
//! * setup: two ring pages initialised (`SHARED_RING_INIT`) and granted to the backend,
//!   two unbound event channels, 256 rx buffer pages granted writable and posted, 256 tx
//!   pages granted read-only, all persistently (granted once, reused for every frame);
//! * TAP → tx ring: `readv` puts the virtio-net header in a local buffer and the frame
//!   straight into free tx pages (the one copy, done by the kernel), [`plan_tx_frame`]
//!   lays it out (GSO extra for TSO, `csum_blank` for partial checksums, ≤ 16 data
//!   slots), push-and-check-notify; tx responses free the pages. Reading stops, and the
//!   TAP leaves the poll set, while fewer pages or ring slots than a 64 KiB frame needs
//!   are free (netfront's `netif_tx_stop_queue`), until responses free them;
//! * rx ring → TAP: [`parse_rx_frame`] checks every response, the frame is written with
//!   `writev` straight from the rx pages after a virtio-net header built from the rx
//!   flags and GSO extra (checksum offsets found by parsing the headers, as
//!   `skb_checksum_setup` does), and the same pages are posted again.
//!
//! The backend is a peer to distrust: a response the cores reject drops the frame and is
//! counted; an impossible ring index, an unknown tx id or a response for an empty rx slot
//! marks the vif broken (Linux `info->broken`): nothing more is read or written.
//!
//! Guest pages are only ever handed to the kernel as raw iovecs; no Rust reference into
//! them is formed (the backend may write the rx pages at any time).

use std::any::Any;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use hypervisor::evtchn::{EventFd, Port as EvtchnPort};
use hypervisor::grant::{GrantError, GrantRef};
use hypervisor::memory::{Gfn, GuestMemory, PAGE_SIZE};
use hypervisor::DomId;
use netcfg::tap::{GsoType as VnetGso, Tap, VirtioNetHdr};
use tracing::{info, warn};
use vswitch::datapath::{DriverCounters, Pkt, Port, PortCtx};
use vswitch::wire::FrameInfo;

use crate::env::{EnvError, FrontendEnv, PeerNotifier};
use crate::keys::FrontendKeys;
use crate::netfront::rx::{parse_rx_frame, rx_request, RxBufferSlots, RxFrameError, RxOutcome};
use crate::netfront::tx::{chunk_frame, plan_tx_frame, TxChunk, TxFrameMeta, TxInFlight};
use crate::netif::{
    ChecksumState, GsoInfo, GsoType, NetifRx, NetifTx, RxRequest, RxResponse, TxRequest,
    TxResponse, NETIF_RSP_OKAY, NET_RX_RING_SIZE, NET_TX_RING_SIZE,
};
use crate::ring::{FrontRing, RingError};

/// Rx buffers posted (the whole ring, like Linux's default `rx_target`).
pub const RX_BUFFERS: usize = NET_RX_RING_SIZE as usize;
/// Tx pages: one per tx ring slot.
pub const TX_PAGES: usize = NET_TX_RING_SIZE as usize;
/// Pages a frame of up to 65535 bytes needs (it is read before its size is known).
const FRAME_PAGES: usize = 16;
/// Requests such a frame produces: its data slots and a GSO extra.
const FRAME_REQUESTS: usize = FRAME_PAGES + 1;
/// Largest frame the tx ring can describe (u16 size).
const MAX_FRAME: usize = 0xFFFF;
/// Header bytes copied out of an rx page to locate the checksum fields.
const HEADER_PEEK: usize = 128;

/// Why a netfront could not be set up or connected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrontendError {
    /// [`NetfrontPort::setup`] ran twice, or [`NetfrontPort::connected`] before it.
    #[error("netfront is in the wrong state for this step: {0}")]
    State(&'static str),
    /// The environment refused (memory, grant refs, event channels).
    #[error("{0}")]
    Env(#[from] EnvError),
    /// A grant could not be offered or revoked.
    #[error("{0}")]
    Grant(#[from] GrantError),
    /// A ring page could not be initialised.
    #[error("{0}")]
    Ring(#[from] RingError),
    /// Grants the backend still holds (mapped rings, copies in flight); call
    /// [`NetfrontPort::teardown`] again later.
    #[error("{0} grants are still in use by the backend")]
    Busy(usize),
}

#[derive(Debug, Clone, Copy)]
struct Page {
    gfn: Gfn,
    gref: GrantRef,
}

type Ring<L> = FrontRing<L, (Arc<GuestMemory>, Gfn)>;

struct Rings {
    tx: Ring<NetifTx>,
    rx: Ring<NetifRx>,
    tx_port: EvtchnPort,
    rx_port: EvtchnPort,
    tx_evt: Arc<EventFd>,
    rx_evt: Arc<EventFd>,
    tx_pages: Vec<Page>,
    tx_free: Vec<u16>,
    tx_inflight: TxInFlight<u16>,
    rx_pages: Vec<Page>,
    rx_slots: RxBufferSlots<u16>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Counters {
    tx_frames: u64,
    tx_bytes: u64,
    tx_gso_frames: u64,
    tx_too_large: u64,
    tx_bad_vnet_hdr: u64,
    tx_unsupported_gso: u64,
    tx_error_responses: u64,
    tx_read_errors: u64,
    tx_queue_stops: u64,
    rx_frames: u64,
    rx_bytes: u64,
    rx_gso_frames: u64,
    rx_bad_offload: u64,
    rx_tap_errors: u64,
    rx_errors: [u64; 7],
    backend_broken: u64,
}

/// A guest's netfront driving its TAP (see the module doc).
pub struct NetfrontPort {
    name: String,
    env: Box<dyn FrontendEnv>,
    tap: Tap,
    backend: DomId,
    devid: u32,
    rings: Option<Rings>,
    /// Pages and grants waiting for the backend to let go (teardown retries).
    leftovers: Vec<Page>,
    notify: Option<(PeerNotifier, PeerNotifier)>,
    broken: bool,
    tx_stopped: bool,
    fds_changed: bool,
    c: Counters,
    tx_rsps: Vec<TxResponse>,
    rx_rsps: Vec<RxResponse>,
    rx_reqs: Vec<RxRequest>,
    rx_taken: Vec<u16>,
}

impl std::fmt::Debug for NetfrontPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetfrontPort")
            .field("name", &self.name)
            .field("backend", &self.backend)
            .field("devid", &self.devid)
            .field("set_up", &self.rings.is_some())
            .field("connected", &self.notify.is_some())
            .field("broken", &self.broken)
            .finish()
    }
}

fn iovec(ptr: *mut u8, len: usize) -> libc::iovec {
    libc::iovec {
        iov_base: ptr.cast(),
        iov_len: len,
    }
}

/// Finds the L4 header of a frame from its first bytes: `(l4_offset, protocol,
/// l4_header_len)` for TCP and UDP over IPv4/IPv6 (up to two VLAN tags and a few IPv6
/// extension headers), as `skb_checksum_setup` does before trusting a partial checksum.
fn locate_l4(h: &[u8]) -> Option<(u16, u8, u16)> {
    let be16 =
        |at: usize| -> Option<u16> { Some(u16::from_be_bytes([*h.get(at)?, *h.get(at + 1)?])) };
    let mut off = 12;
    let mut ethertype = be16(off)?;
    for _ in 0..2 {
        if ethertype == 0x8100 || ethertype == 0x88a8 {
            off += 4;
            ethertype = be16(off)?;
        }
    }
    let l3 = off + 2;
    let (mut proto, mut l4) = match ethertype {
        0x0800 => {
            let vihl = *h.get(l3)?;
            let frag = be16(l3 + 6)?;
            if vihl >> 4 != 4 || frag & 0x3fff != 0 {
                return None;
            }
            (*h.get(l3 + 9)?, l3 + usize::from(vihl & 0xf) * 4)
        }
        0x86dd => (*h.get(l3 + 6)?, l3 + 40),
        _ => return None,
    };
    if ethertype == 0x86dd {
        for _ in 0..4 {
            match proto {
                0 | 43 | 60 => {
                    let next = *h.get(l4)?;
                    l4 += (usize::from(*h.get(l4 + 1)?) + 1) * 8;
                    proto = next;
                }
                _ => break,
            }
        }
    }
    let l4_hlen = match proto {
        6 => usize::from(*h.get(l4 + 12)? >> 4) * 4,
        17 => 8,
        _ => return None,
    };
    Some((u16::try_from(l4).ok()?, proto, l4_hlen as u16))
}

impl NetfrontPort {
    /// A netfront for device `devid` of the domain `env` speaks for, talking to the
    /// backend in `backend`, driving `tap`, which must carry a virtio-net header (the
    /// offload flags travel in it; `TapConfig::with_offloads`) and be non-blocking.
    pub fn new(
        name: impl Into<String>,
        env: Box<dyn FrontendEnv>,
        tap: Tap,
        backend: DomId,
        devid: u32,
    ) -> Result<NetfrontPort, FrontendError> {
        if !tap.has_vnet_hdr() {
            return Err(FrontendError::State("the TAP has no virtio-net header"));
        }
        if let Err(e) = tap.set_nonblocking(true) {
            return Err(FrontendError::Env(EnvError::Other(e.to_string())));
        }
        Ok(NetfrontPort {
            name: name.into(),
            env,
            tap,
            backend,
            devid,
            rings: None,
            leftovers: Vec::new(),
            notify: None,
            broken: false,
            tx_stopped: false,
            fds_changed: false,
            c: Counters::default(),
            tx_rsps: vec![TxResponse::default(); NET_TX_RING_SIZE as usize],
            rx_rsps: vec![RxResponse::default(); NET_RX_RING_SIZE as usize],
            rx_reqs: Vec::with_capacity(NET_RX_RING_SIZE as usize),
            rx_taken: Vec::with_capacity(NET_RX_RING_SIZE as usize),
        })
    }

    /// The device id.
    pub fn devid(&self) -> u32 {
        self.devid
    }

    /// True once the backend broke the protocol (nothing more is exchanged).
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// Grants `gfn` to the backend under a fresh reference (freeing the frame on failure).
    fn grant_frame(
        &self,
        gfn: Gfn,
        readonly: bool,
        got: &mut Vec<Page>,
    ) -> Result<Page, FrontendError> {
        let gref = match self.env.alloc_gref() {
            Ok(r) => r,
            Err(e) => {
                self.env.free_frame(gfn);
                return Err(e.into());
            }
        };
        if let Err(e) = self
            .env
            .grant_table()
            .offer(gref, self.backend, gfn, readonly)
        {
            self.env.free_gref(gref);
            self.env.free_frame(gfn);
            return Err(e.into());
        }
        let p = Page { gfn, gref };
        got.push(p);
        Ok(p)
    }

    fn page(&self, readonly: bool, got: &mut Vec<Page>) -> Result<Page, FrontendError> {
        let gfn = self.env.alloc_frame()?;
        self.grant_frame(gfn, readonly, got)
    }

    /// A ring page: initialised (`SHARED_RING_INIT`) before it is granted, so the backend
    /// never sees a half-initialised header.
    fn ring<L: crate::netif::RingLayout>(
        &self,
        got: &mut Vec<Page>,
    ) -> Result<Ring<L>, FrontendError> {
        let mem = Arc::clone(self.env.memory());
        let gfn = self.env.alloc_frame()?;
        let ring = match FrontRing::<L, _>::init((mem, gfn)) {
            Ok(r) => r,
            Err(e) => {
                self.env.free_frame(gfn);
                return Err(e.into());
            }
        };
        self.grant_frame(gfn, false, got)?;
        Ok(ring)
    }

    /// Allocates and initialises the rings, grants them and the data pages to the
    /// backend, allocates the split event channels and posts every rx buffer; returns the
    /// keys to publish in `device/vif/<devid>/`.
    pub fn setup(&mut self) -> Result<FrontendKeys, FrontendError> {
        if self.rings.is_some() {
            return Err(FrontendError::State("already set up"));
        }
        let mut got: Vec<Page> = Vec::with_capacity(2 + TX_PAGES + RX_BUFFERS);
        let mut ports: Vec<EvtchnPort> = Vec::with_capacity(2);
        match self.build(&mut got, &mut ports) {
            Ok(rings) => {
                let keys = FrontendKeys {
                    tx_ring_ref: got[0].gref,
                    rx_ring_ref: got[1].gref,
                    event_channel_tx: rings.tx_port,
                    event_channel_rx: rings.rx_port,
                };
                self.rings = Some(rings);
                self.leftovers.extend_from_slice(&got[..2]);
                self.fds_changed = true;
                Ok(keys)
            }
            Err(e) => {
                for p in ports {
                    self.env.close(p);
                }
                self.leftovers.extend(got);
                let _ = self.release_leftovers();
                Err(e)
            }
        }
    }

    fn build(
        &self,
        got: &mut Vec<Page>,
        ports: &mut Vec<EvtchnPort>,
    ) -> Result<Rings, FrontendError> {
        let tx = self.ring::<NetifTx>(got)?;
        let mut rx = self.ring::<NetifRx>(got)?;
        let (tx_port, tx_evt) = self.env.alloc_unbound(self.backend)?;
        ports.push(tx_port);
        let (rx_port, rx_evt) = self.env.alloc_unbound(self.backend)?;
        ports.push(rx_port);
        let mut tx_pages = Vec::with_capacity(TX_PAGES);
        for _ in 0..TX_PAGES {
            tx_pages.push(self.page(true, got)?);
        }
        let mut rx_pages = Vec::with_capacity(RX_BUFFERS);
        for _ in 0..RX_BUFFERS {
            rx_pages.push(self.page(false, got)?);
        }
        let mut rx_slots = RxBufferSlots::new();
        let mut reqs = Vec::with_capacity(RX_BUFFERS);
        for (i, p) in rx_pages.iter().enumerate() {
            let idx = rx.req_prod_pvt().wrapping_add(i as u32);
            reqs.push(rx_request(idx, p.gref));
            let _ = rx_slots.post(idx, i as u16);
        }
        rx.produce_requests(&reqs)?;
        rx.push_requests()?;
        Ok(Rings {
            tx,
            rx,
            tx_port,
            rx_port,
            tx_evt,
            rx_evt,
            tx_pages,
            tx_free: (0..TX_PAGES as u16).collect(),
            tx_inflight: TxInFlight::new(),
            rx_pages,
            rx_slots,
        })
    }

    /// The backend is Connected: fetch the notifiers (the ports are bound now), start
    /// polling the TAP, and kick both rings so the backend looks at them.
    pub fn connected(&mut self) -> Result<(), FrontendError> {
        let Some(r) = &self.rings else {
            return Err(FrontendError::State("connected before setup"));
        };
        let tx = self.env.notifier(r.tx_port)?;
        let rx = self.env.notifier(r.rx_port)?;
        tx.notify();
        rx.notify();
        self.notify = Some((tx, rx));
        self.fds_changed = true;
        info!(
            "{}: connected to backend domain {}",
            self.name, self.backend
        );
        Ok(())
    }

    /// Stops: closes the event channels and revokes every grant. Grants the backend still
    /// holds (mapped rings, a copy in progress) cannot be revoked yet (XSA-396: never
    /// reuse a page the peer can still reach); they are kept and retried by the next
    /// call, which returns [`FrontendError::Busy`] until none is left.
    pub fn teardown(&mut self) -> Result<(), FrontendError> {
        if let Some(r) = self.rings.take() {
            self.env.close(r.tx_port);
            self.env.close(r.rx_port);
            self.leftovers.extend(r.tx_pages);
            self.leftovers.extend(r.rx_pages);
            self.fds_changed = true;
        }
        self.notify = None;
        self.release_leftovers()
    }

    fn release_leftovers(&mut self) -> Result<(), FrontendError> {
        let env = &self.env;
        self.leftovers
            .retain(|p| match env.grant_table().revoke(p.gref) {
                Ok(()) | Err(GrantError::NotGranted(_)) => {
                    env.free_gref(p.gref);
                    env.free_frame(p.gfn);
                    false
                }
                Err(GrantError::Busy(_)) => true,
                Err(_) => false,
            });
        match self.leftovers.len() {
            0 => Ok(()),
            n => Err(FrontendError::Busy(n)),
        }
    }

    fn set_broken(&mut self, what: &str) {
        if self.broken {
            return;
        }
        self.broken = true;
        self.c.backend_broken += 1;
        self.fds_changed = true;
        warn!(
            "{}: backend domain {} broke the netif protocol ({what}); vif stopped",
            self.name, self.backend
        );
    }

    // ---- tx: TAP → ring ------------------------------------------------------------------------

    /// Tx responses free pages and ids; restarts reading the TAP once a whole frame fits.
    fn reap_tx(&mut self) -> Result<(), &'static str> {
        let Some(r) = self.rings.as_mut() else {
            return Ok(());
        };
        loop {
            let n =
                r.tx.consume_responses(&mut self.tx_rsps)
                    .map_err(|_| "tx response index")?;
            for rsp in &self.tx_rsps[..n] {
                match r.tx_inflight.complete(rsp) {
                    Ok(Some((page, status))) => {
                        r.tx_free.push(page);
                        if status != NETIF_RSP_OKAY {
                            self.c.tx_error_responses += 1;
                        }
                    }
                    Ok(None) => {}
                    Err(e) => return Err(e.name()),
                }
            }
            if !r
                .tx
                .final_check_for_responses()
                .map_err(|_| "tx response index")?
            {
                break;
            }
        }
        if self.tx_stopped && tx_room(r) {
            self.tx_stopped = false;
            self.fds_changed = true;
        }
        Ok(())
    }

    /// Reads up to `budget` frames from the TAP onto the tx ring; `Ok(true)` if it stopped
    /// because of the budget.
    fn tap_to_ring(&mut self, budget: usize) -> Result<bool, &'static str> {
        let Some(r) = self.rings.as_mut() else {
            return Ok(false);
        };
        let mem = Arc::clone(self.env.memory());
        let fd = self.tap.as_raw_fd();
        let c = &mut self.c;
        let mut frames = 0;
        while frames < budget {
            if !tx_room(r) {
                if !self.tx_stopped {
                    self.tx_stopped = true;
                    self.fds_changed = true;
                    c.tx_queue_stops += 1;
                }
                break;
            }
            let mut hdr = [0u8; VirtioNetHdr::LEN];
            let mut iov = [iovec(std::ptr::null_mut(), 0); FRAME_PAGES + 1];
            iov[0] = iovec(hdr.as_mut_ptr(), hdr.len());
            let top = r.tx_free.len();
            let mut grefs = [0 as GrantRef; FRAME_PAGES];
            for k in 0..FRAME_PAGES {
                let page = r.tx_pages[usize::from(r.tx_free[top - 1 - k])];
                let p = mem
                    .raw_ptr(page.gfn, 0, PAGE_SIZE)
                    .map_err(|_| "tx page outside guest memory")?;
                iov[k + 1] = iovec(p, PAGE_SIZE);
                grefs[k] = page.gref;
            }
            // SAFETY: every iovec names memory valid for its length: the local header and
            // whole tx pages of the guest memory mapping (bounds-checked by `raw_ptr`,
            // alive while `mem` is), which only this frontend writes (they are granted
            // read-only) and which are free (not on the ring).
            let n = unsafe { libc::readv(fd, iov.as_ptr(), iov.len() as libc::c_int) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::WouldBlock && e.kind() != io::ErrorKind::Interrupted {
                    c.tx_read_errors += 1;
                }
                break;
            }
            frames += 1;
            let Some(len) = (n as usize).checked_sub(VirtioNetHdr::LEN) else {
                c.tx_bad_vnet_hdr += 1;
                continue;
            };
            if !(14..=MAX_FRAME).contains(&len) {
                c.tx_too_large += 1;
                continue;
            }
            let Ok(vh) = VirtioNetHdr::decode(&hdr) else {
                c.tx_bad_vnet_hdr += 1;
                continue;
            };
            let gso_type = match vh.gso_type {
                VnetGso::None => None,
                VnetGso::TcpV4 if vh.gso_size > 0 => Some(GsoType::TcpV4),
                VnetGso::TcpV6 if vh.gso_size > 0 => Some(GsoType::TcpV6),
                _ => {
                    c.tx_unsupported_gso += 1;
                    continue;
                }
            };
            let gso = gso_type.map(|gso_type| GsoInfo {
                gso_type,
                size: vh.gso_size,
            });
            let checksum = if vh.needs_csum {
                ChecksumState::Partial
            } else if vh.data_valid {
                ChecksumState::Validated
            } else {
                ChecksumState::Unknown
            };
            let pages = len.div_ceil(PAGE_SIZE);
            let mut chunks = [TxChunk::default(); FRAME_PAGES];
            let meta = TxFrameMeta { len, gso, checksum };
            let mut reqs = [TxRequest::default(); FRAME_REQUESTS];
            let placeholder = [0u16; FRAME_PAGES];
            let planned = chunk_frame(len, 0, &grefs[..pages], &mut chunks)
                .and_then(|nc| plan_tx_frame(&meta, &chunks[..nc], &placeholder[..nc], &mut reqs));
            let Ok(nreq) = planned else {
                c.tx_too_large += 1;
                continue;
            };
            // Every data slot gets a fresh id holding its page (pages were used in the
            // order they sit on top of the free stack); the GSO extra (slot 1) has none.
            for (i, req) in reqs[..nreq].iter_mut().enumerate() {
                if i == 1 && gso.is_some() {
                    continue;
                }
                let page = r.tx_free.pop().ok_or("tx page accounting")?;
                req.id = r.tx_inflight.alloc(page).map_err(|_| "tx id accounting")?;
            }
            match r.tx.produce_requests(&reqs[..nreq]) {
                Ok(w) if w == nreq => {}
                _ => return Err("tx ring"),
            }
            c.tx_frames += 1;
            c.tx_bytes += len as u64;
            if gso.is_some() {
                c.tx_gso_frames += 1;
            }
        }
        if r.tx.push_requests().map_err(|_| "tx ring")? {
            if let Some((tx, _)) = &self.notify {
                tx.notify();
            }
        }
        Ok(frames >= budget)
    }

    // ---- rx: ring → TAP ------------------------------------------------------------------------

    /// Writes every received frame to the TAP and posts its buffers again.
    fn ring_to_tap(&mut self) -> Result<(), &'static str> {
        let Some(r) = self.rings.as_mut() else {
            return Ok(());
        };
        let mem = Arc::clone(self.env.memory());
        let fd = self.tap.as_raw_fd();
        let c = &mut self.c;
        let taken = &mut self.rx_taken;
        let reposts = &mut self.rx_reqs;
        loop {
            let start = r.rx.rsp_cons();
            let n =
                r.rx.consume_responses(&mut self.rx_rsps)
                    .map_err(|_| "rx response index")?;
            reposts.clear();
            let mut pos = 0usize;
            while pos < n {
                let rsps = &self.rx_rsps[pos..n];
                let Some(outcome) = parse_rx_frame(rsps) else {
                    break;
                };
                let slots = outcome.slots().max(1);
                taken.clear();
                for s in 0..slots {
                    let page = r
                        .rx_slots
                        .take(start.wrapping_add((pos + s) as u32))
                        .ok_or("rx response for an empty slot")?;
                    taken.push(page);
                }
                match outcome {
                    RxOutcome::Dropped { reason, .. } => {
                        let i = RxFrameError::ALL
                            .iter()
                            .position(|e| *e == reason)
                            .unwrap_or(0);
                        c.rx_errors[i] += 1;
                    }
                    RxOutcome::Frame(f) => deliver(&mem, fd, r, taken, rsps, &f, c),
                }
                pos += slots;
                for &page in taken.iter() {
                    let idx = r.rx.req_prod_pvt().wrapping_add(reposts.len() as u32);
                    let gref = r.rx_pages[usize::from(page)].gref;
                    if r.rx_slots.post(idx, page).is_ok() {
                        reposts.push(rx_request(idx, gref));
                    }
                }
            }
            if !reposts.is_empty() {
                r.rx.produce_requests(reposts).map_err(|_| "rx ring")?;
                reposts.clear();
            }
            if r.rx.push_requests().map_err(|_| "rx ring")? {
                if let Some((_, rx)) = &self.notify {
                    rx.notify();
                }
            }
            if n > 0 {
                continue;
            }
            if !r
                .rx
                .final_check_for_responses()
                .map_err(|_| "rx response index")?
            {
                return Ok(());
            }
        }
    }
}

/// Whether a 64 KiB frame would fit: free pages, ring slots and ids.
fn tx_room(r: &Rings) -> bool {
    r.tx_free.len() >= FRAME_PAGES
        && r.tx.free_requests() as usize >= FRAME_REQUESTS
        && r.tx_inflight.available() >= FRAME_PAGES
}

/// Writes one received frame from its rx pages to the TAP.
fn deliver(
    mem: &GuestMemory,
    fd: RawFd,
    r: &Rings,
    taken: &[u16],
    rsps: &[RxResponse],
    f: &crate::netfront::rx::RxFrame,
    c: &mut Counters,
) {
    let mut iov =
        [iovec(std::ptr::null_mut(), 0); 1 + crate::netfront::rx::MAX_RX_FRAME_DATA_SLOTS];
    let mut vh_bytes = [0u8; VirtioNetHdr::LEN];
    let mut cnt = 1usize;
    let mut peek = [0u8; HEADER_PEEK];
    let mut peeked = 0usize;
    for d in f.data(rsps) {
        let Some(page) = taken
            .get(d.slot)
            .and_then(|&p| r.rx_pages.get(usize::from(p)))
        else {
            c.rx_bad_offload += 1;
            return;
        };
        let (off, len) = (usize::from(d.offset), usize::from(d.len));
        if peeked < HEADER_PEEK {
            let take = len.min(HEADER_PEEK - peeked);
            if mem
                .read(page.gfn, off, &mut peek[peeked..peeked + take])
                .is_err()
            {
                c.rx_bad_offload += 1;
                return;
            }
            peeked += take;
        }
        match (mem.raw_ptr(page.gfn, off, len), iov.get_mut(cnt)) {
            (Ok(p), Some(v)) => *v = iovec(p, len),
            _ => {
                c.rx_bad_offload += 1;
                return;
            }
        }
        cnt += 1;
    }
    let Some(vh) = rx_vnet_hdr(f, &peek[..peeked]) else {
        c.rx_bad_offload += 1;
        return;
    };
    vh_bytes.copy_from_slice(&vh.encode());
    iov[0] = iovec(vh_bytes.as_mut_ptr(), vh_bytes.len());
    // SAFETY: the iovecs name the local header and byte ranges of rx pages checked by
    // `raw_ptr` (offset + len ≤ 4096, validated by `parse_rx_frame`); the kernel only
    // reads them.
    let w = unsafe { libc::writev(fd, iov.as_ptr(), cnt as libc::c_int) };
    if w < 0 {
        c.rx_tap_errors += 1;
    } else {
        c.rx_frames += 1;
        c.rx_bytes += f.len as u64;
        if f.gso.is_some() {
            c.rx_gso_frames += 1;
        }
    }
}

/// The virtio-net header for a received frame: GSO type and size from the GSO extra,
/// checksum state from the rx flags, checksum offsets from the frame's own headers.
/// `None` when a partial checksum or GSO is announced on a frame whose TCP/UDP header
/// cannot be found.
fn rx_vnet_hdr(f: &crate::netfront::rx::RxFrame, head: &[u8]) -> Option<VirtioNetHdr> {
    let mut h = VirtioNetHdr::plain();
    match f.checksum {
        ChecksumState::Unknown => {}
        ChecksumState::Validated => h.data_valid = true,
        ChecksumState::Partial => {
            let (l4, proto, _) = locate_l4(head)?;
            h.needs_csum = true;
            h.csum_start = l4;
            h.csum_offset = if proto == 6 { 16 } else { 6 };
        }
    }
    if let Some(g) = f.gso {
        let (l4, proto, l4_hlen) = locate_l4(head)?;
        if proto != 6 {
            return None;
        }
        h.gso_type = match g.gso_type {
            GsoType::TcpV4 => VnetGso::TcpV4,
            GsoType::TcpV6 => VnetGso::TcpV6,
        };
        h.gso_size = g.size;
        h.hdr_len = l4 + l4_hlen;
        h.needs_csum = true;
        h.data_valid = false;
        h.csum_start = l4;
        h.csum_offset = 16;
    }
    Some(h)
}

impl Port for NetfrontPort {
    fn name(&self) -> &str {
        &self.name
    }

    fn fds(&self) -> Vec<RawFd> {
        let Some(r) = &self.rings else {
            return Vec::new();
        };
        if self.broken {
            return Vec::new();
        }
        let mut v = vec![r.tx_evt.as_raw_fd(), r.rx_evt.as_raw_fd()];
        if self.notify.is_some() && !self.tx_stopped {
            v.push(self.tap.as_raw_fd());
        }
        v
    }

    fn take_fds_changed(&mut self) -> bool {
        std::mem::take(&mut self.fds_changed)
    }

    fn receive(&mut self, _ctx: &mut PortCtx<'_>, _out: &mut Vec<Pkt>, budget: usize) -> bool {
        let Some(r) = &self.rings else {
            return false;
        };
        r.tx_evt.consume();
        r.rx_evt.consume();
        if self.broken || self.notify.is_none() {
            return false;
        }
        let step = self.reap_tx().and_then(|()| self.ring_to_tap());
        if let Err(what) = step {
            self.set_broken(what);
            return false;
        }
        if self.tx_stopped {
            return false;
        }
        match self.tap_to_ring(budget) {
            Ok(more) => more,
            Err(what) => {
                self.set_broken(what);
                false
            }
        }
    }

    fn transmit(
        &mut self,
        _ctx: &mut PortCtx<'_>,
        _pkt: &Pkt,
        _info: &FrameInfo,
    ) -> Result<(), vswitch::DropReason> {
        // A netfront is not a bridge port: frames reach it only through its rings.
        Err(vswitch::DropReason::PortDisabled)
    }

    fn carrier(&self) -> bool {
        self.notify.is_some() && !self.broken
    }

    fn counters(&self) -> DriverCounters {
        let c = self.c;
        let mut v: DriverCounters = vec![
            ("tx_frames", c.tx_frames),
            ("tx_bytes", c.tx_bytes),
            ("tx_gso_frames", c.tx_gso_frames),
            ("tx_too_large", c.tx_too_large),
            ("tx_bad_vnet_hdr", c.tx_bad_vnet_hdr),
            ("tx_unsupported_gso", c.tx_unsupported_gso),
            ("tx_error_responses", c.tx_error_responses),
            ("tx_read_errors", c.tx_read_errors),
            ("tx_queue_stops", c.tx_queue_stops),
            ("rx_frames", c.rx_frames),
            ("rx_bytes", c.rx_bytes),
            ("rx_gso_frames", c.rx_gso_frames),
            ("rx_bad_offload", c.rx_bad_offload),
            ("rx_tap_errors", c.rx_tap_errors),
            ("backend_broken", c.backend_broken),
        ];
        for (i, e) in RxFrameError::ALL.iter().enumerate() {
            v.push((e.name(), c.rx_errors.get(i).copied().unwrap_or(0)));
        }
        v
    }

    fn close(&mut self, _ctx: &mut PortCtx<'_>) {
        if let Err(e) = self.teardown() {
            warn!("{}: teardown: {e}", self.name);
        }
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locate_l4_finds_tcp_and_udp_behind_vlans_and_extension_headers() {
        let mut f = vec![0u8; 128];
        f[12..14].copy_from_slice(&[0x81, 0x00]);
        f[16..18].copy_from_slice(&[0x08, 0x00]);
        f[18] = 0x46; // IHL 6
        f[18 + 9] = 6;
        f[18 + 24 + 12] = 0x80; // TCP data offset 8 words
        assert_eq!(locate_l4(&f), Some((18 + 24, 6, 32)));
        // A fragment is refused.
        f[18 + 6] = 0x20;
        assert_eq!(locate_l4(&f), None);
        let mut g = vec![0u8; 128];
        g[12..14].copy_from_slice(&[0x86, 0xdd]);
        g[14 + 6] = 0; // hop-by-hop
        g[54] = 17; // next: UDP
        g[55] = 0; // 8 bytes
        assert_eq!(locate_l4(&g), Some((62, 17, 8)));
        assert_eq!(locate_l4(&g[..20]), None);
        let mut a = vec![0u8; 64];
        a[12..14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(locate_l4(&a), None);
    }
}
