//! Acceptance against the real Python retalk 0.0.1 library (from PyPI, in
//! a cached venv): Python users publish, talk, refuse substituted keys,
//! fall back, maintain their keys, migrate, recover their outbox, and have
//! their signed requests replayed, aged and re-aimed - all through our
//! relay on a real SQLite file. Last, the README's two-minute demo with
//! the Python command line against our relay binary.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use base64::Engine as _;
use common::{call, relay_command, sqlite_relay, Answer, PyUser, RelayProcess};
use retalk_relay::RelayServer;
use retalk_testkit::python::{free_port, python_with_retalk, signal, wait_exit, Cli};
use serde_json::{json, Value};

/// One operation of a Python 0.0.1 user:
/// `script URL STORE NAME MODE OFFSET CMD ARGS...`.
///
/// Every relay call goes through a spy on `User._call_raw` that records the
/// exact body the library posts (and the answer); in mode `hold` the body
/// is recorded but not sent. OFFSET (seconds) shifts the library's clock.
/// Prints `{"ok": result, "calls": [...]}` or, when the library raises,
/// `{"raised": class, "message": str(exception), "calls": [...]}`.
const USER: &str = r#"
import json, sys, time as _time
import retalk.user as ru
from retalk.user import User

url, store, name, mode, offset, cmd, *rest = sys.argv[1:]
offset = float(offset)
if offset:
    class _Clock:
        @staticmethod
        def time():
            return _time.time() + offset
    ru.time = _Clock

calls = []
_raw = User._call_raw
def _spy(self, tool, wire):
    entry = {"tool": tool, "body": json.dumps({"tool": tool, "args": wire})}
    calls.append(entry)
    if mode == "hold":
        entry["response"] = None
        return {}
    entry["response"] = _raw(self, tool, wire)
    return entry["response"]
User._call_raw = _spy

u = User(url, "secret of " + name, name=name, store=store)

def run():
    if cmd == "publish":
        u.publish(int(rest[0]))
        return u.user_id()
    if cmd == "keys":
        acct = u._load_account()
        return [u.user_id(), acct.curve25519_key.to_base64(), acct.ed25519_key.to_base64()]
    if cmd == "call":
        return u._call(rest[0], json.loads(rest[1]))
    if cmd == "send":
        return u.send(rest[0], rest[1])
    if cmd == "receive":
        return [list(m) for m in u.receive()]
    if cmd == "maintain":
        return u.maintain(resend_after=float(rest[0]))
    if cmd == "flush":
        return u.flush_outbox()
    if cmd == "outbox":
        return [list(r) for r in u._fetchall("SELECT peer, mtype, body FROM outbox ORDER BY ts")]
    if cmd == "drain":
        out = []
        for _ in range(1000):
            c = u._call("claim_key", {"peer": rest[0]})
            out.append([c["key_id"], c["fallback"]])
            if c["fallback"]:
                return out
        raise RuntimeError("never reached the fallback key")
    raise SystemExit("unknown command " + cmd)

try:
    result = {"ok": run()}
except Exception as e:
    result = {"raised": type(e).__name__, "message": str(e)}
result["calls"] = calls
print(json.dumps(result))
"#;

/// The rows of `query` on the SQLite file `db` (see [`common::sql`]).
fn sql(python: &Path, db: &Path, query: &str, params: Value) -> Vec<Vec<Value>> {
    serde_json::from_value(common::sql(python, db, query, params)).unwrap()
}

fn count(python: &Path, db: &Path, query: &str, params: Value) -> i64 {
    let rows = sql(python, db, query, params);
    rows[0][0].as_i64().unwrap()
}

/// Messages the relay holds.
fn held(python: &Path, db: &Path) -> i64 {
    count(python, db, "SELECT COUNT(*) FROM messages", json!([]))
}

/// The relay's row for `id`: `[[fallback_key_id]]`.
fn fallback_key_id(python: &Path, db: &Path, id: &str) -> Vec<Vec<Value>> {
    let query = "SELECT fallback_key_id FROM users WHERE id = ?";
    sql(python, db, query, json!([id]))
}

