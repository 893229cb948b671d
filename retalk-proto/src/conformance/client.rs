//! Checks every client [`Store`] must pass. Each takes a fresh, empty store;
//! the `durable_*` checks also take a way to reopen the same files.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::relay::uid;
use crate::client::{
    Changes, Contact, Direction, GroupTag, IdentityRecord, InboxRecord, IncomingRecord,
    MessageRecord, OutboxEntry, OutboxKind, ProcessedRecord, ReceivedContact, SavedMessage,
    SessionRecord, Store, StoreTransaction,
};
use crate::client::{Group, InviteRecord, LeftGroup, MessageFilter};
use crate::group::GroupId;
use crate::ids::UserId;
use crate::invite::InviteKind;

fn identity(tag: &str, fallback: Option<f64>) -> IdentityRecord {
    IdentityRecord {
        account_pickle: format!("account-{tag}"),
        fallback_published_at: fallback,
    }
}

fn session(peer: &UserId, id: &str, last_received: f64, created: f64) -> SessionRecord {
    SessionRecord {
        peer: peer.clone(),
        session_id: id.to_string(),
        pickle: format!("pickle-{id}-{last_received}"),
        last_received,
        created,
    }
}

fn entry(key: &str, peer: &UserId, kind: OutboxKind) -> OutboxEntry {
    OutboxEntry {
        key: key.to_string(),
        envelope_id: format!("env-{key}"),
        peer: peer.clone(),
        kind,
        mtype: match kind {
            OutboxKind::Message => 0,
            OutboxKind::Ack => 1,
        },
        body: format!("body-{key}"),
        created: 100.0,
        next_attempt: 220.0,
        attempts: 0,
        last_error: None,
        reencrypt: false,
        // Both forms round-trip: sealed envelope kept, and dropped.
        envelope: match kind {
            OutboxKind::Message => Some(format!("sealed-{key}")),
            OutboxKind::Ack => None,
        },
    }
}

fn processed(hash: &str, peer: &UserId, at: f64) -> ProcessedRecord {
    ProcessedRecord {
        hash: hash.to_string(),
        envelope_id: format!("env-{hash}"),
        peer: peer.clone(),
        at,
    }
}

fn incoming(hash: &str, body: &str) -> IncomingRecord {
    IncomingRecord {
        hash: hash.to_string(),
        from: uid(7).to_string(),
        mtype: 1,
        body: body.to_string(),
        fetched_at: 50.0,
    }
}

fn inbox(hash: &str, text: &str) -> InboxRecord {
    InboxRecord {
        hash: hash.to_string(),
        envelope_id: format!("env-{hash}"),
        from: uid(7),
        claimed_name: "~bob".to_string(),
        text: text.to_string(),
        received_at: 60.0,
        extra: None,
    }
}

fn gid(n: u32) -> GroupId {
    GroupId::parse(&format!("{n:032x}")).unwrap()
}

fn group(n: u32, name: &str, members: &[UserId], owner: Option<&UserId>) -> Group {
    Group {
        id: gid(n),
        name: name.to_string(),
        members: members.iter().cloned().collect(),
        owner: owner.cloned(),
        ts: 1.5 + f64::from(n),
    }
}

fn left(n: u32, name: &str) -> LeftGroup {
    LeftGroup {
        id: gid(n),
        name: name.to_string(),
        ts: 7.25,
    }
}

fn invite(code: &str, expires: Option<f64>, used_by: &[UserId]) -> InviteRecord {
    InviteRecord {
        code: code.to_string(),
        kind: InviteKind::Single,
        peer: Some("bob".into()),
        created: 3.5,
        expires,
        uses: u32::try_from(used_by.len()).unwrap(),
        used_by: used_by.to_vec(),
        revoked: false,
    }
}

fn sorted_groups<S: Store>(store: &S) -> Vec<Group> {
    let mut v = store.groups().unwrap();
    v.sort_by(|a, b| a.id.cmp(&b.id));
    v
}

fn sorted_left<S: Store>(store: &S) -> Vec<LeftGroup> {
    let mut v = store.left_groups().unwrap();
    v.sort_by(|a, b| a.id.cmp(&b.id));
    v
}

fn sorted_invites<S: Store>(store: &S) -> Vec<InviteRecord> {
    let mut v = store.invites().unwrap();
    v.sort_by(|a, b| a.code.cmp(&b.code));
    v
}

fn contact(name: &str, id: &UserId, pin: Option<&str>) -> Contact {
    Contact {
        name: name.to_string(),
        id: id.clone(),
        pin: pin.map(str::to_string),
        signing_key: pin.map(|p| format!("sk-{p}")),
    }
}

fn message(msg_id: &str, direction: Direction, at: f64, group: Option<&str>) -> MessageRecord {
    MessageRecord {
        msg_id: msg_id.to_string(),
        from: uid(if direction == Direction::In { 2 } else { 1 }),
        from_name: format!("name-{msg_id}"),
        peer: match group {
            Some(g) => g.to_string(),
            None => uid(2).to_string(),
        },
        direction,
        body: format!("[\"sealed-{msg_id}\"]"),
        at,
        group: group.map(|g| GroupTag {
            id: g.to_string(),
            name: format!("room-{g}"),
        }),
    }
}

