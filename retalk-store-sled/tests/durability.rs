//! Durability beyond the conformance suite: exclusive claims under heavy
//! concurrency, writes that survive a SIGKILL of the process that made
//! them, and the one-process-per-database rule.
//!
//! The crash tests re-run this test binary as a child process
//! (`current_exe() --exact <test> --nocapture`) with `CHILD_MODE` set: the
//! child writes in a loop and prints a line after each write returns; the
//! parent kills it (SIGKILL) part-way and checks, on reopening, that every
//! write the child reported is there, and that each write is whole.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use retalk_proto::client::{Changes, InboxRecord, OutboxEntry, OutboxKind, Store};
use retalk_proto::ids::UserId;
use retalk_proto::relay::{
    ClaimOutcome, DeliveryRules, NewMessage, PublishOutcome, ReadLimit, RelayStore, SendOutcome,
};
use retalk_proto::wire::{KeyCounts, PublicKeys};
use retalk_store_sled::{SledRelayStore, SledStore};

const CHILD_MODE: &str = "RETALK_SLED_TEST_CHILD";
const CHILD_DIR: &str = "RETALK_SLED_TEST_DIR";

fn uid(n: u32) -> UserId {
    UserId::parse(&format!("{n:032x}")).unwrap()
}

const OPEN: DeliveryRules = DeliveryRules {
    max_mailbox: 0,
    max_per_sender: 0,
    refusals_expire_before: f64::NEG_INFINITY,
};

fn keys() -> PublicKeys {
    PublicKeys {
        identity_key: "ik".into(),
        signing_key: "sk".into(),
    }
}

// ---------- claims ----------

