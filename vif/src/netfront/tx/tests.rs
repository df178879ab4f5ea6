use super::*;
use crate::netback::tx::{build_tx_packet, TxLimits, TxOutcome};
use crate::netif::{
    GsoType, NETIF_RSP_ERROR, NETIF_RSP_OKAY, NETTXF_CSUM_BLANK, NETTXF_DATA_VALIDATED,
};
use proptest::prelude::*;

const TSO6: GsoInfo = GsoInfo {
    gso_type: GsoType::TcpV6,
    size: 1428,
};

/// Plans into a fresh buffer and returns exactly the requests written.
fn plan(
    meta: &TxFrameMeta,
    chunks: &[TxChunk],
    ids: &[u16],
) -> Result<Vec<TxRequest>, TxPlanError> {
    let mut out = [TxRequest::default(); MAX_TX_REQUESTS];
    let n = plan_tx_frame(meta, chunks, ids, &mut out)?;
    Ok(out[..n].to_vec())
}

fn grefs(n: u32) -> Vec<GrantRef> {
    (0..n).map(|i| 100 + i).collect()
}

#[test]
fn chunks_follow_pages() {
    let mut out = [TxChunk::default(); MAX_TX_DATA_SLOTS];
    let n = chunk_frame(1500, 0, &grefs(4), &mut out).unwrap();
    assert_eq!(
        &out[..n],
        &[TxChunk {
            gref: 100,
            offset: 0,
            len: 1500
        }]
    );
    let n = chunk_frame(5000, 4000, &grefs(4), &mut out).unwrap();
    assert_eq!(
        &out[..n],
        &[
            TxChunk {
                gref: 100,
                offset: 4000,
                len: 96
            },
            TxChunk {
                gref: 101,
                offset: 0,
                len: 4096
            },
            TxChunk {
                gref: 102,
                offset: 0,
                len: 808
            },
        ]
    );
    // 64 KiB − 1 from offset 0: 16 pages.
    assert_eq!(chunk_frame(65535, 0, &grefs(18), &mut out).unwrap(), 16);
    // ... from offset 4095: 17 pages (the 1-byte first chunk is the caller's problem).
    assert_eq!(chunk_frame(65535, 4095, &grefs(18), &mut out).unwrap(), 17);
    assert_eq!(
        chunk_frame(65535, 0, &grefs(3), &mut out),
        Err(TxPlanError::Short(13))
    );
    assert_eq!(
        chunk_frame(13, 0, &grefs(1), &mut out),
        Err(TxPlanError::BadLength(13))
    );
    assert_eq!(
        chunk_frame(65536, 0, &grefs(20), &mut out),
        Err(TxPlanError::BadLength(65536))
    );
    assert_eq!(
        chunk_frame(100, 4096, &grefs(1), &mut out),
        Err(TxPlanError::BadChunk(0))
    );
}

#[test]
fn single_chunk_frame() {
    let meta = TxFrameMeta {
        len: 60,
        gso: None,
        checksum: ChecksumState::Validated,
    };
    let plan = plan(
        &meta,
        &[TxChunk {
            gref: 9,
            offset: 64,
            len: 60,
        }],
        &[3],
    )
    .unwrap();
    assert_eq!(
        &plan[..],
        &[TxRequest {
            gref: 9,
            offset: 64,
            flags: NETTXF_DATA_VALIDATED,
            id: 3,
            size: 60
        }]
    );
}

