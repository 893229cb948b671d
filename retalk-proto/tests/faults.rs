//! The eight faults of the Python client (PROTOCOL section 9), each shown
//! impossible here. Fault 7 (crossed first messages wedge a pair) is
//! `crossed_first_messages_never_wedge_the_pair` in acceptance.rs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use retalk_proto::client::{ClientConfig, ClientError, Store};
use retalk_proto::relay::RelayConfig;
use retalk_proto::wire::{PublicKeys, Tool};
use retalk_proto::Clock;

const R1: &str = "http://127.0.0.1:8766";

/// Fault 1: a decrypted message whose ack fails is not lost; its re-sent
/// copy is re-acked and not surfaced again.
#[tokio::test]
async fn fault1_a_failed_ack_loses_nothing_and_duplicates_nothing() {
    let w = World::new();
    let relay = w.relay(R1);
    let (alice, _) = w.agent(&relay, "alice");
    let (bob, bob_faults) = w.agent(&relay, "bob");
    bob.publish(100, false).await.unwrap();
    alice.send(bob.user_id(), "important").await.unwrap();
    bob_faults.fail_next(Tool::SendMessage); // the ack
    bob_faults.fail_next(Tool::SendMessage); // and its retry in the same receive
    let got = bob.receive().await.unwrap();
    assert_eq!(
        got.messages
            .iter()
            .map(|m| m.text.as_str())
            .collect::<Vec<_>>(),
        ["important"]
    );
    assert_eq!(
        bob.store().outbox().unwrap().len(),
        1,
        "the ack waits in the outbox"
    );

    // Alice never saw an ack, so she resends after 120 s.
    w.clock.advance(121.0);
    let r = alice.maintain().await.unwrap();
    assert_eq!(r.flush.sent, 1);
    let again = bob.receive().await.unwrap();
    assert!(again.messages.is_empty(), "surfaced once only: {again:?}");
    alice.receive().await.unwrap();
    assert!(alice.store().outbox().unwrap().is_empty());
    assert!(bob.store().outbox().unwrap().is_empty());
}

/// Fault 1, the ack's side: an ack whose upload answer was lost is resent,
/// so its peer gets the same ack twice. The copy is dropped, never answered
/// with an ack of its own (acks are not acked).
#[tokio::test]
async fn fault1_a_duplicated_ack_is_not_acked() {
    let w = World::new();
    let relay = w.relay(R1);
    let (alice, _) = w.agent(&relay, "alice");
    let (bob, bob_faults) = w.agent(&relay, "bob");
    bob.publish(100, false).await.unwrap();
    alice.send(bob.user_id(), "hi").await.unwrap();
    bob_faults.lose_next_answer(Tool::SendMessage); // the ack: stored, answer lost
    bob_faults.fail_next(Tool::SendMessage); // its retry in the same receive
    assert_eq!(texts(&bob).await, ["hi"]);
    assert_eq!(bob.store().outbox().unwrap().len(), 1, "the ack waits");
    alice.receive().await.unwrap();
    assert!(alice.store().outbox().unwrap().is_empty(), "acked");

    // Later Bob's ack goes again: Alice gets the same ciphertext twice.
    w.clock.advance(121.0);
    assert_eq!(bob.maintain().await.unwrap().flush.sent, 1, "the ack again");
    let first = relay.store().queued();
    assert_eq!(first.len(), 1);
    alice.receive().await.unwrap();
    assert!(alice.store().outbox().unwrap().is_empty());
    assert!(
        relay.store().queued().is_empty(),
        "alice answered an ack: {:?}",
        relay.store().queued()
    );
}

/// Fault 1, the other half: a message is durable before its ack leaves, so
/// a client that dies after decrypting still has it.
#[tokio::test]
async fn fault1_a_decrypted_message_survives_a_crash_before_it_is_taken() {
    let w = World::new();
    let relay = w.relay(R1);
    let (alice, _) = w.agent(&relay, "alice");
    let (bob, _) = w.agent(&relay, "bob");
    bob.publish(100, false).await.unwrap();
    alice.send(bob.user_id(), "durable").await.unwrap();
    // Fetch and decrypt, then "crash" before the application took it: the
    // inbox still holds it, and the relay no longer does.
    bob.fetch().await.unwrap();
    assert!(relay
        .store()
        .queued()
        .iter()
        .all(|m| m.sender != alice.user_id().as_str()));
    let (bob2, _) = w.move_agent(&bob, "bob", &relay);
    assert_eq!(
        bob2.take_inbox()
            .unwrap()
            .into_iter()
            .map(|m| m.text)
            .collect::<Vec<_>>(),
        ["durable"]
    );
}

