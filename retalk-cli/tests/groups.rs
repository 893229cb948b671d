//! Groups through the real `retalk` binary and the real Python retalk
//! 0.3.0 command line (PyPI venv), on our relay on loopback: mixed
//! rosters, fan-out, replies, add/remove, leave, a member that does not
//! exist, and each roster attack on its own.
//!
//! The roster rule under test (README, `retalk_proto::group`): the owner
//! (creator) adds and removes members; a member's copy may only remove its
//! sender; a non-member's copy never changes a roster held here; every
//! change adopted or refused is a record in `receive`'s output.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::agent030::{ids, Agent};
use common::OurRelay;
use retalk_testkit::python::python_with_retalk;
use serde_json::Value;

fn text_from<'a>(got: &'a [Value], from: &Agent) -> Vec<&'a Value> {
    got.iter()
        .filter(|m| m["from"] == from.id.as_str() && m.get("text").is_some())
        .collect()
}

fn kind<'a>(got: &'a [Value], k: &str) -> Vec<&'a Value> {
    got.iter().filter(|m| m["kind"] == k).collect()
}

/// Everyone saves everyone.
fn introduce(all: &[&Agent]) {
    for a in all {
        for b in all {
            if a.id != b.id {
                a.add(b);
            }
        }
    }
}