/// Python 0.0.1 and a temp dir, with our relay on the file `db` there.
fn our_relay_on(db: &str) -> (PathBuf, tempfile::TempDir, PathBuf, OurRelay) {
    let python = python_with_retalk("0.0.1");
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join(db);
    let relay = OurRelay::start(&db);
    (python, dir, db, relay)
}

/// Python users `names` (their stores in `dir`) on `url`.
fn users<const N: usize>(python: &Path, url: &str, dir: &Path, names: [&str; N]) -> [PyUser; N] {
    names.map(|name| PyUser::new(python, url, dir, name))
}

/// What the library raised.
#[derive(Debug, PartialEq)]
struct Raised {
    class: String,
    message: String,
}

impl PyUser {
    /// The script's whole answer.
    fn exec(&self, mode: &str, offset: i64, cmd: &str, args: &[&str]) -> Value {
        let offset = offset.to_string();
        let mut all = vec![mode, &offset, cmd];
        all.extend(args);
        serde_json::from_str(self.script(USER, &all).trim()).unwrap()
    }

    fn attempt(&self, cmd: &str, args: &[&str]) -> Result<Value, Raised> {
        let v = self.exec("live", 0, cmd, args);
        match v.get("raised") {
            None => Ok(v["ok"].clone()),
            Some(class) => Err(Raised {
                class: class.as_str().unwrap().into(),
                message: v["message"].as_str().unwrap().into(),
            }),
        }
    }

    fn ok(&self, cmd: &str, args: &[&str]) -> Value {
        self.attempt(cmd, args)
            .unwrap_or_else(|e| panic!("{} {cmd} {args:?} raised {e:?}", self.name))
    }

    /// Publishes `n` fresh one-time keys (and a fallback key the first
    /// time); returns the user id.
    fn publish(&self, n: usize) -> String {
        self.ok("publish", &[&n.to_string()])
            .as_str()
            .unwrap()
            .into()
    }

    /// (user id, identity key, signing key).
    fn keys(&self) -> (String, String, String) {
        let v = self.ok("keys", &[]);
        let s = |i: usize| v[i].as_str().unwrap().to_owned();
        (s(0), s(1), s(2))
    }

    fn send(&self, to: &str, text: &str) -> Value {
        self.ok("send", &[to, text])
    }

    /// (sender id, displayed name, text) per message.
    fn receive(&self) -> Vec<(String, String, String)> {
        serde_json::from_value(self.ok("receive", &[])).unwrap()
    }

    fn count_keys(&self) -> Value {
        self.ok("call", &["count_keys", "{}"])
    }

    /// (peer, mtype) of every unacknowledged outbox entry, oldest first.
    fn outbox(&self) -> Vec<(String, i64)> {
        self.ok("outbox", &[])
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r[0].as_str().unwrap().to_owned(), r[1].as_i64().unwrap()))
            .collect()
    }

    /// The body the library would post for `tool(args)` with its clock
    /// shifted by `offset` seconds; not sent.
    fn held_body(&self, tool: &str, args: Value, offset: i64) -> String {
        let args = args.to_string();
        let v = self.exec("hold", offset, "call", &[tool, &args]);
        let calls = v["calls"].as_array().unwrap();
        assert_eq!(calls.len(), 1, "{v}");
        calls[0]["body"].as_str().unwrap().to_owned()
    }
}

/// Our relay, in-process on an SQLite file, serving real HTTP on its own
/// runtime (the test thread blocks on Python meanwhile).
struct OurRelay {
    rt: tokio::runtime::Runtime,
    server: Option<RelayServer>,
    addr: SocketAddr,
    url: String,
    db: PathBuf,
}

impl OurRelay {
    fn start(db: &Path) -> OurRelay {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let server = Self::serve(&rt, db, 0, None);
        OurRelay {
            addr: server.local_addr(),
            url: server.url().to_owned(),
            server: Some(server),
            rt,
            db: db.to_path_buf(),
        }
    }

    fn serve(
        rt: &tokio::runtime::Runtime,
        db: &Path,
        port: u16,
        audiences: Option<Vec<String>>,
    ) -> RelayServer {
        rt.block_on(sqlite_relay(db, |c| {
            c.port = port;
            c.audiences = audiences;
        }))
    }

