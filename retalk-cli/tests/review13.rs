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

/// `contacts --json` as (name, fingerprint, verified).
fn contacts(a: &Agent) -> Vec<(String, String, bool)> {
    common::agent030::lines(&a.ok(&["contacts", "--json"]))
        .into_iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_owned(),
                c["fingerprint"].as_str().unwrap().to_owned(),
                c["verified"].as_bool().unwrap(),
            )
        })
        .collect()
}

/// A card never takes over a saved contact: a stranger's card naming
/// itself after one is refused (staged or given), a card of a known
/// fingerprint keeps its saved name and keys, and --override is the way
/// to take a name on purpose.
#[test]
fn a_card_does_not_take_over_a_saved_contact() {
    let tmp = tempfile::tempdir().unwrap();
    let relay = OurRelay::start(tmp.path());
    let alice = Agent::ours(tmp.path(), "alice", &relay.url);
    let bob = Agent::ours(tmp.path(), "bob", &relay.url);
    let eve = Agent::ours(tmp.path(), "eve", &relay.url);
    let mallory = Agent::ours(tmp.path(), "mallory", &relay.url);
    bob.add(&alice);
    bob.ok(&["verify", "alice"]);
    let before = vec![("alice".to_owned(), alice.id.clone(), true)];
    assert_eq!(contacts(&bob), before);

    // Eve shares Mallory's card under the name "alice".
    eve.add(&bob);
    eve.ok(&["add", &mallory.id, "--peer", "alice"]);
    eve.ok(&["share", "alice", "--peer", "bob"]);
    bob.ok(&["receive", "--all"]);
    let (_, err) = bob.fails(&["import", "--inbox"], 2);
    assert!(
        err.contains("a contact named 'alice' already exists") && err.contains("alice-1"),
        "{err}"
    );
    assert_eq!(contacts(&bob), before);
    // Still staged; imported under a free name it stays apart.
    assert!(bob
        .ok(&["import", "--inbox", "--list"])
        .contains(&mallory.id));

    // A card with Alice's fingerprint and another name, without keys:
    // the saved name and the verification stay.
    let renamed = format!(r#"{{"fingerprint": "{}", "name": "evil"}}"#, alice.id);
    bob.ok(&["import", &renamed]);
    assert_eq!(contacts(&bob), before);
    // Given as text, a clash is refused the same way.
    let stranger = format!(r#"{{"fingerprint": "{}", "name": "alice"}}"#, mallory.id);
    bob.fails(&["import", &stranger], 2);
    assert_eq!(contacts(&bob), before);
    // --as renames a known contact; --override takes a name on purpose.
    bob.ok(&["import", &renamed, "--as", "alice2"]);
    assert_eq!(
        contacts(&bob),
        vec![("alice2".to_owned(), alice.id.clone(), true)]
    );
    // A name held in the owner-wide list is held too.
    bob.ok(&["add", &eve.id, "--peer", "gdave", "--global"]);
    let gdave = format!(r#"{{"fingerprint": "{}", "name": "gdave"}}"#, mallory.id);
    let (_, err) = bob.fails(&["import", &gdave], 2);
    assert!(
        err.contains("a contact named 'gdave' already exists"),
        "{err}"
    );
    bob.ok(&["import", &stranger, "--as", "alice2", "--override"]);
    let now = contacts(&bob);
    assert!(
        now.contains(&("alice2".to_owned(), mallory.id.clone(), false)),
        "{now:?}"
    );
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

/// `import` holds cards to the name rule of `add`, refuses our own id,
/// keys that are not text or not base64.
#[test]
fn import_refuses_unsafe_cards() {
    let tmp = tempfile::tempdir().unwrap();
    let bob = Agent::ours(tmp.path(), "bob", "http://127.0.0.1:9");
    let other = "0123456789abcdef0123456789abcdef";
    let card = |name: &str, extra: &str| {
        format!(r#"{{"fingerprint": "{other}", "name": "{name}"{extra}}}"#)
    };
    let long = "n".repeat(5000);
    for (c, says) in [
        (card("-all", ""), "cannot be saved"),
        (card(&long, ""), "cannot be saved"),
        (
            card("ok", r#", "identity_key": 5, "signing_key": 6"#),
            "must be text",
        ),
        (
            card(
                "ok",
                r#", "identity_key": "not*base64!", "signing_key": "@@@@""#,
            ),
            "not valid base64",
        ),
        (
            format!(r#"{{"fingerprint": "{}", "name": "me"}}"#, bob.id),
            "your own",
        ),
    ] {
        let (_, err) = bob.fails(&["import", &c], 2);
        assert!(err.contains(says), "{c}: {err}");
        assert!(err.len() < 2000, "the refusal repeats the card: {err}");
    }
    // `add` keeps the same rule.
    let (_, err) = bob.fails(&["add", other, "--peer=-all"], 2);
    assert!(err.contains("cannot be saved"), "{err}");
    assert!(contacts(&bob).is_empty());
    // A fine card still goes in.
    bob.ok(&["import", &card("carol", "")]);
    assert_eq!(
        contacts(&bob),
        vec![("carol".to_owned(), other.to_owned(), false)]
    );
}

/// Identity names stay one folder under the retalk home.
#[test]
fn identity_names_cannot_leave_the_home() {
    let tmp = tempfile::tempdir().unwrap();
    let bob = Agent::ours(tmp.path(), "bob", "http://127.0.0.1:9");
    for name in ["../x", "../../escape", "a/b", "a\\b", "-x", ".hidden", ".."] {
        let flag = format!("-u={name}");
        let (_, err) = bob.fails(&["init", &flag], 2);
        assert!(err.contains("cannot be used"), "{name}: {err}");
        let (_, err) = bob.fails(&["contacts", &flag], 2);
        assert!(err.contains("cannot be used"), "{name}: {err}");
    }
    let out = bob
        .command(&["contacts"])
        .env("RETALK_USER", "../x")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("RETALK_USER"));
    assert!(!tmp.path().join("x").exists() && !tmp.path().join("escape").exists());
}

/// Damaged and odd files are named for what they are.
#[test]
fn damaged_files_say_what_they_are() {
    let tmp = tempfile::tempdir().unwrap();
    let bob = Agent::ours(tmp.path(), "bob", "http://127.0.0.1:9");

    // An empty store.db is no identity, and stays empty.
    let empty = bob.home.join("zed");
    std::fs::create_dir_all(&empty).unwrap();
    std::fs::write(empty.join("store.db"), b"").unwrap();
    let (_, err) = bob.fails(&["contacts", "-u", "zed"], 2);
    assert!(err.contains("no identity at"), "{err}");
    assert_eq!(std::fs::metadata(empty.join("store.db")).unwrap().len(), 0);

    // A store that is not a database: exit 2, damaged.
    let bad = bob.home.join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(bad.join("store.db"), vec![b'x'; 4096]).unwrap();
    let (_, err) = bob.fails(&["contacts", "-u", "bad"], 2);
    assert!(err.contains("the identity's store is damaged"), "{err}");

    // A damaged owner-wide contacts.db is named as such.
    std::fs::write(bob.home.join("contacts.db"), vec![b'x'; 4096]).unwrap();
    let out = bob.run(&["contacts"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("owner-wide contacts file"), "{err}");
    std::fs::remove_file(bob.home.join("contacts.db")).unwrap();

    // RETALK_HOME that is a file.
    let file = tmp.path().join("home-file");
    std::fs::write(&file, b"").unwrap();
    let out = bob
        .command(&["contacts"])
        .env("RETALK_HOME", &file)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("is not a directory"), "{err}");

    // A file's name given as CARD.
    let path = tmp.path().join("card.json");
    std::fs::write(&path, "{}").unwrap();
    let (_, err) = bob.fails(&["import", path.to_str().unwrap()], 2);
    assert!(err.contains("retalk import - < FILE"), "{err}");

    // block by id names it once.
    let id = "73dc67dcd4e9ed7582e12a727f6ef2e6";
    let out = bob.run(&["block", id]);
    assert!(out.status.success(), "{}", common::describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.matches(id).count(), 1, "{err}");
}
