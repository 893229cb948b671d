//! SQLite-specific behaviour on real files: concurrency, durability of
//! replay protection, operators editing the database, the identity lock,
//! atomic commits, file permissions.

// Test helpers outside #[test] fns may unwrap too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::fs::OpenOptions;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use fs4::fs_std::FileExt;
use retalk_proto::auth::Dialect;
use retalk_proto::client::{Changes, InboxRecord, SessionRecord, Store};
use retalk_proto::ids::UserId;
use retalk_proto::relay::{
    ClaimOutcome, DeliveryRules, NewMessage, PublishOutcome, ReadLimit, Relay, RelayConfig,
    RelayStore, SendOutcome,
};
use retalk_proto::wire::{Args, PublicKeys, SignedRequest};
use retalk_store_sqlite::{SqliteRelayStore, SqliteStore};

fn uid(n: u32) -> UserId {
    UserId::parse(&format!("{n:032x}")).unwrap()
}

fn keys() -> PublicKeys {
    PublicKeys {
        identity_key: "ik".into(),
        signing_key: "sk".into(),
    }
}

fn publish_50(store: &SqliteRelayStore, user: &UserId) {
    let otks: Vec<(String, String)> = (0..50)
        .map(|i| (format!("k{i:02}"), format!("key-{i:02}")))
        .collect();
    store
        .publish_keys(
            user,
            &keys(),
            &otks,
            Some(&("fb".to_string(), "fallback".to_string())),
            1000,
        )
        .unwrap();
}

fn check_claims(results: Vec<ClaimOutcome>) {
    assert_eq!(results.len(), 64);
    let mut otks = HashSet::new();
    let mut fallbacks = 0;
    for r in results {
        let ClaimOutcome::Claimed(k) = r else {
            panic!("unexpected {r:?}");
        };
        if k.fallback {
            assert_eq!(
                (k.key_id.as_str(), k.one_time_key.as_str()),
                ("fb", "fallback")
            );
            fallbacks += 1;
        } else {
            assert!(
                otks.insert(k.key_id.clone()),
                "{} handed out twice",
                k.key_id
            );
        }
    }
    assert_eq!(otks.len(), 50, "every one-time key handed out once");
    assert_eq!(fallbacks, 14, "then the fallback key");
}

/// 64 threads claim at once from one store (one pool) against 50 keys.
#[test]
fn sixty_four_concurrent_claims_on_one_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteRelayStore::open(dir.path().join("server.db")).unwrap();
    let a = uid(1);
    publish_50(&store, &a);
    let barrier = Barrier::new(64);
    let results: Vec<ClaimOutcome> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..64)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    store.claim_key(&a).unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    check_claims(results);
    assert_eq!(store.count_keys(&a).unwrap().unclaimed, 0);
    // Claimed keys stay, flagged as the Python relay flags them: the
    // memory that their ids were handed out (RelayStore::publish_keys).
    let conn = rusqlite::Connection::open(dir.path().join("server.db")).unwrap();
    let rows: (i64, i64) = conn
        .query_row("SELECT COUNT(*), SUM(claimed) FROM otks", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!(rows, (50, 50));
}

/// A file where the Python relay stored a retried upload (issue #10): a
/// claimed row and unclaimed copies of the same id. The copies are never
/// handed out, and a later upload of the id is skipped.
#[test]
fn python_stored_copies_of_a_claimed_id_are_never_handed_out() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("server.db");
    let a = uid(1);
    let store = SqliteRelayStore::open(&path).unwrap();
    publish_50(&store, &a);
    drop(store);
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(
        "DELETE FROM otks; \
         INSERT INTO otks(owner, key_id, key, claimed) VALUES \
           ('00000000000000000000000000000001', 'A', 'key-A', 1), \
           ('00000000000000000000000000000001', 'A', 'key-A', 0), \
           ('00000000000000000000000000000001', 'E', 'key-E', 0), \
           ('00000000000000000000000000000001', 'E', 'key-E', 0), \
           ('00000000000000000000000000000001', 'A', 'key-A', 0);",
    )
    .unwrap();
    drop(conn);
    let store = SqliteRelayStore::open(&path).unwrap();
    let ClaimOutcome::Claimed(k) = store.claim_key(&a).unwrap() else {
        panic!("no key");
    };
    assert_eq!((k.key_id.as_str(), k.fallback), ("E", false));
    let ClaimOutcome::Claimed(k) = store.claim_key(&a).unwrap() else {
        panic!("no key");
    };
    assert_eq!((k.key_id.as_str(), k.fallback), ("fb", true));
    assert_eq!(store.count_keys(&a).unwrap().unclaimed, 0);
    let again = vec![("A".to_string(), "key-A".to_string())];
    assert_eq!(
        store.publish_keys(&a, &keys(), &again, None, 1000).unwrap(),
        PublishOutcome::Published { added: 0 }
    );
}

