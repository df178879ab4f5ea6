use super::*;
use crate::netif::{
    NetifCtrl, NetifRx, NetifTx, RxRequest, RxResponse, TxRequest, TxResponse, NETIF_RSP_OKAY,
};
use hypervisor::evtchn::EventFd;
use hypervisor::memory::PAGE_SIZE;
use proptest::prelude::*;
use std::os::fd::AsRawFd;
use std::time::Duration;

type Page = (Arc<GuestMemory>, Gfn);

fn page() -> Page {
    (Arc::new(GuestMemory::new("ring-test", 2).unwrap()), 1)
}

fn header(p: &Page) -> [u32; 4] {
    [0, 4, 8, 12].map(|o| p.0.load_u32(p.1, o, Ordering::SeqCst).unwrap())
}

fn poke(p: &Page, offset: usize, v: u32) {
    p.0.store_u32(p.1, offset, v, Ordering::SeqCst).unwrap();
}

fn tx(seq: u32) -> TxRequest {
    TxRequest {
        gref: seq,
        offset: 0,
        flags: 0,
        id: seq as u16,
        size: 60,
    }
}

#[test]
fn init_resets_header_events_to_one_and_zeroes_padding() {
    let p = page();
    p.0.write(p.1, 0, &[0xAB; PAGE_SIZE]).unwrap();
    let f = FrontRing::<NetifTx, _>::init(p.clone()).unwrap();
    assert_eq!(header(&p), [0, 1, 0, 1]);
    let mut rest = [0u8; 48];
    p.0.read(p.1, 16, &mut rest).unwrap();
    assert_eq!(rest, [0u8; 48], "pvt and __pad zeroed");
    let mut slot = [0u8; 4];
    p.0.read(p.1, 64, &mut slot).unwrap();
    assert_eq!(
        slot, [0xAB; 4],
        "entries are not touched by SHARED_RING_INIT"
    );
    assert_eq!(f.size(), 256);
    assert_eq!(f.free_requests(), 256);
    let c = FrontRing::<NetifCtrl, _>::init(page()).unwrap();
    assert_eq!(c.size(), 128);
}

#[test]
fn frame_outside_memory_is_refused() {
    let mem = Arc::new(GuestMemory::new("ring-test", 1).unwrap());
    assert!(matches!(
        FrontRing::<NetifTx, _>::init((mem.clone(), 1)),
        Err(RingError::Memory(_))
    ));
    assert!(matches!(
        BackRing::<NetifTx, _>::attach((mem, 7)),
        Err(RingError::Memory(_))
    ));
}

#[test]
fn notify_rule_is_the_half_open_window() {
    // event in (old, new] ⇒ notify.
    assert!(notify_needed(0, 1, 1));
    assert!(!notify_needed(1, 2, 1), "event already passed");
    assert!(notify_needed(0, 5, 3));
    assert!(notify_needed(0, 5, 5));
    assert!(!notify_needed(0, 5, 6), "event ahead of new");
    assert!(!notify_needed(3, 5, 3), "event == old is not in the window");
    // Across the 2^32 wrap.
    assert!(notify_needed(u32::MAX - 1, 2, 0));
    assert!(notify_needed(u32::MAX - 1, 2, u32::MAX));
    assert!(!notify_needed(u32::MAX - 1, 2, u32::MAX - 1));
    assert!(!notify_needed(u32::MAX - 1, 2, 3));
    // Nothing pushed: never notify.
    assert!(!notify_needed(7, 7, 7));
}

#[test]
fn requests_flow_and_notify_follows_event_index() {
    let p = page();
    let mut f = FrontRing::<NetifTx, _>::init(p.clone()).unwrap();
    let mut b = BackRing::<NetifTx, _>::attach(p.clone()).unwrap();

    assert_eq!(f.produce_requests(&[tx(0)]).unwrap(), 1);
    assert_eq!(b.unconsumed_requests().unwrap(), 0, "not published yet");
    assert!(f.push_requests().unwrap(), "req_event 1 is in (0, 1]");
    assert_eq!(header(&p)[0], 1);
    assert!(!f.push_requests().unwrap(), "nothing new to push");

    assert_eq!(f.produce_requests(&[tx(1), tx(2)]).unwrap(), 2);
    assert!(
        !f.push_requests().unwrap(),
        "backend has not re-armed: event 1 is behind"
    );

    let mut got = [TxRequest::default(); 8];
    assert_eq!(b.consume_requests(&mut got).unwrap(), 3);
    assert_eq!(&got[..3], &[tx(0), tx(1), tx(2)]);
    assert_eq!(b.req_cons(), 3);
    assert!(!b.final_check_for_requests().unwrap());
    assert_eq!(header(&p)[1], 4, "req_event = req_cons + 1");

    assert_eq!(f.produce_requests(&[tx(3)]).unwrap(), 1);
    assert!(f.push_requests().unwrap(), "event 4 is in (3, 4]");

    // Responses: only consumed requests can be answered.
    let rsps: Vec<_> = (0..5)
        .map(|i| TxResponse {
            id: i,
            status: NETIF_RSP_OKAY,
        })
        .collect();
    assert_eq!(b.produce_responses(&rsps).unwrap(), 3);
    assert!(b.push_responses().unwrap(), "rsp_event 1 is in (0, 3]");
    let mut out = [TxResponse::default(); 8];
    assert_eq!(f.consume_responses(&mut out).unwrap(), 3);
    assert_eq!(&out[..3], &rsps[..3]);
    assert!(!f.final_check_for_responses().unwrap());
    assert_eq!(header(&p)[3], 4, "rsp_event = rsp_cons + 1");
    assert_eq!(f.outstanding_requests(), 1);
}

