//! The netback shell: one vif's backend as a datapath [`Port`] of the switch worker
//! (xen-networking.md §1.2–§1.8, robustness.md §1.1 and §3(a); Linux `xen-netback`).
//!
//! It maps the frontend's two ring pages through their grants, binds the frontend's
//! event channels, and drives the pure cores with what it copies off the rings:
//!
//! * **tx** (guest → switch, [`Port::receive`]): every published request is copied once
//!   into a private 256-entry buffer (XSA-155), [`build_tx_packet`] decides each packet's
//!   fate, the credit limiter ([`CreditLimiter`]) is asked before a packet is taken, and
//!   the fragments of every packet of the round are grant-copied into one dom0 pool buffer
//!   each with a single `GNTTABOP_copy` batch. Responses for every consumed slot (ERROR
//!   for a failed copy or a dropped packet, NULL for extras) are written in
//!   [`Port::complete_rx`] and pushed, with push-and-check-notify, in [`Port::flush`].
//! * **rx** (switch → guest, [`Port::transmit`]): the frame's pool buffer is retained
//!   and queued in the bounded [`RxBacklog`]; at [`Port::flush`] (and when the frontend
//!   posts buffers) the backlog drains while posted requests suffice: [`plan_rx`] gives
//!   responses and copies, the copies of the whole drain go in one batch, a failed copy
//!   overwrites its slot's status. A GSO frame the frontend cannot take is cut with
//!   [`TcpSegments`] and a partial checksum it cannot take is completed with
//!   [`ChecksumCompletion`] — both without touching the shared buffer: the rewritten
//!   headers are written into a per-vif scratch buffer and the payload is copied from
//!   the original, so the grant copies name two sources.
//!
//! A fatal verdict disables this vif only: carrier off, rings no longer read, fds no longer
//! polled, one warning logged, the reason counted (Linux `xenvif_fatal_tx_err`). Drops are
//! counted by reason. Nothing on the hot path allocates: request, response and copy
//! buffers are kept in the port and reused.
//!
//! Direction names follow the rings: `tx_*` counters are frames the guest sent (the
//! switch's receive side), `rx_*` frames delivered to the guest.

use std::any::Any;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use hypervisor::evtchn::{EventFd, EvtchnError, Notifier, Port as EvtchnPort};
use hypervisor::grant::{
    CopyPtr, GntSt, GrantCopy, GrantMapping, GrantRef, GNTCOPY_DEST_GREF, GNTCOPY_SOURCE_GREF,
};
use hypervisor::hv::Hypervisor;
use hypervisor::memory::{Gfn, PAGE_SIZE};
use hypervisor::{DomId, DOM0, DOMID_SELF};
use tracing::{info, warn};
use vswitch::datapath::{BufId, BufferPool, DriverCounters, Pkt, Port, PortCtx, HEADROOM};
use vswitch::wire::gso::{ChecksumCompletion, TcpSegments, MAX_HEADER_LEN};
use vswitch::wire::{FrameInfo, L3Info};
use vswitch::{FrameMeta, Gso, GsoKind, Timestamp};

use crate::keys::{EventChannelKeys, FrontendFeatures, FrontendRings};
use crate::netback::credit::{CreditDecision, CreditLimiter, TxRate};
use crate::netback::reason::{DropReason, FatalReason, ReasonCounters};
use crate::netback::rx::{
    apply_copy_status, plan_rx, CarrierChange, RxBacklog, RxBacklogConfig, RxCopy, RxPacketInfo,
    MAX_RX_PACKET_LEN, MAX_RX_SLOTS,
};
use crate::netback::tx::{
    build_tx_packet, McastOp, TxLimits, TxOutcome, TxPacket, TxSlotLayout, XEN_NETBK_MCAST_MAX,
};
use crate::netif::{
    ChecksumState, GsoInfo, GsoType, NetifRx, NetifTx, RxRequest, RxResponse, TxRequest,
    TxResponse, NETIF_RSP_ERROR, NETIF_RSP_OKAY, NET_TX_RING_SIZE,
};
use crate::ring::{BackRing, RingError};

/// Most grant-copy operations queued for one rx batch before it is flushed.
const RX_OPS_BATCH: usize = 1024;
/// Worst case of copy operations one rx packet needs: each data slot may take a header
/// piece and a payload that straddles two dom0 pages.
const RX_OPS_PER_PACKET: usize = MAX_RX_SLOTS * 3;
/// Header slots in the scratch buffer (each [`MAX_HEADER_LEN`] bytes, never straddling a
/// page because 4096 is a multiple of 256).
const SCRATCH_SLOTS: usize = vswitch::datapath::BUF_SIZE / MAX_HEADER_LEN;

/// How one vif's backend is set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetbackConfig {
    /// The port's name (`vif<domid>.<devid>`).
    pub name: String,
    /// The frontend's domain.
    pub domid: DomId,
    /// The device id (`<N>` in `device/vif/<N>`).
    pub devid: u32,
    /// The `rate` key: credit-based tx limit.
    pub rate: TxRate,
}

impl NetbackConfig {
    /// A vif named `vif<domid>.<devid>` without a rate limit and with Linux's backlog.
    pub fn new(domid: DomId, devid: u32) -> NetbackConfig {
        NetbackConfig {
            name: format!("vif{domid}.{devid}"),
            domid,
            devid,
            rate: TxRate::UNLIMITED,
        }
    }
}

/// Why [`NetbackPort::connect`] refused the frontend's rings (Linux `connect()` /
/// `xenvif_map_frontend_data_rings` failing; the caller reports it with
/// `xenbus_dev_fatal`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectError {
    /// The port is connected already.
    #[error("already connected")]
    AlreadyConnected,
    /// The frontend's domain does not exist.
    #[error("domain {0} does not exist")]
    NoDomain(DomId),
    /// A ring grant could not be mapped.
    #[error("mapping the {ring} ring grant {gref}: {}", status.name())]
    MapRing {
        /// "tx" or "rx".
        ring: &'static str,
        /// The grant reference.
        gref: GrantRef,
        /// The grant status.
        status: GntSt,
    },
    /// A ring's indices are inconsistent (`req_prod − rsp_prod > 256`).
    #[error("{0}")]
    Ring(#[from] RingError),
    /// Binding an event channel failed.
    #[error("binding event channel {port}: {source}")]
    Evtchn {
        /// The frontend's port.
        port: EvtchnPort,
        /// What failed.
        source: EvtchnError,
    },
}