/// 64 threads, each with its own store on the same file (as separate relay
/// processes would be), claim at once against 50 keys.
#[test]
fn sixty_four_concurrent_claims_from_separate_stores() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("server.db");
    let a = uid(1);
    publish_50(&SqliteRelayStore::open(&path).unwrap(), &a);
    let barrier = Barrier::new(64);
    let results: Vec<ClaimOutcome> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..64)
            .map(|_| {
                let store = SqliteRelayStore::open_with_pool(&path, 1).unwrap();
                let (barrier, a) = (&barrier, &a);
                s.spawn(move || {
                    barrier.wait();
                    store.claim_key(a).unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    check_claims(results);
}

/// Mixed writers and readers on many threads: no busy errors, nothing lost.
#[test]
fn concurrent_mixed_traffic() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteRelayStore::open(dir.path().join("server.db")).unwrap());
    let users: Vec<UserId> = (1..=8).map(uid).collect();
    for u in &users {
        store.publish_keys(u, &keys(), &[], None, 1000).unwrap();
    }
    let rules = DeliveryRules {
        max_mailbox: 0,
        max_per_sender: 0,
        refusals_expire_before: f64::NEG_INFINITY,
    };
    let limit = ReadLimit {
        max_messages: 7,
        max_bytes: 1 << 20,
    };
    let received: usize = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|t| {
                let (store, users) = (&store, &users);
                s.spawn(move || {
                    let me = &users[t];
                    let mut got = 0;
                    for i in 0..50 {
                        let to = &users[(t + 1 + i % 7) % 8];
                        let body = format!("{t}-{i}");
                        let m = NewMessage::new(me.clone(), to.clone(), 1, body, i as f64);
                        assert!(matches!(
                            store.send_message(&m, &rules).unwrap(),
                            SendOutcome::Stored { .. }
                        ));
                        assert!(store.use_nonce(&format!("n-{t}-{i}"), 100.0, 0.0).unwrap());
                        got += store.read_messages(me, None, false, limit).unwrap().len();
                    }
                    got
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    let rest: usize = users
        .iter()
        .map(|u| {
            store
                .read_messages(
                    u,
                    None,
                    false,
                    ReadLimit {
                        max_messages: 1000,
                        max_bytes: 1 << 30,
                    },
                )
                .unwrap()
                .len()
        })
        .sum();
    assert_eq!(received + rest, 400, "every message delivered exactly once");
}

const OPEN: DeliveryRules = DeliveryRules {
    max_mailbox: 0,
    max_per_sender: 0,
    refusals_expire_before: f64::NEG_INFINITY,
};

fn note(from: &UserId, to: &UserId, body: String) -> NewMessage {
    NewMessage::new(from.clone(), to.clone(), 1, body, 1.0)
}

/// Everything queued for `users`, handed over (and deleted): id -> body.
fn drain(store: &SqliteRelayStore, users: &[UserId]) -> std::collections::HashMap<i64, String> {
    let all = ReadLimit {
        max_messages: 100_000,
        max_bytes: 1 << 30,
    };
    users
        .iter()
        .flat_map(|u| store.read_messages(u, None, false, all).unwrap())
        .map(|m| (m.message_id, m.body))
        .collect()
}

/// 64 threads x 50 sends through one store (group commit batches them):
/// every send gets its own id, and every acknowledged message is in the
/// file after the store is dropped and reopened.
#[test]
fn sixty_four_concurrent_writers_get_distinct_ids_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("server.db");
    let store = SqliteRelayStore::open(&path).unwrap();
    let users: Vec<UserId> = (1..=8).map(uid).collect();
    for u in &users {
        store.publish_keys(u, &keys(), &[], None, 1000).unwrap();
    }
    let barrier = Barrier::new(64);
    let sent: Vec<(i64, String)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..64)
            .map(|t| {
                let (store, users, barrier) = (&store, &users, &barrier);
                s.spawn(move || {
                    barrier.wait();
                    (0..50)
                        .map(|i| {
                            let body = format!("{t}-{i}");
                            assert!(store.use_nonce(&body, 100.0, 0.0).unwrap());
                            let m = note(&uid(100 + t), &users[(t + i) as usize % 8], body.clone());
                            match store.send_message(&m, &OPEN).unwrap() {
                                SendOutcome::Stored { message_id } => (message_id, body),
                                other => panic!("{other:?}"),
                            }
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let ids: HashSet<i64> = sent.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids.len(), 64 * 50, "every message its own id");
    drop(store);

    let store = SqliteRelayStore::open(&path).unwrap();
    let stored = drain(&store, &users);
    assert_eq!(stored.len(), 64 * 50);
    for (id, body) in sent {
        assert_eq!(stored.get(&id), Some(&body), "message {id}");
    }
    // And the nonces: each one a replay now.
    assert!(!store.use_nonce("63-49", 100.0, 0.0).unwrap());
}

/// Writes the database refuses (here an operator's trigger, as a constraint
/// would) fail alone: the concurrent writes committed in the same batches
/// are stored and acknowledged. (The writer's unit tests pin down the
/// same-batch case deterministically.)
#[test]
fn a_refused_write_fails_alone_among_concurrent_writers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("server.db");
    let store = SqliteRelayStore::open(&path).unwrap();
    let users: Vec<UserId> = (1..=8).map(uid).collect();
    for u in &users {
        store.publish_keys(u, &keys(), &[], None, 1000).unwrap();
    }
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch(
            "CREATE TRIGGER no_poison BEFORE INSERT ON messages \
             WHEN NEW.body LIKE 'poison%' BEGIN SELECT RAISE(ABORT, 'poisoned'); END;",
        )
        .unwrap();
    let barrier = Barrier::new(64);
    let good: Vec<(i64, String)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..64)
            .map(|t| {
                let (store, users, barrier) = (&store, &users, &barrier);
                s.spawn(move || {
                    barrier.wait();
                    let mut good = Vec::new();
                    for i in 0..20 {
                        let poison = (t + i) % 4 == 0;
                        let body = format!("{}{t}-{i}", if poison { "poison" } else { "" });
                        let m = note(&uid(100 + t), &users[(t + i) as usize % 8], body.clone());
                        match store.send_message(&m, &OPEN) {
                            Err(e) if poison => assert!(e.to_string().contains("poisoned"), "{e}"),
                            Ok(SendOutcome::Stored { message_id }) if !poison => {
                                good.push((message_id, body))
                            }
                            other => panic!("{body}: {other:?}"),
                        }
                    }
                    good
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    assert_eq!(good.len(), 64 * 15);
    drop(store);
    let stored = drain(&SqliteRelayStore::open(&path).unwrap(), &users);
    assert_eq!(
        stored.len(),
        good.len(),
        "only the refused writes are missing"
    );
    for (id, body) in good {
        assert_eq!(stored.get(&id), Some(&body));
    }
}

fn signed_count_keys(account: &vodozemac::olm::Account, audience: &str, now: f64) -> Vec<u8> {
    SignedRequest::sign(account, &Args::CountKeys, audience, now).to_body(Dialect::V001)
}

/// A request replayed after the relay restarts on the same file is refused.
#[test]
fn replay_protection_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("server.db");
    let audience = "http://127.0.0.1:8766";
    let config = RelayConfig {
        audiences: vec![audience.into()],
        ..RelayConfig::default()
    };
    let account = vodozemac::olm::Account::new();
    let now = 1_700_000_000.0;
    let body = signed_count_keys(&account, audience, now);

    let relay = Relay::new(SqliteRelayStore::open(&path).unwrap(), config.clone());
    let first = relay.handle(&body, now);
    assert_eq!(first.status, 200, "{:?}", first.body);
    let again = relay.handle(&body, now + 1.0);
    assert_eq!(again.body["error"], "replay detected: nonce already used");
    drop(relay);

    let relay = Relay::new(SqliteRelayStore::open(&path).unwrap(), config);
    let replayed = relay.handle(&body, now + 10.0);
    assert_eq!(replayed.status, 400);
    assert_eq!(
        replayed.body["error"],
        "replay detected: nonce already used"
    );
    // A fresh request from the same user still goes through.
    let fresh = relay.handle(
        &signed_count_keys(&account, audience, now + 11.0),
        now + 11.0,
    );
    assert_eq!(fresh.status, 200, "{:?}", fresh.body);
}

/// Nonces are written behind the answer, but in order: once a later write
/// of the store returned (the request's own message, say), the nonce is in
/// the file too — seen by another connection, with the store still open.
#[test]
fn a_nonce_is_durable_no_later_than_the_write_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("server.db");
    let store = SqliteRelayStore::open(&path).unwrap();
    let (a, b) = (uid(1), uid(2));
    store.publish_keys(&b, &keys(), &[], None, 1000).unwrap();
    let conn = rusqlite::Connection::open(&path).unwrap();
    let in_file = |n: &str| -> bool {
        conn.query_row("SELECT COUNT(*) FROM nonces WHERE nonce = ?1", [n], |r| {
            r.get::<_, i64>(0)
        })
        .unwrap()
            == 1
    };
    for i in 0..50 {
        let nonce = format!("n-{i}");
        assert!(store.use_nonce(&nonce, 100.0, 0.0).unwrap());
        store
            .send_message(&note(&a, &b, format!("m-{i}")), &OPEN)
            .unwrap();
        assert!(in_file(&nonce), "nonce {i} not in the file after the send");
    }
}

/// The same nonce from 64 threads at once, and again while it is on its
/// way to the file and after: accepted exactly once.
#[test]
fn a_nonce_is_accepted_once_under_contention() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteRelayStore::open(dir.path().join("server.db")).unwrap();
    for round in 0..20 {
        let nonce = format!("contended-{round}");
        let barrier = Barrier::new(64);
        let accepted: usize = std::thread::scope(|s| {
            let handles: Vec<_> = (0..64)
                .map(|_| {
                    let (store, barrier, nonce) = (&store, &barrier, &nonce);
                    s.spawn(move || {
                        barrier.wait();
                        (0..5)
                            .filter(|_| store.use_nonce(nonce, 100.0, 0.0).unwrap())
                            .count()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(accepted, 1, "round {round}");
    }
}

/// Expired nonces are deleted from the table, not just ignored.
#[test]
fn expired_nonces_are_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("server.db");
    let store = SqliteRelayStore::open(&path).unwrap();
    for i in 0..10 {
        assert!(store.use_nonce(&format!("old-{i}"), 100.0, 0.0).unwrap());
    }
    assert!(store.use_nonce("new", 1000.0, 700.0).unwrap());
    // Nonces are written behind, in order: closing the store commits them.
    drop(store);
    let conn = rusqlite::Connection::open(&path).unwrap();
    let left: Vec<String> = conn
        .prepare("SELECT nonce FROM nonces")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(left, ["new"]);
}

/// The database is the source of truth: edits made with another
/// connection (an operator's `sqlite3`) while the store is open are seen
/// by the very next call.
#[test]
fn operator_edits_are_seen_immediately() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("server.db");
    let store = SqliteRelayStore::open(&path).unwrap();
    let (a, b) = (uid(1), uid(2));
    store
        .publish_keys(
            &a,
            &keys(),
            &[("k1".into(), "key1".into())],
            Some(&("f".into(), "fk".into())),
            1000,
        )
        .unwrap();
    store.api_key_create("h", "ops", 1.0).unwrap();
    // Warm the pool and its statement caches.
    assert_eq!(store.count_keys(&a).unwrap().unclaimed, 1);

    let op = rusqlite::Connection::open(&path).unwrap();
    op.execute_batch(
        "INSERT INTO users(id, identity_key, signing_key) \
             VALUES('00000000000000000000000000000002', 'ik-b', 'sk-b');
         INSERT INTO otks(owner, key_id, key) VALUES('00000000000000000000000000000002', 'x', 'kx');
         UPDATE users SET fallback_key = NULL WHERE id = '00000000000000000000000000000001';
         UPDATE api_keys SET disabled = 1;",
    )
    .unwrap();
    assert_eq!(
        store.get_keys(&b).unwrap(),
        Some(PublicKeys {
            identity_key: "ik-b".into(),
            signing_key: "sk-b".into()
        })
    );
    let counts = store.count_keys(&b).unwrap();
    assert_eq!((counts.unclaimed, counts.has_fallback), (1, false));
    assert!(!store.count_keys(&a).unwrap().has_fallback);
    assert!(!store.api_key_valid("h").unwrap());
    let ClaimOutcome::Claimed(k) = store.claim_key(&b).unwrap() else {
        panic!()
    };
    assert_eq!(k.one_time_key, "kx");
    // An operator deleting a user: the next claim says unknown.
    op.execute("DELETE FROM users WHERE id = ?1", [a.as_str()])
        .unwrap();
    assert_eq!(store.claim_key(&a).unwrap(), ClaimOutcome::UnknownPeer);
}

/// Python's `claimed = 1` rows are neither counted nor served.
#[test]
fn python_claimed_rows_are_not_served() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("server.db");
    let store = SqliteRelayStore::open(&path).unwrap();
    let a = uid(1);
    store.publish_keys(&a, &keys(), &[], None, 1000).unwrap();
    let op = rusqlite::Connection::open(&path).unwrap();
    op.execute_batch(
        "INSERT INTO otks(owner, key_id, key, claimed) VALUES
            ('00000000000000000000000000000001', 'old', 'used', 1),
            ('00000000000000000000000000000001', 'new', 'fresh', 0);",
    )
    .unwrap();
    assert_eq!(store.count_keys(&a).unwrap().unclaimed, 1);
    let ClaimOutcome::Claimed(k) = store.claim_key(&a).unwrap() else {
        panic!()
    };
    assert_eq!(k.key_id, "new");
    assert_eq!(store.claim_key(&a).unwrap(), ClaimOutcome::Exhausted);
}

fn session(peer: &UserId, id: &str) -> SessionRecord {
    SessionRecord {
        peer: peer.clone(),
        session_id: id.into(),
        pickle: "p".into(),
        last_received: 0.0,
        created: 0.0,
    }
}

/// `lock` takes an OS lock on `store.db.lock` (the file Python retalk
/// locks): a second store on the same folder — another process — waits.
#[test]
fn client_lock_is_an_os_lock_on_store_db_lock() {
    let dir = tempfile::tempdir().unwrap();
    let one = SqliteStore::open(dir.path()).unwrap();
    let two = SqliteStore::open(dir.path()).unwrap();
    let lock_path = dir.path().join("store.db.lock");
    let probe = OpenOptions::new().write(true).open(&lock_path).unwrap();

    let guard = one.lock().unwrap();
    assert!(!FileExt::try_lock_exclusive(&probe).unwrap(), "held");
    // Python retalk's own call, fcntl.flock(LOCK_EX), would block too.
    let py = std::process::Command::new("python3")
        .args([
            "-c",
            "import fcntl, sys\n\
             f = open(sys.argv[1], 'w')\n\
             try:\n    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)\n    print('free')\n\
             except BlockingIOError:\n    print('held')",
        ])
        .arg(&lock_path)
        .output()
        .expect("python3 on PATH (the interop tests need it too)");
    assert_eq!(String::from_utf8_lossy(&py.stdout).trim(), "held");

    let started = std::time::Instant::now();
    std::thread::scope(|s| {
        let waiter = s.spawn(|| {
            let _g = two.lock().unwrap();
            started.elapsed()
        });
        std::thread::sleep(Duration::from_millis(200));
        drop(guard);
        let waited = waiter.join().unwrap();
        assert!(
            waited >= Duration::from_millis(150),
            "waited only {waited:?}"
        );
    });
    assert!(FileExt::try_lock_exclusive(&probe).unwrap(), "released");
    FileExt::unlock(&probe).unwrap();
}

/// A commit is all or nothing: when the database refuses part of a batch
/// (here an operator's trigger), nothing of it is written.
#[test]
fn client_commit_is_atomic() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).unwrap();
    let op = rusqlite::Connection::open(dir.path().join("store.db")).unwrap();
    op.execute_batch(
        "CREATE TRIGGER no_inbox BEFORE INSERT ON inbox BEGIN SELECT RAISE(ABORT, 'no'); END;",
    )
    .unwrap();
    let p = uid(1);
    let batch = Changes {
        sessions: vec![session(&p, "s1")],
        settings: vec![("name".into(), "x".into())],
        inbox: vec![InboxRecord {
            hash: "h".into(),
            envelope_id: "e".into(),
            from: p.clone(),
            claimed_name: String::new(),
            text: "t".into(),
            received_at: 1.0,
            extra: None,
        }],
        ..Changes::default()
    };
    assert!(store.commit(&store.lock().unwrap(), batch.clone()).is_err());
    assert!(store.sessions(&p).unwrap().is_empty());
    assert_eq!(store.setting("name").unwrap(), None);
    op.execute_batch("DROP TRIGGER no_inbox").unwrap();
    store.commit(&store.lock().unwrap(), batch).unwrap();
    assert_eq!(store.sessions(&p).unwrap().len(), 1);
    assert_eq!(store.inbox().unwrap().len(), 1);
}

/// A store written by a newer schema is refused, not mangled.
#[test]
fn client_refuses_a_newer_schema() {
    let dir = tempfile::tempdir().unwrap();
    drop(SqliteStore::open(dir.path()).unwrap());
    let op = rusqlite::Connection::open(dir.path().join("store.db")).unwrap();
    op.pragma_update(None, "user_version", 99).unwrap();
    let err = SqliteStore::open(dir.path()).unwrap_err();
    assert!(err.to_string().contains("version 99"), "{err}");
}

/// A version-1 store (before `outbox.reencrypt`) is upgraded in place: an
/// entry whose last attempt never left (the `(not sent) ` prefix version 1
/// decided on) is to be re-encrypted, any other is not.
#[test]
fn client_upgrades_a_version_1_outbox() {
    let dir = tempfile::tempdir().unwrap();
    drop(SqliteStore::open(dir.path()).unwrap());
    let op = rusqlite::Connection::open(dir.path().join("store.db")).unwrap();
    op.execute_batch(
        "ALTER TABLE outbox DROP COLUMN reencrypt; PRAGMA user_version = 1;
         INSERT INTO outbox(key, envelope_id, peer, kind, mtype, body, created, next_attempt,
             attempts, last_error, envelope)
         VALUES('lost', 'lost', '00000000000000000000000000000001', 'message', 1, 'b1', 1, 1, 1,
                '(not sent) relay unreachable: refused', 'sealed'),
               ('maybe', 'maybe', '00000000000000000000000000000001', 'message', 1, 'b2', 1, 1, 1,
                'relay unreachable: timed out', 'sealed');",
    )
    .unwrap();
    drop(op);
    let store = SqliteStore::open(dir.path()).unwrap();
    let flags: Vec<_> = store
        .outbox()
        .unwrap()
        .into_iter()
        .map(|e| (e.key, e.reencrypt))
        .collect();
    assert_eq!(flags, [("lost".into(), true), ("maybe".into(), false)]);
}

/// A version-3 store is upgraded in place: the inbox keeps its messages
/// and gains the extra fields; groups, tombstones and invite codes start
/// empty and are kept from then on.
#[test]
fn client_upgrades_a_version_3_store() {
    let dir = tempfile::tempdir().unwrap();
    drop(SqliteStore::open(dir.path()).unwrap());
    let op = rusqlite::Connection::open(dir.path().join("store.db")).unwrap();
    op.execute_batch(
        "DROP TABLE groups; DROP TABLE left_groups; DROP TABLE invite_codes;
         ALTER TABLE inbox DROP COLUMN extra; PRAGMA user_version = 3;
         INSERT INTO inbox(hash, envelope_id, sender, claimed_name, text, received_at)
         VALUES('h', 'e', '00000000000000000000000000000002', '~bob', 'hi', 1);",
    )
    .unwrap();
    drop(op);
    let store = SqliteStore::open(dir.path()).unwrap();
    let inbox = store.inbox().unwrap();
    assert_eq!(inbox.len(), 1);
    assert_eq!(
        (inbox[0].text.as_str(), inbox[0].extra.as_deref()),
        ("hi", None)
    );
    assert!(store.groups().unwrap().is_empty());
    assert!(store.invites().unwrap().is_empty());
    let mut tx = retalk_proto::client::StoreTransaction::new(&store).unwrap();
    tx.changes
        .left_groups
        .push(retalk_proto::client::LeftGroup {
            id: retalk_proto::group::GroupId::parse(&"ab".repeat(16)).unwrap(),
            name: "team".into(),
            ts: 2.0,
        });
    tx.commit().unwrap();
    assert_eq!(store.left_groups().unwrap()[0].name, "team");
}

/// A version-2 store is upgraded in place: the block list moves from its
/// setting into the `blocked` table, contacts gain an empty signing key,
/// the history and the contact inbox start empty.
#[test]
fn client_upgrades_a_version_2_store() {
    let dir = tempfile::tempdir().unwrap();
    drop(SqliteStore::open(dir.path()).unwrap());
    let op = rusqlite::Connection::open(dir.path().join("store.db")).unwrap();
    op.execute_batch(
        "DROP TABLE messages; DROP TABLE blocked; DROP TABLE received_contacts;
         ALTER TABLE contacts DROP COLUMN signing_key; PRAGMA user_version = 2;
         INSERT INTO contacts(name, id, pin) VALUES('bob', '00000000000000000000000000000002', 'ik');
         INSERT INTO settings(k, v) VALUES('blocked',
             '00000000000000000000000000000003,00000000000000000000000000000001');",
    )
    .unwrap();
    drop(op);
    let store = SqliteStore::open(dir.path()).unwrap();
    let ids: Vec<String> = store
        .blocked()
        .unwrap()
        .into_iter()
        .map(|u| u.to_string())
        .collect();
    assert_eq!(
        ids,
        [
            "00000000000000000000000000000001",
            "00000000000000000000000000000003"
        ]
    );
    assert_eq!(store.setting("blocked").unwrap(), None);
    let contacts = store.contacts().unwrap();
    assert_eq!(contacts[0].pin.as_deref(), Some("ik"));
    assert_eq!(contacts[0].signing_key, None);
    assert!(store
        .messages(retalk_proto::client::MessageFilter::All, 0)
        .unwrap()
        .is_empty());
    assert!(store.received_contacts().unwrap().is_empty());
}

/// A new identity folder and its database are private to their owner.
#[cfg(unix)]
#[test]
fn new_identity_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("a").join("alice");
    let store = SqliteStore::open(&folder).unwrap();
    store
        .commit(
            &store.lock().unwrap(),
            Changes {
                settings: vec![("name".into(), "alice".into())],
                ..Changes::default()
            },
        )
        .unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&folder), 0o700);
    assert_eq!(mode(&folder.join("store.db")), 0o600);
    assert_eq!(mode(&folder.join("store.db-wal")), 0o600);
}

/// Many threads committing and locking through one store.
#[test]
fn client_store_shared_between_threads() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path()).unwrap());
    std::thread::scope(|s| {
        for t in 0..8u32 {
            let store = store.clone();
            s.spawn(move || {
                for i in 0..20 {
                    let g = store.lock().unwrap();
                    store
                        .commit(
                            &g,
                            Changes {
                                sessions: vec![session(&uid(t), &format!("s{i}"))],
                                ..Changes::default()
                            },
                        )
                        .unwrap();
                }
            });
        }
    });
    for t in 0..8 {
        assert_eq!(store.sessions(&uid(t)).unwrap().len(), 20);
    }
}
