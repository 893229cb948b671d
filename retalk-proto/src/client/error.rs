//! What a client operation can fail with.

use super::{StoreError, TransportError};
use crate::ids::UserId;

/// Everything a client operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Neither a saved name nor a user id.
    #[error("unknown peer '{0}'")]
    UnknownPeer(String),
    #[error("no identity in this store")]
    NoIdentity,
    #[error("an identity already exists in this store")]
    IdentityExists,
    #[error("could not unlock the identity (wrong secret?)")]
    WrongSecret,
    /// A saved history row that does not open: another passphrase, or a
    /// damaged row.
    #[error("a saved message could not be opened: {0}")]
    Unseal(String),
    /// A relay that could not be reached is said plainly (which protocol
    /// call was under way is no help to a person); a relay's answer names
    /// the call, as Python's `server error from {tool}` does.
    #[error("{}", relay_text(tool, source))]
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
    /// Olm sessions are between two accounts; mail to oneself could never
    /// be opened (and would be resent for good).
    #[error("that is your own user id: a message to yourself cannot be encrypted")]
    ToSelf,
    /// Refused before anything is saved: relays take requests of at most
    /// 1 MiB (the Python relay's and ours by default), so a larger message
    /// would sit in the outbox, refused at every resend.
    #[error("message too large: {bytes} bytes once encoded (at most {max})")]
    TooLarge { bytes: usize, max: usize },
    #[error("message {id} is kept in the outbox and will be resent: {source}")]
    NotDelivered {
        id: String,
        source: Box<ClientError>,
    },
    /// The relay answered and refused the upload (a full mailbox, a message
    /// too large): unlike [`NotDelivered`](Self::NotDelivered) it is not a
    /// matter of reaching the relay, though the message is kept and resent.
    /// A contact name already names another peer (saving would replace it).
    #[error("a contact named '{name}' already exists (-> {id}); pick another name")]
    NameTaken { name: String, id: UserId },
    /// A group operation refused before anything changed.
    #[error(transparent)]
    Group(#[from] crate::group::GroupError),
    /// `invite watch` needs a relay that can show mail without consuming
    /// it (`read_messages` with `peek`; Python relays from 0.3.0rc2, ours).
    #[error("this relay is too old for `invite watch`: it cannot read the mailbox without consuming it, so watching would swallow mail meant for `receive`. Upgrade the relay to retalk 0.3.0rc2 or newer (this client is fine).")]
    NoPeek,
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

/// [`ClientError::Relay`]'s text.
fn relay_text(tool: &str, source: &TransportError) -> String {
    match source {
        TransportError::NotSent(detail) | TransportError::Unreachable(detail) => {
            format!("the relay could not be reached ({detail})")
        }
        other => format!("relay error from {tool}: {other}"),
    }
}
