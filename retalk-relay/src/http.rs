//! The HTTP surface (PROTOCOL section 3, plus the 0.3.0 operator pages):
//!
//! - `POST` on any path is a tool call (a path ending in `/admin` is the
//!   admin API);
//! - `GET …/info` is the public policy document, `GET …/healthz` a probe,
//!   `GET …/admin` the operator's page; any other `GET` is 404.
//!
//! Order of checks on a tool call, cheapest first: the per-address rate,
//! the declared body length, the API key, the body read against the cap and
//! a deadline, then the protocol (parse, verify, per-id rate, nonce, tool)
//! on a blocking thread, since verification is CPU work and the store is
//! synchronous.
//!
//! Every refusal is `{"error": text}`, including those hyper makes before a
//! handler runs (an unparseable request head): [`JsonParseErrors`] rewrites
//! them on the way out.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::{
    HeaderMap, HeaderValue, AUTHORIZATION, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER,
    WWW_AUTHENTICATE,
};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use axum::Router;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use retalk_proto::ids::sha256_hex;
use retalk_proto::relay::{Outcome, ParkedRead, Relay, RelayStore, Response as RelayResponse};
use retalk_proto::UserId;
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;

use crate::admin;
use crate::clock::unix_now;
use crate::drain::Lingering;
use crate::errors::HttpError;
use crate::limit::{FailureLimiter, IpRateLimiter};
use crate::metrics::{tool_label, Metrics};
use crate::proxy::TrustedProxies;
use crate::store::SharedStore;
use crate::waiters::Waiters;

/// The relay and its HTTP policy, shared by every connection.
pub struct App {
    pub(crate) relay: Relay<SharedStore>,
    pub(crate) max_body: usize,
    pub(crate) body_timeout: Duration,
    pub(crate) require_api_key: bool,
    pub(crate) admin_password: Option<String>,
    pub(crate) max_group_size: u64,
    pub(crate) ip_limiter: IpRateLimiter,
    /// Reads held open for mail (`wait`).
    pub(crate) waiters: Arc<Waiters>,
    /// Becomes true when the relay shuts down: held reads answer `[]`.
    pub(crate) stopping: watch::Receiver<bool>,
    /// What `/metrics` shows.
    pub(crate) metrics: Arc<Metrics>,
    /// Whose forwarding headers name the real client.
    pub(crate) proxies: TrustedProxies,
    /// Wrong `/admin` passwords per client address.
    pub(crate) admin_failures: FailureLimiter,
}

impl App {
    pub fn relay(&self) -> &Relay<SharedStore> {
        &self.relay
    }

    pub(crate) fn store(&self) -> &SharedStore {
        self.relay.store()
    }

    /// The parked long-polls: what wakes them from outside this process
    /// goes through [`Waiters::wake`].
    pub fn waiters(&self) -> &Arc<Waiters> {
        &self.waiters
    }
}

/// An axum [`Router`] serving the relay, for embedding in another axum
/// app. (It has the relay's HTTP semantics; the connection limits and
/// timeouts of [`RelayServer`](crate::RelayServer) are the embedder's to
/// set. The per-address limit applies when the app is served with
/// `into_make_service_with_connect_info::<SocketAddr>()`.)
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .fallback(|State(app): State<Arc<App>>, req: Request| async move {
            let peer = req
                .extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0);
            handle(app, peer, req).await
        })
        .with_state(app)
}

/// Answers one HTTP request from `peer`.
///
/// The body is wrapped first, so that every refusal given before it is
/// read reaches a client that writes it whole before reading (see
/// [`crate::drain`]).
pub async fn handle(app: Arc<App>, peer: Option<SocketAddr>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = Body::new(Lingering::new(body, app.max_body, app.body_timeout));
    // Behind a trusted proxy, the client it names; else the peer itself.
    let client = peer.map(|p| app.proxies.client(p.ip(), &parts.headers));
    if let Some(ip) = client {
        if !app.ip_limiter.allow(ip, unix_now()) {
            return refuse(HttpError::RateLimited);
        }
    }
    let last = last_segment(parts.uri.path());
    match (&parts.method, last) {
        (&Method::POST, "admin") => {
            admin::handle(app, client, &parts.method, &parts.headers, body).await
        }
        (&Method::POST, _) => {
            let started = Instant::now();
            let (tool, answer) = tool_call(app.clone(), client, &parts.headers, body).await;
            app.metrics
                .request(tool, answer.status().as_u16(), started.elapsed());
            answer
        }
        (&Method::GET, "info") => ok_json(&json!({
            "max_group_size": app.max_group_size,
            "features": features(&app),
            "max_wait": app.relay.config().max_wait,
        })),
        (&Method::GET, "healthz") => healthz(app).await,
        (&Method::GET, "metrics") => metrics(&app),
        (&Method::GET, "admin") => {
            admin::handle(app, client, &parts.method, &parts.headers, body).await
        }
        (&Method::GET, _) => refuse(HttpError::NotFound),
        _ => {
            let mut r = refuse(HttpError::MethodNotAllowed);
            r.headers_mut()
                .insert("allow", HeaderValue::from_static("GET, POST"));
            r
        }
    }
}

