//! A client's state on SQLite: one `store.db` per identity folder.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use fs4::fs_std::FileExt;
use retalk_proto::client::{
    Changes, Contact, Direction, GroupTag, IdentityRecord, InboxRecord, IncomingRecord,
    MessageRecord, OutboxEntry, OutboxKind, ProcessedRecord, ReceivedContact, SavedMessage,
    SessionRecord, Store, StoreError,
};
use retalk_proto::client::{Group, InviteRecord, LeftGroup, MessageFilter};
use retalk_proto::group::GroupId;
use retalk_proto::ids::UserId;
use retalk_proto::invite::InviteKind;
use rusqlite::{params, Connection, OptionalExtension, Row, Transaction, TransactionBehavior};

use crate::conn::{self, db_err, finite, io_err};

/// The database file in an identity folder (the name Python retalk uses).
pub const STORE_FILE: &str = "store.db";

/// `PRAGMA user_version` of the schema below. 0 is an empty file or a
/// Python retalk store (which never sets it); 1 lacks `outbox.reencrypt`;
/// 2 lacks `contacts.signing_key`, `messages`, `blocked` (kept in the
/// `blocked` setting) and `received_contacts`; 3 lacks `inbox.extra`,
/// `groups`, `left_groups` and `invite_codes`.
const SCHEMA_VERSION: i64 = 4;

/// The value left under `meta.account`: Python retalk reads its account
/// pickle there, fails to decrypt this, and refuses to open the folder
/// ("could not unlock the identity") instead of silently creating a new
/// identity next to ours.
const PYTHON_TOMBSTONE: &str =
    "retalk-rs: this identity folder was upgraded to the Rust retalk and cannot be opened by Python retalk";

/// The peer recorded for a processed marker migrated from Python retalk
/// 0.0.1 when its sender cannot be known (see the crate docs).
pub const UNKNOWN_PEER: &str = "00000000000000000000000000000000";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS identity(
    id INTEGER PRIMARY KEY CHECK (id = 1),
    account_pickle TEXT NOT NULL,
    fallback_published_at REAL
);
CREATE TABLE IF NOT EXISTS settings(
    k TEXT PRIMARY KEY,
    v TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS sessions(
    peer TEXT NOT NULL,
    session_id TEXT NOT NULL,
    pickle TEXT NOT NULL,
    last_received REAL NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (peer, session_id)
);
CREATE TABLE IF NOT EXISTS outbox(
    seq INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    envelope_id TEXT NOT NULL,
    peer TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('message', 'ack')),
    mtype INTEGER NOT NULL,
    body TEXT NOT NULL,
    created REAL NOT NULL,
    next_attempt REAL NOT NULL,
    attempts INTEGER NOT NULL,
    last_error TEXT,
    envelope TEXT,
    reencrypt INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS processed(
    hash TEXT PRIMARY KEY,
    envelope_id TEXT NOT NULL,
    peer TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS processed_at ON processed(at);
CREATE TABLE IF NOT EXISTS incoming(
    seq INTEGER PRIMARY KEY,
    hash TEXT NOT NULL UNIQUE,
    sender TEXT NOT NULL,
    mtype INTEGER NOT NULL,
    body TEXT NOT NULL,
    fetched_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS inbox(
    seq INTEGER PRIMARY KEY,
    hash TEXT NOT NULL UNIQUE,
    envelope_id TEXT NOT NULL,
    sender TEXT NOT NULL,
    claimed_name TEXT NOT NULL,
    text TEXT NOT NULL,
    received_at REAL NOT NULL,
    extra TEXT
);
CREATE TABLE IF NOT EXISTS contacts(
    name TEXT PRIMARY KEY,
    id TEXT NOT NULL,
    pin TEXT,
    signing_key TEXT
);
CREATE TABLE IF NOT EXISTS meta(
    k TEXT PRIMARY KEY,
    v TEXT
);
";

/// The tables version 3 added (also created by [`SCHEMA`]); the columns of
/// `messages`, `blocked` and `received_contacts` are Python 0.3.0's
/// (`store.py` `ensure_messages`, `cli.py` `_blocked_set`,
/// `_received_contacts`).
const SCHEMA_3: &str = "
CREATE TABLE IF NOT EXISTS messages(
    msg_id TEXT PRIMARY KEY,
    from_fp TEXT NOT NULL,
    from_name TEXT NOT NULL,
    peer_fp TEXT NOT NULL,
    direction TEXT NOT NULL CHECK (direction IN ('in', 'out')),
    body TEXT NOT NULL,
    ts REAL NOT NULL,
    gid TEXT,
    gname TEXT
);
CREATE INDEX IF NOT EXISTS messages_ts ON messages(ts);
CREATE TABLE IF NOT EXISTS blocked(
    fingerprint TEXT PRIMARY KEY
);
CREATE TABLE IF NOT EXISTS received_contacts(
    fingerprint TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    identity_key TEXT NOT NULL,
    signing_key TEXT NOT NULL,
    from_fp TEXT NOT NULL,
    from_name TEXT NOT NULL,
    msg_id TEXT NOT NULL,
    ts REAL NOT NULL
);
";

/// The tables version 4 added (also created with [`SCHEMA`]): Python
/// 0.3.0's `groups` (`store.py` `save_group`) plus our `owner` (NULL for a
/// group imported from Python), `left_groups` and `invite_codes`
/// (`store.py` `ensure_invites`; `used_by` a JSON list).
const SCHEMA_4: &str = "
CREATE TABLE IF NOT EXISTS groups(
    gid TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    members TEXT NOT NULL,
    ts REAL NOT NULL,
    owner TEXT
);
CREATE TABLE IF NOT EXISTS left_groups(
    gid TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    ts REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS invite_codes(
    code TEXT PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('single', 'permanent')),
    peer TEXT,
    created REAL NOT NULL,
    expires REAL,
    uses INTEGER NOT NULL DEFAULT 0,
    used_by TEXT NOT NULL DEFAULT '[]',
    revoked INTEGER NOT NULL DEFAULT 0
);
";

/// The tables of a Python retalk 0.0.1 `store.db` (`peers` comes from its
/// CLI); renamed out of the way, imported, then dropped.
const PYTHON_TABLES: [&str; 11] = [
    "meta",
    "sessions",
    "outbox",
    "processed",
    "peers",
    "messages",
    "blocked",
    "received_contacts",
    "groups",
    "left_groups",
    "invite_codes",
];

/// A client [`Store`] in an identity folder's `store.db`.
///
/// Reads and commits share one connection; every [`commit`](Store::commit)
/// is one `BEGIN IMMEDIATE` transaction, fsynced (`synchronous=FULL`)
/// before it returns. [`lock`](Store::lock) takes an exclusive `flock` on
/// `store.db.lock` — the lock file Python retalk uses — so operations from
/// several threads or OS processes sharing the identity are serialised.
pub struct SqliteStore {
    path: PathBuf,
    conn: Mutex<Connection>,
    lock_file: Mutex<File>,
    /// `store.db.take.lock`: held by a process handing messages to its
    /// application ([`Store::take_lock`]).
    take_file: Mutex<File>,
    /// Whether this open upgraded a Python retalk store (one way).
    upgraded_python: bool,
}

/// A Python retalk store (0.0.1 or 0.3.0 `store.py`) before its one-way
/// upgrade: what a caller needs to check the secret first, read without
/// writing to the file. Shapes are Python's `meta(k, v)` table.
#[derive(Debug, Clone, Default)]
pub struct PythonStore {
    /// `meta.account`: the pickled Olm account, if the folder has one.
    pub account_pickle: Option<String>,
    /// Every other `meta` key and value (e.g. `no_passphrase` = `"1"`);
    /// they become the upgraded store's settings, under the same keys.
    pub settings: std::collections::HashMap<String, String>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// Holds the store's exclusive lock (in-process and on `store.db.lock`)
/// until dropped.
pub struct StoreLock<'a> {
    file: MutexGuard<'a, File>,
}

impl Drop for StoreLock<'_> {
    fn drop(&mut self) {
        // Closing the file would release it too; the file stays open for
        // the next lock, so release it explicitly.
        let _ = FileExt::unlock(&*self.file);
    }
}

/// Holds `store.db.take.lock` (in-process and on the file) until dropped:
/// a type of its own, so it can never stand in for the store's lock.
#[derive(Debug)]
pub struct TakeLock<'a>(#[allow(dead_code)] StoreLock<'a>);

impl std::fmt::Debug for StoreLock<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreLock")
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

fn corrupt(what: &str, value: &str) -> rusqlite::Error {
    rusqlite::Error::InvalidColumnType(0, format!("{what}: {value:?}"), rusqlite::types::Type::Text)
}

fn user_id(value: String) -> rusqlite::Result<UserId> {
    UserId::try_from(value).map_err(|e| corrupt("not a user id in store.db", &e.0))
}

fn kind_text(kind: OutboxKind) -> &'static str {
    match kind {
        OutboxKind::Message => "message",
        OutboxKind::Ack => "ack",
    }
}