#[test]
fn final_check_sees_work_published_before_the_event_write() {
    let p = page();
    let mut f = FrontRing::<NetifTx, _>::init(p.clone()).unwrap();
    let mut b = BackRing::<NetifTx, _>::attach(p.clone()).unwrap();
    f.produce_requests(&[tx(0)]).unwrap();
    f.push_requests().unwrap();
    assert!(b.final_check_for_requests().unwrap());
    assert_eq!(header(&p)[1], 1, "no event write while work is pending");
}

#[test]
fn front_never_overruns_the_ring() {
    let p = page();
    let mut f = FrontRing::<NetifTx, _>::init(p.clone()).unwrap();
    let reqs: Vec<_> = (0..300).map(tx).collect();
    assert_eq!(f.produce_requests(&reqs).unwrap(), 256);
    assert!(f.is_full());
    assert_eq!(f.produce_requests(&reqs).unwrap(), 0);
    f.push_requests().unwrap();
    let mut b = BackRing::<NetifTx, _>::attach(p.clone()).unwrap();
    let mut buf = vec![TxRequest::default(); 300];
    assert_eq!(b.consume_requests(&mut buf).unwrap(), 256);
    assert!(buf[..256].iter().zip(&reqs).all(|(a, b)| a == b));
    let rsps = vec![TxResponse::default(); 100];
    assert_eq!(b.produce_responses(&rsps).unwrap(), 100);
    b.push_responses().unwrap();
    let mut out = vec![TxResponse::default(); 300];
    assert_eq!(f.consume_responses(&mut out).unwrap(), 100);
    assert_eq!(f.free_requests(), 100);
}

#[test]
fn unconsumed_requests_never_exceed_free_response_slots() {
    let p = page();
    // A ring where the backend consumed 200 requests and answered none.
    let mut f = FrontRing::<NetifTx, _>::init(p.clone()).unwrap();
    let mut b = BackRing::<NetifTx, _>::attach(p.clone()).unwrap();
    let reqs: Vec<_> = (0..256).map(tx).collect();
    f.produce_requests(&reqs[..200]).unwrap();
    f.push_requests().unwrap();
    let mut buf = vec![TxRequest::default(); 256];
    assert_eq!(b.consume_requests(&mut buf).unwrap(), 200);
    // A hostile frontend claims 56 more although only 56 slots are free: fine; then
    // it claims one more than that.
    poke(&p, REQ_PROD_OFFSET, 256);
    assert_eq!(b.unconsumed_requests().unwrap(), 56);
    poke(&p, REQ_PROD_OFFSET, 257);
    assert_eq!(
        b.unconsumed_requests(),
        Err(RingError::Overflow {
            ring: "tx",
            prod: 257,
            base: 0,
            limit: 256
        })
    );
    assert!(
        b.consume_requests(&mut buf).is_err(),
        "nothing read past an overflow"
    );
    assert_eq!(b.req_cons(), 200);
}

#[test]
fn backwards_req_prod_is_an_overflow() {
    let p = page();
    let mut f = FrontRing::<NetifTx, _>::init(p.clone()).unwrap();
    let mut b = BackRing::<NetifTx, _>::attach(p.clone()).unwrap();
    f.produce_requests(&[tx(0), tx(1), tx(2)]).unwrap();
    f.push_requests().unwrap();
    let mut buf = [TxRequest::default(); 4];
    b.consume_requests(&mut buf).unwrap();
    b.produce_responses(&[TxResponse::default(); 3]).unwrap();
    b.push_responses().unwrap();
    poke(&p, REQ_PROD_OFFSET, 1); // went backwards: 1 − 3 wraps to 2^32 − 2
    assert!(matches!(
        b.unconsumed_requests(),
        Err(RingError::Overflow {
            prod: 1,
            base: 3,
            ..
        })
    ));
    assert!(matches!(
        b.final_check_for_requests(),
        Err(RingError::Overflow { .. })
    ));
}