    /// Stops serving: the port is closed.
    fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            self.rt.block_on(server.shutdown());
        }
    }

    /// A fresh relay process-state on the same file, port and URL.
    fn restart(&mut self) {
        self.stop();
        let server = Self::serve(
            &self.rt,
            &self.db,
            self.addr.port(),
            Some(vec![self.url.clone()]),
        );
        assert_eq!(server.url(), self.url);
        self.server = Some(server);
    }

    /// Posts a body as the library does.
    fn post(&self, body: &str) -> Answer {
        self.rt.block_on(call(
            self.addr,
            "POST",
            "/",
            &[("content-type", "application/json")],
            body.as_bytes(),
        ))
    }
}

impl Drop for OurRelay {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `count_keys`' answer.
fn counts(unclaimed: u64, has_fallback: bool) -> Value {
    json!({"unclaimed": unclaimed, "has_fallback": has_fallback})
}

/// `maintain()`'s result.
fn maintained(unclaimed: u64, replenished: bool, rotated: bool, resent: u64) -> Value {
    json!({
        "unclaimed": unclaimed,
        "replenished": replenished,
        "fallback_rotated": rotated,
        "resent": resent
    })
}

fn triple(from: &str, name: &str, text: &str) -> (String, String, String) {
    (from.into(), name.into(), text.into())
}

fn relay_error(a: &Answer, text: &str) {
    assert_eq!(
        (a.status, a.json()),
        (400, json!({ "error": text })),
        "{:?}",
        String::from_utf8_lossy(&a.body)
    );
}

/// Items 1 and 2: publishing fills our relay's `users`/`otks` tables, and
/// two Python users write to each other, first and later messages.
#[test]
fn python_users_publish_and_talk_both_ways() {
    let (python, dir, db, relay) = our_relay_on("server.db");
    let [alice, bob] = users(&python, &relay.url, dir.path(), ["alice", "bob"]);

    // Alice's publish, with the relay's exact answer (0.0.1 dialect).
    let v = alice.exec("live", 0, "publish", &["100"]);
    let a = v["ok"].as_str().unwrap().to_owned();
    let calls = v["calls"].as_array().unwrap();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0]["tool"], "publish_keys");
    assert_eq!(
        calls[0]["response"],
        json!({"ok": true, "user_id": a, "one_time_keys_added": 100, "fallback_key_set": true})
    );
    let b = bob.publish(7);
    let (a_id, a_ik, a_sk) = alice.keys();
    let (b_id, b_ik, b_sk) = bob.keys();
    assert_eq!((a_id.as_str(), b_id.as_str()), (a.as_str(), b.as_str()));

    let mut users = sql(
        &python,
        &db,
        "SELECT id, identity_key, signing_key FROM users",
        json!([]),
    );
    users.sort_by_key(|r| r[0].as_str().unwrap().to_owned());
    let mut expected = vec![
        vec![json!(a), json!(a_ik), json!(a_sk)],
        vec![json!(b), json!(b_ik), json!(b_sk)],
    ];
    expected.sort_by_key(|r| r[0].as_str().unwrap().to_owned());
    assert_eq!(users, expected);
    for (id, n) in [(&a, 100), (&b, 7)] {
        assert_eq!(
            count(
                &python,
                &db,
                "SELECT COUNT(*) FROM otks WHERE owner = ? AND claimed = 0",
                json!([id])
            ),
            n
        );
        assert_eq!(
            count(
                &python,
                &db,
                "SELECT COUNT(*) FROM users WHERE id = ? AND fallback_key_id IS NOT NULL \
                 AND fallback_key IS NOT NULL",
                json!([id])
            ),
            1
        );
    }
    assert_eq!(bob.count_keys(), counts(7, true));

    // Alice -> Bob: a pre-key message; the relay holds ciphertext only.
    let text = "hello bob \u{e9}\u{2603}";
    alice.send(&b, text);
    let rows = sql(
        &python,
        &db,
        "SELECT sender, recipient, mtype, body FROM messages",
        json!([]),
    );
    assert_eq!(rows.len(), 1);
    assert_eq!(&rows[0][..3], &[json!(a), json!(b), json!(0)]);
    let body = rows[0][3].as_str().unwrap();
    assert!(!body.contains("hello"));
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .unwrap();
    assert_eq!(bob.count_keys(), counts(6, true));
    assert_eq!(bob.receive(), [triple(&a, "~alice", text)]);

    // Bob -> Alice, on the session Alice opened.
    bob.send(&a, "hi alice, got it");
    assert_eq!(alice.receive(), [triple(&b, "~bob", "hi alice, got it")]);
    // Later messages both ways are normal (mtype 1) messages.
    alice.send(&b, "second from alice");
    alice.send(&b, "third from alice");
    bob.send(&a, "second from bob");
    let mtypes = sql(
        &python,
        &db,
        "SELECT sender, mtype FROM messages ORDER BY id",
        json!([]),
    );
    // Alice's ack of Bob's reply, her two messages, Bob's: all on
    // established sessions.
    assert_eq!(
        mtypes,
        [
            vec![json!(a), json!(1)],
            vec![json!(a), json!(1)],
            vec![json!(a), json!(1)],
            vec![json!(b), json!(1)]
        ]
    );
    assert_eq!(
        bob.receive(),
        [
            triple(&a, "~alice", "second from alice"),
            triple(&a, "~alice", "third from alice")
        ]
    );
    assert_eq!(alice.receive(), [triple(&b, "~bob", "second from bob")]);
    // The last acks travel; then both outboxes are empty and so is the
    // relay.
    assert_eq!(bob.receive(), []);
    assert_eq!(alice.outbox(), []);
    assert_eq!(bob.outbox(), []);
    assert_eq!(held(&python, &db), 0);
}

