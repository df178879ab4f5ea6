//! A transaction: a copy-on-access overlay over the committed tree.
//!
//! Like C xenstored 4.17 (`xenstored_transaction.c`), a node is copied into
//! the transaction the first time the transaction touches it, remembering
//! the committed generation it had then (or that it did not exist). Reads
//! and writes inside the transaction then see only the overlay. Commit fails
//! with `EAGAIN` when any touched node's committed generation has changed
//! since (§4.5). Nothing is applied before commit; watch events are queued
//! per node (exact or not, C's `queue_watches`) and fired only after a
//! successful commit. The per-owner node accounting is recomputed from the
//! overlay at commit (XSA-421).

use std::collections::HashMap;

use crate::xenstore::path;
use crate::xenstore::perms::PermList;
use crate::xenstore::wire::XsError;
use crate::DomId;

use super::change::Change;
use super::tree::{Node, Tree};

/// One node the transaction has touched.
#[derive(Debug, Clone)]
pub(crate) struct TxEntry {
    /// Canonical path.
    pub path: String,
    /// The node as the transaction sees it now (`None` = absent).
    pub node: Option<Node>,
    /// Committed generation at first access (`None` = did not exist).
    pub first_gen: Option<u64>,
    /// Permissions at first access (for watch permission checks at commit).
    pub old_perms: Option<PermList>,
    /// Value or permissions were written.
    pub content_modified: bool,
    /// Existed at first access, was removed and created again.
    pub recreated: bool,
    /// A watch event is queued for this node: `Some(exact)`.
    pub fire: Option<bool>,
}

impl TxEntry {
    /// The node is new as far as the committed tree is concerned: it exists
    /// at the end and was created inside the transaction.
    fn is_new(&self) -> bool {
        self.node.is_some() && (self.first_gen.is_none() || self.recreated)
    }

    /// The committed node at this path disappears at commit (removed, or
    /// replaced by a re-created one).
    fn drops_committed(&self) -> bool {
        self.first_gen.is_some() && (self.node.is_none() || self.recreated)
    }
}

/// A transaction of one connection.
#[derive(Debug, Clone)]
pub(crate) struct Transaction {
    entries: Vec<TxEntry>,
    index: HashMap<String, usize>,
    /// A modifying request failed inside the transaction: commit must fail
    /// (XSA-415).
    pub failed: bool,
    /// At least one node was created (the commit re-checks the node quota).
    pub created: bool,
    /// The last access was refused by the `transaction-nodes` quota.
    pub limit_hit: bool,
    owned_delta: HashMap<DomId, i64>,
}

impl Transaction {
    /// An empty transaction.
    pub fn new() -> Transaction {
        Transaction {
            entries: Vec::new(),
            index: HashMap::new(),
            failed: false,
            created: false,
            limit_hit: false,
            owned_delta: HashMap::new(),
        }
    }

    /// The touched nodes, in first-access order.
    pub fn entries(&self) -> &[TxEntry] {
        &self.entries
    }

    fn entry(&self, path: &str) -> Option<&TxEntry> {
        self.index.get(path).and_then(|&i| self.entries.get(i))
    }

    fn entry_mut(&mut self, path: &str) -> Option<&mut TxEntry> {
        match self.index.get(path) {
            Some(&i) => self.entries.get_mut(i),
            None => None,
        }
    }

    /// True once `path` has been touched.
    pub fn has(&self, path: &str) -> bool {
        self.index.contains_key(path)
    }

    /// The overlay's view of a touched node.
    pub fn node(&self, path: &str) -> Option<&Node> {
        self.entry(path).and_then(|e| e.node.as_ref())
    }

