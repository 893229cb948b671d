//! The original's command-line flow, run against our binaries.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::*;

/// Our CLI in `home` with identities alice and bob on `relay`, bob
/// published (he has received once); returns the CLI and their ids.
fn alice_and_bob(home: &Path, relay: &OurRelay) -> (Cli, String, String) {
    let cli = Cli::ours(home);
    let alice = init(&cli, "alice", "alice", &relay.url);
    let bob = init(&cli, "bob", "bob", &relay.url);
    cli.ok(&["receive", "-s", "bob"]);
    (cli, alice, bob)
}

#[test]
fn the_whole_flow_init_id_add_send_receive_json() {
    let tmp = tempfile::tempdir().unwrap();
    let relay = OurRelay::start(tmp.path());
    let cli = Cli::ours(tmp.path());
    let alice = init(&cli, "alice", "alice", &relay.url);
    let bob = init(&cli, "bob", "bob", &relay.url);
    assert_eq!(alice.len(), 32);
    assert_ne!(alice, bob);

    let id: serde_json::Value =
        serde_json::from_str(&cli.ok(&["id", "--json", "-s", "alice"])).unwrap();
    assert_eq!(id["user_id"], alice.as_str());
    assert_eq!(id["name"], "alice");
    assert_eq!(id["identity_key"].as_str().unwrap().len(), 43);
    assert_eq!(cli.ok(&["id", "-s", "alice"]).trim(), alice);

    // Receiving publishes: bob becomes reachable.
    let out = cli.run(&["receive", "-s", "bob"]);
    assert!(out.status.success());
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("using bob ({bob}) from bob")));

    cli.ok(&["add", "bob", &bob, "-s", "alice"]);
    let out = cli.run(&["send", "bob", "hello bob \u{2603}", "-s", "alice"]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(out.stdout.is_empty(), "stdout carries only data");
    assert!(String::from_utf8_lossy(&out.stderr).contains("sent to bob"));

    let line = cli.ok(&["receive", "--json", "-s", "bob"]);
    assert_eq!(
        line,
        format!(
            "{{\"from\": \"{alice}\", \"name\": \"~alice\", \"text\": \"hello bob \\u2603\"}}\n"
        )
    );
    assert_eq!(cli.ok(&["receive", "-s", "bob"]), "", "delivered once");

    // Bob answers; alice sees her saved name for him.
    cli.ok(&["send", &alice, "hi alice", "-s", "bob"]);
    assert_eq!(cli.ok(&["receive", "-s", "alice"]), "bob: hi alice\n");
    // The acks flowed: the relay holds nothing.
    cli.ok(&["receive", "-s", "bob"]);
    assert_eq!(relay.count("messages"), 0);
}

#[test]
fn init_refuses_to_overwrite_and_needs_a_location() {
    let tmp = tempfile::tempdir().unwrap();
    let cli = Cli::ours(tmp.path());
    init(&cli, "alice", "alice", "http://127.0.0.1:9");
    let err = cli.fails(&["init", "alice"], 2);
    assert!(err.contains("an identity already exists at alice"), "{err}");
    let err = cli.fails(&["init"], 2);
    assert!(err.contains("init needs a location"), "{err}");
}

#[test]
fn user_level_identities_live_under_xdg_data_home() {
    let tmp = tempfile::tempdir().unwrap();
    let cli = Cli::ours(tmp.path());
    let err = cli.fails(&["id"], 2);
    assert!(err.contains("no identity specified"), "{err}");
    let id = cli.ok(&["init", "-u", "--name", "me"]).trim().to_owned();
    assert!(tmp.path().join("xdg/retalk/default/store.db").exists());
    // With no selection, the user-level default is used.
    assert_eq!(cli.ok(&["id"]).trim(), id);
    let work = cli.ok(&["init", "-u", "work"]).trim().to_owned();
    assert_eq!(cli.ok(&["id", "-u", "work"]).trim(), work);
    // STORE selects a folder; -s wins over it.
    let mut c = cli.command(&["id"]);
    c.env("STORE", tmp.path().join("xdg/retalk/work"));
    assert_eq!(
        String::from_utf8(c.output().unwrap().stdout)
            .unwrap()
            .trim(),
        work
    );
    let err = cli.fails(&["id", "-s", "nowhere"], 2);
    assert!(
        err.contains("no identity at nowhere — create one with `retalk init nowhere`"),
        "{err}"
    );
}

