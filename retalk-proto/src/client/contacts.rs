//! Saved peers: finding one by what a person typed, saving one, and
//! checking the keys a relay serves for one.

use super::{Client, ClientError, Contact, Store, StoreTransaction, Transport};
use crate::clock::Clock;
use crate::ids::{fingerprint, UserId};
use crate::wire::PublicKeys;

/// The contacts an identity sees: `global` (kept outside its store, such
/// as the user's owner-wide list) overlaid with its `own`; an own entry
/// hides a global one with the same id or the same name (0.3.0 `cli.py`
/// `_effective_peers`). Sorted by name.
pub fn overlay(global: Vec<Contact>, own: Vec<Contact>) -> Vec<Contact> {
    let mut out: Vec<Contact> = global
        .into_iter()
        .filter(|g| !own.iter().any(|o| o.id == g.id || o.name == g.name))
        .collect();
    out.extend(own);
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// The peer a person means by `reference`: a saved name, else a 32-hex
/// user id (saved or not). A name cannot look like an id (`add` refuses
/// such names), so the two never compete. Rule of both generations
/// (0.0.1 `peer_to_id`, 0.3.0 `cli.py` `_resolve_peer`).
pub fn find_peer<S: Store + ?Sized>(store: &S, reference: &str) -> Result<UserId, ClientError> {
    if let Some(c) = store.contacts()?.into_iter().find(|c| c.name == reference) {
        return Ok(c.id);
    }
    UserId::parse(reference).map_err(|_| ClientError::UnknownPeer(reference.to_owned()))
}

/// Records both keys of the saved contact `peer` after checking that
/// `keys` hash to its id (0.3.0's `verify`, `cli.py` `_record_keys`: a
/// contact is verified once its keys were checked against its id).
/// Errors: [`ClientError::UnknownPeer`] when `peer` is not saved,
/// [`ClientError::PinMismatch`] when the keys hash to another id.
pub fn pin_contact<S: Store + ?Sized>(
    store: &S,
    peer: &UserId,
    keys: &PublicKeys,
) -> Result<(), ClientError> {
    if !peer.matches_keys(&keys.identity_key, &keys.signing_key) {
        return Err(ClientError::PinMismatch {
            peer: peer.clone(),
            detail: format!(
                "the keys hash to '{}'",
                fingerprint(&keys.identity_key, &keys.signing_key)
            ),
        });
    }
    let mut tx = StoreTransaction::new(store)?;
    let saved: Vec<Contact> = store
        .contacts()?
        .into_iter()
        .filter(|c| &c.id == peer)
        .collect();
    if saved.is_empty() {
        return Err(ClientError::UnknownPeer(peer.to_string()));
    }
    tx.changes.contacts = saved
        .into_iter()
        .map(|c| Contact {
            pin: Some(keys.identity_key.clone()),
            signing_key: Some(keys.signing_key.clone()),
            ..c
        })
        .collect();
    tx.commit()?;
    Ok(())
}

impl<S: Store, T: Transport, C: Clock> Client<S, T, C> {
    /// Fetches the saved contact `peer`'s keys from the relay and pins them
    /// ([`pin_contact`]); a relay serving keys of another id is refused.
    pub async fn verify_contact(&self, peer: &UserId) -> Result<PublicKeys, ClientError> {
        let keys = self.fetch_keys(peer).await?;
        pin_contact(&self.store, peer, &keys)?;
        Ok(keys)
    }

    /// Fetches `peer`'s keys from the relay and checks that they hash to
    /// its id, recording nothing (for a contact kept elsewhere, such as
    /// the owner-wide list). Errors: [`ClientError::PinMismatch`], the
    /// relay's.
    pub async fn fetch_keys(&self, peer: &UserId) -> Result<PublicKeys, ClientError> {
        let keys: PublicKeys = self
            .call(crate::wire::Args::GetKeys {
                peer: peer.to_string(),
            })
            .await?;
        if !peer.matches_keys(&keys.identity_key, &keys.signing_key) {
            return Err(ClientError::PinMismatch {
                peer: peer.clone(),
                detail: format!(
                    "the relay served keys hashing to '{}'",
                    fingerprint(&keys.identity_key, &keys.signing_key)
                ),
            });
        }
        Ok(keys)
    }

    /// Saves a peer under a local name (and an optional identity-key pin).
    pub fn add_contact(
        &self,
        name: &str,
        id: UserId,
        pin: Option<String>,
    ) -> Result<(), ClientError> {
        let mut tx = self.transaction()?;
        tx.changes.contacts.push(Contact {
            name: name.into(),
            id,
            pin,
            signing_key: None,
        });
        tx.commit()?;
        Ok(())
    }

    /// The peer `reference` names among [`contacts`](Self::contacts): a
    /// saved name, else a user id.
    pub fn find_peer(&self, reference: &str) -> Result<UserId, ClientError> {
        if let Some(c) = self.contacts()?.into_iter().find(|c| c.name == reference) {
            return Ok(c.id);
        }
        UserId::parse(reference).map_err(|_| ClientError::UnknownPeer(reference.to_owned()))
    }

    /// Adds contacts kept outside the store (the user's owner-wide list):
    /// they name senders, count as known for peers-only, and their pins
    /// are checked, unless the store's own contacts hide them
    /// ([`overlay`]).
    pub fn with_global_contacts(mut self, contacts: Vec<Contact>) -> Self {
        self.global_contacts = contacts;
        self
    }

    /// The contacts this client sees: the global ones overlaid with the
    /// store's own.
    pub fn contacts(&self) -> Result<Vec<Contact>, ClientError> {
        Ok(overlay(
            self.global_contacts.clone(),
            self.store.contacts()?,
        ))
    }

    /// Refuses keys that do not hash to the peer's id or contradict a pin.
    pub(super) fn verify_peer_keys(
        &self,
        peer: &UserId,
        keys: &PublicKeys,
    ) -> Result<(), ClientError> {
        if !peer.matches_keys(&keys.identity_key, &keys.signing_key) {
            return Err(ClientError::PinMismatch {
                peer: peer.clone(),
                detail: format!(
                    "server served keys whose fingerprint is '{}'",
                    fingerprint(&keys.identity_key, &keys.signing_key)
                ),
            });
        }
        let contacts = self.contacts()?;
        if let Some(pin) = contacts
            .iter()
            .filter(|c| &c.id == peer)
            .find_map(|c| c.pin.as_ref())
        {
            if *pin != keys.identity_key {
                return Err(ClientError::PinMismatch {
                    peer: peer.clone(),
                    detail: format!(
                        "server served identity key '{}' but the pinned key is '{pin}'",
                        keys.identity_key
                    ),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(name: &str, n: u8) -> Contact {
        Contact {
            name: name.into(),
            id: UserId::parse(&format!("{n:032x}")).unwrap(),
            pin: None,
            signing_key: None,
        }
    }

    #[test]
    fn own_entries_hide_global_ones_by_id_or_name() {
        let got = overlay(
            vec![c("ann", 1), c("bob", 2), c("cy", 3)],
            vec![c("ann-own", 1), c("bob", 9)],
        );
        assert_eq!(got, vec![c("ann-own", 1), c("bob", 9), c("cy", 3)]);
    }
}
