//! Grant tables, version 1 (xen-networking.md §2).
//!
//! A domain shares a frame by writing an 8-byte `grant_entry_v1` into its own grant
//! table: `flags` (u16 @0), `domid` (u16 @2, the domain allowed in), `frame` (u32 @4).
//! The table lives in the granting domain's memory — frames `0..nr_frames` — so a
//! frontend in another process writes entries directly, exactly as a Xen guest does.
//!
//! The hypervisor side validates an entry each time another domain uses it, marks it
//! busy (`GTF_reading` / `GTF_writing`) for exactly as long as a copy or a mapping uses
//! it, and clears the bits only when the last user is gone (XSA-230). A granter can
//! revoke only an entry whose busy bits are clear. Only v1 is implemented: no transitive
//! grants, no v2 status frames (XSA-226/227/411).

use std::sync::atomic::{fence, AtomicU32, Ordering};
use std::sync::Arc;

use crate::memory::{Gfn, GuestMemory, PAGE_SIZE};
use crate::{DomId, DOMID_SELF};

/// Index into a domain's grant table (`grant_ref_t`).
pub type GrantRef = u32;

/// Size of one v1 grant entry.
pub const GRANT_ENTRY_SIZE: usize = 8;
/// v1 entries per 4096-byte frame.
pub const ENTRIES_PER_FRAME: u32 = (PAGE_SIZE / GRANT_ENTRY_SIZE) as u32;
/// `GNTTAB_NR_RESERVED_ENTRIES`: refs 0–7 are reserved (0 console, 1 xenstore).
pub const NR_RESERVED_ENTRIES: GrantRef = 8;
/// Xen 4.17's default `max_grant_frames`.
pub const DEFAULT_MAX_GRANT_FRAMES: u32 = 64;

/// `GTF_invalid`: the entry grants nothing.
pub const GTF_INVALID: u16 = 0;
/// `GTF_permit_access`: the entry lets `domid` map or copy `frame`.
pub const GTF_PERMIT_ACCESS: u16 = 1;
/// `GTF_accept_transfer` (page flipping; never honoured here).
pub const GTF_ACCEPT_TRANSFER: u16 = 2;
/// `GTF_transitive` (v2 only; refused).
pub const GTF_TRANSITIVE: u16 = 3;
/// `GTF_type_mask`: the type field, bits 0–1.
pub const GTF_TYPE_MASK: u16 = 3;
/// `GTF_readonly`: the grantee may only read.
pub const GTF_READONLY: u16 = 0x4;
/// `GTF_reading`: the hypervisor is reading the frame for a grantee (set by us).
pub const GTF_READING: u16 = 0x8;
/// `GTF_writing`: the hypervisor is writing the frame for a grantee (set by us).
pub const GTF_WRITING: u16 = 0x10;

/// How often a compare-and-swap on a guest-writable entry is retried before giving up.
const MAX_CAS_RETRIES: u32 = 4;

/// `GNTCOPY_source_gref`: the copy source is a grant reference, not a caller frame.
pub const GNTCOPY_SOURCE_GREF: u16 = 0x1;
/// `GNTCOPY_dest_gref`: the copy destination is a grant reference.
pub const GNTCOPY_DEST_GREF: u16 = 0x2;

/// `GNTST_*` status codes, as returned per operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(i16)]
pub enum GntSt {
    /// Success.
    Okay = 0,
    /// Unspecified failure (bad flags, wrong domid, write to a read-only grant…).
    GeneralError = -1,
    /// The named domain does not exist.
    BadDomain = -2,
    /// The grant reference is outside the table.
    BadGntref = -3,
    /// Bad map handle.
    BadHandle = -4,
    /// Bad virtual address.
    BadVirtAddr = -5,
    /// Bad device address.
    BadDevAddr = -6,
    /// No space in the mapping table.
    NoDeviceSpace = -7,
    /// Not allowed (e.g. a non-gref endpoint naming another domain).
    PermissionDenied = -8,
    /// The frame does not exist.
    BadPage = -9,
    /// Copy arguments cross a page boundary.
    BadCopyArg = -10,
    /// Address too big.
    AddressTooBig = -11,
    /// Try again.
    Eagain = -12,
    /// Out of space.
    NoSpace = -13,
}

impl GntSt {
    /// The numeric `GNTST_*` value.
    pub fn code(self) -> i16 {
        self as i16
    }

    /// Xen's name for the status, for logs and counters.
    pub fn name(self) -> &'static str {
        match self {
            GntSt::Okay => "okay",
            GntSt::GeneralError => "general_error",
            GntSt::BadDomain => "bad_domain",
            GntSt::BadGntref => "bad_gntref",
            GntSt::BadHandle => "bad_handle",
            GntSt::BadVirtAddr => "bad_virt_addr",
            GntSt::BadDevAddr => "bad_dev_addr",
            GntSt::NoDeviceSpace => "no_device_space",
            GntSt::PermissionDenied => "permission_denied",
            GntSt::BadPage => "bad_page",
            GntSt::BadCopyArg => "bad_copy_arg",
            GntSt::AddressTooBig => "address_too_big",
            GntSt::Eagain => "eagain",
            GntSt::NoSpace => "no_space",
        }
    }
}

