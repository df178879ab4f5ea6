//! xs_wire over the daemon's sockets: transactions, hostile input, quotas, durability.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use common::{require_root, unique, Daemon};
use hypervisor::xenstore::wire::{Message, MsgType, XsError};
use hypervisor::xs_socket::SocketClient;

fn nul(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

fn tx_start(c: &mut SocketClient) -> u32 {
    let r = c.request(MsgType::TransactionStart, 0, b"\0").unwrap();
    std::str::from_utf8(&r)
        .unwrap()
        .trim_end_matches('\0')
        .parse()
        .unwrap()
}

fn xs_err(r: Result<Vec<u8>, hypervisor::xs_socket::SocketClientError>) -> Option<XsError> {
    r.err().and_then(|e| e.xs())
}

/// A raw request on a raw stream; returns the reply (header + payload).
fn raw_roundtrip(s: &mut UnixStream, msg: &Message) -> Option<Message> {
    s.write_all(&msg.encode()).ok()?;
    read_msg(s)
}

fn read_msg(s: &mut UnixStream) -> Option<Message> {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut h = [0u8; 16];
    s.read_exact(&mut h).ok()?;
    let len = u32::from_le_bytes(h[12..16].try_into().unwrap()) as usize;
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload).ok()?;
    Some(Message {
        msg_type: u32::from_le_bytes(h[0..4].try_into().unwrap()),
        req_id: u32::from_le_bytes(h[4..8].try_into().unwrap()),
        tx_id: u32::from_le_bytes(h[8..12].try_into().unwrap()),
        payload,
    })
}

#[test]
fn concurrent_transactions_conflict_then_retry_commits() {
    require_root();
    let d = Daemon::start();
    let mut a = SocketClient::connect(&d.dom0_socket()).unwrap();
    let mut b = SocketClient::connect(&d.dom0_socket()).unwrap();
    a.write("/tool/counter", b"1").unwrap();

    // A reads the counter inside a transaction, B changes it, A's commit must fail.
    let t = tx_start(&mut a);
    let v = a.request(MsgType::Read, t, &nul("/tool/counter")).unwrap();
    assert_eq!(v, b"1");
    b.write("/tool/counter", b"5").unwrap();
    let mut p = nul("/tool/counter");
    p.extend_from_slice(b"2");
    a.request(MsgType::Write, t, &p).unwrap();
    // Inside its snapshot A still sees its own write; others do not.
    assert_eq!(
        a.request(MsgType::Read, t, &nul("/tool/counter")).unwrap(),
        b"2"
    );
    assert_eq!(b.read("/tool/counter").unwrap(), b"5");
    assert_eq!(
        xs_err(a.request(MsgType::TransactionEnd, t, b"T\0")),
        Some(XsError::EAGAIN)
    );
    assert_eq!(
        b.read("/tool/counter").unwrap(),
        b"5",
        "the failed commit applied nothing"
    );

    // The retry (read-modify-write again) commits.
    let t = tx_start(&mut a);
    let v = a.request(MsgType::Read, t, &nul("/tool/counter")).unwrap();
    let n: u32 = std::str::from_utf8(&v).unwrap().parse().unwrap();
    let mut p = nul("/tool/counter");
    p.extend_from_slice((n + 1).to_string().as_bytes());
    a.request(MsgType::Write, t, &p).unwrap();
    a.request(MsgType::TransactionEnd, t, b"T\0").unwrap();
    assert_eq!(b.read("/tool/counter").unwrap(), b"6");

    // Abort always succeeds and applies nothing.
    let t = tx_start(&mut a);
    let mut p = nul("/tool/aborted");
    p.extend_from_slice(b"x");
    a.request(MsgType::Write, t, &p).unwrap();
    a.request(MsgType::TransactionEnd, t, b"F\0").unwrap();
    assert_eq!(xs_err(b.read("/tool/aborted")), Some(XsError::ENOENT));
}

