//! The PostgreSQL store's errors. The relay shows them to the operator (at
//! start, and in its storage-failure log) and answers clients with a
//! generic 503, so the texts name the database problem, never a user.

use retalk_proto::relay::StoreError;

/// What went wrong talking to PostgreSQL.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// `--database-url` is not a PostgreSQL URL (or key=value string).
    #[error("invalid database URL: {0}")]
    BadUrl(String),
    /// No connection could be made (at start: wrong host, port, database,
    /// user or password, or the server is down).
    #[error("cannot reach the database: {0}")]
    Unreachable(String),
    /// No pooled connection became available in time (the server is down
    /// or restarting, or every connection is busy).
    #[error("no database connection: {0}")]
    Pool(String),
    /// A statement failed.
    #[error("database error: {0}")]
    Db(String),
    /// The database was set up by a newer relay: refusing to touch it.
    #[error(
        "the database schema is version {found}, newer than this relay knows ({known}); \
         upgrade the relay"
    )]
    NewerSchema { found: i32, known: i32 },
    /// The store's own I/O threads could not start.
    #[error("cannot start the database client's runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

/// A tokio-postgres error with its cause: its own `Display` says only "db
/// error" for a server-side error, which is useless in a log.
pub(crate) fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => match std::error::Error::source(e) {
            Some(cause) => format!("{e}: {cause}"),
            None => e.to_string(),
        },
    }
}

impl From<tokio_postgres::Error> for PgError {
    fn from(e: tokio_postgres::Error) -> Self {
        PgError::Db(describe(&e))
    }
}

impl From<deadpool_postgres::PoolError> for PgError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        use deadpool_postgres::PoolError;
        match e {
            PoolError::Backend(e) => PgError::Pool(describe(&e)),
            other => PgError::Pool(other.to_string()),
        }
    }
}

impl From<PgError> for StoreError {
    fn from(e: PgError) -> Self {
        StoreError(Box::new(e))
    }
}
