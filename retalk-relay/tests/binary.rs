//! The `retalk-relay` binary: start on a free port, print it, serve from a
//! SQLite file or a sled directory, stop cleanly on SIGTERM and SIGINT.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{call, Peer};
use retalk_proto::wire::Args;
use retalk_transport_http::{HttpTransport, Transport};
use serde_json::json;

/// Starts the binary; returns it, its address and its start-up lines.
fn spawn(args: &[&str], env: &[(&str, &str)]) -> (Child, SocketAddr, Vec<String>) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_retalk-relay"));
    cmd.args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut out = Vec::new();
    for _ in 0..3 {
        out.push(lines.next().expect("the relay printed nothing").unwrap());
    }
    let addr = out[0]
        .strip_prefix("retalk-relay listening on http://")
        .unwrap_or_else(|| panic!("unexpected first line: {}", out[0]))
        .parse()
        .unwrap();
    (child, addr, out)
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(start.elapsed() < within, "the relay did not stop");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn serves_a_sqlite_file_on_a_free_port_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("relay.db");
    let (mut child, addr, lines) = spawn(
        &[
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--db",
            db.to_str().unwrap(),
        ],
        &[("RETALK_SERVER_MAX_GROUP_SIZE", "9"), ("SERVER_PORT", "1")],
    );
    let url = format!("http://127.0.0.1:{}", addr.port());
    assert_ne!(addr.port(), 0);
    assert_eq!(lines[1], format!("retalk-relay audiences: {url}"));
    assert!(
        lines[2].starts_with("retalk-relay backend: sqlite"),
        "{}",
        lines[2]
    );

    let a = call(addr, "GET", "/info", &[], b"").await;
    assert_eq!(a.json(), json!({"max_group_size": 9}));
    let mut peer = Peer::new();
    let t = HttpTransport::new(&url).unwrap();
    let publish = peer.publish_args();
    let r = t.call(peer.request(&publish, &url)).await.unwrap();
    assert_eq!(r["user_id"], peer.id.as_str());
    let counts = t.call(peer.request(&Args::CountKeys, &url)).await.unwrap();
    assert_eq!(counts, json!({"unclaimed": 0, "has_fallback": true}));

    signal(&child, "-TERM");
    let status = wait_exit(&mut child, Duration::from_secs(10));
    assert!(status.success(), "{status:?}");
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(err.contains("shutting down"), "{err}");
    assert!(db.exists());

    // The state survived: a new relay on the same file knows the user.
    let (mut child, addr, _) = spawn(
        &[
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--db",
            db.to_str().unwrap(),
            "--audience",
            &url,
        ],
        &[],
    );
    let a = call(addr, "POST", "/", &[], &peer.body(&Args::CountKeys, &url)).await;
    assert_eq!(a.json(), json!({"unclaimed": 0, "has_fallback": true}));
    signal(&child, "-INT");
    assert!(wait_exit(&mut child, Duration::from_secs(10)).success());
}

#[tokio::test]
async fn serves_a_sled_directory() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("relay.sled");
    let (mut child, addr, lines) = spawn(
        &[
            "--backend",
            "sled",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--db",
            db.to_str().unwrap(),
        ],
        &[],
    );
    assert!(
        lines[2].starts_with("retalk-relay backend: sled"),
        "{}",
        lines[2]
    );
    let url = format!("http://127.0.0.1:{}", addr.port());
    let mut peer = Peer::new();
    let publish = peer.publish_args();
    let t = HttpTransport::new(&url).unwrap();
    t.call(peer.request(&publish, &url)).await.unwrap();
    let counts = t.call(peer.request(&Args::CountKeys, &url)).await.unwrap();
    assert_eq!(counts, json!({"unclaimed": 0, "has_fallback": true}));
    signal(&child, "-TERM");
    assert!(wait_exit(&mut child, Duration::from_secs(10)).success());
    assert!(db.exists());
}

#[test]
fn bad_settings_exit_2_with_a_message() {
    let out = Command::new(env!("CARGO_BIN_EXE_retalk-relay"))
        .env("RETALK_SERVER_PORT", "http")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("RETALK_SERVER_PORT: \"http\" is not a valid port number"),
        "{err}"
    );

    let out = Command::new(env!("CARGO_BIN_EXE_retalk-relay"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("--audience"));
}
