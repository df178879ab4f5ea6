//! NetbackPort against the mock frontend, step by step, without threads: the shell's tx
//! and rx paths, the hostile-frontend catalogue of robustness.md §3(a), offload
//! delivery (GSO extra, software segmentation, checksum completion), the credit limiter
//! and the backlog timers. Every test drives the port exactly as the switch worker does
//! (`receive` → forward → `complete_rx` → `flush`) with a hand-held clock.

use std::sync::Arc;
use std::time::Duration;

use hypervisor::domain::{DomainInfo, DomainState, Registry};
use hypervisor::grant::GTF_PERMIT_ACCESS;
use hypervisor::hv::Hypervisor;
use hypervisor::memory::{Gfn, PAGE_SIZE};
use vif::env::LocalEnv;
use vif::keys::FrontendFeatures;
use vif::mock::MockFrontend;
use vif::netback::credit::TxRate;
use vif::netback::port::{NetbackConfig, NetbackPort};
use vif::netback::rx::RxBacklogConfig;
use vif::netback::{DropReason, FatalReason};
use vif::netfront::rx::{parse_rx_frame, RxOutcome};
use vif::netif::{
    ChecksumState, Extra, ExtraInfo, GsoInfo, GsoType, RxResponse, TxRequest, NETIF_RSP_ERROR,
    NETIF_RSP_NULL, NETIF_RSP_OKAY, NETRXF_EXTRA_INFO, NETTXF_EXTRA_INFO, NETTXF_MORE_DATA,
    XEN_NETIF_EXTRA_FLAG_MORE,
};
use vswitch::datapath::{BufferPool, Pkt, Port, PortCtx, HEADROOM};
use vswitch::wire::build::{self, L2Header, TcpSegment};
use vswitch::wire::tcp::TcpPacket;
use vswitch::wire::udp::UdpPacket;
use vswitch::wire::{FrameInfo, MacAddr, TcpFlags};
use vswitch::{FrameMeta, Gso, GsoKind, Timestamp};

const A: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
const B: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);

fn guest(domid: u16) -> DomainInfo {
    DomainInfo {
        domid,
        name: format!("g{domid}"),
        uuid: format!("00000000-0000-0000-0000-{domid:012}"),
        memory_mib: 16,
        vcpus: 1,
        max_grant_frames: 4,
        created_ms: 0,
        state: DomainState::Blocked,
    }
}

struct Rig {
    hv: Arc<Hypervisor>,
    pool: BufferPool,
    port: NetbackPort,
    fe: MockFrontend,
    now: u64,
}

impl Rig {
    fn new() -> Rig {
        Rig::with(None, None)
    }

    fn with(features: Option<FrontendFeatures>, backlog: Option<RxBacklogConfig>) -> Rig {
        Rig::full(features, backlog, TxRate::UNLIMITED)
    }

    fn full(
        features: Option<FrontendFeatures>,
        backlog: Option<RxBacklogConfig>,
        rate: TxRate,
    ) -> Rig {
        let hv = Arc::new(Hypervisor::new(Registry::new().get(0).unwrap()).unwrap());
        hv.instantiate(&guest(1)).unwrap();
        let dom0 = hv.domain(0).unwrap();
        let pool = BufferPool::new(Arc::clone(dom0.memory()), 1024, 96).unwrap();
        let env = LocalEnv::new(Arc::clone(&hv), 1).unwrap();
        let mut fe = MockFrontend::new(Box::new(env), 0).unwrap();
        let mut port = NetbackPort::new(NetbackConfig {
            rate,
            ..NetbackConfig::new(1, 0)
        });
        port.set_rx_backlog(backlog);
        let rings = match features {
            Some(f) => fe.rings_with(f),
            None => fe.rings(),
        };
        port.connect(&hv, &rings).unwrap();
        fe.connected().unwrap();
        assert!(port.take_fds_changed());
        assert_eq!(port.fds().len(), 2);
        Rig {
            hv,
            pool,
            port,
            fe,
            now: 1000,
        }
    }

    fn ctx(&mut self) -> (PortCtx<'_>, &mut NetbackPort) {
        (
            PortCtx::new(&mut self.pool, Timestamp::from_millis(self.now), &self.hv),
            &mut self.port,
        )
    }

