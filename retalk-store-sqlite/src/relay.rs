//! The relay's state on SQLite, in the Python relay's own tables.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use retalk_proto::ids::UserId;
use retalk_proto::relay::{
    ApiKeyRecord, ClaimOutcome, DeliveryRules, NewMessage, PublishOutcome, ReadLimit, RefusalRules,
    RelayStore, SendOutcome, StoreError, StoredMessage,
};
use retalk_proto::wire::{ClaimedKey, KeyCounts, PublicKeys};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use crate::conn::{self, db_err, finite};
use crate::writer::Writer;

/// The Python relay's tables, verbatim from `retalk==0.3.0`'s `server.py`
/// (0.0.1 has the first four), then the indexes of the hot paths. Indexes
/// are invisible to the Python relay, so the file stays a drop-in for it.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS users(
    id TEXT PRIMARY KEY,
    identity_key TEXT,
    signing_key TEXT,
    fallback_key_id TEXT,
    fallback_key TEXT
);
CREATE TABLE IF NOT EXISTS otks(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    owner TEXT,
    key_id TEXT,
    key TEXT,
    claimed INT DEFAULT 0
);
CREATE TABLE IF NOT EXISTS messages(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL,
    sender TEXT,
    recipient TEXT,
    mtype INT,
    body TEXT
);
CREATE TABLE IF NOT EXISTS nonces(
    nonce TEXT PRIMARY KEY,
    ts REAL
);
CREATE TABLE IF NOT EXISTS api_keys(
    key_hash TEXT PRIMARY KEY,
    label TEXT,
    created REAL,
    disabled INT DEFAULT 0
);
CREATE TABLE IF NOT EXISTS refused(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    recipient TEXT,
    hash TEXT,
    sig TEXT,
    ts REAL,
    UNIQUE(recipient, hash)
);
CREATE INDEX IF NOT EXISTS otks_owner_claimed ON otks(owner, claimed, id);
CREATE INDEX IF NOT EXISTS otks_owner_key_id ON otks(owner, key_id);
CREATE INDEX IF NOT EXISTS messages_recipient ON messages(recipient, id);
CREATE INDEX IF NOT EXISTS messages_recipient_sender ON messages(recipient, sender, id);
CREATE INDEX IF NOT EXISTS nonces_ts ON nonces(ts);
CREATE INDEX IF NOT EXISTS refused_recipient ON refused(recipient, id);
CREATE INDEX IF NOT EXISTS refused_ts ON refused(ts);
";

/// Idle read connections kept for reuse. Reads beyond this many at once
/// open a connection of their own (about 50 µs) and close it afterwards.
pub const DEFAULT_POOL_SIZE: usize = 8;

/// A [`RelayStore`] on one SQLite file, laid out exactly as the Python
/// relay's `server.db`: an operator can stop a Python relay and start one
/// on this store over the same file, and inspect or edit it with `sqlite3`
/// while the relay runs (nothing is cached across requests).
///
/// Safe to share between threads. Reads borrow a connection from a small
/// pool (WAL readers never wait for the writer). Every write is handed to
/// one writer thread that commits concurrent writes together, one fsync
/// per group (see `writer.rs`); each write runs alone, atomically, and
/// returns only once it is durable — except a nonce, which is written
/// behind, in order (see `use_nonce`). Other processes writing the same
/// file queue on SQLite's write lock (with a busy timeout).
pub struct SqliteRelayStore {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    pool_size: usize,
    nonces: Arc<Mutex<NonceLog>>,
    writer: Writer,
}

/// Nonces accepted but not yet known to be in the file (see `use_nonce`).
/// Small: it holds what the writer has not committed yet.
#[derive(Default)]
struct NonceLog {
    pending: HashMap<String, f64>,
    /// The `forget_before` of the last pruning of expired nonces.
    pruned_to: Option<f64>,
}

impl NonceLog {
    /// Once a second at most: forgets expired pending nonces and returns
    /// the bound below which the table's rows go too.
    fn prune(&mut self, forget_before: f64) -> Option<f64> {
        if self.pruned_to.is_some_and(|t| forget_before - t < 1.0) {
            return None;
        }
        self.pruned_to = Some(forget_before);
        self.pending.retain(|_, ts| *ts >= forget_before);
        Some(forget_before)
    }
}

