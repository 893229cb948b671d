//! Checks every [`RelayStore`] must pass. Each takes a fresh, empty store;
//! the `durable_*` checks also take a way to reopen the same files.

use std::collections::HashSet;

use crate::ids::{sha256_hex, UserId};
use crate::relay::{
    ClaimOutcome, DeliveryRules, NewMessage, PublishOutcome, ReadLimit, RefusalRules, RelayStore,
    SendOutcome, StoredMessage,
};
use crate::wire::{ClaimedKey, KeyCounts, PublicKeys};

/// A valid user id made from a small number.
pub fn uid(n: u32) -> UserId {
    UserId::parse(&format!("{n:032x}")).unwrap()
}

fn keys(tag: &str) -> PublicKeys {
    PublicKeys {
        identity_key: format!("ik-{tag}"),
        signing_key: format!("sk-{tag}"),
    }
}

fn otks(ids: &[&str]) -> Vec<(String, String)> {
    ids.iter()
        .map(|id| (id.to_string(), format!("key-{id}")))
        .collect()
}

fn fallback(id: &str) -> (String, String) {
    (id.to_string(), format!("fb-{id}"))
}

const CAP: u64 = 1000;

/// Publishes; returns how many one-time keys were added.
fn publish<S: RelayStore>(s: &S, user: &UserId, tag: &str, ids: &[&str], fb: Option<&str>) -> u64 {
    let fb = fb.map(fallback);
    let out = s
        .publish_keys(user, &keys(tag), &otks(ids), fb.as_ref(), CAP)
        .unwrap();
    match out {
        PublishOutcome::Published { added } => added,
        other => panic!("publish refused: {other:?}"),
    }
}

/// The ids of every one-time key a user hands out until only the fallback
/// (or nothing) is left.
fn claim_all_otks<S: RelayStore>(s: &S, user: &UserId) -> Vec<(String, String)> {
    let mut got = Vec::new();
    while let ClaimOutcome::Claimed(k) = s.claim_key(user).unwrap() {
        if k.fallback {
            break;
        }
        got.push((k.key_id, k.one_time_key));
    }
    got
}

fn counts(unclaimed: u64, has_fallback: bool) -> KeyCounts {
    KeyCounts {
        unclaimed,
        has_fallback,
    }
}

fn claimed_otk(tag: &str, id: &str) -> ClaimOutcome {
    ClaimOutcome::Claimed(ClaimedKey {
        identity_key: format!("ik-{tag}"),
        signing_key: format!("sk-{tag}"),
        key_id: id.to_string(),
        one_time_key: format!("key-{id}"),
        fallback: false,
    })
}

fn claimed_fallback(tag: &str, id: &str) -> ClaimOutcome {
    ClaimOutcome::Claimed(ClaimedKey {
        identity_key: format!("ik-{tag}"),
        signing_key: format!("sk-{tag}"),
        key_id: id.to_string(),
        one_time_key: format!("fb-{id}"),
        fallback: true,
    })
}

fn msg(from: &UserId, to: &UserId, body: &str, ts: f64) -> NewMessage {
    NewMessage::new(from.clone(), to.clone(), 1, body.to_string(), ts)
}

const OPEN: DeliveryRules = DeliveryRules {
    max_mailbox: 0,
    max_per_sender: 0,
    refusals_expire_before: f64::NEG_INFINITY,
};

const ALL: ReadLimit = ReadLimit {
    max_messages: 1000,
    max_bytes: 1 << 30,
};

const KEEP_ALL: RefusalRules = RefusalRules {
    expire_before: None,
    max_per_recipient: 0,
};

fn send<S: RelayStore>(s: &S, from: &UserId, to: &UserId, body: &str, ts: f64) -> i64 {
    match s.send_message(&msg(from, to, body, ts), &OPEN).unwrap() {
        SendOutcome::Stored { message_id } => message_id,
        other => panic!("expected the message to be stored, got {other:?}"),
    }
}

fn bodies(mail: &[StoredMessage]) -> Vec<&str> {
    mail.iter().map(|m| m.body.as_str()).collect()
}

fn read_all<S: RelayStore>(s: &S, user: &UserId) -> Vec<StoredMessage> {
    s.read_messages(user, None, false, ALL).unwrap()
}

fn peek_all<S: RelayStore>(s: &S, user: &UserId) -> Vec<StoredMessage> {
    s.read_messages(user, None, true, ALL).unwrap()
}

// ---------- nonces ----------

/// A nonce is accepted once, refused while remembered, and forgotten after.
pub fn nonce_is_single_use<S: RelayStore>(store: &S) {
    assert!(store.use_nonce("n1", 1000.0, 700.0).unwrap());
    assert!(!store.use_nonce("n1", 1001.0, 701.0).unwrap());
    assert!(store.use_nonce("n2", 1002.0, 702.0).unwrap());
    // Once older than the retention, n1 is forgotten.
    assert!(store.use_nonce("n1", 1400.0, 1100.0).unwrap());
}

/// A nonce used exactly at `forget_before` is still remembered; one used
/// before it is forgotten.
pub fn nonce_retention_boundary<S: RelayStore>(store: &S) {
    assert!(store.use_nonce("a", 1000.0, 0.0).unwrap());
    assert!(!store.use_nonce("a", 1300.0, 1000.0).unwrap());
    assert!(store.use_nonce("a", 1300.5, 1000.5).unwrap());
    // The re-use recorded a new time: remembered again.
    assert!(!store.use_nonce("a", 1301.0, 1000.5).unwrap());
}

