//! Saved history (0.3.0's opt-in `messages` table): sealing a text at rest,
//! saving what was sent or received, and reading conversations back
//! without the relay.
//!
//! Nothing is kept unless the application asks (0.3.0: `send --save`,
//! `receive --save`, `RETALK_SAVE_MESSAGE`). A saved text is sealed as
//! Python retalk 0.3.0 seals it (`user.py@HEAD:316-339`,
//! `encrypt_at_rest`): vodozemac's `PkEncryption` to a Curve25519 key
//! whose secret is `sha256(b"retalk:at-rest|" + store_key)`, the store
//! key being the pickle key (`sha256(passphrase)`), stored as the JSON
//! triple `[ciphertext, mac, ephemeral_key]` in padded base64. So rows
//! saved by Python 0.3.0 open here and ours open there; like Python's,
//! the seal is only as strong as the passphrase (a `--no-passphrase`
//! identity's is a public constant).

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use sha2::{Digest, Sha256};
use vodozemac::pk_encryption::{Message, PkDecryption, PkEncryption};
use vodozemac::{Curve25519PublicKey, Curve25519SecretKey};

use super::identity::unlock;
use super::{
    setting, Client, ClientError, Contact, Direction, GroupTag, MessageFilter, MessageRecord,
    SavedMessage, Store, Transport,
};
use crate::clock::Clock;
use crate::ids::UserId;
use crate::olm::PickleKey;

/// The key pair saved texts are sealed to (0.3.0 `_at_rest_key`).
fn at_rest_key(key: &PickleKey) -> PkDecryption {
    let mut h = Sha256::new();
    h.update(b"retalk:at-rest|");
    h.update(key.as_bytes());
    let seed: [u8; 32] = h.finalize().into();
    PkDecryption::from_key(Curve25519SecretKey::from_slice(&seed))
}

/// Seals `text` for the history under `key`: a JSON array of the padded
/// base64 ciphertext, MAC and ephemeral public key (0.3.0
/// `encrypt_at_rest`).
pub fn seal(key: &PickleKey, text: &str) -> String {
    let public = at_rest_key(key).public_key();
    // Fails only for a non-contributory key, which a key derived from a
    // hash is not.
    let Ok(m) = PkEncryption::from_key(public).encrypt(text.as_bytes()) else {
        unreachable!("the at-rest key is a valid Curve25519 key");
    };
    serde_json::json!([
        STANDARD.encode(&m.ciphertext),
        STANDARD.encode(&m.mac),
        STANDARD.encode(m.ephemeral_key.as_bytes()),
    ])
    .to_string()
}

/// Opens a blob made by [`seal`] (ours or Python 0.3.0's). Errors:
/// [`ClientError::Unseal`] for a blob that is not such a triple or does
/// not open with `key` (another passphrase, a damaged row).
pub fn unseal(key: &PickleKey, blob: &str) -> Result<String, ClientError> {
    let bad = |why: &str| ClientError::Unseal(why.to_owned());
    let parts: Vec<String> =
        serde_json::from_str(blob).map_err(|_| bad("not a JSON array of strings"))?;
    let [ct, mac, eph] = parts.as_slice() else {
        return Err(bad("not a triple"));
    };
    let decode = |s: &str| STANDARD.decode(s).map_err(|_| bad("not base64"));
    let eph =
        Curve25519PublicKey::from_slice(&decode(eph)?).map_err(|_| bad("not a Curve25519 key"))?;
    let message = Message {
        ciphertext: decode(ct)?,
        mac: decode(mac)?,
        ephemeral_key: eph,
    };
    let plain = at_rest_key(key)
        .decrypt(&message)
        .map_err(|_| bad("does not open with this passphrase"))?;
    String::from_utf8(plain).map_err(|_| bad("not UTF-8"))
}

/// Whether `RETALK_SAVE_MESSAGE`'s value turns saving on (0.3.0
/// `cli.py` `_save_messages_on`: 1/true/t/yes/y/on, trimmed, any case).
pub fn save_requested(value: Option<&str>) -> bool {
    value.is_some_and(|v| {
        matches!(
            v.trim().to_lowercase().as_str(),
            "1" | "true" | "t" | "yes" | "y" | "on"
        )
    })
}

/// A conversation: with one peer, or in one group.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Conversation {
    Peer(UserId),
    /// `id`: 32 hex characters; `name`: the group's name when the last row
    /// was saved (a filter matches on `id` only).
    Group {
        id: String,
        name: String,
    },
}

