//! The `retalk` command line: a drop-in for the original's (retalk 0.0.1),
//! on the SQLite store and the HTTP transport.

/// `eprintln!` that never panics: a line to stderr, with a failed write
/// (a reader that closed the pipe, `2>&1 | head -1`) ignored. stderr is
/// advice, so losing it must not turn a finished command into a panic
/// (exit 101). Use it for every stderr line of the command line.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

mod args;
mod book;
mod display;
mod error;
mod group;
mod history;
mod identity;
mod invite;
mod mcp;
mod receive;
mod show;

use std::io::{IsTerminal, Read, Write};
use std::process::ExitCode;

use clap::Parser;
use retalk_proto::canonical::push_json_string;
use retalk_proto::client::{
    self, setting, Contact, Delivery, Generation, Located, Store, StoreTransaction,
};
use retalk_proto::{Client, ClientError, UserId};
use retalk_store_sqlite::SqliteStore;
use retalk_transport_http::{HttpTransport, SystemClock};

use args::{Cli, Command, Selection};
use error::CliError;
use identity::{api_key, open_store, resolve, secret, server_url, STORE_FILE};

pub type Agent = Client<SqliteStore, HttpTransport, SystemClock>;

fn main() -> ExitCode {
    // 0.3.0 spells --no-passphrase `-np`, a two-letter short flag that
    // clap cannot declare.
    let cli = Cli::parse_from(std::env::args_os().map(|a| {
        if a == "-np" {
            "--no-passphrase".into()
        } else {
            a
        }
    }));
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            say!("retalk: could not start: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let generation = identity::GENERATION.get().copied();
            if !e.is_quiet() {
                say!("retalk: {e}");
                if let Some(hint) = e.hint(generation) {
                    say!("{hint}");
                }
            }
            ExitCode::from(e.exit_code_for(generation))
        }
    }
}

