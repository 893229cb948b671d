//! retalk's stores on [sled](https://docs.rs/sled/0.34): an embedded
//! key-value store in pure Rust, the alternative to the SQLite backend.
//!
//! - [`SledRelayStore`]: the relay's [`RelayStore`](retalk_proto::relay::RelayStore)
//!   in one sled database directory;
//! - [`SledStore`]: a client's [`Store`](retalk_proto::client::Store), in an
//!   identity folder's [`STORE_DIR`] directory.
//!
//! # Layout
//!
//! One sled tree per table, plus index trees where the protocol needs a
//! second order (by age, for pruning; by insertion, for listing). Keys are
//! built so that sled's byte order is the protocol's order: counters and
//! sequence numbers are big-endian u64, timestamps are encoded so that
//! their bytes sort like the numbers, and user ids (always 32 bytes) are
//! fixed-width key prefixes. Values are a small hand-rolled binary
//! encoding with a version byte (`codec.rs`): every `f64` comes back
//! bit-for-bit. A `meta` tree holds the counters and a format marker, so a
//! relay database is never opened as a client store or the reverse.
//!
//! # Atomic and durable
//!
//! Each [`RelayStore`](retalk_proto::relay::RelayStore) method and each
//! [`commit`](retalk_proto::client::Store::commit) is one step: under a
//! single writer lock it reads committed state and stages its writes, the
//! writes are applied in one sled transaction (across all the trees they
//! touch: all or nothing, also across a crash), the writer lock is
//! released, and sled's log is flushed and fsynced before the method
//! returns. sled on its own only flushes every 500 ms; here nothing is
//! reported done before it is on disk. Writers that queue up while one is
//! fsyncing commit in the meantime, and the next fsync covers all of them
//! (group commit).
//!
//! sled's `flush()` alone is not enough for that: on Linux sled 0.34 ends
//! it with `sync_file_range`, which neither flushes the disk's write cache
//! nor commits the log file's metadata, and it writes values over about
//! 128 KiB to blob files it never fsyncs. So each step also fsyncs new
//! blob files and `fdatasync`s the log file, as SQLite does with
//! `synchronous=FULL`. On this project's machine that costs a few hundred
//! microseconds per step (see `benches/store.rs`).
//!
//! # One process per database
//!
//! sled takes an exclusive lock on its directory while it is open: a second
//! process (or a second open in the same process) fails, after waiting up
//! to a second for the lock, with an error saying the database is in use.
//! So, unlike with the SQLite backend, two processes cannot share one sled
//! identity or one relay database. Within a process, share one store (e.g.
//! in an `Arc`); the client's [`lock`](retalk_proto::client::Store::lock)
//! is an in-process mutex. (The wait is there because sled releases its
//! lock a few milliseconds after the store is dropped: a store closed and
//! reopened at once in one process opens.)
//!
//! Not a drop-in for the Python relay's `server.db`: use the SQLite backend
//! for that.

mod client;
mod codec;
mod db;
mod relay;

pub use client::{SledLock, SledStore, STORE_DIR};
pub use relay::SledRelayStore;
