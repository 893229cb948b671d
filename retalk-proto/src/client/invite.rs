//! Invite codes on a client (0.3.0, `user.py@HEAD:1027-1184`): minting,
//! listing and revoking codes (local, no relay), redeeming one
//! ([`Client::request_contact`]), and the inviter's side: judging a
//! `contact_request` as it is decrypted, and [`Client::invite_watch`],
//! which fetches only the mail of senders whose first message is a
//! request.

use serde_json::{json, Value};
use vodozemac::olm::OlmMessage;
use vodozemac::Curve25519PublicKey;

use super::{
    Client, ClientError, Contact, InboxRecord, Received, Store, StoreTransaction, Transport,
};
use crate::clock::Clock;
use crate::envelope::Envelope;
use crate::ids::{new_message_id, UserId};
use crate::invite::{self, InviteRecord, Outcome};
use crate::olm;
use crate::wire::{Args, MailItem, PublicKeys};

/// Mints a code (`store.py` `mint_invite`): single-use and 7 days unless
/// `permanent` or `expires_days` say otherwise (`<= 0`: never).
pub fn new_invite<S: Store + ?Sized>(
    store: &S,
    peer: Option<String>,
    permanent: bool,
    expires_days: Option<f64>,
    now: f64,
) -> Result<InviteRecord, ClientError> {
    let rec = invite::mint(now, peer, permanent, expires_days);
    let mut tx = StoreTransaction::new(store)?;
    tx.changes.invites.push(rec.clone());
    tx.commit()?;
    Ok(rec)
}

/// Every minted code, oldest first.
pub fn invites<S: Store + ?Sized>(store: &S) -> Result<Vec<InviteRecord>, ClientError> {
    let mut all = store.invites()?;
    all.sort_by(|a, b| a.created.total_cmp(&b.created));
    Ok(all)
}

/// Revokes a code; false when there is no such code.
pub fn revoke_invite<S: Store + ?Sized>(store: &S, code: &str) -> Result<bool, ClientError> {
    let mut tx = StoreTransaction::new(store)?;
    let Some(mut rec) = store.invites()?.into_iter().find(|r| r.code == code) else {
        return Ok(false);
    };
    rec.revoked = true;
    tx.changes.invites.push(rec);
    tx.commit()?;
    Ok(true)
}

/// The kinds of the records a request leaves in the inbox.
pub const ACCEPTED: &str = "contact_accepted";
pub const REJECTED: &str = "contact_request_rejected";

/// The card fields of a `contact_request`.
struct Card {
    name: String,
    fingerprint: String,
    identity_key: String,
    signing_key: String,
    /// The card as the requester sent it (the accepted record shows it).
    sent: Value,
}

