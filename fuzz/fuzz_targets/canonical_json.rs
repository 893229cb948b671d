//! Any JSON text -> canonical form: never a panic, ASCII only, and (when
//! every number is finite) it parses back to a fixed point. Out-of-range
//! floats print as Python prints them, `Infinity`, which is not JSON: the
//! first crash this target found, kept as a unit test in canonical.rs.
#![no_main]

use libfuzzer_sys::fuzz_target;
use retalk_proto::canonical::canonical;
use serde_json::Value;

fn finite(v: &Value) -> bool {
    match v {
        Value::Number(n) => n.as_f64().is_some_and(f64::is_finite),
        Value::Array(a) => a.iter().all(finite),
        Value::Object(m) => m.values().all(finite),
        _ => true,
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<Value>(data) else { return };
    let text = canonical(&value);
    assert!(text.is_ascii());
    if finite(&value) {
        let again: Value = serde_json::from_str(&text).expect("canonical JSON parses");
        assert_eq!(canonical(&again), text, "canonical form is a fixed point");
    }
});
