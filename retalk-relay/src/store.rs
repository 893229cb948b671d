//! The relay's storage, chosen at start: one type over every backend, so
//! the server is written once and a new backend is one match arm.

use std::path::Path;
use std::sync::Arc;

use retalk_proto::relay::{MemoryRelayStore, RelayStore, StoreError};
use retalk_store_sled::SledRelayStore;
use retalk_store_sqlite::SqliteRelayStore;

use crate::config::Backend;
use crate::errors::StartError;

/// Any [`RelayStore`], shared (`Arc<S>` is a store for any store `S`).
/// Dropping the last clone closes it.
pub type SharedStore = Arc<dyn RelayStore>;

/// Opens the configured backend at `db`.
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
    }
}
