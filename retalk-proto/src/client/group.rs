//! Groups on a client: the local roster book, fan-out sends, leaving, and
//! judging the rosters that group copies carry (the rule is
//! [`crate::group`]'s).
//!
//! Local operations (create, add, remove, rename, delete, join) need no
//! relay and no secret: free functions over a [`Store`], like the block
//! list. Sending and leaving are [`Client`] methods.

use std::collections::BTreeSet;

use serde_json::{json, Map, Value};

use super::{Client, ClientError, InboxRecord, LeftGroup, Store, StoreTransaction, Transport};
use crate::clock::Clock;
use crate::envelope::Envelope;
use crate::group::{self, Group, GroupError, GroupId, GroupTag, Verdict};
use crate::ids::{new_message_id, UserId};

/// Where the relay's last `GET /info` `max_group_size` is kept (0.3.0's
/// `meta.group_cap`, `cli.py@HEAD:439-456`).
pub const GROUP_CAP_SETTING: &str = "group_cap";

/// Where the owner of a group once held here is remembered after `group
/// delete` or a leave (`group_owner/<gid>` = owner id), so that the group
/// coming back with a member's copy keeps its owner instead of trusting
/// that member on first use again (the creator would lose its group).
fn owner_setting(id: &GroupId) -> String {
    format!("group_owner/{id}")
}

/// The owner a group deleted or left here had ([`owner_setting`]).
pub fn known_owner<S: Store + ?Sized>(
    store: &S,
    id: &GroupId,
) -> Result<Option<UserId>, ClientError> {
    Ok(store
        .setting(&owner_setting(id))?
        .and_then(|o| UserId::parse(&o).ok()))
}

/// Remembers `g`'s owner in `tx` ([`owner_setting`]).
fn remember_owner<S: Store + ?Sized>(tx: &mut StoreTransaction<'_, S>, g: &Group) {
    if let Some(o) = &g.owner {
        tx.changes
            .settings
            .push((owner_setting(&g.id), o.to_string()));
    }
}

/// The cap to judge incoming rosters by: the cached one, else
/// [`group::DEFAULT_GROUP_CAP`].
pub fn cached_group_cap<S: Store + ?Sized>(store: &S) -> Result<usize, ClientError> {
    Ok(store
        .setting(GROUP_CAP_SETTING)?
        .and_then(|v| v.parse().ok())
        .unwrap_or(group::DEFAULT_GROUP_CAP))
}

/// Caches the cap a relay served.
pub fn save_group_cap<S: Store + ?Sized>(store: &S, cap: usize) -> Result<(), ClientError> {
    let mut tx = StoreTransaction::new(store)?;
    tx.changes
        .settings
        .push((GROUP_CAP_SETTING.into(), cap.to_string()));
    tx.commit()?;
    Ok(())
}

/// The groups held, by name.
pub fn groups<S: Store + ?Sized>(store: &S) -> Result<Vec<Group>, ClientError> {
    let mut all = store.groups()?;
    all.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(all)
}

/// The group a person means: a group id, else a local name. The id comes
/// first: a name is a label (some learned from a peer's copy), and an id
/// always means its own group, whatever any group is called.
///
/// Errors: [`GroupError::LeftGroup`] for a group left here (so the person
/// learns how to rejoin), else [`GroupError::UnknownGroup`].
pub fn find_group<S: Store + ?Sized>(store: &S, reference: &str) -> Result<Group, ClientError> {
    let all = store.groups()?;
    if let Some(g) = all
        .iter()
        .find(|g| g.id.as_str() == reference)
        .or_else(|| all.iter().find(|g| g.name == reference))
    {
        return Ok(g.clone());
    }
    let left = store.left_groups()?;
    Err(match left
        .iter()
        .find(|l| l.id.as_str() == reference)
        .or_else(|| left.iter().find(|l| l.name == reference))
    {
        Some(l) => GroupError::LeftGroup(l.name.clone()),
        None => GroupError::UnknownGroup(reference.to_owned()),
    }
    .into())
}

