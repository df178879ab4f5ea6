use super::*;
use crate::netif::{
    NETTXF_CSUM_BLANK, NETTXF_DATA_VALIDATED, XEN_NETIF_GSO_TYPE_TCPV4, XEN_NETIF_GSO_TYPE_TCPV6,
};
use proptest::prelude::*;

const MORE: u16 = NETTXF_MORE_DATA;
const EXTRA: u16 = NETTXF_EXTRA_INFO;
const OK: i16 = NETIF_RSP_OKAY;
const ERR: i16 = NETIF_RSP_ERROR;
const NULL: i16 = NETIF_RSP_NULL;

fn data(id: u16, size: u16, flags: u16) -> TxRequest {
    TxRequest {
        gref: 1000 + u32::from(id),
        offset: 0,
        flags,
        id,
        size,
    }
}

fn extra(e: Extra, more: bool) -> TxRequest {
    ExtraInfo::encode(&e, more).to_tx_request()
}

fn gso(size: u16, gso_type: u8, more: bool) -> TxRequest {
    extra(
        Extra::Gso {
            size,
            gso_type,
            features: 0,
        },
        more,
    )
}

fn raw_extra(extra_type: u8, flags: u8) -> TxRequest {
    ExtraInfo {
        extra_type,
        flags,
        payload: [0; 6],
    }
    .to_tx_request()
}

fn build(reqs: &[TxRequest]) -> TxOutcome {
    build_tx_packet(reqs, &TxLimits::default()).unwrap()
}

fn packet(reqs: &[TxRequest]) -> TxPacket {
    match build(reqs) {
        TxOutcome::Packet(p) => p,
        other => panic!("expected a packet, got {other:?}"),
    }
}

/// The packet's fragments as a vector (checking the advertised count).
fn frags(p: &TxPacket, reqs: &[TxRequest]) -> Vec<TxFragment> {
    let v: Vec<_> = p.fragments(reqs).collect();
    assert_eq!(v.len(), p.nr_fragments);
    v
}

fn pairs(rsps: impl Iterator<Item = TxResponse>) -> Vec<(u16, i16)> {
    rsps.map(|r| (r.id, r.status)).collect()
}

fn dropped(reqs: &[TxRequest]) -> (DropReason, Vec<(u16, i16)>) {
    match build(reqs) {
        TxOutcome::Dropped { reason, layout } => {
            (reason, pairs(layout.responses(reqs, |_| NETIF_RSP_ERROR)))
        }
        other => panic!("expected a drop, got {other:?}"),
    }
}

fn fatal(reqs: &[TxRequest]) -> FatalReason {
    match build(reqs) {
        TxOutcome::Fatal(r) => r,
        other => panic!("expected fatal, got {other:?}"),
    }
}

/// First slot of `total` bytes carrying `own` itself, then follow-on slots of `sizes`.
fn chain(total: u16, sizes: &[u16]) -> Vec<TxRequest> {
    let mut v = vec![data(0, total, if sizes.is_empty() { 0 } else { MORE })];
    for (i, &s) in sizes.iter().enumerate() {
        let last = i + 1 == sizes.len();
        v.push(data(i as u16 + 1, s, if last { 0 } else { MORE }));
    }
    v
}

#[test]
fn empty_input_is_no_outcome() {
    assert_eq!(build_tx_packet(&[], &TxLimits::default()), None);
}

#[test]
fn single_slot_packet() {
    let reqs = [
        TxRequest {
            gref: 77,
            offset: 100,
            flags: NETTXF_DATA_VALIDATED,
            id: 5,
            size: 60,
        },
        data(9, 60, 0),
    ];
    let p = packet(&reqs);
    assert_eq!(p.total_len, 60);
    assert_eq!(
        frags(&p, &reqs),
        [TxFragment {
            gref: 77,
            offset: 100,
            len: 60,
            slot: 0
        }]
    );
    assert_eq!(p.checksum, ChecksumState::Validated);
    assert_eq!(p.gso, None);
    assert_eq!(
        p.layout,
        TxSlotLayout {
            slots: 1,
            extras: 0
        }
    );
    assert_eq!(
        pairs(p.responses(&reqs, 0)),
        [(5, OK)],
        "the next packet is untouched"
    );
}

