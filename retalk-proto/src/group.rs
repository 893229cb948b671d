//! Groups, sans IO: group ids, rosters, who may change them, local names
//! and the size cap.
//!
//! A group is client-side fan-out (Python 0.3.0, `cli.py@HEAD:1349-1379`,
//! `user.py@HEAD:953-976`): each send encrypts one pairwise copy per member,
//! and every copy carries the sender's roster
//! (`group: {"id", "name", "members"}`, members sorted, sender included).
//!
//! # The roster rule
//!
//! Python 0.3.0 adopts whatever roster a group copy carries ("last writer
//! wins", `cli.py@HEAD:459-485`, CLIENT-030 defect 25): anyone who knows a
//! group id, a stranger or a former member, can add an eavesdropper to
//! every member's roster. We adopt a change only under this rule
//! ([`judge`]):
//!
//! - **The owner** of a group is its creator. A group first learned from
//!   an incoming copy is owned by the `owner` that copy names when that is
//!   one of its members other than the receiver (our clients send it;
//!   Python ignores the field), else by the copy's sender: trust on first
//!   use. A copy naming the receiver as owner is not believed (we know the
//!   groups we created; a stranger would claim it to pass for trusted), so
//!   its sender owns the group.
//! - **Only the owner's copies may add or remove others.**
//! - **A member's copy may only remove its own sender** (a leave), as a
//!   `group_leave` does.
//! - **A non-member's copy** (a stranger, a former member) never changes
//!   the roster; its text is still shown, marked as not from a member.
//! - Every adopted change is reported ([`Verdict::Adopt`]), every refused
//!   one too ([`Verdict::Refuse`]), so the receiver sees who changed what.
//! - A roster over the cap is never adopted; a tombstoned (left) group is
//!   never brought back by a copy (Python: `left_groups`, the copy nacked).

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use crate::ids::UserId;

/// The roster cap when no relay ever answered `GET /info` (Python
/// `cli.py@HEAD:439-456`: `max_group_size` defaults to 100).
pub const DEFAULT_GROUP_CAP: usize = 100;

/// Why a group operation or a group field is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GroupError {
    #[error("not a group id (32 lowercase hex characters): {0:?}")]
    InvalidId(String),
    #[error("group name looks like a fingerprint — pick a human name")]
    NameLooksLikeId,
    #[error("a group name cannot be empty")]
    EmptyName,
    #[error("a group name is at most {MAX_NAME_CHARS} characters")]
    NameTooLong,
    #[error("a group name cannot start with '-' (it would read as an option)")]
    NameStartsWithDash,
    #[error("a group name cannot hold control characters or invisible ones (newlines, tabs, escapes, bidi controls)")]
    NameHasControl,
    #[error("a group named '{0}' already exists")]
    NameTaken(String),
    #[error(
        "group too large: {size} users, and this relay allows {cap} (its GET /info max_group_size)"
    )]
    TooLarge { size: usize, cap: usize },
    #[error("a group needs at least one member: --members NAME_OR_ID,...")]
    NoMembers,
    #[error("no group '{0}' — see `retalk group list`")]
    UnknownGroup(String),
    /// The group was left here (a tombstone): not held, but known.
    #[error("you left '{0}' — `retalk group join {0}` to rejoin (it comes back with a member's next copy that lists you)")]
    LeftGroup(String),
    #[error("'{0}' is not a group you left — see `retalk group list`")]
    NotLeft(String),
    #[error("none of those are members — see `retalk group members {0}`")]
    NoneAreMembers(String),
    /// Only the owner adds or removes others (see the module docs).
    #[error(
        "only the owner of '{group}' ({owner}) may add or remove members; members may only leave"
    )]
    NotOwner { group: String, owner: String },
}

/// A group id: `uuid4().hex` in Python, 32 lowercase hex characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupId(String);

