//! `retalk show --web`: saved conversations as a local web page.
//!
//! A messenger-style page (a list of conversations, peers and groups, and
//! the thread of the one selected) over plain HTTP on 127.0.0.1, reading
//! only what a [`History`] gives it: it never contacts the relay. New
//! messages appear as any other process saves them (`send --save`,
//! `receive --save`, `show --follow`): the page asks again every second.
//!
//! Message text is decrypted for display, so the server
//! - binds 127.0.0.1 only (Python 0.3.0 `webview.py@HEAD:144-196` does too);
//! - requires a random per-run token on every request, as the
//!   `X-Retalk-Token` header or the `?t=` query (0.3.0's names), compared in
//!   constant time; a missing, wrong or non-ASCII token is a 403, never a
//!   crash (CLIENT-030 defect 34: 0.3.0's `compare_digest` raised on one);
//! - sends a strict Content-Security-Policy: no inline script or style at
//!   all (0.3.0 allowed both), the script and the style are routes of their
//!   own (`/app.js`, `/app.css`), and nothing may be loaded from elsewhere;
//! - and the page writes every name and text with `textContent`, never as
//!   HTML.
//!
//! The JSON routes keep 0.3.0's shapes: `/api/conversations` →
//! `{"me","conversations":[{"fingerprint","name","count","last_ts"}]}`
//! (plus `"kind": "peer" | "group"`), and
//! `/api/messages?peer=ID&kind=KIND&after=ROWID` →
//! `{"messages":[{"rowid","direction","name","text","ts"}]}`, where `peer`
//! is a peer's user id or a group's id and `kind` (`peer`, the default as
//! 0.3.0 knows no other, or `group`) says which: a conversation is its kind
//! and id together, since a group id and a user id are both 32 hex
//! characters and a stranger may name a group with a contact's id. Groups
//! are conversations of their own under their names (0.3.0 listed a
//! group's sends as an unnamed peer: CLIENT-030 defect 34).

use std::future::{Future, IntoFuture as _};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use axum::extract::{RawQuery, Request, State};
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine as _;
use rand::RngCore as _;
use serde::Serialize;
use subtle::ConstantTimeEq as _;
use tokio::net::TcpListener;

/// The port `show --web` listens on when none is given (0.3.0's default,
/// `cli.py` `--port`).
pub const DEFAULT_PORT: u16 = 8765;

/// How long requests under way may take to finish once the web view is
/// told to stop; connections still open then are dropped.
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_millis(1500);

/// The header a request may carry its token in (0.3.0's name).
pub const TOKEN_HEADER: &str = "x-retalk-token";

/// Every response's Content-Security-Policy: the page's own script and
/// style only, fetches to itself only, nothing else (no inline code, no
/// images, no frames, no forms, no `<base>`).
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
connect-src 'self'; img-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

const PAGE: &str = include_str!("../assets/index.html");
/// The page `/` answers without the right token (403): the token changes
/// on every run, so a bookmarked or earlier link lands here. Static text
/// (no script, no input echoed).
const STALE_PAGE: &str = include_str!("../assets/stale.html");
const SCRIPT: &str = include_str!("../assets/app.js");
const STYLE: &str = include_str!("../assets/app.css");

/// One conversation in the list: a peer, or a group.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Conversation {
    /// The peer's user id, or the group's id: what `/api/messages?peer=`
    /// takes (with `kind`).
    #[serde(rename = "fingerprint")]
    pub id: String,
    /// What the list shows: a saved name, a group's name, else a short id.
    pub name: String,
    /// Peer or group.
    pub kind: Kind,
    /// Saved messages in it.
    pub count: u64,
    /// When the newest was saved, in Unix seconds (a float, as 0.3.0's
    /// `time.time()`); `None` when nothing is saved yet (JSON `null`).
    pub last_ts: Option<f64>,
}

/// Whether a conversation is with one peer or a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Peer,
    Group,
}

/// Which way a saved message went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Received.
    In,
    /// Sent by us.
    Out,
}