/// Item 3: the relay's `users` row for Bob is edited to carry Carol's keys;
/// Alice's first send to Bob refuses with PIN MISMATCH, nothing is sent.
#[test]
fn python_sender_refuses_substituted_keys_with_pin_mismatch() {
    let (python, dir, db, relay) = our_relay_on("server.db");
    let [alice, bob, carol] = users(&python, &relay.url, dir.path(), ["alice", "bob", "carol"]);
    let a = alice.publish(5);
    let b = bob.publish(5);
    let (c, c_ik, c_sk) = {
        carol.publish(5);
        carol.keys()
    };

    // The hostile operator, with sqlite on the live database.
    sql(
        &python,
        &db,
        "UPDATE users SET identity_key = ?, signing_key = ? WHERE id = ?",
        json!([c_ik, c_sk, b]),
    );
    let err = alice.attempt("send", &[&b, "for bob only"]).unwrap_err();
    assert_eq!(
        err,
        Raised {
            class: "PinMismatchError".into(),
            message: format!(
                "PIN MISMATCH for peer '{b}': server served keys whose fingerprint is \
                 '{c}'. Possible MITM by the server \u{2014} refusing to establish a session."
            ),
        }
    );
    // The relay did hand out one of Bob's keys, with Carol's identity
    // (our relay deletes a claimed key rather than flagging it)...
    assert_eq!(
        count(
            &python,
            &db,
            "SELECT COUNT(*) FROM otks WHERE owner = ? AND claimed = 0",
            json!([b])
        ),
        4
    );
    // ...but nothing was encrypted or delivered.
    assert_eq!(alice.outbox(), []);
    assert_eq!(held(&python, &db), 0);
    assert_eq!(bob.receive(), []);
    assert_eq!(carol.receive(), []);

    // Repaired by the operator, the same send goes through.
    bob.publish(0);
    alice.send(&b, "for bob only");
    assert_eq!(bob.receive(), [triple(&a, "~alice", "for bob only")]);

    // The receiving side: Carol writes to Bob, then the operator serves
    // Alice's keys for Carol; Bob's client refuses the pre-key message.
    carol.send(&b, "from carol");
    let (_, a_ik, a_sk) = alice.keys();
    sql(
        &python,
        &db,
        "UPDATE users SET identity_key = ?, signing_key = ? WHERE id = ?",
        json!([a_ik, a_sk, c]),
    );
    assert_eq!(
        bob.attempt("receive", &[]).unwrap_err(),
        Raised {
            class: "PinMismatchError".into(),
            message: format!(
                "PIN MISMATCH for peer '{c}': server served keys whose fingerprint is \
                 '{a}'. Possible MITM by the server \u{2014} refusing to establish a session."
            ),
        }
    );
}

