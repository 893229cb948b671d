//! A real client (SQLite store, HTTP transport) against a relay on
//! 127.0.0.1 that forwards every request to a real [`Relay`] (in-memory
//! store, so real semantics) and can be told to misbehave on one tool:
//! garbage, half an answer, well-formed JSON of the wrong shape, a proxy's
//! HTML error page, silence, and the nasty ones where the relay did the
//! work and the answer is lost or corrupted.
//!
//! Every case asserts the error the application sees, then switches the
//! relay back to honest and checks that every message reached Bob's
//! application exactly once and that both outboxes, the incoming queue and
//! the relay's mailboxes end empty.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Router;
use retalk_proto::client::{
    Client, ClientError, Inbox, OutboxKind, Problem, Store, TransportError,
};
use retalk_proto::relay::{MemoryRelayStore, Relay, RelayConfig};
use retalk_proto::{Clock, SimClock, UserId};
use retalk_store_sqlite::SqliteStore;
use retalk_transport_http::HttpTransport;
use serde_json::{json, Value};

const T0: f64 = 1_800_000_000.0;
/// Every client's whole-call timeout: what a silent relay costs.
const TIMEOUT: Duration = Duration::from_millis(1500);
/// Not JSON, not UTF-8, with control characters.
const GARBAGE: &[u8] = b"\x00\xff\xfe\x1b[31m{\"ok\": tr\xc3\x28 garbage";
const HTML_500: &str = "<html><body><h1>500 Internal Server Error</h1></body></html>";
const HTML_502: &str = "<html><body><h1>502 Bad Gateway</h1>nginx</body></html>";

type Agent = Client<SqliteStore, HttpTransport, SimClock>;

/// How the relay misbehaves on the tool it is told to.
#[derive(Clone)]
enum Bad {
    /// 200 with bytes that are not JSON; the request is not processed.
    Garbage,
    /// Processed; the answer is cut in half.
    Truncated,
    /// Processed; the answer is replaced by garbage.
    ProcessedThenGarbage,
    /// 200 with this JSON text; not processed.
    Json(String),
    /// Processed; the answer is replaced by this JSON text.
    ProcessedThenJson(String),
    /// This status with a proxy's HTML page; not processed.
    Html(u16, &'static str),
    /// Never answers; not processed.
    Hang,
    /// Processed, then never answers.
    ProcessedThenHang,
    /// Processed; the answer is rewritten (still JSON, wrong content).
    Rewrite(fn(Value) -> Value),
}

impl Bad {
    fn processes(&self) -> bool {
        matches!(
            self,
            Bad::Truncated
                | Bad::ProcessedThenGarbage
                | Bad::ProcessedThenJson(_)
                | Bad::ProcessedThenHang
                | Bad::Rewrite(_)
        )
    }
}

struct Hostile {
    relay: Relay<MemoryRelayStore>,
    clock: SimClock,
    /// The tool to misbehave on, and how.
    rule: Mutex<Option<(&'static str, Bad)>>,
    /// Every request: its tool, and whether it was misbehaved on.
    log: Mutex<Vec<(String, bool)>>,
}

fn reply(status: u16, content_type: &'static str, body: Vec<u8>) -> Response {
    (
        StatusCode::from_u16(status).unwrap(),
        [("content-type", content_type)],
        body,
    )
        .into_response()
}

impl Hostile {
    fn honest(&self, body: &[u8]) -> (u16, Vec<u8>) {
        let r = self.relay.handle(body, self.clock.now());
        (r.status, serde_json::to_vec(&r.body).unwrap())
    }

