//! The `retalk` command line: a drop-in for the original's (retalk 0.0.1),
//! on the SQLite store and the HTTP transport.

mod args;
mod display;
mod error;
mod identity;
mod mcp;
mod receive;
mod show;

use std::io::{IsTerminal, Read, Write};
use std::path::Path;
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
            eprintln!("retalk: could not start: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if !e.is_quiet() {
                eprintln!("retalk: {e}");
            }
            ExitCode::from(e.exit_code_for(identity::GENERATION.get().copied()))
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
        Command::Id { json } => id(&sel, json),
        Command::Register => sync(&sel, false).await,
        Command::Sync => sync(&sel, true).await,
        Command::Add {
            args,
            peer,
            pin,
            verify: check,
        } => {
            let id = add(&sel, &args, peer, pin)?;
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
        Command::Contacts { json } => contacts(&sel, json),
        Command::Block {
            peer,
            remove,
            list,
            json,
        } => block(&sel, peer, remove, list, json),
        Command::Send { args, peer } => send(&sel, &args, peer).await,
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
        } => {
            let (agent, located) = open_agent(&sel, !quiet)?;
            let agent = agent.with_peers_only(peers_only);
            match located.generation {
                Generation::V001 => receive::run(&agent, follow, json, limit).await,
                Generation::V030 => {
                    if !peer.is_empty() && all {
                        return Err(CliError::PeerAndAll);
                    }
                    if peer.is_empty() && !all {
                        return Err(CliError::NoReceiveTarget);
                    }
                    let from = peer
                        .iter()
                        .map(|p| agent.find_peer(p))
                        .collect::<Result<Vec<_>, _>>()?;
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
                    receive::run_030(&agent, &from, follow, pause, limit).await
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
    let sel = Selection {
        dir: directory.or_else(|| sel.dir.clone()),
        ..sel.clone()
    };
    let wants_030 = display_name.is_some() || no_register || identity::has_030_passphrase(&sel)?;
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
            eprintln!("created identity at {}", dir.display());
            eprintln!("user id (share out-of-band; it is address + pin in one):");
            print_stdout(info.user_id.as_str())
        }
        Generation::V030 => {
            if !no_register {
                match &server {
                    Some(url) => match open_agent(&sel, false) {
                        Ok((agent, _)) => match agent.sync(false).await {
                            Ok(_) => eprintln!("\n\u{2713} Registered on {url} \u{2014} peers can message you."),
                            Err(e) => eprintln!("\n\u{26a0} NOT registered: the relay at {url} could not be reached ({e})."),
                        },
                        Err(e) => return Err(e),
                    },
                    None => eprintln!("\n\u{26a0} NOT registered: no relay is configured, so your keys were not published"),
                }
            }
            eprintln!(
                "\nName:        {}",
                if display.is_empty() {
                    dir.file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default()
                } else {
                    display.clone()
                }
            );
            eprintln!("Path:        {}", dir.display());
            eprintln!("Fingerprint: {}", info.user_id);
            eprintln!("Relay:       {}", server.as_deref().unwrap_or("(none)"));
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
    ))
}

fn id(sel: &Selection, json: bool) -> Result<(), CliError> {
    let located = resolve(sel, None)?;
    let dir = &located.dir;
    let store = open_store(dir)?;
    let no_pass = store
        .setting(setting::NO_PASSPHRASE)
        .map_err(ClientError::from)?
        .as_deref()
        == Some("1");
    let (secret, _) = secret(sel, located.generation, false, no_pass)?;
    let info = client::identity_info(&store, &secret).map_err(|e| unlock_error(e, dir))?;
    if !json {
        return print_stdout(info.user_id.as_str());
    }
    let name = store
        .setting(setting::NAME)
        .map_err(ClientError::from)?
        .unwrap_or_default();
    match located.generation {
        Generation::V001 => print_stdout(&py_json(&[
            ("user_id", info.user_id.as_str()),
            ("identity_key", &info.identity_key),
            ("name", &name),
        ])),
        Generation::V030 => {
            // 0.3.0's own contact card (`cli.py`, `_self_card`), `relay`
            // last and only when known.
            let saved = store
                .setting(setting::RELAY_URL)
                .map_err(ClientError::from)?;
            let relay = saved
                .filter(|s| !s.is_empty())
                .or_else(|| server_url(sel, Generation::V030, None).ok().flatten());
            let mut card = py_json(&[
                ("fingerprint", info.user_id.as_str()),
                ("name", &name),
                ("identity_key", &info.identity_key),
                ("signing_key", &info.signing_key),
            ]);
            card.pop();
            card.push_str(", \"verified\": true");
            if let Some(relay) = relay {
                card.push_str(", \"relay\": ");
                push_json_string(&mut card, &relay);
            }
            card.push('}');
            print_stdout(&card)
        }
    }
}

