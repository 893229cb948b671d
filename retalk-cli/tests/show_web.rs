//! `retalk show --web` through the real binary, read by a real headless
//! Chromium (`retalk_testkit::browser`): users of our binary on our relay
//! on loopback send and receive with `--save`, then the page must refuse a
//! visit without its token, show both sides of a conversation and a group
//! thread, show hostile text literally without running it, and show a
//! message saved while it is open. It must never contact the relay.
//! The screenshot is kept at target/tmp/show-web.png.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use common::agent030::Agent;
use common::OurRelay;
use retalk_testkit::browser::Browser;

const HOSTILE: &str =
    "<img src=x onerror=\"window.pwned=1\"></script><script>window.pwned=2</script>";

/// `retalk show --web --port 0` for `agent`, with a relay address nothing
/// answers on (`dead`); returns the child and the URL it printed.
fn serve(agent: &Agent, dead: &str) -> (Child, String) {
    let mut child = agent
        .command(&["show", &agent.name, "--web", "--port", "0"])
        .env("RETALK_RELAY", dead)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = String::new();
    let url = loop {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("show --web ended:\n{seen}"))
            .unwrap();
        seen.push_str(&line);
        seen.push('\n');
        if let Some(url) = line.trim().strip_prefix("http://") {
            break format!("http://{url}");
        }
    };
    // Keep draining stderr so the server never blocks on it.
    std::thread::spawn(move || for _ in lines {});
    (child, url)
}

/// The texts of the thread's bubbles, as `direction|who|text`.
const BUBBLES: &str = "return [...document.querySelectorAll('#thread .msg')].map(b => \
    (b.classList.contains('out') ? 'out' : 'in') + '|' + \
    (b.querySelector('.who') ? b.querySelector('.who').textContent : '') + '|' + \
    b.querySelector('.text').textContent);";

#[test]
fn show_web_in_a_real_browser() {
    // The relay runs its own runtime; the browser's client needs another.
    let root = tempfile::tempdir().unwrap();
    let relay = OurRelay::start(root.path());
    let alice = Agent::ours(root.path(), "alice", &relay.url);
    let bob = Agent::ours(root.path(), "bob", &relay.url);
    alice.add(&bob);
    bob.add(&alice);
    let carol = Agent::ours(root.path(), "carol", &relay.url);
    for (a, b) in [(&alice, &carol), (&bob, &carol)] {
        a.add(b);
        b.add(a);
    }
    // A group thread first (so bob's conversation is the newest).
    alice.ok(&["group", "create", "team", "--members", "bob,carol"]);
    alice.ok(&["send", "plan: ship friday", "--group", "team", "--save"]);
    bob.ok(&["receive", "--all", "--save"]);
    bob.ok(&["send", "bob agrees", "--group", "team"]);
    carol.ok(&["receive", "--all"]);
    carol.ok(&["send", "carol too", "--group", "team"]);
    alice.ok(&["receive", "--all", "--save"]);
    std::thread::sleep(Duration::from_millis(1100)); // a later second
    alice.ok(&["send", "hi bob", "--peer", "bob", "--save"]);
    bob.ok(&["receive", "--peer", "alice", "--save"]);
    bob.ok(&["send", HOSTILE, "--peer", "alice", "--save"]);
    alice.ok(&["receive", "--peer", "bob", "--save"]);

    // Refusals: a taken port, --web with a conversation, --port alone.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    // A local failure, exit 1 (as 0.3.0's traceback), not a usage error.
    let (_, err) = alice.fails(&["show", "alice", "--web", "--port", &port], 1);
    assert!(
        err.contains(&format!("cannot listen on 127.0.0.1:{port}"))
            && err.contains("--port 0 for a free one"),
        "{err}"
    );
    let (_, err) = alice.fails(&["show", "alice", "bob", "--web"], 2);
    assert!(err.contains("--web lists every conversation"), "{err}");
    let (_, err) = alice.fails(&["show", "alice", "bob", "--port", "0"], 2);
    assert!(err.contains("--web"), "{err}");

    // A "relay" that only records whether anyone called.
    let dead = TcpListener::bind("127.0.0.1:0").unwrap();
    dead.set_nonblocking(true).unwrap();
    let dead_url = format!("http://{}", dead.local_addr().unwrap());
    let (mut server, url) = serve(&alice, &dead_url);
    let (base, token) = url.split_once("/?t=").unwrap();
    assert!(base.starts_with("http://127.0.0.1:"), "{url}");

    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            over_http(base, token, &bob).await;
            in_the_browser(&alice, &bob, &url, base).await;
        });

    // It never called the relay.
    match dead.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("show --web contacted the relay: {other:?}"),
    }
    common::signal(&server, "-TERM");
    let status = common::wait_exit(&mut server, Duration::from_secs(10));
    assert!(status.success(), "{status:?}");
}