fn outbox_row(r: &Row<'_>) -> rusqlite::Result<OutboxEntry> {
    let kind: String = r.get(3)?;
    Ok(OutboxEntry {
        key: r.get(0)?,
        envelope_id: r.get(1)?,
        peer: user_id(r.get(2)?)?,
        kind: match kind.as_str() {
            "message" => OutboxKind::Message,
            "ack" => OutboxKind::Ack,
            other => return Err(corrupt("unknown outbox kind", other)),
        },
        mtype: r.get(4)?,
        body: r.get(5)?,
        created: r.get(6)?,
        next_attempt: r.get(7)?,
        attempts: r.get(8)?,
        last_error: r.get(9)?,
        envelope: r.get(10)?,
        reencrypt: r.get(11)?,
    })
}

const OUTBOX_COLUMNS: &str =
    "key, envelope_id, peer, kind, mtype, body, created, next_attempt, attempts, last_error, envelope, \
     reencrypt";

fn session_row(r: &Row<'_>) -> rusqlite::Result<SessionRecord> {
    Ok(SessionRecord {
        peer: user_id(r.get(0)?)?,
        session_id: r.get(1)?,
        pickle: r.get(2)?,
        last_received: r.get(3)?,
        created: r.get(4)?,
    })
}

impl SqliteStore {
    /// Opens the identity folder `dir` (created, owner-only, if missing),
    /// i.e. its `store.db`, creating the schema, or upgrading a Python
    /// retalk 0.0.1 store in place (one way; see the crate docs).
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_checked(dir, |_| true)
    }

    /// [`open`](Self::open), but a Python retalk store is upgraded only when
    /// `allow` accepts what it holds (e.g. the secret unlocks its account
    /// pickle): the upgrade is one way, so a command that fails to unlock
    /// must not have made the folder unusable for Python. When `allow`
    /// refuses, the file is left byte for byte as it was (it was only read,
    /// with a read-only connection) and the error says so.
    pub fn open_checked(
        dir: impl AsRef<Path>,
        allow: impl FnOnce(&PythonStore) -> bool,
    ) -> Result<Self, StoreError> {
        let dir = dir.as_ref();
        if !dir.exists() {
            let mut builder = std::fs::DirBuilder::new();
            builder.recursive(true);
            #[cfg(unix)]
            std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
            builder.create(dir).map_err(io_err)?;
        }
        Self::open_path_checked(dir.join(STORE_FILE), allow)
    }

    /// Opens a store database by its path; the lock file is the path plus
    /// `.lock`.
    pub fn open_path(db: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_path_checked(db, |_| true)
    }

    /// [`open_path`](Self::open_path) with the check of
    /// [`open_checked`](Self::open_checked).
    pub fn open_path_checked(
        db: impl AsRef<Path>,
        allow: impl FnOnce(&PythonStore) -> bool,
    ) -> Result<Self, StoreError> {
        let path = db.as_ref().to_path_buf();
        let lock_file = open_lock_file(&path, ".lock")?;
        // Create and upgrade under the identity's lock, so no other process
        // (ours or Python retalk's) works on the folder half-way through.
        FileExt::lock_exclusive(&lock_file).map_err(io_err)?;
        let opened = Self::open_locked(&path, allow);
        let _ = FileExt::unlock(&lock_file);
        let (conn, upgraded_python) = opened?;
        let take_file = open_lock_file(&path, ".take.lock")?;
        Ok(Self {
            path,
            conn: Mutex::new(conn),
            lock_file: Mutex::new(lock_file),
            take_file: Mutex::new(take_file),
            upgraded_python,
        })
    }

    /// Opens (creating, upgrading) the database under the folder's lock;
    /// says whether it upgraded a Python store.
    fn open_locked(
        path: &Path,
        allow: impl FnOnce(&PythonStore) -> bool,
    ) -> Result<(Connection, bool), StoreError> {
        // Checked before the first write (even the switch to WAL rewrites
        // the header of a Python store, which keeps a rollback journal).
        let python = python_store(path)?;
        if let Some(found) = &python {
            if !allow(found) {
                return Err(StoreError::msg(format!(
                    "{}: not upgrading this Python retalk store (it was left unchanged)",
                    path.display()
                )));
            }
        }
        if !path.exists() {
            // An empty file is an empty database; creating it ourselves
            // makes it (and the WAL SQLite derives from it) owner-only.
            let mut options = OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            match options.open(path) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io_err(e)),
            }
        }
        let mut conn = conn::open(path)?;
        // Freed pages are zeroed: a taken inbox row, a removed contact or
        // a dropped session leaves no bytes behind in the file (the inbox
        // is sealed too, see retalk-proto client/inbox.rs; rows from
        // before that rest plain until taken).
        conn.pragma_update(None, "secure_delete", "ON")
            .map_err(db_err)?;
        upgrade(&mut conn)?;
        Ok((conn, python.is_some()))
    }

    /// Whether opening this store upgraded a Python retalk store to ours,
    /// one way (Python retalk can no longer open it): a caller tells its
    /// user once.
    pub fn upgraded_python(&self) -> bool {
        self.upgraded_python
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn conn(&self) -> Result<MutexGuard<'_, Connection>, StoreError> {
        // A panic while holding the connection rolled its transaction back
        // (the `Transaction` drops); the data lives in SQLite, so go on.
        Ok(self.conn.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn read<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, StoreError> {
        f(&*self.conn()?).map_err(db_err)
    }

    /// Which store this one was upgraded from (e.g. `"python retalk 0.0.1"`),
    /// if it was.
    pub fn migrated_from(&self) -> Result<Option<String>, StoreError> {
        self.read(|c| {
            c.query_row(
                "SELECT v FROM meta WHERE k = 'retalk_rs_migrated_from'",
                [],
                |r| r.get(0),
            )
            .optional()
        })
    }
}

/// The lock file beside the database: its path plus `suffix`.
fn open_lock_file(db: &Path, suffix: &str) -> Result<File, StoreError> {
    let mut path = db.as_os_str().to_owned();
    path.push(suffix);
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io_err)
}

