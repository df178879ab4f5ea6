use super::*;
use crate::netif::{
    GsoType, NETRXF_CSUM_BLANK, NETRXF_DATA_VALIDATED, XEN_NETIF_EXTRA_FLAG_MORE,
    XEN_NETIF_EXTRA_TYPE_GSO, XEN_NETIF_EXTRA_TYPE_HASH,
};
use proptest::prelude::*;

/// A plan with its responses and copies materialised, for assertions.
#[derive(Debug, PartialEq)]
struct Planned {
    plan: RxPlan,
    rsps: Vec<RxResponse>,
    copies: Vec<RxCopy>,
}

impl Planned {
    fn copies(&self) -> &[RxCopy] {
        &self.copies
    }
    fn responses(&self) -> &[RxResponse] {
        &self.rsps
    }
    fn slots(&self) -> usize {
        self.plan.slots()
    }
    fn set_copy_status(&mut self, i: usize, st: GntSt) -> bool {
        match self.copies.get(i).copied() {
            Some(c) => apply_copy_status(&mut self.rsps, &c, st),
            None => false,
        }
    }
}

fn planned(pkt: &RxPacketInfo, reqs: &[RxRequest]) -> Result<Planned, RxPlanError> {
    let mut rsps = vec![RxResponse::default(); MAX_RX_SLOTS];
    let plan = plan_rx(pkt, reqs, &mut rsps)?;
    rsps.truncate(plan.slots());
    let copies = plan.copies(reqs).collect();
    Ok(Planned { plan, rsps, copies })
}