// ---------- keys ----------

/// An unknown user has no keys: counts 0/false, no identity, claim says
/// unknown.
pub fn unknown_user_has_nothing<S: RelayStore>(store: &S) {
    let nobody = uid(404);
    assert_eq!(store.count_keys(&nobody).unwrap(), counts(0, false));
    assert_eq!(store.get_keys(&nobody).unwrap(), None);
    assert_eq!(store.claim_key(&nobody).unwrap(), ClaimOutcome::UnknownPeer);
}

/// Publishing stores the identity, the one-time keys and the fallback key.
pub fn publish_then_count_and_get<S: RelayStore>(store: &S) {
    let a = uid(1);
    publish(store, &a, "a", &["k1", "k2", "k3"], Some("f1"));
    assert_eq!(store.count_keys(&a).unwrap(), counts(3, true));
    assert_eq!(store.get_keys(&a).unwrap(), Some(keys("a")));
    // Other users are untouched.
    assert_eq!(store.count_keys(&uid(2)).unwrap(), counts(0, false));
    assert_eq!(store.get_keys(&uid(2)).unwrap(), None);
}

/// A publish with no one-time keys and no fallback still creates the user.
pub fn publish_identity_only<S: RelayStore>(store: &S) {
    let a = uid(1);
    publish(store, &a, "a", &[], None);
    assert_eq!(store.get_keys(&a).unwrap(), Some(keys("a")));
    assert_eq!(store.count_keys(&a).unwrap(), counts(0, false));
    assert_eq!(store.claim_key(&a).unwrap(), ClaimOutcome::Exhausted);
}

/// Republishing replaces the identity keys, adds one-time keys, replaces
/// the fallback only when one is given.
pub fn republish_upserts<S: RelayStore>(store: &S) {
    let a = uid(1);
    publish(store, &a, "a", &["k1"], Some("f1"));
    publish(store, &a, "a2", &["k2"], None);
    assert_eq!(store.get_keys(&a).unwrap(), Some(keys("a2")));
    assert_eq!(store.count_keys(&a).unwrap(), counts(2, true));
    assert_eq!(store.claim_key(&a).unwrap(), claimed_otk("a2", "k1"));
    assert_eq!(store.claim_key(&a).unwrap(), claimed_otk("a2", "k2"));
    assert_eq!(store.claim_key(&a).unwrap(), claimed_fallback("a2", "f1"));
    publish(store, &a, "a2", &[], Some("f2"));
    assert_eq!(store.claim_key(&a).unwrap(), claimed_fallback("a2", "f2"));
}

/// Claims hand out one-time keys oldest first, across uploads, each once.
pub fn claim_oldest_first<S: RelayStore>(store: &S) {
    let a = uid(1);
    publish(store, &a, "a", &["k1", "k2"], Some("f1"));
    publish(store, &a, "a", &["k3"], None);
    assert_eq!(store.claim_key(&a).unwrap(), claimed_otk("a", "k1"));
    assert_eq!(store.count_keys(&a).unwrap(), counts(2, true));
    assert_eq!(store.claim_key(&a).unwrap(), claimed_otk("a", "k2"));
    assert_eq!(store.claim_key(&a).unwrap(), claimed_otk("a", "k3"));
    assert_eq!(store.count_keys(&a).unwrap(), counts(0, true));
}

/// With no one-time key left, the fallback key is served, flagged, and
/// stays reusable until replaced.
pub fn fallback_is_reused<S: RelayStore>(store: &S) {
    let a = uid(1);
    publish(store, &a, "a", &["k1"], Some("f1"));
    assert_eq!(store.claim_key(&a).unwrap(), claimed_otk("a", "k1"));
    for _ in 0..3 {
        assert_eq!(store.claim_key(&a).unwrap(), claimed_fallback("a", "f1"));
    }
    assert_eq!(store.count_keys(&a).unwrap(), counts(0, true));
    // New one-time keys are preferred over the fallback again.
    publish(store, &a, "a", &["k2"], None);
    assert_eq!(store.claim_key(&a).unwrap(), claimed_otk("a", "k2"));
    assert_eq!(store.claim_key(&a).unwrap(), claimed_fallback("a", "f1"));
}

/// No one-time key and no fallback: exhausted (the user is still known).
pub fn claim_exhausted_without_fallback<S: RelayStore>(store: &S) {
    let a = uid(1);
    publish(store, &a, "a", &["k1"], None);
    assert_eq!(store.count_keys(&a).unwrap(), counts(1, false));
    assert_eq!(store.claim_key(&a).unwrap(), claimed_otk("a", "k1"));
    assert_eq!(store.claim_key(&a).unwrap(), ClaimOutcome::Exhausted);
    assert_eq!(store.claim_key(&a).unwrap(), ClaimOutcome::Exhausted);
    assert_eq!(store.get_keys(&a).unwrap(), Some(keys("a")));
}