#[test]
fn multi_slot_packet_first_slot_holds_the_rest_of_the_total() {
    let mut reqs = chain(3000, &[1500, 500]);
    reqs[0].flags |= NETTXF_CSUM_BLANK;
    let p = packet(&reqs);
    let lens: Vec<_> = frags(&p, &reqs)
        .iter()
        .map(|f| (f.gref, f.len, f.slot))
        .collect();
    assert_eq!(lens, [(1000, 1000, 0), (1001, 1500, 1), (1002, 500, 2)]);
    assert_eq!(p.checksum, ChecksumState::Partial);
    assert_eq!(pairs(p.responses(&reqs, 0)), [(0, OK), (1, OK), (2, OK)]);
}

#[test]
fn gso_extra_sits_between_first_and_follow_on_slots() {
    let reqs = [
        data(10, 5000, EXTRA | MORE),
        gso(1448, XEN_NETIF_GSO_TYPE_TCPV4, false),
        data(11, 4000, 0),
    ];
    let p = packet(&reqs);
    assert_eq!(
        p.gso,
        Some(GsoInfo {
            gso_type: GsoType::TcpV4,
            size: 1448
        })
    );
    assert_eq!(
        p.layout,
        TxSlotLayout {
            slots: 3,
            extras: 1
        }
    );
    let f: Vec<_> = frags(&p, &reqs).iter().map(|f| (f.len, f.slot)).collect();
    assert_eq!(f, [(1000, 0), (4000, 2)]);
    assert_eq!(
        pairs(p.responses(&reqs, 0)),
        [(10, OK), (0, NULL), (11, OK)]
    );
}

#[test]
fn extra_chain_keeps_one_per_type_and_accepts_hash() {
    let hash = HashInfo {
        hash_type: 1,
        algorithm: 1,
        value: 0xabcd,
    };
    let reqs = [
        data(1, 200, EXTRA),
        gso(100, XEN_NETIF_GSO_TYPE_TCPV4, true),
        extra(Extra::Hash(hash), true),
        gso(1400, XEN_NETIF_GSO_TYPE_TCPV6, false),
    ];
    let p = packet(&reqs);
    assert_eq!(
        p.gso,
        Some(GsoInfo {
            gso_type: GsoType::TcpV6,
            size: 1400
        })
    );
    assert_eq!(p.hash, Some(hash));
    assert_eq!(
        pairs(p.responses(&reqs, 0)),
        [(1, OK), (0, NULL), (0, NULL), (0, NULL)]
    );
}

#[test]
fn invalid_extra_types_are_fatal() {
    for t in [0u8, 5, 6, 0xff] {
        assert_eq!(
            fatal(&[data(1, 60, EXTRA), raw_extra(t, 0)]),
            FatalReason::InvalidExtraType,
            "type {t}"
        );
    }
    // Also deep inside a chain.
    assert_eq!(
        fatal(&[
            data(1, 60, EXTRA),
            gso(1, XEN_NETIF_GSO_TYPE_TCPV4, true),
            raw_extra(9, 0)
        ]),
        FatalReason::InvalidExtraType
    );
}

#[test]
fn unterminated_extra_chain_is_fatal() {
    assert_eq!(fatal(&[data(1, 60, EXTRA)]), FatalReason::MissingExtraInfo);
    let mut reqs = vec![data(1, 60, EXTRA)];
    reqs.extend((0..255).map(|_| gso(1, XEN_NETIF_GSO_TYPE_TCPV4, true)));
    assert_eq!(reqs.len(), 256);
    assert_eq!(fatal(&reqs), FatalReason::MissingExtraInfo);
}

#[test]
fn long_terminated_extra_chain_is_answered_slot_by_slot() {
    // Bounded only by the published requests: 200 HASH extras, then the packet's data.
    let h = Extra::Hash(HashInfo {
        hash_type: 0,
        algorithm: 0,
        value: 0,
    });
    let mut reqs = vec![data(3, 100, EXTRA | MORE)];
    reqs.extend((0..200).map(|i| extra(h, i < 199)));
    reqs.push(data(4, 40, 0));
    let p = packet(&reqs);
    assert_eq!(
        p.layout,
        TxSlotLayout {
            slots: 202,
            extras: 200
        }
    );
    let r = pairs(p.responses(&reqs, 0));
    assert_eq!(r.len(), 202);
    assert_eq!(r[0], (3, OK));
    assert!(r[1..201].iter().all(|&x| x == (0, NULL)));
    assert_eq!(r[201], (4, OK));
}

