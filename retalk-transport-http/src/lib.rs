//! The client [`Transport`] over HTTP (reqwest): the client side of the wire.
//!
//! Every tool call is one `POST` of the request JSON to the relay URL
//! exactly as the user gave it (that string is also the audience the
//! request is signed for). A `200` carries the tool's result; anything else
//! is a refusal whose `{"error"}` text is surfaced as it is.
//!
//! Dialects: retalk 0.0.1 and 0.3.0 spell the `auth` object differently. A
//! 0.3.0 Python relay answers a 0.0.1 request with the `KeyError` text
//! `'fingerprint'`, and a 0.0.1 relay answers a 0.3.0 request with
//! `'user_id'`. On either, the transport retries that same request once in
//! the other dialect and keeps speaking it to this relay. (The Rust relay
//! understands both.)
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use retalk_transport_http::HttpTransport;
//! let transport = HttpTransport::builder("https://relay.example.com")
//!     .api_key("key-from-the-operator")
//!     .build()?;
//! println!("max group size: {}", transport.max_group_size().await?);
//! # Ok(()) }
//! ```

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, USER_AGENT};
use reqwest::{Client, StatusCode};
use serde_json::Value;

pub use retalk_proto::auth::Dialect;
pub use retalk_proto::client::{Transport, TransportError};
use retalk_proto::wire::SignedRequest;
use retalk_proto::Clock;

/// Default connect and total timeouts, as the Python client's 30 s.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest answer read from a relay (a `read_messages` batch is the
/// largest legitimate one; the Rust relay caps those at 8 MiB).
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;
/// The Python client's User-Agent. Some relays sit behind Cloudflare, whose
/// Browser Integrity Check rejects non-browser agents (error 1010), so the
/// Python client presents a browser's; we do the same by default.
pub const DEFAULT_USER_AGENT: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 \
     (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36";
/// Longest piece of an unexpected answer quoted in an error.
const SNIPPET: usize = 200;

/// Why a transport could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("invalid relay URL {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("invalid API key: it must be printable ASCII")]
    BadApiKey,
    #[error("invalid User-Agent: it must be printable ASCII")]
    BadUserAgent,
    #[error("could not set up the HTTP client: {0}")]
    Client(String),
}

/// The wall clock, for clients talking to real relays. (The protocol core
/// never reads a clock; this is the edge where time comes in.)
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> f64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0)
    }

    fn sleep(&self, seconds: f64) -> impl std::future::Future<Output = ()> + Send {
        tokio::time::sleep(Duration::try_from_secs_f64(seconds).unwrap_or_default())
    }
}

/// Settings for an [`HttpTransport`].
#[derive(Debug, Clone)]
pub struct HttpTransportBuilder {
    url: String,
    connect_timeout: Duration,
    timeout: Duration,
    api_key: Option<String>,
    dialect: Dialect,
    user_agent: String,
    max_response_bytes: usize,
}

impl HttpTransportBuilder {
    /// Timeout for establishing the TCP (and TLS) connection.
    pub fn connect_timeout(mut self, t: Duration) -> Self {
        self.connect_timeout = t;
        self
    }

    /// Timeout for a whole call, from connecting to the last byte read.
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// An API key for relays that require one (sent as
    /// `Authorization: Bearer <key>`). It only admits the caller to the
    /// relay; identity is always the request signature.
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(key.into()).filter(|k| !k.is_empty());
        self
    }

    /// The dialect to start with (default 0.0.1, the one every relay
    /// generation except a pure 0.3.0 one understands).
    pub fn dialect(mut self, dialect: Dialect) -> Self {
        self.dialect = dialect;
        self
    }

    pub fn user_agent(mut self, ua: impl Into<String>) -> Self {
        self.user_agent = ua.into();
        self
    }

    /// Longest answer accepted from the relay.
    pub fn max_response_bytes(mut self, n: usize) -> Self {
        self.max_response_bytes = n;
        self
    }

    pub fn build(self) -> Result<HttpTransport, BuildError> {
        let parsed = reqwest::Url::parse(&self.url).map_err(|e| BuildError::BadUrl {
            url: self.url.clone(),
            reason: e.to_string(),
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(BuildError::BadUrl {
                url: self.url.clone(),
                reason: "the scheme must be http or https".into(),
            });
        }
        let bearer = match &self.api_key {
            Some(key) => Some(
                HeaderValue::from_str(&format!("Bearer {key}"))
                    .map_err(|_| BuildError::BadApiKey)?,
            ),
            None => None,
        };
        let user_agent =
            HeaderValue::from_str(&self.user_agent).map_err(|_| BuildError::BadUserAgent)?;
        let client = Client::builder()
            .connect_timeout(self.connect_timeout)
            .timeout(self.timeout)
            .pool_idle_timeout(Duration::from_secs(20))
            .tcp_nodelay(true)
            .build()
            .map_err(|e| BuildError::Client(error_chain(&e)))?;
        let mut info_url = self.url.trim_end_matches('/').to_owned();
        info_url.push_str("/info");
        Ok(HttpTransport {
            client,
            url: self.url,
            info_url,
            bearer,
            user_agent,
            v030: AtomicBool::new(self.dialect == Dialect::V030),
            max_response_bytes: self.max_response_bytes,
            timeout: self.timeout,
        })
    }
}

