//! The relay's state on sled.

use std::collections::HashMap;
use std::path::Path;

use retalk_proto::ids::UserId;
use retalk_proto::relay::{
    ApiKeyRecord, ClaimOutcome, DeliveryRules, NewMessage, PublishOutcome, ReadLimit, RefusalRules,
    RelayStore, SendOutcome, StoreError, StoredMessage,
};
use retalk_proto::wire::{ClaimedKey, KeyCounts, PublicKeys};
use sled::IVec;

use crate::codec::{corrupt, key, ord_f64, seq_suffix, Dec, Enc, ID_LEN};
use crate::db::{sled_err, Base};

// The trees, one per table. `u` is a user id (32 bytes), `seq`/`id` a
// big-endian u64, `ts` an [`ord_f64`] timestamp.
/// `u` -> identity key, signing key, fallback key (id, key) if any.
const USERS: usize = 1;
/// `u ‖ seq` -> (key id, key): a user's unclaimed one-time keys, oldest first.
const OTKS: usize = 2;
/// `recipient ‖ id` -> (sender, ts, mtype, body): a mailbox, oldest first.
const MESSAGES: usize = 3;
/// nonce -> ts.
const NONCES: usize = 4;
/// `ts ‖ nonce` -> (): nonces by age, to forget the old ones.
const NONCES_BY_TS: usize = 5;
/// `recipient ‖ hash` -> (seq, sig, ts): the 0.3.0 refusals.
const REFUSED: usize = 6;
/// `recipient ‖ seq` -> hash: a recipient's refusals by first nack.
const REFUSED_RANK: usize = 7;
/// `ts ‖ recipient ‖ hash` -> (): refusals by age, to prune the expired.
const REFUSED_BY_TS: usize = 8;
/// key hash -> (label, created, disabled).
const API_KEYS: usize = 9;
/// `u ‖ key id` -> (): ids of a user's one-time keys ever claimed, never
/// offered again (see `RelayStore::publish_keys`). Created on open in
/// databases made before it, which then remember claims from then on.
const CLAIMED_OTKS: usize = 10;

const TREES: [&str; 11] = [
    "meta",
    "users",
    "otks",
    "messages",
    "nonces",
    "nonces_by_ts",
    "refused",
    "refused_rank",
    "refused_by_ts",
    "api_keys",
    "claimed_otks",
];

/// The format marker of a relay database.
const FORMAT: &str = "retalk relay store on sled, layout 1";

/// Counters in `meta`.
const NEXT_OTK: &[u8] = b"next_otk";
const NEXT_MESSAGE: &[u8] = b"next_message";
const NEXT_REFUSAL: &[u8] = b"next_refusal";

/// A [`RelayStore`] in a sled database (a directory).
///
/// Every write is one step under a single writer lock, applied in one sled
/// transaction and flushed to disk (fsync) before the method returns; reads
/// take no lock. A claimed one-time key is deleted in the step that hands
/// it out, so it can never be handed out twice, however many threads claim
/// at once, and its id is remembered in the same step, so no later upload
/// can offer it again (the rule of `RelayStore::publish_keys`, as in the
/// SQLite backend).
///
/// sled locks its directory: one process at a time. A second process (or
/// a second `open` in this one) fails, after waiting up to a second for
/// the lock, with an error saying the database is in use.
pub struct SledRelayStore {
    base: Base,
}

impl std::fmt::Debug for SledRelayStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledRelayStore")
            .field("path", &self.base.path())
            .finish_non_exhaustive()
    }
}

struct User {
    keys: PublicKeys,
    fallback: Option<(String, String)>,
}

fn encode_user(u: &User) -> Vec<u8> {
    let e = Enc::new()
        .str(&u.keys.identity_key)
        .str(&u.keys.signing_key);
    match &u.fallback {
        Some((id, k)) => e.bool(true).str(id).str(k),
        None => e.bool(false),
    }
    .done()
}

fn decode_user(v: &[u8]) -> Result<User, StoreError> {
    let mut d = Dec::new(v, "user")?;
    let keys = PublicKeys {
        identity_key: d.str()?,
        signing_key: d.str()?,
    };
    let fallback = if d.bool()? {
        Some((d.str()?, d.str()?))
    } else {
        None
    };
    d.end()?;
    Ok(User { keys, fallback })
}

