//! Groups and invite codes through the client API, in one process (an
//! in-process relay, in-memory stores, one simulated clock): the roster
//! rule end to end (a forged copy from a stranger, a stale one from a
//! removed member, an outsider added by a member), leaving, and an invite
//! redeemed, replayed and refused.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use retalk_proto::client::{
    self, create_group, find_group, group_add, group_remove, new_invite, Received, Store,
    StoreTransaction,
};
use retalk_proto::group::GroupId;
use retalk_proto::Clock;

const R1: &str = "http://127.0.0.1:8766";

async fn receive(agent: &Agent) -> Vec<Received> {
    let got = agent.receive().await.unwrap();
    assert!(got.problems.is_empty(), "{:?}", got.problems);
    got.messages
}

fn kinds(got: &[Received]) -> Vec<String> {
    got.iter()
        .map(|m| m.kind().unwrap_or_else(|| format!("text:{}", m.text)))
        .collect()
}

fn members(agent: &Agent, name: &str) -> Vec<String> {
    find_group(agent.store().as_ref(), name)
        .unwrap()
        .members
        .iter()
        .map(|u| u.to_string())
        .collect()
}

fn ids(agents: &[&Agent]) -> Vec<String> {
    let mut v: Vec<String> = agents.iter().map(|a| a.user_id().to_string()).collect();
    v.sort();
    v
}

struct Team {
    w: World,
    relay: TestRelay,
    alice: Agent,
    bob: Agent,
    carol: Agent,
    gid: GroupId,
}

/// alice owns `team` with bob and carol, who both learned it.
async fn team() -> Team {
    let w = World::new();
    let relay = w.relay(R1);
    let (alice, _) = w.agent(&relay, "alice");
    let (bob, _) = w.agent(&relay, "bob");
    let (carol, _) = w.agent(&relay, "carol");
    for a in [&alice, &bob, &carol] {
        a.publish(100, false).await.unwrap();
    }
    let g = create_group(
        alice.store().as_ref(),
        alice.user_id(),
        "team",
        &[bob.user_id().clone(), carol.user_id().clone()],
        100,
        w.clock.now(),
    )
    .unwrap();
    let r = alice.send_group("team", "kickoff").await.unwrap();
    assert_eq!((r.sent.len(), r.failed.len()), (2, 0));
    for a in [&bob, &carol] {
        let got = receive(a).await;
        assert_eq!(kinds(&got), ["group_joined", "text:kickoff"]);
        assert_eq!(got[1].extra_fields()["group_id"], g.id.as_str());
        assert_eq!(members(a, "team"), ids(&[&alice, &bob, &carol]));
    }
    receive(&alice).await;
    Team {
        w,
        relay,
        alice,
        bob,
        carol,
        gid: g.id,
    }
}

/// Puts a group with `gid` and `members` into `who`'s own store, as a
/// modified client could, owned by `who`.
fn forge(who: &Agent, gid: &GroupId, members: &[&Agent]) {
    let mut tx = StoreTransaction::new(who.store().as_ref()).unwrap();
    tx.changes.groups.push(retalk_proto::group::Group {
        id: gid.clone(),
        name: "team".into(),
        members: members.iter().map(|a| a.user_id().clone()).collect(),
        owner: Some(who.user_id().clone()),
        ts: 0.0,
    });
    tx.commit().unwrap();
}

#[tokio::test]
async fn a_stranger_cannot_change_a_roster() {
    let t = team().await;
    let (mallory, _) = t.w.agent(&t.relay, "mallory");
    forge(&mallory, &t.gid, &[&t.alice, &t.bob, &t.carol, &mallory]);
    mallory.send_group("team", "hi, I'm in").await.unwrap();
    let got = receive(&t.carol).await;
    assert_eq!(kinds(&got), ["group_update_refused", "text:hi, I'm in"]);
    assert_eq!(got[0].extra_fields()["reason"], "not-member");
    assert_eq!(got[1].extra_fields()["member"], false);
    assert_eq!(
        members(&t.carol, "team"),
        ids(&[&t.alice, &t.bob, &t.carol])
    );
}

/// alice (the owner) removes bob from `team` and says so; carol takes the
/// change.
async fn alice_removes_bob(t: &Team) {
    let now = t.w.clock.now();
    group_remove(
        t.alice.store().as_ref(),
        t.alice.user_id(),
        "team",
        &[t.bob.user_id().clone()],
        now,
    )
    .unwrap();
    t.alice.send_group("team", "bob is out").await.unwrap();
    let got = receive(&t.carol).await;
    assert_eq!(kinds(&got), ["group_update", "text:bob is out"]);
    assert_eq!(members(&t.carol, "team"), ids(&[&t.alice, &t.carol]));
}

