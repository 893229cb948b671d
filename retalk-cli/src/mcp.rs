//! `retalk mcp`: the glue between the command line and the MCP server in
//! `retalk-mcp`. The identity is selected and unlocked as for every other
//! command ([`crate::open_agent`]); agent-talk's `RETALK_DIR` selects it
//! too, so a host configured for agent-talk's server switches by changing
//! the command alone.

use std::path::PathBuf;

use clap::Args;
use tracing_subscriber::EnvFilter;

use retalk_mcp::{Agent, BookError, BookFuture, CommandLine};
use retalk_proto::client::{Contact, GroupTag, Received};
use retalk_proto::UserId;

use crate::args::Selection;
use crate::error::CliError;
use crate::{book, history, receive};

/// `retalk mcp`'s own options (the identity options are the shared ones).
#[derive(Args, Debug)]
pub struct McpArgs {
    /// Push each new message from PEER (saved name or fingerprint) to the
    /// host as a `notifications/message` as it arrives, without taking it
    #[arg(long = "watch-peer", value_name = "PEER", env = "RETALK_WATCH_PEER")]
    pub watch_peer: Option<String>,
    /// The peers `receive` reads when the model names none, comma-separated
    /// (default: the saved contacts)
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
    let save = history::wanted(false)?;
    if save {
        history::warn_if_unsealed(agent.store())?;
    }
    retalk_mcp::serve_stdio(agent, Glue { save }, options)
        .await
        .map_err(|e| match e {
            retalk_mcp::ServeError::Peer { .. }
            | retalk_mcp::ServeError::Book(_)
            | retalk_mcp::ServeError::Closed(_) => CliError::Usage(e.to_string()),
            retalk_mcp::ServeError::Start(_) => CliError::Output(std::io::Error::other(e)),
        })
}

/// The command line's part: a peer means in a tool call what it means to
/// `send`, `receive` and `share` (`book.rs`), and what is received or sent
/// is kept as `receive` and `send` keep it (`RETALK_SAVE_MESSAGE`).
struct Glue {
    /// Save message texts in the history (`RETALK_SAVE_MESSAGE`).
    save: bool,
}

impl CommandLine for Glue {
    fn contacts(&self, agent: &Agent) -> Result<Vec<Contact>, BookError> {
        Ok(book::effective(agent.store())?)
    }

    fn resolve(&self, contacts: &[Contact], reference: &str) -> Option<UserId> {
        book::resolve_peer(contacts, reference)
    }

    fn card(&self, agent: &Agent, reference: &str) -> Result<(UserId, String), BookError> {
        let contacts = self.contacts(agent)?;
        // The command line's message names `retalk add`; the model has a tool.
        if book::resolve_peer(&contacts, reference).is_none() {
            return Err(format!(
                "unknown contact '{reference}': save it with the `add` tool (given its fingerprint), or pass a 32-hex fingerprint"
            )
            .into());
        }
        let (fp, _, card, _) = book::build_card(&contacts, reference, None)?;
        Ok((fp, card))
    }

    fn group_cap<'a>(&'a self, agent: &'a Agent) -> BookFuture<'a, usize> {
        Box::pin(async move { Ok(crate::group::cap(agent).await?) })
    }

    fn keep_received(&self, agent: &Agent, message: &Received) -> Result<(), BookError> {
        let keep = receive::Keep {
            messages: self.save,
            contacts: true,
        };
        receive::kept(agent, message, keep)?;
        Ok(())
    }

    fn keep_sent(
        &self,
        agent: &Agent,
        id: &str,
        to: &str,
        text: &str,
        group: Option<(&str, &str)>,
    ) -> Result<(), BookError> {
        if self.save {
            let group = group.map(|(id, name)| GroupTag {
                id: id.to_owned(),
                name: name.to_owned(),
            });
            agent.save_sent(id, to, text, group)?;
        }
        Ok(())
    }
}