fn encode_pair(a: &str, b: &str) -> Vec<u8> {
    Enc::new().str(a).str(b).done()
}

fn decode_otk(v: &[u8]) -> Result<(String, String), StoreError> {
    let mut d = Dec::new(v, "one-time key")?;
    let pair = (d.str()?, d.str()?);
    d.end()?;
    Ok(pair)
}

struct Refusal {
    seq: u64,
    sig: String,
    ts: f64,
}

fn encode_refusal(r: &Refusal) -> Vec<u8> {
    Enc::new().u64(r.seq).str(&r.sig).f64(r.ts).done()
}

fn decode_refusal(v: &[u8]) -> Result<Refusal, StoreError> {
    let mut d = Dec::new(v, "refusal")?;
    let r = Refusal {
        seq: d.u64()?,
        sig: d.str()?,
        ts: d.f64()?,
    };
    d.end()?;
    Ok(r)
}

fn decode_message(k: &[u8], v: &[u8]) -> Result<StoredMessage, StoreError> {
    let id = seq_suffix(k, "message")?;
    let mut d = Dec::new(v, "message")?;
    let m = StoredMessage {
        message_id: i64::try_from(id).map_err(|_| corrupt("message"))?,
        sender: d.str()?,
        ts: d.f64()?,
        mtype: d.i64()?,
        body: d.str()?,
    };
    d.end()?;
    Ok(m)
}

/// The sender of a stored message, read without decoding the rest.
fn message_sender(v: &[u8]) -> Result<&str, StoreError> {
    Dec::new(v, "message")?.str_ref()
}

fn decode_api_key(k: &[u8], v: &[u8]) -> Result<ApiKeyRecord, StoreError> {
    let mut d = Dec::new(v, "api key")?;
    let r = ApiKeyRecord {
        key_hash: String::from_utf8(k.to_vec()).map_err(|_| corrupt("api key"))?,
        label: d.str()?,
        created: d.f64()?,
        disabled: d.bool()?,
    };
    d.end()?;
    Ok(r)
}

fn encode_api_key(r: &ApiKeyRecord) -> Vec<u8> {
    Enc::new()
        .str(&r.label)
        .f64(r.created)
        .bool(r.disabled)
        .done()
}

fn uk(user: &UserId) -> &[u8] {
    user.as_str().as_bytes()
}

/// The refusal key of a recipient and body hash, and back.
fn refusal_key(recipient: &[u8], hash: &[u8]) -> Vec<u8> {
    key(&[recipient, hash])
}

fn split_refusal_key(k: &[u8]) -> Result<(&[u8], &[u8]), StoreError> {
    if k.len() < ID_LEN {
        return Err(corrupt("refusal"));
    }
    Ok(k.split_at(ID_LEN))
}

/// Messages of a mailbox as `read_messages` hands them over: at least one,
/// then within both limits, optionally from one sender only.
fn select(
    rows: impl Iterator<Item = Result<(IVec, IVec), StoreError>>,
    from: Option<&str>,
    limit: ReadLimit,
) -> Result<Vec<(IVec, StoredMessage)>, StoreError> {
    let mut out: Vec<(IVec, StoredMessage)> = Vec::new();
    let mut bytes = 0usize;
    for row in rows {
        let (k, v) = row?;
        if let Some(sender) = from {
            if message_sender(&v)? != sender {
                continue;
            }
        }
        let m = decode_message(&k, &v)?;
        if !limit.admits(out.len(), bytes, m.body.len()) {
            break;
        }
        bytes += m.body.len();
        out.push((k, m));
    }
    Ok(out)
}

impl SledRelayStore {
    /// Opens (creating if missing) the relay database directory `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Ok(Self {
            base: Base::open(path.as_ref(), FORMAT, &TREES)?,
        })
    }

    /// The database directory.
    pub fn path(&self) -> &Path {
        self.base.path()
    }

    fn user(&self, user: &UserId) -> Result<Option<User>, StoreError> {
        self.base
            .tree(USERS)?
            .get(uk(user))
            .map_err(sled_err)?
            .map(|v| decode_user(&v))
            .transpose()
    }
}