/// Claims come from the named user's keys only.
pub fn claims_are_per_user<S: RelayStore>(store: &S) {
    let (a, b) = (uid(1), uid(2));
    publish(store, &a, "a", &["k1"], None);
    publish(store, &b, "b", &["k1", "k2"], Some("f1"));
    assert_eq!(store.claim_key(&b).unwrap(), claimed_otk("b", "k1"));
    assert_eq!(store.count_keys(&a).unwrap(), counts(1, false));
    assert_eq!(store.claim_key(&a).unwrap(), claimed_otk("a", "k1"));
    assert_eq!(store.claim_key(&a).unwrap(), ClaimOutcome::Exhausted);
    assert_eq!(store.claim_key(&b).unwrap(), claimed_otk("b", "k2"));
}

/// A retried upload adds nothing twice: ids already held are not added
/// again (they take the uploaded material), a repeat within one upload
/// counts once, and `added` counts only the new ids.
pub fn duplicate_keys_are_skipped<S: RelayStore>(store: &S) {
    let a = uid(1);
    assert_eq!(publish(store, &a, "a", &["k1", "k2"], Some("f1")), 2);
    assert_eq!(publish(store, &a, "a", &["k1", "k2"], Some("f1")), 0);
    assert_eq!(store.count_keys(&a).unwrap(), counts(2, true));
    assert_eq!(publish(store, &a, "a", &["k2", "k3", "k3"], None), 1);
    assert_eq!(store.count_keys(&a).unwrap(), counts(3, true));
    let want: Vec<(String, String)> = otks(&["k1", "k2", "k3"]);
    assert_eq!(claim_all_otks(store, &a), want);
    // Another user may hold equal keys.
    assert_eq!(publish(store, &uid(2), "b", &["k1"], None), 1);
    assert_eq!(store.count_keys(&uid(2)).unwrap(), counts(1, false));
}

/// An id held unclaimed keeps its place and takes re-uploaded material (an
/// account restored from a backup reuses its ids with new keys): what is
/// handed out is the key its owner can open.
pub fn held_id_takes_new_material<S: RelayStore>(store: &S) {
    let a = uid(1);
    publish(store, &a, "a", &["k1", "k2"], None);
    let renewed = vec![("k1".to_string(), "restored-k1".to_string())];
    let out = store
        .publish_keys(&a, &keys("a"), &renewed, None, CAP)
        .unwrap();
    assert_eq!(out, PublishOutcome::Published { added: 0 });
    assert_eq!(store.count_keys(&a).unwrap(), counts(2, false));
    let mut want = renewed;
    want.extend(otks(&["k2"]));
    assert_eq!(claim_all_otks(store, &a), want);
}

/// The rule of issue #10: a key id is handed out at most once per owner,
/// whatever is uploaded after its claim (a retry whose first answer was
/// lost, the same id with other material), and `added` counts only what
/// is new.
pub fn claimed_ids_are_never_offered_again<S: RelayStore>(store: &S) {
    let a = uid(1);
    assert_eq!(publish(store, &a, "a", &["A", "E"], Some("f1")), 2);
    assert_eq!(store.claim_key(&a).unwrap(), claimed_otk("a", "A"));
    // The retry of the same upload, plus one new key.
    assert_eq!(publish(store, &a, "a", &["A", "E", "F"], Some("f1")), 1);
    assert_eq!(store.count_keys(&a).unwrap(), counts(2, true));
    // The same id with other material is no better.
    let other = vec![("A".to_string(), "other-A".to_string())];
    assert_eq!(
        store
            .publish_keys(&a, &keys("a"), &other, None, CAP)
            .unwrap(),
        PublishOutcome::Published { added: 0 }
    );
    assert_eq!(claim_all_otks(store, &a), otks(&["E", "F"]));
    // Claimed ids, all of them, stay claimed; the fallback is served.
    assert_eq!(publish(store, &a, "a", &["A", "E", "F"], None), 0);
    assert_eq!(store.count_keys(&a).unwrap(), counts(0, true));
    assert_eq!(store.claim_key(&a).unwrap(), claimed_fallback("a", "f1"));
    // Another owner's claims do not block this id for anyone else.
    assert_eq!(publish(store, &uid(2), "b", &["A"], None), 1);
    assert_eq!(store.claim_key(&uid(2)).unwrap(), claimed_otk("b", "A"));
}

