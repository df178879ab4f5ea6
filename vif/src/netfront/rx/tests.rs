use super::*;
use crate::netback::rx::{plan_rx, RxPacketInfo, MAX_RX_PACKET_LEN};
use crate::netif::{
    NETRXF_CSUM_BLANK, NETRXF_DATA_VALIDATED, XEN_NETIF_EXTRA_FLAG_MORE, XEN_NETIF_GSO_TYPE_TCPV4,
};
use proptest::prelude::*;

const TSO: GsoInfo = GsoInfo {
    gso_type: GsoType::TcpV4,
    size: 1448,
};

fn data(id: u16, status: i16, flags: u16) -> RxResponse {
    RxResponse {
        id,
        offset: 0,
        flags,
        status,
    }
}

fn extra(e: Extra, more: bool) -> RxResponse {
    ExtraInfo::encode(&e, more).to_rx_response()
}

fn gso(size: u16, t: u8) -> RxResponse {
    extra(
        Extra::Gso {
            size,
            gso_type: t,
            features: 0,
        },
        false,
    )
}

/// A parsed frame with its data slots materialised.
struct Parsed {
    frame: RxFrame,
    data: Vec<RxDataSlot>,
}

impl std::ops::Deref for Parsed {
    type Target = RxFrame;
    fn deref(&self) -> &RxFrame {
        &self.frame
    }
}

impl Parsed {
    fn data(&self) -> &[RxDataSlot] {
        &self.data
    }
}

fn frame(rsps: &[RxResponse]) -> Parsed {
    match parse_rx_frame(rsps) {
        Some(RxOutcome::Frame(frame)) => {
            let data: Vec<_> = frame.data(rsps).collect();
            assert_eq!(data.len(), frame.nr_data);
            Parsed { frame, data }
        }
        other => panic!("expected a frame, got {other:?}"),
    }
}

fn dropped(rsps: &[RxResponse]) -> (RxFrameError, usize) {
    match parse_rx_frame(rsps) {
        Some(RxOutcome::Dropped { reason, slots }) => (reason, slots),
        other => panic!("expected a drop, got {other:?}"),
    }
}

#[test]
fn posting_uses_slot_index_ids_and_positions() {
    assert_eq!(
        rx_request(5, 77),
        RxRequest {
            id: 5,
            pad: 0,
            gref: 77
        }
    );
    assert_eq!(rx_request(256 + 5, 77).id, 5);
    assert_eq!(rx_request(u32::MAX, 1).id, 255);
    let mut s = RxBufferSlots::new();
    s.post(3, "a").unwrap();
    assert_eq!(s.post(259, "b"), Err("b"), "slot 3 still holds a buffer");
    assert_eq!(s.posted(), 1);
    assert_eq!(s.take(259), Some("a"), "found by position mod 256");
    assert_eq!(s.take(3), None, "nothing posted there any more");
    s.post(259, "b").unwrap();
}

#[test]
fn single_and_multi_slot_frames() {
    let f = frame(&[data(0, 60, NETRXF_DATA_VALIDATED)]);
    assert_eq!(
        (f.len, f.slots, f.checksum),
        (60, 1, ChecksumState::Validated)
    );
    assert_eq!(
        f.data(),
        &[RxDataSlot {
            slot: 0,
            offset: 0,
            len: 60
        }]
    );
    let rsps = [
        data(
            0,
            4096,
            NETRXF_CSUM_BLANK | NETRXF_DATA_VALIDATED | NETRXF_MORE_DATA,
        ),
        data(1, 4096, NETRXF_MORE_DATA),
        data(2, 808, 0),
        data(3, 99, 0),
    ];
    let f = frame(&rsps);
    assert_eq!(f.len, 9000, "Σ status, the first slot is not a total");
    assert_eq!(f.slots, 3);
    assert_eq!(f.checksum, ChecksumState::Partial);
    let slots: Vec<_> = f.data().iter().map(|d| (d.slot, d.len)).collect();
    assert_eq!(slots, [(0, 4096), (1, 4096), (2, 808)]);
}