/// Item 4: with every one-time key claimed, new peers open sessions on
/// Bob's fallback key (reusable), and Bob decrypts them.
#[test]
fn drained_one_time_keys_fall_back_and_still_decrypt() {
    let (python, dir, db, relay) = our_relay_on("server.db");
    let [alice, bob, dave, drainer] = users(
        &python,
        &relay.url,
        dir.path(),
        ["alice", "bob", "dave", "drainer"],
    );
    let a = alice.publish(3);
    let b = bob.publish(3);
    let d = dave.publish(3);
    drainer.publish(0);

    let claims = drainer.ok("drain", &[&b]);
    let claims: Vec<(String, bool)> = serde_json::from_value(claims).unwrap();
    let flags: Vec<bool> = claims.iter().map(|c| c.1).collect();
    assert_eq!(flags, [false, false, false, true]);
    let fallback_id = fallback_key_id(&python, &db, &b);
    assert_eq!(json!(claims[3].0), fallback_id[0][0]);
    let mut otk_ids: Vec<&String> = claims[..3].iter().map(|c| &c.0).collect();
    otk_ids.sort();
    otk_ids.dedup();
    assert_eq!(otk_ids.len(), 3);
    assert_eq!(bob.count_keys(), counts(0, true));

    // Two new peers, both on the fallback key.
    let v = alice.exec("live", 0, "send", &[&b, "via the fallback key"]);
    assert_eq!(v["calls"][0]["tool"], "claim_key");
    assert_eq!(v["calls"][0]["response"]["fallback"], json!(true));
    assert_eq!(v["calls"][0]["response"]["key_id"], json!(claims[3].0));
    dave.send(&b, "me too");
    assert_eq!(
        bob.receive(),
        [
            triple(&a, "~alice", "via the fallback key"),
            triple(&d, "~dave", "me too")
        ]
    );
    // The sessions work both ways.
    bob.send(&a, "got it");
    assert_eq!(alice.receive(), [triple(&b, "~bob", "got it")]);
}

/// Item 5: `maintain()` replenishes one-time keys below 20 and re-sets a
/// fallback key the relay lost.
#[test]
fn maintain_replenishes_one_time_keys_on_our_relay() {
    let (python, dir, db, relay) = our_relay_on("server.db");
    let [bob, alice] = users(&python, &relay.url, dir.path(), ["bob", "alice"]);
    let b = bob.publish(5);
    let a = alice.publish(0);
    // A peer uses one of them.
    alice.send(&b, "hello");
    assert_eq!(bob.count_keys(), counts(4, true));

    assert_eq!(bob.ok("maintain", &["120"]), maintained(4, true, false, 0));
    assert_eq!(bob.count_keys(), counts(104, true));
    let unclaimed = "SELECT COUNT(*) FROM otks WHERE owner = ? AND claimed = 0";
    assert_eq!(count(&python, &db, unclaimed, json!([b])), 104);
    // Healthy: nothing to do.
    assert_eq!(
        bob.ok("maintain", &["120"]),
        maintained(104, false, false, 0)
    );
    assert_eq!(count(&python, &db, unclaimed, json!([b])), 104);

    // The relay forgets the fallback key: maintain sets a new one.
    let old = fallback_key_id(&python, &db, &b);
    sql(
        &python,
        &db,
        "UPDATE users SET fallback_key_id = NULL, fallback_key = NULL WHERE id = ?",
        json!([b]),
    );
    assert_eq!(bob.count_keys(), counts(104, false));
    assert_eq!(
        bob.ok("maintain", &["120"]),
        maintained(104, false, true, 0)
    );
    assert_eq!(bob.count_keys(), counts(104, true));
    let new = fallback_key_id(&python, &db, &b);
    assert!(new[0][0].is_string());
    assert_ne!(new, old);
    // And the first message still decrypts.
    assert_eq!(bob.receive(), [triple(&a, "~alice", "hello")]);
}

