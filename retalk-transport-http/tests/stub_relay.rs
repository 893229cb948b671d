//! HttpTransport against tiny stub relays on 127.0.0.1 that answer like the
//! Python ones: dialect detection, error mapping, headers, the audience.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::IntoResponse;
use axum::Router;
use retalk_proto::wire::{Args, SignedRequest};
use retalk_proto::Clock;
use retalk_transport_http::{Dialect, HttpTransport, SystemClock, Transport, TransportError};
use serde_json::{json, Value};

/// What a stub saw: (path, authorization header, request body).
type Seen = Arc<Mutex<Vec<(String, Option<String>, Value)>>>;

/// Serves `answer` for every request on a fresh port; returns the base URL.
async fn stub<F>(answer: F) -> (String, Seen)
where
    F: Fn(&Value) -> (StatusCode, String) + Clone + Send + Sync + 'static,
{
    let seen: Seen = Arc::default();
    let log = seen.clone();
    let app = Router::new().fallback(move |uri: Uri, headers: HeaderMap, body: Bytes| {
        let log = log.clone();
        let answer = answer.clone();
        async move {
            let value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let auth = headers
                .get("authorization")
                .map(|v| v.to_str().unwrap().to_owned());
            log.lock()
                .unwrap()
                .push((uri.path().to_owned(), auth, value.clone()));
            let (status, text) = answer(&value);
            (status, [("content-type", "application/json")], text).into_response()
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), seen)
}

/// Like a Python relay of `version`: a KeyError text for the other dialect.
fn python_relay(version: Dialect) -> impl Fn(&Value) -> (StatusCode, String) + Clone {
    move |req: &Value| {
        let field = version.id_field();
        if req["args"]["auth"].get(field).is_none() {
            (
                StatusCode::BAD_REQUEST,
                json!({"error": format!("'{field}'")}).to_string(),
            )
        } else {
            (
                StatusCode::OK,
                json!({"unclaimed": 0, "has_fallback": false}).to_string(),
            )
        }
    }
}

fn count_keys(audience: &str) -> SignedRequest {
    let account = vodozemac::olm::Account::new();
    SignedRequest::sign(&account, &Args::CountKeys, audience, SystemClock.now())
}

fn dialect_of(req: &Value) -> Dialect {
    if req["args"]["auth"].get("fingerprint").is_some() {
        Dialect::V030
    } else {
        Dialect::V001
    }
}

#[tokio::test]
async fn switches_to_030_for_a_python_030_relay_and_remembers() {
    let (url, seen) = stub(python_relay(Dialect::V030)).await;
    let t = HttpTransport::new(&url).unwrap();
    assert_eq!(t.dialect(), Dialect::V001);
    let r = t.call(count_keys(&url)).await.unwrap();
    assert_eq!(r, json!({"unclaimed": 0, "has_fallback": false}));
    assert_eq!(t.dialect(), Dialect::V030);
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 2);
        assert_eq!(dialect_of(&seen[0].2), Dialect::V001);
        assert_eq!(dialect_of(&seen[1].2), Dialect::V030);
        // The same signed request, retried: same nonce and signature.
        assert_eq!(
            seen[0].2["args"]["auth"]["nonce"],
            seen[1].2["args"]["auth"]["nonce"]
        );
        assert_eq!(
            seen[0].2["args"]["auth"]["sig"],
            seen[1].2["args"]["auth"]["signature"]
        );
    }
    // Remembered: the next call goes out in 0.3.0 straight away.
    t.call(count_keys(&url)).await.unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 3);
    assert_eq!(dialect_of(&seen[2].2), Dialect::V030);
}

#[tokio::test]
async fn switches_to_001_for_a_python_001_relay() {
    let (url, seen) = stub(python_relay(Dialect::V001)).await;
    let t = HttpTransport::builder(&url)
        .dialect(Dialect::V030)
        .build()
        .unwrap();
    t.call(count_keys(&url)).await.unwrap();
    assert_eq!(t.dialect(), Dialect::V001);
    t.call(count_keys(&url)).await.unwrap();
    assert_eq!(seen.lock().unwrap().len(), 3);
}

#[tokio::test]
async fn other_refusals_are_not_retried() {
    let (url, seen) = stub(|_: &Value| {
        (
            StatusCode::BAD_REQUEST,
            json!({"error": "replay detected: nonce already used"}).to_string(),
        )
    })
    .await;
    let t = HttpTransport::new(&url).unwrap();
    let e = t.call(count_keys(&url)).await.unwrap_err();
    assert_eq!(
        e,
        TransportError::Refused {
            status: 400,
            error: "replay detected: nonce already used".into()
        }
    );
    assert!(!e.is_transient());
    assert_eq!(seen.lock().unwrap().len(), 1);
    assert_eq!(t.dialect(), Dialect::V001);
}