/// Fault 2: one bad message does not abort the batch.
#[tokio::test]
async fn fault2_each_bad_message_is_reported_and_skipped_alone() {
    let w = World::new();
    let relay = w.relay(R1);
    let (alice, _) = w.agent(&relay, "alice");
    let (bob, _) = w.agent(&relay, "bob");
    bob.publish(100, false).await.unwrap();

    let mut evil = RawPeer::new();
    evil.publish(&relay, &w.clock);
    let mut session = evil.session_with(&relay, &w.clock, bob.user_id());
    evil.send_raw(&relay, &w.clock, bob.user_id(), 1, "!!! not base64 !!!");
    evil.send_raw(&relay, &w.clock, bob.user_id(), 1, "AAAA");
    evil.send_plain(
        &relay,
        &w.clock,
        &mut session,
        bob.user_id(),
        b"this is not json",
    );
    evil.send_plain(
        &relay,
        &w.clock,
        &mut session,
        bob.user_id(),
        br#"{"id":"x1","kind":"contact_request","card":{}}"#,
    );
    evil.send_plain(
        &relay,
        &w.clock,
        &mut session,
        bob.user_id(),
        br#"{"id":"x2","kind":"msg","text":"from evil","name":"evil","group":{"id":"g"}}"#,
    );
    // A pre-key message from a peer whose served keys do not hash to its id.
    let mut liar = RawPeer::new();
    liar.publish(&relay, &w.clock);
    let mut liar_session = liar.session_with(&relay, &w.clock, bob.user_id());
    liar.send_plain(
        &relay,
        &w.clock,
        &mut liar_session,
        bob.user_id(),
        br#"{"id":"y","kind":"msg","text":"impostor","name":""}"#,
    );
    let other = RawPeer::new();
    relay.store().set_keys(
        &liar.id,
        Some(PublicKeys {
            identity_key: other.account.curve25519_key().to_base64(),
            signing_key: other.account.ed25519_key().to_base64(),
        }),
    );
    alice.send(bob.user_id(), "good one").await.unwrap();

    let got = bob.receive().await.unwrap();
    // The contact request with an empty card is judged as a redemption
    // (client/invite.rs): a rejection record, not a message or a problem.
    let (records, messages): (Vec<_>, Vec<_>) =
        got.messages.iter().partition(|m| m.kind().is_some());
    let mut texts: Vec<_> = messages.iter().map(|m| m.text.as_str()).collect();
    texts.sort();
    assert_eq!(texts, ["from evil", "good one"]);
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0].extra_fields()["reason"], "card-mismatch");
    assert_eq!(got.problems.len(), 4, "{:#?}", got.problems);
    assert!(
        got.problems
            .iter()
            .any(|p| p.reason.contains("PIN MISMATCH")),
        "{:#?}",
        got.problems
    );
    assert!(got.problems.iter().any(|p| p.reason.contains("base64")));
    assert!(bob.store().incoming().unwrap().is_empty());
}

/// Fault 3: a failed upload keeps the advanced ratchet and its ciphertext;
/// the next message uses a fresh key, and both decrypt.
#[tokio::test]
async fn fault3_a_failed_send_never_reuses_a_message_key() {
    let w = World::new();
    let relay = w.relay(R1);
    let (alice, alice_faults) = w.agent(&relay, "alice");
    let (bob, _) = w.agent(&relay, "bob");
    bob.publish(100, false).await.unwrap();
    alice.send(bob.user_id(), "first").await.unwrap();
    assert_eq!(texts(&bob).await, ["first"]);
    alice.receive().await.unwrap();

    alice_faults.fail_next(Tool::SendMessage);
    let err = alice
        .send(bob.user_id(), "lost in transit")
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::NotDelivered { .. }), "{err}");
    alice
        .send(bob.user_id(), "after the failure")
        .await
        .unwrap();
    let r = alice.flush_outbox(0.0).await.unwrap();
    assert_eq!(r.failed, 0);
    let got = bob.receive().await.unwrap();
    assert!(got.problems.is_empty(), "{:?}", got.problems);
    let mut texts: Vec<_> = got.messages.into_iter().map(|m| m.text).collect();
    texts.sort();
    assert_eq!(texts, ["after the failure", "lost in transit"]);
}

