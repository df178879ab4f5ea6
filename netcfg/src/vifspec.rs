//! The xl vif specification grammar (xl-network-configuration(5), reference §7).
//!
//! A vif spec is the string inside `vif = [ '...' ]` or the argument words of
//! `xl network-attach`. This module parses it into a [`VifSpec`] the way xl 4.17's
//! `parse_nic_config` does, fills the defaults libxl applies
//! ([`VifSpec::fill_defaults`]), assigns device ids ([`assign_create_devids`],
//! [`assign_list_position_devids`], [`next_attach_devid`]) and renders the xenstore
//! keys libxl writes for the device ([`VifSpec::to_backend_keys`],
//! [`VifSpec::to_frontend_keys`]). Everything here is pure: randomness comes in as a
//! [`rand::Rng`].
//!
//! ## Where this parser is stricter than xl 4.17 (on purpose)
//!
//! xl prints a message and carries on (or reads past the end of the string) in several
//! places; here each of those is an error that names the item:
//! * `mac=`: trailing text after the sixth byte, a missing byte, and the `strtoul`
//!   extras (leading blanks, signs, `0x`) are refused;
//! * `devid=` / `mtu=`: only decimal digits (xl's `strtoul` ignores trailing junk and
//!   accepts signs); `mtu` must be 68..=65535 (xl maps 0 to 1500);
//! * `bridge=`, `gatewaydev=`, `netdev=` and `vifname=` must be valid Linux interface
//!   names (1..=15 bytes, no `/`, `:` or whitespace, not `.`/`..`);
//! * `ip=` addresses are checked (IPv4 or IPv6, optional `/prefix`);
//! * `backend=` must name dom0: driver domains are not supported;
//! * `type=ioemu` is refused at parse time (libxl refuses it later for PV guests).

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use rand::Rng;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::rate::{parse_rate_spec, Rate};

/// libxl's default bridge when neither the spec nor xl.conf names one (§7).
pub const DEFAULT_BRIDGE: &str = "xenbr0";
/// libxl's default hotplug script when neither the spec nor xl.conf names one (§7).
pub const DEFAULT_SCRIPT: &str = "vif-bridge";
/// Directory relative script names are resolved against (libxl's
/// `libxl__xen_script_dir_path()`, Debian: /etc/xen/scripts; §4.6, §6).
pub const DEFAULT_SCRIPT_DIR: &str = "/etc/xen/scripts";
/// The MTU libxl assumes when none is given; the backend `mtu` key is written only
/// when the MTU differs from it (`LIBXL_DEVICE_NIC_MTU_DEFAULT`, §4.6).
pub const DEFAULT_MTU: u32 = 1500;
/// Smallest MTU accepted for `mtu=` (IPv4's minimum, RFC 791).
pub const MIN_MTU: u32 = 68;
/// Largest MTU accepted for `mtu=`.
pub const MAX_MTU: u32 = 65535;
/// Largest device id: libxl keeps devids in a C `int`.
pub const MAX_DEVID: u32 = i32::MAX as u32;
/// Xen's IEEE OUI, the first three bytes of every generated MAC (§7).
pub const XEN_OUI: [u8; 3] = [0x00, 0x16, 0x3e];
/// Longest Linux interface name in bytes (IFNAMSIZ − 1).
pub const MAX_IFNAME_LEN: usize = 15;

/// The vif keys xl 4.17 accepts for COLO fault tolerance (besides `forwarddev`); they
/// are copied verbatim to backend keys of the same name (§4.6, libxl_nic.c).
pub const COLO_KEYS: [&str; 48] = [
    "colo_sock_mirror_id",
    "colo_sock_mirror_ip",
    "colo_sock_mirror_port",
    "colo_sock_compare_sec_in_id",
    "colo_sock_compare_sec_in_ip",
    "colo_sock_compare_sec_in_port",
    "colo_sock_redirector0_id",
    "colo_sock_redirector0_ip",
    "colo_sock_redirector0_port",
    "colo_sock_redirector1_id",
    "colo_sock_redirector1_ip",
    "colo_sock_redirector1_port",
    "colo_sock_redirector2_id",
    "colo_sock_redirector2_ip",
    "colo_sock_redirector2_port",
    "colo_sock_compare_pri_in_id",
    "colo_sock_compare_pri_in_ip",
    "colo_sock_compare_pri_in_port",
    "colo_sock_compare_notify_id",
    "colo_sock_compare_notify_ip",
    "colo_sock_compare_notify_port",
    "colo_filter_mirror_queue",
    "colo_filter_mirror_outdev",
    "colo_filter_redirector0_queue",
    "colo_filter_redirector0_indev",
    "colo_filter_redirector0_outdev",
    "colo_filter_redirector1_queue",
    "colo_filter_redirector1_indev",
    "colo_filter_redirector1_outdev",
    "colo_compare_pri_in",
    "colo_compare_sec_in",
    "colo_compare_out",
    "colo_compare_notify_dev",
    "colo_sock_sec_redirector0_id",
    "colo_sock_sec_redirector0_ip",
    "colo_sock_sec_redirector0_port",
    "colo_sock_sec_redirector1_id",
    "colo_sock_sec_redirector1_ip",
    "colo_sock_sec_redirector1_port",
    "colo_filter_sec_redirector0_queue",
    "colo_filter_sec_redirector0_indev",
    "colo_filter_sec_redirector0_outdev",
    "colo_filter_sec_redirector1_queue",
    "colo_filter_sec_redirector1_indev",
    "colo_filter_sec_redirector1_outdev",
    "colo_filter_sec_rewriter0_queue",
    "colo_checkpoint_host",
    "colo_checkpoint_port",
];

// ---------------------------------------------------------------------------------
// MacAddr
// ---------------------------------------------------------------------------------

/// An Ethernet MAC address.
///
/// `Display` is the lower-case colon form libxl writes to xenstore
/// (`LIBXL_MAC_FMT`, "00:16:3e:0a:0b:0c"); `FromStr` accepts exactly that form in
/// either case (two hex digits per byte, `:` separators), which is what readers of
/// the xenstore `mac` keys (Linux netfront's `mac_pton`, libxl's `libxl__parse_mac`)
/// accept. The looser vif-spec form is [`MacAddr::parse_vif_form`]. Serialized as the
/// display string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MacAddr(pub [u8; 6]);

/// A MAC address text that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad MAC address `{text}'")]
pub struct MacParseError {
    /// The refused text.
    pub text: String,
}

impl MacAddr {
    /// The all-zero address, which libxl treats as "not set" (`libxl__mac_is_default`).
    pub const UNSET: MacAddr = MacAddr([0; 6]);

    /// The six bytes, most significant first.
    pub const fn octets(&self) -> [u8; 6] {
        self.0
    }

    /// True for 00:00:00:00:00:00, which libxl replaces by a random address.
    pub fn is_unset(&self) -> bool {
        self.0 == [0; 6]
    }

