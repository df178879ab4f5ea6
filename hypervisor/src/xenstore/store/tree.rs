//! The committed node tree: a map from canonical path to node, per-owner node
//! accounting and the global generation counter.
//!
//! Lookups are one hash probe per path (O(path length)); every walk is an
//! explicit-stack loop, never recursion (XSA-418). Each modification stamps
//! the touched node (and a parent whose child list changed) with a fresh
//! generation, which is what transaction conflict detection compares
//! (C xenstored `access_node` / `finalize_transaction`).

use std::collections::HashMap;

use crate::xenstore::path::{self, ROOT};
use crate::xenstore::perms::{Access, PermList};
use crate::DomId;

use super::change::Change;

/// One node: value, permissions, children in creation order, generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Node {
    /// The value (binary, no terminator).
    pub value: Vec<u8>,
    /// The permission list (owner first).
    pub perms: PermList,
    /// Child basenames in creation order.
    pub children: Vec<Box<str>>,
    /// Generation of the last modification of this node.
    pub generation: u64,
}

impl Node {
    /// A childless node.
    pub fn new(value: Vec<u8>, perms: PermList, generation: u64) -> Node {
        Node {
            value,
            perms,
            children: Vec::new(),
            generation,
        }
    }

    /// The `DIRECTORY` form of the child list: each name NUL-terminated.
    pub fn children_bytes(&self) -> Vec<u8> {
        let len = self.children.iter().map(|c| c.len() + 1).sum();
        let mut out = Vec::with_capacity(len);
        for c in &self.children {
            out.extend_from_slice(c.as_bytes());
            out.push(0);
        }
        out
    }

    /// Removes `name` from the child list; true if it was there.
    pub fn remove_child(&mut self, name: &str) -> bool {
        match self.children.iter().position(|c| &**c == name) {
            Some(i) => {
                self.children.remove(i);
                true
            }
            None => false,
        }
    }
}

/// The initial tree of a fresh store, parents first (brief / §4.4:
/// `/`, `/local`, `/local/domain`, `/tool`, `/tool/xenstored`, all `n0`).
pub(crate) const INITIAL_NODES: [&str; 4] = ["/local", "/local/domain", "/tool", "/tool/xenstored"];

/// The committed tree.
#[derive(Debug, Clone)]
pub(crate) struct Tree {
    nodes: HashMap<String, Node>,
    owned: HashMap<DomId, usize>,
    generation: u64,
}

impl Tree {
    /// A tree holding the initial nodes.
    pub fn new() -> Tree {
        let mut tree = Tree {
            nodes: HashMap::new(),
            owned: HashMap::new(),
            generation: 0,
        };
        let n0 = PermList::owner_only(0, Access::None);
        let gen = tree.next_generation();
        tree.nodes
            .insert(ROOT.to_owned(), Node::new(Vec::new(), n0.clone(), gen));
        tree.count_owner(0, 1);
        for p in INITIAL_NODES {
            tree.create(p, Vec::new(), n0.clone());
        }
        tree
    }

    /// Hands out the next generation number.
    pub fn next_generation(&mut self) -> u64 {
        self.generation = self.generation.saturating_add(1);
        self.generation
    }

    /// The node at a canonical path.
    pub fn get(&self, path: &str) -> Option<&Node> {
        self.nodes.get(path)
    }

    /// Number of nodes, root included.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Nodes whose owner is `domid` (the per-domain node quota's counter).
    pub fn owned(&self, domid: DomId) -> usize {
        self.owned.get(&domid).copied().unwrap_or(0)
    }

    fn count_owner(&mut self, domid: DomId, add: usize) {
        let n = self.owned.entry(domid).or_insert(0);
        *n = n.saturating_add(add);
    }

