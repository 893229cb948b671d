//! The client: the original library's `User`, as a state machine over a
//! [`Store`], a [`Transport`] and a [`Clock`].
//!
//! The rules that make it safe to crash anywhere:
//! - the account is saved before its keys are uploaded, and an upload that
//!   failed is retried with the same keys;
//! - a ratchet step and the ciphertext it produced are committed together
//!   (to the outbox) before the ciphertext leaves, and resends reuse it;
//! - fetched mail is stored before it is handled, and a decrypted message
//!   is stored together with its processed marker and its ack before the
//!   ack leaves;
//! - every message and every outbox entry fails alone.

mod follow;
mod memory;
mod store;
mod transport;

pub use follow::{Follow, Followed};
pub use memory::MemoryStore;
pub use store::*;
pub use transport::{LocalTransport, Transport, TransportError};

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use serde::de::DeserializeOwned;
use serde_json::Value;
use vodozemac::olm::{Account, OlmMessage, Session};
use vodozemac::{Curve25519PublicKey, Ed25519PublicKey, Ed25519Signature};

use crate::clock::Clock;
use crate::envelope::{display_name, Envelope};
use crate::ids::{fingerprint, new_message_id, sha256_hex, UserId};
use crate::olm::{self, PickleKey};
use crate::wire::{
    nack_text, Args, ClaimedKey, KeyCounts, MailItem, PublicKeys, SendResult, SignedRequest, Wait,
};

/// Setting keys the client itself reads.
pub mod setting {
    /// The self-chosen display name sent with each message.
    pub const NAME: &str = "name";
    /// The relay URL saved at `init`.
    pub const RELAY_URL: &str = "server_url";
}

/// The client's numbers (PROTOCOL section 9) and the bounds on its tables.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// One-time keys generated per upload.
    pub otk_batch: usize,
    /// Replenish when the relay holds fewer unclaimed keys than this.
    pub min_otks: u64,
    /// Rotate the fallback key when it is older than this (seconds).
    pub fallback_max_age: f64,
    /// First resend of an unacknowledged message after this (seconds); later
    /// resends back off exponentially up to `max_backoff`.
    pub resend_after: f64,
    /// Longest wait between two attempts of one outbox entry.
    pub max_backoff: f64,
    /// Unacknowledged messages older than this are given up and reported.
    pub outbox_max_age: f64,
    /// Processed markers are kept this long; longer than `outbox_max_age`,
    /// so every resend a sender can make is still recognised.
    pub processed_retention: f64,
    /// Sessions kept per peer (least recently used dropped).
    pub sessions_per_peer: usize,
    /// Fetch rounds per receive (each hands over a relay batch).
    pub max_fetch_rounds: usize,
    /// Every this many unacknowledged resends, a message is re-encrypted on
    /// the current session instead of resent as it was: after a relay lost
    /// it, the old ciphertext may be from a ratchet chain the peer has
    /// dropped. Our receivers recognise the new copy by its envelope id; a
    /// Python receiver that was offline through all of them may show it
    /// twice.
    pub reseal_every: u32,
    /// Least time between two repairs of a wedged pair (seconds): when a
    /// peer we hold sessions with sends mail that no session opens (say we
    /// restored a backup), we start a fresh session to them and resend
    /// what they have not acknowledged on it (Matrix's "Olm unwedging",
    /// MSC1719, rate-limited per peer as there).
    pub unwedge_every: f64,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            otk_batch: 100,
            min_otks: 20,
            fallback_max_age: 86_400.0,
            resend_after: 120.0,
            max_backoff: 3_600.0,
            outbox_max_age: 30.0 * 86_400.0,
            processed_retention: 45.0 * 86_400.0,
            sessions_per_peer: 8,
            max_fetch_rounds: 20,
            reseal_every: 4,
            unwedge_every: 60.0,
        }
    }
}

/// Everything a client operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("no identity in this store")]
    NoIdentity,
    #[error("an identity already exists in this store")]
    IdentityExists,
    #[error("could not unlock the identity (wrong secret?)")]
    WrongSecret,
    #[error("relay error from {tool}: {source}")]
    Relay {
        tool: &'static str,
        source: TransportError,
    },
    #[error("bad answer from the relay to {tool}: {detail}")]
    BadResponse { tool: &'static str, detail: String },
    #[error("PIN MISMATCH for peer '{peer}': {detail}. Possible MITM by the server — refusing to establish a session.")]
    PinMismatch { peer: UserId, detail: String },
    #[error("could not start a session with {peer}: {detail}")]
    Session { peer: UserId, detail: String },
    #[error("message {id} is saved in the outbox but did not reach the relay ({source}); it will be resent")]
    NotDelivered {
        id: String,
        source: Box<ClientError>,
    },
    /// The relay answered and refused the upload (a full mailbox, a message
    /// too large): unlike [`NotDelivered`](Self::NotDelivered) it is not a
    /// matter of reaching the relay, though the message is kept and resent.
    #[error("message {id} is saved in the outbox but the relay refused it ({source}); it will be resent")]
    RefusedByRelay {
        id: String,
        source: Box<ClientError>,
    },
}

