//! `/admin`: API-key management over HTTP Basic auth, as in the Python
//! 0.3.0 relay. Disabled (404) without an admin password. Keys gate use of
//! the relay (admission), never identity; only their sha256 is stored and
//! the raw key is shown once, at creation.

use std::net::IpAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::http::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, URL_SAFE_NO_PAD};
use base64::engine::{DecodePaddingMode, Engine};
use rand::RngCore;
use retalk_proto::ids::sha256_hex;
use retalk_proto::relay::{ApiKeyRecord, RelayStore, StoreError};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use crate::clock::unix_now;
use crate::errors::HttpError;
use crate::http::{blocking, check_declared_length, ok_json, read_body, refuse, App};

/// Standard base64, padding optional (as lenient as the clients that send it).
const BASIC: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

pub(crate) async fn handle(
    app: Arc<App>,
    client: Option<IpAddr>,
    method: &Method,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    let Some(password) = app.admin_password.as_deref() else {
        return refuse(HttpError::NotFound);
    };
    // An address that guessed wrong too often is refused before its next
    // guess is even checked, so a right guess cannot be told apart.
    let now = unix_now();
    if client.is_some_and(|ip| app.admin_failures.blocked(ip, now)) {
        return refuse(HttpError::RateLimited);
    }
    if !basic_password_matches(headers, password) {
        if let Some(ip) = client {
            app.admin_failures.failed(ip, now);
        }
        return refuse(HttpError::AdminAuthRequired);
    }
    if method == Method::GET {
        let worker = app.clone();
        return match blocking(move || worker.store().api_key_list()).await {
            Ok(Ok(keys)) => html(page(&keys)),
            // Logged once per burst by the watched store.
            Ok(Err(_)) => refuse(HttpError::Storage),
            Err(e) => refuse(e),
        };
    }
    if let Err(e) = check_declared_length(&app, headers) {
        return refuse(e);
    }
    let bytes = match read_body(&app, body).await {
        Ok(b) => b,
        Err(e) => return refuse(e),
    };
    let request = if bytes.iter().all(u8::is_ascii_whitespace) {
        Map::new()
    } else {
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Object(m)) => m,
            Ok(_) => return refuse(HttpError::NotAnObject),
            Err(e) => return refuse(HttpError::NotJson(e.to_string())),
        }
    };
    let action = match Action::parse(&request) {
        Ok(a) => a,
        Err(e) => return refuse(e),
    };
    let worker = app.clone();
    match blocking(move || action.run(worker.store())).await {
        Ok(Ok(answer)) => ok_json(&answer),
        // Logged once per burst by the watched store.
        Ok(Err(_)) => refuse(HttpError::Storage),
        Err(e) => refuse(e),
    }
}

/// Whether `Authorization: Basic` carries the password (the user name is
/// ignored, as in Python). Compared in constant time.
fn basic_password_matches(headers: &HeaderMap, password: &str) -> bool {
    let Some(encoded) = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
    else {
        return false;
    };
    let Ok(decoded) = BASIC.decode(encoded.trim()) else {
        return false;
    };
    let Ok(text) = String::from_utf8(decoded) else {
        return false;
    };
    let given = text.split_once(':').map_or("", |(_, pw)| pw);
    // Equal-length digests, so neither content nor length leaks in time.
    let a = Sha256::digest(given.as_bytes());
    let b = Sha256::digest(password.as_bytes());
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// One admin request.
enum Action {
    Create { label: String },
    List,
    SetDisabled { key_hash: String, disabled: bool },
    Delete { key_hash: String },
}

impl Action {
    fn parse(req: &Map<String, Value>) -> Result<Action, HttpError> {
        let key_hash = || match req.get("key_hash") {
            None => Err(HttpError::MissingField("key_hash")),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(HttpError::NotAString("key_hash")),
        };
        match req.get("action") {
            Some(Value::String(a)) if a == "create" => {
                let label = match req.get("label") {
                    None | Some(Value::Null) => String::new(),
                    Some(Value::String(s)) => s.clone(),
                    Some(_) => return Err(HttpError::NotAString("label")),
                };
                Ok(Action::Create { label })
            }
            Some(Value::String(a)) if a == "list" => Ok(Action::List),
            Some(Value::String(a)) if a == "disable" || a == "enable" => Ok(Action::SetDisabled {
                key_hash: key_hash()?,
                disabled: a == "disable",
            }),
            Some(Value::String(a)) if a == "delete" => Ok(Action::Delete {
                key_hash: key_hash()?,
            }),
            other => Err(HttpError::UnknownAdminAction(py_repr(other))),
        }
    }

    fn run(self, store: &dyn RelayStore) -> Result<Value, StoreError> {
        Ok(match self {
            Action::Create { label } => {
                let mut raw = [0u8; 32];
                rand::rngs::OsRng.fill_bytes(&mut raw);
                let key = URL_SAFE_NO_PAD.encode(raw);
                let key_hash = sha256_hex(&key);
                store.api_key_create(&key_hash, &label, unix_now())?;
                json!({"key": key, "key_hash": key_hash, "label": label})
            }
            Action::List => {
                let keys: Vec<Value> = store.api_key_list()?.iter().map(record_json).collect();
                json!({"keys": keys})
            }
            Action::SetDisabled { key_hash, disabled } => {
                json!({"updated": store.api_key_set_disabled(&key_hash, disabled)?})
            }
            Action::Delete { key_hash } => json!({"deleted": store.api_key_delete(&key_hash)?}),
        })
    }
}

fn record_json(k: &ApiKeyRecord) -> Value {
    json!({"key_hash": k.key_hash, "label": k.label, "created": k.created, "disabled": k.disabled})
}

/// How Python's `repr` shows the action in its error text (shortened).
fn py_repr(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "None".into(),
        Some(Value::Bool(true)) => "True".into(),
        Some(Value::Bool(false)) => "False".into(),
        Some(Value::String(s)) => {
            let quote = if s.contains('\'') && !s.contains('"') {
                '"'
            } else {
                '\''
            };
            let mut out = String::from(quote);
            for c in s.chars().take(64) {
                match c {
                    '\\' => out.push_str("\\\\"),
                    c if c == quote => {
                        out.push('\\');
                        out.push(c);
                    }
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    '\t' => out.push_str("\\t"),
                    c if c.is_control() => out.push_str(&format!("\\x{:02x}", u32::from(c))),
                    c => out.push(c),
                }
            }
            out.push(quote);
            out
        }
        Some(other) => other.to_string().chars().take(64).collect(),
    }
}

