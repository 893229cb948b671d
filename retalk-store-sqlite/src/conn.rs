//! Opening connections with the settings every retalk database uses, and
//! mapping SQLite errors to the protocol's [`StoreError`].

use std::path::Path;
use std::time::Duration;

use retalk_proto::relay::StoreError;
use rusqlite::{Connection, OpenFlags};

/// How long a statement waits for another connection's (or process's) write
/// lock before giving up with `SQLITE_BUSY`. Writes hold the lock for well
/// under a millisecond; five seconds only matters when an operator holds a
/// write transaction open in `sqlite3`, and stays well inside the relay's
/// request timeout.
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Prepared statements kept per connection (statements, never data: the
/// database stays the source of truth).
const STATEMENT_CACHE: usize = 64;

pub(crate) fn db_err(e: rusqlite::Error) -> StoreError {
    StoreError(Box::new(e))
}

pub(crate) fn io_err(e: std::io::Error) -> StoreError {
    StoreError(Box::new(e))
}

/// Whether `e` says the database file is not a database or is corrupt
/// (SQLite's `SQLITE_NOTADB`, `SQLITE_CORRUPT`): a damaged file, which
/// trying again will not mend, unlike a busy or full disk.
pub fn is_damaged(e: &StoreError) -> bool {
    use rusqlite::ErrorCode::{DatabaseCorrupt, NotADatabase};
    e.0.downcast_ref::<rusqlite::Error>()
        .and_then(rusqlite::Error::sqlite_error_code)
        .is_some_and(|c| matches!(c, NotADatabase | DatabaseCorrupt))
}

/// Opens (creating if missing) a database file with:
/// - `journal_mode=WAL`: readers never block the writer nor each other, and
///   a commit is one append to the log;
/// - `synchronous=FULL`: in WAL mode NORMAL may lose the last commits on a
///   power cut (not on a crash); a relay acknowledges mail and nonces and a
///   client acknowledges messages as soon as they commit, so every commit
///   is fsynced before it is acknowledged;
/// - a busy timeout, so concurrent writers queue instead of failing.
pub(crate) fn open(path: &Path) -> Result<Connection, StoreError> {
    let conn = connect(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE,
    )?;
    // journal_mode answers with the mode in force; WAL is persistent in the
    // file, so only the first open of a database actually switches it.
    let mode: String = conn
        .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
        .map_err(db_err)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::msg(format!(
            "{}: could not switch to WAL journal mode (got {mode})",
            path.display()
        )));
    }
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(db_err)?;
    Ok(conn)
}

/// Opens one more connection to a database that [`open`] has set up, for
/// reading only: WAL is already persistent in the file and `synchronous`
/// concerns writers, so it skips both pragmas (a relay under load opens
/// such connections whenever more reads run at once than its pool holds).
pub(crate) fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    connect(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
}

fn connect(path: &Path, flags: OpenFlags) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(path, flags | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .map_err(db_err)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(db_err)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(conn)
}

/// A float bound SQLite compares sanely (it has no NaN; infinities are
/// avoided so an operator reading the table sees plain numbers).
pub(crate) fn finite(x: f64) -> f64 {
    if x.is_nan() {
        f64::MIN
    } else {
        x.clamp(f64::MIN, f64::MAX)
    }
}
