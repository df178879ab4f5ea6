//! The rig file as written: TOML read into plain structs, unknown keys refused (the
//! TOML reader's message names the key and shows its line). What the values mean, and
//! whether they fit together, is [`super::plan`]'s business.
//!
//! ```toml
//! name = "lab"                       # optional; default: the file's name
//!
//! [outside]                          # optional: a namespace behind dom0's uplink
//! address = "10.0.0.254/24"          # the outside's eth0 (default)
//! dom0_address = "10.0.0.1/24"       # dom0's uplink eth0 (default: .1 of that subnet)
//!
//! [[bridge]]
//! name = "xenbr0"
//! netdev = "eth0"                    # network-bridge start bridge=xenbr0 netdev=eth0
//!
//! [[bridge]]
//! name = "xenbr1"                    # bridge add xenbr1
//! address = "10.1.0.1/24"            # dom0's address on its host port (optional)
//!
//! [[network]]
//! name = "default"                   # libvirt's default; other keys: a netdef table
//! port_forwards = ["tcp:8080:192.168.122.50:5201"]
//!
//! [[domain]]
//! name = "web"
//! vif = [ "bridge=xenbr0,ip=10.0.0.11/24",
//!         { spec = "bridge=virbr0", rate = "100Mb/s", delay = "5ms", loss = "1%" } ]
//! ```

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

/// A whole rig file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RigFile {
    /// The rig's name (default: from the file name).
    #[serde(default)]
    pub name: Option<String>,
    /// The outside namespace, if any.
    #[serde(default)]
    pub outside: Option<OutsideSpec>,
    /// dom0's bridges.
    #[serde(default)]
    pub bridge: Vec<BridgeSpec>,
    /// NAT networks: each a netdef table (`netcfg::netdef`), or `name = "default"`
    /// alone for libvirt's, plus the rig's `port_forwards` strings.
    #[serde(default)]
    pub network: Vec<toml::Table>,
    /// The domains.
    #[serde(default)]
    pub domain: Vec<DomainSpec>,
}

/// `[outside]`: a namespace standing for the LAN behind dom0, joined to dom0 by a veth
/// that is dom0's uplink.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutsideSpec {
    /// The outside's address, `a.b.c.d/len` (default `10.0.0.254/24`).
    #[serde(default)]
    pub address: Option<String>,
    /// dom0's address on its uplink (default: the subnet's first host address).
    #[serde(default)]
    pub dom0_address: Option<String>,
}

/// `[[bridge]]`: a bridge in dom0's switch.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeSpec {
    /// Its name (also its host port's).
    pub name: String,
    /// Xen's `network-bridge start`: this NIC (dom0's uplink, `eth0`) becomes the
    /// bridge's uplink and dom0's address moves to the host port.
    #[serde(default)]
    pub netdev: Option<String>,
    /// dom0's address on the host port of a plain bridge.
    #[serde(default)]
    pub address: Option<String>,
    /// MAC aging in seconds.
    #[serde(default)]
    pub aging: Option<u64>,
}

/// `[[domain]]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DomainSpec {
    /// Short name (the domain is `<rig>-<name>`).
    pub name: String,
    /// Guest memory in MiB (default 32).
    #[serde(default)]
    pub memory: Option<u32>,
    /// Default route for statically addressed guests (default: the outside's address
    /// when the first static vif is on the bridge that carries the uplink).
    #[serde(default)]
    pub gateway: Option<String>,
    /// The vifs, in xl's order.
    #[serde(default)]
    pub vif: Vec<VifEntry>,
}

/// One vif: an xl vif spec, alone or with link settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct VifEntry {
    /// The xl vif spec (`bridge=xenbr0,ip=10.0.0.11/24`).
    pub spec: String,
    /// netback's credit limiter (xl `rate=`), e.g. `10Mb/s` or `1MB/s@20ms`.
    pub rate: Option<String>,
    /// One-way delay added in each direction of the link (`20ms`).
    pub delay: Option<String>,
    /// Jitter around the delay (at most the delay).
    pub jitter: Option<String>,
    /// Loss in each direction (`1%`).
    pub loss: Option<String>,
    /// Get the address by DHCP even on a plain bridge.
    pub dhcp: Option<bool>,
}

/// The table form of a vif.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VifTable {
    spec: String,
    #[serde(default)]
    rate: Option<String>,
    #[serde(default)]
    delay: Option<String>,
    #[serde(default)]
    jitter: Option<String>,
    #[serde(default)]
    loss: Option<String>,
    #[serde(default)]
    dhcp: Option<bool>,
}

impl<'de> Deserialize<'de> for VifEntry {
    /// A vif is either its xl spec string or a table with `spec` and link settings.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = VifEntry;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an xl vif spec string or a table with `spec` (and rate, delay, jitter, loss, dhcp)")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<VifEntry, E> {
                Ok(VifEntry {
                    spec: s.to_string(),
                    ..VifEntry::default()
                })
            }
            fn visit_map<M: MapAccess<'de>>(self, m: M) -> Result<VifEntry, M::Error> {
                let t = VifTable::deserialize(de::value::MapAccessDeserializer::new(m))?;
                Ok(VifEntry {
                    spec: t.spec,
                    rate: t.rate,
                    delay: t.delay,
                    jitter: t.jitter,
                    loss: t.loss,
                    dhcp: t.dhcp,
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// Reads a rig file; the error is the TOML reader's (line, column and the key).
pub fn parse(text: &str) -> Result<RigFile, String> {
    toml::from_str(text).map_err(|e| e.to_string().trim_end().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_example_reads() {
        let f = parse(
            r#"name = "lab"
[outside]
[[bridge]]
name = "xenbr0"
netdev = "eth0"
[[network]]
name = "default"
port_forwards = ["tcp:8080:192.168.122.50:5201"]
[[domain]]
name = "web"
vif = [ "bridge=xenbr0,ip=10.0.0.11/24",
        { spec = "bridge=virbr0", rate = "10Mb/s", delay = "5ms", loss = "1%" } ]
"#,
        )
        .unwrap();
        assert_eq!(f.name.as_deref(), Some("lab"));
        assert_eq!(f.outside, Some(OutsideSpec::default()));
        assert_eq!(f.bridge[0].netdev.as_deref(), Some("eth0"));
        assert_eq!(f.network[0]["name"].as_str(), Some("default"));
        let vifs = &f.domain[0].vif;
        assert_eq!(vifs[0].spec, "bridge=xenbr0,ip=10.0.0.11/24");
        assert_eq!(vifs[0].rate, None);
        assert_eq!(vifs[1].rate.as_deref(), Some("10Mb/s"));
        assert_eq!(vifs[1].loss.as_deref(), Some("1%"));
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = parse("[[domain]]\nname = \"a\"\nmemroy = 3\n").unwrap_err();
        assert!(e.contains("memroy"), "{e}");
        let e = parse("[[domain]]\nname = \"a\"\nvif = [ { spec = \"\", delya = \"1ms\" } ]\n")
            .unwrap_err();
        assert!(e.contains("delya"), "{e}");
        let e = parse("bogus = 1\n").unwrap_err();
        assert!(e.contains("bogus"), "{e}");
        let e = parse("[[domain]]\nname = \"a\"\nvif = [ 3 ]\n").unwrap_err();
        assert!(e.contains("vif spec"), "{e}");
    }
}
