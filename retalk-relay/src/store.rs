//! The relay's storage, chosen at start: one type over every backend, so
//! the server is written once and a new backend is one match arm.

use std::path::Path;
use std::sync::Arc;

use retalk_proto::relay::{
    ApiKeyRecord, ClaimOutcome, DeliveryRules, MemoryRelayStore, NewMessage, PublishOutcome,
    ReadLimit, RefusalRules, RelayStore, SendOutcome, StoreError, StoredMessage,
};
use retalk_proto::wire::{KeyCounts, PublicKeys};
use retalk_proto::UserId;
use retalk_store_sled::SledRelayStore;
use retalk_store_sqlite::SqliteRelayStore;

use crate::config::Backend;
use crate::errors::StartError;

/// Any [`RelayStore`], shared. Dropping the last clone closes it.
#[derive(Clone)]
pub struct SharedStore(Arc<dyn RelayStore>);

impl SharedStore {
    pub fn new(store: impl RelayStore + 'static) -> Self {
        Self(Arc::new(store))
    }

    /// A fresh in-memory store.
    pub fn memory() -> Self {
        Self::new(MemoryRelayStore::new())
    }
}

impl std::fmt::Debug for SharedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedStore")
    }
}

/// Opens the configured backend at `db`.
pub fn open_store(backend: Backend, db: &Path) -> Result<SharedStore, StartError> {
    let failed = |e: StoreError| StartError::Store {
        backend: backend.name(),
        path: db.display().to_string(),
        detail: e.to_string(),
    };
    match backend {
        Backend::Memory => Ok(SharedStore::memory()),
        Backend::Sqlite => SqliteRelayStore::open(db)
            .map(SharedStore::new)
            .map_err(failed),
        Backend::Sled => SledRelayStore::open(db)
            .map(SharedStore::new)
            .map_err(failed),
    }
}

impl RelayStore for SharedStore {
    fn use_nonce(&self, nonce: &str, now: f64, forget_before: f64) -> Result<bool, StoreError> {
        self.0.use_nonce(nonce, now, forget_before)
    }
    fn publish_keys(
        &self,
        user: &UserId,
        keys: &PublicKeys,
        one_time_keys: &[(String, String)],
        fallback_key: Option<&(String, String)>,
        max_unclaimed: u64,
    ) -> Result<PublishOutcome, StoreError> {
        self.0
            .publish_keys(user, keys, one_time_keys, fallback_key, max_unclaimed)
    }
    fn count_keys(&self, user: &UserId) -> Result<KeyCounts, StoreError> {
        self.0.count_keys(user)
    }
    fn get_keys(&self, user: &UserId) -> Result<Option<PublicKeys>, StoreError> {
        self.0.get_keys(user)
    }
    fn claim_key(&self, user: &UserId) -> Result<ClaimOutcome, StoreError> {
        self.0.claim_key(user)
    }
    fn send_message(
        &self,
        message: &NewMessage,
        rules: &DeliveryRules,
    ) -> Result<SendOutcome, StoreError> {
        self.0.send_message(message, rules)
    }
    fn read_messages(
        &self,
        user: &UserId,
        from: Option<&str>,
        peek: bool,
        limit: ReadLimit,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        self.0.read_messages(user, from, peek, limit)
    }
    fn nack(
        &self,
        recipient: &UserId,
        hash: &str,
        sig: &str,
        now: f64,
        rules: &RefusalRules,
    ) -> Result<(), StoreError> {
        self.0.nack(recipient, hash, sig, now, rules)
    }
    fn api_key_valid(&self, key_hash: &str) -> Result<bool, StoreError> {
        self.0.api_key_valid(key_hash)
    }
    fn api_key_create(&self, key_hash: &str, label: &str, now: f64) -> Result<(), StoreError> {
        self.0.api_key_create(key_hash, label, now)
    }
    fn api_key_list(&self) -> Result<Vec<ApiKeyRecord>, StoreError> {
        self.0.api_key_list()
    }
    fn api_key_set_disabled(&self, key_hash: &str, disabled: bool) -> Result<u64, StoreError> {
        self.0.api_key_set_disabled(key_hash, disabled)
    }
    fn api_key_delete(&self, key_hash: &str) -> Result<u64, StoreError> {
        self.0.api_key_delete(key_hash)
    }
}
