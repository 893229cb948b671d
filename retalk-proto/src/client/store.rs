//! What a client keeps, as a domain-level, transactional trait.
//!
//! Reads are plain queries; every write is one [`Changes`] batch that the
//! backend commits atomically, under the store's lock, through a
//! [`StoreTransaction`]. A batch is one logical step of the protocol
//! (a ratchet advance together with the outbox entry it produced; a
//! decrypted message together with its processed marker and its ack), so
//! a crash can never leave half of one behind.

use crate::ids::UserId;
pub use crate::relay::StoreError;

/// The account and its bookkeeping.
#[derive(Debug, Clone, PartialEq)]
pub struct IdentityRecord {
    /// vodozemac's encrypted account pickle.
    pub account_pickle: String,
    /// When a fallback key was last published (None: never).
    pub fallback_published_at: Option<f64>,
}

/// One Olm session with a peer. A peer may have several.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionRecord {
    pub peer: UserId,
    pub session_id: String,
    /// vodozemac's encrypted session pickle.
    pub pickle: String,
    /// When this session last decrypted something (0 = never): the send
    /// session is the one that most recently did.
    pub last_received: f64,
    pub created: f64,
}

/// What an outbox entry carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboxKind {
    /// A message kept until the peer acks it, re-sent when due.
    Message,
    /// An ack; dropped once the relay has taken it.
    Ack,
}

/// A ciphertext that must reach the relay.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxEntry {
    /// Unique local key: the envelope id for messages, `ack/<peer>/<id>`
    /// for acks.
    pub key: String,
    /// The envelope id (of the message, or of what an ack acknowledges).
    pub envelope_id: String,
    pub peer: UserId,
    pub kind: OutboxKind,
    pub mtype: i64,
    pub body: String,
    pub created: f64,
    /// When it should next go to the relay.
    pub next_attempt: f64,
    pub attempts: u32,
    /// What went wrong last time (its text is for people); `None` once an
    /// upload was accepted, so the ciphertext is on the relay.
    pub last_error: Option<String>,
    /// The next attempt encrypts the envelope afresh on the peer's current
    /// send session instead of resending `body`: the relay certainly does
    /// not hold this ciphertext (the request never left, or the relay
    /// answered with a refusal), or the peer has moved past its ratchet
    /// position (it acknowledged a later message, or started a new session
    /// with us), so byte-identical copies could arrive where vodozemac can
    /// no longer open them. Cleared once a fresh ciphertext is stored.
    pub reencrypt: bool,
    /// The envelope, sealed under the pickle key, kept until the entry
    /// goes: a retry may re-encrypt it on the current session instead of
    /// sending a ciphertext whose ratchet chain the peer moved past. None
    /// for entries migrated from Python.
    pub envelope: Option<String>,
}

/// A ciphertext already handled: its re-sent copies are re-acked, never
/// surfaced twice.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessedRecord {
    /// sha256 hex of the body string.
    pub hash: String,
    pub envelope_id: String,
    pub peer: UserId,
    pub at: f64,
}

/// Mail fetched from the relay and kept until it is handled, so a failure
/// half-way through a batch loses nothing that the relay already deleted.
#[derive(Debug, Clone, PartialEq)]
pub struct IncomingRecord {
    pub hash: String,
    pub from: String,
    pub mtype: i64,
    pub body: String,
    pub fetched_at: f64,
}

/// A decrypted message, durable before it is acked, kept until the
/// application takes it.
#[derive(Debug, Clone, PartialEq)]
pub struct InboxRecord {
    /// The body hash of the ciphertext it came in.
    pub hash: String,
    pub envelope_id: String,
    pub from: UserId,
    /// The sender's self-chosen name (unverified).
    pub claimed_name: String,
    pub text: String,
    pub received_at: f64,
    /// What else the record shows, as a JSON object's text: a group copy's
    /// `group`, `group_id`, `mid` (and `member: false`), or, for a record
    /// that is not a message (`text` empty), its `kind` and fields (a
    /// roster change, a leave, an invite request). None for plain mail.
    pub extra: Option<String>,
}

pub use crate::group::Group;
pub use crate::invite::InviteRecord;

/// A group this identity left (0.3.0's `left_groups`, `cli.py` `group
/// leave`): its copies are dropped until `group join` clears it.
#[derive(Debug, Clone, PartialEq)]
pub struct LeftGroup {
    pub id: crate::group::GroupId,
    pub name: String,
    /// When it was left, unix seconds.
    pub ts: f64,
}

/// A saved peer (0.3.0's `peers` row: `fingerprint, name, identity_key,
/// signing_key`, `store.py` `ensure_peers`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contact {
    pub name: String,
    pub id: UserId,
    /// An explicit identity-key pin on top of the fingerprint.
    pub pin: Option<String>,
    /// The signing key recorded with the pin once both keys were checked
    /// against the id (0.3.0 `store.py` `record_peer_keys`).
    pub signing_key: Option<String>,
}