/// A [`Transport`] to one relay over HTTP(S).
#[derive(Debug)]
pub struct HttpTransport {
    client: Client,
    /// The relay URL exactly as given: where requests go, and the audience
    /// they are signed for.
    url: String,
    info_url: String,
    bearer: Option<HeaderValue>,
    user_agent: HeaderValue,
    /// The dialect this relay speaks, as last learned.
    v030: AtomicBool,
    max_response_bytes: usize,
    /// The total timeout of a call; a long-poll gets its `wait` on top.
    timeout: Duration,
}

impl HttpTransport {
    /// A transport with the default settings.
    pub fn new(url: impl Into<String>) -> Result<Self, BuildError> {
        Self::builder(url).build()
    }

    pub fn builder(url: impl Into<String>) -> HttpTransportBuilder {
        HttpTransportBuilder {
            url: url.into(),
            connect_timeout: DEFAULT_TIMEOUT,
            timeout: DEFAULT_TIMEOUT,
            api_key: None,
            dialect: Dialect::V001,
            user_agent: DEFAULT_USER_AGENT.into(),
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
        }
    }

    /// The relay URL (and audience).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The dialect requests are currently written in.
    pub fn dialect(&self) -> Dialect {
        if self.v030.load(Ordering::Relaxed) {
            Dialect::V030
        } else {
            Dialect::V001
        }
    }

    fn set_dialect(&self, d: Dialect) {
        self.v030.store(d == Dialect::V030, Ordering::Relaxed);
    }

    /// The relay's advisory group roster cap from `GET <url>/info` (0.3.0
    /// relays; a 0.0.1 relay has no such page and answers an error).
    pub async fn max_group_size(&self) -> Result<u64, TransportError> {
        let info = self.info().await?;
        info.get("max_group_size")
            .and_then(Value::as_u64)
            .ok_or_else(|| TransportError::BadResponse("/info has no max_group_size".into()))
    }

    /// The relay's public `/info` document.
    pub async fn info(&self) -> Result<Value, TransportError> {
        let mut req = self
            .client
            .get(&self.info_url)
            .header(USER_AGENT, self.user_agent.clone());
        if let Some(b) = &self.bearer {
            req = req.header(AUTHORIZATION, b.clone());
        }
        self.answer(req).await
    }

    /// One POST of the request in one dialect.
    async fn post(
        &self,
        request: &SignedRequest,
        dialect: Dialect,
    ) -> Result<Value, TransportError> {
        let mut req = self
            .client
            .post(&self.url)
            .header(CONTENT_TYPE, "application/json")
            .header(USER_AGENT, self.user_agent.clone())
            .body(request.to_body(dialect));
        // A `read_messages` the relay may hold for `wait` seconds.
        if let Some(wait) = request.args.get("wait").and_then(Value::as_f64) {
            let wait = Duration::try_from_secs_f64(wait).unwrap_or_default();
            req = req.timeout(self.timeout.saturating_add(wait));
        }
        if let Some(b) = &self.bearer {
            req = req.header(AUTHORIZATION, b.clone());
        }
        self.answer(req).await
    }

    /// Sends a request and reads its answer.
    async fn answer(&self, req: reqwest::RequestBuilder) -> Result<Value, TransportError> {
        let mut resp = req.send().await.map_err(|e| self.unreachable(&e))?;
        let status = resp.status();
        if resp
            .content_length()
            .is_some_and(|n| n > self.max_response_bytes as u64)
        {
            return Err(self.too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| self.unreachable(&e))? {
            if body.len() + chunk.len() > self.max_response_bytes {
                return Err(self.too_large());
            }
            body.extend_from_slice(&chunk);
        }
        interpret(status, &body)
    }

    fn unreachable(&self, e: &reqwest::Error) -> TransportError {
        // No connection: the request certainly never reached the relay,
        // which lets the client re-encrypt instead of resending.
        if e.is_connect() {
            return TransportError::NotSent(format!(
                "could not connect: {} ({})",
                self.url,
                error_chain(e)
            ));
        }
        let what = if e.is_timeout() {
            "timed out"
        } else if e.is_connect() {
            "could not connect"
        } else {
            "connection failed"
        };
        TransportError::Unreachable(format!("{what}: {} ({})", self.url, error_chain(e)))
    }

    fn too_large(&self) -> TransportError {
        TransportError::BadResponse(format!(
            "answer larger than {} bytes",
            self.max_response_bytes
        ))
    }
}

impl Transport for HttpTransport {
    fn audience(&self) -> &str {
        &self.url
    }