async fn run(cli: Cli) -> Result<(), CliError> {
    let sel = cli.select;
    match cli.command {
        Command::Init {
            directory,
            name,
            display_name,
            no_register,
        } => init(&sel, directory, name, display_name, no_register).await,
        Command::Id {
            json,
            card,
            invite_message,
            code,
            invite_reply,
            as_name,
            last,
        } => {
            let sel = if last {
                Selection {
                    dir_030: Some(book::latest_identity().ok_or_else(|| {
                        CliError::Usage("no identity yet — create one with `retalk init`".into())
                    })?),
                    ..sel
                }
            } else {
                sel
            };
            let shape = if invite_reply {
                IdShape::InviteReply
            } else if invite_message {
                IdShape::InviteMessage(code)
            } else if card {
                IdShape::Card
            } else if json {
                IdShape::Json
            } else {
                IdShape::Plain
            };
            id(&sel, shape, as_name)
        }
        Command::Register => sync(&sel, false).await,
        Command::Sync => sync(&sel, true).await,
        Command::Add {
            args,
            peer,
            pin,
            verify: check,
            override_name,
            global,
        } => {
            let id = match (args.as_slice(), pin) {
                // 0.3.0: FINGERPRINT [--peer NAME].
                ([fp], None) => {
                    let id = book::add(&sel, fp, peer.as_deref(), override_name, global)?.0;
                    if !check {
                        book::add_hints(&id, peer.as_deref());
                    }
                    id
                }
                (_, pin) => add(&sel, &args, peer, pin)?,
            };
            if check {
                verify(&sel, id.as_str(), None, None).await?;
            }
            Ok(())
        }
        Command::Verify {
            peer,
            identity_key,
            signing_key,
        } => verify(&sel, &peer, identity_key, signing_key).await,
        Command::Config => config(&sel),
        Command::Share {
            contact,
            peer,
            as_name,
        } => share(&sel, &contact, &peer, as_name).await,
        Command::Contacts {
            json,
            show,
            as_name,
            remove,
        } => book::contacts(&sel, json, show, as_name, remove),
        Command::History { peer, group } => history::run(&sel, peer, group),
        Command::Import {
            card,
            as_name,
            inbox,
            override_name,
            list,
            json,
        } => book::import(&sel, card, as_name, inbox, list, json, override_name),
        Command::Block {
            peer,
            remove,
            list,
            json,
        } => block(&sel, peer, remove, list, json),
        Command::Send {
            args,
            group: Some(group),
            save,
            ..
        } => {
            let [text] = args.as_slice() else {
                return Err(CliError::Usage(
                    "send --group takes one TEXT: send TEXT --group NAME".into(),
                ));
            };
            // `-` is literal, as in 0.3.0 (only `send PEER -` reads stdin).
            let text = text.clone();
            let (agent, _) = open_agent(&sel, true)?;
            let save = history::wanted(save)?;
            if save {
                history::warn_if_unsealed(agent.store())?;
            }
            group::send(&agent, &group, &text, save).await
        }
        Command::Send {
            args, peer, save, ..
        } => send(&sel, &args, peer, save).await,
        Command::Group {
            action,
            name,
            members,
            members_flag,
            json,
        } => {
            let (agent, _) = open_agent(&sel, false)?;
            group::run(&agent, action, name, members_flag.or(members), json).await
        }
        Command::Invite {
            action,
            code,
            peer,
            permanent,
            expires,
            json,
            follow,
            interval,
            quiet,
        } => {
            invite::run(
                &sel,
                invite::InviteArgs {
                    action,
                    code,
                    peer,
                    permanent,
                    expires,
                    json,
                    follow,
                    interval,
                    quiet,
                },
            )
            .await
        }
        Command::Request {
            inviter,
            code,
            peer,
        } => invite::request(&sel, &inviter, code, peer).await,
        Command::Mcp(args) => mcp::run(&sel, args).await,
        Command::Show(args) => show::run(&sel, args).await,
        Command::Receive {
            follow,
            json,
            limit,
            peer,
            all,
            interval,
            quiet,
            peers_only,
            save,
            no_save_contacts,
        } => {
            // A usage error comes before the `using …` banner, as in 0.3.0.
            if resolve(&sel, None)?.generation == Generation::V030 {
                if !peer.is_empty() && all {
                    return Err(CliError::PeerAndAll);
                }
                if peer.is_empty() && !all {
                    return Err(CliError::NoReceiveTarget);
                }
            }
            let (agent, located) = open_agent(&sel, !quiet)?;
            let agent = agent.with_peers_only(peers_only);
            match located.generation {
                Generation::V001 => receive::run(&agent, follow, json, limit).await,
                Generation::V030 => {
                    if all && !peers_only {
                        // 0.3.0's warning (`cmd_receive`).
                        say!("\n\u{26a0} receive --all reads and ACKs mail from EVERY sender \u{2014} including ones you never added, each consuming a one-time key.\n  Prefer --peer <name> for a saved contact, or add --peers-only to drop strangers.");
                    }
                    let contacts = agent.contacts()?;
                    let mut from = Vec::new();
                    for p in &peer {
                        let id = book::peer_to_id(&contacts, p)?;
                        if !from.contains(&id) {
                            from.push(id);
                        }
                    }
                    let save = history::wanted(save)?;
                    if save {
                        history::warn_if_unsealed(agent.store())?;
                    }
                    let pause = match interval {
                        Some(_) if !follow => {
                            return Err(CliError::Usage(
                                "--interval only applies with --follow".into(),
                            ))
                        }
                        Some(s) if !(s > 0.0 && s.is_finite()) => {
                            return Err(CliError::Usage(
                                "--interval must be a positive number of seconds".into(),
                            ))
                        }
                        Some(s) => s,
                        None => 2.0,
                    };
                    let keep = receive::Keep {
                        messages: save,
                        contacts: !no_save_contacts,
                    };
                    receive::run_030(&agent, &from, follow, pause, limit, keep).await
                }
            }
        }
    }
}

/// Python's `json.dumps` of a flat object of strings, keys in the given
/// order: what scripts written for the original parse.
pub fn py_json(pairs: &[(&str, &str)]) -> String {
    let mut out = String::from("{");
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        push_json_string(&mut out, k);
        out.push_str(": ");
        push_json_string(&mut out, v);
    }
    out.push('}');
    out
}

fn is_user_id(s: &str) -> bool {
    UserId::parse(s).is_ok()
}

/// Writes one line and flushes it; a reader that closed the pipe is
/// [`CliError::StdoutClosed`], not a failure.
fn print_stdout(line: &str) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")
        .and_then(|()| out.flush())
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::BrokenPipe => CliError::StdoutClosed,
            _ => CliError::Output(e),
        })
}

