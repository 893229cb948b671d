#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The real Python retalk 0.3.0 command line (`retalk` from PyPI, in a
//! cached venv) against our relay on a SQLite file: the quickstart, `sync`,
//! a block turned into a nack that stops the sender's resends, the mailbox
//! cap as the sender sees it, and a relay answering to two audiences.
//!
//! Every identity has its own `RETALK_HOME`, is selected by `RETALK_USER`,
//! unlocked by `RETALK_PASSPHRASE` and pointed at our relay by
//! `RETALK_RELAY`; the caller's environment is cleared, and each home gets
//! a `config.json` naming our relay before `init` could seed the packaged
//! one (a public relay), so nothing leaves loopback.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{post, relay_command, sqlite_relay, Peer, RelayProcess};
use retalk_proto::wire::Args;
use retalk_relay::RelayServer;
use retalk_testkit::python::{describe, free_port, python_with_retalk, venv_bin};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// The rows of `query` with string `params` on the SQLite file `db`
/// (committed: see [`common::sql`]).
fn sql(python: &Path, db: &Path, query: &str, params: &[&str]) -> Value {
    common::sql(python, db, query, json!(params))
}

fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// A command's stdout and stderr, as text.
struct Out {
    stdout: String,
    stderr: String,
}

/// One Python 0.3.0 identity driven through its CLI.
struct PyUser {
    python: PathBuf,
    home: PathBuf,
    name: String,
    relay: String,
    fp: String,
}

impl PyUser {
    fn new(python: &Path, root: &Path, name: &str, relay: &str) -> PyUser {
        let home = root.join(format!("{name}-home"));
        std::fs::create_dir_all(&home).unwrap();
        // The owner-wide default relay: ours, so the packaged default (a
        // public relay) is never copied in.
        std::fs::write(
            home.join("config.json"),
            format!("{}\n", json!({ "relay": relay })),
        )
        .unwrap();
        PyUser {
            python: python.to_path_buf(),
            home,
            name: name.into(),
            relay: relay.into(),
            fp: String::new(),
        }
    }

    /// The identity folder.
    fn dir(&self) -> PathBuf {
        self.home.join(&self.name)
    }

    fn store(&self) -> PathBuf {
        self.dir().join("store.db")
    }

    /// `using NAME (FP) from DIR`, printed to stderr by commands that act.
    fn banner(&self) -> String {
        format!(
            "using {} ({}) from {}\n",
            self.name,
            self.fp,
            self.dir().display()
        )
    }