#[test]
fn attach_starts_at_rsp_prod_and_refuses_impossible_rings() {
    let p = page();
    FrontRing::<NetifRx, _>::init(p.clone()).unwrap();
    poke(&p, RSP_PROD_OFFSET, 1000);
    poke(&p, REQ_PROD_OFFSET, 1256);
    let b = BackRing::<NetifRx, _>::attach(p.clone()).unwrap();
    assert_eq!((b.req_cons(), b.rsp_prod_pvt()), (1000, 1000));
    assert_eq!(b.unconsumed_requests().unwrap(), 256);
    poke(&p, REQ_PROD_OFFSET, 1257);
    assert_eq!(
        BackRing::<NetifRx, _>::attach(p.clone()).unwrap_err(),
        RingError::AttachRefused {
            ring: "rx",
            req_prod: 1257,
            rsp_prod: 1000,
            size: 256
        }
    );
    poke(&p, REQ_PROD_OFFSET, 999); // behind rsp_prod
    assert!(BackRing::<NetifRx, _>::attach(p.clone()).is_err());
    // A front end adopts only a quiescent ring.
    assert!(matches!(
        FrontRing::<NetifRx, _>::attach(p.clone()),
        Err(RingError::NotQuiescent { .. })
    ));
    poke(&p, REQ_PROD_OFFSET, 1000);
    let f = FrontRing::<NetifRx, _>::attach(p.clone()).unwrap();
    assert_eq!(
        (f.req_prod_pvt(), f.rsp_cons(), f.free_requests()),
        (1000, 1000, 256)
    );
}

#[test]
fn indices_wrap_around_u32() {
    let p = page();
    FrontRing::<NetifTx, _>::init(p.clone()).unwrap();
    let start = u32::MAX - 100;
    for off in [REQ_PROD_OFFSET, RSP_PROD_OFFSET] {
        poke(&p, off, start);
    }
    poke(&p, REQ_EVENT_OFFSET, start.wrapping_add(1));
    poke(&p, RSP_EVENT_OFFSET, start.wrapping_add(1));
    let mut f = FrontRing::<NetifTx, _>::attach(p.clone()).unwrap();
    let mut b = BackRing::<NetifTx, _>::attach(p.clone()).unwrap();
    let mut seq = 0u32;
    let mut next = 0u32;
    let mut buf = vec![TxRequest::default(); 256];
    for round in 0..10 {
        let batch: Vec<_> = (0..(37 + round * 11)).map(|i| tx(seq + i)).collect();
        let n = f.produce_requests(&batch).unwrap() as u32;
        seq += n;
        f.push_requests().unwrap();
        let got = b.consume_requests(&mut buf).unwrap();
        for r in &buf[..got] {
            assert_eq!(r.gref, next);
            next += 1;
        }
        let rsps: Vec<_> = buf[..got]
            .iter()
            .map(|r| TxResponse {
                id: r.id,
                status: 0,
            })
            .collect();
        b.produce_responses(&rsps).unwrap();
        b.push_responses().unwrap();
        let mut out = vec![TxResponse::default(); 256];
        assert_eq!(f.consume_responses(&mut out).unwrap(), got);
        assert!(!b.final_check_for_requests().unwrap());
        assert!(!f.final_check_for_responses().unwrap());
    }
    assert!(f.req_prod_pvt() < start, "the indices wrapped");
    assert_eq!(next, seq);
}

#[test]
fn responses_are_written_whole_with_zeroed_slot_tail() {
    let p = page();
    let mut f = FrontRing::<NetifTx, _>::init(p.clone()).unwrap();
    let mut b = BackRing::<NetifTx, _>::attach(p.clone()).unwrap();
    let req = TxRequest {
        gref: 0xAAAA_AAAA,
        offset: 0xAAAA,
        flags: 0xAAAA,
        id: 7,
        size: 0xAAAA,
    };
    f.produce_requests(&[req]).unwrap();
    f.push_requests().unwrap();
    let mut buf = [TxRequest::default(); 1];
    b.consume_requests(&mut buf).unwrap();
    b.produce_responses(&[TxResponse { id: 7, status: -1 }])
        .unwrap();
    let mut slot = [0u8; 12];
    p.0.read(p.1, RING_HEADER_SIZE, &mut slot).unwrap();
    assert_eq!(slot, [7, 0, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0]);
}