impl Conversation {
    /// The peer's user id or the group id. Not a conversation's identity
    /// on its own: a group id and a user id are both 32 hex characters and
    /// anyone may pick a group id equal to a contact's id (see [`is`]).
    ///
    /// [`is`]: Conversation::is
    pub fn key(&self) -> &str {
        match self {
            Conversation::Peer(p) => p.as_str(),
            Conversation::Group { id, .. } => id,
        }
    }

    /// Whether `self` and `other` are the same conversation: the same kind
    /// and the same id (a group's name does not count). Joining by id alone
    /// would let a stranger's group whose id is a contact's fingerprint
    /// merge into that contact's thread.
    pub fn is(&self, other: &Conversation) -> bool {
        match (self, other) {
            (Conversation::Peer(a), Conversation::Peer(b)) => a == b,
            (Conversation::Group { id: a, .. }, Conversation::Group { id: b, .. }) => a == b,
            _ => false,
        }
    }
}

/// One saved message, opened.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryEntry {
    /// Increasing in save order: pass the last one seen as `after_rowid`
    /// to read only newer rows.
    pub rowid: i64,
    /// The envelope id (a group message's thread id).
    pub id: String,
    pub from: UserId,
    /// The name saved with the row: ours for sent rows, the name a
    /// received one was shown under.
    pub from_name: String,
    /// The name to show, as 0.3.0's `history` picks it: ours for sent
    /// rows, else the sender's saved contact name, else `from_name`.
    pub name: String,
    pub direction: Direction,
    pub text: String,
    /// When it was saved, unix seconds.
    pub at: f64,
    pub conversation: Conversation,
}

/// A conversation with saved messages, or a saved contact without any.
#[derive(Debug, Clone, PartialEq)]
pub struct ConversationSummary {
    pub conversation: Conversation,
    /// The contact's saved name, else (a group) its name, else the first
    /// 12 characters of the id and `…` (0.3.0 `_show_web`).
    pub name: String,
    pub count: usize,
    /// The newest row's save time (None: nothing saved yet).
    pub last_at: Option<f64>,
}

/// Reads and writes the history of one identity, without the relay.
pub struct History<'a, S: Store + ?Sized> {
    store: &'a S,
    key: PickleKey,
    me: UserId,
    my_name: String,
    contacts: Vec<Contact>,
}

impl<'a, S: Store + ?Sized> History<'a, S> {
    /// Opens the history of the identity in `store` with its passphrase.
    /// Errors: [`ClientError::NoIdentity`], [`ClientError::WrongSecret`].
    pub fn open(store: &'a S, secret: &str) -> Result<Self, ClientError> {
        let key = PickleKey::from_secret(secret);
        let account = unlock(store, &key)?;
        let me = UserId::from_keys(
            &account.curve25519_key().to_base64(),
            &account.ed25519_key().to_base64(),
        );
        Self::with_key(store, key, me)
    }

    fn with_key(store: &'a S, key: PickleKey, me: UserId) -> Result<Self, ClientError> {
        Ok(Self {
            my_name: store.setting(setting::NAME)?.unwrap_or_default(),
            contacts: store.contacts()?,
            store,
            key,
            me,
        })
    }

    /// Names senders by `contacts` instead of the store's own (a caller
    /// that overlays the user's global contacts, as 0.3.0's CLI does).
    pub fn with_contacts(mut self, contacts: Vec<Contact>) -> Self {
        self.contacts = contacts;
        self
    }

    pub fn me(&self) -> &UserId {
        &self.me
    }

    /// Our own name (shown on sent rows).
    pub fn my_name(&self) -> &str {
        &self.my_name
    }

    fn saved_name(&self, id: &str) -> Option<&str> {
        self.contacts
            .iter()
            .find(|c| c.id.as_str() == id && c.name != c.id.as_str())
            .map(|c| c.name.as_str())
    }

