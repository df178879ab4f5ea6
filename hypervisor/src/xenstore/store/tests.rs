//! Store tests: every rule of the brief, the oxenstored unit-test scenarios
//! (robustness §2.2) with their expected replies, the `test-xenstore` cases
//! (robustness §2.1), and property tests.
//!
//! Request payloads are built like the oxenstored tests (`call`: every
//! argument NUL-terminated, so `Write ["/a"; "hello"]` stores `hello\0`) or
//! like libxenstore (`write`: `path\0value`, value unterminated).

use super::*;
use crate::xenstore::wire::{Message, MsgType};
use proptest::prelude::*;

const D0: ConnId = ConnId(1);

fn store() -> Store {
    store_with(Quotas::default())
}

fn store_with(q: Quotas) -> Store {
    let mut s = Store::new(q);
    s.connect(D0, 0, true);
    s
}

fn dom(s: &mut Store, id: u64, domid: DomId) -> ConnId {
    let c = ConnId(id);
    s.connect(c, domid, false);
    c
}

fn call(s: &mut Store, c: ConnId, tx: u32, ty: MsgType, args: &[&str]) -> Response {
    let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
    let r = s.handle(c, &Message::request(ty, tx, &args));
    s.check().unwrap();
    r
}

fn raw(s: &mut Store, c: ConnId, tx: u32, ty: u32, payload: &[u8]) -> Response {
    let r = s.handle(
        c,
        &Message {
            msg_type: ty,
            req_id: 0,
            tx_id: tx,
            payload: payload.to_vec(),
        },
    );
    s.check().unwrap();
    r
}

fn write(s: &mut Store, c: ConnId, tx: u32, path: &str, value: &[u8]) -> Response {
    let mut p = path.as_bytes().to_vec();
    p.push(0);
    p.extend_from_slice(value);
    raw(s, c, tx, MsgType::Write.as_u32(), &p)
}

fn reply(r: &Response, c: ConnId) -> Message {
    let replies: Vec<&Outgoing> = r
        .out
        .iter()
        .filter(|o| o.conn == c && o.msg.msg_type != MsgType::WatchEvent.as_u32())
        .collect();
    assert_eq!(replies.len(), 1, "exactly one reply expected in {r:?}");
    replies[0].msg.clone()
}

fn error(r: &Response, c: ConnId) -> Option<XsError> {
    reply(r, c).error()
}

fn payload(r: &Response, c: ConnId) -> Vec<u8> {
    let m = reply(r, c);
    assert_eq!(m.error(), None, "unexpected error reply");
    m.payload
}

fn assert_ok(r: &Response, c: ConnId) {
    assert_eq!(payload(r, c), b"OK\0");
}

fn assert_err(r: &Response, c: ConnId, e: XsError) {
    assert_eq!(error(r, c), Some(e), "{r:?}");
}

fn events(r: &Response, c: ConnId) -> Vec<(String, String)> {
    r.out
        .iter()
        .filter(|o| o.conn == c && o.msg.msg_type == MsgType::WatchEvent.as_u32())
        .map(|o| {
            let mut parts = o.msg.payload.split(|&b| b == 0);
            let p = String::from_utf8_lossy(parts.next().unwrap()).into_owned();
            let t = String::from_utf8_lossy(parts.next().unwrap()).into_owned();
            assert_eq!(o.msg.payload.last(), Some(&0));
            (p, t)
        })
        .collect()
}

fn ev(p: &str, t: &str) -> (String, String) {
    (p.to_owned(), t.to_owned())
}

fn read(s: &mut Store, c: ConnId, tx: u32, path: &str) -> Result<Vec<u8>, XsError> {
    let r = call(s, c, tx, MsgType::Read, &[path]);
    let m = reply(&r, c);
    match m.error() {
        Some(e) => Err(e),
        None => Ok(m.payload),
    }
}

fn start(s: &mut Store, c: ConnId) -> u32 {
    let p = payload(&call(s, c, 0, MsgType::TransactionStart, &[""]), c);
    std::str::from_utf8(&p[..p.len() - 1])
        .unwrap()
        .parse()
        .unwrap()
}

fn end(s: &mut Store, c: ConnId, tx: u32, commit: bool) -> Response {
    call(
        s,
        c,
        tx,
        MsgType::TransactionEnd,
        &[if commit { "T" } else { "F" }],
    )
}

/// A domain home owned by the domain (`n<domid>`), as libxl sets it up.
fn home(s: &mut Store, domid: DomId) {
    let p = format!("/local/domain/{domid}");
    assert_ok(&call(s, D0, 0, MsgType::Mkdir, &[&p]), D0);
    assert_ok(
        &call(s, D0, 0, MsgType::SetPerms, &[&p, &format!("n{domid}")]),
        D0,
    );
}

fn dump_of(s: &Store) -> Vec<Change> {
    s.dump()
}

fn replay(changes: &[Change]) -> Store {
    let mut s = Store::new(Quotas::default());
    for c in changes {
        s.apply(c);
    }
    s.check().unwrap();
    s
}

// ---------------------------------------------------------------- basics

#[test]
fn initial_tree_and_reply_formats() {
    let mut s = store();
    assert_eq!(
        payload(&call(&mut s, D0, 0, MsgType::Directory, &["/"]), D0),
        b"local\0tool\0"
    );
    assert_eq!(
        payload(&call(&mut s, D0, 0, MsgType::Directory, &["/tool"]), D0),
        b"xenstored\0"
    );
    assert_eq!(
        payload(
            &call(&mut s, D0, 0, MsgType::Directory, &["/tool/xenstored"]),
            D0
        ),
        b""
    );
    assert_eq!(
        payload(&call(&mut s, D0, 0, MsgType::GetPerms, &["/"]), D0),
        b"n0\0"
    );
    assert_eq!(
        payload(
            &call(&mut s, D0, 0, MsgType::GetPerms, &["/local/domain"]),
            D0
        ),
        b"n0\0"
    );
    assert_eq!(read(&mut s, D0, 0, "/tool/xenstored"), Ok(vec![]));
    assert_eq!(s.stats().nodes, 5);
}

#[test]
fn read_has_no_trailing_nul_and_values_are_binary() {
    let mut s = store();
    assert_ok(&write(&mut s, D0, 0, "/v", b"hello"), D0);
    assert_eq!(read(&mut s, D0, 0, "/v"), Ok(b"hello".to_vec()));
    let bin = [0u8, 1, 255, 0, b'\n'];
    assert_ok(&write(&mut s, D0, 0, "/b", &bin), D0);
    assert_eq!(read(&mut s, D0, 0, "/b"), Ok(bin.to_vec()));
}

#[test]
fn directory_lists_children_in_creation_order() {
    let mut s = store();
    for p in ["/a/2/foo", "/a/1", "/a/3"] {
        assert_ok(&write(&mut s, D0, 0, p, b""), D0);
    }
    assert_eq!(
        payload(&call(&mut s, D0, 0, MsgType::Directory, &["/a"]), D0),
        b"2\x001\x003\0"
    );
}

#[test]
fn error_replies_keep_ids_and_carry_the_name() {
    let mut s = store();
    let mut m = Message::request(MsgType::Read, 0, &[b"/nope"]);
    m.req_id = 77;
    let r = s.handle(D0, &m);
    let e = reply(&r, D0);
    assert_eq!(
        (e.msg_type, e.req_id, e.tx_id),
        (MsgType::Error.as_u32(), 77, 0)
    );
    assert_eq!(e.payload, b"ENOENT\0");
    let t = start(&mut s, D0);
    let mut m = Message::request(MsgType::Read, t, &[b"/nope"]);
    m.req_id = 5;
    let e = reply(&s.handle(D0, &m), D0);
    assert_eq!((e.msg_type, e.req_id, e.tx_id), (16, 5, t));
    let ok = reply(
        &s.handle(D0, &Message::request(MsgType::Read, t, &[b"/"])),
        D0,
    );
    assert_eq!((ok.msg_type, ok.tx_id), (MsgType::Read.as_u32(), t));
}

#[test]
fn unknown_and_client_only_types_are_enosys() {
    let mut s = store();
    for ty in [20, 23, 24, 99, 0xFFFF, u32::MAX, 15, 16] {
        assert_err(&raw(&mut s, D0, 0, ty, b"/\0"), D0, XsError::ENOSYS);
    }
    let d1 = dom(&mut s, 2, 1);
    assert_err(&raw(&mut s, d1, 0, 20, b""), d1, XsError::ENOSYS);
}

#[test]
fn onearg_framing_errors_are_einval() {
    let mut s = store();
    for ty in [
        MsgType::Read,
        MsgType::Directory,
        MsgType::GetPerms,
        MsgType::Mkdir,
        MsgType::Rm,
    ] {
        for bad in [&b""[..], b"/tool", b"/tool\0\0", b"/tool\0x\0", b"\0"] {
            assert_err(&raw(&mut s, D0, 0, ty.as_u32(), bad), D0, XsError::EINVAL);
        }
    }
    assert_err(
        &raw(&mut s, D0, 0, MsgType::Write.as_u32(), b"/a"),
        D0,
        XsError::EINVAL,
    );
    assert_err(
        &raw(&mut s, D0, 0, MsgType::GetDomainPath.as_u32(), b"1"),
        D0,
        XsError::EINVAL,
    );
    assert_err(
        &raw(&mut s, D0, 0, MsgType::Watch.as_u32(), b"/a\0"),
        D0,
        XsError::EINVAL,
    );
    assert_err(
        &raw(&mut s, D0, 0, MsgType::Unwatch.as_u32(), b"/a\0"),
        D0,
        XsError::EINVAL,
    );
    assert_err(
        &raw(&mut s, D0, 0, MsgType::SetPerms.as_u32(), b"/tool\0"),
        D0,
        XsError::EINVAL,
    );
    assert_err(
        &raw(&mut s, D0, 0, MsgType::DirectoryPart.as_u32(), b"/tool\0"),
        D0,
        XsError::EINVAL,
    );
}

#[test]
fn bad_paths_are_einval() {
    let mut s = store();
    let long_rel = "a".repeat(2049);
    for p in [
        "/a b",
        "/a//b",
        "/a/",
        "a/",
        "/a.b",
        "@introduceDomain",
        "@foo",
        long_rel.as_str(),
    ] {
        assert_err(
            &call(&mut s, D0, 0, MsgType::Read, &[p]),
            D0,
            XsError::EINVAL,
        );
        assert_err(&write(&mut s, D0, 0, p, b"x"), D0, XsError::EINVAL);
    }
    // The 2048-byte relative part is fine: the home prefix does not count (XSA-323).
    let ok_rel = "a".repeat(2048);
    assert_ok(&write(&mut s, D0, 0, &ok_rel, b"x"), D0);
    assert_eq!(
        read(&mut s, D0, 0, &format!("/local/domain/0/{ok_rel}")),
        Ok(b"x".to_vec())
    );
}

#[test]
fn relative_paths_resolve_under_the_callers_home() {
    let mut s = store();
    home(&mut s, 3);
    let d3 = dom(&mut s, 2, 3);
    assert_ok(&write(&mut s, d3, 0, "data/x", b"1"), d3);
    assert_eq!(
        read(&mut s, D0, 0, "/local/domain/3/data/x"),
        Ok(b"1".to_vec())
    );
    assert_ok(&write(&mut s, D0, 0, "name", b"Domain-0"), D0);
    assert_eq!(
        read(&mut s, D0, 0, "/local/domain/0/name"),
        Ok(b"Domain-0".to_vec())
    );
}

#[test]
fn unprivileged_callers_get_eacces_for_privileged_ops() {
    let mut s = store();
    let d1 = dom(&mut s, 2, 1);
    for (ty, args) in [
        (MsgType::Control, vec!["check"]),
        (MsgType::Introduce, vec!["5", "0", "5"]),
        (MsgType::Release, vec!["1"]),
        (MsgType::Resume, vec!["1"]),
        (MsgType::SetTarget, vec!["1", "2"]),
        (MsgType::IsDomainIntroduced, vec!["0"]),
    ] {
        assert_err(&call(&mut s, d1, 0, ty, &args), d1, XsError::EACCES);
    }
}

#[test]
fn domain_path_and_introduced_queries() {
    let mut s = store();
    assert_eq!(
        payload(&call(&mut s, D0, 0, MsgType::GetDomainPath, &["5"]), D0),
        b"/local/domain/5\0"
    );
    let d1 = dom(&mut s, 2, 1);
    assert_eq!(
        payload(&call(&mut s, d1, 0, MsgType::GetDomainPath, &["0"]), d1),
        b"/local/domain/0\0"
    );
    assert_err(
        &call(&mut s, D0, 9, MsgType::GetDomainPath, &["5"]),
        D0,
        XsError::ENOENT,
    );
    let q =
        |s: &mut Store, d: &str| payload(&call(s, D0, 0, MsgType::IsDomainIntroduced, &[d]), D0);
    assert_eq!(q(&mut s, "0"), b"T\0");
    assert_eq!(q(&mut s, "5"), b"F\0");
    assert_eq!(q(&mut s, "32752"), b"T\0", "DOMID_SELF");
    s.introduce_domain(5);
    assert_eq!(q(&mut s, "5"), b"T\0");
    s.release_domain(5);
    assert_eq!(q(&mut s, "5"), b"F\0");
}