    fn run(&self, args: &[&str]) -> Output {
        let bin = venv_bin(&self.python);
        Command::new(bin.join("retalk"))
            .args(args)
            .current_dir(&self.home)
            .env_clear()
            .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
            .env("HOME", &self.home)
            .env("PYTHONUTF8", "1")
            .env("RETALK_HOME", &self.home)
            .env("RETALK_USER", &self.name)
            .env("RETALK_PASSPHRASE", format!("passphrase of {}", self.name))
            .env("RETALK_RELAY", &self.relay)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Runs a command that must exit 0.
    fn ok(&self, args: &[&str]) -> Out {
        self.fails(args, 0)
    }

    /// Runs a command that must exit with `code`.
    fn fails(&self, args: &[&str], code: i32) -> Out {
        let out = self.run(args);
        assert_eq!(
            out.status.code(),
            Some(code),
            "`retalk {}` as {}:\n{}",
            args.join(" "),
            self.name,
            describe(&out)
        );
        Out {
            stdout: String::from_utf8(out.stdout).unwrap(),
            stderr: String::from_utf8(out.stderr).unwrap(),
        }
    }

    /// `retalk init`: creates the identity and registers it on the relay.
    fn init(&mut self) {
        let out = self.ok(&["init"]);
        let fp = out.stdout.trim_end_matches('\n');
        assert_eq!(out.stdout, format!("{fp}\n"));
        assert!(
            fp.len() == 32
                && fp
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
            "not a user id: {fp:?}"
        );
        self.fp = fp.to_owned();
        for line in [
            format!(
                "\n✓ Registered on {} — peers can message you.\n",
                self.relay
            ),
            format!(
                "\nName:        {}\nPath:        ~/{}\nFingerprint: {}\nRelay:       {}\n",
                self.name, self.name, self.fp, self.relay
            ),
        ] {
            assert!(
                out.stderr.contains(&line),
                "{line:?} not in:\n{}",
                out.stderr
            );
        }
        assert!(!out.stderr.contains("NOT registered"), "{}", out.stderr);
        // init kept our config.json (it seeds the packaged one, naming a
        // public relay, only into a home that has none).
        assert_eq!(
            std::fs::read_to_string(self.home.join("config.json")).unwrap(),
            format!("{}\n", json!({ "relay": self.relay }))
        );
    }

    /// `retalk add FP --peer NAME --verify`, with its exact report.
    fn add_verified(&self, other: &PyUser) {
        let out = self.ok(&["add", &other.fp, "--peer", &other.name, "--verify"]);
        assert_eq!(out.stdout, "");
        let (me, peer, fp) = (&self.name, &other.name, &other.fp);
        assert_eq!(
            out.stderr,
            format!(
                "Added contact '{peer}' ({fp}) in your contacts.\n\
                 \n✓ Verified {peer}\n\
                 \nName:        {peer}\n\
                 Fingerprint: {fp}\n\
                 Keys:        from the relay\n\
                 Saved to:    {me}'s contacts\n\
                 Signed by:   {me}\n\
                 \n```bash\n\
                 # message them:\n\
                 # RETALK_USER picks the identity that sends:\n\
                 export RETALK_USER={me}\n\
                 retalk send --peer {peer} \"hello\"\n\
                 retalk receive --peer {peer} --follow\n\
                 # receive --follow reads replies live -- ctrl-c to stop\n\
                 ```\n"
            )
        );
    }

    /// `retalk send --peer PEER TEXT`; returns the message id.
    fn send(&self, peer: &str, to: &PyUser, text: &str) -> String {
        let out = self.ok(&["send", "--peer", peer, text]);
        let receipt: Value = serde_json::from_str(&out.stdout).unwrap();
        let id = receipt["id"].as_str().unwrap().to_owned();
        assert_eq!(
            out.stdout,
            format!("{{\"id\": \"{id}\", \"to\": \"{}\"}}\n", to.fp)
        );
        assert_eq!(id.len(), 32, "{id}");
        assert_eq!(out.stderr, format!("{}sent to {peer}\n", self.banner()));
        id
    }

    /// `retalk receive --peer PEER`; returns stdout (NDJSON).
    fn receive(&self, peer: &str) -> String {
        let out = self.ok(&["receive", "--peer", peer]);
        assert_eq!(out.stderr, self.banner());
        out.stdout
    }

    /// `retalk sync`; checks the banner, returns both outputs.
    fn sync(&self) -> Out {
        let out = self.ok(&["sync"]);
        assert!(out.stderr.starts_with(&self.banner()), "{}", out.stderr);
        out
    }

    /// Rows of this identity's store.
    fn table(&self, query: &str) -> Value {
        sql(&self.python, &self.store(), query, &[])
    }
}

/// One line of `retalk receive` output, as Python's `json.dumps` prints it.
fn message_line(id: &str, from: &PyUser, name: &str, text_json: &str) -> String {
    format!(
        "{{\"id\": \"{id}\", \"from\": \"{}\", \"name\": \"{name}\", \"text\": \"{text_json}\"}}\n",
        from.fp
    )
}

/// `sync`'s summary line, as Python's `json.dumps` prints it.
fn summary(
    unclaimed: u64,
    republished: bool,
    replenished: bool,
    rotated: bool,
    resent: u64,
) -> String {
    format!(
        "{{\"unclaimed\": {unclaimed}, \"republished\": {republished}, \"replenished\": \
         {replenished}, \"fallback_rotated\": {rotated}, \"resent\": {resent}}}\n"
    )
}

/// Python 0.3.0, our relay (in process, configured by `f`) on `relay.db`
/// in `tmp`, and alice and bob initialised on it, alice having added bob
/// (verified).
async fn alice_and_bob(
    tmp: &Path,
    f: impl FnOnce(&mut retalk_relay::Config),
) -> (PathBuf, RelayServer, PathBuf, PyUser, PyUser) {
    let python = python_with_retalk("0.3.0");
    let db = tmp.join("relay.db");
    let server = sqlite_relay(&db, f).await;
    let (alice, bob) = init_alice_and_bob(&python, tmp, server.url(), server.url());
    (python, server, db, alice, bob)
}

/// alice (on `alice_url`) and bob (on `bob_url`) initialised, alice having
/// added bob (verified).
fn init_alice_and_bob(
    python: &Path,
    tmp: &Path,
    alice_url: &str,
    bob_url: &str,
) -> (PyUser, PyUser) {
    let mut alice = PyUser::new(python, tmp, "alice", alice_url);
    let mut bob = PyUser::new(python, tmp, "bob", bob_url);
    alice.init();
    bob.init();
    alice.add_verified(&bob);
    (alice, bob)
}

/// Relay rows of `messages`: [sender, recipient, mtype, body] in order.
fn relay_messages(python: &Path, db: &Path) -> Vec<(String, String, i64, String)> {
    let rows = sql(
        python,
        db,
        "SELECT sender, recipient, mtype, body FROM messages ORDER BY id",
        &[],
    );
    rows.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r[0].as_str().unwrap().to_owned(),
                r[1].as_str().unwrap().to_owned(),
                r[2].as_i64().unwrap(),
                r[3].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn unclaimed_otks(python: &Path, db: &Path, fp: &str) -> Value {
    sql(
        python,
        db,
        "SELECT COUNT(*) FROM otks WHERE owner=? AND claimed=0",
        &[fp],
    )
}

/// The 0.3.0 quickstart, two users with their own homes: init, add
/// --verify, send, receive, both ways, down to empty outboxes and an empty
/// relay mailbox.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quickstart_init_add_verify_send_receive() {
    let python = python_with_retalk("0.3.0");
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("relay.db");
    let server = sqlite_relay(&db, |_| {}).await;
    let url = server.url().to_owned();
    let mut alice = PyUser::new(&python, tmp.path(), "alice", &url);
    let mut bob = PyUser::new(&python, tmp.path(), "bob", &url);
    alice.init();
    bob.init();
    assert_ne!(alice.fp, bob.fp);

    // init registered both: keys, a fallback key and 100 one-time keys.
    for u in [&alice, &bob] {
        let row = sql(
            &python,
            &db,
            "SELECT fallback_key IS NOT NULL AND fallback_key != '' FROM users WHERE id=?",
            &[&u.fp],
        );
        assert_eq!(row, json!([[1]]), "{}", u.name);
        assert_eq!(unclaimed_otks(&python, &db, &u.fp), json!([[100]]));
    }

    alice.add_verified(&bob);
    bob.add_verified(&alice);
    // The pinned keys are the ones the relay holds, which hash to the id.
    let keys = sql(
        &python,
        &db,
        "SELECT identity_key, signing_key FROM users WHERE id=?",
        &[&bob.fp],
    );
    assert_eq!(
        alice.table("SELECT fingerprint, name, identity_key, signing_key FROM peers"),
        json!([[bob.fp, "bob", keys[0][0], keys[0][1]]])
    );

    let hello = alice.send("bob", &bob, "hello bob \u{2603}");
    let queued = relay_messages(&python, &db);
    assert_eq!(queued.len(), 1);
    assert_eq!(
        (&queued[0].0, &queued[0].1, queued[0].2),
        (&alice.fp, &bob.fp, 0)
    );
    assert_eq!(
        alice.table("SELECT id, peer, body FROM outbox"),
        json!([[hello, bob.fp, queued[0].3]])
    );
    // The first message claimed one of bob's one-time keys.
    assert_eq!(unclaimed_otks(&python, &db, &bob.fp), json!([[99]]));

    assert_eq!(
        bob.receive("alice"),
        message_line(&hello, &alice, "alice", "hello bob \\u2603")
    );
    // Bob's ack is the only mail left, for alice.
    let queued = relay_messages(&python, &db);
    assert_eq!(queued.len(), 1);
    assert_eq!((&queued[0].0, &queued[0].1), (&bob.fp, &alice.fp));

    let reply = bob.send("alice", &alice, "hi alice, got it");
    assert_eq!(
        alice.receive("bob"),
        message_line(&reply, &bob, "bob", "hi alice, got it")
    );
    // Alice's hello was acknowledged: her outbox is empty.
    assert_eq!(alice.table("SELECT COUNT(*) FROM outbox"), json!([[0]]));
    // Bob reads alice's ack of his reply: nothing to print.
    assert_eq!(bob.receive("alice"), "");
    assert_eq!(bob.table("SELECT COUNT(*) FROM outbox"), json!([[0]]));
    assert!(relay_messages(&python, &db).is_empty());

    // Nothing else reads once the mail is gone.
    assert_eq!(alice.receive("bob"), "");
    server.shutdown().await;
}

/// `retalk sync` re-sends what is still unacknowledged (the recipient
/// drops the duplicate), reports "up to date" once the ack is in, and
/// republishes keys, one-time keys and a fallback key when the relay has
/// forgotten the user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_resends_the_outbox_and_republishes_forgotten_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let (python, server, db, alice, bob) = alice_and_bob(tmp.path(), |_| {}).await;

