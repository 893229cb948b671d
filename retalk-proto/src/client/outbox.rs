//! The outbox: handing entries to the relay, refusals, backoff, resends.

use vodozemac::{Ed25519PublicKey, Ed25519Signature};

use super::send::fresh_session_setting;
use super::{Client, ClientError, OutboxEntry, OutboxKind, Store, Transport};
use crate::clock::Clock;
use crate::ids::sha256_hex;
use crate::wire::{nack_text, Args, PublicKeys, SendResult};

/// What a flush of the outbox did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FlushReport {
    /// Entries the relay accepted.
    pub sent: usize,
    /// Entries that failed this time (kept, backing off).
    pub failed: usize,
    /// Messages the recipient refused with a verified nack (dropped).
    pub refused: usize,
    /// Messages given up after `outbox_max_age` without an ack.
    pub expired: Vec<OutboxEntry>,
}

/// How a message left.
#[derive(Debug, Clone, PartialEq)]
pub enum Delivery {
    /// The relay queued it.
    Queued { message_id: i64 },
    /// The recipient refused it (verified nack); it was dropped.
    Refused,
}

impl<S: Store, T: Transport, C: Clock> Client<S, T, C> {
    /// Hands one outbox entry to the relay and records the outcome.
    pub(super) async fn deliver(&self, entry: &OutboxEntry) -> Result<Delivery, ClientError> {
        // A ciphertext the relay certainly does not hold, or whose ratchet
        // position the peer has moved past, is re-encrypted on the current
        // session (see `OutboxEntry::reencrypt`); one that may be queued is
        // resent byte-identical (so every receiver recognises the copy),
        // except every `reseal_every`-th unacknowledged resend, in case the
        // relay lost it and the peer can no longer decrypt it.
        // A message kept while no session could be started gets one now.
        if entry.reencrypt
            && entry.envelope.is_some()
            && self.store.sessions(&entry.peer)?.is_empty()
        {
            if let Err(e) = self.ensure_session(&entry.peer).await {
                let outcome = Err(e);
                self.record_attempt(entry, &outcome)?;
                return outcome;
            }
        }
        let periodic = entry.attempts > 0
            && entry
                .attempts
                .is_multiple_of(self.config.reseal_every.max(1));
        let resealed;
        let entry = if entry.envelope.is_some() && (entry.reencrypt || periodic) {
            let mut tx = self.transaction()?;
            match tx.store().outbox_entry(&entry.key)? {
                Some(current) => {
                    resealed = self.reseal(&mut tx, current)?;
                    tx.commit()?;
                    &resealed
                }
                None => return Ok(Delivery::Queued { message_id: 0 }), // acked meanwhile
            }
        } else {
            entry
        };
        let args = Args::SendMessage {
            to: entry.peer.to_string(),
            mtype: entry.mtype,
            body: entry.body.clone(),
        };
        let outcome: Result<SendResult, ClientError> = self.call(args).await;
        let outcome = match outcome {
            Ok(SendResult::Refused { sig, .. }) => match self.verify_refusal(entry, &sig).await {
                Ok(true) => Ok(Delivery::Refused),
                Ok(false) => Err(ClientError::BadResponse {
                    tool: "send_message",
                    detail: "refusal with an invalid signature".into(),
                }),
                Err(e) => Err(e),
            },
            Ok(SendResult::Stored { message_id, .. }) => Ok(Delivery::Queued { message_id }),
            Err(e) => Err(e),
        };
        self.record_attempt(entry, &outcome)?;
        outcome
    }

    /// A refusal counts only when signed by the recipient: the relay cannot
    /// make us drop a message by claiming one.
    async fn verify_refusal(&self, entry: &OutboxEntry, sig: &str) -> Result<bool, ClientError> {
        let keys: PublicKeys = self
            .call(Args::GetKeys {
                peer: entry.peer.to_string(),
            })
            .await?;
        if self.verify_peer_keys(&entry.peer, &keys).is_err() {
            return Ok(false);
        }
        let (Ok(key), Ok(sig)) = (
            Ed25519PublicKey::from_base64(&keys.signing_key),
            Ed25519Signature::from_base64(sig),
        ) else {
            return Ok(false);
        };
        Ok(key
            .verify(
                nack_text(entry.peer.as_str(), &sha256_hex(&entry.body)).as_bytes(),
                &sig,
            )
            .is_ok())
    }