fn table_exists(tx: &Transaction<'_>, name: &str) -> rusqlite::Result<bool> {
    tx.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1")?
        .exists([name])
}

fn columns(tx: &Transaction<'_>, table: &str) -> rusqlite::Result<Vec<String>> {
    let mut stmt = tx.prepare(&format!("PRAGMA table_info(\"{table}\")"))?;
    let rows = stmt.query_map([], |r| r.get::<_, String>(1))?;
    rows.collect()
}

/// The Python retalk store at `path`, if that is what the file holds (no
/// schema version, a `meta` table and no `identity` table: the test
/// [`upgrade`] makes), read through a read-only connection.
fn python_store(path: &Path) -> Result<Option<PythonStore>, StoreError> {
    if !std::fs::metadata(path).is_ok_and(|m| m.len() > 0) {
        return Ok(None);
    }
    let conn = conn::open_reader(path)?;
    let table = |name: &str| -> rusqlite::Result<bool> {
        conn.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1")?
            .exists([name])
    };
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(db_err)?;
    if version != 0 || !table("meta").map_err(db_err)? || table("identity").map_err(db_err)? {
        return Ok(None);
    }
    let mut found = PythonStore::default();
    let mut stmt = conn.prepare("SELECT k, v FROM meta").map_err(db_err)?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, Option<String>>(0)?,
                r.get::<_, Option<String>>(1)?,
            ))
        })
        .map_err(db_err)?;
    for row in rows {
        let (Some(k), Some(v)) = row.map_err(db_err)? else {
            continue;
        };
        if k == "account" {
            found.account_pickle = Some(v);
        } else {
            found.settings.insert(k, v);
        }
    }
    Ok(Some(found))
}

/// Brings the file to [`SCHEMA_VERSION`] in one transaction.
fn upgrade(conn: &mut Connection) -> Result<(), StoreError> {
    // The common case, without taking the write lock.
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(db_err)?;
    if version == SCHEMA_VERSION {
        return Ok(());
    }
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db_err)?;
    let version: i64 = tx
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(db_err)?;
    if version == SCHEMA_VERSION {
        return Ok(());
    }
    if (1..=3).contains(&version) {
        if version == 1 {
            // Version 1 marked a ciphertext that never left with this
            // prefix of `last_error`; version 2 says so in its own column.
            tx.execute_batch(
                "ALTER TABLE outbox ADD COLUMN reencrypt INTEGER NOT NULL DEFAULT 0; \
                 UPDATE outbox SET reencrypt = 1 WHERE last_error LIKE '(not sent) %';",
            )
            .map_err(db_err)?;
        }
        if version <= 2 {
            upgrade_to_3(&tx).map_err(db_err)?;
        }
        upgrade_to_4(&tx).map_err(db_err)?;
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(db_err)?;
        return tx.commit().map_err(db_err);
    }
    if version != 0 {
        return Err(StoreError::msg(format!(
            "store.db has schema version {version}; this retalk knows version {SCHEMA_VERSION} \
             (written by a newer retalk?)"
        )));
    }
    let from_python = table_exists(&tx, "meta").map_err(db_err)?
        && !table_exists(&tx, "identity").map_err(db_err)?;
    if from_python {
        for t in PYTHON_TABLES {
            if table_exists(&tx, t).map_err(db_err)? {
                tx.execute_batch(&format!("ALTER TABLE \"{t}\" RENAME TO \"legacy_{t}\""))
                    .map_err(db_err)?;
            }
        }
    }
    tx.execute_batch(SCHEMA).map_err(db_err)?;
    tx.execute_batch(SCHEMA_3).map_err(db_err)?;
    tx.execute_batch(SCHEMA_4).map_err(db_err)?;
    if from_python {
        import_python(&tx).map_err(db_err)?;
        for t in PYTHON_TABLES {
            tx.execute_batch(&format!("DROP TABLE IF EXISTS \"legacy_{t}\""))
                .map_err(db_err)?;
        }
        tx.execute(
            "INSERT OR REPLACE INTO meta(k, v) VALUES('retalk_rs_migrated_from', 'python retalk 0.0.1'), \
             ('retalk_rs_migrated_at', ?1)",
            [unix_now().to_string()],
        )
        .map_err(db_err)?;
    }
    tx.execute(
        "INSERT OR REPLACE INTO meta(k, v) VALUES('account', ?1)",
        [PYTHON_TOMBSTONE],
    )
    .map_err(db_err)?;
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)
        .map_err(db_err)?;
    tx.commit().map_err(db_err)
}