/// Item 6: both users move to a second relay (another URL, so another
/// audience): they publish there, the sender's unacknowledged message is
/// flushed there, and the existing sessions keep working.
#[test]
fn python_users_migrate_to_a_second_relay() {
    let python = python_with_retalk("0.0.1");
    let dir = tempfile::tempdir().unwrap();
    let mut first = OurRelay::start(&dir.path().join("first.db"));
    let db2 = dir.path().join("second.db");
    let second = OurRelay::start(&db2);
    assert_ne!(first.url, second.url);
    let [alice, bob] = users(&python, &first.url, dir.path(), ["alice", "bob"]);
    let a = alice.publish(10);
    let b = bob.publish(10);
    alice.send(&b, "on the first relay");
    assert_eq!(bob.receive(), [triple(&a, "~alice", "on the first relay")]);
    assert_eq!(alice.receive(), []);
    assert_eq!(alice.outbox(), []);
    // This one is never read on the first relay, which then goes away.
    alice.send(&b, "lost with the first relay");
    assert_eq!(alice.outbox(), [(b.clone(), 1)]);
    first.stop();

    let alice = alice.on(&second.url);
    let bob = bob.on(&second.url);
    // The second relay knows nobody: maintain() heals (publishes).
    assert_eq!(bob.count_keys(), counts(0, false));
    assert_eq!(bob.ok("maintain", &["120"]), maintained(0, true, true, 0));
    // Alice publishes and re-sends her outbox there.
    assert_eq!(alice.ok("maintain", &["0"]), maintained(0, true, true, 1));
    let users: Vec<String> = sql(&python, &db2, "SELECT id FROM users ORDER BY id", json!([]))
        .into_iter()
        .map(|r| r[0].as_str().unwrap().to_owned())
        .collect();
    let mut both = vec![a.clone(), b.clone()];
    both.sort();
    assert_eq!(users, both);
    assert_eq!(alice.count_keys(), counts(100, true));

    assert_eq!(
        bob.receive(),
        [triple(&a, "~alice", "lost with the first relay")]
    );
    alice.send(&b, "on the second relay");
    bob.send(&a, "bob on the second relay");
    assert_eq!(bob.receive(), [triple(&a, "~alice", "on the second relay")]);
    assert_eq!(
        alice.receive(),
        [triple(&b, "~bob", "bob on the second relay")]
    );
    assert_eq!(bob.receive(), []);
    assert_eq!(alice.outbox(), []);
    assert_eq!(bob.outbox(), []);
    // No session was re-established: no one-time key was claimed there.
    assert_eq!(
        count(
            &python,
            &db2,
            "SELECT COUNT(*) FROM otks WHERE claimed = 1",
            json!([])
        ),
        0
    );
}