    /// One worker round on this port: receive until idle, "forward" (copy the frames
    /// out and release the buffers), complete, flush.
    fn round(&mut self) -> Vec<(Vec<u8>, FrameMeta)> {
        let mut got = Vec::new();
        for _ in 0..16 {
            let mut out = Vec::new();
            let (mut ctx, port) = self.ctx();
            let more = port.receive(&mut ctx, &mut out, 64);
            for p in &out {
                got.push((ctx.pool.bytes(p.buf, p.off, p.len).to_vec(), p.meta));
                ctx.pool.release(p.buf);
            }
            port.complete_rx(&mut ctx);
            port.flush(&mut ctx);
            if !more {
                break;
            }
        }
        got
    }

    /// Hands a frame to the port as the switch would, then flushes.
    fn transmit(&mut self, frame: &[u8], meta: FrameMeta) -> Result<(), vswitch::DropReason> {
        let (mut ctx, port) = self.ctx();
        let buf = ctx.pool.alloc().unwrap();
        ctx.pool
            .bytes_mut(buf, HEADROOM, frame.len())
            .copy_from_slice(frame);
        let pkt = Pkt {
            buf,
            off: HEADROOM,
            len: frame.len(),
            meta,
        };
        let info = FrameInfo::parse(frame).unwrap();
        let r = port.transmit(&mut ctx, &pkt, &info);
        ctx.pool.release(buf);
        r
    }

    fn flush(&mut self) {
        let (mut ctx, port) = self.ctx();
        port.flush(&mut ctx);
    }

    fn timer(&mut self) {
        let (mut ctx, port) = self.ctx();
        port.on_timer(&mut ctx);
        port.flush(&mut ctx);
    }

    fn counter(&self, name: &str) -> u64 {
        self.port
            .counters()
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| *v)
            .unwrap_or_else(|| panic!("no counter {name}"))
    }

    fn free_buffers(&self) -> usize {
        self.pool.free_count()
    }

    /// Sends a good frame and checks it comes out: the vif still works.
    fn assert_forwards(&mut self) {
        let f = udp_frame(300);
        self.fe
            .send_frame(&f, None, ChecksumState::Unknown)
            .unwrap();
        let got = self.round();
        assert_eq!(got.len(), 1, "a good frame after the event");
        assert_eq!(got[0].0, f);
    }
}

fn udp_frame(payload: usize) -> Vec<u8> {
    let mut b = vec![0u8; payload + 100];
    let body: Vec<u8> = (0..payload).map(|i| (i * 13) as u8).collect();
    let n = build::ipv4_udp(
        &mut b,
        L2Header::new(B, A),
        "10.0.0.1".parse().unwrap(),
        "10.0.0.2".parse().unwrap(),
        1000,
        2000,
        &body,
    )
    .unwrap();
    b.truncate(n);
    b
}

fn tcp_frame(payload: usize) -> Vec<u8> {
    let mut b = vec![0u8; payload + 100];
    let body: Vec<u8> = (0..payload).map(|i| (i * 7 + 3) as u8).collect();
    let n = build::ipv4_tcp(
        &mut b,
        L2Header::new(B, A),
        "10.0.0.1".parse().unwrap(),
        "10.0.0.2".parse().unwrap(),
        &TcpSegment {
            src_port: 40000,
            dst_port: 5201,
            seq: 1,
            ack: 1,
            flags: TcpFlags(TcpFlags::ACK.0 | TcpFlags::PSH.0),
            window: 1000,
            payload: &body,
        },
    )
    .unwrap();
    b.truncate(n);
    b
}

fn req(gref: u32, offset: u16, flags: u16, id: u16, size: u16) -> TxRequest {
    TxRequest {
        gref,
        offset,
        flags,
        id,
        size,
    }
}

/// Reads every frame the backend delivered into `pages` (posted in ring order).
fn read_rx(
    fe: &mut MockFrontend,
    pages: &[(Gfn, u32)],
    first: usize,
) -> Vec<(Vec<u8>, RxResponse, Option<GsoInfo>)> {
    let rsps = fe.rx_responses().unwrap();
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < rsps.len() {
        match parse_rx_frame(&rsps[pos..]).unwrap() {
            RxOutcome::Frame(f) => {
                let mut data = Vec::new();
                for d in f.data(&rsps[pos..]) {
                    let (gfn, _) = pages[first + pos + d.slot];
                    let mut b = vec![0u8; usize::from(d.len)];
                    fe.read_page(gfn, usize::from(d.offset), &mut b).unwrap();
                    data.extend_from_slice(&b);
                }
                out.push((data, rsps[pos], f.gso));
                pos += f.slots;
            }
            RxOutcome::Dropped { reason, slots } => {
                out.push((Vec::new(), rsps[pos], None));
                eprintln!("dropped rx frame: {reason:?}");
                pos += slots;
            }
        }
    }
    out
}

