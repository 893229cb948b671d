//! The relay's storage, chosen at start: one type over every backend, so
//! the server is written once and a new backend is one match arm.
//!
//! A backend that several relay processes share (PostgreSQL) also brings
//! a [`WakeSource`]: mail stored through another process must wake this
//! one's parked long-polls, and only the backend knows how to hear of it.
//! The server runs it beside the listener; it is a typed part of
//! [`Storage`], not something the server digs out of the store.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;

use retalk_proto::relay::{MemoryRelayStore, RelayStore, StoreError};
use retalk_store_postgres::{PgOptions, PgRelayStore, Wake};
use retalk_store_sled::SledRelayStore;
use retalk_store_sqlite::SqliteRelayStore;

use crate::config::{Backend, Config};
use crate::errors::StartError;
use crate::waiters::Waiters;

/// Any [`RelayStore`], shared (`Arc<S>` is a store for any store `S`).
/// Dropping the last clone closes it.
pub type SharedStore = Arc<dyn RelayStore>;

/// Wake-ups for mail stored by other relay processes on the same storage.
pub trait WakeSource: Send + 'static {
    /// Feeds `waiters` until the returned future is dropped (at shutdown):
    /// [`Waiters::wake`] for each user with new mail, and
    /// [`Waiters::wake_all`] whenever wake-ups may have been missed.
    fn feed(self: Box<Self>, waiters: Arc<Waiters>) -> Pin<Box<dyn Future<Output = ()> + Send>>;
}

/// PostgreSQL's LISTEN connection.
impl WakeSource for retalk_store_postgres::Listener {
    fn feed(self: Box<Self>, waiters: Arc<Waiters>) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(self.run(move |wake| match wake {
            Wake::Mail(user) => waiters.wake(&user),
            Wake::Everyone => waiters.wake_all(),
        }))
    }
}

/// An opened backend: the store, and for a shared one its wake-ups.
pub struct Storage {
    pub store: SharedStore,
    pub wakeups: Option<Box<dyn WakeSource>>,
}

/// A store alone: this process's own sends are all that wake its waiters.
impl From<SharedStore> for Storage {
    fn from(store: SharedStore) -> Self {
        Storage {
            store,
            wakeups: None,
        }
    }
}

/// Opens the configured backend at `db` (every backend but PostgreSQL,
/// which needs a URL and brings wake-ups: see [`open_storage`]).
pub fn open_store(backend: Backend, db: &Path) -> Result<SharedStore, StartError> {
    let failed = |e: StoreError| StartError::Store {
        backend: backend.name(),
        path: db.display().to_string(),
        detail: e.to_string(),
    };
    match backend {
        Backend::Memory => Ok(Arc::new(MemoryRelayStore::new())),
        Backend::Sqlite => SqliteRelayStore::open(db)
            .map(|s| Arc::new(s) as SharedStore)
            .map_err(failed),
        Backend::Sled => SledRelayStore::open(db)
            .map(|s| Arc::new(s) as SharedStore)
            .map_err(failed),
        Backend::Postgres => Err(failed(StoreError::msg(
            "the postgres backend is opened with open_storage (it needs --database-url)",
        ))),
    }
}

/// Opens the configured backend: connects and migrates a PostgreSQL
/// database (a malformed URL or an unreachable database is an error now,
/// not at the first request), else as [`open_store`].
pub async fn open_storage(config: &Config) -> Result<Storage, StartError> {
    if config.backend != Backend::Postgres {
        return open_store(config.backend, &config.db).map(Storage::from);
    }
    let url = config.database_url.as_deref().unwrap_or_default();
    let store = PgRelayStore::connect_async(url, PgOptions::default())
        .await
        .map_err(|source| StartError::Postgres {
            url: redact_url(url),
            source,
        })?;
    let wakeups: Box<dyn WakeSource> = Box::new(store.listener());
    Ok(Storage {
        store: Arc::new(store),
        wakeups: Some(wakeups),
    })
}

/// A database URL fit for a log: any password replaced by `***`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        // key=value form: values may be quoted and `=` spaced, so from the
        // password key on nothing is shown.
        return match url.to_ascii_lowercase().find("password") {
            Some(i) => format!("{}password=***", &url[..i]),
            None => url.to_owned(),
        };
    };
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => authority.to_owned(),
        },
        None => authority.to_owned(),
    };
    let path = if path.contains("password=") {
        path.split('&')
            .map(|p| match p.find("password=") {
                Some(i) => format!("{}password=***", &p[..i]),
                None => p.to_owned(),
            })
            .collect::<Vec<_>>()
            .join("&")
    } else {
        path.to_owned()
    };
    format!("{scheme}://{authority}{path}")
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_never_reach_the_log() {
        assert_eq!(
            redact_url("postgres://retalk:s3cret@db:5432/retalk"),
            "postgres://retalk:***@db:5432/retalk"
        );
        assert_eq!(
            redact_url("postgres://retalk@db/retalk"),
            "postgres://retalk@db/retalk"
        );
        assert_eq!(
            redact_url("postgres://db/retalk?user=a&password=s3cret"),
            "postgres://db/retalk?user=a&password=***"
        );
        assert_eq!(
            redact_url("host=db password=s3cret dbname=r"),
            "host=db password=***"
        );
        assert_eq!(
            redact_url("host=db password = s3cret dbname=r"),
            "host=db password=***"
        );
        assert_eq!(
            redact_url("host=db password='top secret'"),
            "host=db password=***"
        );
        assert_eq!(redact_url("host=db PASSWORD=x"), "host=db password=***");
    }
}