impl RelayStore for SledRelayStore {
    fn use_nonce(&self, nonce: &str, now: f64, forget_before: f64) -> Result<bool, StoreError> {
        self.base.write(|o| {
            for (k, _) in o.range_below(NONCES_BY_TS, &ord_f64(forget_before))? {
                o.remove(NONCES, k.get(8..).unwrap_or_default())?;
                o.remove(NONCES_BY_TS, k)?;
            }
            if o.get(NONCES, nonce.as_bytes())?.is_some() {
                return Ok(false);
            }
            o.insert(NONCES, nonce.as_bytes(), Enc::new().f64(now).done())?;
            o.insert(
                NONCES_BY_TS,
                key(&[&ord_f64(now), nonce.as_bytes()]),
                IVec::default(),
            )?;
            Ok(true)
        })
    }

    fn publish_keys(
        &self,
        user: &UserId,
        keys: &PublicKeys,
        one_time_keys: &[(String, String)],
        fallback_key: Option<&(String, String)>,
        max_unclaimed: u64,
    ) -> Result<PublishOutcome, StoreError> {
        let u = uk(user);
        self.base.write(|o| {
            let held_rows = o.scan_prefix(OTKS, u)?;
            let unclaimed = held_rows.len() as u64;
            let mut held: HashMap<String, Vec<u8>> = HashMap::new();
            for (k, v) in held_rows {
                held.insert(decode_otk(&v)?.0, k);
            }
            // The rule of `RelayStore::publish_keys`: claimed ids are
            // skipped, held ids take the new material, others are added once.
            let mut fresh: Vec<&(String, String)> = Vec::new();
            let mut fresh_at: HashMap<&str, usize> = HashMap::new();
            let mut renewed: Vec<(Vec<u8>, &(String, String))> = Vec::new();
            for k in one_time_keys {
                let id = k.0.as_str();
                if let Some(row) = held.get(id) {
                    renewed.push((row.clone(), k));
                } else if let Some(&at) = fresh_at.get(id) {
                    fresh[at] = k;
                } else if o.get(CLAIMED_OTKS, &key(&[u, id.as_bytes()]))?.is_none() {
                    fresh_at.insert(id, fresh.len());
                    fresh.push(k);
                }
            }
            if unclaimed + fresh.len() as u64 > max_unclaimed {
                return Ok(PublishOutcome::TooManyKeys { unclaimed });
            }
            let fallback = match fallback_key {
                Some(fk) => Some(fk.clone()),
                None => match o.get(USERS, u)? {
                    Some(v) => decode_user(&v)?.fallback,
                    None => None,
                },
            };
            let record = User {
                keys: keys.clone(),
                fallback,
            };
            o.insert(USERS, u, encode_user(&record))?;
            for (row, (key_id, k)) in renewed {
                o.insert(OTKS, row, encode_pair(key_id, k))?;
            }
            let added = fresh.len() as u64;
            if !fresh.is_empty() {
                let first = o.bump(NEXT_OTK, added)?;
                for (seq, (key_id, k)) in (first..).zip(fresh) {
                    o.insert(OTKS, key(&[u, &seq.to_be_bytes()]), encode_pair(key_id, k))?;
                }
            }
            Ok(PublishOutcome::Published { added })
        })
    }

    fn count_keys(&self, user: &UserId) -> Result<KeyCounts, StoreError> {
        let mut unclaimed = 0u64;
        for row in self.base.tree(OTKS)?.scan_prefix(uk(user)).keys() {
            row.map_err(sled_err)?;
            unclaimed += 1;
        }
        let has_fallback = self.user(user)?.is_some_and(|u| u.fallback.is_some());
        Ok(KeyCounts {
            unclaimed,
            has_fallback,
        })
    }

    fn get_keys(&self, user: &UserId) -> Result<Option<PublicKeys>, StoreError> {
        Ok(self.user(user)?.map(|u| u.keys))
    }

