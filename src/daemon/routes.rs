//! Route mode (Xen's vif-route, done in the switch): `route attach|detach|show`.
//!
//! Routed vifs of one dom0 uplink (`netdev`) share a router in the switch worker. Its
//! host port is a persistent TAP in dom0, `rt-<netdev>`, through which dom0's kernel
//! reaches the guests: like vif-route, each `ip=` address gets a /32 route in dom0
//! (`<addr> dev rt-<netdev> src <main_ip> metric 2`), and dom0 forwards between the
//! guests and its NIC (ip_forward, proxy_arp on the NIC, as network-route set up). A
//! guest sees dom0's address (`main_ip`) as its gateway: the router answers ARP for
//! anything on the vif's link with Xen's backend MAC, decrements TTL, sends ICMP errors
//! from dom0's address, and anti-spoofs by `ip=`. It also answers DHCP for the vif's
//! `ip=` address (a static binding; no pool).

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use netcfg::netns::NetNs;
use netcfg::rtnl::{IpCidr, Route as KernelRoute, Rtnl};
use tracing::{info, warn};
use vswitch::datapath::tap_port::TapPort;
use vswitch::datapath::DatapathError;
use vswitch::dhcp::server::{DhcpConfig, DhcpServer};
use vswitch::router::{NextHop, Route, RouterConfig, RouterPortConfig, XEN_VIF_MAC};
use vswitch::wire::Ipv4Cidr;
use vswitch::MacAddr;

use super::bridges::{delete_host_tap, dp_error, open_host_tap};
use super::netbridge::default_netdev;
use super::Daemon;
use crate::control::{ErrorKind, Response};

/// The router of one uplink.
pub fn router_name(netdev: &str) -> String {
    format!("route-{netdev}")
}

/// Its host port (a dom0 TAP; interface names are at most 15 characters).
pub fn host_port_name(netdev: &str) -> String {
    let mut n = format!("rt-{netdev}");
    n.truncate(15);
    n
}

/// dom0's main IPv4 address on `netdev` and its prefix length (vif-route's `dom0_ip`).
fn main_ip(netdev: &str) -> Result<(Ipv4Addr, u8), String> {
    let rtnl = Rtnl::open().map_err(|e| e.to_string())?;
    rtnl.addresses_of(netdev)
        .map_err(|e| format!("{netdev}: {e}"))?
        .into_iter()
        .find_map(|a| match a.local.addr() {
            IpAddr::V4(v4) => Some((v4, a.local.prefix_len())),
            IpAddr::V6(_) => None,
        })
        .ok_or_else(|| {
            format!(
                "{netdev} is not up. Bring it up or specify another interface with netdev=<if> as a parameter to vif-route."
            )
        })
}

/// `netdev` as given, else dom0's default-route device (vif-route's default).
pub fn netdev_or_default(netdev: Option<String>) -> String {
    netdev.filter(|n| !n.is_empty()).unwrap_or_else(|| {
        Rtnl::open()
            .map(|r| default_netdev(&r))
            .unwrap_or_else(|_| "eth0".into())
    })
}

fn kernel_routes(tap: &str, main: Ipv4Addr, ips: &[Ipv4Addr], add: bool) -> Result<(), String> {
    let rtnl = Rtnl::open().map_err(|e| e.to_string())?;
    let idx = rtnl.ifindex(tap).map_err(|e| e.to_string())?;
    for ip in ips {
        let dst = IpCidr::new(IpAddr::V4(*ip), 32).map_err(|e| e.to_string())?;
        let r = KernelRoute::new(dst)
            .dev(idx)
            .src(IpAddr::V4(main))
            .metric(2);
        let res = if add {
            rtnl.replace_route(&r)
        } else {
            rtnl.delete_route(&r)
        };
        if let Err(e) = res {
            if add {
                return Err(format!("route {ip}/32 dev {tap}: {e}"));
            }
        }
    }
    Ok(())
}

/// Where a router's MAC lives in xenstore (`ROUTER_STORE/<netdev>/mac`).
pub const ROUTER_STORE: &str = "/tool/domnet/router";

impl Daemon {
    /// The MAC of the router's side of its host port: random (locally administered,
    /// Xen's 00:16:3e with the local bit) the first time, then the same for good, so
    /// dom0's neighbour entries for the routed guests stay right across a daemon
    /// restart instead of pointing at a MAC nobody answers to until they expire.
    async fn router_mac(&self, netdev: &str) -> MacAddr {
        let key = format!("{ROUTER_STORE}/{netdev}/mac");
        if let Some(m) = self
            .ctl
            .try_read_string(0, &key)
            .await
            .ok()
            .flatten()
            .and_then(|m| m.parse::<netcfg::vifspec::MacAddr>().ok())
        {
            return MacAddr(m.0);
        }
        let r: [u8; 3] = rand::random();
        let mac = MacAddr([0x02, 0x16, 0x3e, r[0], r[1], r[2]]);
        if let Err(e) = self.ctl.write(0, &key, mac.to_string().as_bytes()).await {
            warn!("router of {netdev}: recording its MAC: {e}");
        }
        mac
    }

