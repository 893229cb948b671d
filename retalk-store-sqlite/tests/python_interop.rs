//! Files written by the real Python retalk (0.0.1 and 0.3.0, installed from
//! PyPI into cached venvs, see `retalk_testkit::python`) open with our stores and keep
//! working: the relay's `server.db` serves the same users, keys, mail,
//! refusals and API keys, and a 0.0.1 identity folder made like its CLI
//! does opens as the same user, with its peers, settings, sessions and
//! outbox, and talks to Python users again.

// Test helpers outside #[test] fns may unwrap too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use retalk_testkit::python as common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use retalk_proto::client::{Client, LocalTransport, OutboxKind, Store};
use retalk_proto::ids::sha256_hex;
use retalk_proto::olm::{unpickle_account, PickleKey};
use retalk_proto::relay::{ClaimOutcome, ReadLimit, Relay, RelayConfig, RelayStore};
use retalk_proto::wire::PublicKeys;
use retalk_proto::{SimClock, UserId};
use retalk_store_sqlite::{SqliteRelayStore, SqliteStore, UNKNOWN_PEER};
use serde_json::Value;

const SCRIPT: &str = include_str!("python/retalk001.py");

struct World {
    python: PathBuf,
    dir: tempfile::TempDir,
    json: Value,
}

impl World {
    /// Runs the Python 0.0.1 relay and users to make a `server.db` and
    /// identity folders in a fresh temp dir.
    fn make() -> World {
        let python = common::python_with_retalk("0.0.1");
        let dir = tempfile::tempdir().unwrap();
        let out = common::run_python(&python, SCRIPT, &[Path::new("make"), dir.path()]);
        let json: Value = serde_json::from_str(&out).unwrap();
        World { python, dir, json }
    }

    fn run(&self, phase: &str) -> Value {
        let out = common::run_python(&self.python, SCRIPT, &[Path::new(phase), self.dir.path()]);
        serde_json::from_str(&out).unwrap()
    }

    fn server_db(&self) -> PathBuf {
        self.dir.path().join("server.db")
    }

    fn id(&self, name: &str) -> UserId {
        UserId::parse(self.json["ids"][name].as_str().unwrap()).unwrap()
    }

    fn keys(&self, name: &str) -> PublicKeys {
        serde_json::from_value(self.json["keys"][name].clone()).unwrap()
    }

    fn str(&self, v: &Value) -> String {
        v.as_str().unwrap().to_string()
    }
}

fn journal_mode(db: &Path) -> String {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap()
}

const ALL: ReadLimit = ReadLimit {
    max_messages: 1000,
    max_bytes: 1 << 30,
};

