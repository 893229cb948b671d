//! The Olm layer on vodozemac: identities, sessions, pickles and message
//! bodies in the encodings Python retalk uses.

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::{DecodePaddingMode, Engine};
use sha2::{Digest, Sha256};
use vodozemac::olm::{Account, AccountPickle, OlmMessage, Session, SessionConfig, SessionPickle};

/// Standard alphabet, padded on output, padding optional on input (Python's
/// `b64decode` accepts both).
const BODY_B64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_encode_padding(true)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The only session config the Python binding knows.
pub fn session_config() -> SessionConfig {
    SessionConfig::version_1()
}

/// The key that encrypts pickles at rest: `sha256(utf8(secret))`, as
/// Python retalk derives it, so a Python identity opens with its secret.
#[derive(Clone)]
pub struct PickleKey([u8; 32]);

impl PickleKey {
    pub fn from_secret(secret: &str) -> Self {
        Self(Sha256::digest(secret.as_bytes()).into())
    }

    /// The key's bytes: 0.3.0's `_store_key`, from which it derives its
    /// at-rest key for saved history (`client::history`).
    pub(crate) fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// A key for data at rest other than pickles, derived so that no key
    /// serves two ciphers.
    fn data_key(&self) -> chacha20poly1305::Key {
        let mut h = Sha256::new();
        h.update(b"retalk data at rest v1");
        h.update(self.0);
        h.finalize()
    }

    /// Encrypts local data at rest (XChaCha20-Poly1305, random nonce),
    /// as base64.
    pub fn seal(&self, plaintext: &[u8]) -> String {
        use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng};
        let cipher = chacha20poly1305::XChaCha20Poly1305::new(&self.data_key());
        let nonce = chacha20poly1305::XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let mut out = nonce.to_vec();
        // Encryption with a valid key and nonce cannot fail.
        out.extend(cipher.encrypt(&nonce, plaintext).unwrap_or_default());
        BODY_B64.encode(out)
    }

    /// Opens what [`seal`](Self::seal) made.
    pub fn open(&self, sealed: &str) -> Result<Vec<u8>, PickleError> {
        use chacha20poly1305::aead::{Aead, KeyInit};
        let bytes = BODY_B64.decode(sealed).map_err(|_| PickleError)?;
        if bytes.len() < 24 {
            return Err(PickleError);
        }
        let (nonce, ciphertext) = bytes.split_at(24);
        let cipher = chacha20poly1305::XChaCha20Poly1305::new(&self.data_key());
        cipher
            .decrypt(chacha20poly1305::XNonce::from_slice(nonce), ciphertext)
            .map_err(|_| PickleError)
    }
}

impl std::fmt::Debug for PickleKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PickleKey(..)")
    }
}

/// A pickle that does not open with this key: a wrong secret or a damaged
/// store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("could not decrypt the pickle (wrong secret or damaged store)")]
pub struct PickleError;

pub fn pickle_account(account: &Account, key: &PickleKey) -> String {
    account.pickle().encrypt(&key.0)
}

pub fn unpickle_account(pickle: &str, key: &PickleKey) -> Result<Account, PickleError> {
    AccountPickle::from_encrypted(pickle, &key.0)
        .map(Account::from_pickle)
        .map_err(|_| PickleError)
}

pub fn pickle_session(session: &Session, key: &PickleKey) -> String {
    session.pickle().encrypt(&key.0)
}

pub fn unpickle_session(pickle: &str, key: &PickleKey) -> Result<Session, PickleError> {
    SessionPickle::from_encrypted(pickle, &key.0)
        .map(Session::from_pickle)
        .map_err(|_| PickleError)
}

/// Why a wire message is not an Olm message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("message body is not base64")]
    NotBase64,
    #[error("unknown message type {0} (expected 0 or 1)")]
    UnknownType(i64),
    #[error("message body is not a valid Olm message")]
    NotOlm,
}

/// Decodes an `(mtype, body)` pair from the wire.
pub fn decode_message(mtype: i64, body: &str) -> Result<OlmMessage, BodyError> {
    let kind = match mtype {
        0 => 0usize,
        1 => 1usize,
        other => return Err(BodyError::UnknownType(other)),
    };
    let bytes = BODY_B64
        .decode(body.trim())
        .map_err(|_| BodyError::NotBase64)?;
    OlmMessage::from_parts(kind, &bytes).map_err(|_| BodyError::NotOlm)
}

/// Encodes an Olm message as `(mtype, padded base64 body)`.
pub fn encode_message(message: &OlmMessage) -> (i64, String) {
    let (kind, bytes) = message.to_parts();
    (kind as i64, BODY_B64.encode(bytes))
}