#[test]
fn tso_frame_first_slot_total_gso_extra_then_data() {
    let mut chunks = [TxChunk::default(); MAX_TX_DATA_SLOTS];
    let n = chunk_frame(65535, 0, &grefs(16), &mut chunks).unwrap();
    let meta = TxFrameMeta {
        len: 65535,
        gso: Some(TSO6),
        checksum: ChecksumState::Partial,
    };
    let ids: Vec<u16> = (10..26).collect();
    let plan = plan(&meta, &chunks[..n], &ids).unwrap();
    let r = &plan[..];
    assert_eq!(r.len(), 17, "16 data slots + 1 GSO extra");
    assert_eq!(r[0].size, 65535, "first slot carries the total");
    assert_eq!(
        r[0].flags,
        NETTXF_CSUM_BLANK | NETTXF_DATA_VALIDATED | NETTXF_EXTRA_INFO | NETTXF_MORE_DATA
    );
    assert_eq!(r[0].id, 10);
    assert_eq!(
        ExtraInfo::from_tx_request(&r[1]),
        ExtraInfo::gso(TSO6, false)
    );
    assert!(r[2..16]
        .iter()
        .all(|q| q.flags == NETTXF_MORE_DATA && q.size == 4096));
    assert_eq!((r[16].flags, r[16].size, r[16].id), (0, 4095, 25));
    // And netback takes it as one TSO packet with the same pieces.
    match build_tx_packet(r, &TxLimits::default()) {
        Some(TxOutcome::Packet(p)) => {
            assert_eq!(p.total_len, 65535);
            assert_eq!(p.gso, Some(TSO6));
            assert_eq!(p.checksum, ChecksumState::Partial);
            assert_eq!(p.fragments(r).count(), 16);
            assert_eq!(p.nr_fragments, 16);
            assert_eq!(p.layout.slots, 17);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn planning_refuses_bad_frames() {
    let c = |len| TxChunk {
        gref: 1,
        offset: 0,
        len,
    };
    let meta = |len| TxFrameMeta {
        len,
        ..Default::default()
    };
    assert_eq!(
        plan(&meta(10), &[c(10)], &[0]),
        Err(TxPlanError::BadLength(10))
    );
    assert_eq!(plan(&meta(100), &[], &[0]), Err(TxPlanError::Short(1)));
    assert_eq!(
        plan(&meta(100), &[c(50), c(50)], &[0]),
        Err(TxPlanError::Short(1))
    );
    assert_eq!(
        plan(&meta(100), &[c(60), c(30)], &[0, 1]),
        Err(TxPlanError::LengthMismatch {
            chunks: 90,
            frame: 100
        })
    );
    assert_eq!(
        plan(&meta(100), &[c(10), c(90)], &[0, 1]),
        Err(TxPlanError::BadChunk(0)),
        "first chunk shorter than an Ethernet header"
    );
    assert_eq!(
        plan(&meta(100), &[c(100), c(0)], &[0, 1]),
        Err(TxPlanError::BadChunk(1)),
        "empty follow-on chunk"
    );
    let crossing = TxChunk {
        gref: 1,
        offset: 4000,
        len: 100,
    };
    assert_eq!(
        plan(&meta(100), &[crossing], &[0]),
        Err(TxPlanError::BadChunk(0))
    );
    let many = vec![c(14); 19];
    assert_eq!(
        plan(&meta(14 * 19), &many, &[0; 19]),
        Err(TxPlanError::TooManySlots(19))
    );
}

#[test]
fn plain_multi_chunk_frame_has_contiguous_requests() {
    let mut chunks = [TxChunk::default(); MAX_TX_DATA_SLOTS];
    let n = chunk_frame(5000, 4000, &grefs(3), &mut chunks).unwrap();
    let meta = TxFrameMeta {
        len: 5000,
        ..Default::default()
    };
    let r = plan(&meta, &chunks[..n], &[7, 8, 9]).unwrap();
    let got: Vec<_> = r
        .iter()
        .map(|q| (q.gref, q.offset, q.flags, q.id, q.size))
        .collect();
    assert_eq!(
        got,
        [
            (100, 4000, NETTXF_MORE_DATA, 7, 5000),
            (101, 0, NETTXF_MORE_DATA, 8, 4096),
            (102, 0, 0, 9, 808)
        ]
    );
}

#[test]
fn short_output_buffer_is_refused_before_writing() {
    let meta = TxFrameMeta {
        len: 100,
        gso: Some(TSO6),
        ..Default::default()
    };
    let mut out = [TxRequest::default(); 1];
    assert_eq!(
        plan_tx_frame(
            &meta,
            &[TxChunk {
                gref: 1,
                offset: 0,
                len: 100
            }],
            &[0],
            &mut out
        ),
        Err(TxPlanError::Short(1))
    );
    assert_eq!(out[0], TxRequest::default());
}

#[test]
fn in_flight_ids_are_unique_and_checked() {
    let mut t = TxInFlight::new();
    assert_eq!(t.available(), 256);
    let a = t.alloc("a").unwrap();
    let b = t.alloc("b").unwrap();
    assert_ne!(a, b);
    assert_eq!(t.outstanding(), 2);
    assert_eq!(
        t.complete(&TxResponse {
            id: b,
            status: NETIF_RSP_ERROR
        }),
        Ok(Some(("b", NETIF_RSP_ERROR)))
    );
    assert_eq!(
        t.complete(&TxResponse {
            id: b,
            status: NETIF_RSP_OKAY
        }),
        Err(TxResponseError::InactiveId(b)),
        "answered twice"
    );
    assert_eq!(
        t.complete(&TxResponse {
            id: 7,
            status: NETIF_RSP_NULL
        }),
        Ok(None)
    );
    assert_eq!(
        t.complete(&TxResponse { id: 256, status: 0 }),
        Err(TxResponseError::BadId(256))
    );
    assert_eq!(TxResponseError::BadId(1).name(), "tx_response_bad_id");
    for i in 0..255 {
        assert!(t.alloc(i.to_string().leak() as &str).is_ok());
    }
    assert_eq!(t.alloc("full"), Err("full"));
    assert_eq!(
        t.complete(&TxResponse { id: a, status: 0 }),
        Ok(Some(("a", 0)))
    );
    assert_eq!(t.available(), 1);
}

proptest! {
    /// Any frame the frontend can express is accepted by netback as one packet with the
    /// same length, pieces, GSO and checksum, and all its slots are answered OKAY.
    #[test]
    fn netback_accepts_what_netfront_plans(
        len in MIN_TX_FRAME..=XEN_NETIF_MAX_TX_SIZE,
        first_offset in 0u16..4096,
        gso in any::<bool>(),
        csum in 0u8..3,
    ) {
        let mut chunks = [TxChunk::default(); MAX_TX_DATA_SLOTS];
        let Ok(n) = chunk_frame(len, first_offset, &grefs(18), &mut chunks) else {
            return Ok(());
        };
        let meta = TxFrameMeta {
            len,
            gso: gso.then_some(TSO6),
            checksum: [ChecksumState::Unknown, ChecksumState::Partial, ChecksumState::Validated][csum as usize],
        };
        let ids: Vec<u16> = (0..n as u16).collect();
        let plan = match plan(&meta, &chunks[..n], &ids) {
            Ok(p) => p,
            Err(TxPlanError::BadChunk(0)) => {
                prop_assert!(chunks[0].len < 14);
                return Ok(());
            }
            Err(e) => return Err(TestCaseError::fail(format!("{e}"))),
        };
        match build_tx_packet(&plan[..], &TxLimits::default()) {
            Some(TxOutcome::Packet(p)) => {
                prop_assert_eq!(usize::from(p.total_len), len);
                prop_assert_eq!(p.gso, meta.gso);
                prop_assert_eq!(p.checksum, meta.checksum);
                let got: Vec<_> = p.fragments(&plan).map(|f| (f.gref, f.offset, f.len)).collect();
                let want: Vec<_> = chunks[..n].iter().map(|c| (c.gref, c.offset, c.len)).collect();
                prop_assert_eq!(got, want);
                prop_assert_eq!(p.layout.slots, plan.len());
                prop_assert!(p.responses(&plan[..], 0).all(|r| r.status >= 0));
            }
            other => return Err(TestCaseError::fail(format!("{other:?}"))),
        }
    }
}