/// Version 2 to 3: the contact's signing key, the history, the contact
/// inbox, and the block list as a table (it was the `blocked` setting:
/// user ids joined by `,`).
fn upgrade_to_3(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    if !columns(tx, "contacts")?.iter().any(|c| c == "signing_key") {
        tx.execute_batch("ALTER TABLE contacts ADD COLUMN signing_key TEXT;")?;
    }
    tx.execute_batch(SCHEMA_3)?;
    let old: Option<String> = tx
        .query_row("SELECT v FROM settings WHERE k = 'blocked'", [], |r| {
            r.get(0)
        })
        .optional()?;
    for id in old.iter().flat_map(|v| v.split(',')) {
        if let Ok(id) = UserId::parse(id) {
            tx.execute(
                "INSERT OR IGNORE INTO blocked(fingerprint) VALUES(?1)",
                [id.as_str()],
            )?;
        }
    }
    tx.execute("DELETE FROM settings WHERE k = 'blocked'", [])?;
    Ok(())
}

/// Version 3 to 4: the inbox's extra fields (group copies, roster and
/// invite records), groups, their tombstones and invite codes.
fn upgrade_to_4(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    if !columns(tx, "inbox")?.iter().any(|c| c == "extra") {
        tx.execute_batch("ALTER TABLE inbox ADD COLUMN extra TEXT;")?;
    }
    tx.execute_batch(SCHEMA_4)
}

/// Copies a Python retalk 0.0.1 store (tables renamed to `legacy_*`) into
/// the schema. Tolerates the 0.3.0 shapes of `sessions` (with `sid`, `used`)
/// and `peers` (keyed by `fingerprint`). Rows naming a peer that is not a
/// user id cannot be represented and are skipped.
fn import_python(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    let now = unix_now();
    // meta: the account, its fallback time; every other key is a setting
    // (0.0.1 has `name` and `server_url`, which the client reads as such).
    let mut account = None;
    let mut fallback_ts = None;
    let mut settings = Vec::new();
    {
        let mut stmt = tx.prepare("SELECT k, v FROM legacy_meta")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, Option<String>>(0)?,
                r.get::<_, Option<String>>(1)?,
            ))
        })?;
        for row in rows {
            let (Some(k), Some(v)) = row? else { continue };
            match k.as_str() {
                "account" => account = Some(v),
                "fallback_ts" => fallback_ts = v.trim().parse::<f64>().ok(),
                _ => settings.push((k, v)),
            }
        }
    }
    if let Some(pickle) = account {
        tx.execute(
            "INSERT INTO identity(id, account_pickle, fallback_published_at) VALUES(1, ?1, ?2)",
            params![pickle, fallback_ts],
        )?;
    }
    for (k, v) in settings {
        tx.execute(
            "INSERT OR REPLACE INTO settings(k, v) VALUES(?1, ?2)",
            params![k, v],
        )?;
    }

    // sessions: one per peer, keyed by peer; the session id is inside the
    // encrypted pickle, so it is left empty (the client files the session
    // under its id when it first opens a message with it).
    let mut session_peers = Vec::new();
    if table_exists(tx, "legacy_sessions")? {
        let cols = columns(tx, "legacy_sessions")?;
        let sid = if cols.iter().any(|c| c == "sid") {
            "sid"
        } else {
            "''"
        };
        let used = if cols.iter().any(|c| c == "used") {
            "used"
        } else {
            "0"
        };
        let mut stmt = tx.prepare(&format!(
            "SELECT peer, {sid}, blob, {used} FROM legacy_sessions"
        ))?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, Option<String>>(0)?,
                r.get::<_, Option<String>>(1)?,
                r.get::<_, Option<String>>(2)?,
                r.get::<_, Option<f64>>(3)?,
            ))
        })?;
        for row in rows {
            let (Some(peer), sid, Some(blob), used) = row? else {
                continue;
            };
            let Ok(peer) = UserId::try_from(peer) else {
                continue;
            };
            tx.execute(
                "INSERT OR REPLACE INTO sessions(peer, session_id, pickle, last_received, created) \
                 VALUES(?1, ?2, ?3, ?4, 0)",
                params![peer.as_str(), sid.unwrap_or_default(), blob, used.unwrap_or(0.0)],
            )?;
            if !session_peers.contains(&peer) {
                session_peers.push(peer);
            }
        }
    }

    // outbox: sent, unacknowledged messages, due for a resend.
    if table_exists(tx, "legacy_outbox")? {
        let mut stmt = tx.prepare("SELECT id, peer, mtype, body, ts FROM legacy_outbox")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, Option<String>>(0)?,
                r.get::<_, Option<String>>(1)?,
                r.get::<_, Option<i64>>(2)?,
                r.get::<_, Option<String>>(3)?,
                r.get::<_, Option<f64>>(4)?,
            ))
        })?;
        for row in rows {
            let (Some(id), Some(peer), Some(mtype), Some(body), ts) = row? else {
                continue;
            };
            let Ok(peer) = UserId::try_from(peer) else {
                continue;
            };
            let created = ts.unwrap_or(now);
            insert_outbox(
                tx,
                &OutboxEntry {
                    key: id.clone(),
                    envelope_id: id,
                    peer,
                    kind: OutboxKind::Message,
                    mtype,
                    body,
                    created,
                    next_attempt: created,
                    attempts: 1,
                    last_error: None,
                    reencrypt: false,
                    envelope: None,
                },
            )?;
        }
    }

    // processed: hash -> envelope id. Python kept no sender; every processed
    // message came on a stored session (0.0.1 never deletes sessions), so
    // with a single session peer that is the sender; otherwise UNKNOWN_PEER.
    if table_exists(tx, "legacy_processed")? {
        let peer = match session_peers.as_slice() {
            [only] => only.as_str().to_owned(),
            _ => UNKNOWN_PEER.to_owned(),
        };
        tx.execute(
            "INSERT OR REPLACE INTO processed(hash, envelope_id, peer, at) \
             SELECT hash, COALESCE(msg_id, ''), ?1, ?2 FROM legacy_processed WHERE hash IS NOT NULL",
            params![peer, now],
        )?;
    }

    // peers -> contacts (0.0.1: name, id, pin; 0.3.0: fingerprint, name,
    // identity_key, signing_key).
    if table_exists(tx, "legacy_peers")? {
        let cols = columns(tx, "legacy_peers")?;
        let sql = if cols.iter().any(|c| c == "signing_key") {
            "SELECT COALESCE(name, fingerprint), fingerprint, identity_key, signing_key \
             FROM legacy_peers"
        } else if cols.iter().any(|c| c == "fingerprint") {
            "SELECT COALESCE(name, fingerprint), fingerprint, identity_key, NULL FROM legacy_peers"
        } else {
            "SELECT name, id, pin, NULL FROM legacy_peers"
        };
        let mut stmt = tx.prepare(sql)?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, Option<String>>(0)?,
                r.get::<_, Option<String>>(1)?,
                r.get::<_, Option<String>>(2)?,
                r.get::<_, Option<String>>(3)?,
            ))
        })?;
        for row in rows {
            let (Some(name), Some(id), pin, signing_key) = row? else {
                continue;
            };
            let Ok(id) = UserId::try_from(id) else {
                continue;
            };
            tx.execute(
                "INSERT OR REPLACE INTO contacts(name, id, pin, signing_key) VALUES(?1, ?2, ?3, ?4)",
                params![
                    name,
                    id.as_str(),
                    pin.filter(|p| !p.is_empty()),
                    signing_key.filter(|p| !p.is_empty())
                ],
            )?;
        }
    }

    import_python_groups(tx)?;
    // 0.3.0's block list, contact inbox and history have our columns;
    // rows naming something that is not a user id are skipped.
    if table_exists(tx, "legacy_blocked")? {
        tx.execute(
            "INSERT OR IGNORE INTO blocked(fingerprint) SELECT fingerprint FROM legacy_blocked \
             WHERE length(fingerprint) = 32 AND fingerprint NOT GLOB '*[^0-9a-f]*'",
            [],
        )?;
    }
    if table_exists(tx, "legacy_received_contacts")? {
        tx.execute(
            "INSERT OR REPLACE INTO received_contacts(fingerprint, name, identity_key, \
             signing_key, from_fp, from_name, msg_id, ts) \
             SELECT fingerprint, COALESCE(name, ''), COALESCE(identity_key, ''), \
             COALESCE(signing_key, ''), from_fp, COALESCE(from_name, ''), \
             COALESCE(msg_id, ''), COALESCE(ts, ?1) FROM legacy_received_contacts \
             WHERE length(fingerprint) = 32 AND fingerprint NOT GLOB '*[^0-9a-f]*' \
             AND length(from_fp) = 32 AND from_fp NOT GLOB '*[^0-9a-f]*'",
            [now],
        )?;
    }
    if table_exists(tx, "legacy_messages")? {
        let cols = columns(tx, "legacy_messages")?;
        let has = |c: &str| cols.iter().any(|x| x == c);
        // Older 0.3.0 tables lack peer_fp/direction (received only) or
        // gid/gname; `store.py` `ensure_messages` reads them as below.
        let peer = if has("peer_fp") {
            "COALESCE(peer_fp, from_fp)"
        } else {
            "from_fp"
        };
        let direction = if has("direction") {
            "COALESCE(direction, 'in')"
        } else {
            "'in'"
        };
        let (gid, gname) = if has("gid") {
            ("gid", "gname")
        } else {
            ("NULL", "NULL")
        };
        tx.execute(
            &format!(
                "INSERT OR IGNORE INTO messages(msg_id, from_fp, from_name, peer_fp, direction, \
                 body, ts, gid, gname) \
                 SELECT COALESCE(msg_id, ''), from_fp, COALESCE(from_name, ''), {peer}, \
                 {direction}, body, COALESCE(ts, ?1), {gid}, {gname} FROM legacy_messages \
                 WHERE body IS NOT NULL AND length(from_fp) = 32 \
                 AND from_fp NOT GLOB '*[^0-9a-f]*' AND {direction} IN ('in', 'out') \
                 ORDER BY ts, rowid"
            ),
            [now],
        )?;
    }
    Ok(())
}

