//! Saved history on the command line (0.3.0): whether to save
//! (`--save`, `RETALK_SAVE_MESSAGE`), the warning for an identity without
//! a passphrase, and `history --peer P | --group NAME`.

use retalk_proto::client::{self, setting, Conversation, Direction, History, Store};
use retalk_proto::ClientError;
use retalk_store_sqlite::SqliteStore;

use crate::args::Selection;
use crate::error::CliError;
use crate::identity;
use crate::{book, print_stdout, py_json, unlock_error};

/// Whether to save message texts (0.3.0 `_save_messages_on`): `--save`,
/// else a truthy `RETALK_SAVE_MESSAGE`.
pub fn wanted(flag: bool) -> Result<bool, CliError> {
    Ok(flag || client::save_requested(identity::env_text("RETALK_SAVE_MESSAGE")?.as_deref()))
}

/// 0.3.0's `_warn_unsealed_save`: an identity without a passphrase seals
/// under a public constant.
pub fn warn_if_unsealed<S: Store + ?Sized>(store: &S) -> Result<(), CliError> {
    if store
        .setting(setting::NO_PASSPHRASE)
        .map_err(ClientError::from)?
        .as_deref()
        == Some("1")
    {
        say!("retalk: warning: saving messages on a --no-passphrase identity stores message bodies with no real protection (its store key is a public constant); the folder's file permissions are the only guard");
    }
    Ok(())
}

/// Opens the selected identity for reading its history without its
/// relay: its store and passphrase, checked (a wrong one is refused as
/// everywhere). `history` and `show` share it.
pub fn open_reader(sel: &Selection) -> Result<(SqliteStore, String), CliError> {
    let (located, store, secret) = identity::open_with_secret(sel)?;
    History::open(&store, &secret).map_err(|e| unlock_error(e, &located))?;
    Ok((store, secret))
}

/// `history [--peer P | --group NAME]` (0.3.0 `cmd_history`): one JSON
/// line per saved message, oldest first, `{"id", "from", "name",
/// "direction", "text"}` plus `group`, `group_id` for group rows. Never
/// contacts the relay.
pub fn run(sel: &Selection, peer: Option<String>, group: Option<String>) -> Result<(), CliError> {
    let (store, secret) = open_reader(sel)?;
    if peer.is_some() && group.is_some() {
        return Err(CliError::Usage("give --peer or --group, not both".into()));
    }
    let contacts = book::effective(&store)?;
    let of = match (&peer, &group) {
        (Some(p), None) => Some(Conversation::Peer(book::peer_to_id(&contacts, p)?)),
        (None, Some(g)) => Some(find_group(&store, g)?),
        _ => None,
    };
    let history = History::open(&store, &secret)?.with_contacts(contacts);
    // 0.3.0 names our own rows "me" when the identity has no name.
    let me = if history.my_name().is_empty() {
        "me".to_owned()
    } else {
        history.my_name().to_owned()
    };
    for e in history.entries(of.as_ref(), 0)? {
        let name = match e.direction {
            Direction::Out => me.as_str(),
            Direction::In => e.name.as_str(),
        };
        let mut line = py_json(&[
            ("id", &e.id),
            ("from", e.from.as_str()),
            ("name", name),
            ("direction", e.direction.as_str()),
            ("text", &e.text),
        ]);
        if let Conversation::Group { id, name } = &e.conversation {
            line.pop();
            let tail = py_json(&[("group", name), ("group_id", id)]);
            line.push_str(", ");
            line.push_str(&tail[1..]);
        }
        print_stdout(&line)?;
    }
    Ok(())
}

/// The group a `--group` reference (its name or id) means.
fn find_group<S: Store + ?Sized>(store: &S, reference: &str) -> Result<Conversation, CliError> {
    store
        .groups()
        .map_err(ClientError::from)?
        .into_iter()
        .find(|g| g.name == reference || g.id.as_str() == reference)
        .map(|g| Conversation::Group {
            id: g.id.as_str().to_owned(),
            name: g.name,
        })
        .ok_or_else(|| CliError::Usage(format!("no group '{reference}' — see `retalk group list`")))
}
