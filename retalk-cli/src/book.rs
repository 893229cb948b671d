//! The 0.3.0 address book: the owner-wide contact list
//! (`$RETALK_HOME/contacts.db`) overlaid by each identity's own, contact
//! cards (`contacts --show`, `share`, `import`), the contact inbox
//! (`import --inbox`), as Python retalk 0.3.0's `cli.py` has them
//! (`_effective_peers`, `_build_card`, `cmd_add`, `cmd_contacts`,
//! `_save_card`, `cmd_import`).

use base64::engine::general_purpose::STANDARD_NO_PAD;
use base64::Engine;
use retalk_proto::client::{overlay, Contact, Located, ReceivedContact, Store, StoreTransaction};
use retalk_proto::ids::fingerprint;
use retalk_proto::{ClientError, UserId};
use retalk_store_sqlite::{GlobalContacts, SqliteStore, GLOBAL_CONTACTS_FILE};
use serde_json::Value;

use crate::args::Selection;
use crate::error::CliError;
use crate::identity::{self, open_store, resolve};
use crate::{print_stdout, py_json};

/// The owner-wide list.
pub fn global() -> Result<GlobalContacts, CliError> {
    let path = identity::checked_home()?.join(GLOBAL_CONTACTS_FILE);
    GlobalContacts::open(&path).map_err(|source| CliError::GlobalContacts { path, source })
}

/// The contacts an identity sees: the global list overlaid with its own.
pub fn effective(store: &SqliteStore) -> Result<Vec<Contact>, CliError> {
    Ok(overlay(
        global()?.contacts()?,
        store.contacts().map_err(ClientError::from)?,
    ))
}

/// The peer a reference means among `contacts`: a saved id, a saved name,
/// else any 32-hex id (0.3.0 `_resolve_peer`).
pub fn resolve_peer(contacts: &[Contact], reference: &str) -> Option<UserId> {
    if let Some(c) = contacts
        .iter()
        .find(|c| c.id.as_str() == reference || c.name == reference)
    {
        return Some(c.id.clone());
    }
    UserId::parse(reference).ok()
}

/// [`resolve_peer`], or 0.3.0's `_peer_to_id` refusal.
pub fn peer_to_id(contacts: &[Contact], reference: &str) -> Result<UserId, CliError> {
    resolve_peer(contacts, reference).ok_or_else(|| CliError::UnknownPeer(reference.to_owned()))
}

/// Whether the command line names an identity (0.3.0: `--dir`, `-u NAME`,
/// `RETALK_USER`; ours also takes the 0.0.1 selectors): without one, the
/// contact commands work on the global list.
pub fn identity_selected(sel: &Selection) -> Result<bool, CliError> {
    Ok(sel.dir.is_some()
        || sel.dir_030.is_some()
        || sel.user_level.is_some()
        || sel.user.as_deref().is_some_and(|u| !u.is_empty())
        || identity::env_text("RETALK_USER")?.is_some_and(|u| !u.is_empty())
        || identity::env_text("STORE")?.is_some_and(|u| !u.is_empty()))
}

/// A saved contact's label, if it has one (an unnamed one is saved under
/// its id).
fn label(c: &Contact) -> Option<&str> {
    (c.name != c.id.as_str()).then_some(c.name.as_str())
}

/// A contact card as Python's `json.dumps` writes it.
pub fn card_json(fp: &str, name: &str, ik: &str, sk: &str, verified: bool) -> String {
    let mut card = py_json(&[
        ("fingerprint", fp),
        ("name", name),
        ("identity_key", ik),
        ("signing_key", sk),
    ]);
    card.pop();
    card.push_str(if verified {
        ", \"verified\": true}"
    } else {
        ", \"verified\": false}"
    });
    card
}

/// A card for `contact` (0.3.0 `_build_card`): keys only when it is a
/// verified saved contact; name `as_name`, else the saved one, else "".
/// Returns (fingerprint, name, card JSON, verified).
pub fn build_card(
    contacts: &[Contact],
    contact: &str,
    as_name: Option<&str>,
) -> Result<(UserId, String, String, bool), CliError> {
    let fp = resolve_peer(contacts, contact).ok_or_else(|| {
        CliError::Usage(format!(
            "unknown contact '{contact}': save it with `retalk add {contact}`, or pass a 32-hex user id"
        ))
    })?;
    let saved = contacts.iter().find(|c| c.id == fp);
    let name = as_name
        .filter(|n| !n.is_empty())
        .or_else(|| saved.and_then(label))
        .unwrap_or("")
        .to_owned();
    let (ik, sk) = match saved {
        Some(c) if c.verified() => (
            c.pin.clone().unwrap_or_default(),
            c.signing_key.clone().unwrap_or_default(),
        ),
        _ => (String::new(), String::new()),
    };
    let verified = !ik.is_empty() && !sk.is_empty();
    let card = card_json(fp.as_str(), &name, &ik, &sk, verified);
    Ok((fp, name, card, verified))
}

