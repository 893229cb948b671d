//! The `retalk` command line: a drop-in for the original's (retalk 0.0.1),
//! on the SQLite store and the HTTP transport.

mod args;
mod error;
mod identity;
mod receive;

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use clap::Parser;
use retalk_proto::canonical::push_json_string;
use retalk_proto::client::{self, setting, Changes, Contact, Store};
use retalk_proto::{Client, ClientError, UserId};
use retalk_store_sqlite::SqliteStore;
use retalk_transport_http::{HttpTransport, SystemClock};

use args::{Cli, Command, Selection};
use error::CliError;
use identity::{open_store, resolve, secret, STORE_FILE};

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
            eprintln!("retalk: {e}");
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
        Command::Receive { follow, json } => {
            let (agent, _) = open_agent(&sel)?;
            receive::run(&agent, follow, json).await
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

fn print_stdout(line: &str) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")
        .and_then(|()| out.flush())
        .map_err(CliError::Output)
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
    let info = client::create_identity(&store, &secret, name.as_deref().unwrap_or(""))?;
    let server = sel
        .server
        .clone()
        .or_else(|| std::env::var("SERVER_URL").ok())
        .filter(|s| !s.is_empty());
    if let Some(server) = server {
        let _lock = store.lock().map_err(ClientError::from)?;
        store
            .commit(Changes {
                settings: vec![(setting::RELAY_URL.into(), server)],
                ..Changes::default()
            })
            .map_err(ClientError::from)?;
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
    let store = open_store(&dir)?;
    let _lock = store.lock().map_err(ClientError::from)?;
    store
        .commit(Changes {
            contacts: vec![Contact {
                name: name.into(),
                id,
                pin,
            }],
            ..Changes::default()
        })
        .map_err(ClientError::from)?;
    eprintln!("added {name} -> {user_id}");
    Ok(())
}

async fn send(sel: &Selection, peer: &str, text: &str) -> Result<(), CliError> {
    let (agent, _) = open_agent(sel)?;
    let to = peer_to_id(agent.store(), peer)?;
    agent.send(&to, text).await?;
    eprintln!("sent to {peer}");
    Ok(())
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
    let server = sel
        .server
        .clone()
        .or_else(|| std::env::var("SERVER_URL").ok())
        .filter(|s| !s.is_empty())
        .or(saved)
        .filter(|s| !s.is_empty())
        .ok_or(CliError::NoServer)?;
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
