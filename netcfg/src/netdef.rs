//! NAT network definitions (`domnet net define FILE`): a small TOML grammar in the
//! spirit of libvirt's network XML.
//!
//! ```toml
//! name = "default"
//! bridge = "virbr0"
//! forward = "nat"                 # "nat" (masquerade to the uplink) or "none"
//! address = "192.168.122.1/24"    # the gateway, on the bridge
//! dhcp_start = "192.168.122.2"    # omit both to serve no DHCP
//! dhcp_end = "192.168.122.254"
//! uplink = "eth0"                 # default: dom0's default-route interface
//! dns = true                      # the gateway forwards DNS to dom0's resolvers
//! mtu = 1500
//! lease_time = 3600               # seconds
//! autostart = false
//!
//! [[port_forward]]
//! proto = "tcp"
//! host_port = 8080
//! guest_ip = "192.168.122.50"
//! guest_port = 80
//! ```
//!
//! Port forwards are also written `PROTO:HOSTPORT:GUESTIP:GUESTPORT` on the command
//! line (`net forward add`).

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// How a network reaches the outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ForwardMode {
    /// Masquerade to the uplink (libvirt's default).
    #[default]
    Nat,
    /// An isolated network: guests and the gateway only.
    None,
}

/// A transport protocol of a port forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        })
    }
}

/// A port forward: `PROTO:HOSTPORT:GUESTIP:GUESTPORT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Hash)]
pub struct PortForwardDef {
    /// Protocol.
    pub proto: Proto,
    /// Port on the uplink address.
    pub host_port: u16,
    /// The guest.
    pub guest_ip: Ipv4Addr,
    /// The guest's port.
    pub guest_port: u16,
}

impl fmt::Display for PortForwardDef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}:{}",
            self.proto, self.host_port, self.guest_ip, self.guest_port
        )
    }
}

/// Why a definition or a forward was refused; the message names the key and value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetDefError {
    /// The TOML does not parse.
    #[error("network definition: {0}")]
    Syntax(String),
    /// A key has a bad value.
    #[error("network definition: key `{key}` = {value:?}: {reason}")]
    Invalid {
        /// The key.
        key: String,
        /// The value.
        value: String,
        /// Why.
        reason: String,
    },
    /// A forward string is malformed.
    #[error("port forward {0:?}: expected PROTO:HOSTPORT:GUESTIP:GUESTPORT (PROTO tcp or udp)")]
    Forward(String),
}

fn invalid(key: &str, value: impl fmt::Display, reason: impl Into<String>) -> NetDefError {
    NetDefError::Invalid {
        key: key.into(),
        value: value.to_string(),
        reason: reason.into(),
    }
}

impl FromStr for PortForwardDef {
    type Err = NetDefError;
    fn from_str(s: &str) -> Result<Self, NetDefError> {
        let bad = || NetDefError::Forward(s.to_string());
        let parts: Vec<&str> = s.split(':').collect();
        let [proto, hp, ip, gp] = parts.as_slice() else {
            return Err(bad());
        };
        let proto = match proto.to_ascii_lowercase().as_str() {
            "tcp" => Proto::Tcp,
            "udp" => Proto::Udp,
            _ => return Err(bad()),
        };
        let port = |p: &str| p.parse::<u16>().ok().filter(|&n| n != 0);
        Ok(PortForwardDef {
            proto,
            host_port: port(hp).ok_or_else(bad)?,
            guest_ip: ip.parse().map_err(|_| bad())?,
            guest_port: port(gp).ok_or_else(bad)?,
        })
    }
}

