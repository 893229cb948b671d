//! The original acceptance scenario, each step its own test, on a
//! simulated clock with in-process relays.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use retalk_proto::client::{ClientError, Store};
use retalk_proto::olm::decode_message;
use retalk_proto::wire::{Args, PublicKeys};
use retalk_proto::Clock;
use vodozemac::olm::OlmMessage;

const R1: &str = "http://127.0.0.1:8766";
const R2: &str = "http://127.0.0.1:9766";

#[tokio::test]
async fn a_to_b_with_publish_as_only_onboarding_shows_unverified_name() {
    let w = World::new();
    let relay = w.relay(R1);
    let (alice, _) = w.agent(&relay, "alice");
    let (bob, _) = w.agent(&relay, "bob");
    bob.publish(100, false).await.unwrap();
    alice.send(bob.user_id(), "hello bob").await.unwrap();
    let got = bob.receive().await.unwrap();
    assert!(got.problems.is_empty(), "{:?}", got.problems);
    assert_eq!(got.messages.len(), 1);
    let m = &got.messages[0];
    assert_eq!(
        (m.from.clone(), m.name.as_str(), m.text.as_str()),
        (alice.user_id().clone(), "~alice", "hello bob")
    );
}

#[tokio::test]
async fn b_to_a_shows_the_saved_name() {
    let w = World::new();
    let relay = w.relay(R1);
    let (alice, _) = w.agent(&relay, "alice");
    let (bob, _) = w.agent(&relay, "bob");
    alice
        .add_contact("bobby", bob.user_id().clone(), None)
        .unwrap();
    bob.publish(100, false).await.unwrap();
    alice.send(bob.user_id(), "hi").await.unwrap();
    assert_eq!(texts(&bob).await, ["hi"]);
    bob.send(alice.user_id(), "hello alice").await.unwrap();
    let got = alice.receive().await.unwrap();
    assert_eq!(got.messages.len(), 1);
    assert_eq!(got.messages[0].name, "bobby");
    assert_eq!(got.messages[0].text, "hello alice");
}

#[tokio::test]
async fn relay_holds_no_plaintext_and_forgets_delivered_mail() {
    let w = World::new();
    let relay = w.relay(R1);
    let (alice, _) = w.agent(&relay, "alice");
    let (bob, _) = w.agent(&relay, "bob");
    bob.publish(100, false).await.unwrap();
    let secret = "the secret plan";
    alice.send(bob.user_id(), secret).await.unwrap();
    let queued = relay.store().queued();
    assert_eq!(queued.len(), 1);
    for m in &queued {
        assert!(!m.body.contains(secret));
        let OlmMessage::PreKey(pre) = decode_message(m.mtype, &m.body).unwrap() else {
            panic!("first message is pre-key")
        };
        assert!(!String::from_utf8_lossy(&pre.to_bytes()).contains(secret));
    }
    assert_eq!(texts(&bob).await, [secret]);
    // Bob's read deleted the message; only Bob's ack to Alice is queued.
    let queued = relay.store().queued();
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].sender, bob.user_id().as_str());
    assert!(alice.receive().await.unwrap().messages.is_empty());
    assert!(relay.store().queued().is_empty(), "delivered mail is gone");
}

#[tokio::test]
async fn keys_that_do_not_hash_to_the_id_are_a_pin_mismatch_and_nothing_is_sent() {
    let w = World::new();
    let relay = w.relay(R1);
    let (alice, _) = w.agent(&relay, "alice");
    let (bob, _) = w.agent(&relay, "bob");
    let (mallory, _) = w.agent(&relay, "mallory");
    bob.publish(100, false).await.unwrap();
    // The relay swaps Bob's keys for Mallory's.
    relay.store().set_keys(
        bob.user_id(),
        Some(PublicKeys {
            identity_key: mallory.identity_key().into(),
            signing_key: mallory.signing_key().into(),
        }),
    );
    let err = alice.send(bob.user_id(), "for bob only").await.unwrap_err();
    assert!(matches!(err, ClientError::PinMismatch { .. }), "{err}");
    assert!(err.to_string().starts_with("PIN MISMATCH for peer"));
    assert!(relay.store().queued().is_empty());
    assert!(alice.store().outbox().unwrap().is_empty());
    assert!(alice.store().sessions(bob.user_id()).unwrap().is_empty());
}

