//! Shared by the client fuzz targets and the seed generator: a fixed
//! identity (Bob) with a live session with Alice, loaded from
//! `fixtures/bob.json` so every run starts from the same state (vodozemac
//! draws keys from the OS, so a fixture made at run time would make crashes
//! irreproducible); a `block_on` for client futures over transports that
//! never wait; and the transports the targets drive the client with.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::pin;
use std::sync::Mutex;
use std::task::{Context, Poll, Waker};

use retalk_proto::client::{
    Changes, Client, ClientError, Delivery, IdentityRecord, MemoryStore, OutboxKind, SendReceipt,
    SessionRecord, Store, Transport, TransportError,
};
use retalk_proto::olm::decode_message;
use retalk_proto::wire::{SignedRequest, Tool};
use retalk_proto::{ClientConfig, SimClock, UserId};
use serde_json::{json, Value};

/// The fixture, written by `cargo run --example seeds`.
pub const FIXTURE: &str = include_str!("../fixtures/bob.json");

/// The time every fuzzed client lives at (the fixture's).
pub const NOW: f64 = 1_800_000_000.0;

/// The fuzzed clients' settings: small key batches, so an iteration that
/// publishes does not spend its time generating a hundred keys.
pub fn config() -> ClientConfig {
    ClientConfig {
        otk_batch: 5,
        min_otks: 2,
        ..ClientConfig::default()
    }
}

/// The relay URL every transport here signs for.
pub const AUDIENCE: &str = "http://127.0.0.1:8766";

/// Implements [`Transport`] for a type with an inherent
/// `fn answer(&self, &SignedRequest) -> Result<Value, TransportError>`:
/// signed for [`AUDIENCE`], answered at once (see [`block_on`]). For the
/// transports here and the seed generator's.
#[macro_export]
macro_rules! instant_transport {
    ($t:ty) => {
        impl ::retalk_proto::client::Transport for $t {
            fn audience(&self) -> &str {
                $crate::AUDIENCE
            }

            fn call(
                &self,
                request: ::retalk_proto::wire::SignedRequest,
            ) -> impl ::std::future::Future<
                Output = ::std::result::Result<
                    ::serde_json::Value,
                    ::retalk_proto::client::TransportError,
                >,
            > + Send {
                ::std::future::ready(self.answer(&request))
            }
        }
    };
}

/// Runs a future that never waits (every transport here answers at once).
pub fn block_on<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..1000 {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
    panic!("a client future waited on a transport that never waits");
}

/// A peer's public face.
#[derive(Debug, Clone)]
pub struct Peer {
    pub id: UserId,
    pub identity_key: String,
    pub signing_key: String,
}

/// A real message from Alice to Bob, decryptable in the fixture's state.
#[derive(Debug, Clone)]
pub struct Mail {
    pub mtype: i64,
    pub body: String,
    pub text: String,
}

/// Bob's saved state and what he can check it against.
#[derive(Debug, Clone)]
pub struct Fixture {
    pub secret: String,
    pub identity: IdentityRecord,
    pub sessions: Vec<SessionRecord>,
    pub alice: Peer,
    /// Has published keys, no session with Bob.
    pub carol: Peer,
    /// Alice's next message, never in the seeds.
    pub canary: Mail,
}

fn s(v: &Value, k: &str) -> String {
    v[k].as_str().unwrap_or_default().to_owned()
}

fn peer(v: &Value) -> Peer {
    Peer {
        id: UserId::parse(v["id"].as_str().unwrap_or_default()).expect("fixture peer id"),
        identity_key: s(v, "identity_key"),
        signing_key: s(v, "signing_key"),
    }
}