#[test]
fn bad_gso_is_fatal() {
    assert_eq!(
        fatal(&[data(1, 60, EXTRA), gso(0, XEN_NETIF_GSO_TYPE_TCPV4, false)]),
        FatalReason::GsoSizeZero
    );
    for t in [0u8, 3, 0xff] {
        assert_eq!(
            fatal(&[data(1, 60, EXTRA), gso(1448, t, false)]),
            FatalReason::BadGsoType,
            "gso type {t}"
        );
    }
}

#[test]
fn multicast_dummy_requests_ignore_more_data() {
    let mac = [0x01, 0x00, 0x5e, 0x00, 0x00, 0x01];
    let reqs = [
        data(7, 0, EXTRA | MORE),
        extra(Extra::McastAdd(mac), false),
        data(8, 60, 0),
    ];
    match build(&reqs) {
        TxOutcome::Multicast { op, layout } => {
            assert_eq!(op, McastOp::Add(mac));
            assert_eq!(
                layout,
                TxSlotLayout {
                    slots: 2,
                    extras: 1
                }
            );
            assert_eq!(
                pairs(layout.responses(&reqs, |_| ERR)),
                [(7, ERR), (0, NULL)]
            );
        }
        other => panic!("{other:?}"),
    }
    // The slot after the dummy starts a packet of its own.
    assert_eq!(packet(&reqs[2..]).total_len, 60);
    let reqs = [data(9, 0, EXTRA), extra(Extra::McastDel(mac), false)];
    assert!(matches!(
        build(&reqs),
        TxOutcome::Multicast {
            op: McastOp::Del(_),
            layout: TxSlotLayout {
                slots: 2,
                extras: 1
            }
        }
    ));
    // MCAST_ADD wins over a GSO extra in the same chain.
    let reqs = [
        data(9, 0, EXTRA),
        gso(0, 0, true),
        extra(Extra::McastAdd(mac), false),
    ];
    assert!(matches!(
        build(&reqs),
        TxOutcome::Multicast {
            op: McastOp::Add(_),
            ..
        }
    ));
}

#[test]
fn eighteen_follow_on_slots_are_accepted() {
    let sizes = [100u16; 18];
    let reqs = chain(100 * 19, &sizes);
    let p = packet(&reqs);
    assert_eq!(frags(&p, &reqs).len(), MAX_TX_FRAGMENTS);
    assert_eq!(p.layout.slots, 19);
    assert!(pairs(p.responses(&reqs, 0)).iter().all(|&(_, s)| s == OK));
}

#[test]
fn nineteen_and_twenty_follow_on_slots_drop_with_errors() {
    for n in [19usize, 20] {
        let sizes = vec![100u16; n];
        let reqs = chain(100 * (n as u16 + 1), &sizes);
        let (reason, rsps) = dropped(&reqs);
        assert_eq!(reason, DropReason::TxTooManySlots);
        assert_eq!(rsps.len(), n + 1, "every slot consumed");
        let ids: Vec<_> = (0..=n as u16).map(|i| (i, ERR)).collect();
        assert_eq!(rsps, ids);
    }
}

#[test]
fn twenty_first_follow_on_slot_is_fatal() {
    let sizes = vec![100u16; 21];
    assert_eq!(fatal(&chain(4000, &sizes)), FatalReason::MaliciousSlotCount);
    // The 21st slot must exist to be counted; a chain that merely claims it runs past
    // the published requests.
    let mut reqs = chain(4000, &[100u16; 20]);
    reqs.last_mut().unwrap().flags |= MORE;
    assert_eq!(fatal(&reqs), FatalReason::SlotsExceedRequests);
}

