//! Against the real Python retalk (0.0.1 and 0.3.0 from PyPI, in cached
//! venvs): Python users of both generations and a Rust user talk through
//! our relay; and our HttpTransport finds its way on the Python relays,
//! whose auth dialect it has to detect.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{count_keys, http_agent, sqlite_relay, HttpAgent, Peer, PyUser};
use retalk_proto::auth::Dialect;
use retalk_testkit::python::{python_with_retalk, PythonRelay};
use retalk_transport_http::{HttpTransport, Transport};
use serde_json::{json, Value};

/// One step of a Python user, with either generation's library:
/// `script URL STORE NAME id|send PEER TEXT|receive`.
const USER: &str = r#"
import json, sys
from retalk.user import User
url, store, name, cmd = sys.argv[1:5]
u = User(url, "secret", name=name, store=store)
if cmd == "id":
    u.publish()
    print(u.fingerprint() if hasattr(u, "fingerprint") else u.user_id())
elif cmd == "send":
    u.send(sys.argv[5], sys.argv[6])
elif cmd == "receive":
    out = []
    for m in u.receive():
        if isinstance(m, dict):
            out.append([m["from"], m["text"]])
        else:
            out.append([m[0], m[2]])
    print(json.dumps(out))
"#;

impl PyUser {
    fn run(&self, args: &[&str]) -> String {
        self.script(USER, args)
    }

    fn id(&self) -> String {
        self.run(&["id"]).trim().to_owned()
    }

    fn send(&self, to: &str, text: &str) {
        self.run(&["send", to, text]);
    }

    /// (from, text) pairs.
    fn receive(&self) -> Vec<(String, String)> {
        let v: Vec<(String, String)> = serde_json::from_str(self.run(&["receive"]).trim()).unwrap();
        v
    }
}

fn rust_user(url: &str) -> HttpAgent {
    http_agent(HttpTransport::new(url).unwrap(), "rusty")
}

async fn texts(agent: &HttpAgent) -> Vec<(String, String)> {
    let inbox = agent.receive().await.unwrap();
    assert!(inbox.problems.is_empty(), "{:?}", inbox.problems);
    inbox
        .messages
        .into_iter()
        .map(|m| (m.from.to_string(), m.text))
        .collect()
}

// The Python steps block their thread; the relay serves from the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_001_030_and_rust_users_talk_through_our_relay() {
    let py001 = python_with_retalk("0.0.1");
    let py030 = python_with_retalk("0.3.0");
    let dir = tempfile::tempdir().unwrap();
    let server = sqlite_relay(&dir.path().join("server.db"), |_| {}).await;
    let url = server.url().to_owned();

    let old = PyUser::new(&py001, &url, dir.path(), "old");
    let new = PyUser::new(&py030, &url, dir.path(), "new");
    let rust = rust_user(&url);
    let (old_id, new_id) = (old.id(), new.id());
    rust.ensure_published().await.unwrap();
    let rust_id = rust.user_id().to_string();

    old.send(&new_id, "from 0.0.1 to 0.3.0");
    assert_eq!(
        new.receive(),
        [(old_id.clone(), "from 0.0.1 to 0.3.0".to_owned())]
    );
    new.send(&old_id, "from 0.3.0 to 0.0.1");
    assert_eq!(
        old.receive(),
        [(new_id.clone(), "from 0.3.0 to 0.0.1".to_owned())]
    );

    rust.send(
        &retalk_proto::UserId::parse(&new_id).unwrap(),
        "from rust \u{2603}",
    )
    .await
    .unwrap();
    new.send(&rust_id, "from 0.3.0 to rust");
    old.send(&rust_id, "from 0.0.1 to rust");
    assert_eq!(
        new.receive(),
        [(rust_id.clone(), "from rust \u{2603}".to_owned())]
    );
    let got = texts(&rust).await;
    assert_eq!(
        got,
        [
            (new_id.clone(), "from 0.3.0 to rust".to_owned()),
            (old_id.clone(), "from 0.0.1 to rust".to_owned())
        ]
    );
    server.shutdown().await;
}