impl Fixture {
    pub fn load() -> Fixture {
        let v: Value = serde_json::from_str(FIXTURE).expect("fixture is JSON");
        let alice = peer(&v["alice"]);
        Fixture {
            secret: s(&v, "secret"),
            identity: IdentityRecord {
                account_pickle: s(&v, "account_pickle"),
                fallback_published_at: v["fallback_published_at"].as_f64(),
            },
            sessions: v["sessions"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| SessionRecord {
                    peer: alice.id.clone(),
                    session_id: s(r, "session_id"),
                    pickle: s(r, "pickle"),
                    last_received: r["last_received"].as_f64().unwrap_or_default(),
                    created: r["created"].as_f64().unwrap_or_default(),
                })
                .collect(),
            carol: peer(&v["carol"]),
            canary: Mail {
                mtype: v["canary"]["mtype"].as_i64().unwrap_or_default(),
                body: s(&v["canary"], "body"),
                text: s(&v["canary"], "text"),
            },
            alice,
        }
    }

    /// A fresh store holding Bob's state.
    pub fn store(&self) -> MemoryStore {
        let store = MemoryStore::new();
        let lock = store.lock().expect("memory store");
        store
            .commit(
                &lock,
                Changes {
                    identity: Some(self.identity.clone()),
                    sessions: self.sessions.clone(),
                    ..Changes::default()
                },
            )
            .expect("memory store");
        drop(lock);
        store
    }

    /// The fixture as JSON (for the generator).
    pub fn to_json(&self) -> Value {
        let p = |p: &Peer| json!({"id": p.id.as_str(), "identity_key": p.identity_key, "signing_key": p.signing_key});
        json!({
            "secret": self.secret,
            "account_pickle": self.identity.account_pickle,
            "fallback_published_at": self.identity.fallback_published_at,
            "sessions": self.sessions.iter().map(|r| json!({
                "session_id": r.session_id,
                "pickle": r.pickle,
                "last_received": r.last_received,
                "created": r.created,
            })).collect::<Vec<_>>(),
            "alice": p(&self.alice),
            "carol": p(&self.carol),
            "canary": {"mtype": self.canary.mtype, "body": self.canary.body, "text": self.canary.text},
        })
    }
}

/// A relay that knows Alice's and Carol's keys, takes every message, and
/// hands out queued `read_messages` answers (then `[]`).
pub struct MailRelay {
    peers: Vec<Peer>,
    answers: Mutex<VecDeque<Value>>,
    sent: Mutex<u64>,
}

impl MailRelay {
    pub fn new(fixture: &Fixture) -> Self {
        Self {
            peers: vec![fixture.alice.clone(), fixture.carol.clone()],
            answers: Mutex::default(),
            sent: Mutex::new(0),
        }
    }

    /// The next `read_messages` answer.
    pub fn queue(&self, answer: Value) {
        self.answers.lock().expect("lock").push_back(answer);
    }

    fn answer(&self, request: &SignedRequest) -> Result<Value, TransportError> {
        let refuse = |error: &str| TransportError::Refused {
            status: 400,
            error: error.into(),
        };
        match request.tool {
            Tool::ReadMessages => Ok(self
                .answers
                .lock()
                .expect("lock")
                .pop_front()
                .unwrap_or_else(|| json!([]))),
            Tool::GetKeys => {
                let want = request.args["peer"].as_str().unwrap_or_default();
                self.peers
                    .iter()
                    .find(|p| p.id.as_str() == want)
                    .map(|p| json!({"identity_key": p.identity_key, "signing_key": p.signing_key}))
                    .ok_or_else(|| refuse("unknown peer or no published keys"))
            }
            Tool::SendMessage => {
                let mut n = self.sent.lock().expect("lock");
                *n += 1;
                Ok(json!({"message_id": *n, "ts": NOW}))
            }
            Tool::CountKeys => Ok(json!({"unclaimed": 100, "has_fallback": true})),
            Tool::PublishKeys => Ok(json!({"ok": true})),
            _ => Err(refuse("not here")),
        }
    }
}

instant_transport!(MailRelay);

/// HTTP statuses a response script picks from (mostly 200).
pub const STATUSES: [u16; 8] = [200, 200, 200, 200, 400, 429, 500, 502];
/// Separates the responses of a script.
pub const SEPARATOR: u8 = 0xFF;