/// Python 0.3.0's groups (no owner kept: imported as NULL, see
/// [`Group::owner`]), tombstones and invite codes; rows whose ids are not
/// 32 hex characters are skipped, and so are roster entries.
fn import_python_groups(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    let hex32 = |c: &str| format!("length({c}) = 32 AND {c} NOT GLOB '*[^0-9a-f]*'");
    if table_exists(tx, "legacy_groups")? {
        // gid, name, members (JSON), ts
        type GroupRow = (String, Option<String>, Option<String>, Option<f64>);
        let rows: Vec<GroupRow> = {
            let mut stmt = tx.prepare(&format!(
                "SELECT gid, name, members, ts FROM legacy_groups WHERE {}",
                hex32("gid")
            ))?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        for (gid, name, members, ts) in rows {
            let list: Vec<String> = members
                .and_then(|m| serde_json::from_str::<Vec<serde_json::Value>>(&m).ok())
                .unwrap_or_default()
                .iter()
                .filter_map(|v| v.as_str().and_then(|s| UserId::parse(s).ok()))
                .map(|u| u.to_string())
                .collect();
            let name = name
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| gid[..8].to_owned());
            tx.execute(
                "INSERT OR IGNORE INTO groups(gid, name, members, ts, owner)                  VALUES(?1, ?2, ?3, ?4, NULL)",
                params![
                    gid,
                    name,
                    serde_json::to_string(&list).unwrap_or_else(|_| "[]".into()),
                    ts.unwrap_or_else(unix_now)
                ],
            )?;
        }
    }
    if table_exists(tx, "legacy_left_groups")? {
        tx.execute(
            &format!(
                "INSERT OR IGNORE INTO left_groups(gid, name, ts) SELECT gid,                  COALESCE(name, ''), COALESCE(ts, ?1) FROM legacy_left_groups WHERE {}",
                hex32("gid")
            ),
            [unix_now()],
        )?;
    }
    if table_exists(tx, "legacy_invite_codes")? {
        tx.execute(
            "INSERT OR IGNORE INTO invite_codes(code, kind, peer, created, expires, uses,              used_by, revoked) SELECT code, kind, peer, COALESCE(created, ?1), expires,              COALESCE(uses, 0), COALESCE(used_by, '[]'), COALESCE(revoked, 0)              FROM legacy_invite_codes WHERE code IS NOT NULL AND kind IN ('single', 'permanent')",
            [unix_now()],
        )?;
    }
    Ok(())
}