    /// Records the first access to `path`, copying the committed node.
    /// `limit` is the `transaction-nodes` quota (None = unlimited); hitting it
    /// is `ENOSPC` and fails the transaction (C `access_node`).
    pub fn touch(&mut self, tree: &Tree, path: &str, limit: Option<usize>) -> Result<(), XsError> {
        if self.index.contains_key(path) {
            return Ok(());
        }
        if limit.is_some_and(|l| self.entries.len() >= l) {
            self.failed = true;
            self.limit_hit = true;
            return Err(XsError::ENOSPC);
        }
        let committed = tree.get(path);
        let entry = TxEntry {
            path: path.to_owned(),
            node: committed.cloned(),
            first_gen: committed.map(|n| n.generation),
            old_perms: committed.map(|n| n.perms.clone()),
            content_modified: false,
            recreated: false,
            fire: None,
        };
        self.index.insert(path.to_owned(), self.entries.len());
        self.entries.push(entry);
        Ok(())
    }

    /// Net change of the number of nodes owned by `domid` this transaction
    /// would commit.
    pub fn owned_delta(&self, domid: DomId) -> i64 {
        self.owned_delta.get(&domid).copied().unwrap_or(0)
    }

    fn add_owned(&mut self, domid: DomId, delta: i64) {
        let d = self.owned_delta.entry(domid).or_insert(0);
        *d = d.saturating_add(delta);
    }

    /// Creates `path` in the overlay; its parent must have been touched and
    /// exist there, the node itself must have been touched and be absent.
    pub fn create(
        &mut self,
        path: &str,
        value: Vec<u8>,
        perms: PermList,
        gen: u64,
    ) -> Result<(), XsError> {
        let parent = path::parent(path).ok_or(XsError::EINVAL)?;
        if self.node(parent).is_none() || !self.has(path) || self.node(path).is_some() {
            return Err(XsError::EIO);
        }
        if let Some(parent_node) = self.entry_mut(parent).and_then(|e| e.node.as_mut()) {
            parent_node.children.push(path::basename(path).into());
            parent_node.generation = gen;
        }
        let owner = perms.owner();
        if let Some(entry) = self.entry_mut(path) {
            entry.recreated = entry.first_gen.is_some();
            entry.node = Some(Node::new(value, perms, gen));
            entry.content_modified = true;
        }
        self.created = true;
        self.add_owned(owner, 1);
        Ok(())
    }

    /// Replaces value and permissions of a touched, existing node.
    pub fn set_content(
        &mut self,
        path: &str,
        value: Vec<u8>,
        perms: PermList,
        gen: u64,
    ) -> Result<(), XsError> {
        let entry = self.entry_mut(path).ok_or(XsError::EIO)?;
        let node = entry.node.as_mut().ok_or(XsError::EIO)?;
        let old_owner = node.perms.owner();
        let new_owner = perms.owner();
        node.value = value;
        node.perms = perms;
        node.generation = gen;
        entry.content_modified = true;
        if old_owner != new_owner {
            self.add_owned(old_owner, -1);
            self.add_owned(new_owner, 1);
        }
        Ok(())
    }

    /// Removes a touched subtree from the overlay: every node of it must
    /// already have been touched (the caller walks it first).
    pub fn remove(&mut self, path: &str, gen: u64) -> Result<(), XsError> {
        let parent = path::parent(path).ok_or(XsError::EINVAL)?;
        if self.node(parent).is_none() {
            return Err(XsError::EIO);
        }
        // Collect first so a missing entry leaves the overlay untouched.
        let mut doomed = Vec::new();
        let mut stack = vec![path.to_owned()];
        while let Some(p) = stack.pop() {
            let entry = self.entry(&p).ok_or(XsError::EIO)?;
            if let Some(node) = &entry.node {
                for c in &node.children {
                    stack.push(path::join(&p, c));
                }
                doomed.push(p);
            }
        }
        for p in &doomed {
            let owner = self
                .entry_mut(p)
                .and_then(|e| e.node.take())
                .map(|n| n.perms.owner());
            if let Some(owner) = owner {
                self.add_owned(owner, -1);
            }
        }
        if let Some(parent_node) = self.entry_mut(parent).and_then(|e| e.node.as_mut()) {
            parent_node.remove_child(path::basename(path));
            parent_node.generation = gen;
        }
        Ok(())
    }