// ---- tx: the good path ---------------------------------------------------------------------

#[test]
fn frames_cross_with_responses_for_every_slot() {
    let mut r = Rig::new();
    let small = udp_frame(200);
    let ids =
        r.fe.send_frame(&small, None, ChecksumState::Validated)
            .unwrap();
    let got = r.round();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, small);
    assert!(got[0].1.data_validated && got[0].1.gso.is_none());
    let rsps = r.fe.tx_responses().unwrap();
    assert_eq!(rsps.len(), 1);
    assert_eq!((rsps[0].id, rsps[0].status), (ids[0], NETIF_RSP_OKAY));
    assert!(
        r.fe.tx_signalled(),
        "push-and-check-notify woke the frontend"
    );

    // A 20000-byte TSO frame over 5 slots with a GSO extra.
    let big = tcp_frame(20000);
    let gso = GsoInfo {
        gso_type: GsoType::TcpV4,
        size: 1448,
    };
    let ids =
        r.fe.send_frame(&big, Some(gso), ChecksumState::Partial)
            .unwrap();
    let got = r.round();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, big, "one pool buffer holds the whole frame");
    assert_eq!(
        got[0].1.gso,
        Some(Gso {
            kind: GsoKind::TcpV4,
            size: 1448
        })
    );
    assert!(got[0].1.csum_partial);
    let rsps = r.fe.tx_responses().unwrap();
    assert_eq!(rsps.len(), 6, "5 data slots + 1 extra");
    assert_eq!(rsps[1].status, NETIF_RSP_NULL);
    let data: Vec<_> = rsps.iter().filter(|x| x.status != NETIF_RSP_NULL).collect();
    assert_eq!(data.iter().map(|x| x.id).collect::<Vec<_>>(), ids);
    assert!(data.iter().all(|x| x.status == NETIF_RSP_OKAY));
    assert_eq!(r.counter("tx_gso_frames"), 1);
    assert!(r.counter("tx_max_frame") > 1500);
    assert_eq!(r.free_buffers(), 96, "no buffer leaked");
}

#[test]
fn a_round_stops_at_the_budget_and_asks_to_be_called_again() {
    let mut r = Rig::new();
    for _ in 0..100 {
        r.fe.send_frame(&udp_frame(60), None, ChecksumState::Unknown)
            .unwrap();
    }
    let mut out = Vec::new();
    let (mut ctx, port) = r.ctx();
    assert!(port.receive(&mut ctx, &mut out, 64), "more remain");
    assert_eq!(out.len(), 64);
    for p in &out {
        ctx.pool.release(p.buf);
    }
    port.complete_rx(&mut ctx);
    let mut out2 = Vec::new();
    assert!(!port.receive(&mut ctx, &mut out2, 64));
    assert_eq!(out2.len(), 36);
    for p in &out2 {
        ctx.pool.release(p.buf);
    }
    port.complete_rx(&mut ctx);
    port.flush(&mut ctx);
    assert_eq!(r.fe.tx_responses().unwrap().len(), 100);
}

// ---- tx: the hostile catalogue (robustness.md §3 a1–a10) ----------------------------------

fn assert_fatal(r: &mut Rig, reason: FatalReason) {
    let _ = r.round();
    assert_eq!(r.port.fatal(), Some(reason));
    assert_eq!(r.port.reasons().fatals(reason), 1);
    assert!(!r.port.carrier(), "carrier off");
    assert!(r.port.take_fds_changed());
    assert!(r.port.fds().is_empty(), "no longer polled");
    // Further kicks are ignored, nothing panics, and no buffer is held.
    r.fe.kick_tx();
    assert!(r.round().is_empty());
    assert_eq!(r.free_buffers(), 96);
}

#[test]
fn a1_req_prod_jumping_past_the_ring_is_fatal() {
    let mut r = Rig::new();
    r.assert_forwards();
    let prod = r.fe.tx_req_prod_pvt();
    r.fe.set_tx_req_prod(prod.wrapping_add(300)).unwrap();
    r.fe.kick_tx();
    assert_fatal(&mut r, FatalReason::ImpossibleRequestCount);
    assert_eq!(r.counter("fatal_impossible_request_count"), 1);
}

#[test]
fn a2_req_prod_going_backwards_is_fatal() {
    let mut r = Rig::new();
    r.assert_forwards();
    r.fe.set_tx_req_prod(0u32.wrapping_sub(5)).unwrap();
    r.fe.kick_tx();
    assert_fatal(&mut r, FatalReason::ImpossibleRequestCount);
}