/// `add NAME USER_ID [--pin KEY]` (0.0.1) or `add FINGERPRINT --peer NAME`
/// (0.3.0), by the number of positionals.
fn add(
    sel: &Selection,
    args: &[String],
    peer: Option<String>,
    pin: Option<String>,
) -> Result<UserId, CliError> {
    // An unnamed 0.3.0 contact is saved under its fingerprint.
    let (name, user_id, generation, unnamed) = match (args, peer) {
        ([name, user_id], None) => (name.clone(), user_id.clone(), Generation::V001, false),
        ([fp], Some(name)) => (name, fp.clone(), Generation::V030, false),
        ([fp], None) => (fp.clone(), fp.clone(), Generation::V030, true),
        _ => {
            return Err(CliError::Usage(
                "add takes NAME USER_ID, or FINGERPRINT --peer NAME".into(),
            ))
        }
    };
    let located = resolve(sel, None)?;
    let id = UserId::parse(&user_id).map_err(|_| match generation {
        Generation::V001 => CliError::BadUserId,
        Generation::V030 => CliError::Usage("fingerprint must be 32 hex characters".into()),
    })?;
    if !unnamed && is_user_id(&name) {
        return Err(CliError::NameLooksLikeId);
    }
    if !unnamed && !display::valid_saved_name(&name) {
        return Err(CliError::BadPeerName(name));
    }
    let store = open_store(&located.dir)?;
    let mut tx = StoreTransaction::new(&store).map_err(ClientError::from)?;
    let earlier = store
        .contacts()
        .map_err(ClientError::from)?
        .into_iter()
        .find(|c| c.name == name);
    if generation == Generation::V030 {
        if let Some(old) = earlier.as_ref().filter(|c| c.id != id) {
            // 0.3.0 refuses to take a name from another peer (`cmd_add`).
            return Err(CliError::Usage(format!(
                "a contact named '{name}' already exists (-> {}). Pick another name (e.g. '{name}-1')",
                old.id
            )));
        }
    }
    tx.changes.contacts.push(Contact {
        name: name.clone(),
        id: id.clone(),
        pin,
        signing_key: None,
    });
    tx.commit().map_err(ClientError::from)?;
    match (generation, earlier) {
        // A replaced id is a different person under a familiar name: say so.
        (Generation::V001, Some(old)) if old.id != id => {
            eprintln!("replaced {name}: was {}, now {id}", old.id)
        }
        (Generation::V001, _) => eprintln!("added {name} -> {id}"),
        (Generation::V030, old) => eprintln!(
            "{} contact '{name}' ({id}) in your contacts.",
            if old.is_some() { "Updated" } else { "Added" }
        ),
    }
    Ok(id)
}

/// `verify PEER [--identity-key K --signing-key S]` and `add --verify`:
/// pins the saved contact's keys once they hash to its id (0.3.0's
/// `_record_keys`), from the relay unless both keys are given.
async fn verify(
    sel: &Selection,
    peer: &str,
    identity_key: Option<String>,
    signing_key: Option<String>,
) -> Result<(), CliError> {
    let source = match (identity_key, signing_key) {
        (Some(identity_key), Some(signing_key)) => {
            let located = resolve(sel, None)?;
            let store = open_store(&located.dir)?;
            let id = client::find_peer(&store, peer)?;
            let keys = retalk_proto::wire::PublicKeys {
                identity_key,
                signing_key,
            };
            client::pin_contact(&store, &id, &keys)?;
            "supplied keys"
        }
        (None, None) => {
            let (agent, _) = open_agent(sel, false)?;
            let id = agent.find_peer(peer)?;
            agent.verify_contact(&id).await?;
            "the relay"
        }
        _ => {
            return Err(CliError::Usage(
                "manual verify needs both --identity-key and --signing-key: the fingerprint is the hash of the two together".into(),
            ))
        }
    };
    eprintln!("\n\u{2713} Verified {peer}\nKeys:        from {source}");
    Ok(())
}

