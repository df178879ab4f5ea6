//! What a request sees: the committed tree directly, or a transaction's
//! overlay over it. Node operations are written once against this type.
//!
//! Direct mutations are applied to the tree at once and recorded as
//! [`Change`]s for the journal; transactional ones only touch the overlay.

use crate::xenstore::perms::PermList;
use crate::xenstore::wire::XsError;
use crate::DomId;

use super::change::Change;
use super::transaction::Transaction;
use super::tree::{Node, Tree};

/// The tree as one request sees it.
pub(crate) enum View<'a> {
    /// Outside a transaction: the committed tree.
    Direct {
        /// The committed tree.
        tree: &'a mut Tree,
        /// Committed changes of this request, in order.
        changes: &'a mut Vec<Change>,
    },
    /// Inside a transaction.
    Tx {
        /// The committed tree (read only, apart from the generation counter).
        tree: &'a mut Tree,
        /// The transaction's overlay.
        tx: &'a mut Transaction,
        /// The `transaction-nodes` quota, `None` for privileged callers.
        limit: Option<usize>,
    },
}

impl View<'_> {
    /// True inside a transaction.
    pub fn in_transaction(&self) -> bool {
        matches!(self, View::Tx { .. })
    }

    /// Records an access to `path` (inside a transaction: copies it into the
    /// overlay; may hit the `transaction-nodes` quota).
    pub fn touch(&mut self, path: &str) -> Result<(), XsError> {
        match self {
            View::Direct { .. } => Ok(()),
            View::Tx { tree, tx, limit } => tx.touch(tree, path, *limit),
        }
    }

    /// The node at `path` as this view sees it, without recording an access.
    pub fn peek(&self, path: &str) -> Option<&Node> {
        match self {
            View::Direct { tree, .. } => tree.get(path),
            View::Tx { tree, tx, .. } => {
                if tx.has(path) {
                    tx.node(path)
                } else {
                    tree.get(path)
                }
            }
        }
    }

    /// Records an access and returns the node.
    pub fn get(&mut self, path: &str) -> Result<Option<&Node>, XsError> {
        self.touch(path)?;
        Ok(self.peek(path))
    }

    /// Nodes owned by `domid` as this view would commit them.
    pub fn owned(&self, domid: DomId) -> usize {
        match self {
            View::Direct { tree, .. } => tree.owned(domid),
            View::Tx { tree, tx, .. } => {
                let total = i64::try_from(tree.owned(domid))
                    .unwrap_or(i64::MAX)
                    .saturating_add(tx.owned_delta(domid));
                usize::try_from(total.max(0)).unwrap_or(usize::MAX)
            }
        }
    }

    /// Creates a node whose parent exists in this view.
    pub fn create(&mut self, path: &str, value: Vec<u8>, perms: PermList) -> Result<(), XsError> {
        match self {
            View::Direct { tree, changes } => {
                if !tree.create(path, value.clone(), perms.clone()) {
                    return Err(XsError::EIO);
                }
                changes.push(Change::Write {
                    path: path.to_owned(),
                    value,
                    perms,
                });
                Ok(())
            }
            View::Tx { tree, tx, .. } => {
                let gen = tree.next_generation();
                tx.create(path, value, perms, gen)
            }
        }
    }

    /// Replaces value and permissions of an existing node.
    pub fn set_content(
        &mut self,
        path: &str,
        value: Vec<u8>,
        perms: PermList,
    ) -> Result<(), XsError> {
        match self {
            View::Direct { tree, changes } => {
                if !tree.set_content(path, value.clone(), perms.clone()) {
                    return Err(XsError::EIO);
                }
                changes.push(Change::Write {
                    path: path.to_owned(),
                    value,
                    perms,
                });
                Ok(())
            }
            View::Tx { tree, tx, .. } => {
                let gen = tree.next_generation();
                tx.set_content(path, value, perms, gen)
            }
        }
    }

    /// Removes a subtree (inside a transaction every node of it must have
    /// been touched, see [`postorder`](Self::postorder)).
    pub fn remove(&mut self, path: &str) -> Result<(), XsError> {
        match self {
            View::Direct { tree, changes } => {
                tree.remove(path);
                changes.push(Change::Remove {
                    path: path.to_owned(),
                });
                Ok(())
            }
            View::Tx { tree, tx, .. } => {
                let gen = tree.next_generation();
                tx.remove(path, gen)
            }
        }
    }

    /// The subtree at `root` in post-order (children first, siblings in
    /// creation order), touching every node inside a transaction. Iterative.
    pub fn postorder(&mut self, root: &str) -> Result<Vec<String>, XsError> {
        if let View::Direct { tree, .. } = self {
            return Ok(tree.postorder(root));
        }
        let mut out = Vec::new();
        let mut stack = vec![root.to_owned()];
        while let Some(p) = stack.pop() {
            let Some(node) = self.get(&p)? else {
                continue;
            };
            for c in node.children.iter() {
                stack.push(crate::xenstore::path::join(&p, c));
            }
            out.push(p);
        }
        out.reverse();
        Ok(out)
    }

    /// Queues a watch event inside a transaction (no-op outside).
    pub fn queue_fire(&mut self, path: &str, exact: bool) {
        if let View::Tx { tx, .. } = self {
            tx.queue_fire(path, exact);
        }
    }

    /// Marks the transaction as failed: its commit will be refused (XSA-415).
    pub fn fail(&mut self) {
        if let View::Tx { tx, .. } = self {
            tx.failed = true;
        }
    }
}