    let first = alice.send("bob", &bob, "first");
    let out = alice.sync();
    assert_eq!(out.stdout, summary(100, false, false, false, 1));
    assert_eq!(out.stderr, format!("{}synced (resent=1)\n", alice.banner()));
    // The same ciphertext twice in bob's mailbox.
    let queued = relay_messages(&python, &db);
    let body = alice.table("SELECT body FROM outbox")[0][0].clone();
    assert_eq!(queued.len(), 2);
    for m in &queued {
        assert_eq!(
            (&m.0, &m.1, m.2, json!(m.3)),
            (&alice.fp, &bob.fp, 0, body.clone())
        );
    }

    // Bob (who never added alice: her name shows as unverified) reads it
    // once; the resent copy is only re-acknowledged.
    assert_eq!(
        bob.receive(&alice.fp),
        message_line(&first, &alice, "~alice", "first")
    );
    assert_eq!(alice.receive("bob"), "");
    assert_eq!(alice.table("SELECT COUNT(*) FROM outbox"), json!([[0]]));
    let out = alice.sync();
    assert_eq!(out.stdout, summary(100, false, false, false, 0));
    assert_eq!(
        out.stderr,
        format!("{}synced (up to date)\n", alice.banner())
    );
    assert!(relay_messages(&python, &db).is_empty());