/// `share CONTACT --peer RECIPIENT [--as NAME]` (0.3.0's `cmd_share`): the
/// card is `_build_card`'s, keys left empty (this store pins only the
/// identity key, and a card carries both or neither).
async fn share(
    sel: &Selection,
    contact: &str,
    peer: &str,
    as_name: Option<String>,
) -> Result<(), CliError> {
    let (agent, _) = open_agent(sel, true)?;
    let fp = client::find_peer(agent.store(), contact).map_err(|_| {
        CliError::Usage(format!(
            "unknown contact '{contact}': save it with `retalk add {contact}`, or pass a 32-hex user id"
        ))
    })?;
    let saved = agent
        .store()
        .contacts()
        .map_err(ClientError::from)?
        .into_iter()
        .find(|c| c.id == fp && c.name != fp.as_str())
        .map(|c| c.name);
    let name = as_name.or(saved).unwrap_or_default();
    let mut card = py_json(&[
        ("fingerprint", fp.as_str()),
        ("name", &name),
        ("identity_key", ""),
        ("signing_key", ""),
    ]);
    card.pop();
    card.push_str(", \"verified\": false}");
    let to = agent.find_peer(peer)?;
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
    eprintln!("shared contact '{label}' ({fp}) with {peer}");
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
async fn send(sel: &Selection, args: &[String], peer: Option<String>) -> Result<(), CliError> {
    let (peer, text) = match (args, peer) {
        ([peer, text], None) => (peer.clone(), text.clone()),
        ([text], Some(peer)) => (peer, text.clone()),
        ([_], None) => return Err(CliError::NoRecipient),
        _ => {
            return Err(CliError::Usage(
                "send takes PEER TEXT, or TEXT --peer PEER".into(),
            ))
        }
    };
    // Read before unlocking anything: a text that cannot be read is a
    // usage error, found before a ratchet step is spent on it.
    let text = if text == "-" { read_stdin()? } else { text };
    let (agent, located) = open_agent(sel, true)?;
    let to = agent.find_peer(&peer)?;
    if located.generation == Generation::V030 {
        // 0.3.0 syncs first (`cmd_send`); what is due goes out with it.
        agent.sync(true).await?;
    }
    let receipt = agent.send(&to, &text).await?;
    match receipt.delivery {
        Delivery::Queued { .. } => {
            if located.generation == Generation::V030 {
                print_stdout(&py_json(&[("id", &receipt.id), ("to", to.as_str())]))?;
            }
            eprintln!("sent to {peer}");
            Ok(())
        }
        Delivery::Refused => Err(CliError::RefusedByPeer(peer)),
    }
}

/// `contacts [--json]` (0.3.0's `cmd_contacts`): sorted by name, unnamed
/// last, then by id. A contact is verified when both of its keys were
/// checked against its id and recorded.
fn contacts(sel: &Selection, json: bool) -> Result<(), CliError> {
    let located = resolve(sel, None)?;
    let store = open_store(&located.dir)?;
    let mut all = store.contacts().map_err(ClientError::from)?;
    let label = |c: &Contact| (c.name != c.id.as_str()).then(|| c.name.clone());
    all.sort_by_key(|c| (label(c).unwrap_or_else(|| "~".into()), c.id.to_string()));
    for c in &all {
        let name = label(c);
        let verified = c.verified();
        let line = if json {
            let mut card = py_json(&[
                ("name", name.as_deref().unwrap_or("")),
                ("fingerprint", c.id.as_str()),
                ("identity_key", c.pin.as_deref().unwrap_or("")),
                ("signing_key", c.signing_key.as_deref().unwrap_or("")),
            ]);
            card.pop();
            card.push_str(if verified {
                ", \"verified\": true}"
            } else {
                ", \"verified\": false}"
            });
            card
        } else {
            format!(
                "{}\t{}\t{}",
                name.as_deref().unwrap_or("(unnamed)"),
                c.id,
                if verified { "verified" } else { "unverified" }
            )
        };
        print_stdout(&line)?;
    }
    Ok(())
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
        let contacts = store.contacts().map_err(ClientError::from)?;
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
    let fp = client::find_peer(&store, &peer)?;
    client::set_blocked(&store, &fp, !remove)?;
    eprintln!(
        "{} {peer} ({fp})",
        if remove { "unblocked" } else { "blocked" }
    );
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

fn unlock_error(e: ClientError, dir: &Path) -> CliError {
    match e {
        ClientError::WrongSecret => CliError::WrongSecret(dir.display().to_string()),
        ClientError::NoIdentity => CliError::NoIdentityAt(dir.display().to_string()),
        other => other.into(),
    }
}

/// Opens the selected identity against its relay, and prints the banner
/// when `banner`.
fn open_agent(sel: &Selection, banner: bool) -> Result<(Agent, Located), CliError> {
    let located = resolve(sel, None)?;
    let dir = &located.dir;
    let store = open_store(dir)?;
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
    let agent =
        Client::open(store, transport, SystemClock, &secret).map_err(|e| unlock_error(e, dir))?;
    if banner {
        let name = agent.name()?;
        eprintln!(
            "using {} ({}) from {}",
            if name.is_empty() { "user" } else { &name },
            agent.user_id(),
            dir.display()
        );
    }
    Ok((agent, located))
}
