//! The schema, as versioned migrations applied at start.
//!
//! Tables and columns are the SQLite relay's (the Python relay's own
//! `server.db` layout), so an operator reads both with the same queries in
//! `psql` or `sqlite3`; the types are PostgreSQL's (`BIGSERIAL` ids,
//! `DOUBLE PRECISION` times). Differences, each for a rule SQLite met by
//! having one writer:
//!
//! - `otks(owner, key_id)` is unique: a key id is one row per owner, kept
//!   (`claimed = 1`) once handed out, which is the memory that it must
//!   never be handed out again (`RelayStore::publish_keys`), enforced by
//!   the database for every node at once;
//! - partial index `otks_unclaimed` on the unclaimed keys, the claim queue.
//!
//! `retalk_schema_version` holds one row per applied migration. Every node
//! migrates at start under an advisory lock (so nodes starting together
//! apply each step once), and refuses a database whose version is newer
//! than it knows: an old node must not write a layout it does not
//! understand.

use deadpool_postgres::Object;

use crate::error::PgError;

/// The advisory lock key taken while migrating.
const MIGRATION_LOCK: i64 = 0x7265_7461_6c6b; // "retalk"

/// Migrations in order; version N is `MIGRATIONS[N - 1]`. Never edit a
/// released one: add the next.
pub(crate) const MIGRATIONS: &[&str] = &["
CREATE TABLE users(
    id TEXT PRIMARY KEY,
    identity_key TEXT,
    signing_key TEXT,
    fallback_key_id TEXT,
    fallback_key TEXT
);
CREATE TABLE otks(
    id BIGSERIAL PRIMARY KEY,
    owner TEXT NOT NULL,
    key_id TEXT NOT NULL,
    key TEXT,
    claimed INT NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX otks_owner_key_id ON otks(owner, key_id);
CREATE INDEX otks_unclaimed ON otks(owner, id) WHERE claimed = 0;
CREATE TABLE messages(
    id BIGSERIAL PRIMARY KEY,
    ts DOUBLE PRECISION,
    sender TEXT,
    recipient TEXT,
    mtype BIGINT,
    body TEXT
);
CREATE INDEX messages_recipient ON messages(recipient, id);
CREATE INDEX messages_recipient_sender ON messages(recipient, sender, id);
CREATE TABLE nonces(
    nonce TEXT PRIMARY KEY,
    ts DOUBLE PRECISION NOT NULL
);
CREATE INDEX nonces_ts ON nonces(ts);
CREATE TABLE api_keys(
    key_hash TEXT PRIMARY KEY,
    label TEXT,
    created DOUBLE PRECISION,
    disabled INT DEFAULT 0
);
CREATE TABLE refused(
    id BIGSERIAL PRIMARY KEY,
    recipient TEXT,
    hash TEXT,
    sig TEXT,
    ts DOUBLE PRECISION,
    UNIQUE(recipient, hash)
);
CREATE INDEX refused_recipient ON refused(recipient, id);
CREATE INDEX refused_ts ON refused(ts);
"];

/// The newest schema this build knows.
pub const SCHEMA_VERSION: i32 = MIGRATIONS.len() as i32;

/// Brings the database up to [`SCHEMA_VERSION`], or refuses a newer one.
/// Returns the version found before migrating (0 for an empty database).
pub(crate) async fn migrate(conn: &mut Object) -> Result<i32, PgError> {
    let tx = conn.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS retalk_schema_version(
             version INT PRIMARY KEY,
             applied TIMESTAMPTZ NOT NULL DEFAULT now()
         )",
    )
    .await?;
    let found: i32 = tx
        .query_one(
            "SELECT COALESCE(MAX(version), 0) FROM retalk_schema_version",
            &[],
        )
        .await?
        .try_get(0)?;
    if found > SCHEMA_VERSION {
        return Err(PgError::NewerSchema {
            found,
            known: SCHEMA_VERSION,
        });
    }
    for (i, step) in MIGRATIONS.iter().enumerate().skip(found.max(0) as usize) {
        let version = i as i32 + 1;
        tx.batch_execute(step).await?;
        tx.execute(
            "INSERT INTO retalk_schema_version(version) VALUES($1)",
            &[&version],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(found)
}
