//! The domain registry (pure): ids, names, states.
//!
//! Rules (xen-networking.md §3, §9): dom0 is 0 and always exists as "Domain-0";
//! guests get ids from 1 upwards; an id is never reused while its domain is alive and,
//! like Xen, the allocator keeps moving forward so a just-destroyed id is not handed out
//! again at once; ids from `DOMID_FIRST_RESERVED` (0x7FF0) up are refused. Names and
//! UUIDs are unique among live domains.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{DomId, DOM0, DOMID_FIRST_RESERVED};

/// What `create` asks for (the parts of an xl.cfg the hypervisor cares about).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainRequest {
    /// Unique name.
    pub name: String,
    /// Unique UUID (8-4-4-4-12 hex).
    pub uuid: String,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// Virtual CPUs (shown by `list`).
    pub vcpus: u32,
    /// A specific domid, if the config asked for one.
    pub domid: Option<DomId>,
    /// Grant-table frames (`max_grant_frames`).
    pub max_grant_frames: u32,
}

/// Lifecycle state, shown as xl's six-letter state column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DomainState {
    /// Alive; no vCPU to run, so shown as xl shows an idle guest: `-b----`.
    Blocked,
    /// Being destroyed: `-----d` (xl's dying flag, column 6).
    Dying,
    /// Dom0 and domains with work: `r-----`.
    Running,
}

impl DomainState {
    /// xl list's State column (`r-----`, `-b----`, `-----d`).
    pub fn xl_flags(self) -> &'static str {
        match self {
            DomainState::Running => "r-----",
            DomainState::Blocked => "-b----",
            DomainState::Dying => "-----d",
        }
    }
}

/// A live domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainInfo {
    /// Its id.
    pub domid: DomId,
    /// Its unique name.
    pub name: String,
    /// Its UUID.
    pub uuid: String,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// vCPUs.
    pub vcpus: u32,
    /// Grant-table frames.
    pub max_grant_frames: u32,
    /// Creation time, milliseconds since the Unix epoch (for `Time(s)`).
    pub created_ms: u64,
    /// Lifecycle state.
    pub state: DomainState,
}

/// Why a registry operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// Name already used by a live domain.
    #[error("domain name `{0}` is already in use")]
    NameInUse(String),
    /// UUID already used by a live domain.
    #[error("uuid {0} is already in use")]
    UuidInUse(String),
    /// Requested id is alive already.
    #[error("domid {0} is already in use")]
    DomidInUse(DomId),
    /// Requested id is 0 or reserved.
    #[error("domid {0} is reserved (0 is dom0; {first:#x} and above are Xen's)", first = DOMID_FIRST_RESERVED)]
    DomidReserved(DomId),
    /// Every guest id is taken.
    #[error("no free domid")]
    NoFreeDomid,
    /// No such domain.
    #[error("domain `{0}` does not exist")]
    NoSuchDomain(String),
    /// Dom0 cannot be destroyed.
    #[error("dom0 cannot be destroyed")]
    Dom0,
    /// A bad field in the request.
    #[error("invalid domain request: {0}")]
    Invalid(String),
}

/// One durable registry change (journal record).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RegistryChange {
    /// A domain came into being.
    Created(DomainInfo),
    /// A domain went away.
    Destroyed(DomId),
    /// The allocator's position (kept across compactions so ids keep moving forward).
    NextDomid(DomId),
}

/// All live domains plus the id allocator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registry {
    domains: BTreeMap<DomId, DomainInfo>,
    next: DomId,
}

impl Default for Registry {
    fn default() -> Self {
        Registry::new()
    }
}

/// Name of dom0 in xenstore and `list`.
pub const DOM0_NAME: &str = "Domain-0";
/// Dom0's UUID (xl shows all zeroes).
pub const DOM0_UUID: &str = "00000000-0000-0000-0000-000000000000";