    async fn answer(&self, body: Bytes) -> Response {
        let tool = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v["tool"].as_str().map(str::to_owned))
            .unwrap_or_default();
        let bad = self
            .rule
            .lock()
            .unwrap()
            .clone()
            .filter(|(t, _)| *t == tool)
            .map(|(_, b)| b);
        self.log.lock().unwrap().push((tool, bad.is_some()));
        let Some(bad) = bad else {
            let (status, body) = self.honest(&body);
            return reply(status, "application/json", body);
        };
        let (status, real) = if bad.processes() {
            self.honest(&body)
        } else {
            (0, Vec::new())
        };
        match bad {
            Bad::Garbage | Bad::ProcessedThenGarbage => {
                reply(200, "application/json", GARBAGE.to_vec())
            }
            Bad::Truncated => reply(status, "application/json", real[..real.len() / 2].to_vec()),
            Bad::Json(text) | Bad::ProcessedThenJson(text) => {
                reply(200, "application/json", text.into_bytes())
            }
            Bad::Html(status, page) => reply(status, "text/html", page.as_bytes().to_vec()),
            Bad::Hang | Bad::ProcessedThenHang => {
                std::future::pending::<()>().await;
                unreachable!()
            }
            Bad::Rewrite(f) => {
                let value: Value = serde_json::from_slice(&real).unwrap();
                reply(
                    status,
                    "application/json",
                    serde_json::to_vec(&f(value)).unwrap(),
                )
            }
        }
    }
}

/// The relay, its clock and a folder for the clients' stores.
struct Net {
    url: String,
    hostile: Arc<Hostile>,
    clock: SimClock,
    dir: tempfile::TempDir,
}

impl Net {
    async fn start() -> Net {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let clock = SimClock::new(T0);
        let relay = Relay::new(
            MemoryRelayStore::new(),
            RelayConfig {
                audiences: vec![url.clone()],
                ..RelayConfig::default()
            },
        );
        let hostile = Arc::new(Hostile {
            relay,
            clock: clock.clone(),
            rule: Mutex::new(None),
            log: Mutex::default(),
        });
        let h = hostile.clone();
        let app = Router::new().fallback(move |body: Bytes| {
            let h = h.clone();
            async move { h.answer(body).await }
        });
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Net {
            url,
            hostile,
            clock,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn agent(&self, name: &str) -> Agent {
        let store = SqliteStore::open(self.dir.path().join(name)).unwrap();
        let transport = HttpTransport::builder(&self.url)
            .timeout(TIMEOUT)
            .build()
            .unwrap();
        Client::create(
            store,
            transport,
            self.clock.clone(),
            &format!("{name}-secret"),
            name,
        )
        .unwrap()
    }

    fn misbehave(&self, tool: &'static str, bad: Bad) {
        *self.hostile.rule.lock().unwrap() = Some((tool, bad));
    }

    fn honest(&self) {
        *self.hostile.rule.lock().unwrap() = None;
    }

    /// Messages waiting in the relay's mailboxes.
    fn queued(&self) -> usize {
        self.hostile.relay.store().queued().len()
    }

    /// (unclaimed one-time keys, has a fallback) of a user on the relay.
    fn keys_of(&self, user: &UserId) -> (u64, bool) {
        self.hostile.relay.store().count_keys_for(user)
    }

    /// How many requests for `tool` the relay misbehaved on.
    fn misbehaved(&self, tool: &str) -> usize {
        self.hostile
            .log
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, bad)| t == tool && *bad)
            .count()
    }
}

/// Alice and Bob, both published, and everything Bob's application saw.
struct Pair {
    net: Net,
    alice: Agent,
    bob: Agent,
    got: Vec<String>,
}

impl Pair {
    async fn new() -> Pair {
        let p = Pair::unpublished().await;
        p.alice.publish(100, false).await.unwrap();
        p.bob.publish(100, false).await.unwrap();
        p
    }

    /// Alice and Bob on a new relay, neither published yet.
    async fn unpublished() -> Pair {
        let net = Net::start().await;
        let alice = net.agent("alice");
        let bob = net.agent("bob");
        Pair {
            net,
            alice,
            bob,
            got: Vec::new(),
        }
    }

    fn bob_id(&self) -> UserId {
        self.bob.user_id().clone()
    }

    /// Bob receives; what his application sees is recorded.
    async fn bob_receives(&mut self) -> Result<Inbox, ClientError> {
        let inbox = self.bob.receive().await?;
        self.got
            .extend(inbox.messages.iter().map(|m| m.text.clone()));
        for m in &inbox.messages {
            assert_eq!(&m.from, self.alice.user_id());
            assert_eq!(m.name, "~alice");
        }
        Ok(inbox)
    }

    /// Honest relay again: a few rounds of time passing, resends, receives
    /// and acks, as a running client would do on its own.
    async fn settle(&mut self) {
        for _ in 0..3 {
            self.net.clock.advance(121.0);
            self.alice.maintain().await.unwrap();
            self.bob.maintain().await.unwrap();
            self.bob_receives().await.unwrap();
            let a = self.alice.receive().await.unwrap();
            assert!(a.messages.is_empty(), "{a:?}");
            assert!(a.problems.is_empty(), "{a:?}");
        }
    }