#[tokio::test]
async fn http_transport_switches_to_030_on_a_python_030_relay() {
    let py030 = python_with_retalk("0.3.0");
    let dir = tempfile::tempdir().unwrap();
    let relay = PythonRelay::start(&py030, dir.path());
    let t = HttpTransport::new(&relay.url).unwrap();
    assert_eq!(t.dialect(), Dialect::V001);
    let mut peer = Peer::new();
    let publish = peer.publish_args();
    let r: Value = t.call(peer.request(&publish, &relay.url)).await.unwrap();
    assert_eq!(r["fingerprint"], peer.id.as_str());
    assert_eq!(t.dialect(), Dialect::V030);
    let counts = count_keys(&t, &peer, &relay.url).await.unwrap();
    assert_eq!(counts, json!({"unclaimed": 0, "has_fallback": true}));
    assert_eq!(t.max_group_size().await.unwrap(), 100);

    // A Rust user and a Python 0.3.0 user talk through the Python relay.
    let rust = rust_user(&relay.url);
    let new = PyUser::new(&py030, &relay.url, dir.path(), "new");
    let new_id = new.id();
    rust.send(
        &retalk_proto::UserId::parse(&new_id).unwrap(),
        "hello python relay",
    )
    .await
    .unwrap();
    assert_eq!(rust.transport().dialect(), Dialect::V030);
    assert_eq!(
        new.receive(),
        [(rust.user_id().to_string(), "hello python relay".to_owned())]
    );
    new.send(rust.user_id().as_str(), "hello rust");
    assert_eq!(texts(&rust).await, [(new_id, "hello rust".to_owned())]);
}

#[tokio::test]
async fn http_transport_switches_to_001_on_a_python_001_relay() {
    let py001 = python_with_retalk("0.0.1");
    let dir = tempfile::tempdir().unwrap();
    let relay = PythonRelay::start(&py001, dir.path());
    let t = HttpTransport::builder(&relay.url)
        .dialect(Dialect::V030)
        .build()
        .unwrap();
    let mut peer = Peer::new();
    let publish = peer.publish_args();
    let r = t.call(peer.request(&publish, &relay.url)).await.unwrap();
    assert_eq!(r["user_id"], peer.id.as_str());
    assert_eq!(t.dialect(), Dialect::V001);
    count_keys(&t, &peer, &relay.url).await.unwrap();
}

/// Push delivery against a relay that has none (issue #11): the Python
/// relays refuse `wait` with their 400 ("unexpected keyword argument"),
/// deleting nothing; our client says so once, polls every 2 s, and every
/// message still arrives, in order, exactly once.
async fn follow_falls_back_to_polling(version: &str) {
    use retalk_proto::client::{Follow, Followed, MailWait};
    let python = python_with_retalk(version);
    let dir = tempfile::tempdir().unwrap();
    let relay = PythonRelay::start(&python, dir.path());
    let alice = http_agent(HttpTransport::new(&relay.url).unwrap(), "alice");
    let bob = http_agent(HttpTransport::new(&relay.url).unwrap(), "bob");
    bob.ensure_published().await.unwrap();

    // Mail waiting: the refused wait takes nothing, the fetch gets it.
    alice.send(bob.user_id(), "waiting").await.unwrap();
    assert_eq!(bob.wait_for_mail(5.0).await.unwrap(), MailWait::Unsupported);
    assert_eq!(
        texts(&bob).await,
        [(alice.user_id().to_string(), "waiting".to_owned())]
    );

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let (got_tx, mut got) = tokio::sync::mpsc::unbounded_channel();
    let mut polling = 0;
    let settings = Follow::default();
    let following = bob.follow(
        &settings,
        async move {
            let mut s = stopped;
            let _ = s.wait_for(|v| *v).await;
        },
        |event| {
            match event {
                Followed::Message(m) => got_tx.send(m.text.clone()).unwrap(),
                Followed::Polling => polling += 1,
                Followed::Problem(p) => panic!("{p:?}"),
                _ => {}
            }
            Ok::<_, retalk_proto::ClientError>(())
        },
    );
    let talking = async {
        for text in ["one", "two", "three"] {
            alice.send(bob.user_id(), text).await.unwrap();
            let arrived = tokio::time::timeout(std::time::Duration::from_secs(20), got.recv())
                .await
                .expect("not delivered by polling within 20 s");
            assert_eq!(arrived.as_deref(), Some(text));
        }
        stop.send(true).unwrap();
    };
    let (followed, ()) = tokio::join!(following, talking);
    followed.unwrap();
    assert_eq!(polling, 1, "said once");
    assert!(got.try_recv().is_err(), "nothing twice");
}

#[tokio::test]
async fn follow_falls_back_to_polling_on_a_python_001_relay() {
    follow_falls_back_to_polling("0.0.1").await;
}

#[tokio::test]
async fn follow_falls_back_to_polling_on_a_python_030_relay() {
    follow_falls_back_to_polling("0.3.0").await;
}
