//! Xen's vif-nat (xen-networking.md §6.4) on a routed vif: `route attach|detach --nat`.
//!
//! The vif joins the router of `netdev` like a routed vif, but with vif-nat's
//! addressing: the guest's address is its `ip=` or `10.<domid/256>.<domid%256>.<devid+1>/16`,
//! dom0 takes the per-vif router address (last octet + 127) on the router's host port,
//! with a /32 route to the guest from that address, exactly as vif-nat puts both on the
//! vif device. The DHCP entry vif-nat writes into dhcpd.conf (fixed address, routers,
//! host name `dom<domid>[-<vifid>]`) is a static binding of the router's DHCP server
//! with those options. The masquerade Xen's network-nat installs with iptables is one
//! nftables set element per vif (`<vif_ip> . <netdev>`) in table `ip domnet_vifnat`,
//! so dom0's kernel translates what it forwards, as in Xen.

use std::net::{IpAddr, Ipv4Addr};

use netcfg::rtnl::{Address, IpCidr, Route as KernelRoute, Rtnl};
use netcfg::vifnat::VifNatPlan;
use netcfg::vifspec::IpAddrSpec;
use tracing::{info, warn};
use vswitch::dhcp::server::StaticOptions;
use vswitch::router::RouterPortConfig;
use vswitch::wire::Ipv4Cidr;
use vswitch::MacAddr;

use super::bridges::dp_error;
use super::netbridge::nft;
use super::routes::host_port_name;
use super::Daemon;
use crate::control::{ErrorKind, Response};

/// The nftables table holding vif-nat's masquerade.
pub const NFT_TABLE: &str = "domnet_vifnat";

fn nft_ensure_table() -> Result<(), String> {
    let exists = std::process::Command::new("nft")
        .args(["list", "table", "ip", NFT_TABLE])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if exists {
        return Ok(());
    }
    nft(&format!(
        "table ip {NFT_TABLE} {{\n\
         \tset guests {{ type ipv4_addr . ifname; }}\n\
         \tchain postrouting {{\n\
         \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
         \t\tip saddr . oifname @guests masquerade\n\
         \t}}\n\
         }}\n"
    ))
}

fn nft_element(ip: Ipv4Addr, netdev: &str) -> String {
    format!("{{ {ip} . \"{netdev}\" }}")
}

/// Removes the masquerade of `ip` out of `netdev`, and the table once it is empty.
fn nft_forget(ip: Ipv4Addr, netdev: &str) {
    let _ = nft(&format!(
        "delete element ip {NFT_TABLE} guests {}\n",
        nft_element(ip, netdev)
    ));
    let listing = std::process::Command::new("nft")
        .args(["list", "set", "ip", NFT_TABLE, "guests"])
        .output();
    if let Ok(o) = listing {
        if o.status.success() && !String::from_utf8_lossy(&o.stdout).contains("elements") {
            let _ = nft(&format!("delete table ip {NFT_TABLE}\n"));
        }
    }
}

/// dom0's side of vif-nat on the router's host port `tap`: the router address (/32)
/// and the route to the guest from it (`add`), or their removal.
fn kernel_side(tap: &str, plan: &VifNatPlan, add: bool) -> Result<(), String> {
    let rtnl = Rtnl::open().map_err(|e| e.to_string())?;
    let idx = rtnl.ifindex(tap).map_err(|e| format!("{tap}: {e}"))?;
    let cidr = |ip: Ipv4Addr| IpCidr::new(IpAddr::V4(ip), 32).map_err(|e| e.to_string());
    let addr = Address::new(idx, cidr(plan.router_ip)?);
    let route = KernelRoute::new(cidr(plan.vif_ip)?)
        .dev(idx)
        .src(IpAddr::V4(plan.router_ip))
        .metric(2);
    if add {
        match rtnl.add_address(&addr) {
            Ok(()) => {}
            Err(e) if e.is_exists() => {}
            Err(e) => return Err(format!("address {}/32 on {tap}: {e}", plan.router_ip)),
        }
        rtnl.replace_route(&route)
            .map_err(|e| format!("route {}/32 dev {tap}: {e}", plan.vif_ip))?;
    } else {
        let _ = rtnl.delete_route(&route);
        let _ = rtnl.delete_address(&addr);
    }
    Ok(())
}

