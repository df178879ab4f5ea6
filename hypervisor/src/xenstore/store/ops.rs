//! The node operations (READ, DIRECTORY, DIRECTORY_PART, GET_PERMS, WRITE,
//! MKDIR, RM, SET_PERMS) on a [`View`], following C xenstored 4.17
//! (`xenstored_core.c`) rule by rule. Every check happens before the first
//! mutation, so a failed request changes nothing (XSA-414).

use crate::xenstore::path;
use crate::xenstore::perms::{Caller, PermList, Rights};
use crate::xenstore::wire::{XsError, PAYLOAD_MAX};

use super::view::View;
use super::{QuotaHits, Quotas};

/// A watch event to fire for a direct (non-transactional) modification,
/// with the permission lists any of which lets a watcher see it: the node's,
/// its parent's and, for SET_PERMS, the old ones (XSA-115: watchers that
/// lose access still learn of the change).
#[derive(Debug, Clone)]
pub(crate) struct Fire {
    /// Modified node.
    pub path: String,
    /// Exact ⇒ only watches on `path` itself match (descendants of a
    /// recursive RM).
    pub exact: bool,
    /// Permission lists granting visibility.
    pub perms: Vec<PermList>,
}

/// Per-request context of a node operation.
pub(crate) struct OpCtx<'a> {
    /// Who is asking.
    pub caller: Caller,
    /// The limits in force.
    pub quotas: &'a Quotas,
    /// Quota hit counters.
    pub hits: &'a mut QuotaHits,
    /// Events of direct modifications, collected only when `collect_fires`.
    pub fires: Vec<Fire>,
    /// Some watch exists, so direct modifications must record events.
    pub collect_fires: bool,
}

/// C `get_node` + `errno_from_parents`: succeeds when the node exists and
/// the caller holds all of `want`; otherwise the error is ENOENT/EACCES as
/// found, but turned into EACCES unless the nearest existing ancestor grants
/// the caller any of `want` (so existence is not leaked).
pub(crate) fn check_access(
    view: &mut View,
    caller: &Caller,
    path: &str,
    want: Rights,
) -> Result<(), XsError> {
    let found = match view.get(path)? {
        Some(node) if node.perms.rights(caller).contains(want) => return Ok(()),
        Some(_) => XsError::EACCES,
        None => XsError::ENOENT,
    };
    let mut anc = path::parent(path).unwrap_or(path::ROOT);
    loop {
        if let Some(node) = view.get(anc)? {
            return if node.perms.rights(caller).intersects(want) {
                Err(found)
            } else {
                Err(XsError::EACCES)
            };
        }
        match path::parent(anc) {
            Some(p) => anc = p,
            None => return Err(XsError::EACCES),
        }
    }
}

fn node_or_eio<'v>(view: &'v View, path: &str) -> Result<&'v super::tree::Node, XsError> {
    view.peek(path).ok_or(XsError::EIO)
}

/// READ: the value, no terminator.
pub(crate) fn read(view: &mut View, ctx: &OpCtx, path: &str) -> Result<Vec<u8>, XsError> {
    check_access(view, &ctx.caller, path, Rights::READ)?;
    Ok(node_or_eio(view, path)?.value.clone())
}

/// DIRECTORY: children in creation order, each NUL-terminated.
pub(crate) fn directory(view: &mut View, ctx: &OpCtx, path: &str) -> Result<Vec<u8>, XsError> {
    check_access(view, &ctx.caller, path, Rights::READ)?;
    Ok(node_or_eio(view, path)?.children_bytes())
}

/// GET_PERMS: `n0\0r5\0…`.
pub(crate) fn get_perms(view: &mut View, ctx: &OpCtx, path: &str) -> Result<Vec<u8>, XsError> {
    check_access(view, &ctx.caller, path, Rights::READ)?;
    let mut out = Vec::new();
    node_or_eio(view, path)?.perms.format_into(&mut out);
    Ok(out)
}

/// DIRECTORY_PART: `gen\0` then the child list from byte `offset`, cut at a
/// child boundary so the reply fits 4096 bytes, plus a final empty string
/// when the list ends in this chunk; an offset at or past the end gives
/// `gen\0\0` (C `send_directory_part`).
pub(crate) fn directory_part(
    view: &mut View,
    ctx: &OpCtx,
    path: &str,
    offset: u32,
) -> Result<Vec<u8>, XsError> {
    check_access(view, &ctx.caller, path, Rights::READ)?;
    let node = node_or_eio(view, path)?;
    let children = node.children_bytes();
    let mut out = node.generation.to_string().into_bytes();
    out.push(0);
    let offset = offset as usize;
    if offset >= children.len() {
        out.push(0);
        return Ok(out);
    }
    let rest = children.get(offset..).unwrap_or(&[]);
    let maxlen = PAYLOAD_MAX.saturating_sub(out.len() + 1);
    let mut len = 0usize;
    while let Some(tail) = rest.get(len..) {
        if tail.is_empty() {
            break;
        }
        let name = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
        if len + name >= maxlen {
            break;
        }
        len = (len + name + 1).min(rest.len());
        if len == rest.len() {
            break;
        }
    }
    out.extend_from_slice(rest.get(..len).unwrap_or(rest));
    if len == rest.len() {
        out.push(0);
    }
    Ok(out)
}