/// A NAT network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkDef {
    /// Unique name.
    pub name: String,
    /// The bridge the guests join (their vifs say `bridge=<this>`).
    pub bridge: String,
    /// How it reaches the outside.
    #[serde(default)]
    pub forward: ForwardMode,
    /// The gateway's address and the network's prefix, `a.b.c.d/len`.
    pub address: String,
    /// First address handed out by DHCP.
    #[serde(default)]
    pub dhcp_start: Option<Ipv4Addr>,
    /// Last address handed out by DHCP.
    #[serde(default)]
    pub dhcp_end: Option<Ipv4Addr>,
    /// The uplink NIC (default: dom0's default-route interface).
    #[serde(default)]
    pub uplink: Option<String>,
    /// Forward DNS to dom0's resolvers (the gateway is offered as DNS server).
    #[serde(default = "yes")]
    pub dns: bool,
    /// MTU of the network.
    #[serde(default = "mtu_1500")]
    pub mtu: u32,
    /// DHCP lease time in seconds.
    #[serde(default = "hour")]
    pub lease_time: u32,
    /// Start with the daemon.
    #[serde(default)]
    pub autostart: bool,
    /// DNS servers the gateway forwards to (default: dom0's /etc/resolv.conf).
    #[serde(default)]
    pub dns_servers: Vec<std::net::IpAddr>,
    /// Source ports masquerade maps into, `"MIN-MAX"` (libvirt: 1024-65535).
    #[serde(default)]
    pub nat_ports: Option<String>,
    /// Most tracked connections of the network (default 65536).
    #[serde(default)]
    pub max_connections: Option<usize>,
    /// Most tracked connections of one guest (default 16384), so one guest cannot
    /// starve the others.
    #[serde(default)]
    pub max_connections_per_guest: Option<usize>,
    /// Port forwards.
    #[serde(default)]
    pub port_forward: Vec<PortForwardDef>,
}

fn yes() -> bool {
    true
}
fn mtu_1500() -> u32 {
    1500
}
fn hour() -> u32 {
    3600
}

impl NetworkDef {
    /// libvirt's `default` network: virbr0, 192.168.122.1/24, DHCP .2–.254.
    pub fn libvirt_default() -> NetworkDef {
        NetworkDef {
            name: "default".into(),
            bridge: "virbr0".into(),
            forward: ForwardMode::Nat,
            address: "192.168.122.1/24".into(),
            dhcp_start: Some(Ipv4Addr::new(192, 168, 122, 2)),
            dhcp_end: Some(Ipv4Addr::new(192, 168, 122, 254)),
            uplink: None,
            dns: true,
            mtu: 1500,
            lease_time: 3600,
            autostart: false,
            dns_servers: Vec::new(),
            nat_ports: None,
            max_connections: None,
            max_connections_per_guest: None,
            port_forward: Vec::new(),
        }
    }

    /// The masquerade port range (default 1024–65535).
    pub fn nat_port_range(&self) -> Result<(u16, u16), NetDefError> {
        let Some(r) = &self.nat_ports else {
            return Ok((1024, 65535));
        };
        let bad = || {
            invalid(
                "nat_ports",
                r,
                "expected MIN-MAX with 1 <= MIN <= MAX <= 65535",
            )
        };
        let (a, b) = r.split_once('-').ok_or_else(bad)?;
        let a: u16 = a.trim().parse().map_err(|_| bad())?;
        let b: u16 = b.trim().parse().map_err(|_| bad())?;
        if a == 0 || a > b {
            return Err(bad());
        }
        Ok((a, b))
    }

    /// Parses and validates a TOML definition.
    pub fn parse(text: &str) -> Result<NetworkDef, NetDefError> {
        let def: NetworkDef =
            toml::from_str(text).map_err(|e| NetDefError::Syntax(e.to_string()))?;
        def.validate()?;
        Ok(def)
    }

    /// The gateway address and prefix length.
    pub fn gateway(&self) -> Result<(Ipv4Addr, u8), NetDefError> {
        let (ip, len) = self
            .address
            .split_once('/')
            .ok_or_else(|| invalid("address", &self.address, "expected a.b.c.d/len"))?;
        let ip: Ipv4Addr = ip
            .parse()
            .map_err(|_| invalid("address", &self.address, "bad IPv4 address"))?;
        let len: u8 = len
            .parse()
            .ok()
            .filter(|l| (8..=30).contains(l))
            .ok_or_else(|| invalid("address", &self.address, "prefix length must be 8..=30"))?;
        Ok((ip, len))
    }

    fn contains(&self, ip: Ipv4Addr) -> bool {
        match self.gateway() {
            Ok((gw, len)) => {
                let mask = u32::MAX << (32 - u32::from(len));
                u32::from(gw) & mask == u32::from(ip) & mask
            }
            Err(_) => false,
        }
    }