/// Plain counters of one vif (see the module doc for the direction names).
#[derive(Debug, Default, Clone, Copy)]
struct Counters {
    tx_frames: u64,
    tx_bytes: u64,
    tx_gso_frames: u64,
    tx_max_frame: u64,
    tx_no_buffer: u64,
    tx_credit_waits: u64,
    tx_multicast_requests: u64,
    tx_multicast_list_full: u64,
    rx_frames: u64,
    rx_bytes: u64,
    rx_gso_frames: u64,
    rx_max_frame: u64,
    rx_segmented_frames: u64,
    rx_segments: u64,
    rx_csum_completed: u64,
    rx_not_connected: u64,
    rx_unsupported_offload: u64,
    rx_no_scratch: u64,
    rx_stalls: u64,
    carrier_changes: u64,
    connects: u64,
    disconnects: u64,
}

/// How a queued rx packet is laid into the guest's buffers.
#[derive(Debug, Clone, Copy)]
enum RxForm {
    /// The frame as it is, with its offload metadata.
    Whole {
        gso: Option<GsoInfo>,
        checksum: ChecksumState,
    },
    /// The frame with its partial checksum completed in rewritten headers.
    Completed(ChecksumCompletion),
    /// Segment `.1` of a TCP GSO frame.
    Segment(TcpSegments, u16),
}

#[derive(Debug, Clone, Copy)]
struct RxItem {
    buf: BufId,
    off: usize,
    len: usize,
    form: RxForm,
}

impl RxItem {
    /// Bytes delivered to the guest.
    fn delivered_len(&self) -> usize {
        match self.form {
            RxForm::Whole { .. } => self.len,
            RxForm::Completed(c) => c.len(),
            RxForm::Segment(s, i) => s.segment_len(usize::from(i)),
        }
    }

    fn info(&self) -> RxPacketInfo {
        let (gso, checksum) = match self.form {
            RxForm::Whole { gso, checksum } => (gso, checksum),
            // Headers rewritten by us carry complete, correct checksums.
            RxForm::Completed(_) | RxForm::Segment(..) => (None, ChecksumState::Validated),
        };
        RxPacketInfo {
            len: self.delivered_len(),
            gso,
            checksum,
            hash: None,
        }
    }
}

/// One outcome of a tx round, answered in `complete_rx`.
#[derive(Debug, Clone, Copy)]
enum TxEntry {
    Packet {
        start: usize,
        pkt: TxPacket,
        buf: BufId,
        failed: u32,
    },
    Answer {
        start: usize,
        layout: TxSlotLayout,
        status: i16,
    },
}

/// One packet of the current rx copy batch.
#[derive(Debug, Clone, Copy)]
struct RxBatchPacket {
    buf: BufId,
    ops: (usize, usize),
    gso: bool,
    len: usize,
}

struct Connection {
    tx: BackRing<NetifTx, GrantMapping>,
    rx: BackRing<NetifRx, GrantMapping>,
    local_ports: Vec<EvtchnPort>,
    tx_evt: Arc<EventFd>,
    rx_evt: Option<Arc<EventFd>>,
    tx_notify: Notifier,
    rx_notify: Notifier,
    features: FrontendFeatures,
}

/// The dom0 backend of one vif, a switch port (see the module doc).
pub struct NetbackPort {
    cfg: NetbackConfig,
    rx_backlog: Option<RxBacklogConfig>,
    /// The connection's clocks (credit window, backlog progress) start at the first
    /// datapath call after `connect`, which is where the time is known.
    clock_pending: bool,
    conn: Option<Connection>,
    fatal: Option<FatalReason>,
    fds_changed: bool,
    carrier: bool,
    limits: TxLimits,
    credit: CreditLimiter,
    credit_wait: Option<Duration>,
    backlog: RxBacklog<RxItem>,
    // tx scratch
    reqs: Vec<TxRequest>,
    reqs_head: usize,
    reqs_tail: usize,
    round: Vec<TxEntry>,
    tx_ops: Vec<GrantCopy>,
    tx_op_frag: Vec<(u16, u8)>,
    tx_rsps: Vec<TxResponse>,
    // rx scratch
    rx_reqs: [RxRequest; MAX_RX_SLOTS],
    rx_rsps: Vec<RxResponse>,
    rx_ops: Vec<GrantCopy>,
    rx_op_copy: Vec<(usize, RxCopy)>,
    rx_batch: Vec<RxBatchPacket>,
    scratch: Option<BufId>,
    scratch_used: usize,
    c: Counters,
    reasons: ReasonCounters,
    /// The frontend's multicast list, kept as Linux netback keeps it (bounded; no
    /// filtering is done here: every group is delivered).
    mcast: Vec<[u8; 6]>,
}

impl std::fmt::Debug for NetbackPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetbackPort")
            .field("name", &self.cfg.name)
            .field("connected", &self.conn.is_some())
            .field("fatal", &self.fatal)
            .finish()
    }
}

fn dur(t: Timestamp) -> Duration {
    Duration::from_millis(t.millis())
}

fn stamp(d: Duration) -> Timestamp {
    Timestamp::from_millis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn gso_kind(g: GsoType) -> GsoKind {
    match g {
        GsoType::TcpV4 => GsoKind::TcpV4,
        GsoType::TcpV6 => GsoKind::TcpV6,
    }
}

/// Fatal counter names: `fatal_<reason>` (the reason names themselves are drop-style).
fn fatal_counter(r: FatalReason) -> &'static str {
    match r {
        FatalReason::ImpossibleRequestCount => "fatal_impossible_request_count",
        FatalReason::SlotsExceedRequests => "fatal_slots_exceed_requests",
        FatalReason::MaliciousSlotCount => "fatal_malicious_slot_count",
        FatalReason::CrossPageBoundary => "fatal_cross_page_boundary",
        FatalReason::MissingExtraInfo => "fatal_missing_extra_info",
        FatalReason::InvalidExtraType => "fatal_invalid_extra_type",
        FatalReason::GsoSizeZero => "fatal_gso_size_zero",
        FatalReason::BadGsoType => "fatal_bad_gso_type",
    }
}