/// Why a granter-side operation (offer/revoke) was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GrantError {
    /// Refs 0–7 belong to the toolstack (console, xenstore).
    #[error("grant ref {0} is reserved")]
    Reserved(GrantRef),
    /// The ref is past the end of the table.
    #[error("grant ref {0} is outside the grant table")]
    OutOfRange(GrantRef),
    /// The entry is already granting something.
    #[error("grant ref {0} is already in use")]
    AlreadyGranted(GrantRef),
    /// The hypervisor is using the entry (`GTF_reading`/`GTF_writing` set).
    #[error("grant ref {0} is busy (being read or written)")]
    Busy(GrantRef),
    /// The entry is not an active grant.
    #[error("grant ref {0} is not granted")]
    NotGranted(GrantRef),
}

/// One endpoint of a grant copy (`gnttab_copy.source`/`.dest`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CopyPtr {
    /// A grant ref (with the matching GNTCOPY flag) or a frame of the caller.
    pub gref_or_gfn: u64,
    /// The granting domain for a gref; must be `DOMID_SELF` for a caller frame.
    pub domid: DomId,
    /// Byte offset inside the page.
    pub offset: u16,
}

/// One `GNTTABOP_copy` operation; `status` is written by [`grant_copy`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrantCopy {
    /// Where to read.
    pub source: CopyPtr,
    /// Where to write.
    pub dest: CopyPtr,
    /// Bytes to copy.
    pub len: u16,
    /// `GNTCOPY_source_gref` / `GNTCOPY_dest_gref`.
    pub flags: u16,
    /// Result (`GNTST_*`).
    pub status: GntSt,
}

/// Per-entry use count kept by the hypervisor: readers in bits 0–15, writers in bits
/// 16–30, and bit 31 held while the guest-visible busy bits are being changed (the
/// transitions 0→1 and 1→0), so the count and the entry's `GTF_reading/writing` never
/// disagree even with several datapath threads using one grant.
const BUSY_LOCK: u32 = 1 << 31;
const BUSY_READER: u32 = 1;
const BUSY_WRITER: u32 = 1 << 16;
const BUSY_MAX: u32 = 0x7fff;

fn readers(c: u32) -> u32 {
    c & 0xffff
}

fn writers(c: u32) -> u32 {
    (c >> 16) & 0x7fff
}

/// A domain's grant table: the entries in its memory plus the hypervisor's record of
/// which entries are in use right now.
pub struct GrantTable {
    domid: DomId,
    mem: Arc<GuestMemory>,
    nr_frames: u32,
    busy: Box<[AtomicU32]>,
}

impl std::fmt::Debug for GrantTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrantTable")
            .field("domid", &self.domid)
            .field("nr_frames", &self.nr_frames)
            .finish()
    }
}

impl GrantTable {
    /// The grant table of `domid`, occupying frames `0..nr_frames` of `mem`.
    ///
    /// `nr_frames` is clamped to the memory size; the frames are zeroed (all entries
    /// `GTF_invalid`) only by the caller creating a fresh domain, never here, so an
    /// external process can adopt an existing table.
    pub fn new(domid: DomId, mem: Arc<GuestMemory>, nr_frames: u32) -> GrantTable {
        let nr_frames = nr_frames.min(u32::try_from(mem.frames()).unwrap_or(u32::MAX));
        let entries = nr_frames as usize * ENTRIES_PER_FRAME as usize;
        GrantTable {
            domid,
            mem,
            nr_frames,
            busy: (0..entries).map(|_| AtomicU32::new(0)).collect(),
        }
    }

    /// The domain owning this table.
    pub fn domid(&self) -> DomId {
        self.domid
    }

    /// The domain's memory (the frames the entries point into).
    pub fn memory(&self) -> &Arc<GuestMemory> {
        &self.mem
    }

    /// Frames used by the table (`GNTTABOP_setup_table` would return `0..nr_frames`).
    pub fn nr_frames(&self) -> u32 {
        self.nr_frames
    }

    /// Number of entries (512 per frame).
    pub fn nr_entries(&self) -> u32 {
        self.nr_frames * ENTRIES_PER_FRAME
    }

    fn locate(&self, gref: GrantRef) -> Option<(Gfn, usize)> {
        if gref >= self.nr_entries() {
            return None;
        }
        let frame = u64::from(gref / ENTRIES_PER_FRAME);
        let off = (gref % ENTRIES_PER_FRAME) as usize * GRANT_ENTRY_SIZE;
        Some((frame, off))
    }