    /// Bob's application saw exactly `expected`, and nothing is left
    /// anywhere: outboxes, incoming queues, inboxes, the relay's mailboxes.
    fn assert_clean(&self, expected: &[&str]) {
        assert_eq!(self.got, expected, "delivered exactly once");
        for (who, agent) in [("alice", &self.alice), ("bob", &self.bob)] {
            let s = agent.store();
            assert_eq!(s.outbox().unwrap(), vec![], "{who}'s outbox");
            assert_eq!(s.incoming().unwrap(), vec![], "{who}'s incoming");
            assert_eq!(s.inbox().unwrap(), vec![], "{who}'s inbox");
        }
        assert_eq!(self.net.queued(), 0, "the relay's mailboxes");
    }
}

/// The transport error under `tool`.
fn relay_error<'a>(e: &'a ClientError, tool: &str) -> &'a TransportError {
    match e {
        ClientError::Relay { tool: t, source } if *t == tool => source,
        other => panic!("expected a relay error from {tool}, got {other:?}"),
    }
}

/// The detail of a bad answer to `tool`.
fn bad_answer<'a>(e: &'a ClientError, tool: &str) -> &'a str {
    match e {
        ClientError::BadResponse { tool: t, detail } if *t == tool => detail,
        other => panic!("expected a bad answer to {tool}, got {other:?}"),
    }
}

/// The cause of a send that was saved but not delivered.
fn not_delivered(e: ClientError) -> ClientError {
    match e {
        ClientError::NotDelivered { source, .. } => *source,
        other => panic!("expected NotDelivered, got {other:?}"),
    }
}