#[test]
fn fatal_skb_slots_is_clamped_and_applies() {
    assert_eq!(TxLimits::new(5).fatal_skb_slots(), 18);
    assert_eq!(TxLimits::new(40).fatal_skb_slots(), 40);
    let limits = TxLimits::new(18);
    let ok = chain(1900, &[100u16; 18]);
    assert!(matches!(
        build_tx_packet(&ok, &limits),
        Some(TxOutcome::Packet(_))
    ));
    let bad = chain(2000, &[100u16; 19]);
    assert_eq!(
        build_tx_packet(&bad, &limits),
        Some(TxOutcome::Fatal(FatalReason::MaliciousSlotCount))
    );
    // With a high threshold, 30 follow-on slots are a drop, not fatal.
    let many = chain(4000, &[100u16; 30]);
    assert!(matches!(
        build_tx_packet(&many, &TxLimits::new(40)),
        Some(TxOutcome::Dropped {
            reason: DropReason::TxTooManySlots,
            layout: TxSlotLayout { slots: 31, .. }
        })
    ));
}

#[test]
fn chain_past_the_published_requests_is_fatal() {
    assert_eq!(
        fatal(&[data(0, 100, MORE)]),
        FatalReason::SlotsExceedRequests
    );
    let reqs = [data(0, 100, MORE), data(1, 50, MORE)];
    assert_eq!(fatal(&reqs), FatalReason::SlotsExceedRequests);
    let reqs = [data(0, 100, EXTRA | MORE), gso(1, 1, false)];
    assert_eq!(fatal(&reqs), FatalReason::SlotsExceedRequests);
}

#[test]
fn runt_first_slot_is_dropped_not_fatal() {
    for size in [0u16, 1, 13] {
        let (reason, rsps) = dropped(&[data(4, size, 0)]);
        assert_eq!(reason, DropReason::TxFirstSlotTooShort);
        assert_eq!(rsps, [(4, ERR)]);
    }
    assert_eq!(packet(&[data(4, 14, 0)]).total_len, 14);
    // The rule is on the first slot's *own* data: total 1000, follow-on 995 ⇒ 5 bytes.
    let (reason, rsps) = dropped(&chain(1000, &[995]));
    assert_eq!(reason, DropReason::TxFirstSlotTooShort);
    assert_eq!(rsps, [(0, ERR), (1, ERR)]);
    // With extras, the extra slot is still answered NULL.
    let reqs = [
        data(2, 10, EXTRA),
        gso(1448, XEN_NETIF_GSO_TYPE_TCPV4, false),
    ];
    let (reason, rsps) = dropped(&reqs);
    assert_eq!(reason, DropReason::TxFirstSlotTooShort);
    assert_eq!(rsps, [(2, ERR), (0, NULL)]);
}

#[test]
fn runt_check_comes_before_gso_validation() {
    // Linux drops the runt in xenvif_tx_build_gops before it ever looks at the GSO extra.
    let reqs = [data(2, 10, EXTRA), gso(0, 9, false)];
    assert_eq!(dropped(&reqs).0, DropReason::TxFirstSlotTooShort);
}

#[test]
fn zero_length_follow_on_slots_make_no_fragment_but_are_answered() {
    let reqs = chain(100, &[0, 40, 0]);
    let p = packet(&reqs);
    let f: Vec<_> = frags(&p, &reqs).iter().map(|f| (f.len, f.slot)).collect();
    assert_eq!(f, [(60, 0), (40, 2)]);
    assert!(frags(&p, &reqs).iter().all(|f| f.len > 0));
    assert_eq!(
        pairs(p.responses(&reqs, 0)),
        [(0, OK), (1, OK), (2, OK), (3, OK)]
    );
}

#[test]
fn max_slots_min_bytes_corner() {
    // XSA-432: 18 follow-on slots of 1 byte each and a 14-byte first slot.
    let reqs = chain(14 + 18, &[1u16; 18]);
    let p = packet(&reqs);
    assert_eq!(frags(&p, &reqs).len(), 19);
    assert_eq!(frags(&p, &reqs)[0].len, 14);
    assert_eq!(
        frags(&p, &reqs)
            .iter()
            .map(|f| u32::from(f.len))
            .sum::<u32>(),
        32
    );
    // All-zero follow-on slots and a minimal first slot.
    let reqs = chain(14, &[0u16; 18]);
    let p = packet(&reqs);
    assert_eq!(p.fragments(&reqs).count(), 1);
    assert_eq!(p.layout.slots, 19);
    // Too many tiny slots: dropped, every slot answered.
    let (reason, rsps) = dropped(&chain(14 + 20, &[1u16; 20]));
    assert_eq!(reason, DropReason::TxTooManySlots);
    assert_eq!(rsps.len(), 21);
}