/// An upload that would leave more unclaimed keys than the cap stores
/// nothing at all; duplicates do not count against the cap.
pub fn publish_respects_max_unclaimed<S: RelayStore>(store: &S) {
    let a = uid(1);
    let up = |ids: &[&str], fb: Option<&str>, cap: u64, tag: &str| {
        store
            .publish_keys(&a, &keys(tag), &otks(ids), fb.map(fallback).as_ref(), cap)
            .unwrap()
    };
    // A new user over the cap is not created.
    assert_eq!(
        up(&["k1", "k2", "k3", "k4"], Some("f1"), 3, "a"),
        PublishOutcome::TooManyKeys { unclaimed: 0 }
    );
    assert_eq!(store.get_keys(&a).unwrap(), None);
    assert_eq!(store.count_keys(&a).unwrap(), counts(0, false));

    assert_eq!(
        up(&["k1", "k2"], Some("f1"), 3, "a"),
        PublishOutcome::Published { added: 2 }
    );
    assert_eq!(
        up(&["k3", "k4"], Some("f2"), 3, "a2"),
        PublishOutcome::TooManyKeys { unclaimed: 2 }
    );
    // Nothing of the refused upload was stored: not the keys, not the new
    // identity, not the new fallback.
    assert_eq!(store.count_keys(&a).unwrap(), counts(2, true));
    assert_eq!(store.get_keys(&a).unwrap(), Some(keys("a")));
    // Exactly at the cap is fine; re-sent duplicates are free.
    assert_eq!(
        up(&["k1", "k2", "k3"], None, 3, "a"),
        PublishOutcome::Published { added: 1 }
    );
    assert_eq!(store.count_keys(&a).unwrap(), counts(3, true));
    assert_eq!(
        up(&["k1", "k2", "k3"], None, 3, "a"),
        PublishOutcome::Published { added: 0 }
    );
    // Claimed keys make room.
    assert_eq!(store.claim_key(&a).unwrap(), claimed_otk("a", "k1"));
    assert_eq!(
        up(&["k4"], None, 3, "a"),
        PublishOutcome::Published { added: 1 }
    );
    assert_eq!(store.count_keys(&a).unwrap(), counts(3, true));
    assert_eq!(
        store.claim_key(&a).unwrap(),
        ClaimOutcome::Claimed(ClaimedKey {
            identity_key: "ik-a".into(),
            signing_key: "sk-a".into(),
            key_id: "k2".into(),
            one_time_key: "key-k2".into(),
            fallback: false,
        })
    );
}

/// Concurrent claims never hand out a one-time key twice; once they are
/// gone, every claim gets the fallback key.
pub fn claims_are_exclusive_under_concurrency<S: RelayStore>(store: &S) {
    let a = uid(1);
    let ids: Vec<String> = (0..40).map(|i| format!("k{i:03}")).collect();
    let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    publish(store, &a, "a", &id_refs, Some("f1"));
    let threads = 8;
    let per_thread = 6;
    let results: Vec<ClaimOutcome> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    (0..per_thread)
                        .map(|_| store.claim_key(&a).unwrap())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let mut otk_ids = HashSet::new();
    let mut fallbacks = 0;
    for r in results {
        let ClaimOutcome::Claimed(k) = r else {
            panic!("unexpected claim outcome {r:?}");
        };
        if k.fallback {
            assert_eq!(k.key_id, "f1");
            fallbacks += 1;
        } else {
            assert!(
                otk_ids.insert(k.key_id.clone()),
                "{} handed out twice",
                k.key_id
            );
        }
    }
    assert_eq!(otk_ids.len(), 40);
    assert_eq!(fallbacks, threads * per_thread - 40);
    assert_eq!(store.count_keys(&a).unwrap(), counts(0, true));
}

// ---------- messages ----------

/// Mail for an id that never published is refused and not stored.
pub fn send_to_unknown_recipient<S: RelayStore>(store: &S) {
    let (a, b) = (uid(1), uid(2));
    publish(store, &a, "a", &[], None);
    assert_eq!(
        store.send_message(&msg(&a, &b, "x", 1.0), &OPEN).unwrap(),
        SendOutcome::UnknownRecipient
    );
    publish(store, &b, "b", &[], None);
    assert!(read_all(store, &b).is_empty());
    // The sender need not be known: the relay authenticates it, not the store.
    send(store, &uid(3), &b, "from a stranger", 2.0);
    assert_eq!(bodies(&read_all(store, &b)), ["from a stranger"]);
}

/// Messages are handed over oldest first with every field, deleted once
/// read, and other mailboxes are untouched.
pub fn send_and_read_oldest_first<S: RelayStore>(store: &S) {
    let (a, b, c) = (uid(1), uid(2), uid(3));
    for (u, t) in [(&a, "a"), (&b, "b"), (&c, "c")] {
        publish(store, u, t, &[], None);
    }
    let m1 = send(store, &a, &c, "one", 10.5);
    let m2 = send(store, &b, &c, "two", 11.25);
    let other = send(store, &a, &b, "for b", 12.0);
    let mut third = msg(&a, &c, "three \u{e9}\u{1F600}", 13.0);
    third.mtype = 0;
    let SendOutcome::Stored { message_id: m3 } = store.send_message(&third, &OPEN).unwrap() else {
        panic!("not stored");
    };
    assert!(m1 < m2 && m2 < other && other < m3, "ids increase");
    let mail = read_all(store, &c);
    assert_eq!(
        mail,
        vec![
            StoredMessage {
                message_id: m1,
                ts: 10.5,
                sender: a.to_string(),
                mtype: 1,
                body: "one".into()
            },
            StoredMessage {
                message_id: m2,
                ts: 11.25,
                sender: b.to_string(),
                mtype: 1,
                body: "two".into()
            },
            StoredMessage {
                message_id: m3,
                ts: 13.0,
                sender: a.to_string(),
                mtype: 0,
                body: "three \u{e9}\u{1F600}".into()
            },
        ]
    );
    assert!(read_all(store, &c).is_empty(), "read mail is deleted");
    assert_eq!(bodies(&read_all(store, &b)), ["for b"]);
    assert!(read_all(store, &a).is_empty());
}

/// Message ids are never reused, even after the mail is read.
pub fn message_ids_never_reused<S: RelayStore>(store: &S) {
    let (a, b) = (uid(1), uid(2));
    publish(store, &b, "b", &[], None);
    let m1 = send(store, &a, &b, "1", 1.0);
    let m2 = send(store, &a, &b, "2", 2.0);
    assert_eq!(read_all(store, &b).len(), 2);
    let m3 = send(store, &a, &b, "3", 3.0);
    assert!(m1 < m2 && m2 < m3);
}