    // The relay loses alice (as after a reset): sync publishes everything
    // again.
    sql(&python, &db, "DELETE FROM users WHERE id=?", &[&alice.fp]);
    sql(&python, &db, "DELETE FROM otks WHERE owner=?", &[&alice.fp]);
    let out = alice.sync();
    assert_eq!(out.stdout, summary(0, true, true, true, 0));
    assert_eq!(
        out.stderr,
        format!(
            "{}synced (republished, replenished, fallback_rotated)\n",
            alice.banner()
        )
    );
    assert_eq!(unclaimed_otks(&python, &db, &alice.fp), json!([[100]]));
    let out = alice.sync();
    assert_eq!(out.stdout, summary(100, false, false, false, 0));
    server.shutdown().await;
}

/// Bob blocks alice; his `receive` refuses her message with a signed nack
/// (the relay's `nack` tool); alice's next `sync` resends it, gets the
/// relay's refusal with bob's signature, drops it from her outbox (and her
/// session with bob) and never resends it again; bob never sees it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_nacks_and_stops_the_senders_resends() {
    let tmp = tempfile::tempdir().unwrap();
    let (python, server, db, alice, bob) = alice_and_bob(tmp.path(), |_| {}).await;

    let out = bob.ok(&["block", &alice.fp]);
    assert_eq!(out.stdout, "");
    assert_eq!(out.stderr, format!("blocked {0} ({0})\n", alice.fp));
    assert_eq!(
        bob.ok(&["block", "--list"]).stdout,
        format!("{}\n", alice.fp)
    );

    alice.send("bob", &bob, "can you hear me?");
    let body = alice.table("SELECT body FROM outbox")[0][0]
        .as_str()
        .unwrap()
        .to_owned();
    let hash = sha256_hex(&body);
    assert_eq!(
        relay_messages(&python, &db),
        [(alice.fp.clone(), bob.fp.clone(), 0, body.clone())]
    );
    assert_eq!(alice.table("SELECT COUNT(*) FROM sessions"), json!([[1]]));

    // Bob's receive takes the message off the relay and nacks it unread.
    assert_eq!(bob.receive(&alice.fp), "");
    assert!(relay_messages(&python, &db).is_empty());
    let refused = sql(
        &python,
        &db,
        "SELECT recipient, hash, length(sig) > 0 FROM refused",
        &[],
    );
    assert_eq!(refused, json!([[bob.fp, hash, 1]]));

    // Alice's resend is refused with bob's signature: dropped, not resent.
    for _ in 0..2 {
        let out = alice.sync();
        assert_eq!(out.stdout, summary(100, false, false, false, 0));
        assert_eq!(
            out.stderr,
            format!("{}synced (up to date)\n", alice.banner())
        );
        assert_eq!(alice.table("SELECT COUNT(*) FROM outbox"), json!([[0]]));
        assert_eq!(alice.table("SELECT COUNT(*) FROM sessions"), json!([[0]]));
        assert!(relay_messages(&python, &db).is_empty());
    }
    assert_eq!(bob.receive(&alice.fp), "");
    server.shutdown().await;
}

