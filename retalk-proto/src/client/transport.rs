//! How a client reaches a relay: one call, a signed request in, the tool's
//! JSON result or an error out. The HTTP transport lives in its own crate;
//! [`LocalTransport`] hands requests to an in-process [`Relay`] through the
//! same bytes the wire would carry.

use std::future::Future;
use std::sync::Arc;

use serde_json::Value;

use crate::auth::Dialect;
use crate::clock::Clock;
use crate::relay::{Relay, RelayStore};
use crate::wire::SignedRequest;

/// Why a call did not produce a result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// The relay answered with a refusal (its `error` text).
    #[error("{error}")]
    Refused { status: u16, error: String },
    /// The request certainly did not reach the relay (no connection).
    #[error("relay unreachable: {0}")]
    NotSent(String),
    /// No answer, and the request may have reached the relay: reset, timed
    /// out, answer lost.
    #[error("relay unreachable: {0}")]
    Unreachable(String),
    /// An answer that is not what a relay sends.
    #[error("bad answer from the relay: {0}")]
    BadResponse(String),
}

impl TransportError {
    /// Whether the same call may succeed later unchanged (the relay was
    /// down, overloaded or rate-limiting), as opposed to a refusal.
    pub fn is_transient(&self) -> bool {
        match self {
            TransportError::Refused { status, .. } => *status == 429 || *status >= 500,
            TransportError::NotSent(_)
            | TransportError::Unreachable(_)
            | TransportError::BadResponse(_) => true,
        }
    }
}

impl TransportError {
    /// Whether the relay certainly did not store what the request carried:
    /// it never left, or the relay answered with a refusal (4xx). A 5xx or
    /// a lost answer may follow a write, so those stay uncertain.
    pub fn certainly_not_stored(&self) -> bool {
        match self {
            TransportError::NotSent(_) => true,
            TransportError::Refused { status, .. } => (400..500).contains(status),
            TransportError::Unreachable(_) | TransportError::BadResponse(_) => false,
        }
    }
}

/// A way to reach one relay.
pub trait Transport: Send + Sync {
    /// The relay URL requests are signed for (its audience).
    fn audience(&self) -> &str;

    /// Sends one signed request; `Ok` holds the tool's JSON result.
    fn call(
        &self,
        request: SignedRequest,
    ) -> impl Future<Output = Result<Value, TransportError>> + Send;
}

impl<T: Transport + ?Sized> Transport for Arc<T> {
    fn audience(&self) -> &str {
        (**self).audience()
    }
    fn call(
        &self,
        request: SignedRequest,
    ) -> impl Future<Output = Result<Value, TransportError>> + Send {
        (**self).call(request)
    }
}

/// A transport to a relay in the same process: serialises the request in
/// one dialect, lets the relay parse and answer it at the clock's time.
pub struct LocalTransport<S, C> {
    relay: Arc<Relay<S>>,
    clock: C,
    audience: String,
    dialect: Dialect,
}

impl<S: RelayStore, C: Clock> LocalTransport<S, C> {
    pub fn new(relay: Arc<Relay<S>>, clock: C, audience: impl Into<String>) -> Self {
        Self {
            relay,
            clock,
            audience: audience.into(),
            dialect: Dialect::V001,
        }
    }

    /// Speak the other dialect.
    pub fn with_dialect(mut self, dialect: Dialect) -> Self {
        self.dialect = dialect;
        self
    }
}

impl<S: RelayStore, C: Clock> Transport for LocalTransport<S, C> {
    fn audience(&self) -> &str {
        &self.audience
    }

    fn call(
        &self,
        request: SignedRequest,
    ) -> impl Future<Output = Result<Value, TransportError>> + Send {
        let response = self
            .relay
            .handle(&request.to_body(self.dialect), self.clock.now());
        // Round-trip the answer through bytes, as a real wire would.
        let result =
            match serde_json::to_vec(&response.body).map(|b| serde_json::from_slice::<Value>(&b)) {
                Ok(Ok(body)) if response.status == 200 => Ok(body),
                Ok(Ok(body)) => Err(TransportError::Refused {
                    status: response.status,
                    error: body
                        .get("error")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_owned(),
                }),
                _ => Err(TransportError::BadResponse("unserialisable answer".into())),
            };
        std::future::ready(result)
    }
}