impl GroupId {
    /// Parses a group id; the same shape as a user id (Python checks
    /// rosters with `ID_RE`, `cli.py@HEAD:39`).
    pub fn parse(s: &str) -> Result<Self, GroupError> {
        if s.len() == 32 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            Ok(Self(s.to_owned()))
        } else {
            Err(GroupError::InvalidId(s.chars().take(80).collect()))
        }
    }

    /// A fresh random id, from 16 random bytes (uuid4's entropy is 122 bits).
    pub fn random() -> Self {
        Self(hex::encode(rand::random::<[u8; 16]>()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for GroupId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The group field of a `msg` copy, as parsed from the envelope.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupTag {
    pub id: GroupId,
    /// The sender's label for the group (receivers keep their own).
    pub name: String,
    /// Members that are user ids; anything else is dropped, as Python does.
    pub members: BTreeSet<UserId>,
    /// The owner the sender names (our clients only).
    pub owner: Option<UserId>,
    /// `members` was missing or not a list: the copy says nothing about
    /// the roster, and [`judge`] refuses it as [`RefuseReason::Malformed`].
    pub malformed: bool,
}

impl GroupTag {
    /// Reads a `group` object (`{"id","name","members"[,"owner"]}`); None
    /// when it has no valid id.
    pub fn from_json(v: &Value) -> Option<GroupTag> {
        let id = GroupId::parse(v.get("id")?.as_str()?).ok()?;
        let list = v.get("members").and_then(Value::as_array);
        let members = list
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .filter_map(|s| UserId::parse(s).ok())
                    .collect()
            })
            .unwrap_or_default();
        Some(GroupTag {
            malformed: list.is_none(),
            id,
            name: v
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            members,
            owner: v
                .get("owner")
                .and_then(Value::as_str)
                .and_then(|s| UserId::parse(s).ok()),
        })
    }

    /// The object a copy carries: Python's keys (`id`, `name`, sorted
    /// `members`) plus `owner`, which Python ignores.
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("id".into(), self.id.as_str().into());
        m.insert("name".into(), self.name.clone().into());
        m.insert(
            "members".into(),
            Value::Array(self.members.iter().map(|u| u.as_str().into()).collect()),
        );
        if let Some(o) = &self.owner {
            m.insert("owner".into(), o.as_str().into());
        }
        Value::Object(m)
    }
}

/// A group this client holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    pub id: GroupId,
    /// The local handle, unique among this client's groups.
    pub name: String,
    /// Everyone in the group, this client included.
    pub members: BTreeSet<UserId>,
    /// Who may add and remove others (see the module docs). None for a
    /// group imported from a Python 0.3.0 folder, which keeps no owner:
    /// then only this client changes who else is in it, and incoming
    /// copies may only remove their own senders.
    pub owner: Option<UserId>,
    /// Unix seconds of the last change.
    pub ts: f64,
}

impl Group {
    /// The members a send fans out to: everyone but `me`.
    pub fn recipients<'a>(&'a self, me: &'a UserId) -> impl Iterator<Item = &'a UserId> + 'a {
        self.members.iter().filter(move |m| *m != me)
    }

    /// The tag a copy of this group carries.
    pub fn tag(&self) -> GroupTag {
        GroupTag {
            id: self.id.clone(),
            name: self.name.clone(),
            members: self.members.clone(),
            owner: self.owner.clone(),
            malformed: false,
        }
    }
}

/// The longest group name kept, in characters (ours: Python has none, but
/// a peer's label is stored and printed by every member).
pub const MAX_NAME_CHARS: usize = 64;

/// Refuses a name that cannot be a group handle: empty, or shaped like a
/// fingerprint (Python `cmd_group` create/rename), or (ours) longer than
/// [`MAX_NAME_CHARS`], starting with `-`, or holding a character
/// [`crate::display`] shows escaped (controls, bidi, invisible ones).
/// The same rule holds for names typed here and names a peer's copy
/// brings ([`free_name`]): a name shaped like an id could stand for another
/// group's id, one with a newline could forge a row of `group list`.
pub fn check_name(name: &str) -> Result<(), GroupError> {
    if name.is_empty() {
        Err(GroupError::EmptyName)
    } else if UserId::parse(name).is_ok() {
        Err(GroupError::NameLooksLikeId)
    } else if name.chars().count() > MAX_NAME_CHARS {
        Err(GroupError::NameTooLong)
    } else if name.starts_with('-') {
        Err(GroupError::NameStartsWithDash)
    } else if name.chars().any(crate::display::is_hidden) {
        Err(GroupError::NameHasControl)
    } else {
        Ok(())
    }
}

