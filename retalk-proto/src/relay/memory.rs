//! The relay's state in memory: for unit tests, examples and the fuzzers.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Mutex, MutexGuard};

use super::store::*;
use crate::ids::UserId;
use crate::wire::{ClaimedKey, KeyCounts, PublicKeys};

#[derive(Default)]
struct User {
    keys: Option<PublicKeys>,
    fallback: Option<(String, String)>,
    /// Unclaimed one-time keys, oldest first (by insertion sequence).
    otks: BTreeMap<u64, (String, String)>,
    /// Ids of one-time keys ever claimed: never offered again.
    claimed: HashSet<String>,
}

#[derive(Default)]
struct State {
    users: HashMap<UserId, User>,
    messages: BTreeMap<i64, (UserId, StoredMessage)>,
    next_message_id: i64,
    next_otk: u64,
    nonces: HashMap<String, f64>,
    /// The same nonces in the order they were used, to forget them cheaply.
    nonce_order: VecDeque<(f64, String)>,
    /// (recipient, hash) -> (sequence, sig, ts)
    refused: HashMap<(UserId, String), (u64, String, f64)>,
    next_refusal: u64,
    api_keys: BTreeMap<String, ApiKeyRecord>,
}

/// A [`RelayStore`] in memory.
#[derive(Default)]
pub struct MemoryRelayStore {
    state: Mutex<State>,
}

impl MemoryRelayStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> Result<MutexGuard<'_, State>, StoreError> {
        self.state
            .lock()
            .map_err(|_| StoreError::msg("memory relay store poisoned"))
    }

    /// Queued messages, for tests and demos that look at what the relay holds.
    pub fn queued(&self) -> Vec<StoredMessage> {
        self.state()
            .map(|s| s.messages.values().map(|(_, m)| m.clone()).collect())
            .unwrap_or_default()
    }

    /// (unclaimed one-time keys, has fallback) of a user, for tests.
    pub fn count_keys_for(&self, user: &UserId) -> (u64, bool) {
        self.count_keys(user)
            .map(|c| (c.unclaimed, c.has_fallback))
            .unwrap_or_default()
    }

    /// Replaces a user's published keys: a test's tampering relay.
    pub fn set_keys(&self, user: &UserId, keys: Option<PublicKeys>) {
        if let Ok(mut s) = self.state() {
            s.users.entry(user.clone()).or_default().keys = keys;
        }
    }
}

impl RelayStore for MemoryRelayStore {
    fn use_nonce(&self, nonce: &str, now: f64, forget_before: f64) -> Result<bool, StoreError> {
        let mut s = self.state()?;
        while s
            .nonce_order
            .front()
            .is_some_and(|(ts, _)| *ts < forget_before)
        {
            if let Some((_, old)) = s.nonce_order.pop_front() {
                s.nonces.remove(&old);
            }
        }
        if s.nonces.contains_key(nonce) {
            return Ok(false);
        }
        s.nonces.insert(nonce.to_owned(), now);
        s.nonce_order.push_back((now, nonce.to_owned()));
        Ok(true)
    }

