//! The retalk relay: an HTTP server over [`retalk_proto::relay`], its
//! configuration, and the `retalk-relay` binary.
//!
//! The protocol (parsing, verification, nonces, per-id rate limit, every
//! tool) is `retalk_proto::relay::Relay`; this crate is its edge: the wall
//! clock, HTTP framing, body caps and deadlines, per-address limits,
//! connection caps, API-key admission, the `/admin` page, `/metrics`, the
//! client address behind trusted proxies, and the choice of storage backend
//! (with PostgreSQL, several relay processes share one database: see
//! `retalk_store_postgres`).
//!
//! Embedding:
//!
//! ```no_run
//! # async fn demo() -> Result<(), retalk_relay::StartError> {
//! use retalk_relay::{open_store, Config, RelayServer};
//! let config = Config::local(); // memory backend, 127.0.0.1, a free port
//! let server = RelayServer::start(&config, open_store(config.backend, &config.db)?).await?;
//! println!("relay at {}", server.url());
//! server.shutdown().await;
//! # Ok(()) }
//! ```

mod admin;
pub mod clock;
pub mod config;
pub mod drain;
pub mod errors;
pub mod http;
pub mod limit;
pub mod metrics;
pub mod outage;
pub mod proxy;
mod server;
pub mod store;
pub mod waiters;
mod watched;

pub use config::{Backend, Config};
pub use errors::{ConfigError, HttpError, StartError};
pub use http::{router, App};
pub use server::RelayServer;
pub use store::{open_storage, open_store, SharedStore, Storage, WakeSource};