#[tokio::test]
async fn a_removed_member_cannot_come_back() {
    let t = team().await;
    alice_removes_bob(&t).await;
    // bob's client still has the old roster (it never learned): its copy
    // would put bob back.
    t.bob.send_group("team", "still here").await.unwrap();
    let got = receive(&t.carol).await;
    assert_eq!(kinds(&got), ["group_update_refused", "text:still here"]);
    assert_eq!(got[0].extra_fields()["reason"], "not-member");
    assert_eq!(members(&t.carol, "team"), ids(&[&t.alice, &t.carol]));
}

#[tokio::test]
async fn a_member_cannot_add_an_outsider_but_may_leave() {
    let t = team().await;
    let (eve, _) = t.w.agent(&t.relay, "eve");
    eve.publish(100, false).await.unwrap();
    // bob's own edit is refused locally (not the owner)...
    let now = t.w.clock.now();
    let e = group_add(
        t.bob.store().as_ref(),
        t.bob.user_id(),
        "team",
        &[eve.user_id().clone()],
        100,
        now,
    )
    .unwrap_err();
    assert!(e.to_string().contains("only the owner"), "{e}");
    // ...and a modified bob's copy is refused by the others.
    forge(&t.bob, &t.gid, &[&t.alice, &t.bob, &t.carol, &eve]);
    t.bob.send_group("team", "meet eve").await.unwrap();
    let got = receive(&t.carol).await;
    assert_eq!(kinds(&got), ["group_update_refused", "text:meet eve"]);
    assert_eq!(got[0].extra_fields()["reason"], "not-owner");
    assert_eq!(got[0].extra_fields()["owner"], t.alice.user_id().as_str());
    assert!(!got[1].extra_fields().contains_key("member"));
    assert_eq!(
        members(&t.carol, "team"),
        ids(&[&t.alice, &t.bob, &t.carol])
    );
    // carol's copies never reach eve.
    let r = t.carol.send_group("team", "not for eve").await.unwrap();
    assert_eq!(r.sent.len(), 2);
    assert!(receive(&eve)
        .await
        .iter()
        .all(|m| m.from != *t.carol.user_id()));

    // A leave is the one change a member makes.
    let left = t.carol.leave_group("team").await.unwrap();
    assert_eq!(left.told.len(), 2);
    assert!(client::groups(t.carol.store().as_ref()).unwrap().is_empty());
    let got = receive(&t.alice).await;
    assert!(kinds(&got).contains(&"group_leave".to_string()), "{got:?}");
    assert_eq!(members(&t.alice, "team"), ids(&[&t.alice, &t.bob]));
    // Copies of the left group (from bob, who has not read the leave yet)
    // are refused with a nack, unshown.
    // (bob's forged roster: alice, carol, eve)
    let r = t.bob.send_group("team", "bye carol").await.unwrap();
    assert_eq!(r.sent.len(), 3);
    let got = t.carol.receive().await.unwrap();
    assert!(got.messages.is_empty(), "{got:?}");
    assert!(got.problems.is_empty(), "{got:?}");
    assert_eq!(got.refused, 1);
    // bob's resend meets the verified refusal: the copy leaves his outbox.
    t.w.clock.advance(3_600.0);
    let report = t.bob.flush_outbox(0.0).await.unwrap();
    assert_eq!(report.refused, 1, "{report:?}");
    // ...and carol leaves bob's roster (bob's forged one: alice, bob,
    // carol, eve).
    assert_eq!(members(&t.bob, "team"), ids(&[&t.alice, &t.bob, &eve]));
}

#[tokio::test]
async fn an_invite_is_redeemed_once() {
    let w = World::new();
    let relay = w.relay(R1);
    let (alice, _) = w.agent(&relay, "alice");
    let (bob, _) = w.agent(&relay, "bob");
    let (carol, _) = w.agent(&relay, "carol");
    for a in [&alice, &bob, &carol] {
        a.publish(100, false).await.unwrap();
    }
    let code = new_invite(
        alice.store().as_ref(),
        Some("bobby".into()),
        false,
        None,
        w.clock.now(),
    )
    .unwrap()
    .code;
    bob.request_contact(alice.user_id(), &code, Some("alice"))
        .await
        .unwrap();
    let got = alice.invite_watch().await.unwrap();
    assert_eq!(kinds(&got), [client::ACCEPTED]);
    let saved = alice.store().contacts().unwrap();
    assert!(saved
        .iter()
        .any(|c| c.name == "bobby" && &c.id == bob.user_id() && c.verified()));
    // Replayed: silent.
    bob.request_contact(alice.user_id(), &code, None)
        .await
        .unwrap();
    assert!(alice.invite_watch().await.unwrap().is_empty());
    assert!(receive(&alice).await.is_empty());
    // Someone else: consumed, and nobody new is saved.
    carol
        .request_contact(alice.user_id(), &code, None)
        .await
        .unwrap();
    let got = alice.invite_watch().await.unwrap();
    assert_eq!(kinds(&got), [client::REJECTED]);
    assert_eq!(got[0].extra_fields()["reason"], "consumed");
    assert!(alice
        .store()
        .contacts()
        .unwrap()
        .iter()
        .all(|c| &c.id != carol.user_id()));
    let rec = &client::invites(alice.store().as_ref()).unwrap()[0];
    assert_eq!(rec.used_by, [bob.user_id().clone()]);
}

