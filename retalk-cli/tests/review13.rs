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

/// Runs `a` with `args`, failing the test if it has not exited within 20 s
/// (then killed); returns (exit code, stderr).
fn run_within(a: &Agent, args: &[&str]) -> (Option<i32>, String) {
    use std::io::Read;
    let mut child = a
        .command(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > std::time::Duration::from_secs(20) {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("{args:?} did not exit within 20 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (status.code(), err)
}

/// A passphrase file that never ends or never opens is refused at once.
#[test]
fn a_passphrase_file_must_be_a_small_regular_file() {
    let tmp = tempfile::tempdir().unwrap();
    let bob = Agent::ours(tmp.path(), "bob", "http://127.0.0.1:9");
    for dev in ["/dev/zero", "/dev/urandom"] {
        let (code, err) = run_within(&bob, &["--passphrase-file", dev, "id"]);
        assert_eq!(code, Some(2), "{err}");
        assert!(err.contains("not a regular file"), "{err}");
    }
    let fifo = tmp.path().join("fifo");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let (code, err) = run_within(&bob, &["--passphrase-file", fifo.to_str().unwrap(), "id"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("not a regular file"), "{err}");

    let long = tmp.path().join("long");
    std::fs::write(&long, "x".repeat(70 * 1024)).unwrap();
    let (code, err) = run_within(&bob, &["--passphrase-file", long.to_str().unwrap(), "id"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("longer than 64 KiB"), "{err}");

    // The right passphrase in a file still unlocks.
    let good = tmp.path().join("good");
    std::fs::write(&good, "passphrase of bob\n").unwrap();
    #[cfg(unix)]
    std::fs::set_permissions(&good, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let (code, err) = run_within(&bob, &["--passphrase-file", good.to_str().unwrap(), "id"]);
    assert_eq!(code, Some(0), "{err}");
}