async fn init(
    sel: &Selection,
    directory: Option<std::path::PathBuf>,
    name: Option<String>,
    display_name: Option<String>,
    no_register: bool,
) -> Result<(), CliError> {
    let mut sel = Selection {
        dir: directory.or_else(|| sel.dir.clone()),
        ..sel.clone()
    };
    let wants_030 = display_name.is_some() || no_register || identity::has_030_passphrase(&sel)?;
    if wants_030 && !book::identity_selected(&sel)? {
        // 0.3.0 names an identity nobody named (`_next_default_user`).
        let name = book::next_default_user();
        say!("No user specified, defaulting to automatically generated \"{name}\".");
        sel.user = Some(name);
    }
    let asked = if wants_030 {
        Generation::V030
    } else {
        Generation::V001
    };
    let located = resolve(&sel, Some(asked))?;
    let dir = located.dir.clone();
    if dir.join(STORE_FILE).exists() {
        return Err(CliError::IdentityExists(dir.display().to_string()));
    }
    let (secret, disabled) = secret(&sel, located.generation, true, false)?;
    let store = open_store(&dir)?;
    let generation = located.generation;
    let server = server_url(&sel, generation, None)?;
    let display = match generation {
        Generation::V001 => name.unwrap_or_default(),
        // 0.3.0 names the identity after -u / RETALK_USER by default.
        Generation::V030 => display_name
            .or(name)
            .or_else(|| sel.user.clone().filter(|u| !u.is_empty()))
            .or(identity::env_text("RETALK_USER")?)
            .unwrap_or_default(),
    };
    let info = client::create_identity(&store, &secret, &display)?;
    let mut tx = StoreTransaction::new(&store).map_err(ClientError::from)?;
    if let Some(server) = &server {
        tx.changes
            .settings
            .push((setting::RELAY_URL.into(), server.clone()));
    }
    if generation == Generation::V030 {
        tx.changes
            .settings
            .push(("created_at".into(), unix_now().to_string()));
        if disabled {
            tx.changes
                .settings
                .push((setting::NO_PASSPHRASE.into(), "1".into()));
        }
        if let Some(key) = sel.api_key.clone() {
            tx.changes.settings.push((setting::API_KEY.into(), key));
        }
    }
    tx.commit().map_err(ClientError::from)?;
    drop(store);
    match generation {
        Generation::V001 => {
            say!("created identity at {}", dir.display());
            if let Some(user) = sel.user.as_deref().filter(|u| !u.is_empty()) {
                // `-u NAME` with no 0.3.0 passphrase source: say which
                // generation this is, so 0.3.0 commands not finding it
                // (they look in $RETALK_HOME) are no surprise.
                say!("note: this is a 0.0.1 identity (in {}); 0.3.0 commands such as `RETALK_USER={user} retalk send` look under {} and do not find it. For a 0.3.0 identity instead: retalk init -u {user} --passphrase-file /path/to/passphrase", dir.display(), identity::retalk_home().display());
            }
            say!("user id (share out-of-band; it is address + pin in one):");
            print_stdout(info.user_id.as_str())
        }
        Generation::V030 => {
            if !no_register {
                match &server {
                    Some(url) => match open_agent(&sel, false) {
                        Ok((agent, _)) => match agent.sync(false).await {
                            Ok(_) => say!("\n\u{2713} Registered on {url} \u{2014} peers can message you."),
                            Err(e) => say!("\n\u{26a0} NOT registered: the relay at {url} could not be reached ({e})."),
                        },
                        Err(e) => return Err(e),
                    },
                    None => say!("\n\u{26a0} NOT registered: no relay is configured, so your keys were not published"),
                }
            }
            if disabled {
                say!("\n\u{26a0} Keys are stored UNENCRYPTED \u{2014} anyone who can read this folder can impersonate you.\n  Use --passphrase (or RETALK_PASSPHRASE) for any identity whose privacy matters.");
            }
            say!(
                "\nName:        {}",
                if display.is_empty() {
                    dir.file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default()
                } else {
                    display.clone()
                }
            );
            say!("Path:        {}", dir.display());
            say!("Fingerprint: {}", info.user_id);
            say!("Relay:       {}", server.as_deref().unwrap_or("(none)"));
            // Both onboarding snippets, as 0.3.0's `cmd_init` prints them.
            let fp = info.user_id.as_str();
            say!(
                "\nTo INVITE a peer who is not on retalk yet, share this:\n{}",
                book::invite_message(fp, &display, server.as_deref(), None)
            );
            say!(
                "\nOr, if you are REPLYING to an invite someone sent you, send them this instead:\n{}",
                book::invite_reply(fp, &display)
            );
            if std::io::stdout().is_terminal() {
                return Ok(());
            }
            print_stdout(info.user_id.as_str())
        }
    }
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

/// `register` (no resend) and `sync`: the summary JSON on stdout.
async fn sync(sel: &Selection, resend: bool) -> Result<(), CliError> {
    let (agent, _) = open_agent(sel, true)?;
    let r = agent.sync(resend).await?;
    let b = |v: bool| if v { "true" } else { "false" };
    print_stdout(&format!(
        "{{\"unclaimed\": {}, \"republished\": {}, \"replenished\": {}, \"fallback_rotated\": {}, \"resent\": {}}}",
        r.unclaimed,
        b(r.republished),
        b(r.replenished),
        b(r.fallback_rotated),
        r.resent
    ))?;
    // 0.3.0's line on stderr (`cmd_sync`, `cmd_register`).
    let mut done: Vec<String> = [
        ("republished", r.republished),
        ("replenished", r.replenished),
        ("fallback_rotated", r.fallback_rotated),
    ]
    .iter()
    .filter(|(_, on)| *on)
    .map(|(k, _)| (*k).to_owned())
    .collect();
    if resend {
        if r.resent > 0 {
            done.push(format!("resent={}", r.resent));
        }
        let done = if done.is_empty() {
            "up to date".to_owned()
        } else {
            done.join(", ")
        };
        say!("synced ({done})");
    } else {
        let name = agent.name()?;
        let done = if done.is_empty() {
            "already current".to_owned()
        } else {
            done.join(", ")
        };
        say!(
            "registered {} on {} ({done})",
            if name.is_empty() {
                agent.user_id().to_string()
            } else {
                name
            },
            agent.transport().url()
        );
    }
    Ok(())
}

/// What `id` prints.
enum IdShape {
    Plain,
    Json,
    /// 0.3.0 `--card`.
    Card,
    /// 0.3.0 `--invite-message [--code CODE]`.
    InviteMessage(Option<String>),
    /// 0.3.0 `--invite-reply`.
    InviteReply,
}

fn id(sel: &Selection, shape: IdShape, as_name: Option<String>) -> Result<(), CliError> {
    let (located, store, secret) = identity::open_with_secret(sel)?;
    let info = client::identity_info(&store, &secret).map_err(|e| unlock_error(e, &located))?;
    if let IdShape::Plain = shape {
        return print_stdout(info.user_id.as_str());
    }
    let saved_name = store
        .setting(setting::NAME)
        .map_err(ClientError::from)?
        .unwrap_or_default();
    if located.generation == Generation::V001 {
        return print_stdout(&py_json(&[
            ("user_id", info.user_id.as_str()),
            ("identity_key", &info.identity_key),
            ("name", &saved_name),
        ]));
    }
    // 0.3.0's own contact card (`cli.py`, `_self_card`): `--as` names it,
    // `relay` last and only when known.
    let name = as_name.filter(|n| !n.is_empty()).unwrap_or(saved_name);
    let saved = store
        .setting(setting::RELAY_URL)
        .map_err(ClientError::from)?;
    // The relay this run would use, as `u.server_url` (`-r`,
    // RETALK_RELAY, the saved one, config.json).
    let relay = server_url(sel, Generation::V030, saved)?;
    let fp = info.user_id.as_str();
    let text = match shape {
        IdShape::Plain | IdShape::Json => {
            let mut card = book::card_json(fp, &name, &info.identity_key, &info.signing_key, true);
            if let Some(relay) = &relay {
                card.pop();
                card.push_str(", \"relay\": ");
                push_json_string(&mut card, relay);
                card.push('}');
            }
            card
        }
        IdShape::Card => book::card_text(
            fp,
            &name,
            relay.as_deref(),
            &info.identity_key,
            &info.signing_key,
        ),
        IdShape::InviteMessage(code) => {
            book::invite_message(fp, &name, relay.as_deref(), code.as_deref())
        }
        IdShape::InviteReply => book::invite_reply(fp, &name),
    };
    print_stdout(&text)
}

/// `add NAME USER_ID [--pin KEY]` (0.0.1; the 0.3.0 form is
/// [`book::add`]).
fn add(
    sel: &Selection,
    args: &[String],
    peer: Option<String>,
    pin: Option<String>,
) -> Result<UserId, CliError> {
    let ([name, user_id], None) = (args, peer) else {
        return Err(CliError::Usage(
            "add takes NAME USER_ID, or FINGERPRINT --peer NAME".into(),
        ));
    };
    let located = resolve(sel, None)?;
    let id = UserId::parse(user_id).map_err(|_| CliError::BadUserId)?;
    if is_user_id(name) {
        return Err(CliError::NameLooksLikeId);
    }
    if !display::valid_saved_name(name) {
        return Err(CliError::BadPeerName(name.clone()));
    }
    let store = open_store(&located.dir)?;
    let mut tx = StoreTransaction::new(&store).map_err(ClientError::from)?;
    let earlier = store
        .contacts()
        .map_err(ClientError::from)?
        .into_iter()
        .find(|c| &c.name == name);
    tx.changes.contacts.push(Contact {
        name: name.clone(),
        id: id.clone(),
        pin,
        signing_key: None,
    });
    tx.commit().map_err(ClientError::from)?;
    match earlier {
        // A replaced id is a different person under a familiar name: say so.
        Some(old) if old.id != id => say!("replaced {name}: was {}, now {id}", old.id),
        _ => say!("added {name} -> {id}"),
    }
    Ok(id)
}

/// `verify PEER [--identity-key K --signing-key S]` and `add --verify`
/// (0.3.0 `cmd_verify`, `_record_keys`): records the contact's keys once
/// they hash to its id, from the relay unless both are given, into the
/// list that holds it (the identity's own, else the owner-wide one).
/// Without an identity selected, a global contact is verified through an
/// identity picked as 0.3.0's `_pick_signer` does.
async fn verify(
    sel: &Selection,
    peer: &str,
    identity_key: Option<String>,
    signing_key: Option<String>,
) -> Result<(), CliError> {
    let manual = match (identity_key, signing_key) {
        (Some(ik), Some(sk)) => Some(retalk_proto::wire::PublicKeys {
            identity_key: ik,
            signing_key: sk,
        }),
        (None, None) => None,
        _ => {
            return Err(CliError::Usage(
                "manual verify needs both --identity-key and --signing-key: the fingerprint is the hash of the two together".into(),
            ))
        }
    };
    let own = if book::identity_selected(sel)? {
        Some(open_store(&resolve(sel, None)?.dir)?)
    } else {
        None
    };
    let global = book::global()?;
    let view = match &own {
        Some(store) => book::effective(store)?,
        None => global.contacts()?,
    };
    let unknown = || {
        CliError::Usage(format!(
            "no saved contact '{peer}': add it first with `retalk add <fingerprint>`"
        ))
    };
    let fp = book::resolve_peer(&view, peer).ok_or_else(unknown)?;
    if !view.iter().any(|c| c.id == fp) {
        return Err(unknown());
    }
    let mine = match &own {
        Some(store) => store
            .contacts()
            .map_err(ClientError::from)?
            .iter()
            .any(|c| c.id == fp),
        None => false,
    };
    let label = view
        .iter()
        .find(|c| c.id == fp && c.name != fp.as_str())
        .map(|c| c.name.clone());
    let mut signed_by = None;
    let (keys, source) = match manual {
        Some(keys) => (keys, "supplied keys"),
        None => {
            let signer = match own {
                Some(_) => sel.clone(),
                None => Selection {
                    dir_030: Some(pick_signer().ok_or_else(|| CliError::Usage(
                        "verifying against the relay needs an identity to sign the request, and none could be auto-picked: create one with `retalk init`, pass --user NAME (-u NAME) to choose which signs, or supply the keys with --identity-key/--signing-key".into(),
                    ))?),
                    ..sel.clone()
                },
            };
            let (agent, located) = open_agent(&signer, false)?;
            let name = agent.name()?;
            signed_by = Some(if name.is_empty() {
                located
                    .dir
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            } else {
                name
            });
            (agent.fetch_keys(&fp).await?, "the relay")
        }
    };
    match &own {
        Some(store) if mine => client::pin_contact(store, &fp, &keys)?,
        _ => {
            if !fp.matches_keys(&keys.identity_key, &keys.signing_key) {
                return Err(ClientError::PinMismatch {
                    peer: fp.clone(),
                    detail: format!(
                        "the supplied keys hash to '{}'",
                        retalk_proto::ids::fingerprint(&keys.identity_key, &keys.signing_key)
                    ),
                }
                .into());
            }
            global.record_keys(&fp, &keys.identity_key, &keys.signing_key)?;
        }
    }
    // 0.3.0's result block and follow-up snippet (`_record_keys`).
    let shown = label.clone().unwrap_or_else(|| fp.to_string());
    let saved_to = match &own {
        Some(store) if mine => format!(
            "{}'s contacts",
            store
                .path()
                .parent()
                .and_then(|d| d.file_name())
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        ),
        _ => "the global contacts".into(),
    };
    say!("\n\u{2713} Verified {shown}");
    say!("\nName:        {}", label.as_deref().unwrap_or("(unnamed)"));
    say!("Fingerprint: {fp}");
    say!("Keys:        from {source}");
    say!("Saved to:    {saved_to}");
    if let Some(by) = signed_by {
        say!("Signed by:   {by}");
    }
    let dir = sel
        .dir_030
        .as_ref()
        .map(|d| format!(" --dir {}", d.display()));
    let mut lines = vec!["# message them:".to_owned()];
    if dir.is_none() {
        lines.push("# RETALK_USER picks the identity that sends:".into());
        let user = sel
            .user
            .clone()
            .filter(|u| !u.is_empty())
            .or(identity::env_text("RETALK_USER")?.filter(|u| !u.is_empty()));
        lines.push(match user {
            Some(u) => format!("export RETALK_USER={u}"),
            None => "export RETALK_USER=\"<your-username>\"".into(),
        });
    }
    if identity::env_text("RETALK_PASSPHRASE")?.is_none() {
        lines.push("# and its passphrase, if it has one:".into());
        lines.push("export RETALK_PASSPHRASE=\"<YOUR-PASSPHRASE>\"".into());
    }
    let tail = dir.unwrap_or_default();
    lines.push(format!("retalk send --peer {shown} \"hello\"{tail}"));
    lines.push(format!("retalk receive --peer {shown} --follow{tail}"));
    lines.push("# receive --follow reads replies live -- ctrl-c to stop".into());
    say!("\n{}", book::bash_block(&lines));
    Ok(())
}

/// An identity (under `$RETALK_HOME` or the project's `.retalk`) to sign
/// a key fetch with (0.3.0
/// `_pick_signer`): one without a passphrase, else the only one.
fn pick_signer() -> Option<std::path::PathBuf> {
    let mut ids = book::identity_folders();
    ids.sort();
    let open = ids.iter().find(|d| {
        open_store(d)
            .ok()
            .and_then(|s| s.setting(setting::NO_PASSPHRASE).ok().flatten())
            .as_deref()
            == Some("1")
    });
    match (open, ids.as_slice()) {
        (Some(d), _) => Some(d.clone()),
        (None, [only]) => Some(only.clone()),
        _ => None,
    }
}

/// `share CONTACT --peer RECIPIENT [--as NAME]` (0.3.0's `cmd_share`): the
/// card is `_build_card`'s (keys only for a verified contact).
async fn share(
    sel: &Selection,
    contact: &str,
    peer: &str,
    as_name: Option<String>,
) -> Result<(), CliError> {
    let (agent, _) = open_agent(sel, true)?;
    let contacts = agent.contacts()?;
    let (fp, name, card, _) = book::build_card(&contacts, contact, as_name.as_deref())?;
    let to = book::peer_to_id(&contacts, peer)?;
    agent.sync(true).await?;
    let receipt = agent.share(&to, card).await?;
    if receipt.delivery == Delivery::Refused {
        return Err(CliError::RefusedByPeer(peer.into()));
    }
    print_stdout(&py_json(&[
        ("id", &receipt.id),
        ("to", to.as_str()),
        ("shared", fp.as_str()),
    ]))?;
    let label = if name.is_empty() { fp.as_str() } else { &name };
    say!("shared contact '{label}' ({fp}) with {peer}");
    Ok(())
}

/// `config [-r URL]` (0.3.0's `cmd_config`): prints the owner-wide
/// settings as `json.dumps(cfg, indent=2)`; `-r URL` sets the default
/// relay first, `-r ""` removes it.
fn config(sel: &Selection) -> Result<(), CliError> {
    let path = identity::retalk_home().join("config.json");
    let mut cfg = std::fs::read_to_string(&path)
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&t).ok())
        .unwrap_or_default();
    if let Some(relay) = &sel.server {
        if relay.is_empty() {
            cfg.remove("relay");
        } else {
            cfg.insert("relay".into(), relay.clone().into());
        }
        let text =
            serde_json::to_string_pretty(&cfg).map_err(|e| CliError::Usage(e.to_string()))?;
        let write = || -> std::io::Result<()> {
            std::fs::create_dir_all(identity::retalk_home())?;
            std::fs::write(&path, format!("{text}\n"))?;
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
            }
            Ok(())
        };
        write().map_err(CliError::Output)?;
    }
    let text = serde_json::to_string_pretty(&cfg).map_err(|e| CliError::Usage(e.to_string()))?;
    print_stdout(&text)
}

