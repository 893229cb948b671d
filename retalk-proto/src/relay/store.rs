//! What the relay keeps, as a domain-level trait.
//!
//! Every method is one atomic step of the protocol (claim one key, accept
//! one message against the caps, hand over and delete a batch), so a
//! backend can do it in one transaction and the relay never composes
//! read-then-write sequences that could race.

use crate::ids::{sha256_hex, UserId};
use crate::wire::{ClaimedKey, KeyCounts, PublicKeys};

/// A storage failure. Backends wrap their own errors; the relay answers
/// them with a generic text and never leaks backend details to strangers.
#[derive(Debug, thiserror::Error)]
#[error("storage error: {0}")]
pub struct StoreError(#[source] pub Box<dyn std::error::Error + Send + Sync>);

impl StoreError {
    pub fn msg(text: impl Into<String>) -> StoreError {
        StoreError(text.into().into())
    }
}

/// Outcome of adding keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishOutcome {
    /// Stored; `added` counts the one-time keys new to the relay (not the
    /// skipped ones, nor those whose material was replaced).
    Published { added: u64 },
    /// The upload would leave more than the cap of unclaimed one-time keys;
    /// nothing was stored.
    TooManyKeys { unclaimed: u64 },
}

/// Outcome of claiming a peer's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimOutcome {
    Claimed(ClaimedKey),
    /// No such user, or it never published keys.
    UnknownPeer,
    /// Known, with no one-time key left and no fallback key.
    Exhausted,
}

/// A message to accept.
#[derive(Debug, Clone, PartialEq)]
pub struct NewMessage {
    pub sender: UserId,
    pub recipient: UserId,
    pub mtype: i64,
    pub body: String,
    /// sha256 hex of `body`: the key of the 0.3.0 refusal gate.
    pub body_hash: String,
    pub ts: f64,
}

impl NewMessage {
    /// A message to store; its `body_hash` is derived here, never passed.
    pub fn new(sender: UserId, recipient: UserId, mtype: i64, body: String, ts: f64) -> Self {
        NewMessage {
            body_hash: sha256_hex(&body),
            sender,
            recipient,
            mtype,
            body,
            ts,
        }
    }
}

/// The caps and the refusal gate applied when accepting a message.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DeliveryRules {
    /// Undelivered messages per recipient; 0 = unlimited.
    pub max_mailbox: u64,
    /// Undelivered messages per (sender, recipient), only with a mailbox cap;
    /// 0 = unlimited.
    pub max_per_sender: u64,
    /// Refusals recorded at or before this time no longer block.
    pub refusals_expire_before: f64,
}

impl DeliveryRules {
    /// The caps' answer to one more message for a mailbox holding `total`
    /// undelivered messages, `from_sender` of them from its sender: `None`
    /// to accept it, else the refusal. Every backend decides with this, so
    /// they agree on the order and the bounds (a backend need not count
    /// without a mailbox cap, nor per sender without a sender cap).
    pub fn over_cap(&self, total: u64, from_sender: u64) -> Option<SendOutcome> {
        if self.max_mailbox == 0 {
            return None;
        }
        if total >= self.max_mailbox {
            return Some(SendOutcome::MailboxFull { total });
        }
        if self.max_per_sender > 0 && from_sender >= self.max_per_sender {
            return Some(SendOutcome::SenderFull { from_sender });
        }
        None
    }
}

/// Outcome of accepting a message.
#[derive(Debug, Clone, PartialEq)]
pub enum SendOutcome {
    Stored {
        message_id: i64,
    },
    /// The recipient nacked this exact body; `sig` is their signed refusal.
    Refused {
        sig: String,
    },
    UnknownRecipient,
    MailboxFull {
        total: u64,
    },
    SenderFull {
        from_sender: u64,
    },
}

/// A queued message as handed over.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredMessage {
    pub message_id: i64,
    pub ts: f64,
    pub sender: String,
    pub mtype: i64,
    pub body: String,
}

