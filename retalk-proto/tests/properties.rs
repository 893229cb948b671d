//! Property tests: canonical JSON and request signing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use retalk_proto::auth::Auth;
use retalk_proto::canonical::{args_hash, canonical};
use retalk_proto::wire::{Request, SignedRequest, Tool};
use serde_json::{Map, Value};

fn json(strings: impl Strategy<Value = String> + Clone + 'static) -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        strings.clone().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((strings.clone(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

proptest! {
    /// On printable ASCII, canonical JSON is serde_json's sorted compact form.
    #[test]
    fn matches_serde_json_on_ascii(v in json("[ -~]{0,12}".prop_map(String::from))) {
        prop_assert_eq!(canonical(&v), serde_json::to_string(&v).unwrap());
    }

    /// Any value, any text: the canonical form parses back to the same value.
    #[test]
    fn round_trips(v in json(any::<String>())) {
        let text = canonical(&v);
        prop_assert!(text.is_ascii());
        let back: Value = serde_json::from_str(&text).unwrap();
        prop_assert_eq!(back, v);
    }

    /// A request verifies iff nothing signed was changed.
    #[test]
    fn verifies_iff_unchanged(
        peer in "[0-9a-f]{32}",
        body in any::<String>(),
        mtype in 0i64..2,
        which in 0usize..6,
        tamper in any::<bool>(),
    ) {
        let account = vodozemac::olm::Account::new();
        let audience = "http://127.0.0.1:8766";
        let now = 1_800_000_000.0;
        let mut args = Map::new();
        args.insert("to".into(), peer.clone().into());
        args.insert("mtype".into(), mtype.into());
        args.insert("body".into(), body.clone().into());
        let args = Value::Object(args);
        let auth = Auth::sign(&account, "send_message", audience, &args_hash(&args), now);
        let req = SignedRequest { tool: Tool::SendMessage, args, auth };
        let mut value: Value = serde_json::from_slice(&req.to_body(retalk_proto::auth::Dialect::V001)).unwrap();
        if tamper {
            let a = &mut value["args"];
            match which {
                0 => a["to"] = format!("{}{}", if peer.starts_with('f') { '0' } else { 'f' }, &peer[1..]).into(),
                1 => a["mtype"] = (1 - mtype).into(),
                2 => a["body"] = format!("{body}!").into(),
                3 => a["auth"]["nonce"] = "0".repeat(32).into(),
                4 => a["auth"]["ts"] = "1800000001".into(),
                _ => value["tool"] = "get_keys".into(),
            }
        }
        let verdict = Request::from_value(value).ok().and_then(|r| {
            r.auth.verify(r.dialect, r.tool.name(), &r.args_hash, &[audience.to_owned()], now).ok()
        });
        if tamper {
            prop_assert!(verdict.is_none());
        } else {
            prop_assert!(verdict.is_some());
        }
    }
}