#[test]
fn eight_clients_racing_increments_lose_nothing() {
    require_root();
    let d = Daemon::start();
    SocketClient::connect(&d.dom0_socket())
        .unwrap()
        .write("/tool/n", b"0")
        .unwrap();
    let sock = d.dom0_socket();
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let sock = sock.clone();
            std::thread::spawn(move || {
                let mut c = SocketClient::connect(&sock).unwrap();
                let mut conflicts = 0;
                for _ in 0..25 {
                    loop {
                        let t = tx_start(&mut c);
                        let v = c.request(MsgType::Read, t, &nul("/tool/n")).unwrap();
                        let n: u64 = std::str::from_utf8(&v).unwrap().parse().unwrap();
                        let mut p = nul("/tool/n");
                        p.extend_from_slice((n + 1).to_string().as_bytes());
                        c.request(MsgType::Write, t, &p).unwrap();
                        match c.request(MsgType::TransactionEnd, t, b"T\0") {
                            Ok(_) => break,
                            Err(e) if e.xs() == Some(XsError::EAGAIN) => conflicts += 1,
                            Err(e) => panic!("commit: {e}"),
                        }
                    }
                }
                conflicts
            })
        })
        .collect();
    let conflicts: u32 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    let mut c = SocketClient::connect(&sock).unwrap();
    assert_eq!(
        c.read("/tool/n").unwrap(),
        b"200",
        "every increment committed exactly once"
    );
    eprintln!("{conflicts} EAGAIN retries");
}

#[test]
fn malformed_input_gets_the_reference_error_or_a_dropped_connection() {
    require_root();
    let d = Daemon::start();
    let sock = d.dom0_socket();
    let mut good = SocketClient::connect(&sock).unwrap();
    good.write("/tool/alive", b"yes").unwrap();

    // Header len > 4096: the connection is dropped, nobody else notices.
    let mut s = UnixStream::connect(&sock).unwrap();
    let mut hdr = Vec::new();
    hdr.extend_from_slice(&(MsgType::Read as u32).to_le_bytes());
    hdr.extend_from_slice(&0u32.to_le_bytes());
    hdr.extend_from_slice(&0u32.to_le_bytes());
    hdr.extend_from_slice(&5000u32.to_le_bytes());
    s.write_all(&hdr).unwrap();
    assert!(
        read_msg(&mut s).is_none(),
        "oversized message must close the connection"
    );
    assert_eq!(good.read("/tool/alive").unwrap(), b"yes");

    let mut s = UnixStream::connect(&sock).unwrap();
    let ask = |s: &mut UnixStream, ty: u32, tx: u32, payload: &[u8]| {
        let m = Message {
            msg_type: ty,
            req_id: 7,
            tx_id: tx,
            payload: payload.to_vec(),
        };
        let r = raw_roundtrip(s, &m).expect("a reply");
        assert_eq!(r.req_id, 7, "req_id echoed");
        r
    };
    // Unknown type, RESTRICT (20), WATCH_EVENT from a client: ENOSYS.
    for ty in [99u32, 20, 15, 23] {
        let r = ask(&mut s, ty, 0, b"x\0");
        assert_eq!(r.error(), Some(XsError::ENOSYS), "type {ty}");
    }
    // Path without its NUL, bad characters, too long, trailing slash, double slash.
    assert_eq!(
        ask(&mut s, MsgType::Read as u32, 0, b"/tool/alive").error(),
        Some(XsError::EINVAL)
    );
    assert_eq!(
        ask(&mut s, MsgType::Read as u32, 0, b"/tool/a b\0").error(),
        Some(XsError::EINVAL)
    );
    assert_eq!(
        ask(&mut s, MsgType::Read as u32, 0, b"/tool/alive/\0").error(),
        Some(XsError::EINVAL)
    );
    assert_eq!(
        ask(&mut s, MsgType::Read as u32, 0, b"/tool//alive\0").error(),
        Some(XsError::EINVAL)
    );
    let long = format!("/{}\0", "a".repeat(3100));
    assert_eq!(
        ask(&mut s, MsgType::Write as u32, 0, long.as_bytes()).error(),
        Some(XsError::EINVAL)
    );
    // TRANSACTION_END with a bad argument, and on an unknown transaction.
    let r = ask(&mut s, MsgType::TransactionStart as u32, 0, b"\0");
    let t: u32 = std::str::from_utf8(&r.payload)
        .unwrap()
        .trim_end_matches('\0')
        .parse()
        .unwrap();
    assert_eq!(
        ask(&mut s, MsgType::TransactionEnd as u32, t, b"X\0").error(),
        Some(XsError::EINVAL)
    );
    // TRANSACTION_START inside a transaction.
    assert_eq!(
        ask(&mut s, MsgType::TransactionStart as u32, t, b"\0").error(),
        Some(XsError::EBUSY)
    );
    assert_eq!(
        ask(&mut s, MsgType::TransactionEnd as u32, t + 100, b"T\0").error(),
        Some(XsError::ENOENT)
    );
    assert!(ask(&mut s, MsgType::TransactionEnd as u32, t, b"F\0")
        .error()
        .is_none());

    // A client that disconnects in the middle of a transaction: nothing is applied.
    let mut s2 = UnixStream::connect(&sock).unwrap();
    let r = raw_roundtrip(
        &mut s2,
        &Message::request(MsgType::TransactionStart, 0, &[b""]),
    )
    .unwrap();
    let t: u32 = std::str::from_utf8(&r.payload)
        .unwrap()
        .trim_end_matches('\0')
        .parse()
        .unwrap();
    let w = Message::new(MsgType::Write, 0, t, b"/tool/half\0done".to_vec());
    assert!(raw_roundtrip(&mut s2, &w).unwrap().error().is_none());
    drop(s2);
    // A client that disconnects in the middle of a message.
    let mut s3 = UnixStream::connect(&sock).unwrap();
    let m = Message::new(MsgType::Write, 0, 0, b"/tool/partial\0value".to_vec()).encode();
    s3.write_all(&m[..m.len() - 3]).unwrap();
    drop(s3);
    let mut s4 = UnixStream::connect(&sock).unwrap();
    s4.write_all(&m[..7]).unwrap();
    drop(s4);

    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(xs_err(good.read("/tool/half")), Some(XsError::ENOENT));
    assert_eq!(xs_err(good.read("/tool/partial")), Some(XsError::ENOENT));
    assert_eq!(
        good.read("/tool/alive").unwrap(),
        b"yes",
        "daemon keeps serving"
    );
    let stats: serde_json::Value = serde_json::from_str(&d.ok(&["stats", "--json"])).unwrap();
    assert!(stats["xenstored"]["protocol_errors"].as_u64().unwrap() >= 1);
}

