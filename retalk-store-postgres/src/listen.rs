//! Wake-ups across nodes: `send_message` notifies channel `retalk_mail`
//! with the recipient's id in the transaction that stores the message, and
//! every node listens on a connection of its own (never a pooled one: a
//! pooled connection is handed to other work and may be replaced at any
//! time, and a LISTEN lives and dies with its session).
//!
//! PostgreSQL does not replay notifications sent while a listener was
//! disconnected, so after every (re)connection the listener reports
//! [`Wake::Everyone`]: each parked read checks its mailbox once more.

use std::time::Duration;

use futures_util::StreamExt;
use retalk_proto::ids::UserId;
use tokio_postgres::{AsyncMessage, NoTls};

use crate::error::{describe, PgError};

/// The notification channel.
pub(crate) const CHANNEL: &str = "retalk_mail";

/// Longest pause between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// What a notification (or a reconnection) asks of this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wake {
    /// Mail was stored for this user (by any node).
    Mail(UserId),
    /// The listener (re)connected: notifications may have been missed.
    Everyone,
}

/// A node's listener; see the module docs. Made by
/// [`PgRelayStore::listener`](crate::PgRelayStore::listener).
#[derive(Debug, Clone)]
pub struct Listener {
    config: tokio_postgres::Config,
}

/// Aborts a spawned task when dropped (the listener's connection driver
/// must not outlive it).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Listener {
    pub(crate) fn new(config: tokio_postgres::Config) -> Self {
        Self { config }
    }

    /// Listens until the future is dropped, calling `on` for every wake-up,
    /// reconnecting (with a short backoff, logged at `warn`) whenever the
    /// connection fails. Runs on the caller's tokio runtime.
    pub async fn run(self, mut on: impl FnMut(Wake) + Send) {
        let mut backoff = Duration::from_millis(50);
        // One log line per outage, not one per attempt.
        let mut logged = false;
        loop {
            let mut connected = false;
            let outcome = self.session(&mut on, &mut connected).await;
            if connected {
                backoff = Duration::from_millis(50);
                logged = false;
            }
            if !logged {
                match outcome {
                    Ok(()) => {
                        tracing::warn!("database notifications: connection closed; reconnecting")
                    }
                    Err(e) => tracing::warn!("database notifications: {e}; reconnecting"),
                }
                logged = true;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// One connection: LISTEN, report [`Wake::Everyone`], then each
    /// notification, until the connection ends.
    async fn session(
        &self,
        on: &mut (impl FnMut(Wake) + Send),
        connected: &mut bool,
    ) -> Result<(), PgError> {
        let (client, mut connection) = self
            .config
            .connect(NoTls)
            .await
            .map_err(|e| PgError::Unreachable(describe(&e)))?;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        // The connection must be polled for the LISTEN to complete and for
        // notifications to arrive: a task drives it and forwards them.
        let _driver = AbortOnDrop(tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(m) = messages.next().await {
                match m {
                    Ok(AsyncMessage::Notification(n)) => {
                        if tx.send(Ok(n.payload().to_owned())).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        let _ = tx.send(Err(PgError::Unreachable(describe(&e))));
                        return;
                    }
                }
            }
        }));
        client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
        *connected = true;
        on(Wake::Everyone);
        while let Some(item) = rx.recv().await {
            // Foreign payloads on the channel are ignored.
            if let Ok(user) = UserId::parse(&item?) {
                on(Wake::Mail(user));
            }
        }
        drop(client);
        Ok(())
    }
}
