//! The follow driver and the relay core's long-poll decisions, on the
//! simulated clock: the driver's pauses advance it, so minutes of
//! following run in milliseconds and no test sleeps.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;

use common::*;
use retalk_proto::client::{Follow, Followed, Transport, TransportError};
use retalk_proto::relay::Outcome;
use retalk_proto::wire::{Args, SignedRequest, Tool, Wait};
use retalk_proto::{Clock, SimClock};
use serde_json::Value;

/// Resolves once the simulated clock reaches `at`.
fn until(clock: &SimClock, at: f64) -> impl Future<Output = ()> {
    let clock = clock.clone();
    std::future::poll_fn(move |_| {
        if clock.now() >= at {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
}

/// The requests of one tool in a transport's log, as JSON.
fn requests(faults: &Faults, tool: &str) -> Vec<Value> {
    faults
        .log
        .lock()
        .unwrap()
        .iter()
        .map(|b| serde_json::from_slice::<Value>(b).unwrap())
        .filter(|v| v["tool"] == tool)
        .collect()
}

#[tokio::test]
async fn follow_hands_over_each_message_once_and_waits_on_the_relay() {
    let w = World::new();
    let relay = w.relay("http://r");
    let (alice, _) = w.agent(&relay, "alice");
    let (bob, bob_faults) = w.agent(&relay, "bob");
    bob.ensure_published().await.unwrap();
    for i in 0..3 {
        alice.send(bob.user_id(), &format!("m{i}")).await.unwrap();
    }
    let mut got = Vec::new();
    bob.follow(&Follow::default(), until(&w.clock, T0 + 30.0), |e| {
        if let Followed::Message(m) = e {
            got.push(m.text.clone());
        }
        Ok::<_, retalk_proto::ClientError>(())
    })
    .await
    .unwrap();
    assert_eq!(got, ["m0", "m1", "m2"]);
    assert!(bob.pending_messages().unwrap().is_empty());
    // Each wait peeks (deleting nothing) with the default 25 s.
    let reads = requests(&bob_faults, "read_messages");
    let waits: Vec<_> = reads
        .iter()
        .filter(|r| r["args"].get("wait").is_some())
        .collect();
    assert!(!waits.is_empty());
    for r in &waits {
        assert_eq!(r["args"]["wait"], 25);
        assert_eq!(r["args"]["peek"], true);
    }
    // This relay answers a wait at once: the driver still reads at most
    // once per poll interval (2 s), not in a tight loop.
    assert!(waits.len() <= 16, "{} waits in 30 s", waits.len());
}

#[tokio::test]
async fn keep_messages_hands_each_message_once_per_run_and_leaves_it() {
    let w = World::new();
    let relay = w.relay("http://r");
    let (alice, _) = w.agent(&relay, "alice");
    let (bob, _) = w.agent(&relay, "bob");
    bob.ensure_published().await.unwrap();
    alice.send(bob.user_id(), "m0").await.unwrap();
    alice.send(bob.user_id(), "m1").await.unwrap();
    let keep = Follow {
        keep_messages: true,
        ..Follow::default()
    };
    let run = |stop: f64| {
        let mut got = Vec::new();
        let bob = &bob;
        let keep = &keep;
        let clock = w.clock.clone();
        async move {
            bob.follow(keep, until(&clock, stop), |e| {
                if let Followed::Message(m) = e {
                    got.push(m.text.clone());
                }
                Ok::<_, retalk_proto::ClientError>(())
            })
            .await
            .unwrap();
            got
        }
    };
    // Many rounds in 30 s, each message once, and all still in the inbox.
    assert_eq!(run(T0 + 30.0).await, ["m0", "m1"]);
    let texts = |b: &Agent| -> Vec<String> {
        b.pending_messages()
            .unwrap()
            .into_iter()
            .map(|m| m.text)
            .collect()
    };
    assert_eq!(texts(&bob), ["m0", "m1"]);
    // Another taker takes one; a new run hands over what is left and what
    // came since.
    bob.take_messages(1, |_| Ok::<_, retalk_proto::ClientError>(()))
        .unwrap();
    alice.send(bob.user_id(), "m2").await.unwrap();
    assert_eq!(run(T0 + 60.0).await, ["m1", "m2"]);
    assert_eq!(texts(&bob), ["m1", "m2"]);
}

#[tokio::test]
async fn a_handler_error_stops_the_driver_and_keeps_the_message() {
    let w = World::new();
    let relay = w.relay("http://r");
    let (alice, _) = w.agent(&relay, "alice");
    let (bob, _) = w.agent(&relay, "bob");
    bob.ensure_published().await.unwrap();
    alice.send(bob.user_id(), "kept").await.unwrap();
    let err = bob
        .follow(&Follow::default(), std::future::pending(), |e| match e {
            Followed::Message(_) => Err(AppError::StdoutClosed),
            _ => Ok(()),
        })
        .await
        .unwrap_err();
    assert_eq!(err, AppError::StdoutClosed);
    let pending: Vec<_> = bob
        .pending_messages()
        .unwrap()
        .into_iter()
        .map(|m| m.text)
        .collect();
    assert_eq!(pending, ["kept"]);
}

/// An application's own error, as a handler returns it.
#[derive(Debug, PartialEq)]
enum AppError {
    StdoutClosed,
    Client(String),
}

impl From<retalk_proto::ClientError> for AppError {
    fn from(e: retalk_proto::ClientError) -> Self {
        AppError::Client(e.to_string())
    }
}

/// A transport whose relay refuses every `wait` with `refusal` (a Python
/// relay's 400, a cap's 429, a proxy's garbage).
struct WaitRefused<T> {
    inner: T,
    /// Reads that asked to wait.
    waits: Arc<AtomicUsize>,
    refusal: TransportError,
}

fn python_refusal() -> TransportError {
    TransportError::Refused {
        status: 400,
        error: "read_messages() got an unexpected keyword argument 'wait'".into(),
    }
}

impl<T: Transport> Transport for WaitRefused<T> {
    fn audience(&self) -> &str {
        self.inner.audience()
    }

    fn call(
        &self,
        request: SignedRequest,
    ) -> impl Future<Output = Result<Value, TransportError>> + Send {
        let refuse = request.tool == Tool::ReadMessages && request.args.get("wait").is_some();
        if refuse {
            self.waits.fetch_add(1, Ordering::SeqCst);
        }
        let inner = (!refuse).then(|| self.inner.call(request));
        let refusal = self.refusal.clone();
        async move {
            match inner {
                Some(call) => call.await,
                None => Err(refusal),
            }
        }
    }
}

/// Bob, on a relay whose every wait is refused with `refusal`: the agent,
/// its transport's log, and how many waits it asked for.
#[allow(clippy::type_complexity)]
fn refusing_waits(
    w: &World,
    refusal: TransportError,
) -> (
    retalk_proto::Client<
        Arc<retalk_proto::client::MemoryStore>,
        WaitRefused<
            Faulty<
                retalk_proto::client::LocalTransport<
                    retalk_proto::relay::MemoryRelayStore,
                    SimClock,
                >,
            >,
        >,
        SimClock,
    >,
    Arc<Faults>,
    Arc<AtomicUsize>,
) {
    let relay = w.relay("http://r");
    let (t, faults) = w.transport(&relay);
    let asked = Arc::new(AtomicUsize::new(0));
    let bob = retalk_proto::Client::create(
        Arc::new(retalk_proto::client::MemoryStore::new()),
        WaitRefused {
            inner: t,
            waits: asked.clone(),
            refusal,
        },
        w.clock.clone(),
        "bob-secret",
        "bob",
    )
    .unwrap();
    (bob, faults, asked)
}

/// A relay or proxy that fails every wait but serves plain reads (a
/// garbage answer, a 502) is not asked in a loop: failed waits back off to
/// 30 s and say so.
#[tokio::test]
async fn failing_waits_back_off_instead_of_spinning() {
    let w = World::new();
    let garbage = TransportError::BadResponse("the answer is not JSON: <html>".into());
    let (bob, faults, asked) = refusing_waits(&w, garbage);
    let failures = Mutex::new(Vec::new());
    bob.follow(&Follow::default(), until(&w.clock, T0 + 300.0), |e| {
        if let Followed::Unreachable { retry_in, .. } = e {
            failures.lock().unwrap().push(retry_in);
        }
        Ok::<_, retalk_proto::ClientError>(())
    })
    .await
    .unwrap();
    let failures = failures.into_inner().unwrap();
    assert_eq!(failures[..5], [4.0, 8.0, 16.0, 30.0, 30.0]);
    let waits = asked.load(Ordering::SeqCst);
    assert!((10..=14).contains(&waits), "{waits} waits in 300 s");
    assert!(requests(&faults, "read_messages").len() <= 20);
}

/// A relay at its cap of held reads (429) is polled for ten minutes, said
/// once, and not asked to hold a read meanwhile.
#[tokio::test]
async fn a_relay_at_its_cap_of_held_reads_is_polled() {
    let w = World::new();
    let capped = TransportError::Refused {
        status: 429,
        error: "too many waiting reads for this user (cap 8)".into(),
    };
    let (bob, faults, asked) = refusing_waits(&w, capped);
    let events = Mutex::new(Vec::new());
    bob.follow(&Follow::default(), until(&w.clock, T0 + 300.0), |e| {
        events.lock().unwrap().push(format!("{e:?}"));
        Ok::<_, retalk_proto::ClientError>(())
    })
    .await
    .unwrap();
    assert_eq!(asked.load(Ordering::SeqCst), 1);
    let polls = requests(&faults, "read_messages").len();
    assert!((140..=160).contains(&polls), "{polls} polls in 300 s");
    let events = events.into_inner().unwrap();
    assert_eq!(events.iter().filter(|e| *e == "Polling").count(), 1);
    assert!(
        !events.iter().any(|e| e.starts_with("Unreachable")),
        "{events:?}"
    );
}

#[tokio::test]
async fn against_a_relay_without_wait_it_polls_every_two_seconds_and_asks_again_later() {
    let w = World::new();
    let (bob, faults, asked) = refusing_waits(&w, python_refusal());
    let events = Mutex::new(Vec::new());
    bob.follow(&Follow::default(), until(&w.clock, T0 + 700.0), |e| {
        events.lock().unwrap().push(format!("{e:?}"));
        Ok::<_, retalk_proto::ClientError>(())
    })
    .await
    .unwrap();
    // Asked at the start, and once more after ten minutes.
    assert_eq!(asked.load(Ordering::SeqCst), 2, "waits asked");
    // Polled every 2 s for 700 s, give or take the maintenance rounds.
    let polls = requests(&faults, "read_messages").len();
    assert!((330..=360).contains(&polls), "{polls} polls");
    let polling = events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| *e == "Polling")
        .count();
    assert_eq!(polling, 1, "said once");
}

#[tokio::test]
async fn while_the_relay_is_down_it_backs_off_to_thirty_seconds_and_recovers() {
    let w = World::new();
    let relay = w.relay("http://r");
    let (alice, _) = w.agent(&relay, "alice");
    let (bob, faults) = w.agent(&relay, "bob");
    bob.ensure_published().await.unwrap();
    faults.set_down(true);
    let retries = Mutex::new(Vec::new());
    let got = Mutex::new(Vec::new());
    let clock = w.clock.clone();
    let f = faults.clone();
    let stop = std::future::poll_fn(move |_| {
        // Back up after 200 s; stop after 260 s.
        if clock.now() >= T0 + 200.0 {
            f.set_down(false);
        }
        if clock.now() >= T0 + 260.0 {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    });
    let sent = async {
        alice.send(bob.user_id(), "after the outage").await.unwrap();
    };
    sent.await;
    bob.follow(&Follow::default(), stop, |e| {
        match e {
            Followed::Unreachable { retry_in, .. } => retries.lock().unwrap().push(retry_in),
            Followed::Message(m) => got.lock().unwrap().push(m.text.clone()),
            _ => {}
        }
        Ok::<_, retalk_proto::ClientError>(())
    })
    .await
    .unwrap();
    let retries = retries.into_inner().unwrap();
    assert_eq!(retries[..5], [4.0, 8.0, 16.0, 30.0, 30.0]);
    assert!(retries.len() <= 12, "{retries:?}");
    assert_eq!(got.into_inner().unwrap(), ["after the outage"]);
}

#[tokio::test]
async fn it_maintains_once_a_minute() {
    let w = World::new();
    let relay = w.relay("http://r");
    let (bob, faults) = w.agent(&relay, "bob");
    let maintained = Mutex::new(0);
    // Exactly on time: the last round is due at T0 + 300.
    bob.follow(&Follow::default(), until(&w.clock, T0 + 305.0), |e| {
        if let Followed::Maintained(_) = e {
            *maintained.lock().unwrap() += 1;
        }
        Ok::<_, retalk_proto::ClientError>(())
    })
    .await
    .unwrap();
    // At the start, then every 60 s: 0, 60, …, 300.
    assert_eq!(*maintained.lock().unwrap(), 6);
    assert!(requests(&faults, "count_keys").len() >= 5);
}

/// The core says what happened; the edge acts on it.
#[test]
fn the_relay_core_parks_a_waiting_read_and_names_whom_new_mail_is_for() {
    let w = World::new();
    let relay = w.relay("http://r");
    let mut alice = RawPeer::new();
    let mut bob = RawPeer::new();
    alice.publish(&relay, &w.clock);
    bob.publish(&relay, &w.clock);
    let body =
        |peer: &RawPeer, args: &Args| signed_body(&peer.account, args, "http://r", w.clock.now());
    let read = Args::ReadMessages {
        peer: None,
        peek: false,
        wait: Wait::new(600.0),
    };
    let Outcome::Park(parked) = relay.serve(&body(&bob, &read), w.clock.now()) else {
        panic!("a read with wait parks");
    };
    assert_eq!(parked.caller, bob.id);
    assert_eq!(parked.wait.seconds(), 25.0, "shortened to max_wait");
    assert_eq!(relay.poll_parked(&parked).unwrap(), None);
    let send = Args::SendMessage {
        to: bob.id.to_string(),
        mtype: 1,
        body: "AAAA".into(),
    };
    match relay.serve(&body(&alice, &send), w.clock.now()) {
        Outcome::Answer { response, mail_for } => {
            assert_eq!(response.status, 200);
            assert_eq!(mail_for.as_ref(), Some(&bob.id));
        }
        other => panic!("{other:?}"),
    }
    let answer = relay.poll_parked(&parked).unwrap().unwrap();
    assert_eq!(answer.body.as_array().unwrap().len(), 1);
    // A read without wait, and a refused send, wake nobody.
    let plain = Args::ReadMessages {
        peer: None,
        peek: false,
        wait: None,
    };
    assert!(matches!(
        relay.serve(&body(&bob, &plain), w.clock.now()),
        Outcome::Answer { mail_for: None, .. }
    ));
    let to_nobody = Args::SendMessage {
        to: "ffffffffffffffffffffffffffffffff".into(),
        mtype: 1,
        body: "AAAA".into(),
    };
    assert!(matches!(
        relay.serve(&body(&alice, &to_nobody), w.clock.now()),
        Outcome::Answer { mail_for: None, .. }
    ));
    // A replayed long-poll is refused like any replay.
    let once = body(&bob, &read);
    assert!(matches!(
        relay.serve(&once, w.clock.now()),
        Outcome::Park(_)
    ));
    match relay.serve(&once, w.clock.now()) {
        Outcome::Answer { response, .. } => {
            assert_eq!(response.status, 400);
            assert!(
                response.body["error"].as_str().unwrap().contains("replay"),
                "{}",
                response.body
            );
        }
        other => panic!("{other:?}"),
    }
}

/// A fetch that starts while another's read is in flight (the MCP server's
/// background driver, and a `check_inbox` call) waits for it: on return,
/// the mail the relay handed the other one is in the local inbox, so a
/// count made then is not zero.
#[tokio::test]
async fn a_fetch_waits_for_the_read_in_flight_and_then_sees_its_mail() {
    let w = World::new();
    let relay = w.relay("http://r");
    let (alice, _) = w.agent(&relay, "alice");
    let (bob, bob_faults) = w.agent(&relay, "bob");
    bob.ensure_published().await.unwrap();
    alice.send(bob.user_id(), "in flight").await.unwrap();

    let release = bob_faults.hold_next_answer(Tool::ReadMessages);
    let mut first = std::pin::pin!(bob.fetch());
    // The first read took the mail from the relay; its answer is held.
    assert!(poll_once(first.as_mut()).await.is_pending());
    assert!(relay.store().queued().is_empty());

    let mut second = std::pin::pin!(async {
        bob.fetch().await.unwrap();
        bob.pending_messages().unwrap().len()
    });
    assert!(
        poll_once(second.as_mut()).await.is_pending(),
        "the second fetch returned while the first one's mail was in flight"
    );
    release.send(()).unwrap();
    let (first, waiting) = tokio::join!(first, second);
    first.unwrap();
    assert_eq!(waiting, 1);
}

/// Polls `f` once.
async fn poll_once<F: Future + Unpin>(mut f: F) -> Poll<F::Output> {
    std::future::poll_fn(|cx| Poll::Ready(std::pin::Pin::new(&mut f).poll(cx))).await
}