/// Fault 4: one stuck outbox entry does not block the others.
#[tokio::test]
async fn fault4_a_stuck_entry_fails_alone_and_backs_off() {
    let w = World::new();
    let relay = w.relay_with(RelayConfig {
        audiences: vec![R1.into()],
        max_mailbox: 1,
        ..RelayConfig::default()
    });
    let (alice, _) = w.agent(&relay, "alice");
    let (bob, _) = w.agent(&relay, "bob");
    let (carol, _) = w.agent(&relay, "carol");
    bob.publish(100, false).await.unwrap();
    carol.publish(100, false).await.unwrap();
    alice.send(bob.user_id(), "b1").await.unwrap();
    let full = alice.send(bob.user_id(), "b2").await.unwrap_err();
    assert!(full.to_string().contains("mailbox full"), "{full}");
    alice.send(carol.user_id(), "c1").await.unwrap();
    assert_eq!(texts(&carol).await, ["c1"]);
    alice.receive().await.unwrap(); // c1's ack (every mailbox here holds one message)
                                    // The stuck entry backs off instead of being retried on every call.
    assert_eq!(
        alice.store().outbox().unwrap().len(),
        2,
        "b1 waits for its ack, b2 for the relay"
    );
    let b2 = alice
        .store()
        .outbox()
        .unwrap()
        .into_iter()
        .find(|e| e.last_error.is_some())
        .unwrap();
    assert!(b2.next_attempt > w.clock.now());
    assert_eq!(texts(&bob).await, ["b1"]);
    alice.receive().await.unwrap(); // b1's ack
    assert_eq!(alice.store().outbox().unwrap().len(), 1);
    w.clock.advance(3_600.0);
    let r = alice.maintain().await.unwrap();
    assert_eq!(r.flush.failed, 0, "{r:?}");
    assert_eq!(texts(&bob).await, ["b2"]);
}

/// Fault 5: sends do not re-upload the outbox.
#[tokio::test]
async fn fault5_resends_are_due_time_based_not_per_send() {
    let w = World::new();
    let relay = w.relay(R1);
    let (alice, _) = w.agent(&relay, "alice");
    let (bob, _) = w.agent(&relay, "bob");
    bob.publish(100, false).await.unwrap();
    for i in 0..10 {
        alice.send(bob.user_id(), &format!("m{i}")).await.unwrap();
    }
    assert_eq!(relay.store().queued().len(), 10, "one upload per message");
    w.clock.advance(60.0);
    assert_eq!(
        alice.maintain().await.unwrap().flush.sent,
        0,
        "nothing due yet"
    );
    w.clock.advance(61.0);
    assert_eq!(alice.maintain().await.unwrap().flush.sent, 10);
    let got = bob.receive().await.unwrap();
    assert_eq!(got.messages.len(), 10, "each message once");
}

/// Fault 6: keys are saved before upload; a lost answer is retried with
/// the same keys, so the relay never holds a key without its private half.
#[tokio::test]
async fn fault6_a_lost_publish_answer_is_retried_with_the_same_keys() {
    let w = World::new();
    let relay = w.relay(R1);
    let (bob, bob_faults) = w.agent(&relay, "bob");
    bob_faults.lose_next_answer(Tool::PublishKeys);
    assert!(bob.publish(100, false).await.is_err());
    assert_eq!(
        relay.store().count_keys_for(bob.user_id()),
        (100, true),
        "the relay took them"
    );
    bob.publish(100, false).await.unwrap();
    assert_eq!(
        relay.store().count_keys_for(bob.user_id()),
        (100, true),
        "the retry re-sent the same keys"
    );
    // Every key the relay serves has its private half: claim them all.
    for i in 0..101 {
        let (sender, _) = w.agent(&relay, &format!("s{i}"));
        sender
            .send(bob.user_id(), &format!("hello {i}"))
            .await
            .unwrap();
    }
    let got = bob.receive().await.unwrap();
    assert!(got.problems.is_empty(), "{:?}", got.problems);
    assert_eq!(got.messages.len(), 101);
}