impl std::fmt::Debug for SqliteRelayStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteRelayStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn user_text(row: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<Option<String>> {
    // Operators may have hand-edited rows; read NULL and '' alike as unset.
    Ok(row.get::<_, Option<String>>(i)?.filter(|s| !s.is_empty()))
}

/// The oldest queued messages for `me` (from `from` only, if given), at
/// least one when any is queued, then within `limit`.
fn take_messages(
    conn: &Connection,
    me: &str,
    from: Option<&str>,
    limit: ReadLimit,
) -> rusqlite::Result<Vec<StoredMessage>> {
    let max = i64::try_from(limit.max_messages.max(1)).unwrap_or(i64::MAX);
    let mut stmt;
    let mut rows = match from {
        Some(sender) => {
            stmt = conn.prepare_cached(
                "SELECT id, ts, sender, mtype, body FROM messages \
                 WHERE recipient = ?1 AND sender = ?2 ORDER BY id LIMIT ?3",
            )?;
            stmt.query(params![me, sender, max])?
        }
        None => {
            stmt = conn.prepare_cached(
                "SELECT id, ts, sender, mtype, body FROM messages \
                 WHERE recipient = ?1 ORDER BY id LIMIT ?2",
            )?;
            stmt.query(params![me, max])?
        }
    };
    let mut out: Vec<StoredMessage> = Vec::new();
    let mut bytes = 0usize;
    while let Some(r) = rows.next()? {
        let m = StoredMessage {
            message_id: r.get(0)?,
            ts: r.get::<_, Option<f64>>(1)?.unwrap_or_default(),
            sender: r.get::<_, Option<String>>(2)?.unwrap_or_default(),
            mtype: r.get::<_, Option<i64>>(3)?.unwrap_or_default(),
            body: r.get::<_, Option<String>>(4)?.unwrap_or_default(),
        };
        // The query already stops at the count bound.
        if !limit.admits(out.len(), bytes, m.body.len()) {
            break;
        }
        bytes += m.body.len();
        out.push(m);
    }
    Ok(out)
}

impl SqliteRelayStore {
    /// Opens (creating if missing) a relay database, including one written
    /// by the Python relay (0.0.1 or 0.3.0): its tables are created if
    /// missing, indexes are added, and the file is switched to WAL.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with_pool(path, DEFAULT_POOL_SIZE)
    }

    /// [`open`](Self::open) with a chosen number of idle connections.
    pub fn open_with_pool(path: impl AsRef<Path>, pool_size: usize) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        let mut conn = conn::open(&path)?;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db_err)?;
        tx.execute_batch(SCHEMA).map_err(db_err)?;
        tx.commit().map_err(db_err)?;
        Ok(Self {
            idle: Mutex::new(Vec::with_capacity(pool_size)),
            pool_size: pool_size.max(1),
            nonces: Arc::default(),
            writer: Writer::start(conn)?,
            path,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn idle_list(&self) -> Result<MutexGuard<'_, Vec<Connection>>, StoreError> {
        self.idle
            .lock()
            .map_err(|_| StoreError::msg("sqlite relay store: connection pool poisoned"))
    }

    /// Runs `f` on a connection borrowed from the pool, returned after.
    fn with_conn<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let reused = self.idle_list()?.pop();
        let mut conn = match reused {
            Some(c) => c,
            None => conn::open_reader(&self.path)?,
        };
        let out = f(&mut conn);
        // A connection left inside a transaction (never, barring a bug) is
        // closed, which rolls it back, rather than handed to the next caller.
        if conn.is_autocommit() {
            if let Ok(mut idle) = self.idle.lock() {
                if idle.len() < self.pool_size {
                    idle.push(conn);
                }
            }
        }
        out
    }

    /// Runs `f` on the writer thread, alone and atomically (inside the
    /// write lock from its first read, so read-then-write steps never
    /// race), and returns once its writes are durable. `f` keeps its writes
    /// by returning `Ok((value, true))`; `false` or an error rolls them back.
    fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<(T, bool)> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.writer.write(f)
    }

    fn nonce_log(&self) -> Result<MutexGuard<'_, NonceLog>, StoreError> {
        self.nonces
            .lock()
            .map_err(|_| StoreError::msg("sqlite relay store: nonce log poisoned"))
    }

    /// Runs `f` on one connection outside any explicit transaction (a
    /// single statement is its own consistent snapshot).
    fn read<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, StoreError> {
        self.with_conn(|conn| f(conn).map_err(db_err))
    }
}

