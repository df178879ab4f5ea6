//! xl.cfg domain configuration files and xl.conf vif defaults.
//!
//! The file syntax (libxlu's grammar) lives in the `xlcfg_syntax` submodule and is
//! re-exported here: [`parse_xl_cfg`] turns text into an [`XlConfig`]. This module
//! gives the settings their meaning: [`domain_config`] extracts the subset of xl.cfg
//! keys domnet uses into a [`DomainConfig`] (reference §7, §4.6), and
//! [`vif_defaults_from_xl_conf`] reads xl.conf's `vif.default.*` keys. Pure: no I/O,
//! randomness passed in.
//!
//! ## Differences from xl 4.17 (deliberate)
//!
//! xl prints a warning and carries on for many bad values (e.g. an unparsable
//! `memory` is ignored and the default used; a bad vif item is ignored during
//! `xl create`). Here every bad value of a key we use is an error naming the key and
//! the value. Keys we do not use are accepted and reported in
//! [`DomainConfig::warnings`]. `domid` is a domnet extension (xl picks the domid).

#[path = "xlcfg_syntax.rs"]
mod syntax;

use rand::Rng;
use serde::{Deserialize, Serialize};

pub use syntax::{strtol_whole, SyntaxError, Value, XlConfig, MAX_LIST_DEPTH};

/// Parses xl.cfg / xl.conf text with libxlu's grammar (see the `xlcfg_syntax` module
/// docs for the rules and quirks); errors carry line:column and what was expected.
pub fn parse_xl_cfg(text: &str) -> Result<XlConfig, CfgError> {
    Ok(syntax::parse_xl_cfg(text)?)
}

use crate::vifspec::{
    assign_list_position_devids, parse_vif_spec, VifDefaults, VifSpec, VifSpecError,
};

/// Default guest memory when `memory` is absent, in MiB.
pub const DEFAULT_MEMORY_MIB: u64 = 128;
/// Largest `memory` accepted, in MiB: the size in bytes must fit in 64 bits.
pub const MAX_MEMORY_MIB: u64 = u64::MAX >> 20;
/// Default number of vcpus when `vcpus` is absent.
pub const DEFAULT_VCPUS: u32 = 1;
/// Largest `vcpus` accepted (Xen's `HVM_MAX_VCPUS`; keeps the per-vcpu xenstore
/// nodes bounded).
pub const MAX_VCPUS: u32 = 128;
/// Default and largest `max_grant_frames` (grant table v1 frames per domain).
pub const DEFAULT_MAX_GRANT_FRAMES: u32 = 64;
/// First domid Xen reserves for special domains (`DOMID_FIRST_RESERVED`, 0x7FF0):
/// DOMID_SELF, DOMID_IO, DOMID_XEN, DOMID_COW, DOMID_INVALID, DOMID_IDLE…
pub const DOMID_FIRST_RESERVED: u16 = 0x7FF0;
/// Longest domain name accepted.
pub const MAX_NAME_LEN: usize = 64;

/// The keys [`domain_config`] understands; any other key produces a warning.
pub const KNOWN_KEYS: [&str; 7] = [
    "name",
    "uuid",
    "memory",
    "vcpus",
    "domid",
    "vif",
    "max_grant_frames",
];

/// Why a configuration file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CfgError {
    /// The text does not follow the xl.cfg grammar.
    #[error("config syntax error at {0}")]
    Syntax(#[from] SyntaxError),
    /// A required key is absent.
    #[error("missing required key `{key}`")]
    Missing {
        /// The key.
        key: String,
    },
    /// A key holds the wrong kind of value (e.g. a list where a string is needed).
    #[error("key `{key}` = {value}: {problem}")]
    WrongType {
        /// The key.
        key: String,
        /// The value, in config syntax.
        value: String,
        /// What was expected.
        problem: String,
    },
    /// A key's value is of the right kind but not acceptable.
    #[error("key `{key}` = {value}: {reason}")]
    InvalidValue {
        /// The key.
        key: String,
        /// The value, in config syntax.
        value: String,
        /// Why it is refused.
        reason: String,
    },
    /// An entry of the `vif` list is not a valid vif spec.
    #[error("vif[{index}] = {spec:?}: {source}")]
    Vif {
        /// Position in the `vif` list.
        index: usize,
        /// The spec string.
        spec: String,
        /// What the vif parser said.
        source: VifSpecError,
    },
    /// Two vifs end up with the same devid.
    #[error("vif[{first}] and vif[{second}] both have devid {devid}")]
    DuplicateDevid {
        /// The devid.
        devid: u32,
        /// Position of the first vif using it.
        first: usize,
        /// Position of the second.
        second: usize,
    },
}

