//! `retalk mcp`: one retalk identity as a Model Context Protocol server over
//! stdio, on the official Rust SDK (`rmcp`).
//!
//! The tools keep the names and arguments of agent-talk's
//! `retalk_mcp_server.py` (`id`, `add`, `verify`, `contacts`, `send`,
//! `receive`, `check_inbox`, `sync`) so prompts written for it keep working,
//! and add `block`, `unblock`, `share` and the group tools (`group_create`,
//! `group_list`, `group_add`, `group_remove`, `group_send`, `group_leave`). Unlike that server, which runs the
//! Python CLI once per call and polls, this one holds the identity's keys
//! in-process, keeps it healthy with the library's follow driver
//! ([`retalk_proto::client::Client::follow`]: key maintenance, resends) and
//! hears of mail as it arrives (the relay's held reads), so a waiting
//! `receive` returns at once and a watched peer's message is pushed to the
//! host as a `notifications/message`.
//!
//! Nothing but protocol goes to stdout; logs go to stderr (`tracing`).

mod cli;
mod error;
mod handout;
mod link;
mod server;
mod upkeep;

use std::sync::Arc;

use retalk_proto::client::Follow;
use retalk_proto::{Client, UserId};
use retalk_store_sqlite::SqliteStore;
use retalk_transport_http::{HttpTransport, SystemClock};
use rmcp::transport::IntoTransport;
use rmcp::{RoleServer, ServiceExt};
use tokio_util::sync::CancellationToken;

pub use cli::{BookError, BookFuture, CommandLine};
pub use error::ServeError;

/// The identity the server acts as: what `retalk` opens for every command.
pub type Agent = Client<SqliteStore, HttpTransport, SystemClock>;

/// Longest a `receive` waits, in seconds: most MCP hosts time a tool call
/// out at 60 s, and our relay holds a read at most 25 s by default.
pub const MAX_WAIT: f64 = 25.0;

/// How long the background task may take to stop once the host is gone.
const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(3);

/// How the server behaves beyond the identity.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// A peer (saved name or fingerprint) whose new messages are pushed to
    /// the host as they arrive (`RETALK_WATCH_PEER`), without taking them.
    pub watch_peer: Option<String>,
    /// Peers `receive` reads when no `peer` is given
    /// (`RETALK_RECEIVE_FROM`, comma-separated); empty: the saved contacts
    /// (not the members of their groups: a group's owner, learned from a
    /// copy, is trust on first use that a stranger can claim).
    pub receive_from: Vec<String>,
    /// The follow driver's settings for the background upkeep; its
    /// `keep_messages` is forced on (mail is for `receive`).
    pub follow: Follow,
}

/// Serves MCP on stdin/stdout until the host closes the connection.
///
/// Errors: [`ServeError::Peer`] when `watch_peer` or a `receive_from` entry
/// names no saved contact nor a fingerprint and [`ServeError::Book`] when
/// the contacts cannot be read (both found before anything is served),
/// [`ServeError::Closed`] when stdin ends before the handshake,
/// [`ServeError::Start`] when the MCP handshake or the connection fails.
pub async fn serve_stdio(
    agent: Agent,
    cli: impl CommandLine,
    options: Options,
) -> Result<(), ServeError> {
    serve(agent, cli, options, rmcp::transport::stdio()).await
}

/// [`serve_stdio`] over any transport rmcp accepts (an embedder's pipe or
/// socket).
pub async fn serve<T, E, A>(
    agent: Agent,
    cli: impl CommandLine,
    options: Options,
    transport: T,
) -> Result<(), ServeError>
where
    T: IntoTransport<RoleServer, E, A>,
    E: std::error::Error + Send + Sync + 'static,
{
    let contacts = cli
        .contacts(&agent)
        .map_err(|e| ServeError::Book(e.to_string()))?;
    let resolve = |setting: &'static str, p: &str| {
        cli.resolve(&contacts, p.trim())
            .ok_or_else(|| ServeError::Peer {
                setting,
                name: p.to_owned(),
            })
    };
    let watch: Option<UserId> = options
        .watch_peer
        .as_deref()
        .map(|p| resolve("--watch-peer/RETALK_WATCH_PEER", p))
        .transpose()?;
    let receive_from = options
        .receive_from
        .iter()
        .filter(|p| !p.trim().is_empty())
        .map(|p| resolve("--receive-from/RETALK_RECEIVE_FROM", p))
        .collect::<Result<Vec<_>, _>>()?;
    let (shared, notes) = server::Shared::new(agent, Box::new(cli), receive_from, watch);
    let shared = Arc::new(shared);
    let transport = link::Link {
        inner: transport.into_transport(),
        shared: shared.clone(),
    };
    let running = server::RetalkServer::new(shared.clone())
        .serve(transport)
        .await
        .map_err(|e| match e {
            rmcp::service::ServerInitializeError::ConnectionClosed(why) => ServeError::Closed(why),
            e => ServeError::Start(e.to_string()),
        })?;
    let stop = CancellationToken::new();
    let follow = Follow {
        keep_messages: true,
        ..options.follow
    };
    let upkeep = tokio::spawn(upkeep::run(
        shared.clone(),
        notes,
        follow,
        running.peer().clone(),
        stop.clone(),
    ));
    let quit = running.waiting().await;
    stop.cancel();
    // The driver stops at once unless it is in a relay call; one stuck on
    // a relay that never answers is left behind after a moment rather
    // than for its HTTP timeout. Mail its read took but could not store
    // is not lost: the sender resends until our ack arrives.
    let mut upkeep = upkeep;
    if tokio::time::timeout(STOP_GRACE, &mut upkeep).await.is_err() {
        tracing::warn!("the background read is still waiting for the relay; exiting without it");
        upkeep.abort();
    }
    // Answers rmcp gave up writing (it drains for 5 s): their mail stays.
    for held in shared.handouts.all() {
        shared.put_back(held);
    }
    tracing::info!("the MCP host closed the connection");
    quit.map(|_| ())
        .map_err(|e| ServeError::Start(e.to_string()))
}
