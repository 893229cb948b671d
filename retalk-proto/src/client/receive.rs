//! Receiving: fetching mail, keeping it until handled, handling each alone.

use vodozemac::olm::OlmMessage;
use vodozemac::Curve25519PublicKey;

use super::{Client, ClientError, IncomingRecord, OutboxKind, Store, Transport};
use crate::clock::Clock;
use crate::ids::{sha256_hex, UserId};
use crate::olm;
use crate::wire::{Args, MailItem, PublicKeys};

/// A message delivered to the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// Local key of the message (the hash of its ciphertext).
    pub key: String,
    /// The sender's envelope id.
    pub id: String,
    pub from: UserId,
    /// Saved name, else `~claimed`, else empty.
    pub name: String,
    pub text: String,
    /// What else it shows (see [`InboxRecord::extra`](super::InboxRecord)
    /// and [`Received::extra_fields`]).
    pub extra: Option<String>,
}

/// Mail that could not be handled; reported, skipped, never fatal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub from: String,
    pub reason: String,
}

/// What one `receive` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inbox {
    pub messages: Vec<Received>,
    pub problems: Vec<Problem>,
    /// Fetched mail left for the next receive after a transient failure.
    pub deferred: usize,
    /// Mail refused unopened (blocked or unknown senders), nacked.
    pub refused: usize,
}

/// Outcome of handling one fetched message.
pub(super) enum Handled {
    Done,
    /// Refused unopened and nacked (the block list, peers-only).
    Refused,
    Transient,
    Failed(String),
    /// A peer's Olm message that none of our sessions (nor our account)
    /// could open: reported like `Failed`, and a sign of a wedged pair.
    Unopenable(String),
}

impl<S: Store, T: Transport, C: Clock> Client<S, T, C> {
    /// Fetches, decrypts and acks pending mail; returns the new messages.
    /// Each message is handled on its own: bad ones are reported and
    /// skipped, and mail that hit a passing failure is kept for next time.
    pub async fn receive(&self) -> Result<Inbox, ClientError> {
        let mut inbox = self.fetch().await?;
        inbox.messages = self.take_inbox()?;
        Ok(inbox)
    }

    /// The first half of [`receive`](Self::receive): fetches, decrypts and
    /// acks, leaving the messages in the store's inbox until
    /// [`take_inbox`](Self::take_inbox). A message is durable there before
    /// its ack leaves.
    ///
    /// Fetches of one client run one at a time: one that starts while
    /// another is under way waits for it, so on return the inbox holds
    /// everything the relay had when this one was called.
    pub async fn fetch(&self) -> Result<Inbox, ClientError> {
        self.fetch_scoped(None).await
    }

    /// [`fetch`](Self::fetch) of one sender's mail only (`read_messages`
    /// with `peer`, 0.3.0 relays and ours): everyone else's stays on the
    /// relay. Mail fetched earlier and not yet handled is handled too.
    pub async fn fetch_from(&self, peer: &UserId) -> Result<Inbox, ClientError> {
        self.fetch_scoped(Some(peer)).await
    }

    async fn fetch_scoped(&self, peer: Option<&UserId>) -> Result<Inbox, ClientError> {
        let _fetching = self.fetching.lock().await;
        self.ensure_published().await?;
        let mut inbox = Inbox::default();
        for _ in 0..self.config.max_fetch_rounds.max(1) {
            let mail: Vec<MailItem> = self
                .call(Args::ReadMessages {
                    peer: peer.map(|p| p.to_string()),
                    peek: false,
                    wait: None,
                })
                .await?;
            if mail.is_empty() {
                break;
            }
            self.stash(mail)?;
        }
        for record in self.store.incoming()? {
            match self.handle(&record).await? {
                Handled::Done => {}
                Handled::Transient => inbox.deferred += 1,
                Handled::Refused => {
                    let mut tx = self.transaction()?;
                    tx.changes.incoming_removed.push(record.hash.clone());
                    tx.commit()?;
                    inbox.refused += 1;
                }
                Handled::Failed(reason) | Handled::Unopenable(reason) => {
                    let mut tx = self.transaction()?;
                    tx.changes.incoming_removed.push(record.hash.clone());
                    tx.commit()?;
                    inbox.problems.push(Problem {
                        from: record.from.clone(),
                        reason,
                    });
                }
            }
        }
        // Our acks, and our messages due for a resend: a `receive` from
        // cron is all some users run, and a message the relay refused (a
        // full mailbox) or never got must not wait for a `--follow`.
        let now = self.clock.now();
        let outgoing: Vec<_> = self
            .store
            .outbox()?
            .into_iter()
            .filter(|e| e.kind == OutboxKind::Ack || e.next_attempt <= now)
            .collect();
        self.flush(outgoing).await?;
        Ok(inbox)
    }

