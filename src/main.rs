//! `domnet`: Xen's dom0 networking as a userspace fabric — the daemon and its xl-like CLI.
//!
//! Exit codes: 0 success; 1 the daemon refused or the operation failed (bad input, no
//! such domain, …); 2 usage error; 3 the daemon is not reachable; 4 internal error.

mod cli;
mod control;
mod daemon;
mod demo;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// Xen dom0 networking rebuilt as a userspace virtual networking fabric.
#[derive(Debug, Parser)]
#[command(name = "domnet", version, about, long_about = None)]
struct Cli {
    /// The daemon's run directory (sockets); also read from DOMNET_RUN_DIR.
    #[arg(long, global = true, env = "DOMNET_RUN_DIR", default_value = control::DEFAULT_RUN_DIR)]
    run_dir: PathBuf,
    #[command(subcommand)]
    cmd: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum SyncArg {
    /// write(2) before replying: survives kill -9 of the daemon.
    Write,
    /// write(2) + fdatasync(2) before replying: survives power loss too.
    Data,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon (hypervisor, xenstored, backends, switch) in the foreground.
    Daemon {
        /// Where the journal lives.
        #[arg(long, default_value = control::DEFAULT_STATE_DIR)]
        state_dir: PathBuf,
        /// When committed state is forced to disk.
        #[arg(long, value_enum, default_value = "data")]
        sync: SyncArg,
    },
    /// Create a domain from an xl.cfg-style file.
    Create {
        /// The configuration file.
        config: PathBuf,
    },
    /// Destroy a domain (by name or id).
    Destroy {
        /// Domain name or id.
        domain: String,
    },
    /// List domains (xl list's columns).
    List {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// Only these domains.
        domains: Vec<String>,
    },
    /// Print the xenstore socket of a domain (dom0's when none is given); use it as
    /// XENSTORED_PATH for Xen's own tools.
    XenstorePath {
        /// Domain name or id.
        domain: Option<String>,
    },
    /// Show the daemon's counters.
    Stats {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Run the built-in demonstration on a private daemon and clean up.
    Demo,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("DOMNET_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
    match cli.cmd {
        Command::Daemon { state_dir, sync } => {
            let sync = match sync {
                SyncArg::Write => hypervisor::journal::SyncPolicy::Write,
                SyncArg::Data => hypervisor::journal::SyncPolicy::Data,
            };
            match daemon::run(daemon::DaemonOptions {
                run_dir: cli.run_dir,
                state_dir,
                sync,
            }) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("domnet daemon: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Create { config } => cli::create(&cli.run_dir, &config),
        Command::Destroy { domain } => cli::destroy(&cli.run_dir, &domain),
        Command::List { json, domains } => cli::list(&cli.run_dir, json, &domains),
        Command::XenstorePath { domain } => cli::xenstore_path(&cli.run_dir, domain),
        Command::Stats { json } => cli::stats(&cli.run_dir, json),
        Command::Demo => demo::run(),
    }
}
