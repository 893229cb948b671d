//! A client's state on sled: one database directory per identity folder.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use retalk_proto::client::{
    Changes, Contact, Direction, GroupTag, IdentityRecord, InboxRecord, IncomingRecord,
    MessageRecord, OutboxEntry, OutboxKind, ProcessedRecord, ReceivedContact, SavedMessage,
    SessionRecord, Store, StoreError,
};
use retalk_proto::client::{Group, InviteRecord, LeftGroup, MessageFilter};
use retalk_proto::group::GroupId;
use retalk_proto::ids::UserId;
use retalk_proto::invite::InviteKind;
use sled::IVec;

use crate::codec::{be_u64, corrupt, key, ord_f64, user_id, Dec, Enc, ID_LEN};
use crate::db::{sled_err, Base, Overlay};

/// The database directory in an identity folder.
pub const STORE_DIR: &str = "store.sled";

// The trees, one per table (`meta` is tree 0). `seq` is a big-endian u64
// from the `seq` counter: the order things were first added.
/// `account` -> the identity record.
const IDENTITY: usize = 1;
/// key -> value.
const SETTINGS: usize = 2;
/// `peer ‖ session id` -> (pickle, last received, created).
const SESSIONS: usize = 3;
/// `seq` -> outbox entry (with its key): the outbox, oldest first.
const OUTBOX: usize = 4;
/// outbox key -> `seq`.
const OUTBOX_KEYS: usize = 5;
/// body hash -> (envelope id, peer, at).
const PROCESSED: usize = 6;
/// `at ‖ hash` -> (): processed markers by age, to forget the old ones.
const PROCESSED_BY_AT: usize = 7;
/// `seq` -> incoming record: fetched mail in fetch order.
const INCOMING: usize = 8;
/// body hash -> `seq`.
const INCOMING_KEYS: usize = 9;
/// `seq` -> inbox record: decrypted messages in arrival order.
const INBOX: usize = 10;
/// body hash -> `seq`.
const INBOX_KEYS: usize = 11;
/// name -> (id, pin, signing key): contacts by name (the signing key is
/// missing in values written before it existed).
const CONTACTS: usize = 12;
/// `seq` -> saved history row: its row number is the `seq`.
const MESSAGES: usize = 13;
/// message id -> `seq`: a second row with a held id is ignored.
const MESSAGE_IDS: usize = 14;
/// user id -> (): the block list.
const BLOCKED: usize = 15;
/// card fingerprint -> staged contact card.
const RECEIVED_CONTACTS: usize = 16;
/// group id -> (name, members, owner, ts).
const GROUPS: usize = 17;
/// group id -> (name, ts): groups left.
const LEFT_GROUPS: usize = 18;
/// invite code -> its record.
const INVITES: usize = 19;

const TREES: [&str; 20] = [
    "meta",
    "identity",
    "settings",
    "sessions",
    "outbox",
    "outbox_keys",
    "processed",
    "processed_by_at",
    "incoming",
    "incoming_keys",
    "inbox",
    "inbox_keys",
    "contacts",
    "messages",
    "message_ids",
    "blocked",
    "received_contacts",
    "groups",
    "left_groups",
    "invite_codes",
];

/// The format marker of a client database.
const FORMAT: &str = "retalk client store on sled, layout 1";

const ACCOUNT: &[u8] = b"account";
const SEQ: &[u8] = b"seq";

/// A client [`Store`] in an identity folder's `store.sled` directory.
///
/// Every [`commit`](Store::commit) is applied in one sled transaction (all
/// of the batch or none of it, also across a crash) and flushed to disk
/// (fsync) before it returns. Reads and commits are serialised, so a read
/// never sees half of a batch.
///
/// # One process per identity
///
/// sled takes an exclusive lock on its directory for as long as it is
/// open: two processes cannot share one sled identity. The second
/// [`open`](SledStore::open) fails (after waiting up to a second for the
/// lock) with an error saying the database is in use; the SQLite backend,
/// in contrast, lets processes take turns. Within
/// the process, [`lock`](Store::lock) is an in-process mutex that
/// serialises the client's read-modify-write operations.
pub struct SledStore {
    base: Base,
    op: Mutex<()>,
    take: Mutex<()>,
}

impl std::fmt::Debug for SledStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledStore")
            .field("path", &self.base.path())
            .finish_non_exhaustive()
    }
}