fn group_row(r: &Row<'_>) -> rusqlite::Result<Group> {
    let gid: String = r.get(0)?;
    let members: String = r.get(2)?;
    let owner: Option<String> = r.get(4)?;
    let list: Vec<String> =
        serde_json::from_str(&members).map_err(|_| corrupt("group members", &members))?;
    Ok(Group {
        id: GroupId::parse(&gid).map_err(|_| corrupt("not a group id", &gid))?,
        name: r.get(1)?,
        members: list
            .into_iter()
            .map(user_id)
            .collect::<rusqlite::Result<_>>()?,
        ts: r.get(3)?,
        owner: owner.map(user_id).transpose()?,
    })
}

fn invite_row(r: &Row<'_>) -> rusqlite::Result<InviteRecord> {
    let kind: String = r.get(1)?;
    let used_by: String = r.get(6)?;
    let list: Vec<String> =
        serde_json::from_str(&used_by).map_err(|_| corrupt("invite used_by", &used_by))?;
    Ok(InviteRecord {
        code: r.get(0)?,
        kind: InviteKind::parse(&kind).ok_or_else(|| corrupt("invite kind", &kind))?,
        peer: r.get(2)?,
        created: r.get(3)?,
        expires: r.get(4)?,
        uses: r.get(5)?,
        used_by: list
            .into_iter()
            .map(user_id)
            .collect::<rusqlite::Result<_>>()?,
        revoked: r.get(7)?,
    })
}

fn message_row(r: &Row<'_>) -> rusqlite::Result<SavedMessage> {
    let direction: String = r.get(5)?;
    let gid: Option<String> = r.get(8)?;
    let gname: Option<String> = r.get(9)?;
    Ok(SavedMessage {
        rowid: r.get(0)?,
        record: MessageRecord {
            msg_id: r.get(1)?,
            from: user_id(r.get(2)?)?,
            from_name: r.get(3)?,
            peer: r.get(4)?,
            direction: Direction::parse(&direction)
                .ok_or_else(|| corrupt("unknown message direction", &direction))?,
            body: r.get(6)?,
            at: r.get(7)?,
            group: gid.map(|id| GroupTag {
                id,
                name: gname.unwrap_or_default(),
            }),
        },
    })
}

fn insert_outbox(tx: &Transaction<'_>, e: &OutboxEntry) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO outbox(key, envelope_id, peer, kind, mtype, body, created, next_attempt, \
         attempts, last_error, envelope, reencrypt) \
         VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12) \
         ON CONFLICT(key) DO UPDATE SET envelope_id = excluded.envelope_id, \
         peer = excluded.peer, kind = excluded.kind, mtype = excluded.mtype, \
         body = excluded.body, created = excluded.created, \
         next_attempt = excluded.next_attempt, attempts = excluded.attempts, \
         last_error = excluded.last_error, envelope = excluded.envelope, \
         reencrypt = excluded.reencrypt",
    )?
    .execute(params![
        e.key,
        e.envelope_id,
        e.peer.as_str(),
        kind_text(e.kind),
        e.mtype,
        e.body,
        finite(e.created),
        finite(e.next_attempt),
        e.attempts,
        e.last_error,
        e.envelope,
        e.reencrypt,
    ])?;
    Ok(())
}

