//! The live hypervisor objects of every domain: memory, grant table, event channels.
//!
//! The registry ([`crate::domain::Registry`]) says which domains exist; this module
//! holds what they own at run time. Data-path threads look domains up here without
//! going through the xenstore thread: lookups take a read lock for the time of a
//! `HashMap` get and hand out `Arc`s.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::domain::DomainInfo;
use crate::evtchn::{EventChannels, DEFAULT_MAX_PORT};
use crate::grant::{grant_copy, GrantCopy, GrantTable};
use crate::memory::{GuestMemory, MemSetupError};
use crate::{DomId, DOM0};

/// Frames of dom0's own memory (its bounce buffers for non-grant copy endpoints).
pub const DOM0_FRAMES: u64 = 16384;

/// One live domain's hypervisor state.
#[derive(Debug)]
pub struct DomainRuntime {
    /// The registry record.
    pub info: DomainInfo,
    /// Its grant table (which holds its memory).
    pub grants: Arc<GrantTable>,
}

impl DomainRuntime {
    /// The domain's memory.
    pub fn memory(&self) -> &Arc<GuestMemory> {
        self.grants.memory()
    }
}

/// All live domains' memory, grant tables and event channels.
#[derive(Debug)]
pub struct Hypervisor {
    domains: RwLock<HashMap<DomId, Arc<DomainRuntime>>>,
    evtchn: EventChannels,
}

impl Hypervisor {
    /// A hypervisor with dom0 (described by `dom0`) instantiated.
    pub fn new(dom0: &DomainInfo) -> Result<Hypervisor, MemSetupError> {
        let hv = Hypervisor {
            domains: RwLock::new(HashMap::new()),
            evtchn: EventChannels::new(),
        };
        let mem = Arc::new(GuestMemory::new("domnet-dom0", DOM0_FRAMES)?);
        hv.insert(dom0, mem);
        Ok(hv)
    }

    fn insert(&self, info: &DomainInfo, mem: Arc<GuestMemory>) -> Arc<DomainRuntime> {
        let grants = Arc::new(GrantTable::new(info.domid, mem, info.max_grant_frames));
        let rt = Arc::new(DomainRuntime {
            info: info.clone(),
            grants,
        });
        self.evtchn.add_domain(info.domid, DEFAULT_MAX_PORT);
        self.domains
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(info.domid, Arc::clone(&rt));
        rt
    }

    /// Gives a new domain its memory (`memory_mib` MiB of zeroed frames, the grant table
    /// in the first `max_grant_frames` of them) and its event-channel table.
    pub fn instantiate(&self, info: &DomainInfo) -> Result<Arc<DomainRuntime>, MemSetupError> {
        let frames = info
            .memory_mib
            .saturating_mul(256)
            .max(u64::from(info.max_grant_frames) + 1);
        let mem = Arc::new(GuestMemory::new(
            &format!("domnet-dom{}", info.domid),
            frames,
        )?);
        Ok(self.insert(info, mem))
    }

    /// Tears a domain down: closes its ports (peers fall back to unbound) and drops its
    /// memory once the last user lets go. Dom0 is never removed.
    pub fn remove(&self, domid: DomId) {
        if domid == DOM0 {
            return;
        }
        self.evtchn.remove_domain(domid);
        self.domains
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&domid);
    }

    /// The live domain `domid`.
    pub fn domain(&self, domid: DomId) -> Option<Arc<DomainRuntime>> {
        self.domains
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&domid)
            .cloned()
    }

    /// The grant table of `domid`.
    pub fn grant_table(&self, domid: DomId) -> Option<Arc<GrantTable>> {
        self.domain(domid).map(|d| Arc::clone(&d.grants))
    }

    /// All event channels.
    pub fn evtchn(&self) -> &EventChannels {
        &self.evtchn
    }

    /// `GNTTABOP_copy` issued by `caller`; every op gets its own status. Unknown callers
    /// get `bad_domain` on every op.
    pub fn grant_copy(&self, caller: DomId, ops: &mut [GrantCopy]) {
        let Some(me) = self.grant_table(caller) else {
            for op in ops {
                op.status = crate::grant::GntSt::BadDomain;
            }
            return;
        };
        grant_copy(&me, &|d: DomId| self.grant_table(d), ops);
    }
}
