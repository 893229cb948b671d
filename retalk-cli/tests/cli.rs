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
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no passphrase provided (and no terminal to prompt on)"),
        "{err}"
    );
    assert!(
        err.contains("PICKLE_SECRET=\"<YOUR-SECRET>\" retalk id -s alice"),
        "{err}"
    );
    assert!(
        !err.contains("RETALK_PASSPHRASE"),
        "opening a 0.0.1 identity: {err}"
    );
}

#[test]
fn a_relay_that_is_down_or_refuses_is_reported_not_a_crash() {
    let tmp = tempfile::tempdir().unwrap();
    let cli = Cli::ours(tmp.path());
    let port = free_port();
    init(&cli, "alice", "alice", &format!("http://127.0.0.1:{port}"));
    let err = cli.fails(&["receive", "-s", "alice"], 1);
    assert!(err.contains("the relay could not be reached"), "{err}");
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

/// Push delivery (issue #11): on our relay `--follow` holds a read open,
/// so a message shows as it is sent. Each of five messages must show
/// within a second of its `send` starting; with the original's 2 s
/// polling all five would do so by chance about once in 32 runs.
#[test]
fn receive_follow_shows_each_message_as_it_is_sent() {
    let tmp = tempfile::tempdir().unwrap();
    let relay = OurRelay::start(tmp.path());
    let (cli, _alice, bob) = alice_and_bob(tmp.path(), &relay);
    let mut follow = cli
        .command(&["receive", "--follow", "--json", "-s", "bob"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(follow.stdout.take().unwrap()).lines();
    // The first message also sets up the session; the rest are timed.
    cli.ok(&["send", &bob, "warm-up", "-s", "alice"]);
    lines.next().unwrap().unwrap();
    let mut took = Vec::new();
    for i in 0..5 {
        std::thread::sleep(Duration::from_millis(300)); // let it park again
        let started = std::time::Instant::now();
        cli.ok(&["send", &bob, &format!("m{i}"), "-s", "alice"]);
        let line = lines.next().unwrap().unwrap();
        took.push(started.elapsed());
        assert!(line.contains(&format!("\"m{i}\"")), "{line}");
    }
    signal(&follow, "-INT");
    wait_exit(&mut follow, Duration::from_secs(15));
    assert!(
        took.iter().all(|t| *t < Duration::from_secs(1)),
        "send-to-line times: {took:?}"
    );
}

/// `--follow --limit N` exits once N lines are out, without waiting for a
/// further message.
#[test]
fn receive_follow_with_a_limit_exits_after_that_many() {
    let tmp = tempfile::tempdir().unwrap();
    let relay = OurRelay::start(tmp.path());
    let (cli, _alice, bob) = alice_and_bob(tmp.path(), &relay);
    cli.ok(&["send", &bob, "one", "-s", "alice"]);
    let mut follow = cli
        .command(&["receive", "--follow", "--limit", "1", "-s", "bob"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let status = wait_exit(&mut follow, Duration::from_secs(10));
    assert!(status.success(), "{status}");
    let mut out = String::new();
    std::io::Read::read_to_string(&mut follow.stdout.take().unwrap(), &mut out).unwrap();
    assert_eq!(out, "~alice: one\n");
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
        ("send", "standard input"),
        ("receive", "--follow"),
        ("receive", "--limit"),
        ("receive", "cannot tell"),
        ("receive", "shown escaped"),
        ("receive", "`\\x1b`"),
    ] {
        let help = cli.ok(&[cmd, "--help"]);
        assert!(
            !help.chars().any(|c| c.is_control() && c != '\n'),
            "{cmd} --help would drive the terminal:\n{help:?}"
        );
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

/// `n` messages `m0..` from alice waiting for bob; returns their lines as
/// bob's human-readable `receive` shows them.
fn waiting_for_bob(cli: &Cli, bob: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            cli.ok(&["send", bob, &format!("m{i}"), "-s", "alice"]);
            format!("~alice: m{i}")
        })
        .collect()
}

/// `sh -c script` in `cli`'s sandbox, `$RETALK` naming our binary: for
/// real pipes between real processes.
fn sh(cli: &Cli, script: &str) -> std::process::Output {
    std::process::Command::new("sh")
        .args(["-c", script])
        .current_dir(&cli.home)
        .env("RETALK", &cli.exe)
        .env("XDG_DATA_HOME", cli.home.join("xdg"))
        .env("HOME", &cli.home)
        .env("PICKLE_SECRET", &cli.secret)
        .env_remove("STORE")
        .env_remove("SERVER_URL")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn texts_of(json_lines: &str) -> Vec<String> {
    json_lines
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["text"].as_str().unwrap().to_owned()
        })
        .collect()
}

/// Starts `n` `retalk receive -s bob` at once; returns every line they
/// printed, sorted.
fn receivers_at_once(cli: &Cli, n: usize) -> Vec<String> {
    let children: Vec<_> = (0..n)
        .map(|_| {
            cli.command(&["receive", "-s", "bob"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut got = Vec::new();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", describe(&out));
        got.extend(
            String::from_utf8(out.stdout)
                .unwrap()
                .lines()
                .map(String::from),
        );
    }
    got.sort();
    got
}

#[test]
fn receivers_started_at_once_on_one_identity_print_each_message_once() {
    let tmp = tempfile::tempdir().unwrap();
    let relay = OurRelay::start(tmp.path());
    let (cli, _alice, bob) = alice_and_bob(tmp.path(), &relay);

    // Messages already fetched and decrypted into bob's local inbox (a
    // receive whose stdout was closed could print none), then four
    // receivers at once: each starts by printing what is waiting there.
    let mut want = waiting_for_bob(&cli, &bob, 12);
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    cli.command(&["receive", "-s", "bob"])
        .stdout(writer)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    let inbox: i64 = rusqlite::Connection::open(tmp.path().join("bob/store.db"))
        .unwrap()
        .query_row("SELECT COUNT(*) FROM inbox", [], |r| r.get(0))
        .unwrap();
    assert_eq!(inbox, 12, "all waiting in bob's local inbox");
    want.sort();
    assert_eq!(receivers_at_once(&cli, 4), want, "each printed once in all");

    // Mail waiting on the relay: a cron drain beside interactive ones.
    let mut want = waiting_for_bob(&cli, &bob, 12);
    want.sort();
    assert_eq!(receivers_at_once(&cli, 4), want, "each printed once in all");
    assert_eq!(cli.ok(&["receive", "-s", "bob"]), "");
}

#[test]
fn receive_limit_takes_exactly_n_through_a_pipe_and_keeps_the_rest() {
    let tmp = tempfile::tempdir().unwrap();
    let relay = OurRelay::start(tmp.path());
    let (cli, _alice, bob) = alice_and_bob(tmp.path(), &relay);
    waiting_for_bob(&cli, &bob, 5);
    let out = sh(
        &cli,
        "\"$RETALK\" receive --json --limit 1 -s bob | head -1; \
         \"$RETALK\" receive --json --limit 2 -s bob",
    );
    assert!(out.status.success(), "{}", describe(&out));
    let first = texts_of(&String::from_utf8(out.stdout).unwrap());
    assert_eq!(first, ["m0", "m1", "m2"], "one, then two, in order");
    let rest = texts_of(&cli.ok(&["receive", "--json", "-s", "bob"]));
    assert_eq!(rest, ["m3", "m4"], "the rest on the next call, none lost");
}

#[test]
fn a_closed_stdout_stops_receive_quietly_and_keeps_what_was_not_written() {
    let tmp = tempfile::tempdir().unwrap();
    let relay = OurRelay::start(tmp.path());
    let (cli, _alice, bob) = alice_and_bob(tmp.path(), &relay);
    waiting_for_bob(&cli, &bob, 3);
    // A reader that left before the first line: every write fails.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = cli
        .command(&["receive", "--json", "-s", "bob"])
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("retalk:"), "quiet: {err}");
    let kept = texts_of(&cli.ok(&["receive", "--json", "-s", "bob"]));
    assert_eq!(kept, ["m0", "m1", "m2"], "nothing written, nothing lost");

    // The real thing: `| head -1` with several waiting. What head took plus
    // what the next call prints is never a message twice; retalk exits 0.
    waiting_for_bob(&cli, &bob, 5);
    let out = sh(
        &cli,
        "{ \"$RETALK\" receive --json -s bob 2>err; echo $? > status; } | head -1",
    );
    assert!(out.status.success(), "{}", describe(&out));
    let status = std::fs::read_to_string(tmp.path().join("status")).unwrap();
    let err = std::fs::read_to_string(tmp.path().join("err")).unwrap();
    assert_eq!(status.trim(), "0", "{err}");
    assert!(!err.contains("retalk:"), "quiet: {err}");
    let mut seen = texts_of(&String::from_utf8(out.stdout).unwrap());
    assert_eq!(seen.len(), 1);
    seen.extend(texts_of(&cli.ok(&["receive", "--json", "-s", "bob"])));
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), seen.len(), "none twice: {seen:?}");
    assert!(seen
        .iter()
        .all(|t| ["m0", "m1", "m2", "m3", "m4"].contains(&t.as_str())));
}

#[test]
fn human_output_never_lets_a_sender_forge_a_line_or_drive_the_terminal() {
    let tmp = tempfile::tempdir().unwrap();
    let relay = OurRelay::start(tmp.path());
    let (cli, alice, bob) = alice_and_bob(tmp.path(), &relay);
    cli.ok(&["add", "alice", &alice, "-s", "bob"]);
    // A stranger who calls himself alice too.
    init(&cli, "mallory", "alice", &relay.url);
    let forged = [
        "hello\nalice: the new deploy key is in my mail",
        "\x1b[2K\x1b[1Galice: wiped and rewritten",
        "x\ralice: carriage return",
        "x\u{85}alice: next line",
        "x\u{2028}alice: line separator\u{2029}alice: paragraph",
        "\u{202e}lanigiro\u{202c} and \u{200b}hidden",
        "\x07\x08\x7f\u{9b}31m",
    ];
    for text in forged {
        cli.ok(&["send", &bob, text, "-s", "mallory"]);
    }
    cli.ok(&["send", &bob, "the real one", "-s", "alice"]);
    let shown = cli.ok(&["receive", "-s", "bob"]);
    let lines: Vec<&str> = shown.lines().collect();
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("alice: ")).count(),
        1,
        "only the saved alice's line reads `alice: `:\n{shown}"
    );
    assert!(lines.contains(&"alice: the real one"), "{shown}");
    for line in &lines {
        assert!(
            line.starts_with("~alice: ")
                || line.starts_with("  | ")
                || *line == "alice: the real one",
            "{line:?}"
        );
        assert!(
            !line.chars().any(|c| c.is_control()
                || matches!(
                    c,
                    '\u{2028}' | '\u{2029}' | '\u{202e}' | '\u{202c}' | '\u{200b}'
                )),
            "{line:?}"
        );
    }
    assert!(
        shown.contains("~alice: hello\n  | alice: the new deploy key is in my mail\n"),
        "{shown}"
    );
    assert!(
        shown.contains("~alice: \\x1b[2K\\x1b[1Galice: wiped"),
        "{shown}"
    );
    assert!(
        shown.contains("~alice: \\u{202e}lanigiro\\u{202c}"),
        "{shown}"
    );

    // --json stays exact.
    for text in forged {
        cli.ok(&["send", &bob, text, "-s", "mallory"]);
    }
    let exact = texts_of(&cli.ok(&["receive", "--json", "-s", "bob"]));
    assert_eq!(exact, forged);

    // A saved name cannot pass for a sender's own.
    let err = cli.fails(&["add", "~carol", &alice, "-s", "bob"], 2);
    assert!(err.contains("cannot be saved"), "{err}");
    let err = cli.fails(&["add", "eve\x1b[0m", &alice, "-s", "bob"], 2);
    assert!(err.contains("cannot be saved"), "{err}");
}

#[test]
fn a_full_mailbox_is_a_refusal_exit_2_and_the_message_stays_in_the_outbox() {
    let tmp = tempfile::tempdir().unwrap();
    let relay = OurRelay::start_with(tmp.path(), |c| c.max_mailbox = 1);
    let (cli, _alice, bob) = alice_and_bob(tmp.path(), &relay);
    cli.ok(&["send", &bob, "fits", "-s", "alice"]);
    let err = cli.fails(&["send", &bob, "does not fit", "-s", "alice"], 2);
    assert!(err.contains("mailbox full"), "{err}");
    assert!(err.contains("refused"), "{err}");
    assert!(!err.contains("did not reach"), "the relay answered: {err}");
    let outbox: Vec<String> = rusqlite::Connection::open(tmp.path().join("alice/store.db"))
        .unwrap()
        .prepare("SELECT last_error FROM outbox WHERE kind = 'message' AND last_error IS NOT NULL")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(outbox.len(), 1, "kept to be resent: {outbox:?}");
    assert!(outbox[0].contains("mailbox full"), "{outbox:?}");
}

#[test]
fn environment_that_is_not_utf8_is_named_not_ignored() {
    use std::ffi::OsString;
    use std::os::unix::ffi::OsStringExt;
    let tmp = tempfile::tempdir().unwrap();
    let relay = OurRelay::start(tmp.path());
    let cli = Cli::ours(tmp.path());
    init(&cli, "alice", "alice", &relay.url);
    let bad = OsString::from_vec(b"caf\xe9".to_vec());

    let out = cli
        .command(&["id", "-s", "alice"])
        .env("PICKLE_SECRET", &bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("PICKLE_SECRET is set but is not valid UTF-8"),
        "{err}"
    );

    let out = cli
        .command(&["receive", "-s", "alice"])
        .env("SERVER_URL", &bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("SERVER_URL is set but is not valid UTF-8"),
        "{err}"
    );
}

#[test]
fn send_dash_takes_a_text_past_the_argument_limit_from_stdin() {
    let tmp = tempfile::tempdir().unwrap();
    let relay = OurRelay::start(tmp.path());
    let (cli, _alice, bob) = alice_and_bob(tmp.path(), &relay);
    // Over the kernel's 128 KiB limit for one argument, with a newline.
    let text: String = (0..200 * 1024)
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect::<String>()
        + "\nend\n";
    let mut child = cli
        .command(&["send", &bob, "-", "-s", "alice"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(
        texts_of(&cli.ok(&["receive", "--json", "-s", "bob"])),
        [text]
    );
}

#[test]
fn add_says_on_stderr_when_it_replaces_an_earlier_id() {
    let tmp = tempfile::tempdir().unwrap();
    let cli = Cli::ours(tmp.path());
    init(&cli, "alice", "alice", "http://127.0.0.1:9");
    let first = "0123456789abcdef0123456789abcdef";
    let second = "fedcba9876543210fedcba9876543210";
    let out = cli.run(&["add", "bob", first, "-s", "alice"]);
    assert!(out.status.success(), "{}", describe(&out));
    let out = cli.run(&["add", "bob", second, "-s", "alice"]);
    assert!(out.status.success(), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("replaced bob: was {first}, now {second}")),
        "{err}"
    );
    assert!(out.stdout.is_empty());
}

/// A reader that closed our stderr (`2>&1 >/dev/null | head -1`) does not
/// turn a finished command into a panic (exit 101): the lines it would
/// have read are dropped, the command's result stands.
#[test]
fn a_closed_stderr_pipe_is_no_panic() {
    let tmp = tempfile::tempdir().unwrap();
    let cli = Cli::ours(tmp.path());
    let mut child = cli
        .command(&[
            "init",
            "alice",
            "--name",
            "alice",
            "--server",
            "http://127.0.0.1:9",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The read end goes away before the command has written a line.
    drop(child.stderr.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(String::from_utf8(out.stdout).unwrap().trim().len(), 32);
    // A failing command keeps its own status, not 101.
    let mut child = cli
        .command(&["init", "alice"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stderr.take());
    assert_eq!(child.wait().unwrap().code(), Some(2));
}

/// Our CLI in `home` as 0.3.0 identities: `RETALK_HOME` there and
/// `RETALK_PASSPHRASE` set, so `init -u NAME` makes a 0.3.0 identity.
fn cli_030(home: &Path) -> Cli {
    let mut cli = Cli::ours(home);
    cli.env
        .push(("RETALK_HOME".into(), home.join("rh").display().to_string()));
    cli.env
        .push(("RETALK_PASSPHRASE".into(), "passphrase".into()));
    cli
}

/// `send TEXT --peer P` on a 0.3.0 identity while the relay is down keeps
/// the message (0.3.0's README promise) and exits 2 as Python does; the
/// error names no protocol call and says what to check; the next `sync`
/// with the relay back sends it, and the peer reads it.
#[test]
fn a_030_send_while_the_relay_is_down_is_kept_and_sent_by_the_next_sync() {
    let tmp = tempfile::tempdir().unwrap();
    let relay = OurRelay::start(tmp.path());
    let cli = cli_030(tmp.path());
    cli.ok(&["init", "-u", "alice", "-r", &relay.url]);
    let bob = cli
        .ok(&["init", "-u", "bob", "-r", &relay.url])
        .trim()
        .to_owned();
    cli.ok(&["add", &bob, "--peer", "bob", "-u", "alice"]);
    let down = format!("http://127.0.0.1:{}", free_port());
    let err = cli.fails(
        &[
            "send",
            "while down",
            "--peer",
            "bob",
            "-u",
            "alice",
            "-r",
            &down,
        ],
        2,
    );
    assert!(err.contains("is kept in the outbox"), "{err}");
    assert!(err.contains("the relay could not be reached"), "{err}");
    assert!(err.contains("check the relay URL"), "{err}");
    for tool in ["count_keys", "claim_key", "get_keys", "send"] {
        assert!(!err.contains(&format!("from {tool}")), "{err}");
    }
    let summary: serde_json::Value =
        serde_json::from_str(&cli.ok(&["sync", "-u", "alice"])).unwrap();
    assert_eq!(summary["resent"], 1, "{summary}");
    let got = cli.ok(&["receive", "--all", "-u", "bob"]);
    let texts: Vec<String> = got
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["text"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(texts, ["while down"]);
}

/// "No identity" suggests the `init` of the location's generation: 0.0.1's
/// `retalk init DIR`, or for a 0.3.0 name 0.3.0's form with a passphrase
/// source (not the 0.0.1 form, which would make an identity 0.3.0
/// commands do not find).
#[test]
fn no_identity_suggests_the_init_of_its_generation() {
    let tmp = tempfile::tempdir().unwrap();
    let cli = cli_030(tmp.path());
    let err = cli.fails(&["id", "-u", "zed"], 2);
    assert!(
        err.contains("create one with `retalk init -u zed --passphrase-file /path/to/passphrase`"),
        "{err}"
    );
    let err = cli.fails(&["id", "-s", "nowhere"], 2);
    assert!(
        err.contains("create one with `retalk init nowhere`"),
        "{err}"
    );
}

/// `init -u NAME` with no passphrase source and no terminal names 0.3.0's
/// options (as Python's block) and 0.0.1's PICKLE_SECRET; with
/// PICKLE_SECRET it makes a 0.0.1 identity and says so, with where it is
/// and how to make a 0.3.0 one; with RETALK_PASSPHRASE a 0.3.0 one, no
/// note.
#[test]
fn init_u_says_which_generation_it_makes_and_how_to_pick() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cli = Cli::ours(tmp.path());
    cli.env.push((
        "RETALK_HOME".into(),
        tmp.path().join("rh").display().to_string(),
    ));
    cli.env.push(("PICKLE_SECRET".into(), String::new()));
    let err = cli.fails(&["init", "-u", "zed"], 2);
    for want in [
        "no passphrase provided",
        "retalk init -u zed --passphrase-file /path/to/passphrase",
        "retalk init -u zed -p \"<YOUR-PASSPHRASE>\"",
        "export RETALK_PASSPHRASE=",
        "retalk init -u zed --no-passphrase",
        "PICKLE_SECRET=\"<YOUR-SECRET>\" retalk init -u zed",
    ] {
        assert!(err.contains(want), "{want}: {err}");
    }
    assert!(!err.contains("PICKLE_SECRET is not set"), "{err}");

    cli.env.pop();
    let out = cli.run(&["init", "-u", "zed", "--server", "http://127.0.0.1:9"]);
    assert!(out.status.success(), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(tmp.path().join("xdg/retalk/zed/store.db").exists());
    assert!(err.contains("this is a 0.0.1 identity"), "{err}");
    assert!(
        err.contains(&tmp.path().join("xdg/retalk/zed").display().to_string()),
        "{err}"
    );
    assert!(
        err.contains("retalk init -u zed --passphrase-file"),
        "{err}"
    );

    cli.env
        .push(("RETALK_PASSPHRASE".into(), "passphrase".into()));
    let out = cli.run(&["init", "-u", "kay", "--no-register"]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(tmp.path().join("rh/kay/store.db").exists());
    assert!(!String::from_utf8_lossy(&out.stderr).contains("0.0.1 identity"));
}

/// 0.3.0's stderr: a passphrase file readable by others is warned about
/// once per `init` (it is read to create and again to register); `sync`
/// and `register` say what they did; `receive` without a target is a
/// usage error before any `using …` banner.
#[test]
fn stderr_lines_as_python_030_prints_them() {
    let tmp = tempfile::tempdir().unwrap();
    let relay = OurRelay::start(tmp.path());
    let mut cli = Cli::ours(tmp.path());
    cli.env.push((
        "RETALK_HOME".into(),
        tmp.path().join("rh").display().to_string(),
    ));
    let file = tmp.path().join("pass");
    std::fs::write(&file, "passphrase\n").unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let file = file.display().to_string();
    let out = cli.run(&[
        "init",
        "-u",
        "ann",
        "-r",
        &relay.url,
        "--passphrase-file",
        &file,
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Registered on"), "{err}");
    #[cfg(unix)]
    assert_eq!(
        err.matches("is readable by other users").count(),
        1,
        "{err}"
    );

    cli.env.push(("RETALK_PASSPHRASE_FILE".into(), file));
    let out = cli.run(&["sync", "-u", "ann"]);
    assert!(out.status.success(), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.lines().any(|l| l == "synced (up to date)"), "{err}");
    let out = cli.run(&["register", "-u", "ann"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.lines()
            .any(|l| l == format!("registered ann on {} (already current)", relay.url)),
        "{err}"
    );
    let err = cli.fails(&["receive", "-u", "ann"], 2);
    assert!(err.contains("receive needs a target"), "{err}");
    assert!(!err.contains("using "), "{err}");
}
