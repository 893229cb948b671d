//! `retalk receive [--follow] [--json] [--limit N]`; `--follow` is the
//! library's follow driver ([`Client::follow`](retalk_proto::Client::follow)).

use std::cell::Cell;
use std::future::Future;
use std::io::IsTerminal;
use std::pin::pin;
use std::task::Poll;

use retalk_proto::canonical::push_json_string;
use retalk_proto::client::{
    Follow, Followed, GroupTag, Inbox, Problem, Received, ReceivedContact, StoreTransaction,
};
use retalk_proto::{ClientError, UserId};
use serde_json::Value;

use crate::error::CliError;
use crate::{display, print_stdout, py_json, Agent};

/// Prints up to `limit` waiting messages. The library removes each from
/// the local inbox only once its line is written, and holds the identity's
/// lock meanwhile, so a closed pipe or a crash loses nothing and processes
/// sharing the identity never print one twice.
fn emit(agent: &Agent, json: bool, limit: usize) -> Result<usize, CliError> {
    agent.take_messages(limit, |m| print(json, m))
}

/// One message's line on stdout. A record that is not a message (a roster
/// change, a leave, an invite request) is shown too: as 0.3.0's JSON line,
/// or as a bracketed note after the sender's name.
fn print(json: bool, m: &Received) -> Result<(), CliError> {
    let text = match m.kind() {
        Some(_) if json => return print_stdout(&crate::group::receive_line(m)),
        Some(_) => crate::group::record_note(m),
        None => m.text.clone(),
    };
    let line = if json {
        py_json(&[
            ("from", m.from.as_str()),
            ("name", &m.name),
            ("text", &m.text),
        ])
    } else {
        let who = if m.name.is_empty() {
            m.from.as_str()
        } else {
            &m.name
        };
        display::human(who, &text)
    };
    print_stdout(&line)
}

pub(crate) fn report(inbox: &Inbox) {
    for p in &inbox.problems {
        skipped(p);
    }
}

/// A skipped message on stderr: its `from` comes from the relay and its
/// reason may quote the sender, so both are escaped like message text.
fn skipped(p: &Problem) {
    say!(
        "retalk: skipped a message from {}: {}",
        display::escape(&p.from),
        display::escape(&p.reason)
    );
}

/// `limit`: print at most this many in all, then stop (the rest stay in
/// the local inbox for the next call).
pub async fn run(
    agent: &Agent,
    follow: bool,
    json: bool,
    limit: Option<usize>,
) -> Result<(), CliError> {
    let mut left = limit.unwrap_or(usize::MAX);
    // Messages a previous run saved but could not print come first.
    left -= emit(agent, json, left)?;
    if left == 0 {
        return Ok(());
    }
    if !follow {
        let inbox = agent.fetch().await?;
        report(&inbox);
        emit(agent, json, left)?;
        return Ok(());
    }

    let progress = std::io::stderr().is_terminal();
    if progress {
        say!("listening for messages (Ctrl-C to stop)");
    }
    let follow = Follow::default();
    // Stops on Ctrl-C/SIGTERM, or as soon as `--limit` lines are out.
    let left = Cell::new(left);
    let mut signalled = pin!(interrupted());
    let stop = std::future::poll_fn(|cx| {
        if left.get() == 0 {
            Poll::Ready(())
        } else {
            signalled.as_mut().poll(cx)
        }
    });
    let result = agent
        .follow(&follow, stop, |event| match event {
            Followed::Message(m) => {
                if left.get() == 0 {
                    return Err(Stop::Limit); // kept for the next call
                }
                print(json, m)?;
                left.set(left.get() - 1);
                Ok(())
            }
            Followed::Problem(p) => {
                skipped(&p);
                Ok(())
            }
            Followed::Maintained(r) => {
                for e in &r.flush.expired {
                    say!(
                        "retalk: gave up on message {} to {}: no acknowledgement for 30 days",
                        e.envelope_id,
                        e.peer
                    );
                }
                if progress {
                    say!(
                        "keys: {} one-time keys on the relay{}{}; resent {}",
                        r.unclaimed,
                        if r.replenished { ", replenished" } else { "" },
                        if r.fallback_rotated {
                            ", fallback key rotated"
                        } else {
                            ""
                        },
                        r.flush.sent
                    );
                }
                Ok(())
            }
            Followed::MaintainFailed(e) => {
                say!("retalk: key maintenance failed: {e} (will retry)");
                Ok(())
            }
            Followed::Unreachable { error, retry_in } => {
                say!("retalk: {error} (retrying in {retry_in}s)");
                Ok(())
            }
            Followed::Polling => {
                if progress {
                    say!(
                        "the relay does not hold reads open (a Python relay?): polling every {}s",
                        follow.poll
                    );
                }
                Ok(())
            }
        })
        .await;
    match result {
        Ok(()) | Err(Stop::Limit) => Ok(()),
        Err(Stop::Cli(e)) => Err(e),
    }
}

/// Why the follow loop ended early.
enum Stop {
    /// `--limit` messages were printed.
    Limit,
    Cli(CliError),
}

impl From<CliError> for Stop {
    fn from(e: CliError) -> Self {
        Stop::Cli(e)
    }
}