#[test]
fn quota_overruns_by_a_guest_leave_dom0_unaffected() {
    require_root();
    let d = Daemon::start();
    let quota = &unique("quota");
    let id = d.create(quota, "");
    let mut g = SocketClient::connect(&d.domain_socket(quota)).unwrap();
    let mut dom0 = SocketClient::connect(&d.dom0_socket()).unwrap();

    // Node size above 2048 bytes.
    let big = vec![b'x'; 2049];
    assert_eq!(
        g.write("data/big", &big).err().and_then(|e| e.xs()),
        Some(XsError::ENOSPC)
    );
    g.write("data/fits", &big[..2048]).unwrap();

    // Node count: at most 1000 nodes owned.
    let mut written = 0;
    let err = loop {
        match g.write(&format!("data/n{written}"), b"v") {
            Ok(()) => written += 1,
            Err(e) => break e.xs(),
        }
        assert!(written <= 1000, "quota not enforced");
    };
    assert_eq!(err, Some(XsError::ENOSPC));
    assert!(written > 900, "only {written} nodes before the quota");

    // Watches: at most 128, then E2BIG.
    let mut watches = 0;
    let err = loop {
        match g.watch(&format!("data/w{watches}"), "t") {
            Ok(()) => watches += 1,
            Err(e) => break e.xs(),
        }
        assert!(watches <= 128, "watch quota not enforced");
    };
    assert_eq!(err, Some(XsError::E2BIG));
    assert_eq!(watches, 128);

    // Transactions: at most 10 open.
    let mut open = 0;
    let err = loop {
        match g.request(MsgType::TransactionStart, 0, b"\0") {
            Ok(_) => open += 1,
            Err(e) => break e.xs(),
        }
        assert!(open <= 10);
    };
    assert_eq!(err, Some(XsError::ENOSPC));

    // Dom0 is never limited and keeps working.
    for i in 0..1100 {
        dom0.write(&format!("/tool/dom0/n{i}"), b"v").unwrap();
    }
    dom0.write("/tool/dom0/big", &vec![b'y'; 4000]).unwrap();
    assert_eq!(
        dom0.read(&format!("/local/domain/{id}/data/n0")).unwrap(),
        b"v"
    );
}