fn chain(r: &mut Rig, follow: usize) -> Vec<TxRequest> {
    let (gfn, gref) = r.fe.page(true).unwrap();
    r.fe.write_page(gfn, 0, &udp_frame(100)).unwrap();
    let total = 100 + follow as u16 * 10;
    let mut v = vec![req(gref, 0, NETTXF_MORE_DATA, 1, total)];
    for i in 0..follow {
        let more = if i + 1 < follow { NETTXF_MORE_DATA } else { 0 };
        v.push(req(gref, 200, more, 2 + i as u16, 10));
    }
    v
}

#[test]
fn a3_twenty_one_slots_drop_twenty_two_are_fatal() {
    let mut r = Rig::new();
    let reqs = chain(&mut r, 20); // 21 slots
    r.fe.send_tx(&reqs).unwrap();
    assert!(r.round().is_empty());
    let rsps = r.fe.tx_responses().unwrap();
    assert_eq!(rsps.len(), 21);
    assert!(rsps.iter().all(|x| x.status == NETIF_RSP_ERROR));
    assert_eq!(r.port.reasons().drops(DropReason::TxTooManySlots), 1);
    assert_eq!(r.port.fatal(), None);
    r.assert_forwards();

    let reqs = chain(&mut r, 21); // 22 slots
    r.fe.send_tx(&reqs).unwrap();
    assert_fatal(&mut r, FatalReason::MaliciousSlotCount);
}

#[test]
fn a4_a12_a_chain_running_past_the_published_requests_is_fatal() {
    // Also what a frontend disappearing mid-packet looks like on the tx ring.
    let mut r = Rig::new();
    let reqs = chain(&mut r, 3);
    r.fe.send_tx(&reqs[..2]).unwrap();
    assert_fatal(&mut r, FatalReason::SlotsExceedRequests);
}

#[test]
fn a5_first_slot_shorter_than_ethernet_is_dropped() {
    let mut r = Rig::new();
    let (_, gref) = r.fe.page(true).unwrap();
    r.fe.send_tx(&[req(gref, 0, 0, 9, 10)]).unwrap();
    assert!(r.round().is_empty());
    let rsps = r.fe.tx_responses().unwrap();
    assert_eq!((rsps[0].id, rsps[0].status), (9, NETIF_RSP_ERROR));
    assert_eq!(r.port.reasons().drops(DropReason::TxFirstSlotTooShort), 1);
    assert_eq!(r.counter("tx_first_slot_too_short"), 1);
    r.assert_forwards();
}

#[test]
fn a7_offset_plus_size_past_the_page_is_fatal() {
    let mut r = Rig::new();
    let (_, gref) = r.fe.page(true).unwrap();
    r.fe.send_tx(&[req(gref, 4000, 0, 1, 200)]).unwrap();
    assert_fatal(&mut r, FatalReason::CrossPageBoundary);
}

#[test]
fn a8_bad_grants_fail_the_copy_answer_error_and_keep_the_vif() {
    let mut r = Rig::new();
    let frame = udp_frame(100);
    // Not granted at all.
    let (gfn, gref) = r.fe.ungranted_page().unwrap();
    r.fe.write_page(gfn, 0, &frame).unwrap();
    r.fe.send_tx(&[req(gref, 0, 0, 5, frame.len() as u16)])
        .unwrap();
    // Outside the table.
    r.fe.send_tx(&[req(0x7fff_0000, 0, 0, 6, frame.len() as u16)])
        .unwrap();
    // Granted to another domain.
    let (gfn2, gref2) = r.fe.ungranted_page().unwrap();
    r.fe.set_grant_entry(gref2, GTF_PERMIT_ACCESS, 7, gfn2 as u32)
        .unwrap();
    r.fe.send_tx(&[req(gref2, 0, 0, 7, frame.len() as u16)])
        .unwrap();
    // Granted, then revoked before the backend looked.
    let (gfn3, gref3) = r.fe.page(true).unwrap();
    r.fe.write_page(gfn3, 0, &frame).unwrap();
    r.fe.revoke(gref3).unwrap();
    r.fe.send_tx(&[req(gref3, 0, 0, 8, frame.len() as u16)])
        .unwrap();
    assert!(r.round().is_empty());
    let rsps = r.fe.tx_responses().unwrap();
    assert_eq!(rsps.len(), 4);
    assert!(rsps.iter().all(|x| x.status == NETIF_RSP_ERROR), "{rsps:?}");
    assert_eq!(r.port.reasons().drops(DropReason::TxGrantCopyFailed), 4);
    assert_eq!(r.port.fatal(), None);
    assert_eq!(r.free_buffers(), 96);
    r.assert_forwards();
}

