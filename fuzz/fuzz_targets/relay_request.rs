//! Any request body -> the relay over the in-memory store: never a panic,
//! always a JSON answer with a status the wire allows.
#![no_main]

use libfuzzer_sys::fuzz_target;
use retalk_proto::relay::{MemoryRelayStore, Relay, RelayConfig};

fuzz_target!(|body: &[u8]| {
    let relay = Relay::new(MemoryRelayStore::new(), RelayConfig::default());
    let answer = relay.handle(body, 1_800_000_000.0);
    assert!(matches!(answer.status, 200 | 400 | 429 | 503));
    if answer.status != 200 {
        assert!(answer.body["error"].is_string());
    }
});