    /// Saved messages after `after_rowid` (0: all), oldest first, of one
    /// conversation or of all (`None`). A peer's conversation is the rows
    /// filed under that peer (0.3.0 `message_rows`: `peer_fp = P`, which
    /// includes group messages received from P); a group's, the rows
    /// tagged with its id. Errors: a row that does not open
    /// ([`ClientError::Unseal`]), the store's.
    pub fn entries(
        &self,
        of: Option<&Conversation>,
        after_rowid: i64,
    ) -> Result<Vec<HistoryEntry>, ClientError> {
        // Picked by the store before any row is unsealed.
        let filter = match of {
            None => MessageFilter::All,
            Some(Conversation::Peer(p)) => MessageFilter::Peer(p.as_str()),
            Some(Conversation::Group { id, .. }) => MessageFilter::Group(id),
        };
        let rows = self.store.messages(filter, after_rowid)?;
        rows.into_iter().map(|m| self.open_row(m)).collect()
    }

    fn open_row(&self, m: SavedMessage) -> Result<HistoryEntry, ClientError> {
        let SavedMessage { rowid, record: r } = m;
        let name = match r.direction {
            Direction::Out => self.my_name.clone(),
            Direction::In => self
                .saved_name(r.from.as_str())
                .map_or_else(|| r.from_name.clone(), str::to_owned),
        };
        Ok(HistoryEntry {
            rowid,
            text: unseal(&self.key, &r.body)?,
            conversation: conversation_of(&r)?,
            id: r.msg_id,
            from: r.from,
            from_name: r.from_name,
            name,
            direction: r.direction,
            at: r.at,
        })
    }

    /// Every conversation with saved rows, and every saved contact (count
    /// 0 when nothing is saved), newest first, then by name (0.3.0
    /// `_show_web`'s order). Group rows count for the group. Reads no text.
    pub fn conversations(&self) -> Result<Vec<ConversationSummary>, ClientError> {
        let mut out: Vec<ConversationSummary> = Vec::new();
        for m in self.store.messages(MessageFilter::All, 0)? {
            let c = conversation_of(&m.record)?;
            match out.iter_mut().find(|s| s.conversation.is(&c)) {
                Some(s) => {
                    s.count += 1;
                    s.last_at = Some(s.last_at.map_or(m.record.at, |t| t.max(m.record.at)));
                    if let Conversation::Group { .. } = c {
                        // The name it had last.
                        s.name = self.label(&c);
                        s.conversation = c;
                    }
                }
                None => out.push(ConversationSummary {
                    name: self.label(&c),
                    conversation: c,
                    count: 1,
                    last_at: Some(m.record.at),
                }),
            }
        }
        for c in &self.contacts {
            let conversation = Conversation::Peer(c.id.clone());
            if !out.iter().any(|s| s.conversation.is(&conversation)) {
                out.push(ConversationSummary {
                    name: self.label(&conversation),
                    conversation,
                    count: 0,
                    last_at: None,
                });
            }
        }
        out.sort_by(|a, b| {
            b.last_at
                .unwrap_or(0.0)
                .total_cmp(&a.last_at.unwrap_or(0.0))
                .then_with(|| a.name.cmp(&b.name))
        });
        Ok(out)
    }

    fn label(&self, c: &Conversation) -> String {
        let short = || format!("{}…", c.key().get(..12).unwrap_or(c.key()));
        match c {
            Conversation::Group { name, .. } if !name.is_empty() => name.clone(),
            // Never a contact's name: a group id may equal a contact's id.
            Conversation::Group { .. } => short(),
            Conversation::Peer(p) => self
                .saved_name(p.as_str())
                .map_or_else(short, str::to_owned),
        }
    }
}

/// The conversation a row belongs to.
fn conversation_of(r: &MessageRecord) -> Result<Conversation, ClientError> {
    Ok(match &r.group {
        Some(g) => Conversation::Group {
            id: g.id.clone(),
            name: g.name.clone(),
        },
        None => Conversation::Peer(
            UserId::parse(&r.peer)
                .map_err(|_| ClientError::Unseal(format!("row filed under '{}'", r.peer)))?,
        ),
    })
}

#[allow(clippy::too_many_arguments)]
fn sent_row(
    key: &PickleKey,
    me: &UserId,
    my_name: &str,
    msg_id: &str,
    to: &str,
    text: &str,
    group: Option<GroupTag>,
    at: f64,
) -> MessageRecord {
    MessageRecord {
        msg_id: msg_id.to_owned(),
        from: me.clone(),
        from_name: my_name.to_owned(),
        peer: to.to_owned(),
        direction: Direction::Out,
        body: seal(key, text),
        at,
        group,
    }
}

