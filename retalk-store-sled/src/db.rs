//! What both stores share: opening a sled database with its trees, the
//! single writer, and the [`Overlay`] a write step is staged in before it
//! commits atomically and durably.

use std::collections::{BTreeMap, HashSet};
use std::ffi::OsString;
use std::fs::File;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use retalk_proto::relay::StoreError;
use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};
use sled::{Batch, IVec, Tree};

use crate::codec::be_u64;

/// The tree every database has first: counters and the format marker.
pub(crate) const META: usize = 0;

/// Under this key `META` names what the database holds and in which layout.
const FORMAT_KEY: &[u8] = b"format";

/// sled's log file inside its directory.
const LOG_FILE: &str = "db";

pub(crate) fn sled_err(e: sled::Error) -> StoreError {
    StoreError(Box::new(e))
}

fn io_err(e: std::io::Error) -> StoreError {
    StoreError(Box::new(e))
}

/// fsyncs a file or directory by path; one that is gone (a blob sled
/// collected meanwhile) needs no syncing.
fn sync_path(path: &Path) -> Result<(), StoreError> {
    match File::open(path) {
        Ok(f) => f.sync_all().map_err(io_err),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(e)),
    }
}

/// One sled database: its trees (in the order of the names it was opened
/// with) and the lock that makes its writes one at a time.
pub(crate) struct Base {
    path: PathBuf,
    db: sled::Db,
    trees: Vec<Tree>,
    writer: Mutex<()>,
    /// sled's log file, for [`Base::sync`].
    log: File,
    /// Blob files already fsynced.
    synced_blobs: Mutex<HashSet<OsString>>,
    /// Write steps committed so far (numbered from 1).
    committed: AtomicU64,
    /// The last write step known to be on disk; held while syncing, so
    /// writers waiting for a sync queue here (group commit).
    synced: Mutex<u64>,
}

