//! The locked half of handling a message: decrypt, act on the envelope,
//! commit what it changed in one batch.

use vodozemac::olm::{OlmMessage, Session};
use vodozemac::Curve25519PublicKey;

use super::receive::Handled;
use super::unwedge::{repair_setting, REPAIR_RESEAL};
use super::{
    Client, ClientError, IdentityRecord, InboxRecord, IncomingRecord, OutboxEntry, OutboxKind,
    ProcessedRecord, SessionRecord, Store, StoreTransaction, Transport,
};
use crate::clock::Clock;
use crate::envelope::Envelope;
use crate::ids::UserId;
use crate::olm;

/// What the locked part of handling a message left to send: the ack, and
/// unacknowledged messages to re-encrypt for a peer that started over.
#[derive(Default)]
pub(super) struct Opened {
    pub(super) ack: Option<OutboxEntry>,
    pub(super) resend: Vec<OutboxEntry>,
    /// The body hash to refuse with a signed nack instead of an ack (a
    /// copy for a group this user left, as 0.3.0's `receive` does).
    pub(super) nack: Option<String>,
}

/// The processed marker of an envelope from a sender, beside the marker of
/// each ciphertext: re-encrypted copies of one envelope have different
/// ciphertexts but the same id.
fn envelope_marker(sender: &UserId, envelope_id: &str) -> String {
    format!("envelope/{sender}/{envelope_id}")
}

impl<S: Store, T: Transport, C: Clock> Client<S, T, C> {
    /// Whether `rec` is the session `id`. Sessions migrated from Python
    /// retalk 0.0.1 are stored without their id (it is inside the pickle),
    /// so those are opened to see.
    pub(super) fn is_session(&self, rec: &SessionRecord, id: &str) -> bool {
        rec.session_id == id
            || (rec.session_id.is_empty()
                && olm::unpickle_session(&rec.pickle, &self.key)
                    .is_ok_and(|s| s.session_id() == id))
    }

