//! Issue #10, item 7: a refusal given before the body is read reaches a
//! client that writes its whole body before reading, as Python's `urllib`
//! does (both Python retalk clients post with it). Python's urllib from
//! the testkit venv against the `retalk-relay` binary on loopback.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use common::{relay_command, RelayProcess};
use retalk_testkit::python::{python_with_retalk, run_python};
use serde_json::Value;

/// Posts `N` times a JSON body of about `SIZE` bytes with urllib, as the
/// Python clients post; prints each outcome: `[status, body]`, or
/// `["error", text]` when no answer was read.
const POST: &str = r#"
import json, sys, urllib.request, urllib.error
url, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
body = b'{"tool": "count_keys", "args": {}, "pad": "' + b"x" * size + b'"}'
out = []
for _ in range(n):
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            out.append([r.status, r.read().decode()])
    except urllib.error.HTTPError as e:
        out.append([e.code, e.read().decode()])
    except Exception as e:
        out.append(["error", repr(e)])
print(json.dumps(out))
"#;

const TRIES: usize = 20;

/// Each of `TRIES` urllib posts of `size` bytes to a relay started with
/// `flags` gets `status` with a JSON error starting with `text`.
fn every_post_gets(flags: &[&str], size: usize, status: u64, text: &str) {
    let python = python_with_retalk("0.3.0");
    let dir = tempfile::tempdir().unwrap();
    let relay = RelayProcess::start(
        relay_command()
            .args(["--host", "127.0.0.1", "--port", "0", "--db"])
            .arg(dir.path().join("relay.db"))
            .args(flags),
    );
    let url = relay.url();
    let (n, size) = (TRIES.to_string(), size.to_string());
    let args = [url.as_str(), &n, &size].map(Path::new);
    let out: Vec<(Value, Value)> = serde_json::from_str(&run_python(&python, POST, &args)).unwrap();
    let got = out
        .iter()
        .filter(|(s, body)| {
            *s == status
                && serde_json::from_str::<Value>(body.as_str().unwrap_or_default())
                    .is_ok_and(|b| b["error"].as_str().is_some_and(|e| e.starts_with(text)))
        })
        .count();
    eprintln!("{flags:?}, {size} bytes: {got}/{TRIES} answered {status}");
    assert_eq!(got, TRIES, "{flags:?}: outcomes {out:?}");
}

#[test]
fn a_body_over_the_cap_gets_its_413_not_a_broken_pipe() {
    // Twice the cap, declared: refused on the headers, before any of it
    // is read.
    every_post_gets(
        &["--max-body", "1048576"],
        2 << 20,
        413,
        "request body too large: 2097197 bytes (max 1048576)",
    );
}

#[test]
fn a_refusal_for_a_missing_api_key_is_read_too() {
    every_post_gets(
        &["--require-api-key"],
        900 << 10,
        401,
        "valid API key required to use this relay",
    );
}
