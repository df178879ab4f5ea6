//! Registered watches: per-connection lists (registration order) plus an
//! index by watched path, so finding the watches an event matches costs one
//! probe per ancestor of the modified node rather than a scan of every watch.
//!
//! A watch on W matches a non-exact event for any path equal to or below W,
//! and an exact event only for W itself (C `fire_watches`/`is_child`).
//! Removing a connection's watches removes them from the index too (XSA-330).

use std::collections::HashMap;

use crate::xenstore::path;
use crate::xenstore::wire::XsError;

use super::ConnId;

/// One registered watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Watch {
    /// Canonical node path, or an `@…` name as given.
    pub path: Box<[u8]>,
    /// The client's token, returned in every event.
    pub token: Box<[u8]>,
    /// Registered with a relative path: events are reported relative too.
    pub relative: bool,
    /// Registration sequence number (store-wide, increasing).
    pub seq: u64,
}

/// All watches of all connections.
#[derive(Debug, Default)]
pub(crate) struct WatchTable {
    by_conn: HashMap<ConnId, Vec<Watch>>,
    index: HashMap<Box<[u8]>, Vec<(ConnId, u64)>>,
    total: usize,
    next_seq: u64,
}

impl WatchTable {
    /// Total number of watches.
    pub fn total(&self) -> usize {
        self.total
    }

    /// Watches of one connection.
    pub fn count(&self, conn: ConnId) -> usize {
        self.by_conn.get(&conn).map_or(0, Vec::len)
    }

    /// The watches of one connection, in registration order.
    pub fn of(&self, conn: ConnId) -> &[Watch] {
        self.by_conn.get(&conn).map_or(&[], Vec::as_slice)
    }

    /// Registers a watch; `EEXIST` for a duplicate (path, token) on the same
    /// connection.
    pub fn add(
        &mut self,
        conn: ConnId,
        path: &[u8],
        token: &[u8],
        relative: bool,
    ) -> Result<&Watch, XsError> {
        let list = self.by_conn.entry(conn).or_default();
        if list.iter().any(|w| &*w.path == path && &*w.token == token) {
            return Err(XsError::EEXIST);
        }
        self.next_seq = self.next_seq.saturating_add(1);
        let seq = self.next_seq;
        list.push(Watch {
            path: path.into(),
            token: token.into(),
            relative,
            seq,
        });
        self.index.entry(path.into()).or_default().push((conn, seq));
        self.total += 1;
        list.last().ok_or(XsError::EIO)
    }

    /// Removes the watch (path, token) of `conn`; false if there is none.
    pub fn remove(&mut self, conn: ConnId, path: &[u8], token: &[u8]) -> bool {
        let Some(list) = self.by_conn.get_mut(&conn) else {
            return false;
        };
        let Some(i) = list
            .iter()
            .position(|w| &*w.path == path && &*w.token == token)
        else {
            return false;
        };
        let w = list.remove(i);
        if list.is_empty() {
            self.by_conn.remove(&conn);
        }
        self.unindex(conn, &w);
        true
    }

    /// Removes every watch of `conn`; returns how many there were.
    pub fn remove_conn(&mut self, conn: ConnId) -> usize {
        let Some(list) = self.by_conn.remove(&conn) else {
            return 0;
        };
        for w in &list {
            self.unindex(conn, w);
        }
        list.len()
    }

    fn unindex(&mut self, conn: ConnId, w: &Watch) {
        if let Some(refs) = self.index.get_mut(&w.path) {
            refs.retain(|&(c, s)| !(c == conn && s == w.seq));
            if refs.is_empty() {
                self.index.remove(&w.path);
            }
        }
        self.total = self.total.saturating_sub(1);
    }

    fn lookup(&self, conn: ConnId, seq: u64) -> Option<&Watch> {
        let list = self.by_conn.get(&conn)?;
        list.binary_search_by_key(&seq, |w| w.seq)
            .ok()
            .and_then(|i| list.get(i))
    }

    /// The watches an event on `path` matches: exact ⇒ watches on `path`
    /// only, else watches on `path` or any ancestor. Unordered.
    pub fn matching(&self, path: &str, exact: bool) -> Vec<(ConnId, &Watch)> {
        let mut out = Vec::new();
        if self.total == 0 {
            return out;
        }
        let mut probe = |p: &str| {
            if let Some(refs) = self.index.get(p.as_bytes()) {
                for &(c, s) in refs {
                    if let Some(w) = self.lookup(c, s) {
                        out.push((c, w));
                    }
                }
            }
        };
        probe(path);
        if !exact && path.starts_with('/') {
            for anc in path::ancestors(path) {
                probe(anc);
            }
        }
        out
    }

    /// Consistency of the index with the per-connection lists.
    pub fn check(&self) -> Result<(), String> {
        let listed: usize = self.by_conn.values().map(Vec::len).sum();
        let indexed: usize = self.index.values().map(Vec::len).sum();
        if listed != self.total || indexed != self.total {
            return Err(format!(
                "watch counts disagree: total {}, listed {listed}, indexed {indexed}",
                self.total
            ));
        }
        for (conn, list) in &self.by_conn {
            if list.windows(2).any(|w| w[0].seq >= w[1].seq) {
                return Err(format!("watches of {conn:?} out of order"));
            }
            for w in list {
                let ok = self
                    .index
                    .get(&w.path)
                    .is_some_and(|refs| refs.contains(&(*conn, w.seq)));
                if !ok {
                    return Err(format!(
                        "watch {} of {conn:?} not indexed",
                        String::from_utf8_lossy(&w.path)
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_match_remove() {
        let mut t = WatchTable::default();
        let (a, b) = (ConnId(1), ConnId(2));
        t.add(a, b"/x", b"t", false).unwrap();
        t.add(a, b"/x/y", b"t", false).unwrap();
        t.add(b, b"/", b"root", false).unwrap();
        assert_eq!(t.add(a, b"/x", b"t", false).unwrap_err(), XsError::EEXIST);
        t.add(a, b"/x", b"t2", false).unwrap();
        assert_eq!(t.total(), 4);
        let m = t.matching("/x/y/z", false);
        assert_eq!(m.len(), 4);
        let m = t.matching("/x/y", true);
        assert_eq!(m.len(), 1);
        assert_eq!(&*m[0].1.path, b"/x/y");
        assert!(t.remove(a, b"/x", b"t"));
        assert!(!t.remove(a, b"/x", b"t"));
        assert_eq!(t.matching("/x", false).len(), 2);
        assert_eq!(t.remove_conn(a), 2);
        assert_eq!(t.total(), 1);
        assert_eq!(t.count(a), 0);
        t.check().unwrap();
    }

    #[test]
    fn special_names_match_exactly() {
        let mut t = WatchTable::default();
        t.add(ConnId(1), b"@releaseDomain", b"t", false).unwrap();
        t.add(ConnId(1), b"@releaseDomain/5", b"t", false).unwrap();
        assert_eq!(t.matching("@releaseDomain", false).len(), 1);
        assert_eq!(t.matching("/local", false).len(), 0);
        t.check().unwrap();
    }
}