    fn claim_key(&self, user: &UserId) -> Result<ClaimOutcome, StoreError> {
        let u = uk(user);
        // The writer lock makes finding the oldest key and deleting it one
        // step: no other claim can see the key in between.
        self.base.write(|o| {
            let Some(v) = o.get(USERS, u)? else {
                return Ok(ClaimOutcome::UnknownPeer);
            };
            let User { keys, fallback } = decode_user(&v)?;
            if let Some((k, v)) = o.first_with_prefix(OTKS, u)? {
                let (key_id, one_time_key) = decode_otk(&v)?;
                o.remove(OTKS, k)?;
                o.insert(CLAIMED_OTKS, key(&[u, key_id.as_bytes()]), IVec::default())?;
                return Ok(ClaimOutcome::Claimed(ClaimedKey {
                    identity_key: keys.identity_key,
                    signing_key: keys.signing_key,
                    key_id,
                    one_time_key,
                    fallback: false,
                }));
            }
            Ok(match fallback {
                Some((key_id, one_time_key)) => ClaimOutcome::Claimed(ClaimedKey {
                    identity_key: keys.identity_key,
                    signing_key: keys.signing_key,
                    key_id,
                    one_time_key,
                    fallback: true,
                }),
                None => ClaimOutcome::Exhausted,
            })
        })
    }

    fn send_message(
        &self,
        m: &NewMessage,
        rules: &DeliveryRules,
    ) -> Result<SendOutcome, StoreError> {
        let to = uk(&m.recipient);
        self.base.write(|o| {
            if o.get(USERS, to)?.is_none() {
                return Ok(SendOutcome::UnknownRecipient);
            }
            if let Some(v) = o.get(REFUSED, &refusal_key(to, m.body_hash.as_bytes()))? {
                let r = decode_refusal(&v)?;
                if r.ts > rules.refusals_expire_before {
                    return Ok(SendOutcome::Refused { sig: r.sig });
                }
            }
            if rules.max_mailbox > 0 {
                let (mut total, mut from_sender) = (0u64, 0u64);
                for row in self.base.tree(MESSAGES)?.scan_prefix(to) {
                    let (_, v) = row.map_err(sled_err)?;
                    total += 1;
                    from_sender += u64::from(message_sender(&v)? == m.sender.as_str());
                }
                if let Some(refusal) = rules.over_cap(total, from_sender) {
                    return Ok(refusal);
                }
            }
            let id = o.bump(NEXT_MESSAGE, 1)?;
            let message_id =
                i64::try_from(id).map_err(|_| StoreError::msg("message ids exhausted"))?;
            let value = Enc::new()
                .str(m.sender.as_str())
                .f64(m.ts)
                .i64(m.mtype)
                .str(&m.body)
                .done();
            o.insert(MESSAGES, key(&[to, &id.to_be_bytes()]), value)?;
            Ok(SendOutcome::Stored { message_id })
        })
    }

    fn read_messages(
        &self,
        user: &UserId,
        from: Option<&str>,
        peek: bool,
        limit: ReadLimit,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let me = uk(user);
        let rows = |tree: &sled::Tree| tree.scan_prefix(me).map(|r| r.map_err(sled_err));
        if peek {
            let out = select(rows(self.base.tree(MESSAGES)?), from, limit)?;
            return Ok(out.into_iter().map(|(_, m)| m).collect());
        }
        self.base.write(|o| {
            // Nothing is staged for MESSAGES yet: committed state is current.
            let out = select(rows(self.base.tree(MESSAGES)?), from, limit)?;
            for (k, _) in &out {
                o.remove(MESSAGES, k.to_vec())?;
            }
            Ok(out.into_iter().map(|(_, m)| m).collect())
        })
    }