#[test]
fn control_commands() {
    let mut s = store();
    assert_ok(&call(&mut s, D0, 0, MsgType::Control, &["check"]), D0);
    assert_err(
        &call(&mut s, D0, 0, MsgType::Control, &["check", "x"]),
        D0,
        XsError::EINVAL,
    );
    assert_err(
        &call(&mut s, D0, 0, MsgType::Control, &["frobnicate"]),
        D0,
        XsError::EINVAL,
    );
    assert_err(&raw(&mut s, D0, 0, 0, b"check"), D0, XsError::EINVAL);
    assert!(payload(&call(&mut s, D0, 0, MsgType::Control, &["help"]), D0).starts_with(b"check"));
    let q = payload(&call(&mut s, D0, 0, MsgType::Control, &["quota"]), D0);
    assert!(String::from_utf8_lossy(&q).contains("nodes            :     1000"));
    assert_ok(
        &call(
            &mut s,
            D0,
            0,
            MsgType::Control,
            &["quota", "set", "nodes", "7"],
        ),
        D0,
    );
    assert_eq!(s.quotas().nodes_per_domain, 7);
    assert_err(
        &call(
            &mut s,
            D0,
            0,
            MsgType::Control,
            &["quota", "set", "nodes", "0"],
        ),
        D0,
        XsError::EINVAL,
    );
    assert!(
        payload(&call(&mut s, D0, 0, MsgType::Control, &["quota", "0"]), D0)
            .starts_with(b"Domain 0:")
    );
}

#[test]
fn unknown_connection_gets_einval() {
    let mut s = store();
    let r = call(&mut s, ConnId(999), 0, MsgType::Read, &["/"]);
    assert_err(&r, ConnId(999), XsError::EINVAL);
    assert_eq!(s.stats().unknown_connection, 1);
}

// ------------------------------------------------------- write/mkdir/rm

#[test]
fn write_creates_parents_inheriting_perms_and_owner() {
    let mut s = store();
    assert_ok(&call(&mut s, D0, 0, MsgType::Mkdir, &["/p"]), D0);
    assert_ok(
        &call(&mut s, D0, 0, MsgType::SetPerms, &["/p", "n0", "b4"]),
        D0,
    );
    let d4 = dom(&mut s, 2, 4);
    assert_ok(&write(&mut s, d4, 0, "/p/q/r", b"v"), d4);
    assert_eq!(read(&mut s, D0, 0, "/p/q"), Ok(vec![]));
    // Created by an unprivileged domain: it owns them, other entries inherited.
    assert_eq!(
        payload(&call(&mut s, D0, 0, MsgType::GetPerms, &["/p/q"]), D0),
        b"n4\0b4\0"
    );
    assert_eq!(
        payload(&call(&mut s, D0, 0, MsgType::GetPerms, &["/p/q/r"]), D0),
        b"n4\0b4\0"
    );
    // Created by dom0: inherited unchanged.
    assert_ok(&write(&mut s, D0, 0, "/p/z/y", b""), D0);
    assert_eq!(
        payload(&call(&mut s, D0, 0, MsgType::GetPerms, &["/p/z/y"]), D0),
        b"n0\0b4\0"
    );
    assert_eq!(s.nodes_owned(4), 2);
}

#[test]
fn write_records_changes_parents_first() {
    let mut s = store();
    let r = write(&mut s, D0, 0, "/a/b/c", b"v");
    let paths: Vec<&str> = r.changes.iter().map(Change::path).collect();
    assert_eq!(paths, ["/a", "/a/b", "/a/b/c"]);
    let r = write(&mut s, D0, 0, "/a/b/c", b"w");
    assert_eq!(r.changes.len(), 1);
    assert!(read(&mut s, D0, 0, "/a").is_ok());
    assert_eq!(call(&mut s, D0, 0, MsgType::Read, &["/a"]).changes, vec![]);
}

#[test]
fn mkdir_is_ok_if_present_and_fires_only_on_create() {
    let mut s = store();
    assert_ok(&call(&mut s, D0, 0, MsgType::Watch, &["/m", "t"]), D0);
    let r = call(&mut s, D0, 0, MsgType::Mkdir, &["/m"]);
    assert_ok(&r, D0);
    assert_eq!(events(&r, D0), [ev("/m", "t")]);
    assert_eq!(r.changes.len(), 1);
    let r = call(&mut s, D0, 0, MsgType::Mkdir, &["/m"]);
    assert_ok(&r, D0);
    assert!(events(&r, D0).is_empty());
    assert!(r.changes.is_empty());
}

#[test]
fn rm_rules() {
    let mut s = store();
    assert_ok(&write(&mut s, D0, 0, "/r/a/b", b"1"), D0);
    assert_ok(&write(&mut s, D0, 0, "/r/c", b"2"), D0);
    let r = call(&mut s, D0, 0, MsgType::Rm, &["/r/a"]);
    assert_ok(&r, D0);
    assert_eq!(
        r.changes,
        vec![Change::Remove {
            path: "/r/a".into()
        }]
    );
    assert_eq!(read(&mut s, D0, 0, "/r/a/b"), Err(XsError::ENOENT));
    assert_eq!(
        payload(&call(&mut s, D0, 0, MsgType::Directory, &["/r"]), D0),
        b"c\0"
    );
    assert_ok(&call(&mut s, D0, 0, MsgType::Rm, &["/r/a"]), D0);
    assert_err(
        &call(&mut s, D0, 0, MsgType::Rm, &["/r/a/b"]),
        D0,
        XsError::ENOENT,
    );
    assert_err(
        &call(&mut s, D0, 0, MsgType::Rm, &["/"]),
        D0,
        XsError::EINVAL,
    );
    let d1 = dom(&mut s, 2, 1);
    assert_err(
        &call(&mut s, d1, 0, MsgType::Rm, &["/r"]),
        d1,
        XsError::EACCES,
    );
    assert_err(
        &call(&mut s, d1, 0, MsgType::Rm, &["/"]),
        d1,
        XsError::EACCES,
    );
}

#[test]
fn rm_events_reach_removed_descendants_and_ancestors() {
    let mut s = store();
    assert_ok(&write(&mut s, D0, 0, "/x/y/z", b""), D0);
    for (p, t) in [
        ("/x/y/z", "deep"),
        ("/x/y", "mid"),
        ("/x", "top"),
        ("/", "root"),
        ("/x/y/nope", "none"),
    ] {
        assert_ok(&call(&mut s, D0, 0, MsgType::Watch, &[p, t]), D0);
    }
    let r = call(&mut s, D0, 0, MsgType::Rm, &["/x/y"]);
    assert_eq!(
        events(&r, D0),
        [
            ev("/x/y/z", "deep"),
            ev("/x/y", "mid"),
            ev("/x/y", "top"),
            ev("/x/y", "root")
        ]
    );
    // Events precede the reply (C xenstored queues them first).
    assert_eq!(r.out.last().unwrap().msg.msg_type, MsgType::Rm.as_u32());
}

// ----------------------------------------------------------- directory_part

#[test]
fn directory_over_4096_is_e2big_and_directory_part_pages_it() {
    let mut s = store();
    let names: Vec<String> = (0..60)
        .map(|i| format!("c{i:02}{}", "x".repeat(97)))
        .collect();
    for n in &names {
        assert_ok(&write(&mut s, D0, 0, &format!("/big/{n}"), b""), D0);
    }
    assert_err(
        &call(&mut s, D0, 0, MsgType::Directory, &["/big"]),
        D0,
        XsError::E2BIG,
    );
    let expected: Vec<u8> = names.iter().flat_map(|n| n.bytes().chain([0])).collect();

    // Exactly libxenstore's xs_directory_part loop.
    let mut acc: Vec<u8> = Vec::new();
    let mut gen0: Option<Vec<u8>> = None;
    let mut chunks = 0;
    loop {
        let off = acc.len().to_string();
        let p = payload(
            &call(&mut s, D0, 0, MsgType::DirectoryPart, &["/big", &off]),
            D0,
        );
        assert!(p.len() <= 4096);
        let nul = p.iter().position(|&b| b == 0).unwrap();
        match &gen0 {
            Some(g) => assert_eq!(g, &p[..nul]),
            None => gen0 = Some(p[..nul].to_vec()),
        }
        acc.extend_from_slice(&p[nul + 1..]);
        assert_eq!(acc.last(), Some(&0), "chunks end at child boundaries");
        chunks += 1;
        let n = acc.len();
        if n <= 1 || acc[n - 2] == 0 {
            break;
        }
    }
    assert_eq!(chunks, 2);
    acc.pop();
    assert_eq!(acc, expected);

    let gen = gen0.unwrap();
    let mut past = gen.clone();
    past.extend_from_slice(b"\0\0");
    assert_eq!(
        payload(
            &call(&mut s, D0, 0, MsgType::DirectoryPart, &["/big", "6060"]),
            D0
        ),
        past
    );
    assert_eq!(
        payload(
            &call(&mut s, D0, 0, MsgType::DirectoryPart, &["/big", "99999"]),
            D0
        ),
        past
    );
    // A small directory comes back whole, with the final empty string.
    assert_ok(&write(&mut s, D0, 0, "/sm/a", b""), D0);
    let p = payload(
        &call(&mut s, D0, 0, MsgType::DirectoryPart, &["/sm", "0"]),
        D0,
    );
    assert!(p.ends_with(b"\0a\0\0"));
    // The generation changes when the child list does.
    assert_ok(&write(&mut s, D0, 0, "/big/new", b""), D0);
    let p = payload(
        &call(&mut s, D0, 0, MsgType::DirectoryPart, &["/big", "0"]),
        D0,
    );
    assert_ne!(
        &p[..p.iter().position(|&b| b == 0).unwrap()],
        gen.as_slice()
    );
}

// ----------------------------------------------------------------- perms

#[test]
fn set_perms_rules() {
    let mut s = store();
    home(&mut s, 1);
    let d1 = dom(&mut s, 2, 1);
    let d2 = dom(&mut s, 3, 2);
    assert_ok(&write(&mut s, d1, 0, "data", b""), d1);
    assert_ok(
        &call(&mut s, d1, 0, MsgType::SetPerms, &["data", "n1", "b2"]),
        d1,
    );
    assert_eq!(
        payload(&call(&mut s, d1, 0, MsgType::GetPerms, &["data"]), d1),
        b"n1\0b2\0"
    );
    // d2 can write but does not own.
    assert_ok(&write(&mut s, d2, 0, "/local/domain/1/data", b"x"), d2);
    assert_err(
        &call(
            &mut s,
            d2,
            0,
            MsgType::SetPerms,
            &["/local/domain/1/data", "n1"],
        ),
        d2,
        XsError::EACCES,
    );
    // Owner may not give the node away.
    assert_err(
        &call(&mut s, d1, 0, MsgType::SetPerms, &["data", "n2"]),
        d1,
        XsError::EPERM,
    );
    // Quota: 5 entries fine, 6 not (unprivileged only).
    assert_ok(
        &call(
            &mut s,
            d1,
            0,
            MsgType::SetPerms,
            &["data", "n1", "r2", "r3", "r4", "r5"],
        ),
        d1,
    );
    assert_err(
        &call(
            &mut s,
            d1,
            0,
            MsgType::SetPerms,
            &["data", "n1", "r2", "r3", "r4", "r5", "r6"],
        ),
        d1,
        XsError::ENOSPC,
    );
    assert_eq!(s.stats().quota_hits.perms, 1);
    assert_ok(
        &call(
            &mut s,
            D0,
            0,
            MsgType::SetPerms,
            &["/local/domain/1/data", "n1", "r2", "r3", "r4", "r5", "r6"],
        ),
        D0,
    );
    // Malformed entries.
    for bad in ["x1", "r", "rr", "r-1", "r70000", ""] {
        assert_err(
            &call(
                &mut s,
                D0,
                0,
                MsgType::SetPerms,
                &["/local/domain/1/data", bad],
            ),
            D0,
            XsError::EINVAL,
        );
    }
    // dom0 may change the owner.
    assert_ok(
        &call(
            &mut s,
            D0,
            0,
            MsgType::SetPerms,
            &["/local/domain/1/data", "r2"],
        ),
        D0,
    );
    assert_eq!(
        payload(
            &call(&mut s, D0, 0, MsgType::GetPerms, &["/local/domain/1/data"]),
            D0
        ),
        b"r2\0"
    );
}