/// With a peer filter only that sender's mail is handed over (and deleted);
/// the rest stays queued in order.
pub fn read_with_peer_filter<S: RelayStore>(store: &S) {
    let (a, b, c) = (uid(1), uid(2), uid(3));
    publish(store, &c, "c", &[], None);
    send(store, &a, &c, "a1", 1.0);
    send(store, &b, &c, "b1", 2.0);
    send(store, &a, &c, "a2", 3.0);
    send(store, &b, &c, "b2", 4.0);
    let from_b = store
        .read_messages(&c, Some(b.as_str()), false, ALL)
        .unwrap();
    assert_eq!(bodies(&from_b), ["b1", "b2"]);
    assert!(store
        .read_messages(&c, Some(b.as_str()), false, ALL)
        .unwrap()
        .is_empty());
    assert!(store
        .read_messages(&c, Some(uid(9).as_str()), false, ALL)
        .unwrap()
        .is_empty());
    assert_eq!(bodies(&read_all(store, &c)), ["a1", "a2"]);
}

/// A peek hands mail over without deleting it, with or without a filter.
pub fn read_peek_keeps_mail<S: RelayStore>(store: &S) {
    let (a, b, c) = (uid(1), uid(2), uid(3));
    publish(store, &c, "c", &[], None);
    send(store, &a, &c, "a1", 1.0);
    send(store, &b, &c, "b1", 2.0);
    assert_eq!(bodies(&peek_all(store, &c)), ["a1", "b1"]);
    assert_eq!(bodies(&peek_all(store, &c)), ["a1", "b1"]);
    let peeked = store
        .read_messages(&c, Some(a.as_str()), true, ALL)
        .unwrap();
    assert_eq!(bodies(&peeked), ["a1"]);
    let limited = store
        .read_messages(
            &c,
            None,
            true,
            ReadLimit {
                max_messages: 1,
                max_bytes: 1 << 20,
            },
        )
        .unwrap();
    assert_eq!(bodies(&limited), ["a1"]);
    assert_eq!(bodies(&read_all(store, &c)), ["a1", "b1"]);
}

/// One read hands over at most `max_messages`, oldest first; the rest stay.
pub fn read_limit_messages<S: RelayStore>(store: &S) {
    let (a, b) = (uid(1), uid(2));
    publish(store, &b, "b", &[], None);
    for i in 0..5 {
        send(store, &a, &b, &format!("m{i}"), f64::from(i));
    }
    let two = ReadLimit {
        max_messages: 2,
        max_bytes: 1 << 20,
    };
    assert_eq!(
        bodies(&store.read_messages(&b, None, false, two).unwrap()),
        ["m0", "m1"]
    );
    assert_eq!(
        bodies(&store.read_messages(&b, None, false, two).unwrap()),
        ["m2", "m3"]
    );
    assert_eq!(
        bodies(&store.read_messages(&b, None, false, two).unwrap()),
        ["m4"]
    );
    assert!(store
        .read_messages(&b, None, false, two)
        .unwrap()
        .is_empty());
}

/// One read stays within `max_bytes` of bodies, but always hands over at
/// least one message, however large.
pub fn read_limit_bytes<S: RelayStore>(store: &S) {
    let (a, b) = (uid(1), uid(2));
    publish(store, &b, "b", &[], None);
    let ten = "x".repeat(10);
    for _ in 0..3 {
        send(store, &a, &b, &ten, 1.0);
    }
    let big = "y".repeat(100);
    send(store, &a, &b, &big, 2.0);
    send(store, &a, &b, &ten, 3.0);
    let limit = ReadLimit {
        max_messages: 100,
        max_bytes: 25,
    };
    let first = store.read_messages(&b, None, false, limit).unwrap();
    assert_eq!(first.len(), 2, "10 + 10 fit in 25, a third would not");
    let second = store.read_messages(&b, None, false, limit).unwrap();
    assert_eq!(bodies(&second), [ten.as_str()]);
    let third = store.read_messages(&b, None, false, limit).unwrap();
    assert_eq!(
        bodies(&third),
        [big.as_str()],
        "one message even over the limit"
    );
    let exact = ReadLimit {
        max_messages: 100,
        max_bytes: 10,
    };
    assert_eq!(
        bodies(&store.read_messages(&b, None, false, exact).unwrap()),
        [ten.as_str()]
    );
    assert!(read_all(store, &b).is_empty());
}