    /// True when the I/G bit of the first byte is set (group address): such an address
    /// cannot be a guest's source address.
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 0x01 != 0
    }

    /// A random address in Xen's OUI as libxl generates it: 00:16:3e:(r0 & 0x7f):r1:r2,
    /// with r0..r2 random bytes (libxl `libxl__device_nic_setdefault`, §7).
    pub fn random_xen(rng: &mut impl Rng) -> MacAddr {
        let mut r = [0u8; 3];
        rng.fill_bytes(&mut r);
        MacAddr([XEN_OUI[0], XEN_OUI[1], XEN_OUI[2], r[0] & 0x7f, r[1], r[2]])
    }

    /// Parses the vif-spec `mac=` form as xl's `parse_nic_config` reads it: six groups of
    /// hex digits (any number of digits, value ≤ 0xff) separated by any single
    /// character, e.g. `00:16:3e:01:02:03`, `00-16-3e-1-2-3`, `00.16.3E.01.02.03`.
    /// Stricter than xl: nothing may follow the sixth group.
    pub fn parse_vif_form(text: &str) -> Result<MacAddr, MacParseError> {
        let bad = || MacParseError {
            text: text.to_owned(),
        };
        let mut bytes = [0u8; 6];
        let mut rest = text;
        for (i, byte) in bytes.iter_mut().enumerate() {
            let digits = rest.bytes().take_while(u8::is_ascii_hexdigit).count();
            if digits == 0 {
                return Err(bad());
            }
            let (group, after) = rest.split_at(digits);
            let group = group.trim_start_matches('0');
            if group.len() > 2 {
                return Err(bad());
            }
            *byte = if group.is_empty() {
                0
            } else {
                u8::from_str_radix(group, 16).map_err(|_| bad())?
            };
            rest = after;
            if i < 5 {
                let mut chars = rest.chars();
                chars.next().ok_or_else(bad)?;
                rest = chars.as_str();
            }
        }
        if rest.is_empty() {
            Ok(MacAddr(bytes))
        } else {
            Err(bad())
        }
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl FromStr for MacAddr {
    type Err = MacParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || MacParseError {
            text: text.to_owned(),
        };
        let raw = text.as_bytes();
        if raw.len() != 17 {
            return Err(bad());
        }
        let mut bytes = [0u8; 6];
        for (i, byte) in bytes.iter_mut().enumerate() {
            let at = i * 3;
            let pair = raw.get(at..at + 2).ok_or_else(bad)?;
            if !pair.iter().all(u8::is_ascii_hexdigit) {
                return Err(bad());
            }
            let pair = std::str::from_utf8(pair).map_err(|_| bad())?;
            *byte = u8::from_str_radix(pair, 16).map_err(|_| bad())?;
            if i < 5 && raw.get(at + 2) != Some(&b':') {
                return Err(bad());
            }
        }
        Ok(MacAddr(bytes))
    }
}

/// Implements `Serialize`/`Deserialize` through `Display`/`FromStr`.
macro_rules! serde_via_string {
    ($ty:ty) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

serde_via_string!(MacAddr);

// ---------------------------------------------------------------------------------
// IpAddrSpec
// ---------------------------------------------------------------------------------

/// One address of a vif `ip=` setting: an IPv4 or IPv6 address with an optional
/// `/prefix` (the vif scripts hand each to iptables / `ip route`, §6). `Display` gives
/// `addr` or `addr/prefix`; `FromStr` parses the same. Serialized as that string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpAddrSpec {
    /// The address.
    pub addr: IpAddr,
    /// The prefix length, if one was written (≤ 32 for IPv4, ≤ 128 for IPv6).
    pub prefix_len: Option<u8>,
}

/// An `ip=` address that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad IP address `{text}' (expected IPv4 or IPv6, optionally with /prefix)")]
pub struct IpAddrSpecError {
    /// The refused text.
    pub text: String,
}

impl fmt::Display for IpAddrSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.prefix_len {
            Some(len) => write!(f, "{}/{len}", self.addr),
            None => write!(f, "{}", self.addr),
        }
    }
}

impl FromStr for IpAddrSpec {
    type Err = IpAddrSpecError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || IpAddrSpecError {
            text: text.to_owned(),
        };
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let prefix_len = match prefix {
            None => None,
            Some(p) => {
                if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad());
                }
                let len: u8 = p.parse().map_err(|_| bad())?;
                let max = if addr.is_ipv4() { 32 } else { 128 };
                if len > max {
                    return Err(bad());
                }
                Some(len)
            }
        };
        Ok(IpAddrSpec { addr, prefix_len })
    }
}

serde_via_string!(IpAddrSpec);

/// Parses an `ip=` value: addresses separated by spaces (the vif scripts split it on
/// whitespace, §6.1); each must be a valid [`IpAddrSpec`]. An empty value gives none.
pub fn parse_ip_list(text: &str) -> Result<Vec<IpAddrSpec>, IpAddrSpecError> {
    text.split_whitespace().map(str::parse).collect()
}

// ---------------------------------------------------------------------------------
// Names
// ---------------------------------------------------------------------------------

/// Checks a Linux network interface name as the kernel's `dev_valid_name` does:
/// 1..=15 bytes, not `.` or `..`, and no `/`, `:` or whitespace. Returns the reason
/// on failure.
pub fn validate_ifname(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("interface name is empty");
    }
    if name.len() > MAX_IFNAME_LEN {
        return Err("interface name longer than 15 bytes");
    }
    if name == "." || name == ".." {
        return Err("interface name may not be `.' or `..'");
    }
    if name
        .chars()
        .any(|c| c == '/' || c == ':' || c == '\0' || c.is_whitespace())
    {
        return Err("interface name may not contain `/', `:', NUL or whitespace");
    }
    Ok(())
}

/// Is `name` a way of naming the backend domain 0? libxl resolves `backend=` with
/// `libxl_domain_qualifier_to_domid`: an all-digit string (the empty string included,
/// a libxl quirk) is a domid, anything else a domain name; dom0's name is "Domain-0".
/// "dom0" is accepted as a common spelling.
pub fn names_dom0(name: &str) -> bool {
    if name.bytes().all(|b| b.is_ascii_digit()) {
        return name.bytes().all(|b| b == b'0');
    }
    name == "Domain-0" || name == "dom0"
}

// ---------------------------------------------------------------------------------
// VifSpec
// ---------------------------------------------------------------------------------