/// How much one `read_messages` hands over: at least one message when any
/// is queued, then up to these bounds, oldest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadLimit {
    pub max_messages: usize,
    pub max_bytes: usize,
}

impl ReadLimit {
    /// Whether a batch of `count` messages holding `bytes` of bodies takes
    /// one more of `next` bytes: the first always, then within both bounds.
    pub fn admits(&self, count: usize, bytes: usize, next: usize) -> bool {
        count == 0 || (count < self.max_messages && bytes.saturating_add(next) <= self.max_bytes)
    }
}

/// Bounds on the 0.3.0 refusal table.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RefusalRules {
    /// Refusals older than this are pruned.
    pub expire_before: Option<f64>,
    /// Per recipient; the oldest beyond it are evicted. 0 = unlimited.
    pub max_per_recipient: u64,
}

/// An API key as listed to the operator (never the raw key).
#[derive(Debug, Clone, PartialEq)]
pub struct ApiKeyRecord {
    pub key_hash: String,
    pub label: String,
    pub created: f64,
    pub disabled: bool,
}

/// The relay's state.
pub trait RelayStore: Send + Sync {
    /// Records a nonce, first forgetting nonces used before `forget_before`.
    /// Returns false when the nonce is already known (a replay). Must
    /// survive a restart for durable backends.
    fn use_nonce(&self, nonce: &str, now: f64, forget_before: f64) -> Result<bool, StoreError>;

    /// Upserts the user's identity (creating the mailbox), adds one-time keys
    /// and replaces the fallback key when one is given; unless the unclaimed
    /// one-time keys would exceed `max_unclaimed`, when nothing is stored.
    ///
    /// **A key id is handed out at most once per owner**, whatever is
    /// uploaded later. For each uploaded one-time key, by its id (an opaque
    /// string, compared exactly):
    ///
    /// - an id this owner's keys were ever claimed under is skipped, so a
    ///   client retrying an upload whose answer was lost (vodozemac, and so
    ///   both Python clients and ours, re-upload every key not yet marked
    ///   published) cannot get a claimed key offered again: its receiver
    ///   has used up the private half, and the pair would never recover;
    /// - an id held unclaimed keeps its place in the claim order and takes
    ///   the uploaded material (the same for a retry; different only from
    ///   an account restored from a backup, whose counter restarted, and
    ///   then only the new material can be opened by its owner);
    /// - any other id is added; a repeat within one upload counts once.
    ///
    /// Why remember claimed ids rather than the highest id seen: vodozemac
    /// ids are base64 counters, but the relay treats them as opaque like the
    /// Python relay, so the rule holds for any client's ids, and the fresh
    /// keys of an account restored from a backup (its counter below the
    /// highest id seen) are still published. The cost is one remembered id
    /// per claimed key, for as long as the owner exists (durable backends
    /// keep it across restarts).
    fn publish_keys(
        &self,
        user: &UserId,
        keys: &PublicKeys,
        one_time_keys: &[(String, String)],
        fallback_key: Option<&(String, String)>,
        max_unclaimed: u64,
    ) -> Result<PublishOutcome, StoreError>;

    /// Unclaimed one-time keys and whether a fallback key is set (0/false
    /// for an unknown user).
    fn count_keys(&self, user: &UserId) -> Result<KeyCounts, StoreError>;

    /// The user's published identity and signing keys.
    fn get_keys(&self, user: &UserId) -> Result<Option<PublicKeys>, StoreError>;

    /// Atomically takes the oldest unclaimed one-time key (never the same one
    /// twice, under any concurrency, and never an id claimed before), else
    /// the fallback key (reused until replaced, as vodozemac allows).
    fn claim_key(&self, user: &UserId) -> Result<ClaimOutcome, StoreError>;

    /// Accepts a message for a known recipient, applying the refusal gate
    /// and the caps in one step. Caps reject; they never evict.
    fn send_message(
        &self,
        message: &NewMessage,
        rules: &DeliveryRules,
    ) -> Result<SendOutcome, StoreError>;