#[test]
fn a_mixed_group_fans_out_replies_adds_removes_and_leaves() {
    let python = python_with_retalk("0.3.0");
    let tmp = tempfile::tempdir().unwrap();
    let relay = OurRelay::start(tmp.path());
    let alice = Agent::ours(tmp.path(), "alice", &relay.url);
    let bob = Agent::python(&python, tmp.path(), "bob", &relay.url);
    let carol = Agent::ours(tmp.path(), "carol", &relay.url);
    let dan = Agent::python(&python, tmp.path(), "dan", &relay.url);
    introduce(&[&alice, &bob, &carol, &dan]);

    // Clear errors that change nothing.
    let (_, err) = alice.fails(&["group", "create", "team", "--members", "bob,nobody"], 2);
    assert!(err.contains("unknown member 'nobody'"), "{err}");
    let (_, err) = alice.fails(&["group", "create", &bob.id, "--members", "bob"], 2);
    assert!(err.contains("looks like a fingerprint"), "{err}");
    assert!(alice.groups().is_empty());

    let created: Value =
        serde_json::from_str(&alice.ok(&["group", "create", "team", "--members", "bob,carol"]))
            .unwrap();
    let gid = created["group_id"].as_str().unwrap().to_owned();
    assert_eq!(created["members"], serde_json::json!(ids(&[&bob, &carol])));
    let (_, err) = alice.fails(&["group", "create", "team", "--members", "dan"], 2);
    assert!(err.contains("already exists"), "{err}");

    // Fan-out: one copy each, the receipt counts them.
    let receipt: Value =
        serde_json::from_str(&alice.ok(&["send", "plan: ship friday", "--group", "team"])).unwrap();
    assert_eq!(receipt["group"], "team");
    assert_eq!(receipt["group_id"], gid.as_str());
    assert_eq!(receipt["sent"], 2);
    assert_eq!(receipt["failed"], 0);

    let got = bob.receive();
    let m = text_from(&got, &alice);
    assert_eq!(m.len(), 1, "{got:?}");
    assert_eq!(m[0]["text"], "plan: ship friday");
    assert_eq!(m[0]["group"], "team");
    assert_eq!(m[0]["group_id"], gid.as_str());

    let got = carol.receive();
    let m = text_from(&got, &alice);
    assert_eq!(m.len(), 1, "{got:?}");
    assert_eq!(m[0]["group"], "team");
    assert_eq!(m[0]["group_id"], gid.as_str());
    assert!(m[0].get("mid").is_none(), "{got:?}");
    let joined = kind(&got, "group_joined");
    assert_eq!(joined.len(), 1, "{got:?}");
    assert_eq!(joined[0]["owner"], alice.id.as_str());
    assert_eq!(carol.members("team"), ids(&[&alice, &bob]));

    // A Python member replies to the group: alice and carol get it.
    let reply: Value =
        serde_json::from_str(&bob.ok(&["send", "bob: on it", "--group", "team"])).unwrap();
    assert_eq!(reply["sent"], 2, "{reply}");
    for a in [&alice, &carol] {
        let got = a.receive();
        let m = text_from(&got, &bob);
        assert_eq!(m.len(), 1, "{}: {got:?}", a.name);
        assert_eq!(m[0]["text"], "bob: on it");
        assert_eq!(m[0]["group_id"], gid.as_str());
        assert!(kind(&got, "group_update_refused").is_empty(), "{got:?}");
    }
    // Ours replies too; the owner's roster is unchanged by the copies.
    carol.ok(&["send", "carol: reviewing", "--group", "team"]);
    assert_eq!(
        text_from(&bob.receive(), &carol)[0]["text"],
        "carol: reviewing"
    );
    assert_eq!(text_from(&alice.receive(), &carol).len(), 1);
    assert_eq!(alice.members("team"), ids(&[&bob, &carol]));

    // The owner adds a Python member: everyone adopts it from the copy.
    alice.ok(&["group", "add", "team", "dan"]);
    let r: Value =
        serde_json::from_str(&alice.ok(&["send", "welcome dan", "--group", "team"])).unwrap();
    assert_eq!(r["sent"], 3);
    assert_eq!(text_from(&dan.receive(), &alice)[0]["text"], "welcome dan");
    let got = carol.receive();
    let upd = kind(&got, "group_update");
    assert_eq!(upd.len(), 1, "{got:?}");
    assert_eq!(upd[0]["from"], alice.id.as_str());
    assert_eq!(upd[0]["added"], serde_json::json!([dan.id]));
    assert_eq!(carol.members("team"), ids(&[&alice, &bob, &dan]));
    bob.receive();
    // dan (Python) replies; the group reaches everyone.
    let r: Value = serde_json::from_str(&dan.ok(&["send", "dan here", "--group", "team"])).unwrap();
    assert_eq!(r["sent"], 3, "{r}");
    assert_eq!(text_from(&carol.receive(), &dan).len(), 1);

    // The owner removes bob.
    alice.ok(&["group", "remove", "team", "bob"]);
    let r: Value =
        serde_json::from_str(&alice.ok(&["send", "bob is off", "--group", "team"])).unwrap();
    assert_eq!(r["sent"], 2);
    let got = carol.receive();
    let upd = kind(&got, "group_update");
    assert_eq!(upd[0]["removed"], serde_json::json!([bob.id]), "{got:?}");
    assert_eq!(carol.members("team"), ids(&[&alice, &dan]));

    // carol leaves: alice drops her, and carol's later copies go nowhere.
    carol.ok(&["group", "leave", "team"]);
    assert!(carol.groups().is_empty());
    let got = alice.receive();
    let left = kind(&got, "group_leave");
    assert_eq!(left.len(), 1, "{got:?}");
    assert_eq!(left[0]["from"], carol.id.as_str());
    assert_eq!(left[0]["group_id"], gid.as_str());
    assert_eq!(alice.members("team"), ids(&[&dan]));
    // dan (Python) applies carol's group_leave: its copies skip her.
    let got = dan.receive();
    assert_eq!(kind(&got, "group_leave").len(), 1, "{got:?}");
    let r: Value = serde_json::from_str(&dan.ok(&["send", "just us", "--group", "team"])).unwrap();
    assert_eq!(r["sent"], 1, "{r}");
    // bob (Python, removed, never told) still has carol: his copy to her
    // is refused with a nack there (as Python does), unshown, and the group
    // does not come back; bob's client verifies the refusal and drops
    // carol from its roster.
    bob.receive();
    let r: Value =
        serde_json::from_str(&bob.ok(&["send", "still there?", "--group", "team"])).unwrap();
    assert_eq!(r["sent"], 3, "{r}");
    assert!(carol.receive().is_empty());
    bob.ok(&["sync"]);
    let r: Value = serde_json::from_str(&bob.ok(&["send", "anyone?", "--group", "team"])).unwrap();
    assert_eq!(r["sent"], 2, "{r}");
    assert!(carol.groups().is_empty());
    // join clears the tombstone only.
    carol.ok(&["group", "join", "team"]);
    carol.fails(&["group", "join", "team"], 2);
}

#[test]
fn a_member_that_does_not_exist_fails_alone_with_exit_2() {
    let tmp = tempfile::tempdir().unwrap();
    let relay = OurRelay::start(tmp.path());
    let alice = Agent::ours(tmp.path(), "alice", &relay.url);
    let carol = Agent::ours(tmp.path(), "carol", &relay.url);
    introduce(&[&alice, &carol]);
    let ghost = "0123456789abcdef0123456789abcdef";
    alice.ok(&[
        "group",
        "create",
        "team",
        "--members",
        &format!("carol,{ghost}"),
    ]);
    let (out, err) = alice.fails(&["send", "hello", "--group", "team"], 2);
    let r: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["sent"], 1, "{out}");
    assert_eq!(r["failed"], 1);
    assert!(err.contains(ghost), "{err}");
    assert_eq!(text_from(&carol.receive(), &alice)[0]["text"], "hello");
}