    /// The raw entry `(flags, domid, frame)` as the guest last wrote it (diagnostics).
    pub fn entry(&self, gref: GrantRef) -> Option<(u16, DomId, u32)> {
        let (f, o) = self.locate(gref)?;
        let flags = self.mem.load_u16(f, o, Ordering::Acquire).ok()?;
        let domid = self.mem.load_u16(f, o + 2, Ordering::Acquire).ok()?;
        let frame = self.mem.load_u32(f, o + 4, Ordering::Acquire).ok()?;
        Some((flags, domid, frame))
    }

    // ---- granter side: what a frontend does to its own table -------------------------

    /// Grants `grantee` access to frame `gfn` through `gref` (the granter's own step).
    ///
    /// Follows the documented order: domid and frame first, a write barrier, then the
    /// flags that make the entry live.
    pub fn offer(
        &self,
        gref: GrantRef,
        grantee: DomId,
        gfn: Gfn,
        readonly: bool,
    ) -> Result<(), GrantError> {
        if gref < NR_RESERVED_ENTRIES {
            return Err(GrantError::Reserved(gref));
        }
        let (f, o) = self.locate(gref).ok_or(GrantError::OutOfRange(gref))?;
        let flags = self
            .mem
            .load_u16(f, o, Ordering::Acquire)
            .map_err(|_| GrantError::OutOfRange(gref))?;
        if flags & (GTF_TYPE_MASK | GTF_READING | GTF_WRITING) != 0 {
            return Err(GrantError::AlreadyGranted(gref));
        }
        let frame = u32::try_from(gfn).map_err(|_| GrantError::OutOfRange(gref))?;
        let w =
            |r: Result<(), crate::memory::MemError>| r.map_err(|_| GrantError::OutOfRange(gref));
        w(self.mem.store_u16(f, o + 2, grantee, Ordering::Relaxed))?;
        w(self.mem.store_u32(f, o + 4, frame, Ordering::Relaxed))?;
        fence(Ordering::Release);
        let new = GTF_PERMIT_ACCESS | if readonly { GTF_READONLY } else { 0 };
        w(self.mem.store_u16(f, o, new, Ordering::Release))
    }

    /// Ends a grant: refused while the hypervisor reads or writes through it; otherwise
    /// the flags are compare-and-swapped to `GTF_invalid`.
    pub fn revoke(&self, gref: GrantRef) -> Result<(), GrantError> {
        let (f, o) = self.locate(gref).ok_or(GrantError::OutOfRange(gref))?;
        for _ in 0..=MAX_CAS_RETRIES {
            let flags = self
                .mem
                .load_u16(f, o, Ordering::Acquire)
                .map_err(|_| GrantError::OutOfRange(gref))?;
            if flags & (GTF_READING | GTF_WRITING) != 0 {
                return Err(GrantError::Busy(gref));
            }
            if flags & GTF_TYPE_MASK == GTF_INVALID {
                return Err(GrantError::NotGranted(gref));
            }
            let seen = self
                .mem
                .cas_u16(f, o, flags, 0)
                .map_err(|_| GrantError::OutOfRange(gref))?;
            if seen == flags {
                return Ok(());
            }
        }
        Err(GrantError::Busy(gref))
    }

    /// True while the hypervisor holds the entry (busy bits set).
    pub fn is_busy(&self, gref: GrantRef) -> bool {
        self.entry(gref)
            .is_some_and(|(flags, _, _)| flags & (GTF_READING | GTF_WRITING) != 0)
    }

    // ---- hypervisor side -----------------------------------------------------------------