    fn publish_keys(
        &self,
        user: &UserId,
        keys: &PublicKeys,
        one_time_keys: &[(String, String)],
        fallback_key: Option<&(String, String)>,
        max_unclaimed: u64,
    ) -> Result<PublishOutcome, StoreError> {
        let mut s = self.state()?;
        let empty = User::default();
        let u = s.users.get(user).unwrap_or(&empty);
        let held: HashSet<&str> = u.otks.values().map(|(id, _)| id.as_str()).collect();
        // New ids in upload order (a repeat takes the last material), and
        // the new material of ids already held.
        let mut fresh: Vec<&(String, String)> = Vec::new();
        let mut fresh_at: HashMap<&str, usize> = HashMap::new();
        let mut renewed: HashMap<&str, &str> = HashMap::new();
        for k in one_time_keys {
            let id = k.0.as_str();
            if u.claimed.contains(id) {
                continue;
            }
            if held.contains(id) {
                renewed.insert(id, &k.1);
            } else if let Some(&at) = fresh_at.get(id) {
                fresh[at] = k;
            } else {
                fresh_at.insert(id, fresh.len());
                fresh.push(k);
            }
        }
        let unclaimed = held.len() as u64;
        if unclaimed + fresh.len() as u64 > max_unclaimed {
            return Ok(PublishOutcome::TooManyKeys { unclaimed });
        }
        let added = fresh.len() as u64;
        let mut seq = s.next_otk;
        let u = s.users.entry(user.clone()).or_default();
        u.keys = Some(keys.clone());
        if let Some(fk) = fallback_key {
            u.fallback = Some(fk.clone());
        }
        for (id, material) in u.otks.values_mut() {
            if let Some(new) = renewed.get(id.as_str()) {
                *material = (*new).to_owned();
            }
        }
        for k in fresh {
            u.otks.insert(seq, k.clone());
            seq += 1;
        }
        s.next_otk = seq;
        Ok(PublishOutcome::Published { added })
    }

    fn count_keys(&self, user: &UserId) -> Result<KeyCounts, StoreError> {
        let s = self.state()?;
        Ok(match s.users.get(user) {
            Some(u) => KeyCounts {
                unclaimed: u.otks.len() as u64,
                has_fallback: u.fallback.is_some(),
            },
            None => KeyCounts {
                unclaimed: 0,
                has_fallback: false,
            },
        })
    }

    fn get_keys(&self, user: &UserId) -> Result<Option<PublicKeys>, StoreError> {
        Ok(self.state()?.users.get(user).and_then(|u| u.keys.clone()))
    }

    fn claim_key(&self, user: &UserId) -> Result<ClaimOutcome, StoreError> {
        let mut s = self.state()?;
        let Some(u) = s.users.get_mut(user) else {
            return Ok(ClaimOutcome::UnknownPeer);
        };
        let Some(keys) = u.keys.clone() else {
            return Ok(ClaimOutcome::UnknownPeer);
        };
        if let Some((_, (key_id, key))) = u.otks.pop_first() {
            u.claimed.insert(key_id.clone());
            return Ok(ClaimOutcome::Claimed(ClaimedKey {
                identity_key: keys.identity_key,
                signing_key: keys.signing_key,
                key_id,
                one_time_key: key,
                fallback: false,
            }));
        }
        Ok(match &u.fallback {
            Some((key_id, key)) => ClaimOutcome::Claimed(ClaimedKey {
                identity_key: keys.identity_key,
                signing_key: keys.signing_key,
                key_id: key_id.clone(),
                one_time_key: key.clone(),
                fallback: true,
            }),
            None => ClaimOutcome::Exhausted,
        })
    }

    fn send_message(
        &self,
        m: &NewMessage,
        rules: &DeliveryRules,
    ) -> Result<SendOutcome, StoreError> {
        let mut s = self.state()?;
        if !s.users.contains_key(&m.recipient) {
            return Ok(SendOutcome::UnknownRecipient);
        }
        if let Some((_, sig, ts)) = s.refused.get(&(m.recipient.clone(), m.body_hash.clone())) {
            if *ts > rules.refusals_expire_before {
                return Ok(SendOutcome::Refused { sig: sig.clone() });
            }
        }
        if rules.max_mailbox > 0 {
            let mine = s.messages.values().filter(|(r, _)| *r == m.recipient);
            let (total, from_sender) = mine.fold((0u64, 0u64), |(t, f), (_, msg)| {
                (t + 1, f + u64::from(msg.sender == m.sender.as_str()))
            });
            if let Some(refusal) = rules.over_cap(total, from_sender) {
                return Ok(refusal);
            }
        }
        s.next_message_id += 1;
        let message_id = s.next_message_id;
        let stored = StoredMessage {
            message_id,
            ts: m.ts,
            sender: m.sender.to_string(),
            mtype: m.mtype,
            body: m.body.clone(),
        };
        s.messages.insert(message_id, (m.recipient.clone(), stored));
        Ok(SendOutcome::Stored { message_id })
    }