#[test]
fn the_cap_from_the_relays_info_refuses_a_group_too_large() {
    let tmp = tempfile::tempdir().unwrap();
    let relay = OurRelay::start_with(tmp.path(), |c| c.max_group_size = 2);
    let alice = Agent::ours(tmp.path(), "alice", &relay.url);
    let bob = Agent::ours(tmp.path(), "bob", &relay.url);
    let carol = Agent::ours(tmp.path(), "carol", &relay.url);
    introduce(&[&alice, &bob, &carol]);
    let (_, err) = alice.fails(&["group", "create", "team", "--members", "bob,carol"], 2);
    assert!(
        err.contains("group too large: 3 users, and this relay allows 2"),
        "{err}"
    );
    assert!(alice.groups().is_empty());
    alice.ok(&["group", "create", "team", "--members", "bob"]);
    alice.fails(&["group", "add", "team", "carol"], 2);
    assert_eq!(alice.members("team"), ids(&[&bob]));
}

/// The three of the attacks share this: alice (ours) owns `team` with bob
/// (Python) and carol (ours); carol has learned the group.
struct Team {
    _tmp: tempfile::TempDir,
    _relay: OurRelay,
    python: std::path::PathBuf,
    alice: Agent,
    bob: Agent,
    carol: Agent,
    gid: String,
}

fn team() -> Team {
    let python = python_with_retalk("0.3.0");
    let tmp = tempfile::tempdir().unwrap();
    let relay = OurRelay::start(tmp.path());
    let alice = Agent::ours(tmp.path(), "alice", &relay.url);
    let bob = Agent::python(&python, tmp.path(), "bob", &relay.url);
    let carol = Agent::ours(tmp.path(), "carol", &relay.url);
    introduce(&[&alice, &bob, &carol]);
    let created: Value =
        serde_json::from_str(&alice.ok(&["group", "create", "team", "--members", "bob,carol"]))
            .unwrap();
    let gid = created["group_id"].as_str().unwrap().to_owned();
    alice.ok(&["send", "kickoff", "--group", "team"]);
    carol.receive();
    bob.receive();
    assert_eq!(carol.members("team"), ids(&[&alice, &bob]));
    let tmp_path = tmp.path().to_path_buf();
    let _ = tmp_path;
    Team {
        _tmp: tmp,
        _relay: relay,
        python,
        alice,
        bob,
        carol,
        gid,
    }
}

/// Writes a roster into a Python 0.3.0 user's own store (its `groups`
/// table, `store.py`), as a modified client could: its next `send
/// --group` carries it.
fn forge_python_roster(who: &Agent, gid: &str, name: &str, members: &[&str]) {
    let db = who.home.join(&who.name).join("store.db");
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS groups(gid TEXT PRIMARY KEY, name TEXT, members TEXT, ts REAL)",
    )
    .unwrap();
    conn.execute(
        "INSERT OR REPLACE INTO groups(gid, name, members, ts) VALUES(?1, ?2, ?3, 0)",
        rusqlite::params![gid, name, serde_json::to_string(members).unwrap()],
    )
    .unwrap();
}

#[test]
fn a_stranger_who_knows_the_group_id_cannot_join_or_change_it() {
    let t = team();
    let tmp = tempfile::tempdir().unwrap();
    let mallory = Agent::python(&t.python, tmp.path(), "mallory", &t.alice.relay);
    mallory.add(&t.carol);
    // mallory claims a roster of everyone plus itself.
    forge_python_roster(
        &mallory,
        &t.gid,
        "team",
        &[&t.alice.id, &t.bob.id, &t.carol.id],
    );
    let r: Value =
        serde_json::from_str(&mallory.ok(&["send", "I'm in the team now", "--group", "team"]))
            .unwrap();
    assert!(r["sent"].as_u64().unwrap() >= 1, "{r}");
    let got = t.carol.receive();
    let m = text_from(&got, &mallory);
    assert_eq!(m.len(), 1, "{got:?}");
    // Shown, marked as not from a member; the roster is unchanged.
    assert_eq!(m[0]["member"], false, "{got:?}");
    let refused = kind(&got, "group_update_refused");
    assert_eq!(refused.len(), 1, "{got:?}");
    assert_eq!(refused[0]["reason"], "not-member");
    assert_eq!(refused[0]["added"], serde_json::json!([mallory.id]));
    assert_eq!(t.carol.members("team"), ids(&[&t.alice, &t.bob]));
    // carol's next copies do not go to mallory.
    let r: Value =
        serde_json::from_str(&t.carol.ok(&["send", "who was that?", "--group", "team"])).unwrap();
    assert_eq!(r["sent"], 2);
    assert!(text_from(&mallory.receive(), &t.carol).is_empty());
}