/// Saves `id` in an identity's store as 0.3.0 keys its `peers` by
/// fingerprint: whatever was saved for `id` is replaced (keys reset unless
/// given), and a name held by another contact is taken from it (left
/// unnamed).
pub fn save_own(
    store: &SqliteStore,
    id: &UserId,
    name: Option<&str>,
    keys: Option<(&str, &str)>,
) -> Result<(), CliError> {
    let mut tx = StoreTransaction::new(store).map_err(ClientError::from)?;
    let name = name.unwrap_or(id.as_str()).to_owned();
    for c in store.contacts().map_err(ClientError::from)? {
        if c.id == *id && c.name != name {
            tx.changes.contacts_removed.push(c.name);
        } else if c.id != *id && c.name == name {
            tx.changes.contacts.push(Contact {
                name: c.id.to_string(),
                ..c
            });
        }
    }
    tx.changes.contacts.push(Contact {
        name,
        id: id.clone(),
        pin: keys.map(|k| k.0.to_owned()),
        signing_key: keys.map(|k| k.1.to_owned()),
    });
    tx.commit().map_err(ClientError::from)?;
    Ok(())
}

/// 0.3.0's `_suggest_free_name`: bob -> bob-1, bob-1 -> bob-2, ... the
/// first not taken.
pub fn suggest_free_name(taken: &[String], name: &str) -> String {
    let (base, mut n) = match name.rsplit_once('-') {
        Some((b, d)) if !d.is_empty() && d.bytes().all(|c| c.is_ascii_digit()) => {
            (b, d.parse::<u64>().unwrap_or(0))
        }
        _ => (name, 0),
    };
    loop {
        n += 1;
        let candidate = format!("{base}-{n}");
        if !taken.contains(&candidate) {
            return candidate;
        }
    }
}

/// Where `add` writes.
pub enum Target {
    Own(SqliteStore),
    Global(GlobalContacts),
}

impl Target {
    fn contacts(&self) -> Result<Vec<Contact>, CliError> {
        Ok(match self {
            Target::Own(s) => s.contacts().map_err(ClientError::from)?,
            Target::Global(g) => g.contacts()?,
        })
    }

    fn put(
        &self,
        id: &UserId,
        name: Option<&str>,
        keys: Option<(&str, &str)>,
    ) -> Result<(), CliError> {
        match self {
            Target::Own(s) => save_own(s, id, name, keys),
            Target::Global(g) => Ok(g.put(id, name, keys)?),
        }
    }

    fn describe(&self) -> &'static str {
        match self {
            Target::Own(_) => "your contacts",
            Target::Global(_) => "the global contacts",
        }
    }
}

/// `add FINGERPRINT [--peer NAME] [--override] [--global]` (0.3.0
/// `cmd_add`): the global list unless an identity is selected (or with
/// `--global`); a name another contact holds is refused with a free
/// suggestion unless `--override`. Returns the id and the list written.
pub fn add(
    sel: &Selection,
    fp: &str,
    name: Option<&str>,
    override_name: bool,
    global_list: bool,
) -> Result<(UserId, Target), CliError> {
    let id = UserId::parse(fp)
        .map_err(|_| CliError::Usage("fingerprint must be 32 hex characters".into()))?;
    if let Some(n) = name {
        if UserId::parse(n).is_ok() {
            return Err(CliError::Usage(
                "--peer looks like a user id — give a human name".into(),
            ));
        }
        if !crate::display::valid_saved_name(n) {
            return Err(bad_name(n));
        }
    }
    let selected = sel.dir_030.is_some() || sel.user.as_deref().is_some_and(|u| !u.is_empty());
    let target = if global_list {
        if selected {
            return Err(CliError::Usage(
                "--global and --user/--dir target different lists — pick one".into(),
            ));
        }
        Target::Global(global()?)
    } else if identity_selected(sel)? {
        Target::Own(open_store(&resolve(sel, None)?.dir)?)
    } else {
        Target::Global(global()?)
    };
    let saved = target.contacts()?;
    if let Some(n) = name {
        if let Some(clash) = saved.iter().find(|c| c.name == n && c.id != id) {
            if !override_name {
                let taken: Vec<String> =
                    saved.iter().filter_map(label).map(str::to_owned).collect();
                return Err(CliError::Usage(format!(
                    "a contact named '{n}' already exists (-> {}). Pick another name (e.g. '{}'), or pass --override to replace it",
                    clash.id,
                    suggest_free_name(&taken, n)
                )));
            }
        }
    }
    let had = saved.iter().any(|c| c.id == id);
    target.put(&id, name, None)?;
    say!(
        "{} contact {}({id}) in {}.",
        if had { "Updated" } else { "Added" },
        name.map(|n| format!("'{n}' ")).unwrap_or_default(),
        target.describe()
    );
    Ok((id, target))
}

