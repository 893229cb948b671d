//! A user of the Python retalk 0.0.1 command line and a user of ours talk,
//! through our relay and through the Python relay.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use common::*;

/// A Python user and one of ours, both homed in `home`, talk through the
/// relay at `url`.
fn converse(python: &Path, home: &Path, url: &str) {
    let (py, rs) = (Cli::python(python, home), Cli::ours(home));
    let py_id = init(&py, "py", "pat", url);
    let rs_id = init(&rs, "rs", "rue", url);
    // Python's `id --json` and ours agree on the shape.
    let py_json: serde_json::Value =
        serde_json::from_str(&py.ok(&["id", "--json", "-s", "py"])).unwrap();
    let rs_json: serde_json::Value =
        serde_json::from_str(&rs.ok(&["id", "--json", "-s", "rs"])).unwrap();
    assert_eq!(
        py_json.as_object().unwrap().keys().collect::<Vec<_>>(),
        rs_json.as_object().unwrap().keys().collect::<Vec<_>>()
    );

    // Both publish by receiving once.
    py.ok(&["receive", "-s", "py"]);
    rs.ok(&["receive", "-s", "rs"]);
    py.ok(&["add", "rue", &rs_id, "-s", "py"]);
    rs.ok(&["add", "pat", &py_id, "-s", "rs"]);

    py.ok(&["send", "rue", "hello from python \u{e9}", "-s", "py"]);
    assert_eq!(
        rs.ok(&["receive", "-s", "rs"]),
        "pat: hello from python \u{e9}\n"
    );
    rs.ok(&["send", "pat", "hello from rust \u{2603}", "-s", "rs"]);
    let line = py.ok(&["receive", "--json", "-s", "py"]);
    assert_eq!(
        line,
        format!(
            "{{\"from\": \"{rs_id}\", \"name\": \"rue\", \"text\": \"hello from rust \\u2603\"}}\n"
        )
    );
    // Several more each way, on established sessions.
    for i in 0..3 {
        py.ok(&["send", "rue", &format!("p{i}"), "-s", "py"]);
        rs.ok(&["send", "pat", &format!("r{i}"), "-s", "rs"]);
    }
    assert_eq!(
        rs.ok(&["receive", "-s", "rs"]),
        "pat: p0\npat: p1\npat: p2\n"
    );
    assert_eq!(
        py.ok(&["receive", "-s", "py"]),
        "rue: r0\nrue: r1\nrue: r2\n"
    );
    // The acks reach our user: its outbox empties.
    rs.ok(&["receive", "-s", "rs"]);
    let store = retalk_store_sqlite::SqliteStore::open(rs.home.join("rs")).unwrap();
    assert!(retalk_proto::client::Store::outbox(&store)
        .unwrap()
        .is_empty());
}

#[test]
fn python_and_rust_users_talk_through_our_relay() {
    let python = retalk_testkit::python::python_with_retalk("0.0.1");
    let tmp = tempfile::tempdir().unwrap();
    let relay = OurRelay::start(tmp.path());
    converse(&python, tmp.path(), &relay.url);
}

#[test]
fn python_and_rust_users_talk_through_the_python_relay() {
    let python = retalk_testkit::python::python_with_retalk("0.0.1");
    let tmp = tempfile::tempdir().unwrap();
    let relay = PythonRelay::start(&python, tmp.path());
    converse(&python, tmp.path(), &relay.url);
}

#[test]
fn a_python_identity_folder_keeps_working_with_our_cli() {
    let python = retalk_testkit::python::python_with_retalk("0.0.1");
    let tmp = tempfile::tempdir().unwrap();
    let relay = OurRelay::start(tmp.path());
    let py = Cli::python(&python, tmp.path());
    let rs = Cli::ours(tmp.path());
    // Two Python users talk; then one of them switches to our CLI.
    let a = init(&py, "a", "ann", &relay.url);
    let b = init(&py, "b", "ben", &relay.url);
    py.ok(&["receive", "-s", "a"]);
    py.ok(&["receive", "-s", "b"]);
    py.ok(&["add", "ben", &b, "-s", "a"]);
    py.ok(&["send", "ben", "first", "-s", "a"]);
    assert_eq!(py.ok(&["receive", "-s", "b"]), "~ann: first\n");
    py.ok(&["send", &a, "reply", "-s", "b"]);
    // Ann upgrades: same id, same saved peer, the session keeps decrypting.
    assert_eq!(rs.ok(&["id", "-s", "a"]).trim(), a);
    assert_eq!(rs.ok(&["receive", "-s", "a"]), "ben: reply\n");
    rs.ok(&["send", "ben", "from the upgraded client", "-s", "a"]);
    assert_eq!(
        py.ok(&["receive", "-s", "b"]),
        "~ann: from the upgraded client\n"
    );
}