/// The mailbox cap rejects (never evicts) and counts only undelivered mail
/// of that recipient.
pub fn mailbox_cap_rejects<S: RelayStore>(store: &S) {
    let (a, b, c) = (uid(1), uid(2), uid(3));
    publish(store, &b, "b", &[], None);
    publish(store, &c, "c", &[], None);
    let rules = DeliveryRules {
        max_mailbox: 2,
        ..OPEN
    };
    for i in 0..2 {
        let out = store
            .send_message(&msg(&a, &b, &format!("m{i}"), 1.0), &rules)
            .unwrap();
        assert!(matches!(out, SendOutcome::Stored { .. }), "{out:?}");
    }
    assert_eq!(
        store.send_message(&msg(&a, &b, "m2", 1.0), &rules).unwrap(),
        SendOutcome::MailboxFull { total: 2 }
    );
    // Another sender hits the same full mailbox; another mailbox is free.
    assert_eq!(
        store.send_message(&msg(&c, &b, "c0", 1.0), &rules).unwrap(),
        SendOutcome::MailboxFull { total: 2 }
    );
    assert!(matches!(
        store.send_message(&msg(&a, &c, "x", 1.0), &rules).unwrap(),
        SendOutcome::Stored { .. }
    ));
    assert_eq!(
        bodies(&peek_all(store, &b)),
        ["m0", "m1"],
        "nothing evicted"
    );
    // Reading makes room.
    store
        .read_messages(
            &b,
            None,
            false,
            ReadLimit {
                max_messages: 1,
                max_bytes: 1 << 20,
            },
        )
        .unwrap();
    assert!(matches!(
        store.send_message(&msg(&a, &b, "m2", 1.0), &rules).unwrap(),
        SendOutcome::Stored { .. }
    ));
    assert_eq!(bodies(&read_all(store, &b)), ["m1", "m2"]);
}

/// The per-sender cap applies within a capped mailbox, per sender, and only
/// when the mailbox itself is capped.
pub fn per_sender_cap_rejects<S: RelayStore>(store: &S) {
    let (a, b, c) = (uid(1), uid(2), uid(3));
    publish(store, &c, "c", &[], None);
    let rules = DeliveryRules {
        max_mailbox: 10,
        max_per_sender: 2,
        ..OPEN
    };
    for i in 0..2 {
        let out = store
            .send_message(&msg(&a, &c, &format!("a{i}"), 1.0), &rules)
            .unwrap();
        assert!(matches!(out, SendOutcome::Stored { .. }), "{out:?}");
    }
    assert_eq!(
        store.send_message(&msg(&a, &c, "a2", 1.0), &rules).unwrap(),
        SendOutcome::SenderFull { from_sender: 2 }
    );
    assert!(matches!(
        store.send_message(&msg(&b, &c, "b0", 1.0), &rules).unwrap(),
        SendOutcome::Stored { .. }
    ));
    // The overall cap is checked first.
    let tight = DeliveryRules {
        max_mailbox: 3,
        max_per_sender: 2,
        ..OPEN
    };
    assert_eq!(
        store.send_message(&msg(&a, &c, "a2", 1.0), &tight).unwrap(),
        SendOutcome::MailboxFull { total: 3 }
    );
    // Without a mailbox cap the per-sender cap is off.
    let uncapped = DeliveryRules {
        max_mailbox: 0,
        max_per_sender: 1,
        ..OPEN
    };
    assert!(matches!(
        store
            .send_message(&msg(&a, &c, "a3", 1.0), &uncapped)
            .unwrap(),
        SendOutcome::Stored { .. }
    ));
    assert_eq!(peek_all(store, &c).len(), 4);
}

// ---------- refusals (nack) ----------

/// A nacked body is refused with the recipient's signature and not stored;
/// other bodies, and other recipients, are unaffected.
pub fn refusal_gate<S: RelayStore>(store: &S) {
    let (a, b, c) = (uid(1), uid(2), uid(3));
    publish(store, &b, "b", &[], None);
    publish(store, &c, "c", &[], None);
    let h = sha256_hex("bad");
    store.nack(&b, &h, "sig-b", 100.0, &KEEP_ALL).unwrap();
    assert_eq!(
        store
            .send_message(&msg(&a, &b, "bad", 150.0), &OPEN)
            .unwrap(),
        SendOutcome::Refused {
            sig: "sig-b".into()
        }
    );
    assert!(
        peek_all(store, &b).is_empty(),
        "a refused message is not stored"
    );
    send(store, &a, &b, "good", 151.0);
    send(store, &a, &c, "bad", 152.0);
    assert_eq!(bodies(&read_all(store, &b)), ["good"]);
    assert_eq!(bodies(&read_all(store, &c)), ["bad"]);
    // The gate is checked before the caps: a refusal is not "mailbox full".
    let full = DeliveryRules {
        max_mailbox: 1,
        ..OPEN
    };
    send(store, &a, &b, "filler", 153.0);
    assert_eq!(
        store
            .send_message(&msg(&a, &b, "bad", 154.0), &full)
            .unwrap(),
        SendOutcome::Refused {
            sig: "sig-b".into()
        }
    );
    // Unknown recipients are unknown even with a refusal on record.
    store.nack(&uid(9), &h, "sig-9", 100.0, &KEEP_ALL).unwrap();
    assert_eq!(
        store
            .send_message(&msg(&a, &uid(9), "bad", 150.0), &OPEN)
            .unwrap(),
        SendOutcome::UnknownRecipient
    );
}

/// A refusal recorded at or before `refusals_expire_before` no longer
/// blocks.
pub fn refusal_expiry_in_send<S: RelayStore>(store: &S) {
    let (a, b) = (uid(1), uid(2));
    publish(store, &b, "b", &[], None);
    store
        .nack(&b, &sha256_hex("x"), "sig", 100.0, &KEEP_ALL)
        .unwrap();
    let live = DeliveryRules {
        refusals_expire_before: 99.5,
        ..OPEN
    };
    assert_eq!(
        store.send_message(&msg(&a, &b, "x", 200.0), &live).unwrap(),
        SendOutcome::Refused { sig: "sig".into() }
    );
    let expired = DeliveryRules {
        refusals_expire_before: 100.0,
        ..OPEN
    };
    assert!(matches!(
        store
            .send_message(&msg(&a, &b, "x", 200.0), &expired)
            .unwrap(),
        SendOutcome::Stored { .. }
    ));
}

