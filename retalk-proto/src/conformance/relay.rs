//! Checks every [`RelayStore`] must pass.

use crate::relay::RelayStore;

/// A nonce is accepted once, refused while remembered, and forgotten after.
pub fn nonce_is_single_use<S: RelayStore>(store: &S) {
    assert!(store.use_nonce("n1", 1000.0, 700.0).unwrap());
    assert!(!store.use_nonce("n1", 1001.0, 701.0).unwrap());
    assert!(store.use_nonce("n2", 1002.0, 702.0).unwrap());
    // Once older than the retention, n1 is forgotten.
    assert!(store.use_nonce("n1", 1400.0, 1100.0).unwrap());
}
