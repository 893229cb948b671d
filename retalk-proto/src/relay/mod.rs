//! The relay's semantics: verify a request, apply the tool, answer in the
//! caller's dialect. No sockets and no clock: the HTTP server hands in the
//! body bytes and `now`.

mod memory;
mod rate;
mod store;

pub use memory::MemoryRelayStore;
pub use rate::RateLimiter;
pub use store::*;

use serde_json::{json, Value};
use vodozemac::{Ed25519PublicKey, Ed25519Signature};

use crate::auth::{AuthError, Dialect, KeyCache, NONCE_RETENTION};
use crate::ids::{is_sha256_hex, UserId};
use crate::wire::{nack_text, Args, PublicKeys, Request, RequestError, Wait};

/// Relay policy. Defaults are the Python relay's, plus the bounds that keep
/// one stranger from growing the relay without limit.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// URLs signatures may be bound to; the first that verifies wins.
    pub audiences: Vec<String>,
    /// Undelivered messages per recipient; 0 = unlimited.
    pub max_mailbox: u64,
    /// Undelivered messages per sender in one mailbox; 0 = unlimited.
    pub max_mailbox_per_sender: u64,
    /// Refusals kept per recipient; 0 = unlimited.
    pub max_refused: u64,
    /// Seconds a refusal lives; 0 = forever.
    pub refused_ttl: f64,
    /// Unclaimed one-time keys one user may hold.
    pub max_unclaimed_otks: u64,
    /// Longest accepted message body, in bytes of base64 text.
    pub max_message_bytes: usize,
    /// Most messages and bytes one `read_messages` hands over.
    pub read_limit: ReadLimit,
    /// Verified requests per user id per minute; 0 = unlimited.
    pub rate_limit: usize,
    /// Longest a `read_messages` with `wait` is held, in seconds; longer
    /// waits are shortened to it. 0 answers every read at once.
    pub max_wait: f64,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            audiences: vec!["http://127.0.0.1:8766".into()],
            max_mailbox: 0,
            max_mailbox_per_sender: 0,
            max_refused: 1000,
            refused_ttl: 7.0 * 24.0 * 3600.0,
            max_unclaimed_otks: 1000,
            max_message_bytes: 1024 * 1024,
            read_limit: ReadLimit {
                max_messages: 1000,
                max_bytes: 8 * 1024 * 1024,
            },
            rate_limit: 0,
            max_wait: 25.0,
        }
    }
}

/// Seconds of the per-id rate window.
pub const RATE_WINDOW: f64 = 60.0;
/// Longest peer text echoed back in an error.
const ECHO_MAX: usize = 128;

fn echo(s: &str) -> String {
    s.chars().take(ECHO_MAX).collect()
}

/// Every refusal the relay can give. `Display` is the wire text.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error(transparent)]
    Request(#[from] RequestError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("rate limit exceeded; slow down and retry")]
    RateLimited,
    #[error("published keys do not match user id")]
    KeysDoNotMatch,
    #[error(
        "too many one-time keys: {unclaimed} unclaimed plus {adding} new exceeds the cap of {cap}"
    )]
    TooManyKeys {
        unclaimed: u64,
        adding: usize,
        cap: u64,
    },
    #[error("unknown peer or no published keys: {0}")]
    UnknownPeer(String),
    #[error("no one-time keys left for peer: {0} (and no fallback key)")]
    NoKeysLeft(String),
    #[error("unknown recipient: {0}")]
    UnknownRecipient(String),
    #[error("mailbox full: {to} has {total} undelivered messages (cap {cap}); resend later from your outbox")]
    MailboxFull { to: String, total: u64, cap: u64 },
    #[error("mailbox full for sender: {sender} already has {from_sender} undelivered messages for {to} (per-sender cap {cap}); resend later from your outbox")]
    SenderFull {
        sender: String,
        from_sender: u64,
        to: String,
        cap: u64,
    },
    #[error("message too large: {len} bytes (max {max})")]
    MessageTooLarge { len: usize, max: usize },
    #[error("hash must be a 64-char sha256 hex digest")]
    BadNackHash,
    #[error("bad nack signature")]
    BadNackSignature,
    #[error("relay storage unavailable; retry later")]
    Store(#[from] StoreError),
}