    /// The locked part of handling a message: decrypt, act on the envelope,
    /// commit everything it changed in one batch (`tx`, whose lock is
    /// held throughout). Returns the ack to send.
    #[allow(clippy::type_complexity)]
    pub(super) fn open_locked(
        &self,
        mut tx: StoreTransaction<'_, S>,
        record: &IncomingRecord,
        sender: &UserId,
        message: &OlmMessage,
        sender_key: Option<Curve25519PublicKey>,
    ) -> Result<Result<Opened, Handled>, ClientError> {
        // Another process sharing the identity may have handled it since
        // this one read the incoming table (without the lock).
        if !self.store.is_incoming(&record.hash)? {
            return Ok(Err(Handled::Done));
        }
        let now = self.clock.now();
        tx.changes.incoming_removed.push(record.hash.clone());

        // A copy of something already handled: re-ack it (our first ack may
        // have been lost), never surface it again.
        if let Some(done) = self.store.processed(&record.hash)? {
            if &done.peer != sender
                || done.envelope_id.is_empty()
                || self.store.sessions(sender)?.is_empty()
            {
                tx.commit()?;
                return Ok(Ok(Opened::default()));
            }
            let entry = self.seal(
                &mut tx,
                sender,
                &Envelope::Ack {
                    id: done.envelope_id,
                },
                OutboxKind::Ack,
            )?;
            tx.changes.outbox.push(entry.clone());
            tx.commit()?;
            return Ok(Ok(Opened {
                ack: Some(entry),
                ..Opened::default()
            }));
        }

        let mut sessions = self.store.sessions(sender)?;
        let mut peer_started_over = false;
        let mut account_changed = None;
        let mut opened: Option<(SessionRecord, Session, Vec<u8>)> = None;
        match message {
            OlmMessage::PreKey(pre) => {
                let wanted = pre.session_id();
                if let Some(pos) = sessions.iter().position(|s| self.is_session(s, &wanted)) {
                    let rec = sessions.remove(pos);
                    let mut session = olm::unpickle_session(&rec.pickle, &self.key)
                        .map_err(|_| ClientError::WrongSecret)?;
                    match session.decrypt(message) {
                        Ok(plain) => opened = Some((rec, session, plain)),
                        Err(e) => {
                            return Ok(Err(Handled::Unopenable(format!("could not decrypt: {e}"))))
                        }
                    }
                } else {
                    let Some(key) = sender_key else {
                        return Ok(Err(Handled::Transient));
                    };
                    let (mut account, identity) = self.load_account()?;
                    match account.create_inbound_session(olm::session_config(), key, pre) {
                        Ok(created) => {
                            // A peer that opens a new session although we
                            // already talked on another has lost its state
                            // (a restored backup, a repair of its own): what
                            // we sent on the old one may never open there.
                            peer_started_over = sessions.iter().any(|s| s.last_received > 0.0);
                            let rec = SessionRecord {
                                peer: sender.clone(),
                                session_id: created.session.session_id(),
                                pickle: String::new(),
                                last_received: now,
                                created: now,
                            };
                            account_changed = Some((account, identity));
                            opened = Some((rec, created.session, created.plaintext));
                        }
                        Err(e) => {
                            return Ok(Err(Handled::Unopenable(format!(
                                "could not start the session: {e}"
                            ))))
                        }
                    }
                }
            }
            OlmMessage::Normal(_) => {
                for (pos, rec) in sessions.iter().enumerate() {
                    let mut session = olm::unpickle_session(&rec.pickle, &self.key)
                        .map_err(|_| ClientError::WrongSecret)?;
                    if let Ok(plain) = session.decrypt(message) {
                        let rec = sessions.remove(pos);
                        opened = Some((rec, session, plain));
                        break;
                    }
                }
            }
        }
        let Some((mut rec, mut session, plaintext)) = opened else {
            return Ok(Err(Handled::Unopenable(
                "the message matches none of the stored sessions".into(),
            )));
        };
        rec.last_received = now;
        if rec.session_id.is_empty() {
            // Migrated from Python retalk 0.0.1, whose sessions table has
            // no id (it is inside the encrypted pickle): file it under it.
            tx.changes
                .sessions_removed
                .push((sender.clone(), String::new()));
            rec.session_id = session.session_id();
        }
        if let Some((account, identity)) = account_changed {
            tx.changes.identity = Some(IdentityRecord {
                account_pickle: olm::pickle_account(&account, &self.key),
                ..identity
            });
        }
        // Bound the sessions kept per peer (least recently used go).
        let keep = self.config.sessions_per_peer.saturating_sub(1);
        for old in sessions.iter().skip(keep) {
            tx.changes
                .sessions_removed
                .push((old.peer.clone(), old.session_id.clone()));
        }

        let mut problem = None;
        let mut ack = None;
        let mut refuse = false;
        let envelope_id;
        match Envelope::decode(&plaintext) {
            Err(e) => {
                envelope_id = String::new();
                problem = Some(e.to_string());
            }
            Ok(Envelope::Ack { id }) => {
                if let Some(acked) = self.store.outbox_entry(&id)? {
                    if &acked.peer == sender && acked.kind == OutboxKind::Message {
                        // The peer read a later message of ours: it read
                        // mail in order, so an older unacknowledged one
                        // most likely never reached it, and its ratchet
                        // position may be one the peer can no longer open.
                        // (The outbox lists oldest first.) One whose last
                        // upload was accepted is on the relay, perhaps
                        // behind the acked one (a resend), and will be
                        // read: re-encrypting it would deliver it twice to
                        // a receiver that dedupes by ciphertext (Python).
                        let older = self
                            .unacknowledged(&tx, sender, now)?
                            .into_iter()
                            .take_while(|e| e.key != acked.key)
                            .filter(|e| e.last_error.is_some());
                        tx.changes.outbox.extend(older);
                        tx.changes.outbox_removed.push(acked.key);
                    }
                }
                // Acks are not acked: the marker keeps no envelope id, so a
                // copy of this ack is dropped rather than answered.
                envelope_id = String::new();
            }
            Ok(envelope) => {
                envelope_id = envelope.id().unwrap_or_default().to_owned();
                // A re-encrypted copy of an envelope already handled (its
                // sender re-sealed it after a failed upload): ack, never
                // surface twice.
                let marker = envelope_marker(sender, &envelope_id);
                let seen = !envelope_id.is_empty() && self.store.processed(&marker)?.is_some();
                if !envelope_id.is_empty() && !seen {
                    tx.changes.processed.push(ProcessedRecord {
                        hash: marker,
                        envelope_id: envelope_id.clone(),
                        peer: sender.clone(),
                        at: now,
                    });
                }
                // The record every kind starts from: who sent which
                // envelope in which ciphertext, and when it arrived.
                let arrived = |id: String| InboxRecord {
                    hash: record.hash.clone(),
                    envelope_id: id,
                    from: sender.clone(),
                    claimed_name: String::new(),
                    text: String::new(),
                    received_at: now,
                    extra: None,
                };
                match envelope {
                    _ if seen => {}
                    Envelope::Msg {
                        id,
                        text,
                        name,
                        group,
                        mid,
                    } => {
                        let rec = InboxRecord {
                            claimed_name: name,
                            text,
                            ..arrived(id)
                        };
                        match group {
                            None => tx.changes.inbox.push(rec),
                            // Group copies: the roster rule (client/group.rs).
                            Some(g) => match self.file_group_copy(
                                &mut tx,
                                sender,
                                &g,
                                mid.as_deref(),
                                &rec,
                            )? {
                                // Left here: refused with a nack, never shown.
                                None => refuse = true,
                                Some((extra, event)) => {
                                    tx.changes.inbox.extend(event);
                                    tx.changes.inbox.push(InboxRecord {
                                        extra: Some(extra).filter(|e| !e.is_empty()),
                                        ..rec
                                    });
                                }
                            },
                        }
                    }
                    // A shared card (0.3.0 `retalk share`): a record of
                    // kind `contact` carrying the card, for the
                    // application to show and stage (`received_contacts`).
                    Envelope::Contact { id, name, card } => {
                        let card: serde_json::Value =
                            serde_json::from_str(&card).unwrap_or_default();
                        tx.changes.inbox.push(InboxRecord {
                            claimed_name: name,
                            extra: Some(
                                serde_json::json!({"kind": "contact", "card": card}).to_string(),
                            ),
                            ..arrived(id)
                        })
                    }
                    Envelope::GroupLeave { id, group_id, .. } => {
                        let rec = self.file_group_leave(&mut tx, sender, &group_id, arrived(id))?;
                        tx.changes.inbox.push(rec);
                    }
                    Envelope::ContactRequest { id, code, card } => {
                        // Judged against our invite codes (client/invite.rs).
                        let shown =
                            self.file_contact_request(&mut tx, sender, &code, &card, arrived(id))?;
                        tx.changes.inbox.extend(shown);
                    }
                    Envelope::Other { kind, .. } => {
                        problem = Some(format!("ignored a '{kind}' envelope (not supported here)"))
                    }
                    Envelope::Ack { .. } => {}
                }
                if !envelope_id.is_empty() && !refuse {
                    // The session that just decrypted is the send session.
                    let entry = self.encrypt_entry(
                        &mut session,
                        sender,
                        &Envelope::Ack {
                            id: envelope_id.clone(),
                        },
                        OutboxKind::Ack,
                    )?;
                    tx.changes.outbox.push(entry.clone());
                    ack = Some(entry);
                }
            }
        }
        // Decrypted content rests sealed until the application takes it.
        tx.changes.inbox = std::mem::take(&mut tx.changes.inbox)
            .into_iter()
            .map(|r| super::inbox::seal_record(&self.key, r))
            .collect();
        rec.pickle = olm::pickle_session(&session, &self.key);
        tx.changes.sessions.push(rec);
        tx.changes.processed.push(ProcessedRecord {
            hash: record.hash.clone(),
            // No envelope id: a resent copy of a refused one is not re-acked.
            envelope_id: if refuse { String::new() } else { envelope_id },
            peer: sender.clone(),
            at: now,
        });
        // At most once per `unwedge_every`: a peer that opens session after
        // session must not make us resend everything for each.
        let resend = if peer_started_over
            && !self.repaired_recently(tx.store(), sender, now, REPAIR_RESEAL)?
        {
            let resend = self.unacknowledged(&tx, sender, now)?;
            tx.changes.outbox.extend(resend.iter().cloned());
            tx.changes
                .settings
                .push((repair_setting(REPAIR_RESEAL, sender), now.to_string()));
            resend
        } else {
            Vec::new()
        };
        tx.commit()?;
        match problem {
            // Handled and committed; reported, and the incoming row is gone.
            Some(reason) => Ok(Err(Handled::Failed(reason))),
            None => Ok(Ok(Opened {
                ack,
                resend,
                nack: refuse.then(|| record.hash.clone()),
            })),
        }
    }
}