    /// Creates the router of `netdev` (host port, default route into dom0, DHCP) if it
    /// does not exist yet.
    /// The caller holds `router_lock` until its port is on the router.
    pub(super) async fn ensure_router(&self, netdev: &str) -> Result<(String, Ipv4Addr), String> {
        let name = router_name(netdev);
        let tap = host_port_name(netdev);
        let (main, prefix) = main_ip(netdev)?;
        let known = self
            .dp
            .ports()
            .await
            .map_err(|e| e.to_string())?
            .iter()
            .any(|p| p.name == tap && p.bridge.as_deref() == Some(name.as_str()));
        if known {
            return Ok((name, main));
        }
        let mut cfg = RouterConfig::new(main);
        cfg.local_addresses = vec![main];
        match self.dp.add_router(&name, cfg).await {
            Ok(()) | Err(DatapathError::Exists(_)) => {}
            Err(e) => return Err(e.to_string()),
        }
        let handle = open_host_tap(&tap, None, 1500)?;
        let tap_mac = Rtnl::open()
            .ok()
            .and_then(|r| r.link_by_name(&tap).ok())
            .and_then(|l| l.mac)
            .map(|m| MacAddr(m.0))
            .ok_or_else(|| format!("{tap} has no MAC"))?;
        let router_mac = self.router_mac(netdev).await;
        if let Err(e) = self.dp.add_port(Box::new(TapPort::new(&tap, handle))).await {
            return Err(e.to_string());
        }
        self.dp
            .attach_router(
                &tap,
                &name,
                RouterPortConfig::host(&tap, router_mac, Some(tap_mac)),
            )
            .await
            .map_err(|e| e.to_string())?;
        // Everything not on a routed vif goes to dom0's kernel, which routes it on.
        let tap_name = tap.clone();
        let subnet = Ipv4Cidr::new(main, prefix).ok_or("bad prefix")?;
        let resolvers: Vec<Ipv4Addr> = std::fs::read_to_string("/etc/resolv.conf")
            .map(|t| vswitch::dns::parse_resolv_conf(&t))
            .unwrap_or_default()
            .into_iter()
            .filter_map(|ip| match ip {
                IpAddr::V4(v4) if !v4.is_loopback() => Some(v4),
                _ => None,
            })
            .collect();
        self.dp
            .with_router(
                &name,
                Box::new(move |router, dhcp, now| {
                    let host = router
                        .ports()
                        .find(|(_, c)| c.name == tap_name)
                        .map(|(id, _)| id)
                        .ok_or_else(|| DatapathError::Failed("host port missing".into()))?;
                    router.add_route(Route {
                        dest: Ipv4Cidr::new(Ipv4Addr::UNSPECIFIED, 0)
                            .unwrap_or(Ipv4Cidr::from(Ipv4Addr::UNSPECIFIED)),
                        next_hop: NextHop::Gateway(host, main),
                    });
                    router.neigh_mut().set_static(host, main, tap_mac, now);
                    let mut d = DhcpConfig::libvirt_default(XEN_VIF_MAC);
                    d.server_ip = main;
                    d.subnet = subnet;
                    d.pool_start = main;
                    d.pool_end = main;
                    d.max_leases = 0; // static bindings (ip=) only
                    d.router = Some(main);
                    d.dns_servers = resolvers;
                    d.lease_time = Duration::from_secs(3600);
                    *dhcp = DhcpServer::new(d).ok();
                    Ok(())
                }),
            )
            .await
            .map_err(|e| e.to_string())?;
        // What Xen's network-route did: dom0 forwards, and answers ARP on its NIC for
        // the routed guests.
        if let Ok(ns) = NetNs::current() {
            let _ = netcfg::sysctl::set_ip_forward(&ns, true);
            let _ = netcfg::sysctl::set_proxy_arp(&ns, netdev, true);
            // Answer at once: the kernel's default random delay (up to 0.8 s) is what
            // the first packets of a routed guest would wait for.
            let _ = netcfg::sysctl::set_proxy_delay(&ns, netdev, 0);
        }
        info!("router {name} up: dom0 {main} on {netdev}, host port {tap}");
        Ok((name, main))
    }