    fn record_attempt(
        &self,
        entry: &OutboxEntry,
        outcome: &Result<Delivery, ClientError>,
    ) -> Result<(), ClientError> {
        let mut tx = self.transaction()?;
        let Some(mut current) = tx.store().outbox_entry(&entry.key)? else {
            return Ok(()); // acked meanwhile
        };
        let now = self.clock.now();
        match outcome {
            Ok(Delivery::Refused) => {
                // The peer refused our ciphertext (verified): drop it, and
                // send the next message on a fresh session, as Python's
                // sender does, but keep the sessions we hold: the refusal
                // may be a block or a policy, not a broken session, and
                // mail in flight to us may still need them (Python drops
                // them all, CLIENT-030 defect 10).
                // A refused group copy takes the refuser off that roster,
                // as Python's `_flush_outbox` does (client/group.rs).
                self.drop_refuser(&mut tx, &current)?;
                tx.changes.outbox_removed.push(current.key);
                tx.changes
                    .settings
                    .push((fresh_session_setting(&entry.peer), now.to_string()));
            }
            Ok(Delivery::Queued { .. }) if current.kind == OutboxKind::Ack => {
                tx.changes.outbox_removed.push(current.key)
            }
            Ok(Delivery::Queued { .. }) => {
                current.attempts += 1;
                current.last_error = None;
                current.next_attempt =
                    now + self.backoff(self.config.resend_after, current.attempts);
                tx.changes.outbox.push(current);
            }
            Err(e) => {
                current.attempts += 1;
                current.last_error = Some(e.to_string());
                // A refusal is as certain a non-delivery as a request that
                // never left: the next attempt must not reuse a ratchet
                // position the peer may skip past meanwhile.
                current.reencrypt |= matches!(
                    e,
                    ClientError::Relay { source, .. } if source.certainly_not_stored()
                );
                current.next_attempt =
                    now + self.backoff(self.config.resend_after / 4.0, current.attempts);
                tx.changes.outbox.push(current);
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn backoff(&self, base: f64, attempts: u32) -> f64 {
        (base * 2f64.powi(attempts.saturating_sub(1).min(20) as i32)).min(self.config.max_backoff)
    }

    /// Re-uploads unacknowledged messages created at least `older_than`
    /// seconds ago (0: all of them, as after moving to a new relay), and any
    /// acks still waiting. Each entry fails alone.
    pub async fn flush_outbox(&self, older_than: f64) -> Result<FlushReport, ClientError> {
        // Acks for what we send must find us on this relay.
        self.ensure_published().await?;
        let cutoff = self.clock.now() - older_than;
        let entries = self
            .store
            .outbox()?
            .into_iter()
            .filter(|e| e.kind == OutboxKind::Ack || e.created <= cutoff)
            .collect();
        self.flush(entries).await
    }

    /// Re-uploads the outbox entries that are due, and gives up on
    /// messages past `outbox_max_age`.
    pub async fn flush_due(&self) -> Result<FlushReport, ClientError> {
        let now = self.clock.now();
        let mut expired = Vec::new();
        {
            let mut tx = self.transaction()?;
            for e in self.store.outbox()? {
                if now - e.created > self.config.outbox_max_age {
                    tx.changes.outbox_removed.push(e.key.clone());
                    expired.push(e);
                }
            }
            tx.commit()?;
        }
        let due = self
            .store
            .outbox()?
            .into_iter()
            .filter(|e| e.next_attempt <= now)
            .collect();
        let mut report = self.flush(due).await?;
        report.expired = expired;
        Ok(report)
    }

    pub(super) async fn flush(
        &self,
        entries: Vec<OutboxEntry>,
    ) -> Result<FlushReport, ClientError> {
        let mut report = FlushReport::default();
        for entry in entries {
            match self.deliver(&entry).await {
                Ok(Delivery::Queued { .. }) => report.sent += 1,
                Ok(Delivery::Refused) => report.refused += 1,
                Err(ClientError::Store(e)) => return Err(e.into()),
                Err(_) => report.failed += 1,
            }
        }
        Ok(report)
    }
}