    /// Queues a watch event for a touched node; a non-exact event replaces
    /// an exact one, not the other way round (C `queue_watches`).
    pub fn queue_fire(&mut self, path: &str, exact: bool) {
        match self.entry_mut(path) {
            Some(entry) => {
                entry.fire = Some(match entry.fire {
                    None => exact,
                    Some(prev) => prev && exact,
                });
            }
            None => self.failed = true,
        }
    }

    /// True when any touched node's committed generation differs from the
    /// one seen at first access (→ `EAGAIN`).
    pub fn conflicts(&self, tree: &Tree) -> bool {
        self.entries
            .iter()
            .any(|e| tree.get(&e.path).map(|n| n.generation) != e.first_gen)
    }

    /// The changes that turn the committed tree (as it was at first access
    /// of every touched node — guaranteed when [`conflicts`](Self::conflicts)
    /// is false) into the transaction's view, child order included:
    /// first the topmost removals (of removed or re-created nodes), then the
    /// new nodes parent-first with siblings in the overlay's child order,
    /// then value/permission updates of surviving nodes.
    pub fn to_changes(&self) -> Vec<Change> {
        let mut out = Vec::new();
        let covered = |p: &str| self.entry(p).is_some_and(TxEntry::drops_committed);
        for e in &self.entries {
            if e.drops_committed() && !path::parent(&e.path).is_some_and(covered) {
                out.push(Change::Remove {
                    path: e.path.clone(),
                });
            }
        }
        let is_new = |p: &str| self.entry(p).is_some_and(TxEntry::is_new);
        let mut parents_done = std::collections::HashSet::new();
        for e in &self.entries {
            if !e.is_new() {
                continue;
            }
            let Some(parent) = path::parent(&e.path) else {
                continue;
            };
            if is_new(parent) || !parents_done.insert(parent) {
                continue;
            }
            let Some(parent_node) = self.node(parent) else {
                continue;
            };
            for c in &parent_node.children {
                let child = path::join(parent, c);
                if is_new(&child) {
                    self.push_subtree_writes(&child, &mut out);
                }
            }
        }
        for e in &self.entries {
            if let Some(node) = &e.node {
                if e.content_modified && !e.is_new() {
                    out.push(Change::Write {
                        path: e.path.clone(),
                        value: node.value.clone(),
                        perms: node.perms.clone(),
                    });
                }
            }
        }
        out
    }