    /// Stores fetched mail before anything else happens to it.
    fn stash(&self, mail: Vec<MailItem>) -> Result<(), ClientError> {
        let now = self.clock.now();
        let incoming = mail
            .into_iter()
            .map(|m| IncomingRecord {
                hash: sha256_hex(&m.body),
                from: m.from,
                mtype: m.mtype,
                body: m.body,
                fetched_at: now,
            })
            .collect();
        let mut tx = self.transaction()?;
        tx.changes.incoming = incoming;
        tx.commit()?;
        Ok(())
    }

    /// Handles one fetched message. Only store failures are errors; every
    /// problem with the message itself is an outcome.
    async fn handle(&self, record: &IncomingRecord) -> Result<Handled, ClientError> {
        let Ok(sender) = UserId::parse(&record.from) else {
            return Ok(Handled::Failed(format!(
                "sender is not a user id: {:?}",
                record.from
            )));
        };
        // Before any crypto: a refused sender spends no session work.
        if self.refuses(&sender)? {
            return Ok(match self.nack(&record.hash).await {
                Err(e) if e.is_transient() => Handled::Transient,
                _ => Handled::Refused,
            });
        }
        let message = match olm::decode_message(record.mtype, &record.body) {
            Ok(m) => m,
            Err(e) => return Ok(Handled::Failed(e.to_string())),
        };
        // A pre-key message for a session we do not hold needs the sender's
        // keys, fetched (and checked against the id) before taking the lock.
        let mut sender_key = None;
        if let OlmMessage::PreKey(pre) = &message {
            let wanted = pre.session_id();
            let known = self
                .store
                .sessions(&sender)?
                .iter()
                .any(|s| self.is_session(s, &wanted));
            if !known && self.store.processed(&record.hash)?.is_none() {
                match self
                    .call::<PublicKeys>(Args::GetKeys {
                        peer: sender.to_string(),
                    })
                    .await
                {
                    Ok(keys) => match self.verify_peer_keys(&sender, &keys) {
                        Ok(()) => match Curve25519PublicKey::from_base64(&keys.identity_key) {
                            Ok(k) => sender_key = Some(k),
                            Err(_) => {
                                return Ok(Handled::Failed(
                                    "the relay served an invalid identity key".into(),
                                ))
                            }
                        },
                        Err(e) => return Ok(Handled::Failed(e.to_string())),
                    },
                    Err(e) if e.is_transient() => return Ok(Handled::Transient),
                    Err(e) => return Ok(Handled::Failed(e.to_string())),
                }
            }
        }
        let opened = {
            let tx = self.transaction()?;
            match self.open_locked(tx, record, &sender, &message, sender_key)? {
                Ok(opened) => opened,
                Err(Handled::Unopenable(reason)) => {
                    // Best effort: a failed repair is retried with the next
                    // such message once `unwedge_every` has passed.
                    let _ = self.unwedge(&sender).await;
                    return Ok(Handled::Unopenable(reason));
                }
                Err(handled) => return Ok(handled),
            }
        };
        // Committed already; a failure here is retried by the next flush.
        for entry in opened.ack.iter().chain(&opened.resend) {
            if let Err(ClientError::Store(e)) = self.deliver(entry).await {
                return Err(e.into());
            }
        }
        if let Some(hash) = &opened.nack {
            // Best effort, as Python's `_send_nack`: the copy is handled.
            let _ = self.nack(hash).await;
            return Ok(Handled::Refused);
        }
        Ok(Handled::Done)
    }
}
