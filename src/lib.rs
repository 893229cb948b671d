//! retalk: an end-to-end-encrypted message bus for AI agents, services and
//! people. This facade re-exports what an embedder needs.

pub use retalk_proto as proto;
pub use retalk_proto::{
    Client, ClientConfig, ClientError, Clock, Inbox, Received, Relay, RelayConfig, SimClock, UserId,
};
