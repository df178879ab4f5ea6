//! Link impairments in the switch (`domnet impair`, what rigs use for delay and loss
//! where the kernel has no netem): a delayed vif adds its delay in both directions, a
//! lossy one loses about what was asked and counts it, lifting restores the link, and
//! bad values are refused naming themselves.

mod common;

use common::{driver, guest_sh, require_root, unique, Daemon, Netns};

/// Average RTT in ms of `count` pings from `ns` to `ip` (None if all were lost).
fn rtt_avg(ns: &str, ip: &str, count: u32) -> Option<f64> {
    let o = guest_sh(ns, &format!("ping -c {count} -i 0.05 -W 1 {ip}"));
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    let line = text.lines().find(|l| l.contains("min/avg/max"))?;
    let nums = line.split('=').nth(1)?.trim();
    nums.split('/').nth(1)?.parse().ok()
}

#[test]
fn delay_loss_and_lifting_on_a_vif() {
    require_root();
    let dom0 = Netns::new("imp0-");
    let d = Daemon::start_in(&dom0.name);
    d.ok(&["bridge", "add", "impbr0"]);
    let a = unique("impa");
    let b = unique("impb");
    let ida = d.create(&a, "vif = [ 'bridge=impbr0' ]");
    d.create(&b, "vif = [ 'bridge=impbr0' ]");
    for (g, ip) in [(&a, "10.77.0.1/24"), (&b, "10.77.0.2/24")] {
        let o = guest_sh(
            g,
            &format!("ip link set lo up && ip addr add {ip} dev eth0 && ip link set eth0 up"),
        );
        assert!(o.status.success(), "{o:?}");
    }
    let port = format!("vif{ida}.0");
    let base = rtt_avg(&a, "10.77.0.2", 5).expect("baseline ping");
    assert!(base < 40.0, "baseline {base} ms");

    // 40 ms each way on a's link: the round trip grows by about 80 ms.
    d.ok(&["impair", &port, "--delay", "40ms"]);
    let slow = rtt_avg(&a, "10.77.0.2", 5).expect("ping through the delay");
    assert!(
        (75.0..200.0).contains(&(slow - base)),
        "rtt {slow} ms against {base} ms"
    );
    assert!(driver(&d, &port, "impair_rx_delayed") >= 5);
    assert!(driver(&d, &port, "impair_tx_delayed") >= 5);

    // 100 % loss: nothing gets through, and it is counted.
    d.ok(&["impair", &port, "--loss", "100%"]);
    assert_eq!(rtt_avg(&a, "10.77.0.2", 3), None);
    assert!(driver(&d, &port, "impair_rx_lost") >= 3);

    // 30 % loss: some pings get through, and the loss is in the right range.
    d.ok(&["impair", &port, "--loss", "30%"]);
    let o = guest_sh(&a, "ping -c 100 -i 0.02 -W 1 10.77.0.2");
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    let received: u32 = text
        .split(", ")
        .find(|p| p.ends_with("received"))
        .and_then(|p| p.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    // Each echo crosses the lossy link twice: ~0.7² = 49 % come back.
    assert!((25..=75).contains(&received), "{text}");

    // Lifted: back to the baseline.
    d.ok(&["impair", &port, "--clear"]);
    let after = rtt_avg(&a, "10.77.0.2", 5).expect("ping after lifting");
    assert!(after < base + 20.0, "rtt {after} ms after lifting");

    // Bad values are refused, naming the value; unknown ports too.
    let o = d.cli(&["impair", &port, "--loss", "150%"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("150%"));
    let o = d.cli(&["impair", &port, "--delay", "1ms", "--jitter", "5ms"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("jitter"));
    let o = d.cli(&["impair", "nosuchport", "--delay", "1ms"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("nosuchport"));
}
