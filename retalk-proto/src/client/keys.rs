//! Our keys on the relay: publishing, replenishing, rotating.

use std::sync::atomic::Ordering;

use serde_json::Value;

use super::{Changes, Client, ClientError, FlushReport, IdentityRecord, Store, Transport};
use crate::clock::Clock;
use crate::olm;
use crate::wire::{Args, KeyCounts};

/// What one `maintain` did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MaintainReport {
    pub unclaimed: u64,
    pub replenished: bool,
    pub fallback_rotated: bool,
    pub flush: FlushReport,
}

/// What one [`Client::sync`] did: Python 0.3.0's summary, key for key
/// (`retalk sync` and `retalk register` print it as JSON).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Unclaimed one-time keys the relay held before.
    pub unclaimed: u64,
    /// Whether anything was published.
    pub republished: bool,
    pub replenished: bool,
    pub fallback_rotated: bool,
    /// Outbox entries handed to the relay again.
    pub resent: usize,
}

impl<S: Store, T: Transport, C: Clock> Client<S, T, C> {
    /// Publishes identity, `n` fresh one-time keys and (first time, or when
    /// asked) a fallback key. This is all the onboarding a relay needs.
    pub async fn publish(&self, n: usize, rotate_fallback: bool) -> Result<(), ClientError> {
        let (one_time_keys, fallback_key) = self.prepare_keys(n, rotate_fallback)?;
        let sent_fallback = fallback_key.is_some();
        let args = Args::PublishKeys {
            identity_key: self.identity_key.clone(),
            signing_key: self.signing_key.clone(),
            one_time_keys,
            fallback_key,
        };
        // Every relay generation answers `{"ok": true, ...}`; anything else
        // (a portal's or proxy's JSON) must not mark the keys as published.
        let answer: Value = self.call(args).await?;
        if answer.get("ok") != Some(&Value::Bool(true)) {
            return Err(ClientError::BadResponse {
                tool: "publish_keys",
                detail: "expected {\"ok\": true}, got a different answer".into(),
            });
        }
        let mut tx = self.transaction()?;
        let (mut account, record) = self.load_account()?;
        account.mark_keys_as_published();
        let fallback_published_at = if sent_fallback {
            Some(self.clock.now())
        } else {
            record.fallback_published_at
        };
        tx.changes = Changes {
            identity: Some(IdentityRecord {
                account_pickle: olm::pickle_account(&account, &self.key),
                fallback_published_at,
            }),
            ..Changes::default()
        };
        tx.commit()?;
        self.published.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// Generates what is to be uploaded and saves it first. Keys left
    /// unpublished by a failed upload are uploaded again as they are.
    #[allow(clippy::type_complexity)]
    fn prepare_keys(
        &self,
        n: usize,
        rotate: bool,
    ) -> Result<(Vec<(String, String)>, Option<(String, String)>), ClientError> {
        let mut tx = self.transaction()?;
        let (mut account, record) = self.load_account()?;
        let mut changed = false;
        if n > 0 && account.one_time_keys().is_empty() {
            account.generate_one_time_keys(n);
            changed = true;
        }
        if (rotate || record.fallback_published_at.is_none()) && account.fallback_key().is_empty() {
            account.generate_fallback_key();
            changed = true;
        }
        if changed {
            tx.changes = Changes {
                identity: Some(IdentityRecord {
                    account_pickle: olm::pickle_account(&account, &self.key),
                    ..record
                }),
                ..Changes::default()
            };
            tx.commit()?;
        }
        let mut otks: Vec<_> = account
            .one_time_keys()
            .into_iter()
            .map(|(id, k)| (id.to_base64(), k.to_base64()))
            .collect();
        otks.sort();
        let fallback = account
            .fallback_key()
            .into_iter()
            .map(|(id, k)| (id.to_base64(), k.to_base64()))
            .next();
        Ok((otks, fallback))
    }

    /// Makes sure the relay knows us (a wiped or new relay heals itself).
    /// Checked once per client; `maintain` re-checks.
    pub async fn ensure_published(&self) -> Result<(), ClientError> {
        if self.published.load(Ordering::SeqCst) {
            return Ok(());
        }
        let counts: KeyCounts = self.call(Args::CountKeys).await?;
        if !counts.has_fallback || counts.unclaimed < self.config.min_otks {
            let n = if counts.unclaimed < self.config.min_otks {
                self.config.otk_batch
            } else {
                0
            };
            self.publish(n, !counts.has_fallback).await?;
        }
        self.published.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// Python retalk 0.3.0's `sync()` (`user.py`, `sync`): keys as in
    /// [`maintain`](Self::maintain), then, with `resend`, the outbox
    /// entries that are due. Unlike Python, which re-uploads every entry
    /// on each call (so n sends to a slow peer store n²/2 copies), a resend
    /// waits for the entry's backoff.
    pub async fn sync(&self, resend: bool) -> Result<SyncReport, ClientError> {
        let (unclaimed, replenished, fallback_rotated) = self.refresh_keys().await?;
        let resent = if resend {
            self.flush_due().await?.sent
        } else {
            0
        };
        Ok(SyncReport {
            unclaimed,
            republished: replenished || fallback_rotated,
            replenished,
            fallback_rotated,
            resent,
        })
    }

    /// Keeps relay-side keys healthy and the outbox moving; call it
    /// periodically (the CLI does once a minute).
    pub async fn maintain(&self) -> Result<MaintainReport, ClientError> {
        let (unclaimed, replenished, fallback_rotated) = self.refresh_keys().await?;
        let flush = self.flush_due().await?;
        self.prune()?;
        Ok(MaintainReport {
            unclaimed,
            replenished,
            fallback_rotated,
            flush,
        })
    }

    /// Counts our keys on the relay and publishes what is missing: one-time
    /// keys below `min_otks`, a fallback key the relay lacks or one older
    /// than `fallback_max_age`. Returns (unclaimed before, replenished,
    /// fallback rotated).
    async fn refresh_keys(&self) -> Result<(u64, bool, bool), ClientError> {
        let counts: KeyCounts = self.call(Args::CountKeys).await?;
        let record = self.store.identity()?.ok_or(ClientError::NoIdentity)?;
        let need_otks = counts.unclaimed < self.config.min_otks;
        let need_rotate = !counts.has_fallback
            || record
                .fallback_published_at
                .is_none_or(|at| self.clock.now() - at > self.config.fallback_max_age);
        if need_otks || need_rotate {
            self.publish(
                if need_otks { self.config.otk_batch } else { 0 },
                need_rotate,
            )
            .await?;
        }
        self.published.store(true, Ordering::SeqCst);
        Ok((counts.unclaimed, need_otks, need_rotate))
    }

    fn prune(&self) -> Result<(), ClientError> {
        let mut tx = self.transaction()?;
        tx.changes = Changes {
            processed_forget_before: Some(self.clock.now() - self.config.processed_retention),
            ..Changes::default()
        };
        tx.commit()?;
        Ok(())
    }
}