/// One virtual interface as described by a vif spec (§7), before or after
/// [`VifSpec::fill_defaults`]. `None` means "not given" and is replaced by the default
/// when defaults are filled (mac, bridge, script, gatewaydev) or at key-writing time
/// (mtu ⇒ 1500).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VifSpec {
    /// `mac=`; all-zero counts as unset (libxl quirk) and is replaced by a random address.
    pub mac: Option<MacAddr>,
    /// `bridge=`: the switch/bridge the vif joins (default "xenbr0").
    pub bridge: Option<String>,
    /// `gatewaydev=` (or deprecated `netdev=`): uplink for vif-route / vif-nat.
    pub gatewaydev: Option<String>,
    /// `vifname=`: backend interface name (default `vif<domid>.<devid>`).
    pub vifname: Option<String>,
    /// `script=`: hotplug script; absolute after [`VifSpec::fill_defaults`].
    pub script: Option<String>,
    /// `ip=`: addresses for the script (space separated in the spec).
    pub ip: Vec<IpAddrSpec>,
    /// `rate=`: transmit rate limit.
    pub rate: Option<Rate>,
    /// `devid=` or the id assigned by [`assign_create_devids`] / [`next_attach_devid`].
    pub devid: Option<u32>,
    /// `mtu=` (68..=65535); `None` means 1500.
    pub mtu: Option<u32>,
    /// `model=`: emulated NIC model; kept but meaningless for PV vifs.
    pub model: Option<String>,
    /// `trusted` / `untrusted` flags; frontend key `trusted` (default trusted).
    pub trusted: bool,
    /// `forwarddev=` and `colo_*=` settings in the order given (later repeats replace
    /// earlier ones); written to backend keys of the same name.
    pub colo: Vec<(String, String)>,
    /// Non-fatal remarks (deprecated `netdev`, ignored `accel`, odd MACs).
    pub warnings: Vec<String>,
}

impl Default for VifSpec {
    /// The empty spec `''`: everything defaulted, trusted.
    fn default() -> Self {
        VifSpec {
            mac: None,
            bridge: None,
            gatewaydev: None,
            vifname: None,
            script: None,
            ip: Vec::new(),
            rate: None,
            devid: None,
            mtu: None,
            model: None,
            trusted: true,
            colo: Vec::new(),
            warnings: Vec::new(),
        }
    }
}

/// Why a vif spec (or its defaults) was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VifSpecError {
    /// A recognised `key=value` item whose value is invalid.
    #[error("invalid vif spec item \"{item}\": {reason}")]
    InvalidItem {
        /// The whole item, e.g. `mac=zz:16:3e:00:00:01`.
        item: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An item that is neither a known `key=value` nor a known flag (xl's wording).
    #[error("unrecognized argument `{item}'")]
    Unrecognized {
        /// The item as given.
        item: String,
    },
    /// An invalid default (xl.conf `vif.default.*`).
    #[error("invalid vif default {key} = \"{value}\": {reason}")]
    InvalidDefault {
        /// The xl.conf key.
        key: String,
        /// Its value.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// [`VifSpec::to_backend_keys`] / [`VifSpec::to_frontend_keys`] called before the
    /// field was filled in.
    #[error("vif has no {field} yet: fill defaults and assign a devid first")]
    Unresolved {
        /// The missing field.
        field: &'static str,
    },
}

/// Defaults applied to fields a spec leaves out, as xl's `set_default_nic_values`
/// (xl.conf `vif.default.*`) and libxl's `libxl__device_nic_setdefault` do (§7).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VifDefaults {
    /// xl.conf `vif.default.bridge`; `None` ⇒ "xenbr0".
    pub bridge: Option<String>,
    /// xl.conf `vif.default.script`; `None` ⇒ "vif-bridge".
    pub script: Option<String>,
    /// xl.conf `vif.default.gatewaydev`; `None` ⇒ no gatewaydev.
    pub gatewaydev: Option<String>,
    /// xl.conf `vif.default.backend`; must name dom0 if set.
    pub backend: Option<String>,
    /// Directory relative script names resolve against (default /etc/xen/scripts).
    pub script_dir: String,
}

impl Default for VifDefaults {
    fn default() -> Self {
        VifDefaults {
            bridge: None,
            script: None,
            gatewaydev: None,
            backend: None,
            script_dir: DEFAULT_SCRIPT_DIR.to_owned(),
        }
    }
}

impl VifDefaults {
    /// Checks each default the way the corresponding spec item is checked.
    pub fn validate(&self) -> Result<(), VifSpecError> {
        let invalid = |key: &str, value: &str, reason: &str| VifSpecError::InvalidDefault {
            key: key.to_owned(),
            value: value.to_owned(),
            reason: reason.to_owned(),
        };
        if let Some(bridge) = &self.bridge {
            validate_ifname(bridge).map_err(|r| invalid("vif.default.bridge", bridge, r))?;
        }
        if let Some(dev) = &self.gatewaydev {
            validate_ifname(dev).map_err(|r| invalid("vif.default.gatewaydev", dev, r))?;
        }
        if let Some(script) = &self.script {
            validate_script(script).map_err(|r| invalid("vif.default.script", script, r))?;
        }
        if let Some(backend) = &self.backend {
            if !names_dom0(backend) {
                return Err(invalid(
                    "vif.default.backend",
                    backend,
                    DRIVER_DOMAINS_UNSUPPORTED,
                ));
            }
        }
        Ok(())
    }
}

const DRIVER_DOMAINS_UNSUPPORTED: &str =
    "driver domains are not supported (the backend must be dom0: 0 or Domain-0)";

/// Checks a `script=` value: non-empty, no NUL.
fn validate_script(script: &str) -> Result<(), &'static str> {
    if script.is_empty() {
        Err("script name is empty")
    } else if script.contains('\0') {
        Err("script name contains NUL")
    } else {
        Ok(())
    }
}

/// Resolves a script name as `libxl__abs_path` does: absolute paths stay, relative
/// ones are joined to `dir`.
pub fn resolve_script_path(script: &str, dir: &str) -> String {
    if script.starts_with('/') {
        script.to_owned()
    } else {
        format!("{}/{}", dir.trim_end_matches('/'), script)
    }
}

/// Parses a vif spec string as `xl create` reads each `vif = [...]` entry (§7): split
/// on `,` with empty items dropped (C `strtok`), leading spaces of each item skipped,
/// then each item applied in order (later items override earlier ones). An empty spec
/// means all defaults.
pub fn parse_vif_spec(spec: &str) -> Result<VifSpec, VifSpecError> {
    let mut vif = VifSpec::default();
    for item in spec.split(',').filter(|item| !item.is_empty()) {
        vif.apply_item(item.trim_start_matches(' '))?;
    }
    Ok(vif)
}

/// Parses `xl network-attach` arguments: each word is one item, taken verbatim (no
/// comma splitting and no space skipping, exactly as `main_networkattach` passes argv
/// words to `parse_nic_config`). So `bridge=xenbr0,ip=…` as one word is a bridge name
/// containing a comma — and refused here as an invalid interface name.
pub fn parse_vif_items<S: AsRef<str>>(items: &[S]) -> Result<VifSpec, VifSpecError> {
    let mut vif = VifSpec::default();
    for item in items {
        vif.apply_item(item.as_ref())?;
    }
    Ok(vif)
}