    /// Validates `gref` for use by `grantee` and marks it busy; returns the granted frame.
    ///
    /// Xen's checks: ref inside the table (`bad_gntref`); type `permit_access` and
    /// domid equal to the grantee, and no write through a read-only grant
    /// (`general_error`); the frame must exist (`bad_page`).
    pub fn acquire(&self, gref: GrantRef, grantee: DomId, write: bool) -> Result<Gfn, GntSt> {
        let (f, o) = self.locate(gref).ok_or(GntSt::BadGntref)?;
        let cnt = &self.busy[gref as usize];
        let add = BUSY_READER + if write { BUSY_WRITER } else { 0 };
        loop {
            let c = cnt.load(Ordering::Acquire);
            if c & BUSY_LOCK != 0 {
                std::hint::spin_loop();
                continue;
            }
            if readers(c) >= 0xffff || writers(c) >= BUSY_MAX {
                return Err(GntSt::NoSpace);
            }
            let transition = readers(c) == 0 || (write && writers(c) == 0);
            if transition {
                if cnt
                    .compare_exchange(c, c | BUSY_LOCK, Ordering::Acquire, Ordering::Relaxed)
                    .is_err()
                {
                    continue;
                }
                let pinned = self.pin(f, o, grantee, write);
                cnt.store(if pinned.is_ok() { c + add } else { c }, Ordering::Release);
                let frame = pinned?;
                return self.check_frame(gref, write, frame);
            }
            if cnt
                .compare_exchange(c, c + add, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
            {
                continue;
            }
            // The busy bits are set by other holders, so a well-behaved granter cannot
            // change the entry now; a hostile one might, so the copy is checked again.
            let checked = self.read_validated(f, o, grantee, write);
            return match checked {
                Ok((_, frame)) => self.check_frame(gref, write, frame),
                Err(e) => {
                    self.release(gref, write);
                    Err(e)
                }
            };
        }
    }

    fn check_frame(&self, gref: GrantRef, write: bool, frame: Gfn) -> Result<Gfn, GntSt> {
        if frame >= self.mem.frames() {
            self.release(gref, write);
            return Err(GntSt::BadPage);
        }
        Ok(frame)
    }

    /// Reads and validates the entry: `(flags, frame)`.
    fn read_validated(
        &self,
        f: Gfn,
        o: usize,
        grantee: DomId,
        write: bool,
    ) -> Result<(u16, Gfn), GntSt> {
        // flags (low half) and domid (high half) are read as one word so the pair we
        // validate is the pair we swap.
        let combo = self
            .mem
            .load_u32(f, o, Ordering::Acquire)
            .map_err(|_| GntSt::BadGntref)?;
        let flags = combo as u16;
        let domid = (combo >> 16) as u16;
        if flags & GTF_TYPE_MASK != GTF_PERMIT_ACCESS || domid != grantee {
            return Err(GntSt::GeneralError);
        }
        if write && flags & GTF_READONLY != 0 {
            return Err(GntSt::GeneralError);
        }
        let frame = u64::from(
            self.mem
                .load_u32(f, o + 4, Ordering::Acquire)
                .map_err(|_| GntSt::BadGntref)?,
        );
        Ok((flags, frame))
    }

    /// First user (or first writer): validate and set the busy bits in the guest entry.
    fn pin(&self, f: Gfn, o: usize, grantee: DomId, write: bool) -> Result<Gfn, GntSt> {
        let want = GTF_READING | if write { GTF_WRITING } else { 0 };
        for _ in 0..=MAX_CAS_RETRIES {
            let (flags, frame) = self.read_validated(f, o, grantee, write)?;
            let new = flags | want;
            if new == flags
                || self
                    .mem
                    .cas_u16(f, o, flags, new)
                    .map_err(|_| GntSt::BadGntref)?
                    == flags
            {
                return Ok(frame);
            }
        }
        // A guest flipping its entry under us: give up like Xen ("shared grant entry is
        // unstable") instead of spinning on its behalf.
        Err(GntSt::GeneralError)
    }

    /// Drops one use taken by [`GrantTable::acquire`]; the busy bits are cleared when the
    /// last reader/writer is gone.
    pub fn release(&self, gref: GrantRef, write: bool) {
        let Some((f, o)) = self.locate(gref) else {
            return;
        };
        let cnt = &self.busy[gref as usize];
        let sub = BUSY_READER + if write { BUSY_WRITER } else { 0 };
        loop {
            let c = cnt.load(Ordering::Acquire);
            if c & BUSY_LOCK != 0 {
                std::hint::spin_loop();
                continue;
            }
            if readers(c) == 0 || (write && writers(c) == 0) {
                return; // unbalanced release: nothing held
            }
            let new = c - sub;
            let mut clear = 0;
            if readers(new) == 0 {
                clear |= GTF_READING | GTF_WRITING;
            } else if write && writers(new) == 0 {
                clear |= GTF_WRITING;
            }
            if clear == 0 {
                if cnt
                    .compare_exchange(c, new, Ordering::Release, Ordering::Relaxed)
                    .is_ok()
                {
                    return;
                }
                continue;
            }
            if cnt
                .compare_exchange(c, c | BUSY_LOCK, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
            {
                continue;
            }
            for _ in 0..=MAX_CAS_RETRIES {
                let Ok(flags) = self.mem.load_u16(f, o, Ordering::Acquire) else {
                    break;
                };
                let cleared = flags & !clear;
                if cleared == flags || self.mem.cas_u16(f, o, flags, cleared) == Ok(flags) {
                    break;
                }
            }
            // (Only a guest rewriting a busy entry makes the loop give up; the bits then
            // stay set on its own table.)
            cnt.store(new, Ordering::Release);
            return;
        }
    }

    /// Number of entries currently held busy by the hypervisor (for tests and stats).
    pub fn busy_entries(&self) -> usize {
        self.busy
            .iter()
            .filter(|c| c.load(Ordering::Relaxed) & !BUSY_LOCK != 0)
            .count()
    }
}

/// A grant held mapped (`GNTTABOP_map_grant_ref`): the entry stays busy until the
/// mapping is dropped (the unmap). Netback maps ring pages this way.
#[derive(Debug)]
pub struct GrantMapping {
    table: Arc<GrantTable>,
    gref: GrantRef,
    gfn: Gfn,
    write: bool,
}

impl GrantMapping {
    /// Maps `gref` of `table` for `grantee`, writable unless `readonly`.
    pub fn map(
        table: &Arc<GrantTable>,
        gref: GrantRef,
        grantee: DomId,
        readonly: bool,
    ) -> Result<GrantMapping, GntSt> {
        let gfn = table.acquire(gref, grantee, !readonly)?;
        Ok(GrantMapping {
            table: Arc::clone(table),
            gref,
            gfn,
            write: !readonly,
        })
    }

    /// The mapped frame's memory.
    pub fn memory(&self) -> &GuestMemory {
        self.table.memory()
    }

    /// The mapped frame number in the granter's memory.
    pub fn gfn(&self) -> Gfn {
        self.gfn
    }

    /// The grant reference held.
    pub fn gref(&self) -> GrantRef {
        self.gref
    }

    /// Whether the mapping allows writes.
    pub fn writable(&self) -> bool {
        self.write
    }
}

impl Drop for GrantMapping {
    fn drop(&mut self) {
        self.table.release(self.gref, self.write);
    }
}

/// Resolves a domain id to its grant table (the hypervisor's domain list).
pub trait GrantTables {
    /// The table of `domid`, if the domain exists.
    fn grant_table(&self, domid: DomId) -> Option<Arc<GrantTable>>;
}

impl<F> GrantTables for F
where
    F: Fn(DomId) -> Option<Arc<GrantTable>>,
{
    fn grant_table(&self, domid: DomId) -> Option<Arc<GrantTable>> {
        self(domid)
    }
}

struct Endpoint<'a> {
    table: &'a GrantTable,
    gfn: Gfn,
    gref: Option<GrantRef>,
    write: bool,
}

impl Endpoint<'_> {
    fn release(self) {
        if let Some(r) = self.gref {
            self.table.release(r, self.write);
        }
    }
}