/// `send PEER TEXT` (0.0.1) or `send TEXT --peer PEER` (0.3.0). What it
/// prints follows the identity's generation: nothing on stdout (0.0.1),
/// or `{"id", "to"}` (0.3.0).
async fn send(
    sel: &Selection,
    args: &[String],
    peer: Option<String>,
    save: bool,
) -> Result<(), CliError> {
    // Read before unlocking anything: a text that cannot be read is a
    // usage error, found before a ratchet step is spent on it. Only the
    // 0.0.1 form reads stdin for `-` (#10); 0.3.0 sends `-` as it is.
    let (peer, text) = match (args, peer) {
        ([peer, text], None) if text == "-" => (peer.clone(), read_stdin()?),
        ([peer, text], None) => (peer.clone(), text.clone()),
        ([text], Some(peer)) => (peer, text.clone()),
        ([_], None) => return Err(CliError::NoRecipient),
        _ => {
            return Err(CliError::Usage(
                "send takes PEER TEXT, or TEXT --peer PEER".into(),
            ))
        }
    };
    let (agent, located) = open_agent(sel, true)?;
    let v030 = located.generation == Generation::V030;
    let save = v030 && history::wanted(save)?;
    let to = if v030 {
        book::peer_to_id(&agent.contacts()?, &peer)?
    } else {
        agent.find_peer(&peer)?
    };
    if v030 {
        if save {
            history::warn_if_unsealed(agent.store())?;
        }
        // 0.3.0 syncs first (`cmd_send`); what is due goes out with it.
        // A relay that cannot be reached must not cost this message: the
        // send below keeps it in the outbox and says so.
        match agent.sync(true).await {
            Err(e) if !e.is_transient() => return Err(e.into()),
            _ => {}
        }
    }
    let receipt = match agent.send(&to, &text).await {
        Err(ClientError::NotDelivered { id, source }) => {
            if save {
                // Kept and resent: it belongs in the history as sent.
                agent.save_sent(&id, to.as_str(), &text, None)?;
            }
            return Err(ClientError::NotDelivered { id, source }.into());
        }
        other => other?,
    };
    if save && receipt.delivery != Delivery::Refused {
        // Our side of the conversation, for `history` (0.3.0 `_save_sent`).
        agent.save_sent(&receipt.id, to.as_str(), &text, None)?;
    }
    match receipt.delivery {
        Delivery::Queued { .. } => {
            if located.generation == Generation::V030 {
                print_stdout(&py_json(&[("id", &receipt.id), ("to", to.as_str())]))?;
            }
            say!("sent to {peer}");
            Ok(())
        }
        Delivery::Refused => Err(CliError::RefusedByPeer(peer)),
    }
}