    /// Checks every field.
    pub fn validate(&self) -> Result<(), NetDefError> {
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 64
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
        if !name_ok {
            return Err(invalid(
                "name",
                &self.name,
                "1–64 characters of [A-Za-z0-9._-]",
            ));
        }
        crate::vifspec::validate_ifname(&self.bridge)
            .map_err(|r| invalid("bridge", &self.bridge, r))?;
        if let Some(u) = &self.uplink {
            crate::vifspec::validate_ifname(u).map_err(|r| invalid("uplink", u, r))?;
        }
        let (gw, _) = self.gateway()?;
        match (self.dhcp_start, self.dhcp_end) {
            (None, None) => {}
            (Some(s), Some(e)) => {
                if !self.contains(s) {
                    return Err(invalid("dhcp_start", s, "not on the network"));
                }
                if !self.contains(e) {
                    return Err(invalid("dhcp_end", e, "not on the network"));
                }
                if u32::from(s) > u32::from(e) {
                    return Err(invalid("dhcp_end", e, "before dhcp_start"));
                }
                if (u32::from(s)..=u32::from(e)).contains(&u32::from(gw)) {
                    return Err(invalid(
                        "dhcp_start",
                        s,
                        "range contains the gateway address",
                    ));
                }
            }
            (Some(s), None) => {
                return Err(invalid(
                    "dhcp_end",
                    "",
                    format!("missing (dhcp_start is {s})"),
                ))
            }
            (None, Some(e)) => {
                return Err(invalid(
                    "dhcp_start",
                    "",
                    format!("missing (dhcp_end is {e})"),
                ))
            }
        }
        if !(68..=65535).contains(&self.mtu) {
            return Err(invalid("mtu", self.mtu, "must be 68..=65535"));
        }
        if self.lease_time < 60 {
            return Err(invalid(
                "lease_time",
                self.lease_time,
                "at least 60 seconds",
            ));
        }
        self.nat_port_range()?;
        if self.max_connections == Some(0) {
            return Err(invalid("max_connections", 0, "must be at least 1"));
        }
        if self.max_connections_per_guest == Some(0) {
            return Err(invalid(
                "max_connections_per_guest",
                0,
                "must be at least 1",
            ));
        }
        for f in &self.port_forward {
            if !self.contains(f.guest_ip) {
                return Err(invalid(
                    "port_forward",
                    f,
                    "guest address not on the network",
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_network_matches_libvirt() {
        let d = NetworkDef::libvirt_default();
        d.validate().unwrap();
        assert_eq!(d.gateway().unwrap(), (Ipv4Addr::new(192, 168, 122, 1), 24));
    }

    #[test]
    fn parse_full_definition() {
        let d = NetworkDef::parse(
            r#"name = "lab"
bridge = "labbr0"
address = "10.9.0.1/24"
dhcp_start = "10.9.0.100"
dhcp_end = "10.9.0.200"
uplink = "eth1"
[[port_forward]]
proto = "tcp"
host_port = 2222
guest_ip = "10.9.0.5"
guest_port = 22
"#,
        )
        .unwrap();
        assert_eq!(d.port_forward[0].to_string(), "tcp:2222:10.9.0.5:22");
        assert!(d.dns && d.mtu == 1500 && d.forward == ForwardMode::Nat);
    }

    #[test]
    fn errors_name_key_and_value() {
        let e = NetworkDef::parse("name = \"x\"\nbridge = \"b\"\naddress = \"10.0.0.1/33\"\n")
            .unwrap_err();
        assert!(
            e.to_string().contains("address") && e.to_string().contains("10.0.0.1/33"),
            "{e}"
        );
        let e = NetworkDef::parse(
            "name = \"x\"\nbridge = \"b\"\naddress = \"10.0.0.1/24\"\ndhcp_start = \"10.0.1.5\"\ndhcp_end = \"10.0.0.9\"\n",
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("dhcp_start") && e.to_string().contains("10.0.1.5"),
            "{e}"
        );
        let e = NetworkDef::parse(
            "name = \"x\"\nbridge = \"b\"\naddress = \"10.0.0.1/24\"\nbogus = 1\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");
    }

    #[test]
    fn forward_strings() {
        let f: PortForwardDef = "TCP:8080:192.168.122.50:80".parse().unwrap();
        assert_eq!(f.to_string(), "tcp:8080:192.168.122.50:80");
        for bad in [
            "tcp:0:1.2.3.4:80",
            "icmp:1:1.2.3.4:1",
            "tcp:80:1.2.3:80",
            "tcp:80:1.2.3.4",
            "",
        ] {
            assert!(bad.parse::<PortForwardDef>().is_err(), "{bad}");
        }
    }
}
