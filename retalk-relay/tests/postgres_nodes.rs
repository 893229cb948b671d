//! Several `retalk-relay` binaries on one PostgreSQL database (a private
//! cluster this test starts): a request replayed to another node is
//! refused, a read parked on one node wakes within milliseconds of a send
//! through another, a database restart is ridden out (503 meanwhile,
//! nothing stored lost, service and wake-ups back without restarting the
//! node), and bad database settings are clear errors at start.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use retalk_proto::wire::{Args, Wait};
use retalk_testkit::postgres::Cluster;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `n` nodes on `database`, each accepting every node's URL as audience
/// (a client signs for the URL it uses).
fn nodes(database: &str, n: usize) -> Vec<RelayProcess> {
    let ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
    let audiences: Vec<String> = ports
        .iter()
        .map(|p| format!("http://127.0.0.1:{p}"))
        .collect();
    ports
        .iter()
        .map(|port| {
            let mut cmd = relay_command();
            cmd.args(["--backend", "postgres", "--database-url", database])
                .args(["--host", "127.0.0.1", "--port", &port.to_string()])
                .args(["--audience", &audiences.join(",")]);
            RelayProcess::start(&mut cmd)
        })
        .collect()
}

async fn call_on(node: &RelayProcess, peer: &Peer, args: &Args) -> Answer {
    post(node.addr, &peer.body(args, &node.url())).await
}

async fn user_on(node: &RelayProcess) -> Peer {
    let mut p = Peer::new();
    let publish = p.publish_args();
    let a = call_on(node, &p, &publish).await;
    assert_eq!(a.status, 200, "{:?}", String::from_utf8_lossy(&a.body));
    p
}

fn send_args(to: &Peer, body: &str) -> Args {
    Args::SendMessage {
        to: to.id.to_string(),
        mtype: 1,
        body: body.into(),
    }
}

fn read_args(wait: Option<f64>) -> Args {
    Args::ReadMessages {
        peer: None,
        peek: false,
        wait: wait.and_then(Wait::new),
    }
}

