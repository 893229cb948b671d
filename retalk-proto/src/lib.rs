//! The retalk protocol, sans IO.
//!
//! Everything that is the protocol lives here, free of sockets, files,
//! threads and clocks: ids and fingerprints ([`ids`]), canonical JSON
//! ([`canonical`]), signed requests in both dialects ([`auth`]), the wire
//! types of every tool ([`wire`]), the relay's semantics over a
//! [`relay::RelayStore`] ([`relay`]), envelopes ([`envelope`]), the Olm layer
//! ([`olm`]) and the client state machine over a [`client::Store`] and a
//! [`client::Transport`] ([`client`]), and how a message is shown as text
//! ([`display`]). Time comes in through [`clock::Clock`].
//! In-memory stores and an in-process transport make the whole system run
//! in one process for tests and examples.

pub mod auth;
pub mod canonical;
pub mod client;
pub mod clock;
#[cfg(any(test, feature = "conformance"))]
#[allow(clippy::unwrap_used, clippy::expect_used)]
pub mod conformance;
pub mod display;
pub mod envelope;
pub mod group;
pub mod ids;
pub mod invite;
pub mod olm;
pub mod relay;
pub mod wire;

pub use client::{Client, ClientConfig, ClientError, Inbox, Received};
pub use clock::{Clock, SimClock};
pub use ids::UserId;
pub use relay::{Relay, RelayConfig};
