//! Debian's xenstore-utils (Xen 4.17) against domnet's xenstored, asserted on their
//! output and exit codes: dom0's privileged socket and a guest's unprivileged one.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{require_root, require_tool, unique, Daemon};

fn out(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
fn err(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn dom0_tools_read_write_ls_list_exists_rm_chmod() {
    require_root();
    for t in [
        "xenstore-read",
        "xenstore-write",
        "xenstore-ls",
        "xenstore-list",
        "xenstore-exists",
        "xenstore-rm",
        "xenstore-chmod",
    ] {
        require_tool(t);
    }
    let d = Daemon::start();
    let s = d.dom0_socket();

    let w = d.xs_tool(
        &s,
        "xenstore-write",
        &["/tool/test/a", "hello", "/tool/test/b", "world"],
    );
    assert!(w.status.success(), "write: {}", err(&w));
    let r = d.xs_tool(&s, "xenstore-read", &["/tool/test/a"]);
    assert!(r.status.success());
    assert_eq!(out(&r), "hello\n");
    // Several paths in one call run in a transaction.
    let r = d.xs_tool(&s, "xenstore-read", &["/tool/test/a", "/tool/test/b"]);
    assert_eq!(out(&r), "hello\nworld\n");

    let r = d.xs_tool(&s, "xenstore-read", &["/tool/test/missing"]);
    assert_eq!(r.status.code(), Some(1));
    assert!(
        err(&r).contains("couldn't read path /tool/test/missing"),
        "{}",
        err(&r)
    );

    let l = d.xs_tool(&s, "xenstore-list", &["/tool/test"]);
    assert!(l.status.success());
    assert_eq!(out(&l), "a\nb\n", "children in creation order");

    let ls = d.xs_tool(&s, "xenstore-ls", &["/tool/test"]);
    assert!(ls.status.success());
    assert_eq!(out(&ls), "a = \"hello\"\nb = \"world\"\n");

    assert!(d
        .xs_tool(&s, "xenstore-exists", &["/tool/test/a"])
        .status
        .success());
    assert_eq!(
        d.xs_tool(&s, "xenstore-exists", &["/tool/test/zz"])
            .status
            .code(),
        Some(1)
    );

    let c = d.xs_tool(&s, "xenstore-chmod", &["/tool/test/a", "n0", "r5"]);
    assert!(c.status.success(), "chmod: {}", err(&c));
    let ls = d.xs_tool(&s, "xenstore-ls", &["-p", "/tool/test"]);
    let line = out(&ls).lines().next().unwrap_or_default().to_string();
    assert!(line.starts_with("a = \"hello\""), "{line}");
    assert!(line.ends_with("(n0,r5)"), "{line}");

    let rm = d.xs_tool(&s, "xenstore-rm", &["/tool/test/a"]);
    assert!(rm.status.success());
    assert_eq!(
        d.xs_tool(&s, "xenstore-exists", &["/tool/test/a"])
            .status
            .code(),
        Some(1)
    );
    // rm of an absent node whose parent exists is fine; removing a subtree works.
    assert!(d
        .xs_tool(&s, "xenstore-rm", &["/tool/test/a"])
        .status
        .success());
    assert!(d
        .xs_tool(&s, "xenstore-rm", &["/tool/test"])
        .status
        .success());
    assert_eq!(
        d.xs_tool(&s, "xenstore-exists", &["/tool/test/b"])
            .status
            .code(),
        Some(1)
    );

    // Escapes are decoded by xenstore-write and re-escaped by xenstore-read.
    // (bytes below 8 come back as octal, others as \xHH — xenstore-read's sanitiser).
    assert!(d
        .xs_tool(&s, "xenstore-write", &["/tool/esc", "a\\tb\\x01\\x10"])
        .status
        .success());
    assert_eq!(
        out(&d.xs_tool(&s, "xenstore-read", &["/tool/esc"])),
        "a\\tb\\001\\x10\n"
    );
    assert_eq!(
        out(&d.xs_tool(&s, "xenstore-read", &["-R", "/tool/esc"])),
        "a\tb\x01\x10",
        "-R prints the raw value without a newline"
    );
}

#[test]
fn dom0_sees_the_standard_domain_tree() {
    require_root();
    require_tool("xenstore-ls");
    let d = Daemon::start();
    let xsguest = &unique("xsguest");
    let id = d.create(xsguest, "");
    let s = d.dom0_socket();
    let ls = d.xs_tool(&s, "xenstore-ls", &["-p", &format!("/local/domain/{id}")]);
    assert!(ls.status.success(), "{}", err(&ls));
    let text = out(&ls);
    assert!(text.contains(&format!("name = \"{xsguest}\"")), "{text}");
    assert!(text.contains(&format!("domid = \"{id}\"")), "{text}");
    let control = text
        .lines()
        .find(|l| l.trim_start().starts_with("shutdown"))
        .unwrap();
    assert!(
        control.ends_with(&format!("(n{id})")),
        "guest-writable: {control}"
    );
    let name = text.lines().find(|l| l.starts_with("name")).unwrap();
    assert!(
        name.ends_with(&format!("(n0,r{id})")),
        "guest-readable: {name}"
    );
    let r = d.xs_tool(&s, "xenstore-read", &["/local/domain/0/name"]);
    assert_eq!(out(&r), "Domain-0\n");
    d.ok(&["destroy", xsguest]);
    let r = d.xs_tool(&s, "xenstore-exists", &[&format!("/local/domain/{id}")]);
    assert_eq!(r.status.code(), Some(1), "home removed on destroy");
}

#[test]
fn guest_socket_is_unprivileged() {
    require_root();
    require_tool("xenstore-write");
    let d = Daemon::start();
    let xsunpriv = &unique("xsunpriv");
    let id = d.create(xsunpriv, "");
    let g = d.domain_socket(xsunpriv);
    assert_eq!(g, d.run_dir.join(format!("xenstored/dom{id}/socket")));
    let dom0 = d.dom0_socket();

    // Reading a dom0-only node: EACCES → "couldn't read path".
    let r = d.xs_tool(&g, "xenstore-read", &["/local/domain/0/name"]);
    assert_eq!(r.status.code(), Some(1));
    assert!(err(&r).contains("couldn't read path"), "{}", err(&r));
    // Its own name is readable (n0,rD).
    let r = d.xs_tool(&g, "xenstore-read", &["name"]);
    assert!(r.status.success(), "relative read of own name: {}", err(&r));
    assert_eq!(out(&r), format!("{xsunpriv}\n"));
    // Writing outside its home fails; inside its writable dirs succeeds.
    let w = d.xs_tool(&g, "xenstore-write", &["/tool/evil", "x"]);
    assert_ne!(w.status.code(), Some(0), "write outside home must fail");
    let w = d.xs_tool(&g, "xenstore-write", &["name", "renamed"]);
    assert_ne!(w.status.code(), Some(0), "name is read-only to the guest");
    let w = d.xs_tool(&g, "xenstore-write", &["data/hello", "hi"]);
    assert!(w.status.success(), "write into data/: {}", err(&w));
    let r = d.xs_tool(
        &dom0,
        "xenstore-read",
        &[&format!("/local/domain/{id}/data/hello")],
    );
    assert_eq!(out(&r), "hi\n");
    let r = d.xs_tool(&dom0, "xenstore-read", &["/tool/evil"]);
    assert_eq!(r.status.code(), Some(1), "nothing written outside the home");
    // chmod by a non-owner fails.
    let c = d.xs_tool(&g, "xenstore-chmod", &["name", "b0"]);
    assert_ne!(c.status.code(), Some(0));
}

#[test]
fn watches_fire_for_xenstore_watch() {
    require_root();
    require_tool("xenstore-watch");
    let d = Daemon::start();
    let s = d.dom0_socket();
    let mut child = Command::new("xenstore-watch")
        .args(["-n", "3", "/tool/w"])
        .env("XENSTORED_PATH", &s)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // The initial event counts.
    assert_eq!(rx.recv_timeout(Duration::from_secs(10)).unwrap(), "/tool/w");
    assert!(d
        .xs_tool(&s, "xenstore-write", &["/tool/w/child", "1"])
        .status
        .success());
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(10)).unwrap(),
        "/tool/w/child"
    );
    assert!(d.xs_tool(&s, "xenstore-rm", &["/tool/w"]).status.success());
    assert_eq!(rx.recv_timeout(Duration::from_secs(10)).unwrap(), "/tool/w");
    let st = child.wait().unwrap();
    assert!(st.success(), "xenstore-watch -n 3 exits after three events");
}