/// `add`'s hints when it does not verify right away (0.3.0 `cmd_add`).
pub fn add_hints(id: &UserId, name: Option<&str>) {
    let r = name.map_or_else(|| id.to_string(), str::to_owned);
    say!("Next:");
    say!("  retalk verify {r}            \u{2014} check their keys against the relay");
    say!("  retalk send --peer {r} \"hi\"  \u{2014} send them a message");
    say!("  retalk contacts              \u{2014} see all saved peers");
}

/// `contacts [--json] [--show C [--as NAME]] [--remove C]` (0.3.0
/// `cmd_contacts`): the identity's view (global overlaid with its own),
/// or the global list when no identity is selected.
pub fn contacts(
    sel: &Selection,
    json: bool,
    show: Option<String>,
    as_name: Option<String>,
    remove: Option<String>,
) -> Result<(), CliError> {
    let own = if identity_selected(sel)? {
        Some(open_store(&resolve(sel, None)?.dir)?)
    } else {
        None
    };
    let global = global()?;
    let view = match &own {
        Some(store) => effective(store)?,
        None => global.contacts()?,
    };
    if let Some(reference) = remove {
        if show.is_some() {
            return Err(CliError::Usage(
                "pass --show to view a contact or --remove to delete one, not both".into(),
            ));
        }
        let gone = || CliError::Usage(format!("no saved contact '{reference}' to remove"));
        let fp = resolve_peer(&view, &reference).ok_or_else(gone)?;
        let c = view.iter().find(|c| c.id == fp).ok_or_else(gone)?;
        let nm = label(c).map(|n| format!("'{n}' ")).unwrap_or_default();
        let mine = match &own {
            Some(store) => {
                let held: Vec<String> = store
                    .contacts()
                    .map_err(ClientError::from)?
                    .into_iter()
                    .filter(|c| c.id == fp)
                    .map(|c| c.name)
                    .collect();
                if held.is_empty() {
                    false
                } else {
                    let mut tx = StoreTransaction::new(store).map_err(ClientError::from)?;
                    tx.changes.contacts_removed = held;
                    tx.commit().map_err(ClientError::from)?;
                    true
                }
            }
            None => false,
        };
        if !mine {
            global.remove(&fp)?;
        }
        say!(
            "removed contact {nm}({fp}) from {} contacts",
            if mine { "your" } else { "the global" }
        );
        return Ok(());
    }
    if let Some(reference) = show {
        let (fp, name, card, verified) = build_card(&view, &reference, as_name.as_deref())?;
        return print_stdout(&if json {
            card
        } else {
            format!(
                "{}\t{fp}\t{}",
                crate::display::escape(&name),
                if verified { "verified" } else { "unverified" }
            )
        });
    }
    let mut all = view;
    all.sort_by_key(|c| (label(c).unwrap_or("~").to_owned(), c.id.as_str().to_owned()));
    for c in &all {
        let verified = c.verified();
        let line = if json {
            // `cmd_contacts` lists `name` first, unlike a card.
            let mut line = py_json(&[
                ("name", label(c).unwrap_or("")),
                ("fingerprint", c.id.as_str()),
                ("identity_key", c.pin.as_deref().unwrap_or("")),
                ("signing_key", c.signing_key.as_deref().unwrap_or("")),
            ]);
            line.pop();
            line.push_str(if verified {
                ", \"verified\": true}"
            } else {
                ", \"verified\": false}"
            });
            line
        } else {
            format!(
                "{}\t{}\t{}",
                // A name from a Python folder or the owner-wide list may
                // hold anything: shown by `receive`'s rule.
                crate::display::escape(label(c).unwrap_or("(unnamed)")),
                c.id,
                if verified { "verified" } else { "unverified" }
            )
        };
        print_stdout(&line)?;
    }
    Ok(())
}

