//! retalk: an end-to-end-encrypted message bus for AI agents, services and
//! people. This facade is the one dependency an embedder adds: the client
//! API, the stores, the HTTP transport and an embeddable relay.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use retalk::{Client, HttpTransport, SqliteStore, SystemClock};
//! let store = SqliteStore::open("./alice")?;
//! let relay = HttpTransport::new("http://127.0.0.1:8766")?;
//! let alice = Client::create(store, relay, SystemClock, "secret", "alice")?;
//! let bob: retalk::UserId = "0123456789abcdef0123456789abcdef".parse()?;
//! alice.send(&bob, "hello").await?;
//! for m in alice.receive().await?.messages {
//!     println!("{}: {}", m.name, m.text);
//! }
//! # Ok(()) }
//! ```

pub use retalk_proto as proto;
pub use retalk_proto::client::{LocalTransport, MemoryStore, Store, Transport};
pub use retalk_proto::relay::MemoryRelayStore;
pub use retalk_proto::{
    Client, ClientConfig, ClientError, Clock, Inbox, Received, Relay, RelayConfig, SimClock, UserId,
};
pub use retalk_relay as relay;
pub use retalk_relay::{RelayServer, SharedStore};
pub use retalk_store_sled::{SledRelayStore, SledStore};
pub use retalk_store_sqlite::{SqliteRelayStore, SqliteStore};
pub use retalk_transport_http::{HttpTransport, SystemClock};