    /// Hands over the user's queued mail, oldest first, optionally only from
    /// one sender; deletes what it returns unless `peek`, in the same step.
    fn read_messages(
        &self,
        user: &UserId,
        from: Option<&str>,
        peek: bool,
        limit: ReadLimit,
    ) -> Result<Vec<StoredMessage>, StoreError>;

    /// Records (or refreshes) the recipient's signed refusal of a body hash.
    fn nack(
        &self,
        recipient: &UserId,
        hash: &str,
        sig: &str,
        now: f64,
        rules: &RefusalRules,
    ) -> Result<(), StoreError>;

    /// Whether a non-disabled API key with this sha256 hex exists.
    fn api_key_valid(&self, key_hash: &str) -> Result<bool, StoreError>;
    fn api_key_create(&self, key_hash: &str, label: &str, now: f64) -> Result<(), StoreError>;
    fn api_key_list(&self) -> Result<Vec<ApiKeyRecord>, StoreError>;
    /// Returns how many keys changed.
    fn api_key_set_disabled(&self, key_hash: &str, disabled: bool) -> Result<u64, StoreError>;
    /// Returns how many keys were deleted.
    fn api_key_delete(&self, key_hash: &str) -> Result<u64, StoreError>;
}

/// A shared store is a store: the relay server holds `Arc<dyn RelayStore>`
/// to pick the backend at start.
impl<S: RelayStore + ?Sized> RelayStore for std::sync::Arc<S> {
    fn use_nonce(&self, nonce: &str, now: f64, forget_before: f64) -> Result<bool, StoreError> {
        (**self).use_nonce(nonce, now, forget_before)
    }
    fn publish_keys(
        &self,
        user: &UserId,
        keys: &PublicKeys,
        one_time_keys: &[(String, String)],
        fallback_key: Option<&(String, String)>,
        max_unclaimed: u64,
    ) -> Result<PublishOutcome, StoreError> {
        (**self).publish_keys(user, keys, one_time_keys, fallback_key, max_unclaimed)
    }
    fn count_keys(&self, user: &UserId) -> Result<KeyCounts, StoreError> {
        (**self).count_keys(user)
    }
    fn get_keys(&self, user: &UserId) -> Result<Option<PublicKeys>, StoreError> {
        (**self).get_keys(user)
    }
    fn claim_key(&self, user: &UserId) -> Result<ClaimOutcome, StoreError> {
        (**self).claim_key(user)
    }
    fn send_message(
        &self,
        message: &NewMessage,
        rules: &DeliveryRules,
    ) -> Result<SendOutcome, StoreError> {
        (**self).send_message(message, rules)
    }
    fn read_messages(
        &self,
        user: &UserId,
        from: Option<&str>,
        peek: bool,
        limit: ReadLimit,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        (**self).read_messages(user, from, peek, limit)
    }
    fn nack(
        &self,
        recipient: &UserId,
        hash: &str,
        sig: &str,
        now: f64,
        rules: &RefusalRules,
    ) -> Result<(), StoreError> {
        (**self).nack(recipient, hash, sig, now, rules)
    }
    fn api_key_valid(&self, key_hash: &str) -> Result<bool, StoreError> {
        (**self).api_key_valid(key_hash)
    }
    fn api_key_create(&self, key_hash: &str, label: &str, now: f64) -> Result<(), StoreError> {
        (**self).api_key_create(key_hash, label, now)
    }
    fn api_key_list(&self) -> Result<Vec<ApiKeyRecord>, StoreError> {
        (**self).api_key_list()
    }
    fn api_key_set_disabled(&self, key_hash: &str, disabled: bool) -> Result<u64, StoreError> {
        (**self).api_key_set_disabled(key_hash, disabled)
    }
    fn api_key_delete(&self, key_hash: &str) -> Result<u64, StoreError> {
        (**self).api_key_delete(key_hash)
    }
}