impl Contact {
    /// A contact is verified once both of its keys were recorded, which
    /// happens only after they hashed to its id (0.3.0 `store.py`
    /// `saved_peers`: "verified" == both keys present).
    pub fn verified(&self) -> bool {
        self.pin.is_some() && self.signing_key.is_some()
    }
}

/// Which way a saved message went (0.3.0 `messages.direction`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Received from the peer.
    In,
    /// Sent by us.
    Out,
}

impl Direction {
    /// `"in"` or `"out"`, as 0.3.0 stores and prints it.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::In => "in",
            Direction::Out => "out",
        }
    }

    /// Parses `"in"`/`"out"`; anything else is `None`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "in" => Some(Direction::In),
            "out" => Some(Direction::Out),
            _ => None,
        }
    }
}

/// The group a saved message belongs to (0.3.0 `messages.gid`, `gname`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GroupTag {
    /// 32 lowercase hex characters.
    pub id: String,
    /// The name the group had for this identity when the row was saved.
    pub name: String,
}

/// One message of the opt-in history (0.3.0's `messages` table,
/// `store.py` `save_message_row`): kept only when the user asked
/// (`--save`, `RETALK_SAVE_MESSAGE`), its text sealed under the identity's
/// key (see `client::history`), so the store holds no plaintext.
#[derive(Debug, Clone, PartialEq)]
pub struct MessageRecord {
    /// The envelope id (a group message's shared thread id); a second row
    /// with the same id is ignored.
    pub msg_id: String,
    /// Who wrote it (ourselves for [`Direction::Out`]).
    pub from: UserId,
    /// The writer's name when it was saved.
    pub from_name: String,
    /// The conversation: the peer's user id, or for our own group messages
    /// the group id (0.3.0: "outgoing group rows use `peer_fp = gid`").
    pub peer: String,
    pub direction: Direction,
    /// The text sealed at rest: 0.3.0's JSON triple `[ciphertext, mac,
    /// ephemeral key]`, each padded base64.
    pub body: String,
    /// When it was saved, unix seconds.
    pub at: f64,
    pub group: Option<GroupTag>,
}

/// Which saved rows [`Store::messages`] reads: a store picks them before
/// anything is unsealed, so a reader of one conversation does not open the
/// whole history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageFilter<'a> {
    /// Every row.
    All,
    /// Rows filed under this peer's user id (`MessageRecord::peer`; 0.3.0
    /// `message_rows`' `peer_fp = ?`, which takes in the group messages
    /// received from that peer, and the sent ones of a group whose id is
    /// that).
    Peer(&'a str),
    /// Rows tagged with this group id.
    Group(&'a str),
}

impl MessageFilter<'_> {
    /// Whether `r` is one of the rows this filter reads.
    pub fn matches(&self, r: &MessageRecord) -> bool {
        match self {
            MessageFilter::All => true,
            MessageFilter::Peer(p) => r.peer == *p,
            MessageFilter::Group(g) => r.group.as_ref().is_some_and(|t| t.id == *g),
        }
    }
}

/// A [`MessageRecord`] with the row number the store gave it: increasing in
/// save order, so a reader can ask for what came after the last it saw.
#[derive(Debug, Clone, PartialEq)]
pub struct SavedMessage {
    pub rowid: i64,
    pub record: MessageRecord,
}

impl SavedMessage {
    /// Sorts rows into [`Store::messages`]' order: by save time, ties by
    /// row number (0.3.0's `message_rows` orders by `ts`), for backends
    /// that cannot ask their storage for it.
    pub fn sort_for_history(rows: &mut [SavedMessage]) {
        rows.sort_by(|a, b| {
            a.record
                .at
                .total_cmp(&b.record.at)
                .then(a.rowid.cmp(&b.rowid))
        });
    }
}

/// A contact card received from a peer (a `contact` envelope), staged until
/// the user imports it (0.3.0's `received_contacts`, `cli.py`
/// `_stage_contact`); one per card fingerprint, the newest share wins.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedContact {
    /// The card's fingerprint.
    pub id: UserId,
    /// The name the sharer recommends ("" when none).
    pub name: String,
    /// The card's keys, "" when the sharer had not verified them.
    pub identity_key: String,
    pub signing_key: String,
    /// Who shared it and under which name.
    pub from: UserId,
    pub from_name: String,
    /// The envelope id of the share.
    pub msg_id: String,
    /// When it was staged, unix seconds.
    pub at: f64,
}

