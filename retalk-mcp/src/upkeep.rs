//! The background task: the library's follow driver keeps the identity
//! healthy (key maintenance, resends) and hears of mail as it arrives;
//! messages stay in the local inbox for `receive`, a waiting `receive` is
//! woken, and the watched peer's new messages are pushed to the host.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use retalk_proto::client::{Follow, Followed};
use retalk_proto::ClientError;
#[allow(deprecated)] // see `notify`
use rmcp::model::{LoggingLevel, LoggingMessageNotificationParam};
use rmcp::{Peer, RoleServer};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::server::Shared;

/// Pause before the follow driver is started again after a local failure.
const RESTART_AFTER: Duration = Duration::from_secs(5);

/// Runs until `stop`: the follow driver (restarted after a store error,
/// which it returns) and the notifier for `watch`.
pub(crate) async fn run(
    shared: Arc<Shared>,
    notes: mpsc::UnboundedReceiver<Value>,
    follow: Follow,
    host: Peer<RoleServer>,
    stop: CancellationToken,
) {
    let notifier = tokio::spawn(notify(shared.clone(), notes, host, stop.clone()));
    loop {
        let handled = shared
            .agent
            .follow(&follow, stop.clone().cancelled_owned(), |event| {
                match event {
                    Followed::Message(m) => {
                        shared.arrivals.send_modify(|n| *n += 1);
                        shared.saw(m);
                    }
                    Followed::Problem(p) => {
                        tracing::warn!("a message from {} was skipped: {}", p.from, p.reason)
                    }
                    Followed::Maintained(r) => tracing::debug!("keys maintained: {r:?}"),
                    Followed::MaintainFailed(e) => tracing::warn!("key maintenance failed: {e}"),
                    Followed::Unreachable { error, retry_in } => {
                        tracing::warn!("relay unreachable ({error}); retrying in {retry_in:.0} s")
                    }
                    Followed::Polling => {
                        tracing::info!("the relay cannot hold reads: polling")
                    }
                }
                Ok::<_, ClientError>(())
            })
            .await;
        match handled {
            Ok(()) => break,
            Err(e) => tracing::error!("background receive stopped: {e}; restarting"),
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(RESTART_AFTER) => {}
        }
    }
    let _ = notifier.await;
}

/// Sends each watched message once, unless `receive` handed it out first,
/// as `notifications/message` (agent-talk's shape: the message's id,
/// source and text in `data`). MCP's logging notification is what hosts
/// show today; rmcp marks it deprecated because a later protocol revision
/// replaces it.
#[allow(deprecated)]
async fn notify(
    shared: Arc<Shared>,
    mut rx: mpsc::UnboundedReceiver<Value>,
    host: Peer<RoleServer>,
    stop: CancellationToken,
) {
    let mut sent = HashSet::new();
    while let Some(data) = tokio::select! {
        data = rx.recv() => data,
        _ = stop.cancelled() => None,
    } {
        let id = data["id"].as_str().unwrap_or_default().to_owned();
        // Not what `receive` already handed out: the model has it.
        if shared.was_handed(&id) || !sent.insert(id) {
            continue;
        }
        let note =
            LoggingMessageNotificationParam::new(LoggingLevel::Info, data).with_logger("retalk");
        if let Err(e) = host.notify_logging_message(note).await {
            tracing::warn!("could not notify the host of a message: {e}");
        }
    }
}
