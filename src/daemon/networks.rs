//! NAT networks: `net define|start|stop|list|forward` (libvirt's virbr0, done inside
//! the switch).
//!
//! A started network is a bridge (no host port) plus its gateway port, which holds the
//! gateway address, the DHCP server, the DNS forwarder and the masquerade/port-forward
//! NAT, and owns an AF_PACKET socket on the uplink (dom0's default-route NIC unless the
//! definition names one). dom0's kernel shares that NIC, so an nftables rule keeps it
//! from answering (with RSTs and port-unreachables) packets for the NAT port range that
//! belong to none of its sockets; the NAT range also avoids the kernel's own ephemeral
//! ports. Definitions, the active flag, port forwards and DHCP leases live in xenstore
//! under `/tool/domnet/net/<name>/`, so they survive restarts.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use netcfg::netdef::{ForwardMode, NetworkDef, PortForwardDef, Proto};
use netcfg::rtnl::Rtnl;
use tracing::{info, warn};
use vswitch::datapath::nat_port::NatGatewayPort;
use vswitch::datapath::packet_port::PacketPort;
use vswitch::datapath::{BridgeSettings, DatapathError, Port, PortCtx};
use vswitch::dhcp::lease::{LeaseChange, LeaseRecord};
use vswitch::nat::forward::{ForwardProto, PortForward};
use vswitch::nat::gateway::{GatewayConfig, NatGateway};
use vswitch::nat::ports::PortRange;
use vswitch::port::PortConfig;
use vswitch::time::Timestamp;
use vswitch::wire::Ipv4Cidr;
use vswitch::MacAddr;

use super::bridges::dp_error;
use super::netbridge::{default_netdev, nft};
use super::Daemon;
use crate::control::{ErrorKind, Response};

/// Where networks live in xenstore.
pub const NET_STORE: &str = "/tool/domnet/net";

/// How often DHCP lease changes are written to xenstore.
pub const LEASE_SAVE_PERIOD: Duration = Duration::from_millis(250);

/// The gateway port of a network's bridge.
pub fn gateway_port(bridge: &str) -> String {
    format!("{bridge}:gw")
}

fn nat_table(net: &str) -> String {
    format!("domnet_nat_{}", net.replace(['-', '.'], "_"))
}

