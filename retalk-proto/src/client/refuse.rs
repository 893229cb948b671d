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

/// The setting that holds the block list: user ids, sorted, joined by `,`.
const BLOCKED: &str = "blocked";

/// The blocked senders, sorted.
pub fn blocked<S: Store + ?Sized>(store: &S) -> Result<Vec<UserId>, ClientError> {
    Ok(store
        .setting(BLOCKED)?
        .unwrap_or_default()
        .split(',')
        .filter_map(|s| UserId::parse(s).ok())
        .collect())
}

/// Adds (`on`) or removes `peer` from the block list (local only, no
/// secret needed). Returns whether the list changed.
pub fn set_blocked<S: Store + ?Sized>(
    store: &S,
    peer: &UserId,
    on: bool,
) -> Result<bool, ClientError> {
    let mut tx = StoreTransaction::new(store)?;
    let mut list = blocked(store)?;
    let had = list.contains(peer);
    if had == on {
        return Ok(false);
    }
    if on {
        list.push(peer.clone());
        list.sort();
    } else {
        list.retain(|p| p != peer);
    }
    let text = list
        .iter()
        .map(UserId::as_str)
        .collect::<Vec<_>>()
        .join(",");
    tx.changes.settings.push((BLOCKED.into(), text));
    tx.commit()?;
    Ok(true)
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
        Ok(self.peers_only && !self.store.contacts()?.iter().any(|c| &c.id == sender))
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
