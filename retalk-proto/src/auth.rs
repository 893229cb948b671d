//! Self-signed requests: the `auth` object, in both dialects.
//!
//! Every request proves its own origin: the caller's keys hash to the id it
//! claims, and its Ed25519 key signed
//! `tool|audience|user_id|ts|nonce|sha256(canonical(args))`. Binding the
//! relay's audience makes a request captured at one relay worthless at
//! another; the timestamp window and the nonce cache stop replays.

use std::collections::HashMap;
use std::sync::Mutex;

use serde_json::{Map, Value};
use vodozemac::{Ed25519PublicKey, Ed25519Signature};

use crate::ids::{fingerprint, new_nonce, UserId};

/// Seconds of allowed clock skew, in each direction.
pub const TIMESTAMP_WINDOW: f64 = 150.0;
/// How long a used nonce is remembered: twice the window, so a request can
/// never be both fresh and forgotten.
pub const NONCE_RETENTION: f64 = 2.0 * TIMESTAMP_WINDOW;
/// Longest nonce the relay stores; clients send 32 hex characters.
pub const MAX_NONCE_LEN: usize = 128;

/// The two spellings of the same auth object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dialect {
    /// retalk 0.0.1: `user_id`, `ts`, `sig`.
    V001,
    /// retalk 0.3.0: `fingerprint`, `timestamp`, `signature`.
    V030,
}

impl Dialect {
    pub fn id_field(self) -> &'static str {
        match self {
            Dialect::V001 => "user_id",
            Dialect::V030 => "fingerprint",
        }
    }
    pub fn ts_field(self) -> &'static str {
        match self {
            Dialect::V001 => "ts",
            Dialect::V030 => "timestamp",
        }
    }
    pub fn sig_field(self) -> &'static str {
        match self {
            Dialect::V001 => "sig",
            Dialect::V030 => "signature",
        }
    }
    pub fn other(self) -> Dialect {
        match self {
            Dialect::V001 => Dialect::V030,
            Dialect::V030 => Dialect::V001,
        }
    }
}

/// Why a request's auth was refused. The texts are the wire contract:
/// Python clients show them and upstream tooling matches on them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing required argument: 'auth'")]
    Missing,
    #[error("auth must be an object")]
    NotAnObject,
    #[error("missing auth field: '{0}'")]
    MissingField(&'static str),
    #[error("auth field '{0}' must be a string")]
    NotAString(&'static str),
    #[error("auth keys do not hash to user_id")]
    KeysDoNotHash,
    #[error("bad timestamp: '{0}' must be unix seconds as a decimal string")]
    BadTimestamp(&'static str),
    #[error("stale or future timestamp (check the clock)")]
    Stale,
    #[error("bad signature (wrong key, audience, or argument canonicalization)")]
    BadSignature,
    #[error("bad nonce: must be a string of at most {MAX_NONCE_LEN} characters")]
    BadNonce,
    #[error("replay detected: nonce already used")]
    Replay,
}

/// An auth object as received (or built): raw strings, not yet trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auth {
    pub user_id: String,
    pub identity_key: String,
    pub signing_key: String,
    /// Unix seconds as the decimal text that was signed.
    pub ts: String,
    pub nonce: String,
    pub sig: String,
}

/// The exact text a request signs.
pub fn signed_text(
    tool: &str,
    audience: &str,
    user_id: &str,
    ts: &str,
    nonce: &str,
    args_hash: &str,
) -> String {
    format!("{tool}|{audience}|{user_id}|{ts}|{nonce}|{args_hash}")
}

impl Auth {
    /// Builds and signs the auth for one request.
    pub fn sign(
        account: &vodozemac::olm::Account,
        tool: &str,
        audience: &str,
        args_hash: &str,
        now: f64,
    ) -> Auth {
        let identity_key = account.curve25519_key().to_base64();
        let signing_key = account.ed25519_key().to_base64();
        let user_id = fingerprint(&identity_key, &signing_key);
        let ts = format!("{}", now.floor() as i64);
        let nonce = new_nonce();
        let text = signed_text(tool, audience, &user_id, &ts, &nonce, args_hash);
        let sig = account.sign(text.as_bytes()).to_base64();
        Auth {
            user_id,
            identity_key,
            signing_key,
            ts,
            nonce,
            sig,
        }
    }

    /// Reads an auth object in whichever dialect it is written.
    pub fn from_json(value: Option<&Value>) -> Result<(Auth, Dialect), AuthError> {
        let obj = value
            .ok_or(AuthError::Missing)?
            .as_object()
            .ok_or(AuthError::NotAnObject)?;
        let dialect = if obj.contains_key("fingerprint")
            || !obj.contains_key("user_id") && obj.contains_key("timestamp")
        {
            Dialect::V030
        } else {
            Dialect::V001
        };
        let text = |name: &'static str| -> Result<String, AuthError> {
            match obj.get(name) {
                None => Err(AuthError::MissingField(name)),
                Some(Value::String(s)) => Ok(s.clone()),
                Some(_) => Err(AuthError::NotAString(name)),
            }
        };
        let ts = match obj.get(dialect.ts_field()) {
            None => return Err(AuthError::MissingField(dialect.ts_field())),
            Some(Value::String(s)) => s.clone(),
            // Python formats whatever it got into the signed text; an integer
            // prints as its digits.
            Some(Value::Number(n)) if n.is_i64() || n.is_u64() => n.to_string(),
            Some(_) => return Err(AuthError::BadTimestamp(dialect.ts_field())),
        };
        let auth = Auth {
            user_id: text(dialect.id_field())?,
            identity_key: text("identity_key")?,
            signing_key: text("signing_key")?,
            ts,
            nonce: text("nonce")?,
            sig: text(dialect.sig_field())?,
        };
        Ok((auth, dialect))
    }

    /// The auth object in one dialect.
    pub fn to_json(&self, dialect: Dialect) -> Value {
        let mut m = Map::new();
        m.insert(
            dialect.id_field().into(),
            Value::String(self.user_id.clone()),
        );
        m.insert(
            "identity_key".into(),
            Value::String(self.identity_key.clone()),
        );
        m.insert(
            "signing_key".into(),
            Value::String(self.signing_key.clone()),
        );
        m.insert(dialect.ts_field().into(), Value::String(self.ts.clone()));
        m.insert("nonce".into(), Value::String(self.nonce.clone()));
        m.insert(dialect.sig_field().into(), Value::String(self.sig.clone()));
        Value::Object(m)
    }

    /// Checks everything but the nonce, in the relay's order: keys hash to
    /// the id, the timestamp is fresh, the signature verifies for one of the
    /// relay's audiences. The nonce needs the relay's store and is the
    /// caller's last step.
    pub fn verify(
        &self,
        dialect: Dialect,
        tool: &str,
        args_hash: &str,
        audiences: &[String],
        now: f64,
    ) -> Result<UserId, AuthError> {
        self.verify_with(dialect, tool, args_hash, audiences, now, |key| {
            Ed25519PublicKey::from_base64(key).ok()
        })
    }

    /// [`verify`](Self::verify), decoding the signing key with `decode`
    /// (a relay passes its [`KeyCache`]).
    pub fn verify_with(
        &self,
        dialect: Dialect,
        tool: &str,
        args_hash: &str,
        audiences: &[String],
        now: f64,
        decode: impl FnOnce(&str) -> Option<Ed25519PublicKey>,
    ) -> Result<UserId, AuthError> {
        if fingerprint(&self.identity_key, &self.signing_key) != self.user_id {
            return Err(AuthError::KeysDoNotHash);
        }
        // The fingerprint is 32 lowercase hex by construction.
        let caller = UserId::parse(&self.user_id).map_err(|_| AuthError::KeysDoNotHash)?;
        let ts = parse_python_int(&self.ts).ok_or(AuthError::BadTimestamp(dialect.ts_field()))?;
        if (now - ts).abs() > TIMESTAMP_WINDOW {
            return Err(AuthError::Stale);
        }
        let key = decode(&self.signing_key).ok_or(AuthError::BadSignature)?;
        let sig = Ed25519Signature::from_base64(&self.sig).map_err(|_| AuthError::BadSignature)?;
        let verified = audiences.iter().any(|aud| {
            let text = signed_text(tool, aud, &self.user_id, &self.ts, &self.nonce, args_hash);
            key.verify(text.as_bytes(), &sig).is_ok()
        });
        if !verified {
            return Err(AuthError::BadSignature);
        }
        if self.nonce.is_empty() || self.nonce.len() > MAX_NONCE_LEN {
            return Err(AuthError::BadNonce);
        }
        Ok(caller)
    }
}