impl Daemon {
    /// The vif-nat plan of `vif` from its backend keys (`frontend-id`, `handle`, `ip`).
    async fn vifnat_plan(&self, vif: &str) -> Result<(VifNatPlan, MacAddr), Response> {
        let Some(be) = self.vif_backend_of(vif).await else {
            return Err(Response::err(
                ErrorKind::BadInput,
                format!("`{vif}` is not a vif"),
            ));
        };
        let read = |key: &'static str| {
            let path = format!("{be}/{key}");
            async move { self.ctl.try_read_string(0, &path).await.ok().flatten() }
        };
        let missing = |key: &str| {
            Response::err(
                ErrorKind::Failed,
                format!("{vif}: {be}/{key} is missing or invalid"),
            )
        };
        let domid: u16 = read("frontend-id")
            .await
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| missing("frontend-id"))?;
        let devid: u32 = read("handle")
            .await
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| missing("handle"))?;
        let mac = read("mac")
            .await
            .and_then(|m| m.parse::<netcfg::vifspec::MacAddr>().ok())
            .ok_or_else(|| missing("mac"))?;
        let ip_text = read("ip").await.unwrap_or_default();
        let ip: Option<IpAddrSpec> =
            match ip_text.split_whitespace().next() {
                Some(first) => Some(first.parse().map_err(
                    |e: netcfg::vifspec::IpAddrSpecError| {
                        Response::err(ErrorKind::BadInput, format!("{vif}: {e}"))
                    },
                )?),
                None => None,
            };
        let plan = VifNatPlan::derive(domid, devid, ip.as_ref())
            .map_err(|e| Response::err(ErrorKind::BadInput, format!("{vif}: {e}")))?;
        Ok((plan, MacAddr(mac.0)))
    }

    /// `domnet route attach VIF --nat [--netdev DEV]` (what scripts/vif-nat calls).
    pub async fn vifnat_attach(&self, vif: &str, netdev: String) -> Response {
        let (plan, mac) = match self.vifnat_plan(vif).await {
            Ok(x) => x,
            Err(r) => return r,
        };
        let guard = self.router_lock.lock().await;
        let (router, _main) = match self.ensure_router(&netdev).await {
            Ok(x) => x,
            Err(e) => return Response::err(ErrorKind::Failed, e),
        };
        let cidrs = vec![Ipv4Cidr::from(plan.vif_ip)];
        if let Err(e) = self
            .dp
            .attach_router(vif, &router, RouterPortConfig::routed_vif(vif, mac, cidrs))
            .await
        {
            return dp_error(e);
        }
        drop(guard);
        let opts = StaticOptions {
            subnet: Ipv4Cidr::new(plan.vif_ip, plan.prefix_len),
            router: Some(plan.router_ip),
            host_name: Some(plan.host_name.clone()),
        };
        let ip = plan.vif_ip;
        let dhcp = self
            .dp
            .with_router(
                &router,
                Box::new(move |_, dhcp, _| match dhcp.as_mut() {
                    Some(d) => d.set_static_with(mac, ip, opts).map_err(|e| {
                        vswitch::datapath::DatapathError::Failed(format!("DHCP for {ip}: {e}"))
                    }),
                    None => Ok(()),
                }),
            )
            .await;
        let tap = host_port_name(&netdev);
        let kernel = dhcp
            .map_err(|e| e.to_string())
            .and_then(|()| kernel_side(&tap, &plan, true))
            .and_then(|()| nft_ensure_table())
            .and_then(|()| {
                nft(&format!(
                    "add element ip {NFT_TABLE} guests {}\n",
                    nft_element(plan.vif_ip, &netdev)
                ))
            });
        if let Err(e) = kernel {
            warn!("vif-nat {vif}: {e}; rolling back");
            self.vifnat_detach(vif, netdev).await;
            return Response::err(ErrorKind::Failed, e);
        }
        info!("vif-nat {vif}: {plan}, masqueraded out of {netdev}");
        Response::ok(serde_json::json!({
            "vif": vif,
            "router": router,
            "address": format!("{}/{}", plan.vif_ip, plan.prefix_len),
            "gateway": plan.router_ip.to_string(),
            "hostname": plan.host_name,
        }))
    }

    /// `domnet route detach VIF --nat`: undoes [`Daemon::vifnat_attach`] (errors
    /// ignored, like vif-nat's offline), then the routed-vif part.
    pub async fn vifnat_detach(&self, vif: &str, netdev: String) -> Response {
        if let Ok((plan, _)) = self.vifnat_plan(vif).await {
            let _ = kernel_side(&host_port_name(&netdev), &plan, false);
            nft_forget(plan.vif_ip, &netdev);
        }
        self.route_detach(vif).await
    }
}
