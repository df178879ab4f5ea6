//! The human tables of the rig verbs. Pure: data in, text out.

use super::names::{DOM0, OUTSIDE, UPLINK};
use super::probe::{IperfResult, PingAll};
use super::state::RigState;
use super::teardown::RigStatus;

/// One row of the summary `rig up` prints.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SummaryRow {
    /// Host.
    pub host: String,
    /// Interface in the host.
    pub ifname: String,
    /// Switch port (`-` for the namespaces' own links).
    pub port: String,
    /// What it is attached to.
    pub link: String,
    /// Its addresses.
    pub addresses: Vec<String>,
}

/// The rows: every vif of every domain, then dom0's and the outside's addresses.
pub fn summary_rows(state: &RigState) -> Vec<SummaryRow> {
    let plan = &state.plan;
    let mut rows = Vec::new();
    for d in &plan.domains {
        let rec = state.host(&d.name);
        for v in &d.vifs {
            let vr = rec.and_then(|r| r.vifs.iter().find(|x| x.devid == v.devid));
            rows.push(SummaryRow {
                host: d.name.clone(),
                ifname: v.ifname(),
                port: vr.map(|x| x.port.clone()).unwrap_or_else(|| "-".into()),
                link: v.link.describe(),
                addresses: vr
                    .map(|x| x.addresses.iter().map(|a| a.to_string()).collect())
                    .unwrap_or_default(),
            });
        }
    }
    if let Some(o) = &plan.outside {
        let uplink = plan.bridges.iter().find(|b| b.uplink);
        rows.push(SummaryRow {
            host: DOM0.into(),
            ifname: uplink
                .map(|b| b.name.clone())
                .unwrap_or_else(|| UPLINK.into()),
            port: uplink.map(|b| b.name.clone()).unwrap_or_else(|| "-".into()),
            link: match uplink {
                Some(_) => format!("host port, uplink {UPLINK}"),
                None => "uplink".into(),
            },
            addresses: vec![o.dom0_address.to_string()],
        });
    }
    for b in plan.bridges.iter().filter(|b| b.address.is_some()) {
        rows.push(SummaryRow {
            host: DOM0.into(),
            ifname: b.name.clone(),
            port: b.name.clone(),
            link: "host port".into(),
            addresses: b.address.iter().map(|a| a.to_string()).collect(),
        });
    }
    if let Some(o) = &plan.outside {
        rows.push(SummaryRow {
            host: OUTSIDE.into(),
            ifname: UPLINK.into(),
            port: "-".into(),
            link: "dom0's uplink".into(),
            addresses: vec![o.address.to_string()],
        });
    }
    rows
}

/// Left-aligned columns, two spaces apart.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut width: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = width.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>| -> String {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            let w = width.get(i).copied().unwrap_or(0);
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  "));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    for r in rows {
        out.push_str(&line(r.clone()));
    }
    out
}

/// The summary table.
pub fn summary(state: &RigState) -> String {
    let rows: Vec<Vec<String>> = summary_rows(state)
        .into_iter()
        .map(|r| {
            vec![
                r.host,
                r.ifname,
                r.port,
                r.link,
                if r.addresses.is_empty() {
                    "-".into()
                } else {
                    r.addresses.join(" ")
                },
            ]
        })
        .collect();
    table(&["HOST", "IF", "PORT", "ATTACHED TO", "ADDRESS"], &rows)
}

/// The cell of `from` → `to`: the average RTT when every ping came back, `r/s` when
/// some did, `X` when none, `-` on the diagonal, `.` when the topology gives no path.
fn cell(p: &PingAll, from: &str, to: &str) -> String {
    if from == to {
        return "-".into();
    }
    let rs: Vec<_> = p
        .results
        .iter()
        .filter(|r| r.from == from && r.to == to)
        .collect();
    if rs.is_empty() {
        return ".".into();
    }
    let sent: u32 = rs.iter().map(|r| r.stats.sent).sum();
    let received: u32 = rs.iter().map(|r| r.stats.received).sum();
    if received == 0 {
        "X".into()
    } else if received < sent {
        format!("{received}/{sent}")
    } else {
        let rtts: Vec<f64> = rs.iter().filter_map(|r| r.stats.rtt_avg_ms).collect();
        let avg = rtts.iter().sum::<f64>() / rtts.len().max(1) as f64;
        format!("{avg:.2}ms")
    }
}

/// `pingall`'s matrix (rows ping, columns answer) and mininet's results line.
pub fn pingall(p: &PingAll) -> String {
    let mut header = vec!["from \\ to"];
    header.extend(p.hosts.iter().map(String::as_str));
    let rows: Vec<Vec<String>> = p
        .hosts
        .iter()
        .map(|from| {
            let mut r = vec![from.clone()];
            r.extend(p.hosts.iter().map(|to| cell(p, from, to)));
            r
        })
        .collect();
    let mut out = String::from(
        "*** Ping: testing reachability (RTT avg; X lost, r/s partly lost, . no path by design)\n",
    );
    out.push_str(&table(&header, &rows));
    out.push_str(&results_line(p));
    out
}