#[tokio::test]
async fn a_relay_that_refuses_both_dialects_keeps_the_first() {
    let (url, seen) = stub(|req: &Value| {
        let want = if dialect_of(req) == Dialect::V001 {
            "fingerprint"
        } else {
            "user_id"
        };
        (
            StatusCode::BAD_REQUEST,
            json!({"error": format!("'{want}'")}).to_string(),
        )
    })
    .await;
    let t = HttpTransport::new(&url).unwrap();
    let e = t.call(count_keys(&url)).await.unwrap_err();
    assert!(matches!(e, TransportError::Refused { status: 400, .. }));
    assert_eq!(seen.lock().unwrap().len(), 2, "one retry only");
    assert_eq!(t.dialect(), Dialect::V001);
}

#[tokio::test]
async fn errors_are_mapped() {
    // A proxy's HTML error page.
    let (url, _) =
        stub(|_: &Value| (StatusCode::BAD_GATEWAY, "<html>upstream down</html>".into())).await;
    let e = HttpTransport::new(&url)
        .unwrap()
        .call(count_keys(&url))
        .await
        .unwrap_err();
    assert_eq!(
        e,
        TransportError::Refused {
            status: 502,
            error: "HTTP 502 Bad Gateway: <html>upstream down</html>".into()
        }
    );
    assert!(e.is_transient());

    // 200 that is not JSON.
    let (url, _) = stub(|_: &Value| (StatusCode::OK, "hello".into())).await;
    let e = HttpTransport::new(&url)
        .unwrap()
        .call(count_keys(&url))
        .await
        .unwrap_err();
    assert!(
        matches!(e, TransportError::BadResponse(ref t) if t.contains("hello")),
        "{e}"
    );

    // 429 with the relay's text.
    let (url, _) = stub(|_: &Value| {
        (
            StatusCode::TOO_MANY_REQUESTS,
            json!({"error": "rate limit exceeded; slow down and retry"}).to_string(),
        )
    })
    .await;
    let e = HttpTransport::new(&url)
        .unwrap()
        .call(count_keys(&url))
        .await
        .unwrap_err();
    assert!(e.is_transient());
    assert_eq!(e.to_string(), "rate limit exceeded; slow down and retry");

    // Nobody listening.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}");
    let e = HttpTransport::new(&url)
        .unwrap()
        .call(count_keys(&url))
        .await
        .unwrap_err();
    assert!(matches!(e, TransportError::NotSent(_)), "{e}");
}

#[tokio::test]
async fn a_silent_relay_times_out() {
    // Accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let t = HttpTransport::builder(&url)
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let start = std::time::Instant::now();
    let e = t.call(count_keys(&url)).await.unwrap_err();
    assert!(
        matches!(e, TransportError::Unreachable(ref s) if s.contains("timed out")),
        "{e}"
    );
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn posts_to_the_url_as_given_with_the_api_key() {
    let (base, seen) = stub(python_relay(Dialect::V001)).await;
    let url = format!("{base}/relay/v1");
    let t = HttpTransport::builder(&url).api_key("k3y").build().unwrap();
    assert_eq!(t.audience(), url);
    t.call(count_keys(&url)).await.unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen[0].0, "/relay/v1");
    assert_eq!(seen[0].1.as_deref(), Some("Bearer k3y"));
}

#[tokio::test]
async fn info_is_read_below_the_url() {
    let (base, seen) =
        stub(|_: &Value| (StatusCode::OK, json!({"max_group_size": 42}).to_string())).await;
    let t = HttpTransport::new(format!("{base}/prefix/")).unwrap();
    assert_eq!(t.max_group_size().await.unwrap(), 42);
    assert_eq!(seen.lock().unwrap()[0].0, "/prefix/info");
}

#[tokio::test]
async fn oversized_answers_are_refused() {
    let (url, _) = stub(|_: &Value| (StatusCode::OK, format!("\"{}\"", "x".repeat(4096)))).await;
    let t = HttpTransport::builder(&url)
        .max_response_bytes(1000)
        .build()
        .unwrap();
    let e = t.call(count_keys(&url)).await.unwrap_err();
    assert!(matches!(e, TransportError::BadResponse(_)), "{e}");
}