/// The fields of a card `import` reads.
struct Card {
    fp: String,
    name: String,
    ik: String,
    sk: String,
}

/// A name refused by the name rule, shown at most a little past the
/// longest allowed (a card's name may be a megabyte).
fn bad_name(name: &str) -> CliError {
    let max = retalk_proto::display::MAX_SAVED_NAME;
    let shown: String = name.chars().take(max + 1).collect();
    CliError::BadPeerName(if shown.len() < name.len() {
        format!("{shown}…")
    } else {
        shown
    })
}

/// Checks a card and saves it (0.3.0 `_save_card`); the refusal text is
/// Python's. Returns (name, id, verified).
///
/// Unlike 0.3.0, a card never takes over what is saved (a stranger's card
/// could otherwise redirect `send --peer alice`): a name another contact
/// holds is refused with a free suggestion, as `add` does, unless
/// `override_name`; a known fingerprint keeps its saved name unless `--as`
/// or `override_name` says otherwise; and a verified contact keeps its
/// keys when the card has none.
fn save_card(
    store: &SqliteStore,
    card: &Card,
    as_name: Option<&str>,
    override_name: bool,
    own: Option<&UserId>,
) -> Result<(String, UserId, bool), String> {
    let id = UserId::parse(&card.fp)
        .map_err(|_| "card has no valid fingerprint (expected 32 hex characters)".to_owned())?;
    if own.is_some_and(|own| *own == id) {
        return Err("the card is your own identity's -- a contact is someone else".into());
    }
    // The contacts `--peer` resolves against: the owner-wide list too.
    let saved = effective(store).map_err(|e| e.to_string())?;
    let known = saved.iter().find(|c| c.id == id);
    let as_name = as_name.filter(|n| !n.is_empty());
    // A card without a name is refused as in 0.3.0, even for a known id.
    let name = match (as_name, known.and_then(label)) {
        (Some(n), _) => n,
        (None, Some(kept)) if !override_name && !card.name.is_empty() => kept,
        _ => &card.name,
    }
    .to_owned();
    if name.is_empty() {
        return Err("card has no recommended nickname -- pass `--as NAME` to choose one".into());
    }
    if UserId::parse(&name).is_ok() {
        return Err("nickname looks like a user id -- give it a human name with `--as`".into());
    }
    if !crate::display::valid_saved_name(&name) {
        return Err(bad_name(&name).to_string());
    }
    if let Some(holder) = saved.iter().find(|c| c.name == name && c.id != id) {
        if !override_name {
            let taken: Vec<String> = saved.iter().filter_map(label).map(str::to_owned).collect();
            return Err(format!(
                "a contact named '{name}' already exists (-> {}). Pick another name with `--as` (e.g. '{}'), or pass --override to replace it",
                holder.id,
                suggest_free_name(&taken, &name)
            ));
        }
    }
    let keys = match (card.ik.as_str(), card.sk.as_str()) {
        ("", "") => None,
        ("", _) | (_, "") => {
            return Err("card has only one key: a verified card needs both identity_key and signing_key, or neither".into())
        }
        (ik, sk) => {
            for (field, key) in [("identity_key", ik), ("signing_key", sk)] {
                if STANDARD_NO_PAD.decode(key.trim_end_matches('=')).is_err() {
                    return Err(format!("card's {field} is not valid base64"));
                }
            }
            let got = fingerprint(ik, sk);
            if got != card.fp {
                return Err(format!(
                    "PIN MISMATCH: the card's keys hash to {got}, not {} -- refusing a contact whose keys do not match its id",
                    card.fp
                ));
            }
            Some((ik, sk))
        }
    };
    // Keys hash to the id, so a card can only bring the same keys: one
    // without keys must not unpin a verified contact.
    let pinned = known.and_then(|c| c.pin.as_deref().zip(c.signing_key.as_deref()));
    let keys = keys.or(pinned);
    save_own(store, &id, Some(&name), keys).map_err(|e| e.to_string())?;
    Ok((name, id, keys.is_some()))
}

