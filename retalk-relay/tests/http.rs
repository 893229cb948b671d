//! The relay over real HTTP on 127.0.0.1: clients talking through it, the
//! body cap, deadlines, limits, the operator surface, shutdown.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{
    call, count_keys, http_agent, post, relay, relay_on, sqlite_relay, HttpAgent, Peer, Raw,
};
use retalk_proto::auth::Dialect;
use retalk_proto::relay::{
    ApiKeyRecord, ClaimOutcome, DeliveryRules, NewMessage, PublishOutcome, ReadLimit, RefusalRules,
    RelayStore, SendOutcome, StoreError, StoredMessage,
};
use retalk_proto::wire::{Args, KeyCounts, PublicKeys};
use retalk_proto::UserId;
use retalk_relay::RelayServer;
use retalk_transport_http::{HttpTransport, Transport, TransportError};
use serde_json::json;

fn agent(url: &str, name: &str, dialect: Dialect) -> HttpAgent {
    let transport = HttpTransport::builder(url)
        .dialect(dialect)
        .build()
        .unwrap();
    http_agent(transport, name)
}

async fn conversation(server: &RelayServer) {
    let alice = agent(server.url(), "alice", Dialect::V001);
    let bob = agent(server.url(), "bob", Dialect::V030);
    bob.ensure_published().await.unwrap();
    alice.send(bob.user_id(), "hi bob").await.unwrap();
    let got = bob.receive().await.unwrap();
    assert_eq!(got.messages.len(), 1, "{got:?}");
    assert_eq!(got.messages[0].text, "hi bob");
    assert_eq!(&got.messages[0].from, alice.user_id());
    assert_eq!(got.messages[0].name, "~alice");
    bob.send(alice.user_id(), "hi alice").await.unwrap();
    bob.send(alice.user_id(), "how are you?").await.unwrap();
    let got = alice.receive().await.unwrap();
    let texts: Vec<_> = got.messages.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(texts, ["hi alice", "how are you?"]);
    assert!(got.problems.is_empty());
    // Nothing left, nothing surfaced twice.
    assert!(bob.receive().await.unwrap().messages.is_empty());
    assert!(alice.receive().await.unwrap().messages.is_empty());
    // The relay speaks each client's dialect.
    assert_eq!(alice.transport().dialect(), Dialect::V001);
    assert_eq!(bob.transport().dialect(), Dialect::V030);
}

#[tokio::test]
async fn two_clients_talk_through_the_relay() {
    let server = relay(|_| {}).await;
    conversation(&server).await;
    server.shutdown().await;
}

#[tokio::test]
async fn two_clients_talk_through_the_relay_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let server = sqlite_relay(&dir.path().join("server.db"), |_| {}).await;
    conversation(&server).await;
    server.shutdown().await;
}

#[tokio::test]
async fn two_clients_talk_through_the_relay_on_sled() {
    let dir = tempfile::tempdir().unwrap();
    let store = retalk_store_sled::SledRelayStore::open(dir.path().join("relay.sled")).unwrap();
    let server = relay_on(Arc::new(store), |_| {}).await;
    conversation(&server).await;
    server.shutdown().await;
}

#[tokio::test]
async fn answers_are_in_the_callers_dialect() {
    let server = relay(|_| {}).await;
    let mut peer = Peer::new();
    let args = peer.publish_args();
    for (dialect, field) in [(Dialect::V001, "user_id"), (Dialect::V030, "fingerprint")] {
        let t = HttpTransport::builder(server.url())
            .dialect(dialect)
            .build()
            .unwrap();
        let r = t.call(peer.request(&args, server.url())).await.unwrap();
        assert_eq!(r[field], peer.id.as_str());
        assert_eq!(r["ok"], true);
    }
}

// ---------- the body cap ----------

#[tokio::test]
async fn declared_oversized_bodies_are_refused_unread() {
    let server = relay(|c| c.max_body = 1000).await;
    let mut raw = Raw::connect(server.local_addr()).await;
    // Headers only: the answer must not wait for a body.
    raw.send(b"POST / HTTP/1.1\r\nHost: r\r\nContent-Length: 5000\r\n\r\n")
        .await;
    let a = raw.answer().await.unwrap();
    assert_eq!(a.status, 413);
    assert_eq!(a.error(), "request body too large: 5000 bytes (max 1000)");
    assert_eq!(a.header("content-type"), Some("application/json"));
    assert!(raw.closed_within(Duration::from_secs(2)).await);

    // Huge declared lengths too.
    let mut raw = Raw::connect(server.local_addr()).await;
    raw.send(b"POST /x HTTP/1.1\r\nHost: r\r\nContent-Length: 99999999999999\r\n\r\n")
        .await;
    let a = raw.answer().await.unwrap();
    assert_eq!(
        a.error(),
        "request body too large: 99999999999999 bytes (max 1000)"
    );
}