impl Base {
    /// Opens (creating if missing) the database at `path` with the trees
    /// `names` (the first is [`META`]). `format` is written into a new
    /// database and checked in an existing one, so a relay database is
    /// never opened as a client store, nor a later layout by this code.
    pub(crate) fn open(path: &Path, format: &str, names: &[&str]) -> Result<Self, StoreError> {
        let db = open_db(path)?;
        // The marker is checked before any other tree is opened (opening
        // creates): a database of the other kind is left as it was.
        let meta_name = names
            .get(META)
            .ok_or_else(|| StoreError::msg("sled store: no meta tree"))?;
        let meta = db.open_tree(meta_name).map_err(sled_err)?;
        match meta.get(FORMAT_KEY).map_err(sled_err)? {
            Some(found) if found.as_ref() == format.as_bytes() => {}
            Some(found) => {
                return Err(StoreError::msg(format!(
                    "{}: holds {:?}, not {format:?}",
                    path.display(),
                    String::from_utf8_lossy(&found)
                )))
            }
            None => {
                meta.insert(FORMAT_KEY, format.as_bytes())
                    .map_err(sled_err)?;
            }
        }
        let trees = names
            .iter()
            .map(|n| db.open_tree(n))
            .collect::<Result<Vec<_>, _>>()
            .map_err(sled_err)?;
        let log = File::open(path.join(LOG_FILE)).map_err(io_err)?;
        let base = Self {
            path: path.to_path_buf(),
            db,
            trees,
            writer: Mutex::new(()),
            log,
            synced_blobs: Mutex::new(HashSet::new()),
            committed: AtomicU64::new(0),
            synced: Mutex::new(0),
        };
        // The new trees and the marker are on disk before anything is
        // written into them, and so are the directory entries of a new
        // database.
        base.sync()?;
        sync_path(path)?;
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_path(parent)?;
        }
        Ok(base)
    }

    /// Makes everything written so far durable.
    ///
    /// `sled::Db::flush` writes sled's buffers to its log file, but on
    /// Linux sled 0.34 then calls `sync_file_range`, which neither flushes
    /// the disk's write cache nor commits the file's metadata (its size as
    /// the log grows), and it never syncs blob files (items over about
    /// 128 KiB, e.g. a large message, are written to `blobs/` without an
    /// fsync). That survives a crash of the process, not of the machine.
    /// So after the flush: fsync any new blob file and the `blobs`
    /// directory, then `fdatasync` the log file, the same guarantee SQLite
    /// gives with `synchronous=FULL`.
    pub(crate) fn sync(&self) -> Result<(), StoreError> {
        self.db.flush().map_err(sled_err)?;
        self.sync_blobs()?;
        self.log.sync_data().map_err(io_err)
    }

    fn sync_blobs(&self) -> Result<(), StoreError> {
        let dir = self.path.join("blobs");
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_err(e)),
        };
        let mut synced = self.synced_blobs.lock().unwrap_or_else(|e| e.into_inner());
        let mut present = HashSet::new();
        let mut new = false;
        for entry in entries {
            let name = entry.map_err(io_err)?.file_name();
            if !synced.contains(&name) {
                sync_path(&dir.join(&name))?;
                new = true;
            }
            present.insert(name);
        }
        if new {
            sync_path(&dir)?;
        }
        // Blobs sled collected are forgotten: the set stays small.
        *synced = present;
        Ok(())
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// A tree, for reads of committed state.
    pub(crate) fn tree(&self, t: usize) -> Result<&Tree, StoreError> {
        self.trees
            .get(t)
            .ok_or_else(|| StoreError::msg("sled store: no such tree"))
    }

    /// The writer lock. It guards no data (the data is in sled, and a step
    /// that panicked committed nothing), so a poisoned lock is taken over.
    pub(crate) fn writer(&self) -> MutexGuard<'_, ()> {
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs one write step: under the writer lock, `f` reads committed
    /// state and stages writes in an [`Overlay`]; the writes are applied in
    /// one sled transaction (all trees or none, also across a crash); then,
    /// with the lock released so other writers go on, the log is flushed
    /// and fsynced ([`Base::sync`], shared between concurrent writers).
    /// When this returns `Ok` the step is on disk. When `f` fails nothing
    /// is written.
    pub(crate) fn write<T>(
        &self,
        f: impl FnOnce(&mut Overlay<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let guard = self.writer();
        let mut overlay = Overlay::new(&self.trees);
        let out = f(&mut overlay)?;
        let step = match overlay.commit()? {
            true => Some(self.committed.fetch_add(1, Ordering::SeqCst) + 1),
            false => None,
        };
        drop(guard);
        if let Some(step) = step {
            self.sync_through(step)?;
        }
        Ok(out)
    }

    /// Returns once write step `step` is on disk. One thread syncs at a
    /// time, and each sync covers every step committed before it began:
    /// writers that queued up during one fsync share the next.
    fn sync_through(&self, step: u64) -> Result<(), StoreError> {
        // Holds a number only (a failed sync leaves it as it was).
        let mut synced = self.synced.lock().unwrap_or_else(|e| e.into_inner());
        if *synced >= step {
            return Ok(());
        }
        let target = self.committed.load(Ordering::SeqCst);
        self.sync()?;
        *synced = target;
        Ok(())
    }
}

/// How long an open waits for sled's directory lock.
///
/// Dropping a sled database does not release its lock at once: sled's
/// background threads finish their last writes holding the file for a few
/// milliseconds more. So a store dropped and reopened in one process (a
/// restart in a test, a CLI re-opening its identity) waits a little; a
/// database held open by another process is reported after this long.
const LOCK_WAIT: Duration = Duration::from_secs(1);

fn is_lock_error(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io) if io.to_string().contains("could not acquire lock"))
}

fn open_db(path: &Path) -> Result<sled::Db, StoreError> {
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        match sled::Config::new().path(path).open() {
            Ok(db) => return Ok(db),
            Err(e) if is_lock_error(&e) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) if is_lock_error(&e) => {
                return Err(StoreError::msg(format!(
                    "{}: the database is in use by another process (a sled database can be \
                     opened by one process at a time): {e}",
                    path.display()
                )))
            }
            Err(e) => return Err(sled_err(e)),
        }
    }
}

/// Writes staged against a database's trees, visible to the reads of the
/// same step, then committed at once.
pub(crate) struct Overlay<'a> {
    trees: &'a [Tree],
    /// Per tree: key -> new value, or `None` for a removal.
    pending: Vec<BTreeMap<Vec<u8>, Option<IVec>>>,
}

impl<'a> Overlay<'a> {
    fn new(trees: &'a [Tree]) -> Self {
        Overlay {
            trees,
            pending: vec![BTreeMap::new(); trees.len()],
        }
    }