/// This identity's id when its secret is at hand (`import` needs none, as
/// in 0.3.0): then a card of our own is refused. Without the secret the
/// id is not readable (it is derived from the encrypted account). Only a
/// 0.3.0 identity is asked: 0.0.1's secret may be a terminal prompt.
fn own_id(sel: &Selection, located: &Located, store: &SqliteStore) -> Option<UserId> {
    if located.generation != retalk_proto::client::Generation::V030 {
        return None;
    }
    let no_pass = store
        .setting(retalk_proto::client::setting::NO_PASSPHRASE)
        .ok()
        .flatten()
        .as_deref()
        == Some("1");
    let (secret, _) = identity::secret(sel, located.generation, false, no_pass).ok()?;
    let info = retalk_proto::client::identity_info(store, &secret).ok()?;
    Some(info.user_id)
}

fn imported(name: &str, id: &UserId, verified: bool) {
    say!(
        "imported contact '{name}' ({id}) [{}]",
        if verified { "verified" } else { "unverified" }
    );
}

/// `import [CARD|-] [--as NAME] [--override]`, `import --inbox [SELECTOR]
/// [--as NAME] [--override]`,
/// `import --inbox --list [--json]` (0.3.0 `cmd_import`).
pub fn import(
    sel: &Selection,
    card: Option<String>,
    as_name: Option<String>,
    inbox: bool,
    list: bool,
    json: bool,
    override_name: bool,
) -> Result<(), CliError> {
    let located = resolve(sel, None)?;
    let store = open_store(&located.dir)?;
    let own = own_id(sel, &located, &store);
    if !inbox {
        if list {
            return Err(CliError::Usage("--list only applies to --inbox".into()));
        }
        let raw = match card.as_deref() {
            None | Some("-") => crate::read_stdin()?,
            Some(text) => text.to_owned(),
        };
        let value: Value = serde_json::from_str(&raw).map_err(|e| {
            // A file's name given as CARD: say how a file goes in.
            let path_like = card.as_deref().is_some_and(|c| {
                c != "-" && !c.trim_start().starts_with('{') && std::path::Path::new(c).exists()
            });
            CliError::Usage(if path_like {
                format!("card is not valid JSON: {e}; CARD is JSON text -- to import the file, use `retalk import - < FILE`")
            } else {
                format!("card is not valid JSON: {e}")
            })
        })?;
        let Value::Object(m) = value else {
            return Err(CliError::Usage(
                "card must be a JSON object (see `retalk contacts --show`)".into(),
            ));
        };
        // Absent or null is "" (0.3.0's `card.get(k) or ""`); anything
        // but text is an error, never read as no keys.
        let field = |k: &str| match m.get(k) {
            None | Some(Value::Null) => Ok(String::new()),
            Some(Value::String(v)) => Ok(v.clone()),
            // The kind, not the value: a card may be any size.
            Some(other) => Err(CliError::Usage(format!(
                "card field '{k}' must be text, not {}",
                match other {
                    Value::Bool(_) => "true/false",
                    Value::Number(_) => "a number",
                    Value::Array(_) => "a list",
                    _ => "an object",
                }
            ))),
        };
        let card = Card {
            fp: field("fingerprint")?,
            name: field("name")?,
            ik: field("identity_key")?,
            sk: field("signing_key")?,
        };
        let (name, id, verified) = save_card(
            &store,
            &card,
            as_name.as_deref(),
            override_name,
            own.as_ref(),
        )
        .map_err(CliError::Usage)?;
        imported(&name, &id, verified);
        return Ok(());
    }
    let staged = store.received_contacts().map_err(ClientError::from)?;
    if list {
        if as_name.is_some() {
            return Err(CliError::Usage(
                "--as has no meaning with --list (nothing is imported)".into(),
            ));
        }
        for r in &staged {
            let verified = !r.identity_key.is_empty() && !r.signing_key.is_empty();
            let line = if json {
                staged_json(r, verified)
            } else {
                let via = if !r.from_name.is_empty() {
                    r.from_name.as_str()
                } else {
                    r.from.as_str()
                };
                format!(
                    "{}\t{}\t{}\tfrom {via}",
                    r.name,
                    r.id,
                    if verified { "verified" } else { "unverified" }
                )
            };
            print_stdout(&line)?;
        }
        return Ok(());
    }
    let rows: Vec<&ReceivedContact> = match card.as_deref() {
        Some(selector) => {
            let rows: Vec<_> = staged
                .iter()
                .filter(|r| r.name == selector || r.id.as_str() == selector)
                .collect();
            if rows.is_empty() {
                return Err(CliError::Usage(format!(
                    "no staged contact matching '{selector}' (see `retalk import --inbox --list`)"
                )));
            }
            rows
        }
        None => staged.iter().collect(),
    };
    if as_name.is_some() && rows.len() != 1 {
        return Err(CliError::Usage(
            "--as needs exactly one contact: name the staged contact to import".into(),
        ));
    }
    if rows.is_empty() {
        say!("import --inbox: inbox empty");
        return Ok(());
    }
    let (mut done, mut refused) = (0, 0);
    for r in rows {
        let card = Card {
            fp: r.id.to_string(),
            name: r.name.clone(),
            ik: r.identity_key.clone(),
            sk: r.signing_key.clone(),
        };
        match save_card(
            &store,
            &card,
            as_name.as_deref(),
            override_name,
            own.as_ref(),
        ) {
            Ok((name, id, verified)) => {
                let mut tx = StoreTransaction::new(&store).map_err(ClientError::from)?;
                tx.changes.received_contacts_removed.push(r.id.clone());
                tx.commit().map_err(ClientError::from)?;
                done += 1;
                imported(&name, &id, verified);
            }
            Err(why) => {
                say!("retalk: kept staged (not imported): {why}");
                refused += 1;
            }
        }
    }
    say!("import --inbox: {done} imported, {refused} refused");
    if refused > 0 {
        return Err(CliError::Usage(format!(
            "{refused} staged contact(s) refused"
        )));
    }
    Ok(())
}

