//! vif lifecycle through the toolstack, in namespaces: the classic Xen walkthrough
//! (create with a vif, network-attach to another bridge, network-list, network-detach),
//! and hotplug scripts that fail or hang.

mod common;

use std::time::Duration;

use common::{
    dhclient_on, guest_ok, guest_sh, require_root, require_tool, unique, wait_for, Daemon, Netns,
    NetnsEtc,
};

fn xs_read(d: &Daemon, path: &str) -> Option<String> {
    let o = d.xs_tool(&d.dom0_socket(), "xenstore-read", &[path]);
    o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).trim_end().to_string())
}

#[test]
fn classic_xen_walkthrough() {
    require_root();
    let dom0 = Netns::new("wk0-");
    let d = Daemon::start_in(&dom0.name);
    d.ok(&["bridge", "add", "xenbr0"]);
    d.ok(&["bridge", "add", "xenbr1"]);
    dom0.sh("ip addr add 10.220.0.1/24 dev xenbr0 && ip addr add 10.221.0.1/24 dev xenbr1");

    let g = unique("wk");
    let id = d.create(&g, "vif = [ 'bridge=xenbr0' ]");
    // The guest sees eth0 with the vif's MAC; the backend is Connected.
    let mac = xs_read(&d, &format!("/local/domain/{id}/device/vif/0/mac")).unwrap();
    let link = guest_ok(&g, "cat /sys/class/net/eth0/address");
    assert_eq!(link.trim(), mac);
    assert!(mac.starts_with("00:16:3e:"), "{mac}");
    assert_eq!(
        xs_read(&d, &format!("/local/domain/0/backend/vif/{id}/0/state")).as_deref(),
        Some("4")
    );
    assert_eq!(
        xs_read(
            &d,
            &format!("/local/domain/0/backend/vif/{id}/0/hotplug-status")
        )
        .as_deref(),
        Some("connected")
    );
    guest_ok(
        &g,
        "ip addr add 10.220.0.2/24 dev eth0 && ip link set eth0 up",
    );
    guest_ok(&g, "ping -c 2 -i 0.2 -W 2 10.220.0.1");

    // network-attach to xenbr1: eth1 appears and passes traffic.
    d.ok(&["network-attach", &g, "bridge=xenbr1"]);
    guest_ok(
        &g,
        "ip addr add 10.221.0.2/24 dev eth1 && ip link set eth1 up",
    );
    guest_ok(&g, "ping -c 2 -i 0.2 -W 2 10.221.0.1");
    let show = d.ok(&["bridge", "show"]);
    assert!(
        show.contains(&format!("vif{id}.0")) && show.contains(&format!("vif{id}.1")),
        "{show}"
    );

    // network-list: two rows in Xen's format, both state 4.
    let list = d.ok(&["network-list", &g]);
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines.len(), 3, "{list}");
    assert!(lines[0]
        .starts_with("Idx BE Mac Addr.         handle state evt-ch   tx-/rx-ring-ref BE-path"));
    for (i, row) in lines[1..].iter().enumerate() {
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cols[0], i.to_string(), "{row}");
        assert_eq!(cols[4], "4", "state 4: {row}");
        assert!(
            cols.last()
                .unwrap()
                .ends_with(&format!("/backend/vif/{id}/{i}")),
            "{row}"
        );
    }

    // network-detach DOM 1: the vif and every xenstore node of it are gone.
    d.ok(&["network-detach", &g, "1"]);
    assert!(xs_read(&d, &format!("/local/domain/{id}/device/vif/1/state")).is_none());
    assert!(xs_read(&d, &format!("/local/domain/0/backend/vif/{id}/1/state")).is_none());
    assert!(xs_read(&d, &format!("/libxl/{id}/device/vif/1/backend")).is_none());
    assert!(wait_for(Duration::from_secs(5), || guest_sh(
        &g,
        "ip link show eth1"
    )
    .status
    .code()
        != Some(0)));
    let show = d.ok(&["bridge", "show"]);
    assert!(!show.contains(&format!("vif{id}.1")), "{show}");
    assert_eq!(d.ok(&["network-list", &g]).lines().count(), 2);
    // eth0 still works.
    guest_ok(&g, "ping -c 1 -W 2 10.220.0.1");
    // Detaching by MAC works too; an unknown device is refused.
    assert_eq!(d.cli(&["network-detach", &g, "7"]).status.code(), Some(1));
    d.ok(&["network-detach", &g, &mac]);
    assert!(
        xs_read(&d, &format!("/local/domain/0/backend/vif/{id}")).is_none(),
        "no debris left"
    );

    // network-attach with ip= to a bridge that serves DHCP (an isolated network): the
    // guest holds exactly that address through DHCP.
    require_tool("dhclient");
    let _etc = NetnsEtc::new(&g);
    let def = d.dir.join("wk.toml");
    std::fs::write(
        &def,
        "name = \"wk\"\nbridge = \"wkbr\"\nforward = \"none\"\naddress = \"10.222.0.1/24\"\n\
         dhcp_start = \"10.222.0.100\"\ndhcp_end = \"10.222.0.150\"\n",
    )
    .unwrap();
    d.ok(&["net", "define", def.to_str().unwrap()]);
    d.ok(&["net", "start", "wk"]);
    d.ok(&["network-attach", &g, "bridge=wkbr", "ip=10.222.0.42"]);
    let list = d.ok(&["network-list", &g]);
    let idx = list
        .lines()
        .skip(1)
        .filter_map(|r| r.split_whitespace().next())
        .filter_map(|i| i.parse::<u32>().ok())
        .max()
        .unwrap_or_else(|| panic!("no vif rows: {list}"));
    assert!(
        wait_for(Duration::from_secs(5), || guest_sh(
            &g,
            &format!("ip link show eth{idx}")
        )
        .status
        .success()),
        "eth{idx} did not appear"
    );
    assert_eq!(dhclient_on(&g, &format!("eth{idx}")), "10.222.0.42/24");
    guest_ok(&g, &format!("ping -c 1 -W 2 -I eth{idx} 10.222.0.1"));

    d.ok(&["destroy", &g]);
    assert!(!std::path::Path::new(&format!("/run/netns/{g}")).exists());
}

