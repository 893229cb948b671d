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
//!
//! Every write is a [`StoreTransaction`]: the store's lock and the batch
//! written under it, as one value.

mod config;
mod contacts;
mod decrypt;
mod error;
mod follow;
mod group;
mod history;
mod identity;
mod inbox;
mod invite;
mod keys;
mod locate;
mod memory;
mod outbox;
mod receive;
mod refuse;
mod send;
mod store;
mod transport;
mod unwedge;
mod wait;

pub use config::{setting, ClientConfig};
pub use contacts::{find_peer, overlay, pin_contact};
pub use error::ClientError;
pub use follow::{Follow, Followed};
pub use group::{
    cached_group_cap, create_group, delete_group, find_group, group_add, group_remove, groups,
    join_group, known_owner, left_groups, rename_group, save_group_cap, GroupSendReport,
    LeaveReport, GROUP_CAP_SETTING,
};
pub use history::{
    save_requested, seal, unseal, Conversation, ConversationSummary, History, HistoryEntry,
};
pub use identity::{create_identity, identity_info, IdentityInfo};
pub use inbox::HandOut;
pub use invite::{invites, new_invite, revoke_invite, ACCEPTED, REJECTED};
pub use keys::{MaintainReport, SyncReport};
pub use locate::{locate, Generation, LocateError, Located, Places, Purpose, Selectors};
pub use memory::{MemoryLock, MemoryStore};
pub use outbox::{Delivery, FlushReport};
pub use receive::{Inbox, Problem, Received};
pub use refuse::{blocked, set_blocked};
pub use send::{SendReceipt, MAX_ENVELOPE_BYTES};
pub use store::*;
pub use transport::{LocalTransport, Transport, TransportError};
pub use wait::MailWait;

use std::sync::atomic::AtomicBool;
use std::sync::Mutex;

use serde::de::DeserializeOwned;
use vodozemac::olm::Account;

use crate::clock::Clock;
use crate::ids::UserId;
use crate::olm::{self, PickleKey};
use crate::wire::{Args, SignedRequest};
use identity::unlock;

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
    /// Refuse mail from senders that are not saved contacts.
    peers_only: bool,
    /// Contacts kept outside the store (the user's owner-wide list),
    /// overlaid by the store's own (see [`overlay`]).
    global_contacts: Vec<Contact>,
    /// When the relay last would not hold a read (a Python relay, or one
    /// at its cap); `None`: ask it to.
    wait_refused_at: Mutex<Option<f64>>,
    /// Held by each fetch from its read to its last decrypt: a fetch that
    /// starts while another is under way (the MCP server's background
    /// driver and a tool call) waits for it, so that when it returns the
    /// mail the relay handed the other one is in the local inbox, not in
    /// flight. Async so that the wait yields, held across the relay calls.
    fetching: futures_util::lock::Mutex<()>,
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
            peers_only: false,
            global_contacts: Vec::new(),
            wait_refused_at: Mutex::new(None),
            fetching: futures_util::lock::Mutex::new(()),
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

    /// Takes the store's lock with an empty batch: every write of the
    /// client goes through one.
    fn transaction(&self) -> Result<StoreTransaction<'_, S>, ClientError> {
        Ok(StoreTransaction::new(&self.store)?)
    }

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
}
