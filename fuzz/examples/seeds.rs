//! Writes the fixture and the seed corpora from real traffic.
//!
//! Three clients (Alice, Bob, Carol) talk through a real relay (in memory,
//! through the same bytes the wire carries); every request body and every
//! answer is recorded. Bob's state after his first exchange with Alice is
//! the fixture (`fixtures/bob.json`) that `olm_receive` and
//! `client_responses` start from, and Alice's next messages to him are
//! real, decryptable seeds for that state. Seeds go to `seeds/<target>/`
//! (committed) and are copied into `corpus/<target>/` (local).
//!
//!     cd fuzz && cargo run --example seeds
//!
//! Each run makes new keys: the fixture and the seeds are replaced together.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use retalk_fuzz::{
    block_on, drive, instant_transport, interpret, Fixture, Mail, MailRelay, Peer, ScriptRelay, NOW,
};
use retalk_proto::auth::Dialect;
use retalk_proto::client::{Client, ClientConfig, MemoryStore, Store, TransportError};
use retalk_proto::envelope::Envelope;
use retalk_proto::relay::{MemoryRelayStore, Relay, RelayConfig, StoredMessage};
use retalk_proto::wire::{SignedRequest, Tool};
use retalk_proto::{Clock, SimClock, UserId};
use serde_json::{json, Value};

/// One recorded call.
#[derive(Clone)]
struct Call {
    tool: Tool,
    request: Vec<u8>,
    args: Value,
    status: u16,
    response: Vec<u8>,
}

type Log = Arc<Mutex<Vec<Call>>>;

/// A transport to the in-process relay that records every exchange.
struct Recording {
    relay: Arc<Relay<MemoryRelayStore>>,
    clock: SimClock,
    log: Log,
}

impl Recording {
    fn new(relay: &Arc<Relay<MemoryRelayStore>>, clock: &SimClock, log: &Log) -> Self {
        Self {
            relay: relay.clone(),
            clock: clock.clone(),
            log: log.clone(),
        }
    }

    fn answer(&self, request: &SignedRequest) -> Result<Value, TransportError> {
        let body = request.to_body(Dialect::V001);
        let answer = self.relay.handle(&body, self.clock.now());
        let response = serde_json::to_vec(&answer.body).expect("JSON");
        self.log.lock().expect("lock").push(Call {
            tool: request.tool,
            request: body,
            args: request.args.clone(),
            status: answer.status,
            response: response.clone(),
        });
        interpret(answer.status, &response)
    }
}

instant_transport!(Recording);

type Agent = Client<MemoryStore, Recording, SimClock>;

fn agent(relay: &Arc<Relay<MemoryRelayStore>>, clock: &SimClock, log: &Log, name: &str) -> Agent {
    Client::create(
        MemoryStore::new(),
        Recording::new(relay, clock, log),
        clock.clone(),
        &format!("{name}-secret"),
        name,
    )
    .expect("client")
    .with_config(ClientConfig {
        otk_batch: 10,
        min_otks: 2,
        ..ClientConfig::default()
    })
}

fn peer(a: &Agent) -> Peer {
    Peer {
        id: a.user_id().clone(),
        identity_key: a.identity_key().into(),
        signing_key: a.signing_key().into(),
    }
}

/// Sends `text` and returns the ciphertext the relay queued for it.
fn send(relay: &Relay<MemoryRelayStore>, from: &Agent, to: &UserId, text: &str) -> StoredMessage {
    let before: BTreeSet<i64> = relay
        .store()
        .queued()
        .iter()
        .map(|m| m.message_id)
        .collect();
    block_on(from.send(to, text)).expect("send");
    let mut new: Vec<_> = relay
        .store()
        .queued()
        .into_iter()
        .filter(|m| !before.contains(&m.message_id) && m.sender == from.user_id().as_str())
        .collect();
    assert_eq!(new.len(), 1);
    new.remove(0)
}

fn texts(inbox: retalk_proto::Inbox) -> Vec<String> {
    inbox.messages.into_iter().map(|m| m.text).collect()
}

fn item(m: &StoredMessage) -> Value {
    json!({"message_id": m.message_id, "ts": m.ts, "from": m.sender, "mtype": m.mtype, "body": m.body})
}

