//! Every way a command can fail, and the one place that turns each into
//! the text and exit status a person sees.

use std::path::PathBuf;

use retalk_proto::client::{ClientError, Generation, StoreError, TransportError};

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("no identity specified: use -s DIR, -u [NAME], the STORE env var, or create one with `retalk init`")]
    NoIdentitySelected,
    /// `create` is the `init` command that makes one there, of the
    /// generation the location calls for.
    #[error("no identity at {dir} — create one with `{create}`")]
    NoIdentityAt { dir: String, create: String },
    #[error("an identity already exists at {0}")]
    IdentityExists(String),
    #[error("init needs a location: a directory argument or -u [NAME]")]
    InitNeedsLocation,
    /// No passphrase source and no terminal for 0.0.1's prompt; `.0` is
    /// what to rerun (see `identity::no_secret`).
    #[error("no passphrase provided (and no terminal to prompt on):\n{0}")]
    NoSecret(String),
    /// Set, but not text: using it anyway (or as if unset) would act with
    /// a secret or a relay the user did not mean.
    #[error("{0} is set but is not valid UTF-8; set it to text")]
    EnvNotUnicode(&'static str),
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
    /// `receive` shows saved names as they are and marks everything a
    /// sender chose; a saved name that could pass for a marked one, or
    /// that needs escaping, would blur that line.
    #[error("peer name {0:?} cannot be saved: it may not be empty, start with '~' (the mark of a name the sender chose), '-' (it would read as a flag) or a space, contain control or invisible characters, or be longer than {max} characters", max = retalk_proto::display::MAX_SAVED_NAME)]
    BadPeerName(String),
    #[error("could not read the text from standard input: {0}")]
    Stdin(std::io::Error),
    #[error("the text on standard input is not UTF-8")]
    StdinNotUnicode,
    #[error("bad server URL: {0}")]
    BadServer(String),
    #[error("could not read the identity folder {path}: {source}")]
    Store { path: PathBuf, source: StoreError },
    /// Not a database, or a corrupt one (SQLite's own word): no retry
    /// mends it, so a usage-class exit 2, not the 1 kept for a relay out
    /// of reach or a failed write.
    #[error("the identity's store is damaged: {path} is not a readable database ({source}); restore it from a backup, or move it away and `retalk init` a new identity")]
    Damaged { path: PathBuf, source: StoreError },
    /// `$RETALK_HOME/contacts.db`, the contacts every identity of the
    /// owner sees (0.3.0's global list), not an identity's folder.
    #[error("could not read the owner-wide contacts file {path}: {source}")]
    GlobalContacts { path: PathBuf, source: StoreError },
    /// What would otherwise surface as `File exists (os error 17)`.
    #[error("the retalk home {0} is not a directory: point RETALK_HOME at a folder (unset, it is ~/.retalk)")]
    HomeNotDir(PathBuf),
    #[error("{0}")]
    Client(ClientError),
    #[error("{0}")]
    PassphraseFile(String),
    #[error("this identity is passphrase-protected: pass --passphrase, --passphrase-file, or set RETALK_PASSPHRASE (it was not created with --no-passphrase)")]
    HasPassphrase,
    /// 0.3.0 never prompts (`cli.py`, `_resolve_passphrase`).
    #[error("no passphrase provided{}: pass -p, --passphrase-file PATH, or set RETALK_PASSPHRASE{}", if *.creating { "" } else { " (this identity's keys are encrypted with one)" }, if *.creating { " (or --no-passphrase: keys stored unencrypted)" } else { "" })]
    NoPassphrase { creating: bool },
    #[error("send needs a recipient: --peer PEER, or PEER TEXT")]
    NoRecipient,
    #[error("receive needs a target: --peer PEER for one sender (repeat --peer for several), or --all for every sender")]
    NoReceiveTarget,
    #[error("give --peer or --all, not both")]
    PeerAndAll,
    #[error("{0}")]
    Usage(String),
    #[error("no relay URL: pass --relay, set RETALK_RELAY, or save one at init time")]
    NoRelay,
    #[error("{0} refused the message (a signed refusal: they do not take mail from you); it was dropped")]
    RefusedByPeer(String),
    #[error("could not write to stdout: {0}")]
    Output(std::io::Error),
    /// The reader of our stdout went away (`| head -1`): its choice, not a
    /// failure. Whatever was not written stays in the local inbox.
    #[error("stdout was closed by its reader")]
    StdoutClosed,
    /// `show --web` could not listen (the port is taken: pick another
    /// with --port, or 0 for a free one) or stopped.
    #[error("{0}")]
    Web(#[from] retalk_webview::WebError),
}

/// The one place a library error becomes what a person reads: an unknown
/// peer gets the command line's advice.
impl From<ClientError> for CliError {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::UnknownPeer(p) => CliError::UnknownPeer(p),
            other => CliError::Client(other),
        }
    }
}

