//! One conformance suite for every backend (memory, SQLite, sled), in the
//! manner of matrix-sdk-crypto's `cryptostore_integration_tests!`: a backend
//! crate invokes [`relay_store_tests!`](crate::relay_store_tests) with an
//! expression that makes a fresh store, and gets one `#[test]` per check.
//!
//! Enabled with the `conformance` feature (dev-dependency of backends).

pub mod relay;

/// Expands to one `#[test]` per relay-store check. `$make` is an expression
/// of type `impl Fn() -> S` making a fresh, empty store.
#[macro_export]
macro_rules! relay_store_tests {
    ($make:expr) => {
        mod relay_store_conformance {
            #[allow(unused_imports)]
            use super::*;

            #[test]
            fn nonce_is_single_use() {
                $crate::conformance::relay::nonce_is_single_use(&($make)());
            }
        }
    };
}
