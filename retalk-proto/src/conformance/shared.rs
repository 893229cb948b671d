//! Checks for a [`RelayStore`] that several relay processes share: each
//! takes two handles on one fresh, empty storage (two connections to one
//! database, as two relay nodes hold) and makes them act at once. What one
//! node decided must bind the other: a nonce, a claimed key, a handed-over
//! message, a mailbox cap, a refusal.
//!
//! Every backend able to share its storage runs these (PostgreSQL; the
//! memory store through two `Arc` clones, which checks the checks).

use std::collections::HashSet;

use crate::ids::{sha256_hex, UserId};
use crate::relay::{
    ClaimOutcome, DeliveryRules, NewMessage, PublishOutcome, ReadLimit, RefusalRules, RelayStore,
    SendOutcome,
};
use crate::wire::PublicKeys;

use super::relay::uid;

fn keys(tag: &str) -> PublicKeys {
    PublicKeys {
        identity_key: format!("ik-{tag}"),
        signing_key: format!("sk-{tag}"),
    }
}

fn otks(ids: &[String]) -> Vec<(String, String)> {
    ids.iter()
        .map(|id| (id.clone(), format!("key-{id}")))
        .collect()
}

fn publish<S: RelayStore>(s: &S, user: &UserId, ids: &[String], fallback: bool) -> u64 {
    let fb = fallback.then(|| ("f1".to_string(), "fb-f1".to_string()));
    match s
        .publish_keys(user, &keys("a"), &otks(ids), fb.as_ref(), 1000)
        .unwrap()
    {
        PublishOutcome::Published { added } => added,
        other => panic!("publish refused: {other:?}"),
    }
}

const OPEN: DeliveryRules = DeliveryRules {
    max_mailbox: 0,
    max_per_sender: 0,
    refusals_expire_before: f64::NEG_INFINITY,
};

