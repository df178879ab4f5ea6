//! A mock netfront for driving netback with exact — and hostile — slot sequences
//! (DESIGN.md "A mock frontend", the rust-vmm mock-driver idea).
//!
//! It sets up what a netfront sets up — two initialised ring pages granted to the
//! backend, two unbound event channels — through any [`FrontendEnv`] (the daemon's
//! [`crate::env::LocalEnv`] or a socket environment), and then lets a test do what a
//! guest can: write any tx slot or index, chain extras forever, grant or revoke any page,
//! write raw grant entries, post rx buffers or withhold them, kick or stay silent, and
//! read back every response. Nothing here validates anything: that is the backend's job.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use hypervisor::evtchn::{EventFd, Port as EvtchnPort};
use hypervisor::grant::{GrantError, GrantRef, ENTRIES_PER_FRAME, GRANT_ENTRY_SIZE};
use hypervisor::memory::{Gfn, GuestMemory, MemError, PAGE_SIZE};
use hypervisor::DomId;

use crate::env::{EnvError, FrontendEnv, PeerNotifier};
use crate::keys::{EventChannelKeys, FrontendFeatures, FrontendKeys, FrontendRings};
use crate::netfront::port::FrontendError;
use crate::netif::{
    ChecksumState, ExtraInfo, GsoInfo, NetifRx, NetifTx, RingIdx, RingLayout, RingRecord,
    RxRequest, RxResponse, SlotBytes, TxRequest, TxResponse, NETTXF_EXTRA_INFO, NETTXF_MORE_DATA,
    REQ_PROD_OFFSET, RING_HEADER_SIZE,
};
use crate::ring::{FrontRing, RingError};

type Ring<L> = FrontRing<L, (Arc<GuestMemory>, Gfn)>;

/// A frontend under a test's full control (see the module doc).
pub struct MockFrontend {
    env: Box<dyn FrontendEnv>,
    backend: DomId,
    tx: Ring<NetifTx>,
    rx: Ring<NetifRx>,
    tx_ring: (Gfn, GrantRef),
    rx_ring: (Gfn, GrantRef),
    tx_port: EvtchnPort,
    rx_port: EvtchnPort,
    tx_evt: Arc<EventFd>,
    rx_evt: Arc<EventFd>,
    notify: Option<(PeerNotifier, PeerNotifier)>,
    next_tx_id: u16,
}

impl std::fmt::Debug for MockFrontend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockFrontend")
            .field("domid", &self.env.domid())
            .field("tx", &self.tx)
            .field("rx", &self.rx)
            .finish()
    }
}

impl MockFrontend {
    /// Sets up rings and event channels for a backend in `backend`.
    pub fn new(env: Box<dyn FrontendEnv>, backend: DomId) -> Result<MockFrontend, FrontendError> {
        let mem = Arc::clone(env.memory());
        let ring_page = |env: &dyn FrontendEnv| -> Result<(Gfn, GrantRef), FrontendError> {
            let gfn = env.alloc_frame()?;
            let gref = env.alloc_gref()?;
            Ok((gfn, gref))
        };
        let tx_ring = ring_page(env.as_ref())?;
        let rx_ring = ring_page(env.as_ref())?;
        let tx = FrontRing::init((Arc::clone(&mem), tx_ring.0))?;
        let rx = FrontRing::init((Arc::clone(&mem), rx_ring.0))?;
        env.grant_table()
            .offer(tx_ring.1, backend, tx_ring.0, false)?;
        env.grant_table()
            .offer(rx_ring.1, backend, rx_ring.0, false)?;
        let (tx_port, tx_evt) = env.alloc_unbound(backend)?;
        let (rx_port, rx_evt) = env.alloc_unbound(backend)?;
        Ok(MockFrontend {
            env,
            backend,
            tx,
            rx,
            tx_ring,
            rx_ring,
            tx_port,
            rx_port,
            tx_evt,
            rx_evt,
            notify: None,
            next_tx_id: 0,
        })
    }

    /// The environment (memory, grant table, allocators).
    pub fn env(&self) -> &dyn FrontendEnv {
        self.env.as_ref()
    }

    /// The frontend's memory.
    pub fn memory(&self) -> &Arc<GuestMemory> {
        self.env.memory()
    }

    /// The keys a netfront would publish.
    pub fn keys(&self) -> FrontendKeys {
        FrontendKeys {
            tx_ring_ref: self.tx_ring.1,
            rx_ring_ref: self.rx_ring.1,
            event_channel_tx: self.tx_port,
            event_channel_rx: self.rx_port,
        }
    }

    /// What the backend reads, with every feature netfront announces.
    pub fn rings(&self) -> FrontendRings {
        self.keys().rings()
    }

