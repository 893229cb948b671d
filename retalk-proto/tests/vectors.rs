//! Golden vectors captured from the Python packages (tests/data/).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use retalk_proto::auth::AuthError;
use retalk_proto::canonical::{args_hash, canonical};
use retalk_proto::ids::{fingerprint, UserId};
use retalk_proto::olm::{decode_message, session_config, unpickle_account, PickleKey};
use retalk_proto::relay::{MemoryRelayStore, Relay, RelayConfig};
use retalk_proto::wire::{Request, RequestError};
use serde_json::Value;
use vodozemac::olm::OlmMessage;
use vodozemac::Curve25519PublicKey;

fn load(name: &str) -> Value {
    let path = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn cases(v: &Value) -> &Vec<Value> {
    v["cases"].as_array().unwrap()
}

#[test]
fn canonical_json_matches_python() {
    let v = load("canonical_json.json");
    assert!(cases(&v).len() >= 10);
    for case in cases(&v) {
        let want = case["canonical"].as_str().unwrap();
        assert_eq!(canonical(&case["args"]), want, "{}", case["args"]);
        assert_eq!(args_hash(&case["args"]), case["sha256"].as_str().unwrap());
    }
}

#[test]
fn fingerprints_match_python() {
    let v = load("fingerprint.json");
    for case in cases(&v) {
        let (ik, sk) = (
            case["identity_key"].as_str().unwrap(),
            case["signing_key"].as_str().unwrap(),
        );
        let want = case["fingerprint"].as_str().unwrap();
        assert_eq!(fingerprint(ik, sk), want);
        assert!(UserId::parse(want).unwrap().matches_keys(ik, sk));
        assert!(!UserId::parse(want).unwrap().matches_keys(sk, ik));
    }
}

fn ts_of(body: &Value) -> f64 {
    let auth = &body["args"]["auth"];
    let ts = auth.get("ts").or_else(|| auth.get("timestamp")).unwrap();
    ts.as_str().unwrap().parse().unwrap()
}

fn verify(body: &Value, audience: &str, now: f64) -> Result<UserId, RequestError> {
    let req = Request::from_value(body.clone())?;
    Ok(req.auth.verify(
        req.dialect,
        req.tool.name(),
        &req.args_hash,
        &[audience.to_owned()],
        now,
    )?)
}

fn check_signed_file(name: &str) {
    let v = load(name);
    assert!(cases(&v).len() >= 7);
    for case in cases(&v) {
        let body = &case["body"];
        let audience = case["audience"].as_str().unwrap();
        let now = ts_of(body);
        let tool = case["tool"].as_str().unwrap();
        verify(body, audience, now).unwrap_or_else(|e| panic!("{name} {tool}: {e}"));
        // Within the window either way, outside it refused.
        verify(body, audience, now + 150.0).unwrap();
        verify(body, audience, now - 150.0).unwrap();
        assert_eq!(
            verify(body, audience, now + 151.0).unwrap_err(),
            AuthError::Stale.into()
        );
        assert_eq!(
            verify(body, audience, now - 3600.0).unwrap_err(),
            AuthError::Stale.into()
        );

        // Another relay's audience.
        assert_eq!(
            verify(body, "http://127.0.0.1:8767", now).unwrap_err(),
            AuthError::BadSignature.into()
        );
        // A multi-audience relay accepts it through any entry.
        let req = Request::from_value(body.clone()).unwrap();
        let auds = ["https://other.example".to_owned(), audience.to_owned()];
        req.auth
            .verify(req.dialect, tool, &req.args_hash, &auds, now)
            .unwrap();

        // Every business argument changed, one at a time.
        let args = body["args"].as_object().unwrap();
        for key in args.keys().filter(|k| *k != "auth") {
            let mut tampered = body.clone();
            let slot = &mut tampered["args"][key.as_str()];
            *slot = match slot {
                Value::String(s) => Value::String(format!("{s}x")),
                Value::Number(n) => Value::from(n.as_i64().unwrap() ^ 1),
                Value::Bool(b) => Value::Bool(!*b),
                Value::Null => Value::Object(Default::default()),
                Value::Object(m) => {
                    let mut m = m.clone();
                    m.insert("AAAAAAAAAZZ".into(), "k".into());
                    Value::Object(m)
                }
                Value::Array(_) => Value::Null,
            };
            let err = verify(&tampered, audience, now).unwrap_err();
            assert!(
                matches!(
                    err,
                    RequestError::Auth(AuthError::BadSignature) | RequestError::BadArg { .. }
                ),
                "{name} {tool} tampered {key}: {err}"
            );
        }
        // The tool changed (to one with the same argument set).
        let swapped = match tool {
            "get_keys" => Some("claim_key"),
            "claim_key" => Some("get_keys"),
            "count_keys" => Some("read_messages"),
            _ => None,
        };
        if let Some(other) = swapped {
            if body["args"].as_object().unwrap().len() == 1 || other != "read_messages" {
                let mut tampered = body.clone();
                tampered["tool"] = other.into();
                assert_eq!(
                    verify(&tampered, audience, now).unwrap_err(),
                    AuthError::BadSignature.into()
                );
            }
        }
        // The nonce, the timestamp text or the signature changed.
        for (field, value) in [
            ("nonce", "00000000000000000000000000000000"),
            ("sig", "AAAA"),
            ("signature", "AAAA"),
        ] {
            let mut tampered = body.clone();
            if tampered["args"]["auth"].get(field).is_some() {
                tampered["args"]["auth"][field] = value.into();
                assert_eq!(
                    verify(&tampered, audience, now).unwrap_err(),
                    AuthError::BadSignature.into()
                );
            }
        }
        // Another user's id with these keys.
        let mut tampered = body.clone();
        let id_field = if tampered["args"]["auth"].get("user_id").is_some() {
            "user_id"
        } else {
            "fingerprint"
        };
        tampered["args"]["auth"][id_field] = "0123456789abcdef0123456789abcdef".into();
        assert_eq!(
            verify(&tampered, audience, now).unwrap_err(),
            AuthError::KeysDoNotHash.into()
        );
    }
}

#[test]
fn signed_requests_001_verify_and_tampering_fails() {
    check_signed_file("signed_requests_001.json");
}

#[test]
fn signed_requests_030_verify_and_tampering_fails() {
    check_signed_file("signed_requests_030.json");
}

/// The whole relay answers each captured request, in the caller's dialect,
/// and refuses the same bytes a second time.
#[test]
fn relay_serves_captured_requests_once() {
    for (name, id_field) in [
        ("signed_requests_001.json", "user_id"),
        ("signed_requests_030.json", "fingerprint"),
    ] {
        let v = load(name);
        let relay = Relay::new(MemoryRelayStore::new(), RelayConfig::default());
        for case in cases(&v) {
            let body = serde_json::to_vec(&case["body"]).unwrap();
            let now = ts_of(&case["body"]);
            let first = relay.handle(&body, now);
            let tool = case["tool"].as_str().unwrap();
            match tool {
                "count_keys" => assert_eq!(
                    first.body,
                    serde_json::json!({"unclaimed": 0, "has_fallback": false})
                ),
                "publish_keys" => {
                    assert_eq!(first.status, 200, "{name}: {}", first.body);
                    assert_eq!(first.body["ok"], true);
                    assert!(
                        first.body[id_field].is_string(),
                        "{name}: answer in the caller's dialect: {}",
                        first.body
                    );
                }
                "get_keys" | "claim_key" => {
                    assert_eq!(first.status, 400);
                    assert!(first.body["error"]
                        .as_str()
                        .unwrap()
                        .starts_with("unknown peer or no published keys: "));
                }
                "send_message" => {
                    assert_eq!(first.status, 400);
                    assert!(first.body["error"]
                        .as_str()
                        .unwrap()
                        .starts_with("unknown recipient: "));
                }
                "read_messages" => assert_eq!(first.body, serde_json::json!([])),
                other => panic!("unexpected tool {other}"),
            }
            let again = relay.handle(&body, now + 1.0);
            assert_eq!(again.status, 400);
            assert_eq!(again.body["error"], "replay detected: nonce already used");
        }
    }
}

#[test]
fn python_olm_pickle_and_prekey_messages_decrypt() {
    let v = load("olm_prekey.json");
    let key = PickleKey::from_secret(v["bob_secret"].as_str().unwrap());
    let mut bob = unpickle_account(v["bob_pickle"].as_str().unwrap(), &key).unwrap();
    assert_eq!(
        bob.curve25519_key().to_base64(),
        v["bob_identity_key"].as_str().unwrap()
    );
    assert_eq!(
        bob.ed25519_key().to_base64(),
        v["bob_signing_key"].as_str().unwrap()
    );
    assert!(unpickle_account(
        v["bob_pickle"].as_str().unwrap(),
        &PickleKey::from_secret("wrong")
    )
    .is_err());

    let alice_key =
        Curve25519PublicKey::from_base64(v["alice_identity_key"].as_str().unwrap()).unwrap();
    let messages = v["messages"].as_array().unwrap();
    let first = decode_message(
        messages[0]["mtype"].as_i64().unwrap(),
        messages[0]["body"].as_str().unwrap(),
    )
    .unwrap();
    let OlmMessage::PreKey(pre) = &first else {
        panic!("first message is a pre-key message")
    };
    let created = bob
        .create_inbound_session(session_config(), alice_key, pre)
        .unwrap();
    let mut session = created.session;
    assert_eq!(
        String::from_utf8(created.plaintext).unwrap(),
        messages[0]["plaintext"].as_str().unwrap()
    );
    let second = decode_message(
        messages[1]["mtype"].as_i64().unwrap(),
        messages[1]["body"].as_str().unwrap(),
    )
    .unwrap();
    let OlmMessage::PreKey(pre2) = &second else {
        panic!("second message is a pre-key message")
    };
    assert_eq!(pre2.session_id(), session.session_id(), "same session");
    let plain = session.decrypt(&second).unwrap();
    assert_eq!(
        String::from_utf8(plain).unwrap(),
        messages[1]["plaintext"].as_str().unwrap()
    );
    // The envelope is a chat message from alice.
    let env = retalk_proto::envelope::Envelope::decode(
        messages[0]["plaintext"].as_str().unwrap().as_bytes(),
    )
    .unwrap();
    assert_eq!(
        env,
        retalk_proto::envelope::Envelope::msg(
            "00000000000000000000000000000001".into(),
            "hello bob \u{2603}",
            "alice"
        )
    );
}