impl CfgError {
    fn invalid(key: &str, value: &Value, reason: impl Into<String>) -> Self {
        CfgError::InvalidValue {
            key: key.to_owned(),
            value: value.to_string(),
            reason: reason.into(),
        }
    }

    fn wrong_type(key: &str, value: &Value, problem: impl Into<String>) -> Self {
        CfgError::WrongType {
            key: key.to_owned(),
            value: value.to_string(),
            problem: problem.into(),
        }
    }
}

// ---------------------------------------------------------------------------------
// Typed access (libxlu xlu_cfg_get_string / _get_long / _get_list)
// ---------------------------------------------------------------------------------

/// Reads `key` as a single value in string form (libxlu `xlu_cfg_get_string`): a
/// string as is, a number as its decimal text (xl keeps the token's spelling, so
/// `name = 0x10` is "0x10" there and "16" here); a list is refused.
pub fn get_string(cfg: &XlConfig, key: &str) -> Result<Option<String>, CfgError> {
    match cfg.get(key) {
        None => Ok(None),
        Some(Value::Str(s)) => Ok(Some(s.clone())),
        Some(Value::Num(n)) => Ok(Some(n.to_string())),
        Some(v @ Value::List(_)) => Err(CfgError::wrong_type(
            key,
            v,
            "is a list but should be a single value",
        )),
    }
}

/// Reads `key` as a number (libxlu `xlu_cfg_get_long`): a number token, or a string
/// read with C `strtol(.., 0)` rules (so `memory = "0x100"` works, as in xl); a list
/// is refused.
pub fn get_long(cfg: &XlConfig, key: &str) -> Result<Option<i64>, CfgError> {
    match cfg.get(key) {
        None => Ok(None),
        Some(Value::Num(n)) => Ok(Some(*n)),
        Some(v @ Value::Str(s)) => strtol_whole(s)
            .map(Some)
            .map_err(|reason| CfgError::invalid(key, v, reason)),
        Some(v @ Value::List(_)) => Err(CfgError::wrong_type(
            key,
            v,
            "is a list but should be a single value",
        )),
    }
}

/// Reads `key` as a list (libxlu `xlu_cfg_get_list`); a single value is refused.
pub fn get_list<'a>(cfg: &'a XlConfig, key: &str) -> Result<Option<&'a [Value]>, CfgError> {
    match cfg.get(key) {
        None => Ok(None),
        Some(Value::List(items)) => Ok(Some(items)),
        Some(v) => Err(CfgError::wrong_type(
            key,
            v,
            "is a single value but should be a list",
        )),
    }
}

/// Reads an optional number and checks it lies in `range`.
fn get_bounded<T>(
    cfg: &XlConfig,
    key: &str,
    range: std::ops::RangeInclusive<T>,
    what: &str,
) -> Result<Option<T>, CfgError>
where
    T: Copy + PartialOrd + std::fmt::Display + TryFrom<i64>,
{
    let Some(n) = get_long(cfg, key)? else {
        return Ok(None);
    };
    match T::try_from(n) {
        Ok(v) if range.contains(&v) => Ok(Some(v)),
        _ => {
            let value = cfg.get(key).cloned().unwrap_or(Value::Num(n));
            Err(CfgError::invalid(
                key,
                &value,
                format!("{what} must be {}..={}", range.start(), range.end()),
            ))
        }
    }
}

// ---------------------------------------------------------------------------------
// DomainConfig
// ---------------------------------------------------------------------------------

/// The part of an xl.cfg domnet acts on, validated and defaulted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainConfig {
    /// `name` (required): 1–64 of `[A-Za-z0-9_.-]`, not starting with `-`; also used
    /// for the domain's network namespace.
    pub name: String,
    /// `uuid`, lower-case 8-4-4-4-12 hex; a random (version 4) UUID when absent.
    pub uuid: String,
    /// `memory` in MiB (default 128).
    pub memory_mib: u64,
    /// `vcpus` (default 1).
    pub vcpus: u32,
    /// `domid` (domnet extension): requested domain id, 1..0x7FF0.
    pub domid: Option<u16>,
    /// `vif` entries, parsed, with devids assigned as `xl create` does. Defaults (MAC,
    /// bridge, script) are not filled yet: see [`DomainConfig::fill_vif_defaults`].
    pub vifs: Vec<VifSpec>,
    /// `max_grant_frames` (default 64, 1..=64).
    pub max_grant_frames: u32,
    /// Unknown keys and non-fatal vif remarks, in file order.
    pub warnings: Vec<String>,
}