/// A store's failure (an identity's or the owner-wide contact list): a
/// local failure, as the client's.
impl From<StoreError> for CliError {
    fn from(e: StoreError) -> Self {
        CliError::Client(ClientError::Store(e))
    }
}

impl CliError {
    /// The exit status for an identity of `generation`. A 0.3.0 identity
    /// exits as Python 0.3.0 does (`cli.py`, `main`): 2 also when the relay
    /// could not be reached (its `_die`), 1 only when a local write failed
    /// (a traceback there).
    pub fn exit_code_for(&self, generation: Option<Generation>) -> u8 {
        let code = self.exit_code();
        let local = matches!(
            self,
            CliError::Store { .. }
                | CliError::GlobalContacts { .. }
                | CliError::Output(_)
                | CliError::Web(_)
                | CliError::Client(ClientError::Store(_))
        );
        match generation {
            Some(Generation::V030) if code == 1 && !local => 2,
            _ => code,
        }
    }

    /// 1 when the relay could not be reached or a local write failed
    /// (trying again later may work), 2 for usage errors and refusals, 0
    /// when the reader closed stdout (see [`CliError::is_quiet`]).
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Client(e) => match e {
                ClientError::NotDelivered { .. } | ClientError::Store(_) => 1,
                // The relay answered: a refusal, whatever its status says.
                ClientError::RefusedByRelay { .. } => 2,
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
            CliError::GlobalContacts { source, .. } => {
                if retalk_store_sqlite::is_damaged(source) {
                    2
                } else {
                    1
                }
            }
            // A local failure (a taken port: another run may end, or
            // --port picks another), as Python 0.3.0's traceback exits 1.
            CliError::Store { .. } | CliError::Output(_) | CliError::Web(_) => 1,
            CliError::StdoutClosed => 0,
            _ => 2,
        }
    }

    /// Advice printed under the error: where a relay that could not be
    /// reached comes from (0.3.0's `main`, `could not reach the relay`),
    /// and, when no message was kept by this command, that queued ones
    /// wait in the outbox.
    pub fn hint(&self, generation: Option<Generation>) -> Option<String> {
        let unreachable = |e: &ClientError| {
            matches!(
                e,
                ClientError::Relay {
                    source: TransportError::NotSent(_) | TransportError::Unreachable(_),
                    ..
                }
            )
        };
        let CliError::Client(e) = self else {
            return None;
        };
        let kept = match e {
            ClientError::NotDelivered { source, .. } if unreachable(source) => true,
            e if unreachable(e) => false,
            _ => return None,
        };
        let mut lines = vec![match generation {
            Some(Generation::V001) => {
                "  - check the relay URL (--server, SERVER_URL, or the one saved at init)"
            }
            _ => "  - check the relay URL (--relay, RETALK_RELAY, or the one saved at init)",
        }];
        lines.push("  - check your network");
        if !kept {
            lines.push("  - nothing is lost: queued sends stay in the outbox and go out on the next command that reaches the relay (e.g. `retalk sync`)");
        }
        Some(lines.join("\n"))
    }

    /// Whether to exit without a word: a reader that closed our stdout
    /// asked for no more, and a message on stderr would only clutter its
    /// pipeline.
    pub fn is_quiet(&self) -> bool {
        matches!(self, CliError::StdoutClosed)
    }
}