#[test]
fn a10_an_endless_extra_chain_is_fatal() {
    let mut r = Rig::new();
    let (_, gref) = r.fe.page(true).unwrap();
    let mut reqs = vec![req(gref, 0, NETTXF_EXTRA_INFO, 1, 100)];
    let gso = ExtraInfo::encode(
        &Extra::Gso {
            size: 1448,
            gso_type: 1,
            features: 0,
        },
        true,
    );
    assert_eq!(gso.flags, XEN_NETIF_EXTRA_FLAG_MORE);
    for _ in 0..40 {
        reqs.push(gso.to_tx_request());
    }
    r.fe.send_tx(&reqs).unwrap();
    assert_fatal(&mut r, FatalReason::MissingExtraInfo);
}

#[test]
fn a9_an_unknown_extra_type_is_fatal() {
    let mut r = Rig::new();
    let (_, gref) = r.fe.page(true).unwrap();
    let mut bad = ExtraInfo::encode(&Extra::McastAdd([1, 0, 0x5e, 0, 0, 1]), false);
    bad.extra_type = 7;
    r.fe.send_tx(&[req(gref, 0, NETTXF_EXTRA_INFO, 1, 100), bad.to_tx_request()])
        .unwrap();
    assert_fatal(&mut r, FatalReason::InvalidExtraType);
}

#[test]
fn a9_the_multicast_list_holds_64_and_refuses_the_65th() {
    let mut r = Rig::new();
    let (_, gref) = r.fe.page(true).unwrap();
    let mcast = |r: &mut Rig, id: u16, e: Extra| -> u16 {
        let x = ExtraInfo::encode(&e, false);
        r.fe.send_tx(&[req(gref, 0, NETTXF_EXTRA_INFO, id, 0), x.to_tx_request()])
            .unwrap();
        assert!(r.round().is_empty(), "a filter change is no packet");
        let rsps = r.fe.tx_responses().unwrap();
        let answer: Vec<_> = rsps.iter().filter(|x| x.status != NETIF_RSP_NULL).collect();
        assert_eq!(answer.len(), 1, "{rsps:?}");
        assert_eq!(answer[0].id, id);
        answer[0].status as u16
    };
    let group = |i: u8| [1, 0, 0x5e, 0, 0, i];
    for i in 0..64u8 {
        assert_eq!(
            mcast(&mut r, u16::from(i), Extra::McastAdd(group(i))),
            NETIF_RSP_OKAY as u16
        );
    }
    assert_eq!(
        mcast(&mut r, 64, Extra::McastAdd(group(64))),
        NETIF_RSP_ERROR as u16
    );
    // A delete makes room again; deleting an unknown group is harmless.
    assert_eq!(
        mcast(&mut r, 65, Extra::McastDel(group(200))),
        NETIF_RSP_OKAY as u16
    );
    assert_eq!(
        mcast(&mut r, 66, Extra::McastAdd(group(64))),
        NETIF_RSP_ERROR as u16
    );
    assert_eq!(
        mcast(&mut r, 67, Extra::McastDel(group(3))),
        NETIF_RSP_OKAY as u16
    );
    assert_eq!(
        mcast(&mut r, 68, Extra::McastAdd(group(64))),
        NETIF_RSP_OKAY as u16
    );
    let counters: std::collections::HashMap<_, _> = r.port.counters().into_iter().collect();
    assert_eq!(counters.get("tx_multicast_list_full"), Some(&2));
    assert_eq!(r.port.fatal(), None);
    r.assert_forwards();
}

#[test]
fn a9_gso_size_zero_is_fatal() {
    let mut r = Rig::new();
    let (_, gref) = r.fe.page(true).unwrap();
    let g = ExtraInfo::encode(
        &Extra::Gso {
            size: 0,
            gso_type: 1,
            features: 0,
        },
        false,
    );
    r.fe.send_tx(&[req(gref, 0, NETTXF_EXTRA_INFO, 1, 100), g.to_tx_request()])
        .unwrap();
    assert_fatal(&mut r, FatalReason::GsoSizeZero);
}