#[tokio::test]
async fn an_explicit_pin_that_contradicts_the_served_key_is_a_pin_mismatch() {
    let w = World::new();
    let relay = w.relay(R1);
    let (alice, _) = w.agent(&relay, "alice");
    let (bob, _) = w.agent(&relay, "bob");
    bob.publish(100, false).await.unwrap();
    alice
        .add_contact("bob", bob.user_id().clone(), Some("not-bobs-key".into()))
        .unwrap();
    let err = alice.send(bob.user_id(), "x").await.unwrap_err();
    assert!(matches!(err, ClientError::PinMismatch { .. }), "{err}");
    alice
        .add_contact(
            "bob",
            bob.user_id().clone(),
            Some(bob.identity_key().into()),
        )
        .unwrap();
    alice.send(bob.user_id(), "x").await.unwrap();
    assert_eq!(texts(&bob).await, ["x"]);
}

#[tokio::test]
async fn with_one_time_keys_drained_a_session_starts_on_the_fallback_key() {
    let w = World::new();
    let relay = w.relay(R1);
    let (alice, _) = w.agent(&relay, "alice");
    let (bob, _) = w.agent(&relay, "bob");
    bob.publish(0, false).await.unwrap(); // identity and fallback key only
    let counts = relay.store().count_keys_for(bob.user_id());
    assert_eq!(counts, (0, true));
    alice.send(bob.user_id(), "via fallback").await.unwrap();
    assert_eq!(texts(&bob).await, ["via fallback"]);
    assert_eq!(
        relay.store().count_keys_for(bob.user_id()),
        (0, true),
        "the fallback key stays"
    );
}

#[tokio::test]
async fn maintain_replenishes_and_rotates_a_stale_fallback_and_then_does_nothing() {
    let w = World::new();
    let relay = w.relay(R1);
    let (bob, _) = w.agent(&relay, "bob");
    bob.publish(0, false).await.unwrap();
    let r = bob.maintain().await.unwrap();
    assert!(r.replenished && !r.fallback_rotated, "{r:?}");
    assert_eq!(relay.store().count_keys_for(bob.user_id()), (100, true));
    w.clock.advance(86_401.0);
    let r = bob.maintain().await.unwrap();
    assert!(!r.replenished && r.fallback_rotated, "{r:?}");
    let r = bob.maintain().await.unwrap();
    assert!(!r.replenished && !r.fallback_rotated, "{r:?}");
    assert_eq!(relay.store().count_keys_for(bob.user_id()), (100, true));
}

#[tokio::test]
async fn a_message_in_flight_to_the_old_fallback_key_decrypts_after_one_rotation() {
    let w = World::new();
    let relay = w.relay(R1);
    let (alice, _) = w.agent(&relay, "alice");
    let (bob, _) = w.agent(&relay, "bob");
    bob.publish(0, false).await.unwrap();
    alice
        .send(bob.user_id(), "sent to the old fallback")
        .await
        .unwrap();
    w.clock.advance(86_401.0);
    let r = bob.maintain().await.unwrap();
    assert!(r.fallback_rotated);
    assert_eq!(texts(&bob).await, ["sent to the old fallback"]);
}