#[test]
fn wrong_secret_unknown_peer_and_bad_ids_exit_2() {
    let tmp = tempfile::tempdir().unwrap();
    let cli = Cli::ours(tmp.path());
    init(&cli, "alice", "alice", "http://127.0.0.1:9");
    let wrong = Cli {
        secret: "wrong".into(),
        ..Cli::ours(tmp.path())
    };
    let err = wrong.fails(&["id", "-s", "alice"], 2);
    assert!(
        err.contains("could not unlock the identity at alice (wrong secret?)"),
        "{err}"
    );
    let err = cli.fails(&["send", "carol", "hi", "-s", "alice"], 2);
    assert!(err.contains("unknown peer 'carol'"), "{err}");
    let err = cli.fails(&["add", "bob", "not-an-id", "-s", "alice"], 2);
    assert!(err.contains("user id must be 32 hex characters"), "{err}");
    let err = cli.fails(
        &[
            "add",
            "0123456789abcdef0123456789abcdef",
            "0123456789abcdef0123456789abcdef",
            "-s",
            "alice",
        ],
        2,
    );
    assert!(err.contains("peer name looks like a user id"), "{err}");
    // No secret and no terminal.
    let mut c = cli.command(&["id", "-s", "alice"]);
    c.env_remove("PICKLE_SECRET");
    let out = c.output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("PICKLE_SECRET is not set and there is no terminal"));
}

