//! Issue #10, item 1: a one-time key must never be handed out twice, even
//! when its owner re-uploads it after a claim (a `publish_keys` whose
//! answer was lost is retried with the same keys). Against the
//! `retalk-relay` binary on each backend, over real HTTP on loopback.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::body::Bytes;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Router;
use common::{http_agent, post, relay_command, Answer, Peer, RelayProcess};
use retalk_proto::wire::Args;
use retalk_transport_http::HttpTransport;
use serde_json::{json, Value};

const BACKENDS: [&str; 3] = ["sqlite", "sled", "memory"];

/// The relay binary on `backend` in `dir`, accepting signatures for
/// `audience`.
fn start(dir: &tempfile::TempDir, backend: &str, audience: &str) -> RelayProcess {
    RelayProcess::start(
        relay_command()
            .args(["--host", "127.0.0.1", "--port", "0", "--backend", backend])
            .arg("--db")
            .arg(dir.path().join("relay.db"))
            .args(["--audience", audience]),
    )
}

/// The same upload twice with a claim between: the claimed key never comes
/// back, and the second answer counts only the key that is new.
#[tokio::test]
async fn a_retried_upload_never_brings_back_a_claimed_key() {
    let url = "http://127.0.0.1:8766";
    for backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let relay = start(&dir, backend, url);
        let (bob, alice, carol) = (Peer::new(), Peer::new(), Peer::new());
        let publish = |ids: &[&str]| Args::PublishKeys {
            identity_key: bob.account.curve25519_key().to_base64(),
            signing_key: bob.account.ed25519_key().to_base64(),
            one_time_keys: ids
                .iter()
                .map(|id| (id.to_string(), format!("{id}-key")))
                .collect(),
            fallback_key: Some(("AAAAAAAAAAA".into(), "fallback-key".into())),
        };
        let claim = Args::ClaimKey {
            peer: bob.id.to_string(),
        };
        let added = |a: Answer| (a.status, a.json()["one_time_keys_added"].clone());

        let first = publish(&["AAAAAAAAAAA", "AAAAAAAAAAE"]);
        let a = post(relay.addr, &bob.body(&first, url)).await;
        assert_eq!(added(a), (200, json!(2)), "{backend}");
        let mut handed = vec![post(relay.addr, &alice.body(&claim, url)).await.json()];
        // The retry of the first upload, with one key more.
        let retry = publish(&["AAAAAAAAAAA", "AAAAAAAAAAE", "AAAAAAAAAAI"]);
        let a = post(relay.addr, &bob.body(&retry, url)).await;
        assert_eq!(added(a), (200, json!(1)), "{backend}");
        for _ in 0..3 {
            handed.push(post(relay.addr, &carol.body(&claim, url)).await.json());
        }
        let ids: Vec<(&Value, &Value)> = handed
            .iter()
            .map(|k| (&k["key_id"], &k["fallback"]))
            .collect();
        let want = [
            ("AAAAAAAAAAA", false),
            ("AAAAAAAAAAE", false),
            ("AAAAAAAAAAI", false),
            ("AAAAAAAAAAA", true),
        ]
        .map(|(id, fb)| (json!(id), json!(fb)));
        let want: Vec<(&Value, &Value)> = want.iter().map(|(a, b)| (a, b)).collect();
        assert_eq!(
            ids, want,
            "{backend}: each one-time key once, then the fallback"
        );
    }
}

/// Forwards every request to the relay; the first `publish_keys` after
/// arming is processed but its answer is lost (a proxy's 502).
struct LossyProxy {
    relay: SocketAddr,
    lose_next_publish: AtomicBool,
}

impl LossyProxy {
    async fn answer(&self, body: Bytes) -> Response {
        let a = post(self.relay, &body).await;
        let is_publish =
            serde_json::from_slice::<Value>(&body).is_ok_and(|v| v["tool"] == "publish_keys");
        if is_publish && self.lose_next_publish.swap(false, Ordering::SeqCst) {
            return (StatusCode::BAD_GATEWAY, "<html>502 Bad Gateway</html>").into_response();
        }
        (
            StatusCode::from_u16(a.status).unwrap(),
            [("content-type", "application/json")],
            a.body,
        )
            .into_response()
    }
}

/// The scenario with real clients: bob's first publish answer is
/// lost, alice claims his one key, bob's client retries the upload, carol
/// claims; alice and carol each write to bob, and bob reads both.
#[tokio::test]
async fn both_peers_reach_bob_after_his_publish_answer_was_lost() {
    for backend in BACKENDS {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let dir = tempfile::tempdir().unwrap();
        let relay = start(&dir, backend, &url);
        let proxy = Arc::new(LossyProxy {
            relay: relay.addr,
            lose_next_publish: AtomicBool::new(false),
        });
        let p = proxy.clone();
        let app = Router::new().fallback(move |body: Bytes| {
            let p = p.clone();
            async move { p.answer(body).await }
        });
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let agent = |name| http_agent(HttpTransport::new(&url).unwrap(), name);
        let (alice, bob, carol) = (agent("alice"), agent("bob"), agent("carol"));

        proxy.lose_next_publish.store(true, Ordering::SeqCst);
        let lost = bob.publish(1, false).await;
        assert!(lost.is_err(), "{backend}: the answer was to be lost");
        alice.send(bob.user_id(), "from alice").await.unwrap();
        // Bob's client re-uploads the keys it could not mark published.
        bob.publish(1, false).await.unwrap();
        carol.send(bob.user_id(), "from carol").await.unwrap();

        let inbox = bob.receive().await.unwrap();
        let mut texts: Vec<_> = inbox.messages.iter().map(|m| m.text.as_str()).collect();
        texts.sort();
        assert_eq!(
            texts,
            ["from alice", "from carol"],
            "{backend}: problems {:?}",
            inbox.problems
        );
        server.abort();
    }
}