/// The foreign tables a batch names, looked up once per batch (a handful of domains at
/// most; further ones fall back to a lookup per op).
struct BatchTables {
    slots: [Option<(DomId, Arc<GrantTable>)>; 4],
}

impl BatchTables {
    fn resolve(tables: &impl GrantTables, caller: DomId, ops: &[GrantCopy]) -> BatchTables {
        let mut b = BatchTables {
            slots: Default::default(),
        };
        let wanted = ops.iter().flat_map(|op| {
            let s = (op.flags & GNTCOPY_SOURCE_GREF != 0).then_some(op.source.domid);
            let d = (op.flags & GNTCOPY_DEST_GREF != 0).then_some(op.dest.domid);
            s.into_iter().chain(d)
        });
        for d in wanted {
            if d == DOMID_SELF || d == caller || b.slots.iter().flatten().any(|(x, _)| *x == d) {
                continue;
            }
            if let Some(free) = b.slots.iter_mut().find(|s| s.is_none()) {
                if let Some(t) = tables.grant_table(d) {
                    *free = Some((d, t));
                }
            }
        }
        b
    }

    fn get(&self, d: DomId) -> Option<&GrantTable> {
        self.slots
            .iter()
            .flatten()
            .find(|(x, _)| *x == d)
            .map(|(_, t)| t.as_ref())
    }
}

fn acquire_endpoint<'a>(
    caller: &'a GrantTable,
    batch: &'a BatchTables,
    overflow: &'a mut Option<Arc<GrantTable>>,
    tables: &impl GrantTables,
    ptr: &CopyPtr,
    is_gref: bool,
    write: bool,
) -> Result<Endpoint<'a>, GntSt> {
    if !is_gref {
        // A plain frame is always the caller's own (Xen refuses foreign frames).
        if ptr.domid != DOMID_SELF {
            return Err(GntSt::PermissionDenied);
        }
        if ptr.gref_or_gfn >= caller.memory().frames() {
            return Err(GntSt::BadPage);
        }
        return Ok(Endpoint {
            table: caller,
            gfn: ptr.gref_or_gfn,
            gref: None,
            write,
        });
    }
    let table: &GrantTable = if ptr.domid == DOMID_SELF || ptr.domid == caller.domid() {
        caller
    } else if let Some(t) = batch.get(ptr.domid) {
        t
    } else {
        *overflow = Some(tables.grant_table(ptr.domid).ok_or(GntSt::BadDomain)?);
        overflow.as_deref().ok_or(GntSt::BadDomain)?
    };
    let gref = GrantRef::try_from(ptr.gref_or_gfn).map_err(|_| GntSt::BadGntref)?;
    let gfn = table.acquire(gref, caller.domid(), write)?;
    Ok(Endpoint {
        table,
        gfn,
        gref: Some(gref),
        write,
    })
}