#[tokio::test]
async fn moving_to_a_fresh_relay_keeps_sessions() {
    let w = World::new();
    let r1 = w.relay(R1);
    let (alice, _) = w.agent(&r1, "alice");
    let (bob, _) = w.agent(&r1, "bob");
    bob.publish(100, false).await.unwrap();
    alice.send(bob.user_id(), "one").await.unwrap();
    assert_eq!(texts(&bob).await, ["one"]);
    alice.receive().await.unwrap(); // the ack: alice's session is now established

    let r2 = w.relay(R2);
    let (alice2, _) = w.move_agent(&alice, "alice", &r2);
    let (bob2, _) = w.move_agent(&bob, "bob", &r2);
    bob2.receive().await.unwrap(); // publishes to the new relay
    alice2.send(bob2.user_id(), "two").await.unwrap();
    let queued = r2.store().queued();
    assert_eq!(queued.len(), 1);
    assert_eq!(
        queued[0].mtype, 1,
        "the next message is a normal one: the session survived the move"
    );
    assert_eq!(texts(&bob2).await, ["two"]);
}

#[tokio::test]
async fn every_delivered_message_is_acked_and_outboxes_end_empty() {
    let w = World::new();
    let relay = w.relay(R1);
    let (alice, _) = w.agent(&relay, "alice");
    let (bob, _) = w.agent(&relay, "bob");
    bob.publish(100, false).await.unwrap();
    for i in 0..5 {
        alice.send(bob.user_id(), &format!("a{i}")).await.unwrap();
        bob.send(alice.user_id(), &format!("b{i}")).await.unwrap();
    }
    assert_eq!(alice.store().outbox().unwrap().len(), 5);
    assert_eq!(bob.store().outbox().unwrap().len(), 5);
    let mut got_b = texts(&bob).await;
    let mut got_a = texts(&alice).await;
    got_a.extend(texts(&alice).await);
    got_b.extend(texts(&bob).await);
    got_a.sort();
    got_b.sort();
    assert_eq!(got_b, ["a0", "a1", "a2", "a3", "a4"]);
    assert_eq!(got_a, ["b0", "b1", "b2", "b3", "b4"]);
    assert!(
        alice.store().outbox().unwrap().is_empty(),
        "{:?}",
        alice.store().outbox().unwrap()
    );
    assert!(
        bob.store().outbox().unwrap().is_empty(),
        "{:?}",
        bob.store().outbox().unwrap()
    );
}

#[tokio::test]
async fn a_message_stranded_on_a_dead_relay_is_recovered_and_the_late_copy_is_reacked_not_surfaced()
{
    let w = World::new();
    let r1 = w.relay(R1);
    let (alice, _) = w.agent(&r1, "alice");
    let (bob, bob_faults) = w.agent(&r1, "bob");
    bob.publish(100, false).await.unwrap();
    alice.send(bob.user_id(), "warm-up").await.unwrap();
    assert_eq!(texts(&bob).await, ["warm-up"]);
    alice.receive().await.unwrap();

    alice.send(bob.user_id(), "stranded").await.unwrap();
    bob_faults.set_down(true); // relay 1 is dead for bob

    let r2 = w.relay(R2);
    let (alice2, _) = w.move_agent(&alice, "alice", &r2);
    let (bob2, _) = w.move_agent(&bob, "bob", &r2);
    bob2.receive().await.unwrap();
    let flushed = alice2.flush_outbox(0.0).await.unwrap();
    assert_eq!(flushed.sent, 1);
    assert_eq!(texts(&bob2).await, ["stranded"]);
    alice2.receive().await.unwrap();
    assert!(alice2.store().outbox().unwrap().is_empty());

    // Relay 1 comes back with the original copy.
    bob_faults.set_down(false);
    let late = bob.receive().await.unwrap();
    assert!(late.messages.is_empty(), "not surfaced twice: {late:?}");
    assert!(late.problems.is_empty(), "{:?}", late.problems);
    let reack = r1.store().queued();
    assert_eq!(reack.len(), 1, "bob re-acked the late copy: {reack:?}");
    assert_eq!(reack[0].sender, bob.user_id().as_str());
    assert!(alice.receive().await.unwrap().messages.is_empty());
}

