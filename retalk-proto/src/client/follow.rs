//! The follow driver: what `retalk receive --follow` runs, as a library
//! loop an embedder starts in a few lines.
//!
//! ```no_run
//! # async fn demo<S: retalk_proto::client::Store, T: retalk_proto::client::Transport, C: retalk_proto::Clock>(
//! #     client: retalk_proto::Client<S, T, C>,
//! # ) -> Result<(), retalk_proto::ClientError> {
//! use retalk_proto::client::{Follow, Followed};
//! let stop = std::future::pending::<()>(); // e.g. a Ctrl-C or a cancellation token
//! client
//!     .follow(&Follow::default(), stop, |event| {
//!         if let Followed::Message(m) = event {
//!             println!("{}: {}", m.name, m.text);
//!         }
//!         Ok::<_, retalk_proto::ClientError>(())
//!     })
//!     .await
//! # }
//! ```

use std::collections::HashSet;
use std::future::Future;
use std::pin::pin;

use futures_util::future::{select, Either};
use futures_util::FutureExt;

use super::{Client, ClientError, MailWait, MaintainReport, Problem, Received};

use crate::client::{Store, Transport};
use crate::clock::Clock;

/// Settings of [`Client::follow`]; the defaults are the CLI's.
#[derive(Debug, Clone, PartialEq)]
pub struct Follow {
    /// Longest one long-poll is held on a relay that offers it, in seconds
    /// (our relay shortens it to its `--max-wait`, 25 s by default).
    pub wait: f64,
    /// Seconds between reads of a relay that cannot hold them (a Python
    /// relay), as the original polls.
    pub poll: f64,
    /// Seconds between key maintenance rounds (replenish one-time keys,
    /// rotate the fallback key, resend what is due, give up on the old).
    pub maintain_every: f64,
    /// Longest pause, in seconds, while the relay cannot be reached; the
    /// pause doubles from `poll` up to this.
    pub max_backoff: f64,
    /// Leave the messages in the local inbox for another taker (the MCP
    /// server's `receive` tool): each is handed to the handler once per
    /// run, when first seen, and stays until taken.
    pub keep_messages: bool,
}

impl Default for Follow {
    fn default() -> Self {
        Self {
            wait: 25.0,
            poll: 2.0,
            maintain_every: 60.0,
            max_backoff: 30.0,
            keep_messages: false,
        }
    }
}

/// What the driver hands to its handler.
#[derive(Debug)]
pub enum Followed<'a> {
    /// A decrypted message. It leaves the local inbox only once the
    /// handler returned `Ok` for it (never with [`Follow::keep_messages`]).
    Message(&'a Received),
    /// Mail that could not be handled, skipped.
    Problem(Problem),
    /// A maintenance round ran (its report lists messages given up on).
    Maintained(MaintainReport),
    /// A maintenance round failed; it is tried again next round.
    MaintainFailed(ClientError),
    /// The relay could not be reached; the next try is in `retry_in`
    /// seconds.
    Unreachable { error: ClientError, retry_in: f64 },
    /// The relay cannot hold reads: polling every [`Follow::poll`] seconds
    /// from now on (said once).
    Polling,
}