#[test]
fn special_node_permissions() {
    let mut s = store();
    let d1 = dom(&mut s, 2, 1);
    assert_eq!(
        payload(
            &call(&mut s, D0, 0, MsgType::GetPerms, &["@introduceDomain"]),
            D0
        ),
        b"n0\0"
    );
    assert_eq!(
        payload(
            &call(&mut s, D0, 0, MsgType::GetPerms, &["@releaseDomain"]),
            D0
        ),
        b"n0\0"
    );
    assert_err(
        &call(&mut s, D0, 0, MsgType::SetPerms, &["@foo", "n0"]),
        D0,
        XsError::EINVAL,
    );
    assert_err(
        &call(&mut s, D0, 0, MsgType::GetPerms, &["@foo"]),
        D0,
        XsError::EINVAL,
    );
    assert_err(
        &call(
            &mut s,
            d1,
            0,
            MsgType::SetPerms,
            &["@introduceDomain", "n0", "r1"],
        ),
        d1,
        XsError::EACCES,
    );
    assert_err(
        &call(&mut s, d1, 0, MsgType::GetPerms, &["@introduceDomain"]),
        d1,
        XsError::EACCES,
    );

    // An unprivileged watcher gets special events only once granted read.
    let r = call(&mut s, d1, 0, MsgType::Watch, &["@introduceDomain", "tok"]);
    assert_eq!(
        events(&r, d1),
        [ev("@introduceDomain", "tok")],
        "initial event is unconditional"
    );
    assert!(events(&s.introduce_domain(5), d1).is_empty());
    assert_ok(
        &call(
            &mut s,
            D0,
            0,
            MsgType::SetPerms,
            &["@introduceDomain", "n0", "r1"],
        ),
        D0,
    );
    assert_eq!(
        payload(
            &call(&mut s, d1, 0, MsgType::GetPerms, &["@introduceDomain"]),
            d1
        ),
        b"n0\0r1\0"
    );
    assert_eq!(
        events(&s.introduce_domain(6), d1),
        [ev("@introduceDomain", "tok")]
    );
    // Releasing domain 1 strips it from the special permissions too.
    s.release_domain(1);
    assert_eq!(
        payload(
            &call(&mut s, D0, 0, MsgType::GetPerms, &["@introduceDomain"]),
            D0
        ),
        b"n0\0"
    );
}

// --------------------------------------------------------------- watches

#[test]
fn watch_replies_ok_then_initial_event_and_ignores_tx_id() {
    let mut s = store();
    let r = call(&mut s, D0, 4242, MsgType::Watch, &["/w", "tok"]);
    assert_eq!(r.out.len(), 2);
    assert_eq!(r.out[0].msg.payload, b"OK\0");
    assert_eq!(r.out[0].msg.msg_type, MsgType::Watch.as_u32());
    assert_eq!(r.out[1].msg, Message::watch_event(b"/w", b"tok"));
    assert_err(
        &call(&mut s, D0, 0, MsgType::Watch, &["/w", "tok"]),
        D0,
        XsError::EEXIST,
    );
    assert_ok(&call(&mut s, D0, 0, MsgType::Watch, &["/w", "tok2"]), D0);
    assert_ok(&call(&mut s, D0, 77, MsgType::Unwatch, &["/w", "tok2"]), D0);
    assert_err(
        &call(&mut s, D0, 0, MsgType::Unwatch, &["/w", "tok2"]),
        D0,
        XsError::ENOENT,
    );
    assert_err(
        &call(&mut s, D0, 0, MsgType::Unwatch, &["/nope", "x"]),
        D0,
        XsError::ENOENT,
    );
    // 4.17 takes exactly two arguments: a depth argument is rejected.
    assert_err(
        &call(&mut s, D0, 0, MsgType::Watch, &["/w", "t3", "1"]),
        D0,
        XsError::EINVAL,
    );
    assert_err(
        &call(&mut s, D0, 0, MsgType::Watch, &["/w//x", "t"]),
        D0,
        XsError::EINVAL,
    );
}

#[test]
fn any_modification_of_node_or_descendant_fires() {
    let mut s = store();
    assert_ok(&call(&mut s, D0, 0, MsgType::Watch, &["/w", "t"]), D0);
    assert_eq!(
        events(&write(&mut s, D0, 0, "/w/a/b", b"1"), D0),
        [ev("/w/a/b", "t")]
    );
    assert_eq!(
        events(&write(&mut s, D0, 0, "/w", b"1"), D0),
        [ev("/w", "t")]
    );
    assert_eq!(
        events(&call(&mut s, D0, 0, MsgType::SetPerms, &["/w/a", "n0"]), D0),
        [ev("/w/a", "t")]
    );
    assert_eq!(
        events(&call(&mut s, D0, 0, MsgType::Rm, &["/w/a"]), D0),
        [ev("/w/a", "t")]
    );
    assert!(events(&call(&mut s, D0, 0, MsgType::Read, &["/w"]), D0).is_empty());
    assert!(
        events(&write(&mut s, D0, 0, "/wx", b"1"), D0).is_empty(),
        "prefix is not a parent"
    );
    // Unwatched: no more events.
    assert_ok(&call(&mut s, D0, 0, MsgType::Unwatch, &["/w", "t"]), D0);
    assert!(events(&write(&mut s, D0, 0, "/w", b"2"), D0).is_empty());
}

#[test]
fn events_go_to_connections_in_connect_order() {
    let mut s = store();
    let a = ConnId(10);
    let b = ConnId(11);
    s.connect(a, 0, true);
    s.connect(b, 0, true);
    assert_ok(&call(&mut s, b, 0, MsgType::Watch, &["/o", "b"]), b);
    assert_ok(&call(&mut s, a, 0, MsgType::Watch, &["/o", "a2"]), a);
    assert_ok(&call(&mut s, a, 0, MsgType::Watch, &["/", "a1"]), a);
    let r = write(&mut s, D0, 0, "/o", b"");
    let order: Vec<(ConnId, Vec<u8>)> = r
        .out
        .iter()
        .filter(|o| o.msg.msg_type == 15)
        .map(|o| (o.conn, o.msg.payload.clone()))
        .collect();
    assert_eq!(
        order,
        [
            (a, b"/o\0a2\0".to_vec()),
            (a, b"/o\0a1\0".to_vec()),
            (b, b"/o\0b\0".to_vec())
        ]
    );
    assert_eq!(r.out.last().unwrap().conn, D0);
}

#[test]
fn identical_pending_events_are_coalesced() {
    let mut s = store();
    assert_ok(
        &call(&mut s, D0, 0, MsgType::Watch, &["/local/domain/0/x", "t"]),
        D0,
    );
    assert_ok(
        &call(&mut s, D0, 0, MsgType::Watch, &["/local/domain/0", "t"]),
        D0,
    );
    let r = write(&mut s, D0, 0, "/local/domain/0/x", b"1");
    assert_eq!(events(&r, D0), [ev("/local/domain/0/x", "t")]);
    assert_eq!(s.stats().events_coalesced, 1);
}

#[test]
fn oversize_events_are_dropped_and_counted() {
    let mut s = store();
    let token = "t".repeat(3000);
    let r = call(&mut s, D0, 0, MsgType::Watch, &["/", &token]);
    assert_eq!(events(&r, D0).len(), 1);
    let long = format!("/{}", "p".repeat(1199));
    let r = write(&mut s, D0, 0, &long, b"");
    assert_ok(&r, D0);
    assert!(events(&r, D0).is_empty());
    assert_eq!(s.stats().events_dropped_oversize, 1);
    assert!(r.out.iter().all(|o| o.msg.payload.len() <= 4096));
}

#[test]
fn events_only_to_readers_including_the_moment_access_is_lost() {
    let mut s = store();
    let d1 = dom(&mut s, 2, 1);
    assert_ok(&call(&mut s, d1, 0, MsgType::Watch, &["/sec", "t"]), d1);
    assert!(
        events(&write(&mut s, D0, 0, "/sec", b"1"), d1).is_empty(),
        "n0 node, n0 parent"
    );
    assert_eq!(
        events(
            &call(&mut s, D0, 0, MsgType::SetPerms, &["/sec", "n0", "r1"]),
            d1
        ),
        [ev("/sec", "t")]
    );
    assert_eq!(
        events(&write(&mut s, D0, 0, "/sec", b"2"), d1),
        [ev("/sec", "t")]
    );
    // Revoking read still tells the watcher (old permissions count).
    assert_eq!(
        events(&call(&mut s, D0, 0, MsgType::SetPerms, &["/sec", "n0"]), d1),
        [ev("/sec", "t")]
    );
    assert!(events(&write(&mut s, D0, 0, "/sec", b"3"), d1).is_empty());
    // A readable parent is enough (and matters for removals).
    assert_ok(
        &call(&mut s, D0, 0, MsgType::SetPerms, &["/sec", "n0", "r1"]),
        D0,
    );
    assert_ok(&write(&mut s, D0, 0, "/sec/hidden", b""), D0);
    assert_ok(
        &call(&mut s, D0, 0, MsgType::SetPerms, &["/sec/hidden", "n0"]),
        D0,
    );
    assert_eq!(
        events(&call(&mut s, D0, 0, MsgType::Rm, &["/sec/hidden"]), d1),
        [ev("/sec/hidden", "t")]
    );
}

#[test]
fn special_watches_only_to_privileged() {
    let mut s = store();
    let d1 = dom(&mut s, 2, 1);
    assert_ok(
        &call(&mut s, D0, 0, MsgType::Watch, &["@releaseDomain", "r"]),
        D0,
    );
    assert_ok(
        &call(&mut s, d1, 0, MsgType::Watch, &["@releaseDomain", "r"]),
        d1,
    );
    s.introduce_domain(7);
    let r = s.release_domain(7);
    assert_eq!(events(&r, D0), [ev("@releaseDomain", "r")]);
    assert!(events(&r, d1).is_empty());
    // Special events are never coalesced with each other or deduplicated
    // across calls; a second release fires nothing (not introduced).
    assert!(events(&s.release_domain(7), D0).is_empty());
}

#[test]
fn watch_quota_is_per_connection_and_unprivileged_only() {
    let mut s = store();
    let d1 = dom(&mut s, 2, 1);
    for i in 0..128 {
        assert_ok(
            &call(&mut s, d1, 0, MsgType::Watch, &["/q", &format!("t{i}")]),
            d1,
        );
    }
    assert_err(
        &call(&mut s, d1, 0, MsgType::Watch, &["/q", "t128"]),
        d1,
        XsError::E2BIG,
    );
    assert_eq!(s.stats().quota_hits.watches, 1);
    for i in 0..200 {
        assert_ok(
            &call(&mut s, D0, 0, MsgType::Watch, &["/q", &format!("t{i}")]),
            D0,
        );
    }
    assert_eq!(s.stats().watches, 328);
}

#[test]
fn reset_watches_drops_watches_and_transactions() {
    let mut s = store();
    let d1 = dom(&mut s, 2, 1);
    assert_ok(&call(&mut s, d1, 0, MsgType::Watch, &["/a", "t"]), d1);
    let t = start(&mut s, d1);
    assert_ok(&call(&mut s, d1, 0, MsgType::ResetWatches, &[""]), d1);
    assert_eq!(s.stats().watches, 0);
    assert_eq!(s.stats().transactions, 0);
    assert_err(&end(&mut s, d1, t, true), d1, XsError::ENOENT);
    assert!(events(&write(&mut s, D0, 0, "/a", b""), d1).is_empty());
}

#[test]
fn disconnect_aborts_transactions_and_drops_watches_only() {
    let mut s = store();
    let d1 = dom(&mut s, 2, 1);
    assert_ok(&call(&mut s, D0, 0, MsgType::Watch, &["/a", "t"]), D0);
    assert_ok(&call(&mut s, d1, 0, MsgType::Watch, &["/", "t"]), d1);
    let t = start(&mut s, D0);
    assert_ok(&write(&mut s, D0, t, "/a", b"x"), D0);
    s.disconnect(D0);
    s.disconnect(D0);
    let st = s.stats();
    assert_eq!((st.watches, st.transactions, st.connections), (1, 0, 1));
    assert!(s.is_introduced(0));
    s.check().unwrap();
    assert_eq!(read(&mut s, d1, 0, "/a"), Err(XsError::EACCES));
    s.connect(D0, 0, true);
    assert_eq!(
        read(&mut s, D0, 0, "/a"),
        Err(XsError::ENOENT),
        "nothing was applied"
    );
}

#[test]
fn failed_writes_fire_nothing() {
    let mut s = store();
    let d1 = dom(&mut s, 2, 1);
    assert_ok(&call(&mut s, D0, 0, MsgType::Mkdir, &["/a"]), D0);
    assert_ok(&call(&mut s, D0, 0, MsgType::Watch, &["/a", "t"]), D0);
    let r = write(&mut s, d1, 0, "/a/b", b"x");
    assert_err(&r, d1, XsError::EACCES);
    assert_eq!(r.out.len(), 1);
    assert!(r.changes.is_empty());
}