/// The last path segment, ignoring trailing slashes (`/x/admin/` ->
/// `admin`), so the relay works behind a path prefix, as Python's does.
fn last_segment(path: &str) -> &str {
    let p = path.trim_end_matches('/');
    p.rsplit('/').next().unwrap_or(p)
}

/// What this relay offers beyond the Python relay's protocol, for `/info`.
fn features(app: &App) -> Vec<&'static str> {
    let mut f = Vec::new();
    if app.relay.config().max_wait > 0.0 {
        f.push("wait");
    }
    f
}

/// Answers a tool call; returns the tool it named (a bounded label, for
/// `/metrics`) with the answer.
async fn tool_call(
    app: Arc<App>,
    client: Option<IpAddr>,
    headers: &HeaderMap,
    body: Body,
) -> (&'static str, Response) {
    const UNREAD: &str = "unknown";
    if let Err(e) = check_declared_length(&app, headers) {
        return (UNREAD, refuse(e));
    }
    if app.require_api_key {
        if let Err(e) = check_api_key(&app, headers).await {
            return (UNREAD, refuse(e));
        }
    }
    let bytes = match read_body(&app, body).await {
        Ok(b) => b,
        Err(e) => return (UNREAD, refuse(e)),
    };
    let tool = tool_label(&bytes);
    let worker = app.clone();
    let answer = match blocking(move || worker.relay.serve(&bytes, unix_now())).await {
        Ok(Outcome::Answer { response, mail_for }) => {
            if let Some(user) = mail_for {
                app.waiters.wake(&user);
            }
            relay_answer(response)
        }
        Ok(Outcome::Park(read)) => long_poll(app, client, read).await,
        Err(e) => refuse(e),
    };
    (tool, answer)
}

/// The node's metrics in Prometheus text format.
fn metrics(app: &App) -> Response {
    let mut r = Response::new(Body::from(app.metrics.render(&app.waiters)));
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

fn relay_answer(answer: RelayResponse) -> Response {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut r = json_response(status, &answer.body);
    if status == StatusCode::TOO_MANY_REQUESTS {
        r.headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from_static("60"));
    }
    r
}

/// Holds a `read_messages` with `wait` until mail arrives for its caller,
/// the wait runs out or the relay shuts down (then `[]`). Registered
/// before each check, so mail stored meanwhile is never missed; parked, it
/// is a future on a channel and costs no CPU.
async fn long_poll(app: Arc<App>, client: Option<IpAddr>, read: ParkedRead) -> Response {
    let mut ticket = match app.waiters.park(&read.caller, client) {
        Ok(t) => t,
        Err(e) => return refuse(e.into()),
    };
    let deadline = tokio::time::Instant::now()
        + Duration::try_from_secs_f64(read.wait.seconds()).unwrap_or_default();
    let mut stopping = app.stopping.clone();
    loop {
        let (worker, parked) = (app.clone(), read.clone());
        match blocking(move || worker.relay.poll_parked(&parked)).await {
            Ok(Ok(Some(mail))) => return relay_answer(mail),
            Ok(Ok(None)) => {}
            Ok(Err(e)) => return relay_answer(e.into()),
            Err(e) => return refuse(e),
        }
        tokio::select! {
            () = ticket.woken() => {}
            () = tokio::time::sleep_until(deadline) => return relay_answer(read.nothing()),
            _ = stopping.wait_for(|s| *s) => return relay_answer(read.nothing()),
        }
    }
}

/// A declared length over the cap is refused without reading anything.
pub(crate) fn check_declared_length(app: &App, headers: &HeaderMap) -> Result<(), HttpError> {
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    match declared {
        Some(len) if len > app.max_body as u64 => Err(HttpError::TooLarge {
            len,
            max: app.max_body,
        }),
        _ => Ok(()),
    }
}

/// Reads the body, counting the bytes actually received against the cap,
/// within the deadline.
pub(crate) async fn read_body(app: &App, body: Body) -> Result<Bytes, HttpError> {
    let limited = Limited::new(body, app.max_body);
    match tokio::time::timeout(app.body_timeout, limited.collect()).await {
        Err(_) => Err(HttpError::BodyTimeout),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => {
            Err(HttpError::TooLargeStreamed { max: app.max_body })
        }
        Ok(Err(_)) => Err(HttpError::BodyRead),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
    }
}