#[test]
fn a_relay_that_is_down_or_refuses_is_reported_not_a_crash() {
    let tmp = tempfile::tempdir().unwrap();
    let cli = Cli::ours(tmp.path());
    let port = free_port();
    init(&cli, "alice", "alice", &format!("http://127.0.0.1:{port}"));
    let err = cli.fails(&["receive", "-s", "alice"], 1);
    assert!(err.contains("relay unreachable"), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    let relay = OurRelay::start(tmp.path());
    let err = cli.fails(
        &[
            "send",
            "0123456789abcdef0123456789abcdef",
            "hi",
            "-s",
            "alice",
            "--server",
            &relay.url,
        ],
        2,
    );
    assert!(
        err.contains("unknown peer or no published keys: 0123456789abcdef0123456789abcdef"),
        "{err}"
    );
}

#[test]
fn a_tampered_relay_is_a_pin_mismatch_and_nothing_is_sent() {
    let tmp = tempfile::tempdir().unwrap();
    let relay = OurRelay::start(tmp.path());
    let (cli, _alice, bob) = alice_and_bob(tmp.path(), &relay);
    let mallory = init(&cli, "mallory", "mallory", &relay.url);
    cli.ok(&["receive", "-s", "mallory"]);
    relay.sql(&format!(
        "UPDATE users SET identity_key=(SELECT identity_key FROM users WHERE id='{mallory}'), \
         signing_key=(SELECT signing_key FROM users WHERE id='{mallory}') WHERE id='{bob}'"
    ));
    let err = cli.fails(&["send", &bob, "secret", "-s", "alice"], 2);
    assert!(err.contains("PIN MISMATCH"), "{err}");
    assert_eq!(relay.count("messages"), 0);
}

#[test]
fn a_wiped_relay_heals_on_the_next_receive_and_send() {
    let tmp = tempfile::tempdir().unwrap();
    let relay = OurRelay::start(tmp.path());
    let (cli, alice, bob) = alice_and_bob(tmp.path(), &relay);
    cli.ok(&["send", &bob, "before", "-s", "alice"]);
    assert_eq!(
        cli.ok(&["receive", "-s", "bob"]),
        format!("~alice: before\n")
    );
    relay.sql("DELETE FROM users; DELETE FROM otks; DELETE FROM messages;");
    cli.ok(&["receive", "-s", "bob"]); // republishes
    cli.ok(&["send", &bob, "after the wipe", "-s", "alice"]);
    assert_eq!(
        cli.ok(&["receive", "-s", "bob"]),
        "~alice: after the wipe\n"
    );
    cli.ok(&["send", &alice, "and back", "-s", "bob"]);
    assert_eq!(cli.ok(&["receive", "-s", "alice"]), "~bob: and back\n");
}

#[test]
fn receive_follow_prints_as_mail_arrives_and_stops_cleanly_on_ctrl_c() {
    let tmp = tempfile::tempdir().unwrap();
    let relay = OurRelay::start(tmp.path());
    let (cli, alice, bob) = alice_and_bob(tmp.path(), &relay);
    let mut follow = cli
        .command(&["receive", "--follow", "--json", "-s", "bob"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(follow.stdout.take().unwrap()).lines();
    for i in 0..3 {
        cli.ok(&["send", &bob, &format!("m{i}"), "-s", "alice"]);
        let line = lines.next().unwrap().unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(
            (v["from"].as_str().unwrap(), v["text"].as_str().unwrap()),
            (alice.as_str(), format!("m{i}").as_str())
        );
    }
    signal(&follow, "-INT");
    let status = wait_exit(&mut follow, Duration::from_secs(15));
    assert!(status.success(), "{status}");
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut follow.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn receive_follow_survives_the_relay_restarting() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let relay = OurRelay::start_on(tmp.path(), port);
    let (cli, _alice, bob) = alice_and_bob(tmp.path(), &relay);
    let mut follow = cli
        .command(&["receive", "--follow", "-s", "bob"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(follow.stdout.take().unwrap()).lines();
    cli.ok(&["send", &bob, "before the restart", "-s", "alice"]);
    assert_eq!(lines.next().unwrap().unwrap(), "~alice: before the restart");
    drop(relay);
    std::thread::sleep(Duration::from_secs(3)); // --follow polls a dead relay
    let _relay = OurRelay::start_on(tmp.path(), port);
    cli.ok(&["send", &bob, "after the restart", "-s", "alice"]);
    assert_eq!(lines.next().unwrap().unwrap(), "~alice: after the restart");
    follow.kill().unwrap();
    follow.wait().unwrap();
}

#[test]
fn help_explains_every_command() {
    let tmp = tempfile::tempdir().unwrap();
    let cli = Cli::ours(tmp.path());
    let top = cli.ok(&["--help"]);
    for needle in [
        "init",
        "id",
        "add",
        "send",
        "receive",
        "PICKLE_SECRET",
        "first match wins",
    ] {
        assert!(top.contains(needle), "{needle} missing from --help");
    }
    for (cmd, needle) in [
        ("init", "store.db"),
        ("id", "fingerprint"),
        ("add", "--pin"),
        ("send", "PIN MISMATCH"),
        ("receive", "--follow"),
    ] {
        let help = cli.ok(&[cmd, "--help"]);
        assert!(
            help.contains(needle) && help.contains("examples:"),
            "{cmd} --help lacks {needle}:\n{help}"
        );
    }
}

#[test]
fn two_processes_times_five_concurrent_sends_on_one_identity_all_decrypt() {
    let tmp = tempfile::tempdir().unwrap();
    let relay = OurRelay::start(tmp.path());
    let (cli, _alice, bob) = alice_and_bob(tmp.path(), &relay);
    cli.ok(&["receive", "-s", "alice"]);
    // Ten `retalk send` processes at once (more than 2 x 5), all sharing
    // alice's store: its file lock serialises their ratchet steps.
    let children: Vec<_> = (0..10)
        .map(|i| {
            cli.command(&["send", &bob, &format!("concurrent {i}"), "-s", "alice"])
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", describe(&out));
    }
    let got = cli.ok(&["receive", "-s", "bob"]);
    let mut lines: Vec<_> = got.lines().collect();
    lines.sort();
    let mut want: Vec<_> = (0..10).map(|i| format!("~alice: concurrent {i}")).collect();
    want.sort();
    assert_eq!(lines, want, "every message decrypts exactly once");
}
