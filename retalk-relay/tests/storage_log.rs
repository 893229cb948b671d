//! Issue #10, item 8: when its storage fails, the relay answers 503 and
//! the operator sees the cause in the log at the default level, once for a
//! burst of failing requests, and a line when it recovers. Against the
//! `retalk-relay` binary on a real SQLite file made unwritable with
//! `chattr +i` (the tests run as root, on ext4; a file system without the
//! flag fails the test with the reason).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{post, relay_command, Peer, RelayProcess};
use retalk_proto::wire::Args;

/// Requests made while the store fails.
const FAILING: usize = 30;

/// Sets or clears the immutable flag on files; cleared again on drop, so
/// a failing test leaves no file its temporary folder cannot remove.
struct Immutable(Vec<PathBuf>);

impl Immutable {
    fn set(files: Vec<PathBuf>) -> Immutable {
        chattr("+i", &files);
        Immutable(files)
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        chattr("-i", &self.0);
    }
}

fn chattr(flag: &str, files: &[PathBuf]) {
    let out = Command::new("chattr")
        .arg(flag)
        .args(files)
        .stderr(Stdio::piped())
        .output()
        .expect("this test needs chattr (e2fsprogs) and root");
    assert!(
        out.status.success(),
        "chattr {flag} failed (needs root and a file system with the immutable flag): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn lines_with(log: &Path, text: &str) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap()
        .lines()
        .filter(|l| l.contains(text))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn a_failing_store_is_logged_once_per_burst_and_its_recovery_too() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("relay.db");
    let log = dir.path().join("stderr.log");
    // The default log level: RUST_LOG is removed by relay_command.
    let relay = RelayProcess::start(
        relay_command()
            .args(["--host", "127.0.0.1", "--port", "0", "--db"])
            .arg(&db)
            .stderr(std::fs::File::create(&log).unwrap()),
    );
    let url = relay.url();
    let (mut alice, mut bob) = (Peer::new(), Peer::new());
    for p in [&mut alice, &mut bob] {
        let publish = p.publish_args();
        assert_eq!(post(relay.addr, &p.body(&publish, &url)).await.status, 200);
    }
    let send = |text: &str| Args::SendMessage {
        to: bob.id.to_string(),
        mtype: 1,
        body: text.to_owned(),
    };

    // The database and its write-ahead log; not the shared-memory index,
    // which SQLite maps into memory (a write to a mapped immutable file
    // is a SIGBUS, a crash rather than a storage error).
    let files: Vec<PathBuf> = ["relay.db", "relay.db-wal"]
        .iter()
        .map(|f| dir.path().join(f))
        .filter(|f| f.exists())
        .collect();
    let frozen = Immutable::set(files);
    for i in 0..FAILING {
        let a = post(relay.addr, &alice.body(&send(&format!("m{i}")), &url)).await;
        assert_eq!(
            (a.status, a.error()),
            (503, "relay storage unavailable; retry later".to_owned()),
            "request {i}"
        );
    }
    let failing = lines_with(&log, "relay storage failing");
    assert_eq!(
        failing.len(),
        1,
        "one cause line for {FAILING} failing requests: {failing:?}"
    );
    assert!(failing[0].contains("ERROR"), "{}", failing[0]);
    let text = std::fs::read_to_string(&log).unwrap();
    // Who wrote to whom stays out of the log.
    for id in [&alice.id, &bob.id] {
        assert!(!text.contains(id.as_str()), "the log names a user: {text}");
    }

    drop(frozen);
    assert!(lines_with(&log, "relay storage recovered").is_empty());
    // Successes within the quiet period do not end the burst yet.
    tokio::time::sleep(Duration::from_secs_f64(retalk_relay::outage::QUIET + 0.5)).await;
    let a = post(relay.addr, &alice.body(&send("after"), &url)).await;
    assert_eq!(a.status, 200, "{:?}", String::from_utf8_lossy(&a.body));
    let recovered = lines_with(&log, "relay storage recovered");
    assert_eq!(
        recovered.len(),
        1,
        "{}",
        std::fs::read_to_string(&log).unwrap()
    );
    assert!(
        recovered[0].contains(&format!("{FAILING} failed calls")),
        "{}",
        recovered[0]
    );
    eprintln!("{}", std::fs::read_to_string(&log).unwrap());
}