    fn tree(&self, t: usize) -> Result<&'a Tree, StoreError> {
        self.trees
            .get(t)
            .ok_or_else(|| StoreError::msg("sled store: no such tree"))
    }

    fn pending(&self, t: usize) -> Result<&BTreeMap<Vec<u8>, Option<IVec>>, StoreError> {
        self.pending
            .get(t)
            .ok_or_else(|| StoreError::msg("sled store: no such tree"))
    }

    fn pending_mut(
        &mut self,
        t: usize,
    ) -> Result<&mut BTreeMap<Vec<u8>, Option<IVec>>, StoreError> {
        self.pending
            .get_mut(t)
            .ok_or_else(|| StoreError::msg("sled store: no such tree"))
    }

    pub(crate) fn get(&self, t: usize, key: &[u8]) -> Result<Option<IVec>, StoreError> {
        match self.pending(t)?.get(key) {
            Some(staged) => Ok(staged.clone()),
            None => self.tree(t)?.get(key).map_err(sled_err),
        }
    }

    pub(crate) fn insert(
        &mut self,
        t: usize,
        key: impl Into<Vec<u8>>,
        value: impl Into<IVec>,
    ) -> Result<(), StoreError> {
        self.pending_mut(t)?.insert(key.into(), Some(value.into()));
        Ok(())
    }

    pub(crate) fn remove(&mut self, t: usize, key: impl Into<Vec<u8>>) -> Result<(), StoreError> {
        self.pending_mut(t)?.insert(key.into(), None);
        Ok(())
    }

    /// Entries whose key starts with `prefix`, in key order.
    pub(crate) fn scan_prefix(
        &self,
        t: usize,
        prefix: &[u8],
    ) -> Result<Vec<(Vec<u8>, IVec)>, StoreError> {
        let committed = self.tree(t)?.scan_prefix(prefix);
        let staged = self
            .pending(t)?
            .range(prefix.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix));
        self.merge(committed, staged)
    }

    /// Entries whose key sorts before `end`, in key order.
    pub(crate) fn range_below(
        &self,
        t: usize,
        end: &[u8],
    ) -> Result<Vec<(Vec<u8>, IVec)>, StoreError> {
        let committed = self.tree(t)?.range(..end);
        let staged = self.pending(t)?.range(..end.to_vec());
        self.merge(committed, staged)
    }

    /// The first entry whose key starts with `prefix`, reading committed
    /// entries only as far as needed.
    pub(crate) fn first_with_prefix(
        &self,
        t: usize,
        prefix: &[u8],
    ) -> Result<Option<(Vec<u8>, IVec)>, StoreError> {
        let pending = self.pending(t)?;
        let mut first_committed = None;
        for row in self.tree(t)?.scan_prefix(prefix) {
            let (k, v) = row.map_err(sled_err)?;
            if !pending.contains_key(k.as_ref()) {
                first_committed = Some((k.to_vec(), v));
                break;
            }
        }
        let first_staged = pending
            .range(prefix.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .find_map(|(k, v)| v.as_ref().map(|v| (k.clone(), v.clone())));
        Ok(match (first_committed, first_staged) {
            (Some(c), Some(s)) => Some(if s.0 < c.0 { s } else { c }),
            (c, s) => c.or(s),
        })
    }

    fn merge<'p>(
        &self,
        committed: sled::Iter,
        staged: impl Iterator<Item = (&'p Vec<u8>, &'p Option<IVec>)>,
    ) -> Result<Vec<(Vec<u8>, IVec)>, StoreError> {
        let mut staged = staged.peekable();
        if staged.peek().is_none() {
            return committed
                .map(|row| row.map(|(k, v)| (k.to_vec(), v)).map_err(sled_err))
                .collect();
        }
        let mut all = BTreeMap::new();
        for row in committed {
            let (k, v) = row.map_err(sled_err)?;
            all.insert(k.to_vec(), v);
        }
        for (k, v) in staged {
            match v {
                Some(v) => all.insert(k.clone(), v.clone()),
                None => all.remove(k),
            };
        }
        Ok(all.into_iter().collect())
    }

    /// Adds `n` to the counter `name` in [`META`] and returns the first of
    /// the `n` new values (counters start at 1 and never go back).
    pub(crate) fn bump(&mut self, name: &[u8], n: u64) -> Result<u64, StoreError> {
        let last = match self.get(META, name)? {
            Some(v) => be_u64(&v, "counter")?,
            None => 0,
        };
        let new_last = last
            .checked_add(n)
            .ok_or_else(|| StoreError::msg("sled store: counter overflow"))?;
        self.insert(META, name, new_last.to_be_bytes().to_vec())?;
        Ok(last + 1)
    }

    /// Applies every staged write, in one transaction when more than one
    /// tree is touched. Returns whether anything was written.
    fn commit(self) -> Result<bool, StoreError> {
        let mut trees = Vec::new();
        let mut batches = Vec::new();
        for (tree, writes) in self.trees.iter().zip(self.pending) {
            if writes.is_empty() {
                continue;
            }
            let mut batch = Batch::default();
            for (k, v) in writes {
                match v {
                    Some(v) => batch.insert(k, v),
                    None => batch.remove(k),
                }
            }
            trees.push(tree);
            batches.push(batch);
        }
        if trees.is_empty() {
            return Ok(false);
        }
        if trees.len() == 1 {
            if let (Some(tree), Some(batch)) = (trees.pop(), batches.pop()) {
                // A batch on one tree is atomic by itself.
                tree.apply_batch(batch).map_err(sled_err)?;
                return Ok(true);
            }
        }
        trees
            .as_slice()
            .transaction(|views| {
                for (view, batch) in views.iter().zip(&batches) {
                    view.apply_batch(batch)?;
                }
                Ok::<(), ConflictableTransactionError<()>>(())
            })
            .map_err(|e| match e {
                TransactionError::Storage(e) => sled_err(e),
                TransactionError::Abort(()) => StoreError::msg("sled store: transaction aborted"),
            })?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(dir: &tempfile::TempDir) -> Base {
        Base::open(&dir.path().join("t.sled"), "test", &["meta", "t"]).unwrap()
    }

    fn keys(rows: &[(Vec<u8>, IVec)]) -> Vec<&[u8]> {
        rows.iter().map(|(k, _)| k.as_slice()).collect()
    }

    /// Reads inside a step see its own staged writes merged into the
    /// committed state, in key order.
    #[test]
    fn overlay_reads_its_own_writes() {
        let dir = tempfile::tempdir().unwrap();
        let b = base(&dir);
        b.write(|o| {
            for k in [&b"a1"[..], b"a3", b"b1"] {
                o.insert(1, k, &b"c"[..])?;
            }
            Ok(())
        })
        .unwrap();
        b.write(|o| {
            o.insert(1, &b"a2"[..], &b"s"[..])?;
            o.remove(1, &b"a1"[..])?;
            o.insert(1, &b"a0"[..], &b"s"[..])?;
            o.remove(1, &b"a0"[..])?;
            assert_eq!(keys(&o.scan_prefix(1, b"a")?), [&b"a2"[..], b"a3"]);
            assert_eq!(keys(&o.range_below(1, b"a3")?), [&b"a2"[..]]);
            let first = o.first_with_prefix(1, b"a")?.unwrap();
            assert_eq!(
                (first.0.as_slice(), first.1.as_ref()),
                (&b"a2"[..], &b"s"[..])
            );
            assert_eq!(o.get(1, b"a1")?, None);
            assert_eq!(o.get(1, b"a3")?.as_deref(), Some(&b"c"[..]));
            o.remove(1, &b"a2"[..])?;
            o.remove(1, &b"a3"[..])?;
            assert_eq!(o.first_with_prefix(1, b"a")?, None);
            assert_eq!(o.bump(b"n", 3)?, 1);
            assert_eq!(o.bump(b"n", 1)?, 4);
            Ok(())
        })
        .unwrap();
        let t = b.tree(1).unwrap();
        let left: Vec<_> = t.iter().keys().map(|k| k.unwrap().to_vec()).collect();
        assert_eq!(left, [b"b1".to_vec()]);
        b.write(|o| {
            assert_eq!(o.bump(b"n", 1)?, 5, "counters persist");
            Ok(())
        })
        .unwrap();
    }

    /// A step that fails writes nothing, not even what it staged.
    #[test]
    fn failed_step_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let b = base(&dir);
        let out: Result<(), StoreError> = b.write(|o| {
            o.insert(1, &b"k"[..], &b"v"[..])?;
            o.bump(b"n", 1)?;
            Err(StoreError::msg("no"))
        });
        assert!(out.is_err());
        assert!(b.tree(1).unwrap().is_empty());
        assert_eq!(b.tree(META).unwrap().get(b"n").unwrap(), None);
    }
}