fn check_free_name<S: Store + ?Sized>(
    store: &S,
    name: &str,
    except: Option<&GroupId>,
) -> Result<(), ClientError> {
    group::check_name(name)?;
    if store
        .groups()?
        .iter()
        .any(|g| g.name == name && Some(&g.id) != except)
    {
        return Err(GroupError::NameTaken(name.to_owned()).into());
    }
    Ok(())
}

fn save<S: Store + ?Sized>(store: &S, g: &Group) -> Result<(), ClientError> {
    let mut tx = StoreTransaction::new(store)?;
    tx.changes.groups.push(g.clone());
    tx.commit()?;
    Ok(())
}

/// Creates a group owned by `me` with `members` (and `me`), checked
/// against `cap` (the relay's `max_group_size`, the roster counting `me`).
/// Errors, with nothing changed: a bad or taken name, no members, too
/// large.
pub fn create_group<S: Store + ?Sized>(
    store: &S,
    me: &UserId,
    name: &str,
    members: &[UserId],
    cap: usize,
    now: f64,
) -> Result<Group, ClientError> {
    check_free_name(store, name, None)?;
    let mut roster: BTreeSet<UserId> = members.iter().cloned().collect();
    roster.remove(me);
    if roster.is_empty() {
        return Err(GroupError::NoMembers.into());
    }
    roster.insert(me.clone());
    group::check_cap(roster.len(), cap)?;
    let g = Group {
        id: GroupId::random(),
        name: name.to_owned(),
        members: roster,
        owner: Some(me.clone()),
        ts: now,
    };
    save(store, &g)?;
    Ok(g)
}

/// Only the owner changes who else is in a group (the rule of
/// [`crate::group`], applied to our own edits too: other members would
/// refuse the change anyway). A group without a recorded owner (imported
/// from Python) is this client's to change.
fn owned(g: &Group, me: &UserId) -> Result<(), ClientError> {
    match &g.owner {
        Some(o) if o != me => Err(GroupError::NotOwner {
            group: g.name.clone(),
            owner: o.to_string(),
        }
        .into()),
        _ => Ok(()),
    }
}

/// Adds members (owner only, within `cap`). Returns the group and how many
/// were new.
pub fn group_add<S: Store + ?Sized>(
    store: &S,
    me: &UserId,
    reference: &str,
    members: &[UserId],
    cap: usize,
    now: f64,
) -> Result<(Group, usize), ClientError> {
    let mut g = find_group(store, reference)?;
    owned(&g, me)?;
    if members.is_empty() {
        return Err(GroupError::NoMembers.into());
    }
    let before = g.members.len();
    g.members.extend(members.iter().cloned());
    group::check_cap(g.members.len(), cap)?;
    g.ts = now;
    save(store, &g)?;
    let added = g.members.len() - before;
    Ok((g, added))
}

/// Removes members (owner only). Returns the group and how many went.
pub fn group_remove<S: Store + ?Sized>(
    store: &S,
    me: &UserId,
    reference: &str,
    members: &[UserId],
    now: f64,
) -> Result<(Group, usize), ClientError> {
    let mut g = find_group(store, reference)?;
    owned(&g, me)?;
    let before = g.members.len();
    g.members.retain(|m| m == me || !members.contains(m));
    if g.members.len() == before {
        return Err(GroupError::NoneAreMembers(g.name).into());
    }
    g.ts = now;
    save(store, &g)?;
    let removed = before - g.members.len();
    Ok((g, removed))
}

/// Renames the local handle (anyone may: names are local).
pub fn rename_group<S: Store + ?Sized>(
    store: &S,
    reference: &str,
    new: &str,
) -> Result<Group, ClientError> {
    let mut g = find_group(store, reference)?;
    check_free_name(store, new, Some(&g.id))?;
    g.name = new.to_owned();
    save(store, &g)?;
    Ok(g)
}

/// Forgets a group locally (no tombstone: a new copy brings it back, with
/// the owner it had here).
pub fn delete_group<S: Store + ?Sized>(store: &S, reference: &str) -> Result<Group, ClientError> {
    let g = find_group(store, reference)?;
    let mut tx = StoreTransaction::new(store)?;
    remember_owner(&mut tx, &g);
    tx.changes.groups_removed.push(g.id.clone());
    tx.commit()?;
    Ok(g)
}