/// Appends grant-copy operations moving `len` bytes between a frontend grant and a dom0
/// pool buffer, split wherever the pool side crosses a dom0 page (`offset + len ≤ 4096`
/// on both sides, §2). `to_guest` selects the direction. Returns how many were added.
#[allow(clippy::too_many_arguments)]
fn push_pool_copies(
    ops: &mut Vec<GrantCopy>,
    pool: &BufferPool,
    buf: BufId,
    mut buf_off: usize,
    domid: DomId,
    gref: GrantRef,
    mut gref_off: usize,
    mut len: usize,
    to_guest: bool,
) -> usize {
    let mut n = 0;
    while len > 0 {
        let (gfn, page_off): (Gfn, usize) = pool.frame_of(buf, buf_off);
        let piece = len.min(PAGE_SIZE - page_off);
        let local = CopyPtr {
            gref_or_gfn: gfn,
            domid: DOMID_SELF,
            offset: page_off as u16,
        };
        let remote = CopyPtr {
            gref_or_gfn: u64::from(gref),
            domid,
            offset: gref_off as u16,
        };
        let (source, dest, flags) = if to_guest {
            (local, remote, GNTCOPY_DEST_GREF)
        } else {
            (remote, local, GNTCOPY_SOURCE_GREF)
        };
        ops.push(GrantCopy {
            source,
            dest,
            len: piece as u16,
            flags,
            status: GntSt::Okay,
        });
        buf_off += piece;
        gref_off += piece;
        len -= piece;
        n += 1;
    }
    n
}

impl NetbackPort {
    /// A disconnected backend (carrier off, no fds): it can be added to a worker and
    /// attached to a bridge before the frontend connects (Xen attaches `vifX.Y` at
    /// backend InitWait).
    pub fn new(cfg: NetbackConfig) -> NetbackPort {
        let rate = cfg.rate;
        NetbackPort {
            cfg,
            rx_backlog: None,
            clock_pending: false,
            conn: None,
            fatal: None,
            fds_changed: false,
            carrier: false,
            limits: TxLimits::default(),
            credit: CreditLimiter::new(rate, Duration::ZERO),
            credit_wait: None,
            backlog: RxBacklog::new(RxBacklogConfig::default(), Duration::ZERO),
            reqs: vec![TxRequest::default(); NET_TX_RING_SIZE as usize],
            reqs_head: 0,
            reqs_tail: 0,
            round: Vec::with_capacity(NET_TX_RING_SIZE as usize),
            tx_ops: Vec::with_capacity(vswitch::MAX_BATCH * 2 * 19),
            tx_op_frag: Vec::with_capacity(vswitch::MAX_BATCH * 2 * 19),
            tx_rsps: Vec::with_capacity(NET_TX_RING_SIZE as usize),
            rx_reqs: [RxRequest::default(); MAX_RX_SLOTS],
            rx_rsps: Vec::with_capacity(256),
            rx_ops: Vec::with_capacity(RX_OPS_BATCH),
            rx_op_copy: Vec::with_capacity(RX_OPS_BATCH),
            rx_batch: Vec::with_capacity(256),
            scratch: None,
            scratch_used: 0,
            c: Counters::default(),
            reasons: ReasonCounters::default(),
            mcast: Vec::new(),
        }
    }

    /// Overrides the rx backlog limits (tests and tuning); `None` (the default) takes
    /// Linux's for the frontend's `feature-rx-notify` at connect.
    pub fn set_rx_backlog(&mut self, config: Option<RxBacklogConfig>) {
        self.rx_backlog = config;
    }

    /// Starts the connection's clocks at the first call that knows the time.
    fn sync_clock(&mut self, now: Timestamp) {
        if !self.clock_pending {
            return;
        }
        self.clock_pending = false;
        let now = dur(now);
        let config = *self.backlog.config();
        self.backlog = RxBacklog::new(config, now);
        self.credit = CreditLimiter::new(self.cfg.rate, now);
    }

    /// The configuration.
    pub fn config(&self) -> &NetbackConfig {
        &self.cfg
    }

    /// Whether the rings are connected.
    pub fn is_connected(&self) -> bool {
        self.conn.is_some()
    }

    /// The reason this vif was disabled, if a fatal error happened since the last
    /// connect.
    pub fn fatal(&self) -> Option<FatalReason> {
        self.fatal
    }

    /// Drop and fatal counters by reason.
    pub fn reasons(&self) -> &ReasonCounters {
        &self.reasons
    }

    /// Maps the frontend's rings, attaches to them (refusing inconsistent indices), binds
    /// its event channel(s) and starts serving; the worker then polls the new eventfds.
    /// Features are honoured from `rings` (rx-copy is required by
    /// [`FrontendRings::parse`]; rx-notify sets the backlog timers; sg, GSO and checksum
    /// offload decide how frames are delivered).
    pub fn connect(&mut self, hv: &Hypervisor, rings: &FrontendRings) -> Result<(), ConnectError> {
        if self.conn.is_some() {
            return Err(ConnectError::AlreadyConnected);
        }
        let domid = self.cfg.domid;
        let table = hv.grant_table(domid).ok_or(ConnectError::NoDomain(domid))?;
        let map =
            |ring, gref| {
                GrantMapping::map(&table, gref, DOM0, false)
                    .map_err(|status| ConnectError::MapRing { ring, gref, status })
            };
        let tx = BackRing::<NetifTx, _>::attach(map("tx", rings.tx_ring_ref)?)?;
        let rx = BackRing::<NetifRx, _>::attach(map("rx", rings.rx_ring_ref)?)?;
        let ev = hv.evtchn();
        let mut local_ports = Vec::with_capacity(2);
        let bind = |port: EvtchnPort, bound: &mut Vec<EvtchnPort>| {
            let local = ev
                .bind_interdomain(DOM0, domid, port)
                .map_err(|source| ConnectError::Evtchn { port, source })?;
            bound.push(local);
            let fd = ev.pending_fd(DOM0, local);
            let n = ev.notifier(DOM0, local);
            match (fd, n) {
                (Ok(fd), Ok(n)) => Ok((fd, n)),
                (Err(source), _) | (_, Err(source)) => Err(ConnectError::Evtchn { port, source }),
            }
        };
        let bound = match rings.event_channels {
            EventChannelKeys::Split { tx, rx } => bind(tx, &mut local_ports).and_then(|t| {
                let r = bind(rx, &mut local_ports)?;
                Ok((t, Some(r)))
            }),
            EventChannelKeys::Single(p) => bind(p, &mut local_ports).map(|t| (t, None)),
        };
        let ((tx_evt, tx_notify), rx_side) = match bound {
            Ok(b) => b,
            Err(e) => {
                for p in local_ports {
                    let _ = ev.close(DOM0, p);
                }
                return Err(e);
            }
        };
        let (rx_evt, rx_notify) = match rx_side {
            Some((fd, n)) => (Some(fd), n),
            None => (None, tx_notify.clone()),
        };
        let features = rings.features;
        let backlog_cfg = self
            .rx_backlog
            .unwrap_or_else(|| RxBacklogConfig::for_frontend(features.rx_notify));
        self.backlog = RxBacklog::new(backlog_cfg, Duration::ZERO);
        self.credit = CreditLimiter::new(self.cfg.rate, Duration::ZERO);
        self.clock_pending = true;
        self.credit_wait = None;
        self.reqs_head = 0;
        self.reqs_tail = 0;
        self.fatal = None;
        self.conn = Some(Connection {
            tx,
            rx,
            local_ports,
            tx_evt,
            rx_evt,
            tx_notify,
            rx_notify,
            features,
        });
        self.c.connects += 1;
        self.fds_changed = true;
        self.update_carrier();
        info!(
            "{}: connected to domain {domid} (tx-ring-ref {}, rx-ring-ref {})",
            self.cfg.name, rings.tx_ring_ref, rings.rx_ring_ref
        );
        Ok(())
    }

