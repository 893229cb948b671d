//! `retalk invite new|list|revoke|watch` and `request INVITER --code CODE`
//! (0.3.0's `cmd_invite`, `cmd_request`, `cli.py@HEAD:1730-1805`), over the
//! library's invite codes ([`retalk_proto::client::new_invite`],
//! [`Agent::invite_watch`], [`Agent::request_contact`]).
//!
//! A valid code proves the requester was authorised by whoever issued it,
//! not that its keys belong to a particular person: it replaces the
//! manual add-back, never out-of-band fingerprint verification.

use retalk_proto::client::{self, InviteRecord};
use retalk_proto::{ClientError, UserId};
use serde_json::Value;

use crate::args::Selection;
use crate::error::CliError;
use crate::group::{py_object, receive_line};
use crate::identity::{open_store, resolve};
use crate::{open_agent, print_stdout, py_json};

/// One of `invite`'s actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum InviteAction {
    New,
    List,
    Revoke,
    Watch,
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

fn opt(v: Option<&str>) -> Value {
    v.map_or(Value::Null, Value::from)
}

fn list_json(r: &InviteRecord, at: f64) -> String {
    py_object(&[
        ("code", r.code.clone().into()),
        ("kind", r.kind.as_str().into()),
        ("peer", opt(r.peer.as_deref())),
        ("created", r.created.into()),
        ("expires", r.expires.map_or(Value::Null, Value::from)),
        ("uses", r.uses.into()),
        (
            "used_by",
            Value::Array(r.used_by.iter().map(|u| u.as_str().into()).collect()),
        ),
        ("revoked", r.revoked.into()),
        ("active", r.active(at).into()),
    ])
}

/// What `invite` was given.
pub struct InviteArgs {
    pub action: InviteAction,
    pub code: Option<String>,
    pub peer: Option<String>,
    pub permanent: bool,
    pub expires: Option<f64>,
    pub json: bool,
    pub follow: bool,
    pub interval: Option<f64>,
    pub quiet: bool,
}

pub async fn run(sel: &Selection, a: InviteArgs) -> Result<(), CliError> {
    let store = || -> Result<_, CliError> { open_store(&resolve(sel, None)?.dir) };
    match a.action {
        InviteAction::New => {
            if a.expires.is_some_and(|d| !d.is_finite()) {
                return Err(CliError::Usage("--expires takes a number of days".into()));
            }
            // The name the requester will be saved under: `add`'s rule.
            if let Some(p) = a.peer.as_deref().filter(|p| !p.is_empty()) {
                if UserId::parse(p).is_ok() {
                    return Err(CliError::Usage(
                        "--peer looks like a user id — give a human name".into(),
                    ));
                }
                if !crate::display::valid_saved_name(p) {
                    return Err(CliError::BadPeerName(p.to_owned()));
                }
            }
            let store = store()?;
            let rec = client::new_invite(&store, a.peer, a.permanent, a.expires, now())?;
            print_stdout(&py_object(&[
                ("code", rec.code.clone().into()),
                ("kind", rec.kind.as_str().into()),
                ("expires", rec.expires.map_or(Value::Null, Value::from)),
                ("peer", opt(rec.peer.as_deref())),
            ]))?;
            // Our own id when it can be unlocked (Python always prints a
            // placeholder, CLIENT-030 defect 30).
            let me = open_agent(sel, false)
                .map(|(agent, _)| agent.user_id().to_string())
                .unwrap_or_else(|_| "<your-user-id>".into());
            say!(
                "\n\u{2709} Invite code minted ({})\n\nSend your peer the invite plus this redeem command:\n\n    # redeem the invite code -- adds me and asks me to add you back:\n    retalk request {me} --code {}\n",
                rec.kind.as_str(),
                rec.code
            );
        }
        InviteAction::List => {
            let rows = client::invites(&store()?)?;
            let at = now();
            if rows.is_empty() && !a.json {
                say!("no invite codes -- mint one with `retalk invite new`");
            }
            for r in rows {
                let line = if a.json {
                    list_json(&r, at)
                } else {
                    let state = if r.revoked {
                        "revoked"
                    } else if r.active(at) {
                        "active"
                    } else {
                        "spent/expired"
                    };
                    format!(
                        "{}\t{}\t{state}\tuses={}\tpeer={}",
                        r.code,
                        r.kind.as_str(),
                        r.uses,
                        r.peer.as_deref().unwrap_or("-")
                    )
                };
                print_stdout(&line)?;
            }
        }
        InviteAction::Revoke => {
            let code = a
                .code
                .ok_or_else(|| CliError::Usage("revoke needs the CODE to revoke".into()))?;
            if !client::revoke_invite(&store()?, &code)? {
                return Err(CliError::Usage("no such invite code".into()));
            }
            say!("revoked {code}");
        }
        InviteAction::Watch => {
            if a.interval.is_some_and(|s| !(s > 0.0 && s.is_finite())) {
                return Err(CliError::Usage(
                    "--interval must be a positive number of seconds".into(),
                ));
            }
            let (agent, _) = open_agent(sel, !a.quiet)?;
            let pause = a.interval.unwrap_or(2.0);
            loop {
                for rec in agent.invite_watch().await? {
                    print_stdout(&receive_line(&rec))?;
                }
                if !a.follow {
                    return Ok(());
                }
                tokio::select! {
                    _ = crate::receive::interrupted() => return Ok(()),
                    _ = tokio::time::sleep(std::time::Duration::from_secs_f64(pause)) => {}
                }
            }
        }
    }
    Ok(())
}

/// `request INVITER --code CODE [--peer NAME]`: prints `{"id", "to"}`.
pub async fn request(
    sel: &Selection,
    inviter: &str,
    code: Option<String>,
    peer: Option<String>,
) -> Result<(), CliError> {
    let code = code.ok_or_else(|| CliError::Usage("request needs --code CODE".into()))?;
    let inviter = UserId::parse(&inviter.to_ascii_lowercase())
        .map_err(|_| CliError::Usage("an inviter is addressed by their 32-hex user id".into()))?;
    let (agent, _) = open_agent(sel, true)?;
    let id = agent
        .request_contact(&inviter, &code, peer.as_deref())
        .await
        .map_err(|e| match e {
            // Kept in the outbox and resent: sent as far as the user is
            // concerned (Python: no error either).
            ClientError::NotDelivered { id, .. } => {
                say!("the relay could not take the request now; it is kept and resent");
                CliError::Usage(format!("request {id} not delivered yet"))
            }
            e => e.into(),
        })?;
    print_stdout(&py_json(&[("id", &id), ("to", inviter.as_str())]))?;
    say!(
        "request sent -- the inviter's watch accepts it and they can then message you.\nAcceptance is not observable from this side; ask them out-of-band if unsure."
    );
    Ok(())
}
