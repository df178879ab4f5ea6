//! `domnet`: Xen's dom0 networking as a userspace fabric — the daemon and its xl-like CLI.
//!
//! Exit codes: 0 success; 1 the daemon refused or the operation failed (bad input, no
//! such domain, …); 2 usage error; 3 the daemon is not reachable; 4 internal error.

mod cli;
mod daemon;
mod demo;
mod frontend_cmd;

use std::path::PathBuf;
use std::process::ExitCode;

use domnet::control;

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
        /// Where relative hotplug script names resolve (default: domnet's scripts/).
        #[arg(long, env = "DOMNET_SCRIPT_DIR", default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts"))]
        script_dir: PathBuf,
        /// Seconds a hotplug script may run before it is killed (libxl: 40).
        #[arg(long, default_value_t = 40)]
        hotplug_timeout: u64,
        /// Run in this named network namespace instead of the current one (a
        /// namespace standing in for dom0, e.g. in tests).
        #[arg(long)]
        netns: Option<String>,
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
    /// Attach a vif to a domain: `network-attach DOM [ITEM…]` (xl's vif spec items,
    /// e.g. `bridge=xenbr1 ip=10.0.0.5`, or one comma-separated spec).
    NetworkAttach {
        /// Domain name or id.
        domain: String,
        /// vif spec items.
        spec: Vec<String>,
    },
    /// Detach a vif by devid or MAC.
    NetworkDetach {
        /// Domain name or id.
        domain: String,
        /// Devid, or MAC address.
        device: String,
    },
    /// List a domain's vifs (xl network-list's columns).
    NetworkList {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// Domain names or ids.
        #[arg(required = true)]
        domains: Vec<String>,
    },
    /// Print the xenstore socket of a domain (dom0's when none is given); use it as
    /// XENSTORED_PATH for Xen's own tools.
    XenstorePath {
        /// Domain name or id.
        domain: Option<String>,
    },
    /// Port counters: rx/tx packets and bytes, drops by reason.
    Stats {
        /// Only this port.
        port: Option<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Bridges: add, del, show, addif, delif (brctl's verbs).
    #[command(subcommand)]
    Bridge(BridgeCmd),
    /// dom0 bridge set-up: `network-bridge start|stop|status [bridge=xenbr0] [netdev=eth0]`.
    NetworkBridge {
        /// start, stop or status.
        action: String,
        /// `bridge=NAME` and/or `netdev=NIC`.
        args: Vec<String>,
        /// Xen 3.x renames: the NIC becomes p<netdev> with MAC fe:ff:ff:ff:ff:ff, ARP off.
        #[arg(long)]
        legacy_renames: bool,
    },
    /// A bridge's MAC table: show, add, del.
    #[command(subcommand)]
    Fdb(FdbCmd),
    /// Route mode (vif-route): attach, detach, show.
    #[command(subcommand)]
    Route(RouteCmd),
    /// NAT networks (libvirt's virbr0, inside the switch): define, start, stop, list,
    /// forward.
    #[command(subcommand)]
    Net(NetCmd),
    /// Capture a port's frames as pcap (to stdout unless -w).
    Capture {
        /// The port.
        port: String,
        /// Write to this file.
        #[arg(short = 'w')]
        file: Option<PathBuf>,
        /// Stop after this many frames.
        #[arg(short = 'c')]
        count: Option<u64>,
    },
    /// Impair a port's link in both directions like netem (delay, jitter, loss), e.g.
    /// `domnet impair vif3.0 --delay 10ms --loss 1%`; `--clear` lifts it.
    Impair {
        /// The port.
        port: String,
        /// Added one-way delay (us, ms or s).
        #[arg(long, value_parser = netcfg::netem::parse_time)]
        delay: Option<std::time::Duration>,
        /// Uniform jitter around the delay (at most the delay).
        #[arg(long, value_parser = netcfg::netem::parse_time)]
        jitter: Option<std::time::Duration>,
        /// Loss percentage (`1%`).
        #[arg(long, value_parser = netcfg::netem::parse_loss)]
        loss: Option<u32>,
        /// Lift the impairment.
        #[arg(long, conflicts_with_all = ["delay", "jitter", "loss"])]
        clear: bool,
    },
    /// Test rigs: build a topology from a TOML file on a private daemon, exec,
    /// pingall, iperf, down, clean, list.
    Rig(domnet::rig::cli::RigCmd),
    /// Run the built-in demonstration on a private daemon and clean up.
    Demo,
    /// Run an external netfront for vif N of a domain created with
    /// `vif_frontend = "external"` (over its hypervisor socket; until SIGTERM/SIGINT or
    /// the backend closes).
    Frontend {
        /// Domain name or id.
        domain: String,
        /// The vif's device id.
        #[arg(long, default_value_t = 0)]
        devid: u32,
        /// The guest interface to create in the domain's namespace (default eth<N>).
        #[arg(long)]
        tap: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum BridgeCmd {
    /// Create a bridge with only its host port (a dom0 TAP named after it).
    Add {
        /// Bridge name.
        name: String,
        /// MAC table aging in seconds (default 300; 0 = always flood).
        #[arg(long)]
        aging: Option<u64>,
    },
    /// Delete a bridge (it must have no ports but its host port).
    Del {
        /// Bridge name.
        name: String,
    },
    /// List bridges and their interfaces (brctl show's layout).
    Show {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Attach a port to a bridge.
    Addif {
        /// Bridge (with --hotplug only the fallback: see there; may be "").
        bridge: String,
        /// Port (a vif, an uplink).
        port: String,
        /// MTU for the port.
        #[arg(long)]
        mtu: Option<u32>,
        /// For hotplug scripts (Xen's vif-bridge order): the bridge the vif's backend
        /// names, else BRIDGE, else the first bridge; hotplug-status=connected is
        /// written once attached (one process on the attach path instead of three).
        #[arg(long)]
        hotplug: bool,
    },
    /// Detach a port from a bridge.
    Delif {
        /// Bridge ("" = the one the port is on).
        bridge: String,
        /// Port.
        port: String,
    },
}

#[derive(Debug, Subcommand)]
enum RouteCmd {
    /// Route a vif: dom0's address becomes its gateway, its ip= addresses get /32
    /// routes in dom0 (what scripts/vif-route calls).
    Attach {
        /// The vif port (vif<D>.<N> or its vifname).
        vif: String,
        /// dom0's uplink whose address is the gateway (default: the default-route NIC).
        #[arg(long)]
        netdev: Option<String>,
        /// Xen's vif-nat instead: the guest gets ip= or 10.<domid/256>.<domid%256>.<devid+1>/16
        /// by DHCP, dom0 the router address (last octet + 127), and its traffic is
        /// masqueraded out of netdev (what scripts/vif-nat calls).
        #[arg(long)]
        nat: bool,
        /// For hotplug scripts: write the vif's hotplug-status=connected once routed.
        #[arg(long)]
        hotplug: bool,
    },
    /// Stop routing a vif and remove its /32 routes.
    Detach {
        /// The vif port.
        vif: String,
        /// The uplink a vif-nat vif was masqueraded out of.
        #[arg(long)]
        netdev: Option<String>,
        /// Undo vif-nat's addresses and masquerade too.
        #[arg(long)]
        nat: bool,
    },
    /// List routed vifs.
    Show {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum NetCmd {
    /// Define (or redefine) a network from a TOML file.
    Define {
        /// The definition.
        file: PathBuf,
    },
    /// Start a network (its bridge, gateway, DHCP, DNS and NAT).
    Start {
        /// Network name.
        name: String,
    },
    /// Stop a network (it must have no vifs).
    Stop {
        /// Network name.
        name: String,
    },
    /// List networks.
    List {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Port forwards: `forward add|del NAME PROTO:HOSTPORT:GUESTIP:GUESTPORT`,
    /// `forward list NAME`.
    Forward {
        /// add, del or list.
        action: String,
        /// Network name.
        name: String,
        /// PROTO:HOSTPORT:GUESTIP:GUESTPORT (add, del).
        spec: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum FdbCmd {
    /// MAC, port, VLAN, age, static.
    Show {
        /// Bridge.
        bridge: String,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Add a static entry.
    Add {
        /// Bridge.
        bridge: String,
        /// MAC address.
        mac: String,
        /// Port.
        port: String,
    },
    /// Remove an entry.
    Del {
        /// Bridge.
        bridge: String,
        /// MAC address.
        mac: String,
    },
}

/// Moves the (still single-threaded) process into a named network namespace, so every
/// thread the daemon starts lives there.
fn enter_netns(name: &str) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(format!("/run/netns/{name}"))?;
    // SAFETY: setns with an fd we hold open; called before any thread is spawned.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.cmd, Command::Daemon { .. }) {
        // A CLI verb whose reader went away (`domnet stats --json | head`) ends quietly
        // like any Unix tool; the daemon keeps Rust's ignored SIGPIPE so a closed
        // control connection is an EPIPE, never a death.
        // SAFETY: signal(2) with SIG_DFL, before any thread is started.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    let filter = tracing_subscriber::EnvFilter::try_from_env("DOMNET_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
    match cli.cmd {
        Command::Daemon {
            state_dir,
            sync,
            script_dir,
            hotplug_timeout,
            netns,
        } => {
            if let Some(ns) = netns {
                if let Err(e) = enter_netns(&ns) {
                    eprintln!("domnet daemon: entering network namespace {ns}: {e}");
                    return ExitCode::from(1);
                }
            }
            let sync = match sync {
                SyncArg::Write => hypervisor::journal::SyncPolicy::Write,
                SyncArg::Data => hypervisor::journal::SyncPolicy::Data,
            };
            match daemon::run(daemon::DaemonOptions {
                run_dir: cli.run_dir,
                state_dir,
                sync,
                script_dir,
                hotplug_timeout: std::time::Duration::from_secs(hotplug_timeout),
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
        Command::NetworkAttach { domain, spec } => cli::network_attach(&cli.run_dir, domain, spec),
        Command::NetworkDetach { domain, device } => cli::simple(
            &cli.run_dir,
            control::Request::NetworkDetach { domain, device },
        ),
        Command::NetworkList { json, domains } => cli::network_list(&cli.run_dir, domains, json),
        Command::XenstorePath { domain } => cli::xenstore_path(&cli.run_dir, domain),
        Command::Stats { port, json } => cli::stats(&cli.run_dir, port, json),
        Command::Bridge(b) => match b {
            BridgeCmd::Add { name, aging } => {
                cli::simple(&cli.run_dir, control::Request::BridgeAdd { name, aging })
            }
            BridgeCmd::Del { name } => {
                cli::simple(&cli.run_dir, control::Request::BridgeDel { name })
            }
            BridgeCmd::Show { json } => cli::bridge_show(&cli.run_dir, json),
            BridgeCmd::Addif {
                bridge,
                port,
                mtu,
                hotplug,
            } => cli::simple(
                &cli.run_dir,
                control::Request::BridgeAddif {
                    bridge,
                    port,
                    mtu,
                    hotplug,
                },
            ),
            BridgeCmd::Delif { bridge, port } => {
                cli::simple(&cli.run_dir, control::Request::BridgeDelif { bridge, port })
            }
        },
        Command::NetworkBridge {
            action,
            args,
            legacy_renames,
        } => cli::network_bridge(&cli.run_dir, &action, &args, legacy_renames),
        Command::Fdb(f) => match f {
            FdbCmd::Show { bridge, json } => cli::fdb_show(&cli.run_dir, &bridge, json),
            FdbCmd::Add { bridge, mac, port } => {
                cli::simple(&cli.run_dir, control::Request::FdbAdd { bridge, mac, port })
            }
            FdbCmd::Del { bridge, mac } => {
                cli::simple(&cli.run_dir, control::Request::FdbDel { bridge, mac })
            }
        },
        Command::Route(r) => match r {
            RouteCmd::Attach {
                vif,
                netdev,
                nat,
                hotplug,
            } => cli::simple(
                &cli.run_dir,
                control::Request::RouteAttach {
                    vif,
                    netdev,
                    nat,
                    hotplug,
                },
            ),
            RouteCmd::Detach { vif, netdev, nat } => cli::simple(
                &cli.run_dir,
                control::Request::RouteDetach { vif, netdev, nat },
            ),
            RouteCmd::Show { json } => cli::route_show(&cli.run_dir, json),
        },
        Command::Net(n) => match n {
            NetCmd::Define { file } => cli::net_define(&cli.run_dir, &file),
            NetCmd::Start { name } => {
                cli::simple(&cli.run_dir, control::Request::NetStart { name })
            }
            NetCmd::Stop { name } => cli::simple(&cli.run_dir, control::Request::NetStop { name }),
            NetCmd::List { json } => cli::net_list(&cli.run_dir, json),
            NetCmd::Forward { action, name, spec } => {
                cli::net_forward(&cli.run_dir, action, name, spec)
            }
        },
        Command::Capture { port, file, count } => cli::capture(&cli.run_dir, port, file, count),
        Command::Impair {
            port,
            delay,
            jitter,
            loss,
            clear: _,
        } => {
            let us = |d: Option<std::time::Duration>| {
                d.map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
            };
            cli::simple(
                &cli.run_dir,
                control::Request::SetImpairment {
                    port,
                    delay_us: us(delay),
                    jitter_us: us(jitter),
                    loss_ppm: loss.unwrap_or(0),
                },
            )
        }
        Command::Rig(r) => domnet::rig::cli::run(r),
        Command::Demo => demo::run(),
        Command::Frontend { domain, devid, tap } => {
            frontend_cmd::run(&cli.run_dir, &domain, devid, tap)
        }
    }
}
