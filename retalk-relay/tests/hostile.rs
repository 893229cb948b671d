#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Hostile input against the running `retalk-relay` binary (issue #6): each
//! case gets its exact status and `{"error"}` text, and afterwards the relay
//! still serves a legitimate signed request from someone else.
//!
//! Every test starts its own relay (SQLite in a temp dir, a free loopback
//! port, short timeouts) so that cases cannot disturb each other's limits.

mod common;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{call, post, relay_command, Answer, Peer, Raw, RelayProcess};
use retalk_proto::auth::{signed_text, Auth, Dialect};
use retalk_proto::canonical::args_hash;
use retalk_proto::client::{Client, MemoryStore};
use retalk_proto::ids::new_nonce;
use retalk_proto::wire::keep_signed;
use retalk_transport_http::{HttpTransport, SystemClock};
use serde_json::{json, Map, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;

// ---------- the relay under test ----------

/// A spawned relay binary; killed when dropped.
struct Relay {
    process: RelayProcess,
    addr: SocketAddr,
    url: String,
    dir: tempfile::TempDir,
}

impl Relay {
    /// Starts the binary on SQLite with `timeout` seconds for slow clients
    /// and `extra` flags.
    fn start(timeout: &str, extra: &[&str]) -> Relay {
        let dir = tempfile::tempdir().unwrap();
        let stderr = std::fs::File::create(dir.path().join("stderr.log")).unwrap();
        let process = RelayProcess::start(
            relay_command()
                .args(["--host", "127.0.0.1", "--port", "0", "--timeout", timeout])
                .arg("--db")
                .arg(dir.path().join("relay.db"))
                .args(extra)
                .stderr(stderr),
        );
        Relay {
            addr: process.addr,
            url: process.url(),
            process,
            dir,
        }
    }

    fn pid(&self) -> u32 {
        self.process.child.id()
    }

    /// A field of /proc/<pid>/status in kB (VmRSS, VmHWM).
    fn mem_kb(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {field} in /proc status"))
    }

    async fn post(&self, body: &[u8]) -> Answer {
        post(self.addr, body).await
    }

    async fn post_json(&self, body: &Value) -> Answer {
        self.post(&serde_json::to_vec(body).unwrap()).await
    }

    /// Posts `body`; requires the refusal `status` `text`.
    async fn refuses(&self, body: &Value, status: u16, text: &str) {
        refused(&self.post_json(body).await, status, text);
    }

    /// `peer` publishes its keys with these one-time keys, and a fallback
    /// key if asked.
    async fn publish(&self, peer: &Peer, otks: Map<String, Value>, fallback: bool) -> Answer {
        self.signed(peer, "publish_keys", publish_args(peer, otks, fallback))
            .await
    }

    /// `tool(args)`, freshly signed by `peer` for this relay.
    async fn signed(&self, peer: &Peer, tool: &str, args: Value) -> Answer {
        self.post_json(&signed(peer, tool, args, &self.url)).await
    }

    /// A newcomer publishes its keys and counts them: the relay still works
    /// for everyone else (and is still running).
    async fn assert_serving(&self) {
        assert!(
            self.child_alive(),
            "the relay exited; stderr: {}",
            self.stderr()
        );
        let mut peer = Peer::new();
        let publish = peer.publish_args();
        let a = self.post(&peer.body(&publish, &self.url)).await;
        assert_eq!(a.status, 200, "{:?}", String::from_utf8_lossy(&a.body));
        assert_eq!(a.json()["user_id"], peer.id.as_str());
        let a = self
            .post(&peer.body(&retalk_proto::wire::Args::CountKeys, &self.url))
            .await;
        assert_eq!(
            (a.status, a.json()),
            (200, json!({"unclaimed": 0, "has_fallback": true}))
        );
    }

    fn child_alive(&self) -> bool {
        // `try_wait` needs `&mut`; /proc tells the same without reaping.
        std::fs::read_to_string(format!("/proc/{}/stat", self.pid()))
            .map(|s| !s.contains(") Z "))
            .unwrap_or(false)
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }
}

// ---------- requests ----------

const BAD_SIG: &str = "bad signature (wrong key, audience, or argument canonicalization)";
const REPLAY: &str = "replay detected: nonce already used";
const STALE: &str = "stale or future timestamp (check the clock)";

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .try_into()
        .unwrap()
}

/// A request body for `tool` with business `args`, signed by `peer` for
/// `audience` at `ts` with `nonce`, its auth written in `dialect`.
fn signed_with(
    peer: &Peer,
    tool: &str,
    args: &Value,
    audience: &str,
    dialect: Dialect,
    ts: &str,
    nonce: &str,
) -> Value {
    let mut signed = args.as_object().unwrap().clone();
    keep_signed(tool, &mut signed);
    let hash = args_hash(&Value::Object(signed));
    let user_id = peer.id.as_str().to_owned();
    let text = signed_text(tool, audience, &user_id, ts, nonce, &hash);
    let auth = Auth {
        user_id,
        identity_key: peer.account.curve25519_key().to_base64(),
        signing_key: peer.account.ed25519_key().to_base64(),
        ts: ts.to_owned(),
        nonce: nonce.to_owned(),
        sig: peer.account.sign(text.as_bytes()).to_base64(),
    };
    let mut all = args.as_object().unwrap().clone();
    all.insert("auth".into(), auth.to_json(dialect));
    json!({"tool": tool, "args": all})
}

/// `count_keys` signed by `peer` for `audience` at `ts` with `nonce`.
fn count_keys_at(peer: &Peer, audience: &str, dialect: Dialect, ts: &str, nonce: &str) -> Value {
    signed_with(peer, "count_keys", &json!({}), audience, dialect, ts, nonce)
}

/// A fresh, correctly signed request (0.0.1 dialect).
fn signed(peer: &Peer, tool: &str, args: Value, audience: &str) -> Value {
    signed_with(
        peer,
        tool,
        &args,
        audience,
        Dialect::V001,
        &now().to_string(),
        &new_nonce(),
    )
}

/// The body's `args.auth` object, for tampering.
fn auth_of(body: &mut Value) -> &mut Map<String, Value> {
    body["args"]["auth"].as_object_mut().unwrap()
}

#[track_caller]
fn refused(a: &Answer, status: u16, text: &str) {
    assert_eq!(
        a.header("content-type"),
        Some("application/json"),
        "{:?}",
        String::from_utf8_lossy(&a.body)
    );
    assert_eq!((a.status, a.error().as_str()), (status, text));
}

/// The next answer on `raw` is the refusal `status` `text`, and then the
/// relay closes the connection (`case` names it in failures).
async fn refused_and_closed(raw: &mut Raw, status: u16, text: &str, case: &str) {
    let a = raw
        .answer()
        .await
        .unwrap_or_else(|| panic!("{case}: closed"));
    refused(&a, status, text);
    assert!(raw.closed_within(Duration::from_secs(2)).await, "{case}");
}