/// `Authorization: Bearer <key>`, else `X-Retalk-Key` (as Python reads them).
fn presented_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(key) = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    {
        return Some(key.trim());
    }
    headers.get("x-retalk-key").and_then(|v| v.to_str().ok())
}

async fn check_api_key(app: &Arc<App>, headers: &HeaderMap) -> Result<(), HttpError> {
    let Some(key) = presented_key(headers).filter(|k| !k.is_empty()) else {
        return Err(HttpError::ApiKeyRequired);
    };
    let hash = sha256_hex(key);
    let worker = app.clone();
    match blocking(move || worker.store().api_key_valid(&hash)).await? {
        Ok(true) => Ok(()),
        Ok(false) => Err(HttpError::ApiKeyRequired),
        // Logged once per burst by the watched store.
        Err(_) => Err(HttpError::Storage),
    }
}

/// Liveness plus a cheap read of the store.
async fn healthz(app: Arc<App>) -> Response {
    let Ok(probe) = UserId::parse("00000000000000000000000000000000") else {
        return ok_json(&json!({"ok": true}));
    };
    let worker = app.clone();
    match blocking(move || worker.store().count_keys(&probe)).await {
        Ok(Ok(_)) => ok_json(&json!({"ok": true})),
        Ok(Err(_)) => refuse(HttpError::Storage),
        Err(e) => refuse(e),
    }
}

/// Runs synchronous work (store calls, signature checks) off the async
/// threads.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, HttpError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        tracing::error!("request worker failed: {e}");
        HttpError::Internal
    })
}

pub(crate) fn json_response(status: StatusCode, body: &Value) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    let mut r = Response::new(Body::from(bytes));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

pub(crate) fn ok_json(body: &Value) -> Response {
    json_response(StatusCode::OK, body)
}

/// A refusal as `{"error": text}` with its status and headers.
pub(crate) fn refuse(e: HttpError) -> Response {
    let mut r = json_response(e.status(), &json!({"error": e.to_string()}));
    let h = r.headers_mut();
    if e.closes() {
        h.insert(CONNECTION, HeaderValue::from_static("close"));
    }
    match e {
        HttpError::AdminAuthRequired => {
            h.insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"retalk admin\""),
            );
        }
        HttpError::RateLimited => {
            h.insert(RETRY_AFTER, HeaderValue::from_static("60"));
        }
        _ => {}
    }
    r
}

/// The refusal that hyper's own answer in `buf` stands for, if it is one.
///
/// hyper answers a request it cannot parse (a garbage, negative or
/// conflicting Content-Length, a bad request line, too many or too long
/// headers) by itself, before any handler runs: a bare
/// `HTTP/1.1 400|414|431` head with `content-length: 0`, written alone,
/// after which it closes. No answer of ours is ever bodiless.
fn parser_refusal(buf: &[u8]) -> Option<HttpError> {
    if buf.len() > 512 || !buf.starts_with(b"HTTP/1.1 4") || !buf.ends_with(b"\r\n\r\n") {
        return None;
    }
    let error = match &buf[9..13] {
        b"400 " => HttpError::MalformedRequest,
        b"414 " => HttpError::UriTooLong,
        b"431 " => HttpError::HeadersTooLarge,
        _ => return None,
    };
    let has = |line: &[u8]| {
        buf.windows(line.len())
            .any(|w| w.eq_ignore_ascii_case(line))
    };
    (has(b"\r\ncontent-length: 0\r\n") && !has(b"\r\ncontent-type:")).then_some(error)
}