/// Performs a batch of `GNTTABOP_copy` operations on behalf of `caller`.
///
/// Each operation is independent and gets its own status: a failure never affects the
/// others (XSA-316/318: no partial unwinding across ops). Checks, in Xen's order:
/// offsets and length inside one page on both sides (`bad_copy_arg`); endpoints valid
/// (see [`GrantTable::acquire`]). Busy bits are held only for the copy itself.
pub fn grant_copy(caller: &GrantTable, tables: &impl GrantTables, ops: &mut [GrantCopy]) {
    let batch = BatchTables::resolve(tables, caller.domid(), ops);
    for op in ops.iter_mut() {
        op.status = copy_one(caller, &batch, tables, op);
    }
}

fn copy_one(
    caller: &GrantTable,
    batch: &BatchTables,
    tables: &impl GrantTables,
    op: &GrantCopy,
) -> GntSt {
    let len = usize::from(op.len);
    if usize::from(op.source.offset) + len > PAGE_SIZE
        || usize::from(op.dest.offset) + len > PAGE_SIZE
    {
        return GntSt::BadCopyArg;
    }
    let (mut src_extra, mut dst_extra) = (None, None);
    let src = match acquire_endpoint(
        caller,
        batch,
        &mut src_extra,
        tables,
        &op.source,
        op.flags & GNTCOPY_SOURCE_GREF != 0,
        false,
    ) {
        Ok(e) => e,
        Err(st) => return st,
    };
    let dst = match acquire_endpoint(
        caller,
        batch,
        &mut dst_extra,
        tables,
        &op.dest,
        op.flags & GNTCOPY_DEST_GREF != 0,
        true,
    ) {
        Ok(e) => e,
        Err(st) => {
            src.release();
            return st;
        }
    };
    let result = GuestMemory::copy_between(
        src.table.memory(),
        src.gfn,
        usize::from(op.source.offset),
        dst.table.memory(),
        dst.gfn,
        usize::from(op.dest.offset),
        len,
    );
    src.release();
    dst.release();
    match result {
        Ok(()) => GntSt::Okay,
        Err(_) => GntSt::BadCopyArg,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    struct Fabric {
        tables: Vec<Arc<GrantTable>>,
    }

    impl Fabric {
        fn new(n: usize, frames: u64) -> Fabric {
            let tables = (0..n)
                .map(|d| {
                    let mem = Arc::new(GuestMemory::new("gt", frames).unwrap());
                    Arc::new(GrantTable::new(d as DomId, mem, 1))
                })
                .collect();
            Fabric { tables }
        }
        fn t(&self, d: DomId) -> &Arc<GrantTable> {
            &self.tables[d as usize]
        }
        fn lookup(&self) -> impl GrantTables + '_ {
            move |d: DomId| self.tables.get(d as usize).cloned()
        }
    }

    fn gref_copy(
        src_dom: DomId,
        src_ref: u64,
        dst_dom: DomId,
        dst_ref: u64,
        len: u16,
    ) -> GrantCopy {
        GrantCopy {
            source: CopyPtr {
                gref_or_gfn: src_ref,
                domid: src_dom,
                offset: 0,
            },
            dest: CopyPtr {
                gref_or_gfn: dst_ref,
                domid: dst_dom,
                offset: 0,
            },
            len,
            flags: GNTCOPY_SOURCE_GREF | GNTCOPY_DEST_GREF,
            status: GntSt::Okay,
        }
    }

    #[test]
    fn entry_layout_matches_xen() {
        let f = Fabric::new(2, 8);
        f.t(1).offer(9, 0, 5, true).unwrap();
        let mem = f.t(1).memory();
        let mut raw = [0u8; 8];
        mem.read(0, 9 * 8, &mut raw).unwrap();
        assert_eq!(
            u16::from_le_bytes([raw[0], raw[1]]),
            GTF_PERMIT_ACCESS | GTF_READONLY
        );
        assert_eq!(u16::from_le_bytes([raw[2], raw[3]]), 0);
        assert_eq!(u32::from_le_bytes([raw[4], raw[5], raw[6], raw[7]]), 5);
        assert_eq!(f.t(1).nr_entries(), 512);
    }

    #[test]
    fn reserved_refs_and_double_offer_refused() {
        let f = Fabric::new(2, 8);
        assert_eq!(f.t(1).offer(7, 0, 3, false), Err(GrantError::Reserved(7)));
        f.t(1).offer(8, 0, 3, false).unwrap();
        assert_eq!(
            f.t(1).offer(8, 0, 3, false),
            Err(GrantError::AlreadyGranted(8))
        );
        assert_eq!(
            f.t(1).offer(512, 0, 3, false),
            Err(GrantError::OutOfRange(512))
        );
    }

    #[test]
    fn copy_grant_to_grant_and_to_caller_frame() {
        let f = Fabric::new(3, 8);
        f.t(1).memory().write(4, 0, b"payload!").unwrap();
        f.t(1).offer(10, 0, 4, true).unwrap();
        f.t(2).offer(11, 0, 6, false).unwrap();
        let mut ops = [gref_copy(1, 10, 2, 11, 8)];
        grant_copy(f.t(0), &f.lookup(), &mut ops);
        assert_eq!(ops[0].status, GntSt::Okay);
        let mut out = [0u8; 8];
        f.t(2).memory().read(6, 0, &mut out).unwrap();
        assert_eq!(&out, b"payload!");
        // To a frame of the caller (dom0): domid must be DOMID_SELF.
        let mut op = gref_copy(1, 10, DOMID_SELF, 3, 8);
        op.flags = GNTCOPY_SOURCE_GREF;
        let mut ops = [op];
        grant_copy(f.t(0), &f.lookup(), &mut ops);
        assert_eq!(ops[0].status, GntSt::Okay);
        f.t(0).memory().read(3, 0, &mut out).unwrap();
        assert_eq!(&out, b"payload!");
        op.dest.domid = 2;
        let mut ops = [op];
        grant_copy(f.t(0), &f.lookup(), &mut ops);
        assert_eq!(ops[0].status, GntSt::PermissionDenied);
        // Nothing is left busy after copies.
        assert_eq!(f.t(1).busy_entries(), 0);
        assert!(!f.t(1).is_busy(10));
        assert!(!f.t(2).is_busy(11));
    }

    #[test]
    fn copy_checks_follow_xen() {
        let f = Fabric::new(3, 8);
        f.t(1).offer(10, 0, 4, true).unwrap();
        f.t(2).offer(11, 0, 6, false).unwrap();
        f.t(2).offer(12, 0, 7, true).unwrap();
        f.t(2).offer(13, 1, 7, false).unwrap(); // granted to dom1, not dom0
        let lookup = f.lookup();
        let run = |op: GrantCopy| {
            let mut ops = [op];
            grant_copy(f.t(0), &lookup, &mut ops);
            ops[0].status
        };
        let mut op = gref_copy(1, 10, 2, 11, 100);
        op.source.offset = 4000;
        assert_eq!(run(op), GntSt::BadCopyArg);
        let mut op = gref_copy(1, 10, 2, 11, 100);
        op.dest.offset = 3997;
        assert_eq!(run(op), GntSt::BadCopyArg);
        assert_eq!(
            run(gref_copy(1, 10, 2, 12, 8)),
            GntSt::GeneralError,
            "read-only dest"
        );
        assert_eq!(
            run(gref_copy(1, 10, 2, 13, 8)),
            GntSt::GeneralError,
            "wrong grantee"
        );
        assert_eq!(
            run(gref_copy(1, 99, 2, 11, 8)),
            GntSt::GeneralError,
            "never offered"
        );
        assert_eq!(run(gref_copy(1, 5000, 2, 11, 8)), GntSt::BadGntref);
        assert_eq!(run(gref_copy(9, 10, 2, 11, 8)), GntSt::BadDomain);
        assert_eq!(run(gref_copy(1, 10, 2, 11, 8)), GntSt::Okay);
        // A batch: each op independent.
        let mut ops = [
            gref_copy(1, 10, 2, 12, 8),
            gref_copy(1, 10, 2, 11, 8),
            gref_copy(1, 5000, 2, 11, 1),
        ];
        grant_copy(f.t(0), &lookup, &mut ops);
        let st: Vec<_> = ops.iter().map(|o| o.status).collect();
        assert_eq!(st, [GntSt::GeneralError, GntSt::Okay, GntSt::BadGntref]);
        assert_eq!(f.t(1).busy_entries() + f.t(2).busy_entries(), 0);
    }

    #[test]
    fn granted_frame_outside_memory_is_bad_page() {
        let f = Fabric::new(2, 8);
        f.t(1).offer(10, 0, 100, false).unwrap();
        let mut ops = [gref_copy(1, 10, 1, 10, 8)];
        grant_copy(f.t(0), &f.lookup(), &mut ops);
        assert_eq!(ops[0].status, GntSt::BadPage);
        assert!(!f.t(1).is_busy(10));
    }

    #[test]
    fn revoke_refused_while_mapped() {
        let f = Fabric::new(2, 8);
        f.t(1).offer(10, 0, 4, false).unwrap();
        let m1 = GrantMapping::map(f.t(1), 10, 0, false).unwrap();
        let m2 = GrantMapping::map(f.t(1), 10, 0, true).unwrap();
        assert_eq!(f.t(1).revoke(10), Err(GrantError::Busy(10)));
        drop(m1);
        // Still read-busy through the second mapping.
        assert_eq!(f.t(1).revoke(10), Err(GrantError::Busy(10)));
        let (flags, _, _) = f.t(1).entry(10).unwrap();
        assert_eq!(flags & (GTF_READING | GTF_WRITING), GTF_READING);
        drop(m2);
        f.t(1).revoke(10).unwrap();
        assert_eq!(f.t(1).revoke(10), Err(GrantError::NotGranted(10)));
        assert_eq!(
            GrantMapping::map(f.t(1), 10, 0, false).unwrap_err(),
            GntSt::GeneralError
        );
    }

    #[derive(Debug, Clone)]
    enum Op {
        Offer {
            dom: u8,
            gref: u16,
            grantee: u8,
            gfn: u8,
            ro: bool,
        },
        Revoke {
            dom: u8,
            gref: u16,
        },
        Copy {
            sd: u8,
            sr: u16,
            so: u16,
            dd: u8,
            dr: u16,
            doff: u16,
            len: u16,
            sg: bool,
            dg: bool,
        },
        Poke {
            dom: u8,
            gref: u16,
            raw: u64,
        },
    }

    fn op() -> impl Strategy<Value = Op> {
        let dom = 0u8..4;
        prop_oneof![
            (dom.clone(), 0u16..20, 0u8..4, 0u8..12, any::<bool>()).prop_map(
                |(dom, gref, grantee, gfn, ro)| Op::Offer {
                    dom,
                    gref,
                    grantee,
                    gfn,
                    ro
                }
            ),
            (dom.clone(), 0u16..20).prop_map(|(dom, gref)| Op::Revoke { dom, gref }),
            (
                dom.clone(),
                0u16..600,
                0u16..4200,
                dom.clone(),
                0u16..600,
                0u16..4200,
                0u16..5000,
                any::<bool>(),
                any::<bool>()
            )
                .prop_map(|(sd, sr, so, dd, dr, doff, len, sg, dg)| Op::Copy {
                    sd,
                    sr,
                    so,
                    dd,
                    dr,
                    doff,
                    len,
                    sg,
                    dg
                }),
            (dom, 0u16..20, any::<u64>()).prop_map(|(dom, gref, raw)| Op::Poke { dom, gref, raw }),
        ]
    }

    proptest! {
        /// Random offer/revoke/copy sequences (including garbage written straight into
        /// the tables, as a hostile guest would) never touch memory outside granted
        /// frames: frames that were never granted keep their sentinel bytes, and no
        /// entry stays busy after the batch.
        #[test]
        fn copies_stay_inside_granted_frames(ops in proptest::collection::vec(op(), 1..60)) {
            let f = Fabric::new(4, 12);
            // Frames 1..12: frames 8..12 are never offered by Offer (gfn < 12 though); we
            // track which frames ever got a writable grant and check the others.
            for d in 0..4 {
                for g in 1..12u64 {
                    f.t(d).memory().write(g, 0, &[0xA5; PAGE_SIZE]).unwrap();
                }
            }
            let mut writable_granted = std::collections::HashSet::new();
            for op in ops {
                match op {
                    Op::Offer { dom, gref, grantee, gfn, ro } => {
                        if f.t(dom.into()).offer(gref.into(), grantee.into(), gfn.into(), ro).is_ok() && !ro {
                            writable_granted.insert((dom, u64::from(gfn)));
                        }
                    }
                    Op::Revoke { dom, gref } => { let _ = f.t(dom.into()).revoke(gref.into()); }
                    Op::Poke { dom, gref, raw } => {
                        // The guest scribbles its own table; remember frames it could open.
                        let mem = f.t(dom.into()).memory();
                        let _ = mem.write(0, usize::from(gref) * 8, &raw.to_le_bytes());
                        let flags = raw as u16;
                        let frame = (raw >> 32) as u32;
                        if flags & GTF_READONLY == 0 {
                            writable_granted.insert((dom, u64::from(frame)));
                        }
                    }
                    Op::Copy { sd, sr, so, dd, dr, doff, len, sg, dg } => {
                        let caller = f.t(sd.into()).clone();
                        let mut flags = 0;
                        if sg { flags |= GNTCOPY_SOURCE_GREF; }
                        if dg { flags |= GNTCOPY_DEST_GREF; }
                        let mut ops = [GrantCopy {
                            source: CopyPtr { gref_or_gfn: sr.into(), domid: if sg { sd.into() } else { DOMID_SELF }, offset: so },
                            dest: CopyPtr { gref_or_gfn: dr.into(), domid: if dg { dd.into() } else { DOMID_SELF }, offset: doff },
                            len, flags, status: GntSt::Okay,
                        }];
                        grant_copy(&caller, &f.lookup(), &mut ops);
                        if ops[0].status == GntSt::Okay {
                            prop_assert!(usize::from(so) + usize::from(len) <= PAGE_SIZE);
                            prop_assert!(usize::from(doff) + usize::from(len) <= PAGE_SIZE);
                            if !dg { writable_granted.insert((sd, u64::from(dr))); }
                        }
                        for d in 0..4 { prop_assert_eq!(f.t(d).busy_entries(), 0); }
                    }
                }
            }
            for d in 0..4u8 {
                for g in 1..12u64 {
                    if writable_granted.contains(&(d, g)) { continue; }
                    let mut page = vec![0u8; PAGE_SIZE];
                    f.t(d.into()).memory().read(g, 0, &mut page).unwrap();
                    prop_assert!(page.iter().all(|&b| b == 0xA5), "dom{} frame {} was written without a writable grant", d, g);
                }
            }
        }
    }
}