impl<S: Store, T: Transport, C: Clock> Client<S, T, C> {
    /// Receives until `stop` resolves: hands each message (and each event)
    /// to `handler`, holds reads open on a relay that offers `wait` so mail
    /// arrives as it is sent, polls a relay that does not, backs off while
    /// the relay is down, and maintains keys and resends every
    /// `maintain_every` seconds.
    ///
    /// Cancel with `stop` rather than by dropping the future: `stop` is
    /// honoured at once while waiting (the waits delete nothing on the
    /// relay) and otherwise after the step in progress, so no mail the
    /// relay handed over is ever dropped. Dropping the future while it
    /// fetches may lose the batch in flight, as a lost answer would.
    ///
    /// Returns `Ok` when stopped, or the first error of the handler or of
    /// the local store (the relay's errors are retried, not returned).
    pub async fn follow<E: From<ClientError>>(
        &self,
        settings: &Follow,
        stop: impl Future<Output = ()>,
        mut handler: impl FnMut(Followed<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut stop = pin!(stop);
        let max_backoff = settings.max_backoff.max(settings.poll);
        let mut backoff = settings.poll;
        // Failed waits back off on their own: reads may work meanwhile.
        let mut wait_backoff = settings.poll;
        // Maintenance first thing (keys, and resends that came due while
        // nothing ran), then every `maintain_every`.
        let mut last_maintain = f64::NEG_INFINITY;
        let mut said_polling = false;
        // Messages an earlier run saved but did not hand over come first.
        let mut shown = HashSet::new();
        self.hand_over(settings.keep_messages, &mut shown, &mut handler)?;
        loop {
            if stop.as_mut().now_or_never().is_some() {
                return Ok(());
            }
            match self.fetch().await {
                Ok(inbox) => {
                    backoff = settings.poll;
                    for p in inbox.problems {
                        handler(Followed::Problem(p))?;
                    }
                }
                Err(ClientError::Store(e)) => return Err(ClientError::Store(e).into()),
                Err(error) => {
                    backoff = (backoff * 2.0).min(max_backoff);
                    handler(Followed::Unreachable {
                        error,
                        retry_in: backoff,
                    })?;
                    if self.pause(stop.as_mut(), backoff).await {
                        return Ok(());
                    }
                    continue;
                }
            }
            self.hand_over(settings.keep_messages, &mut shown, &mut handler)?;

            if self.clock.now() - last_maintain >= settings.maintain_every {
                last_maintain = self.clock.now();
                match self.maintain().await {
                    Ok(report) => handler(Followed::Maintained(report))?,
                    Err(ClientError::Store(e)) => return Err(ClientError::Store(e).into()),
                    Err(e) => handler(Followed::MaintainFailed(e))?,
                }
            }

            let started = self.clock.now();
            // Wake up in time for the next maintenance round.
            let wait = settings
                .wait
                .min(settings.maintain_every - (started - last_maintain))
                .max(settings.poll.min(settings.wait));
            let waited = match select(stop.as_mut(), pin!(self.wait_for_mail(wait))).await {
                Either::Left(((), _)) => return Ok(()),
                Either::Right((waited, _)) => waited,
            };
            if waited.is_ok() {
                wait_backoff = settings.poll;
            }
            let rest = match waited {
                Ok(MailWait::Arrived) => 0.0,
                // A relay that answered before the poll interval (it holds
                // reads shorter, or not at all) is not asked more often.
                Ok(MailWait::Nothing) => settings.poll - (self.clock.now() - started),
                Ok(MailWait::Unsupported) => {
                    if !said_polling {
                        said_polling = true;
                        handler(Followed::Polling)?;
                    }
                    settings.poll
                }
                Err(ClientError::Store(e)) => return Err(ClientError::Store(e).into()),
                // Never straight back: a relay (or proxy) that fails every
                // wait but serves reads would otherwise be asked in a loop.
                Err(error) => {
                    wait_backoff = (wait_backoff * 2.0).min(max_backoff);
                    handler(Followed::Unreachable {
                        error,
                        retry_in: wait_backoff,
                    })?;
                    wait_backoff
                }
            };
            if rest > 0.0 && self.pause(stop.as_mut(), rest).await {
                return Ok(());
            }
        }
    }

    /// Hands the local inbox to `handler`: taking each message, or with
    /// `keep` only those not in `shown` (the keys handed earlier in this
    /// run and still in the inbox), leaving them.
    fn hand_over<E: From<ClientError>>(
        &self,
        keep: bool,
        shown: &mut HashSet<String>,
        handler: &mut impl FnMut(Followed<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        if !keep {
            self.take_messages(usize::MAX, |m| handler(Followed::Message(m)))?;
            return Ok(());
        }
        let pending = self.pending_messages()?;
        shown.retain(|k| pending.iter().any(|m| &m.key == k));
        for m in &pending {
            if shown.insert(m.key.clone()) {
                handler(Followed::Message(m))?;
            }
        }
        Ok(())
    }

    /// Sleeps `seconds` on the client's clock unless `stop` comes first;
    /// true when it did.
    async fn pause(
        &self,
        stop: std::pin::Pin<&mut impl Future<Output = ()>>,
        seconds: f64,
    ) -> bool {
        matches!(
            select(stop, pin!(self.clock.sleep(seconds))).await,
            Either::Left(_)
        )
    }
}