impl From<ClientError> for Stop {
    fn from(e: ClientError) -> Self {
        Stop::Cli(e.into())
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub(crate) async fn interrupted() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// What a 0.3.0 `receive` keeps besides printing.
#[derive(Debug, Clone, Copy)]
pub struct Keep {
    /// Messages, in the history (`--save`, `RETALK_SAVE_MESSAGE`).
    pub messages: bool,
    /// Contact cards, staged for `import --inbox` (unless
    /// `--no-save-contacts`).
    pub contacts: bool,
}

/// 0.3.0's `receive --peer P... | --all`: one JSON line per message,
/// `{"id", "from", "name", "text"}` as Python's `json.dumps` writes it
/// (`cli.py`, `cmd_receive`), a shared card as `{"id", "from", "name",
/// "kind": "contact", "card"}`. `from` empty: every sender. `--follow`
/// reads again every `interval` seconds until Ctrl-C or SIGTERM.
pub async fn run_030(
    agent: &Agent,
    from: &[UserId],
    follow: bool,
    interval: f64,
    limit: Option<usize>,
    keep: Keep,
) -> Result<(), CliError> {
    let scope = (!from.is_empty()).then_some(from);
    let mut left = limit.unwrap_or(usize::MAX);
    loop {
        if from.is_empty() {
            report(&agent.fetch().await?);
        } else {
            for peer in from {
                report(&agent.fetch_from(peer).await?);
            }
        }
        left -= agent.take_messages_from(scope, left, |m| deliver_030(agent, m, keep))?;
        if !follow || left == 0 {
            return Ok(());
        }
        tokio::select! {
            _ = interrupted() => return Ok(()),
            _ = tokio::time::sleep(std::time::Duration::from_secs_f64(interval)) => {}
        }
    }
}

/// Prints one received record, first keeping what `keep` asks for (so a
/// printed line is never missing from the history).
fn deliver_030(agent: &Agent, m: &Received, keep: Keep) -> Result<(), CliError> {
    let card = kept(agent, m, keep)?;
    if let Some(card) = card {
        let mut line = py_json(&[
            ("id", &m.id),
            ("from", m.from.as_str()),
            ("name", &m.name),
            ("kind", "contact"),
        ]);
        line.pop();
        line.push_str(", \"card\": ");
        line.push_str(&card_text(&card));
        line.push('}');
        return print_stdout(&line);
    }
    // Mail, group copies, and roster/leave/invite records (group.rs).
    print_stdout(&crate::group::receive_line(m))
}

/// Keeps what `keep` asks for of one received record: a message (a group
/// copy under its group) in the history, a contact card staged; returns
/// the card when the record is one. Also `show --follow`'s saving.
pub(crate) fn kept(agent: &Agent, m: &Received, keep: Keep) -> Result<Option<Value>, CliError> {
    let extra = m.extra_fields();
    let kind = extra.get("kind").and_then(Value::as_str);
    if kind == Some("contact") {
        let card = extra.get("card").cloned().unwrap_or_default();
        if keep.contacts {
            stage_card(agent, m, &card)?;
        }
        return Ok(Some(card));
    }
    if keep.messages && kind.is_none() {
        let group = match (extra.get("group_id"), extra.get("group")) {
            (Some(Value::String(id)), name) => Some(GroupTag {
                id: id.clone(),
                name: name.and_then(Value::as_str).unwrap_or("").to_owned(),
            }),
            _ => None,
        };
        agent.save_received(&m.id, &m.from, &m.name, &m.text, group)?;
    }
    Ok(None)
}

/// Stages a received card for `import --inbox` (0.3.0 `_stage_contact`):
/// one per card fingerprint, the newest wins; a card without a valid
/// fingerprint is not staged.
fn stage_card(agent: &Agent, m: &Received, card: &Value) -> Result<(), CliError> {
    let field = |k: &str| card.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
    let Ok(id) = UserId::parse(&field("fingerprint")) else {
        return Ok(());
    };
    let mut tx = StoreTransaction::new(agent.store()).map_err(ClientError::from)?;
    tx.changes.received_contacts.push(ReceivedContact {
        id,
        name: field("name"),
        identity_key: field("identity_key"),
        signing_key: field("signing_key"),
        from: m.from.clone(),
        from_name: m.name.clone(),
        msg_id: m.id.clone(),
        at: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or_default(),
    });
    tx.commit().map_err(ClientError::from)?;
    Ok(())
}

/// A card as Python prints it: its keys in the order every 0.3.0 card is
/// built in (`_build_card`, `_self_card`: fingerprint, name, identity_key,
/// signing_key, verified, relay), then any others.
fn card_text(card: &Value) -> String {
    const ORDER: [&str; 6] = [
        "fingerprint",
        "name",
        "identity_key",
        "signing_key",
        "verified",
        "relay",
    ];
    let Value::Object(map) = card else {
        return card.to_string();
    };
    let keys = ORDER
        .iter()
        .copied()
        .filter(|k| map.contains_key(*k))
        .chain(
            map.keys()
                .map(String::as_str)
                .filter(|k| !ORDER.contains(k)),
        );
    let mut out = String::from("{");
    for (i, k) in keys.enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        push_json_string(&mut out, k);
        out.push_str(": ");
        match &map[k] {
            Value::String(s) => push_json_string(&mut out, s),
            other => out.push_str(&other.to_string()),
        }
    }
    out.push('}');
    out
}
