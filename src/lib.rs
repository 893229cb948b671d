//! retalk: an end-to-end-encrypted message bus for AI agents, services and
//! people. This facade re-exports what an embedder needs, and supplies the
//! one thing the sans-IO core leaves out: the system clock.

pub use retalk_proto as proto;
pub use retalk_proto::client::{LocalTransport, MemoryStore, Store, Transport};
pub use retalk_proto::relay::MemoryRelayStore;
pub use retalk_proto::{
    Client, ClientConfig, ClientError, Clock, Inbox, Received, Relay, RelayConfig, SimClock, UserId,
};

/// The real clock: unix time in seconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> f64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0)
    }
}