/// Fault 8: client tables are bounded.
#[tokio::test]
async fn fault8_tables_are_bounded() {
    let w = World::new();
    let relay = w.relay(R1);
    let config = ClientConfig {
        sessions_per_peer: 2,
        ..ClientConfig::default()
    };
    let (alice, _) = w.agent(&relay, "alice");
    let alice = alice.with_config(config);
    let (bob, _) = w.agent(&relay, "bob");
    alice.publish(100, false).await.unwrap();
    bob.publish(100, false).await.unwrap();
    // Bob restarts his session with alice four times.
    for i in 0..4 {
        let sessions = bob.store().sessions(alice.user_id()).unwrap();
        let store = bob.store();
        store
            .commit(
                &store.lock().unwrap(),
                retalk_proto::client::Changes {
                    sessions_removed: sessions
                        .into_iter()
                        .map(|s| (s.peer, s.session_id))
                        .collect(),
                    ..Default::default()
                },
            )
            .unwrap();
        bob.send(alice.user_id(), &format!("s{i}")).await.unwrap();
        assert_eq!(texts(&alice).await, [format!("s{i}")]);
    }
    assert!(alice.store().sessions(bob.user_id()).unwrap().len() <= 2);

    // Processed markers go after their retention.
    let before = alice.store().processed_count();
    assert!(before >= 4);
    w.clock.advance(46.0 * 86_400.0);
    alice.maintain().await.unwrap();
    assert_eq!(alice.store().processed_count(), 0);

    // Unacked messages are given up after the outbox's maximum age, and
    // reported.
    let (carol, carol_faults) = w.agent(&relay, "carol");
    carol.publish(100, false).await.unwrap();
    carol_faults.set_down(true);
    alice.send(carol.user_id(), "never read").await.unwrap();
    w.clock.advance(31.0 * 86_400.0);
    let r = alice.maintain().await.unwrap();
    assert_eq!(r.flush.expired.len(), 1);
    assert!(alice
        .store()
        .outbox()
        .unwrap()
        .iter()
        .all(|e| e.peer != *carol.user_id()));
}

/// Fault 9: a message sent while the relay is away is kept, even before a
/// session exists (no key could be claimed), and goes out, encrypted then,
/// on the next call that reaches the relay: exactly once.
#[tokio::test]
async fn fault9_a_message_sent_while_the_relay_is_away_is_kept_and_sent_later() {
    let w = World::new();
    let relay = w.relay(R1);
    let (alice, alice_faults) = w.agent(&relay, "alice");
    let (bob, _) = w.agent(&relay, "bob");
    bob.publish(100, false).await.unwrap();
    alice_faults.set_down(true);
    let first = alice
        .send(bob.user_id(), "no session yet")
        .await
        .unwrap_err();
    assert!(matches!(first, ClientError::NotDelivered { .. }), "{first}");
    let kept = alice.store().outbox().unwrap();
    assert_eq!(kept.len(), 1);
    assert!(kept[0].reencrypt && kept[0].body.is_empty());
    alice_faults.set_down(false);
    alice.receive().await.unwrap(); // due at once: a plain receive sends it
    assert_eq!(texts(&bob).await, ["no session yet"]);
    // With a session: down again, kept again, sent again.
    alice_faults.set_down(true);
    assert!(alice.send(bob.user_id(), "session now").await.is_err());
    alice_faults.set_down(false);
    w.clock.advance(31.0); // a failed attempt is retried after 30 s
    alice.receive().await.unwrap(); // bob's ack of the first, and the resend
    assert_eq!(texts(&bob).await, ["session now"]);
    alice.receive().await.unwrap();
    assert!(alice.store().outbox().unwrap().is_empty());
}

