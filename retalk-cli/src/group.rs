//! `retalk group ACTION NAME [MEMBERS]` and `send --group NAME` (0.3.0's
//! `cmd_group`, `cmd_send`, `cli.py@HEAD:1192-1379`), over the library's
//! groups ([`retalk_proto::client::group`] functions, [`Agent::send_group`]).
//!
//! Who may change a roster (the rule of [`retalk_proto::group`]): the
//! owner (the creator; for a group learned from a copy, the owner it names
//! or its sender) adds and removes members; anyone may leave; a copy from
//! a non-member never changes a roster held here.

use retalk_proto::canonical::{push_json_string, python_float_repr};
use retalk_proto::client;
use retalk_proto::group::Group;
use retalk_proto::{ClientError, UserId};
use serde_json::Value;

use crate::display::escape;
use crate::error::CliError;
use crate::{print_stdout, Agent};

/// One of `group`'s actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GroupAction {
    Create,
    List,
    Members,
    Add,
    Remove,
    Rename,
    Leave,
    Join,
    Delete,
}

fn push(out: &mut String, v: &Value) {
    match v {
        Value::String(s) => push_json_string(out, s),
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                push(out, x);
            }
            out.push(']');
        }
        Value::Object(m) => push_pairs(out, m.iter().map(|(k, v)| (k.as_str(), v))),
        Value::Number(n) if n.is_f64() => {
            out.push_str(&python_float_repr(n.as_f64().unwrap_or_default()))
        }
        other => out.push_str(&other.to_string()),
    }
}

fn push_pairs<'a>(out: &mut String, pairs: impl Iterator<Item = (&'a str, &'a Value)>) {
    out.push('{');
    for (i, (k, v)) in pairs.enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        push_json_string(out, k);
        out.push_str(": ");
        push(out, v);
    }
    out.push('}');
}

/// An object as Python's `json.dumps` writes it (`", "`, `": "`,
/// `ensure_ascii`, floats as `repr`), its keys in the order given.
pub fn py_object(pairs: &[(&str, Value)]) -> String {
    let mut out = String::new();
    push_pairs(&mut out, pairs.iter().map(|(k, v)| (*k, v)));
    out
}

fn ids<'a>(v: impl IntoIterator<Item = &'a UserId>) -> Value {
    Value::Array(v.into_iter().map(|u| u.as_str().into()).collect())
}

/// The members `group list` and `group members` show, as 0.3.0 does: a
/// group we created without us; one learned from a copy (or imported from
/// a Python folder) as its roster holds it, us included.
fn shown_members<'a>(g: &'a Group, me: &'a UserId) -> impl Iterator<Item = &'a UserId> + 'a {
    let created = g.owner.as_ref() == Some(me);
    g.members.iter().filter(move |m| !created || *m != me)
}

/// The group as `list --json` prints it: Python's keys (members as
/// [`shown_members`]), then ours: the owner.
fn group_json(g: &Group, me: &UserId) -> String {
    py_object(&[
        ("group_id", g.id.as_str().into()),
        ("name", g.name.clone().into()),
        ("members", ids(shown_members(g, me))),
        ("owner", g.owner.as_ref().map(UserId::as_str).into()),
    ])
}

/// Member references (saved names or 32-hex ids) to ids; an unknown one is
/// a clear error before anything changes.
fn resolve_members(agent: &Agent, list: Option<&str>) -> Result<Vec<UserId>, CliError> {
    // The identity's contacts over the owner-wide ones, as `send` reads them.
    let contacts = crate::book::effective(agent.store())?;
    list.unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(|r| {
            crate::book::peer_to_id(&contacts, r).map_err(|_| {
                CliError::Usage(format!(
                    "unknown member '{r}': use a saved contact name or a 32-hex fingerprint"
                ))
            })
        })
        .collect()
}