impl VifSpec {
    /// Applies one `key=value` or flag item (xl `parse_nic_config`): keys match exactly
    /// and case-sensitively, `key` must be followed directly by `=`.
    pub fn apply_item(&mut self, item: &str) -> Result<(), VifSpecError> {
        let invalid = |reason: &dyn fmt::Display| VifSpecError::InvalidItem {
            item: item.to_owned(),
            reason: reason.to_string(),
        };
        match item {
            "trusted" => {
                self.trusted = true;
                return Ok(());
            }
            "untrusted" => {
                self.trusted = false;
                return Ok(());
            }
            _ => {}
        }
        let Some((key, value)) = item.split_once('=') else {
            return Err(VifSpecError::Unrecognized {
                item: item.to_owned(),
            });
        };
        match key {
            "type" => {
                match value {
                    "vif" => {}
                    "ioemu" => return Err(invalid(
                        &"emulated (ioemu) interfaces need an HVM guest; domnet domains are PV \
                          (libxl: trying to create PV or PVH guest with an emulated interface)",
                    )),
                    _ => return Err(invalid(&"invalid parameter `type' (expected vif or ioemu)")),
                }
            }
            "mac" => {
                let mac =
                    MacAddr::parse_vif_form(value).map_err(|_| invalid(&"bad MAC address"))?;
                if mac.is_unset() {
                    self.warnings.push(format!(
                        "mac {mac} means \"not set\" to libxl: a random address will be used"
                    ));
                } else if mac.is_multicast() {
                    self.warnings.push(format!(
                        "mac {mac} is a multicast address; a guest cannot send from it"
                    ));
                }
                self.mac = Some(mac);
            }
            "bridge" => {
                validate_ifname(value).map_err(|r| invalid(&format!("bad bridge name: {r}")))?;
                self.bridge = Some(value.to_owned());
            }
            "netdev" | "gatewaydev" => {
                validate_ifname(value)
                    .map_err(|r| invalid(&format!("bad {key} interface name: {r}")))?;
                if key == "netdev" {
                    self.warnings.push(
                        "the netdev parameter is deprecated, please use gatewaydev instead"
                            .to_owned(),
                    );
                }
                self.gatewaydev = Some(value.to_owned());
            }
            "ip" => self.ip = parse_ip_list(value).map_err(|e| invalid(&e))?,
            "script" => {
                validate_script(value).map_err(|r| invalid(&r))?;
                self.script = Some(value.to_owned());
            }
            "backend" => {
                if !names_dom0(value) {
                    return Err(invalid(&DRIVER_DOMAINS_UNSUPPORTED));
                }
            }
            "vifname" => {
                validate_ifname(value).map_err(|r| invalid(&format!("bad vifname: {r}")))?;
                self.vifname = Some(value.to_owned());
            }
            "model" => self.model = Some(value.to_owned()),
            "rate" => self.rate = Some(parse_rate_spec(value).map_err(|e| invalid(&e))?),
            "accel" => self
                .warnings
                .push("the accel parameter for vifs is currently not supported".to_owned()),
            "devid" => {
                let devid = parse_decimal(value)
                    .filter(|&d| d <= u64::from(MAX_DEVID))
                    .ok_or_else(|| invalid(&format!("devid must be a number 0..={MAX_DEVID}")))?;
                self.devid = u32::try_from(devid).ok();
            }
            "mtu" => {
                let mtu = parse_decimal(value)
                    .filter(|m| (u64::from(MIN_MTU)..=u64::from(MAX_MTU)).contains(m))
                    .ok_or_else(|| {
                        invalid(&format!("mtu must be a number {MIN_MTU}..={MAX_MTU}"))
                    })?;
                self.mtu = u32::try_from(mtu).ok();
            }
            _ if key == "forwarddev" || COLO_KEYS.contains(&key) => {
                match self.colo.iter_mut().find(|(k, _)| k == key) {
                    Some(slot) => slot.1 = value.to_owned(),
                    None => self.colo.push((key.to_owned(), value.to_owned())),
                }
            }
            _ => {
                return Err(VifSpecError::Unrecognized {
                    item: item.to_owned(),
                })
            }
        }
        Ok(())
    }

    /// Fills what the spec left out, in libxl's order of precedence (spec, then
    /// xl.conf defaults, then built-ins): a random Xen-OUI MAC when none (or the
    /// all-zero one) was given, bridge "xenbr0", script "vif-bridge" (made absolute
    /// against `defaults.script_dir`), and the default gatewaydev. Refuses defaults
    /// that name a driver domain.
    pub fn fill_defaults(
        &mut self,
        defaults: &VifDefaults,
        rng: &mut impl Rng,
    ) -> Result<(), VifSpecError> {
        defaults.validate()?;
        if self.mac.is_none_or(|mac| mac.is_unset()) {
            self.mac = Some(MacAddr::random_xen(rng));
        }
        if self.bridge.is_none() {
            let bridge = defaults.bridge.as_deref().unwrap_or(DEFAULT_BRIDGE);
            self.bridge = Some(bridge.to_owned());
        }
        let script = self
            .script
            .as_deref()
            .or(defaults.script.as_deref())
            .unwrap_or(DEFAULT_SCRIPT);
        self.script = Some(resolve_script_path(script, &defaults.script_dir));
        if self.gatewaydev.is_none() {
            self.gatewaydev = defaults.gatewaydev.clone();
        }
        Ok(())
    }

    /// The MTU in effect: `mtu=` or 1500.
    pub fn effective_mtu(&self) -> u32 {
        self.mtu.unwrap_or(DEFAULT_MTU)
    }

    /// The backend keys libxl writes for this vif under
    /// `/local/domain/0/backend/vif/<domid>/<devid>/` (§4.6, libxl
    /// `libxl__set_xenstore_nic`), in libxl's order: `script`, `vifname`, COLO keys,
    /// `mac`, `ip` (space separated), `gatewaydev`, `rate` ("bytes,usec"), `mtu` (only
    /// if ≠ 1500), `bridge`, `handle` (= devid), `type` ("vif"). The toolstack adds
    /// the per-domain keys itself: `frontend`, `frontend-id`, `online`, `state`, and
    /// `hotplug-status` = "". Needs mac, bridge, script and devid set.
    pub fn to_backend_keys(&self) -> Result<Vec<(String, String)>, VifSpecError> {
        let mac = self.mac.ok_or(VifSpecError::Unresolved { field: "mac" })?;
        let devid = self
            .devid
            .ok_or(VifSpecError::Unresolved { field: "devid" })?;
        let bridge = self
            .bridge
            .as_ref()
            .ok_or(VifSpecError::Unresolved { field: "bridge" })?;
        let script = self
            .script
            .as_ref()
            .ok_or(VifSpecError::Unresolved { field: "script" })?;

        let mut keys = Vec::with_capacity(11 + self.colo.len());
        let mut push = |key: &str, value: String| keys.push((key.to_owned(), value));
        push("script", script.clone());
        if let Some(vifname) = &self.vifname {
            push("vifname", vifname.clone());
        }
        for (key, value) in &self.colo {
            push(key, value.clone());
        }
        push("mac", mac.to_string());
        if !self.ip.is_empty() {
            let ip: Vec<String> = self.ip.iter().map(ToString::to_string).collect();
            push("ip", ip.join(" "));
        }
        if let Some(dev) = &self.gatewaydev {
            push("gatewaydev", dev.clone());
        }
        if let Some(rate) = &self.rate {
            push(Rate::BACKEND_KEY, rate.to_string());
        }
        if self.effective_mtu() != DEFAULT_MTU {
            push("mtu", self.effective_mtu().to_string());
        }
        push("bridge", bridge.clone());
        push("handle", devid.to_string());
        push("type", "vif".to_owned());
        Ok(keys)
    }