impl ClientError {
    /// Whether the operation may succeed later unchanged.
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Relay { source, .. } => source.is_transient(),
            ClientError::BadResponse { .. } | ClientError::NotDelivered { .. } => true,
            _ => false,
        }
    }
}

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
}

/// What one `maintain` did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MaintainReport {
    pub unclaimed: u64,
    pub replenished: bool,
    pub fallback_rotated: bool,
    pub flush: FlushReport,
}

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

/// A sent message.
#[derive(Debug, Clone, PartialEq)]
pub struct SendReceipt {
    pub id: String,
    pub delivery: Delivery,
}

/// Outcome of handling one fetched message.
enum Handled {
    Done,
    Transient,
    Failed(String),
    /// A peer's Olm message that none of our sessions (nor our account)
    /// could open: reported like `Failed`, and a sign of a wedged pair.
    Unopenable(String),
}

/// What the locked part of handling a message left to send: the ack, and
/// unacknowledged messages to re-encrypt for a peer that started over.
#[derive(Default)]
struct Opened {
    ack: Option<OutboxEntry>,
    resend: Vec<OutboxEntry>,
}

/// The setting under which the last repair of a pair is remembered.
fn unwedged_setting(peer: &UserId) -> String {
    format!("unwedged_at/{peer}")
}

/// The processed marker of an envelope from a sender, beside the marker of
/// each ciphertext: re-encrypted copies of one envelope have different
/// ciphertexts but the same id.
fn envelope_marker(sender: &UserId, envelope_id: &str) -> String {
    format!("envelope/{sender}/{envelope_id}")
}

/// The public face of an identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityInfo {
    pub user_id: UserId,
    pub identity_key: String,
    pub signing_key: String,
}

/// Creates a new identity in an empty store (offline: nothing is published
/// until the first send or receive).
pub fn create_identity<S: Store>(
    store: &S,
    secret: &str,
    name: &str,
) -> Result<IdentityInfo, ClientError> {
    let key = PickleKey::from_secret(secret);
    let _lock = store.lock()?;
    if store.identity()?.is_some() {
        return Err(ClientError::IdentityExists);
    }
    let account = Account::new();
    store.commit(Changes {
        identity: Some(IdentityRecord {
            account_pickle: olm::pickle_account(&account, &key),
            fallback_published_at: None,
        }),
        settings: vec![(setting::NAME.into(), name.into())],
        ..Changes::default()
    })?;
    Ok(info(&account))
}

/// Unlocks the identity in a store and describes it (offline).
pub fn identity_info<S: Store>(store: &S, secret: &str) -> Result<IdentityInfo, ClientError> {
    Ok(info(&unlock(store, &PickleKey::from_secret(secret))?))
}

fn unlock<S: Store>(store: &S, key: &PickleKey) -> Result<Account, ClientError> {
    let record = store.identity()?.ok_or(ClientError::NoIdentity)?;
    olm::unpickle_account(&record.account_pickle, key).map_err(|_| ClientError::WrongSecret)
}

fn info(account: &Account) -> IdentityInfo {
    let identity_key = account.curve25519_key().to_base64();
    let signing_key = account.ed25519_key().to_base64();
    IdentityInfo {
        user_id: UserId::from_keys(&identity_key, &signing_key),
        identity_key,
        signing_key,
    }
}

/// A retalk user: an identity with a mailbox on one relay.
pub struct Client<S, T, C> {
    store: S,
    transport: T,
    clock: C,
    key: PickleKey,
    /// The identity half of the account, for signing requests; it never
    /// changes, so it need not be reloaded like the rest.
    signer: Account,
    user_id: UserId,
    identity_key: String,
    signing_key: String,
    config: ClientConfig,
    published: AtomicBool,
    wait_support: Mutex<WaitSupport>,
}

/// Whether the relay holds a `read_messages` with `wait`, as learned from
/// its answers (Python relays refuse the argument).
#[derive(Debug, Clone, Copy, PartialEq)]
enum WaitSupport {
    Unknown,
    Yes,
    /// Refused at this time; asked again after [`WAIT_RECHECK`] seconds or
    /// once the relay was unreachable (it may have been replaced).
    No {
        since: f64,
    },
}