/// Runs `per_handle` on both handles at once, `threads` threads each, and
/// returns every result.
fn both<S: RelayStore, T: Send>(
    a: &S,
    b: &S,
    threads: usize,
    per_handle: impl Fn(&S, usize) -> T + Sync,
) -> Vec<T> {
    std::thread::scope(|scope| {
        let per_handle = &per_handle;
        let handles: Vec<_> = (0..threads)
            .flat_map(|t| {
                [
                    scope.spawn(move || per_handle(a, 2 * t)),
                    scope.spawn(move || per_handle(b, 2 * t + 1)),
                ]
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// A nonce used through one handle is refused through the other, also
/// when both race for the same nonces.
pub fn shared_nonce_is_single_use<S: RelayStore>(a: &S, b: &S) {
    assert!(a.use_nonce("n-1", 1000.0, 700.0).unwrap());
    assert!(!b.use_nonce("n-1", 1000.5, 700.5).unwrap(), "replay via B");
    let wins = both(a, b, 4, |s, _| {
        (0..50)
            .filter(|i| s.use_nonce(&format!("race-{i}"), 1001.0, 701.0).unwrap())
            .count()
    });
    assert_eq!(wins.iter().sum::<usize>(), 50, "each nonce accepted once");
}

/// Claims through both handles at once hand out each one-time key once,
/// every one of them, then the fallback.
pub fn shared_claims_are_exclusive<S: RelayStore>(a: &S, b: &S) {
    let owner = uid(1);
    let ids: Vec<String> = (0..60).map(|i| format!("k{i:03}")).collect();
    publish(a, &owner, &ids, true);
    let claims = both(a, b, 3, |s, _| {
        (0..12)
            .map(|_| match s.claim_key(&owner).unwrap() {
                ClaimOutcome::Claimed(k) => (k.key_id, k.fallback),
                other => panic!("unexpected {other:?}"),
            })
            .collect::<Vec<_>>()
    });
    let mut seen = HashSet::new();
    let mut fallbacks = 0;
    for (id, fallback) in claims.into_iter().flatten() {
        if fallback {
            fallbacks += 1;
        } else {
            assert!(seen.insert(id.clone()), "{id} handed out twice");
        }
    }
    assert_eq!(seen.len(), 60);
    assert_eq!(fallbacks, 72 - 60);
    assert_eq!(b.count_keys(&owner).unwrap().unclaimed, 0);
}

/// A key claimed through one handle is never offered through the other,
/// whatever is re-uploaded through either (issue #10's rule across
/// nodes), and uploads racing on both handles add each id once.
pub fn shared_claimed_ids_stay_claimed<S: RelayStore>(a: &S, b: &S) {
    let owner = uid(1);
    let first: Vec<String> = (0..10).map(|i| format!("k{i}")).collect();
    publish(a, &owner, &first, false);
    let mut claimed = HashSet::new();
    for _ in 0..5 {
        if let ClaimOutcome::Claimed(k) = b.claim_key(&owner).unwrap() {
            claimed.insert(k.key_id);
        }
    }
    // Both nodes receive the same retried upload (plus new ids) at once.
    let retry: Vec<String> = (0..20).map(|i| format!("k{i}")).collect();
    let added = both(a, b, 2, |s, _| publish(s, &owner, &retry, false));
    assert_eq!(added.iter().sum::<u64>(), 10, "each new id added once");
    assert_eq!(a.count_keys(&owner).unwrap().unclaimed, 15);
    let mut rest = Vec::new();
    while let ClaimOutcome::Claimed(k) = a.claim_key(&owner).unwrap() {
        rest.push(k.key_id);
    }
    assert_eq!(rest.len(), 15);
    for id in &rest {
        assert!(!claimed.contains(id), "{id} offered again after its claim");
    }
}

/// Reads of one mailbox through both handles at once hand every message
/// to exactly one reader.
pub fn shared_reads_hand_each_message_once<S: RelayStore>(a: &S, b: &S) {
    let (from, to) = (uid(1), uid(2));
    b.publish_keys(&to, &keys("b"), &[], None, 1000).unwrap();
    let total = 300;
    for i in 0..total {
        let m = NewMessage::new(from.clone(), to.clone(), 1, format!("m{i}"), f64::from(i));
        assert!(matches!(
            a.send_message(&m, &OPEN).unwrap(),
            SendOutcome::Stored { .. }
        ));
    }
    let small = ReadLimit {
        max_messages: 7,
        max_bytes: 1 << 20,
    };
    let got = both(a, b, 3, |s, _| {
        let mut mine = Vec::new();
        loop {
            let batch = s.read_messages(&to, None, false, small).unwrap();
            if batch.is_empty() {
                return mine;
            }
            mine.extend(batch.into_iter().map(|m| m.body));
        }
    });
    let all: Vec<String> = got.into_iter().flatten().collect();
    let distinct: HashSet<&String> = all.iter().collect();
    assert_eq!(all.len(), total as usize, "no message handed out twice");
    assert_eq!(distinct.len(), total as usize, "every message handed out");
}

/// Sends through both handles at once never take a mailbox past its caps.
pub fn shared_mailbox_caps_hold<S: RelayStore>(a: &S, b: &S) {
    let to = uid(9);
    a.publish_keys(&to, &keys("t"), &[], None, 1000).unwrap();
    let rules = DeliveryRules {
        max_mailbox: 25,
        max_per_sender: 10,
        refusals_expire_before: f64::NEG_INFINITY,
    };
    let stored = both(a, b, 3, |s, t| {
        // Three senders, each racing through both handles.
        let from = uid(100 + (t % 3) as u32);
        (0..12)
            .filter(|i| {
                let m = NewMessage::new(from.clone(), to.clone(), 1, format!("{t}-{i}"), 1.0);
                matches!(
                    s.send_message(&m, &rules).unwrap(),
                    SendOutcome::Stored { .. }
                )
            })
            .count()
    });
    assert_eq!(stored.iter().sum::<usize>(), 25, "the mailbox cap holds");
    let mail = b
        .read_messages(
            &to,
            None,
            true,
            ReadLimit {
                max_messages: 1000,
                max_bytes: 1 << 30,
            },
        )
        .unwrap();
    for sender in 100..103 {
        let n = mail
            .iter()
            .filter(|m| m.sender == uid(sender).as_str())
            .count();
        assert!(n <= 10, "sender cap exceeded: {n}");
    }
}

/// A refusal recorded through one handle blocks the body through the other.
pub fn shared_refusal_gate_holds<S: RelayStore>(a: &S, b: &S) {
    let (from, to) = (uid(1), uid(2));
    a.publish_keys(&to, &keys("b"), &[], None, 1000).unwrap();
    let rules = RefusalRules {
        expire_before: None,
        max_per_recipient: 0,
    };
    a.nack(&to, &sha256_hex("bad"), "sig", 10.0, &rules)
        .unwrap();
    let m = NewMessage::new(from.clone(), to.clone(), 1, "bad".into(), 11.0);
    assert_eq!(
        b.send_message(&m, &OPEN).unwrap(),
        SendOutcome::Refused { sig: "sig".into() }
    );
    let ok = NewMessage::new(from, to, 1, "good".into(), 11.0);
    assert!(matches!(
        b.send_message(&ok, &OPEN).unwrap(),
        SendOutcome::Stored { .. }
    ));
}