/// A staged card as `import --inbox --list --json` prints it (0.3.0: the
/// row's columns in select order, then `verified`).
fn staged_json(r: &ReceivedContact, verified: bool) -> String {
    let mut line = py_json(&[
        ("fingerprint", r.id.as_str()),
        ("name", &r.name),
        ("identity_key", &r.identity_key),
        ("signing_key", &r.signing_key),
        ("from_fp", r.from.as_str()),
        ("from_name", &r.from_name),
        ("msg_id", &r.msg_id),
    ]);
    line.pop();
    line.push_str(", \"ts\": ");
    line.push_str(&retalk_proto::canonical::python_float_repr(r.at));
    line.push_str(if verified {
        ", \"verified\": true}"
    } else {
        ", \"verified\": false}"
    });
    line
}

/// 0.3.0's `_bash_block` without colour (it colours only a terminal's
/// stderr; these go to stdout): a fenced `bash` block.
pub fn bash_block(lines: &[String]) -> String {
    let mut out = vec!["```bash".to_owned()];
    out.extend(lines.iter().cloned());
    out.push("```".to_owned());
    out.join("\n")
}

/// `id --invite-message [--code CODE]` (0.3.0 `_invite_message`): a
/// copy-paste snippet that onboards a peer and adds us.
pub fn invite_message(fp: &str, name: &str, relay: Option<&str>, code: Option<&str>) -> String {
    let name = if name.is_empty() { "me" } else { name };
    let relay = relay.unwrap_or("\"<relay-url>\"");
    let mut lines: Vec<String> = vec![
        "# Message me over retalk, an end-to-end-encrypted messaging CLI.".into(),
        "# 1. Install retalk if not installed yet -- or: uv tool install retalk".into(),
        "pip install -U retalk".into(),
        "# 2. Create your identity. init also prints a reply block to send me.".into(),
        "#    To name the identity, add: -u <your-username>".into(),
        format!("retalk init --relay {relay} --passphrase \"<PRIVATE-PASSPHRASE>\""),
    ];
    match code {
        Some(code) => lines.extend([
            "# 3. Redeem my invite code. This adds me as your verified contact".into(),
            "#    AND sends me an encrypted request so I add you back. Done.".into(),
            format!("retalk request {fp} --code {code} --peer {name}"),
            format!("# Invite code: {code}"),
        ]),
        None => lines.extend([
            "# 3. Add me as a contact. For a user-specific contact, add: -u <your-username>".into(),
            format!("retalk add {fp} --peer {name} --verify"),
            "# 4. Send me the reply block that step 2 printed, so I can add you back".into(),
        ]),
    }
    bash_block(&lines)
}