#[test]
fn hostile_backend_cannot_publish_unrequested_responses() {
    let p = page();
    let mut f = FrontRing::<NetifRx, _>::init(p.clone()).unwrap();
    let reqs: Vec<_> = (0..4)
        .map(|i| RxRequest {
            id: i,
            pad: 0,
            gref: 100 + u32::from(i),
        })
        .collect();
    f.produce_requests(&reqs).unwrap();
    f.push_requests().unwrap();
    poke(&p, RSP_PROD_OFFSET, 4);
    assert_eq!(f.unconsumed_responses().unwrap(), 4);
    poke(&p, RSP_PROD_OFFSET, 5);
    assert_eq!(
        f.unconsumed_responses(),
        Err(RingError::Overflow {
            ring: "rx",
            prod: 5,
            base: 0,
            limit: 4
        })
    );
    let mut out = [RxResponse::default(); 8];
    assert!(f.consume_responses(&mut out).is_err());
    assert!(f.final_check_for_responses().is_err());
    poke(&p, RSP_PROD_OFFSET, u32::MAX); // backwards
    assert!(f.unconsumed_responses().is_err());
}

#[test]
fn rx_waits_for_enough_posted_buffers() {
    let p = page();
    let mut f = FrontRing::<NetifRx, _>::init(p.clone()).unwrap();
    let b = BackRing::<NetifRx, _>::attach(p.clone()).unwrap();
    let reqs: Vec<_> = (0..3)
        .map(|i| RxRequest {
            id: i,
            pad: 0,
            gref: 0,
        })
        .collect();
    f.produce_requests(&reqs[..1]).unwrap();
    f.push_requests().unwrap();
    assert!(!b.has_requests_or_arm(2).unwrap());
    assert_eq!(header(&p)[1], 2, "req_event = req_prod + 1");
    f.produce_requests(&reqs[1..]).unwrap();
    assert!(
        f.push_requests().unwrap(),
        "the frontend's next post wakes the backend"
    );
    assert!(b.has_requests_or_arm(3).unwrap());
    assert!(!b.has_requests_or_arm(4).unwrap());
}

#[test]
fn rx_responses_land_in_their_request_slots() {
    let p = page();
    let mut f = FrontRing::<NetifRx, _>::init(p.clone()).unwrap();
    let mut b = BackRing::<NetifRx, _>::attach(p.clone()).unwrap();
    let reqs: Vec<_> = (0..3)
        .map(|i| RxRequest {
            id: 10 + i,
            pad: 0,
            gref: 0,
        })
        .collect();
    f.produce_requests(&reqs).unwrap();
    f.push_requests().unwrap();
    let mut got = [RxRequest::default(); 3];
    b.consume_requests(&mut got).unwrap();
    let rsps: Vec<_> = got
        .iter()
        .map(|r| RxResponse {
            id: r.id,
            offset: 0,
            flags: 0,
            status: 1,
        })
        .collect();
    b.produce_responses(&rsps).unwrap();
    for i in 0..3 {
        let mut slot = [0u8; 2];
        p.0.read(p.1, RING_HEADER_SIZE + 8 * i, &mut slot).unwrap();
        assert_eq!(u16::from_le_bytes(slot), 10 + i as u16);
    }
}

// ---- two threads over one page --------------------------------------------------------

/// xorshift64*: a tiny deterministic generator for the threads' random choices.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn dawdle(&mut self, pause_per_mille: u64) {
        match self.below(1000) {
            x if x < pause_per_mille / 2 => std::thread::yield_now(),
            x if x < pause_per_mille => std::thread::sleep(Duration::from_micros(self.below(50))),
            _ => {}
        }
    }
}

/// Cleared when its owner (one side of the pair) returns or panics.
struct Alive(Arc<std::sync::atomic::AtomicBool>);