fn message_ids(saved: &[SavedMessage]) -> Vec<&str> {
    saved.iter().map(|m| m.record.msg_id.as_str()).collect()
}

fn received(card: &UserId, name: &str, from: &UserId, at: f64) -> ReceivedContact {
    ReceivedContact {
        id: card.clone(),
        name: name.to_string(),
        identity_key: format!("ik-{name}"),
        signing_key: String::new(),
        from: from.clone(),
        from_name: format!("from-{name}"),
        msg_id: format!("msg-{name}"),
        at,
    }
}

fn keys(entries: &[OutboxEntry]) -> Vec<&str> {
    entries.iter().map(|e| e.key.as_str()).collect()
}

fn hashes_in(records: &[IncomingRecord]) -> Vec<&str> {
    records.iter().map(|r| r.hash.as_str()).collect()
}

fn hashes_of(records: &[InboxRecord]) -> Vec<&str> {
    records.iter().map(|r| r.hash.as_str()).collect()
}

fn ids(records: &[SessionRecord]) -> Vec<&str> {
    records.iter().map(|r| r.session_id.as_str()).collect()
}

fn names(contacts: &[Contact]) -> Vec<&str> {
    contacts.iter().map(|c| c.name.as_str()).collect()
}

fn commit<S: Store>(store: &S, changes: Changes) {
    store.commit(&store.lock().unwrap(), changes).unwrap();
}

/// Everything a store holds, for before/after comparisons.
#[derive(Debug, PartialEq)]
struct Snapshot {
    identity: Option<IdentityRecord>,
    sessions: Vec<Vec<SessionRecord>>,
    outbox: Vec<OutboxEntry>,
    outbox_entries: Vec<Option<OutboxEntry>>,
    processed: Vec<Option<ProcessedRecord>>,
    incoming: Vec<IncomingRecord>,
    inbox: Vec<InboxRecord>,
    contacts: Vec<Contact>,
    settings: Vec<Option<String>>,
    messages: Vec<SavedMessage>,
    blocked: Vec<UserId>,
    received_contacts: Vec<ReceivedContact>,
    groups: Vec<Group>,
    left_groups: Vec<LeftGroup>,
    invites: Vec<InviteRecord>,
}

fn snapshot<S: Store>(store: &S, peers: &[UserId], hashes: &[&str], settings: &[&str]) -> Snapshot {
    let outbox = store.outbox().unwrap();
    Snapshot {
        identity: store.identity().unwrap(),
        sessions: peers.iter().map(|p| store.sessions(p).unwrap()).collect(),
        outbox_entries: outbox
            .iter()
            .map(|e| store.outbox_entry(&e.key).unwrap())
            .collect(),
        outbox,
        processed: hashes.iter().map(|h| store.processed(h).unwrap()).collect(),
        incoming: store.incoming().unwrap(),
        inbox: store.inbox().unwrap(),
        contacts: store.contacts().unwrap(),
        settings: settings.iter().map(|k| store.setting(k).unwrap()).collect(),
        messages: store.messages(MessageFilter::All, 0).unwrap(),
        blocked: store.blocked().unwrap(),
        received_contacts: store.received_contacts().unwrap(),
        groups: sorted_groups(store),
        left_groups: sorted_left(store),
        invites: sorted_invites(store),
    }
}

fn assert_empty<S: Store>(store: &S) {
    assert_eq!(store.identity().unwrap(), None);
    assert!(store.sessions(&uid(1)).unwrap().is_empty());
    assert!(store.outbox().unwrap().is_empty());
    assert_eq!(store.outbox_entry("k").unwrap(), None);
    assert_eq!(store.processed("h").unwrap(), None);
    assert!(store.incoming().unwrap().is_empty());
    assert!(store.inbox().unwrap().is_empty());
    assert!(store.contacts().unwrap().is_empty());
    assert_eq!(store.setting("name").unwrap(), None);
    assert!(store.messages(MessageFilter::All, 0).unwrap().is_empty());
    assert!(store.blocked().unwrap().is_empty());
    assert!(store.received_contacts().unwrap().is_empty());
    assert!(store.groups().unwrap().is_empty());
    assert!(store.left_groups().unwrap().is_empty());
    assert!(store.invites().unwrap().is_empty());
}

/// A fresh store holds nothing.
pub fn empty_store_has_nothing<S: Store>(store: &S) {
    assert_empty(store);
}

/// An empty batch commits and changes nothing.
pub fn empty_commit_is_fine<S: Store>(store: &S) {
    commit(store, Changes::default());
    assert_empty(store);
}