    /// What the backend reads, with the given features.
    pub fn rings_with(&self, features: FrontendFeatures) -> FrontendRings {
        FrontendRings {
            tx_ring_ref: self.tx_ring.1,
            rx_ring_ref: self.rx_ring.1,
            event_channels: EventChannelKeys::Split {
                tx: self.tx_port,
                rx: self.rx_port,
            },
            features,
        }
    }

    /// The backend has bound the ports: fetch the notifiers.
    pub fn connected(&mut self) -> Result<(), EnvError> {
        let tx = self.env.notifier(self.tx_port)?;
        let rx = self.env.notifier(self.rx_port)?;
        self.notify = Some((tx, rx));
        Ok(())
    }

    /// The tx ring page (frame, grant).
    pub fn tx_ring_page(&self) -> (Gfn, GrantRef) {
        self.tx_ring
    }

    /// The rx ring page (frame, grant).
    pub fn rx_ring_page(&self) -> (Gfn, GrantRef) {
        self.rx_ring
    }

    // ---- pages and grants ----------------------------------------------------------------

    /// A fresh page granted to the backend (read-only or writable).
    pub fn page(&self, readonly: bool) -> Result<(Gfn, GrantRef), FrontendError> {
        let gfn = self.env.alloc_frame()?;
        let gref = self.env.alloc_gref()?;
        self.env
            .grant_table()
            .offer(gref, self.backend, gfn, readonly)?;
        Ok((gfn, gref))
    }

    /// A fresh page and a grant reference that grants nothing.
    pub fn ungranted_page(&self) -> Result<(Gfn, GrantRef), FrontendError> {
        Ok((self.env.alloc_frame()?, self.env.alloc_gref()?))
    }

    /// Writes into one of the frontend's frames.
    pub fn write_page(&self, gfn: Gfn, offset: usize, data: &[u8]) -> Result<(), MemError> {
        self.memory().write(gfn, offset, data)
    }

    /// Reads from one of the frontend's frames.
    pub fn read_page(&self, gfn: Gfn, offset: usize, out: &mut [u8]) -> Result<(), MemError> {
        self.memory().read(gfn, offset, out)
    }

    /// Revokes a grant.
    pub fn revoke(&self, gref: GrantRef) -> Result<(), GrantError> {
        self.env.grant_table().revoke(gref)
    }

    /// Writes a raw grant entry `(flags, domid, frame)`, as a guest may.
    pub fn set_grant_entry(
        &self,
        gref: GrantRef,
        flags: u16,
        domid: DomId,
        frame: u32,
    ) -> Result<(), MemError> {
        let f = Gfn::from(gref / ENTRIES_PER_FRAME);
        let o = (gref % ENTRIES_PER_FRAME) as usize * GRANT_ENTRY_SIZE;
        let m = self.memory();
        m.store_u16(f, o + 2, domid, Ordering::SeqCst)?;
        m.store_u32(f, o + 4, frame, Ordering::SeqCst)?;
        m.store_u16(f, o, flags, Ordering::SeqCst)
    }

    // ---- tx ----------------------------------------------------------------------------------

    /// A fresh tx id (wrapping).
    pub fn next_id(&mut self) -> u16 {
        self.next_tx_id = self.next_tx_id.wrapping_add(1);
        self.next_tx_id
    }

    /// Writes requests at `req_prod_pvt..` (not yet published); returns how many fit.
    pub fn queue_tx(&mut self, reqs: &[TxRequest]) -> Result<usize, RingError> {
        self.tx.produce_requests(reqs)
    }

    /// Publishes queued requests and kicks the backend (always, to make tests
    /// deterministic; use [`MockFrontend::push_tx_quiet`] to follow the event index).
    pub fn push_tx(&mut self) -> Result<(), RingError> {
        self.tx.push_requests()?;
        self.kick_tx();
        Ok(())
    }

    /// Publishes queued requests and notifies only if the event index says so.
    pub fn push_tx_quiet(&mut self) -> Result<bool, RingError> {
        let n = self.tx.push_requests()?;
        if n {
            self.kick_tx();
        }
        Ok(n)
    }

    /// Queues and publishes `reqs`, then kicks.
    pub fn send_tx(&mut self, reqs: &[TxRequest]) -> Result<usize, RingError> {
        let n = self.queue_tx(reqs)?;
        self.push_tx()?;
        Ok(n)
    }

    /// Writes a raw tx slot at ring index `idx` (no index update).
    pub fn write_tx_slot(&self, idx: RingIdx, req: &TxRequest) -> Result<(), MemError> {
        let mut b = SlotBytes::default();
        req.encode(&mut b);
        let off = RING_HEADER_SIZE + (idx & (NetifTx::NR_ENTS - 1)) as usize * NetifTx::SLOT_SIZE;
        self.memory()
            .write(self.tx_ring.0, off, &b[..NetifTx::SLOT_SIZE])
    }

    /// Writes the shared tx `req_prod` directly (any value, as a guest may).
    pub fn set_tx_req_prod(&self, prod: RingIdx) -> Result<(), MemError> {
        self.memory()
            .store_u32(self.tx_ring.0, REQ_PROD_OFFSET, prod, Ordering::SeqCst)
    }