    /// Stops serving the frontend: queued rx packets are purged (buffers released),
    /// partially read tx requests discarded, the rings unmapped (the grants become
    /// revocable again), the event channels closed, carrier off. Nothing is written to
    /// the rings afterwards (robustness a12).
    pub fn disconnect(&mut self, ctx: &mut PortCtx<'_>) {
        self.mcast.clear();
        self.flush_rx_copies(ctx.pool, ctx.hv);
        let Some(conn) = self.conn.take() else {
            self.release_scratch(ctx.pool);
            return;
        };
        let pool = &mut *ctx.pool;
        self.backlog.purge(|item| pool.release(item.buf));
        // Buffers of the last round's packets belong to the worker (forwarded) or were
        // released already (failed copies).
        self.round.clear();
        self.release_scratch(ctx.pool);
        for p in &conn.local_ports {
            let _ = ctx.hv.evtchn().close(DOM0, *p);
        }
        drop(conn);
        self.reqs_head = 0;
        self.reqs_tail = 0;
        self.credit_wait = None;
        self.fatal = None;
        self.c.disconnects += 1;
        self.fds_changed = true;
        self.update_carrier();
        info!("{}: disconnected", self.cfg.name);
    }

    /// Applies a new `rate` live (xenstore watch on `rate`, `xen_net_rate_changed`).
    pub fn set_rate(&mut self, rate: TxRate, now: Timestamp) {
        self.sync_clock(now);
        self.cfg.rate = rate;
        self.credit.set_rate(rate, dur(now));
        if self.credit_wait.take().is_some() {
            if let Some(c) = &self.conn {
                c.tx_evt.signal();
            }
        }
    }

    fn release_scratch(&mut self, pool: &mut BufferPool) {
        if let Some(s) = self.scratch.take() {
            pool.release(s);
        }
        self.scratch_used = 0;
    }

    fn update_carrier(&mut self) {
        let on = self.conn.is_some() && self.fatal.is_none() && !self.backlog.is_stalled();
        if on != self.carrier {
            self.carrier = on;
            self.c.carrier_changes += 1;
        }
    }

    /// Disables the vif (XSA-90: only flags, no teardown on the fast path).
    fn set_fatal(&mut self, reason: FatalReason, pool: &mut BufferPool) {
        if self.fatal.is_some() {
            return;
        }
        self.fatal = Some(reason);
        self.reasons.fatal(reason);
        warn!(
            "{}: frontend of domain {} broke the netif protocol ({reason}); vif disabled",
            self.cfg.name, self.cfg.domid
        );
        self.backlog.purge(|item| pool.release(item.buf));
        self.fds_changed = true;
        self.update_carrier();
    }

    // ---- tx: guest → switch ------------------------------------------------------------------

    /// Copies every newly published request into the private buffer.
    fn fill_reqs(&mut self) -> Result<(), RingError> {
        let Some(conn) = self.conn.as_mut() else {
            return Ok(());
        };
        let free = &mut self.reqs[self.reqs_tail..];
        let n = conn.tx.consume_requests(free)?;
        self.reqs_tail += n;
        Ok(())
    }