/// One atomic batch of writes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Changes {
    pub identity: Option<IdentityRecord>,
    pub sessions: Vec<SessionRecord>,
    pub sessions_removed: Vec<(UserId, String)>,
    /// Upserts by key.
    pub outbox: Vec<OutboxEntry>,
    pub outbox_removed: Vec<String>,
    pub processed: Vec<ProcessedRecord>,
    /// Forget processed markers older than this.
    pub processed_forget_before: Option<f64>,
    pub incoming: Vec<IncomingRecord>,
    pub incoming_removed: Vec<String>,
    pub inbox: Vec<InboxRecord>,
    pub inbox_removed: Vec<String>,
    pub contacts: Vec<Contact>,
    pub contacts_removed: Vec<String>,
    pub settings: Vec<(String, String)>,
    /// Saved history rows; a row whose `msg_id` is held is ignored.
    pub messages: Vec<MessageRecord>,
    /// Senders to block (refused unopened) and to unblock.
    pub blocked: Vec<UserId>,
    pub blocked_removed: Vec<UserId>,
    /// Staged contact cards, upserted by card fingerprint, and removals.
    pub received_contacts: Vec<ReceivedContact>,
    pub received_contacts_removed: Vec<UserId>,
    /// Groups upserted by id, and removed.
    pub groups: Vec<Group>,
    pub groups_removed: Vec<crate::group::GroupId>,
    /// Leave tombstones upserted by id, and cleared.
    pub left_groups: Vec<LeftGroup>,
    pub left_groups_removed: Vec<crate::group::GroupId>,
    /// Invite codes upserted by code.
    pub invites: Vec<InviteRecord>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        *self == Changes::default()
    }
}

/// A client's state.
///
/// Every write goes through a [`StoreTransaction`]: it holds the store's
/// lock for as long as it lives and carries the batch it will write, so a
/// read-modify-write is serialised against other tasks and OS processes
/// sharing the identity by construction. [`commit`](Store::commit) takes
/// the held lock as a parameter, so a batch cannot be written without it.
pub trait Store: Send + Sync {
    /// Held for every read-modify-write of the client, so operations from
    /// several tasks or OS processes sharing one identity are serialised.
    type Lock<'a>
    where
        Self: 'a;

    fn lock(&self) -> Result<Self::Lock<'_>, StoreError>;

    /// Held by whoever hands the inbox to the application, for the whole
    /// hand-over, and by nothing else: takers sharing an identity take
    /// turns (each message goes to one of them), while senders and
    /// fetchers, which hold [`lock`](Self::lock) only briefly, never wait
    /// on a slow reader of a taker's output (a full pipe). Not reentrant:
    /// a taker's handler must not take again.
    type TakeLock<'a>
    where
        Self: 'a;

    fn take_lock(&self) -> Result<Self::TakeLock<'_>, StoreError>;

    /// Writes a batch atomically and durably, under `lock` (the proof that
    /// the caller holds it; use [`StoreTransaction`] rather than calling
    /// this directly).
    fn commit(&self, lock: &Self::Lock<'_>, changes: Changes) -> Result<(), StoreError>;

    fn identity(&self) -> Result<Option<IdentityRecord>, StoreError>;
    /// The peer's sessions, most recently receiving first, then newest.
    fn sessions(&self, peer: &UserId) -> Result<Vec<SessionRecord>, StoreError>;
    fn outbox_entry(&self, key: &str) -> Result<Option<OutboxEntry>, StoreError>;
    /// Every outbox entry, oldest first.
    fn outbox(&self) -> Result<Vec<OutboxEntry>, StoreError>;
    fn processed(&self, hash: &str) -> Result<Option<ProcessedRecord>, StoreError>;
    /// Fetched, unhandled mail in fetch order.
    fn incoming(&self) -> Result<Vec<IncomingRecord>, StoreError>;
    /// Whether fetched mail with this body hash is still unhandled (another
    /// process sharing the identity may have handled it): a point lookup,
    /// asked once per message handled.
    fn is_incoming(&self, hash: &str) -> Result<bool, StoreError>;
    /// Decrypted, not yet taken messages in arrival order.
    fn inbox(&self) -> Result<Vec<InboxRecord>, StoreError>;
    fn contacts(&self) -> Result<Vec<Contact>, StoreError>;
    fn setting(&self, key: &str) -> Result<Option<String>, StoreError>;
    /// The saved history rows `of` picks (by the store, an SQL `WHERE`,
    /// before anything is unsealed) with a row number above `after_rowid`
    /// (0: all), oldest first (by save time, then row number, as 0.3.0's
    /// `message_rows` orders them).
    fn messages(
        &self,
        of: MessageFilter<'_>,
        after_rowid: i64,
    ) -> Result<Vec<SavedMessage>, StoreError>;
    /// The blocked senders, sorted.
    fn blocked(&self) -> Result<Vec<UserId>, StoreError>;
    /// Staged contact cards, by recommended name (then fingerprint).
    fn received_contacts(&self) -> Result<Vec<ReceivedContact>, StoreError>;
    /// The groups held (any order).
    fn groups(&self) -> Result<Vec<Group>, StoreError>;
    /// The groups left (any order).
    fn left_groups(&self) -> Result<Vec<LeftGroup>, StoreError>;
    /// The invite codes minted (any order).
    fn invites(&self) -> Result<Vec<InviteRecord>, StoreError>;
}

/// The store's lock together with the batch to write under it (the shape
/// of matrix-sdk-crypto's `StoreTransaction`): reads through
/// [`store`](Self::store) see what no other holder can change meanwhile,
/// [`commit`](Self::commit) writes the batch and releases the lock, and a
/// transaction dropped without a commit writes nothing.
pub struct StoreTransaction<'a, S: Store + ?Sized + 'a> {
    store: &'a S,
    lock: S::Lock<'a>,
    /// What [`commit`](Self::commit) (or [`save`](Self::save)) writes.
    pub changes: Changes,
}

impl<'a, S: Store + ?Sized> StoreTransaction<'a, S> {
    /// Takes the store's lock (waiting for another holder, in this process
    /// or another) with an empty batch.
    pub fn new(store: &'a S) -> Result<Self, StoreError> {
        Ok(Self {
            lock: store.lock()?,
            store,
            changes: Changes::default(),
        })
    }

