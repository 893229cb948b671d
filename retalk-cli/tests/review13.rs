//! Findings of the adversarial review of the 0.3.0 command line (issue
//! 13): plaintext at rest, contact takeover by cards, unsafe names and
//! files, damaged stores. Real `retalk` binary, real SQLite files, our
//! relay on loopback.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};

use common::agent030::Agent;
use common::OurRelay;

/// Whether any of the identity's store files (database, WAL) holds `needle`.
fn at_rest(home: &Path, name: &str, needle: &str) -> Vec<PathBuf> {
    let dir = home.join(name);
    let mut hits = Vec::new();
    for f in ["store.db", "store.db-wal", "store.db-journal"] {
        let path = dir.join(f);
        if let Ok(bytes) = std::fs::read(&path) {
            if bytes.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                hits.push(path);
            }
        }
    }
    hits
}

/// Received text is never plain in store.db or its WAL: not while it waits
/// in the inbox, not after `receive` took it (with or without --save), and
/// a plain row from before inbox sealing is zeroed once taken.
#[test]
fn received_text_is_not_plain_at_rest() {
    let tmp = tempfile::tempdir().unwrap();
    let relay = OurRelay::start(tmp.path());
    let alice = Agent::ours(tmp.path(), "alice", &relay.url);
    let bob = Agent::ours(tmp.path(), "bob", &relay.url);
    alice.add(&bob);
    bob.add(&alice);
    let texts = ["SECRET-one-4f1d", "SECRET-two-9a2c", "SECRET-three-77e0"];
    for t in texts {
        alice.ok(&["send", "--peer", "bob", t]);
    }
    // One taken, two left waiting in the inbox.
    let first = bob.ok(&["receive", "--all", "--json", "--limit", "1"]);
    assert!(first.contains(texts[0]), "{first}");
    for t in texts {
        assert_eq!(at_rest(&bob.home, "bob", t), Vec::<PathBuf>::new(), "{t}");
    }
    // The rest taken with --save (history is sealed too).
    let rest = bob.ok(&["receive", "--all", "--json", "--save"]);
    assert!(rest.contains(texts[1]) && rest.contains(texts[2]), "{rest}");
    for t in texts {
        assert_eq!(at_rest(&bob.home, "bob", t), Vec::<PathBuf>::new(), "{t}");
    }
    assert!(bob.ok(&["history", "--peer", "alice"]).contains(texts[2]));

    // A plain row as an older version left it: still delivered, and its
    // bytes are gone from the file once taken.
    let legacy = "SECRET-legacy-0c3b";
    let db = bob.home.join("bob").join("store.db");
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute(
            "INSERT INTO inbox(hash, envelope_id, sender, claimed_name, text, received_at) \
             VALUES ('h-legacy', 'e-legacy', ?1, 'alice', ?2, 1.0)",
            rusqlite::params![alice.id, legacy],
        )
        .unwrap();
    assert!(!at_rest(&bob.home, "bob", legacy).is_empty());
    let got = bob.ok(&["receive", "--all", "--json"]);
    assert!(got.contains(legacy), "{got}");
    assert_eq!(at_rest(&bob.home, "bob", legacy), Vec::<PathBuf>::new());
}
