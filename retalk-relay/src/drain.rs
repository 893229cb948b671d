//! Lingering close for early refusals (issue #10, item 7).
//!
//! A refusal given before the request body is read (413 by Content-Length
//! or by bytes read, 429, 401, a storage error on the API key) must reach
//! a client that writes its whole body before it reads its answer, as
//! Python's `urllib` (so both Python retalk clients) does. Closing the
//! socket with unread bytes in it makes the kernel send a reset, which
//! discards the answer already sent: the client sees `EPIPE` or
//! `ECONNRESET` instead of the refusal. So, as many servers do (Apache's
//! and nginx's "lingering close"), the rest of an unread body is read and
//! discarded after the answer, and the connection closes cleanly once it
//! ends.
//!
//! Bounded, so that refusing stays cheap: at most [`DRAIN_FACTOR`] times
//! the body cap is discarded (nothing is kept in memory), only while bytes
//! keep coming (a pause of [`LINGER_IDLE`] ends it, as Apache's 2 s and
//! nginx's 5 s `lingering_timeout` do; a client that sends its body does
//! not pause, one that sent only headers is let go at once), and only until
//! one body timeout after the request's head arrived, the same deadline a
//! body being read has. A body longer or slower than that is cut off (a
//! reset, as before): an early refusal then costs the relay no more than a
//! body it reads.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use http_body_util::BodyExt;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tokio::time::Instant;

/// How many times the body cap a refused request may still send, to be
/// discarded, before its connection is cut.
pub const DRAIN_FACTOR: usize = 8;

/// The longest pause in a refused body before the rest is given up.
pub const LINGER_IDLE: Duration = Duration::from_secs(1);

/// A request body that, when dropped before its end, discards the rest in
/// a background task within its bounds.
pub(crate) struct Lingering {
    inner: Option<Body>,
    max_bytes: usize,
    deadline: Instant,
}

impl Lingering {
    /// `body` of a request whose head arrived now; `max_body` is the body
    /// cap and `timeout` the body deadline.
    pub(crate) fn new(body: Body, max_body: usize, timeout: Duration) -> Self {
        Self {
            inner: Some(body),
            max_bytes: max_body.saturating_mul(DRAIN_FACTOR),
            deadline: Instant::now() + timeout,
        }
    }
}

impl HttpBody for Lingering {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        match self.inner.as_mut() {
            Some(body) => Pin::new(body).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(HttpBody::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), HttpBody::size_hint)
    }
}

impl Drop for Lingering {
    fn drop(&mut self) {
        let Some(body) = self.inner.take() else {
            return;
        };
        if body.is_end_stream() || Instant::now() >= self.deadline {
            return;
        }
        // Outside a runtime (never, in the server) the body just drops.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(discard(body, self.max_bytes, self.deadline));
        }
    }
}

/// Reads and drops `body` until it ends, `max_bytes` have come, it pauses
/// for [`LINGER_IDLE`], or the deadline; dropping it then lets hyper close
/// the connection.
async fn discard(mut body: Body, max_bytes: usize, deadline: Instant) {
    let mut seen = 0usize;
    let _ = tokio::time::timeout_at(deadline, async {
        while let Ok(Some(Ok(frame))) = tokio::time::timeout(LINGER_IDLE, body.frame()).await {
            seen = seen.saturating_add(frame.data_ref().map_or(0, Bytes::len));
            if seen > max_bytes {
                break;
            }
        }
    })
    .await;
}