/// The identity is replaced by a batch that carries one, kept otherwise.
pub fn identity_upsert<S: Store>(store: &S) {
    commit(
        store,
        Changes {
            identity: Some(identity("a", None)),
            ..Changes::default()
        },
    );
    assert_eq!(store.identity().unwrap(), Some(identity("a", None)));
    commit(
        store,
        Changes {
            identity: Some(identity("b", Some(1234.5))),
            ..Changes::default()
        },
    );
    assert_eq!(store.identity().unwrap(), Some(identity("b", Some(1234.5))));
    commit(
        store,
        Changes {
            settings: vec![("x".into(), "y".into())],
            ..Changes::default()
        },
    );
    assert_eq!(store.identity().unwrap(), Some(identity("b", Some(1234.5))));
}

/// Sessions are per peer, upserted by (peer, session id), listed most
/// recently receiving first, then newest.
pub fn sessions_order_and_upsert<S: Store>(store: &S) {
    let (p, q) = (uid(1), uid(2));
    commit(
        store,
        Changes {
            sessions: vec![
                session(&p, "s1", 0.0, 10.0),
                session(&p, "s2", 0.0, 20.0),
                session(&p, "s3", 5.0, 1.0),
                session(&q, "s1", 0.0, 0.0),
            ],
            ..Changes::default()
        },
    );
    assert_eq!(ids(&store.sessions(&p).unwrap()), ["s3", "s2", "s1"]);
    assert_eq!(
        store.sessions(&q).unwrap(),
        vec![session(&q, "s1", 0.0, 0.0)]
    );
    assert!(store.sessions(&uid(3)).unwrap().is_empty());
    // s1 decrypts something: it becomes the send session, updated in place.
    commit(
        store,
        Changes {
            sessions: vec![session(&p, "s1", 9.0, 10.0)],
            ..Changes::default()
        },
    );
    let got = store.sessions(&p).unwrap();
    assert_eq!(ids(&got), ["s1", "s3", "s2"]);
    assert_eq!(got[0], session(&p, "s1", 9.0, 10.0));
    assert_eq!(
        store.sessions(&q).unwrap(),
        vec![session(&q, "s1", 0.0, 0.0)]
    );
    // A session with an empty id (migrated stores) is a session like any.
    commit(
        store,
        Changes {
            sessions: vec![session(&q, "", 0.0, 0.0)],
            ..Changes::default()
        },
    );
    assert_eq!(store.sessions(&q).unwrap().len(), 2);
}

/// Removing a session removes exactly that (peer, id); a batch that
/// upserts and removes the same session removes it.
pub fn sessions_removed<S: Store>(store: &S) {
    let (p, q) = (uid(1), uid(2));
    commit(
        store,
        Changes {
            sessions: vec![
                session(&p, "s1", 1.0, 1.0),
                session(&p, "s2", 2.0, 2.0),
                session(&q, "s1", 1.0, 1.0),
            ],
            ..Changes::default()
        },
    );
    commit(
        store,
        Changes {
            sessions_removed: vec![(p.clone(), "s1".into()), (p.clone(), "absent".into())],
            ..Changes::default()
        },
    );
    assert_eq!(ids(&store.sessions(&p).unwrap()), ["s2"]);
    assert_eq!(ids(&store.sessions(&q).unwrap()), ["s1"]);
    commit(
        store,
        Changes {
            sessions: vec![session(&p, "s3", 3.0, 3.0)],
            sessions_removed: vec![(p.clone(), "s3".into()), (p.clone(), "s2".into())],
            ..Changes::default()
        },
    );
    assert!(store.sessions(&p).unwrap().is_empty());
}

/// The outbox lists entries oldest first; an upsert updates an entry in
/// place and keeps its position.
pub fn outbox_upsert_keeps_order<S: Store>(store: &S) {
    let p = uid(1);
    commit(
        store,
        Changes {
            outbox: vec![entry("e1", &p, OutboxKind::Message)],
            ..Changes::default()
        },
    );
    commit(
        store,
        Changes {
            outbox: vec![
                entry("e2", &p, OutboxKind::Ack),
                entry("e3", &uid(2), OutboxKind::Message),
            ],
            ..Changes::default()
        },
    );
    assert_eq!(keys(&store.outbox().unwrap()), ["e1", "e2", "e3"]);
    let mut retried = entry("e1", &p, OutboxKind::Message);
    retried.attempts = 3;
    retried.next_attempt = 999.25;
    retried.last_error = Some("mailbox full: ...".into());
    retried.reencrypt = true;
    commit(
        store,
        Changes {
            outbox: vec![retried.clone()],
            ..Changes::default()
        },
    );
    commit(
        store,
        Changes {
            outbox: vec![entry("e4", &p, OutboxKind::Message)],
            ..Changes::default()
        },
    );
    let all = store.outbox().unwrap();
    assert_eq!(keys(&all), ["e1", "e2", "e3", "e4"]);
    assert_eq!(all[0], retried);
    assert_eq!(all[1], entry("e2", &p, OutboxKind::Ack));
    assert_eq!(all[2], entry("e3", &uid(2), OutboxKind::Message));
}