/// With a mailbox cap of 3, an offline bob's mailbox fills (the second
/// send already re-sends the first, unacknowledged message); the next
/// send is refused with the relay's exact words and exit status 2, the
/// mailbox holds exactly 3, and once bob has read, the send goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_mailbox_refuses_the_sender_with_the_relays_words() {
    let tmp = tempfile::tempdir().unwrap();
    let (python, server, db, alice, bob) = alice_and_bob(tmp.path(), |c| c.max_mailbox = 3).await;

    let one = alice.send("bob", &bob, "one");
    let two = alice.send("bob", &bob, "two");
    let out = alice.fails(&["send", "--peer", "bob", "three"], 2);
    assert_eq!(out.stdout, "");
    assert_eq!(
        out.stderr,
        format!(
            "{}[retalk] server error from send_message: mailbox full: {} has 3 \
             undelivered messages (cap 3); resend later from your outbox\n",
            alice.banner(),
            bob.fp
        )
    );
    let outbox = alice.table("SELECT id, body FROM outbox ORDER BY ts");
    assert_eq!(outbox.as_array().unwrap().len(), 2);
    assert_eq!((&outbox[0][0], &outbox[1][0]), (&json!(one), &json!(two)));
    let bodies: Vec<Value> = relay_messages(&python, &db)
        .into_iter()
        .map(|m| {
            assert_eq!((&m.0, &m.1), (&alice.fp, &bob.fp));
            json!(m.3)
        })
        .collect();
    assert_eq!(
        bodies,
        [
            outbox[0][1].clone(),
            outbox[0][1].clone(),
            outbox[1][1].clone()
        ]
    );

    assert_eq!(
        bob.receive(&alice.fp),
        message_line(&one, &alice, "~alice", "one") + &message_line(&two, &alice, "~alice", "two")
    );
    // Bob's three acks (one a re-ack of the duplicate) fill alice's mailbox
    // in turn: acks count against the cap like any message.
    let queued = relay_messages(&python, &db);
    assert_eq!(queued.len(), 3);
    assert!(queued.iter().all(|m| (&m.0, &m.1) == (&bob.fp, &alice.fp)));
    assert_eq!(alice.receive("bob"), "");
    assert_eq!(alice.table("SELECT COUNT(*) FROM outbox"), json!([[0]]));
    assert!(relay_messages(&python, &db).is_empty());

    // Now the refused message goes through.
    let three = alice.send("bob", &bob, "three");
    assert_eq!(relay_messages(&python, &db).len(), 1);
    assert_eq!(
        bob.receive(&alice.fp),
        message_line(&three, &alice, "~alice", "three")
    );
    server.shutdown().await;
}