impl RelayError {
    /// The HTTP status of this refusal.
    pub fn status(&self) -> u16 {
        match self {
            RelayError::RateLimited => 429,
            RelayError::Store(_) => 503,
            _ => 400,
        }
    }
}

/// A status and a JSON body.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    pub status: u16,
    pub body: Value,
}

impl Response {
    pub fn ok(body: Value) -> Self {
        Self { status: 200, body }
    }
    pub fn error(status: u16, text: impl std::fmt::Display) -> Self {
        Self {
            status,
            body: json!({ "error": text.to_string() }),
        }
    }
}

fn answer(result: Result<Value, RelayError>, mail_for: Option<UserId>) -> Outcome {
    Outcome::Answer {
        response: match result {
            Ok(v) => Response::ok(v),
            Err(e) => e.into(),
        },
        mail_for,
    }
}

impl From<RelayError> for Response {
    fn from(e: RelayError) -> Self {
        Response::error(e.status(), &e)
    }
}

/// What a request came to, for the edge that serves it: the core decides,
/// the edge acts (answers, wakes, parks), so it never inspects requests.
#[derive(Debug)]
pub enum Outcome {
    /// Answer now.
    Answer {
        response: Response,
        /// A message was stored for this user: wake their parked reads
        /// (on every relay process sharing the store).
        mail_for: Option<UserId>,
    },
    /// A `read_messages` with `wait`, verified and its nonce spent. The
    /// edge registers for mail for [`ParkedRead::caller`] first, then calls
    /// [`Relay::read_parked`] (register-then-check: mail stored in between
    /// still wakes it), again after each wake-up, until that gives mail or
    /// [`ParkedRead::wait`] runs out; then it answers `[]`.
    Park(ParkedRead),
}

/// A long-poll waiting for mail.
#[derive(Debug, Clone, PartialEq)]
pub struct ParkedRead {
    pub caller: UserId,
    peer: Option<String>,
    peek: bool,
    /// Already shortened to the relay's `max_wait`.
    pub wait: Wait,
}

impl ParkedRead {
    /// The answer when the wait ran out (or the relay is shutting down).
    pub fn nothing(&self) -> Response {
        Response::ok(Value::Array(Vec::new()))
    }
}

/// The relay over a store.
pub struct Relay<S> {
    store: S,
    config: RelayConfig,
    per_user: RateLimiter<UserId>,
    keys: KeyCache,
}

/// Callers whose decoded signing keys a relay keeps (about 100 bytes each).
const KEY_CACHE: usize = 8192;