/// The groups left (tombstones), by name.
pub fn left_groups<S: Store + ?Sized>(store: &S) -> Result<Vec<LeftGroup>, ClientError> {
    let mut all = store.left_groups()?;
    all.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(all)
}

/// Clears a leave tombstone (by name or id), nothing else: the group comes
/// back with the next copy from a member who has us on the roster
/// (`cli.py` `group join`).
pub fn join_group<S: Store + ?Sized>(store: &S, reference: &str) -> Result<LeftGroup, ClientError> {
    let all = store.left_groups()?;
    let left = all
        .iter()
        .find(|l| l.id.as_str() == reference)
        .or_else(|| all.iter().find(|l| l.name == reference))
        .cloned()
        .ok_or_else(|| GroupError::NotLeft(reference.to_owned()))?;
    let mut tx = StoreTransaction::new(store)?;
    tx.changes.left_groups_removed.push(left.id.clone());
    tx.commit()?;
    Ok(left)
}

/// What a group send did: one pairwise copy per member, each failing alone.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupSendReport {
    /// The thread id (`mid`) every copy shares.
    pub id: String,
    pub group: String,
    pub group_id: GroupId,
    pub sent: Vec<UserId>,
    /// Members whose copy failed, with why.
    pub failed: Vec<(UserId, String)>,
}

/// What leaving did.
#[derive(Debug, Clone, PartialEq)]
pub struct LeaveReport {
    pub group: Group,
    pub told: Vec<UserId>,
    pub failed: Vec<(UserId, String)>,
}

/// The name a copy of a group not held here is shown under: the sender's
/// label when a local name could be it, else the id's first 8 characters
/// ([`group::free_name`]): never a label forging lines or ids.
fn label(tag: &GroupTag) -> String {
    group::free_name(&tag.name, &tag.id, [])
}

/// The extra fields a group copy shows with its text.
fn copy_extra(local: Option<&Group>, tag: &GroupTag, mid: Option<&str>, member: bool) -> String {
    let mut m = Map::new();
    m.insert(
        "group".into(),
        local.map_or_else(|| label(tag), |g| g.name.clone()).into(),
    );
    m.insert("group_id".into(), tag.id.as_str().into());
    if let Some(mid) = mid {
        m.insert("mid".into(), mid.into());
    }
    if !member {
        m.insert("member".into(), false.into());
    }
    Value::Object(m).to_string()
}

fn ids(v: &[UserId]) -> Value {
    Value::Array(v.iter().map(|u| u.as_str().into()).collect())
}

impl<S: Store, T: Transport, C: Clock> Client<S, T, C> {
    /// Sends `text` to every member of a group but us: one pairwise copy
    /// each, all with one thread id (`mid`) and the roster we hold; a
    /// failing member does not stop the rest (`user.py@HEAD:953-976`).
    /// A copy kept in the outbox for a later resend counts as failed now.
    pub async fn send_group(
        &self,
        reference: &str,
        text: &str,
    ) -> Result<GroupSendReport, ClientError> {
        let g = find_group(&self.store, reference)?;
        let me = self.user_id().clone();
        let mut tag = g.tag();
        tag.members.insert(me.clone());
        let group = Some(tag.to_json());
        let mid = new_message_id();
        let name = self.name()?;
        let mut sent = Vec::new();
        let mut failed = Vec::new();
        for to in g.recipients(&me) {
            let envelope = Envelope::Msg {
                id: new_message_id(),
                text: text.to_owned(),
                name: name.clone(),
                group: group.clone(),
                mid: Some(mid.clone()),
            };
            match self.send_envelope(to, envelope).await {
                Ok(_) => sent.push(to.clone()),
                Err(e) => failed.push((to.clone(), e.to_string())),
            }
        }
        Ok(GroupSendReport {
            id: mid,
            group: g.name,
            group_id: g.id,
            sent,
            failed,
        })
    }

