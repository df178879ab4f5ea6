//! The CLI side of each verb: send the request, print the answer like xl does.

use std::path::Path;
use std::process::ExitCode;

use crate::control::{self, CallError, ErrorKind, Request, Response};
use crate::daemon::DomainRow;

/// Exit code: the daemon refused or the operation failed.
pub const EXIT_FAILED: u8 = 1;
/// Exit code: the daemon is not reachable.
pub const EXIT_UNREACHABLE: u8 = 3;
/// Exit code: internal or protocol error.
pub const EXIT_INTERNAL: u8 = 4;

/// Sends `req`, prints warnings and errors; returns the data on success or the exit
/// code to use.
pub fn request(run_dir: &Path, req: &Request) -> Result<serde_json::Value, ExitCode> {
    match control::call(run_dir, req) {
        Ok(Response {
            ok: true,
            data,
            warnings,
            ..
        }) => {
            for w in warnings {
                eprintln!("warning: {w}");
            }
            Ok(data)
        }
        Ok(resp) => {
            for w in resp.warnings {
                eprintln!("warning: {w}");
            }
            eprintln!(
                "domnet: {}",
                resp.error.unwrap_or_else(|| "request failed".into())
            );
            Err(ExitCode::from(match resp.kind {
                Some(ErrorKind::Internal) => EXIT_INTERNAL,
                _ => EXIT_FAILED,
            }))
        }
        Err(e @ CallError::Unreachable { .. }) => {
            eprintln!("domnet: {e}");
            Err(ExitCode::from(EXIT_UNREACHABLE))
        }
        Err(e) => {
            eprintln!("domnet: {e}");
            Err(ExitCode::from(EXIT_INTERNAL))
        }
    }
}

fn decode<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> Result<T, ExitCode> {
    serde_json::from_value(v).map_err(|e| {
        eprintln!("domnet: unexpected answer from the daemon: {e}");
        ExitCode::from(EXIT_INTERNAL)
    })
}

fn done(r: Result<(), ExitCode>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(c) => c,
    }
}

/// `domnet create CFG`.
pub fn create(run_dir: &Path, config: &Path) -> ExitCode {
    done((|| {
        let text = std::fs::read_to_string(config).map_err(|e| {
            eprintln!("domnet: cannot read {}: {e}", config.display());
            ExitCode::from(EXIT_FAILED)
        })?;
        let data = request(
            run_dir,
            &Request::Create {
                config: text,
                path: config.display().to_string(),
            },
        )?;
        let row: DomainRow = decode(data)?;
        println!("Created domain {} (id {})", row.name, row.domid);
        Ok(())
    })())
}

/// `domnet destroy DOM`.
pub fn destroy(run_dir: &Path, domain: &str) -> ExitCode {
    done(
        request(
            run_dir,
            &Request::Destroy {
                domain: domain.to_string(),
            },
        )
        .map(|_| ()),
    )
}

/// xl list's layout: `%-40s %5s %5s %5s %10s %9s` header, rows with the six state
/// letters and CPU time (here: seconds alive) as `%8.1f`.
pub fn format_list(rows: &[DomainRow]) -> String {
    let mut out = format!(
        "{:<40} {:>5} {:>5} {:>5} {:>10} {:>9}\n",
        "Name", "ID", "Mem", "VCPUs", "State", "Time(s)"
    );
    for r in rows {
        out.push_str(&format!(
            "{:<40} {:>5} {:>5} {:>5}     {}  {:>8.1}\n",
            r.name, r.domid, r.mem, r.vcpus, r.state, r.time
        ));
    }
    out
}

/// `domnet list [--json] [DOM…]`.
pub fn list(run_dir: &Path, json: bool, only: &[String]) -> ExitCode {
    done((|| {
        let mut rows: Vec<DomainRow> = decode(request(run_dir, &Request::List)?)?;
        if !only.is_empty() {
            for want in only {
                if !rows
                    .iter()
                    .any(|r| &r.name == want || r.domid.to_string() == *want)
                {
                    eprintln!("domnet: domain `{want}` does not exist");
                    return Err(ExitCode::from(EXIT_FAILED));
                }
            }
            rows.retain(|r| {
                only.iter()
                    .any(|w| *w == r.name || *w == r.domid.to_string())
            });
        }
        if json {
            println!(
                "{}",
                serde_json::to_string_pretty(&rows).unwrap_or_default()
            );
        } else {
            print!("{}", format_list(&rows));
        }
        Ok(())
    })())
}

