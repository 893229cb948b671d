//! Saved peers: finding one by what a person typed, saving one, and
//! checking the keys a relay serves for one.

use super::{Client, ClientError, Contact, Store, Transport};
use crate::clock::Clock;
use crate::ids::{fingerprint, UserId};
use crate::wire::PublicKeys;

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

impl<S: Store, T: Transport, C: Clock> Client<S, T, C> {
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
        });
        tx.commit()?;
        Ok(())
    }

    /// The peer `reference` names (see [`find_peer`]).
    pub fn find_peer(&self, reference: &str) -> Result<UserId, ClientError> {
        find_peer(&self.store, reference)
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
        let contacts = self.store.contacts()?;
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