/// Applies a batch inside a transaction, in the order the memory store
/// does: for each table upserts first, then removals.
fn apply(tx: &Transaction<'_>, c: &Changes) -> rusqlite::Result<()> {
    // Every field named: a field added to `Changes` fails to compile here
    // until this store writes it.
    let Changes {
        identity,
        sessions,
        sessions_removed,
        outbox,
        outbox_removed,
        processed,
        processed_forget_before,
        incoming,
        incoming_removed,
        inbox,
        inbox_removed,
        contacts,
        contacts_removed,
        settings,
        messages,
        blocked,
        blocked_removed,
        received_contacts,
        received_contacts_removed,
        groups,
        groups_removed,
        left_groups,
        left_groups_removed,
        invites,
    } = c;
    if let Some(i) = identity {
        tx.prepare_cached(
            "INSERT INTO identity(id, account_pickle, fallback_published_at) VALUES(1, ?1, ?2) \
             ON CONFLICT(id) DO UPDATE SET account_pickle = excluded.account_pickle, \
             fallback_published_at = excluded.fallback_published_at",
        )?
        .execute(params![
            i.account_pickle,
            i.fallback_published_at.map(finite)
        ])?;
    }
    for s in sessions {
        tx.prepare_cached(
            "INSERT INTO sessions(peer, session_id, pickle, last_received, created) \
             VALUES(?1, ?2, ?3, ?4, ?5) ON CONFLICT(peer, session_id) DO UPDATE SET \
             pickle = excluded.pickle, last_received = excluded.last_received, \
             created = excluded.created",
        )?
        .execute(params![
            s.peer.as_str(),
            s.session_id,
            s.pickle,
            finite(s.last_received),
            finite(s.created)
        ])?;
    }
    for (peer, id) in sessions_removed {
        tx.prepare_cached("DELETE FROM sessions WHERE peer = ?1 AND session_id = ?2")?
            .execute(params![peer.as_str(), id])?;
    }
    for e in outbox {
        insert_outbox(tx, e)?;
    }
    for k in outbox_removed {
        tx.prepare_cached("DELETE FROM outbox WHERE key = ?1")?
            .execute([k])?;
    }
    if let Some(before) = *processed_forget_before {
        tx.prepare_cached("DELETE FROM processed WHERE at < ?1")?
            .execute([finite(before)])?;
    }
    for p in processed {
        tx.prepare_cached(
            "INSERT INTO processed(hash, envelope_id, peer, at) VALUES(?1, ?2, ?3, ?4) \
             ON CONFLICT(hash) DO UPDATE SET envelope_id = excluded.envelope_id, \
             peer = excluded.peer, at = excluded.at",
        )?
        .execute(params![
            p.hash,
            p.envelope_id,
            p.peer.as_str(),
            finite(p.at)
        ])?;
    }
    for i in incoming {
        // The first copy of a body wins and keeps its place.
        tx.prepare_cached(
            "INSERT INTO incoming(hash, sender, mtype, body, fetched_at) \
             VALUES(?1, ?2, ?3, ?4, ?5) ON CONFLICT(hash) DO NOTHING",
        )?
        .execute(params![
            i.hash,
            i.from,
            i.mtype,
            i.body,
            finite(i.fetched_at)
        ])?;
    }
    for k in incoming_removed {
        tx.prepare_cached("DELETE FROM incoming WHERE hash = ?1")?
            .execute([k])?;
    }
    for m in inbox {
        tx.prepare_cached(
            "INSERT INTO inbox(hash, envelope_id, sender, claimed_name, text, received_at, \
             extra) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT(hash) DO NOTHING",
        )?
        .execute(params![
            m.hash,
            m.envelope_id,
            m.from.as_str(),
            m.claimed_name,
            m.text,
            finite(m.received_at),
            m.extra
        ])?;
    }
    for k in inbox_removed {
        tx.prepare_cached("DELETE FROM inbox WHERE hash = ?1")?
            .execute([k])?;
    }
    for ct in contacts {
        tx.prepare_cached(
            "INSERT INTO contacts(name, id, pin, signing_key) VALUES(?1, ?2, ?3, ?4) \
             ON CONFLICT(name) DO UPDATE SET id = excluded.id, pin = excluded.pin, \
             signing_key = excluded.signing_key",
        )?
        .execute(params![ct.name, ct.id.as_str(), ct.pin, ct.signing_key])?;
    }
    for k in contacts_removed {
        tx.prepare_cached("DELETE FROM contacts WHERE name = ?1")?
            .execute([k])?;
    }
    for (k, v) in settings {
        tx.prepare_cached(
            "INSERT INTO settings(k, v) VALUES(?1, ?2) ON CONFLICT(k) DO UPDATE SET v = excluded.v",
        )?
        .execute(params![k, v])?;
    }
    for m in messages {
        tx.prepare_cached(
            "INSERT OR IGNORE INTO messages(msg_id, from_fp, from_name, peer_fp, direction, \
             body, ts, gid, gname) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?
        .execute(params![
            m.msg_id,
            m.from.as_str(),
            m.from_name,
            m.peer,
            m.direction.as_str(),
            m.body,
            finite(m.at),
            m.group.as_ref().map(|g| &g.id),
            m.group.as_ref().map(|g| &g.name),
        ])?;
    }
    for b in blocked {
        tx.prepare_cached("INSERT OR IGNORE INTO blocked(fingerprint) VALUES(?1)")?
            .execute([b.as_str()])?;
    }
    for b in blocked_removed {
        tx.prepare_cached("DELETE FROM blocked WHERE fingerprint = ?1")?
            .execute([b.as_str()])?;
    }
    for r in received_contacts {
        tx.prepare_cached(
            "INSERT INTO received_contacts(fingerprint, name, identity_key, signing_key, \
             from_fp, from_name, msg_id, ts) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
             ON CONFLICT(fingerprint) DO UPDATE SET name = excluded.name, \
             identity_key = excluded.identity_key, signing_key = excluded.signing_key, \
             from_fp = excluded.from_fp, from_name = excluded.from_name, \
             msg_id = excluded.msg_id, ts = excluded.ts",
        )?
        .execute(params![
            r.id.as_str(),
            r.name,
            r.identity_key,
            r.signing_key,
            r.from.as_str(),
            r.from_name,
            r.msg_id,
            finite(r.at),
        ])?;
    }
    for k in received_contacts_removed {
        tx.prepare_cached("DELETE FROM received_contacts WHERE fingerprint = ?1")?
            .execute([k.as_str()])?;
    }
    for g in groups {
        let members: Vec<&str> = g.members.iter().map(UserId::as_str).collect();
        tx.prepare_cached(
            "INSERT OR REPLACE INTO groups(gid, name, members, ts, owner) \
             VALUES(?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![
            g.id.as_str(),
            g.name,
            serde_json::Value::from(members).to_string(),
            finite(g.ts),
            g.owner.as_ref().map(UserId::as_str)
        ])?;
    }
    for k in groups_removed {
        tx.prepare_cached("DELETE FROM groups WHERE gid = ?1")?
            .execute([k.as_str()])?;
    }
    for l in left_groups {
        tx.prepare_cached("INSERT OR REPLACE INTO left_groups(gid, name, ts) VALUES(?1, ?2, ?3)")?
            .execute(params![l.id.as_str(), l.name, finite(l.ts)])?;
    }
    for k in left_groups_removed {
        tx.prepare_cached("DELETE FROM left_groups WHERE gid = ?1")?
            .execute([k.as_str()])?;
    }
    for r in invites {
        let used_by: Vec<&str> = r.used_by.iter().map(UserId::as_str).collect();
        tx.prepare_cached(
            "INSERT OR REPLACE INTO invite_codes(code, kind, peer, created, expires, uses, \
             used_by, revoked) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?
        .execute(params![
            r.code,
            r.kind.as_str(),
            r.peer,
            finite(r.created),
            r.expires.map(finite),
            r.uses,
            serde_json::Value::from(used_by).to_string(),
            r.revoked
        ])?;
    }
    Ok(())
}

impl Store for SqliteStore {
    type Lock<'a> = StoreLock<'a>;

    fn lock(&self) -> Result<StoreLock<'_>, StoreError> {
        // A holder that panicked released the file lock as it unwound.
        let file = self.lock_file.lock().unwrap_or_else(|e| e.into_inner());
        FileExt::lock_exclusive(&*file).map_err(io_err)?;
        Ok(StoreLock { file })
    }

    type TakeLock<'a> = TakeLock<'a>;

    fn take_lock(&self) -> Result<TakeLock<'_>, StoreError> {
        let file = self.take_file.lock().unwrap_or_else(|e| e.into_inner());
        FileExt::lock_exclusive(&*file).map_err(io_err)?;
        Ok(TakeLock(StoreLock { file }))
    }

    fn commit(&self, _lock: &StoreLock<'_>, changes: Changes) -> Result<(), StoreError> {
        if changes.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn()?;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db_err)?;
        apply(&tx, &changes).map_err(db_err)?;
        tx.commit().map_err(db_err)
    }

    fn identity(&self) -> Result<Option<IdentityRecord>, StoreError> {
        self.read(|c| {
            c.prepare_cached(
                "SELECT account_pickle, fallback_published_at FROM identity WHERE id = 1",
            )?
            .query_row([], |r| {
                Ok(IdentityRecord {
                    account_pickle: r.get(0)?,
                    fallback_published_at: r.get(1)?,
                })
            })
            .optional()
        })
    }

    fn sessions(&self, peer: &UserId) -> Result<Vec<SessionRecord>, StoreError> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT peer, session_id, pickle, last_received, created FROM sessions \
                 WHERE peer = ?1 ORDER BY last_received DESC, created DESC, session_id",
            )?;
            let rows = stmt.query_map([peer.as_str()], session_row)?;
            rows.collect()
        })
    }

    fn outbox_entry(&self, key: &str) -> Result<Option<OutboxEntry>, StoreError> {
        self.read(|c| {
            c.prepare_cached(&format!(
                "SELECT {OUTBOX_COLUMNS} FROM outbox WHERE key = ?1"
            ))?
            .query_row([key], outbox_row)
            .optional()
        })
    }

    fn outbox(&self) -> Result<Vec<OutboxEntry>, StoreError> {
        self.read(|c| {
            let mut stmt =
                c.prepare_cached(&format!("SELECT {OUTBOX_COLUMNS} FROM outbox ORDER BY seq"))?;
            let rows = stmt.query_map([], outbox_row)?;
            rows.collect()
        })
    }

    fn processed(&self, hash: &str) -> Result<Option<ProcessedRecord>, StoreError> {
        self.read(|c| {
            c.prepare_cached("SELECT hash, envelope_id, peer, at FROM processed WHERE hash = ?1")?
                .query_row([hash], |r| {
                    Ok(ProcessedRecord {
                        hash: r.get(0)?,
                        envelope_id: r.get(1)?,
                        peer: user_id(r.get(2)?)?,
                        at: r.get(3)?,
                    })
                })
                .optional()
        })
    }

    fn is_incoming(&self, hash: &str) -> Result<bool, StoreError> {
        self.read(|c| {
            c.prepare_cached("SELECT 1 FROM incoming WHERE hash = ?1")?
                .exists([hash])
        })
    }

    fn incoming(&self) -> Result<Vec<IncomingRecord>, StoreError> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT hash, sender, mtype, body, fetched_at FROM incoming ORDER BY seq",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok(IncomingRecord {
                    hash: r.get(0)?,
                    from: r.get(1)?,
                    mtype: r.get(2)?,
                    body: r.get(3)?,
                    fetched_at: r.get(4)?,
                })
            })?;
            rows.collect()
        })
    }

    fn inbox(&self) -> Result<Vec<InboxRecord>, StoreError> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT hash, envelope_id, sender, claimed_name, text, received_at, extra \
                 FROM inbox ORDER BY seq",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok(InboxRecord {
                    hash: r.get(0)?,
                    envelope_id: r.get(1)?,
                    from: user_id(r.get(2)?)?,
                    claimed_name: r.get(3)?,
                    text: r.get(4)?,
                    received_at: r.get(5)?,
                    extra: r.get(6)?,
                })
            })?;
            rows.collect()
        })
    }

    fn contacts(&self) -> Result<Vec<Contact>, StoreError> {
        self.read(|c| {
            let mut stmt =
                c.prepare_cached("SELECT name, id, pin, signing_key FROM contacts ORDER BY name")?;
            let rows = stmt.query_map([], |r| {
                Ok(Contact {
                    name: r.get(0)?,
                    id: user_id(r.get(1)?)?,
                    pin: r.get(2)?,
                    signing_key: r.get(3)?,
                })
            })?;
            rows.collect()
        })
    }

    fn setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.read(|c| {
            c.prepare_cached("SELECT v FROM settings WHERE k = ?1")?
                .query_row([key], |r| r.get(0))
                .optional()
        })
    }

    fn messages(
        &self,
        of: MessageFilter<'_>,
        after_rowid: i64,
    ) -> Result<Vec<SavedMessage>, StoreError> {
        // Picked by SQL, so only the conversation's rows are read (`?2 IS
        // NULL` for every row).
        let (column, key) = match of {
            MessageFilter::All => ("peer_fp", None),
            MessageFilter::Peer(p) => ("peer_fp", Some(p)),
            MessageFilter::Group(g) => ("gid", Some(g)),
        };
        self.read(|c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT rowid, msg_id, from_fp, from_name, peer_fp, direction, body, ts, gid, \
                 gname FROM messages WHERE rowid > ?1 AND (?2 IS NULL OR {column} = ?2) ORDER BY ts, rowid"
            ))?;
            let rows = stmt.query_map(rusqlite::params![after_rowid, key], message_row)?;
            rows.collect()
        })
    }

    fn blocked(&self) -> Result<Vec<UserId>, StoreError> {
        self.read(|c| {
            let mut stmt =
                c.prepare_cached("SELECT fingerprint FROM blocked ORDER BY fingerprint")?;
            let rows = stmt.query_map([], |r| user_id(r.get(0)?))?;
            rows.collect()
        })
    }

    fn received_contacts(&self) -> Result<Vec<ReceivedContact>, StoreError> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT fingerprint, name, identity_key, signing_key, from_fp, from_name, \
                 msg_id, ts FROM received_contacts ORDER BY name, fingerprint",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok(ReceivedContact {
                    id: user_id(r.get(0)?)?,
                    name: r.get(1)?,
                    identity_key: r.get(2)?,
                    signing_key: r.get(3)?,
                    from: user_id(r.get(4)?)?,
                    from_name: r.get(5)?,
                    msg_id: r.get(6)?,
                    at: r.get(7)?,
                })
            })?;
            rows.collect()
        })
    }

    fn groups(&self) -> Result<Vec<Group>, StoreError> {
        self.read(|c| {
            let mut stmt = c.prepare_cached("SELECT gid, name, members, ts, owner FROM groups")?;
            let rows = stmt.query_map([], group_row)?;
            rows.collect()
        })
    }

    fn left_groups(&self) -> Result<Vec<LeftGroup>, StoreError> {
        self.read(|c| {
            let mut stmt = c.prepare_cached("SELECT gid, name, ts FROM left_groups")?;
            let rows = stmt.query_map([], |r| {
                let gid: String = r.get(0)?;
                Ok(LeftGroup {
                    id: GroupId::parse(&gid).map_err(|_| corrupt("not a group id", &gid))?,
                    name: r.get(1)?,
                    ts: r.get(2)?,
                })
            })?;
            rows.collect()
        })
    }

    fn invites(&self) -> Result<Vec<InviteRecord>, StoreError> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT code, kind, peer, created, expires, uses, used_by, revoked \
                 FROM invite_codes",
            )?;
            let rows = stmt.query_map([], invite_row)?;
            rows.collect()
        })
    }
}