    fn uncount_owner(&mut self, domid: DomId) {
        if let Some(n) = self.owned.get_mut(&domid) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.owned.remove(&domid);
            }
        }
    }

    /// Replaces value and permissions of an existing node (children kept).
    /// Returns false if the node does not exist.
    pub fn set_content(&mut self, path: &str, value: Vec<u8>, perms: PermList) -> bool {
        let gen = self.next_generation();
        let Some(node) = self.nodes.get_mut(path) else {
            return false;
        };
        let old_owner = node.perms.owner();
        let new_owner = perms.owner();
        node.value = value;
        node.perms = perms;
        node.generation = gen;
        if old_owner != new_owner {
            self.uncount_owner(old_owner);
            self.count_owner(new_owner, 1);
        }
        true
    }

    /// Creates a node whose parent exists and which does not: appended to
    /// the parent's children. Returns false (and does nothing) otherwise.
    pub fn create(&mut self, path: &str, value: Vec<u8>, perms: PermList) -> bool {
        let Some(parent) = path::parent(path) else {
            return false;
        };
        if self.nodes.contains_key(path) {
            return false;
        }
        let gen = self.next_generation();
        let Some(parent_node) = self.nodes.get_mut(parent) else {
            return false;
        };
        parent_node.children.push(path::basename(path).into());
        parent_node.generation = gen;
        let owner = perms.owner();
        self.nodes
            .insert(path.to_owned(), Node::new(value, perms, gen));
        self.count_owner(owner, 1);
        true
    }

    /// Removes a node and its subtree (iteratively) and unlinks it from its
    /// parent. The root cannot be removed. Returns the number of nodes removed.
    pub fn remove(&mut self, path: &str) -> usize {
        let Some(parent) = path::parent(path) else {
            return 0;
        };
        if !self.nodes.contains_key(path) {
            return 0;
        }
        let gen = self.next_generation();
        if let Some(parent_node) = self.nodes.get_mut(parent) {
            parent_node.remove_child(path::basename(path));
            parent_node.generation = gen;
        }
        let mut removed = 0;
        let mut stack = vec![path.to_owned()];
        while let Some(p) = stack.pop() {
            let Some(node) = self.nodes.remove(&p) else {
                continue;
            };
            removed += 1;
            self.uncount_owner(node.perms.owner());
            for c in &node.children {
                stack.push(path::join(&p, c));
            }
        }
        removed
    }

    /// Applies a journal record (replay): a Write sets or creates the node
    /// (creating missing ancestors, inheriting the nearest existing one's
    /// permissions, so even an inconsistent journal leaves a consistent
    /// tree); a Remove drops the subtree. Invalid paths and removing the root
    /// are ignored. Returns whether the record was valid.
    pub fn apply(&mut self, change: &Change) -> bool {
        let path = change.path();
        if path::validate(path).is_err() {
            return false;
        }
        match change {
            Change::Remove { path } => {
                if path == ROOT {
                    return false;
                }
                self.remove(path);
            }
            Change::Write { path, value, perms } => {
                if self.nodes.contains_key(path.as_str()) {
                    self.set_content(path, value.clone(), perms.clone());
                    return true;
                }
                let mut missing = Vec::new();
                let mut inherited = None;
                for anc in path::ancestors(path) {
                    match self.nodes.get(anc) {
                        Some(n) => {
                            inherited = Some(n.perms.clone());
                            break;
                        }
                        None => missing.push(anc.to_owned()),
                    }
                }
                let inherited = inherited.unwrap_or_else(|| perms.clone());
                for anc in missing.iter().rev() {
                    self.create(anc, Vec::new(), inherited.clone());
                }
                self.create(path, value.clone(), perms.clone());
            }
        }
        true
    }

    /// Paths of the subtree at `root` in pre-order, children in creation
    /// order (parents before children).
    pub fn preorder(&self, root: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut stack = vec![root.to_owned()];
        while let Some(p) = stack.pop() {
            let Some(node) = self.nodes.get(&p) else {
                continue;
            };
            for c in node.children.iter().rev() {
                stack.push(path::join(&p, c));
            }
            out.push(p);
        }
        out
    }

    /// Paths of the subtree at `root` in post-order (children before their
    /// parent, siblings in creation order) — C's `walk_node_tree` exit order.
    pub fn postorder(&self, root: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut stack = vec![root.to_owned()];
        while let Some(p) = stack.pop() {
            let Some(node) = self.nodes.get(&p) else {
                continue;
            };
            for c in node.children.iter() {
                stack.push(path::join(&p, c));
            }
            out.push(p);
        }
        out.reverse();
        out
    }

    /// Integrity walk (robustness §3 e12, C `check_store`): the root exists,
    /// every listed child exists exactly once, every node is reachable from
    /// the root, paths are valid, and the per-owner counters match.
    pub fn check(&self) -> Result<(), String> {
        if !self.nodes.contains_key(ROOT) {
            return Err("root node missing".into());
        }
        let mut reached = 0usize;
        let mut owners: HashMap<DomId, usize> = HashMap::new();
        let mut stack = vec![ROOT.to_owned()];
        while let Some(p) = stack.pop() {
            let node = self
                .nodes
                .get(&p)
                .ok_or_else(|| format!("child {p} listed but missing"))?;
            reached += 1;
            if reached > self.nodes.len() {
                return Err("tree walk reached more nodes than exist (cycle or duplicate)".into());
            }
            if path::validate(&p).is_err() {
                return Err(format!("invalid path {p}"));
            }
            if node.generation > self.generation {
                return Err(format!("{p} has a generation from the future"));
            }
            *owners.entry(node.perms.owner()).or_insert(0) += 1;
            let mut seen = std::collections::HashSet::new();
            for c in &node.children {
                if c.is_empty() || c.contains('/') || !seen.insert(&**c) {
                    return Err(format!("{p} has a bad or duplicate child {c:?}"));
                }
                stack.push(path::join(&p, c));
            }
        }
        if reached != self.nodes.len() {
            return Err(format!(
                "{} nodes unreachable from the root",
                self.nodes.len() - reached
            ));
        }
        if owners != self.owned {
            return Err(format!(
                "owner accounting mismatch: counted {owners:?}, recorded {:?}",
                self.owned
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n0() -> PermList {
        PermList::owner_only(0, Access::None)
    }

    #[test]
    fn initial_tree() {
        let t = Tree::new();
        assert_eq!(t.len(), 5);
        assert_eq!(
            &*t.get("/").unwrap().children,
            ["local".into(), "tool".into()] as [Box<str>; 2]
        );
        assert_eq!(t.owned(0), 5);
        t.check().unwrap();
    }

    #[test]
    fn create_set_remove_keep_accounting() {
        let mut t = Tree::new();
        assert!(t.create("/a", b"1".to_vec(), n0()));
        assert!(!t.create("/a", b"1".to_vec(), n0()), "exists");
        assert!(!t.create("/x/y", b"1".to_vec(), n0()), "no parent");
        assert!(t.create("/a/b", vec![], PermList::owner_only(3, Access::Read)));
        assert!(t.create("/a/b/c", vec![], PermList::owner_only(3, Access::Read)));
        assert_eq!(t.owned(3), 2);
        let g = t.get("/a").unwrap().generation;
        assert!(t.set_content("/a/b", b"v".to_vec(), PermList::owner_only(4, Access::None)));
        assert_eq!(
            t.get("/a").unwrap().generation,
            g,
            "value change leaves parent alone"
        );
        assert_eq!((t.owned(3), t.owned(4)), (1, 1));
        assert_eq!(t.remove("/a"), 3);
        assert_eq!((t.owned(3), t.owned(4)), (0, 0));
        assert!(t.get("/a/b/c").is_none());
        assert_eq!(t.remove("/"), 0);
        t.check().unwrap();
    }

    #[test]
    fn walks_are_in_creation_order() {
        let mut t = Tree::new();
        for p in ["/a", "/a/2", "/a/2/x", "/a/1", "/a/3"] {
            t.create(p, vec![], n0());
        }
        assert_eq!(t.preorder("/a"), ["/a", "/a/2", "/a/2/x", "/a/1", "/a/3"]);
        assert_eq!(t.postorder("/a"), ["/a/2/x", "/a/2", "/a/1", "/a/3", "/a"]);
    }

    #[test]
    fn deep_trees_do_not_recurse() {
        let mut t = Tree::new();
        let mut p = String::new();
        for _ in 0..1000 {
            p.push_str("/d");
            t.create(&p, vec![], n0());
        }
        assert_eq!(t.preorder("/d").len(), 1000);
        t.check().unwrap();
        assert_eq!(t.remove("/d"), 1000);
        t.check().unwrap();
    }

    #[test]
    fn apply_is_robust_to_inconsistent_journals() {
        let mut t = Tree::new();
        assert!(t.apply(&Change::Write {
            path: "/p/q/r".into(),
            value: b"v".to_vec(),
            perms: PermList::owner_only(2, Access::Both),
        }));
        assert_eq!(t.get("/p/q/r").unwrap().value, b"v");
        assert_eq!(t.get("/p").unwrap().perms, n0(), "ancestor inherits");
        assert!(!t.apply(&Change::Remove { path: "/".into() }));
        assert!(!t.apply(&Change::Remove { path: "bad".into() }));
        assert!(t.apply(&Change::Remove {
            path: "/nope".into()
        }));
        t.check().unwrap();
    }

    #[test]
    fn check_detects_corruption() {
        let mut t = Tree::new();
        t.create("/a", vec![], n0());
        let mut broken = t.clone();
        broken.nodes.remove("/a");
        assert!(broken.check().is_err());
        let mut broken = t.clone();
        broken.owned.insert(9, 1);
        assert!(broken.check().is_err());
        let mut broken = t.clone();
        broken
            .nodes
            .insert("/orphan/x".into(), Node::new(vec![], n0(), 1));
        assert!(broken.check().is_err());
        let mut broken = t;
        broken.nodes.get_mut("/").unwrap().children.push("a".into());
        assert!(broken.check().is_err());
    }
}
