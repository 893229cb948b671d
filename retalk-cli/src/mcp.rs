//! `retalk mcp`: the glue between the command line and the MCP server in
//! `retalk-mcp`. The identity is selected and unlocked as for every other
//! command ([`crate::open_agent`]); agent-talk's `RETALK_DIR` selects it
//! too, so a host configured for agent-talk's server switches by changing
//! the command alone.

use std::path::PathBuf;

use clap::Args;
use tracing_subscriber::EnvFilter;

use retalk_mcp::{AddressBook, Agent, BookError, BookFuture};
use retalk_proto::client::Contact;
use retalk_proto::UserId;

use crate::args::Selection;
use crate::book;
use crate::error::CliError;

/// `retalk mcp`'s own options (the identity options are the shared ones).
#[derive(Args, Debug)]
pub struct McpArgs {
    /// Push each new message from PEER (saved name or fingerprint) to the
    /// host as a `notifications/message` as it arrives, without taking it
    #[arg(long = "watch-peer", value_name = "PEER", env = "RETALK_WATCH_PEER")]
    pub watch_peer: Option<String>,
    /// The peers `receive` reads when the model names none, comma-separated
    /// (default: the saved contacts and the members of groups you or they
    /// own)
    #[arg(
        long = "receive-from",
        value_name = "PEERS",
        env = "RETALK_RECEIVE_FROM",
        value_delimiter = ','
    )]
    pub receive_from: Vec<String>,
}

/// Opens the identity, then serves MCP on stdin/stdout until the host
/// closes it. A wrong passphrase or a missing identity fails here, before
/// the handshake, with the CLI's usual message and exit status.
pub async fn run(sel: &Selection, args: McpArgs) -> Result<(), CliError> {
    // Logs go to stderr: stdout carries nothing but the protocol.
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter(
            EnvFilter::try_from_env("RETALK_LOG")
                .unwrap_or_else(|_| EnvFilter::new("retalk_mcp=info,rmcp=warn")),
        )
        .try_init();
    let mut sel = sel.clone();
    let selected = sel.dir.is_some()
        || sel.dir_030.is_some()
        || sel.user.is_some()
        || sel.user_level.is_some();
    if !selected {
        sel.dir_030 = crate::identity::env_text("RETALK_DIR")?.map(PathBuf::from);
    }
    let (agent, _) = crate::open_agent(&sel, true)?;
    let options = retalk_mcp::Options {
        watch_peer: args.watch_peer.filter(|p| !p.trim().is_empty()),
        receive_from: args.receive_from,
        follow: Default::default(),
    };
    retalk_mcp::serve_stdio(agent, CommandLineBook, options)
        .await
        .map_err(|e| match e {
            retalk_mcp::ServeError::Peer(..) | retalk_mcp::ServeError::Book(_) => {
                CliError::Usage(e.to_string())
            }
            retalk_mcp::ServeError::Start(_) => CliError::Output(std::io::Error::other(e)),
        })
}

/// The command line's address book: a peer means in a tool call what it
/// means to `send`, `receive` and `share` (`book.rs`).
struct CommandLineBook;

impl AddressBook for CommandLineBook {
    fn contacts(&self, agent: &Agent) -> Result<Vec<Contact>, BookError> {
        Ok(book::effective(agent.store())?)
    }

    fn resolve(&self, contacts: &[Contact], reference: &str) -> Option<UserId> {
        book::resolve_peer(contacts, reference)
    }

    fn card(&self, agent: &Agent, reference: &str) -> Result<(UserId, String), BookError> {
        let (fp, _, card, _) = book::build_card(&self.contacts(agent)?, reference, None)?;
        Ok((fp, card))
    }

    fn group_cap<'a>(&'a self, agent: &'a Agent) -> BookFuture<'a, usize> {
        Box::pin(async move { Ok(crate::group::cap(agent).await?) })
    }
}