/// One saved message of a thread.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Message {
    /// Its place in the local store: the page asks for rows after the
    /// last one it shows.
    pub rowid: i64,
    pub direction: Direction,
    /// Who wrote it, as the page shows it (us for `Out`).
    pub name: String,
    /// The text, exactly as written (the page shows it as text).
    pub text: String,
    /// When it was saved, in Unix seconds (a float, as 0.3.0's).
    pub ts: f64,
}

/// A local history could not be read (shown as a 500 with its text).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Unreadable(pub String);

/// Where the page's data comes from: the saved history of one identity.
/// Called on a blocking thread per request, so it may read a file.
pub trait History: Send + Sync + 'static {
    /// Every conversation (peers and groups), newest first.
    fn conversations(&self) -> Result<Vec<Conversation>, Unreadable>;
    /// The messages of the `kind` conversation `id` (a peer's or a group's
    /// id) with a rowid above `after`, oldest first; an unknown one has
    /// none. A peer's conversation never holds a group's rows, even a group
    /// whose id is that peer's.
    fn messages(&self, kind: Kind, id: &str, after: i64) -> Result<Vec<Message>, Unreadable>;
}

/// What to do when the port is taken (another program, or another
/// `retalk show --web`, listens there).
fn in_use_hint(source: &std::io::Error) -> &'static str {
    if source.kind() == std::io::ErrorKind::AddrInUse {
        " (another program, or another retalk show --web, uses it): pick another with --port N, or --port 0 for a free one"
    } else {
        ""
    }
}

/// The web view could not start.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error("cannot listen on 127.0.0.1:{port}: {source}{}", in_use_hint(source))]
    Bind {
        port: u16,
        #[source]
        source: std::io::Error,
    },
    #[error("the web view stopped: {0}")]
    Serve(#[source] std::io::Error),
}

struct App {
    me: String,
    token: String,
    history: Arc<dyn History>,
}

/// A bound, not yet serving, web view.
pub struct WebView {
    listener: TcpListener,
    addr: SocketAddr,
    app: Arc<App>,
}

impl WebView {
    /// Binds 127.0.0.1:`port` (0: a free port) for identity `me` (the
    /// name the page's title shows) and draws a fresh token: 16 random
    /// bytes, URL-safe base64 (as 0.3.0's `secrets.token_urlsafe(16)`).
    pub async fn bind(
        port: u16,
        me: impl Into<String>,
        history: Arc<dyn History>,
    ) -> Result<WebView, WebError> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port))
            .await
            .map_err(|source| WebError::Bind { port, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| WebError::Bind { port, source })?;
        let mut bytes = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        Ok(WebView {
            listener,
            addr,
            app: Arc::new(App {
                me: me.into(),
                token,
                history,
            }),
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The token every request must carry.
    pub fn token(&self) -> &str {
        &self.app.token
    }

    /// The page's address, token included: what to open.
    pub fn url(&self) -> String {
        format!("http://{}/?t={}", self.addr, self.app.token)
    }

    /// Serves until `stop` resolves, then lets requests under way finish
    /// for at most [`SHUTDOWN_GRACE`] and drops the connections left (a
    /// local process holding a half-sent request must not keep the
    /// command running).
    pub async fn serve(
        self,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), WebError> {
        let (stopping, stopped) = tokio::sync::oneshot::channel::<()>();
        let server =
            axum::serve(self.listener, router(self.app)).with_graceful_shutdown(async move {
                stop.await;
                let _ = stopping.send(());
            });
        let grace = async move {
            match stopped.await {
                Ok(()) => tokio::time::sleep(SHUTDOWN_GRACE).await,
                // The server ended first (an error): its answer wins.
                Err(_) => std::future::pending().await,
            }
        };
        tokio::select! {
            served = server.into_future() => served.map_err(WebError::Serve),
            () = grace => Ok(()),
        }
    }
}

fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/app.js", get(script))
        .route("/app.css", get(style))
        .route("/api/conversations", get(conversations))
        .route("/api/messages", get(messages))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "not found") })
        .layer(middleware::from_fn_with_state(app.clone(), guard))
        .with_state(app)
}