/// Refuses a roster (this client included) larger than the relay's cap.
pub fn check_cap(size: usize, cap: usize) -> Result<(), GroupError> {
    if size > cap {
        Err(GroupError::TooLarge { size, cap })
    } else {
        Ok(())
    }
}

/// `base`, else `base-2`, `base-3`, …: the first not in `taken` (0.3.0's
/// rule for names, `cli.py@HEAD:476-484`).
pub fn suffixed<'a>(base: &str, taken: impl IntoIterator<Item = &'a str>) -> String {
    let taken: BTreeSet<&str> = taken.into_iter().collect();
    let mut name = base.to_owned();
    let mut n = 1;
    while taken.contains(name.as_str()) {
        n += 1;
        name = format!("{base}-{n}");
    }
    name
}

/// A free local name for a group first learned as `wanted` ([`suffixed`]);
/// a label [`check_name`] refuses (empty, id-like, too long, a leading
/// `-`, control characters) is never kept: the first 8 characters of the
/// id stand for it.
pub fn free_name<'a>(
    wanted: &str,
    id: &GroupId,
    taken: impl IntoIterator<Item = &'a str>,
) -> String {
    let base = if check_name(wanted).is_ok() {
        wanted
    } else {
        &id.as_str()[..8]
    };
    suffixed(base, taken)
}

/// Why a roster change was not adopted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefuseReason {
    /// The sender is not in the roster held here (a stranger, or a
    /// former member).
    NotMember,
    /// A member other than the owner added or removed someone else.
    NotOwner,
    /// The roster is larger than the cap.
    OverCap,
    /// The copy's `members` is missing or not a list.
    Malformed,
}

impl RefuseReason {
    /// The word `receive` prints.
    pub fn as_str(self) -> &'static str {
        match self {
            RefuseReason::NotMember => "not-member",
            RefuseReason::NotOwner => "not-owner",
            RefuseReason::OverCap => "over-cap",
            RefuseReason::Malformed => "malformed",
        }
    }
}

/// What to do with the roster a copy carries.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// The group was left here: the copy is refused (nacked), nothing kept.
    Left,
    /// Nothing changes; the sender is a member (`member`) or not.
    Same { member: bool },
    /// Adopt `group` (new or changed); `added`/`removed` say what changed
    /// (for a group first learned here, `added` is the whole roster).
    Adopt {
        group: Group,
        added: Vec<UserId>,
        removed: Vec<UserId>,
        new: bool,
    },
    /// The roster change was refused; the roster held (if any) stays.
    Refuse {
        reason: RefuseReason,
        added: Vec<UserId>,
        removed: Vec<UserId>,
        member: bool,
    },
}

/// Judges the roster `tag` carried by a copy from `sender`, against the
/// group held here (`held`), under the rule in the module docs.
///
/// `left`: the group id is tombstoned here. `me`: the receiver (never
/// believed as the owner a first copy names). `taken`: the names of the
/// other groups held here (for a new group's local name). `now`: unix
/// seconds.
// Each argument is one independent fact the caller holds; a struct would
// only rename them.
#[allow(clippy::too_many_arguments)]
pub fn judge<'a>(
    held: Option<&Group>,
    left: bool,
    tag: &GroupTag,
    sender: &UserId,
    me: &UserId,
    cap: usize,
    taken: impl IntoIterator<Item = &'a str>,
    now: f64,
) -> Verdict {
    if left {
        return Verdict::Left;
    }
    if tag.malformed {
        return Verdict::Refuse {
            reason: RefuseReason::Malformed,
            added: vec![],
            removed: vec![],
            member: held.is_some_and(|g| g.members.contains(sender)),
        };
    }
    let Some(held) = held else {
        let all: Vec<UserId> = tag.members.iter().cloned().collect();
        if !tag.members.contains(sender) {
            // A copy whose roster leaves out its own sender speaks for a
            // group the sender is not in.
            return Verdict::Refuse {
                reason: RefuseReason::NotMember,
                added: all,
                removed: vec![],
                member: false,
            };
        }
        if tag.members.len() > cap {
            return Verdict::Refuse {
                reason: RefuseReason::OverCap,
                added: all,
                removed: vec![],
                member: true,
            };
        }
        let owner = tag
            .owner
            .clone()
            .filter(|o| tag.members.contains(o) && o != me)
            .unwrap_or_else(|| sender.clone());
        return Verdict::Adopt {
            group: Group {
                id: tag.id.clone(),
                name: free_name(&tag.name, &tag.id, taken),
                members: tag.members.clone(),
                owner: Some(owner),
                ts: now,
            },
            added: all,
            removed: vec![],
            new: true,
        };
    };
    let added: Vec<UserId> = tag.members.difference(&held.members).cloned().collect();
    let removed: Vec<UserId> = held.members.difference(&tag.members).cloned().collect();
    let member = held.members.contains(sender);
    if added.is_empty() && removed.is_empty() {
        return Verdict::Same { member };
    }
    let refuse = |reason| Verdict::Refuse {
        reason,
        added: added.clone(),
        removed: removed.clone(),
        member,
    };
    if !member {
        return refuse(RefuseReason::NotMember);
    }
    let only_self_leaves = added.is_empty() && removed == [sender.clone()];
    if held.owner.as_ref() != Some(sender) && !only_self_leaves {
        return refuse(RefuseReason::NotOwner);
    }
    if tag.members.len() > cap {
        return refuse(RefuseReason::OverCap);
    }
    Verdict::Adopt {
        group: Group {
            members: tag.members.clone(),
            ts: now,
            ..held.clone()
        },
        added,
        removed,
        new: false,
    }
}

