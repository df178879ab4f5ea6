//! Domain lifecycle through the CLI: create/destroy/list, errors and exit codes.

mod common;

use common::{bin, require_root, unique, Daemon};

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn create_list_destroy_like_xl() {
    require_root();
    let d = Daemon::start();
    let web = unique("web");
    let cfg = d.dir.join("web.cfg");
    std::fs::write(
        &cfg,
        format!("# a guest\nname = \"{web}\"\nmemory = 32\nvcpus = 2\nuuid = \"6a9f2e1c-3b4d-4e5f-8a9b-0c1d2e3f4a5b\"\nkernel = \"/boot/vmlinuz\"\n"),
    )
    .unwrap();
    let out = d.cli(&["create", cfg.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("kernel"),
        "unknown keys are warned about: {}",
        stderr(&out)
    );

    let list = d.ok(&["list"]);
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(
        lines[0],
        "Name                                        ID   Mem VCPUs      State   Time(s)"
    );
    assert!(
        lines[1].starts_with("Domain-0                                     0"),
        "{}",
        lines[1]
    );
    assert!(
        lines[2].starts_with(&format!("{web:<40}     1    32     2     -b----")),
        "{}",
        lines[2]
    );
    // The domain is a network namespace named after it.
    assert!(std::path::Path::new(&format!("/run/netns/{web}")).exists());

    let json: serde_json::Value = serde_json::from_str(&d.ok(&["list", "--json"])).unwrap();
    assert_eq!(json[1]["uuid"], "6a9f2e1c-3b4d-4e5f-8a9b-0c1d2e3f4a5b");
    assert_eq!(json[1]["vcpus"], 2);

    // Duplicate names and uuids are refused, with the offending value named.
    let dup = d.cli(&["create", cfg.to_str().unwrap()]);
    assert_eq!(dup.status.code(), Some(1));
    assert!(stderr(&dup).contains(&web), "{}", stderr(&dup));

    // Reserved domids are refused.
    let res = d.dir.join("res.cfg");
    std::fs::write(
        &res,
        format!("name = \"{}\"\ndomid = 32752\n", unique("res")),
    )
    .unwrap();
    let out = d.cli(&["create", res.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("32752") || stderr(&out).contains("0x7ff0"),
        "{}",
        stderr(&out)
    );

    // A malformed config names the problem.
    let bad = d.dir.join("bad.cfg");
    std::fs::write(&bad, "name = \"x\"\nmemory = \"lots\"\n").unwrap();
    let out = d.cli(&["create", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("memory"), "{}", stderr(&out));

    // Destroy by name; destroying again or dom0 fails with exit 1.
    d.ok(&["destroy", &web]);
    assert!(
        !std::path::Path::new(&format!("/run/netns/{web}")).exists(),
        "namespace removed"
    );
    let again = d.cli(&["destroy", &web]);
    assert_eq!(again.status.code(), Some(1));
    assert!(stderr(&again).contains(&web), "{}", stderr(&again));
    assert_eq!(d.cli(&["destroy", "0"]).status.code(), Some(1));
    let list = d.ok(&["list"]);
    assert_eq!(list.lines().count(), 2, "{list}");

    // Ids are not reused at once.
    let id = d.create(&unique("second"), "");
    assert_eq!(id, 2);
    assert_eq!(
        d.ok(&["xenstore-path"]).trim(),
        d.dom0_socket().to_str().unwrap()
    );
}

#[test]
fn unreachable_daemon_is_exit_3() {
    let out = std::process::Command::new(bin())
        .args(["list"])
        .env("DOMNET_RUN_DIR", "/nonexistent/domnet-run")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(
        stderr(&out).contains("/nonexistent/domnet-run/control.sock"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn second_daemon_on_the_same_run_dir_is_refused() {
    require_root();
    let d = Daemon::start();
    let out = std::process::Command::new(bin())
        .args(["daemon", "--run-dir"])
        .arg(&d.run_dir)
        .arg("--state-dir")
        .arg(&d.state_dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("already running"), "{}", stderr(&out));
    d.ok(&["list"]);
}