#[test]
fn failing_and_hanging_hotplug_scripts_roll_back_completely() {
    require_root();
    let dom0 = Netns::new("hp0-");
    let d = Daemon::start_in(&dom0.name);
    d.ok(&["bridge", "add", "xenbr0"]);
    let g = unique("hp");
    let id = d.create(&g, "");
    let fail = d.dir.join("vif-fail");
    std::fs::write(&fail, "#!/bin/sh\necho 'refusing on purpose' >&2\nexit 1\n").unwrap();
    let hang = d.dir.join("vif-hang");
    std::fs::write(&hang, "#!/bin/sh\nsleep 600\n").unwrap();
    for s in [&fail, &hang] {
        std::process::Command::new("chmod")
            .arg("+x")
            .arg(s)
            .status()
            .unwrap();
    }

    let o = d.cli(&["network-attach", &g, &format!("script={}", fail.display())]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("refusing on purpose"),
        "the user sees the script's error: {err}"
    );
    let check_clean = |what: &str| {
        assert!(
            xs_read(&d, &format!("/local/domain/0/backend/vif/{id}/0/state")).is_none(),
            "{what}: backend dir left"
        );
        assert!(
            xs_read(&d, &format!("/local/domain/{id}/device/vif/0/state")).is_none(),
            "{what}: frontend dir left"
        );
        assert!(
            xs_read(&d, &format!("/libxl/{id}/device/vif/0/backend")).is_none(),
            "{what}: libxl record left"
        );
        let stats = d.ok(&["stats", "--json"]);
        assert!(
            !stats.contains(&format!("\"vif{id}.0\"")),
            "{what}: port left: {stats}"
        );
        assert!(
            wait_for(Duration::from_secs(5), || guest_sh(&g, "ip link show eth0")
                .status
                .code()
                != Some(0)),
            "{what}: eth0 left in the guest"
        );
    };
    check_clean("failing script");

    // A hanging script is killed at the timeout (the test daemon uses 5 s).
    let t0 = std::time::Instant::now();
    let o = d.cli(&["network-attach", &g, &format!("script={}", hang.display())]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("timed out"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(t0.elapsed() < Duration::from_secs(20));
    check_clean("hanging script");

    // The daemon is healthy: a good attach works afterwards.
    d.ok(&["network-attach", &g, "bridge=xenbr0"]);
    assert_eq!(
        xs_read(&d, &format!("/local/domain/0/backend/vif/{id}/0/state")).as_deref(),
        Some("4")
    );
}

#[test]
fn vif_bridge_finds_its_bridge_as_xens_does() {
    require_root();
    let dom0 = Netns::new("vb0-");
    let d = Daemon::start_in(&dom0.name);
    d.ok(&["bridge", "add", "xenbr0"]);
    d.ok(&["bridge", "add", "eth7"]);
    let g = unique("vb");
    let id = d.create(&g, "vif = [ 'bridge=xenbr0' ]");
    let on_bridge = |port: &str| -> Option<String> {
        let rows: serde_json::Value =
            serde_json::from_str(&d.ok(&["bridge", "show", "--json"])).unwrap();
        rows.as_array()?
            .iter()
            .find(|b| {
                b["interfaces"]
                    .as_array()
                    .is_some_and(|i| i.iter().any(|p| p == port))
            })
            .and_then(|b| b["name"].as_str().map(str::to_string))
    };
    assert_eq!(on_bridge(&format!("vif{id}.0")).as_deref(), Some("xenbr0"));

    // A bridge that does not exist: Xen's message, and nothing is left behind.
    let o = d.cli(&["network-attach", &g, "bridge=nosuch"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("Could not find bridge device nosuch"), "{err}");
    assert!(xs_read(&d, &format!("/local/domain/0/backend/vif/{id}/1/state")).is_none());
    assert_eq!(on_bridge(&format!("vif{id}.1")), None);

    // xenbrN missing but ethN a bridge (the 4.x network-bridge naming): ethN it is.
    d.ok(&["network-attach", &g, "bridge=xenbr7"]);
    assert_eq!(on_bridge(&format!("vif{id}.1")).as_deref(), Some("eth7"));
    assert_eq!(
        xs_read(
            &d,
            &format!("/local/domain/0/backend/vif/{id}/1/hotplug-status")
        )
        .as_deref(),
        Some("connected")
    );

    // The backend's key wins over the script's own `bridge` (Xen's
    // xenstore_read_default); offline's delif finds the bridge the vif is on.
    let vif = format!("vif{id}.0");
    d.ok(&["bridge", "delif", "", &vif]);
    assert_eq!(on_bridge(&vif), None);
    d.ok(&["bridge", "addif", "--hotplug", "eth7", &vif]);
    assert_eq!(on_bridge(&vif).as_deref(), Some("xenbr0"));
    // Without a key, the script's bridge; without either, the first bridge.
    let key = format!("/local/domain/0/backend/vif/{id}/0/bridge");
    let rm = d.xs_tool(&d.dom0_socket(), "xenstore-rm", &[&key]);
    assert!(rm.status.success());
    d.ok(&["bridge", "delif", "", &vif]);
    d.ok(&["bridge", "addif", "--hotplug", "eth7", &vif]);
    assert_eq!(on_bridge(&vif).as_deref(), Some("eth7"));
    d.ok(&["bridge", "delif", "", &vif]);
    d.ok(&["bridge", "addif", "--hotplug", "", &vif]);
    let first = serde_json::from_str::<serde_json::Value>(&d.ok(&["bridge", "show", "--json"]))
        .unwrap()[0]["name"]
        .as_str()
        .map(str::to_string);
    assert_eq!(on_bridge(&vif), first);
    // --hotplug is for vifs only; delif "" refuses a port that is on no bridge.
    assert_eq!(
        d.cli(&["bridge", "addif", "--hotplug", "", "nope0"])
            .status
            .code(),
        Some(1)
    );
    d.ok(&["bridge", "delif", "", &vif]);
    assert_eq!(d.cli(&["bridge", "delif", "", &vif]).status.code(), Some(1));
}

#[test]
fn a_vifname_in_use_is_refused_and_the_other_port_survives() {
    require_root();
    let dom0 = Netns::new("vn0-");
    let d = Daemon::start_in(&dom0.name);
    d.ok(&["bridge", "add", "xenbr0"]);
    dom0.sh("ip addr add 10.223.0.1/24 dev xenbr0");
    let a = unique("vna");
    let b = unique("vnb");
    let ida = d.create(&a, "vif = [ 'bridge=xenbr0' ]");
    let idb = d.create(&b, "vif = [ 'bridge=xenbr0' ]");
    guest_ok(
        &a,
        "ip addr add 10.223.0.2/24 dev eth0 && ip link set eth0 up",
    );
    guest_ok(&a, "ping -c 1 -W 2 10.223.0.1");
    // Another domain's vif name, and a bridge's host port name: both refused, naming
    // the name; nothing of the attempt is left, and the owner keeps working.
    for taken in [format!("vif{ida}.0"), "xenbr0".to_string()] {
        let o = d.cli(&[
            "network-attach",
            &b,
            "bridge=xenbr0",
            &format!("vifname={taken}"),
        ]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert!(
            err.contains(&format!("`{taken}` is already in use")),
            "{err}"
        );
        assert!(xs_read(&d, &format!("/local/domain/0/backend/vif/{idb}/1/state")).is_none());
        assert!(guest_sh(&b, "ip link show eth1").status.code() != Some(0));
    }
    let show = d.ok(&["bridge", "show"]);
    assert!(show.contains(&format!("vif{ida}.0")), "{show}");
    guest_ok(&a, "ping -c 1 -W 2 10.223.0.1");
}