#[test]
fn a_removed_member_cannot_rewrite_the_roster() {
    let t = team();
    t.alice.ok(&["group", "remove", "team", "bob"]);
    t.alice.ok(&["send", "bob is out", "--group", "team"]);
    t.carol.receive();
    assert_eq!(t.carol.members("team"), ids(&[&t.alice]));
    // bob (Python) still holds the old roster and writes to the group.
    let r: Value =
        serde_json::from_str(&t.bob.ok(&["send", "I'm still here", "--group", "team"])).unwrap();
    assert_eq!(r["sent"], 2, "{r}");
    let got = t.carol.receive();
    let m = text_from(&got, &t.bob);
    assert_eq!(m.len(), 1, "{got:?}");
    assert_eq!(m[0]["member"], false);
    let refused = kind(&got, "group_update_refused");
    assert_eq!(refused.len(), 1, "{got:?}");
    assert_eq!(refused[0]["reason"], "not-member");
    assert_eq!(refused[0]["added"], serde_json::json!([t.bob.id]));
    assert_eq!(t.carol.members("team"), ids(&[&t.alice]));
    let got = t.alice.receive();
    assert_eq!(kind(&got, "group_update_refused").len(), 1, "{got:?}");
    assert_eq!(t.alice.members("team"), ids(&[&t.carol]));
}

#[test]
fn a_member_cannot_add_an_outsider() {
    let t = team();
    let tmp = tempfile::tempdir().unwrap();
    let eve = Agent::python(&t.python, tmp.path(), "eve", &t.alice.relay);
    t.bob.add(&eve);
    // bob (Python, not the owner) adds eve and writes to the group.
    t.bob.ok(&["group", "add", "team", "eve"]);
    let r: Value =
        serde_json::from_str(&t.bob.ok(&["send", "meet eve", "--group", "team"])).unwrap();
    assert_eq!(r["sent"], 3, "{r}");
    for a in [&t.alice, &t.carol] {
        let got = a.receive();
        let m = text_from(&got, &t.bob);
        assert_eq!(m.len(), 1, "{}: {got:?}", a.name);
        assert!(m[0].get("member").is_none(), "bob is a member: {got:?}");
        let refused = kind(&got, "group_update_refused");
        assert_eq!(refused.len(), 1, "{}: {got:?}", a.name);
        assert_eq!(refused[0]["reason"], "not-owner");
        assert_eq!(refused[0]["added"], serde_json::json!([eve.id]));
    }
    assert_eq!(t.carol.members("team"), ids(&[&t.alice, &t.bob]));
    // Our own members may not do it either: a clear error, nothing changed.
    t.carol.add(&eve);
    let (_, err) = t.carol.fails(&["group", "add", "team", "eve"], 2);
    assert!(err.contains("only the owner"), "{err}");
    let (_, err) = t.carol.fails(&["group", "remove", "team", "bob"], 2);
    assert!(err.contains("only the owner"), "{err}");
    // carol's copies never reach eve.
    let r: Value =
        serde_json::from_str(&t.carol.ok(&["send", "not for eve", "--group", "team"])).unwrap();
    assert_eq!(r["sent"], 2);
    assert!(text_from(&eve.receive(), &t.carol).is_empty());
}

