//! Creating and unlocking an identity, offline.

use vodozemac::olm::Account;

use super::{setting, Changes, ClientError, IdentityRecord, Store, StoreTransaction};
use crate::ids::UserId;
use crate::olm::{self, PickleKey};

/// The public face of an identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityInfo {
    pub user_id: UserId,
    pub identity_key: String,
    pub signing_key: String,
}

/// Creates a new identity in an empty store (offline: nothing is published
/// until the first send or receive).
pub fn create_identity<S: Store>(
    store: &S,
    secret: &str,
    name: &str,
) -> Result<IdentityInfo, ClientError> {
    let key = PickleKey::from_secret(secret);
    let mut tx = StoreTransaction::new(store)?;
    if store.identity()?.is_some() {
        return Err(ClientError::IdentityExists);
    }
    let account = Account::new();
    tx.changes = Changes {
        identity: Some(IdentityRecord {
            account_pickle: olm::pickle_account(&account, &key),
            fallback_published_at: None,
        }),
        settings: vec![(setting::NAME.into(), name.into())],
        ..Changes::default()
    };
    tx.commit()?;
    Ok(info(&account))
}

/// Unlocks the identity in a store and describes it (offline).
pub fn identity_info<S: Store>(store: &S, secret: &str) -> Result<IdentityInfo, ClientError> {
    Ok(info(&unlock(store, &PickleKey::from_secret(secret))?))
}

pub(super) fn unlock<S: Store + ?Sized>(
    store: &S,
    key: &PickleKey,
) -> Result<Account, ClientError> {
    let record = store.identity()?.ok_or(ClientError::NoIdentity)?;
    olm::unpickle_account(&record.account_pickle, key).map_err(|_| ClientError::WrongSecret)
}

fn info(account: &Account) -> IdentityInfo {
    let identity_key = account.curve25519_key().to_base64();
    let signing_key = account.ed25519_key().to_base64();
    IdentityInfo {
        user_id: UserId::from_keys(&identity_key, &signing_key),
        identity_key,
        signing_key,
    }
}