#[test]
fn a_slot_changed_while_being_read_is_read_once() {
    // A racing guest rewrites the first slot between {offset 0, size 100} and
    // {offset 4000, size 200} (possibly torn: {0, 200} or {4000, 100}). Whatever the
    // backend copied, it must act on that one copy: a frame of the size it read, holding
    // the page's bytes from offset 0, or the cross-page fatal verdict — never a mix of
    // two reads, never a panic.
    let mut outcomes = (0, 0);
    for round in 0..40 {
        let mut r = Rig::new();
        let page_bytes: Vec<u8> = (0..300u32).map(|i| (i * 3) as u8).collect();
        let (gfn, gref) = r.fe.page(true).unwrap();
        r.fe.write_page(gfn, 0, &page_bytes).unwrap();
        let good = req(gref, 0, 0, 1, 100);
        let evil = req(gref, 4000, 0, 1, 200);
        let idx = r.fe.tx_req_prod_pvt();
        r.fe.send_tx(&[good]).unwrap();
        let mem = Arc::clone(r.fe.memory());
        let (ring_gfn, _) = r.fe.tx_ring_page();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s2 = Arc::clone(&stop);
        let flipper = std::thread::spawn(move || {
            let off = 64 + (idx as usize % 256) * 12;
            let mut b = [0u8; 12];
            let mut i = 0u64;
            while !s2.load(std::sync::atomic::Ordering::Relaxed) {
                let r = if i % 2 == 0 { evil } else { good };
                b[0..4].copy_from_slice(&r.gref.to_le_bytes());
                b[4..6].copy_from_slice(&r.offset.to_le_bytes());
                b[6..8].copy_from_slice(&r.flags.to_le_bytes());
                b[8..10].copy_from_slice(&r.id.to_le_bytes());
                b[10..12].copy_from_slice(&r.size.to_le_bytes());
                mem.write(ring_gfn, off, &b).unwrap();
                i += 1;
            }
        });
        if round % 2 == 1 {
            std::thread::yield_now();
        }
        let got = r.round();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        flipper.join().unwrap();
        match r.port.fatal() {
            Some(f) => {
                assert_eq!(f, FatalReason::CrossPageBoundary);
                assert!(got.is_empty());
                outcomes.1 += 1;
            }
            None => {
                assert_eq!(got.len(), 1);
                let n = got[0].0.len();
                assert!(n == 100 || n == 200, "{n}");
                assert_eq!(got[0].0, page_bytes[..n]);
                outcomes.0 += 1;
                let rsps = r.fe.tx_responses().unwrap();
                assert_eq!(rsps.len(), 1);
                assert_eq!(rsps[0].status, NETIF_RSP_OKAY);
            }
        }
        assert_eq!(r.free_buffers(), 96);
    }
    eprintln!("frames {}, fatal {}", outcomes.0, outcomes.1);
}

// ---- rx: delivery and offloads -----------------------------------------------------------

#[test]
fn rx_delivers_gso_frames_whole_with_the_extra_after_the_first_slot() {
    let mut r = Rig::new();
    let pages = r.fe.post_rx_buffers(64).unwrap();
    let big = tcp_frame(30000);
    let meta = FrameMeta {
        gso: Some(Gso {
            kind: GsoKind::TcpV4,
            size: 1448,
        }),
        csum_partial: true,
        data_validated: false,
    };
    r.transmit(&big, meta).unwrap();
    let small = udp_frame(100);
    r.transmit(&small, FrameMeta::default()).unwrap();
    r.flush();
    assert!(r.fe.rx_signalled());
    let frames = read_rx(&mut r.fe, &pages, 0);
    assert_eq!(frames.len(), 2);
    assert_eq!(frames[0].0, big);
    assert_eq!(
        frames[0].2,
        Some(GsoInfo {
            gso_type: GsoType::TcpV4,
            size: 1448
        })
    );
    assert!(frames[0].1.flags & NETRXF_EXTRA_INFO != 0);
    assert_eq!(
        ChecksumState::from_rx_flags(frames[0].1.flags),
        ChecksumState::Partial
    );
    assert_eq!(frames[1].0, small);
    assert_eq!(r.counter("rx_gso_frames"), 1);
    assert_eq!(r.counter("rx_frames"), 2);
    assert!(r.counter("rx_max_frame") > 1500);
    assert_eq!(r.free_buffers(), 96);
}

