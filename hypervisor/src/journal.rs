//! The durable state journal: a snapshot plus an append-only log of committed batches.
//!
//! Committed state (the xenstore tree, the domain registry) must survive `kill -9` of
//! the daemon: every batch is written (and, with [`SyncPolicy::Data`], fdatasync'ed)
//! before the replies that depend on it are sent. A batch is one record:
//!
//! ```text
//! u32 payload_len | u32 crc32(seq ‖ payload) | u64 seq | payload
//! payload = (u8 kind | u32 len | len bytes)*
//! ```
//!
//! On open, records are read until the first short, oversized or CRC-failing one; that
//! torn tail is cut off (never loaded as garbage) and reported. Compaction writes a
//! snapshot (same framing, one record) to a temporary file, fsyncs and renames it, then
//! truncates the log; the snapshot carries the sequence number it covers, so a crash
//! between rename and truncate just makes replay skip batches already in the snapshot.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

const LOG_MAGIC: &[u8; 8] = b"DNJRNL01";
const SNAP_MAGIC: &[u8; 8] = b"DNSNAP01";
const RECORD_HEADER: usize = 16;
/// Upper bound for one record; anything larger in a header is treated as corruption.
pub const MAX_RECORD: usize = 256 << 20;

/// When to force written batches to stable storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncPolicy {
    /// `write(2)` only: survives a crash of the daemon (kill -9), not of the machine.
    Write,
    /// `write(2)` + `fdatasync(2)` before replying: survives power loss too.
    Data,
}

/// One typed entry of a batch; `kind` says which state machine it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Which consumer decodes it (see the daemon's record kinds).
    pub kind: u8,
    /// The encoded change.
    pub data: Vec<u8>,
}

/// What [`Journal::open`] found on disk.
#[derive(Debug, Default)]
pub struct Recovered {
    /// The snapshot's entries (empty if there is none).
    pub snapshot: Vec<Entry>,
    /// Committed batches after the snapshot, in order.
    pub batches: Vec<Vec<Entry>>,
    /// Bytes of torn or corrupt tail that were cut off the log.
    pub torn_bytes: u64,
}

/// Errors opening the journal.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// Filesystem error.
    #[error("{path}: {source}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The snapshot is unreadable; refusing to start from nothing silently.
    #[error("{0}: corrupt snapshot (bad magic, length or checksum)")]
    CorruptSnapshot(PathBuf),
}

/// The open journal.
#[derive(Debug)]
pub struct Journal {
    dir: PathBuf,
    log: File,
    log_len: u64,
    seq: u64,
    policy: SyncPolicy,
    buf: Vec<u8>,
    dirty: bool,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> JournalError + '_ {
    move |source| JournalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn encode_payload(entries: &[Entry], out: &mut Vec<u8>) {
    for e in entries {
        out.push(e.kind);
        out.extend_from_slice(&(e.data.len() as u32).to_le_bytes());
        out.extend_from_slice(&e.data);
    }
}

fn decode_payload(mut p: &[u8]) -> Option<Vec<Entry>> {
    let mut out = Vec::new();
    while !p.is_empty() {
        if p.len() < 5 {
            return None;
        }
        let kind = p[0];
        let len = u32::from_le_bytes([p[1], p[2], p[3], p[4]]) as usize;
        let rest = &p[5..];
        if rest.len() < len {
            return None;
        }
        out.push(Entry {
            kind,
            data: rest[..len].to_vec(),
        });
        p = &rest[len..];
    }
    Some(out)
}

fn crc(seq: u64, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&seq.to_le_bytes());
    h.update(payload);
    h.finalize()
}

fn frame_record(seq: u64, entries: &[Entry], out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0u8; RECORD_HEADER]);
    encode_payload(entries, out);
    let payload_len = out.len() - start - RECORD_HEADER;
    let sum = crc(seq, &out[start + RECORD_HEADER..]);
    out[start..start + 4].copy_from_slice(&(payload_len as u32).to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&sum.to_le_bytes());
    out[start + 8..start + 16].copy_from_slice(&seq.to_le_bytes());
}