impl RelayStore for SqliteRelayStore {
    /// Decided here, written behind: the nonce is checked against the ones
    /// still on their way to the file and against the table, then queued
    /// for the writer without waiting for its commit. That saves every
    /// request a round trip through the writer thread (read-only tools are
    /// answered without any fsync), and it is safe because the writer
    /// commits in queue order: the write of the request that used this
    /// nonce (a message, a claim, a read) is queued after it, so it is
    /// never durable without it. A crash can lose only nonces of requests
    /// that changed nothing (a replay of those is harmless) or whose
    /// changes were lost with them (then the replay is their only run).
    /// One relay process per file: another process sees a nonce only once
    /// it is committed, a few milliseconds later.
    fn use_nonce(&self, nonce: &str, now: f64, forget_before: f64) -> Result<bool, StoreError> {
        // Claimed in the log first, so a concurrent copy is refused there;
        // the table is read without holding the log, which the writer
        // thread takes to settle every commit.
        let prune = {
            let mut log = self.nonce_log()?;
            if log
                .pending
                .get(nonce)
                .is_some_and(|ts| *ts >= forget_before)
            {
                return Ok(false);
            }
            log.pending.insert(nonce.to_owned(), now);
            log.prune(forget_before)
        };
        let seen = self.read(|c| {
            c.prepare_cached("SELECT 1 FROM nonces WHERE nonce = ?1 AND ts >= ?2")?
                .query_row(params![nonce, finite(forget_before)], |_| Ok(()))
                .optional()
        });
        if !matches!(seen, Ok(None)) {
            self.nonce_log()?.pending.remove(nonce);
            return seen.map(|_| false);
        }

        let (key, nonces) = (nonce.to_owned(), self.nonces.clone());
        let queued = self.writer.then(
            {
                let key = key.clone();
                move |tx| {
                    if let Some(before) = prune {
                        tx.prepare_cached("DELETE FROM nonces WHERE ts < ?1")?
                            .execute([finite(before)])?;
                    }
                    tx.prepare_cached(
                        "INSERT INTO nonces(nonce, ts) VALUES(?1, ?2) \
                         ON CONFLICT(nonce) DO UPDATE SET ts = excluded.ts",
                    )?
                    .execute(params![key, finite(now)])?;
                    Ok(((), true))
                }
            },
            move |outcome| {
                // Committed: the table answers for it from now on. Not
                // committed: it stays here, refusing replays for as long as
                // this process lives, until it expires.
                if outcome.is_ok() {
                    if let Ok(mut log) = nonces.lock() {
                        if log.pending.get(&key) == Some(&now) {
                            log.pending.remove(&key);
                        }
                    }
                }
            },
        );
        queued.map(|()| true)
    }