/// `domnet xenstore-path [DOM]`.
pub fn xenstore_path(run_dir: &Path, domain: Option<String>) -> ExitCode {
    done((|| {
        let path: String = decode(request(run_dir, &Request::XenstorePath { domain })?)?;
        println!("{path}");
        Ok(())
    })())
}

/// `domnet network-attach DOM [ITEM…]`.
pub fn network_attach(run_dir: &Path, domain: String, spec: Vec<String>) -> ExitCode {
    done(request(run_dir, &Request::NetworkAttach { domain, spec }).map(|_| ()))
}

/// xl network-list's layout (xen-networking.md §7; the header has a space after the
/// MAC column that the rows do not).
pub fn format_network_list(rows: &[crate::daemon::VifRow]) -> String {
    let mut out = format!(
        "{:<3} {:<2} {:<17} {:>6} {:>5} {:>6} {:>5}/{:<11} {:<30}\n",
        "Idx", "BE", "Mac Addr.", "handle", "state", "evt-ch", "tx-", "rx-ring-ref", "BE-path"
    );
    for r in rows {
        out.push_str(&format!(
            "{:<3} {:<2} {:<17}{:>6} {:>5} {:>6} {:>5}/{:<11} {:<30}\n",
            r.idx,
            r.backend_id,
            r.mac,
            r.handle,
            r.state,
            r.evtch,
            r.tx_ring_ref,
            r.rx_ring_ref,
            r.be_path
        ));
    }
    out
}

/// `domnet network-list DOM…`.
pub fn network_list(run_dir: &Path, domains: Vec<String>, json: bool) -> ExitCode {
    done((|| {
        let data = request(run_dir, &Request::NetworkList { domains })?;
        if json {
            println!(
                "{}",
                serde_json::to_string_pretty(&data).unwrap_or_default()
            );
            return Ok(());
        }
        let rows: Vec<crate::daemon::VifRow> = decode(data)?;
        print!("{}", format_network_list(&rows));
        Ok(())
    })())
}

/// `domnet net define FILE`.
pub fn net_define(run_dir: &Path, file: &Path) -> ExitCode {
    done((|| {
        let text = std::fs::read_to_string(file).map_err(|e| {
            eprintln!("domnet: cannot read {}: {e}", file.display());
            ExitCode::from(EXIT_FAILED)
        })?;
        request(
            run_dir,
            &Request::NetDefine {
                config: text,
                path: file.display().to_string(),
            },
        )
        .map(|_| ())
    })())
}

/// `domnet net list`: virsh net-list's columns plus the bridge and address.
pub fn net_list(run_dir: &Path, json: bool) -> ExitCode {
    done((|| {
        let data = request(run_dir, &Request::NetList)?;
        if json {
            println!(
                "{}",
                serde_json::to_string_pretty(&data).unwrap_or_default()
            );
            return Ok(());
        }
        let rows: Vec<serde_json::Value> = decode(data)?;
        println!(
            "{:<16} {:<9} {:<10} {:<12} {:<20} {:<5}",
            "Name", "State", "Autostart", "Bridge", "Address", "Forward"
        );
        for r in rows {
            println!(
                "{:<16} {:<9} {:<10} {:<12} {:<20} {:<5}",
                r["name"].as_str().unwrap_or_default(),
                if r["active"].as_bool().unwrap_or(false) {
                    "active"
                } else {
                    "inactive"
                },
                if r["autostart"].as_bool().unwrap_or(false) {
                    "yes"
                } else {
                    "no"
                },
                r["bridge"].as_str().unwrap_or_default(),
                r["address"].as_str().unwrap_or_default(),
                r["forward"].as_str().unwrap_or_default()
            );
        }
        Ok(())
    })())
}

/// `domnet net forward add|del|list NAME [SPEC]`.
pub fn net_forward(run_dir: &Path, action: String, name: String, spec: Option<String>) -> ExitCode {
    done((|| {
        let list = action == "list";
        let data = request(run_dir, &Request::NetForward { name, action, spec })?;
        if list {
            let rows: Vec<String> = decode(data)?;
            for r in rows {
                println!("{r}");
            }
        }
        Ok(())
    })())
}