    /// Leaves a group: a `group_leave` to every other member (best effort),
    /// then a tombstone, so later copies are dropped, and the group is
    /// forgotten (`user.py` `leave_group`).
    pub async fn leave_group(&self, reference: &str) -> Result<LeaveReport, ClientError> {
        let g = find_group(&self.store, reference)?;
        let me = self.user_id().clone();
        let (mut told, mut failed) = (Vec::new(), Vec::new());
        for to in g.recipients(&me) {
            let envelope = Envelope::GroupLeave {
                id: new_message_id(),
                group_id: g.id.to_string(),
                name: g.name.clone(),
            };
            match self.send_envelope(to, envelope).await {
                Ok(_) => told.push(to.clone()),
                Err(e) => failed.push((to.clone(), e.to_string())),
            }
        }
        let mut tx = self.transaction()?;
        remember_owner(&mut tx, &g);
        tx.changes.left_groups.push(LeftGroup {
            id: g.id.clone(),
            name: g.name.clone(),
            ts: self.clock.now(),
        });
        tx.changes.groups_removed.push(g.id.clone());
        tx.commit()?;
        Ok(LeaveReport {
            group: g,
            told,
            failed,
        })
    }

    /// Files a received group copy in the batch of its decryption: judges
    /// its roster ([`group::judge`]), adopts or refuses the change, and
    /// returns the extra fields its text is shown with, plus a record of
    /// the change (adopted or refused) for the inbox; `None` when the
    /// group was left here (the copy is refused with a nack).
    pub(super) fn file_group_copy(
        &self,
        tx: &mut StoreTransaction<'_, S>,
        sender: &UserId,
        group: &Value,
        mid: Option<&str>,
        record: &InboxRecord,
    ) -> Result<Option<(String, Option<InboxRecord>)>, ClientError> {
        let Some(tag) = GroupTag::from_json(group) else {
            return Ok(Some((String::new(), None)));
        };
        let now = self.clock.now();
        let all = self.store.groups()?;
        // A group we hold has us in it (one imported from Python may not
        // list us).
        let held = tx
            .changes
            .groups
            .iter()
            .rev()
            .chain(all.iter())
            .find(|g| g.id == tag.id)
            .map(|g| {
                let mut g = g.clone();
                g.members.insert(self.user_id().clone());
                g
            });
        let held = held.as_ref();
        let left = self.store.left_groups()?.iter().any(|l| l.id == tag.id);
        let taken = all
            .iter()
            .filter(|g| g.id != tag.id)
            .map(|g| g.name.as_str());
        let cap = cached_group_cap(&self.store)?;
        let verdict = group::judge(held, left, &tag, sender, self.user_id(), cap, taken, now);
        let event = |kind: &str, name: &str, fields: Value| {
            let mut m = json!({"kind": kind, "group": name, "group_id": tag.id.as_str()});
            if let (Value::Object(m), Value::Object(f)) = (&mut m, fields) {
                m.extend(f);
            }
            InboxRecord {
                hash: format!("{}/roster", record.hash),
                extra: Some(m.to_string()),
                text: String::new(),
                ..record.clone()
            }
        };
        let held_name = held.map(|g| g.name.clone());
        // A group id is 32 hex characters, as a user id is: a copy whose
        // group id is ours or a saved contact's would file a stranger's
        // group under that contact's id (the attack on `show --web`'s
        // list). Refused as malformed, and its text is shown as the
        // sender's direct message (no group fields).
        let me = self.user_id().as_str();
        if tag.id.as_str() == me
            || self
                .contacts()?
                .iter()
                .any(|c| c.id.as_str() == tag.id.as_str())
        {
            let reason = group::RefuseReason::Malformed.as_str();
            let ev = event(
                "group_update_refused",
                &label(&tag),
                json!({"reason": reason, "added": [], "removed": []}),
            );
            return Ok(Some((String::new(), Some(ev))));
        }
        Ok(Some(match verdict {
            Verdict::Left => return Ok(None),
            Verdict::Same { member } => (copy_extra(held, &tag, mid, member), None),
            Verdict::Adopt {
                mut group,
                added,
                removed,
                new,
            } => {
                // A group held here before (deleted, or left and joined
                // again) keeps the owner it had, not the copy's say.
                if let (true, Some(o)) = (new, known_owner(&self.store, &group.id)?) {
                    group.owner = Some(o);
                }
                let ev = event(
                    if new { "group_joined" } else { "group_update" },
                    &group.name,
                    json!({"owner": group.owner.as_ref().map(UserId::as_str), "added": ids(&added),
                           "removed": ids(&removed)}),
                );
                let extra = copy_extra(Some(&group), &tag, mid, true);
                tx.changes.groups.push(group);
                (extra, Some(ev))
            }
            Verdict::Refuse {
                reason,
                added,
                removed,
                member,
            } => {
                let name = held_name.unwrap_or_else(|| label(&tag));
                let mut fields = if reason == group::RefuseReason::OverCap {
                    // Counts, not ids: the roster may hold thousands.
                    json!({"reason": reason.as_str(), "size": tag.members.len(), "cap": cap,
                           "added_count": added.len(), "removed_count": removed.len()})
                } else {
                    json!({"reason": reason.as_str(), "added": ids(&added),
                           "removed": ids(&removed)})
                };
                // Who could have made the change (the owner held here;
                // null for a group not held, or imported without one).
                fields["owner"] = held
                    .and_then(|g| g.owner.as_ref())
                    .map(UserId::as_str)
                    .into();
                let ev = event("group_update_refused", &name, fields);
                (copy_extra(held, &tag, mid, member), Some(ev))
            }
        }))
    }