    fn tx_round(&mut self, ctx: &mut PortCtx<'_>, out: &mut Vec<Pkt>, budget: usize) -> bool {
        // Answered entries are gone: move the unprocessed tail to the front.
        if self.reqs_head > 0 {
            self.reqs.copy_within(self.reqs_head..self.reqs_tail, 0);
            self.reqs_tail -= self.reqs_head;
            self.reqs_head = 0;
        }
        let now = dur(ctx.now);
        let domid = self.cfg.domid;
        let mut packets = 0usize;
        let mut more = false;
        loop {
            if self.fatal.is_some() || self.credit_wait.is_some() {
                break;
            }
            if packets >= budget {
                more = true;
                break;
            }
            if let Err(e) = self.fill_reqs() {
                self.set_fatal(FatalReason::from(&e), ctx.pool);
                break;
            }
            if self.reqs_head == self.reqs_tail {
                let Some(conn) = self.conn.as_mut() else {
                    break;
                };
                match conn.tx.final_check_for_requests() {
                    Ok(true) => continue,
                    Ok(false) => break,
                    Err(e) => {
                        self.set_fatal(FatalReason::from(&e), ctx.pool);
                        break;
                    }
                }
            }
            let start = self.reqs_head;
            let pending = &self.reqs[start..self.reqs_tail];
            let Some(outcome) = build_tx_packet(pending, &self.limits) else {
                break;
            };
            match outcome {
                TxOutcome::Fatal(reason) => {
                    self.set_fatal(reason, ctx.pool);
                    break;
                }
                TxOutcome::Dropped { reason, layout } => {
                    self.reasons.drop(reason);
                    self.round.push(TxEntry::Answer {
                        start,
                        layout,
                        status: NETIF_RSP_ERROR,
                    });
                    self.reqs_head += layout.slots;
                }
                TxOutcome::Multicast { op, layout } => {
                    // Linux netback's list: bounded, ERROR when full (no filtering is
                    // done with it: every group is delivered).
                    self.c.tx_multicast_requests += 1;
                    let status = match op {
                        McastOp::Add(_) if self.mcast.len() >= XEN_NETBK_MCAST_MAX => {
                            self.c.tx_multicast_list_full += 1;
                            NETIF_RSP_ERROR
                        }
                        McastOp::Add(addr) => {
                            self.mcast.push(addr);
                            NETIF_RSP_OKAY
                        }
                        McastOp::Del(addr) => {
                            if let Some(i) = self.mcast.iter().position(|a| *a == addr) {
                                self.mcast.remove(i);
                            }
                            NETIF_RSP_OKAY
                        }
                    };
                    self.round.push(TxEntry::Answer {
                        start,
                        layout,
                        status,
                    });
                    self.reqs_head += layout.slots;
                }
                TxOutcome::Packet(p) => {
                    let Some(buf) = ctx.pool.alloc() else {
                        // Leave the packet on the ring and come back when buffers are free.
                        self.c.tx_no_buffer += 1;
                        more = true;
                        break;
                    };
                    if let CreditDecision::WaitUntil(t) =
                        self.credit.check(u64::from(p.total_len), now)
                    {
                        ctx.pool.release(buf);
                        self.credit_wait = Some(t);
                        self.c.tx_credit_waits += 1;
                        break;
                    }
                    let entry = self.round.len() as u16;
                    let mut off = HEADROOM;
                    for (k, frag) in p.fragments(pending).enumerate() {
                        let n = push_pool_copies(
                            &mut self.tx_ops,
                            ctx.pool,
                            buf,
                            off,
                            domid,
                            frag.gref,
                            usize::from(frag.offset),
                            usize::from(frag.len),
                            false,
                        );
                        for _ in 0..n {
                            self.tx_op_frag.push((entry, k as u8));
                        }
                        off += usize::from(frag.len);
                    }
                    self.round.push(TxEntry::Packet {
                        start,
                        pkt: p,
                        buf,
                        failed: 0,
                    });
                    self.reqs_head += p.layout.slots;
                    packets += 1;
                }
            }
        }
        if !self.tx_ops.is_empty() {
            ctx.hv.grant_copy(DOM0, &mut self.tx_ops);
            for (op, &(entry, frag)) in self.tx_ops.iter().zip(&self.tx_op_frag) {
                if op.status != GntSt::Okay {
                    if let Some(TxEntry::Packet { failed, .. }) =
                        self.round.get_mut(usize::from(entry))
                    {
                        *failed |= 1u32 << frag.min(31);
                    }
                }
            }
            self.tx_ops.clear();
            self.tx_op_frag.clear();
        }
        for e in &self.round {
            let TxEntry::Packet {
                pkt, buf, failed, ..
            } = *e
            else {
                continue;
            };
            if failed != 0 {
                self.reasons.drop(DropReason::TxGrantCopyFailed);
                ctx.pool.release(buf);
                continue;
            }
            let len = usize::from(pkt.total_len);
            let mut meta = FrameMeta {
                gso: pkt.gso.map(|g| Gso {
                    kind: gso_kind(g.gso_type),
                    size: g.size,
                }),
                csum_partial: pkt.checksum == ChecksumState::Partial,
                data_validated: pkt.checksum == ChecksumState::Validated,
            };
            if meta.gso.is_some() && !meta.csum_partial {
                // "A GSO SKB must be CHECKSUM_PARTIAL": some frontends forget csum_blank;
                // force it and re-seed the checksum field (Linux `checksum_setup`).
                reseed_partial_checksum(ctx.pool.bytes_mut(buf, HEADROOM, len));
                meta.csum_partial = true;
                meta.data_validated = false;
            }
            self.c.tx_frames += 1;
            self.c.tx_bytes += len as u64;
            self.c.tx_max_frame = self.c.tx_max_frame.max(len as u64);
            if meta.gso.is_some() {
                self.c.tx_gso_frames += 1;
            }
            out.push(Pkt {
                buf,
                off: HEADROOM,
                len,
                meta,
            });
        }
        more
    }

    /// Writes one response per slot of every outcome of the round, in ring order.
    fn answer_round(&mut self) {
        if self.round.is_empty() {
            return;
        }
        self.tx_rsps.clear();
        for e in &self.round {
            match *e {
                TxEntry::Packet {
                    start, pkt, failed, ..
                } => {
                    let reqs = self.reqs.get(start..).unwrap_or(&[]);
                    self.tx_rsps.extend(pkt.responses(reqs, failed));
                }
                TxEntry::Answer {
                    start,
                    layout,
                    status,
                } => {
                    let reqs = self.reqs.get(start..).unwrap_or(&[]);
                    self.tx_rsps.extend(layout.responses(reqs, |_| status));
                }
            }
        }
        self.round.clear();
        if let Some(conn) = self.conn.as_mut() {
            // Cannot fail: the page was probed at attach and the count is bounded by the
            // consumed requests.
            let _ = conn.tx.produce_responses(&self.tx_rsps);
        }
    }

    // ---- rx: switch → guest ------------------------------------------------------------------

    fn enqueue(&mut self, ctx: &mut PortCtx<'_>, item: RxItem) -> Result<(), DropReason> {
        let info = item.info();
        let len = info.len;
        let slots = info.slots_needed();
        let sg = self.conn.as_ref().is_some_and(|c| c.features.sg);
        if len > MAX_RX_PACKET_LEN || (!sg && info.data_slots() > 1) {
            self.reasons.drop(DropReason::RxPacketTooLarge);
            return Err(DropReason::RxPacketTooLarge);
        }
        if self.backlog.bytes() >= self.backlog.config().max_bytes && self.fatal.is_none() {
            // Full: deliver what the posted buffers can take before refusing (the end-of-
            // round flush may be 64 frames away).
            self.drain_rx(ctx);
        }
        ctx.pool.retain(item.buf);
        match self.backlog.enqueue(item, len, slots, dur(ctx.now)) {
            Ok(()) => Ok(()),
            Err((item, reason)) => {
                ctx.pool.release(item.buf);
                self.reasons.drop(reason);
                Err(reason)
            }
        }
    }

