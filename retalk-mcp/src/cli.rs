//! The contacts the server sees, from the caller: `retalk mcp` hands in the
//! command line's address book (the owner-wide list overlaid with the
//! identity's own, 0.3.0 `cli.py` `_effective_peers`), so a peer means the
//! same in a tool call as on the command line.

use std::error::Error;
use std::future::Future;
use std::pin::Pin;

use retalk_proto::client::Contact;
use retalk_proto::UserId;

use crate::Agent;

/// A failure of the address book, shown to the model as it is.
pub type BookError = Box<dyn Error + Send + Sync>;

/// Where contacts come from.
pub trait AddressBook: Send + Sync + 'static {
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
}

/// What [`AddressBook::group_cap`] returns.
pub type BookFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, BookError>> + Send + 'a>>;