/// `n` one-time keys as published: vodozemac-shaped ids and keys (the relay
/// stores them as opaque strings).
fn fake_otks(n: usize, seed: u8) -> Map<String, Value> {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD_NO_PAD;
    (0..n)
        .map(|i| {
            let id = b64.encode((i as u64).to_be_bytes());
            let mut key = [seed; 32];
            key[..8].copy_from_slice(&(i as u64).to_be_bytes());
            (id, Value::String(b64.encode(key)))
        })
        .collect()
}

/// `publish_keys` args for `peer` with these one-time keys and a fallback.
fn publish_args(peer: &Peer, otks: Map<String, Value>, fallback: bool) -> Value {
    json!({
        "identity_key": peer.account.curve25519_key().to_base64(),
        "signing_key": peer.account.ed25519_key().to_base64(),
        "one_time_keys": otks,
        "fallback_key": if fallback { json!({"AAAAAAAAAAA": "F".repeat(43)}) } else { Value::Null },
    })
}

// ---------- bodies that are not requests ----------

#[tokio::test]
async fn malformed_bodies_get_exact_json_errors() {
    let relay = Relay::start("5", &[]);
    let not_json = |detail: &str| format!("bad request: body is not JSON ({detail})");
    let mut deep = vec![b'['; 100_000];
    deep.extend(vec![b']'; 100_000]);
    let mut deep_objects = b"{\"tool\":\"count_keys\",\"args\":".to_vec();
    deep_objects.extend("{\"a\":".repeat(50_000).as_bytes());
    let cases: Vec<(&str, Vec<u8>, String)> = vec![
        ("empty", b"".to_vec(), not_json("EOF while parsing a value at line 1 column 0")),
        ("text", b"hello relay".to_vec(), not_json("expected value at line 1 column 1")),
        ("form", b"tool=count_keys&args=".to_vec(), not_json("expected ident at line 1 column 2")),
        ("truncated", br#"{"tool": "count_keys", "args": {"#.to_vec(), not_json("EOF while parsing an object at line 1 column 32")),
        ("trailing", br#"{"tool": "count_keys"} {}"#.to_vec(), not_json("trailing characters at line 1 column 24")),
        ("single quotes", b"{'tool': 'count_keys'}".to_vec(), not_json("key must be a string at line 1 column 2")),
        ("NaN", br#"{"tool": NaN}"#.to_vec(), not_json("expected value at line 1 column 10")),
        ("Infinity", br#"{"tool": "nack", "args": {"x": -Infinity}}"#.to_vec(), not_json("invalid number at line 1 column 33")),
        ("deep arrays", deep, not_json("recursion limit exceeded at line 1 column 128")),
        ("deep objects", deep_objects, not_json("recursion limit exceeded at line 1 column 659")),
        ("invalid UTF-8 in a string", b"{\"tool\": \"count_\xff\xfekeys\"}".to_vec(), not_json("invalid unicode code point at line 1 column 17")),
        ("invalid UTF-8 outside strings", b"\xef\xbb\xbf{}".to_vec(), not_json("expected value at line 1 column 1")),
        ("lone surrogate", br#"{"tool": "\ud800"}"#.to_vec(), not_json("unexpected end of hex escape at line 1 column 17")),
        ("NUL", b"{\"tool\": \"a\x00b\"}".to_vec(), not_json("control character (\\u0000-\\u001F) found while parsing a string at line 1 column 12")),
        ("array", b"[1, 2, 3]".to_vec(), "bad request: body must be a JSON object".into()),
        ("string", br#""count_keys""#.to_vec(), "bad request: body must be a JSON object".into()),
        ("number", b"1e400".to_vec(), "bad request: body must be a JSON object".into()),
        ("null", b"null".to_vec(), "bad request: body must be a JSON object".into()),
        ("no tool", b"{}".to_vec(), "bad request: missing 'tool'".into()),
        ("tool null", br#"{"tool": null}"#.to_vec(), "unknown tool: \"null\"".into()),
        ("tool a number", br#"{"tool": 7}"#.to_vec(), "unknown tool: \"7\"".into()),
        ("tool a huge number", br#"{"tool": 1e400}"#.to_vec(), "unknown tool: \"1e+400\"".into()),
        ("tool an array", br#"{"tool": ["count_keys"]}"#.to_vec(), "unknown tool: \"[\\\"count_keys\\\"]\"".into()),
        ("tool an object", br#"{"tool": {"name": "count_keys"}}"#.to_vec(), "unknown tool: \"{\\\"name\\\":\\\"count_keys\\\"}\"".into()),
        ("unknown tool", br#"{"tool": "drop_tables", "args": {}}"#.to_vec(), "unknown tool: \"drop_tables\"".into()),
        ("empty tool", br#"{"tool": ""}"#.to_vec(), "unknown tool: \"\"".into()),
        ("case", br#"{"tool": "Count_Keys"}"#.to_vec(), "unknown tool: \"Count_Keys\"".into()),
        ("admin as a tool", br#"{"tool": "admin", "args": {"action": "list"}}"#.to_vec(), "unknown tool: \"admin\"".into()),
        ("long tool", format!(r#"{{"tool": "{}"}}"#, "x".repeat(5000)).into_bytes(), format!("unknown tool: \"{}\"", "x".repeat(64))),
        ("last duplicate wins", br#"{"tool": "count_keys", "tool": "rm -rf"}"#.to_vec(), "unknown tool: \"rm -rf\"".into()),
        ("args an array", br#"{"tool": "count_keys", "args": []}"#.to_vec(), "bad request: 'args' must be an object".into()),
        ("args a string", br#"{"tool": "count_keys", "args": "auth"}"#.to_vec(), "bad request: 'args' must be an object".into()),
        ("args null", br#"{"tool": "count_keys", "args": null}"#.to_vec(), "bad request: 'args' must be an object".into()),
        ("args missing", br#"{"tool": "count_keys"}"#.to_vec(), "missing required argument: 'auth'".into()),
        ("args empty", br#"{"tool": "count_keys", "args": {}}"#.to_vec(), "missing required argument: 'auth'".into()),
    ];
    let mut wrong = Vec::new();
    for (name, body, text) in cases {
        let a = relay.post(&body).await;
        if (a.status, a.error()) != (400, text.clone()) {
            wrong.push(format!(
                "{name}: got {} {:?}, want 400 {text:?}",
                a.status,
                a.error()
            ));
        }
        relay.assert_serving().await;
    }
    assert!(wrong.is_empty(), "{wrong:#?}");

    // The same garbage, 300 requests at once, while a newcomer is served.
    let addr = relay.addr;
    let burst: Vec<_> = (0..300)
        .map(|i| {
            tokio::spawn(async move {
                let body: &[u8] = match i % 3 {
                    0 => b"\xff\xfe",
                    1 => b"[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
                    _ => br#"{"tool": "count_keys", "args": {"auth": 1}}"#,
                };
                call(addr, "POST", "/", &[], body).await
            })
        })
        .collect();
    relay.assert_serving().await;
    for (i, b) in burst.into_iter().enumerate() {
        let a = b.await.unwrap();
        let want = match i % 3 {
            0 => not_json("expected value at line 1 column 1"),
            1 => not_json("EOF while parsing a list at line 1 column 28"),
            _ => "auth must be an object".into(),
        };
        assert_eq!((a.status, a.error()), (400, want));
    }
    relay.assert_serving().await;
}

#[tokio::test]
async fn arguments_of_the_wrong_shape_or_size() {
    let relay = Relay::start("5", &[]);
    let url = relay.url.as_str();
    let mallory = Peer::new();
    let to = Peer::new().id.as_str().to_owned();
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "missing peer",
            json!({}),
            "get_keys() missing required argument: 'peer'",
        ),
        (
            "extra arg",
            json!({"peer": to, "x": 1}),
            "get_keys() got an unexpected keyword argument 'x'",
        ),
        (
            "peer a number",
            json!({"peer": 12345}),
            "get_keys(): 'peer' must be a string",
        ),
        (
            "peer null",
            json!({"peer": null}),
            "get_keys(): 'peer' must be a string",
        ),
        (
            "peer an object",
            json!({"peer": {"id": to}}),
            "get_keys(): 'peer' must be a string",
        ),
    ];
    for (name, args, text) in cases {
        let a = relay.signed(&mallory, "get_keys", args).await;
        assert_eq!((a.status, a.error()), (400, text.to_owned()), "{name}");
        relay.assert_serving().await;
    }

    // Raw texts, so that numbers keep the exact tokens sent.
    let send = |args: &str| -> Value {
        let args: Value = serde_json::from_str(args).unwrap();
        signed(&mallory, "send_message", args, url)
    };
    let mtype = "send_message(): 'mtype' must be 0 (pre-key) or 1 (normal)";
    let mut cases: Vec<(&str, Value, String)> = vec![
        (
            "missing all",
            send("{}"),
            "send_message() missing required argument: 'to'".into(),
        ),
        (
            "missing body",
            send(&format!(r#"{{"to": "{to}", "mtype": 1}}"#)),
            "send_message() missing required argument: 'body'".into(),
        ),
        (
            "extra",
            send(&format!(
                r#"{{"to": "{to}", "mtype": 1, "body": "x", "cc": "{to}"}}"#
            )),
            "send_message() got an unexpected keyword argument 'cc'".into(),
        ),
        (
            "long extra",
            send(&format!(r#"{{"{}": 1}}"#, "k".repeat(1000))),
            format!(
                "send_message() got an unexpected keyword argument '{}'",
                "k".repeat(64)
            ),
        ),
        (
            "to a number",
            send(r#"{"to": 1e400, "mtype": 1, "body": "x"}"#),
            "send_message(): 'to' must be a string".into(),
        ),
        (
            "body a number",
            send(&format!(r#"{{"to": "{to}", "mtype": 1, "body": 12}}"#)),
            "send_message(): 'body' must be a string".into(),
        ),
        (
            "body an array",
            send(&format!(r#"{{"to": "{to}", "mtype": 1, "body": ["x"]}}"#)),
            "send_message(): 'body' must be a string".into(),
        ),
    ];
    // Every mtype but the integers 0 and 1, with the token as sent.
    for token in [
        r#""1""#,
        "2",
        "-1",
        "1.0",
        "1e400",
        "1180591620717411303424",  // 2**70
        "-1180591620717411303425", // -2**70 - 1
        "18446744073709551617",    // 2**64 + 1
        "true",
        "null",
    ] {
        let body = format!(r#"{{"to": "{to}", "mtype": {token}, "body": "x"}}"#);
        cases.push(("mtype", send(&body), mtype.into()));
    }
    for (name, body, text) in cases {
        let a = relay.post_json(&body).await;
        assert_eq!((a.status, a.error()), (400, text), "{name}: {body}");
        relay.assert_serving().await;
    }

    // publish_keys: the key maps must map strings to strings.
    let mut p = publish_args(&mallory, Map::new(), true);
    for (field, bad, text) in [
        (
            "identity_key",
            json!(1),
            "publish_keys(): 'identity_key' must be a string",
        ),
        (
            "signing_key",
            json!(null),
            "publish_keys(): 'signing_key' must be a string",
        ),
        (
            "one_time_keys",
            json!([]),
            "publish_keys(): 'one_time_keys' must be an object of key id to key strings",
        ),
        (
            "one_time_keys",
            json!(null),
            "publish_keys(): 'one_time_keys' must be an object of key id to key strings",
        ),
        (
            "one_time_keys",
            json!({"AAAAAAAAAAA": 5}),
            "publish_keys(): 'one_time_keys' must be an object of key id to key strings",
        ),
        (
            "fallback_key",
            json!("key"),
            "publish_keys(): 'fallback_key' must be an object of key id to key strings",
        ),
        (
            "fallback_key",
            json!({"AAAAAAAAAAA": {"k": "v"}}),
            "publish_keys(): 'fallback_key' must be an object of key id to key strings",
        ),
    ] {
        let saved = p[field].take();
        p[field] = bad;
        let a = relay.signed(&mallory, "publish_keys", p.clone()).await;
        refused(&a, 400, text);
        p[field] = saved;
    }
    p.as_object_mut().unwrap().remove("fallback_key");
    let a = relay.signed(&mallory, "publish_keys", p).await;
    refused(
        &a,
        400,
        "publish_keys() missing required argument: 'fallback_key'",
    );
    // Keys that do not hash to the caller.
    let other = Peer::new();
    let a = relay
        .signed(
            &mallory,
            "publish_keys",
            publish_args(&other, Map::new(), true),
        )
        .await;
    refused(&a, 400, "published keys do not match user id");
    relay.assert_serving().await;

    // Extreme numbers where they are allowed are hashed as parsed and
    // verify: `peek` is truthy for 1e400 and 2**70, falsy (so unsigned) for
    // -0 and 1e-400. (mallory has no mail: every read is empty.)
    for peek in [
        "1e400",
        "-1e400",
        "1180591620717411303424",
        "-0",
        "0.0",
        "1e-400",
        "-0.0",
    ] {
        let args: Value = serde_json::from_str(&format!(r#"{{"peek": {peek}}}"#)).unwrap();
        let a = relay.signed(&mallory, "read_messages", args).await;
        assert_eq!((a.status, a.json()), (200, json!([])), "peek {peek}");
    }
    // nack's hash and sig are checked.
    let a = relay
        .signed(&mallory, "nack", json!({"hash": "00", "sig": "x"}))
        .await;
    refused(&a, 400, "hash must be a 64-char sha256 hex digest");
    let a = relay
        .signed(
            &mallory,
            "nack",
            json!({"hash": "a".repeat(64), "sig": "x"}),
        )
        .await;
    refused(&a, 400, "bad nack signature");
    relay.assert_serving().await;
}

// ---------- auth ----------

#[tokio::test]
async fn every_auth_field_missing_or_malformed_in_both_dialects() {
    let relay = Relay::start("5", &[]);
    let url = relay.url.as_str();
    let peer = Peer::new();
    let fresh =
        |dialect: Dialect| count_keys_at(&peer, url, dialect, &now().to_string(), &new_nonce());
    let no_hash = "auth keys do not hash to user_id";
    for dialect in [Dialect::V001, Dialect::V030] {
        let (id, ts, sig) = (dialect.id_field(), dialect.ts_field(), dialect.sig_field());
        // The auth object itself.
        let mut body = fresh(dialect);
        body["args"]["auth"] = json!("user_id=x");
        relay.refuses(&body, 400, "auth must be an object").await;
        body["args"]["auth"] = json!([]);
        relay.refuses(&body, 400, "auth must be an object").await;
        body["args"]["auth"] = json!(null);
        relay.refuses(&body, 400, "auth must be an object").await;

        // Each field missing, then of the wrong type.
        for field in [id, "identity_key", "signing_key", ts, "nonce", sig] {
            let mut body = fresh(dialect);
            auth_of(&mut body).remove(field);
            relay
                .refuses(&body, 400, &format!("missing auth field: '{field}'"))
                .await;
            for bad in [
                json!(null),
                json!(1.5),
                json!(["x"]),
                json!({"x": 1}),
                json!(true),
            ] {
                let mut body = fresh(dialect);
                auth_of(&mut body).insert(field.into(), bad.clone());
                let text = if field == ts {
                    format!("bad timestamp: '{ts}' must be unix seconds as a decimal string")
                } else {
                    format!("auth field '{field}' must be a string")
                };
                relay.refuses(&body, 400, &text).await;
            }
        }
        relay.assert_serving().await;

        // Malformed values, field by field.
        let tamper = |field: &str, value: Value| {
            let mut body = fresh(dialect);
            auth_of(&mut body).insert(field.into(), value);
            body
        };
        let bad_ts = format!("bad timestamp: '{ts}' must be unix seconds as a decimal string");
        let cases: Vec<(Value, &str)> = vec![
            (tamper(id, json!("")), no_hash),
            (tamper(id, json!(peer.id.as_str().to_uppercase())), no_hash),
            (tamper(id, json!("x".repeat(100_000))), no_hash),
            (tamper("identity_key", json!("")), no_hash),
            (tamper("identity_key", json!("not base64 at all!")), no_hash),
            (tamper("signing_key", json!("A".repeat(43))), no_hash),
            (tamper(ts, json!("")), &bad_ts),
            (tamper(ts, json!("soon")), &bad_ts),
            (tamper(ts, json!("1.5e9")), &bad_ts),
            (tamper(ts, json!("0x6000000")), &bad_ts),
            (tamper(ts, json!("9".repeat(31))), &bad_ts),
            (
                tamper(ts, json!(1_180_591_620_717_411_303_424.0_f64)),
                &bad_ts,
            ),
            (
                tamper(ts, serde_json::from_str("1180591620717411303424").unwrap()),
                &bad_ts,
            ),
            (tamper(ts, serde_json::from_str("1e400").unwrap()), &bad_ts),
            (tamper(ts, json!(-1)), STALE),
            (tamper(ts, json!("9".repeat(30))), STALE),
            (tamper(ts, json!("-0")), STALE),
            (tamper(sig, json!("")), BAD_SIG),
            (tamper(sig, json!("!!!!")), BAD_SIG),
            (tamper(sig, json!("A".repeat(86))), BAD_SIG),
            (tamper(sig, json!("A".repeat(100_000))), BAD_SIG),
            // The nonce is signed: changing it breaks the signature.
            (tamper("nonce", json!("")), BAD_SIG),
            (tamper("nonce", json!("n".repeat(200))), BAD_SIG),
        ];
        for (body, text) in cases {
            relay.refuses(&body, 400, text).await;
        }
        // Half of each dialect: the id field decides, then the other
        // dialect's names are missing.
        let mut body = fresh(dialect);
        let auth = auth_of(&mut body);
        let (ts_value, sig_value) = (auth.remove(ts).unwrap(), auth.remove(sig).unwrap());
        let other = dialect.other();
        auth.insert(other.ts_field().into(), ts_value);
        auth.insert(other.sig_field().into(), sig_value);
        relay
            .refuses(&body, 400, &format!("missing auth field: '{ts}'"))
            .await;
        // A nonce the relay will not store, correctly signed.
        for nonce in [String::new(), "n".repeat(129)] {
            let body = count_keys_at(&peer, url, dialect, &now().to_string(), &nonce);
            relay
                .refuses(
                    &body,
                    400,
                    "bad nonce: must be a string of at most 128 characters",
                )
                .await;
        }
        // 128 characters are fine, and the timestamp may be a JSON integer
        // or padded as Python's int() reads it.
        let body = count_keys_at(
            &peer,
            url,
            dialect,
            &now().to_string(),
            &new_nonce().repeat(4),
        );
        assert_eq!(relay.post_json(&body).await.status, 200);
        let ts_now = now();
        let mut body = count_keys_at(&peer, url, dialect, &ts_now.to_string(), &new_nonce());
        auth_of(&mut body).insert(ts.into(), json!(ts_now));
        assert_eq!(relay.post_json(&body).await.status, 200);
        let padded = format!(" +{ts_now} ");
        let body = count_keys_at(&peer, url, dialect, &padded, &new_nonce());
        assert_eq!(relay.post_json(&body).await.status, 200);
        relay.assert_serving().await;
    }
}

#[tokio::test]
async fn forgeries_replays_and_skewed_clocks_are_refused() {
    let relay = Relay::start("5", &[]);
    let url = relay.url.as_str();
    let (mut alice, bob) = (Peer::new(), Peer::new());
    let publish = alice.publish_args();
    assert_eq!(relay.post(&alice.body(&publish, url)).await.status, 200);

    // Bob's keys under Alice's id, and Alice's keys with Bob's signature.
    let mut body = signed(&bob, "read_messages", json!({}), url);
    auth_of(&mut body).insert("user_id".into(), json!(alice.id.as_str()));
    relay
        .refuses(&body, 400, "auth keys do not hash to user_id")
        .await;
    let mut body = signed(&alice, "read_messages", json!({}), url);
    let forged = signed(&bob, "read_messages", json!({}), url);
    auth_of(&mut body).insert("sig".into(), forged["args"]["auth"]["sig"].clone());
    relay.refuses(&body, 400, BAD_SIG).await;
    // A genuine request with its args changed after signing.
    let mut body = signed(&alice, "get_keys", json!({"peer": alice.id.as_str()}), url);
    body["args"]["peer"] = json!(bob.id.as_str());
    relay.refuses(&body, 400, BAD_SIG).await;
    // ... or sent as another tool, or signed for another relay.
    let mut body = signed(&alice, "count_keys", json!({}), url);
    body["tool"] = json!("read_messages");
    relay.refuses(&body, 400, BAD_SIG).await;
    let body = signed(&alice, "count_keys", json!({}), "http://127.0.0.1:1");
    relay.refuses(&body, 400, BAD_SIG).await;
    relay.assert_serving().await;

    // A replay: the same bytes twice, and the same nonce re-signed.
    let body = serde_json::to_vec(&signed(&alice, "count_keys", json!({}), url)).unwrap();
    let a = relay.post(&body).await;
    assert_eq!(
        (a.status, a.json()),
        (200, json!({"unclaimed": 0, "has_fallback": true}))
    );
    refused(&relay.post(&body).await, 400, REPLAY);
    refused(&relay.post(&body).await, 400, REPLAY);
    let nonce = new_nonce();
    let ts = now().to_string();
    let first = count_keys_at(&alice, url, Dialect::V030, &ts, &nonce);
    assert_eq!(relay.post_json(&first).await.status, 200);
    let again = signed_with(
        &alice,
        "read_messages",
        &json!({}),
        url,
        Dialect::V001,
        &ts,
        &nonce,
    );
    relay.refuses(&again, 400, REPLAY).await;
    // Nonces are global: another user cannot reuse one either.
    let theirs = count_keys_at(&bob, url, Dialect::V001, &ts, &nonce);
    relay.refuses(&theirs, 400, REPLAY).await;
    relay.assert_serving().await;

    // Stale and future timestamps (the window is 150 s each way).
    for skew in [-151, 151, -3600, 86_400 * 365, -now()] {
        let ts = (now() + skew).to_string();
        let body = count_keys_at(&alice, url, Dialect::V001, &ts, &new_nonce());
        relay.refuses(&body, 400, STALE).await;
    }
    for skew in [-140, 140] {
        let ts = (now() + skew).to_string();
        let body = count_keys_at(&alice, url, Dialect::V030, &ts, &new_nonce());
        assert_eq!(relay.post_json(&body).await.status, 200, "skew {skew}");
    }
    relay.assert_serving().await;
}

// ---------- one-time keys ----------

#[tokio::test]
async fn an_otk_drain_is_rate_limited_and_the_victim_falls_back() {
    const LIMIT: usize = 8;
    let relay = Relay::start("5", &["--rate-limit", &LIMIT.to_string()]);
    let url = relay.url.as_str();
    let victim = Peer::new();
    let a = relay.publish(&victim, fake_otks(20, 1), true).await;
    assert_eq!(a.json()["one_time_keys_added"], 20);

    // One identity claims in a loop: LIMIT keys, then 429 every time, and
    // the refused claims take nothing.
    let mallory = Peer::new();
    let claim = |who: &Peer| signed(who, "claim_key", json!({"peer": victim.id.as_str()}), url);
    let mut taken = Vec::new();
    for i in 0..LIMIT + 12 {
        let a = relay.post_json(&claim(&mallory)).await;
        if i < LIMIT {
            assert_eq!(a.status, 200, "claim {i}");
            assert_eq!(a.json()["fallback"], false);
            taken.push(a.json()["key_id"].as_str().unwrap().to_owned());
        } else {
            refused(&a, 429, "rate limit exceeded; slow down and retry");
            assert_eq!(a.header("retry-after"), Some("60"));
        }
    }
    // Oldest (first uploaded) first, none twice.
    let uploaded: Vec<String> = fake_otks(20, 1).keys().take(LIMIT).cloned().collect();
    assert_eq!(taken, uploaded);
    // The victim still has the rest (its own allowance is untouched).
    let a = relay.signed(&victim, "count_keys", json!({})).await;
    assert_eq!(
        a.json(),
        json!({"unclaimed": 20 - LIMIT, "has_fallback": true})
    );
    relay.assert_serving().await;

    // Many identities drain it (each within its own allowance): the last
    // OTK is handed out once, then the fallback key, to everyone, reusably.
    let mut fallbacks = 0;
    for _ in 0..3 {
        let claimer = Peer::new();
        for _ in 0..LIMIT {
            let a = relay.post_json(&claim(&claimer)).await;
            assert_eq!(a.status, 200);
            if a.json()["fallback"] == true {
                assert_eq!(a.json()["key_id"], "AAAAAAAAAAA");
                assert_eq!(a.json()["one_time_key"], "F".repeat(43));
                fallbacks += 1;
            }
        }
    }
    assert_eq!(fallbacks, 3 * LIMIT - (20 - LIMIT));
    let a = relay.signed(&victim, "count_keys", json!({})).await;
    assert_eq!(a.json(), json!({"unclaimed": 0, "has_fallback": true}));

    // Without a fallback key the drained victim is refused, not errored.
    let bare = Peer::new();
    relay.publish(&bare, fake_otks(1, 2), false).await;
    let claimer = Peer::new();
    let a = relay
        .signed(&claimer, "claim_key", json!({"peer": bare.id.as_str()}))
        .await;
    assert_eq!(a.json()["fallback"], false);
    let a = relay
        .signed(&claimer, "claim_key", json!({"peer": bare.id.as_str()}))
        .await;
    refused(
        &a,
        400,
        &format!(
            "no one-time keys left for peer: {} (and no fallback key)",
            bare.id.as_str()
        ),
    );
    // Unknown and garbage peers.
    for peer in [
        Peer::new().id.as_str().to_owned(),
        "../../etc/passwd".into(),
        "p".repeat(1000),
    ] {
        let a = relay
            .signed(&Peer::new(), "claim_key", json!({"peer": peer}))
            .await;
        let echoed: String = peer.chars().take(128).collect();
        refused(
            &a,
            400,
            &format!("unknown peer or no published keys: {echoed}"),
        );
    }
    relay.assert_serving().await;
}

#[tokio::test]
async fn ten_thousand_one_time_keys_are_refused_whole() {
    let relay = Relay::start("5", &[]);
    let url = relay.url.as_str();
    let peer = Peer::new();
    let a = relay.publish(&peer, fake_otks(10_000, 3), true).await;
    refused(
        &a,
        400,
        "too many one-time keys: 0 unclaimed plus 10000 new exceeds the cap of 1000",
    );
    // Nothing of it was stored, not even the identity.
    let a = relay
        .signed(&Peer::new(), "get_keys", json!({"peer": peer.id.as_str()}))
        .await;
    refused(
        &a,
        400,
        &format!("unknown peer or no published keys: {}", peer.id.as_str()),
    );
    // The cap exactly, then one more.
    let a = relay.publish(&peer, fake_otks(1000, 3), true).await;
    assert_eq!(
        (a.status, a.json()["one_time_keys_added"].clone()),
        (200, json!(1000))
    );
    let mut one = Map::new();
    one.insert("zzzzzzzzzzz".into(), json!("k".repeat(43)));
    let a = relay.publish(&peer, one, true).await;
    refused(
        &a,
        400,
        "too many one-time keys: 1000 unclaimed plus 1 new exceeds the cap of 1000",
    );
    let a = relay.signed(&peer, "count_keys", json!({})).await;
    assert_eq!(a.json(), json!({"unclaimed": 1000, "has_fallback": true}));
    // 20,000 keys do not even fit in a request body.
    let body = serde_json::to_vec(&signed(
        &peer,
        "publish_keys",
        publish_args(&peer, fake_otks(20_000, 4), true),
        url,
    ))
    .unwrap();
    assert!(body.len() > 1 << 20);
    // (The relay answers on the headers and closes: the rest of the body
    // may meet a closed socket, so it is written alongside the read.)
    let mut request = format!(
        "POST / HTTP/1.1\r\nHost: r\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(&body);
    let (answer, _) = write_while_reading(relay.addr, 10, |mut wr| async move {
        wr.write_all(&request).await.is_ok()
    })
    .await;
    assert_eq!(
        parse_answer(&answer),
        (
            413,
            format!("request body too large: {} bytes (max 1048576)", body.len())
        )
    );
    relay.assert_serving().await;
}

// ---------- messages ----------

#[tokio::test]
async fn unknown_recipients_and_garbage_ciphertext() {
    let relay = Relay::start("5", &[]);
    let url = relay.url.clone();
    let mallory = Peer::new();
    let send = |to: &str, mtype: i64, body: &str| {
        signed(
            &mallory,
            "send_message",
            json!({"to": to, "mtype": mtype, "body": body}),
            &url,
        )
    };

    // Recipients that never published, or are not ids at all.
    let stranger = Peer::new().id.as_str().to_owned();
    for to in [
        stranger.clone(),
        stranger.to_uppercase(),
        String::new(),
        "nobody".into(),
        "\u{202e}evil\u{0000}".into(),
        "t".repeat(1000),
    ] {
        let a = relay.post_json(&send(&to, 1, "AAAA")).await;
        let echoed: String = to.chars().take(128).collect();
        refused(&a, 400, &format!("unknown recipient: {echoed}"));
    }
    relay.assert_serving().await;

    // Garbage ciphertext to a real user is stored as it is: the relay
    // cannot tell ciphertext from garbage. The recipient's client reports
    // it as a problem and still gets its real mail; others see nothing.
    let agent = |name: &str| {
        Client::create(
            Arc::new(MemoryStore::new()),
            HttpTransport::new(&url).unwrap(),
            SystemClock,
            "secret",
            name,
        )
        .unwrap()
    };
    let (alice, bob, carol) = (agent("alice"), agent("bob"), agent("carol"));
    bob.ensure_published().await.unwrap();
    carol.ensure_published().await.unwrap();
    let big = "Z".repeat(900_000);
    let garbage = [
        (0, "!!! not base64 !!!"),
        (1, ""),
        (0, "AAAA"),
        (1, "eyJub3QiOiAib2xtIn0="),
        (1, big.as_str()),
    ];
    let mut dave = Peer::new();
    let publish = dave.publish_args();
    assert_eq!(relay.post(&dave.body(&publish, &url)).await.status, 200);
    for to in [bob.user_id().as_str(), dave.id.as_str()] {
        for (mtype, body) in garbage {
            let a = relay.post_json(&send(to, mtype, body)).await;
            assert_eq!(a.status, 200, "{:?}", a.json());
            let r = a.json();
            assert!(r["message_id"].as_i64().is_some(), "{r}");
            assert!(r["ts"].as_f64().is_some(), "{r}");
        }
    }
    alice.send(bob.user_id(), "hi bob").await.unwrap();
    // The relay hands it over verbatim, in order.
    let a = relay.signed(&dave, "read_messages", json!({})).await;
    let mail = a.json();
    let got: Vec<(Value, Value, Value)> = mail
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["from"].clone(), m["mtype"].clone(), m["body"].clone()))
        .collect();
    let want: Vec<(Value, Value, Value)> = garbage
        .iter()
        .map(|(t, b)| (json!(mallory.id.as_str()), json!(t), json!(b)))
        .collect();
    assert!(got == want, "dave's mail differs");
    let a = relay.signed(&dave, "read_messages", json!({})).await;
    assert_eq!(a.json(), json!([]));
    let got = bob.receive().await.unwrap();
    let texts: Vec<&str> = got.messages.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(texts, ["hi bob"]);
    assert_eq!(&got.messages[0].from, alice.user_id());
    assert_eq!(got.problems.len(), garbage.len(), "{:?}", got.problems);
    assert!(got.problems.iter().all(|p| p.from == mallory.id.as_str()));
    // Nothing is left, and nobody else got anything.
    assert!(bob.receive().await.unwrap().messages.is_empty());
    let c = carol.receive().await.unwrap();
    assert!(c.messages.is_empty() && c.problems.is_empty());
    // Bob can still be reached.
    alice.send(bob.user_id(), "still there?").await.unwrap();
    let got = bob.receive().await.unwrap();
    assert_eq!(got.messages.len(), 1);
    assert_eq!(got.messages[0].text, "still there?");
    relay.assert_serving().await;
}

// ---------- the HTTP edge ----------

/// Writes `head` then up to `total` body bytes (chunked if asked) while
/// reading the answer; returns the answer bytes and how much was written
/// before the relay stopped taking it.
async fn flood(addr: SocketAddr, head: &str, total: usize, chunked: bool) -> (Vec<u8>, usize) {
    let head = head.to_owned();
    write_while_reading(addr, 20, move |mut wr| async move {
        let mut written = 0;
        if wr.write_all(head.as_bytes()).await.is_err() {
            return 0;
        }
        let piece = vec![b'x'; 64 * 1024];
        let frame = if chunked {
            let mut f = format!("{:x}\r\n", piece.len()).into_bytes();
            f.extend_from_slice(&piece);
            f.extend_from_slice(b"\r\n");
            f
        } else {
            piece.clone()
        };
        while written < total {
            if wr.write_all(&frame).await.is_err() {
                break;
            }
            written += piece.len();
        }
        written
    })
    .await
}

/// Connects to `addr` and runs `write` on the socket's write half while
/// reading the answer until the relay closes (at most `secs` seconds);
/// returns the answer bytes and what `write` returned (within 20 s more).
async fn write_while_reading<F: Future + Send + 'static>(
    addr: SocketAddr,
    secs: u64,
    write: impl FnOnce(OwnedWriteHalf) -> F,
) -> (Vec<u8>, F::Output)
where
    F::Output: Send + 'static,
{
    let (mut rd, wr) = TcpStream::connect(addr).await.unwrap().into_split();
    let writer = tokio::spawn(write(wr));
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(secs), rd.read_to_end(&mut answer)).await;
    let written = tokio::time::timeout(Duration::from_secs(20), writer)
        .await
        .expect("the writer was never stopped")
        .unwrap();
    (answer, written)
}

/// Status and `error` of a raw answer with a JSON body.
fn parse_answer(raw: &[u8]) -> (u16, String) {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no answer: {text:?}"));
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{head}"
    );
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let body: Value = serde_json::from_str(body).unwrap();
    (status, body["error"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn a_hundred_megabyte_body_is_refused_unread() {
    let relay = Relay::start("5", &[]);
    relay.assert_serving().await;
    let before = relay.mem_kb("VmHWM");
    const HUNDRED_MB: usize = 100 * 1024 * 1024;

    // Declared: refused on the headers.
    let declared = format!("POST / HTTP/1.1\r\nHost: r\r\nContent-Type: application/json\r\nContent-Length: {HUNDRED_MB}\r\n\r\n");
    let (answer, written) = flood(relay.addr, &declared, HUNDRED_MB, false).await;
    assert_eq!(
        parse_answer(&answer),
        (
            413,
            format!("request body too large: {HUNDRED_MB} bytes (max 1048576)")
        )
    );
    assert!(written < HUNDRED_MB / 4, "wrote {written} bytes");

    // Chunked: refused once the cap is read.
    let chunked = "POST / HTTP/1.1\r\nHost: r\r\nTransfer-Encoding: chunked\r\n\r\n".to_owned();
    let (answer, written) = flood(relay.addr, &chunked, HUNDRED_MB, true).await;
    assert_eq!(
        parse_answer(&answer),
        (
            413,
            "request body too large: more than 1048576 bytes (max 1048576)".into()
        )
    );
    assert!(written < HUNDRED_MB / 4, "wrote {written} bytes");

    // Several at once.
    let addr = relay.addr;
    let floods: Vec<_> = (0..4)
        .map(|i| {
            let head = if i % 2 == 0 {
                chunked.clone()
            } else {
                declared.clone()
            };
            tokio::spawn(async move { flood(addr, &head, HUNDRED_MB, i % 2 == 0).await })
        })
        .collect();
    for f in floods {
        let (answer, _) = f.await.unwrap();
        assert_eq!(parse_answer(&answer).0, 413);
    }
    let after = relay.mem_kb("VmHWM");
    eprintln!("relay VmHWM: {before} kB before the floods, {after} kB after");
    assert!(
        after < before + 16 * 1024,
        "VmHWM grew from {before} to {after} kB"
    );
    relay.assert_serving().await;
}

#[tokio::test]
async fn lying_negative_and_garbage_content_lengths() {
    let relay = Relay::start("1", &[]);
    let addr = relay.addr;

    // Longer than the body: the read times out.
    let mut raw = Raw::connect(addr).await;
    raw.send(b"POST / HTTP/1.1\r\nHost: r\r\nContent-Length: 500\r\n\r\n{\"tool\":\"count_keys\"}")
        .await;
    let start = Instant::now();
    let a = raw.answer().await.unwrap();
    refused(&a, 408, "timed out reading the request body");
    assert_eq!(a.header("connection"), Some("close"));
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "{:?}",
        start.elapsed()
    );
    assert!(raw.closed_within(Duration::from_secs(2)).await);

    // Shorter than the body: only the declared bytes are the body; the
    // rest is read as the next request, which is not HTTP.
    let mut raw = Raw::connect(addr).await;
    raw.send(b"POST / HTTP/1.1\r\nHost: r\r\nContent-Length: 2\r\n\r\n{}{\"tool\": \"count_keys\"}\r\n\r\n")
        .await;
    refused(
        &raw.answer().await.unwrap(),
        400,
        "bad request: missing 'tool'",
    );
    refused_and_closed(
        &mut raw,
        400,
        "bad request: malformed HTTP request",
        "the rest",
    )
    .await;
    relay.assert_serving().await;

    // Smuggling a second request in a lying body: the relay answers what the
    // length says, then refuses the rest.
    let mut raw = Raw::connect(addr).await;
    let smuggled = b"GET /info HTTP/1.1\r\nHost: r\r\n\r\n";
    let head = format!(
        "POST / HTTP/1.1\r\nHost: r\r\nContent-Length: {}\r\n\r\n",
        smuggled.len()
    );
    raw.send(head.as_bytes()).await;
    raw.send(smuggled).await;
    refused(
        &raw.answer().await.unwrap(),
        400,
        "bad request: body is not JSON (expected value at line 1 column 1)",
    );

    // Negative, garbage, overflowing or conflicting lengths: refused by the
    // HTTP parser before any body is read, as JSON, and the connection ends.
    for cl in [
        "-1",
        "abc",
        "1e9",
        "0x10",
        "+5",
        "",
        "99999999999999999999999",
        "10, 20",
    ] {
        let mut raw = Raw::connect(addr).await;
        let head = format!("POST / HTTP/1.1\r\nHost: r\r\nContent-Length: {cl}\r\n\r\n");
        raw.send(head.as_bytes()).await;
        raw.send(&[b'x'; 3000]).await;
        refused_and_closed(&mut raw, 400, "bad request: malformed HTTP request", cl).await;
    }
    // Two Content-Length headers, a transfer coding that is not chunked,
    // and Content-Length with chunked (chunked wins, and "{}" is no chunk).
    for (extra, text) in [
        (
            "Content-Length: 2\r\nContent-Length: 3\r\n",
            "bad request: malformed HTTP request",
        ),
        (
            "Transfer-Encoding: gzip\r\n",
            "bad request: malformed HTTP request",
        ),
        (
            "Content-Length: 2\r\nTransfer-Encoding: chunked\r\n",
            "could not read the request body",
        ),
    ] {
        let mut raw = Raw::connect(addr).await;
        let head = format!("POST / HTTP/1.1\r\nHost: r\r\n{extra}\r\n{{}}");
        raw.send(head.as_bytes()).await;
        refused_and_closed(&mut raw, 400, text, extra).await;
    }
    // Not HTTP at all, a request line too long, too many or too large
    // headers: the parser's refusals are JSON too.
    for (head, status, text) in [
        (
            "\x16\x03\x01\x02\x00\x01\x00\x01\x7f\x03\x03\r\n\r\n".to_owned(),
            400,
            "bad request: malformed HTTP request",
        ),
        (
            "GET / HTTP/9.9\r\n\r\n".to_owned(),
            400,
            "bad request: malformed HTTP request",
        ),
        (
            "GET /\0 HTTP/1.1\r\n\r\n".to_owned(),
            400,
            "bad request: malformed HTTP request",
        ),
        (
            format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(70_000)),
            414,
            "request URI too long",
        ),
        (
            format!("GET / HTTP/1.1\r\n{}\r\n", "X-A: b\r\n".repeat(200)),
            431,
            "request headers too large",
        ),
        (
            format!("GET / HTTP/1.1\r\nX-A: {}\r\n\r\n", "b".repeat(1 << 20)),
            431,
            "request headers too large",
        ),
    ] {
        let mut raw = Raw::connect(addr).await;
        let _ = raw.stream.write_all(head.as_bytes()).await;
        refused_and_closed(&mut raw, status, text, &status.to_string()).await;
    }
    relay.assert_serving().await;
}

#[tokio::test]
async fn chunked_floods_and_malformed_chunks() {
    let relay = Relay::start("2", &["--max-body", "100000"]);
    let addr = relay.addr;
    let post = "POST / HTTP/1.1\r\nHost: r\r\nTransfer-Encoding: chunked\r\n\r\n";

    // Endless one-byte chunks: cut at the cap.
    let (answer, ()) = write_while_reading(addr, 10, |mut wr| async move {
        wr.write_all(post.as_bytes()).await.unwrap();
        let frames = "1\r\nx\r\n".repeat(10_000);
        for _ in 0..100 {
            if wr.write_all(frames.as_bytes()).await.is_err() {
                break;
            }
        }
    })
    .await;
    assert_eq!(
        parse_answer(&answer),
        (
            413,
            "request body too large: more than 100000 bytes (max 100000)".into()
        )
    );

    // Chunks that trickle on forever: cut at the deadline.
    let mut raw = Raw::connect(addr).await;
    raw.send(post.as_bytes()).await;
    let start = Instant::now();
    let trickle = async {
        loop {
            if raw.stream.write_all(b"1\r\nx\r\n").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            if start.elapsed() > Duration::from_secs(2) {
                break;
            }
        }
    };
    trickle.await;
    let a = raw.answer().await.unwrap();
    refused(&a, 408, "timed out reading the request body");
    assert!(start.elapsed() < Duration::from_secs(5));

    // Malformed chunk framing.
    for (name, body) in [
        ("not hex", "zz\r\nxx\r\n0\r\n\r\n"),
        ("negative", "-1\r\nx\r\n0\r\n\r\n"),
        ("overflowing size", "ffffffffffffffffffff\r\nx\r\n0\r\n\r\n"),
        ("missing CRLF after data", "2\r\nxxxx\r\n0\r\n\r\n"),
        ("bare LF", "2\nxx\n0\n\n"),
        (
            "huge extension",
            &format!("1;{}\r\nx\r\n0\r\n\r\n", "e".repeat(100_000)),
        ),
    ] {
        let mut raw = Raw::connect(addr).await;
        raw.send(post.as_bytes()).await;
        let _ = raw.stream.write_all(body.as_bytes()).await;
        let a = raw
            .answer()
            .await
            .unwrap_or_else(|| panic!("{name}: closed"));
        refused(&a, 400, "could not read the request body");
        assert_eq!(a.header("connection"), Some("close"), "{name}");
    }
    // A huge declared chunk is cut at the cap too.
    let (answer, written) = flood(addr, &format!("{post}4000000\r\n"), 64 << 20, false).await;
    assert_eq!(
        parse_answer(&answer),
        (
            413,
            "request body too large: more than 100000 bytes (max 100000)".into()
        )
    );
    assert!(written < 16 << 20, "wrote {written} bytes");
    relay.assert_serving().await;
}

#[tokio::test]
async fn slowloris_clients_are_dropped_at_the_header_deadline() {
    let relay = Relay::start("2", &[]);
    let addr = relay.addr;
    let start = Instant::now();
    // 50 clients each sending their headers one byte per second.
    let slow: Vec<_> = (0..50)
        .map(|_| {
            tokio::spawn(async move {
                let mut s = TcpStream::connect(addr).await.unwrap();
                let begun = Instant::now();
                for b in b"POST / HTTP/1.1\r\nHost: relay\r\nContent-Length: 2\r\n\r\n{}" {
                    if s.write_all(&[*b]).await.is_err() {
                        break;
                    }
                    // A closed connection shows as a read of 0 (or an error).
                    let mut buf = [0u8; 64];
                    match tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf)).await {
                        Ok(Ok(0)) | Ok(Err(_)) => return (begun.elapsed(), Vec::new()),
                        Ok(Ok(n)) => return (begun.elapsed(), buf[..n].to_vec()),
                        Err(_) => {}
                    }
                }
                (begun.elapsed(), b"finished".to_vec())
            })
        })
        .collect();
    // Meanwhile everyone else is served.
    tokio::time::sleep(Duration::from_millis(500)).await;
    relay.assert_serving().await;
    for s in slow {
        let (after, got) = s.await.unwrap();
        assert!(got.is_empty(), "got {:?}", String::from_utf8_lossy(&got));
        assert!(
            after >= Duration::from_millis(1500) && after < Duration::from_secs(6),
            "dropped after {after:?}"
        );
    }
    assert!(start.elapsed() < Duration::from_secs(8));

    // A body one byte per second: the body deadline.
    let mut raw = Raw::connect(addr).await;
    raw.send(b"POST / HTTP/1.1\r\nHost: r\r\nContent-Length: 20\r\n\r\n")
        .await;
    let begun = Instant::now();
    for b in b"{\"tool\":" {
        if raw.stream.write_all(&[*b]).await.is_err() || begun.elapsed() > Duration::from_secs(3) {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        if begun.elapsed() > Duration::from_millis(2500) {
            break;
        }
    }
    refused(
        &raw.answer().await.unwrap(),
        408,
        "timed out reading the request body",
    );
    relay.assert_serving().await;
}

#[tokio::test]
async fn thousands_of_idle_connections() {
    let relay = Relay::start("3", &["--max-connections", "2000"]);
    let addr = relay.addr;
    relay.assert_serving().await;
    let base = relay.mem_kb("VmRSS");

    // 1500 idle connections, under the cap: a newcomer is served at once
    // (within 2 s). Then 1000 more, past the cap: a newcomer waits in the
    // backlog until idle connections hit the deadline, then is served
    // (within 9 s).
    let mut idle = Vec::new();
    for (more, within) in [(1500, 2), (1000, 9)] {
        for _ in 0..more {
            idle.push(TcpStream::connect(addr).await.unwrap());
        }
        let start = Instant::now();
        relay.assert_serving().await;
        assert!(
            start.elapsed() < Duration::from_secs(within),
            "{more} more: {:?}",
            start.elapsed()
        );
    }
    let rss = relay.mem_kb("VmHWM");
    eprintln!("relay memory: {base} kB at rest, high-water {rss} kB with 2500 idle connections");
    assert!(rss < base + 64 * 1024, "{base} -> {rss} kB");

    // Every idle connection is closed by the relay.
    let closed = idle.into_iter().map(|mut s| {
        tokio::spawn(async move {
            let mut buf = [0u8; 16];
            matches!(
                tokio::time::timeout(Duration::from_secs(12), s.read(&mut buf)).await,
                Ok(Ok(0)) | Ok(Err(_))
            )
        })
    });
    let mut open = 0;
    for c in closed.collect::<Vec<_>>() {
        if !c.await.unwrap() {
            open += 1;
        }
    }
    assert_eq!(open, 0, "connections left open");
    relay.assert_serving().await;
}
