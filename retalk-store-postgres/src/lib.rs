//! The retalk relay's state on PostgreSQL: [`PgRelayStore`], a
//! [`RelayStore`](retalk_proto::relay::RelayStore) that any number of relay
//! processes ("nodes") share, behind one URL, as Synapse's workers share
//! one database.
//!
//! # How each rule holds across nodes
//!
//! Nothing a node decides is kept in its memory; the database decides:
//!
//! - **Nonces**: `INSERT … ON CONFLICT DO UPDATE … WHERE expired`, and the
//!   row count says whether this use was the first: a request replayed to
//!   another node is refused there.
//! - **One-time keys**: a claim is one `UPDATE` of the oldest unclaimed row
//!   picked `FOR UPDATE SKIP LOCKED`, so concurrent claims on any nodes
//!   take different keys, oldest first; the claimed row stays, and
//!   `otks(owner, key_id)` is unique, so a claimed id is never offered
//!   again whatever is re-uploaded (issue #10's rule). Uploads of one user
//!   are serialised by an advisory lock.
//! - **Mail**: a read deletes the oldest messages `FOR UPDATE SKIP LOCKED`
//!   in the statement that returns them: two reads of one mailbox at once
//!   each get different messages, every message exactly one reader.
//! - **Caps and the refusal gate**: with a mailbox cap, a send counts and
//!   inserts under an advisory lock on the recipient, so caps hold across
//!   nodes; the refusal gate is read in the same statement as the insert.
//! - **Push**: a send notifies channel `retalk_mail` with the recipient's
//!   id, in the same transaction; each node's [`Listener`] (a connection of
//!   its own) wakes its parked reads within milliseconds, and wakes all of
//!   them after reconnecting, since notifications are not replayed.
//! - The relay's **rate limits** are per node (in memory); see the README.
//!
//! # Why the trait stays synchronous
//!
//! `RelayStore` is synchronous, and every backend (memory, SQLite, sled)
//! is naturally so; making it async for this one would have rewritten all
//! of them and the relay core, for no gain: the relay already calls the
//! store from `spawn_blocking` threads, because verifying a request's
//! signature is CPU work anyway. So this store owns a two-thread tokio
//! runtime that drives its connections (tokio-postgres and
//! deadpool-postgres are async), and each call `block_on`s its queries on
//! the calling blocking thread. The cost is a thread hop per query; the
//! benchmark in `retalk-relay/benches/load.rs` measures it end to end.
//!
//! # Schema
//!
//! The SQLite relay's tables and columns (see [`schema`](crate::SCHEMA_VERSION)
//! and `src/schema.rs`), applied as versioned migrations at start; a node
//! refuses a database migrated by a newer relay.
//!
//! # Outages
//!
//! Each call takes a pooled connection; a connection the server closed is
//! replaced on its next use, and a call that cannot get one within the
//! connect timeout fails with a [`StoreError`](retalk_proto::relay::StoreError)
//! (the relay answers 503 and logs the burst once). Committed writes are
//! durable before the call returns, so a database restart loses nothing
//! that a client was told was stored, and the node resumes by itself.

mod error;
mod listen;
mod schema;
mod store;

pub use error::PgError;
pub use listen::{Listener, Wake};
pub use schema::SCHEMA_VERSION;
pub use store::{parse_url, PgOptions, PgRelayStore, NOTIFY_CHANNEL};