// ---------------------------------------------------------- transactions

#[test]
fn transaction_ids_count_per_connection() {
    let mut s = store();
    let d1 = dom(&mut s, 2, 1);
    assert_eq!(start(&mut s, D0), 1);
    assert_eq!(start(&mut s, D0), 2);
    assert_eq!(start(&mut s, d1), 1);
    assert_ok(&end(&mut s, D0, 1, false), D0);
    assert_eq!(start(&mut s, D0), 3);
}

#[test]
fn transaction_snapshot_and_own_writes() {
    let mut s = store();
    assert_ok(&write(&mut s, D0, 0, "/s", b"v1"), D0);
    let t = start(&mut s, D0);
    assert_eq!(read(&mut s, D0, t, "/s"), Ok(b"v1".to_vec()));
    assert_ok(&write(&mut s, D0, 0, "/s", b"v2"), D0);
    assert_eq!(
        read(&mut s, D0, t, "/s"),
        Ok(b"v1".to_vec()),
        "outside commits invisible"
    );
    assert_ok(&write(&mut s, D0, t, "/n/m", b"own"), D0);
    assert_eq!(read(&mut s, D0, t, "/n/m"), Ok(b"own".to_vec()));
    assert_eq!(read(&mut s, D0, 0, "/n/m"), Err(XsError::ENOENT));
    assert_err(&end(&mut s, D0, t, true), D0, XsError::EAGAIN);
    assert_eq!(
        read(&mut s, D0, 0, "/n"),
        Err(XsError::ENOENT),
        "nothing applied"
    );
    assert_eq!(read(&mut s, D0, 0, "/s"), Ok(b"v2".to_vec()));
    assert_eq!(s.stats().commit_conflicts, 1);
}

#[test]
fn transaction_end_and_start_argument_rules() {
    let mut s = store();
    let t = start(&mut s, D0);
    assert_err(
        &call(&mut s, D0, t, MsgType::TransactionStart, &[""]),
        D0,
        XsError::EBUSY,
    );
    assert_err(
        &call(&mut s, D0, 99, MsgType::TransactionStart, &[""]),
        D0,
        XsError::ENOENT,
    );
    assert_err(
        &call(&mut s, D0, t, MsgType::TransactionEnd, &["X"]),
        D0,
        XsError::EINVAL,
    );
    assert_err(&raw(&mut s, D0, t, 7, b"T"), D0, XsError::EINVAL);
    assert_err(&raw(&mut s, D0, t, 7, b"T\0\0"), D0, XsError::EINVAL);
    assert_err(
        &call(&mut s, D0, 0, MsgType::TransactionEnd, &["T"]),
        D0,
        XsError::ENOENT,
    );
    assert_err(
        &call(&mut s, D0, 99, MsgType::TransactionEnd, &["T"]),
        D0,
        XsError::ENOENT,
    );
    assert_err(&write(&mut s, D0, 99, "/a", b""), D0, XsError::ENOENT);
    // Still open after the EINVALs.
    assert_ok(&end(&mut s, D0, t, true), D0);
    assert_err(&end(&mut s, D0, t, true), D0, XsError::ENOENT);
}

#[test]
fn commit_events_precede_the_reply_and_abort_fires_nothing() {
    let mut s = store();
    assert_ok(&call(&mut s, D0, 0, MsgType::Watch, &["/a", "token"]), D0);
    let t = start(&mut s, D0);
    let r = write(&mut s, D0, t, "/a", b"hello");
    assert!(events(&r, D0).is_empty());
    assert!(r.changes.is_empty());
    let r = end(&mut s, D0, t, false);
    assert!(events(&r, D0).is_empty());
    assert!(r.changes.is_empty());
    let t = start(&mut s, D0);
    assert_ok(&write(&mut s, D0, t, "/a", b"hello"), D0);
    let r = end(&mut s, D0, t, true);
    assert_eq!(r.out.len(), 2);
    assert_eq!(r.out[0].msg, Message::watch_event(b"/a", b"token"));
    assert_eq!(r.out[1].msg.payload, b"OK\0");
    assert_eq!(r.changes.len(), 1);
}

#[test]
fn transaction_quotas() {
    let mut s = store();
    let d1 = dom(&mut s, 2, 1);
    let ids: Vec<u32> = (0..10).map(|_| start(&mut s, d1)).collect();
    assert_err(
        &call(&mut s, d1, 0, MsgType::TransactionStart, &[""]),
        d1,
        XsError::ENOSPC,
    );
    assert_eq!(s.stats().quota_hits.transactions, 1);
    assert_ok(&end(&mut s, d1, ids[0], false), d1);
    start(&mut s, d1);
    for _ in 0..20 {
        start(&mut s, D0);
    }
}

#[test]
fn transaction_node_limit_fails_the_transaction() {
    let mut s = store();
    home(&mut s, 1);
    let d1 = dom(&mut s, 2, 1);
    let t = start(&mut s, d1);
    // Each read touches one missing node; the first also the home (parent check).
    for i in 0..1023 {
        assert_eq!(read(&mut s, d1, t, &format!("n{i}")), Err(XsError::ENOENT));
    }
    assert_eq!(read(&mut s, d1, t, "n1023"), Err(XsError::ENOSPC));
    assert_eq!(s.stats().quota_hits.transaction_nodes, 1);
    assert_err(&end(&mut s, d1, t, true), d1, XsError::ENOMEM);
    let t = start(&mut s, D0);
    for i in 0..1100 {
        assert_eq!(read(&mut s, D0, t, &format!("/x{i}")), Err(XsError::ENOENT));
    }
    assert_ok(&end(&mut s, D0, t, true), D0);
}

#[test]
fn failed_write_inside_a_transaction_fails_the_commit() {
    let mut s = store();
    home(&mut s, 1);
    let d1 = dom(&mut s, 2, 1);
    let t = start(&mut s, d1);
    assert_ok(&write(&mut s, d1, t, "good", b"1"), d1);
    assert_err(
        &write(&mut s, d1, t, "big", &[b'x'; 2049]),
        d1,
        XsError::ENOSPC,
    );
    let r = end(&mut s, d1, t, true);
    assert_err(&r, d1, XsError::ENOMEM);
    assert!(r.changes.is_empty());
    assert_eq!(
        read(&mut s, D0, 0, "/local/domain/1/good"),
        Err(XsError::ENOENT)
    );
    // A permission failure, by contrast, leaves the transaction usable.
    let t = start(&mut s, d1);
    assert_err(&write(&mut s, d1, t, "/tool/x", b"1"), d1, XsError::EACCES);
    assert_ok(&write(&mut s, d1, t, "good", b"1"), d1);
    assert_ok(&end(&mut s, d1, t, true), d1);
}

#[test]
fn rm_and_recreate_inside_a_transaction_commits_the_view() {
    let mut s = store();
    assert_ok(&write(&mut s, D0, 0, "/t/a/x", b"1"), D0);
    assert_ok(&write(&mut s, D0, 0, "/t/b", b"2"), D0);
    assert_ok(&call(&mut s, D0, 0, MsgType::Watch, &["/t", "w"]), D0);
    let t = start(&mut s, D0);
    assert_ok(&call(&mut s, D0, t, MsgType::Rm, &["/t/a"]), D0);
    assert_ok(&write(&mut s, D0, t, "/t/c", b"3"), D0);
    assert_ok(&write(&mut s, D0, t, "/t/a", b"new"), D0);
    assert_eq!(
        payload(&call(&mut s, D0, t, MsgType::Directory, &["/t"]), D0),
        b"b\0c\0a\0"
    );
    let r = end(&mut s, D0, t, true);
    assert_ok(&r, D0);
    assert_eq!(
        payload(&call(&mut s, D0, 0, MsgType::Directory, &["/t"]), D0),
        b"b\0c\0a\0"
    );
    assert_eq!(read(&mut s, D0, 0, "/t/a/x"), Err(XsError::ENOENT));
    assert_eq!(
        events(&r, D0),
        [ev("/t/a", "w"), ev("/t/c", "w")],
        "first-access order; the removed child /t/a/x fires only exact watches"
    );
    // The journal reproduces it.
    let rebuilt = replay(&s.dump());
    assert_eq!(dump_of(&rebuilt), dump_of(&s));
}

#[test]
fn quota_applies_at_commit() {
    let mut s = store_with(Quotas {
        nodes_per_domain: 4,
        ..Quotas::default()
    });
    home(&mut s, 1);
    let d1 = dom(&mut s, 2, 1);
    assert_ok(&write(&mut s, d1, 0, "p", b""), d1);
    assert_ok(&write(&mut s, d1, 0, "q", b""), d1);
    assert_eq!(s.nodes_owned(1), 3);
    let t1 = start(&mut s, d1);
    let t2 = start(&mut s, d1);
    assert_ok(&write(&mut s, d1, t1, "p/x", b""), d1);
    assert_ok(&write(&mut s, d1, t2, "q/y", b""), d1);
    assert_ok(&end(&mut s, d1, t1, true), d1);
    assert_err(&end(&mut s, d1, t2, true), d1, XsError::ENOSPC);
    assert_eq!(s.nodes_owned(1), 4);
    // Within a transaction the view's own removals make room.
    let t = start(&mut s, d1);
    assert_ok(&call(&mut s, d1, t, MsgType::Rm, &["p"]), d1);
    assert_ok(&write(&mut s, d1, t, "r", b""), d1);
    assert_ok(&write(&mut s, d1, t, "z", b""), d1);
    assert_err(&write(&mut s, d1, t, "zz", b""), d1, XsError::ENOSPC);
    assert_err(&end(&mut s, d1, t, true), d1, XsError::ENOMEM);
}

// ---------------------------------------------------------------- quotas

#[test]
fn node_and_size_quotas_are_unprivileged_only() {
    let mut s = store_with(Quotas {
        nodes_per_domain: 3,
        ..Quotas::default()
    });
    home(&mut s, 1);
    let d1 = dom(&mut s, 2, 1);
    assert_ok(&write(&mut s, d1, 0, "a/b", b""), d1);
    assert_eq!(s.nodes_owned(1), 3);
    let r = write(&mut s, d1, 0, "c", b"");
    assert_err(&r, d1, XsError::ENOSPC);
    assert!(r.changes.is_empty());
    assert_ok(&write(&mut s, d1, 0, "a/b", b"update is fine"), d1);
    assert_ok(&call(&mut s, d1, 0, MsgType::Rm, &["a/b"]), d1);
    assert_ok(&write(&mut s, d1, 0, "c", b""), d1);
    assert_eq!(s.stats().quota_hits.nodes, 1);
    for i in 0..20 {
        assert_ok(&write(&mut s, D0, 0, &format!("/many/{i}"), b""), D0);
    }

    let mut s = store();
    home(&mut s, 1);
    let d1 = dom(&mut s, 2, 1);
    assert_ok(&write(&mut s, d1, 0, "v", &[b'x'; 2048]), d1);
    assert_err(
        &write(&mut s, d1, 0, "v", &[b'x'; 2049]),
        d1,
        XsError::ENOSPC,
    );
    assert_err(
        &write(&mut s, d1, 0, "w", &[b'x'; 2049]),
        d1,
        XsError::ENOSPC,
    );
    assert_eq!(s.stats().quota_hits.node_size, 2);
    assert_ok(
        &write(&mut s, D0, 0, "/local/domain/1/v", &[b'x'; 4000]),
        D0,
    );
}

// ------------------------------------------------------- domains / release

#[test]
fn introduce_and_release_messages() {
    let mut s = store();
    assert_ok(
        &call(&mut s, D0, 0, MsgType::Watch, &["@introduceDomain", "i"]),
        D0,
    );
    assert_ok(
        &call(&mut s, D0, 0, MsgType::Watch, &["@releaseDomain", "r"]),
        D0,
    );
    let r = call(&mut s, D0, 0, MsgType::Introduce, &["5", "0", "5"]);
    assert_eq!(
        r.out[0].msg,
        Message::watch_event(b"@introduceDomain", b"i")
    );
    assert_eq!(r.out[1].msg.payload, b"OK\0");
    let r = call(&mut s, D0, 0, MsgType::Introduce, &["5", "0", "5"]);
    assert_eq!(r.out.len(), 1, "already introduced: no event");
    assert_err(
        &call(&mut s, D0, 0, MsgType::Introduce, &["6", "0", "0"]),
        D0,
        XsError::EINVAL,
    );
    assert_err(
        &call(&mut s, D0, 0, MsgType::Introduce, &["6", "0"]),
        D0,
        XsError::EINVAL,
    );
    assert_err(
        &call(&mut s, D0, 0, MsgType::Introduce, &["32752", "0", "1"]),
        D0,
        XsError::EINVAL,
    );
    assert_err(
        &call(&mut s, D0, 0, MsgType::Release, &["0"]),
        D0,
        XsError::EINVAL,
    );
    assert_err(
        &call(&mut s, D0, 0, MsgType::Release, &["9"]),
        D0,
        XsError::ENOENT,
    );
    assert_err(
        &call(&mut s, D0, 0, MsgType::Resume, &["9"]),
        D0,
        XsError::ENOENT,
    );
    assert_ok(&call(&mut s, D0, 0, MsgType::Resume, &["5"]), D0);
    let r = call(&mut s, D0, 0, MsgType::Release, &["5"]);
    assert_eq!(r.out[0].msg, Message::watch_event(b"@releaseDomain", b"r"));
    assert_eq!(r.out[1].msg.payload, b"OK\0");
    assert!(!s.is_introduced(5));
}