impl<S: RelayStore> Relay<S> {
    pub fn new(store: S, config: RelayConfig) -> Self {
        let per_user = RateLimiter::new(config.rate_limit, RATE_WINDOW);
        Self {
            store,
            config,
            per_user,
            keys: KeyCache::new(KEY_CACHE),
        }
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    pub fn config(&self) -> &RelayConfig {
        &self.config
    }

    /// Answers one request body received at time `now`, at once: a read
    /// with `wait` is answered with what is there now. An edge that can
    /// hold requests uses [`serve`](Self::serve).
    pub fn handle(&self, body: &[u8], now: f64) -> Response {
        match self.serve(body, now) {
            Outcome::Answer { response, .. } => response,
            Outcome::Park(read) => self.read_parked(&read).unwrap_or_else(|e| e.into()),
        }
    }

    /// Decides one request body received at time `now`.
    pub fn serve(&self, body: &[u8], now: f64) -> Outcome {
        let request = match Request::parse(body) {
            Ok(r) => r,
            Err(e) => return answer(Err(e.into()), None),
        };
        let caller = match self.admit(&request, now) {
            Ok(c) => c,
            Err(e) => return answer(Err(e), None),
        };
        match request.args {
            Args::ReadMessages {
                peer,
                peek,
                wait: Some(wait),
            } => match wait.at_most(self.config.max_wait) {
                Some(wait) => Outcome::Park(ParkedRead {
                    caller,
                    peer,
                    peek,
                    wait,
                }),
                None => answer(self.read(&caller, peer.as_deref(), peek), None),
            },
            Args::SendMessage { to, mtype, body } => {
                match self.send_message(&caller, to, mtype, body, now) {
                    Ok((value, mail_for)) => answer(Ok(value), mail_for),
                    Err(e) => answer(Err(e), None),
                }
            }
            args => answer(
                self.apply(
                    &caller,
                    args,
                    request.dialect,
                    &request.auth.signing_key,
                    now,
                ),
                None,
            ),
        }
    }

    /// Reads the mail a parked read waits for: `Some` answer when there is
    /// any, `None` to go on waiting. A parked `peek` is a signal that mail
    /// is there (the client reads it next), so it carries one message,
    /// not a batch that would cross the wire twice.
    pub fn poll_parked(&self, read: &ParkedRead) -> Result<Option<Response>, RelayError> {
        let limit = if read.peek {
            ReadLimit {
                max_messages: 1,
                ..self.config.read_limit
            }
        } else {
            self.config.read_limit
        };
        let mail = self.read_within(&read.caller, read.peer.as_deref(), read.peek, limit)?;
        Ok(match &mail {
            Value::Array(items) if items.is_empty() => None,
            _ => Some(Response::ok(mail)),
        })
    }

    /// What a parked read answers now: its mail, or `[]`.
    pub fn read_parked(&self, read: &ParkedRead) -> Result<Response, RelayError> {
        Ok(self.poll_parked(read)?.unwrap_or_else(|| read.nothing()))
    }

    /// Verifies and applies one parsed request (a `wait` is not honoured).
    pub fn execute(&self, req: Request, now: f64) -> Result<Value, RelayError> {
        let caller = self.admit(&req, now)?;
        self.apply(&caller, req.args, req.dialect, &req.auth.signing_key, now)
    }

    /// Verifies a request's signature, spends its nonce and counts it
    /// against the caller's rate limit: the caller it comes from.
    fn admit(&self, req: &Request, now: f64) -> Result<UserId, RelayError> {
        let caller = req.auth.verify_with(
            req.dialect,
            req.tool.name(),
            &req.args_hash,
            &self.config.audiences,
            now,
            |key| self.keys.decode(key),
        )?;
        // The nonce first: a replayed copy of someone's request is refused
        // before it can count against their rate limit.
        if !self
            .store
            .use_nonce(&req.auth.nonce, now, now - NONCE_RETENTION)?
        {
            return Err(AuthError::Replay.into());
        }
        if !self.per_user.allow(caller.clone(), now) {
            return Err(RelayError::RateLimited);
        }
        Ok(caller)
    }

    /// Stores a message: the answer, and the recipient when it was stored
    /// (whose parked reads are to be woken).
    fn send_message(
        &self,
        caller: &UserId,
        to: String,
        mtype: i64,
        body: String,
        now: f64,
    ) -> Result<(Value, Option<UserId>), RelayError> {
        let Ok(recipient) = UserId::parse(&to) else {
            return Err(RelayError::UnknownRecipient(echo(&to)));
        };
        if body.len() > self.config.max_message_bytes {
            return Err(RelayError::MessageTooLarge {
                len: body.len(),
                max: self.config.max_message_bytes,
            });
        }
        let message = NewMessage::new(caller.clone(), recipient.clone(), mtype, body, now);
        let rules = DeliveryRules {
            max_mailbox: self.config.max_mailbox,
            max_per_sender: self.config.max_mailbox_per_sender,
            refusals_expire_before: if self.config.refused_ttl > 0.0 {
                now - self.config.refused_ttl
            } else {
                f64::NEG_INFINITY
            },
        };
        match self.store.send_message(&message, &rules)? {
            SendOutcome::Stored { message_id } => Ok((
                json!({"message_id": message_id, "ts": now}),
                Some(recipient),
            )),
            SendOutcome::Refused { sig } => Ok((
                json!({"refused": true, "hash": message.body_hash, "sig": sig}),
                None,
            )),
            SendOutcome::UnknownRecipient => Err(RelayError::UnknownRecipient(to)),
            SendOutcome::MailboxFull { total } => Err(RelayError::MailboxFull {
                to,
                total,
                cap: self.config.max_mailbox,
            }),
            SendOutcome::SenderFull { from_sender } => Err(RelayError::SenderFull {
                sender: caller.to_string(),
                from_sender,
                to,
                cap: self.config.max_mailbox_per_sender,
            }),
        }
    }

    fn read(&self, caller: &UserId, peer: Option<&str>, peek: bool) -> Result<Value, RelayError> {
        self.read_within(caller, peer, peek, self.config.read_limit)
    }

    fn read_within(
        &self,
        caller: &UserId,
        peer: Option<&str>,
        peek: bool,
        limit: ReadLimit,
    ) -> Result<Value, RelayError> {
        let from = peer.filter(|p| !p.is_empty());
        let mail = self.store.read_messages(caller, from, peek, limit)?;
        Ok(Value::Array(
            mail.into_iter()
                .map(|m| json!({"message_id": m.message_id, "ts": m.ts, "from": m.sender, "mtype": m.mtype, "body": m.body}))
                .collect(),
        ))
    }

    fn apply(
        &self,
        caller: &UserId,
        args: Args,
        dialect: Dialect,
        signing_key: &str,
        now: f64,
    ) -> Result<Value, RelayError> {
        match args {
            Args::PublishKeys {
                identity_key,
                signing_key,
                one_time_keys,
                fallback_key,
            } => {
                if !caller.matches_keys(&identity_key, &signing_key) {
                    return Err(RelayError::KeysDoNotMatch);
                }
                let keys = PublicKeys {
                    identity_key,
                    signing_key,
                };
                let cap = self.config.max_unclaimed_otks;
                let added = match self.store.publish_keys(
                    caller,
                    &keys,
                    &one_time_keys,
                    fallback_key.as_ref(),
                    cap,
                )? {
                    PublishOutcome::Published { added } => added,
                    PublishOutcome::TooManyKeys { unclaimed } => {
                        return Err(RelayError::TooManyKeys {
                            unclaimed,
                            adding: one_time_keys.len(),
                            cap,
                        })
                    }
                };
                Ok(json!({
                    "ok": true,
                    dialect.id_field(): caller.as_str(),
                    "one_time_keys_added": added,
                    "fallback_key_set": fallback_key.is_some(),
                }))
            }
            Args::CountKeys => {
                let c = self.store.count_keys(caller)?;
                Ok(json!({"unclaimed": c.unclaimed, "has_fallback": c.has_fallback}))
            }
            Args::GetKeys { peer } => {
                let keys = UserId::parse(&peer)
                    .ok()
                    .map(|id| self.store.get_keys(&id))
                    .transpose()?
                    .flatten();
                let keys = keys.ok_or_else(|| RelayError::UnknownPeer(echo(&peer)))?;
                Ok(json!({"identity_key": keys.identity_key, "signing_key": keys.signing_key}))
            }
            Args::ClaimKey { peer } => {
                let Ok(id) = UserId::parse(&peer) else {
                    return Err(RelayError::UnknownPeer(echo(&peer)));
                };
                match self.store.claim_key(&id)? {
                    ClaimOutcome::Claimed(k) => Ok(serde_json::to_value(k).unwrap_or(Value::Null)),
                    ClaimOutcome::UnknownPeer => Err(RelayError::UnknownPeer(echo(&peer))),
                    ClaimOutcome::Exhausted => Err(RelayError::NoKeysLeft(echo(&peer))),
                }
            }
            Args::SendMessage { to, mtype, body } => self
                .send_message(caller, to, mtype, body, now)
                .map(|(answer, _)| answer),
            Args::ReadMessages { peer, peek, .. } => self.read(caller, peer.as_deref(), peek),
            Args::Nack { hash, sig } => {
                if !is_sha256_hex(&hash) {
                    return Err(RelayError::BadNackHash);
                }
                let key = Ed25519PublicKey::from_base64(signing_key)
                    .map_err(|_| RelayError::BadNackSignature)?;
                let signature = Ed25519Signature::from_base64(&sig)
                    .map_err(|_| RelayError::BadNackSignature)?;
                key.verify(nack_text(caller.as_str(), &hash).as_bytes(), &signature)
                    .map_err(|_| RelayError::BadNackSignature)?;
                let rules = RefusalRules {
                    expire_before: (self.config.refused_ttl > 0.0)
                        .then_some(now - self.config.refused_ttl),
                    max_per_recipient: self.config.max_refused,
                };
                self.store.nack(caller, &hash, &sig, now, &rules)?;
                Ok(json!({"ok": true}))
            }
        }
    }
}