#[tokio::test]
async fn replayed_stale_and_cross_relay_requests_are_rejected() {
    let w = World::new();
    let r1 = w.relay(R1);
    let r2 = w.relay(R2);
    let (alice, faults) = w.agent(&r1, "alice");
    alice.publish(10, false).await.unwrap();
    let captured = faults.log.lock().unwrap().last().unwrap().clone();

    let replay = r1.handle(&captured, w.clock.now());
    assert_eq!(
        (replay.status, replay.body["error"].as_str().unwrap()),
        (400, "replay detected: nonce already used")
    );

    let other = r2.handle(&captured, w.clock.now());
    assert_eq!(
        other.body["error"].as_str().unwrap(),
        "bad signature (wrong key, audience, or argument canonicalization)"
    );

    let account = vodozemac::olm::Account::new();
    let old = signed_body(&account, &Args::CountKeys, R1, w.clock.now() - 3600.0);
    let stale = r1.handle(&old, w.clock.now());
    assert_eq!(
        stale.body["error"].as_str().unwrap(),
        "stale or future timestamp (check the clock)"
    );
    let future = signed_body(&account, &Args::CountKeys, R1, w.clock.now() + 3600.0);
    assert_eq!(
        r1.handle(&future, w.clock.now()).body["error"],
        "stale or future timestamp (check the clock)"
    );
    // Replay protection outlives the window it protects.
    w.clock.advance(200.0);
    assert_eq!(
        r1.handle(&captured, w.clock.now()).body["error"],
        "stale or future timestamp (check the clock)"
    );
}

#[tokio::test]
async fn crossed_first_messages_never_wedge_the_pair() {
    let w = World::new();
    let relay = w.relay(R1);
    let (alice, _) = w.agent(&relay, "alice");
    let (bob, _) = w.agent(&relay, "bob");
    alice.publish(100, false).await.unwrap();
    bob.publish(100, false).await.unwrap();
    // Both write first, before either receives.
    alice.send(bob.user_id(), "from alice").await.unwrap();
    bob.send(alice.user_id(), "from bob").await.unwrap();
    assert_eq!(texts(&bob).await, ["from alice"]);
    assert_eq!(texts(&alice).await, ["from bob"]);
    for round in 0..6 {
        alice
            .send(bob.user_id(), &format!("a{round}"))
            .await
            .unwrap();
        bob.send(alice.user_id(), &format!("b{round}"))
            .await
            .unwrap();
        let got_b = bob.receive().await.unwrap();
        let got_a = alice.receive().await.unwrap();
        assert!(
            got_a.problems.is_empty() && got_b.problems.is_empty(),
            "{got_a:?} {got_b:?}"
        );
        assert_eq!(
            got_b
                .messages
                .iter()
                .map(|m| m.text.clone())
                .collect::<Vec<_>>(),
            [format!("a{round}")]
        );
        assert_eq!(
            got_a
                .messages
                .iter()
                .map(|m| m.text.clone())
                .collect::<Vec<_>>(),
            [format!("b{round}")]
        );
    }
    alice.receive().await.unwrap();
    bob.receive().await.unwrap();
    assert!(alice.store().outbox().unwrap().is_empty());
    assert!(bob.store().outbox().unwrap().is_empty());
}

#[tokio::test]
async fn replays_do_not_count_against_the_victims_rate_limit() {
    let w = World::new();
    let relay = w.relay_with(retalk_proto::RelayConfig {
        audiences: vec![R1.into()],
        rate_limit: 3,
        ..Default::default()
    });
    let (alice, faults) = w.agent(&relay, "alice");
    alice.publish(10, false).await.unwrap();
    let captured = faults.log.lock().unwrap().last().unwrap().clone();
    for _ in 0..20 {
        assert_eq!(
            relay.handle(&captured, w.clock.now()).body["error"],
            "replay detected: nonce already used"
        );
    }
    // Alice's own requests still go through (2 left in her window).
    alice.publish(0, false).await.unwrap();
}