/// The nftables table that keeps dom0's kernel out of the switch's NAT flows on the
/// uplink. The switch sees every uplink frame through AF_PACKET before the kernel does;
/// the kernel must not answer the frames meant for the switch (a RST from a port it has
/// no socket on would kill the connection). So, for TCP/UDP to the uplink address:
/// the kernel keeps what is its own — a socket of dom0 listening or connected, or a
/// connection its conntrack already knows (dom0's own masquerade, e.g. vif-nat) — and
/// drops what falls in the network's masquerade port range or on a forwarded port.
/// Runs after conntrack (priority -190) so `ct state` is known. Replacing the table is
/// one nft transaction.
fn nat_table_rules(
    table: &str,
    dev: &str,
    ip: Ipv4Addr,
    ports: (u16, u16),
    forwards: &[PortForwardDef],
) -> String {
    let mut fwd = String::new();
    for f in forwards {
        let proto = match f.proto {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        };
        fwd.push_str(&format!(
            "    iifname \"{dev}\" ip daddr {ip} meta l4proto {proto} th dport {} drop\n",
            f.host_port
        ));
    }
    format!(
        "table inet {table} {{}}\ndelete table inet {table}\ntable inet {table} {{\n  chain pre {{\n    type filter hook prerouting priority -190; policy accept;\n    iifname \"{dev}\" ip daddr {ip} ct state established,related accept\n    iifname \"{dev}\" ip daddr {ip} meta l4proto {{ tcp, udp }} socket transparent 0 accept\n{fwd}    iifname \"{dev}\" ip daddr {ip} meta l4proto {{ tcp, udp }} th dport {}-{} drop\n  }}\n}}\n",
        ports.0, ports.1
    )
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// What the uplink looks like when a network starts.
struct Uplink {
    name: String,
    index: u32,
    mac: MacAddr,
    ip: Ipv4Addr,
    subnet: Ipv4Cidr,
    gateway: Option<Ipv4Addr>,
    mtu: u32,
}

fn probe_uplink(name: Option<&str>) -> Result<Uplink, String> {
    let rtnl = Rtnl::open().map_err(|e| e.to_string())?;
    let name = name
        .map(str::to_string)
        .unwrap_or_else(|| default_netdev(&rtnl));
    let link = rtnl
        .link_by_name(&name)
        .map_err(|e| format!("uplink `{name}`: {e}"))?;
    let mac = link
        .mac
        .ok_or_else(|| format!("uplink `{name}` has no Ethernet address"))?;
    let addr = rtnl
        .addresses_of(name.as_str())
        .map_err(|e| e.to_string())?
        .into_iter()
        .find_map(|a| match a.local.addr() {
            IpAddr::V4(v4) => Some((v4, a.local.prefix_len())),
            IpAddr::V6(_) => None,
        })
        .ok_or_else(|| format!("uplink `{name}` has no IPv4 address (masquerade needs one)"))?;
    let gateway = rtnl.routes().ok().and_then(|routes| {
        routes.iter().find_map(|r| {
            if r.dst.prefix_len() == 0 && r.oif == Some(link.index) {
                match r.gateway {
                    Some(IpAddr::V4(g)) => Some(g),
                    _ => None,
                }
            } else {
                None
            }
        })
    });
    let subnet = Ipv4Cidr::new(addr.0, addr.1).ok_or("bad uplink prefix")?;
    Ok(Uplink {
        name,
        index: link.index,
        mac: MacAddr(mac.0),
        ip: addr.0,
        subnet,
        gateway,
        mtu: link.mtu,
    })
}

/// dom0's ephemeral port range, which the NAT must not hand out.
fn ephemeral_ports() -> Option<PortRange> {
    let s = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let mut it = s.split_whitespace().filter_map(|x| x.parse::<u16>().ok());
    Some(PortRange {
        min: it.next()?,
        max: it.next()?,
    })
}

fn to_forward(f: &PortForwardDef) -> PortForward {
    PortForward {
        proto: match f.proto {
            Proto::Tcp => ForwardProto::Tcp,
            Proto::Udp => ForwardProto::Udp,
        },
        host_port: f.host_port,
        guest_ip: f.guest_ip,
        guest_port: f.guest_port,
    }
}

fn gateway_of(p: &mut dyn Port) -> Result<&mut NatGatewayPort, DatapathError> {
    p.as_any_mut()
        .downcast_mut::<NatGatewayPort>()
        .ok_or_else(|| DatapathError::Failed("not a NAT gateway port".into()))
}

/// A random locally administered MAC in libvirt's 52:54:00 prefix.
fn random_gateway_mac() -> MacAddr {
    let r: [u8; 3] = rand::random();
    MacAddr([0x52, 0x54, 0x00, r[0], r[1], r[2]])
}

impl Daemon {
    async fn net_def(&self, name: &str) -> Option<NetworkDef> {
        self.load_json(&format!("{NET_STORE}/{name}/def")).await
    }

    async fn net_active(&self, name: &str) -> bool {
        self.ctl
            .try_read_string(0, &format!("{NET_STORE}/{name}/active"))
            .await
            .ok()
            .flatten()
            .as_deref()
            == Some("1")
    }

    /// The active network whose bridge is `bridge`, if any.
    pub(crate) async fn network_of_bridge(&self, bridge: &str) -> Option<NetworkDef> {
        for n in self.ctl.directory(0, NET_STORE).await.unwrap_or_default() {
            if let Some(d) = self.net_def(&n).await {
                if d.bridge == bridge && self.net_active(&n).await {
                    return Some(d);
                }
            }
        }
        None
    }

    /// `domnet net define FILE`.
    pub async fn net_define(&self, text: &str, path: &str) -> Response {
        let def = match NetworkDef::parse(text) {
            Ok(d) => d,
            Err(e) => return Response::err(ErrorKind::BadInput, format!("{path}: {e}")),
        };
        for other in self.ctl.directory(0, NET_STORE).await.unwrap_or_default() {
            if other == def.name {
                continue;
            }
            if let Some(o) = self.net_def(&other).await {
                if o.bridge == def.bridge {
                    return Response::err(
                        ErrorKind::BadInput,
                        format!(
                            "{path}: bridge `{}` is already used by network `{other}`",
                            def.bridge
                        ),
                    );
                }
            }
        }
        let active = self.net_active(&def.name).await;
        if let Err(e) = self
            .store_json(&format!("{NET_STORE}/{}/def", def.name), &def)
            .await
        {
            return Response::err(ErrorKind::Failed, e);
        }
        let mut r = Response::ok(serde_json::json!({ "network": def.name }));
        if active {
            r = r.with_warnings(vec![format!(
                "network `{}` is running; the new definition applies at its next start",
                def.name
            )]);
        }
        r
    }

    /// `domnet net start NAME`.
    pub async fn net_start(&self, name: &str) -> Response {
        let Some(def) = self.net_def(name).await else {
            return Response::err(ErrorKind::BadInput, format!("no network named `{name}`"));
        };
        if self.net_active(name).await {
            return Response::ok(serde_json::json!({ "network": name, "already": true }));
        }
        match self.realise_network(&def).await {
            Ok(()) => {
                let _ = self
                    .ctl
                    .write(0, &format!("{NET_STORE}/{name}/active"), b"1")
                    .await;
                info!("network {name} started on bridge {}", def.bridge);
                Response::ok(serde_json::json!({ "network": name, "bridge": def.bridge }))
            }
            Err(e) => Response::err(ErrorKind::Failed, format!("starting network `{name}`: {e}")),
        }
    }

    async fn realise_network(&self, def: &NetworkDef) -> Result<(), String> {
        let (gw_ip, prefix) = def.gateway().map_err(|e| e.to_string())?;
        let network = Ipv4Cidr::new(gw_ip, prefix).ok_or("bad network prefix")?;
        let mac_key = format!("{NET_STORE}/{}/mac", def.name);
        let gw_mac = match self.ctl.try_read_string(0, &mac_key).await.ok().flatten() {
            Some(m) => m
                .parse::<netcfg::vifspec::MacAddr>()
                .map(|m| MacAddr(m.0))
                .unwrap_or_else(|_| random_gateway_mac()),
            None => {
                let m = random_gateway_mac();
                let _ = self.ctl.write(0, &mac_key, m.to_string().as_bytes()).await;
                m
            }
        };
        // The NAT's port key lives with the network (dom0-only), so a restarted daemon
        // picks a guest's connection up under the external port it had.
        let key_path = format!("{NET_STORE}/{}/nat-key", def.name);
        let stored_key = self.ctl.try_read_string(0, &key_path).await.ok().flatten();
        let port_key = match stored_key.and_then(|k| u64::from_str_radix(&k, 16).ok()) {
            Some(k) => k,
            None => {
                let k: u64 = rand::random();
                let _ = self
                    .ctl
                    .write(0, &key_path, format!("{k:016x}").as_bytes())
                    .await;
                k
            }
        };
        let isolated = def.forward == ForwardMode::None;
        let up = if isolated {
            // No uplink at all: nothing is masqueraded, so none is needed (the gateway's
            // own identity stands in where the core wants an uplink's).
            Uplink {
                name: String::new(),
                index: 0,
                mac: gw_mac,
                ip: gw_ip,
                subnet: network,
                gateway: None,
                mtu: def.mtu,
            }
        } else {
            probe_uplink(def.uplink.as_deref())?
        };
        let upstream_ips = if def.dns_servers.is_empty() {
            std::fs::read_to_string("/etc/resolv.conf")
                .map(|t| vswitch::dns::parse_resolv_conf(&t))
                .unwrap_or_default()
        } else {
            def.dns_servers.clone()
        };
        let dns: Vec<SocketAddr> = upstream_ips
            .into_iter()
            .map(|ip| SocketAddr::new(ip, 53))
            .collect();
        let mut cfg =
            GatewayConfig::libvirt_default(gw_mac, up.ip, up.mac, up.subnet, up.gateway, dns);
        cfg.gateway_ip = gw_ip;
        cfg.network = network;
        cfg.isolated = isolated;
        cfg.bridge_mtu = def.mtu;
        cfg.uplink_mtu = up.mtu;
        cfg.nat.internal = network;
        cfg.nat.gateway_ip = gw_ip;
        cfg.nat.port_key = port_key;
        let (lo, hi) = def.nat_port_range().map_err(|e| e.to_string())?;
        cfg.nat.port_range = PortRange { min: lo, max: hi };
        if let Some(e) = ephemeral_ports() {
            // Only when it leaves something: a range inside dom0's ephemeral ports is the
            // user's explicit choice.
            if !(e.min <= lo && hi <= e.max) {
                cfg.nat.excluded_ports.push(e);
            }
        }
        if let Some(m) = def.max_connections {
            cfg.nat.max_connections = m;
        }
        if let Some(m) = def.max_connections_per_guest {
            cfg.nat.max_per_guest = m;
        }
        match (def.dhcp_start, def.dhcp_end, cfg.dhcp.as_mut()) {
            (Some(s), Some(e), Some(d)) => {
                d.server_ip = gw_ip;
                d.subnet = network;
                d.pool_start = s;
                d.pool_end = e;
                d.router = Some(gw_ip);
                d.dns_servers = if def.dns { vec![gw_ip] } else { Vec::new() };
                d.lease_time = Duration::from_secs(u64::from(def.lease_time));
                d.max_leases = (u32::from(e) - u32::from(s) + 1) as usize;
                if def.mtu != 1500 {
                    d.mtu = u16::try_from(def.mtu).ok();
                }
            }
            _ => cfg.dhcp = None,
        }
        if !def.dns {
            cfg.dns = None;
        } else if let Some(d) = cfg.dns.as_mut() {
            d.listen_ip = gw_ip;
            d.id_seed = rand::random();
        }
        let mut gw = NatGateway::new(cfg).map_err(|e| e.to_string())?;
        let mut forwards: Vec<PortForward> = def.port_forward.iter().map(to_forward).collect();
        forwards.extend(self.stored_forwards(&def.name).await.iter().map(to_forward));
        gw.nat_mut()
            .set_forwards(forwards)
            .map_err(|e| e.to_string())?;
        // Leases survive restarts (saved on the wall clock, the switch runs its own).
        let records = self.stored_leases(&def.name).await;
        let uplink_name = up.name.clone();
        let port_name = gateway_port(&def.bridge);
        let port = if isolated {
            NatGatewayPort::isolated(port_name.clone(), gw)
        } else {
            let uplink = PacketPort::open(up.name.clone(), up.index)
                .map_err(|e| format!("uplink {}: {e}", up.name))?;
            NatGatewayPort::new(port_name.clone(), gw, uplink)
        }
        .map_err(|e| e.to_string())?;
        self.dp
            .add_bridge(&def.bridge, BridgeSettings::default(), None)
            .await
            .map_err(|e| e.to_string())?;
        let undo_bridge = || async {
            let _ = self.dp.remove_port(&port_name).await;
            let _ = self.dp.del_bridge(&def.bridge).await;
        };
        if let Err(e) = self.dp.add_port(Box::new(port)).await {
            undo_bridge().await;
            return Err(e.to_string());
        }
        let mut pc = PortConfig::host(&port_name);
        pc.mtu = def.mtu;
        if let Err(e) = self.dp.attach(&port_name, &def.bridge, pc).await {
            undo_bridge().await;
            return Err(e.to_string());
        }
        if let Err(e) = self.dp.fdb_add(&def.bridge, gw_mac, &port_name).await {
            undo_bridge().await;
            return Err(e.to_string());
        }
        self.replay_static_fdb(&def.bridge, &port_name).await;
        let wall = wall_ms();
        let _ = self
            .dp
            .with_port(
                &port_name,
                Box::new(move |p: &mut dyn Port, ctx: &mut PortCtx<'_>| {
                    let now = ctx.now;
                    if let Some(d) = gateway_of(p)?.gateway_mut().dhcp_mut() {
                        let back: Vec<LeaseRecord> = records
                            .into_iter()
                            .map(|r| r.rebased(Timestamp::from_millis(wall), now))
                            .collect();
                        d.restore(back, now);
                    }
                    Ok(())
                }),
            )
            .await;
        if def.forward == ForwardMode::Nat {
            // dom0's stack keeps its own sockets; everything else in the NAT port range
            // that arrives for the uplink address is the switch's.
            let mut all_forwards = def.port_forward.clone();
            all_forwards.extend(self.stored_forwards(&def.name).await);
            let rule = nat_table_rules(
                &nat_table(&def.name),
                &uplink_name,
                up.ip,
                (lo, hi),
                &all_forwards,
            );
            if let Err(e) = nft(&rule) {
                undo_bridge().await;
                return Err(e);
            }
        }
        Ok(())
    }

    /// `domnet net stop NAME`.
    pub async fn net_stop(&self, name: &str) -> Response {
        let Some(def) = self.net_def(name).await else {
            return Response::err(ErrorKind::BadInput, format!("no network named `{name}`"));
        };
        if !self.net_active(name).await {
            return Response::ok(serde_json::json!({ "network": name, "already": true }));
        }
        let port = gateway_port(&def.bridge);
        if let Ok(ports) = self.dp.ports().await {
            let guests: Vec<String> = ports
                .iter()
                .filter(|p| p.bridge.as_deref() == Some(def.bridge.as_str()) && p.name != port)
                .map(|p| p.name.clone())
                .collect();
            if !guests.is_empty() {
                return Response::err(
                    ErrorKind::Failed,
                    format!(
                        "network `{name}` still has vifs: {} (detach them first)",
                        guests.join(", ")
                    ),
                );
            }
        }
        self.save_leases(&def).await;
        let _ = self.dp.remove_port(&port).await;
        if let Err(e) = self.dp.del_bridge(&def.bridge).await {
            warn!("net stop {name}: {e}");
        }
        let _ = self
            .ctl
            .rm(0, &format!("{}/{}", super::bridges::FDB_STORE, def.bridge))
            .await;
        let t = nat_table(name);
        let _ = nft(&format!("table inet {t} {{}}\ndelete table inet {t}\n"));
        let _ = self
            .ctl
            .write(0, &format!("{NET_STORE}/{name}/active"), b"0")
            .await;
        Response::ok(serde_json::json!({ "network": name }))
    }

    /// `domnet net list`.
    pub async fn net_list(&self) -> Response {
        let mut rows = Vec::new();
        for n in self.ctl.directory(0, NET_STORE).await.unwrap_or_default() {
            let Some(d) = self.net_def(&n).await else {
                continue;
            };
            let forwards: Vec<String> = d
                .port_forward
                .iter()
                .chain(self.stored_forwards(&n).await.iter())
                .map(|f| f.to_string())
                .collect();
            rows.push(serde_json::json!({
                "name": n,
                "active": self.net_active(&n).await,
                "autostart": d.autostart,
                "bridge": d.bridge,
                "address": d.address,
                "forward": d.forward,
                "dhcp": d.dhcp_start.map(|s| format!("{s}-{}", d.dhcp_end.map(|e| e.to_string()).unwrap_or_default())),
                "port_forwards": forwards,
            }));
        }
        Response::ok(rows)
    }

    async fn stored_forwards(&self, name: &str) -> Vec<PortForwardDef> {
        let mut out = Vec::new();
        for k in self
            .ctl
            .directory(0, &format!("{NET_STORE}/{name}/forward"))
            .await
            .unwrap_or_default()
        {
            if let Ok(Some(v)) = self
                .ctl
                .try_read_string(0, &format!("{NET_STORE}/{name}/forward/{k}"))
                .await
            {
                if let Ok(f) = v.parse() {
                    out.push(f);
                }
            }
        }
        out
    }

    /// `domnet net forward add|del|list NAME [SPEC]`.
    pub async fn net_forward(&self, name: &str, action: &str, spec: Option<String>) -> Response {
        let Some(def) = self.net_def(name).await else {
            return Response::err(ErrorKind::BadInput, format!("no network named `{name}`"));
        };
        if action == "list" {
            let all: Vec<String> = def
                .port_forward
                .iter()
                .chain(self.stored_forwards(name).await.iter())
                .map(|f| f.to_string())
                .collect();
            return Response::ok(all);
        }
        let Some(spec) = spec else {
            return Response::err(
                ErrorKind::BadInput,
                "expected PROTO:HOSTPORT:GUESTIP:GUESTPORT",
            );
        };
        let f: PortForwardDef = match spec.parse() {
            Ok(f) => f,
            Err(e) => return Response::err(ErrorKind::BadInput, e.to_string()),
        };
        let mut with_new = def.clone();
        with_new.port_forward.push(f);
        if let Err(e) = with_new.validate() {
            return Response::err(ErrorKind::BadInput, e.to_string());
        }
        let key = format!("{NET_STORE}/{name}/forward/{}-{}", f.proto, f.host_port);
        let mut current = self.stored_forwards(name).await;
        match action {
            "add" => {
                if def
                    .port_forward
                    .iter()
                    .chain(current.iter())
                    .any(|x| x.proto == f.proto && x.host_port == f.host_port)
                {
                    return Response::err(
                        ErrorKind::BadInput,
                        format!("{}:{} is already forwarded", f.proto, f.host_port),
                    );
                }
                current.push(f);
                if let Err(e) = self.ctl.write(0, &key, f.to_string().as_bytes()).await {
                    return Response::err(ErrorKind::Failed, e.to_string());
                }
            }
            "del" => {
                if !current.contains(&f) {
                    return Response::err(
                        ErrorKind::BadInput,
                        format!("no forward {f} on network `{name}`"),
                    );
                }
                current.retain(|x| x != &f);
                let _ = self.ctl.rm(0, &key).await;
            }
            other => {
                return Response::err(
                    ErrorKind::BadInput,
                    format!("unknown action `{other}` (add|del|list)"),
                )
            }
        }
        if self.net_active(name).await {
            let forwards: Vec<PortForward> = def
                .port_forward
                .iter()
                .chain(current.iter())
                .map(to_forward)
                .collect();
            let r = self
                .dp
                .with_port(
                    &gateway_port(&def.bridge),
                    Box::new(move |p: &mut dyn Port, _ctx: &mut PortCtx<'_>| {
                        gateway_of(p)?
                            .gateway_mut()
                            .nat_mut()
                            .set_forwards(forwards)
                            .map_err(|e| DatapathError::Failed(e.to_string()))
                    }),
                )
                .await;
            if let Err(e) = r {
                return dp_error(e);
            }
            if def.forward == ForwardMode::Nat {
                let all: Vec<PortForwardDef> = def
                    .port_forward
                    .iter()
                    .chain(current.iter())
                    .copied()
                    .collect();
                let refreshed = probe_uplink(def.uplink.as_deref()).and_then(|up| {
                    let ports = def.nat_port_range().map_err(|e| e.to_string())?;
                    nft(&nat_table_rules(
                        &nat_table(&def.name),
                        &up.name,
                        up.ip,
                        ports,
                        &all,
                    ))
                });
                if let Err(e) = refreshed {
                    warn!(
                        "net forward {name}: dom0's kernel may answer port {}: {e}",
                        f.host_port
                    );
                }
            }
        }
        Response::ok(serde_json::json!({ "network": name, "forward": f.to_string() }))
    }

    async fn stored_leases(&self, name: &str) -> Vec<LeaseRecord> {
        let mut out = Vec::new();
        for k in self
            .ctl
            .directory(0, &format!("{NET_STORE}/{name}/lease"))
            .await
            .unwrap_or_default()
        {
            if let Ok(Some(v)) = self
                .ctl
                .try_read_string(0, &format!("{NET_STORE}/{name}/lease/{k}"))
                .await
            {
                if let Ok(r) = v.parse::<LeaseRecord>() {
                    out.push(r);
                }
            }
        }
        out
    }

    /// Writes the lease changes of a network's DHCP server to xenstore (wall clock).
    async fn save_leases(&self, def: &NetworkDef) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let wall = wall_ms();
        let r = self
            .dp
            .with_port(
                &gateway_port(&def.bridge),
                Box::new(move |p: &mut dyn Port, ctx: &mut PortCtx<'_>| {
                    let mut changes = Vec::new();
                    if let Some(d) = gateway_of(p)?.gateway_mut().dhcp_mut() {
                        d.take_changes(&mut changes);
                    }
                    let now = ctx.now;
                    let rebased: Vec<(bool, LeaseRecord)> = changes
                        .into_iter()
                        .filter_map(|c| match c {
                            LeaseChange::Bound(r) => {
                                Some((true, r.rebased(now, Timestamp::from_millis(wall))))
                            }
                            LeaseChange::Released(r) | LeaseChange::Expired(r) => Some((false, r)),
                            _ => None,
                        })
                        .collect();
                    let _ = tx.send(rebased);
                    Ok(())
                }),
            )
            .await;
        if r.is_err() {
            return;
        }
        let Ok(changes) = rx.await else { return };
        for (bound, rec) in changes {
            let key = format!(
                "{NET_STORE}/{}/lease/{}",
                def.name,
                rec.mac.to_string().replace(':', "")
            );
            if bound {
                let _ = self.ctl.write(0, &key, rec.to_string().as_bytes()).await;
            } else {
                let _ = self.ctl.rm(0, &key).await;
            }
        }
    }

    /// Persists DHCP leases of every active network, a few times a second (only
    /// changes are written): a lease granted just before a `kill -9` is on disk unless
    /// it was granted in the last [`LEASE_SAVE_PERIOD`]; even then the guest keeps its
    /// address, because the server grants a free pool address to whoever renews it.
    pub async fn run_lease_saver(self: std::sync::Arc<Self>) {
        loop {
            tokio::time::sleep(LEASE_SAVE_PERIOD).await;
            for n in self.ctl.directory(0, NET_STORE).await.unwrap_or_default() {
                if self.net_active(&n).await {
                    if let Some(d) = self.net_def(&n).await {
                        self.save_leases(&d).await;
                    }
                }
            }
        }
    }

    /// Declares (or forgets) a vif's `ip=` addresses to the NAT network its bridge
    /// belongs to: DHCP binds the MAC to exactly that address.
    pub(crate) async fn nat_static_guest(
        &self,
        bridge: &str,
        mac: MacAddr,
        ips: Vec<Ipv4Addr>,
        add: bool,
    ) {
        if self.network_of_bridge(bridge).await.is_none() {
            return;
        }
        let _ = self
            .dp
            .with_port(
                &gateway_port(bridge),
                Box::new(move |p: &mut dyn Port, ctx: &mut PortCtx<'_>| {
                    let gw = gateway_of(p)?.gateway_mut();
                    for ip in ips {
                        if add {
                            gw.add_static_guest(mac, ip, ctx.now)
                                .map_err(|e| DatapathError::Failed(e.to_string()))?;
                        } else {
                            gw.remove_static_guest(mac, ip);
                        }
                    }
                    Ok(())
                }),
            )
            .await;
    }

    /// At start: the `default` network exists out of the box; active or autostart
    /// networks are started again.
    pub async fn restore_networks(&self) {
        if self.net_def("default").await.is_none() {
            let _ = self
                .store_json(
                    &format!("{NET_STORE}/default/def"),
                    &NetworkDef::libvirt_default(),
                )
                .await;
        }
        for n in self.ctl.directory(0, NET_STORE).await.unwrap_or_default() {
            let Some(def) = self.net_def(&n).await else {
                continue;
            };
            if self.net_active(&n).await || def.autostart {
                let _ = self
                    .ctl
                    .write(0, &format!("{NET_STORE}/{n}/active"), b"0")
                    .await;
                let r = self.net_start(&n).await;
                if !r.ok {
                    warn!("network {n} not restarted: {}", r.error.unwrap_or_default());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nat_rules_keep_dom0s_own_and_drop_the_switchs() {
        let f: PortForwardDef = "tcp:22:192.168.122.5:22".parse().unwrap();
        let r = nat_table_rules(
            "domnet_nat_default",
            "eth0",
            Ipv4Addr::new(10, 0, 0, 2),
            (20000, 30000),
            &[f],
        );
        let accept = r.find("ct state established,related accept").unwrap();
        let socket = r.find("socket transparent 0 accept").unwrap();
        let fwd = r.find("meta l4proto tcp th dport 22 drop").unwrap();
        let range = r.find("th dport 20000-30000 drop").unwrap();
        assert!(accept < socket && socket < fwd && fwd < range, "{r}");
        assert!(r.starts_with("table inet domnet_nat_default {}\ndelete table"));
        assert!(r.contains("priority -190"));
    }
}