#[test]
fn extras_sit_after_the_first_data_slot() {
    let hash = HashInfo {
        hash_type: 3,
        algorithm: 1,
        value: 42,
    };
    let rsps = [
        data(0, 4096, NETRXF_EXTRA_INFO | NETRXF_MORE_DATA),
        extra(
            Extra::Gso {
                size: 1448,
                gso_type: XEN_NETIF_GSO_TYPE_TCPV4,
                features: 0,
            },
            true,
        ),
        extra(Extra::Hash(hash), false),
        data(3, 100, 0),
    ];
    let f = frame(&rsps);
    assert_eq!(f.gso, Some(TSO));
    assert_eq!(f.hash, Some(hash));
    assert_eq!(f.slots, 4);
    let slots: Vec<_> = f.data().iter().map(|d| d.slot).collect();
    assert_eq!(slots, [0, 3]);
    assert_eq!(f.len, 4196);
}

#[test]
fn hostile_extras_drop_the_frame() {
    let (e, n) = dropped(&[data(0, 60, NETRXF_EXTRA_INFO)]);
    assert_eq!((e, n), (RxFrameError::MissingExtraInfo, 1));
    let more = extra(
        Extra::Hash(HashInfo {
            hash_type: 0,
            algorithm: 0,
            value: 0,
        }),
        true,
    );
    let (e, n) = dropped(&[data(0, 60, NETRXF_EXTRA_INFO), more, more]);
    assert_eq!(
        (e, n),
        (RxFrameError::MissingExtraInfo, 3),
        "everything published consumed"
    );
    let bad = ExtraInfo {
        extra_type: 5,
        flags: 0,
        payload: [0; 6],
    }
    .to_rx_response();
    assert_eq!(
        dropped(&[data(0, 60, NETRXF_EXTRA_INFO), bad, data(9, 1, 0)]),
        (RxFrameError::InvalidExtraType, 2)
    );
    assert_eq!(
        dropped(&[data(0, 60, NETRXF_EXTRA_INFO), gso(0, 1)]),
        (RxFrameError::GsoSizeZero, 2)
    );
    assert_eq!(
        dropped(&[data(0, 60, NETRXF_EXTRA_INFO), gso(1448, 7)]),
        (RxFrameError::BadGsoType, 2)
    );
    // The chain continues past an invalid extra while FLAG_MORE says so.
    let bad_more = ExtraInfo {
        extra_type: 0,
        flags: XEN_NETIF_EXTRA_FLAG_MORE,
        payload: [0; 6],
    }
    .to_rx_response();
    assert_eq!(
        dropped(&[
            data(0, 60, NETRXF_EXTRA_INFO),
            bad_more,
            gso(1448, 1),
            data(9, 1, 0)
        ]),
        (RxFrameError::InvalidExtraType, 3)
    );
}

#[test]
fn hostile_data_slots_drop_the_frame_but_consume_the_chain() {
    assert_eq!(dropped(&[data(0, -1, 0)]), (RxFrameError::BadSlot, 1));
    assert_eq!(
        dropped(&[
            data(0, 4000, NETRXF_MORE_DATA),
            data(1, -3, NETRXF_MORE_DATA),
            data(2, 5, 0)
        ]),
        (RxFrameError::BadSlot, 3),
        "a failed copy (GNTST status) anywhere drops the frame"
    );
    let mut r = data(0, 100, 0);
    r.offset = 4000;
    assert_eq!(dropped(&[r]), (RxFrameError::BadSlot, 1));
    r.offset = 3996;
    assert_eq!(frame(&[r]).data()[0].offset, 3996);
    assert_eq!(
        dropped(&[data(0, 100, NETRXF_MORE_DATA)]),
        (RxFrameError::NeedMoreSlots, 1)
    );
    assert_eq!(
        dropped(&[
            data(0, 100, NETRXF_MORE_DATA),
            data(1, 100, NETRXF_MORE_DATA)
        ]),
        (RxFrameError::NeedMoreSlots, 2)
    );
}

#[test]
fn slot_limit_depends_on_first_slot_size() {
    let chain = |first: i16, n: usize| -> Vec<RxResponse> {
        (0..n)
            .map(|i| {
                let flags = if i + 1 < n { NETRXF_MORE_DATA } else { 0 };
                data(i as u16, if i == 0 { first } else { 100 }, flags)
            })
            .collect()
    };
    assert_eq!(frame(&chain(1000, 18)).slots, 18);
    assert_eq!(dropped(&chain(1000, 19)), (RxFrameError::TooManySlots, 19));
    assert_eq!(
        frame(&chain(256, 19)).slots,
        19,
        "small first slot: one more allowed"
    );
    assert_eq!(dropped(&chain(256, 20)), (RxFrameError::TooManySlots, 20));
    // Very long chains never overflow the fixed data array.
    assert_eq!(dropped(&chain(100, 250)), (RxFrameError::TooManySlots, 250));
}

