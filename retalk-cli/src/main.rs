//! The `retalk` command line: a drop-in for the original's (retalk 0.0.1),
//! on the SQLite store and the HTTP transport.

mod args;
mod display;
mod error;
mod identity;
mod receive;

use std::io::{Read, Write};
use std::path::Path;
use std::process::ExitCode;

use clap::Parser;
use retalk_proto::canonical::push_json_string;
use retalk_proto::client::{self, setting, Contact, Delivery, Store, StoreTransaction};
use retalk_proto::{Client, ClientError, UserId};
use retalk_store_sqlite::SqliteStore;
use retalk_transport_http::{HttpTransport, SystemClock};

use args::{Cli, Command, Selection};
use error::CliError;
use identity::{open_store, resolve, secret, server_url, STORE_FILE};

pub type Agent = Client<SqliteStore, HttpTransport, SystemClock>;

fn main() -> ExitCode {
    let cli = Cli::parse();
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
            ExitCode::from(e.exit_code())
        }
    }
}

async fn run(cli: Cli) -> Result<(), CliError> {
    let sel = cli.select;
    match cli.command {
        Command::Init { directory, name } => init(&sel, directory, name),
        Command::Id { json } => id(&sel, json),
        Command::Add { name, user_id, pin } => add(&sel, &name, &user_id, pin),
        Command::Send { peer, text } => send(&sel, &peer, &text).await,
        Command::Receive {
            follow,
            json,
            limit,
        } => {
            let (agent, _) = open_agent(&sel)?;
            receive::run(&agent, follow, json, limit).await
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

fn init(
    sel: &Selection,
    directory: Option<std::path::PathBuf>,
    name: Option<String>,
) -> Result<(), CliError> {
    let sel = Selection {
        dir: directory.or_else(|| sel.dir.clone()),
        ..sel.clone()
    };
    let dir = resolve(&sel, true)?;
    if dir.join(STORE_FILE).exists() {
        return Err(CliError::IdentityExists(dir.display().to_string()));
    }
    let secret = secret(true)?;
    let store = open_store(&dir)?;
    let server = server_url(&sel, None)?;
    let info = client::create_identity(&store, &secret, name.as_deref().unwrap_or(""))?;
    if let Some(server) = server {
        let mut tx = StoreTransaction::new(&store).map_err(ClientError::from)?;
        tx.changes
            .settings
            .push((setting::RELAY_URL.into(), server));
        tx.commit().map_err(ClientError::from)?;
    }
    eprintln!("created identity at {}", dir.display());
    eprintln!("user id (share out-of-band; it is address + pin in one):");
    print_stdout(info.user_id.as_str())
}

fn id(sel: &Selection, json: bool) -> Result<(), CliError> {
    let dir = resolve(sel, false)?;
    let store = open_store(&dir)?;
    let info = client::identity_info(&store, &secret(false)?).map_err(|e| unlock_error(e, &dir))?;
    if json {
        let name = store
            .setting(setting::NAME)
            .map_err(ClientError::from)?
            .unwrap_or_default();
        print_stdout(&py_json(&[
            ("user_id", info.user_id.as_str()),
            ("identity_key", &info.identity_key),
            ("name", &name),
        ]))
    } else {
        print_stdout(info.user_id.as_str())
    }
}

fn add(sel: &Selection, name: &str, user_id: &str, pin: Option<String>) -> Result<(), CliError> {
    let dir = resolve(sel, false)?;
    let id = UserId::parse(user_id).map_err(|_| CliError::BadUserId)?;
    if is_user_id(name) {
        return Err(CliError::NameLooksLikeId);
    }
    if !display::valid_saved_name(name) {
        return Err(CliError::BadPeerName(name.into()));
    }
    let store = open_store(&dir)?;
    let mut tx = StoreTransaction::new(&store).map_err(ClientError::from)?;
    let earlier = store
        .contacts()
        .map_err(ClientError::from)?
        .into_iter()
        .find(|c| c.name == name);
    tx.changes.contacts.push(Contact {
        name: name.into(),
        id: id.clone(),
        pin,
    });
    tx.commit().map_err(ClientError::from)?;
    match earlier {
        // A replaced id is a different person under a familiar name: say so.
        Some(old) if old.id != id => {
            eprintln!("replaced {name}: was {}, now {id}", old.id)
        }
        _ => eprintln!("added {name} -> {id}"),
    }
    Ok(())
}

async fn send(sel: &Selection, peer: &str, text: &str) -> Result<(), CliError> {
    // Read before unlocking anything: a text that cannot be read is a
    // usage error, found before a ratchet step is spent on it.
    let text = if text == "-" {
        read_stdin()?
    } else {
        text.to_owned()
    };
    let (agent, _) = open_agent(sel)?;
    let to = peer_to_id(agent.store(), peer)?;
    match agent.send(&to, &text).await?.delivery {
        Delivery::Queued { .. } => {
            eprintln!("sent to {peer}");
            Ok(())
        }
        Delivery::Refused => Err(CliError::RefusedByPeer(peer.into())),
    }
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

fn peer_to_id(store: &SqliteStore, peer: &str) -> Result<UserId, CliError> {
    let contacts = store.contacts().map_err(ClientError::from)?;
    if let Some(c) = contacts.into_iter().find(|c| c.name == peer) {
        return Ok(c.id);
    }
    UserId::parse(peer).map_err(|_| CliError::UnknownPeer(peer.into()))
}

fn unlock_error(e: ClientError, dir: &Path) -> CliError {
    match e {
        ClientError::WrongSecret => CliError::WrongSecret(dir.display().to_string()),
        ClientError::NoIdentity => CliError::NoIdentityAt(dir.display().to_string()),
        other => other.into(),
    }
}

/// Opens the selected identity against its relay and prints the banner.
fn open_agent(sel: &Selection) -> Result<(Agent, std::path::PathBuf), CliError> {
    let dir = resolve(sel, false)?;
    let store = open_store(&dir)?;
    let saved = store
        .setting(setting::RELAY_URL)
        .map_err(ClientError::from)?;
    let server = server_url(sel, saved)?.ok_or(CliError::NoServer)?;
    let transport = HttpTransport::new(server).map_err(|e| CliError::BadServer(e.to_string()))?;
    let secret = secret(false)?;
    let agent =
        Client::open(store, transport, SystemClock, &secret).map_err(|e| unlock_error(e, &dir))?;
    let name = agent.name()?;
    eprintln!(
        "using {} ({}) from {}",
        if name.is_empty() { "user" } else { &name },
        agent.user_id(),
        dir.display()
    );
    Ok((agent, dir))
}