    fn scratch_slot(&mut self, pool: &mut BufferPool) -> Option<usize> {
        if self.scratch.is_none() {
            self.scratch = pool.alloc();
        }
        self.scratch?;
        if self.scratch_used >= SCRATCH_SLOTS {
            return None;
        }
        self.scratch_used += 1;
        Some((self.scratch_used - 1) * MAX_HEADER_LEN)
    }

    /// Delivers queued packets while the frontend has posted enough rx requests.
    fn drain_rx(&mut self, ctx: &mut PortCtx<'_>) {
        let now = dur(ctx.now);
        let domid = self.cfg.domid;
        loop {
            if self.fatal.is_some() {
                break;
            }
            let Some((&item, slots)) = self.backlog.head() else {
                break;
            };
            let Some(conn) = self.conn.as_mut() else {
                break;
            };
            match conn.rx.has_requests_or_arm(slots as u32) {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    self.set_fatal(FatalReason::from(&e), ctx.pool);
                    break;
                }
            }
            let rewrites = !matches!(item.form, RxForm::Whole { .. });
            if self.rx_ops.len() + RX_OPS_PER_PACKET > RX_OPS_BATCH
                || (rewrites && self.scratch_used >= SCRATCH_SLOTS)
            {
                self.flush_rx_copies(ctx.pool, ctx.hv);
            }
            let hdr_at = if rewrites {
                match self.scratch_slot(ctx.pool) {
                    Some(at) => Some(at),
                    None => {
                        // No buffer for rewritten headers: the packet cannot be delivered.
                        self.c.rx_no_scratch += 1;
                        if let Some(it) = self.backlog.pop(now) {
                            ctx.pool.release(it.buf);
                        }
                        continue;
                    }
                }
            } else {
                None
            };
            let Some(conn) = self.conn.as_mut() else {
                break;
            };
            let reqs = &mut self.rx_reqs[..slots];
            match conn.rx.consume_requests(reqs) {
                Ok(n) if n == slots => {}
                Ok(_) | Err(_) => {
                    self.set_fatal(FatalReason::ImpossibleRequestCount, ctx.pool);
                    break;
                }
            }
            let _ = self.backlog.pop(now);
            let info = item.info();
            let base = self.rx_rsps.len();
            self.rx_rsps.resize(base + slots, RxResponse::default());
            let plan = match plan_rx(&info, &self.rx_reqs[..slots], &mut self.rx_rsps[base..]) {
                Ok(p) => p,
                Err(_) => {
                    // Checked at enqueue; answer the consumed requests with errors anyway.
                    for (rsp, req) in self.rx_rsps[base..].iter_mut().zip(&self.rx_reqs) {
                        *rsp = RxResponse {
                            id: req.id,
                            offset: 0,
                            flags: 0,
                            status: NETIF_RSP_ERROR,
                        };
                    }
                    ctx.pool.release(item.buf);
                    self.reasons.drop(DropReason::RxPacketTooLarge);
                    continue;
                }
            };
            // Where the delivered bytes come from: rewritten headers (scratch) then the
            // payload in the original buffer, or the frame itself.
            let (hdr_len, payload_at) = match (item.form, hdr_at, self.scratch) {
                (RxForm::Completed(c), Some(at), Some(s)) => {
                    let mut hdr = [0u8; MAX_HEADER_LEN];
                    let frame = ctx.pool.bytes(item.buf, item.off, item.len);
                    let r = c.write_header(frame, &mut hdr).unwrap_or(0..0);
                    let hl = c.header_len();
                    ctx.pool.bytes_mut(s, at, hl).copy_from_slice(&hdr[..hl]);
                    (hl, r.start)
                }
                (RxForm::Segment(segs, i), Some(at), Some(s)) => {
                    let mut hdr = [0u8; MAX_HEADER_LEN];
                    let frame = ctx.pool.bytes(item.buf, item.off, item.len);
                    let r = segs
                        .write_header(frame, usize::from(i), &mut hdr)
                        .unwrap_or(0..0);
                    let hl = segs.header_len();
                    ctx.pool.bytes_mut(s, at, hl).copy_from_slice(&hdr[..hl]);
                    (hl, r.start)
                }
                _ => (0, 0),
            };
            let op_start = self.rx_ops.len();
            for copy in plan.copies(&self.rx_reqs[..slots]) {
                let mut done = 0usize;
                let want = usize::from(copy.len);
                while done < want {
                    let at = copy.packet_offset + done;
                    let (src_buf, src_off, piece) = if at < hdr_len {
                        let Some(s) = self.scratch else { break };
                        (s, hdr_at.unwrap_or(0) + at, (hdr_len - at).min(want - done))
                    } else if hdr_len > 0 {
                        (
                            item.buf,
                            item.off + payload_at + (at - hdr_len),
                            want - done,
                        )
                    } else {
                        (item.buf, item.off + at, want - done)
                    };
                    let n = push_pool_copies(
                        &mut self.rx_ops,
                        ctx.pool,
                        src_buf,
                        src_off,
                        domid,
                        copy.gref,
                        usize::from(copy.dest_offset) + done,
                        piece,
                        true,
                    );
                    for _ in 0..n {
                        self.rx_op_copy.push((base, copy));
                    }
                    done += piece;
                }
            }
            self.rx_batch.push(RxBatchPacket {
                buf: item.buf,
                ops: (op_start, self.rx_ops.len()),
                gso: info.gso.is_some(),
                len: info.len,
            });
        }
        self.flush_rx_copies(ctx.pool, ctx.hv);
        // The header scratch goes back with the batch: a vif that needs no rewriting
        // holds no extra buffer.
        self.release_scratch(ctx.pool);
        self.check_stall(now);
    }

    /// Runs the batched rx copies, fixes failed slots' statuses, writes the responses
    /// and releases the delivered buffers.
    fn flush_rx_copies(&mut self, pool: &mut BufferPool, hv: &Hypervisor) {
        if !self.rx_ops.is_empty() {
            hv.grant_copy(DOM0, &mut self.rx_ops);
        }
        for p in self.rx_batch.drain(..) {
            let mut failed = false;
            let ops = self.rx_ops.get(p.ops.0..p.ops.1).unwrap_or(&[]);
            let copies = self.rx_op_copy.get(p.ops.0..p.ops.1).unwrap_or(&[]);
            for (op, (base, copy)) in ops.iter().zip(copies) {
                if let Some(rsps) = self.rx_rsps.get_mut(*base..) {
                    failed |= apply_copy_status(rsps, copy, op.status);
                }
            }
            if failed {
                self.reasons.drop(DropReason::RxGrantCopyFailed);
            } else {
                self.c.rx_frames += 1;
                self.c.rx_bytes += p.len as u64;
                self.c.rx_max_frame = self.c.rx_max_frame.max(p.len as u64);
                if p.gso {
                    self.c.rx_gso_frames += 1;
                }
            }
            pool.release(p.buf);
        }
        self.rx_ops.clear();
        self.rx_op_copy.clear();
        self.scratch_used = 0;
        if !self.rx_rsps.is_empty() {
            if let Some(conn) = self.conn.as_mut() {
                let _ = conn.rx.produce_responses(&self.rx_rsps);
            }
            self.rx_rsps.clear();
        }
    }

    fn check_stall(&mut self, now: Duration) {
        let Some(conn) = self.conn.as_ref() else {
            return;
        };
        let free = conn.rx.unconsumed_requests().unwrap_or(0);
        if let Some(change) = self.backlog.check_stall(free, now) {
            match change {
                CarrierChange::Off => {
                    self.c.rx_stalls += 1;
                    warn!(
                        "{}: guest rx stalled (no buffers posted); carrier off",
                        self.cfg.name
                    );
                }
                CarrierChange::On => info!("{}: guest rx ready; carrier on", self.cfg.name),
            }
            self.update_carrier();
        }
    }

    fn push_and_notify(&mut self, pool: &mut BufferPool) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        let tx = conn.tx.push_responses();
        let rx = conn.rx.push_responses();
        let (tx_n, rx_n) = (conn.tx_notify.clone(), conn.rx_notify.clone());
        let split = conn.rx_evt.is_some();
        match (tx, rx) {
            (Ok(t), Ok(r)) => {
                if t {
                    tx_n.notify();
                }
                if r && (split || !t) {
                    rx_n.notify();
                }
            }
            (Err(e), _) | (_, Err(e)) => self.set_fatal(FatalReason::from(&e), pool),
        }
    }
}