/// Entries are found by key and removed by key; a removed key re-added
/// goes to the end.
pub fn outbox_entry_and_removal<S: Store>(store: &S) {
    let p = uid(1);
    commit(
        store,
        Changes {
            outbox: vec![
                entry("e1", &p, OutboxKind::Message),
                entry("ack/x/1/h", &p, OutboxKind::Ack),
                entry("e3", &p, OutboxKind::Message),
            ],
            ..Changes::default()
        },
    );
    assert_eq!(
        store.outbox_entry("ack/x/1/h").unwrap(),
        Some(entry("ack/x/1/h", &p, OutboxKind::Ack))
    );
    assert_eq!(store.outbox_entry("nope").unwrap(), None);
    commit(
        store,
        Changes {
            outbox_removed: vec!["e1".into(), "nope".into()],
            ..Changes::default()
        },
    );
    assert_eq!(store.outbox_entry("e1").unwrap(), None);
    assert_eq!(keys(&store.outbox().unwrap()), ["ack/x/1/h", "e3"]);
    commit(
        store,
        Changes {
            outbox: vec![entry("e1", &p, OutboxKind::Message)],
            ..Changes::default()
        },
    );
    assert_eq!(keys(&store.outbox().unwrap()), ["ack/x/1/h", "e3", "e1"]);
    // Upsert and removal of one key in one batch: removed.
    commit(
        store,
        Changes {
            outbox: vec![entry("e5", &p, OutboxKind::Message)],
            outbox_removed: vec!["e5".into()],
            ..Changes::default()
        },
    );
    assert_eq!(store.outbox_entry("e5").unwrap(), None);
}

/// Processed markers are found by hash and replaced by hash.
pub fn processed_upsert_and_lookup<S: Store>(store: &S) {
    let p = uid(1);
    commit(
        store,
        Changes {
            processed: vec![processed("h1", &p, 10.0), processed("h2", &uid(2), 11.0)],
            ..Changes::default()
        },
    );
    assert_eq!(
        store.processed("h1").unwrap(),
        Some(processed("h1", &p, 10.0))
    );
    assert_eq!(
        store.processed("h2").unwrap(),
        Some(processed("h2", &uid(2), 11.0))
    );
    assert_eq!(store.processed("h3").unwrap(), None);
    let mut again = processed("h1", &p, 12.0);
    again.envelope_id = String::new();
    commit(
        store,
        Changes {
            processed: vec![again.clone()],
            ..Changes::default()
        },
    );
    assert_eq!(store.processed("h1").unwrap(), Some(again));
}

/// `processed_forget_before` drops markers older than the bound (a marker
/// exactly at it is kept).
pub fn processed_forget_before<S: Store>(store: &S) {
    let p = uid(1);
    commit(
        store,
        Changes {
            processed: vec![
                processed("h1", &p, 10.0),
                processed("h2", &p, 20.0),
                processed("h3", &p, 30.0),
            ],
            ..Changes::default()
        },
    );
    commit(
        store,
        Changes {
            processed_forget_before: Some(20.0),
            processed: vec![processed("h4", &p, 40.0)],
            ..Changes::default()
        },
    );
    assert_eq!(store.processed("h1").unwrap(), None);
    assert_eq!(
        store.processed("h2").unwrap(),
        Some(processed("h2", &p, 20.0))
    );
    assert_eq!(
        store.processed("h3").unwrap(),
        Some(processed("h3", &p, 30.0))
    );
    assert_eq!(
        store.processed("h4").unwrap(),
        Some(processed("h4", &p, 40.0))
    );
}

/// Incoming mail is deduplicated by hash (the first copy wins and keeps
/// its place) and listed in fetch order.
pub fn incoming_dedupe_and_order<S: Store>(store: &S) {
    commit(
        store,
        Changes {
            incoming: vec![
                incoming("h1", "first"),
                incoming("h2", "b2"),
                incoming("h1", "dup"),
            ],
            ..Changes::default()
        },
    );
    commit(
        store,
        Changes {
            incoming: vec![incoming("h1", "later copy"), incoming("h3", "b3")],
            ..Changes::default()
        },
    );
    let got = store.incoming().unwrap();
    assert_eq!(hashes_in(&got), ["h1", "h2", "h3"]);
    assert_eq!(got[0], incoming("h1", "first"));
    commit(
        store,
        Changes {
            incoming_removed: vec!["h2".into(), "absent".into()],
            ..Changes::default()
        },
    );
    assert_eq!(hashes_in(&store.incoming().unwrap()), ["h1", "h3"]);
    assert!(store.is_incoming("h1").unwrap());
    assert!(!store.is_incoming("h2").unwrap(), "removed");
    assert!(!store.is_incoming("absent").unwrap());
    commit(
        store,
        Changes {
            incoming: vec![incoming("h2", "again")],
            ..Changes::default()
        },
    );
    let got = store.incoming().unwrap();
    assert_eq!(hashes_in(&got), ["h1", "h3", "h2"]);
    assert_eq!(got[2], incoming("h2", "again"));
}

