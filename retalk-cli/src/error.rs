//! Every way a command can fail, and the one place that turns each into
//! the text and exit status a person sees.

use std::path::PathBuf;

use retalk_proto::client::{ClientError, StoreError, TransportError};

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("no identity specified: use -s DIR, -u [NAME], the STORE env var, or create one with `retalk init`")]
    NoIdentitySelected,
    #[error("no identity at {0} — create one with `retalk init {0}`")]
    NoIdentityAt(String),
    #[error("an identity already exists at {0}")]
    IdentityExists(String),
    #[error("init needs a location: a directory argument or -u [NAME]")]
    InitNeedsLocation,
    #[error("PICKLE_SECRET is not set and there is no terminal to prompt on")]
    NoSecret,
    #[error("secrets do not match")]
    SecretsDiffer,
    #[error("could not unlock the identity at {0} (wrong secret?)")]
    WrongSecret(String),
    #[error("no server URL: pass --server, set SERVER_URL, or save one at init time")]
    NoServer,
    #[error("unknown peer '{0}': `retalk add {0} <user-id>` first, or pass a 32-hex user id")]
    UnknownPeer(String),
    #[error("user id must be 32 hex characters")]
    BadUserId,
    #[error("peer name looks like a user id — give it a human name")]
    NameLooksLikeId,
    #[error("bad server URL: {0}")]
    BadServer(String),
    #[error("could not read the identity folder {path}: {source}")]
    Store { path: PathBuf, source: StoreError },
    #[error("{0}")]
    Client(#[from] ClientError),
    #[error("could not write to stdout: {0}")]
    Output(std::io::Error),
}

impl CliError {
    /// 1 when the relay could not be reached (trying again later may
    /// work), 2 for usage errors and refusals.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Client(e) => match e {
                ClientError::NotDelivered { .. } | ClientError::Store(_) => 1,
                ClientError::Relay {
                    source:
                        TransportError::NotSent(_)
                        | TransportError::Unreachable(_)
                        | TransportError::BadResponse(_),
                    ..
                } => 1,
                ClientError::Relay {
                    source: TransportError::Refused { status, .. },
                    ..
                } if *status >= 500 || *status == 429 => 1,
                _ => 2,
            },
            CliError::Store { .. } | CliError::Output(_) => 1,
            _ => 2,
        }
    }
}
