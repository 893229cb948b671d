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

/// Largest envelope (the JSON inside the ciphertext, bytes) a message may
/// have: after Olm framing (a pre-key message adds about 200 bytes),
/// base64 (4/3) and the signed request around it (under 1 KiB), it still
/// fits the relays' 1 MiB limits on a request and on a message body
/// (Python relay `MAX_BODY`; our `--max-body` and `max_message_bytes`).
pub const MAX_ENVELOPE_BYTES: usize = 760 * 1024;

/// The setting that asks for a fresh session to `peer` on the next send
/// (non-empty: asked, by a verified refusal).
pub(super) fn fresh_session_setting(peer: &UserId) -> String {
    format!("fresh_session/{peer}")
}

fn wants_fresh_session<S: Store + ?Sized>(store: &S, peer: &UserId) -> Result<bool, ClientError> {
    Ok(store
        .setting(&fresh_session_setting(peer))?
        .is_some_and(|v| !v.is_empty()))
}

/// A sent message.
#[derive(Debug, Clone, PartialEq)]
pub struct SendReceipt {
    pub id: String,
    pub delivery: Delivery,
}

impl<S: Store, T: Transport, C: Clock> Client<S, T, C> {
    /// Encrypts and sends a message. It stays in the outbox until the peer
    /// acks it. If the relay cannot take it now, the error says so and the
    /// message is resent later: even when the relay is away before a
    /// session exists, the message is kept (sealed under the identity's
    /// key) and encrypted by the first attempt that reaches the relay.
    ///
    /// Errors before anything is kept: [`ClientError::ToSelf`],
    /// [`ClientError::TooLarge`], a relay refusing us (not transient), a
    /// `PIN MISMATCH`.
    pub async fn send(&self, to: &UserId, text: &str) -> Result<SendReceipt, ClientError> {
        let envelope = Envelope::msg(new_message_id(), text, &self.name()?);
        self.send_envelope(to, envelope).await
    }

    /// Shares a contact card with `to` (0.3.0's `share`: a `contact`
    /// envelope, kept and resent like a message until acked). `card` is a
    /// Contact object as JSON text (`fingerprint`, `name`, `identity_key`,
    /// `signing_key`, `verified`, in that order as Python writes it).
    pub async fn share(&self, to: &UserId, card: String) -> Result<SendReceipt, ClientError> {
        let envelope = Envelope::Contact {
            id: new_message_id(),
            name: self.name()?,
            card,
        };
        self.send_envelope(to, envelope).await
    }

    pub(super) async fn send_envelope(
        &self,
        to: &UserId,
        envelope: Envelope,
    ) -> Result<SendReceipt, ClientError> {
        if to == self.user_id() {
            return Err(ClientError::ToSelf);
        }
        let bytes = envelope.encode().len();
        if bytes > MAX_ENVELOPE_BYTES {
            return Err(ClientError::TooLarge {
                bytes,
                max: MAX_ENVELOPE_BYTES,
            });
        }
        // The relay being away must not cost the message: only a refusal
        // (or a forged key) stops it before it is kept.
        let reached = match self.ensure_published().await {
            Ok(()) => self.ensure_session(to).await,
            Err(e) => Err(e),
        };
        let entry = match reached {
            Ok(()) => {
                let mut tx = self.transaction()?;
                let entry = self.seal(&mut tx, to, &envelope, OutboxKind::Message)?;
                tx.changes.outbox.push(entry.clone());
                tx.commit()?;
                entry
            }
            Err(e) if e.is_transient() => {
                let id = self.keep_unsealed(to, &envelope)?;
                return Err(ClientError::NotDelivered {
                    id,
                    source: Box::new(e),
                });
            }
            Err(e) => return Err(e),
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

    /// Keeps a message whose session cannot be started now (the relay is
    /// away): an outbox entry with the envelope sealed at rest and no
    /// ciphertext yet, marked to be encrypted by its first attempt.
    fn keep_unsealed(&self, to: &UserId, envelope: &Envelope) -> Result<String, ClientError> {
        let id = envelope.id().unwrap_or_default().to_owned();
        let now = self.clock.now();
        let mut tx = self.transaction()?;
        tx.changes.outbox.push(OutboxEntry {
            key: id.clone(),
            envelope_id: id.clone(),
            peer: to.clone(),
            kind: OutboxKind::Message,
            mtype: 0,
            body: String::new(),
            created: now,
            next_attempt: now,
            attempts: 0,
            last_error: None,
            envelope: Some(self.key.seal(&envelope.encode())),
            reencrypt: true,
        });
        tx.commit()?;
        Ok(id)
    }

    /// Claims a key and starts an outbound session when there is none.
    pub(super) async fn ensure_session(&self, peer: &UserId) -> Result<(), ClientError> {
        let needed = |store: &S| -> Result<bool, ClientError> {
            Ok(store.sessions(peer)?.is_empty() || wants_fresh_session(store, peer)?)
        };
        if !needed(&self.store)? {
            return Ok(());
        }
        let (identity_key, one_time_key) = self.claim_peer_key(peer).await?;
        let mut tx = self.transaction()?;
        if !needed(tx.store())? {
            return Ok(()); // another task or process got there first
        }
        let session = self.outbound_session(peer, identity_key, one_time_key)?;
        let preferred = !tx.store().sessions(peer)?.is_empty();
        tx.changes
            .sessions
            .push(self.session_record(peer, &session, preferred));
        tx.changes
            .settings
            .push((fresh_session_setting(peer), String::new()));
        tx.commit()?;
        Ok(())
    }

    /// A new outbound session to `peer` on its claimed keys.
    pub(super) fn outbound_session(
        &self,
        peer: &UserId,
        identity_key: Curve25519PublicKey,
        one_time_key: Curve25519PublicKey,
    ) -> Result<Session, ClientError> {
        let (account, _) = self.load_account()?;
        account
            .create_outbound_session(olm::session_config(), identity_key, one_time_key)
            .map_err(|e| ClientError::Session {
                peer: peer.clone(),
                detail: e.to_string(),
            })
    }

    /// The record of a session we just started. `preferred`: beside
    /// sessions we keep with the peer, it must be the send session, which
    /// is the one that most recently received (see `Store::sessions`), so
    /// it counts as having received now.
    pub(super) fn session_record(
        &self,
        peer: &UserId,
        session: &Session,
        preferred: bool,
    ) -> SessionRecord {
        let now = self.clock.now();
        SessionRecord {
            peer: peer.clone(),
            session_id: session.session_id(),
            pickle: olm::pickle_session(session, &self.key),
            last_received: if preferred { now } else { 0.0 },
            created: now,
        }
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