#[test]
fn release_removes_owned_nodes_and_strips_permissions() {
    let mut s = store();
    s.introduce_domain(5);
    assert_ok(
        &call(&mut s, D0, 0, MsgType::Mkdir, &["/local/domain/5"]),
        D0,
    );
    assert_ok(
        &call(
            &mut s,
            D0,
            0,
            MsgType::SetPerms,
            &["/local/domain/5", "n0", "r5"],
        ),
        D0,
    );
    assert_ok(
        &call(&mut s, D0, 0, MsgType::Mkdir, &["/local/domain/5/data"]),
        D0,
    );
    assert_ok(
        &call(
            &mut s,
            D0,
            0,
            MsgType::SetPerms,
            &["/local/domain/5/data", "n5"],
        ),
        D0,
    );
    let d5 = dom(&mut s, 2, 5);
    assert_ok(&write(&mut s, d5, 0, "data/x", b"1"), d5);
    assert_ok(&write(&mut s, D0, 0, "/vm/u/name", b"g"), D0);
    assert_ok(
        &call(
            &mut s,
            D0,
            0,
            MsgType::SetPerms,
            &["/vm/u", "n0", "r5", "b7"],
        ),
        D0,
    );
    assert_ok(&write(&mut s, D0, 0, "/other/sub", b""), D0);
    assert_ok(
        &call(&mut s, D0, 0, MsgType::SetPerms, &["/other", "b5"]),
        D0,
    );
    assert_ok(
        &call(&mut s, D0, 0, MsgType::Watch, &["/local/domain/5", "w"]),
        D0,
    );
    assert_ok(
        &call(&mut s, D0, 0, MsgType::Watch, &["@releaseDomain", "r"]),
        D0,
    );
    assert_ok(&call(&mut s, d5, 0, MsgType::Watch, &["data", "mine"]), d5);
    let t5 = start(&mut s, d5);
    assert_eq!(s.nodes_owned(5), 3);

    let r = s.release_domain(5);
    s.check().unwrap();
    assert_eq!(
        events(&r, D0),
        [ev("/local/domain/5/data", "w"), ev("@releaseDomain", "r")]
    );
    assert!(
        events(&r, d5).is_empty(),
        "the released domain's watches are gone"
    );
    assert!(r.changes.contains(&Change::Remove {
        path: "/local/domain/5/data".into()
    }));
    assert!(r.changes.contains(&Change::Remove {
        path: "/other".into()
    }));
    assert_eq!(s.nodes_owned(5), 0);
    assert_eq!(read(&mut s, D0, 0, "/other/sub"), Err(XsError::ENOENT));
    assert_eq!(
        payload(&call(&mut s, D0, 0, MsgType::GetPerms, &["/vm/u"]), D0),
        b"n0\0b7\0"
    );
    assert_eq!(
        payload(
            &call(&mut s, D0, 0, MsgType::GetPerms, &["/local/domain/5"]),
            D0
        ),
        b"n0\0"
    );
    assert_eq!(read(&mut s, D0, 0, "/vm/u/name"), Ok(b"g".to_vec()));
    assert_err(&end(&mut s, d5, t5, true), d5, XsError::ENOENT);
    // The journal records reproduce the tree.
    let rebuilt = replay(&s.dump());
    assert_eq!(dump_of(&rebuilt), dump_of(&s));
    // Releasing again or releasing dom0 does nothing.
    assert_eq!(s.release_domain(5), Response::default());
    assert_eq!(s.release_domain(0), Response::default());
}

// -------------------------------------------------------- dump and replay

#[test]
fn dump_and_journal_replay_reproduce_child_order() {
    let mut s = store();
    let mut journal = Vec::new();
    journal.extend(call(&mut s, D0, 0, MsgType::Rm, &["/local"]).changes);
    journal.extend(write(&mut s, D0, 0, "/local/domain/0/name", b"Domain-0").changes);
    journal.extend(
        call(
            &mut s,
            D0,
            0,
            MsgType::SetPerms,
            &["/local/domain/0", "n0", "r3"],
        )
        .changes,
    );
    assert_eq!(
        payload(&call(&mut s, D0, 0, MsgType::Directory, &["/"]), D0),
        b"tool\0local\0"
    );
    let from_journal = replay(&journal);
    assert_eq!(dump_of(&from_journal), dump_of(&s));
    let from_dump = replay(&s.dump());
    assert_eq!(dump_of(&from_dump), dump_of(&s));
    let mut c = store();
    for ch in s.dump() {
        c.apply(&ch);
    }
    assert_eq!(
        payload(&call(&mut c, D0, 0, MsgType::Directory, &["/"]), D0),
        b"tool\0local\0"
    );
    assert_eq!(c.stats().changes_applied as usize, s.dump().len());
    c.apply(&Change::Remove { path: "/".into() });
    assert_eq!(c.stats().changes_rejected, 1);
}

// ------------------------------------------------ oxenstored scenarios §2.2

/// Scenario 1: ENOENT for a missing node, EACCES once dom0 created it.
/// Deviation: for a missing node under the root (`n0`), C xenstored answers
/// an unprivileged domain EACCES, not oxenstored's ENOENT, because the
/// nearest existing ancestor is unreadable (`errno_from_parents`). Under a
/// readable parent it is ENOENT (last assertion).
#[test]
fn ox_implicit_create() {
    let mut s = store();
    let u = dom(&mut s, 2, 1);
    assert_err(
        &call(&mut s, D0, 0, MsgType::Read, &["/a"]),
        D0,
        XsError::ENOENT,
    );
    assert_err(
        &call(&mut s, u, 0, MsgType::Read, &["/a"]),
        u,
        XsError::EACCES,
    );
    assert_ok(&call(&mut s, D0, 0, MsgType::Write, &["/a/b", "hello"]), D0);
    assert_err(
        &call(&mut s, u, 0, MsgType::Read, &["/a/b"]),
        u,
        XsError::EACCES,
    );
    assert_eq!(
        payload(&call(&mut s, D0, 0, MsgType::Read, &["/a"]), D0),
        b""
    );
    assert_err(
        &call(&mut s, u, 0, MsgType::Read, &["/a"]),
        u,
        XsError::EACCES,
    );
    assert_ok(&call(&mut s, D0, 0, MsgType::SetPerms, &["/a", "r0"]), D0);
    assert_err(
        &call(&mut s, u, 0, MsgType::Read, &["/a/c"]),
        u,
        XsError::ENOENT,
    );
}

/// Scenario 2: getperms(setperms(x)) == x.
#[test]
fn ox_setperms_getperms() {
    let mut s = store();
    assert_ok(&call(&mut s, D0, 0, MsgType::Write, &["/foo", ""]), D0);
    assert_ok(
        &call(
            &mut s,
            D0,
            0,
            MsgType::SetPerms,
            &["/foo", "r5", "w2", "b3"],
        ),
        D0,
    );
    assert_eq!(
        payload(&call(&mut s, D0, 0, MsgType::GetPerms, &["/foo"]), D0),
        b"r5\0w2\0b3\0"
    );
}

/// Scenario 3: Only dom0 may change the owner. Deviation: the owner (dom5) gets
/// C xenstored's EPERM where oxenstored says EACCES.
#[test]
fn ox_setperms_owner() {
    let mut s = store();
    let d2 = dom(&mut s, 2, 2);
    let d5 = dom(&mut s, 3, 5);
    assert_ok(&call(&mut s, D0, 0, MsgType::Write, &["/foo", ""]), D0);
    assert_ok(
        &call(
            &mut s,
            D0,
            0,
            MsgType::SetPerms,
            &["/foo", "r5", "w2", "b3"],
        ),
        D0,
    );
    assert_err(
        &call(
            &mut s,
            d2,
            0,
            MsgType::SetPerms,
            &["/foo", "r2", "w2", "b3"],
        ),
        d2,
        XsError::EACCES,
    );
    assert_err(
        &call(
            &mut s,
            d5,
            0,
            MsgType::SetPerms,
            &["/foo", "r2", "w2", "b3"],
        ),
        d5,
        XsError::EPERM,
    );
    assert_ok(
        &call(
            &mut s,
            D0,
            0,
            MsgType::SetPerms,
            &["/foo", "r2", "w2", "b3"],
        ),
        D0,
    );
}

/// Scenario 4: mkdir inside a transaction; an empty value reads back (as `\0` when
/// written oxenstored-style with a terminating NUL).
#[test]
fn ox_mkdir_and_empty() {
    let mut s = store();
    assert_err(
        &call(&mut s, D0, 0, MsgType::Read, &["/a/b"]),
        D0,
        XsError::ENOENT,
    );
    assert_err(
        &call(&mut s, D0, 0, MsgType::Read, &["/a"]),
        D0,
        XsError::ENOENT,
    );
    let t = start(&mut s, D0);
    assert_ok(
        &call(&mut s, D0, t, MsgType::Mkdir, &["/bench/local/domain/0"]),
        D0,
    );
    assert_ok(
        &call(
            &mut s,
            D0,
            t,
            MsgType::SetPerms,
            &["/bench/local/domain/0", "r5", "w2", "b3"],
        ),
        D0,
    );
    assert_eq!(
        payload(
            &call(&mut s, D0, t, MsgType::Read, &["/bench/local/domain/0"]),
            D0
        ),
        b""
    );
    assert_ok(&end(&mut s, D0, t, true), D0);
    assert_eq!(
        payload(
            &call(&mut s, D0, 0, MsgType::GetPerms, &["/bench/local/domain/0"]),
            D0
        ),
        b"r5\0w2\0b3\0"
    );
    assert_ok(&call(&mut s, D0, 0, MsgType::Write, &["/a", ""]), D0);
    assert_eq!(
        payload(&call(&mut s, D0, 0, MsgType::Read, &["/a"]), D0),
        b"\0"
    );
}

/// Scenario 5: rm of a missing node: OK if the parent exists, else ENOENT.
#[test]
fn ox_rm() {
    let mut s = store();
    assert_ok(&call(&mut s, D0, 0, MsgType::Rm, &["/a"]), D0);
    assert_err(
        &call(&mut s, D0, 0, MsgType::Rm, &["/a/b"]),
        D0,
        XsError::ENOENT,
    );
    assert_ok(&call(&mut s, D0, 0, MsgType::Write, &["/a", "hello"]), D0);
    assert_ok(&call(&mut s, D0, 0, MsgType::Rm, &["/a/b"]), D0);
}

/// Scenario 6: SET_TARGET grants the target's access; a domU cannot call it. (C
/// needs both domains introduced.)
#[test]
fn ox_set_target() {
    let mut s = store();
    let d7 = dom(&mut s, 2, 7);
    assert_ok(&call(&mut s, D0, 0, MsgType::Write, &["/foo", "bar"]), D0);
    assert_ok(
        &call(
            &mut s,
            D0,
            0,
            MsgType::SetPerms,
            &["/foo", "r5", "w2", "b3"],
        ),
        D0,
    );
    assert_err(
        &call(&mut s, d7, 0, MsgType::Write, &["/foo", "bar"]),
        d7,
        XsError::EACCES,
    );
    assert_err(
        &call(&mut s, D0, 0, MsgType::SetTarget, &["7", "5"]),
        D0,
        XsError::ENOENT,
    );
    s.introduce_domain(7);
    s.introduce_domain(5);
    assert_ok(&call(&mut s, D0, 0, MsgType::SetTarget, &["7", "5"]), D0);
    assert_err(
        &call(&mut s, d7, 0, MsgType::SetTarget, &["7", "5"]),
        d7,
        XsError::EACCES,
    );
    assert_ok(&call(&mut s, d7, 0, MsgType::Write, &["/foo", "bar"]), d7);
    assert_err(
        &call(&mut s, D0, 0, MsgType::SetTarget, &["7"]),
        D0,
        XsError::EINVAL,
    );
    // Releasing the target drops the relation.
    s.release_domain(5);
    assert_err(
        &call(&mut s, d7, 0, MsgType::Write, &["/foo", "bar"]),
        d7,
        XsError::EACCES,
    );
}

