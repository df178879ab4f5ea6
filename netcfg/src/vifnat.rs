//! Xen's vif-nat addressing (xen-networking.md §6.4), as a pure rule: the guest's
//! address, the per-vif router address dom0 takes, and the DHCP host name.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

use crate::vifspec::IpAddrSpec;

/// The addresses of one vif in vif-nat mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VifNatPlan {
    /// The guest's address (`vif_ip`).
    pub vif_ip: Ipv4Addr,
    /// Its prefix: as written in `ip=`, /16 for the derived default, else /24 (the
    /// router address shares the first three octets, so it stays on-link).
    pub prefix_len: u8,
    /// dom0's address for this vif: `vif_ip` with 127 added to its last octet.
    pub router_ip: Ipv4Addr,
    /// `dom<domid>`, plus `-<vifid>` when the vif is not the first.
    pub host_name: String,
}

/// Why no plan could be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VifNatError {
    /// `ip=` is IPv6; vif-nat is IPv4 only.
    #[error("vif-nat needs an IPv4 ip=, not `{0}'")]
    NotIpv4(String),
    /// The last octet plus 127 leaves 0–255, so there is no router address.
    #[error("ip={0}: the router address would be .{1} (vif-nat adds 127 to the last octet; use a last octet of 128 or less)")]
    NoRouterAddress(String, u16),
    /// The derived default needs a vifid of at most 255.
    #[error(
        "devid {0} is too large for vif-nat's default address 10.<domid/256>.<domid%256>.<devid+1>"
    )]
    DevidTooLarge(u32),
}

impl VifNatPlan {
    /// The plan for vif `devid` of domain `domid`, from its first `ip=` address if any:
    /// with none, `10.<domid div 256>.<domid mod 256>.<devid+1>/16`.
    pub fn derive(domid: u16, devid: u32, ip: Option<&IpAddrSpec>) -> Result<Self, VifNatError> {
        let vifid = devid + 1;
        let (vif_ip, prefix_len, text) = match ip {
            Some(spec) => match spec.addr {
                IpAddr::V4(v4) => (v4, spec.prefix_len.unwrap_or(24), spec.to_string()),
                IpAddr::V6(_) => return Err(VifNatError::NotIpv4(spec.to_string())),
            },
            None => {
                let last = u8::try_from(vifid).map_err(|_| VifNatError::DevidTooLarge(devid))?;
                let ip = Ipv4Addr::new(10, (domid / 256) as u8, (domid % 256) as u8, last);
                (ip, 16, format!("{ip}/16"))
            }
        };
        let o = vif_ip.octets();
        let router_last = u16::from(o[3]) + 127;
        let router_last = u8::try_from(router_last)
            .map_err(|_| VifNatError::NoRouterAddress(text, router_last))?;
        let host_name = if vifid == 1 {
            format!("dom{domid}")
        } else {
            format!("dom{domid}-{vifid}")
        };
        Ok(VifNatPlan {
            vif_ip,
            prefix_len,
            router_ip: Ipv4Addr::new(o[0], o[1], o[2], router_last),
            host_name,
        })
    }
}

impl fmt::Display for VifNatPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{} via {} ({})",
            self.vif_ip, self.prefix_len, self.router_ip, self.host_name
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_address_follows_xen() {
        // domid 5, devid 0 => 10.0.5.1/16, router 10.0.5.128, host name dom5.
        let p = VifNatPlan::derive(5, 0, None).unwrap();
        assert_eq!(p.vif_ip, Ipv4Addr::new(10, 0, 5, 1));
        assert_eq!(p.prefix_len, 16);
        assert_eq!(p.router_ip, Ipv4Addr::new(10, 0, 5, 128));
        assert_eq!(p.host_name, "dom5");
        // domid 300, devid 1 => 10.1.44.2, router .129, dom300-2.
        let p = VifNatPlan::derive(300, 1, None).unwrap();
        assert_eq!(p.vif_ip, Ipv4Addr::new(10, 1, 44, 2));
        assert_eq!(p.router_ip, Ipv4Addr::new(10, 1, 44, 129));
        assert_eq!(p.host_name, "dom300-2");
        assert!(VifNatPlan::derive(1, 255, None).is_err());
    }

    #[test]
    fn given_address_keeps_its_prefix_and_needs_room_for_the_router() {
        let ip: IpAddrSpec = "192.168.7.20/24".parse().unwrap();
        let p = VifNatPlan::derive(3, 0, Some(&ip)).unwrap();
        assert_eq!(p.router_ip, Ipv4Addr::new(192, 168, 7, 147));
        assert_eq!(p.prefix_len, 24);
        let bare: IpAddrSpec = "172.16.0.9".parse().unwrap();
        assert_eq!(
            VifNatPlan::derive(3, 0, Some(&bare)).unwrap().prefix_len,
            24
        );
        let high: IpAddrSpec = "10.0.0.200".parse().unwrap();
        let e = VifNatPlan::derive(3, 0, Some(&high)).unwrap_err();
        assert!(e.to_string().contains(".327"), "{e}");
        let v6: IpAddrSpec = "2001:db8::1".parse().unwrap();
        assert!(matches!(
            VifNatPlan::derive(3, 0, Some(&v6)),
            Err(VifNatError::NotIpv4(_))
        ));
    }
}