#[test]
fn crossing_the_page_is_fatal_on_any_data_slot() {
    let mut reqs = chain(3000, &[1000]);
    reqs[1].offset = 3097; // 3097 + 1000 = 4097
    assert_eq!(fatal(&reqs), FatalReason::CrossPageBoundary);
    reqs[1].offset = 3096;
    assert!(matches!(build(&reqs), TxOutcome::Packet(_)));
    // First slot: its own data (not the total) must fit.
    let mut reqs = chain(3000, &[1000]);
    reqs[0].offset = 2096; // 2096 + 2000 = 4096: fits
    assert!(matches!(build(&reqs), TxOutcome::Packet(_)));
    reqs[0].offset = 2097;
    assert_eq!(fatal(&reqs), FatalReason::CrossPageBoundary);
    // Even once a drop has been decided, a crossing follow-on slot is fatal.
    let mut reqs = chain(100, &[200, 50]);
    reqs[2].offset = 4090;
    assert_eq!(fatal(&reqs), FatalReason::CrossPageBoundary);
}

#[test]
fn follow_on_bigger_than_remaining_total_drops_whole_chain() {
    // A 70000-byte frame whose u16 size wrapped to 4464.
    let sizes = [4096u16; 17];
    let reqs = chain((70000u32 - 65536) as u16, &sizes);
    let (reason, rsps) = dropped(&reqs);
    assert_eq!(reason, DropReason::TxSlotExceedsTotal);
    assert_eq!(rsps.len(), 18);
    assert!(rsps.iter().all(|&(_, s)| s == ERR));
    // Equal is fine: the remaining total may reach exactly 0 … but then the first slot is
    // empty, which is a runt.
    assert_eq!(
        dropped(&chain(100, &[100])).0,
        DropReason::TxFirstSlotTooShort
    );
}

#[test]
fn unknown_flag_bits_are_ignored() {
    let reqs = [data(1, 60, 0xFFF0 | NETTXF_DATA_VALIDATED)];
    let p = packet(&reqs);
    assert_eq!(p.checksum, ChecksumState::Validated);
    assert_eq!(p.layout.slots, 1);
}

#[test]
fn more_than_a_ring_of_requests_is_impossible() {
    let reqs = vec![data(0, 60, 0); 257];
    assert_eq!(fatal(&reqs), FatalReason::ImpossibleRequestCount);
    assert!(matches!(build(&reqs[..256]), TxOutcome::Packet(_)));
}

#[test]
fn failed_fragment_copy_answers_that_slot_error() {
    let reqs = [
        data(1, 3000, EXTRA | MORE),
        gso(1448, XEN_NETIF_GSO_TYPE_TCPV6, false),
        data(2, 0, MORE),
        data(3, 1000, MORE),
        data(4, 1000, 0),
    ];
    let p = packet(&reqs);
    // fragments: [slot 0, slot 3, slot 4]; fragment 1 (slot 3) failed.
    assert_eq!(
        pairs(p.responses(&reqs, 0b010)),
        [(1, OK), (0, NULL), (2, OK), (3, ERR), (4, OK)]
    );
    assert_eq!(
        pairs(p.responses(&reqs, 0b101)),
        [(1, ERR), (0, NULL), (2, OK), (3, OK), (4, ERR)]
    );
}

// ---- properties ----------------------------------------------------------------------

fn any_request() -> impl Strategy<Value = TxRequest> {
    let flags = prop_oneof![
        Just(0u16),
        Just(MORE),
        Just(EXTRA),
        Just(EXTRA | MORE),
        any::<u16>(),
    ];
    let size = prop_oneof![0u16..20, 0u16..4097, any::<u16>()];
    let offset = prop_oneof![Just(0u16), 0u16..4097, any::<u16>()];
    (any::<u32>(), offset, flags, any::<u16>(), size).prop_map(|(gref, offset, flags, id, size)| {
        TxRequest {
            gref,
            offset,
            flags,
            id,
            size,
        }
    })
}