    /// The vif-specific frontend keys libxl writes under
    /// `/local/domain/<domid>/device/vif/<devid>/` (§4.6): `handle`, `mac`, `trusted`
    /// ("1"/"0"). The read-only `mtu` key (always written) is [`Self::effective_mtu`];
    /// `backend`, `backend-id` and `state` are the toolstack's.
    pub fn to_frontend_keys(&self) -> Result<Vec<(String, String)>, VifSpecError> {
        let mac = self.mac.ok_or(VifSpecError::Unresolved { field: "mac" })?;
        let devid = self
            .devid
            .ok_or(VifSpecError::Unresolved { field: "devid" })?;
        Ok(vec![
            ("handle".to_owned(), devid.to_string()),
            ("mac".to_owned(), mac.to_string()),
            (
                "trusted".to_owned(),
                if self.trusted { "1" } else { "0" }.to_owned(),
            ),
        ])
    }
}

/// A non-empty run of ASCII decimal digits as a number (`None` if empty, non-digit or
/// beyond u64).
fn parse_decimal(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

// ---------------------------------------------------------------------------------
// Device ids
// ---------------------------------------------------------------------------------

/// libxl's create-time devid rule (`libxl__device_nic_set_devids`, §7): vifs without
/// a devid get 0, 1, 2, … in list order. libxl compares explicit devids against an
/// unsigned "last devid" initialised to −1 (SIZE_MAX), so explicit devids never raise
/// it and do not shift the sequence: `['devid=0', '']` yields 0 and 0 (a collision
/// libxl only notices when it writes xenstore).
///
/// Note: `xl create` itself pre-fills every vif's devid with its list position before
/// libxl runs (see [`assign_list_position_devids`]); this rule is what libxl applies to
/// devices whose devid is unset.
pub fn assign_create_devids(specs: &mut [VifSpec]) {
    let mut next: u32 = 0;
    for spec in specs.iter_mut().filter(|s| s.devid.is_none()) {
        spec.devid = Some(next);
        next = next.saturating_add(1);
    }
}

/// The devids `xl create` ends up with (§7, "DEVID = position in the list unless
/// devid= is given"): xl's `ARRAY_EXTEND_INIT` stores each vif's list index as its
/// devid before the spec is parsed, so unset devids take their position:
/// `['devid=5', '']` yields 5 and 1.
pub fn assign_list_position_devids(specs: &mut [VifSpec]) {
    for (position, spec) in specs.iter_mut().enumerate() {
        if spec.devid.is_none() {
            spec.devid = Some(u32::try_from(position).unwrap_or(u32::MAX));
        }
    }
}

/// The devid `xl network-attach` picks (libxl `libxl__device_nextid`, §7): one more
/// than the **last** entry of the `/libxl/<domid>/device/vif` directory listing (not
/// the largest), or 0 when there is none. `existing` is that listing, in order.
pub fn next_attach_devid(existing: &[u32]) -> u32 {
    existing.last().map_or(0, |last| last.saturating_add(1))
}

/// Which vif `xl network-detach <domain> <devid|mac>` means (§7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NicSelector {
    /// By device id.
    Devid(u32),
    /// By MAC address.
    Mac(MacAddr),
}