impl SledStore {
    /// Opens the identity folder `dir` (created, owner-only, if missing),
    /// i.e. its [`STORE_DIR`] database.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, StoreError> {
        let dir = dir.as_ref();
        if !dir.exists() {
            let mut builder = std::fs::DirBuilder::new();
            builder.recursive(true);
            #[cfg(unix)]
            std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
            builder.create(dir).map_err(|e| StoreError(Box::new(e)))?;
        }
        Self::open_path(dir.join(STORE_DIR))
    }

    /// Opens a store database directory by its path.
    pub fn open_path(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Ok(Self {
            base: Base::open(path.as_ref(), FORMAT, &TREES)?,
            op: Mutex::new(()),
            take: Mutex::new(()),
        })
    }

    /// The database directory.
    pub fn path(&self) -> &Path {
        self.base.path()
    }

    /// Runs a read with commits held off, so it sees whole batches only.
    fn read<T>(&self, f: impl FnOnce(&Base) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let _writer = self.base.writer();
        f(&self.base)
    }

    fn get(&self, t: usize, k: &[u8]) -> Result<Option<IVec>, StoreError> {
        self.read(|b| b.tree(t)?.get(k).map_err(sled_err))
    }

    /// Every value of a tree, in key order.
    fn values<T>(
        &self,
        t: usize,
        decode: impl Fn(&[u8]) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        self.read(|b| {
            b.tree(t)?
                .iter()
                .values()
                .map(|v| decode(&v.map_err(sled_err)?))
                .collect()
        })
    }
}

fn encode_identity(i: &IdentityRecord) -> Vec<u8> {
    Enc::new()
        .str(&i.account_pickle)
        .opt_f64(i.fallback_published_at)
        .done()
}

fn decode_identity(v: &[u8]) -> Result<IdentityRecord, StoreError> {
    let mut d = Dec::new(v, "identity")?;
    let r = IdentityRecord {
        account_pickle: d.str()?,
        fallback_published_at: d.opt_f64()?,
    };
    d.end()?;
    Ok(r)
}

fn session_key(peer: &UserId, session_id: &str) -> Vec<u8> {
    key(&[peer.as_str().as_bytes(), session_id.as_bytes()])
}

fn encode_session(s: &SessionRecord) -> Vec<u8> {
    Enc::new()
        .str(&s.pickle)
        .f64(s.last_received)
        .f64(s.created)
        .done()
}

fn decode_session(k: &[u8], v: &[u8]) -> Result<SessionRecord, StoreError> {
    let (peer, id) = (k.get(..ID_LEN), k.get(ID_LEN..));
    let (Some(peer), Some(id)) = (peer, id) else {
        return Err(corrupt("session"));
    };
    let text = |b: &[u8]| String::from_utf8(b.to_vec()).map_err(|_| corrupt("session"));
    let mut d = Dec::new(v, "session")?;
    let s = SessionRecord {
        peer: user_id(text(peer)?, "session")?,
        session_id: text(id)?,
        pickle: d.str()?,
        last_received: d.f64()?,
        created: d.f64()?,
    };
    d.end()?;
    Ok(s)
}

fn is_ack(kind: OutboxKind) -> bool {
    matches!(kind, OutboxKind::Ack)
}

fn encode_outbox(e: &OutboxEntry) -> Vec<u8> {
    Enc::new()
        .str(&e.key)
        .str(&e.envelope_id)
        .str(e.peer.as_str())
        .bool(is_ack(e.kind))
        .i64(e.mtype)
        .str(&e.body)
        .f64(e.created)
        .f64(e.next_attempt)
        .u64(u64::from(e.attempts))
        .opt_str(e.last_error.as_deref())
        .opt_str(e.envelope.as_deref())
        .bool(e.reencrypt)
        .done()
}

fn decode_outbox(v: &[u8]) -> Result<OutboxEntry, StoreError> {
    let mut d = Dec::new(v, "outbox")?;
    let e = OutboxEntry {
        key: d.str()?,
        envelope_id: d.str()?,
        peer: d.user()?,
        kind: if d.bool()? {
            OutboxKind::Ack
        } else {
            OutboxKind::Message
        },
        mtype: d.i64()?,
        body: d.str()?,
        created: d.f64()?,
        next_attempt: d.f64()?,
        attempts: u32::try_from(d.u64()?).map_err(|_| corrupt("outbox"))?,
        last_error: d.opt_str()?,
        envelope: d.opt_str()?,
        reencrypt: false,
    };
    // Entries written before `reencrypt` existed end here; they marked a
    // ciphertext that never left with this prefix of `last_error`.
    let e = OutboxEntry {
        reencrypt: if d.at_end() {
            e.last_error
                .as_deref()
                .is_some_and(|m| m.starts_with("(not sent) "))
        } else {
            d.bool()?
        },
        ..e
    };
    d.end()?;
    Ok(e)
}