#[tokio::test]
async fn chunked_bodies_are_capped_by_bytes_read() {
    let server = relay(|c| c.max_body = 1000).await;
    let mut raw = Raw::connect(server.local_addr()).await;
    raw.send(b"POST / HTTP/1.1\r\nHost: r\r\nTransfer-Encoding: chunked\r\n\r\n")
        .await;
    let chunk = format!("258\r\n{}\r\n", "x".repeat(600));
    raw.send(chunk.as_bytes()).await;
    raw.send(chunk.as_bytes()).await;
    let a = raw.answer().await.unwrap();
    assert_eq!(a.status, 413);
    assert_eq!(
        a.error(),
        "request body too large: more than 1000 bytes (max 1000)"
    );

    // A chunked body within the cap is read and handed to the protocol.
    let mut raw = Raw::connect(server.local_addr()).await;
    raw.send(
        b"POST / HTTP/1.1\r\nHost: r\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n[1]\r\n0\r\n\r\n",
    )
    .await;
    let a = raw.answer().await.unwrap();
    assert_eq!(
        (a.status, a.error().as_str()),
        (400, "bad request: body must be a JSON object")
    );
}

#[tokio::test]
async fn a_body_exactly_at_the_cap_is_read() {
    let server = relay(|c| c.max_body = 1000).await;
    let a = call(server.local_addr(), "POST", "/", &[], &[b' '; 1000]).await;
    assert_eq!(a.status, 400);
    assert!(
        a.error().starts_with("bad request: body is not JSON"),
        "{}",
        a.error()
    );
}

#[tokio::test]
async fn lying_or_garbage_content_lengths_get_nowhere() {
    let server = relay(|c| {
        c.max_body = 1000;
        c.timeout = Duration::from_millis(400);
    })
    .await;
    let addr = server.local_addr();

    // Shorter than the body: only the declared bytes are the body; the rest
    // is not a request, and the connection ends.
    let mut raw = Raw::connect(addr).await;
    let mut req = b"POST / HTTP/1.1\r\nHost: r\r\nContent-Length: 2\r\n\r\n{}".to_vec();
    req.extend_from_slice(&[b'x'; 5000]);
    raw.send(&req).await;
    let a = raw.answer().await.unwrap();
    assert_eq!(a.status, 400);
    assert_eq!(a.error(), "bad request: missing 'tool'");
    assert!(raw.closed_within(Duration::from_secs(3)).await);

    // Longer than the body: the read times out.
    let mut raw = Raw::connect(addr).await;
    raw.send(b"POST / HTTP/1.1\r\nHost: r\r\nContent-Length: 500\r\n\r\n{\"tool\":")
        .await;
    let start = Instant::now();
    let a = raw.answer().await.unwrap();
    assert_eq!(
        (a.status, a.error().as_str()),
        (408, "timed out reading the request body")
    );
    assert!(start.elapsed() < Duration::from_secs(3));
    assert!(raw.closed_within(Duration::from_secs(2)).await);

    // Negative, garbage or conflicting lengths: refused before any body is
    // read (by the HTTP parser, in our JSON), and the connection closes.
    for cl in ["-1", "abc", "1e9", "10, 20"] {
        let mut raw = Raw::connect(addr).await;
        let head = format!("POST / HTTP/1.1\r\nHost: r\r\nContent-Length: {cl}\r\n\r\n");
        raw.send(head.as_bytes()).await;
        raw.send(&[b'x'; 3000]).await;
        let a = raw
            .answer()
            .await
            .unwrap_or_else(|| panic!("{cl}: no answer"));
        assert_eq!(
            (a.status, a.error().as_str()),
            (400, "bad request: malformed HTTP request"),
            "{cl}"
        );
        assert!(raw.closed_within(Duration::from_secs(2)).await, "{cl}");
    }
}

// ---------- deadlines and connection caps ----------