/// 7a. Transactions are isolated until commit.
#[test]
fn ox_transactions_are_isolated() {
    let mut s = store();
    let t = start(&mut s, D0);
    assert_ok(&call(&mut s, D0, t, MsgType::Write, &["/foo", "bar"]), D0);
    assert_err(
        &call(&mut s, D0, 0, MsgType::Read, &["/foo"]),
        D0,
        XsError::ENOENT,
    );
    assert_ok(&end(&mut s, D0, t, true), D0);
    assert_eq!(
        payload(&call(&mut s, D0, 0, MsgType::Read, &["/foo"]), D0),
        b"bar\0"
    );
}

/// 7b. Independent transactions both commit.
#[test]
fn ox_independent_transactions_coalesce() {
    let mut s = store();
    assert_ok(&call(&mut s, D0, 0, MsgType::Mkdir, &["/a/b"]), D0);
    assert_ok(&call(&mut s, D0, 0, MsgType::Mkdir, &["/1/2"]), D0);
    let t1 = start(&mut s, D0);
    let t2 = start(&mut s, D0);
    assert_ok(&call(&mut s, D0, t1, MsgType::Write, &["/a/b", "foo"]), D0);
    assert_ok(&call(&mut s, D0, t2, MsgType::Write, &["/1/2", "foo"]), D0);
    assert_ok(&end(&mut s, D0, t1, true), D0);
    assert_ok(&end(&mut s, D0, t2, true), D0);
    assert_eq!(
        payload(&call(&mut s, D0, 0, MsgType::Read, &["/a/b"]), D0),
        b"foo\0"
    );
    assert_eq!(
        payload(&call(&mut s, D0, 0, MsgType::Read, &["/1/2"]), D0),
        b"foo\0"
    );
}

/// 7c. Device-creation transactions. Deviation: C xenstored 4.17 compares
/// the generation of every touched node, and both transactions add a child
/// to `/local/domain/0/backend/vbd`, so the second commit gets EAGAIN
/// (oxenstored merges them). The client's retry then succeeds.
#[test]
fn ox_device_create_transactions() {
    let mut s = store();
    for p in [
        "/local/domain/0/backend/vbd",
        "/local/domain/1/device/vbd",
        "/local/domain/2/device/vbd",
    ] {
        assert_ok(&call(&mut s, D0, 0, MsgType::Mkdir, &[p]), D0);
    }
    let tx = |s: &mut Store, d: &str| {
        let t = start(s, D0);
        assert_ok(
            &call(
                s,
                D0,
                t,
                MsgType::Write,
                &[&format!("/local/domain/0/backend/vbd/{d}/51712"), "hello"],
            ),
            D0,
        );
        assert_ok(
            &call(
                s,
                D0,
                t,
                MsgType::Write,
                &[&format!("/local/domain/{d}/device/vbd/51712"), "there"],
            ),
            D0,
        );
        t
    };
    let t1 = tx(&mut s, "1");
    let t2 = tx(&mut s, "2");
    assert_ok(&end(&mut s, D0, t1, true), D0);
    assert_err(&end(&mut s, D0, t2, true), D0, XsError::EAGAIN);
    let t2 = tx(&mut s, "2");
    assert_ok(&end(&mut s, D0, t2, true), D0);
    for (p, v) in [
        ("/local/domain/0/backend/vbd/1/51712", "hello\0"),
        ("/local/domain/1/device/vbd/51712", "there\0"),
        ("/local/domain/0/backend/vbd/2/51712", "hello\0"),
        ("/local/domain/2/device/vbd/51712", "there\0"),
    ] {
        assert_eq!(
            payload(&call(&mut s, D0, 0, MsgType::Read, &[p]), D0),
            v.as_bytes()
        );
    }
}

/// 7d. A real conflict gets EAGAIN and the old value survives.
#[test]
fn ox_transactions_really_do_conflict() {
    let mut s = store();
    assert_ok(&call(&mut s, D0, 0, MsgType::Mkdir, &["/a"]), D0);
    let t = start(&mut s, D0);
    assert_eq!(
        payload(&call(&mut s, D0, t, MsgType::Directory, &["/a"]), D0),
        b""
    );
    assert_ok(&call(&mut s, D0, 0, MsgType::Write, &["/a/b", "hello"]), D0);
    assert_ok(&call(&mut s, D0, t, MsgType::Write, &["/a/b", "there"]), D0);
    assert_err(&end(&mut s, D0, t, true), D0, XsError::EAGAIN);
    assert_eq!(
        payload(&call(&mut s, D0, 0, MsgType::Read, &["/a/b"]), D0),
        b"hello\0"
    );
}

/// 8a. A watch fires once at registration; writes fire, reads do not.
#[test]
fn ox_simple_watches() {
    let mut s = store();
    let d1 = dom(&mut s, 2, 1);
    assert_ok(&call(&mut s, D0, 0, MsgType::Mkdir, &["/a"]), D0);
    assert_ok(&call(&mut s, D0, 0, MsgType::SetPerms, &["/a", "b0"]), D0);
    let r = call(&mut s, D0, 0, MsgType::Watch, &["/a", "token"]);
    assert_eq!(events(&r, D0), [ev("/a", "token")]);
    assert_eq!(
        events(&call(&mut s, D0, 0, MsgType::Write, &["/a", "foo"]), D0),
        [ev("/a", "token")]
    );
    let r = call(&mut s, d1, 0, MsgType::Write, &["/a", "foo"]);
    assert_ok(&r, d1);
    assert_eq!(events(&r, D0), [ev("/a", "token")]);
    for (c, p, want) in [
        (D0, "/a", Ok(b"foo\0".to_vec())),
        (D0, "/a/1", Err(XsError::ENOENT)),
        (d1, "/a", Ok(b"foo\0".to_vec())),
        (d1, "/a/1", Err(XsError::ENOENT)),
    ] {
        let r = call(&mut s, c, 0, MsgType::Read, &[p]);
        assert!(events(&r, D0).is_empty());
        assert_eq!(read(&mut s, c, 0, p), want);
    }
}

/// 8b. Relative watches report relative paths.
#[test]
fn ox_relative_watches() {
    let mut s = store();
    assert_ok(
        &call(&mut s, D0, 0, MsgType::Write, &["/local/domain/0/name", ""]),
        D0,
    );
    assert_ok(
        &call(
            &mut s,
            D0,
            0,
            MsgType::Write,
            &["/local/domain/0/device", ""],
        ),
        D0,
    );
    let r = call(&mut s, D0, 0, MsgType::Watch, &["device", "token"]);
    assert_eq!(events(&r, D0), [ev("device", "token")]);
    let r = call(
        &mut s,
        D0,
        0,
        MsgType::Write,
        &["/local/domain/0/device/vbd", "hello"],
    );
    assert_eq!(events(&r, D0), [ev("device/vbd", "token")]);
    assert_ok(
        &call(&mut s, D0, 0, MsgType::Unwatch, &["device", "token"]),
        D0,
    );
}

/// 8c. No event for a node the watcher cannot read.
#[test]
fn ox_watches_read_perm() {
    let mut s = store();
    let d1 = dom(&mut s, 2, 1);
    assert_eq!(
        events(&call(&mut s, d1, 0, MsgType::Watch, &["/a", "token"]), d1),
        [ev("/a", "token")]
    );
    let r = call(&mut s, D0, 0, MsgType::Write, &["/a", "hello"]);
    assert!(events(&r, d1).is_empty());
    assert_err(
        &call(&mut s, d1, 0, MsgType::Read, &["/a"]),
        d1,
        XsError::EACCES,
    );
}

/// 8d. No event inside an uncommitted or aborted transaction; on commit
/// the event precedes the TRANSACTION_END reply.
#[test]
fn ox_transaction_watches() {
    let mut s = store();
    assert_ok(&call(&mut s, D0, 0, MsgType::Watch, &["/a", "token"]), D0);
    let t = start(&mut s, D0);
    assert!(events(&call(&mut s, D0, t, MsgType::Write, &["/a", "hello"]), D0).is_empty());
    assert!(events(&end(&mut s, D0, t, false), D0).is_empty());
    let t = start(&mut s, D0);
    assert_ok(&call(&mut s, D0, t, MsgType::Write, &["/a", "hello"]), D0);
    let r = end(&mut s, D0, t, true);
    assert_eq!(r.out[0].msg, Message::watch_event(b"/a", b"token"));
    assert_eq!(r.out[1].msg.msg_type, MsgType::TransactionEnd.as_u32());
    assert_eq!(r.out[1].msg.payload, b"OK\0");
}

/// 8e. @introduceDomain / @releaseDomain fire on INTRODUCE / RELEASE, the
/// event queued before the reply; several released domains give one event
/// each. (oxenstored's "depth" variants do not exist in 4.17, which rejects
/// a third WATCH argument — see `ox_watch_depth`.)
#[test]
fn ox_introduce_release_watches() {
    let mut s = store();
    assert_eq!(
        events(
            &call(
                &mut s,
                D0,
                0,
                MsgType::Watch,
                &["@introduceDomain", "token"]
            ),
            D0
        ),
        [ev("@introduceDomain", "token")]
    );
    assert_eq!(
        events(
            &call(&mut s, D0, 0, MsgType::Watch, &["@releaseDomain", "token"]),
            D0
        ),
        [ev("@releaseDomain", "token")]
    );
    let r = call(&mut s, D0, 0, MsgType::Introduce, &["5", "5", "5"]);
    assert_eq!(
        r.out[0].msg,
        Message::watch_event(b"@introduceDomain", b"token")
    );
    assert_eq!(r.out[1].msg.msg_type, MsgType::Introduce.as_u32());
    let r = call(&mut s, D0, 0, MsgType::Release, &["5"]);
    assert_eq!(
        r.out[0].msg,
        Message::watch_event(b"@releaseDomain", b"token")
    );
    assert_eq!(r.out[1].msg.msg_type, MsgType::Release.as_u32());
    for d in [1001, 2001, 2002] {
        s.introduce_domain(d);
    }
    for d in [1001, 2001, 2002] {
        assert_eq!(
            events(&s.release_domain(d), D0),
            [ev("@releaseDomain", "token")]
        );
    }
    // A watch on @releaseDomain/<domid> registers but never fires in 4.17.
    assert_ok(
        &call(&mut s, D0, 0, MsgType::Watch, &["@releaseDomain/5", "t2"]),
        D0,
    );
    s.introduce_domain(5);
    assert_eq!(
        events(&s.release_domain(5), D0),
        [ev("@releaseDomain", "token")]
    );
}

/// 8f. Recursive rm fires the watches of removed children.
#[test]
fn ox_recursive_rm_watch() {
    let mut s = store();
    assert_ok(&call(&mut s, D0, 0, MsgType::Mkdir, &["/a/b/c/d"]), D0);
    assert_ok(
        &call(&mut s, D0, 0, MsgType::Write, &["/a/b/y/z", "hello"]),
        D0,
    );
    assert_eq!(
        events(
            &call(&mut s, D0, 0, MsgType::Watch, &["/a/b/c", "token"]),
            D0
        ),
        [ev("/a/b/c", "token")]
    );
    assert_eq!(
        events(
            &call(&mut s, D0, 0, MsgType::Watch, &["/a/b/y/z", "token"]),
            D0
        ),
        [ev("/a/b/y/z", "token")]
    );
    let r = call(&mut s, D0, 0, MsgType::Rm, &["/a"]);
    assert_eq!(
        events(&r, D0),
        [ev("/a/b/c", "token"), ev("/a/b/y/z", "token")]
    );
}

/// 8g. Duplicate path+token is EEXIST; 4.17 rejects any depth argument
/// (so the negative depth is EINVAL too).
#[test]
fn ox_watch_depth() {
    let mut s = store();
    assert_ok(&call(&mut s, D0, 0, MsgType::Mkdir, &["/a"]), D0);
    assert_ok(&call(&mut s, D0, 0, MsgType::Watch, &["/a", "token"]), D0);
    assert_err(
        &call(&mut s, D0, 0, MsgType::Watch, &["/a", "token"]),
        D0,
        XsError::EEXIST,
    );
    assert_err(
        &call(&mut s, D0, 0, MsgType::Watch, &["/b", "token-1", "-1"]),
        D0,
        XsError::EINVAL,
    );
    assert_err(
        &call(&mut s, D0, 0, MsgType::Watch, &["/a", "token2", "2"]),
        D0,
        XsError::EINVAL,
    );
    assert_err(
        &call(
            &mut s,
            D0,
            0,
            MsgType::Watch,
            &["@releaseDomain", "token", "1"],
        ),
        D0,
        XsError::EINVAL,
    );
}