/// `domnet route show`.
pub fn route_show(run_dir: &Path, json: bool) -> ExitCode {
    done((|| {
        let data = request(run_dir, &Request::RouteShow)?;
        if json {
            println!(
                "{}",
                serde_json::to_string_pretty(&data).unwrap_or_default()
            );
            return Ok(());
        }
        let rows: Vec<serde_json::Value> = decode(data)?;
        println!(
            "{:<16} {:<16} {:>12} {:>12}",
            "PORT", "ROUTER", "RX-PKTS", "TX-PKTS"
        );
        for r in rows {
            println!(
                "{:<16} {:<16} {:>12} {:>12}",
                r["port"].as_str().unwrap_or_default(),
                r["router"].as_str().unwrap_or_default(),
                r["rx_packets"],
                r["tx_packets"]
            );
        }
        Ok(())
    })())
}

/// Verbs whose success needs no output.
pub fn simple(run_dir: &Path, req: Request) -> ExitCode {
    done(request(run_dir, &req).map(|_| ()))
}

/// `domnet stats [PORT] [--json]`: per port rx/tx packets and bytes, then every
/// non-zero drop reason by name (ovs-appctl dpctl/show style).
pub fn stats(run_dir: &Path, port: Option<String>, json: bool) -> ExitCode {
    done((|| {
        let data = request(run_dir, &Request::Stats { port })?;
        if json {
            println!(
                "{}",
                serde_json::to_string_pretty(&data).unwrap_or_default()
            );
            return Ok(());
        }
        let ports: Vec<vswitch::datapath::PortReport> = decode(data["ports"].clone())?;
        print!("{}", format_stats(&ports));
        Ok(())
    })())
}

/// The human layout of `domnet stats`.
pub fn format_stats(ports: &[vswitch::datapath::PortReport]) -> String {
    let mut out = format!(
        "{:<16} {:<10} {:>7} {:>12} {:>14} {:>12} {:>14} {:>9}\n",
        "PORT", "BRIDGE", "CARRIER", "RX-PKTS", "RX-BYTES", "TX-PKTS", "TX-BYTES", "DROPS"
    );
    for p in ports {
        let drops: u64 = p
            .rx_drops
            .iter()
            .chain(p.tx_drops.iter())
            .map(|(_, n)| n)
            .sum();
        out.push_str(&format!(
            "{:<16} {:<10} {:>7} {:>12} {:>14} {:>12} {:>14} {:>9}\n",
            p.name,
            p.bridge.as_deref().unwrap_or("-"),
            if p.carrier { "up" } else { "down" },
            p.rx_packets,
            p.rx_bytes,
            p.tx_packets,
            p.tx_bytes,
            drops
        ));
        for (reason, n) in &p.rx_drops {
            out.push_str(&format!("    rx drop {reason}: {n}\n"));
        }
        for (reason, n) in &p.tx_drops {
            out.push_str(&format!("    tx drop {reason}: {n}\n"));
        }
        for (name, n) in p.driver.iter().filter(|(_, n)| *n > 0) {
            out.push_str(&format!("    {name}: {n}\n"));
        }
    }
    out
}

/// `domnet bridge show`: brctl's layout.
pub fn bridge_show(run_dir: &Path, json: bool) -> ExitCode {
    done((|| {
        let data = request(run_dir, &Request::BridgeShow)?;
        if json {
            println!(
                "{}",
                serde_json::to_string_pretty(&data).unwrap_or_default()
            );
            return Ok(());
        }
        let rows: Vec<serde_json::Value> = decode(data)?;
        println!("bridge name\tbridge id\t\tSTP enabled\tinterfaces");
        for r in rows {
            let ifs: Vec<String> = decode(r["interfaces"].clone())?;
            let mut first = true;
            print!(
                "{}\t\t{}\t{}\t\t",
                r["name"].as_str().unwrap_or_default(),
                r["id"].as_str().unwrap_or_default(),
                if r["stp"].as_bool().unwrap_or(false) {
                    "yes"
                } else {
                    "no"
                }
            );
            if ifs.is_empty() {
                println!();
            }
            for i in ifs {
                if first {
                    println!("{i}");
                    first = false;
                } else {
                    println!("\t\t\t\t\t\t\t{i}");
                }
            }
        }
        Ok(())
    })())
}

/// `domnet fdb show BRIDGE`: ovs-appctl fdb/show's columns, ports by name.
pub fn fdb_show(run_dir: &Path, bridge: &str, json: bool) -> ExitCode {
    done((|| {
        let data = request(
            run_dir,
            &Request::FdbShow {
                bridge: bridge.to_string(),
            },
        )?;
        if json {
            println!(
                "{}",
                serde_json::to_string_pretty(&data).unwrap_or_default()
            );
            return Ok(());
        }
        let rows: Vec<vswitch::datapath::FdbEntryReport> = decode(data)?;
        let w = rows.iter().map(|r| r.port.len()).max().unwrap_or(4).max(4);
        println!("{:>w$}  VLAN  MAC                Age", "port");
        for r in rows {
            let age = if r.is_static {
                "static".to_string()
            } else {
                format!("{}", r.age as u64)
            };
            println!("{:>w$}  {:>4}  {}  {:>3}", r.port, r.vlan, r.mac, age);
        }
        Ok(())
    })())
}