/// The inbox is deduplicated by hash and listed in arrival order.
pub fn inbox_dedupe_and_order<S: Store>(store: &S) {
    commit(
        store,
        Changes {
            inbox: vec![inbox("h1", "hello"), inbox("h2", "two")],
            ..Changes::default()
        },
    );
    commit(
        store,
        Changes {
            inbox: vec![inbox("h1", "hello again"), inbox("h3", "three \u{1F600}")],
            ..Changes::default()
        },
    );
    let got = store.inbox().unwrap();
    assert_eq!(hashes_of(&got), ["h1", "h2", "h3"]);
    assert_eq!(got[0], inbox("h1", "hello"));
    assert_eq!(got[2], inbox("h3", "three \u{1F600}"));
    commit(
        store,
        Changes {
            inbox_removed: vec!["h1".into(), "h3".into()],
            ..Changes::default()
        },
    );
    assert_eq!(store.inbox().unwrap(), vec![inbox("h2", "two")]);
    commit(
        store,
        Changes {
            inbox: vec![inbox("h1", "back")],
            ..Changes::default()
        },
    );
    assert_eq!(hashes_of(&store.inbox().unwrap()), ["h2", "h1"]);
}

/// Contacts are upserted by name, listed by name, removed by name.
pub fn contacts_upsert_order_removal<S: Store>(store: &S) {
    commit(
        store,
        Changes {
            contacts: vec![
                contact("carol", &uid(3), None),
                contact("alice", &uid(1), Some("ik-alice")),
                contact("bob", &uid(2), None),
                contact("bob-work", &uid(2), None),
            ],
            ..Changes::default()
        },
    );
    assert_eq!(
        names(&store.contacts().unwrap()),
        ["alice", "bob", "bob-work", "carol"]
    );
    commit(
        store,
        Changes {
            contacts: vec![contact("bob", &uid(4), Some("ik-bob"))],
            contacts_removed: vec!["alice".into(), "nobody".into()],
            ..Changes::default()
        },
    );
    assert_eq!(
        store.contacts().unwrap(),
        vec![
            contact("bob", &uid(4), Some("ik-bob")),
            contact("bob-work", &uid(2), None),
            contact("carol", &uid(3), None),
        ]
    );
}

/// Settings are upserted by key.
pub fn settings_upsert<S: Store>(store: &S) {
    commit(
        store,
        Changes {
            settings: vec![
                ("name".into(), "alice".into()),
                ("server_url".into(), "http://127.0.0.1:8766".into()),
            ],
            ..Changes::default()
        },
    );
    assert_eq!(store.setting("name").unwrap().as_deref(), Some("alice"));
    commit(
        store,
        Changes {
            settings: vec![
                ("name".into(), "alice-2".into()),
                ("empty".into(), String::new()),
            ],
            ..Changes::default()
        },
    );
    assert_eq!(store.setting("name").unwrap().as_deref(), Some("alice-2"));
    assert_eq!(
        store.setting("server_url").unwrap().as_deref(),
        Some("http://127.0.0.1:8766")
    );
    assert_eq!(store.setting("empty").unwrap().as_deref(), Some(""));
    assert_eq!(store.setting("other").unwrap(), None);
}

/// A contact's signing key round-trips, absent or present (verified means
/// both keys are recorded).
pub fn contacts_keep_signing_key<S: Store>(store: &S) {
    let half = Contact {
        signing_key: None,
        ..contact("half", &uid(5), Some("ik"))
    };
    commit(
        store,
        Changes {
            contacts: vec![contact("both", &uid(4), Some("ik")), half.clone()],
            ..Changes::default()
        },
    );
    let got = store.contacts().unwrap();
    assert_eq!(got, vec![contact("both", &uid(4), Some("ik")), half]);
    assert!(got[0].verified());
    assert!(!got[1].verified());
    assert_eq!(got[0].signing_key.as_deref(), Some("sk-ik"));
}

/// History rows: a held message id is ignored, row numbers grow in save
/// order, rows come oldest first by save time, `after_rowid` skips what a
/// reader saw, group tags and directions round-trip.
pub fn messages_dedupe_order_after<S: Store>(store: &S) {
    let gid = "0123456789abcdef0123456789abcdef";
    commit(
        store,
        Changes {
            messages: vec![
                message("m1", Direction::In, 10.0, None),
                message("m2", Direction::Out, 5.0, None),
            ],
            ..Changes::default()
        },
    );
    commit(
        store,
        Changes {
            messages: vec![
                message("m1", Direction::Out, 1.0, None),
                message("m3", Direction::Out, 20.0, Some(gid)),
            ],
            ..Changes::default()
        },
    );
    let all = store.messages(MessageFilter::All, 0).unwrap();
    assert_eq!(message_ids(&all), ["m2", "m1", "m3"]);
    assert_eq!(all[1].record, message("m1", Direction::In, 10.0, None));
    assert_eq!(
        all[2].record,
        message("m3", Direction::Out, 20.0, Some(gid))
    );
    let (r1, r2, r3) = (all[1].rowid, all[0].rowid, all[2].rowid);
    assert!(0 < r1 && r1 < r2 && r2 < r3, "{r1} {r2} {r3}");
    assert_eq!(
        message_ids(&store.messages(MessageFilter::All, r1).unwrap()),
        ["m2", "m3"]
    );
    assert_eq!(
        message_ids(&store.messages(MessageFilter::All, r2).unwrap()),
        ["m3"]
    );
    assert!(store.messages(MessageFilter::All, r3).unwrap().is_empty());
    // One conversation, picked by the store, in the same order.
    let bob = uid(2).to_string();
    let of = |f: MessageFilter<'_>, after: i64| -> Vec<String> {
        let rows = store.messages(f, after).unwrap();
        message_ids(&rows).into_iter().map(str::to_owned).collect()
    };
    assert_eq!(of(MessageFilter::Peer(&bob), 0), ["m2", "m1"]);
    assert_eq!(of(MessageFilter::Peer(&bob), r1), ["m2"]);
    assert_eq!(of(MessageFilter::Group(gid), 0), ["m3"]);
    assert!(of(MessageFilter::Group(gid), r3).is_empty());
    // A group id is not a peer's id, nor the other way round.
    assert!(of(MessageFilter::Group(&bob), 0).is_empty());
    assert!(of(MessageFilter::Peer(&uid(3).to_string()), 0).is_empty());
}