#[test]
fn rx_segments_gso_for_a_frontend_without_gso() {
    let f = FrontendFeatures {
        rx_notify: true,
        sg: true,
        ..FrontendFeatures::default()
    };
    let mut r = Rig::with(Some(f), None);
    let pages = r.fe.post_rx_buffers(64).unwrap();
    let big = tcp_frame(10000);
    let meta = FrameMeta {
        gso: Some(Gso {
            kind: GsoKind::TcpV4,
            size: 1448,
        }),
        csum_partial: true,
        data_validated: false,
    };
    r.transmit(&big, meta).unwrap();
    r.flush();
    let frames = read_rx(&mut r.fe, &pages, 0);
    assert_eq!(frames.len(), 7, "ceil(10000 / 1448) segments");
    let mut payload = Vec::new();
    for (seg, rsp, gso) in &frames {
        assert!(gso.is_none());
        assert!(seg.len() <= 1514);
        assert_eq!(
            ChecksumState::from_rx_flags(rsp.flags),
            ChecksumState::Validated
        );
        let tcp = TcpPacket::new_checked(&seg[34..]).unwrap();
        assert!(tcp.verify_checksum_v4("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap()));
        payload.extend_from_slice(&seg[54..]);
    }
    assert_eq!(payload, &big[54..]);
    assert_eq!(r.counter("rx_segmented_frames"), 1);
    assert_eq!(r.counter("rx_segments"), 7);
    assert_eq!(
        r.free_buffers(),
        96,
        "the shared buffer went back after the last segment"
    );
}

#[test]
fn rx_completes_partial_checksums_the_frontend_cannot_take() {
    let f = FrontendFeatures {
        rx_notify: true,
        sg: true,
        no_csum_offload: true,
        ..FrontendFeatures::default()
    };
    let mut r = Rig::with(Some(f), None);
    let pages = r.fe.post_rx_buffers(8).unwrap();
    let good = udp_frame(500);
    let mut partial = good.clone();
    partial[40] = 0x12; // checksum field garbage (partial: to be filled in)
    partial[41] = 0x34;
    let meta = FrameMeta {
        csum_partial: true,
        ..FrameMeta::default()
    };
    r.transmit(&partial, meta).unwrap();
    r.flush();
    let frames = read_rx(&mut r.fe, &pages, 0);
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].0, good);
    let udp = UdpPacket::new_checked(&frames[0].0[34..]).unwrap();
    assert!(udp.verify_checksum_v4("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap()));
    assert_eq!(r.counter("rx_csum_completed"), 1);
}

#[test]
fn a8_rx_into_a_read_only_grant_overwrites_the_status() {
    let mut r = Rig::new();
    let (_, ro) = r.fe.page(true).unwrap();
    r.fe.post_rx(&[ro]).unwrap();
    r.transmit(&udp_frame(100), FrameMeta::default()).unwrap();
    r.flush();
    let rsps = r.fe.rx_responses().unwrap();
    assert_eq!(rsps.len(), 1);
    assert_eq!(rsps[0].status, -1, "GNTST_general_error in the slot");
    assert_eq!(r.port.reasons().drops(DropReason::RxGrantCopyFailed), 1);
    assert_eq!(r.port.fatal(), None);
    assert_eq!(r.free_buffers(), 96);
}

#[test]
fn a11_a_frontend_that_never_posts_buffers_fills_expires_and_stalls() {
    let cfg = RxBacklogConfig {
        max_bytes: 64 * 1024,
        drain_timeout: Duration::from_millis(500),
        stall_timeout: Some(Duration::from_millis(2000)),
    };
    let mut r = Rig::with(None, Some(cfg));
    let frame = udp_frame(1400);
    let mut refused = 0;
    for _ in 0..60 {
        if r.transmit(&frame, FrameMeta::default()).is_err() {
            refused += 1;
        }
        r.flush();
    }
    assert!(refused > 0);
    assert_eq!(r.port.reasons().drops(DropReason::RxBacklogFull), refused);
    assert!(r.counter("rx_backlog_bytes") >= 64 * 1024);
    assert!(r.port.next_timer().is_some());
    // The drain timeout drops what waited too long.
    r.now += 600;
    r.timer();
    assert_eq!(r.port.reasons().drops(DropReason::RxExpired), 60 - refused);
    assert_eq!(r.counter("rx_backlog_packets"), 0);
    assert_eq!(
        r.free_buffers(),
        96,
        "expired packets released their buffers"
    );
    // No progress for the stall timeout while packets wait: carrier off.
    r.transmit(&frame, FrameMeta::default()).unwrap();
    r.now += 2100;
    r.timer();
    assert!(!r.port.carrier(), "guest rx stalled");
    assert_eq!(r.counter("rx_stalls"), 1);
    assert_eq!(
        r.transmit(&frame, FrameMeta::default()),
        Err(vswitch::DropReason::PortDisabled)
    );
    assert_eq!(r.port.reasons().drops(DropReason::RxCarrierOff), 1);
    // Buffers appear: carrier back on, traffic flows.
    let pages = r.fe.post_rx_buffers(16).unwrap();
    r.timer();
    assert!(r.port.carrier());
    r.transmit(&frame, FrameMeta::default()).unwrap();
    r.flush();
    let frames = read_rx(&mut r.fe, &pages, 0);
    assert!(frames.iter().any(|f| f.0 == frame));
}

#[test]
fn a12_the_frontend_disappearing_leaves_nothing_behind() {
    let mut r = Rig::new();
    for _ in 0..10 {
        r.transmit(&udp_frame(1000), FrameMeta::default()).unwrap();
    }
    r.flush();
    assert_eq!(r.counter("rx_backlog_packets"), 10);
    // Half a packet on the tx ring, then the domain is gone.
    let reqs = chain(&mut r, 3);
    r.fe.queue_tx(&reqs[..2]).unwrap();
    r.fe.push_tx().unwrap();
    r.fe.close_ports();
    r.hv.remove(1);
    let _ = r.round();
    r.transmit(&udp_frame(1000), FrameMeta::default()).ok();
    r.timer();
    let (mut ctx, port) = r.ctx();
    port.disconnect(&mut ctx);
    assert!(!port.carrier() && !port.is_connected());
    assert!(port.take_fds_changed());
    assert!(port.fds().is_empty());
    assert_eq!(r.free_buffers(), 96, "backlog purged, scratch released");
    assert_eq!(r.counter("disconnects"), 1);
    // A disconnected port refuses frames cleanly.
    assert_eq!(
        r.transmit(&udp_frame(10), FrameMeta::default()),
        Err(vswitch::DropReason::PortDisabled)
    );
}

#[test]
fn disconnect_unmaps_the_rings_so_the_frontend_can_revoke() {
    let mut r = Rig::new();
    let (_, tx_ref) = r.fe.tx_ring_page();
    assert!(r.fe.revoke(tx_ref).is_err(), "mapped: busy");
    let (mut ctx, port) = r.ctx();
    port.disconnect(&mut ctx);
    assert!(r.fe.revoke(tx_ref).is_ok());
    assert_eq!(r.hv.evtchn().ports_in_use(0), 0, "dom0's ports closed");
}

#[test]
fn credit_limiting_holds_packets_until_the_refill() {
    let rate = TxRate {
        credit_bytes: 1000,
        credit_usec: 200_000,
    };
    let mut r = Rig::full(None, None, rate);
    let f = udp_frame(700);
    r.fe.send_frame(&f, None, ChecksumState::Unknown).unwrap();
    r.fe.send_frame(&f, None, ChecksumState::Unknown).unwrap();
    assert_eq!(r.round().len(), 1, "the second waits for credit");
    let t = r.port.next_timer().expect("refill timer");
    assert_eq!(r.counter("tx_credit_waits"), 1);
    r.now = t.millis();
    r.timer();
    assert_eq!(r.round().len(), 1, "the refill lets it through");
    assert_eq!(r.fe.tx_responses().unwrap().len(), 2);
}

#[test]
fn connect_refuses_inconsistent_rings_and_twice() {
    let hv = Arc::new(Hypervisor::new(Registry::new().get(0).unwrap()).unwrap());
    hv.instantiate(&guest(1)).unwrap();
    let env = LocalEnv::new(Arc::clone(&hv), 1).unwrap();
    let fe = MockFrontend::new(Box::new(env), 0).unwrap();
    fe.set_tx_req_prod(1000).unwrap();
    let mut port = NetbackPort::new(NetbackConfig::new(1, 0));
    assert!(
        port.connect(&hv, &fe.rings()).is_err(),
        "req_prod − rsp_prod > 256"
    );
    assert!(!port.is_connected());
    fe.set_tx_req_prod(0).unwrap();
    port.connect(&hv, &fe.rings()).unwrap();
    assert!(port.connect(&hv, &fe.rings()).is_err());
    let mut bad = fe.rings();
    bad.rx_ring_ref = 4000;
    let mut other = NetbackPort::new(NetbackConfig::new(1, 1));
    assert!(other.connect(&hv, &bad).is_err(), "ungranted ring");
    assert_eq!(
        hv.evtchn().ports_in_use(0),
        2,
        "the refused connect bound nothing"
    );
    let _ = PAGE_SIZE;
}