fn card_of(text: &str) -> Option<Card> {
    let v: Value = serde_json::from_str(text).ok()?;
    let s = |k: &str| {
        v.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    Some(Card {
        name: s("name"),
        fingerprint: s("fingerprint"),
        identity_key: s("identity_key"),
        signing_key: s("signing_key"),
        sent: v,
    })
}

/// Whether a requester's card name may be kept as the contact's name:
/// the rule of a saved name ([`crate::display::valid_saved_name`]: no
/// leading `~` or space, nothing shown escaped) and of a group name
/// ([`crate::group::check_name`]: not id-like, no leading `-`, at most 64
/// characters). A name refused here is not kept: the sender's id stands
/// for it, as for a card without a name.
fn adoptable_name(name: &str) -> bool {
    crate::display::valid_saved_name(name) && crate::group::check_name(name).is_ok()
}

impl<S: Store, T: Transport, C: Clock> Client<S, T, C> {
    /// Redeems `code` from `inviter` (`request_contact`): saves the inviter
    /// (as `peer_name`, else its id) with keys checked against its id, then
    /// sends a `contact_request` with our own card. Returns the envelope
    /// id. Whether it was accepted is not observable here, by design.
    pub async fn request_contact(
        &self,
        inviter: &UserId,
        code: &str,
        peer_name: Option<&str>,
    ) -> Result<String, ClientError> {
        // The inviter's keys, checked against its id, before anything is
        // saved (0.3.0 `add_contact(verify=True)`).
        let keys: PublicKeys = self
            .call(Args::GetKeys {
                peer: inviter.to_string(),
            })
            .await?;
        self.verify_peer_keys(inviter, &keys)?;
        let mut tx = self.transaction()?;
        let contacts = self.store.contacts()?;
        let kept = contacts.iter().find(|c| &c.id == inviter);
        let name = match (kept, peer_name) {
            (Some(c), None) => c.name.clone(),
            (_, name) => name.unwrap_or(inviter.as_str()).to_owned(),
        };
        if let Some(other) = contacts.iter().find(|c| c.name == name && &c.id != inviter) {
            return Err(ClientError::NameTaken {
                name,
                id: other.id.clone(),
            });
        }
        // Saved under another name before: renamed.
        if let Some(old) = kept.filter(|c| c.name != name) {
            tx.changes.contacts_removed.push(old.name.clone());
        }
        tx.changes.contacts.push(Contact {
            name,
            id: inviter.clone(),
            pin: Some(keys.identity_key),
            signing_key: Some(keys.signing_key),
        });
        tx.commit()?;
        let card = json!({"name": self.name()?, "fingerprint": self.user_id().as_str(),
                          "identity_key": self.identity_key(),
                          "signing_key": self.signing_key(), "verified": true});
        let envelope = Envelope::ContactRequest {
            id: new_message_id(),
            code: code.to_owned(),
            card: card.to_string(),
        };
        Ok(self.send_envelope(inviter, envelope).await?.id)
    }

    /// Judges a decrypted `contact_request` in the batch of its decryption
    /// (`invite_watch`'s checks): the card must hash to its keys and be the
    /// sender's, the code live. Accepted: the sender is saved with its
    /// keys pinned (as the code's `peer` name, else the card's), the use
    /// recorded. Returns the record to show, or None for a resent request
    /// already accepted.
    pub(super) fn file_contact_request(
        &self,
        tx: &mut StoreTransaction<'_, S>,
        sender: &UserId,
        code: &str,
        card: &str,
        record: InboxRecord,
    ) -> Result<Option<InboxRecord>, ClientError> {
        let now = self.clock.now();
        let card = card_of(card);
        let mut held = self.store.invites()?.into_iter().find(|r| r.code == code);
        let outcome = match (&card, &mut held) {
            (Some(c), _)
                if c.fingerprint != sender.as_str()
                    || !sender.matches_keys(&c.identity_key, &c.signing_key) =>
            {
                Outcome::CardMismatch
            }
            (None, _) => Outcome::CardMismatch,
            (_, None) => Outcome::UnknownCode,
            (_, Some(rec)) => rec.redeem(sender, now),
        };
        let show = |extra: Value| InboxRecord {
            extra: Some(extra.to_string()),
            text: String::new(),
            ..record.clone()
        };
        match (outcome, card, held) {
            (Outcome::Duplicate, ..) => Ok(None),
            (Outcome::Ok, Some(card), Some(rec)) => {
                let saved = self.store.contacts()?.into_iter().find(|c| &c.id == sender);
                let name = match saved.as_ref() {
                    Some(c) => c.name.clone(),
                    // Never another peer's name: a requester choosing its
                    // card's name must not replace a saved contact.
                    None => crate::group::suffixed(
                        rec.peer
                            .as_deref()
                            .filter(|p| !p.is_empty())
                            .or(Some(card.name.as_str()).filter(|n| adoptable_name(n)))
                            .unwrap_or(sender.as_str()),
                        self.store.contacts()?.iter().map(|c| c.name.as_str()),
                    ),
                };
                let contact = Contact {
                    name: name.clone(),
                    id: sender.clone(),
                    pin: Some(card.identity_key),
                    signing_key: Some(card.signing_key),
                };
                // The local name beside the card as it came (its own name
                // included), as 0.3.0's `invite_watch` shows it.
                let shown = show(json!({"kind": ACCEPTED, "code": code, "name": name,
                                        "card": card.sent}));
                tx.changes.contacts.push(contact);
                tx.changes.invites.push(rec);
                Ok(Some(shown))
            }
            (reason, ..) => Ok(Some(show(
                json!({"kind": REJECTED, "reason": reason.as_str()}),
            ))),
        }
    }

    /// One scan for contact requests (`invite_watch`): peeks at the
    /// mailbox (mail stays on the relay), and for each sender that is
    /// neither a saved contact nor blocked whose first-contact (pre-key)
    /// message decrypts to a `contact_request`, fetches that sender's mail
    /// and handles it. Nothing is kept from the classifying decryption.
    /// Returns the request records (accepted, rejected); any other mail of
    /// those senders stays in the local inbox for `receive`.
    ///
    /// Errors: a relay without `peek` (a Python 0.0.1 relay) is refused
    /// with [`ClientError::NoPeek`] before anything is read.
    pub async fn invite_watch(&self) -> Result<Vec<Received>, ClientError> {
        self.ensure_published().await?;
        let pending: Vec<MailItem> = match self
            .call(Args::ReadMessages {
                peer: None,
                peek: true,
                wait: None,
            })
            .await
        {
            Ok(p) => p,
            Err(e) if !e.is_transient() && e.to_string().contains("peek") => {
                return Err(ClientError::NoPeek)
            }
            Err(e) => return Err(e),
        };
        let contacts = self.store.contacts()?;
        let blocked = super::blocked(&self.store)?;
        let mut requesters: Vec<UserId> = Vec::new();
        for m in pending {
            let Ok(sender) = UserId::parse(&m.from) else {
                continue;
            };
            if m.mtype != 0
                || requesters.contains(&sender)
                || contacts.iter().any(|c| c.id == sender)
                || blocked.contains(&sender)
            {
                continue;
            }
            if self.is_contact_request(&sender, &m).await {
                requesters.push(sender);
            }
        }
        for sender in &requesters {
            self.fetch_from(sender).await?;
        }
        // Only the request records: the rest stays for `receive`.
        let _taking = self.store.take_lock()?;
        let out: Vec<Received> = self
            .pending_messages()?
            .into_iter()
            .filter(|m| {
                requesters.contains(&m.from)
                    && matches!(m.kind().as_deref(), Some(ACCEPTED | REJECTED))
            })
            .collect();
        let mut tx = self.transaction()?;
        tx.changes.inbox_removed = out.iter().map(|m| m.key.clone()).collect();
        tx.commit()?;
        Ok(out)
    }

    /// Decrypts a stranger's pre-key message on a throwaway copy of the
    /// account, or of the session it continues, to see whether it is a
    /// `contact_request`; nothing is saved.
    ///
    /// A session saved with the sender comes first (Python's
    /// `session_matches`, `user.py@HEAD:586-723`): a request retried after
    /// a refusal is a second pre-key message on the session the first one
    /// opened, whose one-time key is used up, so a new inbound session
    /// from it fails.
    async fn is_contact_request(&self, sender: &UserId, m: &MailItem) -> bool {
        let Ok(OlmMessage::PreKey(pre)) = olm::decode_message(m.mtype, &m.body) else {
            return false;
        };
        let wanted = pre.session_id();
        let Ok(saved) = self.store.sessions(sender) else {
            return false;
        };
        if let Some(rec) = saved.iter().find(|s| self.is_session(s, &wanted)) {
            let Ok(mut session) = olm::unpickle_session(&rec.pickle, &self.key) else {
                return false;
            };
            return session
                .decrypt(&OlmMessage::PreKey(pre))
                .is_ok_and(|plain| {
                    matches!(
                        Envelope::decode(&plain),
                        Ok(Envelope::ContactRequest { .. })
                    )
                });
        }
        let Ok(keys) = self
            .call::<PublicKeys>(Args::GetKeys {
                peer: sender.to_string(),
            })
            .await
        else {
            return false;
        };
        if self.verify_peer_keys(sender, &keys).is_err() {
            return false;
        }
        let Ok(key) = Curve25519PublicKey::from_base64(&keys.identity_key) else {
            return false;
        };
        let Ok((mut account, _)) = self.load_account() else {
            return false;
        };
        let Ok(created) = account.create_inbound_session(olm::session_config(), key, &pre) else {
            return false;
        };
        matches!(
            Envelope::decode(&created.plaintext),
            Ok(Envelope::ContactRequest { .. })
        )
    }
}