/// The block list: a set of user ids, sorted, with removals.
pub fn blocked_add_remove<S: Store>(store: &S) {
    commit(
        store,
        Changes {
            blocked: vec![uid(3), uid(1), uid(3)],
            ..Changes::default()
        },
    );
    assert_eq!(store.blocked().unwrap(), vec![uid(1), uid(3)]);
    commit(
        store,
        Changes {
            blocked: vec![uid(2)],
            blocked_removed: vec![uid(1), uid(9)],
            ..Changes::default()
        },
    );
    assert_eq!(store.blocked().unwrap(), vec![uid(2), uid(3)]);
}

/// Staged cards: upserted by card fingerprint (the newest share wins),
/// listed by name, removed by fingerprint.
pub fn received_contacts_upsert_order_removal<S: Store>(store: &S) {
    commit(
        store,
        Changes {
            received_contacts: vec![
                received(&uid(3), "zed", &uid(1), 1.0),
                received(&uid(4), "amy", &uid(1), 2.0),
            ],
            ..Changes::default()
        },
    );
    commit(
        store,
        Changes {
            received_contacts: vec![received(&uid(3), "bea", &uid(2), 3.0)],
            ..Changes::default()
        },
    );
    assert_eq!(
        store.received_contacts().unwrap(),
        vec![
            received(&uid(4), "amy", &uid(1), 2.0),
            received(&uid(3), "bea", &uid(2), 3.0),
        ]
    );
    commit(
        store,
        Changes {
            received_contacts_removed: vec![uid(4), uid(8)],
            ..Changes::default()
        },
    );
    assert_eq!(
        store.received_contacts().unwrap(),
        vec![received(&uid(3), "bea", &uid(2), 3.0)]
    );
}