/// Fault 10: what could never be delivered is refused before anything is
/// kept: a message to oneself (no Olm session can open it) and one larger
/// than a relay takes.
#[tokio::test]
async fn fault10_undeliverable_messages_are_refused_up_front() {
    let w = World::new();
    let relay = w.relay(R1);
    let (alice, _) = w.agent(&relay, "alice");
    let (bob, _) = w.agent(&relay, "bob");
    bob.publish(100, false).await.unwrap();
    let me = alice.user_id().clone();
    assert!(matches!(
        alice.send(&me, "note to self").await,
        Err(ClientError::ToSelf)
    ));
    let huge = "x".repeat(retalk_proto::client::MAX_ENVELOPE_BYTES);
    assert!(matches!(
        alice.send(bob.user_id(), &huge).await,
        Err(ClientError::TooLarge { .. })
    ));
    assert!(alice.store().outbox().unwrap().is_empty());
    // Just under the limit still goes.
    let big = "x".repeat(retalk_proto::client::MAX_ENVELOPE_BYTES - 200);
    alice.send(bob.user_id(), &big).await.unwrap();
    assert_eq!(texts(&bob).await, [big]);
}

/// Fault 11: a message the relay refused (a full mailbox) is resent by a
/// plain `receive` once due, not only by maintenance.
#[tokio::test]
async fn fault11_a_refused_message_is_resent_by_the_next_receive_once_due() {
    let w = World::new();
    let relay = w.relay_with(RelayConfig {
        audiences: vec![R1.into()],
        max_mailbox: 1,
        ..RelayConfig::default()
    });
    let (alice, _) = w.agent(&relay, "alice");
    let (bob, _) = w.agent(&relay, "bob");
    bob.publish(100, false).await.unwrap();
    alice.send(bob.user_id(), "b1").await.unwrap();
    assert!(alice.send(bob.user_id(), "b2").await.is_err());
    assert_eq!(texts(&bob).await, ["b1"]);
    alice.receive().await.unwrap(); // b1's ack; b2 not due yet
    assert!(texts(&bob).await.is_empty());
    w.clock.advance(31.0); // the first retry of a refusal is due after 30 s
    alice.receive().await.unwrap();
    assert_eq!(texts(&bob).await, ["b2"]);
}

/// A hand-out whose answer never reached the reader (the MCP host
/// cancelled the call) is put back whole, and a second taker meanwhile
/// gets none of it: nothing lost, nothing handed twice.
#[tokio::test]
async fn a_hand_out_is_exclusive_and_put_back_whole() {
    let w = World::new();
    let relay = w.relay(R1);
    let (alice, _) = w.agent(&relay, "alice");
    let (carol, _) = w.agent(&relay, "carol");
    let (bob, _) = w.agent(&relay, "bob");
    bob.publish(100, false).await.unwrap();
    for t in ["a1", "a2", "a3"] {
        alice.send(bob.user_id(), t).await.unwrap();
    }
    carol.send(bob.user_id(), "c1").await.unwrap();
    bob.fetch().await.unwrap();
    let texts = |h: &retalk_proto::client::HandOut| {
        h.messages
            .iter()
            .map(|m| m.text.clone())
            .collect::<Vec<_>>()
    };

    let from_alice = [alice.user_id().clone()];
    let first = bob.hand_out(Some(&from_alice), 2).unwrap();
    assert_eq!(texts(&first), ["a1", "a2"]);
    let second = bob.hand_out(Some(&from_alice), 10).unwrap();
    assert_eq!(texts(&second), ["a3"], "a second taker got the first one's");
    bob.put_back(first).unwrap();
    bob.put_back(second).unwrap();
    let left: Vec<String> = bob
        .pending_messages()
        .unwrap()
        .into_iter()
        .map(|m| m.text)
        .collect();
    assert_eq!(left, ["c1", "a1", "a2", "a3"]);
    // Put back as stored: it reads the same after a restart.
    let (bob2, _) = w.move_agent(&bob, "bob", &relay);
    assert_eq!(
        texts(&bob2.hand_out(None, 10).unwrap()),
        ["c1", "a1", "a2", "a3"]
    );
    assert!(bob2.pending_messages().unwrap().is_empty());
}