/// Checks a domain name: 1..=64 characters of `[A-Za-z0-9_.-]`, not starting with
/// `-` (so it is safe as a network namespace name and a command-line argument).
pub fn validate_domain_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("the domain name is empty");
    }
    if name.len() > MAX_NAME_LEN {
        return Err("the domain name is longer than 64 characters");
    }
    if name.starts_with('-') {
        return Err("the domain name may not start with `-`");
    }
    if name == "." || name == ".." {
        return Err("the domain name may not be `.` or `..`");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    {
        return Err("the domain name may contain only letters, digits, `_`, `.` and `-`");
    }
    Ok(())
}

/// Checks a UUID in the 8-4-4-4-12 hex form (libuuid `uuid_parse`, used by libxl) and
/// returns it in lower case.
pub fn normalize_uuid(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    if bytes.len() != 36 {
        return None;
    }
    let ok = bytes.iter().enumerate().all(|(i, b)| match i {
        8 | 13 | 18 | 23 => *b == b'-',
        _ => b.is_ascii_hexdigit(),
    });
    ok.then(|| text.to_ascii_lowercase())
}

/// A random version-4 UUID (RFC 4122 §4.4), as libxl's `libxl_uuid_generate` makes
/// one for a domain without `uuid`.
pub fn random_uuid(rng: &mut impl Rng) -> String {
    let mut b = [0u8; 16];
    rng.fill_bytes(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// Extracts and validates the keys domnet uses from a parsed xl.cfg (see
/// [`DomainConfig`] for each key's rule). The `vif` list entries are parsed with
/// [`parse_vif_spec`]; entries without `devid=` get their list position, which is what
/// `xl create` does (xl pre-fills each vif's devid with its index before parsing);
/// two vifs with the same devid are refused. `rng` supplies the UUID when `uuid` is
/// absent.
pub fn domain_config(cfg: &XlConfig, rng: &mut impl Rng) -> Result<DomainConfig, CfgError> {
    let name = get_string(cfg, "name")?.ok_or_else(|| CfgError::Missing {
        key: "name".to_owned(),
    })?;
    if let Err(reason) = validate_domain_name(&name) {
        return Err(CfgError::invalid("name", &Value::Str(name), reason));
    }

    let uuid = match get_string(cfg, "uuid")? {
        None => random_uuid(rng),
        Some(text) => normalize_uuid(&text).ok_or_else(|| {
            CfgError::invalid(
                "uuid",
                &Value::Str(text.clone()),
                "not a UUID (expected 8-4-4-4-12 hex digits, e.g. \
                 0f0e0d0c-0b0a-0908-0706-050403020100)",
            )
        })?,
    };

    let memory_mib = get_bounded(cfg, "memory", 1..=MAX_MEMORY_MIB, "memory (MiB)")?
        .unwrap_or(DEFAULT_MEMORY_MIB);
    let vcpus = get_bounded(cfg, "vcpus", 1..=MAX_VCPUS, "vcpus")?.unwrap_or(DEFAULT_VCPUS);
    let max_grant_frames = get_bounded(
        cfg,
        "max_grant_frames",
        1..=DEFAULT_MAX_GRANT_FRAMES,
        "max_grant_frames",
    )?
    .unwrap_or(DEFAULT_MAX_GRANT_FRAMES);
    let domid = domid(cfg)?;

    let mut warnings = Vec::new();
    for key in cfg.keys() {
        if !KNOWN_KEYS.contains(&key) {
            warnings.push(format!("unknown key `{key}` ignored"));
        }
    }

    let mut vifs = Vec::new();
    for (index, entry) in get_list(cfg, "vif")?.unwrap_or_default().iter().enumerate() {
        let spec = match entry {
            Value::Str(s) => s.clone(),
            Value::Num(n) => n.to_string(),
            Value::List(_) => {
                return Err(CfgError::wrong_type(
                    "vif",
                    entry,
                    format!("entry {index} is a list but should be a vif spec string"),
                ))
            }
        };
        let vif = parse_vif_spec(&spec).map_err(|source| CfgError::Vif {
            index,
            spec: spec.clone(),
            source,
        })?;
        warnings.extend(vif.warnings.iter().map(|w| format!("vif[{index}]: {w}")));
        vifs.push(vif);
    }
    assign_list_position_devids(&mut vifs);
    check_unique_devids(&vifs)?;

    Ok(DomainConfig {
        name,
        uuid,
        memory_mib,
        vcpus,
        domid,
        vifs,
        max_grant_frames,
        warnings,
    })
}

/// Reads `domid`: 1..0x7FF0; 0 is dom0 and 0x7FF0.. are Xen's reserved ids.
fn domid(cfg: &XlConfig) -> Result<Option<u16>, CfgError> {
    let Some(n) = get_long(cfg, "domid")? else {
        return Ok(None);
    };
    let value = cfg.get("domid").cloned().unwrap_or(Value::Num(n));
    match n {
        0 => Err(CfgError::invalid(
            "domid",
            &value,
            "domain 0 is dom0 (the host) and cannot be created",
        )),
        n if n >= i64::from(DOMID_FIRST_RESERVED) => Err(CfgError::invalid(
            "domid",
            &value,
            "domids from 0x7FF0 (32752) up are reserved by Xen (DOMID_FIRST_RESERVED)",
        )),
        n => u16::try_from(n)
            .map(Some)
            .map_err(|_| CfgError::invalid("domid", &value, "domid must be 1..=32751")),
    }
}

fn check_unique_devids(vifs: &[VifSpec]) -> Result<(), CfgError> {
    for (second, vif) in vifs.iter().enumerate() {
        let Some(devid) = vif.devid else { continue };
        if let Some(first) = vifs[..second].iter().position(|v| v.devid == Some(devid)) {
            return Err(CfgError::DuplicateDevid {
                devid,
                first,
                second,
            });
        }
    }
    Ok(())
}

impl DomainConfig {
    /// Fills every vif's defaults ([`VifSpec::fill_defaults`]: random MAC, bridge,
    /// absolute script path, gatewaydev) — done once at domain creation, since the
    /// MACs must then stay stable.
    pub fn fill_vif_defaults(
        &mut self,
        defaults: &VifDefaults,
        rng: &mut impl Rng,
    ) -> Result<(), CfgError> {
        defaults.validate().map_err(defaults_error)?;
        for vif in &mut self.vifs {
            vif.fill_defaults(defaults, rng).map_err(defaults_error)?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------
// xl.conf
// ---------------------------------------------------------------------------------

/// Reads the vif defaults of an xl.conf (xl 4.17 `parse_global_config`):
/// `vif.default.script`, `vif.default.bridge`, `vif.default.gatewaydev`,
/// `vif.default.backend`, and the deprecated `vifscript` / `defaultbridge` (used with a
/// warning; the `vif.default.*` names win when both are set). Other xl.conf keys are
/// ignored. Returns the defaults (script_dir left at /etc/xen/scripts) and warnings.
pub fn vif_defaults_from_xl_conf(cfg: &XlConfig) -> Result<(VifDefaults, Vec<String>), CfgError> {
    let mut warnings = Vec::new();
    let mut defaults = VifDefaults::default();
    for (old, new, slot) in [
        ("vifscript", "vif.default.script", &mut defaults.script),
        ("defaultbridge", "vif.default.bridge", &mut defaults.bridge),
    ] {
        if let Some(value) = get_string(cfg, old)? {
            warnings.push(format!(
                "the global config option {old} is deprecated, please switch to {new}"
            ));
            *slot = Some(value);
        }
        if let Some(value) = get_string(cfg, new)? {
            *slot = Some(value);
        }
    }
    defaults.gatewaydev = get_string(cfg, "vif.default.gatewaydev")?;
    defaults.backend = get_string(cfg, "vif.default.backend")?;
    defaults.validate().map_err(defaults_error)?;
    Ok((defaults, warnings))
}

/// Reports an invalid vif default as the xl.conf key and value it came from.
fn defaults_error(error: VifSpecError) -> CfgError {
    match error {
        VifSpecError::InvalidDefault { key, value, reason } => CfgError::InvalidValue {
            key,
            value: Value::Str(value).to_string(),
            reason,
        },
        other => CfgError::InvalidValue {
            key: "vif defaults".to_owned(),
            value: String::new(),
            reason: other.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vifspec::MacAddr;
    use proptest::prelude::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn rng() -> StdRng {
        StdRng::seed_from_u64(42)
    }

    fn dc(text: &str) -> Result<DomainConfig, CfgError> {
        domain_config(&parse_xl_cfg(text)?, &mut rng())
    }

    fn dc_err(text: &str) -> String {
        dc(text).unwrap_err().to_string()
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let d = dc("name = 'd1'\n").unwrap();
        assert_eq!(d.name, "d1");
        assert_eq!(d.memory_mib, 128);
        assert_eq!(d.vcpus, 1);
        assert_eq!(d.domid, None);
        assert_eq!(d.max_grant_frames, 64);
        assert!(d.vifs.is_empty());
        assert!(d.warnings.is_empty());
        assert!(normalize_uuid(&d.uuid).is_some(), "{}", d.uuid);
        assert_eq!(&d.uuid[14..15], "4", "version 4: {}", d.uuid);
        assert!("89ab".contains(&d.uuid[19..20]), "variant: {}", d.uuid);
        // Same rng seed ⇒ same uuid (pure).
        assert_eq!(dc("name = 'd1'\n").unwrap().uuid, d.uuid);
    }

    #[test]
    fn full_config() {
        let d = dc(
            "name = \"web-1.example\"\nuuid = \"0F0E0D0C-0B0A-0908-0706-050403020100\"\n\
                    memory = 512\nvcpus = '4'\ndomid = 7\nmax_grant_frames = 0x20\n\
                    vif = [ 'mac=00:16:3e:00:00:01', 'bridge=br1,devid=7', '' ]\n\
                    kernel = '/boot/vmlinuz'\non_crash = 'destroy'\nkernel = 'again'\n",
        )
        .unwrap();
        assert_eq!(d.name, "web-1.example");
        assert_eq!(d.uuid, "0f0e0d0c-0b0a-0908-0706-050403020100");
        assert_eq!(d.memory_mib, 512);
        assert_eq!(d.vcpus, 4);
        assert_eq!(d.domid, Some(7));
        assert_eq!(d.max_grant_frames, 32);
        assert_eq!(d.vifs.len(), 3);
        assert_eq!(d.vifs[0].mac, Some(MacAddr([0, 0x16, 0x3e, 0, 0, 1])));
        let devids: Vec<_> = d.vifs.iter().map(|v| v.devid).collect();
        assert_eq!(devids, [Some(0), Some(7), Some(2)]);
        assert_eq!(
            d.warnings,
            [
                "unknown key `kernel` ignored",
                "unknown key `on_crash` ignored"
            ]
        );
    }

    #[test]
    fn name_rules() {
        assert_eq!(dc_err("memory = 1\n"), "missing required key `name`");
        for (name, needle) in [
            ("", "empty"),
            ("-x", "start with `-`"),
            ("a b", "only letters"),
            ("a/b", "only letters"),
            ("..", "`..`"),
        ] {
            let e = dc_err(&format!("name = '{name}'\n"));
            assert!(e.contains(&format!("key `name` = \"{name}\"")), "{e}");
            assert!(e.contains(needle), "{e}");
        }
        let long = "a".repeat(65);
        assert!(dc_err(&format!("name = '{long}'\n")).contains("longer than 64"));
        assert!(dc(&format!("name = '{}'\n", "a".repeat(64))).is_ok());
        assert_eq!(dc("name = 123\n").unwrap().name, "123");
        assert_eq!(
            dc_err("name = ['a']\n"),
            "key `name` = [\"a\"]: is a list but should be a single value"
        );
    }

    #[test]
    fn uuid_rules() {
        for bad in [
            "0f0e0d0c-0b0a-0908-0706-05040302010",
            "0f0e0d0c0b0a-0908-0706-050403020100x",
            "0f0e0d0c-0b0a-0908-0706-05040302010g",
            "{0f0e0d0c-0b0a-0908-0706-050403020100}",
        ] {
            let e = dc_err(&format!("name='a'\nuuid = '{bad}'\n"));
            assert!(
                e.contains(&format!("key `uuid` = \"{bad}\": not a UUID")),
                "{e}"
            );
        }
    }

    #[test]
    fn memory_vcpus_grant_frames_bounds() {
        assert_eq!(
            dc_err("name='a'\nmemory = 0\n"),
            "key `memory` = 0: memory (MiB) must be 1..=17592186044415"
        );
        assert!(dc_err("name='a'\nmemory = '-5'\n").contains("key `memory` = \"-5\""));
        assert_eq!(
            dc_err("name='a'\nmemory = 'lots'\n"),
            "key `memory` = \"lots\": not a valid number"
        );
        assert_eq!(
            dc("name='a'\nmemory = \" 0x100\"\n").unwrap().memory_mib,
            256
        );
        assert_eq!(dc("name='a'\nmemory = 010\n").unwrap().memory_mib, 8);
        assert_eq!(
            dc_err("name='a'\nvcpus = 0\n"),
            "key `vcpus` = 0: vcpus must be 1..=128"
        );
        assert!(dc_err("name='a'\nvcpus = 129\n").contains("1..=128"));
        assert_eq!(
            dc_err("name='a'\nmax_grant_frames = 65\n"),
            "key `max_grant_frames` = 65: max_grant_frames must be 1..=64"
        );
        assert!(dc_err("name='a'\nmax_grant_frames = 0\n").contains("1..=64"));
        assert!(dc_err("name='a'\nvcpus = [1]\n").contains("is a list"));
    }

    #[test]
    fn domid_rules() {
        assert_eq!(dc("name='a'\ndomid = 32751\n").unwrap().domid, Some(0x7FEF));
        let e = dc_err("name='a'\ndomid = 0\n");
        assert_eq!(
            e,
            "key `domid` = 0: domain 0 is dom0 (the host) and cannot be created"
        );
        let e = dc_err("name='a'\ndomid = 0x7ff0\n");
        assert!(
            e.starts_with("key `domid` = 32752: domids from 0x7FF0"),
            "{e}"
        );
        assert!(dc_err("name='a'\ndomid = 99999999\n").contains("reserved"));
        assert!(dc_err("name='a'\ndomid = '-1'\n").contains("1..=32751"));
    }

    #[test]
    fn vif_errors_name_entry_and_item() {
        let e = dc_err("name='a'\nvif = ['', 'mac=zz:16:3e:00:00:01']\n");
        assert_eq!(
            e,
            "vif[1] = \"mac=zz:16:3e:00:00:01\": invalid vif spec item \
             \"mac=zz:16:3e:00:00:01\": bad MAC address"
        );
        let e = dc_err("name='a'\nvif = ['bridge=x,foo']\n");
        assert!(e.ends_with("unrecognized argument `foo'"), "{e}");
        let e = dc_err("name='a'\nvif = 'bridge=x'\n");
        assert_eq!(
            e,
            "key `vif` = \"bridge=x\": is a single value but should be a list"
        );
        let e = dc_err("name='a'\nvif = [['bridge=x']]\n");
        assert!(e.contains("entry 0 is a list"), "{e}");
        let e = dc_err("name='a'\nvif = [1]\n");
        assert_eq!(e, "vif[0] = \"1\": unrecognized argument `1'");
    }

    #[test]
    fn vif_devids_and_collisions() {
        let d = dc("name='a'\nvif = ['devid=5', '', '']\n").unwrap();
        let devids: Vec<_> = d.vifs.iter().map(|v| v.devid.unwrap()).collect();
        assert_eq!(devids, [5, 1, 2]);
        let e = dc("name='a'\nvif = ['', 'devid=0']\n").unwrap_err();
        assert_eq!(
            e,
            CfgError::DuplicateDevid {
                devid: 0,
                first: 0,
                second: 1
            }
        );
        assert_eq!(e.to_string(), "vif[0] and vif[1] both have devid 0");
    }

    #[test]
    fn vif_warnings_are_collected() {
        let d = dc("name='a'\nvif = ['netdev=eth0', 'accel=x']\nfoo = 1\n").unwrap();
        assert_eq!(d.warnings.len(), 3, "{:?}", d.warnings);
        assert!(d.warnings[0].contains("unknown key `foo`"));
        assert!(d.warnings[1].starts_with("vif[0]: the netdev parameter is deprecated"));
        assert!(d.warnings[2].starts_with("vif[1]: the accel parameter"));
    }

    #[test]
    fn fill_vif_defaults_for_all() {
        let mut d = dc("name='a'\nvif = ['', 'bridge=br1']\n").unwrap();
        d.fill_vif_defaults(&VifDefaults::default(), &mut rng())
            .unwrap();
        assert_eq!(d.vifs[0].bridge.as_deref(), Some("xenbr0"));
        assert_eq!(d.vifs[1].bridge.as_deref(), Some("br1"));
        assert!(d.vifs.iter().all(|v| v.mac.is_some()));
        assert_ne!(d.vifs[0].mac, d.vifs[1].mac);
        let keys = d.vifs[1].to_backend_keys().unwrap();
        assert!(keys.contains(&("handle".to_owned(), "1".to_owned())));
        let bad = VifDefaults {
            backend: Some("2".into()),
            ..VifDefaults::default()
        };
        let e = d
            .fill_vif_defaults(&bad, &mut rng())
            .unwrap_err()
            .to_string();
        assert!(e.contains("driver domains are not supported"), "{e}");
    }

    #[test]
    fn syntax_errors_carry_position() {
        let e = dc_err("name = 'a'\nmemory = 12 34\n");
        assert!(e.starts_with("config syntax error at line 2:13:"), "{e}");
    }

    #[test]
    fn xl_conf_defaults() {
        let cfg = parse_xl_cfg(
            "autoballoon = \"off\"\nvifscript = 'old-script'\ndefaultbridge = 'oldbr'\n\
             vif.default.bridge = 'br0'\nvif.default.gatewaydev = 'eth0'\n\
             vif.default.backend = 'Domain-0'\n",
        )
        .unwrap();
        let (d, warnings) = vif_defaults_from_xl_conf(&cfg).unwrap();
        assert_eq!(d.script.as_deref(), Some("old-script"));
        assert_eq!(d.bridge.as_deref(), Some("br0"));
        assert_eq!(d.gatewaydev.as_deref(), Some("eth0"));
        assert_eq!(d.backend.as_deref(), Some("Domain-0"));
        assert_eq!(d.script_dir, "/etc/xen/scripts");
        assert_eq!(warnings.len(), 2);
        assert!(warnings[0].contains("vifscript is deprecated"));

        let cfg = parse_xl_cfg("vif.default.backend = 'drvdom'\n").unwrap();
        let e = vif_defaults_from_xl_conf(&cfg).unwrap_err().to_string();
        assert!(
            e.starts_with("key `vif.default.backend` = \"drvdom\": driver domains"),
            "{e}"
        );
        let cfg = parse_xl_cfg("vif.default.bridge = ['x']\n").unwrap();
        assert!(vif_defaults_from_xl_conf(&cfg).is_err());
        let (d, w) = vif_defaults_from_xl_conf(&XlConfig::default()).unwrap();
        assert_eq!(d, VifDefaults::default());
        assert!(w.is_empty());
    }

    #[test]
    fn domain_config_serde_round_trip() {
        let d = dc("name='a'\nvif = ['mac=00:16:3e:00:00:01,rate=1MB/s']\n").unwrap();
        let text = toml::to_string(&d).unwrap();
        let back: DomainConfig = toml::from_str(&text).unwrap();
        assert_eq!(back, d);
    }

    proptest! {
        #[test]
        fn domain_config_never_panics(text in "\\PC{0,160}") {
            if let Ok(cfg) = parse_xl_cfg(&text) {
                let _ = domain_config(&cfg, &mut rng());
                let _ = vif_defaults_from_xl_conf(&cfg);
            }
        }

        #[test]
        fn domain_config_never_panics_on_plausible_files(
            settings in prop::collection::vec(
                (prop::sample::select(vec!["name", "uuid", "memory", "vcpus", "domid",
                    "max_grant_frames", "vif", "other"]),
                 "('[a-z0-9:=, .-]{0,20}'|[0-9]{1,12}|\\[('[a-z0-9:=, .-]{0,20}',? ?){0,3}\\])"),
                0..8)
        ) {
            let text: String = settings.iter().map(|(k, v)| format!("{k} = {v}\n")).collect();
            if let Ok(cfg) = parse_xl_cfg(&text) {
                if let Ok(d) = domain_config(&cfg, &mut rng()) {
                    prop_assert!(validate_domain_name(&d.name).is_ok());
                    prop_assert!(normalize_uuid(&d.uuid).is_some());
                    prop_assert!(d.memory_mib >= 1 && d.vcpus >= 1);
                }
            }
        }

        #[test]
        fn random_uuids_are_valid(seed in any::<u64>()) {
            let uuid = random_uuid(&mut StdRng::seed_from_u64(seed));
            prop_assert_eq!(normalize_uuid(&uuid), Some(uuid.clone()));
        }
    }
}