/// `block PEER [--remove]`, `block --list [--json]` (0.3.0's `cmd_block`:
/// local only, no passphrase; the list is sorted by user id).
fn block(
    sel: &Selection,
    peer: Option<String>,
    remove: bool,
    list: bool,
    json: bool,
) -> Result<(), CliError> {
    let located = resolve(sel, None)?;
    let store = open_store(&located.dir)?;
    if list {
        if peer.is_some() || remove {
            return Err(CliError::Usage(
                "give a peer (to block, or --remove to unblock), or --list to show the block list -- not both".into(),
            ));
        }
        let contacts = book::effective(&store)?;
        for fp in client::blocked(&store)? {
            let name = contacts
                .iter()
                .find(|c| c.id == fp && c.name != fp.as_str())
                .map(|c| c.name.as_str());
            let line = match (json, name) {
                (true, n) => py_json(&[("fingerprint", fp.as_str()), ("name", n.unwrap_or(""))]),
                (false, Some(n)) => format!("{fp}\t{n}"),
                (false, None) => fp.to_string(),
            };
            print_stdout(&line)?;
        }
        return Ok(());
    }
    let Some(peer) = peer else {
        return Err(CliError::Usage(
            "block needs a peer (to block, or with --remove to unblock), or --list to show the block list".into(),
        ));
    };
    let fp = book::peer_to_id(&book::effective(&store)?, &peer)?;
    client::set_blocked(&store, &fp, !remove)?;
    let done = if remove { "unblocked" } else { "blocked" };
    // Given by id: the id once (`blocked 73dc… (73dc…)` said it twice).
    if peer.eq_ignore_ascii_case(fp.as_str()) {
        say!("{done} {fp}");
    } else {
        say!("{done} {peer} ({fp})");
    }
    Ok(())
}