    fn publish_keys(
        &self,
        user: &UserId,
        keys: &PublicKeys,
        one_time_keys: &[(String, String)],
        fallback_key: Option<&(String, String)>,
        max_unclaimed: u64,
    ) -> Result<PublishOutcome, StoreError> {
        let (user, keys, fallback_key) = (user.clone(), keys.clone(), fallback_key.cloned());
        let one_time_keys = one_time_keys.to_vec();
        self.write(move |tx| {
            let owner = user.as_str();
            let unclaimed: u64 = tx
                .prepare_cached("SELECT COUNT(*) FROM otks WHERE owner = ?1 AND claimed = 0")?
                .query_row([owner], |r| r.get(0))?;
            // The rule of `RelayStore::publish_keys`: an id with a claimed
            // row (claimed by us or by a Python relay) is skipped, an id held
            // unclaimed takes the new material, any other is added once.
            let mut fresh: Vec<&(String, String)> = Vec::new();
            let mut fresh_at: HashMap<&str, usize> = HashMap::new();
            let mut renewed: Vec<&(String, String)> = Vec::new();
            {
                let mut state = tx.prepare_cached(
                    "SELECT MAX(claimed <> 0) FROM otks WHERE owner = ?1 AND key_id = ?2",
                )?;
                for k in &one_time_keys {
                    let id = k.0.as_str();
                    let any_claimed: Option<bool> =
                        state.query_row(params![owner, id], |r| r.get(0))?;
                    match any_claimed {
                        Some(true) => {}
                        Some(false) => renewed.push(k),
                        None => match fresh_at.get(id) {
                            Some(&at) => fresh[at] = k,
                            None => {
                                fresh_at.insert(id, fresh.len());
                                fresh.push(k);
                            }
                        },
                    }
                }
            }
            if unclaimed + fresh.len() as u64 > max_unclaimed {
                return Ok((PublishOutcome::TooManyKeys { unclaimed }, false));
            }
            tx.prepare_cached(
                "INSERT INTO users(id, identity_key, signing_key) VALUES(?1, ?2, ?3) \
                 ON CONFLICT(id) DO UPDATE SET identity_key = excluded.identity_key, \
                 signing_key = excluded.signing_key",
            )?
            .execute(params![owner, keys.identity_key, keys.signing_key])?;
            if let Some((key_id, key)) = &fallback_key {
                tx.prepare_cached(
                    "UPDATE users SET fallback_key_id = ?1, fallback_key = ?2 WHERE id = ?3",
                )?
                .execute(params![key_id, key, owner])?;
            }
            let mut renew = tx.prepare_cached(
                "UPDATE otks SET key = ?3 WHERE owner = ?1 AND key_id = ?2 AND claimed = 0",
            )?;
            for (key_id, key) in renewed {
                renew.execute(params![owner, key_id, key])?;
            }
            let mut insert = tx.prepare_cached(
                "INSERT INTO otks(owner, key_id, key, claimed) VALUES(?1, ?2, ?3, 0)",
            )?;
            for (key_id, key) in &fresh {
                insert.execute(params![owner, key_id, key])?;
            }
            let added = fresh.len() as u64;
            Ok((PublishOutcome::Published { added }, true))
        })
    }

    fn count_keys(&self, user: &UserId) -> Result<KeyCounts, StoreError> {
        // One statement: one consistent snapshot.
        let (unclaimed, fallback): (u64, Option<String>) = self.read(|conn| {
            conn.prepare_cached(
                "SELECT (SELECT COUNT(*) FROM otks WHERE owner = ?1 AND claimed = 0), \
                        (SELECT fallback_key FROM users WHERE id = ?1)",
            )?
            .query_row([user.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))
        })?;
        Ok(KeyCounts {
            unclaimed,
            has_fallback: fallback.is_some_and(|f| !f.is_empty()),
        })
    }

    fn get_keys(&self, user: &UserId) -> Result<Option<PublicKeys>, StoreError> {
        let row = self.read(|conn| {
            conn.prepare_cached("SELECT identity_key, signing_key FROM users WHERE id = ?1")?
                .query_row([user.as_str()], |r| {
                    Ok((user_text(r, 0)?, user_text(r, 1)?))
                })
                .optional()
        })?;
        Ok(match row {
            Some((Some(identity_key), Some(signing_key))) => Some(PublicKeys {
                identity_key,
                signing_key,
            }),
            _ => None,
        })
    }