/// Judges a `group_leave` from `sender`: the held roster without the
/// sender, or None when the sender is not a member (nothing to change).
pub fn leave(held: &Group, sender: &UserId, now: f64) -> Option<Group> {
    if !held.members.contains(sender) {
        return None;
    }
    let mut g = held.clone();
    g.members.remove(sender);
    g.ts = now;
    Some(g)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn u(c: char) -> UserId {
        UserId::parse(&c.to_string().repeat(32)).unwrap()
    }

    fn gid() -> GroupId {
        GroupId::parse(&"9".repeat(32)).unwrap()
    }

    fn tag(members: &[char], owner: Option<char>) -> GroupTag {
        GroupTag {
            id: gid(),
            name: "team".into(),
            members: members.iter().map(|c| u(*c)).collect(),
            owner: owner.map(u),
            malformed: false,
        }
    }

    /// a (owner), b, c; this client is c.
    fn held() -> Group {
        Group {
            id: gid(),
            name: "team".into(),
            members: [u('a'), u('b'), u('c')].into(),
            owner: Some(u('a')),
            ts: 1.0,
        }
    }

    fn judge_held(t: &GroupTag, sender: char) -> Verdict {
        judge(Some(&held()), false, t, &u(sender), &u('c'), 100, [], 2.0)
    }

    #[test]
    fn first_copy_makes_its_sender_the_owner() {
        let v = judge(
            None,
            false,
            &tag(&['a', 'b', 'c'], None),
            &u('b'),
            &u('c'),
            100,
            ["team"],
            5.0,
        );
        let Verdict::Adopt {
            group, new, added, ..
        } = v
        else {
            panic!("{v:?}")
        };
        assert!(new);
        assert_eq!(group.owner, Some(u('b')));
        assert_eq!(group.name, "team-2");
        assert_eq!(added.len(), 3);
        // A named owner in the roster wins; one outside it does not.
        let v = judge(
            None,
            false,
            &tag(&['a', 'b'], Some('a')),
            &u('b'),
            &u('c'),
            100,
            [],
            5.0,
        );
        assert!(matches!(v, Verdict::Adopt { ref group, .. } if group.owner == Some(u('a'))));
        let v = judge(
            None,
            false,
            &tag(&['a', 'b'], Some('e')),
            &u('b'),
            &u('c'),
            100,
            [],
            5.0,
        );
        assert!(matches!(v, Verdict::Adopt { ref group, .. } if group.owner == Some(u('b'))));
        // A copy naming the receiver (c) as owner is not believed: a
        // stranger would claim it to pass for one of our own groups.
        let v = judge(
            None,
            false,
            &tag(&['a', 'b', 'c'], Some('c')),
            &u('b'),
            &u('c'),
            100,
            [],
            5.0,
        );
        assert!(matches!(v, Verdict::Adopt { ref group, .. } if group.owner == Some(u('b'))));
    }

    #[test]
    fn a_copy_whose_members_is_not_a_list_is_malformed() {
        let t = GroupTag::from_json(&serde_json::json!({"id": gid().as_str(), "name": "team",
                                                         "members": "everyone"}))
        .unwrap();
        assert!(t.malformed);
        let refused = |member| Verdict::Refuse {
            reason: RefuseReason::Malformed,
            added: vec![],
            removed: vec![],
            member,
        };
        assert_eq!(judge_held(&t, 'a'), refused(true));
        assert_eq!(judge_held(&t, 'e'), refused(false));
        assert_eq!(
            judge(None, false, &t, &u('a'), &u('c'), 100, [], 2.0),
            refused(false)
        );
        let t = GroupTag::from_json(&serde_json::json!({"id": gid().as_str()})).unwrap();
        assert!(t.malformed);
        let t = GroupTag::from_json(&serde_json::json!({"id": gid().as_str(), "members": []}));
        assert!(!t.unwrap().malformed);
    }

    #[test]
    fn a_peers_name_that_local_names_could_not_be_is_replaced() {
        assert_eq!(free_name("team", &gid(), []), "team");
        for bad in [
            "",
            &"a".repeat(32),
            "-rf",
            "a\nb",
            "a\u{1b}[2Kb",
            &"n".repeat(MAX_NAME_CHARS + 1),
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
            assert_eq!(free_name(bad, &gid(), []), "99999999", "{bad:?}");
            assert_eq!(free_name(bad, &gid(), ["99999999"]), "99999999-2");
        }
        assert!(check_name(&"n".repeat(MAX_NAME_CHARS)).is_ok());
    }

    #[test]
    fn a_first_copy_whose_roster_leaves_out_its_sender_is_refused() {
        let v = judge(
            None,
            false,
            &tag(&['a', 'c'], None),
            &u('e'),
            &u('c'),
            100,
            [],
            5.0,
        );
        assert!(matches!(
            v,
            Verdict::Refuse {
                reason: RefuseReason::NotMember,
                member: false,
                ..
            }
        ));
    }

    #[test]
    fn a_stranger_cannot_add_itself_or_anyone() {
        let v = judge_held(&tag(&['a', 'b', 'c', 'e'], None), 'e');
        assert_eq!(
            v,
            Verdict::Refuse {
                reason: RefuseReason::NotMember,
                added: vec![u('e')],
                removed: vec![],
                member: false
            }
        );
    }

    #[test]
    fn a_former_member_cannot_rewrite_the_roster() {
        // d was removed; its stale roster would bring it (and x) back.
        let v = judge_held(&tag(&['a', 'b', 'c', 'd', 'e'], None), 'd');
        assert!(matches!(
            v,
            Verdict::Refuse {
                reason: RefuseReason::NotMember,
                ..
            }
        ));
        // Nor remove anyone.
        let v = judge_held(&tag(&['c', 'd'], None), 'd');
        assert!(matches!(
            v,
            Verdict::Refuse {
                reason: RefuseReason::NotMember,
                ..
            }
        ));
    }

    #[test]
    fn a_member_cannot_add_an_outsider_or_remove_others() {
        let v = judge_held(&tag(&['a', 'b', 'c', 'e'], None), 'b');
        assert_eq!(
            v,
            Verdict::Refuse {
                reason: RefuseReason::NotOwner,
                added: vec![u('e')],
                removed: vec![],
                member: true
            }
        );
        let v = judge_held(&tag(&['b', 'c'], None), 'b');
        assert!(matches!(
            v,
            Verdict::Refuse {
                reason: RefuseReason::NotOwner,
                ..
            }
        ));
        // Claiming another owner changes nothing for a held group.
        let v = judge_held(&tag(&['a', 'b', 'c', 'e'], Some('b')), 'b');
        assert!(matches!(
            v,
            Verdict::Refuse {
                reason: RefuseReason::NotOwner,
                ..
            }
        ));
    }

    #[test]
    fn a_member_may_remove_only_itself() {
        let v = judge_held(&tag(&['a', 'c'], None), 'b');
        let Verdict::Adopt {
            group,
            removed,
            added,
            new,
        } = v
        else {
            panic!("{v:?}")
        };
        assert!(!new && added.is_empty());
        assert_eq!(removed, vec![u('b')]);
        assert_eq!(group.owner, Some(u('a')));
        assert_eq!(group.members, [u('a'), u('c')].into());
    }

    #[test]
    fn the_owner_adds_and_removes() {
        let v = judge_held(&tag(&['a', 'c', 'e'], None), 'a');
        let Verdict::Adopt {
            group,
            added,
            removed,
            ..
        } = v
        else {
            panic!("{v:?}")
        };
        assert_eq!(added, vec![u('e')]);
        assert_eq!(removed, vec![u('b')]);
        assert_eq!(group.name, "team");
        assert_eq!(group.ts, 2.0);
    }

    #[test]
    fn an_unowned_group_only_shrinks_by_leaves() {
        let g = Group {
            owner: None,
            ..held()
        };
        let v = judge(
            Some(&g),
            false,
            &tag(&['a', 'b', 'c', 'e'], None),
            &u('a'),
            &u('c'),
            100,
            [],
            2.0,
        );
        assert!(matches!(
            v,
            Verdict::Refuse {
                reason: RefuseReason::NotOwner,
                ..
            }
        ));
        let v = judge(
            Some(&g),
            false,
            &tag(&['b', 'c'], None),
            &u('a'),
            &u('c'),
            100,
            [],
            2.0,
        );
        assert!(matches!(v, Verdict::Adopt { ref removed, .. } if removed == &[u('a')]));
    }

    #[test]
    fn the_owner_is_still_capped() {
        let v = judge(
            Some(&held()),
            false,
            &tag(&['a', 'b', 'c', 'e'], None),
            &u('a'),
            &u('c'),
            3,
            [],
            2.0,
        );
        assert!(matches!(
            v,
            Verdict::Refuse {
                reason: RefuseReason::OverCap,
                ..
            }
        ));
        let v = judge(
            None,
            false,
            &tag(&['a', 'b', 'c', 'e'], None),
            &u('a'),
            &u('c'),
            3,
            [],
            2.0,
        );
        assert!(matches!(
            v,
            Verdict::Refuse {
                reason: RefuseReason::OverCap,
                ..
            }
        ));
    }

    #[test]
    fn unchanged_rosters_and_left_groups() {
        assert_eq!(
            judge_held(&tag(&['a', 'b', 'c'], None), 'b'),
            Verdict::Same { member: true }
        );
        assert_eq!(
            judge_held(&tag(&['a', 'b', 'c'], None), 'e'),
            Verdict::Same { member: false }
        );
        assert_eq!(
            judge(
                None,
                true,
                &tag(&['a', 'b'], None),
                &u('a'),
                &u('c'),
                100,
                [],
                0.0
            ),
            Verdict::Left
        );
    }

    #[test]
    fn leave_removes_only_a_member() {
        assert_eq!(
            leave(&held(), &u('b'), 3.0).unwrap().members,
            [u('a'), u('c')].into()
        );
        assert!(leave(&held(), &u('e'), 3.0).is_none());
    }

    #[test]
    fn names_ids_and_caps() {
        assert_eq!(free_name("team", &gid(), ["team", "team-2"]), "team-3");
        assert_eq!(free_name("", &gid(), []), "99999999");
        assert_eq!(
            check_name(&"a".repeat(32)),
            Err(GroupError::NameLooksLikeId)
        );
        assert_eq!(check_name(""), Err(GroupError::EmptyName));
        assert!(check_name("team").is_ok());
        assert!(check_cap(3, 3).is_ok());
        assert_eq!(
            check_cap(4, 3),
            Err(GroupError::TooLarge { size: 4, cap: 3 })
        );
        assert!(GroupId::parse("ABC").is_err());
        assert_eq!(GroupId::random().as_str().len(), 32);
    }

    #[test]
    fn tags_round_trip_and_drop_non_ids() {
        let v = serde_json::json!({"id": "9".repeat(32), "name": "t",
            "members": ["a".repeat(32), "nope", 3], "owner": "a".repeat(32)});
        let t = GroupTag::from_json(&v).unwrap();
        assert_eq!(t.members, [u('a')].into());
        assert_eq!(GroupTag::from_json(&t.to_json()).unwrap(), t);
        assert!(GroupTag::from_json(&serde_json::json!({"id": "x"})).is_none());
    }
}