/// Groups upserted and removed by id (rosters, owner or none, kept
/// exactly), tombstones likewise, invite codes upserted by code with their
/// uses; an inbox record keeps its extra fields.
pub fn groups_left_groups_invites<S: Store>(store: &S) {
    let a = group(1, "team", &[uid(1), uid(2)], Some(&uid(1)));
    let b = group(2, "ops", &[uid(3)], None);
    let mut rec = inbox("x1", "");
    rec.extra = Some(r#"{"kind": "group_update", "added": ["a"]}"#.into());
    commit(
        store,
        Changes {
            groups: vec![a.clone(), b.clone()],
            left_groups: vec![left(5, "old"), left(6, "older")],
            invites: vec![invite("c1", Some(9.5), &[]), invite("-never", None, &[])],
            inbox: vec![rec.clone()],
            ..Changes::default()
        },
    );
    assert_eq!(sorted_groups(store), vec![a.clone(), b]);
    assert_eq!(store.inbox().unwrap(), vec![rec]);
    let a2 = Group {
        name: "team-2".into(),
        members: [uid(1), uid(2), uid(4)].into(),
        ..a
    };
    commit(
        store,
        Changes {
            groups: vec![a2.clone()],
            groups_removed: vec![gid(2), gid(9)],
            left_groups_removed: vec![gid(5)],
            invites: vec![InviteRecord {
                revoked: true,
                ..invite("c1", Some(9.5), &[uid(3), uid(4)])
            }],
            ..Changes::default()
        },
    );
    assert_eq!(sorted_groups(store), vec![a2]);
    assert_eq!(sorted_left(store), vec![left(6, "older")]);
    assert_eq!(
        sorted_invites(store),
        vec![
            invite("-never", None, &[]),
            InviteRecord {
                revoked: true,
                ..invite("c1", Some(9.5), &[uid(3), uid(4)])
            },
        ]
    );
}

/// A batch with every field set.
fn full_batch() -> Changes {
    let (p, q) = (uid(1), uid(2));
    Changes {
        identity: Some(identity("x", Some(77.0))),
        sessions: vec![session(&p, "s1", 3.0, 1.0), session(&q, "s2", 0.0, 2.0)],
        sessions_removed: vec![(p.clone(), "gone".into())],
        outbox: vec![
            entry("e1", &p, OutboxKind::Message),
            entry("a1", &q, OutboxKind::Ack),
        ],
        outbox_removed: vec!["gone".into()],
        processed: vec![processed("h1", &p, 5.0)],
        processed_forget_before: Some(1.0),
        incoming: vec![incoming("i1", "body")],
        incoming_removed: vec!["gone".into()],
        inbox: vec![InboxRecord {
            extra: Some(r#"{"group": "team", "group_id": "g"}"#.into()),
            ..inbox("m1", "text")
        }],
        inbox_removed: vec!["gone".into()],
        contacts: vec![contact("bob", &q, Some("pin"))],
        contacts_removed: vec!["gone".into()],
        settings: vec![("name".into(), "me".into())],
        messages: vec![message("m1", Direction::In, 4.0, None)],
        blocked: vec![q.clone()],
        blocked_removed: vec![uid(9)],
        received_contacts: vec![received(&q, "bob", &p, 4.0)],
        received_contacts_removed: vec![uid(9)],
        groups: vec![group(1, "team", &[p.clone(), q.clone()], Some(&q))],
        groups_removed: vec![gid(9)],
        left_groups: vec![left(2, "old")],
        left_groups_removed: vec![gid(9)],
        invites: vec![invite("code", Some(1.0), std::slice::from_ref(&p))],
    }
}

fn full_snapshot<S: Store>(store: &S) -> Snapshot {
    snapshot(
        store,
        &[uid(1), uid(2)],
        &["h1", "h2"],
        &["name", "server_url"],
    )
}

/// One batch can carry every kind of change, and all of it lands.
pub fn one_batch_touches_everything<S: Store>(store: &S) {
    let c = full_batch();
    commit(store, c.clone());
    let (p, q) = (uid(1), uid(2));
    assert_eq!(store.identity().unwrap(), c.identity);
    assert_eq!(
        store.sessions(&p).unwrap(),
        vec![session(&p, "s1", 3.0, 1.0)]
    );
    assert_eq!(
        store.sessions(&q).unwrap(),
        vec![session(&q, "s2", 0.0, 2.0)]
    );
    assert_eq!(store.outbox().unwrap(), c.outbox);
    assert_eq!(
        store.processed("h1").unwrap(),
        Some(processed("h1", &p, 5.0))
    );
    assert_eq!(store.incoming().unwrap(), c.incoming);
    assert_eq!(store.inbox().unwrap(), c.inbox);
    assert_eq!(store.contacts().unwrap(), c.contacts);
    assert_eq!(store.setting("name").unwrap().as_deref(), Some("me"));
    assert_eq!(
        message_ids(&store.messages(MessageFilter::All, 0).unwrap()),
        ["m1"]
    );
    assert_eq!(store.blocked().unwrap(), c.blocked);
    assert_eq!(store.received_contacts().unwrap(), c.received_contacts);
    assert_eq!(store.groups().unwrap(), c.groups);
    assert_eq!(store.left_groups().unwrap(), c.left_groups);
    assert_eq!(store.invites().unwrap(), c.invites);
}

/// `lock` is exclusive between threads: no two hold it at once.
pub fn lock_serialises_threads<S: Store>(store: &S) {
    let inside = AtomicUsize::new(0);
    let entered = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| {
                for _ in 0..10 {
                    let guard = store.lock().unwrap();
                    assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0, "two holders");
                    entered.fetch_add(1, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_micros(200));
                    inside.fetch_sub(1, Ordering::SeqCst);
                    drop(guard);
                }
            });
        }
    });
    assert_eq!(entered.load(Ordering::SeqCst), 40);
    // And it is free again afterwards.
    drop(store.lock().unwrap());
}

/// Commits from several threads all land, each thread's in its order.
pub fn concurrent_commits_all_land<S: Store>(store: &S) {
    std::thread::scope(|scope| {
        for t in 0..4u32 {
            scope.spawn(move || {
                for i in 0..10 {
                    let mut tx = StoreTransaction::new(store).unwrap();
                    tx.changes = Changes {
                        outbox: vec![entry(&format!("t{t}-{i:02}"), &uid(t), OutboxKind::Message)],
                        settings: vec![(format!("t{t}"), i.to_string())],
                        ..Changes::default()
                    };
                    tx.commit().unwrap();
                }
            });
        }
    });
    let all = store.outbox().unwrap();
    assert_eq!(all.len(), 40);
    for t in 0..4 {
        let mine: Vec<String> = all
            .iter()
            .filter(|e| e.key.starts_with(&format!("t{t}-")))
            .map(|e| e.key.clone())
            .collect();
        let want: Vec<String> = (0..10).map(|i| format!("t{t}-{i:02}")).collect();
        assert_eq!(mine, want);
        assert_eq!(
            store.setting(&format!("t{t}")).unwrap().as_deref(),
            Some("9")
        );
    }
}