    /// After a verified refusal of `entry`: when it was a group copy, its
    /// recipient leaves the roster held here (`user.py@HEAD:512-550`: a
    /// member that refuses the group's mail, having left it or blocked us,
    /// is dropped). Only the refuser itself is removed, which the roster
    /// rule allows any member.
    pub(super) fn drop_refuser(
        &self,
        tx: &mut StoreTransaction<'_, S>,
        entry: &super::OutboxEntry,
    ) -> Result<(), ClientError> {
        let Some(sealed) = &entry.envelope else {
            return Ok(());
        };
        let Ok(plain) = self.key.open(sealed) else {
            return Ok(());
        };
        let Ok(Envelope::Msg {
            group: Some(group), ..
        }) = Envelope::decode(&plain)
        else {
            return Ok(());
        };
        let Some(tag) = GroupTag::from_json(&group) else {
            return Ok(());
        };
        let held = self.store.groups()?.into_iter().find(|g| g.id == tag.id);
        if let Some(after) = held.and_then(|g| group::leave(&g, &entry.peer, self.clock.now())) {
            tx.changes.groups.push(after);
        }
        Ok(())
    }

    /// Files a received `group_leave`: the sender leaves the roster held
    /// here if it is a member; the record says what happened.
    pub(super) fn file_group_leave(
        &self,
        tx: &mut StoreTransaction<'_, S>,
        sender: &UserId,
        group_id: &str,
        record: InboxRecord,
    ) -> Result<InboxRecord, ClientError> {
        let held = self
            .store
            .groups()?
            .into_iter()
            .find(|g| g.id.as_str() == group_id);
        let mut m = json!({"kind": "group_leave", "group_id": group_id});
        if let Some(g) = &held {
            m["group"] = g.name.clone().into();
            match group::leave(g, sender, self.clock.now()) {
                Some(after) => tx.changes.groups.push(after),
                None => m["member"] = false.into(),
            }
        }
        Ok(InboxRecord {
            extra: Some(m.to_string()),
            ..record
        })
    }
}

impl super::Received {
    /// The fields shown with this record besides `id`, `from`, `name` and
    /// `text`, in order: for a group copy `group`, `group_id`, `mid` (and
    /// `member: false` from a non-member); for a record of a roster change,
    /// a leave or an invite `kind` and its fields. Empty for plain mail.
    pub fn extra_fields(&self) -> Map<String, Value> {
        self.extra
            .as_deref()
            .and_then(|e| serde_json::from_str(e).ok())
            .unwrap_or_default()
    }

    /// The record's `kind` when it is not a message (`group_joined`,
    /// `group_update`, `group_update_refused`, `group_leave`,
    /// `contact_accepted`, `contact_request_rejected`).
    pub fn kind(&self) -> Option<String> {
        self.extra_fields()
            .get("kind")
            .and_then(Value::as_str)
            .map(str::to_owned)
    }
}