    /// The vif's MAC and `ip=` IPv4 addresses from its backend directory.
    async fn vif_identity(&self, vif: &str) -> Result<(MacAddr, Vec<Ipv4Addr>), Response> {
        let Some(be) = self.vif_backend_of(vif).await else {
            return Err(Response::err(
                ErrorKind::BadInput,
                format!("`{vif}` is not a vif"),
            ));
        };
        let mac = self
            .ctl
            .try_read_string(0, &format!("{be}/mac"))
            .await
            .ok()
            .flatten()
            .and_then(|m| m.parse::<netcfg::vifspec::MacAddr>().ok())
            .ok_or_else(|| Response::err(ErrorKind::Failed, format!("{vif}: no mac in {be}")))?;
        let ips = self
            .ctl
            .try_read_string(0, &format!("{be}/ip"))
            .await
            .ok()
            .flatten()
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|a| a.parse::<netcfg::vifspec::IpAddrSpec>().ok())
            .filter_map(|s| match s.addr {
                IpAddr::V4(v4) => Some(v4),
                IpAddr::V6(_) => None,
            })
            .collect();
        Ok((MacAddr(mac.0), ips))
    }

    /// `domnet route attach VIF [--netdev DEV]` (what scripts/vif-route calls).
    pub async fn route_attach(&self, vif: &str, netdev: Option<String>) -> Response {
        let (mac, ips) = match self.vif_identity(vif).await {
            Ok(x) => x,
            Err(r) => return r,
        };
        let netdev = netdev_or_default(netdev);
        let guard = self.router_lock.lock().await;
        let (router, main) = match self.ensure_router(&netdev).await {
            Ok(x) => x,
            Err(e) => return Response::err(ErrorKind::Failed, e),
        };
        let cidrs: Vec<Ipv4Cidr> = ips.iter().map(|ip| Ipv4Cidr::from(*ip)).collect();
        if let Err(e) = self
            .dp
            .attach_router(vif, &router, RouterPortConfig::routed_vif(vif, mac, cidrs))
            .await
        {
            return dp_error(e);
        }
        drop(guard);
        if let Some(first) = ips.first().copied() {
            let r = self
                .dp
                .with_router(
                    &router,
                    Box::new(move |_, dhcp, _| {
                        if let Some(d) = dhcp.as_mut() {
                            if let Err(e) = d.set_static(mac, first) {
                                warn!("route mode: no DHCP for {first}: {e}");
                            }
                        }
                        Ok(())
                    }),
                )
                .await;
            if let Err(e) = r {
                warn!("route attach {vif}: {e}");
            }
        }
        if let Err(e) = kernel_routes(&host_port_name(&netdev), main, &ips, true) {
            let _ = self.dp.detach(vif).await;
            return Response::err(ErrorKind::Failed, e);
        }
        Response::ok(
            serde_json::json!({ "vif": vif, "router": router, "gateway": main.to_string() }),
        )
    }

    /// `domnet route detach VIF`. Works also when the port is already gone (the
    /// backend unregisters it before libxl's offline script runs).
    pub async fn route_detach(&self, vif: &str) -> Response {
        let _guard = self.router_lock.lock().await;
        let attached = match self.dp.ports().await {
            Ok(ports) => ports
                .into_iter()
                .find(|p| p.name == vif)
                .and_then(|p| p.bridge),
            Err(e) => return dp_error(e),
        };
        let netdev = match attached.as_deref().and_then(|r| r.strip_prefix("route-")) {
            Some(n) => n.to_string(),
            None => {
                let from_backend = match self.vif_backend_of(vif).await {
                    Some(be) => self
                        .ctl
                        .try_read_string(0, &format!("{be}/gatewaydev"))
                        .await
                        .ok()
                        .flatten(),
                    None => None,
                };
                match from_backend.filter(|n| !n.is_empty()) {
                    Some(n) => n,
                    None => Rtnl::open()
                        .map(|r| default_netdev(&r))
                        .unwrap_or_else(|_| "eth0".into()),
                }
            }
        };
        let router = router_name(&netdev);
        let (mac, ips) = self
            .vif_identity(vif)
            .await
            .unwrap_or((MacAddr([0; 6]), Vec::new()));
        if let Ok((main, _)) = main_ip(&netdev) {
            let _ = kernel_routes(&host_port_name(&netdev), main, &ips, false);
        }
        let _ = self
            .dp
            .with_router(
                &router,
                Box::new(move |_, dhcp, _| {
                    if let Some(d) = dhcp.as_mut() {
                        d.remove_static(mac);
                    }
                    Ok(())
                }),
            )
            .await;
        if attached.is_some() {
            if let Err(e) = self.dp.detach(vif).await {
                return dp_error(e);
            }
        }
        // The last routed vif takes the router and its host port with it.
        let tap = host_port_name(&netdev);
        let left = self
            .dp
            .ports()
            .await
            .map(|ps| {
                ps.iter()
                    .filter(|p| p.bridge.as_deref() == Some(router.as_str()) && p.name != tap)
                    .count()
            })
            .unwrap_or(1);
        if left == 0 {
            let _ = self.dp.remove_port(&tap).await;
            let _ = self.dp.del_router(&router).await;
            delete_host_tap(&tap);
            let _ = self.ctl.rm(0, &format!("{ROUTER_STORE}/{netdev}")).await;
            self.rm_if_empty(ROUTER_STORE).await;
        }
        Response::ok(serde_json::json!({ "vif": vif }))
    }

    /// `domnet route show`.
    pub async fn route_show(&self) -> Response {
        match self.dp.ports().await {
            Ok(ports) => {
                let rows: Vec<serde_json::Value> = ports
                    .iter()
                    .filter(|p| p.bridge.as_deref().is_some_and(|b| b.starts_with("route-")))
                    .map(|p| {
                        serde_json::json!({
                            "port": p.name,
                            "router": p.bridge,
                            "rx_packets": p.rx_packets,
                            "tx_packets": p.tx_packets,
                        })
                    })
                    .collect();
                Response::ok(rows)
            }
            Err(e) => dp_error(e),
        }
    }
}