/// Re-nacking refreshes the signature and the time.
pub fn nack_refreshes<S: RelayStore>(store: &S) {
    let (a, b) = (uid(1), uid(2));
    publish(store, &b, "b", &[], None);
    let h = sha256_hex("x");
    store.nack(&b, &h, "sig-1", 100.0, &KEEP_ALL).unwrap();
    store.nack(&b, &h, "sig-2", 300.0, &KEEP_ALL).unwrap();
    let rules = DeliveryRules {
        refusals_expire_before: 200.0,
        ..OPEN
    };
    assert_eq!(
        store
            .send_message(&msg(&a, &b, "x", 301.0), &rules)
            .unwrap(),
        SendOutcome::Refused {
            sig: "sig-2".into()
        }
    );
}

/// Beyond `max_per_recipient` the oldest refusals (by first nack; a
/// refresh keeps the rank) are evicted, per recipient.
pub fn nack_evicts_oldest<S: RelayStore>(store: &S) {
    let (a, b, c) = (uid(1), uid(2), uid(3));
    publish(store, &b, "b", &[], None);
    publish(store, &c, "c", &[], None);
    let rules = RefusalRules {
        expire_before: None,
        max_per_recipient: 2,
    };
    store.nack(&c, &sha256_hex("c1"), "s", 1.0, &rules).unwrap();
    store
        .nack(&b, &sha256_hex("h1"), "s1", 1.0, &rules)
        .unwrap();
    store
        .nack(&b, &sha256_hex("h2"), "s2", 2.0, &rules)
        .unwrap();
    store
        .nack(&b, &sha256_hex("h1"), "s1b", 3.0, &rules)
        .unwrap();
    store
        .nack(&b, &sha256_hex("h3"), "s3", 4.0, &rules)
        .unwrap();
    let refused = |to: &UserId, body: &str| {
        matches!(
            store.send_message(&msg(&a, to, body, 5.0), &OPEN).unwrap(),
            SendOutcome::Refused { .. }
        )
    };
    assert!(!refused(&b, "h1"), "h1 was the oldest, refreshed or not");
    assert!(refused(&b, "h2"));
    assert!(refused(&b, "h3"));
    assert!(refused(&c, "c1"), "other recipients keep theirs");
}

/// Refusals older than `expire_before` are pruned (for every recipient)
/// when a nack comes in: they stop blocking even with no expiry in send.
pub fn nack_prunes_expired<S: RelayStore>(store: &S) {
    let (a, b, c) = (uid(1), uid(2), uid(3));
    publish(store, &b, "b", &[], None);
    publish(store, &c, "c", &[], None);
    store
        .nack(&b, &sha256_hex("old"), "s", 100.0, &KEEP_ALL)
        .unwrap();
    store
        .nack(&c, &sha256_hex("old-c"), "s", 100.0, &KEEP_ALL)
        .unwrap();
    store
        .nack(&b, &sha256_hex("edge"), "s", 150.0, &KEEP_ALL)
        .unwrap();
    let rules = RefusalRules {
        expire_before: Some(150.0),
        max_per_recipient: 0,
    };
    store
        .nack(&b, &sha256_hex("new"), "s", 200.0, &rules)
        .unwrap();
    let refused = |to: &UserId, body: &str| {
        matches!(
            store
                .send_message(&msg(&a, to, body, 201.0), &OPEN)
                .unwrap(),
            SendOutcome::Refused { .. }
        )
    };
    assert!(!refused(&b, "old"));
    assert!(!refused(&c, "old-c"));
    assert!(refused(&b, "edge"), "at the bound is kept");
    assert!(refused(&b, "new"));
}

// ---------- API keys ----------

/// API keys: create, check, list in creation order, disable, enable, delete.
pub fn api_keys_lifecycle<S: RelayStore>(store: &S) {
    let (h1, h2) = (sha256_hex("key-1"), sha256_hex("key-2"));
    assert!(!store.api_key_valid(&h1).unwrap());
    assert!(store.api_key_list().unwrap().is_empty());
    store.api_key_create(&h2, "second", 20.0).unwrap();
    store.api_key_create(&h1, "first", 10.0).unwrap();
    assert!(store.api_key_valid(&h1).unwrap());
    assert!(store.api_key_valid(&h2).unwrap());
    assert!(!store.api_key_valid(&sha256_hex("other")).unwrap());
    let list = store.api_key_list().unwrap();
    let summary: Vec<_> = list
        .iter()
        .map(|k| (k.key_hash.as_str(), k.label.as_str(), k.created, k.disabled))
        .collect();
    assert_eq!(
        summary,
        [
            (h1.as_str(), "first", 10.0, false),
            (h2.as_str(), "second", 20.0, false)
        ]
    );
    assert_eq!(store.api_key_set_disabled(&h1, true).unwrap(), 1);
    assert!(!store.api_key_valid(&h1).unwrap());
    assert!(store.api_key_list().unwrap()[0].disabled);
    assert_eq!(
        store.api_key_set_disabled(&h1, true).unwrap(),
        1,
        "already disabled still counts"
    );
    assert_eq!(
        store
            .api_key_set_disabled(&sha256_hex("none"), true)
            .unwrap(),
        0
    );
    assert_eq!(store.api_key_set_disabled(&h1, false).unwrap(), 1);
    assert!(store.api_key_valid(&h1).unwrap());
    assert_eq!(store.api_key_delete(&h1).unwrap(), 1);
    assert_eq!(store.api_key_delete(&h1).unwrap(), 0);
    assert!(!store.api_key_valid(&h1).unwrap());
    let left: Vec<_> = store
        .api_key_list()
        .unwrap()
        .into_iter()
        .map(|k| k.key_hash)
        .collect();
    assert_eq!(left, [h2]);
}