/// A Python 0.3.0 folder's groups, tombstones and invite codes open with
/// ours: the group has no recorded owner, so this user may change it, and
/// its copies reach the members.
#[test]
fn a_python_folders_groups_open_with_ours() {
    let python = python_with_retalk("0.3.0");
    let tmp = tempfile::tempdir().unwrap();
    let relay = OurRelay::start(tmp.path());
    let mut dave = Agent::python(&python, tmp.path(), "dave", &relay.url);
    let bob = Agent::ours(tmp.path(), "bob", &relay.url);
    let carol = Agent::ours(tmp.path(), "carol", &relay.url);
    introduce(&[&dave, &bob, &carol]);
    let created: Value =
        serde_json::from_str(&dave.ok(&["group", "create", "team", "--members", "bob"])).unwrap();
    dave.ok(&["group", "create", "old", "--members", "carol"]);
    dave.ok(&["group", "leave", "old"]);
    let code: Value = serde_json::from_str(&dave.ok(&["invite", "new", "--permanent"])).unwrap();
    // A name Python kept raw (it checks none): shown escaped by ours.
    let raw = "evil\nteam\t0123\t9 member(s)";
    forge_python_roster(&dave, &"d1".repeat(16), raw, &[&dave.id, &bob.id]);

    // ...and a contact name (Python's `peers` table checks none).
    let db = dave.home.join(&dave.name).join("store.db");
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute(
            "UPDATE peers SET name = ?1 WHERE fingerprint = ?2",
            rusqlite::params!["bo\nb\tfake", bob.id],
        )
        .unwrap();

    // dave now runs our binary on the same folder.
    dave.program = std::path::PathBuf::from(env!("CARGO_BIN_EXE_retalk"));
    dave.path = "/usr/bin:/bin".into();
    dave.python = false;
    let list = dave.ok(&["group", "list"]);
    assert_eq!(list.lines().count(), 2, "{list}");
    assert!(
        list.contains(&format!(
            "evil\\nteam\\t0123\\t9 member(s)\t{}",
            "d1".repeat(16)
        )),
        "{list}"
    );
    dave.ok(&["group", "delete", &"d1".repeat(16)]);
    let contacts = dave.ok(&["contacts"]);
    assert!(
        contacts.contains(&format!("bo\\nb\\tfake\t{}\t", bob.id)),
        "{contacts}"
    );
    let groups = dave.groups();
    assert_eq!(groups.len(), 1, "{groups:?}");
    assert_eq!(groups[0]["group_id"], created["group_id"]);
    assert_eq!(groups[0]["owner"], Value::Null);
    assert_eq!(dave.members("team"), ids(&[&bob]));
    let invites = common::agent030::lines(&dave.ok(&["invite", "list", "--json"]));
    assert_eq!(invites[0]["code"], code["code"]);
    // The tombstone came along: join clears it.
    dave.ok(&["group", "join", "old"]);
    // Ownerless: dave may add; the copies carry the roster.
    dave.ok(&["group", "add", "team", "carol"]);
    let r: Value = serde_json::from_str(&dave.ok(&["send", "hi all", "--group", "team"])).unwrap();
    assert_eq!(r["sent"], 2);
    for a in [&bob, &carol] {
        let got = a.receive();
        assert_eq!(text_from(&got, &dave)[0]["text"], "hi all", "{got:?}");
        assert_eq!(a.members("team"), {
            let mut v = ids(&[&bob, &carol, &dave]);
            v.retain(|m| *m != a.id);
            v
        });
    }
}

/// A 0.0.1 identity in a group sees the copies as text and each roster
/// record as a bracketed note (or 0.3.0's JSON line with --json).
#[test]
fn a_001_identity_sees_copies_and_roster_records() {
    use common::{init, Cli, Ours};
    let tmp = tempfile::tempdir().unwrap();
    let relay = OurRelay::start(tmp.path());
    let alice = Agent::ours(tmp.path(), "alice", &relay.url);
    let bob = Agent::ours(tmp.path(), "bob", &relay.url);
    let old = Cli::ours(tmp.path());
    let old_id = init(&old, "old", "oldie", &relay.url);
    // 0.0.1's init is offline: its first receive publishes the keys.
    assert_eq!(old.ok(&["receive", "-s", "old"]), "");
    alice.ok(&["add", &old_id, "--peer", "oldie"]);
    alice.add(&bob);
    alice.ok(&["group", "create", "team", "--members", "oldie,bob"]);
    alice.ok(&["send", "hello team", "--group", "team"]);
    let out = old.ok(&["receive", "-s", "old"]);
    assert_eq!(
        out,
        format!(
            "~alice: [group_joined team: added {}]\n~alice: hello team\n",
            ids(&[&alice, &bob])
                .into_iter()
                .chain([old_id.clone()])
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect::<Vec<_>>()
                .join(", ")
        )
    );
    alice.ok(&["group", "remove", "team", "bob"]);
    alice.ok(&["send", "bob is out", "--group", "team"]);
    let lines = common::agent030::lines(&old.ok(&["receive", "--json", "-s", "old"]));
    assert_eq!(lines[0]["kind"], "group_update", "{lines:?}");
    assert_eq!(lines[0]["removed"], serde_json::json!([bob.id]));
    assert_eq!(lines[1]["text"], "bob is out");
}