fn bodies(a: &Answer) -> Vec<String> {
    let v = a.json();
    let list = v
        .as_array()
        .or_else(|| v["messages"].as_array())
        .unwrap_or_else(|| panic!("not a mail list: {v}"));
    list.iter()
        .map(|m| m["body"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_request_replayed_to_another_node_is_refused() {
    let cluster = Cluster::shared();
    let db = cluster.create_database();
    let n = nodes(&db, 2);
    let alice = user_on(&n[0]).await;
    // Signed for node 0's URL, which node 1 also accepts as audience.
    let body = alice.body(&Args::CountKeys, &n[0].url());
    let first = post(n[0].addr, &body).await;
    assert_eq!(first.status, 200, "{}", first.error());
    let replay = post(n[1].addr, &body).await;
    assert_eq!(
        replay.status,
        400,
        "replayed across nodes: {:?}",
        replay.json()
    );
    assert_eq!(replay.error(), "replay detected: nonce already used");
    let again = post(n[0].addr, &body).await;
    assert_eq!(again.error(), "replay detected: nonce already used");
    // What one node stored, the other serves.
    let counts = call_on(&n[1], &alice, &Args::CountKeys).await;
    assert_eq!(counts.status, 200);
}

#[tokio::test]
async fn a_read_parked_on_one_node_wakes_on_a_send_through_another() {
    let cluster = Cluster::shared();
    let db = cluster.create_database();
    let n = nodes(&db, 3);
    let (alice, bob) = (user_on(&n[0]).await, user_on(&n[1]).await);
    for round in 0..5 {
        let parked_on = &n[round % 3];
        let sent_via = &n[(round + 1) % 3];
        let body = bob.body(&read_args(Some(20.0)), &parked_on.url());
        let addr: SocketAddr = parked_on.addr;
        let waiting = tokio::spawn(async move { post(addr, &body).await });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!waiting.is_finished(), "the read must be parked");
        let text = format!("m{round}");
        let sent = Instant::now();
        let a = call_on(sent_via, &alice, &send_args(&bob, &text)).await;
        assert_eq!(a.status, 200, "{}", a.error());
        let answer = waiting.await.unwrap();
        let took = sent.elapsed();
        assert_eq!(bodies(&answer), [text]);
        assert!(took < Duration::from_millis(500), "woke after {took:?}");
    }
}

#[tokio::test]
async fn a_node_rides_out_a_database_restart() {
    let cluster = Cluster::start();
    let db = cluster.create_database();
    let n = nodes(&db, 2);
    let (alice, bob) = (user_on(&n[0]).await, user_on(&n[0]).await);
    let a = call_on(&n[0], &alice, &send_args(&bob, "before")).await;
    assert_eq!(a.status, 200);

    cluster.stop_server();
    let during = call_on(&n[0], &alice, &send_args(&bob, "during")).await;
    assert_eq!(during.status, 503, "{:?}", during.json());
    assert_eq!(during.error(), "relay storage unavailable; retry later");
    let health = call(n[1].addr, "GET", "/healthz", &[], b"").await;
    assert_eq!(health.status, 503);
    cluster.start_server();

    // Both nodes serve again by themselves.
    let deadline = Instant::now() + Duration::from_secs(30);
    for node in &n {
        loop {
            let h = call(node.addr, "GET", "/healthz", &[], b"").await;
            if h.status == 200 {
                break;
            }
            assert!(Instant::now() < deadline, "node did not recover");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // Nothing acknowledged was lost; the refused send was not stored.
    let read = call_on(&n[1], &bob, &read_args(None)).await;
    assert_eq!(bodies(&read), ["before"]);
    // The LISTEN connection is back too: a read parked on node 1 wakes on
    // a send through node 0 (give it its reconnection backoff).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let body = bob.body(&read_args(Some(20.0)), &n[1].url());
    let addr = n[1].addr;
    let waiting = tokio::spawn(async move { post(addr, &body).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent = Instant::now();
    let a = call_on(&n[0], &alice, &send_args(&bob, "after")).await;
    assert_eq!(a.status, 200);
    let answer = waiting.await.unwrap();
    assert_eq!(bodies(&answer), ["after"]);
    assert!(
        sent.elapsed() < Duration::from_secs(1),
        "{:?}",
        sent.elapsed()
    );
}

/// Runs the binary with `args`; its exit status and stderr.
fn run_failing(args: &[&str]) -> (Option<i32>, String) {
    let out = relay_command()
        .args(["--host", "127.0.0.1", "--port", "0"])
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_database_settings_are_clear_errors_at_start() {
    let (code, err) = run_failing(&["--backend", "postgres"]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("--backend postgres needs --database-url"),
        "{err}"
    );

    let (code, err) = run_failing(&[
        "--backend",
        "postgres",
        "--database-url",
        "postgres://h:port/x",
    ]);
    assert_eq!(code, Some(1));
    assert!(err.contains("invalid database URL"), "{err}");

    let port = free_port().to_string();
    let url = format!("postgres://retalk:s3cret@127.0.0.1:{port}/retalk?connect_timeout=2");
    let started = Instant::now();
    let (code, err) = run_failing(&["--backend", "postgres", "--database-url", &url]);
    assert_eq!(code, Some(1));
    assert!(err.contains("cannot reach the database"), "{err}");
    assert!(
        !err.contains("s3cret"),
        "the password is never printed: {err}"
    );
    assert!(err.contains("retalk:***@"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(15));

    // The environment variable works like the flag.
    let out = relay_command()
        .args([
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--backend",
            "postgres",
        ])
        .env("RETALK_SERVER_DATABASE_URL", "not a url at all")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("invalid database URL"), "{err}");
}

#[tokio::test]
async fn nodes_print_the_database_without_its_password_and_serve_metrics() {
    let cluster = Cluster::shared();
    let db = cluster.create_database();
    let n = nodes(&db, 1);
    assert!(
        n[0].lines[2].starts_with("retalk-relay backend: postgres (postgres://"),
        "{:?}",
        n[0].lines
    );
    let alice = user_on(&n[0]).await;
    let _ = call_on(&n[0], &alice, &Args::CountKeys).await;
    let m = call(n[0].addr, "GET", "/metrics", &[], b"").await;
    assert_eq!(m.status, 200);
    let text = String::from_utf8(m.body).unwrap();
    assert!(
        text.contains(r#"retalk_requests_total{status="200",tool="count_keys"} 1"#),
        "{text}"
    );
    assert!(text.contains(r#"retalk_requests_total{status="200",tool="publish_keys"} 1"#));
    assert!(text.contains("retalk_parked_waiters 0"));
    assert!(text.contains("retalk_store_errors_total 0"));
}