#[test]
fn kill_9_keeps_committed_state_and_drops_open_transactions() {
    require_root();
    let mut d = Daemon::start();
    let (durable_a, durable_b, durable_c) = (&unique("dura"), &unique("durb"), &unique("durc"));
    let a = d.create(durable_a, "");
    let b = d.create(durable_b, "");
    let mut c = SocketClient::connect(&d.dom0_socket()).unwrap();
    for i in 0..50 {
        c.write(&format!("/tool/keep/k{i}"), format!("v{i}").as_bytes())
            .unwrap();
    }
    c.rm("/tool/keep/k7").unwrap();
    let mut p = nul("/tool/keep/k1");
    p.extend_from_slice(b"n0");
    p.extend_from_slice(b"\0r3\0");
    c.request(MsgType::SetPerms, 0, &p).unwrap();
    // An open transaction with a write that was never committed.
    let t = tx_start(&mut c);
    let mut p = nul("/tool/uncommitted");
    p.extend_from_slice(b"x");
    c.request(MsgType::Write, t, &p).unwrap();

    d.kill(libc::SIGKILL);
    let took = d.spawn();
    eprintln!("restart took {took:?}");

    let mut c = SocketClient::connect(&d.dom0_socket()).unwrap();
    for i in 0..50 {
        let r = c.read(&format!("/tool/keep/k{i}"));
        if i == 7 {
            assert_eq!(r.err().and_then(|e| e.xs()), Some(XsError::ENOENT));
        } else {
            assert_eq!(r.unwrap(), format!("v{i}").as_bytes());
        }
    }
    let perms = c
        .request(MsgType::GetPerms, 0, &nul("/tool/keep/k1"))
        .unwrap();
    assert_eq!(perms, b"n0\0r3\0");
    assert_eq!(
        c.read("/tool/uncommitted").err().and_then(|e| e.xs()),
        Some(XsError::ENOENT)
    );
    assert_eq!(d.domid(durable_a), a);
    assert_eq!(d.domid(durable_b), b);
    // The restored domains are fully alive: own sockets, trees, and new ids move on.
    let mut g = SocketClient::connect(&d.domain_socket(durable_a)).unwrap();
    assert_eq!(g.read("name").unwrap(), durable_a.as_bytes());
    let c3 = d.create(durable_c, "");
    assert!(c3 > b, "ids keep moving forward after a restart");
    d.ok(&["destroy", durable_a]);
    d.kill(libc::SIGKILL);
    d.spawn();
    let list = d.ok(&["list"]);
    assert!(
        !list.contains(durable_a) && list.contains(durable_b) && list.contains(durable_c),
        "{list}"
    );
}

#[test]
fn torn_journal_tail_is_dropped_not_loaded() {
    require_root();
    let mut d = Daemon::start();
    let mut c = SocketClient::connect(&d.dom0_socket()).unwrap();
    c.write("/tool/before", b"1").unwrap();
    d.kill(libc::SIGKILL);
    // Simulate a write torn by a crash: half a record at the end of the log.
    let log = d.state_dir.join("state.log");
    let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    f.write_all(&[200, 0, 0, 0, 1, 2, 3, 4, 9, 0, 0, 0, 0, 0, 0, 0, b'/', b't'])
        .unwrap();
    drop(f);
    d.spawn();
    let mut c = SocketClient::connect(&d.dom0_socket()).unwrap();
    assert_eq!(c.read("/tool/before").unwrap(), b"1");
    assert!(d.log().contains("torn"), "the torn tail is reported");
    c.write("/tool/after", b"2").unwrap();
    d.kill(libc::SIGKILL);
    d.spawn();
    let mut c = SocketClient::connect(&d.dom0_socket()).unwrap();
    assert_eq!(c.read("/tool/after").unwrap(), b"2");
}