#[test]
fn python_001_server_db_serves_users_keys_and_mail() {
    let w = World::make();
    let db = w.server_db();
    assert_eq!(journal_mode(&db), "delete", "as Python left it");
    let store = SqliteRelayStore::open(&db).unwrap();
    assert_eq!(journal_mode(&db), "wal");

    for name in ["alice", "bob", "carol"] {
        assert_eq!(store.get_keys(&w.id(name)).unwrap(), Some(w.keys(name)));
    }
    // bob published 5 keys and alice claimed one (Python flags it claimed=1).
    let bob = w.id("bob");
    let bob_otks: Vec<&Value> = w.json["otks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r[1] == bob.as_str())
        .collect();
    assert_eq!(bob_otks.len(), 5);
    let claimed: Vec<_> = bob_otks.iter().filter(|r| r[4] == 1).collect();
    let unclaimed: Vec<_> = bob_otks.iter().filter(|r| r[4] == 0).collect();
    assert_eq!((claimed.len(), unclaimed.len()), (1, 4));
    let counts = store.count_keys(&bob).unwrap();
    assert_eq!((counts.unclaimed, counts.has_fallback), (4, true));

    // A key Python handed out is never re-added by a retried upload...
    let used = (w.str(&claimed[0][2]), w.str(&claimed[0][3]));
    store
        .publish_keys(&bob, &w.keys("bob"), &[used], None, 1000)
        .unwrap();
    assert_eq!(store.count_keys(&bob).unwrap().unclaimed, 4);
    // ...nor served: claims continue with the oldest unclaimed key.
    let ClaimOutcome::Claimed(k) = store.claim_key(&bob).unwrap() else {
        panic!("bob has keys");
    };
    assert!(!k.fallback);
    assert_eq!(k.key_id, w.str(&unclaimed[0][2]));
    assert_eq!(k.one_time_key, w.str(&unclaimed[0][3]));
    assert_eq!(store.count_keys(&bob).unwrap().unclaimed, 3);

    // Queued mail: what Python queued for alice, with Python's ids.
    let alice = w.id("alice");
    let queued: Vec<&Value> = w.json["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r[3] == alice.as_str())
        .collect();
    assert_eq!(queued.len(), 3, "carol 2, bob's ack, bob 1");
    let peeked = store.read_messages(&alice, None, true, ALL).unwrap();
    let want: Vec<(i64, f64, String, i64, String)> = queued
        .iter()
        .map(|r| {
            (
                r[0].as_i64().unwrap(),
                r[1].as_f64().unwrap(),
                w.str(&r[2]),
                r[4].as_i64().unwrap(),
                w.str(&r[5]),
            )
        })
        .collect();
    let got: Vec<(i64, f64, String, i64, String)> = peeked
        .iter()
        .map(|m| {
            (
                m.message_id,
                m.ts,
                m.sender.clone(),
                m.mtype,
                m.body.clone(),
            )
        })
        .collect();
    assert_eq!(got, want);
    assert_eq!(got[0].3, 0, "carol's second message is a pre-key message");
    let from_bob = store
        .read_messages(&alice, Some(bob.as_str()), false, ALL)
        .unwrap();
    assert_eq!(from_bob.len(), 2);
    let rest = store.read_messages(&alice, None, false, ALL).unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].sender, w.id("carol").as_str());

    // New mail continues Python's id sequence.
    let max_id = w.json["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r[0].as_i64().unwrap())
        .max()
        .unwrap();
    let m = retalk_proto::relay::NewMessage::new(bob.clone(), alice.clone(), 1, "x".into(), 1.0);
    let rules = retalk_proto::relay::DeliveryRules {
        max_mailbox: 0,
        max_per_sender: 0,
        refusals_expire_before: f64::NEG_INFINITY,
    };
    match store.send_message(&m, &rules).unwrap() {
        retalk_proto::relay::SendOutcome::Stored { message_id } => assert!(message_id > max_id),
        other => panic!("{other:?}"),
    }
    // Our indexes are there, next to Python's tables.
    let conn = rusqlite::Connection::open(&db).unwrap();
    let n: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND name IN \
             ('otks_owner_claimed', 'messages_recipient', 'messages_recipient_sender', \
              'nonces_ts', 'refused_recipient')",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(n, 5);
}

#[tokio::test]
async fn python_001_identity_folder_opens_as_the_same_user_and_talks() {
    let w = World::make();
    let (alice_id, bob_id, carol_id) = (w.id("alice"), w.id("bob"), w.id("carol"));
    let secret = w.str(&w.json["secrets"]["alice"]);
    let key = PickleKey::from_secret(&secret);
    let url = w.str(&w.json["url"]);
    let alice_dir = w.dir.path().join("alice");

    // --- the upgrade ---
    let store = SqliteStore::open(&alice_dir).unwrap();
    assert_eq!(
        store.migrated_from().unwrap().as_deref(),
        Some("python retalk 0.0.1")
    );
    let identity = store.identity().unwrap().unwrap();
    let meta = &w.json["alice_meta"];
    assert_eq!(
        identity.account_pickle,
        w.str(&meta["account"]),
        "kept as is"
    );
    let fallback_ts: f64 = w.str(&meta["fallback_ts"]).parse().unwrap();
    assert_eq!(identity.fallback_published_at, Some(fallback_ts));
    let account = unpickle_account(&identity.account_pickle, &key).unwrap();
    assert_eq!(
        UserId::from_keys(
            &account.curve25519_key().to_base64(),
            &account.ed25519_key().to_base64()
        ),
        alice_id,
        "the same user id"
    );
    assert_eq!(store.setting("name").unwrap().as_deref(), Some("alice"));
    assert_eq!(
        store.setting("server_url").unwrap().as_deref(),
        Some(url.as_str())
    );
    let contacts = store.contacts().unwrap();
    assert_eq!(contacts.len(), 2);
    assert_eq!(
        (contacts[0].name.as_str(), &contacts[0].id),
        ("bob", &bob_id)
    );
    assert_eq!(
        contacts[0].pin.as_deref(),
        Some(w.keys("bob").identity_key.as_str())
    );
    assert_eq!(
        (contacts[1].name.as_str(), &contacts[1].id),
        ("carol", &carol_id)
    );
    assert_eq!(contacts[1].pin, None);
    for peer in [&bob_id, &carol_id] {
        let s = store.sessions(peer).unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!(
            s[0].session_id, "",
            "unknown until a message is opened with the secret"
        );
    }
    let outbox = store.outbox().unwrap();
    let py_outbox = &w.json["alice_outbox"][0];
    assert_eq!(outbox.len(), 1);
    assert_eq!(outbox[0].key, w.str(&py_outbox[0]));
    assert_eq!(outbox[0].envelope_id, w.str(&py_outbox[0]));
    assert_eq!(outbox[0].peer, bob_id);
    assert_eq!(outbox[0].kind, OutboxKind::Message);
    assert_eq!(outbox[0].body, w.str(&py_outbox[3]));
    let py_processed = &w.json["alice_processed"][0];
    let done = store
        .processed(py_processed[0].as_str().unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(done.envelope_id, w.str(&py_processed[1]));
    assert_eq!(
        done.peer.as_str(),
        UNKNOWN_PEER,
        "two session peers: sender unknown"
    );

    // Python retalk now refuses the folder instead of making a new identity.
    let refused = w.run("open-alice");
    assert_eq!(refused["opened"], false, "{refused}");

    drop(store);

    // --- the Rust client on both migrated files ---
    let clock = SimClock::new(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64(),
    );
    let relay_store = SqliteRelayStore::open(w.server_db()).unwrap();
    let relay = Arc::new(Relay::new(
        relay_store,
        RelayConfig {
            audiences: vec![url.clone()],
            ..RelayConfig::default()
        },
    ));
    let transport = LocalTransport::new(relay.clone(), clock.clone(), url.clone());
    let store = SqliteStore::open(&alice_dir).unwrap();
    let client = Client::open(store, transport, clock.clone(), &secret).unwrap();
    assert_eq!(client.user_id(), &alice_id);
    let inbox = client.receive().await.unwrap();
    assert!(inbox.problems.is_empty(), "{:?}", inbox.problems);
    let got: Vec<(&str, &str, &str)> = inbox
        .messages
        .iter()
        .map(|m| (m.from.as_str(), m.name.as_str(), m.text.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (carol_id.as_str(), "carol", "carol 2"),
            (bob_id.as_str(), "bob", "bob 1")
        ],
        "a pre-key message on a migrated session and a normal one"
    );
    // Each migrated session is now filed under its id, and only there.
    for peer in [&bob_id, &carol_id] {
        let s = client.store().sessions(peer).unwrap();
        assert_eq!(s.len(), 1, "{peer}");
        assert_eq!(s[0].session_id.len(), 43, "{peer}: {:?}", s[0].session_id);
    }
    assert!(
        client
            .store()
            .outbox()
            .unwrap()
            .iter()
            .all(|e| e.kind != OutboxKind::Message),
        "bob's ack (sent by Python) cleared the migrated outbox entry"
    );
    client.send(&bob_id, "from rust alice").await.unwrap();
    drop(client);
    drop(relay);

    // --- and the Python relay and bob take it from there ---
    let bob_view = w.run("check");
    let received = bob_view["bob_received"].as_array().unwrap();
    assert_eq!(received.len(), 1, "{bob_view}");
    assert_eq!(received[0][0], alice_id.as_str());
    assert_eq!(received[0][1], "~alice");
    assert_eq!(received[0][2], "from rust alice");

    // Reopening does not migrate twice.
    let store = SqliteStore::open(&alice_dir).unwrap();
    let again = store.identity().unwrap().unwrap();
    let account = unpickle_account(&again.account_pickle, &key).unwrap();
    assert_eq!(
        UserId::from_keys(
            &account.curve25519_key().to_base64(),
            &account.ed25519_key().to_base64()
        ),
        alice_id
    );
    assert_eq!(store.contacts().unwrap().len(), 2);
    let keys: Vec<String> = store.outbox().unwrap().into_iter().map(|e| e.key).collect();
    assert!(
        !keys.contains(&w.str(&py_outbox[0])),
        "acked and gone for good"
    );
}

const SCRIPT_030: &str = include_str!("python/retalk030.py");

#[test]
fn python_030_server_db_serves_keys_mail_refusals_and_api_keys() {
    let python = common::python_with_retalk("0.3.0");
    let dir = tempfile::tempdir().unwrap();
    let out = common::run_python(&python, SCRIPT_030, &[dir.path()]);
    let j: Value = serde_json::from_str(&out).unwrap();
    let s = |v: &Value| v.as_str().unwrap().to_string();
    let alice = UserId::parse(j["alice"]["id"].as_str().unwrap()).unwrap();
    let bob = UserId::parse(j["bob"]["id"].as_str().unwrap()).unwrap();
    // Python's own gate worked before we touch the file.
    assert_eq!(j["refused"]["gate"]["refused"], true);

    let store = SqliteRelayStore::open(dir.path().join("server.db")).unwrap();
    for (who, id) in [("alice", &alice), ("bob", &bob)] {
        assert_eq!(
            store.get_keys(id).unwrap(),
            Some(PublicKeys {
                identity_key: s(&j[who]["identity_key"]),
                signing_key: s(&j[who]["signing_key"]),
            })
        );
    }
    // alice: 3 keys, one claimed by bob through the Python relay.
    let counts = store.count_keys(&alice).unwrap();
    assert_eq!((counts.unclaimed, counts.has_fallback), (2, true));
    let unclaimed: Vec<&Value> = j["otks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r[1] == alice.as_str() && r[4] == 0)
        .collect();
    assert!(unclaimed.iter().all(|r| r[2] != j["claimed"]["key_id"]));
    for row in &unclaimed {
        let ClaimOutcome::Claimed(k) = store.claim_key(&alice).unwrap() else {
            panic!("alice has keys");
        };
        assert_eq!(
            (k.key_id, k.one_time_key, k.fallback),
            (s(&row[2]), s(&row[3]), false)
        );
    }
    let ClaimOutcome::Claimed(k) = store.claim_key(&alice).unwrap() else {
        panic!("alice has a fallback key");
    };
    assert!(k.fallback);

    // Mail, with Python's ids; the refused body was never stored.
    let mail = store.read_messages(&alice, None, false, ALL).unwrap();
    let got: Vec<(i64, &str, i64, &str)> = mail
        .iter()
        .map(|m| (m.message_id, m.sender.as_str(), m.mtype, m.body.as_str()))
        .collect();
    let ids: Vec<i64> = j["sent"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["message_id"].as_i64().unwrap())
        .collect();
    assert_eq!(
        got,
        [
            (ids[0], bob.as_str(), 1, "hello alice"),
            (ids[1], bob.as_str(), 0, "second")
        ]
    );

    // alice's signed refusal (nack) still blocks that body, with her sig.
    let body = s(&j["refused"]["body"]);
    let m = retalk_proto::relay::NewMessage::new(bob.clone(), alice.clone(), 1, body, 2.0e9);
    let rules = retalk_proto::relay::DeliveryRules {
        max_mailbox: 0,
        max_per_sender: 0,
        refusals_expire_before: 0.0,
    };
    assert_eq!(
        store.send_message(&m, &rules).unwrap(),
        retalk_proto::relay::SendOutcome::Refused {
            sig: s(&j["refused"]["sig"])
        }
    );

    // API keys: the live one admits, the disabled one does not.
    let live = s(&j["api_keys"]["live"]["key_hash"]);
    let old = s(&j["api_keys"]["old"]["key_hash"]);
    assert_eq!(
        live,
        sha256_hex(j["api_keys"]["live"]["key"].as_str().unwrap())
    );
    assert!(store.api_key_valid(&live).unwrap());
    assert!(!store.api_key_valid(&old).unwrap());
    let listed: Vec<(String, String, f64, bool)> = store
        .api_key_list()
        .unwrap()
        .into_iter()
        .map(|k| (k.key_hash, k.label, k.created, k.disabled))
        .collect();
    let want: Vec<(String, String, f64, bool)> = j["api_key_rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (s(&r[0]), s(&r[1]), r[2].as_f64().unwrap(), r[3] == 1))
        .collect();
    assert_eq!(listed, want);
}