    /// Writes the shared rx `req_prod` directly.
    pub fn set_rx_req_prod(&self, prod: RingIdx) -> Result<(), MemError> {
        self.memory()
            .store_u32(self.rx_ring.0, REQ_PROD_OFFSET, prod, Ordering::SeqCst)
    }

    /// The next tx request index this frontend would fill.
    pub fn tx_req_prod_pvt(&self) -> RingIdx {
        self.tx.req_prod_pvt()
    }

    /// Sets the tx port pending at the backend.
    pub fn kick_tx(&self) {
        if let Some((tx, _)) = &self.notify {
            tx.notify();
        }
    }

    /// Sets the rx port pending at the backend.
    pub fn kick_rx(&self) {
        if let Some((_, rx)) = &self.notify {
            rx.notify();
        }
    }

    /// Whether the backend signalled the tx port since the last call.
    pub fn tx_signalled(&self) -> bool {
        self.tx_evt.consume()
    }

    /// Whether the backend signalled the rx port since the last call.
    pub fn rx_signalled(&self) -> bool {
        self.rx_evt.consume()
    }

    /// Every published tx response (the backend-side overflow check applies).
    pub fn tx_responses(&mut self) -> Result<Vec<TxResponse>, RingError> {
        let mut out = vec![TxResponse::default(); NetifTx::NR_ENTS as usize];
        let n = self.tx.consume_responses(&mut out)?;
        out.truncate(n);
        Ok(out)
    }

    /// Sends one well-formed frame: copies it into fresh read-only pages (one slot per
    /// 4096 bytes, the first carrying the total), with a GSO extra and checksum flags as
    /// given; returns the data slots' ids in order.
    pub fn send_frame(
        &mut self,
        frame: &[u8],
        gso: Option<GsoInfo>,
        checksum: ChecksumState,
    ) -> Result<Vec<u16>, FrontendError> {
        let mut reqs = Vec::new();
        let mut ids = Vec::new();
        let chunks: Vec<&[u8]> = frame.chunks(PAGE_SIZE).collect();
        let last = chunks.len().saturating_sub(1);
        for (i, chunk) in chunks.iter().enumerate() {
            let (gfn, gref) = self.page(true)?;
            self.write_page(gfn, 0, chunk)
                .map_err(|e| FrontendError::Env(EnvError::Other(e.to_string())))?;
            let id = self.next_id();
            ids.push(id);
            let mut flags = if i < last { NETTXF_MORE_DATA } else { 0 };
            let size = if i == 0 {
                flags |= checksum.tx_flags();
                if gso.is_some() {
                    flags |= NETTXF_EXTRA_INFO;
                }
                frame.len() as u16
            } else {
                chunk.len() as u16
            };
            reqs.push(TxRequest {
                gref,
                offset: 0,
                flags,
                id,
                size,
            });
            if let (0, Some(g)) = (i, gso) {
                reqs.push(ExtraInfo::gso(g, false).to_tx_request());
            }
        }
        self.send_tx(&reqs)?;
        Ok(ids)
    }

    // ---- rx ----------------------------------------------------------------------------------

    /// Posts rx requests for the given grants (id = ring index mod 256, like Linux) and
    /// publishes them; kicks the backend.
    pub fn post_rx(&mut self, grefs: &[GrantRef]) -> Result<usize, RingError> {
        let start = self.rx.req_prod_pvt();
        let reqs: Vec<RxRequest> = grefs
            .iter()
            .enumerate()
            .map(|(i, &gref)| crate::netfront::rx::rx_request(start.wrapping_add(i as u32), gref))
            .collect();
        let n = self.rx.produce_requests(&reqs)?;
        self.rx.push_requests()?;
        self.kick_rx();
        Ok(n)
    }

    /// Allocates `n` writable pages and posts them; returns (frame, grant) in ring order.
    pub fn post_rx_buffers(&mut self, n: usize) -> Result<Vec<(Gfn, GrantRef)>, FrontendError> {
        let pages = (0..n)
            .map(|_| self.page(false))
            .collect::<Result<Vec<_>, _>>()?;
        let grefs: Vec<GrantRef> = pages.iter().map(|p| p.1).collect();
        self.post_rx(&grefs)?;
        Ok(pages)
    }

    /// Every published rx response, in ring order.
    pub fn rx_responses(&mut self) -> Result<Vec<RxResponse>, RingError> {
        let mut out = vec![RxResponse::default(); NetifRx::NR_ENTS as usize];
        let n = self.rx.consume_responses(&mut out)?;
        out.truncate(n);
        Ok(out)
    }

    /// Closes both event channels (the frontend going away).
    pub fn close_ports(&self) {
        self.env.close(self.tx_port);
        self.env.close(self.rx_port);
    }
}
