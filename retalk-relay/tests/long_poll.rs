//! Push delivery (`read_messages` with `wait`) against the `retalk-relay`
//! binary on loopback: arrival during the wait, the wait running out,
//! `peek`, `peer`, the relay's cap on a wait, `--timeout` not cutting it,
//! SIGTERM with parked reads, replays, the parked-read caps, both
//! dialects, refused `wait` values, and `/info`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use retalk_proto::auth::Dialect;
use retalk_proto::wire::{Args, Wait};
use retalk_testkit::python::{signal, wait_exit};
use serde_json::{json, Value};

struct Relay {
    process: RelayProcess,
}

impl Relay {
    fn start(extra: &[&str]) -> Relay {
        let mut cmd = relay_command();
        cmd.args(["--backend", "memory", "--host", "127.0.0.1", "--port", "0"])
            .args(extra);
        Relay {
            process: RelayProcess::start(&mut cmd),
        }
    }

    fn addr(&self) -> SocketAddr {
        self.process.addr
    }

    fn url(&self) -> String {
        self.process.url()
    }

    async fn call(&self, peer: &Peer, args: &Args) -> Answer {
        post(self.addr(), &peer.body(args, &self.url())).await
    }

    /// A user with published keys (so mail can be sent to them).
    async fn user(&self) -> Peer {
        let mut p = Peer::new();
        let publish = p.publish_args();
        let a = self.call(&p, &publish).await;
        assert_eq!(a.status, 200, "{}", a.error());
        p
    }

    async fn send(&self, from: &Peer, to: &Peer, body: &str) {
        let args = Args::SendMessage {
            to: to.id.to_string(),
            mtype: 1,
            body: body.into(),
        };
        assert_eq!(self.call(from, &args).await.status, 200);
    }
}

fn read(wait: f64) -> Args {
    Args::ReadMessages {
        peer: None,
        peek: false,
        wait: Wait::new(wait),
    }
}

fn bodies(a: &Answer) -> Vec<String> {
    assert_eq!(a.status, 200, "{:?}", String::from_utf8_lossy(&a.body));
    a.json()
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["body"].as_str().unwrap().to_owned())
        .collect()
}

/// Starts a long-poll in the background; its answer and how long it took.
fn park(relay: &Relay, peer: &Peer, args: &Args) -> tokio::task::JoinHandle<(Answer, Duration)> {
    let (addr, body) = (relay.addr(), peer.body(args, &relay.url()));
    tokio::spawn(async move {
        let started = Instant::now();
        let a = post(addr, &body).await;
        (a, started.elapsed())
    })
}

#[tokio::test]
async fn mail_sent_during_the_wait_is_answered_at_once() {
    let relay = Relay::start(&[]);
    let (alice, bob) = (relay.user().await, relay.user().await);
    let waiting = park(&relay, &bob, &read(20.0));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent = Instant::now();
    relay.send(&alice, &bob, "AAAA").await;
    let (answer, _) = waiting.await.unwrap();
    let latency = sent.elapsed();
    assert_eq!(bodies(&answer), ["AAAA"]);
    assert!(latency < Duration::from_secs(2), "took {latency:?}");
    // Taken: the mailbox is empty now.
    assert!(bodies(&relay.call(&bob, &read(0.0)).await).is_empty());
}

#[tokio::test]
async fn mail_already_there_is_answered_without_waiting() {
    let relay = Relay::start(&[]);
    let (alice, bob) = (relay.user().await, relay.user().await);
    relay.send(&alice, &bob, "AAAA").await;
    let (answer, took) = park(&relay, &bob, &read(20.0)).await.unwrap();
    assert_eq!(bodies(&answer), ["AAAA"]);
    assert!(took < Duration::from_secs(2), "took {took:?}");
}