/// Parses the `network-detach` device argument: text containing `:` is a MAC (strict
/// `xx:xx:xx:xx:xx:xx`, as `libxl__parse_mac`), anything else a decimal devid. xl uses
/// `atoi`, so `foo` would silently mean devid 0; here it is an error.
pub fn parse_detach_target(arg: &str) -> Result<NicSelector, VifSpecError> {
    let unknown = || VifSpecError::InvalidItem {
        item: arg.to_owned(),
        reason: "Unknown device: expected a devid or a MAC address xx:xx:xx:xx:xx:xx".to_owned(),
    };
    if arg.contains(':') {
        arg.parse().map(NicSelector::Mac).map_err(|_| unknown())
    } else {
        parse_decimal(arg)
            .filter(|&d| d <= u64::from(MAX_DEVID))
            .and_then(|d| u32::try_from(d).ok())
            .map(NicSelector::Devid)
            .ok_or_else(unknown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn err(spec: &str) -> String {
        parse_vif_spec(spec).unwrap_err().to_string()
    }

    fn assert_err_names(spec: &str, needle: &str) {
        let e = err(spec);
        assert!(e.contains(&format!("\"{spec}\"")), "{e}");
        assert!(e.contains(needle), "{e}");
    }

    // ---- MacAddr ----

    #[test]
    fn mac_display_is_lower_case_colon_form() {
        let mac = MacAddr([0x00, 0x16, 0x3E, 0x0A, 0xBC, 0xFF]);
        assert_eq!(mac.to_string(), "00:16:3e:0a:bc:ff");
    }

    #[test]
    fn mac_from_str_is_strict() {
        assert_eq!(
            "00:16:3E:0a:bc:ff".parse::<MacAddr>().unwrap(),
            MacAddr([0x00, 0x16, 0x3e, 0x0a, 0xbc, 0xff])
        );
        for bad in [
            "",
            "00:16:3e:0a:bc",
            "00:16:3e:0a:bc:ff:",
            "00-16-3e-0a-bc-ff",
            "0:16:3e:0a:bc:ff0",
            "00:16:3e:0a:bc:fg",
            "00:16:3e:0a:bc:f",
            "00:16:3e:0a:bc:ffff",
            "é0:16:3e:0a:bc:f",
        ] {
            let e = bad.parse::<MacAddr>().unwrap_err();
            assert!(e.to_string().contains(bad), "{e}");
        }
    }

    #[test]
    fn mac_vif_form_accepts_any_single_separator_and_short_groups() {
        let want = MacAddr([0x00, 0x16, 0x3e, 0x01, 0x02, 0xab]);
        for text in [
            "00:16:3e:01:02:ab",
            "00-16-3e-01-02-AB",
            "0.16.3e.1.2.ab",
            "00 16 3e 01 02 ab",
            "000:0016:3e:1:2:ab",
            "00é16é3e:01:02:ab",
        ] {
            assert_eq!(MacAddr::parse_vif_form(text).unwrap(), want, "{text}");
        }
        for bad in [
            "zz:16:3e:00:00:01",
            "00:16:3e:00:00",
            "00:16:3e:00:00:",
            "00:16:3e:00:00:01:",
            "00:16:3e:00:00:01x",
            "100:16:3e:00:00:01",
            "00::16:3e:00:00",
            "0x0:16:3e:00:00:01",
            "",
        ] {
            assert!(MacAddr::parse_vif_form(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn random_mac_uses_xen_oui_and_clears_top_bit_of_fourth_byte() {
        let mut rng = StdRng::seed_from_u64(7);
        for _ in 0..200 {
            let mac = MacAddr::random_xen(&mut rng);
            assert_eq!(mac.0[..3], XEN_OUI);
            assert_eq!(mac.0[3] & 0x80, 0);
        }
        let mut seen_high = false;
        for _ in 0..200 {
            seen_high |= MacAddr::random_xen(&mut rng).0[4] & 0x80 != 0;
        }
        assert!(seen_high, "bytes 5 and 6 are fully random");
    }

    #[test]
    fn mac_serde_is_the_string_form() {
        let mac = MacAddr([0, 0x16, 0x3e, 1, 2, 3]);
        let json = toml::Value::try_from(mac).unwrap();
        assert_eq!(json.as_str(), Some("00:16:3e:01:02:03"));
        let back: MacAddr = json.try_into().unwrap();
        assert_eq!(back, mac);
    }

    // ---- items ----

    #[test]
    fn empty_spec_is_all_defaults() {
        assert_eq!(parse_vif_spec("").unwrap(), VifSpec::default());
        assert_eq!(parse_vif_spec(",,,").unwrap(), VifSpec::default());
        assert!(VifSpec::default().trusted);
    }

    #[test]
    fn full_spec_parses_every_key() {
        let vif = parse_vif_spec(
            "mac=00:16:3e:01:02:03, bridge=br1,gatewaydev=eth1,vifname=guest0,\
             script=vif-route,ip=10.0.0.5 10.0.1.0/24 fd00::1,rate=10Mb/s,devid=3,\
             mtu=9000,model=e1000,type=vif,backend=0,untrusted,forwarddev=eth2,\
             colo_compare_out=x",
        )
        .unwrap();
        assert_eq!(vif.mac, Some(MacAddr([0, 0x16, 0x3e, 1, 2, 3])));
        assert_eq!(vif.bridge.as_deref(), Some("br1"));
        assert_eq!(vif.gatewaydev.as_deref(), Some("eth1"));
        assert_eq!(vif.vifname.as_deref(), Some("guest0"));
        assert_eq!(vif.script.as_deref(), Some("vif-route"));
        let ip: Vec<String> = vif.ip.iter().map(ToString::to_string).collect();
        assert_eq!(ip, ["10.0.0.5", "10.0.1.0/24", "fd00::1"]);
        assert_eq!(vif.rate.unwrap().to_string(), "62500,50000");
        assert_eq!(vif.devid, Some(3));
        assert_eq!(vif.mtu, Some(9000));
        assert_eq!(vif.model.as_deref(), Some("e1000"));
        assert!(!vif.trusted);
        assert_eq!(
            vif.colo,
            [
                ("forwarddev".to_owned(), "eth2".to_owned()),
                ("colo_compare_out".to_owned(), "x".to_owned())
            ]
        );
        assert!(vif.warnings.is_empty(), "{:?}", vif.warnings);
    }

    #[test]
    fn later_items_override_and_flags_toggle() {
        let vif = parse_vif_spec(
            "bridge=a,bridge=b,untrusted,trusted,colo_compare_out=1,colo_compare_out=2",
        )
        .unwrap();
        assert_eq!(vif.bridge.as_deref(), Some("b"));
        assert!(vif.trusted);
        assert_eq!(vif.colo, [("colo_compare_out".to_owned(), "2".to_owned())]);
    }

    #[test]
    fn leading_spaces_skipped_but_not_tabs_or_trailing() {
        assert_eq!(
            parse_vif_spec("   bridge=br0").unwrap().bridge.as_deref(),
            Some("br0")
        );
        assert_eq!(err("\tbridge=br0"), "unrecognized argument `\tbridge=br0'");
        assert_err_names("bridge=br0 ", "bad bridge name");
    }

    #[test]
    fn unknown_items_are_refused_with_xl_wording() {
        assert_eq!(err("foo"), "unrecognized argument `foo'");
        assert_eq!(err("bridge=x,foo=bar"), "unrecognized argument `foo=bar'");
        assert_eq!(err("mac"), "unrecognized argument `mac'");
        assert_eq!(
            err("MAC=00:16:3e:00:00:01"),
            "unrecognized argument `MAC=00:16:3e:00:00:01'"
        );
        assert_eq!(err("trusted=1"), "unrecognized argument `trusted=1'");
        assert_eq!(err("colo_bogus=1"), "unrecognized argument `colo_bogus=1'");
        assert_eq!(err("a, ,b"), "unrecognized argument `a'");
        assert_eq!(err("bridge=x, "), "unrecognized argument `'");
    }

    #[test]
    fn bad_mac_error_names_item() {
        assert_eq!(
            err("mac=zz:16:3e:00:00:01"),
            "invalid vif spec item \"mac=zz:16:3e:00:00:01\": bad MAC address"
        );
        assert_err_names("mac=00:16:3e:00:00:100", "bad MAC address");
        assert_err_names("mac=", "bad MAC address");
    }

    #[test]
    fn odd_macs_warn() {
        let vif = parse_vif_spec("mac=00:00:00:00:00:00").unwrap();
        assert!(vif.warnings[0].contains("not set"), "{:?}", vif.warnings);
        let vif = parse_vif_spec("mac=01:00:5e:00:00:01").unwrap();
        assert!(vif.warnings[0].contains("multicast"), "{:?}", vif.warnings);
    }

    #[test]
    fn type_must_be_vif() {
        assert!(parse_vif_spec("type=vif").is_ok());
        assert_err_names("type=ioemu", "HVM");
        assert_err_names("type=tap", "invalid parameter `type'");
    }

    #[test]
    fn netdev_is_a_deprecated_alias() {
        let vif = parse_vif_spec("netdev=eth0").unwrap();
        assert_eq!(vif.gatewaydev.as_deref(), Some("eth0"));
        assert!(vif.warnings[0].contains("deprecated"));
        assert_err_names("netdev=a/b", "bad netdev interface name");
        assert_err_names("gatewaydev=", "bad gatewaydev interface name");
    }

    #[test]
    fn interface_names_are_checked() {
        assert!(parse_vif_spec("vifname=abcdefghijklmno").is_ok());
        assert_err_names("vifname=abcdefghijklmnop", "longer than 15");
        assert_err_names("vifname=a:b", "bad vifname");
        assert_err_names("vifname=..", "bad vifname");
        assert_err_names("vifname=", "bad vifname");
        assert_err_names("bridge=a b", "bad bridge name");
        assert_eq!(validate_ifname("eth0.100"), Ok(()));
    }

    #[test]
    fn network_attach_words_are_not_split() {
        let vif = parse_vif_items(&["bridge=br0".to_owned(), "mac=00:16:3e:00:00:07".to_owned()])
            .unwrap();
        assert_eq!(vif.bridge.as_deref(), Some("br0"));
        assert_eq!(vif.mac, Some(MacAddr([0, 0x16, 0x3e, 0, 0, 7])));
        let e = parse_vif_items(&["bridge=xenbr0,ip=10.0.0.5"]).unwrap_err();
        assert!(e.to_string().contains("bridge=xenbr0,ip=10.0.0.5"), "{e}");
        let e = parse_vif_items(&[" bridge=br0"]).unwrap_err();
        assert_eq!(e.to_string(), "unrecognized argument ` bridge=br0'");
        assert_eq!(parse_vif_items::<&str>(&[]).unwrap(), VifSpec::default());
    }

    #[test]
    fn ip_addresses_are_typed() {
        let vif = parse_vif_spec("ip=  10.0.0.1   ::1/128 ").unwrap();
        assert_eq!(vif.ip.len(), 2);
        assert_eq!(vif.ip[1].prefix_len, Some(128));
        assert!(parse_vif_spec("ip=").unwrap().ip.is_empty());
        for bad in [
            "10.0.0.256",
            "10.0.0.1/33",
            "::1/129",
            "10.0.0.1/",
            "10.0.0.1/x",
            "010.0.0.1",
            "host",
        ] {
            let spec = format!("ip={bad}");
            assert_err_names(&spec, &format!("bad IP address `{bad}'"));
        }
    }

    #[test]
    fn backend_must_be_dom0() {
        for ok in [
            "backend=0",
            "backend=Domain-0",
            "backend=dom0",
            "backend=00",
            "backend=",
        ] {
            assert!(parse_vif_spec(ok).is_ok(), "{ok}");
        }
        for bad in ["backend=1", "backend=netvm", "backend=domain-0"] {
            assert_err_names(bad, "driver domains are not supported");
        }
    }

    #[test]
    fn rate_errors_carry_the_rate_reason() {
        assert_err_names("rate=10MB", "invalid rate `10MB'");
        assert_err_names("rate=0B/s", "out of range");
        assert_err_names("rate=1MB/s@10h", "`10h'");
        assert_err_names("rate=@", "no rate");
    }

    #[test]
    fn devid_and_mtu_ranges() {
        assert_eq!(parse_vif_spec("devid=0").unwrap().devid, Some(0));
        assert_eq!(
            parse_vif_spec("devid=2147483647").unwrap().devid,
            Some(MAX_DEVID)
        );
        for bad in [
            "devid=2147483648",
            "devid=-1",
            "devid=",
            "devid=1x",
            "devid=+1",
            "devid= 1",
        ] {
            assert_err_names(bad, "devid must be a number");
        }
        assert_eq!(parse_vif_spec("mtu=68").unwrap().mtu, Some(68));
        assert_eq!(parse_vif_spec("mtu=65535").unwrap().mtu, Some(65535));
        for bad in ["mtu=67", "mtu=65536", "mtu=0", "mtu=", "mtu=1500b"] {
            assert_err_names(bad, "mtu must be a number 68..=65535");
        }
    }

    #[test]
    fn script_model_accel() {
        assert_err_names("script=", "script name is empty");
        let vif = parse_vif_spec("model=rtl8139,accel=foo").unwrap();
        assert_eq!(vif.model.as_deref(), Some("rtl8139"));
        assert!(vif.warnings[0].contains("accel"));
    }

    // ---- defaults ----

    #[test]
    fn fill_defaults_builtins() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut vif = parse_vif_spec("").unwrap();
        vif.fill_defaults(&VifDefaults::default(), &mut rng)
            .unwrap();
        assert_eq!(vif.bridge.as_deref(), Some("xenbr0"));
        assert_eq!(vif.script.as_deref(), Some("/etc/xen/scripts/vif-bridge"));
        assert_eq!(vif.gatewaydev, None);
        assert_eq!(vif.mac.unwrap().0[..3], XEN_OUI);
    }

    #[test]
    fn fill_defaults_precedence_and_unset_mac() {
        let mut rng = StdRng::seed_from_u64(2);
        let defaults = VifDefaults {
            bridge: Some("br9".into()),
            script: Some("/opt/s/vif-nat".into()),
            gatewaydev: Some("eth9".into()),
            backend: Some("Domain-0".into()),
            script_dir: "/x/".into(),
        };
        let mut vif = parse_vif_spec("mac=00:00:00:00:00:00").unwrap();
        vif.fill_defaults(&defaults, &mut rng).unwrap();
        assert_eq!(vif.bridge.as_deref(), Some("br9"));
        assert_eq!(vif.script.as_deref(), Some("/opt/s/vif-nat"));
        assert_eq!(vif.gatewaydev.as_deref(), Some("eth9"));
        assert!(!vif.mac.unwrap().is_unset());

        let mut vif =
            parse_vif_spec("bridge=br1,script=vif-route,gatewaydev=eth1,mac=00:16:3e:00:00:01")
                .unwrap();
        vif.fill_defaults(&defaults, &mut rng).unwrap();
        assert_eq!(vif.bridge.as_deref(), Some("br1"));
        assert_eq!(vif.script.as_deref(), Some("/x/vif-route"));
        assert_eq!(vif.gatewaydev.as_deref(), Some("eth1"));
        assert_eq!(vif.mac, Some(MacAddr([0, 0x16, 0x3e, 0, 0, 1])));
    }

    #[test]
    fn bad_defaults_are_named() {
        let mut rng = StdRng::seed_from_u64(3);
        let defaults = VifDefaults {
            backend: Some("drv".into()),
            ..VifDefaults::default()
        };
        let e = VifSpec::default()
            .fill_defaults(&defaults, &mut rng)
            .unwrap_err()
            .to_string();
        assert!(e.contains("vif.default.backend = \"drv\""), "{e}");
        assert!(e.contains("driver domains are not supported"), "{e}");
        let defaults = VifDefaults {
            bridge: Some("way-too-long-bridge".into()),
            ..VifDefaults::default()
        };
        let e = defaults.validate().unwrap_err().to_string();
        assert!(
            e.contains("vif.default.bridge = \"way-too-long-bridge\""),
            "{e}"
        );
    }

    // ---- keys ----

    #[test]
    fn backend_keys_match_libxl() {
        let mut rng = StdRng::seed_from_u64(4);
        let mut vif = parse_vif_spec(
            "mac=00:16:3e:0a:0b:0c,ip=10.0.0.5 10.0.0.6,rate=10Mb/s,gatewaydev=eth0,vifname=g0,forwarddev=eth3",
        )
        .unwrap();
        assert_eq!(
            vif.to_backend_keys(),
            Err(VifSpecError::Unresolved { field: "devid" })
        );
        vif.fill_defaults(&VifDefaults::default(), &mut rng)
            .unwrap();
        vif.devid = Some(2);
        let keys = vif.to_backend_keys().unwrap();
        let want: Vec<(String, String)> = [
            ("script", "/etc/xen/scripts/vif-bridge"),
            ("vifname", "g0"),
            ("forwarddev", "eth3"),
            ("mac", "00:16:3e:0a:0b:0c"),
            ("ip", "10.0.0.5 10.0.0.6"),
            ("gatewaydev", "eth0"),
            ("rate", "62500,50000"),
            ("bridge", "xenbr0"),
            ("handle", "2"),
            ("type", "vif"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(keys, want);
        assert_eq!(
            vif.to_frontend_keys().unwrap(),
            [
                ("handle".to_owned(), "2".to_owned()),
                ("mac".to_owned(), "00:16:3e:0a:0b:0c".to_owned()),
                ("trusted".to_owned(), "1".to_owned())
            ]
        );
        assert_eq!(vif.effective_mtu(), 1500);
    }

    #[test]
    fn mtu_key_only_when_not_1500() {
        let mut rng = StdRng::seed_from_u64(5);
        for (spec, want) in [("mtu=1500", None), ("mtu=9000", Some("9000")), ("", None)] {
            let mut vif = parse_vif_spec(spec).unwrap();
            vif.fill_defaults(&VifDefaults::default(), &mut rng)
                .unwrap();
            vif.devid = Some(0);
            let keys = vif.to_backend_keys().unwrap();
            let mtu = keys
                .iter()
                .find(|(k, _)| k == "mtu")
                .map(|(_, v)| v.as_str());
            assert_eq!(mtu, want, "{spec}");
        }
        let mut vif = parse_vif_spec("untrusted,mac=00:16:3e:00:00:01").unwrap();
        assert_eq!(
            vif.to_frontend_keys(),
            Err(VifSpecError::Unresolved { field: "devid" })
        );
        vif.devid = Some(0);
        assert_eq!(vif.to_frontend_keys().unwrap()[2].1, "0");
    }

    #[test]
    fn script_resolution() {
        assert_eq!(resolve_script_path("/a/b", "/etc/xen/scripts"), "/a/b");
        assert_eq!(
            resolve_script_path("vif-nat", "/etc/xen/scripts"),
            "/etc/xen/scripts/vif-nat"
        );
        assert_eq!(resolve_script_path("vif-nat", "/s/"), "/s/vif-nat");
    }

    // ---- devids ----

    fn with_devids(devids: &[Option<u32>]) -> Vec<VifSpec> {
        devids
            .iter()
            .map(|&devid| VifSpec {
                devid,
                ..VifSpec::default()
            })
            .collect()
    }

    fn devids(specs: &[VifSpec]) -> Vec<u32> {
        specs.iter().map(|s| s.devid.unwrap()).collect()
    }

    #[test]
    fn create_devids_follow_libxl() {
        let mut specs = with_devids(&[None, None, None]);
        assign_create_devids(&mut specs);
        assert_eq!(devids(&specs), [0, 1, 2]);
        // Explicit devids do not shift the sequence (unsigned -1 comparison quirk).
        let mut specs = with_devids(&[Some(5), None, Some(0), None]);
        assign_create_devids(&mut specs);
        assert_eq!(devids(&specs), [5, 0, 0, 1]);
    }

    #[test]
    fn list_position_devids_follow_xl() {
        let mut specs = with_devids(&[Some(5), None, None]);
        assign_list_position_devids(&mut specs);
        assert_eq!(devids(&specs), [5, 1, 2]);
    }

    #[test]
    fn attach_devid_is_last_plus_one() {
        assert_eq!(next_attach_devid(&[]), 0);
        assert_eq!(next_attach_devid(&[0, 1, 2]), 3);
        assert_eq!(next_attach_devid(&[5, 1]), 2);
        assert_eq!(next_attach_devid(&[u32::MAX]), u32::MAX);
    }

    #[test]
    fn detach_target_forms() {
        assert_eq!(parse_detach_target("3").unwrap(), NicSelector::Devid(3));
        assert_eq!(
            parse_detach_target("00:16:3e:00:00:01").unwrap(),
            NicSelector::Mac(MacAddr([0, 0x16, 0x3e, 0, 0, 1]))
        );
        for bad in ["foo", "", "00:16:3e:00:00", "-1", "99999999999"] {
            let e = parse_detach_target(bad).unwrap_err().to_string();
            assert!(e.contains("Unknown device"), "{e}");
        }
    }

    #[test]
    fn vifspec_serde_round_trip() {
        let vif = parse_vif_spec("mac=00:16:3e:00:00:01,ip=10.0.0.1/24,rate=1MB/s").unwrap();
        let text = toml::to_string(&vif).unwrap();
        let back: VifSpec = toml::from_str(&text).unwrap();
        assert_eq!(back, vif);
        assert!(text.contains("\"00:16:3e:00:00:01\""), "{text}");
        assert!(text.contains("\"10.0.0.1/24\""), "{text}");
    }

    proptest! {
        #[test]
        fn vif_parser_never_panics(spec in any::<String>()) {
            let _ = parse_vif_spec(&spec);
            let _ = parse_vif_items(&[spec.as_str()]);
            let _ = parse_detach_target(&spec);
            let _ = MacAddr::parse_vif_form(&spec);
        }

        #[test]
        fn vif_parser_never_panics_on_plausible_items(
            items in prop::collection::vec(
                (prop::sample::select(vec!["mac", "bridge", "ip", "rate", "devid", "mtu", "vifname",
                    "backend", "type", "script", "netdev", "colo_compare_out", "trusted"]),
                 "[0-9a-fA-F:./@ bsmuGMKB-]{0,24}"),
                0..6)
        ) {
            let spec: Vec<String> = items.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let _ = parse_vif_spec(&spec.join(","));
        }

        #[test]
        fn mac_display_from_str_round_trip(bytes in any::<[u8; 6]>()) {
            let mac = MacAddr(bytes);
            prop_assert_eq!(mac.to_string().parse::<MacAddr>().unwrap(), mac);
            prop_assert_eq!(MacAddr::parse_vif_form(&mac.to_string()).unwrap(), mac);
            prop_assert_eq!(mac.to_string().to_uppercase().parse::<MacAddr>().unwrap(), mac);
        }

        #[test]
        fn ip_spec_round_trip(addr in any::<IpAddr>(), prefix in proptest::option::of(0u8..=32)) {
            let spec = IpAddrSpec { addr, prefix_len: prefix };
            prop_assert_eq!(spec.to_string().parse::<IpAddrSpec>().unwrap(), spec);
        }
    }
}
