//! Waiting for mail on the relay without taking it (long-poll).

use super::{Client, ClientError, Store, Transport, TransportError};
use crate::clock::Clock;
use crate::wire::{Args, MailItem, Wait};

/// Whether the relay holds a `read_messages` with `wait`, as learned from
/// its answers (Python relays refuse the argument).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum WaitSupport {
    Unknown,
    Yes,
    /// Refused at this time; asked again after [`WAIT_RECHECK`] seconds or
    /// once the relay was unreachable (it may have been replaced).
    No {
        since: f64,
    },
}

/// Seconds before a relay that refused `wait` is asked again.
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
    /// A relay that refuses `wait` (Python's: HTTP 400 "unexpected keyword
    /// argument 'wait'", or 'peek' from a 0.0.1 relay, which spends no
    /// nonce and deletes nothing) is
    /// remembered: `Unsupported` is answered without asking for the next
    /// ten minutes, or until the relay was unreachable.
    pub async fn wait_for_mail(&self, seconds: f64) -> Result<MailWait, ClientError> {
        let Some(wait) = Wait::new(seconds) else {
            return Ok(MailWait::Nothing);
        };
        let now = self.clock.now();
        let support = *self.wait_support.lock().unwrap_or_else(|e| e.into_inner());
        if let WaitSupport::No { since } = support {
            if now >= since && now - since < WAIT_RECHECK {
                return Ok(MailWait::Unsupported);
            }
        }
        let set = |s: WaitSupport| *self.wait_support.lock().unwrap_or_else(|e| e.into_inner()) = s;
        let answer: Result<Vec<MailItem>, ClientError> = self
            .call(Args::ReadMessages {
                peer: None,
                peek: true,
                wait: Some(wait),
            })
            .await;
        match answer {
            Ok(mail) => {
                set(WaitSupport::Yes);
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
                set(WaitSupport::No { since: now });
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
                    set(WaitSupport::Unknown);
                }
                Err(e)
            }
        }
    }
}