/// The error the application must see from the tool that misbehaved.
#[derive(Clone, Copy)]
enum Expect {
    /// A relay error: the answer is not JSON.
    NotJson,
    /// A relay error: the whole-call timeout ran out.
    TimedOut,
    /// A relay error: this status and reason phrase, and the proxy's page.
    Html(u16, &'static str, &'static str),
    /// A bad answer, with this detail.
    Answer(&'static str),
}

impl Expect {
    /// Asserts that `e` is the expected error from `tool`.
    fn check(&self, e: &ClientError, tool: &str) {
        match *self {
            Expect::NotJson => match relay_error(e, tool) {
                TransportError::BadResponse(t) if t.starts_with("the answer is not JSON") => {}
                other => panic!("expected a non-JSON answer, got {other:?}"),
            },
            Expect::TimedOut => match relay_error(e, tool) {
                TransportError::Unreachable(t) if t.starts_with("timed out") => {}
                other => panic!("expected a timeout, got {other:?}"),
            },
            Expect::Html(status, reason, page) => assert_eq!(
                relay_error(e, tool),
                &TransportError::Refused {
                    status,
                    error: format!("HTTP {status} {reason}: {page}"),
                }
            ),
            Expect::Answer(detail) => assert_eq!(bad_answer(e, tool), detail),
        }
    }
}

/// One `#[tokio::test]` a case, each named, so a failure names its case:
/// `name: bad => expected;` runs `case(bad, expected)`; without
/// `=> expected`, `case(bad)`.
macro_rules! cases {
    ($case:ident: $($(#[$doc:meta])* $name:ident: $bad:expr $(=> $expect:expr)?;)*) => {
        $(
            $(#[$doc])*
            #[tokio::test]
            async fn $name() {
                $case($bad $(, $expect)?).await;
            }
        )*
    };
}

/// A JSON array of `n` zeros.
fn huge_array(n: usize) -> String {
    let mut s = String::with_capacity(2 * n + 2);
    s.push('[');
    for i in 0..n {
        if i > 0 {
            s.push(',');
        }
        s.push('0');
    }
    s.push(']');
    s
}

// ---------- send_message ----------

/// Alice's send meets `bad` on send_message; the cause of the
/// NotDelivered error is `expect`ed. Then: a resend while the relay still
/// misbehaves fails alone, and once honest the message arrives exactly once.
async fn send_case(bad: Bad, expect: Expect) {
    let mut p = Pair::new().await;
    let processes = bad.processes();
    p.net.misbehave("send_message", bad);
    let e = p.alice.send(&p.bob_id(), "hello bob").await.unwrap_err();
    assert!(e.is_transient(), "{e:?}");
    expect.check(&not_delivered(e), "send_message");
    assert_eq!(p.net.queued(), usize::from(processes));
    let outbox = p.alice.store().outbox().unwrap();
    assert_eq!(outbox.len(), 1);
    assert_eq!(outbox[0].kind, OutboxKind::Message);
    assert_eq!(outbox[0].attempts, 1);
    // It may have reached the relay: not marked as surely unsent.
    let last = outbox[0].last_error.as_deref().unwrap();
    assert!(!last.starts_with("(not sent)"), "{last}");
    assert_eq!(outbox[0].next_attempt, T0 + 30.0);

    // Due again, still misbehaving: fails alone, backs off.
    p.net.clock.advance(31.0);
    let r = p.alice.maintain().await.unwrap();
    assert_eq!((r.flush.sent, r.flush.failed), (0, 1));
    let entry = &p.alice.store().outbox().unwrap()[0];
    assert_eq!(entry.attempts, 2);
    assert_eq!(entry.next_attempt, T0 + 31.0 + 60.0);
    assert_eq!(p.net.misbehaved("send_message"), 2);
    assert_eq!(p.net.queued(), 2 * usize::from(processes));

    p.net.honest();
    p.settle().await;
    p.assert_clean(&["hello bob"]);
}

/// What a send_message answer of the wrong shape is reported as.
const UNTAGGED: &str = "data did not match any variant of untagged enum SendResult";

cases! { send_case:
    send_answered_with_garbage: Bad::Garbage => Expect::NotJson;
    send_stored_but_the_answer_was_garbage: Bad::ProcessedThenGarbage => Expect::NotJson;
    send_stored_but_the_answer_was_cut_in_half: Bad::Truncated => Expect::NotJson;
    send_stored_but_the_answer_had_the_wrong_shape:
        Bad::ProcessedThenJson(r#"{"message_id": null}"#.into()) => Expect::Answer(UNTAGGED);
    /// The relay claims Bob refused the message; the refusal is not signed by
    /// Bob, so the message is kept (and later delivered), not dropped.
    send_with_a_forged_refusal_keeps_the_message:
        Bad::Json(json!({"refused": true, "hash": "0".repeat(64), "sig": "AAAA"}).to_string())
            => Expect::Answer("refusal with an invalid signature");
    send_answered_with_a_proxy_error_page:
        Bad::Html(500, HTML_500) => Expect::Html(500, "Internal Server Error", HTML_500);
    send_answered_with_a_bad_gateway_page:
        Bad::Html(502, HTML_502) => Expect::Html(502, "Bad Gateway", HTML_502);
    send_never_answered: Bad::Hang => Expect::TimedOut;
    send_stored_but_never_answered: Bad::ProcessedThenHang => Expect::TimedOut;
}

#[tokio::test]
async fn send_answered_with_json_of_the_wrong_shape() {
    for text in [
        r#"{"ok": "yes"}"#.to_owned(),
        r#"{"message_id": "7", "ts": 1800000000.0}"#.to_owned(),
        r#"{"message_id": 7}"#.to_owned(),
        r#"{"refused": "yes"}"#.to_owned(),
        "null".to_owned(),
        huge_array(200_000),
    ] {
        send_case(Bad::Json(text), Expect::Answer(UNTAGGED)).await;
    }
}

/// Every answer lost, many times: the relay holds several copies, some
/// re-encrypted (every 4th unacknowledged resend); Bob shows it once.
#[tokio::test]
async fn many_lost_answers_many_copies_one_message() {
    let mut p = Pair::new().await;
    p.net.misbehave("send_message", Bad::ProcessedThenGarbage);
    p.alice.send(&p.bob_id(), "persistent").await.unwrap_err();
    for _ in 0..5 {
        p.net.clock.advance(3_601.0);
        let r = p.alice.maintain().await.unwrap();
        assert_eq!((r.flush.sent, r.flush.failed), (0, 1));
    }
    assert_eq!(p.alice.store().outbox().unwrap()[0].attempts, 6);
    let copies = p.net.hostile.relay.store().queued();
    assert_eq!(copies.len(), 6);
    let mut bodies: Vec<_> = copies.iter().map(|m| m.body.clone()).collect();
    bodies.sort();
    bodies.dedup();
    assert_eq!(bodies.len(), 2, "the 4th attempt re-encrypted it");
    p.net.honest();
    p.settle().await;
    p.assert_clean(&["persistent"]);
}

// ---------- the ack ----------

async fn ack_case(bad: Bad) {
    let mut p = Pair::new().await;
    p.alice.send(&p.bob_id(), "ack me").await.unwrap();
    let processes = bad.processes();
    p.net.misbehave("send_message", bad);
    // The message is durable before its ack leaves: shown now.
    let inbox = p.bob_receives().await.unwrap();
    assert_eq!(inbox.problems, vec![]);
    assert_eq!(p.got, ["ack me"]);
    let outbox = p.bob.store().outbox().unwrap();
    assert_eq!(outbox.len(), 1);
    assert_eq!(outbox[0].kind, OutboxKind::Ack);
    // Once from handling, once from the receive's own flush of acks.
    assert_eq!(p.net.misbehaved("send_message"), 2);
    assert_eq!(p.net.queued(), 2 * usize::from(processes));
    p.net.honest();
    p.settle().await;
    p.assert_clean(&["ack me"]);
}

cases! { ack_case:
    ack_answered_with_garbage: Bad::Garbage;
    ack_stored_but_its_answer_was_lost: Bad::ProcessedThenGarbage;
}

// ---------- publish_keys, count_keys, claim_key, get_keys ----------

#[tokio::test]
async fn publish_answered_badly_then_retried_with_the_same_keys() {
    let not_ok = Expect::Answer("expected {\"ok\": true}, got a different answer");
    for (bad, processed, expect) in [
        (Bad::Garbage, false, Expect::NotJson),
        (Bad::ProcessedThenGarbage, true, Expect::NotJson),
        (
            Bad::Html(502, HTML_502),
            false,
            Expect::Html(502, "Bad Gateway", HTML_502),
        ),
        (Bad::Hang, false, Expect::TimedOut),
        (Bad::Json(r#"{"ok": "yes"}"#.into()), false, not_ok),
        (Bad::ProcessedThenJson("[]".into()), true, not_ok),
    ] {
        let mut p = Pair::unpublished().await;
        p.net.misbehave("publish_keys", bad);
        let e = p.bob.publish(100, false).await.unwrap_err();
        assert!(e.is_transient(), "{e:?}");
        expect.check(&e, "publish_keys");
        let expected = if processed { (100, true) } else { (0, false) };
        assert_eq!(p.net.keys_of(p.bob.user_id()), expected);

        p.net.honest();
        p.bob.publish(100, false).await.unwrap();
        // The same keys again: the relay holds 100, not 200.
        assert_eq!(p.net.keys_of(p.bob.user_id()), (100, true));
        p.alice.send(&p.bob_id(), "after publish").await.unwrap();
        p.settle().await;
        p.assert_clean(&["after publish"]);
    }
}

#[tokio::test]
async fn count_keys_answered_badly() {
    let net = Net::start().await;
    let bob = net.agent("bob");
    net.misbehave(
        "count_keys",
        Bad::Json(r#"{"unclaimed": -1, "has_fallback": true}"#.into()),
    );
    let e = bob.receive().await.unwrap_err();
    Expect::Answer("invalid number").check(&e, "count_keys");
    net.misbehave(
        "count_keys",
        Bad::Json(r#"{"unclaimed": 5, "has_fallback": "yes"}"#.into()),
    );
    let e = bob.maintain().await.unwrap_err();
    Expect::Answer("invalid type: string \"yes\", expected a boolean").check(&e, "count_keys");
    net.misbehave("count_keys", Bad::Html(502, HTML_502));
    let e = bob.maintain().await.unwrap_err();
    Expect::Html(502, "Bad Gateway", HTML_502).check(&e, "count_keys");
    assert_eq!(net.keys_of(bob.user_id()), (0, false), "nothing published");
    net.honest();
    let r = bob.maintain().await.unwrap();
    assert!(r.replenished && r.fallback_rotated);
    assert_eq!(net.keys_of(bob.user_id()), (100, true));
}

/// Claiming Bob's key goes wrong. A passing failure (garbage, a hang) keeps
/// the message, sealed at rest with no ciphertext yet, and it goes out
/// with the next send; a lie (Mallory's keys, a broken key) keeps nothing.
/// No session is started either way; the next send works.
#[tokio::test]
async fn claim_answered_badly() {
    let mallory = vodozemac::olm::Account::new();
    for (bad, spent) in [
        (Bad::Garbage, 0),
        (Bad::ProcessedThenGarbage, 1),
        (Bad::Truncated, 1),
        (Bad::Hang, 0),
        (Bad::Json(r#"{"ok": "yes"}"#.into()), 0),
        // Mallory's keys instead of Bob's.
        (Bad::Json(String::new()), 0),
        // Bob's keys with a one-time key that is not a key.
        (
            Bad::Rewrite(|mut v| {
                v["one_time_key"] = json!("not a key!");
                v
            }),
            1,
        ),
    ] {
        let mut p = Pair::new().await;
        let bad = match bad {
            Bad::Json(t) if t.is_empty() => Bad::Json(
                json!({
                    "identity_key": mallory.curve25519_key().to_base64(),
                    "signing_key": mallory.ed25519_key().to_base64(),
                    "key_id": "AAAAAQ",
                    "one_time_key": mallory.curve25519_key().to_base64(),
                    "fallback": false,
                })
                .to_string(),
            ),
            other => other,
        };
        let mitm = matches!(&bad, Bad::Json(t) if t.contains("identity_key"));
        p.net.misbehave("claim_key", bad.clone());
        let e = p.alice.send(&p.bob_id(), "first").await.unwrap_err();
        let kept = e.is_transient();
        let e = match e {
            ClientError::NotDelivered { source, .. } => *source,
            other => other,
        };
        match &bad {
            Bad::Garbage | Bad::ProcessedThenGarbage | Bad::Truncated => {
                Expect::NotJson.check(&e, "claim_key")
            }
            Bad::Hang => Expect::TimedOut.check(&e, "claim_key"),
            Bad::Json(_) if mitm => {
                assert!(
                    matches!(&e, ClientError::PinMismatch { peer, .. } if *peer == p.bob_id()),
                    "{e:?}"
                );
                assert!(!e.is_transient());
            }
            Bad::Json(_) => Expect::Answer("missing field `identity_key`").check(&e, "claim_key"),
            _ => assert!(
                matches!(&e, ClientError::Session { detail, .. }
                    if detail == "the relay served an invalid one-time key"),
                "{e:?}"
            ),
        }
        assert_eq!(p.net.keys_of(&p.bob_id()), (100 - spent, true));
        assert_eq!(p.alice.store().sessions(&p.bob_id()).unwrap(), vec![]);
        let outbox = p.alice.store().outbox().unwrap();
        assert_eq!(outbox.len(), usize::from(kept));
        assert!(outbox.iter().all(|e| e.reencrypt && e.body.is_empty()));
        assert_eq!(p.net.queued(), 0);

        p.net.honest();
        p.alice.send(&p.bob_id(), "second").await.unwrap();
        p.settle().await;
        if kept {
            // The kept one goes out with the next flush, after "second".
            p.assert_clean(&["second", "first"]);
        } else {
            p.assert_clean(&["second"]);
        }
    }
}

/// Bob needs Alice's keys to open her first message; the lookup fails in
/// passing (kept for the next receive) or lies (reported; Alice resends).
#[tokio::test]
async fn sender_keys_answered_badly() {
    // Transient: deferred, handled on the next receive.
    let mut p = Pair::new().await;
    p.alice.send(&p.bob_id(), "who am I").await.unwrap();
    p.net.misbehave("get_keys", Bad::Garbage);
    let inbox = p.bob_receives().await.unwrap();
    assert_eq!((inbox.messages.len(), inbox.deferred), (0, 1));
    assert_eq!(inbox.problems, vec![]);
    assert_eq!(p.bob.store().incoming().unwrap().len(), 1);
    p.net.honest();
    let inbox = p.bob_receives().await.unwrap();
    assert_eq!(inbox.deferred, 0);
    assert_eq!(p.got, ["who am I"]);
    p.settle().await;
    p.assert_clean(&["who am I"]);

    // A lie (someone else's keys): reported, dropped here; the relay
    // already deleted it, so it arrives with Alice's resend.
    let mut p = Pair::new().await;
    p.alice.send(&p.bob_id(), "who am I").await.unwrap();
    let mallory = vodozemac::olm::Account::new();
    p.net.misbehave(
        "get_keys",
        Bad::Json(
            json!({
                "identity_key": mallory.curve25519_key().to_base64(),
                "signing_key": mallory.ed25519_key().to_base64(),
            })
            .to_string(),
        ),
    );
    let inbox = p.bob_receives().await.unwrap();
    assert_eq!((inbox.messages.len(), inbox.deferred), (0, 0));
    assert_eq!(inbox.problems.len(), 1);
    assert_eq!(inbox.problems[0].from, p.alice.user_id().as_str());
    assert!(
        inbox.problems[0]
            .reason
            .starts_with(&format!("PIN MISMATCH for peer '{}'", p.alice.user_id())),
        "{:?}",
        inbox.problems
    );
    assert_eq!(p.bob.store().incoming().unwrap(), vec![]);
    p.net.honest();
    p.settle().await;
    p.assert_clean(&["who am I"]);
}

// ---------- read_messages ----------

/// Bob's receive meets `bad` on read_messages, and the `expect`ed error.
/// If the relay processed the read, it deleted the mail, which then
/// arrives with Alice's resend.
async fn read_case(bad: Bad, expect: Expect) {
    let mut p = Pair::new().await;
    p.alice.send(&p.bob_id(), "read me").await.unwrap();
    p.alice.send(&p.bob_id(), "and me").await.unwrap();
    let processes = bad.processes();
    p.net.misbehave("read_messages", bad);
    let e = p.bob_receives().await.unwrap_err();
    assert!(e.is_transient(), "{e:?}");
    expect.check(&e, "read_messages");
    assert_eq!(p.net.queued(), if processes { 0 } else { 2 });
    assert_eq!(p.bob.store().incoming().unwrap(), vec![]);
    assert_eq!(p.bob.store().inbox().unwrap(), vec![]);

    p.net.honest();
    let inbox = p.bob_receives().await.unwrap();
    if processes {
        assert_eq!(inbox, Inbox::default(), "lost at the relay");
    } else {
        assert_eq!(p.got, ["read me", "and me"]);
    }
    p.settle().await;
    p.assert_clean(&["read me", "and me"]);
}

cases! { read_case:
    read_answered_with_garbage: Bad::Garbage => Expect::NotJson;
    read_answered_but_the_answer_was_garbage: Bad::ProcessedThenGarbage => Expect::NotJson;
    read_answered_but_the_answer_was_cut_in_half: Bad::Truncated => Expect::NotJson;
    read_answered_but_never_delivered: Bad::ProcessedThenHang => Expect::TimedOut;
    read_never_answered: Bad::Hang => Expect::TimedOut;
    read_answered_with_a_proxy_error_page:
        Bad::Html(500, HTML_500) => Expect::Html(500, "Internal Server Error", HTML_500);
    read_answered_but_the_answer_had_the_wrong_shape:
        Bad::ProcessedThenJson(r#"{"messages": []}"#.into())
            => Expect::Answer("invalid type: map, expected a sequence");
}

#[tokio::test]
async fn read_answered_with_json_of_the_wrong_shape() {
    let cases: [(String, &str); 6] = [
        (
            r#""messages""#.into(),
            "invalid type: string \"messages\", expected a sequence",
        ),
        (
            r#"{"messages": []}"#.into(),
            "invalid type: map, expected a sequence",
        ),
        (
            r#"{"ok": "yes"}"#.into(),
            "invalid type: map, expected a sequence",
        ),
        (r#"[{"from": "x"}]"#.into(), "missing field `message_id`"),
        (
            r#"[{"message_id": 1, "ts": 0, "from": 7, "mtype": 0, "body": "AA"}]"#.into(),
            "invalid type: number, expected a string",
        ),
        (
            huge_array(200_000),
            "invalid type: number, expected struct MailItem",
        ),
    ];
    for (text, detail) in cases {
        read_case(Bad::Json(text), Expect::Answer(detail)).await;
    }
}

/// The read is answered in valid JSON whose mail is corrupted: each bad
/// item is reported alone and the rest of the batch is shown; what was
/// corrupted arrives with Alice's resend.
async fn corrupt_case(
    rewrite: fn(Value) -> Value,
    check: impl Fn(&Inbox, &Pair),
    expected: &[&str],
) {
    let mut p = Pair::new().await;
    p.alice.send(&p.bob_id(), "first").await.unwrap();
    p.alice.send(&p.bob_id(), "second").await.unwrap();
    p.net.misbehave("read_messages", Bad::Rewrite(rewrite));
    let inbox = p.bob_receives().await.unwrap();
    check(&inbox, &p);
    assert_eq!(p.bob.store().incoming().unwrap(), vec![]);
    p.net.honest();
    p.settle().await;
    p.assert_clean(expected);
}

/// The first item is corrupted: it alone is reported (the report is
/// `check`ed), the second is shown, and the first arrives later with
/// Alice's resend.
async fn corrupt_first_case(rewrite: fn(Value) -> Value, check: impl Fn(&Problem, &Pair)) {
    corrupt_case(
        rewrite,
        |inbox, p| {
            assert_eq!(inbox.problems.len(), 1, "{inbox:?}");
            check(&inbox.problems[0], p);
            assert_eq!(p.got, ["second"]);
        },
        &["second", "first"],
    )
    .await;
}

/// Applies `f` to the first mail item of a read_messages answer.
fn first_item(mut v: Value, f: impl FnOnce(&mut Value)) -> Value {
    if let Some(item) = v.as_array_mut().and_then(|a| a.first_mut()) {
        f(item);
    }
    v
}

#[tokio::test]
async fn read_with_a_corrupted_ciphertext() {
    corrupt_first_case(
        |v| {
            first_item(v, |item| {
                // A character of the MAC (the last bytes of the body).
                let body = item["body"].as_str().unwrap();
                let at = body.len() - 3;
                let flipped = if &body[at..=at] == "A" { "B" } else { "A" };
                item["body"] = json!(format!("{}{flipped}{}", &body[..at], &body[at + 1..]));
            })
        },
        |problem, p| {
            assert_eq!(problem.from, p.alice.user_id().as_str());
            assert_eq!(
                problem.reason,
                "could not start the session: The message that was used to establish \
                 the Session couldn't be decrypted"
            );
        },
    )
    .await;
}

#[tokio::test]
async fn read_with_a_sender_that_is_not_an_id() {
    corrupt_first_case(
        |v| first_item(v, |item| item["from"] = json!("not-an-id")),
        |problem, _| {
            assert_eq!(problem.from, "not-an-id");
            assert_eq!(problem.reason, "sender is not a user id: \"not-an-id\"");
        },
    )
    .await;
}

#[tokio::test]
async fn read_with_the_wrong_sender() {
    corrupt_first_case(
        |v| {
            let carol = vodozemac::olm::Account::new();
            let carol = UserId::from_keys(
                &carol.curve25519_key().to_base64(),
                &carol.ed25519_key().to_base64(),
            );
            first_item(v, |item| item["from"] = json!(carol.as_str()))
        },
        |problem, p| {
            let carol = &problem.from;
            assert_ne!(carol, p.alice.user_id().as_str());
            assert_eq!(
                problem.reason,
                format!("relay error from get_keys: unknown peer or no published keys: {carol}")
            );
        },
    )
    .await;
}

#[tokio::test]
async fn read_with_the_wrong_message_type() {
    corrupt_first_case(
        |v| first_item(v, |item| item["mtype"] = json!(1)),
        |problem, _| {
            assert_eq!(problem.reason, "message body is not a valid Olm message");
        },
    )
    .await;
}

#[tokio::test]
async fn read_with_every_item_twice() {
    corrupt_case(
        |v| {
            let items = v.as_array().unwrap();
            Value::Array(items.iter().chain(items).cloned().collect())
        },
        |inbox, p| {
            assert_eq!(inbox.problems, vec![]);
            assert_eq!(p.got, ["first", "second"]);
        },
        &["first", "second"],
    )
    .await;
}

/// Thousands of identical bogus items in every round: reported once, the
/// real mail is not lost.
#[tokio::test]
async fn read_flooded_with_bogus_items() {
    let mut p = Pair::new().await;
    p.alice.send(&p.bob_id(), "real").await.unwrap();
    let item = json!({"message_id": 1, "ts": 0, "from": "x", "mtype": 0, "body": "AAAA"});
    let flood = Value::Array(vec![item; 20_000]).to_string();
    p.net.misbehave("read_messages", Bad::Json(flood));
    let inbox = p.bob_receives().await.unwrap();
    assert_eq!(inbox.messages, vec![]);
    assert_eq!(
        inbox.problems,
        vec![Problem {
            from: "x".into(),
            reason: "sender is not a user id: \"x\"".into()
        }]
    );
    // Every fetch round got a full batch.
    assert_eq!(p.net.misbehaved("read_messages"), 20);
    assert_eq!(p.net.queued(), 1);
    p.net.honest();
    p.settle().await;
    p.assert_clean(&["real"]);
}