#[tokio::test]
async fn an_empty_wait_runs_out_with_an_empty_list_and_is_capped_by_max_wait() {
    let relay = Relay::start(&["--max-wait", "1"]);
    let bob = relay.user().await;
    let (answer, took) = park(&relay, &bob, &read(1.0)).await.unwrap();
    assert!(bodies(&answer).is_empty());
    assert!(took >= Duration::from_millis(950), "took {took:?}");
    // Asked for 60 s; the relay holds it for its --max-wait of 1 s.
    let (answer, took) = park(&relay, &bob, &read(60.0)).await.unwrap();
    assert!(bodies(&answer).is_empty());
    assert!(
        took >= Duration::from_millis(950) && took < Duration::from_secs(5),
        "took {took:?}"
    );
}

#[tokio::test]
async fn the_request_timeout_does_not_cut_a_long_poll_short() {
    let relay = Relay::start(&["--timeout", "1"]);
    let (alice, bob) = (relay.user().await, relay.user().await);
    let (answer, took) = park(&relay, &bob, &read(3.0)).await.unwrap();
    assert!(bodies(&answer).is_empty());
    assert!(took >= Duration::from_millis(2900), "took {took:?}");
    // And mail arriving after more than one --timeout is still delivered.
    let waiting = park(&relay, &bob, &read(5.0));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    relay.send(&alice, &bob, "late").await;
    let (answer, _) = waiting.await.unwrap();
    assert_eq!(bodies(&answer), ["late"]);
}

#[tokio::test]
async fn peek_wakes_without_deleting_and_peer_waits_for_that_sender() {
    let relay = Relay::start(&[]);
    let (alice, bob, carol) = (relay.user().await, relay.user().await, relay.user().await);
    let peeking = Args::ReadMessages {
        peer: None,
        peek: true,
        wait: Wait::new(20.0),
    };
    let waiting = park(&relay, &bob, &peeking);
    tokio::time::sleep(Duration::from_millis(200)).await;
    relay.send(&alice, &bob, "from-alice").await;
    assert_eq!(bodies(&waiting.await.unwrap().0), ["from-alice"]);
    // A held peek is a signal: with more waiting it still carries one.
    relay.send(&alice, &bob, "second").await;
    let (answer, _) = park(&relay, &bob, &peeking).await.unwrap();
    assert_eq!(bodies(&answer), ["from-alice"]);
    // Still there: peek deleted nothing.
    let from_carol = Args::ReadMessages {
        peer: Some(carol.id.to_string()),
        peek: false,
        wait: Wait::new(20.0),
    };
    let waiting = park(&relay, &bob, &from_carol);
    tokio::time::sleep(Duration::from_millis(200)).await;
    relay.send(&alice, &bob, "alice-again").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "woke for another sender's mail");
    relay.send(&carol, &bob, "from-carol").await;
    let (answer, took) = waiting.await.unwrap();
    assert_eq!(bodies(&answer), ["from-carol"]);
    assert!(took < Duration::from_secs(5));
    assert_eq!(
        bodies(&relay.call(&bob, &read(0.0)).await),
        ["from-alice", "second", "alice-again"]
    );
}

#[tokio::test]
async fn sigterm_answers_every_parked_read_and_exits_within_the_grace() {
    let mut relay = Relay::start(&[]);
    let bob = relay.user().await;
    let mut parked = Vec::new();
    for _ in 0..5 {
        let p = relay.user().await;
        parked.push(park(&relay, &p, &read(25.0)));
    }
    parked.push(park(&relay, &bob, &read(25.0)));
    // A client half-way through its request head must not hold the
    // shutdown for a whole --timeout (30 s by default).
    let mut half = Raw::connect(relay.addr()).await;
    half.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Le").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let asked = Instant::now();
    signal(&relay.process.child, "-TERM");
    for p in parked {
        let (answer, _) = p.await.unwrap();
        assert!(bodies(&answer).is_empty());
    }
    let status = wait_exit(&mut relay.process.child, Duration::from_secs(5));
    let took = asked.elapsed();
    assert!(status.success(), "{status:?}");
    // The parked reads are answered at once; the half request gets the
    // one-second grace.
    assert!(took < Duration::from_millis(1800), "exited after {took:?}");
}