fn encode_processed(p: &ProcessedRecord) -> Vec<u8> {
    Enc::new()
        .str(&p.envelope_id)
        .str(p.peer.as_str())
        .f64(p.at)
        .done()
}

fn decode_processed(hash: &str, v: &[u8]) -> Result<ProcessedRecord, StoreError> {
    let mut d = Dec::new(v, "processed")?;
    let p = ProcessedRecord {
        hash: hash.to_owned(),
        envelope_id: d.str()?,
        peer: d.user()?,
        at: d.f64()?,
    };
    d.end()?;
    Ok(p)
}

fn encode_incoming(i: &IncomingRecord) -> Vec<u8> {
    Enc::new()
        .str(&i.hash)
        .str(&i.from)
        .i64(i.mtype)
        .str(&i.body)
        .f64(i.fetched_at)
        .done()
}

fn decode_incoming(v: &[u8]) -> Result<IncomingRecord, StoreError> {
    let mut d = Dec::new(v, "incoming")?;
    let i = IncomingRecord {
        hash: d.str()?,
        from: d.str()?,
        mtype: d.i64()?,
        body: d.str()?,
        fetched_at: d.f64()?,
    };
    d.end()?;
    Ok(i)
}

fn encode_inbox(m: &InboxRecord) -> Vec<u8> {
    Enc::new()
        .str(&m.hash)
        .str(&m.envelope_id)
        .str(m.from.as_str())
        .str(&m.claimed_name)
        .str(&m.text)
        .f64(m.received_at)
        .opt_str(m.extra.as_deref())
        .done()
}

fn decode_inbox(v: &[u8]) -> Result<InboxRecord, StoreError> {
    let mut d = Dec::new(v, "inbox")?;
    let m = InboxRecord {
        hash: d.str()?,
        envelope_id: d.str()?,
        from: d.user()?,
        claimed_name: d.str()?,
        text: d.str()?,
        received_at: d.f64()?,
        // Missing in records written before it existed.
        extra: if d.at_end() { None } else { d.opt_str()? },
    };
    d.end()?;
    Ok(m)
}

fn group_id(k: &[u8], what: &str) -> Result<GroupId, StoreError> {
    std::str::from_utf8(k)
        .ok()
        .and_then(|s| GroupId::parse(s).ok())
        .ok_or_else(|| corrupt(what))
}

fn encode_group(g: &Group) -> Vec<u8> {
    let mut e = Enc::new().str(&g.name).u64(g.members.len() as u64);
    for m in &g.members {
        e = e.str(m.as_str());
    }
    e.opt_str(g.owner.as_ref().map(UserId::as_str))
        .f64(g.ts)
        .done()
}

fn decode_group(k: &[u8], v: &[u8]) -> Result<Group, StoreError> {
    let mut d = Dec::new(v, "group")?;
    let name = d.str()?;
    let n = d.u64()?;
    let mut members = std::collections::BTreeSet::new();
    for _ in 0..n {
        members.insert(d.user()?);
    }
    let owner = d.opt_str()?.map(|o| user_id(o, "group")).transpose()?;
    let g = Group {
        id: group_id(k, "group")?,
        name,
        members,
        owner,
        ts: d.f64()?,
    };
    d.end()?;
    Ok(g)
}

fn decode_left_group(k: &[u8], v: &[u8]) -> Result<LeftGroup, StoreError> {
    let mut d = Dec::new(v, "left group")?;
    let l = LeftGroup {
        id: group_id(k, "left group")?,
        name: d.str()?,
        ts: d.f64()?,
    };
    d.end()?;
    Ok(l)
}

fn encode_invite(r: &InviteRecord) -> Vec<u8> {
    let mut e = Enc::new()
        .str(r.kind.as_str())
        .opt_str(r.peer.as_deref())
        .f64(r.created)
        .opt_f64(r.expires)
        .u64(u64::from(r.uses))
        .u64(r.used_by.len() as u64);
    for u in &r.used_by {
        e = e.str(u.as_str());
    }
    e.bool(r.revoked).done()
}

