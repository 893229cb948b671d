//! What can go wrong, and the one place that turns it into text for a model.

use retalk_proto::client::TransportError;
use retalk_proto::group::GroupError;
use retalk_proto::ClientError;

/// Why the server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// `RETALK_WATCH_PEER` or `RETALK_RECEIVE_FROM` names nobody.
    #[error("{setting}: '{name}' is neither a saved contact nor a 32-hex fingerprint; save the contact first (`retalk add FINGERPRINT --peer NAME`) or give its fingerprint")]
    Peer {
        /// The option and variable, as the user may have set either.
        setting: &'static str,
        name: String,
    },
    /// The address book could not be read.
    #[error("contacts: {0}")]
    Book(String),
    /// The host closed stdin before it initialized the connection (nothing
    /// is wrong with the identity: no MCP host is attached, or it gave up).
    #[error("the MCP host closed stdin before initializing the connection ({0}); `retalk mcp` is run by an MCP host, which speaks JSON-RPC on its stdin")]
    Closed(String),
    /// The MCP handshake or the connection to the host failed.
    #[error("MCP connection: {0}")]
    Start(String),
}

/// A tool call that failed: shown to the model as a tool error (never a
/// protocol error, which hosts hide), with what to do next.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// The arguments do not fit the tool's schema.
    #[error("bad arguments: {0}. Call the tool again with arguments matching its input schema.")]
    Arguments(String),
    /// An argument is well-formed JSON but not acceptable.
    #[error("{0}")]
    Invalid(String),
    /// The peer refused our message with a verified refusal.
    #[error("'{0}' refused the message: they blocked you, or accept mail only from their saved contacts. Ask them (out of band) to add your fingerprint (see the `id` tool).")]
    Refused(String),
    #[error("{}", advice(.0))]
    Client(#[from] ClientError),
    /// The host closed the connection while the call waited for the relay
    /// (never shown: no answer reaches the host then).
    #[error("the MCP host closed the connection")]
    Closing,
    /// The relay accepted the fetch but did not answer in time (the fetch
    /// goes on, and what it brings is read by the next call).
    #[error("the relay did not answer within {0} s. Mail it delivers later is kept for the next receive; if this repeats, the relay is overloaded or something between holds the connection.")]
    Slow(u64),
    /// The command line's part failed (a contact list or the history that
    /// cannot be read or written).
    #[error("{0}")]
    Local(#[from] crate::BookError),
}

/// The text a model sees for a library error: what happened and what to do.
fn advice(e: &ClientError) -> String {
    match e {
        ClientError::UnknownPeer(p) => format!(
            "unknown peer '{p}': use a saved contact's name (list them with the `contacts` tool) or a 32-hex fingerprint; save a new peer with `add`."
        ),
        ClientError::PinMismatch { .. } => format!(
            "{e} Do not send to or trust this peer until you have compared fingerprints with them over another channel."
        ),
        // Our relay's (and Python's) answer to keys asked for an id it
        // does not know: a person needs to hear what that means.
        ClientError::Relay {
            tool: "claim_key" | "get_keys",
            source: TransportError::Refused { error, .. },
        } if error.starts_with("unknown peer") => format!(
            "this relay does not know that fingerprint ({error}): it is mistyped, or the peer never registered on this relay. Check the fingerprint with the peer (their `id` tool) and that you share a relay."
        ),
        ClientError::Relay { source, .. } if is_unreachable(source) => format!(
            "the relay could not be reached ({source}). It may be down or the network away: try again in a minute; messages already sent are kept and resent automatically."
        ),
        ClientError::NotDelivered { id, .. } => format!(
            "message {id} is saved but the relay could not be reached; this server resends it automatically while it runs. Do not send it again."
        ),
        ClientError::RefusedByRelay { id, source } => format!(
            "the relay refused message {id} ({source}); it is kept and resent later. If it says the mailbox is full, the peer has to read their mail first."
        ),
        ClientError::ToSelf => {
            "that is your own fingerprint: a message to yourself cannot be encrypted. Use a peer's name or fingerprint.".into()
        }
        ClientError::TooLarge { .. } => format!("{e}. Split the text into several messages."),
        // The group errors speak of the command line; the model has tools.
        ClientError::Group(GroupError::UnknownGroup(g)) => format!(
            "no group '{g}': list yours with `group_list`, or make one with `group_create`."
        ),
        ClientError::Group(GroupError::NoMembers) => {
            "a group needs at least one member besides you: give `members` as saved contacts' names or fingerprints.".into()
        }
        ClientError::Group(GroupError::NoneAreMembers(g)) => {
            format!("none of those are members of '{g}': see its members with `group_list`.")
        }
        ClientError::Relay { .. } | ClientError::BadResponse { .. } => {
            format!("{e}. Check the relay URL and API key this server was started with.")
        }
        _ => e.to_string(),
    }
}

fn is_unreachable(e: &TransportError) -> bool {
    matches!(
        e,
        TransportError::Unreachable(_) | TransportError::NotSent(_)
    )
}