    /// The store, for reads under the lock (they do not see the batch).
    pub fn store(&self) -> &'a S {
        self.store
    }

    /// Writes the batch so far and keeps the lock, for a run that makes
    /// several durable steps in one turn (taking messages one by one).
    pub fn save(&mut self) -> Result<(), StoreError> {
        let changes = std::mem::take(&mut self.changes);
        if changes.is_empty() {
            return Ok(());
        }
        self.store.commit(&self.lock, changes)
    }

    /// Writes the batch atomically and releases the lock.
    pub fn commit(mut self) -> Result<(), StoreError> {
        self.save()
    }
}

impl<S: Store + ?Sized> Store for std::sync::Arc<S> {
    type Lock<'a>
        = S::Lock<'a>
    where
        Self: 'a;

    fn lock(&self) -> Result<Self::Lock<'_>, StoreError> {
        (**self).lock()
    }
    type TakeLock<'a>
        = S::TakeLock<'a>
    where
        Self: 'a;

    fn take_lock(&self) -> Result<Self::TakeLock<'_>, StoreError> {
        (**self).take_lock()
    }
    fn commit(&self, lock: &Self::Lock<'_>, changes: Changes) -> Result<(), StoreError> {
        (**self).commit(lock, changes)
    }
    fn identity(&self) -> Result<Option<IdentityRecord>, StoreError> {
        (**self).identity()
    }
    fn sessions(&self, peer: &UserId) -> Result<Vec<SessionRecord>, StoreError> {
        (**self).sessions(peer)
    }
    fn outbox_entry(&self, key: &str) -> Result<Option<OutboxEntry>, StoreError> {
        (**self).outbox_entry(key)
    }
    fn outbox(&self) -> Result<Vec<OutboxEntry>, StoreError> {
        (**self).outbox()
    }
    fn processed(&self, hash: &str) -> Result<Option<ProcessedRecord>, StoreError> {
        (**self).processed(hash)
    }
    fn incoming(&self) -> Result<Vec<IncomingRecord>, StoreError> {
        (**self).incoming()
    }
    fn is_incoming(&self, hash: &str) -> Result<bool, StoreError> {
        (**self).is_incoming(hash)
    }
    fn inbox(&self) -> Result<Vec<InboxRecord>, StoreError> {
        (**self).inbox()
    }
    fn contacts(&self) -> Result<Vec<Contact>, StoreError> {
        (**self).contacts()
    }
    fn setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        (**self).setting(key)
    }
    fn messages(
        &self,
        of: MessageFilter<'_>,
        after_rowid: i64,
    ) -> Result<Vec<SavedMessage>, StoreError> {
        (**self).messages(of, after_rowid)
    }
    fn blocked(&self) -> Result<Vec<UserId>, StoreError> {
        (**self).blocked()
    }
    fn received_contacts(&self) -> Result<Vec<ReceivedContact>, StoreError> {
        (**self).received_contacts()
    }
    fn groups(&self) -> Result<Vec<Group>, StoreError> {
        (**self).groups()
    }
    fn left_groups(&self) -> Result<Vec<LeftGroup>, StoreError> {
        (**self).left_groups()
    }
    fn invites(&self) -> Result<Vec<InviteRecord>, StoreError> {
        (**self).invites()
    }
}
