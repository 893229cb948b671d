//! Sending: sessions to peers, encrypting envelopes into the outbox.

use vodozemac::olm::Session;
use vodozemac::Curve25519PublicKey;

use super::{
    Client, ClientError, Delivery, OutboxEntry, OutboxKind, SessionRecord, Store, StoreTransaction,
    Transport,
};
use crate::clock::Clock;
use crate::envelope::Envelope;
use crate::ids::{new_message_id, sha256_hex, UserId};
use crate::olm;
use crate::wire::{Args, ClaimedKey, PublicKeys};

/// A sent message.
#[derive(Debug, Clone, PartialEq)]
pub struct SendReceipt {
    pub id: String,
    pub delivery: Delivery,
}

impl<S: Store, T: Transport, C: Clock> Client<S, T, C> {
    /// Encrypts and sends a message. It stays in the outbox until the peer
    /// acks it. If the relay cannot take it now, the error says so and the
    /// message is resent later.
    pub async fn send(&self, to: &UserId, text: &str) -> Result<SendReceipt, ClientError> {
        self.ensure_published().await?;
        self.ensure_session(to).await?;
        let envelope = Envelope::msg(new_message_id(), text, &self.name()?);
        let entry = {
            let mut tx = self.transaction()?;
            let entry = self.seal(&mut tx, to, &envelope, OutboxKind::Message)?;
            tx.changes.outbox.push(entry.clone());
            tx.commit()?;
            entry
        };
        let id = entry.envelope_id.clone();
        match self.deliver(&entry).await {
            Ok(delivery) => Ok(SendReceipt { id, delivery }),
            Err(e @ ClientError::Relay { .. }) if !e.is_transient() => {
                Err(ClientError::RefusedByRelay {
                    id,
                    source: Box::new(e),
                })
            }
            Err(e) => Err(ClientError::NotDelivered {
                id,
                source: Box::new(e),
            }),
        }
    }

    /// Claims a key and starts an outbound session when there is none.
    async fn ensure_session(&self, peer: &UserId) -> Result<(), ClientError> {
        if !self.store.sessions(peer)?.is_empty() {
            return Ok(());
        }
        let (identity_key, one_time_key) = self.claim_peer_key(peer).await?;
        let mut tx = self.transaction()?;
        if !tx.store().sessions(peer)?.is_empty() {
            return Ok(()); // another task or process got there first
        }
        let (account, _) = self.load_account()?;
        let session = account
            .create_outbound_session(olm::session_config(), identity_key, one_time_key)
            .map_err(|e| ClientError::Session {
                peer: peer.clone(),
                detail: e.to_string(),
            })?;
        let now = self.clock.now();
        let record = SessionRecord {
            peer: peer.clone(),
            session_id: session.session_id(),
            pickle: olm::pickle_session(&session, &self.key),
            last_received: 0.0,
            created: now,
        };
        tx.changes.sessions.push(record);
        tx.commit()?;
        Ok(())
    }

    /// Claims one of the peer's one-time keys (or its fallback key) and
    /// checks the keys against the peer's id and pin: the identity key and
    /// the one-time key for an outbound session.
    pub(super) async fn claim_peer_key(
        &self,
        peer: &UserId,
    ) -> Result<(Curve25519PublicKey, Curve25519PublicKey), ClientError> {
        let claimed: ClaimedKey = self
            .call(Args::ClaimKey {
                peer: peer.to_string(),
            })
            .await?;
        self.verify_peer_keys(
            peer,
            &PublicKeys {
                identity_key: claimed.identity_key.clone(),
                signing_key: claimed.signing_key.clone(),
            },
        )?;
        let bad = |what: &str| ClientError::Session {
            peer: peer.clone(),
            detail: format!("the relay served an invalid {what}"),
        };
        let identity_key = Curve25519PublicKey::from_base64(&claimed.identity_key)
            .map_err(|_| bad("identity key"))?;
        let one_time_key = Curve25519PublicKey::from_base64(&claimed.one_time_key)
            .map_err(|_| bad("one-time key"))?;
        Ok((identity_key, one_time_key))
    }

    /// Encrypts an envelope on the peer's send session, which `tx` is to
    /// save advanced; returns the outbox entry for the caller to file in
    /// the same batch (a ratchet step and its ciphertext commit together).
    pub(super) fn seal(
        &self,
        tx: &mut StoreTransaction<'_, S>,
        peer: &UserId,
        envelope: &Envelope,
        kind: OutboxKind,
    ) -> Result<OutboxEntry, ClientError> {
        let mut record = tx
            .store()
            .sessions(peer)?
            .into_iter()
            .next()
            .ok_or_else(|| ClientError::Session {
                peer: peer.clone(),
                detail: "no session".into(),
            })?;
        let mut session = olm::unpickle_session(&record.pickle, &self.key)
            .map_err(|_| ClientError::WrongSecret)?;
        let entry = self.encrypt_entry(&mut session, peer, envelope, kind)?;
        record.pickle = olm::pickle_session(&session, &self.key);
        tx.changes.sessions.push(record);
        Ok(entry)
    }

    pub(super) fn encrypt_entry(
        &self,
        session: &mut Session,
        peer: &UserId,
        envelope: &Envelope,
        kind: OutboxKind,
    ) -> Result<OutboxEntry, ClientError> {
        let message = session
            .encrypt(envelope.encode())
            .map_err(|e| ClientError::Session {
                peer: peer.clone(),
                detail: e.to_string(),
            })?;
        let (mtype, body) = olm::encode_message(&message);
        let envelope_id = envelope.id().unwrap_or_default().to_owned();
        let now = self.clock.now();
        let key = match kind {
            OutboxKind::Message => envelope_id.clone(),
            OutboxKind::Ack => format!("ack/{peer}/{envelope_id}/{}", sha256_hex(&body)),
        };
        Ok(OutboxEntry {
            key,
            envelope_id,
            peer: peer.clone(),
            kind,
            mtype,
            body,
            created: now,
            next_attempt: now,
            attempts: 0,
            last_error: None,
            envelope: Some(self.key.seal(&envelope.encode())),
            reencrypt: false,
        })
    }

    /// Re-encrypts an entry that never reached the relay on the peer's
    /// current send session, so a retry never carries a ciphertext from a
    /// ratchet chain the peer has moved past; `tx` is to save it.
    pub(super) fn reseal(
        &self,
        tx: &mut StoreTransaction<'_, S>,
        current: OutboxEntry,
    ) -> Result<OutboxEntry, ClientError> {
        let Some(sealed) = &current.envelope else {
            return Ok(current);
        };
        let Ok(envelope) = self.key.open(sealed).map(|plain| Envelope::decode(&plain)) else {
            return Ok(current);
        };
        let Ok(envelope) = envelope else {
            return Ok(current);
        };
        if tx.store().sessions(&current.peer)?.is_empty() {
            return Ok(current);
        }
        let fresh = self.seal(tx, &current.peer, &envelope, current.kind)?;
        let entry = OutboxEntry {
            mtype: fresh.mtype,
            body: fresh.body,
            envelope: fresh.envelope,
            reencrypt: false,
            ..current
        };
        tx.changes.outbox.push(entry.clone());
        Ok(entry)
    }
}
