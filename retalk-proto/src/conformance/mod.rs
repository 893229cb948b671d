//! One conformance suite for every backend (memory, SQLite, sled), in the
//! manner of matrix-sdk-crypto's `cryptostore_integration_tests!`: a backend
//! crate invokes [`relay_store_tests!`](crate::relay_store_tests) and
//! [`store_tests!`](crate::store_tests) and gets one `#[test]` per check.
//!
//! Each macro has two forms:
//!
//! - `relay_store_tests!(make)`: `make` is an expression of type
//!   `impl Fn() -> S` making a fresh, empty store (in-memory backends);
//! - `relay_store_tests!(make, reopen)`: for durable backends. `make` is an
//!   `impl Fn() -> (S, H)` making a fresh store and a handle on its files
//!   (typically the `tempfile::TempDir` holding them, which the test keeps
//!   alive to the end), and `reopen` an `impl Fn(&H) -> S` opening the same
//!   files again. The checks drop the store before reopening it, so
//!   backends holding an exclusive lock on their files (sled) work. This
//!   form runs every check of the first form plus the `durable_*` checks.
//!
//! ```text
//! retalk_proto::relay_store_tests!(
//!     || {
//!         let dir = tempfile::tempdir().unwrap();
//!         (SqliteRelayStore::open(dir.path().join("server.db")).unwrap(), dir)
//!     },
//!     |dir: &tempfile::TempDir| SqliteRelayStore::open(dir.path().join("server.db")).unwrap()
//! );
//! ```
//!
//! A third macro, [`relay_store_shared_tests!`](crate::relay_store_shared_tests),
//! is for backends that several relay processes share (PostgreSQL): its
//! `make` is an `impl Fn() -> (S, S, H)` giving two handles on one fresh
//! storage and a handle on it, and each check makes the two act at once.
//!
//! Each invocation defines a module (`relay_store_conformance`,
//! `store_conformance`), so invoke each macro at most once per module.
//!
//! Enabled with the `conformance` feature (dev-dependency of backends).

pub mod client;
pub mod relay;
pub mod shared;

/// Expands to one `#[test]` per relay-store check; see the [module
/// docs](crate::conformance) for the two forms.
#[macro_export]
macro_rules! relay_store_tests {
    ($make:expr) => {
        mod relay_store_conformance {
            #[allow(unused_imports)]
            use super::*;

            $crate::__relay_store_checks!((($make)(), ()));
        }
    };
    ($make:expr, $reopen:expr) => {
        mod relay_store_conformance {
            #[allow(unused_imports)]
            use super::*;

            $crate::__relay_store_checks!(($make)());
            $crate::__durable_checks!(relay, $make, $reopen;
                durable_state_survives_reopen,
                durable_claimed_ids_survive_reopen,
                durable_empty_reopen,
            );
        }
    };
}

/// Expands to one `#[test]` per two-handle check (see
/// [`conformance::shared`](crate::conformance::shared)): `make` gives two
/// handles on one fresh storage and a handle keeping it alive.
#[macro_export]
macro_rules! relay_store_shared_tests {
    ($make:expr) => {
        mod relay_store_shared_conformance {
            #[allow(unused_imports)]
            use super::*;

            $crate::__shared_checks!($make;
                shared_nonce_is_single_use,
                shared_claims_are_exclusive,
                shared_claimed_ids_stay_claimed,
                shared_reads_hand_each_message_once,
                shared_mailbox_caps_hold,
                shared_refusal_gate_holds,
            );
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __shared_checks {
    ($make:expr; $($check:ident),* $(,)?) => {
        $(
            #[test]
            #[allow(clippy::redundant_closure_call)]
            fn $check() {
                let (a, b, _handle) = ($make)();
                $crate::conformance::shared::$check(&a, &b);
                drop(a);
                drop(b);
            }
        )*
    };
}

/// Expands to one `#[test]` per client-store check; see the [module
/// docs](crate::conformance) for the two forms.
#[macro_export]
macro_rules! store_tests {
    ($make:expr) => {
        mod store_conformance {
            #[allow(unused_imports)]
            use super::*;

            $crate::__store_checks!((($make)(), ()));
        }
    };
    ($make:expr, $reopen:expr) => {
        mod store_conformance {
            #[allow(unused_imports)]
            use super::*;

            $crate::__store_checks!(($make)());
            $crate::__durable_checks!(client, $make, $reopen;
                durable_everything_survives_reopen,
                durable_order_and_dedupe_continue_after_reopen,
                durable_removals_survive_reopen,
            );
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __relay_store_checks {
    ($fresh:expr) => {
        $crate::__checks!(relay, $fresh;
            nonce_is_single_use,
            nonce_retention_boundary,
            unknown_user_has_nothing,
            publish_then_count_and_get,
            publish_identity_only,
            republish_upserts,
            claim_oldest_first,
            fallback_is_reused,
            claim_exhausted_without_fallback,
            claims_are_per_user,
            duplicate_keys_are_skipped,
            held_id_takes_new_material,
            claimed_ids_are_never_offered_again,
            publish_respects_max_unclaimed,
            claims_are_exclusive_under_concurrency,
            send_to_unknown_recipient,
            send_and_read_oldest_first,
            message_ids_never_reused,
            read_with_peer_filter,
            read_peek_keeps_mail,
            read_limit_messages,
            read_limit_bytes,
            mailbox_cap_rejects,
            per_sender_cap_rejects,
            refusal_gate,
            refusal_expiry_in_send,
            nack_refreshes,
            nack_evicts_oldest,
            nack_prunes_expired,
            api_keys_lifecycle,
        );
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __store_checks {
    ($fresh:expr) => {
        $crate::__checks!(client, $fresh;
            empty_store_has_nothing,
            empty_commit_is_fine,
            identity_upsert,
            sessions_order_and_upsert,
            sessions_removed,
            outbox_upsert_keeps_order,
            outbox_entry_and_removal,
            processed_upsert_and_lookup,
            processed_forget_before,
            incoming_dedupe_and_order,
            inbox_dedupe_and_order,
            contacts_upsert_order_removal,
            contacts_keep_signing_key,
            messages_dedupe_order_after,
            blocked_add_remove,
            received_contacts_upsert_order_removal,
            groups_left_groups_invites,
            settings_upsert,
            one_batch_touches_everything,
            lock_serialises_threads,
            concurrent_commits_all_land,
        );
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __checks {
    ($module:ident, $fresh:expr; $($check:ident),* $(,)?) => {
        $(
            #[test]
            #[allow(clippy::redundant_closure_call)]
            fn $check() {
                let (store, _handle) = $fresh;
                $crate::conformance::$module::$check(&store);
                // The store goes before the files it lives in.
                drop(store);
            }
        )*
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __durable_checks {
    ($module:ident, $make:expr, $reopen:expr; $($check:ident),* $(,)?) => {
        $(
            #[test]
            fn $check() {
                $crate::conformance::$module::$check($make, $reopen);
            }
        )*
    };
}
