//! Refusing mail before any crypto: the block list and the peers-only
//! policy. As Python retalk 0.3.0 does (`user.py`, `receive`: "Drop blocked
//! or (in peers-only mode) unknown senders BEFORE any decryption or session
//! work"), a refused sender never makes us open a session or spend a
//! one-time key, and gets a signed `nack` for the ciphertext, so the relay
//! refuses its resends and its client drops the message.

use super::{Client, ClientError, Store, StoreTransaction, Transport};
use crate::clock::Clock;
use crate::ids::UserId;
use crate::wire::{nack_text, Args};

/// Where block lists were kept before the store had a `blocked` table: user
/// ids, sorted, joined by `,`. Read as part of the list until the next
/// change moves them into the table (the SQLite store moves them when it
/// upgrades its schema).
const LEGACY_BLOCKED: &str = "blocked";

fn legacy_blocked<S: Store + ?Sized>(store: &S) -> Result<Vec<UserId>, ClientError> {
    Ok(store
        .setting(LEGACY_BLOCKED)?
        .unwrap_or_default()
        .split(',')
        .filter_map(|s| UserId::parse(s).ok())
        .collect())
}

/// The blocked senders, sorted (0.3.0's `blocked` table, `cli.py`
/// `_blocked_set`).
pub fn blocked<S: Store + ?Sized>(store: &S) -> Result<Vec<UserId>, ClientError> {
    let mut list = store.blocked()?;
    list.extend(legacy_blocked(store)?);
    list.sort();
    list.dedup();
    Ok(list)
}

/// Adds (`on`) or removes `peer` from the block list (local only, no
/// secret needed). Returns whether the list changed.
pub fn set_blocked<S: Store + ?Sized>(
    store: &S,
    peer: &UserId,
    on: bool,
) -> Result<bool, ClientError> {
    let mut tx = StoreTransaction::new(store)?;
    let legacy = legacy_blocked(store)?;
    let had = blocked(store)?.contains(peer);
    if !legacy.is_empty() {
        tx.changes.blocked = legacy;
        tx.changes
            .settings
            .push((LEGACY_BLOCKED.into(), String::new()));
    }
    if had != on {
        if on {
            tx.changes.blocked.push(peer.clone());
        } else {
            tx.changes.blocked.retain(|p| p != peer);
            tx.changes.blocked_removed.push(peer.clone());
        }
    }
    tx.commit()?;
    Ok(had != on)
}

impl<S: Store, T: Transport, C: Clock> Client<S, T, C> {
    /// Refuses mail from senders that are not saved contacts (0.3.0's
    /// `receive --peers-only`), on top of the block list.
    pub fn with_peers_only(mut self, on: bool) -> Self {
        self.peers_only = on;
        self
    }

    /// Whether mail from `sender` is refused unopened.
    pub(super) fn refuses(&self, sender: &UserId) -> Result<bool, ClientError> {
        if blocked(&self.store)?.contains(sender) {
            return Ok(true);
        }
        Ok(self.peers_only && !self.contacts()?.iter().any(|c| &c.id == sender))
    }

    /// Signs and sends a `nack` for the ciphertext whose body hashes to
    /// `hash`: `sig` is our Ed25519 signature over `nack|<our id>|<hash>`
    /// (PROTOCOL section 5, `nack`).
    pub(super) async fn nack(&self, hash: &str) -> Result<(), ClientError> {
        let text = nack_text(self.user_id.as_str(), hash);
        let sig = self.signer.sign(text.as_bytes()).to_base64();
        self.call::<serde_json::Value>(Args::Nack {
            hash: hash.to_owned(),
            sig,
        })
        .await
        .map(|_| ())
    }
}