/// A group learned under a name already in use here gets `-2`, `-3` (as
/// 0.3.0 does); the local name then stays the user's own.
#[test]
fn a_learned_group_whose_name_is_taken_is_suffixed() {
    let tmp = tempfile::tempdir().unwrap();
    let relay = OurRelay::start(tmp.path());
    let alice = Agent::ours(tmp.path(), "alice", &relay.url);
    let bob = Agent::ours(tmp.path(), "bob", &relay.url);
    let carol = Agent::ours(tmp.path(), "carol", &relay.url);
    introduce(&[&alice, &bob, &carol]);
    carol.ok(&["group", "create", "team", "--members", "bob"]);
    alice.ok(&["group", "create", "team", "--members", "carol"]);
    alice.ok(&["send", "one", "--group", "team"]);
    bob.ok(&["group", "create", "team", "--members", "carol"]);
    bob.ok(&["send", "two", "--group", "team"]);
    let got = carol.receive();
    let names: Vec<&str> = got
        .iter()
        .filter(|m| m.get("text").is_some())
        .map(|m| m["group"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["team-2", "team-3"], "{got:?}");
    let mut listed: Vec<String> = carol
        .groups()
        .iter()
        .map(|g| g["name"].as_str().unwrap().to_owned())
        .collect();
    listed.sort();
    assert_eq!(listed, ["team", "team-2", "team-3"]);
    // As 0.3.0 lists them: a learned roster as it came (carol in it), a
    // created one without its creator.
    for g in carol.groups() {
        let has_me = g["members"]
            .as_array()
            .unwrap()
            .contains(&carol.id.as_str().into());
        assert_eq!(has_me, g["name"] != "team", "{g}");
    }
    let members = carol.ok(&["group", "members", "team-2"]);
    assert!(members.contains(&format!("\t{}", carol.id)), "{members}");
    let out = carol.run(&["group", "rename", "team-2", "alices"]);
    assert!(out.status.success());
    // Not promised to stay local: our copies carry our label.
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("your copies carry this name"), "{err}");
    alice.ok(&["send", "three", "--group", "team"]);
    let got = carol.receive();
    assert_eq!(text_from(&got, &alice)[0]["group"], "alices");
    let (_, err) = carol.fails(&["group", "rename", "alices", "team"], 2);
    assert!(err.contains("already exists"), "{err}");
}

/// `send --group --save` and `receive --save` keep the thread for
/// `history --group` on both sides.
#[test]
fn saved_group_messages_show_in_history() {
    let tmp = tempfile::tempdir().unwrap();
    let relay = OurRelay::start(tmp.path());
    let alice = Agent::ours(tmp.path(), "alice", &relay.url);
    let bob = Agent::ours(tmp.path(), "bob", &relay.url);
    introduce(&[&alice, &bob]);
    alice.ok(&["group", "create", "team", "--members", "bob"]);
    alice.ok(&["send", "saved one", "--group", "team", "--save"]);
    bob.ok(&["receive", "--all", "--save"]);
    bob.ok(&["send", "saved reply", "--group", "team", "--save"]);
    alice.ok(&["receive", "--all", "--save"]);
    for a in [&alice, &bob] {
        let h = common::agent030::lines(&a.ok(&["history", "--group", "team"]));
        let texts: Vec<&str> = h.iter().map(|m| m["text"].as_str().unwrap()).collect();
        assert_eq!(texts, ["saved one", "saved reply"], "{}: {h:?}", a.name);
        assert!(h.iter().all(|m| m["group"] == "team"), "{h:?}");
    }
}

/// What one command did, with the values that differ by nature replaced.
#[derive(Debug, PartialEq)]
struct Step {
    code: Option<i32>,
    stdout: String,
}

