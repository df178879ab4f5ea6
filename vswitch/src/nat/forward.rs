//! Port forwards (DNAT rules): `PROTO:HOSTPORT:GUESTIP:GUESTPORT`, e.g.
//! `tcp:8080:192.168.122.10:80` — connections to the external address's `HOSTPORT` go
//! to `GUESTIP:GUESTPORT` (libvirt's `<portForward>`, iptables `-j DNAT`).

use core::fmt;
use core::str::FromStr;
use std::net::Ipv4Addr;

use crate::wire::IpProtocol;

/// The protocols a port forward can name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ForwardProto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl ForwardProto {
    /// The IP protocol number.
    pub const fn ip_protocol(self) -> IpProtocol {
        match self {
            ForwardProto::Tcp => IpProtocol::TCP,
            ForwardProto::Udp => IpProtocol::UDP,
        }
    }
}

/// One port forward.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PortForward {
    /// Protocol.
    pub proto: ForwardProto,
    /// Port on the external address.
    pub host_port: u16,
    /// The guest's address.
    pub guest_ip: Ipv4Addr,
    /// The guest's port.
    pub guest_port: u16,
}

impl fmt::Display for PortForward {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = match self.proto {
            ForwardProto::Tcp => "tcp",
            ForwardProto::Udp => "udp",
        };
        write!(
            f,
            "{p}:{}:{}:{}",
            self.host_port, self.guest_ip, self.guest_port
        )
    }
}

/// The text was not `tcp|udp:HOSTPORT:GUESTIP:GUESTPORT` with non-zero ports.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid port forward {0:?} (expected PROTO:HOSTPORT:GUESTIP:GUESTPORT)")]
pub struct ParseForwardError(pub String);

impl FromStr for PortForward {
    type Err = ParseForwardError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseForwardError(s.to_string());
        let mut it = s.split(':');
        let proto = match it.next().map(str::to_ascii_lowercase).as_deref() {
            Some("tcp") => ForwardProto::Tcp,
            Some("udp") => ForwardProto::Udp,
            _ => return Err(err()),
        };
        let port = |v: Option<&str>| -> Result<u16, ParseForwardError> {
            match v.and_then(|v| v.parse::<u16>().ok()) {
                Some(0) | None => Err(err()),
                Some(p) => Ok(p),
            }
        };
        let host_port = port(it.next())?;
        let guest_ip = it.next().and_then(|v| v.parse().ok()).ok_or_else(err)?;
        let guest_port = port(it.next())?;
        if it.next().is_some() {
            return Err(err());
        }
        Ok(PortForward {
            proto,
            host_port,
            guest_ip,
            guest_port,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_round_trip() {
        let f: PortForward = "tcp:8080:192.168.122.10:80".parse().unwrap();
        assert_eq!(f.proto, ForwardProto::Tcp);
        assert_eq!((f.host_port, f.guest_port), (8080, 80));
        assert_eq!(f.guest_ip, Ipv4Addr::new(192, 168, 122, 10));
        assert_eq!(f.to_string(), "tcp:8080:192.168.122.10:80");
        assert_eq!(
            "UDP:53:10.0.0.2:5353".parse::<PortForward>().unwrap().proto,
            ForwardProto::Udp
        );
        for bad in [
            "",
            "sctp:1:1.2.3.4:1",
            "tcp:0:1.2.3.4:1",
            "tcp:1:1.2.3:1",
            "tcp:1:1.2.3.4",
            "tcp:1:1.2.3.4:1:9",
            "tcp:99999:1.2.3.4:1",
        ] {
            assert!(bad.parse::<PortForward>().is_err(), "{bad}");
        }
    }
}