    fn read_messages(
        &self,
        user: &UserId,
        from: Option<&str>,
        peek: bool,
        limit: ReadLimit,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let mut s = self.state()?;
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for (_, (recipient, m)) in s.messages.iter() {
            if recipient != user || from.is_some_and(|f| f != m.sender) {
                continue;
            }
            if !limit.admits(out.len(), bytes, m.body.len()) {
                break;
            }
            bytes += m.body.len();
            out.push(m.clone());
        }
        if !peek {
            for m in &out {
                s.messages.remove(&m.message_id);
            }
        }
        Ok(out)
    }

    fn nack(
        &self,
        recipient: &UserId,
        hash: &str,
        sig: &str,
        now: f64,
        rules: &RefusalRules,
    ) -> Result<(), StoreError> {
        let mut s = self.state()?;
        if let Some(before) = rules.expire_before {
            s.refused.retain(|_, (_, _, ts)| *ts >= before);
        }
        s.next_refusal += 1;
        let seq = s.next_refusal;
        let key = (recipient.clone(), hash.to_owned());
        let seq = s.refused.get(&key).map_or(seq, |(old, _, _)| *old);
        s.refused.insert(key, (seq, sig.to_owned(), now));
        if rules.max_per_recipient > 0 {
            let mut mine: Vec<_> = s
                .refused
                .iter()
                .filter(|((r, _), _)| r == recipient)
                .map(|(k, (seq, _, _))| (*seq, k.clone()))
                .collect();
            if mine.len() as u64 > rules.max_per_recipient {
                mine.sort();
                let evict = mine.len() - rules.max_per_recipient as usize;
                for (_, k) in mine.into_iter().take(evict) {
                    s.refused.remove(&k);
                }
            }
        }
        Ok(())
    }

    fn api_key_valid(&self, key_hash: &str) -> Result<bool, StoreError> {
        Ok(self
            .state()?
            .api_keys
            .get(key_hash)
            .is_some_and(|k| !k.disabled))
    }

    fn api_key_create(&self, key_hash: &str, label: &str, now: f64) -> Result<(), StoreError> {
        self.state()?.api_keys.insert(
            key_hash.to_owned(),
            ApiKeyRecord {
                key_hash: key_hash.to_owned(),
                label: label.to_owned(),
                created: now,
                disabled: false,
            },
        );
        Ok(())
    }

    fn api_key_list(&self) -> Result<Vec<ApiKeyRecord>, StoreError> {
        let mut keys: Vec<_> = self.state()?.api_keys.values().cloned().collect();
        keys.sort_by(|a, b| a.created.total_cmp(&b.created));
        Ok(keys)
    }

    fn api_key_set_disabled(&self, key_hash: &str, disabled: bool) -> Result<u64, StoreError> {
        Ok(match self.state()?.api_keys.get_mut(key_hash) {
            Some(k) => {
                k.disabled = disabled;
                1
            }
            None => 0,
        })
    }

    fn api_key_delete(&self, key_hash: &str) -> Result<u64, StoreError> {
        Ok(u64::from(self.state()?.api_keys.remove(key_hash).is_some()))
    }
}

#[cfg(test)]
mod tests {
    use super::MemoryRelayStore;
    crate::relay_store_tests!(MemoryRelayStore::new);

    mod shared {
        use super::MemoryRelayStore;
        use std::sync::Arc;

        // Two clones of one Arc: the checks themselves are checked on the
        // simplest shared store.
        crate::relay_store_shared_tests!(|| {
            let store = Arc::new(MemoryRelayStore::new());
            (store.clone(), store, ())
        });
    }
}
