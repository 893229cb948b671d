//! Waiting for mail on the relay without taking it (long-poll).

use super::{Client, ClientError, Store, Transport, TransportError};
use crate::clock::Clock;
use crate::wire::{Args, MailItem, Wait};

/// Seconds before a relay that would not hold a read is asked again.
const WAIT_RECHECK: f64 = 600.0;

/// What [`Client::wait_for_mail`] saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailWait {
    /// There is mail on the relay for us: [`Client::fetch`] it.
    Arrived,
    /// The wait ran out without mail (or the relay answered early).
    Nothing,
    /// The relay does not hold reads (a Python relay): poll instead.
    Unsupported,
}

impl<S: Store, T: Transport, C: Clock> Client<S, T, C> {
    /// Waits up to `seconds` for mail to arrive on the relay, taking none:
    /// a `read_messages` with `peek` and `wait` (our relay's long-poll).
    /// The wait deletes nothing, so dropping this future at any point
    /// loses nothing; [`fetch`](Self::fetch) then takes the mail.
    ///
    /// A relay that will not hold the read is remembered: a Python relay
    /// (HTTP 400 "unexpected keyword argument 'wait'", or 'peek' from a
    /// 0.0.1 relay, which spends no nonce and deletes nothing) or ours at
    /// its cap of held reads (429). `Unsupported` is then answered without
    /// asking for the next ten minutes, or until the relay was unreachable.
    pub async fn wait_for_mail(&self, seconds: f64) -> Result<MailWait, ClientError> {
        let Some(wait) = Wait::new(seconds) else {
            return Ok(MailWait::Nothing);
        };
        let now = self.clock.now();
        let refused_at = || {
            self.wait_refused_at
                .lock()
                .unwrap_or_else(|e| e.into_inner())
        };
        if let Some(at) = *refused_at() {
            if now >= at && now - at < WAIT_RECHECK {
                return Ok(MailWait::Unsupported);
            }
        }
        let answer: Result<Vec<MailItem>, ClientError> = self
            .call(Args::ReadMessages {
                peer: None,
                peek: true,
                wait: Some(wait),
            })
            .await;
        match answer {
            Ok(mail) => {
                *refused_at() = None;
                Ok(if mail.is_empty() {
                    MailWait::Nothing
                } else {
                    MailWait::Arrived
                })
            }
            Err(ClientError::Relay {
                source: TransportError::Refused { status: 400, error },
                ..
            }) if ["'wait'", "'peek'"]
                .iter()
                .any(|arg| error.contains(&format!("unexpected keyword argument {arg}"))) =>
            {
                *refused_at() = Some(now);
                Ok(MailWait::Unsupported)
            }
            // At its cap of held reads (another process of ours, or many
            // clients behind one proxy address): poll for a while too.
            Err(ClientError::Relay {
                source: TransportError::Refused { status: 429, .. },
                ..
            }) => {
                *refused_at() = Some(now);
                Ok(MailWait::Unsupported)
            }
            Err(e) => {
                if matches!(
                    e,
                    ClientError::Relay {
                        source: TransportError::NotSent(_) | TransportError::Unreachable(_),
                        ..
                    }
                ) {
                    *refused_at() = None; // it may come back as another relay
                }
                Err(e)
            }
        }
    }
}