/// Parses one record at the start of `buf`: `(seq, entries, bytes used)`.
fn parse_record(buf: &[u8]) -> Option<(u64, Vec<Entry>, usize)> {
    if buf.len() < RECORD_HEADER {
        return None;
    }
    let len = u32::from_le_bytes(buf[0..4].try_into().ok()?) as usize;
    let sum = u32::from_le_bytes(buf[4..8].try_into().ok()?);
    let seq = u64::from_le_bytes(buf[8..16].try_into().ok()?);
    if len > MAX_RECORD || buf.len() - RECORD_HEADER < len {
        return None;
    }
    let payload = &buf[RECORD_HEADER..RECORD_HEADER + len];
    if crc(seq, payload) != sum {
        return None;
    }
    Some((seq, decode_payload(payload)?, RECORD_HEADER + len))
}

impl Journal {
    /// Opens (or creates) the journal in `dir`, returning what was committed before.
    pub fn open(dir: &Path, policy: SyncPolicy) -> Result<(Journal, Recovered), JournalError> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let snap_path = dir.join("state.snapshot");
        let mut recovered = Recovered::default();
        let mut snap_seq = 0;
        match std::fs::read(&snap_path) {
            Ok(bytes) => {
                if bytes.len() < 8 || &bytes[..8] != SNAP_MAGIC {
                    return Err(JournalError::CorruptSnapshot(snap_path));
                }
                let (seq, entries, used) = parse_record(&bytes[8..])
                    .ok_or_else(|| JournalError::CorruptSnapshot(snap_path.clone()))?;
                if used != bytes.len() - 8 {
                    return Err(JournalError::CorruptSnapshot(snap_path));
                }
                snap_seq = seq;
                recovered.snapshot = entries;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&snap_path)(e)),
        }

        let log_path = dir.join("state.log");
        let mut log = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&log_path)
            .map_err(io_err(&log_path))?;
        let mut bytes = Vec::new();
        log.read_to_end(&mut bytes).map_err(io_err(&log_path))?;
        let mut seq = snap_seq;
        let good_len = if bytes.len() < 8 || &bytes[..8] != LOG_MAGIC {
            // New, empty or headerless log: start over (a headerless file can only be
            // a log torn while being created).
            recovered.torn_bytes = bytes.len() as u64;
            log.set_len(0).map_err(io_err(&log_path))?;
            log.seek(SeekFrom::Start(0)).map_err(io_err(&log_path))?;
            log.write_all(LOG_MAGIC).map_err(io_err(&log_path))?;
            8
        } else {
            let mut at = 8;
            while let Some((rseq, entries, used)) = parse_record(&bytes[at..]) {
                if rseq > seq {
                    recovered.batches.push(entries);
                    seq = rseq;
                } else if rseq <= snap_seq {
                    // Already folded into the snapshot (crash between rename and truncate).
                } else {
                    break; // sequence went backwards: treat as corruption from here on
                }
                at += used;
            }
            recovered.torn_bytes = (bytes.len() - at) as u64;
            if at != bytes.len() {
                log.set_len(at as u64).map_err(io_err(&log_path))?;
            }
            at
        };
        log.seek(SeekFrom::Start(good_len as u64))
            .map_err(io_err(&log_path))?;
        log.sync_data().map_err(io_err(&log_path))?;
        Ok((
            Journal {
                dir: dir.to_path_buf(),
                log,
                log_len: good_len as u64,
                seq,
                policy,
                buf: Vec::new(),
                dirty: false,
            },
            recovered,
        ))
    }

    /// Appends one committed batch (atomic on replay: all of it or none of it).
    pub fn append(&mut self, entries: &[Entry]) -> io::Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        self.seq += 1;
        self.buf.clear();
        frame_record(self.seq, entries, &mut self.buf);
        self.log.write_all(&self.buf)?;
        self.log_len += self.buf.len() as u64;
        self.dirty = true;
        Ok(())
    }

    /// Makes appended batches durable according to the policy (group commit: call once
    /// per round of requests, before sending their replies).
    pub fn sync(&mut self) -> io::Result<()> {
        if self.dirty && self.policy == SyncPolicy::Data {
            self.log.sync_data()?;
        }
        self.dirty = false;
        Ok(())
    }

    /// Bytes in the log (compaction trigger).
    pub fn log_len(&self) -> u64 {
        self.log_len
    }

    /// Replaces snapshot + log by a snapshot of the current state.
    pub fn compact(&mut self, state: &[Entry]) -> io::Result<()> {
        let mut buf = SNAP_MAGIC.to_vec();
        frame_record(self.seq, state, &mut buf);
        let tmp = self.dir.join("state.snapshot.tmp");
        let dst = self.dir.join("state.snapshot");
        {
            let mut f = File::create(&tmp)?;
            f.write_all(&buf)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &dst)?;
        File::open(&self.dir)?.sync_all()?;
        self.log.set_len(8)?;
        self.log.seek(SeekFrom::Start(8))?;
        self.log.sync_data()?;
        self.log_len = 8;
        self.dirty = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("domnet-journal-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn e(kind: u8, s: &str) -> Entry {
        Entry {
            kind,
            data: s.as_bytes().to_vec(),
        }
    }

    #[test]
    fn batches_survive_reopen() {
        let d = tmpdir("reopen");
        {
            let (mut j, r) = Journal::open(&d, SyncPolicy::Data).unwrap();
            assert!(r.batches.is_empty() && r.snapshot.is_empty());
            j.append(&[e(1, "a"), e(2, "b")]).unwrap();
            j.append(&[e(1, "c")]).unwrap();
            j.sync().unwrap();
        }
        let (_, r) = Journal::open(&d, SyncPolicy::Data).unwrap();
        assert_eq!(r.batches, vec![vec![e(1, "a"), e(2, "b")], vec![e(1, "c")]]);
        assert_eq!(r.torn_bytes, 0);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn torn_tail_is_cut_not_loaded() {
        let d = tmpdir("torn");
        {
            let (mut j, _) = Journal::open(&d, SyncPolicy::Write).unwrap();
            j.append(&[e(1, "keep")]).unwrap();
            j.append(&[e(1, "torn-away"), e(1, "also")]).unwrap();
        }
        let log = d.join("state.log");
        let len = std::fs::metadata(&log).unwrap().len();
        // Every possible truncation point inside the second record keeps exactly the first.
        let full = std::fs::read(&log).unwrap();
        let first_end = 8 + RECORD_HEADER + 5 + 4;
        for cut in first_end as u64..len {
            std::fs::write(&log, &full[..cut as usize]).unwrap();
            let (_, r) = Journal::open(&d, SyncPolicy::Write).unwrap();
            assert_eq!(r.batches, vec![vec![e(1, "keep")]], "cut at {cut}");
            assert_eq!(r.torn_bytes, cut - first_end as u64);
        }
        // A flipped byte in the payload is caught by the CRC.
        let mut bad = full.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        std::fs::write(&log, &bad).unwrap();
        let (mut j, r) = Journal::open(&d, SyncPolicy::Write).unwrap();
        assert_eq!(r.batches.len(), 1);
        // Appending after recovery continues cleanly.
        j.append(&[e(3, "after")]).unwrap();
        drop(j);
        let (_, r) = Journal::open(&d, SyncPolicy::Write).unwrap();
        assert_eq!(r.batches, vec![vec![e(1, "keep")], vec![e(3, "after")]]);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn compaction_and_crash_between_rename_and_truncate() {
        let d = tmpdir("compact");
        let (mut j, _) = Journal::open(&d, SyncPolicy::Data).unwrap();
        j.append(&[e(1, "x")]).unwrap();
        j.append(&[e(1, "y")]).unwrap();
        let old_log = std::fs::read(d.join("state.log")).unwrap();
        j.compact(&[e(9, "state")]).unwrap();
        j.append(&[e(1, "z")]).unwrap();
        drop(j);
        let (_, r) = Journal::open(&d, SyncPolicy::Data).unwrap();
        assert_eq!(r.snapshot, vec![e(9, "state")]);
        assert_eq!(r.batches, vec![vec![e(1, "z")]]);
        // Simulate the crash: snapshot renamed but the log still holds the old batches.
        std::fs::write(d.join("state.log"), &old_log).unwrap();
        let (_, r) = Journal::open(&d, SyncPolicy::Data).unwrap();
        assert_eq!(r.snapshot, vec![e(9, "state")]);
        assert!(
            r.batches.is_empty(),
            "batches already in the snapshot are skipped"
        );
        // A corrupt snapshot is an error, never an empty start.
        std::fs::write(d.join("state.snapshot"), b"DNSNAP01garbage").unwrap();
        assert!(matches!(
            Journal::open(&d, SyncPolicy::Data),
            Err(JournalError::CorruptSnapshot(_))
        ));
        std::fs::remove_dir_all(&d).unwrap();
    }
}
