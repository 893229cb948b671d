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

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

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
use retalk_proto::relay::{Relay, RelayStore};
use retalk_proto::UserId;
use serde_json::{json, Value};

use crate::admin;
use crate::clock::unix_now;
use crate::errors::HttpError;
use crate::limit::IpRateLimiter;
use crate::store::SharedStore;

/// The relay and its HTTP policy, shared by every connection.
pub struct App {
    pub(crate) relay: Relay<SharedStore>,
    pub(crate) max_body: usize,
    pub(crate) body_timeout: Duration,
    pub(crate) require_api_key: bool,
    pub(crate) admin_password: Option<String>,
    pub(crate) max_group_size: u64,
    pub(crate) ip_limiter: IpRateLimiter,
}

impl App {
    pub fn relay(&self) -> &Relay<SharedStore> {
        &self.relay
    }

    pub(crate) fn store(&self) -> &SharedStore {
        self.relay.store()
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
pub async fn handle(app: Arc<App>, peer: Option<SocketAddr>, req: Request) -> Response {
    if let Some(peer) = peer {
        if !app.ip_limiter.allow(peer.ip(), unix_now()) {
            return refuse(HttpError::RateLimited);
        }
    }
    let (parts, body) = req.into_parts();
    let last = last_segment(parts.uri.path());
    match (&parts.method, last) {
        (&Method::POST, "admin") => admin::handle(app, &parts.method, &parts.headers, body).await,
        (&Method::POST, _) => tool_call(app, &parts.headers, body).await,
        (&Method::GET, "info") => ok_json(&json!({"max_group_size": app.max_group_size})),
        (&Method::GET, "healthz") => healthz(app).await,
        (&Method::GET, "admin") => admin::handle(app, &parts.method, &parts.headers, body).await,
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

async fn tool_call(app: Arc<App>, headers: &HeaderMap, body: Body) -> Response {
    if let Err(e) = check_declared_length(&app, headers) {
        return refuse(e);
    }
    if app.require_api_key {
        if let Err(e) = check_api_key(&app, headers).await {
            return refuse(e);
        }
    }
    let bytes = match read_body(&app, body).await {
        Ok(b) => b,
        Err(e) => return refuse(e),
    };
    let worker = app.clone();
    match blocking(move || worker.relay.handle(&bytes, unix_now())).await {
        Ok(answer) => {
            let status =
                StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut r = json_response(status, &answer.body);
            if status == StatusCode::TOO_MANY_REQUESTS {
                r.headers_mut()
                    .insert(RETRY_AFTER, HeaderValue::from_static("60"));
            }
            r
        }
        Err(e) => refuse(e),
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
        Err(e) => {
            tracing::error!("api key lookup failed: {e}");
            Err(HttpError::Storage)
        }
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
        Ok(Err(e)) => {
            tracing::error!("health probe failed: {e}");
            refuse(HttpError::Storage)
        }
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

#[cfg(test)]
mod tests {
    use super::*;

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