fn reqs(n: usize) -> Vec<RxRequest> {
    (0..n)
        .map(|i| RxRequest {
            id: 100 + i as u16,
            pad: 0,
            gref: 500 + i as u32,
        })
        .collect()
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

const TSO: GsoInfo = GsoInfo {
    gso_type: GsoType::TcpV4,
    size: 1448,
};

#[test]
fn slots_needed_counts_pages_and_extras() {
    let p = |len, gso: Option<GsoInfo>| RxPacketInfo {
        len,
        gso,
        ..Default::default()
    };
    assert_eq!(p(0, None).slots_needed(), 1);
    assert_eq!(p(60, None).slots_needed(), 1);
    assert_eq!(p(4096, None).slots_needed(), 1);
    assert_eq!(p(4097, None).slots_needed(), 2);
    assert_eq!(p(65535, Some(TSO)).slots_needed(), 17);
    let mut h = p(1500, Some(TSO));
    h.hash = Some(HashInfo {
        hash_type: 1,
        algorithm: 1,
        value: 9,
    });
    assert_eq!(h.slots_needed(), 3);
}

#[test]
fn small_packet_one_slot() {
    let pkt = RxPacketInfo {
        len: 60,
        checksum: ChecksumState::Validated,
        ..Default::default()
    };
    let r = reqs(4);
    let plan = planned(&pkt, &r).unwrap();
    assert_eq!(plan.slots(), 1);
    assert_eq!(
        plan.copies(),
        &[RxCopy {
            slot: 0,
            gref: 500,
            dest_offset: 0,
            packet_offset: 0,
            len: 60
        }]
    );
    assert_eq!(
        plan.responses(),
        &[RxResponse {
            id: 100,
            offset: 0,
            flags: NETRXF_DATA_VALIDATED,
            status: 60
        }]
    );
}

#[test]
fn multi_page_packet_fills_whole_pages_and_marks_more_data() {
    let pkt = RxPacketInfo {
        len: 9000,
        checksum: ChecksumState::Partial,
        ..Default::default()
    };
    let plan = planned(&pkt, &reqs(3)).unwrap();
    let c: Vec<_> = plan
        .copies()
        .iter()
        .map(|c| (c.slot, c.gref, c.packet_offset, c.len))
        .collect();
    assert_eq!(
        c,
        [(0, 500, 0, 4096), (1, 501, 4096, 4096), (2, 502, 8192, 808)]
    );
    let r: Vec<_> = plan
        .responses()
        .iter()
        .map(|r| (r.id, r.flags, r.status))
        .collect();
    assert_eq!(
        r,
        [
            (
                100,
                NETRXF_CSUM_BLANK | NETRXF_DATA_VALIDATED | NETRXF_MORE_DATA,
                4096
            ),
            (101, NETRXF_MORE_DATA, 4096),
            (102, 0, 808),
        ]
    );
    let total: i32 = plan.responses().iter().map(|r| i32::from(r.status)).sum();
    assert_eq!(total, 9000, "rx length = Σ status of data slots");
}

#[test]
fn gso_extra_overlays_the_second_slot() {
    let pkt = RxPacketInfo {
        len: 5000,
        gso: Some(TSO),
        checksum: ChecksumState::Partial,
        hash: None,
    };
    let plan = planned(&pkt, &reqs(3)).unwrap();
    assert_eq!(plan.slots(), 3);
    let rsps = plan.responses();
    assert_eq!(rsps[0].id, 100);
    assert_eq!(
        rsps[0].flags,
        NETRXF_CSUM_BLANK | NETRXF_DATA_VALIDATED | NETRXF_EXTRA_INFO | NETRXF_MORE_DATA
    );
    assert_eq!(rsps[0].status, 4096);
    let e = ExtraInfo::from_rx_response(&rsps[1]);
    assert_eq!(e, ExtraInfo::gso(TSO, false));
    assert_eq!(e.extra_type, XEN_NETIF_EXTRA_TYPE_GSO);
    assert_eq!((rsps[2].id, rsps[2].flags, rsps[2].status), (102, 0, 904));
    // Slot 1's page is not written.
    let slots: Vec<_> = plan.copies().iter().map(|c| (c.slot, c.gref)).collect();
    assert_eq!(slots, [(0, 500), (2, 502)]);
}

#[test]
fn gso_then_hash_chained_with_more_flag() {
    let hash = HashInfo {
        hash_type: 1,
        algorithm: 1,
        value: 0x1234_5678,
    };
    let pkt = RxPacketInfo {
        len: 100,
        gso: Some(TSO),
        checksum: ChecksumState::Unknown,
        hash: Some(hash),
    };
    let plan = planned(&pkt, &reqs(3)).unwrap();
    let rsps = plan.responses();
    assert_eq!(
        rsps[0].flags, NETRXF_EXTRA_INFO,
        "no more_data: all data fits"
    );
    let e1 = ExtraInfo::from_rx_response(&rsps[1]);
    let e2 = ExtraInfo::from_rx_response(&rsps[2]);
    assert_eq!(e1.extra_type, XEN_NETIF_EXTRA_TYPE_GSO);
    assert_eq!(e1.flags, XEN_NETIF_EXTRA_FLAG_MORE);
    assert_eq!(e2.extra_type, XEN_NETIF_EXTRA_TYPE_HASH);
    assert_eq!(e2.flags, 0);
    assert_eq!(e2.decode(), Some(Extra::Hash(hash)));
    assert_eq!(plan.copies().len(), 1);
}

#[test]
fn too_few_requests_or_too_large() {
    let pkt = RxPacketInfo {
        len: 5000,
        gso: Some(TSO),
        ..Default::default()
    };
    assert_eq!(
        planned(&pkt, &reqs(2)),
        Err(RxPlanError::NotEnoughRequests {
            needed: 3,
            available: 2
        })
    );
    let big = RxPacketInfo {
        len: MAX_RX_PACKET_LEN + 1,
        ..Default::default()
    };
    assert_eq!(
        planned(&big, &reqs(20)),
        Err(RxPlanError::TooLarge {
            len: MAX_RX_PACKET_LEN + 1
        })
    );
    assert_eq!(
        RxPlanError::TooLarge { len: 1 }.drop_reason(),
        Some(DropReason::RxPacketTooLarge)
    );
    let max = RxPacketInfo {
        len: MAX_RX_PACKET_LEN,
        gso: Some(TSO),
        ..Default::default()
    };
    assert_eq!(planned(&max, &reqs(19)).unwrap().slots(), 19);
}

#[test]
fn failed_copy_overwrites_that_slots_status() {
    let pkt = RxPacketInfo {
        len: 9000,
        gso: Some(TSO),
        ..Default::default()
    };
    let mut plan = planned(&pkt, &reqs(4)).unwrap();
    assert!(!plan.set_copy_status(0, GntSt::Okay));
    // Copy 1 is data slot 2 (slot 1 holds the extra).
    assert_eq!(plan.copies()[1].slot, 2);
    assert!(plan.set_copy_status(1, GntSt::BadGntref));
    let st: Vec<_> = plan.responses().iter().map(|r| r.status).collect();
    assert_eq!(st[0], 4096);
    assert_eq!(st[2], -3, "GNTST_bad_gntref");
    assert_eq!(st[3], 808);
    assert_eq!(plan.responses()[2].flags, NETRXF_MORE_DATA, "flags kept");
    assert!(
        !plan.set_copy_status(9, GntSt::GeneralError),
        "no such copy"
    );
}

proptest! {
    /// Every plan: responses one per request in order with the request's id (data slots),
    /// copies cover the packet exactly, each ≤ 4096 at offset 0, more_data on every data
    /// slot but the last, csum/extra flags on the first only.
    #[test]
    fn plans_are_consistent(
        len in 0usize..=MAX_RX_PACKET_LEN,
        gso in any::<bool>(),
        hash in any::<bool>(),
        csum in 0u8..3,
    ) {
        let pkt = RxPacketInfo {
            len,
            gso: gso.then_some(TSO),
            checksum: [ChecksumState::Unknown, ChecksumState::Partial, ChecksumState::Validated][csum as usize],
            hash: hash.then_some(HashInfo { hash_type: 0, algorithm: 1, value: 7 }),
        };
        let r = reqs(MAX_RX_SLOTS);
        let plan = planned(&pkt, &r).unwrap();
        prop_assert_eq!(plan.slots(), pkt.slots_needed());
        let mut covered = 0usize;
        for c in plan.copies() {
            prop_assert_eq!(c.packet_offset, covered);
            prop_assert!(c.len as usize <= PAGE_SIZE);
            prop_assert_eq!(c.dest_offset, 0);
            prop_assert_eq!(c.gref, r[c.slot].gref);
            covered += c.len as usize;
        }
        prop_assert_eq!(covered, len);
        let data_slots: Vec<usize> = plan.copies().iter().map(|c| c.slot).collect();
        let mut total = 0i64;
        for (i, rsp) in plan.responses().iter().enumerate() {
            if let Some(k) = data_slots.iter().position(|&s| s == i) {
                prop_assert_eq!(rsp.id, r[i].id);
                total += i64::from(rsp.status);
                let last = k + 1 == data_slots.len();
                prop_assert_eq!(rsp.has(NETRXF_MORE_DATA), !last);
                if i != 0 {
                    prop_assert_eq!(rsp.flags & !NETRXF_MORE_DATA, 0);
                }
            } else {
                prop_assert!(i >= 1 && i <= pkt.extra_slots(), "extras right after slot 0");
            }
        }
        prop_assert_eq!(total, len as i64);
        prop_assert_eq!(plan.responses()[0].has(NETRXF_EXTRA_INFO), pkt.extra_slots() > 0);
    }
}

// ---- backlog -------------------------------------------------------------------------

#[test]
fn backlog_is_bounded_in_bytes_and_returns_refused_packets() {
    let mut b = RxBacklog::new(RxBacklogConfig::default(), secs(0));
    let mut admitted = 0;
    loop {
        match b.enqueue(admitted, 60_000, 15, secs(0)) {
            Ok(()) => admitted += 1,
            Err((item, reason)) => {
                assert_eq!(item, admitted, "the refused packet comes back");
                assert_eq!(reason, DropReason::RxBacklogFull);
                break;
            }
        }
    }
    // 8 × 60000 = 480000 < 524288, the 9th overshoots, the 10th is refused.
    assert_eq!(admitted, 9);
    assert_eq!(b.bytes(), 540_000);
    assert_eq!(b.pop(secs(1)), Some(0));
    assert!(
        b.enqueue(99, 100, 1, secs(1)).is_ok(),
        "room again below the bound"
    );
}

#[test]
fn packets_expire_after_the_drain_timeout() {
    let mut b = RxBacklog::new(RxBacklogConfig::default(), secs(0));
    b.enqueue("a", 100, 1, secs(0)).unwrap();
    b.enqueue("b", 100, 1, secs(5)).unwrap();
    assert_eq!(b.next_deadline(), Some(secs(10)));
    let mut dropped = vec![];
    assert_eq!(b.drop_expired(ms(9_999), |p| dropped.push(p)), 0);
    assert_eq!(b.drop_expired(secs(10), |p| dropped.push(p)), 1);
    assert_eq!(dropped, ["a"]);
    assert_eq!(b.bytes(), 100);
    assert_eq!(b.next_deadline(), Some(secs(15)));
    assert_eq!(b.drop_expired(secs(100), |p| dropped.push(p)), 1);
    assert!(b.is_empty());
    assert_eq!(b.next_deadline(), None);
}

#[test]
fn without_rx_notify_drain_is_30ms_and_no_stall_detection() {
    let cfg = RxBacklogConfig::for_frontend(false);
    assert_eq!(cfg.drain_timeout, ms(30));
    assert_eq!(cfg.stall_timeout, None);
    let mut b = RxBacklog::new(cfg, secs(0));
    b.enqueue(1, 100, 1, secs(0)).unwrap();
    assert_eq!(b.check_stall(0, secs(1000)), None);
    assert_eq!(b.drop_expired(ms(30), |_| {}), 1);
    assert_eq!(RxBacklogConfig::default().drain_timeout, secs(10));
}

#[test]
fn stall_turns_carrier_off_until_enough_slots_for_the_head() {
    let mut b = RxBacklog::new(RxBacklogConfig::default(), secs(0));
    b.enqueue("gso", 60_000, 16, secs(0)).unwrap();
    // XSA-392: one free slot is not enough for a 16-slot head packet.
    assert_eq!(b.next_deadline(), Some(secs(10)));
    assert_eq!(b.check_stall(1, secs(59)), None, "not yet 60 s");
    assert_eq!(
        b.check_stall(16, secs(61)),
        None,
        "enough slots: not stalled"
    );
    assert_eq!(b.check_stall(1, secs(60)), Some(CarrierChange::Off));
    assert!(b.is_stalled());
    assert_eq!(b.check_stall(1, secs(61)), None, "reported once");
    // While stalled, new packets are dropped at the door.
    assert_eq!(
        b.enqueue("late", 100, 1, secs(61)),
        Err(("late", DropReason::RxCarrierOff))
    );
    // The head expired meanwhile; the need of the last head is remembered.
    b.drop_expired(secs(61), |_| {});
    assert!(b.is_empty());
    assert_eq!(b.check_stall(15, secs(62)), None);
    assert_eq!(b.check_stall(16, secs(63)), Some(CarrierChange::On));
    assert!(!b.is_stalled());
    // Progress restarted at carrier on: no immediate re-stall.
    b.enqueue("x", 100, 2, secs(63)).unwrap();
    assert_eq!(b.check_stall(0, secs(100)), None);
    assert_eq!(b.check_stall(0, secs(123)), Some(CarrierChange::Off));
}

#[test]
fn delivery_is_progress() {
    let mut b = RxBacklog::new(RxBacklogConfig::default(), secs(0));
    for i in 0..3 {
        b.enqueue(i, 100, 2, secs(0)).unwrap();
    }
    assert!(b.head_fits(2));
    assert!(!b.head_fits(1));
    assert_eq!(b.head(), Some((&0, 2)));
    assert_eq!(b.pop(secs(50)), Some(0));
    assert_eq!(b.check_stall(0, secs(100)), None, "last delivery at 50 s");
    assert_eq!(b.next_deadline(), Some(secs(10)), "expiry comes first");
    assert_eq!(b.check_stall(0, secs(110)), Some(CarrierChange::Off));
    assert_eq!(b.purge(|_| {}), 2);
    assert_eq!(b.bytes(), 0);
}
