//! Olm input to a receiving client: Bob (a real client on a MemoryStore,
//! with a live session with Alice, from fixtures/bob.json) fetches mail
//! shaped from the fuzz input. He must never panic, must report what he
//! cannot open (never keep it pending), and must stay usable: afterwards
//! he still opens a real message from Alice, and shows it exactly once.
//!
//! The first byte picks the shape: 0 = the whole `read_messages` answer
//! as JSON; 1 = one item from Alice/Carol/a stranger (byte 2), of a type
//! (byte 3), whose body is the rest as raw Olm bytes (base64-encoded here);
//! 2 and 3 = the same with the rest as the body text itself.
#![no_main]

use std::sync::LazyLock;

use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use retalk_fuzz::{block_on, config, Fixture, MailRelay, NOW};
use retalk_proto::client::{Client, ClientError, Store};
use retalk_proto::SimClock;
use serde_json::{json, Value};

static FIXTURE: LazyLock<Fixture> = LazyLock::new(Fixture::load);

fn shape(data: &[u8], f: &Fixture) -> Value {
    let Some((&mode, rest)) = data.split_first() else {
        return json!([]);
    };
    if mode % 4 == 0 {
        return serde_json::from_slice(rest)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(rest).into_owned()));
    }
    let [who, kind, body @ ..] = rest else {
        return json!([]);
    };
    let from = match who % 4 {
        0 | 1 => f.alice.id.as_str().to_owned(),
        2 => f.carol.id.as_str().to_owned(),
        _ => "x".repeat(usize::from(*who)),
    };
    let mtype = match kind % 4 {
        0 => 0,
        1 => 1,
        2 => i64::from(*kind as i8),
        _ => i64::MAX,
    };
    let body = if mode % 4 == 1 {
        base64::engine::general_purpose::STANDARD.encode(body)
    } else {
        String::from_utf8_lossy(body).into_owned()
    };
    json!([{"message_id": 1, "ts": NOW, "from": from, "mtype": mtype, "body": body}])
}

fuzz_target!(|data: &[u8]| {
    let f = &*FIXTURE;
    let relay = MailRelay::new(f);
    relay.queue(shape(data, f));
    let bob = Client::open(f.store(), relay, SimClock::new(NOW), &f.secret)
        .expect("fixture opens")
        .with_config(config());

    let mut shown = match block_on(bob.receive()) {
        Ok(inbox) => {
            // Nothing here fails in passing: what is not opened is reported.
            assert_eq!(inbox.deferred, 0);
            inbox.messages
        }
        // Only an answer that is not a list of mail is an error.
        Err(ClientError::BadResponse {
            tool: "read_messages",
            ..
        }) => Vec::new(),
        Err(e) => panic!("unexpected error: {e}"),
    };
    assert!(
        bob.store().incoming().expect("store").is_empty(),
        "mail left pending"
    );
    assert!(
        bob.pending_messages().expect("store").is_empty(),
        "receive took the inbox"
    );

    // Still usable: Alice's next real message opens, and shows once.
    let c = &f.canary;
    bob.transport().queue(json!([{
        "message_id": 2, "ts": NOW, "from": f.alice.id.as_str(), "mtype": c.mtype, "body": c.body,
    }]));
    let inbox = block_on(bob.receive()).expect("a real message after the fuzz input");
    assert!(inbox.problems.is_empty(), "{:?}", inbox.problems);
    shown.extend(inbox.messages);
    let canaries = shown
        .iter()
        .filter(|m| m.text == c.text && m.from == f.alice.id)
        .count();
    assert_eq!(canaries, 1, "Alice's message shown exactly once");
    assert!(bob.pending_messages().expect("store").is_empty());
});