/// Writes the pseudo-header sum into the TCP checksum field of a frame that is to carry
/// a partial checksum (best effort: frames that do not parse as TCP/IP are left alone).
fn reseed_partial_checksum(frame: &mut [u8]) {
    use vswitch::wire::checksum;
    use vswitch::wire::IpProtocol;
    let Ok(info) = FrameInfo::parse(frame) else {
        return;
    };
    let l4 = usize::from(info.l4_offset);
    let (ph, at) = match info.l3 {
        L3Info::Ipv4(ip) => {
            let l4_len = usize::from(ip.total_len).saturating_sub(usize::from(ip.header_len));
            (
                checksum::pseudo_header_v4(ip.src, ip.dst, IpProtocol::TCP, l4_len as u32),
                l4 + 16,
            )
        }
        L3Info::Ipv6(ip) => {
            let end = usize::from(info.l3_offset) + 40 + usize::from(ip.payload_len);
            let l4_len = end.saturating_sub(l4);
            (
                checksum::pseudo_header_v6(ip.src, ip.dst, IpProtocol::TCP, l4_len as u32),
                l4 + 16,
            )
        }
        _ => return,
    };
    if l4 == 0 {
        return;
    }
    if let Some(field) = frame.get_mut(at..at + 2) {
        field.copy_from_slice(&ph.to_be_bytes());
    }
}

impl Port for NetbackPort {
    fn name(&self) -> &str {
        &self.cfg.name
    }

    fn fds(&self) -> Vec<RawFd> {
        match (&self.conn, self.fatal) {
            (Some(c), None) => {
                let mut v = vec![c.tx_evt.as_raw_fd()];
                if let Some(rx) = &c.rx_evt {
                    v.push(rx.as_raw_fd());
                }
                v
            }
            _ => Vec::new(),
        }
    }

    fn take_fds_changed(&mut self) -> bool {
        std::mem::take(&mut self.fds_changed)
    }

    fn receive(&mut self, ctx: &mut PortCtx<'_>, out: &mut Vec<Pkt>, budget: usize) -> bool {
        let Some(conn) = self.conn.as_ref() else {
            return false;
        };
        // Acknowledge both ports (level-triggered polling); the rx side is served in
        // `flush`, which runs after every round.
        conn.tx_evt.consume();
        if let Some(rx) = &conn.rx_evt {
            rx.consume();
        }
        if self.fatal.is_some() {
            return false;
        }
        self.sync_clock(ctx.now);
        self.tx_round(ctx, out, budget)
    }

    fn complete_rx(&mut self, _ctx: &mut PortCtx<'_>) {
        self.answer_round();
    }

