//! The relay's store, watched: every call's outcome goes to an [`Outage`],
//! whose reports are logged (at the default level, `warn`): the first
//! failure of a burst at `error` with its cause, summaries and the
//! recovery at `warn`. Only the store's error text is logged, which names
//! no user, key or message.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use retalk_proto::ids::UserId;
use retalk_proto::relay::{
    ApiKeyRecord, ClaimOutcome, DeliveryRules, NewMessage, PublishOutcome, ReadLimit, RefusalRules,
    RelayStore, SendOutcome, StoreError, StoredMessage,
};
use retalk_proto::wire::{KeyCounts, PublicKeys};

use crate::clock::unix_now;
use crate::metrics::Metrics;
use crate::outage::{Outage, Report};
use crate::store::SharedStore;

/// A store whose failures and recovery are logged once per burst.
pub struct Watched {
    inner: SharedStore,
    outage: Mutex<Outage>,
    /// Mirrors `outage.is_failing()`, so that successes while all is well
    /// (nearly every call) take no lock.
    failing: AtomicBool,
    /// Counts every failure for `/metrics`.
    metrics: Arc<Metrics>,
}

impl Watched {
    pub fn new(inner: SharedStore, metrics: Arc<Metrics>) -> Self {
        Self {
            inner,
            metrics,
            outage: Mutex::new(Outage::default()),
            failing: AtomicBool::new(false),
        }
    }

    /// Passes `result` through, telling the outage about it.
    fn note<T>(&self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        match &result {
            Ok(_) if !self.failing.load(Ordering::Relaxed) => {}
            Ok(_) => self.update(|o, now| o.succeeded(now)),
            Err(e) => {
                self.metrics.store_error();
                let cause = e.to_string();
                self.update(|o, now| o.failed(now, &cause));
            }
        }
        result
    }

    fn update(&self, f: impl FnOnce(&mut Outage, f64) -> Option<Report>) {
        // A poisoned lock only means a log line was lost mid-way.
        let mut outage = self.outage.lock().unwrap_or_else(|e| e.into_inner());
        let report = f(&mut outage, unix_now());
        self.failing.store(outage.is_failing(), Ordering::Relaxed);
        drop(outage);
        match report {
            None => {}
            Some(Report::Failing { cause }) => tracing::error!(
                "relay storage failing: {cause}; answering 503 until it recovers \
                 (next summary in at most {}s)",
                crate::outage::SUMMARY_EVERY
            ),
            Some(Report::StillFailing {
                failures,
                seconds,
                cause,
            }) => tracing::warn!(
                "relay storage still failing: {failures} more failed calls in {seconds:.0}s; \
                 latest: {cause}"
            ),
            Some(Report::Recovered { failures, seconds }) => tracing::warn!(
                "relay storage recovered: {failures} failed calls over {seconds:.1}s, \
                 none in the last {}s",
                crate::outage::QUIET
            ),
        }
    }
}

impl RelayStore for Watched {
    fn use_nonce(&self, nonce: &str, now: f64, forget_before: f64) -> Result<bool, StoreError> {
        self.note(self.inner.use_nonce(nonce, now, forget_before))
    }
    fn publish_keys(
        &self,
        user: &UserId,
        keys: &PublicKeys,
        one_time_keys: &[(String, String)],
        fallback_key: Option<&(String, String)>,
        max_unclaimed: u64,
    ) -> Result<PublishOutcome, StoreError> {
        self.note(
            self.inner
                .publish_keys(user, keys, one_time_keys, fallback_key, max_unclaimed),
        )
    }
    fn count_keys(&self, user: &UserId) -> Result<KeyCounts, StoreError> {
        self.note(self.inner.count_keys(user))
    }
    fn get_keys(&self, user: &UserId) -> Result<Option<PublicKeys>, StoreError> {
        self.note(self.inner.get_keys(user))
    }
    fn claim_key(&self, user: &UserId) -> Result<ClaimOutcome, StoreError> {
        self.note(self.inner.claim_key(user))
    }
    fn send_message(
        &self,
        message: &NewMessage,
        rules: &DeliveryRules,
    ) -> Result<SendOutcome, StoreError> {
        self.note(self.inner.send_message(message, rules))
    }
    fn read_messages(
        &self,
        user: &UserId,
        from: Option<&str>,
        peek: bool,
        limit: ReadLimit,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        self.note(self.inner.read_messages(user, from, peek, limit))
    }
    fn nack(
        &self,
        recipient: &UserId,
        hash: &str,
        sig: &str,
        now: f64,
        rules: &RefusalRules,
    ) -> Result<(), StoreError> {
        self.note(self.inner.nack(recipient, hash, sig, now, rules))
    }
    fn api_key_valid(&self, key_hash: &str) -> Result<bool, StoreError> {
        self.note(self.inner.api_key_valid(key_hash))
    }
    fn api_key_create(&self, key_hash: &str, label: &str, now: f64) -> Result<(), StoreError> {
        self.note(self.inner.api_key_create(key_hash, label, now))
    }
    fn api_key_list(&self) -> Result<Vec<ApiKeyRecord>, StoreError> {
        self.note(self.inner.api_key_list())
    }
    fn api_key_set_disabled(&self, key_hash: &str, disabled: bool) -> Result<u64, StoreError> {
        self.note(self.inner.api_key_set_disabled(key_hash, disabled))
    }
    fn api_key_delete(&self, key_hash: &str) -> Result<u64, StoreError> {
        self.note(self.inner.api_key_delete(key_hash))
    }
}