fn decode_invite(k: &[u8], v: &[u8]) -> Result<InviteRecord, StoreError> {
    let code = String::from_utf8(k.to_vec()).map_err(|_| corrupt("invite"))?;
    let mut d = Dec::new(v, "invite")?;
    let kind = InviteKind::parse(&d.str()?).ok_or_else(|| corrupt("invite"))?;
    let peer = d.opt_str()?;
    let created = d.f64()?;
    let expires = d.opt_f64()?;
    let uses = u32::try_from(d.u64()?).map_err(|_| corrupt("invite"))?;
    let n = d.u64()?;
    let mut used_by = Vec::new();
    for _ in 0..n {
        used_by.push(d.user()?);
    }
    let r = InviteRecord {
        code,
        kind,
        peer,
        created,
        expires,
        uses,
        used_by,
        revoked: d.bool()?,
    };
    d.end()?;
    Ok(r)
}

fn decode_contact(k: &[u8], v: &[u8]) -> Result<Contact, StoreError> {
    let mut d = Dec::new(v, "contact")?;
    let c = Contact {
        name: String::from_utf8(k.to_vec()).map_err(|_| corrupt("contact"))?,
        id: d.user()?,
        pin: d.opt_str()?,
        signing_key: None,
    };
    let c = Contact {
        signing_key: if d.at_end() { None } else { d.opt_str()? },
        ..c
    };
    d.end()?;
    Ok(c)
}

fn encode_message(m: &MessageRecord) -> Vec<u8> {
    Enc::new()
        .str(&m.msg_id)
        .str(m.from.as_str())
        .str(&m.from_name)
        .str(&m.peer)
        .bool(m.direction == Direction::Out)
        .str(&m.body)
        .f64(m.at)
        .opt_str(m.group.as_ref().map(|g| g.id.as_str()))
        .opt_str(m.group.as_ref().map(|g| g.name.as_str()))
        .done()
}

fn decode_message(k: &[u8], v: &[u8]) -> Result<SavedMessage, StoreError> {
    let rowid = i64::try_from(be_u64(k, "message")?).map_err(|_| corrupt("message"))?;
    let mut d = Dec::new(v, "message")?;
    let msg_id = d.str()?;
    let from = d.user()?;
    let from_name = d.str()?;
    let peer = d.str()?;
    let direction = if d.bool()? {
        Direction::Out
    } else {
        Direction::In
    };
    let body = d.str()?;
    let at = d.f64()?;
    let gid = d.opt_str()?;
    let gname = d.opt_str()?;
    d.end()?;
    Ok(SavedMessage {
        rowid,
        record: MessageRecord {
            msg_id,
            from,
            from_name,
            peer,
            direction,
            body,
            at,
            group: gid.map(|id| GroupTag {
                id,
                name: gname.unwrap_or_default(),
            }),
        },
    })
}

fn encode_received_contact(r: &ReceivedContact) -> Vec<u8> {
    Enc::new()
        .str(&r.name)
        .str(&r.identity_key)
        .str(&r.signing_key)
        .str(r.from.as_str())
        .str(&r.from_name)
        .str(&r.msg_id)
        .f64(r.at)
        .done()
}

fn decode_received_contact(k: &[u8], v: &[u8]) -> Result<ReceivedContact, StoreError> {
    let id = String::from_utf8(k.to_vec()).map_err(|_| corrupt("received contact"))?;
    let mut d = Dec::new(v, "received contact")?;
    let r = ReceivedContact {
        id: user_id(id, "received contact")?,
        name: d.str()?,
        identity_key: d.str()?,
        signing_key: d.str()?,
        from: d.user()?,
        from_name: d.str()?,
        msg_id: d.str()?,
        at: d.f64()?,
    };
    d.end()?;
    Ok(r)
}

/// A table kept in insertion order: `by_seq` (`seq` -> record) and `keys`
/// (record key -> `seq`).
struct Ordered {
    by_seq: usize,
    keys: usize,
}

const OUTBOX_T: Ordered = Ordered {
    by_seq: OUTBOX,
    keys: OUTBOX_KEYS,
};
const INCOMING_T: Ordered = Ordered {
    by_seq: INCOMING,
    keys: INCOMING_KEYS,
};
const INBOX_T: Ordered = Ordered {
    by_seq: INBOX,
    keys: INBOX_KEYS,
};