/// `*** Results: X% dropped (r/s received)`.
pub fn results_line(p: &PingAll) -> String {
    format!(
        "*** Results: {}% dropped ({}/{} received)\n",
        format_percent(p.dropped_percent()),
        p.received,
        p.sent
    )
}

fn format_percent(x: f64) -> String {
    if x == 0.0 || x == 100.0 || (x - x.round()).abs() < 1e-9 {
        format!("{x:.0}")
    } else {
        format!("{x:.1}")
    }
}

/// Throughput as `9.41 Gbit/s` (with Mbit/s below 1 Gbit/s).
pub fn gbits(bps: f64) -> String {
    if bps < 1e9 {
        format!("{:.3} Gbit/s ({:.1} Mbit/s)", bps / 1e9, bps / 1e6)
    } else {
        format!("{:.2} Gbit/s", bps / 1e9)
    }
}

/// One line per iperf3 run.
pub fn iperf(r: &IperfResult) -> String {
    format!(
        "{} -> {} ({}:{}): {}{}\n",
        r.client,
        r.server,
        r.addr,
        r.port,
        gbits(r.stats.received_bps),
        if r.stats.retransmits > 0 {
            format!(", {} retransmits", r.stats.retransmits)
        } else {
            String::new()
        }
    )
}

/// `rig list`'s table.
pub fn list(rigs: &[RigStatus]) -> String {
    let rows: Vec<Vec<String>> = rigs
        .iter()
        .map(|r| {
            vec![
                r.name.clone(),
                r.condition().to_string(),
                r.daemon_pid
                    .map(|p| p.to_string())
                    .unwrap_or_else(|| "-".into()),
                r.domains.len().to_string(),
                r.source.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    table(&["NAME", "STATE", "DAEMON", "DOMAINS", "FILE"], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rig::output::PingStats;
    use crate::rig::probe::PingResult;

    fn pr(from: &str, to: &str, sent: u32, received: u32) -> PingResult {
        PingResult {
            from: from.into(),
            to: to.into(),
            addr: std::net::Ipv4Addr::new(10, 0, 0, 1),
            stats: PingStats {
                sent,
                received,
                rtt_avg_ms: (received > 0).then_some(0.5),
            },
        }
    }

    #[test]
    fn matrix_marks_each_outcome() {
        let p = PingAll {
            hosts: vec!["a".into(), "b".into(), "c".into()],
            results: vec![pr("a", "b", 3, 3), pr("b", "a", 3, 1), pr("c", "a", 3, 0)],
            sent: 9,
            received: 4,
        };
        let text = pingall(&p);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[1].starts_with("from \\ to  a"), "{text}");
        assert_eq!(
            lines[2].split_whitespace().collect::<Vec<_>>(),
            ["a", "-", "0.50ms", "."]
        );
        assert_eq!(
            lines[3].split_whitespace().collect::<Vec<_>>(),
            ["b", "1/3", "-", "."]
        );
        assert_eq!(
            lines[4].split_whitespace().collect::<Vec<_>>(),
            ["c", "X", ".", "-"]
        );
        assert_eq!(lines[5], "*** Results: 55.6% dropped (4/9 received)");
    }

    #[test]
    fn results_line_like_mininet() {
        let p = PingAll {
            hosts: vec![],
            results: vec![],
            sent: 12,
            received: 12,
        };
        assert_eq!(
            results_line(&p),
            "*** Results: 0% dropped (12/12 received)\n"
        );
    }

    #[test]
    fn summary_lists_vifs_dom0_and_outside() {
        let plan = crate::rig::load_text(
            "[outside]\n[[bridge]]\nname = \"xenbr0\"\nnetdev = \"eth0\"\n[[domain]]\nname = \"web\"\nvif = [ \"bridge=xenbr0,ip=10.0.0.11\" ]\n",
            "t",
            None,
            Some("t"),
        )
        .unwrap();
        let st = RigState::new(plan, None, 0);
        let text = summary(&st);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("HOST"), "{text}");
        assert!(
            lines[1].starts_with("web") && lines[1].contains("xenbr0"),
            "{text}"
        );
        assert!(
            lines[2].starts_with("dom0") && lines[2].contains("10.0.0.1/24"),
            "{text}"
        );
        assert!(
            lines[3].starts_with("outside") && lines[3].contains("10.0.0.254/24"),
            "{text}"
        );
    }

    #[test]
    fn throughput_units() {
        assert_eq!(gbits(9.41e9), "9.41 Gbit/s");
        assert_eq!(gbits(4.9e7), "0.049 Gbit/s (49.0 Mbit/s)");
    }
}