impl Registry {
    /// A registry holding only dom0.
    pub fn new() -> Registry {
        let mut domains = BTreeMap::new();
        domains.insert(
            DOM0,
            DomainInfo {
                domid: DOM0,
                name: DOM0_NAME.into(),
                uuid: DOM0_UUID.into(),
                memory_mib: crate::hv::DOM0_FRAMES / 256,
                vcpus: 1,
                max_grant_frames: crate::grant::DEFAULT_MAX_GRANT_FRAMES,
                created_ms: 0,
                state: DomainState::Running,
            },
        );
        Registry { domains, next: 1 }
    }

    /// Validates a request and picks its domid, without changing anything; the caller
    /// commits with [`Registry::apply`] once the domain's resources exist.
    pub fn plan_create(&self, req: &DomainRequest, now_ms: u64) -> Result<DomainInfo, DomainError> {
        if req.name.is_empty() || req.name == DOM0_NAME {
            return Err(DomainError::Invalid(format!(
                "name `{}` is not allowed",
                req.name
            )));
        }
        if req.memory_mib == 0 {
            return Err(DomainError::Invalid("memory must be at least 1 MiB".into()));
        }
        if self.domains.values().any(|d| d.name == req.name) {
            return Err(DomainError::NameInUse(req.name.clone()));
        }
        if self
            .domains
            .values()
            .any(|d| d.uuid.eq_ignore_ascii_case(&req.uuid))
        {
            return Err(DomainError::UuidInUse(req.uuid.clone()));
        }
        let domid = match req.domid {
            Some(id) if id == DOM0 || id >= DOMID_FIRST_RESERVED => {
                return Err(DomainError::DomidReserved(id))
            }
            Some(id) if self.domains.contains_key(&id) => return Err(DomainError::DomidInUse(id)),
            Some(id) => id,
            None => self.next_free().ok_or(DomainError::NoFreeDomid)?,
        };
        Ok(DomainInfo {
            domid,
            name: req.name.clone(),
            uuid: req.uuid.to_ascii_lowercase(),
            memory_mib: req.memory_mib,
            vcpus: req.vcpus.max(1),
            max_grant_frames: req.max_grant_frames,
            created_ms: now_ms,
            state: DomainState::Blocked,
        })
    }

    fn next_free(&self) -> Option<DomId> {
        let span = u32::from(DOMID_FIRST_RESERVED) - 1;
        (0..span)
            .map(|i| ((u32::from(self.next) - 1 + i) % span + 1) as DomId)
            .find(|id| !self.domains.contains_key(id))
    }

    /// Applies a committed change (also used for journal replay).
    pub fn apply(&mut self, change: &RegistryChange) {
        match change {
            RegistryChange::Created(info) => {
                self.domains.insert(info.domid, info.clone());
                let after = info.domid.wrapping_add(1);
                self.next = if after == 0 || after >= DOMID_FIRST_RESERVED {
                    1
                } else {
                    after
                };
            }
            RegistryChange::Destroyed(domid) => {
                if *domid != DOM0 {
                    self.domains.remove(domid);
                }
            }
            RegistryChange::NextDomid(next) => {
                if *next != DOM0 && *next < DOMID_FIRST_RESERVED {
                    self.next = *next;
                }
            }
        }
    }

    /// The changes that rebuild this registry from [`Registry::new`] (for snapshots).
    pub fn dump(&self) -> Vec<RegistryChange> {
        let mut out: Vec<_> = self
            .domains
            .values()
            .filter(|d| d.domid != DOM0)
            .map(|d| RegistryChange::Created(d.clone()))
            .collect();
        out.push(RegistryChange::NextDomid(self.next));
        out
    }

    /// Finds a domain by name or by decimal id (xl's `DOM` argument).
    pub fn lookup(&self, name_or_id: &str) -> Result<&DomainInfo, DomainError> {
        if let Ok(id) = name_or_id.parse::<DomId>() {
            if let Some(d) = self.domains.get(&id) {
                return Ok(d);
            }
        }
        self.domains
            .values()
            .find(|d| d.name == name_or_id)
            .ok_or_else(|| DomainError::NoSuchDomain(name_or_id.to_string()))
    }

