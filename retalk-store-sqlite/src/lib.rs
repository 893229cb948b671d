//! retalk's stores on SQLite (rusqlite, bundled SQLite): the default backend.
//!
//! - [`SqliteRelayStore`]: the relay's [`RelayStore`](retalk_proto::relay::RelayStore),
//!   in the Python relay's own `server.db` layout.
//! - [`SqliteStore`]: a client's [`Store`](retalk_proto::client::Store), one
//!   `store.db` per identity folder.
//!
//! Both use WAL with `synchronous=FULL` (every acknowledged write is on
//! disk), a busy timeout, and no cache of data across calls: the database
//! file is the source of truth, and an operator may inspect or edit it with
//! `sqlite3` while the program runs.
//!
//! # The relay database
//!
//! [`SqliteRelayStore`] keeps exactly the Python relay's tables (`users`,
//! `otks`, `messages`, `nonces`, `api_keys`, `refused`, created if missing)
//! and adds only indexes, so a `server.db` written by Python retalk 0.0.1
//! or 0.3.0 opens and its users, keys and queued mail are served, and the
//! Python relay can still open the file afterwards. A claimed one-time key
//! stays as a row flagged `claimed=1`, as the Python relay keeps it: it is
//! the memory that its id was handed out. Differences in what is written:
//! a re-upload of an id the owner holds unclaimed replaces its material
//! instead of adding a second row, and one of an id with a `claimed` row
//! (ours or the Python relay's) is skipped, so no key id is handed out
//! twice (see `RelayStore::publish_keys`); a claim retires the unclaimed
//! rows the Python relay stored for an already claimed id.
//!
//! # The client database and the upgrade from Python retalk 0.0.1
//!
//! [`SqliteStore`] has its own schema (`PRAGMA user_version` 1): tables
//! `identity`, `settings`, `sessions` (several per peer), `outbox`,
//! `processed`, `incoming`, `inbox`, `contacts`, and `meta`. Opening a
//! folder made by Python retalk 0.0.1 upgrades its `store.db` in place, in
//! one transaction, under the folder's lock:
//!
//! - `meta.account` (the vodozemac encrypted pickle, unchanged: the same
//!   secret opens it) and `meta.fallback_ts` become the identity record;
//!   every other `meta` key (`name`, `server_url`, ...) becomes a setting;
//! - `sessions(peer, blob)` become sessions with an **empty session id**:
//!   the id is inside the encrypted pickle, which cannot be opened without
//!   the secret. The client matches a pre-key message to such a session
//!   by opening it, and files the session under its id the first time it
//!   opens a message with it (Python retalk 0.3.0 re-keys its own migrated
//!   sessions once it has the secret, to the same effect);
//! - `outbox` rows become unacknowledged messages due for a resend;
//! - `processed(hash, msg_id)` become processed markers dated at the
//!   upgrade. Python kept no sender: it is the one peer with a session when
//!   there is exactly one, else [`UNKNOWN_PEER`] (a copy of such a message
//!   is still recognised and never surfaced twice, but not re-acked);
//! - the CLI's `peers(name, id, pin)` become contacts.
//!
//! Rows naming a peer that is not a valid user id cannot be represented and
//! are dropped. The old tables are dropped, and `meta.account` is replaced
//! by a marker that Python retalk cannot decrypt: the upgrade is **one
//! way**, and Python retalk refuses the folder ("could not unlock the
//! identity") rather than silently creating a new identity in it.

mod client;
mod conn;
mod contacts;
mod relay;
mod writer;

pub use client::{PythonStore, SqliteStore, StoreLock, TakeLock, STORE_FILE, UNKNOWN_PEER};
pub use conn::is_damaged;
pub use contacts::{GlobalContacts, GLOBAL_CONTACTS_FILE};
pub use relay::{SqliteRelayStore, DEFAULT_POOL_SIZE};