    fn push_subtree_writes(&self, root: &str, out: &mut Vec<Change>) {
        let mut stack = vec![root.to_owned()];
        while let Some(p) = stack.pop() {
            let Some(node) = self.node(&p) else {
                continue;
            };
            for c in node.children.iter().rev() {
                stack.push(path::join(&p, c));
            }
            out.push(Change::Write {
                value: node.value.clone(),
                perms: node.perms.clone(),
                path: p,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xenstore::perms::Access;

    fn n0() -> PermList {
        PermList::owner_only(0, Access::None)
    }

    fn commit(tree: &mut Tree, tx: &Transaction) {
        assert!(!tx.conflicts(tree));
        for c in tx.to_changes() {
            tree.apply(&c);
        }
        tree.check().unwrap();
    }

    fn children(tree: &Tree, p: &str) -> Vec<String> {
        tree.get(p)
            .unwrap()
            .children
            .iter()
            .map(|c| c.to_string())
            .collect()
    }

    #[test]
    fn overlay_is_isolated_until_commit() {
        let mut tree = Tree::new();
        let mut tx = Transaction::new();
        tx.touch(&tree, "/a", None).unwrap();
        tx.touch(&tree, "/", None).unwrap();
        tx.create("/a", b"v".to_vec(), n0(), 100).unwrap();
        assert!(tree.get("/a").is_none());
        assert_eq!(tx.node("/a").unwrap().value, b"v");
        commit(&mut tree, &tx);
        assert_eq!(tree.get("/a").unwrap().value, b"v");
        assert_eq!(children(&tree, "/"), ["local", "tool", "a"]);
    }

    #[test]
    fn conflict_detected_on_changed_or_created_nodes() {
        let mut tree = Tree::new();
        tree.create("/a", vec![], n0());
        let mut tx = Transaction::new();
        tx.touch(&tree, "/a", None).unwrap();
        tx.touch(&tree, "/b", None).unwrap();
        assert!(!tx.conflicts(&tree));
        tree.create("/b", vec![], n0());
        assert!(tx.conflicts(&tree), "a node seen absent now exists");
        let mut tx = Transaction::new();
        tx.touch(&tree, "/a", None).unwrap();
        tree.set_content("/a", b"x".to_vec(), n0());
        assert!(tx.conflicts(&tree));
    }

    #[test]
    fn access_limit_fails_the_transaction() {
        let tree = Tree::new();
        let mut tx = Transaction::new();
        tx.touch(&tree, "/a", Some(2)).unwrap();
        tx.touch(&tree, "/b", Some(2)).unwrap();
        tx.touch(&tree, "/a", Some(2)).unwrap();
        assert_eq!(tx.touch(&tree, "/c", Some(2)), Err(XsError::ENOSPC));
        assert!(tx.failed);
    }

    #[test]
    fn recreated_child_moves_to_the_end() {
        let mut tree = Tree::new();
        for p in ["/a", "/a/b", "/a/b/x", "/a/c"] {
            tree.create(p, vec![], n0());
        }
        let mut tx = Transaction::new();
        for p in ["/a", "/a/b", "/a/b/x", "/a/c", "/a/d"] {
            tx.touch(&tree, p, None).unwrap();
        }
        tx.create("/a/d", b"d".to_vec(), n0(), 50).unwrap();
        tx.remove("/a/b", 51).unwrap();
        tx.create("/a/b", b"new".to_vec(), n0(), 52).unwrap();
        let changes = tx.to_changes();
        assert_eq!(
            changes.first(),
            Some(&Change::Remove {
                path: "/a/b".into()
            })
        );
        commit(&mut tree, &tx);
        assert_eq!(children(&tree, "/a"), ["c", "d", "b"]);
        assert_eq!(tree.get("/a/b").unwrap().value, b"new");
        assert!(tree.get("/a/b/x").is_none());
    }

    #[test]
    fn create_then_remove_is_a_no_op() {
        let mut tree = Tree::new();
        let mut tx = Transaction::new();
        for p in ["/", "/n", "/n/m"] {
            tx.touch(&tree, p, None).unwrap();
        }
        tx.create("/n", vec![], n0(), 10).unwrap();
        tx.create("/n/m", vec![], n0(), 11).unwrap();
        tx.remove("/n", 12).unwrap();
        assert!(tx.to_changes().is_empty());
        assert_eq!(tx.owned_delta(0), 0);
        commit(&mut tree, &tx);
    }

    #[test]
    fn owner_deltas_follow_the_overlay() {
        let mut tree = Tree::new();
        tree.create("/a", vec![], PermList::owner_only(3, Access::None));
        let mut tx = Transaction::new();
        tx.touch(&tree, "/a", None).unwrap();
        tx.touch(&tree, "/a/b", None).unwrap();
        tx.create("/a/b", vec![], PermList::owner_only(3, Access::None), 9)
            .unwrap();
        assert_eq!(tx.owned_delta(3), 1);
        tx.set_content("/a", vec![], PermList::owner_only(4, Access::None), 10)
            .unwrap();
        assert_eq!((tx.owned_delta(3), tx.owned_delta(4)), (0, 1));
        assert_eq!(tx.remove("/a", 11), Err(XsError::EIO), "parent not touched");
        assert!(
            tx.node("/a/b").is_some(),
            "a refused removal changes nothing"
        );
        tx.touch(&tree, "/", None).unwrap();
        tx.remove("/a", 12).unwrap();
        assert_eq!((tx.owned_delta(3), tx.owned_delta(4)), (-1, 0));
        commit(&mut tree, &tx);
        assert_eq!(tree.owned(3), 0);
    }
}