    fn claim_key(&self, user: &UserId) -> Result<ClaimOutcome, StoreError> {
        let user = user.clone();
        self.write(move |tx| {
            let id = user.as_str();
            let row = tx
                .prepare_cached(
                    "SELECT identity_key, signing_key, fallback_key_id, fallback_key \
                     FROM users WHERE id = ?1",
                )?
                .query_row([id], |r| {
                    Ok((
                        user_text(r, 0)?,
                        user_text(r, 1)?,
                        r.get::<_, Option<String>>(2)?,
                        user_text(r, 3)?,
                    ))
                })
                .optional()?;
            let Some((Some(identity_key), Some(signing_key), fallback_id, fallback)) = row else {
                return Ok((ClaimOutcome::UnknownPeer, false));
            };
            // The oldest unclaimed key is marked claimed, with every row of
            // its id, under the write lock: it cannot be handed out twice,
            // and its row stays (as the Python relay keeps it) as the memory
            // that publish_keys must never offer this id again. A row whose
            // id was claimed before (a retry stored by a Python relay) is
            // retired on the way, never handed out.
            let mut oldest = tx.prepare_cached(
                "SELECT key_id, key FROM otks WHERE owner = ?1 AND claimed = 0 \
                 ORDER BY id LIMIT 1",
            )?;
            let mut was_claimed = tx.prepare_cached(
                "SELECT 1 FROM otks WHERE owner = ?1 AND key_id IS ?2 AND claimed <> 0",
            )?;
            let mut mark = tx.prepare_cached(
                "UPDATE otks SET claimed = 1 WHERE owner = ?1 AND key_id IS ?2 AND claimed = 0",
            )?;
            let (mut otk, mut retired) = (None, false);
            while let Some((key_id, key)) = oldest
                .query_row([id], |r| {
                    Ok((
                        r.get::<_, Option<String>>(0)?,
                        r.get::<_, Option<String>>(1)?,
                    ))
                })
                .optional()?
            {
                let stale = was_claimed.exists(params![id, key_id])?;
                mark.execute(params![id, key_id])?;
                if !stale {
                    otk = Some((key_id.unwrap_or_default(), key.unwrap_or_default()));
                    break;
                }
                retired = true;
            }
            if let Some((key_id, one_time_key)) = otk {
                let claimed = ClaimedKey {
                    identity_key,
                    signing_key,
                    key_id,
                    one_time_key,
                    fallback: false,
                };
                return Ok((ClaimOutcome::Claimed(claimed), true));
            }
            Ok((
                match fallback {
                    Some(one_time_key) => ClaimOutcome::Claimed(ClaimedKey {
                        identity_key,
                        signing_key,
                        key_id: fallback_id.unwrap_or_default(),
                        one_time_key,
                        fallback: true,
                    }),
                    None => ClaimOutcome::Exhausted,
                },
                retired,
            ))
        })
    }