/// `domnet network-bridge start|stop|status [bridge=B] [netdev=N]`.
pub fn network_bridge(run_dir: &Path, action: &str, args: &[String], legacy: bool) -> ExitCode {
    done((|| {
        let mut bridge = "xenbr0".to_string();
        let mut netdev = None;
        for a in args {
            match a.split_once('=') {
                Some(("bridge", v)) => bridge = v.to_string(),
                Some(("netdev", v)) => netdev = Some(v.to_string()),
                _ => {
                    eprintln!("domnet: network-bridge: unknown argument `{a}` (expected bridge=NAME or netdev=NIC)");
                    return Err(ExitCode::from(2));
                }
            }
        }
        let data = request(
            run_dir,
            &Request::NetworkBridge {
                action: action.to_string(),
                bridge,
                netdev,
                legacy_renames: legacy,
            },
        )?;
        if action == "status" {
            println!(
                "{}",
                serde_json::to_string_pretty(&data).unwrap_or_default()
            );
        } else if data["already"].as_bool() == Some(true) {
            eprintln!("domnet: nothing to do ({action} already in effect)");
        }
        Ok(())
    })())
}

/// `domnet capture PORT [-w FILE] [-c N]`: pcap to a file or stdout.
pub fn capture(
    run_dir: &Path,
    port: String,
    file: Option<std::path::PathBuf>,
    count: Option<u64>,
) -> ExitCode {
    done((|| {
        let (resp, mut stream) =
            match control::call_stream(run_dir, &Request::Capture { port, count }) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("domnet: {e}");
                    return Err(ExitCode::from(EXIT_UNREACHABLE));
                }
            };
        if !resp.ok {
            eprintln!("domnet: {}", resp.error.unwrap_or_default());
            return Err(ExitCode::from(EXIT_FAILED));
        }
        let mut out: Box<dyn std::io::Write> = match &file {
            Some(f) => Box::new(std::fs::File::create(f).map_err(|e| {
                eprintln!("domnet: cannot write {}: {e}", f.display());
                ExitCode::from(EXIT_FAILED)
            })?),
            None => Box::new(std::io::stdout()),
        };
        match std::io::copy(&mut stream, &mut out) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
            Err(e) => {
                eprintln!("domnet: capture: {e}");
                Err(ExitCode::from(EXIT_FAILED))
            }
        }
    })())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_list_matches_xl_layout() {
        let row = crate::daemon::VifRow {
            idx: 0,
            backend_id: 0,
            mac: "00:16:3e:01:02:03".into(),
            handle: 0,
            state: 4,
            evtch: 10,
            tx_ring_ref: 8,
            rx_ring_ref: 9,
            be_path: "/local/domain/0/backend/vif/1/0".into(),
            backend_state: 4,
            vif: "vif1.0".into(),
            bridge: "xenbr0".into(),
        };
        let out = format_network_list(&[row]);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[0],
            format!(
                "Idx BE Mac Addr.         handle state evt-ch   tx-/rx-ring-ref BE-path{}",
                " ".repeat(23)
            )
        );
        assert_eq!(
            lines[1].trim_end(),
            "0   0  00:16:3e:01:02:03     0     4     10     8/9           /local/domain/0/backend/vif/1/0"
        );
    }

    #[test]
    fn list_matches_xl_layout() {
        let rows = vec![
            DomainRow {
                name: "Domain-0".into(),
                domid: 0,
                uuid: String::new(),
                mem: 0,
                vcpus: 1,
                state: "r-----".into(),
                time: 12.34,
            },
            DomainRow {
                name: "guest".into(),
                domid: 7,
                uuid: String::new(),
                mem: 128,
                vcpus: 2,
                state: "-b----".into(),
                time: 3.0,
            },
        ];
        let out = format_list(&rows);
        let lines: Vec<_> = out.lines().collect();
        assert_eq!(
            lines[0],
            "Name                                        ID   Mem VCPUs      State   Time(s)"
        );
        assert_eq!(
            lines[2],
            "guest                                        7   128     2     -b----       3.0"
        );
    }
}