/// The whole of standard input, exactly (a trailing newline included), for
/// `send PEER -`: texts past the kernel's argument limit, or from a pipe.
fn read_stdin() -> Result<String, CliError> {
    let mut bytes = Vec::new();
    std::io::stdin()
        .lock()
        .read_to_end(&mut bytes)
        .map_err(CliError::Stdin)?;
    String::from_utf8(bytes).map_err(|_| CliError::StdinNotUnicode)
}

fn unlock_error(e: ClientError, located: &Located) -> CliError {
    let dir = &located.dir;
    match e {
        ClientError::WrongSecret => CliError::WrongSecret(dir.display().to_string()),
        ClientError::NoIdentity => identity::no_identity_at(dir, located.generation),
        other => other.into(),
    }
}

/// Opens the selected identity against its relay, and prints the banner
/// when `banner`.
fn open_agent(sel: &Selection, banner: bool) -> Result<(Agent, Located), CliError> {
    let located = resolve(sel, None)?;
    let dir = &located.dir;
    let store = identity::open_unlocking(sel, &located)?;
    let setting_of = |k: &str| store.setting(k).map_err(ClientError::from);
    let saved = setting_of(setting::RELAY_URL)?;
    let saved_key = setting_of(setting::API_KEY)?;
    let no_pass = setting_of(setting::NO_PASSPHRASE)?.as_deref() == Some("1");
    let server = server_url(sel, located.generation, saved)?.ok_or(match located.generation {
        Generation::V001 => CliError::NoServer,
        Generation::V030 => CliError::NoRelay,
    })?;
    let mut builder = HttpTransport::builder(server);
    if let Some(key) = api_key(sel, saved_key)? {
        builder = builder.api_key(key);
    }
    if let Some(ua) = identity::env_text("RETALK_USER_AGENT")? {
        builder = builder.user_agent(ua);
    }
    let transport = builder
        .build()
        .map_err(|e| CliError::BadServer(e.to_string()))?;
    let (secret, _) = secret(sel, located.generation, false, no_pass)?;
    let mut agent = Client::open(store, transport, SystemClock, &secret)
        .map_err(|e| unlock_error(e, &located))?;
    if located.generation == Generation::V030 {
        // 0.3.0 identities see the owner-wide contacts too.
        agent = agent.with_global_contacts(book::global()?.contacts()?);
    }
    if banner {
        let name = agent.name()?;
        say!(
            "using {} ({}) from {}",
            if name.is_empty() { "user" } else { &name },
            agent.user_id(),
            dir.display()
        );
    }
    Ok((agent, located))
}
