//! The client's numbers and the settings it reads.

/// Setting keys the client itself reads.
pub mod setting {
    /// The self-chosen display name sent with each message.
    pub const NAME: &str = "name";
    /// The relay URL saved at `init`.
    pub const RELAY_URL: &str = "server_url";
    /// The relay API key saved at 0.3.0 `init --api-key` (Python keeps it
    /// in plain text under the same name).
    pub const API_KEY: &str = "api_key";
    /// `"1"` for an identity made with 0.3.0 `init --no-passphrase`.
    pub const NO_PASSPHRASE: &str = "no_passphrase";
}

/// The client's numbers (PROTOCOL section 9) and the bounds on its tables.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// One-time keys generated per upload.
    pub otk_batch: usize,
    /// Replenish when the relay holds fewer unclaimed keys than this.
    pub min_otks: u64,
    /// Rotate the fallback key when it is older than this (seconds).
    pub fallback_max_age: f64,
    /// First resend of an unacknowledged message after this (seconds); later
    /// resends back off exponentially up to `max_backoff`.
    pub resend_after: f64,
    /// Longest wait between two attempts of one outbox entry.
    pub max_backoff: f64,
    /// Unacknowledged messages older than this are given up and reported.
    pub outbox_max_age: f64,
    /// Processed markers are kept this long; longer than `outbox_max_age`,
    /// so every resend a sender can make is still recognised.
    pub processed_retention: f64,
    /// Sessions kept per peer (least recently used dropped).
    pub sessions_per_peer: usize,
    /// Fetch rounds per receive (each hands over a relay batch).
    pub max_fetch_rounds: usize,
    /// Every this many unacknowledged resends, a message is re-encrypted on
    /// the current session instead of resent as it was: after a relay lost
    /// it, the old ciphertext may be from a ratchet chain the peer has
    /// dropped. Our receivers recognise the new copy by its envelope id; a
    /// Python receiver that was offline through all of them may show it
    /// twice.
    pub reseal_every: u32,
    /// Least time between two repairs of a wedged pair (seconds): when a
    /// peer we hold sessions with sends mail that no session opens (say we
    /// restored a backup), we start a fresh session to them and resend
    /// what they have not acknowledged on it (Matrix's "Olm unwedging",
    /// MSC1719, rate-limited per peer as there).
    pub unwedge_every: f64,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            otk_batch: 100,
            min_otks: 20,
            fallback_max_age: 86_400.0,
            resend_after: 120.0,
            max_backoff: 3_600.0,
            outbox_max_age: 30.0 * 86_400.0,
            processed_retention: 45.0 * 86_400.0,
            sessions_per_peer: 8,
            max_fetch_rounds: 20,
            reseal_every: 4,
            unwedge_every: 60.0,
        }
    }
}