/// 64 threads claim at once against 50 one-time keys: the 50 keys are
/// handed out once each, the other 14 claims get the fallback key, and
/// after a reopen no key comes back.
#[test]
fn claims_64_threads_50_keys() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relay.sled");
    let store = SledRelayStore::open(&path).unwrap();
    let a = uid(1);
    let otks: Vec<(String, String)> = (0..50)
        .map(|i| (format!("k{i:02}"), format!("key-{i:02}")))
        .collect();
    let fallback = ("f1".to_string(), "fb-1".to_string());
    assert_eq!(
        store
            .publish_keys(&a, &keys(), &otks, Some(&fallback), 1000)
            .unwrap(),
        PublishOutcome::Published { added: 50 }
    );
    let start = Barrier::new(64);
    let results: Vec<ClaimOutcome> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..64)
            .map(|_| {
                s.spawn(|| {
                    start.wait();
                    store.claim_key(&a).unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut handed = HashSet::new();
    let mut fallbacks = 0;
    for r in results {
        let ClaimOutcome::Claimed(k) = r else {
            panic!("unexpected {r:?}");
        };
        if k.fallback {
            assert_eq!((k.key_id.as_str(), k.one_time_key.as_str()), ("f1", "fb-1"));
            fallbacks += 1;
        } else {
            assert_eq!(k.one_time_key, format!("key-{}", &k.key_id[1..]));
            assert!(handed.insert(k.key_id.clone()), "{} twice", k.key_id);
        }
    }
    let all: HashSet<String> = otks.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(handed, all, "every one-time key, once");
    assert_eq!(fallbacks, 14);
    let gone = KeyCounts {
        unclaimed: 0,
        has_fallback: true,
    };
    assert_eq!(store.count_keys(&a).unwrap(), gone);
    drop(store);
    let store = SledRelayStore::open(&path).unwrap();
    assert_eq!(store.count_keys(&a).unwrap(), gone, "claims are durable");
    let ClaimOutcome::Claimed(k) = store.claim_key(&a).unwrap() else {
        panic!("no fallback after reopen");
    };
    assert!(k.fallback);
}

// ---------- one process per database ----------

/// A second open of an open database fails, in this process and in
/// another one, with an error saying it is in use; once closed it opens.
#[test]
fn second_open_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let alice = dir.path().join("alice");
    let store = SledStore::open(&alice).unwrap();
    let err = SledStore::open(&alice).unwrap_err().to_string();
    assert!(err.contains("in use by another process"), "{err}");

    let lines = run_child("open", &alice, |_| false);
    let reported = lines.join("\n");
    assert!(
        reported.contains("open failed:") && reported.contains("in use by another process"),
        "child said: {reported}"
    );
    drop(store);
    drop(SledStore::open(&alice).unwrap());

    let relay = dir.path().join("relay.sled");
    let store = SledRelayStore::open(&relay).unwrap();
    let err = SledRelayStore::open(&relay).unwrap_err().to_string();
    assert!(err.contains("in use by another process"), "{err}");
    drop(store);
    // A relay database is not a client store, nor the reverse, and a
    // refused open leaves it as it was.
    let err = SledStore::open_path(&relay).unwrap_err().to_string();
    assert!(err.contains("relay store") && err.contains("not"), "{err}");
    let err = SledRelayStore::open(alice.join("store.sled"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("client store") && err.contains("not"), "{err}");
    // (sled lets go of its lock a few ms after a drop.)
    let raw = (0..200)
        .find_map(|_| {
            sled::open(&relay)
                .inspect_err(|_| std::thread::sleep(Duration::from_millis(5)))
                .ok()
        })
        .unwrap();
    let names = raw.tree_names();
    assert!(!names.iter().any(|n| n.as_ref() == b"outbox"), "{names:?}");
}

// ---------- SIGKILL ----------

/// Runs this binary's `child` test with `mode`, reading its stdout lines
/// until `enough` says so (then SIGKILLs it) or it exits; returns every
/// line it printed, including those still in the pipe after the kill. The
/// harness's own output shares the lines (`test child ... ` precedes the
/// first), so callers look for their markers anywhere in a line.
fn run_child(mode: &str, dir: &Path, mut enough: impl FnMut(&str) -> bool) -> Vec<String> {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child", "--nocapture", "--test-threads=1"])
        .env(CHILD_MODE, mode)
        .env(CHILD_DIR, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = Vec::new();
    let mut reader = BufReader::new(stdout).lines();
    let deadline = Instant::now() + Duration::from_secs(60);
    for line in reader.by_ref() {
        let line = line.unwrap();
        let stop = enough(&line);
        lines.push(line);
        if stop || Instant::now() > deadline {
            child.kill().unwrap();
            break;
        }
    }
    // What the child printed before it died is still in the pipe.
    lines.extend(reader.map_while(Result::ok));
    child.wait().unwrap();
    lines
}

/// Not a test of its own: the body of the child processes (does nothing
/// when run by the test harness itself).
#[test]
fn child() {
    let Ok(mode) = std::env::var(CHILD_MODE) else {
        return;
    };
    let dir = PathBuf::from(std::env::var(CHILD_DIR).unwrap());
    let mut out = std::io::stdout();
    match mode.as_str() {
        "open" => match SledStore::open(&dir) {
            Ok(_) => writeln!(out, "open ok").unwrap(),
            Err(e) => writeln!(out, "open failed: {e}").unwrap(),
        },
        "client" => {
            let store = SledStore::open(&dir).unwrap();
            let start: u64 = store
                .setting("count")
                .unwrap()
                .map_or(0, |n| n.parse().unwrap());
            for i in start..start + 100_000 {
                store
                    .commit(&store.lock().unwrap(), client_batch(i))
                    .unwrap();
                writeln!(out, "committed {i}").unwrap();
                out.flush().unwrap();
            }
        }
        "relay" => {
            let store = SledRelayStore::open(&dir).unwrap();
            store
                .publish_keys(&uid(2), &keys(), &[], None, 100)
                .unwrap();
            for i in 0..100_000u64 {
                let body = format!("message {i}");
                let m = NewMessage::new(uid(1), uid(2), 1, body, i as f64);
                let open = DeliveryRules {
                    max_mailbox: 0,
                    max_per_sender: 0,
                    refusals_expire_before: f64::NEG_INFINITY,
                };
                let SendOutcome::Stored { message_id } = store.send_message(&m, &open).unwrap()
                else {
                    panic!("not stored");
                };
                writeln!(out, "stored {message_id} {i}").unwrap();
                out.flush().unwrap();
            }
        }
        "relay-threads" => {
            let store = SledRelayStore::open(&dir).unwrap();
            store
                .publish_keys(&uid(2), &keys(), &[], None, 100)
                .unwrap();
            let out = std::sync::Mutex::new(out);
            std::thread::scope(|s| {
                for t in 0..8 {
                    let (store, out) = (&store, &out);
                    s.spawn(move || {
                        for i in 0..100_000 {
                            let body = format!("t{t} {i}");
                            let m = NewMessage::new(uid(1), uid(2), 1, body.clone(), 0.0);
                            store.send_message(&m, &OPEN).unwrap();
                            let mut out = out.lock().unwrap();
                            writeln!(out, "stored {body}").unwrap();
                            out.flush().unwrap();
                        }
                    });
                }
            });
        }
        other => panic!("unknown child mode {other}"),
    }
}

/// Commit `i`: an outbox entry, an inbox message and the count, together.
fn client_batch(i: u64) -> Changes {
    Changes {
        outbox: vec![OutboxEntry {
            key: format!("e{i}"),
            envelope_id: format!("env{i}"),
            peer: uid(1),
            kind: OutboxKind::Message,
            mtype: 1,
            body: format!("ciphertext {i} {}", "x".repeat(200)),
            created: i as f64,
            next_attempt: i as f64 + 120.0,
            attempts: 1,
            last_error: None,
            reencrypt: false,
            envelope: None,
        }],
        inbox: vec![InboxRecord {
            hash: format!("h{i}"),
            envelope_id: format!("in{i}"),
            from: uid(1),
            claimed_name: "~bob".into(),
            text: format!("hello {i}"),
            received_at: i as f64,
            extra: None,
        }],
        settings: vec![("count".into(), (i + 1).to_string())],
        ..Changes::default()
    }
}

fn reported(lines: &[String], prefix: &str) -> Vec<u64> {
    lines
        .iter()
        .filter_map(|l| l.split(prefix).nth(1))
        .map(|n| n.parse().unwrap())
        .collect()
}

/// A child commits batches as fast as it can and is SIGKILLed part-way,
/// three times over on the same store: after each kill every commit it
/// reported is there, and every commit present is whole (its outbox entry,
/// inbox message and count together), with at most the one in flight
/// beyond what was reported.
#[test]
fn client_commits_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let alice = dir.path().join("alice");
    let mut total = 0;
    for round in 0..3u64 {
        let stop_after = 150 + 37 * round as usize;
        let stop_line = format!("committed {}", total + stop_after as u64);
        let lines = run_child("client", &alice, |l| l.ends_with(&stop_line));
        let done = reported(&lines, "committed ");
        assert!(done.len() > stop_after, "round {round}: {lines:?}");
        assert_eq!(done, (total..total + done.len() as u64).collect::<Vec<_>>());

        let store = SledStore::open(&alice).unwrap();
        let count: u64 = store.setting("count").unwrap().unwrap().parse().unwrap();
        let last_reported = *done.last().unwrap();
        assert!(
            count == last_reported + 1 || count == last_reported + 2,
            "round {round}: count {count}, last reported {last_reported}"
        );
        let outbox = store.outbox().unwrap();
        let inbox = store.inbox().unwrap();
        assert_eq!(outbox.len() as u64, count, "one outbox entry per commit");
        assert_eq!(inbox.len() as u64, count, "one inbox message per commit");
        for i in 0..count {
            let entry = store.outbox_entry(&format!("e{i}")).unwrap().unwrap();
            assert_eq!(entry, client_batch(i).outbox[0]);
            assert_eq!(outbox[i as usize], entry, "in commit order");
            assert_eq!(inbox[i as usize], client_batch(i).inbox[0]);
        }
        total = count;
        drop(store);
    }
}

/// The same for the relay: every message the child was told is stored is
/// there after a SIGKILL, and ids go on growing afterwards.
#[test]
fn relay_messages_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relay.sled");
    let lines = run_child("relay", &path, |l| l.ends_with(" 200"));
    let stored: Vec<(i64, u64)> = lines
        .iter()
        .filter_map(|l| l.split("stored ").nth(1))
        .map(|l| {
            let (id, i) = l.split_once(' ').unwrap();
            (id.parse().unwrap(), i.parse().unwrap())
        })
        .collect();
    assert!(stored.len() > 200, "{lines:?}");
    let store = SledRelayStore::open(&path).unwrap();
    let all = ReadLimit {
        max_messages: usize::MAX,
        max_bytes: usize::MAX,
    };
    let mail = store.read_messages(&uid(2), None, true, all).unwrap();
    assert!(mail.len() == stored.len() || mail.len() == stored.len() + 1);
    for ((id, i), m) in stored.iter().zip(&mail) {
        assert_eq!(m.message_id, *id);
        assert_eq!(m.body, format!("message {i}"));
        assert_eq!(m.ts, *i as f64);
    }
    let next = NewMessage::new(uid(1), uid(2), 1, "after".into(), 0.0);
    let open = DeliveryRules {
        max_mailbox: 0,
        max_per_sender: 0,
        refusals_expire_before: f64::NEG_INFINITY,
    };
    let SendOutcome::Stored { message_id } = store.send_message(&next, &open).unwrap() else {
        panic!("not stored");
    };
    assert!(message_id > mail.last().unwrap().message_id);
}

// ---------- large values ----------

/// Values over sled's inline limit (about 128 KiB) live in blob files,
/// which the stores fsync themselves: a 1 MiB message and a 300 KiB inbox
/// text come back whole after a reopen.
#[test]
fn large_values_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relay.sled");
    let store = SledRelayStore::open(&path).unwrap();
    store
        .publish_keys(&uid(2), &keys(), &[], None, 100)
        .unwrap();
    let big: String = (0..1 << 20)
        .map(|i| char::from(b'A' + (i % 26) as u8))
        .collect();
    let m = NewMessage::new(uid(1), uid(2), 0, big.clone(), 1.0);
    let open = DeliveryRules {
        max_mailbox: 0,
        max_per_sender: 0,
        refusals_expire_before: f64::NEG_INFINITY,
    };
    assert!(matches!(
        store.send_message(&m, &open).unwrap(),
        SendOutcome::Stored { .. }
    ));
    let blobs = std::fs::read_dir(path.join("blobs")).unwrap().count();
    assert!(blobs > 0, "the large message went to a blob file");
    drop(store);
    let store = SledRelayStore::open(&path).unwrap();
    let limit = ReadLimit {
        max_messages: 10,
        max_bytes: 1,
    };
    let mail = store.read_messages(&uid(2), None, false, limit).unwrap();
    assert_eq!(mail.len(), 1);
    assert!(mail[0].body == big, "the body came back whole");
    drop(store);

    let alice = dir.path().join("alice");
    let store = SledStore::open(&alice).unwrap();
    let mut batch = client_batch(0);
    batch.inbox[0].text = big[..300 << 10].to_string();
    store.commit(&store.lock().unwrap(), batch.clone()).unwrap();
    drop(store);
    let store = SledStore::open(&alice).unwrap();
    assert_eq!(store.inbox().unwrap(), batch.inbox);
}

/// Eight threads of a child send at once (their fsyncs shared by group
/// commit) until SIGKILLed: every message any thread was told is stored is
/// there afterwards.
#[test]
fn concurrent_sends_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relay.sled");
    let mut n = 0;
    let lines = run_child("relay-threads", &path, |l| {
        n += usize::from(l.contains("stored "));
        n >= 400
    });
    let reported: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.split("stored ").nth(1))
        .collect();
    assert!(reported.len() >= 400, "{lines:?}");
    let store = SledRelayStore::open(&path).unwrap();
    let all = ReadLimit {
        max_messages: usize::MAX,
        max_bytes: usize::MAX,
    };
    let held: HashSet<String> = store
        .read_messages(&uid(2), None, true, all)
        .unwrap()
        .into_iter()
        .map(|m| m.body)
        .collect();
    for body in &reported {
        assert!(
            held.contains(*body),
            "{body} was reported stored but is lost"
        );
    }
    // At most the eight sends in flight were stored but not reported.
    assert!(held.len() <= reported.len() + 8);
}