/// An `olm_receive` input of shape 0: a whole `read_messages` answer.
fn answer_seed<'a>(mail: impl IntoIterator<Item = &'a StoredMessage>) -> Vec<u8> {
    let answer = Value::Array(mail.into_iter().map(item).collect());
    [vec![0u8], serde_json::to_vec(&answer).expect("JSON")].concat()
}

/// Writes `files` as `seeds/<target>/<prefix>-<n>` and into the corpus.
fn write(root: &Path, target: &str, files: &[(String, Vec<u8>)]) {
    for dir in ["seeds", "corpus"] {
        let d = root.join(dir).join(target);
        if dir == "seeds" && d.exists() {
            std::fs::remove_dir_all(&d).expect("clear old seeds");
        }
        std::fs::create_dir_all(&d).expect("mkdir");
        for (name, bytes) in files {
            std::fs::write(d.join(format!("seed-{name}")), bytes).expect("write");
        }
    }
    println!("{target}: {} seeds", files.len());
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let clock = SimClock::new(NOW);
    let relay = Arc::new(Relay::new(MemoryRelayStore::new(), RelayConfig::default()));
    let log: Log = Arc::default();
    let alice = agent(&relay, &clock, &log, "alice");
    let bob = agent(&relay, &clock, &log, "bob");
    let carol = agent(&relay, &clock, &log, "carol");
    for a in [&alice, &bob, &carol] {
        block_on(a.publish(10, false)).expect("publish");
    }

    // A first exchange: Alice's pre-key message, acks both ways, Bob's
    // reply; Alice's later messages are normal ones.
    let first = send(&relay, &alice, bob.user_id(), "hello bob");
    assert_eq!(texts(block_on(bob.receive()).expect("bob")), ["hello bob"]);
    block_on(alice.receive()).expect("alice");
    block_on(bob.send(alice.user_id(), "hello alice")).expect("reply");
    assert_eq!(
        texts(block_on(alice.receive()).expect("alice")),
        ["hello alice"]
    );
    block_on(bob.receive()).expect("bob");
    assert!(bob.store().outbox().expect("store").is_empty());

    // Bob as he is now is the fixture.
    let identity = bob.store().identity().expect("store").expect("identity");
    let sessions = bob.store().sessions(alice.user_id()).expect("store");

    // Real mail for that state: Alice's normal messages (the last one the
    // canary, kept out of the seeds) and Carol's pre-key message.
    clock.advance(1.0);
    let texts_sent = [
        "how are you?",
        "",
        "ünïcødé ✓ \"quoted\"",
        &"a longer message: ".repeat(20),
    ];
    let mut mail: Vec<StoredMessage> = texts_sent
        .iter()
        .map(|t| send(&relay, &alice, bob.user_id(), t))
        .collect();
    mail.push(send(&relay, &carol, bob.user_id(), "hello from carol"));
    let canary = send(&relay, &alice, bob.user_id(), "canary");
    let fixture = Fixture {
        secret: "bob-secret".into(),
        identity,
        sessions,
        alice: peer(&alice),
        carol: peer(&carol),
        canary: Mail {
            mtype: canary.mtype,
            body: canary.body.clone(),
            text: "canary".into(),
        },
    };
    // The fixture opens every one of them (and the canary), as olm_receive
    // will: the seeds start deep in the ratchet, not at a parse error.
    let sent_texts = [&texts_sent[..], &["hello from carol", "canary"]].concat();
    for (m, want) in mail.iter().chain([&canary]).zip(sent_texts) {
        let relay = MailRelay::new(&fixture);
        relay.queue(json!([item(m)]));
        let fresh = Client::open(fixture.store(), relay, clock.clone(), &fixture.secret)
            .expect("fixture opens")
            .with_config(retalk_fuzz::config());
        let inbox = block_on(fresh.receive()).expect("receive");
        assert_eq!(inbox.problems, vec![]);
        assert_eq!(texts(inbox), [want]);
    }
    let text = serde_json::to_string_pretty(&fixture.to_json()).expect("JSON");
    std::fs::write(root.join("fixtures/bob.json"), text + "\n").expect("write fixture");

    // olm_receive: the whole answer, single items, raw Olm bytes, body text.
    let mut olm = vec![
        ("answer".to_owned(), answer_seed(&mail)),
        ("first-prekey".to_owned(), answer_seed([&first])),
    ];
    for (i, m) in mail.iter().enumerate() {
        let who = if m.sender == carol.user_id().as_str() {
            2u8
        } else {
            0
        };
        let raw = base64::engine::general_purpose::STANDARD
            .decode(&m.body)
            .expect("base64");
        olm.push((format!("item-{i}"), answer_seed([m])));
        olm.push((
            format!("raw-{i}"),
            [vec![1u8, who, m.mtype as u8], raw].concat(),
        ));
        olm.push((
            format!("text-{i}"),
            [vec![3u8, who, m.mtype as u8], m.body.as_bytes().to_vec()].concat(),
        ));
    }
    write(root, "olm_receive", &olm);

    // envelope: real plaintexts, and wire bodies as text.
    let mut env: Vec<(String, Vec<u8>)> = ["hello bob", "", "ünïcødé ✓", "canary"]
        .iter()
        .enumerate()
        .map(|(i, t)| {
            (
                format!("msg-{i}"),
                Envelope::msg(format!("id{i}"), t, "bob").encode(),
            )
        })
        .collect();
    env.push((
        "ack".into(),
        Envelope::Ack {
            id: "0123456789abcdef".into(),
        }
        .encode(),
    ));
    env.push((
        "other".into(),
        br#"{"id":"x1","kind":"contact","card":{"name":"z"}}"#.to_vec(),
    ));
    for (i, m) in mail.iter().chain([&first]).enumerate() {
        env.push((format!("body-{i}"), m.body.as_bytes().to_vec()));
    }
    write(root, "envelope", &env);

    // client_responses: the fixture's Bob doing what the target does,
    // against the real relay; the whole transcript and single answers.
    let bob_log: Log = Arc::default();
    let again = Client::open(
        fixture.store(),
        Recording::new(&relay, &clock, &bob_log),
        clock.clone(),
        &fixture.secret,
    )
    .expect("fixture opens")
    .with_config(retalk_fuzz::config());
    block_on(drive(&again, &clock, alice.user_id(), carol.user_id()));
    let calls = bob_log.lock().expect("lock").clone();
    let answers: Vec<(u16, Vec<u8>)> = calls
        .iter()
        .map(|c| (c.status, c.response.clone()))
        .collect();
    let mut scripts = vec![("transcript".to_owned(), ScriptRelay::encode(&answers))];
    let mut seen = BTreeSet::new();
    for (i, a) in answers.iter().enumerate() {
        if seen.insert(a.clone()) {
            scripts.push((
                format!("answer-{i}"),
                ScriptRelay::encode(std::slice::from_ref(a)),
            ));
        }
    }
    scripts.push((
        "refusal".into(),
        ScriptRelay::encode(&[(
            400,
            br#"{"error":"replay detected: nonce already used"}"#.to_vec(),
        )]),
    ));
    write(root, "client_responses", &scripts);

    // relay_request and canonical_json: every distinct request (at most a
    // few per tool), and its args.
    let all: Vec<Call> = log
        .lock()
        .expect("lock")
        .iter()
        .chain(&calls)
        .cloned()
        .collect();
    let (mut requests, mut args) = (Vec::new(), Vec::new());
    let mut per_tool = std::collections::BTreeMap::<&str, usize>::new();
    for c in &all {
        let n = per_tool.entry(c.tool.name()).or_default();
        if *n >= 5 {
            continue;
        }
        *n += 1;
        requests.push((format!("{}-{n}", c.tool.name()), c.request.clone()));
        let body: Value = serde_json::from_slice(&c.request).expect("JSON");
        args.push((
            format!("{}-{n}", c.tool.name()),
            serde_json::to_vec(&c.args).expect("JSON"),
        ));
        args.push((
            format!("{}-{n}-body", c.tool.name()),
            serde_json::to_vec(&body).expect("JSON"),
        ));
        if c.status == 200 {
            args.push((format!("{}-{n}-answer", c.tool.name()), c.response.clone()));
        }
    }
    write(root, "relay_request", &requests);
    args.truncate(40);
    write(root, "canonical_json", &args);
}