#[tokio::test]
async fn slow_and_idle_clients_are_dropped() {
    let server = relay(|c| c.timeout = Duration::from_millis(300)).await;
    let addr = server.local_addr();

    // Headers that never finish.
    let mut raw = Raw::connect(addr).await;
    raw.send(b"POST / HTTP/1.1\r\nHost: r\r\n").await;
    let start = Instant::now();
    assert!(raw.closed_within(Duration::from_secs(3)).await);
    assert!(start.elapsed() >= Duration::from_millis(250));

    // Headers trickled a byte at a time still hit the deadline.
    let mut raw = Raw::connect(addr).await;
    let start = Instant::now();
    let mut dropped = false;
    for b in b"GET /info HTTP/1.1\r\nHost: relay\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n" {
        if tokio::io::AsyncWriteExt::write_all(&mut raw.stream, &[*b]).await.is_err() {
            dropped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(dropped || raw.closed_within(Duration::from_secs(1)).await);
    assert!(start.elapsed() < Duration::from_secs(3));

    // An idle keep-alive connection.
    let mut raw = Raw::connect(addr).await;
    raw.request("GET", "/info", &[], b"").await;
    assert_eq!(raw.answer().await.unwrap().status, 200);
    raw.request("GET", "/info", &[], b"").await;
    assert_eq!(
        raw.answer().await.unwrap().status,
        200,
        "keep-alive reuses the connection"
    );
    assert!(raw.closed_within(Duration::from_secs(3)).await);
}

#[tokio::test]
async fn connection_caps_hold() {
    // Per address (loopback counted on request).
    let server = relay(|c| {
        c.max_connections_per_ip = 2;
        c.limit_loopback = true;
    })
    .await;
    let addr = server.local_addr();
    let mut a = Raw::connect(addr).await;
    let b = Raw::connect(addr).await;
    a.request("GET", "/info", &[], b"").await;
    assert_eq!(a.answer().await.unwrap().status, 200);
    let mut c = Raw::connect(addr).await;
    assert!(
        c.closed_within(Duration::from_secs(2)).await,
        "third connection is dropped"
    );
    drop(b);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(call(addr, "GET", "/info", &[], b"").await.status, 200);

    // Overall: past the cap, a connection waits until one closes.
    let server = relay(|c| c.max_connections = 2).await;
    let addr = server.local_addr();
    let mut a = Raw::connect(addr).await;
    a.request("GET", "/info", &[], b"").await;
    assert_eq!(a.answer().await.unwrap().status, 200);
    let b = Raw::connect(addr).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut c = Raw::connect(addr).await;
    c.request("GET", "/info", &[], b"").await;
    let waited = tokio::time::timeout(Duration::from_millis(300), c.answer()).await;
    assert!(waited.is_err(), "served past the connection cap");
    drop(b);
    assert_eq!(c.answer().await.unwrap().status, 200);
}

// ---------- rate limits ----------

#[tokio::test]
async fn per_id_rate_limit_counts_only_verified_requests() {
    let server = relay(|c| c.rate_limit = 3).await;
    let url = server.url().to_owned();
    let addr = server.local_addr();
    let mut victim = Peer::new();
    let t = HttpTransport::new(&url).unwrap();
    let publish = victim.publish_args();
    t.call(victim.request(&publish, &url)).await.unwrap(); // 1

    // Forgeries naming the victim: their keys with a bad signature, or
    // someone else's keys. None of them is the victim's request.
    let attacker = Peer::new();
    for i in 0..20 {
        let mut req = victim.request(&Args::CountKeys, &url);
        if i % 2 == 0 {
            req.auth.sig = attacker.request(&Args::CountKeys, &url).auth.sig;
        } else {
            let other = attacker.request(&Args::CountKeys, &url).auth;
            req.auth.identity_key = other.identity_key;
            req.auth.signing_key = other.signing_key;
        }
        let a = post(addr, &req.to_body(Dialect::V001)).await;
        assert_eq!(a.status, 400, "{}", a.error());
    }
    // The victim still has its allowance.
    for _ in 0..2 {
        count_keys(&t, &victim, &url).await.unwrap();
    }
    let e = count_keys(&t, &victim, &url).await.unwrap_err();
    assert_eq!(
        e,
        TransportError::Refused {
            status: 429,
            error: "rate limit exceeded; slow down and retry".into()
        }
    );
    // Others are not affected.
    let other = Peer::new();
    count_keys(&t, &other, &url).await.unwrap();
}

#[tokio::test]
async fn per_address_rate_limit_comes_first() {
    let server = relay(|c| {
        c.ip_rate_limit = 5;
        c.limit_loopback = true;
    })
    .await;
    let addr = server.local_addr();
    let mut raw = Raw::connect(addr).await;
    for _ in 0..5 {
        raw.request("POST", "/", &[], b"not json").await;
        assert_eq!(raw.answer().await.unwrap().status, 400);
    }
    raw.request("GET", "/info", &[], b"").await;
    let a = raw.answer().await.unwrap();
    assert_eq!(
        (a.status, a.error().as_str()),
        (429, "rate limit exceeded; slow down and retry")
    );
    assert_eq!(a.header("retry-after"), Some("60"));

    // Loopback is exempt by default (a local TLS proxy is every client).
    let server = relay(|c| c.ip_rate_limit = 5).await;
    for _ in 0..20 {
        assert_eq!(
            call(server.local_addr(), "GET", "/info", &[], b"")
                .await
                .status,
            200
        );
    }
}

// ---------- GET pages ----------

#[tokio::test]
async fn info_healthz_and_not_found() {
    let server = relay(|c| c.max_group_size = 7).await;
    let addr = server.local_addr();
    for path in ["/info", "/relay/v1/info/", "/info?x=1"] {
        let a = call(addr, "GET", path, &[], b"").await;
        assert_eq!(
            (a.status, a.json()),
            (
                200,
                json!({"max_group_size": 7, "features": ["wait"], "max_wait": 25.0})
            ),
            "{path}"
        );
        assert_eq!(a.header("content-type"), Some("application/json"));
    }
    let a = call(addr, "GET", "/healthz", &[], b"").await;
    assert_eq!((a.status, a.json()), (200, json!({"ok": true})));
    for path in ["/", "/nope", "/information"] {
        let a = call(addr, "GET", path, &[], b"").await;
        assert_eq!(
            (a.status, a.json()),
            (404, json!({"error": "not found"})),
            "{path}"
        );
    }
    let a = call(addr, "PUT", "/", &[], b"").await;
    assert_eq!((a.status, a.error().as_str()), (405, "method not allowed"));
    // POST on any path is a tool call.
    let a = call(addr, "POST", "/some/prefix/info", &[], b"{}").await;
    assert_eq!(
        (a.status, a.error().as_str()),
        (400, "bad request: missing 'tool'")
    );
    // The transport reads /info too.
    let t = HttpTransport::new(server.url()).unwrap();
    assert_eq!(t.max_group_size().await.unwrap(), 7);
}

// ---------- admin and API keys ----------

fn basic(pw: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("admin:{pw}"))
    )
}

