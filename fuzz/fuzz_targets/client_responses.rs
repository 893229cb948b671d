//! Arbitrary relay answers to a client: every call Bob (a real client on a
//! MemoryStore, from fixtures/bob.json) makes gets the next response of a
//! script cut from the fuzz input (responses separated by 0xFF; each a
//! status byte and a body, interpreted as the HTTP transport does), while
//! he receives, sends to a peer with a session and to one without,
//! publishes, maintains and flushes. Never a panic, and the invariants in
//! `retalk_fuzz::drive` hold (what was sealed is kept until acked, what
//! failed before sealing left nothing behind, the outbox holds only Olm
//! messages to known peers).
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use retalk_fuzz::{block_on, config, drive, Fixture, ScriptRelay, NOW};
use retalk_proto::client::Client;
use retalk_proto::SimClock;

static FIXTURE: LazyLock<Fixture> = LazyLock::new(Fixture::load);

fuzz_target!(|data: &[u8]| {
    let f = &*FIXTURE;
    let clock = SimClock::new(NOW);
    let bob = Client::open(f.store(), ScriptRelay::new(data), clock.clone(), &f.secret)
        .expect("fixture opens")
        .with_config(config());
    block_on(drive(&bob, &clock, &f.alice.id, &f.carol.id));
});