/// Plain HTTP: the token is required (a non-ASCII one is simply wrong),
/// and the 0.3.0 JSON shape.
async fn over_http(base: &str, token: &str, bob: &Agent) {
    let http = reqwest::Client::new();
    for (path, header) in [
        ("/".to_owned(), None),
        ("/api/conversations?t=wrong".to_owned(), None),
        ("/api/conversations?t=%C3%A9".to_owned(), None),
        ("/api/conversations".to_owned(), Some("caf\u{e9}")),
    ] {
        let mut req = http.get(format!("{base}{path}"));
        if let Some(h) = header {
            req = req.header(
                "X-Retalk-Token",
                reqwest::header::HeaderValue::from_bytes(h.as_bytes()).unwrap(),
            );
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 403, "{path}");
        assert!(r.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("script-src 'self'"));
    }
    let convos: serde_json::Value = http
        .get(format!("{base}/api/conversations"))
        .header("X-Retalk-Token", token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(convos["me"], "alice");
    assert_eq!(convos["conversations"][0]["fingerprint"], bob.id.as_str());
    assert_eq!(convos["conversations"][0]["name"], "bob");
    assert_eq!(convos["conversations"][0]["count"], 2);
    // The group is a conversation of its own, under its name (0.3.0 listed
    // an unnamed one: CLIENT-030 defect 34).
    let team = &convos["conversations"][1];
    assert_eq!(team["name"], "team", "{convos}");
    assert_eq!(team["kind"], "group", "{convos}");
    assert_eq!(team["count"], 3, "{convos}");
}

async fn in_the_browser(alice: &Agent, bob: &Agent, url: &str, base: &str) {
    let browser = Browser::start().await;
    let b = &browser;
    b.client.goto(&format!("{base}/")).await.unwrap();
    let body = b.eval("return document.body.innerText;").await;
    assert!(
        body.as_str().unwrap().contains("missing or bad token"),
        "{body}"
    );

    b.client.goto(url).await.unwrap();
    b.wait_until(
        "bob's thread",
        "return document.querySelectorAll('#thread .msg').length === 2;",
        Duration::from_secs(15),
    )
    .await;
    assert_eq!(
        b.eval("return document.getElementById('peerName').textContent;")
            .await,
        "bob"
    );
    assert_eq!(
        b.eval(BUBBLES).await,
        serde_json::json!(["out||hi bob", format!("in|bob|{HOSTILE}")])
    );
    assert_eq!(
        b.eval("return document.querySelectorAll('#thread img, #thread script').length;")
            .await,
        0
    );
    assert_eq!(b.eval("return typeof window.pwned;").await, "undefined");

    // The group's thread: every sender named.
    b.click(".convo[data-kind='group']").await;
    b.wait_until(
        "the group's thread",
        "return document.getElementById('peerName').textContent === 'team' && document.querySelectorAll('#thread .msg').length === 3;",
        Duration::from_secs(15),
    )
    .await;
    assert_eq!(
        b.eval(BUBBLES).await,
        serde_json::json!([
            "out|alice|plan: ship friday",
            "in|bob|bob agrees",
            "in|carol|carol too"
        ])
    );
    let shot = b
        .screenshot(&Path::new(env!("CARGO_TARGET_TMPDIR")).join("show-web-group.png"))
        .await;
    println!("screenshot: {}", shot.display());

    // Back to bob; then a message saved by another process while the page
    // is open appears by itself.
    b.click(&format!(".convo[data-id='{}']", bob.id)).await;
    b.wait_until(
        "bob's thread again",
        "return document.getElementById('peerName').textContent === 'bob' && document.querySelectorAll('#thread .msg').length === 2;",
        Duration::from_secs(15),
    )
    .await;
    bob.ok(&["send", "arrived while you watched", "--peer", "alice"]);
    alice.ok(&["receive", "--peer", "bob", "--save"]);
    b.wait_until(
        "the new message",
        "return [...document.querySelectorAll('#thread .text')].some(t => t.textContent === 'arrived while you watched');",
        Duration::from_secs(15),
    )
    .await;
    assert_eq!(b.eval("return typeof window.pwned;").await, "undefined");

    let shot = b
        .screenshot(&Path::new(env!("CARGO_TARGET_TMPDIR")).join("show-web.png"))
        .await;
    println!("screenshot: {}", shot.display());
    browser.close().await;
}

/// GETs `path` from a web view with its token, as JSON.
async fn get_json(base: &str, token: &str, path: &str) -> serde_json::Value {
    let r = reqwest::Client::new()
        .get(format!("{base}{path}"))
        .header("X-Retalk-Token", token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{path}");
    r.json().await.unwrap()
}

/// What Python 0.3.0's `show --web` and ours answer on the same folder:
/// `/api/conversations` (ours adds `kind`) and `/api/messages`, equal.
#[test]
fn the_json_routes_answer_as_python_030s() {
    let python = retalk_testkit::python::python_with_retalk("0.3.0");
    let root = tempfile::tempdir().unwrap();
    let relay = OurRelay::start(root.path());
    let alice = Agent::python(&python, root.path(), "alice", &relay.url);
    let bob = Agent::python(&python, root.path(), "bob", &relay.url);
    alice.add(&bob);
    bob.add(&alice);
    alice.ok(&["send", "hi bob", "--peer", "bob", "--save"]);
    bob.ok(&["receive", "--peer", "alice", "--save"]);
    bob.ok(&["send", HOSTILE, "--peer", "alice", "--save"]);
    alice.ok(&["receive", "--peer", "bob", "--save"]);

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let answers = |agent: &Agent| {
        let (mut child, url) = serve(agent, "http://127.0.0.1:9");
        let (base, token) = url.split_once("/?t=").unwrap();
        let got = runtime.block_on(async {
            let mut c = get_json(base, token, "/api/conversations").await;
            for conv in c["conversations"].as_array_mut().unwrap() {
                conv.as_object_mut().unwrap().remove("kind");
            }
            let m = get_json(
                base,
                token,
                &format!("/api/messages?peer={}&after=0", bob.id),
            )
            .await;
            let after = get_json(
                base,
                token,
                &format!("/api/messages?peer={}&after=1", bob.id),
            )
            .await;
            (c, m, after)
        });
        child.kill().unwrap();
        child.wait().unwrap();
        got
    };
    let theirs = answers(&alice);
    // Ours opens the same folder (upgrading it one way).
    let ours = alice.ours_on_same_folder();
    let mine = answers(&ours);
    println!(
        "Python 0.3.0: {}\n{}\nours: {}\n{}",
        theirs.0, theirs.1, mine.0, mine.1
    );
    assert_eq!(mine.0, theirs.0, "conversations");
    assert_eq!(mine.1, theirs.1, "messages");
    assert_eq!(mine.2, theirs.2, "messages after row 1");
    assert_eq!(
        theirs.1["messages"].as_array().unwrap().len(),
        2,
        "{}",
        theirs.1
    );
    assert_eq!(theirs.1["messages"][1]["text"], HOSTILE);
}

/// A local process holding a half-sent request does not keep `show --web`
/// running: after Ctrl-C it stops within the grace period (1.5 s), and a
/// second Ctrl-C ends it at once.
#[test]
fn show_web_stops_despite_a_half_sent_request() {
    use std::io::Write as _;
    let root = tempfile::tempdir().unwrap();
    let relay = OurRelay::start(root.path());
    let alice = Agent::ours(root.path(), "alice", &relay.url);
    for second in [false, true] {
        let (mut child, url) = serve(&alice, "http://127.0.0.1:9");
        let addr = url.trim_start_matches("http://").split('/').next().unwrap();
        let mut half = std::net::TcpStream::connect(addr).unwrap();
        half.write_all(b"GET /api/conversations HTTP/1.1\r\nHost: x\r\n")
            .unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let started = std::time::Instant::now();
        common::signal(&child, "-INT");
        if second {
            std::thread::sleep(Duration::from_millis(100));
            common::signal(&child, "-INT");
            let status = common::wait_exit(&mut child, Duration::from_millis(1000));
            assert!(status.success(), "{status:?}");
        } else {
            let status = common::wait_exit(&mut child, Duration::from_secs(4));
            assert!(status.success(), "{status:?}");
            assert!(started.elapsed() >= Duration::from_millis(1000));
        }
        drop(half);
    }
}