#[tokio::test]
async fn admin_is_404_without_a_password() {
    let server = relay(|_| {}).await;
    for method in ["GET", "POST"] {
        let a = call(
            server.local_addr(),
            method,
            "/admin",
            &[("Authorization", &basic(""))],
            b"{}",
        )
        .await;
        assert_eq!((a.status, a.error().as_str()), (404, "not found"));
    }
}

#[tokio::test]
async fn admin_manages_keys_and_keys_admit() {
    let server = relay(|c| {
        c.admin_password = Some("s3cret".into());
        c.require_api_key = true;
    })
    .await;
    let addr = server.local_addr();
    let url = server.url().to_owned();
    let auth = basic("s3cret");
    let admin = |body: serde_json::Value| {
        let auth = auth.clone();
        async move {
            call(
                addr,
                "POST",
                "/admin",
                &[("Authorization", &auth)],
                body.to_string().as_bytes(),
            )
            .await
        }
    };

    // Bad or missing credentials.
    for creds in [None, Some(basic("wrong"))] {
        let headers: Vec<(&str, &str)> = creds
            .iter()
            .map(|c| ("Authorization", c.as_str()))
            .collect();
        let a = call(addr, "POST", "/admin", &headers, br#"{"action":"list"}"#).await;
        assert_eq!((a.status, a.error().as_str()), (401, "admin auth required"));
        assert_eq!(
            a.header("www-authenticate"),
            Some("Basic realm=\"retalk admin\"")
        );
    }

    // Create, shown once; only the hash is listed.
    let a = admin(json!({"action": "create", "label": "alice"})).await;
    assert_eq!(a.status, 200);
    let created = a.json();
    let key = created["key"].as_str().unwrap().to_owned();
    let hash = created["key_hash"].as_str().unwrap().to_owned();
    assert_eq!(created["label"], "alice");
    assert_eq!(key.len(), 43);
    assert!(key
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
    assert_eq!(hash, retalk_proto::ids::sha256_hex(&key));
    let listed = admin(json!({"action": "list"})).await.json();
    assert_eq!(listed["keys"].as_array().unwrap().len(), 1);
    assert_eq!(listed["keys"][0]["key_hash"], hash.as_str());
    assert_eq!(listed["keys"][0]["label"], "alice");
    assert_eq!(listed["keys"][0]["disabled"], false);
    assert!(listed["keys"][0]["created"].as_f64().unwrap() > 1.7e9);
    assert!(!listed.to_string().contains(&key));

    // The page, behind a path prefix too.
    let a = call(
        addr,
        "GET",
        "/relay/admin/",
        &[("Authorization", &auth)],
        b"",
    )
    .await;
    assert_eq!(a.status, 200);
    assert_eq!(a.header("content-type"), Some("text/html; charset=utf-8"));
    let page = String::from_utf8(a.body).unwrap();
    assert!(page.contains(&hash) && page.contains("alice") && page.contains("active"));

    // Admission.
    let peer = Peer::new();
    let without = HttpTransport::new(&url).unwrap();
    let with = HttpTransport::builder(&url).api_key(&key).build().unwrap();
    let refused = TransportError::Refused {
        status: 401,
        error: "valid API key required to use this relay".into(),
    };
    assert_eq!(
        count_keys(&without, &peer, &url).await.unwrap_err(),
        refused
    );
    count_keys(&with, &peer, &url).await.unwrap();
    let a = call(
        addr,
        "POST",
        "/",
        &[("X-Retalk-Key", &key)],
        &peer.body(&Args::CountKeys, &url),
    )
    .await;
    assert_eq!(a.status, 200, "{:?}", a.json());
    let wrong = HttpTransport::builder(&url)
        .api_key("nope")
        .build()
        .unwrap();
    assert_eq!(count_keys(&wrong, &peer, &url).await.unwrap_err(), refused);

    // Disable, enable, delete.
    let act = |action: &str| admin(json!({"action": action, "key_hash": hash}));
    assert_eq!(act("disable").await.json(), json!({"updated": 1}));
    assert_eq!(count_keys(&with, &peer, &url).await.unwrap_err(), refused);
    assert_eq!(
        admin(json!({"action": "list"})).await.json()["keys"][0]["disabled"],
        true
    );
    assert_eq!(act("enable").await.json(), json!({"updated": 1}));
    count_keys(&with, &peer, &url).await.unwrap();
    assert_eq!(act("delete").await.json(), json!({"deleted": 1}));
    assert_eq!(count_keys(&with, &peer, &url).await.unwrap_err(), refused);
    assert_eq!(act("delete").await.json(), json!({"deleted": 0}));
    assert_eq!(
        admin(json!({"action": "list"})).await.json(),
        json!({"keys": []})
    );

    // Bad admin requests.
    let a = admin(json!({"action": "rotate"})).await;
    assert_eq!(
        (a.status, a.error().as_str()),
        (
            400,
            "unknown admin action: 'rotate' (create|list|disable|enable|delete)"
        )
    );
    let a = admin(json!({"action": "disable"})).await;
    assert_eq!((a.status, a.error().as_str()), (400, "'key_hash'"));
    let a = call(addr, "POST", "/admin", &[("Authorization", &auth)], b"").await;
    assert_eq!(
        a.error(),
        "unknown admin action: None (create|list|disable|enable|delete)"
    );
    // Admin needs no API key; GET pages neither.
    assert_eq!(call(addr, "GET", "/info", &[], b"").await.status, 200);
}

// ---------- storage failures ----------

/// A store that is always down.
struct DownStore;

fn down<T>() -> Result<T, StoreError> {
    Err(StoreError::msg("disk on fire"))
}

impl RelayStore for DownStore {
    fn use_nonce(&self, _: &str, _: f64, _: f64) -> Result<bool, StoreError> {
        down()
    }
    fn publish_keys(
        &self,
        _: &UserId,
        _: &PublicKeys,
        _: &[(String, String)],
        _: Option<&(String, String)>,
        _: u64,
    ) -> Result<PublishOutcome, StoreError> {
        down()
    }
    fn count_keys(&self, _: &UserId) -> Result<KeyCounts, StoreError> {
        down()
    }
    fn get_keys(&self, _: &UserId) -> Result<Option<PublicKeys>, StoreError> {
        down()
    }
    fn claim_key(&self, _: &UserId) -> Result<ClaimOutcome, StoreError> {
        down()
    }
    fn send_message(&self, _: &NewMessage, _: &DeliveryRules) -> Result<SendOutcome, StoreError> {
        down()
    }
    fn read_messages(
        &self,
        _: &UserId,
        _: Option<&str>,
        _: bool,
        _: ReadLimit,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        down()
    }
    fn nack(
        &self,
        _: &UserId,
        _: &str,
        _: &str,
        _: f64,
        _: &RefusalRules,
    ) -> Result<(), StoreError> {
        down()
    }
    fn api_key_valid(&self, _: &str) -> Result<bool, StoreError> {
        down()
    }
    fn api_key_create(&self, _: &str, _: &str, _: f64) -> Result<(), StoreError> {
        down()
    }
    fn api_key_list(&self) -> Result<Vec<ApiKeyRecord>, StoreError> {
        down()
    }
    fn api_key_set_disabled(&self, _: &str, _: bool) -> Result<u64, StoreError> {
        down()
    }
    fn api_key_delete(&self, _: &str) -> Result<u64, StoreError> {
        down()
    }
}

#[tokio::test]
async fn storage_failures_are_503_and_say_nothing_more() {
    let server = relay_on(Arc::new(DownStore), |c| {
        c.admin_password = Some("pw".into())
    })
    .await;
    let addr = server.local_addr();
    let peer = Peer::new();
    let a = post(addr, &peer.body(&Args::CountKeys, server.url())).await;
    assert_eq!(
        (a.status, a.error().as_str()),
        (503, "relay storage unavailable; retry later")
    );
    let a = call(addr, "GET", "/healthz", &[], b"").await;
    assert_eq!(a.status, 503);
    let a = call(
        addr,
        "POST",
        "/admin",
        &[("Authorization", &basic("pw"))],
        br#"{"action":"list"}"#,
    )
    .await;
    assert_eq!(
        (a.status, a.error().as_str()),
        (503, "relay storage unavailable; retry later")
    );
    let t = HttpTransport::new(server.url()).unwrap();
    let e = count_keys(&t, &peer, server.url()).await.unwrap_err();
    assert!(e.is_transient());

    // API-key admission on a broken store is 503, not 401.
    let server = relay_on(Arc::new(DownStore), |c| c.require_api_key = true).await;
    let a = call(
        server.local_addr(),
        "POST",
        "/",
        &[("Authorization", "Bearer k")],
        b"{}",
    )
    .await;
    assert_eq!(a.status, 503);
}

// ---------- shutdown ----------

#[tokio::test]
async fn shutdown_finishes_requests_in_flight() {
    let server = relay(|_| {}).await;
    let addr = server.local_addr();
    let mut peer = Peer::new();
    let publish = peer.publish_args();
    let body = peer.body(&publish, server.url());
    let (first, rest) = body.split_at(body.len() / 2);
    let mut busy = Raw::connect(addr).await;
    let head = format!(
        "POST / HTTP/1.1\r\nHost: r\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    busy.send(head.as_bytes()).await;
    busy.send(first).await;
    let mut idle = Raw::connect(addr).await;
    idle.request("GET", "/info", &[], b"").await;
    assert_eq!(idle.answer().await.unwrap().status, 200);
    tokio::time::sleep(Duration::from_millis(50)).await;

    let stopping = tokio::spawn(server.shutdown());
    // Idle connections close at once; new ones are refused.
    assert!(idle.closed_within(Duration::from_secs(2)).await);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    assert!(!stopping.is_finished());
    // The request in flight completes.
    busy.send(rest).await;
    let a = busy.answer().await.unwrap();
    assert_eq!(a.status, 200, "{:?}", a.json());
    assert_eq!(a.json()["user_id"], peer.id.as_str());
    tokio::time::timeout(Duration::from_secs(5), stopping)
        .await
        .unwrap()
        .unwrap();
}