#[tokio::test]
async fn a_replayed_long_poll_is_refused() {
    let relay = Relay::start(&["--max-wait", "1"]);
    let bob = relay.user().await;
    let body = bob.body(&read(1.0), &relay.url());
    assert_eq!(post(relay.addr(), &body).await.status, 200);
    let again = post(relay.addr(), &body).await;
    assert_eq!(again.status, 400);
    assert!(again.error().contains("replay"), "{}", again.error());
}

#[tokio::test]
async fn parked_reads_are_capped_per_user_and_per_address() {
    let relay = Relay::start(&[
        "--max-waiting-per-user",
        "2",
        "--max-waiting-per-ip",
        "3",
        "--limit-loopback",
        "--ip-rate-limit",
        "0",
    ]);
    let bob = relay.user().await;
    let first = park(&relay, &bob, &read(3.0));
    let second = park(&relay, &bob, &read(3.0));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let third = relay.call(&bob, &read(3.0)).await;
    assert_eq!(third.status, 429);
    assert_eq!(
        third.error(),
        "too many waiting reads for this user (cap 2); stop the others or read without wait"
    );
    // A third user fills the address's 3; a fourth is refused.
    let carol = relay.user().await;
    let _c = park(&relay, &carol, &read(3.0));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let dave = relay.user().await;
    let refused = relay.call(&dave, &read(3.0)).await;
    assert_eq!(refused.status, 429);
    assert!(refused.error().contains("from this address (cap 3)"));
    // A read without wait is never capped, and the slots free up.
    assert_eq!(relay.call(&dave, &read(0.0)).await.status, 200);
    first.await.unwrap();
    second.await.unwrap();
    let (answer, _) = park(&relay, &bob, &read(1.0)).await.unwrap();
    assert_eq!(answer.status, 200);
}

#[tokio::test]
async fn the_0_3_0_dialect_waits_too() {
    let relay = Relay::start(&[]);
    let (alice, bob) = (relay.user().await, relay.user().await);
    let body = bob
        .request(&read(20.0), &relay.url())
        .to_body(Dialect::V030);
    let addr = relay.addr();
    let waiting = tokio::spawn(async move { post(addr, &body).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    relay.send(&alice, &bob, "AAAA").await;
    assert_eq!(bodies(&waiting.await.unwrap()), ["AAAA"]);
}

#[tokio::test]
async fn a_wait_that_is_not_a_positive_number_is_refused() {
    let relay = Relay::start(&[]);
    let bob = relay.user().await;
    for bad in [
        json!(-1),
        json!("10"),
        json!([5]),
        json!(true),
        json!({"s": 1}),
    ] {
        // Signed over exactly what is sent, so only the value is at fault.
        let mut args = serde_json::Map::new();
        args.insert("wait".into(), bad.clone());
        let mut req = bob.request(&Args::CountKeys, &relay.url());
        req.tool = retalk_proto::wire::Tool::ReadMessages;
        req.args = Value::Object(args);
        let a = post(relay.addr(), &req.to_body(Dialect::V001)).await;
        assert_eq!(a.status, 400, "{bad}");
        assert_eq!(
            a.error(),
            "read_messages(): 'wait' must be a positive number of seconds",
            "{bad}"
        );
    }
}

#[tokio::test]
async fn info_lists_the_wait_feature_and_its_maximum() {
    let relay = Relay::start(&["--max-wait", "7"]);
    let info = call(relay.addr(), "GET", "/info", &[], b"").await.json();
    assert_eq!(info["features"], json!(["wait"]));
    assert_eq!(info["max_wait"], json!(7.0));
    let off = Relay::start(&["--max-wait", "0"]);
    let info = call(off.addr(), "GET", "/info", &[], b"").await.json();
    assert_eq!(info["features"], json!([]));
}