fn html(page: String) -> Response {
    let mut r = Response::new(Body::from(page));
    *r.status_mut() = StatusCode::OK;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#x27;")
}

/// The operator's page (the Python relay's, word for word).
fn page(keys: &[ApiKeyRecord]) -> String {
    let rows: String = keys
        .iter()
        .map(|k| {
            format!(
                "<tr><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
                escape(&k.key_hash),
                escape(&k.label),
                if k.disabled { "disabled" } else { "active" }
            )
        })
        .collect();
    let rows = if rows.is_empty() {
        "<tr><td colspan=3>(no keys yet)</td></tr>".to_owned()
    } else {
        rows
    };
    format!(
        "<!doctype html><meta charset=utf-8><title>retalk admin</title>\
         <h1>retalk relay &mdash; API keys</h1>\
         <p>API keys gate <em>use of this relay</em> only. They are stored \
         hashed and the raw key is shown just once, at creation.</p>\
         <table border=1 cellpadding=6><tr><th>key_hash</th><th>label</th>\
         <th>status</th></tr>{rows}</table>\
         <h2>Manage (all over HTTP; Basic-auth with the admin password)</h2>\
         <pre>\
         # create a key (the response contains the raw key ONCE)\n\
         curl -u admin:PW -X POST URL/admin -d '{{\"action\":\"create\",\"label\":\"alice\"}}'\n\
         # list keys (hashes only, never raw)\n\
         curl -u admin:PW -X POST URL/admin -d '{{\"action\":\"list\"}}'\n\
         # disable / enable / delete by key_hash\n\
         curl -u admin:PW -X POST URL/admin -d '{{\"action\":\"disable\",\"key_hash\":\"...\"}}'\n\
         curl -u admin:PW -X POST URL/admin -d '{{\"action\":\"delete\",\"key_hash\":\"...\"}}'\n\
         </pre>"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(s: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        let v = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(s)
        );
        h.insert(AUTHORIZATION, HeaderValue::from_str(&v).unwrap());
        h
    }

    #[test]
    fn basic_auth_checks_only_the_password() {
        assert!(basic_password_matches(&basic("admin:pw"), "pw"));
        assert!(basic_password_matches(&basic("anyone:pw"), "pw"));
        assert!(basic_password_matches(&basic(":a:b"), "a:b"));
        assert!(!basic_password_matches(&basic("admin:pw2"), "pw"));
        assert!(!basic_password_matches(&basic("pw"), "pw"));
        assert!(!basic_password_matches(&HeaderMap::new(), "pw"));
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_static("Basic %%%"));
        assert!(!basic_password_matches(&h, "pw"));
        // Unpadded base64 is accepted too.
        h.insert(AUTHORIZATION, HeaderValue::from_static("Basic YTpwdw"));
        assert!(basic_password_matches(&h, "pw"));
    }

    #[test]
    fn actions_parse_like_python() {
        let parse = |v: Value| Action::parse(v.as_object().unwrap());
        assert!(
            matches!(parse(json!({"action": "create"})), Ok(Action::Create { label }) if label.is_empty())
        );
        assert!(matches!(parse(json!({"action": "list"})), Ok(Action::List)));
        assert!(matches!(
            parse(json!({"action": "enable", "key_hash": "h"})),
            Ok(Action::SetDisabled {
                disabled: false,
                ..
            })
        ));
        let e = |v| parse(v).err().unwrap().to_string();
        assert_eq!(e(json!({"action": "delete"})), "'key_hash'");
        assert_eq!(
            e(json!({})),
            "unknown admin action: None (create|list|disable|enable|delete)"
        );
        assert_eq!(
            e(json!({"action": "drop"})),
            "unknown admin action: 'drop' (create|list|disable|enable|delete)"
        );
        assert_eq!(
            e(json!({"action": "it's\n"})),
            "unknown admin action: \"it's\\n\" (create|list|disable|enable|delete)"
        );
        assert_eq!(
            e(json!({"action": 3})),
            "unknown admin action: 3 (create|list|disable|enable|delete)"
        );
    }

    #[test]
    fn the_page_escapes_labels() {
        let p = page(&[ApiKeyRecord {
            key_hash: "ab".into(),
            label: "<script>".into(),
            created: 0.0,
            disabled: true,
        }]);
        assert!(p.contains("&lt;script&gt;") && p.contains("disabled"));
        assert!(page(&[]).contains("(no keys yet)"));
    }
}