/// 8h. A failed write fires nothing.
#[test]
fn ox_no_watch_on_error() {
    let mut s = store();
    let d1 = dom(&mut s, 2, 1);
    assert_ok(&call(&mut s, D0, 0, MsgType::Mkdir, &["/a"]), D0);
    assert_eq!(
        events(&call(&mut s, D0, 0, MsgType::Watch, &["/a", "token"]), D0),
        [ev("/a", "token")]
    );
    let r = call(&mut s, d1, 0, MsgType::Write, &["/a/b/y/z", "hello"]);
    assert_err(&r, d1, XsError::EACCES);
    assert!(events(&r, D0).is_empty());
    assert_eq!(
        events(&call(&mut s, D0, 0, MsgType::SetPerms, &["/a", "r1"]), D0),
        [ev("/a", "token")]
    );
    let r = call(&mut s, d1, 0, MsgType::Write, &["/a/b/y/z", "hello"]);
    assert_ok(&r, d1);
    assert_eq!(events(&r, D0), [ev("/a/b/y/z", "token")]);
}

/// 9a. Node accounting: implicit parents count, rm frees recursively.
#[test]
fn ox_quota() {
    let mut s = store();
    let base = s.nodes_owned(0);
    assert_ok(&call(&mut s, D0, 0, MsgType::Write, &["/a", "hello"]), D0);
    assert_eq!(s.nodes_owned(0), base + 1);
    assert_ok(
        &call(&mut s, D0, 0, MsgType::Write, &["/a/b/c", "hello"]),
        D0,
    );
    assert_eq!(s.nodes_owned(0), base + 3);
    assert_ok(&call(&mut s, D0, 0, MsgType::Rm, &["/a/b/c"]), D0);
    assert_eq!(s.nodes_owned(0), base + 2);
    assert_ok(&call(&mut s, D0, 0, MsgType::Rm, &["/a"]), D0);
    assert_eq!(s.nodes_owned(0), base);
    assert_ok(&call(&mut s, D0, 0, MsgType::Rm, &["/a"]), D0);
    assert_eq!(s.nodes_owned(0), base);
}

/// 9b. Transactional accounting applies only on commit.
#[test]
fn ox_quota_transaction() {
    let mut s = store();
    let d1 = dom(&mut s, 2, 1);
    let d2 = dom(&mut s, 3, 2);
    assert_ok(
        &call(&mut s, D0, 0, MsgType::Write, &["/local/domain/1", ""]),
        D0,
    );
    assert_ok(
        &call(
            &mut s,
            D0,
            0,
            MsgType::SetPerms,
            &["/local/domain/1", "r1", "w2", "b3"],
        ),
        D0,
    );
    assert_ok(
        &call(&mut s, D0, 0, MsgType::Write, &["/local/domain/2", ""]),
        D0,
    );
    assert_ok(
        &call(
            &mut s,
            D0,
            0,
            MsgType::SetPerms,
            &["/local/domain/2", "r2", "w2", "b3"],
        ),
        D0,
    );
    assert_ok(
        &call(
            &mut s,
            d1,
            0,
            MsgType::Write,
            &["/local/domain/1/data/test", ""],
        ),
        d1,
    );
    assert_eq!(s.nodes_owned(1), 3);
    assert_ok(
        &call(
            &mut s,
            d1,
            0,
            MsgType::Write,
            &["/local/domain/1/data/test/node0", "node0"],
        ),
        d1,
    );
    assert_eq!(s.nodes_owned(1), 4);
    assert_ok(
        &call(
            &mut s,
            d2,
            0,
            MsgType::Write,
            &["/local/domain/2/data/test", ""],
        ),
        d2,
    );
    assert_eq!(s.nodes_owned(2), 3);
    let t1 = start(&mut s, d1);
    let t2 = start(&mut s, d2);
    assert_ok(
        &call(&mut s, d1, t1, MsgType::Rm, &["/local/domain/1/data/test"]),
        d1,
    );
    assert_ok(
        &call(
            &mut s,
            d2,
            t2,
            MsgType::Write,
            &["/local/domain/2/data/test/node0", "node0"],
        ),
        d2,
    );
    assert_eq!((s.nodes_owned(1), s.nodes_owned(2)), (4, 3));
    assert_ok(&end(&mut s, d1, t1, true), d1);
    assert_ok(&end(&mut s, d2, t2, true), d2);
    assert_eq!((s.nodes_owned(1), s.nodes_owned(2)), (2, 4));
}

/// 9c. Node-count quota (C: ENOSPC where oxenstored says EQUOTA), raised at
/// run time through CONTROL `quota set`.
#[test]
fn ox_quota_maxent() {
    let mut s = store_with(Quotas {
        nodes_per_domain: 2,
        ..Quotas::default()
    });
    let d1 = dom(&mut s, 2, 1);
    assert_ok(
        &call(&mut s, D0, 0, MsgType::Write, &["/local/domain/1", ""]),
        D0,
    );
    assert_ok(
        &call(&mut s, D0, 0, MsgType::SetPerms, &["/local/domain/1", "r1"]),
        D0,
    );
    assert_ok(&call(&mut s, d1, 0, MsgType::Write, &["first", "post"]), d1);
    assert_err(
        &call(&mut s, d1, 0, MsgType::Write, &["a", "hello"]),
        d1,
        XsError::ENOSPC,
    );
    assert_ok(
        &call(
            &mut s,
            D0,
            0,
            MsgType::Control,
            &["quota", "set", "nodes", "3"],
        ),
        D0,
    );
    assert_ok(&call(&mut s, d1, 0, MsgType::Write, &["a", "hello"]), d1);
    assert_ok(&call(&mut s, d1, 0, MsgType::Write, &["a", "there"]), d1);
    assert_err(
        &call(&mut s, d1, 0, MsgType::Write, &["b", "hello"]),
        d1,
        XsError::ENOSPC,
    );
}

// ------------------------------------------- test-xenstore.c (§2.1) cases

#[test]
fn xt_read_write_1_and_2000_bytes() {
    let mut s = store();
    for len in [1usize, 2000] {
        let value: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
        let p = format!("/xt/rw{len}");
        assert_ok(&write(&mut s, D0, 0, &p, &value), D0);
        assert_eq!(read(&mut s, D0, 0, &p), Ok(value));
    }
}

#[test]
fn xt_dir_and_rm() {
    let mut s = store();
    assert_ok(&call(&mut s, D0, 0, MsgType::Mkdir, &["/xt/dir"]), D0);
    for c in ["c1", "c2", "c3"] {
        assert_ok(&write(&mut s, D0, 0, &format!("/xt/dir/{c}"), b"x"), D0);
    }
    assert_eq!(
        payload(&call(&mut s, D0, 0, MsgType::Directory, &["/xt/dir"]), D0),
        b"c1\0c2\0c3\0"
    );
    assert_ok(&call(&mut s, D0, 0, MsgType::Rm, &["/xt/dir/c1"]), D0);
    assert_eq!(
        payload(&call(&mut s, D0, 0, MsgType::Directory, &["/xt/dir"]), D0),
        b"c2\0c3\0"
    );
    assert_ok(&write(&mut s, D0, 0, "/xt/dir/c2/sub/deeper", b"x"), D0);
    assert_ok(&call(&mut s, D0, 0, MsgType::Rm, &["/xt/dir"]), D0);
    assert_err(
        &call(&mut s, D0, 0, MsgType::Directory, &["/xt/dir"]),
        D0,
        XsError::ENOENT,
    );
    assert_eq!(
        payload(&call(&mut s, D0, 0, MsgType::Directory, &["/xt"]), D0),
        b""
    );
}

#[test]
fn xt_empty_transactions() {
    let mut s = store();
    let t = start(&mut s, D0);
    let r = end(&mut s, D0, t, true);
    assert_ok(&r, D0);
    assert!(r.changes.is_empty());
    let t = start(&mut s, D0);
    assert_ok(&end(&mut s, D0, t, false), D0);
}

#[test]
fn xt_read_modify_write_transactions() {
    let mut s = store();
    assert_ok(&write(&mut s, D0, 0, "/xt/ctr", b"1"), D0);
    let rmw = |s: &mut Store, commit: bool| {
        let t = start(s, D0);
        let v: u32 = String::from_utf8(read(s, D0, t, "/xt/ctr").unwrap())
            .unwrap()
            .parse()
            .unwrap();
        assert_ok(
            &write(s, D0, t, "/xt/ctr", (v + 1).to_string().as_bytes()),
            D0,
        );
        end(s, D0, t, commit)
    };
    assert_ok(&rmw(&mut s, true), D0);
    assert_eq!(read(&mut s, D0, 0, "/xt/ctr"), Ok(b"2".to_vec()));
    assert_ok(&rmw(&mut s, false), D0);
    assert_eq!(read(&mut s, D0, 0, "/xt/ctr"), Ok(b"2".to_vec()));
}

#[test]
fn xt_transaction_conflict_then_retry() {
    let mut s = store();
    assert_ok(&write(&mut s, D0, 0, "/xt/ta", b"0"), D0);
    let other = ConnId(50);
    s.connect(other, 0, true);
    let t = start(&mut s, D0);
    assert_eq!(read(&mut s, D0, t, "/xt/ta"), Ok(b"0".to_vec()));
    assert_ok(&write(&mut s, other, 0, "/xt/ta", b"other"), other);
    assert_ok(&write(&mut s, D0, t, "/xt/ta", b"mine"), D0);
    assert_err(&end(&mut s, D0, t, true), D0, XsError::EAGAIN);
    assert_eq!(read(&mut s, D0, 0, "/xt/ta"), Ok(b"other".to_vec()));
    let t = start(&mut s, D0);
    assert_eq!(read(&mut s, D0, t, "/xt/ta"), Ok(b"other".to_vec()));
    assert_ok(&write(&mut s, D0, t, "/xt/ta", b"mine"), D0);
    assert_ok(&end(&mut s, D0, t, true), D0);
    assert_eq!(read(&mut s, D0, 0, "/xt/ta"), Ok(b"mine".to_vec()));
}

// -------------------------------------------------------- property tests

/// A transaction's view of the whole tree (overlay where touched, committed
/// elsewhere), as `(path, value, perms, children)` in pre-order.
type Flat = Vec<(String, Vec<u8>, PermList, Vec<Box<str>>)>;

fn flat_view(s: &Store, conn: ConnId, tx: u32) -> Flat {
    let t = s.conns.get(&conn).and_then(|c| c.txs.get(&tx));
    let peek = |p: &str| match t {
        Some(t) if t.has(p) => t.node(p),
        _ => s.tree.get(p),
    };
    let mut out = Vec::new();
    let mut stack = vec!["/".to_owned()];
    while let Some(p) = stack.pop() {
        let Some(n) = peek(&p) else { continue };
        for c in n.children.iter().rev() {
            stack.push(path::join(&p, c));
        }
        out.push((p, n.value.clone(), n.perms.clone(), n.children.clone()));
    }
    out
}

#[derive(Debug, Clone)]
enum Op {
    Write(usize, usize, Vec<u8>),
    Mkdir(usize, usize),
    Rm(usize, usize),
    Read(usize, usize),
    Dir(usize, usize),
    DirPart(usize, usize, u16),
    GetPerms(usize, usize),
    SetPerms(usize, usize, Vec<(u8, u16)>),
    Watch(usize, u8),
    Unwatch(usize, u8),
    Start,
    End(usize, bool),
    Reset,
    Introduce(u16),
    Release(u16),
    Raw(u32, usize, Vec<u8>),
}

const PATHS: [&str; 14] = [
    "/a",
    "/a/b",
    "/a/b/c",
    "/a/d",
    "/e",
    "/local/domain/1/x",
    "/local/domain/1/x/y",
    "/local/domain/2/z",
    "x",
    "x/y",
    "/",
    "@releaseDomain",
    "/local",
    "/a//bad",
];

fn op_strategy() -> impl Strategy<Value = Op> {
    let p = 0..PATHS.len();
    let tx = 0usize..4;
    prop_oneof![
        4 => (tx.clone(), p.clone(), proptest::collection::vec(any::<u8>(), 0..8)).prop_map(|(t, p, v)| Op::Write(t, p, v)),
        2 => (tx.clone(), p.clone()).prop_map(|(t, p)| Op::Mkdir(t, p)),
        2 => (tx.clone(), p.clone()).prop_map(|(t, p)| Op::Rm(t, p)),
        2 => (tx.clone(), p.clone()).prop_map(|(t, p)| Op::Read(t, p)),
        1 => (tx.clone(), p.clone()).prop_map(|(t, p)| Op::Dir(t, p)),
        1 => (tx.clone(), p.clone(), any::<u16>()).prop_map(|(t, p, o)| Op::DirPart(t, p, o % 20)),
        1 => (tx.clone(), p.clone()).prop_map(|(t, p)| Op::GetPerms(t, p)),
        2 => (tx.clone(), p.clone(), proptest::collection::vec((0u8..4, 0u16..4), 1..4)).prop_map(|(t, p, e)| Op::SetPerms(t, p, e)),
        2 => (p.clone(), 0u8..3).prop_map(|(p, k)| Op::Watch(p, k)),
        1 => (p.clone(), 0u8..3).prop_map(|(p, k)| Op::Unwatch(p, k)),
        2 => Just(Op::Start),
        3 => (tx, any::<bool>()).prop_map(|(t, c)| Op::End(t, c)),
        1 => Just(Op::Reset),
        1 => (1u16..4).prop_map(Op::Introduce),
        1 => (1u16..4).prop_map(Op::Release),
        1 => (0u32..26, p, proptest::collection::vec(prop_oneof![Just(0u8), any::<u8>(), Just(b'/'), Just(b'a')], 0..12))
            .prop_map(|(t, p, v)| Op::Raw(t, p, v)),
    ]
}