/// Seconds before a relay that refused `wait` is asked again.
const WAIT_RECHECK: f64 = 600.0;

/// What [`Client::wait_for_mail`] saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailWait {
    /// There is mail on the relay for us: [`Client::fetch`] it.
    Arrived,
    /// The wait ran out without mail (or the relay answered early).
    Nothing,
    /// The relay does not hold reads (a Python relay): poll instead.
    Unsupported,
}

impl<S: Store, T: Transport, C: Clock> Client<S, T, C> {
    /// Creates a new identity in an empty store and opens it.
    pub fn create(
        store: S,
        transport: T,
        clock: C,
        secret: &str,
        name: &str,
    ) -> Result<Self, ClientError> {
        create_identity(&store, secret, name)?;
        Self::open(store, transport, clock, secret)
    }

    /// Opens the identity in a store.
    pub fn open(store: S, transport: T, clock: C, secret: &str) -> Result<Self, ClientError> {
        let key = PickleKey::from_secret(secret);
        let signer = unlock(&store, &key)?;
        let identity_key = signer.curve25519_key().to_base64();
        let signing_key = signer.ed25519_key().to_base64();
        let user_id = UserId::from_keys(&identity_key, &signing_key);
        Ok(Self {
            store,
            transport,
            clock,
            key,
            signer,
            user_id,
            identity_key,
            signing_key,
            config: ClientConfig::default(),
            published: AtomicBool::new(false),
            wait_support: Mutex::new(WaitSupport::Unknown),
        })
    }

    pub fn with_config(mut self, config: ClientConfig) -> Self {
        self.config = config;
        self
    }

    /// This user's id: share it out of band; it is address and pin in one.
    pub fn user_id(&self) -> &UserId {
        &self.user_id
    }

    /// The Curve25519 identity key, base64.
    pub fn identity_key(&self) -> &str {
        &self.identity_key
    }

