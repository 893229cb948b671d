//! The `retalk-relay` binary: start on a free port, print it, serve from a
//! SQLite file or a sled directory, stop cleanly on SIGTERM and SIGINT.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::{call, count_keys, post, relay_command, Peer, RelayProcess};
use retalk_proto::wire::Args;
use retalk_testkit::python::{signal, wait_exit};
use retalk_transport_http::{HttpTransport, Transport};
use serde_json::json;

/// Starts the binary on 127.0.0.1, a free port and `db`, with `args` and
/// the variables `env`.
fn spawn(db: &Path, args: &[&str], env: &[(&str, &str)]) -> RelayProcess {
    RelayProcess::start(
        relay_command()
            .args(["--host", "127.0.0.1", "--port", "0", "--db"])
            .arg(db)
            .args(args)
            .envs(env.iter().copied())
            .stderr(Stdio::piped()),
    )
}

#[tokio::test]
async fn serves_a_sqlite_file_on_a_free_port_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("relay.db");
    let mut relay = spawn(
        &db,
        &[],
        &[("RETALK_SERVER_MAX_GROUP_SIZE", "9"), ("SERVER_PORT", "1")],
    );
    let (addr, lines, url) = (relay.addr, &relay.lines, relay.url());
    assert_ne!(addr.port(), 0);
    assert_eq!(lines[1], format!("retalk-relay audiences: {url}"));
    assert!(
        lines[2].starts_with("retalk-relay backend: sqlite"),
        "{}",
        lines[2]
    );

    let a = call(addr, "GET", "/info", &[], b"").await;
    assert_eq!(
        a.json(),
        json!({"max_group_size": 9, "features": ["wait"], "max_wait": 25.0})
    );
    let mut peer = Peer::new();
    let t = HttpTransport::new(&url).unwrap();
    let publish = peer.publish_args();
    let r = t.call(peer.request(&publish, &url)).await.unwrap();
    assert_eq!(r["user_id"], peer.id.as_str());
    let counts = count_keys(&t, &peer, &url).await.unwrap();
    assert_eq!(counts, json!({"unclaimed": 0, "has_fallback": true}));

    signal(&relay.child, "-TERM");
    let status = wait_exit(&mut relay.child, Duration::from_secs(10));
    assert!(status.success(), "{status:?}");
    let mut err = String::new();
    std::io::Read::read_to_string(&mut relay.child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(err.contains("shutting down"), "{err}");
    assert!(db.exists());

    // The state survived: a new relay on the same file knows the user.
    let mut relay = spawn(&db, &["--audience", &url], &[]);
    let a = post(relay.addr, &peer.body(&Args::CountKeys, &url)).await;
    assert_eq!(a.json(), json!({"unclaimed": 0, "has_fallback": true}));
    signal(&relay.child, "-INT");
    assert!(wait_exit(&mut relay.child, Duration::from_secs(10)).success());
}

#[tokio::test]
async fn serves_a_sled_directory() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("relay.sled");
    let mut relay = spawn(&db, &["--backend", "sled"], &[]);
    let lines = &relay.lines;
    assert!(
        lines[2].starts_with("retalk-relay backend: sled"),
        "{}",
        lines[2]
    );
    let url = relay.url();
    let mut peer = Peer::new();
    let publish = peer.publish_args();
    let t = HttpTransport::new(&url).unwrap();
    t.call(peer.request(&publish, &url)).await.unwrap();
    let counts = count_keys(&t, &peer, &url).await.unwrap();
    assert_eq!(counts, json!({"unclaimed": 0, "has_fallback": true}));
    signal(&relay.child, "-TERM");
    assert!(wait_exit(&mut relay.child, Duration::from_secs(10)).success());
    assert!(db.exists());
}

#[test]
fn bad_settings_exit_2_with_a_message() {
    let out = relay_command()
        .env("RETALK_SERVER_PORT", "http")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("RETALK_SERVER_PORT: \"http\" is not a valid port number"),
        "{err}"
    );

    let out = relay_command().arg("--help").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("--audience"));
}