/// Four connections: dom0 socket, a second dom0 socket, domains 1 and 2.
fn prop_store() -> (Store, [ConnId; 4]) {
    let mut s = Store::new(Quotas {
        nodes_per_domain: 6,
        watches_per_conn: 4,
        node_size: 6,
        transactions_per_conn: 2,
        perms_per_node: 2,
        nodes_per_transaction: 8,
    });
    let conns = [ConnId(1), ConnId(2), ConnId(3), ConnId(4)];
    s.connect(conns[0], 0, true);
    s.connect(conns[1], 0, true);
    s.connect(conns[2], 1, false);
    s.connect(conns[3], 2, false);
    for d in [1u16, 2] {
        let p = format!("/local/domain/{d}");
        s.handle(
            conns[0],
            &Message::request(MsgType::Mkdir, 0, &[p.as_bytes()]),
        );
        s.handle(
            conns[0],
            &Message::request(
                MsgType::SetPerms,
                0,
                &[p.as_bytes(), format!("n{d}").as_bytes(), b"r0"],
            ),
        );
    }
    (s, conns)
}

fn run_ops(ops: &[(usize, Op)]) -> Result<StoreStats, TestCaseError> {
    let (mut s, conns) = prop_store();
    let mut journal: Vec<Change> = s.dump();
    let mut open: std::collections::HashMap<ConnId, Vec<u32>> = Default::default();
    for (ci, op) in ops {
        let c = conns[*ci % conns.len()];
        let txs = open.entry(c).or_default().clone();
        let tx_of = |slot: usize| {
            if slot == 0 || txs.is_empty() {
                0
            } else {
                txs[(slot - 1) % txs.len()]
            }
        };
        let p = |i: usize| PATHS[i].as_bytes();
        let mut expect_view = None;
        let msg = match op {
            Op::Write(t, i, v) => {
                let mut payload = p(*i).to_vec();
                payload.push(0);
                payload.extend_from_slice(v);
                Message::new(MsgType::Write, 0, tx_of(*t), payload)
            }
            Op::Mkdir(t, i) => Message::request(MsgType::Mkdir, tx_of(*t), &[p(*i)]),
            Op::Rm(t, i) => Message::request(MsgType::Rm, tx_of(*t), &[p(*i)]),
            Op::Read(t, i) => Message::request(MsgType::Read, tx_of(*t), &[p(*i)]),
            Op::Dir(t, i) => Message::request(MsgType::Directory, tx_of(*t), &[p(*i)]),
            Op::DirPart(t, i, o) => Message::request(
                MsgType::DirectoryPart,
                tx_of(*t),
                &[p(*i), o.to_string().as_bytes()],
            ),
            Op::GetPerms(t, i) => Message::request(MsgType::GetPerms, tx_of(*t), &[p(*i)]),
            Op::SetPerms(t, i, e) => {
                let strs: Vec<Vec<u8>> = e
                    .iter()
                    .map(|(a, d)| format!("{}{}", b"nrwb"[*a as usize] as char, d).into_bytes())
                    .collect();
                let mut args: Vec<&[u8]> = vec![p(*i)];
                args.extend(strs.iter().map(|v| v.as_slice()));
                Message::request(MsgType::SetPerms, tx_of(*t), &args)
            }
            Op::Watch(i, k) => Message::request(MsgType::Watch, 0, &[p(*i), &[b'a' + k]]),
            Op::Unwatch(i, k) => Message::request(MsgType::Unwatch, 0, &[p(*i), &[b'a' + k]]),
            Op::Start => Message::request(MsgType::TransactionStart, 0, &[b""]),
            Op::End(t, commit) => {
                let id = tx_of(*t + 1);
                if *commit && id != 0 {
                    expect_view = Some(flat_view(&s, c, id));
                }
                Message::request(
                    MsgType::TransactionEnd,
                    id,
                    &[if *commit { b"T" } else { b"F" }],
                )
            }
            Op::Reset => Message::request(MsgType::ResetWatches, 0, &[b""]),
            Op::Introduce(d) => Message::request(
                MsgType::Introduce,
                0,
                &[d.to_string().as_bytes(), b"0", b"1"],
            ),
            Op::Release(d) => Message::request(MsgType::Release, 0, &[d.to_string().as_bytes()]),
            Op::Raw(ty, t, payload) => Message {
                msg_type: *ty,
                req_id: 9,
                tx_id: tx_of(*t),
                payload: payload.clone(),
            },
        };
        let r = s.handle(c, &msg);
        // Exactly one reply to the caller, of the request's type or ERROR,
        // with the ids preserved; everything else is a watch event.
        let replies: Vec<&Outgoing> = r.out.iter().filter(|o| o.msg.msg_type != 15).collect();
        prop_assert_eq!(replies.len(), 1);
        let rep = &replies[0];
        prop_assert_eq!(rep.conn, c);
        prop_assert!(rep.msg.msg_type == msg.msg_type || rep.msg.msg_type == 16);
        prop_assert_eq!((rep.msg.req_id, rep.msg.tx_id), (msg.req_id, msg.tx_id));
        for o in &r.out {
            prop_assert!(o.msg.payload.len() <= 4096);
            if o.msg.msg_type == 15 {
                prop_assert_eq!((o.msg.req_id, o.msg.tx_id), (0, 0));
            }
        }
        if let Some(view) = expect_view {
            if rep.msg.error().is_none() {
                prop_assert_eq!(
                    flat_view(&s, c, 0),
                    view,
                    "commit must publish the transaction's view"
                );
            }
        }
        for k in conns {
            let live: Vec<u32> = s
                .conns
                .get(&k)
                .map(|x| x.txs.keys().copied().collect())
                .unwrap_or_default();
            open.insert(k, live);
        }
        journal.extend(r.changes);
        if let Err(e) = s.check() {
            return Err(TestCaseError::fail(format!(
                "check failed after {op:?}: {e}"
            )));
        }
    }
    let from_journal = replay(&journal);
    prop_assert_eq!(from_journal.dump(), s.dump());
    let from_dump = replay(&s.dump());
    prop_assert_eq!(from_dump.dump(), s.dump());
    Ok(s.stats())
}

/// The random sequences really reach the interesting paths (otherwise the
/// property below would pass vacuously).
#[test]
fn random_sequences_cover_commits_conflicts_events_and_quotas() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let strategy = proptest::collection::vec((0usize..4, op_strategy()), 40..80);
    let mut total = StoreStats::default();
    for _ in 0..200 {
        let ops = strategy.new_tree(&mut runner).unwrap().current();
        let st = run_ops(&ops).unwrap();
        total.commits += st.commits;
        total.commit_conflicts += st.commit_conflicts;
        total.commit_failures += st.commit_failures;
        total.aborts += st.aborts;
        total.events_sent += st.events_sent;
        total.events_coalesced += st.events_coalesced;
        total.quota_hits.nodes += st.quota_hits.nodes;
        total.quota_hits.node_size += st.quota_hits.node_size;
        total.quota_hits.watches += st.quota_hits.watches;
        total.quota_hits.transactions += st.quota_hits.transactions;
        total.quota_hits.perms += st.quota_hits.perms;
        total.quota_hits.transaction_nodes += st.quota_hits.transaction_nodes;
    }
    eprintln!("{total:#?}");
    assert!(total.commits > 50, "{total:?}");
    assert!(total.commit_conflicts > 0, "{total:?}");
    assert!(total.commit_failures > 0, "{total:?}");
    assert!(total.aborts > 0, "{total:?}");
    assert!(total.events_sent > 100, "{total:?}");
    let q = &total.quota_hits;
    assert!(
        q.nodes > 0
            && q.node_size > 0
            && q.watches > 0
            && q.transactions > 0
            && q.perms > 0
            && q.transaction_nodes > 0,
        "{q:?}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_operation_sequences_keep_the_store_consistent(
        ops in proptest::collection::vec((0usize..4, op_strategy()), 1..60)
    ) {
        run_ops(&ops)?;
    }

    #[test]
    fn random_bytes_through_the_decoder_into_handle(
        chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..48), 1..24),
        seeds in proptest::collection::vec((0u32..30, 0u32..4, proptest::collection::vec(prop_oneof![Just(0u8), Just(b'/'), Just(b'@'), any::<u8>()], 0..24)), 0..24),
    ) {
        let (mut s, conns) = prop_store();
        // Well-formed frames with random contents, interleaved with garbage.
        let mut bytes = Vec::new();
        for (i, (ty, tx, payload)) in seeds.iter().enumerate() {
            Message { msg_type: *ty, req_id: i as u32, tx_id: *tx, payload: payload.clone() }.encode_into(&mut bytes);
            if let Some(junk) = chunks.get(i) {
                if i % 5 == 4 {
                    bytes.extend_from_slice(junk);
                }
            }
        }
        let mut dec = crate::xenstore::wire::FrameDecoder::new();
        for (i, piece) in bytes.chunks(7).enumerate() {
            dec.push(piece);
            while let Ok(Some(m)) = dec.next_message() {
                let c = conns[i % conns.len()];
                let r = s.handle(c, &m);
                prop_assert!(r.out.iter().all(|o| o.msg.payload.len() <= 4096));
                prop_assert_eq!(r.out.iter().filter(|o| o.conn == c && o.msg.msg_type != 15).count(), 1);
            }
            if let Err(e) = s.check() {
                return Err(TestCaseError::fail(e));
            }
        }
    }
}

/// Rough cost of the hot requests through `handle` (run with
/// `cargo test --release -p hypervisor -- --ignored handle_throughput --nocapture`).
#[test]
#[ignore]
fn handle_throughput() {
    let mut s = store();
    for d in 1..=50u16 {
        for k in [
            "name",
            "domid",
            "device/vif/0/state",
            "device/vif/0/mac",
            "backend/vif/1/0/state",
        ] {
            assert_ok(
                &write(&mut s, D0, 0, &format!("/local/domain/{d}/{k}"), b"4"),
                D0,
            );
        }
    }
    assert_ok(
        &call(
            &mut s,
            D0,
            0,
            MsgType::Watch,
            &["/local/domain/7/device", "w"],
        ),
        D0,
    );
    let read_msg = Message::request(MsgType::Read, 0, &[b"/local/domain/25/device/vif/0/state"]);
    let mut write_payload = b"/local/domain/25/device/vif/0/state\0".to_vec();
    write_payload.extend_from_slice(b"4");
    let write_msg = Message::new(MsgType::Write, 0, 0, write_payload);
    let n = 200_000;
    for (name, msg) in [("READ", &read_msg), ("WRITE", &write_msg)] {
        let t = std::time::Instant::now();
        let mut bytes = 0;
        for _ in 0..n {
            bytes += s.handle(D0, msg).out.len();
        }
        let ns = t.elapsed().as_nanos() as f64 / n as f64;
        eprintln!("{name}: {ns:.0} ns/request ({bytes} msgs)");
    }
    let t = std::time::Instant::now();
    for i in 0..n / 10 {
        let r = s.handle(D0, &Message::request(MsgType::TransactionStart, 0, &[b""]));
        let p = payload(&r, D0);
        let tx: u32 = std::str::from_utf8(&p[..p.len() - 1])
            .unwrap()
            .parse()
            .unwrap();
        let mut w = b"/local/domain/3/device/vif/0/state\0".to_vec();
        w.extend_from_slice(i.to_string().as_bytes());
        s.handle(D0, &Message::new(MsgType::Write, 0, tx, w));
        let r = s.handle(D0, &Message::request(MsgType::TransactionEnd, tx, &[b"T"]));
        assert_ok(&r, D0);
    }
    eprintln!(
        "tx start+write+commit: {:.0} ns",
        t.elapsed().as_nanos() as f64 / (n / 10) as f64
    );
}

#[test]
fn store_and_messages_can_move_between_threads() {
    fn assert_send<T: Send + 'static>() {}
    assert_send::<Store>();
    assert_send::<Response>();
    assert_send::<Change>();
}