// ---------- durability ----------

/// Everything the relay stores survives closing and reopening the files:
/// keys (and which were claimed), mail, nonces, refusals, API keys.
pub fn durable_state_survives_reopen<S: RelayStore, H>(
    make: impl Fn() -> (S, H),
    reopen: impl Fn(&H) -> S,
) {
    let (store, handle) = make();
    let (a, b) = (uid(1), uid(2));
    publish(&store, &a, "a", &["k1", "k2", "k3"], Some("f1"));
    publish(&store, &b, "b", &[], None);
    assert_eq!(store.claim_key(&a).unwrap(), claimed_otk("a", "k1"));
    let m1 = send(&store, &a, &b, "one", 1.5);
    let m2 = send(&store, &a, &b, "two", 2.5);
    assert!(store.use_nonce("nonce-1", 100.0, 0.0).unwrap());
    store
        .nack(&b, &sha256_hex("bad"), "sig-b", 100.0, &KEEP_ALL)
        .unwrap();
    store
        .api_key_create(&sha256_hex("api"), "label", 5.0)
        .unwrap();
    drop(store);

    let store = reopen(&handle);
    assert_eq!(store.get_keys(&a).unwrap(), Some(keys("a")));
    assert_eq!(store.count_keys(&a).unwrap(), counts(2, true));
    assert_eq!(store.claim_key(&a).unwrap(), claimed_otk("a", "k2"));
    assert!(
        !store.use_nonce("nonce-1", 101.0, 0.0).unwrap(),
        "replay after restart"
    );
    assert_eq!(
        store
            .send_message(&msg(&a, &b, "bad", 101.0), &OPEN)
            .unwrap(),
        SendOutcome::Refused {
            sig: "sig-b".into()
        }
    );
    assert!(store.api_key_valid(&sha256_hex("api")).unwrap());
    let mail = store.read_messages(&b, None, true, ALL).unwrap();
    assert_eq!(
        mail.iter()
            .map(|m| (m.message_id, m.ts, m.body.as_str()))
            .collect::<Vec<_>>(),
        [(m1, 1.5, "one"), (m2, 2.5, "two")]
    );
    drop(store);

    // Reads (deletions) are durable too, and ids keep growing.
    let store = reopen(&handle);
    assert_eq!(read_all(&store, &b).len(), 2);
    drop(store);
    let store = reopen(&handle);
    assert!(read_all(&store, &b).is_empty());
    assert_eq!(store.claim_key(&a).unwrap(), claimed_otk("a", "k3"));
    let m3 = send(&store, &a, &b, "three", 3.0);
    assert!(m3 > m2, "message ids are not reused after a restart");
    drop(store);
    drop(handle);
}

/// The memory of claimed ids survives a restart: a retried upload after
/// reopening adds only what is new, and no claimed id comes back.
pub fn durable_claimed_ids_survive_reopen<S: RelayStore, H>(
    make: impl Fn() -> (S, H),
    reopen: impl Fn(&H) -> S,
) {
    let (store, handle) = make();
    let a = uid(1);
    publish(&store, &a, "a", &["A", "E"], Some("f1"));
    assert_eq!(store.claim_key(&a).unwrap(), claimed_otk("a", "A"));
    drop(store);
    let store = reopen(&handle);
    assert_eq!(publish(&store, &a, "a", &["A", "E", "F"], None), 1);
    assert_eq!(claim_all_otks(&store, &a), otks(&["E", "F"]));
    drop(store);
    let store = reopen(&handle);
    assert_eq!(publish(&store, &a, "a", &["A", "E", "F", "G"], None), 1);
    assert_eq!(claim_all_otks(&store, &a), otks(&["G"]));
    drop(store);
    drop(handle);
}

/// A store reopened while empty is still empty and usable.
pub fn durable_empty_reopen<S: RelayStore, H>(make: impl Fn() -> (S, H), reopen: impl Fn(&H) -> S) {
    let (store, handle) = make();
    drop(store);
    let store = reopen(&handle);
    assert_eq!(store.count_keys(&uid(1)).unwrap(), counts(0, false));
    assert!(store.api_key_list().unwrap().is_empty());
    publish(&store, &uid(1), "a", &["k1"], None);
    drop(store);
    let store = reopen(&handle);
    assert_eq!(store.count_keys(&uid(1)).unwrap(), counts(1, false));
    drop(store);
    drop(handle);
}