/// Maps a status and body to what the HTTP transport would return.
pub fn interpret(status: u16, body: &[u8]) -> Result<Value, TransportError> {
    let json = serde_json::from_slice::<Value>(body).ok();
    if status == 200 {
        return json.ok_or_else(|| TransportError::BadResponse("the answer is not JSON".into()));
    }
    let error = match json.as_ref().and_then(|v| v.get("error")) {
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => format!("HTTP {status}"),
    };
    Err(TransportError::Refused { status, error })
}

/// A relay whose answers are a script: responses separated by 0xFF, each a
/// status byte (an index into [`STATUSES`]) and a body. When the script
/// runs out, requests are not sent.
pub struct ScriptRelay {
    script: Mutex<VecDeque<(u16, Vec<u8>)>>,
    /// How many calls were answered from the script.
    pub calls: Mutex<usize>,
}

impl ScriptRelay {
    pub fn new(data: &[u8]) -> Self {
        let script = data
            .split(|b| *b == SEPARATOR)
            .filter_map(|chunk| {
                let (&first, body) = chunk.split_first()?;
                Some((STATUSES[first as usize % STATUSES.len()], body.to_vec()))
            })
            .collect();
        Self {
            script: Mutex::new(script),
            calls: Mutex::new(0),
        }
    }

    /// Writes a script (for the generator): the inverse of [`new`](Self::new).
    pub fn encode(responses: &[(u16, Vec<u8>)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, (status, body)) in responses.iter().enumerate() {
            if i > 0 {
                out.push(SEPARATOR);
            }
            let code = STATUSES.iter().position(|s| s == status).unwrap_or(4);
            out.push(code as u8);
            out.extend(body.iter().filter(|b| **b != SEPARATOR));
        }
        out
    }

    fn answer(&self, _request: &SignedRequest) -> Result<Value, TransportError> {
        let next = self.script.lock().expect("lock").pop_front();
        match next {
            Some((status, body)) => {
                *self.calls.lock().expect("lock") += 1;
                interpret(status, &body)
            }
            None => Err(TransportError::NotSent("the script ended".into())),
        }
    }
}

instant_transport!(ScriptRelay);

/// Outbox entries that are messages (not acks).
fn messages_in_outbox<T: Transport>(client: &Client<MemoryStore, T, SimClock>) -> usize {
    client
        .store()
        .outbox()
        .expect("store readable")
        .iter()
        .filter(|e| e.kind == OutboxKind::Message)
        .count()
}

/// What `client_responses` does with Bob, whatever the relay answers: each
/// operation may fail, none may panic, and the store must stay consistent.
/// The seed generator runs the same against a real relay.
pub async fn drive<T: Transport>(
    client: &Client<MemoryStore, T, SimClock>,
    clock: &SimClock,
    alice: &UserId,
    carol: &UserId,
) {
    let _ = client.receive().await;
    // Alice: a session exists. Carol: a key must be claimed first.
    for (peer, text) in [(alice, "to alice"), (carol, "to carol")] {
        let before = messages_in_outbox(client);
        let entry = |id: &str| client.store().outbox_entry(id).expect("store readable");
        match client.send(peer, text).await {
            Ok(SendReceipt {
                id,
                delivery: Delivery::Queued { .. },
            }) => assert!(entry(&id).is_some(), "a queued message waits for its ack"),
            Ok(SendReceipt {
                id,
                delivery: Delivery::Refused,
            }) => assert!(entry(&id).is_none(), "a refused message is dropped"),
            Err(ClientError::NotDelivered { id, .. }) => {
                assert!(entry(&id).is_some(), "an undelivered message is kept")
            }
            Err(_) => assert_eq!(messages_in_outbox(client), before, "nothing was sealed"),
        }
    }
    let _ = client.publish(3, true).await;
    clock.advance(3_601.0);
    let _ = client.maintain().await;
    let _ = client.flush_outbox(0.0).await;
    let _ = client.receive().await;

    let pending = client.pending_messages().expect("store readable");
    assert_eq!(
        pending.len(),
        client.store().inbox().expect("store readable").len()
    );
    for e in client.store().outbox().expect("store readable") {
        assert!(
            &e.peer == alice || &e.peer == carol,
            "outbox entry for a stranger"
        );
        decode_message(e.mtype, &e.body).expect("the outbox holds Olm messages");
    }
}