/// A requester whose card claims a saved contact's name is saved under
/// another (`bob-2`): it never replaces the contact.
#[tokio::test]
async fn a_requester_cannot_take_a_saved_name() {
    let w = World::new();
    let relay = w.relay(R1);
    let (alice, _) = w.agent(&relay, "alice");
    let (bob, _) = w.agent(&relay, "bob");
    let (fake, _) = w.agent(&relay, "bob");
    for a in [&alice, &bob, &fake] {
        a.publish(100, false).await.unwrap();
    }
    alice
        .add_contact("bob", bob.user_id().clone(), None)
        .unwrap();
    let code = new_invite(alice.store().as_ref(), None, false, None, w.clock.now())
        .unwrap()
        .code;
    fake.request_contact(alice.user_id(), &code, None)
        .await
        .unwrap();
    let got = alice.invite_watch().await.unwrap();
    assert_eq!(kinds(&got), [client::ACCEPTED]);
    assert_eq!(got[0].extra_fields()["name"], "bob-2");
    let contacts = alice.store().contacts().unwrap();
    let by = |n: &str| contacts.iter().find(|c| c.name == n).unwrap().id.clone();
    assert_eq!(&by("bob"), bob.user_id());
    assert_eq!(&by("bob-2"), fake.user_id());
    // The requester's own --peer name may not take another contact's.
    let (carol, _) = w.agent(&relay, "carol");
    carol.publish(100, false).await.unwrap();
    carol
        .add_contact("alice", bob.user_id().clone(), None)
        .unwrap();
    let e = carol
        .request_contact(alice.user_id(), &code, Some("alice"))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("already exists"), "{e}");
}

/// A roster over the receiver's cap is refused, and the record gives
/// counts (the size, the cap, how many added and removed), not the ids: a
/// roster may hold thousands.
#[tokio::test]
async fn an_over_cap_roster_is_refused_in_counts() {
    let t = team().await;
    client::save_group_cap(t.carol.store().as_ref(), 3).unwrap();
    let (dave, _) = t.w.agent(&t.relay, "dave");
    let (eve, _) = t.w.agent(&t.relay, "eve");
    for a in [&dave, &eve] {
        a.publish(100, false).await.unwrap();
    }
    let now = t.w.clock.now();
    group_add(
        t.alice.store().as_ref(),
        t.alice.user_id(),
        "team",
        &[dave.user_id().clone(), eve.user_id().clone()],
        100,
        now,
    )
    .unwrap();
    t.alice.send_group("team", "welcome both").await.unwrap();
    let got = receive(&t.carol).await;
    assert_eq!(kinds(&got), ["group_update_refused", "text:welcome both"]);
    let f = got[0].extra_fields();
    assert_eq!(f["reason"], "over-cap");
    assert_eq!((f["size"].clone(), f["cap"].clone()), (5.into(), 3.into()));
    assert_eq!(f["added_count"], 2);
    assert_eq!(f["removed_count"], 0);
    assert!(
        !f.contains_key("added") && !f.contains_key("removed"),
        "{f:?}"
    );
    assert_eq!(
        members(&t.carol, "team"),
        ids(&[&t.alice, &t.bob, &t.carol])
    );
}

/// A group deleted here, or left and joined again, comes back with the
/// owner it had: a member's copy bringing it back does not make that
/// member the owner (trust on first use is for groups never held).
#[tokio::test]
async fn a_group_held_before_comes_back_with_its_owner() {
    let t = team().await;
    // carol forgets team; bob's next copy brings it back, still alice's.
    client::delete_group(t.carol.store().as_ref(), "team").unwrap();
    t.bob.send_group("team", "still on?").await.unwrap();
    let got = receive(&t.carol).await;
    assert_eq!(kinds(&got), ["group_joined", "text:still on?"]);
    assert_eq!(got[0].extra_fields()["owner"], t.alice.user_id().as_str());
    alice_removes_bob(&t).await;

    // alice (the owner) leaves and joins again; a copy that adds her back
    // (here bob's, as a Python member's could) makes her the owner again.
    t.alice.leave_group("team").await.unwrap();
    client::join_group(t.alice.store().as_ref(), "team").unwrap();
    forge(&t.bob, &t.gid, &[&t.alice, &t.bob, &t.carol]);
    t.bob.send_group("team", "alice, come back").await.unwrap();
    let got = receive(&t.alice).await;
    let joined = got
        .iter()
        .find(|m| m.kind().as_deref() == Some("group_joined"))
        .expect("joined");
    assert_eq!(joined.extra_fields()["owner"], t.alice.user_id().as_str());
    let g = find_group(t.alice.store().as_ref(), "team").unwrap();
    assert_eq!(g.owner.as_ref(), Some(t.alice.user_id()));
}