/// Starts the binary on `db` and a free port of 127.0.0.1 with the
/// audiences `audiences(port)`, its environment cleared; returns it and the
/// port.
fn spawn_relay(db: &Path, audiences: impl Fn(u16) -> String) -> (RelayProcess, u16) {
    // The port must be known before the start, for the audiences: take a
    // free one, and try another if it was taken in between.
    for _ in 0..5 {
        let port = free_port();
        let relay = RelayProcess::spawn(
            relay_command()
                .args(["--host", "127.0.0.1", "--port", &port.to_string()])
                .arg("--db")
                .arg(db)
                .args(["--audience", &audiences(port)])
                .env_clear()
                .stderr(Stdio::null()),
        );
        if let Some(relay) = relay {
            return (relay, port);
        }
    }
    panic!("the relay binary did not start on any of 5 free ports");
}

/// A relay accepting two audiences: alice signs for
/// `http://127.0.0.1:PORT`, bob for `http://localhost:PORT`, and they talk;
/// a request signed for any other URL, even one reaching the same socket,
/// is refused with the exact error.
#[tokio::test]
async fn two_audiences_serve_both_urls_and_refuse_a_third() {
    let python = python_with_retalk("0.3.0");
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("relay.db");
    let (relay, port) = spawn_relay(&db, |port| {
        format!("http://127.0.0.1:{port},http://localhost:{port}")
    });
    let by_ip = format!("http://127.0.0.1:{port}");
    let by_name = format!("http://localhost:{port}");
    assert_eq!(
        relay.lines[..2],
        [
            format!("retalk-relay listening on http://127.0.0.1:{port}"),
            format!("retalk-relay audiences: {by_ip}, {by_name}")
        ]
    );

    let (alice, bob) = init_alice_and_bob(&python, tmp.path(), &by_ip, &by_name);
    bob.add_verified(&alice);
    let hello = alice.send("bob", &bob, "over 127.0.0.1");
    assert_eq!(
        bob.receive("alice"),
        message_line(&hello, &alice, "alice", "over 127.0.0.1")
    );
    let reply = bob.send("alice", &alice, "over localhost");
    assert_eq!(
        alice.receive("bob"),
        message_line(&reply, &bob, "bob", "over localhost")
    );
    assert_eq!(bob.receive("alice"), "");
    assert!(relay_messages(&python, &db).is_empty());

    // The same socket under a URL that is not an audience (a trailing
    // slash): every signature is refused.
    let out = alice.fails(&["sync", "--relay", &format!("{by_ip}/")], 2);
    assert_eq!(out.stdout, "");
    assert_eq!(
        out.stderr,
        format!(
            "{}[retalk] server error from count_keys: bad signature (wrong key, \
             audience, or argument canonicalization)\n",
            alice.banner()
        )
    );

    // And on the wire: signed for either audience it is answered, for a
    // third it is a 400 with the relay's error.
    let addr = relay.addr;
    let peer = Peer::new();
    for audience in [&by_ip, &by_name] {
        let a = post(addr, &peer.body(&Args::CountKeys, audience)).await;
        assert_eq!(a.status, 200, "{audience}");
        assert_eq!(a.json(), json!({"unclaimed": 0, "has_fallback": false}));
    }
    let a = post(addr, &peer.body(&Args::CountKeys, "http://relay.example")).await;
    assert_eq!(a.status, 400);
    assert_eq!(
        a.json(),
        json!({"error": "bad signature (wrong key, audience, or argument canonicalization)"})
    );
}