impl Ordered {
    /// Stores `value` under `k`: in place when `k` is held and `replace`,
    /// not at all when it is held and not `replace`, else at the end.
    fn put(
        &self,
        o: &mut Overlay<'_>,
        k: &str,
        value: Vec<u8>,
        replace: bool,
    ) -> Result<(), StoreError> {
        let seq = match o.get(self.keys, k.as_bytes())? {
            Some(_) if !replace => return Ok(()),
            Some(seq) => be_u64(&seq, "sequence")?,
            None => {
                let seq = o.bump(SEQ, 1)?;
                o.insert(self.keys, k.as_bytes(), seq.to_be_bytes().to_vec())?;
                seq
            }
        };
        o.insert(self.by_seq, seq.to_be_bytes().to_vec(), value)
    }

    fn remove(&self, o: &mut Overlay<'_>, k: &str) -> Result<(), StoreError> {
        if let Some(seq) = o.get(self.keys, k.as_bytes())? {
            o.remove(self.by_seq, seq.to_vec())?;
            o.remove(self.keys, k.as_bytes())?;
        }
        Ok(())
    }
}

/// Stages a batch, in the order the memory store applies it: for each
/// table upserts first, then removals.
fn apply(o: &mut Overlay<'_>, c: &Changes) -> Result<(), StoreError> {
    // Every field named: a field added to `Changes` fails to compile here
    // until this store writes it.
    let Changes {
        identity,
        sessions,
        sessions_removed,
        outbox,
        outbox_removed,
        processed,
        processed_forget_before,
        incoming,
        incoming_removed,
        inbox,
        inbox_removed,
        contacts,
        contacts_removed,
        settings,
        messages,
        blocked,
        blocked_removed,
        received_contacts,
        received_contacts_removed,
        groups,
        groups_removed,
        left_groups,
        left_groups_removed,
        invites,
    } = c;
    if let Some(i) = identity {
        o.insert(IDENTITY, ACCOUNT, encode_identity(i))?;
    }
    for s in sessions {
        o.insert(
            SESSIONS,
            session_key(&s.peer, &s.session_id),
            encode_session(s),
        )?;
    }
    for (peer, id) in sessions_removed {
        o.remove(SESSIONS, session_key(peer, id))?;
    }
    for e in outbox {
        OUTBOX_T.put(o, &e.key, encode_outbox(e), true)?;
    }
    for k in outbox_removed {
        OUTBOX_T.remove(o, k)?;
    }
    if let Some(before) = *processed_forget_before {
        for (k, _) in o.range_below(PROCESSED_BY_AT, &ord_f64(before))? {
            o.remove(PROCESSED, k.get(8..).unwrap_or_default())?;
            o.remove(PROCESSED_BY_AT, k)?;
        }
    }
    for p in processed {
        let h = p.hash.as_bytes();
        if let Some(old) = o.get(PROCESSED, h)? {
            let old = decode_processed(&p.hash, &old)?;
            o.remove(PROCESSED_BY_AT, key(&[&ord_f64(old.at), h]))?;
        }
        o.insert(PROCESSED, h, encode_processed(p))?;
        o.insert(PROCESSED_BY_AT, key(&[&ord_f64(p.at), h]), IVec::default())?;
    }
    // The first copy of a body wins and keeps its place.
    for i in incoming {
        INCOMING_T.put(o, &i.hash, encode_incoming(i), false)?;
    }
    for k in incoming_removed {
        INCOMING_T.remove(o, k)?;
    }
    for m in inbox {
        INBOX_T.put(o, &m.hash, encode_inbox(m), false)?;
    }
    for k in inbox_removed {
        INBOX_T.remove(o, k)?;
    }
    for ct in contacts {
        let value = Enc::new()
            .str(ct.id.as_str())
            .opt_str(ct.pin.as_deref())
            .opt_str(ct.signing_key.as_deref())
            .done();
        o.insert(CONTACTS, ct.name.as_bytes(), value)?;
    }
    for k in contacts_removed {
        o.remove(CONTACTS, k.as_bytes())?;
    }
    for (k, v) in settings {
        o.insert(SETTINGS, k.as_bytes(), v.as_bytes())?;
    }
    for m in messages {
        if o.get(MESSAGE_IDS, m.msg_id.as_bytes())?.is_some() {
            continue;
        }
        let seq = o.bump(SEQ, 1)?.to_be_bytes();
        o.insert(MESSAGE_IDS, m.msg_id.as_bytes(), seq.to_vec())?;
        o.insert(MESSAGES, seq.to_vec(), encode_message(m))?;
    }
    for b in blocked {
        o.insert(BLOCKED, b.as_str().as_bytes(), IVec::default())?;
    }
    for b in blocked_removed {
        o.remove(BLOCKED, b.as_str().as_bytes())?;
    }
    for r in received_contacts {
        o.insert(
            RECEIVED_CONTACTS,
            r.id.as_str().as_bytes(),
            encode_received_contact(r),
        )?;
    }
    for k in received_contacts_removed {
        o.remove(RECEIVED_CONTACTS, k.as_str().as_bytes())?;
    }
    for g in groups {
        o.insert(GROUPS, g.id.as_str().as_bytes(), encode_group(g))?;
    }
    for k in groups_removed {
        o.remove(GROUPS, k.as_str().as_bytes())?;
    }
    for l in left_groups {
        let value = Enc::new().str(&l.name).f64(l.ts).done();
        o.insert(LEFT_GROUPS, l.id.as_str().as_bytes(), value)?;
    }
    for k in left_groups_removed {
        o.remove(LEFT_GROUPS, k.as_str().as_bytes())?;
    }
    for r in invites {
        o.insert(INVITES, r.code.as_bytes(), encode_invite(r))?;
    }
    Ok(())
}