#[test]
fn zero_status_slots_are_consumed_not_listed() {
    let f = frame(&[data(0, 0, NETRXF_MORE_DATA), data(1, 50, 0)]);
    assert_eq!(
        f.data(),
        &[RxDataSlot {
            slot: 1,
            offset: 0,
            len: 50
        }]
    );
    assert_eq!((f.len, f.slots), (50, 2));
}

#[test]
fn empty_input() {
    assert_eq!(parse_rx_frame(&[]), None);
    for e in RxFrameError::ALL {
        assert!(e.name().starts_with("rx_"));
    }
}

fn any_response() -> impl Strategy<Value = RxResponse> {
    (
        any::<u16>(),
        prop_oneof![Just(0u16), 0u16..5000, any::<u16>()],
        prop_oneof![Just(0u16), 0u16..32, any::<u16>()],
        prop_oneof![0i16..4097, any::<i16>()],
    )
        .prop_map(|(id, offset, flags, status)| RxResponse {
            id,
            offset,
            flags,
            status,
        })
}

proptest! {
    /// Whatever netback plans, netfront reads back: the same length, GSO, checksum and
    /// slot count, with each data slot where netback copied it.
    #[test]
    fn netfront_reads_what_netback_plans(
        len in 1usize..=MAX_RX_PACKET_LEN,
        with_gso in any::<bool>(),
        with_hash in any::<bool>(),
        csum in 0u8..3,
    ) {
        let pkt = RxPacketInfo {
            len,
            gso: with_gso.then_some(TSO),
            checksum: [ChecksumState::Unknown, ChecksumState::Partial, ChecksumState::Validated][csum as usize],
            hash: with_hash.then_some(HashInfo { hash_type: 1, algorithm: 1, value: 5 }),
        };
        let reqs: Vec<_> = (0..pkt.slots_needed() as u32).map(|i| rx_request(i, 1000 + i)).collect();
        let mut rsps = [RxResponse::default(); crate::netback::rx::MAX_RX_SLOTS];
        let plan = plan_rx(&pkt, &reqs, &mut rsps).unwrap();
        let f = match parse_rx_frame(&rsps[..plan.slots()]) {
            Some(RxOutcome::Frame(f)) => f,
            other => return Err(TestCaseError::fail(format!("{other:?}"))),
        };
        prop_assert_eq!(f.len, len);
        prop_assert_eq!(f.slots, pkt.slots_needed());
        prop_assert_eq!(f.gso, pkt.gso);
        prop_assert_eq!(f.hash, pkt.hash);
        prop_assert_eq!(f.checksum, pkt.checksum);
        let copies: Vec<_> = plan.copies(&reqs).map(|c| (c.slot, c.len)).collect();
        let got: Vec<_> = f.data(&rsps).map(|d| (d.slot, d.len)).collect();
        prop_assert_eq!(got, copies);
    }

    /// Arbitrary responses never panic; outcomes consume between 1 and all of them, and
    /// frames obey the page and slot limits.
    #[test]
    fn arbitrary_responses_never_panic(rsps in proptest::collection::vec(any_response(), 0..80)) {
        let mut pos = 0;
        while let Some(o) = parse_rx_frame(&rsps[pos..]) {
            let n = o.slots();
            prop_assert!(n >= 1 && n <= rsps.len() - pos);
            if let RxOutcome::Frame(f) = &o {
                let data: Vec<_> = f.data(&rsps[pos..]).collect();
                prop_assert_eq!(data.len(), f.nr_data);
                prop_assert!(data.len() <= MAX_RX_FRAME_DATA_SLOTS);
                prop_assert_eq!(f.len, data.iter().map(|d| usize::from(d.len)).sum::<usize>());
                for d in data {
                    prop_assert!(d.len > 0 && usize::from(d.offset) + usize::from(d.len) <= PAGE_SIZE);
                    prop_assert!(d.slot < f.slots);
                }
            }
            pos += n;
        }
        prop_assert_eq!(pos, rsps.len());
    }
}