    fn nack(
        &self,
        recipient: &UserId,
        hash: &str,
        sig: &str,
        now: f64,
        rules: &RefusalRules,
    ) -> Result<(), StoreError> {
        let me = uk(recipient);
        self.base.write(|o| {
            if let Some(before) = rules.expire_before {
                for (k, _) in o.range_below(REFUSED_BY_TS, &ord_f64(before))? {
                    let rk = k.get(8..).unwrap_or_default().to_vec();
                    if let Some(v) = o.get(REFUSED, &rk)? {
                        let (who, _) = split_refusal_key(&rk)?;
                        let seq = decode_refusal(&v)?.seq;
                        o.remove(REFUSED_RANK, key(&[who, &seq.to_be_bytes()]))?;
                    }
                    o.remove(REFUSED, rk)?;
                    o.remove(REFUSED_BY_TS, k)?;
                }
            }
            // Re-nacking refreshes the time and signature, keeping its age
            // rank for eviction, as the Python relay does.
            let rk = refusal_key(me, hash.as_bytes());
            let seq = match o.get(REFUSED, &rk)? {
                Some(v) => {
                    let old = decode_refusal(&v)?;
                    o.remove(REFUSED_BY_TS, key(&[&ord_f64(old.ts), &rk]))?;
                    old.seq
                }
                None => {
                    let seq = o.bump(NEXT_REFUSAL, 1)?;
                    o.insert(
                        REFUSED_RANK,
                        key(&[me, &seq.to_be_bytes()]),
                        hash.as_bytes(),
                    )?;
                    seq
                }
            };
            let refusal = Refusal {
                seq,
                sig: sig.to_owned(),
                ts: now,
            };
            o.insert(REFUSED, rk.clone(), encode_refusal(&refusal))?;
            o.insert(REFUSED_BY_TS, key(&[&ord_f64(now), &rk]), IVec::default())?;
            if rules.max_per_recipient > 0 {
                let ranked = o.scan_prefix(REFUSED_RANK, me)?;
                let excess = (ranked.len() as u64).saturating_sub(rules.max_per_recipient);
                for (rank_key, old_hash) in ranked.into_iter().take(excess as usize) {
                    let rk = refusal_key(me, &old_hash);
                    if let Some(v) = o.get(REFUSED, &rk)? {
                        let ts = decode_refusal(&v)?.ts;
                        o.remove(REFUSED_BY_TS, key(&[&ord_f64(ts), &rk]))?;
                    }
                    o.remove(REFUSED, rk)?;
                    o.remove(REFUSED_RANK, rank_key)?;
                }
            }
            Ok(())
        })
    }

    fn api_key_valid(&self, key_hash: &str) -> Result<bool, StoreError> {
        Ok(
            match self.base.tree(API_KEYS)?.get(key_hash).map_err(sled_err)? {
                Some(v) => !decode_api_key(key_hash.as_bytes(), &v)?.disabled,
                None => false,
            },
        )
    }

    fn api_key_create(&self, key_hash: &str, label: &str, now: f64) -> Result<(), StoreError> {
        let record = ApiKeyRecord {
            key_hash: key_hash.to_owned(),
            label: label.to_owned(),
            created: now,
            disabled: false,
        };
        self.base
            .write(|o| o.insert(API_KEYS, key_hash.as_bytes(), encode_api_key(&record)))
    }

    fn api_key_list(&self) -> Result<Vec<ApiKeyRecord>, StoreError> {
        let mut keys = Vec::new();
        for row in self.base.tree(API_KEYS)?.iter() {
            let (k, v) = row.map_err(sled_err)?;
            keys.push(decode_api_key(&k, &v)?);
        }
        keys.sort_by(|a, b| {
            a.created
                .total_cmp(&b.created)
                .then_with(|| a.key_hash.cmp(&b.key_hash))
        });
        Ok(keys)
    }

    fn api_key_set_disabled(&self, key_hash: &str, disabled: bool) -> Result<u64, StoreError> {
        self.base.write(|o| {
            let Some(v) = o.get(API_KEYS, key_hash.as_bytes())? else {
                return Ok(0);
            };
            let mut record = decode_api_key(key_hash.as_bytes(), &v)?;
            record.disabled = disabled;
            o.insert(API_KEYS, key_hash.as_bytes(), encode_api_key(&record))?;
            Ok(1)
        })
    }

    fn api_key_delete(&self, key_hash: &str) -> Result<u64, StoreError> {
        self.base.write(|o| {
            if o.get(API_KEYS, key_hash.as_bytes())?.is_none() {
                return Ok(0);
            }
            o.remove(API_KEYS, key_hash.as_bytes())?;
            Ok(1)
        })
    }
}
