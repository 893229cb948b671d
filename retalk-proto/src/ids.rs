//! User ids (fingerprints), envelope message ids and body hashes.
//!
//! A user id is both the address and the pin: the first 32 lowercase hex
//! characters of `sha256(identity_key_b64 + "|" + signing_key_b64)`. Keeping
//! it a validated newtype means no code path can route mail to, or accept
//! keys for, a string that is not an id.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Why a string is not a valid id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a user id (32 lowercase hex characters): {0:?}")]
pub struct InvalidId(pub String);

fn is_lower_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A retalk user id: 32 lowercase hex characters.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct UserId(String);

impl UserId {
    /// Parses a user id, refusing anything but 32 lowercase hex characters.
    pub fn parse(s: &str) -> Result<Self, InvalidId> {
        if is_lower_hex(s, 32) {
            Ok(Self(s.to_owned()))
        } else {
            Err(InvalidId(s.chars().take(80).collect()))
        }
    }

    /// The id of a pair of public keys (base64 as published).
    pub fn from_keys(identity_key_b64: &str, signing_key_b64: &str) -> Self {
        Self(fingerprint(identity_key_b64, signing_key_b64))
    }

    /// Whether these public keys hash to this id.
    pub fn matches_keys(&self, identity_key_b64: &str, signing_key_b64: &str) -> bool {
        fingerprint(identity_key_b64, signing_key_b64) == self.0
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for UserId {
    type Error = InvalidId;
    fn try_from(s: String) -> Result<Self, InvalidId> {
        if is_lower_hex(&s, 32) {
            Ok(Self(s))
        } else {
            Err(InvalidId(s.chars().take(80).collect()))
        }
    }
}

impl From<UserId> for String {
    fn from(id: UserId) -> String {
        id.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UserId({})", self.0)
    }
}

impl std::str::FromStr for UserId {
    type Err = InvalidId;
    fn from_str(s: &str) -> Result<Self, InvalidId> {
        Self::parse(s)
    }
}

/// The fingerprint rule, on raw strings: the relay must apply it to
/// whatever a stranger sent, before anything is known to be valid.
pub fn fingerprint(identity_key_b64: &str, signing_key_b64: &str) -> String {
    let mut h = Sha256::new();
    h.update(identity_key_b64.as_bytes());
    h.update(b"|");
    h.update(signing_key_b64.as_bytes());
    let mut hex = hex::encode(h.finalize());
    hex.truncate(32);
    hex
}

/// Hex sha256 of a string: the args hash, and the "body hash" by which
/// receivers recognise a ciphertext they already processed and by which
/// 0.3.0 nacks name a refused message.
pub fn sha256_hex(data: &str) -> String {
    hex::encode(Sha256::digest(data.as_bytes()))
}

/// A 32-hex random envelope id (the `id` of a `msg`, echoed by its `ack`).
pub fn new_message_id() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

/// A 32-hex random request nonce.
pub fn new_nonce() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

/// Whether `s` is a 64-char lowercase hex digest (a nack hash).
pub fn is_sha256_hex(s: &str) -> bool {
    is_lower_hex(s, 64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_id_rejects_non_ids() {
        for bad in [
            "",
            "0123456789ABCDEF0123456789abcdef",
            "0123456789abcdef0123456789abcde",
            "0123456789abcdef0123456789abcdef0",
            "g123456789abcdef0123456789abcdef",
        ] {
            assert!(UserId::parse(bad).is_err(), "{bad}");
        }
        assert!(UserId::parse("0123456789abcdef0123456789abcdef").is_ok());
    }

    #[test]
    fn ids_are_random_hex() {
        let a = new_message_id();
        assert!(is_lower_hex(&a, 32));
        assert_ne!(a, new_message_id());
    }
}