/// The relay's cap (`GET /info` `max_group_size`), cached; the cached one
/// (else 100) when the relay cannot say.
pub(crate) async fn cap(agent: &Agent) -> Result<usize, CliError> {
    match agent.transport().max_group_size().await {
        Ok(n) => {
            let n = usize::try_from(n).unwrap_or(usize::MAX);
            client::save_group_cap(agent.store(), n)?;
            Ok(n)
        }
        Err(_) => Ok(client::cached_group_cap(agent.store())?),
    }
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

/// `group ACTION [NAME] [MEMBERS] [--members LIST] [--json]`.
pub async fn run(
    agent: &Agent,
    action: GroupAction,
    name: Option<String>,
    members: Option<String>,
    json: bool,
) -> Result<(), CliError> {
    let store = agent.store();
    let me = agent.user_id().clone();
    let name = name.unwrap_or_default();
    let need_name = |what: &str| {
        if name.is_empty() {
            Err(CliError::Usage(format!("group {what} needs a NAME")))
        } else {
            Ok(())
        }
    };
    match action {
        GroupAction::Create => {
            need_name("create")?;
            let list = resolve_members(agent, members.as_deref())?;
            // Checked before the relay is asked for its cap.
            retalk_proto::group::check_name(&name).map_err(ClientError::from)?;
            let cap = cap(agent).await?;
            let g = client::create_group(store, &me, &name, &list, cap, now())?;
            print_stdout(&py_object(&[
                ("group_id", g.id.as_str().into()),
                ("name", g.name.clone().into()),
                ("members", ids(g.recipients(&me))),
            ]))?;
            say!(
                "created group '{}' with {} member(s); you own it (only you add or remove members). Send with: retalk send --group {} \"hello\"",
                escape(&g.name),
                g.members.len() - 1,
                escape(&g.name)
            );
        }
        GroupAction::List => {
            for g in client::groups(store)? {
                if json {
                    print_stdout(&group_json(&g, &me))?;
                } else {
                    // Names may come from a peer's copy or a Python folder:
                    // shown by `receive`'s rule (crate::display).
                    print_stdout(&format!(
                        "{}\t{}\t{} member(s)",
                        escape(&g.name),
                        g.id,
                        shown_members(&g, &me).count()
                    ))?;
                }
            }
        }
        GroupAction::Join => {
            need_name("join")?;
            let left = client::join_group(store, &name)?;
            if client::known_owner(store, &left.id)?.as_ref() == Some(&me) {
                say!(
                    "rejoined '{}', which you own: the others dropped you when you left, so it reappears (still yours) only with a copy from a member who lists you again",
                    escape(&left.name)
                );
            } else {
                say!(
                    "rejoined '{}': ask its owner to add you back — the group reappears with their next group message",
                    escape(&left.name)
                );
            }
        }
        GroupAction::Members => {
            need_name("members")?;
            let g = client::find_group(store, &name)?;
            let contacts = crate::book::effective(store)?;
            // As 0.3.0 prints them (`name<TAB>id`, `(unnamed)` when not
            // saved; us too in a group learned from a copy); the owner is
            // in `list --json`.
            for fp in shown_members(&g, &me) {
                let label = contacts
                    .iter()
                    .find(|c| &c.id == fp && c.name != fp.as_str())
                    .map_or("(unnamed)", |c| c.name.as_str());
                print_stdout(&format!("{}\t{fp}", escape(label)))?;
            }
        }
        GroupAction::Add => {
            need_name("add")?;
            let list = resolve_members(agent, members.as_deref())?;
            if list.is_empty() {
                return Err(CliError::Usage(
                    "group add needs members: retalk group add NAME PEER[,PEER...]".into(),
                ));
            }
            // Owner and name first: no relay call for a refused change.
            let g = client::find_group(store, &name)?;
            let mine = g.owner.as_ref().is_none_or(|o| o == &me);
            let cap = if mine { cap(agent).await? } else { 0 };
            let (g, added) = client::group_add(store, &me, &name, &list, cap, now())?;
            say!(
                "added {added} member(s) to '{}' — the new roster reaches everyone on your next group send",
                escape(&g.name)
            );
        }
        GroupAction::Remove => {
            need_name("remove")?;
            let list = resolve_members(agent, members.as_deref())?;
            let (g, removed) = client::group_remove(store, &me, &name, &list, now())?;
            say!(
                "removed {removed} member(s) from '{}' — they stop getting your copies now, and the others' once your next group send reaches them",
                escape(&g.name)
            );
        }
        GroupAction::Rename => {
            need_name("rename")?;
            let new = members.filter(|m| !m.is_empty()).ok_or_else(|| {
                CliError::Usage(
                    "group rename needs the new name: retalk group rename OLD NEW".into(),
                )
            })?;
            let old = client::find_group(store, &name)?;
            let g = client::rename_group(store, &name, &new)?;
            say!(
                "renamed group '{}' -> '{}' (the group id stays the same; your copies carry this name, and each peer keeps the label it has)",
                escape(&old.name),
                escape(&g.name)
            );
        }
        GroupAction::Leave => {
            need_name("leave")?;
            let r = agent.leave_group(&name).await?;
            if r.group.owner.as_ref() == Some(&me) {
                say!(
                    "warning: you owned '{}': with you gone nobody can add members (ours refuse anyone else's additions); it can only shrink",
                    escape(&r.group.name)
                );
            }
            let others = r.told.len() + r.failed.len();
            say!(
                "left '{}': told {}/{others} member(s); its copies are dropped from now on. Rejoin later with `retalk group join {}`",
                escape(&r.group.name),
                r.told.len(),
                escape(&r.group.name)
            );
        }
        GroupAction::Delete => {
            need_name("delete")?;
            let g = client::delete_group(store, &name)?;
            say!(
                "deleted group '{}' locally (peers keep their own copy; their next copy brings it back, with its owner)",
                escape(&g.name)
            );
        }
    }
    Ok(())
}

/// `send TEXT --group NAME`: the receipt `{"id", "group", "group_id",
/// "sent", "failed"}` (counts), each failure on stderr; exit 2 when any
/// copy failed (`cmd_send`).
pub async fn send(agent: &Agent, group: &str, text: &str, save: bool) -> Result<(), CliError> {
    // Before the sync: an unknown group changes nothing.
    client::find_group(agent.store(), group).map_err(|e| match e {
        ClientError::Group(retalk_proto::group::GroupError::UnknownGroup(_)) => {
            CliError::Usage(format!(
                "no group '{}' — create one with `retalk group create NAME --members ...`",
                escape(group)
            ))
        }
        e => e.into(),
    })?;
    agent.sync(true).await?;
    let r = agent.send_group(group, text).await?;
    if save && !r.sent.is_empty() {
        // Our side of the thread, for `history --group` (0.3.0 `_save_sent`).
        agent.save_sent(
            &r.id,
            r.group_id.as_str(),
            text,
            Some(client::GroupTag {
                id: r.group_id.to_string(),
                name: r.group.clone(),
            }),
        )?;
    }
    print_stdout(&py_object(&[
        ("id", r.id.clone().into()),
        ("group", r.group.clone().into()),
        ("group_id", r.group_id.as_str().into()),
        ("sent", r.sent.len().into()),
        ("failed", r.failed.len().into()),
    ]))?;
    say!(
        "sent to group '{}' ({}/{} members)",
        escape(&r.group),
        r.sent.len(),
        r.sent.len() + r.failed.len()
    );
    for (fp, err) in &r.failed {
        say!("  \u{2717} {fp}: {}", escape(err));
    }
    if r.failed.is_empty() {
        Ok(())
    } else {
        Err(CliError::Usage(format!(
            "{} of the group's copies failed",
            r.failed.len()
        )))
    }
}

/// The order the extra fields of a record are printed in; others follow.
const FIELD_ORDER: [&str; 14] = [
    "kind",
    "group",
    "group_id",
    "owner",
    "added",
    "removed",
    "reason",
    "size",
    "cap",
    "added_count",
    "removed_count",
    "code",
    "card",
    "member",
];

/// One `receive` line (0.3.0): `{"id", "from", "name", "text"}` for mail;
/// a group copy adds `group`, `group_id` (Python's flat tags; `mid` is
/// dropped as Python's CLI does) and `member: false` when its sender is
/// not in the roster held here; a record (a roster change adopted or
/// refused, a leave, an invite request) has `kind` and its fields instead
/// of `text`. Invite records have Python's shape (`invite_watch`).
pub fn receive_line(m: &retalk_proto::client::Received) -> String {
    let extra = m.extra_fields();
    let kind = extra.get("kind").and_then(Value::as_str).map(str::to_owned);
    let s = |v: &str| Value::from(v);
    let mut pairs: Vec<(&str, Value)> = Vec::new();
    match kind.as_deref() {
        Some(client::REJECTED) => {
            pairs.push(("kind", s(client::REJECTED)));
            pairs.push(("from", s(m.from.as_str())));
            pairs.push(("reason", extra.get("reason").cloned().unwrap_or_default()));
            return py_object(&pairs);
        }
        Some(client::ACCEPTED) => {
            pairs.push(("kind", s(client::ACCEPTED)));
            pairs.push(("code", extra.get("code").cloned().unwrap_or_default()));
            pairs.push(("from", s(m.from.as_str())));
            pairs.push(("name", extra.get("name").cloned().unwrap_or_default()));
            pairs.push(("card", extra.get("card").cloned().unwrap_or_default()));
            return py_object(&pairs);
        }
        _ => {}
    }
    pairs.push(("id", s(&m.id)));
    pairs.push(("from", s(m.from.as_str())));
    pairs.push(("name", s(&m.name)));
    if kind.is_none() {
        pairs.push(("text", s(&m.text)));
    }
    for k in FIELD_ORDER {
        if let Some(v) = extra.get(k) {
            pairs.push((k, v.clone()));
        }
    }
    for (k, v) in &extra {
        if !FIELD_ORDER.contains(&k.as_str()) && k != "mid" {
            pairs.push((k, v.clone()));
        }
    }
    py_object(&pairs)
}

/// A record (not a message) in words, for `receive`'s human output:
/// `[group_update team: added ID; removed ID]`, `[group_update_refused
/// team: not-member; added ID]`, `[contact_request_rejected: consumed]`.
pub fn record_note(m: &retalk_proto::client::Received) -> String {
    let extra = m.extra_fields();
    let field = |k: &str| extra.get(k).and_then(Value::as_str).unwrap_or_default();
    let list = |k: &str| {
        extra
            .get(k)
            .and_then(Value::as_array)
            .filter(|a| !a.is_empty())
            .map(|a| {
                let ids: Vec<&str> = a.iter().filter_map(Value::as_str).collect();
                format!("{k} {}", ids.join(", "))
            })
    };
    let mut parts: Vec<String> = Vec::new();
    if !field("reason").is_empty() {
        parts.push(field("reason").to_owned());
    }
    // An over-cap roster is told in counts (`group_update_refused`).
    let count = |k: &str| extra.get(k).and_then(Value::as_u64);
    if let (Some(size), Some(cap)) = (count("size"), count("cap")) {
        parts.push(format!(
            "{size} members, cap {cap}, {} added, {} removed",
            count("added_count").unwrap_or_default(),
            count("removed_count").unwrap_or_default()
        ));
    }
    parts.extend(list("added"));
    parts.extend(list("removed"));
    let mut note = format!("[{}", field("kind"));
    if !field("group").is_empty() {
        note.push(' ');
        // A peer's label: escaped here, so a newline in it cannot start
        // a line of its own in `receive`'s output.
        note.push_str(&escape(field("group")));
    }
    if !parts.is_empty() {
        note.push_str(": ");
        note.push_str(&parts.join("; "));
    }
    note.push(']');
    note
}
