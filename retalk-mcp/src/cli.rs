//! What the server takes from its caller so that it acts as every other
//! command of `retalk`: the address book (the owner-wide list overlaid
//! with the identity's own, 0.3.0 `cli.py` `_effective_peers`), so a peer
//! means the same in a tool call as on the command line; the relay's group
//! cap; and what is kept besides the inbox (the saved history under
//! `RETALK_SAVE_MESSAGE`, received contact cards staged for `import`).

use std::error::Error;
use std::future::Future;
use std::pin::Pin;

use retalk_proto::client::{Contact, Received};
use retalk_proto::UserId;

use crate::Agent;

/// A failure of the caller's part, shown to the model as it is.
pub type BookError = Box<dyn Error + Send + Sync>;

/// The caller's part.
pub trait CommandLine: Send + Sync + 'static {
    /// Every contact the identity sees.
    fn contacts(&self, agent: &Agent) -> Result<Vec<Contact>, BookError>;
    /// The peer `reference` means among `contacts`: a saved name or id,
    /// else any 32-hex id; `None` when it is neither.
    fn resolve(&self, contacts: &[Contact], reference: &str) -> Option<UserId>;
    /// The card `share` sends for the contact `reference`: its fingerprint
    /// and the card's JSON text (0.3.0 `cli.py` `_build_card`).
    fn card(&self, agent: &Agent, reference: &str) -> Result<(UserId, String), BookError>;
    /// The most members a group may have on this relay (its `GET /info`
    /// `max_group_size`, cached; the cached one when it cannot say).
    fn group_cap<'a>(&'a self, agent: &'a Agent) -> BookFuture<'a, usize>;
    /// Keeps what `receive` is about to hand to the model (as the command
    /// line's `receive` does); an error leaves the message in the inbox.
    fn keep_received(&self, agent: &Agent, message: &Received) -> Result<(), BookError>;
    /// Keeps a message we sent: `to` is the peer's id, or the group id with
    /// `group` (its id and name) for a group message.
    fn keep_sent(
        &self,
        agent: &Agent,
        id: &str,
        to: &str,
        text: &str,
        group: Option<(&str, &str)>,
    ) -> Result<(), BookError>;
}

/// What [`CommandLine::group_cap`] returns.
pub type BookFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, BookError>> + Send + 'a>>;