    async fn call(&self, request: SignedRequest) -> Result<Value, TransportError> {
        let dialect = self.dialect();
        let first = self.post(&request, dialect).await;
        let Err(TransportError::Refused { error, .. }) = &first else {
            return first;
        };
        if !speaks_other_dialect(dialect, error) {
            return first;
        }
        let other = dialect.other();
        let second = self.post(&request, other).await;
        // The relay parsed the other dialect's auth: remember it. (If it
        // complains about that one too, it is not a dialect question.)
        match &second {
            Ok(_) => self.set_dialect(other),
            Err(TransportError::Refused { error, .. }) if !speaks_other_dialect(other, error) => {
                self.set_dialect(other)
            }
            Err(_) => {}
        }
        second
    }
}

/// Whether a refusal of a request written in `sent` says the relay wants
/// the other dialect: the Python relays' `KeyError` on the id field.
pub fn speaks_other_dialect(sent: Dialect, error: &str) -> bool {
    let wanted = sent.other().id_field();
    error.contains(&format!("'{wanted}'"))
}

/// Maps an HTTP answer to the tool's result or an error.
fn interpret(status: StatusCode, body: &[u8]) -> Result<Value, TransportError> {
    let json = serde_json::from_slice::<Value>(body).ok();
    if status == StatusCode::OK {
        return json.ok_or_else(|| {
            TransportError::BadResponse(format!("the answer is not JSON: {}", snippet(body)))
        });
    }
    let error = match json.as_ref().and_then(|v| v.get("error")) {
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => {
            let mut text = format!("HTTP {status}");
            let s = snippet(body);
            if !s.is_empty() {
                let _ = write!(text, ": {s}");
            }
            text
        }
    };
    Err(TransportError::Refused {
        status: status.as_u16(),
        error,
    })
}

/// The start of a body as one line of text.
fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut s: String = text
        .chars()
        .take(SNIPPET)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.chars().count() > SNIPPET {
        s.push('…');
    }
    s.trim().to_owned()
}

/// An error and its causes, joined (reqwest's own text is terse).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let _ = write!(text, ": {s}");
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dialect_hints() {
        assert!(speaks_other_dialect(Dialect::V001, "'fingerprint'"));
        assert!(speaks_other_dialect(Dialect::V030, "'user_id'"));
        assert!(!speaks_other_dialect(Dialect::V030, "'fingerprint'"));
        assert!(!speaks_other_dialect(Dialect::V001, "'user_id'"));
        assert!(!speaks_other_dialect(
            Dialect::V001,
            "bad signature (wrong key, audience, or argument canonicalization)"
        ));
    }

    #[test]
    fn answers_are_interpreted() {
        assert_eq!(
            interpret(StatusCode::OK, br#"{"a":1}"#).unwrap(),
            serde_json::json!({"a": 1})
        );
        assert!(matches!(
            interpret(StatusCode::OK, b"<html>"),
            Err(TransportError::BadResponse(t)) if t.contains("<html>")
        ));
        assert_eq!(
            interpret(StatusCode::BAD_REQUEST, br#"{"error":"unknown tool: 'x'"}"#),
            Err(TransportError::Refused {
                status: 400,
                error: "unknown tool: 'x'".into()
            })
        );
        let Err(TransportError::Refused { status, error }) =
            interpret(StatusCode::BAD_GATEWAY, b"<h1>Bad\nGateway</h1>")
        else {
            panic!()
        };
        assert_eq!(status, 502);
        assert_eq!(error, "HTTP 502 Bad Gateway: <h1>Bad Gateway</h1>");
        let Err(TransportError::Refused { error, .. }) =
            interpret(StatusCode::SERVICE_UNAVAILABLE, b"")
        else {
            panic!()
        };
        assert_eq!(error, "HTTP 503 Service Unavailable");
    }

    #[test]
    fn bad_urls_are_refused() {
        assert!(matches!(
            HttpTransport::new("not a url"),
            Err(BuildError::BadUrl { .. })
        ));
        assert!(matches!(
            HttpTransport::new("ftp://x/"),
            Err(BuildError::BadUrl { .. })
        ));
        let t = HttpTransport::new("http://127.0.0.1:9/relay/").unwrap();
        assert_eq!(t.audience(), "http://127.0.0.1:9/relay/");
        assert_eq!(t.info_url, "http://127.0.0.1:9/relay/info");
        assert_eq!(t.dialect(), Dialect::V001);
    }
}