// ---------- durability ----------

/// Everything committed is there, unchanged and in the same order, after
/// closing and reopening the files.
pub fn durable_everything_survives_reopen<S: Store, H>(
    make: impl Fn() -> (S, H),
    reopen: impl Fn(&H) -> S,
) {
    let (store, handle) = make();
    commit(&store, full_batch());
    let (p, q) = (uid(1), uid(2));
    commit(
        &store,
        Changes {
            sessions: vec![session(&p, "s0", 1.0, 9.0), session(&p, "", 0.0, 0.0)],
            outbox: vec![entry("e2", &p, OutboxKind::Message)],
            processed: vec![processed("h2", &q, 6.5)],
            incoming: vec![incoming("i2", "second")],
            inbox: vec![inbox("m2", "second")],
            contacts: vec![contact("alice", &p, None)],
            settings: vec![("server_url".into(), "http://relay".into())],
            messages: vec![message("m2", Direction::Out, 5.0, Some("g"))],
            blocked: vec![p.clone()],
            received_contacts: vec![received(&p, "al", &q, 5.0)],
            ..Changes::default()
        },
    );
    let before = full_snapshot(&store);
    assert_eq!(ids(&before.sessions[0]), ["s1", "s0", ""]);
    drop(store);
    let store = reopen(&handle);
    assert_eq!(full_snapshot(&store), before);
    drop(store);
    drop(handle);
}

/// After a reopen new outbox entries still go last, and hashes already
/// held are still deduplicated.
pub fn durable_order_and_dedupe_continue_after_reopen<S: Store, H>(
    make: impl Fn() -> (S, H),
    reopen: impl Fn(&H) -> S,
) {
    let p = uid(1);
    let (store, handle) = make();
    commit(
        &store,
        Changes {
            outbox: vec![
                entry("e1", &p, OutboxKind::Message),
                entry("e2", &p, OutboxKind::Message),
            ],
            incoming: vec![incoming("i1", "first")],
            inbox: vec![inbox("m1", "first")],
            messages: vec![message("h1", Direction::In, 1.0, None)],
            ..Changes::default()
        },
    );
    let first = store.messages(MessageFilter::All, 0).unwrap()[0].rowid;
    drop(store);
    let store = reopen(&handle);
    commit(
        &store,
        Changes {
            outbox: vec![
                entry("e3", &p, OutboxKind::Message),
                entry("e1", &p, OutboxKind::Ack),
            ],
            incoming: vec![incoming("i1", "dup"), incoming("i2", "second")],
            inbox: vec![inbox("m1", "dup"), inbox("m2", "second")],
            messages: vec![
                message("h1", Direction::Out, 0.5, None),
                message("h2", Direction::In, 2.0, None),
            ],
            ..Changes::default()
        },
    );
    let saved = store.messages(MessageFilter::All, 0).unwrap();
    assert_eq!(message_ids(&saved), ["h1", "h2"]);
    assert_eq!(saved[0].rowid, first);
    assert!(saved[1].rowid > first);
    let out = store.outbox().unwrap();
    assert_eq!(keys(&out), ["e1", "e2", "e3"]);
    assert_eq!(out[0].kind, OutboxKind::Ack);
    assert_eq!(
        store.incoming().unwrap(),
        vec![incoming("i1", "first"), incoming("i2", "second")]
    );
    assert_eq!(
        store.inbox().unwrap(),
        vec![inbox("m1", "first"), inbox("m2", "second")]
    );
    drop(store);
    drop(handle);
}

/// Removals and forgetting are durable too.
pub fn durable_removals_survive_reopen<S: Store, H>(
    make: impl Fn() -> (S, H),
    reopen: impl Fn(&H) -> S,
) {
    let (store, handle) = make();
    commit(&store, full_batch());
    let (p, q) = (uid(1), uid(2));
    commit(
        &store,
        Changes {
            sessions_removed: vec![(p.clone(), "s1".into())],
            outbox_removed: vec!["e1".into()],
            processed_forget_before: Some(10.0),
            incoming_removed: vec!["i1".into()],
            inbox_removed: vec!["m1".into()],
            contacts_removed: vec!["bob".into()],
            blocked_removed: vec![q.clone()],
            received_contacts_removed: vec![q.clone()],
            ..Changes::default()
        },
    );
    drop(store);
    let store = reopen(&handle);
    assert!(store.blocked().unwrap().is_empty());
    assert!(store.received_contacts().unwrap().is_empty());
    assert!(store.sessions(&p).unwrap().is_empty());
    assert_eq!(ids(&store.sessions(&q).unwrap()), ["s2"]);
    assert_eq!(keys(&store.outbox().unwrap()), ["a1"]);
    assert_eq!(store.processed("h1").unwrap(), None);
    assert!(store.incoming().unwrap().is_empty());
    assert!(store.inbox().unwrap().is_empty());
    assert!(store.contacts().unwrap().is_empty());
    assert_eq!(store.identity().unwrap(), Some(identity("x", Some(77.0))));
    drop(store);
    drop(handle);
}
