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

/// `domnet stats [--json]`.
pub fn stats(run_dir: &Path, json: bool) -> ExitCode {
    done((|| {
        let data = request(run_dir, &Request::Stats)?;
        if json {
            println!(
                "{}",
                serde_json::to_string_pretty(&data).unwrap_or_default()
            );
        } else {
            print_tree(&data, 0);
        }
        Ok(())
    })())
}

fn print_tree(v: &serde_json::Value, depth: usize) {
    if let serde_json::Value::Object(map) = v {
        for (k, val) in map {
            match val {
                serde_json::Value::Object(_) => {
                    println!("{:indent$}{k}:", "", indent = depth * 2);
                    print_tree(val, depth + 1);
                }
                other => println!("{:indent$}{k}: {other}", "", indent = depth * 2),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