/// Signing keys of recent callers, decoded. Decoding a key (a point
/// decompression) costs about a third of checking a signature, and a caller
/// signs many requests with one key. Bounded: when full it starts over.
#[derive(Debug)]
pub struct KeyCache {
    keys: Mutex<HashMap<String, Ed25519PublicKey>>,
    capacity: usize,
}

impl KeyCache {
    pub fn new(capacity: usize) -> Self {
        Self {
            keys: Mutex::new(HashMap::new()),
            capacity,
        }
    }

    /// The key a base64 text encodes, if it is one.
    pub fn decode(&self, base64: &str) -> Option<Ed25519PublicKey> {
        if let Some(key) = self.keys.lock().ok()?.get(base64) {
            return Some(*key);
        }
        // Decoded outside the lock: other callers need not wait on it.
        let key = Ed25519PublicKey::from_base64(base64).ok()?;
        let mut keys = self.keys.lock().ok()?;
        if keys.len() >= self.capacity {
            keys.clear();
        }
        keys.insert(base64.to_owned(), key);
        Some(key)
    }
}

/// Python's `int(text)` for the forms a client may send: optional
/// surrounding whitespace and sign, then ASCII digits. Returned as f64
/// because it is only compared against the clock.
fn parse_python_int(text: &str) -> Option<f64> {
    let t = text.trim_matches(|c: char| c.is_ascii_whitespace());
    let digits = t.strip_prefix(['+', '-']).unwrap_or(t);
    if digits.is_empty() || digits.len() > 30 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    t.parse::<f64>().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_int_forms() {
        assert_eq!(parse_python_int(" +12 "), Some(12.0));
        assert_eq!(parse_python_int("-5"), Some(-5.0));
        for bad in ["", "1.5", "abc", "1e3", "--1", "+"] {
            assert_eq!(parse_python_int(bad), None, "{bad}");
        }
    }

    /// The cache answers what decoding answers, and stays within bounds.
    #[test]
    fn key_cache_decodes_like_the_key_and_stays_bounded() {
        let cache = KeyCache::new(3);
        let texts: Vec<String> = (0..5)
            .map(|_| vodozemac::olm::Account::new().ed25519_key().to_base64())
            .collect();
        for _ in 0..2 {
            for t in &texts {
                let direct = Ed25519PublicKey::from_base64(t).ok();
                assert!(direct.is_some());
                assert_eq!(cache.decode(t), direct);
                assert!(cache.keys.lock().map(|k| k.len()).unwrap_or(99) <= 3);
            }
        }
        for bad in ["", "not base64!", "AAAA"] {
            assert_eq!(cache.decode(bad), None, "{bad}");
        }
    }
}