impl Drop for Alive {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

/// Waits for an event; a timeout while `has_work` says work is waiting is a lost
/// notification. Returns early (false) if the peer is gone.
fn wait(
    fd: &EventFd,
    has_work: impl Fn() -> bool,
    peer: &std::sync::atomic::AtomicBool,
    side: &str,
) -> bool {
    loop {
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        let r = unsafe { libc::poll(&mut pfd, 1, 2000) };
        if r > 0 {
            fd.consume();
            return true;
        }
        assert!(
            !has_work(),
            "lost notification: {side} slept for 2 s with work on the ring"
        );
        if !peer.load(Ordering::SeqCst) {
            return false;
        }
    }
}

fn run_pair(total: u32, max_batch: u64, pause: u64, seed: u64) {
    let mem = Arc::new(GuestMemory::new("ring-pair", 2).unwrap());
    let to_back = Arc::new(EventFd::new().unwrap());
    let to_front = Arc::new(EventFd::new().unwrap());
    let mut front = FrontRing::<NetifTx, _>::init((Arc::clone(&mem), 1)).unwrap();
    let front_alive = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let back_alive = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let _front_guard = Alive(front_alive.clone());

    let back_thread = {
        let (to_back, to_front, mem) = (to_back.clone(), to_front.clone(), mem.clone());
        let (front_alive, back_alive) = (front_alive.clone(), back_alive.clone());
        std::thread::spawn(move || {
            let _guard = Alive(back_alive);
            let mut rng = Rng(seed ^ 0x9E37_79B9_7F4A_7C15);
            let mut back = BackRing::<NetifTx, _>::attach((mem.clone(), 1)).unwrap();
            let mut buf = vec![TxRequest::default(); 512];
            let mut rsps = vec![TxResponse::default(); 512];
            let mut expect = 0u32;
            while expect < total {
                let want = 1 + rng.below(max_batch) as usize;
                let n = back.consume_requests(&mut buf[..want]).unwrap();
                for (r, out) in buf[..n].iter().zip(rsps.iter_mut()) {
                    assert_eq!(r.gref, expect, "requests arrive in order, once");
                    assert_eq!(r.id, expect as u16);
                    expect += 1;
                    *out = TxResponse {
                        id: r.id,
                        status: (r.gref % 3) as i16,
                    };
                }
                rng.dawdle(pause);
                assert_eq!(back.produce_responses(&rsps[..n]).unwrap(), n);
                if back.push_responses().unwrap() {
                    to_front.signal();
                }
                rng.dawdle(pause);
                if n == 0 && expect < total && !back.final_check_for_requests().unwrap() {
                    let cons = back.req_cons();
                    let m = mem.clone();
                    if !wait(
                        &to_back,
                        move || m.load_u32(1, REQ_PROD_OFFSET, Ordering::SeqCst).unwrap() != cons,
                        &front_alive,
                        "backend",
                    ) {
                        break;
                    }
                }
            }
            back.req_cons()
        })
    };

    let mut rng = Rng(seed);
    let mut sent = 0u32;
    let mut answered = 0u32;
    let mut out = vec![TxResponse::default(); 512];
    let reqs: Vec<_> = (0..total).map(tx).collect();
    while answered < total {
        if sent < total {
            let want = (1 + rng.below(max_batch) as usize).min((total - sent) as usize);
            let n = front
                .produce_requests(&reqs[sent as usize..sent as usize + want])
                .unwrap();
            sent += n as u32;
            assert!(front.outstanding_requests() <= 256);
            rng.dawdle(pause);
            if front.push_requests().unwrap() {
                to_back.signal();
            }
        }
        rng.dawdle(pause);
        let want = 1 + rng.below(max_batch) as usize;
        let n = front.consume_responses(&mut out[..want]).unwrap();
        for r in &out[..n] {
            assert_eq!(r.id, answered as u16, "responses in order, once each");
            assert_eq!(r.status, (answered % 3) as i16);
            answered += 1;
        }
        // Go idle when there is nothing to send (everything sent, or the ring is full).
        if n == 0
            && (sent == total || front.is_full())
            && !front.final_check_for_responses().unwrap()
        {
            let rsp_cons = front.rsp_cons();
            let m = mem.clone();
            if !wait(
                &to_front,
                move || m.load_u32(1, RSP_PROD_OFFSET, Ordering::SeqCst).unwrap() != rsp_cons,
                &back_alive,
                "frontend",
            ) {
                break;
            }
        }
    }
    assert_eq!(back_thread.join().unwrap(), total);
    assert_eq!(
        front.unconsumed_responses().unwrap(),
        0,
        "no extra responses"
    );
    assert_eq!(front.outstanding_requests(), 0);
}

#[test]
fn threads_exchange_many_requests_without_lost_wakeups() {
    run_pair(20_000, 64, 20, 1);
    run_pair(5_000, 300, 200, 2);
    run_pair(3_000, 3, 100, 3);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    /// Producer and consumer in two threads with random batch sizes, yields and sleeps:
    /// every request is answered exactly once in order, nobody overruns the ring, and
    /// whoever goes idle after a final check is always woken when work appears.
    #[test]
    fn random_schedules_never_lose_a_notification(
        total in 1u32..3000,
        max_batch in 1u64..300,
        pause in 0u64..400,
        seed in 1u64..u64::MAX,
    ) {
        run_pair(total, max_batch, pause, seed);
    }
}