    /// The domain with this id.
    pub fn get(&self, domid: DomId) -> Option<&DomainInfo> {
        self.domains.get(&domid)
    }

    /// Marks a domain as dying (destroy in progress).
    pub fn set_state(&mut self, domid: DomId, state: DomainState) {
        if let Some(d) = self.domains.get_mut(&domid) {
            d.state = state;
        }
    }

    /// Live domains in id order, dom0 first.
    pub fn list(&self) -> impl Iterator<Item = &DomainInfo> {
        self.domains.values()
    }

    /// Checks that `domid` may be destroyed.
    pub fn plan_destroy(&self, name_or_id: &str) -> Result<DomId, DomainError> {
        let d = self.lookup(name_or_id)?;
        if d.domid == DOM0 {
            return Err(DomainError::Dom0);
        }
        Ok(d.domid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(name: &str) -> DomainRequest {
        DomainRequest {
            name: name.into(),
            uuid: format!(
                "{:0>8}-0000-4000-8000-000000000000",
                name.len() * 7 + name.as_bytes()[0] as usize
            ),
            memory_mib: 64,
            vcpus: 1,
            domid: None,
            max_grant_frames: 4,
        }
    }

    fn create(r: &mut Registry, name: &str) -> DomId {
        let mut q = req(name);
        q.uuid = format!(
            "{:08x}-0000-4000-8000-000000000000",
            r.list().count() as u32 + 100 * name.len() as u32
        );
        let info = r.plan_create(&q, 1).unwrap();
        r.apply(&RegistryChange::Created(info.clone()));
        info.domid
    }

    #[test]
    fn ids_start_at_one_and_keep_moving_forward() {
        let mut r = Registry::new();
        assert_eq!(create(&mut r, "a"), 1);
        assert_eq!(create(&mut r, "bb"), 2);
        r.apply(&RegistryChange::Destroyed(1));
        assert_eq!(create(&mut r, "ccc"), 3, "no immediate reuse");
        assert_eq!(r.lookup("bb").unwrap().domid, 2);
        assert_eq!(r.lookup("3").unwrap().name, "ccc");
        assert_eq!(r.lookup("0").unwrap().name, DOM0_NAME);
    }

    #[test]
    fn reserved_and_duplicate_refused() {
        let mut r = Registry::new();
        create(&mut r, "a");
        let mut q = req("a");
        assert_eq!(
            r.plan_create(&q, 0),
            Err(DomainError::NameInUse("a".into()))
        );
        q.name = "b".into();
        q.domid = Some(0x7FF0);
        assert_eq!(
            r.plan_create(&q, 0),
            Err(DomainError::DomidReserved(0x7FF0))
        );
        q.domid = Some(0);
        assert_eq!(r.plan_create(&q, 0), Err(DomainError::DomidReserved(0)));
        q.domid = Some(1);
        assert_eq!(r.plan_create(&q, 0), Err(DomainError::DomidInUse(1)));
        q.domid = Some(0x7FEF);
        let info = r.plan_create(&q, 0).unwrap();
        r.apply(&RegistryChange::Created(info));
        // After the top id the allocator wraps to the lowest free one.
        assert_eq!(create(&mut r, "cc"), 2);
        assert_eq!(r.plan_destroy("0"), Err(DomainError::Dom0));
        assert_eq!(
            r.plan_destroy("nope"),
            Err(DomainError::NoSuchDomain("nope".into()))
        );
    }

    #[test]
    fn dump_rebuilds_the_registry() {
        let mut r = Registry::new();
        create(&mut r, "a");
        create(&mut r, "bb");
        r.apply(&RegistryChange::Destroyed(1));
        let mut again = Registry::new();
        for c in r.dump() {
            again.apply(&c);
        }
        assert_eq!(again, r);
    }
}