/// The whole answer for a refusal hyper made, as `{"error": text}`.
fn parser_refusal_answer(e: &HttpError) -> Vec<u8> {
    let body = json!({"error": e.to_string()}).to_string();
    let status = e.status();
    format!(
        "HTTP/1.1 {} {}\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        status.as_str(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    )
    .into_bytes()
}

/// A connection's IO that turns hyper's bare answers to unparseable
/// requests into the relay's JSON ones: the spec wants `{"error": ...}` on
/// every refusal, and hyper has no hook for these. Everything else passes
/// through untouched.
pub(crate) struct JsonParseErrors<T> {
    inner: T,
    /// Our answer being written in place of hyper's: the bytes, how many
    /// are written, and how many of hyper's bytes they stand for.
    replacing: Option<(Vec<u8>, usize, usize)>,
}

impl<T> JsonParseErrors<T> {
    pub fn new(inner: T) -> Self {
        Self {
            inner,
            replacing: None,
        }
    }
}

impl<T: AsyncWrite + Unpin> JsonParseErrors<T> {
    /// Writes our answer in place of hyper's `len` bytes; done when it is
    /// all written.
    fn replace(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        while let Some((bytes, written, stands_for)) = &mut self.replacing {
            if *written == bytes.len() {
                let n = *stands_for;
                self.replacing = None;
                return Poll::Ready(Ok(n));
            }
            match Pin::new(&mut self.inner).poll_write(cx, &bytes[*written..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => *written += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(0))
    }

    fn start_replacing(&mut self, buf: &[u8]) -> bool {
        if self.replacing.is_none() {
            if let Some(e) = parser_refusal(buf) {
                self.replacing = Some((parser_refusal_answer(&e), 0, buf.len()));
            }
        }
        self.replacing.is_some()
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for JsonParseErrors<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for JsonParseErrors<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.start_replacing(buf) {
            return self.replace(cx);
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        // hyper's bare head is always a buffer of its own.
        if let Some(first) = bufs.iter().find(|b| !b.is_empty()) {
            if self.start_replacing(first) {
                return self.replace(cx);
            }
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hypers_bare_refusals_are_recognised_and_nothing_else() {
        let date = "date: Thu, 26 Nov 2026 00:17:54 GMT\r\n";
        let bare = |status: &str| {
            format!("HTTP/1.1 {status}\r\nconnection: close\r\ncontent-length: 0\r\n{date}\r\n")
        };
        assert_eq!(
            parser_refusal(bare("400 Bad Request").as_bytes()),
            Some(HttpError::MalformedRequest)
        );
        assert_eq!(
            parser_refusal(bare("414 URI Too Long").as_bytes()),
            Some(HttpError::UriTooLong)
        );
        assert_eq!(
            parser_refusal(bare("431 Request Header Fields Too Large").as_bytes()),
            Some(HttpError::HeadersTooLarge)
        );
        for other in [
            bare("404 Not Found"),
            bare("408 Request Timeout"),
            "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 0\r\n\r\n"
                .to_owned(),
            format!("HTTP/1.1 400 Bad Request\r\ncontent-length: 12\r\n{date}\r\n"),
            format!("{}{{}}", bare("400 Bad Request")),
            bare("400 Bad Request").replace("\r\n\r\n", "\r\n"),
        ] {
            assert_eq!(parser_refusal(other.as_bytes()), None, "{other}");
        }
        let answer =
            String::from_utf8(parser_refusal_answer(&HttpError::MalformedRequest)).unwrap();
        assert_eq!(
            answer,
            "HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-type: application/json\r\n\
             content-length: 47\r\n\r\n{\"error\":\"bad request: malformed HTTP request\"}"
        );
    }

    #[tokio::test]
    async fn the_wrapper_writes_json_in_place_of_a_bare_refusal() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (a, mut b) = tokio::io::duplex(16);
        let mut io = JsonParseErrors::new(a);
        let bare = b"HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\ncontent-length: 0\r\n\r\n";
        let reader = tokio::spawn(async move {
            let mut out = Vec::new();
            b.read_to_end(&mut out).await.unwrap();
            out
        });
        // A small pipe: the answer goes out over many partial writes.
        assert_eq!(io.write(bare).await.unwrap(), bare.len());
        io.write_all(b"HTTP/1.1 200 OK\r\n").await.unwrap();
        io.shutdown().await.unwrap();
        drop(io);
        let out = String::from_utf8(reader.await.unwrap()).unwrap();
        assert_eq!(
            out,
            "HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\n\
             content-type: application/json\r\ncontent-length: 37\r\n\r\n\
             {\"error\":\"request headers too large\"}HTTP/1.1 200 OK\r\n"
        );
    }

    #[test]
    fn path_suffixes() {
        assert_eq!(last_segment("/info"), "info");
        assert_eq!(last_segment("/relay/v1/info/"), "info");
        assert_eq!(last_segment("/admin//"), "admin");
        assert_eq!(last_segment("/"), "");
        assert_eq!(last_segment(""), "");
        assert_eq!(last_segment("/information"), "information");
    }

    #[test]
    fn keys_are_read_like_python() {
        let mut h = HeaderMap::new();
        assert_eq!(presented_key(&h), None);
        h.insert("x-retalk-key", HeaderValue::from_static("xk"));
        assert_eq!(presented_key(&h), Some("xk"));
        h.insert(AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(presented_key(&h), Some("xk"));
        h.insert(AUTHORIZATION, HeaderValue::from_static("Bearer  bk "));
        assert_eq!(presented_key(&h), Some("bk"));
    }
}
