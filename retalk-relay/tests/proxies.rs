//! Limits behind a proxy, against the binary: forwarding headers are
//! believed only from `--trusted-proxies`, the per-address limits then
//! apply to the client they name, and wrong `/admin` passwords are limited
//! per address (loopback included). Also `/metrics`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use base64::Engine;
use common::*;
use retalk_proto::wire::Args;

fn relay(extra: &[&str]) -> RelayProcess {
    let mut cmd = relay_command();
    cmd.args(["--backend", "memory", "--host", "127.0.0.1", "--port", "0"])
        .args(extra);
    RelayProcess::start(&mut cmd)
}

async fn count_keys_from(relay: &RelayProcess, peer: &Peer, xff: Option<&str>) -> u16 {
    let body = peer.body(&Args::CountKeys, &relay.url());
    let headers: Vec<(&str, &str)> = xff.map(|v| ("X-Forwarded-For", v)).into_iter().collect();
    call(relay.addr, "POST", "/", &headers, &body).await.status
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_rate_limit_counts_each_client() {
    // A local proxy (loopback, exempt by default): trusted, so the clients
    // it names are limited, each on its own.
    let r = relay(&["--trusted-proxies", "127.0.0.1", "--ip-rate-limit", "3"]);
    let peer = Peer::new();
    for _ in 0..3 {
        assert_eq!(count_keys_from(&r, &peer, Some("203.0.113.5")).await, 200);
    }
    assert_eq!(count_keys_from(&r, &peer, Some("203.0.113.5")).await, 429);
    // A client that forges an entry to the left is still itself.
    assert_eq!(
        count_keys_from(&r, &peer, Some("198.51.100.1, 203.0.113.5")).await,
        429
    );
    assert_eq!(count_keys_from(&r, &peer, Some("203.0.113.6")).await, 200);
    // Requests without the header are the proxy's own (loopback: exempt).
    for _ in 0..5 {
        assert_eq!(count_keys_from(&r, &peer, None).await, 200);
    }
}

#[tokio::test]
async fn forwarding_headers_are_ignored_unless_the_peer_is_trusted() {
    let r = relay(&["--ip-rate-limit", "2", "--limit-loopback"]);
    let peer = Peer::new();
    // Each request claims another address; all are counted as loopback's.
    assert_eq!(count_keys_from(&r, &peer, Some("203.0.113.1")).await, 200);
    assert_eq!(count_keys_from(&r, &peer, Some("203.0.113.2")).await, 200);
    assert_eq!(count_keys_from(&r, &peer, Some("203.0.113.3")).await, 429);
}

fn basic(password: &str) -> String {
    let token = base64::engine::general_purpose::STANDARD.encode(format!("admin:{password}"));
    format!("Basic {token}")
}

#[tokio::test]
async fn wrong_admin_passwords_are_limited_per_address() {
    let r = relay(&[
        "--admin-password",
        "right",
        "--admin-login-limit",
        "5",
        "--trusted-proxies",
        "127.0.0.1",
    ]);
    let wrong = basic("wrong");
    let right = basic("right");
    let admin = |auth: String, client: &'static str| {
        let addr = r.addr;
        async move {
            let mut headers = vec![("Authorization", auth.as_str())];
            if !client.is_empty() {
                headers.push(("X-Forwarded-For", client));
            }
            call(addr, "GET", "/admin", &headers, b"").await.status
        }
    };
    for _ in 0..5 {
        assert_eq!(admin(wrong.clone(), "").await, 401);
    }
    // From loopback too: the sixth guess is not even checked, and neither
    // is the right password, so a hit cannot be told apart.
    assert_eq!(admin(wrong.clone(), "").await, 429);
    assert_eq!(admin(right.clone(), "").await, 429);
    // Another client behind the proxy is not blocked by loopback's guesses.
    assert_eq!(admin(right.clone(), "203.0.113.9").await, 200);
    for _ in 0..5 {
        assert_eq!(admin(wrong.clone(), "203.0.113.10").await, 401);
    }
    assert_eq!(admin(wrong.clone(), "203.0.113.10").await, 429);
    assert_eq!(admin(right.clone(), "203.0.113.9").await, 200);
}

#[tokio::test]
async fn metrics_count_tools_statuses_and_waiters() {
    let r = relay(&[]);
    let mut alice = Peer::new();
    let publish = alice.publish_args();
    let body = alice.body(&publish, &r.url());
    assert_eq!(post(r.addr, &body).await.status, 200);
    // A replay (400) and garbage (400, tool unknown).
    assert_eq!(post(r.addr, &body).await.status, 400);
    assert_eq!(post(r.addr, b"{\"tool\": 3}").await.status, 400);
    let m = call(r.addr, "GET", "/metrics", &[], b"").await;
    assert_eq!(m.status, 200);
    assert!(m.header("content-type").unwrap().starts_with("text/plain"));
    let text = String::from_utf8(m.body).unwrap();
    for line in [
        r#"retalk_requests_total{status="200",tool="publish_keys"} 1"#,
        r#"retalk_requests_total{status="400",tool="publish_keys"} 1"#,
        r#"retalk_requests_total{status="400",tool="unknown"} 1"#,
        r#"retalk_request_duration_seconds_count{tool="publish_keys"} 2"#,
        "retalk_parked_waiters 0",
        "retalk_store_errors_total 0",
    ] {
        assert!(text.contains(line), "missing {line} in\n{text}");
    }
    // No user id ever reaches a label.
    assert!(!text.contains(alice.id.as_str()));
}
