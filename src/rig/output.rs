//! Reading what the tools a rig drives print: `ip -j addr`, ping's summary, iperf3's
//! JSON. Pure functions over text.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use super::addr::IfAddr;

/// The IPv4 addresses in `ip -j -4 addr show` output, in order.
pub fn ip_addresses(json: &str) -> Vec<IfAddr> {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(json) else {
        return Vec::new();
    };
    v.as_array()
        .into_iter()
        .flatten()
        .flat_map(|link| link["addr_info"].as_array().cloned().unwrap_or_default())
        .filter(|a| a["family"] == "inet")
        .filter_map(|a| {
            let ip: Ipv4Addr = a["local"].as_str()?.parse().ok()?;
            let len = u8::try_from(a["prefixlen"].as_u64()?).ok()?;
            IfAddr::new(ip, len)
        })
        .collect()
}

/// A ping run's summary.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PingStats {
    /// Echo requests sent.
    pub sent: u32,
    /// Replies received.
    pub received: u32,
    /// Average round trip, ms (when any reply came).
    pub rtt_avg_ms: Option<f64>,
}

/// Reads iputils ping's summary: `N packets transmitted, M received, …` and
/// `rtt min/avg/max/mdev = a/b/c/d ms`.
pub fn ping_stats(text: &str) -> Option<PingStats> {
    let line = text.lines().find(|l| l.contains("packets transmitted"))?;
    let mut nums = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|w| !w.is_empty())
        .filter_map(|w| w.parse::<u32>().ok());
    let sent = nums.next()?;
    let received = nums.next()?;
    let rtt_avg_ms = text
        .lines()
        .find(|l| l.starts_with("rtt") || l.starts_with("round-trip"))
        .and_then(|l| l.split('=').nth(1))
        .and_then(|v| v.trim().split('/').nth(1))
        .and_then(|v| v.trim().parse::<f64>().ok());
    Some(PingStats {
        sent,
        received,
        rtt_avg_ms,
    })
}

/// An iperf3 run's result.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct IperfStats {
    /// What the receiver got, bits per second.
    pub received_bps: f64,
    /// What the sender sent, bits per second.
    pub sent_bps: f64,
    /// Retransmissions (TCP).
    pub retransmits: u64,
}

impl IperfStats {
    /// Receiver throughput in Gbit/s.
    pub fn gbps(&self) -> f64 {
        self.received_bps / 1e9
    }
}

/// Reads `iperf3 -J` output of a client: `end.sum_received`/`end.sum_sent`; the
/// error iperf3 reported otherwise.
pub fn iperf_stats(json: &str) -> Result<IperfStats, String> {
    let v: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("iperf3 printed no JSON ({e})"))?;
    if let Some(e) = v["error"].as_str() {
        return Err(format!("iperf3: {e}"));
    }
    let end = &v["end"];
    let received_bps = end["sum_received"]["bits_per_second"]
        .as_f64()
        .ok_or("iperf3 reported no received throughput")?;
    Ok(IperfStats {
        received_bps,
        sent_bps: end["sum_sent"]["bits_per_second"].as_f64().unwrap_or(0.0),
        retransmits: end["sum_sent"]["retransmits"].as_u64().unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn addresses_from_ip_json() {
        let j = r#"[{"ifindex":2,"ifname":"eth0","addr_info":[{"family":"inet","local":"192.168.122.50","prefixlen":24,"scope":"global"},{"family":"inet6","local":"fe80::1","prefixlen":64}]}]"#;
        assert_eq!(ip_addresses(j), vec!["192.168.122.50/24".parse().unwrap()]);
        assert!(ip_addresses("[]").is_empty());
        assert!(ip_addresses("nonsense").is_empty());
    }

    #[test]
    fn ping_summary() {
        let out = "PING 10.0.0.12 (10.0.0.12) 56(84) bytes of data.\n\
            64 bytes from 10.0.0.12: icmp_seq=1 ttl=64 time=1.09 ms\n\n\
            --- 10.0.0.12 ping statistics ---\n\
            3 packets transmitted, 2 received, 33.3333% packet loss, time 201ms\n\
            rtt min/avg/max/mdev = 0.625/0.855/1.085/0.230 ms\n";
        assert_eq!(
            ping_stats(out),
            Some(PingStats {
                sent: 3,
                received: 2,
                rtt_avg_ms: Some(0.855)
            })
        );
        let lost = "--- x ping statistics ---\n1 packets transmitted, 0 received, +1 errors, 100% packet loss, time 0ms\n";
        assert_eq!(
            ping_stats(lost),
            Some(PingStats {
                sent: 1,
                received: 0,
                rtt_avg_ms: None
            })
        );
        assert_eq!(ping_stats("connect: Network is unreachable"), None);
    }

    #[test]
    fn iperf_json() {
        let j = r#"{"start":{},"end":{"sum_sent":{"bits_per_second":9.5e9,"retransmits":3},"sum_received":{"bits_per_second":9.4e9}}}"#;
        let s = iperf_stats(j).unwrap();
        assert!((s.gbps() - 9.4).abs() < 1e-9);
        assert_eq!(s.retransmits, 3);
        let e = iperf_stats(
            r#"{"start":{},"end":{},"error":"unable to connect to server: Connection refused"}"#,
        )
        .unwrap_err();
        assert!(e.contains("Connection refused"), "{e}");
        assert!(iperf_stats("").is_err());
    }

    proptest! {
        #[test]
        fn readers_never_panic(s in ".{0,200}") {
            let _ = ip_addresses(&s);
            let _ = ping_stats(&s);
            let _ = iperf_stats(&s);
        }

        #[test]
        fn ping_counts_read_back(sent in 0u32..10_000, recv in 0u32..10_000) {
            let t = format!("{sent} packets transmitted, {recv} received, 0% packet loss, time 5ms\n");
            let s = ping_stats(&t).unwrap();
            prop_assert_eq!((s.sent, s.received), (sent, recv));
        }
    }
}