/// The same group and invite commands through Python 0.3.0's CLI and ours
/// print the same (group ids, codes and message ids masked), but for what
/// ours adds on purpose: `owner` in `group list --json`.
#[test]
fn group_and_invite_commands_print_as_python_030() {
    let python = python_with_retalk("0.3.0");
    let tmp = tempfile::tempdir().unwrap();
    let relay = OurRelay::start(tmp.path());
    let bob = Agent::ours(tmp.path(), "bob", &relay.url);
    let carol = Agent::ours(tmp.path(), "carol", &relay.url);
    let script = |me: &Agent| -> Vec<(&'static str, Step)> {
        me.add(&bob);
        me.add(&carol);
        let mut masks: Vec<(String, String)> = vec![
            (bob.id.clone(), "<bob>".into()),
            (carol.id.clone(), "<carol>".into()),
        ];
        let mut steps = Vec::new();
        let mut run = |label: &'static str, args: &[&str], masks: &mut Vec<(String, String)>| {
            let out = me.run(args);
            let mut stdout = String::from_utf8(out.stdout).unwrap();
            for line in stdout.clone().lines() {
                if let Ok(v) = serde_json::from_str::<Value>(line) {
                    for (k, name) in [("group_id", "<gid>"), ("code", "<code>"), ("id", "<id>")] {
                        if let Some(x) = v.get(k).and_then(Value::as_str) {
                            masks.push((x.to_owned(), name.into()));
                        }
                    }
                    if let Some(e) = v.get("expires").filter(|e| e.is_number()) {
                        masks.push((e.to_string(), "<expires>".into()));
                    }
                }
            }
            for (v, name) in masks.iter() {
                stdout = stdout.replace(v, name);
            }
            steps.push((
                label,
                Step {
                    code: out.status.code(),
                    stdout,
                },
            ));
        };
        run(
            "create",
            &["group", "create", "team", "--members", "carol,bob"],
            &mut masks,
        );
        run(
            "create again",
            &["group", "create", "team", "--members", "bob"],
            &mut masks,
        );
        run(
            "create, unknown",
            &["group", "create", "x", "--members", "nobody"],
            &mut masks,
        );
        run(
            "create, id name",
            &["group", "create", &bob.id, "--members", "bob"],
            &mut masks,
        );
        run("list", &["group", "list"], &mut masks);
        run("members", &["group", "members", "team"], &mut masks);
        run("send", &["send", "hello", "--group", "team"], &mut masks);
        run(
            "send, unknown",
            &["send", "hello", "--group", "nope"],
            &mut masks,
        );
        run("remove", &["group", "remove", "team", "bob"], &mut masks);
        run(
            "remove again",
            &["group", "remove", "team", "bob"],
            &mut masks,
        );
        run("add", &["group", "add", "team", "bob"], &mut masks);
        run("rename", &["group", "rename", "team", "crew"], &mut masks);
        run(
            "members, renamed",
            &["group", "members", "crew"],
            &mut masks,
        );
        run("join, not left", &["group", "join", "crew"], &mut masks);
        run("delete", &["group", "delete", "crew"], &mut masks);
        run("list, empty", &["group", "list"], &mut masks);
        run(
            "invite",
            &["invite", "new", "--permanent", "--peer", "pal"],
            &mut masks,
        );
        run("invite list", &["invite", "list"], &mut masks);
        run(
            "invite list --json",
            &["invite", "list", "--json"],
            &mut masks,
        );
        run("revoke, unknown", &["invite", "revoke", "nope"], &mut masks);
        run(
            "request, bad id",
            &["request", "xyz", "--code", "c"],
            &mut masks,
        );
        steps
    };
    let py = Agent::python(&python, tmp.path(), "pyuser", &relay.url);
    let rs = Agent::ours(tmp.path(), "rsuser", &relay.url);
    let theirs = script(&py);
    let ours = script(&rs);
    assert_eq!(theirs.len(), ours.len());
    for ((label, want), (_, got)) in theirs.iter().zip(&ours) {
        let mut got = got.stdout.clone();
        if *label == "invite list --json" {
            // Floats of different mints: compare the keys and the rest.
            let strip = |s: &str| {
                let mut v: Value = serde_json::from_str(s).unwrap();
                v["created"] = Value::Null;
                v
            };
            assert_eq!(strip(&got), strip(&want.stdout), "{label}");
            continue;
        }
        got = got.replace(", \"owner\": null", "");
        assert_eq!(got, want.stdout, "step {label}");
        assert_eq!(
            ours.iter().find(|(l, _)| l == label).unwrap().1.code,
            want.code,
            "exit of {label}"
        );
    }
    let by = |l: &str| &theirs.iter().find(|(x, _)| *x == l).unwrap().1;
    let mut members = [("<bob>", &bob.id), ("<carol>", &carol.id)];
    members.sort_by(|a, b| a.1.cmp(b.1));
    assert_eq!(
        by("create").stdout,
        format!(
            "{{\"group_id\": \"<gid>\", \"name\": \"team\", \"members\": [\"{}\", \"{}\"]}}\n",
            members[0].0, members[1].0
        )
    );
    assert_eq!(
        by("members").stdout,
        format!(
            "{}\t{}\n{}\t{}\n",
            &members[0].0[1..members[0].0.len() - 1],
            members[0].0,
            &members[1].0[1..members[1].0.len() - 1],
            members[1].0
        )
    );
    assert_eq!(by("create again").code, Some(2));
    assert_eq!(by("send").stdout, "{\"id\": \"<id>\", \"group\": \"team\", \"group_id\": \"<gid>\", \"sent\": 2, \"failed\": 0}\n");
    assert_eq!(by("list").stdout, "team\t<gid>\t2 member(s)\n");
    assert_eq!(
        by("invite list").stdout,
        "<code>\tpermanent\tactive\tuses=0\tpeer=pal\n"
    );
}