    fn transmit(
        &mut self,
        ctx: &mut PortCtx<'_>,
        pkt: &Pkt,
        info: &FrameInfo,
    ) -> Result<(), vswitch::DropReason> {
        let Some(conn) = self.conn.as_ref() else {
            self.c.rx_not_connected += 1;
            return Err(vswitch::DropReason::PortDisabled);
        };
        if self.fatal.is_some() {
            self.c.rx_not_connected += 1;
            return Err(vswitch::DropReason::PortDisabled);
        }
        let f = conn.features;
        self.sync_clock(ctx.now);
        let frame = ctx.pool.bytes(pkt.buf, pkt.off, pkt.len);
        let base = RxItem {
            buf: pkt.buf,
            off: pkt.off,
            len: pkt.len,
            form: RxForm::Whole {
                gso: None,
                checksum: ChecksumState::Unknown,
            },
        };
        let map = |r: DropReason| match r {
            DropReason::RxCarrierOff => vswitch::DropReason::PortDisabled,
            _ => vswitch::DropReason::TxQueueFull,
        };
        if let Some(g) = pkt.meta.gso {
            let gso_type = match g.kind {
                GsoKind::TcpV4 => Some(GsoType::TcpV4),
                GsoKind::TcpV6 => Some(GsoType::TcpV6),
                GsoKind::Udp | GsoKind::UdpL4 => None,
            };
            let Some(gso_type) = gso_type else {
                self.c.rx_unsupported_offload += 1;
                return Err(vswitch::DropReason::InvalidGso);
            };
            let negotiated = f.sg
                && match gso_type {
                    GsoType::TcpV4 => f.gso_tcpv4,
                    GsoType::TcpV6 => f.gso_tcpv6,
                };
            if negotiated && g.size > 0 {
                let item = RxItem {
                    form: RxForm::Whole {
                        gso: Some(GsoInfo {
                            gso_type,
                            size: g.size,
                        }),
                        checksum: ChecksumState::Partial,
                    },
                    ..base
                };
                return self.enqueue(ctx, item).map_err(map);
            }
            let segs = match TcpSegments::new(frame, info, g.size) {
                Ok(s) => s,
                Err(_) => {
                    self.c.rx_unsupported_offload += 1;
                    return Err(vswitch::DropReason::InvalidGso);
                }
            };
            self.c.rx_segmented_frames += 1;
            let mut queued = 0usize;
            let mut first_err = None;
            for i in 0..segs.count() {
                let item = RxItem {
                    form: RxForm::Segment(segs, i as u16),
                    ..base
                };
                match self.enqueue(ctx, item) {
                    Ok(()) => queued += 1,
                    Err(r) => {
                        first_err.get_or_insert(r);
                    }
                }
            }
            self.c.rx_segments += queued as u64;
            return match (queued, first_err) {
                (0, Some(r)) => Err(map(r)),
                _ => Ok(()),
            };
        }
        if pkt.meta.csum_partial {
            let accepts = match info.l3 {
                L3Info::Ipv4(_) => !f.no_csum_offload,
                L3Info::Ipv6(_) => f.ipv6_csum_offload,
                _ => false,
            };
            if accepts {
                let item = RxItem {
                    form: RxForm::Whole {
                        gso: None,
                        checksum: ChecksumState::Partial,
                    },
                    ..base
                };
                return self.enqueue(ctx, item).map_err(map);
            }
            let Ok(c) = ChecksumCompletion::new(frame, info) else {
                self.c.rx_unsupported_offload += 1;
                return Err(vswitch::DropReason::InvalidGso);
            };
            self.c.rx_csum_completed += 1;
            let item = RxItem {
                form: RxForm::Completed(c),
                ..base
            };
            return self.enqueue(ctx, item).map_err(map);
        }
        let checksum = if pkt.meta.data_validated {
            ChecksumState::Validated
        } else {
            ChecksumState::Unknown
        };
        let item = RxItem {
            form: RxForm::Whole {
                gso: None,
                checksum,
            },
            ..base
        };
        self.enqueue(ctx, item).map_err(map)
    }

    fn flush(&mut self, ctx: &mut PortCtx<'_>) {
        if self.conn.is_none() {
            return;
        }
        self.sync_clock(ctx.now);
        if self.fatal.is_none() {
            self.drain_rx(ctx);
        }
        self.push_and_notify(ctx.pool);
    }

    fn next_timer(&self) -> Option<Timestamp> {
        if self.conn.is_none() || self.fatal.is_some() {
            return None;
        }
        let backlog = self.backlog.next_deadline();
        let t = match (backlog, self.credit_wait) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        t.map(stamp)
    }

    fn on_timer(&mut self, ctx: &mut PortCtx<'_>) {
        if self.conn.is_none() || self.fatal.is_some() {
            return;
        }
        self.sync_clock(ctx.now);
        let now = dur(ctx.now);
        if self.credit_wait.is_some_and(|t| t <= now) {
            self.credit_wait = None;
            // The refill is due: wake our own tx port so `receive` runs again (Linux's
            // credit timer schedules NAPI the same way).
            if let Some(c) = &self.conn {
                c.tx_evt.signal();
            }
        }
        let pool = &mut *ctx.pool;
        let reasons = &mut self.reasons;
        self.backlog.drop_expired(now, |item| {
            pool.release(item.buf);
            reasons.drop(DropReason::RxExpired);
        });
        self.check_stall(now);
        self.drain_rx(ctx);
    }

    fn carrier(&self) -> bool {
        self.carrier
    }

    fn counters(&self) -> DriverCounters {
        let c = self.c;
        let mut v: DriverCounters = vec![
            ("connected", u64::from(self.conn.is_some())),
            ("disabled", u64::from(self.fatal.is_some())),
            ("tx_frames", c.tx_frames),
            ("tx_bytes", c.tx_bytes),
            ("tx_gso_frames", c.tx_gso_frames),
            ("tx_max_frame", c.tx_max_frame),
            ("tx_no_buffer", c.tx_no_buffer),
            ("tx_credit_waits", c.tx_credit_waits),
            ("tx_multicast_requests", c.tx_multicast_requests),
            ("tx_multicast_list_full", c.tx_multicast_list_full),
            ("rx_frames", c.rx_frames),
            ("rx_bytes", c.rx_bytes),
            ("rx_gso_frames", c.rx_gso_frames),
            ("rx_max_frame", c.rx_max_frame),
            ("rx_segmented_frames", c.rx_segmented_frames),
            ("rx_segments", c.rx_segments),
            ("rx_csum_completed", c.rx_csum_completed),
            ("rx_not_connected", c.rx_not_connected),
            ("rx_unsupported_offload", c.rx_unsupported_offload),
            ("rx_no_scratch", c.rx_no_scratch),
            ("rx_backlog_packets", self.backlog.len() as u64),
            ("rx_backlog_bytes", self.backlog.bytes() as u64),
            ("rx_stalls", c.rx_stalls),
            ("carrier_changes", c.carrier_changes),
            ("connects", c.connects),
            ("disconnects", c.disconnects),
        ];
        for &r in DropReason::ALL {
            v.push((r.name(), self.reasons.drops(r)));
        }
        for &r in FatalReason::ALL {
            v.push((fatal_counter(r), self.reasons.fatals(r)));
        }
        v
    }

    fn close(&mut self, ctx: &mut PortCtx<'_>) {
        self.disconnect(ctx);
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fatal_counter_names_are_distinct_from_drop_names() {
        let mut seen = std::collections::HashSet::new();
        for &r in FatalReason::ALL {
            assert!(fatal_counter(r).ends_with(r.name()));
            assert!(seen.insert(fatal_counter(r)));
        }
        for &r in DropReason::ALL {
            assert!(seen.insert(r.name()));
        }
    }
}
