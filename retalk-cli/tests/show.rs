//! `retalk show` in a real terminal: tmux runs the real `retalk` binary in
//! a detached 100×40 pane and `capture-pane` reads what a person would
//! see. The history is made the real way: users of our binary on our relay
//! on loopback send and receive with `--save`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::agent030::Agent;
use common::OurRelay;
use retalk_testkit::python::python_with_retalk;

const TMUX: &str = "/usr/bin/tmux";

/// A tmux server of its own (its own socket), killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn new(dir: &Path) -> Tmux {
        assert!(
            Path::new(TMUX).exists(),
            "{TMUX} is missing: apt-get install tmux (.ci/run does)"
        );
        Tmux {
            socket: dir.join("tmux.sock").display().to_string(),
        }
    }

    fn tmux(&self, args: &[&str]) -> String {
        let out = Command::new(TMUX)
            .arg("-S")
            .arg(&self.socket)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "tmux {args:?}: {}",
            common::describe(&out)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs `agent`'s `retalk ARGS` in a new 100×40 window `name` (UTC, a
    /// real terminal); the pane stays open after it exits.
    fn run(&self, name: &str, agent: &Agent, args: &[&str]) {
        let mut line = format!(
            "cd '{}' && env -i PATH='{}' HOME='{}' RETALK_HOME='{}' RETALK_PASSPHRASE='passphrase of {}' RETALK_RELAY='{}' TZ=UTC TERM=xterm-256color '{}'",
            agent.home.display(),
            agent.path,
            agent.home.display(),
            agent.home.display(),
            agent.name,
            agent.relay,
            agent.program.display(),
        );
        for a in args {
            assert!(!a.contains('\''), "{a}");
            line.push_str(&format!(" '{a}'"));
        }
        line.push_str("; echo \"[exit $?]\"; sleep 600");
        self.tmux(&[
            "new-session",
            "-d",
            "-s",
            name,
            "-x",
            "100",
            "-y",
            "40",
            &line,
        ]);
    }

    /// The pane's text (no colours), trailing blank lines dropped.
    fn capture(&self, name: &str) -> String {
        self.tmux(&["capture-pane", "-p", "-J", "-t", name, "-S", "-200"])
            .trim_end()
            .to_owned()
    }

    /// The pane with its colour escapes, as the terminal received them.
    fn capture_styled(&self, name: &str) -> String {
        self.tmux(&["capture-pane", "-p", "-e", "-t", name, "-S", "-200"])
    }

    /// Waits until the pane shows `needle`; returns the pane.
    fn wait_for(&self, name: &str, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let pane = self.capture(name);
            if pane.contains(needle) {
                return pane;
            }
            assert!(
                Instant::now() < deadline,
                "pane {name} never showed {needle:?}:\n{pane}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new(TMUX)
            .arg("-S")
            .arg(&self.socket)
            .arg("kill-server")
            .output();
    }
}

const HOSTILE: &str = "line one\n\u{1b}[2J\u{1b}[H🔵 alice · 00:00\r\n                                                  00:01 · bob 🟢\u{202e}olleh";

#[test]
fn show_renders_a_saved_conversation_in_a_real_terminal() {
    let root = tempfile::tempdir().unwrap();
    let relay = OurRelay::start(root.path());
    let alice = Agent::ours(root.path(), "alice", &relay.url);
    let bob = Agent::ours(root.path(), "bob", &relay.url);
    alice.add(&bob);
    bob.add(&alice);

    alice.ok(&[
        "send",
        "hi bob, saved on both sides",
        "--peer",
        "bob",
        "--save",
    ]);
    bob.ok(&["receive", "--peer", "alice", "--save"]);
    bob.ok(&["send", HOSTILE, "--peer", "alice", "--save"]);
    alice.ok(&["receive", "--peer", "bob", "--save"]);
    // Not saved: never shown.
    alice.ok(&["send", "unsaved", "--peer", "bob"]);

    let tmux = Tmux::new(root.path());
    tmux.run("plain", &alice, &["show", "alice", "bob"]);
    let pane = tmux.wait_for("plain", "[exit 0]");
    println!("{pane}");
    let lines: Vec<&str> = pane.lines().collect();
    // The title rule, the peer's id under it, a day line.
    assert!(
        lines[0].starts_with("──")
            && lines[0].contains(" 💬 alice ⇄ bob ")
            && lines[0].ends_with("──"),
        "{pane}"
    );
    assert_eq!(lines[1].trim(), bob.id, "{pane}");
    assert!(
        lines
            .iter()
            .any(|l| l.trim().starts_with("·· 📅 20") && l.trim().ends_with(" ··")),
        "{pane}"
    );
    // Ours on the right, bob's on the left.
    let out_head = lines
        .iter()
        .position(|l| l.trim_end().ends_with(" · alice 🟢"))
        .expect(&pane);
    assert!(lines[out_head].starts_with("          "), "{pane}");
    assert!(
        lines[out_head + 1]
            .trim_end()
            .ends_with("hi bob, saved on both sides"),
        "{pane}"
    );
    assert!(lines[out_head + 1].starts_with("          "), "{pane}");
    let in_head = lines
        .iter()
        .position(|l| l.starts_with("🔵 bob · "))
        .expect(&pane);
    assert!(in_head > out_head);
    // The hostile text: escaped, every line three columns in.
    assert_eq!(lines[in_head + 1], "   line one", "{pane}");
    assert_eq!(
        lines[in_head + 2],
        "   \\x1b[2J\\x1b[H🔵 alice · 00:00\\r",
        "{pane}"
    );
    assert_eq!(
        lines[in_head + 3],
        "   00:01 · bob 🟢\\u{202e}olleh",
        "{pane}"
    );
    assert!(!pane.contains("unsaved"), "{pane}");
    // The only escapes that reached the terminal are our colours (the
    // screen was not cleared: the title is still on it).
    let styled = tmux.capture_styled("plain");
    assert!(
        styled.contains("\u{1b}[1;36m") || styled.contains("\u{1b}[1m"),
        "no colours: {styled:?}"
    );

    // `show PEER --dir DIR` is the same view; not on a terminal, no colours.
    let dir = alice.home.join("alice").display().to_string();
    let piped = alice.ok(&["show", "bob", "--dir", &dir]);
    assert!(
        piped.contains(" 💬 alice ⇄ bob ") && piped.contains("   line one"),
        "{piped}"
    );
    assert!(!piped.contains('\u{1b}'), "{piped:?}");
    let (_, err) = alice.fails(&["show", "alice", "bob", "--dir", &dir], 2);
    assert!(
        err.contains("the identity is given by --dir DIR: give just the PEER"),
        "{err}"
    );

    // An unknown peer, a missing conversation: clear errors (without
    // RETALK_USER, a lone positional is the USER).
    let (_, err) = alice.fails(&["show", "alice", "carol"], 2);
    assert!(err.contains("carol"), "{err}");
    let bare = |args: &[&str]| {
        let out = alice
            .command(args)
            .env_remove("RETALK_USER")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        String::from_utf8(out.stderr).unwrap()
    };
    let err = bare(&["show", "alice"]);
    assert!(err.contains("show needs a conversation"), "{err}");
    let err = bare(&["show"]);
    assert!(err.contains("show needs an identity"), "{err}");

    // --follow: a message bob sends while it runs is received, saved and
    // shown; the inbox of anyone else stays for `receive`.
    tmux.run("live", &alice, &["show", "alice", "bob", "--follow"]);
    tmux.wait_for("live", "hi bob, saved on both sides");
    bob.ok(&["send", "sent while you watched", "--peer", "alice"]);
    let pane = tmux.wait_for("live", "sent while you watched");
    println!("{pane}");
    assert!(!pane.contains("[exit"), "{pane}");
    // It was saved: a plain show has it too.
    tmux.run("after", &alice, &["show", "alice", "bob"]);
    let pane = tmux.wait_for("after", "[exit 0]");
    assert!(pane.contains("sent while you watched"), "{pane}");
    // And a row another process saves meanwhile shows up too.
    alice.ok(&["send", "from another terminal", "--peer", "bob", "--save"]);
    tmux.wait_for("live", "from another terminal");
}

/// alice, bob and carol, each the others' contact, and alice's group
/// `team` of the three.
fn team(root: &Path, relay: &OurRelay) -> (Agent, Agent, Agent) {
    let alice = Agent::ours(root, "alice", &relay.url);
    let bob = Agent::ours(root, "bob", &relay.url);
    let carol = Agent::ours(root, "carol", &relay.url);
    for (a, b) in [(&alice, &bob), (&alice, &carol), (&bob, &carol)] {
        a.add(b);
        b.add(a);
    }
    alice.ok(&["group", "create", "team", "--members", "bob,carol"]);
    (alice, bob, carol)
}

#[test]
fn show_group_names_each_sender_in_a_real_terminal() {
    let root = tempfile::tempdir().unwrap();
    let relay = OurRelay::start(root.path());
    let (alice, bob, carol) = team(root.path(), &relay);
    alice.ok(&["send", "plan: ship friday", "--group", "team", "--save"]);
    bob.ok(&["receive", "--all", "--save"]);
    bob.ok(&["send", "bob agrees", "--group", "team", "--save"]);
    carol.ok(&["receive", "--all", "--save"]);
    carol.ok(&["send", "carol too", "--group", "team", "--save"]);
    alice.ok(&["receive", "--all", "--save"]);
    // A one-to-one message is not part of the group's thread.
    bob.ok(&["send", "just for alice", "--peer", "alice"]);
    alice.ok(&["receive", "--all", "--save"]);

    let tmux = Tmux::new(root.path());
    tmux.run("group", &alice, &["show", "alice", "--group", "team"]);
    let pane = tmux.wait_for("group", "[exit 0]");
    println!("{pane}");
    let lines: Vec<&str> = pane.lines().collect();
    assert!(lines[0].contains(" 💬 alice ⇄ team "), "{pane}");
    assert!(lines[1].trim().starts_with("3 member(s) · "), "{pane}");
    let ours = lines
        .iter()
        .position(|l| l.trim_end().ends_with(" · alice 🟢"))
        .expect(&pane);
    assert!(
        lines[ours + 1].trim_end().ends_with("plan: ship friday"),
        "{pane}"
    );
    let bobs = lines
        .iter()
        .position(|l| l.starts_with("🔵 bob · "))
        .expect(&pane);
    assert_eq!(lines[bobs + 1], "   bob agrees", "{pane}");
    let carols = lines
        .iter()
        .position(|l| l.starts_with("🟣 carol · "))
        .expect(&pane);
    assert_eq!(lines[carols + 1], "   carol too", "{pane}");
    assert!(ours < bobs && bobs < carols, "{pane}");
    assert!(!pane.contains("just for alice"), "{pane}");
    // Nor is bob's group message part of his one-to-one thread.
    tmux.run("bob", &alice, &["show", "alice", "bob"]);
    let pane = tmux.wait_for("bob", "[exit 0]");
    assert!(pane.contains("just for alice"), "{pane}");
    assert!(
        !pane.contains("bob agrees") && !pane.contains("plan: ship"),
        "{pane}"
    );

    // The group's --follow reads every member: carol's next one appears.
    tmux.run(
        "live",
        &alice,
        &["show", "alice", "--group", "team", "--follow"],
    );
    tmux.wait_for("live", "carol too");
    carol.ok(&["send", "carol again", "--group", "team"]);
    tmux.wait_for("live", "carol again");

    let (_, err) = alice.fails(&["show", "alice", "--group", "nope"], 2);
    assert!(err.contains("nope"), "{err}");
    let (_, err) = alice.fails(&["show", "alice", "bob", "--group", "team"], 2);
    assert!(err.contains("not both"), "{err}");
}

/// The same saved conversation rendered by Python 0.3.0's `show` and ours
/// (stdout not a terminal: no colours, 80 columns): the same lines in the
/// same order. Only the padding may differ: ours pads by display width
/// (an emoji takes two columns), Python by characters.
#[test]
fn show_renders_as_python_030_does() {
    let python = python_with_retalk("0.3.0");
    let root = tempfile::tempdir().unwrap();
    let relay = OurRelay::start(root.path());
    let alice = Agent::python(&python, root.path(), "alice", &relay.url);
    let bob = Agent::python(&python, root.path(), "bob", &relay.url);
    alice.add(&bob);
    bob.add(&alice);
    let long = "a longer message that has to be wrapped because it does not fit in one bubble of fifty-six columns, twice over";
    alice.ok(&["send", "hi bob", "--peer", "bob", "--save"]);
    bob.ok(&["receive", "--peer", "alice", "--save"]);
    bob.ok(&["send", long, "--peer", "alice", "--save"]);
    alice.ok(&["receive", "--peer", "bob", "--save"]);
    alice.ok(&["send", long, "--peer", "bob", "--save"]);

    let theirs = alice.ok(&["show", "alice", "bob"]);
    // Piped, COLUMNS sets the width (before ours upgrades the folder).
    let narrow = |a: &Agent| {
        let out = a
            .command(&["show", "alice", "bob"])
            .env("COLUMNS", "60")
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let theirs_narrow = narrow(&alice);
    // Ours opens the same folder (upgrading it one way).
    let ours = alice.ours_on_same_folder();
    let mine = ours.ok(&["show", "alice", "bob"]);
    let trimmed = |s: &str| s.lines().map(|l| l.trim().to_owned()).collect::<Vec<_>>();
    assert_eq!(
        trimmed(&mine),
        trimmed(&theirs),
        "ours:\n{mine}\nPython 0.3.0:\n{theirs}"
    );
    assert!(
        theirs.contains("hi bob") && theirs.contains("twice over"),
        "{theirs}"
    );
    // Ours right-aligns our lines to the last column, as Python does, the
    // `HH:MM · alice 🟢` line too (in display columns: the emoji takes two).
    let line = mine.lines().find(|l| l.ends_with("hi bob")).unwrap();
    assert_eq!(line.chars().count(), 80, "{line:?}");
    for head in mine.lines().filter(|l| l.ends_with("alice 🟢")) {
        assert_eq!(unicode_width::UnicodeWidthStr::width(head), 80, "{head:?}");
    }

    // Piped, COLUMNS sets the width, in both.
    let (mine, theirs) = (narrow(&ours), theirs_narrow);
    assert_eq!(
        trimmed(&mine),
        trimmed(&theirs),
        "ours:\n{mine}\nPython 0.3.0:\n{theirs}"
    );
    let line = mine.lines().find(|l| l.ends_with("hi bob")).unwrap();
    assert_eq!(line.chars().count(), 60, "{line:?}");
}

/// Opening a Python 0.3.0 folder upgrades it one way, so it happens only
/// once the passphrase unlocks the folder's account: a wrong or missing
/// passphrase fails with exit 2 and leaves `store.db` byte for byte as it
/// was (Python still opens it); the run that upgrades says so on stderr,
/// once.
#[test]
fn show_upgrades_a_python_folder_only_after_unlocking_it() {
    let python = python_with_retalk("0.3.0");
    let root = tempfile::tempdir().unwrap();
    let relay = OurRelay::start(root.path());
    let alice = Agent::python(&python, root.path(), "alice", &relay.url);
    let bob = Agent::python(&python, root.path(), "bob", &relay.url);
    alice.add(&bob);
    let ours = alice.ours_on_same_folder();
    let db = alice.home.join("alice").join("store.db");
    let before = std::fs::read(&db).unwrap();
    let run = |pass: Option<&str>| {
        let mut c = ours.command(&["show", "alice", "bob"]);
        match pass {
            Some(p) => c.env("RETALK_PASSPHRASE", p),
            None => c.env_remove("RETALK_PASSPHRASE"),
        };
        c.output().unwrap()
    };
    // `id` unlocks too: the same check first.
    let out = ours
        .command(&["id"])
        .env("RETALK_PASSPHRASE", "bad")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(std::fs::read(&db).unwrap() == before, "id changed store.db");
    for pass in [Some("bad"), None] {
        let out = run(pass);
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        assert!(
            std::fs::read(&db).unwrap() == before,
            "{pass:?} changed store.db"
        );
    }
    // Python still opens it.
    alice.ok(&["id"]);
    let out = run(Some("passphrase of alice"));
    assert!(out.status.success(), "{out:?}");
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("upgraded the Python retalk 0.3.0 folder")
            && err.contains("Python retalk can no longer open it"),
        "{err}"
    );
    let again = run(Some("passphrase of alice"));
    assert!(again.status.success(), "{again:?}");
    assert!(
        !String::from_utf8(again.stderr)
            .unwrap()
            .contains("upgraded"),
        "said twice"
    );
}

/// `show` takes the identity as every command does (-u NAME, RETALK_USER,
/// --dir), the USER positional still working; its refusals name what was
/// given and what to do.
#[test]
fn show_selects_the_identity_as_every_command_does() {
    let root = tempfile::tempdir().unwrap();
    let relay = OurRelay::start(root.path());
    let alice = Agent::ours(root.path(), "alice", &relay.url);
    let bob = Agent::ours(root.path(), "bob", &relay.url);
    alice.add(&bob);
    bob.add(&alice);
    alice.ok(&["send", "hi bob", "--peer", "bob", "--save"]);
    alice.ok(&["group", "create", "team", "--members", "bob"]);
    let without_env = |args: &[&str]| {
        let mut c = alice.command(args);
        c.env_remove("RETALK_USER");
        c.output().unwrap()
    };
    // RETALK_USER (set by Agent) with the PEER alone; -u NAME; USER PEER.
    assert!(alice.ok(&["show", "bob"]).contains("hi bob"));
    let out = without_env(&["show", "-u", "alice", "bob"]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("hi bob"));
    let out = without_env(&["show", "alice", "bob"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("hi bob"),
        "{out:?}"
    );
    // --group with RETALK_USER and no positional.
    assert!(alice.ok(&["show", "--group", "team"]).contains("team"));
    // Without any: the identity is asked for, naming every way.
    let out = without_env(&["show"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("-u NAME, --dir DIR or RETALK_USER"),
        "{out:?}"
    );
    // A group where a peer goes: the hint says --group.
    let (_, err) = alice.fails(&["show", "alice", "team"], 2);
    assert!(
        err.contains("team is a group") && err.contains("--group team"),
        "{err}"
    );
    // Refusals name the flag given.
    let (_, err) = alice.fails(&["show", "alice", "bob", "-s", "./old"], 2);
    assert!(err.contains("-s/--store DIR"), "{err}");
    let (_, err) = alice.fails(&["show", "alice", "bob", "-u", "alice"], 2);
    assert!(err.contains("given by -u NAME"), "{err}");
}

/// `show --group --follow` saves the members' messages in the order the
/// relay got them, not member by member: bob and carol send alternately
/// before alice follows, and her history keeps their order.
#[test]
fn show_group_follow_keeps_the_order_across_members() {
    let root = tempfile::tempdir().unwrap();
    let relay = OurRelay::start(root.path());
    let (alice, bob, carol) = team(root.path(), &relay);
    alice.ok(&["send", "hello team", "--group", "team"]);
    bob.ok(&["receive", "--all"]);
    carol.ok(&["receive", "--all"]);
    for (who, text) in [(&bob, "b1"), (&carol, "c1"), (&bob, "b2"), (&carol, "c2")] {
        who.ok(&["send", text, "--group", "team"]);
    }
    let mut follow = alice
        .command(&["show", "alice", "--group", "team", "--follow"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let texts = loop {
        let texts: Vec<String> =
            common::agent030::lines(&alice.ok(&["history", "--group", "team"]))
                .iter()
                .map(|m| m["text"].as_str().unwrap().to_owned())
                .collect();
        if texts.len() >= 4 || start.elapsed() > Duration::from_secs(20) {
            break texts;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    common::signal(&follow, "-TERM");
    common::wait_exit(&mut follow, Duration::from_secs(10));
    assert_eq!(texts, ["b1", "c1", "b2", "c2"]);
}

/// `show --follow` for `alice` and `bob` with the relay at `relay`;
/// stdout and stderr collected as they come.
fn follow_with(
    alice: &Agent,
    relay: &str,
) -> (
    std::process::Child,
    std::sync::Arc<std::sync::Mutex<String>>,
    std::sync::Arc<std::sync::Mutex<String>>,
) {
    use std::io::Read as _;
    let mut child = alice
        .command(&["show", "alice", "bob", "--follow"])
        .env("RETALK_RELAY", relay)
        .env("COLUMNS", "80")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let collect = |mut from: Box<dyn std::io::Read + Send>| {
        let got = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let into = got.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = from.read(&mut buf) {
                if n == 0 {
                    break;
                }
                into.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        got
    };
    let out = collect(Box::new(child.stdout.take().unwrap()));
    let err = collect(Box::new(child.stderr.take().unwrap()));
    (child, out, err)
}

/// With a relay that accepts connections and never answers: rows another
/// process saves show within seconds (not after the relay call's 30 s
/// timeout), and Ctrl-C ends it at once. With a relay that closes every
/// connection: the failure is said once, not every 2 s, and once more
/// when it answers again.
#[test]
fn show_follow_stays_live_and_stoppable_while_the_relay_hangs() {
    let root = tempfile::tempdir().unwrap();
    // The relay also answers requests signed for the forwarder below.
    let door = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let door_url = format!("http://{}", door.local_addr().unwrap());
    let port = common::free_port();
    let relay = OurRelay::start_with(root.path(), |c| {
        c.port = port;
        c.audiences = Some(vec![format!("http://127.0.0.1:{port}"), door_url.clone()]);
    });
    let alice = Agent::ours(root.path(), "alice", &relay.url);
    let bob = Agent::ours(root.path(), "bob", &relay.url);
    alice.add(&bob);
    bob.add(&alice);
    // A relay that takes every connection and never says a word.
    let hole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hole_url = format!("http://{}", hole.local_addr().unwrap());
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in hole.incoming() {
            held.push(s);
        }
    });
    let (mut follow, out, _) = follow_with(&alice, &hole_url);
    std::thread::sleep(Duration::from_millis(1500));
    // Saved by another process (on the working relay).
    alice.ok(&["send", "saved elsewhere", "--peer", "bob", "--save"]);
    let start = Instant::now();
    while !out.lock().unwrap().contains("saved elsewhere") {
        assert!(
            start.elapsed() < Duration::from_secs(8),
            "not shown while the relay hangs:\n{}",
            out.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let start = Instant::now();
    common::signal(&follow, "-INT");
    let status = common::wait_exit(&mut follow, Duration::from_secs(3));
    assert!(status.success(), "{status:?}");
    assert!(start.elapsed() < Duration::from_secs(3));

    // A relay that closes every connection, then works (a forwarder to
    // the real one): the failure is said once in 7 s (it retries every
    // 2 s), and the recovery once.
    let up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let target = relay.url.trim_start_matches("http://").to_owned();
    let open = up.clone();
    std::thread::spawn(move || {
        for client in door.incoming() {
            let Ok(client) = client else { continue };
            if !open.load(std::sync::atomic::Ordering::SeqCst) {
                continue; // dropped: closed at once
            }
            let Ok(server) = std::net::TcpStream::connect(&target) else {
                continue;
            };
            for (mut from, mut to) in [
                (client.try_clone().unwrap(), server.try_clone().unwrap()),
                (server, client),
            ] {
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut from, &mut to);
                    let _ = to.shutdown(std::net::Shutdown::Both);
                });
            }
        }
    });
    let (mut follow, _, err) = follow_with(&alice, &door_url);
    std::thread::sleep(Duration::from_secs(7));
    let down = err.lock().unwrap().clone();
    let said = down.lines().filter(|l| l.starts_with("retalk:")).count();
    assert_eq!(said, 1, "{down}");
    up.store(true, std::sync::atomic::Ordering::SeqCst);
    let start = Instant::now();
    while !err.lock().unwrap().contains("relay reachable again") {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{}",
            err.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    common::signal(&follow, "-INT");
    common::wait_exit(&mut follow, Duration::from_secs(3));
    let err = err.lock().unwrap().clone();
    let said = err.lines().filter(|l| l.starts_with("retalk:")).count();
    assert_eq!(said, 2, "{err}");
}