    fn send_message(
        &self,
        m: &NewMessage,
        rules: &DeliveryRules,
    ) -> Result<SendOutcome, StoreError> {
        let (m, rules) = (m.clone(), *rules);
        self.write(move |tx| {
            let to = m.recipient.as_str();
            let sender = m.sender.as_str();
            let known = tx
                .prepare_cached("SELECT 1 FROM users WHERE id = ?1")?
                .exists([to])?;
            if !known {
                return Ok((SendOutcome::UnknownRecipient, false));
            }
            let refused: Option<Option<String>> = tx
                .prepare_cached(
                    "SELECT sig FROM refused WHERE recipient = ?1 AND hash = ?2 AND ts > ?3",
                )?
                .query_row(
                    params![to, m.body_hash, finite(rules.refusals_expire_before)],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(sig) = refused {
                let sig = sig.unwrap_or_default();
                return Ok((SendOutcome::Refused { sig }, false));
            }
            if rules.max_mailbox > 0 {
                let total: u64 = tx
                    .prepare_cached("SELECT COUNT(*) FROM messages WHERE recipient = ?1")?
                    .query_row([to], |r| r.get(0))?;
                // Counted only where the sender cap can refuse (the mailbox cap has not).
                let from_sender: u64 = if rules.max_per_sender > 0 && total < rules.max_mailbox {
                    tx.prepare_cached(
                        "SELECT COUNT(*) FROM messages WHERE recipient = ?1 AND sender = ?2",
                    )?
                    .query_row([to, sender], |r| r.get(0))?
                } else {
                    0
                };
                if let Some(refusal) = rules.over_cap(total, from_sender) {
                    return Ok((refusal, false));
                }
            }
            tx.prepare_cached(
                "INSERT INTO messages(ts, sender, recipient, mtype, body) \
                 VALUES(?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![finite(m.ts), sender, to, m.mtype, m.body])?;
            let message_id = tx.last_insert_rowid();
            Ok((SendOutcome::Stored { message_id }, true))
        })
    }

    fn read_messages(
        &self,
        user: &UserId,
        from: Option<&str>,
        peek: bool,
        limit: ReadLimit,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        if peek {
            return self.with_conn(|conn| {
                let tx = conn.transaction().map_err(db_err)?;
                let out = take_messages(&tx, user.as_str(), from, limit).map_err(db_err)?;
                tx.rollback().map_err(db_err)?;
                Ok(out)
            });
        }
        let (user, from) = (user.clone(), from.map(str::to_owned));
        self.write(move |tx| {
            let (me, from) = (user.as_str(), from.as_deref());
            let out = take_messages(tx, me, from, limit)?;
            let Some(last) = out.last().map(|m| m.message_id) else {
                return Ok((out, false));
            };
            // What was handed over is exactly the matching rows up to `last`.
            match from {
                Some(sender) => tx
                    .prepare_cached(
                        "DELETE FROM messages WHERE recipient = ?1 AND sender = ?2 AND id <= ?3",
                    )?
                    .execute(params![me, sender, last])?,
                None => tx
                    .prepare_cached("DELETE FROM messages WHERE recipient = ?1 AND id <= ?2")?
                    .execute(params![me, last])?,
            };
            Ok((out, true))
        })
    }

    fn nack(
        &self,
        recipient: &UserId,
        hash: &str,
        sig: &str,
        now: f64,
        rules: &RefusalRules,
    ) -> Result<(), StoreError> {
        let (recipient, rules) = (recipient.clone(), *rules);
        let (hash, sig) = (hash.to_owned(), sig.to_owned());
        self.write(move |tx| {
            let me = recipient.as_str();
            if let Some(before) = rules.expire_before {
                tx.prepare_cached("DELETE FROM refused WHERE ts < ?1")?
                    .execute([finite(before)])?;
            }
            // Re-nacking refreshes the time and signature, keeping its age
            // rank (its id) for eviction, as the Python relay does.
            tx.prepare_cached(
                "INSERT INTO refused(recipient, hash, sig, ts) VALUES(?1, ?2, ?3, ?4) \
                 ON CONFLICT(recipient, hash) DO UPDATE SET sig = excluded.sig, ts = excluded.ts",
            )?
            .execute(params![me, hash, sig, finite(now)])?;
            if rules.max_per_recipient > 0 {
                let n: u64 = tx
                    .prepare_cached("SELECT COUNT(*) FROM refused WHERE recipient = ?1")?
                    .query_row([me], |r| r.get(0))?;
                if n > rules.max_per_recipient {
                    let evict = i64::try_from(n - rules.max_per_recipient).unwrap_or(i64::MAX);
                    tx.prepare_cached(
                        "DELETE FROM refused WHERE id IN (SELECT id FROM refused \
                         WHERE recipient = ?1 ORDER BY id LIMIT ?2)",
                    )?
                    .execute(params![me, evict])?;
                }
            }
            Ok(((), true))
        })
    }

    fn api_key_valid(&self, key_hash: &str) -> Result<bool, StoreError> {
        self.read(|conn| {
            conn.prepare_cached("SELECT 1 FROM api_keys WHERE key_hash = ?1 AND disabled = 0")?
                .exists([key_hash])
        })
    }

    fn api_key_create(&self, key_hash: &str, label: &str, now: f64) -> Result<(), StoreError> {
        let (key_hash, label) = (key_hash.to_owned(), label.to_owned());
        self.write(move |tx| {
            tx.prepare_cached(
                "INSERT INTO api_keys(key_hash, label, created, disabled) VALUES(?1, ?2, ?3, 0) \
                 ON CONFLICT(key_hash) DO UPDATE SET label = excluded.label, \
                 created = excluded.created, disabled = 0",
            )?
            .execute(params![key_hash, label, finite(now)])?;
            Ok(((), true))
        })
    }

    fn api_key_list(&self) -> Result<Vec<ApiKeyRecord>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT key_hash, label, created, disabled FROM api_keys \
                 ORDER BY created, key_hash",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok(ApiKeyRecord {
                    key_hash: r.get(0)?,
                    label: r.get::<_, Option<String>>(1)?.unwrap_or_default(),
                    created: r.get::<_, Option<f64>>(2)?.unwrap_or_default(),
                    disabled: r.get::<_, Option<i64>>(3)?.unwrap_or_default() != 0,
                })
            })?;
            rows.collect()
        })
    }

    fn api_key_set_disabled(&self, key_hash: &str, disabled: bool) -> Result<u64, StoreError> {
        let key_hash = key_hash.to_owned();
        self.write(move |tx| {
            let n = tx
                .prepare_cached("UPDATE api_keys SET disabled = ?1 WHERE key_hash = ?2")?
                .execute(params![i64::from(disabled), key_hash])?;
            Ok((n as u64, true))
        })
    }

    fn api_key_delete(&self, key_hash: &str) -> Result<u64, StoreError> {
        let key_hash = key_hash.to_owned();
        self.write(move |tx| {
            let n = tx
                .prepare_cached("DELETE FROM api_keys WHERE key_hash = ?1")?
                .execute([key_hash])?;
            Ok((n as u64, true))
        })
    }
}