fn notify(view: &mut View, ctx: &mut OpCtx, path: &str, exact: bool, old_perms: Option<PermList>) {
    if view.in_transaction() {
        view.queue_fire(path, exact);
        return;
    }
    if !ctx.collect_fires {
        return;
    }
    let mut perms = Vec::with_capacity(3);
    perms.extend(old_perms);
    if let Some(node) = view.peek(path) {
        perms.push(node.perms.clone());
    }
    if let Some(parent) = path::parent(path).and_then(|p| view.peek(p)) {
        perms.push(parent.perms.clone());
    }
    ctx.fires.push(Fire {
        path: path.to_owned(),
        exact,
        perms,
    });
}

fn quota_fail(view: &mut View, counter: &mut u64) -> XsError {
    *counter = counter.saturating_add(1);
    view.fail();
    XsError::ENOSPC
}

/// Creates `path` and any missing ancestors (empty values), inheriting the
/// nearest existing ancestor's permissions with the owner replaced by an
/// unprivileged creator (§4.4). Quotas: node size and nodes per domain.
fn create_node(view: &mut View, ctx: &mut OpCtx, path: &str, value: &[u8]) -> Result<(), XsError> {
    let mut missing = vec![path];
    let mut inherited = None;
    for anc in path::ancestors(path) {
        match view.get(anc)? {
            Some(node) => {
                inherited = Some(node.perms.clone());
                break;
            }
            None => missing.push(anc),
        }
    }
    let inherited = inherited.ok_or(XsError::EIO)?;
    let caller = ctx.caller;
    if !caller.privileged {
        if value.len() > ctx.quotas.node_size {
            return Err(quota_fail(view, &mut ctx.hits.node_size));
        }
        if view.owned(caller.domid).saturating_add(missing.len()) > ctx.quotas.nodes_per_domain {
            return Err(quota_fail(view, &mut ctx.hits.nodes));
        }
    }
    let perms = if caller.privileged {
        inherited
    } else {
        inherited.with_owner(caller.domid)
    };
    for p in missing.iter().rev() {
        let v = if *p == path {
            value.to_vec()
        } else {
            Vec::new()
        };
        view.create(p, v, perms.clone())?;
    }
    notify(view, ctx, path, false, None);
    Ok(())
}

/// WRITE: set the value, creating the node and missing parents.
pub(crate) fn write(
    view: &mut View,
    ctx: &mut OpCtx,
    path: &str,
    value: &[u8],
) -> Result<(), XsError> {
    match check_access(view, &ctx.caller, path, Rights::WRITE) {
        Ok(()) => {
            if !ctx.caller.privileged && value.len() > ctx.quotas.node_size {
                return Err(quota_fail(view, &mut ctx.hits.node_size));
            }
            let perms = node_or_eio(view, path)?.perms.clone();
            view.set_content(path, value.to_vec(), perms)?;
            notify(view, ctx, path, false, None);
            Ok(())
        }
        Err(XsError::ENOENT) => create_node(view, ctx, path, value),
        Err(e) => Err(e),
    }
}

/// MKDIR: create an empty node; OK without an event if it exists.
pub(crate) fn mkdir(view: &mut View, ctx: &mut OpCtx, path: &str) -> Result<(), XsError> {
    match check_access(view, &ctx.caller, path, Rights::WRITE) {
        Ok(()) => Ok(()),
        Err(XsError::ENOENT) => create_node(view, ctx, path, &[]),
        Err(e) => Err(e),
    }
}

/// RM: remove the subtree; OK if absent but the parent exists, ENOENT if the
/// parent is absent too; the root cannot be removed (EINVAL). Events: the
/// removed node's watchers and its ancestors' get its path, watchers of
/// removed descendants get their own path (children first).
pub(crate) fn rm(view: &mut View, ctx: &mut OpCtx, path: &str) -> Result<(), XsError> {
    match check_access(view, &ctx.caller, path, Rights::WRITE) {
        Ok(()) => {
            let parent = path::parent(path).ok_or(XsError::EINVAL)?;
            view.touch(parent)?;
            if view.in_transaction() || ctx.collect_fires {
                for p in view.postorder(path)? {
                    let exact = p != path;
                    notify(view, ctx, &p, exact, None);
                }
            }
            view.remove(path)
        }
        Err(XsError::ENOENT) => {
            let parent = path::parent(path).ok_or(XsError::ENOENT)?;
            match view.get(parent)? {
                Some(_) => Ok(()),
                None => Err(XsError::ENOENT),
            }
        }
        Err(e) => Err(e),
    }
}

/// SET_PERMS on a node: the caller must own it (or be privileged) and only a
/// privileged caller may change the owner (EPERM; XSA-352).
pub(crate) fn set_perms(
    view: &mut View,
    ctx: &mut OpCtx,
    path: &str,
    perms: PermList,
) -> Result<(), XsError> {
    check_access(view, &ctx.caller, path, Rights::WRITE.union(Rights::OWNER))?;
    let node = node_or_eio(view, path)?;
    if !ctx.caller.privileged && perms.owner() != node.perms.owner() {
        return Err(XsError::EPERM);
    }
    let old = node.perms.clone();
    let value = node.value.clone();
    view.set_content(path, value, perms)?;
    notify(view, ctx, path, false, Some(old));
    Ok(())
}