/// The store's lock: private, so only [`SledStore::lock`] makes one.
pub struct SledLock<'a>(#[allow(dead_code)] MutexGuard<'a, ()>);

impl Store for SledStore {
    type Lock<'a> = SledLock<'a>;

    fn lock(&self) -> Result<Self::Lock<'_>, StoreError> {
        // A holder that panicked left nothing half-done in memory: the
        // state is in sled and a failed commit wrote nothing.
        Ok(SledLock(self.op.lock().unwrap_or_else(|e| e.into_inner())))
    }

    /// In-process only: a sled store is open in one process at a time.
    type TakeLock<'a> = MutexGuard<'a, ()>;

    fn take_lock(&self) -> Result<Self::TakeLock<'_>, StoreError> {
        Ok(self.take.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn commit(&self, _lock: &SledLock<'_>, changes: Changes) -> Result<(), StoreError> {
        if changes.is_empty() {
            return Ok(());
        }
        self.base.write(|o| apply(o, &changes))
    }

    fn identity(&self) -> Result<Option<IdentityRecord>, StoreError> {
        self.get(IDENTITY, ACCOUNT)?
            .map(|v| decode_identity(&v))
            .transpose()
    }

    fn sessions(&self, peer: &UserId) -> Result<Vec<SessionRecord>, StoreError> {
        let mut v: Vec<SessionRecord> = self.read(|b| {
            b.tree(SESSIONS)?
                .scan_prefix(peer.as_str().as_bytes())
                .map(|row| {
                    let (k, v) = row.map_err(sled_err)?;
                    decode_session(&k, &v)
                })
                .collect::<Result<_, _>>()
        })?;
        // Most recently receiving first, then newest, then by id (the key
        // order the sort keeps for ties).
        v.sort_by(|a, b| {
            b.last_received
                .total_cmp(&a.last_received)
                .then(b.created.total_cmp(&a.created))
        });
        Ok(v)
    }

    fn outbox_entry(&self, key: &str) -> Result<Option<OutboxEntry>, StoreError> {
        self.read(|b| {
            let Some(seq) = b.tree(OUTBOX_KEYS)?.get(key).map_err(sled_err)? else {
                return Ok(None);
            };
            b.tree(OUTBOX)?
                .get(seq)
                .map_err(sled_err)?
                .map(|v| decode_outbox(&v))
                .transpose()
        })
    }

    fn outbox(&self) -> Result<Vec<OutboxEntry>, StoreError> {
        self.values(OUTBOX, decode_outbox)
    }

    fn processed(&self, hash: &str) -> Result<Option<ProcessedRecord>, StoreError> {
        self.get(PROCESSED, hash.as_bytes())?
            .map(|v| decode_processed(hash, &v))
            .transpose()
    }

    fn incoming(&self) -> Result<Vec<IncomingRecord>, StoreError> {
        self.values(INCOMING, decode_incoming)
    }

    fn is_incoming(&self, hash: &str) -> Result<bool, StoreError> {
        self.read(|b| b.tree(INCOMING_KEYS)?.contains_key(hash).map_err(sled_err))
    }

    fn inbox(&self) -> Result<Vec<InboxRecord>, StoreError> {
        self.values(INBOX, decode_inbox)
    }

    fn contacts(&self) -> Result<Vec<Contact>, StoreError> {
        self.read(|b| {
            b.tree(CONTACTS)?
                .iter()
                .map(|row| {
                    let (k, v) = row.map_err(sled_err)?;
                    decode_contact(&k, &v)
                })
                .collect()
        })
    }

    fn setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.get(SETTINGS, key.as_bytes())?
            .map(|v| String::from_utf8(v.to_vec()).map_err(|_| corrupt("setting")))
            .transpose()
    }

    fn messages(
        &self,
        of: MessageFilter<'_>,
        after_rowid: i64,
    ) -> Result<Vec<SavedMessage>, StoreError> {
        let from = u64::try_from(after_rowid.saturating_add(1)).unwrap_or(0);
        let mut rows: Vec<SavedMessage> = self.read(|b| {
            b.tree(MESSAGES)?
                .range(from.to_be_bytes()..)
                .map(|row| {
                    let (k, v) = row.map_err(sled_err)?;
                    decode_message(&k, &v)
                })
                .filter(|m| m.as_ref().map_or(true, |m| of.matches(&m.record)))
                .collect::<Result<_, _>>()
        })?;
        SavedMessage::sort_for_history(&mut rows);
        Ok(rows)
    }

    fn blocked(&self) -> Result<Vec<UserId>, StoreError> {
        self.read(|b| {
            b.tree(BLOCKED)?
                .iter()
                .keys()
                .map(|k| {
                    let k = k.map_err(sled_err)?;
                    let id = String::from_utf8(k.to_vec()).map_err(|_| corrupt("blocked"))?;
                    user_id(id, "blocked")
                })
                .collect()
        })
    }

    fn received_contacts(&self) -> Result<Vec<ReceivedContact>, StoreError> {
        let mut v: Vec<ReceivedContact> = self.read(|b| {
            b.tree(RECEIVED_CONTACTS)?
                .iter()
                .map(|row| {
                    let (k, v) = row.map_err(sled_err)?;
                    decode_received_contact(&k, &v)
                })
                .collect::<Result<_, _>>()
        })?;
        v.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
        Ok(v)
    }

    fn groups(&self) -> Result<Vec<Group>, StoreError> {
        self.rows(GROUPS, decode_group)
    }

    fn left_groups(&self) -> Result<Vec<LeftGroup>, StoreError> {
        self.rows(LEFT_GROUPS, decode_left_group)
    }

    fn invites(&self) -> Result<Vec<InviteRecord>, StoreError> {
        self.rows(INVITES, decode_invite)
    }
}