fn any_extra() -> impl Strategy<Value = TxRequest> {
    (0u8..7, 0u8..3, any::<[u8; 6]>(), any::<u16>()).prop_map(|(t, f, payload, pad)| {
        let mut r = ExtraInfo {
            extra_type: t,
            flags: f,
            payload,
        }
        .to_tx_request();
        r.size = pad;
        r
    })
}

fn slot() -> impl Strategy<Value = TxRequest> {
    prop_oneof![3 => any_request(), 1 => any_extra()]
}

/// Chains around the 18/19/20/21 follow-on limits with tiny sizes (XSA-432).
fn max_slots_min_bytes() -> impl Strategy<Value = Vec<TxRequest>> {
    (16usize..23, 0u16..40, 0u16..3, any::<bool>()).prop_map(|(n, first, each, extras)| {
        let mut v = vec![data(0, first, MORE | if extras { EXTRA } else { 0 })];
        if extras {
            v.push(gso(1, XEN_NETIF_GSO_TYPE_TCPV4, false));
        }
        for i in 0..n {
            v.push(data(i as u16 + 1, each, if i + 1 < n { MORE } else { 0 }));
        }
        v
    })
}

/// Drives the builder over a whole buffer as a shell would, checking every outcome.
fn drive(reqs: &[TxRequest]) -> Result<(), TestCaseError> {
    let limits = TxLimits::default();
    let mut answered = vec![0u8; reqs.len()];
    let mut pos = 0;
    while let Some(outcome) = build_tx_packet(&reqs[pos..], &limits) {
        let rest = &reqs[pos..];
        let (layout, rsps): (TxSlotLayout, Vec<TxResponse>) = match &outcome {
            TxOutcome::Fatal(_) => break,
            TxOutcome::Packet(p) => {
                prop_assert!(p.total_len as usize >= ETH_HLEN);
                let sum: u32 = frags(p, rest).iter().map(|f| u32::from(f.len)).sum();
                prop_assert_eq!(sum, u32::from(p.total_len));
                prop_assert!(frags(p, rest).len() <= MAX_TX_FRAGMENTS);
                for f in frags(p, rest) {
                    prop_assert!(f.len > 0, "no zero-length fragments (XSA-448)");
                    prop_assert!(usize::from(f.offset) + usize::from(f.len) <= PAGE_SIZE);
                    prop_assert!(usize::from(f.slot) < p.layout.slots);
                    prop_assert!(!p.layout.is_extra(f.slot.into()));
                }
                (p.layout, p.responses(rest, u32::MAX).collect())
            }
            TxOutcome::Dropped { layout, .. } => {
                (*layout, layout.responses(rest, |_| ERR).collect())
            }
            TxOutcome::Multicast { layout, .. } => {
                (*layout, layout.responses(rest, |_| OK).collect())
            }
        };
        prop_assert!(layout.slots >= 1 && layout.slots <= rest.len());
        prop_assert_eq!(rsps.len(), layout.slots, "one response per consumed slot");
        for (i, r) in rsps.iter().enumerate() {
            answered[pos + i] += 1;
            if layout.is_extra(i) {
                prop_assert_eq!(r.status, NULL);
            } else {
                prop_assert_eq!(r.id, rest[i].id);
                prop_assert!(r.status != NULL);
            }
        }
        pos += layout.slots;
    }
    prop_assert!(
        answered[..pos].iter().all(|&n| n == 1),
        "each consumed slot answered once"
    );
    prop_assert!(answered[pos..].iter().all(|&n| n == 0));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_slot_sequences_never_panic_and_answer_each_slot_once(
        reqs in proptest::collection::vec(slot(), 0..300)
    ) {
        drive(&reqs)?;
    }

    #[test]
    fn max_slots_min_bytes_chains(chain in max_slots_min_bytes()) {
        drive(&chain)?;
        let n_follow = chain.iter().skip(1).filter(|r| r.id != 0).count();
        let outcome = build(&chain);
        if n_follow > FATAL_SKB_SLOTS_DEFAULT {
            prop_assert_eq!(outcome, TxOutcome::Fatal(FatalReason::MaliciousSlotCount));
        } else if n_follow > XEN_NETBK_LEGACY_SLOTS_MAX {
            let is_drop = matches!(outcome, TxOutcome::Dropped { .. });
            prop_assert!(is_drop, "19-20 follow-on slots drop: {:?}", outcome);
        }
    }
}