/// Item 7: a send while our relay is down stays in the Python outbox; once
/// the relay is back (same file, same URL), the flush delivers it exactly
/// once.
///
/// Alice has not yet read Bob's ack of her first message when the relay
/// goes down, so her outbox holds both messages and the flush re-sends
/// both: Bob drops the copy he already read (and re-acks it). (Had Alice
/// read anything from Bob in between, the 0.0.1 client would lose the
/// fresh ratchet key of the failed send - it saves the session only after
/// a successful post - and could not decrypt Bob's later messages: the
/// upstream fault PROTOCOL.md section 9 lists as number 3.)
#[test]
fn python_outbox_recovers_a_send_made_while_our_relay_was_down() {
    let (python, dir, db, mut relay) = our_relay_on("server.db");
    let [alice, bob] = users(&python, &relay.url, dir.path(), ["alice", "bob"]);
    let a = alice.publish(5);
    let b = bob.publish(5);
    alice.send(&b, "first");
    assert_eq!(bob.receive(), [triple(&a, "~alice", "first")]);
    assert_eq!(alice.outbox(), [(b.clone(), 0)]);

    relay.stop();
    let err = alice.attempt("send", &[&b, "while the relay was down"]);
    assert_eq!(
        err.unwrap_err(),
        Raised {
            class: "URLError".into(),
            message: "<urlopen error [Errno 111] Connection refused>".into(),
        }
    );
    assert_eq!(alice.outbox(), [(b.clone(), 0), (b.clone(), 0)]);

    relay.restart();
    // Only Bob's ack of "first" is queued, for Alice.
    let queued = "SELECT sender, recipient FROM messages ORDER BY id";
    assert_eq!(sql(&python, &db, queued, json!([])), [[json!(b), json!(a)]]);
    assert_eq!(bob.receive(), []);
    assert_eq!(alice.ok("flush", &[]), json!(2));
    assert_eq!(
        sql(&python, &db, queued, json!([])),
        [
            [json!(b), json!(a)],
            [json!(a), json!(b)],
            [json!(a), json!(b)]
        ]
    );
    assert_eq!(
        bob.receive(),
        [triple(&a, "~alice", "while the relay was down")]
    );
    // Bob's acks (and his re-ack of "first") empty Alice's outbox: nothing
    // more is re-sent.
    assert_eq!(alice.receive(), []);
    assert_eq!(alice.outbox(), []);
    assert_eq!(alice.ok("flush", &[]), json!(0));
    assert_eq!(bob.receive(), []);
    assert_eq!(held(&python, &db), 0);
}