    pub fn signing_key(&self) -> &str {
        &self.signing_key
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    pub fn transport(&self) -> &T {
        &self.transport
    }

    /// The self-chosen name sent with messages.
    pub fn name(&self) -> Result<String, ClientError> {
        Ok(self.store.setting(setting::NAME)?.unwrap_or_default())
    }

    /// Saves a peer under a local name (and an optional identity-key pin).
    pub fn add_contact(
        &self,
        name: &str,
        id: UserId,
        pin: Option<String>,
    ) -> Result<(), ClientError> {
        let _lock = self.store.lock()?;
        self.store.commit(Changes {
            contacts: vec![Contact {
                name: name.into(),
                id,
                pin,
            }],
            ..Changes::default()
        })?;
        Ok(())
    }

    // ---------- requests ----------

    fn sign(&self, args: &Args) -> SignedRequest {
        SignedRequest::sign(
            &self.signer,
            args,
            self.transport.audience(),
            self.clock.now(),
        )
    }

    async fn call<R: DeserializeOwned>(&self, args: Args) -> Result<R, ClientError> {
        let tool = args.tool().name();
        let value = self
            .transport
            .call(self.sign(&args))
            .await
            .map_err(|source| ClientError::Relay { tool, source })?;
        serde_json::from_value(value).map_err(|e| ClientError::BadResponse {
            tool,
            detail: e.to_string(),
        })
    }

    fn load_account(&self) -> Result<(Account, IdentityRecord), ClientError> {
        let record = self.store.identity()?.ok_or(ClientError::NoIdentity)?;
        let account = olm::unpickle_account(&record.account_pickle, &self.key)
            .map_err(|_| ClientError::WrongSecret)?;
        Ok((account, record))
    }

    /// Refuses keys that do not hash to the peer's id or contradict a pin.
    fn verify_peer_keys(&self, peer: &UserId, keys: &PublicKeys) -> Result<(), ClientError> {
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

    // ---------- keys ----------

    /// Publishes identity, `n` fresh one-time keys and (first time, or when
    /// asked) a fallback key. This is all the onboarding a relay needs.
    pub async fn publish(&self, n: usize, rotate_fallback: bool) -> Result<(), ClientError> {
        let (one_time_keys, fallback_key) = self.prepare_keys(n, rotate_fallback)?;
        let sent_fallback = fallback_key.is_some();
        let args = Args::PublishKeys {
            identity_key: self.identity_key.clone(),
            signing_key: self.signing_key.clone(),
            one_time_keys,
            fallback_key,
        };
        // Every relay generation answers `{"ok": true, ...}`; anything else
        // (a portal's or proxy's JSON) must not mark the keys as published.
        let answer: Value = self.call(args).await?;
        if answer.get("ok") != Some(&Value::Bool(true)) {
            return Err(ClientError::BadResponse {
                tool: "publish_keys",
                detail: "expected {\"ok\": true}, got a different answer".into(),
            });
        }
        let _lock = self.store.lock()?;
        let (mut account, record) = self.load_account()?;
        account.mark_keys_as_published();
        let fallback_published_at = if sent_fallback {
            Some(self.clock.now())
        } else {
            record.fallback_published_at
        };
        self.store.commit(Changes {
            identity: Some(IdentityRecord {
                account_pickle: olm::pickle_account(&account, &self.key),
                fallback_published_at,
            }),
            ..Changes::default()
        })?;
        self.published.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// Generates what is to be uploaded and saves it first. Keys left
    /// unpublished by a failed upload are uploaded again as they are.
    #[allow(clippy::type_complexity)]
    fn prepare_keys(
        &self,
        n: usize,
        rotate: bool,
    ) -> Result<(Vec<(String, String)>, Option<(String, String)>), ClientError> {
        let _lock = self.store.lock()?;
        let (mut account, record) = self.load_account()?;
        let mut changed = false;
        if n > 0 && account.one_time_keys().is_empty() {
            account.generate_one_time_keys(n);
            changed = true;
        }
        if (rotate || record.fallback_published_at.is_none()) && account.fallback_key().is_empty() {
            account.generate_fallback_key();
            changed = true;
        }
        if changed {
            self.store.commit(Changes {
                identity: Some(IdentityRecord {
                    account_pickle: olm::pickle_account(&account, &self.key),
                    ..record
                }),
                ..Changes::default()
            })?;
        }
        let mut otks: Vec<_> = account
            .one_time_keys()
            .into_iter()
            .map(|(id, k)| (id.to_base64(), k.to_base64()))
            .collect();
        otks.sort();
        let fallback = account
            .fallback_key()
            .into_iter()
            .map(|(id, k)| (id.to_base64(), k.to_base64()))
            .next();
        Ok((otks, fallback))
    }

    /// Makes sure the relay knows us (a wiped or new relay heals itself).
    /// Checked once per client; `maintain` re-checks.
    pub async fn ensure_published(&self) -> Result<(), ClientError> {
        if self.published.load(Ordering::SeqCst) {
            return Ok(());
        }
        let counts: KeyCounts = self.call(Args::CountKeys).await?;
        if !counts.has_fallback || counts.unclaimed < self.config.min_otks {
            let n = if counts.unclaimed < self.config.min_otks {
                self.config.otk_batch
            } else {
                0
            };
            self.publish(n, !counts.has_fallback).await?;
        }
        self.published.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// Keeps relay-side keys healthy and the outbox moving; call it
    /// periodically (the CLI does once a minute).
    pub async fn maintain(&self) -> Result<MaintainReport, ClientError> {
        let counts: KeyCounts = self.call(Args::CountKeys).await?;
        let record = self.store.identity()?.ok_or(ClientError::NoIdentity)?;
        let need_otks = counts.unclaimed < self.config.min_otks;
        let need_rotate = !counts.has_fallback
            || record
                .fallback_published_at
                .is_none_or(|at| self.clock.now() - at > self.config.fallback_max_age);
        if need_otks || need_rotate {
            self.publish(
                if need_otks { self.config.otk_batch } else { 0 },
                need_rotate,
            )
            .await?;
        }
        self.published.store(true, Ordering::SeqCst);
        let flush = self.flush_due().await?;
        self.prune()?;
        Ok(MaintainReport {
            unclaimed: counts.unclaimed,
            replenished: need_otks,
            fallback_rotated: need_rotate,
            flush,
        })
    }

    fn prune(&self) -> Result<(), ClientError> {
        let _lock = self.store.lock()?;
        self.store.commit(Changes {
            processed_forget_before: Some(self.clock.now() - self.config.processed_retention),
            ..Changes::default()
        })?;
        Ok(())
    }

    // ---------- sending ----------

    /// Encrypts and sends a message. It stays in the outbox until the peer
    /// acks it. If the relay cannot take it now, the error says so and the
    /// message is resent later.
    pub async fn send(&self, to: &UserId, text: &str) -> Result<SendReceipt, ClientError> {
        self.ensure_published().await?;
        self.ensure_session(to).await?;
        let envelope = Envelope::msg(new_message_id(), text, &self.name()?);
        let entry = {
            let _lock = self.store.lock()?;
            let (entry, changes) = self.seal(to, &envelope, OutboxKind::Message)?;
            self.store.commit(changes)?;
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
        let _lock = self.store.lock()?;
        if !self.store.sessions(peer)?.is_empty() {
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
        self.store.commit(Changes {
            sessions: vec![record],
            ..Changes::default()
        })?;
        Ok(())
    }

    /// Claims one of the peer's one-time keys (or its fallback key) and
    /// checks the keys against the peer's id and pin: the identity key and
    /// the one-time key for an outbound session.
    async fn claim_peer_key(
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

    /// Encrypts an envelope on the peer's send session. Returns the outbox
    /// entry and the changes (advanced session + entry) to commit together.
    /// Call with the store lock held.
    fn seal(
        &self,
        peer: &UserId,
        envelope: &Envelope,
        kind: OutboxKind,
    ) -> Result<(OutboxEntry, Changes), ClientError> {
        let mut record = self
            .store
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
        Ok((
            entry.clone(),
            Changes {
                sessions: vec![record],
                outbox: vec![entry],
                ..Changes::default()
            },
        ))
    }

    fn encrypt_entry(
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
    /// ratchet chain the peer has moved past. Call with the lock held.
    fn reseal(&self, current: OutboxEntry) -> Result<OutboxEntry, ClientError> {
        let Some(sealed) = &current.envelope else {
            return Ok(current);
        };
        let Ok(envelope) = self.key.open(sealed).map(|plain| Envelope::decode(&plain)) else {
            return Ok(current);
        };
        let Ok(envelope) = envelope else {
            return Ok(current);
        };
        if self.store.sessions(&current.peer)?.is_empty() {
            return Ok(current);
        }
        let (fresh, mut changes) = self.seal(&current.peer, &envelope, current.kind)?;
        let entry = OutboxEntry {
            mtype: fresh.mtype,
            body: fresh.body,
            envelope: fresh.envelope,
            reencrypt: false,
            ..current
        };
        changes.outbox = vec![entry.clone()];
        self.store.commit(changes)?;
        Ok(entry)
    }

    /// Hands one outbox entry to the relay and records the outcome.
    async fn deliver(&self, entry: &OutboxEntry) -> Result<Delivery, ClientError> {
        // A ciphertext the relay certainly does not hold, or whose ratchet
        // position the peer has moved past, is re-encrypted on the current
        // session (see `OutboxEntry::reencrypt`); one that may be queued is
        // resent byte-identical (so every receiver recognises the copy),
        // except every `reseal_every`-th unacknowledged resend, in case the
        // relay lost it and the peer can no longer decrypt it.
        let periodic = entry.attempts > 0
            && entry
                .attempts
                .is_multiple_of(self.config.reseal_every.max(1));
        let resealed;
        let entry = if entry.envelope.is_some() && (entry.reencrypt || periodic) {
            let _lock = self.store.lock()?;
            match self.store.outbox_entry(&entry.key)? {
                Some(current) => {
                    resealed = self.reseal(current)?;
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
        let _lock = self.store.lock()?;
        let Some(mut current) = self.store.outbox_entry(&entry.key)? else {
            return Ok(()); // acked meanwhile
        };
        let now = self.clock.now();
        let mut changes = Changes::default();
        match outcome {
            Ok(Delivery::Refused) => {
                // The peer refused our ciphertext: drop it and our sessions
                // with them, so the next message starts a fresh session.
                changes.outbox_removed.push(current.key);
                for s in self.store.sessions(&entry.peer)? {
                    changes.sessions_removed.push((s.peer, s.session_id));
                }
            }
            Ok(Delivery::Queued { .. }) if current.kind == OutboxKind::Ack => {
                changes.outbox_removed.push(current.key)
            }
            Ok(Delivery::Queued { .. }) => {
                current.attempts += 1;
                current.last_error = None;
                current.next_attempt =
                    now + self.backoff(self.config.resend_after, current.attempts);
                changes.outbox.push(current);
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
                changes.outbox.push(current);
            }
        }
        self.store.commit(changes)?;
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
            let _lock = self.store.lock()?;
            let mut changes = Changes::default();
            for e in self.store.outbox()? {
                if now - e.created > self.config.outbox_max_age {
                    changes.outbox_removed.push(e.key.clone());
                    expired.push(e);
                }
            }
            if !changes.is_empty() {
                self.store.commit(changes)?;
            }
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

    async fn flush(&self, entries: Vec<OutboxEntry>) -> Result<FlushReport, ClientError> {
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

    // ---------- receiving ----------

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
    pub async fn fetch(&self) -> Result<Inbox, ClientError> {
        self.ensure_published().await?;
        let mut inbox = Inbox::default();
        for _ in 0..self.config.max_fetch_rounds.max(1) {
            let mail: Vec<MailItem> = self
                .call(Args::ReadMessages {
                    peer: None,
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
                Handled::Failed(reason) | Handled::Unopenable(reason) => {
                    let _lock = self.store.lock()?;
                    self.store.commit(Changes {
                        incoming_removed: vec![record.hash.clone()],
                        ..Changes::default()
                    })?;
                    inbox.problems.push(Problem {
                        from: record.from.clone(),
                        reason,
                    });
                }
            }
        }
        let acks: Vec<_> = self
            .store
            .outbox()?
            .into_iter()
            .filter(|e| e.kind == OutboxKind::Ack)
            .collect();
        self.flush(acks).await?;
        Ok(inbox)
    }

    /// Waits up to `seconds` for mail to arrive on the relay, taking none:
    /// a `read_messages` with `peek` and `wait` (our relay's long-poll).
    /// The wait deletes nothing, so dropping this future at any point
    /// loses nothing; [`fetch`](Self::fetch) then takes the mail.
    ///
    /// A relay that refuses `wait` (Python's: HTTP 400 "unexpected keyword
    /// argument 'wait'", or 'peek' from a 0.0.1 relay, which spends no
    /// nonce and deletes nothing) is
    /// remembered: `Unsupported` is answered without asking for the next
    /// ten minutes, or until the relay was unreachable.
    pub async fn wait_for_mail(&self, seconds: f64) -> Result<MailWait, ClientError> {
        let Some(wait) = Wait::new(seconds) else {
            return Ok(MailWait::Nothing);
        };
        let now = self.clock.now();
        let support = *self.wait_support.lock().unwrap_or_else(|e| e.into_inner());
        if let WaitSupport::No { since } = support {
            if now >= since && now - since < WAIT_RECHECK {
                return Ok(MailWait::Unsupported);
            }
        }
        let set = |s: WaitSupport| *self.wait_support.lock().unwrap_or_else(|e| e.into_inner()) = s;
        let answer: Result<Vec<MailItem>, ClientError> = self
            .call(Args::ReadMessages {
                peer: None,
                peek: true,
                wait: Some(wait),
            })
            .await;
        match answer {
            Ok(mail) => {
                set(WaitSupport::Yes);
                Ok(if mail.is_empty() {
                    MailWait::Nothing
                } else {
                    MailWait::Arrived
                })
            }
            Err(ClientError::Relay {
                source: TransportError::Refused { status: 400, error },
                ..
            }) if ["'wait'", "'peek'"]
                .iter()
                .any(|arg| error.contains(&format!("unexpected keyword argument {arg}"))) =>
            {
                set(WaitSupport::No { since: now });
                Ok(MailWait::Unsupported)
            }
            Err(e) => {
                if matches!(
                    e,
                    ClientError::Relay {
                        source: TransportError::NotSent(_) | TransportError::Unreachable(_),
                        ..
                    }
                ) {
                    set(WaitSupport::Unknown);
                }
                Err(e)
            }
        }
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
        let _lock = self.store.lock()?;
        self.store.commit(Changes {
            incoming,
            ..Changes::default()
        })?;
        Ok(())
    }

    /// Hands the decrypted messages to the application, removing them.
    /// For an application that can lose a message after this returns (a
    /// printer to a pipe), [`take_messages`](Self::take_messages) removes
    /// each only once it is handled.
    pub fn take_inbox(&self) -> Result<Vec<Received>, ClientError> {
        let _lock = self.store.lock()?;
        let messages = self.pending_messages()?;
        if !messages.is_empty() {
            self.store.commit(Changes {
                inbox_removed: messages.iter().map(|m| m.key.clone()).collect(),
                ..Changes::default()
            })?;
        }
        Ok(messages)
    }

    /// Hands at most `limit` decrypted messages, oldest first, to `deliver`
    /// one at a time, and removes each from the inbox only after `deliver`
    /// returned `Ok` for it; the first error stops the run and is returned,
    /// leaving that message and the rest for the next call. Returns how
    /// many were taken.
    ///
    /// The whole run holds the store's lock (across processes for a file
    /// store), so processes sharing an identity never hand out the same
    /// message twice: a second taker waits, then finds only what the first
    /// left. A crash between `deliver` and the removal shows the message
    /// again on the next run (at least once, never lost); keep `deliver`
    /// short, since every other user of the store waits for it.
    pub fn take_messages<E: From<ClientError>>(
        &self,
        limit: usize,
        mut deliver: impl FnMut(&Received) -> Result<(), E>,
    ) -> Result<usize, E> {
        if limit == 0 {
            return Ok(0);
        }
        let _lock = self.store.lock().map_err(ClientError::from)?;
        // Read under the lock: whatever another taker removed is gone.
        let pending = self.pending_messages()?;
        let mut taken = 0;
        for m in pending.into_iter().take(limit) {
            deliver(&m)?;
            self.store
                .commit(Changes {
                    inbox_removed: vec![m.key],
                    ..Changes::default()
                })
                .map_err(ClientError::from)?;
            taken += 1;
        }
        Ok(taken)
    }

    /// The decrypted messages not yet taken, oldest first, without removing
    /// them: for looking (a count, a test). To hand them on, use
    /// [`take_messages`](Self::take_messages) or
    /// [`take_inbox`](Self::take_inbox); another process may take a message
    /// this returned at any moment.
    pub fn pending_messages(&self) -> Result<Vec<Received>, ClientError> {
        let records = self.store.inbox()?;
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let contacts = self.store.contacts()?;
        let saved = |id: &UserId| {
            contacts
                .iter()
                .find(|c| &c.id == id)
                .map(|c| c.name.as_str())
        };
        Ok(records
            .into_iter()
            .map(|r| Received {
                name: display_name(saved(&r.from), &r.claimed_name),
                key: r.hash,
                id: r.envelope_id,
                from: r.from,
                text: r.text,
            })
            .collect())
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
            let _lock = self.store.lock()?;
            match self.open_locked(record, &sender, &message, sender_key)? {
                Ok(opened) => opened,
                Err(Handled::Unopenable(reason)) => {
                    drop(_lock);
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
        Ok(Handled::Done)
    }

    /// The unacknowledged messages to `peer`, marked to be re-encrypted on
    /// the current session and due at once (the peer may be unable to open
    /// their old ciphertexts). Call with the lock held; commit the result.
    fn unacknowledged(&self, peer: &UserId, now: f64) -> Result<Vec<OutboxEntry>, ClientError> {
        Ok(self
            .store
            .outbox()?
            .into_iter()
            .filter(|e| &e.peer == peer && e.kind == OutboxKind::Message)
            .filter(|e| e.envelope.is_some())
            .map(|e| OutboxEntry {
                reencrypt: true,
                next_attempt: e.next_attempt.min(now),
                ..e
            })
            .collect())
    }

    /// Repairs a wedged pair (MSC1719's "Olm unwedging"): a peer we hold
    /// sessions with sent mail that none of them opens, so one side lost
    /// its ratchet state (a restored backup, a lost session). Starts a
    /// fresh outbound session to the peer, makes it the send session, sends
    /// a dummy (an ack of nothing, which every client drops silently) so
    /// the peer learns the session even when we have nothing to say, and
    /// re-encrypts on it every message the peer has not acknowledged. The
    /// peer, seeing a new session from us, does the same for ours. At most
    /// once per peer per `unwedge_every`; returns whether it ran.
    async fn unwedge(&self, peer: &UserId) -> Result<bool, ClientError> {
        let setting = unwedged_setting(peer);
        let recently = |now: f64| -> Result<bool, ClientError> {
            Ok(self
                .store
                .setting(&setting)?
                .and_then(|v| v.parse::<f64>().ok())
                .is_some_and(|at| at <= now && now - at < self.config.unwedge_every))
        };
        if self.store.sessions(peer)?.is_empty() || recently(self.clock.now())? {
            return Ok(false);
        }
        let (identity_key, one_time_key) = self.claim_peer_key(peer).await?;
        let outgoing = {
            let _lock = self.store.lock()?;
            let now = self.clock.now();
            if recently(now)? {
                return Ok(false); // another task or process repaired it
            }
            let (account, _) = self.load_account()?;
            let mut session = account
                .create_outbound_session(olm::session_config(), identity_key, one_time_key)
                .map_err(|e| ClientError::Session {
                    peer: peer.clone(),
                    detail: e.to_string(),
                })?;
            let dummy = self.encrypt_entry(
                &mut session,
                peer,
                &Envelope::Ack {
                    id: new_message_id(),
                },
                OutboxKind::Ack,
            )?;
            let resend = self.unacknowledged(peer, now)?;
            let mut changes = Changes {
                // `last_received` now: the send session is the one that most
                // recently received, and this one must win over the wedged.
                sessions: vec![SessionRecord {
                    peer: peer.clone(),
                    session_id: session.session_id(),
                    pickle: olm::pickle_session(&session, &self.key),
                    last_received: now,
                    created: now,
                }],
                outbox: vec![dummy.clone()],
                settings: vec![(setting.clone(), now.to_string())],
                ..Changes::default()
            };
            changes.outbox.extend(resend.iter().cloned());
            self.store.commit(changes)?;
            std::iter::once(dummy).chain(resend).collect::<Vec<_>>()
        };
        self.flush(outgoing).await?;
        Ok(true)
    }

    /// Whether `rec` is the session `id`. Sessions migrated from Python
    /// retalk 0.0.1 are stored without their id (it is inside the pickle),
    /// so those are opened to see.
    fn is_session(&self, rec: &SessionRecord, id: &str) -> bool {
        rec.session_id == id
            || (rec.session_id.is_empty()
                && olm::unpickle_session(&rec.pickle, &self.key)
                    .is_ok_and(|s| s.session_id() == id))
    }

    /// The locked part of handling a message: decrypt, act on the envelope,
    /// commit everything it changed in one batch. Returns the ack to send.
    #[allow(clippy::type_complexity)]
    fn open_locked(
        &self,
        record: &IncomingRecord,
        sender: &UserId,
        message: &OlmMessage,
        sender_key: Option<Curve25519PublicKey>,
    ) -> Result<Result<Opened, Handled>, ClientError> {
        // Another process sharing the identity may have handled it since
        // this one read the incoming table (without the lock).
        if !self.store.incoming()?.iter().any(|r| r.hash == record.hash) {
            return Ok(Err(Handled::Done));
        }
        let now = self.clock.now();
        let mut changes = Changes {
            incoming_removed: vec![record.hash.clone()],
            ..Changes::default()
        };

        // A copy of something already handled: re-ack it (our first ack may
        // have been lost), never surface it again.
        if let Some(done) = self.store.processed(&record.hash)? {
            if &done.peer != sender
                || done.envelope_id.is_empty()
                || self.store.sessions(sender)?.is_empty()
            {
                self.store.commit(changes)?;
                return Ok(Ok(Opened::default()));
            }
            let (entry, sealed) = self.seal(
                sender,
                &Envelope::Ack {
                    id: done.envelope_id,
                },
                OutboxKind::Ack,
            )?;
            changes.sessions = sealed.sessions;
            changes.outbox = sealed.outbox;
            self.store.commit(changes)?;
            return Ok(Ok(Opened {
                ack: Some(entry),
                resend: Vec::new(),
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
            changes
                .sessions_removed
                .push((sender.clone(), String::new()));
            rec.session_id = session.session_id();
        }
        if let Some((account, identity)) = account_changed {
            changes.identity = Some(IdentityRecord {
                account_pickle: olm::pickle_account(&account, &self.key),
                ..identity
            });
        }
        // Bound the sessions kept per peer (least recently used go).
        let keep = self.config.sessions_per_peer.saturating_sub(1);
        for old in sessions.iter().skip(keep) {
            changes
                .sessions_removed
                .push((old.peer.clone(), old.session_id.clone()));
        }

        let mut problem = None;
        let mut ack = None;
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
                        changes.outbox.extend(
                            self.unacknowledged(sender, now)?
                                .into_iter()
                                .filter(|e| e.key != acked.key && e.created <= acked.created),
                        );
                        changes.outbox_removed.push(acked.key);
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
                    changes.processed.push(ProcessedRecord {
                        hash: marker,
                        envelope_id: envelope_id.clone(),
                        peer: sender.clone(),
                        at: now,
                    });
                }
                match envelope {
                    _ if seen => {}
                    Envelope::Msg { id, text, name, .. } => changes.inbox.push(InboxRecord {
                        hash: record.hash.clone(),
                        envelope_id: id,
                        from: sender.clone(),
                        claimed_name: name,
                        text,
                        received_at: now,
                    }),
                    Envelope::Other { kind, .. } => {
                        problem = Some(format!("ignored a '{kind}' envelope (not supported here)"))
                    }
                    Envelope::Ack { .. } => {}
                }
                if !envelope_id.is_empty() {
                    // The session that just decrypted is the send session.
                    let entry = self.encrypt_entry(
                        &mut session,
                        sender,
                        &Envelope::Ack {
                            id: envelope_id.clone(),
                        },
                        OutboxKind::Ack,
                    )?;
                    changes.outbox.push(entry.clone());
                    ack = Some(entry);
                }
            }
        }
        rec.pickle = olm::pickle_session(&session, &self.key);
        changes.sessions.push(rec);
        changes.processed.push(ProcessedRecord {
            hash: record.hash.clone(),
            envelope_id,
            peer: sender.clone(),
            at: now,
        });
        let resend = if peer_started_over {
            let resend = self.unacknowledged(sender, now)?;
            changes.outbox.extend(resend.iter().cloned());
            resend
        } else {
            Vec::new()
        };
        self.store.commit(changes)?;
        match problem {
            // Handled and committed; reported, and the incoming row is gone.
            Some(reason) => Ok(Err(Handled::Failed(reason))),
            None => Ok(Ok(Opened { ack, resend })),
        }
    }
}