impl<S: Store, T: Transport, C: Clock> Client<S, T, C> {
    /// This identity's history (see [`History`]); never calls the relay.
    pub fn history(&self) -> Result<History<'_, S>, ClientError> {
        Ok(
            History::with_key(&self.store, self.key.clone(), self.user_id.clone())?
                .with_contacts(self.contacts()?),
        )
    }

    /// Seals `text` under this identity's at-rest key ([`seal`]).
    pub fn seal_at_rest(&self, text: &str) -> String {
        seal(&self.key, text)
    }

    /// Saves a message we sent (0.3.0 `send --save`): `to` is the peer's
    /// id, or the group id for a group message (`group` set).
    pub fn save_sent(
        &self,
        msg_id: &str,
        to: &str,
        text: &str,
        group: Option<GroupTag>,
    ) -> Result<(), ClientError> {
        let row = sent_row(
            &self.key,
            &self.user_id,
            &self.name()?,
            msg_id,
            to,
            text,
            group,
            self.clock.now(),
        );
        let mut tx = self.transaction()?;
        tx.changes.messages.push(row);
        tx.commit()?;
        Ok(())
    }

    /// Saves a message we received (0.3.0 `receive --save`,
    /// `_save_message`): filed under its sender, with the name it was
    /// shown under (`shown_name`: the saved contact name, else `~` and the
    /// sender's own, as [`Received::name`](super::Received)).
    pub fn save_received(
        &self,
        msg_id: &str,
        from: &UserId,
        shown_name: &str,
        text: &str,
        group: Option<GroupTag>,
    ) -> Result<(), ClientError> {
        let row = MessageRecord {
            msg_id: msg_id.to_owned(),
            from: from.clone(),
            from_name: shown_name.to_owned(),
            peer: from.to_string(),
            direction: Direction::In,
            body: seal(&self.key, text),
            at: self.clock.now(),
            group,
        };
        let mut tx = self.transaction()?;
        tx.changes.messages.push(row);
        tx.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_round_trips_and_needs_the_passphrase() {
        let key = PickleKey::from_secret("pw");
        let blob = seal(&key, "héllo");
        assert!(!blob.contains("héllo"));
        let parts: Vec<String> = serde_json::from_str(&blob).unwrap();
        assert_eq!(parts.len(), 3);
        assert!(parts.iter().all(|p| STANDARD.decode(p).is_ok()));
        assert_eq!(unseal(&key, &blob).unwrap(), "héllo");
        assert!(matches!(
            unseal(&PickleKey::from_secret("other"), &blob),
            Err(ClientError::Unseal(_))
        ));
        assert!(unseal(&key, "[\"a\"]").is_err());
        assert!(unseal(&key, "nope").is_err());
    }

    fn uid(n: u8) -> UserId {
        UserId::parse(&format!("{n:032x}")).unwrap()
    }

    fn row(key: &PickleKey, id: &str, from: u8, peer: &str, out: bool, at: f64) -> MessageRecord {
        MessageRecord {
            msg_id: id.into(),
            from: uid(from),
            from_name: format!("~n{from}"),
            peer: peer.into(),
            direction: if out { Direction::Out } else { Direction::In },
            body: seal(key, &format!("text {id}")),
            at,
            group: None,
        }
    }

    #[test]
    fn entries_conversations_names_and_polling() {
        use crate::client::{create_identity, MemoryStore, StoreTransaction};
        let store = MemoryStore::new();
        let me = create_identity(&store, "pw", "me").unwrap().user_id;
        let key = PickleKey::from_secret("pw");
        let gid = "0123456789abcdef0123456789abcdef";
        let bob = uid(2).to_string();
        let mut tx = StoreTransaction::new(&store).unwrap();
        tx.changes.messages = vec![
            row(&key, "a", 2, &bob, false, 1.0),
            MessageRecord {
                from: me.clone(),
                ..row(&key, "b", 0, &bob, true, 2.0)
            },
            MessageRecord {
                group: Some(GroupTag {
                    id: gid.into(),
                    name: "team".into(),
                }),
                ..row(&key, "c", 3, &uid(3).to_string(), false, 3.0)
            },
        ];
        tx.changes.contacts = vec![
            Contact {
                name: "bob".into(),
                id: uid(2),
                pin: None,
                signing_key: None,
            },
            Contact {
                name: "cy".into(),
                id: uid(9),
                pin: None,
                signing_key: None,
            },
        ];
        tx.commit().unwrap();
        assert!(matches!(
            History::open(&store, "wrong"),
            Err(ClientError::WrongSecret)
        ));
        let h = History::open(&store, "pw").unwrap();
        assert_eq!(h.me(), &me);
        let all = h.entries(None, 0).unwrap();
        assert_eq!(all.len(), 3);
        assert_eq!(all[0].text, "text a");
        assert_eq!(all[0].name, "bob", "the saved name wins");
        assert_eq!(all[1].name, "me");
        assert_eq!(all[2].name, "~n3");
        let with_bob = h.entries(Some(&Conversation::Peer(uid(2))), 0).unwrap();
        let ids: Vec<_> = with_bob.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["a", "b"]);
        let after = h
            .entries(Some(&Conversation::Peer(uid(2))), with_bob[0].rowid)
            .unwrap();
        assert_eq!(after.len(), 1);
        assert_eq!(after[0].id, "b");
        let group = Conversation::Group {
            id: gid.into(),
            name: String::new(),
        };
        assert_eq!(h.entries(Some(&group), 0).unwrap()[0].id, "c");
        let convs = h.conversations().unwrap();
        let shown: Vec<_> = convs
            .iter()
            .map(|c| (c.name.as_str(), c.count, c.last_at))
            .collect();
        assert_eq!(
            shown,
            [
                ("team", 1, Some(3.0)),
                ("bob", 2, Some(2.0)),
                ("cy", 0, None)
            ]
        );
        // A row sealed under another passphrase is an error, not garbage.
        let mut tx = StoreTransaction::new(&store).unwrap();
        tx.changes.messages = vec![row(&PickleKey::from_secret("x"), "d", 2, &bob, false, 4.0)];
        tx.commit().unwrap();
        assert!(matches!(h.entries(None, 0), Err(ClientError::Unseal(_))));
        // One conversation's rows are picked before unsealing: the group's
        // reads open without touching bob's bad row.
        assert_eq!(h.entries(Some(&group), 0).unwrap().len(), 1);
    }

    /// A stranger's group whose id is a saved contact's fingerprint stays
    /// a conversation of its own: not merged into the contact's thread,
    /// not named after the contact.
    #[test]
    fn a_group_with_a_contacts_id_is_not_that_contact() {
        use crate::client::{create_identity, MemoryStore, StoreTransaction};
        let store = MemoryStore::new();
        create_identity(&store, "pw", "me").unwrap();
        let key = PickleKey::from_secret("pw");
        let mallory = uid(2);
        let mut tx = StoreTransaction::new(&store).unwrap();
        tx.changes.messages = vec![
            row(&key, "a", 2, mallory.as_str(), false, 1.0),
            MessageRecord {
                group: Some(GroupTag {
                    id: mallory.to_string(),
                    name: String::new(),
                }),
                ..row(&key, "b", 3, &uid(3).to_string(), false, 2.0)
            },
        ];
        tx.changes.contacts = vec![Contact {
            name: "mallory".into(),
            id: mallory.clone(),
            pin: None,
            signing_key: None,
        }];
        tx.commit().unwrap();
        let h = History::open(&store, "pw").unwrap();
        let convs = h.conversations().unwrap();
        let shown: Vec<_> = convs
            .iter()
            .map(|c| {
                (
                    c.name.as_str(),
                    c.count,
                    matches!(c.conversation, Conversation::Group { .. }),
                )
            })
            .collect();
        assert_eq!(shown, [("000000000000…", 1, true), ("mallory", 1, false)]);
        let group = Conversation::Group {
            id: mallory.to_string(),
            name: String::new(),
        };
        let peer = Conversation::Peer(mallory);
        assert!(!peer.is(&group) && peer.is(&peer.clone()) && group.is(&group.clone()));
        let ids = |c: &Conversation| -> Vec<String> {
            h.entries(Some(c), 0)
                .unwrap()
                .into_iter()
                .map(|e| e.id)
                .collect()
        };
        assert_eq!(ids(&peer), ["a"]);
        assert_eq!(ids(&group), ["b"]);
    }

    #[test]
    fn save_flag_values() {
        for v in ["1", "true", "T", " yes ", "y", "ON"] {
            assert!(save_requested(Some(v)), "{v}");
        }
        for v in ["", "0", "false", "no", "off", "2"] {
            assert!(!save_requested(Some(v)), "{v}");
        }
        assert!(!save_requested(None));
    }
}