/// Item 8: bodies exactly as the Python library posts them, replayed (also
/// after a relay restart), aged, and aimed at another relay.
#[test]
fn replayed_stale_and_cross_relay_python_requests_are_rejected() {
    let (python, dir, db, mut relay_a) = our_relay_on("a.db");
    let relay_b = OurRelay::start(&dir.path().join("b.db"));
    let [alice, bob] = users(&python, &relay_a.url, dir.path(), ["alice", "bob"]);
    let a = alice.publish(4);
    let b = bob.publish(4);

    // A real send, recorded on its way out.
    let v = alice.exec("live", 0, "send", &[&b, "exactly once"]);
    let calls = v["calls"].as_array().unwrap();
    let tools: Vec<&str> = calls.iter().map(|c| c["tool"].as_str().unwrap()).collect();
    assert_eq!(tools, ["claim_key", "send_message"]);
    let sent = calls[1]["body"].as_str().unwrap();
    let replay = "replay detected: nonce already used";
    relay_error(&relay_a.post(sent), replay);
    // Replay protection survives a restart of the relay on its file.
    relay_a.restart();
    relay_error(&relay_a.post(sent), replay);
    assert_eq!(held(&python, &db), 1);
    assert_eq!(bob.receive(), [triple(&a, "~alice", "exactly once")]);

    // A held count_keys body: accepted once, then a replay.
    let fresh = alice.held_body("count_keys", json!({}), 0);
    let answer = relay_a.post(&fresh);
    assert_eq!((answer.status, answer.json()), (200, counts(4, true)));
    relay_error(&relay_a.post(&fresh), replay);

    // Signed 200 s in the past or in the future.
    let stale = "stale or future timestamp (check the clock)";
    for offset in [-200, 200] {
        let body = alice.held_body("count_keys", json!({}), offset);
        let ts: i64 = serde_json::from_str::<Value>(&body).unwrap()["args"]["auth"]["ts"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        assert!((ts - now - offset).abs() <= 5, "{ts} {now} {offset}");
        relay_error(&relay_a.post(&body), stale);
    }

    // Signed for relay A, posted to relay B: refused there, before the
    // nonce is spent, so A still takes it.
    let for_a = bob.held_body("count_keys", json!({}), 0);
    relay_error(
        &relay_b.post(&for_a),
        "bad signature (wrong key, audience, or argument canonicalization)",
    );
    let answer = relay_a.post(&for_a);
    assert_eq!((answer.status, answer.json()), (200, counts(3, true)));
    // A send signed for A, posted to B: nothing is stored on B.
    let to_b = alice.held_body(
        "send_message",
        json!({"to": b, "mtype": 1, "body": "AAAA"}),
        0,
    );
    relay_error(
        &relay_b.post(&to_b),
        "bad signature (wrong key, audience, or argument canonicalization)",
    );

    // Another user's id on Alice's keys.
    let mut forged: Value =
        serde_json::from_str(&alice.held_body("count_keys", json!({}), 0)).unwrap();
    forged["args"]["auth"]["user_id"] = json!(b);
    relay_error(
        &relay_a.post(&forged.to_string()),
        "auth keys do not hash to user_id",
    );
}

/// The relay binary as `retalk-server` is started in the README, with the
/// 0.0.1 variable names.
fn readme_relay(dir: &Path, port: u16) -> RelayProcess {
    let relay = RelayProcess::start(
        relay_command()
            .current_dir(dir)
            .env_remove("RETALK_SERVER_DB")
            .env_remove("RETALK_SERVER_HOST")
            .env_remove("RETALK_SERVER_PORT")
            .env_remove("RETALK_SERVER_AUDIENCE")
            .env("SERVER_AUDIENCE", format!("http://127.0.0.1:{port}"))
            .env("SERVER_HOST", "127.0.0.1")
            .env("SERVER_PORT", port.to_string())
            .stderr(Stdio::null()),
    );
    assert_eq!(
        relay.lines[0],
        format!("retalk-relay listening on http://127.0.0.1:{port}")
    );
    relay
}

/// The README's "Two-minute local demo", verbatim but for the port: the
/// Python 0.0.1 `retalk` command line, our relay binary for the server.
#[test]
fn readme_two_minute_demo_with_our_relay() {
    let python = python_with_retalk("0.0.1");
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    let port = free_port();
    let mut relay = readme_relay(home, port);
    let server_url = format!("http://127.0.0.1:{port}");
    let run = |secret: &str, args: &[&str]| -> String {
        Cli {
            secret: secret.into(),
            env: vec![("SERVER_URL".into(), server_url.clone())],
            ..Cli::python(&python, home)
        }
        .ok(args)
    };
    let is_id = |s: &str| s.len() == 32 && s.bytes().all(|c| c.is_ascii_hexdigit());

    let alice_id = run("alice-secret", &["init", "./alice", "--name", "alice"]);
    let bob_id = run("bob-secret", &["init", "./bob", "--name", "bob"]);
    let (alice_id, bob_id) = (alice_id.trim(), bob_id.trim());
    assert!(is_id(alice_id) && is_id(bob_id), "{alice_id} {bob_id}");
    run("alice-secret", &["add", "bob", bob_id, "-s", "./alice"]);
    run("bob-secret", &["add", "alice", alice_id, "-s", "./bob"]);

    assert_eq!(run("bob-secret", &["receive", "-s", "./bob"]), "");
    assert_eq!(
        run(
            "alice-secret",
            &["send", "bob", "hello bob", "-s", "./alice"]
        ),
        ""
    );
    assert_eq!(
        run("bob-secret", &["receive", "-s", "./bob"]),
        "alice: hello bob\n"
    );
    run(
        "bob-secret",
        &["send", "alice", "hi alice, got it", "-s", "./bob"],
    );
    assert_eq!(
        run("alice-secret", &["receive", "-s", "./alice"]),
        "bob: hi alice, got it\n"
    );

    // "To inspect what the server stored": base64 ciphertext; delivered
    // messages are gone. Left: Alice's ack of Bob's message.
    let db = home.join("server.db");
    let rows = sql(
        &python,
        &db,
        "SELECT sender, recipient, body FROM messages",
        json!([]),
    );
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(&rows[0][..2], &[json!(alice_id), json!(bob_id)]);
    base64::engine::general_purpose::STANDARD
        .decode(rows[0][2].as_str().unwrap())
        .unwrap();
    let mut stored = std::fs::read(&db).unwrap();
    if let Ok(wal) = std::fs::read(home.join("server.db-wal")) {
        stored.extend(wal);
    }
    for plain in [&b"hello bob"[..], b"hi alice"] {
        assert!(!stored.windows(plain.len()).any(|w| w == plain));
    }

    signal(&relay.child, "-TERM");
    let status = wait_exit(&mut relay.child, Duration::from_secs(10));
    assert!(status.success(), "{status:?}");
}