/// A group name copied from a peer never hijacks another group: evil names
/// its group after team's id, and `send --group <team id>` still goes to
/// team; names that are id-like, start with '-' or hold control
/// characters are replaced by the first 8 characters of the group's id
/// (suffixed when taken), never stored raw.
#[test]
fn a_peers_group_name_cannot_pass_for_an_id_or_forge_rows() {
    let t = team();
    let tmp = tempfile::tempdir().unwrap();
    let evil = Agent::python(&t.python, tmp.path(), "evil", &t.alice.relay);
    let outsider = Agent::ours(tmp.path(), "outsider", &t.alice.relay);
    evil.add(&t.carol);
    t.carol.add(&evil);
    let g1 = "e1".repeat(16);
    let g2 = "e2".repeat(16);
    let forged = "-x\nteam\tffffffffffffffffffffffffffffffff\t9 member(s)";
    forge_python_roster(&evil, &g1, &t.gid, &[&evil.id, &t.carol.id, &outsider.id]);
    forge_python_roster(&evil, &g2, forged, &[&evil.id, &t.carol.id]);
    evil.ok(&["send", "one", &format!("--group={}", t.gid)]);
    evil.ok(&["send", "two", &format!("--group={forged}")]);
    let got = t.carol.receive();
    let names: Vec<&str> = kind(&got, "group_joined")
        .iter()
        .map(|m| m["group"].as_str().unwrap())
        .collect();
    assert_eq!(names, [&g1[..8], &g2[..8]], "{got:?}");
    let list = t.carol.ok(&["group", "list"]);
    assert_eq!(list.lines().count(), 3, "{list}");
    assert!(!list.lines().any(|l| l.starts_with(&t.gid)), "{list}");
    // The team's id means the team.
    let r: Value =
        serde_json::from_str(&t.carol.ok(&["send", "for the team", "--group", &t.gid])).unwrap();
    assert_eq!(r["group_id"], t.gid.as_str(), "{r}");
    assert_eq!(r["group"], "team", "{r}");
    assert!(text_from(&outsider.receive(), &t.carol).is_empty());
    assert_eq!(text_from(&t.alice.receive(), &t.carol).len(), 1);
}

/// A group left here is not "unknown": naming it says how to rejoin.
#[test]
fn a_left_group_says_how_to_rejoin() {
    let tmp = tempfile::tempdir().unwrap();
    let relay = OurRelay::start(tmp.path());
    let alice = Agent::ours(tmp.path(), "alice", &relay.url);
    let bob = Agent::ours(tmp.path(), "bob", &relay.url);
    introduce(&[&alice, &bob]);
    alice.ok(&["group", "create", "crew", "--members", "bob"]);
    alice.ok(&["group", "leave", "crew"]);
    for args in [
        &["send", "hi", "--group", "crew"][..],
        &["group", "members", "crew"][..],
    ] {
        let (out, err) = alice.fails(args, 2);
        assert!(out.is_empty(), "{out}");
        assert!(
            err.contains("you left 'crew'") && err.contains("retalk group join crew"),
            "{err}"
        );
    }
    let (_, err) = alice.fails(&["send", "hi", "--group", "nope"], 2);
    assert!(err.contains("no group 'nope'"), "{err}");
}

/// A stranger's group whose id is a saved contact's fingerprint (both are
/// 32 hex characters) is refused as malformed: not adopted, and its text
/// shows, and is saved, as the stranger's direct message, so it cannot
/// pass for that contact's conversation (`show --web` once listed one
/// entry merging mallory's history with the stranger's text).
#[test]
fn a_group_id_equal_to_a_contacts_id_is_refused_as_malformed() {
    let python = python_with_retalk("0.3.0");
    let tmp = tempfile::tempdir().unwrap();
    let relay = OurRelay::start(tmp.path());
    let alice = Agent::ours(tmp.path(), "alice", &relay.url);
    let mallory = Agent::ours(tmp.path(), "mallory", &relay.url);
    let stranger = Agent::python(&python, tmp.path(), "stranger", &relay.url);
    introduce(&[&alice, &mallory]);
    stranger.add(&alice);
    for (gid, name) in [(&mallory.id, "mallory"), (&alice.id, "me")] {
        forge_python_roster(&stranger, gid, name, &[&stranger.id, &alice.id]);
        stranger.ok(&["send", &format!("hi from {name}"), "--group", name]);
    }
    let got = alice.ok(&["receive", "--all", "--save"]);
    let got = common::agent030::lines(&got);
    let texts = text_from(&got, &stranger);
    assert_eq!(texts.len(), 2, "{got:?}");
    for t in &texts {
        assert!(
            t.get("group").is_none() && t.get("group_id").is_none(),
            "{t}"
        );
    }
    let refused = kind(&got, "group_update_refused");
    assert_eq!(refused.len(), 2, "{got:?}");
    assert!(
        refused.iter().all(|r| r["reason"] == "malformed"),
        "{got:?}"
    );
    assert!(kind(&got, "group_joined").is_empty(), "{got:?}");
    assert!(alice.groups().is_empty(), "{:?}", alice.groups());
    // Saved as the stranger's direct messages: mallory's thread holds none.
    let mallory_thread = alice.ok(&["show", "mallory"]);
    assert!(!mallory_thread.contains("hi from"), "{mallory_thread}");
}
