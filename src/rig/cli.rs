//! The `domnet rig` verbs: arguments, output and exit codes.
//!
//! Exit codes: 0 success; 1 the rig could not be built/used or a check failed
//! (`pingall` with loss); `exec` passes its command's code through (128+N for a
//! signal).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::names::DEFAULT_RIGS_DIR;
use super::probe::{self, IperfRun};
use super::{build, interrupt, report, teardown, Rig, RigError, RigOptions};

/// Test rigs: whole topologies from one TOML file, on a private daemon.
#[derive(Debug, Args)]
pub struct RigCmd {
    /// Where rigs keep their directories.
    #[arg(long, global = true, env = "DOMNET_RIGS_DIR", default_value = DEFAULT_RIGS_DIR)]
    pub rigs_dir: PathBuf,
    #[command(subcommand)]
    /// The verb.
    pub verb: RigVerb,
}

/// `domnet rig` verbs.
#[derive(Debug, Subcommand)]
pub enum RigVerb {
    /// Build a rig from a TOML file (docs/rig.md) and print its hosts and addresses.
    Up {
        /// The rig file.
        file: PathBuf,
        /// The rig's name (default: the file's `name`, else the file name).
        #[arg(long)]
        name: Option<String>,
        /// Print the summary as JSON (progress goes to stderr).
        #[arg(long)]
        json: bool,
    },
    /// Run a command in a host (a domain's short name, `dom0` or `outside`); its exit
    /// code is passed through.
    Exec {
        /// The rig (may be left out when exactly one is up).
        #[arg(long)]
        rig: Option<String>,
        /// The host.
        host: String,
        /// The command and its arguments (after `--`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        command: Vec<String>,
    },
    /// Ping, from every domain and the outside, every address the topology should
    /// make reachable; a matrix and the loss. Exit 1 on any loss.
    Pingall {
        /// The rig (may be left out when exactly one is up).
        #[arg(long)]
        rig: Option<String>,
        /// Pings per pair.
        #[arg(long, default_value_t = 3)]
        count: u32,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// TCP throughput with iperf3: server in B, client in A.
    Iperf {
        /// The rig (may be left out when exactly one is up).
        #[arg(long)]
        rig: Option<String>,
        /// The client (sender).
        a: String,
        /// The server (receiver).
        b: String,
        /// Seconds of traffic.
        #[arg(long, default_value_t = 3)]
        time: u32,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Take a rig down completely (namespaces, processes, directories).
    Down {
        /// The rig (may be left out when exactly one exists).
        name: Option<String>,
    },
    /// Remove whatever crashed rigs left (rigs whose daemon is dead, half-built ones).
    Clean,
    /// List rigs.
    List {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

fn fail(e: &RigError) -> ExitCode {
    eprintln!("domnet rig: {e}");
    ExitCode::from(1)
}

fn json_out<T: serde::Serialize>(v: &T) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).unwrap_or_else(|_| "null".into())
    );
}

/// Runs a `domnet rig` verb.
pub fn run(cmd: RigCmd) -> ExitCode {
    let rigs_dir = cmd.rigs_dir;
    if !matches!(cmd.verb, RigVerb::List { .. }) {
        if let Err(e) = super::sys::require_root() {
            return fail(&e);
        }
    }
    match cmd.verb {
        RigVerb::Up { file, name, json } => up(rigs_dir, &file, name.as_deref(), json),
        RigVerb::Exec { rig, host, command } => {
            match Rig::open(&rigs_dir, rig.as_deref())
                .and_then(|r| probe::exec(&r, &host, &command))
            {
                Ok(status) => {
                    use std::os::unix::process::ExitStatusExt;
                    let code = status
                        .code()
                        .or_else(|| status.signal().map(|s| 128 + s))
                        .unwrap_or(1);
                    ExitCode::from(u8::try_from(code).unwrap_or(1))
                }
                Err(e) => fail(&e),
            }
        }
        RigVerb::Pingall { rig, count, json } => {
            let r = match Rig::open(&rigs_dir, rig.as_deref()) {
                Ok(r) => r,
                Err(e) => return fail(&e),
            };
            match probe::pingall(&r, count.max(1)) {
                Ok(p) => {
                    if json {
                        json_out(&serde_json::json!({
                            "rig": r.name(),
                            "pairs": p.results,
                            "sent": p.sent,
                            "received": p.received,
                            "dropped_percent": p.dropped_percent(),
                        }));
                    } else {
                        print!("{}", report::pingall(&p));
                    }
                    if p.received == p.sent {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::from(1)
                    }
                }
                Err(e) => fail(&e),
            }
        }
        RigVerb::Iperf {
            rig,
            a,
            b,
            time,
            json,
        } => {
            let res = Rig::open(&rigs_dir, rig.as_deref())
                .and_then(|r| probe::iperf(&r, &IperfRun::new(&a, &b, time.max(1))));
            match res {
                Ok(r) => {
                    if json {
                        json_out(&r);
                    } else {
                        print!("{}", report::iperf(&r));
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e),
            }
        }
        RigVerb::Down { name } => down(rigs_dir, name),
        RigVerb::Clean => match teardown::clean(&rigs_dir) {
            Ok(outcomes) => {
                if outcomes.is_empty() {
                    println!("no rigs");
                }
                let mut failed = false;
                for o in outcomes {
                    failed |= o.outcome.starts_with("failed");
                    println!("{}: {}", o.name, o.outcome);
                }
                if failed {
                    ExitCode::from(1)
                } else {
                    ExitCode::SUCCESS
                }
            }
            Err(e) => fail(&e),
        },
        RigVerb::List { json } => {
            let rigs = teardown::list(&rigs_dir);
            if json {
                json_out(&rigs);
            } else {
                print!("{}", report::list(&rigs));
            }
            ExitCode::SUCCESS
        }
    }
}

fn up(rigs_dir: PathBuf, file: &std::path::Path, name: Option<&str>, json: bool) -> ExitCode {
    let plan = match super::load_file(file, name) {
        Ok(p) => p,
        Err(e) => return fail(&e),
    };
    let opts = match RigOptions::from_env() {
        Ok(o) => RigOptions { rigs_dir, ..o },
        Err(e) => return fail(&e),
    };
    interrupt::install();
    let rig_name = plan.name.clone();
    let mut progress = |line: &str| {
        if json {
            eprintln!("==> {line}");
        } else {
            println!("==> {line}");
            let _ = std::io::stdout().flush();
        }
    };
    match build::up(plan, Some(file.display().to_string()), &opts, &mut progress) {
        Ok(rig) => {
            if json {
                json_out(&serde_json::json!({
                    "rig": rig.name(),
                    "run_dir": rig.run_dir(),
                    "hosts": report::summary_rows(rig.state()),
                }));
            } else {
                println!();
                print!("{}", report::summary(rig.state()));
                println!();
                println!(
                    "Try: domnet rig exec --rig {rig_name} HOST -- CMD   |   domnet rig pingall --rig {rig_name}   |   domnet rig down {rig_name}"
                );
                println!(
                    "     DOMNET_RUN_DIR={} domnet bridge show",
                    rig.run_dir().display()
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}

fn down(rigs_dir: PathBuf, name: Option<String>) -> ExitCode {
    let name = match name {
        Some(n) => Some(n),
        None => {
            let all = teardown::list(&rigs_dir);
            match all.as_slice() {
                [one] => Some(one.name.clone()),
                [] => return fail(&RigError::WhichRig("there is no rig".into())),
                many => {
                    return fail(&RigError::WhichRig(format!(
                        "there are several rigs ({}): say which",
                        many.iter()
                            .map(|r| r.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )))
                }
            }
        }
    };
    match Rig::open(&rigs_dir, name.as_deref()).and_then(Rig::down) {
        Ok(()) => {
            println!("rig {} is down", name.unwrap_or_default());
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}