/// `id --invite-reply` (0.3.0 `_invite_reply`): the answer to an invite.
pub fn invite_reply(fp: &str, name: &str) -> String {
    let name = if name.is_empty() { "me" } else { name };
    bash_block(&[
        "# Got your invite for retalk.".into(),
        "# Add me back. For a user-specific contact, add: --user <your-name>".into(),
        format!("retalk add {fp} --peer {name} --verify"),
        "# Then we can message each other.".into(),
    ])
}

/// `id --card` (0.3.0 `cmd_id`): our own card for people.
pub fn card_text(fp: &str, name: &str, relay: Option<&str>, ik: &str, sk: &str) -> String {
    let mut out = vec![
        format!(
            "Name:         {}",
            if name.is_empty() { "(unnamed)" } else { name }
        ),
        format!("Fingerprint:  {fp}"),
    ];
    if let Some(relay) = relay {
        out.push(format!("Relay:        {relay}"));
    }
    out.push("Verified:     yes".into());
    out.push(format!("Identity key: {ik}"));
    out.push(format!("Signing key:  {sk}"));
    out.join("\n")
}

/// The project-local identity home: `.retalk` at the git root, else in the
/// current folder (0.3.0 `_local_home`; consulted only by `init`'s naming
/// and `id --last`).
fn local_home() -> std::path::PathBuf {
    let cwd = std::env::current_dir().unwrap_or_default();
    cwd.ancestors()
        .find(|d| d.join(".git").exists())
        .unwrap_or(&cwd)
        .join(".retalk")
}

/// The identity folders under `$RETALK_HOME` and the local home.
pub fn identity_folders() -> Vec<std::path::PathBuf> {
    let mut homes = vec![identity::retalk_home(), local_home()];
    homes.dedup_by(|a, b| a.canonicalize().ok() == b.canonicalize().ok());
    homes
        .iter()
        .filter_map(|h| std::fs::read_dir(h).ok())
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| identity::has_identity(p))
        .collect()
}

/// `init`'s name when none was given (0.3.0 `_next_default_user`): the
/// login name and the next number not taken, `alice-1`, `alice-2`, ...
pub fn next_default_user() -> String {
    let base = ["LOGNAME", "USER", "LNAME", "USERNAME"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
        .or_else(account_name)
        .unwrap_or_else(|| "user".into());
    let highest = identity_folders()
        .iter()
        .filter_map(|p| {
            let name = p.file_name()?.to_str()?;
            let digits = name.strip_prefix(&base)?.strip_prefix('-')?;
            (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
                .then(|| digits.parse::<u64>().ok())
                .flatten()
        })
        .max()
        .unwrap_or(0);
    format!("{base}-{}", highest + 1)
}

/// This process's account name from the password database, as Python's
/// `getpass.getuser` falls back to (Unix: the owner of `/proc/self`).
fn account_name() -> Option<String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let uid = std::fs::metadata("/proc/self").ok()?.uid().to_string();
        let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
        passwd.lines().find_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            (f.nth(1)? == uid).then(|| name.to_owned())
        })
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// The identity created last (0.3.0 `_latest_identity`, for `id
/// --last`): by the `created_at` `init` saves, else by the store's
/// modification time.
pub fn latest_identity() -> Option<std::path::PathBuf> {
    let stamp = |dir: &std::path::Path| -> f64 {
        let saved = open_store(dir)
            .ok()
            .and_then(|s| s.setting("created_at").ok().flatten())
            .and_then(|v| v.trim().parse::<f64>().ok());
        saved.unwrap_or_else(|| {
            std::fs::metadata(dir.join(identity::STORE_FILE))
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0.0, |d| d.as_secs_f64())
        })
    };
    identity_folders()
        .into_iter()
        .map(|d| (stamp(&d), d))
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, d)| d)
}

#[cfg(test)]
mod tests {
    use super::suggest_free_name;

    #[test]
    fn free_names_as_python_suggests_them() {
        let taken = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(suggest_free_name(&taken(&["bob"]), "bob"), "bob-1");
        assert_eq!(suggest_free_name(&taken(&["bob", "bob-1"]), "bob"), "bob-2");
        assert_eq!(suggest_free_name(&taken(&["bob-1"]), "bob-1"), "bob-2");
        assert_eq!(suggest_free_name(&taken(&[]), "a-b"), "a-b-1");
    }
}