impl SledStore {
    /// Every row of a tree keyed by the record's own key.
    fn rows<T>(
        &self,
        tree: usize,
        decode: fn(&[u8], &[u8]) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        self.read(|b| {
            b.tree(tree)?
                .iter()
                .map(|row| {
                    let (k, v) = row.map_err(sled_err)?;
                    decode(&k, &v)
                })
                .collect::<Result<_, _>>()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A contact written before the signing key existed (id, pin) still
    /// reads, unverified; one with both keys round-trips.
    #[test]
    fn contacts_of_both_layouts_decode() {
        let id = "0123456789abcdef0123456789abcdef";
        let old = Enc::new().str(id).opt_str(Some("ik")).done();
        let c = decode_contact(b"bob", &old).unwrap();
        assert_eq!(c.pin.as_deref(), Some("ik"));
        assert_eq!(c.signing_key, None);
        assert!(!c.verified());
        let new = Enc::new()
            .str(id)
            .opt_str(Some("ik"))
            .opt_str(Some("sk"))
            .done();
        let c = decode_contact(b"bob", &new).unwrap();
        assert!(c.verified());
        let padded = Enc::new()
            .str(id)
            .opt_str(None)
            .opt_str(None)
            .str("junk")
            .done();
        assert!(decode_contact(b"bob", &padded).is_err());
    }
}
