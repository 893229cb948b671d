//! Any JSON text -> canonical form: never a panic, ASCII only, and it
//! parses back to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use retalk_proto::canonical::canonical;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else { return };
    let text = canonical(&value);
    assert!(text.is_ascii());
    let again: serde_json::Value = serde_json::from_str(&text).expect("canonical JSON parses");
    assert_eq!(canonical(&again), text, "canonical form is a fixed point");
});