/// Refuses a request without the token (403) and gives every response
/// the security headers, the refusal included.
async fn guard(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    let mut response = if has_token(&app.token, request.headers(), request.uri().query()) {
        next.run(request).await
    } else if request.uri().path() == "/" {
        // A person opening a saved or old link: say why, in a page.
        (
            StatusCode::FORBIDDEN,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            STALE_PAGE,
        )
            .into_response()
    } else {
        error(StatusCode::FORBIDDEN, "missing or bad token")
    };
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::CACHE_CONTROL, "no-store"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// Whether the request carries `token`, in the header (first) or `?t=`.
/// Compared as bytes in constant time, so any bytes at all (non-ASCII,
/// not UTF-8, badly %-encoded: decoded lossily) are simply a wrong token.
/// The first `t` counts when several are given.
fn has_token(token: &str, headers: &HeaderMap, query: Option<&str>) -> bool {
    let given: Vec<u8> = match headers.get(TOKEN_HEADER) {
        Some(value) => value.as_bytes().to_vec(),
        None => query
            .map(|q| {
                form_urlencoded::parse(q.as_bytes())
                    .find(|(k, _)| k == "t")
                    .map(|(_, v)| v.into_owned().into_bytes())
                    .unwrap_or_default()
            })
            .unwrap_or_default(),
    };
    bool::from(given.as_slice().ct_eq(token.as_bytes()))
}

fn error(status: StatusCode, text: &str) -> Response {
    (status, Json(serde_json::json!({ "error": text }))).into_response()
}

/// The page, its script and style loaded with the token in their URLs
/// (the token is URL-safe base64, so it needs no escaping in HTML).
async fn page(State(app): State<Arc<App>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        PAGE.replace("{{TOKEN}}", &app.token),
    )
        .into_response()
}

async fn script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        SCRIPT,
    )
        .into_response()
}

async fn style() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE).into_response()
}

/// Runs a [`History`] read off the async threads; its failure is a 500
/// with its text (as 0.3.0).
async fn read<T: Send + 'static>(
    app: &Arc<App>,
    f: impl FnOnce(&dyn History) -> Result<T, Unreadable> + Send + 'static,
) -> Result<T, Response> {
    let history = app.history.clone();
    match tokio::task::spawn_blocking(move || f(history.as_ref())).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(error(StatusCode::INTERNAL_SERVER_ERROR, &e.0)),
        Err(e) => Err(error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string())),
    }
}

async fn conversations(State(app): State<Arc<App>>) -> Response {
    match read(&app, |h| h.conversations()).await {
        Ok(conversations) => Json(serde_json::json!({
            "me": app.me,
            "conversations": conversations,
        }))
        .into_response(),
        Err(r) => r,
    }
}

/// `/api/messages`' query: `peer`, `kind`, `after`, each its first value
/// when given several (as 0.3.0's `parse_qs(...)[0]`), so a repeated one
/// is no plain-text rejection but read as the first.
struct Thread {
    peer: String,
    kind: Option<String>,
    after: Option<String>,
}

impl Thread {
    fn parse(query: Option<&str>) -> Thread {
        let (mut peer, mut kind, mut after) = (None, None, None);
        for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            let slot = match k.as_ref() {
                "peer" => &mut peer,
                "kind" => &mut kind,
                "after" => &mut after,
                _ => continue,
            };
            slot.get_or_insert_with(|| v.into_owned());
        }
        Thread {
            peer: peer.unwrap_or_default(),
            kind,
            after,
        }
    }
}

async fn messages(State(app): State<Arc<App>>, RawQuery(query): RawQuery) -> Response {
    let q = Thread::parse(query.as_deref());
    let after = match q.after.as_deref().map(str::parse::<i64>) {
        None => 0,
        Some(Ok(n)) => n,
        Some(Err(_)) => return error(StatusCode::BAD_REQUEST, "after must be an integer"),
    };
    let kind = match q.kind.as_deref() {
        None | Some("peer") => Kind::Peer,
        Some("group") => Kind::Group,
        Some(_) => return error(StatusCode::BAD_REQUEST, "kind must be peer or group"),
    };
    match read(&app, move |h| h.messages(kind, &q.peer, after)).await {
        Ok(messages) => Json(serde_json::json!({ "messages": messages })).into_response(),
        Err(r) => r,
    }
}

#[cfg(test)]
mod tests;
