//! Refusing mail before any crypto (the block list, peers-only) and what a
//! verified refusal does to the sender: the message is dropped, the next
//! one goes on a fresh session, and the sessions it held are kept.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use retalk_proto::client::{blocked, set_blocked, OutboxKind, Store};

const R1: &str = "http://127.0.0.1:8766";

#[tokio::test]
async fn a_blocked_sender_is_refused_unopened_and_keeps_its_sessions() {
    let w = World::new();
    let relay = w.relay(R1);
    let (alice, _) = w.agent(&relay, "alice");
    let (bob, _) = w.agent(&relay, "bob");
    bob.publish(100, false).await.unwrap();
    alice.send(bob.user_id(), "one").await.unwrap();
    assert_eq!(texts(&bob).await, ["one"]);
    assert!(texts(&alice).await.is_empty(), "bob's ack only");
    let bob_sessions = bob.store().sessions(alice.user_id()).unwrap().len();

    assert!(set_blocked(bob.store().as_ref(), alice.user_id(), true).unwrap());
    assert_eq!(
        blocked(bob.store().as_ref()).unwrap(),
        [alice.user_id().clone()]
    );
    alice.send(bob.user_id(), "two").await.unwrap();
    let got = bob.receive().await.unwrap();
    assert!(got.messages.is_empty(), "{got:?}");
    assert_eq!(got.refused, 1);
    assert!(got.problems.is_empty(), "{:?}", got.problems);
    // Unopened: bob's ratchet with alice did not move.
    assert_eq!(
        bob.store().sessions(alice.user_id()).unwrap().len(),
        bob_sessions
    );

    // Alice's resend meets bob's signed refusal: the message goes, her
    // session stays, and the next message starts a fresh one.
    w.clock.advance(3_600.0);
    let report = alice.flush_outbox(0.0).await.unwrap();
    assert_eq!(report.refused, 1, "{report:?}");
    assert!(alice
        .store()
        .outbox()
        .unwrap()
        .iter()
        .all(|e| e.kind != OutboxKind::Message));
    assert_eq!(alice.store().sessions(bob.user_id()).unwrap().len(), 1);

    assert!(set_blocked(bob.store().as_ref(), alice.user_id(), false).unwrap());
    alice.send(bob.user_id(), "three").await.unwrap();
    assert_eq!(alice.store().sessions(bob.user_id()).unwrap().len(), 2);
    assert_eq!(texts(&bob).await, ["three"]);
    // And back on the old session bob keeps: bob's reply opens.
    bob.send(alice.user_id(), "back").await.unwrap();
    assert_eq!(texts(&alice).await, ["back"]);
}

#[tokio::test]
async fn peers_only_refuses_strangers_and_takes_saved_peers() {
    let w = World::new();
    let relay = w.relay(R1);
    let (alice, _) = w.agent(&relay, "alice");
    let (carol, _) = w.agent(&relay, "carol");
    let (bob, _) = w.agent(&relay, "bob");
    let bob = bob.with_peers_only(true);
    bob.add_contact("alice", alice.user_id().clone(), None)
        .unwrap();
    bob.publish(100, false).await.unwrap();
    alice.send(bob.user_id(), "from a peer").await.unwrap();
    carol.send(bob.user_id(), "from a stranger").await.unwrap();
    let got = bob.receive().await.unwrap();
    assert_eq!(got.refused, 1);
    let texts: Vec<_> = got.messages.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(texts, ["from a peer"]);
    assert!(bob.store().sessions(carol.user_id()).unwrap().is_empty());
}
